//! LIST_RANGES (`0x0204`): the ranges of one stream, or every range the receiver holds, in
//! (stream, index) order.

use bytes::BufMut;

use crate::codec::{put_optional_u64, EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{Message, MessageKind};
use crate::types::{Range, StreamId};

/// Most ranges in one answer.
pub const MAX_LISTED_RANGES: usize = 1 << 20;

/// LIST_RANGES request header (8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListRangesRequest {
    /// The stream; `None` lists every range the receiver holds.
    pub stream_id: Option<StreamId>,
}

impl Message for ListRangesRequest {
    const OPCODE: Opcode = Opcode::ListRanges;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        8
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_optional_u64(buf, self.stream_id.map(|stream_id| stream_id.0));
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = reader.optional_u64("stream_id")?.map(StreamId);
        reader.finish()?;
        Ok(ListRangesRequest { stream_id })
    }
}

/// LIST_RANGES response header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRangesResponse {
    /// The ranges, at most [`MAX_LISTED_RANGES`].
    pub ranges: Vec<Range>,
}

impl Message for ListRangesResponse {
    const OPCODE: Opcode = Opcode::ListRanges;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        4 + self.ranges.iter().map(Range::encoded_len).sum::<usize>()
    }

    fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("ranges", self.ranges.len(), MAX_LISTED_RANGES)?;
        self.ranges.iter().try_for_each(Range::validate)
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32_le(self.ranges.len() as u32);
        for range in &self.ranges {
            range.encode(buf);
        }
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let count = reader.count_u32("ranges", Range::FIXED_BYTES, MAX_LISTED_RANGES)?;
        let mut ranges = Vec::with_capacity(count);
        for _ in 0..count {
            ranges.push(Range::decode(&mut reader)?);
        }
        reader.finish()?;
        Ok(ListRangesResponse { ranges })
    }
}
