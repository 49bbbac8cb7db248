//! Group forming: the records one group write carries, and the pure decisions about it (how
//! large a group may grow, when it ends on a page boundary, how many bytes its write covers and
//! whether it may go out while earlier groups are still in flight).
//!
//! The staging group is filled by `staging`, submitted and retired by `group_commit`; the
//! limits here bound how much a crash can tear, which recovery relies on.

use runtime::buf::AlignedBuf;

use crate::record::RecordHeader;
use crate::record::HEADER_BYTES;
use crate::{WalPosition, PAGE_BYTES};

/// Groups submitted and not yet durable. A group's write may start while earlier ones are
/// still being written only if it shares no page with them; data syncs run back to back, each
/// covering every write completed before it.
pub(crate) const MAX_GROUPS_IN_FLIGHT: usize = 16;
/// Memory for group buffers (each `max_group_bytes` plus a page): fewer groups are kept in
/// flight when groups are large, but never fewer than two.
pub(super) const GROUP_BUFFER_BUDGET_BYTES: usize = 64 << 20;
/// Under load, a group this large is submitted at once, while more requests are drained.
pub(super) const EAGER_GROUP_BYTES: usize = 256 << 10;
/// ... and together they write at most this many times `max_group_bytes`: it bounds how much a
/// crash can tear, and so the window recovery treats as a torn tail.
pub(crate) const MAX_BYTES_IN_FLIGHT_GROUPS: usize = 2;
/// Largest single write: a larger group goes out as several writes in flight together. Under
/// load a group is a few hundred KiB, so it usually goes out as one request.
pub(super) const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Low bits of a group write's user data that number its chunk.
pub(super) const CHUNK_BITS: u32 = 16;
/// A group at least this large ends on a page boundary so the next can be in flight with it.
pub(super) const PIPELINE_MIN_GROUP_BYTES: usize = 32 << 10;
/// Payload of page-padding records.
pub(super) static ZEROS: [u8; 2 * PAGE_BYTES] = [0; 2 * PAGE_BYTES];

pub(super) struct GroupEntry {
    pub(super) worker: usize,
    pub(super) slot: u32,
    pub(super) header: RecordHeader,
}

/// Records encoded into an aligned buffer that starts at the page holding `start`.
pub(super) struct Group {
    pub(super) buffer: AlignedBuf,
    pub(super) page_start: WalPosition,
    pub(super) start: WalPosition,
    pub(super) end: WalPosition,
    /// A padding record ends the segment: the log continues at the next segment.
    pub(super) sealed: bool,
    /// The group carries records and its first `HEADER_BYTES` at `start` are reserved for its
    /// group start record, encoded at submission with the synced position of that moment.
    pub(super) opened: bool,
    pub(super) entries: Vec<GroupEntry>,
}

impl Group {
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.sealed
    }

    pub(super) fn used_bytes(&self) -> usize {
        (self.end - self.page_start) as usize
    }
}

/// Groups kept in flight for groups of `group_capacity` bytes: `MAX_GROUPS_IN_FLIGHT` within
/// `GROUP_BUFFER_BUDGET_BYTES` (one buffer is the staging group), never fewer than two.
pub(super) fn max_groups_in_flight(group_capacity: usize) -> usize {
    (GROUP_BUFFER_BUDGET_BYTES / group_capacity)
        .saturating_sub(1)
        .clamp(2, MAX_GROUPS_IN_FLIGHT)
}

/// Where a record of `length` bytes at `position` may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fit {
    /// Into the staging group.
    Fits,
    /// Not into this segment (appends keep out of its reserve): the log continues in the next.
    SegmentFull,
    /// Into this segment, but not into this group: it waits for the next group.
    GroupFull,
}

/// Whether a record fits the current segment and the staging group. Appends stop
/// `reserve` bytes before `segment_end`, so trims and deletes (which free space) still fit
/// when no new segment can be prepared.
pub(super) fn fit(
    position: WalPosition,
    length: u64,
    is_append: bool,
    segment_end: WalPosition,
    reserve: u64,
    staged_bytes: usize,
    max_group_bytes: usize,
) -> Fit {
    let limit = if is_append {
        segment_end - reserve
    } else {
        segment_end
    };
    if position + length > limit {
        Fit::SegmentFull
    } else if staged_bytes + length as usize > max_group_bytes {
        Fit::GroupFull
    } else {
        Fit::Fits
    }
}

/// Where a group of `end - page_start` bytes ends once padded to a page boundary, when it
/// should be: a large group (under load) that is not sealed ends on a page boundary, so the next
/// group shares no page with it and can be written while it is still in flight. None when the
/// group stays as it is (small, sealed, already aligned, or no room for the padding record).
pub(super) fn page_padding_end(
    page_start: WalPosition,
    end: WalPosition,
    sealed: bool,
    segment_end: WalPosition,
    buffer_len: usize,
) -> Option<WalPosition> {
    let page = PAGE_BYTES as u64;
    if sealed || ((end - page_start) as usize) < PIPELINE_MIN_GROUP_BYTES || end % page == 0 {
        return None;
    }
    let target = (end + HEADER_BYTES as u64).next_multiple_of(page);
    (target <= segment_end && (target - page_start) as usize <= buffer_len).then_some(target)
}

/// Bytes a group's write covers from its first page: its records rounded up to whole pages,
/// and, after a failed group, at least up to `dirty_until` (that group's write may have reached
/// the disk after all; zeros over its extent keep its records from turning up behind the new
/// tail), within the segment and the buffer.
pub(super) fn write_len(
    page_start: WalPosition,
    used_bytes: usize,
    dirty_until: WalPosition,
    segment_end: WalPosition,
    buffer_len: usize,
) -> usize {
    let write_len = used_bytes.next_multiple_of(PAGE_BYTES);
    if dirty_until <= page_start {
        return write_len;
    }
    let dirty = (dirty_until.min(segment_end) - page_start) as usize;
    write_len.max(dirty.next_multiple_of(PAGE_BYTES).min(buffer_len))
}

/// The group last submitted, as far as the next group's submission cares.
#[derive(Debug, Clone, Copy)]
pub(super) struct LastGroup {
    /// Its writes all completed.
    pub(super) written: bool,
    /// One past the last byte its write covers.
    pub(super) write_end: WalPosition,
}

/// What is in flight when the staging group could be submitted.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub(super) groups: usize,
    pub(super) write_bytes: usize,
    pub(super) last: Option<LastGroup>,
    /// A failed group's extent still to be overwritten (0 when none).
    pub(super) dirty_until: WalPosition,
}

/// True when the staging group may be submitted now: nothing is in flight, or fewer than
/// `max_groups` groups are, all of them together write at most `MAX_BYTES_IN_FLIGHT_GROUPS`
/// groups' worth of bytes (what recovery treats as a torn tail), no failed group's extent is
/// waiting to be overwritten, and the staging group shares no page with the last group's write
/// unless that write has completed (two writes of one page are never in flight together).
pub(super) fn may_submit(
    in_flight: &InFlight,
    staged_page_start: WalPosition,
    staged_bytes: usize,
    max_groups: usize,
    max_group_bytes: usize,
) -> bool {
    let Some(last) = in_flight.last else {
        return true;
    };
    in_flight.groups < max_groups
        && in_flight.write_bytes + staged_bytes <= MAX_BYTES_IN_FLIGHT_GROUPS * max_group_bytes
        && in_flight.dirty_until == 0
        && (last.written || staged_page_start >= last.write_end)
}

/// The user-data value of chunk `chunk` of group `sequence`'s write.
pub(super) fn chunk_value(sequence: u64, chunk: usize) -> u64 {
    debug_assert!(chunk < 1 << CHUNK_BITS);
    (sequence << CHUNK_BITS) | chunk as u64
}

/// The group sequence and chunk number a group write's user-data value names.
pub(super) fn chunk_of(value: u64) -> (u64, usize) {
    (
        value >> CHUNK_BITS,
        (value & ((1 << CHUNK_BITS) - 1)) as usize,
    )
}

/// Offset in the group and length of chunk `chunk` of a `write_len`-byte write.
pub(super) fn chunk_extent(write_len: usize, chunk: usize) -> (usize, usize) {
    let at = chunk * WRITE_CHUNK_BYTES;
    (at, WRITE_CHUNK_BYTES.min(write_len - at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = PAGE_BYTES as u64;
    const MAX_GROUP: usize = 2 << 20;

    #[test]
    fn groups_in_flight_stay_within_the_buffer_budget_and_at_least_two() {
        assert_eq!(
            max_groups_in_flight(MAX_GROUP + PAGE_BYTES),
            MAX_GROUPS_IN_FLIGHT
        );
        assert_eq!(max_groups_in_flight((8 << 20) + PAGE_BYTES), 6);
        assert_eq!(max_groups_in_flight(64 * 1024), MAX_GROUPS_IN_FLIGHT);
        assert_eq!(max_groups_in_flight(32 << 20), 2);
        assert_eq!(max_groups_in_flight(1 << 30), 2);
    }

    #[test]
    fn appends_keep_out_of_the_segment_reserve_trims_do_not() {
        let segment_end = 1 << 20;
        let reserve = 64 << 10;
        let position = segment_end - reserve - 100;
        assert_eq!(
            fit(position, 200, true, segment_end, reserve, 0, MAX_GROUP),
            Fit::SegmentFull
        );
        assert_eq!(
            fit(position, 200, false, segment_end, reserve, 0, MAX_GROUP),
            Fit::Fits
        );
        assert_eq!(
            fit(position, 100, true, segment_end, reserve, 0, MAX_GROUP),
            Fit::Fits
        );
        assert_eq!(
            fit(
                segment_end - 10,
                20,
                false,
                segment_end,
                reserve,
                0,
                MAX_GROUP
            ),
            Fit::SegmentFull
        );
    }

    #[test]
    fn a_group_never_grows_past_max_group_bytes() {
        let segment_end = 1 << 30;
        assert_eq!(
            fit(0, 100, true, segment_end, 0, MAX_GROUP - 100, MAX_GROUP),
            Fit::Fits
        );
        assert_eq!(
            fit(0, 101, true, segment_end, 0, MAX_GROUP - 100, MAX_GROUP),
            Fit::GroupFull
        );
    }

    #[test]
    fn large_groups_end_on_a_page_boundary() {
        let end = PIPELINE_MIN_GROUP_BYTES as u64 + 100;
        let padded = page_padding_end(0, end, false, 1 << 20, MAX_GROUP).unwrap();
        assert_eq!(padded % PAGE, 0);
        assert!(padded >= end + HEADER_BYTES as u64);
        assert!(padded - end < PAGE + HEADER_BYTES as u64);
    }

    #[test]
    fn padding_leaves_room_for_its_header() {
        // Less than a header to the page boundary: padding runs to the page after.
        let end = 12 * PAGE - 4;
        assert_eq!(
            page_padding_end(0, end, false, 1 << 20, MAX_GROUP),
            Some(13 * PAGE)
        );
    }

    #[test]
    fn small_sealed_aligned_or_cramped_groups_are_not_padded() {
        let segment_end = 1 << 20;
        assert_eq!(
            page_padding_end(0, 1000, false, segment_end, MAX_GROUP),
            None
        );
        let end = PIPELINE_MIN_GROUP_BYTES as u64 + 100;
        assert_eq!(page_padding_end(0, end, true, segment_end, MAX_GROUP), None);
        assert_eq!(
            page_padding_end(0, 16 * PAGE, false, segment_end, MAX_GROUP),
            None
        );
        // No room in the segment or in the buffer for the padding.
        assert_eq!(page_padding_end(0, end, false, end + 8, MAX_GROUP), None);
        assert_eq!(
            page_padding_end(0, end, false, segment_end, end as usize + 8),
            None
        );
        // A group starting mid-log counts its bytes from its first page.
        let page_start = 100 * PAGE;
        assert_eq!(
            page_padding_end(page_start, page_start + 1000, false, 1 << 30, MAX_GROUP),
            None
        );
    }

    #[test]
    fn writes_cover_whole_pages() {
        assert_eq!(write_len(0, 1, 0, 1 << 20, MAX_GROUP), PAGE_BYTES);
        assert_eq!(write_len(0, 4096, 0, 1 << 20, MAX_GROUP), PAGE_BYTES);
        assert_eq!(write_len(8192, 4097, 0, 1 << 20, MAX_GROUP), 2 * PAGE_BYTES);
    }

    #[test]
    fn after_a_failed_group_the_write_zeroes_its_extent() {
        // The failed group wrote 5 pages from page 2; the new group starts at page 2 again.
        let page_start = 2 * PAGE;
        let dirty_until = 7 * PAGE - 100;
        assert_eq!(
            write_len(page_start, 100, dirty_until, 1 << 20, MAX_GROUP),
            5 * PAGE_BYTES
        );
        // ... but never past the segment or the buffer.
        assert_eq!(
            write_len(page_start, 100, dirty_until, 4 * PAGE, MAX_GROUP),
            2 * PAGE_BYTES
        );
        assert_eq!(
            write_len(page_start, 100, dirty_until, 1 << 20, 3 * PAGE_BYTES),
            3 * PAGE_BYTES
        );
        // A dirty extent behind the group does not matter.
        assert_eq!(
            write_len(page_start, 100, page_start, 1 << 20, MAX_GROUP),
            PAGE_BYTES
        );
    }

    fn in_flight(groups: usize, write_bytes: usize, written: bool, write_end: u64) -> InFlight {
        InFlight {
            groups,
            write_bytes,
            last: Some(LastGroup { written, write_end }),
            dirty_until: 0,
        }
    }

    #[test]
    fn nothing_in_flight_always_submits() {
        let idle = InFlight {
            groups: 0,
            write_bytes: 0,
            last: None,
            dirty_until: 5 * PAGE,
        };
        assert!(may_submit(&idle, 0, MAX_GROUP, 2, MAX_GROUP));
    }

    #[test]
    fn in_flight_groups_and_bytes_are_bounded() {
        let written = in_flight(1, PAGE_BYTES, true, PAGE);
        assert!(may_submit(&written, 0, PAGE_BYTES, 2, MAX_GROUP));
        let full = in_flight(2, PAGE_BYTES, true, PAGE);
        assert!(!may_submit(&full, 0, PAGE_BYTES, 2, MAX_GROUP));
        let heavy = in_flight(1, MAX_GROUP + 1, true, PAGE);
        assert!(may_submit(&heavy, 0, MAX_GROUP - 1, 4, MAX_GROUP));
        assert!(!may_submit(&heavy, 0, MAX_GROUP, 4, MAX_GROUP));
    }

    #[test]
    fn a_page_is_never_written_twice_at_once() {
        // The last group's write, still in flight, ends at page 3; staging starts in page 2.
        let writing = in_flight(1, 3 * PAGE_BYTES, false, 3 * PAGE);
        assert!(!may_submit(&writing, 2 * PAGE, 100, 4, MAX_GROUP));
        assert!(may_submit(&writing, 3 * PAGE, 100, 4, MAX_GROUP));
        let written = in_flight(1, 3 * PAGE_BYTES, true, 3 * PAGE);
        assert!(may_submit(&written, 2 * PAGE, 100, 4, MAX_GROUP));
    }

    #[test]
    fn a_failed_extent_waits_for_everything_in_flight() {
        let mut dirty = in_flight(1, PAGE_BYTES, true, PAGE);
        dirty.dirty_until = PAGE;
        assert!(!may_submit(&dirty, PAGE, 100, 4, MAX_GROUP));
    }

    #[test]
    fn chunk_numbers_round_trip_and_cover_the_write() {
        assert_eq!(chunk_of(chunk_value(12345, 3)), (12345, 3));
        let write_len = 2 * WRITE_CHUNK_BYTES + PAGE_BYTES;
        let chunks = write_len.div_ceil(WRITE_CHUNK_BYTES);
        assert_eq!(chunks, 3);
        let mut covered = 0;
        for chunk in 0..chunks {
            let (at, len) = chunk_extent(write_len, chunk);
            assert_eq!(at, covered);
            covered += len;
        }
        assert_eq!(covered, write_len);
        assert_eq!(
            chunk_extent(write_len, 2),
            (2 * WRITE_CHUNK_BYTES, PAGE_BYTES)
        );
    }
}
