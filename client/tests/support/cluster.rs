//! A replication test cluster: one real `pm` and N real `data-node` processes on loopback ports
//! chosen at run time, each with a directory of its own under one temporary directory, and the
//! checkers that look at what the data nodes really hold, over the raw wire protocol (a blocking
//! connection, no SDK), so that a replication bug in the SDK cannot hide itself.
//!
//! Processes are signalled only by the pid this harness started (SIGKILL, SIGSTOP, SIGCONT) and
//! SIGKILLed when their guard drops, even when a test fails. A node or the PM restarts on the same
//! port with the same data directory, as after a crash. Binaries are looked up next to the test
//! executable (`target/<profile>/`) and built only when missing, as the other client tests do:
//! after changing `node` or `pm`, build them (`cargo build -p node --bin data-node -p pm --bin pm`)
//! before running these tests.
//!
//! The verifier half ([`record_payload`], [`verify_stream`]) is pure: every record a test writes
//! names itself (writer session, call, record) and carries filler derived from that name, so a
//! record read back can be checked bit-exact and placed in the order it was written without
//! trusting the component under test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::blocking::Connection;
use client::ClientError;
use wire::msg::{
    DescribeClusterRequest, DescribeClusterResponse, ErrorResponse, FetchRequest, FetchResponse,
    ListRangesRequest, ListRangesResponse, Message, PingRequest,
};
use wire::{BatchIter, ErrorCode, NodeId, Offset, Range, RangeIndex, StreamId};

/// Heartbeat interval the data nodes are given; the PM calls a node dead after
/// [`NODE_TIMEOUT_MS`] of silence (five heartbeats) and runs maintenance every
/// [`MAINTENANCE_INTERVAL_MS`].
pub const HEARTBEAT_INTERVAL_MS: u64 = 300;
pub const NODE_TIMEOUT_MS: u64 = 1_500;
pub const MAINTENANCE_INTERVAL_MS: u64 = 500;
/// Store segment size of the data nodes: small, so a few MiB fill several segments.
pub const SEGMENT_SIZE_BYTES: u64 = 4 * 1024 * 1024;
/// How long one raw request may take before a checker gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Serialises the cluster tests of one test binary: on a two-core machine two clusters at once
/// starve each other's heartbeats and the failover timings mean nothing.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub use crate::support::{data_node_binary, free_port, pm_binary};

/// Polls `condition` every 20 ms until it returns `Ok` or `timeout` passes; panics then with
/// `what` and the last state it described (the `Err`).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match condition() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!(
                "{what}: not within {} ms; last seen: {last}",
                timeout.as_millis()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, SIGKILLed by its pid and reaped when dropped. Its stdout and stderr are
/// appended to `log_path`, across restarts.
pub struct Process {
    child: Option<Child>,
    pub name: String,
    pub log_path: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, binary: &Path, arguments: &[&str], log_path: &Path) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("open the log file");
        let child = Command::new(binary)
            .args(arguments)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        Process {
            child: Some(child),
            name: name.to_string(),
            log_path: log_path.to_path_buf(),
        }
    }

    /// The pid while the process is ours (started and not reaped).
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| child.id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` to the process by its pid.
    pub fn signal(&self, signal: i32) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        // SAFETY: kill(2) on the pid of a child we started and have not reaped (so the pid
        // cannot have been reused); no memory is involved.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal}) of {} failed", self.name);
    }

    /// SIGKILL and reap. Nothing happens if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `address` answers PING, or `process` exits, or `timeout` passes.
fn wait_ready(process: &mut Process, address: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !process.is_running() {
            return false;
        }
        if let Ok(mut connection) = Connection::connect_timeout(address, Duration::from_millis(500))
        {
            if connection
                .request(&PingRequest {}, b"ready", Duration::from_secs(2))
                .is_ok()
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Starts `binary -c config` until it answers PING on `address`; retries when the port was taken
/// by someone else (a fresh port from `next_address`, or the same one after a pause).
fn start_daemon(
    name: &str,
    binary: &Path,
    config_path: &Path,
    log_path: &Path,
    mut write_config: impl FnMut() -> String,
) -> (Process, String) {
    let mut last_log = String::new();
    for _attempt in 0..8 {
        let address = write_config();
        let mut process = Process::spawn(
            name,
            binary,
            &["-c", config_path.to_str().expect("utf-8 path")],
            log_path,
        );
        if wait_ready(&mut process, &address, START_TIMEOUT) {
            return (process, address);
        }
        last_log = process.log_tail(40);
        process.kill();
        if !last_log.contains("in use") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{name} did not start; the end of its log:\n{last_log}");
}

/// A running `pm` daemon.
pub struct PmProcess {
    pub process: Process,
    pub address: String,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    port: u16,
}

impl PmProcess {
    pub fn start(data_dir: &Path) -> PmProcess {
        let mut pm = PmProcess {
            process: Process {
                child: None,
                name: "pm".into(),
                log_path: data_dir.with_extension("log"),
            },
            address: String::new(),
            data_dir: data_dir.to_path_buf(),
            config_path: data_dir.with_extension("yaml"),
            port: 0,
        };
        pm.launch(None);
        pm
    }

    /// (Re)starts the process: on `port` when given (a restart keeps its address), else on a
    /// free one.
    fn launch(&mut self, port: Option<u16>) {
        let config_path = self.config_path.clone();
        let data_dir = self.data_dir.clone();
        let (process, address) = start_daemon(
            "pm",
            &pm_binary(),
            &self.config_path,
            &self.data_dir.with_extension("log"),
            || {
                let address = format!("127.0.0.1:{}", port.unwrap_or_else(free_port));
                std::fs::write(
                    &config_path,
                    format!(
                        "server:\n  listen: {address}\n  grace-period-ms: 1000\n\
                         storage:\n  path: {}\n  segment-size-bytes: 1048576\n\
                         cluster:\n  heartbeat-interval-ms: {HEARTBEAT_INTERVAL_MS}\n  \
                         node-timeout-ms: {NODE_TIMEOUT_MS}\n  node-request-timeout-ms: 2000\n  \
                         min-free-disk-bytes: 1048576\n  \
                         maintenance-interval-ms: {MAINTENANCE_INTERVAL_MS}\n\
                         metrics:\n  enabled: false\nlog:\n  level: info\n",
                        data_dir.display()
                    ),
                )
                .expect("write the pm config");
                address
            },
        );
        self.port = address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("an address with a port");
        self.process = process;
        self.address = address;
    }

    /// SIGKILL (a crash: no OFFLINE, no clean close of its log).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port with the same data directory.
    pub fn restart(&mut self) {
        assert!(!self.process.is_running(), "the pm is still running");
        self.launch(Some(self.port));
    }

    pub fn client(&self) -> RawClient {
        RawClient::connect(&self.address)
    }
}

/// A running `data-node` that registers with a placement manager and heartbeats to it.
pub struct NodeProcess {
    pub process: Process,
    pub address: String,
    pub metrics_address: String,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pm_address: String,
    paused: bool,
}

impl NodeProcess {
    pub fn start(data_dir: &Path, pm_address: &str) -> NodeProcess {
        let mut node = NodeProcess {
            process: Process {
                child: None,
                name: "data-node".into(),
                log_path: data_dir.with_extension("log"),
            },
            address: String::new(),
            metrics_address: String::new(),
            data_dir: data_dir.to_path_buf(),
            config_path: data_dir.with_extension("yaml"),
            pm_address: pm_address.to_string(),
            paused: false,
        };
        node.launch(false);
        node
    }

    fn launch(&mut self, same_ports: bool) {
        let ports = same_ports.then(|| (self.address.clone(), self.metrics_address.clone()));
        let config_path = self.config_path.clone();
        let data_dir = self.data_dir.clone();
        let pm_address = self.pm_address.clone();
        let mut chosen = (String::new(), String::new());
        let (process, _) = start_daemon(
            "data-node",
            &data_node_binary(),
            &self.config_path,
            &self.data_dir.with_extension("log"),
            || {
                let (address, metrics_address) = ports.clone().unwrap_or_else(|| {
                    (
                        format!("127.0.0.1:{}", free_port()),
                        format!("127.0.0.1:{}", free_port()),
                    )
                });
                std::fs::write(
                    &config_path,
                    format!(
                        "server:\n  listen: {address}\n  workers: 1\n  grace-period-ms: 1000\n\
                         store:\n  path: {}\n  segment-size-bytes: {SEGMENT_SIZE_BYTES}\n  \
                         cache-size-bytes: 4194304\n  checkpoint-interval-ms: 500\n\
                         pm:\n  embedded: false\n  addresses: [{pm_address}]\n  \
                         heartbeat-interval-ms: {HEARTBEAT_INTERVAL_MS}\n\
                         metrics:\n  enabled: true\n  addr: {metrics_address}\n\
                         log:\n  level: info\n",
                        data_dir.display()
                    ),
                )
                .expect("write the data-node config");
                chosen = (address.clone(), metrics_address);
                address
            },
        );
        self.process = process;
        (self.address, self.metrics_address) = chosen;
        self.paused = false;
    }

    /// SIGKILL: the node dies without a word to anyone.
    pub fn kill(&mut self) {
        self.process.kill();
        self.paused = false;
    }

    /// Starts it again on the same ports with the same data directory (so the same node id).
    pub fn restart(&mut self) {
        assert!(!self.process.is_running(), "{} still runs", self.address);
        self.launch(true);
    }

    /// SIGSTOP: the node keeps its sockets open and answers nothing (the timeout path).
    pub fn pause(&mut self) {
        self.process.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`NodeProcess::pause`].
    pub fn resume(&mut self) {
        self.process.signal(libc::SIGCONT);
        self.paused = false;
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The value of the sample `name` (no labels) on the node's `/metrics` page.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let page = http_get(&self.metrics_address, "/metrics")?;
        page.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok())?
            })
    }

    /// WAL bytes holding data not yet reclaimed (`es_wal_bytes_used`).
    pub fn wal_bytes_used(&self) -> Option<u64> {
        self.metric("es_wal_bytes_used").map(|value| value as u64)
    }
}

/// The body of `GET path` over HTTP/1.0, or `None` when the server cannot be reached.
pub fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The sum of the sizes of the files under `directory`, recursively.
pub fn directory_bytes(directory: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

/// What a request returned: the typed response and its payload, or the error header.
pub type Answer<R> = Result<(R, Bytes), ErrorResponse>;

/// A blocking client on one connection, for the harness and the checkers.
pub struct RawClient {
    connection: Connection,
    pub address: String,
}

impl RawClient {
    pub fn connect(address: &str) -> RawClient {
        RawClient::try_connect(address)
            .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"))
    }

    pub fn try_connect(address: &str) -> Result<RawClient, ClientError> {
        Ok(RawClient {
            connection: Connection::connect_timeout(address, Duration::from_secs(2))?,
            address: address.to_string(),
        })
    }

    pub fn try_call<M: Message, R: Message>(
        &mut self,
        message: &M,
        payload: &[u8],
    ) -> Result<Answer<R>, ClientError> {
        let exchange = self.connection.request(message, payload, REQUEST_TIMEOUT)?;
        let frame = exchange.response;
        if frame.is_error() {
            return Ok(Err(frame.error_response().map_err(ClientError::Decode)?));
        }
        let response = frame.decode_message::<R>().map_err(ClientError::Decode)?;
        Ok(Ok((response, frame.payload.clone())))
    }

    pub fn describe_cluster(&mut self) -> Result<Vec<wire::msg::ClusterNode>, String> {
        match self.try_call::<_, DescribeClusterResponse>(&DescribeClusterRequest {}, &[]) {
            Ok(Ok((response, _))) => Ok(response.nodes),
            Ok(Err(error)) => Err(format!("DESCRIBE_CLUSTER refused: {error:?}")),
            Err(error) => Err(format!(
                "DESCRIBE_CLUSTER to {} failed: {error}",
                self.address
            )),
        }
    }

    /// LIST_RANGES of `stream`, in index order.
    pub fn list_ranges(&mut self, stream: StreamId) -> Result<Vec<Range>, String> {
        let request = ListRangesRequest {
            stream_id: Some(stream),
        };
        match self.try_call::<_, ListRangesResponse>(&request, &[]) {
            Ok(Ok((response, _))) => {
                let mut ranges = response.ranges;
                ranges.sort_by_key(|range| range.index);
                Ok(ranges)
            }
            Ok(Err(error)) => Err(format!("LIST_RANGES refused: {error:?}")),
            Err(error) => Err(format!("LIST_RANGES to {} failed: {error}", self.address)),
        }
    }
}

/// A `pm` and `count` data nodes joined to it.
pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    pub pm: PmProcess,
    pub directory: tempfile::TempDir,
}

impl Cluster {
    /// Starts the placement manager and the nodes and waits until every node is registered and
    /// alive.
    pub fn start(count: usize) -> Cluster {
        let directory = tempfile::tempdir().expect("create a temporary directory");
        let pm = PmProcess::start(&directory.path().join("pm"));
        let nodes: Vec<NodeProcess> = (0..count)
            .map(|index| {
                NodeProcess::start(&directory.path().join(format!("node-{index}")), &pm.address)
            })
            .collect();
        let cluster = Cluster {
            nodes,
            pm,
            directory,
        };
        cluster.wait_all_alive(Duration::from_secs(30));
        cluster
    }

    pub fn pm_address(&self) -> String {
        self.pm.address.clone()
    }

    /// DESCRIBE_CLUSTER at the PM.
    pub fn cluster_nodes(&self) -> Result<Vec<wire::msg::ClusterNode>, String> {
        RawClient::try_connect(&self.pm.address)
            .map_err(|error| error.to_string())?
            .describe_cluster()
    }

    /// Waits until the PM lists every node of this cluster as alive.
    pub fn wait_all_alive(&self, timeout: Duration) {
        let addresses: Vec<String> = self.nodes.iter().map(|node| node.address.clone()).collect();
        wait_for(timeout, "every data node registered and alive", || {
            let listed = self.cluster_nodes()?;
            let all = addresses.iter().all(|address| {
                listed
                    .iter()
                    .any(|node| &node.address == address && node.alive)
            });
            if all {
                Ok(())
            } else {
                Err(format!("{listed:?}"))
            }
        });
    }

    /// Waits until the PM calls the node at `index` alive (`true`) or dead (`false`).
    pub fn wait_node_alive(&self, index: usize, alive: bool, timeout: Duration) {
        let address = self.nodes[index].address.clone();
        wait_for(
            timeout,
            &format!("the PM calls node {index} ({address}) alive = {alive}"),
            || {
                let listed = self.cluster_nodes()?;
                if listed
                    .iter()
                    .any(|node| node.address == address && node.alive == alive)
                {
                    Ok(())
                } else {
                    Err(format!("{listed:?}"))
                }
            },
        );
    }

    /// The index in `nodes` of the node the PM knows as `id`.
    pub fn index_of(&self, id: NodeId) -> usize {
        let listed = self
            .cluster_nodes()
            .unwrap_or_else(|error| panic!("DESCRIBE_CLUSTER: {error}"));
        let address = listed
            .iter()
            .find(|node| node.node_id == id)
            .unwrap_or_else(|| panic!("node {id} is not registered: {listed:?}"))
            .address
            .clone();
        self.index_of_address(&address)
    }

    /// The index in `nodes` of the node serving `address`.
    pub fn index_of_address(&self, address: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.address == address)
            .unwrap_or_else(|| panic!("no node of this cluster serves {address}"))
    }

    /// LIST_RANGES of `stream` at the PM.
    pub fn ranges(&self, stream: StreamId) -> Result<Vec<Range>, String> {
        RawClient::try_connect(&self.pm.address)
            .map_err(|error| error.to_string())?
            .list_ranges(stream)
    }

    /// The open (last, unsealed) range of `stream` at the PM, waiting up to `timeout` for one.
    pub fn open_range(&self, stream: StreamId, timeout: Duration) -> Range {
        wait_for(
            timeout,
            &format!("an open range of stream {stream}"),
            || {
                let ranges = self.ranges(stream)?;
                match ranges.last() {
                    Some(range) if range.end_offset.is_none() => Ok(range.clone()),
                    _ => Err(format!("{ranges:?}")),
                }
            },
        )
    }

    /// The last lines of every process's log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut text = format!(
            "--- pm {} (pid {:?}) ---\n{}\n",
            self.pm.address,
            self.pm.process.pid(),
            self.pm.process.log_tail(lines)
        );
        for (index, node) in self.nodes.iter().enumerate() {
            text += &format!(
                "--- node {index} {} (pid {:?}) ---\n{}\n",
                node.address,
                node.process.pid(),
                node.process.log_tail(lines)
            );
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the cluster's logs ({}):\n{}",
                self.directory.path().display(),
                self.log_tails(25)
            );
        }
        // Data nodes first, then the PM; each SIGKILLed by its pid.
        for node in &mut self.nodes {
            node.kill();
        }
        self.pm.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Checkers over the raw protocol.

/// One batch as a replica returned it: its header fields and its whole bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldBatch {
    pub base_offset: Offset,
    pub record_count: u32,
    pub epoch: u64,
    pub bytes: Bytes,
    pub records: Vec<Bytes>,
}

impl HeldBatch {
    pub fn next_offset(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.record_count))
    }
}

/// What one replica of a range holds from the range's start: its batches, contiguous, up to
/// `held_end` (below `end` when asked for one).
#[derive(Clone, Debug)]
pub struct ReplicaHolding {
    pub node_id: NodeId,
    pub address: String,
    /// `Err` when the replica could not be read (down, refused): why.
    pub batches: Result<Vec<HeldBatch>, String>,
    pub held_end: Offset,
    /// The replica answered with FETCH DURABLE (fenced or sealed); plain FETCH otherwise.
    pub durable_read: bool,
}

/// Reads range `index` of `stream` from the replica at `address` from `start` up to `end`
/// (exclusive; `None`: as far as it serves), with FETCH DURABLE (fenced or sealed replica) or,
/// where that is refused because the replica is still open, plain FETCH (its confirmed offset).
pub fn read_replica(
    address: &str,
    stream: StreamId,
    index: RangeIndex,
    start: Offset,
    end: Option<Offset>,
) -> Result<(Vec<HeldBatch>, bool), String> {
    let mut client = RawClient::try_connect(address).map_err(|error| error.to_string())?;
    let mut batches = Vec::new();
    let mut offset = start;
    let mut durable = true;
    while end.is_none_or(|end| offset < end) {
        let request = FetchRequest {
            stream_id: stream,
            range_index: index,
            max_bytes: 1 << 20,
            start_offset: offset,
            max_wait_ms: 0,
            read_durable: durable,
            expect_sealed: false,
        };
        let answer = client
            .try_call::<_, FetchResponse>(&request, &[])
            .map_err(|error| format!("FETCH from {address} at {offset}: {error}"))?;
        let (_, payload) = match answer {
            Ok(answer) => answer,
            Err(error) if durable && error.code == ErrorCode::InvalidArgument => {
                // Still open on this replica: readable up to its confirmed offset only.
                durable = false;
                continue;
            }
            Err(error) => {
                return Err(format!(
                    "FETCH {stream}/{index} at {offset} (durable {durable}) refused by {address}: {error:?}"
                ))
            }
        };
        if payload.is_empty() {
            break;
        }
        for batch in BatchIter::new(payload) {
            let batch = batch.map_err(|error| {
                format!("{address} served a bad batch of {stream}/{index} near {offset}: {error}")
            })?;
            let header = *batch.header();
            if header.base_offset != offset {
                return Err(format!(
                    "{address} served {stream}/{index} batch at {} where {offset} was next",
                    header.base_offset
                ));
            }
            if end.is_some_and(|end| header.next_offset() > end) {
                return Err(format!(
                    "{address} served {stream}/{index} batch [{}, {}) crossing the end {end:?}",
                    header.base_offset,
                    header.next_offset()
                ));
            }
            let records = batch
                .records()
                .collect::<Result<Vec<Bytes>, _>>()
                .map_err(|error| format!("{address}: bad records at {offset}: {error}"))?;
            offset = header.next_offset();
            batches.push(HeldBatch {
                base_offset: header.base_offset,
                record_count: header.record_count,
                epoch: header.epoch.0,
                bytes: batch.as_bytes().clone(),
                records,
            });
        }
    }
    Ok((batches, durable))
}

/// What every replica of `range` holds of `[start, end)` (`end`: the recorded end, or `None`
/// for an open range: as far as each serves).
pub fn read_replicas(range: &Range) -> Vec<ReplicaHolding> {
    range
        .replicas
        .iter()
        .map(|replica| {
            let read = read_replica(
                &replica.address,
                range.stream_id,
                range.index,
                range.start_offset,
                range.end_offset,
            );
            let (batches, durable_read) = match read {
                Ok((batches, durable)) => (Ok(batches), durable),
                Err(error) => (Err(error), false),
            };
            let held_end = batches
                .as_ref()
                .ok()
                .and_then(|batches| batches.last().map(HeldBatch::next_offset))
                .unwrap_or(range.start_offset);
            ReplicaHolding {
                node_id: replica.node_id,
                address: replica.address.clone(),
                batches,
                held_end,
                durable_read,
            }
        })
        .collect()
}

/// The check of one sealed range: which replicas hold all of `[start, end)`.
#[derive(Clone, Debug)]
pub struct SealedRangeCheck {
    pub range: Range,
    pub holders: Vec<NodeId>,
    pub replicas: Vec<ReplicaHolding>,
    /// The batches of `[start, end)`, as every holder has them.
    pub batches: Vec<HeldBatch>,
}

/// Checks every sealed range of `stream` at the PM (at `pm_address`): at least the range's own
/// A replicas hold every batch of `[start, end)`, and they hold the same bytes. Replicas that are
/// down count as not holding. Returns one check per sealed range, or what is wrong.
pub fn check_sealed_ranges(
    pm_address: &str,
    stream: StreamId,
) -> Result<Vec<SealedRangeCheck>, String> {
    let ranges = RawClient::try_connect(pm_address)
        .map_err(|error| error.to_string())?
        .list_ranges(stream)?;
    let mut checks = Vec::new();
    for range in ranges.iter().filter(|range| range.end_offset.is_some()) {
        let end = range.end_offset.expect("sealed");
        let replicas = read_replicas(range);
        let holders: Vec<&ReplicaHolding> = replicas
            .iter()
            .filter(|replica| replica.batches.is_ok() && replica.held_end == end)
            .collect();
        let describe = || {
            replicas
                .iter()
                .map(|replica| {
                    format!(
                        "node {} ({}): held end {} durable {} {}",
                        replica.node_id,
                        replica.address,
                        replica.held_end,
                        replica.durable_read,
                        replica.batches.as_ref().err().cloned().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        if holders.len() < usize::from(range.ack_count.max(1)) {
            return Err(format!(
                "range {}/{} sealed at {end} (start {}, A = {}): only {} replica(s) hold everything below the end: {}",
                stream,
                range.index,
                range.start_offset,
                range.ack_count,
                holders.len(),
                describe()
            ));
        }
        let reference = holders[0].batches.as_ref().expect("a holder");
        for holder in &holders[1..] {
            let batches = holder.batches.as_ref().expect("a holder");
            if batches != reference {
                let first_difference = batches
                    .iter()
                    .zip(reference.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(batches.len().min(reference.len()));
                return Err(format!(
                    "range {}/{}: replicas {} and {} hold different bytes below the end {end} (first difference at batch {first_difference})",
                    stream, range.index, holders[0].node_id, holder.node_id
                ));
            }
        }
        checks.push(SealedRangeCheck {
            range: range.clone(),
            holders: holders.iter().map(|holder| holder.node_id).collect(),
            batches: reference.clone(),
            replicas: replicas.clone(),
        });
    }
    Ok(checks)
}

/// Every record of `stream` from `from` as the data nodes hold it, read without the SDK: each
/// sealed range from a replica that holds all of it (checked by [`check_sealed_ranges`]), the
/// open range, if any, from the replica that serves the most (each serves up to its confirmed
/// offset).
pub fn raw_stream_records(
    pm_address: &str,
    stream: StreamId,
    from: Offset,
) -> Result<Vec<(Offset, Bytes)>, String> {
    let sealed = check_sealed_ranges(pm_address, stream)?;
    let ranges = RawClient::try_connect(pm_address)
        .map_err(|error| error.to_string())?
        .list_ranges(stream)?;
    let mut batches: Vec<HeldBatch> = sealed.into_iter().flat_map(|check| check.batches).collect();
    if let Some(open) = ranges.iter().find(|range| range.end_offset.is_none()) {
        let best = read_replicas(open)
            .into_iter()
            .filter_map(|replica| replica.batches.ok())
            .max_by_key(|batches| batches.len())
            .unwrap_or_default();
        batches.extend(best);
    }
    let mut records = Vec::new();
    for batch in batches {
        for (position, record) in batch.records.iter().enumerate() {
            let offset = Offset(batch.base_offset.0 + position as u64);
            if offset >= from {
                records.push((offset, record.clone()));
            }
        }
    }
    Ok(records)
}

// ---------------------------------------------------------------------------------------------
// Self-describing records and the verifier.

const RECORD_MAGIC: u32 = 0x5245_504c; // "REPL"
/// Bytes of a record's self-description; the rest is filler derived from it.
pub const RECORD_HEADER_BYTES: usize = 28;

/// Who wrote a record: writer session, append call within it, record within the call (of
/// `count`), and the record's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordName {
    pub session: u32,
    pub call: u64,
    pub record: u32,
    pub count: u32,
    pub len: u32,
}

fn filler_byte(name: &RecordName, position: usize) -> u8 {
    let mut x = (u64::from(name.session) << 48)
        ^ name.call.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (u64::from(name.record) << 32)
        ^ position as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as u8
}

/// The record `name` names: its self-description then deterministic filler, `name.len` bytes
/// (at least [`RECORD_HEADER_BYTES`]).
pub fn record_payload(name: RecordName) -> Bytes {
    let len = (name.len as usize).max(RECORD_HEADER_BYTES);
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&name.session.to_le_bytes());
    bytes.extend_from_slice(&name.call.to_le_bytes());
    bytes.extend_from_slice(&name.record.to_le_bytes());
    bytes.extend_from_slice(&name.count.to_le_bytes());
    bytes.extend_from_slice(&(len as u32).to_le_bytes());
    for position in RECORD_HEADER_BYTES..len {
        bytes.push(filler_byte(&name, position));
    }
    Bytes::from(bytes)
}

/// The records of append call `call` of `session`: `count` records of `len` bytes.
pub fn call_records(session: u32, call: u64, count: u32, len: u32) -> Vec<Bytes> {
    (0..count)
        .map(|record| {
            record_payload(RecordName {
                session,
                call,
                record,
                count,
                len,
            })
        })
        .collect()
}

/// The name of a record read back, if it is bit-exact what that name generates.
pub fn parse_record(bytes: &[u8]) -> Result<RecordName, String> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(format!("a record of {} bytes is too short", bytes.len()));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(0) != RECORD_MAGIC {
        return Err("a record without this test's magic".into());
    }
    let name = RecordName {
        session: u32_at(4),
        call: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        record: u32_at(16),
        count: u32_at(20),
        len: u32_at(24),
    };
    if name.len as usize != bytes.len() {
        return Err(format!(
            "record {name:?} is {} bytes long, it was written with {}",
            bytes.len(),
            name.len
        ));
    }
    if record_payload(name) != bytes {
        return Err(format!("record {name:?} does not hold the bytes written"));
    }
    Ok(name)
}

/// What a test knows of one writer session: in call order, the calls acknowledged to it
/// (`call index -> (base offset, next offset)`), which must be the first calls with no gap.
#[derive(Clone, Debug, Default)]
pub struct SessionLog {
    pub session: u32,
    pub acknowledged: BTreeMap<u64, (Offset, Offset)>,
}

impl SessionLog {
    pub fn new(session: u32) -> SessionLog {
        SessionLog {
            session,
            acknowledged: BTreeMap::new(),
        }
    }

    pub fn acknowledge(&mut self, call: u64, base: Offset, next: Offset) {
        self.acknowledged.insert(call, (base, next));
    }

    /// Calls acknowledged: they must be `0..count`.
    pub fn acknowledged_calls(&self) -> u64 {
        self.acknowledged.len() as u64
    }
}

/// What a stream held, per session: calls present (`0..calls_present`) and offsets.
#[derive(Clone, Debug, Default)]
pub struct StreamSummary {
    pub records: u64,
    /// session -> (calls present, calls acknowledged, first offset, end offset)
    pub sessions: BTreeMap<u32, (u64, u64, Offset, Offset)>,
}

/// Checks `records` (offset, bytes), read from `from`, against the writers' `sessions` (in the
/// order they wrote): offsets are dense from `from`; every record is bit-exact what its name
/// generates; records come whole append call by whole call; each session's calls appear as
/// `0, 1, 2, ...` with no gap and no repeat, at least up to its last acknowledged call, at the
/// offsets acknowledged; sessions follow one another in order and do not interleave. Calls that
/// were never acknowledged may be present (a writer died or was fenced with them in flight) but
/// then whole and in order. With `from` above 0 (a trimmed stream), the first session may start
/// in the middle: its calls before the first record read are not required.
pub fn verify_stream(
    records: &[(Offset, Bytes)],
    sessions: &[SessionLog],
    from: Offset,
) -> Result<StreamSummary, String> {
    let mut summary = StreamSummary {
        records: records.len() as u64,
        ..StreamSummary::default()
    };
    let mut expected_offset = from;
    // Position in `sessions` of the session being read, and its next call and record.
    let mut session_position: Option<usize> = None;
    let mut next_call = 0u64;
    let mut next_record = 0u32;
    let mut call_count = 0u32;
    let mut call_base = from;
    let mut first_call_of_stream = true;
    let position_of = |session: u32| sessions.iter().position(|log| log.session == session);
    for (offset, bytes) in records {
        if *offset != expected_offset {
            return Err(format!(
                "offset {offset} read where {expected_offset} was next (gap or repeat)"
            ));
        }
        expected_offset = Offset(offset.0 + 1);
        let name = parse_record(bytes).map_err(|error| format!("at offset {offset}: {error}"))?;
        let position = position_of(name.session).ok_or_else(|| {
            format!(
                "at offset {offset}: record of unknown session {}",
                name.session
            )
        })?;
        if next_record != 0 {
            // Inside a call: the same call's next record.
            if Some(position) != session_position
                || name.call != next_call
                || name.record != next_record
                || name.count != call_count
            {
                return Err(format!(
                    "at offset {offset}: {name:?} inside call {next_call} of session {:?} (record {next_record} of {call_count} expected): a call is not whole",
                    session_position.map(|position| sessions[position].session)
                ));
            }
        } else {
            // A call starts: the next call of this session, or call 0 of a later session
            // after this one's acknowledged calls are all present.
            if name.record != 0 && !(first_call_of_stream && from.0 > 0) {
                return Err(format!(
                    "at offset {offset}: {name:?} starts in the middle of a call"
                ));
            }
            match session_position {
                Some(current) if current == position => {
                    if name.call != next_call {
                        return Err(format!(
                            "at offset {offset}: call {} of session {} where call {next_call} was next",
                            name.call, name.session
                        ));
                    }
                }
                _ => {
                    if let Some(current) = session_position {
                        if position < current {
                            return Err(format!(
                                "at offset {offset}: session {} comes back after session {}",
                                name.session, sessions[current].session
                            ));
                        }
                        check_session_complete(&sessions[current], next_call)?;
                    }
                    let trimmed_start = first_call_of_stream && from.0 > 0;
                    if !trimmed_start {
                        // Sessions between the last one read and this one left nothing: they
                        // must have had nothing acknowledged.
                        for skipped in &sessions[session_position.map_or(0, |p| p + 1)..position] {
                            check_session_complete(skipped, 0)?;
                        }
                    }
                    if name.call != 0 && !trimmed_start {
                        return Err(format!(
                            "at offset {offset}: session {} starts with call {}",
                            name.session, name.call
                        ));
                    }
                    session_position = Some(position);
                    summary
                        .sessions
                        .insert(name.session, (0, 0, *offset, *offset));
                }
            }
            first_call_of_stream = false;
            call_base = Offset(offset.0 - u64::from(name.record));
            next_call = name.call;
            call_count = name.count;
            next_record = name.record;
        }
        next_record += 1;
        if next_record == call_count {
            // The call is complete: check it against its acknowledgement.
            let log = &sessions[position];
            if let Some(&(base, next)) = log.acknowledged.get(&name.call) {
                if base != call_base || next.0 != call_base.0 + u64::from(call_count) {
                    return Err(format!(
                        "call {} of session {} was acknowledged at [{base}, {next}) but is at [{call_base}, {})",
                        name.call,
                        name.session,
                        call_base.0 + u64::from(call_count)
                    ));
                }
            }
            let entry = summary.sessions.get_mut(&name.session).expect("inserted");
            entry.0 = name.call + 1;
            entry.3 = expected_offset;
            next_call += 1;
            next_record = 0;
        }
    }
    if next_record != 0 {
        return Err(format!(
            "the stream ends inside call {next_call} (record {next_record} of {call_count})"
        ));
    }
    let after = session_position.map_or(0, |position| position + 1);
    if let Some(current) = session_position {
        check_session_complete(&sessions[current], next_call)?;
    }
    for log in &sessions[after..] {
        check_session_complete(log, 0)?;
    }
    for log in sessions {
        if let Some(entry) = summary.sessions.get_mut(&log.session) {
            entry.1 = log.acknowledged_calls();
        }
    }
    Ok(summary)
}

/// Every acknowledged call of `log` is below `calls_present` (calls `0..calls_present` were
/// read), and its acknowledged calls are `0..n`.
fn check_session_complete(log: &SessionLog, calls_present: u64) -> Result<(), String> {
    let acknowledged = log.acknowledged_calls();
    if let Some((&last, _)) = log.acknowledged.iter().next_back() {
        if last + 1 != acknowledged {
            return Err(format!(
                "session {} was acknowledged calls that are not a prefix: {} calls, the last {last}",
                log.session, acknowledged
            ));
        }
    }
    if calls_present < acknowledged {
        return Err(format!(
            "session {}: {acknowledged} calls were acknowledged, only the first {calls_present} are in the stream: acknowledged data lost",
            log.session
        ));
    }
    Ok(())
}

/// Records read as ReadBatch-like `(base offset, records)` batches, flattened to
/// `(offset, record)`.
pub fn flatten_batches(batches: &[(Offset, Vec<Bytes>)]) -> Vec<(Offset, Bytes)> {
    batches
        .iter()
        .flat_map(|(base, records)| {
            records
                .iter()
                .enumerate()
                .map(move |(position, record)| (Offset(base.0 + position as u64), record.clone()))
        })
        .collect()
}
