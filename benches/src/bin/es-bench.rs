//! `es-bench`: load generator for ElasticStream data nodes.
//!
//! Workloads: `ping`, `append`, `fetch` (catch-up or tail) against a running data node, and
//! `raw-disk`, the baseline a durable append is compared with: the same O_DIRECT writes and one
//! fdatasync per group, without any server. Reports end-to-end latency (HDR histograms, p50 and
//! p90 first), throughput, a hiccup probe measuring the machine's own stalls, the node's
//! per-stage latency from its Prometheus metrics, CPU and RSS of both processes.
//!
//! `pm` drives a placement manager instead: durable operations per second next to the cost of
//! one lone data sync measured in the same run (`benches::pm_workload`).
//!
//! `append --pm ADDR --replica R --ack A` writes through the SDK instead of straight to one data
//! node (`benches::sdk_workload`), and `replication` starts its own placement managers and data
//! nodes to compare replicated appends with an unreplicated node in one run and to measure the
//! failover gap (`benches::replication`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::hiccup::HiccupProbe;
use benches::metrics::{self, Scrape, StageLatency};
use benches::pm_workload::{self, PmArgs};
use benches::procstat::{self, ProcessSample, ProcessUsage};
use benches::raw_disk::{self, RawDiskOptions};
use benches::replication;
use benches::report::{format_rate, format_us, latency_header, latency_row, LatencySummary};
use benches::sdk_workload::{self, SdkPlan};
use benches::workload::{self, Kind, Plan, Recorder};
use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use wire::StreamId;

#[derive(Parser)]
#[command(
    name = "es-bench",
    version,
    about = "Load generator for ElasticStream data nodes and the placement manager"
)]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// PING round trips.
    Ping {
        #[command(flatten)]
        common: Common,
        /// Bytes echoed per PING.
        #[arg(long, default_value_t = 0)]
        payload_bytes: usize,
    },
    /// Durable appends of one batch per request.
    Append {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        streams: StreamArgs,
        /// Measure the raw disk baseline (same write size, one fdatasync per group of
        /// --baseline-queue-depth writes) in this directory first, in the same run.
        #[arg(long)]
        baseline_dir: Option<PathBuf>,
        /// Writes per fdatasync in the raw disk baseline.
        #[arg(long, default_value_t = 16)]
        baseline_queue_depth: usize,
        /// Also measure the baseline with segment pre-writing alongside (one byte of a fresh
        /// segment written through per byte appended, segments of this size), as a WAL that
        /// never recycles segments does in steady state.
        #[arg(long)]
        baseline_prewrite_segment_bytes: Option<u64>,
        /// Write through the SDK to new streams of the cluster of this placement manager
        /// (comma-separated addresses) instead of straight to the data node at --addr;
        /// --in-flight appends per stream, one writer per stream.
        #[arg(long, value_delimiter = ',')]
        pm: Option<Vec<String>>,
        /// With --pm: replicas per range (R) of the streams created.
        #[arg(long, default_value_t = 3)]
        replica: u8,
        /// With --pm: replicas that acknowledge a batch (A) of the streams created.
        #[arg(long, default_value_t = 2)]
        ack: u8,
        /// With --pm: the SDK's replica timeout.
        #[arg(long, default_value_t = 1000)]
        replica_timeout_ms: u64,
    },
    /// Replication in one run: starts a placement manager with 3 data nodes and a lone data node
    /// with its own, appends through the SDK with R=3/A=2 and with R=1/A=1 (alternating rounds),
    /// then SIGKILLs a replica of the open range --kills times and measures each failover gap.
    Replication {
        /// Directory for the processes' data and logs (on the disk to measure).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Directory of the `pm` and `data-node` binaries; default: es-bench's own.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        #[arg(long, short = 's', default_value_t = 1)]
        streams: u64,
        #[arg(long, short = 'b', default_value_t = 64 * 1024)]
        batch_bytes: usize,
        /// Appends in flight per stream.
        #[arg(long, short = 'i', default_value_t = 32)]
        in_flight: usize,
        #[arg(long, default_value_t = 2.0)]
        warmup_secs: f64,
        #[arg(long, short = 'd', default_value_t = 10.0)]
        duration_secs: f64,
        /// Rounds of (single node, replicated), alternating.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// SIGKILLs of a replica for the failover gap (0: skip).
        #[arg(long, default_value_t = 10)]
        kills: usize,
        #[arg(long, default_value_t = 64 << 20)]
        segment_size_bytes: u64,
        #[arg(long, default_value_t = 1000)]
        replica_timeout_ms: u64,
        /// Appends per second during the failover measurement.
        #[arg(long, default_value_t = 500.0)]
        failover_rate: f64,
        /// Keep the data directories and logs.
        #[arg(long)]
        keep: bool,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Reads: `catch-up` re-reads preloaded ranges from the start; `tail` long-polls at the end
    /// while the first loop of each connection appends (needs --in-flight >= 2).
    Fetch {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        streams: StreamArgs,
        #[arg(long, value_enum, default_value = "catch-up")]
        mode: FetchMode,
        /// Batches appended to each stream before a catch-up run.
        #[arg(long, default_value_t = 64)]
        preload_batches: u64,
        /// FETCH max_bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_bytes: u32,
        /// FETCH max_wait_ms for tail reads.
        #[arg(long, default_value_t = 1000)]
        wait_ms: u32,
    },
    /// The raw disk baseline alone: O_DIRECT writes through io_uring, one fdatasync per group.
    RawDisk {
        /// Directory for the temporary file (on the disk the node uses).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 64 * 1024)]
        block_bytes: usize,
        /// Writes submitted together before each fdatasync.
        #[arg(long, default_value_t = 16)]
        queue_depth: usize,
        #[arg(long, default_value_t = 256 << 20)]
        file_bytes: u64,
        #[arg(long, default_value_t = 5.0)]
        duration_secs: f64,
        /// Pre-write fresh segments of this size alongside, one byte per byte written (what a
        /// WAL that never recycles segments adds).
        #[arg(long)]
        prewrite_segment_bytes: Option<u64>,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Durable placement-manager operations against a running `pm` (CREATE_STREAM,
    /// UPDATE_STREAM epoch raises, or CREATE_RANGE + SEAL_RANGE pairs), next to the raw cost of
    /// one data sync measured first in the same run.
    Pm(PmArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FetchMode {
    CatchUp,
    Tail,
}

#[derive(Args, Clone)]
struct Common {
    /// Data node address.
    #[arg(long, short = 'a', default_value = "127.0.0.1:10911")]
    addr: String,
    #[arg(long, short = 'c', default_value_t = 1)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, short = 'i', default_value_t = 1)]
    in_flight: usize,
    /// Measured run time, after the warm-up.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration_secs: f64,
    /// Stop after this many requests instead (warm-up requests included).
    #[arg(long)]
    count: Option<u64>,
    /// Requests run but not measured at the start.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Open loop: total requests per second, latency measured from each request's intended
    /// send time. Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// CPUs for the client's runtime threads, one thread each (connections spread over them).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    client_cpus: Vec<usize>,
    /// Do not pin the client threads.
    #[arg(long)]
    no_pin: bool,
    /// The node's metrics endpoint (host:port): scraped before and after for server-side
    /// latency by stage.
    #[arg(long)]
    metrics: Option<String>,
    /// The node's pid for CPU and RSS; default: the newest process named data-node.
    #[arg(long)]
    node_pid: Option<u32>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Block device (name in /proc/diskstats) whose writes are reported; empty: none.
    #[arg(long, default_value = "vda")]
    disk_device: String,
}

#[derive(Args, Clone)]
struct StreamArgs {
    /// Streams (one range each) written or read.
    #[arg(long, short = 's', default_value_t = 1)]
    streams: u64,
    /// Payload bytes per batch.
    #[arg(long, short = 'b', default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// First stream id; ranges (stream, 0) are created from it up. Default: derived from the
    /// clock so repeated runs against one node do not collide.
    #[arg(long, value_parser = clap::value_parser!(u64).map(StreamId))]
    stream_base: Option<StreamId>,
}

#[derive(Serialize)]
struct Report {
    workload: String,
    connections: usize,
    in_flight_per_connection: usize,
    streams: u64,
    payload_bytes: usize,
    rate_target: Option<f64>,
    measured_seconds: f64,
    operations: u64,
    operations_per_second: f64,
    payload_bytes_per_second: f64,
    errors: u64,
    first_error: Option<String>,
    latency: LatencySummary,
    hiccup: LatencySummary,
    client: Option<ProcessUsage>,
    node: Option<ProcessUsage>,
    server_stages: Vec<StageLatency>,
    /// Counters and gauges of the node that changed over the run (after - before).
    server_counters: std::collections::BTreeMap<String, f64>,
    /// Everything the device wrote during the run (this run and anything else on the machine).
    disk: Option<procstat::DiskUsage>,
    baseline: Option<RawDiskReport>,
    baseline_with_prewrite: Option<RawDiskReport>,
}

#[derive(Serialize, Clone)]
struct RawDiskReport {
    /// Segment size of the pre-writer running alongside, if any.
    prewrite_segment_bytes: Option<u64>,
    block_bytes: usize,
    queue_depth: usize,
    seconds: f64,
    bytes_per_second: f64,
    syncs: u64,
    write_latency: LatencySummary,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("es-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.workload {
        Workload::Pm(args) => {
            let report = pm_workload::run(&args)?;
            pm_workload::print_report(&report);
            if let Some(path) = &args.json {
                write_json(path, &report)?;
            }
            if report.errors > 0 && report.operations == 0 {
                return Err(format!(
                    "no operation succeeded: {}",
                    report.first_error.unwrap_or_default()
                ));
            }
            Ok(())
        }
        Workload::RawDisk {
            dir,
            block_bytes,
            queue_depth,
            file_bytes,
            duration_secs,
            prewrite_segment_bytes,
            json,
        } => {
            let report = raw_disk_baseline(
                &dir,
                block_bytes,
                queue_depth,
                file_bytes,
                duration_secs,
                prewrite_segment_bytes,
            )?;
            print_raw_disk(&report);
            if let Some(path) = json {
                write_json(&path, &report)?;
            }
            Ok(())
        }
        Workload::Ping {
            common,
            payload_bytes,
        } => {
            let plan = plan(&common, Kind::Ping, payload_bytes, 0, None)?;
            run_load(&common, plan, Baselines::default())
        }
        Workload::Replication {
            dir,
            bin_dir,
            streams,
            batch_bytes,
            in_flight,
            warmup_secs,
            duration_secs,
            rounds,
            kills,
            segment_size_bytes,
            replica_timeout_ms,
            failover_rate,
            keep,
            json,
        } => {
            let bin_dir = match bin_dir {
                Some(dir) => dir,
                None => std::env::current_exe()
                    .map_err(|error| format!("own path: {error}"))?
                    .parent()
                    .ok_or("es-bench has no directory")?
                    .to_path_buf(),
            };
            let args = replication::ReplicationArgs {
                dir,
                bin_dir,
                streams,
                batch_bytes,
                in_flight,
                warmup: Duration::from_secs_f64(warmup_secs),
                duration: Duration::from_secs_f64(duration_secs),
                rounds,
                kills,
                segment_size_bytes,
                replica_timeout: Duration::from_millis(replica_timeout_ms),
                failover_rate,
                keep,
            };
            let report = replication::run(&args)?;
            if let Some(path) = &json {
                write_json(path, &report)?;
            }
            Ok(())
        }
        Workload::Append {
            common,
            streams,
            pm: Some(pm_addresses),
            replica,
            ack,
            replica_timeout_ms,
            ..
        } => {
            let plan = SdkPlan {
                pm_addresses,
                replica_count: replica,
                ack_count: ack,
                streams: streams.streams,
                batch_bytes: streams.batch_bytes,
                in_flight: common.in_flight,
                warmup: Duration::from_secs_f64(common.warmup_secs),
                duration: Duration::from_secs_f64(common.duration_secs),
                replica_timeout: Duration::from_millis(replica_timeout_ms),
            };
            println!(
                "append through the SDK to {:?}: {} stream(s) R={} A={}, {} in flight each, {} B batches",
                plan.pm_addresses, plan.streams, plan.replica_count, plan.ack_count, plan.in_flight, plan.batch_bytes
            );
            let report = sdk_workload::run_appends(&plan, &mut || {})?;
            println!(
                "append (SDK): {:.0} op/s, {} payload over {:.1} s ({} appends, {} errors)",
                report.appends as f64 / report.measured_seconds.max(1e-9),
                format_rate(report.payload_bytes_per_second),
                report.measured_seconds,
                report.appends,
                report.errors
            );
            if let Some(error) = &report.first_error {
                println!("first error: {error}");
            }
            println!("{}", latency_header());
            println!("{}", latency_row("append -> ack", &report.latency));
            if let Some(path) = &common.json {
                write_json(path, &report)?;
            }
            if report.appends == 0 {
                return Err(format!(
                    "no append succeeded: {}",
                    report.first_error.unwrap_or_default()
                ));
            }
            Ok(())
        }
        Workload::Append {
            common,
            streams,
            baseline_dir,
            baseline_queue_depth,
            baseline_prewrite_segment_bytes,
            ..
        } => {
            let plan = plan(
                &common,
                Kind::Append,
                streams.batch_bytes,
                streams.streams,
                streams.stream_base,
            )?;
            let block_bytes = round_up_4k(streams.batch_bytes + wire::batch::BATCH_HEADER_BYTES);
            let baseline_seconds = common.duration_secs.min(5.0);
            let mut baselines = Baselines::default();
            if let Some(dir) = &baseline_dir {
                println!("raw disk baseline in {} ...", dir.display());
                let report = raw_disk_baseline(
                    dir,
                    block_bytes,
                    baseline_queue_depth,
                    256 << 20,
                    baseline_seconds,
                    None,
                )?;
                print_raw_disk(&report);
                baselines.plain = Some(report);
                if let Some(segment_bytes) = baseline_prewrite_segment_bytes {
                    let report = raw_disk_baseline(
                        dir,
                        block_bytes,
                        baseline_queue_depth,
                        256 << 20,
                        baseline_seconds,
                        Some(segment_bytes),
                    )?;
                    print_raw_disk(&report);
                    baselines.with_prewrite = Some(report);
                }
            }
            run_load(&common, plan, baselines)
        }
        Workload::Fetch {
            common,
            streams,
            mode,
            preload_batches,
            max_bytes,
            wait_ms,
        } => {
            let kind = match mode {
                FetchMode::CatchUp => Kind::FetchCatchUp,
                FetchMode::Tail => Kind::FetchTail,
            };
            if kind == Kind::FetchTail && common.in_flight < 2 {
                return Err(
                    "fetch --mode tail needs --in-flight 2 or more (one writer, readers)".into(),
                );
            }
            let mut plan = plan(
                &common,
                kind,
                streams.batch_bytes,
                streams.streams,
                streams.stream_base,
            )?;
            plan.preload_batches = preload_batches;
            plan.fetch_max_bytes = max_bytes;
            plan.fetch_wait_ms = wait_ms;
            run_load(&common, plan, Baselines::default())
        }
    }
}

fn round_up_4k(bytes: usize) -> usize {
    bytes.div_ceil(4096) * 4096
}

fn plan(
    common: &Common,
    kind: Kind,
    payload_bytes: usize,
    streams: u64,
    stream_base: Option<StreamId>,
) -> Result<Plan, String> {
    let address: SocketAddr = common
        .addr
        .to_socket_addrs()
        .map_err(|error| format!("--addr {}: {error}", common.addr))?
        .next()
        .ok_or_else(|| format!("--addr {} resolves to nothing", common.addr))?;
    if common.connections == 0 || common.in_flight == 0 {
        return Err("--connections and --in-flight must be at least 1".into());
    }
    if kind != Kind::Ping && streams < common.connections as u64 {
        return Err(format!(
            "--streams {streams} is below --connections {}: each connection needs a stream of its own",
            common.connections
        ));
    }
    if payload_bytes > 8 << 20 {
        return Err(
            "payload above 8 MiB does not fit the protocol's frame limit comfortably".into(),
        );
    }
    let stream_base = stream_base.unwrap_or_else(|| {
        // Seconds since the epoch * 10_000 leaves room for 10,000 streams per run.
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        StreamId(seconds * 10_000)
    });
    Ok(Plan {
        kind,
        address,
        connections: common.connections,
        in_flight: common.in_flight,
        payload_bytes,
        streams,
        stream_base,
        rate: common.rate,
        preload_batches: 0,
        fetch_max_bytes: 1 << 20,
        fetch_wait_ms: 0,
    })
}

fn raw_disk_baseline(
    dir: &std::path::Path,
    block_bytes: usize,
    queue_depth: usize,
    file_bytes: u64,
    duration_secs: f64,
    prewrite_segment_bytes: Option<u64>,
) -> Result<RawDiskReport, String> {
    let options = RawDiskOptions {
        block_size_bytes: block_bytes,
        queue_depth,
        file_size_bytes: file_bytes,
        duration: Duration::from_secs_f64(duration_secs),
    };
    let result = match prewrite_segment_bytes {
        Some(segment_bytes) => raw_disk::run_with_prewrite(dir, &options, segment_bytes),
        None => raw_disk::run(dir, &options),
    }
    .map_err(|error| format!("raw disk baseline in {}: {error}", dir.display()))?;
    let seconds = result.elapsed.as_secs_f64();
    Ok(RawDiskReport {
        prewrite_segment_bytes,
        block_bytes,
        queue_depth,
        seconds,
        bytes_per_second: result.bytes_written as f64 / seconds.max(1e-9),
        syncs: result.groups,
        write_latency: LatencySummary::of(&result.write_latency_us),
    })
}

fn print_raw_disk(report: &RawDiskReport) {
    let prewrite = report
        .prewrite_segment_bytes
        .map_or_else(String::new, |bytes| {
            format!(" + pre-writing {bytes}-byte segments")
        });
    println!(
        "raw disk{prewrite}: {} x {} B O_DIRECT writes + 1 fdatasync per group: {} ({:.0} syncs/s) over {:.1} s",
        report.queue_depth,
        report.block_bytes,
        format_rate(report.bytes_per_second),
        report.syncs as f64 / report.seconds.max(1e-9),
        report.seconds
    );
    println!("{}", latency_header());
    println!("{}", latency_row("raw write+sync", &report.write_latency));
}

fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|error| error.to_string())?;
    std::fs::write(path, text).map_err(|error| format!("{}: {error}", path.display()))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Ping => "ping",
        Kind::Append => "append",
        Kind::FetchCatchUp => "fetch catch-up",
        Kind::FetchTail => "fetch tail",
    }
}

/// Raw disk baselines measured before the load, in the same run.
#[derive(Default)]
struct Baselines {
    plain: Option<RawDiskReport>,
    with_prewrite: Option<RawDiskReport>,
}

fn run_load(common: &Common, plan: Plan, baselines: Baselines) -> Result<(), String> {
    let node_pid = common
        .node_pid
        .or_else(|| procstat::find_process("data-node"));
    let recorder = Arc::new(Recorder::new(common.count));
    let cpus: Vec<Option<usize>> = if common.no_pin {
        vec![None; common.client_cpus.len().max(1)]
    } else {
        common.client_cpus.iter().map(|&cpu| Some(cpu)).collect()
    };
    println!(
        "{} against {}: {} connection(s) x {} in flight, {} stream(s), {} B payload, {}; client threads on cpus {:?}",
        kind_name(plan.kind),
        plan.address,
        plan.connections,
        plan.in_flight,
        plan.streams,
        plan.payload_bytes,
        match plan.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => "closed loop".into(),
        },
        cpus
    );
    let probe =
        HiccupProbe::start(cpus.first().copied().flatten()).map_err(|error| error.to_string())?;

    let mut threads = Vec::new();
    for (thread_index, cpu) in cpus.iter().enumerate() {
        let connection_indexes: Vec<usize> = (0..plan.connections)
            .filter(|index| index % cpus.len() == thread_index)
            .collect();
        if connection_indexes.is_empty() {
            continue;
        }
        let plan = plan.clone();
        let recorder = Arc::clone(&recorder);
        let handle = runtime::thread::spawn_runtime(
            format!("es-bench-{thread_index}"),
            *cpu,
            runtime::Builder::new(),
            move || workload::run_thread(plan, connection_indexes, recorder),
        )
        .map_err(|error| format!("client thread: {error}"))?;
        threads.push(handle);
    }

    // Setup (ranges, preload) first, then the warm-up, then the measurement.
    let setup_deadline = Instant::now() + Duration::from_secs(120);
    while recorder.ready.load(Ordering::Relaxed) < plan.connections as u64
        && !recorder.stop.load(Ordering::Relaxed)
    {
        if Instant::now() > setup_deadline {
            recorder.stop.store(true, Ordering::Relaxed);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs_f64(common.warmup_secs));
    let scrape_before = common.metrics.as_deref().map(scrape_or_warn);
    let client_before = procstat::sample(None).ok();
    let node_before = node_pid.and_then(|pid| procstat::sample(Some(pid)).ok());
    let disk_before = disk_sample(&common.disk_device);
    recorder.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(common.duration_secs);
    let mut last_operations = 0;
    let mut last_bytes = 0;
    let mut last_tick = start;
    while !recorder.stop.load(Ordering::Relaxed)
        && (common.count.is_some() || Instant::now() < deadline)
    {
        let next_tick = last_tick + Duration::from_secs(1);
        let wake = if common.count.is_some() {
            next_tick
        } else {
            next_tick.min(deadline)
        };
        while Instant::now() < wake && !recorder.stop.load(Ordering::Relaxed) {
            std::thread::sleep(
                Duration::from_millis(5).min(wake.saturating_duration_since(Instant::now())),
            );
        }
        let now = Instant::now();
        let operations = recorder.operations.load(Ordering::Relaxed);
        let bytes = recorder.payload_bytes.load(Ordering::Relaxed);
        let seconds = now.duration_since(last_tick).as_secs_f64().max(1e-9);
        let interval = recorder
            .interval
            .lock()
            .map(|mut histogram| {
                let summary = LatencySummary::of(&histogram);
                histogram.reset();
                summary
            })
            .unwrap_or_default();
        println!(
            "[{:>5.1}s] {:>9.0} op/s {:>12}  p50 {:>9}  p99 {:>9}  max stall {:>9}  errors {}",
            now.duration_since(start).as_secs_f64(),
            (operations - last_operations) as f64 / seconds,
            format_rate((bytes - last_bytes) as f64 / seconds),
            format_us(interval.p50_us),
            format_us(interval.p99_us),
            format_us(probe.take_interval_max_us()),
            recorder.errors.load(Ordering::Relaxed)
        );
        last_operations = operations;
        last_bytes = bytes;
        last_tick = now;
    }
    recorder.measuring.store(false, Ordering::Relaxed);
    let measured = start.elapsed();
    let client_after = procstat::sample(None).ok();
    let node_after = node_pid.and_then(|pid| procstat::sample(Some(pid)).ok());
    let disk_after = disk_sample(&common.disk_device);
    let scrape_after = common.metrics.as_deref().map(scrape_or_warn);
    recorder.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("client runtime: {error}")),
            Err(_) => return Err("a client thread panicked".into()),
        }
    }
    let hiccups = probe.stop();

    let operations = recorder.operations.load(Ordering::Relaxed);
    let bytes = recorder.payload_bytes.load(Ordering::Relaxed);
    let seconds = measured.as_secs_f64();
    let latency = recorder
        .total
        .lock()
        .map(|histogram| LatencySummary::of(&histogram))
        .unwrap_or_default();
    let usage = |pid: u32, before: Option<ProcessSample>, after: Option<ProcessSample>| {
        before
            .zip(after)
            .map(|(before, after)| procstat::usage(pid, &before, &after))
    };
    let (server_stages, server_counters) = match (&scrape_before, &scrape_after) {
        (Some(Some(before)), Some(Some(after))) => (
            metrics::stage_latencies(before, after),
            metrics::counter_deltas(before, after),
        ),
        _ => Default::default(),
    };
    let report = Report {
        workload: kind_name(plan.kind).into(),
        connections: plan.connections,
        in_flight_per_connection: plan.in_flight,
        streams: plan.streams,
        payload_bytes: plan.payload_bytes,
        rate_target: plan.rate,
        measured_seconds: seconds,
        operations,
        operations_per_second: operations as f64 / seconds.max(1e-9),
        payload_bytes_per_second: bytes as f64 / seconds.max(1e-9),
        errors: recorder.errors.load(Ordering::Relaxed),
        first_error: recorder
            .first_error
            .lock()
            .ok()
            .and_then(|first| first.clone()),
        latency,
        hiccup: LatencySummary::of(&hiccups),
        client: usage(std::process::id(), client_before, client_after),
        node: node_pid.and_then(|pid| usage(pid, node_before, node_after)),
        server_stages,
        server_counters,
        disk: disk_before
            .zip(disk_after)
            .map(|(before, after)| procstat::disk_usage(&before, &after)),
        baseline: baselines.plain,
        baseline_with_prewrite: baselines.with_prewrite,
    };
    print_report(&report);
    if let Some(path) = &common.json {
        write_json(path, &report)?;
    }
    if report.errors > 0 && report.operations == 0 {
        return Err(format!(
            "no request succeeded: {}",
            report.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

fn disk_sample(device: &str) -> Option<procstat::DiskSample> {
    if device.is_empty() {
        return None;
    }
    procstat::disk_written(device)
        .map_err(|error| eprintln!("es-bench: disk statistics: {error}"))
        .ok()
}

fn scrape_or_warn(address: &str) -> Option<Scrape> {
    match metrics::scrape(address) {
        Ok(scrape) => Some(scrape),
        Err(error) => {
            eprintln!("es-bench: cannot scrape metrics at {address}: {error}");
            None
        }
    }
}

fn print_report(report: &Report) {
    println!();
    println!(
        "{}: {:.0} op/s, {} payload over {:.1} s ({} operations, {} errors)",
        report.workload,
        report.operations_per_second,
        format_rate(report.payload_bytes_per_second),
        report.measured_seconds,
        report.operations,
        report.errors
    );
    if let Some(error) = &report.first_error {
        println!("first error: {error}");
    }
    if let Some(baseline) = &report.baseline {
        println!(
            "raw disk baseline (same run): {}; this run reached {:.0} % of it",
            format_rate(baseline.bytes_per_second),
            report.payload_bytes_per_second / baseline.bytes_per_second.max(1e-9) * 100.0
        );
    }
    if let Some(baseline) = &report.baseline_with_prewrite {
        println!(
            "raw disk with segment pre-writing (same run): {}; this run reached {:.0} % of it",
            format_rate(baseline.bytes_per_second),
            report.payload_bytes_per_second / baseline.bytes_per_second.max(1e-9) * 100.0
        );
    }
    println!("{}", latency_header());
    println!("{}", latency_row("end-to-end", &report.latency));
    println!("{}", latency_row("hiccup (machine stall)", &report.hiccup));
    if let Some(baseline) = &report.baseline {
        println!(
            "{}",
            latency_row("raw disk write+sync", &baseline.write_latency)
        );
    }
    if !report.server_stages.is_empty() {
        println!("server-side, from the node's metrics (bucket-interpolated):");
        println!(
            "{:<60} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "series", "p50", "p90", "p99", "mean", "count"
        );
        for stage in &report.server_stages {
            println!(
                "{:<60} {:>9} {:>9} {:>9} {:>9} {:>10.0}",
                stage.series,
                format_us(stage.p50_us as u64),
                format_us(stage.p90_us as u64),
                format_us(stage.p99_us as u64),
                format_us(stage.mean_us as u64),
                stage.count
            );
        }
    }
    let usage_line = |name: &str, usage: &Option<ProcessUsage>| match usage {
        Some(usage) => println!(
            "{name:<10} pid {:>7}  CPU {:>6.1} % of one core  RSS {:>8.1} MB  wrote to storage {}",
            usage.pid,
            usage.cpu_percent,
            usage.rss_bytes_end as f64 / 1e6,
            usage
                .storage_write_bytes_per_second
                .map_or_else(|| "unknown".to_string(), format_rate)
        ),
        None => println!("{name:<10} (not found: pass --node-pid)"),
    };
    if let Some(disk) = &report.disk {
        println!(
            "disk       wrote {} in {:.0} writes/s and {:.0} flushes/s (whole device, whole machine)",
            format_rate(disk.bytes_written_per_second),
            disk.writes_per_second,
            disk.flushes_per_second
        );
    }
    usage_line("es-bench", &report.client);
    usage_line("data-node", &report.node);
}
