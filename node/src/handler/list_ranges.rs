//! LIST_RANGES: the ranges this node holds, in (stream, index) order. Each worker lists the
//! ranges it owns; a request for every stream is gathered from all workers by the worker that
//! received it (`dispatch.rs`).

use serve::Reply;
use wire::msg::{ListRangesRequest, ListRangesResponse, Response};
use wire::StreamId;

use crate::worker::Worker;

pub fn handle(worker: &Worker, request: ListRangesRequest) -> Reply {
    let ranges = ranges_of(worker, request.stream_id);
    Reply::new(Response::ListRanges(ListRangesResponse { ranges }))
}

/// Every range of this worker (of `stream` only, if given) as a wire record, in (stream, index)
/// order.
pub fn ranges_of(worker: &Worker, stream: Option<StreamId>) -> Vec<wire::Range> {
    let mut ranges = worker.map_ranges(stream, |key, entry| {
        super::describe_range::record(worker, key, entry)
    });
    ranges.sort_by_key(|range| (range.stream_id, range.index));
    ranges
}
