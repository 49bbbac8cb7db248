//! A request's future run so that a panic inside it ends that request, not the worker thread.
//!
//! The release profile unwinds on panic (`panic = "unwind"` in the workspace manifest), so a
//! bug in one handler can be caught at the task boundary: the connection that sent the request
//! is closed with GOAWAY(INTERNAL_ERROR) and every other connection of the worker goes on.
//! Worker state is only ever borrowed between `.await` points (`RefCell` guards never live
//! across one), so an unwind leaves no borrow behind.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Resolves to the inner future's output, or to the panic's message if polling it panicked.
pub struct CatchPanic<F> {
    inner: Pin<Box<F>>,
}

pub fn catch_panic<F: Future>(future: F) -> CatchPanic<F> {
    CatchPanic {
        inner: Box::pin(future),
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(context))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// The text a `panic!` carried, if it carried text.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_panic_becomes_an_error_and_output_passes_through() {
        let mut context = Context::from_waker(Waker::noop());
        let mut fine = catch_panic(async { 7 });
        assert_eq!(Pin::new(&mut fine).poll(&mut context), Poll::Ready(Ok(7)));
        let mut broken = catch_panic(async {
            if std::hint::black_box(true) {
                panic!("handler bug {}", 42);
            }
            7
        });
        assert_eq!(
            Pin::new(&mut broken).poll(&mut context),
            Poll::Ready(Err("handler bug 42".to_string()))
        );
    }
}
