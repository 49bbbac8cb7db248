//! APPEND (`0x0101`): write record batches to a range. The payload is one or more record batches
//! (see [`crate::batch`]) back to back, all for this stream, range and epoch, with contiguous
//! offsets. The node accepts them only if the first base offset equals the range's next offset,
//! and answers once they are durable.
//!
//! Two further forms: an APPEND with an empty payload only reports `confirmed_offset` (an idle
//! writer's report), and a **repair** APPEND ([`AppendRequest::repair`]) copies batches written
//! under older epochs into a fenced range during a seal.

use bytes::BufMut;

use crate::codec::{put_optional_u64, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{Message, MessageKind};
use crate::types::{Epoch, Offset, RangeIndex, StreamId};

/// APPEND request header (32 bytes); the batches travel in the frame payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendRequest {
    /// Stream written to.
    pub stream_id: StreamId,
    /// Range written to.
    pub range_index: RangeIndex,
    /// Writer epoch; lower than the range's is answered `STALE_EPOCH`.
    pub epoch: Epoch,
    /// Every offset below it is acknowledged to the application; the node may serve FETCH up to
    /// it. `None`: no news.
    pub confirmed_offset: Option<Offset>,
    /// Flag `REPAIR`: the batches are copies of batches another replica holds, sent by the writer
    /// that fenced the range (its epoch must equal the range's, which must be fenced); their
    /// headers may carry older epochs, and they must lie below the end if one is fixed.
    pub repair: bool,
}

impl AppendRequest {
    /// Bytes of the encoding.
    pub const ENCODED_BYTES: usize = 32;
    /// Flag bit of [`AppendRequest::repair`].
    pub const FLAG_REPAIR: u32 = 1;
}

impl Message for AppendRequest {
    const OPCODE: Opcode = Opcode::Append;
    const KIND: MessageKind = MessageKind::Request;
    const HAS_PAYLOAD: bool = true;

    fn encoded_len(&self) -> usize {
        Self::ENCODED_BYTES
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
        buf.put_u32_le(self.range_index.0);
        buf.put_u32_le(if self.repair { Self::FLAG_REPAIR } else { 0 });
        buf.put_u64_le(self.epoch.0);
        put_optional_u64(buf, self.confirmed_offset.map(|offset| offset.0));
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let range_index = RangeIndex(reader.u32("range_index")?);
        let flags = reader.flags_u32("flags", Self::FLAG_REPAIR)?;
        let epoch = Epoch(reader.u64("epoch")?);
        let confirmed_offset = reader.optional_u64("confirmed_offset")?.map(Offset);
        reader.finish()?;
        Ok(AppendRequest {
            stream_id,
            range_index,
            epoch,
            confirmed_offset,
            repair: flags & Self::FLAG_REPAIR != 0,
        })
    }
}

/// APPEND response header (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendResponse {
    /// First offset of the appended batches.
    pub base_offset: Offset,
    /// One past the last appended offset: the range's next offset on this node.
    pub next_offset: Offset,
}

impl Message for AppendResponse {
    const OPCODE: Opcode = Opcode::Append;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        16
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.base_offset.0);
        buf.put_u64_le(self.next_offset.0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let base_offset = Offset(reader.u64("base_offset")?);
        let next_offset = Offset(reader.u64("next_offset")?);
        reader.finish()?;
        Ok(AppendResponse {
            base_offset,
            next_offset,
        })
    }
}
