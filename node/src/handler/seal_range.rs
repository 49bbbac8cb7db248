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
//!
//! An end above this replica's durable end is refused with `OFFSET_GAP` (`detail` = the durable
//! end): at once when the end lies beyond the appends in flight too, else once they settled
//! short of it. The writer repairs the replica first. An end below it is allowed; the batches
//! at and above the end stay in the store but are never served, before or after a restart
//! (`RangeState::held_end`).
//!
//! **Fence only** (`FENCE_ONLY`, the first step of a seal with repair): no end is fixed. The
//! request's epoch is raised and saved first if above the range's (the raise of `append.rs`),
//! then the range is marked fenced (normal appends refused, `RANGE_SEALED` without an end) and
//! the answer waits until the appends in flight have settled: it carries the durable end, the
//! epoch and the end if the range was sealed already. The fenced mark is not saved (see
//! `range.rs`): a restarted replica is open again at the raised epoch, which only the fencing
//! writer holds.

use serve::Reply;
use wire::msg::{Response, SealRangeRequest, SealRangeResponse};
use wire::{ErrorCode, RangeKey};

use crate::range::{FenceOutcome, SealOutcome};
use crate::worker::{record_of, Worker};

pub async fn handle(worker: &Worker, request: SealRangeRequest) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    if request.epoch > wire::Epoch::MAX {
        return super::absent_epoch(request.epoch);
    }
    if request.fence_only {
        return fence(worker, key, request).await;
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
            if matches!(
                outcome,
                SealOutcome::AboveDurable { .. } | SealOutcome::BelowConfirmed { .. }
            ) {
                // A drain that ended in this refusal held appends: let them go on.
                entry.changed.notify();
            }
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
            SealOutcome::AboveDurable { durable_end } => {
                return Reply::error_with_detail(
                    ErrorCode::OffsetGap,
                    durable_end.0,
                    format!(
                        "cannot seal range {key} at {}: this replica holds offsets up to \
                         {durable_end} only; repair it first (REPAIR appends of the fencing epoch)",
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
    let Some((durable_end, epoch)) =
        worker.with_range(key, |entry| (entry.state.held_end(), entry.state.epoch()))
    else {
        return super::range_not_found(key);
    };
    Reply::new(Response::SealRange(SealRangeResponse {
        end_offset: Some(end),
        durable_end: Some(durable_end),
        epoch,
    }))
}

/// What the decision step of a fence found.
enum FenceStep {
    Answer(FenceOutcome),
    Wait(serve::local::Notified),
    SaveEpoch(crate::ranges_file::RangeRecord),
}

/// A fence-only SEAL_RANGE: raise (saved), fence, drain, answer.
async fn fence(worker: &Worker, key: RangeKey, request: SealRangeRequest) -> Reply {
    if request.end_offset.is_some() {
        return Reply::error(
            ErrorCode::InvalidArgument,
            "a FENCE_ONLY seal fixes no end: send it without end_offset",
        );
    }
    loop {
        let step = worker.with_range(key, |entry| match entry.state.fence(request.epoch) {
            FenceOutcome::Wait | FenceOutcome::Draining => {
                FenceStep::Wait(entry.changed.notified())
            }
            FenceOutcome::Raise { epoch } => {
                let mut record = record_of(key, entry);
                record.epoch = epoch;
                FenceStep::SaveEpoch(record)
            }
            answer => FenceStep::Answer(answer),
        });
        match step {
            None => return super::range_not_found(key),
            Some(FenceStep::Wait(notified)) => notified.await,
            Some(FenceStep::SaveEpoch(record)) => {
                if let Err(reply) = super::append::save_epoch_raise(worker, key, record).await {
                    return reply;
                }
            }
            Some(FenceStep::Answer(FenceOutcome::StaleEpoch { current })) => {
                return Reply::error_with_detail(
                    ErrorCode::StaleEpoch,
                    current.0,
                    format!(
                        "epoch {} is below the range's epoch {current}: this writer is fenced",
                        request.epoch
                    ),
                );
            }
            Some(FenceStep::Answer(FenceOutcome::Fenced {
                end,
                durable_end,
                epoch,
            })) => {
                worker.metrics.add(&worker.metrics.fences, 1);
                return Reply::new(Response::SealRange(SealRangeResponse {
                    end_offset: end,
                    durable_end: Some(durable_end),
                    epoch,
                }));
            }
            Some(FenceStep::Answer(other)) => {
                return Reply::error(
                    ErrorCode::Internal,
                    format!("range {key}: fence decided without settling ({other:?})"),
                );
            }
        }
    }
}
