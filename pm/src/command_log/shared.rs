//! State shared by the daemon's thread(s) and the log thread, and the futures that wait on it.
//!
//! One `Mutex<State>` guards the queue, the durable index and the wakers: appends are PM
//! commands (a few per second to a few thousand), not the data path, so a lock held for a few
//! instructions costs nothing that matters. The log thread sleeps on `work`; blocking waiters
//! sleep on `progress`; tasks leave a `Waker`, which the log thread wakes (a `Waker` may be
//! woken from any thread, so this works with any executor, including `runtime`'s).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{LogError, LogStats};

pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// The log thread waits here for records, a snapshot or `closing`.
    pub work: Condvar,
    /// Blocking waiters (`wait_durable`, `install_snapshot`) wait here for progress.
    pub progress: Condvar,
}

pub(crate) struct State {
    /// Records appended and not yet taken by the log thread; the first has index
    /// `next_index - queue.len()`.
    pub queue: Vec<Vec<u8>>,
    /// The index `append` assigns next.
    pub next_index: u64,
    /// Every record up to here is on disk and data-synced.
    pub durable_index: u64,
    /// Payload bytes appended and not yet durable (queued or being written).
    pub pending_bytes: usize,
    /// Set when a write or sync failed; every later append and every wait on a record not yet
    /// durable gets it.
    pub failure: Option<LogError>,
    /// `close` was called: the log thread writes what is queued and stops.
    pub closing: bool,
    /// The log thread has stopped.
    pub stopped: bool,
    /// Tasks waiting for durability, by (index, waiter id).
    pub wakers: BTreeMap<(u64, u64), Waker>,
    pub next_waiter_id: u64,
    /// A snapshot for the log thread to install after the group it is writing.
    pub snapshot_request: Option<SnapshotRequest>,
    /// The installed snapshot's last index (0 for none).
    pub snapshot_index: u64,
    pub stats: LogStats,
    /// Tests: the log thread takes nothing from the queue while set.
    #[cfg(test)]
    pub held: bool,
    /// Tests: groups are written without their fdatasync (the test of the power-loss test).
    #[cfg(test)]
    pub skip_data_sync: bool,
}

pub(crate) struct SnapshotRequest {
    pub last_index: u64,
    pub bytes: Vec<u8>,
    pub completion: Arc<Completion>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere while holding it; the state it guards is
        // only ever updated in whole steps, so carry on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn wait_progress<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.progress
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn wait_work<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.work
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// `Some(result)` once it is known whether `index` is durable.
    pub fn outcome(&self, index: u64) -> Option<Result<(), LogError>> {
        if index == 0 || index <= self.durable_index {
            return Some(Ok(()));
        }
        if index >= self.next_index {
            return Some(Err(LogError::UnknownIndex {
                index,
                next_index: self.next_index,
            }));
        }
        if let Some(failure) = &self.failure {
            return Some(Err(failure.clone()));
        }
        if self.stopped {
            return Some(Err(LogError::Closed));
        }
        None
    }

    /// Wakers of every task whose index is now settled (durable, failed or closed).
    pub fn take_settled_wakers(&mut self) -> Vec<Waker> {
        if self.failure.is_some() || self.stopped {
            return std::mem::take(&mut self.wakers).into_values().collect();
        }
        let later = self.wakers.split_off(&(self.durable_index + 1, 0));
        std::mem::replace(&mut self.wakers, later)
            .into_values()
            .collect()
    }
}

/// Resolves when the record with its index is durable (data-synced), or fails when the log
/// failed or closed before that. Returned by `CommandLog::append` and `CommandLog::durable`.
/// Dropping it does not cancel anything: the record is written all the same.
#[must_use = "a ticket does nothing unless awaited or waited on; drop it to not wait"]
pub struct Ticket {
    shared: Arc<Shared>,
    index: u64,
    waiter_id: Option<u64>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("index", &self.index)
            .finish()
    }
}

impl Ticket {
    pub(crate) fn new(shared: Arc<Shared>, index: u64) -> Ticket {
        Ticket {
            shared,
            index,
            waiter_id: None,
        }
    }

    /// The index this ticket waits for.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Blocks the calling thread until the record is durable. Not for a runtime thread.
    pub fn wait(self) -> Result<(), LogError> {
        wait_durable(&self.shared, self.index)
    }
}

pub(crate) fn wait_durable(shared: &Shared, index: u64) -> Result<(), LogError> {
    let mut state = shared.lock();
    loop {
        if let Some(outcome) = state.outcome(index) {
            return outcome;
        }
        state = shared.wait_progress(state);
    }
}

impl Future for Ticket {
    type Output = Result<(), LogError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        if let Some(outcome) = state.outcome(this.index) {
            if let Some(id) = this.waiter_id.take() {
                state.wakers.remove(&(this.index, id));
            }
            return Poll::Ready(outcome);
        }
        let id = match this.waiter_id {
            Some(id) => id,
            None => {
                let id = state.next_waiter_id;
                state.next_waiter_id += 1;
                this.waiter_id = Some(id);
                id
            }
        };
        // Replaces the waker of an earlier poll: one entry per ticket, however often polled.
        state
            .wakers
            .insert((this.index, id), context.waker().clone());
        Poll::Pending
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(id) = self.waiter_id {
            self.shared.lock().wakers.remove(&(self.index, id));
        }
    }
}

/// The outcome of a request the log thread carries out (a snapshot), waited for by a thread or
/// a task.
#[derive(Default)]
pub(crate) struct Completion {
    slot: Mutex<CompletionSlot>,
    done: Condvar,
}

#[derive(Default)]
struct CompletionSlot {
    result: Option<Result<(), LogError>>,
    waker: Option<Waker>,
}

impl Completion {
    pub fn complete(&self, result: Result<(), LogError>) {
        let waker = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.result = Some(result);
            slot.waker.take()
        };
        self.done.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub fn wait(&self) -> Result<(), LogError> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = slot.result.clone() {
                return result;
            }
            slot = self.done.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Resolves when a snapshot requested with `CommandLog::snapshot` is installed.
#[must_use = "the snapshot is installed whether or not this is awaited, but its error is lost"]
pub struct SnapshotTicket {
    pub(crate) completion: Arc<Completion>,
}

impl std::fmt::Debug for SnapshotTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTicket").finish_non_exhaustive()
    }
}

impl SnapshotTicket {
    /// Blocks the calling thread until the snapshot is installed.
    pub fn wait(self) -> Result<(), LogError> {
        self.completion.wait()
    }
}

impl Future for SnapshotTicket {
    type Output = Result<(), LogError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self
            .completion
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match slot.result.clone() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.waker = Some(context.waker().clone());
                Poll::Pending
            }
        }
    }
}
