//! WAL benchmark: the store against the raw disk, measured in the same run by the same binary.
//!
//! 1. 64 KiB batches, `sync: always`, a fixed number of appends in flight, against the raw
//!    baseline (io_uring O_DIRECT writes of 64 KiB at the same queue depth, one fdatasync per
//!    group): throughput ratio and append latency p50/p90/p99. Two raw baselines: the shared
//!    `benches::raw_disk` one (every write from the same 64 KiB buffer) and one whose writes
//!    come from distinct memory, as the store's do.
//! 2. 1 KiB batches over 1,000 ranges, `sync: always`: durable appends per second and appends
//!    per data sync, against the raw rate of one 4 KiB write + fdatasync at a time (what each
//!    append would cost without group commit).
//! 3. Recovery: the log of the last 64 KiB round is reopened after an unclean stop; scan speed
//!    against O_DIRECT sequential reads of the same bytes in the same chunk size.
//!
//! Rounds alternate raw and store so drift on this noisy machine hits both. The hiccup probe
//! reports what the machine itself stalled meanwhile.
//!
//! `cargo bench -p benches --bench wal`; environment: WAL_BENCH_SECONDS (per run, default 3),
//! WAL_BENCH_ROUNDS (default 3), WAL_BENCH_DIR (default: the system temp dir), WAL_BENCH_DEPTH
//! (64 KiB appends in flight, default 32), WAL_BENCH_ONLY (`64k` or `1k`: run one part).

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use benches::hiccup::HiccupProbe;
use benches::raw_disk::{self, RawDiskOptions};
use benches::report::{format_rate, format_us, new_histogram, LatencySummary};
use bytes::Bytes;
use hdrhistogram::Histogram;
use store::{
    PrewriteMode, RangeIndex, RangeKey, Store, StoreConfig, StreamId, SyncMode, SyncStore,
};

const SEGMENT_BYTES: u64 = 1 << 30;
/// Bytes a 64 KiB store round writes at most: it stays inside its first segment.
const STORE_ROUND_BYTES: u64 = 900 << 20;
const RECOVERY_CHUNK_BYTES: usize = 8 << 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct StoreRun {
    bytes: u64,
    appends: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    data_syncs: u64,
    groups: u64,
    data_sync_micros: u64,
    group_write_micros: u64,
    /// Share of one core the IO thread used (user + system).
    io_thread_cpu: f64,
}

impl StoreRun {
    fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64()
    }
    fn appends_per_second(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

fn store_config(path: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(path);
    config.segment_size_bytes = SEGMENT_BYTES;
    config.preallocated_segments = 1;
    // The segments the rounds write into are written through before use, as the baseline's
    // file is: this measures the steady state (recycled segments), not the first pass over
    // allocated extents, whose conversion at every data sync costs a journal commit.
    config.prewrite = PrewriteMode::Always;
    config.sync = SyncMode::Always;
    config.max_group_bytes = 4 << 20;
    config.worker_queue_capacity = 2048;
    config.checkpoint_interval_ms = 3_600_000;
    // The block cache and the workers' tail caches as this benchmark has always measured them.
    config.cache_size_bytes = 256 << 20;
    // `WAL_BENCH_IOPOLL=1`: WAL writes on the polled ring, forced where the device has no poll
    // queues (the IO thread then spins while writes are in flight).
    if env_or("WAL_BENCH_IOPOLL", 0) != 0 {
        config.uring.iopoll = true;
        config.faults.iopoll_without_poll_queues = true;
    }
    // As a data node is deployed: the IO thread on a core of its own, the client (the
    // worker's part) on the other; see `pin_client`.
    if pinned() {
        config.io_thread_cpu = Some(env_or("WAL_BENCH_IO_CPU", 0));
    }
    config
}

/// User + system CPU ticks of this process's threads named `name`, from /proc.
fn thread_cpu_ticks(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut ticks = 0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3; utime and stime are 14 and 15.
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |index: usize| fields.get(index - 3).and_then(|v| v.parse::<u64>().ok());
        ticks += field(14).unwrap_or(0) + field(15).unwrap_or(0);
    }
    ticks
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: plain query without pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Pin the threads (the default on two or more CPUs); `WAL_BENCH_PIN=0` leaves placement to
/// the scheduler.
fn pinned() -> bool {
    cpu_count() >= 2 && env_or("WAL_BENCH_PIN", 1) != 0
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |count| count.get())
}

/// Pins the calling thread, which runs the store's client and the raw baselines, to CPU 1
/// (`WAL_BENCH_CLIENT_CPU`); the IO thread takes CPU 0 (`WAL_BENCH_IO_CPU`). On the VM this was
/// measured on, the disk's interrupts land on CPU 1, which favours the raw baseline, submitted
/// from that CPU; with the IO thread there instead, store rounds fell to about 1 GB/s now and
/// then (see docs/benchmark-store.md).
fn pin_client() {
    if pinned() {
        if let Err(error) = runtime::thread::pin_current_thread(env_or("WAL_BENCH_CLIENT_CPU", 1)) {
            eprintln!("cannot pin the client thread: {error}");
        }
    }
}

/// Opens a fresh store and waits until the segment after the first is written through, so no
/// background preparation competes with the measurement.
fn open_ready(path: &Path) -> (Store, SyncStore) {
    let _ = std::fs::remove_dir_all(path);
    let (store, wal) = Store::open_sync(store_config(path)).expect("open store");
    while store.stats().segment_count < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    (store, wal)
}

/// Keeps `in_flight` appends of `batch_bytes` outstanding, spread over `ranges` ranges, for
/// `duration` or until `max_bytes` were appended.
fn run_store(
    store: &Store,
    wal: &mut SyncStore,
    batch_bytes: usize,
    ranges: u64,
    in_flight: usize,
    duration: Duration,
    max_bytes: u64,
) -> StoreRun {
    let payload = Bytes::from(
        (0..batch_bytes)
            .map(|at| (at as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect::<Vec<u8>>(),
    );
    let mut next_offset = vec![0u64; ranges as usize];
    let mut submitted_at = HashMap::new();
    let mut latency_us = new_histogram();
    let before = store.stats();
    let io_cpu_before = thread_cpu_ticks("store-io");
    let started = Instant::now();
    let mut turn = 0u64;
    let mut bytes = 0u64;
    let mut appends = 0u64;
    let mut submitting = true;
    loop {
        while submitting && wal.in_flight() < in_flight {
            let range = turn % ranges;
            turn += 1;
            let key = RangeKey::new(StreamId(range), RangeIndex(0));
            let base = next_offset[range as usize];
            let ticket = wal
                .submit_append(key, store::Offset(base), 1, payload.clone())
                .expect("submit append");
            next_offset[range as usize] += 1;
            submitted_at.insert(ticket, Instant::now());
        }
        let Some((ticket, result)) = wal.next_completed(None) else {
            break;
        };
        result.expect("append");
        if let Some(at) = submitted_at.remove(&ticket) {
            latency_us.saturating_record(at.elapsed().as_micros().max(1) as u64);
        }
        appends += 1;
        bytes += batch_bytes as u64;
        if started.elapsed() >= duration || bytes >= max_bytes {
            submitting = false;
        }
        if !submitting && wal.in_flight() == 0 {
            break;
        }
    }
    let elapsed = started.elapsed();
    let io_cpu_ticks = thread_cpu_ticks("store-io").saturating_sub(io_cpu_before);
    let after = store.stats();
    StoreRun {
        io_thread_cpu: io_cpu_ticks as f64 / clock_ticks_per_second() / elapsed.as_secs_f64(),
        bytes,
        appends,
        elapsed,
        latency_us,
        data_syncs: after.data_syncs - before.data_syncs,
        data_sync_micros: after.data_sync_micros - before.data_sync_micros,
        group_write_micros: after.group_write_micros - before.group_write_micros,
        groups: after.groups - before.groups,
    }
}

/// Raw baseline with the store's memory pattern: `queue_depth` O_DIRECT writes of
/// `write_bytes`, each from its own slice of one buffer (distinct data, as the store writes),
/// submitted together through io_uring, then one `fdatasync`; repeat for `duration` over a
/// written-through file of `file_bytes`. Returns (bytes written, elapsed, per-write latency).
fn raw_distinct(
    directory: &Path,
    write_bytes: usize,
    queue_depth: usize,
    file_bytes: u64,
    duration: Duration,
    max_bytes: u64,
) -> (u64, Duration, Histogram<u64>) {
    use io_uring::{opcode, types, IoUring};
    use std::os::fd::AsRawFd;
    let group_bytes = write_bytes * queue_depth;
    let layout = std::alloc::Layout::from_size_align(group_bytes, 4096).expect("layout");
    // SAFETY: non-zero size; freed below with the same layout after every write completed.
    let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!pointer.is_null());
    // SAFETY: `pointer` owns `group_bytes` initialised bytes until the dealloc below.
    let buffer = unsafe { std::slice::from_raw_parts_mut(pointer, group_bytes) };
    for (at, byte) in buffer.iter_mut().enumerate() {
        *byte = (at as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    let path = directory.join(format!("raw-distinct-{}.dat", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("raw file");
    let file_bytes = file_bytes / group_bytes as u64 * group_bytes as u64;
    {
        use std::os::unix::fs::FileExt;
        let mut offset = 0;
        while offset < file_bytes {
            file.write_all_at(buffer, offset).expect("write through");
            offset += group_bytes as u64;
        }
        file.sync_all().expect("sync");
    }
    settle();
    let mut ring = IoUring::new(256).expect("ring");
    let fd = types::Fd(file.as_raw_fd());
    let mut latency_us = new_histogram();
    let mut written = 0u64;
    let mut offset = 0u64;
    let started = Instant::now();
    while started.elapsed() < duration && written < max_bytes {
        let group_started = Instant::now();
        for n in 0..queue_depth {
            let write = opcode::Write::new(
                fd,
                buffer[n * write_bytes..].as_mut_ptr(),
                write_bytes as u32,
            )
            .offset(offset + (n * write_bytes) as u64)
            .build();
            // SAFETY: `buffer` outlives the group: every completion is reaped below.
            unsafe { ring.submission().push(&write) }.expect("submission queue");
        }
        let mut seen = 0;
        while seen < queue_depth {
            ring.submit_and_wait(queue_depth - seen).expect("submit");
            for entry in ring.completion() {
                assert_eq!(entry.result(), write_bytes as i32, "raw write");
                seen += 1;
            }
        }
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: no buffers.
        unsafe { ring.submission().push(&sync) }.expect("submission queue");
        ring.submit_and_wait(1).expect("submit");
        for entry in ring.completion() {
            assert!(entry.result() >= 0, "raw fdatasync");
        }
        let elapsed_us = group_started.elapsed().as_micros().max(1) as u64;
        for _ in 0..queue_depth {
            latency_us.saturating_record(elapsed_us);
        }
        written += group_bytes as u64;
        offset = (offset + group_bytes as u64) % file_bytes;
    }
    let elapsed = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    // SAFETY: allocated above with this layout; all writes completed.
    unsafe { std::alloc::dealloc(pointer, layout) };
    (written, elapsed, latency_us)
}

/// Lets the file system finish what setting up the last run left behind (freed extents, the
/// journal, write-back), so it does not land in the next measurement. Called before every run,
/// raw and store alike.
/// `sync`, then a pause (`WAL_BENCH_SETTLE_MS`, default 500) so that earlier writes do not
/// spill into the next measurement.
fn settle() {
    // SAFETY: plain syscall without arguments.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(env_or("WAL_BENCH_SETTLE_MS", 500)));
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn latency_cells(histogram: &Histogram<u64>) -> String {
    let summary = LatencySummary::of(histogram);
    format!(
        "{} | {} | {}",
        format_us(summary.p50_us),
        format_us(summary.p90_us),
        format_us(summary.p99_us)
    )
}

/// Sequential O_DIRECT reads of `total_bytes` of `path` in `chunk_bytes`, one at a time.
fn raw_sequential_read(path: &Path, chunk_bytes: usize, total_bytes: u64) -> Duration {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .expect("open segment for the read baseline");
    let layout = std::alloc::Layout::from_size_align(chunk_bytes, 4096).expect("layout");
    // SAFETY: non-zero size; freed below with the same layout.
    let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!pointer.is_null());
    // SAFETY: `pointer` owns `chunk_bytes` initialised bytes until the dealloc below.
    let buffer = unsafe { std::slice::from_raw_parts_mut(pointer, chunk_bytes) };
    let started = Instant::now();
    let mut offset = 0u64;
    while offset < total_bytes {
        let got = file.read_at(buffer, offset).expect("read");
        if got == 0 {
            break;
        }
        offset += got as u64;
    }
    let elapsed = started.elapsed();
    // SAFETY: allocated above with this layout; the synchronous reads are done.
    unsafe { std::alloc::dealloc(pointer, layout) };
    elapsed
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let seconds: f64 = env_or("WAL_BENCH_SECONDS", 3.0);
    let rounds: usize = env_or("WAL_BENCH_ROUNDS", 3);
    let depth: usize = env_or("WAL_BENCH_DEPTH", 32);
    let base: PathBuf = std::env::var("WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let directory = base.join(format!("wal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("bench directory");
    let only = std::env::var("WAL_BENCH_ONLY").unwrap_or_default();
    let duration = Duration::from_secs_f64(seconds);
    pin_client();
    let probe = HiccupProbe::start(None).expect("hiccup probe");

    println!(
        "# WAL benchmark ({rounds} rounds of {seconds} s, directory {})",
        directory.display()
    );
    if only.is_empty() || only == "64k" {
        large_batches(&directory, rounds, depth, duration);
    }
    if only.is_empty() || only == "1k" {
        small_batches(&directory, rounds, duration);
    }

    let stalls = probe.stop();
    println!();
    println!(
        "machine stalls during the run (1 ms sleep overshoot): p50 {} p90 {} p99 {} max {}",
        format_us(stalls.value_at_quantile(0.5)),
        format_us(stalls.value_at_quantile(0.9)),
        format_us(stalls.value_at_quantile(0.99)),
        format_us(stalls.max())
    );
    let _ = std::fs::remove_dir_all(&directory);
}

/// 64 KiB batches against the raw disk, then the recovery scan of the last round's log.
fn large_batches(directory: &Path, rounds: usize, depth: usize, duration: Duration) {
    println!();
    println!("## 64 KiB batches, sync always, {depth} appends in flight");
    println!();
    println!("| round | raw, one 64 KiB buffer | raw, distinct buffers | raw, fresh file | store | store / raw | store / raw distinct | store / raw fresh | raw p50 | p90 | p99 | distinct p50 | p90 | p99 | fresh p50 | p90 | p99 | store p50 | p90 | p99 | appends per sync | appends per group write | mean data sync | mean group write | IO thread CPU |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let mut distinct_ratios = Vec::new();
    let mut fresh_ratios = Vec::new();
    let store_path = directory.join("store");
    let mut last_store_bytes = 0;
    // The baselines' file, written through before each run and rewritten in a loop.
    let raw_file_bytes: u64 = env_or("WAL_BENCH_RAW_FILE_MIB", 512u64) << 20;
    for round in 0..rounds {
        settle();
        let raw = raw_disk::run(
            directory,
            &RawDiskOptions {
                block_size_bytes: 64 << 10,
                queue_depth: depth,
                file_size_bytes: raw_file_bytes,
                duration,
            },
        )
        .expect("raw baseline");
        let raw_rate = raw.bytes_written as f64 / raw.elapsed.as_secs_f64();
        settle();
        let (distinct_bytes, distinct_elapsed, distinct_latency) = raw_distinct(
            directory,
            64 << 10,
            depth,
            raw_file_bytes,
            duration,
            u64::MAX,
        );
        let distinct_rate = distinct_bytes as f64 / distinct_elapsed.as_secs_f64();
        settle();
        // The store's footprint: a fresh file of one segment written through, then one pass of
        // at most the bytes a store round writes (the loops above rewrite a smaller file).
        let (fresh_bytes, fresh_elapsed, fresh_latency) = raw_distinct(
            directory,
            64 << 10,
            depth,
            SEGMENT_BYTES,
            duration,
            STORE_ROUND_BYTES,
        );
        let fresh_rate = fresh_bytes as f64 / fresh_elapsed.as_secs_f64();
        let (store, mut wal) = open_ready(&store_path);
        settle();
        // Stay inside the first segment: no segment switch in the measurement.
        let run = run_store(
            &store,
            &mut wal,
            64 << 10,
            depth as u64,
            depth,
            duration,
            STORE_ROUND_BYTES,
        );
        let ratio = run.bytes_per_second() / raw_rate;
        let distinct_ratio = run.bytes_per_second() / distinct_rate;
        let fresh_ratio = run.bytes_per_second() / fresh_rate;
        ratios.push(ratio);
        distinct_ratios.push(distinct_ratio);
        fresh_ratios.push(fresh_ratio);
        println!(
            "| {round} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.1} | {:.1} | {}us | {}us | {:.0} % |",
            format_rate(raw_rate),
            format_rate(distinct_rate),
            format_rate(fresh_rate),
            format_rate(run.bytes_per_second()),
            ratio,
            distinct_ratio,
            fresh_ratio,
            latency_cells(&raw.write_latency_us),
            latency_cells(&distinct_latency),
            latency_cells(&fresh_latency),
            latency_cells(&run.latency_us),
            run.appends as f64 / run.data_syncs.max(1) as f64,
            run.appends as f64 / run.groups.max(1) as f64,
            run.data_sync_micros / run.data_syncs.max(1),
            run.group_write_micros / run.groups.max(1),
            run.io_thread_cpu * 100.0
        );
        last_store_bytes = run.bytes;
        if round + 1 == rounds {
            // Leave the log for the recovery scan: stop without a checkpoint.
            store.halt();
        } else {
            store.shutdown();
        }
    }
    println!();
    println!(
        "median store / raw throughput: {:.2} against one shared 64 KiB buffer, {:.2} against \
         distinct buffers, {:.2} against a fresh file (target >= 0.80)",
        median(&mut ratios),
        median(&mut distinct_ratios),
        median(&mut fresh_ratios)
    );

    println!();
    println!(
        "## Recovery scan of {} MiB after an unclean stop",
        last_store_bytes >> 20
    );
    println!();
    let segment = store_path.join("wal").join(format!("{:016x}.wal", 0));
    let (store, _wal) = Store::open_sync(store_config(&store_path)).expect("reopen");
    let report = store.recovery().clone();
    store.shutdown();
    let raw_read = raw_sequential_read(&segment, RECOVERY_CHUNK_BYTES, report.wal_bytes_read);
    let scan_rate = report.wal_bytes_read as f64 / report.duration.as_secs_f64();
    let read_rate = report.wal_bytes_read as f64 / raw_read.as_secs_f64();
    println!(
        "| WAL bytes scanned | records | recovery | scan speed | raw O_DIRECT read | store / raw |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} MiB | {} | {:.0} ms | {} | {} | {:.2} |",
        report.wal_bytes_read >> 20,
        report.records_replayed,
        report.duration.as_secs_f64() * 1e3,
        format_rate(scan_rate),
        format_rate(read_rate),
        scan_rate / read_rate
    );
}

/// 1 KiB batches over 1,000 ranges against one 4 KiB write + fdatasync at a time.
fn small_batches(directory: &Path, rounds: usize, duration: Duration) {
    let store_path = directory.join("store");
    println!();
    println!("## 1 KiB batches over 1,000 ranges, sync always, 1,024 appends in flight");
    println!();
    println!("| round | raw 4 KiB write+fdatasync, one at a time | store appends/s | store / raw | appends per data sync | store p50 | p90 | p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut rates = Vec::new();
    for round in 0..rounds {
        let raw = raw_disk::run(
            directory,
            &RawDiskOptions {
                block_size_bytes: 4096,
                queue_depth: 1,
                file_size_bytes: 64 << 20,
                duration,
            },
        )
        .expect("raw baseline");
        let raw_rate = raw.groups as f64 / raw.elapsed.as_secs_f64();
        let (store, mut wal) = open_ready(&store_path);
        settle();
        let run = run_store(&store, &mut wal, 1024, 1000, 1024, duration, 900 << 20);
        rates.push(run.appends_per_second());
        println!(
            "| {round} | {:.0}/s | {:.0}/s | {:.1} | {:.1} | {} |",
            raw_rate,
            run.appends_per_second(),
            run.appends_per_second() / raw_rate,
            run.appends as f64 / run.data_syncs.max(1) as f64,
            latency_cells(&run.latency_us)
        );
        debug_assert!(run.groups >= run.data_syncs);
        store.shutdown();
    }
    println!();
    println!(
        "median durable 1 KiB appends/s: {:.0} (target >= 50,000)",
        median(&mut rates)
    );
}
