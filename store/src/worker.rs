//! The worker side of the store: the index of the ranges a worker owns, the tail memory of
//! recently appended batches, and the pending requests it has at the IO thread.
//!
//! A [`WorkerStore`] is `Send`: `Store::open` builds one per worker and the node moves each to
//! its worker thread. There it becomes either
//! * a [`StoreHandle`] (cheap to clone, `!Send`) whose `append`/`read`/`trim`/`delete` return
//!   futures, plus a [`CompletionDriver`] the worker spawns once on its runtime: the driver
//!   waits on the completion mailbox, updates the index before it resolves an append, and wakes
//!   the waiting task locally; or
//! * a [`SyncStore`](crate::SyncStore) for tests and tools, which blocks instead.
//!
//! Every request takes a slot in a slab bounded by the mailbox capacity, so a worker can never
//! have more requests in flight than its completion mailbox can hold; a full slab is
//! back-pressure ([`Error::Busy`]), never an allocation.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use runtime::mailbox::{Receiver, SendError, Sender};
use slab::Slab;

use crate::error::{Error, Result};
use crate::index::{BatchIndex, Index, IndexEntry, RangeSummary};
use crate::message::{Completion, Extent, Outcome, Request};
use crate::{Offset, RangeKey, WalPosition};

/// What a durable append reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// WAL position of the batch's record.
    pub position: WalPosition,
    /// The range's next offset after this batch.
    pub next_offset: Offset,
}

/// A finished request, before it is converted to the caller's type.
pub(crate) enum Done {
    Appended(AppendResult),
    Read(Vec<Bytes>),
    Unit,
}

enum Pending {
    Append {
        range: RangeKey,
        base_offset: Offset,
        count: u32,
        batch: Bytes,
        /// The range was deleted while the append was in flight.
        deleted: bool,
    },
    Read,
    Trim,
    Delete,
}

struct Slot {
    pending: Pending,
    result: Option<Result<Done>>,
    waker: Option<Waker>,
    abandoned: bool,
}

/// Recently appended batches of one worker's ranges, bounded in bytes, oldest evicted first.
struct TailCache {
    ranges: HashMap<RangeKey, VecDeque<(Offset, Bytes)>>,
    order: VecDeque<(RangeKey, Offset)>,
    bytes: usize,
    capacity_bytes: usize,
}

impl TailCache {
    fn insert(&mut self, range: RangeKey, base_offset: Offset, batch: Bytes) {
        if batch.len() > self.capacity_bytes {
            return;
        }
        self.bytes += batch.len();
        self.ranges
            .entry(range)
            .or_default()
            .push_back((base_offset, batch));
        self.order.push_back((range, base_offset));
        while self.bytes > self.capacity_bytes {
            let Some((range, base)) = self.order.pop_front() else {
                break;
            };
            let Some(batches) = self.ranges.get_mut(&range) else {
                continue;
            };
            if batches.front().is_some_and(|(front, _)| *front == base) {
                if let Some((_, batch)) = batches.pop_front() {
                    self.bytes -= batch.len();
                }
                if batches.is_empty() {
                    self.ranges.remove(&range);
                }
            }
        }
    }

    fn get(&self, range: &RangeKey, base_offset: Offset) -> Option<&Bytes> {
        let batches = self.ranges.get(range)?;
        let slot = batches.partition_point(|(base, _)| *base < base_offset);
        batches
            .get(slot)
            .filter(|(base, _)| *base == base_offset)
            .map(|(_, batch)| batch)
    }

    fn drop_below(&mut self, range: &RangeKey, first_kept_base: Option<Offset>) {
        let Some(batches) = self.ranges.get_mut(range) else {
            return;
        };
        while let Some((base, _)) = batches.front() {
            if first_kept_base.is_some_and(|kept| *base >= kept) {
                break;
            }
            if let Some((_, batch)) = batches.pop_front() {
                self.bytes -= batch.len();
            }
        }
        if batches.is_empty() {
            self.ranges.remove(range);
        }
    }
}

/// How a read begins: answered from memory, or waiting for the IO thread.
pub(crate) enum ReadStart {
    Ready(Vec<Bytes>),
    Pending(u32),
}

/// State shared by the async and the blocking front ends.
pub(crate) struct WorkerCore {
    requests: Sender<Request>,
    ranges: Index,
    tail: TailCache,
    slots: Slab<Slot>,
    capacity: usize,
    max_batch_bytes: usize,
    closed: bool,
    /// Slots completed, in completion order (kept only for the blocking front end).
    completed: Option<VecDeque<u32>>,
}

impl WorkerCore {
    fn reserve(&mut self, pending: Pending) -> Result<u32> {
        if self.closed {
            return Err(Error::Closed);
        }
        if self.slots.len() >= self.capacity {
            return Err(Error::Busy {
                capacity: self.capacity,
            });
        }
        Ok(self.slots.insert(Slot {
            pending,
            result: None,
            waker: None,
            abandoned: false,
        }) as u32)
    }

    fn send(&mut self, slot: u32, request: Request) -> Result<u32> {
        match self.requests.send(request) {
            Ok(()) => Ok(slot),
            Err(error) => {
                self.slots.remove(slot as usize);
                match error {
                    SendError::Full(_) => Err(Error::Busy {
                        capacity: self.capacity,
                    }),
                    SendError::Closed(_) => {
                        self.closed = true;
                        Err(Error::Closed)
                    }
                }
            }
        }
    }

    pub(crate) fn start_append(
        &mut self,
        range: RangeKey,
        base_offset: Offset,
        count: u32,
        batch: Bytes,
    ) -> Result<u32> {
        if batch.len() > self.max_batch_bytes {
            return Err(Error::TooLarge {
                batch_bytes: batch.len(),
                max_bytes: self.max_batch_bytes,
            });
        }
        debug_assert!(count > 0, "a batch covers at least one offset");
        let slot = self.reserve(Pending::Append {
            range,
            base_offset,
            count,
            batch: batch.clone(),
            deleted: false,
        })?;
        self.send(
            slot,
            Request::Append {
                slot,
                range,
                base_offset,
                count,
                batch,
            },
        )
    }

    pub(crate) fn start_read(
        &mut self,
        range: RangeKey,
        from_offset: Offset,
        max_bytes: usize,
    ) -> Result<ReadStart> {
        let Some(index) = self.ranges.get(&range) else {
            return Ok(ReadStart::Ready(Vec::new()));
        };
        if from_offset < index.start_offset() {
            return Err(Error::OffsetTrimmed {
                range,
                requested: from_offset,
                start_offset: index.start_offset(),
            });
        }
        let Some(first) = index.find(from_offset) else {
            return Ok(ReadStart::Ready(Vec::new()));
        };
        let mut chosen: Vec<IndexEntry> = Vec::new();
        let mut total = 0usize;
        for entry in index.entries().range(first..) {
            if !chosen.is_empty() && total + entry.payload_len as usize > max_bytes {
                break;
            }
            total += entry.payload_len as usize;
            chosen.push(*entry);
        }
        let cached: Vec<Bytes> = chosen
            .iter()
            .map_while(|entry| self.tail.get(&range, entry.base_offset).cloned())
            .collect();
        if !cached.is_empty() {
            return Ok(ReadStart::Ready(cached));
        }
        let extents = chosen
            .iter()
            .map(|entry| Extent {
                position: entry.position,
                payload_len: entry.payload_len,
            })
            .collect();
        let slot = self.reserve(Pending::Read)?;
        self.send(slot, Request::Read { slot, extents })
            .map(ReadStart::Pending)
    }

    pub(crate) fn start_trim(&mut self, range: RangeKey, offset: Offset) -> Result<u32> {
        // Trimmed data stops being readable at once; the record makes it durable.
        if let Some(index) = self.ranges.get_mut(&range) {
            index.trim(offset);
            let first_kept = index.entries().front().map(|entry| entry.base_offset);
            self.tail.drop_below(&range, first_kept);
        }
        let slot = self.reserve(Pending::Trim)?;
        self.send(
            slot,
            Request::Trim {
                slot,
                range,
                offset,
            },
        )
    }

    pub(crate) fn start_delete(&mut self, range: RangeKey) -> Result<u32> {
        self.ranges.remove(&range);
        // Appends still in flight for the range must not bring its index back.
        for (_, slot) in self.slots.iter_mut() {
            if let Pending::Append {
                range: pending_range,
                deleted,
                ..
            } = &mut slot.pending
            {
                if *pending_range == range {
                    *deleted = true;
                }
            }
        }
        self.tail.drop_below(&range, None);
        let slot = self.reserve(Pending::Delete)?;
        self.send(slot, Request::Delete { slot, range })
    }

    pub(crate) fn index(&self, range: &RangeKey) -> Option<RangeSummary> {
        self.ranges.get(range).map(BatchIndex::summary)
    }

    pub(crate) fn largest_append_bytes(&self) -> usize {
        self.ranges
            .values()
            .flat_map(|index| index.entries().iter())
            .map(|entry| entry.payload_len as usize)
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn ranges(&self) -> Vec<(RangeKey, RangeSummary)> {
        let mut ranges: Vec<_> = self
            .ranges
            .iter()
            .map(|(key, index)| (*key, index.summary()))
            .collect();
        ranges.sort_by_key(|(key, _)| *key);
        ranges
    }

    /// Applies one completion; returns the waker to wake (after releasing any borrow).
    pub(crate) fn complete(&mut self, completion: Completion) -> Option<Waker> {
        let slot_id = completion.slot as usize;
        let Some(slot) = self.slots.get_mut(slot_id) else {
            log::error!("store: completion for unknown slot {slot_id}");
            return None;
        };
        let result = match (&slot.pending, completion.outcome) {
            (
                Pending::Append {
                    deleted: true,
                    base_offset,
                    count,
                    ..
                },
                Ok(Outcome::Appended { position }),
            ) => Ok(Done::Appended(AppendResult {
                position,
                next_offset: *base_offset + *count as u64,
            })),
            (
                Pending::Append {
                    range,
                    base_offset,
                    count,
                    batch,
                    deleted: false,
                },
                Ok(Outcome::Appended { position }),
            ) => {
                let index = self
                    .ranges
                    .entry(*range)
                    .or_insert_with(|| BatchIndex::new(*base_offset));
                index.push(IndexEntry {
                    base_offset: *base_offset,
                    position,
                    payload_len: batch.len() as u32,
                    count: *count,
                });
                let next_offset = index.next_offset();
                self.tail.insert(*range, *base_offset, batch.clone());
                Ok(Done::Appended(AppendResult {
                    position,
                    next_offset,
                }))
            }
            (Pending::Read, Ok(Outcome::Read(batches))) => Ok(Done::Read(batches)),
            (Pending::Trim, Ok(Outcome::Trimmed)) | (Pending::Delete, Ok(Outcome::Deleted)) => {
                Ok(Done::Unit)
            }
            (_, Err(error)) => Err(error),
            (_, Ok(_)) => Err(Error::Corrupt {
                position: 0,
                detail: "internal: completion of the wrong kind".to_string(),
            }),
        };
        if slot.abandoned {
            self.slots.remove(slot_id);
            return None;
        }
        slot.result = Some(result);
        if let Some(completed) = self.completed.as_mut() {
            completed.push_back(completion.slot);
        }
        slot.waker.take()
    }

    /// The IO thread is gone: everything pending fails.
    pub(crate) fn close(&mut self) -> Vec<Waker> {
        self.closed = true;
        let mut wakers = Vec::new();
        let mut abandoned = Vec::new();
        for (id, slot) in self.slots.iter_mut() {
            if slot.result.is_some() {
                continue;
            }
            if slot.abandoned {
                abandoned.push(id);
                continue;
            }
            slot.result = Some(Err(Error::Closed));
            if let Some(completed) = self.completed.as_mut() {
                completed.push_back(id as u32);
            }
            wakers.extend(slot.waker.take());
        }
        for id in abandoned {
            self.slots.remove(id);
        }
        wakers
    }

    /// Takes a finished slot's result.
    pub(crate) fn take(&mut self, slot: u32) -> Option<Result<Done>> {
        let result = self.slots.get_mut(slot as usize)?.result.take()?;
        self.slots.remove(slot as usize);
        Some(result)
    }

    /// Drops completion-order entries of slots already collected by name, so the list stays
    /// bounded by the slot count.
    pub(crate) fn compact_completed(&mut self) {
        let limit = 2 * self.capacity;
        let slots = &self.slots;
        if let Some(completed) = self.completed.as_mut() {
            if completed.len() > limit {
                completed.retain(|slot| {
                    slots
                        .get(*slot as usize)
                        .is_some_and(|entry| entry.result.is_some())
                });
            }
        }
    }

    pub(crate) fn pop_completed(&mut self) -> Option<u32> {
        self.completed.as_mut()?.pop_front()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len()
    }
}

/// One worker's share of the store, before it reaches its thread.
pub struct WorkerStore {
    pub(crate) core: WorkerCore,
    pub(crate) completions: Receiver<Completion>,
}

impl WorkerStore {
    pub(crate) fn new(
        requests: Sender<Request>,
        completions: Receiver<Completion>,
        ranges: Index,
        tail_cache_bytes: usize,
        max_batch_bytes: usize,
    ) -> WorkerStore {
        let capacity = requests.capacity();
        WorkerStore {
            core: WorkerCore {
                requests,
                ranges,
                tail: TailCache {
                    ranges: HashMap::new(),
                    order: VecDeque::new(),
                    bytes: 0,
                    capacity_bytes: tail_cache_bytes,
                },
                slots: Slab::with_capacity(capacity),
                capacity,
                max_batch_bytes,
                closed: false,
                completed: None,
            },
            completions,
        }
    }

    /// Ranges recovered for this worker, with their offsets.
    pub fn ranges(&self) -> Vec<(RangeKey, RangeSummary)> {
        self.core.ranges()
    }

    /// Starts the async front end on the current (runtime) thread. Spawn the driver once on
    /// this worker's runtime; it ends when the store shuts down.
    pub fn start(self) -> (StoreHandle, CompletionDriver) {
        let shared = Rc::new(RefCell::new(self.core));
        (
            StoreHandle {
                shared: shared.clone(),
            },
            CompletionDriver {
                shared,
                completions: self.completions,
            },
        )
    }

    pub(crate) fn into_parts(mut self) -> (WorkerCore, Receiver<Completion>) {
        self.core.completed = Some(VecDeque::new());
        (self.core, self.completions)
    }
}

/// The worker's async access to the store. Clone it freely within the worker thread.
#[derive(Clone)]
pub struct StoreHandle {
    shared: Rc<RefCell<WorkerCore>>,
}

impl StoreHandle {
    fn future<T>(&self, started: Result<u32>, convert: fn(Done) -> Option<T>) -> StoreFuture<T> {
        StoreFuture {
            state: match started {
                Ok(slot) => State::Waiting {
                    shared: self.shared.clone(),
                    slot,
                },
                Err(error) => State::Ready(Some(Err(error))),
            },
            convert,
        }
    }

    /// Appends one batch covering `count` offsets from `base_offset`. Submitted at once (calls
    /// made in order reach the WAL in order); resolves once the batch is durable (with `sync:
    /// always`) and the range's index includes it. The caller checks `base_offset` against the
    /// range's next offset first; the IO thread rejects an out-of-order batch with an error.
    pub fn append(
        &self,
        range: RangeKey,
        base_offset: Offset,
        count: u32,
        batch: Bytes,
    ) -> StoreFuture<AppendResult> {
        let started = self
            .shared
            .borrow_mut()
            .start_append(range, base_offset, count, batch);
        self.future(started, |done| match done {
            Done::Appended(result) => Some(result),
            _ => None,
        })
    }

    /// Reads whole batches starting with the one containing `from_offset`, up to `max_bytes`
    /// (at least one batch). Empty when nothing is stored at or after `from_offset` yet.
    /// Served from tail memory when possible, otherwise through the IO thread's block cache.
    pub fn read(
        &self,
        range: RangeKey,
        from_offset: Offset,
        max_bytes: usize,
    ) -> StoreFuture<Vec<Bytes>> {
        let started = self
            .shared
            .borrow_mut()
            .start_read(range, from_offset, max_bytes);
        match started {
            Ok(ReadStart::Ready(batches)) => StoreFuture {
                state: State::Ready(Some(Ok(batches))),
                convert: |_| None,
            },
            Ok(ReadStart::Pending(slot)) => self.future(Ok(slot), |done| match done {
                Done::Read(batches) => Some(batches),
                _ => None,
            }),
            Err(error) => self.future(Err(error), |_| None),
        }
    }

    /// Moves the range's start to `offset`: reads below it fail at once; resolves when the
    /// trim is durable. Segments are reclaimed once no range needs them.
    pub fn trim(&self, range: RangeKey, offset: Offset) -> StoreFuture<()> {
        let started = self.shared.borrow_mut().start_trim(range, offset);
        self.future(started, |_| Some(()))
    }

    /// Deletes the range; resolves when the deletion is durable.
    pub fn delete(&self, range: RangeKey) -> StoreFuture<()> {
        let started = self.shared.borrow_mut().start_delete(range);
        self.future(started, |_| Some(()))
    }

    /// Start and next offset of a range this worker owns, if the store holds it.
    pub fn index(&self, range: RangeKey) -> Option<RangeSummary> {
        self.shared.borrow().index(&range)
    }

    /// All ranges this worker holds.
    pub fn ranges(&self) -> Vec<(RangeKey, RangeSummary)> {
        self.shared.borrow().ranges()
    }

    /// Bytes of the largest append this worker holds (0 when it holds none). A read returns
    /// at most this or its `max_bytes`, whichever is larger (it returns whole appends, at least
    /// one). Walks every index entry: for start-up, not for a request path.
    pub fn largest_append_bytes(&self) -> usize {
        self.shared.borrow().largest_append_bytes()
    }

    /// Requests this worker has at the IO thread.
    pub fn in_flight(&self) -> usize {
        self.shared.borrow().in_flight()
    }
}

enum State<T> {
    Ready(Option<Result<T>>),
    Waiting {
        shared: Rc<RefCell<WorkerCore>>,
        slot: u32,
    },
    Done,
}

/// A store request in flight. Dropping it does not cancel the request (an append still
/// becomes durable); its result is discarded.
pub struct StoreFuture<T> {
    state: State<T>,
    convert: fn(Done) -> Option<T>,
}

impl<T> Unpin for StoreFuture<T> {}

impl<T> Future for StoreFuture<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(result) => {
                let result = result.take().unwrap_or(Err(Error::Closed));
                this.state = State::Done;
                Poll::Ready(result)
            }
            State::Waiting { shared, slot } => {
                let mut core = shared.borrow_mut();
                if let Some(result) = core.take(*slot) {
                    drop(core);
                    this.state = State::Done;
                    let convert = this.convert;
                    return Poll::Ready(result.and_then(|done| {
                        convert(done).ok_or(Error::Corrupt {
                            position: 0,
                            detail: "internal: completion of the wrong kind".to_string(),
                        })
                    }));
                }
                if let Some(entry) = core.slots.get_mut(*slot as usize) {
                    match &entry.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => entry.waker = Some(cx.waker().clone()),
                    }
                }
                Poll::Pending
            }
            State::Done => Poll::Ready(Err(Error::Closed)),
        }
    }
}

impl<T> Drop for StoreFuture<T> {
    fn drop(&mut self) {
        if let State::Waiting { shared, slot } = &self.state {
            let Ok(mut core) = shared.try_borrow_mut() else {
                return;
            };
            let slot = *slot as usize;
            let finished = match core.slots.get_mut(slot) {
                Some(entry) if entry.result.is_some() => true,
                Some(entry) => {
                    entry.abandoned = true;
                    entry.waker = None;
                    false
                }
                None => false,
            };
            if finished {
                core.slots.remove(slot);
            }
        }
    }
}

/// Moves completions from the IO thread into the worker's index and wakes waiting tasks. Spawn
/// `driver.run()` once on the worker's runtime.
pub struct CompletionDriver {
    shared: Rc<RefCell<WorkerCore>>,
    completions: Receiver<Completion>,
}

impl CompletionDriver {
    /// Runs until the store shuts down; then fails whatever is still pending.
    pub async fn run(mut self) {
        let mut wakers = Vec::new();
        while let Some(completion) = self.completions.recv().await {
            {
                let mut core = self.shared.borrow_mut();
                wakers.extend(core.complete(completion));
                while let Ok(completion) = self.completions.try_recv() {
                    wakers.extend(core.complete(completion));
                }
            }
            for waker in wakers.drain(..) {
                waker.wake();
            }
        }
        let wakers = self.shared.borrow_mut().close();
        for waker in wakers {
            waker.wake();
        }
    }
}
