//! Appends, reads, restarts, trims and retention through the blocking handle.

mod common;

use common::{batch, count_for, read_all, small_config};
use store::{Error, RangeIndex, RangeKey, Store, StreamId};

#[test]
fn appended_batches_read_back_before_and_after_restart() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let ranges = [
        RangeKey::new(StreamId(1), RangeIndex(0)),
        RangeKey::new(StreamId(2), RangeIndex(5)),
        RangeKey::new(StreamId(3), RangeIndex(1)),
    ];
    let sizes = [1usize, 100, 4095, 4096, 4097, 20_000, 333];
    let mut expected: Vec<Vec<bytes::Bytes>> = vec![Vec::new(); ranges.len()];
    let mut next = [0u64, 1000, 0];
    {
        let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
        for round in 0..60 {
            for (which, range) in ranges.iter().enumerate() {
                let len = sizes[(round + which) % sizes.len()];
                let data = batch(*range, next[which], len);
                let count = count_for(len);
                let result = wal
                    .append(*range, store::Offset(next[which]), count, data.clone())
                    .unwrap();
                next[which] += count as u64;
                assert_eq!(result.next_offset, store::Offset(next[which]));
                expected[which].push(data);
            }
        }
        for (which, range) in ranges.iter().enumerate() {
            assert_eq!(read_all(&mut wal, *range), expected[which], "tail memory");
        }
        let stats = store.stats();
        assert_eq!(stats.appends, 180);
        assert!(stats.data_syncs >= 1 && stats.data_syncs <= stats.groups);
        store.shutdown();
    }
    // Clean restart: the checkpoint alone rebuilds the index; reads come from disk.
    {
        let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
        assert!(store.recovery().clean);
        assert_eq!(store.recovery().wal_bytes_read, 0);
        for (which, range) in ranges.iter().enumerate() {
            let summary = wal.index(*range).unwrap();
            assert_eq!(summary.next_offset, store::Offset(next[which]));
            assert_eq!(read_all(&mut wal, *range), expected[which], "from disk");
        }
        assert!(store.stats().disk_reads > 0);
        // More appends, then a crash-like stop: recovery scans the tail.
        for (which, range) in ranges.iter().enumerate() {
            let data = batch(*range, next[which], 777);
            wal.append(*range, store::Offset(next[which]), 7, data.clone())
                .unwrap();
            next[which] += 7;
            expected[which].push(data);
        }
        store.halt();
    }
    {
        let (store, mut wal) = Store::open_sync(config).unwrap();
        assert!(!store.recovery().clean);
        assert_eq!(store.recovery().cut_tail, None);
        for (which, range) in ranges.iter().enumerate() {
            assert_eq!(
                wal.index(*range).unwrap().next_offset,
                store::Offset(next[which])
            );
            let mut all = Vec::new();
            let mut offset = wal.index(*range).unwrap().start_offset;
            while offset < store::Offset(next[which]) {
                for data in wal.read(*range, offset, 1 << 20).unwrap() {
                    offset += if data.len() == 777 {
                        7
                    } else {
                        count_for(data.len()) as u64
                    };
                    all.push(data);
                }
            }
            assert_eq!(all, expected[which]);
        }
        store.shutdown();
    }
}

#[test]
fn out_of_order_append_is_rejected_not_stored() {
    let directory = tempfile::tempdir().unwrap();
    let (store, mut wal) = Store::open_sync(small_config(directory.path())).unwrap();
    let range = RangeKey::new(StreamId(9), RangeIndex(0));
    wal.append(range, store::Offset(0), 10, batch(range, 0, 1000))
        .unwrap();
    let error = wal
        .append(range, store::Offset(20), 5, batch(range, 20, 500))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::OutOfOrder {
                expected: store::Offset(10),
                found: store::Offset(20),
                ..
            }
        ),
        "{error}"
    );
    wal.append(range, store::Offset(10), 5, batch(range, 10, 500))
        .unwrap();
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(15));
    store.shutdown();
}

#[test]
fn oversized_batch_is_refused_with_the_limit() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let limit = config.max_batch_bytes();
    let (store, mut wal) = Store::open_sync(config).unwrap();
    let range = RangeKey::new(StreamId(1), RangeIndex(0));
    let error = wal
        .append(
            range,
            store::Offset(0),
            1,
            bytes::Bytes::from(vec![0u8; limit + 1]),
        )
        .unwrap_err();
    assert_eq!(
        error,
        Error::TooLarge {
            batch_bytes: limit + 1,
            max_bytes: limit
        }
    );
    wal.append(
        range,
        store::Offset(0),
        1,
        bytes::Bytes::from(vec![7u8; limit]),
    )
    .unwrap();
    assert_eq!(
        wal.read(range, store::Offset(0), 1).unwrap()[0].len(),
        limit
    );
    store.shutdown();
}

#[test]
fn trimmed_offsets_are_refused_and_segments_are_reclaimed() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let (mut store, mut wal) = Store::open_sync(config.clone()).unwrap();
    let keep = RangeKey::new(StreamId(1), RangeIndex(0));
    let drop = RangeKey::new(StreamId(2), RangeIndex(0));
    let mut next = 0u64;
    // ~4 MiB over four 1 MiB segments; `keep` only writes at the end.
    for _ in 0..200 {
        wal.append(drop, store::Offset(next), 200, batch(drop, next, 20_000))
            .unwrap();
        next += 200;
    }
    wal.append(keep, store::Offset(0), 1, batch(keep, 0, 100))
        .unwrap();
    let before = store.stats();
    assert!(before.segment_count >= 5, "{before:?}");
    wal.trim(drop, store::Offset(100 * 200)).unwrap();
    let error = wal.read(drop, store::Offset(0), 100).unwrap_err();
    assert!(
        matches!(
            error,
            Error::OffsetTrimmed {
                start_offset: store::Offset(20_000),
                ..
            }
        ),
        "{error}"
    );
    // Data above the trim point still reads back.
    assert_eq!(
        wal.read(drop, store::Offset(20_000), 1).unwrap()[0],
        batch(drop, 20_000, 20_000)
    );
    store.request_checkpoint().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.stats().segments_reclaimed == 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", store.stats());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let after = store.stats();
    assert!(
        after.oldest_segment_start > before.oldest_segment_start,
        "{after:?}"
    );
    // Delete the rest: everything but the tail segment can go.
    wal.delete(drop).unwrap();
    assert!(wal.index(drop).is_none());
    store.shutdown();
    let (store, mut wal) = Store::open_sync(config).unwrap();
    assert!(wal.index(drop).is_none());
    assert_eq!(
        wal.read(keep, store::Offset(0), 100).unwrap(),
        vec![batch(keep, 0, 100)]
    );
    store.shutdown();
}
