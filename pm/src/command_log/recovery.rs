//! Recovery at open: what the directory holds becomes the snapshot and records handed to the
//! state machine, and the writer's starting point.
//!
//! 1. Remove leftover `*.tmp` files (a snapshot write a crash interrupted).
//! 2. Load the newest snapshot; a damaged one refuses to open (it was written atomically, so
//!    damage is not a crash artefact).
//! 3. Delete segments the snapshot wholly covers and older snapshots (a truncation a crash
//!    interrupted).
//! 4. Scan the segments in order. Each segment's name must continue the previous one's last
//!    index; each record must validate and carry the next index. The first segment must start
//!    at or before the snapshot's index + 1, or records are missing.
//! 5. The first record that does not validate ends the log. In the last segment, if no valid
//!    record with a later index starts anywhere after it, it is a torn tail: the file is cut
//!    there and synced, and the cut is reported. Anywhere else it is damage inside durable
//!    data: open fails with `LogError::Corrupt`.

use std::fs;
use std::path::{Path, PathBuf};

use super::files::{self, Listing};
use super::record::{self, Damage, MAX_RECORD_BYTES, RECORD_HEADER_BYTES};
use super::writer::{self, ActiveSegment, Writer};
use super::{LogError, LogOptions, Recovered, RecoveryReport, TornTail};

pub(crate) struct Outcome {
    pub recovered: Recovered,
    pub writer: Writer,
    pub next_index: u64,
    pub snapshot_index: u64,
}

fn read(path: &Path) -> Result<Vec<u8>, LogError> {
    fs::read(path).map_err(|error| LogError::io(format!("reading {}", path.display()), &error))
}

fn sync_directory(directory: &Path) -> Result<(), LogError> {
    runtime::durable::sync_directory(directory).map_err(|error| {
        LogError::io(
            format!("fsync of directory {}", directory.display()),
            &error,
        )
    })
}

pub(crate) fn recover(directory: &Path, options: &LogOptions) -> Result<Outcome, LogError> {
    let Listing {
        mut segments,
        mut snapshots,
        temporaries,
    } = files::list(directory)?;
    let mut report = RecoveryReport::default();

    for path in temporaries {
        writer::remove(&path)?;
        report.removed_files.push(path);
    }

    // The newest snapshot. Older ones are leftovers of an install a crash interrupted.
    let snapshot = match snapshots.last() {
        None => None,
        Some((index, path)) => {
            let bytes = read(path)?;
            let payload = files::decode_snapshot(&bytes, *index).map_err(|(offset, reason)| {
                LogError::Corrupt {
                    file: path.clone(),
                    offset,
                    reason,
                }
            })?;
            report.bytes_read += bytes.len() as u64;
            Some((*index, payload.to_vec()))
        }
    };
    let snapshot_index = snapshot.as_ref().map_or(0, |(index, _)| *index);
    while snapshots.len() >= 2 {
        let (_, path) = snapshots.remove(0);
        writer::remove(&path)?;
        report.removed_files.push(path);
    }
    while segments.len() >= 2 && segments[1].0 <= snapshot_index + 1 {
        let (_, path) = segments.remove(0);
        writer::remove(&path)?;
        report.removed_files.push(path);
    }
    if !report.removed_files.is_empty() {
        sync_directory(directory)?;
    }
    if let Some((first_index, path)) = segments.first() {
        if *first_index > snapshot_index + 1 {
            return Err(LogError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: format!(
                    "the first segment starts at index {first_index} but the snapshot covers \
                     only up to {snapshot_index}: records {} to {} are missing",
                    snapshot_index + 1,
                    first_index - 1
                ),
            });
        }
    }

    let mut records = Vec::new();
    // The index the next record must carry.
    let mut expected = segments
        .first()
        .map_or(snapshot_index + 1, |(first, _)| *first);
    let mut active = None;
    let segment_count = segments.len();
    for (position, (first_index, path)) in segments.iter().enumerate() {
        let is_last = position + 1 == segment_count;
        // A log whose records all lie below the snapshot may continue at the snapshot's index + 1.
        let restarts_after_snapshot =
            expected <= snapshot_index + 1 && *first_index == snapshot_index + 1;
        if *first_index != expected && !restarts_after_snapshot {
            return Err(LogError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: format!(
                    "the segment is named for index {first_index} but the log before it ends \
                     at index {}",
                    expected - 1
                ),
            });
        }
        expected = *first_index;
        let bytes = read(path)?;
        report.bytes_read += bytes.len() as u64;
        report.segments_scanned += 1;
        let mut offset = 0usize;
        let mut damage: Option<String> = None;
        while offset < bytes.len() {
            match record::decode(&bytes[offset..]) {
                Ok(record) if record.index == expected => {
                    if record.index > snapshot_index {
                        records.push((record.index, record.payload.to_vec()));
                    }
                    expected += 1;
                    offset += record.encoded_len();
                }
                Ok(record) => {
                    // A record that validates is not a torn write, whatever its place.
                    return Err(LogError::Corrupt {
                        file: path.clone(),
                        offset: offset as u64,
                        reason: format!(
                            "a valid record with index {} where index {expected} was expected",
                            record.index
                        ),
                    });
                }
                Err(found) => {
                    damage = Some(describe(&bytes[offset..], found));
                    break;
                }
            }
        }
        let Some(reason) = damage else {
            if is_last {
                active = Some((path.clone(), bytes.len() as u64));
            }
            continue;
        };
        if !is_last {
            return Err(LogError::Corrupt {
                file: path.clone(),
                offset: offset as u64,
                reason: format!(
                    "{reason}, in a segment that is not the last one, so durable records \
                     follow it"
                ),
            });
        }
        if let Some((later_offset, later_index)) =
            record::find_valid_record_after(&bytes, offset + 1, expected - 1)
        {
            // The last group is one write, and a power loss may keep any subset of its sectors:
            // valid records of that very write can follow its damage, and a sector it did not
            // write holds what was there before: zeros from the write's start on (the log only
            // appends past its synced end, and a cut truncates). So the damage is a torn tail
            // only if such a sector lies between it and the next valid record, and one group
            // write can span it to the end of the valid records; anything else is damage
            // inside durable records.
            let valid_end = end_of_later_records(&bytes, later_offset, later_index);
            let within_one_write = (valid_end - offset) as u64 <= max_write_bytes(options);
            if !within_one_write || !has_unwritten_sector(&bytes, offset, later_offset) {
                return Err(LogError::Corrupt {
                    file: path.clone(),
                    offset: offset as u64,
                    reason: format!(
                        "{reason}, yet a valid record with index {later_index} follows at byte \
                         {later_offset}: the damage is inside durable records, not a torn tail \
                         (a torn write leaves sectors zeroed from the damage on, within one group \
                         write of the end of the valid records at byte {valid_end})"
                    ),
                });
            }
        }
        cut(path, offset as u64)?;
        log::warn!(
            "command log: cut a torn tail of {} bytes at byte {offset} of {} ({reason}); \
             every record up to index {} is kept",
            bytes.len() - offset,
            path.display(),
            expected - 1
        );
        report.torn_tail = Some(TornTail {
            file: path.clone(),
            offset: offset as u64,
            bytes_cut: (bytes.len() - offset) as u64,
            reason,
        });
        active = Some((path.clone(), offset as u64));
    }

    let next_index = expected.max(snapshot_index + 1);
    // Continue the last segment only if the next record continues it.
    let active = match active {
        Some((path, bytes)) if expected == next_index => {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|error| LogError::io(format!("opening {}", path.display()), &error))?;
            Some(ActiveSegment { file, path, bytes })
        }
        _ => None,
    };
    report.records_recovered = records.len() as u64;
    report.snapshot_index = snapshot.as_ref().map(|(index, _)| *index);
    debug_assert!(records.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1));
    debug_assert!(records
        .first()
        .is_none_or(|(index, _)| *index == snapshot_index + 1));
    Ok(Outcome {
        recovered: Recovered {
            snapshot,
            records,
            report,
        },
        writer: Writer {
            directory: directory.to_path_buf(),
            segment_size_bytes: options.segment_size_bytes,
            segments,
            active,
            snapshots,
        },
        next_index,
        snapshot_index,
    })
}

/// The most bytes one group write holds: the pending bounds (a single record larger than
/// `max_pending_bytes` is accepted into an empty queue) with a header per record.
fn max_write_bytes(options: &LogOptions) -> u64 {
    let payload = options.max_pending_bytes.max(MAX_RECORD_BYTES) as u64;
    payload + options.max_pending_records as u64 * RECORD_HEADER_BYTES as u64
}

/// Sector size of the devices a torn write is cut at.
const SECTOR_BYTES: usize = 512;

/// True when a sector (512 bytes at a file offset multiple of 512) that ends at or before
/// `to` holds only zeros from `from` (or its start, if later) to its end: what a torn write
/// starting at or before `from` leaves of a sector the device did not write (the bytes before
/// the write's start are the earlier, durable records; the rest was never written).
fn has_unwritten_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    let mut sector = from - from % SECTOR_BYTES;
    while sector + SECTOR_BYTES <= to.min(bytes.len()) {
        let start = sector.max(from);
        if bytes[start..sector + SECTOR_BYTES]
            .iter()
            .all(|&byte| byte == 0)
        {
            return true;
        }
        sector += SECTOR_BYTES;
    }
    false
}

/// Where the valid records found after damage end: from the one at `offset` (index `index`),
/// following records and looking past further damage for later valid ones.
fn end_of_later_records(bytes: &[u8], mut offset: usize, mut index: u64) -> usize {
    let mut end = offset;
    loop {
        while let Ok(record) = record::decode(&bytes[offset..]) {
            if record.index != index {
                break;
            }
            offset += record.encoded_len();
            end = offset;
            index += 1;
        }
        match record::find_valid_record_after(bytes, offset + 1, index - 1) {
            Some((later_offset, later_index)) => {
                offset = later_offset;
                index = later_index;
            }
            None => return end,
        }
    }
}

/// What was found where a record should have been, for the report and the error.
fn describe(bytes: &[u8], damage: Damage) -> String {
    let blank = bytes.iter().all(|&byte| byte == 0);
    if blank {
        format!("{} zero bytes where a record should start", bytes.len())
    } else {
        format!("{damage}")
    }
}

/// Truncates `path` to `length` and makes the new size durable.
fn cut(path: &PathBuf, length: u64) -> Result<(), LogError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|error| LogError::io(format!("opening {}", path.display()), &error))?;
    runtime::durable::set_len(&file, length)
        .map_err(|error| LogError::io(format!("truncating {}", path.display()), &error))?;
    runtime::durable::sync_all(&file)
        .map_err(|error| LogError::io(format!("fsync of {}", path.display()), &error))
}
