//! Authentication against the real `data-node` binary running its embedded placement manager,
//! with both tokens configured: what each kind of connection may do at the node and at the
//! placement manager, that the node registers and heartbeats with the admin token, that the
//! placement manager creates replicas on the node with it, and that no token reaches the log.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, CallResult, Client};
use wire::msg::{
    AppendRequest, AppendResponse, AuthenticateRequest, AuthenticateResponse, CreateRangeRequest,
    CreateRangeResponse, CreateStreamRequest, CreateStreamResponse, DescribeClusterRequest,
    DescribeClusterResponse, Message, SealRangeRequest, SealRangeResponse,
};
use wire::{BatchBuilder, Epoch, ErrorCode, Offset, RangeIndex, StreamId};

const ADMIN_TOKEN: &str = "admin-Zq7vB3kPx9LmW2tR";
const CLIENT_TOKEN: &str = "client-Hs4nC8dYf6JgT1uE";
/// A stream id the placement manager never allocates in this test, for the range created on the
/// node by hand.
const MANUAL_STREAM: u64 = 1_000_000;

/// The data node process; killed on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connect(address: SocketAddr, token: Option<&str>) -> Client {
    let mut client = Client::connect(address).expect("connect");
    if let Some(token) = token {
        let result: CallResult<AuthenticateResponse> = client
            .call(
                &AuthenticateRequest {
                    token: token.to_string(),
                },
                &[],
            )
            .unwrap();
        result.expect("the token is accepted");
    }
    client
}

fn code<R>(result: CallResult<R>) -> Option<ErrorCode> {
    result.err().map(|error| error.code)
}

fn call<M: Message, R: Message>(client: &mut Client, message: &M) -> CallResult<R> {
    client.call(message, &[]).unwrap()
}

fn append_request() -> (AppendRequest, bytes::Bytes) {
    let mut builder =
        BatchBuilder::new(StreamId(MANUAL_STREAM), RangeIndex(0), Epoch(0), Offset(0));
    builder.push_record(b"authenticated").unwrap();
    let request = AppendRequest {
        repair: false,
        stream_id: StreamId(MANUAL_STREAM),
        range_index: RangeIndex(0),
        epoch: Epoch(0),
        confirmed_offset: None,
    };
    (request, builder.finish().unwrap())
}

#[test]
fn roles_are_enforced_the_node_joins_its_placement_manager_and_tokens_stay_out_of_the_log() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let node_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let pm_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config_path = directory.path().join("node.yaml");
    let log_path = directory.path().join("node.log");
    std::fs::write(
        &config_path,
        format!(
            "server:\n  listen: {node_address}\n  workers: 1\n\
             store:\n  path: {}\n  segment-size-bytes: 8388608\n  cache-size-bytes: 8388608\n\
             pm:\n  embedded: true\n  listen: {pm_address}\n  addresses: [{pm_address}]\n  \
             heartbeat-interval-ms: 100\n\
             metrics:\n  enabled: false\n\
             log:\n  level: debug\n\
             auth:\n  admin-token: {ADMIN_TOKEN}\n  client-token: {CLIENT_TOKEN}\n",
            data.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_data-node"))
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start data-node");
    let mut daemon = Daemon(child);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // PING is answered before authentication: it is how readiness is checked.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut client) = Client::connect(node_address) {
            if client.ping(b"ready").is_ok() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no data node; log:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // At the data node. Not authenticated: nothing but PING.
    let (append, batch) = append_request();
    let create = CreateRangeRequest {
        stream_id: StreamId(MANUAL_STREAM),
        ..CreateRangeRequest::default()
    };
    let mut anonymous = connect(node_address, None);
    assert_eq!(
        code(
            anonymous
                .call::<_, AppendResponse>(&append, &batch)
                .unwrap()
        ),
        Some(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        code(call::<_, CreateRangeResponse>(&mut anonymous, &create)),
        Some(ErrorCode::Unauthenticated)
    );
    let refused: CallResult<AuthenticateResponse> = call(
        &mut anonymous,
        &AuthenticateRequest {
            token: CLIENT_TOKEN.to_uppercase(),
        },
    );
    assert_eq!(code(refused), Some(ErrorCode::Unauthenticated));

    // The client role may not create a replica; the admin may.
    let mut client = connect(node_address, Some(CLIENT_TOKEN));
    assert_eq!(
        code(call::<_, CreateRangeResponse>(&mut client, &create)),
        Some(ErrorCode::PermissionDenied)
    );
    let mut admin = connect(node_address, Some(ADMIN_TOKEN));
    call::<_, CreateRangeResponse>(&mut admin, &create).expect("admin creates a range");
    // The client role writes and seals as the range's writer.
    client
        .call::<_, AppendResponse>(&append, &batch)
        .unwrap()
        .expect("client appends");
    let seal = SealRangeRequest {
        fence_only: false,
        stream_id: StreamId(MANUAL_STREAM),
        range_index: RangeIndex(0),
        epoch: Epoch(0),
        end_offset: None,
    };
    call::<_, SealRangeResponse>(&mut client, &seal).expect("client seals as the writer");

    // At the placement manager: the node registered and heartbeats with the admin token.
    let mut pm_client = connect(pm_address, Some(CLIENT_TOKEN));
    assert_eq!(
        code(call::<_, DescribeClusterResponse>(
            &mut pm_client,
            &DescribeClusterRequest {}
        )),
        Some(ErrorCode::PermissionDenied)
    );
    let mut pm_admin = connect(pm_address, Some(ADMIN_TOKEN));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (cluster, _) =
            call::<_, DescribeClusterResponse>(&mut pm_admin, &DescribeClusterRequest {})
                .expect("admin describes the cluster");
        let joined = cluster.nodes.iter().any(|node| {
            node.address == node_address.to_string()
                && node.alive
                && node.last_heartbeat_age_ms < 2_000
        });
        if joined {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never heartbeated: {cluster:?}; log:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // An application creates a stream and a range through the placement manager, which creates
    // the replica on the node with its admin token.
    let (stream, _) = call::<_, CreateStreamResponse>(
        &mut pm_client,
        &CreateStreamRequest {
            replica_count: 1,
            ack_count: 1,
            retention_ms: 0,
            retention_bytes: 0,
        },
    )
    .expect("client creates a stream");
    let (range, _) = call::<_, CreateRangeResponse>(
        &mut pm_client,
        &CreateRangeRequest {
            stream_id: stream.stream.id,
            epoch: stream.stream.epoch,
            ..CreateRangeRequest::default()
        },
    )
    .unwrap_or_else(|error| panic!("placement failed: {error:?}; log:\n{}", read_log()));
    assert_eq!(range.range.replicas.len(), 1);
    assert_eq!(range.range.replicas[0].address, node_address.to_string());

    // Nothing above put a token in the log, at debug level, nor a warning about an open port.
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let _ = daemon.0.wait();
    let log = read_log();
    assert!(
        log.contains("registered"),
        "the log is being captured:\n{log}"
    );
    for token in [ADMIN_TOKEN, CLIENT_TOKEN, &CLIENT_TOKEN.to_uppercase()] {
        assert!(!log.contains(token), "a token is in the log:\n{log}");
    }
    assert!(!log.contains("without a token"), "{log}");
}

#[test]
fn a_node_listening_beyond_loopback_without_a_token_warns_at_start() {
    let directory = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_path = directory.path().join("node.yaml");
    let log_path = directory.path().join("node.log");
    std::fs::write(
        &config_path,
        format!(
            "server:\n  listen: 0.0.0.0:{port}\n  workers: 1\n\
             store:\n  path: {}\n  segment-size-bytes: 8388608\n  cache-size-bytes: 8388608\n\
             pm:\n  embedded: false\n  addresses: []\n\
             metrics:\n  enabled: false\n",
            directory.path().join("data").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_data-node"))
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start data-node");
    let _daemon = Daemon(child);
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut client) = Client::connect(address) {
            if client.ping(b"ready").is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no data node");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("beyond loopback, without a token"),
        "no warning in:\n{log}"
    );
    // Authentication is off: an unauthenticated connection has full rights.
    let mut client = connect(address, None);
    call::<_, CreateRangeResponse>(
        &mut client,
        &CreateRangeRequest {
            stream_id: StreamId(MANUAL_STREAM),
            ..CreateRangeRequest::default()
        },
    )
    .expect("no token configured: anyone may create a range");
}
