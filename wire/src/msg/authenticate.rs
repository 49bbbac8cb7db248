//! AUTHENTICATE (`0x0007`): the first request on a connection to a server that has tokens
//! configured. The request carries a token; the answer names the [`Role`] the token grants, which
//! the server then holds for the rest of the connection. A wrong token is `UNAUTHENTICATED`.
//!
//! The token is a secret: [`AuthenticateRequest`]'s `Debug` never shows it, so logging a decoded
//! request (or a `Request` holding one) cannot leak it.

use std::fmt;

use bytes::BufMut;

use crate::codec::{put_string, EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{Message, MessageKind};

/// Longest token a request may carry, in bytes.
pub const MAX_TOKEN_BYTES: usize = 255;

/// What a connection may do once authenticated (`docs/protocol.md` §5.21). An admin may do
/// everything a client may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Role {
    /// Applications: append, fetch, describe and list, streams on the placement manager.
    Client = 1,
    /// The placement manager, data nodes towards it, and operators: everything.
    Admin = 2,
}

impl Role {
    /// The role for a number received on the wire.
    pub fn from_u8(number: u8) -> Option<Role> {
        match number {
            1 => Some(Role::Client),
            2 => Some(Role::Admin),
            _ => None,
        }
    }

    /// The name used in `docs/protocol.md`, e.g. `"ADMIN"`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "CLIENT",
            Role::Admin => "ADMIN",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// AUTHENTICATE request header (2 + n bytes).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthenticateRequest {
    /// The secret shared with the server, at most [`MAX_TOKEN_BYTES`].
    pub token: String,
}

impl fmt::Debug for AuthenticateRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AuthenticateRequest")
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Message for AuthenticateRequest {
    const OPCODE: Opcode = Opcode::Authenticate;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        2 + self.token.len()
    }

    fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("token", self.token.len(), MAX_TOKEN_BYTES)
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_string(buf, &self.token);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let token = reader.string("token", MAX_TOKEN_BYTES)?;
        reader.finish()?;
        Ok(AuthenticateRequest { token })
    }
}

/// AUTHENTICATE response header (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthenticateResponse {
    /// The role the token grants for the rest of the connection.
    pub role: Role,
}

impl Default for AuthenticateResponse {
    fn default() -> Self {
        AuthenticateResponse { role: Role::Client }
    }
}

impl Message for AuthenticateResponse {
    const OPCODE: Opcode = Opcode::Authenticate;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        8
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(self.role as u8);
        buf.put_u8(0);
        buf.put_u16_le(0);
        buf.put_u32_le(0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let role = Role::from_u8(reader.u8("role")?)
            .ok_or_else(|| reader.malformed("role", "unknown role"))?;
        reader.reserved_u8("reserved")?;
        reader.reserved_u16("reserved")?;
        reader.reserved_u32("reserved")?;
        reader.finish()?;
        Ok(AuthenticateResponse { role })
    }
}
