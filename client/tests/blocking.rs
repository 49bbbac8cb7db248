//! The blocking connection bounds every wait and skips late answers to earlier requests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use client::conn::blocking::Connection;
use client::conn::ClientError;
use wire::msg::{PingRequest, PingResponse};
use wire::Decoder;

#[test]
fn a_silent_server_times_out_instead_of_hanging() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut chunk = [0u8; 256];
        // Read the request, never answer, wait for the client to hang up.
        while matches!(stream.read(&mut chunk), Ok(read) if read > 0) {}
    });
    let mut connection = Connection::connect(&address).unwrap();
    let start = Instant::now();
    let result = connection.request(&PingRequest {}, b"x", Duration::from_millis(200));
    let waited = start.elapsed();
    match result {
        Err(ClientError::Timeout(reported)) => {
            assert!(reported >= Duration::from_millis(150), "{reported:?}");
        }
        Err(other) => panic!("expected a timeout, got {other}"),
        Ok(_) => panic!("a silent server cannot answer"),
    }
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    drop(connection);
    server.join().unwrap();
}

#[test]
fn a_late_answer_to_an_earlier_request_is_skipped() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    // Answers the first request only after the second arrives, then both in order: the client,
    // having given up on the first, must match the second by its id.
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = Decoder::default();
        let mut received = BytesMut::new();
        let mut frames = Vec::new();
        let mut chunk = [0u8; 256];
        while frames.len() < 2 {
            let read = stream.read(&mut chunk).unwrap();
            assert!(read > 0);
            received.extend_from_slice(&chunk[..read]);
            while let Some(frame) = decoder.decode(&mut received).unwrap() {
                frames.push(frame);
            }
        }
        let mut out = Vec::new();
        for frame in &frames {
            wire::encode_response(&mut out, frame.request_id, &PingResponse {}, &frame.payload)
                .unwrap();
        }
        stream.write_all(&out).unwrap();
        while matches!(stream.read(&mut chunk), Ok(read) if read > 0) {}
    });
    let mut connection = Connection::connect(&address).unwrap();
    let first = connection.request(&PingRequest {}, b"first", Duration::from_millis(100));
    assert!(matches!(first, Err(ClientError::Timeout(_))));
    let second = connection
        .request(&PingRequest {}, b"second", Duration::from_secs(5))
        .expect("answer to the second request");
    assert_eq!(second.response.payload.as_ref(), b"second");
    assert_eq!(second.response.request_id, second.request_id);
    drop(connection);
    server.join().unwrap();
}
