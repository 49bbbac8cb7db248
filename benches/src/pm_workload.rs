//! `es-bench pm`: durable placement-manager operations per second against a running `pm`.
//!
//! Every operation measured here changes the placement manager's state, so each answer waits
//! for a data sync of its command log; many clients in flight let one sync carry many commands
//! (group commit). To show how much, the run first measures the raw cost of one lone data sync
//! on the PM's file system (64 bytes written + `fdatasync`, in a loop) and reports operations/s
//! ÷ raw syncs/s: above 1 only because syncs are shared. The baseline is measured again after
//! the load, as the disk of a shared machine drifts.
//!
//! ```text
//!  setup      each client creates its own stream (R/A of the mode); range-pairs raises its epoch
//!  warm-up    the load runs, not measured
//!  measured   closed loop: each client sends its next operation when the previous one is answered
//!             create-stream  CREATE_STREAM R=1/A=1
//!             update-epoch   UPDATE_STREAM epoch + 1 of the client's own stream
//!             mixed          both, --create-percent of them CREATE_STREAM (deterministic mix)
//!             range-pairs    CREATE_RANGE (the PM places it on data nodes) + SEAL_RANGE end = start
//! ```
//!
//! Clients are tasks on the client runtime threads; `--connections` of them share connections
//! (client i uses connection i mod connections), by default one connection per client.

use std::cell::Cell;
use std::fs;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use client::multiplexed::{decode_response, Connection};
use hdrhistogram::Histogram;
use serde::Serialize;
use wire::msg::{
    CreateRangeRequest, CreateRangeResponse, CreateStreamRequest, CreateStreamResponse,
    ErrorResponse, SealRangeRequest, SealRangeResponse, UpdateStreamRequest, UpdateStreamResponse,
};
use wire::{Epoch, Offset, RangeIndex, StreamId};

use crate::hiccup::HiccupProbe;
use crate::metrics::{self, Scrape};
use crate::procstat::{self, ProcessUsage};
use crate::report::{format_us, latency_header, latency_row, new_histogram, LatencySummary};
use crate::workload::Recorder;

/// Durable placement-manager operations per second this machine should reach (create-stream,
/// update-epoch and mixed).
pub const TARGET_OPERATIONS_PER_SECOND: f64 = 20_000.0;
/// Bytes written before each data sync of the raw baseline: about one logged command.
pub const BASELINE_RECORD_BYTES: usize = 64;
/// Requests one connection may carry at once: the PM's default
/// `server.max-in-flight-per-connection`.
pub const MAX_CLIENTS_PER_CONNECTION: usize = 256;
/// How long client setup (streams created, epochs raised) may take before the run gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// What each client does in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PmOperation {
    /// CREATE_STREAM R=1/A=1.
    CreateStream,
    /// UPDATE_STREAM raising the epoch of the client's own stream by one.
    UpdateEpoch,
    /// CREATE_STREAM and UPDATE_STREAM, --create-percent of them CREATE_STREAM.
    Mixed,
    /// CREATE_RANGE placed on data nodes, then SEAL_RANGE at end = start (needs data nodes).
    RangePairs,
}

impl PmOperation {
    pub fn name(self) -> &'static str {
        match self {
            PmOperation::CreateStream => "create-stream",
            PmOperation::UpdateEpoch => "update-epoch",
            PmOperation::Mixed => "mixed",
            PmOperation::RangePairs => "range-pairs",
        }
    }

    /// Whether the 20,000 operations/s target applies (range pairs also wait for data nodes).
    pub fn has_target(self) -> bool {
        self != PmOperation::RangePairs
    }
}

/// `es-bench pm` options.
#[derive(Args, Debug, Clone)]
pub struct PmArgs {
    /// Placement manager address.
    #[arg(long, default_value = "127.0.0.1:12378")]
    pub pm: String,
    /// Concurrent clients, one operation in flight each (closed loop).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub clients: usize,
    /// Connections the clients share (client i uses connection i mod N). Default: one per
    /// client.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Measured run time, after the warm-up.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Load run but not measured, after setup.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    #[arg(long, value_enum, default_value = "create-stream")]
    pub op: PmOperation,
    /// --op mixed: percent of operations that are CREATE_STREAM (the rest UPDATE_STREAM).
    #[arg(long, default_value_t = 50)]
    pub create_percent: u8,
    /// --op range-pairs: R and A of each client's stream.
    #[arg(long, default_value_t = 3)]
    pub range_replica_count: u8,
    #[arg(long, default_value_t = 2)]
    pub range_ack_count: u8,
    /// Measure the raw data-sync baseline (64 B write + fdatasync in a loop) in this directory
    /// first, in the same run: the PM's data directory or one on the same file system.
    #[arg(long)]
    pub baseline_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 2.0)]
    pub baseline_secs: f64,
    /// The PM's metrics endpoint (host:port): its log data syncs and commands over the run.
    #[arg(long)]
    pub metrics: Option<String>,
    /// The PM's pid for its CPU use; default: the newest process named `pm`.
    #[arg(long)]
    pub pm_pid: Option<u32>,
    /// CPUs for the client's runtime threads, one thread each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub client_cpus: Vec<usize>,
    /// Do not pin the client threads.
    #[arg(long)]
    pub no_pin: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A checked run description.
#[derive(Debug, Clone, PartialEq)]
pub struct PmPlan {
    pub address: SocketAddr,
    pub operation: PmOperation,
    pub clients: usize,
    pub connections: usize,
    pub create_percent: u8,
    /// R and A of each client's own stream.
    pub replica_count: u8,
    pub ack_count: u8,
    pub duration: Duration,
    pub warmup: Duration,
}

impl PmArgs {
    /// Checks the options and resolves the address.
    pub fn plan(&self) -> Result<PmPlan, String> {
        let address = self
            .pm
            .to_socket_addrs()
            .map_err(|error| format!("--pm {}: {error}", self.pm))?
            .next()
            .ok_or_else(|| format!("--pm {} resolves to nothing", self.pm))?;
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        let connections = self.connections.unwrap_or(self.clients);
        if connections == 0 || connections > self.clients {
            return Err(format!(
                "--connections {connections}: expected 1..={} (at most one per client)",
                self.clients
            ));
        }
        if self.clients.div_ceil(connections) > MAX_CLIENTS_PER_CONNECTION {
            return Err(format!(
                "{} clients over {connections} connection(s) is more than \
                 {MAX_CLIENTS_PER_CONNECTION} in flight per connection (the PM's default \
                 limit); add connections",
                self.clients
            ));
        }
        if self.create_percent > 100 {
            return Err(format!(
                "--create-percent {}: expected 0..=100",
                self.create_percent
            ));
        }
        let (replica_count, ack_count) = match self.op {
            PmOperation::RangePairs => (self.range_replica_count, self.range_ack_count),
            _ => (1, 1),
        };
        if replica_count == 0 || ack_count == 0 || ack_count > replica_count {
            return Err(format!(
                "--range-replica-count {replica_count} --range-ack-count {ack_count}: expected \
                 1 <= A <= R"
            ));
        }
        let seconds = |name: &str, value: f64, minimum: f64| {
            if value.is_finite() && value >= minimum && value <= 86_400.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(format!(
                    "--{name} {value}: expected {minimum}..=86400 seconds"
                ))
            }
        };
        Ok(PmPlan {
            address,
            operation: self.op,
            clients: self.clients,
            connections,
            create_percent: self.create_percent,
            replica_count,
            ack_count,
            duration: seconds("duration-secs", self.duration_secs, 0.1)?,
            warmup: seconds("warmup-secs", self.warmup_secs, 0.0)?,
        })
    }
}

/// The request one step of a client sends; also the key of its latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    CreateStream,
    UpdateStream,
    CreateRange,
    SealRange,
}

impl RequestKind {
    const ALL: [RequestKind; 4] = [
        RequestKind::CreateStream,
        RequestKind::UpdateStream,
        RequestKind::CreateRange,
        RequestKind::SealRange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RequestKind::CreateStream => "CREATE_STREAM",
            RequestKind::UpdateStream => "UPDATE_STREAM",
            RequestKind::CreateRange => "CREATE_RANGE",
            RequestKind::SealRange => "SEAL_RANGE",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Whether operation `sequence` (0, 1, 2, ... of one client) of a mixed run is a
/// CREATE_STREAM: spread evenly, exactly `percent` of every 100 consecutive operations, the
/// same sequence in every run.
pub fn mixed_is_create(sequence: u64, percent: u8) -> bool {
    let percent = u64::from(percent.min(100));
    // Operation n is a create when the running count of creates, n * p / 100, steps up.
    ((sequence % 100) + 1) * percent / 100 > (sequence % 100) * percent / 100
}

/// The connection client `client` uses.
pub fn connection_of(client: usize, connections: usize) -> usize {
    debug_assert!(connections > 0);
    client % connections
}

/// The client thread that owns connection `connection`.
pub fn thread_of(connection: usize, threads: usize) -> usize {
    debug_assert!(threads > 0);
    connection % threads
}

/// One lone data sync on a file system, measured.
#[derive(Debug, Clone, Serialize)]
pub struct SyncBaseline {
    pub directory: PathBuf,
    pub record_bytes: usize,
    pub seconds: f64,
    pub syncs: u64,
    pub syncs_per_second: f64,
    /// One write + fdatasync.
    pub latency: LatencySummary,
}

/// Writes [`BASELINE_RECORD_BYTES`] bytes at the end of a new file in `directory` and
/// fdatasyncs it, one after the other, for `duration`. Each sync also commits the file's new
/// size, as each group of the PM's log does.
pub fn raw_sync_baseline(directory: &Path, duration: Duration) -> io::Result<SyncBaseline> {
    let file = tempfile::Builder::new()
        .prefix(".es-bench-sync-")
        .tempfile_in(directory)?;
    let record = [0x5Au8; BASELINE_RECORD_BYTES];
    let mut histogram = new_histogram();
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < duration {
        let one = Instant::now();
        file.as_file()
            .write_all_at(&record, syncs * BASELINE_RECORD_BYTES as u64)?;
        file.as_file().sync_data()?;
        histogram.saturating_record((one.elapsed().as_micros() as u64).max(1));
        syncs += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    debug_assert_eq!(
        fs::metadata(file.path())?.len(),
        syncs * BASELINE_RECORD_BYTES as u64
    );
    Ok(SyncBaseline {
        directory: directory.to_path_buf(),
        record_bytes: BASELINE_RECORD_BYTES,
        seconds,
        syncs,
        syncs_per_second: syncs as f64 / seconds.max(1e-9),
        latency: LatencySummary::of(&histogram),
    })
}

/// Latency of one kind of request over the measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RequestLatency {
    pub request: &'static str,
    pub latency: LatencySummary,
}

/// What the PM's own metrics say about the measured run (after - before).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PmSide {
    /// Commands the PM logged.
    pub commands: f64,
    /// Data syncs of its command log.
    pub log_data_syncs: f64,
    pub log_data_syncs_per_second: f64,
    /// Commands per data sync: the PM's group commit, measured at the source.
    pub commands_per_sync: f64,
    /// Every counter and gauge that changed.
    pub changed: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PmReport {
    pub workload: String,
    pub operation: PmOperation,
    pub clients: usize,
    pub connections: usize,
    pub create_percent: Option<u8>,
    pub replica_count: u8,
    pub ack_count: u8,
    pub measured_seconds: f64,
    /// Operations answered without error (range-pairs: pairs).
    pub operations: u64,
    pub operations_per_second: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Per operation (range-pairs: CREATE_RANGE sent to SEAL_RANGE answered).
    pub latency: LatencySummary,
    pub requests: Vec<RequestLatency>,
    pub hiccup: LatencySummary,
    pub baseline: Option<SyncBaseline>,
    /// operations/s ÷ raw syncs/s of the same run (the baseline before the load).
    pub operations_per_raw_sync: Option<f64>,
    /// The same baseline measured again after the load, and the ratio against it.
    pub baseline_after: Option<SyncBaseline>,
    pub operations_per_raw_sync_after: Option<f64>,
    pub target_operations_per_second: Option<f64>,
    pub target_met: Option<bool>,
    pub pm_side: Option<PmSide>,
    pub client: Option<ProcessUsage>,
    pub pm: Option<ProcessUsage>,
}

/// Latency histograms by request kind, shared by the client threads.
struct RequestHistograms {
    histograms: Mutex<Vec<Histogram<u64>>>,
}

impl RequestHistograms {
    fn new() -> RequestHistograms {
        RequestHistograms {
            histograms: Mutex::new(RequestKind::ALL.iter().map(|_| new_histogram()).collect()),
        }
    }

    fn record(&self, kind: RequestKind, latency: Duration) {
        if let Ok(mut histograms) = self.histograms.lock() {
            histograms[kind.slot()].saturating_record((latency.as_micros() as u64).max(1));
        }
    }

    fn summaries(&self) -> Vec<RequestLatency> {
        let Ok(histograms) = self.histograms.lock() else {
            return Vec::new();
        };
        RequestKind::ALL
            .iter()
            .filter(|kind| !histograms[kind.slot()].is_empty())
            .map(|kind| RequestLatency {
                request: kind.name(),
                latency: LatencySummary::of(&histograms[kind.slot()]),
            })
            .collect()
    }
}

/// What every client thread shares.
struct Shared {
    plan: PmPlan,
    recorder: Recorder,
    requests: RequestHistograms,
    /// Clients done with their setup.
    ready: AtomicU64,
}

impl Shared {
    fn measuring(&self) -> bool {
        self.recorder.measuring.load(Ordering::Relaxed)
    }

    fn stopped(&self) -> bool {
        self.recorder.stop.load(Ordering::Relaxed)
    }

    fn record_request(&self, kind: RequestKind, latency: Duration) {
        if self.measuring() {
            self.requests.record(kind, latency);
        }
    }
}

/// Runs the whole benchmark: baseline, setup, warm-up, measurement. Prints progress lines.
pub fn run(args: &PmArgs) -> Result<PmReport, String> {
    let plan = args.plan()?;
    let baseline = measure_baseline(args, "before the load")?;
    let pm_pid = args.pm_pid.or_else(|| procstat::find_process("pm"));
    let cpus: Vec<Option<usize>> = if args.no_pin {
        vec![None; args.client_cpus.len().max(1)]
    } else {
        args.client_cpus.iter().map(|&cpu| Some(cpu)).collect()
    };
    println!(
        "pm {} against {}: {} client(s) over {} connection(s), one operation in flight each, \
         closed loop; streams R={}/A={}; client threads on cpus {:?}",
        plan.operation.name(),
        plan.address,
        plan.clients,
        plan.connections,
        plan.replica_count,
        plan.ack_count,
        cpus
    );
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        recorder: Recorder::new(None),
        requests: RequestHistograms::new(),
        ready: AtomicU64::new(0),
    });
    let probe =
        HiccupProbe::start(cpus.first().copied().flatten()).map_err(|error| error.to_string())?;
    let mut threads = Vec::new();
    for (thread_index, cpu) in cpus.iter().enumerate() {
        let connections: Vec<usize> = (0..plan.connections)
            .filter(|&connection| thread_of(connection, cpus.len()) == thread_index)
            .collect();
        if connections.is_empty() {
            continue;
        }
        let shared = Arc::clone(&shared);
        let handle = runtime::thread::spawn_runtime(
            format!("es-bench-pm-{thread_index}"),
            *cpu,
            runtime::Builder::new(),
            move || run_thread(shared, connections),
        )
        .map_err(|error| format!("client thread: {error}"))?;
        threads.push(handle);
    }

    let setup_deadline = Instant::now() + SETUP_TIMEOUT;
    while shared.ready.load(Ordering::Relaxed) < plan.clients as u64 && !shared.stopped() {
        if Instant::now() > setup_deadline {
            shared
                .recorder
                .error(format!("setup took longer than {SETUP_TIMEOUT:?}"));
            shared.recorder.stop.store(true, Ordering::Relaxed);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(plan.warmup);
    let scrape_before = args.metrics.as_deref().and_then(scrape_or_warn);
    let client_before = procstat::sample(None).ok();
    let pm_before = pm_pid.and_then(|pid| procstat::sample(Some(pid)).ok());
    shared.recorder.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut last_operations = 0;
    let mut last_tick = start;
    while !shared.stopped() && Instant::now() < deadline {
        let wake = (last_tick + Duration::from_secs(1)).min(deadline);
        while Instant::now() < wake && !shared.stopped() {
            std::thread::sleep(
                Duration::from_millis(5).min(wake.saturating_duration_since(Instant::now())),
            );
        }
        let now = Instant::now();
        let operations = shared.recorder.operations.load(Ordering::Relaxed);
        let interval = shared
            .recorder
            .interval
            .lock()
            .map(|mut histogram| {
                let summary = LatencySummary::of(&histogram);
                histogram.reset();
                summary
            })
            .unwrap_or_default();
        println!(
            "[{:>5.1}s] {:>9.0} op/s  p50 {:>9}  p90 {:>9}  p99 {:>9}  max stall {:>9}  errors {}",
            now.duration_since(start).as_secs_f64(),
            (operations - last_operations) as f64
                / now.duration_since(last_tick).as_secs_f64().max(1e-9),
            format_us(interval.p50_us),
            format_us(interval.p90_us),
            format_us(interval.p99_us),
            format_us(probe.take_interval_max_us()),
            shared.recorder.errors.load(Ordering::Relaxed)
        );
        last_operations = operations;
        last_tick = now;
    }
    shared.recorder.measuring.store(false, Ordering::Relaxed);
    let measured = start.elapsed();
    let client_after = procstat::sample(None).ok();
    let pm_after = pm_pid.and_then(|pid| procstat::sample(Some(pid)).ok());
    let scrape_after = args.metrics.as_deref().and_then(scrape_or_warn);
    shared.recorder.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("client runtime: {error}")),
            Err(_) => return Err("a client thread panicked".into()),
        }
    }
    let hiccups = probe.stop();
    // Again after the load: the disk's speed drifts on a shared machine; the two bracket it.
    let baseline_after = measure_baseline(args, "after the load")?;

    let seconds = measured.as_secs_f64();
    let operations = shared.recorder.operations.load(Ordering::Relaxed);
    let operations_per_second = operations as f64 / seconds.max(1e-9);
    let latency = shared
        .recorder
        .total
        .lock()
        .map(|histogram| LatencySummary::of(&histogram))
        .unwrap_or_default();
    let usage = |pid: u32, before, after| {
        Option::zip(before, after).map(|(before, after)| procstat::usage(pid, &before, &after))
    };
    let pm_side = match (&scrape_before, &scrape_after) {
        (Some(before), Some(after)) => Some(pm_side(before, after, seconds)),
        _ => None,
    };
    let has_target = plan.operation.has_target();
    Ok(PmReport {
        workload: format!("pm {}", plan.operation.name()),
        operation: plan.operation,
        clients: plan.clients,
        connections: plan.connections,
        create_percent: (plan.operation == PmOperation::Mixed).then_some(plan.create_percent),
        replica_count: plan.replica_count,
        ack_count: plan.ack_count,
        measured_seconds: seconds,
        operations,
        operations_per_second,
        errors: shared.recorder.errors.load(Ordering::Relaxed),
        first_error: shared
            .recorder
            .first_error
            .lock()
            .ok()
            .and_then(|first| first.clone()),
        latency,
        requests: shared.requests.summaries(),
        hiccup: LatencySummary::of(&hiccups),
        operations_per_raw_sync: baseline
            .as_ref()
            .map(|baseline| operations_per_second / baseline.syncs_per_second.max(1e-9)),
        baseline,
        operations_per_raw_sync_after: baseline_after
            .as_ref()
            .map(|baseline| operations_per_second / baseline.syncs_per_second.max(1e-9)),
        baseline_after,
        target_operations_per_second: has_target.then_some(TARGET_OPERATIONS_PER_SECOND),
        target_met: has_target.then_some(operations_per_second >= TARGET_OPERATIONS_PER_SECOND),
        pm_side,
        client: usage(std::process::id(), client_before, client_after),
        pm: pm_pid.and_then(|pid| usage(pid, pm_before, pm_after)),
    })
}

fn scrape_or_warn(address: &str) -> Option<Scrape> {
    metrics::scrape(address)
        .map_err(|error| {
            eprintln!("es-bench: cannot scrape the PM's metrics at {address}: {error}")
        })
        .ok()
}

fn pm_side(before: &Scrape, after: &Scrape, seconds: f64) -> PmSide {
    let changed = metrics::counter_deltas(before, after);
    let commands = changed.get("es_pm_commands_total").copied().unwrap_or(0.0);
    let log_data_syncs = changed.get("es_pm_log_data_syncs").copied().unwrap_or(0.0);
    PmSide {
        commands,
        log_data_syncs,
        log_data_syncs_per_second: log_data_syncs / seconds.max(1e-9),
        commands_per_sync: commands / log_data_syncs.max(1.0),
        changed,
    }
}

async fn run_thread(shared: Arc<Shared>, connections: Vec<usize>) {
    let mut handles = Vec::new();
    for connection_index in connections {
        let shared = Arc::clone(&shared);
        handles.push(runtime::spawn(async move {
            if let Err(message) = run_connection(&shared, connection_index).await {
                shared.recorder.error(message);
                // A lost connection loses its clients' share of the load: stop rather than
                // report a throughput that silently shrank.
                shared.recorder.stop.store(true, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        handle.await;
    }
}

async fn run_connection(shared: &Arc<Shared>, connection_index: usize) -> Result<(), String> {
    let plan = &shared.plan;
    let clients: Vec<usize> = (0..plan.clients)
        .filter(|&client| connection_of(client, plan.connections) == connection_index)
        .collect();
    let connection = Connection::connect(plan.address, clients.len())
        .await
        .map_err(|error| format!("connecting to the PM at {}: {error}", plan.address))?;
    let connection = Rc::new(connection);
    let mut handles = Vec::new();
    for _ in clients {
        let shared = Arc::clone(shared);
        let connection = Rc::clone(&connection);
        handles.push(runtime::spawn(async move {
            run_client(&shared, &connection).await;
        }));
    }
    for handle in handles {
        handle.await;
    }
    Ok(())
}

/// One client's own stream and where its loop is.
struct Client {
    stream: StreamId,
    epoch: Cell<Epoch>,
    /// Operations sent so far (picks the mixed run's next operation).
    sequence: Cell<u64>,
    /// range-pairs: the next range to create.
    next_range: Cell<RangeIndex>,
    /// range-pairs: a range created whose seal failed, sealed before the next create.
    unsealed: Cell<Option<RangeIndex>>,
}

enum Failure {
    /// The PM refused this request; the run goes on.
    Request(String),
    /// The connection is gone.
    Connection(String),
}

fn refused(request: RequestKind, error: &ErrorResponse) -> Failure {
    Failure::Request(format!(
        "{}: {} detail={}: {}",
        request.name(),
        error.code,
        error.detail,
        error.message
    ))
}

async fn run_client(shared: &Shared, connection: &Connection) {
    let client = match setup_client(shared, connection).await {
        Ok(client) => client,
        Err(Failure::Request(message) | Failure::Connection(message)) => {
            shared.recorder.error(format!("setup: {message}"));
            shared.recorder.stop.store(true, Ordering::Relaxed);
            return;
        }
    };
    shared.ready.fetch_add(1, Ordering::Relaxed);
    while !shared.stopped() {
        let sent = Instant::now();
        let result = match shared.plan.operation {
            PmOperation::CreateStream => create_stream(shared, connection, 1, 1).await.map(drop),
            PmOperation::UpdateEpoch => raise_epoch(shared, connection, &client).await,
            PmOperation::Mixed => {
                if mixed_is_create(client.sequence.get(), shared.plan.create_percent) {
                    create_stream(shared, connection, 1, 1).await.map(drop)
                } else {
                    raise_epoch(shared, connection, &client).await
                }
            }
            PmOperation::RangePairs => range_pair(shared, connection, &client).await,
        };
        client.sequence.set(client.sequence.get() + 1);
        match result {
            Ok(()) => shared.recorder.record(sent.elapsed(), 0),
            Err(Failure::Request(message)) => shared.recorder.error(message),
            Err(Failure::Connection(message)) => {
                shared.recorder.error(message);
                shared.recorder.stop.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The client's own stream; for range-pairs its epoch is raised to 1, as a writer taking over
/// the stream would.
async fn setup_client(shared: &Shared, connection: &Connection) -> Result<Client, Failure> {
    let plan = &shared.plan;
    let stream = create_stream(shared, connection, plan.replica_count, plan.ack_count).await?;
    let client = Client {
        stream: stream.id,
        epoch: Cell::new(stream.epoch),
        sequence: Cell::new(0),
        next_range: Cell::new(RangeIndex(0)),
        unsealed: Cell::new(None),
    };
    if plan.operation == PmOperation::RangePairs {
        raise_epoch(shared, connection, &client).await?;
    }
    Ok(client)
}

async fn create_stream(
    shared: &Shared,
    connection: &Connection,
    replica_count: u8,
    ack_count: u8,
) -> Result<wire::Stream, Failure> {
    let request = CreateStreamRequest {
        replica_count,
        ack_count,
        retention_ms: 0,
        retention_bytes: 0,
    };
    let sent = Instant::now();
    let frame = connection
        .request(&request, &[])
        .await
        .map_err(|error| Failure::Connection(error.to_string()))?;
    shared.record_request(RequestKind::CreateStream, sent.elapsed());
    match decode_response::<CreateStreamResponse>(&frame) {
        Ok(Ok((response, _))) => {
            let stream = response.stream;
            if stream.replica_count != replica_count || stream.ack_count != ack_count {
                return Err(Failure::Request(format!(
                    "CREATE_STREAM R={replica_count}/A={ack_count} answered stream {} with \
                     R={}/A={}",
                    stream.id, stream.replica_count, stream.ack_count
                )));
            }
            Ok(stream)
        }
        Ok(Err(error)) => Err(refused(RequestKind::CreateStream, &error)),
        Err(error) => Err(Failure::Connection(error.to_string())),
    }
}

/// UPDATE_STREAM with the client's epoch + 1; the client keeps the epoch the PM answers.
async fn raise_epoch(
    shared: &Shared,
    connection: &Connection,
    client: &Client,
) -> Result<(), Failure> {
    let wanted = Epoch(client.epoch.get().0 + 1);
    let request = UpdateStreamRequest {
        stream_id: client.stream,
        replica_count: None,
        ack_count: None,
        retention_ms: None,
        retention_bytes: None,
        epoch: Some(wanted),
    };
    let sent = Instant::now();
    let frame = connection
        .request(&request, &[])
        .await
        .map_err(|error| Failure::Connection(error.to_string()))?;
    shared.record_request(RequestKind::UpdateStream, sent.elapsed());
    match decode_response::<UpdateStreamResponse>(&frame) {
        Ok(Ok((response, _))) => {
            client.epoch.set(response.stream.epoch);
            if response.stream.epoch != wanted {
                return Err(Failure::Request(format!(
                    "UPDATE_STREAM of stream {} to epoch {wanted} answered epoch {}",
                    client.stream, response.stream.epoch
                )));
            }
            Ok(())
        }
        Ok(Err(error)) => {
            if error.code == wire::ErrorCode::StaleEpoch {
                // Someone else raised it: continue from the PM's epoch.
                client.epoch.set(Epoch(error.detail));
            }
            Err(refused(RequestKind::UpdateStream, &error))
        }
        Err(error) => Err(Failure::Connection(error.to_string())),
    }
}

/// CREATE_RANGE of the client's next range (the PM places it and creates its replicas on data
/// nodes), then SEAL_RANGE at its start: nothing written, the next range starts at 0 again.
async fn range_pair(
    shared: &Shared,
    connection: &Connection,
    client: &Client,
) -> Result<(), Failure> {
    if let Some(index) = client.unsealed.get() {
        seal_range(shared, connection, client, index).await?;
        client.unsealed.set(None);
    }
    let index = client.next_range.get();
    let request = CreateRangeRequest {
        exclude: Vec::new(),
        stream_id: client.stream,
        range_index: index,
        epoch: client.epoch.get(),
        start_offset: Offset(0),
        // The PM fills in the stream's R and A and chooses the nodes.
        replica_count_target: 0,
        ack_count: 0,
        replicas: Vec::new(),
    };
    let sent = Instant::now();
    let frame = connection
        .request(&request, &[])
        .await
        .map_err(|error| Failure::Connection(error.to_string()))?;
    shared.record_request(RequestKind::CreateRange, sent.elapsed());
    match decode_response::<CreateRangeResponse>(&frame) {
        Ok(Ok((response, _))) => {
            let range = response.range;
            if range.index != index || range.replicas.len() < usize::from(shared.plan.ack_count) {
                return Err(Failure::Request(format!(
                    "CREATE_RANGE {}/{index} answered range {} on {} node(s)",
                    client.stream,
                    range.index,
                    range.replicas.len()
                )));
            }
        }
        Ok(Err(error)) => return Err(refused(RequestKind::CreateRange, &error)),
        Err(error) => return Err(Failure::Connection(error.to_string())),
    }
    client.next_range.set(RangeIndex(index.0 + 1));
    client.unsealed.set(Some(index));
    seal_range(shared, connection, client, index).await?;
    client.unsealed.set(None);
    Ok(())
}

async fn seal_range(
    shared: &Shared,
    connection: &Connection,
    client: &Client,
    index: RangeIndex,
) -> Result<(), Failure> {
    let request = SealRangeRequest {
        fence_only: false,
        stream_id: client.stream,
        range_index: index,
        epoch: client.epoch.get(),
        end_offset: Some(Offset(0)),
    };
    let sent = Instant::now();
    let frame = connection
        .request(&request, &[])
        .await
        .map_err(|error| Failure::Connection(error.to_string()))?;
    shared.record_request(RequestKind::SealRange, sent.elapsed());
    match decode_response::<SealRangeResponse>(&frame) {
        Ok(Ok((response, _))) if response.end_offset == Some(Offset(0)) => Ok(()),
        Ok(Ok((response, _))) => Err(Failure::Request(format!(
            "SEAL_RANGE {}/{index} at 0 answered end {:?}",
            client.stream, response.end_offset
        ))),
        Ok(Err(error)) => Err(refused(RequestKind::SealRange, &error)),
        Err(error) => Err(Failure::Connection(error.to_string())),
    }
}

/// The raw sync baseline in `--baseline-dir`, if asked for.
fn measure_baseline(args: &PmArgs, when: &str) -> Result<Option<SyncBaseline>, String> {
    let Some(directory) = &args.baseline_dir else {
        return Ok(None);
    };
    println!(
        "raw data-sync baseline {when} in {} ({:.1} s) ...",
        directory.display(),
        args.baseline_secs
    );
    let baseline = raw_sync_baseline(
        directory,
        Duration::from_secs_f64(args.baseline_secs.max(0.1)),
    )
    .map_err(|error| format!("raw sync baseline in {}: {error}", directory.display()))?;
    print_baseline(&baseline);
    Ok(Some(baseline))
}

fn print_baseline(baseline: &SyncBaseline) {
    println!(
        "raw {} B write + fdatasync in {}: {} syncs in {:.2} s = {:.0} syncs/s",
        baseline.record_bytes,
        baseline.directory.display(),
        baseline.syncs,
        baseline.seconds,
        baseline.syncs_per_second
    );
    println!("{}", latency_header());
    println!("{}", latency_row("raw write+sync", &baseline.latency));
}

/// The report as a table for people.
pub fn print_report(report: &PmReport) {
    let unit = if report.operation == PmOperation::RangePairs {
        "pairs"
    } else {
        "op"
    };
    println!();
    println!(
        "{}: {:.0} {unit}/s over {:.1} s ({} {unit}, {} errors); {} clients over {} connection(s)",
        report.workload,
        report.operations_per_second,
        report.measured_seconds,
        report.operations,
        report.errors,
        report.clients,
        report.connections
    );
    if let Some(error) = &report.first_error {
        println!("first error: {error}");
    }
    if let (Some(baseline), Some(ratio)) = (&report.baseline, report.operations_per_raw_sync) {
        println!(
            "raw data syncs (same run): {:.0}/s, p50 {}; {unit}/s / raw syncs/s = {ratio:.2}",
            baseline.syncs_per_second,
            format_us(baseline.latency.p50_us)
        );
    }
    if let (Some(baseline), Some(ratio)) =
        (&report.baseline_after, report.operations_per_raw_sync_after)
    {
        println!(
            "raw data syncs after the load: {:.0}/s, p50 {}; {unit}/s / raw syncs/s = {ratio:.2}",
            baseline.syncs_per_second,
            format_us(baseline.latency.p50_us)
        );
    }
    if let (Some(target), Some(met)) = (report.target_operations_per_second, report.target_met) {
        println!(
            "target >= {target:.0} op/s: {}",
            if met { "met" } else { "NOT met" }
        );
    }
    if let Some(side) = &report.pm_side {
        println!(
            "PM (its metrics): {:.0} commands logged, {:.0} log data syncs ({:.0}/s), {:.1} \
             commands per sync",
            side.commands,
            side.log_data_syncs,
            side.log_data_syncs_per_second,
            side.commands_per_sync
        );
    }
    println!("{}", latency_header());
    let label = if report.operation == PmOperation::RangePairs {
        "pair (create+seal)"
    } else {
        "operation"
    };
    println!("{}", latency_row(label, &report.latency));
    for request in &report.requests {
        println!("{}", latency_row(request.request, &request.latency));
    }
    println!("{}", latency_row("hiccup (machine stall)", &report.hiccup));
    if let Some(baseline) = &report.baseline {
        println!("{}", latency_row("raw write+sync", &baseline.latency));
    }
    if let Some(baseline) = &report.baseline_after {
        println!("{}", latency_row("raw write+sync after", &baseline.latency));
    }
    for (name, usage) in [("es-bench", &report.client), ("pm", &report.pm)] {
        match usage {
            Some(usage) => println!(
                "{name:<10} pid {:>7}  CPU {:>6.1} % of one core  RSS {:>8.1} MB",
                usage.pid,
                usage.cpu_percent,
                usage.rss_bytes_end as f64 / 1e6
            ),
            None => println!("{name:<10} (not found: pass --pm-pid)"),
        }
    }
}

#[cfg(test)]
mod tests;
