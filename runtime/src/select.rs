//! Waiting for whichever of two futures finishes first.
//!
//! Tasks here are `!Send` and run on one thread, so a select needs no synchronisation: [`race`]
//! polls both futures in the calling task and drops the loser. Dropping is how cancellation
//! works in this runtime: a dropped operation (a read, an accept, a sleep) is cancelled, and
//! its buffer is kept until the kernel lets go of it (`docs/runtime.md`).

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Output of [`race`]: which future finished first, and its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures and returns the first output; the other future is dropped. When both are
/// ready at the same poll, `left` wins: put the future whose result must not be lost (a read
/// that completed) on the left.
pub async fn race<A: Future, B: Future>(left: A, right: B) -> Either<A::Output, B::Output> {
    let mut left = pin!(left);
    let mut right = pin!(right);
    std::future::poll_fn(move |context| {
        if let Poll::Ready(output) = left.as_mut().poll(context) {
            return Poll::Ready(Either::Left(output));
        }
        if let Poll::Ready(output) = right.as_mut().poll(context) {
            return Poll::Ready(Either::Right(output));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::time::sleep;
    use crate::Runtime;

    /// Sets its flag when dropped: shows whether the loser of a race was dropped.
    struct DropFlag(Rc<Cell<bool>>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    #[test]
    fn the_first_to_finish_wins_and_the_other_is_dropped() {
        let mut runtime = Runtime::new().unwrap();
        let dropped = Rc::new(Cell::new(false));
        let guard = DropFlag(Rc::clone(&dropped));
        let started = Instant::now();
        let winner = runtime.block_on(race(
            async move {
                sleep(Duration::from_secs(30)).await;
                drop(guard);
                "slow"
            },
            async {
                sleep(Duration::from_millis(5)).await;
                7u32
            },
        ));
        assert_eq!(winner, Either::Right(7));
        assert!(dropped.get(), "the losing future was not dropped");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the race waited for the loser"
        );
    }

    #[test]
    fn left_wins_when_both_are_ready() {
        let mut runtime = Runtime::new().unwrap();
        let winner = runtime.block_on(race(async { 1u8 }, async { 2u16 }));
        assert_eq!(winner, Either::Left(1));
    }

    #[test]
    fn a_later_left_is_awaited_past_a_pending_right() {
        let mut runtime = Runtime::new().unwrap();
        let winner = runtime.block_on(race(
            sleep(Duration::from_millis(5)),
            std::future::pending::<()>(),
        ));
        assert_eq!(winner, Either::Left(()));
    }
}
