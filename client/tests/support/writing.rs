//! The SDK side of the replication tests: a minimal executor that is not the project's runtime
//! (thread park/unpark), an append pump that keeps a fixed number of appends in flight and
//! timestamps every acknowledgement, a tailing reader, and read-back to the end.
//!
//! Every wait here is bounded: a replication bug shows up as a test failure with what was seen,
//! not as a hung test.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{AppendAck, Client, ClientConfig, ReadMode, SdkError, Writer};
use wire::{Offset, StreamId};

use super::cluster::{call_records, SessionLog};

/// How long any single SDK operation may take in these tests before they call it hung.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it is ready or `deadline` passes (then `None`, and the
/// future is left as it is, not dropped).
pub fn poll_until<F: Future + ?Sized>(
    future: &mut Pin<Box<F>>,
    deadline: Instant,
) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// Runs `future` to completion on this thread, panicking with `what` after `timeout`.
pub fn block_on_timeout<F: Future>(what: &str, timeout: Duration, future: F) -> F::Output {
    let mut future = Box::pin(future);
    poll_until(&mut future, Instant::now() + timeout)
        .unwrap_or_else(|| panic!("{what}: no answer within {} ms", timeout.as_millis()))
}

/// [`block_on_timeout`] with [`OPERATION_TIMEOUT`].
pub fn block_on<F: Future>(what: &str, future: F) -> F::Output {
    block_on_timeout(what, OPERATION_TIMEOUT, future)
}

/// The client configuration of these tests: `replica_timeout` short enough that a SIGSTOPped
/// replica is given up within a second (well above this machine's ~170 ms stalls), and retries
/// long enough to outlast a PM restart.
pub fn test_config(pm_address: &str) -> ClientConfig {
    ClientConfig {
        pm_addresses: vec![pm_address.to_string()],
        replica_timeout: Duration::from_millis(1_000),
        request_timeout: Duration::from_secs(5),
        retry_for: Duration::from_secs(40),
        ..ClientConfig::default()
    }
}

pub fn connect(pm_address: &str) -> Client {
    Client::connect(test_config(pm_address)).expect("Client::connect")
}

/// One append call's outcome as the application saw it.
#[derive(Clone, Debug)]
pub struct AckEvent {
    pub call: u64,
    pub result: Result<AppendAck, String>,
    /// When the future resolved, on the collecting thread.
    pub at: Instant,
}

/// How a pump writes.
#[derive(Clone, Debug)]
pub struct PumpOptions {
    pub session: u32,
    /// Appends whose futures have not resolved yet, at most.
    pub in_flight: usize,
    pub records_per_call: u32,
    pub record_bytes: u32,
    /// Stop submitting after this many calls.
    pub max_calls: Option<u64>,
    /// Pause between submissions (a slow writer); none: as fast as the window allows.
    pub pace: Option<Duration>,
}

impl PumpOptions {
    pub fn new(session: u32) -> PumpOptions {
        PumpOptions {
            session,
            in_flight: 32,
            records_per_call: 3,
            record_bytes: 256,
            max_calls: None,
            pace: None,
        }
    }
}

#[derive(Default)]
struct PumpState {
    submitted: u64,
    in_flight: usize,
    events: Vec<AckEvent>,
    acknowledged: u64,
    /// The first failure the application saw.
    failure: Option<(u64, SdkError)>,
    collector_done: bool,
}

struct PumpShared {
    state: Mutex<PumpState>,
    changed: Condvar,
    stop: AtomicBool,
}

/// A writer kept busy by two threads: one submits appends (in call order, while fewer than
/// `in_flight` are unresolved), one awaits their futures in order and records each outcome
/// with its time. Submission stops at the first failure.
pub struct Pump {
    shared: Arc<PumpShared>,
    submitter: Option<JoinHandle<Writer>>,
    collector: Option<JoinHandle<()>>,
    pub options: PumpOptions,
}

impl Pump {
    pub fn start(writer: Writer, options: PumpOptions) -> Pump {
        let shared = Arc::new(PumpShared {
            state: Mutex::new(PumpState::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (sender, receiver) = mpsc::channel::<(u64, client::AppendFuture)>();
        let submitter = {
            let shared = Arc::clone(&shared);
            let options = options.clone();
            std::thread::Builder::new()
                .name(format!("pump-submit-{}", options.session))
                .spawn(move || {
                    let writer = writer;
                    let mut call = 0u64;
                    loop {
                        {
                            let mut state = shared.state.lock().expect("pump state");
                            while state.in_flight >= options.in_flight
                                && !shared.stop.load(Ordering::SeqCst)
                                && state.failure.is_none()
                            {
                                state = shared
                                    .changed
                                    .wait_timeout(state, Duration::from_millis(100))
                                    .expect("pump state")
                                    .0;
                            }
                            if shared.stop.load(Ordering::SeqCst)
                                || state.failure.is_some()
                                || options.max_calls.is_some_and(|max| call >= max)
                            {
                                break;
                            }
                            state.in_flight += 1;
                            state.submitted += 1;
                        }
                        let records = call_records(
                            options.session,
                            call,
                            options.records_per_call,
                            options.record_bytes,
                        );
                        let future = writer.append(records);
                        if sender.send((call, future)).is_err() {
                            break;
                        }
                        call += 1;
                        if let Some(pace) = options.pace {
                            std::thread::sleep(pace);
                        }
                    }
                    drop(sender);
                    writer
                })
                .expect("spawn the submitter")
        };
        let collector = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("pump-collect-{}", options.session))
                .spawn(move || {
                    for (call, future) in receiver {
                        let mut future = Box::pin(future);
                        let result = poll_until(&mut future, Instant::now() + OPERATION_TIMEOUT)
                            .unwrap_or_else(|| {
                                Err(SdkError::Timeout {
                                    operation: format!("the test awaiting append call {call}"),
                                    waited: OPERATION_TIMEOUT,
                                })
                            });
                        let at = Instant::now();
                        let mut state = shared.state.lock().expect("pump state");
                        state.in_flight -= 1;
                        match &result {
                            Ok(_) => state.acknowledged += 1,
                            Err(error) => {
                                if state.failure.is_none() {
                                    state.failure = Some((call, error.clone()));
                                }
                            }
                        }
                        state.events.push(AckEvent {
                            call,
                            result: result.map_err(|error| format!("{error:?}")),
                            at,
                        });
                        shared.changed.notify_all();
                    }
                    let mut state = shared.state.lock().expect("pump state");
                    state.collector_done = true;
                    shared.changed.notify_all();
                })
                .expect("spawn the collector")
        };
        Pump {
            shared,
            submitter: Some(submitter),
            collector: Some(collector),
            options,
        }
    }

    /// Calls acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.shared.state.lock().expect("pump state").acknowledged
    }

    /// Calls submitted so far.
    pub fn submitted(&self) -> u64 {
        self.shared.state.lock().expect("pump state").submitted
    }

    /// Appends unresolved right now.
    pub fn in_flight(&self) -> usize {
        self.shared.state.lock().expect("pump state").in_flight
    }

    /// The first failure, if any: (call, error).
    pub fn failure(&self) -> Option<(u64, SdkError)> {
        self.shared
            .state
            .lock()
            .expect("pump state")
            .failure
            .clone()
    }

    pub fn events(&self) -> Vec<AckEvent> {
        self.shared.state.lock().expect("pump state").events.clone()
    }

    /// Waits until `count` calls are acknowledged in total; panics after `timeout` or at a
    /// failure, with what was seen.
    pub fn wait_acknowledged(&self, count: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().expect("pump state");
        while state.acknowledged < count {
            if let Some((call, error)) = &state.failure {
                panic!(
                    "session {}: call {call} failed with {error:?} before {count} acknowledgements ({} so far)",
                    self.options.session, state.acknowledged
                );
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "session {}: {} of {count} calls acknowledged after {} ms ({} in flight)",
                    self.options.session,
                    state.acknowledged,
                    timeout.as_millis(),
                    state.in_flight
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .expect("pump state")
                .0;
        }
    }

    /// Waits until `in_flight` appends are unresolved at once (the pipeline is full).
    pub fn wait_in_flight(&self, in_flight: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().expect("pump state");
        while state.in_flight < in_flight {
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "the pump never had {in_flight} appends in flight ({} now)",
                    state.in_flight
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(5)))
                .expect("pump state")
                .0;
        }
    }

    /// The first successful acknowledgement resolved after `instant` whose base offset is at or
    /// above `offset`: (time, ack).
    pub fn first_ack_after(
        &self,
        instant: Instant,
        offset: Offset,
    ) -> Option<(Instant, AppendAck)> {
        self.events()
            .into_iter()
            .find_map(|event| match event.result {
                Ok(ack) if event.at > instant && ack.base_offset >= offset => Some((event.at, ack)),
                _ => None,
            })
    }

    /// Waits for [`Pump::first_ack_after`].
    pub fn wait_ack_after(
        &self,
        instant: Instant,
        offset: Offset,
        timeout: Duration,
    ) -> (Instant, AppendAck) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.first_ack_after(instant, offset) {
                return found;
            }
            if let Some((call, error)) = self.failure() {
                panic!(
                    "session {}: call {call} failed with {error:?} while waiting for an ack at or above {offset}",
                    self.options.session
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "session {}: no acknowledgement at or above offset {offset} within {} ms of the event ({} acknowledged in all)",
                    self.options.session,
                    timeout.as_millis(),
                    self.acknowledged()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops submitting, waits for every submitted future to resolve, and gives back the writer
    /// and every outcome.
    pub fn stop(mut self) -> (Writer, Vec<AckEvent>) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        let writer = self
            .submitter
            .take()
            .expect("running")
            .join()
            .expect("the submitter thread panicked");
        self.collector
            .take()
            .expect("running")
            .join()
            .expect("the collector thread panicked");
        let events = self.events();
        (writer, events)
    }

    /// The session's acknowledged calls, for [`super::cluster::verify_stream`].
    pub fn session_log(&self) -> SessionLog {
        session_log(self.options.session, &self.events())
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }
}

/// The acknowledged calls among `events` of `session`.
pub fn session_log(session: u32, events: &[AckEvent]) -> SessionLog {
    let mut log = SessionLog::new(session);
    for event in events {
        if let Ok(ack) = &event.result {
            log.acknowledge(event.call, ack.base_offset, ack.next_offset);
        }
    }
    log
}

/// Every record of `stream` from `from` to its end, read through the SDK (`ReadMode::ToEnd`).
pub fn read_to_end(
    client: &Client,
    stream: StreamId,
    from: Offset,
) -> Result<Vec<(Offset, Bytes)>, SdkError> {
    let mut reader = block_on(
        "open_reader",
        client.open_reader(stream, from, ReadMode::ToEnd),
    )?;
    let mut records = Vec::new();
    while let Some(batch) = block_on("reader.next", reader.next())? {
        for (position, record) in batch.records.into_iter().enumerate() {
            records.push((Offset(batch.base_offset.0 + position as u64), record));
        }
    }
    Ok(records)
}

/// A reader tailing a stream (`ReadMode::Follow`) on a thread of its own, recording every record
/// with the time it arrived.
pub struct Tail {
    seen: Arc<Mutex<Vec<(Offset, Bytes, Instant)>>>,
    error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Tail {
    pub fn start(client: Client, stream: StreamId, from: Offset) -> Tail {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (seen, error, stop) = (Arc::clone(&seen), Arc::clone(&error), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("tail".into())
                .spawn(move || {
                    let opened = block_on(
                        "open_reader (follow)",
                        client.open_reader(stream, from, ReadMode::Follow),
                    );
                    let mut reader = match opened {
                        Ok(reader) => reader,
                        Err(failure) => {
                            *error.lock().expect("tail") =
                                Some(format!("open_reader: {failure:?}"));
                            return;
                        }
                    };
                    while !stop.load(Ordering::SeqCst) {
                        let mut next = Box::pin(reader.next());
                        let result = loop {
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            if let Some(result) =
                                poll_until(&mut next, Instant::now() + Duration::from_millis(100))
                            {
                                break result;
                            }
                        };
                        match result {
                            Ok(Some(batch)) => {
                                let at = Instant::now();
                                let mut seen = seen.lock().expect("tail");
                                for (position, record) in batch.records.into_iter().enumerate() {
                                    seen.push((
                                        Offset(batch.base_offset.0 + position as u64),
                                        record,
                                        at,
                                    ));
                                }
                            }
                            Ok(None) => {
                                *error.lock().expect("tail") =
                                    Some("a Follow reader reached an end".into());
                                return;
                            }
                            Err(failure) => {
                                *error.lock().expect("tail") =
                                    Some(format!("reader.next: {failure:?}"));
                                return;
                            }
                        }
                    }
                })
                .expect("spawn the tail reader")
        };
        Tail {
            seen,
            error,
            stop,
            handle: Some(handle),
        }
    }

    pub fn seen_count(&self) -> usize {
        self.seen.lock().expect("tail").len()
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("tail").clone()
    }

    /// Waits until the reader has seen `count` records; panics after `timeout` or at an error.
    pub fn wait_seen(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.seen_count() < count {
            if let Some(error) = self.error() {
                panic!(
                    "the tailing reader failed after {} records: {error}",
                    self.seen_count()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the tailing reader saw {} of {count} records within {} ms",
                self.seen_count(),
                timeout.as_millis()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the reader and returns what it saw.
    pub fn stop(mut self) -> Vec<(Offset, Bytes, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.join().expect("the tail thread panicked");
        }
        self.seen.lock().expect("tail").clone()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// p50 and max of `values` in ms (sorted copy).
pub fn p50_max(values: &[Duration]) -> (f64, f64) {
    let mut sorted: Vec<Duration> = values.to_vec();
    sorted.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    match sorted.len() {
        0 => (0.0, 0.0),
        len => (ms(sorted[(len - 1) / 2]), ms(sorted[len - 1])),
    }
}

/// The end-of-test check of a stream, three ways: every sealed range has at least its A
/// replicas holding everything below its end, with identical bytes (raw checker, each replica
/// read on its own); the stream read back through the SDK (`ReadMode::ToEnd`) holds every
/// acknowledged call of `sessions` bit-exact, in order, once; and the raw read of the same
/// stream gives exactly the same records.
pub fn verify_everything(
    pm_address: &str,
    client: &Client,
    stream: StreamId,
    sessions: &[SessionLog],
) -> super::cluster::StreamSummary {
    let sealed = super::cluster::check_sealed_ranges(pm_address, stream)
        .unwrap_or_else(|error| panic!("stream {stream}: {error}"));
    for check in &sealed {
        eprintln!(
            "range {}/{} [{}, {}) R={} A={}{}: held by {:?}",
            stream,
            check.range.index,
            check.range.start_offset,
            check.range.end_offset.expect("sealed"),
            check.range.replica_count_target,
            check.range.ack_count,
            if check.range.under_replicated {
                " under-replicated"
            } else {
                ""
            },
            check.holders
        );
    }
    let through_sdk = read_to_end(client, stream, Offset(0))
        .unwrap_or_else(|error| panic!("reading stream {stream} back through the SDK: {error:?}"));
    let summary = super::cluster::verify_stream(&through_sdk, sessions, Offset(0))
        .unwrap_or_else(|error| panic!("stream {stream} read through the SDK: {error}"));
    let raw = super::cluster::raw_stream_records(pm_address, stream, Offset(0))
        .unwrap_or_else(|error| panic!("reading stream {stream} raw: {error}"));
    super::cluster::verify_stream(&raw, sessions, Offset(0))
        .unwrap_or_else(|error| panic!("stream {stream} read raw from the replicas: {error}"));
    assert_eq!(
        raw.len(),
        through_sdk.len(),
        "the SDK and the raw read disagree on the length of stream {stream}"
    );
    assert!(
        raw == through_sdk,
        "the SDK and the raw read disagree on the records of stream {stream}"
    );
    eprintln!(
        "stream {stream}: {} records verified; sessions (calls present, acknowledged, first offset, end): {:?}",
        summary.records, summary.sessions
    );
    summary
}

/// Creates a stream with R replicas and A acks, no retention.
pub fn create_stream(client: &Client, replica_count: u8, ack_count: u8) -> StreamId {
    block_on(
        "create_stream",
        client.create_stream(client::StreamOptions {
            replica_count,
            ack_count,
            retention_ms: 0,
            retention_bytes: 0,
        }),
    )
    .expect("create_stream")
    .id
}
