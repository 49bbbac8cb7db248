//! SEAL_RANGE: stop accepting appends and fix the range's end.
//!
//! Without an end in the request the range ends at this node's durable end once the appends in
//! flight have settled (the handler waits for them; they are bounded and short). With an end,
//! the range ends there: the writer settled it from the replicas' answers. The sealed state and
//! the raised epoch are persisted before the answer.

use serve::Reply;
use wire::msg::{Response, SealRangeRequest, SealRangeResponse};
use wire::{ErrorCode, RangeKey};

use crate::range::SealOutcome;
use crate::worker::Worker;

pub async fn handle(worker: &Worker, request: SealRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    let requested_end = request.end_offset;
    loop {
        let step = worker.with_range(key, |entry| {
            if let Some(end) = entry.state.end() {
                if requested_end.is_some_and(|requested| requested != end) {
                    return Err(Reply::error_with_detail(
                        ErrorCode::RangeSealed,
                        end.0,
                        format!("range {key} is already sealed at {end}"),
                    ));
                }
            }
            let outcome = entry.state.seal(request.epoch, requested_end);
            if outcome == SealOutcome::Draining {
                return Ok((outcome, Some(entry.changed.notified())));
            }
            entry.changed.notify();
            Ok((outcome, None))
        });
        let (outcome, notified) = match step {
            None => return super::range_not_found(key),
            Some(Err(reply)) => return reply,
            Some(Ok(step)) => step,
        };
        match outcome {
            SealOutcome::StaleEpoch { current } => {
                return Reply::error_with_detail(
                    ErrorCode::StaleEpoch,
                    current.0,
                    format!(
                        "epoch {} is below the range's epoch {current}: this writer is fenced",
                        request.epoch
                    ),
                );
            }
            SealOutcome::Draining => {
                if let Some(notified) = notified {
                    notified.await;
                }
            }
            SealOutcome::Sealed { end } => {
                // Persisted on every (idempotent) seal, so a retry after a failed write fixes it.
                let Some(record) = worker.range_record(key) else {
                    return super::range_not_found(key);
                };
                if let Err(error) = worker.catalog.save(&record) {
                    log::error!(
                        "worker {}: cannot persist seal of {key}: {error}",
                        worker.index
                    );
                    return Reply::error(
                        ErrorCode::StorageUnavailable,
                        format!("sealed in memory but not persisted: {error}; retry the seal"),
                    );
                }
                return Reply::new(Response::SealRange(SealRangeResponse { end_offset: end }));
            }
        }
    }
}
