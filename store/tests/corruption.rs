//! Recovery against damaged WAL files: a truncated tail, a zeroed tail page, a flipped bit in
//! the middle (before and after the last checkpoint) and a stale recycled segment.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{batch, small_config};
use store::record::record_length;
use store::{Error, RangeIndex, RangeKey, Store, StoreConfig, StreamId};

const SEGMENT: u64 = 1 << 20;

fn segment_file(directory: &Path, position: u64) -> (PathBuf, u64) {
    let start = position - position % SEGMENT;
    (
        directory.join("wal").join(format!("{start:016x}.wal")),
        position - start,
    )
}

/// Appends `count` batches of `len` bytes (10 offsets each) and returns their WAL positions.
fn fill(config: &StoreConfig, range: RangeKey, count: u64, len: usize, clean: bool) -> Vec<u64> {
    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    let mut positions = Vec::new();
    for n in 0..count {
        let result = wal
            .append(range, store::Offset(n * 10), 10, batch(range, n * 10, len))
            .unwrap();
        positions.push(result.position);
    }
    if clean {
        store.shutdown();
    } else {
        store.halt();
    }
    positions
}

fn flip_bit(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x04;
    file.write_all_at(&byte, offset).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn truncated_tail_is_cut_at_the_last_whole_record() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let range = RangeKey::new(StreamId(1), RangeIndex(0));
    let positions = fill(&config, range, 50, 3000, false);
    let last = *positions.last().unwrap();
    let (path, offset) = segment_file(directory.path(), last);
    // The last record is half written: the file ends in its payload.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(offset + 1000).unwrap();
    drop(file);

    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    let report = store.recovery().clone();
    assert_eq!(
        report.cut_tail.as_ref().map(|(at, _)| *at),
        Some(last),
        "{report:?}"
    );
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(490));
    for n in 0..49 {
        assert_eq!(
            wal.read(range, store::Offset(n * 10), 1).unwrap()[0],
            batch(range, n * 10, 3000)
        );
    }
    // The log continues where it was cut, and that is durable too.
    wal.append(range, store::Offset(490), 10, batch(range, 490, 1234))
        .unwrap();
    store.halt();
    let (store, mut wal) = Store::open_sync(config).unwrap();
    assert_eq!(store.recovery().cut_tail, None);
    assert_eq!(
        wal.read(range, store::Offset(495), 1).unwrap()[0],
        batch(range, 490, 1234)
    );
    store.shutdown();
}

#[test]
fn zeroed_tail_page_loses_only_the_records_touching_it() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let range = RangeKey::new(StreamId(2), RangeIndex(0));
    let len = 1500;
    let positions = fill(&config, range, 80, len, false);
    let end = positions.last().unwrap() + record_length(len);
    let page_start = (end - 1) / 4096 * 4096;
    let (path, offset) = segment_file(directory.path(), page_start);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0u8; 4096], offset).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let survivors = positions
        .iter()
        .take_while(|position| **position + record_length(len) <= page_start)
        .count() as u64;
    assert!(survivors > 0 && survivors < 80);

    let (store, mut wal) = Store::open_sync(config).unwrap();
    let cut = store.recovery().cut_tail.clone();
    assert_eq!(cut.map(|(at, _)| at), Some(positions[survivors as usize]));
    assert_eq!(
        wal.index(range).unwrap().next_offset,
        store::Offset(survivors * 10)
    );
    for n in 0..survivors {
        assert_eq!(
            wal.read(range, store::Offset(n * 10), 1).unwrap()[0],
            batch(range, n * 10, len)
        );
    }
    wal.append(
        range,
        store::Offset(survivors * 10),
        10,
        batch(range, 0, 10),
    )
    .unwrap();
    store.shutdown();
}

/// Without synced positions in the log (`sync: never` writes none, nor did format 1) damage
/// followed by valid records far beyond the torn-tail window cannot be placed: the store refuses
/// to open rather than serve or drop acknowledged data.
#[test]
fn flipped_bit_in_the_middle_of_a_log_without_synced_positions_refuses_to_open() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    config.sync = store::SyncMode::Never;
    let range = RangeKey::new(StreamId(3), RangeIndex(0));
    // ~900 KB: far more than one group write after the damaged record.
    let positions = fill(&config, range, 300, 3000, false);
    let (path, offset) = segment_file(directory.path(), positions[10]);
    flip_bit(&path, offset + 48 + 1500);
    for _ in 0..2 {
        let error = Store::open_sync(config.clone())
            .err()
            .expect("open must fail");
        match &error {
            Error::Corrupt { position, detail } => {
                assert_eq!(*position, positions[10], "{detail}");
                assert!(detail.contains("valid record follows"), "{detail}");
            }
            other => panic!("expected corruption, got {other}"),
        }
        assert!(error.to_string().contains("repair this replica"), "{error}");
    }
}

#[test]
fn flipped_bit_before_the_checkpoint_is_reported_on_read_never_served() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let range = RangeKey::new(StreamId(4), RangeIndex(0));
    let positions = fill(&config, range, 50, 3000, true);
    let (path, offset) = segment_file(directory.path(), positions[10]);
    flip_bit(&path, offset + 48 + 7);

    let (store, mut wal) = Store::open_sync(config).unwrap();
    assert!(
        store.recovery().clean,
        "the checkpoint covers the damage: no scan"
    );
    let error = wal.read(range, store::Offset(100), 1).unwrap_err();
    assert!(
        matches!(error, Error::Corrupt { position, .. } if position == positions[10]),
        "{error}"
    );
    // Reads that include the damaged batch fail as a whole; the others are served.
    assert!(wal.read(range, store::Offset(90), 1 << 20).is_err());
    assert_eq!(
        wal.read(range, store::Offset(110), 1).unwrap()[0],
        batch(range, 110, 3000)
    );
    assert_eq!(
        wal.read(range, store::Offset(90), 1).unwrap()[0],
        batch(range, 90, 3000)
    );
    store.shutdown();
}

#[test]
fn stale_records_in_a_recycled_segment_are_never_recovered() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    config.preallocated_segments = 1;
    let old = RangeKey::new(StreamId(5), RangeIndex(0));
    let new = RangeKey::new(StreamId(6), RangeIndex(0));
    let (mut store, mut wal) = Store::open_sync(config.clone()).unwrap();
    // Fill ~3.5 segments with `old`, then retire all of it.
    for n in 0..180 {
        wal.append(old, store::Offset(n * 10), 10, batch(old, n * 10, 20_000))
            .unwrap();
    }
    wal.trim(old, store::Offset(1800)).unwrap();
    store.request_checkpoint().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.stats().segments_reclaimed < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", store.stats());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Write `new` until the log is a little way into a recycled file full of `old` records.
    let mut written = 0u64;
    let recycled_start = loop {
        let durable = store.stats().durable_position;
        let (path, offset) = segment_file(directory.path(), durable);
        let mut probe = vec![0u8; 4096];
        let file = std::fs::File::open(&path).unwrap();
        let tail_page = (offset / 4096 + 2) * 4096;
        file.read_exact_at(&mut probe, tail_page).unwrap();
        // Stale records: bytes that are neither zeros nor the filler of a fresh segment.
        let stale = probe
            .iter()
            .any(|byte| *byte != 0 && *byte != store::SEGMENT_FILL_BYTE);
        if offset > 100_000 && stale {
            break durable - offset;
        }
        wal.append(
            new,
            store::Offset(written * 10),
            10,
            batch(new, written * 10, 5000),
        )
        .unwrap();
        written += 1;
        assert!(written < 2000, "never reached a recycled segment");
    };
    store.halt();

    let (store, mut wal) = Store::open_sync(config).unwrap();
    assert!(store.recovery().tail > recycled_start);
    assert!(store.recovery().tail < recycled_start + SEGMENT / 2);
    assert_eq!(
        wal.index(new).unwrap().next_offset,
        store::Offset(written * 10)
    );
    for n in 0..written {
        assert_eq!(
            wal.read(new, store::Offset(n * 10), 1).unwrap()[0],
            batch(new, n * 10, 5000)
        );
    }
    let old_summary = wal.index(old).unwrap();
    assert_eq!(
        old_summary.batch_count, 0,
        "stale records came back: {old_summary:?}"
    );
    store.shutdown();
}

#[test]
fn recovery_scan_across_many_read_windows() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    config.segment_size_bytes = 32 << 20;
    // Large groups: the tail check after the log's end reaches past the current window.
    config.max_group_bytes = 4 << 20;
    config.read_block_size_bytes = 1 << 20;
    let range = RangeKey::new(StreamId(7), RangeIndex(0));
    // ~20 MiB in records of uneven sizes, so records straddle the scan's 8 MiB windows.
    let sizes = [70_001usize, 3, 250_000 - 48 - 4096, 9_999, 123_456];
    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    let mut positions = Vec::new();
    let mut total = 0usize;
    let mut n = 0u64;
    while total < 20 << 20 {
        let len = sizes[n as usize % sizes.len()];
        positions.push(
            wal.append(range, store::Offset(n), 1, batch(range, n, len))
                .unwrap()
                .position,
        );
        total += len;
        n += 1;
    }
    store.halt();
    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    assert!(!store.recovery().clean);
    assert!(store.recovery().wal_bytes_read >= total as u64);
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(n));
    for offset in 0..n {
        let len = sizes[offset as usize % sizes.len()];
        assert_eq!(
            wal.read(range, store::Offset(offset), 1).unwrap()[0],
            batch(range, offset, len)
        );
    }
    store.halt();
    // Damage a record beyond the first window: found, reported, skipped.
    let victim = positions.iter().position(|p| *p > 9 << 20).unwrap();
    let (path, offset) = segment_file_sized(directory.path(), positions[victim], 32 << 20);
    flip_bit(&path, offset + 48 + 1);
    let (store, mut wal) = Store::open_sync(config).unwrap();
    let damaged = &store.recovery().damaged;
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0].position, positions[victim]);
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(n));
    let error = wal
        .read(range, store::Offset(victim as u64), 1)
        .unwrap_err();
    assert!(
        matches!(error, Error::Corrupt { position, .. } if position == positions[victim]),
        "{error}"
    );
    for offset in [0, victim as u64 - 1, victim as u64 + 1, n - 1] {
        let len = sizes[offset as usize % sizes.len()];
        assert_eq!(
            wal.read(range, store::Offset(offset), 1).unwrap()[0],
            batch(range, offset, len)
        );
    }
    store.shutdown();
}

fn segment_file_sized(directory: &Path, position: u64, segment: u64) -> (PathBuf, u64) {
    let start = position - position % segment;
    (
        directory.join("wal").join(format!("{start:016x}.wal")),
        position - start,
    )
}

/// Damage inside the last `W` bytes of the log (where a torn write could be), in a batch a later
/// group vouches for as synced: reported, kept on disk byte for byte, never served, and every
/// other batch, before and after it, still reads back.
#[test]
fn flipped_bit_in_acknowledged_data_near_the_tail_is_reported_kept_and_skipped() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let range = RangeKey::new(StreamId(8), RangeIndex(0));
    // 60 batches of ~3 KB: the whole log is within the torn-tail window of 256 KiB.
    let positions = fill(&config, range, 60, 3000, false);
    let victim = 40;
    let (path, offset) = segment_file(directory.path(), positions[victim]);
    flip_bit(&path, offset + 48 + 1500);
    let before = std::fs::read(&path).unwrap();

    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    assert!(
        std::fs::read(&path).unwrap() == before,
        "recovery changed the damaged segment's bytes"
    );
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(600));
    let error = wal
        .read(range, store::Offset(victim as u64 * 10 + 3), 1)
        .unwrap_err();
    assert!(
        matches!(error, Error::Corrupt { position, .. } if position == positions[victim]),
        "{error}"
    );
    for n in (0..60).filter(|n| *n != victim as u64) {
        assert_eq!(
            wal.read(range, store::Offset(n * 10), 1).unwrap()[0],
            batch(range, n * 10, 3000),
            "batch {n}"
        );
    }
    let report = store.recovery().clone();
    assert_eq!(report.cut_tail, None, "{report:?}");
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let region = &report.damaged[0];
    assert_eq!(region.position, positions[victim]);
    assert_eq!(region.end, positions[victim] + record_length(3000));
    assert_eq!(region.batches, vec![(range, store::Offset(400), 10)]);
    assert_eq!(store.stats().damaged_regions, 1);
    assert_eq!(store.stats().corrupt_reads, 1);
    // The log goes on after the tail, and a clean restart still refuses the damaged batch.
    wal.append(range, store::Offset(600), 10, batch(range, 600, 77))
        .unwrap();
    store.shutdown();
    let (store, mut wal) = Store::open_sync(config).unwrap();
    assert!(wal.read(range, store::Offset(400), 1).is_err());
    assert_eq!(
        wal.read(range, store::Offset(590), 1 << 20).unwrap(),
        vec![batch(range, 590, 3000), batch(range, 600, 77)]
    );
    store.shutdown();
}

/// A torn tail is still cut: garbage in the last group (nothing after it vouches for it) and a
/// later, fully written group that was in flight with it (it vouches only for what lay before
/// the torn one) are cut and zeroed, and the log continues at the cut.
#[test]
fn torn_tail_past_the_synced_position_is_still_cut() {
    use store::record::{encode, RecordHeader, RecordKind, HEADER_BYTES};
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let range = RangeKey::new(StreamId(9), RangeIndex(0));
    let positions = fill(&config, range, 30, 3000, false);
    let last = *positions.last().unwrap();
    let end = last + record_length(3000);
    let (path, offset) = segment_file(directory.path(), last);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // The last group's write tore: its payload's second half is garbage.
    file.write_all_at(&[0x5Au8; 1500], offset + 48 + 1500)
        .unwrap();
    // A later group in flight with it was written completely; it claims as synced only what
    // was synced when it was submitted: the log up to the torn group's start.
    let later = end.next_multiple_of(4096) + 4096;
    let other = RangeKey::new(StreamId(10), RangeIndex(0));
    let payload = batch(other, 0, 100);
    let mut bytes = vec![0u8; HEADER_BYTES + record_length(100) as usize];
    let segment_start = later - later % SEGMENT;
    encode(
        &mut bytes[..HEADER_BYTES],
        segment_start,
        &RecordHeader::group_start(later, last - HEADER_BYTES as u64),
        &[],
    );
    let append = RecordHeader {
        kind: RecordKind::Append,
        payload_len: 100,
        count: 1,
        position: later + HEADER_BYTES as u64,
        range: other,
        offset: store::Offset(0),
    };
    encode(&mut bytes[HEADER_BYTES..], segment_start, &append, &payload);
    let (_, later_offset) = segment_file(directory.path(), later);
    file.write_all_at(&bytes, later_offset).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    let report = store.recovery().clone();
    assert_eq!(
        report.cut_tail.as_ref().map(|(at, _)| *at),
        Some(last),
        "{report:?}"
    );
    assert!(report.damaged.is_empty(), "{report:?}");
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(290));
    assert!(
        wal.index(other).is_none(),
        "a torn group's companion was recovered"
    );
    let mut probe = vec![1u8; bytes.len()];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut probe, later_offset)
        .unwrap();
    assert!(
        probe.iter().all(|byte| *byte == 0),
        "the torn window was not zeroed"
    );
    wal.append(range, store::Offset(290), 10, batch(range, 290, 10))
        .unwrap();
    store.halt();
    let (store, mut wal) = Store::open_sync(config).unwrap();
    assert_eq!(store.recovery().cut_tail, None);
    assert_eq!(
        wal.read(range, store::Offset(290), 1).unwrap()[0],
        batch(range, 290, 10)
    );
    store.shutdown();
}

/// A power loss near a segment's end: the last group there tore while a group written with it
/// at the next segment's start survived (different files: the device kept one and not the
/// other). Found by the simulated power-loss test (`power_loss.rs`, POWER_LOSS_SEED=7): the
/// store refused to open ("a valid record follows"). The torn tail is cut, its companion in
/// the next segment is not recovered and is zeroed (it lies where the log goes on), and the log
/// continues.
#[test]
fn torn_tail_at_a_segment_end_is_cut_with_its_companion_in_the_next_segment() {
    use store::record::{encode, RecordHeader, RecordKind, HEADER_BYTES};
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let range = RangeKey::new(StreamId(9), RangeIndex(0));
    // About 940 KiB: the last record ends within the torn window of the segment's end.
    let positions = fill(&config, range, 300, 3000, false);
    let last = *positions.last().unwrap();
    assert!(last < SEGMENT && SEGMENT - last < 128 << 10, "{last}");
    let (path, offset) = segment_file(directory.path(), last);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // The last group's write tore: its payload's second half is garbage.
    file.write_all_at(&[0x5Au8; 1500], offset + 48 + 1500)
        .unwrap();
    file.sync_all().unwrap();
    drop(file);
    // The next segment may still be being prepared: then it is published as allocated.
    let next_path = directory
        .path()
        .join("wal")
        .join(format!("{SEGMENT:016x}.wal"));
    if !next_path.exists() {
        let file = std::fs::File::create(&next_path).unwrap();
        file.set_len(SEGMENT).unwrap();
        file.sync_all().unwrap();
    }
    // The group at the next segment's start claims as synced only what was synced when it was
    // submitted: the log up to the torn group's start.
    let other = RangeKey::new(StreamId(10), RangeIndex(0));
    let payload = batch(other, 0, 100);
    let mut bytes = vec![0u8; HEADER_BYTES + record_length(100) as usize];
    encode(
        &mut bytes[..HEADER_BYTES],
        SEGMENT,
        &RecordHeader::group_start(SEGMENT, last - HEADER_BYTES as u64),
        &[],
    );
    let append = RecordHeader {
        kind: RecordKind::Append,
        payload_len: 100,
        count: 1,
        position: SEGMENT + HEADER_BYTES as u64,
        range: other,
        offset: store::Offset(0),
    };
    encode(&mut bytes[HEADER_BYTES..], SEGMENT, &append, &payload);
    let file = OpenOptions::new().write(true).open(&next_path).unwrap();
    file.write_all_at(&bytes, 0).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    let report = store.recovery().clone();
    assert_eq!(
        report.cut_tail.as_ref().map(|(at, _)| *at),
        Some(last),
        "{report:?}"
    );
    assert!(report.damaged.is_empty(), "{report:?}");
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(2990));
    assert!(
        wal.index(other).is_none(),
        "a torn group's companion was recovered"
    );
    let mut probe = vec![1u8; bytes.len()];
    std::fs::File::open(&next_path)
        .unwrap()
        .read_exact_at(&mut probe, 0)
        .unwrap();
    assert!(
        probe.iter().all(|byte| *byte == 0),
        "the torn window was not zeroed in the next segment"
    );
    wal.append(range, store::Offset(2990), 10, batch(range, 2990, 10))
        .unwrap();
    store.halt();
    let (store, mut wal) = Store::open_sync(config).unwrap();
    assert_eq!(store.recovery().cut_tail, None);
    assert!(wal.index(other).is_none());
    assert_eq!(
        wal.read(range, store::Offset(2990), 1).unwrap()[0],
        batch(range, 2990, 10)
    );
    store.shutdown();
}

/// A read of batches whose segment file is gone (here removed behind the store's back; after a
/// power loss with `sync: never` the index can point there too) fails with `Corrupt`, also for a
/// batch spanning two read blocks, and the store goes on. The IO thread used to panic on such a
/// batch: the first block's failed load finished the read and the second looked it up again
/// (found by the simulated power-loss test's `sync: never` cases).
#[test]
fn reads_of_a_missing_segment_fail_as_corrupt_and_the_store_goes_on() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let range = RangeKey::new(StreamId(4), RangeIndex(0));
    let positions = fill(&config, range, 150, 9000, true);
    assert!(positions.iter().any(|position| *position >= SEGMENT));
    let (first_segment, _) = segment_file(directory.path(), 0);
    std::fs::remove_file(&first_segment).unwrap();

    let (store, mut wal) = Store::open_sync(config).unwrap();
    let block = 64 << 10;
    let mut spanning = 0;
    for (n, position) in positions.iter().enumerate() {
        let offset = store::Offset(n as u64 * 10);
        let result = wal.read(range, offset, 1);
        if *position < SEGMENT {
            assert!(
                matches!(result, Err(Error::Corrupt { .. })),
                "batch {n} at {position}: {result:?}"
            );
            let end = position + record_length(9000);
            if position / block != (end - 1) / block {
                spanning += 1;
            }
        } else {
            assert_eq!(result.unwrap()[0], batch(range, n as u64 * 10, 9000));
        }
    }
    assert!(spanning > 0, "no batch spans two read blocks");
    let next = store::Offset(positions.len() as u64 * 10);
    wal.append(range, next, 10, batch(range, next.0, 100))
        .unwrap();
    store.shutdown();
}

/// Records written with a large group size are recovered after the configured size was
/// lowered: recovery uses the largest size the directory ever recorded.
#[test]
fn lowering_the_group_size_loses_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = small_config(directory.path());
    config.segment_size_bytes = 8 << 20;
    config.max_group_bytes = 2 << 20;
    let range = RangeKey::new(StreamId(11), RangeIndex(0));
    let sizes = [1_500_000usize, 300, 900_000, 40_000];
    let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
    for n in 0..24u64 {
        let len = sizes[n as usize % sizes.len()];
        wal.append(range, store::Offset(n), 1, batch(range, n, len))
            .unwrap();
    }
    store.halt();
    config.max_group_bytes = 64 << 10;
    for _ in 0..2 {
        let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
        assert_eq!(store.recovery().cut_tail, None, "{:?}", store.recovery());
        assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(24));
        for n in 0..24u64 {
            let len = sizes[n as usize % sizes.len()];
            assert_eq!(
                wal.read(range, store::Offset(n), 1).unwrap()[0],
                batch(range, n, len),
                "batch {n}"
            );
        }
        store.halt();
    }
    let properties = std::fs::read_to_string(directory.path().join("PROPERTIES")).unwrap();
    assert!(
        properties.contains("max-group-bytes=2097152"),
        "{properties}"
    );
}
