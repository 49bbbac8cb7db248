//! DELETE_STREAM (`0x0305`): mark a stream deleted; its data goes with retention.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{stream_response, Message, MessageKind};
use crate::types::StreamId;

/// DELETE_STREAM request header (8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteStreamRequest {
    /// The stream.
    pub stream_id: StreamId,
}

impl Message for DeleteStreamRequest {
    const OPCODE: Opcode = Opcode::DeleteStream;
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
        Ok(DeleteStreamRequest { stream_id })
    }
}

stream_response!(DeleteStreamResponse, DeleteStream);
