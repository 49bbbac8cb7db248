//! The binary protocol spoken between clients, data nodes and the placement manager.
//!
//! The specification is `docs/protocol.md`; this crate is its implementation and its tests hold
//! the two together. Data flows like this:
//!
//! * **Receiving**: bytes read from a socket are appended to a [`bytes::BytesMut`];
//!   [`Decoder::decode`] splits whole [`Frame`]s off it without copying (the frame's `header` and
//!   `payload` are [`bytes::Bytes`] views into the received buffer). [`Request::decode`] /
//!   [`Response::decode`] (or [`Frame::decode_message`] for one known type) turn the header into
//!   a typed message from [`msg`]. Record batches inside an APPEND or FETCH payload are walked
//!   with [`batch::BatchIter`], again without copying.
//! * **Sending**: [`codec::encode_request`], [`codec::encode_response`] and
//!   [`codec::encode_error`] write a whole frame into a caller's buffer; [`codec::encode_parts`]
//!   writes only the fixed part and header, so a large payload can go out by vectored write
//!   without being copied.
//!
//! Nothing here panics on input from the network: every kind of bad input is a typed
//! [`DecodeError`] (or [`BatchError`] for record batches), and each maps to a stable
//! [`ErrorCode`] for the error response.

#![warn(missing_docs)]

pub mod batch;
pub mod codec;
pub mod error;
pub mod frame;
pub mod msg;
pub mod types;

pub use batch::{BatchBuilder, BatchError, BatchHeader, BatchIter, BatchView};
pub use codec::{
    encode_error, encode_frame, encode_goaway, encode_parts, encode_request, encode_response,
    Decoder, EncodeError, FrameParts,
};
pub use error::{DecodeError, ErrorCode};
pub use frame::{Flags, Frame, Opcode, DEFAULT_MAX_FRAME_BYTES};
pub use msg::{ErrorResponse, Message, MessageKind, Request, Response, Role};
pub use types::{
    Epoch, NodeId, NodeState, Offset, Range, RangeIndex, RangeKey, ReplicaNode, Stream, StreamId,
};

/// CRC32C (Castagnoli) of `bytes`: the checksum frames and record batches carry.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}
