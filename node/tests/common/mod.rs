//! Test harness: starts the real `data-node` binary on a free loopback port with a temporary
//! data directory, and talks to it with a small blocking client built on `wire`.
//!
//! Every process started here is killed when its [`Node`] guard drops, even when a test fails.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use wire::msg::{
    AppendRequest, AppendResponse, CreateRangeRequest, CreateRangeResponse, DescribeRangeRequest,
    DescribeRangeResponse, ErrorResponse, FetchRequest, FetchResponse, Goaway, Message,
    PingRequest, Response, SealRangeRequest, SealRangeResponse,
};
use wire::{BatchBuilder, BatchIter, Decoder, Epoch, Frame, Offset, Opcode, RangeIndex, StreamId};

/// A port nobody listens on right now (bound then released; the node may still lose a race for
/// it, which [`Node::start`] handles by retrying).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// The directory where a test arms the node's injected faults (`node::fault`): a file named
/// after a fault arms it. Next to the data directory.
pub fn fault_dir(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("faults")
}

/// Arms (`true`) or disarms the fault `name` of the node on `data_dir`.
pub fn set_fault(data_dir: &Path, name: &str, armed: bool) {
    let directory = fault_dir(data_dir);
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join(name);
    if armed {
        std::fs::write(&path, b"armed").unwrap();
    } else {
        let _ = std::fs::remove_file(&path);
    }
}

/// A running `data-node` process. Killed on drop.
pub struct Node {
    child: Option<Child>,
    pub address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

/// Options for [`Node::start_with`].
#[derive(Clone)]
pub struct NodeOptions {
    pub workers: usize,
    pub max_in_flight: usize,
    pub idle_timeout_ms: u64,
    pub grace_period_ms: u64,
    pub max_connections: usize,
    /// YAML appended to the generated configuration (whole sections, e.g. `catalog:`).
    pub extra_yaml: String,
    /// More `server:` keys, one `key: value` a line, for the tests of other bounds.
    pub server_extra: Vec<(&'static str, String)>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            workers: 2,
            max_in_flight: 256,
            idle_timeout_ms: 60_000,
            grace_period_ms: 5_000,
            max_connections: 1024,
            extra_yaml: String::new(),
            server_extra: Vec::new(),
        }
    }
}

impl Node {
    /// Starts a node on `data_dir` with default test options.
    pub fn start(data_dir: &Path) -> Node {
        Node::start_with(data_dir, &NodeOptions::default())
    }

    pub fn start_with(data_dir: &Path, options: &NodeOptions) -> Node {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let metrics_port = free_port();
            let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let metrics_address: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
            let config_path = data_dir.with_extension("yaml");
            let log_path = data_dir.with_extension("log");
            let server_extra: String = options
                .server_extra
                .iter()
                .map(|(key, value)| format!("  {key}: {value}\n"))
                .collect();
            std::fs::write(
                &config_path,
                format!(
                    "server:\n  listen: {address}\n  workers: {}\n  max-in-flight-per-connection: {}\n  \
                     idle-timeout-ms: {}\n  grace-period-ms: {}\n  max-connections: {}\n{server_extra}\
                     store:\n  path: {}\n  segment-size-bytes: 8388608\n  cache-size-bytes: 8388608\n\
                     pm:\n  embedded: false\n  addresses: []\n\
                     metrics:\n  addr: {metrics_address}\nlog:\n  level: info\n{}",
                    options.workers,
                    options.max_in_flight,
                    options.idle_timeout_ms,
                    options.grace_period_ms,
                    options.max_connections,
                    data_dir.display(),
                    options.extra_yaml
                ),
            )
            .unwrap();
            let log = std::fs::File::create(&log_path).unwrap();
            // ES_DATA_NODE_BIN runs another build (an older one, for a before/after measurement).
            let binary = std::env::var("ES_DATA_NODE_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_data-node").to_string());
            let child = Command::new(binary)
                .env("ES_NODE_FAULT_DIR", fault_dir(data_dir))
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start data-node");
            let mut node = Node {
                child: Some(child),
                address,
                metrics_address,
                data_dir: data_dir.to_path_buf(),
                log_path,
            };
            if node.wait_ready(Duration::from_secs(20)) {
                return node;
            }
            last_log = node.log();
            node.kill();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("data-node did not start; its log:\n{last_log}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if let Ok(mut client) = Client::connect(self.address) {
                if client.ping(b"ready").is_ok() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.address).expect("connect to data-node")
    }

    /// Resident memory of the process, from /proc/<pid>/status.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .expect("a VmRSS line");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|value| value.parse().ok())
            .expect("VmRSS in kB");
        kib * 1024
    }

    /// The value of an unlabelled metric (or a labelled one, `name{label="x"}`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line[name.len()..].trim().parse().ok())
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we started; no memory involved.
        let result = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(result, 0, "kill({signal}) failed");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Fetches `/metrics` with a plain HTTP/1.0 request.
    pub fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics_address).expect("connect to metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a call returned: the typed response and its payload, or the error header.
pub type CallResult<T> = Result<(T, Bytes), ErrorResponse>;

/// A blocking client on one connection. Responses that arrive for other request ids while it
/// waits are kept, so tests can pipeline.
pub struct Client {
    stream: TcpStream,
    decoder: Decoder,
    received: BytesMut,
    next_request_id: u64,
    pending: HashMap<u64, Frame>,
    pub goaway: Option<Goaway>,
}

impl Client {
    pub fn connect(address: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            stream,
            decoder: Decoder::default(),
            received: BytesMut::with_capacity(64 * 1024),
            next_request_id: 1,
            pending: HashMap::new(),
            goaway: None,
        })
    }

    pub fn raw_stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends a request and returns its id.
    pub fn send<M: Message>(&mut self, message: &M, payload: &[u8]) -> std::io::Result<u64> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let mut buf = BytesMut::new();
        wire::encode_request(&mut buf, request_id, message, payload).expect("encode request");
        self.stream.write_all(&buf)?;
        Ok(request_id)
    }

    /// Reads the next frame from the socket.
    pub fn read_frame(&mut self) -> std::io::Result<Frame> {
        loop {
            match self.decoder.decode(&mut self.received) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) => return Err(std::io::Error::other(error.to_string())),
            }
            let mut chunk = [0u8; 64 * 1024];
            let count = match self.stream.read(&mut chunk) {
                Ok(count) => count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if count == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.received.extend_from_slice(&chunk[..count]);
        }
    }

    /// Waits for the response to `request_id`, keeping others and noting a GOAWAY.
    pub fn wait_for(&mut self, request_id: u64) -> std::io::Result<Frame> {
        if let Some(frame) = self.pending.remove(&request_id) {
            return Ok(frame);
        }
        loop {
            let frame = self.read_frame()?;
            if frame.opcode == Opcode::Goaway {
                self.goaway = Some(frame.decode_message::<Goaway>().expect("GOAWAY decodes"));
                continue;
            }
            if frame.request_id == request_id {
                return Ok(frame);
            }
            self.pending.insert(frame.request_id, frame);
        }
    }

    pub fn call<M: Message, R: Message>(
        &mut self,
        message: &M,
        payload: &[u8],
    ) -> std::io::Result<CallResult<R>> {
        let request_id = self.send(message, payload)?;
        let frame = self.wait_for(request_id)?;
        Ok(decode_response(&frame))
    }

    pub fn ping(&mut self, payload: &[u8]) -> std::io::Result<Bytes> {
        let result: CallResult<wire::msg::PingResponse> = self.call(&PingRequest {}, payload)?;
        result
            .map(|(_, payload)| payload)
            .map_err(|error| std::io::Error::other(error.to_string()))
    }

    pub fn create_range(
        &mut self,
        stream: u64,
        index: u32,
        epoch: u64,
        start: u64,
    ) -> CallResult<CreateRangeResponse> {
        self.create_range_with(stream, index, epoch, start, 0, 0)
    }

    /// CREATE_RANGE carrying R and A, as the placement manager sends it.
    pub fn create_range_with(
        &mut self,
        stream: u64,
        index: u32,
        epoch: u64,
        start: u64,
        replica_count_target: u8,
        ack_count: u8,
    ) -> CallResult<CreateRangeResponse> {
        let request = CreateRangeRequest {
            exclude: Vec::new(),
            stream_id: StreamId(stream),
            range_index: RangeIndex(index),
            epoch: Epoch(epoch),
            start_offset: Offset(start),
            replica_count_target,
            ack_count,
            replicas: Vec::new(),
        };
        self.call(&request, &[]).expect("CREATE_RANGE round trip")
    }

    pub fn append(
        &mut self,
        stream: u64,
        index: u32,
        epoch: u64,
        batches: &[u8],
        confirmed: Option<u64>,
    ) -> CallResult<AppendResponse> {
        let request = append_request(stream, index, epoch, confirmed);
        self.call(&request, batches).expect("APPEND round trip")
    }

    pub fn fetch(
        &mut self,
        stream: u64,
        index: u32,
        start: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> CallResult<FetchResponse> {
        let request = fetch_request(stream, index, start, max_bytes, max_wait_ms);
        self.call(&request, &[]).expect("FETCH round trip")
    }

    pub fn seal(
        &mut self,
        stream: u64,
        index: u32,
        epoch: u64,
        end: Option<u64>,
    ) -> CallResult<SealRangeResponse> {
        let request = SealRangeRequest {
            fence_only: false,
            stream_id: StreamId(stream),
            range_index: RangeIndex(index),
            epoch: Epoch(epoch),
            end_offset: end.map(Offset),
        };
        self.call(&request, &[]).expect("SEAL_RANGE round trip")
    }

    pub fn list_ranges(
        &mut self,
        stream: Option<u64>,
    ) -> CallResult<wire::msg::ListRangesResponse> {
        let request = wire::msg::ListRangesRequest {
            stream_id: stream.map(StreamId),
        };
        self.call(&request, &[]).expect("LIST_RANGES round trip")
    }

    pub fn trim_range(
        &mut self,
        stream: u64,
        index: u32,
        offset: u64,
    ) -> CallResult<wire::msg::TrimRangeResponse> {
        let request = wire::msg::TrimRangeRequest {
            stream_id: StreamId(stream),
            range_index: RangeIndex(index),
            offset: Offset(offset),
        };
        self.call(&request, &[]).expect("TRIM_RANGE round trip")
    }

    pub fn delete_range(
        &mut self,
        stream: u64,
        index: u32,
    ) -> CallResult<wire::msg::DeleteRangeResponse> {
        let request = wire::msg::DeleteRangeRequest {
            stream_id: StreamId(stream),
            range_index: RangeIndex(index),
        };
        self.call(&request, &[]).expect("DELETE_RANGE round trip")
    }

    pub fn describe(&mut self, stream: u64, index: u32) -> CallResult<DescribeRangeResponse> {
        let request = DescribeRangeRequest {
            stream_id: StreamId(stream),
            range_index: RangeIndex(index),
        };
        self.call(&request, &[]).expect("DESCRIBE_RANGE round trip")
    }
}

pub fn append_request(
    stream: u64,
    index: u32,
    epoch: u64,
    confirmed: Option<u64>,
) -> AppendRequest {
    AppendRequest {
        repair: false,
        stream_id: StreamId(stream),
        range_index: RangeIndex(index),
        epoch: Epoch(epoch),
        confirmed_offset: confirmed.map(Offset),
    }
}

pub fn fetch_request(
    stream: u64,
    index: u32,
    start: u64,
    max_bytes: u32,
    max_wait_ms: u32,
) -> FetchRequest {
    FetchRequest {
        read_durable: false,
        expect_sealed: false,
        stream_id: StreamId(stream),
        range_index: RangeIndex(index),
        max_bytes,
        start_offset: Offset(start),
        max_wait_ms,
    }
}

/// Decodes a response frame as `R`, or its error header.
pub fn decode_response<R: Message>(frame: &Frame) -> CallResult<R> {
    if frame.is_error() {
        return Err(frame.error_response().expect("error header decodes"));
    }
    let response = frame
        .decode_message::<R>()
        .expect("response header decodes");
    Ok((response, frame.payload.clone()))
}

/// Whether a decoded response is an error with `code`.
pub fn is_error<T>(result: &CallResult<T>, code: wire::ErrorCode) -> bool {
    matches!(result, Err(error) if error.code == code)
}

/// One batch of `records` records of `record_bytes` bytes each, with content derived from the
/// stream and offset so a read-back is checked bit for bit.
pub fn make_batch(
    stream: u64,
    index: u32,
    epoch: u64,
    base: u64,
    records: u32,
    record_bytes: usize,
) -> Bytes {
    let mut builder = BatchBuilder::new(
        StreamId(stream),
        RangeIndex(index),
        Epoch(epoch),
        Offset(base),
    );
    for record in 0..records {
        let offset = base + u64::from(record);
        let mut bytes = vec![0u8; record_bytes];
        for (position, byte) in bytes.iter_mut().enumerate() {
            *byte = (stream.wrapping_mul(31) ^ offset.wrapping_mul(131) ^ position as u64) as u8;
        }
        builder.push_record(&bytes).expect("record fits");
    }
    builder.finish().expect("batch builds")
}

/// The batches of a FETCH payload: (base offset, record count, whole batch bytes). Panics on a
/// corrupt batch: the CRC must survive the round trip.
pub fn split_batches(payload: &Bytes) -> Vec<(u64, u32, Bytes)> {
    BatchIter::new(payload.clone())
        .map(|batch| {
            let batch = batch.expect("fetched batch is intact");
            let header = batch.header();
            (
                header.base_offset.0,
                header.record_count,
                batch.as_bytes().clone(),
            )
        })
        .collect()
}

/// Response variant check used by tests that decode untyped frames.
pub fn response_of(frame: &Frame) -> Response {
    Response::decode(frame).expect("response decodes")
}
