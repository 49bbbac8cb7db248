//! DESCRIBE_RANGE: the range record as this replica sees it.

use serve::Reply;
use wire::msg::{DescribeRangeRequest, DescribeRangeResponse, Response};
use wire::RangeKey;

use crate::worker::{RangeEntry, Worker};

pub fn handle(worker: &Worker, request: DescribeRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    match worker.with_range(key, |entry| record(worker, key, entry)) {
        Some(range) => Reply::new(Response::DescribeRange(DescribeRangeResponse { range })),
        None => super::range_not_found(key),
    }
}

/// The wire record of a range: `next_offset` is this node's durable end (everything below it is
/// durable here; cut at the end once sealed: batches at or above it are not part of the range), `confirmed_offset` the readable bound of an open range, R and A as given at
/// creation (0 = unknown), `size_bytes` the bytes of batches the store holds for it. A data node
/// does not know the other replicas, so it never reports the range under-replicated.
pub fn record(worker: &Worker, key: RangeKey, entry: &RangeEntry) -> wire::Range {
    let state = &entry.state;
    wire::Range {
        stream_id: key.stream_id,
        index: key.range_index,
        epoch: state.epoch(),
        start_offset: state.start(),
        end_offset: state.end(),
        next_offset: Some(state.held_end()),
        confirmed_offset: Some(state.confirmed()),
        replica_count_target: entry.replica_count_target,
        ack_count: entry.ack_count,
        under_replicated: false,
        size_bytes: Some(worker.storage.size_bytes(key)),
        replicas: Vec::new(),
    }
}
