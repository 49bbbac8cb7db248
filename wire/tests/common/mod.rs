//! Proptest strategies for every message, shared by the test files.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use wire::msg::*;
use wire::types::{
    Epoch, NodeId, NodeState, Offset, Range, RangeIndex, ReplicaNode, Stream, StreamId,
};
use wire::{ErrorCode, Request, Response};

pub fn stream_id() -> impl Strategy<Value = StreamId> {
    any::<u64>().prop_map(StreamId)
}
/// A stream id that can also be "absent" on the wire (`u64::MAX` is reserved).
pub fn optional_stream_id() -> impl Strategy<Value = Option<StreamId>> {
    option::of((0..u64::MAX).prop_map(StreamId))
}
pub fn range_index() -> impl Strategy<Value = RangeIndex> {
    any::<u32>().prop_map(RangeIndex)
}
pub fn epoch() -> impl Strategy<Value = Epoch> {
    any::<u64>().prop_map(Epoch)
}
pub fn offset() -> impl Strategy<Value = Offset> {
    any::<u64>().prop_map(Offset)
}
/// Optional offsets never hold `u64::MAX`, the wire's "absent".
pub fn optional_offset() -> impl Strategy<Value = Option<Offset>> {
    option::of((0..=Offset::MAX.0).prop_map(Offset))
}
pub fn node_id() -> impl Strategy<Value = NodeId> {
    any::<u32>().prop_map(NodeId)
}
pub fn address() -> impl Strategy<Value = String> {
    "[a-z0-9.:-]{0,40}|\\PC{0,8}"
}
pub fn message() -> impl Strategy<Value = String> {
    "\\PC{0,64}"
}
pub fn replica() -> impl Strategy<Value = ReplicaNode> {
    (node_id(), address()).prop_map(|(node_id, address)| ReplicaNode { node_id, address })
}
pub fn replicas() -> impl Strategy<Value = Vec<ReplicaNode>> {
    vec(replica(), 0..=4)
}
/// Optional sizes never hold `u64::MAX`, the wire's "absent".
pub fn optional_size() -> impl Strategy<Value = Option<u64>> {
    option::of(0..u64::MAX)
}
pub fn node_state() -> impl Strategy<Value = NodeState> {
    proptest::sample::select(NodeState::ALL)
}
pub fn range() -> impl Strategy<Value = Range> {
    (
        (stream_id(), range_index(), epoch(), offset()),
        (optional_offset(), optional_offset(), optional_offset()),
        (any::<u8>(), any::<u8>(), any::<bool>(), optional_size()),
        replicas(),
    )
        .prop_map(
            |(
                (stream_id, index, epoch, start_offset),
                (end, next, confirmed),
                (replica_count_target, ack_count, under_replicated, size_bytes),
                replicas,
            )| Range {
                stream_id,
                index,
                epoch,
                start_offset,
                end_offset: end,
                next_offset: next,
                confirmed_offset: confirmed,
                replica_count_target,
                ack_count,
                under_replicated,
                size_bytes,
                replicas,
            },
        )
}
pub fn stream() -> impl Strategy<Value = Stream> {
    (
        stream_id(),
        any::<u8>(),
        any::<u8>(),
        (any::<u64>(), any::<u64>()),
        offset(),
        epoch(),
        any::<bool>(),
    )
        .prop_map(
            |(
                id,
                replica_count,
                ack_count,
                (retention_ms, retention_bytes),
                start_offset,
                epoch,
                deleted,
            )| Stream {
                id,
                replica_count,
                ack_count,
                retention_ms,
                retention_bytes,
                start_offset,
                epoch,
                deleted,
            },
        )
}
pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(&ErrorCode::ALL[1..])
}
pub fn cluster_node() -> impl Strategy<Value = ClusterNode> {
    (
        node_id(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        (node_state(), any::<bool>()),
        address(),
    )
        .prop_map(
            |(node_id, range_count, free, total, age, (state, alive), address)| ClusterNode {
                node_id,
                range_count,
                disk_free_bytes: free,
                disk_total_bytes: total,
                last_heartbeat_age_ms: age,
                state,
                alive,
                address,
            },
        )
}

pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping(PingRequest {})),
        (proptest::sample::select(GoawayReason::ALL), message())
            .prop_map(|(reason, message)| Request::Goaway(Goaway { reason, message })),
        (
            node_id(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            node_state(),
            address()
        )
            .prop_map(
                |(node_id, range_count, free, total, load, state, address)| {
                    Request::Heartbeat(HeartbeatRequest {
                        node_id,
                        range_count,
                        disk_free_bytes: free,
                        disk_total_bytes: total,
                        append_bytes_per_second: load,
                        state,
                        address,
                    })
                }
            ),
        address().prop_map(|address| Request::AllocateId(AllocateIdRequest { address })),
        "[ -~]{0,255}".prop_map(|token| Request::Authenticate(AuthenticateRequest { token })),
        (
            node_id(),
            vec(
                ("[a-z_]{0,20}", any::<u64>()).prop_map(|(name, value)| Metric { name, value }),
                0..5
            )
        )
            .prop_map(|(node_id, metrics)| {
                Request::ReportMetrics(ReportMetricsRequest { node_id, metrics })
            }),
        Just(Request::DescribeCluster(DescribeClusterRequest {})),
        (
            stream_id(),
            range_index(),
            epoch(),
            optional_offset(),
            any::<bool>()
        )
            .prop_map(
                |(stream_id, range_index, epoch, confirmed_offset, repair)| {
                    Request::Append(AppendRequest {
                        repair,
                        stream_id,
                        range_index,
                        epoch,
                        confirmed_offset,
                    })
                }
            ),
        (
            stream_id(),
            range_index(),
            any::<u32>(),
            offset(),
            any::<u32>(),
            (any::<bool>(), any::<bool>())
        )
            .prop_map(
                |(
                    stream_id,
                    range_index,
                    max_bytes,
                    start_offset,
                    max_wait_ms,
                    (read_durable, expect_sealed),
                )| {
                    Request::Fetch(FetchRequest {
                        read_durable,
                        expect_sealed,
                        stream_id,
                        range_index,
                        max_bytes,
                        start_offset,
                        max_wait_ms,
                    })
                }
            ),
        (
            stream_id(),
            range_index(),
            epoch(),
            offset(),
            (any::<u8>(), any::<u8>()),
            replicas(),
            vec(any::<u32>().prop_map(NodeId), 0..4)
        )
            .prop_map(
                |(
                    stream_id,
                    range_index,
                    epoch,
                    start_offset,
                    (replica_count_target, ack_count),
                    replicas,
                    exclude,
                )| {
                    Request::CreateRange(CreateRangeRequest {
                        exclude,
                        stream_id,
                        range_index,
                        epoch,
                        start_offset,
                        replica_count_target,
                        ack_count,
                        replicas,
                    })
                }
            ),
        (
            stream_id(),
            range_index(),
            epoch(),
            optional_offset(),
            any::<bool>()
        )
            .prop_map(|(stream_id, range_index, epoch, end_offset, fence_only)| {
                Request::SealRange(SealRangeRequest {
                    fence_only,
                    stream_id,
                    range_index,
                    epoch,
                    end_offset,
                })
            }),
        (stream_id(), range_index()).prop_map(|(stream_id, range_index)| {
            Request::DescribeRange(DescribeRangeRequest {
                stream_id,
                range_index,
            })
        }),
        optional_stream_id()
            .prop_map(|stream_id| Request::ListRanges(ListRangesRequest { stream_id })),
        (stream_id(), range_index(), offset()).prop_map(|(stream_id, range_index, offset)| {
            Request::TrimRange(TrimRangeRequest {
                stream_id,
                range_index,
                offset,
            })
        }),
        (stream_id(), range_index()).prop_map(|(stream_id, range_index)| {
            Request::DeleteRange(DeleteRangeRequest {
                stream_id,
                range_index,
            })
        }),
        (any::<u8>(), any::<u8>(), any::<u64>(), any::<u64>()).prop_map(
            |(replica_count, ack_count, retention_ms, retention_bytes)| {
                Request::CreateStream(CreateStreamRequest {
                    replica_count,
                    ack_count,
                    retention_ms,
                    retention_bytes,
                })
            }
        ),
        stream_id()
            .prop_map(|stream_id| Request::DescribeStream(DescribeStreamRequest { stream_id })),
        (
            stream_id(),
            option::of(any::<u8>()),
            option::of(any::<u8>()),
            option::of(any::<u64>()),
            option::of(any::<u64>()),
            option::of(epoch())
        )
            .prop_map(
                |(stream_id, replica_count, ack_count, retention_ms, retention_bytes, epoch)| {
                    Request::UpdateStream(UpdateStreamRequest {
                        stream_id,
                        // 0 with its bit set is a valid, distinct request from "unchanged".
                        replica_count,
                        ack_count,
                        retention_ms,
                        retention_bytes,
                        epoch,
                    })
                }
            ),
        (stream_id(), offset()).prop_map(|(stream_id, start_offset)| {
            Request::TrimStream(TrimStreamRequest {
                stream_id,
                start_offset,
            })
        }),
        stream_id().prop_map(|stream_id| Request::DeleteStream(DeleteStreamRequest { stream_id })),
        (stream_id(), any::<u32>()).prop_map(|(start_stream_id, max_count)| {
            Request::ListStreams(ListStreamsRequest {
                start_stream_id,
                max_count,
            })
        }),
    ]
}

pub fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (error_code(), any::<u64>(), message()).prop_map(|(code, detail, message)| {
            Response::Error(ErrorResponse {
                code,
                detail,
                message,
            })
        }),
        Just(Response::Ping(PingResponse {})),
        (any::<u32>(), any::<u32>()).prop_map(|(interval, timeout)| {
            Response::Heartbeat(HeartbeatResponse {
                heartbeat_interval_ms: interval,
                session_timeout_ms: timeout,
            })
        }),
        node_id().prop_map(|node_id| Response::AllocateId(AllocateIdResponse { node_id })),
        Just(Response::ReportMetrics(ReportMetricsResponse {})),
        prop_oneof![Just(Role::Client), Just(Role::Admin)]
            .prop_map(|role| Response::Authenticate(AuthenticateResponse { role })),
        vec(cluster_node(), 0..4)
            .prop_map(|nodes| Response::DescribeCluster(DescribeClusterResponse { nodes })),
        (offset(), offset()).prop_map(|(base_offset, next_offset)| {
            Response::Append(AppendResponse {
                base_offset,
                next_offset,
            })
        }),
        (optional_offset(), offset(), optional_offset()).prop_map(
            |(confirmed_offset, next_offset, end_offset)| {
                Response::Fetch(FetchResponse {
                    confirmed_offset,
                    next_offset,
                    end_offset,
                })
            }
        ),
        range().prop_map(|range| Response::CreateRange(CreateRangeResponse { range })),
        (optional_offset(), optional_offset(), epoch()).prop_map(
            |(end_offset, durable_end, epoch)| {
                Response::SealRange(SealRangeResponse {
                    end_offset,
                    durable_end,
                    epoch,
                })
            }
        ),
        range().prop_map(|range| Response::DescribeRange(DescribeRangeResponse { range })),
        vec(range(), 0..4).prop_map(|ranges| Response::ListRanges(ListRangesResponse { ranges })),
        Just(Response::TrimRange(TrimRangeResponse {})),
        Just(Response::DeleteRange(DeleteRangeResponse {})),
        stream().prop_map(|stream| Response::CreateStream(CreateStreamResponse { stream })),
        stream().prop_map(|stream| Response::DescribeStream(DescribeStreamResponse { stream })),
        stream().prop_map(|stream| Response::UpdateStream(UpdateStreamResponse { stream })),
        stream().prop_map(|stream| Response::TrimStream(TrimStreamResponse { stream })),
        stream().prop_map(|stream| Response::DeleteStream(DeleteStreamResponse { stream })),
        vec(stream(), 0..4)
            .prop_map(|streams| Response::ListStreams(ListStreamsResponse { streams })),
    ]
}

/// Whether frames of this request may carry a payload.
pub fn request_has_payload(request: &Request) -> bool {
    matches!(request, Request::Ping(_) | Request::Append(_))
}

/// Whether frames of this response may carry a payload.
pub fn response_has_payload(response: &Response) -> bool {
    matches!(response, Response::Ping(_) | Response::Fetch(_))
}
