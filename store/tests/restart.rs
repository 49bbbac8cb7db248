//! A clean restart with 2,000 ranges rebuilds every index from the checkpoint without reading
//! a byte of WAL.

mod common;

use common::{batch, small_config};
use store::{RangeKey, Store};

#[test]
fn clean_restart_with_2000_ranges_reads_no_wal() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    config.segment_size_bytes = 8 << 20;
    config.worker_queue_capacity = 1024;
    let ranges: Vec<RangeKey> = (0..2000)
        .map(|n| RangeKey::new(store::StreamId(n / 4), store::RangeIndex((n % 4) as u32)))
        .collect();
    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    for round in 0..3u64 {
        let mut tickets = Vec::new();
        for range in &ranges {
            let len = 100 + (range.stream_id.0 as usize % 700);
            tickets.push(
                wal.submit_append(
                    *range,
                    store::Offset(round * 5),
                    5,
                    batch(*range, round * 5, len),
                )
                .unwrap(),
            );
            if tickets.len() == 512 {
                for ticket in tickets.drain(..) {
                    wal.wait_append(ticket).unwrap();
                }
            }
        }
        for ticket in tickets.drain(..) {
            wal.wait_append(ticket).unwrap();
        }
    }
    assert_eq!(store.stats().appends, 6000);
    store.shutdown();

    let (store, mut wal) = Store::open_sync(config).unwrap();
    let report = store.recovery().clone();
    println!("clean restart with 2000 ranges: {report:?}");
    assert!(report.clean);
    assert_eq!(
        report.wal_bytes_read, 0,
        "a clean restart must not read the WAL"
    );
    assert_eq!(report.records_replayed, 0);
    assert!(
        report.duration < std::time::Duration::from_secs(1),
        "{report:?}"
    );
    assert_eq!(wal.ranges().len(), 2000);
    for range in ranges.iter().step_by(97) {
        assert_eq!(wal.index(*range).unwrap().next_offset, store::Offset(15));
        let len = 100 + (range.stream_id.0 as usize % 700);
        assert_eq!(
            wal.read(*range, store::Offset(7), 1).unwrap()[0],
            batch(*range, 5, len)
        );
    }
    // The restarted store appends where it left off.
    wal.append(ranges[0], store::Offset(15), 5, batch(ranges[0], 15, 10))
        .unwrap();
    store.shutdown();
}
