//! FETCH (`0x0102`): read whole record batches from a range, starting with the batch that
//! contains `start_offset`, up to `max_bytes` (at least one batch if any is readable), waiting up
//! to `max_wait_ms` for data to become readable (long poll). Readable means below the range's
//! confirmed offset, or its end once sealed.

use bytes::BufMut;

use crate::codec::{put_optional_u64, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{Message, MessageKind};
use crate::types::{Offset, RangeIndex, StreamId};

/// Default `max_bytes` a client asks for: 1 MiB.
pub const DEFAULT_FETCH_MAX_BYTES: u32 = 1 << 20;
/// Default cap a node puts on `max_wait_ms`.
pub const DEFAULT_MAX_WAIT_CAP_MS: u32 = 30_000;

/// FETCH request header (32 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchRequest {
    /// Stream read from.
    pub stream_id: StreamId,
    /// Range read from.
    pub range_index: RangeIndex,
    /// Payload budget in bytes; at least one whole batch is returned if one is readable. 0 is
    /// `INVALID_ARGUMENT`.
    pub max_bytes: u32,
    /// First offset wanted.
    pub start_offset: Offset,
    /// How long to wait for readable data; 0 answers at once.
    pub max_wait_ms: u32,
    /// Flag `DURABLE`: read up to this replica's durable end instead of the confirmed offset.
    /// Only on a fenced or sealed range (the repair step of a seal reads this way).
    pub read_durable: bool,
    /// Flag `SEALED`: the reader knows the range is sealed. A replica that cannot serve
    /// `start_offset` now answers `OFFSET_NOT_HELD` instead of waiting.
    pub expect_sealed: bool,
}

impl FetchRequest {
    /// Bytes of the encoding.
    pub const ENCODED_BYTES: usize = 32;
    /// Flag bit of [`FetchRequest::read_durable`].
    pub const FLAG_DURABLE: u32 = 1;
    /// Flag bit of [`FetchRequest::expect_sealed`].
    pub const FLAG_SEALED: u32 = 2;
}

impl Message for FetchRequest {
    const OPCODE: Opcode = Opcode::Fetch;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        Self::ENCODED_BYTES
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
        buf.put_u32_le(self.range_index.0);
        buf.put_u32_le(self.max_bytes);
        buf.put_u64_le(self.start_offset.0);
        buf.put_u32_le(self.max_wait_ms);
        let mut flags = 0;
        if self.read_durable {
            flags |= Self::FLAG_DURABLE;
        }
        if self.expect_sealed {
            flags |= Self::FLAG_SEALED;
        }
        buf.put_u32_le(flags);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let range_index = RangeIndex(reader.u32("range_index")?);
        let max_bytes = reader.u32("max_bytes")?;
        let start_offset = Offset(reader.u64("start_offset")?);
        let max_wait_ms = reader.u32("max_wait_ms")?;
        let flags = reader.flags_u32("flags", Self::FLAG_DURABLE | Self::FLAG_SEALED)?;
        reader.finish()?;
        Ok(FetchRequest {
            stream_id,
            range_index,
            max_bytes,
            start_offset,
            max_wait_ms,
            read_durable: flags & Self::FLAG_DURABLE != 0,
            expect_sealed: flags & Self::FLAG_SEALED != 0,
        })
    }
}

/// FETCH response header (24 bytes); the batches travel in the frame payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchResponse {
    /// Readable bound at the time of the answer; `None` if unknown.
    pub confirmed_offset: Option<Offset>,
    /// Next offset this replica expects.
    pub next_offset: Offset,
    /// The range's end if sealed; `None` while open.
    pub end_offset: Option<Offset>,
}

impl Message for FetchResponse {
    const OPCODE: Opcode = Opcode::Fetch;
    const KIND: MessageKind = MessageKind::Response;
    const HAS_PAYLOAD: bool = true;

    fn encoded_len(&self) -> usize {
        24
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_optional_u64(buf, self.confirmed_offset.map(|offset| offset.0));
        buf.put_u64_le(self.next_offset.0);
        put_optional_u64(buf, self.end_offset.map(|offset| offset.0));
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let confirmed_offset = reader.optional_u64("confirmed_offset")?.map(Offset);
        let next_offset = Offset(reader.u64("next_offset")?);
        let end_offset = reader.optional_u64("end_offset")?.map(Offset);
        reader.finish()?;
        Ok(FetchResponse {
            confirmed_offset,
            next_offset,
            end_offset,
        })
    }
}
