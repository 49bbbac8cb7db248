use super::*;

/// Seals and, when the seal is to be saved, saves it successfully.
fn seal_saved(range: &mut RangeState, epoch: Epoch, end: Option<Offset>) -> SealOutcome {
    match range.seal(epoch, end) {
        SealOutcome::Save { epoch, end } => {
            assert!(range.commit_seal(epoch, end));
            SealOutcome::Sealed { end }
        }
        other => other,
    }
}

#[test]
fn append_in_order_becomes_durable_and_confirmed() {
    let mut range = RangeState::new(Epoch(1), Offset(100));
    let first = range.try_append(Epoch(1), Offset(100), 10).unwrap();
    assert_eq!(range.next(), Offset(110));
    assert_eq!(range.durable_end(), Offset(100));
    let second = range.try_append(Epoch(1), Offset(110), 5).unwrap();
    assert_eq!(range.complete_append(first), Completion::Advanced);
    assert_eq!(range.durable_end(), Offset(110));
    // Nothing is confirmed until the writer says so.
    assert_eq!(range.fetch_limit(), Offset(100));
    range.report_confirmed(Offset(115));
    assert_eq!(
        range.confirmed(),
        Offset(110),
        "confirmed never above the durable end"
    );
    assert_eq!(range.complete_append(second), Completion::Advanced);
    assert_eq!(range.confirmed(), Offset(115));
    assert!(range.in_flight_is_empty());
}

#[test]
fn out_of_order_completions_advance_only_the_contiguous_prefix() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let first = range.try_append(Epoch(1), Offset(0), 1).unwrap();
    let second = range.try_append(Epoch(1), Offset(1), 1).unwrap();
    let third = range.try_append(Epoch(1), Offset(2), 1).unwrap();
    assert_eq!(range.complete_append(second), Completion::Waiting);
    assert_eq!(range.durable_end(), Offset(0));
    assert_eq!(range.complete_append(first), Completion::Advanced);
    assert_eq!(range.durable_end(), Offset(2));
    assert_eq!(range.complete_append(third), Completion::Advanced);
    assert_eq!(range.durable_end(), Offset(3));
}

#[test]
fn duplicates_and_gaps_are_distinguished() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let ticket = range.try_append(Epoch(1), Offset(0), 10).unwrap();
    assert_eq!(
        range.try_append(Epoch(1), Offset(0), 10),
        Err(AppendRejection::DuplicateInFlight { next: Offset(10) })
    );
    range.complete_append(ticket);
    assert_eq!(
        range.try_append(Epoch(1), Offset(0), 10),
        Err(AppendRejection::DuplicateDurable {
            durable_end: Offset(10)
        })
    );
    assert_eq!(
        range.try_append(Epoch(1), Offset(5), 5),
        Err(AppendRejection::DuplicateDurable {
            durable_end: Offset(10)
        })
    );
    assert_eq!(
        range.try_append(Epoch(1), Offset(11), 1),
        Err(AppendRejection::Gap { next: Offset(10) })
    );
    range.try_append(Epoch(1), Offset(10), 10).unwrap();
    // Straddles the durable end: part of it is still in flight.
    assert_eq!(
        range.try_append(Epoch(1), Offset(5), 10),
        Err(AppendRejection::DuplicateInFlight { next: Offset(20) })
    );
    assert_eq!(
        range.next(),
        Offset(20),
        "a rejected append changes nothing"
    );
}

#[test]
fn empty_overflowing_and_below_start_batches_are_out_of_range() {
    let mut range = RangeState::new(Epoch(1), Offset(50));
    assert_eq!(
        range.try_append(Epoch(1), Offset(50), 0),
        Err(AppendRejection::OutOfRange { start: Offset(50) })
    );
    assert_eq!(
        range.try_append(Epoch(1), Offset(40), 5),
        Err(AppendRejection::OutOfRange { start: Offset(50) })
    );
    assert_eq!(
        range.try_append(Epoch(1), Offset(u64::MAX), 2),
        Err(AppendRejection::OutOfRange { start: Offset(50) })
    );
}

#[test]
fn stale_epoch_is_refused_and_newer_epoch_fences_the_old_writer() {
    let mut range = RangeState::new(Epoch(5), Offset(0));
    assert_eq!(
        range.try_append(Epoch(4), Offset(0), 1),
        Err(AppendRejection::StaleEpoch { current: Epoch(5) })
    );
    assert_eq!(
        range.try_append(Epoch(6), Offset(0), 1),
        Err(AppendRejection::EpochNotSaved { epoch: Epoch(6) }),
        "a raise is never adopted without being saved"
    );
    assert_eq!(
        range.begin_epoch_raise(Epoch(6)),
        RaiseStep::Save { epoch: Epoch(6) }
    );
    assert_eq!(range.epoch(), Epoch(5), "not in effect before the save");
    assert_eq!(
        range.try_append(Epoch(5), Offset(0), 1),
        Err(AppendRejection::Wait),
        "both epochs wait while the raise is pending"
    );
    assert_eq!(range.begin_epoch_raise(Epoch(7)), RaiseStep::Wait);
    assert_eq!(range.seal(Epoch(6), None), SealOutcome::Wait);
    assert!(
        !range.commit_raise(Epoch(7)),
        "only the pending raise commits"
    );
    assert!(range.commit_raise(Epoch(6)));
    assert_eq!(range.epoch(), Epoch(6));
    assert_eq!(range.begin_epoch_raise(Epoch(6)), RaiseStep::NotNeeded);
    range.try_append(Epoch(6), Offset(0), 1).unwrap();
    assert_eq!(
        range.try_append(Epoch(5), Offset(1), 1),
        Err(AppendRejection::StaleEpoch { current: Epoch(6) })
    );
    assert_eq!(
        range.seal(Epoch(5), None),
        SealOutcome::StaleEpoch { current: Epoch(6) }
    );
    assert!(!range.is_sealed());
}

#[test]
fn seal_waits_for_in_flight_appends_then_fixes_the_end() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let ticket = range.try_append(Epoch(1), Offset(0), 4).unwrap();
    assert_eq!(range.seal(Epoch(1), None), SealOutcome::Draining);
    assert!(!range.is_sealed(), "not visible before it is saved");
    assert_eq!(
        range.try_append(Epoch(1), Offset(4), 1),
        Err(AppendRejection::Wait),
        "new appends wait while the seal drains"
    );
    range.complete_append(ticket);
    assert_eq!(
        range.seal(Epoch(1), None),
        SealOutcome::Save {
            epoch: Epoch(1),
            end: Offset(4)
        }
    );
    assert_eq!(range.end(), None);
    assert_eq!(range.fetch_limit(), Offset(0), "readers do not see it yet");
    assert!(range.commit_seal(Epoch(1), Offset(4)));
    assert_eq!(range.end(), Some(Offset(4)));
    assert_eq!(
        range.seal(Epoch(1), None),
        SealOutcome::Sealed { end: Offset(4) },
        "sealing is idempotent"
    );
    assert_eq!(
        range.try_append(Epoch(1), Offset(4), 1),
        Err(AppendRejection::Sealed { end: Offset(4) })
    );
}

#[test]
fn sealed_range_is_readable_to_its_end_without_confirmation() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let ticket = range.try_append(Epoch(1), Offset(0), 4).unwrap();
    range.complete_append(ticket);
    assert_eq!(range.classify_fetch(Offset(0)), FetchBounds::Wait);
    assert_eq!(
        seal_saved(&mut range, Epoch(1), None),
        SealOutcome::Sealed { end: Offset(4) }
    );
    assert_eq!(
        range.classify_fetch(Offset(0)),
        FetchBounds::Ready { limit: Offset(4) }
    );
    assert_eq!(
        range.classify_fetch(Offset(4)),
        FetchBounds::EndOfRange { end: Offset(4) }
    );
}

#[test]
fn seal_at_a_requested_end_bounds_reads() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let first = range.try_append(Epoch(1), Offset(0), 4).unwrap();
    let second = range.try_append(Epoch(1), Offset(4), 4).unwrap();
    range.complete_append(first);
    range.complete_append(second);
    assert_eq!(
        seal_saved(&mut range, Epoch(2), Some(Offset(4))),
        SealOutcome::Sealed { end: Offset(4) }
    );
    assert_eq!(range.epoch(), Epoch(2), "the seal raised the epoch");
    assert_eq!(range.fetch_limit(), Offset(4));
    assert_eq!(
        range.classify_fetch(Offset(4)),
        FetchBounds::EndOfRange { end: Offset(4) }
    );
    // A lagging replica sealed past its durable end (an older node allowed that; its catalog
    // may hold such a seal) serves what it has and waits for the rest.
    let lagging =
        RangeState::recovered(Epoch(1), Offset(0), Offset(0), Some(Offset(10)), Offset(0));
    assert_eq!(lagging.classify_fetch(Offset(0)), FetchBounds::Wait);
}

#[test]
fn fetch_below_start_is_out_of_range() {
    let range = RangeState::new(Epoch(1), Offset(10));
    assert_eq!(range.classify_fetch(Offset(9)), FetchBounds::OutOfRange);
    assert_eq!(range.classify_fetch(Offset(10)), FetchBounds::Wait);
}

#[test]
fn failed_append_rolls_back_next_and_drops_later_batches() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let first = range.try_append(Epoch(1), Offset(0), 2).unwrap();
    let failed = range.try_append(Epoch(1), Offset(2), 2).unwrap();
    let later = range.try_append(Epoch(1), Offset(4), 2).unwrap();
    assert_eq!(range.fail_append(failed), vec![later]);
    assert_eq!(range.next(), Offset(2));
    assert_eq!(range.complete_append(first), Completion::Advanced);
    assert_eq!(range.durable_end(), Offset(2));
    assert!(range.in_flight_is_empty());
    // The writer retries from the failed offset; a late completion of the dropped batch at
    // offset 4 must not count for the retried batch at the same offset.
    let retried = range.try_append(Epoch(1), Offset(2), 2).unwrap();
    let retried_later = range.try_append(Epoch(1), Offset(4), 2).unwrap();
    assert_eq!(range.complete_append(later), Completion::Dropped);
    assert_eq!(range.complete_append(retried), Completion::Advanced);
    assert_eq!(range.durable_end(), Offset(4));
    assert_eq!(range.complete_append(retried_later), Completion::Advanced);
    assert_eq!(range.durable_end(), Offset(6));
}

#[test]
fn trim_raises_the_start_up_to_what_is_held_and_is_idempotent() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let ticket = range.try_append(Epoch(1), Offset(0), 10).unwrap();
    range.complete_append(ticket);
    let in_flight = range.try_append(Epoch(1), Offset(10), 5).unwrap();
    assert_eq!(
        range.trim(Offset(11)),
        TrimOutcome::BeyondHeld { limit: Offset(10) },
        "not above the durable end, even with appends in flight"
    );
    assert_eq!(range.start(), Offset(0));
    assert_eq!(range.trim(Offset(6)), TrimOutcome::Trimmed);
    assert_eq!(range.start(), Offset(6));
    assert_eq!(range.confirmed(), Offset(6), "confirmed follows the start");
    assert_eq!(range.classify_fetch(Offset(5)), FetchBounds::OutOfRange);
    assert_eq!(range.trim(Offset(6)), TrimOutcome::Unchanged);
    assert_eq!(range.trim(Offset(3)), TrimOutcome::Unchanged);
    assert_eq!(
        range.start(),
        Offset(6),
        "a lower offset never lowers the start"
    );
    // Appends go on at the next offset.
    assert_eq!(range.complete_append(in_flight), Completion::Advanced);
    range.try_append(Epoch(1), Offset(15), 1).unwrap();

    // A sealed range is held up to its end.
    let mut sealed = RangeState::new(Epoch(1), Offset(0));
    let ticket = sealed.try_append(Epoch(1), Offset(0), 10).unwrap();
    sealed.complete_append(ticket);
    seal_saved(&mut sealed, Epoch(1), Some(Offset(8)));
    assert_eq!(
        sealed.trim(Offset(9)),
        TrimOutcome::BeyondHeld { limit: Offset(8) }
    );
    assert_eq!(sealed.trim(Offset(8)), TrimOutcome::Trimmed);
    assert_eq!(
        sealed.classify_fetch(Offset(8)),
        FetchBounds::EndOfRange { end: Offset(8) }
    );
}

#[test]
fn recovered_range_resumes_at_its_durable_end() {
    let range = RangeState::recovered(Epoch(3), Offset(0), Offset(42), None, Offset(0));
    assert_eq!(range.next(), Offset(42));
    assert_eq!(
        range.fetch_limit(),
        Offset(0),
        "nothing confirmed before the crash"
    );
    let confirmed = RangeState::recovered(Epoch(3), Offset(0), Offset(42), None, Offset(40));
    assert_eq!(
        confirmed.fetch_limit(),
        Offset(40),
        "confirmed offset persisted at shutdown"
    );
    let beyond = RangeState::recovered(Epoch(3), Offset(0), Offset(42), None, Offset(50));
    assert_eq!(
        beyond.fetch_limit(),
        Offset(42),
        "never above the durable end"
    );
    let sealed =
        RangeState::recovered(Epoch(3), Offset(0), Offset(42), Some(Offset(42)), Offset(0));
    assert_eq!(sealed.fetch_limit(), Offset(42));
}

#[test]
fn a_failed_seal_save_leaves_the_range_as_before() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let ticket = range.try_append(Epoch(1), Offset(0), 4).unwrap();
    range.complete_append(ticket);
    range.report_confirmed(Offset(4));
    let before = range.clone();
    assert_eq!(
        range.seal(Epoch(3), None),
        SealOutcome::Save {
            epoch: Epoch(3),
            end: Offset(4)
        }
    );
    assert_eq!(range.trim(Offset(2)), TrimOutcome::Wait);
    range.abort_seal(Epoch(3), Offset(4));
    assert_eq!(range, before, "exactly as before the seal");
    range.try_append(Epoch(1), Offset(4), 1).unwrap();
}

#[test]
fn a_failed_raise_save_leaves_the_epoch_unchanged() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let before = range.clone();
    assert_eq!(
        range.begin_epoch_raise(Epoch(2)),
        RaiseStep::Save { epoch: Epoch(2) }
    );
    range.abort_raise(Epoch(2));
    assert_eq!(range, before);
    range.try_append(Epoch(1), Offset(0), 1).unwrap();
}

#[test]
fn seal_below_what_readers_may_have_seen_is_refused() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    let first = range.try_append(Epoch(1), Offset(0), 4).unwrap();
    range.complete_append(first);
    range.report_confirmed(Offset(6));
    let in_flight = range.try_append(Epoch(1), Offset(4), 4).unwrap();
    // Confirmed is 4 now, and becomes 6 once the batch in flight is durable.
    assert_eq!(
        range.seal(Epoch(1), Some(Offset(5))),
        SealOutcome::BelowConfirmed {
            confirmed: Offset(6)
        }
    );
    assert!(range.in_flight_is_empty() || range.is_pending(in_flight));
    assert_eq!(range.seal(Epoch(1), Some(Offset(6))), SealOutcome::Draining);
    range.complete_append(in_flight);
    assert_eq!(
        seal_saved(&mut range, Epoch(1), Some(Offset(6))),
        SealOutcome::Sealed { end: Offset(6) }
    );
}

#[test]
fn a_sealed_range_is_not_raised_by_an_append() {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    seal_saved(&mut range, Epoch(1), None);
    assert_eq!(range.begin_epoch_raise(Epoch(2)), RaiseStep::NotNeeded);
    assert_eq!(
        range.try_append(Epoch(2), Offset(0), 1),
        Err(AppendRejection::Sealed { end: Offset(0) })
    );
}

/// Fences and, when a raise is to be saved, saves it successfully, then fences again.
fn fence_saved(range: &mut RangeState, epoch: Epoch) -> FenceOutcome {
    match range.fence(epoch) {
        FenceOutcome::Raise { epoch } => {
            assert!(range.commit_raise(epoch));
            range.fence(epoch)
        }
        other => other,
    }
}

/// A range holding `[0, durable)` durably, at epoch 1.
fn holding(durable: u64) -> RangeState {
    let mut range = RangeState::new(Epoch(1), Offset(0));
    if durable > 0 {
        let ticket = range
            .try_append(Epoch(1), Offset(0), durable as u32)
            .unwrap();
        range.complete_append(ticket);
    }
    range
}

#[test]
fn fence_at_a_higher_epoch_is_a_raise_saved_first_then_a_fence() {
    let mut range = holding(5);
    assert_eq!(
        range.fence(Epoch(3)),
        FenceOutcome::Raise { epoch: Epoch(3) }
    );
    assert_eq!(range.epoch(), Epoch(1), "not in effect before it is saved");
    assert!(!range.is_fenced());
    assert_eq!(
        range.try_append(Epoch(1), Offset(5), 1),
        Err(AppendRejection::Wait),
        "appends wait while the raise is saved"
    );
    assert!(range.commit_raise(Epoch(3)));
    assert_eq!(
        range.fence(Epoch(3)),
        FenceOutcome::Fenced {
            end: None,
            durable_end: Offset(5),
            epoch: Epoch(3)
        }
    );
    assert!(range.is_fenced());
    assert_eq!(range.end(), None, "a fence fixes no end");
    // A failed save leaves the range unfenced at its old epoch.
    let mut other = holding(2);
    assert_eq!(
        other.fence(Epoch(4)),
        FenceOutcome::Raise { epoch: Epoch(4) }
    );
    other.abort_raise(Epoch(4));
    assert_eq!(other.epoch(), Epoch(1));
    assert!(!other.is_fenced());
    assert!(other.try_append(Epoch(1), Offset(2), 1).is_ok());
}

#[test]
fn fence_at_the_range_epoch_fences_without_a_raise_and_is_idempotent() {
    let mut range = holding(4);
    let answer = FenceOutcome::Fenced {
        end: None,
        durable_end: Offset(4),
        epoch: Epoch(1),
    };
    assert_eq!(range.fence(Epoch(1)), answer);
    assert!(!range.has_pending_change());
    assert_eq!(
        range.fence(Epoch(1)),
        answer,
        "fencing again answers the same"
    );
    assert_eq!(
        range.fence(Epoch(0)),
        FenceOutcome::StaleEpoch { current: Epoch(1) }
    );
}

#[test]
fn fence_drains_appends_in_flight_before_answering() {
    let mut range = holding(2);
    let in_flight = range.try_append(Epoch(1), Offset(2), 3).unwrap();
    assert_eq!(range.fence(Epoch(1)), FenceOutcome::Draining);
    assert!(range.is_fenced(), "fenced at once: new appends are refused");
    assert_eq!(
        range.try_append(Epoch(1), Offset(5), 1),
        Err(AppendRejection::Fenced { epoch: Epoch(1) })
    );
    assert_eq!(range.complete_append(in_flight), Completion::Advanced);
    assert_eq!(
        range.fence(Epoch(1)),
        FenceOutcome::Fenced {
            end: None,
            durable_end: Offset(5),
            epoch: Epoch(1)
        },
        "the answer counts the append that settled"
    );
    // A failed append in flight settles too: it is not part of the range.
    let mut failing = holding(2);
    let lost = failing.try_append(Epoch(1), Offset(2), 3).unwrap();
    assert_eq!(failing.fence(Epoch(1)), FenceOutcome::Draining);
    failing.fail_append(lost);
    assert_eq!(
        failing.fence(Epoch(1)),
        FenceOutcome::Fenced {
            end: None,
            durable_end: Offset(2),
            epoch: Epoch(1)
        }
    );
}

#[test]
fn fenced_range_refuses_normal_appends_confirms_and_older_epochs() {
    let mut range = holding(3);
    assert!(matches!(
        fence_saved(&mut range, Epoch(2)),
        FenceOutcome::Fenced { .. }
    ));
    assert_eq!(
        range.try_append(Epoch(2), Offset(3), 1),
        Err(AppendRejection::Fenced { epoch: Epoch(2) }),
        "the fencing epoch itself cannot append normally"
    );
    assert_eq!(
        range.try_append(Epoch(1), Offset(3), 1),
        Err(AppendRejection::StaleEpoch { current: Epoch(2) })
    );
    assert_eq!(
        range.confirm(Epoch(2), Offset(3)),
        Err(AppendRejection::Fenced { epoch: Epoch(2) })
    );
    assert_eq!(
        range.confirm(Epoch(1), Offset(3)),
        Err(AppendRejection::StaleEpoch { current: Epoch(2) })
    );
    // A newer writer's append raises the epoch as any, and is refused all the same.
    assert_eq!(
        range.begin_epoch_raise(Epoch(5)),
        RaiseStep::Save { epoch: Epoch(5) }
    );
    assert!(range.commit_raise(Epoch(5)));
    assert_eq!(
        range.try_append(Epoch(5), Offset(3), 1),
        Err(AppendRejection::Fenced { epoch: Epoch(5) })
    );
    assert_eq!(range.fetch_limit(), Offset(0), "nothing became readable");
}

#[test]
fn repair_appends_are_accepted_only_when_fenced_at_their_epoch() {
    let mut range = holding(2);
    assert_eq!(
        range.try_repair_append(Epoch(1), Offset(2), 1),
        Err(AppendRejection::RepairNotFenced { current: Epoch(1) }),
        "an open, unfenced range takes no repair"
    );
    fence_saved(&mut range, Epoch(3));
    assert_eq!(
        range.try_repair_append(Epoch(4), Offset(2), 1),
        Err(AppendRejection::RepairNotFenced { current: Epoch(3) }),
        "a repair never raises the epoch"
    );
    assert_eq!(
        range.try_repair_append(Epoch(2), Offset(2), 1),
        Err(AppendRejection::StaleEpoch { current: Epoch(3) })
    );
    assert_eq!(
        range.try_repair_append(Epoch(3), Offset(3), 1),
        Err(AppendRejection::Gap { next: Offset(2) })
    );
    assert_eq!(
        range.try_repair_append(Epoch(3), Offset(0), 2),
        Err(AppendRejection::DuplicateDurable {
            durable_end: Offset(2)
        })
    );
    let ticket = range.try_repair_append(Epoch(3), Offset(2), 4).unwrap();
    assert_eq!(
        range.try_repair_append(Epoch(3), Offset(2), 4),
        Err(AppendRejection::DuplicateInFlight { next: Offset(6) })
    );
    assert_eq!(range.complete_append(ticket), Completion::Advanced);
    assert_eq!(range.durable_end(), Offset(6));
    assert_eq!(
        range.fetch_limit(),
        Offset(0),
        "repairs make nothing readable"
    );
    assert_eq!(
        seal_saved(&mut range, Epoch(3), Some(Offset(6))),
        SealOutcome::Sealed { end: Offset(6) }
    );
    assert_eq!(range.fetch_limit(), Offset(6));
}

#[test]
fn repair_appends_to_a_sealed_range_must_lie_below_its_end() {
    // A replica sealed past its durable end by an older node: repairs fill it up to the end.
    let mut lagging =
        RangeState::recovered(Epoch(2), Offset(0), Offset(4), Some(Offset(10)), Offset(0));
    assert_eq!(
        lagging.try_repair_append(Epoch(2), Offset(4), 7),
        Err(AppendRejection::BeyondEnd { end: Offset(10) })
    );
    let ticket = lagging.try_repair_append(Epoch(2), Offset(4), 6).unwrap();
    lagging.complete_append(ticket);
    assert_eq!(
        lagging.classify_fetch(Offset(9)),
        FetchBounds::Ready { limit: Offset(10) }
    );
    assert_eq!(
        lagging.try_repair_append(Epoch(2), Offset(10), 1),
        Err(AppendRejection::BeyondEnd { end: Offset(10) })
    );
    // A normal append to a sealed range is refused as always.
    assert_eq!(
        lagging.try_append(Epoch(2), Offset(10), 1),
        Err(AppendRejection::Sealed { end: Offset(10) })
    );
    // A fenced range whose end is being fixed: the repair waits for the seal.
    let mut range = holding(2);
    fence_saved(&mut range, Epoch(1));
    assert!(matches!(
        range.seal(Epoch(1), Some(Offset(2))),
        SealOutcome::Save { .. }
    ));
    assert_eq!(
        range.try_repair_append(Epoch(1), Offset(2), 1),
        Err(AppendRejection::Wait)
    );
}

#[test]
fn seal_above_the_durable_end_is_refused_until_repaired() {
    let mut range = holding(4);
    let _in_flight = range.try_append(Epoch(1), Offset(4), 2).unwrap();
    assert_eq!(
        range.seal(Epoch(1), Some(Offset(7))),
        SealOutcome::AboveDurable {
            durable_end: Offset(4)
        },
        "beyond the appends in flight too: refused at once"
    );
    assert!(!range.has_pending_change());
    assert!(range.try_append(Epoch(1), Offset(6), 1).is_ok(), "not held");
    // Within the appends in flight: decided once they settled. A failure leaves a gap.
    let mut failing = holding(4);
    let lost = failing.try_append(Epoch(1), Offset(4), 2).unwrap();
    assert_eq!(
        failing.seal(Epoch(1), Some(Offset(6))),
        SealOutcome::Draining
    );
    failing.fail_append(lost);
    assert_eq!(
        failing.seal(Epoch(1), Some(Offset(6))),
        SealOutcome::AboveDurable {
            durable_end: Offset(4)
        }
    );
    assert!(failing.end().is_none(), "nothing sealed");
    assert!(
        failing.try_append(Epoch(1), Offset(4), 2).is_ok(),
        "open as before, appends no longer held"
    );
    // The append in flight made it: the seal goes through.
    let mut range = holding(4);
    let in_flight = range.try_append(Epoch(1), Offset(4), 2).unwrap();
    assert_eq!(range.seal(Epoch(1), Some(Offset(6))), SealOutcome::Draining);
    range.complete_append(in_flight);
    assert_eq!(
        seal_saved(&mut range, Epoch(1), Some(Offset(6))),
        SealOutcome::Sealed { end: Offset(6) }
    );
}

#[test]
fn seal_below_the_durable_end_serves_nothing_at_or_above_the_end() {
    let mut range = holding(10);
    range.report_confirmed(Offset(4));
    assert_eq!(
        seal_saved(&mut range, Epoch(1), Some(Offset(6))),
        SealOutcome::Sealed { end: Offset(6) }
    );
    assert_eq!(
        range.held_end(),
        Offset(6),
        "reported as held: the range's part only"
    );
    assert_eq!(range.durable_end(), Offset(10));
    assert_eq!(
        range.classify_fetch(Offset(5)),
        FetchBounds::Ready { limit: Offset(6) }
    );
    assert_eq!(
        range.classify_fetch(Offset(6)),
        FetchBounds::EndOfRange { end: Offset(6) }
    );
    let durable = FetchMode {
        durable: true,
        expect_sealed: true,
    };
    assert_eq!(
        range.classify_fetch_as(Offset(5), durable),
        FetchBounds::Ready { limit: Offset(6) }
    );
    assert_eq!(
        range.classify_fetch_as(Offset(7), durable),
        FetchBounds::EndOfRange { end: Offset(6) }
    );
    // After a restart the store still holds [0, 10): the catalog's end bounds it all the same.
    let restarted =
        RangeState::recovered(Epoch(1), Offset(0), Offset(10), Some(Offset(6)), Offset(0));
    assert_eq!(restarted.held_end(), Offset(6));
    assert_eq!(restarted.fetch_limit(), Offset(6));
    assert_eq!(
        restarted.classify_fetch(Offset(8)),
        FetchBounds::EndOfRange { end: Offset(6) }
    );
}

#[test]
fn confirm_only_reports_follow_the_epoch_rules() {
    let mut range = holding(6);
    assert_eq!(range.confirm(Epoch(1), Offset(4)), Ok(Offset(6)));
    assert_eq!(range.fetch_limit(), Offset(4));
    assert_eq!(range.confirm(Epoch(1), Offset(9)), Ok(Offset(6)));
    assert_eq!(
        range.fetch_limit(),
        Offset(6),
        "never above the durable end"
    );
    assert_eq!(
        range.confirm(Epoch(1), Offset(2)),
        Ok(Offset(6)),
        "a lower report changes nothing"
    );
    assert_eq!(range.fetch_limit(), Offset(6));
    assert_eq!(
        range.confirm(Epoch(2), Offset(6)),
        Err(AppendRejection::EpochNotSaved { epoch: Epoch(2) }),
        "a higher epoch is raised first"
    );
    assert_eq!(
        range.begin_epoch_raise(Epoch(2)),
        RaiseStep::Save { epoch: Epoch(2) }
    );
    assert_eq!(
        range.confirm(Epoch(2), Offset(6)),
        Err(AppendRejection::Wait)
    );
    assert!(range.commit_raise(Epoch(2)));
    assert_eq!(range.confirm(Epoch(2), Offset(6)), Ok(Offset(6)));
    assert_eq!(
        range.confirm(Epoch(1), Offset(6)),
        Err(AppendRejection::StaleEpoch { current: Epoch(2) })
    );
    seal_saved(&mut range, Epoch(2), None);
    assert_eq!(
        range.confirm(Epoch(2), Offset(6)),
        Err(AppendRejection::Sealed { end: Offset(6) })
    );
}

#[test]
fn durable_fetch_reads_a_fenced_range_to_its_durable_end_only() {
    let durable = FetchMode {
        durable: true,
        expect_sealed: false,
    };
    let mut range = holding(5);
    range.report_confirmed(Offset(2));
    assert_eq!(
        range.classify_fetch_as(Offset(0), durable),
        FetchBounds::NotFenced,
        "an open range serves durable reads to nobody"
    );
    fence_saved(&mut range, Epoch(1));
    assert_eq!(
        range.classify_fetch_as(Offset(2), durable),
        FetchBounds::Ready { limit: Offset(5) }
    );
    assert_eq!(
        range.classify_fetch(Offset(2)),
        FetchBounds::Wait,
        "a normal read still stops at the confirmed offset"
    );
    assert_eq!(
        range.classify_fetch_as(Offset(5), durable),
        FetchBounds::Wait
    );
    let both = FetchMode {
        durable: true,
        expect_sealed: true,
    };
    assert_eq!(
        range.classify_fetch_as(Offset(5), both),
        FetchBounds::NotHeld { bound: Offset(5) }
    );
    assert_eq!(
        range.classify_fetch_as(Offset(4), both),
        FetchBounds::Ready { limit: Offset(5) }
    );
}

#[test]
fn a_reader_expecting_a_seal_is_told_what_is_not_held_instead_of_waiting() {
    let sealed = FetchMode {
        durable: false,
        expect_sealed: true,
    };
    // Not sealed here: serves up to the confirmed offset, then NotHeld.
    let mut open = holding(6);
    open.report_confirmed(Offset(3));
    assert_eq!(
        open.classify_fetch_as(Offset(1), sealed),
        FetchBounds::Ready { limit: Offset(3) }
    );
    assert_eq!(
        open.classify_fetch_as(Offset(3), sealed),
        FetchBounds::NotHeld { bound: Offset(3) }
    );
    assert_eq!(open.classify_fetch(Offset(3)), FetchBounds::Wait);
    // Sealed here but lagging behind the end.
    let lagging =
        RangeState::recovered(Epoch(1), Offset(0), Offset(4), Some(Offset(10)), Offset(0));
    assert_eq!(
        lagging.classify_fetch_as(Offset(4), sealed),
        FetchBounds::NotHeld { bound: Offset(4) }
    );
    // Sealed and complete: the end is the end, as without the flag.
    let mut complete = holding(4);
    seal_saved(&mut complete, Epoch(1), None);
    assert_eq!(
        complete.classify_fetch_as(Offset(4), sealed),
        FetchBounds::EndOfRange { end: Offset(4) }
    );
    assert_eq!(
        complete.classify_fetch_as(Offset(0), sealed),
        FetchBounds::Ready { limit: Offset(4) }
    );
    assert_eq!(
        complete.classify_fetch_as(
            Offset(0),
            FetchMode {
                durable: true,
                expect_sealed: false
            }
        ),
        FetchBounds::Ready { limit: Offset(4) },
        "a sealed range serves durable reads without a fence"
    );
}

#[test]
fn fencing_a_sealed_range_answers_its_end_and_changes_nothing() {
    let mut range = holding(8);
    seal_saved(&mut range, Epoch(2), Some(Offset(5)));
    assert_eq!(
        range.fence(Epoch(4)),
        FenceOutcome::Fenced {
            end: Some(Offset(5)),
            durable_end: Offset(5),
            epoch: Epoch(2)
        }
    );
    assert!(!range.has_pending_change());
    assert_eq!(range.epoch(), Epoch(2), "a sealed range is not raised");
    assert_eq!(
        range.fence(Epoch(1)),
        FenceOutcome::StaleEpoch { current: Epoch(2) }
    );
    // A fence while a seal drains waits for the seal.
    let mut sealing = holding(2);
    let in_flight = sealing.try_append(Epoch(1), Offset(2), 1).unwrap();
    assert_eq!(sealing.seal(Epoch(1), None), SealOutcome::Draining);
    assert_eq!(sealing.fence(Epoch(1)), FenceOutcome::Wait);
    sealing.complete_append(in_flight);
    assert_eq!(
        seal_saved(&mut sealing, Epoch(1), None),
        SealOutcome::Sealed { end: Offset(3) }
    );
    assert!(matches!(
        sealing.fence(Epoch(1)),
        FenceOutcome::Fenced { end: Some(_), .. }
    ));
}

#[test]
fn a_restarted_replica_is_open_at_the_raised_epoch_and_fenced_again() {
    // The fence's raise is saved, the fenced mark is not.
    let mut range = RangeState::recovered(Epoch(3), Offset(0), Offset(5), None, Offset(0));
    assert!(!range.is_fenced());
    assert_eq!(
        range.try_repair_append(Epoch(3), Offset(5), 1),
        Err(AppendRejection::RepairNotFenced { current: Epoch(3) })
    );
    assert_eq!(
        range.try_append(Epoch(2), Offset(5), 1),
        Err(AppendRejection::StaleEpoch { current: Epoch(3) }),
        "the fenced writer stays fenced by the saved epoch"
    );
    assert!(matches!(range.fence(Epoch(3)), FenceOutcome::Fenced { .. }));
    assert!(range.try_repair_append(Epoch(3), Offset(5), 1).is_ok());
}

#[test]
fn a_seal_refused_after_its_drain_releases_the_held_appends() {
    let mut range = holding(4);
    let in_flight = range.try_append(Epoch(1), Offset(4), 2).unwrap();
    assert_eq!(range.seal(Epoch(1), Some(Offset(5))), SealOutcome::Draining);
    // A held append reports a confirmed offset while the seal drains.
    range.report_confirmed(Offset(6));
    assert_eq!(
        range.try_append(Epoch(1), Offset(6), 1),
        Err(AppendRejection::Wait)
    );
    range.complete_append(in_flight);
    assert_eq!(
        range.seal(Epoch(1), Some(Offset(5))),
        SealOutcome::BelowConfirmed {
            confirmed: Offset(6)
        }
    );
    assert!(
        range.try_append(Epoch(1), Offset(6), 1).is_ok(),
        "the range is open again, not held for ever"
    );
}

/// A small deterministic generator for the random walk below (no dependency needed).
struct Walk(u64);

impl Walk {
    fn next(&mut self, bound: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

/// Random sequences of appends, repairs, completions, failures, fences, raises, seals,
/// confirmations and trims keep every invariant of the module header, and the fencing rules:
/// a fenced range never takes a normal append, a repair is taken only at the fenced or sealed
/// range's own epoch and below its end, nothing is served at or above a sealed end, the end
/// and the epoch never move back.
#[test]
fn random_walks_keep_the_invariants_and_the_fencing_rules() {
    let (mut fences, mut repairs, mut seals) = (0u32, 0u32, 0u32);
    for seed in 1..=40u64 {
        let mut walk = Walk(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut range = RangeState::new(Epoch(1), Offset(0));
        let mut tickets: Vec<AppendTicket> = Vec::new();
        let mut pending_raise: Option<Epoch> = None;
        let mut pending_seal: Option<(Epoch, Offset)> = None;
        let mut sealed_end: Option<Offset> = None;
        for _step in 0..2_000 {
            if range.is_sealed() && walk.next(20) == 0 {
                // The stream moves on: a new range, as the next one a writer creates.
                range = RangeState::new(range.epoch(), range.held_end());
                tickets.clear();
                sealed_end = None;
            }
            let epoch_before = range.epoch();
            // The range's epoch, one below (a fenced writer) or one above (a newer writer).
            let epoch = Epoch((range.epoch().0 + walk.next(3)).saturating_sub(1));
            let base = Offset(range.next().0.saturating_sub(walk.next(3)) + walk.next(3));
            let count = walk.next(4) as u32;
            match walk.next(11) {
                0 | 1 => {
                    let mut probe = range.clone();
                    let result = range.try_append(epoch, base, count);
                    if probe.is_fenced() && !probe.is_sealed() {
                        assert!(result.is_err(), "a fenced range took a normal append");
                    }
                    if let Ok(ticket) = result {
                        assert_eq!(probe.try_append(epoch, base, count), Ok(ticket));
                        tickets.push(ticket);
                    }
                }
                2 | 10 => {
                    let before = range.clone();
                    if let Ok(ticket) = range.try_repair_append(epoch, base, count) {
                        assert!(before.is_fenced() || before.is_sealed());
                        assert_eq!(epoch, before.epoch(), "repair at another epoch");
                        if let Some(end) = before.end() {
                            assert!(base.0 + u64::from(count) <= end.0, "repair beyond the end");
                        }
                        tickets.push(ticket);
                        repairs += 1;
                    }
                }
                3 | 4 if !tickets.is_empty() => {
                    let ticket = tickets.swap_remove(walk.next(tickets.len() as u64) as usize);
                    range.complete_append(ticket);
                }
                5 if !tickets.is_empty() => {
                    let ticket = tickets.swap_remove(walk.next(tickets.len() as u64) as usize);
                    range.fail_append(ticket);
                }
                6 => match range.fence(epoch) {
                    FenceOutcome::Raise { epoch } => pending_raise = Some(epoch),
                    FenceOutcome::Fenced {
                        end, durable_end, ..
                    } => {
                        fences += 1;
                        assert_eq!(end, range.end());
                        assert_eq!(durable_end, range.held_end());
                        assert!(range.in_flight_is_empty() || range.is_sealed());
                    }
                    _ => {}
                },
                7 => {
                    if let RaiseStep::Save { epoch } = range.begin_epoch_raise(epoch) {
                        pending_raise = Some(epoch);
                    }
                }
                8 if walk.next(6) == 0 => {
                    let requested = (walk.next(2) == 0).then(|| {
                        Offset(range.durable_end().0.saturating_sub(walk.next(3)) + walk.next(3))
                    });
                    match range.seal(epoch, requested) {
                        SealOutcome::Save { epoch, end } => {
                            assert!(end <= range.durable_end(), "a seal above the durable end");
                            pending_seal = Some((epoch, end));
                        }
                        SealOutcome::Sealed { end } => assert_eq!(Some(end), sealed_end),
                        _ => {}
                    }
                }
                9 if walk.next(2) == 0 => {
                    let _ = range.confirm(epoch, Offset(walk.next(range.next().0 + 2)));
                }
                _ => {
                    let _ = range.trim(Offset(walk.next(range.held_end().0 + 2)));
                }
            }
            // Settle what is being saved, one way or the other.
            if let Some(raised) = pending_raise.take() {
                if walk.next(4) == 0 {
                    range.abort_raise(raised);
                } else {
                    range.commit_raise(raised);
                }
            }
            if let Some((epoch, end)) = pending_seal.take() {
                if walk.next(4) == 0 {
                    range.abort_seal(epoch, end);
                } else {
                    assert!(range.commit_seal(epoch, end));
                    sealed_end = Some(end);
                    seals += 1;
                }
            }
            assert!(range.start() <= range.confirmed());
            assert!(range.confirmed() <= range.durable_end());
            assert!(range.durable_end() <= range.next());
            assert!(range.held_end() <= range.durable_end());
            assert!(range.epoch() >= epoch_before, "the epoch moved back");
            assert_eq!(range.end(), sealed_end, "the end changed after the seal");
            if let Some(end) = range.end() {
                assert!(range.held_end() <= end);
                assert!(range.fetch_limit() <= end);
            }
            assert!(range.fetch_limit() <= range.held_end());
            for durable in [false, true] {
                for expect_sealed in [false, true] {
                    let mode = FetchMode {
                        durable,
                        expect_sealed,
                    };
                    let offset = Offset(walk.next(range.next().0 + 2));
                    match range.classify_fetch_as(offset, mode) {
                        FetchBounds::Ready { limit } => {
                            assert!(offset < limit && limit <= range.held_end());
                            if !durable {
                                assert!(limit <= range.fetch_limit());
                            }
                        }
                        FetchBounds::NotFenced => {
                            assert!(durable && !range.is_fenced() && !range.is_sealed())
                        }
                        FetchBounds::NotHeld { bound } => {
                            assert!(expect_sealed && offset >= bound)
                        }
                        FetchBounds::Wait => assert!(!expect_sealed),
                        FetchBounds::EndOfRange { end } => assert!(offset >= end),
                        FetchBounds::OutOfRange => assert!(offset < range.start()),
                    }
                }
            }
        }
    }
    // The walk reaches every state it is meant to check.
    assert!(
        fences > 100 && repairs > 100 && seals > 10,
        "{fences} fences, {repairs} repairs, {seals} seals"
    );
}
