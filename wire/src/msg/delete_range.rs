//! DELETE_RANGE (`0x0206`): the placement manager tells a data node to delete its replica of a
//! range, data and catalog entry. Idempotent: deleting a range the node does not hold succeeds,
//! so the placement manager can retry. The answer is empty.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{empty_message, Message, MessageKind};
use crate::types::{RangeIndex, StreamId};

/// DELETE_RANGE request header (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// The stream.
    pub stream_id: StreamId,
    /// The range to delete.
    pub range_index: RangeIndex,
}

impl Message for DeleteRangeRequest {
    const OPCODE: Opcode = Opcode::DeleteRange;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        16
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
        buf.put_u32_le(self.range_index.0);
        buf.put_u32_le(0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let range_index = RangeIndex(reader.u32("range_index")?);
        reader.reserved_u32("reserved")?;
        reader.finish()?;
        Ok(DeleteRangeRequest {
            stream_id,
            range_index,
        })
    }
}

/// DELETE_RANGE response: empty header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {}

empty_message!(DeleteRangeResponse, DeleteRange, Response, false);
