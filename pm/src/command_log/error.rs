//! `LogError`: every way the command log can fail, each message saying what happened and what
//! to do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// An error of the command log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// A system call failed. `operation` names the call and the file. After a failed write or
    /// data sync the log accepts nothing more (the outcome of the failed group is unknown and
    /// a retried fdatasync may not report a lost write again): reopen it.
    Io {
        /// What was being done, with the file concerned.
        operation: String,
        /// The OS error number, 0 when the error did not come from the OS.
        errno: i32,
        /// The OS error message.
        message: String,
    },
    /// Damage that recovery must not cut away: in a segment that is not the last, a damaged
    /// record with valid records after it, a gap in the indexes, or a damaged snapshot.
    Corrupt {
        /// The segment or snapshot file.
        file: PathBuf,
        /// Byte offset of the damage in `file`.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },
    /// More records (or bytes) are waiting for their data sync than the log queues. Retriable:
    /// wait for an earlier ticket, then append again.
    Busy {
        /// Records appended and not yet durable.
        pending_records: usize,
        /// Payload bytes appended and not yet durable.
        pending_bytes: usize,
        /// `LogOptions::max_pending_records`.
        max_pending_records: usize,
        /// `LogOptions::max_pending_bytes`.
        max_pending_bytes: usize,
    },
    /// A record larger than the format allows.
    TooLarge {
        /// The record's size.
        bytes: usize,
        /// [`MAX_RECORD_BYTES`](super::MAX_RECORD_BYTES).
        limit: usize,
    },
    /// The log was closed (or its thread has stopped).
    Closed,
    /// Another process holds the directory's lock file.
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says about its holder (its pid), if readable.
        holder: String,
    },
    /// `durable` was asked about an index never assigned.
    UnknownIndex {
        /// The index asked about.
        index: u64,
        /// The next index `append` will assign.
        next_index: u64,
    },
    /// A snapshot that would not cover a durable prefix of the log, or that is older than the
    /// one installed.
    SnapshotOutOfRange {
        /// The snapshot's last index.
        last_index: u64,
        /// The index of the snapshot already installed (0 for none).
        snapshot_index: u64,
        /// The highest durable index.
        durable_index: u64,
    },
    /// `LogOptions` that cannot work.
    InvalidOptions(String),
}

impl LogError {
    pub(crate) fn io(operation: impl Into<String>, error: &io::Error) -> LogError {
        LogError::Io {
            operation: operation.into(),
            errno: error.raw_os_error().unwrap_or(0),
            message: error.to_string(),
        }
    }

    /// True when the same call may succeed later without any other action (only `Busy`).
    pub fn is_retriable(&self) -> bool {
        matches!(self, LogError::Busy { .. })
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io {
                operation,
                errno,
                message,
            } => write!(
                f,
                "command log I/O error while {operation}: {message} (errno {errno}); the log \
                 accepts nothing more after a failed write or sync: fix the cause (disk full, \
                 device error) and restart the placement manager, whose recovery keeps every \
                 durable record"
            ),
            LogError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "command log is damaged in {} at byte {offset}: {reason}. Recovery refuses to \
                 cut durable records: restore this placement manager's directory from a \
                 replica or backup (or move the damaged file aside only if you know its \
                 records are not needed)",
                file.display()
            ),
            LogError::Busy {
                pending_records,
                pending_bytes,
                max_pending_records,
                max_pending_bytes,
            } => write!(
                f,
                "command log is busy: {pending_records} records ({pending_bytes} bytes) wait for \
                 their data sync, at most {max_pending_records} records and {max_pending_bytes} \
                 bytes may; wait for an earlier append to become durable and retry"
            ),
            LogError::TooLarge { bytes, limit } => write!(
                f,
                "command of {bytes} bytes is larger than the command log's limit of {limit} \
                 bytes; split the change into smaller commands"
            ),
            LogError::Closed => write!(
                f,
                "command log is closed; open it again to append or wait for durability"
            ),
            LogError::Locked { path, holder } => write!(
                f,
                "command log directory is in use: {} is locked by another process ({holder}); \
                 stop that placement manager or give this one another directory",
                path.display()
            ),
            LogError::UnknownIndex { index, next_index } => write!(
                f,
                "index {index} was never appended to the command log (the next index is \
                 {next_index}); wait only for indexes `append` returned"
            ),
            LogError::SnapshotOutOfRange {
                last_index,
                snapshot_index,
                durable_index,
            } => write!(
                f,
                "a snapshot up to index {last_index} cannot be installed: it must cover at \
                 least the installed snapshot ({snapshot_index}) and at most the durable log \
                 ({durable_index}); take snapshots of applied, durable state only"
            ),
            LogError::InvalidOptions(detail) => write!(f, "invalid command log options: {detail}"),
        }
    }
}

impl std::error::Error for LogError {}
