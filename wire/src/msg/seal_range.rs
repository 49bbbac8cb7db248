//! SEAL_RANGE (`0x0202`): close a range at an end offset. To the placement manager it records
//! the end; to a data node it stops appends (with no end given, at the node's next offset). Both
//! raise the range's epoch to the sealing writer's, fencing older writers.
//!
//! The **fence-only** form ([`SealRangeRequest::fence_only`], data nodes only) is the first step
//! of a seal: it adopts the epoch, stops appends, lets the appends in flight settle and answers
//! the replica's durable end, without fixing an end.

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
    /// seals at its next offset). Must be `None` with `fence_only`.
    pub end_offset: Option<Offset>,
    /// Flag `FENCE_ONLY` (data nodes): fence the range at `epoch` and report, without sealing.
    pub fence_only: bool,
}

impl SealRangeRequest {
    /// Flag bit of [`SealRangeRequest::fence_only`].
    pub const FLAG_FENCE_ONLY: u32 = 1;
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
        buf.put_u32_le(if self.fence_only {
            Self::FLAG_FENCE_ONLY
        } else {
            0
        });
        buf.put_u64_le(self.epoch.0);
        put_optional_u64(buf, self.end_offset.map(|offset| offset.0));
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let range_index = RangeIndex(reader.u32("range_index")?);
        let flags = reader.flags_u32("flags", Self::FLAG_FENCE_ONLY)?;
        let epoch = Epoch(reader.u64("epoch")?);
        let end_offset = reader.optional_u64("end_offset")?.map(Offset);
        reader.finish()?;
        Ok(SealRangeRequest {
            stream_id,
            range_index,
            epoch,
            end_offset,
            fence_only: flags & Self::FLAG_FENCE_ONLY != 0,
        })
    }
}

/// SEAL_RANGE response header (24 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealRangeResponse {
    /// The range's end: after sealing; for a fence-only request the end already fixed, if any.
    pub end_offset: Option<Offset>,
    /// The answering replica's durable end (everything below it is on its disk); `None` from the
    /// placement manager.
    pub durable_end: Option<Offset>,
    /// The range's epoch after the request.
    pub epoch: Epoch,
}

impl Message for SealRangeResponse {
    const OPCODE: Opcode = Opcode::SealRange;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        24
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_optional_u64(buf, self.end_offset.map(|offset| offset.0));
        put_optional_u64(buf, self.durable_end.map(|offset| offset.0));
        buf.put_u64_le(self.epoch.0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let end_offset = reader.optional_u64("end_offset")?.map(Offset);
        let durable_end = reader.optional_u64("durable_end")?.map(Offset);
        let epoch = Epoch(reader.u64("epoch")?);
        reader.finish()?;
        Ok(SealRangeResponse {
            end_offset,
            durable_end,
            epoch,
        })
    }
}
