//! Record batches: what the builder writes is what the view reads; the CRC catches any change
//! to header or payload; bad input gives typed errors and the iterator stops there.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use wire::batch::{BatchHeader, BATCH_HEADER_BYTES};
use wire::{BatchBuilder, BatchError, BatchIter, BatchView, Epoch, Offset, RangeIndex, StreamId};

fn build(base_offset: u64, records: &[&[u8]]) -> Bytes {
    let mut builder = BatchBuilder::new(StreamId(9), RangeIndex(2), Epoch(5), Offset(base_offset))
        .timestamp_ms(1234);
    for record in records {
        builder.push_record(record).unwrap();
    }
    builder.finish().unwrap()
}

#[test]
fn builder_output_reads_back_field_by_field() {
    let bytes = build(40, &[b"alpha", b"", b"gamma-gamma"]);
    let view = BatchView::parse(bytes.clone()).unwrap();
    let header = view.header();
    assert_eq!(header.stream_id, StreamId(9));
    assert_eq!(header.range_index, RangeIndex(2));
    assert_eq!(header.epoch, Epoch(5));
    assert_eq!(header.base_offset, Offset(40));
    assert_eq!(header.record_count, 3);
    assert_eq!(header.next_offset(), Offset(43));
    assert_eq!(header.timestamp_ms, 1234);
    assert_eq!(header.payload_length as usize, 3 * 4 + 5 + 11);
    assert_eq!(view.as_bytes(), &bytes);
    let records: Vec<Bytes> = view.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(records, [&b"alpha"[..], b"", b"gamma-gamma"]);
}

#[test]
fn payload_and_records_are_views_into_the_received_bytes() {
    let bytes = build(0, &[b"zero-copy"]);
    let view = BatchView::parse(bytes.clone()).unwrap();
    let payload = view.payload();
    assert_eq!(payload.as_ptr(), bytes[BATCH_HEADER_BYTES..].as_ptr());
}

#[test]
fn every_byte_change_is_detected() {
    let bytes = build(7, &[b"some record", b"another"]);
    for at in 0..bytes.len() {
        let mut corrupted = bytes.to_vec();
        corrupted[at] ^= 0x01;
        let result = BatchView::parse(Bytes::from(corrupted));
        assert!(result.is_err(), "change at byte {at} not detected");
    }
}

#[test]
fn opaque_payload_batches_iterate_back_to_back() {
    let mut payload = BytesMut::new();
    let mut next = 100;
    for size in [0usize, 1, 300, 17] {
        let count = 3;
        let batch = BatchBuilder::new(StreamId(1), RangeIndex(0), Epoch(1), Offset(next))
            .finish_with_payload(count, &vec![size as u8; size])
            .unwrap();
        payload.put_slice(&batch);
        next += u64::from(count);
    }
    let batches: Vec<_> = BatchIter::new(payload.freeze())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(batches.len(), 4);
    let mut expected = 100;
    for batch in &batches {
        assert_eq!(batch.header().base_offset, Offset(expected));
        expected = batch.header().next_offset().0;
    }
    assert_eq!(batches[2].payload().len(), 300);
}

#[test]
fn iterator_yields_one_error_at_the_first_bad_batch_then_stops() {
    let good = build(0, &[b"a"]);
    let mut bad = build(1, &[b"b"]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut payload = good.to_vec();
    payload.extend(&bad);
    payload.extend(build(2, &[b"c"]).iter());
    let mut iter = BatchIter::new(Bytes::from(payload));
    assert!(iter.next().unwrap().is_ok());
    assert!(matches!(
        iter.next(),
        Some(Err(BatchError::CrcMismatch { .. }))
    ));
    assert!(iter.next().is_none());
}

#[test]
fn bad_batches_have_typed_errors() {
    let good = build(0, &[b"x"]);
    let parse = |bytes: Vec<u8>| BatchView::parse(Bytes::from(bytes));

    assert_eq!(
        parse(good[..10].to_vec()),
        Err(BatchError::Truncated {
            needed: BATCH_HEADER_BYTES,
            available: 10
        })
    );
    assert!(matches!(
        parse(good[..good.len() - 1].to_vec()),
        Err(BatchError::Truncated { .. })
    ));
    let mut longer = good.to_vec();
    longer.push(0);
    assert!(matches!(parse(longer), Err(BatchError::Malformed { .. })));
    let mut bad = good.to_vec();
    bad[0] = 0;
    assert_eq!(parse(bad), Err(BatchError::BadMagic { found: 0 }));
    let mut bad = good.to_vec();
    bad[1] = 9;
    assert_eq!(parse(bad), Err(BatchError::UnsupportedVersion { found: 9 }));

    let zero_records = BatchBuilder::new(StreamId(1), RangeIndex(0), Epoch(1), Offset(0)).finish();
    assert!(matches!(zero_records, Err(BatchError::Malformed { .. })));
    let overflow = BatchBuilder::new(StreamId(1), RangeIndex(0), Epoch(1), Offset(Offset::MAX.0))
        .finish_with_payload(2, b"");
    assert!(matches!(overflow, Err(BatchError::Malformed { .. })));
}

#[test]
fn records_that_do_not_fill_the_payload_are_an_error() {
    // Opaque payload claiming 2 records but holding one length-prefixed record and junk.
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend(b"a?");
    let bytes = BatchBuilder::new(StreamId(1), RangeIndex(0), Epoch(1), Offset(0))
        .finish_with_payload(1, &payload)
        .unwrap();
    let view = BatchView::parse(bytes).unwrap();
    let records: Vec<_> = view.records().collect();
    assert_eq!(records.len(), 2);
    assert!(records[0].is_ok());
    assert!(matches!(records[1], Err(BatchError::Malformed { .. })));
}

#[test]
fn restamp_moves_a_batch_to_another_range_and_epoch_with_a_valid_crc() {
    let bytes = build(50, &[b"resend me"]);
    let view = BatchView::parse(bytes).unwrap();
    let moved = BatchView::parse(view.restamp(RangeIndex(3), Epoch(8))).unwrap();
    assert_eq!(moved.header().range_index, RangeIndex(3));
    assert_eq!(moved.header().epoch, Epoch(8));
    assert_eq!(moved.header().base_offset, Offset(50));
    assert_eq!(moved.payload(), view.payload());
}

proptest! {
    #[test]
    fn any_batch_round_trips(
        stream in any::<u64>(),
        range in any::<u32>(),
        epoch in any::<u64>(),
        base in 0..u64::MAX / 2,
        timestamp in any::<u64>(),
        records in vec(vec(any::<u8>(), 0..100), 1..20),
    ) {
        let mut builder = BatchBuilder::new(StreamId(stream), RangeIndex(range), Epoch(epoch),
            Offset(base)).timestamp_ms(timestamp);
        for record in &records {
            builder.push_record(record).unwrap();
        }
        let bytes = builder.finish().unwrap();
        let view = BatchView::parse(bytes).unwrap();
        let header: &BatchHeader = view.header();
        prop_assert_eq!(header.stream_id, StreamId(stream));
        prop_assert_eq!(header.range_index, RangeIndex(range));
        prop_assert_eq!(header.epoch, Epoch(epoch));
        prop_assert_eq!(header.base_offset, Offset(base));
        prop_assert_eq!(header.timestamp_ms, timestamp);
        prop_assert_eq!(header.record_count as usize, records.len());
        let read: Vec<Bytes> = view.records().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(read.len(), records.len());
        for (got, want) in read.iter().zip(&records) {
            prop_assert_eq!(&got[..], &want[..]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_batch_parser(input in vec(any::<u8>(), 0..600)) {
        let bytes = Bytes::from(input);
        for batch in BatchIter::new(bytes.clone()) {
            match batch {
                Ok(batch) => { batch.records().for_each(drop); }
                Err(_) => break,
            }
        }
        let _ = BatchView::parse(bytes);
    }
}
