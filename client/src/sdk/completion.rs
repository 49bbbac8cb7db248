//! A one-shot slot that crosses threads: the SDK's I/O thread fills it, the application's task
//! awaits it under whatever executor it runs. Filling it wakes the waker of the last poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The slot shared by the filler and the waiter.
pub(crate) struct Completion<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The value was filled in (and maybe taken already): later fills are ignored.
    filled: bool,
}

impl<T> Completion<T> {
    pub(crate) fn new() -> Arc<Completion<T>> {
        Arc::new(Completion {
            state: Mutex::new(State {
                value: None,
                waker: None,
                filled: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fills the slot (once; later calls are ignored) and wakes the waiter.
    pub(crate) fn complete(&self, value: T) {
        let waker = {
            let mut state = self.lock();
            if state.filled {
                return;
            }
            state.filled = true;
            state.value = Some(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll_take(&self, context: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.lock();
        if state.filled {
            return Poll::Ready(state.value.take());
        }
        match &state.waker {
            Some(waker) if waker.will_wake(context.waker()) => {}
            _ => state.waker = Some(context.waker().clone()),
        }
        Poll::Pending
    }
}

/// Awaits a [`Completion`]. `Send` when `T` is.
pub(crate) struct Wait<T> {
    slot: Arc<Completion<T>>,
}

impl<T> Wait<T> {
    pub(crate) fn new(slot: Arc<Completion<T>>) -> Wait<T> {
        Wait { slot }
    }
}

impl<T> Future for Wait<T> {
    /// `None` if the value was taken by an earlier poll.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<T>> {
        self.slot.poll_take(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_from_another_thread_wakes_the_waiter() {
        let slot = Completion::<u32>::new();
        let filler = Arc::clone(&slot);
        let thread = std::thread::spawn(move || filler.complete(7));
        let value = crate::sdk::io::block_on_for_tests(Wait::new(slot));
        thread.join().unwrap();
        assert_eq!(value, Some(7));
    }

    #[test]
    fn only_the_first_fill_counts() {
        let slot = Completion::<u32>::new();
        slot.complete(1);
        slot.complete(2);
        assert_eq!(crate::sdk::io::block_on_for_tests(Wait::new(slot)), Some(1));
    }
}
