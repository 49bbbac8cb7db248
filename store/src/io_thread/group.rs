//! Group forming: the records one group write carries, and the pure decisions about it (how
//! large a group may grow, when it ends on a page boundary, how many bytes its write covers and
//! whether it may go out while earlier groups are still in flight).
//!
//! The staging group is filled by `staging`, submitted and retired by `group_commit`; the
//! limits here bound how much a crash can tear, which recovery relies on.

use runtime::buf::AlignedBuf;

use crate::record::RecordHeader;
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
