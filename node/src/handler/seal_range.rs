//! SEAL_RANGE: stop accepting appends and fix the range's end.
//!
//! Without an end in the request the range ends at this node's durable end once the appends in
//! flight have settled (the handler waits for them; they are bounded and short; new appends
//! wait meanwhile). With an end, the range ends there: the writer settled it from the replicas'
//! answers; an end below the confirmed offset (what readers may have read) is refused with
//! `INVALID_ARGUMENT`. The seal, with the raised epoch, is saved in the range catalog before it
//! takes effect (`range.rs`): no reader or writer sees a seal that a crash could undo, and a
//! failed save answers `STORAGE_UNAVAILABLE` with the range exactly as it was (open, at its
//! earlier epoch).

use serve::Reply;
use wire::msg::{Response, SealRangeRequest, SealRangeResponse};
use wire::{ErrorCode, RangeKey};

use crate::range::SealOutcome;
use crate::worker::{record_of, Worker};

pub async fn handle(worker: &Worker, request: SealRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    if request.epoch > wire::Epoch::MAX {
        return super::absent_epoch(request.epoch);
    }
    if request.fence_only {
        return Reply::error(
            ErrorCode::InvalidArgument,
            "this data node does not implement fence-only SEAL_RANGE yet",
        );
    }
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
            let save = match outcome {
                SealOutcome::Save { epoch, end } => {
                    let mut record = record_of(key, entry);
                    record.epoch = epoch;
                    record.end = Some(end);
                    Some(record)
                }
                _ => None,
            };
            let notified = matches!(outcome, SealOutcome::Draining | SealOutcome::Wait)
                .then(|| entry.changed.notified());
            Ok((outcome, notified, save))
        });
        let (outcome, notified, save) = match step {
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
            SealOutcome::BelowConfirmed { confirmed } => {
                return Reply::error_with_detail(
                    ErrorCode::InvalidArgument,
                    confirmed.0,
                    format!(
                        "cannot seal range {key} at {}: offsets up to {confirmed} are confirmed \
                         and may have been read; seal at or above it",
                        requested_end.map_or(0, |end| end.0)
                    ),
                );
            }
            SealOutcome::Draining | SealOutcome::Wait => {
                if let Some(notified) = notified {
                    notified.await;
                }
            }
            SealOutcome::Sealed { end } => return sealed(worker, key, end),
            SealOutcome::Save { epoch, end } => {
                let Some(record) = save else {
                    return Reply::error(ErrorCode::Internal, "seal decided without a record");
                };
                let saved = worker.catalog.save(record).await;
                let committed = worker.with_range(key, |entry| {
                    let committed = match &saved {
                        Ok(()) => entry.state.commit_seal(epoch, end),
                        Err(_) => {
                            entry.state.abort_seal(epoch, end);
                            false
                        }
                    };
                    entry.changed.notify();
                    committed
                });
                return match saved {
                    Err(error) => {
                        log::error!(
                            "worker {}: cannot save the seal of {key}: {error}",
                            worker.index
                        );
                        Reply::error(
                            ErrorCode::StorageUnavailable,
                            format!(
                                "range {key} is not sealed: the seal could not be saved \
                                 ({error}); retry the seal"
                            ),
                        )
                    }
                    Ok(()) if committed != Some(true) => super::range_not_found(key),
                    Ok(()) => sealed(worker, key, end),
                };
            }
        }
    }
}

/// The answer to a seal that left the range sealed at `end`.
fn sealed(worker: &Worker, key: RangeKey, end: wire::Offset) -> Reply {
    let Some((durable_end, epoch)) = worker.with_range(key, |entry| {
        (entry.state.durable_end(), entry.state.epoch())
    }) else {
        return super::range_not_found(key);
    };
    Reply::new(Response::SealRange(SealRangeResponse {
        end_offset: Some(end),
        durable_end: Some(durable_end),
        epoch,
    }))
}
