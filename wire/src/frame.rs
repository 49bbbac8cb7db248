//! The frame: constants of the layout (`docs/protocol.md` §2), [`Opcode`], [`Flags`], and
//! [`Frame`], a decoded frame whose header and payload are zero-copy views into the received
//! buffer.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::msg::error_response::ErrorResponse;
use crate::msg::{Message, MessageKind};

/// Frame magic, bytes `45 53` ("ES") on the wire.
pub const MAGIC: u16 = 0x5345;
/// Protocol version spoken by this crate.
pub const VERSION: u8 = 1;
/// Size of the `length` field that starts every frame.
pub const LENGTH_FIELD_BYTES: usize = 4;
/// Bytes before the header: length, magic, version, flags, opcode, reserved, request id,
/// header length.
pub const PREFIX_BYTES: usize = 24;
/// Size of the trailing CRC32C.
pub const CRC_BYTES: usize = 4;
/// Bytes of a frame besides its header and payload.
pub const OVERHEAD_BYTES: usize = PREFIX_BYTES + CRC_BYTES;
/// Smallest valid value of the `length` field (empty header and payload).
pub const MIN_LENGTH_FIELD: u32 = (OVERHEAD_BYTES - LENGTH_FIELD_BYTES) as u32;
/// Default maximum frame size, including the length field: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// Flag bits of a frame (`docs/protocol.md` §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    /// A request: no bits set.
    pub const REQUEST: Flags = Flags(0);
    /// The frame answers the request with the same id.
    pub const RESPONSE: Flags = Flags(0x01);
    /// Last response frame for the request (every response in version 1).
    pub const END_OF_RESPONSE: Flags = Flags(0x02);
    /// The request failed; the header is an [`ErrorResponse`].
    pub const ERROR: Flags = Flags(0x04);
    /// A successful, complete response.
    pub const RESPONSE_END: Flags = Flags(0x03);
    /// A failed, complete response.
    pub const ERROR_RESPONSE: Flags = Flags(0x07);

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Flags from raw bits, or `None` if a reserved bit is set or `END_OF_RESPONSE`/`ERROR`
    /// appear without `RESPONSE`.
    pub fn from_bits(bits: u8) -> Option<Flags> {
        let flags = Flags(bits);
        let known = Flags::RESPONSE.0 | Flags::END_OF_RESPONSE.0 | Flags::ERROR.0;
        if bits & !known != 0 || (bits != 0 && !flags.contains(Flags::RESPONSE)) {
            return None;
        }
        Some(flags)
    }

    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

macro_rules! opcodes {
    ($($(#[$doc:meta])* $name:ident = $number:literal, $wire_name:literal;)*) => {
        /// An operation (`docs/protocol.md` §4). The numbers are stable.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Opcode {
            $($(#[$doc])* $name = $number,)*
        }

        impl Opcode {
            /// Every opcode, in numeric order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name,)*];

            /// The opcode for a number received on the wire, or `None` if unknown.
            pub fn from_u16(number: u16) -> Option<Opcode> {
                match number {
                    $($number => Some(Opcode::$name),)*
                    _ => None,
                }
            }

            /// The name used in `docs/protocol.md`, e.g. `"APPEND"`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Opcode::$name => $wire_name,)*
                }
            }
        }
    };
}

opcodes! {
    /// Liveness check; the payload is echoed.
    Ping = 0x0001, "PING";
    /// The sender is closing the connection; carries its reason.
    Goaway = 0x0002, "GOAWAY";
    /// Data node to placement manager: alive, with load.
    Heartbeat = 0x0003, "HEARTBEAT";
    /// Data node to placement manager: allocate a node id.
    AllocateId = 0x0004, "ALLOCATE_ID";
    /// Data node to placement manager: named metric values.
    ReportMetrics = 0x0005, "REPORT_METRICS";
    /// List the data nodes the placement manager knows.
    DescribeCluster = 0x0006, "DESCRIBE_CLUSTER";
    /// Prove a token; the answer names the role the connection holds from then on.
    Authenticate = 0x0007, "AUTHENTICATE";
    /// Append record batches to a range.
    Append = 0x0101, "APPEND";
    /// Read record batches from a range.
    Fetch = 0x0102, "FETCH";
    /// Create a range.
    CreateRange = 0x0201, "CREATE_RANGE";
    /// Seal a range at an end offset.
    SealRange = 0x0202, "SEAL_RANGE";
    /// Describe one range.
    DescribeRange = 0x0203, "DESCRIBE_RANGE";
    /// List the ranges of a stream, or all ranges held.
    ListRanges = 0x0204, "LIST_RANGES";
    /// Placement manager to data node: drop a range's whole batches below an offset.
    TrimRange = 0x0205, "TRIM_RANGE";
    /// Placement manager to data node: delete a range's replica.
    DeleteRange = 0x0206, "DELETE_RANGE";
    /// Create a stream.
    CreateStream = 0x0301, "CREATE_STREAM";
    /// Describe one stream.
    DescribeStream = 0x0302, "DESCRIBE_STREAM";
    /// Change a stream's settings or raise its epoch.
    UpdateStream = 0x0303, "UPDATE_STREAM";
    /// Move a stream's trim point.
    TrimStream = 0x0304, "TRIM_STREAM";
    /// Delete a stream.
    DeleteStream = 0x0305, "DELETE_STREAM";
    /// List streams by id.
    ListStreams = 0x0306, "LIST_STREAMS";
}

impl Opcode {
    /// The stable number sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One decoded frame. `header` and `payload` are views into the buffer the frame was received
/// in: cloning or sending a `Frame` to another thread copies no payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The operation.
    pub opcode: Opcode,
    /// Request/response/error bits.
    pub flags: Flags,
    /// Chosen by the requester, echoed in the response.
    pub request_id: u64,
    /// The operation header, still encoded; see [`Frame::decode_message`].
    pub header: Bytes,
    /// The opaque payload (record batches for APPEND and FETCH).
    pub payload: Bytes,
}

impl Frame {
    /// Whether the frame is a response (success or error).
    pub fn is_response(&self) -> bool {
        self.flags.contains(Flags::RESPONSE)
    }

    /// Whether the frame is an error response; its header is an [`ErrorResponse`].
    pub fn is_error(&self) -> bool {
        self.flags.contains(Flags::ERROR)
    }

    /// Whether this is the last response frame of its request.
    pub fn is_end_of_response(&self) -> bool {
        self.flags.contains(Flags::END_OF_RESPONSE)
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        OVERHEAD_BYTES + self.header.len() + self.payload.len()
    }

    /// Decodes the header as message type `M`, checking that the opcode, the request/response
    /// direction and the payload rules match `M`. An error response is rejected here (as
    /// `MalformedHeader` on field `flags`); check [`Frame::is_error`] and use
    /// [`Frame::error_response`] first.
    pub fn decode_message<M: Message>(&self) -> Result<M, DecodeError> {
        let malformed = |field, reason| DecodeError::MalformedHeader {
            opcode: self.opcode,
            field,
            reason,
        };
        if self.opcode != M::OPCODE {
            return Err(malformed("opcode", "frame carries another operation"));
        }
        if self.is_error() {
            return Err(malformed("flags", "frame is an error response"));
        }
        let is_response = M::KIND == MessageKind::Response;
        if self.is_response() != is_response {
            return Err(malformed(
                "flags",
                "request/response direction does not match",
            ));
        }
        if !M::HAS_PAYLOAD && !self.payload.is_empty() {
            return Err(malformed("payload", "this operation carries no payload"));
        }
        M::decode(&self.header)
    }

    /// Decodes the header of an error response.
    pub fn error_response(&self) -> Result<ErrorResponse, DecodeError> {
        if !self.is_error() {
            return Err(DecodeError::MalformedHeader {
                opcode: self.opcode,
                field: "flags",
                reason: "frame is not an error response",
            });
        }
        if !self.payload.is_empty() {
            return Err(DecodeError::MalformedHeader {
                opcode: self.opcode,
                field: "payload",
                reason: "an error response carries no payload",
            });
        }
        ErrorResponse::decode(self.opcode, &self.header)
    }

    /// Parses exactly one whole frame held in `bytes` (as split off by [`crate::Decoder`]).
    /// Returns `Truncated` if `bytes` is shorter than the frame, `MalformedFrame` if longer.
    pub fn parse(bytes: Bytes, max_frame_bytes: usize) -> Result<Frame, DecodeError> {
        let frame_bytes = match check_prefix(&bytes, max_frame_bytes)? {
            PrefixCheck::Complete { frame_bytes } => frame_bytes,
            PrefixCheck::Incomplete { frame_bytes } => {
                // frame_bytes is 0 while the length field itself is incomplete.
                let known_bytes = frame_bytes.max(LENGTH_FIELD_BYTES);
                return Err(DecodeError::Truncated {
                    needed: known_bytes - bytes.len(),
                });
            }
        };
        if frame_bytes != bytes.len() {
            return Err(DecodeError::MalformedFrame {
                reason: "bytes beyond the frame's length",
            });
        }
        parse_complete(bytes)
    }
}

/// Result of looking at the start of a buffer.
pub(crate) enum PrefixCheck {
    /// The whole frame (`frame_bytes` long, or unknown yet if 0) is not here yet.
    Incomplete { frame_bytes: usize },
    /// `frame_bytes` bytes starting the buffer are one whole frame, still to be verified.
    Complete { frame_bytes: usize },
}

/// Checks what can be checked before the whole frame is here: length bounds (before anything is
/// reserved), then magic and version.
pub(crate) fn check_prefix(buf: &[u8], max_frame_bytes: usize) -> Result<PrefixCheck, DecodeError> {
    let Some(length_bytes) = buf.first_chunk::<4>() else {
        return Ok(PrefixCheck::Incomplete { frame_bytes: 0 });
    };
    let length = u32::from_le_bytes(*length_bytes);
    if length < MIN_LENGTH_FIELD {
        return Err(DecodeError::MalformedFrame {
            reason: "length field smaller than the 24-byte minimum",
        });
    }
    let frame_bytes = u64::from(length) + LENGTH_FIELD_BYTES as u64;
    if frame_bytes > max_frame_bytes as u64 {
        return Err(DecodeError::TooLong {
            length: frame_bytes,
            max: max_frame_bytes,
        });
    }
    // Cannot truncate: frame_bytes <= max_frame_bytes, a usize.
    let frame_bytes = frame_bytes as usize;
    if let Some(start) = buf.first_chunk::<8>() {
        let magic = u16::from_le_bytes([start[4], start[5]]);
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic });
        }
        if start[6] != VERSION {
            return Err(DecodeError::UnsupportedVersion { found: start[6] });
        }
    }
    if buf.len() < frame_bytes {
        return Ok(PrefixCheck::Incomplete { frame_bytes });
    }
    Ok(PrefixCheck::Complete { frame_bytes })
}

/// Verifies and splits a whole frame whose prefix passed [`check_prefix`]. Zero-copy: header and
/// payload are slices of `bytes`.
pub(crate) fn parse_complete(bytes: Bytes) -> Result<Frame, DecodeError> {
    debug_assert!(bytes.len() >= OVERHEAD_BYTES);
    let crc_at = bytes.len() - CRC_BYTES;
    let expected = u32::from_le_bytes(read_array(&bytes, crc_at));
    let actual = crc32c::crc32c(&bytes[LENGTH_FIELD_BYTES..crc_at]);
    if expected != actual {
        return Err(DecodeError::CrcMismatch { expected, actual });
    }
    let flags = Flags::from_bits(bytes[7]).ok_or(DecodeError::MalformedFrame {
        reason: "invalid flag combination or reserved flag bit set",
    })?;
    let opcode_number = u16::from_le_bytes(read_array(&bytes, 8));
    if u16::from_le_bytes(read_array(&bytes, 10)) != 0 {
        return Err(DecodeError::MalformedFrame {
            reason: "reserved field is not zero",
        });
    }
    let request_id = u64::from_le_bytes(read_array(&bytes, 12));
    let header_length = u32::from_le_bytes(read_array(&bytes, 20)) as usize;
    let body_bytes = crc_at - PREFIX_BYTES;
    if header_length > body_bytes {
        return Err(DecodeError::MalformedFrame {
            reason: "header length exceeds the frame",
        });
    }
    let opcode = Opcode::from_u16(opcode_number).ok_or(DecodeError::UnknownOpcode {
        opcode: opcode_number,
        request_id,
    })?;
    let header_end = PREFIX_BYTES + header_length;
    Ok(Frame {
        opcode,
        flags,
        request_id,
        header: bytes.slice(PREFIX_BYTES..header_end),
        payload: bytes.slice(header_end..crc_at),
    })
}

/// Reads `N` bytes at `at`; callers have checked the bounds.
fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut array = [0; N];
    array.copy_from_slice(&bytes[at..at + N]);
    array
}
