use super::*;

fn parse(line: &str) -> Command {
    parse_line(line).expect("parses").expect("not blank")
}

fn request(line: &str) -> RequestCommand {
    match parse(line) {
        Command::Request(request) => request,
        other => panic!("{line}: not a request: {other:?}"),
    }
}

fn parse_error(line: &str) -> String {
    parse_line(line).expect_err("must not parse").to_string()
}

#[test]
fn blank_lines_and_comments_are_nothing() {
    assert_eq!(parse_line("").unwrap(), None);
    assert_eq!(parse_line("   \t ").unwrap(), None);
    assert_eq!(parse_line("# a comment").unwrap(), None);
}

#[test]
fn ping_with_and_without_payload() {
    assert_eq!(request("ping"), RequestCommand::Ping { payload: vec![] });
    assert_eq!(
        request("ping \"hi there\""),
        RequestCommand::Ping {
            payload: b"hi there".to_vec()
        }
    );
    assert!(parse_error(&format!("ping {}", "x".repeat(70_000))).contains("limit"));
}

#[test]
fn create_range_takes_named_options_in_any_order() {
    assert_eq!(
        request(
            "create-range start=10 index=2 stream=7 epoch=3 ack-count=2 replica-count-target=3"
        ),
        RequestCommand::CreateRange {
            stream_id: StreamId(7),
            range_index: RangeIndex(2),
            start_offset: Offset(10),
            epoch: Epoch(3),
            replica_count_target: 3,
            ack_count: 2,
        }
    );
    assert_eq!(
        request("create-range stream=1 index=0 start=0"),
        RequestCommand::CreateRange {
            stream_id: StreamId(1),
            range_index: RangeIndex(0),
            start_offset: Offset(0),
            epoch: Epoch(0),
            replica_count_target: 0,
            ack_count: 0,
        }
    );
    assert!(
        parse_error("create-range stream=1 index=0 start=0 ack-count=256")
            .contains("ack-count must be a non-negative integer")
    );
}

#[test]
fn create_range_names_the_missing_option_and_the_form() {
    let message = parse_error("create-range stream=1 index=0");
    assert!(message.contains("missing `start=`"), "{message}");
    assert!(
        message.contains("expected: create-range stream=ID index=N start=OFFSET"),
        "{message}"
    );
}

#[test]
fn append_defaults_and_options() {
    assert_eq!(
        request("append 1 0 \"hello\""),
        RequestCommand::Append {
            stream_id: StreamId(1),
            range_index: RangeIndex(0),
            payload: b"hello".to_vec(),
            epoch: Epoch(0),
            record_count: 1,
            base_offset: None,
            confirmed_offset: None,
        }
    );
    assert_eq!(
        request("append 1 0 hex:00ff10 epoch=2 count=3 offset=5 confirmed=4"),
        RequestCommand::Append {
            stream_id: StreamId(1),
            range_index: RangeIndex(0),
            payload: vec![0x00, 0xff, 0x10],
            epoch: Epoch(2),
            record_count: 3,
            base_offset: Some(Offset(5)),
            confirmed_offset: Some(Offset(4)),
        }
    );
}

#[test]
fn quoted_payload_keeps_spaces_equals_and_escapes() {
    let RequestCommand::Append { payload, .. } = request(r#"append 1 0 "a=b \"c\"\n\x41\\""#)
    else {
        panic!("not an append")
    };
    assert_eq!(payload, b"a=b \"c\"\nA\\".to_vec());
    // A quoted hex: prefix is text, not bytes.
    let RequestCommand::Append { payload, .. } = request(r#"append 1 0 "hex:41""#) else {
        panic!("not an append")
    };
    assert_eq!(payload, b"hex:41".to_vec());
}

#[test]
fn append_errors_say_what_and_how() {
    assert!(parse_error("append 1 0").contains("needs 3 positional argument(s), found 2"));
    assert!(
        parse_error("append x 0 hi").contains("STREAM must be a non-negative integer, found `x`")
    );
    assert!(parse_error("append 1 0 hi count=0").contains("at least one offset"));
    assert!(parse_error("append 1 0 hi epoch=-1").contains("epoch must be a non-negative integer"));
    assert!(parse_error("append 1 0 hi colour=red").contains("unknown option `colour=`"));
    assert!(parse_error("append 1 0 hi epoch=1 epoch=2").contains("given twice"));
    assert!(parse_error("append 1 0 \"unterminated").contains("unterminated double quote"));
    assert!(parse_error("append 1 0 hex:abc").contains("odd number of hex digits"));
    let message = parse_error("append 1 0 a b");
    assert!(message.contains("unexpected argument `b`"), "{message}");
    assert!(
        message.contains("expected: append STREAM INDEX PAYLOAD"),
        "{message}"
    );
}

#[test]
fn fetch_requires_an_offset() {
    assert_eq!(
        request("fetch 1 0 offset=3 max-bytes=100 wait-ms=250"),
        RequestCommand::Fetch {
            stream_id: StreamId(1),
            range_index: RangeIndex(0),
            start_offset: Offset(3),
            max_bytes: 100,
            max_wait_ms: 250,
        }
    );
    let RequestCommand::Fetch {
        max_bytes,
        max_wait_ms,
        ..
    } = request("fetch 1 0 offset=0")
    else {
        panic!("not a fetch")
    };
    assert_eq!((max_bytes, max_wait_ms), (DEFAULT_FETCH_MAX_BYTES, 0));
    assert!(parse_error("fetch 1 0").contains("missing `offset=`"));
    assert!(parse_error("fetch 1 0 offset=0 max-bytes=0").contains("max-bytes=0"));
}

#[test]
fn seal_describe_and_list() {
    assert_eq!(
        request("seal 4 1 epoch=2"),
        RequestCommand::Seal {
            stream_id: StreamId(4),
            range_index: RangeIndex(1),
            epoch: Epoch(2),
            end_offset: None,
        }
    );
    assert_eq!(
        request("seal 4 1 end=9"),
        RequestCommand::Seal {
            stream_id: StreamId(4),
            range_index: RangeIndex(1),
            epoch: Epoch(0),
            end_offset: Some(Offset(9)),
        }
    );
    assert_eq!(
        request("describe-range 4 1"),
        RequestCommand::DescribeRange {
            stream_id: StreamId(4),
            range_index: RangeIndex(1)
        }
    );
    assert_eq!(
        request("list-ranges"),
        RequestCommand::ListRanges { stream_id: None }
    );
    assert_eq!(
        request("list-ranges 3"),
        RequestCommand::ListRanges {
            stream_id: Some(StreamId(3))
        }
    );
    assert!(parse_error("describe-range 4").contains("expected: describe-range STREAM INDEX"));
}

#[test]
fn trim_and_delete_range() {
    assert_eq!(
        request("trim-range 4 1 100"),
        RequestCommand::TrimRange {
            stream_id: StreamId(4),
            range_index: RangeIndex(1),
            offset: Offset(100),
        }
    );
    assert_eq!(
        request("delete-range 4 1"),
        RequestCommand::DeleteRange {
            stream_id: StreamId(4),
            range_index: RangeIndex(1),
        }
    );
    assert!(parse_error("trim-range 4 1").contains("expected: trim-range STREAM INDEX OFFSET"));
    assert!(parse_error("trim-range 4 1 x").contains("OFFSET must be a non-negative integer"));
    assert!(parse_error("delete-range 4 1 2").contains("unexpected argument `2`"));
}

#[test]
fn create_stream_takes_r_a_and_optional_retention() {
    assert_eq!(
        request("create-stream 3 2"),
        RequestCommand::CreateStream {
            replica_count: 3,
            ack_count: 2,
            retention_ms: 0,
            retention_bytes: 0,
        }
    );
    assert_eq!(
        request("create-stream 1 1 retention-bytes=1048576 retention-ms=60000"),
        RequestCommand::CreateStream {
            replica_count: 1,
            ack_count: 1,
            retention_ms: 60_000,
            retention_bytes: 1 << 20,
        }
    );
    let message = parse_error("create-stream 3");
    assert!(
        message.contains("needs 2 positional argument(s), found 1"),
        "{message}"
    );
    assert!(message.contains("expected: create-stream R A"), "{message}");
    assert!(parse_error("create-stream 300 1").contains("R must be a non-negative integer"));
    assert!(parse_error("create-stream 1 1 retention=5").contains("unknown option `retention=`"));
}

#[test]
fn stream_commands_take_the_stream_id() {
    assert_eq!(
        request("describe-stream 9"),
        RequestCommand::DescribeStream {
            stream_id: StreamId(9)
        }
    );
    assert_eq!(
        request("trim-stream 9 100"),
        RequestCommand::TrimStream {
            stream_id: StreamId(9),
            start_offset: Offset(100),
        }
    );
    assert_eq!(
        request("delete-stream 9"),
        RequestCommand::DeleteStream {
            stream_id: StreamId(9)
        }
    );
    assert!(parse_error("describe-stream").contains("expected: describe-stream STREAM"));
    assert!(parse_error("trim-stream 9").contains("expected: trim-stream STREAM OFFSET"));
    assert!(parse_error("delete-stream x").contains("STREAM must be a non-negative integer"));
}

#[test]
fn list_streams_defaults_to_everything_from_zero() {
    assert_eq!(
        request("list-streams"),
        RequestCommand::ListStreams {
            start_stream_id: StreamId(0),
            max_count: 0,
        }
    );
    assert_eq!(
        request("list-streams max=10 from=4"),
        RequestCommand::ListStreams {
            start_stream_id: StreamId(4),
            max_count: 10,
        }
    );
    assert!(parse_error("list-streams 4").contains("unexpected argument `4`"));
}

#[test]
fn update_stream_changes_only_the_fields_given() {
    assert_eq!(
        request("update-stream 5 epoch=3"),
        RequestCommand::UpdateStream {
            stream_id: StreamId(5),
            replica_count: None,
            ack_count: None,
            retention_ms: None,
            retention_bytes: None,
            epoch: Some(Epoch(3)),
        }
    );
    assert_eq!(
        request("update-stream 5 replica-count=3 ack-count=2 retention-ms=0 retention-bytes=7"),
        RequestCommand::UpdateStream {
            stream_id: StreamId(5),
            replica_count: Some(3),
            ack_count: Some(2),
            retention_ms: Some(0),
            retention_bytes: Some(7),
            epoch: None,
        }
    );
    assert!(parse_error("update-stream 5").contains("at least one field to change"));
    assert!(parse_error("update-stream 5 colour=red").contains("unknown option `colour=`"));
}

#[test]
fn cluster_commands() {
    assert_eq!(
        parse("describe-cluster"),
        Command::Request(RequestCommand::DescribeCluster)
    );
    assert!(parse_error("describe-cluster 1").contains("unexpected argument `1`"));
    assert_eq!(
        request("allocate-id 127.0.0.1:10911"),
        RequestCommand::AllocateId {
            address: "127.0.0.1:10911".into()
        }
    );
    assert!(parse_error("allocate-id").contains("expected: allocate-id ADDR"));
    assert_eq!(
        request("heartbeat 4 127.0.0.1:10911 state=read-only ranges=2 disk-free=10"),
        RequestCommand::Heartbeat {
            node_id: NodeId(4),
            address: "127.0.0.1:10911".into(),
            state: NodeState::ReadOnly,
            range_count: 2,
            disk_free_bytes: 10,
            disk_total_bytes: 0,
        }
    );
    let RequestCommand::Heartbeat { state, .. } = request("heartbeat 4 a:1") else {
        panic!("not a heartbeat")
    };
    assert_eq!(state, NodeState::ReadWrite);
    assert!(parse_error("heartbeat 4 a:1 state=sleepy")
        .contains("state must be read-write, read-only or offline, found `sleepy`"));
    assert_eq!(parse_node_state("READ_WRITE"), Some(NodeState::ReadWrite));
    assert_eq!(parse_node_state("offline"), Some(NodeState::Offline));
}

#[test]
fn range_index_must_fit_in_32_bits() {
    assert!(
        parse_error("describe-range 1 4294967296").contains("INDEX must be a non-negative integer")
    );
}

#[test]
fn raw_takes_hex_with_separators() {
    assert_eq!(
        request("raw 0x45 53:01 00_ff"),
        RequestCommand::Raw {
            bytes: vec![0x45, 0x53, 0x01, 0x00, 0xff]
        }
    );
    assert!(parse_error("raw zz").contains("`zz` is not a hex byte"));
    assert!(parse_error("raw").contains("expected: raw HEX"));
}

#[test]
fn meta_commands() {
    assert_eq!(parse(".hex on"), Command::Hex(true));
    assert_eq!(parse(".hex off"), Command::Hex(false));
    assert!(parse_error(".hex maybe").contains("expected: .hex on|off"));
    assert_eq!(parse(".quit"), Command::Quit);
    assert_eq!(parse("exit"), Command::Quit);
    assert_eq!(parse("help"), Command::Help(None));
    assert_eq!(parse("help append"), Command::Help(Some("append".into())));
}

#[test]
fn unknown_command_points_to_help() {
    assert!(parse_error("frobnicate 1 2").contains("unknown command `frobnicate`; type `help`"));
}

#[test]
fn every_usage_form_starts_with_its_name() {
    for usage in USAGES {
        assert!(usage.form.starts_with(usage.name), "{}", usage.form);
    }
}

#[test]
fn seal_with_fence_is_a_fence_and_takes_no_end() {
    assert_eq!(
        request("seal 7 0 epoch=3 --fence"),
        RequestCommand::Fence {
            stream_id: StreamId(7),
            range_index: RangeIndex(0),
            epoch: Epoch(3),
        }
    );
    assert!(matches!(
        request("seal 7 0 epoch=3"),
        RequestCommand::Seal { .. }
    ));
    let message = parse_error("seal 7 0 epoch=3 end=9 --fence");
    assert!(message.contains("--fence fixes no end"), "{message}");
    assert!(message.contains("expected: seal STREAM INDEX"), "{message}");
}

#[test]
fn append_with_repair_carries_an_older_batch_epoch_and_no_confirmed_offset() {
    assert_eq!(
        request("append 7 0 hello epoch=3 batch-epoch=1 offset=6 --repair"),
        RequestCommand::RepairAppend {
            stream_id: StreamId(7),
            range_index: RangeIndex(0),
            payload: b"hello".to_vec(),
            epoch: Epoch(3),
            batch_epoch: Epoch(1),
            record_count: 1,
            base_offset: Some(Offset(6)),
        }
    );
    assert_eq!(
        request("append 7 0 hello epoch=3 --repair"),
        RequestCommand::RepairAppend {
            stream_id: StreamId(7),
            range_index: RangeIndex(0),
            payload: b"hello".to_vec(),
            epoch: Epoch(3),
            batch_epoch: Epoch(3),
            record_count: 1,
            base_offset: None,
        },
        "the batch epoch defaults to the request's"
    );
    assert!(parse_error("append 7 0 x epoch=1 batch-epoch=2 --repair").contains("above epoch"));
    assert!(parse_error("append 7 0 x epoch=1 confirmed=3 --repair").contains("confirmed"));
    assert!(
        parse_error("append 7 0 x epoch=1 batch-epoch=1").contains("unknown option `batch-epoch=`"),
        "batch-epoch is for repairs only"
    );
    // A quoted "--repair" is a payload, not a flag.
    assert!(matches!(
        request("append 7 0 \"--repair\""),
        RequestCommand::Append { payload, .. } if payload == b"--repair"
    ));
}

#[test]
fn confirm_takes_stream_index_epoch_and_offset() {
    assert_eq!(
        request("confirm 7 0 3 120"),
        RequestCommand::Confirm {
            stream_id: StreamId(7),
            range_index: RangeIndex(0),
            epoch: Epoch(3),
            confirmed_offset: Offset(120),
        }
    );
    let message = parse_error("confirm 7 0 3");
    assert!(message.contains("needs 4 positional"), "{message}");
    assert!(
        message.contains("expected: confirm STREAM INDEX EPOCH OFFSET"),
        "{message}"
    );
}

#[test]
fn fetch_flags_choose_durable_and_sealed_reads() {
    assert_eq!(
        request("fetch 7 0 offset=3 --durable --sealed"),
        RequestCommand::FetchFlagged {
            stream_id: StreamId(7),
            range_index: RangeIndex(0),
            start_offset: Offset(3),
            max_bytes: DEFAULT_FETCH_MAX_BYTES,
            max_wait_ms: 0,
            read_durable: true,
            expect_sealed: true,
        }
    );
    assert!(matches!(
        request("fetch 7 0 offset=3 wait-ms=50 --sealed"),
        RequestCommand::FetchFlagged {
            read_durable: false,
            expect_sealed: true,
            max_wait_ms: 50,
            ..
        }
    ));
    assert!(matches!(
        request("fetch 7 0 offset=3"),
        RequestCommand::Fetch { .. }
    ));
}

#[test]
fn flags_are_checked_like_options() {
    assert!(parse_error("fetch 7 0 offset=3 --durabel").contains("unknown flag `--durabel`"));
    assert!(parse_error("seal 7 0 --fence --fence").contains("given twice"));
    assert!(parse_error("seal 7 0 --").contains("not a flag"));
    assert!(parse_error("describe-range 7 0 --fence").contains("unknown flag"));
}
