//! The worker-facing async API on real runtime threads: two workers, each owning half of the
//! ranges, many appends in flight per worker, then reads from tail memory and from disk.

mod common;

use std::thread;

use common::{batch, small_config};
use store::{RangeIndex, RangeKey, Store, StreamId, WorkerStore};

const RANGES_PER_WORKER: u64 = 8;
const BATCHES_PER_RANGE: u64 = 40;

fn owner(range: RangeKey) -> usize {
    (range.stream_id.0 % 2) as usize
}

/// Appends to every range this worker owns with all appends of one round in flight at once,
/// then reads everything back. Returns the WAL positions seen, in completion order per range.
fn run_worker(worker: WorkerStore, worker_id: u64) -> Vec<u64> {
    let mut runtime = runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let (store, driver) = worker.start();
        runtime::spawn(driver.run());
        let ranges: Vec<RangeKey> = (0..RANGES_PER_WORKER)
            .map(|n| RangeKey::new(StreamId(n * 2 + worker_id), RangeIndex(0)))
            .collect();
        let mut positions = Vec::new();
        for round in 0..BATCHES_PER_RANGE {
            let futures: Vec<_> = ranges
                .iter()
                .map(|range| {
                    store.append(
                        *range,
                        store::Offset(round * 3),
                        3,
                        batch(*range, round * 3, 700),
                    )
                })
                .collect();
            assert!(store.in_flight() > 0);
            for future in futures {
                let result = future.await.unwrap();
                positions.push(result.position);
                assert_eq!(result.next_offset, store::Offset(round * 3 + 3));
            }
        }
        for range in &ranges {
            assert_eq!(
                store.index(*range).unwrap().next_offset,
                store::Offset(BATCHES_PER_RANGE * 3)
            );
            let batches = store.read(*range, store::Offset(4), 1 << 20).await.unwrap();
            assert_eq!(
                batches[0],
                batch(*range, 3, 700),
                "batch containing offset 4"
            );
            assert_eq!(batches.len() as u64, BATCHES_PER_RANGE - 1);
        }
        store.trim(ranges[0], store::Offset(30)).await.unwrap();
        assert!(store.read(ranges[0], store::Offset(0), 100).await.is_err());
        store.delete(ranges[1]).await.unwrap();
        assert!(store.index(ranges[1]).is_none());
        positions
    })
}

#[test]
fn two_workers_append_concurrently_and_read_back_after_restart() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let (store, workers) = Store::open(config.clone(), 2, owner).unwrap();
    let threads: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(id, worker)| thread::spawn(move || run_worker(worker, id as u64)))
        .collect();
    let mut all_positions = Vec::new();
    for thread in threads {
        all_positions.extend(thread.join().unwrap());
    }
    all_positions.sort_unstable();
    all_positions.dedup();
    assert_eq!(
        all_positions.len() as u64,
        2 * RANGES_PER_WORKER * BATCHES_PER_RANGE,
        "every append got its own WAL position"
    );
    let stats = store.stats();
    assert!(
        stats.groups < stats.appends,
        "appends were grouped: {stats:?}"
    );
    store.shutdown();

    // After restart each worker gets exactly the ranges it owns; reads come from disk.
    let (store, workers) = Store::open(config, 2, owner).unwrap();
    for (id, worker) in workers.into_iter().enumerate() {
        let ranges = worker.ranges();
        assert_eq!(
            ranges.len() as u64,
            RANGES_PER_WORKER - 1,
            "one range deleted"
        );
        assert!(ranges.iter().all(|(range, _)| owner(*range) == id));
        let mut runtime = runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let (store, driver) = worker.start();
            runtime::spawn(driver.run());
            let first = RangeKey::new(StreamId(id as u64), RangeIndex(0));
            assert_eq!(store.index(first).unwrap().start_offset, store::Offset(30));
            let batches = store.read(first, store::Offset(30), 1 << 20).await.unwrap();
            assert_eq!(batches[0], batch(first, 30, 700));
            let other = RangeKey::new(StreamId(4 + id as u64), RangeIndex(0));
            let batches = store.read(other, store::Offset(0), 1 << 20).await.unwrap();
            assert_eq!(batches.len() as u64, BATCHES_PER_RANGE);
            for (round, data) in batches.iter().enumerate() {
                assert_eq!(*data, batch(other, round as u64 * 3, 700));
            }
        });
    }
    store.shutdown();
}
