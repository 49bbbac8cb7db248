//! Domain types shared by several messages: identifiers, and the Range and Stream records of
//! `docs/protocol.md` §5.1 (ARCHITECTURE.md §4).

use bytes::BufMut;

use crate::codec::{put_optional_u64, put_string, EncodeError, Reader};
use crate::error::DecodeError;

pub use ids::{Epoch, NodeId, Offset, RangeIndex, RangeKey, StreamId};

/// Longest `host:port` address accepted on the wire, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 255;
/// Most replicas a range may list.
pub const MAX_REPLICAS: usize = 16;

/// What a data node accepts, as it reports it in HEARTBEAT (`docs/protocol.md` §5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeState {
    /// Serves reads and accepts new ranges and appends.
    #[default]
    ReadWrite = 1,
    /// Serves reads only: no new ranges should be placed on it (e.g. its disk is full).
    ReadOnly = 2,
    /// Shutting down cleanly: sent once, when the shutdown begins.
    Offline = 3,
}

impl NodeState {
    /// Every state, in numeric order.
    pub const ALL: &'static [NodeState] = &[
        NodeState::ReadWrite,
        NodeState::ReadOnly,
        NodeState::Offline,
    ];

    /// The state for a number received on the wire, or `None` if unknown.
    pub fn from_u8(number: u8) -> Option<NodeState> {
        match number {
            1 => Some(NodeState::ReadWrite),
            2 => Some(NodeState::ReadOnly),
            3 => Some(NodeState::Offline),
            _ => None,
        }
    }

    /// The name used in `docs/protocol.md`, e.g. `"READ_WRITE"`.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::ReadWrite => "READ_WRITE",
            NodeState::ReadOnly => "READ_ONLY",
            NodeState::Offline => "OFFLINE",
        }
    }
}

/// A data node holding a replica of a range, and where to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaNode {
    /// The node's id.
    pub node_id: NodeId,
    /// `host:port` the node serves clients on, at most [`MAX_ADDRESS_BYTES`].
    pub address: String,
}

impl ReplicaNode {
    pub(crate) fn encoded_len(&self) -> usize {
        4 + 2 + self.address.len()
    }

    pub(crate) fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("address", self.address.len(), MAX_ADDRESS_BYTES)
    }

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32_le(self.node_id.0);
        put_string(buf, &self.address);
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<ReplicaNode, DecodeError> {
        let node_id = NodeId(reader.u32("node_id")?);
        let address = reader.string("address", MAX_ADDRESS_BYTES)?;
        Ok(ReplicaNode { node_id, address })
    }
}

/// A range of a stream: offsets `[start_offset, end_offset)` on a set of replicas
/// (`docs/protocol.md` §5.1, "Range record").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// The stream the range belongs to.
    pub stream_id: StreamId,
    /// Position of the range in the stream.
    pub index: RangeIndex,
    /// Writer epoch the range was created (or last sealed) with.
    pub epoch: Epoch,
    /// First offset of the range.
    pub start_offset: Offset,
    /// One past the last offset; `None` while the range is open. `Some` means sealed.
    pub end_offset: Option<Offset>,
    /// Next offset the answering replica expects; `None` when unknown (placement manager).
    pub next_offset: Option<Offset>,
    /// Highest offset the writer reported as acknowledged; `None` when unknown.
    pub confirmed_offset: Option<Offset>,
    /// R the range was created with: replicas it should have (not the length of `replicas`,
    /// which lists the nodes known to hold it). 0 when unknown.
    pub replica_count_target: u8,
    /// A the range was created with: replicas that make a batch durable before it is
    /// acknowledged. 0 when unknown.
    pub ack_count: u8,
    /// Fewer than `replica_count_target` replicas hold the range (set by the placement manager).
    pub under_replicated: bool,
    /// Bytes of record batches the answering holder keeps for the range; `None` when unknown.
    pub size_bytes: Option<u64>,
    /// Replica nodes, at most [`MAX_REPLICAS`].
    pub replicas: Vec<ReplicaNode>,
}

impl Range {
    /// Fixed part of the encoding, before the replicas.
    pub const FIXED_BYTES: usize = 72;
    const FLAG_UNDER_REPLICATED: u8 = 0x01;

    /// Whether the range is sealed (its end is known).
    pub fn is_sealed(&self) -> bool {
        self.end_offset.is_some()
    }

    pub(crate) fn encoded_len(&self) -> usize {
        Self::FIXED_BYTES
            + self
                .replicas
                .iter()
                .map(ReplicaNode::encoded_len)
                .sum::<usize>()
    }

    pub(crate) fn validate(&self) -> Result<(), EncodeError> {
        validate_replicas(&self.replicas)
    }

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
        buf.put_u32_le(self.index.0);
        buf.put_u32_le(self.replicas.len() as u32);
        buf.put_u64_le(self.epoch.0);
        buf.put_u64_le(self.start_offset.0);
        put_optional_u64(buf, self.end_offset.map(|offset| offset.0));
        put_optional_u64(buf, self.next_offset.map(|offset| offset.0));
        put_optional_u64(buf, self.confirmed_offset.map(|offset| offset.0));
        buf.put_u8(self.replica_count_target);
        buf.put_u8(self.ack_count);
        buf.put_u8(if self.under_replicated {
            Self::FLAG_UNDER_REPLICATED
        } else {
            0
        });
        buf.put_u8(0);
        buf.put_u32_le(0);
        put_optional_u64(buf, self.size_bytes);
        for replica in &self.replicas {
            replica.encode(buf);
        }
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Range, DecodeError> {
        let stream_id = StreamId(reader.u64("stream_id")?);
        let index = RangeIndex(reader.u32("index")?);
        let replica_count = reader.count_u32("replica_count", 6, MAX_REPLICAS)?;
        let epoch = Epoch(reader.u64("epoch")?);
        let start_offset = Offset(reader.u64("start_offset")?);
        let end_offset = reader.optional_u64("end_offset")?.map(Offset);
        let next_offset = reader.optional_u64("next_offset")?.map(Offset);
        let confirmed_offset = reader.optional_u64("confirmed_offset")?.map(Offset);
        let replica_count_target = reader.u8("replica_count_target")?;
        let ack_count = reader.u8("ack_count")?;
        let flags = reader.u8("flags")?;
        if flags & !Self::FLAG_UNDER_REPLICATED != 0 {
            return Err(reader.malformed("flags", "reserved bit set"));
        }
        reader.reserved_u8("reserved")?;
        reader.reserved_u32("reserved")?;
        let size_bytes = reader.optional_u64("size_bytes")?;
        let replicas = decode_replicas(reader, replica_count)?;
        Ok(Range {
            stream_id,
            index,
            epoch,
            start_offset,
            end_offset,
            next_offset,
            confirmed_offset,
            replica_count_target,
            ack_count,
            under_replicated: flags & Self::FLAG_UNDER_REPLICATED != 0,
            size_bytes,
            replicas,
        })
    }
}

pub(crate) fn validate_replicas(replicas: &[ReplicaNode]) -> Result<(), EncodeError> {
    EncodeError::check_length("replicas", replicas.len(), MAX_REPLICAS)?;
    replicas.iter().try_for_each(ReplicaNode::validate)
}

pub(crate) fn decode_replicas(
    reader: &mut Reader<'_>,
    count: usize,
) -> Result<Vec<ReplicaNode>, DecodeError> {
    // `count` was checked against MAX_REPLICAS and the remaining bytes before this allocation.
    let mut replicas = Vec::with_capacity(count);
    for _ in 0..count {
        replicas.push(ReplicaNode::decode(reader)?);
    }
    Ok(replicas)
}

/// A stream's metadata as kept by the placement manager (`docs/protocol.md` §5.1,
/// "Stream record").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    /// The stream's id.
    pub id: StreamId,
    /// R: replicas per range, 1..=16.
    pub replica_count: u8,
    /// A: replicas that must make a batch durable before it is acknowledged, 1 ≤ A ≤ R.
    pub ack_count: u8,
    /// Data older than this may be trimmed; 0 keeps data forever.
    pub retention_ms: u64,
    /// The oldest data may be trimmed while the stream holds more than this; 0 = unlimited.
    pub retention_bytes: u64,
    /// Trim point: offsets below it are gone.
    pub start_offset: Offset,
    /// Current writer epoch.
    pub epoch: Epoch,
    /// Whether the stream is deleted.
    pub deleted: bool,
}

impl Stream {
    /// Bytes of the encoding.
    pub const ENCODED_BYTES: usize = 48;
    const FLAG_DELETED: u8 = 0x01;

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.id.0);
        buf.put_u8(self.replica_count);
        buf.put_u8(self.ack_count);
        buf.put_u8(if self.deleted { Self::FLAG_DELETED } else { 0 });
        buf.put_u8(0);
        buf.put_u32_le(0);
        buf.put_u64_le(self.retention_ms);
        buf.put_u64_le(self.retention_bytes);
        buf.put_u64_le(self.start_offset.0);
        buf.put_u64_le(self.epoch.0);
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Stream, DecodeError> {
        let id = StreamId(reader.u64("stream_id")?);
        let replica_count = reader.u8("replica_count")?;
        let ack_count = reader.u8("ack_count")?;
        let flags = reader.u8("flags")?;
        if flags & !Self::FLAG_DELETED != 0 {
            return Err(reader.malformed("flags", "reserved bit set"));
        }
        reader.reserved_u8("reserved")?;
        reader.reserved_u32("reserved")?;
        let retention_ms = reader.u64("retention_ms")?;
        let retention_bytes = reader.u64("retention_bytes")?;
        let start_offset = Offset(reader.u64("start_offset")?);
        let epoch = Epoch(reader.u64("epoch")?);
        Ok(Stream {
            id,
            replica_count,
            ack_count,
            retention_ms,
            retention_bytes,
            start_offset,
            epoch,
            deleted: flags & Self::FLAG_DELETED != 0,
        })
    }
}
