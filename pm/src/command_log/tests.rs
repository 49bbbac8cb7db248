//! Unit tests of the command log against real files in a temporary directory.

use super::*;
use std::fs;

fn small_options() -> LogOptions {
    LogOptions {
        segment_size_bytes: 1024,
        ..LogOptions::default()
    }
}

/// A record's bytes as a function of its index, of varying length.
fn payload(index: u64) -> Vec<u8> {
    let len = 1 + (index * 37 % 90) as usize;
    (0..len)
        .map(|at| (index as usize * 31 + at) as u8)
        .collect()
}

fn segments(directory: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    found.sort();
    found
}

/// Opens a log, appends records 1..=count (payload(index)), waits for them, closes it.
fn write_records(directory: &Path, options: LogOptions, count: u64) {
    let (log, recovered) = CommandLog::open(directory, options).unwrap();
    let start = recovered.records.last().map_or(1, |(index, _)| index + 1);
    for index in start..=count {
        let (assigned, _ticket) = log.append(payload(index)).unwrap();
        assert_eq!(assigned, index);
    }
    log.wait_durable(count).unwrap();
    log.close().unwrap();
}

fn expect_records(recovered: &Recovered, range: std::ops::RangeInclusive<u64>) {
    let expected: Vec<(u64, Vec<u8>)> = range.map(|index| (index, payload(index))).collect();
    assert_eq!(recovered.records.len(), expected.len());
    assert!(recovered.records == expected, "records differ");
}

#[test]
fn records_from_several_threads_round_trip_in_index_order() {
    let directory = tempfile::tempdir().unwrap();
    let (log, recovered) = CommandLog::open(directory.path(), small_options()).unwrap();
    assert!(recovered.records.is_empty() && recovered.snapshot.is_none());
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 200;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let log = &log;
            scope.spawn(move || {
                let mut last = 0;
                for sequence in 0..PER_THREAD {
                    let mut record = thread.to_le_bytes().to_vec();
                    record.extend_from_slice(&sequence.to_le_bytes());
                    let (index, ticket) = log.append(record).unwrap();
                    assert!(index > last, "indexes grow in call order");
                    last = index;
                    if sequence % 3 == 0 {
                        ticket.wait().unwrap();
                        assert!(log.durable_index() >= index);
                    }
                }
                log.wait_durable(last).unwrap();
            });
        }
    });
    let total = THREADS * PER_THREAD;
    assert_eq!(log.durable_index(), total);
    let stats = log.stats();
    assert_eq!(stats.records_written, total);
    assert!(stats.segments_created > 1, "small segments roll: {stats:?}");
    log.close().unwrap();

    let (log, recovered) = CommandLog::open(directory.path(), small_options()).unwrap();
    assert_eq!(recovered.report.torn_tail, None);
    let indexes: Vec<u64> = recovered.records.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, (1..=total).collect::<Vec<_>>());
    // Each thread's records are in the log in the order it appended them.
    let mut next_sequence = [0u64; THREADS as usize];
    for (_, record) in &recovered.records {
        let thread = u64::from_le_bytes(record[..8].try_into().unwrap()) as usize;
        let sequence = u64::from_le_bytes(record[8..16].try_into().unwrap());
        assert_eq!(sequence, next_sequence[thread]);
        next_sequence[thread] += 1;
    }
    assert_eq!(next_sequence, [PER_THREAD; THREADS as usize]);
    // The log continues after the recovered records.
    assert_eq!(log.append(b"next".to_vec()).unwrap().0, total + 1);
}

#[test]
fn tasks_on_the_runtime_await_durability_woken_by_the_log_thread() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    let log = std::rc::Rc::new(log);
    let mut runtime = runtime::Runtime::new().unwrap();
    let durable = runtime.block_on({
        let log = log.clone();
        async move {
            let mut handles = Vec::new();
            for task in 0..64u64 {
                let log = log.clone();
                handles.push(runtime::spawn(async move {
                    let (index, ticket) = log.append(payload(task + 1)).unwrap();
                    ticket.await.unwrap();
                    // Resolved only once the log says so.
                    assert!(log.durable_index() >= index);
                    log.durable(index).await.unwrap();
                    index
                }));
            }
            let mut indexes = Vec::new();
            for handle in handles {
                indexes.push(handle.await);
            }
            indexes
        }
    });
    assert_eq!(durable.len(), 64);
    assert_eq!(log.durable_index(), 64);
    assert!(log.stats().data_syncs < 64, "{:?}", log.stats());
}

#[test]
fn appends_queued_together_share_one_data_sync() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    log.hold_writes(true);
    let tickets: Vec<Ticket> = (1..=64)
        .map(|index| log.append(payload(index)).unwrap().1)
        .collect();
    assert_eq!(log.durable_index(), 0, "nothing is durable while held");
    assert_eq!(log.stats().data_syncs, 0);
    log.hold_writes(false);
    for ticket in tickets {
        ticket.wait().unwrap();
    }
    let stats = log.stats();
    assert_eq!(stats.data_syncs, 1, "{stats:?}");
    assert_eq!(stats.groups, 1);
    assert_eq!(stats.records_written, 64);
    drop(log);
    let (_, recovered) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    expect_records(&recovered, 1..=64);
}

#[test]
fn bounds_refuse_with_busy_and_too_large() {
    let directory = tempfile::tempdir().unwrap();
    let options = LogOptions {
        max_pending_records: 4,
        max_pending_bytes: 1000,
        ..LogOptions::default()
    };
    let (log, _) = CommandLog::open(directory.path(), options).unwrap();
    log.hold_writes(true);
    for index in 1..=4 {
        let _ = log.append(payload(index)).unwrap();
    }
    let busy = log.append(payload(5)).unwrap_err();
    assert!(
        matches!(
            busy,
            LogError::Busy {
                pending_records: 4,
                ..
            }
        ),
        "{busy}"
    );
    assert!(busy.is_retriable());
    let too_large = log.append(vec![0; MAX_RECORD_BYTES + 1]).unwrap_err();
    assert!(matches!(too_large, LogError::TooLarge { .. }));
    log.hold_writes(false);
    log.wait_durable(4).unwrap();
    // Room again; a refused append took no index.
    assert_eq!(log.append(payload(5)).unwrap().0, 5);
    // The byte bound: a record that would pass 1000 pending bytes waits, unless alone.
    log.wait_durable(5).unwrap();
    log.hold_writes(true);
    let _ = log.append(vec![1; 900]).unwrap();
    assert!(matches!(
        log.append(vec![2; 200]),
        Err(LogError::Busy { .. })
    ));
    log.hold_writes(false);
    log.wait_durable(6).unwrap();
    assert!(matches!(
        log.durable(7).wait(),
        Err(LogError::UnknownIndex {
            index: 7,
            next_index: 7
        })
    ));
    // A record of the maximum size is accepted alone.
    let options = LogOptions::default();
    drop(log);
    let (log, _) = CommandLog::open(directory.path(), options).unwrap();
    let (index, ticket) = log.append(vec![3; MAX_RECORD_BYTES]).unwrap();
    ticket.wait().unwrap();
    drop(log);
    let (_, recovered) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    assert_eq!(recovered.records.last().unwrap().0, index);
    assert_eq!(recovered.records.last().unwrap().1.len(), MAX_RECORD_BYTES);
}

#[test]
fn second_open_of_a_directory_is_locked() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    let error = CommandLog::open(directory.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(error, LogError::Locked { .. }), "{error}");
    assert!(error
        .to_string()
        .contains(&format!("pid {}", std::process::id())));
    log.close().unwrap();
    CommandLog::open(directory.path(), LogOptions::default()).unwrap();
}

#[test]
fn appending_after_close_is_closed() {
    let directory = tempfile::tempdir().unwrap();
    let (log, _) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    let (_, ticket) = log.append(b"x".to_vec()).unwrap();
    log.stop();
    // Close wrote what was queued.
    assert_eq!(ticket.wait(), Ok(()));
    assert_eq!(log.append(b"y".to_vec()).unwrap_err(), LogError::Closed);
}

fn append_to_last_segment(directory: &Path, bytes: &[u8]) -> PathBuf {
    let last = segments(directory).pop().unwrap();
    let mut content = fs::read(&last).unwrap();
    content.extend_from_slice(bytes);
    fs::write(&last, content).unwrap();
    last
}

fn torn_tail_is_cut(tail: &[u8]) {
    let directory = tempfile::tempdir().unwrap();
    write_records(directory.path(), LogOptions::default(), 20);
    let segment = append_to_last_segment(directory.path(), tail);
    let good_length = fs::metadata(&segment).unwrap().len() - tail.len() as u64;

    let (log, recovered) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    expect_records(&recovered, 1..=20);
    let torn = recovered
        .report
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!(torn.file, segment);
    assert_eq!(torn.offset, good_length);
    assert_eq!(torn.bytes_cut, tail.len() as u64);
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        good_length,
        "cut on disk"
    );
    // The log continues right after the last good record, and that survives a reopen.
    assert_eq!(log.append(payload(21)).unwrap().0, 21);
    log.close().unwrap();
    let (_, recovered) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    assert_eq!(recovered.report.torn_tail, None);
    expect_records(&recovered, 1..=21);
}

#[test]
fn torn_tail_of_zeros_is_cut() {
    torn_tail_is_cut(&[0; 300]);
}

#[test]
fn torn_tail_of_half_a_record_is_cut() {
    let mut record = Vec::new();
    record::encode_into(&mut record, 21, &payload(21));
    torn_tail_is_cut(&record[..record.len() / 2]);
    torn_tail_is_cut(&record[..7]);
}

#[test]
fn torn_tail_of_garbage_is_cut() {
    let garbage: Vec<u8> = (0..500u32)
        .map(|at| (at.wrapping_mul(2654435761u32) >> 13) as u8)
        .collect();
    torn_tail_is_cut(&garbage);
}

/// A power loss tears the last group write in any order of its sectors: a sector it did not
/// write (zeros from the write's start on) can lie before sectors it did write, whose records
/// are valid. That is a torn tail, cut at the damaged record; the log refused to open before
/// (found by the power-loss test below, `PM_POWER_LOSS_SEED=10012` with
/// `PM_POWER_LOSS_CASES` unset).
#[test]
fn a_torn_last_write_with_valid_records_after_an_unwritten_sector_is_cut() {
    let directory = tempfile::tempdir().unwrap();
    write_records(directory.path(), LogOptions::default(), 40);
    let segment = segments(directory.path()).pop().unwrap();
    let mut content = fs::read(&segment).unwrap();
    // The record holding byte 400 is the first of the torn write: its first sector was not
    // written (zeros from the write's start on, the earlier records before), the sectors
    // after it were.
    let starts: Vec<usize> = (1..=40u64)
        .scan(0usize, |at, index| {
            let start = *at;
            *at += record::encoded_len(payload(index).len());
            Some(start)
        })
        .collect();
    let first_torn = starts.iter().rposition(|&start| start <= 400).unwrap();
    let cut_at = starts[first_torn];
    assert!(content.len() > 1024, "records reach past the second sector");
    content[cut_at..512].fill(0);
    fs::write(&segment, &content).unwrap();

    let (log, recovered) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    expect_records(&recovered, 1..=first_torn as u64);
    let torn = recovered.report.torn_tail.as_ref().expect("a torn tail");
    assert_eq!(torn.offset, cut_at as u64);
    // The log goes on from the cut.
    let (index, _) = log.append(payload(first_torn as u64 + 1)).unwrap();
    assert_eq!(index, first_torn as u64 + 1);
    log.wait_durable(index).unwrap();
    log.close().unwrap();

    // Damage that leaves no unwritten sector before the next valid record is not a torn
    // write: refused, as before.
    let (log, _) = CommandLog::open(directory.path(), LogOptions::default()).unwrap();
    for index in first_torn as u64 + 2..=40 {
        let _ = log.append(payload(index)).unwrap();
    }
    log.wait_durable(40).unwrap();
    log.close().unwrap();
    let mut content = fs::read(&segment).unwrap();
    content[cut_at + 20] ^= 0x40;
    fs::write(&segment, &content).unwrap();
    assert!(matches!(
        CommandLog::open(directory.path(), LogOptions::default()),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn flipped_byte_in_a_middle_record_refuses_to_open() {
    let directory = tempfile::tempdir().unwrap();
    write_records(directory.path(), LogOptions::default(), 20);
    let segment = segments(directory.path()).pop().unwrap();
    let mut content = fs::read(&segment).unwrap();
    // Record 10 starts after records 1..=9.
    let offset: usize = (1..10)
        .map(|index| record::encoded_len(payload(index).len()))
        .sum();
    content[offset + RECORD_HEADER_BYTES + 1] ^= 0x40;
    fs::write(&segment, &content).unwrap();

    let error = CommandLog::open(directory.path(), LogOptions::default()).unwrap_err();
    match &error {
        LogError::Corrupt {
            file,
            offset: at,
            reason,
        } => {
            assert_eq!(file, &segment);
            assert_eq!(*at, offset as u64);
            assert!(reason.contains("index 11"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(error.to_string().contains("restore"), "{error}");
    // Refusing changed nothing on disk.
    assert_eq!(fs::read(&segment).unwrap(), content);
}

#[test]
fn damage_at_the_end_of_a_segment_that_is_not_the_last_refuses_to_open() {
    let directory = tempfile::tempdir().unwrap();
    write_records(directory.path(), small_options(), 100);
    let all = segments(directory.path());
    assert!(all.len() >= 3);
    // Cut the first segment's last byte: a torn-looking record, but durable ones follow.
    let first = &all[0];
    let content = fs::read(first).unwrap();
    fs::write(first, &content[..content.len() - 1]).unwrap();
    let error = CommandLog::open(directory.path(), small_options()).unwrap_err();
    assert!(
        matches!(&error, LogError::Corrupt { file, reason, .. } if file == first && reason.contains("not the last")),
        "{error}"
    );
}

#[test]
fn a_missing_segment_is_a_gap_and_refuses_to_open() {
    let directory = tempfile::tempdir().unwrap();
    write_records(directory.path(), small_options(), 100);
    let all = segments(directory.path());
    fs::remove_file(&all[1]).unwrap();
    let error = CommandLog::open(directory.path(), small_options()).unwrap_err();
    assert!(
        matches!(&error, LogError::Corrupt { file, .. } if file == &all[2]),
        "{error}"
    );
}

#[test]
fn snapshot_deletes_covered_segments_and_reopen_gives_snapshot_and_later_records() {
    let directory = tempfile::tempdir().unwrap();
    write_records(directory.path(), small_options(), 300);
    let before = segments(directory.path());
    assert!(before.len() > 10, "{} segments", before.len());

    let (log, _) = CommandLog::open(directory.path(), small_options()).unwrap();
    assert!(matches!(
        log.install_snapshot(301, b"ahead"),
        Err(LogError::SnapshotOutOfRange { .. })
    ));
    log.install_snapshot(100, b"state up to 100").unwrap();
    log.install_snapshot(200, b"state up to 200").unwrap();
    assert!(matches!(
        log.install_snapshot(150, b"older"),
        Err(LogError::SnapshotOutOfRange { .. })
    ));
    let stats = log.stats();
    assert_eq!(stats.snapshots_installed, 2);
    let after = segments(directory.path());
    assert_eq!(stats.segments_deleted as usize, before.len() - after.len());
    // Exactly the segments wholly at or below 200 are gone: the first left holds 201 or
    // starts at or below it.
    let first_left = after[0].file_name().unwrap().to_str().unwrap()[4..24]
        .parse::<u64>()
        .unwrap();
    assert!(
        first_left <= 201,
        "first segment left starts at {first_left}"
    );
    let second_left = after[1].file_name().unwrap().to_str().unwrap()[4..24]
        .parse::<u64>()
        .unwrap();
    assert!(second_left > 201);
    let snapshot_files: Vec<_> = fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("snapshot-"))
        .collect();
    assert_eq!(snapshot_files, ["snapshot-00000000000000000200"]);
    for index in 301..=320 {
        let _ = log.append(payload(index)).unwrap();
    }
    log.close().unwrap();

    let (_, recovered) = CommandLog::open(directory.path(), small_options()).unwrap();
    assert_eq!(recovered.snapshot, Some((200, b"state up to 200".to_vec())));
    expect_records(&recovered, 201..=320);
}

#[test]
fn an_interrupted_snapshot_install_is_finished_at_open() {
    let directory = tempfile::tempdir().unwrap();
    write_records(directory.path(), small_options(), 100);
    // As if a crash hit after the new snapshot was written and before the truncation, with a
    // temporary of a later snapshot lying around.
    fs::write(
        files::snapshot_path(directory.path(), 10),
        files::encode_snapshot(10, b"old"),
    )
    .unwrap();
    fs::write(
        files::snapshot_path(directory.path(), 60),
        files::encode_snapshot(60, b"new"),
    )
    .unwrap();
    fs::write(
        directory.path().join("snapshot-00000000000000000090.tmp"),
        b"half",
    )
    .unwrap();
    let segment_count = segments(directory.path()).len();

    let (_, recovered) = CommandLog::open(directory.path(), small_options()).unwrap();
    assert_eq!(recovered.snapshot, Some((60, b"new".to_vec())));
    expect_records(&recovered, 61..=100);
    let removed = &recovered.report.removed_files;
    assert!(removed
        .iter()
        .any(|path| path.ends_with("snapshot-00000000000000000010")));
    assert!(removed
        .iter()
        .any(|path| path.ends_with("snapshot-00000000000000000090.tmp")));
    assert!(segments(directory.path()).len() < segment_count);
}

#[test]
fn a_damaged_snapshot_refuses_to_open() {
    let directory = tempfile::tempdir().unwrap();
    write_records(directory.path(), small_options(), 50);
    let (log, _) = CommandLog::open(directory.path(), small_options()).unwrap();
    log.install_snapshot(40, b"state").unwrap();
    drop(log);
    let path = files::snapshot_path(directory.path(), 40);
    let mut bytes = fs::read(&path).unwrap();
    bytes[26] ^= 1;
    fs::write(&path, bytes).unwrap();
    let error = CommandLog::open(directory.path(), small_options()).unwrap_err();
    assert!(
        matches!(&error, LogError::Corrupt { file, .. } if file == &path),
        "{error}"
    );
}

/// What the log held after one seeded power loss.
enum AfterTheLoss {
    /// Every acknowledged record, under the newest acknowledged snapshot or a later one.
    Kept,
    /// An acknowledged record or snapshot is missing.
    Lost(String),
    /// The log refuses to open.
    Refused(String),
}

/// One seed of the power-loss scenario: records are appended in groups (small segments, so
/// segments roll and their names are synced) and snapshots installed (segments deleted) until
/// the power fails after a seeded number of file operations; the disk a power loss could leave
/// is built and the log opened from it. Whatever it recovers must be bit-exact records
/// appended at their indexes, and the log must go on; what is missing is the outcome.
/// `data_sync: false` skips every group's fdatasync (the test of the test). Returns the
/// outcome, the image's summary and how many of its writes were dropped or torn.
fn power_loss_case(seed: u64, data_sync: bool) -> (AfterTheLoss, String, u64) {
    use runtime::durable::recording::{Session, SplitMix64};

    fn snapshot_bytes(last_index: u64) -> Vec<u8> {
        format!("the state through record {last_index}").into_bytes()
    }

    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().join("log");
    fs::create_dir(&root).unwrap();
    let mut random = SplitMix64::new(seed);
    let session = Session::start(&root).unwrap();
    session.freeze_after(1 + random.below(400));
    let (log, _) = CommandLog::open(&root, small_options()).unwrap();
    if !data_sync {
        log.skip_data_syncs();
    }
    let mut acknowledged = 0;
    let mut snapshot_acknowledged = 0;
    let mut snapshot_submitted = 0;
    while !session.is_frozen() {
        let mut last = acknowledged;
        for _ in 0..1 + random.below(8) {
            let (index, _ticket) = log.append(payload(last + 1)).unwrap();
            assert_eq!(index, last + 1);
            last = index;
        }
        log.wait_durable(last).unwrap();
        if session.is_frozen() {
            break;
        }
        acknowledged = last;
        if random.chance(1, 6) {
            snapshot_submitted = acknowledged;
            log.install_snapshot(acknowledged, &snapshot_bytes(acknowledged))
                .unwrap();
            if !session.is_frozen() {
                snapshot_acknowledged = acknowledged;
            }
        }
    }
    log.close().unwrap();
    let image = directory.path().join("image");
    let summary = session.write_image(random.next_u64(), &image).unwrap();
    let torn_or_dropped = summary.dropped_writes + summary.torn_writes;
    let summary = summary.to_string();
    let context = format!("seed {seed} ({summary})");
    let (log, recovered) = match CommandLog::open(&image, small_options()) {
        Ok(opened) => opened,
        Err(error) => {
            return (
                AfterTheLoss::Refused(error.to_string()),
                summary,
                torn_or_dropped,
            )
        }
    };
    let snapshot_index = match &recovered.snapshot {
        Some((index, bytes)) => {
            assert_eq!(*bytes, snapshot_bytes(*index), "{context}");
            *index
        }
        None => 0,
    };
    assert!(
        snapshot_index <= snapshot_submitted.max(snapshot_acknowledged),
        "{context}: snapshot {snapshot_index}, submitted {snapshot_submitted}"
    );
    for (at, (index, bytes)) in recovered.records.iter().enumerate() {
        assert_eq!(*index, snapshot_index + 1 + at as u64, "{context}");
        assert!(
            *bytes == payload(*index),
            "{context}: record {index} differs"
        );
    }
    let last = recovered
        .records
        .last()
        .map_or(snapshot_index, |(index, _)| *index);
    // The log goes on after the loss.
    let (index, _) = log.append(payload(last + 1)).unwrap();
    log.wait_durable(index).unwrap();
    log.close().unwrap();
    let outcome = if snapshot_index < snapshot_acknowledged {
        AfterTheLoss::Lost(format!(
            "snapshot {snapshot_index}, acknowledged {snapshot_acknowledged}"
        ))
    } else if last < acknowledged {
        AfterTheLoss::Lost(format!(
            "acknowledged through {acknowledged}, recovered through {last}"
        ))
    } else {
        AfterTheLoss::Kept
    };
    (outcome, summary, torn_or_dropped)
}

/// Simulated power loss (`runtime::durable::recording`), [`power_loss_case`] per seed: writes
/// no sync covers kept, dropped or torn at 512-byte sectors, unsynced creations, renames and
/// removals possibly lost; the log must open with every record acknowledged before the loss,
/// bit-exact, under the newest acknowledged snapshot or a later one, and nothing after them
/// that was not appended. `PM_POWER_LOSS_SEED=<seed>` reruns one seed.
#[test]
fn every_acknowledged_record_survives_a_power_loss() {
    let seeds = runtime::durable::recording::seeds_from_env("PM_POWER_LOSS", 0..100);
    let mut torn_or_dropped = 0;
    for seed in seeds.clone() {
        let (outcome, summary, hit) = power_loss_case(seed, true);
        torn_or_dropped += hit;
        if let AfterTheLoss::Lost(found) | AfterTheLoss::Refused(found) = outcome {
            panic!(
                "seed {seed}: {found} ({summary}; rerun: PM_POWER_LOSS_SEED={seed} cargo test \
                 -p pm every_acknowledged_record_survives_a_power_loss)"
            );
        }
    }
    // Over a series the losses did hit writes no sync covered.
    if seeds.end - seeds.start >= 20 {
        assert!(torn_or_dropped > 0);
    }
}

/// The test of the test: the same scenario with every group's fdatasync skipped must find
/// acknowledged records lost (or a log that refuses to open) in at least one of a few seeds:
/// the proof that the test above can see a missing data sync.
#[test]
fn appending_without_the_data_sync_loses_acknowledged_records_and_the_test_sees_it() {
    let seeds = 0..20;
    let (mut lost, mut refused) = (0, 0);
    for seed in seeds.clone() {
        match power_loss_case(seed, false).0 {
            AfterTheLoss::Kept => {}
            AfterTheLoss::Lost(why) => {
                println!("seed {seed} lost: {why}");
                lost += 1
            }
            AfterTheLoss::Refused(why) => {
                println!("seed {seed} refused to open: {why}");
                refused += 1
            }
        }
    }
    println!(
        "without the data sync: {} seeds, {lost} lost acknowledged records, {refused} refused \
         to open",
        seeds.end - seeds.start
    );
    assert!(
        lost + refused > 0,
        "without the group's fdatasync no acknowledged record was lost in seeds {seeds:?}: the \
         power-loss test cannot see a missing sync"
    );
}
