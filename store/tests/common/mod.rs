//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use store::{RangeKey, StoreConfig, SyncStore};

/// A configuration small enough for tests: 1 MiB segments, 64 KiB groups and read blocks.
pub fn small_config(path: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(path);
    config.segment_size_bytes = 1 << 20;
    config.max_group_bytes = 64 << 10;
    config.read_block_size_bytes = 64 << 10;
    config.cache_size_bytes = 1 << 20;
    config.worker_queue_capacity = 256;
    config.uring.queue_depth = 64;
    config.checkpoint_interval_ms = 3_600_000;
    config
}

/// Deterministic batch contents for (range, base offset), `len` bytes.
pub fn batch(range: RangeKey, base_offset: u64, len: usize) -> Bytes {
    let mut state = range.stream_id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (range.range_index.0 as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ base_offset.wrapping_mul(0x1656_67B1_9E37_79F9)
        ^ len as u64;
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    Bytes::from(bytes)
}

/// Reads every batch of `range` from its start and returns (base offset, bytes) pairs.
pub fn read_all(store: &mut SyncStore, range: RangeKey) -> Vec<Bytes> {
    let Some(summary) = store.index(range) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut offset = summary.start_offset;
    while offset < summary.next_offset {
        let batches = store.read(range, offset, 256 << 10).expect("read");
        assert!(!batches.is_empty(), "nothing read at offset {offset}");
        for batch in batches {
            // Tests use one offset per 100 bytes, at least one.
            offset += count_for(batch.len()) as u64;
            out.push(batch);
        }
    }
    out
}

/// Offsets a test batch of `len` bytes covers.
pub fn count_for(len: usize) -> u32 {
    (len / 100).max(1) as u32
}
