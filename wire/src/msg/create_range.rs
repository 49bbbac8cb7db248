//! CREATE_RANGE (`0x0201`): to the placement manager, record a new range of a stream (it chooses
//! the replicas when none are given, and takes R and A from the stream); to a data node, create
//! the local replica (idempotent on identical parameters). The answer is the range as created.

use bytes::BufMut;

use crate::codec::{EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{range_response, Message, MessageKind};
use crate::types::{
    decode_replicas, validate_replicas, Epoch, NodeId, Offset, RangeIndex, ReplicaNode, StreamId,
    MAX_REPLICAS,
};

/// CREATE_RANGE request header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateRangeRequest {
    /// The stream.
    pub stream_id: StreamId,
    /// The new range's index: the previous index + 1, or 0 for the first.
    pub range_index: RangeIndex,
    /// Writer epoch.
    pub epoch: Epoch,
    /// First offset: the previous range's end, or 0.
    pub start_offset: Offset,
    /// R of the range. 0 from a client to the placement manager (it takes the stream's); the
    /// placement manager fills it in when it creates the replica on a data node.
    pub replica_count_target: u8,
    /// A of the range, 0 or filled in like `replica_count_target`.
    pub ack_count: u8,
    /// Replicas, at most 16; empty asks the placement manager to choose.
    pub replicas: Vec<ReplicaNode>,
    /// Nodes the placement manager must not choose (the writer saw them fail), at most 16.
    /// Only meaningful to the placement manager when `replicas` is empty.
    pub exclude: Vec<NodeId>,
}

impl Message for CreateRangeRequest {
    const OPCODE: Opcode = Opcode::CreateRange;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        40 + self
            .replicas
            .iter()
            .map(ReplicaNode::encoded_len)
            .sum::<usize>()
            + 4 * self.exclude.len()
    }

    fn validate(&self) -> Result<(), EncodeError> {
        validate_replicas(&self.replicas)?;
        EncodeError::check_length("exclude", self.exclude.len(), MAX_REPLICAS)
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u64_le(self.stream_id.0);
        buf.put_u32_le(self.range_index.0);
        buf.put_u32_le(self.replicas.len() as u32);
        buf.put_u64_le(self.epoch.0);
        buf.put_u64_le(self.start_offset.0);
        buf.put_u8(self.replica_count_target);
        buf.put_u8(self.ack_count);
        buf.put_u16_le(0);
        buf.put_u32_le(self.exclude.len() as u32);
        for replica in &self.replicas {
            replica.encode(buf);
        }
        for node in &self.exclude {
            buf.put_u32_le(node.0);
        }
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let stream_id = StreamId(reader.u64("stream_id")?);
        let range_index = RangeIndex(reader.u32("range_index")?);
        let replica_count = reader.count_u32("replica_count", 6, MAX_REPLICAS)?;
        let epoch = Epoch(reader.u64("epoch")?);
        let start_offset = Offset(reader.u64("start_offset")?);
        let replica_count_target = reader.u8("replica_count_target")?;
        let ack_count = reader.u8("ack_count")?;
        reader.reserved_u16("reserved")?;
        let exclude_count = reader.count_u32("exclude_count", 4, MAX_REPLICAS)?;
        let replicas = decode_replicas(&mut reader, replica_count)?;
        let mut exclude = Vec::with_capacity(exclude_count);
        for _ in 0..exclude_count {
            exclude.push(NodeId(reader.u32("exclude")?));
        }
        reader.finish()?;
        Ok(CreateRangeRequest {
            stream_id,
            range_index,
            epoch,
            start_offset,
            replica_count_target,
            ack_count,
            replicas,
            exclude,
        })
    }
}

range_response!(CreateRangeResponse, CreateRange);
