//! Cross-thread wake-ups of one runtime: a lock-free queue of woken task ids plus the
//! "I am going to sleep" handshake that decides whether a waker must write the eventfd.
//!
//! The queue is a bounded multi-producer single-consumer ring (D. Vyukov's design): every slot
//! carries a sequence number that tells producers whether it is free for lap `n` and tells the
//! consumer whether it holds lap `n`'s value, so producers only contend on one `fetch`/CAS of the
//! tail and never lock. A task is pushed at most once until the runtime polls it (its QUEUED
//! bit), so the ring only fills when more tasks than its capacity are woken from other threads
//! between two loop turns; those overflow into a mutex-protected vector, off the common path.
//!
//! Ordering: a producer publishes its slot, then sets `pending`, then (after a SeqCst fence)
//! reads `sleeping`. The runtime sets `sleeping`, fences, then reads `pending` before it waits.
//! Either the runtime sees `pending` and does not wait, or the producer sees `sleeping` and
//! writes the eventfd whose read the runtime keeps in flight. A slot claimed but not yet
//! published when the runtime drains stops the drain there; its producer sets `pending` after
//! publishing, so the runtime drains again next turn.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::spsc::CachePadded;

/// Slots in the lock-free part of the queue.
const CAPACITY: usize = 1024;

struct Slot {
    /// `position` when free for the producer of lap `position`, `position + 1` once it holds
    /// that lap's value.
    sequence: AtomicUsize,
    task: AtomicUsize,
}

pub(crate) struct Remote {
    slots: Box<[Slot]>,
    /// Next position a producer claims.
    tail: CachePadded<AtomicUsize>,
    /// Next position the (single) consumer reads; only the runtime's thread writes it.
    head: CachePadded<AtomicUsize>,
    /// Wakes that found the ring full.
    overflow: Mutex<Vec<usize>>,
    overflowed: AtomicBool,
    /// Something was pushed since the runtime last drained.
    pending: AtomicBool,
    /// The runtime is (about to be) blocked in the kernel and needs the eventfd written.
    sleeping: AtomicBool,
    closed: AtomicBool,
    /// Blocking eventfd (io_uring would answer EAGAIN instead of waiting on a non-blocking one).
    eventfd: OwnedFd,
}

impl Remote {
    pub(crate) fn new() -> io::Result<Remote> {
        // SAFETY: plain syscall, result checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let slots = (0..CAPACITY)
            .map(|position| Slot {
                sequence: AtomicUsize::new(position),
                task: AtomicUsize::new(0),
            })
            .collect();
        Ok(Remote {
            slots,
            tail: CachePadded(AtomicUsize::new(0)),
            head: CachePadded(AtomicUsize::new(0)),
            overflow: Mutex::new(Vec::new()),
            overflowed: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            // SAFETY: fresh descriptor owned by nothing else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queues a woken task id (from any thread) and wakes the runtime if it sleeps.
    pub(crate) fn push(&self, task: usize) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if !self.try_push(task) {
            self.overflow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
            self.overflowed.store(true, Ordering::Release);
        }
        self.pending.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            crate::executor::signal_eventfd(self.eventfd.as_raw_fd());
        }
    }

    fn try_push(&self, task: usize) -> bool {
        let mask = CAPACITY - 1;
        let mut position = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[position & mask];
            let sequence = slot.sequence.load(Ordering::Acquire);
            let lag = sequence.wrapping_sub(position) as isize;
            if lag == 0 {
                match self.tail.compare_exchange_weak(
                    position,
                    position.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        slot.task.store(task, Ordering::Relaxed);
                        slot.sequence
                            .store(position.wrapping_add(1), Ordering::Release);
                        return true;
                    }
                    Err(current) => position = current,
                }
            } else if lag < 0 {
                // The slot still holds the previous lap's value: the ring is full.
                return false;
            } else {
                position = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Runtime thread only: hands every queued task id to `visit`. Returns false when nothing
    /// was pending (no atomic read-modify-write, no lock); true does not promise an id (a
    /// producer sets `pending` after publishing, possibly after its id was already drained).
    pub(crate) fn drain(&self, mut visit: impl FnMut(usize)) -> bool {
        if !self.pending.load(Ordering::Acquire) {
            return false;
        }
        self.pending.store(false, Ordering::SeqCst);
        let mask = CAPACITY - 1;
        let mut position = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[position & mask];
            if slot.sequence.load(Ordering::Acquire) != position.wrapping_add(1) {
                break;
            }
            let task = slot.task.load(Ordering::Relaxed);
            slot.sequence
                .store(position.wrapping_add(CAPACITY), Ordering::Release);
            position = position.wrapping_add(1);
            visit(task);
        }
        self.head.store(position, Ordering::Relaxed);
        if self.overflowed.swap(false, Ordering::AcqRel) {
            let overflow =
                std::mem::take(&mut *self.overflow.lock().unwrap_or_else(|e| e.into_inner()));
            overflow.into_iter().for_each(visit);
        }
        true
    }

    /// Runtime thread only, before waiting in the kernel: announces the sleep and returns false
    /// (cancelling it) when a wake is already pending.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.pending.load(Ordering::Relaxed) {
            self.sleeping.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Runtime thread only, after waking up.
    pub(crate) fn finish_sleep(&self) {
        self.sleeping.store(false, Ordering::Release);
    }

    /// Stops accepting wakes (the runtime is being dropped).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ids_pushed_from_many_threads_all_arrive_including_overflow() {
        let remote = Arc::new(Remote::new().unwrap());
        const THREADS: usize = 4;
        const PER_THREAD: usize = 3_000;
        let producers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let remote = remote.clone();
                std::thread::spawn(move || {
                    for n in 0..PER_THREAD {
                        remote.push(thread * PER_THREAD + n);
                    }
                })
            })
            .collect();
        let mut seen = vec![false; THREADS * PER_THREAD];
        let mut count = 0;
        let drain = |seen: &mut Vec<bool>, count: &mut usize| {
            remote.drain(|task| {
                assert!(!seen[task], "task {task} delivered twice");
                seen[task] = true;
                *count += 1;
            });
        };
        // Drain only after the producers are done so the ring overflows.
        while producers.iter().any(|producer| !producer.is_finished()) {
            std::thread::yield_now();
        }
        assert!(
            remote.overflowed.load(Ordering::Acquire),
            "the ring should have overflowed"
        );
        for producer in producers {
            producer.join().unwrap();
        }
        drain(&mut seen, &mut count);
        assert_eq!(count, THREADS * PER_THREAD);
        assert!(seen.iter().all(|&seen| seen));
    }

    #[test]
    fn concurrent_push_and_drain_deliver_every_id_once() {
        let remote = Arc::new(Remote::new().unwrap());
        const THREADS: usize = 3;
        const PER_THREAD: usize = 20_000;
        let producers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let remote = remote.clone();
                std::thread::spawn(move || {
                    for n in 0..PER_THREAD {
                        remote.push(thread * PER_THREAD + n);
                    }
                })
            })
            .collect();
        let mut seen = vec![false; THREADS * PER_THREAD];
        let mut count = 0;
        while count < THREADS * PER_THREAD {
            remote.drain(|task| {
                assert!(!seen[task], "task {task} delivered twice");
                seen[task] = true;
                count += 1;
            });
        }
        for producer in producers {
            producer.join().unwrap();
        }
        // `pending` may still be set by a push whose id was already drained; no id may remain.
        remote.drain(|task| panic!("task {task} delivered after all were seen"));
    }

    #[test]
    fn sleep_is_cancelled_by_a_pending_wake() {
        let remote = Remote::new().unwrap();
        assert!(remote.prepare_sleep());
        remote.finish_sleep();
        remote.push(7);
        assert!(
            !remote.prepare_sleep(),
            "a pending wake must cancel the sleep"
        );
        let mut woken = Vec::new();
        assert!(remote.drain(|task| woken.push(task)));
        assert_eq!(woken, vec![7]);
        assert!(!remote.drain(|_| unreachable!()));
    }
}
