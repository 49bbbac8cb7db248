//! A sleeping mailbox consumer is always woken: many rounds of "consumer goes to sleep, producer
//! sends one item", where a lost wake-up would hang the round (caught by a generous timeout).

use runtime::mailbox::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

const ROUNDS: u64 = 20_000;

#[test]
fn blocking_consumer_is_never_left_asleep() {
    // Ping-pong forces the consumer to sleep before nearly every message.
    let (mut to_consumer, mut consumer_rx) = mailbox::channel::<u64>(4).unwrap();
    let (mut to_producer, mut producer_rx) = mailbox::channel::<u64>(4).unwrap();
    let consumer = thread::spawn(move || {
        for round in 0..ROUNDS {
            let value = consumer_rx
                .recv_blocking(Some(Duration::from_secs(10)))
                .unwrap_or_else(|e| panic!("round {round}: wake-up lost ({e})"));
            assert_eq!(value, round);
            to_producer.send(value).unwrap();
        }
    });
    for round in 0..ROUNDS {
        to_consumer.send(round).unwrap();
        let echoed = producer_rx
            .recv_blocking(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("round {round}: echo wake-up lost ({e})"));
        assert_eq!(echoed, round);
    }
    consumer.join().unwrap();
}

#[test]
fn bursts_with_sleeps_between_all_arrive() {
    let (mut sender, mut receiver) = mailbox::channel::<u64>(16).unwrap();
    let producer = thread::spawn(move || {
        let mut next = 0;
        for burst in 0..2_000u64 {
            let mut batch: Vec<u64> = (next..next + burst % 7 + 1).collect();
            next += batch.len() as u64;
            while !batch.is_empty() {
                if sender.send_batch(&mut batch).unwrap() == 0 {
                    thread::yield_now();
                }
            }
            if burst % 64 == 0 {
                thread::sleep(Duration::from_micros(200));
            }
        }
        next
    });
    let mut expected = 0;
    loop {
        match receiver.recv_blocking(Some(Duration::from_secs(10))) {
            Ok(value) => {
                assert_eq!(value, expected);
                expected += 1;
            }
            Err(RecvTimeoutError::Closed) => break,
            Err(RecvTimeoutError::Timeout) => panic!("wake-up lost after {expected} values"),
        }
    }
    assert_eq!(producer.join().unwrap(), expected);
}

#[test]
fn eventfd_consumer_protocol_never_misses_a_wake() {
    // The consumer behaves like the store's IO thread: arm, sleep on the eventfd, disarm.
    let (mut sender, mut receiver) = mailbox::channel::<u64>(4).unwrap();
    let consumer = thread::spawn(move || {
        let mut expected = 0;
        while expected < 5_000 {
            while let Ok(value) = receiver.try_recv() {
                assert_eq!(value, expected);
                expected += 1;
            }
            if expected < 5_000 && receiver.arm() {
                let mut pollfd = libc::pollfd {
                    fd: receiver.eventfd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: pollfd lives on the stack for this synchronous call.
                let ready = unsafe { libc::poll(&mut pollfd, 1, 10_000) };
                assert_eq!(
                    ready,
                    1,
                    "wake-up lost after {expected} values, queued {}",
                    receiver.len()
                );
                let mut counter = 0u64;
                // SAFETY: reads 8 bytes into a stack value from a non-blocking eventfd.
                unsafe { libc::read(receiver.eventfd(), (&mut counter as *mut u64).cast(), 8) };
                receiver.disarm();
            }
        }
    });
    for value in 0..5_000u64 {
        let mut value = value;
        loop {
            match sender.send(value) {
                Ok(()) => break,
                Err(mailbox::SendError::Full(back)) => {
                    value = back;
                    thread::yield_now();
                }
                Err(mailbox::SendError::Closed(_)) => panic!("consumer gone"),
            }
        }
        if value % 3 == 0 {
            thread::sleep(Duration::from_micros(50));
        }
    }
    consumer.join().unwrap();
}

#[test]
fn runtime_task_consumer_is_never_left_asleep() {
    // The consumer is a spawned task on a runtime that sleeps in io_uring_enter between
    // messages; the producer is a plain thread. A lost wake-up hangs (caught by the timeout).
    let (mut sender, mut receiver) = mailbox::channel::<u64>(4).unwrap();
    let producer = thread::spawn(move || {
        for value in 0..ROUNDS {
            let mut value = value;
            loop {
                match sender.send(value) {
                    Ok(()) => break,
                    Err(mailbox::SendError::Full(back)) => {
                        value = back;
                        thread::yield_now();
                    }
                    Err(mailbox::SendError::Closed(_)) => panic!("consumer gone"),
                }
            }
            if value % 512 == 0 {
                thread::sleep(Duration::from_micros(100));
            }
        }
    });
    let mut runtime = runtime::Runtime::new().unwrap();
    let received = runtime.block_on(async move {
        let consumer = runtime::spawn(async move {
            let mut expected = 0;
            while let Some(value) = receiver.recv().await {
                assert_eq!(value, expected);
                expected += 1;
            }
            expected
        });
        runtime::time::timeout(Duration::from_secs(30), consumer)
            .await
            .expect("wake-up lost: consumer task never finished")
    });
    producer.join().unwrap();
    assert_eq!(received, ROUNDS);
}
