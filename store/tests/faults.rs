//! Injected write faults: an EIO and a short write on chosen group writes (after the real write
//! reached the disk). The affected appends fail with a retriable error, nothing panics, later
//! appends succeed, and after a crash-like stop only acknowledged data comes back.

mod common;

use common::{batch, small_config};
use store::{Error, RangeIndex, RangeKey, Store, StreamId};

#[test]
fn failed_group_writes_fail_their_appends_and_leave_no_trace() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    // Group 3 fails with EIO, group 6 is a short write.
    config.faults.group_write_results = vec![(3, -EIO), (6, 512)];
    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    let ranges: Vec<RangeKey> = (0..4)
        .map(|n| RangeKey::new(StreamId(n), RangeIndex(0)))
        .collect();
    let mut next = [0u64; 4];
    let mut acknowledged: Vec<(RangeKey, u64, usize)> = Vec::new();
    let mut failures = 0;
    for round in 0..12 {
        // A burst across all ranges, so a group usually carries several records.
        let len = if round % 2 == 0 { 9000 } else { 300 };
        let tickets: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(which, range)| {
                let ticket = wal
                    .submit_append(
                        *range,
                        store::Offset(next[which]),
                        1,
                        batch(*range, next[which], len),
                    )
                    .unwrap();
                (which, ticket)
            })
            .collect();
        for (which, ticket) in tickets {
            match wal.wait_append(ticket) {
                Ok(_) => {
                    acknowledged.push((ranges[which], next[which], len));
                    next[which] += 1;
                }
                Err(error) => {
                    assert!(error.is_retriable(), "{error}");
                    assert!(
                        matches!(error, Error::Io { .. } | Error::OutOfOrder { .. }),
                        "{error}"
                    );
                    failures += 1;
                }
            }
        }
    }
    assert!(
        failures >= 2,
        "the injected faults failed {failures} appends"
    );
    assert!(store.stats().write_errors >= 2);
    // Retry with a small batch right where the failed group was, then stop like a crash.
    for (which, range) in ranges.iter().enumerate() {
        wal.append(
            *range,
            store::Offset(next[which]),
            1,
            batch(*range, next[which], 10),
        )
        .unwrap();
        acknowledged.push((*range, next[which], 10));
        next[which] += 1;
    }
    store.halt();

    let (store, mut wal) = Store::open_sync(config).unwrap();
    for (which, range) in ranges.iter().enumerate() {
        assert_eq!(
            wal.index(*range).unwrap().next_offset,
            store::Offset(next[which])
        );
    }
    for (range, base, len) in acknowledged {
        assert_eq!(
            wal.read(range, store::Offset(base), 1).unwrap()[0],
            batch(range, base, len)
        );
    }
    store.shutdown();
}

/// Linux's EIO.
const EIO: i32 = 5;
