//! A bounded, lock-free, single-producer single-consumer ring.
//!
//! The ring is the only channel between threads on the hot path: a data node's worker hands
//! requests to its IO thread through one, and gets completions back through another. It owns a
//! fixed array of slots allocated once in [`channel`]; after that, pushing and popping never
//! allocate and never take a lock.
//!
//! Indices are free-running `usize` counters (`head` for the consumer, `tail` for the producer)
//! on their own cache lines, so the two threads never write to the same line. Each side keeps a
//! cached copy of the other side's index and only reloads it (an acquire load that may miss in
//! the cache) when the cached copy says the ring is full or empty. Batch operations publish their
//! index once per batch.
//!
//! Dropping either side marks it dead; the other side can ask with `is_consumer_alive` /
//! `is_producer_alive`. Items still in the ring when the last side is dropped are dropped with it.

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Keeps a value on a cache line (pair) of its own so the producer's and the consumer's writes
/// never share one. 128 bytes covers adjacent-line prefetching on x86 and the line size on
/// recent ARM cores.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared<T> {
    /// Next slot the consumer reads. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    producer_alive: AtomicBool,
    consumer_alive: AtomicBool,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: slots are only touched by the one producer (between tail and head + capacity) and the
// one consumer (between head and tail); the release/acquire pairs on `tail` and `head` hand each
// slot over, so a `T: Send` moves between exactly two threads and is never shared.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above, the ring only moves `T: Send` values.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    fn slot(&self, index: usize) -> *mut MaybeUninit<T> {
        self.slots[index & self.mask].get()
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both sides are gone (this is the last Arc), so plain loads see the final indices.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        let mut index = head;
        while index != tail {
            // SAFETY: slots in [head, tail) were written by the producer and not yet read.
            unsafe { (*self.slot(index)).assume_init_drop() };
            index = index.wrapping_add(1);
        }
    }
}

/// Creates a ring holding up to `capacity` items, rounded up to a power of two (at least 1).
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(1).next_power_of_two();
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        producer_alive: AtomicBool::new(true),
        consumer_alive: AtomicBool::new(true),
        mask: capacity - 1,
        slots,
    });
    let producer = Producer {
        shared: shared.clone(),
        tail: 0,
        cached_head: Cell::new(0),
    };
    let consumer = Consumer {
        shared,
        head: 0,
        cached_tail: Cell::new(0),
    };
    (producer, consumer)
}

/// The sending half of a ring. `Send`, not `Clone`: exactly one thread pushes.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our copy of `shared.tail` (we are its only writer).
    tail: usize,
    /// Last `shared.head` we loaded; the consumer only ever moves it forward.
    cached_head: Cell<usize>,
}

/// The receiving half of a ring. `Send`, not `Clone`: exactly one thread pops.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our copy of `shared.head` (we are its only writer).
    head: usize,
    /// Last `shared.tail` we loaded; the producer only ever moves it forward.
    cached_tail: Cell<usize>,
}

impl<T: Send> Producer<T> {
    /// Free slots, refreshing the consumer's index only when the cached copy says full.
    fn free_fast(&self) -> usize {
        let capacity = self.capacity();
        let used = self.tail.wrapping_sub(self.cached_head.get());
        debug_assert!(used <= capacity);
        if used < capacity {
            return capacity - used;
        }
        self.free_slots()
    }

    /// Pushes one value; gives it back when the ring is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.free_fast() == 0 {
            return Err(value);
        }
        // SAFETY: the slot at `tail` is free (the consumer is past it, checked above) and only we
        // write slots ahead of the consumer; it becomes visible with the release store below.
        unsafe { (*self.shared.slot(self.tail)).write(value) };
        self.tail = self.tail.wrapping_add(1);
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Moves as many values as fit from the front of `values` into the ring (the rest stay in
    /// `values`, in order) and publishes them together. Returns how many were moved.
    pub fn push_batch(&mut self, values: &mut Vec<T>) -> usize {
        if values.is_empty() {
            return 0;
        }
        let mut free = self.free_fast();
        if free < values.len() {
            free = self.free_slots();
        }
        let count = free.min(values.len());
        if count == 0 {
            return 0;
        }
        for value in values.drain(..count) {
            // SAFETY: `count` slots ahead of `tail` are free (checked above); only we write them,
            // and they are published by the single release store after the loop.
            unsafe { (*self.shared.slot(self.tail)).write(value) };
            self.tail = self.tail.wrapping_add(1);
        }
        self.shared.tail.store(self.tail, Ordering::Release);
        count
    }

    /// Slots free right now (the consumer may free more at any moment).
    pub fn free_slots(&self) -> usize {
        let head = self.shared.head.load(Ordering::Acquire);
        self.cached_head.set(head);
        let used = self.tail.wrapping_sub(head);
        debug_assert!(used <= self.capacity());
        self.capacity() - used
    }

    /// Items the ring can hold.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// False once the consumer has been dropped; pushes after that are never read.
    pub fn is_consumer_alive(&self) -> bool {
        self.shared.consumer_alive.load(Ordering::Acquire)
    }
}

impl<T: Send> Consumer<T> {
    /// Items available, refreshing the producer's index only when the cached copy says empty.
    fn available_fast(&self) -> usize {
        let available = self.cached_tail.get().wrapping_sub(self.head);
        if available > 0 {
            return available;
        }
        self.len()
    }

    /// Takes the oldest value, if any.
    pub fn pop(&mut self) -> Option<T> {
        if self.available_fast() == 0 {
            return None;
        }
        // SAFETY: the slot at `head` was written by the producer and published by its release
        // store of `tail`, which our acquire load in `len` observed; only we read it.
        let value = unsafe { (*self.shared.slot(self.head)).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.shared.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Appends up to `max` values to `out`, oldest first, freeing their slots together. Returns
    /// how many were taken.
    pub fn pop_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let mut available = self.available_fast();
        if available < max {
            available = self.len();
        }
        let count = available.min(max);
        if count == 0 {
            return 0;
        }
        out.reserve(count);
        for _ in 0..count {
            // SAFETY: `count` slots from `head` were published by the producer (see `pop`).
            let value = unsafe { (*self.shared.slot(self.head)).assume_init_read() };
            out.push(value);
            self.head = self.head.wrapping_add(1);
        }
        self.shared.head.store(self.head, Ordering::Release);
        count
    }

    /// Items queued right now (the producer may add more at any moment).
    pub fn len(&self) -> usize {
        let tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail.set(tail);
        let len = tail.wrapping_sub(self.head);
        debug_assert!(len <= self.shared.mask + 1);
        len
    }

    /// True when nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items the ring can hold.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// False once the producer has been dropped. Items it pushed before that can still be
    /// popped; check this after an empty `pop` to know the stream has ended.
    pub fn is_producer_alive(&self) -> bool {
        self.shared.producer_alive.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.shared.producer_alive.store(false, Ordering::Release);
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.consumer_alive.store(false, Ordering::Release);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &(self.shared.mask + 1))
            .field("tail", &self.tail)
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &(self.shared.mask + 1))
            .field("head", &self.head)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn capacity_rounds_up_and_full_ring_returns_value() {
        let (mut producer, mut consumer) = channel::<u32>(5);
        assert_eq!(producer.capacity(), 8);
        for value in 0..8 {
            producer.push(value).unwrap();
        }
        assert_eq!(producer.push(99), Err(99));
        assert_eq!(producer.free_slots(), 0);
        assert_eq!(consumer.len(), 8);
        assert_eq!(consumer.pop(), Some(0));
        producer.push(8).unwrap();
        let mut out = Vec::new();
        assert_eq!(consumer.pop_batch(&mut out, 100), 8);
        assert_eq!(out, (1..=8).collect::<Vec<_>>());
        assert!(consumer.is_empty());
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn push_batch_moves_only_what_fits_from_the_front() {
        let (mut producer, mut consumer) = channel::<u32>(4);
        producer.push(100).unwrap();
        let mut values = vec![1, 2, 3, 4, 5];
        assert_eq!(producer.push_batch(&mut values), 3);
        assert_eq!(values, vec![4, 5]);
        let mut out = Vec::new();
        assert_eq!(consumer.pop_batch(&mut out, 2), 2);
        assert_eq!(out, vec![100, 1]);
        assert_eq!(producer.push_batch(&mut values), 2);
        assert!(values.is_empty());
        out.clear();
        consumer.pop_batch(&mut out, 10);
        assert_eq!(out, vec![2, 3, 4, 5]);
    }

    #[test]
    fn liveness_is_reported_to_the_other_side() {
        let (producer, consumer) = channel::<u8>(2);
        assert!(producer.is_consumer_alive());
        drop(consumer);
        assert!(!producer.is_consumer_alive());
        let (producer, consumer) = channel::<u8>(2);
        drop(producer);
        assert!(!consumer.is_producer_alive());
    }

    #[test]
    fn remaining_items_are_dropped_exactly_once() {
        let counter = Rc::new(());
        struct Item(#[allow(dead_code)] Rc<()>);
        // Rc is !Send; wrap it so the test can count drops on one thread.
        // SAFETY: the test never moves either side to another thread.
        unsafe impl Send for Item {}
        let (mut producer, mut consumer) = channel::<Item>(8);
        for _ in 0..6 {
            assert!(producer.push(Item(counter.clone())).is_ok());
        }
        drop(consumer.pop());
        assert_eq!(Rc::strong_count(&counter), 6);
        drop(producer);
        assert_eq!(Rc::strong_count(&counter), 6);
        drop(consumer);
        assert_eq!(Rc::strong_count(&counter), 1);
    }
}
