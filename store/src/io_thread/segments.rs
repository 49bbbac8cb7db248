//! WAL segments: the open segment files, preparing new ones ahead of need (written through with
//! filler, or used as allocated under `prewrite: idle` when the log needs one first) and
//! reclaiming those whose every range was trimmed or deleted once a checkpoint covers them
//! (recycled as a future segment, or deleted). The decisions are pure functions at the end.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use runtime::buf::AlignedBuf;
use runtime::durable;

use super::ring::{user_data, OP_PREWRITE, OP_PREWRITE_SYNC};
use super::IoThread;
use crate::config::PrewriteMode;
use crate::layout::{self, PREWRITE_CHUNK_BYTES};
use crate::message::Request;
use crate::{Offset, RangeKey, WalPosition};

/// How often preparing a segment is retried after the disk was found full.
pub(super) const FULL_RETRY: Duration = Duration::from_millis(500);

pub(super) struct Segment {
    pub(super) fd: OwnedFd,
    /// Ranges with batches in this segment, with the end offset of their last batch here.
    pub(super) ranges: HashMap<RangeKey, Offset>,
    pub(super) reads_in_flight: u32,
}

pub(super) struct Prewrite {
    pub(super) start: WalPosition,
    pub(super) fd: OwnedFd,
    pub(super) temporary: PathBuf,
    pub(super) written: u64,
    pub(super) filler: AlignedBuf,
    pub(super) in_flight: bool,
    pub(super) syncing: bool,
}

impl IoThread {
    /// Segments ready beyond the one the log is being written in.
    pub(super) fn ready_ahead(&self) -> usize {
        let current = self.segment_start(self.staging.end.max(self.durable));
        self.segments.range(current + 1..).count()
    }

    pub(super) fn next_segment_to_prepare(&self) -> WalPosition {
        let current = self.segment_start(self.staging.end.max(self.durable));
        let last = self
            .segments
            .keys()
            .next_back()
            .copied()
            .unwrap_or(current)
            .max(current);
        last + self.segment_size
    }

    /// True when the IO thread has appends staged, waiting or in flight: with `prewrite: idle`
    /// no write-through chunk is issued then.
    pub(super) fn appends_busy(&self) -> bool {
        !self.staging.is_empty()
            || !self.in_flight.is_empty()
            || self.sync_in_flight.is_some()
            || self.ports.iter().any(|port| !port.deferred.is_empty())
    }

    /// Prepares segments ahead of need. Returns true when it published one the log waits for.
    pub(super) fn maybe_prewrite(&mut self) -> bool {
        if self.shutting_down {
            return false;
        }
        let wanted = std::mem::take(&mut self.segment_wanted);
        if self.prewrite.is_none() {
            let current = self.segment_start(self.staging.end.max(self.durable));
            let next = prepare_next(
                self.segments.contains_key(&current),
                self.ready_ahead(),
                self.config.preallocated_segments,
                self.full_since.map(|since| since.elapsed()),
            );
            let start = match next {
                None => return false,
                Some(Prepare::Current) => current,
                Some(Prepare::Ahead) => self.next_segment_to_prepare(),
            };
            match layout::create_segment_file(&self.wal_directory, start, self.segment_size) {
                Ok((fd, temporary)) => {
                    let chunk = PREWRITE_CHUNK_BYTES.min(self.segment_size as usize);
                    self.prewrite = Some(Prewrite {
                        start,
                        fd,
                        temporary,
                        written: 0,
                        filler: {
                            let mut filler = AlignedBuf::zeroed(chunk);
                            filler.fill(layout::SEGMENT_FILL_BYTE);
                            filler
                        },
                        in_flight: false,
                        syncing: false,
                    });
                }
                Err(error) => {
                    self.on_prepare_failed(start, &error);
                    return false;
                }
            }
        }
        let step = prewrite_step(
            self.config.prewrite,
            wanted,
            self.ready_ahead(),
            self.appends_busy(),
        );
        match step {
            PrewriteStep::PublishUnwritten => return self.publish_unwritten(),
            PrewriteStep::Wait => return false,
            PrewriteStep::WriteThrough => {}
        }
        let segment_size = self.segment_size;
        let Some(prewrite) = self.prewrite.as_mut() else {
            return false;
        };
        if prewrite.in_flight {
            return false;
        }
        prewrite.in_flight = true;
        let fd = prewrite.fd.as_raw_fd();
        let ring = self.ring.as_raw_fd();
        let entry = if prewrite.written < segment_size {
            let len = (segment_size - prewrite.written).min(prewrite.filler.len() as u64);
            let operation = user_data(OP_PREWRITE, 0);
            durable::ring_write_submitted(
                ring,
                operation,
                fd,
                prewrite.written,
                &prewrite.filler[..len as usize],
            );
            opcode::Write::new(types::Fd(fd), prewrite.filler.as_mut_ptr(), len as u32)
                .offset(prewrite.written)
                .build()
                .user_data(operation)
        } else {
            prewrite.syncing = true;
            let operation = user_data(OP_PREWRITE_SYNC, 0);
            durable::ring_sync_submitted(ring, operation, fd);
            opcode::Fsync::new(types::Fd(fd))
                .build()
                .user_data(operation)
        };
        // SAFETY: the filler buffer belongs to `self.prewrite`, which is kept until this
        // completion is reaped (`in_flight` blocks its removal; `exit` waits for it).
        unsafe { self.push(&entry) };
        false
    }

    /// Publishes the segment being prepared as it stands (allocated, written through only in
    /// part or not at all) because the log needs it now. Waits for a write-through chunk or
    /// sync in flight first, so no filler can land after the log's records. Returns true if
    /// the segment was published.
    pub(super) fn publish_unwritten(&mut self) -> bool {
        let Some(prewrite) = self.prewrite.as_ref() else {
            return false;
        };
        if prewrite.in_flight || prewrite.syncing {
            // Asked again once the completion arrives (the waiting append stays deferred).
            self.segment_wanted = true;
            return false;
        }
        let Some(prewrite) = self.prewrite.take() else {
            return false;
        };
        let published = layout::publish_allocated_segment(
            &self.wal_directory,
            prewrite.fd.as_raw_fd(),
            &prewrite.temporary,
            prewrite.start,
        );
        match published {
            Ok(()) => {
                self.stats
                    .segments_used_unwritten
                    .fetch_add(1, Ordering::Relaxed);
                log::debug!(
                    "store: segment {} used before write-through ({} of {} bytes written)",
                    layout::segment_name(prewrite.start),
                    prewrite.written,
                    self.segment_size
                );
                self.add_prepared_segment(prewrite.start, prewrite.fd);
                true
            }
            Err(error) => {
                let _ = durable::remove_file(&prewrite.temporary);
                self.on_prepare_failed(prewrite.start, &error);
                false
            }
        }
    }

    pub(super) fn on_prepare_failed(&mut self, start: WalPosition, error: &std::io::Error) {
        if self.full_since.is_none() {
            log::error!(
                "store: cannot prepare WAL segment {} ({error}); appends fail with a retriable \
                 error once the current segment is full",
                layout::segment_name(start)
            );
        }
        self.full_since = Some(Instant::now());
        self.stats.full.store(true, Ordering::Relaxed);
        self.fail_waiting_appends();
    }

    /// Appends waiting for a segment that cannot be prepared fail now rather than hang.
    pub(super) fn fail_waiting_appends(&mut self) {
        for worker in 0..self.ports.len() {
            let waiting: Vec<Request> = self.ports[worker].deferred.drain(..).collect();
            for request in waiting {
                if let Some(request) = self.stage(worker, request) {
                    self.ports[worker].deferred.push_back(request);
                }
            }
        }
    }

    pub(super) fn on_prewrite_write(&mut self, result: i32) {
        let Some(prewrite) = self.prewrite.as_mut() else {
            return;
        };
        prewrite.in_flight = false;
        if result <= 0 {
            let error =
                std::io::Error::from_raw_os_error(if result < 0 { -result } else { libc::EIO });
            let prewrite = self.prewrite.take();
            if let Some(prewrite) = prewrite {
                let _ = durable::remove_file(&prewrite.temporary);
                self.on_prepare_failed(prewrite.start, &error);
            }
            return;
        }
        prewrite.written += result as u64;
    }

    pub(super) fn on_prewrite_sync(&mut self, result: i32) {
        let Some(prewrite) = self.prewrite.take() else {
            return;
        };
        let published = if result < 0 {
            Err(std::io::Error::from_raw_os_error(-result))
        } else {
            layout::publish_segment(&self.wal_directory, &prewrite.temporary, prewrite.start)
        };
        match published {
            Ok(()) => {
                self.stats
                    .segments_written_through
                    .fetch_add(1, Ordering::Relaxed);
                self.add_prepared_segment(prewrite.start, prewrite.fd);
            }
            Err(error) => {
                let _ = durable::remove_file(&prewrite.temporary);
                self.on_prepare_failed(prewrite.start, &error);
            }
        }
    }

    /// A published segment joins the log's ready segments.
    pub(super) fn add_prepared_segment(&mut self, start: WalPosition, fd: OwnedFd) {
        self.segments.insert(
            start,
            Segment {
                fd,
                ranges: HashMap::new(),
                reads_in_flight: 0,
            },
        );
        self.on_space_available();
    }

    pub(super) fn on_space_available(&mut self) {
        if self.full_since.take().is_some() {
            log::info!("store: WAL segment ready again; appends resume");
        }
        self.stats.full.store(false, Ordering::Relaxed);
        self.publish_segment_stats();
    }

    pub(super) fn publish_segment_stats(&self) {
        self.stats
            .segment_count
            .store(self.segments.len() as u64, Ordering::Relaxed);
        self.stats.oldest_segment_start.store(
            self.segments.keys().next().copied().unwrap_or(0),
            Ordering::Relaxed,
        );
    }

    /// Recycles or deletes segments that hold no live data, are not being read, and lie wholly
    /// below the last checkpoint (so recovery never needs them). Asks for a checkpoint when a
    /// segment only waits for one.
    pub(super) fn reclaim_segments(&mut self) {
        let mut reclaimable = Vec::new();
        for (&start, segment) in &self.segments {
            let verdict = reclaim_verdict(
                start + self.segment_size,
                self.durable,
                !segment.ranges.is_empty() || segment.reads_in_flight > 0,
                self.checkpoints.position(),
            );
            match verdict {
                Reclaim::Stop => break,
                Reclaim::Keep => {}
                Reclaim::AfterCheckpoint => self.checkpoints.want(),
                Reclaim::Now => reclaimable.push(start),
            }
        }
        for start in reclaimable {
            let Some(segment) = self.segments.remove(&start) else {
                continue;
            };
            drop(segment);
            self.cache.remove_segment(start, start + self.segment_size);
            let old_path = layout::segment_path(&self.wal_directory, start);
            // Recycled files need no write-through, so up to twice the pool is kept that way.
            // With `prewrite: idle` a recycled file also replaces a segment still being
            // prepared (nothing of it is in flight), which would otherwise block recycling
            // for as long as appends keep its write-through waiting.
            let (recycle, replaceable) = recycle_choice(
                self.config.prewrite,
                self.prewrite
                    .as_ref()
                    .map(|prewrite| prewrite.in_flight || prewrite.syncing),
                self.ready_ahead(),
                self.config.preallocated_segments,
            );
            if recycle && replaceable {
                if let Some(prewrite) = self.prewrite.take() {
                    drop(prewrite.fd);
                    let _ = durable::remove_file(&prewrite.temporary);
                }
            }
            let outcome = if recycle {
                let new_start = self.next_segment_to_prepare();
                let new_path = layout::segment_path(&self.wal_directory, new_start);
                durable::rename(&old_path, &new_path)
                    .and_then(|()| durable::sync_directory(&self.wal_directory))
                    .and_then(|()| layout::open_direct(&new_path, false))
                    .map(|fd| {
                        self.segments.insert(
                            new_start,
                            Segment {
                                fd,
                                ranges: HashMap::new(),
                                reads_in_flight: 0,
                            },
                        );
                        log::debug!(
                            "store: recycled segment {} as {}",
                            layout::segment_name(start),
                            layout::segment_name(new_start)
                        );
                    })
            } else {
                durable::remove_file(&old_path)
                    .and_then(|()| durable::sync_directory(&self.wal_directory))
            };
            match outcome {
                Ok(()) => {
                    self.stats
                        .segments_reclaimed
                        .fetch_add(1, Ordering::Relaxed);
                    if recycle {
                        self.on_space_available();
                    }
                }
                Err(error) => log::error!(
                    "store: reclaiming segment {} failed: {error}",
                    old_path.display()
                ),
            }
        }
        self.publish_segment_stats();
    }
}

/// Which segment to prepare next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prepare {
    /// The one the log is in (it reached a segment that is not ready).
    Current,
    /// The next after the last ready one.
    Ahead,
}

/// Whether to start preparing a segment: the one the log needs now, or one ahead while fewer
/// than `preallocated` are ready beyond the current one; not while a full disk's retry delay
/// (`FULL_RETRY` since the last failure, `since_full`) runs.
pub(super) fn prepare_next(
    current_ready: bool,
    ready_ahead: usize,
    preallocated: usize,
    since_full: Option<Duration>,
) -> Option<Prepare> {
    if current_ready && ready_ahead >= preallocated {
        return None;
    }
    if since_full.is_some_and(|since| since < FULL_RETRY) {
        return None;
    }
    Some(if current_ready {
        Prepare::Ahead
    } else {
        Prepare::Current
    })
}

/// What the segment being prepared does this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PrewriteStep {
    /// `prewrite: idle` and the log waits for it with nothing else ready: used as allocated
    /// (unwritten extents), its write-through abandoned.
    PublishUnwritten,
    /// `prewrite: idle` and appends are staged or in flight: the write-through waits.
    Wait,
    /// Go on writing it through (the next filler chunk, or the final sync).
    WriteThrough,
}

/// With `prewrite: always` a segment is always written through before use; with `idle` the
/// write-through runs only while no appends are busy, and a segment the log needs first is
/// used as it stands.
pub(super) fn prewrite_step(
    mode: PrewriteMode,
    wanted: bool,
    ready_ahead: usize,
    appends_busy: bool,
) -> PrewriteStep {
    if mode == PrewriteMode::Idle && wanted && ready_ahead == 0 {
        PrewriteStep::PublishUnwritten
    } else if mode == PrewriteMode::Idle && appends_busy {
        PrewriteStep::Wait
    } else {
        PrewriteStep::WriteThrough
    }
}

/// What to do with a segment when looking for space to reclaim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reclaim {
    /// It is not wholly durable yet: neither is any segment after it.
    Stop,
    /// It still holds live batches or is being read.
    Keep,
    /// Free, but recovery may still read it: it waits for a checkpoint past its end.
    AfterCheckpoint,
    /// Free and below the last checkpoint.
    Now,
}

/// A segment ending at `end` is reclaimed once it lies wholly below the durable position, holds
/// no live batch, is not being read, and the last checkpoint covers it (recovery never reads
/// below the checkpoint).
pub(super) fn reclaim_verdict(
    end: WalPosition,
    durable: WalPosition,
    in_use: bool,
    checkpoint_position: WalPosition,
) -> Reclaim {
    if end > durable {
        Reclaim::Stop
    } else if in_use {
        Reclaim::Keep
    } else if end > checkpoint_position {
        Reclaim::AfterCheckpoint
    } else {
        Reclaim::Now
    }
}

/// Whether a reclaimed segment is recycled (renamed to a future segment: it needs no
/// write-through) rather than deleted, and whether it replaces the segment being prepared.
/// Up to twice the pool is kept by recycling. With `prewrite: idle` a recycled file replaces a
/// segment still being prepared when nothing of it is in flight (`prewrite_busy`), which would
/// otherwise block recycling for as long as appends keep its write-through waiting.
pub(super) fn recycle_choice(
    mode: PrewriteMode,
    prewrite_busy: Option<bool>,
    ready_ahead: usize,
    preallocated: usize,
) -> (bool, bool) {
    let replaceable = mode == PrewriteMode::Idle && prewrite_busy == Some(false);
    let recycle = ready_ahead < 2 * preallocated && (prewrite_busy.is_none() || replaceable);
    (recycle, replaceable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_segment_comes_first_then_the_pool_ahead() {
        assert_eq!(prepare_next(false, 0, 2, None), Some(Prepare::Current));
        assert_eq!(prepare_next(false, 5, 2, None), Some(Prepare::Current));
        assert_eq!(prepare_next(true, 1, 2, None), Some(Prepare::Ahead));
        assert_eq!(prepare_next(true, 2, 2, None), None);
    }

    #[test]
    fn a_full_disk_is_retried_only_after_the_delay() {
        let soon = Some(FULL_RETRY - Duration::from_millis(1));
        assert_eq!(prepare_next(false, 0, 2, soon), None);
        assert_eq!(
            prepare_next(false, 0, 2, Some(FULL_RETRY)),
            Some(Prepare::Current)
        );
    }

    #[test]
    fn idle_mode_uses_a_needed_segment_unwritten() {
        assert_eq!(
            prewrite_step(PrewriteMode::Idle, true, 0, true),
            PrewriteStep::PublishUnwritten
        );
        // Another segment is ready: the log takes that one, this one goes on being prepared.
        assert_eq!(
            prewrite_step(PrewriteMode::Idle, true, 1, true),
            PrewriteStep::Wait
        );
    }

    #[test]
    fn idle_mode_writes_through_only_while_appends_are_idle() {
        assert_eq!(
            prewrite_step(PrewriteMode::Idle, false, 0, true),
            PrewriteStep::Wait
        );
        assert_eq!(
            prewrite_step(PrewriteMode::Idle, false, 0, false),
            PrewriteStep::WriteThrough
        );
    }

    #[test]
    fn always_mode_always_writes_through() {
        assert_eq!(
            prewrite_step(PrewriteMode::Always, true, 0, true),
            PrewriteStep::WriteThrough
        );
        assert_eq!(
            prewrite_step(PrewriteMode::Always, false, 0, true),
            PrewriteStep::WriteThrough
        );
    }

    #[test]
    fn segments_are_reclaimed_only_below_durable_and_checkpoint_and_unused() {
        let segment = 1 << 20;
        assert_eq!(
            reclaim_verdict(segment, segment - 1, false, segment),
            Reclaim::Stop
        );
        assert_eq!(
            reclaim_verdict(segment, segment, true, segment),
            Reclaim::Keep
        );
        assert_eq!(
            reclaim_verdict(segment, 3 * segment, false, segment - 1),
            Reclaim::AfterCheckpoint
        );
        assert_eq!(
            reclaim_verdict(segment, 3 * segment, false, segment),
            Reclaim::Now
        );
    }

    #[test]
    fn recycling_keeps_up_to_twice_the_pool() {
        assert_eq!(
            recycle_choice(PrewriteMode::Always, None, 3, 2),
            (true, false)
        );
        assert_eq!(
            recycle_choice(PrewriteMode::Always, None, 4, 2),
            (false, false)
        );
    }

    #[test]
    fn a_segment_being_prepared_blocks_recycling_unless_idle_and_quiet() {
        // `always`: the write-through in progress is kept, the freed segment deleted.
        assert_eq!(
            recycle_choice(PrewriteMode::Always, Some(false), 0, 2),
            (false, false)
        );
        // `idle`: a quiet one is replaced by the recycled file, a busy one is not.
        assert_eq!(
            recycle_choice(PrewriteMode::Idle, Some(false), 0, 2),
            (true, true)
        );
        assert_eq!(
            recycle_choice(PrewriteMode::Idle, Some(true), 0, 2),
            (false, false)
        );
        // No recycling past the pool, but a quiet one still counts as replaceable.
        assert_eq!(
            recycle_choice(PrewriteMode::Idle, Some(false), 4, 2),
            (false, true)
        );
    }
}
