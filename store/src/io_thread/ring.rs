//! The IO thread's io_uring rings: set-up (the interrupt-driven ring, and the IOPOLL ring for
//! WAL writes and block reads where the device polls), pushing entries, submitting, reaping
//! completions and dispatching each to its owner by the operation kind in its user data.
//!
//! Entries flow in through `push` / `push_data` from the modules that own their buffers; they
//! come back through `dispatch`, which hands each completion to the handler of its kind.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};
use runtime::buf::AlignedBuf;

use super::IoThread;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::layout::{self};
use crate::PAGE_BYTES;

pub(super) const KIND_SHIFT: u32 = 56;
pub(super) const OP_EVENTFD: u64 = 1;
pub(super) const OP_GROUP_WRITE: u64 = 2;
pub(super) const OP_GROUP_SYNC: u64 = 3;
pub(super) const OP_BLOCK_READ: u64 = 4;
pub(super) const OP_PREWRITE: u64 = 5;
pub(super) const OP_PREWRITE_SYNC: u64 = 6;

/// Longest sleep of an idle IO thread: bounds how late a periodic checkpoint or a retry of a
/// failed segment preparation can be.
pub(super) const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Longest sleep while the checkpoint writer thread is busy.
pub(super) const CHECKPOINT_POLL: Duration = Duration::from_millis(2);

pub(super) fn user_data(kind: u64, value: u64) -> u64 {
    debug_assert!(value < 1 << KIND_SHIFT);
    (kind << KIND_SHIFT) | value
}

impl IoThread {
    /// # Safety
    /// Every buffer the entry points to must stay alive until its completion is reaped.
    pub(super) unsafe fn push(&mut self, entry: &squeue::Entry) {
        let mut retry = SubmitRetry::default();
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            let submitted = self.ring.submit().map_err(errno_of);
            // Completions reaped now are dispatched at the next turn: handlers may be halfway
            // through their own bookkeeping while they push. Reaping frees the completion
            // queue, so a kernel refusing entries for lack of room there (EBUSY) recovers.
            self.reaped.extend(
                self.ring
                    .completion()
                    .map(|completion| (completion.user_data(), completion.result())),
            );
            if let SubmitStep::GiveUp { errno } = retry.after_submit(submitted) {
                self.give_up(entry, errno);
                return;
            }
        }
    }

    /// Pushes a WAL write or block read: onto the polled ring if there is one and `polled` says
    /// it carries this kind of operation.
    ///
    /// # Safety
    /// Every buffer the entry points to must stay alive until its completion is reaped.
    pub(super) unsafe fn push_data(&mut self, entry: &squeue::Entry, polled: bool) {
        let Some(poll_ring) = self.poll_ring.as_mut().filter(|_| polled) else {
            // SAFETY: forwarded from the caller.
            unsafe { self.push(entry) };
            return;
        };
        let mut retry = SubmitRetry::default();
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { poll_ring.submission().push(entry) }.is_ok() {
                self.polled_in_flight += 1;
                return;
            }
            let submitted = poll_ring.submit().map_err(errno_of);
            // As in `push`: reaped now, dispatched at the next turn.
            let before = self.reaped.len();
            self.reaped.extend(
                poll_ring
                    .completion()
                    .map(|completion| (completion.user_data(), completion.result())),
            );
            let reaped = self.reaped.len() - before;
            self.polled_in_flight -= reaped.min(self.polled_in_flight);
            self.stats
                .polled_completions
                .fetch_add(reaped as u64, Ordering::Relaxed);
            if let SubmitStep::GiveUp { errno } = retry.after_submit(submitted) {
                self.give_up(entry, errno);
                return;
            }
        }
    }

    /// The kernel keeps refusing entries: the operation completes with `errno` at the next turn
    /// instead, through the same handler a kernel failure would reach. It never reached the
    /// kernel, so its buffers are free as soon as that handler releases them.
    fn give_up(&mut self, entry: &squeue::Entry, errno: i32) {
        log::error!(
            "store: io_uring keeps refusing submissions (errno {errno}); failing the operation"
        );
        self.reaped.push((entry.get_user_data(), -errno));
    }

    /// Submits what the polled ring holds and reaps what completed, polling the device once.
    pub(super) fn poll_data(&mut self) {
        let Some(poll_ring) = self.poll_ring.as_mut() else {
            return;
        };
        if self.polled_in_flight == 0 && poll_ring.submission().is_empty() {
            return;
        }
        // On an IOPOLL ring this enters with GETEVENTS: one pass over the device's poll queues.
        if let Err(error) = poll_ring.submit() {
            let errno = error.raw_os_error();
            if errno != Some(libc::EINTR) && errno != Some(libc::EAGAIN) {
                log::error!("store: polled io_uring enter failed: {error}");
            }
        }
        let entries: Vec<(u64, i32)> = poll_ring
            .completion()
            .map(|entry| (entry.user_data(), entry.result()))
            .collect();
        self.polled_in_flight -= entries.len().min(self.polled_in_flight);
        self.stats
            .polled_completions
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        for (data, result) in entries {
            self.dispatch(data, result);
        }
    }

    pub(super) fn submit_and_reap(&mut self, sleep: bool) {
        let result = if sleep {
            // A checkpoint being written is noticed soon after it is durable: a segment may wait
            // for it to be reclaimed.
            let wait = if self.checkpoints.busy() {
                CHECKPOINT_POLL
            } else {
                IDLE_WAIT
            };
            let timeout = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&timeout);
            self.ring.submitter().submit_with_args(1, &args)
        } else {
            self.ring.submit()
        };
        if let Err(error) = result {
            let errno = error.raw_os_error();
            if errno != Some(libc::ETIME)
                && errno != Some(libc::EINTR)
                && errno != Some(libc::EBUSY)
            {
                log::error!("store: io_uring wait failed: {error}");
            }
        }
        // Completions reaped while pushing came first.
        let mut entries = std::mem::take(&mut self.reaped);
        entries.extend(
            self.ring
                .completion()
                .map(|entry| (entry.user_data(), entry.result())),
        );
        for (data, result) in entries {
            self.dispatch(data, result);
        }
        self.poll_data();
    }

    pub(super) fn dispatch(&mut self, data: u64, result: i32) {
        // Group and segment writes and syncs were reported to `runtime::durable` at submission.
        runtime::durable::ring_completed(self.ring.as_raw_fd(), data, result);
        let value = data & ((1 << KIND_SHIFT) - 1);
        match data >> KIND_SHIFT {
            OP_EVENTFD => {
                if result < 0 {
                    log::error!("store: mailbox eventfd poll failed: errno {}", -result);
                } else {
                    self.drain_eventfd(value as usize);
                }
                self.submit_eventfd_poll(value as usize);
            }
            OP_GROUP_WRITE => self.on_group_write(value, result),
            OP_GROUP_SYNC => self.on_group_sync(result),
            OP_BLOCK_READ => self.on_block_read(value as usize, result),
            OP_PREWRITE => self.on_prewrite_write(result),
            OP_PREWRITE_SYNC => self.on_prewrite_sync(result),
            other => log::error!("store: unexpected completion kind {other}"),
        }
    }
}

/// Builds the IO thread's ring from the configuration, logging the modes in use.
pub(super) fn build_ring(config: &StoreConfig) -> Result<IoUring> {
    let uring = &config.uring;
    let mut builder = IoUring::builder();
    builder.setup_cqsize(uring.queue_depth * 4);
    if uring.sqpoll {
        builder.setup_sqpoll(uring.sqpoll_idle_ms);
        if let Some(cpu) = uring.sqpoll_cpu {
            builder.setup_sqpoll_cpu(cpu);
        }
    } else {
        builder.setup_coop_taskrun();
    }
    let ring = builder
        .build(uring.queue_depth)
        .map_err(|error| Error::io("creating the IO thread's io_uring", &error))?;
    log::info!(
        "store: IO thread ring: sqpoll {} (cpu {:?}, idle {} ms), queue depth {}, sync {:?}",
        uring.sqpoll,
        uring.sqpoll_cpu,
        uring.sqpoll_idle_ms,
        uring.queue_depth,
        config.sync
    );
    Ok(ring)
}

/// Which operations go through the polled ring.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PolledOps {
    pub(super) writes: bool,
    pub(super) reads: bool,
}

/// The polled ring for WAL writes and block reads, when `uring.iopoll` asks for one and the
/// device can poll (or the configuration insists), with what a probe found it can carry. None,
/// with a log line saying why, otherwise.
pub(super) fn build_poll_ring(config: &StoreConfig) -> Option<(IoUring, PolledOps)> {
    let uring = &config.uring;
    if !uring.iopoll {
        return None;
    }
    let polls = device_polls(&config.path);
    if polls != Some(true) && !polling_forced(config) {
        log::warn!(
            "store: uring iopoll requested but the device of {} has no poll queues ({}); WAL I/O \
             completes by interrupt",
            config.path.display(),
            match polls {
                Some(_) => "queue/io_poll is 0",
                None => "queue/io_poll not found",
            }
        );
        return None;
    }
    let mut builder = IoUring::builder();
    builder.setup_iopoll().setup_cqsize(uring.queue_depth * 4);
    let mut ring = match builder.build(uring.queue_depth) {
        Ok(ring) => ring,
        Err(error) => {
            log::warn!(
                "store: cannot create a polled io_uring ({error}); WAL I/O completes by interrupt"
            );
            return None;
        }
    };
    let polled = match probe_polled(&mut ring, &config.path) {
        Ok(polled) => polled,
        Err(error) => {
            log::warn!(
                "store: probing polled I/O in {} failed ({error}); WAL I/O completes by interrupt",
                config.path.display()
            );
            return None;
        }
    };
    let describe = |ok: bool| {
        if ok {
            "polled"
        } else {
            "by interrupt (refused polled)"
        }
    };
    log::info!(
        "store: IOPOLL ring{}: WAL writes {}, block reads {}",
        if polls == Some(true) {
            ""
        } else {
            " on a device without poll queues (forced by fault injection)"
        },
        describe(polled.writes),
        describe(polled.reads)
    );
    if !polled.writes && !polled.reads {
        return None;
    }
    Some((ring, polled))
}

/// Writes and reads one page of a scratch file in `directory` through the polled ring, to learn
/// which of the two the kernel completes there.
pub(super) fn probe_polled(
    ring: &mut IoUring,
    directory: &std::path::Path,
) -> std::io::Result<PolledOps> {
    let path = directory.join("iopoll-probe.tmp");
    let fd = layout::open_direct(&path, true)?;
    // The descriptor keeps the file alive; nothing is left behind on disk.
    runtime::durable::remove_file(&path)?;
    let mut buffer = AlignedBuf::zeroed(PAGE_BYTES);
    let write = opcode::Write::new(
        types::Fd(fd.as_raw_fd()),
        buffer.as_mut_ptr(),
        PAGE_BYTES as u32,
    )
    .offset(0)
    .build();
    // SAFETY: `buffer` and `fd` outlive the call, which waits for this operation's completion.
    let written = unsafe { run_one(ring, &write) }?;
    let read = opcode::Read::new(
        types::Fd(fd.as_raw_fd()),
        buffer.as_mut_ptr(),
        PAGE_BYTES as u32,
    )
    .offset(0)
    .build();
    // SAFETY: as above.
    let read = unsafe { run_one(ring, &read) }?;
    Ok(PolledOps {
        writes: written == PAGE_BYTES as i32,
        reads: read == PAGE_BYTES as i32,
    })
}

/// Submits one operation on an otherwise idle ring and waits for its completion.
///
/// # Safety
/// The memory the entry points to must stay alive until this returns.
pub(super) unsafe fn run_one(ring: &mut IoUring, entry: &squeue::Entry) -> std::io::Result<i32> {
    // SAFETY: forwarded from the caller; the ring is idle, so the queue has room.
    unsafe { ring.submission().push(entry) }
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EBUSY))?;
    loop {
        ring.submit_and_wait(1)?;
        if let Some(completion) = ring.completion().next() {
            return Ok(completion.result());
        }
    }
}

/// Whether the block device holding `path` has poll queues (`queue/io_poll` in sysfs).
pub(super) fn device_polls(path: &std::path::Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(device), libc::minor(device));
    let base = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let read = |path: PathBuf| std::fs::read_to_string(path).ok();
    let value = read(base.join("queue/io_poll")).or_else(|| read(base.join("../queue/io_poll")))?;
    Some(value.trim() == "1")
}

/// The polled ring is used even where the device has no poll queues (a test setting).
#[cfg(feature = "fault-injection")]
fn polling_forced(config: &StoreConfig) -> bool {
    config.faults.iopoll_without_poll_queues
}

#[cfg(not(feature = "fault-injection"))]
fn polling_forced(_: &StoreConfig) -> bool {
    false
}

fn errno_of(error: std::io::Error) -> i32 {
    error.raw_os_error().unwrap_or(libc::EIO)
}

/// Failed submissions in a row (the queue still full after each) before an entry is given up.
pub(super) const MAX_SUBMIT_ATTEMPTS: u32 = 1024;

/// What to do after a full submission queue and one `submit()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubmitStep {
    /// Reap completions and try to push again.
    Retry,
    /// Stop: the operation fails with this errno.
    GiveUp { errno: i32 },
}

/// The retry policy for pushing onto a full submission queue. Completions are reaped between
/// attempts (that clears a completion queue overflow, EBUSY); a submit that moved entries to
/// the kernel is progress and starts the count again; an interrupted or refused one (EINTR,
/// EAGAIN, EBUSY, or nothing submitted) counts, and after `MAX_SUBMIT_ATTEMPTS` of them in a row
/// the entry is given up; any other error gives up at once. So a kernel that keeps refusing
/// fails operations (which their owners report as I/O errors) instead of spinning the IO thread
/// forever.
#[derive(Debug, Default)]
pub(super) struct SubmitRetry {
    refusals: u32,
}

impl SubmitRetry {
    /// `submitted` is what `submit()` returned: entries handed to the kernel, or an errno.
    pub(super) fn after_submit(
        &mut self,
        submitted: std::result::Result<usize, i32>,
    ) -> SubmitStep {
        let errno = match submitted {
            Ok(entries) if entries > 0 => {
                self.refusals = 0;
                return SubmitStep::Retry;
            }
            Ok(_) => libc::EBUSY,
            Err(errno) if [libc::EINTR, libc::EAGAIN, libc::EBUSY].contains(&errno) => errno,
            Err(errno) => return SubmitStep::GiveUp { errno },
        };
        self.refusals += 1;
        if self.refusals >= MAX_SUBMIT_ATTEMPTS {
            SubmitStep::GiveUp { errno }
        } else {
            SubmitStep::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_keeps_kind_and_value_apart() {
        let data = user_data(OP_GROUP_WRITE, (1 << KIND_SHIFT) - 1);
        assert_eq!(data >> KIND_SHIFT, OP_GROUP_WRITE);
        assert_eq!(data & ((1 << KIND_SHIFT) - 1), (1 << KIND_SHIFT) - 1);
    }

    #[test]
    fn a_kernel_that_keeps_refusing_is_given_up_on() {
        for errno in [libc::EBUSY, libc::EAGAIN, libc::EINTR] {
            let mut retry = SubmitRetry::default();
            for _ in 1..MAX_SUBMIT_ATTEMPTS {
                assert_eq!(retry.after_submit(Err(errno)), SubmitStep::Retry);
            }
            assert_eq!(retry.after_submit(Err(errno)), SubmitStep::GiveUp { errno });
        }
    }

    #[test]
    fn nothing_submitted_counts_as_a_refusal() {
        let mut retry = SubmitRetry::default();
        for _ in 1..MAX_SUBMIT_ATTEMPTS {
            assert_eq!(retry.after_submit(Ok(0)), SubmitStep::Retry);
        }
        assert_eq!(
            retry.after_submit(Ok(0)),
            SubmitStep::GiveUp { errno: libc::EBUSY }
        );
    }

    #[test]
    fn progress_starts_the_count_again() {
        let mut retry = SubmitRetry::default();
        for _ in 0..2 * MAX_SUBMIT_ATTEMPTS {
            assert_eq!(retry.after_submit(Err(libc::EBUSY)), SubmitStep::Retry);
            assert_eq!(retry.after_submit(Ok(3)), SubmitStep::Retry);
        }
    }

    #[test]
    fn other_errors_give_up_at_once() {
        let mut retry = SubmitRetry::default();
        assert_eq!(
            retry.after_submit(Err(libc::EBADF)),
            SubmitStep::GiveUp { errno: libc::EBADF }
        );
    }
}
