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
    // A lagging replica sealed past its durable end serves what it has and waits for the rest.
    let mut lagging = RangeState::new(Epoch(1), Offset(0));
    seal_saved(&mut lagging, Epoch(1), Some(Offset(10)));
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
