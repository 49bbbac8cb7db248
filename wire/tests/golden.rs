//! Byte-exact golden vectors. Each vector is written out field by field below; the encoder must
//! produce exactly these bytes, the decoder must read them back to the same message, and
//! `docs/protocol.md` §9 must hold the same table (regenerate it with
//! `cargo test -p wire --test golden -- --ignored --nocapture print_tables`).

use bytes::{Bytes, BytesMut};
use wire::msg::{
    AppendRequest, AppendResponse, AuthenticateRequest, AuthenticateResponse, DeleteRangeRequest,
    DescribeStreamResponse, ErrorResponse, FetchRequest, FetchResponse, HeartbeatRequest,
    PingRequest, PingResponse, Role, SealRangeRequest, SealRangeResponse, TrimRangeRequest,
};
use wire::{
    encode_error, encode_request, encode_response, BatchBuilder, BatchIter, Decoder, Epoch,
    ErrorCode, NodeId, NodeState, Offset, Opcode, RangeIndex, Request, Response, Stream, StreamId,
};

struct Vector {
    title: &'static str,
    description: &'static str,
    rows: &'static [(&'static str, &'static str)],
    encode: fn() -> Vec<u8>,
    check_decoded: fn(&wire::Frame),
}

/// The record batch carried by the APPEND and FETCH vectors: stream 7, range 1, epoch 3, base
/// offset 100, one record "hi", timestamp 1 700 000 000 000 ms.
fn batch() -> Bytes {
    let mut builder = BatchBuilder::new(StreamId(7), RangeIndex(1), Epoch(3), Offset(100))
        .timestamp_ms(1_700_000_000_000);
    builder.push_record(b"hi").unwrap();
    builder.finish().unwrap()
}

const BATCH_ROWS: [(&str, &str); 14] = [
    ("batch magic", "eb"),
    ("batch version = 1", "01"),
    ("batch flags = 0", "00 00"),
    ("batch crc32c", "37 90 49 06"),
    ("batch stream_id = 7", "07 00 00 00 00 00 00 00"),
    ("batch epoch = 3", "03 00 00 00 00 00 00 00"),
    ("batch base_offset = 100", "64 00 00 00 00 00 00 00"),
    (
        "batch timestamp_ms = 1 700 000 000 000",
        "00 68 e5 cf 8b 01 00 00",
    ),
    ("batch range_index = 1", "01 00 00 00"),
    ("batch record_count = 1", "01 00 00 00"),
    ("batch payload_length = 6", "06 00 00 00"),
    ("batch reserved", "00 00 00 00"),
    ("record length = 2", "02 00 00 00"),
    ("record bytes \"hi\"", "68 69"),
];

macro_rules! with_batch {
    ($($row:expr),* ; $($tail:expr),*) => {
        &[$($row,)* BATCH_ROWS[0], BATCH_ROWS[1], BATCH_ROWS[2], BATCH_ROWS[3], BATCH_ROWS[4],
          BATCH_ROWS[5], BATCH_ROWS[6], BATCH_ROWS[7], BATCH_ROWS[8], BATCH_ROWS[9],
          BATCH_ROWS[10], BATCH_ROWS[11], BATCH_ROWS[12], BATCH_ROWS[13], $($tail,)*]
    };
}

const VECTORS: &[Vector] = &[
    Vector {
        title: "9.1 PING request",
        description: "request id 1, payload \"ping\"",
        rows: &[
            ("length = 28", "1c 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = 0 (request)", "00"),
            ("opcode = PING", "01 00"),
            ("reserved", "00 00"),
            ("request_id = 1", "01 00 00 00 00 00 00 00"),
            ("header_length = 0", "00 00 00 00"),
            ("payload \"ping\"", "70 69 6e 67"),
            ("crc32c", "d3 64 2b 7a"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_request(&mut buf, 1, &PingRequest {}, b"ping").unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Request::decode(frame).unwrap(),
                Request::Ping(PingRequest {})
            );
            assert_eq!(&frame.payload[..], b"ping");
        },
    },
    Vector {
        title: "9.2 PING response",
        description: "answer to request 1, payload echoed",
        rows: &[
            ("length = 28", "1c 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = RESPONSE | END_OF_RESPONSE", "03"),
            ("opcode = PING", "01 00"),
            ("reserved", "00 00"),
            ("request_id = 1", "01 00 00 00 00 00 00 00"),
            ("header_length = 0", "00 00 00 00"),
            ("payload \"ping\"", "70 69 6e 67"),
            ("crc32c", "e4 e2 35 6d"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_response(&mut buf, 1, &PingResponse {}, b"ping").unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Response::decode(frame).unwrap(),
                Response::Ping(PingResponse {})
            );
        },
    },
    Vector {
        title: "9.3 APPEND request",
        description: "request id 2: stream 7, range 1, epoch 3, confirmed offset 100; payload one \
                      batch of one record \"hi\" at offset 100",
        rows: with_batch!(
            ("length = 118", "76 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = 0 (request)", "00"),
            ("opcode = APPEND", "01 01"),
            ("reserved", "00 00"),
            ("request_id = 2", "02 00 00 00 00 00 00 00"),
            ("header_length = 32", "20 00 00 00"),
            ("stream_id = 7", "07 00 00 00 00 00 00 00"),
            ("range_index = 1", "01 00 00 00"),
            ("reserved", "00 00 00 00"),
            ("epoch = 3", "03 00 00 00 00 00 00 00"),
            ("confirmed_offset = 100", "64 00 00 00 00 00 00 00");
            ("crc32c", "fd ec 2a ee")
        ),
        encode: || {
            let mut buf = Vec::new();
            encode_request(&mut buf, 2, &append_request(), &batch()).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Request::decode(frame).unwrap(),
                Request::Append(append_request())
            );
            let batches: Vec<_> = BatchIter::new(frame.payload.clone())
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(batches.len(), 1);
            assert_eq!(batches[0].header().base_offset, Offset(100));
            let records: Vec<_> = batches[0].records().collect::<Result<_, _>>().unwrap();
            assert_eq!(records, [Bytes::from_static(b"hi")]);
        },
    },
    Vector {
        title: "9.4 APPEND response",
        description: "answer to request 2: base offset 100, next offset 101",
        rows: &[
            ("length = 40", "28 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = RESPONSE | END_OF_RESPONSE", "03"),
            ("opcode = APPEND", "01 01"),
            ("reserved", "00 00"),
            ("request_id = 2", "02 00 00 00 00 00 00 00"),
            ("header_length = 16", "10 00 00 00"),
            ("base_offset = 100", "64 00 00 00 00 00 00 00"),
            ("next_offset = 101", "65 00 00 00 00 00 00 00"),
            ("crc32c", "19 32 9b c5"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_response(&mut buf, 2, &append_response(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Response::decode(frame).unwrap(),
                Response::Append(append_response())
            );
        },
    },
    Vector {
        title: "9.5 APPEND error response",
        description: "answer to request 4: OFFSET_GAP, detail = the node's next offset 101",
        rows: &[
            ("length = 64", "40 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = RESPONSE | END_OF_RESPONSE | ERROR", "07"),
            ("opcode = APPEND", "01 01"),
            ("reserved", "00 00"),
            ("request_id = 4", "04 00 00 00 00 00 00 00"),
            ("header_length = 40", "28 00 00 00"),
            ("code = 106 OFFSET_GAP", "6a 00"),
            ("message_length = 24", "18 00"),
            ("reserved", "00 00 00 00"),
            ("detail = 101", "65 00 00 00 00 00 00 00"),
            (
                "message \"expected base offset 101\"",
                "65 78 70 65 63 74 65 64 20 62 61 73 65 20 6f 66 66 73 65 74 20 31 30 31",
            ),
            ("crc32c", "9b b3 eb e9"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_error(&mut buf, Opcode::Append, 4, &gap_error()).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Response::decode(frame).unwrap(),
                Response::Error(gap_error())
            );
        },
    },
    Vector {
        title: "9.6 FETCH request",
        description:
            "request id 3: stream 7, range 1, max 1 MiB, from offset 100, wait up to 500 ms",
        rows: &[
            ("length = 56", "38 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = 0 (request)", "00"),
            ("opcode = FETCH", "02 01"),
            ("reserved", "00 00"),
            ("request_id = 3", "03 00 00 00 00 00 00 00"),
            ("header_length = 32", "20 00 00 00"),
            ("stream_id = 7", "07 00 00 00 00 00 00 00"),
            ("range_index = 1", "01 00 00 00"),
            ("max_bytes = 1 048 576", "00 00 10 00"),
            ("start_offset = 100", "64 00 00 00 00 00 00 00"),
            ("max_wait_ms = 500", "f4 01 00 00"),
            ("reserved", "00 00 00 00"),
            ("crc32c", "26 dc a1 84"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_request(&mut buf, 3, &fetch_request(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Request::decode(frame).unwrap(),
                Request::Fetch(fetch_request())
            );
        },
    },
    Vector {
        title: "9.7 FETCH response",
        description: "answer to request 3: confirmed offset 101, next offset 101, range open; \
                      payload the batch of 9.3",
        rows: with_batch!(
            ("length = 110", "6e 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = RESPONSE | END_OF_RESPONSE", "03"),
            ("opcode = FETCH", "02 01"),
            ("reserved", "00 00"),
            ("request_id = 3", "03 00 00 00 00 00 00 00"),
            ("header_length = 24", "18 00 00 00"),
            ("confirmed_offset = 101", "65 00 00 00 00 00 00 00"),
            ("next_offset = 101", "65 00 00 00 00 00 00 00"),
            ("end_offset = absent (open)", "ff ff ff ff ff ff ff ff");
            ("crc32c", "71 3a f5 53")
        ),
        encode: || {
            let mut buf = Vec::new();
            encode_response(&mut buf, 3, &fetch_response(), &batch()).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Response::decode(frame).unwrap(),
                Response::Fetch(fetch_response())
            );
            assert_eq!(frame.payload, batch());
        },
    },
    Vector {
        title: "9.8 HEARTBEAT request",
        description: "request id 5: node 2 holding 3 ranges, 1 000 000 000 of 4 000 000 000 disk \
                      bytes free, 1 MiB/s appended, READ_WRITE, serving on \"10.0.0.2:9000\"",
        rows: &[
            ("length = 73", "49 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = 0 (request)", "00"),
            ("opcode = HEARTBEAT", "03 00"),
            ("reserved", "00 00"),
            ("request_id = 5", "05 00 00 00 00 00 00 00"),
            ("header_length = 49", "31 00 00 00"),
            ("node_id = 2", "02 00 00 00"),
            ("range_count = 3", "03 00 00 00"),
            ("disk_free_bytes = 1 000 000 000", "00 ca 9a 3b 00 00 00 00"),
            (
                "disk_total_bytes = 4 000 000 000",
                "00 28 6b ee 00 00 00 00",
            ),
            (
                "append_bytes_per_second = 1 048 576",
                "00 00 10 00 00 00 00 00",
            ),
            ("state = 1 READ_WRITE", "01"),
            ("reserved", "00"),
            ("address length = 13", "0d 00"),
            (
                "address \"10.0.0.2:9000\"",
                "31 30 2e 30 2e 30 2e 32 3a 39 30 30 30",
            ),
            ("crc32c", "98 3b d0 bb"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_request(&mut buf, 5, &heartbeat_request(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Request::decode(frame).unwrap(),
                Request::Heartbeat(heartbeat_request())
            );
        },
    },
    Vector {
        title: "9.9 DESCRIBE_STREAM response",
        description: "answer to request 6: stream 7, R 3, A 2, retention 86 400 000 ms and \
                      1 GiB, trimmed to offset 100, epoch 3",
        rows: &[
            ("length = 72", "48 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = RESPONSE | END_OF_RESPONSE", "03"),
            ("opcode = DESCRIBE_STREAM", "02 03"),
            ("reserved", "00 00"),
            ("request_id = 6", "06 00 00 00 00 00 00 00"),
            ("header_length = 48", "30 00 00 00"),
            ("stream_id = 7", "07 00 00 00 00 00 00 00"),
            ("replica_count = 3", "03"),
            ("ack_count = 2", "02"),
            ("flags = 0", "00"),
            ("reserved", "00"),
            ("reserved", "00 00 00 00"),
            ("retention_ms = 86 400 000", "00 5c 26 05 00 00 00 00"),
            ("retention_bytes = 1 073 741 824", "00 00 00 40 00 00 00 00"),
            ("start_offset = 100", "64 00 00 00 00 00 00 00"),
            ("epoch = 3", "03 00 00 00 00 00 00 00"),
            ("crc32c", "f2 b2 9d 69"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_response(&mut buf, 6, &describe_stream_response(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Response::decode(frame).unwrap(),
                Response::DescribeStream(describe_stream_response())
            );
        },
    },
    Vector {
        title: "9.10 TRIM_RANGE request",
        description: "request id 7: drop the batches of stream 7, range 1 below offset 101",
        rows: &[
            ("length = 48", "30 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = 0 (request)", "00"),
            ("opcode = TRIM_RANGE", "05 02"),
            ("reserved", "00 00"),
            ("request_id = 7", "07 00 00 00 00 00 00 00"),
            ("header_length = 24", "18 00 00 00"),
            ("stream_id = 7", "07 00 00 00 00 00 00 00"),
            ("range_index = 1", "01 00 00 00"),
            ("reserved", "00 00 00 00"),
            ("offset = 101", "65 00 00 00 00 00 00 00"),
            ("crc32c", "6c 50 aa 47"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_request(&mut buf, 7, &trim_range_request(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Request::decode(frame).unwrap(),
                Request::TrimRange(trim_range_request())
            );
        },
    },
    Vector {
        title: "9.11 DELETE_RANGE request",
        description: "request id 8: delete this node's replica of stream 7, range 1",
        rows: &[
            ("length = 40", "28 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = 0 (request)", "00"),
            ("opcode = DELETE_RANGE", "06 02"),
            ("reserved", "00 00"),
            ("request_id = 8", "08 00 00 00 00 00 00 00"),
            ("header_length = 16", "10 00 00 00"),
            ("stream_id = 7", "07 00 00 00 00 00 00 00"),
            ("range_index = 1", "01 00 00 00"),
            ("reserved", "00 00 00 00"),
            ("crc32c", "35 f7 4e 00"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_request(&mut buf, 8, &delete_range_request(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Request::decode(frame).unwrap(),
                Request::DeleteRange(delete_range_request())
            );
        },
    },
    Vector {
        title: "9.12 AUTHENTICATE request",
        description: "request id 9: token \"s3cret\"",
        rows: &[
            ("length = 32", "20 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = 0 (request)", "00"),
            ("opcode = AUTHENTICATE", "07 00"),
            ("reserved", "00 00"),
            ("request_id = 9", "09 00 00 00 00 00 00 00"),
            ("header_length = 8", "08 00 00 00"),
            ("token length = 6", "06 00"),
            ("token \"s3cret\"", "73 33 63 72 65 74"),
            ("crc32c", "c7 04 0c 64"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_request(&mut buf, 9, &authenticate_request(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Request::decode(frame).unwrap(),
                Request::Authenticate(authenticate_request())
            );
        },
    },
    Vector {
        title: "9.13 AUTHENTICATE response",
        description: "answer to request 9: role ADMIN",
        rows: &[
            ("length = 32", "20 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = RESPONSE | END_OF_RESPONSE", "03"),
            ("opcode = AUTHENTICATE", "07 00"),
            ("reserved", "00 00"),
            ("request_id = 9", "09 00 00 00 00 00 00 00"),
            ("header_length = 8", "08 00 00 00"),
            ("role = 2 ADMIN", "02"),
            ("reserved", "00"),
            ("reserved", "00 00"),
            ("reserved", "00 00 00 00"),
            ("crc32c", "5f 81 4e f8"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_response(
                &mut buf,
                9,
                &AuthenticateResponse { role: Role::Admin },
                &[],
            )
            .unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Response::decode(frame).unwrap(),
                Response::Authenticate(AuthenticateResponse { role: Role::Admin })
            );
        },
    },
    Vector {
        title: "9.14 SEAL_RANGE request, fence only",
        description: "request id 10: the writer of epoch 4 fences stream 7, range 1 (the first \
                      step of a seal with repair; no end)",
        rows: &[
            ("length = 56", "38 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = 0 (request)", "00"),
            ("opcode = SEAL_RANGE", "02 02"),
            ("reserved", "00 00"),
            ("request_id = 10", "0a 00 00 00 00 00 00 00"),
            ("header_length = 32", "20 00 00 00"),
            ("stream_id = 7", "07 00 00 00 00 00 00 00"),
            ("range_index = 1", "01 00 00 00"),
            ("flags = FENCE_ONLY", "01 00 00 00"),
            ("epoch = 4", "04 00 00 00 00 00 00 00"),
            ("end_offset = absent", "ff ff ff ff ff ff ff ff"),
            ("crc32c", "0a 0b 74 a6"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_request(&mut buf, 10, &fence_request(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Request::decode(frame).unwrap(),
                Request::SealRange(fence_request())
            );
        },
    },
    Vector {
        title: "9.15 SEAL_RANGE response to a fence",
        description: "answer to request 10: no end fixed yet, durable end 101, epoch 4",
        rows: &[
            ("length = 48", "30 00 00 00"),
            ("magic", "45 53"),
            ("version = 1", "01"),
            ("flags = RESPONSE | END_OF_RESPONSE", "03"),
            ("opcode = SEAL_RANGE", "02 02"),
            ("reserved", "00 00"),
            ("request_id = 10", "0a 00 00 00 00 00 00 00"),
            ("header_length = 24", "18 00 00 00"),
            ("end_offset = absent", "ff ff ff ff ff ff ff ff"),
            ("durable_end = 101", "65 00 00 00 00 00 00 00"),
            ("epoch = 4", "04 00 00 00 00 00 00 00"),
            ("crc32c", "6f 90 9a 08"),
        ],
        encode: || {
            let mut buf = Vec::new();
            encode_response(&mut buf, 10, &fence_response(), &[]).unwrap();
            buf
        },
        check_decoded: |frame| {
            assert_eq!(
                Response::decode(frame).unwrap(),
                Response::SealRange(fence_response())
            );
        },
    },
];

fn fence_request() -> SealRangeRequest {
    SealRangeRequest {
        stream_id: StreamId(7),
        range_index: RangeIndex(1),
        epoch: Epoch(4),
        end_offset: None,
        fence_only: true,
    }
}

fn fence_response() -> SealRangeResponse {
    SealRangeResponse {
        end_offset: None,
        durable_end: Some(Offset(101)),
        epoch: Epoch(4),
    }
}

fn authenticate_request() -> AuthenticateRequest {
    AuthenticateRequest {
        token: "s3cret".to_string(),
    }
}

fn heartbeat_request() -> HeartbeatRequest {
    HeartbeatRequest {
        node_id: NodeId(2),
        range_count: 3,
        disk_free_bytes: 1_000_000_000,
        disk_total_bytes: 4_000_000_000,
        append_bytes_per_second: 1 << 20,
        state: NodeState::ReadWrite,
        address: "10.0.0.2:9000".to_string(),
    }
}

fn describe_stream_response() -> DescribeStreamResponse {
    DescribeStreamResponse {
        stream: Stream {
            id: StreamId(7),
            replica_count: 3,
            ack_count: 2,
            retention_ms: 86_400_000,
            retention_bytes: 1 << 30,
            start_offset: Offset(100),
            epoch: Epoch(3),
            deleted: false,
        },
    }
}

fn trim_range_request() -> TrimRangeRequest {
    TrimRangeRequest {
        stream_id: StreamId(7),
        range_index: RangeIndex(1),
        offset: Offset(101),
    }
}

fn delete_range_request() -> DeleteRangeRequest {
    DeleteRangeRequest {
        stream_id: StreamId(7),
        range_index: RangeIndex(1),
    }
}

fn append_request() -> AppendRequest {
    AppendRequest {
        repair: false,
        stream_id: StreamId(7),
        range_index: RangeIndex(1),
        epoch: Epoch(3),
        confirmed_offset: Some(Offset(100)),
    }
}

fn append_response() -> AppendResponse {
    AppendResponse {
        base_offset: Offset(100),
        next_offset: Offset(101),
    }
}

fn gap_error() -> ErrorResponse {
    ErrorResponse::new(ErrorCode::OffsetGap, "expected base offset 101").with_detail(101)
}

fn fetch_request() -> FetchRequest {
    FetchRequest {
        read_durable: false,
        expect_sealed: false,
        stream_id: StreamId(7),
        range_index: RangeIndex(1),
        max_bytes: 1 << 20,
        start_offset: Offset(100),
        max_wait_ms: 500,
    }
}

fn fetch_response() -> FetchResponse {
    FetchResponse {
        confirmed_offset: Some(Offset(101)),
        next_offset: Offset(101),
        end_offset: None,
    }
}

fn parse_hex(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
        .collect()
}

fn expected_bytes(vector: &Vector) -> Vec<u8> {
    vector
        .rows
        .iter()
        .flat_map(|(_, hex)| parse_hex(hex))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The markdown that `docs/protocol.md` must contain for a vector.
fn markdown(vector: &Vector) -> String {
    let mut text = format!(
        "### {}\n\n{}.\n\n| offset | bytes (hex) | field |\n|---|---|---|\n",
        vector.title, vector.description
    );
    let mut offset = 0;
    for (field, bytes) in vector.rows {
        text.push_str(&format!("| {offset} | `{bytes}` | {field} |\n"));
        offset += parse_hex(bytes).len();
    }
    let whole = expected_bytes(vector);
    text.push_str(&format!("\nWhole frame ({} bytes):\n\n```\n", whole.len()));
    for line in whole.chunks(16) {
        text.push_str(&hex(line));
        text.push('\n');
    }
    text.push_str("```\n");
    text
}

#[test]
fn encoder_produces_the_golden_bytes() {
    for vector in VECTORS {
        let actual = (vector.encode)();
        assert_eq!(
            hex(&actual),
            hex(&expected_bytes(vector)),
            "vector {}",
            vector.title
        );
    }
}

#[test]
fn decoder_reads_the_golden_bytes_back() {
    for vector in VECTORS {
        let mut buf = BytesMut::from(&expected_bytes(vector)[..]);
        let frame = Decoder::default()
            .decode(&mut buf)
            .unwrap_or_else(|error| panic!("vector {}: {error}", vector.title))
            .expect("whole frame");
        assert!(buf.is_empty());
        (vector.check_decoded)(&frame);
    }
}

#[test]
fn protocol_doc_holds_the_same_tables() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md");
    for vector in VECTORS {
        let table = markdown(vector);
        assert!(
            doc.contains(&table),
            "docs/protocol.md lacks or differs from this table (regenerate with \
             `cargo test -p wire --test golden -- --ignored --nocapture print_tables`):\n{table}"
        );
    }
}

#[test]
#[ignore = "prints the tables for docs/protocol.md"]
fn print_tables() {
    for vector in VECTORS {
        println!("{}", markdown(vector));
        println!("actual: {}\n", hex(&(vector.encode)()));
    }
}

#[test]
fn checksum_is_crc32c_castagnoli() {
    // The standard check value of CRC-32C (iSCSI), so other implementations agree with the doc.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
}
