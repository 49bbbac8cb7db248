//! The range catalog: which ranges this node holds and their saved state (epoch, start, seal,
//! R and A, confirmed offset), kept in one append-only log written by a thread of its own with
//! group commit, so no worker thread ever waits on the disk for it.
//!
//! ```text
//!  worker threads                               catalog thread "range-catalog"
//!  save(record) / remove(key) ──► queue ───────► take the whole queue (≤ 4096) = one group
//!    returns a CatalogFuture at once              one write + one fdatasync (log.rs)
//!  future.await ◄─────────────────────────────── resolve each change, wake its task's Waker
//!                                                 compaction once the log is mostly replaced
//! ```
//!
//! Changes are applied in queue order, which is the order each worker submitted them, so the
//! last save of a range wins. Whatever queues while a group is written and synced is the next
//! group: under load one `fdatasync` covers many creates, seals and epoch raises (counted in
//! [`CatalogStats`], served as `es_catalog_*` metrics).
//!
//! A failed write or sync fails its group's changes and every later one (the page cache may
//! then hold writes the disk lost, so nothing written afterwards can be trusted): the node goes
//! on serving reads and appends at the saved epochs; creates, seals and epoch raises answer
//! `STORAGE_UNAVAILABLE` until it is restarted. (A fault injected with the `fault-injection`
//! feature fails changes without writing and without that consequence.)
//!
//! # Migration from one file per range
//!
//! [`Catalog::open`] reads `ranges/catalog.log`. When it does not exist yet, the range files
//! of the old layout (`ranges/<stream>-<index>.range`) are read, written as a new log
//! (atomically, durably), and only then deleted (and the directory synced). A crash in between
//! leaves both: old files next to an existing log are the ones already migrated, and are
//! deleted at the next start. Going back to a version that reads only range files is not
//! supported once migrated.

mod log;

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use ids::RangeKey;

use self::log::CatalogLog;
pub use self::log::{Change, LOG_FILE, MAX_GROUP_ENTRIES};
use crate::ranges_file::{CatalogError, LegacyRangeFiles, RangeRecord};

/// Changes queued and not yet durable, at most; beyond, a change fails at once (retriable).
/// Requests are bounded per connection and connections per node, so this is never reached in
/// normal operation.
pub const MAX_QUEUED_CHANGES: usize = 1 << 16;
/// Entries the log may hold beyond twice the live ranges before it is compacted.
const COMPACTION_SLACK: u64 = 16_384;

/// Counters of the catalog thread.
#[derive(Debug, Default)]
pub struct CatalogStats {
    /// Changes made durable.
    pub changes: AtomicU64,
    /// Groups written, each with one `fdatasync`.
    pub syncs: AtomicU64,
    /// Compactions completed.
    pub compactions: AtomicU64,
}

/// The owner's handle: the thread and the records found at start. Dropping it stops the
/// thread after the queued changes are written.
pub struct Catalog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    records: Vec<RangeRecord>,
}

/// What workers hold: submit changes, count ranges. Cheap to clone, `Send`.
#[derive(Clone)]
pub struct CatalogHandle {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    stats: Arc<CatalogStats>,
    /// Ranges held by the node (live records plus creates under way), for `max-ranges`.
    range_count: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    changes: Vec<(Change, Arc<Slot>)>,
    closing: bool,
}

/// Where the catalog thread leaves one change's outcome for the task awaiting it.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    outcome: Option<Result<(), String>>,
    waker: Option<Waker>,
}

impl Slot {
    fn resolve(&self, outcome: Result<(), String>) {
        let waker = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            state.outcome = Some(outcome);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Resolves once the change is durable in the catalog log (or failed).
pub struct CatalogFuture {
    slot: Arc<Slot>,
}

impl Future for CatalogFuture {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self
            .slot
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match state.outcome.take() {
            Some(outcome) => Poll::Ready(outcome.map_err(io::Error::other)),
            None => {
                state.waker = Some(context.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Catalog {
    /// Opens `<data_dir>/ranges/catalog.log`, migrating the old one-file-per-range layout if
    /// the log does not exist yet (see the module header), and starts the catalog thread.
    pub fn open(data_dir: &Path, stats: Arc<CatalogStats>) -> Result<Catalog, String> {
        Catalog::start(Catalog::open_log(data_dir)?, stats)
    }

    /// Migrates if needed (see [`open`](Self::open)) and recovers the log.
    fn open_log(data_dir: &Path) -> Result<CatalogLog, String> {
        let legacy = LegacyRangeFiles::open(data_dir).map_err(|error| {
            format!(
                "cannot open the range directory {}: {error}",
                data_dir.join("ranges").display()
            )
        })?;
        let directory = legacy.directory().to_path_buf();
        let path = directory.join(LOG_FILE);
        let old_records = legacy.load().map_err(|error| error.to_string())?;
        if !path.exists() {
            CatalogLog::write_fresh(&path, 0, &old_records).map_err(|error| {
                format!("cannot write the range catalog {}: {error}", path.display())
            })?;
            if !old_records.is_empty() {
                ::log::info!(
                    "range catalog: migrated {} range file(s) into {}",
                    old_records.len(),
                    path.display()
                );
            }
        } else if !old_records.is_empty() {
            ::log::info!(
                "range catalog: removing {} range file(s) left by an interrupted migration",
                old_records.len()
            );
        }
        for record in &old_records {
            legacy.remove(record.key).map_err(|error| {
                format!(
                    "cannot remove migrated range file of {} in {}: {error}",
                    record.key,
                    directory.display()
                )
            })?;
        }
        CatalogLog::open(&path, COMPACTION_SLACK).map_err(|error: CatalogError| error.to_string())
    }

    /// Starts the catalog thread on `log`.
    fn start(log: CatalogLog, stats: Arc<CatalogStats>) -> Result<Catalog, String> {
        let records = log.records();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            stats,
            range_count: AtomicUsize::new(records.len()),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("range-catalog".to_string())
                .spawn(move || run(shared, log))
                .map_err(|error| format!("cannot start the range catalog thread: {error}"))?
        };
        Ok(Catalog {
            shared,
            thread: Some(thread),
            records,
        })
    }

    /// The ranges found at start, sorted by range.
    pub fn take_records(&mut self) -> Vec<RangeRecord> {
        std::mem::take(&mut self.records)
    }

    pub fn handle(&self) -> CatalogHandle {
        CatalogHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Writes what is queued and stops the thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.lock_queue().closing = true;
        self.shared.work.notify_one();
        if thread.join().is_err() {
            ::log::error!("range catalog: its thread panicked");
        }
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl CatalogHandle {
    /// Saves the range as `record` (creating it, or replacing its earlier record).
    pub fn save(&self, record: RangeRecord) -> CatalogFuture {
        self.submit(Change::Put(record))
    }

    /// Deletes the range's record.
    pub fn remove(&self, key: RangeKey) -> CatalogFuture {
        self.submit(Change::Remove(key))
    }

    fn submit(&self, change: Change) -> CatalogFuture {
        let slot = Arc::new(Slot::default());
        let mut queue = self.shared.lock_queue();
        if queue.closing {
            slot.resolve(Err("the range catalog is closed".to_string()));
        } else if queue.changes.len() >= MAX_QUEUED_CHANGES {
            slot.resolve(Err(format!(
                "{MAX_QUEUED_CHANGES} range catalog changes are queued already; retry"
            )));
        } else {
            queue.changes.push((change, Arc::clone(&slot)));
            drop(queue);
            self.shared.work.notify_one();
        }
        CatalogFuture { slot }
    }

    /// Counts one more range if fewer than `max` are held; false when the node is full.
    pub fn try_reserve_range(&self, max: usize) -> bool {
        self.shared
            .range_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < max).then_some(count + 1)
            })
            .is_ok()
    }

    /// Counts one range less (a create that failed, a delete).
    pub fn release_range(&self) {
        let _ =
            self.shared
                .range_count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                    count.checked_sub(1)
                });
    }

    /// Ranges held (and being created) by the node.
    pub fn range_count(&self) -> usize {
        self.shared.range_count.load(Ordering::Acquire)
    }
}

/// The catalog thread: one group per turn, until closed with an empty queue.
fn run(shared: Arc<Shared>, mut log: CatalogLog) {
    let mut failure: Option<String> = None;
    loop {
        let group: Vec<(Change, Arc<Slot>)> = {
            let mut queue = shared.lock_queue();
            while queue.changes.is_empty() && !queue.closing {
                queue = shared
                    .work
                    .wait(queue)
                    .unwrap_or_else(|poison| poison.into_inner());
            }
            if queue.changes.is_empty() {
                return;
            }
            let take = queue.changes.len().min(MAX_GROUP_ENTRIES);
            queue.changes.drain(..take).collect()
        };
        let mut group = group;
        if crate::fault::armed(crate::fault::SLOW_CATALOG_SYNC) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            // Let what queued meanwhile join this group.
            let mut queue = shared.lock_queue();
            let take = queue.changes.len().min(MAX_GROUP_ENTRIES - group.len());
            group.extend(queue.changes.drain(..take));
        }
        commit_group(&shared, &mut log, &mut failure, group);
        if failure.is_none() && log.should_compact() {
            match log.compact() {
                Ok(()) => {
                    shared.stats.compactions.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    ::log::error!("range catalog: compaction failed: {error}");
                    failure = Some(format!("compaction failed: {error}"));
                }
            }
        }
    }
}

fn commit_group(
    shared: &Shared,
    log: &mut CatalogLog,
    failure: &mut Option<String>,
    group: Vec<(Change, Arc<Slot>)>,
) {
    let outcome = if let Some(earlier) = failure.as_ref() {
        Err(format!(
            "the range catalog failed earlier ({earlier}); restart the node"
        ))
    } else if crate::fault::armed(crate::fault::CATALOG_SAVE_FAILS) {
        Err("injected fault: catalog save fails".to_string())
    } else {
        let changes: Vec<Change> = group.iter().map(|(change, _)| *change).collect();
        match log.commit(&changes) {
            Ok(()) => {
                shared
                    .stats
                    .changes
                    .fetch_add(changes.len() as u64, Ordering::Relaxed);
                shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                ::log::error!("range catalog: writing a group failed: {error}");
                *failure = Some(error.to_string());
                Err(error.to_string())
            }
        }
    };
    for (_, slot) in group {
        slot.resolve(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ids::{Epoch, Offset, RangeIndex, StreamId};

    fn record(stream: u64) -> RangeRecord {
        RangeRecord {
            key: RangeKey::new(StreamId(stream), RangeIndex(0)),
            epoch: Epoch(1),
            start: Offset(0),
            end: None,
            confirmed: Offset(0),
            replica_count_target: 0,
            ack_count: 0,
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        let mut runtime = runtime::Runtime::new().unwrap();
        runtime.block_on(future)
    }

    #[test]
    fn old_range_files_are_migrated_once_and_removed() {
        let data = tempfile::tempdir().unwrap();
        let legacy = LegacyRangeFiles::open(data.path()).unwrap();
        legacy.save(&record(1)).unwrap();
        legacy.save(&record(2)).unwrap();
        let mut catalog = Catalog::open(data.path(), Arc::default()).unwrap();
        assert_eq!(catalog.take_records(), vec![record(1), record(2)]);
        catalog.close();
        assert!(LegacyRangeFiles::open(data.path())
            .unwrap()
            .load()
            .unwrap()
            .is_empty());

        // A leftover file next to the log (an interrupted migration) is already in the log.
        LegacyRangeFiles::open(data.path())
            .unwrap()
            .save(&record(1))
            .unwrap();
        let mut catalog = Catalog::open(data.path(), Arc::default()).unwrap();
        assert_eq!(catalog.take_records(), vec![record(1), record(2)]);
    }

    #[test]
    fn saves_and_removals_are_durable_when_their_futures_resolve() {
        let data = tempfile::tempdir().unwrap();
        let stats = Arc::new(CatalogStats::default());
        let catalog = Catalog::open(data.path(), Arc::clone(&stats)).unwrap();
        let handle = catalog.handle();
        let futures: Vec<CatalogFuture> =
            (0..100).map(|stream| handle.save(record(stream))).collect();
        block_on(async {
            for future in futures {
                future.await.unwrap();
            }
            handle.remove(record(7).key).await.unwrap();
        });
        assert_eq!(stats.changes.load(Ordering::Relaxed), 101);
        assert!(stats.syncs.load(Ordering::Relaxed) <= 101);
        drop(catalog);
        let mut reopened = Catalog::open(data.path(), Arc::default()).unwrap();
        let records = reopened.take_records();
        assert_eq!(records.len(), 99);
        assert!(!records
            .iter()
            .any(|record| record.key.stream_id == StreamId(7)));
    }

    /// What the catalog held after one seeded power loss.
    enum AfterTheLoss {
        /// Every range whose save resolved.
        Kept,
        /// A range whose save resolved is missing.
        Lost(String),
        /// The catalog refuses to open.
        Refused(String),
    }

    /// One seed of the power-loss scenario over the whole catalog: a fresh data directory is
    /// opened (the `ranges/` directory and an empty log created), saves are submitted in bursts
    /// through the catalog thread (group commit) until the power fails after a seeded number
    /// of file operations; the catalog is opened from the disk a power loss could leave, and
    /// must hold nothing that was not saved. `data_sync: false` skips every group's
    /// `fdatasync` (the test of the test). Returns the outcome and the image's summary.
    fn power_loss_case(seed: u64, data_sync: bool) -> (AfterTheLoss, String) {
        use runtime::durable::recording::{Session, SplitMix64};

        let directory = tempfile::tempdir().unwrap();
        let data = directory.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut random = SplitMix64::new(seed);
        let session = Session::start(&data).unwrap();
        session.freeze_after(1 + random.below(200));
        let mut log = Catalog::open_log(&data).unwrap();
        if !data_sync {
            log.skip_data_syncs();
        }
        let catalog = Catalog::start(log, Arc::default()).unwrap();
        let handle = catalog.handle();
        let mut acknowledged = Vec::new();
        let mut submitted = 0;
        block_on(async {
            while !session.is_frozen() && submitted < 5_000 {
                let burst: Vec<(u64, CatalogFuture)> = (0..1 + random.below(16))
                    .map(|_| {
                        submitted += 1;
                        (submitted, handle.save(record(submitted)))
                    })
                    .collect();
                for (stream, future) in burst {
                    future.await.unwrap();
                    // Resolved before the loss only if the power is still on now.
                    if !session.is_frozen() {
                        acknowledged.push(stream);
                    }
                }
            }
        });
        catalog.close();
        let image = directory.path().join("image");
        let summary = session
            .write_image(random.next_u64(), &image)
            .unwrap()
            .to_string();
        let mut reopened = match Catalog::open(&image, Arc::default()) {
            Ok(reopened) => reopened,
            Err(error) => return (AfterTheLoss::Refused(error), summary),
        };
        let records = reopened.take_records();
        reopened.close();
        for found in &records {
            let stream = found.key.stream_id.0;
            assert!(
                (1..=submitted).contains(&stream) && *found == record(stream),
                "seed {seed} ({summary}): {found:?} was never saved"
            );
        }
        let outcome = match acknowledged
            .iter()
            .find(|stream| !records.contains(&record(**stream)))
        {
            Some(stream) => {
                AfterTheLoss::Lost(format!("the save of range {stream} resolved but is lost"))
            }
            None => AfterTheLoss::Kept,
        };
        (outcome, summary)
    }

    /// Simulated power loss over the whole catalog (`runtime::durable::recording`),
    /// [`power_loss_case`] per seed: the catalog opens with every range whose save resolved
    /// before the loss, and nothing that was not saved. `CATALOG_POWER_LOSS_SEED=<seed>` reruns
    /// one seed.
    #[test]
    fn every_resolved_save_survives_a_power_loss() {
        let seeds = runtime::durable::recording::seeds_from_env("CATALOG_POWER_LOSS", 0..40);
        for seed in seeds {
            if let (AfterTheLoss::Lost(found) | AfterTheLoss::Refused(found), summary) =
                power_loss_case(seed, true)
            {
                panic!(
                    "seed {seed}: {found} ({summary}; rerun: CATALOG_POWER_LOSS_SEED={seed} cargo \
                     test -p node every_resolved_save_survives_a_power_loss)"
                );
            }
        }
    }

    /// The test of the test: the same scenario with every group's `fdatasync` skipped must
    /// find resolved saves lost (or a catalog that refuses to open) in at least one of a few
    /// seeds: the proof that the test above can see a missing data sync.
    #[test]
    fn saving_without_the_data_sync_loses_resolved_saves_and_the_test_sees_it() {
        let seeds = 0..20;
        let (mut lost, mut refused) = (0, 0);
        for seed in seeds.clone() {
            match power_loss_case(seed, false).0 {
                AfterTheLoss::Kept => {}
                AfterTheLoss::Lost(why) => {
                    println!("seed {seed} lost: {why}");
                    lost += 1
                }
                AfterTheLoss::Refused(why) => {
                    println!("seed {seed} refused to open: {why}");
                    refused += 1
                }
            }
        }
        println!(
            "without the data sync: {} seeds, {lost} lost resolved saves, {refused} refused to \
             open",
            seeds.end - seeds.start
        );
        assert!(
            lost + refused > 0,
            "without the group's fdatasync no resolved save was lost in seeds {seeds:?}: the \
             power-loss test cannot see a missing sync"
        );
    }

    #[test]
    fn the_range_budget_is_a_hard_bound() {
        let data = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(data.path(), Arc::default()).unwrap();
        let handle = catalog.handle();
        assert!(handle.try_reserve_range(2));
        assert!(handle.try_reserve_range(2));
        assert!(!handle.try_reserve_range(2));
        handle.release_range();
        assert!(handle.try_reserve_range(2));
        assert_eq!(handle.range_count(), 2);
    }
}
