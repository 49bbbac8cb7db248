//! Segment preparation modes: with `prewrite: idle` a store under continuous appends uses new
//! segments as allocated (never written through) and still recovers every acknowledged batch
//! after a halt; with `prewrite: always` every new segment is written through first.

mod common;

use std::collections::BTreeMap;

use common::{batch, small_config};
use store::{PrewriteMode, RangeIndex, RangeKey, Store, StoreConfig, StreamId, SyncMode};

const RANGES: u64 = 4;
/// Appends kept outstanding. Deep enough (about 2 MiB, two segments) that the IO thread always
/// has appends staged or in flight, however the test thread is scheduled: with `prewrite: idle`
/// it then never finds an idle moment to write a segment through.
const IN_FLIGHT: usize = 240;
/// Payload appended per run: about eight 1 MiB segments.
const TARGET_BYTES: usize = 8 << 20;

fn batch_len(stream: u64, base: u64) -> usize {
    4096 + ((base.wrapping_mul(7919) ^ stream.wrapping_mul(104_729)) % 8192) as usize
}

/// Appends with `IN_FLIGHT` batches always outstanding until `TARGET_BYTES` are acknowledged;
/// returns the acknowledged (stream, base) -> len and the store, still running.
fn append_under_load(config: StoreConfig) -> (Store, BTreeMap<(u64, u64), usize>) {
    let (store, mut wal) = Store::open_sync(config).expect("open");
    let mut next = [0u64; RANGES as usize];
    let mut submitted = BTreeMap::new();
    let mut acknowledged = BTreeMap::new();
    let mut acknowledged_bytes = 0;
    let mut turn = 0u64;
    while acknowledged_bytes < TARGET_BYTES {
        while wal.in_flight() < IN_FLIGHT {
            let stream = turn % RANGES;
            turn += 1;
            let range = RangeKey::new(StreamId(stream), RangeIndex(0));
            let base = next[stream as usize];
            let len = batch_len(stream, base);
            let count = (len / 100) as u32;
            let ticket = wal
                .submit_append(range, store::Offset(base), count, batch(range, base, len))
                .expect("submit");
            next[stream as usize] += count as u64;
            submitted.insert(ticket, (stream, base, len));
        }
        if let Some((ticket, result)) = wal.next_completed(None) {
            let (stream, base, len) = submitted.remove(&ticket).expect("known ticket");
            result.expect("append");
            acknowledged.insert((stream, base), len);
            acknowledged_bytes += len;
        }
    }
    // What is still in flight when the store halts may or may not survive; only the
    // acknowledged batches are checked.
    (store, acknowledged)
}

fn check_recovered(config: StoreConfig, acknowledged: &BTreeMap<(u64, u64), usize>) {
    let (store, mut wal) = Store::open_sync(config).expect("reopen");
    assert!(!store.recovery().clean, "a halt must look like a crash");
    for (&(stream, base), &len) in acknowledged {
        let range = RangeKey::new(StreamId(stream), RangeIndex(0));
        let batches = wal.read(range, store::Offset(base), 1).expect("read");
        assert_eq!(
            batches.first(),
            Some(&batch(range, base, len)),
            "acknowledged batch {stream}/{base} lost or changed"
        );
    }
    // The log continues after recovery.
    let range = RangeKey::new(StreamId(0), RangeIndex(0));
    let next = wal.index(range).map_or(0, |summary| summary.next_offset.0);
    wal.append(range, store::Offset(next), 1, batch(range, next, 100))
        .expect("append after recovery");
    store.shutdown();
}

#[test]
fn idle_mode_uses_unwritten_segments_under_load_and_recovers_after_halt() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    config.sync = SyncMode::Always;
    config.prewrite = PrewriteMode::Idle;
    let (store, acknowledged) = append_under_load(config.clone());
    let stats = store.stats();
    assert!(
        stats.durable_position > 6 * config.segment_size_bytes,
        "the run crossed too few segments: {stats:?}"
    );
    assert!(
        stats.segments_used_unwritten >= 3,
        "continuous appends should have used new segments as allocated: {stats:?}"
    );
    store.halt();
    check_recovered(config, &acknowledged);
}

#[test]
fn always_mode_writes_every_new_segment_through() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    config.sync = SyncMode::Always;
    config.prewrite = PrewriteMode::Always;
    let (store, acknowledged) = append_under_load(config.clone());
    let stats = store.stats();
    assert_eq!(stats.segments_used_unwritten, 0, "{stats:?}");
    assert!(stats.segments_written_through >= 6, "{stats:?}");
    store.halt();
    check_recovered(config, &acknowledged);
}
