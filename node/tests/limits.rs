//! The data node's bounds and its behaviour at them: in-flight cap, idle timeout, connection
//! limit, one node per data directory, and the metrics it reports.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{make_batch, Client, Node, NodeOptions};
use wire::msg::{GoawayReason, PingRequest};

fn temp_data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    (root, data)
}

#[test]
fn reading_stops_at_the_in_flight_bound() {
    let (_root, data) = temp_data_dir();
    let node = Node::start_with(
        &data,
        &NodeOptions {
            max_in_flight: 2,
            ..NodeOptions::default()
        },
    );
    let mut writer = node.client();
    writer.create_range(51, 0, 1, 0).unwrap();

    // Two long polls fill the connection's bound; the PING behind them is not even read.
    let mut client = node.client();
    let first = client
        .send(&common::fetch_request(51, 0, 0, 1 << 20, 10_000), &[])
        .unwrap();
    let second = client
        .send(&common::fetch_request(51, 0, 0, 1 << 20, 10_000), &[])
        .unwrap();
    let ping = client.send(&PingRequest {}, b"behind").unwrap();
    client
        .raw_stream()
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let early = client.read_frame();
    assert!(
        early.is_err(),
        "a response arrived while both requests were still waiting: {early:?}"
    );

    // Data arrives: the polls answer, the connection reads again and the PING is answered.
    client
        .raw_stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    writer
        .append(51, 0, 1, &make_batch(51, 0, 1, 0, 1, 8), Some(1))
        .unwrap();
    for id in [first, second, ping] {
        let frame = client.wait_for(id).unwrap();
        assert!(!frame.is_error(), "request {id} failed");
    }
}

#[test]
fn a_client_that_never_reads_cannot_make_the_node_queue_answers() {
    use std::io::Write;

    let (_root, data) = temp_data_dir();
    let node = Node::start_with(
        &data,
        &NodeOptions {
            max_in_flight: 2,
            ..NodeOptions::default()
        },
    );
    let mut client = node.client();
    // PINGs echo their payload: each answer is as large as its request. Once the socket buffers
    // in both directions are full the node must stop reading, not queue answers in memory.
    let mut frame = bytes::BytesMut::new();
    wire::encode_request(
        &mut frame,
        1,
        &PingRequest {},
        &vec![7u8; wire::msg::ping::MAX_PING_PAYLOAD_BYTES],
    )
    .unwrap();
    let stream = client.raw_stream();
    stream.set_nonblocking(true).unwrap();
    // What the kernel may buffer on the way there and back (both ends' send and receive
    // buffers at their autotuning maximum); a node that stops reading lets through little more.
    let tcp_max = |name: &str| -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(32 << 20)
    };
    let buffered_bytes = 2 * (tcp_max("tcp_rmem") + tcp_max("tcp_wmem"));
    let limit_bytes: usize = 4 * buffered_bytes;
    let mut sent_bytes = 0usize;
    let mut at = 0usize;
    let mut last_progress = Instant::now();
    while sent_bytes < limit_bytes && last_progress.elapsed() < Duration::from_secs(1) {
        match stream.write(&frame[at..]) {
            Ok(written) => {
                sent_bytes += written;
                at = (at + written) % frame.len();
                last_progress = Instant::now();
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("write failed: {error}"),
        }
    }
    assert!(
        sent_bytes < 2 * buffered_bytes,
        "the node kept reading {} MiB from a client that reads nothing (kernel buffers: {} MiB)",
        sent_bytes >> 20,
        buffered_bytes >> 20
    );
    // The connection still works once the client reads: every queued answer arrives.
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let first = client.read_frame().expect("the first answer");
    assert!(!first.is_error());
}

#[test]
fn idle_connection_gets_goaway_then_closes() {
    let (_root, data) = temp_data_dir();
    let node = Node::start_with(
        &data,
        &NodeOptions {
            idle_timeout_ms: 300,
            ..NodeOptions::default()
        },
    );
    let mut idle = node.client();
    let started = Instant::now();
    let frame = idle.read_frame().expect("a GOAWAY before the close");
    assert_eq!(frame.opcode, wire::Opcode::Goaway);
    let goaway: wire::msg::Goaway = frame.decode_message().unwrap();
    assert_eq!(goaway.reason, GoawayReason::IdleTimeout);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        started.elapsed()
    );
    assert!(
        idle.read_frame().is_err(),
        "the connection closes after the GOAWAY"
    );

    // A long poll longer than the idle timeout keeps its connection.
    let mut writer = node.client();
    writer.create_range(71, 0, 1, 0).unwrap();
    let mut polling = node.client();
    let (_, payload) = polling
        .fetch(71, 0, 0, 1024, 800)
        .expect("long poll answered");
    assert!(payload.is_empty());
    assert!(polling.goaway.is_none(), "closed during a long poll");
    polling
        .ping(b"alive")
        .expect("connection still open after the long poll");

    // A connection in use is not idle.
    let mut busy = node.client();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(100));
        busy.ping(b"x").expect("busy connection stays open");
    }
}

#[test]
fn connections_over_the_limit_are_closed_at_accept() {
    let (_root, data) = temp_data_dir();
    let node = Node::start_with(
        &data,
        &NodeOptions {
            max_connections: 2,
            workers: 1,
            ..NodeOptions::default()
        },
    );
    // The start-up probe's connection may still be closing on the node's side.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !node.metrics().contains("es_connections_open 0") {
        assert!(
            Instant::now() < deadline,
            "the probe connection never closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut first = node.client();
    let mut second = node.client();
    first.ping(b"1").unwrap();
    second.ping(b"2").unwrap();
    let mut third = Client::connect(node.address).unwrap();
    let frame = third
        .read_frame()
        .expect("a GOAWAY for the connection over the limit");
    let goaway: wire::msg::Goaway = frame.decode_message().unwrap();
    assert_eq!(goaway.reason, GoawayReason::Overloaded);
    assert!(third.read_frame().is_err(), "closed after the GOAWAY");
    drop(first);
    // Once one closes, a new connection is accepted again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = Client::connect(node.address).unwrap();
        if again.ping(b"again").is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection accepted after one closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.metrics().contains("es_connections_rejected_total"));
}

#[test]
fn second_node_on_the_same_directory_exits_with_code_1() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let config = data.with_extension("yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_data-node"))
        .arg("-c")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("locked"));
    // The first node is untouched.
    node.client().ping(b"still serving").unwrap();
}

#[test]
fn metrics_report_requests_bytes_and_stage_latencies() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    client.create_range(61, 0, 1, 0).unwrap();
    let batch = make_batch(61, 0, 1, 0, 4, 100);
    client.append(61, 0, 1, &batch, Some(4)).unwrap();
    client.fetch(61, 0, 0, 1 << 20, 0).unwrap();
    let text = node.metrics();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("es_requests_total{operation=\"append\"}"), 1.0);
    assert_eq!(value("es_requests_total{operation=\"fetch\"}"), 1.0);
    assert!(value("es_bytes_out_total") >= batch.len() as f64);
    for stage in ["queue", "write", "reply", "total"] {
        let count = value(&format!(
            "es_latency_seconds_count{{operation=\"append\",stage=\"{stage}\"}}"
        ));
        assert_eq!(count, 1.0, "append stage {stage}");
    }
    assert_eq!(
        value("es_latency_seconds_count{operation=\"fetch\",stage=\"read\"}"),
        1.0
    );
    assert!(value("es_connections_open") >= 1.0);
    assert!(value("es_ranges{worker=") >= 0.0);
    // The store gauges are published every half second.
    std::thread::sleep(Duration::from_millis(700));
    let text = node.metrics();
    let capacity = text
        .lines()
        .find(|line| line.starts_with("es_wal_bytes_capacity"))
        .unwrap();
    assert_ne!(
        capacity, "es_wal_bytes_capacity 0",
        "WAL capacity not published"
    );
}

#[test]
fn second_signal_during_shutdown_exits_at_once_with_code_1() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    node.signal(libc::SIGINT);
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(10)).expect("node exits");
    assert_eq!(status.code(), Some(1), "log:\n{}", node.log());
    assert!(node.log().contains("second signal"), "log:\n{}", node.log());
}

#[test]
fn metrics_endpoint_serves_a_bounded_number_of_connections_at_once() {
    use std::io::Read;

    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    // Connections that never send a request hold their slots until the request timeout.
    let idle: Vec<std::net::TcpStream> = (0..serve::http::MAX_OPEN_SCRAPES)
        .map(|_| std::net::TcpStream::connect(node.metrics_address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = std::net::TcpStream::connect(node.metrics_address).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        refused.read(&mut byte).ok(),
        Some(0),
        "a connection over the bound is closed at once"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    assert!(node.metrics().contains("es_requests_total"));
}
