//! TRIM_RANGE (`0x0205`): the placement manager tells a data node to drop a range's whole record
//! batches below an offset (retention). Idempotent: a lower offset than the range's start is a
//! no-op. The answer is empty.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{empty_message, Message, MessageKind};
use crate::types::{Offset, RangeIndex, StreamId};

/// TRIM_RANGE request header (24 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrimRangeRequest {
    /// The stream.
    pub stream_id: StreamId,
    /// The range to trim.
    pub range_index: RangeIndex,
    /// New start of the range: batches entirely below it are dropped; the batch containing it
    /// stays.
    pub offset: Offset,
}

impl Message for TrimRangeRequest {
    const OPCODE: Opcode = Opcode::TrimRange;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        24
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
        buf.put_u32_le(self.range_index.0);
        buf.put_u32_le(0);
        buf.put_u64_le(self.offset.0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let range_index = RangeIndex(reader.u32("range_index")?);
        reader.reserved_u32("reserved")?;
        let offset = Offset(reader.u64("offset")?);
        reader.finish()?;
        Ok(TrimRangeRequest {
            stream_id,
            range_index,
            offset,
        })
    }
}

/// TRIM_RANGE response: empty header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrimRangeResponse {}

empty_message!(TrimRangeResponse, TrimRange, Response, false);
