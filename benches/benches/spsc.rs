//! SPSC ring throughput between two pinned threads, against `std::sync::mpsc::sync_channel` in
//! the same run.
//!
//! A producer pinned to CPU 0 sends `SPSC_MESSAGES` (default 20 million) `u64`s to a consumer
//! pinned to CPU 1, which checks every value. Both sides back off when the ring is full or
//! empty (a few short spins, then `yield_now`); std's channel blocks instead (after spinning
//! briefly itself), its normal mode. Cases: one `push`/`pop` per message,
//! batches of 64 (`push_batch`/`pop_batch`), and std `sync_channel` with the same capacity.
//! Each case runs `SPSC_REPEATS` (default 3) times; the best run is reported, since the
//! hypervisor's stalls only ever make a run slower.
//!
//! `cargo bench -p benches --bench spsc`

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use runtime::spsc;
use runtime::thread::spawn_pinned;

const CAPACITY: usize = 1024;
const BATCH: usize = 64;
const PRODUCER_CPU: usize = 0;
const CONSUMER_CPU: usize = 1;

/// Spins briefly, then yields: keeps the time slice while the other side is about to act, and
/// gives the CPU away when it is not running at all.
struct Backoff {
    step: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { step: 0 }
    }

    fn reset(&mut self) {
        self.step = 0;
    }

    fn snooze(&mut self) {
        if self.step < 7 {
            for _ in 0..(1u32 << self.step) {
                std::hint::spin_loop();
            }
            self.step += 1;
        } else {
            thread::yield_now();
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let messages = env_or("SPSC_MESSAGES", 20_000_000);
    let repeats = env_or("SPSC_REPEATS", 3);
    println!(
        "SPSC throughput: {messages} u64 messages, capacity {CAPACITY}, producer on cpu \
         {PRODUCER_CPU}, consumer on cpu {CONSUMER_CPU}, best of {repeats}"
    );
    let best = |run: &dyn Fn(u64) -> Duration| {
        (0..repeats)
            .map(|_| run(messages))
            .min()
            .expect("at least one repeat")
    };
    let single = best(&run_spsc_single);
    let batched = best(&run_spsc_batched);
    let std = best(&run_std);
    let rate = |elapsed: Duration| messages as f64 / elapsed.as_secs_f64();
    println!("{:<32} {:>14} {:>10}", "case", "messages/s", "vs std");
    for (name, elapsed) in [
        ("spsc push/pop", single),
        ("spsc push_batch/pop_batch (64)", batched),
        ("std sync_channel", std),
    ] {
        println!(
            "{:<32} {:>14.0} {:>9.1}x",
            name,
            rate(elapsed),
            rate(elapsed) / rate(std)
        );
    }
}

fn run_spsc_single(messages: u64) -> Duration {
    let (mut producer, mut consumer) = spsc::channel::<u64>(CAPACITY);
    let started = Instant::now();
    let sender = spawn_pinned("spsc-producer", Some(PRODUCER_CPU), move || {
        let mut next = 0;
        let mut backoff = Backoff::new();
        while next < messages {
            match producer.push(next) {
                Ok(()) => {
                    next += 1;
                    backoff.reset();
                }
                Err(_) => backoff.snooze(),
            }
        }
    })
    .expect("producer thread");
    let receiver = spawn_pinned("spsc-consumer", Some(CONSUMER_CPU), move || {
        let mut expected = 0;
        let mut backoff = Backoff::new();
        while expected < messages {
            match consumer.pop() {
                Some(value) => {
                    assert_eq!(value, expected);
                    expected += 1;
                    backoff.reset();
                }
                None => backoff.snooze(),
            }
        }
    })
    .expect("consumer thread");
    sender.join().unwrap();
    receiver.join().unwrap();
    started.elapsed()
}

fn run_spsc_batched(messages: u64) -> Duration {
    let (mut producer, mut consumer) = spsc::channel::<u64>(CAPACITY);
    let started = Instant::now();
    let sender = spawn_pinned("spsc-producer", Some(PRODUCER_CPU), move || {
        let mut next = 0;
        let mut batch = Vec::with_capacity(BATCH);
        let mut backoff = Backoff::new();
        while next < messages || !batch.is_empty() {
            while batch.len() < BATCH && next < messages {
                batch.push(next);
                next += 1;
            }
            if producer.push_batch(&mut batch) == 0 {
                backoff.snooze();
            } else {
                backoff.reset();
            }
        }
    })
    .expect("producer thread");
    let receiver = spawn_pinned("spsc-consumer", Some(CONSUMER_CPU), move || {
        let mut expected = 0;
        let mut batch = Vec::with_capacity(BATCH);
        let mut backoff = Backoff::new();
        while expected < messages {
            batch.clear();
            if consumer.pop_batch(&mut batch, BATCH) == 0 {
                backoff.snooze();
                continue;
            }
            backoff.reset();
            for &value in &batch {
                assert_eq!(value, expected);
                expected += 1;
            }
        }
    })
    .expect("consumer thread");
    sender.join().unwrap();
    receiver.join().unwrap();
    started.elapsed()
}

fn run_std(messages: u64) -> Duration {
    let (sender, receiver) = mpsc::sync_channel::<u64>(CAPACITY);
    let started = Instant::now();
    let producer = spawn_pinned("std-producer", Some(PRODUCER_CPU), move || {
        for value in 0..messages {
            sender.send(value).unwrap();
        }
    })
    .expect("producer thread");
    let consumer = spawn_pinned("std-consumer", Some(CONSUMER_CPU), move || {
        for expected in 0..messages {
            assert_eq!(receiver.recv().unwrap(), expected);
        }
    })
    .expect("consumer thread");
    producer.join().unwrap();
    consumer.join().unwrap();
    started.elapsed()
}
