//! Errors: [`ErrorCode`], the stable numbers sent in error responses (`docs/protocol.md` §7), and
//! [`DecodeError`], what the decoder reports for bad input, mapped to an [`ErrorCode`] in one
//! place ([`DecodeError::error_code`]).

use std::fmt;

use crate::frame::Opcode;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $number:literal, $wire_name:literal, $retriable:literal;)*) => {
        /// Outcome of a request, with a stable number (`docs/protocol.md` §7). Sent in the
        /// header of every error response.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ErrorCode {
            $($(#[$doc])* $name = $number,)*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code for a number received on the wire, or `None` if this version does not
            /// know it.
            pub fn from_u16(number: u16) -> Option<ErrorCode> {
                match number {
                    $($number => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }

            /// Whether the same request may succeed later, after a back-off (possibly on
            /// another connection or node).
            pub fn is_retriable(self) -> bool {
                match self {
                    $(ErrorCode::$name => $retriable,)*
                }
            }

            /// The name used in `docs/protocol.md`, e.g. `"STALE_EPOCH"`.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $wire_name,)*
                }
            }
        }
    };
}

error_codes! {
    /// Success; never sent in an error header.
    Ok = 0, "OK", false;
    /// A bug or unexpected state on the server.
    Internal = 1, "INTERNAL", false;
    /// The frame structure is invalid (length, flags, reserved field, CRC).
    MalformedFrame = 2, "MALFORMED_FRAME", false;
    /// The protocol version is not spoken by the receiver.
    UnsupportedVersion = 3, "UNSUPPORTED_VERSION", false;
    /// The opcode is not known to the receiver.
    UnknownOpcode = 4, "UNKNOWN_OPCODE", false;
    /// The frame is longer than the receiver's maximum frame size.
    FrameTooLarge = 5, "FRAME_TOO_LARGE", false;
    /// The operation header does not match the specification.
    MalformedHeader = 6, "MALFORMED_HEADER", false;
    /// The header is well-formed but a value is not acceptable.
    InvalidArgument = 7, "INVALID_ARGUMENT", false;
    /// A record batch failed its CRC or structure check.
    CorruptedData = 8, "CORRUPTED_DATA", false;
    /// No such range here.
    RangeNotFound = 100, "RANGE_NOT_FOUND", false;
    /// CREATE_RANGE of a range that exists.
    RangeAlreadyExists = 101, "RANGE_ALREADY_EXISTS", false;
    /// APPEND to, or re-SEAL with another end of, a sealed range.
    RangeSealed = 102, "RANGE_SEALED", false;
    /// The request's epoch is lower than the current one: the writer is fenced.
    StaleEpoch = 103, "STALE_EPOCH", false;
    /// The batch's offsets are already durable here.
    OffsetDuplicate = 104, "OFFSET_DUPLICATE", false;
    /// An earlier copy of the batch is being written; retry to learn its outcome.
    OffsetInFlightDuplicate = 105, "OFFSET_IN_FLIGHT_DUPLICATE", true;
    /// The batch's base offset is above the node's next offset.
    OffsetGap = 106, "OFFSET_GAP", false;
    /// FETCH below the range start, beyond its end, or below the trim point.
    OffsetOutOfRange = 107, "OFFSET_OUT_OF_RANGE", false;
    /// This replica does not hold the offset a reader of a sealed range asked for (it missed the
    /// seal or holds less than the recorded end); read it from another replica.
    OffsetNotHeld = 108, "OFFSET_NOT_HELD", true;
    /// No such stream.
    StreamNotFound = 200, "STREAM_NOT_FOUND", false;
    /// The stream exists already.
    StreamAlreadyExists = 201, "STREAM_ALREADY_EXISTS", false;
    /// The stream is deleted.
    StreamDeleted = 202, "STREAM_DELETED", false;
    /// A node id the placement manager never allocated.
    NodeNotFound = 300, "NODE_NOT_FOUND", false;
    /// Fewer live, writable nodes with free disk than the stream's ack count.
    NoAvailableNodes = 301, "NO_AVAILABLE_NODES", true;
    /// The connection has not authenticated, or its AUTHENTICATE carried a wrong token.
    Unauthenticated = 400, "UNAUTHENTICATED", false;
    /// The connection's role may not run this operation.
    PermissionDenied = 401, "PERMISSION_DENIED", false;
    /// The node's storage failed; it still serves reads.
    StorageUnavailable = 500, "STORAGE_UNAVAILABLE", true;
    /// No free space for the append.
    StorageFull = 501, "STORAGE_FULL", true;
    /// An in-flight bound was reached.
    TooManyInFlight = 502, "TOO_MANY_IN_FLIGHT", true;
    /// The receiver is stopping.
    ShuttingDown = 503, "SHUTTING_DOWN", true;
    /// The operation did not finish in time.
    Timeout = 504, "TIMEOUT", true;
    /// This placement manager is not the leader.
    NotLeader = 505, "NOT_LEADER", true;
}

impl ErrorCode {
    /// The stable number sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({})", self.name(), self.as_u16())
    }
}

/// Why bytes received could not be decoded. Never a panic: every kind of bad input is one of
/// these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ends before the frame does; at least `needed` more bytes are required.
    /// ([`crate::Decoder`] reports this as `Ok(None)` instead and waits for more.)
    Truncated {
        /// Bytes missing at least.
        needed: usize,
    },
    /// The frame's length exceeds the configured maximum frame size. Checked before anything is
    /// reserved for the frame.
    TooLong {
        /// Whole frame length claimed, including the length field.
        length: u64,
        /// Configured maximum, including the length field.
        max: usize,
    },
    /// The magic number is wrong: the peer does not speak this protocol, or the stream is out
    /// of sync.
    BadMagic {
        /// What was found instead of `0x5345`.
        found: u16,
    },
    /// The peer speaks another protocol version.
    UnsupportedVersion {
        /// The version received.
        found: u8,
    },
    /// The frame's CRC32C does not match its contents.
    CrcMismatch {
        /// CRC carried by the frame.
        expected: u32,
        /// CRC computed over the bytes received.
        actual: u32,
    },
    /// An intact frame with an opcode this version does not know. The frame was consumed, so
    /// the connection is still in sync and the request can be answered with
    /// [`ErrorCode::UnknownOpcode`].
    UnknownOpcode {
        /// The opcode received.
        opcode: u16,
        /// The request id of the frame, for the error response.
        request_id: u64,
    },
    /// The frame's fixed fields are inconsistent (length too small, header longer than the
    /// frame, bad flag combination, non-zero reserved field).
    MalformedFrame {
        /// What is wrong.
        reason: &'static str,
    },
    /// An operation header does not match `docs/protocol.md` §5.
    MalformedHeader {
        /// The operation whose header it is.
        opcode: Opcode,
        /// The field being read.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl DecodeError {
    /// The error code to send back (in an error response or GOAWAY message).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLong { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownOpcode { .. } => ErrorCode::UnknownOpcode,
            DecodeError::MalformedHeader { .. } => ErrorCode::MalformedHeader,
            DecodeError::Truncated { .. }
            | DecodeError::BadMagic { .. }
            | DecodeError::CrcMismatch { .. }
            | DecodeError::MalformedFrame { .. } => ErrorCode::MalformedFrame,
        }
    }

    /// Whether the byte stream is out of sync after this error, so the connection must be
    /// closed (after a GOAWAY). `false` means the bad frame was consumed whole and the request
    /// can be answered with an error response.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            DecodeError::UnknownOpcode { .. } | DecodeError::MalformedHeader { .. }
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed } => {
                write!(formatter, "truncated frame: {needed} more bytes needed")
            }
            DecodeError::TooLong { length, max } => write!(
                formatter,
                "frame of {length} bytes exceeds the maximum frame size of {max} bytes; \
                 send smaller frames or raise the receiver's limit"
            ),
            DecodeError::BadMagic { found } => write!(
                formatter,
                "bad frame magic: expected 0x5345, found {found:#06x}; the peer does not speak \
                 this protocol or the stream is out of sync"
            ),
            DecodeError::UnsupportedVersion { found } => write!(
                formatter,
                "unsupported protocol version {found}, this side speaks {}",
                crate::frame::VERSION
            ),
            DecodeError::CrcMismatch { expected, actual } => write!(
                formatter,
                "frame CRC32C mismatch: frame carries {expected:#010x}, contents give \
                 {actual:#010x}; the frame was corrupted in transit"
            ),
            DecodeError::UnknownOpcode { opcode, request_id } => write!(
                formatter,
                "unknown opcode {opcode:#06x} in request {request_id}"
            ),
            DecodeError::MalformedFrame { reason } => {
                write!(formatter, "malformed frame: {reason}")
            }
            DecodeError::MalformedHeader {
                opcode,
                field,
                reason,
            } => write!(
                formatter,
                "malformed {} header, field `{field}`: {reason}",
                opcode.name()
            ),
        }
    }
}

impl std::error::Error for DecodeError {}
