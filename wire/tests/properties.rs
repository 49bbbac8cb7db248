//! Decoder robustness: arbitrary bytes in arbitrary chunkings never panic; a single flipped bit
//! anywhere in a frame is always caught; each kind of bad input gives its own typed error.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use wire::batch::BatchIter;
use wire::frame::{MAGIC, VERSION};
use wire::msg::{AppendRequest, PingRequest};
use wire::{
    encode_frame, encode_request, DecodeError, Decoder, ErrorCode, Flags, Frame, Opcode, Request,
    Response,
};

/// Feeds `input` to a decoder in pieces of the given sizes, decoding every frame's header and
/// payload batches too. Returns the frames and the first error. Must never panic.
fn feed(
    input: &[u8],
    chunk_sizes: &[usize],
    max_frame_bytes: usize,
) -> (Vec<Frame>, Option<DecodeError>) {
    let mut decoder = Decoder::new(max_frame_bytes);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = input;
    let mut sizes = chunk_sizes.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        buf.put_slice(&rest[..size]);
        rest = &rest[size..];
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let _ = Request::decode(&frame);
                    let _ = Response::decode(&frame);
                    BatchIter::new(frame.payload.clone()).for_each(drop);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(error) if error.is_fatal() => return (frames, Some(error)),
                Err(_) => {}
            }
        }
        assert!(
            buf.capacity() <= max_frame_bytes.max(64) * 2 + 64,
            "buffer grew to {} for max frame {}",
            buf.capacity(),
            max_frame_bytes
        );
    }
    (frames, None)
}

/// A valid frame of some request with a payload.
fn some_frame() -> impl Strategy<Value = Vec<u8>> {
    (common::request(), any::<u64>(), vec(any::<u8>(), 0..200)).prop_map(
        |(request, request_id, payload)| {
            let payload = if common::request_has_payload(&request) {
                payload
            } else {
                Vec::new()
            };
            let mut buf = Vec::new();
            request.encode(&mut buf, request_id, &payload).unwrap();
            buf
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        input in vec(any::<u8>(), 0..2000),
        chunks in vec(1usize..64, 1..8),
    ) {
        feed(&input, &chunks, 4096);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_panic(
        mut input in vec(any::<u8>(), 8..2000),
        chunks in vec(1usize..64, 1..8),
    ) {
        // Make the length plausible and the magic/version right, so the decoder goes deeper.
        let length = (input.len() as u32 - 4).max(24);
        input[..4].copy_from_slice(&length.to_le_bytes());
        input[4..6].copy_from_slice(&MAGIC.to_le_bytes());
        input[6] = VERSION;
        feed(&input, &chunks, 4096);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        frames in vec(some_frame(), 1..4),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        chunks in vec(1usize..300, 1..4),
    ) {
        let mut input: Vec<u8> = frames.concat();
        for (index, value) in edits {
            let at = index.index(input.len());
            input[at] = value;
        }
        feed(&input, &chunks, 4096);
    }

    #[test]
    fn valid_frames_survive_any_chunking(
        frames in vec(some_frame(), 1..6),
        chunks in vec(1usize..100, 1..8),
    ) {
        let (decoded, error) = feed(&frames.concat(), &chunks, 1 << 20);
        prop_assert!(error.is_none());
        prop_assert_eq!(decoded.len(), frames.len());
        for (frame, bytes) in decoded.iter().zip(&frames) {
            let mut reencoded = Vec::new();
            wire::msg::encode_raw(&mut reencoded, frame).unwrap();
            prop_assert_eq!(&reencoded, bytes);
        }
    }

    /// Flipping any one bit of a frame never yields a frame: the decoder reports an error, or
    /// (a larger length) waits for bytes that, once they come, fail the CRC.
    #[test]
    fn any_single_bit_flip_is_caught(frame in some_frame(), bit in any::<prop::sample::Index>()) {
        let bit = bit.index(frame.len() * 8);
        let mut corrupted = frame.clone();
        corrupted[bit / 8] ^= 1 << (bit % 8);
        let max_frame_bytes = 1 << 20;
        let mut decoder = Decoder::new(max_frame_bytes);
        let mut buf = BytesMut::from(&corrupted[..]);
        let outcome = match decoder.decode(&mut buf) {
            Ok(None) => {
                // Only a flip in the length field can make the frame look longer.
                prop_assert!(bit < 32, "decoder waits after a flip at bit {}", bit);
                let claimed = u32::from_le_bytes(corrupted[..4].try_into().unwrap()) as usize + 4;
                buf.put_bytes(0, claimed - buf.len());
                decoder.decode(&mut buf)
            }
            other => other,
        };
        prop_assert!(outcome.is_err(), "flip at bit {} decoded as {:?}", bit, outcome);
    }
}

fn ping_frame(request_id: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_request(&mut buf, request_id, &PingRequest {}, b"hello").unwrap();
    buf
}

fn decode_all(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    Decoder::default().decode(&mut BytesMut::from(bytes))
}

#[test]
fn each_kind_of_bad_frame_has_its_own_error() {
    let good = ping_frame(1);

    let mut bad = good.clone();
    bad[4] = b'X';
    assert_eq!(
        decode_all(&bad),
        Err(DecodeError::BadMagic { found: 0x5358 })
    );

    let mut bad = good.clone();
    bad[6] = 2;
    let error = decode_all(&bad).unwrap_err();
    assert_eq!(error, DecodeError::UnsupportedVersion { found: 2 });
    assert_eq!(error.error_code(), ErrorCode::UnsupportedVersion);
    assert!(error.to_string().contains("this side speaks 1"));

    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x80;
    assert!(matches!(
        decode_all(&bad),
        Err(DecodeError::CrcMismatch { .. })
    ));

    let mut bad = BytesMut::new();
    bad.put_u32_le(23);
    assert!(matches!(
        Decoder::default().decode(&mut bad),
        Err(DecodeError::MalformedFrame { .. })
    ));

    let mut bad = Vec::new();
    encode_frame(&mut bad, Opcode::Ping, Flags::RESPONSE_END, 1, &[], &[]).unwrap();
    bad[7] = Flags::ERROR.bits(); // ERROR without RESPONSE
    fix_crc(&mut bad);
    assert!(matches!(
        decode_all(&bad),
        Err(DecodeError::MalformedFrame { .. })
    ));

    let mut bad = good.clone();
    bad[10] = 1; // reserved
    fix_crc(&mut bad);
    assert!(matches!(
        decode_all(&bad),
        Err(DecodeError::MalformedFrame { .. })
    ));

    let mut bad = good.clone();
    bad[20..24].copy_from_slice(&100u32.to_le_bytes()); // header longer than the frame
    fix_crc(&mut bad);
    assert!(matches!(
        decode_all(&bad),
        Err(DecodeError::MalformedFrame { .. })
    ));

    let mut bad = BytesMut::new();
    bad.put_u32_le(u32::MAX);
    let error = Decoder::new(1 << 20).decode(&mut bad).unwrap_err();
    assert_eq!(error.error_code(), ErrorCode::FrameTooLarge);
    assert!(error.is_fatal());

    assert_eq!(
        Frame::parse(Bytes::from(good[..good.len() - 1].to_vec()), 1 << 20),
        Err(DecodeError::Truncated { needed: 1 })
    );
}

/// Recomputes a frame's CRC after an edit, to reach the checks behind it.
fn fix_crc(frame: &mut [u8]) {
    let crc_at = frame.len() - 4;
    let crc = crc32c::crc32c(&frame[4..crc_at]);
    frame[crc_at..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn unknown_opcode_consumes_the_frame_and_decoding_continues() {
    let mut stream = ping_frame(1);
    stream[8..10].copy_from_slice(&0x0999u16.to_le_bytes());
    fix_crc(&mut stream);
    stream.extend(ping_frame(2));
    let mut buf = BytesMut::from(&stream[..]);
    let mut decoder = Decoder::default();
    let error = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(
        error,
        DecodeError::UnknownOpcode {
            opcode: 0x0999,
            request_id: 1
        }
    );
    assert!(!error.is_fatal());
    let next = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!((next.opcode, next.request_id), (Opcode::Ping, 2));
}

#[test]
fn decoder_reserves_the_announced_frame_once_and_no_more() {
    let mut frame = Vec::new();
    let append = AppendRequest::default();
    encode_request(&mut frame, 9, &append, &vec![7u8; 64 << 10]).unwrap();
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    buf.put_slice(&frame[..24]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(
        buf.capacity() >= frame.len(),
        "room for the whole frame reserved"
    );
    assert!(buf.capacity() < 2 * frame.len());
    buf.put_slice(&frame[24..]);
    let decoded = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(decoded.payload.len(), 64 << 10);
}

#[test]
fn every_bit_flip_of_an_append_frame_is_caught() {
    let batch = wire::BatchBuilder::new(
        wire::StreamId(7),
        wire::RangeIndex(1),
        wire::Epoch(3),
        wire::Offset(100),
    )
    .timestamp_ms(1)
    .finish_with_payload(4, &[0x5a; 200])
    .unwrap();
    let append = AppendRequest {
        repair: false,
        stream_id: wire::StreamId(7),
        range_index: wire::RangeIndex(1),
        epoch: wire::Epoch(3),
        confirmed_offset: Some(wire::Offset(90)),
    };
    let mut frame = Vec::new();
    encode_request(&mut frame, 5, &append, &batch).unwrap();
    for bit in 0..frame.len() * 8 {
        let mut corrupted = frame.clone();
        corrupted[bit / 8] ^= 1 << (bit % 8);
        let mut decoder = Decoder::new(1 << 20);
        let mut buf = BytesMut::from(&corrupted[..]);
        let mut outcome = decoder.decode(&mut buf);
        if outcome == Ok(None) {
            assert!(bit < 32, "waits after flip at bit {bit}");
            let claimed = u32::from_le_bytes(corrupted[..4].try_into().unwrap()) as usize + 4;
            buf.put_bytes(0, claimed - buf.len());
            outcome = decoder.decode(&mut buf);
        }
        assert!(outcome.is_err(), "flip at bit {bit} decoded as {outcome:?}");
    }
}
