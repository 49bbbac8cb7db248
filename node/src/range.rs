//! The state of one range on this node: pure bookkeeping, no I/O, so every rule is unit-tested.
//!
//! Offsets of a range, from low to high:
//!
//! ```text
//!   start ≤ confirmed ≤ durable_end ≤ next
//!   [start, durable_end)   on disk (acknowledged to the writer)
//!   [durable_end, next)    appends handed to the store, not yet durable ("in flight")
//!   [start, confirmed)     what readers may fetch while the range is open
//! ```
//!
//! The writer assigns offsets; an APPEND is accepted only when its base equals `next`, so the
//! in-flight region is a contiguous run of batches that become durable in order. `confirmed` is
//! the highest offset the writer reported as acknowledged by enough replicas (piggybacked on its
//! appends), never above this node's durable end: readers then never see a batch that a seal
//! could still cut off (ARCHITECTURE.md §7). A writer alone on its range may report the end of
//! the batch it is sending, which makes that batch readable as soon as it is durable here.
//!
//! Once sealed the range accepts no append and its end is fixed; fetches may then read up to
//! `min(end, durable_end)` because a sealed end is final whatever the writer confirmed.
//!
//! Epochs fence writers: an APPEND or SEAL with an epoch below the range's is refused; a higher
//! epoch is adopted, fencing the older writer on this node too.
//!
//! **Durable before effective.** A change a client could rely on (a raised epoch, a seal) is
//! saved in the range catalog before this state shows it, so the saved state is never behind
//! what any client observed. The scheme is "pending, everyone waits":
//!
//! ```text
//!   begin_epoch_raise(e) / seal(..) → Save      pending = Some(..): the change is being saved
//!     while pending: every APPEND and SEAL of the range, of any epoch, gets Wait
//!   save succeeded → commit_raise / commit_seal   the change takes effect, pending = None
//!   save failed    → abort_raise / abort_seal     the range is exactly as before, pending = None
//! ```
//!
//! One change is pending at a time, so saves of one range never race each other, and the
//! saved epoch is always ≥ the in-memory epoch. Appends already in flight finish normally while
//! a raise is pending (they were admitted under the old epoch, which they carry). A seal first
//! *drains*: it holds new appends (they wait, they are not refused: the seal is not visible
//! yet) until the appends in flight settle, then becomes pending with its end. A seal whose end
//! is below what readers may already have seen (the confirmed offset, counting appends in
//! flight) is refused up front, so a drain never ends in a refusal.
//!
//! A trim (retention, TRIM_RANGE) raises `start`, never above what this node holds (the durable
//! end, or the end once sealed), and raises `confirmed` with it so `start ≤ confirmed` holds.

use std::collections::VecDeque;

use ids::{Epoch, Offset};

/// Why an APPEND was refused; each maps to its own protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendRejection {
    /// The range is sealed at `end`.
    Sealed { end: Offset },
    /// The request's epoch is older than the range's.
    StaleEpoch { current: Epoch },
    /// The batch is already durable here; the writer may treat it as acknowledged.
    DuplicateDurable { durable_end: Offset },
    /// The batch was accepted earlier and is still being written; its ack will follow.
    DuplicateInFlight { next: Offset },
    /// The batch starts past the next expected offset: earlier batches are missing.
    Gap { next: Offset },
    /// The batch lies below the range's start or is empty/overflowing.
    OutOfRange { start: Offset },
    /// A seal or an epoch raise of the range is being saved (or a seal is draining): wait for
    /// the range's change notification and try again.
    Wait,
    /// The request's epoch is above the range's: the raise must be saved first
    /// ([`RangeState::begin_epoch_raise`]).
    EpochNotSaved { epoch: Epoch },
}

/// Result of [`RangeState::begin_epoch_raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaiseStep {
    /// No raise: the epoch is not above the range's, or the range is sealed (an APPEND to it
    /// is refused anyway). Go on with [`RangeState::try_append`].
    NotNeeded,
    /// Another change of the range is being saved: wait and try again.
    Wait,
    /// The raise to `epoch` is now pending: save the range with it, then call
    /// [`RangeState::commit_raise`] or [`RangeState::abort_raise`].
    Save { epoch: Epoch },
}

/// A change being saved, not yet in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Raise { epoch: Epoch },
    Seal { epoch: Epoch, end: Offset },
}

/// Result of [`RangeState::complete_append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The durable end moved forward (to or past this batch).
    Advanced,
    /// This batch is durable but an earlier one is not yet: the durable end did not move.
    Waiting,
    /// The batch was dropped by an earlier failure; it is not part of the range.
    Dropped,
}

/// Result of [`RangeState::seal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealOutcome {
    /// Sealed; this is the range's end.
    Sealed { end: Offset },
    /// New appends are held, but appends are still in flight; the end is known once
    /// [`RangeState::in_flight_is_empty`] (call [`RangeState::seal`] again then).
    Draining,
    /// The request's epoch is older than the range's.
    StaleEpoch { current: Epoch },
    /// The requested end is below what readers may have seen (`confirmed`, counting the
    /// appends in flight): sealing there would take back readable records.
    BelowConfirmed { confirmed: Offset },
    /// Another change of the range is being saved: wait and try again.
    Wait,
    /// The seal at `end` with `epoch` is pending: save the range sealed so, then call
    /// [`RangeState::commit_seal`] or [`RangeState::abort_seal`].
    Save { epoch: Epoch, end: Offset },
}

/// Result of [`RangeState::trim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimOutcome {
    /// The start moved up to the requested offset.
    Trimmed,
    /// The offset is at or below the start already: nothing to do (a retry, or an older trim).
    Unchanged,
    /// The offset is above what this node holds for the range (`limit`: its durable end, or its
    /// end once sealed); a replica cannot drop data it does not have.
    BeyondHeld { limit: Offset },
    /// A raise or seal of the range is being saved: wait and try again.
    Wait,
}

/// One range as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeState {
    epoch: Epoch,
    start: Offset,
    next: Offset,
    durable_end: Offset,
    /// Highest confirmed offset any writer reported (may be above `durable_end`).
    writer_confirmed: Offset,
    /// `Some(end)` once sealed with a known end.
    end: Option<Offset>,
    /// Set by `seal` while appends are still in flight and while the seal is saved; new appends
    /// wait.
    sealing: bool,
    /// A raise or seal being saved; see the module header.
    pending: Option<Pending>,
    /// The in-flight batches, in offset order, with whether each finished.
    in_flight: VecDeque<InFlight>,
    /// Source of [`AppendTicket`]s, so a completion of a dropped batch is never mistaken for a
    /// later batch at the same offset.
    next_ticket: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    ticket: AppendTicket,
    base: Offset,
    end: Offset,
    durable: bool,
}

/// Names one accepted append until the store reports on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendTicket(u64);

impl RangeState {
    /// A new, open, empty range starting at `start`.
    pub fn new(epoch: Epoch, start: Offset) -> RangeState {
        RangeState {
            epoch,
            start,
            next: start,
            durable_end: start,
            writer_confirmed: start,
            end: None,
            sealing: false,
            pending: None,
            in_flight: VecDeque::new(),
            next_ticket: 0,
        }
    }

    /// A range rebuilt after a restart: `durable_end` is what the store recovered, `confirmed`
    /// the writer's confirmed offset as last persisted (at the last clean shutdown; the start
    /// after a crash, so readers of an open range wait for the writer's next report, which is
    /// safe). A sealed range is readable up to its end either way.
    pub fn recovered(
        epoch: Epoch,
        start: Offset,
        durable_end: Offset,
        end: Option<Offset>,
        confirmed: Offset,
    ) -> RangeState {
        assert!(
            durable_end >= start,
            "recovered durable end {durable_end} below start {start}"
        );
        let mut state = RangeState::new(epoch, start);
        state.next = durable_end;
        state.durable_end = durable_end;
        state.writer_confirmed = confirmed.max(start);
        state.end = end;
        state
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    pub fn start(&self) -> Offset {
        self.start
    }
    /// Next offset an APPEND must start at.
    pub fn next(&self) -> Offset {
        self.next
    }
    /// End of what is durable on this node.
    pub fn durable_end(&self) -> Offset {
        self.durable_end
    }
    /// The confirmed offset readers are bounded by while the range is open.
    pub fn confirmed(&self) -> Offset {
        self.writer_confirmed.min(self.durable_end)
    }
    /// The end when sealed.
    pub fn end(&self) -> Option<Offset> {
        self.end
    }
    /// Sealed, with its end saved.
    pub fn is_sealed(&self) -> bool {
        self.end.is_some()
    }
    /// Whether a raise or a seal is being saved (the range's record must not be saved by anyone
    /// else meanwhile: wait for the change notification).
    pub fn has_pending_change(&self) -> bool {
        self.pending.is_some()
    }
    pub fn in_flight_is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Decides an APPEND of `count` records at `base` by a writer at `epoch`. On `Ok` the batch
    /// is now in flight: the caller must hand it to the store and then call
    /// [`RangeState::complete_append`] or [`RangeState::fail_append`] with the ticket.
    pub fn try_append(
        &mut self,
        epoch: Epoch,
        base: Offset,
        count: u32,
    ) -> Result<AppendTicket, AppendRejection> {
        if self.pending.is_some() || self.sealing {
            return Err(AppendRejection::Wait);
        }
        if let Some(end) = self.end {
            return Err(AppendRejection::Sealed { end });
        }
        if epoch < self.epoch {
            return Err(AppendRejection::StaleEpoch {
                current: self.epoch,
            });
        }
        if epoch > self.epoch {
            return Err(AppendRejection::EpochNotSaved { epoch });
        }
        let Some(batch_end) = base.checked_add(u64::from(count)) else {
            return Err(AppendRejection::OutOfRange { start: self.start });
        };
        if count == 0 || base < self.start {
            return Err(AppendRejection::OutOfRange { start: self.start });
        }
        if base < self.next {
            return if batch_end <= self.durable_end {
                Err(AppendRejection::DuplicateDurable {
                    durable_end: self.durable_end,
                })
            } else {
                Err(AppendRejection::DuplicateInFlight { next: self.next })
            };
        }
        if base > self.next {
            return Err(AppendRejection::Gap { next: self.next });
        }
        debug_assert_eq!(epoch, self.epoch);
        let ticket = AppendTicket(self.next_ticket);
        self.next_ticket += 1;
        self.in_flight.push_back(InFlight {
            ticket,
            base,
            end: batch_end,
            durable: false,
        });
        self.next = batch_end;
        debug_assert!(self.durable_end <= self.next);
        Ok(ticket)
    }

    /// Starts raising the range's epoch to `epoch` for an APPEND (a SEAL raises it with the
    /// seal). While the raise is pending, every APPEND and SEAL of the range waits.
    pub fn begin_epoch_raise(&mut self, epoch: Epoch) -> RaiseStep {
        if self.pending.is_some() || self.sealing {
            return RaiseStep::Wait;
        }
        if self.end.is_some() || epoch <= self.epoch {
            return RaiseStep::NotNeeded;
        }
        self.pending = Some(Pending::Raise { epoch });
        RaiseStep::Save { epoch }
    }

    /// The raise to `epoch` is saved: it takes effect. False (nothing changes) if that raise
    /// is not the pending change: the range was deleted and created again meanwhile.
    pub fn commit_raise(&mut self, epoch: Epoch) -> bool {
        if self.pending != Some(Pending::Raise { epoch }) {
            return false;
        }
        self.pending = None;
        self.epoch = self.epoch.max(epoch);
        true
    }

    /// The raise to `epoch` could not be saved: the range is as it was before.
    pub fn abort_raise(&mut self, epoch: Epoch) {
        if self.pending == Some(Pending::Raise { epoch }) {
            self.pending = None;
        }
    }

    /// Records the writer's confirmed offset piggybacked on a request. Lower values are ignored.
    pub fn report_confirmed(&mut self, confirmed: Offset) {
        self.writer_confirmed = self.writer_confirmed.max(confirmed);
    }

    /// The store made the batch of `ticket` durable. Says whether `durable_end` advanced
    /// (fetch waiters should be woken) or the batch had been dropped by an earlier failure.
    pub fn complete_append(&mut self, ticket: AppendTicket) -> Completion {
        let Some(entry) = self
            .in_flight
            .iter_mut()
            .find(|entry| entry.ticket == ticket)
        else {
            // Dropped by an earlier failure: its bytes may be on disk but are not part of the
            // range (the range's next offset went back below them).
            return Completion::Dropped;
        };
        entry.durable = true;
        let before = self.durable_end;
        while let Some(front) = self.in_flight.front() {
            if !front.durable {
                break;
            }
            assert_eq!(
                front.base, self.durable_end,
                "in-flight batches must be contiguous"
            );
            self.durable_end = front.end;
            self.in_flight.pop_front();
        }
        debug_assert!(self.durable_end <= self.next);
        if self.durable_end != before {
            Completion::Advanced
        } else {
            Completion::Waiting
        }
    }

    /// Whether the batch of `ticket` is still in flight: neither below the durable end nor
    /// dropped.
    pub fn is_pending(&self, ticket: AppendTicket) -> bool {
        self.in_flight.iter().any(|entry| entry.ticket == ticket)
    }

    /// The store failed the batch of `ticket`. That batch and every later in-flight one are
    /// dropped (they can no longer become durable contiguously), `next` goes back to the failed
    /// base, and the tickets of the dropped later batches are returned so their requests get
    /// errors too.
    pub fn fail_append(&mut self, ticket: AppendTicket) -> Vec<AppendTicket> {
        let Some(position) = self
            .in_flight
            .iter()
            .position(|entry| entry.ticket == ticket)
        else {
            return Vec::new();
        };
        let base = self.in_flight[position].base;
        let dropped: Vec<AppendTicket> = self
            .in_flight
            .drain(position..)
            .map(|entry| entry.ticket)
            .skip(1)
            .collect();
        self.next = base;
        debug_assert!(self.durable_end <= self.next);
        dropped
    }

    /// Seals the range for a writer at `epoch`. With `requested_end` (the end the writer settled
    /// on from the replicas) the range ends there; without it, at this node's end once in-flight
    /// appends settle. Sealing a sealed range returns its end and changes nothing. The seal
    /// takes effect only with [`RangeState::commit_seal`], after `Save`.
    pub fn seal(&mut self, epoch: Epoch, requested_end: Option<Offset>) -> SealOutcome {
        if self.pending.is_some() {
            return SealOutcome::Wait;
        }
        if epoch < self.epoch {
            return SealOutcome::StaleEpoch {
                current: self.epoch,
            };
        }
        if let Some(end) = self.end {
            return SealOutcome::Sealed { end };
        }
        // What readers may have seen by the time the appends in flight settle.
        let confirmed_bound = self.writer_confirmed.min(self.next);
        if let Some(requested) = requested_end {
            if requested < confirmed_bound {
                return SealOutcome::BelowConfirmed {
                    confirmed: confirmed_bound,
                };
            }
        }
        self.sealing = true;
        if !self.in_flight.is_empty() {
            return SealOutcome::Draining;
        }
        let end = requested_end.unwrap_or(self.durable_end).max(self.start);
        let epoch = epoch.max(self.epoch);
        self.pending = Some(Pending::Seal { epoch, end });
        SealOutcome::Save { epoch, end }
    }

    /// The seal at `end` with `epoch` is saved: the range is sealed so. False (nothing changes)
    /// if that seal is not the pending change: the range was deleted and created again
    /// meanwhile.
    pub fn commit_seal(&mut self, epoch: Epoch, end: Offset) -> bool {
        if self.pending != Some(Pending::Seal { epoch, end }) {
            return false;
        }
        assert!(
            self.in_flight.is_empty(),
            "a seal commits only once drained"
        );
        self.pending = None;
        self.sealing = false;
        self.epoch = epoch;
        self.end = Some(end);
        true
    }

    /// The seal at `end` with `epoch` could not be saved: the range is as it was before the
    /// seal, open, appends no longer held.
    pub fn abort_seal(&mut self, epoch: Epoch, end: Offset) {
        if self.pending == Some(Pending::Seal { epoch, end }) {
            self.pending = None;
            self.sealing = false;
        }
    }

    /// Moves the start up to `offset` (the caller drops the stored batches below it). Appends
    /// in flight are all at or above the durable end, so they are unaffected.
    pub fn trim(&mut self, offset: Offset) -> TrimOutcome {
        if self.pending.is_some() {
            return TrimOutcome::Wait;
        }
        if offset <= self.start {
            return TrimOutcome::Unchanged;
        }
        let limit = self
            .end
            .map_or(self.durable_end, |end| end.min(self.durable_end));
        if offset > limit {
            return TrimOutcome::BeyondHeld { limit };
        }
        self.start = offset;
        self.writer_confirmed = self.writer_confirmed.max(offset);
        debug_assert!(self.start <= self.confirmed());
        debug_assert!(self.confirmed() <= self.durable_end && self.durable_end <= self.next);
        TrimOutcome::Trimmed
    }

    /// Highest offset (exclusive) a fetch may read now.
    pub fn fetch_limit(&self) -> Offset {
        match self.end {
            Some(end) => end.min(self.durable_end),
            None => self.confirmed(),
        }
    }

    /// Whether a fetch from `offset` has data now, must wait, or can never be served.
    pub fn classify_fetch(&self, offset: Offset) -> FetchBounds {
        if offset < self.start {
            return FetchBounds::OutOfRange;
        }
        let limit = self.fetch_limit();
        if offset < limit {
            return FetchBounds::Ready { limit };
        }
        match self.end {
            Some(end) if offset >= end => FetchBounds::EndOfRange { end },
            // Sealed but this replica lags behind the end: the rest is not here.
            Some(_) => FetchBounds::Wait,
            None => FetchBounds::Wait,
        }
    }
}

/// Answer of [`RangeState::classify_fetch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchBounds {
    /// Data from the offset up to `limit` (exclusive) may be read.
    Ready { limit: Offset },
    /// Nothing readable yet; a long-poll waits for the durable or confirmed offset to move.
    Wait,
    /// The range is sealed and the offset is at or past its end.
    EndOfRange { end: Offset },
    /// The offset lies below the range's start.
    OutOfRange,
}

#[cfg(test)]
mod tests;
