//! What workers and the IO thread say to each other through their mailboxes, and the shared
//! counters the owner handle reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::Result;
use crate::{Offset, RangeKey, WalPosition};

/// Worker -> IO thread. `slot` names the worker's pending request.
pub(crate) enum Request {
    Append {
        slot: u32,
        range: RangeKey,
        base_offset: Offset,
        count: u32,
        batch: Bytes,
    },
    Trim {
        slot: u32,
        range: RangeKey,
        offset: Offset,
    },
    Delete {
        slot: u32,
        range: RangeKey,
    },
    Read {
        slot: u32,
        extents: Vec<Extent>,
    },
}

/// One batch to read: its record's WAL position and payload length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extent {
    pub position: WalPosition,
    pub payload_len: u32,
}

/// IO thread -> worker, in WAL order for appends, trims and deletes.
pub(crate) struct Completion {
    pub slot: u32,
    pub outcome: Result<Outcome>,
}

pub(crate) enum Outcome {
    Appended { position: WalPosition },
    Trimmed,
    Deleted,
    Read(Vec<Bytes>),
}

/// Owner handle -> IO thread.
pub(crate) enum Control {
    /// Finish queued work, write the final checkpoint and the clean marker, exit.
    Shutdown,
    /// Stop as a crash would leave the disk: finish in-flight kernel operations (their buffers
    /// must outlive them) and exit without a checkpoint.
    Halt,
    /// Write a checkpoint now.
    Checkpoint,
}

/// Counters the IO thread publishes.
#[derive(Default)]
pub(crate) struct SharedStats {
    pub appends: AtomicU64,
    pub append_bytes: AtomicU64,
    pub groups: AtomicU64,
    pub data_syncs: AtomicU64,
    pub data_sync_micros: AtomicU64,
    pub group_write_micros: AtomicU64,
    pub polled_completions: AtomicU64,
    pub polled_writes: AtomicBool,
    pub polled_reads: AtomicBool,
    pub wal_bytes_written: AtomicU64,
    pub durable_position: AtomicU64,
    pub oldest_segment_start: AtomicU64,
    pub segment_count: AtomicU64,
    pub block_cache_bytes: AtomicU64,
    pub disk_reads: AtomicU64,
    pub disk_read_bytes: AtomicU64,
    pub block_cache_hits: AtomicU64,
    pub checkpoints: AtomicU64,
    pub segments_reclaimed: AtomicU64,
    pub segments_written_through: AtomicU64,
    pub segments_used_unwritten: AtomicU64,
    pub write_errors: AtomicU64,
    pub damaged_regions: AtomicU64,
    pub corrupt_reads: AtomicU64,
    pub full: AtomicBool,
}

/// A snapshot of the store's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Append records made durable.
    pub appends: u64,
    /// Batch bytes made durable.
    pub append_bytes: u64,
    /// Group writes completed.
    pub groups: u64,
    /// Data syncs completed.
    pub data_syncs: u64,
    /// Time data syncs took in all, from submission to completion, in microseconds.
    pub data_sync_micros: u64,
    /// Time group writes took in all, from submission to the last chunk's completion, in
    /// microseconds.
    pub group_write_micros: u64,
    /// WAL writes and reads completed on the polled ring (`uring.iopoll`).
    pub polled_completions: u64,
    /// WAL writes go through the polled ring.
    pub polled_writes: bool,
    /// Block reads go through the polled ring (a kernel may poll writes but refuse polled reads
    /// on a device without poll queues).
    pub polled_reads: bool,
    /// Bytes written to WAL segments by group writes.
    pub wal_bytes_written: u64,
    /// The WAL is durable up to here.
    pub durable_position: WalPosition,
    /// Start of the oldest segment still on disk.
    pub oldest_segment_start: WalPosition,
    /// Segment files on disk (including the written-through ones ahead of the tail).
    pub segment_count: u64,
    /// Bytes of segment files on disk.
    pub disk_usage_bytes: u64,
    /// Bytes held by the IO thread's block cache.
    pub block_cache_bytes: u64,
    /// Block reads issued to the disk, and their bytes.
    pub disk_reads: u64,
    pub disk_read_bytes: u64,
    /// Blocks served from the block cache.
    pub block_cache_hits: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Segments recycled or deleted after retention.
    pub segments_reclaimed: u64,
    /// New segments written through with filler before use.
    pub segments_written_through: u64,
    /// New segments the log needed before they were written through (`prewrite: idle`), used
    /// as allocated.
    pub segments_used_unwritten: u64,
    /// Group writes or syncs that failed.
    pub write_errors: u64,
    /// Regions of acknowledged data recovery found damaged at open (kept on disk, skipped,
    /// reads of their batches fail with `Error::Corrupt`): see `RecoveryReport::damaged`. A
    /// data node should alert on any value above zero.
    pub damaged_regions: u64,
    /// Reads failed since open because a batch's record did not verify (`Error::Corrupt`).
    pub corrupt_reads: u64,
    /// True while no segment can be prepared for appends (disk full).
    pub full: bool,
}

impl SharedStats {
    pub(crate) fn snapshot(&self, segment_size_bytes: u64) -> StoreStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let segment_count = load(&self.segment_count);
        StoreStats {
            appends: load(&self.appends),
            append_bytes: load(&self.append_bytes),
            groups: load(&self.groups),
            data_syncs: load(&self.data_syncs),
            data_sync_micros: load(&self.data_sync_micros),
            group_write_micros: load(&self.group_write_micros),
            polled_completions: load(&self.polled_completions),
            polled_writes: self.polled_writes.load(Ordering::Relaxed),
            polled_reads: self.polled_reads.load(Ordering::Relaxed),
            wal_bytes_written: load(&self.wal_bytes_written),
            durable_position: load(&self.durable_position),
            oldest_segment_start: load(&self.oldest_segment_start),
            segment_count,
            disk_usage_bytes: segment_count * segment_size_bytes,
            block_cache_bytes: load(&self.block_cache_bytes),
            disk_reads: load(&self.disk_reads),
            disk_read_bytes: load(&self.disk_read_bytes),
            block_cache_hits: load(&self.block_cache_hits),
            checkpoints: load(&self.checkpoints),
            segments_reclaimed: load(&self.segments_reclaimed),
            segments_written_through: load(&self.segments_written_through),
            segments_used_unwritten: load(&self.segments_used_unwritten),
            write_errors: load(&self.write_errors),
            damaged_regions: load(&self.damaged_regions),
            corrupt_reads: load(&self.corrupt_reads),
            full: self.full.load(Ordering::Relaxed),
        }
    }
}
