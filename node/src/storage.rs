//! The worker's view of the store: append batches of a range, read them back, and what the
//! store recovered at start. Maps `store::Error` to protocol error codes in one place.

use std::time::Duration;

use bytes::Bytes;
use wire::ErrorCode;

use crate::worker::{RangeKey, Reply};

/// A store failure as the protocol reports it.
#[derive(Debug, Clone)]
pub struct StorageError {
    pub code: ErrorCode,
    pub message: String,
}

impl StorageError {
    pub fn reply(&self) -> Reply {
        Reply::error(self.code, self.message.clone())
    }
}

/// Timing the store reports for an append.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendTiming {
    /// Time the append's group spent in its data sync, when known.
    pub sync: Option<Duration>,
}

/// One worker's handle on the store.
pub struct Storage {}

impl Storage {
    pub fn open_range(&self, _key: RangeKey, _start: u64) -> Result<(), StorageError> {
        Err(unavailable())
    }

    pub async fn append(
        &self,
        _key: RangeKey,
        _base: u64,
        _count: u32,
        _batches: Bytes,
    ) -> Result<AppendTiming, StorageError> {
        Err(unavailable())
    }

    pub async fn read(
        &self,
        _key: RangeKey,
        _start: u64,
        _limit: u64,
        _max_bytes: usize,
    ) -> Result<Bytes, StorageError> {
        Err(unavailable())
    }
}

fn unavailable() -> StorageError {
    StorageError {
        code: ErrorCode::StorageUnavailable,
        message: "the store is not connected yet".to_string(),
    }
}
