//! Test harness for the placement manager's integration tests: starts the real `pm` and
//! `data-node` binaries on loopback ports chosen at run time, each with a directory of its own
//! under a temporary directory, and talks to them with the blocking client.
//!
//! Every process started here is killed by its pid when its guard drops, even when a test
//! fails; nothing is ever signalled by name. The `data-node` binary is not part of this crate,
//! so cargo does not build it for `cargo test -p pm`; [`data_node_binary`] fails with the
//! command to run when it is missing (`cargo test --workspace` builds it).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::conn::blocking::Connection;
use client::conn::ClientError;
use wire::msg::{
    AppendRequest, AppendResponse, CreateRangeRequest, CreateRangeResponse, CreateStreamRequest,
    CreateStreamResponse, DeleteStreamRequest, DeleteStreamResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeRangeRequest, DescribeRangeResponse, DescribeStreamRequest,
    DescribeStreamResponse, ErrorResponse, Message, PingRequest, PingResponse, SealRangeRequest,
    SealRangeResponse, TrimStreamRequest, TrimStreamResponse, UpdateStreamRequest,
    UpdateStreamResponse,
};
use wire::{BatchBuilder, Epoch, Offset, Range, RangeIndex, Stream, StreamId};

/// How long one request may take before the test gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a process may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Heartbeat interval the data nodes are given, and the PM's node timeout (5 heartbeats).
pub const HEARTBEAT_INTERVAL_MS: u64 = 300;
pub const NODE_TIMEOUT_MS: u64 = 1_500;
pub const MAINTENANCE_INTERVAL_MS: u64 = 500;
/// Store segment size of the data nodes started here.
pub const SEGMENT_SIZE_BYTES: u64 = 4 * 1024 * 1024;

/// Serialises the tests of one test binary that start clusters: on a small shared machine
/// several clusters at once starve each other's heartbeats and make liveness flap.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A port nobody listens on right now (bound then released; a process may still lose a race
/// for it, which the starters handle by retrying on another port).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// The `pm` binary cargo built for these tests.
pub fn pm_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pm"))
}

/// The `data-node` binary in the same target directory as `pm`.
pub fn data_node_binary() -> PathBuf {
    let pm = pm_binary();
    let directory = pm.parent().expect("the pm binary has a directory");
    let path = directory.join(format!("data-node{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist: these tests start the real data node, which cargo does not build for \
         `cargo test -p pm`. Build it first with `cargo build -p node --bin data-node` (same \
         profile), or run `cargo test --workspace`.",
        path.display()
    );
    path
}

/// The `es` binary in the same target directory as `pm` (built by `cargo test --workspace`).
pub fn es_binary() -> PathBuf {
    let pm = pm_binary();
    let directory = pm.parent().expect("the pm binary has a directory");
    let path = directory.join(format!("es{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist: build it first with `cargo build -p client --bin es` (same profile), \
         or run `cargo test --workspace`.",
        path.display()
    );
    path
}

/// Polls `condition` every 50 ms until it returns `Ok` or `timeout` passes; panics then with
/// `what` and the description of the last state it saw (the `Err`).
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed by its pid (SIGKILL) when dropped.
pub struct Process {
    child: Option<Child>,
    pub name: String,
    pub log_path: PathBuf,
}

impl Process {
    /// Starts `binary` with `arguments`, stdout and stderr to `log_path`.
    pub fn spawn(name: &str, binary: &Path, arguments: &[&str], log_path: &Path) -> Process {
        let log = std::fs::File::create(log_path).expect("create the log file");
        let child = Command::new(binary)
            .args(arguments)
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

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the process is running").id() as i32
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped; no memory.
        let result = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(result, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// SIGKILL and reap. Nothing happens if it already exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `address` answers PING, or `process` exits, or `timeout` passes.
pub fn wait_ready(process: &mut Process, address: &str, timeout: Duration) -> bool {
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

/// A running `pm` daemon.
pub struct PmProcess {
    pub process: Process,
    pub address: String,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
}

/// Settings of a `pm` started here; the defaults suit the cluster tests.
#[derive(Clone)]
pub struct PmOptions {
    pub snapshot_every_commands: u64,
    pub maintenance_interval_ms: u64,
    /// Serve `/metrics` on this address; off when `None`.
    pub metrics_address: Option<String>,
}

impl Default for PmOptions {
    fn default() -> Self {
        PmOptions {
            snapshot_every_commands: 10_000,
            maintenance_interval_ms: MAINTENANCE_INTERVAL_MS,
            metrics_address: None,
        }
    }
}

impl PmProcess {
    /// Starts a `pm` on a free port with its command log in `data_dir`.
    pub fn start(data_dir: &Path) -> PmProcess {
        PmProcess::start_with(data_dir, None, &PmOptions::default())
    }

    /// Starts a `pm` on `port` (or a free one) with its log in `data_dir`.
    pub fn start_with(data_dir: &Path, port: Option<u16>, options: &PmOptions) -> PmProcess {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let address = format!("127.0.0.1:{}", port.unwrap_or_else(free_port));
            let config_path = data_dir.with_extension("yaml");
            std::fs::write(
                &config_path,
                format!(
                    "storage:\n  snapshot-every-commands: {}\n  segment-size-bytes: 1048576\n\
                     cluster:\n  heartbeat-interval-ms: {HEARTBEAT_INTERVAL_MS}\n  \
                     node-timeout-ms: {NODE_TIMEOUT_MS}\n  node-request-timeout-ms: 2000\n  \
                     min-free-disk-bytes: 1048576\n  maintenance-interval-ms: {}\n\
                     {}log:\n  level: info\n",
                    options.snapshot_every_commands,
                    options.maintenance_interval_ms,
                    match &options.metrics_address {
                        Some(address) => format!("metrics:\n  enabled: true\n  addr: {address}\n"),
                        None => "metrics:\n  enabled: false\n".to_string(),
                    },
                ),
            )
            .expect("write the pm config");
            let log_path = data_dir.with_extension("log");
            let mut process = Process::spawn(
                "pm",
                &pm_binary(),
                &[
                    "-c",
                    config_path.to_str().expect("utf-8 path"),
                    "--listen",
                    &address,
                    "--data-dir",
                    data_dir.to_str().expect("utf-8 path"),
                ],
                &log_path,
            );
            if wait_ready(&mut process, &address, START_TIMEOUT) {
                return PmProcess {
                    process,
                    address,
                    data_dir: data_dir.to_path_buf(),
                    config_path,
                };
            }
            last_log = process.log();
            process.kill();
            if port.is_some() && last_log.contains("in use") {
                // The same port again: the previous pm's socket may linger for a moment.
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            if !last_log.contains("in use") {
                break;
            }
        }
        panic!("pm did not start; its log:\n{last_log}");
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.address)
    }
}

/// A running `data-node` that registers with and heartbeats to a placement manager.
pub struct DataNode {
    pub process: Process,
    pub address: String,
    pub metrics_address: String,
    pub data_dir: PathBuf,
}

impl DataNode {
    /// Starts a data node in `data_dir` that joins the placement manager at `pm_address`.
    pub fn start(data_dir: &Path, pm_address: &str) -> DataNode {
        let binary = data_node_binary();
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let address = format!("127.0.0.1:{}", free_port());
            let metrics_address = format!("127.0.0.1:{}", free_port());
            let config_path = data_dir.with_extension("yaml");
            std::fs::write(
                &config_path,
                format!(
                    "server:\n  listen: {address}\n  workers: 1\n  grace-period-ms: 2000\n\
                     store:\n  path: {}\n  segment-size-bytes: {SEGMENT_SIZE_BYTES}\n  \
                     cache-size-bytes: 4194304\n  checkpoint-interval-ms: 500\n\
                     pm:\n  embedded: false\n  addresses: [{pm_address}]\n  \
                     heartbeat-interval-ms: {HEARTBEAT_INTERVAL_MS}\n\
                     metrics:\n  enabled: true\n  addr: {metrics_address}\nlog:\n  level: info\n",
                    data_dir.display()
                ),
            )
            .expect("write the data-node config");
            let log_path = data_dir.with_extension("log");
            let mut process = Process::spawn(
                "data-node",
                &binary,
                &["-c", config_path.to_str().expect("utf-8 path")],
                &log_path,
            );
            if wait_ready(&mut process, &address, START_TIMEOUT) {
                return DataNode {
                    process,
                    address,
                    metrics_address,
                    data_dir: data_dir.to_path_buf(),
                };
            }
            last_log = process.log();
            process.kill();
            if !last_log.contains("in use") {
                break;
            }
        }
        panic!("data-node did not start; its log:\n{last_log}");
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.address)
    }

    /// The value of the gauge `name` on the node's `/metrics` page.
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
    pub fn wal_bytes_used(&self) -> u64 {
        self.metric("es_wal_bytes_used")
            .unwrap_or_else(|| panic!("node {} has no es_wal_bytes_used metric", self.address))
            as u64
    }
}

/// The body of `GET path` over HTTP/1.0, or `None` when the server cannot be reached.
pub fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
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

/// A blocking client on one connection; transport failures panic (use
/// [`Client::try_call`] where the server may die).
pub struct Client {
    connection: Connection,
    pub address: String,
}

impl Client {
    pub fn connect(address: &str) -> Client {
        Client::try_connect(address)
            .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"))
    }

    pub fn try_connect(address: &str) -> Result<Client, ClientError> {
        Ok(Client {
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

    pub fn call<M: Message, R: Message>(&mut self, message: &M, payload: &[u8]) -> Answer<R> {
        self.try_call(message, payload).unwrap_or_else(|error| {
            panic!("{} to {} failed: {error}", M::OPCODE.name(), self.address)
        })
    }

    pub fn ping(&mut self) -> Answer<PingResponse> {
        self.call(&PingRequest {}, b"")
    }

    pub fn describe_cluster(&mut self) -> Vec<wire::msg::ClusterNode> {
        let answer: Answer<DescribeClusterResponse> = self.call(&DescribeClusterRequest {}, &[]);
        answer.expect("DESCRIBE_CLUSTER succeeds").0.nodes
    }

    pub fn create_stream(&mut self, replica_count: u8, ack_count: u8) -> Stream {
        let answer: Answer<CreateStreamResponse> =
            self.call(&create_stream_request(replica_count, ack_count), &[]);
        answer.expect("CREATE_STREAM succeeds").0.stream
    }

    pub fn describe_stream(&mut self, stream: StreamId) -> Answer<DescribeStreamResponse> {
        self.call(&DescribeStreamRequest { stream_id: stream }, &[])
    }

    /// UPDATE_STREAM raising the epoch to `epoch`.
    pub fn raise_epoch(&mut self, stream: StreamId, epoch: u64) -> Answer<UpdateStreamResponse> {
        self.call(&raise_epoch_request(stream, epoch), &[])
    }

    /// CREATE_RANGE as a client sends it to the placement manager (no replicas, R/A 0), or to a
    /// data node (the data node creates its replica with these parameters).
    pub fn create_range(
        &mut self,
        stream: StreamId,
        index: u32,
        epoch: u64,
        start: u64,
    ) -> Answer<CreateRangeResponse> {
        self.call(&create_range_request(stream, index, epoch, start), &[])
    }

    pub fn seal_range(
        &mut self,
        stream: StreamId,
        index: u32,
        epoch: u64,
        end: Option<u64>,
    ) -> Answer<SealRangeResponse> {
        let request = SealRangeRequest {
            fence_only: false,
            stream_id: stream,
            range_index: RangeIndex(index),
            epoch: Epoch(epoch),
            end_offset: end.map(Offset),
        };
        self.call(&request, &[])
    }

    pub fn describe_range(
        &mut self,
        stream: StreamId,
        index: u32,
    ) -> Answer<DescribeRangeResponse> {
        let request = DescribeRangeRequest {
            stream_id: stream,
            range_index: RangeIndex(index),
        };
        self.call(&request, &[])
    }

    pub fn trim_stream(&mut self, stream: StreamId, offset: u64) -> Answer<TrimStreamResponse> {
        self.call(&trim_stream_request(stream, offset), &[])
    }

    pub fn delete_stream(&mut self, stream: StreamId) -> Answer<DeleteStreamResponse> {
        self.call(&DeleteStreamRequest { stream_id: stream }, &[])
    }

    pub fn append(
        &mut self,
        stream: StreamId,
        index: u32,
        epoch: u64,
        batches: &[u8],
    ) -> Answer<AppendResponse> {
        let request = AppendRequest {
            repair: false,
            stream_id: stream,
            range_index: RangeIndex(index),
            epoch: Epoch(epoch),
            confirmed_offset: None,
        };
        self.call(&request, batches)
    }
}

pub fn create_stream_request(replica_count: u8, ack_count: u8) -> CreateStreamRequest {
    CreateStreamRequest {
        replica_count,
        ack_count,
        retention_ms: 0,
        retention_bytes: 0,
    }
}

pub fn raise_epoch_request(stream: StreamId, epoch: u64) -> UpdateStreamRequest {
    UpdateStreamRequest {
        stream_id: stream,
        replica_count: None,
        ack_count: None,
        retention_ms: None,
        retention_bytes: None,
        epoch: Some(Epoch(epoch)),
    }
}

pub fn create_range_request(
    stream: StreamId,
    index: u32,
    epoch: u64,
    start: u64,
) -> CreateRangeRequest {
    CreateRangeRequest {
        exclude: Vec::new(),
        stream_id: stream,
        range_index: RangeIndex(index),
        epoch: Epoch(epoch),
        start_offset: Offset(start),
        replica_count_target: 0,
        ack_count: 0,
        replicas: Vec::new(),
    }
}

pub fn trim_stream_request(stream: StreamId, offset: u64) -> TrimStreamRequest {
    TrimStreamRequest {
        stream_id: stream,
        start_offset: Offset(offset),
    }
}

/// One record batch for `stream`/`index`/`epoch` starting at `base`: `records` records of
/// `record_bytes` bytes each.
pub fn batch(
    stream: StreamId,
    index: u32,
    epoch: u64,
    base: u64,
    records: u32,
    record_bytes: usize,
) -> Bytes {
    let mut builder = BatchBuilder::new(stream, RangeIndex(index), Epoch(epoch), Offset(base));
    let record = vec![(base % 251) as u8; record_bytes];
    for _ in 0..records {
        builder
            .push_record(&record)
            .expect("the record fits a batch");
    }
    builder.finish().expect("the batch builds")
}

/// Node ids of a range's replicas.
pub fn replica_ids(range: &Range) -> Vec<wire::NodeId> {
    range
        .replicas
        .iter()
        .map(|replica| replica.node_id)
        .collect()
}

/// A `pm` and `count` data nodes joined to it, each in a directory of its own under one
/// temporary directory.
pub struct Cluster {
    pub nodes: Vec<DataNode>,
    pub pm: PmProcess,
    pub directory: tempfile::TempDir,
}

impl Cluster {
    /// Starts the placement manager and the nodes, and waits until every node is registered
    /// and alive.
    pub fn start(count: usize) -> Cluster {
        let directory = tempfile::tempdir().expect("create a temporary directory");
        let pm = PmProcess::start(&directory.path().join("pm"));
        let nodes: Vec<DataNode> = (0..count)
            .map(|index| {
                DataNode::start(&directory.path().join(format!("node-{index}")), &pm.address)
            })
            .collect();
        let cluster = Cluster {
            nodes,
            pm,
            directory,
        };
        let mut client = cluster.pm.client();
        wait_for(
            Duration::from_secs(30),
            "every data node registered and alive",
            || {
                let listed = client.describe_cluster();
                if listed.len() == count && listed.iter().all(|node| node.alive) {
                    Ok(())
                } else {
                    Err(format!("{listed:?}"))
                }
            },
        );
        cluster
    }

    /// The placement manager's id for the node at `index`, by its address.
    pub fn node_id(&self, index: usize) -> wire::NodeId {
        let address = &self.nodes[index].address;
        self.pm
            .client()
            .describe_cluster()
            .into_iter()
            .find(|node| &node.address == address)
            .unwrap_or_else(|| panic!("node {address} is not registered; {}", self.describe()))
            .node_id
    }

    /// The index in `nodes` of the node with `id`.
    pub fn index_of(&self, id: wire::NodeId) -> usize {
        let address = self
            .pm
            .client()
            .describe_cluster()
            .into_iter()
            .find(|node| node.node_id == id)
            .unwrap_or_else(|| panic!("node {id} is not registered"))
            .address;
        self.nodes
            .iter()
            .position(|node| node.address == address)
            .unwrap_or_else(|| panic!("node {id} at {address} was not started by this test"))
    }

    /// What DESCRIBE_CLUSTER says, for failure messages.
    pub fn describe(&self) -> String {
        match Client::try_connect(&self.pm.address) {
            Ok(mut client) => format!(
                "{:?}",
                client.try_call::<_, DescribeClusterResponse>(&DescribeClusterRequest {}, &[])
            ),
            Err(error) => format!("the pm cannot be reached: {error}"),
        }
    }
}
