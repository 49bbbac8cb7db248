//! TRIM_STREAM (`0x0304`): move a stream's trim point up; offsets below it are gone. A lower
//! point than the current one changes nothing.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{stream_response, Message, MessageKind};
use crate::types::{Offset, StreamId};

/// TRIM_STREAM request header (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrimStreamRequest {
    /// The stream.
    pub stream_id: StreamId,
    /// The new trim point.
    pub start_offset: Offset,
}

impl Message for TrimStreamRequest {
    const OPCODE: Opcode = Opcode::TrimStream;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        16
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
        buf.put_u64_le(self.start_offset.0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let start_offset = Offset(reader.u64("start_offset")?);
        reader.finish()?;
        Ok(TrimStreamRequest {
            stream_id,
            start_offset,
        })
    }
}

stream_response!(TrimStreamResponse, TrimStream);
