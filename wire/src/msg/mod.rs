//! Typed headers of every operation, one module per opcode (`docs/protocol.md` §5), plus the
//! [`Request`] and [`Response`] enums that decode any frame.
//!
//! Each module holds the operation's request and response header types. The frame payload is not
//! part of these types: it stays in [`Frame::payload`] (zero-copy) and is passed separately to
//! the encoders.

use bytes::BufMut;

use crate::codec::{encode_frame, EncodeError, FrameBuf};
use crate::error::DecodeError;
use crate::frame::{Frame, Opcode};

pub mod allocate_id;
pub mod append;
pub mod authenticate;
pub mod create_range;
pub mod create_stream;
pub mod delete_range;
pub mod delete_stream;
pub mod describe_cluster;
pub mod describe_range;
pub mod describe_stream;
pub mod error_response;
pub mod fetch;
pub mod goaway;
pub mod heartbeat;
pub mod list_ranges;
pub mod list_streams;
pub mod ping;
pub mod report_metrics;
pub mod seal_range;
pub mod trim_range;
pub mod trim_stream;
pub mod update_stream;

pub use crate::types::NodeState;
pub use allocate_id::{AllocateIdRequest, AllocateIdResponse};
pub use append::{AppendRequest, AppendResponse};
pub use authenticate::{AuthenticateRequest, AuthenticateResponse, Role, MAX_TOKEN_BYTES};
pub use create_range::{CreateRangeRequest, CreateRangeResponse};
pub use create_stream::{CreateStreamRequest, CreateStreamResponse};
pub use delete_range::{DeleteRangeRequest, DeleteRangeResponse};
pub use delete_stream::{DeleteStreamRequest, DeleteStreamResponse};
pub use describe_cluster::{ClusterNode, DescribeClusterRequest, DescribeClusterResponse};
pub use describe_range::{DescribeRangeRequest, DescribeRangeResponse};
pub use describe_stream::{DescribeStreamRequest, DescribeStreamResponse};
pub use error_response::ErrorResponse;
pub use fetch::{FetchRequest, FetchResponse};
pub use goaway::{Goaway, GoawayReason};
pub use heartbeat::{HeartbeatRequest, HeartbeatResponse};
pub use list_ranges::{ListRangesRequest, ListRangesResponse};
pub use list_streams::{ListStreamsRequest, ListStreamsResponse};
pub use ping::{PingRequest, PingResponse};
pub use report_metrics::{Metric, ReportMetricsRequest, ReportMetricsResponse};
pub use seal_range::{SealRangeRequest, SealRangeResponse};
pub use trim_range::{TrimRangeRequest, TrimRangeResponse};
pub use trim_stream::{TrimStreamRequest, TrimStreamResponse};
pub use update_stream::{UpdateStreamRequest, UpdateStreamResponse};

/// Whether a message type is sent as a request (flags 0) or as a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Sent with no flags (also GOAWAY).
    Request,
    /// Sent with `RESPONSE | END_OF_RESPONSE`.
    Response,
}

/// An operation header: one request or response type of one opcode.
pub trait Message: Sized {
    /// The operation.
    const OPCODE: Opcode;
    /// Request or response.
    const KIND: MessageKind;
    /// Whether frames of this message may carry a payload.
    const HAS_PAYLOAD: bool = false;

    /// Bytes [`Message::encode`] writes.
    fn encoded_len(&self) -> usize;

    /// Checks what the encoding cannot represent (strings and lists over their maximum).
    fn validate(&self) -> Result<(), EncodeError> {
        Ok(())
    }

    /// Writes the header; the caller has called [`Message::validate`].
    fn encode<B: BufMut>(&self, buf: &mut B);

    /// Parses a whole header: every field present, reserved fields zero, nothing left over.
    fn decode(header: &[u8]) -> Result<Self, DecodeError>;
}

macro_rules! message_enums {
    ($($variant:ident($request:ty, $response:ty)),* $(,)?) => {
        /// Any request, decoded from a frame by opcode.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Request {
            /// GOAWAY: the peer is closing the connection (never answered).
            Goaway(Goaway),
            $(#[doc = concat!("See [`", stringify!($request), "`].")] $variant($request),)*
        }

        /// Any response, decoded from a frame by opcode.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Response {
            /// The request failed (`ERROR` flag); the frame's opcode says which operation.
            Error(ErrorResponse),
            $(#[doc = concat!("See [`", stringify!($response), "`].")] $variant($response),)*
        }

        impl Request {
            /// Decodes a request frame's header by its opcode. The payload stays in the frame.
            pub fn decode(frame: &Frame) -> Result<Request, DecodeError> {
                match frame.opcode {
                    Opcode::Goaway => frame.decode_message().map(Request::Goaway),
                    $(Opcode::$variant => frame.decode_message().map(Request::$variant),)*
                }
            }

            /// The request's operation.
            pub fn opcode(&self) -> Opcode {
                match self {
                    Request::Goaway(_) => Opcode::Goaway,
                    $(Request::$variant(_) => Opcode::$variant,)*
                }
            }

            /// Writes the request as a frame into `buf`. Returns the frame's size.
            pub fn encode<B: FrameBuf>(
                &self,
                buf: &mut B,
                request_id: u64,
                payload: &[u8],
            ) -> Result<usize, EncodeError> {
                match self {
                    Request::Goaway(message) => {
                        crate::codec::encode_request(buf, request_id, message, payload)
                    }
                    $(Request::$variant(message) => {
                        crate::codec::encode_request(buf, request_id, message, payload)
                    })*
                }
            }
        }

        impl Response {
            /// Decodes a response frame's header by its opcode; an error response becomes
            /// [`Response::Error`]. The payload stays in the frame.
            pub fn decode(frame: &Frame) -> Result<Response, DecodeError> {
                if frame.is_error() {
                    return frame.error_response().map(Response::Error);
                }
                match frame.opcode {
                    Opcode::Goaway => Err(DecodeError::MalformedHeader {
                        opcode: Opcode::Goaway,
                        field: "flags",
                        reason: "GOAWAY is never answered",
                    }),
                    $(Opcode::$variant => frame.decode_message().map(Response::$variant),)*
                }
            }

            /// The operation answered, or `None` for [`Response::Error`] (its frame carries
            /// the opcode).
            pub fn opcode(&self) -> Option<Opcode> {
                match self {
                    Response::Error(_) => None,
                    $(Response::$variant(_) => Some(Opcode::$variant),)*
                }
            }

            /// Writes the response to `request_id` of operation `opcode` as a frame into `buf`
            /// (`opcode` is used only for [`Response::Error`]; the other variants know theirs).
            pub fn encode<B: FrameBuf>(
                &self,
                buf: &mut B,
                opcode: Opcode,
                request_id: u64,
                payload: &[u8],
            ) -> Result<usize, EncodeError> {
                match self {
                    Response::Error(error) => {
                        crate::codec::encode_error(buf, opcode, request_id, error)
                    }
                    $(Response::$variant(message) => {
                        crate::codec::encode_response(buf, request_id, message, payload)
                    })*
                }
            }
        }
    };
}

message_enums! {
    Ping(PingRequest, PingResponse),
    Heartbeat(HeartbeatRequest, HeartbeatResponse),
    AllocateId(AllocateIdRequest, AllocateIdResponse),
    ReportMetrics(ReportMetricsRequest, ReportMetricsResponse),
    DescribeCluster(DescribeClusterRequest, DescribeClusterResponse),
    Authenticate(AuthenticateRequest, AuthenticateResponse),
    Append(AppendRequest, AppendResponse),
    Fetch(FetchRequest, FetchResponse),
    CreateRange(CreateRangeRequest, CreateRangeResponse),
    SealRange(SealRangeRequest, SealRangeResponse),
    DescribeRange(DescribeRangeRequest, DescribeRangeResponse),
    ListRanges(ListRangesRequest, ListRangesResponse),
    TrimRange(TrimRangeRequest, TrimRangeResponse),
    DeleteRange(DeleteRangeRequest, DeleteRangeResponse),
    CreateStream(CreateStreamRequest, CreateStreamResponse),
    DescribeStream(DescribeStreamRequest, DescribeStreamResponse),
    UpdateStream(UpdateStreamRequest, UpdateStreamResponse),
    TrimStream(TrimStreamRequest, TrimStreamResponse),
    DeleteStream(DeleteStreamRequest, DeleteStreamResponse),
    ListStreams(ListStreamsRequest, ListStreamsResponse),
}

/// Writes a raw frame (used when forwarding a [`Frame`] as received).
pub fn encode_raw<B: FrameBuf>(buf: &mut B, frame: &Frame) -> Result<usize, EncodeError> {
    encode_frame(
        buf,
        frame.opcode,
        frame.flags,
        frame.request_id,
        &frame.header,
        &frame.payload,
    )
}

/// Implements [`Message`] for a header with no fields.
macro_rules! empty_message {
    ($type:ty, $opcode:ident, $kind:ident, $has_payload:literal) => {
        impl $crate::msg::Message for $type {
            const OPCODE: $crate::frame::Opcode = $crate::frame::Opcode::$opcode;
            const KIND: $crate::msg::MessageKind = $crate::msg::MessageKind::$kind;
            const HAS_PAYLOAD: bool = $has_payload;

            fn encoded_len(&self) -> usize {
                0
            }

            fn encode<B: bytes::BufMut>(&self, _buf: &mut B) {}

            fn decode(header: &[u8]) -> Result<Self, $crate::error::DecodeError> {
                $crate::codec::Reader::new(Self::OPCODE, header).finish()?;
                Ok(Self {})
            }
        }
    };
}
pub(crate) use empty_message;

/// Implements [`Message`] for a response that is one Stream record.
macro_rules! stream_response {
    ($type:ident, $opcode:ident) => {
        #[doc = concat!("Response to ", stringify!($opcode), ": the stream as it is now.")]
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $type {
            /// The stream.
            pub stream: $crate::types::Stream,
        }

        impl $crate::msg::Message for $type {
            const OPCODE: $crate::frame::Opcode = $crate::frame::Opcode::$opcode;
            const KIND: $crate::msg::MessageKind = $crate::msg::MessageKind::Response;

            fn encoded_len(&self) -> usize {
                $crate::types::Stream::ENCODED_BYTES
            }

            fn encode<B: bytes::BufMut>(&self, buf: &mut B) {
                self.stream.encode(buf);
            }

            fn decode(header: &[u8]) -> Result<Self, $crate::error::DecodeError> {
                let mut reader = $crate::codec::Reader::new(Self::OPCODE, header);
                let stream = $crate::types::Stream::decode(&mut reader)?;
                reader.finish()?;
                Ok($type { stream })
            }
        }
    };
}
pub(crate) use stream_response;

/// Implements [`Message`] for a response that is one Range record.
macro_rules! range_response {
    ($type:ident, $opcode:ident) => {
        #[doc = concat!("Response to ", stringify!($opcode), ": the range record.")]
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $type {
            /// The range.
            pub range: $crate::types::Range,
        }

        impl $crate::msg::Message for $type {
            const OPCODE: $crate::frame::Opcode = $crate::frame::Opcode::$opcode;
            const KIND: $crate::msg::MessageKind = $crate::msg::MessageKind::Response;

            fn encoded_len(&self) -> usize {
                self.range.encoded_len()
            }

            fn validate(&self) -> Result<(), $crate::codec::EncodeError> {
                self.range.validate()
            }

            fn encode<B: bytes::BufMut>(&self, buf: &mut B) {
                self.range.encode(buf);
            }

            fn decode(header: &[u8]) -> Result<Self, $crate::error::DecodeError> {
                let mut reader = $crate::codec::Reader::new(Self::OPCODE, header);
                let range = $crate::types::Range::decode(&mut reader)?;
                reader.finish()?;
                Ok($type { range })
            }
        }
    };
}
pub(crate) use range_response;
