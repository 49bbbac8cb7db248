//! Parses arbitrary bytes as record batches back to back, then as one batch, and walks the
//! records of every valid batch. Must never panic; a batch that parses must re-serialize to its
//! own bytes and keep its CRC through a restamp.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wire::batch::{BatchIter, BatchView};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let mut walked = 0;
    for batch in BatchIter::new(bytes.clone()) {
        let Ok(batch) = batch else { break };
        walked += batch.as_bytes().len();
        assert_eq!(batch.header().batch_len(), batch.as_bytes().len());
        batch.records().for_each(drop);
        let moved = batch.restamp(wire::RangeIndex(1), wire::Epoch(2));
        let reparsed = BatchView::parse(moved).expect("restamped batch is valid");
        assert_eq!(reparsed.payload(), batch.payload());
    }
    assert!(walked <= data.len());
    let _ = BatchView::parse(bytes.clone());
    BatchIter::unverified(bytes).for_each(drop);
});
