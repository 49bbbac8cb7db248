//! HEARTBEAT (`0x0003`): a data node tells the placement manager it is alive, what it accepts
//! (its [`NodeState`]) and its load. The answer says how often to heartbeat and after what
//! silence the node is considered dead.

use bytes::BufMut;

use crate::codec::{put_string, EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{Message, MessageKind};
use crate::types::{NodeId, NodeState, MAX_ADDRESS_BYTES};

/// HEARTBEAT request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The sender's id.
    pub node_id: NodeId,
    /// Ranges held by the node.
    pub range_count: u32,
    /// Free bytes in the node's data directory.
    pub disk_free_bytes: u64,
    /// Size of the data directory's file system.
    pub disk_total_bytes: u64,
    /// Append load over the last interval.
    pub append_bytes_per_second: u64,
    /// What the node accepts; [`NodeState::Offline`] is sent once, when a clean shutdown begins.
    pub state: NodeState,
    /// `host:port` the node serves clients on.
    pub address: String,
}

impl Message for HeartbeatRequest {
    const OPCODE: Opcode = Opcode::Heartbeat;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        34 + 2 + self.address.len()
    }

    fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("address", self.address.len(), MAX_ADDRESS_BYTES)
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32_le(self.node_id.0);
        buf.put_u32_le(self.range_count);
        buf.put_u64_le(self.disk_free_bytes);
        buf.put_u64_le(self.disk_total_bytes);
        buf.put_u64_le(self.append_bytes_per_second);
        buf.put_u8(self.state as u8);
        buf.put_u8(0);
        put_string(buf, &self.address);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let node_id = NodeId(reader.u32("node_id")?);
        let range_count = reader.u32("range_count")?;
        let disk_free_bytes = reader.u64("disk_free_bytes")?;
        let disk_total_bytes = reader.u64("disk_total_bytes")?;
        let append_bytes_per_second = reader.u64("append_bytes_per_second")?;
        let state = NodeState::from_u8(reader.u8("state")?)
            .ok_or_else(|| reader.malformed("state", "unknown node state"))?;
        reader.reserved_u8("reserved")?;
        let address = reader.string("address", MAX_ADDRESS_BYTES)?;
        let message = HeartbeatRequest {
            node_id,
            range_count,
            disk_free_bytes,
            disk_total_bytes,
            append_bytes_per_second,
            state,
            address,
        };
        reader.finish()?;
        Ok(message)
    }
}

/// HEARTBEAT response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// How often the placement manager wants heartbeats.
    pub heartbeat_interval_ms: u32,
    /// Silence after which the placement manager considers the node dead.
    pub session_timeout_ms: u32,
}

impl Message for HeartbeatResponse {
    const OPCODE: Opcode = Opcode::Heartbeat;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        8
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32_le(self.heartbeat_interval_ms);
        buf.put_u32_le(self.session_timeout_ms);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let message = HeartbeatResponse {
            heartbeat_interval_ms: reader.u32("heartbeat_interval_ms")?,
            session_timeout_ms: reader.u32("session_timeout_ms")?,
        };
        reader.finish()?;
        Ok(message)
    }
}
