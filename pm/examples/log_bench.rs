//! Group commit of the command log, measured: 64 threads each append a 64-byte record and wait
//! for it to be durable, in a loop, for 3 s. Printed next to the cost of a lone fdatasync on
//! the same directory, measured in the same run (write 64 bytes + fdatasync, in a loop).
//!
//! ```text
//! cargo run --release -p pm --example log_bench [directory]   # default: a temporary directory
//! ```

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pm::command_log::{CommandLog, LogOptions};

const THREADS: usize = 64;
const RECORD_BYTES: usize = 64;
const RUN: Duration = Duration::from_secs(3);
const BASELINE_RUN: Duration = Duration::from_secs(1);

fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| ".".to_string());
    let directory = tempfile::tempdir_in(&base).expect("temporary directory");
    println!(
        "command log benchmark in {} ({THREADS} threads, {RECORD_BYTES}-byte records)",
        directory.path().display()
    );

    let baseline_before = baseline(directory.path(), "before");
    let log_directory = directory.path().join("log");
    let (log, _) = CommandLog::open(&log_directory, LogOptions::default()).expect("open");
    let stop = AtomicBool::new(false);
    let appended = AtomicU64::new(0);
    let busy = AtomicU64::new(0);
    let before = log.stats();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (log, stop, appended, busy) = (&log, &stop, &appended, &busy);
            scope.spawn(move || {
                let mut record = vec![thread as u8; RECORD_BYTES];
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    record[..8].copy_from_slice(&sequence.to_le_bytes());
                    match log.append(record.clone()) {
                        Ok((_, ticket)) => {
                            ticket.wait().expect("durable");
                            appended.fetch_add(1, Ordering::Relaxed);
                            sequence += 1;
                        }
                        Err(error) if error.is_retriable() => {
                            busy.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                        }
                        Err(error) => panic!("append: {error}"),
                    }
                }
            });
        }
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
    });
    let seconds = started.elapsed().as_secs_f64();
    let stats = log.stats();
    let records = appended.load(Ordering::Relaxed);
    let data_syncs = stats.data_syncs - before.data_syncs;
    let rate = records as f64 / seconds;
    println!(
        "command log, {THREADS} threads: {records} durable appends in {seconds:.2} s = \
         {rate:.0}/s; {data_syncs} fdatasyncs ({:.0}/s), {:.1} records per sync; \
         {} busy refusals",
        data_syncs as f64 / seconds,
        stats.records_written as f64 / data_syncs.max(1) as f64,
        busy.load(Ordering::Relaxed)
    );
    log.close().expect("close");
    let baseline_after = baseline(directory.path(), "after");
    let baseline_rate = (baseline_before + baseline_after) / 2.0;
    println!(
        "durable appends/s vs raw fdatasyncs/s (mean of before and after): {:.1} x",
        rate / baseline_rate
    );
}

/// One writer, one 64-byte write + fdatasync after another, appending to a new file (so each
/// sync also commits a size change, as the log's do). Returns syncs per second.
fn baseline(directory: &Path, when: &str) -> f64 {
    let path = directory.join("baseline");
    let file = fs::File::create(&path).expect("baseline file");
    let record = [0x5Au8; RECORD_BYTES];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < BASELINE_RUN {
        file.write_all_at(&record, syncs * RECORD_BYTES as u64)
            .expect("baseline write");
        file.sync_data().expect("baseline fdatasync");
        syncs += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(&path).ok();
    let rate = syncs as f64 / seconds;
    println!(
        "raw write {RECORD_BYTES} B + fdatasync ({when}): {syncs} in {seconds:.2} s = \
         {rate:.0}/s, {:.1} us each",
        1e6 / rate
    );
    rate
}
