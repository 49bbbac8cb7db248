//! Wire codec microbenchmark: encode and decode of a 64 KiB APPEND frame and of a PING, next to
//! two baselines measured in the same run on the same bytes: a plain copy (memcpy) and a bare
//! CRC32C. Decoding an APPEND should cost little more than its CRC32C, since the payload is
//! never copied.
//!
//! Run: `cargo bench -p benches --bench wire`. Results and their reading: docs/benchmark-wire.md.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wire::msg::{AppendRequest, PingRequest};
use wire::{
    encode_parts, encode_request, BatchBuilder, BatchIter, Decoder, Epoch, Flags, Frame, Message,
    Offset, RangeIndex, StreamId, DEFAULT_MAX_FRAME_BYTES,
};

const APPEND_PAYLOAD_BYTES: usize = 64 << 10;

fn append_request() -> AppendRequest {
    AppendRequest {
        repair: false,
        stream_id: StreamId(7),
        range_index: RangeIndex(1),
        epoch: Epoch(3),
        confirmed_offset: Some(Offset(1000)),
    }
}

/// One 64 KiB record batch (header included), as a client sends it.
fn append_payload() -> Bytes {
    let batch_payload: Vec<u8> = (0..APPEND_PAYLOAD_BYTES - wire::batch::BATCH_HEADER_BYTES)
        .map(|index| (index * 31 % 251) as u8)
        .collect();
    BatchBuilder::new(StreamId(7), RangeIndex(1), Epoch(3), Offset(1000))
        .timestamp_ms(1_700_000_000_000)
        .finish_with_payload(64, &batch_payload)
        .expect("batch")
}

/// Benchmarks one frame kind: baselines, then encode and decode.
fn bench_frame<M: Message>(
    criterion: &mut Criterion,
    group_name: &str,
    message: &M,
    payload: Bytes,
    decode_header: fn(&Frame),
) {
    let mut frame = Vec::new();
    encode_request(&mut frame, 1, message, &payload).expect("encode");
    let frame = Bytes::from(frame);
    let mut group = criterion.benchmark_group(group_name);
    group.throughput(Throughput::Bytes(frame.len() as u64));

    // Baselines over exactly the frame's bytes.
    let mut copy_target = vec![0u8; frame.len()];
    group.bench_function("baseline_memcpy", |bencher| {
        bencher.iter(|| {
            copy_target.copy_from_slice(black_box(&frame));
            black_box(&copy_target);
        })
    });
    group.bench_function("baseline_crc32c", |bencher| {
        bencher.iter(|| black_box(wire::checksum(black_box(&frame))))
    });

    // Encode into a reused buffer: prefix, header, payload copy, CRC.
    let mut buf = BytesMut::with_capacity(frame.len());
    group.bench_function("encode", |bencher| {
        bencher.iter(|| {
            buf.clear();
            encode_request(&mut buf, 1, black_box(message), black_box(&payload)).expect("encode");
            black_box(&buf);
        })
    });
    // Encode for vectored write: prefix and header only, CRC over head and payload, no copy.
    let mut scratch = BytesMut::with_capacity(4096);
    group.bench_function("encode_parts", |bencher| {
        bencher.iter(|| {
            let parts = encode_parts(
                &mut scratch,
                Flags::REQUEST,
                1,
                black_box(message),
                payload.clone(),
            )
            .expect("encode");
            black_box(parts);
            if scratch.capacity() < 256 {
                scratch.reserve(4096);
            }
        })
    });

    // Decode: the incremental decoder splitting the frame off a receive buffer (length checks,
    // CRC, zero-copy slicing) plus the typed header. The buffer refill is setup, not measured.
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
    group.bench_function("decode", |bencher| {
        bencher.iter_batched_ref(
            || BytesMut::from(&frame[..]),
            |received| {
                let frame = decoder.decode(received).expect("decode").expect("frame");
                decode_header(&frame);
                black_box(frame);
            },
            BatchSize::SmallInput,
        )
    });
    // The same split without the receive buffer: Frame::parse over shared bytes.
    group.bench_function("decode_parse_only", |bencher| {
        bencher.iter(|| {
            let frame =
                Frame::parse(black_box(frame.clone()), DEFAULT_MAX_FRAME_BYTES).expect("parse");
            decode_header(&frame);
            black_box(frame);
        })
    });
    group.finish();
}

fn wire_codec(criterion: &mut Criterion) {
    bench_frame(
        criterion,
        "append_64k",
        &append_request(),
        append_payload(),
        |frame| {
            black_box(frame.decode_message::<AppendRequest>().expect("header"));
        },
    );
    bench_frame(criterion, "ping", &PingRequest {}, Bytes::new(), |frame| {
        black_box(frame.decode_message::<PingRequest>().expect("header"));
    });

    // What a data node does on APPEND after decoding: walk the batches and check their CRC
    // (end-to-end check), compared with the bare CRC of the same bytes.
    let payload = append_payload();
    let mut group = criterion.benchmark_group("append_64k_batches");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("baseline_crc32c", |bencher| {
        bencher.iter(|| black_box(wire::checksum(black_box(&payload))))
    });
    group.bench_function("batch_iter_verify", |bencher| {
        bencher.iter(|| {
            for batch in BatchIter::new(black_box(payload.clone())) {
                black_box(batch.expect("valid batch"));
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40);
    targets = wire_codec
}
criterion_main!(benches);
