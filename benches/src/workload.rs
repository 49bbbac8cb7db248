//! The load es-bench puts on a data node, run on runtime threads.
//!
//! Each client thread runs its own runtime with its share of the connections; each connection
//! carries `in_flight` request loops (closed loop: a loop sends its next request when the
//! previous one is answered) or, with a target rate, loops that send on a schedule and measure
//! latency from the intended send time, so a stalled server cannot hide its stall by slowing
//! the client down (no coordinated omission). Streams are assigned to connections so that the
//! appends of one range always travel on one connection, in offset order.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::multiplexed::{decode_response, Connection};
use hdrhistogram::Histogram;
use wire::msg::{
    AppendRequest, AppendResponse, CreateRangeRequest, CreateRangeResponse, FetchRequest,
    FetchResponse, PingRequest, PingResponse,
};
use wire::{BatchBuilder, BatchIter, Epoch, ErrorCode, Offset, RangeIndex, RangeKey, StreamId};

use crate::report::new_histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ping,
    Append,
    /// Read a preloaded range set from the start, over and over.
    FetchCatchUp,
    /// Long-poll at the tail while writers append; latency is append-to-delivery.
    FetchTail,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub address: SocketAddr,
    pub connections: usize,
    pub in_flight: usize,
    /// Payload bytes per PING or per batch.
    pub payload_bytes: usize,
    pub streams: u64,
    /// The first stream's id; the others follow it.
    pub stream_base: StreamId,
    /// Requests per second over all connections (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// Batches appended to each stream before a catch-up fetch run.
    pub preload_batches: u64,
    pub fetch_max_bytes: u32,
    pub fetch_wait_ms: u32,
}

/// Counters and histograms shared by every client thread and the progress printer.
pub struct Recorder {
    /// False during warm-up: requests run but are not counted.
    pub measuring: AtomicBool,
    pub stop: AtomicBool,
    /// Requests left when the run is bounded by a count.
    pub remaining: AtomicU64,
    pub operations: AtomicU64,
    pub payload_bytes: AtomicU64,
    pub errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    /// End-to-end latency in microseconds since the start of the measurement.
    pub total: Mutex<Histogram<u64>>,
    /// Since the last progress line.
    pub interval: Mutex<Histogram<u64>>,
    /// Time origin for timestamps carried inside payloads (tail fetch latency).
    pub origin: Instant,
    /// Connections done with their setup (ranges created, data preloaded).
    pub ready: AtomicU64,
    /// Stamp each appended payload with its send time (tail reads measure delivery with it).
    pub stamp_payloads: AtomicBool,
}

impl Recorder {
    pub fn new(count: Option<u64>) -> Recorder {
        Recorder {
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            remaining: AtomicU64::new(count.unwrap_or(u64::MAX)),
            operations: AtomicU64::new(0),
            payload_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            total: Mutex::new(new_histogram()),
            interval: Mutex::new(new_histogram()),
            origin: Instant::now(),
            ready: AtomicU64::new(0),
            stamp_payloads: AtomicBool::new(false),
        }
    }

    /// Counts one answered request, if measuring.
    pub fn record(&self, latency: Duration, payload_bytes: usize) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        let micros = (latency.as_micros() as u64).max(1);
        self.operations.fetch_add(1, Ordering::Relaxed);
        self.payload_bytes
            .fetch_add(payload_bytes as u64, Ordering::Relaxed);
        if let Ok(mut histogram) = self.total.lock() {
            histogram.saturating_record(micros);
        }
        if let Ok(mut histogram) = self.interval.lock() {
            histogram.saturating_record(micros);
        }
    }

    /// Counts one failed request; the first failure's message is kept.
    pub fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(message);
        }
    }

    /// Takes a ticket to send one more request; false once the run is over.
    pub fn take_ticket(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        self.remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    fn nanos_since_origin(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// Each stream of a run has one range, this one.
const RANGE_INDEX: RangeIndex = RangeIndex(0);
/// Every write of a run is by the first writer of its range.
const EPOCH: Epoch = Epoch(0);

/// One stream written by this connection: its id and next offset.
struct StreamCursor {
    stream_id: StreamId,
    next_offset: Cell<Offset>,
    /// Set after an append failed: the offsets of this stream can no longer be trusted.
    broken: Cell<bool>,
}

impl StreamCursor {
    fn range(&self) -> RangeKey {
        RangeKey::new(self.stream_id, RANGE_INDEX)
    }
}

/// Streams this connection owns (every `connections`-th stream).
fn streams_of(plan: &Plan, connection_index: usize) -> Vec<StreamCursor> {
    (0..plan.streams)
        .filter(|stream| (*stream as usize) % plan.connections == connection_index)
        .map(|stream| StreamCursor {
            stream_id: StreamId(plan.stream_base.0 + stream),
            next_offset: Cell::new(Offset(0)),
            broken: Cell::new(false),
        })
        .collect()
}

/// Runs the connections `connection_indexes` of the plan on the current runtime until the
/// recorder says stop. Returns when every loop has finished.
pub async fn run_thread(plan: Plan, connection_indexes: Vec<usize>, recorder: Arc<Recorder>) {
    if plan.kind == Kind::FetchTail {
        recorder.stamp_payloads.store(true, Ordering::Relaxed);
    }
    let mut handles = Vec::new();
    for connection_index in connection_indexes {
        let plan = plan.clone();
        let recorder = Arc::clone(&recorder);
        handles.push(runtime::spawn(async move {
            if let Err(message) = run_connection(&plan, connection_index, &recorder).await {
                recorder.error(message);
                // Without its connection this share of the load is gone: stop the run rather
                // than report a throughput that silently lost a connection.
                recorder.stop.store(true, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        handle.await;
    }
}

/// Whether the run should send no more: stop flag, or the open-loop schedule is past.
fn over(recorder: &Recorder) -> bool {
    recorder.stop.load(Ordering::Relaxed)
}

async fn run_connection(
    plan: &Plan,
    connection_index: usize,
    recorder: &Arc<Recorder>,
) -> Result<(), String> {
    // One extra slot for the tail writer of fetch-tail.
    let connection = Connection::connect(plan.address, plan.in_flight + 1)
        .await
        .map_err(|error| error.to_string())?;
    let connection = Rc::new(connection);
    let streams = Rc::new(streams_of(plan, connection_index));
    match plan.kind {
        Kind::Append | Kind::FetchCatchUp | Kind::FetchTail => {
            create_ranges(&connection, &streams).await?;
        }
        Kind::Ping => {}
    }
    if plan.kind == Kind::FetchCatchUp {
        preload(plan, &connection, &streams, recorder).await?;
    }
    recorder.ready.fetch_add(1, Ordering::Relaxed);
    let payload = Rc::new(vec![0xA5u8; plan.payload_bytes]);
    // Per-connection share of the rate: one request every `period`, spread over the loops.
    let period = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate.max(1e-3)));
    let schedule_start = Instant::now();
    let schedule_slot = Rc::new(Cell::new(0u64));
    let next_stream = Rc::new(Cell::new(0usize));
    let mut loops = Vec::new();
    for loop_index in 0..plan.in_flight {
        let connection = Rc::clone(&connection);
        let streams = Rc::clone(&streams);
        let payload = Rc::clone(&payload);
        let recorder = Arc::clone(recorder);
        let plan = plan.clone();
        let schedule_slot = Rc::clone(&schedule_slot);
        let next_stream = Rc::clone(&next_stream);
        loops.push(runtime::spawn(async move {
            let mut read_positions: Vec<Offset> = vec![Offset(0); streams.len()];
            loop {
                if over(&recorder) {
                    return;
                }
                // Open loop: wait for this request's slot in the schedule and measure from it.
                let intended = match period {
                    Some(period) => {
                        let slot = schedule_slot.get();
                        schedule_slot.set(slot + 1);
                        let intended = schedule_start + period.mul_f64(slot as f64);
                        if intended > Instant::now() {
                            runtime::time::sleep_until(intended).await;
                        }
                        intended
                    }
                    None => Instant::now(),
                };
                if !recorder.take_ticket() {
                    recorder.stop.store(true, Ordering::Relaxed);
                    return;
                }
                let result = match plan.kind {
                    Kind::Ping => ping_once(&connection, &payload).await,
                    Kind::Append => {
                        append_once(&connection, &streams, &next_stream, &payload, &recorder).await
                    }
                    Kind::FetchCatchUp => {
                        fetch_catch_up_once(
                            &plan,
                            &connection,
                            &streams,
                            &next_stream,
                            &mut read_positions,
                        )
                        .await
                    }
                    Kind::FetchTail => {
                        fetch_tail_once(
                            &plan,
                            &connection,
                            &streams,
                            &next_stream,
                            loop_index,
                            &mut read_positions,
                            &payload,
                            &recorder,
                        )
                        .await
                    }
                };
                match result {
                    Ok(Measured::Bytes(bytes)) => recorder.record(intended.elapsed(), bytes),
                    Ok(Measured::Delivered { bytes, latency }) => recorder.record(latency, bytes),
                    Ok(Measured::Nothing) => {}
                    Err(Failure::Request(message)) => recorder.error(message),
                    Err(Failure::Connection(message)) => {
                        recorder.error(message);
                        recorder.stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    for handle in loops {
        handle.await;
    }
    Ok(())
}

enum Measured {
    /// Latency is from the (intended) send time; this many payload bytes moved.
    Bytes(usize),
    /// Tail fetch: latency from the append's send time (carried in the payload) to delivery.
    Delivered {
        bytes: usize,
        latency: Duration,
    },
    Nothing,
}

enum Failure {
    /// The server refused this request; the run goes on.
    Request(String),
    /// The connection is gone.
    Connection(String),
}

fn server_error(operation: &str, error: &wire::msg::ErrorResponse) -> Failure {
    Failure::Request(format!(
        "{operation}: {} detail={}: {}",
        error.code, error.detail, error.message
    ))
}

async fn ping_once(connection: &Connection, payload: &[u8]) -> Result<Measured, Failure> {
    let frame = connection
        .request(&PingRequest {}, payload)
        .await
        .map_err(|error| Failure::Connection(error.to_string()))?;
    match decode_response::<PingResponse>(&frame) {
        Ok(Ok(_)) => Ok(Measured::Bytes(payload.len())),
        Ok(Err(error)) => Err(server_error("ping", &error)),
        Err(error) => Err(Failure::Connection(error.to_string())),
    }
}

async fn create_ranges(connection: &Connection, streams: &[StreamCursor]) -> Result<(), String> {
    for stream in streams {
        let request = CreateRangeRequest {
            exclude: Vec::new(),
            stream_id: stream.stream_id,
            range_index: RANGE_INDEX,
            epoch: EPOCH,
            start_offset: Offset(0),
            // Unknown R and A: the benchmark writes to one node directly.
            replica_count_target: 0,
            ack_count: 0,
            replicas: Vec::new(),
        };
        let frame = connection
            .request(&request, &[])
            .await
            .map_err(|error| error.to_string())?;
        match decode_response::<CreateRangeResponse>(&frame) {
            // CREATE_RANGE is idempotent: a range left by an earlier run with the same
            // parameters is returned as it is, with its data; appends from 0 would then fail.
            Ok(Ok((response, _)))
                if response
                    .range
                    .next_offset
                    .is_some_and(|next| next > Offset(0)) =>
            {
                return Err(format!(
                    "range {} already exists on the node with data; pick another --stream-base",
                    stream.range()
                ))
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) if error.code == ErrorCode::RangeAlreadyExists => {
                return Err(format!(
                    "range {} already exists on the node; pick another --stream-base",
                    stream.range()
                ))
            }
            Ok(Err(error)) => {
                return Err(format!(
                    "create-range {}: {} {}",
                    stream.range(),
                    error.code,
                    error.message
                ))
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(())
}

/// Builds one batch for the stream's next offset. With `stamp`, the first 8 payload bytes carry
/// the send time (nanoseconds since the recorder's origin) for tail-latency measurement.
fn next_batch(
    stream: &StreamCursor,
    payload: &[u8],
    stamp: bool,
    recorder: &Recorder,
) -> Result<(Offset, Bytes), Failure> {
    let base = stream.next_offset.get();
    let end = base + 1;
    stream.next_offset.set(end);
    let stamped;
    let payload = if stamp && payload.len() >= 8 {
        let mut copy = payload.to_vec();
        copy[..8].copy_from_slice(&recorder.nanos_since_origin().to_le_bytes());
        stamped = copy;
        &stamped[..]
    } else {
        payload
    };
    let batch = BatchBuilder::new(stream.stream_id, RANGE_INDEX, EPOCH, base)
        .finish_with_payload(1, payload)
        .map_err(|error| Failure::Request(error.to_string()))?;
    Ok((end, batch))
}

async fn append_to(
    connection: &Connection,
    stream: &StreamCursor,
    payload: &[u8],
    recorder: &Recorder,
) -> Result<Measured, Failure> {
    let stamp = recorder.stamp_payloads.load(Ordering::Relaxed);
    let (end, batch) = next_batch(stream, payload, stamp, recorder)?;
    let request = AppendRequest {
        repair: false,
        stream_id: stream.stream_id,
        range_index: RANGE_INDEX,
        epoch: EPOCH,
        // A single replica written directly: what this append makes durable is confirmed.
        confirmed_offset: Some(end),
    };
    let frame = connection
        .request_bytes(&request, batch)
        .await
        .map_err(|error| Failure::Connection(error.to_string()))?;
    match decode_response::<AppendResponse>(&frame) {
        Ok(Ok(_)) => Ok(Measured::Bytes(payload.len())),
        Ok(Err(error)) => {
            stream.broken.set(true);
            Err(server_error("append", &error))
        }
        Err(error) => Err(Failure::Connection(error.to_string())),
    }
}

async fn append_once(
    connection: &Connection,
    streams: &[StreamCursor],
    next_stream: &Cell<usize>,
    payload: &[u8],
    recorder: &Recorder,
) -> Result<Measured, Failure> {
    // Round-robin over this connection's streams, skipping broken ones.
    for _ in 0..streams.len() {
        let index = next_stream.get() % streams.len();
        next_stream.set(index + 1);
        let stream = &streams[index];
        if !stream.broken.get() {
            return append_to(connection, stream, payload, recorder).await;
        }
    }
    Err(Failure::Connection(
        "every stream of this connection failed an append".into(),
    ))
}

async fn preload(
    plan: &Plan,
    connection: &Connection,
    streams: &[StreamCursor],
    recorder: &Recorder,
) -> Result<(), String> {
    let payload = vec![0x5Au8; plan.payload_bytes];
    for stream in streams {
        for _ in 0..plan.preload_batches {
            match append_to(connection, stream, &payload, recorder).await {
                Ok(_) => {}
                Err(Failure::Request(message) | Failure::Connection(message)) => {
                    return Err(format!("preload: {message}"))
                }
            }
        }
    }
    Ok(())
}

/// Catch-up read: each loop walks its own streams from offset 0 to their end, then starts over.
async fn fetch_catch_up_once(
    plan: &Plan,
    connection: &Connection,
    streams: &[StreamCursor],
    next_stream: &Cell<usize>,
    positions: &mut [Offset],
) -> Result<Measured, Failure> {
    if streams.is_empty() {
        return Err(Failure::Connection("no stream for this connection".into()));
    }
    let index = next_stream.get() % streams.len();
    next_stream.set(index + 1);
    let stream = &streams[index];
    if positions[index] >= stream.next_offset.get() {
        positions[index] = Offset(0);
    }
    let request = FetchRequest {
        read_durable: false,
        expect_sealed: false,
        stream_id: stream.stream_id,
        range_index: RANGE_INDEX,
        max_bytes: plan.fetch_max_bytes,
        start_offset: positions[index],
        max_wait_ms: 0,
    };
    let frame = connection
        .request(&request, &[])
        .await
        .map_err(|error| Failure::Connection(error.to_string()))?;
    match decode_response::<FetchResponse>(&frame) {
        Ok(Ok((_, payload))) => {
            let mut bytes = 0;
            for batch in BatchIter::new(payload) {
                let batch =
                    batch.map_err(|error| Failure::Request(format!("fetched batch: {error}")))?;
                bytes += batch.header().payload_length as usize;
                positions[index] = batch.header().next_offset();
            }
            Ok(Measured::Bytes(bytes))
        }
        Ok(Err(error)) => Err(server_error("fetch", &error)),
        Err(error) => Err(Failure::Connection(error.to_string())),
    }
}

/// Tail: loop 0 of each connection appends (closed loop, round-robin over the streams); every
/// other loop long-polls its own share of the streams at their tail. Latency is from the
/// append's send (stamped in the payload) to the fetch's delivery.
#[allow(clippy::too_many_arguments)]
async fn fetch_tail_once(
    plan: &Plan,
    connection: &Connection,
    streams: &[StreamCursor],
    next_stream: &Cell<usize>,
    loop_index: usize,
    positions: &mut [Offset],
    payload: &[u8],
    recorder: &Recorder,
) -> Result<Measured, Failure> {
    if loop_index == 0 {
        return match append_once(connection, streams, next_stream, payload, recorder).await? {
            Measured::Bytes(_) => Ok(Measured::Nothing),
            other => Ok(other),
        };
    }
    let readers = plan.in_flight - 1;
    let mine: Vec<usize> = (0..streams.len())
        .filter(|index| index % readers == loop_index - 1)
        .collect();
    if mine.is_empty() {
        // More readers than streams: this loop has nothing to follow.
        runtime::time::sleep(Duration::from_millis(10)).await;
        return Ok(Measured::Nothing);
    }
    // Follow the stream whose reader is furthest behind the writer.
    let index = *mine
        .iter()
        .max_by_key(|&&index| {
            streams[index]
                .next_offset
                .get()
                .saturating_distance_from(positions[index])
        })
        .unwrap_or(&mine[0]);
    let stream = &streams[index];
    let start_offset = positions[index];
    let request = FetchRequest {
        read_durable: false,
        expect_sealed: false,
        stream_id: stream.stream_id,
        range_index: RANGE_INDEX,
        max_bytes: plan.fetch_max_bytes,
        start_offset,
        max_wait_ms: plan.fetch_wait_ms,
    };
    let frame = connection
        .request(&request, &[])
        .await
        .map_err(|error| Failure::Connection(error.to_string()))?;
    let now = recorder.nanos_since_origin();
    match decode_response::<FetchResponse>(&frame) {
        Ok(Ok((_, payload))) => {
            let mut bytes = 0;
            let mut oldest_sent = None;
            for batch in BatchIter::new(payload) {
                let batch =
                    batch.map_err(|error| Failure::Request(format!("fetched batch: {error}")))?;
                let header = batch.header();
                bytes += header.payload_length as usize;
                positions[index] = positions[index].max(header.next_offset());
                let body = batch.payload();
                if let Some(stamp) = body.get(..8) {
                    let sent = u64::from_le_bytes(stamp.try_into().unwrap_or([0; 8]));
                    oldest_sent = Some(oldest_sent.map_or(sent, |oldest: u64| oldest.min(sent)));
                }
            }
            match oldest_sent {
                Some(sent) => Ok(Measured::Delivered {
                    bytes,
                    latency: Duration::from_nanos(now.saturating_sub(sent)),
                }),
                None => Ok(Measured::Nothing),
            }
        }
        Ok(Err(error)) => Err(server_error("fetch", &error)),
        Err(error) => Err(Failure::Connection(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A PING server on a plain thread: answers every request it can decode, until the client
    /// closes.
    fn ping_server() -> (SocketAddr, std::thread::JoinHandle<u64>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut decoder = wire::Decoder::default();
            let mut received = bytes::BytesMut::new();
            let mut chunk = [0u8; 16 * 1024];
            let mut answered = 0;
            loop {
                let read = match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return answered,
                    Ok(read) => read,
                };
                received.extend_from_slice(&chunk[..read]);
                let mut out = Vec::new();
                while let Ok(Some(frame)) = decoder.decode(&mut received) {
                    wire::encode_response(
                        &mut out,
                        frame.request_id,
                        &PingResponse {},
                        &frame.payload,
                    )
                    .unwrap();
                    answered += 1;
                }
                if stream.write_all(&out).is_err() {
                    return answered;
                }
            }
        });
        (address, thread)
    }

    #[test]
    fn a_counted_ping_run_records_every_request() {
        let (address, server) = ping_server();
        let plan = Plan {
            kind: Kind::Ping,
            address,
            connections: 1,
            in_flight: 4,
            payload_bytes: 16,
            streams: 0,
            stream_base: StreamId(0),
            rate: None,
            preload_batches: 0,
            fetch_max_bytes: 1 << 20,
            fetch_wait_ms: 0,
        };
        let recorder = Arc::new(Recorder::new(Some(200)));
        recorder.measuring.store(true, Ordering::Relaxed);
        let mut runtime = runtime::Runtime::new().unwrap();
        runtime.block_on(run_thread(plan, vec![0], Arc::clone(&recorder)));
        drop(runtime);
        assert_eq!(recorder.errors.load(Ordering::Relaxed), 0);
        assert_eq!(recorder.operations.load(Ordering::Relaxed), 200);
        assert_eq!(recorder.payload_bytes.load(Ordering::Relaxed), 200 * 16);
        assert_eq!(recorder.total.lock().unwrap().len(), 200);
        assert_eq!(server.join().unwrap(), 200);
    }

    #[test]
    fn open_loop_latency_counts_from_the_intended_send_time() {
        let (address, server) = ping_server();
        // 50 requests at 500/s take about 100 ms; nothing is sent early.
        let plan = Plan {
            kind: Kind::Ping,
            address,
            connections: 1,
            in_flight: 2,
            payload_bytes: 0,
            streams: 0,
            stream_base: StreamId(0),
            rate: Some(500.0),
            preload_batches: 0,
            fetch_max_bytes: 1 << 20,
            fetch_wait_ms: 0,
        };
        let recorder = Arc::new(Recorder::new(Some(50)));
        recorder.measuring.store(true, Ordering::Relaxed);
        let start = Instant::now();
        let mut runtime = runtime::Runtime::new().unwrap();
        runtime.block_on(run_thread(plan, vec![0], Arc::clone(&recorder)));
        drop(runtime);
        assert!(
            start.elapsed() >= Duration::from_millis(90),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(recorder.operations.load(Ordering::Relaxed), 50);
        server.join().unwrap();
    }
}
