//! Recovery at open: load the checkpoint, then replay the WAL written after it.
//!
//! A clean shutdown leaves a marker naming its final checkpoint; then no WAL byte is read. After
//! a crash the scan starts at the checkpoint's position and verifies every record's checksum.
//! At a record that does not verify, recovery looks ahead (as far as the groups in flight and
//! staged when that record became durable could reach) for a group start record whose synced
//! position lies beyond it:
//! * found: the damaged record was durable, hence acknowledged: it is **corruption**. The bytes
//!   are kept, the batches there stay indexed (named by the record's own header when its header
//!   checksum holds, else inferred from the gaps they leave in their ranges) so their reads fail
//!   with `Error::Corrupt`, the region is reported and logged, and the scan goes on at the next
//!   record (after the damaged one, or the next valid record found at 8-byte steps).
//! * not found: only the groups not yet durable at the crash can be torn. If nothing valid
//!   follows beyond them (at most `2 x max_group_bytes` plus their pages) it is a **torn tail**:
//!   cut, logged, and the bytes after it zeroed so leftovers of the torn groups can never be
//!   mistaken for records later. A valid record further on without any claim (a format 1 log,
//!   or `sync: never`) means damage in the middle of the log: the store refuses to open.
//!
//! Sizes come from the largest `max_group_bytes` the directory ever recorded (PROPERTIES), not
//! only from the configuration, so lowering it never turns stored records into torn ones.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::checkpoint;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::index::{BatchIndex, Index, IndexEntry};
use crate::layout::{open_direct, read_at, segment_path, write_at};
use crate::record::{self, Invalid, RecordHeader, RecordKind, HEADER_BYTES, RECORD_ALIGN};
use crate::{Offset, RangeKey, WalPosition, PAGE_BYTES};
use runtime::buf::AlignedBuf;

/// What recovery did, for logs, stats and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous shutdown was clean: the checkpoint was used and no WAL was read.
    pub clean: bool,
    /// WAL bytes read from disk during recovery.
    pub wal_bytes_read: u64,
    /// Records replayed after the checkpoint.
    pub records_replayed: u64,
    /// Where the scan started.
    pub scanned_from: WalPosition,
    /// End of the recovered log: new appends go here.
    pub tail: WalPosition,
    /// A torn tail that was cut: its position and what was found there.
    pub cut_tail: Option<(WalPosition, String)>,
    /// Damaged regions below a synced position: kept on disk, skipped, never served.
    pub damaged: Vec<DamagedRegion>,
    /// Wall time of recovery.
    pub duration: Duration,
}

/// Bytes of acknowledged data that do not verify, found by recovery below a position the log
/// itself recorded as synced. Kept on disk as they are; reads of the batches there fail with
/// `Error::Corrupt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRegion {
    /// First position that does not verify.
    pub position: WalPosition,
    /// Where valid records resume.
    pub end: WalPosition,
    /// Segment file holding it, and the byte offset of `position` in that file.
    pub segment_file: String,
    pub file_offset: u64,
    /// A later group start record says the log was synced up to here (past `position`).
    pub synced_claim: WalPosition,
    /// The damaged record's header verified on its own: `batches` names exactly what lies
    /// here. Otherwise batches are inferred from the gaps they leave in their ranges, and a
    /// trim or delete in the region, or a range's last batch, cannot be named.
    pub header_intact: bool,
    /// Batches in the region (range, base offset, offset count).
    pub batches: Vec<(RangeKey, Offset, u32)>,
}

pub(crate) struct Recovered {
    pub index: Index,
    pub tail: WalPosition,
    /// Bytes of the WAL page holding `tail`, up to `tail`.
    pub tail_page: Vec<u8>,
    pub segments: Vec<u64>,
    pub checkpoint_sequence: u64,
    pub checkpoint_position: WalPosition,
    pub report: RecoveryReport,
}

/// A chunk read by the prefetch thread: the buffer, where it was read from, and the result.
type Prefetched = (AlignedBuf, u64, std::io::Result<usize>);

/// Reads one segment through an aligned window, refilling it as the scan moves. While the scan
/// parses one window, a helper thread reads the next one, so the disk and the checksums work
/// at the same time.
struct SegmentReader {
    fd: OwnedFd,
    start: WalPosition,
    end: WalPosition,
    /// `carry` bytes of room at the front of every buffer, then `window` bytes of data: a
    /// record cut by the end of one window is copied in front of the next.
    carry: usize,
    window: usize,
    buffer: AlignedBuf,
    /// Data of the window starts at `buffer[data_offset]` and sits at `buffer_position`.
    data_offset: usize,
    buffer_position: WalPosition,
    buffer_len: usize,
    bytes_read: u64,
    spare: Option<AlignedBuf>,
    requests: Option<std::sync::mpsc::Sender<(AlignedBuf, u64, usize)>>,
    results: Option<std::sync::mpsc::Receiver<Prefetched>>,
    /// File offset of the chunk being prefetched.
    pending: Option<u64>,
}

impl SegmentReader {
    fn open(wal_directory: &Path, start: WalPosition, config: &StoreConfig) -> Result<Self> {
        let path = segment_path(wal_directory, start);
        let fd = open_direct(&path, false)
            .map_err(|error| Error::io(format!("opening {}", path.display()), &error))?;
        let carry = config.max_group_bytes + 2 * PAGE_BYTES;
        let window = (8usize << 20)
            .max(carry)
            .min(config.segment_size_bytes as usize);
        let (requests, results) = match fd.try_clone() {
            Ok(helper_fd) => {
                let (request_sender, request_receiver) =
                    std::sync::mpsc::channel::<(AlignedBuf, u64, usize)>();
                let (result_sender, result_receiver) = std::sync::mpsc::channel::<Prefetched>();
                let spawned = std::thread::Builder::new()
                    .name("store-recovery".to_string())
                    .spawn(move || {
                        while let Ok((mut buffer, offset, len)) = request_receiver.recv() {
                            let result = read_at(
                                helper_fd.as_raw_fd(),
                                &mut buffer[carry..carry + len],
                                offset,
                            );
                            if result_sender.send((buffer, offset, result)).is_err() {
                                return;
                            }
                        }
                    });
                match spawned {
                    Ok(_) => (Some(request_sender), Some(result_receiver)),
                    Err(_) => (None, None),
                }
            }
            Err(_) => (None, None),
        };
        Ok(SegmentReader {
            fd,
            start,
            end: start + config.segment_size_bytes,
            carry,
            window,
            buffer: AlignedBuf::zeroed(carry + window),
            data_offset: carry,
            buffer_position: start,
            buffer_len: 0,
            bytes_read: 0,
            spare: Some(AlignedBuf::zeroed(carry + window)),
            requests,
            results,
            pending: None,
        })
    }

    /// Starts reading the window that follows the current one.
    fn prefetch_next(&mut self) {
        let next = self.buffer_position + self.buffer_len as u64;
        if next >= self.end || self.pending.is_some() || next % PAGE_BYTES as u64 != 0 {
            return;
        }
        let (Some(requests), Some(buffer)) = (self.requests.as_ref(), self.spare.take()) else {
            return;
        };
        let len = (self.end - next).min(self.window as u64) as usize;
        let offset = next - self.start;
        match requests.send((buffer, offset, len)) {
            Ok(()) => self.pending = Some(offset),
            Err(error) => self.spare = Some(error.0 .0),
        }
    }

    /// Waits for the prefetched chunk, if any.
    fn take_prefetched(&mut self) -> Option<Prefetched> {
        self.pending.take()?;
        self.results.as_ref()?.recv().ok()
    }

    /// Makes `[position, position + len)` available; returns false if the segment ends first.
    fn ensure(&mut self, position: WalPosition, len: usize) -> Result<bool> {
        if position + len as u64 > self.end {
            return Ok(false);
        }
        let buffer_end = self.buffer_position + self.buffer_len as u64;
        if position >= self.buffer_position && position + len as u64 <= buffer_end {
            return Ok(true);
        }
        let page_start = position - position % PAGE_BYTES as u64;
        let carried = buffer_end.saturating_sub(page_start) as usize;
        let sequential = self.pending == Some(buffer_end - self.start)
            && page_start >= self.buffer_position
            && page_start <= buffer_end
            && carried <= self.carry;
        if let Some((mut next, offset, result)) = self.take_prefetched() {
            if sequential {
                let got = result
                    .map_err(|error| Error::io(format!("reading WAL at {buffer_end}"), &error))?;
                self.bytes_read += got as u64;
                // Move the start of the cut record in front of the new data.
                let from = self.data_offset + (page_start - self.buffer_position) as usize;
                next[self.carry - carried..self.carry]
                    .copy_from_slice(&self.buffer[from..from + carried]);
                debug_assert_eq!(offset, buffer_end - self.start);
                let old = std::mem::replace(&mut self.buffer, next);
                self.spare = Some(old);
                self.data_offset = self.carry - carried;
                self.buffer_position = page_start;
                self.buffer_len = carried + got;
                self.prefetch_next();
                return Ok(position + len as u64 <= self.buffer_position + self.buffer_len as u64);
            }
            self.spare = Some(next);
        }
        // Random access (or no helper thread): read synchronously.
        let want = (self.end - page_start).min(self.window as u64) as usize;
        let file_offset = page_start - self.start;
        let carry = self.carry;
        let got = read_at(
            self.fd.as_raw_fd(),
            &mut self.buffer[carry..carry + want],
            file_offset,
        )
        .map_err(|error| Error::io(format!("reading WAL at {page_start}"), &error))?;
        self.bytes_read += got as u64;
        self.data_offset = carry;
        self.buffer_position = page_start;
        self.buffer_len = got;
        if got == want {
            self.prefetch_next();
        }
        Ok(position + len as u64 <= page_start + got as u64)
    }

    fn bytes(&self, position: WalPosition, len: usize) -> &[u8] {
        let at = self.data_offset + (position - self.buffer_position) as usize;
        &self.buffer[at..at + len]
    }

    /// The record at `position`, verified.
    fn record_at(
        &mut self,
        position: WalPosition,
    ) -> Result<std::result::Result<RecordHeader, Invalid>> {
        if !self.ensure(position, HEADER_BYTES)? {
            return Ok(Err(Invalid::Truncated));
        }
        let header = self.bytes(position, HEADER_BYTES);
        let payload_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let length = HEADER_BYTES + payload_len as usize;
        if header[8] != RecordKind::Padding as u8 && position + length as u64 > self.end {
            return Ok(Err(Invalid::BadHeader));
        }
        if length > self.carry.min(self.window) - PAGE_BYTES || !self.ensure(position, length)? {
            return Ok(Err(Invalid::Truncated));
        }
        Ok(record::decode(
            self.bytes(position, length),
            self.start,
            self.end,
            position,
        ))
    }

    /// The header at `position` if it verifies on its own (its payload may be damaged).
    fn intact_header(&mut self, position: WalPosition) -> Result<Option<RecordHeader>> {
        if !self.ensure(position, HEADER_BYTES)? {
            return Ok(None);
        }
        Ok(record::decode_header(
            self.bytes(position, HEADER_BYTES),
            self.start,
            self.end,
            position,
        ))
    }

    /// Looks through `[from, to)` for a group start record claiming a synced position past
    /// `damaged`, following valid records and stepping 8 bytes at a time elsewhere.
    fn find_synced_claim(
        &mut self,
        damaged: WalPosition,
        from: WalPosition,
        to: WalPosition,
    ) -> Result<ClaimSearch> {
        let mut search = ClaimSearch::default();
        let mut position = from.next_multiple_of(RECORD_ALIGN);
        while position + HEADER_BYTES as u64 <= to.min(self.end) {
            if !self.ensure(position, HEADER_BYTES)? {
                break;
            }
            if record::names_position(self.bytes(position, HEADER_BYTES), position) {
                if let Ok(header) = self.record_at(position)? {
                    search.first_valid.get_or_insert(position);
                    if let Some(claim) = header.synced_claim().filter(|claim| *claim > damaged) {
                        search.claim = Some(claim);
                        return Ok(search);
                    }
                    if header.kind == RecordKind::Padding {
                        break;
                    }
                    position += record::record_length(header.payload_len as usize);
                    continue;
                }
            }
            position += RECORD_ALIGN;
        }
        Ok(search)
    }

    /// First position in `[from, to)` holding a valid record, if any.
    fn find_valid_record(
        &mut self,
        from: WalPosition,
        to: WalPosition,
    ) -> Result<Option<WalPosition>> {
        let mut position = from.next_multiple_of(RECORD_ALIGN);
        while position + HEADER_BYTES as u64 <= to {
            if !self.ensure(position, HEADER_BYTES)? {
                return Ok(None);
            }
            if record::names_position(self.bytes(position, HEADER_BYTES), position)
                && self.record_at(position)?.is_ok()
            {
                return Ok(Some(position));
            }
            position += RECORD_ALIGN;
        }
        Ok(None)
    }
}

/// What a look past damaged bytes found.
#[derive(Debug, Default)]
struct ClaimSearch {
    /// The first valid record after the damage, in the segment searched.
    first_valid: Option<WalPosition>,
    /// A synced position past the damage that a later group start record claims.
    claim: Option<WalPosition>,
}

/// How far past a damaged record a group submitted after it became durable can start: the
/// record itself (one group at most), the groups in flight then (the torn window) and the
/// group being staged meanwhile.
pub(crate) fn claim_reach_bytes(config: &StoreConfig) -> u64 {
    torn_window_bytes(config) + 2 * config.max_group_bytes as u64 + 2 * PAGE_BYTES as u64
}

/// How far past the first bad record a crash can have left written bytes: the groups that may
/// be in flight together, each up to `max_group_bytes` plus the pages it rewrites or pads.
pub(crate) fn torn_window_bytes(config: &StoreConfig) -> u64 {
    let groups = crate::io_thread::MAX_GROUPS_IN_FLIGHT as u64;
    crate::io_thread::MAX_BYTES_IN_FLIGHT_GROUPS as u64 * config.max_group_bytes as u64
        + groups * 2 * PAGE_BYTES as u64
}

fn apply(index: &mut Index, header: &RecordHeader, damaged: &mut [DamagedRegion]) -> Result<()> {
    match header.kind {
        RecordKind::Append => {
            let range = index
                .entry(header.range)
                .or_insert_with(|| BatchIndex::new(header.offset));
            let expected = range.next_offset();
            let last_position = range.entries().back().map(|entry| entry.position);
            // A gap in the range's offsets right after a damaged region whose headers are
            // unreadable: the missing batches were there. They stay indexed, pointing at the
            // damage, so reading them fails as corrupt instead of the offsets being reused.
            let hole = damaged.iter_mut().rev().find(|region| {
                !region.header_intact
                    && region.end <= header.position
                    && last_position.is_some_and(|last| last < region.position)
            });
            if let (Some(region), Some(_)) = (hole, last_position) {
                if header.offset > expected && header.offset.0 - expected.0 <= u32::MAX as u64 {
                    let count = (header.offset.0 - expected.0) as u32;
                    range.push(IndexEntry {
                        base_offset: expected,
                        position: region.position,
                        payload_len: 0,
                        count,
                    });
                    region.batches.push((header.range, expected, count));
                }
            }
            let expected = range.next_offset();
            if !range.entries().is_empty() && expected != header.offset {
                return Err(Error::Corrupt {
                    position: header.position,
                    detail: format!(
                        "batch of stream {} range {} starts at offset {} but the range ends at \
                         {expected}",
                        header.range.stream_id, header.range.range_index, header.offset
                    ),
                });
            }
            range.push(IndexEntry {
                base_offset: header.offset,
                position: header.position,
                payload_len: header.payload_len,
                count: header.count,
            });
        }
        RecordKind::Trim => {
            index
                .entry(header.range)
                .or_insert_with(|| BatchIndex::new(header.offset))
                .trim(header.offset);
        }
        RecordKind::Delete => {
            index.remove(&header.range);
        }
        RecordKind::Padding | RecordKind::PagePadding | RecordKind::GroupStart => {}
    }
    Ok(())
}

/// Records the damaged record at `position` (below the synced position `claim`) and returns
/// where the scan goes on: after the record when its header is intact (its batch stays indexed
/// so reads of it fail as corrupt; a trim or delete is applied), else at the next valid record.
fn skip_damage(
    reader: &mut SegmentReader,
    index: &mut Index,
    position: WalPosition,
    claim: WalPosition,
    first_valid: Option<WalPosition>,
    damaged: &mut Vec<DamagedRegion>,
) -> Result<WalPosition> {
    let header = reader.intact_header(position)?;
    let resume = match header {
        Some(header) if header.kind == RecordKind::Padding => reader.end,
        Some(header) => position + record::record_length(header.payload_len as usize),
        None => first_valid.unwrap_or(reader.end),
    };
    let header_intact = header.is_some();
    let continues = damaged
        .last()
        .is_some_and(|last| last.end == position && last.header_intact == header_intact);
    if !continues {
        damaged.push(DamagedRegion {
            position,
            end: resume,
            segment_file: crate::layout::segment_name(reader.start),
            file_offset: position - reader.start,
            synced_claim: claim,
            header_intact,
            batches: Vec::new(),
        });
    }
    let Some(region) = damaged.last_mut() else {
        unreachable!("a region was just pushed or continued");
    };
    region.end = resume;
    region.synced_claim = region.synced_claim.max(claim);
    if let Some(header) = header {
        if header.kind == RecordKind::Append {
            region
                .batches
                .push((header.range, header.offset, header.count));
        }
        apply(index, &header, &mut [])?;
    }
    Ok(resume)
}

/// Logs every damaged region found, with what an operator needs to find and repair it.
fn log_damage(wal_directory: &Path, damaged: &[DamagedRegion]) {
    for region in damaged {
        let batches: Vec<String> = region
            .batches
            .iter()
            .map(|(range, offset, count)| {
                format!(
                    "stream {} range {} offsets {}..{}",
                    range.stream_id,
                    range.range_index,
                    offset,
                    offset.0 + *count as u64
                )
            })
            .collect();
        log::error!(
            "store recovery: acknowledged data is damaged in {} at byte offset {} (WAL positions \
             {}..{}; a later group records the log as synced up to {}): the bytes are kept as \
             they are and skipped; reads of {} fail with CORRUPTED_DATA{}; repair this replica \
             from a peer",
            wal_directory.join(&region.segment_file).display(),
            region.file_offset,
            region.position,
            region.end,
            region.synced_claim,
            if batches.is_empty() {
                "the batches there".to_string()
            } else {
                batches.join(", ")
            },
            if region.header_intact {
                ""
            } else {
                " (the records' headers are damaged too: a trim, a delete or a range's last \
                 batch there cannot be named)"
            }
        );
    }
}

/// Recovers the store under `config.path`.
pub(crate) fn recover(config: &StoreConfig, segments: Vec<u64>) -> Result<Recovered> {
    let started = Instant::now();
    let wal_directory = config.path.join(crate::layout::WAL_DIRECTORY);
    let checkpoint = checkpoint::read(&config.path)?;
    let clean = checkpoint::take_clean_mark(
        &config.path,
        checkpoint.as_ref().map(|checkpoint| checkpoint.sequence),
    )?;
    let segment_size = config.segment_size_bytes;
    let (mut index, scan_from, checkpoint_tail, sequence) = match checkpoint {
        Some(checkpoint) => (
            checkpoint.index,
            checkpoint.position,
            checkpoint.tail,
            checkpoint.sequence,
        ),
        None => (
            Index::new(),
            segments.first().copied().unwrap_or(0),
            Vec::new(),
            0,
        ),
    };
    let mut report = RecoveryReport {
        clean,
        scanned_from: scan_from,
        ..RecoveryReport::default()
    };
    if clean {
        report.tail = scan_from;
        report.duration = started.elapsed();
        return Ok(Recovered {
            index,
            tail: scan_from,
            tail_page: checkpoint_tail,
            segments,
            checkpoint_sequence: sequence,
            checkpoint_position: scan_from,
            report,
        });
    }

    let mut position = scan_from;
    let tail_page;
    loop {
        let segment_start = position - position % segment_size;
        if !segments.contains(&segment_start) {
            if position != segment_start {
                return Err(Error::Corrupt {
                    position,
                    detail: format!(
                        "segment file {} holding the end of the log is missing",
                        crate::layout::segment_name(segment_start)
                    ),
                });
            }
            tail_page = Vec::new();
            break;
        }
        let mut reader = SegmentReader::open(&wal_directory, segment_start, config)?;
        let mut end_found = false;
        loop {
            let outcome = scan_segment(&mut reader, &mut index, &mut position, &mut report);
            report.wal_bytes_read += reader.bytes_read;
            reader.bytes_read = 0;
            if !outcome? {
                break;
            }
            // Damage at `position`: acknowledged (a later group vouches for it) or torn?
            let reach = position + claim_reach_bytes(config);
            let mut search = reader.find_synced_claim(position, position + RECORD_ALIGN, reach)?;
            // Groups go on in the next segments when this one was sealed (the reach can span
            // more than one where segments are small).
            let mut next = reader.end;
            while search.claim.is_none() && next < reach && segments.contains(&next) {
                let mut next_reader = SegmentReader::open(&wal_directory, next, config)?;
                search.claim = next_reader.find_synced_claim(position, next, reach)?.claim;
                report.wal_bytes_read += next_reader.bytes_read;
                next += segment_size;
            }
            let Some(claim) = search.claim else {
                end_found = true;
                break;
            };
            position = skip_damage(
                &mut reader,
                &mut index,
                position,
                claim,
                search.first_valid,
                &mut report.damaged,
            )?;
            report.wal_bytes_read += reader.bytes_read;
            reader.bytes_read = 0;
            if position >= reader.end {
                break;
            }
        }
        if !end_found {
            position = position.max(reader.end);
            continue;
        }
        // `position` is the first invalid record of this segment: the end of the log, unless
        // valid records follow beyond what the groups in flight with it can have touched. That
        // window is in WAL positions: when `position` is near the end of a segment, groups
        // written together with the torn one start the next segment(s), and a power loss can
        // keep them while tearing or dropping it (different files, no order between them).
        let window_end = position + torn_window_bytes(config);
        // Had the log gone on past the damage, its next records would follow within one
        // record's length (at most one group) of the window; or a later segment would start
        // with one. Look there, not through the whole log.
        let search_end = window_end + config.max_group_bytes as u64 + PAGE_BYTES as u64;
        let later = first_valid_past_window(
            &wal_directory,
            &segments,
            &mut reader,
            window_end,
            search_end,
            config,
            &mut report,
        )?;
        report.wal_bytes_read += reader.bytes_read;
        reader.bytes_read = 0;
        if let Some(valid) = later {
            return Err(Error::Corrupt {
                position,
                detail: format!(
                    "the record at WAL position {position} does not verify but a valid record \
                     follows at {valid}: acknowledged data is damaged in the middle of the log"
                ),
            });
        }
        let damaged = describe_end(&mut reader, position)?;
        if let Some(what) = damaged {
            log::warn!(
                "store recovery: torn WAL tail cut at position {position} ({what}); the \
                 unacknowledged bytes up to {window_end} are zeroed"
            );
            report.cut_tail = Some((position, what));
        }
        let segment_end = reader.end;
        tail_page = zero_after_tail(&mut reader, position, window_end.min(segment_end))?;
        report.wal_bytes_read += reader.bytes_read;
        // Leftovers of the lost groups at the start of the next segments are valid records at
        // positions the log will reach again: zeroed too, or a later crash would replay them.
        let mut next = reader.end;
        while next < window_end && segments.contains(&next) {
            let mut next_reader = SegmentReader::open(&wal_directory, next, config)?;
            let next_end = next_reader.end;
            zero_after_tail(&mut next_reader, next, window_end.min(next_end))?;
            report.wal_bytes_read += next_reader.bytes_read;
            next += segment_size;
        }
        break;
    }
    log_damage(&wal_directory, &report.damaged);
    report.tail = position;
    report.duration = started.elapsed();
    Ok(Recovered {
        index,
        tail: position,
        tail_page,
        segments,
        checkpoint_sequence: sequence,
        checkpoint_position: scan_from,
        report,
    })
}

/// Replays records from `position`. Returns true when an invalid record ended the scan inside
/// this segment, false when the segment was complete (position moved to the next one).
fn scan_segment(
    reader: &mut SegmentReader,
    index: &mut Index,
    position: &mut WalPosition,
    report: &mut RecoveryReport,
) -> Result<bool> {
    loop {
        if reader.end - *position < HEADER_BYTES as u64 {
            *position = reader.end;
            return Ok(false);
        }
        match reader.record_at(*position)? {
            Ok(header) => {
                apply(index, &header, &mut report.damaged)?;
                report.records_replayed += 1;
                if header.kind == RecordKind::Padding {
                    *position = reader.end;
                    return Ok(false);
                }
                *position += record::record_length(header.payload_len as usize);
                if *position == reader.end {
                    return Ok(false);
                }
            }
            Err(_) => return Ok(true),
        }
    }
}

/// The first valid record in `[window_end, search_end)` (in whichever segments hold it, the
/// one `reader` reads first) or at the start of a segment at or after `window_end`.
fn first_valid_past_window(
    wal_directory: &Path,
    segments: &[u64],
    reader: &mut SegmentReader,
    window_end: WalPosition,
    search_end: WalPosition,
    config: &StoreConfig,
    report: &mut RecoveryReport,
) -> Result<Option<WalPosition>> {
    if window_end < reader.end {
        if let Some(found) = reader.find_valid_record(window_end, search_end.min(reader.end))? {
            return Ok(Some(found));
        }
    }
    for &start in segments.iter().filter(|&&start| start >= reader.end) {
        let end = start + config.segment_size_bytes;
        if end <= window_end {
            continue;
        }
        let mut later = SegmentReader::open(wal_directory, start, config)?;
        let found = if start < search_end {
            later.find_valid_record(window_end.max(start), search_end.min(end))?
        } else {
            later.record_at(start)?.ok().map(|_| start)
        };
        report.wal_bytes_read += later.bytes_read;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// None if the log simply ends (zeros or segment filler); otherwise what was found at the cut.
fn describe_end(reader: &mut SegmentReader, position: WalPosition) -> Result<Option<String>> {
    if !reader.ensure(position, HEADER_BYTES)? {
        return Ok(None);
    }
    if crate::layout::is_blank(reader.bytes(position, HEADER_BYTES)) {
        return Ok(None);
    }
    Ok(Some(match reader.record_at(position)? {
        Err(Invalid::BadChecksum) => "record fails its checksum".to_string(),
        Err(Invalid::Truncated) => "record is cut short".to_string(),
        _ => "bytes are not a record header".to_string(),
    }))
}

/// Zeroes `[tail, window_end)` on disk unless only zeros or filler are there; returns the bytes of
/// the tail page before `tail`.
fn zero_after_tail(
    reader: &mut SegmentReader,
    tail: WalPosition,
    window_end: WalPosition,
) -> Result<Vec<u8>> {
    let page_start = tail - tail % PAGE_BYTES as u64;
    let span = (window_end - page_start) as usize;
    let span = span
        .next_multiple_of(PAGE_BYTES)
        .min((reader.end - page_start) as usize);
    let mut region = AlignedBuf::zeroed(span);
    let got = read_at(
        reader.fd.as_raw_fd(),
        &mut region[..span],
        page_start - reader.start,
    )
    .map_err(|error| Error::io(format!("reading WAL at {page_start}"), &error))?;
    reader.bytes_read += got as u64;
    let keep = (tail - page_start) as usize;
    let tail_page = region[..keep].to_vec();
    if !crate::layout::is_blank(&region[keep..got]) {
        region[keep..span].fill(0);
        write_at(
            reader.fd.as_raw_fd(),
            &region[..span],
            page_start - reader.start,
        )
        .and_then(|()| runtime::durable::sync_data(&reader.fd))
        .map_err(|error| Error::io(format!("zeroing the torn WAL tail at {tail}"), &error))?;
    }
    Ok(tail_page)
}
