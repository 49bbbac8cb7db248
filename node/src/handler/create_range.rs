//! CREATE_RANGE: create the local replica of a range and save it before answering.
//!
//! Idempotent on identical parameters, so the placement manager can retry after a lost answer:
//! an existing range created with the same epoch, start, R and A is answered with its record;
//! any difference is `RANGE_ALREADY_EXISTS`. A node holding `catalog.max-ranges` ranges refuses
//! new ones with `STORAGE_FULL` (`detail` = the bound). The range is saved in the catalog (off
//! this thread, group-committed) before it is served; a second create of the same range waits
//! for the first.

use serve::Reply;
use wire::msg::{CreateRangeRequest, CreateRangeResponse, Response};
use wire::types::MAX_REPLICAS;
use wire::{ErrorCode, RangeKey};

use crate::range::RangeState;
use crate::ranges_file::RangeRecord;
use crate::worker::{RangeEntry, Worker};

pub async fn handle(worker: &Worker, request: CreateRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    if worker.is_shutting_down() {
        return Reply::error(
            ErrorCode::ShuttingDown,
            "the node is shutting down; create the range elsewhere",
        );
    }
    if request.epoch > wire::Epoch::MAX {
        return super::absent_epoch(request.epoch);
    }
    if request.start_offset.0 > wire::Offset::MAX.0 {
        return Reply::error(
            ErrorCode::InvalidArgument,
            "the start offset must be present",
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
    loop {
        let existing = worker.with_range(key, |entry| {
            let same = entry.state.epoch() == request.epoch
                && entry.state.start() == request.start_offset
                && entry.replica_count_target == request.replica_count_target
                && entry.ack_count == request.ack_count;
            same.then(|| super::describe_range::record(worker, key, entry))
                .ok_or_else(|| {
                    format!(
                        "range {key} already exists on this node with epoch {}, start {}, R {}, \
                         A {} (asked: epoch {}, start {}, R {}, A {}); a retry must repeat the \
                         same values",
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
        if worker.begin_create(key) {
            break;
        }
        worker.wait_no_create(key).await;
    }
    let reply = create(worker, key, request).await;
    worker.end_create(key);
    reply
}

/// Saves and installs the new range `key`; the caller holds its create mark.
async fn create(worker: &Worker, key: RangeKey, request: CreateRangeRequest) -> Reply {
    let max_ranges = worker.config.catalog.max_ranges;
    if !worker.catalog.try_reserve_range(max_ranges) {
        return Reply::error_with_detail(
            ErrorCode::StorageFull,
            max_ranges as u64,
            format!(
                "this node holds {max_ranges} ranges, its catalog.max-ranges: create range \
                 {key} on another node, or delete ranges here first"
            ),
        );
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
    // Saved before answering: a range acknowledged as created survives a restart.
    if let Err(error) = worker.catalog.save(record).await {
        worker.catalog.release_range();
        log::error!("worker {}: cannot save range {key}: {error}", worker.index);
        return Reply::error(
            ErrorCode::StorageUnavailable,
            format!("cannot save range {key}: {error}; retry"),
        );
    }
    let entry = RangeEntry::new(
        RangeState::new(request.epoch, request.start_offset),
        request.replica_count_target,
        request.ack_count,
    );
    let mut range = super::describe_range::record(worker, key, &entry);
    range.replicas = request.replicas;
    if !worker.insert_range(key, entry) {
        // Unreachable while the create mark is held; answered as the retry would be.
        worker.catalog.release_range();
        return Reply::error(
            ErrorCode::RangeAlreadyExists,
            format!("range {key} appeared while it was being created; describe it"),
        );
    }
    Reply::new(Response::CreateRange(CreateRangeResponse { range }))
}
