//! The worker's view of the store: append batches of a range, read them back, and what the
//! store recovered at start. `store::Error` is mapped to protocol error codes here, in one place.

use bytes::{Bytes, BytesMut};
use serve::Reply;
use wire::{BatchIter, Epoch, ErrorCode, Offset, RangeKey};

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

/// One worker's handle on the store.
pub struct Storage {
    handle: store::StoreHandle,
}

impl Storage {
    pub fn new(handle: store::StoreHandle) -> Storage {
        Storage { handle }
    }

    /// One past the last offset the store holds durably for the range, if it holds any.
    pub fn durable_end(&self, key: RangeKey) -> Option<Offset> {
        self.handle.index(key).map(|summary| summary.next_offset)
    }

    /// Whether the store still holds offsets of the range below `offset` (a trim to `offset`
    /// has not reached it yet).
    pub fn holds_below(&self, key: RangeKey, offset: Offset) -> bool {
        self.handle
            .index(key)
            .is_some_and(|summary| summary.start_offset < offset)
    }

    /// Bytes of record batches the store holds for the range (0 when it holds none).
    pub fn size_bytes(&self, key: RangeKey) -> u64 {
        self.handle
            .index(key)
            .map_or(0, |summary| summary.payload_bytes)
    }

    /// Drops the range's whole batches below `offset`; resolves once the trim is durable.
    pub async fn trim(&self, key: RangeKey, offset: Offset) -> Result<(), StorageError> {
        self.handle.trim(key, offset).await?;
        Ok(())
    }

    /// Deletes the range's batches; resolves once the deletion is durable.
    pub async fn delete(&self, key: RangeKey) -> Result<(), StorageError> {
        self.handle.delete(key).await?;
        Ok(())
    }

    /// Appends the batches (one APPEND payload) covering `count` offsets from `base`; resolves
    /// once durable.
    pub async fn append(
        &self,
        key: RangeKey,
        base: Offset,
        count: u32,
        batches: Bytes,
    ) -> Result<(), StorageError> {
        self.handle.append(key, base, count, batches).await?;
        Ok(())
    }

    /// Whole appended payloads from the one holding `start`, about `max_bytes` of them. The
    /// caller cuts them to whole batches below its readable bound.
    pub async fn read(
        &self,
        key: RangeKey,
        start: Offset,
        max_bytes: usize,
    ) -> Result<Bytes, StorageError> {
        let mut pieces = self.handle.read(key, start, max_bytes).await?;
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

    /// The epoch in the header of the range's last stored record batch, if the store holds
    /// any batch of it. Read at start: an epoch a writer raised is in its batches even if a
    /// crash came before the raise was saved elsewhere.
    pub async fn last_batch_epoch(&self, key: RangeKey) -> Result<Option<Epoch>, StorageError> {
        let Some(summary) = self.handle.index(key) else {
            return Ok(None);
        };
        if summary.start_offset >= summary.next_offset {
            return Ok(None);
        }
        let last = Offset(summary.next_offset.0 - 1);
        let payload = self.read(key, last, 1).await?;
        let mut epoch = None;
        for batch in BatchIter::new(payload) {
            let batch = batch.map_err(|error| StorageError {
                code: ErrorCode::CorruptedData,
                message: format!("the last stored batch of range {key} does not decode: {error}"),
            })?;
            epoch = Some(batch.header().epoch);
        }
        Ok(epoch)
    }

    /// Bytes of the largest append the store holds for this worker.
    pub fn largest_append_bytes(&self) -> usize {
        self.handle.largest_append_bytes()
    }

    /// Every range the store holds data of for this worker.
    pub fn ranges(&self) -> Vec<RangeKey> {
        self.handle
            .ranges()
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    /// Requests this worker has at the IO thread.
    pub fn in_flight(&self) -> usize {
        self.handle.in_flight()
    }
}
