//! [`Reader`]: reads a stream across its ranges (stub; filled in below).

use std::sync::Arc;

use bytes::Bytes;
use wire::{Offset, StreamId};

use crate::sdk::error::SdkError;
use crate::sdk::io::IoHandle;

/// How far a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Tail the open range with long polls; never ends.
    Follow,
    /// Stop at the stream's end as of the open: `None` after the last offset readable then.
    ToEnd,
}

/// Records of one batch, from `base_offset` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    pub base_offset: Offset,
    pub records: Vec<Bytes>,
}

/// A stream's reader.
pub struct Reader {
    _io: Arc<IoHandle>,
    _stream: StreamId,
}

impl Reader {
    pub(crate) async fn open(
        io: Arc<IoHandle>,
        stream: StreamId,
        _from: Offset,
        _mode: ReadMode,
    ) -> Result<Reader, SdkError> {
        Ok(Reader {
            _io: io,
            _stream: stream,
        })
    }

    /// The next batch; `None` once a [`ReadMode::ToEnd`] reader reached its end.
    pub async fn next(&mut self) -> Result<Option<ReadBatch>, SdkError> {
        Err(SdkError::Closed)
    }
}
