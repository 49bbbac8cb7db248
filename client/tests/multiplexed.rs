//! The multiplexed connection matches responses to requests by id even when the server answers
//! out of order, bounds requests in flight, and fails pending requests when the server goes
//! away.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use client::multiplexed::Connection;
use runtime::Runtime;
use wire::msg::{PingRequest, PingResponse};
use wire::Decoder;

/// A server thread that reads `count` PING requests, then answers them in reverse order.
fn reversing_server(count: usize) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = Decoder::default();
        let mut received = BytesMut::new();
        let mut frames = Vec::new();
        let mut chunk = [0u8; 4096];
        while frames.len() < count {
            while let Some(frame) = decoder.decode(&mut received).unwrap() {
                frames.push(frame);
            }
            if frames.len() >= count {
                break;
            }
            let read = stream.read(&mut chunk).unwrap();
            assert!(read > 0, "client closed early");
            received.extend_from_slice(&chunk[..read]);
        }
        let mut out = Vec::new();
        for frame in frames.iter().rev() {
            wire::encode_response(&mut out, frame.request_id, &PingResponse {}, &frame.payload)
                .unwrap();
        }
        stream.write_all(&out).unwrap();
        // Keep the socket open until the client is done reading.
        let _ = stream.read(&mut chunk);
    });
    (address, thread)
}

#[test]
fn out_of_order_responses_reach_their_requests() {
    const REQUESTS: usize = 16;
    let (address, server) = reversing_server(REQUESTS);
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async move {
        let connection = Rc::new(Connection::connect(address, 64).await.unwrap());
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|index| {
                let connection = Rc::clone(&connection);
                runtime::spawn(async move {
                    let payload = format!("request {index}");
                    let frame = connection
                        .request(&PingRequest {}, payload.as_bytes())
                        .await;
                    (index, frame.map(|frame| frame.payload))
                })
            })
            .collect();
        for task in tasks {
            let (index, payload) = task.await;
            let payload = payload.expect("response");
            assert_eq!(payload, format!("request {index}").as_bytes());
        }
        assert_eq!(connection.in_flight(), 0);
    });
    server.join().unwrap();
}

#[test]
fn pending_requests_fail_when_the_server_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut chunk = [0u8; 64];
        let _ = stream.read(&mut chunk);
        // Close without answering.
    });
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async move {
        let connection = Connection::connect(address, 4).await.unwrap();
        let result = connection.request(&PingRequest {}, b"x").await;
        assert!(result.is_err(), "a request to a closed server must fail");
        assert!(connection.closed_reason().is_some());
        // Later requests fail at once instead of hanging.
        assert!(connection.request(&PingRequest {}, b"y").await.is_err());
    });
    server.join().unwrap();
}

#[test]
fn in_flight_requests_never_exceed_the_bound() {
    const REQUESTS: usize = 12;
    const BOUND: usize = 3;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    // An echo server that records the largest number of requests it saw unanswered at once.
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = Decoder::default();
        let mut received = BytesMut::new();
        let mut chunk = [0u8; 4096];
        let mut answered = 0;
        let mut most_unanswered = 0;
        while answered < REQUESTS {
            let read = stream.read(&mut chunk).unwrap();
            assert!(read > 0);
            received.extend_from_slice(&chunk[..read]);
            let mut batch = Vec::new();
            while let Some(frame) = decoder.decode(&mut received).unwrap() {
                batch.push(frame);
            }
            most_unanswered = most_unanswered.max(batch.len());
            let mut out = Vec::new();
            for frame in &batch {
                wire::encode_response(&mut out, frame.request_id, &PingResponse {}, &frame.payload)
                    .unwrap();
            }
            answered += batch.len();
            stream.write_all(&out).unwrap();
        }
        most_unanswered
    });
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async move {
        let connection = Rc::new(Connection::connect(address, BOUND).await.unwrap());
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|_| {
                let connection = Rc::clone(&connection);
                runtime::spawn(async move {
                    assert!(connection.in_flight() <= BOUND);
                    connection.request(&PingRequest {}, b"p").await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    });
    let most_unanswered = server.join().unwrap();
    assert!(
        most_unanswered <= BOUND,
        "server saw {most_unanswered} requests at once"
    );
}

#[test]
fn large_payloads_sent_without_copy_arrive_intact_and_in_order() {
    const REQUESTS: usize = 6;
    let (address, server) = reversing_server(REQUESTS);
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async move {
        let connection = Rc::new(Connection::connect(address, 16).await.unwrap());
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|index| {
                let connection = Rc::clone(&connection);
                runtime::spawn(async move {
                    // Alternate small (copied) and large (vectored) requests on one connection.
                    let length = if index % 2 == 0 {
                        100 + index
                    } else {
                        20_000 + index
                    };
                    let payload: Vec<u8> =
                        (0..length).map(|byte| (byte * 7 + index) as u8).collect();
                    let frame = connection
                        .request_bytes(&PingRequest {}, bytes::Bytes::from(payload.clone()))
                        .await
                        .expect("response");
                    assert_eq!(
                        frame.payload.as_ref(),
                        payload.as_slice(),
                        "request {index}"
                    );
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    });
    server.join().unwrap();
}

#[test]
fn a_request_that_gave_up_waiting_for_a_slot_does_not_swallow_the_next_wake_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (answer_first, first_may_be_answered) = std::sync::mpsc::channel::<()>();
    // An echo server that holds back its first answer until told.
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = Decoder::default();
        let mut received = BytesMut::new();
        let mut chunk = [0u8; 4096];
        let mut held = true;
        loop {
            let read = stream.read(&mut chunk).unwrap_or(0);
            if read == 0 {
                return;
            }
            received.extend_from_slice(&chunk[..read]);
            while let Some(frame) = decoder.decode(&mut received).unwrap() {
                if held {
                    first_may_be_answered.recv().unwrap();
                    held = false;
                }
                let mut out = Vec::new();
                wire::encode_response(&mut out, frame.request_id, &PingResponse {}, &frame.payload)
                    .unwrap();
                stream.write_all(&out).unwrap();
            }
        }
    });
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async move {
        let connection = Rc::new(Connection::connect(address, 1).await.unwrap());
        let first = {
            let connection = Rc::clone(&connection);
            runtime::spawn(async move { connection.request(&PingRequest {}, b"first").await })
        };
        runtime::time::sleep(Duration::from_millis(20)).await;
        // This request waits for the only slot, then gives up.
        let gave_up = runtime::time::timeout(
            Duration::from_millis(20),
            connection.request(&PingRequest {}, b"abandoned"),
        )
        .await;
        assert!(gave_up.is_err(), "the slot was never free");
        let second = {
            let connection = Rc::clone(&connection);
            runtime::spawn(async move { connection.request(&PingRequest {}, b"second").await })
        };
        runtime::time::sleep(Duration::from_millis(20)).await;
        answer_first.send(()).unwrap();
        assert_eq!(first.await.unwrap().payload, &b"first"[..]);
        // The freed slot must go to the live waiter, not to the one that left.
        let second = runtime::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the waiting request was never woken");
        assert_eq!(second.unwrap().payload, &b"second"[..]);
    });
    server.join().unwrap();
}

/// An echo server answering everything it read so far; returns the payloads in the order they
/// arrived.
fn recording_echo_server(
    count: usize,
) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = Decoder::default();
        let mut received = BytesMut::new();
        let mut chunk = [0u8; 4096];
        let mut order = Vec::new();
        while order.len() < count {
            let read = stream.read(&mut chunk).unwrap();
            assert!(read > 0);
            received.extend_from_slice(&chunk[..read]);
            let mut out = Vec::new();
            while let Some(frame) = decoder.decode(&mut received).unwrap() {
                order.push(frame.payload.to_vec());
                wire::encode_response(&mut out, frame.request_id, &PingResponse {}, &frame.payload)
                    .unwrap();
            }
            stream.write_all(&out).unwrap();
        }
        let _ = stream.read(&mut chunk);
        order
    });
    (address, server)
}

#[test]
fn requests_started_in_order_reach_the_wire_in_order_whatever_order_their_tasks_run() {
    const REQUESTS: usize = 40;
    const BOUND: usize = 3;
    let (address, server) = recording_echo_server(REQUESTS + 1);
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async move {
        let connection = Rc::new(Connection::connect(address, BOUND).await.unwrap());
        // Started in order (some of them large, sent without copy), far past the bound...
        let pending: Vec<_> = (0..REQUESTS)
            .map(|index| {
                let mut payload = format!("{index:04}").into_bytes();
                if index % 5 == 0 {
                    payload.resize(10_000, b'.');
                }
                connection
                    .start_request_bytes(&PingRequest {}, bytes::Bytes::from(payload))
                    .expect("started")
            })
            .collect();
        assert!(connection.in_flight() == REQUESTS);
        // ... and awaited by tasks spawned in reverse order.
        let tasks: Vec<_> = pending
            .into_iter()
            .rev()
            .map(|response| runtime::spawn(async move { response.await.expect("answered") }))
            .collect();
        for task in tasks {
            task.await;
        }
        // Requests waiting for a slot this way come before a later request().
        connection.request(&PingRequest {}, b"late").await.unwrap();
        assert_eq!(connection.in_flight(), 0);
    });
    let order = server.join().unwrap();
    let indexes: Vec<usize> = order
        .iter()
        .map(|payload| {
            std::str::from_utf8(&payload[..4])
                .unwrap()
                .parse()
                .unwrap_or(usize::MAX)
        })
        .collect();
    assert_eq!(indexes[..REQUESTS], (0..REQUESTS).collect::<Vec<_>>()[..]);
}

#[test]
fn a_withdrawn_request_that_waited_for_a_slot_is_never_sent() {
    let (address, server) = recording_echo_server(3);
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async move {
        let connection = Connection::connect(address, 1).await.unwrap();
        let first = connection
            .start_request_bytes(&PingRequest {}, bytes::Bytes::from_static(b"0000"))
            .unwrap();
        let withdrawn = connection
            .start_request_bytes(&PingRequest {}, bytes::Bytes::from_static(b"0001"))
            .unwrap();
        let third = connection
            .start_request_bytes(&PingRequest {}, bytes::Bytes::from_static(b"0002"))
            .unwrap();
        drop(withdrawn);
        first.await.unwrap();
        third.await.unwrap();
        connection.request(&PingRequest {}, b"0003").await.unwrap();
    });
    let order = server.join().unwrap();
    assert_eq!(
        order,
        [b"0000".to_vec(), b"0002".to_vec(), b"0003".to_vec()]
    );
}
