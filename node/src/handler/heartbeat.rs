//! HEARTBEAT: normally sent by a data node to the placement manager. A data node that receives
//! one answers with the intervals it would expect, so tools can use it as a liveness check.

use serve::Reply;
use wire::msg::{HeartbeatResponse, Response};

/// Interval a data node suggests when asked directly.
const HEARTBEAT_INTERVAL_MS: u32 = 1_000;
const SESSION_TIMEOUT_MS: u32 = 10_000;

pub fn handle() -> Reply {
    Reply::new(Response::Heartbeat(HeartbeatResponse {
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        session_timeout_ms: SESSION_TIMEOUT_MS,
    }))
}
