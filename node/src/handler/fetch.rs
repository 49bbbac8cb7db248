//! FETCH: whole record batches from an offset, never past the readable bound, with long-poll.
//!
//! The readable bound is the range's confirmed offset while it is open and its end once sealed
//! (`RangeState::fetch_limit`). With nothing readable at `start_offset` the request waits up to
//! `max_wait_ms` on the range's change notification, which every durable or confirmed advance
//! and every seal fires, so a waiting fetch answers as soon as data becomes readable.
//!
//! Two flags change the bound (`docs/protocol.md` §5.8): `DURABLE` reads up to the replica's
//! durable end (cut at the end once sealed), on fenced or sealed ranges only, for the repair
//! step of a seal; `SEALED` (the reader knows the range is sealed) answers `OFFSET_NOT_HELD`
//! with the replica's readable bound at once instead of long-polling when it cannot serve
//! `start_offset` now, so the reader tries another replica.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serve::Reply;
use wire::msg::{FetchRequest, FetchResponse, Response};
use wire::{BatchIter, ErrorCode, Offset, RangeKey};

use crate::metrics::Stage;
use crate::range::{FetchBounds, FetchMode, RangeState};
use crate::worker::Worker;

/// Longest long-poll a node grants (`docs/protocol.md` §8).
pub const MAX_WAIT_MS: u32 = 30_000;
/// Room kept in a response frame for its header.
const FRAME_HEADROOM_BYTES: usize = 4096;

pub async fn handle(worker: &Worker, request: FetchRequest, received: Instant) -> Reply {
    let key = RangeKey::new(request.stream_id, request.range_index);
    let started = Instant::now();
    worker
        .metrics
        .latency(Stage::FetchQueue, started - received);
    if request.max_bytes == 0 {
        return Reply::error(ErrorCode::InvalidArgument, "max_bytes must be at least 1");
    }
    // What the connection charged its budgets for this answer before the request started:
    // the store is asked for no more (one whole batch larger than this is still returned,
    // §5.8, and charged at its real size when queued).
    let max_bytes = read_bytes_bound(worker, &request);
    let wait = Duration::from_millis(u64::from(request.max_wait_ms.min(MAX_WAIT_MS)));
    let deadline = started + wait;
    let start = request.start_offset;
    let mode = FetchMode {
        durable: request.read_durable,
        expect_sealed: request.expect_sealed,
    };

    loop {
        let step = worker.with_range(key, |entry| {
            let bounds = entry.state.classify_fetch_as(start, mode);
            let notified = (bounds == FetchBounds::Wait).then(|| entry.changed.notified());
            (bounds, notified, response_header(&entry.state, mode))
        });
        let Some((bounds, notified, header)) = step else {
            return super::range_not_found(key);
        };
        match bounds {
            FetchBounds::NotFenced => {
                return Reply::error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "a DURABLE fetch reads fenced or sealed ranges only; range {key} is \
                         open and not fenced (fence it with SEAL_RANGE FENCE_ONLY first)"
                    ),
                );
            }
            FetchBounds::NotHeld { bound } => {
                worker.metrics.add(&worker.metrics.offset_not_held, 1);
                return Reply::error_with_detail(
                    ErrorCode::OffsetNotHeld,
                    bound.0,
                    format!(
                        "this replica of range {key} serves offsets below {bound} only now, not \
                         {start}; read it from another replica"
                    ),
                );
            }
            FetchBounds::OutOfRange => {
                let range_start = worker
                    .with_range(key, |entry| entry.state.start())
                    .unwrap_or_default();
                return Reply::error_with_detail(
                    ErrorCode::OffsetOutOfRange,
                    range_start.0,
                    format!("offset {start} is below the start {range_start} of range {key}"),
                );
            }
            FetchBounds::EndOfRange { end } if start > end => {
                return Reply::error_with_detail(
                    ErrorCode::OffsetOutOfRange,
                    end.0,
                    format!("offset {start} is past the end {end} of sealed range {key}"),
                );
            }
            FetchBounds::EndOfRange { .. } => {
                return finish(worker, header, Bytes::new(), received)
            }
            FetchBounds::Ready { limit } => {
                worker.metrics.latency(Stage::FetchWait, started.elapsed());
                let read_started = Instant::now();
                let data = match worker.storage.read(key, start, max_bytes).await {
                    Ok(data) => data,
                    Err(error) => return error.reply(),
                };
                worker
                    .metrics
                    .latency(Stage::FetchRead, read_started.elapsed());
                let payload = select_batches(data, start, limit, max_bytes);
                // Re-read the header: the bound may have moved while reading.
                let header = worker
                    .with_range(key, |entry| response_header(&entry.state, mode))
                    .unwrap_or(header);
                return finish(worker, header, payload, received);
            }
            FetchBounds::Wait => {
                let now = Instant::now();
                if now >= deadline || worker.is_shutting_down() {
                    worker.metrics.latency(Stage::FetchWait, started.elapsed());
                    return finish(worker, header, Bytes::new(), received);
                }
                if let Some(notified) = notified {
                    let _ = runtime::time::timeout(deadline - now, notified).await;
                }
            }
        }
    }
}

/// Bytes a FETCH asks the store for: its max_bytes, cut to what a response frame can carry.
/// The store may return one whole append larger than that (§5.8: at least one whole batch).
pub fn read_bytes_bound(worker: &Worker, request: &FetchRequest) -> usize {
    let frame_budget = worker
        .config
        .server
        .max_frame_size_bytes
        .saturating_sub(FRAME_HEADROOM_BYTES);
    (request.max_bytes as usize).min(frame_budget)
}

/// The answer's header: the readable bound of this read (the durable one for `DURABLE`),
/// what the replica holds, and the end if sealed.
fn response_header(state: &RangeState, mode: FetchMode) -> FetchResponse {
    FetchResponse {
        confirmed_offset: Some(state.read_limit(mode)),
        next_offset: state.held_end(),
        end_offset: state.end(),
    }
}

fn finish(worker: &Worker, header: FetchResponse, payload: Bytes, received: Instant) -> Reply {
    let reply = Reply::with_payload(Response::Fetch(header), payload);
    worker
        .metrics
        .latency(Stage::FetchTotal, received.elapsed());
    reply
}

/// Keeps the whole batches of `data` that end above `start` and at or below `limit`, stopping
/// before `max_bytes` is exceeded (but always keeping the first batch). `data` is what the store
/// returned: whole appends, which may begin with batches below `start`.
pub fn select_batches(data: Bytes, start: Offset, limit: Offset, max_bytes: usize) -> Bytes {
    let mut first: Option<usize> = None;
    let mut end = 0usize;
    let mut position = 0usize;
    for batch in BatchIter::unverified(data.clone()) {
        let Ok(batch) = batch else { break };
        let header = batch.header();
        let length = header.batch_len();
        let batch_end = header.next_offset();
        let batch_start = position;
        position += length;
        if batch_end <= start {
            continue;
        }
        if batch_end > limit {
            break;
        }
        match first {
            None => first = Some(batch_start),
            Some(from) if position - from > max_bytes => break,
            Some(_) => {}
        }
        end = position;
    }
    match first {
        Some(from) => data.slice(from..end),
        None => Bytes::from(BytesMut::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{BatchBuilder, Epoch, RangeIndex, StreamId};

    fn batch(base: u64, records: usize) -> Bytes {
        let mut builder = BatchBuilder::new(StreamId(1), RangeIndex(0), Epoch(1), Offset(base));
        for _ in 0..records {
            builder.push_record(&[7u8; 10]).unwrap();
        }
        builder.finish().unwrap()
    }

    fn concat(parts: &[&Bytes]) -> Bytes {
        let mut all = BytesMut::new();
        for part in parts {
            all.extend_from_slice(part);
        }
        all.freeze()
    }

    #[test]
    fn batches_below_start_and_above_limit_are_dropped() {
        let (first, second, third) = (batch(0, 2), batch(2, 2), batch(4, 2));
        let data = concat(&[&first, &second, &third]);
        assert_eq!(
            select_batches(data.clone(), Offset(0), Offset(6), 1 << 20),
            data
        );
        assert_eq!(
            select_batches(data.clone(), Offset(3), Offset(6), 1 << 20),
            concat(&[&second, &third])
        );
        assert_eq!(
            select_batches(data.clone(), Offset(2), Offset(4), 1 << 20),
            second
        );
        assert_eq!(
            select_batches(data.clone(), Offset(0), Offset(3), 1 << 20),
            first,
            "a batch crossing the limit waits"
        );
        assert!(select_batches(data, Offset(6), Offset(8), 1 << 20).is_empty());
    }

    #[test]
    fn max_bytes_keeps_at_least_one_batch() {
        let (first, second) = (batch(0, 2), batch(2, 2));
        let data = concat(&[&first, &second]);
        assert_eq!(select_batches(data.clone(), Offset(0), Offset(4), 1), first);
        assert_eq!(
            select_batches(
                data.clone(),
                Offset(0),
                Offset(4),
                first.len() + second.len()
            ),
            data
        );
        assert_eq!(
            select_batches(data, Offset(0), Offset(4), first.len() + 1),
            first
        );
    }
}
