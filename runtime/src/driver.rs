//! The driver: one io_uring ring per runtime and the table of operations in flight.
//!
//! Every operation gets a slot in a slab; its key is the SQE's `user_data`, so a completion finds
//! its operation in O(1). A slot moves through [`Lifecycle`]:
//!
//! ```text
//!   Submitted ──poll──► Waiting(waker) ──CQE──► Completed(result) ──poll──► (removed)
//!        │                    │
//!        └──── future dropped ┴──► Cancelled(parked data) ──CQE──► (removed, data dropped)
//! ```
//!
//! A dropped operation's data (its buffer, socket address, iovec array...) is parked in its slot
//! and an ASYNC_CANCEL is queued; the data is dropped only when the operation's own completion
//! arrives, because until then the kernel may still write into it.
//!
//! The ring is set up with SINGLE_ISSUER and DEFER_TASKRUN (plus TASKRUN_FLAG, so user space can
//! see when deferred completions are waiting) when the kernel accepts them, else with
//! COOP_TASKRUN, else plainly. FAST_POLL (sockets armed for readiness inside the kernel instead
//! of punted to worker threads) and EXT_ARG (a timeout on the wait itself) are required.

use std::any::Any;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{opcode, squeue, types, EnterFlags, IoUring};
use slab::Slab;

/// `user_data` of the read of the runtime's wake-up eventfd.
const REMOTE_WAKE_TAG: u64 = u64::MAX;
/// `user_data` of requests whose completion nobody waits for (ASYNC_CANCEL).
const IGNORED_TAG: u64 = u64::MAX - 1;

/// How long dropping a runtime waits for the kernel to finish cancelled operations before it
/// gives up and leaks their buffers (freeing them could let the kernel write into reused memory).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// The result of one completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) result: i32,
    pub(crate) flags: u32,
}

impl Completion {
    /// The kernel's result as `io::Result`: a negative value is an errno.
    pub(crate) fn into_result(self) -> io::Result<u32> {
        if self.result < 0 {
            Err(io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as u32)
        }
    }
}

pub(crate) enum Lifecycle {
    /// In the kernel; nobody has polled for it yet.
    Submitted,
    /// In the kernel; this task waits for it.
    Waiting(Waker),
    /// The completion arrived and waits to be picked up.
    Completed(Completion),
    /// The future was dropped; its data stays here until the completion arrives.
    Cancelled(#[allow(dead_code)] Box<dyn Any>),
}

/// Which optional ring features the kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingMode {
    /// SINGLE_ISSUER: only this thread submits, the kernel skips some locking.
    pub single_issuer: bool,
    /// DEFER_TASKRUN: completions are processed when this thread enters the kernel.
    pub defer_taskrun: bool,
    /// SQPOLL: a kernel thread polls the submission queue.
    pub sqpoll: bool,
    /// Waits are not accounted as iowait (IORING_ENTER_NO_IOWAIT, Linux 6.15+).
    pub no_iowait: bool,
}

pub(crate) struct Driver {
    ring: IoUring,
    ops: Slab<Lifecycle>,
    cancelled: usize,
    mode: RingMode,
    remote_eventfd: RawFd,
    /// Where the eventfd read lands; boxed so its address is stable while the read is in flight.
    remote_wake_buffer: Box<u64>,
    remote_wake_in_flight: bool,
    enters: u64,
    /// The kernel accepts IORING_ENTER_NO_IOWAIT (Linux 6.15+).
    no_iowait: bool,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("mode", &self.mode)
            .field("ops", &self.ops.len())
            .field("cancelled", &self.cancelled)
            .finish()
    }
}

impl Driver {
    pub(crate) fn new(
        entries: u32,
        defer_taskrun: bool,
        sqpoll_idle_ms: Option<u32>,
        remote_eventfd: RawFd,
    ) -> io::Result<Driver> {
        let (ring, mut mode) = setup_ring(entries, defer_taskrun, sqpoll_idle_ms)?;
        let params = ring.params();
        mode.no_iowait = params.is_feature_no_iowait();
        if !params.is_feature_fast_poll() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's io_uring lacks IORING_FEAT_FAST_POLL (Linux 5.7 or newer is \
                 required): sockets would be served by worker threads",
            ));
        }
        if !params.is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's io_uring lacks IORING_FEAT_EXT_ARG (Linux 5.11 or newer is \
                 required) for timed waits",
            ));
        }
        let no_iowait = mode.no_iowait;
        log::debug!(
            "io_uring ring ready: {mode:?}, {} entries",
            params.sq_entries()
        );
        Ok(Driver {
            ring,
            ops: Slab::with_capacity(entries as usize),
            cancelled: 0,
            mode,
            remote_eventfd,
            remote_wake_buffer: Box::new(0),
            remote_wake_in_flight: false,
            enters: 0,
            no_iowait,
        })
    }

    pub(crate) fn mode(&self) -> RingMode {
        self.mode
    }

    pub(crate) fn ops_in_flight(&self) -> usize {
        self.ops
            .iter()
            .filter(|(_, op)| !matches!(op, Lifecycle::Completed(_)))
            .count()
    }

    pub(crate) fn ops_cancelled(&self) -> usize {
        self.cancelled
    }

    /// Number of `io_uring_enter` calls made so far.
    pub(crate) fn enters(&self) -> u64 {
        self.enters
    }

    /// Queues an SQE, flushing the queue to the kernel first if it is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: every caller builds `entry` from memory owned by an operation slot (or by the
        // driver) that stays alive until the entry's completion has been reaped.
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        self.enter_submit()?;
        // SAFETY: as above.
        unsafe { self.ring.submission().push(entry) }.map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "io_uring submission queue is full even after flushing",
            )
        })
    }

    /// Registers one operation per entry and queues the entries in order (a linked chain stays
    /// contiguous). Each entry gets its operation's key as `user_data`. Returns the keys.
    pub(crate) fn submit(&mut self, entries: &mut [squeue::Entry]) -> io::Result<KeyRange> {
        // Make room for the whole chain before queueing any of it: an entry that reached the
        // queue must never be abandoned (the caller would free memory the kernel will use), and
        // a linked entry must never be split from its successor.
        if self.sq_free() < entries.len() {
            self.enter_submit()?;
            if self.sq_free() < entries.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "io_uring submission queue is still full after flushing it",
                ));
            }
        }
        let mut keys = KeyRange::default();
        for entry in entries.iter_mut() {
            let key = self.ops.insert(Lifecycle::Submitted);
            *entry = entry.clone().user_data(key as u64);
            keys.push(key);
        }
        let mut submission = self.ring.submission();
        for entry in entries.iter() {
            // SAFETY: every entry points only into memory owned by its operation's data, which
            // the `Op` keeps (or parks in the driver) until the completion has been reaped.
            let pushed = unsafe { submission.push(entry) };
            debug_assert!(pushed.is_ok(), "room was checked above");
        }
        Ok(keys)
    }

    fn sq_free(&mut self) -> usize {
        let submission = self.ring.submission();
        submission.capacity() - submission.len()
    }

    /// Checks an operation: its completion if it arrived, else registers the waker.
    pub(crate) fn poll_op(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        let Some(slot) = self.ops.get_mut(key) else {
            // Only reachable through a bug in this crate; an error result keeps callers sound.
            debug_assert!(false, "poll of unknown operation {key}");
            return Poll::Ready(Completion {
                result: -libc::EBADF,
                flags: 0,
            });
        };
        match slot {
            Lifecycle::Completed(completion) => {
                let completion = *completion;
                self.ops.remove(key);
                Poll::Ready(completion)
            }
            Lifecycle::Waiting(waker) if waker.will_wake(cx.waker()) => Poll::Pending,
            Lifecycle::Submitted | Lifecycle::Waiting(_) => {
                *slot = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Cancelled(_) => {
                debug_assert!(false, "poll of cancelled operation {key}");
                Poll::Pending
            }
        }
    }

    /// The future owning operation `key` was dropped. If the kernel is done with it, `data` is
    /// returned to be dropped by the caller; otherwise it is parked and a cancel is queued.
    pub(crate) fn drop_op(&mut self, key: usize, data: Box<dyn Any>) -> Option<Box<dyn Any>> {
        let slot = self.ops.get_mut(key)?;
        match slot {
            Lifecycle::Completed(_) => {
                self.ops.remove(key);
                Some(data)
            }
            Lifecycle::Cancelled(_) => Some(data),
            Lifecycle::Submitted | Lifecycle::Waiting(_) => {
                *slot = Lifecycle::Cancelled(data);
                self.cancelled += 1;
                let cancel = opcode::AsyncCancel::new(key as u64)
                    .build()
                    .user_data(IGNORED_TAG);
                if let Err(error) = self.push(&cancel) {
                    // The operation still completes on its own (or at ring teardown); its data
                    // stays parked until then either way.
                    log::warn!("could not queue cancel of operation {key}: {error}");
                }
                None
            }
        }
    }

    /// Makes sure a read of the wake-up eventfd is queued, so a write from another thread ends a
    /// wait in the kernel.
    pub(crate) fn arm_remote_wake(&mut self) {
        if self.remote_wake_in_flight {
            return;
        }
        let entry = opcode::Read::new(
            types::Fd(self.remote_eventfd),
            (&mut *self.remote_wake_buffer as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(REMOTE_WAKE_TAG);
        match self.push(&entry) {
            Ok(()) => self.remote_wake_in_flight = true,
            Err(error) => log::warn!("could not queue the wake-up read: {error}"),
        }
    }

    /// Flushes queued SQEs without waiting (only the submit part of a turn).
    fn enter_submit(&mut self) -> io::Result<()> {
        self.enters += 1;
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(error) if is_transient(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Submits queued SQEs and collects finished work without blocking. Skips the syscall when
    /// there is nothing to submit and the kernel has no deferred completions for us.
    pub(crate) fn submit_and_reap(&mut self) {
        let needed = {
            let submission = self.ring.submission();
            !submission.is_empty() || submission.taskrun() || submission.cq_overflow()
        };
        if !needed {
            return;
        }
        if let Err(error) = self.enter_submit() {
            log::error!("io_uring_enter failed: {error}");
        }
    }

    /// Submits queued SQEs and waits for at least one completion or `timeout`.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) {
        self.enters += 1;
        // The ring always has the wake-up eventfd read in flight, so without NO_IOWAIT an idle
        // runtime would be reported as waiting for I/O (iowait, /proc/pressure/io).
        let flags = if self.no_iowait {
            EnterFlags::NO_IOWAIT
        } else {
            EnterFlags::empty()
        };
        let submitter = self.ring.submitter();
        let result = match timeout {
            Some(timeout) => {
                let timespec = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&timespec);
                submitter.submit_with_args_and_flags(1, &args, flags)
            }
            None => submitter.submit_with_args_and_flags(1, &SubmitArgs::new(), flags),
        };
        match result {
            Ok(_) => {}
            Err(error) if is_transient(&error) => {}
            Err(error) => log::error!("io_uring_enter failed: {error}"),
        }
    }

    /// Hands every available completion to its operation.
    pub(crate) fn dispatch_completions(&mut self) {
        let mut completion_queue = self.ring.completion();
        completion_queue.sync();
        for cqe in &mut completion_queue {
            let user_data = cqe.user_data();
            let completion = Completion {
                result: cqe.result(),
                flags: cqe.flags(),
            };
            match user_data {
                IGNORED_TAG => {}
                REMOTE_WAKE_TAG => self.remote_wake_in_flight = false,
                key => {
                    let key = key as usize;
                    let Some(slot) = self.ops.get_mut(key) else {
                        log::warn!("completion for unknown operation {key}");
                        continue;
                    };
                    match std::mem::replace(slot, Lifecycle::Completed(completion)) {
                        Lifecycle::Submitted => {}
                        Lifecycle::Waiting(waker) => waker.wake(),
                        Lifecycle::Completed(_) => {
                            debug_assert!(false, "second completion for operation {key}");
                        }
                        Lifecycle::Cancelled(data) => {
                            // The kernel is done with the parked data: free it now.
                            self.ops.remove(key);
                            self.cancelled -= 1;
                            drop(data);
                        }
                    }
                }
            }
        }
    }

    /// Cancels everything still in flight and waits (bounded) for the kernel to let go of the
    /// memory. Whatever is still in flight after that is leaked, never freed.
    pub(crate) fn shutdown(&mut self) {
        let keys: Vec<usize> = self
            .ops
            .iter()
            .filter(|(_, op)| !matches!(op, Lifecycle::Completed(_)))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            let cancel = opcode::AsyncCancel::new(key as u64)
                .build()
                .user_data(IGNORED_TAG);
            let _ = self.push(&cancel);
        }
        if self.remote_wake_in_flight {
            let cancel = opcode::AsyncCancel::new(REMOTE_WAKE_TAG)
                .build()
                .user_data(IGNORED_TAG);
            let _ = self.push(&cancel);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            self.dispatch_completions();
            let busy = self.remote_wake_in_flight
                || self
                    .ops
                    .iter()
                    .any(|(_, op)| !matches!(op, Lifecycle::Completed(_)));
            if !busy {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.submit_and_wait(Some((deadline - now).min(Duration::from_millis(10))));
        }
        log::error!("runtime dropped with operations still in flight; leaking their buffers");
        for op in self.ops.drain() {
            std::mem::forget(op);
        }
        if self.remote_wake_in_flight {
            std::mem::forget(std::mem::replace(&mut self.remote_wake_buffer, Box::new(0)));
        }
    }
}

/// Keys of the operations registered by one [`Driver::submit`] call (at most two: a linked
/// write and its sync).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyRange {
    keys: [usize; 2],
    len: usize,
}

impl KeyRange {
    fn push(&mut self, key: usize) {
        assert!(
            self.len < self.keys.len(),
            "chains are at most two operations long"
        );
        self.keys[self.len] = key;
        self.len += 1;
    }
    pub(crate) fn get(&self, index: usize) -> usize {
        assert!(index < self.len);
        self.keys[index]
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINTR) | Some(libc::ETIME) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

fn setup_ring(
    entries: u32,
    defer_taskrun: bool,
    sqpoll_idle_ms: Option<u32>,
) -> io::Result<(IoUring, RingMode)> {
    let cq_entries = entries.saturating_mul(2);
    if let Some(idle_ms) = sqpoll_idle_ms {
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_sqpoll(idle_ms)
            .setup_single_issuer()
            .build(entries)?;
        let mode = RingMode {
            single_issuer: true,
            defer_taskrun: false,
            sqpoll: true,
            no_iowait: false,
        };
        return Ok((ring, mode));
    }
    if defer_taskrun {
        match IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(entries)
        {
            Ok(ring) => {
                let mode = RingMode {
                    single_issuer: true,
                    defer_taskrun: true,
                    sqpoll: false,
                    no_iowait: false,
                };
                return Ok((ring, mode));
            }
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                log::info!("io_uring DEFER_TASKRUN unavailable, falling back to COOP_TASKRUN");
            }
            Err(error) => return Err(error),
        }
    }
    match IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(entries)
    {
        Ok(ring) => {
            let mode = RingMode {
                single_issuer: true,
                defer_taskrun: false,
                sqpoll: false,
                no_iowait: false,
            };
            Ok((ring, mode))
        }
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            log::info!("io_uring SINGLE_ISSUER unavailable, using a plain ring");
            let ring = IoUring::builder().setup_cqsize(cq_entries).build(entries)?;
            let mode = RingMode {
                single_issuer: false,
                defer_taskrun: false,
                sqpoll: false,
                no_iowait: false,
            };
            Ok((ring, mode))
        }
        Err(error) => Err(error),
    }
}
