//! The commands of the PM's log, what applying one returns, and their byte encoding.
//!
//! A command is everything needed to apply it deterministically: the daemon reads the clock and
//! chooses placement *before* building it (`now_ms`, `nodes`), so replaying the log, on this
//! member or a raft follower, reaches the same state.
//!
//! Encoding: `[version: u8 = 1][tag: u8][fields]`, integers little endian, `Option<T>` as a
//! presence byte (0 or 1) then `T`, strings and node lists as a `u32` count then the items.

use ids::{Epoch, NodeId, Offset, RangeIndex, RangeKey, StreamId};

use crate::state::codec::{DecodeError, Reader, Writer};
use crate::state::{NodeRecord, NodeState, RangeRecord, StreamRecord};

/// The encoding version written in the first byte of every command.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// One change to the PM's state, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A data node asks for an id (ALLOCATE_ID). Always allocates a new one.
    RegisterNode {
        address: String,
        now_ms: u64,
    },
    /// The registered (administrative) state of a node: OFFLINE on clean shutdown, READ_ONLY by
    /// an operator. Liveness from heartbeats is not logged.
    SetNodeState {
        node: NodeId,
        state: NodeState,
    },
    CreateStream {
        replica_count: u8,
        ack_count: u8,
        retention_ms: u64,
        retention_bytes: u64,
        now_ms: u64,
    },
    /// `None` leaves a field as it is. R and A apply to ranges created afterwards.
    UpdateStream {
        stream: StreamId,
        replica_count: Option<u8>,
        ack_count: Option<u8>,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        epoch: Option<Epoch>,
    },
    /// Moves the stream's start forward and drops the sealed ranges that end at or below it.
    TrimStream {
        stream: StreamId,
        offset: Offset,
    },
    DeleteStream {
        stream: StreamId,
    },
    PurgeStream {
        stream: StreamId,
    },
    CreateRange {
        stream: StreamId,
        index: RangeIndex,
        epoch: Epoch,
        start: Offset,
        nodes: Vec<NodeId>,
        now_ms: u64,
    },
    SealRange {
        stream: StreamId,
        index: RangeIndex,
        epoch: Epoch,
        end: Offset,
        size_bytes: Option<u64>,
        now_ms: u64,
    },
}

/// A range the data nodes should delete: its key and the nodes holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    pub key: RangeKey,
    pub nodes: Vec<NodeId>,
}

impl DroppedRange {
    pub(crate) fn of(range: &RangeRecord) -> DroppedRange {
        DroppedRange {
            key: range.key,
            nodes: range.nodes.clone(),
        }
    }
}

/// What a successfully applied command produced; one variant per command. Records are the
/// state after the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    NodeRegistered(NodeRecord),
    NodeStateSet(NodeRecord),
    StreamCreated(StreamRecord),
    StreamUpdated(StreamRecord),
    /// `dropped`: ranges removed from the state; the data nodes should delete them.
    StreamTrimmed {
        stream: StreamRecord,
        dropped: Vec<DroppedRange>,
    },
    /// `ranges`: every range of the stream, kept in the state until PurgeStream; the data nodes
    /// should delete them.
    StreamDeleted {
        stream: StreamRecord,
        ranges: Vec<DroppedRange>,
    },
    /// The stream and these ranges are gone from the state.
    StreamPurged {
        stream: StreamId,
        ranges: Vec<DroppedRange>,
    },
    RangeCreated(RangeRecord),
    RangeSealed(RangeRecord),
}

mod tag {
    pub const REGISTER_NODE: u8 = 1;
    pub const SET_NODE_STATE: u8 = 2;
    pub const CREATE_STREAM: u8 = 3;
    pub const UPDATE_STREAM: u8 = 4;
    pub const TRIM_STREAM: u8 = 5;
    pub const DELETE_STREAM: u8 = 6;
    pub const PURGE_STREAM: u8 = 7;
    pub const CREATE_RANGE: u8 = 8;
    pub const SEAL_RANGE: u8 = 9;
}

impl Command {
    /// The command's log record. Every command encodes, and decodes back to itself.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.u8(COMMAND_FORMAT_VERSION);
        match self {
            Command::RegisterNode { address, now_ms } => {
                writer.u8(tag::REGISTER_NODE);
                writer.string(address);
                writer.u64(*now_ms);
            }
            Command::SetNodeState { node, state } => {
                writer.u8(tag::SET_NODE_STATE);
                writer.node(*node);
                writer.u8(state.to_byte());
            }
            Command::CreateStream {
                replica_count,
                ack_count,
                retention_ms,
                retention_bytes,
                now_ms,
            } => {
                writer.u8(tag::CREATE_STREAM);
                writer.u8(*replica_count);
                writer.u8(*ack_count);
                writer.u64(*retention_ms);
                writer.u64(*retention_bytes);
                writer.u64(*now_ms);
            }
            Command::UpdateStream {
                stream,
                replica_count,
                ack_count,
                retention_ms,
                retention_bytes,
                epoch,
            } => {
                writer.u8(tag::UPDATE_STREAM);
                writer.stream(*stream);
                writer.option_u8(*replica_count);
                writer.option_u8(*ack_count);
                writer.option_u64(*retention_ms);
                writer.option_u64(*retention_bytes);
                writer.option_u64(epoch.map(|epoch| epoch.0));
            }
            Command::TrimStream { stream, offset } => {
                writer.u8(tag::TRIM_STREAM);
                writer.stream(*stream);
                writer.offset(*offset);
            }
            Command::DeleteStream { stream } => {
                writer.u8(tag::DELETE_STREAM);
                writer.stream(*stream);
            }
            Command::PurgeStream { stream } => {
                writer.u8(tag::PURGE_STREAM);
                writer.stream(*stream);
            }
            Command::CreateRange {
                stream,
                index,
                epoch,
                start,
                nodes,
                now_ms,
            } => {
                writer.u8(tag::CREATE_RANGE);
                writer.stream(*stream);
                writer.u32(index.0);
                writer.epoch(*epoch);
                writer.offset(*start);
                writer.nodes(nodes);
                writer.u64(*now_ms);
            }
            Command::SealRange {
                stream,
                index,
                epoch,
                end,
                size_bytes,
                now_ms,
            } => {
                writer.u8(tag::SEAL_RANGE);
                writer.stream(*stream);
                writer.u32(index.0);
                writer.epoch(*epoch);
                writer.offset(*end);
                writer.option_u64(*size_bytes);
                writer.u64(*now_ms);
            }
        }
        writer.into_bytes()
    }

    /// Parses a log record written by [`Command::encode`]. Any other input is an error, never a
    /// panic; values are not validated here (that is `apply`'s job).
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8("version")?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: COMMAND_FORMAT_VERSION,
            });
        }
        let command = match reader.u8("tag")? {
            tag::REGISTER_NODE => Command::RegisterNode {
                address: reader.string("address")?,
                now_ms: reader.u64("now_ms")?,
            },
            tag::SET_NODE_STATE => Command::SetNodeState {
                node: reader.node("node")?,
                state: NodeState::from_byte(reader.u8("state")?)?,
            },
            tag::CREATE_STREAM => Command::CreateStream {
                replica_count: reader.u8("replica_count")?,
                ack_count: reader.u8("ack_count")?,
                retention_ms: reader.u64("retention_ms")?,
                retention_bytes: reader.u64("retention_bytes")?,
                now_ms: reader.u64("now_ms")?,
            },
            tag::UPDATE_STREAM => Command::UpdateStream {
                stream: reader.stream("stream")?,
                replica_count: reader.option_u8("replica_count")?,
                ack_count: reader.option_u8("ack_count")?,
                retention_ms: reader.option_u64("retention_ms")?,
                retention_bytes: reader.option_u64("retention_bytes")?,
                epoch: reader.option_u64("epoch")?.map(Epoch),
            },
            tag::TRIM_STREAM => Command::TrimStream {
                stream: reader.stream("stream")?,
                offset: reader.offset("offset")?,
            },
            tag::DELETE_STREAM => Command::DeleteStream {
                stream: reader.stream("stream")?,
            },
            tag::PURGE_STREAM => Command::PurgeStream {
                stream: reader.stream("stream")?,
            },
            tag::CREATE_RANGE => Command::CreateRange {
                stream: reader.stream("stream")?,
                index: RangeIndex(reader.u32("index")?),
                epoch: reader.epoch("epoch")?,
                start: reader.offset("start")?,
                nodes: reader.nodes("nodes")?,
                now_ms: reader.u64("now_ms")?,
            },
            tag::SEAL_RANGE => Command::SealRange {
                stream: reader.stream("stream")?,
                index: RangeIndex(reader.u32("index")?),
                epoch: reader.epoch("epoch")?,
                end: reader.offset("end")?,
                size_bytes: reader.option_u64("size_bytes")?,
                now_ms: reader.u64("now_ms")?,
            },
            other => return Err(DecodeError::UnknownCommand { tag: other }),
        };
        reader.finish()?;
        Ok(command)
    }
}
