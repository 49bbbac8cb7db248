//! LIST_RANGES: the ranges this node holds, in (stream, index) order. Each worker lists the
//! ranges it owns; a request for every stream is gathered from all workers by the worker that
//! received it (`Worker::dispatch`).

use wire::msg::{ListRangesRequest, ListRangesResponse, Response};

use crate::worker::{Reply, Worker};

pub fn handle(worker: &Worker, request: ListRangesRequest) -> Reply {
    let ranges = worker.describe_ranges(request.stream_id);
    Reply::new(Response::ListRanges(ListRangesResponse { ranges }))
}
