//! GOAWAY (`0x0002`): the sender is closing the connection. It answers the requests it already
//! accepted, accepts no new ones, then closes. Sent with request id 0 and never answered. The
//! reason travels in its own field (not in the flags).

use bytes::BufMut;

use crate::codec::{EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::error_response::MAX_MESSAGE_BYTES;
use crate::msg::{Message, MessageKind};

/// Why a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum GoawayReason {
    /// The sender is stopping; reconnect elsewhere or later.
    ShuttingDown = 1,
    /// The peer sent bytes the sender could not decode; the message says what.
    ProtocolError = 2,
    /// The connection was idle for too long.
    IdleTimeout = 3,
    /// The sender sheds load (too many connections or requests).
    Overloaded = 4,
    /// The sender failed while handling a request of this connection (a bug, logged on its
    /// side); other connections are unaffected. Retry on a new connection.
    InternalError = 5,
}

impl GoawayReason {
    /// Every reason, in numeric order.
    pub const ALL: &'static [GoawayReason] = &[
        GoawayReason::ShuttingDown,
        GoawayReason::ProtocolError,
        GoawayReason::IdleTimeout,
        GoawayReason::Overloaded,
        GoawayReason::InternalError,
    ];

    /// The reason for a number received on the wire.
    pub fn from_u16(number: u16) -> Option<GoawayReason> {
        GoawayReason::ALL
            .iter()
            .copied()
            .find(|reason| *reason as u16 == number)
    }
}

/// GOAWAY header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goaway {
    /// Why the connection is closing.
    pub reason: GoawayReason,
    /// Details for humans, at most 4096 bytes.
    pub message: String,
}

impl Message for Goaway {
    const OPCODE: Opcode = Opcode::Goaway;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        8 + self.message.len()
    }

    fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("message", self.message.len(), MAX_MESSAGE_BYTES)
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u16_le(self.reason as u16);
        buf.put_u16_le(self.message.len() as u16);
        buf.put_u32_le(0);
        buf.put_slice(self.message.as_bytes());
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let reason = GoawayReason::from_u16(reader.u16("reason")?)
            .ok_or_else(|| reader.malformed("reason", "unknown GOAWAY reason"))?;
        let message_length = reader.u16("message_length")? as usize;
        reader.reserved_u32("reserved")?;
        let message = reader.text("message", message_length, MAX_MESSAGE_BYTES)?;
        reader.finish()?;
        Ok(Goaway { reason, message })
    }
}
