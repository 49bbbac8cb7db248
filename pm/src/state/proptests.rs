//! Property tests: random command sequences keep every invariant, replaying the log gives the
//! same state, snapshots round-trip, and no bytes make a decoder panic.

use ids::{Epoch, NodeId, Offset, RangeIndex, StreamId};
use proptest::prelude::*;

use super::*;

/// A command chosen relative to the current state, so most of a sequence is accepted and the
/// rest hits each rejection: `pick`s choose among existing ids (or one past them), deltas move
/// an epoch, index or offset away from what the state expects.
#[derive(Debug, Clone)]
enum Step {
    Register,
    SetNodeState {
        node: u8,
        state: u8,
    },
    CreateStream {
        replica_count: u8,
        ack_count: u8,
    },
    Update {
        stream: u8,
        replica_count: Option<u8>,
        ack_count: Option<u8>,
        epoch_delta: Option<i8>,
    },
    Trim {
        stream: u8,
        offset_delta: i8,
    },
    Delete {
        stream: u8,
    },
    Purge {
        stream: u8,
    },
    CreateRange {
        stream: u8,
        index_delta: i8,
        epoch_delta: i8,
        start_delta: i8,
        nodes: NodePick,
    },
    Seal {
        stream: u8,
        index_delta: i8,
        epoch_delta: i8,
        length: u8,
    },
}

/// Mostly 0 (what the state expects), sometimes off by one either way.
fn delta() -> impl Strategy<Value = i8> {
    prop_oneof![14 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)]
}

/// The nodes of a CreateRange: `count_delta` away from the stream's R, distinct registered
/// nodes from a rotating start, the last swapped for an unregistered id when `unregistered`.
#[derive(Debug, Clone)]
struct NodePick {
    first: u8,
    count_delta: i8,
    unregistered: bool,
}

fn node_pick() -> impl Strategy<Value = NodePick> {
    (
        any::<u8>(),
        prop_oneof![10 => Just(0i8), 2 => Just(-1i8), 1 => Just(-2i8), 1 => Just(1i8)],
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(first, count_delta, unregistered)| NodePick {
            first,
            count_delta,
            unregistered,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Register),
        1 => (any::<u8>(), 0u8..3).prop_map(|(node, state)| Step::SetNodeState { node, state }),
        1 => (0u8..4, 0u8..4).prop_map(|(replica_count, ack_count)| Step::CreateStream {
            replica_count,
            ack_count
        }),
        3 => (
            any::<u8>(),
            proptest::option::weighted(0.2, 0u8..5),
            proptest::option::weighted(0.2, 0u8..5),
            proptest::option::weighted(0.8, -1i8..3),
        )
            .prop_map(|(stream, replica_count, ack_count, epoch_delta)| Step::Update {
                stream,
                replica_count,
                ack_count,
                epoch_delta
            }),
        2 => (any::<u8>(), -20i8..3).prop_map(|(stream, offset_delta)| Step::Trim {
            stream,
            offset_delta
        }),
        1 => any::<u8>().prop_map(|stream| Step::Delete { stream }),
        1 => any::<u8>().prop_map(|stream| Step::Purge { stream }),
        8 => (
            any::<u8>(),
            delta(),
            delta(),
            delta(),
            node_pick(),
        )
            .prop_map(|(stream, index_delta, epoch_delta, start_delta, nodes)| {
                Step::CreateRange {
                    stream,
                    index_delta,
                    epoch_delta,
                    start_delta,
                    nodes,
                }
            }),
        6 => (any::<u8>(), delta(), delta(), 0u8..20).prop_map(
            |(stream, index_delta, epoch_delta, length)| Step::Seal {
                stream,
                index_delta,
                epoch_delta,
                length
            }
        ),
    ]
}

fn shift(value: u64, delta: i8) -> u64 {
    value.saturating_add_signed(i64::from(delta))
}

/// Mostly a live stream; one pick in eight is any stream, deleted ones included, and one in
/// eight the next id, which does not exist yet.
fn pick_stream(state: &PmState, pick: u8) -> StreamId {
    let live: Vec<StreamId> = state
        .streams
        .values()
        .filter(|stream| !stream.deleted)
        .map(|stream| stream.id)
        .collect();
    let any: Vec<StreamId> = state.streams.keys().copied().collect();
    let choices = if pick % 8 == 6 || live.is_empty() {
        any
    } else {
        live
    };
    if pick % 8 == 7 || choices.is_empty() {
        return state.next_stream_id;
    }
    choices[usize::from(pick / 8) % choices.len()]
}

fn pick_nodes(state: &PmState, replica_count: u8, pick: &NodePick) -> Vec<NodeId> {
    let registered: Vec<NodeId> = state.nodes.keys().copied().collect();
    let count = i64::from(replica_count) + i64::from(pick.count_delta);
    let count = usize::try_from(count).unwrap_or(0).min(registered.len());
    let mut nodes: Vec<NodeId> = registered
        .iter()
        .cycle()
        .skip(usize::from(pick.first))
        .take(count)
        .copied()
        .collect();
    if pick.unregistered {
        if let Some(last) = nodes.last_mut() {
            *last = state.next_node_id;
        }
    }
    nodes
}

/// Mostly a registered node; one pick in eight is the next id, which is not registered.
fn pick_node(state: &PmState, pick: u8) -> NodeId {
    if pick % 8 == 7 || state.nodes.is_empty() {
        return state.next_node_id;
    }
    NodeId(1 + u32::from(pick / 8) % state.nodes.len() as u32)
}

/// Every sequence starts with four nodes and two streams (R = 3, A = 2 and R = A = 1), so
/// most steps have something to act on.
fn prelude() -> Vec<Command> {
    let mut commands: Vec<Command> = (0..4)
        .map(|number| Command::RegisterNode {
            address: format!("node-{number}:9000"),
            now_ms: 0,
        })
        .collect();
    for (replica_count, ack_count) in [(3, 2), (1, 1)] {
        commands.push(Command::CreateStream {
            replica_count,
            ack_count,
            retention_ms: 0,
            retention_bytes: 0,
            now_ms: 0,
        });
    }
    commands
}

/// Turns a step into a command against `state`.
fn command(state: &PmState, step: &Step, now_ms: u64) -> Command {
    let stream_of = |pick| pick_stream(state, pick);
    let epoch_of = |stream| state.stream(stream).map_or(Epoch(0), |record| record.epoch);
    match step {
        Step::Register => Command::RegisterNode {
            address: format!("10.0.0.{}:9000", state.next_node_id.0),
            now_ms,
        },
        Step::SetNodeState { node, state: kind } => Command::SetNodeState {
            node: pick_node(state, *node),
            state: NodeState::from_byte(*kind).expect("0..3"),
        },
        Step::CreateStream {
            replica_count,
            ack_count,
        } => Command::CreateStream {
            replica_count: *replica_count,
            ack_count: *ack_count,
            retention_ms: 0,
            retention_bytes: 0,
            now_ms,
        },
        Step::Update {
            stream,
            replica_count,
            ack_count,
            epoch_delta,
        } => {
            let stream = stream_of(*stream);
            Command::UpdateStream {
                stream,
                replica_count: *replica_count,
                ack_count: *ack_count,
                retention_ms: None,
                retention_bytes: None,
                epoch: epoch_delta.map(|delta| Epoch(shift(epoch_of(stream).0, delta))),
            }
        }
        Step::Trim {
            stream,
            offset_delta,
        } => {
            let stream = stream_of(*stream);
            let end = state
                .stream(stream)
                .map_or(0, |record| record.next_range_start.0);
            Command::TrimStream {
                stream,
                offset: Offset(shift(end, *offset_delta)),
            }
        }
        Step::Delete { stream } => Command::DeleteStream {
            stream: stream_of(*stream),
        },
        Step::Purge { stream } => Command::PurgeStream {
            stream: stream_of(*stream),
        },
        Step::CreateRange {
            stream,
            index_delta,
            epoch_delta,
            start_delta,
            nodes,
        } => {
            let stream = stream_of(*stream);
            let record = state.stream(stream);
            let index = record.map_or(0, |record| record.next_range_index.0);
            let start = record.map_or(0, |record| record.next_range_start.0);
            Command::CreateRange {
                stream,
                index: RangeIndex(shift(u64::from(index), *index_delta) as u32),
                epoch: Epoch(shift(epoch_of(stream).0, *epoch_delta)),
                start: Offset(shift(start, *start_delta)),
                nodes: pick_nodes(
                    state,
                    record.map_or(1, |record| record.replica_count),
                    nodes,
                ),
                now_ms,
            }
        }
        Step::Seal {
            stream,
            index_delta,
            epoch_delta,
            length,
        } => {
            let stream = stream_of(*stream);
            let last = state.ranges_of(stream).next_back();
            let index = last.map_or(0, |range| range.key.range_index.0);
            let start = last.map_or(0, |range| range.start.0);
            Command::SealRange {
                stream,
                index: RangeIndex(shift(u64::from(index), *index_delta) as u32),
                epoch: Epoch(shift(epoch_of(stream).0, *epoch_delta)),
                end: Offset(start + u64::from(*length)),
                size_bytes: Some(u64::from(*length) * 1000),
                now_ms,
            }
        }
    }
}

/// What must hold between consecutive states: epochs and recorded ends never move back.
fn check_step(before: &PmState, after: &PmState) -> Result<(), TestCaseError> {
    for (id, stream) in &after.streams {
        if let Some(old) = before.streams.get(id) {
            prop_assert!(stream.epoch >= old.epoch, "stream {id}'s epoch went back");
            prop_assert!(
                stream.start_offset >= old.start_offset,
                "stream {id}'s start went back"
            );
        }
    }
    for (key, range) in &after.ranges {
        if let Some(old) = before.ranges.get(key) {
            prop_assert!(range.epoch >= old.epoch, "range {key}'s epoch went back");
            if old.end.is_some() {
                prop_assert_eq!(range, old, "sealed range {} changed", key);
            }
        }
    }
    Ok(())
}

fn replay(log: &[Vec<u8>]) -> PmState {
    let mut state = PmState::new();
    for record in log {
        let command = Command::decode(record).expect("a logged command decodes");
        state
            .apply(&command)
            .expect("a logged command applies again");
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_command_sequences_keep_every_invariant(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        let mut state = PmState::new();
        let mut log: Vec<Vec<u8>> = Vec::new();
        let mut every_command: Vec<Command> = Vec::new();
        let mut changes = 0u64;
        let commands = prelude().into_iter().map(Ok).chain(steps.iter().map(Err));
        let mut number = 0u64;
        for next in commands {
            number += 1;
            let command = match next {
                Ok(command) => command,
                Err(step) => command(&state, step, number),
            };
            let before = state.clone();
            every_command.push(command.clone());
            match state.apply(&command) {
                Ok(_) => {
                    let mut unrevised = state.clone();
                    unrevised.revision = before.revision;
                    if unrevised != before {
                        changes += 1;
                    }
                    let record = command.encode();
                    prop_assert_eq!(&Command::decode(&record).unwrap(), &command);
                    log.push(record);
                }
                Err(_) => prop_assert_eq!(&state, &before, "a rejection changed the state"),
            }
            prop_assert_eq!(state.revision(), changes, "revision counts the changes");
            if let Err(broken) = state.check_invariants() {
                return Err(TestCaseError::fail(format!("after {command:?}: {broken}")));
            }
            check_step(&before, &state)?;
            prop_assert_eq!(&replay(&log), &state, "replaying the log gives the same state");
            prop_assert_eq!(
                &PmState::decode_snapshot(&state.encode_snapshot()).unwrap(),
                &state
            );
        }
        // A log that also holds the rejected commands (logged before they were applied)
        // replays to the same state: a rejection is as deterministic as a success.
        let mut again = PmState::new();
        for command in &every_command {
            let _ = again.apply(command);
        }
        prop_assert_eq!(&again, &state);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Command::decode(&bytes);
        let _ = PmState::decode_snapshot(&bytes);
        let mut with_version = vec![COMMAND_FORMAT_VERSION];
        with_version.extend_from_slice(&bytes);
        let _ = Command::decode(&with_version);
        let mut with_magic = b"EPMS\x01".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = PmState::decode_snapshot(&with_magic);
    }

    #[test]
    fn any_command_round_trips(command in any_command()) {
        prop_assert_eq!(Command::decode(&command.encode()), Ok(command));
    }

    #[test]
    fn a_damaged_snapshot_never_panics(
        steps in proptest::collection::vec(step(), 1..40),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let mut state = PmState::new();
        for command in prelude() {
            state.apply(&command).expect("the prelude applies");
        }
        for (number, step) in steps.iter().enumerate() {
            let _ = state.apply(&command(&state, step, number as u64));
        }
        let mut bytes = state.encode_snapshot();
        for (position, value) in flips {
            let position = position % bytes.len();
            bytes[position] ^= value;
        }
        let _ = PmState::decode_snapshot(&bytes);
        let _ = PmState::decode_snapshot(&bytes[..cut % (bytes.len() + 1)]);
    }
}

fn any_command() -> impl Strategy<Value = Command> {
    let node_state = (0u8..3).prop_map(|byte| NodeState::from_byte(byte).expect("0..3"));
    let nodes = proptest::collection::vec(any::<u32>().prop_map(NodeId), 0..20);
    prop_oneof![
        (".{0,40}", any::<u64>())
            .prop_map(|(address, now_ms)| Command::RegisterNode { address, now_ms }),
        (any::<u32>(), node_state).prop_map(|(node, state)| Command::SetNodeState {
            node: NodeId(node),
            state
        }),
        (
            any::<u8>(),
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(replica_count, ack_count, retention_ms, retention_bytes, now_ms)| {
                    Command::CreateStream {
                        replica_count,
                        ack_count,
                        retention_ms,
                        retention_bytes,
                        now_ms,
                    }
                }
            ),
        (
            any::<u64>(),
            any::<Option<u8>>(),
            any::<Option<u8>>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        )
            .prop_map(
                |(stream, replica_count, ack_count, retention_ms, retention_bytes, epoch)| {
                    Command::UpdateStream {
                        stream: StreamId(stream),
                        replica_count,
                        ack_count,
                        retention_ms,
                        retention_bytes,
                        epoch: epoch.map(Epoch),
                    }
                }
            ),
        (any::<u64>(), any::<u64>()).prop_map(|(stream, offset)| Command::TrimStream {
            stream: StreamId(stream),
            offset: Offset(offset)
        }),
        any::<u64>().prop_map(|stream| Command::DeleteStream {
            stream: StreamId(stream)
        }),
        any::<u64>().prop_map(|stream| Command::PurgeStream {
            stream: StreamId(stream)
        }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            nodes,
            any::<u64>()
        )
            .prop_map(|(stream, index, epoch, start, nodes, now_ms)| {
                Command::CreateRange {
                    stream: StreamId(stream),
                    index: RangeIndex(index),
                    epoch: Epoch(epoch),
                    start: Offset(start),
                    nodes,
                    now_ms,
                }
            }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<Option<u64>>(),
            any::<u64>()
        )
            .prop_map(|(stream, index, epoch, end, size_bytes, now_ms)| {
                Command::SealRange {
                    stream: StreamId(stream),
                    index: RangeIndex(index),
                    epoch: Epoch(epoch),
                    end: Offset(end),
                    size_bytes,
                    now_ms,
                }
            }),
    ]
}
