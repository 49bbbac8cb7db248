//! The header of an error response (`docs/protocol.md` §3): any operation's response with the
//! `ERROR` flag carries this instead of its own response header.

use bytes::BufMut;

use crate::codec::{EncodeError, Reader};
use crate::error::{DecodeError, ErrorCode};
use crate::frame::Opcode;

/// Longest error or GOAWAY message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Why a request failed: a stable code, a code-specific number, and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    /// What went wrong; never [`ErrorCode::Ok`].
    pub code: ErrorCode,
    /// Meaning depends on `code` (`docs/protocol.md` §7), e.g. the node's next offset for
    /// [`ErrorCode::OffsetGap`]; 0 otherwise.
    pub detail: u64,
    /// What was expected, what was found, what to do. At most [`MAX_MESSAGE_BYTES`].
    pub message: String,
}

impl ErrorResponse {
    /// Fixed part of the encoding, before the message.
    pub const FIXED_BYTES: usize = 16;

    /// An error with `detail` 0.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            code,
            detail: 0,
            message: message.into(),
        }
    }

    /// The same error with `detail` set.
    pub fn with_detail(mut self, detail: u64) -> ErrorResponse {
        self.detail = detail;
        self
    }

    /// Whether the request may succeed if retried later.
    pub fn is_retriable(&self) -> bool {
        self.code.is_retriable()
    }

    /// The message cut to [`MAX_MESSAGE_BYTES`] at a character boundary, so building an error
    /// from arbitrary text never fails to encode.
    pub fn truncate_message(&mut self) {
        if self.message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !self.message.is_char_boundary(end) {
                end -= 1;
            }
            self.message.truncate(end);
        }
    }

    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        Self::FIXED_BYTES + self.message.len()
    }

    pub(crate) fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("message", self.message.len(), MAX_MESSAGE_BYTES)
    }

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u16_le(self.code.as_u16());
        // u16 message_length, u32 reserved, u64 detail, then the message bytes.
        buf.put_u16_le(self.message.len() as u16);
        buf.put_u32_le(0);
        buf.put_u64_le(self.detail);
        buf.put_slice(self.message.as_bytes());
    }

    /// Parses an error header of a response to `opcode`.
    pub fn decode(opcode: Opcode, header: &[u8]) -> Result<ErrorResponse, DecodeError> {
        let mut reader = Reader::new(opcode, header);
        let number = reader.u16("code")?;
        let code = match ErrorCode::from_u16(number) {
            Some(ErrorCode::Ok) => return Err(reader.malformed("code", "OK in an error response")),
            Some(code) => code,
            None => return Err(reader.malformed("code", "unknown error code")),
        };
        // The string length sits before the reserved field and detail: read them in wire order.
        let message_length = reader.u16("message_length")? as usize;
        reader.reserved_u32("reserved")?;
        let detail = reader.u64("detail")?;
        let message = reader.text("message", message_length, MAX_MESSAGE_BYTES)?;
        reader.finish()?;
        Ok(ErrorResponse {
            code,
            detail,
            message,
        })
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorResponse {}
