//! Two threads push and pop millions of values through small rings; every value must arrive
//! exactly once and in order, through single and batch operations alike.

use runtime::spsc;
use std::thread;

const COUNT: u64 = 1_000_000;

#[test]
fn every_value_arrives_once_in_order_single_ops() {
    let (mut producer, mut consumer) = spsc::channel::<u64>(64);
    let sender = thread::spawn(move || {
        let mut next = 0;
        while next < COUNT {
            match producer.push(next) {
                Ok(()) => next += 1,
                Err(value) => {
                    assert_eq!(value, next);
                    std::hint::spin_loop();
                }
            }
        }
    });
    let mut expected = 0;
    while expected < COUNT {
        match consumer.pop() {
            Some(value) => {
                assert_eq!(value, expected);
                expected += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    sender.join().unwrap();
    assert!(!consumer.is_producer_alive());
    assert_eq!(consumer.pop(), None);
}

#[test]
fn every_value_arrives_once_in_order_batches() {
    let (mut producer, mut consumer) = spsc::channel::<Box<u64>>(128);
    let sender = thread::spawn(move || {
        let mut next = 0;
        let mut pending = Vec::with_capacity(100);
        while next < COUNT || !pending.is_empty() {
            // Varying batch sizes exercise partial pushes at every ring position.
            while pending.len() < (next % 97 + 1) as usize && next < COUNT {
                pending.push(Box::new(next));
                next += 1;
            }
            if producer.push_batch(&mut pending) == 0 {
                thread::yield_now();
            }
        }
    });
    let mut expected = 0;
    let mut out = Vec::with_capacity(64);
    while expected < COUNT {
        out.clear();
        if consumer.pop_batch(&mut out, (expected % 61 + 1) as usize) == 0 {
            thread::yield_now();
            continue;
        }
        for value in out.drain(..) {
            assert_eq!(*value, expected);
            expected += 1;
        }
    }
    sender.join().unwrap();
    assert!(consumer.is_empty());
}
