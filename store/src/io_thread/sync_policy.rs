//! Sync decisions, pure: when a data sync starts, which groups it covers, and when a group is
//! acknowledged (retired) under `sync: always` and `sync: never`.
//!
//! `group_commit` feeds these with the groups in flight (front = oldest, in WAL order) and acts
//! on the answers. Acknowledgements depend on three invariants checked here with `assert!`: a
//! sync covers only groups whose writes completed before it was issued, the synced sequence
//! only moves forward, and a group is acknowledged only once written and (with `sync: always`)
//! covered by a completed sync.

use crate::config::SyncMode;
use crate::WalPosition;

/// A group in flight, as the sync decisions see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupProgress {
    pub(super) sequence: u64,
    /// All its writes completed.
    pub(super) written: bool,
    /// One of its writes failed.
    pub(super) failed: bool,
    /// The segment file it was written to.
    pub(super) segment_start: WalPosition,
}

/// What the next data sync covers.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SyncPlan {
    /// Every group up to this sequence is durable once the sync completes.
    pub(super) through: u64,
    /// One `fdatasync` per segment file these groups were written to.
    pub(super) files: Vec<WalPosition>,
}

/// A data sync may start only with `sync: always`, while the thread is not halting (a halt
/// stands for a crash), no sync is in flight (syncs run back to back) and no group failed.
pub(super) fn may_start_sync(
    mode: SyncMode,
    halting: bool,
    sync_in_flight: bool,
    failed: bool,
) -> bool {
    mode == SyncMode::Always && !halting && !sync_in_flight && !failed
}

/// The next sync covers the groups at the front of the log whose writes completed without
/// error and that no sync covered yet; it stops at the first group still being written (or
/// failed), so it never covers a write that has not completed. None when there is nothing new.
pub(super) fn plan_sync(
    groups: impl IntoIterator<Item = GroupProgress>,
    synced_through: Option<u64>,
) -> Option<SyncPlan> {
    let mut through = None;
    let mut files: Vec<WalPosition> = Vec::new();
    for group in groups {
        if !group.written || group.failed {
            break;
        }
        if synced_through.is_some_and(|synced| group.sequence <= synced) {
            continue;
        }
        through = Some(group.sequence);
        if !files.contains(&group.segment_start) {
            files.push(group.segment_start);
        }
    }
    let through = through?;
    Some(SyncPlan { through, files })
}

/// The synced sequence after a sync through `through` completed. Panics if it would move back:
/// syncs complete in the order they were issued and each covers more than the one before.
pub(super) fn advance_synced(synced_through: Option<u64>, through: u64) -> u64 {
    if let Some(synced) = synced_through {
        assert!(
            through > synced,
            "a data sync through group {through} completed after one through group {synced}"
        );
    }
    through
}

/// True when a group's records are durable as far as its acknowledgement goes: with `sync:
/// never` once written, with `sync: always` once a completed sync covers it.
pub(super) fn is_durable(mode: SyncMode, synced_through: Option<u64>, sequence: u64) -> bool {
    mode != SyncMode::Always || synced_through.is_some_and(|synced| sequence <= synced)
}

/// True when the group at the front of the log can retire: its writes completed, and it is
/// durable or failed (a group behind a failure fails too, its records would follow a hole).
pub(super) fn may_retire(
    mode: SyncMode,
    synced_through: Option<u64>,
    group: GroupProgress,
    failure: bool,
) -> bool {
    group.written && (is_durable(mode, synced_through, group.sequence) || group.failed || failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(sequence: u64, written: bool, segment_start: WalPosition) -> GroupProgress {
        GroupProgress {
            sequence,
            written,
            failed: false,
            segment_start,
        }
    }

    #[test]
    fn only_sync_always_syncs_and_one_sync_at_a_time() {
        assert!(may_start_sync(SyncMode::Always, false, false, false));
        assert!(!may_start_sync(SyncMode::Never, false, false, false));
        assert!(!may_start_sync(SyncMode::Always, true, false, false));
        assert!(!may_start_sync(SyncMode::Always, false, true, false));
        assert!(!may_start_sync(SyncMode::Always, false, false, true));
    }

    #[test]
    fn a_sync_covers_only_the_written_prefix() {
        let groups = [
            group(0, true, 0),
            group(1, true, 0),
            group(2, false, 0),
            group(3, true, 0),
        ];
        let plan = plan_sync(groups, None).unwrap();
        assert_eq!(plan.through, 1);
        assert_eq!(plan.files, vec![0]);
    }

    #[test]
    fn a_sync_skips_what_is_already_synced() {
        let groups = [group(4, true, 0), group(5, true, 0)];
        assert_eq!(plan_sync(groups, Some(4)).unwrap().through, 5);
        assert_eq!(plan_sync(groups, Some(5)), None);
    }

    #[test]
    fn nothing_written_nothing_to_sync() {
        assert_eq!(plan_sync([group(0, false, 0)], None), None);
        assert_eq!(plan_sync([], None), None);
    }

    #[test]
    fn a_failed_group_stops_the_sync() {
        let mut failed = group(1, true, 0);
        failed.failed = true;
        let plan = plan_sync([group(0, true, 0), failed, group(2, true, 0)], None).unwrap();
        assert_eq!(plan.through, 0);
    }

    #[test]
    fn one_data_sync_per_segment_file() {
        let segment = 1 << 30;
        let groups = [
            group(0, true, 0),
            group(1, true, segment),
            group(2, true, segment),
        ];
        let plan = plan_sync(groups, None).unwrap();
        assert_eq!(plan.through, 2);
        assert_eq!(plan.files, vec![0, segment]);
    }

    #[test]
    fn the_synced_sequence_moves_forward() {
        assert_eq!(advance_synced(None, 0), 0);
        assert_eq!(advance_synced(Some(3), 7), 7);
    }

    #[test]
    #[should_panic(expected = "completed after one through")]
    fn the_synced_sequence_never_moves_back() {
        advance_synced(Some(7), 7);
    }

    #[test]
    fn sync_always_acknowledges_after_the_sync_never_after_the_write() {
        let written = group(3, true, 0);
        assert!(!may_retire(SyncMode::Always, None, written, false));
        assert!(!may_retire(SyncMode::Always, Some(2), written, false));
        assert!(may_retire(SyncMode::Always, Some(3), written, false));
        assert!(may_retire(SyncMode::Never, None, written, false));
    }

    #[test]
    fn an_unwritten_group_never_retires() {
        let writing = group(3, false, 0);
        assert!(!may_retire(SyncMode::Never, None, writing, false));
        assert!(!may_retire(SyncMode::Always, Some(9), writing, true));
    }

    #[test]
    fn failed_groups_retire_without_a_sync() {
        let mut failed = group(3, true, 0);
        failed.failed = true;
        assert!(may_retire(SyncMode::Always, None, failed, false));
        assert!(may_retire(SyncMode::Always, None, group(4, true, 0), true));
    }
}
