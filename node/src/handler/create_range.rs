//! CREATE_RANGE: create the local replica of a range and persist it before answering.

use serve::Reply;
use wire::msg::{CreateRangeRequest, CreateRangeResponse, Response};
use wire::{ErrorCode, RangeKey};

use crate::range::RangeState;
use crate::ranges_file::RangeRecord;
use crate::worker::Worker;

pub fn handle(worker: &Worker, request: CreateRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    if worker.is_shutting_down() {
        return Reply::error(
            ErrorCode::ShuttingDown,
            "the node is shutting down; create the range elsewhere",
        );
    }
    if worker.contains_range(key) {
        return Reply::error(
            ErrorCode::RangeAlreadyExists,
            format!("range {} already exists on this node", key),
        );
    }
    if request.start_offset.0 > wire::Offset::MAX.0 || request.epoch.0 == u64::MAX {
        return Reply::error(
            ErrorCode::InvalidArgument,
            "start offset and epoch must be present",
        );
    }
    let record = RangeRecord {
        key,
        epoch: request.epoch,
        start: request.start_offset,
        end: None,
        confirmed: request.start_offset,
    };
    // Persist before answering: a range acknowledged as created survives a restart.
    if let Err(error) = worker.catalog.save(&record) {
        log::error!(
            "worker {}: cannot persist range {key}: {error}",
            worker.index
        );
        return Reply::error(
            ErrorCode::StorageUnavailable,
            format!("cannot persist range {key}: {error}"),
        );
    }
    let state = RangeState::new(request.epoch, request.start_offset);
    let mut range = super::describe_range::record(key, &state);
    range.replicas = request.replicas;
    worker.insert_range(key, state);
    Reply::new(Response::CreateRange(CreateRangeResponse { range }))
}
