//! Group commit: submits the staging group as page-aligned O_DIRECT writes, starts data syncs
//! over written groups, and retires groups in WAL order once they are durable (or failed),
//! updating the thread's index and completing each request.
//!
//! Data flow: `maybe_submit_group` (staging -> in flight) -> `on_group_write` (written) ->
//! `maybe_submit_sync` / `on_group_sync` (durable) -> `retire_groups` -> completions. The
//! decisions (what a sync covers, when a group retires) are in `sync_policy`.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use io_uring::{opcode, types};
use runtime::buf::AlignedBuf;
use runtime::durable;

use super::group::{
    chunk_extent, chunk_of, chunk_value, may_submit, page_padding_end, write_len, Group, InFlight,
    LastGroup, WRITE_CHUNK_BYTES, ZEROS,
};
use super::ring::{user_data, KIND_SHIFT, OP_GROUP_SYNC, OP_GROUP_WRITE};
use super::sync_policy::{
    advance_synced, is_durable, may_retire, may_start_sync, plan_sync, GroupProgress, SyncPlan,
};
use super::IoThread;
use crate::config::SyncMode;
use crate::error::Error;
use crate::index::{BatchIndex, IndexEntry};
use crate::layout;
use crate::message::Outcome;
use crate::record::{self, RecordHeader, RecordKind, HEADER_BYTES};
use crate::{Offset, RangeKey, WalPosition, PAGE_BYTES};

pub(super) struct InFlightGroup {
    /// Counts submitted groups from 0 (fault injection names groups by it).
    pub(super) sequence: u64,
    /// Write operations of the group not yet completed.
    pub(super) writes_pending: usize,
    /// Bytes written, from `group.page_start`.
    pub(super) write_len: usize,
    pub(super) segment_start: WalPosition,
    pub(super) group: Group,
    /// The write completed (successfully unless `error`).
    pub(super) written: bool,
    pub(super) error: Option<Error>,
    pub(super) submitted: Instant,
}

impl InFlightGroup {
    pub(super) fn progress(&self) -> GroupProgress {
        GroupProgress {
            sequence: self.sequence,
            written: self.written,
            failed: self.error.is_some(),
            segment_start: self.segment_start,
        }
    }
}

/// The data sync in flight: one `fdatasync` per segment file with unsynced groups.
pub(super) struct SyncInFlight {
    /// Makes every group up to this sequence durable.
    pub(super) through: u64,
    pub(super) submitted: Instant,
    pub(super) awaiting: usize,
    pub(super) error: Option<Error>,
}

impl IoThread {
    /// True when a group staged now could be submitted at once.
    pub(super) fn could_submit(&self) -> bool {
        let in_flight = InFlight {
            groups: self.in_flight.len(),
            write_bytes: self
                .in_flight
                .iter()
                .map(|in_flight| in_flight.write_len)
                .sum(),
            last: self.in_flight.back().map(|last| LastGroup {
                written: last.written,
                write_end: last.group.page_start + last.write_len as u64,
            }),
            dirty_until: self.dirty_until,
        };
        may_submit(
            &in_flight,
            self.staging.page_start,
            self.staging.used_bytes(),
            self.max_groups_in_flight,
            self.config.max_group_bytes,
        )
    }

    pub(super) fn maybe_submit_group(&mut self) -> bool {
        if self.staging.is_empty() || self.failure.is_some() || !self.could_submit() {
            return false;
        }
        let spare = self
            .spare_buffers
            .pop()
            .unwrap_or_else(|| AlignedBuf::zeroed(self.config.max_group_bytes + PAGE_BYTES));
        let mut group = std::mem::replace(
            &mut self.staging,
            Group {
                buffer: spare,
                page_start: 0,
                start: 0,
                end: 0,
                sealed: false,
                opened: false,
                entries: Vec::new(),
            },
        );
        let segment_start = self.segment_start(group.page_start);
        if group.opened {
            // What this group vouches for: everything before `durable` was synced (retired
            // groups are synced with `sync: always`; with `never` nothing is known). Recovery
            // believes damage below the highest such claim is corruption, not a torn write.
            let synced = match self.config.sync {
                SyncMode::Always => self.durable,
                SyncMode::Never => 0,
            };
            assert!(
                synced <= group.start,
                "a group start claims {synced} synced but the group starts at {}",
                group.start
            );
            let at = (group.start - group.page_start) as usize;
            record::encode(
                &mut group.buffer[at..at + HEADER_BYTES],
                segment_start,
                &RecordHeader::group_start(group.start, synced),
                &[],
            );
        }
        let segment_end = segment_start + self.segment_size;
        let padded_end = page_padding_end(
            group.page_start,
            group.end,
            group.sealed,
            segment_end,
            group.buffer.len(),
        );
        if let Some(target) = padded_end {
            // Under load, end the group on a page boundary with a padding record, so the next
            // group can be written while this one is still in flight.
            let payload_len = (target - group.end) as usize - HEADER_BYTES;
            let header = RecordHeader {
                kind: RecordKind::PagePadding,
                payload_len: payload_len as u32,
                count: 0,
                position: group.end,
                range: RangeKey::default(),
                offset: Offset(0),
            };
            let at = (group.end - group.page_start) as usize;
            let end = (target - group.page_start) as usize;
            record::encode(
                &mut group.buffer[at..end],
                segment_start,
                &header,
                &ZEROS[..payload_len],
            );
            group.end = target;
        }
        let used = group.used_bytes();
        let write_len = write_len(
            group.page_start,
            used,
            self.dirty_until,
            segment_end,
            group.buffer.len(),
        );
        group.buffer[used..write_len].fill(0);
        if group.sealed {
            self.reset_staging(segment_end, &[]);
        } else {
            let keep = (group.end % PAGE_BYTES as u64) as usize;
            let prefix = group.buffer[used - keep..used].to_vec();
            self.reset_staging(group.end, &prefix);
        }
        let Some(segment) = self.segments.get(&segment_start) else {
            // Staging only accepts records for ready segments, and segments at or after the
            // log's tail are never reclaimed.
            unreachable!("group for a segment that is not open");
        };
        let fd = segment.fd.as_raw_fd();
        let file_offset = group.page_start - segment_start;
        // A misplaced write would overwrite acknowledged records or another segment's.
        assert_eq!(
            file_offset % PAGE_BYTES as u64,
            0,
            "group writes start on a page"
        );
        assert!(
            file_offset + write_len as u64 <= self.segment_size,
            "group write of {write_len} bytes at {file_offset} runs past its segment"
        );
        let sequence = self.groups_submitted;
        self.groups_submitted += 1;
        // The group goes out as several writes in flight together (none shares a page with
        // another), which keeps more of the device's queue busy than one large write.
        let chunks = write_len.div_ceil(WRITE_CHUNK_BYTES);
        for chunk in 0..chunks {
            let (at, len) = chunk_extent(write_len, chunk);
            let operation = user_data(OP_GROUP_WRITE, chunk_value(sequence, chunk));
            durable::ring_write_submitted(
                self.ring.as_raw_fd(),
                operation,
                fd,
                file_offset + at as u64,
                &group.buffer[at..at + len],
            );
            let pointer = group.buffer[at..].as_mut_ptr();
            let write = opcode::Write::new(types::Fd(fd), pointer, len as u32)
                .offset(file_offset + at as u64)
                .build()
                .user_data(operation);
            // SAFETY: the group buffer moves into `self.in_flight` below and stays there until
            // every write completion of the group has been reaped (`retire_groups` pops only
            // written groups).
            unsafe { self.push_data(&write, self.polled.writes) };
        }
        self.in_flight.push_back(InFlightGroup {
            sequence,
            writes_pending: chunks,
            write_len,
            segment_start,
            group,
            written: false,
            error: None,
            submitted: Instant::now(),
        });
        true
    }

    pub(super) fn in_flight_group(&mut self, sequence: u64) -> Option<&mut InFlightGroup> {
        self.in_flight
            .iter_mut()
            .find(|in_flight| in_flight.sequence == sequence)
    }

    pub(super) fn on_group_write(&mut self, value: u64, result: i32) {
        let (sequence, chunk) = chunk_of(value);
        #[cfg(feature = "fault-injection")]
        let result = self
            .config
            .faults
            .group_write_result(sequence, chunk, result);
        let Some(in_flight) = self.in_flight_group(sequence) else {
            return;
        };
        let (at, expected) = chunk_extent(in_flight.write_len, chunk);
        let position = in_flight.group.page_start + at as u64;
        if in_flight.error.is_none() {
            if result < 0 {
                in_flight.error = Some(Error::errno(
                    format!("WAL write at position {position}"),
                    -result,
                ));
            } else if (result as usize) < expected {
                in_flight.error = Some(Error::Io {
                    operation: format!(
                        "WAL write at position {position} (short write: {result} of {expected} \
                         bytes)"
                    ),
                    errno: libc::EIO,
                });
            }
        }
        in_flight.writes_pending -= 1;
        if in_flight.writes_pending > 0 {
            return;
        }
        in_flight.written = true;
        let took = in_flight.submitted.elapsed().as_micros() as u64;
        let failed = in_flight.error.is_some();
        self.stats
            .group_write_micros
            .fetch_add(took, Ordering::Relaxed);
        if failed {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.retire_groups();
        self.maybe_submit_sync();
    }

    /// Starts one data sync covering the groups at the front of the log whose writes have
    /// completed, as soon as no sync is in flight. Writes still in flight go on meanwhile and are
    /// covered by the next sync: syncs run back to back, each making durable what was written
    /// before it started, so acknowledgements flow while later groups are still being written
    /// and at most one sync waits at a time.
    pub(super) fn maybe_submit_sync(&mut self) {
        if !may_start_sync(
            self.config.sync,
            self.halting,
            self.sync_in_flight.is_some(),
            self.failure.is_some(),
        ) {
            return;
        }
        let plan = plan_sync(
            self.in_flight.iter().map(InFlightGroup::progress),
            self.synced_through,
        );
        let Some(SyncPlan { through, files }) = plan else {
            return;
        };
        let mut awaiting = 0;
        for start in files {
            let Some(segment) = self.segments.get(&start) else {
                continue;
            };
            // One sync per file at a time: the segment's number tells them apart.
            let operation = user_data(
                OP_GROUP_SYNC,
                (start / self.segment_size) & ((1 << KIND_SHIFT) - 1),
            );
            durable::ring_sync_submitted(self.ring.as_raw_fd(), operation, segment.fd.as_raw_fd());
            let data_sync = opcode::Fsync::new(types::Fd(segment.fd.as_raw_fd()))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(operation);
            // SAFETY: no buffers.
            unsafe { self.push(&data_sync) };
            awaiting += 1;
        }
        self.sync_in_flight = Some(SyncInFlight {
            through,
            submitted: Instant::now(),
            awaiting,
            error: None,
        });
    }

    pub(super) fn on_group_sync(&mut self, result: i32) {
        if result >= 0 {
            self.stats.data_syncs.fetch_add(1, Ordering::Relaxed);
        }
        let Some(sync) = self.sync_in_flight.as_mut() else {
            return;
        };
        if result < 0 && sync.error.is_none() {
            sync.error = Some(Error::errno("WAL data sync", -result));
        }
        sync.awaiting -= 1;
        if sync.awaiting > 0 {
            return;
        }
        let Some(sync) = self.sync_in_flight.take() else {
            return;
        };
        self.stats.data_sync_micros.fetch_add(
            sync.submitted.elapsed().as_micros() as u64,
            Ordering::Relaxed,
        );
        match sync.error {
            Some(error) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                if self.failure.is_none() {
                    log::error!("store: {error}; failing every group not yet durable");
                    self.failure = Some(error);
                }
            }
            None => {
                // The sync was issued after the writes of every group it covers completed.
                assert!(
                    self.in_flight
                        .iter()
                        .take_while(|in_flight| in_flight.sequence <= sync.through)
                        .all(|in_flight| in_flight.written),
                    "a data sync covered a group whose write had not completed"
                );
                self.synced_through = Some(advance_synced(self.synced_through, sync.through));
            }
        }
        self.retire_groups();
        self.maybe_submit_sync();
    }

    /// Retires groups in WAL order: a group is done once its write completed and (with `sync:
    /// always`) a data sync issued after that completed. A failed write or sync fails every
    /// group behind it too (their records would follow a hole), and everything staged once the
    /// last one is done.
    pub(super) fn retire_groups(&mut self) {
        while let Some(front) = self.in_flight.front() {
            if !may_retire(
                self.config.sync,
                self.synced_through,
                front.progress(),
                self.failure.is_some(),
            ) {
                break;
            }
            let Some(InFlightGroup {
                group,
                error,
                write_len,
                sequence,
                ..
            }) = self.in_flight.pop_front()
            else {
                break;
            };
            match error.or_else(|| self.failure.clone()) {
                Some(error) => self.fail_group(group, write_len, error),
                None => {
                    assert!(
                        is_durable(self.config.sync, self.synced_through, sequence),
                        "group {sequence} acknowledged before a sync covered it"
                    );
                    self.finish_group(group, write_len);
                }
            }
        }
        if self.in_flight.is_empty() {
            if let Some(error) = self.failure.take() {
                // The failed writes may have reached the disk after all: their records must
                // never come back, not even after a clean shutdown and a later crash (the
                // checkpoint's position, where a scan starts, is the log's tail, where they
                // lie). They are zeroed and synced before their appends are failed.
                if !self.halting {
                    self.zero_failed_extent();
                }
                for (worker, slot, error) in std::mem::take(&mut self.failed_appends) {
                    self.complete(worker, slot, Err(error));
                }
                let staged: Vec<(usize, u32)> = self
                    .staging
                    .entries
                    .iter()
                    .map(|entry| (entry.worker, entry.slot))
                    .collect();
                for (worker, slot) in staged {
                    self.complete(worker, slot, Err(error.clone()));
                }
                // Nothing is staged or in flight any more: every range continues at its index.
                self.expected_next.clear();
                let tail_page = std::mem::take(&mut self.tail_page);
                self.reset_staging(self.durable, &tail_page);
                self.tail_page = tail_page;
            }
        }
    }

    pub(super) fn fail_group(&mut self, group: Group, write_len: usize, error: Error) {
        self.dirty_until = self.dirty_until.max(group.page_start + write_len as u64);
        if self.failure.is_none() {
            log::error!("store: {error}; failing the group and everything after it");
            self.failure = Some(error.clone());
        }
        // Failed once the extent is zeroed (`retire_groups`), when nothing is in flight.
        for entry in &group.entries {
            self.failed_appends
                .push((entry.worker, entry.slot, error.clone()));
        }
        self.spare_buffers.push(group.buffer);
    }

    /// Overwrites `[durable, dirty_until)` with zeros (keeping the tail page's acknowledged
    /// bytes) and syncs it, segment by segment. Blocking, on the IO thread: runs only after a
    /// failed write or sync, with nothing in flight, before anything else is written. If the
    /// disk refuses this too, `dirty_until` stays set and the next group's write covers the
    /// extent instead (see `group::write_len`).
    fn zero_failed_extent(&mut self) {
        let page = PAGE_BYTES as u64;
        let until = self.dirty_until;
        if until <= self.durable {
            return;
        }
        let mut position = self.durable - self.durable % page;
        let mut buffer = AlignedBuf::zeroed(WRITE_CHUNK_BYTES);
        while position < until {
            let segment_start = self.segment_start(position);
            let segment_end = segment_start + self.segment_size;
            let end = until
                .min(segment_end)
                .next_multiple_of(page)
                .min(segment_end);
            let Some(segment) = self.segments.get(&segment_start) else {
                position = segment_end;
                continue;
            };
            let fd = segment.fd.as_raw_fd();
            let result = (|| {
                let mut at = position;
                while at < end {
                    let len = ((end - at) as usize).min(buffer.len());
                    buffer[..len].fill(0);
                    if at == self.durable - self.durable % page {
                        // The tail page's bytes before `durable` are acknowledged records.
                        buffer[..self.tail_page.len()].copy_from_slice(&self.tail_page);
                    }
                    layout::write_at(fd, &buffer[..len], at - segment_start)?;
                    at += len as u64;
                }
                durable::sync_data(&fd)
            })();
            if let Err(error) = result {
                log::error!(
                    "store: zeroing the failed WAL writes at {position}..{end} failed: {error}; \
                     the next group's write covers them instead"
                );
                return;
            }
            self.stats
                .wal_bytes_written
                .fetch_add(end - position, Ordering::Relaxed);
            position = segment_end;
        }
        self.dirty_until = 0;
    }

    pub(super) fn finish_group(&mut self, group: Group, write_len: usize) {
        let written_until = group.page_start + write_len as u64;
        let used = group.used_bytes();
        self.stats
            .wal_bytes_written
            .fetch_add(write_len as u64, Ordering::Relaxed);
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        assert_eq!(group.start, self.durable, "groups complete in WAL order");
        if written_until >= self.dirty_until {
            self.dirty_until = 0;
        }
        if group.sealed {
            self.durable = self.segment_start(group.page_start) + self.segment_size;
            self.tail_page.clear();
        } else {
            self.durable = group.end;
            let keep = (group.end % PAGE_BYTES as u64) as usize;
            self.tail_page.clear();
            self.tail_page
                .extend_from_slice(&group.buffer[used - keep..used]);
        }
        assert!(
            self.durable >= group.start,
            "the durable position never moves back"
        );
        self.stats
            .durable_position
            .store(self.durable, Ordering::Relaxed);
        let mut appends = 0u64;
        let mut append_bytes = 0u64;
        let mut retention_changed = false;
        for entry in &group.entries {
            let header = entry.header;
            let outcome = match header.kind {
                RecordKind::Append => {
                    appends += 1;
                    append_bytes += header.payload_len as u64;
                    let index_entry = IndexEntry {
                        base_offset: header.offset,
                        position: header.position,
                        payload_len: header.payload_len,
                        count: header.count,
                    };
                    let range = self
                        .index
                        .entry(header.range)
                        .or_insert_with(|| BatchIndex::new(header.offset));
                    range.push(index_entry);
                    if self.expected_next.get(&header.range) == Some(&range.next_offset()) {
                        self.expected_next.remove(&header.range);
                    }
                    let segment_start = self.segment_start(header.position);
                    if let Some(segment) = self.segments.get_mut(&segment_start) {
                        segment
                            .ranges
                            .insert(header.range, index_entry.end_offset());
                    }
                    Outcome::Appended {
                        position: header.position,
                    }
                }
                RecordKind::Trim => {
                    if let Some(range) = self.index.get_mut(&header.range) {
                        range.trim(header.offset);
                    }
                    for segment in self.segments.values_mut() {
                        if segment
                            .ranges
                            .get(&header.range)
                            .is_some_and(|end| *end <= header.offset)
                        {
                            segment.ranges.remove(&header.range);
                        }
                    }
                    retention_changed = true;
                    Outcome::Trimmed
                }
                RecordKind::Delete => {
                    self.index.remove(&header.range);
                    for segment in self.segments.values_mut() {
                        segment.ranges.remove(&header.range);
                    }
                    retention_changed = true;
                    Outcome::Deleted
                }
                RecordKind::Padding | RecordKind::PagePadding | RecordKind::GroupStart => continue,
            };
            self.complete(entry.worker, entry.slot, Ok(outcome));
        }
        self.stats.appends.fetch_add(appends, Ordering::Relaxed);
        self.stats
            .append_bytes
            .fetch_add(append_bytes, Ordering::Relaxed);
        self.spare_buffers.push(group.buffer);
        if retention_changed {
            self.reclaim_segments();
        }
    }
}
