//! CREATE_RANGE: create the local replica of a range and persist it before answering.
//!
//! Idempotent on identical parameters, so the placement manager can retry after a lost answer:
//! an existing range created with the same epoch, start, R and A is answered with its record;
//! any difference is `RANGE_ALREADY_EXISTS`.

use serve::Reply;
use wire::msg::{CreateRangeRequest, CreateRangeResponse, Response};
use wire::types::MAX_REPLICAS;
use wire::{ErrorCode, RangeKey};

use crate::range::RangeState;
use crate::ranges_file::RangeRecord;
use crate::worker::{RangeEntry, Worker};

pub fn handle(worker: &Worker, request: CreateRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    if worker.is_shutting_down() {
        return Reply::error(
            ErrorCode::ShuttingDown,
            "the node is shutting down; create the range elsewhere",
        );
    }
    if request.start_offset.0 > wire::Offset::MAX.0 || request.epoch.0 == u64::MAX {
        return Reply::error(
            ErrorCode::InvalidArgument,
            "start offset and epoch must be present",
        );
    }
    if usize::from(request.replica_count_target) > MAX_REPLICAS
        || request.ack_count > request.replica_count_target
    {
        return Reply::error(
            ErrorCode::InvalidArgument,
            format!(
                "replica_count_target {} and ack_count {}: expected ack_count ≤ \
                 replica_count_target ≤ {MAX_REPLICAS} (0 and 0 when unknown)",
                request.replica_count_target, request.ack_count
            ),
        );
    }
    let existing = worker.with_range(key, |entry| {
        let same = entry.state.epoch() == request.epoch
            && entry.state.start() == request.start_offset
            && entry.replica_count_target == request.replica_count_target
            && entry.ack_count == request.ack_count;
        same.then(|| super::describe_range::record(worker, key, entry))
            .ok_or_else(|| {
                format!(
                    "range {key} already exists on this node with epoch {}, start {}, R {}, A {} \
                     (asked: epoch {}, start {}, R {}, A {}); a retry must repeat the same values",
                    entry.state.epoch(),
                    entry.state.start(),
                    entry.replica_count_target,
                    entry.ack_count,
                    request.epoch,
                    request.start_offset,
                    request.replica_count_target,
                    request.ack_count
                )
            })
    });
    match existing {
        Some(Ok(mut range)) => {
            range.replicas = request.replicas;
            return Reply::new(Response::CreateRange(CreateRangeResponse { range }));
        }
        Some(Err(message)) => return Reply::error(ErrorCode::RangeAlreadyExists, message),
        None => {}
    }
    let record = RangeRecord {
        key,
        epoch: request.epoch,
        start: request.start_offset,
        end: None,
        confirmed: request.start_offset,
        replica_count_target: request.replica_count_target,
        ack_count: request.ack_count,
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
    let entry = RangeEntry::new(
        RangeState::new(request.epoch, request.start_offset),
        request.replica_count_target,
        request.ack_count,
    );
    let mut range = super::describe_range::record(worker, key, &entry);
    range.replicas = request.replicas;
    let inserted = worker.insert_range(key, entry);
    debug_assert!(inserted, "checked above with no await in between");
    Reply::new(Response::CreateRange(CreateRangeResponse { range }))
}
