//! `es-bench replication`: the cost of replication measured in one run on one machine.
//!
//! It starts its own processes (each signalled only by the pid it started, SIGKILLed when the
//! run ends): a placement manager with three data nodes, and a second placement manager with one
//! lone data node. Then, alternating for `rounds` rounds so that the machine's drift hits both
//! alike: appends through the SDK to R=3/A=2 streams on the cluster, and to R=1/A=1 streams on
//! the lone node. For each run it reports payload MB/s, the bytes the data nodes wrote to storage
//! per payload byte (`write_bytes` of `/proc/PID/io`, summed over the nodes), and the latency
//! from `append` to acknowledgement. Last, the failover gap: a replica of the open range is
//! SIGKILLed `kills` times (brought back before the next) while a writer keeps appends in flight,
//! and the time from each kill to the first acknowledgement of a batch in the next range is
//! measured.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use wire::msg::{DescribeClusterRequest, DescribeClusterResponse, PingRequest};
use wire::{Offset, StreamId};

use crate::procstat;
use crate::report::{format_rate, format_us, latency_header, latency_row, LatencySummary};
use crate::sdk_workload::{self, AckLog, SdkPlan, SdkReport};

/// What `es-bench replication` is asked to do.
#[derive(Debug, Clone)]
pub struct ReplicationArgs {
    /// Directory for the processes' data (a fresh subdirectory per run, removed at the end).
    pub dir: PathBuf,
    /// Where the `pm` and `data-node` binaries are.
    pub bin_dir: PathBuf,
    pub streams: u64,
    pub batch_bytes: usize,
    pub in_flight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub rounds: usize,
    pub kills: usize,
    pub segment_size_bytes: u64,
    pub replica_timeout: Duration,
    /// Appends per second of the writer during the failover measurement (it runs for tens of
    /// seconds: unthrottled, it would write tens of gigabytes).
    pub failover_rate: f64,
    /// Keep the logs and data directories.
    pub keep: bool,
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> Result<u64, String> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} holds a NUL byte", path.display()))?;
    // SAFETY: statvfs(3) writes only into `stat`, a plain struct we own; `name` is a valid
    // NUL-terminated string that outlives the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::statvfs(name.as_ptr(), &mut stat) };
    if result != 0 {
        return Err(format!(
            "statvfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The sum of the sizes of the files under `directory`, recursively.
fn directory_bytes(directory: &Path) -> u64 {
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

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub label: String,
    pub round: usize,
    pub report: SdkReport,
    /// Bytes the data nodes sent to storage over the run, summed over the nodes.
    pub node_write_bytes: Option<u64>,
    /// `node_write_bytes` per payload byte acknowledged.
    pub written_per_payload_byte: Option<f64>,
    /// CPU of every data node over the run, % of one core, summed.
    pub node_cpu_percent: f64,
    /// CPU of this process (the SDK client and its I/O thread) over the run, % of one core.
    pub client_cpu_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicationReport {
    pub rows: Vec<RunRow>,
    /// The machine's own stalls over the throughput rounds: overshoot of a 1 ms sleep.
    pub hiccup: LatencySummary,
    /// Replicated MB/s x 3 / single-node MB/s, per round.
    pub ratios: Vec<f64>,
    /// SIGKILL -> first ack in the next range, per kill, in ms (`None`: not within 30 s).
    pub failover_gaps_ms: Vec<Option<f64>>,
    pub failover_p50_ms: Option<f64>,
    pub failover_max_ms: Option<f64>,
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
    Ok(listener
        .local_addr()
        .map_err(|error| error.to_string())?
        .port())
}

/// A daemon this run started, SIGKILLed by its pid when dropped.
struct Daemon {
    child: Option<Child>,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    address: String,
}

impl Daemon {
    fn start(binary: &Path, config: &Path, log: &Path, address: &str) -> Result<Daemon, String> {
        let mut daemon = Daemon {
            child: None,
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            address: address.to_string(),
        };
        daemon.launch()?;
        Ok(daemon)
    }

    fn launch(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|error| format!("{}: {error}", self.log.display()))?;
            let stderr = log.try_clone().map_err(|error| error.to_string())?;
            let child = Command::new(&self.binary)
                .arg("-c")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(stderr)
                .spawn()
                .map_err(|error| format!("start {}: {error}", self.binary.display()))?;
            self.child = Some(child);
            while Instant::now() < deadline {
                if !self.is_running() {
                    break;
                }
                if ping(&self.address) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            self.kill();
            if Instant::now() >= deadline || !log.contains("in use") {
                return Err(format!(
                    "{} -c {} did not start; see {}",
                    self.binary.display(),
                    self.config.display(),
                    self.log.display()
                ));
            }
            // The port of a process killed a moment ago may linger: try again.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL by pid and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(address: &str) -> bool {
    client::blocking::Connection::connect_timeout(address, Duration::from_millis(500))
        .and_then(|mut connection| connection.request(&PingRequest {}, b"", Duration::from_secs(2)))
        .is_ok()
}

/// Node addresses the PM at `pm` lists as alive.
fn alive_nodes(pm: &str) -> Vec<String> {
    let Ok(mut connection) =
        client::blocking::Connection::connect_timeout(pm, Duration::from_secs(1))
    else {
        return Vec::new();
    };
    let Ok(exchange) = connection.request(&DescribeClusterRequest {}, b"", Duration::from_secs(5))
    else {
        return Vec::new();
    };
    exchange
        .response
        .decode_message::<DescribeClusterResponse>()
        .map(|response| {
            response
                .nodes
                .into_iter()
                .filter(|node| node.alive)
                .map(|node| node.address)
                .collect()
        })
        .unwrap_or_default()
}

fn wait_alive(pm: &str, addresses: &[String], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive = alive_nodes(pm);
        if addresses.iter().all(|address| alive.contains(address)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the PM at {pm} lists {alive:?} alive, not all of {addresses:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A PM and its data nodes.
struct Cluster {
    pm: Daemon,
    nodes: Vec<Daemon>,
    data_dirs: Vec<PathBuf>,
}

impl Cluster {
    fn start(
        args: &ReplicationArgs,
        base: &Path,
        name: &str,
        count: usize,
    ) -> Result<Cluster, String> {
        let pm_address = format!("127.0.0.1:{}", free_port()?);
        let pm_config = base.join(format!("{name}-pm.yaml"));
        std::fs::write(
            &pm_config,
            format!(
                "server:\n  listen: {pm_address}\nstorage:\n  path: {}\n\
                 cluster:\n  heartbeat-interval-ms: 300\n  node-timeout-ms: 1500\n  \
                 min-free-disk-bytes: 1048576\n  maintenance-interval-ms: 1000\n\
                 metrics:\n  enabled: false\n",
                base.join(format!("{name}-pm-data")).display()
            ),
        )
        .map_err(|error| error.to_string())?;
        let pm = Daemon::start(
            &args.bin_dir.join("pm"),
            &pm_config,
            &base.join(format!("{name}-pm.log")),
            &pm_address,
        )?;
        let mut nodes = Vec::new();
        let mut data_dirs = Vec::new();
        for index in 0..count {
            data_dirs.push(base.join(format!("{name}-node-{index}-data")));
            let address = format!("127.0.0.1:{}", free_port()?);
            let config = base.join(format!("{name}-node-{index}.yaml"));
            std::fs::write(
                &config,
                format!(
                    "server:\n  listen: {address}\n  workers: 1\n\
                     store:\n  path: {}\n  segment-size-bytes: {}\n  sync: always\n\
                     pm:\n  embedded: false\n  addresses: [{pm_address}]\n  heartbeat-interval-ms: 300\n\
                     metrics:\n  enabled: false\nlog:\n  level: warn\n",
                    base.join(format!("{name}-node-{index}-data")).display(),
                    args.segment_size_bytes
                ),
            )
            .map_err(|error| error.to_string())?;
            nodes.push(Daemon::start(
                &args.bin_dir.join("data-node"),
                &config,
                &base.join(format!("{name}-node-{index}.log")),
                &address,
            )?);
        }
        let addresses: Vec<String> = nodes.iter().map(|node| node.address.clone()).collect();
        wait_alive(&pm.address, &addresses, Duration::from_secs(30))?;
        Ok(Cluster {
            pm,
            nodes,
            data_dirs,
        })
    }

    /// Waits (up to 60 s) until the nodes' data directories hold less than `limit` bytes in all:
    /// the deleted streams' segments recycled.
    fn wait_disk_given_back(&self, limit: u64) {
        let started = Instant::now();
        let used = || {
            self.data_dirs
                .iter()
                .map(|dir| directory_bytes(dir))
                .sum::<u64>()
        };
        let before = used();
        while used() > limit && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "  nodes' data directories: {:.2} GB after the run, {:.2} GB {:.1} s after its streams were deleted",
            before as f64 / 1e9,
            used() as f64 / 1e9,
            started.elapsed().as_secs_f64()
        );
    }

    fn node_samples(&self) -> Vec<Option<procstat::ProcessSample>> {
        self.nodes
            .iter()
            .map(|node| node.pid().and_then(|pid| procstat::sample(Some(pid)).ok()))
            .collect()
    }
}

/// Runs the SDK append plan against `cluster` and measures its nodes alongside.
fn measured_run(
    label: &str,
    round: usize,
    cluster: &Cluster,
    plan: &SdkPlan,
    segment_size_bytes: u64,
) -> Result<RunRow, String> {
    let mut samples: Vec<(
        Vec<Option<procstat::ProcessSample>>,
        Option<procstat::ProcessSample>,
    )> = Vec::new();
    let report = sdk_workload::run_appends(plan, &mut || {
        samples.push((cluster.node_samples(), procstat::sample(None).ok()))
    })?;
    let ((before, client_before), (after, client_after)) = match samples.as_slice() {
        [before, after] => (before.clone(), after.clone()),
        _ => return Err("the run did not reach its measured interval".into()),
    };
    let client_cpu_percent = match (client_before, client_after) {
        (Some(before), Some(after)) => {
            (after.cpu_seconds - before.cpu_seconds) / report.measured_seconds.max(1e-9) * 100.0
        }
        _ => 0.0,
    };
    let wall = report.measured_seconds;
    let mut write_bytes = Some(0u64);
    let mut cpu_seconds = 0.0;
    for (before, after) in before.iter().zip(after.iter()) {
        match (before, after) {
            (Some(before), Some(after)) => {
                cpu_seconds += after.cpu_seconds - before.cpu_seconds;
                write_bytes = write_bytes.and_then(|sum| {
                    Some(
                        sum + after
                            .storage_write_bytes?
                            .saturating_sub(before.storage_write_bytes?),
                    )
                });
            }
            _ => write_bytes = None,
        }
    }
    let payload = report.payload_bytes;
    // Recycled segments are kept ready: allow a few per node.
    cluster.wait_disk_given_back(cluster.nodes.len() as u64 * 4 * segment_size_bytes);
    Ok(RunRow {
        label: label.to_string(),
        round,
        written_per_payload_byte: write_bytes.map(|bytes| bytes as f64 / (payload as f64).max(1.0)),
        node_write_bytes: write_bytes,
        node_cpu_percent: cpu_seconds / wall.max(1e-9) * 100.0,
        client_cpu_percent,
        report,
    })
}

/// Kills a replica of the open range of a fresh R=3/A=2 stream `kills` times while a writer
/// keeps `in_flight` appends outstanding; each gap is SIGKILL -> first ack in the next range.
fn failover_gaps(
    args: &ReplicationArgs,
    cluster: &mut Cluster,
) -> Result<Vec<Option<Duration>>, String> {
    let client = client::Client::connect(sdk_workload::client_config(
        std::slice::from_ref(&cluster.pm.address),
        args.replica_timeout,
    ))
    .map_err(|error| format!("connect: {error}"))?;
    let (stream, writer) = sdk_workload::open_stream(&client, 3, 2)?;
    let payload = Bytes::from(vec![0x5a; args.batch_bytes]);
    let pace = Duration::from_secs_f64(1.0 / args.failover_rate.max(1.0));
    println!(
        "  writer: {} B batches, {:.0} per second, up to {} in flight",
        args.batch_bytes, args.failover_rate, args.in_flight
    );
    let log = AckLog::start(writer, payload, args.in_flight, pace);
    log.wait_acknowledged(64, Duration::from_secs(30))?;
    let mut gaps = Vec::new();
    for kill in 0..args.kills {
        let ranges = client::block_on(client.ranges(stream)).map_err(|error| error.to_string())?;
        let open = ranges
            .iter()
            .rev()
            .find(|range| range.end_offset.is_none())
            .ok_or_else(|| format!("no open range of {stream}: {ranges:?}"))?
            .clone();
        let victim_address = &open.replicas[kill % open.replicas.len()].address;
        let victim = cluster
            .nodes
            .iter()
            .position(|node| &node.address == victim_address)
            .ok_or_else(|| format!("{victim_address} is not a node of this run"))?;
        let acknowledged = log.acknowledged();
        log.wait_acknowledged(acknowledged + 16, Duration::from_secs(30))?;
        // The writer must be acknowledging in this very range (not catching up after an
        // earlier failover), or the gap would measure that instead.
        let settled = Instant::now();
        let deadline = settled + Duration::from_secs(30);
        while log.first_ack_after(settled, open.start_offset).is_none() {
            if Instant::now() > deadline {
                return Err(format!(
                    "no acknowledgement in range {} within 30 s",
                    open.index
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let killed_at = Instant::now();
        cluster.nodes[victim].kill();
        let gap = wait_gap(&client, &log, stream, open.index.0, killed_at)?;
        match gap {
            Some(gap) => println!(
                "kill {kill}: node {victim} -> first ack in range {} after {}",
                open.index.0 + 1,
                format_us(gap.as_micros() as u64)
            ),
            None => println!("kill {kill}: node {victim} -> no ack in the next range within 30 s"),
        }
        gaps.push(gap);
        cluster.nodes[victim].launch()?;
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| node.address.clone())
            .collect();
        wait_alive(&cluster.pm.address, &addresses, Duration::from_secs(30))?;
    }
    let writer = log.stop()?;
    client::block_on(writer.close()).map_err(|error| format!("close: {error}"))?;
    client::block_on(client.delete(stream)).map_err(|error| format!("delete: {error}"))?;
    Ok(gaps)
}

/// Time from `killed_at` to the first acknowledgement at or above the end range `index` was
/// sealed at; `None` after 30 s.
fn wait_gap(
    client: &client::Client,
    log: &AckLog,
    stream: StreamId,
    index: u32,
    killed_at: Instant,
) -> Result<Option<Duration>, String> {
    let deadline = killed_at + Duration::from_secs(30);
    let mut end: Option<Offset> = None;
    while Instant::now() < deadline {
        if let Some(error) = log.first_error() {
            return Err(format!("the writer failed: {error}"));
        }
        if end.is_none() {
            let ranges =
                client::block_on(client.ranges(stream)).map_err(|error| error.to_string())?;
            end = ranges
                .iter()
                .find(|range| range.index.0 == index)
                .and_then(|range| range.end_offset);
        }
        if let Some(end) = end {
            if let Some(at) = log.first_ack_after(killed_at, end) {
                return Ok(Some(at - killed_at));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(None)
}

fn quantile_ms(values: &[Duration], quantile: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return None;
    }
    let position = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    Some(sorted[position].as_secs_f64() * 1e3)
}

/// Runs the whole comparison; prints as it goes and returns the report.
pub fn run(args: &ReplicationArgs) -> Result<ReplicationReport, String> {
    for binary in ["pm", "data-node"] {
        if !args.bin_dir.join(binary).is_file() {
            return Err(format!(
                "{} is missing: build it (cargo build --release -p pm --bin pm -p node --bin data-node) or pass --bin-dir",
                args.bin_dir.join(binary).display()
            ));
        }
    }
    std::fs::create_dir_all(&args.dir).map_err(|error| error.to_string())?;
    // A run writes several GB between deletions (this disk is shared): refuse to start short.
    let free = free_bytes(&args.dir)?;
    let needed = (args.duration + args.warmup).as_secs_f64() * 1.5e9 + 4e9;
    if (free as f64) < needed {
        return Err(format!(
            "{} has {:.1} GB free; this run needs about {:.1} GB at a time (shorten --duration-secs)",
            args.dir.display(),
            free as f64 / 1e9,
            needed / 1e9
        ));
    }
    let directory = tempfile::Builder::new()
        .prefix("es-bench-replication-")
        .tempdir_in(&args.dir)
        .map_err(|error| format!("temporary directory in {}: {error}", args.dir.display()))?;
    let base = directory.path().to_path_buf();
    println!("processes' data and logs under {}", base.display());
    let result = run_in(args, &base);
    if args.keep {
        let kept = directory.keep();
        println!("kept {}", kept.display());
    }
    result
}

/// The run proper, with the processes' files under `base`; every process is killed before it
/// returns.
fn run_in(args: &ReplicationArgs, base: &Path) -> Result<ReplicationReport, String> {
    let base = base.to_path_buf();
    let mut cluster = Cluster::start(args, &base, "cluster", 3)?;
    let lone = Cluster::start(args, &base, "lone", 1)?;
    println!(
        "placement manager {} with data nodes {:?}; lone node {} with its own placement manager {}",
        cluster.pm.address,
        cluster
            .nodes
            .iter()
            .map(|node| node.address.as_str())
            .collect::<Vec<_>>(),
        lone.nodes[0].address,
        lone.pm.address
    );
    let plan = |pm: &str, replica_count: u8, ack_count: u8| SdkPlan {
        pm_addresses: vec![pm.to_string()],
        replica_count,
        ack_count,
        streams: args.streams,
        batch_bytes: args.batch_bytes,
        in_flight: args.in_flight,
        warmup: args.warmup,
        duration: args.duration,
        replica_timeout: args.replica_timeout,
    };
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let probe = crate::hiccup::HiccupProbe::start(None).map_err(|error| error.to_string())?;
    for round in 0..args.rounds {
        let single = measured_run(
            "R=1/A=1, lone node",
            round,
            &lone,
            &plan(&lone.pm.address, 1, 1),
            args.segment_size_bytes,
        )?;
        print_row(&single);
        let replicated = measured_run(
            "R=3/A=2, 3 nodes",
            round,
            &cluster,
            &plan(&cluster.pm.address, 3, 2),
            args.segment_size_bytes,
        )?;
        print_row(&replicated);
        let ratio = replicated.report.payload_bytes_per_second * 3.0
            / single.report.payload_bytes_per_second.max(1e-9);
        println!(
            "round {round}: replicated MB/s x 3 / single-node MB/s = {ratio:.2} (target >= 0.70)"
        );
        ratios.push(ratio);
        rows.push(single);
        rows.push(replicated);
    }
    let hiccup = LatencySummary::of(&probe.stop());
    let gaps = if args.kills > 0 {
        println!(
            "failover: {} SIGKILLs of a replica of the open range",
            args.kills
        );
        failover_gaps(args, &mut cluster)?
    } else {
        Vec::new()
    };
    let measured: Vec<Duration> = gaps.iter().flatten().copied().collect();
    let report = ReplicationReport {
        rows,
        hiccup,
        ratios,
        failover_gaps_ms: gaps
            .iter()
            .map(|gap| gap.map(|gap| gap.as_secs_f64() * 1e3))
            .collect(),
        failover_p50_ms: quantile_ms(&measured, 0.5),
        failover_max_ms: measured.iter().max().map(|gap| gap.as_secs_f64() * 1e3),
    };
    print_report(&report);
    Ok(report)
}

fn print_row(row: &RunRow) {
    let report = &row.report;
    println!(
        "{} (round {}): {} payload, {:.0} appends/s of {} B, {} stream(s) x {} in flight, nodes wrote {} per payload byte, CPU % of a core: nodes {:.0}, client {:.0}; errors {}{}",
        row.label,
        row.round,
        format_rate(report.payload_bytes_per_second),
        report.appends as f64 / report.measured_seconds.max(1e-9),
        report.batch_bytes,
        report.streams,
        report.in_flight_per_stream,
        row.written_per_payload_byte
            .map_or_else(|| "?".to_string(), |ratio| format!("{ratio:.2}")),
        row.node_cpu_percent,
        row.client_cpu_percent,
        report.errors,
        report
            .first_error
            .as_ref()
            .map_or_else(String::new, |error| format!(" (first: {error})"))
    );
    let _ = std::io::stdout().flush();
}

fn print_report(report: &ReplicationReport) {
    println!();
    println!(
        "| run | round | MB/s | written / payload byte | p50 | p90 | p99 | CPU % nodes | CPU % client |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &report.rows {
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {:.0} | {:.0} |",
            row.label,
            row.round,
            row.report.payload_bytes_per_second / 1e6,
            row.written_per_payload_byte
                .map_or_else(|| "?".to_string(), |ratio| format!("{ratio:.2}")),
            format_us(row.report.latency.p50_us),
            format_us(row.report.latency.p90_us),
            format_us(row.report.latency.p99_us),
            row.node_cpu_percent,
            row.client_cpu_percent
        );
    }
    println!();
    println!("{}", latency_header());
    for row in &report.rows {
        println!(
            "{}",
            latency_row(
                &format!("{} #{}", short(&row.label), row.round),
                &row.report.latency
            )
        );
    }
    println!("{}", latency_row("hiccup (machine stall)", &report.hiccup));
    let ratios: Vec<String> = report
        .ratios
        .iter()
        .map(|ratio| format!("{ratio:.2}"))
        .collect();
    println!(
        "replicated MB/s x 3 / single-node MB/s per round: {} (target >= 0.70)",
        ratios.join(", ")
    );
    if !report.failover_gaps_ms.is_empty() {
        let gaps: Vec<String> = report
            .failover_gaps_ms
            .iter()
            .map(|gap| gap.map_or_else(|| "none in 30 s".to_string(), |gap| format!("{gap:.0}")))
            .collect();
        println!(
            "failover gap, SIGKILL -> first ack in the next range, over {} kills: p50 {} ms, max {} ms; each (ms): {}",
            report.failover_gaps_ms.len(),
            report
                .failover_p50_ms
                .map_or_else(|| "?".to_string(), |gap| format!("{gap:.0}")),
            report
                .failover_max_ms
                .map_or_else(|| "?".to_string(), |gap| format!("{gap:.0}")),
            gaps.join(", ")
        );
    }
}

fn short(label: &str) -> String {
    label.split(',').next().unwrap_or(label).to_string()
}

/// p50/p90/p99 of a summary, for callers printing their own tables.
pub fn summary_line(summary: &LatencySummary) -> String {
    format!(
        "p50 {} p90 {} p99 {}",
        format_us(summary.p50_us),
        format_us(summary.p90_us),
        format_us(summary.p99_us)
    )
}
