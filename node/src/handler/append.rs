//! APPEND: check the batches, claim their offsets in the range, hand them to the store, and
//! answer once they are durable.
//!
//! The range's state machine (`range.rs`) decides duplicates, gaps, seals and stale epochs
//! before anything is written; the batches' CRCs are checked here so corrupt data is refused at
//! the door and never reaches the WAL.

use std::time::Instant;

use bytes::Bytes;
use serve::Reply;
use wire::msg::{AppendRequest, AppendResponse, Response};
use wire::{BatchIter, ErrorCode, Offset, RangeKey};

use crate::metrics::Stage;
use crate::range::{AppendRejection, Completion};
use crate::worker::Worker;

/// The offsets an APPEND payload covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub base: Offset,
    pub count: u32,
}

/// Walks the payload: every batch intact, for this stream, range and epoch, offsets contiguous.
pub fn check_batches(request: &AppendRequest, payload: &Bytes) -> Result<BatchSpan, Reply> {
    if payload.is_empty() {
        return Err(Reply::error(
            ErrorCode::InvalidArgument,
            "APPEND carries no record batch",
        ));
    }
    let mut span: Option<(Offset, Offset)> = None;
    for batch in BatchIter::new(payload.clone()) {
        let batch = batch.map_err(|error| {
            Reply::error(
                error.error_code(),
                format!("record batch rejected: {error}; resend an intact batch"),
            )
        })?;
        let header = batch.header();
        if header.stream_id != request.stream_id
            || header.range_index != request.range_index
            || header.epoch != request.epoch
        {
            return Err(Reply::error(
                ErrorCode::InvalidArgument,
                format!(
                    "batch at offset {} is for stream {} range {} epoch {}, the request for stream {} range {} epoch {}",
                    header.base_offset,
                    header.stream_id,
                    header.range_index,
                    header.epoch,
                    request.stream_id,
                    request.range_index,
                    request.epoch
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
    let (base, end) = span.expect("a non-empty payload yields a batch or an error");
    let count = u32::try_from(end.saturating_distance_from(base)).map_err(|_| {
        Reply::error(
            ErrorCode::InvalidArgument,
            "one APPEND may cover at most 2^32-1 offsets",
        )
    })?;
    Ok(BatchSpan { base, count })
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
    }
}

fn persist_epoch(worker: &Worker, key: RangeKey) -> Result<(), Reply> {
    let Some(record) = worker.range_record(key) else {
        return Ok(());
    };
    worker.catalog.save(&record).map_err(|error| {
        log::error!("worker {}: cannot persist the epoch of range {}: {error}", worker.index, key);
        Reply::error(
            ErrorCode::StorageUnavailable,
            format!("the batch is durable but the range's new epoch could not be persisted: {error}; retry"),
        )
    })
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
    let span = match check_batches(&request, &payload) {
        Ok(span) => span,
        Err(reply) => return reply,
    };
    let claimed = worker.with_range(key, |entry| {
        // A fenced writer's report is ignored: only the current writer knows what is confirmed.
        let previous_epoch = entry.state.epoch();
        let current_writer = request.epoch >= previous_epoch;
        if let Some(confirmed) = request.confirmed_offset.filter(|_| current_writer) {
            let before = entry.state.fetch_limit();
            entry.state.report_confirmed(confirmed);
            if entry.state.fetch_limit() != before {
                entry.changed.notify();
            }
        }
        entry
            .state
            .try_append(request.epoch, span.base, span.count)
            .map(|ticket| (ticket, request.epoch > previous_epoch))
    });
    let (ticket, epoch_raised) = match claimed {
        None => return super::range_not_found(key),
        Some(Err(rejection)) => return rejection_reply(key, rejection),
        Some(Ok(claimed)) => claimed,
    };
    let batch_end = span.base + u64::from(span.count);

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
    if epoch_raised {
        // A new writer fenced the old one on this node; keep the fence across a restart.
        if let Err(reply) = persist_epoch(worker, key) {
            return reply;
        }
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
