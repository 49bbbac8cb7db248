//! A mailbox: an SPSC ring plus a wake-up of the consumer, skipped while the consumer is awake.
//!
//! The consumer announces that it is about to sleep by *arming* the mailbox; a sender only pays
//! for a wake-up (a write to an eventfd, or a cross-thread [`Waker`]) when it finds the mailbox
//! armed, and only the one sender-side call that disarms it does so. A busy consumer therefore
//! costs its senders no syscalls at all.
//!
//! Lost wake-ups are ruled out the Dekker way. The consumer stores its sleep mode into `armed`,
//! issues a SeqCst fence and re-checks the ring; the sender publishes its item, issues a SeqCst
//! fence and reads `armed`. At least one of them sees the other's write: either the consumer
//! finds the item and does not sleep, or the sender finds the flag and wakes it.
//!
//! Either side may be a plain thread. The consumer can wait in three ways, and `armed` records
//! which one so the sender knows how to wake it:
//! * [`Receiver::recv`] on a runtime thread: the sender wakes the task's [`Waker`], which is safe
//!   to call from any thread.
//! * [`Receiver::recv_blocking`] on a plain thread: it sleeps in `futex_wait` on `armed` itself,
//!   so a hop costs one futex wake and one futex wait, like a std channel.
//! * Its own io_uring loop (the store's IO thread): it keeps a read of [`Receiver::eventfd`] in
//!   flight, calls [`Receiver::arm`] before it waits for completions (and skips the wait when
//!   that returns false), and [`Receiver::disarm`] after it wakes up.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::spsc;

/// `Shared::armed`: the consumer is awake; senders do nothing beyond pushing.
const AWAKE: u32 = 0;
/// The consumer sleeps on the eventfd (its own io_uring, or any poller).
const ARMED_EVENTFD: u32 = 1;
/// The consumer is a task; wake its registered waker.
const ARMED_WAKER: u32 = 2;
/// The consumer is a plain thread in `futex_wait` on `armed`.
const ARMED_FUTEX: u32 = 3;

struct Shared {
    /// How the consumer sleeps (`ARMED_*`), or `AWAKE`. Set by the consumer just before it
    /// sleeps; reset by the one sender that wakes it (or by the consumer itself).
    armed: AtomicU32,
    sender_alive: AtomicBool,
    receiver_alive: AtomicBool,
    /// The task to wake when the consumer waits in [`Receiver::recv`]. Only touched on the sleep
    /// path (the consumer going to sleep, the one sender that found it armed), never per item.
    waker: Mutex<Option<Waker>>,
    /// Wake-up for consumers that drive their own poller or ring. Blocking (io_uring answers
    /// EAGAIN instead of waiting on a non-blocking one), close-on-exec.
    eventfd: OwnedFd,
}

impl Shared {
    /// Called by a sender after it published items (or closed): wakes the consumer if, and only
    /// if, it is armed, and makes sure only one caller does so per sleep.
    fn wake_if_armed(&self) {
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) == AWAKE {
            return;
        }
        match self.armed.swap(AWAKE, Ordering::AcqRel) {
            AWAKE => {}
            ARMED_FUTEX => futex_wake(&self.armed),
            ARMED_WAKER => {
                let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
                match waker {
                    Some(waker) => waker.wake(),
                    None => self.signal_eventfd(),
                }
            }
            _ => self.signal_eventfd(),
        }
    }

    /// Arms with `mode`; false (and left awake) when items are queued or the sender is gone.
    fn arm<T: Send>(&self, mode: u32, consumer: &spsc::Consumer<T>) -> bool {
        self.armed.store(mode, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !consumer.is_empty() || !self.sender_alive.load(Ordering::Acquire) {
            self.armed.store(AWAKE, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn signal_eventfd(&self) {
        crate::executor::signal_eventfd(self.eventfd.as_raw_fd());
    }
}

/// Sleeps while `word` still holds `expected`, up to `timeout`. Returns on a wake, a timeout, a
/// signal, or at once if the value already changed; the caller re-checks its state either way.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let timespec = timeout.map(|timeout| libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the whole call; the timespec (relative timeout)
    // lives on this stack frame. The kernel only reads both.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            timespec_ptr,
        )
    };
}

/// Wakes one thread sleeping in `futex_wait` on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access memory beyond hashing
    // its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    };
}

/// Creates a mailbox holding up to `capacity` items (rounded up to a power of two).
///
/// Fails only if the kernel refuses an eventfd (file descriptor limit).
pub fn channel<T: Send>(capacity: usize) -> io::Result<(Sender<T>, Receiver<T>)> {
    // SAFETY: plain syscall with no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let shared = Arc::new(Shared {
        armed: AtomicU32::new(AWAKE),
        sender_alive: AtomicBool::new(true),
        receiver_alive: AtomicBool::new(true),
        waker: Mutex::new(None),
        eventfd,
    });
    let (producer, consumer) = spsc::channel(capacity);
    Ok((
        Sender {
            producer,
            shared: shared.clone(),
        },
        Receiver {
            consumer,
            shared,
            waker_registered: Cell::new(false),
        },
    ))
}

/// Why [`Sender::send`] gave the value back.
#[derive(PartialEq, Eq)]
pub enum SendError<T> {
    /// The mailbox is full: back-pressure, try again later.
    Full(T),
    /// The receiver is gone; nothing sent now would be read.
    Closed(T),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(value) | SendError::Closed(value) => value,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => {
                f.write_str("mailbox is full; retry after the receiver drains it")
            }
            SendError::Closed(_) => f.write_str("mailbox receiver has been dropped"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}

/// The other side of the mailbox has been dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the other side of the mailbox has been dropped")
    }
}

impl std::error::Error for Closed {}

/// Why [`Receiver::try_recv`] returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued right now.
    Empty,
    /// Nothing queued and the sender is gone: nothing will ever arrive.
    Closed,
}

/// Why [`Receiver::recv_blocking`] returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// The timeout passed with nothing queued.
    Timeout,
    /// Nothing queued and the sender is gone: nothing will ever arrive.
    Closed,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting on the mailbox"),
            RecvTimeoutError::Closed => f.write_str("mailbox sender has been dropped"),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

/// The sending half. `Send`, not `Clone`; never blocks.
pub struct Sender<T> {
    producer: spsc::Producer<T>,
    shared: Arc<Shared>,
}

impl<T: Send> Sender<T> {
    /// Queues one value and wakes the receiver if it sleeps.
    pub fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        if !self.shared.receiver_alive.load(Ordering::Acquire) {
            return Err(SendError::Closed(value));
        }
        self.producer.push(value).map_err(SendError::Full)?;
        self.shared.wake_if_armed();
        Ok(())
    }

    /// Moves as many values as fit from the front of `values` (the rest stay, in order) and
    /// wakes the receiver at most once for all of them. Returns how many were moved.
    pub fn send_batch(&mut self, values: &mut Vec<T>) -> Result<usize, Closed> {
        if !self.shared.receiver_alive.load(Ordering::Acquire) {
            return Err(Closed);
        }
        let count = self.producer.push_batch(values);
        if count > 0 {
            self.shared.wake_if_armed();
        }
        Ok(count)
    }

    /// Slots free right now.
    pub fn free_slots(&self) -> usize {
        self.producer.free_slots()
    }

    /// Items the mailbox can hold.
    pub fn capacity(&self) -> usize {
        self.producer.capacity()
    }

    /// True once the receiver has been dropped.
    pub fn is_closed(&self) -> bool {
        !self.shared.receiver_alive.load(Ordering::Acquire)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.sender_alive.store(false, Ordering::Release);
        // A sleeping receiver must learn that nothing more will come.
        self.shared.wake_if_armed();
    }
}

/// The receiving half. `Send` (move it to its thread before use), not `Clone`.
pub struct Receiver<T> {
    consumer: spsc::Consumer<T>,
    shared: Arc<Shared>,
    /// True while a task waker may sit in `shared.waker`; lets the eventfd paths clear it.
    waker_registered: Cell<bool>,
}

impl<T: Send> Receiver<T> {
    /// Takes the oldest value without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if let Some(value) = self.consumer.pop() {
            return Ok(value);
        }
        if self.shared.sender_alive.load(Ordering::Acquire) {
            return Err(TryRecvError::Empty);
        }
        // The sender may have pushed its last items just before it closed.
        self.consumer.pop().ok_or(TryRecvError::Closed)
    }

    /// Appends up to `max` queued values to `out` without waiting. Returns how many.
    pub fn recv_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        self.consumer.pop_batch(out, max)
    }

    /// Items queued right now.
    pub fn len(&self) -> usize {
        self.consumer.len()
    }

    /// True when nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.consumer.is_empty()
    }

    /// True once the sender has been dropped (queued items may remain).
    pub fn is_closed(&self) -> bool {
        !self.shared.sender_alive.load(Ordering::Acquire)
    }

    /// Waits for the next value on a runtime thread. `None` once the sender is gone and
    /// everything it sent has been received.
    pub fn recv(&mut self) -> Recv<'_, T> {
        Recv {
            receiver: self,
            armed: false,
        }
    }

    /// Waits for the next value on a plain thread, sleeping in the kernel (futex) until a sender
    /// wakes it or `timeout` passes (`None`: no limit).
    pub fn recv_blocking(&mut self, timeout: Option<Duration>) -> Result<T, RecvTimeoutError> {
        self.forget_waker();
        let deadline = timeout.map(|timeout| crate::time::deadline_after(Instant::now(), timeout));
        loop {
            match self.try_recv() {
                Ok(value) => return Ok(value),
                Err(TryRecvError::Closed) => return Err(RecvTimeoutError::Closed),
                Err(TryRecvError::Empty) => {}
            }
            let remaining = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    Some(deadline - now)
                }
                None => None,
            };
            if !self.shared.arm(ARMED_FUTEX, &self.consumer) {
                continue;
            }
            futex_wait(&self.shared.armed, ARMED_FUTEX, remaining);
            self.disarm();
        }
    }

    /// The eventfd a sender writes when it finds the mailbox armed by [`Receiver::arm`]. It is a
    /// blocking eventfd (io_uring waits on it instead of failing with EAGAIN); a consumer with its
    /// own io_uring keeps an 8-byte read of it in flight.
    pub fn eventfd(&self) -> RawFd {
        self.shared.eventfd.as_raw_fd()
    }

    /// Announces that the consumer is about to sleep on the eventfd. Returns false when items
    /// are already queued or the sender is gone: then do not sleep (the mailbox is left
    /// disarmed). After any wake-up, call [`Receiver::disarm`].
    pub fn arm(&self) -> bool {
        self.forget_waker();
        self.shared.arm(ARMED_EVENTFD, &self.consumer)
    }

    /// Drops a task waker left by an earlier `recv`, so the eventfd and futex paths own the
    /// wake-up.
    fn forget_waker(&self) {
        if self.waker_registered.replace(false) {
            *self.shared.waker.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Tells senders the consumer is awake again, so they skip the wake-up.
    pub fn disarm(&self) {
        self.shared.armed.store(AWAKE, Ordering::Release);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_alive.store(false, Ordering::Release);
        self.shared.armed.store(AWAKE, Ordering::Release);
        *self.shared.waker.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Future returned by [`Receiver::recv`].
pub struct Recv<'a, T> {
    receiver: &'a mut Receiver<T>,
    armed: bool,
}

impl<T: Send> Future for Recv<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if this.armed {
            this.armed = false;
            this.receiver.disarm();
        }
        // A mailbox that is never empty must not let its consumer starve the other tasks.
        if crate::executor::poll_budget(cx).is_pending() {
            return Poll::Pending;
        }
        loop {
            match this.receiver.try_recv() {
                Ok(value) => return Poll::Ready(Some(value)),
                Err(TryRecvError::Closed) => return Poll::Ready(None),
                Err(TryRecvError::Empty) => {}
            }
            {
                let mut slot = this
                    .receiver
                    .shared
                    .waker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                match slot.as_ref() {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
            }
            this.receiver.waker_registered.set(true);
            if this
                .receiver
                .shared
                .arm(ARMED_WAKER, &this.receiver.consumer)
            {
                this.armed = true;
                return Poll::Pending;
            }
        }
    }
}

impl<T> Drop for Recv<'_, T> {
    fn drop(&mut self) {
        if self.armed {
            self.receiver.shared.armed.store(AWAKE, Ordering::Release);
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("producer", &self.producer)
            .finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("consumer", &self.consumer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_and_try_recv_in_order_then_closed() {
        let (mut sender, mut receiver) = channel::<u32>(4).unwrap();
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
        for value in 0..4 {
            sender.send(value).unwrap();
        }
        assert_eq!(sender.send(9), Err(SendError::Full(9)));
        assert_eq!(receiver.try_recv(), Ok(0));
        drop(sender);
        let mut out = Vec::new();
        assert_eq!(receiver.recv_batch(&mut out, 10), 3);
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn send_to_dropped_receiver_is_closed() {
        let (mut sender, receiver) = channel::<u32>(4).unwrap();
        drop(receiver);
        assert_eq!(sender.send(1), Err(SendError::Closed(1)));
        assert_eq!(sender.send_batch(&mut vec![1, 2]), Err(Closed));
    }

    #[test]
    fn arm_refuses_when_items_are_queued_and_eventfd_fires_only_when_armed() {
        let (mut sender, receiver) = channel::<u32>(4).unwrap();
        // Not armed: a send must not touch the eventfd.
        sender.send(1).unwrap();
        assert!(!receiver.arm(), "arm must refuse while an item is queued");
        let mut receiver = receiver;
        assert_eq!(receiver.try_recv(), Ok(1));
        assert!(!eventfd_readable(receiver.eventfd()));
        assert!(receiver.arm());
        sender.send(2).unwrap();
        assert!(eventfd_readable(receiver.eventfd()));
        drain_eventfd(receiver.eventfd());
        // The sender disarmed it: a second send does not write again.
        sender.send(3).unwrap();
        assert!(!eventfd_readable(receiver.eventfd()));
    }

    #[test]
    fn recv_blocking_times_out_and_sees_close() {
        let (sender, mut receiver) = channel::<u32>(2).unwrap();
        let started = Instant::now();
        assert_eq!(
            receiver.recv_blocking(Some(Duration::from_millis(20))),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(started.elapsed() >= Duration::from_millis(20));
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            drop(sender);
        });
        assert_eq!(receiver.recv_blocking(None), Err(RecvTimeoutError::Closed));
        closer.join().unwrap();
    }

    #[test]
    fn recv_blocking_takes_a_timeout_the_clock_cannot_count() {
        let (mut sender, mut receiver) = channel::<u32>(2).unwrap();
        sender.send(7).unwrap();
        assert_eq!(receiver.recv_blocking(Some(Duration::MAX)), Ok(7));
    }

    fn drain_eventfd(fd: RawFd) {
        let mut counter = 0u64;
        // SAFETY: the eventfd is readable (checked by the caller), so this read returns at once
        // into the stack value.
        unsafe { libc::read(fd, (&mut counter as *mut u64).cast(), 8) };
        assert!(counter > 0);
    }

    fn eventfd_readable(fd: RawFd) -> bool {
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pollfd` lives on the stack for the synchronous call.
        unsafe { libc::poll(&mut pollfd, 1, 0) == 1 }
    }
}
