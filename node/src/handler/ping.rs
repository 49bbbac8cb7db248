//! PING: echo the payload.

use bytes::Bytes;
use serve::Reply;
use wire::msg::ping::MAX_PING_PAYLOAD_BYTES;
use wire::msg::{PingResponse, Response};
use wire::ErrorCode;

/// With the `fault-injection` feature, a PING carrying exactly this payload panics in its
/// handler: the tests check that a panic closes one connection and not the node.
pub const PANIC_PAYLOAD: &[u8] = b"fault-injection: panic in the PING handler";

pub fn handle(payload: Bytes) -> Reply {
    if cfg!(feature = "fault-injection") && payload == PANIC_PAYLOAD {
        panic!("fault injection: PING asked the handler to panic");
    }
    if payload.len() > MAX_PING_PAYLOAD_BYTES {
        return Reply::error(
            ErrorCode::InvalidArgument,
            format!(
                "PING payload of {} bytes exceeds {MAX_PING_PAYLOAD_BYTES}",
                payload.len()
            ),
        );
    }
    Reply::with_payload(Response::Ping(PingResponse {}), payload)
}
