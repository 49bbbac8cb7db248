//! Staging: encodes appends, trims and deletes straight into the staging group's buffer as they
//! are drained, after checking that the range continues where it should and the record fits
//! in the current segment (appends keep out of the segment's reserve, so trims and deletes
//! still fit when the disk is full). A request that does not fit goes back to wait.

use super::group::{fit, Fit, GroupEntry};
use super::IoThread;
use crate::error::Error;
use crate::index::BatchIndex;
use crate::message::Request;
use crate::record::{self, RecordHeader, RecordKind, HEADER_BYTES};
use crate::{Offset, RangeKey, WalPosition, PAGE_BYTES};

/// Bytes at the end of each segment that only trims and deletes may use, so ranges can still
/// be trimmed (and space freed) when the disk is full.
pub(crate) fn reserve_bytes(segment_size_bytes: u64) -> u64 {
    (64 << 10).min(segment_size_bytes / 16)
}

impl IoThread {
    pub(super) fn reset_staging(&mut self, position: WalPosition, prefix: &[u8]) {
        // The prefix is rewritten in place ahead of the new records: a wrong one would overwrite
        // acknowledged bytes of the tail page.
        assert_eq!(
            prefix.len() as u64,
            position % PAGE_BYTES as u64,
            "the tail page prefix must end at the staging position"
        );
        let page_start = position - prefix.len() as u64;
        self.staging.buffer[..prefix.len()].copy_from_slice(prefix);
        self.staging.page_start = page_start;
        self.staging.start = position;
        self.staging.end = position;
        self.staging.sealed = false;
        self.staging.opened = false;
        self.staging.entries.clear();
    }

    /// Stages one request. Returns it back if it has to wait for room.
    pub(super) fn stage(&mut self, worker: usize, request: Request) -> Option<Request> {
        let request = match request {
            Request::Read { slot, extents } => {
                self.start_read(worker, slot, extents);
                return None;
            }
            other => other,
        };
        let (slot, kind, range, offset, count, payload): (_, _, _, _, _, &[u8]) = match &request {
            Request::Read { .. } => return None,
            Request::Append {
                slot,
                range,
                base_offset,
                count,
                batch,
            } => (
                *slot,
                RecordKind::Append,
                *range,
                *base_offset,
                *count,
                batch,
            ),
            Request::Trim {
                slot,
                range,
                offset,
            } => (*slot, RecordKind::Trim, *range, *offset, 0, &[]),
            Request::Delete { slot, range } => {
                (*slot, RecordKind::Delete, *range, Offset(0), 0, &[])
            }
        };
        if self.staging.sealed {
            return Some(request);
        }
        // The first record of a group comes after the group's start record.
        let opening = !self.staging.opened;
        let group_start_bytes = if opening { HEADER_BYTES as u64 } else { 0 };
        let position = self.staging.end;
        let segment_start = self.segment_start(position);
        if !self.segments.contains_key(&segment_start) {
            // The log has reached a segment that is not ready yet.
            if kind == RecordKind::Append && self.full_since.is_some() {
                self.complete(worker, slot, Err(self.full_error()));
                return None;
            }
            self.segment_wanted = true;
            return Some(request);
        }
        let segment_end = segment_start + self.segment_size;
        let length = record::record_length(payload.len());
        let fits = fit(
            position,
            group_start_bytes + length,
            kind == RecordKind::Append,
            segment_end,
            reserve_bytes(self.segment_size),
            self.staging.used_bytes(),
            self.config.max_group_bytes,
        );
        match fits {
            Fit::Fits => {}
            Fit::GroupFull => return Some(request),
            Fit::SegmentFull => {
                let next_ready = self.segments.contains_key(&segment_end);
                if next_ready {
                    self.seal_staging();
                    return Some(request);
                }
                if self.full_since.is_some() {
                    self.complete(worker, slot, Err(self.full_error()));
                    return None;
                }
                self.segment_wanted = true;
                return Some(request);
            }
        }
        match kind {
            RecordKind::Append => {
                let expected = self.expected_next.get(&range).copied().or_else(|| {
                    self.index
                        .get(&range)
                        .filter(|index| !index.entries().is_empty())
                        .map(BatchIndex::next_offset)
                });
                if let Some(expected) = expected.filter(|expected| *expected != offset) {
                    self.complete(
                        worker,
                        slot,
                        Err(Error::OutOfOrder {
                            range,
                            expected,
                            found: offset,
                        }),
                    );
                    return None;
                }
                self.expected_next.insert(range, offset + count as u64);
            }
            RecordKind::Trim => {
                if let Some(expected) = self.expected_next.get_mut(&range) {
                    *expected = (*expected).max(offset);
                }
            }
            _ => {
                self.expected_next.remove(&range);
            }
        }
        if opening {
            debug_assert_eq!(self.staging.end, self.staging.start);
            self.staging.opened = true;
            self.staging.end += group_start_bytes;
        }
        let position = self.staging.end;
        let header = RecordHeader {
            kind,
            payload_len: payload.len() as u32,
            count,
            position,
            range,
            offset,
        };
        let at = (position - self.staging.page_start) as usize;
        record::encode(
            &mut self.staging.buffer[at..at + length as usize],
            segment_start,
            &header,
            payload,
        );
        self.staging.end += length;
        self.staging.entries.push(GroupEntry {
            worker,
            slot,
            header,
        });
        None
    }

    /// Ends the staging group's segment with a padding record.
    pub(super) fn seal_staging(&mut self) {
        assert!(!self.staging.sealed, "a group is sealed once");
        let position = self.staging.end;
        let segment_start = self.segment_start(position);
        let segment_end = segment_start + self.segment_size;
        if segment_end - position >= HEADER_BYTES as u64 {
            let header = RecordHeader {
                kind: RecordKind::Padding,
                payload_len: 0,
                count: 0,
                position,
                range: RangeKey::default(),
                offset: Offset(0),
            };
            let at = (position - self.staging.page_start) as usize;
            record::encode(
                &mut self.staging.buffer[at..at + HEADER_BYTES],
                segment_start,
                &header,
                &[],
            );
            self.staging.end += HEADER_BYTES as u64;
        }
        self.staging.sealed = true;
    }

    pub(super) fn full_error(&self) -> Error {
        Error::Full {
            detail: format!(
                "no space to prepare the next {}-byte WAL segment in {}",
                self.segment_size,
                self.wal_directory.display()
            ),
        }
    }
}
