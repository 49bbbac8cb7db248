//! An operation in flight: the future side of a driver slot.
//!
//! [`Op`] owns the operation's data (buffer, socket address, iovec array, path...) from
//! submission until it returns it with the completion. Everything the SQE points at lives on the
//! heap inside that data, so moving the `Op` (or the future holding it) never moves memory the
//! kernel uses. If the `Op` is dropped first, the data is handed to the driver, which parks it
//! and cancels the request; see `driver.rs` for the slot life cycle.
//!
//! [`LinkedOp`] is two entries submitted back to back with IOSQE_IO_LINK on the first, so the
//! second (a sync) starts only after the first (a write) succeeded.

use std::any::Any;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::squeue;

use crate::driver::{Completion, KeyRange};
use crate::executor::{poll_budget, try_with_context, with_context};

/// One submitted operation owning its data `T` until the completion arrives.
pub(crate) struct Op<T: 'static> {
    key: usize,
    data: Option<T>,
}

impl<T: 'static> Op<T> {
    /// Submits the entry `build` makes from `data`. On failure the data comes back with the
    /// error, so callers can return the user's buffer.
    pub(crate) fn submit(
        mut data: T,
        build: impl FnOnce(&mut T) -> squeue::Entry,
    ) -> Result<Op<T>, (io::Error, T)> {
        let mut entries = [build(&mut data)];
        match submit_entries(&mut entries) {
            Ok(keys) => Ok(Op {
                key: keys.get(0),
                data: Some(data),
            }),
            Err(error) => Err((error, data)),
        }
    }
}

fn submit_entries(entries: &mut [squeue::Entry]) -> io::Result<KeyRange> {
    with_context(|context| match context.driver.try_borrow_mut() {
        Ok(mut driver) => driver.submit(entries),
        Err(_) => Err(io::Error::other(
            "io submitted from inside the driver (a destructor run by a completion)",
        )),
    })
}

fn poll_key(key: usize, cx: &mut Context<'_>) -> Poll<Completion> {
    with_context(|context| context.driver.borrow_mut().poll_op(key, cx))
}

/// Hands dropped data to the driver; drops it here if the kernel is already done with it.
fn release(key: usize, data: Box<dyn Any>) {
    let returned = try_with_context(|context| match context.driver.try_borrow_mut() {
        Ok(mut driver) => driver.drop_op(key, data),
        Err(_) => {
            // Cannot reach the driver: the kernel may still write into this memory, so it must
            // never be freed. Leaking is the only sound choice.
            log::error!("operation {key} dropped while the driver is busy; leaking its data");
            std::mem::forget(data);
            None
        }
    });
    match returned {
        Some(Some(data)) => drop(data),
        Some(None) => {}
        None => log::error!("operation {key} dropped outside its runtime; leaking its data"),
    }
}

// The data is never pinned: the kernel points into its heap storage, not at the value.
impl<T: 'static> Unpin for Op<T> {}
impl<T: 'static> Unpin for LinkedOp<T> {}

impl<T: 'static> Future for Op<T> {
    type Output = (Completion, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if poll_budget(cx).is_pending() {
            return Poll::Pending;
        }
        let completion = match poll_key(self.key, cx) {
            Poll::Ready(completion) => completion,
            Poll::Pending => return Poll::Pending,
        };
        let data = self.data.take().expect("Op polled after it completed");
        Poll::Ready((completion, data))
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            let data: Box<dyn Any> = Box::new(data);
            release(self.key, data);
        }
    }
}

/// Two operations linked with IOSQE_IO_LINK: the second runs only if the first succeeds (else it
/// completes with ECANCELED). The data belongs to the first.
pub(crate) struct LinkedOp<T: 'static> {
    keys: [usize; 2],
    completions: [Option<Completion>; 2],
    data: Option<T>,
}

impl<T: 'static> LinkedOp<T> {
    /// Submits the two entries `build` makes; the caller sets IO_LINK on the first.
    pub(crate) fn submit(
        mut data: T,
        build: impl FnOnce(&mut T) -> [squeue::Entry; 2],
    ) -> Result<LinkedOp<T>, (io::Error, T)> {
        let mut entries = build(&mut data);
        match submit_entries(&mut entries) {
            Ok(keys) => Ok(LinkedOp {
                keys: [keys.get(0), keys.get(1)],
                completions: [None, None],
                data: Some(data),
            }),
            Err(error) => Err((error, data)),
        }
    }
}

impl<T: 'static> Future for LinkedOp<T> {
    type Output = (Completion, Completion, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if poll_budget(cx).is_pending() {
            return Poll::Pending;
        }
        for index in 0..2 {
            if self.completions[index].is_none() {
                if let Poll::Ready(completion) = poll_key(self.keys[index], cx) {
                    self.completions[index] = Some(completion);
                }
            }
        }
        match self.completions {
            [Some(first), Some(second)] => {
                let data = self
                    .data
                    .take()
                    .expect("LinkedOp polled after it completed");
                Poll::Ready((first, second, data))
            }
            _ => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for LinkedOp<T> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else {
            return;
        };
        // The second entry carries no memory of ours; it only needs its slot released.
        if self.completions[1].is_none() {
            release(self.keys[1], Box::new(()));
        }
        if self.completions[0].is_none() {
            release(self.keys[0], Box::new(data));
        }
    }
}
