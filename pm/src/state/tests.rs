//! One test per rule of the state machine, each through `PmState::apply` as the daemon uses it.

use ids::{Epoch, NodeId, Offset, RangeIndex, RangeKey, StreamId};

use super::*;

/// Applies and expects success.
fn ok(state: &mut PmState, command: Command) -> Outcome {
    state
        .apply(&command)
        .unwrap_or_else(|rejection| panic!("{command:?} was rejected: {rejection}"))
}

/// Applies and expects a rejection that changed nothing, revision included.
fn rejected(state: &mut PmState, command: Command) -> Rejection {
    let before = state.clone();
    let rejection = state
        .apply(&command)
        .expect_err("the command should have been rejected");
    assert_eq!(*state, before, "a rejected command must change nothing");
    rejection
}

fn register(state: &mut PmState, count: u32) -> Vec<NodeId> {
    (0..count)
        .map(|number| {
            let command = Command::RegisterNode {
                address: format!("10.0.0.{number}:9000"),
                now_ms: 1,
            };
            match ok(state, command) {
                Outcome::NodeRegistered(node) => node.id,
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
}

fn create_stream(state: &mut PmState, replica_count: u8, ack_count: u8) -> StreamId {
    match ok(
        state,
        Command::CreateStream {
            replica_count,
            ack_count,
            retention_ms: 0,
            retention_bytes: 0,
            now_ms: 10,
        },
    ) {
        Outcome::StreamCreated(stream) => stream.id,
        other => panic!("unexpected {other:?}"),
    }
}

fn raise_epoch(stream: StreamId, epoch: u64) -> Command {
    Command::UpdateStream {
        stream,
        replica_count: None,
        ack_count: None,
        retention_ms: None,
        retention_bytes: None,
        epoch: Some(Epoch(epoch)),
    }
}

fn create_range(stream: StreamId, index: u32, epoch: u64, start: u64, nodes: &[NodeId]) -> Command {
    Command::CreateRange {
        stream,
        index: RangeIndex(index),
        epoch: Epoch(epoch),
        start: Offset(start),
        nodes: nodes.to_vec(),
        now_ms: 20,
    }
}

fn seal_range(stream: StreamId, index: u32, epoch: u64, end: u64) -> Command {
    Command::SealRange {
        stream,
        index: RangeIndex(index),
        epoch: Epoch(epoch),
        end: Offset(end),
        size_bytes: Some(end.saturating_mul(100)),
        now_ms: 30,
    }
}

/// Three nodes and a stream with R = 3, A = 2 at epoch 1.
fn cluster() -> (PmState, StreamId, Vec<NodeId>) {
    let mut state = PmState::new();
    let nodes = register(&mut state, 3);
    let stream = create_stream(&mut state, 3, 2);
    ok(&mut state, raise_epoch(stream, 1));
    (state, stream, nodes)
}

fn key(stream: StreamId, index: u32) -> RangeKey {
    RangeKey::new(stream, RangeIndex(index))
}

#[test]
fn ids_are_allocated_from_one_and_never_reused() {
    let mut state = PmState::new();
    assert_eq!(register(&mut state, 2), vec![NodeId(1), NodeId(2)]);
    let first = create_stream(&mut state, 1, 1);
    assert_eq!(first, StreamId(1));
    ok(&mut state, Command::DeleteStream { stream: first });
    ok(&mut state, Command::PurgeStream { stream: first });
    assert_eq!(create_stream(&mut state, 1, 1), StreamId(2));
    assert_eq!(state.nodes().count(), 2);
    assert_eq!(state.node(NodeId(1)).unwrap().state, NodeState::ReadWrite);
}

#[test]
fn register_node_needs_a_bounded_address() {
    let mut state = PmState::new();
    for address in [String::new(), "x".repeat(MAX_ADDRESS_BYTES + 1)] {
        assert!(matches!(
            rejected(&mut state, Command::RegisterNode { address, now_ms: 0 }),
            Rejection::InvalidArgument(_)
        ));
    }
}

#[test]
fn set_node_state_needs_a_registered_node_and_a_repeat_changes_nothing() {
    let mut state = PmState::new();
    let nodes = register(&mut state, 1);
    let set = |state| Command::SetNodeState {
        node: nodes[0],
        state,
    };
    ok(&mut state, set(NodeState::Offline));
    assert_eq!(state.node(nodes[0]).unwrap().state, NodeState::Offline);
    let revision = state.revision();
    ok(&mut state, set(NodeState::Offline));
    assert_eq!(state.revision(), revision, "a repeat is not a change");
    assert_eq!(
        rejected(
            &mut state,
            Command::SetNodeState {
                node: NodeId(9),
                state: NodeState::ReadOnly
            }
        ),
        Rejection::NodeNotFound { node: NodeId(9) }
    );
}

#[test]
fn ack_count_must_be_between_one_and_the_replica_count() {
    let mut state = PmState::new();
    for (replica_count, ack_count) in [(0, 0), (3, 0), (3, 4), (17, 1)] {
        let command = Command::CreateStream {
            replica_count,
            ack_count,
            retention_ms: 0,
            retention_bytes: 0,
            now_ms: 0,
        };
        assert!(matches!(
            rejected(&mut state, command),
            Rejection::InvalidArgument(_)
        ));
    }
    let stream = create_stream(&mut state, 16, 16);
    let lower_r_only = Command::UpdateStream {
        stream,
        replica_count: Some(3),
        ack_count: None,
        retention_ms: None,
        retention_bytes: None,
        epoch: None,
    };
    assert!(matches!(
        rejected(&mut state, lower_r_only),
        Rejection::InvalidArgument(message) if message.contains("ack count must be 1..=3")
    ));
    let both = Command::UpdateStream {
        stream,
        replica_count: Some(3),
        ack_count: Some(2),
        retention_ms: Some(60_000),
        retention_bytes: None,
        epoch: None,
    };
    let Outcome::StreamUpdated(updated) = ok(&mut state, both) else {
        panic!("expected StreamUpdated");
    };
    assert_eq!((updated.replica_count, updated.ack_count), (3, 2));
    assert_eq!(updated.retention_ms, 60_000);
}

#[test]
fn a_new_epoch_must_be_strictly_greater() {
    let (mut state, stream, _) = cluster();
    assert_eq!(
        rejected(&mut state, raise_epoch(stream, 1)),
        Rejection::StaleEpoch { current: Epoch(1) },
        "two writers can never share an epoch"
    );
    assert_eq!(
        rejected(&mut state, raise_epoch(stream, 0)),
        Rejection::StaleEpoch { current: Epoch(1) }
    );
    ok(&mut state, raise_epoch(stream, 7));
    assert_eq!(state.stream(stream).unwrap().epoch, Epoch(7));
    assert!(matches!(
        rejected(&mut state, raise_epoch(stream, u64::MAX)),
        Rejection::InvalidArgument(_)
    ));
    ok(&mut state, raise_epoch(stream, Epoch::MAX.0));
}

#[test]
fn create_range_needs_the_current_epoch() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, raise_epoch(stream, 5));
    assert_eq!(
        rejected(&mut state, create_range(stream, 0, 4, 0, &nodes)),
        Rejection::StaleEpoch { current: Epoch(5) }
    );
    assert_eq!(
        rejected(&mut state, create_range(stream, 0, 6, 0, &nodes)),
        Rejection::FutureEpoch { current: Epoch(5) }
    );
    let Outcome::RangeCreated(range) = ok(&mut state, create_range(stream, 0, 5, 0, &nodes)) else {
        panic!("expected RangeCreated");
    };
    assert_eq!(range.epoch, Epoch(5));
    assert_eq!(range.end, None);
    assert_eq!((range.replica_count, range.ack_count), (3, 2));
    assert!(!range.under_replicated);
}

#[test]
fn seal_range_needs_the_current_epoch() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    ok(&mut state, raise_epoch(stream, 2));
    assert_eq!(
        rejected(&mut state, seal_range(stream, 0, 1, 10)),
        Rejection::StaleEpoch { current: Epoch(2) },
        "the old writer is fenced"
    );
    assert_eq!(
        rejected(&mut state, seal_range(stream, 0, 3, 10)),
        Rejection::FutureEpoch { current: Epoch(2) }
    );
    let Outcome::RangeSealed(range) = ok(&mut state, seal_range(stream, 0, 2, 10)) else {
        panic!("expected RangeSealed");
    };
    assert_eq!(range.end, Some(Offset(10)));
    assert_eq!(
        range.epoch,
        Epoch(2),
        "a range records the epoch it was sealed with"
    );
    assert_eq!(range.sealed_at_ms, Some(30));
    assert_eq!(range.size_bytes, Some(1000));
}

#[test]
fn only_one_open_range_per_stream() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    assert_eq!(
        rejected(&mut state, create_range(stream, 1, 1, 0, &nodes)),
        Rejection::PreviousRangeOpen {
            open: key(stream, 0)
        }
    );
    assert_eq!(state.open_range(stream).unwrap().key, key(stream, 0));
    ok(&mut state, seal_range(stream, 0, 1, 10));
    assert!(state.open_range(stream).is_none());
    ok(&mut state, create_range(stream, 1, 1, 10, &nodes));
    assert_eq!(state.open_range(stream).unwrap().key, key(stream, 1));
}

#[test]
fn ranges_take_the_next_index_and_start_where_the_previous_ended() {
    let (mut state, stream, nodes) = cluster();
    assert!(matches!(
        rejected(&mut state, create_range(stream, 1, 1, 0, &nodes)),
        Rejection::RangeIndexNotNext { expected, found, .. }
            if expected == RangeIndex(0) && found == RangeIndex(1)
    ));
    assert!(matches!(
        rejected(&mut state, create_range(stream, 0, 1, 5, &nodes)),
        Rejection::InvalidArgument(message) if message.contains("must start at 0")
    ));
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    ok(&mut state, seal_range(stream, 0, 1, 42));
    assert!(matches!(
        rejected(&mut state, create_range(stream, 1, 1, 41, &nodes)),
        Rejection::InvalidArgument(message) if message.contains("must start at 42")
    ));
    ok(&mut state, create_range(stream, 1, 1, 42, &nodes));
    let starts: Vec<(u32, Offset)> = state
        .ranges_of(stream)
        .map(|range| (range.key.range_index.0, range.start))
        .collect();
    assert_eq!(starts, vec![(0, Offset(0)), (1, Offset(42))]);
}

#[test]
fn create_range_checks_its_nodes() {
    let (mut state, stream, nodes) = cluster();
    assert!(matches!(
        rejected(&mut state, create_range(stream, 0, 1, 0, &[nodes[0], nodes[0]])),
        Rejection::InvalidArgument(message) if message.contains("named twice")
    ));
    let mut four = nodes.clone();
    four.extend(register(&mut state, 1));
    assert!(matches!(
        rejected(&mut state, create_range(stream, 0, 1, 0, &four)),
        Rejection::InvalidArgument(message) if message.contains("at most 3")
    ));
    assert_eq!(
        rejected(
            &mut state,
            create_range(stream, 0, 1, 0, &[nodes[0], NodeId(99)])
        ),
        Rejection::NodeNotFound { node: NodeId(99) }
    );
    assert_eq!(
        rejected(&mut state, create_range(stream, 0, 1, 0, &nodes[..1])),
        Rejection::NotEnoughNodes { live: 1, needed: 2 }
    );
    assert_eq!(
        rejected(&mut state, create_range(stream, 0, 1, 0, &[])),
        Rejection::NotEnoughNodes { live: 0, needed: 2 }
    );
}

#[test]
fn fewer_than_r_nodes_but_at_least_a_is_under_replicated() {
    let (mut state, stream, nodes) = cluster();
    let Outcome::RangeCreated(range) = ok(&mut state, create_range(stream, 0, 1, 0, &nodes[..2]))
    else {
        panic!("expected RangeCreated");
    };
    assert!(range.under_replicated);
    assert_eq!(range.nodes, nodes[..2]);
}

#[test]
fn replica_and_ack_counts_are_fixed_per_range_at_creation() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    let shrink = Command::UpdateStream {
        stream,
        replica_count: Some(1),
        ack_count: Some(1),
        retention_ms: None,
        retention_bytes: None,
        epoch: None,
    };
    ok(&mut state, shrink);
    let open = state.range(key(stream, 0)).unwrap();
    assert_eq!((open.replica_count, open.ack_count), (3, 2));
    ok(&mut state, seal_range(stream, 0, 1, 5));
    let Outcome::RangeCreated(next) = ok(&mut state, create_range(stream, 1, 1, 5, &nodes[..1]))
    else {
        panic!("expected RangeCreated");
    };
    assert_eq!((next.replica_count, next.ack_count), (1, 1));
    assert!(!next.under_replicated);
}

#[test]
fn a_repeated_create_range_returns_the_range_and_changes_nothing() {
    let (mut state, stream, nodes) = cluster();
    let first = ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    let before = state.clone();
    let mut retry = create_range(stream, 0, 1, 0, &nodes);
    if let Command::CreateRange { now_ms, .. } = &mut retry {
        *now_ms = 999; // the daemon rebuilds the command with a new clock reading
    }
    assert_eq!(ok(&mut state, retry), first);
    assert_eq!(state, before, "revision included");
    let (other_nodes, other_epoch) = (&nodes[..2], 1);
    assert_eq!(
        rejected(
            &mut state,
            create_range(stream, 0, other_epoch, 0, other_nodes)
        ),
        Rejection::RangeAlreadyExists {
            range: key(stream, 0)
        }
    );
}

#[test]
fn a_recorded_end_never_changes_and_a_repeated_seal_changes_nothing() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    let sealed = ok(&mut state, seal_range(stream, 0, 1, 10));
    let before = state.clone();
    assert_eq!(ok(&mut state, seal_range(stream, 0, 1, 10)), sealed);
    assert_eq!(state, before, "revision included");
    assert_eq!(
        rejected(&mut state, seal_range(stream, 0, 1, 11)),
        Rejection::RangeSealed { end: Offset(10) }
    );
    assert_eq!(
        rejected(&mut state, seal_range(stream, 0, 1, 9)),
        Rejection::RangeSealed { end: Offset(10) }
    );
    // A newer writer that finds the range sealed adopts the recorded end.
    ok(&mut state, raise_epoch(stream, 2));
    assert_eq!(
        rejected(&mut state, seal_range(stream, 0, 2, 12)),
        Rejection::RangeSealed { end: Offset(10) }
    );
}

#[test]
fn seal_range_needs_an_existing_range_and_an_end_not_below_its_start() {
    let (mut state, stream, nodes) = cluster();
    assert_eq!(
        rejected(&mut state, seal_range(stream, 0, 1, 10)),
        Rejection::RangeNotFound {
            range: key(stream, 0)
        }
    );
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    ok(&mut state, seal_range(stream, 0, 1, 10));
    ok(&mut state, create_range(stream, 1, 1, 10, &nodes));
    assert!(matches!(
        rejected(&mut state, seal_range(stream, 1, 1, 9)),
        Rejection::InvalidArgument(message) if message.contains("must end within 10..=")
    ));
    assert!(matches!(
        rejected(&mut state, seal_range(stream, 1, 1, u64::MAX)),
        Rejection::InvalidArgument(_)
    ));
    ok(&mut state, seal_range(stream, 1, 1, 10)); // an empty range is fine
}

#[test]
fn trim_moves_the_start_forward_and_drops_whole_ranges_below_it() {
    let (mut state, stream, nodes) = cluster();
    for (index, (start, end)) in [(0, 10), (10, 20), (20, 30)].into_iter().enumerate() {
        ok(
            &mut state,
            create_range(stream, index as u32, 1, start, &nodes),
        );
        ok(&mut state, seal_range(stream, index as u32, 1, end));
    }
    ok(&mut state, create_range(stream, 3, 1, 30, &nodes));
    // Trim needs no epoch; a range that ends exactly at the trim point is dropped, one that
    // straddles it is kept whole.
    let Outcome::StreamTrimmed {
        stream: record,
        dropped,
    } = ok(
        &mut state,
        Command::TrimStream {
            stream,
            offset: Offset(20),
        },
    )
    else {
        panic!("expected StreamTrimmed");
    };
    assert_eq!(record.start_offset, Offset(20));
    let dropped_keys: Vec<RangeKey> = dropped.iter().map(|range| range.key).collect();
    assert_eq!(dropped_keys, vec![key(stream, 0), key(stream, 1)]);
    assert_eq!(
        dropped[0].nodes, nodes,
        "the daemon needs the nodes to delete from"
    );
    assert_eq!(state.range(key(stream, 0)), None);
    let kept: Vec<u32> = state
        .ranges_of(stream)
        .map(|range| range.key.range_index.0)
        .collect();
    assert_eq!(kept, vec![2, 3]);
    // Lower is a no-op.
    let revision = state.revision();
    let Outcome::StreamTrimmed {
        stream: record,
        dropped,
    } = ok(
        &mut state,
        Command::TrimStream {
            stream,
            offset: Offset(5),
        },
    )
    else {
        panic!("expected StreamTrimmed");
    };
    assert_eq!((record.start_offset, dropped.len()), (Offset(20), 0));
    assert_eq!(state.revision(), revision);
    // The open range is never dropped, whatever the offset.
    ok(
        &mut state,
        Command::TrimStream {
            stream,
            offset: Offset(1000),
        },
    );
    let kept: Vec<u32> = state
        .ranges_of(stream)
        .map(|range| range.key.range_index.0)
        .collect();
    assert_eq!(kept, vec![3]);
}

#[test]
fn trim_may_not_pass_the_end_of_a_stream_whose_last_range_is_sealed() {
    let (mut state, stream, nodes) = cluster();
    assert_eq!(
        rejected(
            &mut state,
            Command::TrimStream {
                stream,
                offset: Offset(1)
            }
        ),
        Rejection::TrimPastEnd { end: Offset(0) }
    );
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    ok(&mut state, seal_range(stream, 0, 1, 10));
    assert_eq!(
        rejected(
            &mut state,
            Command::TrimStream {
                stream,
                offset: Offset(11)
            }
        ),
        Rejection::TrimPastEnd { end: Offset(10) }
    );
    ok(
        &mut state,
        Command::TrimStream {
            stream,
            offset: Offset(10),
        },
    );
    // Everything was trimmed; the next range still follows on from the dropped one.
    assert_eq!(state.ranges_of(stream).count(), 0);
    ok(&mut state, create_range(stream, 1, 1, 10, &nodes));
}

#[test]
fn delete_needs_no_epoch_then_purge_removes_the_stream_and_its_ranges() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    ok(&mut state, seal_range(stream, 0, 1, 10));
    ok(&mut state, create_range(stream, 1, 1, 10, &nodes));
    assert_eq!(
        rejected(&mut state, Command::PurgeStream { stream }),
        Rejection::StreamNotDeleted { stream }
    );
    let deleted = ok(&mut state, Command::DeleteStream { stream });
    let Outcome::StreamDeleted {
        stream: record,
        ranges,
    } = &deleted
    else {
        panic!("expected StreamDeleted");
    };
    assert!(record.deleted);
    assert_eq!(ranges.len(), 2);
    // A repeat answers the same ranges (the daemon may retry) and changes nothing.
    let revision = state.revision();
    assert_eq!(ok(&mut state, Command::DeleteStream { stream }), deleted);
    assert_eq!(state.revision(), revision);
    // Nothing but delete and purge applies to a deleted stream.
    for command in [
        raise_epoch(stream, 2),
        seal_range(stream, 1, 1, 20),
        create_range(stream, 2, 1, 20, &nodes),
        Command::TrimStream {
            stream,
            offset: Offset(0),
        },
    ] {
        assert_eq!(
            rejected(&mut state, command),
            Rejection::StreamDeleted { stream }
        );
    }
    let Outcome::StreamPurged { ranges, .. } = ok(&mut state, Command::PurgeStream { stream })
    else {
        panic!("expected StreamPurged");
    };
    assert_eq!(ranges.len(), 2);
    assert_eq!(state.stream(stream), None);
    assert_eq!(state.ranges_of(stream).count(), 0);
    assert_eq!(
        rejected(&mut state, Command::PurgeStream { stream }),
        Rejection::StreamNotFound { stream }
    );
}

#[test]
fn revision_counts_commands_that_changed_the_state() {
    let (mut state, stream, nodes) = cluster();
    assert_eq!(state.revision(), 5, "three nodes, a stream, an epoch");
    rejected(&mut state, raise_epoch(stream, 1));
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    assert_eq!(state.revision(), 6);
}

#[test]
fn list_streams_pages_in_id_order() {
    let mut state = PmState::new();
    for _ in 0..5 {
        create_stream(&mut state, 1, 1);
    }
    let page: Vec<StreamId> = state
        .list_streams(StreamId(2), 2)
        .iter()
        .map(|stream| stream.id)
        .collect();
    assert_eq!(page, vec![StreamId(2), StreamId(3)]);
    assert_eq!(state.list_streams(StreamId(5), 10).len(), 1);
    assert!(state.list_streams(StreamId(6), 10).is_empty());
}

#[test]
fn every_command_round_trips_through_its_encoding() {
    let commands = [
        Command::RegisterNode {
            address: "node-1:9000".to_string(),
            now_ms: 7,
        },
        Command::SetNodeState {
            node: NodeId(3),
            state: NodeState::ReadOnly,
        },
        Command::CreateStream {
            replica_count: 3,
            ack_count: 2,
            retention_ms: 1,
            retention_bytes: 2,
            now_ms: 3,
        },
        raise_epoch(StreamId(4), 9),
        Command::TrimStream {
            stream: StreamId(1),
            offset: Offset(77),
        },
        Command::DeleteStream {
            stream: StreamId(1),
        },
        Command::PurgeStream {
            stream: StreamId(1),
        },
        create_range(StreamId(1), 2, 3, 4, &[NodeId(1), NodeId(2)]),
        seal_range(StreamId(1), 2, 3, 4),
    ];
    for command in commands {
        let bytes = command.encode();
        assert_eq!(bytes[0], COMMAND_FORMAT_VERSION);
        assert_eq!(Command::decode(&bytes), Ok(command));
    }
}

#[test]
fn malformed_commands_are_typed_errors() {
    let bytes = Command::DeleteStream {
        stream: StreamId(1),
    }
    .encode();
    assert!(matches!(
        Command::decode(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Truncated { .. })
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        Command::decode(&trailing),
        Err(DecodeError::TrailingBytes { count: 1 })
    );
    let mut version = bytes.clone();
    version[0] = 2;
    assert_eq!(
        Command::decode(&version),
        Err(DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
    let mut tag = bytes;
    tag[1] = 200;
    assert_eq!(
        Command::decode(&tag),
        Err(DecodeError::UnknownCommand { tag: 200 })
    );
    assert!(Command::decode(&[]).is_err());
    // A node count claiming more entries than there are bytes does not allocate them.
    let mut huge = vec![COMMAND_FORMAT_VERSION, 8];
    huge.extend_from_slice(&[0; 8 + 4 + 8 + 8]);
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Command::decode(&huge),
        Err(DecodeError::Truncated { field: "nodes", .. })
    ));
}

#[test]
fn a_snapshot_round_trips_with_revision_and_counters() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    ok(&mut state, seal_range(stream, 0, 1, 10));
    ok(&mut state, create_range(stream, 1, 1, 10, &nodes[..2]));
    let deleted = create_stream(&mut state, 1, 1);
    ok(&mut state, Command::DeleteStream { stream: deleted });
    let decoded = PmState::decode_snapshot(&state.encode_snapshot()).unwrap();
    assert_eq!(decoded, state);
    assert_eq!(decoded.revision(), state.revision());
    assert_eq!(decoded.next_stream_id(), StreamId(3));
    assert_eq!(decoded.next_node_id(), NodeId(4));
    let empty = PmState::new();
    assert_eq!(
        PmState::decode_snapshot(&empty.encode_snapshot()),
        Ok(empty)
    );
}

#[test]
fn a_corrupt_or_inconsistent_snapshot_is_refused() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    let bytes = state.encode_snapshot();
    assert_eq!(
        PmState::decode_snapshot(b"nope"),
        Err(DecodeError::NotASnapshot)
    );
    assert!(matches!(
        PmState::decode_snapshot(&bytes[..bytes.len() - 3]),
        Err(DecodeError::Truncated { .. })
    ));
    // The next node id (bytes 21..25) below the registered nodes breaks an invariant.
    let mut inconsistent = bytes;
    inconsistent[21..25].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        PmState::decode_snapshot(&inconsistent),
        Err(DecodeError::Inconsistent(_))
    ));
}

#[test]
fn retention_trims_whole_sealed_ranges_by_time_and_by_size() {
    let (mut state, stream, nodes) = cluster();
    // Three sealed ranges of 1000, 2000 and 3000 bytes, sealed at 100, 200 and 300 ms, and an
    // open one.
    for (index, end) in [10u64, 20, 30].into_iter().enumerate() {
        let index = index as u32;
        ok(&mut state, create_range(stream, index, 1, end - 10, &nodes));
        ok(
            &mut state,
            Command::SealRange {
                stream,
                index: RangeIndex(index),
                epoch: Epoch(1),
                end: Offset(end),
                size_bytes: Some(u64::from(index + 1) * 1000),
                now_ms: u64::from(index + 1) * 100,
            },
        );
    }
    ok(&mut state, create_range(stream, 3, 1, 30, &nodes));
    assert_eq!(
        state.retention_trim_point(stream, u64::MAX),
        None,
        "0 keeps everything"
    );
    let retain = |retention_ms, retention_bytes| Command::UpdateStream {
        stream,
        replica_count: None,
        ack_count: None,
        retention_ms: Some(retention_ms),
        retention_bytes: Some(retention_bytes),
        epoch: None,
    };
    ok(&mut state, retain(50, 0));
    assert_eq!(state.retention_trim_point(stream, 149), None);
    assert_eq!(state.retention_trim_point(stream, 250), Some(Offset(20)));
    assert_eq!(
        state.retention_trim_point(stream, 10_000),
        Some(Offset(30)),
        "the open range never expires"
    );
    // By size: the newest ranges holding 5000 bytes are kept, the oldest (1000) goes.
    ok(&mut state, retain(0, 5000));
    assert_eq!(state.retention_trim_point(stream, 0), Some(Offset(10)));
    ok(&mut state, retain(0, 3000));
    assert_eq!(state.retention_trim_point(stream, 0), Some(Offset(20)));
    ok(&mut state, retain(0, 6001));
    assert_eq!(state.retention_trim_point(stream, 0), None);
    // The later of the two wins, and a trim already there is not repeated.
    ok(&mut state, retain(150, 5000));
    assert_eq!(state.retention_trim_point(stream, 350), Some(Offset(20)));
    ok(
        &mut state,
        Command::TrimStream {
            stream,
            offset: Offset(20),
        },
    );
    assert_eq!(state.retention_trim_point(stream, 350), None);
}

#[test]
fn a_scratch_copy_decides_create_range_as_the_whole_state_does() {
    let (mut state, stream, nodes) = cluster();
    // Five sealed ranges, so the scratch copy leaves most of them out.
    for index in 0..5u32 {
        let start = u64::from(index) * 10;
        ok(&mut state, create_range(stream, index, 1, start, &nodes));
        ok(&mut state, seal_range(stream, index, 1, start + 10));
    }
    let candidates = [
        create_range(stream, 5, 1, 50, &nodes), // the next one: accepted
        create_range(stream, 5, 1, 40, &nodes), // wrong start
        create_range(stream, 6, 1, 50, &nodes), // wrong index
        create_range(stream, 2, 1, 20, &nodes), // an existing one, identical: idempotent
        create_range(stream, 2, 1, 20, &nodes[..2]), // an existing one, other nodes
        create_range(stream, 5, 0, 50, &nodes), // stale epoch
        create_range(stream, 5, 2, 50, &nodes), // future epoch
    ];
    for command in candidates {
        let Command::CreateRange { index, .. } = &command else {
            unreachable!()
        };
        let mut whole = state.clone();
        let mut scratch = state.scratch_for(stream, *index);
        assert_eq!(
            scratch.apply(&command),
            whole.apply(&command),
            "{command:?} decided differently on the scratch copy"
        );
    }
    // With the last range open, both refuse another.
    ok(&mut state, create_range(stream, 5, 1, 50, &nodes));
    let next = create_range(stream, 6, 1, 60, &nodes);
    assert_eq!(
        state.scratch_for(stream, RangeIndex(6)).apply(&next),
        state.clone().apply(&next)
    );
}

#[test]
fn the_next_range_index_survives_trimming_every_range_away() {
    let (mut state, stream, nodes) = cluster();
    ok(&mut state, create_range(stream, 0, 1, 0, &nodes));
    ok(&mut state, seal_range(stream, 0, 1, 10));
    ok(&mut state, create_range(stream, 1, 1, 10, &nodes));
    ok(&mut state, seal_range(stream, 1, 1, 20));
    ok(
        &mut state,
        Command::TrimStream {
            stream,
            offset: Offset(20),
        },
    );
    assert_eq!(
        state.ranges_of(stream).count(),
        0,
        "every range trimmed away"
    );
    // A writer that sees no range tries index 0; the answer names the index to use.
    let rejection = rejected(&mut state, create_range(stream, 0, 1, 20, &nodes));
    assert!(
        matches!(
            rejection,
            Rejection::RangeIndexNotNext { expected, found, .. }
                if expected == RangeIndex(2) && found == RangeIndex(0)
        ),
        "{rejection:?}"
    );
    let reply = crate::service::rejection_reply(&rejection);
    let wire::Response::Error(error) = *reply.response else {
        panic!("an error reply");
    };
    assert_eq!(
        (error.code, error.detail),
        (wire::ErrorCode::InvalidArgument, 2),
        "INVALID_ARGUMENT names the next index in detail"
    );
    ok(&mut state, create_range(stream, 2, 1, 20, &nodes));
}
