//! Mailbox round trips that wake a sleeping thread, against std primitives in the same run.
//!
//! Two threads pinned to CPUs 0 and 1 bounce one `u64` back and forth; each waits for the next
//! message *asleep* (nothing spins), so every hop is a wake-up of a sleeping thread. Per round
//! trip latency in nanoseconds, p50/p90/p99. Cases:
//! * mailbox, both ends plain threads (`recv_blocking`: ppoll on the mailbox eventfd);
//! * mailbox into a runtime task (the echo side is a task on a runtime asleep in
//!   io_uring_enter; the wake is the task waker's remote push plus the runtime's eventfd);
//! * std `mpsc::channel` (blocking `recv`, which parks the thread);
//! * a `Mutex<Option<u64>>` slot with explicit `thread::park`/`unpark`.
//!
//! `cargo bench -p benches --bench mailbox`; `MAILBOX_ROUNDS` (default 100000) per case.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use runtime::mailbox;
use runtime::thread::{spawn_pinned, spawn_runtime};

const PING_CPU: usize = 0;
const ECHO_CPU: usize = 1;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(100, 10_000_000_000, 3).expect("valid bounds")
}

/// One benchmark case: runs the given number of round trips, returns their latencies.
type Case = fn(u64) -> Histogram<u64>;

fn main() {
    let rounds: u64 = std::env::var("MAILBOX_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    println!(
        "Wake-a-sleeping-thread round trips: {rounds} per case, pinger on cpu {PING_CPU}, echo \
         on cpu {ECHO_CPU}"
    );
    let cases: [(&str, Case); 4] = [
        ("mailbox thread<->thread", run_mailbox_threads),
        ("mailbox thread<->runtime", run_mailbox_runtime),
        ("std mpsc channel", run_std_channel),
        ("mutex slot + park/unpark", run_park_unpark),
    ];
    let results: Vec<(&str, Histogram<u64>)> = cases
        .iter()
        .map(|(name, run)| (*name, run(rounds)))
        .collect();
    let baseline = results[2].1.value_at_quantile(0.5) as f64;
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>12}",
        "case", "p50 us", "p90 us", "p99 us", "p50 vs std"
    );
    for (name, histogram) in &results {
        let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>9.1} {:>11.2}x",
            name,
            us(0.50),
            us(0.90),
            us(0.99),
            baseline / histogram.value_at_quantile(0.5) as f64
        );
    }
}

fn run_mailbox_threads(rounds: u64) -> Histogram<u64> {
    let (mut to_echo, mut echo_inbox) = mailbox::channel::<u64>(16).unwrap();
    let (mut to_ping, mut ping_inbox) = mailbox::channel::<u64>(16).unwrap();
    let echo = spawn_pinned("mailbox-echo", Some(ECHO_CPU), move || {
        while let Ok(value) = echo_inbox.recv_blocking(None) {
            to_ping.send(value + 1).unwrap();
        }
    })
    .unwrap();
    let ping = spawn_pinned("mailbox-ping", Some(PING_CPU), move || {
        let mut histogram = new_histogram();
        for round in 0..rounds {
            let started = Instant::now();
            to_echo.send(round).unwrap();
            let reply = ping_inbox.recv_blocking(None).unwrap();
            let _ = histogram.record(started.elapsed().as_nanos() as u64);
            assert_eq!(reply, round + 1);
        }
        histogram
    })
    .unwrap();
    let histogram = ping.join().unwrap();
    echo.join().unwrap();
    histogram
}

fn run_mailbox_runtime(rounds: u64) -> Histogram<u64> {
    let (mut to_echo, mut echo_inbox) = mailbox::channel::<u64>(16).unwrap();
    let (mut to_ping, mut ping_inbox) = mailbox::channel::<u64>(16).unwrap();
    let echo = spawn_runtime(
        "mailbox-echo-rt",
        Some(ECHO_CPU),
        runtime::Builder::new(),
        move || async move {
            while let Some(value) = echo_inbox.recv().await {
                to_ping.send(value + 1).unwrap();
            }
        },
    )
    .unwrap();
    let ping = spawn_pinned("mailbox-ping", Some(PING_CPU), move || {
        let mut histogram = new_histogram();
        for round in 0..rounds {
            let started = Instant::now();
            to_echo.send(round).unwrap();
            let reply = ping_inbox.recv_blocking(None).unwrap();
            let _ = histogram.record(started.elapsed().as_nanos() as u64);
            assert_eq!(reply, round + 1);
        }
        histogram
    })
    .unwrap();
    let histogram = ping.join().unwrap();
    echo.join().unwrap().unwrap();
    histogram
}

fn run_std_channel(rounds: u64) -> Histogram<u64> {
    let (to_echo, echo_inbox) = mpsc::channel::<u64>();
    let (to_ping, ping_inbox) = mpsc::channel::<u64>();
    let echo = spawn_pinned("std-echo", Some(ECHO_CPU), move || {
        while let Ok(value) = echo_inbox.recv() {
            to_ping.send(value + 1).unwrap();
        }
    })
    .unwrap();
    let ping = spawn_pinned("std-ping", Some(PING_CPU), move || {
        let mut histogram = new_histogram();
        for round in 0..rounds {
            let started = Instant::now();
            to_echo.send(round).unwrap();
            let reply = ping_inbox.recv().unwrap();
            let _ = histogram.record(started.elapsed().as_nanos() as u64);
            assert_eq!(reply, round + 1);
        }
        histogram
    })
    .unwrap();
    let histogram = ping.join().unwrap();
    echo.join().unwrap();
    histogram
}

/// A one-value mailbox built from a mutex and thread parking.
struct ParkSlot {
    value: Mutex<Option<u64>>,
    closed: AtomicBool,
}

impl ParkSlot {
    fn new() -> Arc<ParkSlot> {
        Arc::new(ParkSlot {
            value: Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    fn put(&self, value: u64, reader: &thread::Thread) {
        *self.value.lock().unwrap() = Some(value);
        reader.unpark();
    }

    fn take(&self) -> Option<u64> {
        loop {
            if let Some(value) = self.value.lock().unwrap().take() {
                return Some(value);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            thread::park_timeout(Duration::from_millis(100));
        }
    }
}

fn run_park_unpark(rounds: u64) -> Histogram<u64> {
    let to_echo = ParkSlot::new();
    let to_ping = ParkSlot::new();
    let (ping_thread_sender, ping_thread_receiver) = mpsc::channel::<thread::Thread>();
    let echo = {
        let to_echo = to_echo.clone();
        let to_ping = to_ping.clone();
        spawn_pinned("park-echo", Some(ECHO_CPU), move || {
            let ping_thread = ping_thread_receiver.recv().unwrap();
            while let Some(value) = to_echo.take() {
                to_ping.put(value + 1, &ping_thread);
            }
        })
        .unwrap()
    };
    let echo_thread = echo.thread().clone();
    let ping = {
        let to_echo = to_echo.clone();
        spawn_pinned("park-ping", Some(PING_CPU), move || {
            ping_thread_sender.send(thread::current()).unwrap();
            let mut histogram = new_histogram();
            for round in 0..rounds {
                let started = Instant::now();
                to_echo.put(round, &echo_thread);
                let reply = to_ping.take().unwrap();
                let _ = histogram.record(started.elapsed().as_nanos() as u64);
                assert_eq!(reply, round + 1);
            }
            to_echo.closed.store(true, Ordering::Release);
            echo_thread.unpark();
            histogram
        })
        .unwrap()
    };
    let histogram = ping.join().unwrap();
    echo.join().unwrap();
    histogram
}
