//! Feeds arbitrary bytes to the frame decoder in chunks (sizes taken from the first input
//! bytes), decoding every frame's header as request and response and walking its payload as
//! record batches. Must never panic, never hold more than the maximum frame size, and every
//! frame it yields must re-encode to the bytes it came from.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use wire::batch::BatchIter;
use wire::{Decoder, Request, Response};

const MAX_FRAME_BYTES: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_seed, input)) = data.split_first() else {
        return;
    };
    let chunk_size = usize::from(chunk_seed % 64) + 1;
    let mut decoder = Decoder::new(MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for chunk in input.chunks(chunk_size) {
        buf.put_slice(chunk);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let frame_bytes = before - buf.len();
                    let mut reencoded = Vec::new();
                    wire::msg::encode_raw(&mut reencoded, &frame).expect("re-encode");
                    let start = consumed;
                    assert_eq!(&reencoded[..], &input[start..start + frame_bytes]);
                    consumed += frame_bytes;
                    if let Ok(request) = Request::decode(&frame) {
                        let mut again = Vec::new();
                        request
                            .encode(&mut again, frame.request_id, &frame.payload)
                            .expect("re-encode request");
                        assert_eq!(again, reencoded, "request decodes to one encoding only");
                    }
                    let _ = Response::decode(&frame);
                    BatchIter::new(frame.payload.clone()).for_each(drop);
                }
                Ok(None) => break,
                Err(error) => {
                    if error.is_fatal() {
                        return;
                    }
                    consumed += before - buf.len();
                }
            }
        }
        assert!(buf.capacity() <= 2 * MAX_FRAME_BYTES + 128);
    }
});
