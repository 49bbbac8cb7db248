//! PING (`0x0001`): liveness and round-trip check. The request payload (any bytes, at most
//! 64 KiB) is echoed in the response payload.

use crate::msg::empty_message;

/// Longest PING payload a receiver echoes.
pub const MAX_PING_PAYLOAD_BYTES: usize = 64 << 10;

/// PING request: empty header; the payload is echoed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PingRequest {}

/// PING response: empty header; the payload is the request's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PingResponse {}

empty_message!(PingRequest, Ping, Request, true);
empty_message!(PingResponse, Ping, Response, true);
