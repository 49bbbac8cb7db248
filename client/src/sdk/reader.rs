//! [`Reader`]: reads a stream across its ranges, in offset order, never past what is
//! acknowledged (the confirmed offset of an open range, the recorded end of a sealed one).
//!
//! A task on the SDK's I/O thread reads ahead into a bounded queue that `next()` takes from.
//! It reads each range from a replica that holds the offset:
//! * a range sealed at the placement manager with FETCH `SEALED`: a replica that cannot serve
//!   the offset now (it missed the seal, or holds less than the end) answers `OFFSET_NOT_HELD`
//!   and the next replica is tried. If none can, a replica fenced but not yet sealed is read
//!   with `DURABLE|SEALED` and clipped at the recorded end: below it every replica holds the
//!   same batches, because only the range's creator ever wrote new data to it;
//! * the open range with long polls (FETCH serves up to the confirmed offset only). An empty
//!   answer makes the reader ask the placement manager whether the range was sealed meanwhile
//!   (a failed-over writer leaves the old range fenced and silent).
//!
//! A reader never raises the epoch and never fences or seals anything.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wire::msg::{DescribeRangeRequest, DescribeRangeResponse, FetchRequest, FetchResponse};
use wire::{BatchIter, BatchView, ErrorCode, Offset, RangeKey, StreamId};

use crate::sdk::client::{describe_stream, list_ranges};
use crate::sdk::error::SdkError;
use crate::sdk::io::{join_all, Backoff, Io, IoHandle};

/// Bytes one FETCH asks for.
const FETCH_MAX_BYTES: u32 = 1 << 20;
/// Long-poll wait of a FETCH on the open range.
const FOLLOW_WAIT_MS: u32 = 1_000;
/// Read-ahead bound: the task stops fetching while this many bytes or batches wait.
const READ_AHEAD_BYTES: usize = 4 << 20;
const READ_AHEAD_BATCHES: usize = 256;
/// How often a follower with no open range to read asks the placement manager for a new one.
const NO_OPEN_RANGE_POLL: Duration = Duration::from_millis(200);

/// How far a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Tail the open range with long polls; never ends.
    Follow,
    /// Stop at the stream's end as of the open: `None` after the last offset readable then.
    ToEnd,
}

/// Records of one batch, from `base_offset` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    /// The offset of `records[0]`.
    pub base_offset: Offset,
    pub records: Vec<Bytes>,
}

impl ReadBatch {
    /// One past the last record's offset.
    pub fn next_offset(&self) -> Offset {
        Offset(self.base_offset.0 + self.records.len() as u64)
    }

    fn bytes(&self) -> usize {
        self.records.iter().map(Bytes::len).sum::<usize>() + 16
    }
}

struct Shared {
    /// Keeps the I/O thread running while the reader lives.
    _io: Arc<IoHandle>,
    state: Mutex<Queue>,
}

struct Queue {
    ready: VecDeque<ReadBatch>,
    ready_bytes: usize,
    /// The reading task stopped: `Ok` at the end of a `ToEnd` read, else why.
    finished: Option<Result<(), SdkError>>,
    dropped: bool,
    reader_waker: Option<Waker>,
    task_waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A stream's reader. `Send`; `next()` works under any executor. Dropping it stops reading.
pub struct Reader {
    shared: Arc<Shared>,
}

impl Reader {
    pub(crate) async fn open(
        io: Arc<IoHandle>,
        stream: StreamId,
        from: Offset,
        mode: ReadMode,
    ) -> Result<Reader, SdkError> {
        let stop = io
            .submit(move |io| async move { opening_bounds(&io, stream, from, mode).await })
            .await?;
        let shared = Arc::new(Shared {
            _io: Arc::clone(&io),
            state: Mutex::new(Queue {
                ready: VecDeque::new(),
                ready_bytes: 0,
                finished: None,
                dropped: false,
                reader_waker: None,
                task_waker: None,
            }),
        });
        let task_shared = Arc::clone(&shared);
        let started = io.spawn(move |io| {
            let task = ReadTask {
                io: Rc::clone(io),
                shared: task_shared,
                stream,
                position: from,
                stop,
                mode,
                ranges: Vec::new(),
                preferred: 0,
                stalled_since: None,
            };
            runtime::spawn(task.run());
        });
        if !started {
            return Err(SdkError::Closed);
        }
        Ok(Reader { shared })
    }

    /// The next batch (its records from the reader's position on); `None` once a
    /// [`ReadMode::ToEnd`] reader read everything readable when it was opened.
    pub async fn next(&mut self) -> Result<Option<ReadBatch>, SdkError> {
        let shared = &self.shared;
        std::future::poll_fn(|context| {
            let mut queue = shared.lock();
            if let Some(batch) = queue.ready.pop_front() {
                queue.ready_bytes -= batch.bytes();
                if let Some(waker) = queue.task_waker.take() {
                    waker.wake();
                }
                return Poll::Ready(Ok(Some(batch)));
            }
            match &queue.finished {
                Some(Ok(())) => return Poll::Ready(Ok(None)),
                Some(Err(error)) => return Poll::Ready(Err(error.clone())),
                None => {}
            }
            queue.reader_waker = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.dropped = true;
        if let Some(waker) = queue.task_waker.take() {
            waker.wake();
        }
    }
}

/// Checks the stream and `from`; for [`ReadMode::ToEnd`] the offset to stop at.
async fn opening_bounds(
    io: &Io,
    stream: StreamId,
    from: Offset,
    mode: ReadMode,
) -> Result<Option<Offset>, SdkError> {
    let record = describe_stream(io, stream).await?;
    if record.deleted {
        return Err(SdkError::StreamDeleted { stream });
    }
    let ranges = list_ranges(io, stream).await?;
    let start = ranges
        .first()
        .map_or(record.start_offset, |range| range.start_offset)
        .max(record.start_offset);
    if from < start {
        return Err(SdkError::Trimmed { start });
    }
    if mode == ReadMode::Follow {
        return Ok(None);
    }
    let stop = match ranges.last() {
        None => start,
        Some(range) => match range.end_offset {
            Some(end) => end,
            None => confirmed_on_replicas(io, range)
                .await
                .max(range.start_offset),
        },
    };
    Ok(Some(stop))
}

/// The largest confirmed offset the replicas of an open range report (what a reader could
/// read there now).
async fn confirmed_on_replicas(io: &Io, range: &wire::Range) -> Offset {
    let request = DescribeRangeRequest {
        stream_id: range.stream_id,
        range_index: range.index,
    };
    let answers = join_all(
        range
            .replicas
            .iter()
            .map(|replica| {
                io.request::<DescribeRangeRequest, DescribeRangeResponse>(
                    &replica.address,
                    &request,
                    Bytes::new(),
                    io.config.replica_timeout,
                )
            })
            .collect(),
    )
    .await;
    answers
        .into_iter()
        .filter_map(|answer| match answer {
            Ok(Ok((response, _))) => {
                let range = response.range;
                // A sealed replica's end was recorded at the placement manager first.
                range.end_offset.or(range.confirmed_offset)
            }
            _ => None,
        })
        .max()
        .unwrap_or(range.start_offset)
}

/// What one attempt at reading produced.
enum Step {
    Batches(Vec<ReadBatch>),
    /// Nothing readable now; try again (after the long poll it already waited).
    Nothing,
    /// The `ToEnd` reader reached its end.
    End,
}

struct ReadTask {
    io: Rc<Io>,
    shared: Arc<Shared>,
    stream: StreamId,
    position: Offset,
    stop: Option<Offset>,
    mode: ReadMode,
    /// The stream's ranges as last listed by the placement manager (ends adopted from sealed
    /// replicas too).
    ranges: Vec<wire::Range>,
    /// The replica to try first.
    preferred: usize,
    /// A `ToEnd` reader below its end that has read nothing since then: it gives up after
    /// `retry_for` (the replicas that held the rest are gone and no writer sealed the range).
    stalled_since: Option<Instant>,
}

impl ReadTask {
    async fn run(mut self) {
        let result = self.read_all().await;
        let mut queue = self.shared.lock();
        queue.finished = Some(result);
        if let Some(waker) = queue.reader_waker.take() {
            waker.wake();
        }
    }

    async fn read_all(&mut self) -> Result<(), SdkError> {
        loop {
            if !self.wait_for_room().await {
                return Err(SdkError::Closed);
            }
            match self.step().await? {
                Step::Batches(batches) => {
                    self.stalled_since = None;
                    let mut queue = self.shared.lock();
                    for batch in batches {
                        queue.ready_bytes += batch.bytes();
                        queue.ready.push_back(batch);
                    }
                    if let Some(waker) = queue.reader_waker.take() {
                        waker.wake();
                    }
                }
                Step::Nothing => {
                    if self.mode == ReadMode::ToEnd {
                        let since = *self.stalled_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.io.config.retry_for {
                            return Err(SdkError::Unavailable {
                                what: format!(
                                    "reading stream {} at {} (readable up to {:?} when opened)",
                                    self.stream, self.position, self.stop
                                ),
                                waited: since.elapsed(),
                            });
                        }
                    }
                    continue;
                }
                Step::End => return Ok(()),
            }
        }
    }

    /// Waits while the read-ahead queue is full; false once the reader is dropped.
    async fn wait_for_room(&self) -> bool {
        let shared = &self.shared;
        std::future::poll_fn(|context| {
            let mut queue = shared.lock();
            if queue.dropped {
                return Poll::Ready(false);
            }
            if queue.ready_bytes < READ_AHEAD_BYTES && queue.ready.len() < READ_AHEAD_BATCHES {
                return Poll::Ready(true);
            }
            queue.task_waker = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }

    async fn step(&mut self) -> Result<Step, SdkError> {
        if self.stop.is_some_and(|stop| self.position >= stop) {
            return Ok(Step::End);
        }
        let Some(range) = self.range_at(self.position).await? else {
            // No range holds the position yet: the last one is sealed and no writer opened a
            // new one. A follower waits for one.
            runtime::time::sleep(NO_OPEN_RANGE_POLL).await;
            return Ok(Step::Nothing);
        };
        let limit = match (range.end_offset, self.stop) {
            (Some(end), Some(stop)) => Some(end.min(stop)),
            (end, stop) => end.or(stop),
        };
        let batches = if range.end_offset.is_some() {
            self.read_sealed(&range).await?
        } else {
            self.read_open(&range).await?
        };
        let Some(batches) = batches else {
            return Ok(Step::Nothing);
        };
        let mut out = Vec::new();
        for batch in batches {
            let header = *batch.header();
            if header.next_offset() <= self.position {
                continue;
            }
            if limit.is_some_and(|limit| header.next_offset() > limit) {
                // At or past the end (rule 6): never shown.
                break;
            }
            if header.base_offset > self.position {
                return Err(SdkError::Protocol(format!(
                    "range {} served a batch at {} when {} was asked for",
                    RangeKey::new(self.stream, range.index),
                    header.base_offset,
                    self.position
                )));
            }
            let records = records_of(&batch)?;
            let skip = (self.position.0 - header.base_offset.0) as usize;
            out.push(ReadBatch {
                base_offset: self.position,
                records: records.into_iter().skip(skip).collect(),
            });
            self.position = header.next_offset();
        }
        if out.is_empty() {
            Ok(Step::Nothing)
        } else {
            Ok(Step::Batches(out))
        }
    }

    /// The range holding `position`, refreshing the list from the placement manager when the
    /// cached one does not say. `None` while no range holds it yet.
    async fn range_at(&mut self, position: Offset) -> Result<Option<wire::Range>, SdkError> {
        if let Some(range) = find(&self.ranges, position) {
            return Ok(Some(range.clone()));
        }
        self.refresh().await?;
        Ok(find(&self.ranges, position).cloned())
    }

    async fn refresh(&mut self) -> Result<(), SdkError> {
        let ranges = list_ranges(&self.io, self.stream).await?;
        if ranges.is_empty() {
            let record = describe_stream(&self.io, self.stream).await?;
            if record.deleted {
                return Err(SdkError::StreamDeleted {
                    stream: self.stream,
                });
            }
        }
        if let Some(first) = ranges.first() {
            if self.position < first.start_offset {
                return Err(SdkError::Trimmed {
                    start: first.start_offset,
                });
            }
        }
        self.ranges = ranges;
        Ok(())
    }

    /// Adopts `end` for the cached range `index` (a replica showed it sealed: recorded at the
    /// placement manager before any replica is sealed).
    fn adopt_end(&mut self, index: wire::RangeIndex, end: Offset) {
        if let Some(range) = self.ranges.iter_mut().find(|range| range.index == index) {
            range.end_offset.get_or_insert(end);
        }
    }

    /// Whole batches from `position` of a sealed range: FETCH `SEALED` from each replica in
    /// turn, then `DURABLE|SEALED` from a fenced one; retried within `retry_for`.
    async fn read_sealed(
        &mut self,
        range: &wire::Range,
    ) -> Result<Option<Vec<BatchView>>, SdkError> {
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            for durable in [false, true] {
                for attempt in 0..range.replicas.len() {
                    let replica = (self.preferred + attempt) % range.replicas.len();
                    let request = FetchRequest {
                        stream_id: self.stream,
                        range_index: range.index,
                        max_bytes: FETCH_MAX_BYTES,
                        start_offset: self.position,
                        max_wait_ms: 0,
                        read_durable: durable,
                        expect_sealed: true,
                    };
                    match self.fetch(range, replica, &request).await {
                        Fetched::Batches(batches) => {
                            self.preferred = replica;
                            return Ok(Some(batches));
                        }
                        Fetched::Trimmed(start) => return Err(SdkError::Trimmed { start }),
                        Fetched::Empty { .. } | Fetched::Refused => {}
                    }
                }
            }
            if started.elapsed() >= self.io.config.retry_for {
                return Err(SdkError::Unavailable {
                    what: format!(
                        "reading offset {} of range {}",
                        self.position,
                        RangeKey::new(self.stream, range.index)
                    ),
                    waited: started.elapsed(),
                });
            }
            backoff.wait().await;
            if self.dropped() {
                return Err(SdkError::Closed);
            }
        }
    }

    /// Whole batches from `position` of the open range, with a long poll. `None` when nothing
    /// came; then the placement manager is asked whether the range was sealed meanwhile.
    async fn read_open(&mut self, range: &wire::Range) -> Result<Option<Vec<BatchView>>, SdkError> {
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            let replica = self.preferred % range.replicas.len().max(1);
            let request = FetchRequest {
                stream_id: self.stream,
                range_index: range.index,
                max_bytes: FETCH_MAX_BYTES,
                start_offset: self.position,
                max_wait_ms: if self.mode == ReadMode::Follow {
                    FOLLOW_WAIT_MS
                } else {
                    // Up to the end as of the open: readable already, on some replica.
                    0
                },
                read_durable: false,
                expect_sealed: false,
            };
            match self.fetch(range, replica, &request).await {
                Fetched::Batches(batches) => return Ok(Some(batches)),
                Fetched::Trimmed(start) => return Err(SdkError::Trimmed { start }),
                Fetched::Empty { end: Some(end) } => {
                    self.adopt_end(range.index, end);
                    return Ok(None);
                }
                Fetched::Empty { end: None } => {
                    if self.mode == ReadMode::ToEnd {
                        // This replica's confirmed offset lags: try the next one.
                        self.preferred += 1;
                        runtime::time::sleep(Duration::from_millis(10)).await;
                    }
                    self.refresh().await?;
                    return Ok(None);
                }
                Fetched::Refused => {
                    self.preferred += 1;
                    self.refresh().await?;
                    if find(&self.ranges, self.position).is_some_and(|found| found.is_sealed()) {
                        return Ok(None);
                    }
                    if started.elapsed() >= self.io.config.retry_for {
                        return Err(SdkError::Unavailable {
                            what: format!(
                                "reading offset {} of range {}",
                                self.position,
                                RangeKey::new(self.stream, range.index)
                            ),
                            waited: started.elapsed(),
                        });
                    }
                    backoff.wait().await;
                    if self.dropped() {
                        return Err(SdkError::Closed);
                    }
                }
            }
        }
    }

    fn dropped(&self) -> bool {
        self.shared.lock().dropped
    }

    async fn fetch(&self, range: &wire::Range, replica: usize, request: &FetchRequest) -> Fetched {
        let Some(node) = range.replicas.get(replica) else {
            return Fetched::Refused;
        };
        let timeout =
            self.io.config.replica_timeout + Duration::from_millis(u64::from(request.max_wait_ms));
        let answer = self
            .io
            .request::<FetchRequest, FetchResponse>(&node.address, request, Bytes::new(), timeout)
            .await;
        let key = RangeKey::new(self.stream, range.index);
        match answer {
            Ok(Ok((response, payload))) => {
                let mut batches = Vec::new();
                for batch in BatchIter::new(payload) {
                    match batch {
                        Ok(batch) => batches.push(batch),
                        Err(error) => {
                            log::warn!(
                                "range {key} on node {}: bad batch: {error}; trying another replica",
                                node.node_id
                            );
                            return Fetched::Refused;
                        }
                    }
                }
                if batches.is_empty() {
                    Fetched::Empty {
                        end: response.end_offset,
                    }
                } else {
                    Fetched::Batches(batches)
                }
            }
            Ok(Err(error))
                if error.code == ErrorCode::OffsetOutOfRange
                    && Offset(error.detail) > request.start_offset
                    && range
                        .end_offset
                        .is_none_or(|end| Offset(error.detail) < end) =>
            {
                // Below the range's (trimmed) start.
                Fetched::Trimmed(Offset(error.detail))
            }
            Ok(Err(error)) => {
                log::debug!(
                    "range {key} on node {}: FETCH answered {} {}",
                    node.node_id,
                    error.code,
                    error.message
                );
                Fetched::Refused
            }
            Err(failure) => {
                log::info!("range {key} on node {}: {failure}", node.node_id);
                Fetched::Refused
            }
        }
    }
}

enum Fetched {
    Batches(Vec<BatchView>),
    Empty {
        end: Option<Offset>,
    },
    /// The offset was trimmed: the range now starts here.
    Trimmed(Offset),
    /// This replica cannot serve it now (an error, not held, unreachable).
    Refused,
}

/// The range holding `position` in a list sorted by index.
fn find(ranges: &[wire::Range], position: Offset) -> Option<&wire::Range> {
    ranges.iter().find(|range| {
        range.start_offset <= position && range.end_offset.is_none_or(|end| position < end)
    })
}

/// The records of a batch written by the SDK (`u32 length` + bytes each); a batch written
/// otherwise with one record is its payload.
fn records_of(batch: &BatchView) -> Result<Vec<Bytes>, SdkError> {
    let records: Result<Vec<Bytes>, _> = batch.records().collect();
    match records {
        Ok(records) => Ok(records),
        Err(_) if batch.header().record_count == 1 => Ok(vec![batch.payload()]),
        Err(error) => Err(SdkError::Protocol(format!(
            "batch at {} does not hold SDK records: {error}",
            batch.header().base_offset
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(index: u32, start: u64, end: Option<u64>) -> wire::Range {
        wire::Range {
            index: wire::RangeIndex(index),
            start_offset: Offset(start),
            end_offset: end.map(Offset),
            ..wire::Range::default()
        }
    }

    #[test]
    fn the_range_holding_an_offset() {
        let ranges = vec![
            range(0, 0, Some(10)),
            range(1, 10, Some(10)),
            range(2, 10, None),
        ];
        assert_eq!(find(&ranges, Offset(0)).unwrap().index.0, 0);
        assert_eq!(find(&ranges, Offset(9)).unwrap().index.0, 0);
        // An empty sealed range holds nothing: 10 is in the open range after it.
        assert_eq!(find(&ranges, Offset(10)).unwrap().index.0, 2);
        assert_eq!(find(&ranges, Offset(1_000)).unwrap().index.0, 2);
        let sealed = vec![range(0, 0, Some(10))];
        assert!(find(&sealed, Offset(10)).is_none());
    }

    #[test]
    fn records_skip_to_the_position() {
        let mut builder =
            wire::BatchBuilder::new(StreamId(1), wire::RangeIndex(0), wire::Epoch(1), Offset(5));
        for record in [b"a", b"b", b"c"] {
            builder.push_record(record).unwrap();
        }
        let batch = BatchView::parse(builder.finish().unwrap()).unwrap();
        let records = records_of(&batch).unwrap();
        assert_eq!(
            records,
            vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]
        );
    }

    /// Compiles only if the reader and its `next()` future may cross threads.
    #[allow(dead_code)]
    fn next_is_send(reader: &mut Reader) -> impl std::future::Future + Send + '_ {
        fn assert_send<T: Send>() {}
        assert_send::<Reader>();
        reader.next()
    }
}
