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

#[test]
fn flipped_bit_in_the_middle_after_the_checkpoint_refuses_to_open() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
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
    // Damage a record beyond the first window: found, refused.
    let victim = positions.iter().position(|p| *p > 9 << 20).unwrap();
    let (path, offset) = segment_file_sized(directory.path(), positions[victim], 32 << 20);
    flip_bit(&path, offset + 48 + 1);
    let error = Store::open_sync(config).err().expect("open must fail");
    assert!(
        matches!(error, Error::Corrupt { position, .. } if position == positions[victim]),
        "{error}"
    );
}

fn segment_file_sized(directory: &Path, position: u64, segment: u64) -> (PathBuf, u64) {
    let start = position - position % segment;
    (
        directory.join("wal").join(format!("{start:016x}.wal")),
        position - start,
    )
}
