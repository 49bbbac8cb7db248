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

use super::ring::{user_data, OP_PREWRITE, OP_PREWRITE_SYNC};
use super::IoThread;
use crate::checkpoint;
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
            let current_missing = !self.segments.contains_key(&current);
            if !current_missing && self.ready_ahead() >= self.config.preallocated_segments {
                return false;
            }
            if let Some(since) = self.full_since {
                if since.elapsed() < FULL_RETRY {
                    return false;
                }
            }
            let start = if current_missing {
                current
            } else {
                self.next_segment_to_prepare()
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
        let idle_mode = self.config.prewrite == PrewriteMode::Idle;
        if idle_mode && wanted && self.ready_ahead() == 0 {
            return self.publish_unwritten();
        }
        if idle_mode && self.appends_busy() {
            return false;
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
        let entry = if prewrite.written < segment_size {
            let len = (segment_size - prewrite.written).min(prewrite.filler.len() as u64);
            opcode::Write::new(types::Fd(fd), prewrite.filler.as_mut_ptr(), len as u32)
                .offset(prewrite.written)
                .build()
                .user_data(user_data(OP_PREWRITE, 0))
        } else {
            prewrite.syncing = true;
            opcode::Fsync::new(types::Fd(fd))
                .build()
                .user_data(user_data(OP_PREWRITE_SYNC, 0))
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
                let _ = std::fs::remove_file(&prewrite.temporary);
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
                let _ = std::fs::remove_file(&prewrite.temporary);
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
                let _ = std::fs::remove_file(&prewrite.temporary);
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
            let end = start + self.segment_size;
            if end > self.durable {
                break;
            }
            if !segment.ranges.is_empty() || segment.reads_in_flight > 0 {
                continue;
            }
            if end > self.checkpoints.position() {
                self.checkpoints.want();
                continue;
            }
            reclaimable.push(start);
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
            let replaceable = self.config.prewrite == PrewriteMode::Idle
                && self
                    .prewrite
                    .as_ref()
                    .is_some_and(|prewrite| !prewrite.in_flight && !prewrite.syncing);
            let recycle = self.ready_ahead() < 2 * self.config.preallocated_segments
                && (self.prewrite.is_none() || replaceable);
            if recycle && replaceable {
                if let Some(prewrite) = self.prewrite.take() {
                    drop(prewrite.fd);
                    let _ = std::fs::remove_file(&prewrite.temporary);
                }
            }
            let outcome = if recycle {
                let new_start = self.next_segment_to_prepare();
                let new_path = layout::segment_path(&self.wal_directory, new_start);
                std::fs::rename(&old_path, &new_path)
                    .and_then(|()| checkpoint::sync_directory(&self.wal_directory))
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
                std::fs::remove_file(&old_path)
                    .and_then(|()| checkpoint::sync_directory(&self.wal_directory))
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
