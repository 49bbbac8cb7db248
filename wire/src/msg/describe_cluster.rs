//! DESCRIBE_CLUSTER (`0x0006`): the data nodes the placement manager knows, with their reported
//! state, whether they are alive, and their last reported load.

use bytes::BufMut;

use crate::codec::{put_string, EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{empty_message, Message, MessageKind};
use crate::types::{NodeId, NodeState, MAX_ADDRESS_BYTES};

/// Most nodes in one answer.
pub const MAX_CLUSTER_NODES: usize = 65_536;

/// DESCRIBE_CLUSTER request: empty header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescribeClusterRequest {}

empty_message!(DescribeClusterRequest, DescribeCluster, Request, false);

/// One data node as the placement manager sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's id.
    pub node_id: NodeId,
    /// Ranges held, from the last heartbeat.
    pub range_count: u32,
    /// Free disk bytes, from the last heartbeat.
    pub disk_free_bytes: u64,
    /// File system size, from the last heartbeat.
    pub disk_total_bytes: u64,
    /// Time since the last heartbeat.
    pub last_heartbeat_age_ms: u64,
    /// The state the node last reported (or was registered with).
    pub state: NodeState,
    /// Whether the last heartbeat is younger than the placement manager's node timeout.
    pub alive: bool,
    /// `host:port` the node serves clients on.
    pub address: String,
}

/// DESCRIBE_CLUSTER response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescribeClusterResponse {
    /// Known nodes, at most [`MAX_CLUSTER_NODES`].
    pub nodes: Vec<ClusterNode>,
}

impl Message for DescribeClusterResponse {
    const OPCODE: Opcode = Opcode::DescribeCluster;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        4 + self
            .nodes
            .iter()
            .map(|node| 34 + 2 + node.address.len())
            .sum::<usize>()
    }

    fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("nodes", self.nodes.len(), MAX_CLUSTER_NODES)?;
        self.nodes.iter().try_for_each(|node| {
            EncodeError::check_length("address", node.address.len(), MAX_ADDRESS_BYTES)
        })
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32_le(self.nodes.len() as u32);
        for node in &self.nodes {
            buf.put_u32_le(node.node_id.0);
            buf.put_u32_le(node.range_count);
            buf.put_u64_le(node.disk_free_bytes);
            buf.put_u64_le(node.disk_total_bytes);
            buf.put_u64_le(node.last_heartbeat_age_ms);
            buf.put_u8(node.state as u8);
            buf.put_u8(u8::from(node.alive));
            put_string(buf, &node.address);
        }
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let count = reader.count_u32("nodes", 36, MAX_CLUSTER_NODES)?;
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let node_id = NodeId(reader.u32("node_id")?);
            let range_count = reader.u32("range_count")?;
            let disk_free_bytes = reader.u64("disk_free_bytes")?;
            let disk_total_bytes = reader.u64("disk_total_bytes")?;
            let last_heartbeat_age_ms = reader.u64("last_heartbeat_age_ms")?;
            let state = NodeState::from_u8(reader.u8("state")?)
                .ok_or_else(|| reader.malformed("state", "unknown node state"))?;
            let alive = match reader.u8("alive")? {
                0 => false,
                1 => true,
                _ => return Err(reader.malformed("alive", "neither 0 nor 1")),
            };
            let address = reader.string("address", MAX_ADDRESS_BYTES)?;
            nodes.push(ClusterNode {
                node_id,
                range_count,
                disk_free_bytes,
                disk_total_bytes,
                last_heartbeat_age_ms,
                state,
                alive,
                address,
            });
        }
        reader.finish()?;
        Ok(DescribeClusterResponse { nodes })
    }
}
