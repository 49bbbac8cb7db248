//! ALLOCATE_ID (`0x0004`): a data node without an id asks the placement manager for one, once,
//! and keeps it on disk.

use bytes::BufMut;

use crate::codec::{put_string, EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{Message, MessageKind};
use crate::types::{NodeId, MAX_ADDRESS_BYTES};

/// ALLOCATE_ID request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocateIdRequest {
    /// `host:port` the node serves clients on.
    pub address: String,
}

impl Message for AllocateIdRequest {
    const OPCODE: Opcode = Opcode::AllocateId;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        2 + self.address.len()
    }

    fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("address", self.address.len(), MAX_ADDRESS_BYTES)
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_string(buf, &self.address);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let address = reader.string("address", MAX_ADDRESS_BYTES)?;
        reader.finish()?;
        Ok(AllocateIdRequest { address })
    }
}

/// ALLOCATE_ID response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocateIdResponse {
    /// The id allocated to the node.
    pub node_id: NodeId,
}

impl Message for AllocateIdResponse {
    const OPCODE: Opcode = Opcode::AllocateId;
    const KIND: MessageKind = MessageKind::Response;

    fn encoded_len(&self) -> usize {
        8
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32_le(self.node_id.0);
        buf.put_u32_le(0);
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let node_id = NodeId(reader.u32("node_id")?);
        reader.reserved_u32("reserved")?;
        reader.finish()?;
        Ok(AllocateIdResponse { node_id })
    }
}
