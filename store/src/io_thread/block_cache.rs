//! The block cache: WAL blocks read from disk, kept up to a byte budget and evicted least
//! recently used first. Blocks of a reclaimed segment are dropped with it.

use std::collections::HashMap;

use bytes::Bytes;

use crate::WalPosition;

/// A bounded cache of WAL blocks, least recently used evicted first.
pub(super) struct BlockCache {
    pub(super) blocks: HashMap<WalPosition, (Bytes, u64)>,
    pub(super) bytes: usize,
    pub(super) capacity_bytes: usize,
    pub(super) tick: u64,
}

impl BlockCache {
    pub(super) fn get(&mut self, block_start: WalPosition, needed_len: usize) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, used) = self.blocks.get_mut(&block_start)?;
        if bytes.len() < needed_len {
            return None;
        }
        *used = tick;
        Some(bytes.clone())
    }

    pub(super) fn insert(&mut self, block_start: WalPosition, bytes: Bytes) {
        if bytes.len() > self.capacity_bytes {
            return;
        }
        self.tick += 1;
        if let Some((old, _)) = self.blocks.insert(block_start, (bytes.clone(), self.tick)) {
            self.bytes -= old.len();
        }
        self.bytes += bytes.len();
        while self.bytes > self.capacity_bytes {
            let oldest = self
                .blocks
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(start, _)| *start);
            let Some(oldest) = oldest else { break };
            if let Some((old, _)) = self.blocks.remove(&oldest) {
                self.bytes -= old.len();
            }
        }
    }

    pub(super) fn remove_segment(&mut self, start: WalPosition, end: WalPosition) {
        let doomed: Vec<WalPosition> = self
            .blocks
            .keys()
            .copied()
            .filter(|block| *block >= start && *block < end)
            .collect();
        for block in doomed {
            if let Some((old, _)) = self.blocks.remove(&block) {
                self.bytes -= old.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity_bytes: usize) -> BlockCache {
        BlockCache {
            blocks: HashMap::new(),
            bytes: 0,
            capacity_bytes,
            tick: 0,
        }
    }

    fn block(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[test]
    fn a_block_shorter_than_needed_is_a_miss() {
        let mut cache = cache(1 << 20);
        cache.insert(0, block(4096));
        assert!(cache.get(0, 4096).is_some());
        assert!(cache.get(0, 4097).is_none());
        assert!(cache.get(4096, 1).is_none());
    }

    #[test]
    fn the_least_recently_used_block_is_evicted_first() {
        let mut cache = cache(3 * 4096);
        cache.insert(0, block(4096));
        cache.insert(4096, block(4096));
        cache.insert(8192, block(4096));
        assert!(cache.get(0, 1).is_some());
        cache.insert(12288, block(4096));
        assert!(cache.get(4096, 1).is_none(), "the oldest unused block goes");
        assert!(cache.get(0, 1).is_some());
        assert_eq!(cache.bytes, 3 * 4096);
    }

    #[test]
    fn replacing_a_block_counts_its_bytes_once_and_oversized_blocks_are_not_kept() {
        let mut cache = cache(3 * 4096);
        cache.insert(0, block(1000));
        cache.insert(0, block(4096));
        assert_eq!(cache.bytes, 4096);
        cache.insert(8192, block(4 * 4096));
        assert!(cache.get(8192, 1).is_none());
        assert_eq!(cache.bytes, 4096);
    }

    #[test]
    fn a_reclaimed_segment_leaves_the_cache() {
        let mut cache = cache(1 << 20);
        cache.insert(0, block(4096));
        cache.insert(1 << 16, block(4096));
        cache.insert(1 << 17, block(4096));
        cache.remove_segment(1 << 16, 1 << 17);
        assert!(cache.get(0, 1).is_some());
        assert!(cache.get(1 << 16, 1).is_none());
        assert!(cache.get(1 << 17, 1).is_some());
        assert_eq!(cache.bytes, 2 * 4096);
    }
}
