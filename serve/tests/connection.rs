//! `serve::connection` with a tiny service of its own over a real loopback TCP connection: the
//! answers go out in completion order, matched by request id, and the in-flight bound stops
//! reading without losing a request.
//!
//! The service answers PING by echoing its payload; a payload starting with `slow` is answered
//! only after [`SLOW_REQUEST_MS`]. The server runs on a runtime thread of its own; the client is
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
use serve::{ConnectionCounters, Limits, NodeBudget, Reply, Service};
use wire::msg::{PingRequest, PingResponse, Request, Response};
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
}

impl Service for EchoService {
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
                _ => Reply::error(ErrorCode::UnknownOpcode, "the echo service only takes PING"),
            }
        }
    }
}

/// Starts a server for one connection with at most `max_in_flight` requests in flight.
fn start_server(max_in_flight: usize) -> (SocketAddr, JoinHandle<Seen>) {
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
