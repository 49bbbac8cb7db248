//! Byte budgets: how much memory the connections of one connection, and of the whole process,
//! may hold for requests and responses.
//!
//! A connection charges a request's payload and the response it may produce when it accepts
//! the request's frame, trades the estimate for the encoded response's real size when the
//! response is queued, and releases the bytes once the writer has handed them to the kernel.
//! The reader asks [`admission`] before it accepts each frame; when the answer is to wait it
//! stops reading, so a client that sends but never reads is pushed back through TCP instead of
//! growing the node's memory.
//!
//! Two bounds apply. Per connection (`server.max-buffered-bytes-per-connection`, at least one
//! frame, so a FETCH returning one whole large batch always fits an otherwise empty
//! connection). Per process (`server.max-buffered-bytes`): a [`NodeBudget`], an atomic counter
//! shared by the connections of every worker thread. A request small enough to be harmless
//! ([`SMALL_REQUEST_BYTES`]) on a connection that holds nothing is admitted even when the
//! process is over its budget, so a PING or a metadata request on a fresh connection is
//! answered while clients that never read hold the whole budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use crate::local::WaitList;

/// A request costing at most this many bytes on a connection holding nothing is admitted
/// whatever the process holds: it adds at most this much per connection.
pub const SMALL_REQUEST_BYTES: usize = 64 * 1024;

/// The two bounds the reader checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    pub per_connection_bytes: usize,
    pub node_bytes: usize,
}

/// What the reader does with a frame of a given cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Accept it now.
    Admit,
    /// Wait until this connection's queued responses drain.
    WaitForConnection,
    /// Wait until the connections of the process hold less.
    WaitForNode,
}

/// Decides whether a frame costing `cost_bytes` may be accepted on a connection holding
/// `connection_bytes` while the process holds `node_bytes`. Pure, so the bound is unit-tested.
pub fn admission(
    limits: BudgetLimits,
    connection_bytes: usize,
    node_bytes: usize,
    cost_bytes: usize,
) -> Admission {
    // An empty connection always fits one request: the budget is at least one frame, and a
    // FETCH must be able to return one whole batch even when it is larger than max_bytes.
    let fits_connection =
        connection_bytes == 0 || connection_bytes + cost_bytes <= limits.per_connection_bytes;
    if !fits_connection {
        return Admission::WaitForConnection;
    }
    let fits_node = node_bytes + cost_bytes <= limits.node_bytes
        || node_bytes == 0
        || (connection_bytes == 0 && cost_bytes <= SMALL_REQUEST_BYTES);
    if !fits_node {
        return Admission::WaitForNode;
    }
    Admission::Admit
}

/// Bytes held by all connections of the process, and the readers waiting for them to drop.
/// Shared by the worker threads through an `Arc`.
pub struct NodeBudget {
    limit_bytes: usize,
    buffered_bytes: AtomicUsize,
    /// Readers waiting for room; `waiting` mirrors its length so that a release checks it
    /// without taking the lock.
    waiters: Mutex<Waiters>,
    waiting: AtomicUsize,
}

impl std::fmt::Debug for NodeBudget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NodeBudget")
            .field("limit_bytes", &self.limit_bytes)
            .field("buffered_bytes", &self.buffered_bytes())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Waiters {
    /// Counts wake-ups; a key is valid only within the generation it was handed out in.
    generation: u64,
    list: WaitList,
}

impl NodeBudget {
    pub fn new(limit_bytes: usize) -> NodeBudget {
        assert!(limit_bytes > 0, "a node budget of 0 bytes admits nothing");
        NodeBudget {
            limit_bytes,
            buffered_bytes: AtomicUsize::new(0),
            waiters: Mutex::new(Waiters::default()),
            waiting: AtomicUsize::new(0),
        }
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// Bytes the connections of the process hold now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes.load(Ordering::SeqCst)
    }

    pub fn charge(&self, bytes: usize) {
        self.buffered_bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Gives back bytes charged before and wakes the readers waiting for room.
    pub fn release(&self, bytes: usize) {
        let before = self.buffered_bytes.fetch_sub(bytes, Ordering::SeqCst);
        // Connections release at most what they charged (`connection.rs`).
        debug_assert!(
            before >= bytes,
            "released {bytes} bytes of {before} charged"
        );
        // SeqCst on both sides: either the waiter's re-check sees this release, or this load
        // sees the waiter registered.
        if bytes > 0 && self.waiting.load(Ordering::SeqCst) > 0 {
            let mut waiters = self.lock();
            waiters.generation += 1;
            waiters.list.wake_all();
            self.waiting.store(0, Ordering::SeqCst);
        }
    }

    /// Resolves once the process holds at most `limit - cost_bytes` (or nothing at all).
    pub fn room_for(&self, cost_bytes: usize) -> RoomFor<'_> {
        RoomFor {
            budget: self,
            cost_bytes,
            registered: None,
        }
    }

    fn has_room_for(&self, cost_bytes: usize) -> bool {
        let buffered = self.buffered_bytes();
        buffered == 0 || buffered + cost_bytes <= self.limit_bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // A panic while holding this lock leaves a plain list of wakers: still usable.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Future of [`NodeBudget::room_for`]; dropping it unregisters it.
pub struct RoomFor<'a> {
    budget: &'a NodeBudget,
    cost_bytes: usize,
    /// (generation, key) of its entry in the wait list.
    registered: Option<(u64, usize)>,
}

impl RoomFor<'_> {
    fn unregister(&mut self) {
        if let Some((generation, key)) = self.registered.take() {
            let mut waiters = self.budget.lock();
            if waiters.generation == generation {
                waiters.list.remove(key);
                self.budget
                    .waiting
                    .store(waiters.list.len(), Ordering::SeqCst);
            }
        }
    }
}

impl Future for RoomFor<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.budget.has_room_for(self.cost_bytes) {
            self.unregister();
            return Poll::Ready(());
        }
        {
            let budget = self.budget;
            let mut waiters = budget.lock();
            match self.registered {
                Some((generation, key)) if generation == waiters.generation => {
                    waiters.list.update(key, context.waker());
                }
                _ => {
                    let key = waiters.list.register(context.waker());
                    self.registered = Some((waiters.generation, key));
                }
            }
            budget.waiting.store(waiters.list.len(), Ordering::SeqCst);
        }
        // Re-check after registering: a release in between saw no waiter.
        if self.budget.has_room_for(self.cost_bytes) {
            self.unregister();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for RoomFor<'_> {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    const MIB: usize = 1024 * 1024;
    const LIMITS: BudgetLimits = BudgetLimits {
        per_connection_bytes: 32 * MIB,
        node_bytes: 64 * MIB,
    };

    #[test]
    fn a_connection_stops_at_its_budget_but_an_empty_one_takes_a_whole_frame() {
        assert_eq!(admission(LIMITS, 0, 0, 16 * MIB), Admission::Admit);
        assert_eq!(
            admission(LIMITS, 16 * MIB, 16 * MIB, 16 * MIB),
            Admission::Admit
        );
        assert_eq!(
            admission(LIMITS, 16 * MIB + 1, 16 * MIB + 1, 16 * MIB),
            Admission::WaitForConnection
        );
        // Larger than the budget (a batch bigger than max_bytes): only alone.
        assert_eq!(admission(LIMITS, 0, 0, 40 * MIB), Admission::Admit);
        assert_eq!(
            admission(LIMITS, 1, 1, 40 * MIB),
            Admission::WaitForConnection
        );
    }

    #[test]
    fn the_node_budget_stops_every_connection_except_small_requests_on_empty_ones() {
        // Other connections hold the whole node budget.
        let full = 64 * MIB;
        assert_eq!(admission(LIMITS, 0, full, 16 * MIB), Admission::WaitForNode);
        assert_eq!(admission(LIMITS, 100, full, 100), Admission::WaitForNode);
        // A PING on a fresh connection still goes through.
        assert_eq!(admission(LIMITS, 0, full, 100), Admission::Admit);
        assert_eq!(
            admission(LIMITS, 0, full, SMALL_REQUEST_BYTES + 1),
            Admission::WaitForNode
        );
        assert_eq!(admission(LIMITS, 0, 48 * MIB, 16 * MIB), Admission::Admit);
    }

    /// Worst case the rules allow: every connection at its own budget until the node budget is
    /// reached, then one small request on each empty connection.
    #[test]
    fn what_the_rules_let_the_process_hold_is_bounded() {
        let connections = 1024;
        let mut held = vec![0usize; connections];
        let mut node = 0usize;
        for _round in 0..100 {
            for slot in held.iter_mut() {
                for cost in [16 * MIB, SMALL_REQUEST_BYTES] {
                    if admission(LIMITS, *slot, node, cost) == Admission::Admit {
                        *slot += cost;
                        node += cost;
                    }
                }
            }
        }
        assert!(held.iter().all(|held| *held <= LIMITS.per_connection_bytes));
        assert!(
            node <= LIMITS.node_bytes + connections * SMALL_REQUEST_BYTES,
            "{node}"
        );
    }

    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_release_wakes_the_readers_waiting_for_room() {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut context = Context::from_waker(&waker);
        let budget = NodeBudget::new(100);
        budget.charge(90);
        let mut room = budget.room_for(20);
        assert_eq!(Pin::new(&mut room).poll(&mut context), Poll::Pending);
        budget.release(5);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut room).poll(&mut context), Poll::Pending);
        budget.release(5);
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert_eq!(Pin::new(&mut room).poll(&mut context), Poll::Ready(()));
        drop(room);
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 0);
        budget.release(80);
        assert_eq!(budget.buffered_bytes(), 0);
        assert_eq!(counter.0.load(Ordering::SeqCst), 2, "nobody waits any more");
    }
}
