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
