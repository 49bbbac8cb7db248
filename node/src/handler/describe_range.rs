//! DESCRIBE_RANGE: the range record as this replica sees it.

use serve::Reply;
use wire::msg::{DescribeRangeRequest, DescribeRangeResponse, Response};
use wire::RangeKey;

use crate::range::RangeState;
use crate::worker::Worker;

pub fn handle(worker: &Worker, request: DescribeRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    match worker.with_range(key, |entry| record(key, &entry.state)) {
        Some(range) => Reply::new(Response::DescribeRange(DescribeRangeResponse { range })),
        None => super::range_not_found(key),
    }
}

/// The wire record of a range: `next_offset` is this node's durable end (everything below it is
/// durable here), `confirmed_offset` the readable bound of an open range.
pub fn record(key: RangeKey, state: &RangeState) -> wire::Range {
    wire::Range {
        stream_id: key.stream_id,
        index: key.range_index,
        epoch: state.epoch(),
        start_offset: state.start(),
        end_offset: state.end(),
        next_offset: Some(state.durable_end()),
        confirmed_offset: Some(state.confirmed()),
        replicas: Vec::new(),
    }
}
