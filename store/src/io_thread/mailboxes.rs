//! The mailboxes between the IO thread and the workers (one request and one completion mailbox
//! per worker) and the owner's control mailbox.
//!
//! Requests are drained into staging (or a read), completions are collected in a per-worker
//! outbox and sent in one batch per loop turn. Before the thread sleeps it arms the mailboxes
//! and keeps a poll of each eventfd in the ring, so a busy worker pays no syscall for wake-ups.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use io_uring::{opcode, types};
use runtime::mailbox::{Receiver, Sender, TryRecvError};

use super::group::EAGER_GROUP_BYTES;
use super::ring::{user_data, OP_EVENTFD};
use super::IoThread;
use crate::error::Result;
use crate::message::{Completion, Control, Outcome, Request};

pub(super) struct WorkerPort {
    pub(super) requests: Receiver<Request>,
    pub(super) completions: Sender<Completion>,
    pub(super) outbox: Vec<Completion>,
    /// A request drained but not yet staged (the staging group was full): it goes first.
    pub(super) deferred: VecDeque<Request>,
    /// The completion mailbox's receiver is gone.
    pub(super) closed: bool,
    /// The request mailbox's sender is gone and it is empty.
    pub(super) requests_closed: bool,
}

impl IoThread {
    pub(super) fn drain_control(&mut self) -> bool {
        let mut progress = false;
        while let Ok(control) = self.control.try_recv() {
            progress = true;
            match control {
                Control::Shutdown => self.shutting_down = true,
                Control::Halt => self.halting = true,
                Control::Checkpoint => self.checkpoints.want(),
            }
        }
        if self.control.is_closed() && !self.shutting_down {
            // The owner handle is gone without a word: treat it as a shutdown.
            self.shutting_down = true;
        }
        progress
    }

    pub(super) fn drain_workers(&mut self) -> bool {
        let mut progress = false;

        for worker in 0..self.ports.len() {
            while let Some(request) = self.ports[worker].deferred.pop_front() {
                match self.stage(worker, request) {
                    None => progress = true,
                    Some(request) => {
                        self.ports[worker].deferred.push_front(request);
                        break;
                    }
                }
            }
            if !self.ports[worker].deferred.is_empty() {
                continue;
            }
            loop {
                match self.ports[worker].requests.try_recv() {
                    Ok(request) => {
                        progress = true;
                        if let Some(request) = self.stage(worker, request) {
                            self.ports[worker].deferred.push_back(request);
                            break;
                        }
                        if self.staging.used_bytes() >= EAGER_GROUP_BYTES {
                            // Start writing what is staged while the rest is still copied.
                            self.maybe_submit_group();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        // The worker is gone; its mailbox never needs a wake-up again.
                        self.ports[worker].requests_closed = true;
                        break;
                    }
                }
            }
        }
        progress
    }

    pub(super) fn complete(&mut self, worker: usize, slot: u32, outcome: Result<Outcome>) {
        self.ports[worker].outbox.push(Completion { slot, outcome });
    }

    pub(super) fn flush_outboxes(&mut self) {
        for port in &mut self.ports {
            if port.outbox.is_empty() {
                continue;
            }
            if port.closed || port.completions.send_batch(&mut port.outbox).is_err() {
                port.closed = true;
                port.outbox.clear();
            }
        }
    }

    pub(super) fn arm_all(&mut self) -> bool {
        if !self.control.arm() {
            return false;
        }
        if !self.could_submit() {
            // New requests could not be written before a group completes anyway: let that
            // completion wake us, not every request (one wake-up per group, not per burst).
            // They are drained, and reads started, right after.
            return true;
        }
        for index in 0..self.ports.len() {
            if !self.ports[index].deferred.is_empty() || self.ports[index].requests_closed {
                continue;
            }
            if !self.ports[index].requests.arm() {
                self.disarm_all();
                return false;
            }
        }
        true
    }

    pub(super) fn disarm_all(&mut self) {
        self.control.disarm();
        for port in &self.ports {
            port.requests.disarm();
        }
    }

    pub(super) fn mailbox_eventfd(&self, port: usize) -> RawFd {
        if port == self.ports.len() {
            self.control.eventfd()
        } else {
            self.ports[port].requests.eventfd()
        }
    }

    /// Keeps a poll for readability of a mailbox's eventfd in flight. A poll, not a read: the
    /// eventfd is non-blocking, and io_uring answers a read of an empty non-blocking file with
    /// EAGAIN at once instead of waiting.
    pub(super) fn submit_eventfd_poll(&mut self, port: usize) {
        let fd = self.mailbox_eventfd(port);
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(user_data(OP_EVENTFD, port as u64));
        // SAFETY: a poll references no memory of ours.
        unsafe { self.push(&entry) };
    }

    /// Resets a mailbox eventfd's counter after its poll fired.
    pub(super) fn drain_eventfd(&self, port: usize) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live stack value; the fd is non-blocking.
        unsafe {
            libc::read(
                self.mailbox_eventfd(port),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}
