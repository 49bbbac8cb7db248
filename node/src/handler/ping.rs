//! PING: echo the payload.

use bytes::Bytes;
use serve::Reply;
use wire::msg::ping::MAX_PING_PAYLOAD_BYTES;
use wire::msg::{PingResponse, Response};
use wire::ErrorCode;

pub fn handle(payload: Bytes) -> Reply {
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
