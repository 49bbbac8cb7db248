//! CREATE_RANGE: create the local replica of a range and persist it before answering.

use wire::msg::{CreateRangeRequest, CreateRangeResponse, Response};
use wire::ErrorCode;

use crate::range::RangeState;
use crate::ranges_file::RangeRecord;
use crate::worker::{Reply, Worker};

pub fn handle(worker: &Worker, request: CreateRangeRequest) -> Reply {
    let key = (request.stream_id, request.range_index);
    if worker.is_shutting_down() {
        return Reply::error(
            ErrorCode::ShuttingDown,
            "the node is shutting down; create the range elsewhere",
        );
    }
    if worker.contains_range(key) {
        return Reply::error(
            ErrorCode::RangeAlreadyExists,
            format!("range {}-{} already exists on this node", key.0, key.1),
        );
    }
    if request.start_offset.0 > wire::Offset::MAX.0 || request.epoch.0 == u64::MAX {
        return Reply::error(
            ErrorCode::InvalidArgument,
            "start offset and epoch must be present",
        );
    }
    let record = RangeRecord {
        stream_id: key.0 .0,
        range_index: u64::from(key.1 .0),
        epoch: request.epoch.0,
        start: request.start_offset.0,
        end: None,
        confirmed: request.start_offset.0,
    };
    if let Err(error) = worker.storage.open_range(key, request.start_offset.0) {
        return error.reply();
    }
    // Persist before answering: a range acknowledged as created survives a restart.
    if let Err(error) = worker.catalog.save(&record) {
        log::error!(
            "worker {}: cannot persist range {}-{}: {error}",
            worker.index,
            key.0,
            key.1
        );
        return Reply::error(
            ErrorCode::StorageUnavailable,
            format!("cannot persist range {}-{}: {error}", key.0, key.1),
        );
    }
    let state = RangeState::new(request.epoch.0, request.start_offset.0);
    let mut range = super::describe_range::record(key, &state);
    range.replicas = request.replicas;
    worker.insert_range(key, state);
    Reply::new(Response::CreateRange(CreateRangeResponse { range }))
}
