//! Every request and response type survives encode → decode unchanged, through the incremental
//! decoder, with its request id and payload; and the decoder rejects frames that do not fit the
//! message they claim to be.

mod common;

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use wire::msg::*;
use wire::{
    encode_error, encode_frame, encode_parts, encode_request, DecodeError, Decoder, EncodeError,
    ErrorCode, Flags, Frame, NodeState, Opcode, Request, Response,
};

fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = Decoder::default()
        .decode(&mut buf)
        .expect("valid frame")
        .expect("whole frame");
    assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    frame
}

/// Encodes a frame as given (request id 1), bypassing the typed encoders, and decodes it.
fn raw_frame(opcode: Opcode, flags: Flags, header: &[u8], payload: &[u8]) -> Frame {
    let mut buf = Vec::new();
    encode_frame(&mut buf, opcode, flags, 1, header, payload).unwrap();
    decode_one(&buf)
}

fn round_trip_request(request: &Request, request_id: u64, payload: &[u8]) {
    let mut buf = Vec::new();
    let written = request.encode(&mut buf, request_id, payload).unwrap();
    assert_eq!(written, buf.len());
    let frame = decode_one(&buf);
    assert_eq!(frame.opcode, request.opcode());
    assert_eq!(frame.flags, Flags::REQUEST);
    assert_eq!(frame.request_id, request_id);
    assert_eq!(&frame.payload[..], payload);
    assert_eq!(frame.encoded_len(), buf.len());
    assert_eq!(&Request::decode(&frame).unwrap(), request);
}

fn round_trip_response(response: &Response, opcode: Opcode, request_id: u64, payload: &[u8]) {
    let mut buf = BytesMut::new();
    response
        .encode(&mut buf, opcode, request_id, payload)
        .unwrap();
    let frame = decode_one(&buf);
    assert_eq!(frame.opcode, opcode);
    assert!(frame.is_response() && frame.is_end_of_response());
    assert_eq!(frame.is_error(), matches!(response, Response::Error(_)));
    assert_eq!(frame.request_id, request_id);
    assert_eq!(&frame.payload[..], payload);
    assert_eq!(&Response::decode(&frame).unwrap(), response);
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    #[test]
    fn any_request_round_trips(
        request in common::request(),
        request_id in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let payload = if common::request_has_payload(&request) { payload } else { Vec::new() };
        round_trip_request(&request, request_id, &payload);
    }

    #[test]
    fn any_response_round_trips(
        response in common::response(),
        error_opcode in proptest::sample::select(Opcode::ALL),
        request_id in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let payload = if common::response_has_payload(&response) { payload } else { Vec::new() };
        let opcode = response.opcode().unwrap_or(error_opcode);
        round_trip_response(&response, opcode, request_id, &payload);
    }

    #[test]
    fn vectored_parts_equal_the_contiguous_frame(
        request in common::request(),
        request_id in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let Request::Append(append) = request else { return Ok(()); };
        let mut contiguous = Vec::new();
        encode_request(&mut contiguous, request_id, &append, &payload).unwrap();
        let mut scratch = BytesMut::new();
        let parts = encode_parts(&mut scratch, Flags::REQUEST, request_id, &append,
            Bytes::from(payload)).unwrap();
        prop_assert_eq!(parts.to_vec(), contiguous);
    }
}

/// Draws from the strategies until every opcode has been seen as a request and as a response,
/// round-tripping each; fails if a type is missing from the strategies.
#[test]
fn every_operation_has_round_tripping_request_and_response() {
    let mut runner = TestRunner::deterministic();
    let mut requests = HashSet::new();
    let mut responses = HashSet::new();
    let request_strategy = common::request();
    let response_strategy = common::response();
    for attempt in 0..20_000u64 {
        let request = request_strategy.new_tree(&mut runner).unwrap().current();
        round_trip_request(&request, attempt, &[]);
        requests.insert(request.opcode());
        let response = response_strategy.new_tree(&mut runner).unwrap().current();
        let opcode = response.opcode().unwrap_or(Opcode::Append);
        round_trip_response(&response, opcode, attempt, &[]);
        responses.insert(response.opcode());
        if requests.len() == Opcode::ALL.len() && responses.len() == Opcode::ALL.len() {
            return;
        }
    }
    let missing: Vec<_> = Opcode::ALL
        .iter()
        .filter(|opcode| !requests.contains(opcode))
        .collect();
    panic!("requests never drawn: {missing:?}; responses drawn: {responses:?}");
}

#[test]
fn error_response_carries_code_detail_and_message() {
    let mut buf = Vec::new();
    let error =
        ErrorResponse::new(ErrorCode::OffsetGap, "expected offset 100, got 120").with_detail(100);
    encode_error(&mut buf, Opcode::Append, 42, &error).unwrap();
    let frame = decode_one(&buf);
    assert!(frame.is_error());
    assert_eq!(frame.error_response().unwrap(), error);
    // The success type is refused for an error frame rather than misread.
    assert!(matches!(
        frame.decode_message::<AppendResponse>(),
        Err(DecodeError::MalformedHeader { field: "flags", .. })
    ));
    assert_eq!(Response::decode(&frame).unwrap(), Response::Error(error));
}

#[test]
fn message_must_match_opcode_direction_and_payload_rules() {
    let mut buf = Vec::new();
    encode_request(&mut buf, 1, &DescribeStreamRequest::default(), &[]).unwrap();
    let frame = decode_one(&buf);
    assert!(matches!(
        frame.decode_message::<DeleteStreamRequest>(),
        Err(DecodeError::MalformedHeader {
            field: "opcode",
            ..
        })
    ));
    assert!(matches!(
        frame.decode_message::<DescribeStreamResponse>(),
        Err(DecodeError::MalformedHeader { field: "flags", .. })
    ));

    // A payload on an operation that has none.
    let frame = raw_frame(Opcode::DescribeStream, Flags::REQUEST, &[0; 8], b"x");
    assert!(matches!(
        Request::decode(&frame),
        Err(DecodeError::MalformedHeader {
            field: "payload",
            ..
        })
    ));
}

#[test]
fn header_with_trailing_bytes_missing_bytes_or_reserved_bits_is_malformed() {
    let header = [0u8; 8];
    for (bytes, field) in [(&header[..7], "stream_id"), (&[0u8; 9][..], "end")] {
        let frame = raw_frame(Opcode::DescribeStream, Flags::REQUEST, bytes, &[]);
        match Request::decode(&frame) {
            Err(error @ DecodeError::MalformedHeader { .. }) => {
                assert!(!error.is_fatal());
                assert_eq!(error.error_code(), ErrorCode::MalformedHeader);
                assert!(
                    matches!(error, DecodeError::MalformedHeader { field: f, .. } if f == field)
                );
            }
            other => panic!("expected MalformedHeader on {field}, got {other:?}"),
        }
    }
    // DESCRIBE_RANGE with its reserved u32 set.
    let mut header = vec![0u8; 16];
    header[12] = 1;
    let frame = raw_frame(Opcode::DescribeRange, Flags::REQUEST, &header, &[]);
    assert!(matches!(
        Request::decode(&frame),
        Err(DecodeError::MalformedHeader {
            field: "reserved",
            ..
        })
    ));
    // UPDATE_STREAM with a value whose mask bit is clear.
    let mut header = vec![0u8; 40];
    header[16] = 5;
    let frame = raw_frame(Opcode::UpdateStream, Flags::REQUEST, &header, &[]);
    assert!(matches!(
        Request::decode(&frame),
        Err(DecodeError::MalformedHeader {
            field: "retention_ms",
            ..
        })
    ));
}

#[test]
fn list_count_larger_than_the_header_is_rejected_before_allocating() {
    // LIST_STREAMS response claiming 65 536 streams in a 4-byte header.
    let frame = raw_frame(
        Opcode::ListStreams,
        Flags::RESPONSE_END,
        &65_536u32.to_le_bytes(),
        &[],
    );
    assert!(matches!(
        Response::decode(&frame),
        Err(DecodeError::MalformedHeader {
            field: "streams",
            ..
        })
    ));
}

#[test]
fn strings_over_their_maximum_are_refused_by_the_encoder_and_the_decoder() {
    let request = AllocateIdRequest {
        address: "a".repeat(256),
    };
    let mut buf = Vec::new();
    assert_eq!(
        encode_request(&mut buf, 1, &request, &[]),
        Err(EncodeError::FieldTooLong {
            field: "address",
            length: 256,
            max: 255
        })
    );
    assert!(buf.is_empty(), "nothing written on error");
    let mut header = 256u16.to_le_bytes().to_vec();
    header.extend(std::iter::repeat_n(b'a', 256));
    let frame = raw_frame(Opcode::AllocateId, Flags::REQUEST, &header, &[]);
    assert!(matches!(
        Request::decode(&frame),
        Err(DecodeError::MalformedHeader {
            field: "address",
            ..
        })
    ));
    // Invalid UTF-8.
    let frame = raw_frame(Opcode::AllocateId, Flags::REQUEST, &[2, 0, 0xff, 0xfe], &[]);
    assert!(matches!(
        Request::decode(&frame),
        Err(DecodeError::MalformedHeader {
            reason: "not UTF-8",
            ..
        })
    ));
}

#[test]
fn error_message_truncation_keeps_utf8_and_encodes() {
    let mut error = ErrorResponse::new(ErrorCode::Internal, "é".repeat(3000));
    let mut buf = Vec::new();
    assert!(encode_error(&mut buf, Opcode::Ping, 1, &error).is_err());
    error.truncate_message();
    assert!(error.message.len() <= 4096);
    encode_error(&mut buf, Opcode::Ping, 1, &error).unwrap();
    assert_eq!(decode_one(&buf).error_response().unwrap(), error);
}

#[test]
fn retriable_codes_are_exactly_the_transient_ones() {
    let retriable: Vec<_> = ErrorCode::ALL
        .iter()
        .filter(|code| code.is_retriable())
        .map(|code| code.name())
        .collect();
    assert_eq!(
        retriable,
        [
            "OFFSET_IN_FLIGHT_DUPLICATE",
            "OFFSET_NOT_HELD",
            "NO_AVAILABLE_NODES",
            "STORAGE_UNAVAILABLE",
            "STORAGE_FULL",
            "TOO_MANY_IN_FLIGHT",
            "SHUTTING_DOWN",
            "TIMEOUT",
            "NOT_LEADER"
        ]
    );
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(*code));
    }
    assert_eq!(ErrorCode::from_u16(9), None);
}

#[test]
fn error_response_with_a_payload_is_malformed() {
    let header = {
        let mut valid = Vec::new();
        encode_error(
            &mut valid,
            Opcode::Fetch,
            1,
            &ErrorResponse::new(ErrorCode::Timeout, ""),
        )
        .unwrap();
        valid[24..valid.len() - 4].to_vec()
    };
    let frame = raw_frame(Opcode::Fetch, Flags::ERROR_RESPONSE, &header, b"data");
    assert!(matches!(
        Response::decode(&frame),
        Err(DecodeError::MalformedHeader {
            field: "payload",
            ..
        })
    ));
}

#[test]
fn node_state_alive_and_range_flags_outside_their_values_are_malformed() {
    let heartbeat = |state: u8| {
        let mut buf = Vec::new();
        let request = HeartbeatRequest {
            address: "a:1".into(),
            ..HeartbeatRequest::default()
        };
        encode_request(&mut buf, 1, &request, &[]).unwrap();
        let mut header = buf[24..buf.len() - 4].to_vec();
        assert_eq!(header[32], NodeState::ReadWrite as u8);
        header[32] = state;
        raw_frame(Opcode::Heartbeat, Flags::REQUEST, &header, &[])
    };
    for state in [1, 2, 3] {
        assert!(Request::decode(&heartbeat(state)).is_ok(), "state {state}");
    }
    for state in [0, 4, 255] {
        assert!(matches!(
            Request::decode(&heartbeat(state)),
            Err(DecodeError::MalformedHeader { field: "state", .. })
        ));
    }

    // ClusterNode: `alive` is 0 or 1.
    let response = DescribeClusterResponse {
        nodes: vec![ClusterNode::default()],
    };
    let mut header = Vec::new();
    response.encode(&mut header);
    assert_eq!(header[4 + 33], 0, "not alive");
    header[4 + 33] = 2;
    let frame = raw_frame(Opcode::DescribeCluster, Flags::RESPONSE_END, &header, &[]);
    assert!(matches!(
        Response::decode(&frame),
        Err(DecodeError::MalformedHeader { field: "alive", .. })
    ));

    // Range record: only bit 0 (UNDER_REPLICATED) of `flags` is defined; `size_bytes` at 64.
    let response = DescribeRangeResponse {
        range: wire::Range {
            under_replicated: true,
            size_bytes: Some(4096),
            ..wire::Range::default()
        },
    };
    let mut header = Vec::new();
    response.encode(&mut header);
    assert_eq!(header.len(), wire::Range::FIXED_BYTES);
    assert_eq!(header[58], 0x01);
    assert_eq!(header[64..72], 4096u64.to_le_bytes());
    header[58] = 0x03;
    let frame = raw_frame(Opcode::DescribeRange, Flags::RESPONSE_END, &header, &[]);
    assert!(matches!(
        Response::decode(&frame),
        Err(DecodeError::MalformedHeader { field: "flags", .. })
    ));
}
