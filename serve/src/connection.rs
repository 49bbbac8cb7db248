//! One client connection: decode frames, run requests concurrently, send responses as they finish.
//!
//! Three kinds of task share a connection. The *reader* (the connection's own task) reads bytes,
//! splits frames off them and spawns one *request task* per request, so a slow FETCH never holds
//! up an APPEND behind it; responses therefore go out in completion order, matched by request id.
//! Request tasks queue their encoded responses; the *writer* task sends everything queued in
//! one vectored write per turn.
//!
//! Bounds: a frame larger than `server.max-frame-size-bytes` is refused before any memory is
//! reserved for it (the decoder checks the length first); at `max-in-flight-per-connection`
//! requests not yet answered on the wire (running, or answered but still queued for the writer)
//! the reader stops decoding (and so reading) until one is sent, which pushes back on the client
//! through TCP: a client that sends but never reads cannot make the node queue responses without
//! bound. A frame that cannot be delimited gets a GOAWAY(PROTOCOL_ERROR) and
//! closes this connection only; an intact frame with an unknown opcode or a bad header gets an
//! error response and the connection carries on. On shutdown the reader stops, a
//! GOAWAY(SHUTTING_DOWN) goes out first, the requests already accepted are answered, then the
//! connection closes.
//!
//! Authentication: the connection holds the role its last AUTHENTICATE granted (answered here,
//! with the token checked by [`Service::authenticate`]) and asks [`Service::authorize`] about
//! every other request as it is decoded; a refused request never reaches the service.
//!
//! What a request does is the [`Service`]'s business: this file knows frames, bounds and the
//! order things go out in, not what any operation means.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use runtime::{race, Either};
use wire::msg::{
    AuthenticateRequest, AuthenticateResponse, ErrorResponse, Goaway, GoawayReason, Request,
    Response, Role,
};
use wire::{DecodeError, Decoder, ErrorCode, Flags, Frame, Opcode};

use crate::auth::MAX_FAILED_AUTHENTICATIONS;
use crate::local::Notify;
use crate::reply::Reply;
use crate::service::Service;

/// Bytes asked of the kernel per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// State shared by a connection's reader, writer and request tasks.
struct Shared {
    /// Encoded frames waiting to be sent, in order.
    outgoing: RefCell<VecDeque<Bytes>>,
    /// Wakes the writer when `outgoing` gains a frame or the connection starts closing.
    writer_wake: Notify,
    /// Requests decoded but not yet answered.
    in_flight: Cell<usize>,
    /// Responses (error answers included) in `outgoing`, not yet taken by the writer.
    queued_responses: Cell<usize>,
    /// Responses in the writer's current write.
    sending_responses: Cell<usize>,
    /// Fires when a request finishes or a write completes (the reader may continue past the
    /// in-flight bound).
    request_done: Notify,
    /// The reader stopped: the writer closes once everything is answered and sent.
    reading_done: Cell<bool>,
    /// The socket failed; nobody should bother sending more.
    broken: Cell<bool>,
    /// The role the connection's last AUTHENTICATE granted; `None` until one succeeds.
    role: Cell<Option<Role>>,
    /// AUTHENTICATE requests refused so far; at [`MAX_FAILED_AUTHENTICATIONS`] the connection
    /// closes.
    failed_authentications: Cell<u32>,
}

impl Shared {
    /// Queues the frames of one response.
    fn push_response(&self, frames: impl IntoIterator<Item = Bytes>) {
        if self.broken.get() {
            // The writer is gone: a queued answer would never be sent nor leave the count.
            return;
        }
        self.outgoing.borrow_mut().extend(frames);
        self.queued_responses.set(self.queued_responses.get() + 1);
        self.writer_wake.notify();
    }

    /// Requests accepted whose answer is not on the wire yet: what `max-in-flight-per-connection`
    /// bounds.
    fn unanswered(&self) -> usize {
        self.in_flight.get() + self.queued_responses.get() + self.sending_responses.get()
    }
}

/// How the reader ended.
enum ReadEnd {
    PeerClosed,
    Shutdown,
    Idle,
    ProtocolError(String),
    Failed,
}

/// Serves one accepted connection until it closes.
pub async fn serve<S: Service>(service: Rc<S>, stream: runtime::net::TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let shared = Rc::new(Shared {
        outgoing: RefCell::new(VecDeque::new()),
        writer_wake: Notify::default(),
        in_flight: Cell::new(0),
        queued_responses: Cell::new(0),
        sending_responses: Cell::new(0),
        request_done: Notify::default(),
        reading_done: Cell::new(false),
        broken: Cell::new(false),
        role: Cell::new(None),
        failed_authentications: Cell::new(0),
    });
    let writer = runtime::spawn(write_loop(
        Rc::clone(&stream),
        Rc::clone(&shared),
        Rc::clone(&service),
    ));
    let end = read_loop(&service, &stream, &shared).await;
    let goaway = match &end {
        ReadEnd::Shutdown => Some((
            GoawayReason::ShuttingDown,
            format!("the {} is shutting down", service.name()),
        )),
        ReadEnd::Idle => Some((
            GoawayReason::IdleTimeout,
            "connection idle for too long".to_string(),
        )),
        ReadEnd::ProtocolError(message) => Some((GoawayReason::ProtocolError, message.clone())),
        ReadEnd::PeerClosed | ReadEnd::Failed => None,
    };
    if let Some((reason, message)) = goaway {
        log::debug!("connection {peer}: GOAWAY {reason:?}: {message}");
        let mut buf = BytesMut::new();
        let goaway = Goaway { reason, message };
        if wire::codec::encode_goaway(&mut buf, &goaway).is_ok() {
            // GOAWAY goes before the answers still to come: the client learns at once that it
            // should send nothing more on this connection.
            shared.outgoing.borrow_mut().push_front(buf.freeze());
        }
    }
    shared.reading_done.set(true);
    shared.writer_wake.notify();
    writer.await;
    if let Ok(stream) = Rc::try_unwrap(stream) {
        let _ = stream.close().await;
    }
}

async fn read_loop<S: Service>(
    service: &Rc<S>,
    stream: &runtime::net::TcpStream,
    shared: &Rc<Shared>,
) -> ReadEnd {
    let limits = service.limits();
    let counters = service.counters();
    let max_in_flight = limits.max_in_flight_per_connection;
    let idle_timeout =
        (limits.idle_timeout_ms > 0).then(|| Duration::from_millis(limits.idle_timeout_ms));
    let mut decoder = Decoder::new(limits.max_frame_size_bytes);
    let mut received = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut last_activity = Instant::now();
    // One timer for the connection's life, moved forward only when it fires early: arming a
    // new one per read would cost a timer insert and removal per read.
    let mut idle_timer = idle_timeout.map(runtime::time::sleep);
    loop {
        // Decode what is buffered, up to the in-flight bound.
        loop {
            if service.is_shutting_down() {
                return ReadEnd::Shutdown;
            }
            if shared.unanswered() >= max_in_flight {
                let done = shared.request_done.notified();
                let shutdown = service.shutdown_notified();
                if shared.unanswered() >= max_in_flight {
                    race(done, shutdown).await;
                    continue;
                }
            }
            match decoder.decode(&mut received) {
                Ok(Some(frame)) => {
                    last_activity = Instant::now();
                    if let Some(end) = accept_frame(service, shared, frame, last_activity) {
                        return end;
                    }
                }
                Ok(None) => break,
                Err(error) if error.is_fatal() => {
                    counters.add(&counters.bad_frames, 1);
                    return ReadEnd::ProtocolError(format!("{error}; closing the connection"));
                }
                Err(error) => {
                    counters.add(&counters.bad_frames, 1);
                    answer_decode_error(shared, error);
                }
            }
        }

        // Read more, straight behind the bytes not yet decoded: frames are split off this buffer
        // without a copy, so a payload goes from the kernel to the store as it was read. The
        // decoded frames own the front of the allocation; the kernel writes only into the spare
        // room after them. The read is cancelled only when the connection closes (shutdown, idle
        // with nothing in flight): whatever it might still have received then is never
        // answered, which the client learns from the GOAWAY. Idle time with requests in flight
        // keeps polling the same read, so no byte is lost.
        received.reserve(READ_CHUNK_BYTES);
        let mut read = pin!(stream.read(received));
        let (result, buffer) = loop {
            if service.is_shutting_down() {
                return ReadEnd::Shutdown;
            }
            let shutdown = service.shutdown_notified();
            let idle_wait = async {
                match idle_timer.as_mut() {
                    Some(timer) => timer.await,
                    None => std::future::pending::<()>().await,
                }
            };
            match race(read.as_mut(), race(shutdown, idle_wait)).await {
                Either::Left(done) => break done,
                Either::Right(Either::Left(())) => return ReadEnd::Shutdown,
                Either::Right(Either::Right(())) => {
                    let (Some(idle), Some(timer)) = (idle_timeout, idle_timer.as_mut()) else {
                        continue;
                    };
                    if last_activity.elapsed() >= idle {
                        if shared.in_flight.get() == 0 {
                            return ReadEnd::Idle;
                        }
                        // A long poll or a slow append is still running: not idle.
                        last_activity = Instant::now();
                    }
                    timer.reset(runtime::time::deadline_after(last_activity, idle));
                }
            }
        };
        received = buffer;
        match result {
            Ok(0) => return ReadEnd::PeerClosed,
            Ok(count) => {
                counters.add(&counters.bytes_in, count as u64);
                last_activity = Instant::now();
            }
            Err(error) => {
                log::debug!("connection read failed: {error}");
                return ReadEnd::Failed;
            }
        }
    }
}

/// Starts a request task for `frame`, decoded at `received`; returns how reading ends if this
/// frame ends it.
fn accept_frame<S: Service>(
    service: &Rc<S>,
    shared: &Rc<Shared>,
    frame: Frame,
    received: Instant,
) -> Option<ReadEnd> {
    let counters = service.counters();
    if frame.is_response() {
        counters.add(&counters.bad_frames, 1);
        return Some(ReadEnd::ProtocolError(format!(
            "received a response frame ({}, request id {}) but a {} only takes requests",
            frame.opcode,
            frame.request_id,
            service.name()
        )));
    }
    let request = match Request::decode(&frame) {
        Ok(request) => request,
        Err(error) => {
            counters.add(&counters.bad_frames, 1);
            push_error(
                shared,
                frame.opcode,
                frame.request_id,
                ErrorResponse::new(error.error_code(), error.to_string()),
            );
            return None;
        }
    };
    if let Request::Goaway(goaway) = &request {
        log::debug!("peer sent GOAWAY {:?}: {}", goaway.reason, goaway.message);
        return Some(ReadEnd::PeerClosed);
    }
    let opcode = frame.opcode;
    let request_id = frame.request_id;
    if let Request::Authenticate(authenticate) = &request {
        return authenticate_connection(service, shared, request_id, authenticate);
    }
    // Checked as the request is decoded, with the role the connection holds now: a request
    // pipelined behind an AUTHENTICATE is checked with the role that one granted.
    if let Err(refusal) = service.authorize(shared.role.get(), &request) {
        push_reply(shared, opcode, request_id, refusal);
        return None;
    }
    let payload = frame.payload;
    shared.in_flight.set(shared.in_flight.get() + 1);
    let service = Rc::clone(service);
    let shared = Rc::clone(shared);
    runtime::spawn(async move {
        let reply = service.call(request, payload, received).await;
        if !shared.broken.get() {
            match encode_reply(opcode, request_id, reply) {
                Ok(frames) => shared.push_response(frames),
                Err(message) => {
                    log::error!("cannot encode the response to request {request_id}: {message}");
                    push_error(
                        &shared,
                        opcode,
                        request_id,
                        ErrorResponse::new(ErrorCode::Internal, message),
                    );
                }
            }
        }
        shared.in_flight.set(shared.in_flight.get() - 1);
        shared.request_done.notify();
        shared.writer_wake.notify();
    });
    None
}

/// Answers AUTHENTICATE: the connection holds the role the token grants, or none after a wrong
/// token; too many wrong tokens close the connection. The token is never logged.
fn authenticate_connection<S: Service>(
    service: &Rc<S>,
    shared: &Shared,
    request_id: u64,
    request: &AuthenticateRequest,
) -> Option<ReadEnd> {
    match service.authenticate(&request.token) {
        Some(role) => {
            shared.role.set(Some(role));
            let reply = Reply::new(Response::Authenticate(AuthenticateResponse { role }));
            push_reply(shared, Opcode::Authenticate, request_id, reply);
            None
        }
        None => {
            shared.role.set(None);
            let failures = shared.failed_authentications.get() + 1;
            shared.failed_authentications.set(failures);
            log::debug!("AUTHENTICATE with a wrong token ({failures} on this connection)");
            push_reply(
                shared,
                Opcode::Authenticate,
                request_id,
                Reply::error(
                    ErrorCode::Unauthenticated,
                    format!(
                        "the token matches neither of the {}'s tokens; check the token",
                        service.name()
                    ),
                ),
            );
            (failures >= MAX_FAILED_AUTHENTICATIONS).then(|| {
                ReadEnd::ProtocolError(format!(
                    "{failures} AUTHENTICATE requests with a wrong token; closing the connection"
                ))
            })
        }
    }
}

/// Queues a reply produced without a request task (an answer of the connection itself).
fn push_reply(shared: &Shared, opcode: Opcode, request_id: u64, reply: Reply) {
    match encode_reply(opcode, request_id, reply) {
        Ok(frames) => shared.push_response(frames),
        Err(message) => push_error(
            shared,
            opcode,
            request_id,
            ErrorResponse::new(ErrorCode::Internal, message),
        ),
    }
}

/// The frames of a reply. A FETCH payload is not copied: it goes out as its own buffer.
fn encode_reply(opcode: Opcode, request_id: u64, reply: Reply) -> Result<Vec<Bytes>, String> {
    if let Response::Fetch(header) = &*reply.response {
        let mut scratch = BytesMut::new();
        let parts = wire::encode_parts(
            &mut scratch,
            Flags::RESPONSE_END,
            request_id,
            header,
            reply.payload,
        )
        .map_err(|error| error.to_string())?;
        let mut frames = vec![parts.head];
        if !parts.payload.is_empty() {
            frames.push(parts.payload);
        }
        frames.push(Bytes::copy_from_slice(&parts.trailer));
        return Ok(frames);
    }
    let mut buf = BytesMut::new();
    reply
        .response
        .encode(&mut buf, opcode, request_id, &reply.payload)
        .map_err(|error| error.to_string())?;
    Ok(vec![buf.freeze()])
}

fn push_error(shared: &Shared, opcode: Opcode, request_id: u64, mut error: ErrorResponse) {
    error.truncate_message();
    let mut buf = BytesMut::new();
    if wire::encode_error(&mut buf, opcode, request_id, &error).is_ok() {
        shared.push_response([buf.freeze()]);
    }
}

fn answer_decode_error(shared: &Shared, error: DecodeError) {
    if let DecodeError::UnknownOpcode { opcode, request_id } = error {
        let response = ErrorResponse::new(
            ErrorCode::UnknownOpcode,
            format!("opcode {opcode:#06x} is not part of protocol version 1"),
        )
        .with_detail(u64::from(opcode));
        let mut buf = BytesMut::new();
        if wire::encode_error(&mut buf, Opcode::Ping, request_id, &response).is_ok() {
            shared.push_response([with_raw_opcode(buf, opcode)]);
        }
    }
}

/// Rewrites the opcode of an encoded frame to a number `Opcode` cannot name (an error response
/// echoes the request's opcode, even an unknown one) and recomputes the frame's CRC.
fn with_raw_opcode(mut frame: BytesMut, opcode: u16) -> Bytes {
    const OPCODE_AT: usize = 8;
    frame[OPCODE_AT..OPCODE_AT + 2].copy_from_slice(&opcode.to_le_bytes());
    let crc_at = frame.len() - 4;
    let crc = crc32c::crc32c(&frame[4..crc_at]);
    frame[crc_at..].copy_from_slice(&crc.to_le_bytes());
    frame.freeze()
}

async fn write_loop<S: Service>(
    stream: Rc<runtime::net::TcpStream>,
    shared: Rc<Shared>,
    service: Rc<S>,
) {
    let counters = service.counters();
    // The list of frames handed to each write, reused from write to write.
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        frames.extend(shared.outgoing.borrow_mut().drain(..));
        let responses = shared.queued_responses.replace(0);
        if frames.is_empty() {
            if shared.reading_done.get() && shared.in_flight.get() == 0 {
                break;
            }
            let wake = shared.writer_wake.notified();
            if shared.outgoing.borrow().is_empty()
                && !(shared.reading_done.get() && shared.in_flight.get() == 0)
            {
                wake.await;
            }
            continue;
        }
        // Counted before the write, so a client that has its answer sees it in the metrics.
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        counters.add(&counters.bytes_out, bytes as u64);
        shared.sending_responses.set(responses);
        let (result, mut sent) = stream.writev_all(frames).await;
        sent.clear();
        frames = sent;
        shared.sending_responses.set(0);
        if let Err(error) = result {
            log::debug!("connection write failed: {error}");
            shared.broken.set(true);
            shared.outgoing.borrow_mut().clear();
            // Nothing more will be sent: the reader must not wait for these answers.
            shared.queued_responses.set(0);
            shared.request_done.notify();
            break;
        }
        shared.request_done.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_opcode_frame_stays_valid_for_a_decoder() {
        let mut buf = BytesMut::new();
        let error =
            ErrorResponse::new(ErrorCode::UnknownOpcode, "no such opcode").with_detail(0x7777);
        wire::encode_error(&mut buf, Opcode::Ping, 5, &error).unwrap();
        let frame = with_raw_opcode(buf, 0x7777);
        assert_eq!(&frame[8..10], &0x7777u16.to_le_bytes());
        // The CRC was recomputed: a decoder gets past the CRC check to the opcode check.
        let mut input = BytesMut::from(&frame[..]);
        let decoded = Decoder::default().decode(&mut input);
        assert_eq!(
            decoded.unwrap_err(),
            DecodeError::UnknownOpcode {
                opcode: 0x7777,
                request_id: 5
            }
        );
    }

    #[test]
    fn fetch_replies_are_sent_as_head_payload_and_trailer() {
        let header = wire::msg::FetchResponse {
            confirmed_offset: Some(wire::Offset(4)),
            next_offset: wire::Offset(4),
            end_offset: None,
        };
        let payload = Bytes::from_static(b"batches");
        let reply = Reply::with_payload(Response::Fetch(header), payload.clone());
        let parts = encode_reply(Opcode::Fetch, 9, reply).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1], payload, "the payload is not copied");
        let mut whole = BytesMut::new();
        for part in &parts {
            whole.extend_from_slice(part);
        }
        let frame = Decoder::default().decode(&mut whole).unwrap().unwrap();
        assert_eq!(frame.request_id, 9);
        assert_eq!(frame.payload, payload);
        assert_eq!(
            frame.decode_message::<wire::msg::FetchResponse>().unwrap(),
            header
        );
    }
}
