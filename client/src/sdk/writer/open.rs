//! Opening a stream for writing (stub).

use wire::{Epoch, StreamId};

use crate::sdk::error::SdkError;
use crate::sdk::io::Io;

pub(crate) struct Opened {
    pub(crate) epoch: Epoch,
    pub(crate) range: wire::Range,
}

pub(crate) async fn open(_io: &Io, _stream: StreamId) -> Result<Opened, SdkError> {
    Err(SdkError::Closed)
}
