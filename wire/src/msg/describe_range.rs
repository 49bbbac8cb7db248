//! DESCRIBE_RANGE (`0x0203`): one range's record: epoch, bounds, and (from a data node) its
//! next and confirmed offsets.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{range_response, Message, MessageKind};
use crate::types::{RangeIndex, StreamId};

/// DESCRIBE_RANGE request header (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescribeRangeRequest {
    /// The stream.
    pub stream_id: StreamId,
    /// The range.
    pub range_index: RangeIndex,
}

impl Message for DescribeRangeRequest {
    const OPCODE: Opcode = Opcode::DescribeRange;
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
        Ok(DescribeRangeRequest {
            stream_id,
            range_index,
        })
    }
}

range_response!(DescribeRangeResponse, DescribeRange);
