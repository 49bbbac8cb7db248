//! Group commit under pressure: far more appends outstanding than the IO thread may have in
//! flight (bytes in flight, groups in flight, group size) must all complete, in order per range,
//! and survive a restart. A stall fails the test after a bounded wait instead of hanging it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{batch, count_for, read_all, small_config};
use store::{RangeIndex, RangeKey, Store, StreamId, SyncMode};

/// Longest wait for one completion before the test calls it a stall.
const STALL: Duration = Duration::from_secs(20);

#[test]
fn appends_far_beyond_the_in_flight_limits_all_complete() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    config.sync = SyncMode::Always;
    // 64 KiB groups: at most 128 KiB in flight, while the client keeps about 3 MiB outstanding.
    config.max_group_bytes = 64 << 10;
    config.segment_size_bytes = 4 << 20;
    let ranges = 5u64;
    let (store, mut wal) = Store::open_sync(config.clone()).expect("open");
    let mut next = vec![0u64; ranges as usize];
    let mut expected: BTreeMap<u64, Vec<bytes::Bytes>> = BTreeMap::new();
    let mut outstanding = BTreeMap::new();
    let mut acknowledged_at: BTreeMap<u64, u64> = BTreeMap::new();
    let total = 1_500u64;
    let mut submitted = 0u64;
    while submitted < total || !outstanding.is_empty() {
        while submitted < total && wal.in_flight() < 200 {
            let stream = submitted % ranges;
            let range = RangeKey::new(StreamId(stream), RangeIndex(0));
            // 2-30 KiB, so groups fill at different points.
            let len = 2048 + ((submitted * 7919) % (28 << 10)) as usize;
            let base = next[stream as usize];
            let count = count_for(len);
            let data = batch(range, base, len);
            let ticket = wal
                .submit_append(range, store::Offset(base), count, data.clone())
                .expect("submit");
            next[stream as usize] += count as u64;
            expected.entry(stream).or_default().push(data);
            outstanding.insert(ticket, (stream, base));
            submitted += 1;
        }
        let Some((ticket, result)) = wal.next_completed(Some(STALL)) else {
            // A stalled store would also hang its own shutdown on unwinding: leave it be.
            std::mem::forget(wal);
            std::mem::forget(store);
            panic!(
                "no completion for {STALL:?} with {} appends outstanding: the store stalled",
                outstanding.len()
            );
        };
        let (stream, base) = outstanding.remove(&ticket).expect("known ticket");
        let appended = result.expect("append");
        // Per range, acknowledgements come in offset order.
        if let Some(previous) = acknowledged_at.insert(stream, base) {
            assert!(
                previous < base,
                "range {stream}: {base} acked after {previous}"
            );
        }
        assert!(appended.next_offset > store::Offset(base));
    }
    let stats = store.stats();
    assert_eq!(stats.appends, total);
    assert!(
        stats.data_syncs < total,
        "group commit should share syncs: {stats:?}"
    );
    store.shutdown();

    let (store, mut wal) = Store::open_sync(config).expect("reopen");
    for stream in 0..ranges {
        let read = read_all(&mut wal, RangeKey::new(StreamId(stream), RangeIndex(0)));
        assert!(
            read == expected[&stream],
            "range {stream}: {} batches read back, {} appended",
            read.len(),
            expected[&stream].len()
        );
    }
    store.shutdown();
}
