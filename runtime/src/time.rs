//! Timers: [`sleep`], [`timeout`] and [`interval`], driven by the runtime's loop.
//!
//! Timers live in a slab with a binary heap of `(deadline, generation, key)` on top. The loop
//! asks for the earliest deadline and passes it to its one `io_uring_enter` as the wait timeout
//! (nanosecond resolution; the kernel's hrtimer slack keeps the error well under 1 ms), then
//! fires every timer whose deadline has passed. A dropped timer leaves its heap entry behind
//! (removing from the middle of a heap is costly); stale entries are skipped when they surface
//! and the heap is rebuilt when they outnumber live timers, so the heap stays bounded by twice
//! the number of live timers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::executor::{try_with_context, with_context};
use crate::select::{race, Either};

struct TimerEntry {
    generation: u64,
    waker: Option<Waker>,
}

/// The timer set of one runtime.
#[derive(Default)]
pub(crate) struct Timers {
    entries: Slab<TimerEntry>,
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    next_generation: u64,
}

impl Timers {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn insert(&mut self, deadline: Instant, waker: Waker) -> (usize, u64) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let key = self.entries.insert(TimerEntry {
            generation,
            waker: Some(waker),
        });
        self.heap.push(Reverse((deadline, generation, key)));
        (key, generation)
    }

    fn is_live(&self, key: usize, generation: u64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|entry| entry.generation == generation)
    }

    fn update_waker(&mut self, key: usize, generation: u64, waker: &Waker) {
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.generation == generation {
                match &entry.waker {
                    Some(current) if current.will_wake(waker) => {}
                    _ => entry.waker = Some(waker.clone()),
                }
            }
        }
    }

    fn remove(&mut self, key: usize, generation: u64) {
        if self.is_live(key, generation) {
            self.entries.remove(key);
            if self.heap.len() > 64 && self.heap.len() > 2 * self.entries.len() {
                self.compact();
            }
        }
    }

    fn compact(&mut self) {
        let entries = &self.entries;
        let live: Vec<_> = self
            .heap
            .drain()
            .filter(|Reverse((_, generation, key))| {
                entries
                    .get(*key)
                    .is_some_and(|entry| entry.generation == *generation)
            })
            .collect();
        self.heap = BinaryHeap::from(live);
    }

    /// The earliest live deadline, dropping stale heap entries on the way.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, generation, key))) = self.heap.peek().copied() {
            if self.is_live(key, generation) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes every timer due at `now` and returns their wakers (called with no borrow held by
    /// the caller when it wakes them).
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<Waker> {
        let mut expired = Vec::new();
        while let Some(Reverse((deadline, generation, key))) = self.heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if self.is_live(key, generation) {
                // The Sleep finds its deadline passed by the clock when it is polled.
                let entry = self.entries.remove(key);
                if let Some(waker) = entry.waker {
                    expired.push(waker);
                }
            }
        }
        expired
    }
}

/// Waits until `duration` has passed. A duration past what the clock can represent (a
/// configured "forever" such as `u64::MAX` milliseconds) waits about a century instead of
/// overflowing.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(Instant::now(), duration))
}

/// Longest wait the runtime schedules: a deadline is never further away than this.
pub const MAX_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `now + duration`, capped at [`MAX_WAIT`] so that no duration overflows the clock.
pub fn deadline_after(now: Instant, duration: Duration) -> Instant {
    now + duration.min(MAX_WAIT)
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        registration: None,
    }
}

/// Future returned by [`sleep`] and [`sleep_until`].
pub struct Sleep {
    deadline: Instant,
    registration: Option<(usize, u64)>,
}

impl Sleep {
    /// When this sleep ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (the sleep can be awaited again).
    pub fn reset(&mut self, deadline: Instant) {
        self.unregister();
        self.deadline = deadline;
    }

    fn unregister(&mut self) {
        if let Some((key, generation)) = self.registration.take() {
            try_with_context(|context| {
                if let Ok(mut timers) = context.timers.try_borrow_mut() {
                    timers.remove(key, generation);
                }
            });
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.unregister();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let registration = self.registration;
        let registration = with_context(|context| {
            let mut timers = context.timers.borrow_mut();
            match registration {
                Some((key, generation)) if timers.is_live(key, generation) => {
                    timers.update_waker(key, generation, cx.waker());
                    (key, generation)
                }
                // Never registered, or fired early by a clock race: register (again).
                _ => timers.insert(deadline, cx.waker().clone()),
            }
        });
        self.registration = Some(registration);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The deadline of a [`timeout`] passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed before the operation finished")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, Elapsed)
    }
}

/// Runs `future` for at most `duration`. On expiry the future is dropped (cancelling any
/// operation it had in flight) and `Err(Elapsed)` returned.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    // The future goes on the left: if it finished at the deadline, its output is not lost.
    match race(future, sleep(duration)).await {
        Either::Left(output) => Ok(output),
        Either::Right(()) => Err(Elapsed),
    }
}

/// Ticks every `period`, starting one period from now. A tick that is late (the thread was
/// busy) is delivered at once, and the missed ones after it are skipped rather than replayed in
/// a burst.
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    Interval {
        period,
        sleep: sleep(period),
    }
}

/// Stream of ticks returned by [`interval`].
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    sleep: Sleep,
}

impl Interval {
    /// Waits for the next tick and returns its scheduled time.
    pub async fn tick(&mut self) -> Instant {
        (&mut self.sleep).await;
        let scheduled = self.sleep.deadline();
        let mut next = scheduled + self.period;
        let now = Instant::now();
        if next <= now {
            next = now + self.period;
        }
        self.sleep.reset(next);
        scheduled
    }

    /// The tick period.
    pub fn period(&self) -> Duration {
        self.period
    }
}
