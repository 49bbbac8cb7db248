//! DELETE_RANGE: delete this node's replica of a range (sent by the placement manager).
//!
//! The range leaves the worker's map first (requests in flight on it end with
//! `RANGE_NOT_FOUND`), then its record is removed from the range catalog durably, so it cannot come back after a
//! crash, then the store deletes its batches. Deleting a range that is not here still runs the
//! last two steps and succeeds: a retry after a failure or a crash finishes the job (and frees
//! data a crash left without a catalog record).

use wire::msg::{DeleteRangeRequest, DeleteRangeResponse, Response};
use wire::{ErrorCode, RangeKey};

use crate::worker::Worker;
use serve::Reply;

pub async fn handle(worker: &Worker, request: DeleteRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    // A create of the range under way finishes first, so its save is not ordered after the
    // removal.
    worker.wait_no_create(key).await;
    let was_here = worker.remove_range(key);
    if was_here {
        worker.catalog.release_range();
    }
    if let Err(error) = worker.catalog.remove(key).await {
        log::error!(
            "worker {}: cannot remove from the catalog the range {key}: {error}",
            worker.index
        );
        return Reply::error(
            ErrorCode::StorageUnavailable,
            format!("range {key} is no longer served but its catalog record is not removed: {error}; retry the delete"),
        );
    }
    if let Err(error) = worker.storage.delete(key).await {
        log::error!(
            "worker {}: cannot delete the data of {key}: {error:?}",
            worker.index
        );
        return Reply::error(
            error.code,
            format!(
                "range {key} is deleted but its data is not dropped: {}; retry the delete",
                error.message
            ),
        );
    }
    if was_here {
        log::info!("worker {}: deleted range {key}", worker.index);
    }
    Reply::new(Response::DeleteRange(DeleteRangeResponse {}))
}
