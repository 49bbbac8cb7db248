//! The write-ahead log that keeps every batch a data node acknowledges.
//!
//! One IO thread owns the WAL (fixed-size O_DIRECT segment files in one u64 address space) and
//! its own io_uring ring; the node's worker threads talk to it through one bounded mailbox each
//! way. See `docs/storage.md` for the on-disk format and the test behind each durability claim.
//!
//! ```text
//! Store::open(config, workers, owner) -> (Store, Vec<WorkerStore>)
//!   Store           owner handle: stats, checkpoint, shutdown (final checkpoint)
//!   WorkerStore     Send; moved to its worker, then start() -> (StoreHandle, CompletionDriver)
//!   StoreHandle     append / read / trim / delete futures, index look-ups (worker-local)
//!   SyncStore       the same, blocking, for tests and tools
//! ```
//!
//! Module map: [`config`] (settings), `layout` (directory, lock, properties, segment files),
//! `record` (WAL record format), `index` (per-range index), `checkpoint` (file format, writer
//! thread), `checkpoint_schedule` (when the IO thread checkpoints), `recovery`, `io_thread`
//! (the IO thread: `mod.rs` its loop, `ring`, `mailboxes`, `staging`, `group`, `group_commit`,
//! `sync_policy`, `reads`, `block_cache`, `segments`), `worker` (worker side), `sync` (blocking
//! handle).

mod checkpoint;
mod checkpoint_schedule;
pub mod config;
mod error;
#[cfg(feature = "fault-injection")]
mod fault_injection;
mod index;
mod io_thread;
mod layout;
mod message;
pub mod record;
mod recovery;
mod sync;
mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;

use runtime::mailbox::{self, Sender};

pub use config::{PrewriteMode, StoreConfig, SyncMode, UringConfig};
pub use error::{Error, Result};
#[cfg(feature = "fault-injection")]
pub use fault_injection::FaultInjection;
pub use index::{BatchIndex, IndexEntry, RangeSummary};
pub use layout::{FORMAT_VERSION, SEGMENT_FILL_BYTE};
pub use message::StoreStats;
pub use recovery::{DamagedRegion, RecoveryReport};
pub use sync::{SyncStore, Ticket};
pub use worker::{AppendResult, CompletionDriver, StoreFuture, StoreHandle, WorkerStore};

use message::{Control, SharedStats};

pub use ids::{Offset, RangeIndex, RangeKey, StreamId};

/// A byte position in the WAL's global address space.
pub type WalPosition = u64;

/// O_DIRECT alignment and the unit rewritten in place at the log's tail.
pub const PAGE_BYTES: usize = 4096;

/// The owner's handle: keeps the directory locked, reports stats, shuts the IO thread down.
pub struct Store {
    config: StoreConfig,
    node_id: Option<u32>,
    control: Sender<Control>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SharedStats>,
    recovery: RecoveryReport,
    _lock: layout::DirectoryLock,
}

impl Store {
    /// Opens (or creates) the store under `config.path` for `worker_count` workers; `owner`
    /// maps each range to the worker that owns it. Takes the lock, checks the properties,
    /// recovers the index, starts the IO thread and returns one [`WorkerStore`] per worker
    /// holding the index of the ranges it owns.
    pub fn open(
        config: StoreConfig,
        worker_count: usize,
        owner: impl Fn(RangeKey) -> usize,
    ) -> Result<(Store, Vec<WorkerStore>)> {
        config.validate()?;
        if worker_count == 0 {
            return Err(Error::Config(
                "the store needs at least one worker".to_string(),
            ));
        }
        let wal_directory = config.path.join(layout::WAL_DIRECTORY);
        runtime::durable::create_dir_all(&wal_directory)
            .map_err(|error| Error::io(format!("creating {}", wal_directory.display()), &error))?;
        let lock = layout::lock(&config.path)?;
        let properties = layout::check_properties(&config)?;
        let segments = layout::list_segments(&wal_directory, config.segment_size_bytes)?;
        // Recovery sizes its reads and windows for the largest group this log ever held.
        let mut recovery_config = config.clone();
        recovery_config.max_group_bytes = properties
            .max_group_bytes
            .map_or(config.max_group_bytes, |stored| {
                (stored as usize).max(config.max_group_bytes)
            });
        let mut recovered = recovery::recover(&recovery_config, segments)?;
        let report = &recovered.report;
        log::info!(
            "store: recovered {} ranges from {} ({}): scanned from {} to {}, {} records replayed, \
             {} WAL bytes read in {:?}",
            recovered.index.len(),
            config.path.display(),
            if report.clean {
                "clean shutdown"
            } else if report.tail == 0 {
                "empty log"
            } else {
                "after a crash"
            },
            report.scanned_from,
            report.tail,
            report.records_replayed,
            report.wal_bytes_read,
            report.duration
        );
        let tail_segment = recovered.tail - recovered.tail % config.segment_size_bytes;
        if !recovered.segments.contains(&tail_segment) {
            let prepared = match config.prewrite {
                PrewriteMode::Always => layout::prewrite_segment_blocking(
                    &wal_directory,
                    tail_segment,
                    config.segment_size_bytes,
                ),
                PrewriteMode::Idle => layout::allocate_segment_blocking(
                    &wal_directory,
                    tail_segment,
                    config.segment_size_bytes,
                ),
            };
            prepared.map_err(|error| match error.raw_os_error() {
                Some(errno) => Error::errno("preparing the first WAL segment", errno),
                None => Error::io("preparing the first WAL segment", &error),
            })?;
            recovered.segments.push(tail_segment);
            recovered.segments.sort_unstable();
        }
        if config.sync == SyncMode::Never {
            log::warn!(
                "store: sync is `never`: appends are acknowledged before they are durable; a \
                 power loss can lose acknowledged batches. Use only for benchmarks."
            );
        }

        let capacity = config.worker_queue_capacity;
        let mut worker_indexes: Vec<index::Index> =
            (0..worker_count).map(|_| index::Index::new()).collect();
        for (key, range) in &recovered.index {
            let worker = owner(*key);
            if worker >= worker_count {
                return Err(Error::Config(format!(
                    "range owner function returned worker {worker} for stream {} range {} but \
                     there are {worker_count} workers",
                    key.stream_id, key.range_index
                )));
            }
            worker_indexes[worker].insert(*key, range.clone());
        }
        let mailbox_error = |error: std::io::Error| Error::io("creating a store mailbox", &error);
        let tail_cache_bytes = config.cache_size_bytes / 2 / worker_count;
        let mut ports = Vec::with_capacity(worker_count);
        let mut workers = Vec::with_capacity(worker_count);
        for ranges in worker_indexes {
            let (request_sender, request_receiver) =
                mailbox::channel(capacity).map_err(mailbox_error)?;
            let (completion_sender, completion_receiver) =
                mailbox::channel(capacity).map_err(mailbox_error)?;
            ports.push((request_receiver, completion_sender));
            workers.push(WorkerStore::new(
                request_sender,
                completion_receiver,
                ranges,
                tail_cache_bytes,
                config.max_batch_bytes(),
            ));
        }
        let (control, control_receiver) = mailbox::channel(16).map_err(mailbox_error)?;
        let stats = Arc::new(SharedStats::default());
        stats.damaged_regions.store(
            recovered.report.damaged.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let io_thread = io_thread::IoThread::new(io_thread::IoThreadSetup {
            config: config.clone(),
            index: recovered.index,
            durable: recovered.tail,
            tail_page: recovered.tail_page,
            segments: recovered.segments,
            checkpoint_sequence: recovered.checkpoint_sequence,
            checkpoint_position: recovered.checkpoint_position,
            workers: ports,
            control: control_receiver,
            stats: stats.clone(),
        })?;
        let cpu = config.io_thread_cpu;
        let thread = std::thread::Builder::new()
            .name("store-io".to_string())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(error) = runtime::thread::pin_current_thread(cpu) {
                        log::warn!("store: pinning the IO thread to CPU {cpu} failed: {error}");
                    }
                }
                io_thread.run();
            })
            .map_err(|error| Error::io("starting the store IO thread", &error))?;
        Ok((
            Store {
                node_id: properties.node_id,
                config,
                control,
                thread: Some(thread),
                stats,
                recovery: recovered.report,
                _lock: lock,
            },
            workers,
        ))
    }

    /// Opens the store with one worker and returns its blocking handle.
    pub fn open_sync(config: StoreConfig) -> Result<(Store, SyncStore)> {
        let (store, mut workers) = Store::open(config, 1, |_| 0)?;
        let worker = workers.pop().ok_or(Error::Closed)?;
        Ok((store, SyncStore::new(worker)))
    }

    /// The node id recorded in the properties file.
    pub fn node_id(&self) -> Option<u32> {
        self.node_id
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// What recovery found and did at open.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Current counters: WAL positions, disk usage, cache usage, groups and syncs.
    pub fn stats(&self) -> StoreStats {
        self.stats.snapshot(self.config.segment_size_bytes)
    }

    /// Asks the IO thread for a checkpoint now (it is written between group commits).
    pub fn request_checkpoint(&mut self) -> Result<()> {
        self.control
            .send(Control::Checkpoint)
            .map_err(|_| Error::Closed)
    }

    /// Finishes queued requests, writes the final checkpoint and the clean-shutdown marker,
    /// stops the IO thread and releases the lock. Requests sent afterwards fail with
    /// [`Error::Closed`].
    pub fn shutdown(mut self) {
        self.stop(Control::Shutdown);
    }

    /// Stops the IO thread the way a crash would leave the disk: no final checkpoint, queued
    /// requests dropped (they fail with [`Error::Closed`]). For recovery tests.
    #[doc(hidden)]
    pub fn halt(mut self) {
        self.stop(Control::Halt);
    }

    fn stop(&mut self, how: Control) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if self.control.send(how).is_err() {
            log::error!("store: the IO thread is already gone");
        }
        if thread.join().is_err() {
            log::error!("store: the IO thread panicked");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop(Control::Shutdown);
    }
}
