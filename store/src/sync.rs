//! A blocking front end for tests, tools and benchmarks: the same requests as
//! [`StoreHandle`](crate::StoreHandle), waiting in the kernel on the completion mailbox.

use std::time::Duration;

use bytes::Bytes;
use runtime::mailbox::{Receiver, RecvTimeoutError};

use crate::error::{Error, Result};
use crate::index::RangeSummary;
use crate::message::Completion;
use crate::worker::{AppendResult, Done, ReadStart, WorkerCore, WorkerStore};
use crate::{Offset, RangeKey};

/// Names a request submitted with [`SyncStore::submit_append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u32);

/// A blocking handle on one worker's share of the store.
pub struct SyncStore {
    core: WorkerCore,
    completions: Receiver<Completion>,
}

impl SyncStore {
    /// Wraps a worker's share; use it from one thread.
    pub fn new(worker: WorkerStore) -> SyncStore {
        let (core, completions) = worker.into_parts();
        SyncStore { core, completions }
    }

    /// Receives one completion (waiting up to `timeout`); false if none arrived.
    fn pump(&mut self, timeout: Option<Duration>) -> bool {
        match self.completions.recv_blocking(timeout) {
            Ok(completion) => {
                self.core.compact_completed();
                self.core.complete(completion);
                while let Ok(completion) = self.completions.try_recv() {
                    self.core.complete(completion);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Closed) => {
                self.core.close();
                true
            }
        }
    }

    fn wait(&mut self, slot: u32) -> Result<Done> {
        loop {
            if let Some(result) = self.core.take(slot) {
                return result;
            }
            self.pump(None);
        }
    }

    /// Appends one batch and waits until it is durable.
    pub fn append(
        &mut self,
        range: RangeKey,
        base_offset: Offset,
        count: u32,
        batch: Bytes,
    ) -> Result<AppendResult> {
        let ticket = self.submit_append(range, base_offset, count, batch)?;
        self.wait_append(ticket)
    }

    /// Submits an append without waiting; collect it with [`SyncStore::wait_append`] or
    /// [`SyncStore::next_completed`].
    pub fn submit_append(
        &mut self,
        range: RangeKey,
        base_offset: Offset,
        count: u32,
        batch: Bytes,
    ) -> Result<Ticket> {
        self.core
            .start_append(range, base_offset, count, batch)
            .map(Ticket)
    }

    /// Waits for one submitted append.
    pub fn wait_append(&mut self, ticket: Ticket) -> Result<AppendResult> {
        match self.wait(ticket.0)? {
            Done::Appended(result) => Ok(result),
            _ => Err(wrong_kind()),
        }
    }

    /// Waits (up to `timeout`) for the next submitted append to finish, in completion order.
    pub fn next_completed(
        &mut self,
        timeout: Option<Duration>,
    ) -> Option<(Ticket, Result<AppendResult>)> {
        loop {
            if let Some(slot) = self.core.pop_completed() {
                let result = match self.core.take(slot) {
                    Some(Ok(Done::Appended(result))) => Ok(result),
                    Some(Ok(_)) => Err(wrong_kind()),
                    Some(Err(error)) => Err(error),
                    None => continue,
                };
                return Some((Ticket(slot), result));
            }
            if self.core.in_flight() == 0 || !self.pump(timeout) {
                return None;
            }
        }
    }

    /// Reads whole batches from the one containing `from_offset`, up to `max_bytes`.
    pub fn read(
        &mut self,
        range: RangeKey,
        from_offset: Offset,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>> {
        match self.core.start_read(range, from_offset, max_bytes)? {
            ReadStart::Ready(batches) => Ok(batches),
            ReadStart::Pending(slot) => match self.wait(slot)? {
                Done::Read(batches) => Ok(batches),
                _ => Err(wrong_kind()),
            },
        }
    }

    /// Trims the range below `offset` and waits until the trim is durable.
    pub fn trim(&mut self, range: RangeKey, offset: Offset) -> Result<()> {
        let slot = self.core.start_trim(range, offset)?;
        self.wait(slot).map(|_| ())
    }

    /// Deletes the range and waits until the deletion is durable.
    pub fn delete(&mut self, range: RangeKey) -> Result<()> {
        let slot = self.core.start_delete(range)?;
        self.wait(slot).map(|_| ())
    }

    /// Start and next offset of a range, if held.
    pub fn index(&self, range: RangeKey) -> Option<RangeSummary> {
        self.core.index(&range)
    }

    /// All ranges held.
    pub fn ranges(&self) -> Vec<(RangeKey, RangeSummary)> {
        self.core.ranges()
    }

    /// Requests submitted and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }
}

fn wrong_kind() -> Error {
    Error::Corrupt {
        position: 0,
        detail: "internal: completion of the wrong kind".to_string(),
    }
}
