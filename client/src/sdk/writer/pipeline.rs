//! The writer's bookkeeping of batches in flight (pure: no I/O, driven by the writer's driver
//! and by unit tests).
//!
//! ```text
//!   acked            sent[r] (per replica)          tail
//!     |  in flight: sent to some replicas, waiting  |
//!     v  for A of them to make it durable           v
//!  ---+------------------------------------------ --+
//!     | entry | entry | entry | ...                 |
//! ```
//!
//! Invariants:
//! * entries are contiguous and in offset order: `entries[0].base == acked`, each entry's
//!   `base` is the previous one's `next`;
//! * a batch is acknowledged (popped) only at the front, once `ack_count` replicas reported it
//!   durable: the acknowledged prefix only grows, and by whole batches;
//! * once a seal has begun (`end` set) nothing at or above `end` is acknowledged: replica acks
//!   there are ignored, those batches go to the next range;
//! * `sent[r] <= tail` for every replica; after a move to the next range every replica starts
//!   again at `acked`.

use std::collections::VecDeque;

use bytes::Bytes;
use wire::Offset;

/// One appended batch waiting for its acknowledgement.
#[derive(Debug)]
pub(crate) struct Entry<C> {
    pub(crate) base: Offset,
    pub(crate) next: Offset,
    /// The whole batch, stamped for the current range.
    pub(crate) batch: Bytes,
    /// Bit `r` set: replica `r` of the current range reported it durable.
    durable: u32,
    /// What to complete when it is acknowledged (or fails).
    pub(crate) completion: C,
}

impl<C> Entry<C> {
    pub(crate) fn new(base: Offset, next: Offset, batch: Bytes, completion: C) -> Entry<C> {
        debug_assert!(base < next, "a batch covers at least one offset");
        Entry {
            base,
            next,
            batch,
            durable: 0,
            completion,
        }
    }
}

/// Limits on what one APPEND request carries when several batches wait for a replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLimit {
    pub(crate) max_bytes: usize,
    pub(crate) max_batches: usize,
}

/// The batches of the open range in flight, and who holds them.
pub(crate) struct Pipeline<C> {
    acked: Offset,
    entries: VecDeque<Entry<C>>,
    bytes: usize,
    ack_count: usize,
    /// Per replica of the current range: the next offset to send it.
    sent: Vec<Offset>,
    /// Set once a seal of the current range began: the chosen end.
    end: Option<Offset>,
}

impl<C> Pipeline<C> {
    /// An empty pipeline for a range starting at `start`.
    pub(crate) fn new(start: Offset, replica_count: usize, ack_count: usize) -> Pipeline<C> {
        assert!(
            (1..=16).contains(&replica_count),
            "a range has 1..=16 replicas"
        );
        assert!(
            (1..=replica_count).contains(&ack_count),
            "1 <= ack count <= replicas"
        );
        Pipeline {
            acked: start,
            entries: VecDeque::new(),
            bytes: 0,
            ack_count,
            sent: vec![start; replica_count],
            end: None,
        }
    }

    /// Everything below it is acknowledged.
    pub(crate) fn acked(&self) -> Offset {
        self.acked
    }

    /// One past the last batch in flight.
    pub(crate) fn tail(&self) -> Offset {
        self.entries.back().map_or(self.acked, |entry| entry.next)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether one more batch of `batch_bytes` may go in flight under the bounds (one batch is
    /// always allowed, however large).
    pub(crate) fn has_room(
        &self,
        batch_bytes: usize,
        max_bytes: usize,
        max_batches: usize,
    ) -> bool {
        self.entries.is_empty()
            || (self.entries.len() < max_batches && self.bytes + batch_bytes <= max_bytes)
    }

    /// Adds the next batch; it must start where the last one ends.
    pub(crate) fn push(&mut self, entry: Entry<C>) {
        assert_eq!(
            entry.base,
            self.tail(),
            "batches enter the pipeline in offset order, without gaps"
        );
        assert!(self.end.is_none(), "no batch enters a range being sealed");
        self.bytes += entry.batch.len();
        self.entries.push_back(entry);
    }

    /// The batches replica `replica` has not been sent yet, up to `limit` (at least one), with
    /// the offset the first starts at; marks them sent. `None` when it has everything or the
    /// range is being sealed.
    pub(crate) fn take_unsent(
        &mut self,
        replica: usize,
        limit: RequestLimit,
    ) -> Option<(Offset, Vec<Bytes>)> {
        if self.end.is_some() {
            return None;
        }
        let from = self.sent[replica];
        if from >= self.tail() {
            return None;
        }
        let first = self.position(from)?;
        let mut batches = Vec::new();
        let mut bytes = 0;
        let mut next = from;
        for entry in self.entries.range(first..) {
            if !batches.is_empty()
                && (batches.len() >= limit.max_batches
                    || bytes + entry.batch.len() > limit.max_bytes)
            {
                break;
            }
            bytes += entry.batch.len();
            batches.push(entry.batch.clone());
            next = entry.next;
        }
        self.sent[replica] = next;
        Some((from, batches))
    }

    /// Index of the entry starting at `offset`.
    fn position(&self, offset: Offset) -> Option<usize> {
        self.entries
            .binary_search_by_key(&offset, |entry| entry.base)
            .ok()
    }

    /// Replica `replica` made `[base, next)` durable. Returns the batches this acknowledges,
    /// in order. Reports at or above the end of a range being sealed are ignored.
    pub(crate) fn durable(&mut self, replica: usize, base: Offset, next: Offset) -> Vec<Entry<C>> {
        let bit = 1u32 << replica;
        let limit = match self.end {
            Some(end) => next.min(end),
            None => next,
        };
        for entry in &mut self.entries {
            if entry.base >= limit {
                break;
            }
            if entry.base >= base && entry.next <= limit {
                entry.durable |= bit;
            }
        }
        self.acknowledge()
    }

    /// Pops the front batches that enough replicas hold.
    fn acknowledge(&mut self) -> Vec<Entry<C>> {
        let mut acknowledged = Vec::new();
        while let Some(front) = self.entries.front() {
            let below_end = self.end.is_none_or(|end| front.next <= end);
            if !below_end || (front.durable.count_ones() as usize) < self.ack_count {
                break;
            }
            let entry = self.entries.pop_front().expect("front exists");
            debug_assert_eq!(entry.base, self.acked);
            self.acked = entry.next;
            self.bytes -= entry.batch.len();
            acknowledged.push(entry);
        }
        acknowledged
    }

    /// A seal of the current range begins: its end is the acknowledged prefix. From now on no
    /// batch is acknowledged and none is sent until [`Pipeline::move_to`].
    pub(crate) fn begin_seal(&mut self) -> Offset {
        self.end = Some(self.acked);
        self.acked
    }

    /// The range was sealed at the acknowledged prefix; every batch in flight goes to the next
    /// range, which has `replica_count` replicas and `ack_count`: `restamp` rewrites each batch
    /// for it, and every replica is sent everything again from the acknowledged prefix.
    pub(crate) fn move_to(
        &mut self,
        replica_count: usize,
        ack_count: usize,
        mut restamp: impl FnMut(&Bytes) -> Bytes,
    ) {
        assert!((1..=16).contains(&replica_count));
        assert!((1..=replica_count).contains(&ack_count));
        self.end = None;
        self.ack_count = ack_count;
        self.sent = vec![self.acked; replica_count];
        self.bytes = 0;
        for entry in &mut self.entries {
            entry.batch = restamp(&entry.batch);
            entry.durable = 0;
            self.bytes += entry.batch.len();
        }
    }

    /// Whether replica `replica` made the first batch not acknowledged durable (false when
    /// nothing waits).
    pub(crate) fn front_held_by(&self, replica: usize) -> bool {
        self.entries
            .front()
            .is_some_and(|entry| entry.durable & (1u32 << replica) != 0)
    }

    /// Every replica is sent everything again from the acknowledged prefix (the same range
    /// is tried again after every replica refused the first batch not acknowledged).
    pub(crate) fn resend_all(&mut self) {
        let acked = self.acked;
        for sent in &mut self.sent {
            *sent = acked;
        }
    }

    /// Takes every batch in flight (the writer failed).
    pub(crate) fn drain(&mut self) -> Vec<Entry<C>> {
        self.bytes = 0;
        self.entries.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNLIMITED: RequestLimit = RequestLimit {
        max_bytes: usize::MAX,
        max_batches: usize::MAX,
    };
    const ONE: RequestLimit = RequestLimit {
        max_bytes: usize::MAX,
        max_batches: 1,
    };

    /// A pipeline holding batches of `sizes` offsets each, from offset 0; completions are the
    /// batch numbers.
    fn pipeline(replicas: usize, acks: usize, sizes: &[u64]) -> Pipeline<usize> {
        let mut pipeline = Pipeline::new(Offset(0), replicas, acks);
        for (number, size) in sizes.iter().enumerate() {
            let base = pipeline.tail();
            pipeline.push(Entry::new(
                base,
                Offset(base.0 + size),
                Bytes::from(vec![number as u8; 10]),
                number,
            ));
        }
        pipeline
    }

    fn numbers(entries: Vec<Entry<usize>>) -> Vec<usize> {
        entries.into_iter().map(|entry| entry.completion).collect()
    }

    #[test]
    fn acknowledged_in_order_once_a_replicas_hold_it() {
        let mut pipeline = pipeline(3, 2, &[1, 2, 3]);
        // Batch 1 (offsets 1..3) durable on two replicas: not acknowledged before batch 0.
        assert!(pipeline.durable(0, Offset(1), Offset(3)).is_empty());
        assert!(pipeline.durable(1, Offset(1), Offset(3)).is_empty());
        assert_eq!(pipeline.acked(), Offset(0));
        // Batch 0 on one replica: still not.
        assert!(pipeline.durable(2, Offset(0), Offset(1)).is_empty());
        // On a second: batches 0 and 1 go together, in order.
        assert_eq!(
            numbers(pipeline.durable(0, Offset(0), Offset(1))),
            vec![0, 1]
        );
        assert_eq!(pipeline.acked(), Offset(3));
        // One response covering several batches counts for each.
        assert!(pipeline.durable(1, Offset(3), Offset(6)).is_empty());
        assert_eq!(numbers(pipeline.durable(2, Offset(3), Offset(6))), vec![2]);
        assert!(pipeline.is_empty());
        assert_eq!(pipeline.bytes(), 0);
    }

    #[test]
    fn the_same_replica_twice_is_one_copy() {
        let mut pipeline = pipeline(3, 2, &[1]);
        assert!(pipeline.durable(0, Offset(0), Offset(1)).is_empty());
        assert!(pipeline.durable(0, Offset(0), Offset(1)).is_empty());
        assert_eq!(numbers(pipeline.durable(1, Offset(0), Offset(1))), vec![0]);
    }

    #[test]
    fn pipelined_batches_go_to_each_replica_in_order() {
        let mut pipeline = pipeline(2, 1, &[1, 1, 1]);
        let (from, batches) = pipeline.take_unsent(0, ONE).unwrap();
        assert_eq!((from, batches[0][0]), (Offset(0), 0));
        let (from, batches) = pipeline.take_unsent(0, ONE).unwrap();
        assert_eq!((from, batches[0][0]), (Offset(1), 1));
        // The other replica starts at the beginning, and takes the rest in one request.
        let (from, batches) = pipeline.take_unsent(1, UNLIMITED).unwrap();
        assert_eq!(from, Offset(0));
        assert_eq!(
            batches.iter().map(|batch| batch[0]).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(pipeline.take_unsent(1, UNLIMITED).is_none());
        let (from, _) = pipeline.take_unsent(0, UNLIMITED).unwrap();
        assert_eq!(from, Offset(2));
        assert!(pipeline.take_unsent(0, UNLIMITED).is_none());
        // A later batch goes after them.
        pipeline.push(Entry::new(
            Offset(3),
            Offset(4),
            Bytes::from(vec![3u8; 10]),
            3,
        ));
        assert_eq!(pipeline.take_unsent(1, UNLIMITED).unwrap().0, Offset(3));
    }

    #[test]
    #[should_panic(expected = "offset order")]
    fn a_batch_out_of_order_is_refused() {
        let mut pipeline = pipeline(1, 1, &[1]);
        pipeline.push(Entry::new(Offset(5), Offset(6), Bytes::new(), 9));
    }

    #[test]
    fn bounds_hold_back_batches_but_never_block_the_first() {
        let pipeline = pipeline(1, 1, &[1, 1]);
        // 2 batches of 10 bytes in flight.
        assert!(pipeline.has_room(10, 30, 3));
        assert!(!pipeline.has_room(11, 30, 3), "bytes bound");
        assert!(!pipeline.has_room(1, 1000, 2), "batch bound");
        let empty: Pipeline<usize> = Pipeline::new(Offset(0), 1, 1);
        assert!(empty.has_room(1 << 30, 10, 1), "one batch always fits");
    }

    #[test]
    fn a_seal_acknowledges_nothing_at_or_above_its_end_and_moves_the_rest() {
        let mut pipeline = pipeline(3, 2, &[1, 1, 1, 1]);
        assert!(pipeline.durable(0, Offset(0), Offset(1)).is_empty());
        assert_eq!(numbers(pipeline.durable(1, Offset(0), Offset(1))), vec![0]);
        // Batch 1 is on one replica when replica 2 fails: the seal takes end 1.
        assert!(pipeline.durable(0, Offset(1), Offset(2)).is_empty());
        assert_eq!(pipeline.begin_seal(), Offset(1));
        // A late ack for batch 1 from another replica is ignored: it goes to the next range.
        assert!(pipeline.durable(1, Offset(1), Offset(2)).is_empty());
        assert!(pipeline.durable(1, Offset(0), Offset(4)).is_empty());
        assert_eq!(pipeline.acked(), Offset(1));
        assert!(
            pipeline.take_unsent(0, UNLIMITED).is_none(),
            "nothing sent while sealing"
        );
        // The next range has 2 replicas, A=1; the batches are restamped and resent from 1.
        pipeline.move_to(2, 1, |batch| {
            let mut copy = batch.to_vec();
            copy.push(0xFF);
            Bytes::from(copy)
        });
        assert_eq!(pipeline.bytes(), 3 * 11);
        let (from, batches) = pipeline.take_unsent(1, UNLIMITED).unwrap();
        assert_eq!(from, Offset(1));
        assert_eq!(batches.len(), 3);
        assert!(batches
            .iter()
            .all(|batch| batch.len() == 11 && batch[10] == 0xFF));
        // The old range's replica 0 ack of batch 1 does not count in the new range.
        assert_eq!(
            numbers(pipeline.durable(1, Offset(1), Offset(3))),
            vec![1, 2]
        );
        assert_eq!(pipeline.acked(), Offset(3));
    }

    #[test]
    fn draining_returns_every_batch_in_flight() {
        let mut pipeline = pipeline(1, 1, &[2, 2]);
        assert_eq!(numbers(pipeline.drain()), vec![0, 1]);
        assert!(pipeline.is_empty());
    }
}
