//! Encoding frames into a caller's buffer, and the incremental [`Decoder`] that splits whole
//! frames off a receive buffer. Also the small reader and writer helpers every message header
//! is built from.
//!
//! Receiving: append socket bytes to a `BytesMut`, call [`Decoder::decode`] until it returns
//! `Ok(None)`. The decoder validates the length against its maximum before reserving anything,
//! so a peer can never make it hold more than one maximum-size frame; frames come out as
//! [`Bytes`] views into that buffer, without copying.
//!
//! Sending: [`encode_request`] and friends write the whole frame into one buffer (the payload
//! is copied once). For large payloads, [`encode_parts`] writes only the fixed part and header
//! and returns the CRC trailer, so the frame can go out by vectored write as
//! `head + payload + trailer`, the payload never copied.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::frame::{
    check_prefix, parse_complete, Flags, Frame, Opcode, PrefixCheck, CRC_BYTES,
    DEFAULT_MAX_FRAME_BYTES, LENGTH_FIELD_BYTES, MAGIC, OVERHEAD_BYTES, PREFIX_BYTES, VERSION,
};
use crate::msg::error_response::ErrorResponse;
use crate::msg::goaway::Goaway;
use crate::msg::{Message, MessageKind};

/// Incremental frame decoder with a bound on the frame size.
#[derive(Clone, Debug)]
pub struct Decoder {
    max_frame_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder {
    /// A decoder accepting frames of at most `max_frame_bytes` (including the length field).
    /// Values below the 28-byte minimum frame are raised to it.
    pub fn new(max_frame_bytes: usize) -> Decoder {
        Decoder {
            max_frame_bytes: max_frame_bytes.max(OVERHEAD_BYTES),
        }
    }

    /// The configured maximum frame size in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Splits the next whole frame off the front of `buf`.
    ///
    /// * `Ok(Some(frame))`: a frame was removed from `buf`; call again, more may follow.
    /// * `Ok(None)`: `buf` holds only the start of a frame; read more bytes into it. If the
    ///   frame's length is known, `buf` has been given the capacity for the rest (bounded by the
    ///   maximum frame size).
    /// * `Err(e)`: bad input. If [`DecodeError::is_fatal`], the stream is out of sync and the
    ///   connection should be closed; otherwise the bad frame was removed from `buf` and
    ///   decoding can continue.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        match check_prefix(buf, self.max_frame_bytes)? {
            PrefixCheck::Incomplete { frame_bytes } => {
                // The length was checked against the maximum before this reservation.
                if frame_bytes > buf.len() {
                    buf.reserve(frame_bytes - buf.len());
                }
                Ok(None)
            }
            PrefixCheck::Complete { frame_bytes } => {
                let bytes = buf.split_to(frame_bytes).freeze();
                parse_complete(bytes).map(Some)
            }
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A string or list is longer than the protocol allows for that field.
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length (bytes for strings, items for lists).
        length: usize,
        /// The protocol's maximum for it.
        max: usize,
    },
    /// The frame would not fit the 32-bit length field.
    FrameTooLong {
        /// The frame's size in bytes.
        length: u64,
    },
}

impl EncodeError {
    pub(crate) fn check_length(
        field: &'static str,
        length: usize,
        max: usize,
    ) -> Result<(), EncodeError> {
        if length > max {
            return Err(EncodeError::FieldTooLong { field, length, max });
        }
        Ok(())
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::FieldTooLong { field, length, max } => write!(
                formatter,
                "field `{field}` is {length} long, the protocol allows at most {max}"
            ),
            EncodeError::FrameTooLong { length } => write!(
                formatter,
                "frame of {length} bytes does not fit the 32-bit length field"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// A buffer frames can be encoded into: `BytesMut` or `Vec<u8>`.
pub trait FrameBuf: BufMut + AsMut<[u8]> {}
impl<T: BufMut + AsMut<[u8]>> FrameBuf for T {}

/// Frame length field value for a header and payload of these sizes, or an error if it does not
/// fit in 32 bits.
fn length_field(header_bytes: usize, payload_bytes: usize) -> Result<u32, EncodeError> {
    let length =
        (OVERHEAD_BYTES - LENGTH_FIELD_BYTES) as u64 + header_bytes as u64 + payload_bytes as u64;
    u32::try_from(length).map_err(|_| EncodeError::FrameTooLong {
        length: length + LENGTH_FIELD_BYTES as u64,
    })
}

fn put_prefix<B: BufMut>(
    buf: &mut B,
    length: u32,
    opcode: Opcode,
    flags: Flags,
    request_id: u64,
    header_bytes: usize,
) {
    buf.put_u32_le(length);
    buf.put_u16_le(MAGIC);
    buf.put_u8(VERSION);
    buf.put_u8(flags.bits());
    buf.put_u16_le(opcode.as_u16());
    buf.put_u16_le(0);
    buf.put_u64_le(request_id);
    // header_bytes <= length, which fits u32.
    buf.put_u32_le(header_bytes as u32);
}

/// Writes a whole frame with an already encoded header into `buf`. Returns the frame's size.
pub fn encode_frame<B: FrameBuf>(
    buf: &mut B,
    opcode: Opcode,
    flags: Flags,
    request_id: u64,
    header: &[u8],
    payload: &[u8],
) -> Result<usize, EncodeError> {
    encode_with(
        buf,
        opcode,
        flags,
        request_id,
        header.len(),
        payload,
        |buf| buf.put_slice(header),
    )
}

fn encode_with<B: FrameBuf>(
    buf: &mut B,
    opcode: Opcode,
    flags: Flags,
    request_id: u64,
    header_bytes: usize,
    payload: &[u8],
    put_header: impl FnOnce(&mut B),
) -> Result<usize, EncodeError> {
    let length = length_field(header_bytes, payload.len())?;
    let start = buf.as_mut().len();
    put_prefix(buf, length, opcode, flags, request_id, header_bytes);
    put_header(buf);
    debug_assert_eq!(buf.as_mut().len() - start, PREFIX_BYTES + header_bytes);
    buf.put_slice(payload);
    let crc = crc32c::crc32c(&buf.as_mut()[start + LENGTH_FIELD_BYTES..]);
    buf.put_u32_le(crc);
    let frame_bytes = buf.as_mut().len() - start;
    debug_assert_eq!(frame_bytes, length as usize + LENGTH_FIELD_BYTES);
    Ok(frame_bytes)
}

fn encode_message<M: Message, B: FrameBuf>(
    buf: &mut B,
    flags: Flags,
    request_id: u64,
    message: &M,
    payload: &[u8],
) -> Result<usize, EncodeError> {
    message.validate()?;
    encode_with(
        buf,
        M::OPCODE,
        flags,
        request_id,
        message.encoded_len(),
        payload,
        |buf| message.encode(buf),
    )
}

/// Writes a request frame for `message` with `payload` into `buf`. Returns the frame's size.
/// `M` must be a request type (checked in debug builds).
pub fn encode_request<M: Message, B: FrameBuf>(
    buf: &mut B,
    request_id: u64,
    message: &M,
    payload: &[u8],
) -> Result<usize, EncodeError> {
    debug_assert!(M::KIND == MessageKind::Request);
    encode_message(buf, Flags::REQUEST, request_id, message, payload)
}

/// Writes a successful, complete response frame for `message` into `buf`. Returns the frame's
/// size. `M` must be a response type (checked in debug builds).
pub fn encode_response<M: Message, B: FrameBuf>(
    buf: &mut B,
    request_id: u64,
    message: &M,
    payload: &[u8],
) -> Result<usize, EncodeError> {
    debug_assert!(M::KIND == MessageKind::Response);
    encode_message(buf, Flags::RESPONSE_END, request_id, message, payload)
}

/// Writes an error response to request `request_id` of operation `opcode` into `buf`.
/// Returns the frame's size.
pub fn encode_error<B: FrameBuf>(
    buf: &mut B,
    opcode: Opcode,
    request_id: u64,
    error: &ErrorResponse,
) -> Result<usize, EncodeError> {
    error.validate()?;
    encode_with(
        buf,
        opcode,
        Flags::ERROR_RESPONSE,
        request_id,
        error.encoded_len(),
        &[],
        |buf| error.encode(buf),
    )
}

/// Writes a GOAWAY frame (request id 0, never answered) into `buf`.
pub fn encode_goaway<B: FrameBuf>(buf: &mut B, goaway: &Goaway) -> Result<usize, EncodeError> {
    encode_message(buf, Flags::REQUEST, 0, goaway, &[])
}

/// A frame split for vectored write: send `head`, then `payload`, then `trailer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameParts {
    /// Length field through header.
    pub head: Bytes,
    /// The payload, not copied.
    pub payload: Bytes,
    /// The CRC32C, little-endian.
    pub trailer: [u8; CRC_BYTES],
}

impl FrameParts {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len() + CRC_BYTES
    }

    /// Always false: a frame has at least 28 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The three parts as slices, in sending order (for `writev`/`sendmsg`).
    pub fn slices(&self) -> [&[u8]; 3] {
        [&self.head, &self.payload, &self.trailer]
    }

    /// The frame as one contiguous buffer (copies; for tests and small frames).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len());
        for part in self.slices() {
            bytes.extend_from_slice(part);
        }
        bytes
    }
}

/// Encodes a frame for `message` without copying `payload`: the fixed part and header are
/// written into `scratch` (then split off it as `head`), the CRC is computed over head and
/// payload. `flags` says whether this is a request ([`Flags::REQUEST`]) or response
/// ([`Flags::RESPONSE_END`]).
pub fn encode_parts<M: Message>(
    scratch: &mut BytesMut,
    flags: Flags,
    request_id: u64,
    message: &M,
    payload: Bytes,
) -> Result<FrameParts, EncodeError> {
    message.validate()?;
    let header_bytes = message.encoded_len();
    let length = length_field(header_bytes, payload.len())?;
    let start = scratch.len();
    scratch.reserve(PREFIX_BYTES + header_bytes);
    put_prefix(scratch, length, M::OPCODE, flags, request_id, header_bytes);
    message.encode(scratch);
    let head = scratch.split_off(start).freeze();
    debug_assert_eq!(head.len(), PREFIX_BYTES + header_bytes);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[LENGTH_FIELD_BYTES..]), &payload);
    Ok(FrameParts {
        head,
        payload,
        trailer: crc.to_le_bytes(),
    })
}

/// Writes a string as `u16 length` + UTF-8 bytes. The caller has validated the length.
pub(crate) fn put_string<B: BufMut>(buf: &mut B, value: &str) {
    debug_assert!(value.len() <= u16::MAX as usize);
    buf.put_u16_le(value.len() as u16);
    buf.put_slice(value.as_bytes());
}

/// Writes an optional u64, absent as `u64::MAX`.
pub(crate) fn put_optional_u64<B: BufMut>(buf: &mut B, value: Option<u64>) {
    buf.put_u64_le(value.unwrap_or(ABSENT));
}

/// Wire value of an absent optional u64.
pub(crate) const ABSENT: u64 = u64::MAX;

/// Reads a header field by field; every failure names the operation and the field.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    opcode: Opcode,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(opcode: Opcode, bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, opcode }
    }

    pub(crate) fn malformed(&self, field: &'static str, reason: &'static str) -> DecodeError {
        DecodeError::MalformedHeader {
            opcode: self.opcode,
            field,
            reason,
        }
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(self.malformed(field, "header ends before this field"));
        };
        self.bytes = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.take(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.take(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.take(field).map(u64::from_le_bytes)
    }

    pub(crate) fn optional_u64(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        let value = self.u64(field)?;
        Ok((value != ABSENT).then_some(value))
    }

    pub(crate) fn reserved_u8(&mut self, field: &'static str) -> Result<(), DecodeError> {
        match self.u8(field)? {
            0 => Ok(()),
            _ => Err(self.malformed(field, "reserved field is not zero")),
        }
    }

    pub(crate) fn reserved_u16(&mut self, field: &'static str) -> Result<(), DecodeError> {
        match self.u16(field)? {
            0 => Ok(()),
            _ => Err(self.malformed(field, "reserved field is not zero")),
        }
    }

    pub(crate) fn reserved_u32(&mut self, field: &'static str) -> Result<(), DecodeError> {
        match self.u32(field)? {
            0 => Ok(()),
            _ => Err(self.malformed(field, "reserved field is not zero")),
        }
    }

    /// A `u32` of flag bits, of which only those in `known` may be set.
    pub(crate) fn flags_u32(
        &mut self,
        field: &'static str,
        known: u32,
    ) -> Result<u32, DecodeError> {
        let flags = self.u32(field)?;
        if flags & !known != 0 {
            return Err(self.malformed(field, "reserved flag bits are set"));
        }
        Ok(flags)
    }

    /// A UTF-8 string of at most `max` bytes.
    pub(crate) fn string(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<String, DecodeError> {
        let length = self.u16(field)? as usize;
        self.text(field, length, max)
    }

    /// `length` bytes of UTF-8 whose length was read earlier, at most `max`.
    pub(crate) fn text(
        &mut self,
        field: &'static str,
        length: usize,
        max: usize,
    ) -> Result<String, DecodeError> {
        if length > max {
            return Err(self.malformed(field, "string longer than its maximum"));
        }
        if length > self.bytes.len() {
            return Err(self.malformed(field, "string runs past the end of the header"));
        }
        let (text, rest) = self.bytes.split_at(length);
        let text = std::str::from_utf8(text).map_err(|_| self.malformed(field, "not UTF-8"))?;
        self.bytes = rest;
        Ok(text.to_owned())
    }

    /// A `u32` item count, checked against `max` and against the remaining bytes (each item
    /// taking at least `min_item_bytes`) before the caller allocates for it.
    pub(crate) fn count_u32(
        &mut self,
        field: &'static str,
        min_item_bytes: usize,
        max: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > max {
            return Err(self.malformed(field, "more items than the protocol allows"));
        }
        if count.saturating_mul(min_item_bytes) > self.bytes.len() {
            return Err(self.malformed(field, "more items than the header has bytes for"));
        }
        Ok(count)
    }

    /// Checks that the whole header was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if !self.bytes.is_empty() {
            return Err(self.malformed("end", "bytes after the last field"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{AppendRequest, PingRequest};
    use crate::types::{Epoch, Offset, RangeIndex, StreamId};

    #[test]
    fn decoder_splits_frames_and_waits_for_more() {
        let mut wire = BytesMut::new();
        encode_request(&mut wire, 7, &PingRequest {}, b"abc").unwrap();
        let append = AppendRequest {
            repair: false,
            stream_id: StreamId(1),
            range_index: RangeIndex(2),
            epoch: Epoch(3),
            confirmed_offset: Some(Offset(4)),
        };
        encode_request(&mut wire, 8, &append, &[9; 100]).unwrap();
        let all = wire.freeze();

        let mut decoder = Decoder::default();
        let mut received = BytesMut::new();
        let mut frames = Vec::new();
        for byte in all.iter() {
            received.put_u8(*byte);
            while let Some(frame) = decoder.decode(&mut received).unwrap() {
                frames.push(frame);
            }
        }
        assert!(received.is_empty());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].opcode, Opcode::Ping);
        assert_eq!(frames[0].request_id, 7);
        assert_eq!(&frames[0].payload[..], b"abc");
        assert_eq!(frames[1].decode_message::<AppendRequest>().unwrap(), append);
        assert_eq!(&frames[1].payload[..], &[9; 100][..]);
    }

    #[test]
    fn length_above_maximum_is_rejected_before_reserving() {
        let mut decoder = Decoder::new(1024);
        let mut received = BytesMut::new();
        received.put_u32_le(u32::MAX);
        let capacity = received.capacity();
        assert_eq!(
            decoder.decode(&mut received),
            Err(DecodeError::TooLong {
                length: u64::from(u32::MAX) + 4,
                max: 1024
            })
        );
        assert_eq!(received.capacity(), capacity);
    }

    #[test]
    fn parts_match_contiguous_encoding() {
        let append = AppendRequest::default();
        let payload = Bytes::from(vec![5; 4096]);
        let mut contiguous = Vec::new();
        encode_request(&mut contiguous, 3, &append, &payload).unwrap();
        let mut scratch = BytesMut::new();
        let parts =
            encode_parts(&mut scratch, Flags::REQUEST, 3, &append, payload.clone()).unwrap();
        assert_eq!(parts.to_vec(), contiguous);
        assert_eq!(parts.len(), contiguous.len());
    }
}
