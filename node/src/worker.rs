//! One worker thread's share of the node: the ranges it owns, its store handle and its mailboxes
//! to the other workers.
//!
//! A range belongs to exactly one worker, `hash(stream id) % workers`, so all of a stream's
//! ranges live together and their state is touched by one thread only, without locks. A request
//! decoded on another worker travels to the owner as a [`WorkerMessage::Request`] through the
//! SPSC mailbox of that pair of workers ([`Worker::forward`]); the owner runs the handler and
//! sends the [`WorkerMessage::Reply`] back the same way, where it completes the waiting
//! connection task ([`Worker::complete_forward`]). Which requests go where is `dispatch.rs`'s
//! decision; this file knows the state and the mailboxes, not the handlers.
//! Everything a worker holds is behind `RefCell`s that are never borrowed across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serve::local::{self, Notify};
use serve::Reply;
use wire::msg::Request;
use wire::{ErrorCode, Offset, RangeKey, StreamId};

use crate::catalog::CatalogHandle;
use crate::config::Config;
use crate::metrics::{Operation, WorkerMetrics};
use crate::range::RangeState;
use crate::ranges_file::RangeRecord;
use crate::send_line::SendLine;
use crate::storage::Storage;

/// Messages between workers.
pub enum WorkerMessage {
    /// Run `request` on the receiving worker (it owns the range) and reply to `from`.
    Request {
        from: usize,
        token: u64,
        request: Request,
        payload: Bytes,
        received: Instant,
    },
    /// The answer to an earlier `Request` with this token.
    Reply { token: u64, reply: Reply },
}

/// A range and the tasks waiting on it.
pub struct RangeEntry {
    pub state: RangeState,
    /// R and A the range was created with (CREATE_RANGE); 0 = unknown. Fixed for its life.
    pub replica_count_target: u8,
    pub ack_count: u8,
    /// Notified whenever the range's durable end, confirmed offset or seal state changes, and
    /// when it is deleted: long-poll fetches and draining seals wait on it.
    pub changed: Notify,
}

impl RangeEntry {
    pub fn new(state: RangeState, replica_count_target: u8, ack_count: u8) -> RangeEntry {
        RangeEntry {
            state,
            replica_count_target,
            ack_count,
            changed: Notify::default(),
        }
    }
}

/// The state of one worker, shared by its tasks through an `Rc`.
pub struct Worker {
    pub index: usize,
    pub worker_count: usize,
    pub config: Arc<Config>,
    pub metrics: Arc<WorkerMetrics>,
    pub storage: Storage,
    pub catalog: CatalogHandle,
    ranges: RefCell<HashMap<RangeKey, RangeEntry>>,
    /// Ranges whose CREATE_RANGE is being saved: a second create or a delete of the same
    /// range waits for `creations` instead of racing it.
    creating: RefCell<HashSet<RangeKey>>,
    pub creations: Notify,
    /// `peers[j]`: mailbox to worker j (`None` for this worker itself).
    peers: RefCell<Vec<Option<runtime::mailbox::Sender<WorkerMessage>>>>,
    /// `send_lines[j]`: the order in which this worker's tasks may send to worker j.
    send_lines: RefCell<Vec<SendLine>>,
    /// Connection tasks waiting for a forwarded request's reply, by token.
    pending_forwards: RefCell<HashMap<u64, local::Sender<Reply>>>,
    next_token: Cell<u64>,
    /// Set once shutdown began: long polls answer at once, connections stop reading.
    shutting_down: Cell<bool>,
    pub shutdown: Notify,
    /// The `auth` tokens connections prove (see `service.rs`).
    pub tokens: serve::Tokens,
    /// Bytes held by the connections of every worker (`server.max-buffered-bytes`).
    pub node_budget: Arc<serve::NodeBudget>,
    /// The largest append payload any worker of the node holds: a FETCH may return one whole
    /// append however small its max_bytes, so this is what its answer is charged at least.
    pub largest_append_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

/// What the catalog should hold for the range `key` in `entry`.
pub fn record_of(key: RangeKey, entry: &RangeEntry) -> RangeRecord {
    RangeRecord {
        key,
        epoch: entry.state.epoch(),
        start: entry.state.start(),
        end: entry.state.end(),
        confirmed: entry.state.confirmed(),
        replica_count_target: entry.replica_count_target,
        ack_count: entry.ack_count,
    }
}

/// The worker that owns every range of `stream`.
pub fn owner_of(stream: StreamId, worker_count: usize) -> usize {
    // Fibonacci hashing spreads sequential stream ids evenly over the workers.
    let mixed = stream.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % worker_count as u64) as usize
}

impl Worker {
    pub fn new(
        index: usize,
        worker_count: usize,
        config: Arc<Config>,
        metrics: Arc<WorkerMetrics>,
        storage: Storage,
        catalog: CatalogHandle,
        peers: Vec<Option<runtime::mailbox::Sender<WorkerMessage>>>,
    ) -> Worker {
        // A budget of its own until `with_node_budget` shares the node's among the workers.
        let node_budget = Arc::new(serve::NodeBudget::new(config.server.max_buffered_bytes));
        Worker {
            index,
            worker_count,
            tokens: config.auth.tokens(),
            config,
            metrics,
            storage,
            catalog,
            ranges: RefCell::new(HashMap::new()),
            creating: RefCell::new(HashSet::new()),
            creations: Notify::default(),
            send_lines: RefCell::new((0..peers.len()).map(|_| SendLine::default()).collect()),
            peers: RefCell::new(peers),
            pending_forwards: RefCell::new(HashMap::new()),
            next_token: Cell::new(0),
            shutting_down: Cell::new(false),
            shutdown: Notify::default(),
            node_budget,
            largest_append_bytes: Arc::default(),
        }
    }

    /// Counts this worker's connections in `budget`, and reads the node's largest append from
    /// `largest_append_bytes`, both shared by every worker of the node.
    pub fn with_node_budget(
        mut self,
        budget: Arc<serve::NodeBudget>,
        largest_append_bytes: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Worker {
        self.node_budget = budget;
        self.largest_append_bytes = largest_append_bytes;
        self
    }

    /// Installs a range recovered at start (from the range catalog and the store). `epoch` is
    /// the larger of the saved one and that of the last stored batch.
    pub fn install_range(&self, record: &RangeRecord, durable_end: Offset, epoch: ids::Epoch) {
        let state = RangeState::recovered(
            epoch,
            record.start,
            durable_end.max(record.start),
            record.end,
            record.confirmed,
        );
        self.ranges.borrow_mut().insert(
            record.key,
            RangeEntry::new(state, record.replica_count_target, record.ack_count),
        );
        self.metrics
            .set(&self.metrics.ranges, self.ranges.borrow().len() as u64);
    }

    /// What the catalog should hold for `key` now.
    pub fn range_record(&self, key: RangeKey) -> Option<RangeRecord> {
        self.with_range(key, |entry| record_of(key, entry))
    }

    /// Marks `key` as being created; false if a create of it is under way already.
    pub fn begin_create(&self, key: RangeKey) -> bool {
        self.creating.borrow_mut().insert(key)
    }

    /// Ends the create of `key` begun with [`Worker::begin_create`] and wakes who waits on it.
    pub fn end_create(&self, key: RangeKey) {
        self.creating.borrow_mut().remove(&key);
        self.creations.notify();
    }

    /// Waits until no create of `key` is under way.
    pub async fn wait_no_create(&self, key: RangeKey) {
        loop {
            let notified = self.creations.notified();
            if !self.creating.borrow().contains(&key) {
                return;
            }
            notified.await;
        }
    }

    /// Saves the confirmed offset of every open range that has one, so tailing readers can
    /// go on after a clean restart. Called once the connections have drained.
    pub async fn persist_confirmed_offsets(&self) {
        let keys: Vec<RangeKey> = self
            .ranges
            .borrow()
            .iter()
            .filter(|(_, entry)| {
                entry.state.end().is_none()
                    && !entry.state.has_pending_change()
                    && entry.state.confirmed() > entry.state.start()
            })
            .map(|(key, _)| *key)
            .collect();
        let saves: Vec<_> = keys
            .into_iter()
            .filter_map(|key| self.range_record(key))
            .map(|record| (record.key, self.catalog.save(record)))
            .collect();
        for (key, save) in saves {
            if let Err(error) = save.await {
                log::warn!(
                    "worker {}: cannot save the confirmed offset of range {key}: {error}",
                    self.index
                );
            }
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Starts the shutdown: connections send GOAWAY, long polls return.
    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        self.shutdown.notify();
        for entry in self.ranges.borrow().values() {
            entry.changed.notify();
        }
    }

    /// Runs `f` on the range's entry, or returns `None` if this worker has no such range.
    pub fn with_range<T>(&self, key: RangeKey, f: impl FnOnce(&mut RangeEntry) -> T) -> Option<T> {
        self.ranges.borrow_mut().get_mut(&key).map(f)
    }

    /// Adds a new range; false if it exists.
    pub fn insert_range(&self, key: RangeKey, entry: RangeEntry) -> bool {
        let mut ranges = self.ranges.borrow_mut();
        if ranges.contains_key(&key) {
            return false;
        }
        ranges.insert(key, entry);
        self.metrics.set(&self.metrics.ranges, ranges.len() as u64);
        true
    }

    /// Forgets a range; false if it was not here. Tasks waiting on it are woken and find it
    /// gone (appends and fetches in flight then answer `RANGE_NOT_FOUND`).
    pub fn remove_range(&self, key: RangeKey) -> bool {
        let mut ranges = self.ranges.borrow_mut();
        let Some(entry) = ranges.remove(&key) else {
            return false;
        };
        entry.changed.notify();
        self.metrics.set(&self.metrics.ranges, ranges.len() as u64);
        true
    }

    pub fn contains_range(&self, key: RangeKey) -> bool {
        self.ranges.borrow().contains_key(&key)
    }

    /// `describe` applied to every range of this worker (of `stream` only, if given), in no
    /// particular order.
    pub fn map_ranges<T>(
        &self,
        stream: Option<StreamId>,
        mut describe: impl FnMut(RangeKey, &RangeEntry) -> T,
    ) -> Vec<T> {
        self.ranges
            .borrow()
            .iter()
            .filter(|(key, _)| stream.is_none_or(|wanted| key.stream_id == wanted))
            .map(|(key, entry)| describe(*key, entry))
            .collect()
    }

    /// Ranges this worker owns, for the fetch-waiter gauge.
    pub fn fetch_waiters(&self) -> usize {
        self.ranges
            .borrow()
            .values()
            .map(|entry| entry.changed.waiting())
            .sum()
    }

    /// Sends `request` to worker `owner` and waits for its reply.
    pub async fn forward(
        &self,
        owner: usize,
        request: Request,
        payload: Bytes,
        received: Instant,
    ) -> Reply {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        let (sender, receiver) = local::oneshot();
        self.pending_forwards.borrow_mut().insert(token, sender);
        self.metrics.add(&self.metrics.forwarded, 1);
        let message = WorkerMessage::Request {
            from: self.index,
            token,
            request,
            payload,
            received,
        };
        if let Err(reason) = self.send_to(owner, message).await {
            self.pending_forwards.borrow_mut().remove(&token);
            return Reply::error(ErrorCode::Internal, reason);
        }
        match receiver.await {
            Some(reply) => reply,
            None => Reply::error(ErrorCode::ShuttingDown, "the owning worker stopped; retry"),
        }
    }

    /// Sends to worker `target`, waiting (bounded) while its mailbox is full: a full mailbox is
    /// back-pressure, never a reason to drop a message. Sends to one worker leave in the order
    /// they were called ([`SendLine`]), so two APPENDs of one connection reach the owner in order.
    async fn send_to(&self, target: usize, mut message: WorkerMessage) -> Result<(), String> {
        let ticket = match self.send_lines.borrow_mut().get_mut(target) {
            Some(line) => line.take(),
            None => {
                return Err(format!(
                    "no mailbox from worker {} to worker {target}",
                    self.index
                ))
            }
        };
        let _turn = Turn {
            lines: &self.send_lines,
            target,
            ticket,
        };
        let mut backoff = Duration::from_micros(50);
        loop {
            let my_turn = self.send_lines.borrow()[target].is_turn(ticket);
            if my_turn {
                let result = {
                    let mut peers = self.peers.borrow_mut();
                    let Some(sender) = peers.get_mut(target).and_then(Option::as_mut) else {
                        return Err(format!(
                            "no mailbox from worker {} to worker {target}",
                            self.index
                        ));
                    };
                    sender.send(message)
                };
                match result {
                    Ok(()) => return Ok(()),
                    Err(runtime::mailbox::SendError::Full(returned)) => message = returned,
                    Err(runtime::mailbox::SendError::Closed(_)) => {
                        return Err(format!("worker {target} has stopped"));
                    }
                }
            }
            runtime::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(5));
        }
    }

    /// Sends the reply to request `token`, forwarded here by worker `from`, back to it.
    pub async fn reply_to(&self, from: usize, token: u64, reply: Reply) -> Result<(), String> {
        self.send_to(from, WorkerMessage::Reply { token, reply })
            .await
    }

    /// Completes the connection task waiting for the reply to the forwarded request `token`.
    pub fn complete_forward(&self, token: u64, reply: Reply) {
        if let Some(sender) = self.pending_forwards.borrow_mut().remove(&token) {
            sender.send(reply);
        }
    }

    /// Counts a request and, when it failed, an error, under its operation.
    pub fn count(&self, operation: Operation, reply: &Reply) {
        self.metrics.request(operation);
        if reply.is_error() {
            self.metrics.error(operation);
        }
    }
}

/// A ticket of a [`SendLine`], released when its send ends whichever way (also when the sending
/// task is dropped), so the next send gets its turn.
struct Turn<'a> {
    lines: &'a RefCell<Vec<SendLine>>,
    target: usize,
    ticket: u64,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(line) = self.lines.borrow_mut().get_mut(self.target) {
            line.release(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_over_workers_and_are_stable() {
        let mut counts = [0usize; 4];
        for stream in 0..4000u64 {
            let owner = owner_of(StreamId(stream), 4);
            assert_eq!(owner, owner_of(StreamId(stream), 4));
            counts[owner] += 1;
        }
        for count in counts {
            assert!((800..=1200).contains(&count), "uneven spread {counts:?}");
        }
        assert_eq!(owner_of(StreamId(12345), 1), 0);
    }
}
