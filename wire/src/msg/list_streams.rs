//! LIST_STREAMS (`0x0306`): streams in id order, one page at a time: ask again from the last id
//! + 1 until fewer than asked come back.

use bytes::BufMut;

use crate::codec::{EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{Message, MessageKind};
use crate::types::{Stream, StreamId};

/// Most streams in one answer.
pub const MAX_LISTED_STREAMS: usize = 65_536;

/// LIST_STREAMS request header (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListStreamsRequest {
    /// First id to list.
    pub start_stream_id: StreamId,
    /// Most streams wanted; 0 means the placement manager's page limit.
    pub max_count: u32,
}

impl Message for ListStreamsRequest {
    const OPCODE: Opcode = Opcode::ListStreams;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        16
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.start_stream_id.0);
        buf.put_u32_le(self.max_count);
        buf.put_u32_le(0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let start_stream_id = StreamId(reader.u64("start_stream_id")?);
        let max_count = reader.u32("max_count")?;
        reader.reserved_u32("reserved")?;
        reader.finish()?;
        Ok(ListStreamsRequest {
            start_stream_id,
            max_count,
        })
    }
}

/// LIST_STREAMS response header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListStreamsResponse {
    /// The streams, at most [`MAX_LISTED_STREAMS`].
    pub streams: Vec<Stream>,
}

impl Message for ListStreamsResponse {
    const OPCODE: Opcode = Opcode::ListStreams;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        4 + self.streams.len() * Stream::ENCODED_BYTES
    }

    fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("streams", self.streams.len(), MAX_LISTED_STREAMS)
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32_le(self.streams.len() as u32);
        for stream in &self.streams {
            stream.encode(buf);
        }
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let count = reader.count_u32("streams", Stream::ENCODED_BYTES, MAX_LISTED_STREAMS)?;
        let mut streams = Vec::with_capacity(count);
        for _ in 0..count {
            streams.push(Stream::decode(&mut reader)?);
        }
        reader.finish()?;
        Ok(ListStreamsResponse { streams })
    }
}
