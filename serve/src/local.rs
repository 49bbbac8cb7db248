//! Single-thread synchronisation for tasks of one worker: a one-shot reply slot and a list of
//! waiters woken together. Neither is `Send`: tasks of a worker never leave its thread, so plain
//! `Rc<RefCell<..>>` is enough and costs no atomic operation.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_alive: bool,
}

/// Completes a [`Receiver`] once.
pub struct Sender<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// Resolves to the value sent, or `None` if the sender was dropped without sending.
pub struct Receiver<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// A one-shot channel between two tasks of one thread.
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_alive: true,
    }));
    (
        Sender {
            slot: Rc::clone(&slot),
        },
        Receiver { slot },
    )
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.sender_alive = false;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.slot.borrow_mut();
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Some(value));
        }
        if !slot.sender_alive {
            return Poll::Ready(None);
        }
        slot.waker = Some(context.waker().clone());
        Poll::Pending
    }
}

/// Tasks waiting for a condition (data in a range, a connection's in-flight count dropping).
/// A waiter registers, re-checks its condition and sleeps; [`WaitList::wake_all`] wakes every
/// registered waiter, which then re-checks. Spurious wake-ups are harmless by construction.
///
/// A waiter that gives up (a long poll that timed out, a connection that closed) removes its
/// entry, so the list holds only live waiters: at most one per pending [`Notified`], which the
/// connection and in-flight bounds cap, however long nothing is notified.
#[derive(Default)]
pub struct WaitList {
    /// Slots indexed by a waiter's key; `None` for a slot whose waiter left.
    slots: Vec<Option<Waker>>,
    /// Empty slots, reused before the vector grows.
    free: Vec<usize>,
    /// Occupied slots.
    len: usize,
}

impl WaitList {
    /// Adds a waiter; the key removes it again.
    pub fn register(&mut self, waker: &Waker) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(waker.clone());
                key
            }
            None => {
                self.slots.push(Some(waker.clone()));
                self.slots.len() - 1
            }
        }
    }

    /// Replaces the waker of a registered waiter (a future moved to another task's context).
    pub fn update(&mut self, key: usize, waker: &Waker) {
        if let Some(Some(known)) = self.slots.get_mut(key) {
            if !known.will_wake(waker) {
                *known = waker.clone();
            }
        }
    }

    /// Removes a waiter that no longer waits.
    pub fn remove(&mut self, key: usize) {
        if let Some(slot) = self.slots.get_mut(key) {
            if slot.take().is_some() {
                self.len -= 1;
                self.free.push(key);
            }
        }
    }

    /// Wakes and removes every waiter; keys handed out before are void afterwards.
    pub fn wake_all(&mut self) {
        for waker in self.slots.drain(..).flatten() {
            waker.wake();
        }
        self.free.clear();
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A shared [`WaitList`] and a future that waits for the next [`Notify::notify`].
#[derive(Clone, Default)]
pub struct Notify {
    inner: Rc<RefCell<NotifyState>>,
}

#[derive(Default)]
struct NotifyState {
    /// Counts notifications; a waiter's key is valid only within the generation it got it in.
    generation: u64,
    waiters: WaitList,
}

impl Notify {
    /// Wakes every task waiting in [`Notify::notified`] now.
    pub fn notify(&self) {
        let mut state = self.inner.borrow_mut();
        state.generation += 1;
        state.waiters.wake_all();
    }

    /// Resolves at the first [`Notify::notify`] after this call.
    pub fn notified(&self) -> Notified {
        Notified {
            inner: Rc::clone(&self.inner),
            generation: self.inner.borrow().generation,
            key: None,
        }
    }

    /// Tasks currently waiting.
    pub fn waiting(&self) -> usize {
        self.inner.borrow().waiters.len()
    }
}

/// Future of [`Notify::notified`]. Dropping it before the notification unregisters it.
pub struct Notified {
    inner: Rc<RefCell<NotifyState>>,
    generation: u64,
    /// Its entry in the wait list, once polled.
    key: Option<usize>,
}

impl Future for Notified {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let inner = Rc::clone(&self.inner);
        let mut state = inner.borrow_mut();
        if state.generation != self.generation {
            // The notification drained the list, this entry with it.
            self.key = None;
            return Poll::Ready(());
        }
        match self.key {
            Some(key) => state.waiters.update(key, context.waker()),
            None => self.key = Some(state.waiters.register(context.waker())),
        }
        Poll::Pending
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut state = self.inner.borrow_mut();
            if state.generation == self.generation {
                state.waiters.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
        Pin::new(future).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn oneshot_delivers_and_wakes() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let (sender, mut receiver) = oneshot::<u32>();
        assert_eq!(poll_once(&mut receiver, &waker), Poll::Pending);
        sender.send(7);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut receiver, &waker), Poll::Ready(Some(7)));
    }

    #[test]
    fn dropped_sender_resolves_to_none() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let (sender, mut receiver) = oneshot::<u32>();
        assert_eq!(poll_once(&mut receiver, &waker), Poll::Pending);
        drop(sender);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut receiver, &waker), Poll::Ready(None));
    }

    #[test]
    fn notify_wakes_only_waiters_registered_before_it() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let notify = Notify::default();
        let mut first = notify.notified();
        assert_eq!(poll_once(&mut first, &waker), Poll::Pending);
        assert_eq!(notify.waiting(), 1);
        notify.notify();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut first, &waker), Poll::Ready(()));
        let mut second = notify.notified();
        assert_eq!(poll_once(&mut second, &waker), Poll::Pending);
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_list() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let notify = Notify::default();
        // A long poll that times out again and again on a range nobody writes to.
        for _ in 0..1000 {
            let mut waiting = notify.notified();
            assert_eq!(poll_once(&mut waiting, &waker), Poll::Pending);
            assert_eq!(notify.waiting(), 1);
        }
        assert_eq!(notify.waiting(), 0, "dropped waiters must not pile up");
        let mut kept = notify.notified();
        let mut left = notify.notified();
        assert_eq!(poll_once(&mut kept, &waker), Poll::Pending);
        assert_eq!(poll_once(&mut left, &waker), Poll::Pending);
        drop(left);
        assert_eq!(notify.waiting(), 1);
        notify.notify();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "only the live waiter is woken"
        );
        assert_eq!(poll_once(&mut kept, &waker), Poll::Ready(()));
        // A waiter dropped after the notification does not touch a later generation's entries.
        let mut later = notify.notified();
        assert_eq!(poll_once(&mut later, &waker), Poll::Pending);
        drop(kept);
        assert_eq!(notify.waiting(), 1);
    }
}
