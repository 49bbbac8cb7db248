//! APPEND: check the batches, claim their offsets in the range, hand them to the store, and
//! answer once they are durable.
//!
//! The range's state machine (`range.rs`) decides duplicates, gaps, seals and stale epochs
//! before anything is written; the batches' CRCs are checked here so corrupt data is refused at
//! the door and never reaches the WAL.
//!
//! An APPEND with an epoch above the range's raises it first: the range is saved in the catalog
//! with the new epoch, and only then does the raise take effect and the batch get its offsets
//! (`range.rs` explains the pending state; requests of both epochs wait meanwhile). So the raise
//! is durable before the writer learns anything from this node, whatever happens next: a
//! duplicate (`OFFSET_DUPLICATE`, `OFFSET_IN_FLIGHT_DUPLICATE`), a gap, a failed write. A
//! failed save refuses the APPEND with `STORAGE_UNAVAILABLE` and leaves the epoch as it was.
//!
//! Two other forms share the path (`docs/protocol.md` §5.7):
//! * **repair** (`REPAIR`): batches copied into a fenced (or sealed) range by the writer that
//!   fenced it, at exactly the range's epoch; their headers may carry older epochs. It never
//!   raises the epoch and its `confirmed_offset` is ignored (the seal that follows fixes what
//!   readers see).
//! * **confirm-only** (empty payload, `confirmed_offset` required): an idle writer's report of
//!   its acknowledged prefix; the epoch rules apply, no offset is claimed, and the answer is
//!   the replica's durable end as both `base_offset` and `next_offset`.

use std::time::Instant;

use bytes::Bytes;
use serve::Reply;
use wire::msg::{AppendRequest, AppendResponse, Response};
use wire::{BatchIter, ErrorCode, Offset, RangeKey};

use crate::metrics::Stage;
use crate::range::{AppendRejection, AppendTicket, Completion, RaiseStep};
use crate::ranges_file::RangeRecord;
use crate::worker::{record_of, Worker};

/// The offsets an APPEND payload covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub base: Offset,
    pub count: u32,
    /// Record batches in the payload.
    pub batches: u32,
}

/// Walks the payload: every batch intact, for this stream and range, offsets contiguous, and
/// of the request's epoch (a repair append's batches: of that epoch or an older one, the
/// epochs of the writers that wrote them first).
pub fn check_batches(request: &AppendRequest, payload: &Bytes) -> Result<BatchSpan, Reply> {
    if payload.is_empty() {
        return Err(Reply::error(
            ErrorCode::InvalidArgument,
            "APPEND carries no record batch",
        ));
    }
    let mut span: Option<(Offset, Offset)> = None;
    let mut batches = 0u32;
    for batch in BatchIter::new(payload.clone()) {
        batches = batches.saturating_add(1);
        let batch = batch.map_err(|error| {
            Reply::error(
                error.error_code(),
                format!("record batch rejected: {error}; resend an intact batch"),
            )
        })?;
        let header = batch.header();
        let epoch_fits = if request.repair {
            header.epoch <= request.epoch
        } else {
            header.epoch == request.epoch
        };
        if header.stream_id != request.stream_id
            || header.range_index != request.range_index
            || !epoch_fits
        {
            return Err(Reply::error(
                ErrorCode::InvalidArgument,
                format!(
                    "batch at offset {} is for stream {} range {} epoch {}, the request for stream {} range {} epoch {}{}",
                    header.base_offset,
                    header.stream_id,
                    header.range_index,
                    header.epoch,
                    request.stream_id,
                    request.range_index,
                    request.epoch,
                    if request.repair { " (a repair carries batches of that epoch or older)" } else { "" }
                ),
            ));
        }
        if header.record_count == 0 {
            return Err(Reply::error(
                ErrorCode::InvalidArgument,
                "batch covers no offset (record_count 0)",
            ));
        }
        let end = header
            .base_offset
            .checked_add(u64::from(header.record_count))
            .ok_or_else(|| Reply::error(ErrorCode::InvalidArgument, "batch offsets overflow"))?;
        span = match span {
            None => Some((header.base_offset, end)),
            Some((base, previous_end)) if previous_end == header.base_offset => Some((base, end)),
            Some((_, previous_end)) => {
                return Err(Reply::error(
                    ErrorCode::InvalidArgument,
                    format!(
                    "batches are not contiguous: one ends at {previous_end}, the next starts at {}",
                    header.base_offset
                ),
                ))
            }
        };
    }
    let Some((base, end)) = span else {
        return Err(Reply::error(
            ErrorCode::InvalidArgument,
            "APPEND carries no record batch",
        ));
    };
    let count = u32::try_from(end.saturating_distance_from(base)).map_err(|_| {
        Reply::error(
            ErrorCode::InvalidArgument,
            "one APPEND may cover at most 2^32-1 offsets",
        )
    })?;
    Ok(BatchSpan {
        base,
        count,
        batches,
    })
}

fn rejection_reply(key: RangeKey, rejection: AppendRejection) -> Reply {
    let range = key.to_string();
    match rejection {
        AppendRejection::Sealed { end } => Reply::error_with_detail(
            ErrorCode::RangeSealed,
            end,
            format!("range {range} is sealed at {end}; append to the stream's next range"),
        ),
        AppendRejection::StaleEpoch { current } => Reply::error_with_detail(
            ErrorCode::StaleEpoch,
            current,
            format!("range {range} is at epoch {current}: this writer is fenced"),
        ),
        AppendRejection::DuplicateDurable { durable_end } => Reply::error_with_detail(
            ErrorCode::OffsetDuplicate,
            durable_end,
            format!("these offsets of range {range} are already durable (next offset {durable_end})"),
        ),
        AppendRejection::DuplicateInFlight { next } => Reply::error_with_detail(
            ErrorCode::OffsetInFlightDuplicate,
            next,
            format!("an earlier copy of this batch of range {range} is being written; retry to learn its outcome"),
        ),
        AppendRejection::Gap { next } => Reply::error_with_detail(
            ErrorCode::OffsetGap,
            next,
            format!("range {range} expects offset {next} next; send the missing batches first"),
        ),
        AppendRejection::OutOfRange { start } => Reply::error_with_detail(
            ErrorCode::InvalidArgument,
            start,
            format!("batch offsets lie outside range {range}, which starts at {start}"),
        ),
        AppendRejection::Fenced { epoch } => Reply::error_with_detail(
            ErrorCode::RangeSealed,
            super::DETAIL_ABSENT,
            format!(
                "range {range} is fenced for a seal by the writer of epoch {epoch} (no end fixed \
                 yet); append to the stream's next range"
            ),
        ),
        AppendRejection::RepairNotFenced { current } => Reply::error(
            ErrorCode::InvalidArgument,
            format!(
                "a repair append needs range {range} fenced (or sealed) at the request's epoch; \
                 the range is at epoch {current} and not fenced at the request's: fence it with \
                 SEAL_RANGE FENCE_ONLY at that epoch first"
            ),
        ),
        AppendRejection::BeyondEnd { end } => Reply::error_with_detail(
            ErrorCode::InvalidArgument,
            end,
            format!("range {range} ends at {end}: a repair append must lie below it"),
        ),
        AppendRejection::Wait | AppendRejection::EpochNotSaved { .. } => Reply::error(
            ErrorCode::Internal,
            format!("range {range}: append decided before its epoch was settled ({rejection:?})"),
        ),
    }
}

/// What the claim step of an APPEND found.
enum Claim {
    /// The offsets are claimed: write the batch.
    Accepted(AppendTicket),
    /// Answer now.
    Refused(Reply),
    /// A raise or seal of the range is being saved: wait for it and try again.
    Wait(serve::local::Notified),
    /// This request raises the range's epoch: save it, then try again.
    SaveEpoch(RangeRecord),
}

/// Saves the raise of `key`'s epoch begun in the range, then lets it take effect, or undoes it
/// when the save fails.
pub async fn save_epoch_raise(
    worker: &Worker,
    key: RangeKey,
    record: RangeRecord,
) -> Result<(), Reply> {
    let epoch = record.epoch;
    let saved = worker.catalog.save(record).await;
    let settled = worker.with_range(key, |entry| {
        let committed = match &saved {
            Ok(()) => entry.state.commit_raise(epoch),
            Err(_) => {
                entry.state.abort_raise(epoch);
                false
            }
        };
        entry.changed.notify();
        committed
    });
    match saved {
        Err(error) => {
            log::error!(
                "worker {}: cannot save the epoch {epoch} of range {key}: {error}",
                worker.index
            );
            Err(Reply::error(
                ErrorCode::StorageUnavailable,
                format!(
                    "range {key} is still at its earlier epoch: its raise to {epoch} could not be \
                     saved ({error}); retry"
                ),
            ))
        }
        Ok(()) if settled != Some(true) => Err(super::range_not_found(key)),
        Ok(()) => Ok(()),
    }
}

pub async fn handle(
    worker: &Worker,
    request: AppendRequest,
    payload: Bytes,
    received: Instant,
) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    let started = Instant::now();
    worker
        .metrics
        .latency(Stage::AppendQueue, started - received);
    if worker.is_shutting_down() {
        return Reply::error(
            ErrorCode::ShuttingDown,
            "the node is shutting down; retry on another connection",
        );
    }
    if request.epoch > wire::Epoch::MAX {
        return super::absent_epoch(request.epoch);
    }
    if payload.is_empty() {
        return match (request.repair, request.confirmed_offset) {
            (false, Some(confirmed)) => confirm_only(worker, key, request, confirmed).await,
            (true, _) => Reply::error(
                ErrorCode::InvalidArgument,
                "a repair APPEND carries the batches it copies; this one carries none",
            ),
            (false, None) => Reply::error(
                ErrorCode::InvalidArgument,
                "APPEND carries no record batch and no confirmed_offset (a confirm-only APPEND \
                 needs confirmed_offset)",
            ),
        };
    }
    let span = match check_batches(&request, &payload) {
        Ok(span) => span,
        Err(reply) => return reply,
    };
    let ticket = loop {
        let claim = worker.with_range(key, |entry| {
            if request.repair {
                // A repair never raises: it is accepted at the fencing epoch only.
                return match entry
                    .state
                    .try_repair_append(request.epoch, span.base, span.count)
                {
                    Ok(ticket) => Claim::Accepted(ticket),
                    Err(AppendRejection::Wait) => Claim::Wait(entry.changed.notified()),
                    Err(rejection) => Claim::Refused(rejection_reply(key, rejection)),
                };
            }
            match entry.state.begin_epoch_raise(request.epoch) {
                RaiseStep::Wait => return Claim::Wait(entry.changed.notified()),
                RaiseStep::Save { epoch } => {
                    let mut record = record_of(key, entry);
                    record.epoch = epoch;
                    return Claim::SaveEpoch(record);
                }
                RaiseStep::NotNeeded => {}
            }
            // A fenced writer's report is ignored: only the current writer knows what is
            // confirmed. So is a report to a fenced range, whose append is refused.
            if request.epoch == entry.state.epoch()
                && entry.state.end().is_none()
                && !entry.state.is_fenced()
            {
                if let Some(confirmed) = request.confirmed_offset {
                    let before = entry.state.fetch_limit();
                    entry.state.report_confirmed(confirmed);
                    if entry.state.fetch_limit() != before {
                        entry.changed.notify();
                    }
                }
            }
            match entry.state.try_append(request.epoch, span.base, span.count) {
                Ok(ticket) => Claim::Accepted(ticket),
                Err(AppendRejection::Wait) => Claim::Wait(entry.changed.notified()),
                Err(rejection) => Claim::Refused(rejection_reply(key, rejection)),
            }
        });
        match claim {
            None => return super::range_not_found(key),
            Some(Claim::Accepted(ticket)) => break ticket,
            Some(Claim::Refused(reply)) => return reply,
            Some(Claim::Wait(notified)) => notified.await,
            Some(Claim::SaveEpoch(record)) => {
                if let Err(reply) = save_epoch_raise(worker, key, record).await {
                    return reply;
                }
            }
        }
    };
    let batch_end = span.base + u64::from(span.count);
    let payload_bytes = payload.len() as u64;

    let written = worker
        .storage
        .append(key, span.base, span.count, payload)
        .await;
    let durable_at = Instant::now();
    worker
        .metrics
        .latency(Stage::AppendWrite, durable_at - started);
    if let Err(error) = written {
        worker.with_range(key, |entry| {
            entry.state.fail_append(ticket);
            entry.changed.notify();
        });
        return error.reply();
    }
    if crate::fault::armed(crate::fault::ABORT_AFTER_APPEND_DURABLE) {
        log::error!("injected fault: aborting after a durable append of range {key}");
        std::process::abort();
    }

    // Acknowledge only once this batch and everything before it are durable. The store
    // completes a worker's appends in WAL order, so `Waiting` is rare; it is handled anyway.
    let completion = worker.with_range(key, |entry| {
        let completion = entry.state.complete_append(ticket);
        if completion == Completion::Advanced {
            entry.changed.notify();
        }
        completion
    });
    let mut durable = match completion {
        None => return super::range_not_found(key),
        Some(completion) => completion == Completion::Advanced,
    };
    if completion == Some(Completion::Waiting) {
        loop {
            let step = worker.with_range(key, |entry| {
                if entry.state.is_pending(ticket) {
                    Err(entry.changed.notified())
                } else {
                    Ok(entry.state.durable_end() >= batch_end)
                }
            });
            match step {
                None => return super::range_not_found(key),
                Some(Ok(settled)) => {
                    durable = settled;
                    break;
                }
                Some(Err(notified)) => notified.await,
            }
        }
    }
    if !durable {
        return Reply::error(
            ErrorCode::StorageUnavailable,
            "an earlier batch of this range failed to be written; resend from the range's next offset",
        );
    }
    if request.repair {
        worker.metrics.add(
            &worker.metrics.repair_append_batches,
            u64::from(span.batches),
        );
        worker
            .metrics
            .add(&worker.metrics.repair_append_bytes, payload_bytes);
    }
    let reply = Reply::new(Response::Append(AppendResponse {
        base_offset: span.base,
        next_offset: batch_end,
    }));
    worker
        .metrics
        .latency(Stage::AppendReply, durable_at.elapsed());
    worker
        .metrics
        .latency(Stage::AppendTotal, received.elapsed());
    reply
}

/// What the decision step of a confirm-only APPEND found.
enum ConfirmStep {
    /// Recorded: answer with this offset.
    Done(Offset),
    Refused(Reply),
    Wait(serve::local::Notified),
    SaveEpoch(RangeRecord),
}

/// A confirm-only APPEND: records the writer's acknowledged prefix (after raising the epoch if
/// the request's is above the range's) and wakes the long polls it makes data readable for.
async fn confirm_only(
    worker: &Worker,
    key: RangeKey,
    request: AppendRequest,
    confirmed: Offset,
) -> Reply {
    loop {
        let step = worker.with_range(key, |entry| {
            match entry.state.begin_epoch_raise(request.epoch) {
                RaiseStep::Wait => return ConfirmStep::Wait(entry.changed.notified()),
                RaiseStep::Save { epoch } => {
                    let mut record = record_of(key, entry);
                    record.epoch = epoch;
                    return ConfirmStep::SaveEpoch(record);
                }
                RaiseStep::NotNeeded => {}
            }
            let before = entry.state.fetch_limit();
            match entry.state.confirm(request.epoch, confirmed) {
                Ok(next) => {
                    if entry.state.fetch_limit() != before {
                        entry.changed.notify();
                    }
                    ConfirmStep::Done(next)
                }
                Err(AppendRejection::Wait) => ConfirmStep::Wait(entry.changed.notified()),
                Err(rejection) => ConfirmStep::Refused(rejection_reply(key, rejection)),
            }
        });
        match step {
            None => return super::range_not_found(key),
            Some(ConfirmStep::Done(next)) => {
                return Reply::new(Response::Append(AppendResponse {
                    base_offset: next,
                    next_offset: next,
                }))
            }
            Some(ConfirmStep::Refused(reply)) => return reply,
            Some(ConfirmStep::Wait(notified)) => notified.await,
            Some(ConfirmStep::SaveEpoch(record)) => {
                if let Err(reply) = save_epoch_raise(worker, key, record).await {
                    return reply;
                }
            }
        }
    }
}
