//! UPDATE_STREAM (`0x0303`): change a stream's settings, or raise its epoch. Raising the epoch
//! is how a writer opens a stream: every writer with a lower epoch is fenced from then on.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{stream_response, Message, MessageKind};
use crate::types::{Epoch, StreamId};

const MASK_REPLICA_COUNT: u8 = 0x01;
const MASK_ACK_COUNT: u8 = 0x02;
const MASK_RETENTION: u8 = 0x04;
const MASK_EPOCH: u8 = 0x08;
const MASK_RETENTION_BYTES: u8 = 0x10;
const MASK_KNOWN: u8 =
    MASK_REPLICA_COUNT | MASK_ACK_COUNT | MASK_RETENTION | MASK_EPOCH | MASK_RETENTION_BYTES;

/// UPDATE_STREAM request header (40 bytes). `None` leaves a field unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateStreamRequest {
    /// The stream.
    pub stream_id: StreamId,
    /// New R.
    pub replica_count: Option<u8>,
    /// New A.
    pub ack_count: Option<u8>,
    /// New retention (`Some(0)` keeps data forever).
    pub retention_ms: Option<u64>,
    /// New retention by size (`Some(0)` = unlimited).
    pub retention_bytes: Option<u64>,
    /// New writer epoch; must be greater than the current one, else `STALE_EPOCH`.
    pub epoch: Option<Epoch>,
}

impl Message for UpdateStreamRequest {
    const OPCODE: Opcode = Opcode::UpdateStream;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        40
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        let mut mask = 0;
        for (present, bit) in [
            (self.replica_count.is_some(), MASK_REPLICA_COUNT),
            (self.ack_count.is_some(), MASK_ACK_COUNT),
            (self.retention_ms.is_some(), MASK_RETENTION),
            (self.epoch.is_some(), MASK_EPOCH),
            (self.retention_bytes.is_some(), MASK_RETENTION_BYTES),
        ] {
            if present {
                mask |= bit;
            }
        }
        buf.put_u64_le(self.stream_id.0);
        buf.put_u8(mask);
        buf.put_u8(self.replica_count.unwrap_or(0));
        buf.put_u8(self.ack_count.unwrap_or(0));
        buf.put_u8(0);
        buf.put_u32_le(0);
        buf.put_u64_le(self.retention_ms.unwrap_or(0));
        buf.put_u64_le(self.retention_bytes.unwrap_or(0));
        buf.put_u64_le(self.epoch.map_or(0, |epoch| epoch.0));
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let mask = reader.u8("mask")?;
        if mask & !MASK_KNOWN != 0 {
            return Err(reader.malformed("mask", "reserved bit set"));
        }
        let replica_count = reader.u8("replica_count")?;
        let ack_count = reader.u8("ack_count")?;
        reader.reserved_u8("reserved")?;
        reader.reserved_u32("reserved")?;
        let retention_ms = reader.u64("retention_ms")?;
        let retention_bytes = reader.u64("retention_bytes")?;
        let epoch = reader.u64("epoch")?;
        reader.finish()?;
        // A field whose bit is clear must be zero, so every request has exactly one encoding.
        let field = |bit: u8, name: &'static str, value: u64| {
            if mask & bit != 0 {
                Ok(Some(value))
            } else if value == 0 {
                Ok(None)
            } else {
                Err(DecodeError::MalformedHeader {
                    opcode: Opcode::UpdateStream,
                    field: name,
                    reason: "value set but its mask bit is clear",
                })
            }
        };
        Ok(UpdateStreamRequest {
            stream_id,
            replica_count: field(MASK_REPLICA_COUNT, "replica_count", replica_count.into())?
                .map(|value| value as u8),
            ack_count: field(MASK_ACK_COUNT, "ack_count", ack_count.into())?
                .map(|value| value as u8),
            retention_ms: field(MASK_RETENTION, "retention_ms", retention_ms)?,
            retention_bytes: field(MASK_RETENTION_BYTES, "retention_bytes", retention_bytes)?,
            epoch: field(MASK_EPOCH, "epoch", epoch)?.map(Epoch),
        })
    }
}

stream_response!(UpdateStreamResponse, UpdateStream);
