//! PING: echo the payload.

use bytes::Bytes;
use wire::msg::ping::MAX_PING_PAYLOAD_BYTES;
use wire::msg::{PingResponse, Response};
use wire::ErrorCode;

use crate::reply::Reply;

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
