//! TRIM_RANGE: drop a range's whole record batches below an offset (retention, sent by the
//! placement manager).
//!
//! The range's start is raised in memory first, so fetches below it are refused at once; then
//! the store trims (durably: a WAL record) and the range's record is saved in the catalog with the new start
//! before the answer. A trim at or below the start changes nothing but still finishes the store
//! trim and the save, so a retry after a failed write completes the earlier trim.

use wire::msg::{Response, TrimRangeRequest, TrimRangeResponse};
use wire::{ErrorCode, RangeKey};

use crate::range::TrimOutcome;
use crate::worker::Worker;
use serve::Reply;

pub async fn handle(worker: &Worker, request: TrimRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    let trimmed = loop {
        let step = worker.with_range(key, |entry| {
            let outcome = entry.state.trim(request.offset);
            let notified = (outcome == TrimOutcome::Wait).then(|| entry.changed.notified());
            (outcome, entry.state.start(), notified)
        });
        match step {
            Some((TrimOutcome::Wait, _, Some(notified))) => notified.await,
            Some((outcome, start, _)) => break Some((outcome, start)),
            None => break None,
        }
    };
    let start = match trimmed {
        None => return super::range_not_found(key),
        Some((TrimOutcome::Wait, _)) => {
            return Reply::error(
                ErrorCode::Internal,
                "trim decided while a change was pending",
            )
        }
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
    // Read after the await: the range may have been deleted meanwhile, and its record must
    // not be written back then; and no raise or seal of it may be being saved (this save
    // would race it).
    let record = loop {
        let step = worker.with_range(key, |entry| {
            if entry.state.has_pending_change() {
                Err(entry.changed.notified())
            } else {
                Ok(crate::worker::record_of(key, entry))
            }
        });
        match step {
            None => return super::range_not_found(key),
            Some(Ok(record)) => break record,
            Some(Err(notified)) => notified.await,
        }
    };
    if let Err(error) = worker.catalog.save(record).await {
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
