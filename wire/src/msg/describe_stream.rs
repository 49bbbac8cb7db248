//! DESCRIBE_STREAM (`0x0302`): one stream's record (a deleted stream is still described, with
//! its deleted flag set, until the placement manager forgets it).

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{stream_response, Message, MessageKind};
use crate::types::StreamId;

/// DESCRIBE_STREAM request header (8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescribeStreamRequest {
    /// The stream.
    pub stream_id: StreamId,
}

impl Message for DescribeStreamRequest {
    const OPCODE: Opcode = Opcode::DescribeStream;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        8
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        reader.finish()?;
        Ok(DescribeStreamRequest { stream_id })
    }
}

stream_response!(DescribeStreamResponse, DescribeStream);
