//! Request handlers, one file per operation, named like `wire::msg::<operation>`.
//!
//! Every handler runs on the worker that owns the request's range (`dispatch.rs` sends it there)
//! and returns a [`Reply`]; the connection that received the request encodes it under the
//! request's id.

pub mod append;
pub mod create_range;
pub mod delete_range;
pub mod describe_range;
pub mod fetch;
pub mod heartbeat;
pub mod list_ranges;
pub mod ping;
pub mod seal_range;
pub mod trim_range;

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use serve::Reply;
use wire::msg::Request;
use wire::{ErrorCode, RangeKey};

use crate::metrics::Operation;
use crate::worker::Worker;

/// Runs the handler of `request` on this worker and counts it.
pub async fn handle(
    worker: &Rc<Worker>,
    request: Request,
    payload: Bytes,
    received: Instant,
) -> Reply {
    let operation = operation_of(&request);
    let reply = match request {
        Request::Ping(_) => ping::handle(payload),
        Request::Heartbeat(_) => heartbeat::handle(),
        Request::CreateRange(header) => create_range::handle(worker, header).await,
        Request::Append(header) => append::handle(worker, header, payload, received).await,
        Request::Fetch(header) => fetch::handle(worker, header, received).await,
        Request::SealRange(header) => seal_range::handle(worker, header).await,
        Request::DescribeRange(header) => describe_range::handle(worker, header),
        Request::ListRanges(header) => list_ranges::handle(worker, header),
        Request::TrimRange(header) => trim_range::handle(worker, header).await,
        Request::DeleteRange(header) => delete_range::handle(worker, header).await,
        Request::Goaway(_) => {
            Reply::error(ErrorCode::Internal, "GOAWAY is handled by the connection")
        }
        other => Reply::error_with_detail(
            ErrorCode::UnknownOpcode,
            u64::from(other.opcode().as_u16()),
            format!(
                "{} is not served by a data node; send it to the placement manager",
                other.opcode()
            ),
        ),
    };
    worker.count(operation, &reply);
    reply
}

/// The metrics bucket of a request.
pub fn operation_of(request: &Request) -> Operation {
    match request {
        Request::Ping(_) => Operation::Ping,
        Request::Heartbeat(_) => Operation::Heartbeat,
        Request::CreateRange(_) => Operation::CreateRange,
        Request::Append(_) => Operation::Append,
        Request::Fetch(_) => Operation::Fetch,
        Request::SealRange(_) => Operation::SealRange,
        Request::DescribeRange(_) => Operation::DescribeRange,
        Request::ListRanges(_) => Operation::ListRanges,
        Request::TrimRange(_) => Operation::TrimRange,
        Request::DeleteRange(_) => Operation::DeleteRange,
        _ => Operation::Other,
    }
}

/// An error `detail` that is absent (the wire's absent value, `docs/protocol.md` conventions).
pub const DETAIL_ABSENT: u64 = u64::MAX;

/// The error for a range this node does not hold.
pub fn range_not_found(key: RangeKey) -> Reply {
    Reply::error(
        ErrorCode::RangeNotFound,
        format!("range {key} is not on this node; create it first or ask the placement manager"),
    )
}

/// The error for an epoch of `u64::MAX`, which the wire reserves for "absent".
pub fn absent_epoch(epoch: wire::Epoch) -> Reply {
    Reply::error_with_detail(
        ErrorCode::InvalidArgument,
        wire::Epoch::MAX.0,
        format!(
            "epoch {epoch} is reserved for \"absent\"; the largest epoch is {}",
            wire::Epoch::MAX
        ),
    )
}
