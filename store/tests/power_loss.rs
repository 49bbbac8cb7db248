//! Simulated power loss (issue 14): a killed process loses nothing the kernel accepted, so the
//! SIGKILL test cannot tell a synced write from an unsynced one. Here every durable operation
//! of the store (WAL group writes and data syncs on the IO thread's ring, segment preparation,
//! recycling and removal, checkpoints on their own thread, properties, the clean marker,
//! recovery's own repairs) is recorded by `runtime::durable::recording`, and at a seeded moment
//! the power fails: the disk image a power loss could leave (synced writes whole; every other
//! write kept, dropped or torn at 512-byte sectors; unsynced renames and creations possibly
//! lost) is built in a fresh directory, the store recovers from it, and the test checks:
//!
//! * every batch acknowledged before the loss (and everything an earlier recovery served) reads
//!   back bit-exact, and no acknowledged trim or deletion is undone;
//! * nothing else is served as if it were whole: every batch read is exactly one that was
//!   appended at its offset, and no damage is reported.
//!
//! One case (a seed) is a fresh store taking `LOSSES_PER_CASE` losses in a row, each recovery
//! going on from the image the last loss left. Appends come from several ranges with many in
//! flight, trims and deletions make segments reclaimable, so losses fall on groups half written,
//! syncs in flight, segments being prepared, renamed or recycled, checkpoints being written, a
//! clean shutdown and recovery itself. Each loss is classified by what was under way.
//!
//! With `sync: never` the same test must see acknowledged batches lost: the proof that it can
//! see a missing sync.
//!
//! A failing case prints its seed; `POWER_LOSS_SEED=<seed> cargo test -p store --test
//! power_loss` reruns it (the same choices; thread timing may differ). `POWER_LOSS_CASES=<n>`
//! (and `POWER_LOSS_FIRST_SEED=<seed>`) runs a longer series; `POWER_LOSS_VERBOSE=1` prints
//! every case's configuration, losses and violations.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{batch, count_for};
use runtime::durable::recording::{seeds_from_env, Session, SplitMix64};
use store::{
    Offset, PrewriteMode, RangeIndex, RangeKey, Store, StoreConfig, StreamId, SyncMode, SyncStore,
};

const RANGES: u64 = 4;
const IN_FLIGHT: usize = 24;
const LOSSES_PER_CASE: usize = 3;
/// Cases CI runs with `sync: always` (three losses each).
const CASES: u64 = 40;
/// The power fails after a uniformly drawn number of recorded events up to this (about one
/// event per append acknowledged here: a group write, its sync, their completions, for a few
/// appends each, plus segments and checkpoints).
const MAX_EVENTS_BEFORE_LOSS: u64 = 1_200;
/// Appends acknowledged in one incarnation at most before the power fails anyway (a bound in
/// case the events run slower than thought; not reached in practice).
const MAX_ACKS_PER_INCARNATION: u64 = 5_000;

fn config(path: &Path, sync: SyncMode, random: &mut SplitMix64) -> StoreConfig {
    let mut config = StoreConfig::new(path);
    // Small segments, so an incarnation fills, recycles and prepares several; groups of
    // different sizes relative to them.
    config.segment_size_bytes = [64 << 10, 128 << 10, 256 << 10][random.below(3) as usize];
    config.max_group_bytes = [16 << 10, 32 << 10][random.below(2) as usize];
    config.read_block_size_bytes = 16 << 10;
    config.cache_size_bytes = 1 << 20;
    config.worker_queue_capacity = 256;
    config.uring.queue_depth = 64;
    config.checkpoint_interval_ms = 20;
    config.preallocated_segments = 2;
    config.sync = sync;
    config.prewrite = if random.chance(1, 2) {
        PrewriteMode::Idle
    } else {
        PrewriteMode::Always
    };
    // Group writes through the polled ring (forced: this disk has no poll queues) now and then.
    if random.chance(1, 4) {
        config.uring.iopoll = true;
        config.faults.iopoll_without_poll_queues = true;
    }
    config
}

fn range(stream: u64) -> RangeKey {
    RangeKey::new(StreamId(stream), RangeIndex(0))
}

/// What one range must hold after a loss.
#[derive(Debug, Default, Clone)]
struct RangeLedger {
    /// Batches that must read back (base offset -> length) unless trimmed: served by a recovery,
    /// or acknowledged since.
    durable: BTreeMap<u64, usize>,
    /// Batches appended since the last recovery, acknowledged or not: what may be served.
    appended: BTreeMap<u64, usize>,
    /// The range's start may not be below this (an acknowledged trim, or the recovered start).
    start_floor: u64,
    /// Nor above this (the highest trim submitted).
    start_ceiling: u64,
    /// The next offset to append at.
    next: u64,
    /// Counts the range's deletions: an append acknowledged after a deletion it was submitted
    /// before was deleted with the range.
    generation: u64,
    /// A deletion was submitted and not acknowledged before the loss: the range may be gone.
    maybe_deleted: bool,
}

/// A broken promise found after a loss.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Violation {
    AcknowledgedLost(String),
    ServedWrong(String),
    Damage(String),
    RefusedToOpen(String),
}

struct Case {
    sync: SyncMode,
    random: SplitMix64,
    ledgers: Vec<RangeLedger>,
    losses: usize,
    violations: Vec<Violation>,
    log: Vec<String>,
    /// The moments the losses fell on (see `moments`), counted.
    moments: BTreeMap<&'static str, usize>,
    max_batch_bytes: usize,
    /// Appends kept in flight.
    in_flight: usize,
    /// Trims and deletions acknowledged before a loss.
    trims: u64,
    deletes: u64,
}

impl Case {
    fn new(seed: u64, sync: SyncMode) -> Case {
        Case {
            sync,
            random: SplitMix64::new(seed),
            ledgers: vec![RangeLedger::default(); RANGES as usize],
            losses: 0,
            violations: Vec::new(),
            log: Vec::new(),
            moments: BTreeMap::new(),
            max_batch_bytes: 0,
            in_flight: IN_FLIGHT,
            trims: 0,
            deletes: 0,
        }
    }

    /// Runs the case: a fresh store, then `losses` power losses, each followed by a recovery
    /// from the image and the checks.
    fn run(&mut self, scratch: &Path, losses: usize) {
        let mut directory = scratch.join("disk-0");
        std::fs::create_dir_all(&directory).unwrap();
        let config = config(&directory, self.sync, &mut self.random);
        self.max_batch_bytes = config.max_batch_bytes();
        self.in_flight = 1 + self.random.below(IN_FLIGHT as u64) as usize;
        self.log.push(format!(
            "segments of {} bytes, groups of {}, prewrite {:?}, iopoll {}, {} appends in flight",
            config.segment_size_bytes,
            config.max_group_bytes,
            config.prewrite,
            config.uring.iopoll,
            self.in_flight
        ));
        for loss in 0..losses {
            let session = Session::start(&directory).unwrap();
            // One loss in eight falls within the first few events: on recovery itself (its cut
            // of a torn tail, the clean marker's removal, a first segment being prepared).
            let freeze_after = if self.random.chance(1, 8) {
                1 + self.random.below(12)
            } else {
                1 + self.random.below(MAX_EVENTS_BEFORE_LOSS)
            };
            session.freeze_after(freeze_after);
            let mut config = config.clone();
            config.path = directory.clone();
            let opened = Store::open_sync(config);
            let during_recovery = session.is_frozen();
            match opened {
                Ok((store, mut wal)) => {
                    if loss > 0 {
                        self.check_recovered(&store, &mut wal);
                    }
                    self.forget_unacknowledged();
                    // Now and then the store shuts down cleanly (final checkpoint, clean
                    // marker) while the power is still on: the loss may fall on that too.
                    let clean_stop = self.random.chance(1, 4);
                    let budget = if clean_stop {
                        1 + self.random.below(400)
                    } else {
                        MAX_ACKS_PER_INCARNATION
                    };
                    let acks = self.run_until_power_fails(&session, &mut wal, budget);
                    let frozen_before_stop = session.is_frozen();
                    if clean_stop && !frozen_before_stop {
                        store.shutdown();
                        if session.is_frozen() {
                            *self.moments.entry("clean shutdown").or_default() += 1;
                        }
                    } else {
                        store.halt();
                    }
                    self.log.push(format!(
                        "loss {loss}: after {} of {freeze_after} events, {acks} appends \
                         acknowledged{}",
                        session.events(),
                        if clean_stop { ", clean shutdown" } else { "" }
                    ));
                }
                Err(error) => {
                    // The recorder never changes what the store sees: a refusal is the store's.
                    self.violations.push(Violation::RefusedToOpen(format!(
                        "after loss {}: {error}",
                        loss.saturating_sub(1)
                    )));
                    return;
                }
            }
            let image = scratch.join(format!("disk-{}", loss + 1));
            let summary = session.write_image(self.random.next_u64(), &image).unwrap();
            self.log.push(format!(
                "loss {loss}: image {summary}; under way: {:?}",
                summary.at_loss
            ));
            for moment in moments(&summary.at_loss, during_recovery) {
                *self.moments.entry(moment).or_default() += 1;
            }
            drop(session);
            std::fs::remove_dir_all(&directory).unwrap();
            directory = image;
            self.losses += 1;
        }
        let mut config = config.clone();
        config.path = directory.clone();
        match Store::open_sync(config) {
            Ok((store, mut wal)) => {
                self.check_recovered(&store, &mut wal);
                store.shutdown();
            }
            Err(error) => self.violations.push(Violation::RefusedToOpen(format!(
                "after loss {}: {error}",
                losses - 1
            ))),
        }
    }

    /// After a recovery, nothing appended and not acknowledged is owed any more.
    fn forget_unacknowledged(&mut self) {
        for ledger in &mut self.ledgers {
            ledger.appended.clear();
            ledger.start_ceiling = ledger.start_floor;
        }
    }

    /// Appends (and trims) until the power fails or `budget` appends are acknowledged; returns
    /// the appends acknowledged.
    fn run_until_power_fails(
        &mut self,
        session: &Session,
        wal: &mut SyncStore,
        budget: u64,
    ) -> u64 {
        let mut tickets = BTreeMap::new();
        let mut acks = 0u64;
        let started = Instant::now();
        while !session.is_frozen() {
            if acks >= budget {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                session.freeze();
                break;
            }
            while wal.in_flight() < self.in_flight {
                let stream = self.random.below(RANGES);
                let ledger = &mut self.ledgers[stream as usize];
                // Mostly small batches, sometimes one that fills most of a group.
                let largest = if self.random.chance(1, 10) {
                    self.max_batch_bytes
                } else {
                    6_000
                };
                let len = 64 + self.random.below(largest as u64 - 64) as usize;
                let base = ledger.next;
                let generation = ledger.generation;
                let ticket = wal
                    .submit_append(
                        range(stream),
                        Offset(base),
                        count_for(len),
                        batch(range(stream), base, len),
                    )
                    .expect("submit");
                ledger.next += count_for(len) as u64;
                ledger.appended.insert(base, len);
                tickets.insert(ticket, (stream, base, len, generation));
            }
            let Some((ticket, result)) = wal.next_completed(Some(Duration::from_millis(20))) else {
                continue;
            };
            let (stream, base, len, generation) =
                tickets.remove(&ticket).expect("a ticket of ours");
            match result {
                // Acknowledged before the loss only if the power is still on now (the events
                // the acknowledgement followed from are then recorded).
                Ok(_) if !session.is_frozen() => {
                    let ledger = &mut self.ledgers[stream as usize];
                    if ledger.generation == generation {
                        ledger.durable.insert(base, len);
                    }
                    acks += 1;
                    if acks % 20 == 0 {
                        self.trim_one(session, wal);
                    }
                    if acks % 150 == 0 {
                        self.delete_one(session, wal);
                    }
                }
                Ok(_) => {}
                Err(error) => panic!("append {stream}/{base} failed without a fault: {error}"),
            }
        }
        acks
    }

    /// Trims a range to keep its last few batches, so segments become reclaimable.
    fn trim_one(&mut self, session: &Session, wal: &mut SyncStore) {
        let stream = self.random.below(RANGES);
        let ledger = &mut self.ledgers[stream as usize];
        let Some(&to) = ledger.durable.keys().rev().nth(3) else {
            return;
        };
        if to <= ledger.start_ceiling {
            return;
        }
        ledger.start_ceiling = to;
        match wal.trim(range(stream), Offset(to)) {
            Ok(()) if !session.is_frozen() => {
                ledger.start_floor = to;
                self.trims += 1;
            }
            Ok(()) => {}
            Err(error) => panic!("trim {stream} to {to} failed without a fault: {error}"),
        }
    }

    /// Deletes a range; appends to it go on at the next offset, as a new range.
    fn delete_one(&mut self, session: &Session, wal: &mut SyncStore) {
        let stream = self.random.below(RANGES);
        let ledger = &mut self.ledgers[stream as usize];
        // Appends in flight were submitted before the deletion: they are deleted too.
        ledger.generation += 1;
        ledger.maybe_deleted = true;
        match wal.delete(range(stream)) {
            Ok(()) if !session.is_frozen() => {
                self.deletes += 1;
                ledger.maybe_deleted = false;
                ledger.durable.clear();
                ledger.appended.clear();
                ledger.start_floor = ledger.next;
                ledger.start_ceiling = ledger.next;
            }
            Ok(()) => {}
            Err(error) => panic!("delete {stream} failed without a fault: {error}"),
        }
    }

    /// Checks the recovered store against the ledgers; then what it serves is the new floor.
    fn check_recovered(&mut self, store: &Store, wal: &mut SyncStore) {
        let loss = self.losses - 1;
        for region in &store.recovery().damaged {
            self.violations
                .push(Violation::Damage(format!("loss {loss}: {region:?}")));
        }
        for stream in 0..RANGES {
            let key = range(stream);
            let ledger = &mut self.ledgers[stream as usize];
            let maybe_deleted = std::mem::take(&mut ledger.maybe_deleted);
            let Some(summary) = wal.index(key) else {
                if let Some((base, _)) = ledger.durable.range(ledger.start_floor..).next() {
                    if !maybe_deleted {
                        self.violations.push(Violation::AcknowledgedLost(format!(
                            "loss {loss}: range {stream} is gone, batch {base} was acknowledged"
                        )));
                    }
                }
                // Appends go on at the next offset, as a new range.
                ledger.durable.clear();
                ledger.start_floor = ledger.next;
                ledger.start_ceiling = ledger.next;
                continue;
            };
            let start = summary.start_offset.0;
            if start < ledger.start_floor || start > ledger.start_ceiling.max(ledger.start_floor) {
                let what = if start < ledger.start_floor {
                    Violation::AcknowledgedLost(format!(
                        "loss {loss}: range {stream} starts at {start}, below the acknowledged \
                         trim to {}",
                        ledger.start_floor
                    ))
                } else {
                    Violation::ServedWrong(format!(
                        "loss {loss}: range {stream} starts at {start}, above any trim ({})",
                        ledger.start_ceiling
                    ))
                };
                self.violations.push(what);
            }
            let mut served = BTreeMap::new();
            let mut offset = summary.start_offset;
            while offset < summary.next_offset {
                let batches = match wal.read(key, offset, 256 << 10) {
                    Ok(batches) => batches,
                    Err(error) => {
                        self.violations.push(Violation::Damage(format!(
                            "loss {loss}: reading range {stream} at {offset}: {error}"
                        )));
                        break;
                    }
                };
                if batches.is_empty() {
                    self.violations.push(Violation::ServedWrong(format!(
                        "loss {loss}: range {stream} reads nothing at {offset} below its next \
                         offset {}",
                        summary.next_offset
                    )));
                    break;
                }
                for data in batches {
                    let base = offset.0;
                    let expected_len = ledger
                        .durable
                        .get(&base)
                        .or_else(|| ledger.appended.get(&base))
                        .copied();
                    match expected_len {
                        Some(len) if data == batch(key, base, len) => {}
                        Some(len) => self.violations.push(Violation::ServedWrong(format!(
                            "loss {loss}: range {stream} batch {base} is served with {} bytes \
                             that are not the {len} appended",
                            data.len()
                        ))),
                        None => self.violations.push(Violation::ServedWrong(format!(
                            "loss {loss}: range {stream} serves {} bytes at {base}, where \
                             nothing was appended",
                            data.len()
                        ))),
                    }
                    served.insert(base, data.len());
                    offset += count_for(data.len()) as u64;
                }
            }
            for (&base, &len) in ledger.durable.range(start..) {
                if served.get(&base) != Some(&len) {
                    self.violations.push(Violation::AcknowledgedLost(format!(
                        "loss {loss}: range {stream} acknowledged batch {base} ({len} bytes) \
                         is not served"
                    )));
                }
            }
            ledger.durable = served;
            ledger.start_floor = start;
            ledger.start_ceiling = start;
            ledger.next = summary.next_offset.0;
        }
    }
}

/// The moments a loss fell on, named from what was under way (see
/// `runtime::durable::recording::ImageSummary::at_loss`).
fn moments(at_loss: &[String], during_recovery: bool) -> Vec<&'static str> {
    let mut moments = Vec::new();
    let mut note = |moment, found: bool| {
        if found && !moments.contains(&moment) {
            moments.push(moment);
        }
    };
    note("during recovery", during_recovery);
    for what in at_loss {
        let segment = what.ends_with(".wal");
        note(
            "group write in flight",
            what.starts_with("write wal/") && segment,
        );
        note(
            "data sync in flight",
            what.starts_with("sync wal/") && segment,
        );
        note("segment being prepared", what.contains(".wal.tmp"));
        note(
            "segment being recycled or removed",
            (what.starts_with("rename wal/") || what.starts_with("remove wal/"))
                && !what.contains(".tmp"),
        );
        note("checkpoint being written", what.contains("checkpoint"));
    }
    if moments.is_empty() {
        moments.push("nothing under way");
    }
    moments
}

/// Runs `cases` cases from `first_seed`; returns the failing ones with their violations.
fn run_cases(sync: SyncMode, first_seed: u64, cases: u64) -> Outcome {
    let scratch = tempfile::tempdir().unwrap();
    let mut outcome = Outcome::default();
    for seed in first_seed..first_seed + cases {
        let directory: PathBuf = scratch.path().join(format!("case-{seed}"));
        let mut case = Case::new(seed, sync);
        case.run(&directory, LOSSES_PER_CASE);
        outcome.losses += case.losses;
        outcome.trims += case.trims;
        outcome.deletes += case.deletes;
        for (moment, count) in &case.moments {
            *outcome.moments.entry(moment).or_default() += count;
        }
        println!(
            "power loss case seed={seed} sync={sync}: {} losses, {} violations",
            case.losses,
            case.violations.len()
        );
        if std::env::var_os("POWER_LOSS_VERBOSE").is_some() {
            for line in &case.log {
                println!("  {line}");
            }
            for violation in &case.violations {
                println!("  {violation:?}");
            }
        }
        if !case.violations.is_empty() {
            outcome.failures.push((seed, case.violations, case.log));
        }
        let _ = std::fs::remove_dir_all(&directory);
    }
    outcome
}

/// What a series of cases found.
#[derive(Default)]
struct Outcome {
    losses: usize,
    trims: u64,
    deletes: u64,
    moments: BTreeMap<&'static str, usize>,
    /// Failing cases: seed, violations, log.
    failures: Vec<(u64, Vec<Violation>, Vec<String>)>,
}

#[test]
fn sync_always_keeps_every_acknowledged_batch_through_power_losses() {
    let seeds = seeds_from_env("POWER_LOSS", 1..1 + CASES);
    let (first, cases) = (seeds.start, seeds.end - seeds.start);
    let started = Instant::now();
    let Outcome {
        losses,
        trims,
        deletes,
        moments,
        failures,
    } = run_cases(SyncMode::Always, first, cases);
    println!(
        "sync always: {cases} cases, {losses} power losses in {:?} ({trims} trims and {deletes} \
         deletions acknowledged); losses by moment: {moments:?}",
        started.elapsed()
    );
    for (seed, violations, log) in &failures {
        eprintln!("power loss seed {seed} FAILED:");
        for line in log {
            eprintln!("  {line}");
        }
        for violation in violations {
            eprintln!("  {violation:?}");
        }
        eprintln!(
            "  rerun: POWER_LOSS_SEED={seed} cargo test -p store --test power_loss -- \
             sync_always --nocapture"
        );
    }
    assert!(
        failures.is_empty(),
        "power loss broke a promise with seeds {:?} (see above)",
        failures.iter().map(|(seed, ..)| *seed).collect::<Vec<_>>()
    );
    if cases >= CASES {
        assert!(losses >= 100, "only {losses} power losses taken");
        for moment in ["group write in flight", "data sync in flight"] {
            assert!(
                moments.contains_key(moment),
                "no loss fell on: {moment} ({moments:?})"
            );
        }
    }
}

/// The test of the test: without data syncs, acknowledged batches are lost, and the checks
/// above see it: acknowledged batches missing after recovery, or a store that refuses to open
/// (its log has holes it cannot place; it serves none of its acknowledged batches).
#[test]
fn sync_never_loses_acknowledged_batches_and_the_test_sees_it() {
    let seeds = seeds_from_env("POWER_LOSS", 1_000_001..1_000_013);
    let (first, cases) = (seeds.start, seeds.end - seeds.start);
    let Outcome {
        losses, failures, ..
    } = run_cases(SyncMode::Never, first, cases);
    let count = |kind: fn(&Violation) -> bool| {
        failures
            .iter()
            .flat_map(|(_, violations, _)| violations)
            .filter(|violation| kind(violation))
            .count()
    };
    let lost = count(|violation| matches!(violation, Violation::AcknowledgedLost(_)));
    let refused = count(|violation| matches!(violation, Violation::RefusedToOpen(_)));
    println!(
        "sync never: {cases} cases, {losses} power losses: {lost} acknowledged batches or trims \
         found lost, {refused} refusals to open, failing seeds {:?}",
        failures.iter().map(|(seed, ..)| *seed).collect::<Vec<_>>()
    );
    assert!(
        lost + refused > 0,
        "with `sync: never` no acknowledged batch was lost in {losses} power losses: the test \
         cannot see a missing sync"
    );
}
