//! Plain configuration structs. The data node maps its YAML `store:` section into these; every
//! field has a default that runs well on a 2-core laptop.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::PAGE_BYTES;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge after the group's data sync (the default).
    Always,
    /// Acknowledge after the write completes, without a data sync. For benchmarks only: a power
    /// loss can lose acknowledged batches.
    Never,
}

/// How a new WAL segment is prepared when no recycled one is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrewriteMode {
    /// Every new segment is written through with filler before the log uses it. Appends then
    /// never write into unwritten extents, but the disk writes every byte twice while no
    /// segment is recycled.
    Always,
    /// A new segment is written through only while the IO thread has no appends staged or in
    /// flight; when the log needs it first, it is used as allocated (unwritten extents, read
    /// back as zeros), and each data sync also commits the extent conversions (the default).
    Idle,
}

/// The IO thread's io_uring setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringConfig {
    /// A kernel thread polls the submission queue. Off by default: on a 2-core machine it would
    /// spin on the only other core.
    pub sqpoll: bool,
    /// CPU the SQPOLL thread is bound to.
    pub sqpoll_cpu: Option<u32>,
    /// How long the SQPOLL thread spins before it sleeps.
    pub sqpoll_idle_ms: u32,
    /// Polled completions for WAL reads and writes: they go through a second ring set up with
    /// IOPOLL, which the IO thread polls while they are in flight (data syncs and mailbox polls
    /// stay on the interrupt-driven ring). Probed at start; falls back to interrupts (with a log
    /// line) where the device has no poll queues.
    pub iopoll: bool,
    /// Submission queue entries.
    pub queue_depth: u32,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            sqpoll: false,
            sqpoll_cpu: None,
            sqpoll_idle_ms: 10,
            iopoll: false,
            queue_depth: 256,
        }
    }
}

/// Everything the store needs to open a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Directory holding the lock file, properties, `wal/` and checkpoints.
    pub path: PathBuf,
    /// Node id recorded in the properties file; `None` accepts whatever is on disk.
    pub node_id: Option<u32>,
    /// Size of every WAL segment file. Immutable once the directory exists.
    pub segment_size_bytes: u64,
    /// Segments prepared ahead of need.
    pub preallocated_segments: usize,
    /// When new segments are written through before use.
    pub prewrite: PrewriteMode,
    /// When appends are acknowledged.
    pub sync: SyncMode,
    /// io_uring setup of the IO thread.
    pub uring: UringConfig,
    /// Largest single group write; also bounds one batch.
    pub max_group_bytes: usize,
    /// Requests one worker may have in flight at the IO thread (mailbox capacity).
    pub worker_queue_capacity: usize,
    /// Memory for cached WAL data: half for the block cache on the IO thread, half split over
    /// the workers for the tail of recently appended batches.
    pub cache_size_bytes: usize,
    /// Unit of disk reads (and so of read-ahead) for readers that miss the caches.
    pub read_block_size_bytes: usize,
    /// Period of index checkpoints; one is also written at clean shutdown.
    pub checkpoint_interval_ms: u64,
    /// CPU the IO thread is pinned to.
    pub io_thread_cpu: Option<usize>,
    /// Faults injected by the store's own tests (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub faults: crate::FaultInjection,
}

impl StoreConfig {
    /// Defaults for a store under `path`.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            node_id: None,
            segment_size_bytes: 1 << 30,
            preallocated_segments: 2,
            prewrite: PrewriteMode::Idle,
            sync: SyncMode::Always,
            uring: UringConfig::default(),
            max_group_bytes: 2 << 20,
            worker_queue_capacity: 1024,
            cache_size_bytes: 256 << 20,
            read_block_size_bytes: 1 << 20,
            checkpoint_interval_ms: 60_000,
            io_thread_cpu: None,
            #[cfg(feature = "fault-injection")]
            faults: crate::FaultInjection::default(),
        }
    }

    /// The largest batch payload one append may carry.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_group_bytes - crate::record::HEADER_BYTES - PAGE_BYTES
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let page = PAGE_BYTES as u64;
        if self.segment_size_bytes < 4 * page || self.segment_size_bytes % page != 0 {
            return Err(Error::Config(format!(
                "segment-size must be a multiple of {page} bytes and at least {} bytes, found {}",
                4 * page,
                self.segment_size_bytes
            )));
        }
        if self.max_group_bytes < 4 * PAGE_BYTES
            || self.max_group_bytes > 1 << 30
            || self.max_group_bytes % PAGE_BYTES != 0
            || self.max_group_bytes as u64 > self.segment_size_bytes / 2
        {
            return Err(Error::Config(format!(
                "max-group-size must be a multiple of {page} bytes, at least {} bytes, at most \
                 1 GiB and at most half of segment-size ({}), found {}",
                4 * page,
                self.segment_size_bytes / 2,
                self.max_group_bytes
            )));
        }
        let block = self.read_block_size_bytes as u64;
        if block < page || block % page != 0 || self.segment_size_bytes % block != 0 {
            return Err(Error::Config(format!(
                "read-block-size must be a multiple of {page} bytes that divides segment-size \
                 ({}), found {block}",
                self.segment_size_bytes
            )));
        }
        if self.preallocated_segments == 0 {
            return Err(Error::Config(
                "preallocated-segments must be at least 1, found 0".to_string(),
            ));
        }
        if self.worker_queue_capacity == 0 || self.worker_queue_capacity > 1 << 20 {
            return Err(Error::Config(format!(
                "worker-queue-capacity must be between 1 and {}, found {}",
                1 << 20,
                self.worker_queue_capacity
            )));
        }
        if self.uring.queue_depth < 16 || self.uring.queue_depth > 32768 {
            return Err(Error::Config(format!(
                "uring queue-depth must be between 16 and 32768, found {}",
                self.uring.queue_depth
            )));
        }
        Ok(())
    }
}
