//! Sustained appends with `prewrite: always` and `prewrite: idle`, next to a raw baseline in
//! the same run: 64 KiB batches for a few seconds with 64 MiB segments, printing MB/s and the
//! bytes the process wrote to disk (`/proc/self/io` write_bytes) per payload byte.
//!
//! ```text
//! cargo run --release -p store --example prewrite_io -- [seconds] [directory]
//! ```
//!
//! The baseline writes the same 64 KiB blocks with plain O_DIRECT `pwrite`s into a file
//! written through beforehand, one `fdatasync` per 1 MiB: what one thread gets from the disk
//! without the store.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use store::{PrewriteMode, RangeIndex, RangeKey, Store, StoreConfig, StreamId};

const BATCH_BYTES: usize = 64 << 10;
const SEGMENT_BYTES: u64 = 64 << 20;
const IN_FLIGHT: usize = 64;
const RANGES: u64 = 8;

fn write_bytes() -> u64 {
    let text = fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    text.lines()
        .find_map(|line| line.strip_prefix("write_bytes: "))
        .and_then(|value| value.trim().parse().ok())
        .expect("write_bytes in /proc/self/io")
}

struct Run {
    payload: u64,
    disk: u64,
    elapsed: Duration,
}

impl Run {
    fn print(&self, name: &str, baseline: Option<&Run>) {
        let mbps = self.payload as f64 / self.elapsed.as_secs_f64() / 1e6;
        let ratio = baseline.map_or(String::new(), |base| {
            let base_mbps = base.payload as f64 / base.elapsed.as_secs_f64() / 1e6;
            format!(", {:.2}x baseline", mbps / base_mbps)
        });
        println!(
            "{name:<16} {mbps:8.1} MB/s payload{ratio}, {:.2} disk bytes per payload byte \
             ({} MiB payload, {} MiB written, {:.2} s)",
            self.disk as f64 / self.payload as f64,
            self.payload >> 20,
            self.disk >> 20,
            self.elapsed.as_secs_f64()
        );
    }
}

#[repr(align(4096))]
struct Block([u8; BATCH_BYTES]);

fn raw_baseline(directory: &Path, duration: Duration) -> Run {
    let path = directory.join("raw");
    let size: u64 = 4 << 30;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("open raw file");
    let mut block = Box::new(Block([0xA5; BATCH_BYTES]));
    let pwrite = |block: &Block, offset: u64| {
        // SAFETY: `block` is a live, aligned buffer of BATCH_BYTES for the whole call.
        let result = unsafe {
            libc::pwrite(
                file.as_raw_fd(),
                block.0.as_ptr().cast(),
                BATCH_BYTES,
                offset as libc::off_t,
            )
        };
        assert_eq!(result, BATCH_BYTES as isize, "raw pwrite");
    };
    // Written through beforehand, like a recycled segment, and not counted.
    let mut offset = 0;
    while offset < size {
        pwrite(&block, offset);
        offset += BATCH_BYTES as u64;
    }
    file.sync_all().expect("fsync");
    block.0.fill(0x5A);
    let before = write_bytes();
    let started = Instant::now();
    let mut offset = 0;
    while started.elapsed() < duration && offset < size {
        pwrite(&block, offset);
        offset += BATCH_BYTES as u64;
        if offset % (1 << 20) == 0 {
            file.sync_data().expect("fdatasync");
        }
    }
    file.sync_data().expect("fdatasync");
    let run = Run {
        payload: offset,
        disk: write_bytes() - before,
        elapsed: started.elapsed(),
    };
    drop(file);
    fs::remove_file(&path).expect("remove raw file");
    run
}

fn store_run(directory: &Path, mode: PrewriteMode, duration: Duration) -> Run {
    let path = directory.join(format!("{mode:?}"));
    let mut config = StoreConfig::new(&path);
    config.segment_size_bytes = SEGMENT_BYTES;
    config.prewrite = mode;
    fs::create_dir_all(&path).expect("create store directory");
    let before = write_bytes();
    let started = Instant::now();
    let (store, mut wal) = Store::open_sync(config).expect("open store");
    let payload = Bytes::from(vec![0x5A; BATCH_BYTES]);
    let mut next = [0u64; RANGES as usize];
    let mut submitted = HashMap::new();
    let mut acknowledged = 0u64;
    let mut turn = 0u64;
    while started.elapsed() < duration {
        while wal.in_flight() < IN_FLIGHT {
            let stream = turn % RANGES;
            turn += 1;
            let ticket = wal
                .submit_append(
                    RangeKey::new(StreamId(stream), RangeIndex(0)),
                    store::Offset(next[stream as usize]),
                    1,
                    payload.clone(),
                )
                .expect("submit");
            next[stream as usize] += 1;
            submitted.insert(ticket, ());
        }
        if let Some((ticket, result)) = wal.next_completed(None) {
            submitted.remove(&ticket);
            result.expect("append");
            acknowledged += BATCH_BYTES as u64;
        }
    }
    let elapsed = started.elapsed();
    let disk = write_bytes() - before;
    let stats = store.stats();
    store.halt();
    drop(wal);
    println!(
        "  {mode:?}: {} segments written through, {} used unwritten, {} data syncs",
        stats.segments_written_through, stats.segments_used_unwritten, stats.data_syncs
    );
    fs::remove_dir_all(&path).expect("remove store directory");
    Run {
        payload: acknowledged,
        disk,
        elapsed,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args
        .next()
        .map_or(3.0, |text| text.parse().expect("seconds"));
    let parent = args.next().unwrap_or_else(|| "/work".to_string());
    let directory = tempfile::tempdir_in(parent).expect("temporary directory");
    let duration = Duration::from_secs_f64(seconds);
    println!(
        "{} KiB batches, {} MiB segments, {IN_FLIGHT} in flight, {seconds} s per run",
        BATCH_BYTES >> 10,
        SEGMENT_BYTES >> 20
    );
    std::io::stdout().flush().ok();
    let baseline = raw_baseline(directory.path(), duration);
    baseline.print("raw baseline", None);
    let always = store_run(directory.path(), PrewriteMode::Always, duration);
    always.print("prewrite always", Some(&baseline));
    let idle = store_run(directory.path(), PrewriteMode::Idle, duration);
    idle.print("prewrite idle", Some(&baseline));
}
