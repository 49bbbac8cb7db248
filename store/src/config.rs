//! Plain configuration structs. The data node's YAML `store:` section deserializes straight into
//! [`StoreConfig`] (with the `serde` feature): a field is named after its YAML key
//! (`segment-size-bytes` is `segment_size_bytes`), unknown keys are refused, and every default
//! lives in one `Default` impl here, used by serde and by [`StoreConfig::new`] alike. The
//! defaults run well on a 2-core laptop.
//!
//! Fields the YAML cannot set are `#[serde(skip)]`: `node_id`, the two sizes the node derives
//! from other keys (`max_group_bytes`, `read_block_size_bytes`), and test-only fault injection.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::PAGE_BYTES;

/// When an append is acknowledged. YAML: `always` or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum SyncMode {
    /// Acknowledge after the group's data sync (the default).
    Always,
    /// Acknowledge after the write completes, without a data sync. For benchmarks only: a power
    /// loss can lose acknowledged batches.
    Never,
}

/// How a new WAL segment is prepared when no recycled one is ready (a recycled segment, written
/// before, is always preferred). YAML: `idle` or `always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
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

impl fmt::Display for SyncMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            SyncMode::Always => "always",
            SyncMode::Never => "never",
        })
    }
}

impl fmt::Display for PrewriteMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            PrewriteMode::Always => "always",
            PrewriteMode::Idle => "idle",
        })
    }
}

/// The IO thread's io_uring setup; YAML section `store.uring`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(deny_unknown_fields, rename_all = "kebab-case", default)
)]
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
    /// Submission queue entries of the IO thread's ring.
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

/// Everything the store needs to open a directory; YAML section `store`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(deny_unknown_fields, rename_all = "kebab-case", default)
)]
pub struct StoreConfig {
    /// Directory holding the lock file, properties, `wal/` and checkpoints.
    pub path: PathBuf,
    /// Node id recorded in the properties file; `None` accepts whatever is on disk.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub node_id: Option<u32>,
    /// Size of every WAL segment file. Immutable once the directory exists.
    pub segment_size_bytes: u64,
    /// Segments kept ready ahead of the one being written, recycled ones first; how a new one
    /// is prepared is `prewrite`'s business.
    pub preallocated_segments: usize,
    /// When new segments are written through before use.
    pub prewrite: PrewriteMode,
    /// When appends are acknowledged.
    pub sync: SyncMode,
    /// io_uring setup of the IO thread.
    pub uring: UringConfig,
    /// Largest single group write; also bounds one batch. Not a YAML key: the data node
    /// derives it from `server.max-frame-size-bytes` and `store.segment-size-bytes`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub max_group_bytes: usize,
    /// Requests one worker may have in flight at the IO thread (mailbox capacity).
    pub worker_queue_capacity: usize,
    /// Memory for cached WAL data: half for the block cache on the IO thread, half split over
    /// the workers for the tail of recently appended batches.
    pub cache_size_bytes: usize,
    /// Unit of disk reads (and so of read-ahead) for readers that miss the caches. Not a YAML
    /// key: the data node derives it from `store.segment-size-bytes`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub read_block_size_bytes: usize,
    /// Period of index checkpoints; one is also written at clean shutdown.
    pub checkpoint_interval_ms: u64,
    /// CPU the IO thread is pinned to.
    pub io_thread_cpu: Option<usize>,
    /// Faults injected by the store's own tests (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    #[cfg_attr(feature = "serde", serde(skip))]
    pub faults: crate::FaultInjection,
}

/// The one place every store default is written: serde fills absent YAML keys from it and
/// [`StoreConfig::new`] starts from it.
impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("./data"),
            node_id: None,
            segment_size_bytes: 64 << 20,
            preallocated_segments: 2,
            prewrite: PrewriteMode::Idle,
            sync: SyncMode::Always,
            uring: UringConfig::default(),
            max_group_bytes: 2 << 20,
            worker_queue_capacity: 1024,
            cache_size_bytes: 64 << 20,
            read_block_size_bytes: 1 << 20,
            checkpoint_interval_ms: 60_000,
            io_thread_cpu: None,
            #[cfg(feature = "fault-injection")]
            faults: crate::FaultInjection::default(),
        }
    }
}

impl StoreConfig {
    /// Defaults for a store under `path`.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            ..StoreConfig::default()
        }
    }

    /// The largest batch payload one append may carry: its record, the group start record in
    /// front of it and the partly filled page a group starts in fit one group.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_group_bytes - 2 * crate::record::HEADER_BYTES - PAGE_BYTES
    }

    /// Checks the values the store depends on. Each error names the YAML key as the data
    /// node's file spells it (`store.segment-size-bytes`), or, for the two fields the node
    /// derives, the field and the keys it is derived from.
    pub fn validate(&self) -> Result<()> {
        let page = PAGE_BYTES as u64;
        if self.segment_size_bytes < 4 * page || self.segment_size_bytes % page != 0 {
            return Err(Error::Config(format!(
                "store.segment-size-bytes: expected a multiple of {page} of at least {}, found {}",
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
                "max_group_bytes (derived by the data node from server.max-frame-size-bytes and \
                 store.segment-size-bytes): expected a multiple of {page} of at least {}, at most \
                 1 GiB and at most half of store.segment-size-bytes ({}), found {}",
                4 * page,
                self.segment_size_bytes / 2,
                self.max_group_bytes
            )));
        }
        let block = self.read_block_size_bytes as u64;
        if block < page || block % page != 0 || self.segment_size_bytes % block != 0 {
            return Err(Error::Config(format!(
                "read_block_size_bytes (derived by the data node from store.segment-size-bytes): \
                 expected a multiple of {page} that divides store.segment-size-bytes ({}), \
                 found {block}",
                self.segment_size_bytes
            )));
        }
        if self.preallocated_segments == 0 {
            return Err(Error::Config(
                "store.preallocated-segments: expected at least 1, found 0".to_string(),
            ));
        }
        if self.worker_queue_capacity == 0 || self.worker_queue_capacity > 1 << 20 {
            return Err(Error::Config(format!(
                "store.worker-queue-capacity: expected 1..={}, found {}",
                1 << 20,
                self.worker_queue_capacity
            )));
        }
        if self.uring.queue_depth < 16 || self.uring.queue_depth > 32768 {
            return Err(Error::Config(format!(
                "store.uring.queue-depth: expected 16..=32768, found {}",
                self.uring.queue_depth
            )));
        }
        Ok(())
    }
}
