//! `serve::connection` with a tiny service of its own over a real loopback TCP connection: the
//! answers go out in completion order, matched by request id, and the in-flight bound stops
//! reading without losing a request.
//!
//! The service answers PING by echoing its payload; a payload starting with `slow` is answered
//! only after [`SLOW_REQUEST_MS`]. It also answers APPEND (client role) and CREATE_RANGE (admin
//! role) with empty successes, so the authentication tests can tell what got through. The server runs on a runtime thread of its own; the client is
//! a blocking std socket on the test's thread.

use std::cell::Cell;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serve::local::{Notified, Notify};
use serve::{ConnectionCounters, Limits, NodeBudget, Reply, Service, Tokens};
use wire::msg::{
    AppendRequest, AppendResponse, AuthenticateRequest, AuthenticateResponse, CreateRangeRequest,
    CreateRangeResponse, PingRequest, PingResponse, Request, Response, Role,
};
use wire::{Decoder, ErrorCode, Frame, Opcode};

const SLOW_REQUEST_MS: u64 = 300;

/// What the server saw, returned when its connection closed.
#[derive(Debug)]
struct Seen {
    /// Most calls running at once.
    most_concurrent_calls: usize,
    calls: usize,
    bytes_in: u64,
    bytes_out: u64,
    bad_frames: u64,
}

struct EchoService {
    limits: Limits,
    shutdown: Notify,
    counters: ConnectionCounters,
    node_budget: Arc<NodeBudget>,
    running: Cell<usize>,
    most_running: Cell<usize>,
    calls: Cell<usize>,
    tokens: Tokens,
}

impl Service for EchoService {
    fn authenticate(&self, token: &str) -> Option<Role> {
        self.tokens.authenticate(token)
    }

    fn authorize(&self, role: Option<Role>, request: &Request) -> Result<(), Reply> {
        let required = match request {
            Request::Ping(_) => None,
            Request::Append(_) => Some(Role::Client),
            _ => Some(Role::Admin),
        };
        self.tokens.authorize(role, required, request.opcode())
    }

    fn name(&self) -> &'static str {
        "echo service"
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn is_shutting_down(&self) -> bool {
        false
    }

    fn shutdown_notified(&self) -> Notified {
        self.shutdown.notified()
    }

    fn counters(&self) -> &ConnectionCounters {
        &self.counters
    }

    fn node_budget(&self) -> &Arc<NodeBudget> {
        &self.node_budget
    }

    fn call(
        self: &Rc<Self>,
        request: Request,
        payload: Bytes,
        _received: Instant,
    ) -> impl Future<Output = Reply> {
        let service = Rc::clone(self);
        async move {
            service.calls.set(service.calls.get() + 1);
            service.running.set(service.running.get() + 1);
            service
                .most_running
                .set(service.most_running.get().max(service.running.get()));
            if payload.starts_with(b"slow") {
                runtime::time::sleep(Duration::from_millis(SLOW_REQUEST_MS)).await;
            }
            service.running.set(service.running.get() - 1);
            match request {
                Request::Ping(_) => Reply::with_payload(Response::Ping(PingResponse {}), payload),
                Request::Append(_) => Reply::new(Response::Append(AppendResponse::default())),
                Request::CreateRange(_) => {
                    Reply::new(Response::CreateRange(CreateRangeResponse::default()))
                }
                _ => Reply::error(ErrorCode::UnknownOpcode, "the echo service only takes PING"),
            }
        }
    }
}

/// Starts a server for one connection with at most `max_in_flight` requests in flight.
fn start_server(max_in_flight: usize) -> (SocketAddr, JoinHandle<Seen>) {
    start_server_with_tokens(max_in_flight, Tokens::disabled())
}

/// Starts a server for one connection that checks `tokens`.
fn start_server_with_tokens(
    max_in_flight: usize,
    tokens: Tokens,
) -> (SocketAddr, JoinHandle<Seen>) {
    let (address_sender, address_receiver) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut runtime = runtime::Runtime::new().expect("a runtime");
        runtime.block_on(async move {
            let listener = runtime::net::TcpListener::bind("127.0.0.1:0".parse().unwrap())
                .expect("bind a loopback port");
            address_sender.send(listener.local_addr().unwrap()).unwrap();
            let (stream, peer) = listener.accept().await.expect("accept");
            let service = Rc::new(EchoService {
                limits: Limits {
                    max_frame_size_bytes: 1 << 20,
                    max_in_flight_per_connection: max_in_flight,
                    idle_timeout_ms: 0,
                    max_buffered_bytes_per_connection: 4 << 20,
                    max_buffered_bytes: 4 << 20,
                },
                shutdown: Notify::default(),
                counters: ConnectionCounters::default(),
                node_budget: Arc::new(NodeBudget::new(4 << 20)),
                running: Cell::new(0),
                most_running: Cell::new(0),
                calls: Cell::new(0),
                tokens,
            });
            serve::connection::serve(Rc::clone(&service), stream, peer).await;
            Seen {
                most_concurrent_calls: service.most_running.get(),
                calls: service.calls.get(),
                bytes_in: service.counters.bytes_in.load(Ordering::Relaxed),
                bytes_out: service.counters.bytes_out.load(Ordering::Relaxed),
                bad_frames: service.counters.bad_frames.load(Ordering::Relaxed),
            }
        })
    });
    let address = address_receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("the server's address");
    (address, server)
}

struct Client {
    stream: std::net::TcpStream,
    received: BytesMut,
    decoder: Decoder,
    bytes_sent: u64,
}

impl Client {
    fn connect(address: SocketAddr) -> Client {
        let stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            received: BytesMut::new(),
            decoder: Decoder::default(),
            bytes_sent: 0,
        }
    }

    fn ping(&mut self, request_id: u64, payload: &[u8]) {
        let mut frame = BytesMut::new();
        wire::codec::encode_request(&mut frame, request_id, &PingRequest {}, payload).unwrap();
        self.stream.write_all(&frame).expect("send a request");
        self.bytes_sent += frame.len() as u64;
    }

    fn send<M: wire::Message>(&mut self, request_id: u64, message: &M) {
        let mut frame = BytesMut::new();
        wire::codec::encode_request(&mut frame, request_id, message, &[]).unwrap();
        self.stream.write_all(&frame).expect("send a request");
        self.bytes_sent += frame.len() as u64;
    }

    /// Sends `message` and reads its answer: `Ok(opcode)` for a success, `Err(code)` for an
    /// error response.
    fn call<M: wire::Message>(
        &mut self,
        request_id: u64,
        message: &M,
    ) -> Result<Opcode, ErrorCode> {
        self.send(request_id, message);
        let frame = self.read_frame();
        assert_eq!(frame.request_id, request_id);
        assert_eq!(frame.opcode, M::OPCODE);
        if frame.is_error() {
            Err(frame.error_response().unwrap().code)
        } else {
            Ok(frame.opcode)
        }
    }

    fn authenticate(&mut self, request_id: u64, token: &str) -> Result<Role, ErrorCode> {
        self.send(
            request_id,
            &AuthenticateRequest {
                token: token.to_string(),
            },
        );
        let frame = self.read_frame();
        assert_eq!(frame.request_id, request_id);
        match Response::decode(&frame).unwrap() {
            Response::Authenticate(AuthenticateResponse { role }) => Ok(role),
            Response::Error(error) => Err(error.code),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    fn read_frame(&mut self) -> Frame {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.received)
                .expect("a valid frame")
            {
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let count = self.stream.read(&mut chunk).expect("a response in time");
            assert!(count > 0, "the server closed the connection");
            self.received.extend_from_slice(&chunk[..count]);
        }
    }

    /// Reads one PING answer: its request id and echoed payload.
    fn read_echo(&mut self) -> (u64, Bytes) {
        let frame = self.read_frame();
        assert!(frame.is_response() && !frame.is_error(), "{frame:?}");
        assert_eq!(frame.opcode, Opcode::Ping);
        (frame.request_id, frame.payload)
    }

    fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

#[test]
fn answers_go_out_as_they_finish_and_reading_stops_at_the_in_flight_bound() {
    const MAX_IN_FLIGHT: usize = 2;
    let (address, server) = start_server(MAX_IN_FLIGHT);
    let mut client = Client::connect(address);

    // Out of order: a slow request does not hold up a quick one sent after it.
    client.ping(1, b"slow one");
    client.ping(2, b"quick");
    assert_eq!(client.read_echo(), (2, Bytes::from_static(b"quick")));
    assert_eq!(client.read_echo(), (1, Bytes::from_static(b"slow one")));

    // At the bound the reader stops: with two slow requests running, a quick one behind them is
    // not even decoded until one of them is answered.
    let sent = Instant::now();
    client.ping(3, b"slow two");
    client.ping(4, b"slow three");
    client.ping(5, b"quick behind the bound");
    let answered: Vec<(u64, Duration)> = (0..3)
        .map(|_| (client.read_echo().0, sent.elapsed()))
        .collect();
    assert_ne!(answered[0].0, 5, "answers in order {answered:?}");
    let quick = answered.iter().find(|(request_id, _)| *request_id == 5);
    assert!(
        quick.is_some_and(|(_, after)| *after >= Duration::from_millis(SLOW_REQUEST_MS)),
        "the request behind the bound waited for a slow one: {answered:?}"
    );

    // A client pipelining many more requests than the bound, reading nothing until all are
    // sent, gets every answer once it reads.
    const PIPELINED: u64 = 20;
    for request_id in 100..100 + PIPELINED {
        client.ping(request_id, format!("slow {request_id}").as_bytes());
    }
    let mut answered: Vec<(u64, Bytes)> = (0..PIPELINED).map(|_| client.read_echo()).collect();
    answered.sort();
    let expected: Vec<(u64, Bytes)> = (100..100 + PIPELINED)
        .map(|request_id| (request_id, Bytes::from(format!("slow {request_id}"))))
        .collect();
    assert_eq!(answered, expected);

    let bytes_sent = client.bytes_sent;
    client.close();
    let seen = server.join().expect("the server thread");
    assert_eq!(seen.calls, 5 + PIPELINED as usize);
    assert_eq!(
        seen.most_concurrent_calls, MAX_IN_FLIGHT,
        "requests ran concurrently, never past the bound"
    );
    assert_eq!(seen.bytes_in, bytes_sent);
    assert!(seen.bytes_out > 0);
    assert_eq!(seen.bad_frames, 0);
}

const ADMIN_TOKEN: &str = "admin-token-for-the-test";
const CLIENT_TOKEN: &str = "client-token-for-the-test";

fn tokens() -> Tokens {
    Tokens::new(Some(ADMIN_TOKEN), Some(CLIENT_TOKEN))
}

#[test]
fn an_unauthenticated_connection_gets_only_ping_answered() {
    let (address, server) = start_server_with_tokens(8, tokens());
    let mut client = Client::connect(address);
    client.ping(1, b"before");
    assert_eq!(client.read_echo(), (1, Bytes::from_static(b"before")));
    assert_eq!(
        client.call(2, &AppendRequest::default()),
        Err(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        client.call(3, &CreateRangeRequest::default()),
        Err(ErrorCode::Unauthenticated)
    );
    client.close();
    let seen = server.join().expect("the server thread");
    assert_eq!(seen.calls, 1, "only PING reached the service");
}

#[test]
fn a_wrong_token_is_unauthenticated_and_grants_nothing() {
    let (address, server) = start_server_with_tokens(8, tokens());
    let mut client = Client::connect(address);
    assert_eq!(
        client.authenticate(1, "admin-token-for-the-tesT"),
        Err(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        client.call(2, &AppendRequest::default()),
        Err(ErrorCode::Unauthenticated)
    );
    // A failed attempt also takes back a role granted before.
    assert_eq!(client.authenticate(3, CLIENT_TOKEN), Ok(Role::Client));
    assert_eq!(client.authenticate(4, ""), Err(ErrorCode::Unauthenticated));
    assert_eq!(
        client.call(5, &AppendRequest::default()),
        Err(ErrorCode::Unauthenticated)
    );
    client.close();
    assert_eq!(server.join().unwrap().calls, 0);
}

#[test]
fn too_many_wrong_tokens_close_the_connection() {
    let (address, server) = start_server_with_tokens(8, tokens());
    let mut client = Client::connect(address);
    for request_id in 1..=serve::auth::MAX_FAILED_AUTHENTICATIONS as u64 {
        client.send(
            request_id,
            &AuthenticateRequest {
                token: format!("guess {request_id}"),
            },
        );
    }
    let mut goaway = false;
    let mut refusals = 0;
    for _ in 0..=serve::auth::MAX_FAILED_AUTHENTICATIONS {
        let frame = client.read_frame();
        if frame.opcode == Opcode::Goaway {
            goaway = true;
        } else {
            assert_eq!(
                frame.error_response().unwrap().code,
                ErrorCode::Unauthenticated
            );
            refusals += 1;
        }
    }
    assert!(goaway, "the server said GOAWAY");
    assert_eq!(refusals, serve::auth::MAX_FAILED_AUTHENTICATIONS);
    let mut rest = [0u8; 64];
    assert_eq!(client.stream.read(&mut rest).unwrap(), 0, "then closed");
    server.join().unwrap();
}

#[test]
fn the_client_role_may_append_but_not_create_ranges_and_the_admin_may_do_both() {
    let (address, server) = start_server_with_tokens(8, tokens());
    let mut client = Client::connect(address);
    assert_eq!(client.authenticate(1, CLIENT_TOKEN), Ok(Role::Client));
    assert_eq!(
        client.call(2, &AppendRequest::default()),
        Ok(Opcode::Append)
    );
    assert_eq!(
        client.call(3, &CreateRangeRequest::default()),
        Err(ErrorCode::PermissionDenied)
    );
    assert_eq!(client.authenticate(4, ADMIN_TOKEN), Ok(Role::Admin));
    assert_eq!(
        client.call(5, &AppendRequest::default()),
        Ok(Opcode::Append)
    );
    assert_eq!(
        client.call(6, &CreateRangeRequest::default()),
        Ok(Opcode::CreateRange)
    );
    client.close();
    assert_eq!(
        server.join().unwrap().calls,
        3,
        "refused requests never ran"
    );
}

#[test]
fn without_tokens_every_connection_has_full_rights() {
    let (address, server) = start_server(8);
    let mut client = Client::connect(address);
    assert_eq!(
        client.call(1, &CreateRangeRequest::default()),
        Ok(Opcode::CreateRange)
    );
    // A client configured with a token still works: any token is answered ADMIN.
    assert_eq!(client.authenticate(2, "whatever"), Ok(Role::Admin));
    client.close();
    assert_eq!(server.join().unwrap().calls, 1);
}
