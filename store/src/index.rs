//! The per-range index: base offset -> (WAL position, payload length, record count).
//!
//! Batches of a range arrive with dense, increasing offsets, so a range's index is a deque in
//! offset order: appends push at the back, trims pop at the front, look-ups binary-search.

use std::collections::{HashMap, VecDeque};

use crate::{Offset, RangeKey, WalPosition};

/// Where one batch lives in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// First offset of the batch.
    pub base_offset: Offset,
    /// WAL position of the batch's record (its header).
    pub position: WalPosition,
    /// Bytes of the batch as appended.
    pub payload_len: u32,
    /// Offsets the batch covers.
    pub count: u32,
}

impl IndexEntry {
    /// One past the last offset of the batch.
    pub fn end_offset(&self) -> Offset {
        self.base_offset + self.count as u64
    }
}

/// Start and end of a range as the store knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSummary {
    /// First readable offset (after trims).
    pub start_offset: Offset,
    /// One past the last durable offset.
    pub next_offset: Offset,
    /// Batches held.
    pub batch_count: usize,
    /// Bytes of the batches held (their `payload_len` summed): what the range keeps on disk,
    /// not counting WAL record headers and padding.
    pub payload_bytes: u64,
}

/// The index of one range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchIndex {
    start_offset: Offset,
    next_offset: Offset,
    entries: VecDeque<IndexEntry>,
    /// Sum of the entries' `payload_len`, kept as they are pushed and trimmed.
    payload_bytes: u64,
}

impl BatchIndex {
    /// An empty range whose first batch will start at `start_offset`.
    pub fn new(start_offset: Offset) -> BatchIndex {
        BatchIndex {
            start_offset,
            next_offset: start_offset,
            entries: VecDeque::new(),
            payload_bytes: 0,
        }
    }

    pub(crate) fn from_parts(
        start_offset: Offset,
        next_offset: Offset,
        entries: VecDeque<IndexEntry>,
    ) -> BatchIndex {
        let payload_bytes = entries
            .iter()
            .map(|entry| u64::from(entry.payload_len))
            .sum();
        BatchIndex {
            start_offset,
            next_offset,
            entries,
            payload_bytes,
        }
    }

    pub fn start_offset(&self) -> Offset {
        self.start_offset
    }

    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    pub fn entries(&self) -> &VecDeque<IndexEntry> {
        &self.entries
    }

    pub fn summary(&self) -> RangeSummary {
        RangeSummary {
            start_offset: self.start_offset,
            next_offset: self.next_offset,
            batch_count: self.entries.len(),
            payload_bytes: self.payload_bytes,
        }
    }

    /// Records a durable batch. Batches arrive in offset order; a gap (the range was created at
    /// a later offset, or trimmed ahead) moves the start.
    pub fn push(&mut self, entry: IndexEntry) {
        debug_assert!(entry.count > 0, "empty batch in the index");
        if self.entries.is_empty() && self.next_offset != entry.base_offset {
            debug_assert!(
                self.next_offset == self.start_offset,
                "append at {} to a range expecting {}",
                entry.base_offset,
                self.next_offset
            );
            self.start_offset = entry.base_offset;
            self.next_offset = entry.base_offset;
        }
        debug_assert_eq!(entry.base_offset, self.next_offset, "index gap");
        if let Some(last) = self.entries.back() {
            debug_assert!(last.position < entry.position, "index out of WAL order");
        }
        self.next_offset = entry.end_offset();
        self.payload_bytes += u64::from(entry.payload_len);
        self.entries.push_back(entry);
    }

    /// Moves the start to `offset`: batches entirely below it are dropped; the batch containing
    /// it stays. Returns the dropped entries.
    pub fn trim(&mut self, offset: Offset) -> Vec<IndexEntry> {
        let mut dropped = Vec::new();
        if offset <= self.start_offset {
            return dropped;
        }
        self.start_offset = offset;
        if self.next_offset < offset {
            self.next_offset = offset;
        }
        while let Some(first) = self.entries.front() {
            if first.end_offset() > offset {
                break;
            }
            dropped.extend(self.entries.pop_front());
        }
        let dropped_bytes: u64 = dropped
            .iter()
            .map(|entry| u64::from(entry.payload_len))
            .sum();
        debug_assert!(dropped_bytes <= self.payload_bytes);
        self.payload_bytes -= dropped_bytes;
        dropped
    }

    /// Index of the batch containing `offset`, if held.
    pub fn find(&self, offset: Offset) -> Option<usize> {
        if offset < self.start_offset || offset >= self.next_offset {
            return None;
        }
        let slot = self
            .entries
            .partition_point(|entry| entry.end_offset() <= offset);
        (slot < self.entries.len() && self.entries[slot].base_offset <= offset).then_some(slot)
    }
}

/// All ranges' indexes.
pub type Index = HashMap<RangeKey, BatchIndex>;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: Offset, count: u32, position: WalPosition) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            position,
            payload_len: 10,
            count,
        }
    }

    #[test]
    fn find_trim_and_next() {
        let mut index = BatchIndex::new(Offset(100));
        index.push(entry(Offset(100), 5, 0));
        index.push(entry(Offset(105), 1, 64));
        index.push(entry(Offset(106), 10, 128));
        assert_eq!(index.next_offset(), Offset(116));
        assert_eq!(
            index.summary().payload_bytes,
            30,
            "three batches of 10 bytes"
        );
        assert_eq!(index.find(Offset(99)), None);
        assert_eq!(index.find(Offset(100)), Some(0));
        assert_eq!(index.find(Offset(104)), Some(0));
        assert_eq!(index.find(Offset(105)), Some(1));
        assert_eq!(index.find(Offset(115)), Some(2));
        assert_eq!(index.find(Offset(116)), None);
        let dropped = index.trim(Offset(106));
        assert_eq!(dropped.len(), 2);
        assert_eq!(
            index.summary().payload_bytes,
            10,
            "trimmed batches no longer count"
        );
        assert_eq!(index.start_offset(), Offset(106));
        assert_eq!(index.find(Offset(105)), None);
        assert_eq!(index.find(Offset(110)), Some(0));
        assert!(
            index.trim(Offset(110)).is_empty(),
            "batch containing the trim point stays"
        );
        assert_eq!(index.find(Offset(110)), Some(0));
        assert_eq!(index.find(Offset(109)), None);
        index.trim(Offset(200));
        assert_eq!(index.summary().batch_count, 0);
        assert_eq!(index.summary().payload_bytes, 0);
        assert_eq!(index.next_offset(), Offset(200));
        let rebuilt = BatchIndex::from_parts(
            Offset(0),
            Offset(6),
            VecDeque::from([entry(Offset(0), 5, 0), entry(Offset(5), 1, 64)]),
        );
        assert_eq!(
            rebuilt.summary().payload_bytes,
            20,
            "recovery counts the entries too"
        );
    }

    #[test]
    fn first_append_sets_start() {
        let mut index = BatchIndex::new(Offset(0));
        index.push(entry(Offset(500), 2, 0));
        assert_eq!(index.start_offset(), Offset(500));
        assert_eq!(index.next_offset(), Offset(502));
    }
}
