//! Signals through the ring: a signal raised at this thread resolves the future with its number.
//!
//! Only thread-directed signals (`raise`) are used: the test harness runs other tests on threads
//! that do not block these signals, and a process-directed one could land there.

use std::time::Duration;

use runtime::signal::{Signal, Signals};
use runtime::time::{sleep, timeout};
use runtime::{spawn, Runtime};

#[test]
fn raised_signals_are_received_in_order() {
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let mut signals = Signals::new(&[Signal::USER1, Signal::HANGUP]).unwrap();
        // Nothing pending: the read stays in flight.
        let nothing = timeout(Duration::from_millis(20), signals.recv()).await;
        assert!(nothing.is_err(), "no signal was raised yet");

        // SAFETY: raise only queues a (blocked) signal for this thread.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
        assert_eq!(signals.recv().await.unwrap(), Signal::USER1);

        // A signal raised while the read is already waiting in the ring wakes it.
        let raiser = spawn(async {
            sleep(Duration::from_millis(10)).await;
            // SAFETY: as above.
            assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        });
        let received = timeout(Duration::from_secs(5), signals.recv()).await;
        assert_eq!(received.unwrap().unwrap(), Signal::HANGUP);
        raiser.await;
    });
}

#[test]
fn signal_names_are_readable() {
    assert_eq!(Signal::INTERRUPT.to_string(), "SIGINT");
    assert_eq!(Signal::TERMINATE.to_string(), "SIGTERM");
    assert_eq!(Signal::from_raw(libc::SIGHUP), Signal::HANGUP);
}
