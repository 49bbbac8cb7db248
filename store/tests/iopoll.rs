//! Polled I/O (`uring.iopoll`): WAL writes and block reads on a second ring set up with IOPOLL.
//!
//! The test machine's disk has no poll queues, so the polled ring is forced with
//! `faults.iopoll_without_poll_queues`: the kernel completes the I/O by interrupt and the IO thread
//! reaps it by polling, which exercises the same code path a polling NVMe device would.

mod common;

use std::collections::BTreeMap;

use common::{batch, count_for, read_all, small_config};
use store::{RangeIndex, RangeKey, Store, StoreConfig, StreamId, SyncMode};

const RANGES: u64 = 3;

fn polled_config(path: &std::path::Path) -> StoreConfig {
    let mut config = small_config(path);
    config.sync = SyncMode::Always;
    config.uring.iopoll = true;
    config.faults.iopoll_without_poll_queues = true;
    // Reads after the restart must come from the disk, not from memory.
    config.cache_size_bytes = 256 << 10;
    config
}

#[test]
fn polled_ring_carries_writes_and_reads_across_segments_and_restarts() {
    let directory = tempfile::tempdir().unwrap();
    let config = polled_config(directory.path());
    let mut expected: BTreeMap<u64, Vec<bytes::Bytes>> = BTreeMap::new();
    let mut next = [0u64; RANGES as usize];
    {
        let (store, mut wal) = Store::open_sync(config.clone()).expect("open");
        // About 3 MiB over 1 MiB segments, with up to 24 appends in flight.
        let mut submitted = BTreeMap::new();
        let mut turn = 0u64;
        while turn < 400 || !submitted.is_empty() {
            while turn < 400 && wal.in_flight() < 24 {
                let stream = turn % RANGES;
                let range = RangeKey::new(StreamId(stream), RangeIndex(0));
                let len = 1000 + (turn as usize * 7919) % 14_000;
                let base = next[stream as usize];
                let data = batch(range, base, len);
                let count = count_for(len);
                let ticket = wal
                    .submit_append(range, store::Offset(base), count, data.clone())
                    .expect("submit");
                next[stream as usize] += count as u64;
                expected.entry(stream).or_default().push(data);
                submitted.insert(ticket, stream);
                turn += 1;
            }
            let (ticket, result) = wal.next_completed(None).expect("completion");
            submitted.remove(&ticket).expect("known ticket");
            result.expect("append");
        }
        let stats = store.stats();
        assert!(
            stats.polled_writes,
            "WAL writes should go through the polled ring: {stats:?}"
        );
        assert!(
            stats.durable_position > 2 * config.segment_size_bytes,
            "the run should cross segments: {stats:?}"
        );
        assert!(
            stats.polled_completions >= stats.groups,
            "every group write should complete on the polled ring: {stats:?}"
        );
        store.halt();
    }
    // Unclean restart: recovery scans the log the polled writes left, then reads go to the disk
    // through the polled ring.
    let (store, mut wal) = Store::open_sync(config.clone()).expect("reopen");
    assert!(!store.recovery().clean);
    for stream in 0..RANGES {
        let range = RangeKey::new(StreamId(stream), RangeIndex(0));
        let read = read_all(&mut wal, range);
        assert!(
            read == expected[&stream],
            "range {stream} after the restart: {} batches read back, {} appended, first \
             difference at batch {:?}",
            read.len(),
            expected[&stream].len(),
            read.iter()
                .zip(&expected[&stream])
                .position(|(read, expected)| read != expected)
        );
    }
    let stats = store.stats();
    assert!(stats.disk_reads > 0, "{stats:?}");
    if stats.polled_reads {
        assert!(
            stats.polled_completions >= stats.disk_reads,
            "block reads should complete on the polled ring: {stats:?}"
        );
    } else {
        // The kernel refuses polled reads from a device without poll queues (EOPNOTSUPP): the
        // start-up probe found that, and reads went by interrupt instead.
        assert_eq!(stats.polled_completions, 0, "{stats:?}");
    }
    // And the log goes on.
    let range = RangeKey::new(StreamId(0), RangeIndex(0));
    let base = next[0];
    wal.append(
        range,
        store::Offset(base),
        count_for(5000),
        batch(range, base, 5000),
    )
    .expect("append after the restart");
    store.shutdown();
}

#[test]
fn iopoll_on_a_device_without_poll_queues_falls_back_to_interrupts() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = polled_config(directory.path());
    config.faults.iopoll_without_poll_queues = false;
    let polls = device_polls(directory.path());
    let (store, mut wal) = Store::open_sync(config).expect("open");
    let range = RangeKey::new(StreamId(9), RangeIndex(0));
    for base in 0..20 {
        wal.append(
            range,
            store::Offset(base * 30),
            30,
            batch(range, base * 30, 3000),
        )
        .expect("append");
    }
    let stats = store.stats();
    if polls == Some(false) {
        assert_eq!(
            stats.polled_completions, 0,
            "no polled ring without poll queues: {stats:?}"
        );
        assert!(!stats.polled_writes && !stats.polled_reads, "{stats:?}");
    }
    assert_eq!(stats.appends, 20);
    store.shutdown();
}

/// What sysfs says about the poll queues of the device holding `path`.
fn device_polls(path: &std::path::Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(path).ok()?.dev();
    let base = format!(
        "/sys/dev/block/{}:{}",
        libc_major(device),
        libc_minor(device)
    );
    let value = std::fs::read_to_string(format!("{base}/queue/io_poll"))
        .or_else(|_| std::fs::read_to_string(format!("{base}/../queue/io_poll")))
        .ok()?;
    Some(value.trim() == "1")
}

fn libc_major(device: u64) -> u64 {
    ((device >> 32) & 0xffff_f000) | ((device >> 8) & 0x0000_0fff)
}

fn libc_minor(device: u64) -> u64 {
    ((device >> 12) & 0xffff_ff00) | (device & 0x0000_00ff)
}
