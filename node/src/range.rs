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
//! flight) is refused up front, so a drain ends in a refusal only when the appends in flight
//! failed to reach the requested end (`AboveDurable`).
//!
//! A trim (retention, TRIM_RANGE) raises `start`, never above what this node holds (the durable
//! end, or the end once sealed), and raises `confirmed` with it so `start ≤ confirmed` holds.
//!
//! **Fencing and repair** (the seal-with-repair protocol of `docs/replication.md`). A fence
//! ([`RangeState::fence`], SEAL_RANGE with `FENCE_ONLY`) adopts the fencing writer's epoch (a
//! raise, saved first like any), marks the range *fenced* and drains the appends in flight; it
//! answers the durable end without fixing an end. A fenced range refuses every normal APPEND
//! (`Fenced`) and accepts only *repair* appends ([`RangeState::try_repair_append`]) at exactly
//! its epoch, which copy batches another replica holds. A sealed range accepts repair appends
//! below its end too (a replica sealed before it held everything). The fenced mark lives in
//! memory only: a restarted replica is open again at its saved (raised) epoch, which only the
//! fencing writer holds; that writer sends no normal append to a range it is sealing and fences
//! again when it reconnects (repairs and durable reads are refused until it does).
//!
//! ```text
//!   open ──fence(e ≥ epoch)──► fenced ──seal(end ≤ durable_end)──► sealed
//!     │                          normal APPEND → Fenced            repair below end only
//!     └──seal(end ≤ durable_end)──────────────────────────────────► sealed
//! ```
//!
//! A seal never fixes an end above the durable end (`AboveDurable`, decided once the appends in
//! flight settled, or at once when the end lies beyond them too): the replica must be repaired
//! first. A seal below the durable end is allowed (at or above the confirmed offset);
//! the batches at and above the end stay in the store but are never served
//! ([`RangeState::held_end`] is what the replica reports and serves up to).

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
    /// The range is fenced for a seal and no end is fixed yet: only repair appends of the
    /// fencing epoch (`epoch`, the range's) are accepted.
    Fenced { epoch: Epoch },
    /// A repair append to a range that is neither fenced nor sealed, or at an epoch above the
    /// range's (`current`): the writer must fence the range at its epoch first.
    RepairNotFenced { current: Epoch },
    /// A repair append reaching above the range's fixed end.
    BeyondEnd { end: Offset },
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
    /// The requested end is above this replica's durable end once the appends in flight
    /// settled (or above even them): it must be repaired before it can be sealed there. The
    /// range is open as before; appends held by the drain may go on (wake them).
    AboveDurable { durable_end: Offset },
    /// Another change of the range is being saved: wait and try again.
    Wait,
    /// The seal at `end` with `epoch` is pending: save the range sealed so, then call
    /// [`RangeState::commit_seal`] or [`RangeState::abort_seal`].
    Save { epoch: Epoch, end: Offset },
}

/// Result of [`RangeState::fence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceOutcome {
    /// The range is fenced (or sealed, `end` is then its end): this is its durable end
    /// ([`RangeState::held_end`]) and epoch.
    Fenced {
        end: Option<Offset>,
        durable_end: Offset,
        epoch: Epoch,
    },
    /// Fenced; appends are still in flight: call [`RangeState::fence`] again once they settled.
    Draining,
    /// The request's epoch is older than the range's.
    StaleEpoch { current: Epoch },
    /// Another change of the range is being saved, or a seal drains: wait and try again.
    Wait,
    /// The raise to `epoch` is pending: save the range with it, then call
    /// [`RangeState::commit_raise`] or [`RangeState::abort_raise`] and fence again.
    Raise { epoch: Epoch },
}

/// What a FETCH asks for beyond an offset (its `DURABLE` and `SEALED` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchMode {
    /// Read up to the durable end instead of the confirmed offset (fenced or sealed ranges).
    pub durable: bool,
    /// The reader knows the range is sealed: answer `NotHeld` instead of waiting.
    pub expect_sealed: bool,
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
    /// Fenced for a seal (in memory only; see the module header): normal appends are refused.
    fenced: bool,
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
            fenced: false,
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
    /// Fenced for a seal (and not sealed yet, or sealed since).
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }
    /// What this replica holds of the range: its durable end, cut at the end once sealed
    /// (batches at or above a seal's end are never part of the range). DESCRIBE_RANGE and
    /// FETCH report it as `next_offset`, SEAL_RANGE as `durable_end`.
    pub fn held_end(&self) -> Offset {
        match self.end {
            Some(end) => end.min(self.durable_end),
            None => self.durable_end,
        }
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
        if self.fenced {
            return Err(AppendRejection::Fenced { epoch: self.epoch });
        }
        if epoch > self.epoch {
            return Err(AppendRejection::EpochNotSaved { epoch });
        }
        self.claim(base, count, None)
    }

    /// Decides a repair APPEND (`REPAIR`) of `count` records at `base` by the writer that fenced
    /// the range at `epoch`: accepted only on a fenced or sealed range at exactly that epoch,
    /// below its end if one is fixed, at the next offset like any append. Never raises the
    /// epoch. On `Ok` the batch is in flight as for [`RangeState::try_append`].
    pub fn try_repair_append(
        &mut self,
        epoch: Epoch,
        base: Offset,
        count: u32,
    ) -> Result<AppendTicket, AppendRejection> {
        if self.pending.is_some() || self.sealing {
            return Err(AppendRejection::Wait);
        }
        if epoch < self.epoch {
            return Err(AppendRejection::StaleEpoch {
                current: self.epoch,
            });
        }
        if epoch > self.epoch || (!self.fenced && self.end.is_none()) {
            return Err(AppendRejection::RepairNotFenced {
                current: self.epoch,
            });
        }
        self.claim(base, count, self.end)
    }

    /// Decides a confirm-only APPEND (no batch) by a writer at `epoch` reporting `confirmed`:
    /// the same refusals as [`RangeState::try_append`]; on `Ok` the report is recorded and the
    /// answer is the durable end (the `next_offset` this replica reports).
    pub fn confirm(&mut self, epoch: Epoch, confirmed: Offset) -> Result<Offset, AppendRejection> {
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
        if self.fenced {
            return Err(AppendRejection::Fenced { epoch: self.epoch });
        }
        if epoch > self.epoch {
            return Err(AppendRejection::EpochNotSaved { epoch });
        }
        self.report_confirmed(confirmed);
        debug_assert!(self.confirmed() <= self.durable_end);
        Ok(self.durable_end)
    }

    /// Claims `[base, base + count)` at the next offset, below `end` if given.
    fn claim(
        &mut self,
        base: Offset,
        count: u32,
        end: Option<Offset>,
    ) -> Result<AppendTicket, AppendRejection> {
        let Some(batch_end) = base.checked_add(u64::from(count)) else {
            return Err(AppendRejection::OutOfRange { start: self.start });
        };
        if count == 0 || base < self.start {
            return Err(AppendRejection::OutOfRange { start: self.start });
        }
        if let Some(end) = end {
            if batch_end > end {
                return Err(AppendRejection::BeyondEnd { end });
            }
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

    /// Fences the range for a seal by the writer at `epoch` (SEAL_RANGE `FENCE_ONLY`). An epoch
    /// above the range's is raised first (`Raise`, saved like any raise); at the range's epoch
    /// the range is marked fenced (normal appends refused from now on) and, once the appends in
    /// flight settled, the answer is its durable end. A sealed range is answered as it is
    /// (its end, its epoch): there is nothing left to fence.
    pub fn fence(&mut self, epoch: Epoch) -> FenceOutcome {
        if self.pending.is_some() || self.sealing {
            return FenceOutcome::Wait;
        }
        if epoch < self.epoch {
            return FenceOutcome::StaleEpoch {
                current: self.epoch,
            };
        }
        if self.end.is_none() {
            if epoch > self.epoch {
                self.pending = Some(Pending::Raise { epoch });
                return FenceOutcome::Raise { epoch };
            }
            self.fenced = true;
            if !self.in_flight.is_empty() {
                return FenceOutcome::Draining;
            }
        }
        FenceOutcome::Fenced {
            end: self.end,
            durable_end: self.held_end(),
            epoch: self.epoch,
        }
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
        let refusal = match requested_end {
            Some(requested) if requested < confirmed_bound => Some(SealOutcome::BelowConfirmed {
                confirmed: confirmed_bound,
            }),
            // Beyond even the appends in flight: nothing to drain for. Once drained: beyond
            // what became durable (an append in flight failed), a repair is needed first.
            Some(requested)
                if requested > self.next
                    || (self.in_flight.is_empty() && requested > self.durable_end) =>
            {
                Some(SealOutcome::AboveDurable {
                    durable_end: self.durable_end,
                })
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            // A drain this or another seal began holds appends; with nothing left in flight
            // no seal needs them held any more (a seal still draining holds them again when
            // it looks next). The caller wakes the held appends.
            if self.in_flight.is_empty() {
                self.sealing = false;
            }
            return refusal;
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
        self.classify_fetch_as(offset, FetchMode::default())
    }

    /// [`RangeState::classify_fetch`] for a FETCH with the `DURABLE` and `SEALED` flags of
    /// `mode`: a durable read is bounded by [`RangeState::held_end`] instead of the confirmed
    /// offset (fenced or sealed ranges only, else `NotFenced`); a reader expecting the range
    /// sealed gets `NotHeld` instead of `Wait`.
    pub fn classify_fetch_as(&self, offset: Offset, mode: FetchMode) -> FetchBounds {
        if mode.durable && !self.fenced && self.end.is_none() {
            return FetchBounds::NotFenced;
        }
        if offset < self.start {
            return FetchBounds::OutOfRange;
        }
        let limit = self.read_limit(mode);
        if offset < limit {
            return FetchBounds::Ready { limit };
        }
        match self.end {
            Some(end) if offset >= end => FetchBounds::EndOfRange { end },
            // Not sealed here, or sealed but lagging behind the end: the rest is not here now.
            _ if mode.expect_sealed => FetchBounds::NotHeld { bound: limit },
            _ => FetchBounds::Wait,
        }
    }

    /// Highest offset (exclusive) a fetch in `mode` may read now.
    pub fn read_limit(&self, mode: FetchMode) -> Offset {
        if mode.durable {
            self.held_end()
        } else {
            self.fetch_limit()
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
    /// `SEALED`: this replica cannot serve the offset now (it is not sealed here, or holds less
    /// than its end); `bound` is what it can serve up to.
    NotHeld { bound: Offset },
    /// `DURABLE` on a range that is neither fenced nor sealed.
    NotFenced,
}

#[cfg(test)]
mod tests;
