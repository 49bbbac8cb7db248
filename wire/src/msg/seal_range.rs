//! SEAL_RANGE (`0x0202`): close a range at an end offset. To the placement manager it records
//! the end; to a data node it stops appends (with no end given, at the node's next offset). Both
//! raise the range's epoch to the sealing writer's, fencing older writers.

use bytes::BufMut;

use crate::codec::{put_optional_u64, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{Message, MessageKind};
use crate::types::{Epoch, Offset, RangeIndex, StreamId};

/// SEAL_RANGE request header (32 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealRangeRequest {
    /// The stream.
    pub stream_id: StreamId,
    /// The range to seal.
    pub range_index: RangeIndex,
    /// The sealing writer's epoch; lower than the range's is `STALE_EPOCH`.
    pub epoch: Epoch,
    /// The end to seal at; required by the placement manager, optional for a data node (`None`
    /// seals at its next offset).
    pub end_offset: Option<Offset>,
}

impl Message for SealRangeRequest {
    const OPCODE: Opcode = Opcode::SealRange;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        32
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
        buf.put_u32_le(self.range_index.0);
        buf.put_u32_le(0);
        buf.put_u64_le(self.epoch.0);
        put_optional_u64(buf, self.end_offset.map(|offset| offset.0));
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let range_index = RangeIndex(reader.u32("range_index")?);
        reader.reserved_u32("reserved")?;
        let epoch = Epoch(reader.u64("epoch")?);
        let end_offset = reader.optional_u64("end_offset")?.map(Offset);
        reader.finish()?;
        Ok(SealRangeRequest {
            stream_id,
            range_index,
            epoch,
            end_offset,
        })
    }
}

/// SEAL_RANGE response header (8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealRangeResponse {
    /// The range's end after sealing.
    pub end_offset: Offset,
}

impl Message for SealRangeResponse {
    const OPCODE: Opcode = Opcode::SealRange;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        8
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.end_offset.0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let end_offset = Offset(reader.u64("end_offset")?);
        reader.finish()?;
        Ok(SealRangeResponse { end_offset })
    }
}
