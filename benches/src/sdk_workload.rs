//! Appends through the SDK (`client::Client` and its writers): what an application gets from a
//! replicated stream, end to end, including the writer's replication to R replicas and its
//! acknowledgement after A of them.
//!
//! Each stream has one writer; two threads per stream keep `in_flight` appends outstanding (one
//! submits, the other awaits the futures in order with `client::block_on` and records the
//! latency from the `append` call to the acknowledgement). The SDK's own I/O runs on its thread.
//! `run_failover` kills a replica of the open range again and again and measures the time from
//! each SIGKILL to the first acknowledgement of a batch in the next range.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{AppendAck, AppendFuture, Client, ClientConfig, StreamOptions, Writer};
use hdrhistogram::Histogram;
use serde::Serialize;
use wire::{Offset, StreamId};

use crate::report::{new_histogram, LatencySummary};

/// A run of SDK appends.
#[derive(Debug, Clone)]
pub struct SdkPlan {
    pub pm_addresses: Vec<String>,
    pub replica_count: u8,
    pub ack_count: u8,
    pub streams: u64,
    /// Payload bytes per append (one record).
    pub batch_bytes: usize,
    /// Appends outstanding per stream.
    pub in_flight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub replica_timeout: Duration,
}

/// What a run of SDK appends measured.
#[derive(Debug, Clone, Serialize)]
pub struct SdkReport {
    pub replica_count: u8,
    pub ack_count: u8,
    pub streams: u64,
    pub batch_bytes: usize,
    pub in_flight_per_stream: usize,
    pub measured_seconds: f64,
    pub appends: u64,
    pub payload_bytes: u64,
    pub payload_bytes_per_second: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the `append` call to the acknowledgement.
    pub latency: LatencySummary,
}

/// Counters shared by the stream threads.
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    appends: AtomicU64,
    payload_bytes: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    latency: Mutex<Histogram<u64>>,
}

impl Shared {
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(message);
        }
        // A writer that failed writes no more: stop rather than report a partial load.
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn client_config(pm_addresses: &[String], replica_timeout: Duration) -> ClientConfig {
    ClientConfig {
        pm_addresses: pm_addresses.to_vec(),
        replica_timeout,
        ..ClientConfig::default()
    }
}

/// Creates a stream with R and A and opens its writer.
pub fn open_stream(
    client: &Client,
    replica_count: u8,
    ack_count: u8,
) -> Result<(StreamId, Writer), String> {
    let stream = client::block_on(client.create_stream(StreamOptions {
        replica_count,
        ack_count,
        retention_ms: 0,
        retention_bytes: 0,
    }))
    .map_err(|error| format!("create_stream: {error}"))?;
    let writer = client::block_on(client.open_writer(stream.id))
        .map_err(|error| format!("open_writer {}: {error}", stream.id))?;
    Ok((stream.id, writer))
}

/// One stream's writer kept busy until `shared.stop`: returns the writer when done.
fn drive_stream(writer: Writer, payload: Bytes, in_flight: usize, shared: Arc<Shared>) -> Writer {
    // The channel's bound plus the one being awaited keep about `in_flight` unresolved.
    let (sender, receiver) = mpsc::sync_channel::<(Instant, AppendFuture)>(in_flight.max(2) - 1);
    let collector = {
        let shared = Arc::clone(&shared);
        let payload_len = payload.len() as u64;
        std::thread::spawn(move || {
            for (sent_at, future) in receiver {
                match client::block_on(future) {
                    Ok(_) => {
                        if shared.measuring.load(Ordering::Relaxed) {
                            let micros = (sent_at.elapsed().as_micros() as u64).max(1);
                            shared.appends.fetch_add(1, Ordering::Relaxed);
                            shared
                                .payload_bytes
                                .fetch_add(payload_len, Ordering::Relaxed);
                            if let Ok(mut histogram) = shared.latency.lock() {
                                histogram.saturating_record(micros);
                            }
                        }
                    }
                    Err(error) => shared.error(format!("append: {error}")),
                }
            }
        })
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let future = writer.append(vec![payload.clone()]);
        if sender.send((Instant::now(), future)).is_err() {
            break;
        }
    }
    drop(sender);
    let _ = collector.join();
    writer
}

/// Runs `plan`: creates its streams, warms up, measures, closes the writers. `observe` is called
/// right before and right after the measured interval (to sample the servers).
pub fn run_appends(plan: &SdkPlan, observe: &mut dyn FnMut()) -> Result<SdkReport, String> {
    let client = Client::connect(client_config(&plan.pm_addresses, plan.replica_timeout))
        .map_err(|error| format!("connect to {:?}: {error}", plan.pm_addresses))?;
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        appends: AtomicU64::new(0),
        payload_bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        latency: Mutex::new(new_histogram()),
    });
    let payload = Bytes::from(
        (0..plan.batch_bytes)
            .map(|index| (index % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut threads = Vec::new();
    let mut stream_ids = Vec::new();
    for _ in 0..plan.streams {
        let (stream, writer) = open_stream(&client, plan.replica_count, plan.ack_count)?;
        stream_ids.push(stream);
        let shared = Arc::clone(&shared);
        let payload = payload.clone();
        let in_flight = plan.in_flight;
        threads.push(std::thread::spawn(move || {
            drive_stream(writer, payload, in_flight, shared)
        }));
    }
    std::thread::sleep(plan.warmup);
    observe();
    shared.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < plan.duration && !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let measured = start.elapsed();
    observe();
    shared.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let writer = thread
            .join()
            .map_err(|_| "a stream thread panicked".to_string())?;
        if let Err(error) = client::block_on(writer.close()) {
            shared.error(format!("close: {error}"));
        }
    }
    // Gigabytes per run: give the disk back before the next one.
    for stream in stream_ids {
        if let Err(error) = client::block_on(client.delete(stream)) {
            eprintln!("es-bench: deleting stream {stream} after the run: {error}");
        }
    }
    let appends = shared.appends.load(Ordering::Relaxed);
    let payload_bytes = shared.payload_bytes.load(Ordering::Relaxed);
    let seconds = measured.as_secs_f64();
    let latency = shared
        .latency
        .lock()
        .map(|histogram| LatencySummary::of(&histogram))
        .unwrap_or_default();
    let first_error = shared
        .first_error
        .lock()
        .ok()
        .and_then(|first| first.clone());
    Ok(SdkReport {
        replica_count: plan.replica_count,
        ack_count: plan.ack_count,
        streams: plan.streams,
        batch_bytes: plan.batch_bytes,
        in_flight_per_stream: plan.in_flight,
        measured_seconds: seconds,
        appends,
        payload_bytes,
        payload_bytes_per_second: payload_bytes as f64 / seconds.max(1e-9),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error,
        latency,
    })
}

/// Each append's outcome and when it resolved.
type Outcomes = Arc<Mutex<Vec<(Instant, Result<AppendAck, String>)>>>;

/// Acknowledgements of one writer with the time each resolved, collected on a thread.
pub struct AckLog {
    events: Outcomes,
    stop: Arc<AtomicBool>,
    submitter: Option<std::thread::JoinHandle<Writer>>,
}

impl AckLog {
    /// Keeps up to `in_flight` appends of `payload` outstanding on `writer`, at most one every
    /// `pace` (`Duration::ZERO`: as fast as the window allows).
    pub fn start(writer: Writer, payload: Bytes, in_flight: usize, pace: Duration) -> AckLog {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let submitter = {
            let events = Arc::clone(&events);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (sender, receiver) = mpsc::sync_channel::<AppendFuture>(in_flight.max(2) - 1);
                let collector = {
                    let events = Arc::clone(&events);
                    let stop = Arc::clone(&stop);
                    std::thread::spawn(move || {
                        for future in receiver {
                            let result =
                                client::block_on(future).map_err(|error| error.to_string());
                            let failed = result.is_err();
                            if let Ok(mut events) = events.lock() {
                                events.push((Instant::now(), result));
                            }
                            if failed {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    })
                };
                let mut next_send = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if sender.send(writer.append(vec![payload.clone()])).is_err() {
                        break;
                    }
                    if !pace.is_zero() {
                        next_send += pace;
                        if let Some(wait) = next_send.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                drop(sender);
                let _ = collector.join();
                writer
            })
        };
        AckLog {
            events,
            stop,
            submitter: Some(submitter),
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.events
            .lock()
            .map(|events| events.iter().filter(|(_, result)| result.is_ok()).count())
            .unwrap_or(0)
    }

    pub fn first_error(&self) -> Option<String> {
        self.events.lock().ok().and_then(|events| {
            events
                .iter()
                .find_map(|(_, result)| result.as_ref().err().cloned())
        })
    }

    /// The first acknowledgement after `instant` of a batch at or above `offset`.
    pub fn first_ack_after(&self, instant: Instant, offset: Offset) -> Option<Instant> {
        self.events.lock().ok().and_then(|events| {
            events.iter().find_map(|(at, result)| match result {
                Ok(ack) if *at > instant && ack.base_offset >= offset => Some(*at),
                _ => None,
            })
        })
    }

    /// Waits until `count` appends are acknowledged, or `timeout`.
    pub fn wait_acknowledged(&self, count: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.acknowledged() < count {
            if let Some(error) = self.first_error() {
                return Err(error);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {count} appends acknowledged within {} ms",
                    self.acknowledged(),
                    timeout.as_millis()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Stops and returns the writer.
    pub fn stop(mut self) -> Result<Writer, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.submitter
            .take()
            .expect("running")
            .join()
            .map_err(|_| "the submitter thread panicked".to_string())
    }
}
