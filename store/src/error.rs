//! The store's one error type. Every message says what was expected, what was found and what the
//! operator or caller can do about it. The data node maps these to wire error codes in one place.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::{Offset, RangeKey, WalPosition};

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Another process holds the directory's lock file.
    Locked { path: PathBuf },
    /// The immutable properties file disagrees with the configuration.
    Properties {
        key: &'static str,
        on_disk: String,
        configured: String,
    },
    /// The configuration is unusable; the message names the key.
    Config(String),
    /// A system call failed. Retriable for appends (the next group may succeed).
    Io { operation: String, errno: i32 },
    /// The disk is full: no segment can be prepared for new appends. Retriable once space is
    /// freed (trim or delete ranges, or add space).
    Full { detail: String },
    /// The worker's request queue to the IO thread is full. Retriable at once.
    Busy { capacity: usize },
    /// A batch is larger than one group write can carry.
    TooLarge {
        batch_bytes: usize,
        max_bytes: usize,
    },
    /// Data on disk failed its checksum or does not parse. Never served as data.
    Corrupt {
        position: WalPosition,
        detail: String,
    },
    /// The offset asked for has been trimmed away.
    OffsetTrimmed {
        range: RangeKey,
        requested: Offset,
        start_offset: Offset,
    },
    /// An append does not continue its range: an earlier append to it failed, or the caller
    /// skipped its offset check.
    OutOfOrder {
        range: RangeKey,
        expected: Offset,
        found: Offset,
    },
    /// The store has shut down (or its IO thread stopped).
    Closed,
}

impl Error {
    /// True when retrying the same call later can succeed without operator action.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::Full { .. } | Error::Busy { .. }
        )
    }

    pub(crate) fn io(operation: impl Into<String>, error: &io::Error) -> Error {
        Error::Io {
            operation: operation.into(),
            errno: error.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub(crate) fn errno(operation: impl Into<String>, errno: i32) -> Error {
        if errno == libc::ENOSPC || errno == libc::EDQUOT {
            return Error::Full {
                detail: format!("{} failed: no space left on device", operation.into()),
            };
        }
        Error::Io {
            operation: operation.into(),
            errno,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Locked { path } => write!(
                f,
                "store directory is locked: {} is held by another process; stop the other data \
                 node or configure a different store path",
                path.display()
            ),
            Error::Properties {
                key,
                on_disk,
                configured,
            } => write!(
                f,
                "store properties mismatch for `{key}`: the directory was created with {on_disk} \
                 but the configuration says {configured}; restore the original setting or use an \
                 empty directory"
            ),
            Error::Config(message) => write!(f, "invalid store configuration: {message}"),
            Error::Io { operation, errno } => write!(
                f,
                "store I/O error during {operation}: {} (errno {errno}); the operation can be \
                 retried, check the disk if it persists",
                io::Error::from_raw_os_error(*errno)
            ),
            Error::Full { detail } => write!(
                f,
                "store is full: {detail}; appends resume once ranges are trimmed or deleted or \
                 space is added"
            ),
            Error::Busy { capacity } => write!(
                f,
                "store queue full: {capacity} requests already in flight on this worker; retry \
                 after some complete"
            ),
            Error::TooLarge {
                batch_bytes,
                max_bytes,
            } => write!(
                f,
                "batch of {batch_bytes} bytes exceeds the largest storable batch of {max_bytes} \
                 bytes; send smaller batches, or raise max_group_bytes (the data node derives it \
                 from server.max-frame-size-bytes, capped at half of store.segment-size-bytes)"
            ),
            Error::Corrupt { position, detail } => write!(
                f,
                "store data corrupt at WAL position {position}: {detail}; the data is not served, \
                 repair this replica from a peer"
            ),
            Error::OffsetTrimmed {
                range,
                requested,
                start_offset,
            } => write!(
                f,
                "offset {requested} of stream {} range {} was trimmed; the first readable offset \
                 is {start_offset}",
                range.stream_id, range.range_index
            ),
            Error::OutOfOrder {
                range,
                expected,
                found,
            } => write!(
                f,
                "append to stream {} range {} starts at offset {found} but the store expects                  {expected} (an earlier append may have failed); resend from offset {expected}",
                range.stream_id, range.range_index
            ),
            Error::Closed => f.write_str("store is shut down; no further requests are accepted"),
        }
    }
}

impl std::error::Error for Error {}
