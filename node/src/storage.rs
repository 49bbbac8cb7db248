//! The worker's view of the store: append batches of a range, read them back, and what the
//! store recovered at start. `store::Error` is mapped to protocol error codes here, in one place.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
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

impl From<store::Error> for StorageError {
    fn from(error: store::Error) -> StorageError {
        let code = match &error {
            store::Error::Full { .. } => ErrorCode::StorageFull,
            store::Error::Busy { .. } => ErrorCode::TooManyInFlight,
            store::Error::TooLarge { .. } => ErrorCode::InvalidArgument,
            store::Error::Corrupt { .. } => ErrorCode::CorruptedData,
            store::Error::OffsetTrimmed { .. } => ErrorCode::OffsetOutOfRange,
            store::Error::Closed => ErrorCode::ShuttingDown,
            _ => ErrorCode::StorageUnavailable,
        };
        StorageError {
            code,
            message: error.to_string(),
        }
    }
}

/// Timing the store reports for an append.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendTiming {
    /// Time the append's group spent in its data sync, when the store reports it (it does
    /// not yet: write and sync are one completion).
    pub sync: Option<Duration>,
}

/// One worker's handle on the store.
pub struct Storage {
    handle: store::StoreHandle,
}

fn store_key(key: RangeKey) -> store::RangeKey {
    store::RangeKey::new(key.0 .0, key.1 .0)
}

impl Storage {
    pub fn new(handle: store::StoreHandle) -> Storage {
        Storage { handle }
    }

    /// The store learns of a range with its first append; nothing to do at creation.
    pub fn open_range(&self, _key: RangeKey, _start: u64) -> Result<(), StorageError> {
        Ok(())
    }

    /// One past the last offset the store holds durably for the range, if it holds any.
    pub fn durable_end(&self, key: RangeKey) -> Option<u64> {
        self.handle
            .index(store_key(key))
            .map(|summary| summary.next_offset)
    }

    /// Appends the batches (one APPEND payload) covering `count` offsets from `base`; resolves
    /// once durable.
    pub async fn append(
        &self,
        key: RangeKey,
        base: u64,
        count: u32,
        batches: Bytes,
    ) -> Result<AppendTiming, StorageError> {
        self.handle
            .append(store_key(key), base, count, batches)
            .await?;
        Ok(AppendTiming::default())
    }

    /// Whole appended payloads from the one holding `start`, about `max_bytes` of them. The
    /// caller cuts them to whole batches below its readable bound.
    pub async fn read(
        &self,
        key: RangeKey,
        start: u64,
        _limit: u64,
        max_bytes: usize,
    ) -> Result<Bytes, StorageError> {
        let mut pieces = self.handle.read(store_key(key), start, max_bytes).await?;
        match pieces.len() {
            0 => Ok(Bytes::new()),
            1 => Ok(pieces.pop().expect("one piece")),
            _ => {
                let total = pieces.iter().map(Bytes::len).sum();
                let mut joined = BytesMut::with_capacity(total);
                for piece in &pieces {
                    joined.extend_from_slice(piece);
                }
                Ok(joined.freeze())
            }
        }
    }

    /// Every range the store holds data of for this worker.
    pub fn ranges(&self) -> Vec<RangeKey> {
        self.handle
            .ranges()
            .into_iter()
            .map(|(key, _)| {
                (
                    wire::StreamId(key.stream_id),
                    wire::RangeIndex(key.range_index),
                )
            })
            .collect()
    }

    /// Requests this worker has at the IO thread.
    pub fn in_flight(&self) -> usize {
        self.handle.in_flight()
    }
}
