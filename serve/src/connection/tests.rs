use super::*;

#[test]
fn raw_opcode_frame_stays_valid_for_a_decoder() {
    let mut buf = BytesMut::new();
    let error = ErrorResponse::new(ErrorCode::UnknownOpcode, "no such opcode").with_detail(0x7777);
    wire::encode_error(&mut buf, Opcode::Ping, 5, &error).unwrap();
    let frame = with_raw_opcode(buf, 0x7777);
    assert_eq!(&frame[8..10], &0x7777u16.to_le_bytes());
    // The CRC was recomputed: a decoder gets past the CRC check to the opcode check.
    let mut input = BytesMut::from(&frame[..]);
    let decoded = Decoder::default().decode(&mut input);
    assert_eq!(
        decoded.unwrap_err(),
        DecodeError::UnknownOpcode {
            opcode: 0x7777,
            request_id: 5
        }
    );
}

#[test]
fn fetch_replies_are_sent_as_head_payload_and_trailer() {
    let header = wire::msg::FetchResponse {
        confirmed_offset: Some(wire::Offset(4)),
        next_offset: wire::Offset(4),
        end_offset: None,
    };
    let payload = Bytes::from_static(b"batches");
    let reply = Reply::with_payload(Response::Fetch(header), payload.clone());
    let parts = encode_reply(Opcode::Fetch, 9, reply).unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[1], payload, "the payload is not copied");
    let mut whole = BytesMut::new();
    for part in &parts {
        whole.extend_from_slice(part);
    }
    let frame = Decoder::default().decode(&mut whole).unwrap().unwrap();
    assert_eq!(frame.request_id, 9);
    assert_eq!(frame.payload, payload);
    assert_eq!(
        frame.decode_message::<wire::msg::FetchResponse>().unwrap(),
        header
    );
}
