//! [`Writer`]: appends to a stream, replicated by chasing writes, sealed and moved to a new
//! range when a replica fails.
//!
//! The application side is a queue under a mutex ([`Shared`]): `append` assigns the batch its
//! offsets and encodes it there, under the lock, so the order of calls is the order in the
//! stream, while the writer's window (appended, not yet acknowledged: `max_in_flight_bytes`,
//! `max_in_flight_batches`) has room. Beyond it the [`AppendFuture`] keeps the records itself
//! and waits, in a FIFO of waiting appends, for room (backpressure: the SDK's memory stays
//! bounded). The writer's driver ([`driver`]) on the SDK's I/O thread takes batches from the
//! queue while the in-flight bounds allow, sends each to every replica of the open range,
//! acknowledges them in order ([`pipeline`]), and seals with repair when a replica fails
//! ([`seal`]). Futures resolve through [`crate::sdk::completion`].

mod driver;
pub(crate) mod end;
mod open;
pub(crate) mod pipeline;
pub(crate) mod seal;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use wire::{BatchBuilder, Epoch, Offset, RangeIndex, StreamId};

use crate::sdk::completion::{Completion, Wait};
use crate::sdk::error::SdkError;
use crate::sdk::io::IoHandle;

/// Where an acknowledged batch landed in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendAck {
    /// The batch's first record's offset.
    pub base_offset: Offset,
    /// One past its last record's offset.
    pub next_offset: Offset,
}

pub(crate) type AppendSlot = Arc<Completion<Result<AppendAck, SdkError>>>;
type CloseSlot = Arc<Completion<Result<Offset, SdkError>>>;
type FlushSlot = Arc<Completion<Result<(), SdkError>>>;

/// A batch appended and not yet taken by the driver.
pub(crate) struct Submitted {
    pub(crate) base: Offset,
    pub(crate) next: Offset,
    /// The batch, stamped for `range_index` as it was when appended.
    pub(crate) batch: Bytes,
    pub(crate) range_index: RangeIndex,
    pub(crate) completion: AppendSlot,
}

/// What the application threads and the driver share.
pub(crate) struct Shared {
    /// Keeps the I/O thread running while anything of this writer is alive.
    _io: Arc<IoHandle>,
    pub(crate) stream: StreamId,
    pub(crate) epoch: Epoch,
    /// The window: bytes and batches appended and not yet acknowledged.
    max_bytes: usize,
    max_batches: usize,
    state: Mutex<Queue>,
}

pub(crate) struct Queue {
    /// The offset the next append gets.
    next_offset: Offset,
    /// The range appends are stamped for (the driver moves it on after a seal).
    pub(crate) range_index: RangeIndex,
    /// Appended, not yet taken by the driver; bounded by the futures the application holds.
    pub(crate) incoming: VecDeque<Submitted>,
    /// Everything below it is acknowledged.
    pub(crate) acked: Offset,
    /// Set once the writer failed: every pending and later append fails with it.
    pub(crate) failed: Option<SdkError>,
    /// `close()` was called: no more appends; the driver seals once everything is acknowledged.
    pub(crate) close: Option<CloseSlot>,
    /// The application dropped its `Writer`: the driver finishes what is queued and stops.
    pub(crate) dropped: bool,
    /// `flush()` callers, each with the offset it waits for.
    pub(crate) flushes: Vec<(Offset, FlushSlot)>,
    /// The driver's waker, woken when something arrives.
    pub(crate) driver_waker: Option<Waker>,
    /// Bytes and batches appended (queued or in flight) and not yet acknowledged.
    window_bytes: usize,
    window_batches: usize,
    /// Appends whose futures hold their records, waiting for room (created, not yet queued,
    /// not dropped): a new append never overtakes them.
    held: usize,
    /// Those of them that were polled, in the order they first waited, with their wakers.
    waiting: VecDeque<(u64, Waker)>,
    /// Names the next waiting append.
    next_waiter: u64,
}

impl Queue {
    fn new(start: Offset, range_index: RangeIndex) -> Queue {
        Queue {
            next_offset: start,
            range_index,
            incoming: VecDeque::new(),
            acked: start,
            failed: None,
            close: None,
            dropped: false,
            flushes: Vec::new(),
            driver_waker: None,
            window_bytes: 0,
            window_batches: 0,
            held: 0,
            waiting: VecDeque::new(),
            next_waiter: 0,
        }
    }

    /// Whether a batch of `bytes` fits the window (one batch always does).
    fn has_room(&self, bytes: usize, max_bytes: usize, max_batches: usize) -> bool {
        self.window_batches == 0
            || (self.window_batches < max_batches && self.window_bytes + bytes <= max_bytes)
    }

    /// Acknowledged batches (or ones failed) leave the window: the first waiting append may
    /// fit now.
    pub(crate) fn release(&mut self, bytes: usize, batches: usize) {
        self.window_bytes = self.window_bytes.saturating_sub(bytes);
        self.window_batches = self.window_batches.saturating_sub(batches);
        if let Some((_, waker)) = self.waiting.front() {
            waker.wake_by_ref();
        }
    }

    /// Wakes every waiting append (the writer failed, closes or was dropped).
    pub(crate) fn wake_waiting(&mut self) {
        for (_, waker) in &self.waiting {
            waker.wake_by_ref();
        }
    }

    /// Why appends cannot be queued any more, if so.
    fn refusal(&self) -> Option<SdkError> {
        if let Some(error) = &self.failed {
            return Some(error.clone());
        }
        if self.close.is_some() || self.dropped {
            return Some(SdkError::Closed);
        }
        None
    }
}

/// Where `append` put a batch.
enum Admitted {
    Queued(AppendSlot),
    Held(Held),
}

/// An append waiting for room in the window, with its records.
struct Held {
    shared: Arc<Shared>,
    records: Vec<Bytes>,
    /// The batch's size once built.
    bytes: usize,
    /// Its place among the waiting appends, from its first poll.
    waiter: Option<u64>,
    /// Queued, failed or dropped: no longer counted as held.
    left: bool,
}

impl Shared {
    fn new(io: Arc<IoHandle>, stream: StreamId, epoch: Epoch, range: &wire::Range) -> Shared {
        let config = io.config();
        Shared {
            max_bytes: config.max_in_flight_bytes,
            max_batches: config.max_in_flight_batches,
            _io: io,
            stream,
            epoch,
            state: Mutex::new(Queue::new(range.start_offset, range.index)),
        }
    }

    /// Queues `records` now if the window has room and nobody waits, else hands them back to
    /// be held by the future.
    fn admit(self: &Arc<Self>, records: Vec<Bytes>) -> Result<Admitted, SdkError> {
        if records.is_empty() {
            return Err(SdkError::InvalidArgument(
                "append needs at least one record".into(),
            ));
        }
        // Checked now (record sizes, the frame limit), with a stand-in offset.
        let bytes = self.build(&records, Offset(0), RangeIndex(0))?.len();
        let mut queue = self.lock();
        if let Some(error) = queue.refusal() {
            return Err(error);
        }
        if queue.held == 0 && queue.has_room(bytes, self.max_bytes, self.max_batches) {
            return self
                .enqueue_locked(&mut queue, &records)
                .map(Admitted::Queued);
        }
        queue.held += 1;
        Ok(Admitted::Held(Held {
            shared: Arc::clone(self),
            records,
            bytes,
            waiter: None,
            left: false,
        }))
    }

    /// The batch of `records` at `base`, stamped for `range_index`.
    fn build(
        &self,
        records: &[Bytes],
        base: Offset,
        range_index: RangeIndex,
    ) -> Result<Bytes, SdkError> {
        let mut builder = BatchBuilder::new(self.stream, range_index, self.epoch, base);
        for record in records {
            builder
                .push_record(record)
                .map_err(|error| SdkError::InvalidArgument(error.to_string()))?;
        }
        let batch = builder
            .finish()
            .map_err(|error| SdkError::InvalidArgument(error.to_string()))?;
        let max_frame = crate::conn::MAX_FRAME_BYTES - 4096;
        if batch.len() > max_frame {
            return Err(SdkError::InvalidArgument(format!(
                "a batch of {} bytes is over the {max_frame} bytes one request carries; \
                 append fewer or smaller records",
                batch.len()
            )));
        }
        Ok(batch)
    }

    /// Gives `records` the next offsets and queues the batch for the driver.
    fn enqueue_locked(&self, queue: &mut Queue, records: &[Bytes]) -> Result<AppendSlot, SdkError> {
        let count = u32::try_from(records.len()).map_err(|_| {
            SdkError::InvalidArgument(format!("{} records in one batch", records.len()))
        })?;
        let base = queue.next_offset;
        let next = base
            .checked_add(u64::from(count))
            .ok_or_else(|| SdkError::InvalidArgument("the stream's offsets are used up".into()))?;
        let range_index = queue.range_index;
        let batch = self.build(records, base, range_index)?;
        let slot = Completion::new();
        queue.next_offset = next;
        queue.window_bytes += batch.len();
        queue.window_batches += 1;
        queue.incoming.push_back(Submitted {
            base,
            next,
            batch,
            range_index,
            completion: Arc::clone(&slot),
        });
        Shared::wake_driver(queue);
        Ok(slot)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn wake_driver(queue: &mut Queue) {
        if let Some(waker) = queue.driver_waker.take() {
            waker.wake();
        }
    }
}

/// A stream's writer: `Send + Sync`, so several threads may append through one `Arc<Writer>`.
/// Batches are acknowledged in the order `append` was called.
pub struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    pub(crate) async fn open(io: Arc<IoHandle>, stream: StreamId) -> Result<Writer, SdkError> {
        let opened = io
            .submit(move |io| async move { open::open(&io, stream).await })
            .await?;
        let shared = Arc::new(Shared::new(
            Arc::clone(&io),
            stream,
            opened.epoch,
            &opened.range,
        ));
        let driver_shared = Arc::clone(&shared);
        let range = opened.range;
        let started = io.spawn(move |io| {
            let driver = driver::Driver::new(std::rc::Rc::clone(io), driver_shared, range);
            runtime::spawn(driver.run());
        });
        if !started {
            return Err(SdkError::Closed);
        }
        Ok(Writer { shared })
    }

    /// Appends one batch of `records`; the future resolves once the batch is acknowledged (A
    /// replicas of its range made it and every earlier batch durable). Dropping the future of
    /// a batch already queued does not cancel it.
    ///
    /// **Order and backpressure.** While the writer's window (batches appended and not yet
    /// acknowledged, bounded by `max_in_flight_bytes` and `max_in_flight_batches`) has room
    /// and no earlier append is waiting, the batch is queued now: its offsets, and its place
    /// in the stream, are fixed by the order of calls. Otherwise the returned future keeps the
    /// records (the application's memory, not the SDK's) and, once polled, waits in a FIFO of
    /// waiting appends; it is queued, and given its offsets, when room frees. A new call
    /// never overtakes such a waiting append, but under backpressure the place is fixed when
    /// the future *first waits*: a later future polled before an earlier, not yet polled one
    /// goes first (so nothing deadlocks, whatever order the futures are awaited in). To keep
    /// call order, poll the futures in call order (await them in order, `join_all`,
    /// `FuturesOrdered`). Dropping a waiting future drops its batch: it is never appended.
    pub fn append(&self, records: Vec<Bytes>) -> AppendFuture {
        let state = match self.shared.admit(records) {
            Ok(Admitted::Queued(slot)) => FutureState::Waiting(Wait::new(slot)),
            Ok(Admitted::Held(held)) => FutureState::Held(held),
            Err(error) => FutureState::Ready(Some(error)),
        };
        AppendFuture { state }
    }

    /// Waits until every batch queued so far is acknowledged (appends still waiting for room
    /// in their futures are not included).
    pub async fn flush(&self) -> Result<(), SdkError> {
        let slot = {
            let mut queue = self.shared.lock();
            if let Some(error) = &queue.failed {
                return Err(error.clone());
            }
            let target = queue.next_offset;
            if queue.acked >= target {
                return Ok(());
            }
            let slot: FlushSlot = Completion::new();
            queue.flushes.push((target, Arc::clone(&slot)));
            Shared::wake_driver(&mut queue);
            slot
        };
        Wait::new(slot).await.unwrap_or(Err(SdkError::Closed))
    }

    /// Flushes, then seals the last range (appends still waiting for room in their futures
    /// fail with [`SdkError::Closed`]) (fence, repair, commit at the placement manager,
    /// seal the replicas) and returns the stream's end: one past the last offset written.
    pub async fn close(self) -> Result<Offset, SdkError> {
        let slot = {
            let mut queue = self.shared.lock();
            if let Some(error) = &queue.failed {
                return Err(error.clone());
            }
            if queue.close.is_some() {
                return Err(SdkError::Closed);
            }
            let slot: CloseSlot = Completion::new();
            queue.close = Some(Arc::clone(&slot));
            // Appends still waiting for room fail with `Closed`.
            queue.wake_waiting();
            Shared::wake_driver(&mut queue);
            slot
        };
        Wait::new(slot).await.unwrap_or(Err(SdkError::Closed))
    }

    pub fn stream_id(&self) -> StreamId {
        self.shared.stream
    }

    /// The epoch this writer raised the stream to when it opened it.
    pub fn epoch(&self) -> Epoch {
        self.shared.epoch
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> Offset {
        self.shared.lock().next_offset
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.dropped = true;
        queue.wake_waiting();
        Shared::wake_driver(&mut queue);
    }
}

/// The future of one append: resolves to the batch's offsets once it is acknowledged. `Send`;
/// works under any executor.
pub struct AppendFuture {
    state: FutureState,
}

enum FutureState {
    Ready(Option<SdkError>),
    /// Waiting for room in the window, records in hand.
    Held(Held),
    Waiting(Wait<Result<AppendAck, SdkError>>),
}

impl Held {
    /// Queues the batch once it is first among the waiting appends and the window has room;
    /// else waits in line (registered at the first poll).
    fn poll_room(&mut self, context: &mut Context<'_>) -> Poll<Result<AppendSlot, SdkError>> {
        let shared = Arc::clone(&self.shared);
        let mut queue = shared.lock();
        if let Some(error) = queue.refusal() {
            self.leave(&mut queue);
            return Poll::Ready(Err(error));
        }
        let first = match self.waiter {
            None => queue.waiting.is_empty(),
            Some(id) => queue.waiting.front().is_some_and(|(front, _)| *front == id),
        };
        if first && queue.has_room(self.bytes, shared.max_bytes, shared.max_batches) {
            let records = std::mem::take(&mut self.records);
            let result = shared.enqueue_locked(&mut queue, &records);
            self.leave(&mut queue);
            return Poll::Ready(result);
        }
        match self.waiter {
            None => {
                let id = queue.next_waiter;
                queue.next_waiter += 1;
                queue.waiting.push_back((id, context.waker().clone()));
                self.waiter = Some(id);
            }
            Some(id) => {
                if let Some(entry) = queue.waiting.iter_mut().find(|(waiter, _)| *waiter == id) {
                    entry.1.clone_from(context.waker());
                }
            }
        }
        Poll::Pending
    }

    /// No longer held: out of the count and the line; the next in line may go.
    fn leave(&mut self, queue: &mut Queue) {
        if self.left {
            return;
        }
        self.left = true;
        queue.held = queue.held.saturating_sub(1);
        if let Some(id) = self.waiter.take() {
            let was_first = queue.waiting.front().is_some_and(|(front, _)| *front == id);
            queue.waiting.retain(|(waiter, _)| *waiter != id);
            if was_first {
                if let Some((_, waker)) = queue.waiting.front() {
                    waker.wake_by_ref();
                }
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.left {
            let shared = Arc::clone(&self.shared);
            let mut queue = shared.lock();
            self.leave(&mut queue);
        }
    }
}

impl Future for AppendFuture {
    type Output = Result<AppendAck, SdkError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.state {
                FutureState::Ready(error) => {
                    return Poll::Ready(Err(error.take().unwrap_or(SdkError::Closed)))
                }
                FutureState::Held(held) => match held.poll_room(context) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(slot)) => self.state = FutureState::Waiting(Wait::new(slot)),
                    Poll::Ready(Err(error)) => self.state = FutureState::Ready(Some(error)),
                },
                FutureState::Waiting(wait) => {
                    return Pin::new(wait)
                        .poll(context)
                        .map(|result| result.unwrap_or(Err(SdkError::Closed)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn public_types_cross_threads() {
        assert_send_sync::<Writer>();
        assert_send::<AppendFuture>();
    }

    /// A writer whose "driver" is a thread acknowledging whatever is queued, a few batches at
    /// a time, checking the queue against the bounds each time.
    struct Harness {
        writer: Writer,
        stop: Arc<std::sync::atomic::AtomicBool>,
        driver: Option<std::thread::JoinHandle<usize>>,
    }

    impl Harness {
        fn new(max_batches: usize, max_bytes: usize) -> Harness {
            let config = crate::sdk::ClientConfig {
                max_in_flight_batches: max_batches,
                max_in_flight_bytes: max_bytes,
                ..crate::sdk::ClientConfig::default()
            };
            let io = IoHandle::start(config).expect("I/O thread");
            let range = wire::Range::default();
            let shared = Arc::new(Shared::new(io, StreamId(1), Epoch(1), &range));
            Harness {
                writer: Writer { shared },
                stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                driver: None,
            }
        }

        fn start_driver(&mut self) {
            let shared = Arc::clone(&self.writer.shared);
            let stop = Arc::clone(&self.stop);
            let (max_batches, max_bytes) = (shared.max_batches, shared.max_bytes);
            self.driver = Some(std::thread::spawn(move || {
                let mut acknowledged = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let taken: Vec<Submitted> = {
                        let mut queue = shared.lock();
                        assert!(queue.incoming.len() <= max_batches.max(1));
                        assert!(queue.window_batches <= max_batches.max(1));
                        assert!(queue.window_batches <= 1 || queue.window_bytes <= max_bytes);
                        let count = queue.incoming.len().min(3);
                        let taken: Vec<Submitted> = queue.incoming.drain(..count).collect();
                        let bytes = taken.iter().map(|batch| batch.batch.len()).sum();
                        queue.release(bytes, taken.len());
                        taken
                    };
                    for batch in taken {
                        acknowledged += 1;
                        batch.completion.complete(Ok(AppendAck {
                            base_offset: batch.base,
                            next_offset: batch.next,
                        }));
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                acknowledged
            }));
        }

        fn stop(&mut self) -> usize {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            self.driver
                .take()
                .map_or(0, |driver| driver.join().unwrap())
        }
    }

    fn one_record(index: u64) -> Vec<Bytes> {
        vec![Bytes::from(format!("record-{index:04}"))]
    }

    #[test]
    fn appends_far_past_the_bound_keep_the_queue_bounded_and_resolve_in_call_order() {
        let mut harness = Harness::new(4, 1 << 20);
        let futures: Vec<AppendFuture> = (0..200)
            .map(|index| harness.writer.append(one_record(index)))
            .collect();
        {
            let queue = harness.writer.shared.lock();
            assert_eq!(queue.incoming.len(), 4, "only the window is queued");
            assert_eq!(queue.window_batches, 4);
            assert_eq!(queue.held, 196, "the rest wait in their futures");
        }
        harness.start_driver();
        let offsets = crate::sdk::io::block_on(async {
            let mut offsets = Vec::new();
            for future in futures {
                offsets.push(future.await.expect("acknowledged").base_offset.0);
            }
            offsets
        });
        assert_eq!(offsets, (0..200).collect::<Vec<u64>>(), "call order kept");
        assert_eq!(harness.stop(), 200);
        let queue = harness.writer.shared.lock();
        assert_eq!((queue.held, queue.window_batches), (0, 0));
        assert!(queue.waiting.is_empty());
    }

    #[test]
    fn the_byte_bound_holds_back_appends_too() {
        // Each batch is well over 100 bytes: one at a time in the window.
        let mut harness = Harness::new(1024, 100);
        let futures: Vec<AppendFuture> = (0..20)
            .map(|index| {
                harness
                    .writer
                    .append(vec![Bytes::from(vec![index as u8; 90])])
            })
            .collect();
        assert_eq!(harness.writer.shared.lock().incoming.len(), 1);
        harness.start_driver();
        crate::sdk::io::block_on(async {
            for (index, future) in futures.into_iter().enumerate() {
                let ack = future.await.expect("acknowledged");
                assert_eq!(ack.base_offset.0, index as u64);
            }
        });
        harness.stop();
    }

    #[test]
    fn futures_awaited_out_of_order_under_backpressure_do_not_deadlock() {
        let mut harness = Harness::new(2, 1 << 20);
        let futures: Vec<AppendFuture> = (0..12)
            .map(|index| harness.writer.append(one_record(index)))
            .collect();
        harness.start_driver();
        let mut offsets = crate::sdk::io::block_on(async {
            let mut offsets = Vec::new();
            for future in futures.into_iter().rev() {
                offsets.push(future.await.expect("acknowledged").base_offset.0);
            }
            offsets
        });
        // The two queued at call time kept offsets 0 and 1; the held ones took theirs when
        // they first waited (here: last called first).
        assert_eq!(offsets[10..], [1, 0]);
        assert_eq!(offsets[0], 2, "the first future polled waits first");
        offsets.sort_unstable();
        assert_eq!(offsets, (0..12).collect::<Vec<u64>>(), "each offset once");
        harness.stop();
    }

    #[test]
    fn a_dropped_waiting_append_is_never_appended_and_blocks_nobody() {
        let mut harness = Harness::new(2, 1 << 20);
        let mut futures: Vec<AppendFuture> = (0..8)
            .map(|index| harness.writer.append(one_record(index)))
            .collect();
        // One never polled, one polled once (waiting in line), both dropped.
        let never_polled = futures.remove(3);
        let mut polled = futures.remove(3);
        let waker = std::task::Waker::noop();
        let mut context = Context::from_waker(waker);
        assert!(Pin::new(&mut polled).poll(&mut context).is_pending());
        assert_eq!(harness.writer.shared.lock().waiting.len(), 1);
        drop(never_polled);
        drop(polled);
        {
            let queue = harness.writer.shared.lock();
            assert_eq!(queue.held, 4);
            assert!(queue.waiting.is_empty());
        }
        harness.start_driver();
        let offsets = crate::sdk::io::block_on(async {
            let mut offsets = Vec::new();
            for future in futures {
                offsets.push(future.await.expect("acknowledged").base_offset.0);
            }
            offsets
        });
        assert_eq!(offsets, (0..6).collect::<Vec<u64>>());
        assert_eq!(
            harness.stop(),
            6,
            "the dropped appends never reached the queue"
        );
    }

    #[test]
    fn a_new_append_never_overtakes_a_held_one() {
        let mut harness = Harness::new(1, 1 << 20);
        let first = harness.writer.append(one_record(0));
        let held = harness.writer.append(one_record(1));
        harness.start_driver();
        // Room frees for `held` (not yet polled); a new call still queues behind it.
        crate::sdk::io::block_on(first).expect("first");
        let later = harness.writer.append(one_record(2));
        let (held, later) = crate::sdk::io::block_on(async { (held.await, later.await) });
        assert_eq!(held.expect("held").base_offset.0, 1);
        assert_eq!(later.expect("later").base_offset.0, 2);
        harness.stop();
    }
}
