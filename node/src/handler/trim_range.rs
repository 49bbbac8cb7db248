//! TRIM_RANGE: drop a range's whole record batches below an offset (retention, sent by the
//! placement manager).
//!
//! The range's start is raised in memory first, so fetches below it are refused at once; then
//! the store trims (durably: a WAL record) and the range file is rewritten with the new start
//! before the answer. A trim at or below the start changes nothing but still finishes the store
//! trim and the range file, so a retry after a failed write completes the earlier trim.

use wire::msg::{Response, TrimRangeRequest, TrimRangeResponse};
use wire::{ErrorCode, RangeKey};

use crate::range::TrimOutcome;
use crate::worker::Worker;
use serve::Reply;

pub async fn handle(worker: &Worker, request: TrimRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    let trimmed = worker.with_range(key, |entry| {
        let outcome = entry.state.trim(request.offset);
        (outcome, entry.state.start())
    });
    let start = match trimmed {
        None => return super::range_not_found(key),
        Some((TrimOutcome::BeyondHeld { limit }, _)) => {
            return Reply::error_with_detail(
                ErrorCode::OffsetOutOfRange,
                limit.0,
                format!(
                    "cannot trim range {key} to {}: this node holds it only up to {limit}; \
                     trim at or below that, or delete the range",
                    request.offset
                ),
            );
        }
        Some((TrimOutcome::Trimmed | TrimOutcome::Unchanged, start)) => start,
    };
    if worker.storage.holds_below(key, start) {
        if let Err(error) = worker.storage.trim(key, start).await {
            log::error!(
                "worker {}: cannot trim range {key}: {error:?}",
                worker.index
            );
            return Reply::error(
                error.code,
                format!(
                    "range {key} starts at {start} but its data below was not dropped: {}; \
                     retry the trim",
                    error.message
                ),
            );
        }
    }
    // Read after the await: the range may have been deleted meanwhile, and its file must not
    // be written back then.
    let Some(record) = worker.range_record(key) else {
        return super::range_not_found(key);
    };
    if let Err(error) = worker.catalog.save(&record) {
        log::error!(
            "worker {}: cannot persist the trim of {key}: {error}",
            worker.index
        );
        return Reply::error(
            ErrorCode::StorageUnavailable,
            format!("trimmed but the new start is not persisted: {error}; retry the trim"),
        );
    }
    Reply::new(Response::TrimRange(TrimRangeResponse {}))
}
