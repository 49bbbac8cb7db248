//! CREATE_STREAM (`0x0301`): the placement manager creates a stream and assigns its id.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{stream_response, Message, MessageKind};

/// CREATE_STREAM request header (24 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateStreamRequest {
    /// R: replicas per range, 1..=16.
    pub replica_count: u8,
    /// A: replicas that must make a batch durable, 1 ≤ A ≤ R.
    pub ack_count: u8,
    /// Retention by age; 0 keeps data forever.
    pub retention_ms: u64,
    /// Retention by size; 0 = unlimited.
    pub retention_bytes: u64,
}

impl Message for CreateStreamRequest {
    const OPCODE: Opcode = Opcode::CreateStream;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        24
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(self.replica_count);
        buf.put_u8(self.ack_count);
        buf.put_u16_le(0);
        buf.put_u32_le(0);
        buf.put_u64_le(self.retention_ms);
        buf.put_u64_le(self.retention_bytes);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let replica_count = reader.u8("replica_count")?;
        let ack_count = reader.u8("ack_count")?;
        reader.reserved_u16("reserved")?;
        reader.reserved_u32("reserved")?;
        let retention_ms = reader.u64("retention_ms")?;
        let retention_bytes = reader.u64("retention_bytes")?;
        reader.finish()?;
        Ok(CreateStreamRequest {
            replica_count,
            ack_count,
            retention_ms,
            retention_bytes,
        })
    }
}

stream_response!(CreateStreamResponse, CreateStream);
