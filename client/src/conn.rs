//! The connection layer: frames over TCP, matched to their requests by request id.
//!
//! [`blocking::Connection`] is the one the shell and the one-shot commands use: plain
//! `std::net`, one request at a time, every wait bounded by a timeout. The multiplexed
//! connection on the runtime (many requests in flight, answered out of order) lives in
//! [`crate::multiplexed`].

use std::fmt;
use std::time::Duration;

use wire::{DecodeError, EncodeError};

/// Largest frame accepted from a server, in bytes (the protocol's default maximum).
pub const MAX_FRAME_BYTES: usize = wire::DEFAULT_MAX_FRAME_BYTES;
/// How long to wait for a TCP connection to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a response beyond the wait the request itself asks for (FETCH).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong talking to a server, apart from the server answering with an
/// error response (which is a successful exchange carrying [`wire::ErrorResponse`]).
#[derive(Debug)]
pub enum ClientError {
    /// The TCP connection could not be established.
    Connect {
        address: String,
        error: std::io::Error,
    },
    /// Reading or writing the socket failed.
    Io(std::io::Error),
    /// The server sent bytes that are not a valid frame.
    Decode(DecodeError),
    /// The request could not be encoded (a field over its protocol limit).
    Encode(EncodeError),
    /// The server closed the connection before answering.
    Closed,
    /// No answer within the timeout.
    Timeout(Duration),
    /// The server is closing the connection and will not answer.
    Goaway { reason: String, message: String },
    /// A response that does not belong to the request, or of the wrong operation.
    Unexpected(String),
    /// The server refused the connection's AUTHENTICATE (wrong token). The token is not shown.
    Unauthenticated(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { address, error } => write!(
                formatter,
                "cannot connect to {address}: {error}; is a data node listening there?"
            ),
            ClientError::Io(error) => write!(formatter, "connection failed: {error}"),
            ClientError::Decode(error) => write!(formatter, "bad frame from the server: {error}"),
            ClientError::Encode(error) => write!(formatter, "cannot encode the request: {error}"),
            ClientError::Closed => {
                write!(
                    formatter,
                    "the server closed the connection without answering"
                )
            }
            ClientError::Timeout(timeout) => {
                write!(formatter, "no answer within {} ms", timeout.as_millis())
            }
            ClientError::Goaway { reason, message } => {
                write!(
                    formatter,
                    "the server is closing the connection (GOAWAY {reason}): {message}"
                )
            }
            ClientError::Unexpected(what) => write!(formatter, "unexpected response: {what}"),
            ClientError::Unauthenticated(message) => write!(
                formatter,
                "authentication failed: {message} (check --token or ES_TOKEN)"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => ClientError::Closed,
            _ => ClientError::Io(error),
        }
    }
}

impl From<DecodeError> for ClientError {
    fn from(error: DecodeError) -> Self {
        ClientError::Decode(error)
    }
}

impl From<EncodeError> for ClientError {
    fn from(error: EncodeError) -> Self {
        ClientError::Encode(error)
    }
}

/// The GOAWAY in a frame as a [`ClientError`], or `None` if the frame is not a GOAWAY.
/// The role an AUTHENTICATE response grants, or why the server refused it.
pub(crate) fn authentication_result(frame: &wire::Frame) -> Result<wire::Role, ClientError> {
    if frame.is_error() {
        let error = frame.error_response()?;
        return Err(ClientError::Unauthenticated(format!(
            "{}: {}",
            error.code, error.message
        )));
    }
    Ok(frame
        .decode_message::<wire::msg::AuthenticateResponse>()?
        .role)
}

pub(crate) fn goaway_error(frame: &wire::Frame) -> Option<ClientError> {
    if frame.opcode != wire::Opcode::Goaway {
        return None;
    }
    Some(match frame.decode_message::<wire::msg::Goaway>() {
        Ok(goaway) => ClientError::Goaway {
            reason: format!("{:?}", goaway.reason),
            message: goaway.message,
        },
        Err(error) => ClientError::Goaway {
            reason: "unreadable".into(),
            message: error.to_string(),
        },
    })
}

pub mod blocking {
    //! One request at a time over a `std::net::TcpStream`.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use wire::{Decoder, Frame, Message};

    use super::{goaway_error, ClientError, CONNECT_TIMEOUT, MAX_FRAME_BYTES};

    /// Bytes read from the socket per `read` call.
    const READ_CHUNK_BYTES: usize = 64 * 1024;

    /// A blocking connection to a data node or placement manager.
    pub struct Connection {
        stream: TcpStream,
        peer: SocketAddr,
        decoder: Decoder,
        received: BytesMut,
        next_request_id: u64,
    }

    /// A request sent and the response frame that answered it.
    pub struct Exchange {
        pub request_id: u64,
        /// The request frame exactly as sent.
        pub sent: Vec<u8>,
        pub response: Frame,
        /// From the start of the send to the whole response decoded.
        pub latency: Duration,
    }

    impl Connection {
        /// Connects to `address` (`host:port`), trying each resolved address in turn.
        pub fn connect(address: &str) -> Result<Connection, ClientError> {
            Connection::connect_timeout(address, CONNECT_TIMEOUT)
        }

        pub fn connect_timeout(
            address: &str,
            timeout: Duration,
        ) -> Result<Connection, ClientError> {
            let connect_error = |error| ClientError::Connect {
                address: address.to_string(),
                error,
            };
            let mut last_error = None;
            for socket_address in address.to_socket_addrs().map_err(connect_error)? {
                match TcpStream::connect_timeout(&socket_address, timeout) {
                    Ok(stream) => {
                        stream.set_nodelay(true).map_err(connect_error)?;
                        return Ok(Connection {
                            stream,
                            peer: socket_address,
                            decoder: Decoder::new(MAX_FRAME_BYTES),
                            received: BytesMut::with_capacity(READ_CHUNK_BYTES),
                            next_request_id: 1,
                        });
                    }
                    Err(error) => last_error = Some(error),
                }
            }
            Err(connect_error(last_error.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
            })))
        }

        pub fn peer(&self) -> SocketAddr {
            self.peer
        }

        /// Sends `message` with `payload` and waits up to `timeout` for its response. A GOAWAY
        /// received instead is returned as [`ClientError::Goaway`].
        pub fn request<M: Message>(
            &mut self,
            message: &M,
            payload: &[u8],
            timeout: Duration,
        ) -> Result<Exchange, ClientError> {
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            let mut sent = Vec::with_capacity(64 + payload.len());
            wire::encode_request(&mut sent, request_id, message, payload)?;
            let start = Instant::now();
            self.send_bytes(&sent)?;
            let deadline = runtime::time::deadline_after(start, timeout);
            loop {
                let frame = self.receive_frame(deadline)?.ok_or(ClientError::Closed)?;
                if let Some(goaway) = goaway_error(&frame) {
                    return Err(goaway);
                }
                if !frame.is_response() {
                    return Err(ClientError::Unexpected(format!(
                        "a {} request from the server",
                        frame.opcode.name()
                    )));
                }
                if frame.request_id != request_id {
                    // A late answer to an earlier request that timed out: skip it.
                    log::debug!("skipping response to earlier request {}", frame.request_id);
                    continue;
                }
                if frame.opcode != M::OPCODE {
                    return Err(ClientError::Unexpected(format!(
                        "a {} response to a {} request",
                        frame.opcode.name(),
                        M::OPCODE.name()
                    )));
                }
                return Ok(Exchange {
                    request_id,
                    sent,
                    response: frame,
                    latency: start.elapsed(),
                });
            }
        }

        /// Proves `token` on this connection (AUTHENTICATE); the role the server granted.
        pub fn authenticate(&mut self, token: &str) -> Result<wire::Role, ClientError> {
            let request = wire::msg::AuthenticateRequest {
                token: token.to_string(),
            };
            let exchange = self.request(&request, &[], super::RESPONSE_TIMEOUT)?;
            super::authentication_result(&exchange.response)
        }

        /// Writes bytes as they are (raw mode).
        pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
            self.stream.write_all(bytes)?;
            Ok(())
        }

        /// Reads until one whole frame is decoded. `Ok(None)` if the server closed the
        /// connection cleanly between frames; [`ClientError::Timeout`] once `deadline` passes.
        pub fn receive_frame(&mut self, deadline: Instant) -> Result<Option<Frame>, ClientError> {
            let called = Instant::now();
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.received)? {
                    return Ok(Some(frame));
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(ClientError::Timeout(now - called));
                }
                self.stream.set_read_timeout(Some(deadline - now))?;
                let start = self.received.len();
                self.received.resize(start + READ_CHUNK_BYTES, 0);
                let read = self.stream.read(&mut self.received[start..]);
                let read_bytes = match read {
                    Ok(read_bytes) => read_bytes,
                    Err(error)
                        if matches!(
                            error.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        self.received.truncate(start);
                        return Err(ClientError::Timeout(called.elapsed()));
                    }
                    Err(error) => {
                        self.received.truncate(start);
                        return Err(error.into());
                    }
                };
                self.received.truncate(start + read_bytes);
                if read_bytes == 0 {
                    return if self.received.is_empty() {
                        Ok(None)
                    } else {
                        Err(ClientError::Closed)
                    };
                }
            }
        }

        /// Reads whatever arrives until the server closes the connection, `quiet` passes with
        /// nothing new, or `limit_bytes` have arrived. For probing a server with bad input.
        pub fn receive_raw(&mut self, quiet: Duration, limit_bytes: usize) -> RawReceive {
            let mut bytes = std::mem::take(&mut self.received).to_vec();
            let mut chunk = vec![0u8; READ_CHUNK_BYTES];
            let ending = loop {
                if bytes.len() >= limit_bytes {
                    break RawEnding::LimitReached;
                }
                if let Err(error) = self.stream.set_read_timeout(Some(quiet)) {
                    break RawEnding::Error(error.to_string());
                }
                match self.stream.read(&mut chunk) {
                    Ok(0) => break RawEnding::Closed,
                    Ok(read_bytes) => bytes.extend_from_slice(&chunk[..read_bytes]),
                    Err(error)
                        if matches!(
                            error.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break RawEnding::Quiet
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                        break RawEnding::Reset
                    }
                    Err(error) => break RawEnding::Error(error.to_string()),
                }
            };
            RawReceive { bytes, ending }
        }
    }

    /// What came back after raw bytes were sent.
    pub struct RawReceive {
        pub bytes: Vec<u8>,
        pub ending: RawEnding,
    }

    /// Why [`Connection::receive_raw`] stopped reading.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum RawEnding {
        /// The server closed the connection (orderly shutdown).
        Closed,
        /// The server reset the connection.
        Reset,
        /// Nothing more arrived for the quiet period; the connection is still open.
        Quiet,
        LimitReached,
        Error(String),
    }

    impl RawEnding {
        pub fn describe(&self) -> String {
            match self {
                RawEnding::Closed => "connection closed by the server".into(),
                RawEnding::Reset => "connection reset by the server".into(),
                RawEnding::Quiet => "connection still open, nothing more received".into(),
                RawEnding::LimitReached => "stopped reading at the size limit".into(),
                RawEnding::Error(error) => format!("read failed: {error}"),
            }
        }
    }

    /// Splits raw received bytes into frames where they decode, for display. Whatever does not
    /// decode ends the walk and is returned as the error with the undecoded rest.
    pub fn decode_all(bytes: &[u8]) -> (Vec<Frame>, Option<(wire::DecodeError, usize)>) {
        let mut decoder = Decoder::new(MAX_FRAME_BYTES);
        let mut buffer = BytesMut::from(bytes);
        let mut frames = Vec::new();
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    let rest = buffer.len();
                    let error =
                        (rest > 0).then_some((wire::DecodeError::Truncated { needed: 1 }, rest));
                    return (frames, error);
                }
                // An unknown opcode or malformed header consumed its frame: keep walking.
                Err(error) if !error.is_fatal() => continue,
                Err(error) => return (frames, Some((error, buffer.len()))),
            }
        }
    }
}
