//! Injected write faults: an EIO and a short write on chosen group writes (after the real write
//! reached the disk). The affected appends fail with a retriable error, nothing panics, later
//! appends succeed, and after a crash-like stop only acknowledged data comes back.

mod common;

use std::os::unix::fs::FileExt;

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

/// A group whose write failed (after the real write reached the disk) is zeroed before its
/// appends are failed: it does not come back after a clean shutdown, a reopen and a crash, and
/// its offsets are appended again afterwards.
#[test]
fn a_failed_group_is_not_recovered_after_a_clean_shutdown_and_a_crash() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    // Appends one at a time: group n carries batch n. Group 5 fails after its write ran.
    config.faults.group_write_results = vec![(5, -EIO)];
    let range = RangeKey::new(StreamId(1), RangeIndex(0));
    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    for n in 0..5u64 {
        wal.append(range, store::Offset(n), 1, batch(range, n, 5000))
            .unwrap();
    }
    let failed_at = store.stats().durable_position;
    let error = wal
        .append(range, store::Offset(5), 1, batch(range, 5, 5000))
        .unwrap_err();
    assert!(error.is_retriable(), "{error}");
    // By the time the append has failed, nothing of it is left on disk.
    let segment = directory
        .path()
        .join("wal")
        .join(format!("{:016x}.wal", failed_at - failed_at % (1 << 20)));
    let mut failed_bytes = vec![1u8; 5100];
    std::fs::File::open(&segment)
        .unwrap()
        .read_exact_at(&mut failed_bytes, failed_at % (1 << 20))
        .unwrap();
    assert!(
        failed_bytes.iter().all(|byte| *byte == 0),
        "the failed group's bytes are still on disk"
    );
    store.shutdown();

    config.faults.group_write_results.clear();
    let (store, _wal) = Store::open_sync(config.clone()).unwrap();
    assert!(store.recovery().clean);
    store.halt();
    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    assert!(!store.recovery().clean);
    assert_eq!(
        wal.index(range).unwrap().next_offset,
        store::Offset(5),
        "the failed append came back"
    );
    wal.append(range, store::Offset(5), 1, batch(range, 5, 70))
        .unwrap();
    store.halt();
    let (store, mut wal) = Store::open_sync(config).unwrap();
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(6));
    for n in 0..5u64 {
        assert_eq!(
            wal.read(range, store::Offset(n), 1).unwrap()[0],
            batch(range, n, 5000)
        );
    }
    assert_eq!(
        wal.read(range, store::Offset(5), 1).unwrap()[0],
        batch(range, 5, 70)
    );
    store.shutdown();
}

/// Linux's EIO.
const EIO: i32 = 5;
