//! What answers each request at the placement manager: state changes become commands through
//! `Pm::execute`, reads wait behind `Pm::read_barrier`; node heartbeats (soft liveness, with a
//! logged command only when a node's reported state changes) and DESCRIBE_CLUSTER live here too.
//! CREATE_RANGE is in `create_range.rs`.

use std::rc::Rc;
use std::time::Instant;

use ids::{RangeKey, StreamId};
use serve::Reply;
use wire::msg::{
    AllocateIdResponse, CreateStreamResponse, DeleteStreamResponse, DescribeClusterResponse,
    DescribeRangeResponse, DescribeStreamResponse, HeartbeatResponse, ListRangesResponse,
    ListStreamsResponse, ReportMetricsResponse, Request, Response, SealRangeResponse,
    TrimStreamResponse, UpdateStreamResponse,
};
use wire::ErrorCode;

use crate::service::{
    node_not_found, now_ms, rejection_reply, unexpected, Liveness, Pm, LIST_STREAMS_PAGE,
};
use crate::state::{Command, NodeState, Outcome, RangeRecord, Rejection};

impl Pm {
    pub(crate) async fn handle(self: &Rc<Self>, request: Request) -> Reply {
        match request {
            Request::Ping(_) => Reply::new(Response::Ping(wire::msg::PingResponse {})),
            Request::AllocateId(request) => {
                let command = Command::RegisterNode {
                    address: request.address,
                    now_ms: now_ms(),
                };
                match self.execute(command).await {
                    Ok(Outcome::NodeRegistered(node)) => {
                        log::info!("node {} registered at {}", node.id, node.address);
                        Reply::new(Response::AllocateId(AllocateIdResponse {
                            node_id: node.id,
                        }))
                    }
                    Ok(other) => unexpected(&other),
                    Err(reply) => reply,
                }
            }
            Request::Heartbeat(request) => self.heartbeat(request).await,
            Request::ReportMetrics(request) => {
                if self.state.borrow().node(request.node_id).is_none() {
                    return node_not_found(request.node_id);
                }
                Reply::new(Response::ReportMetrics(ReportMetricsResponse {}))
            }
            Request::DescribeCluster(_) => self.describe_cluster(),
            Request::CreateStream(request) => {
                let command = Command::CreateStream {
                    replica_count: request.replica_count,
                    ack_count: request.ack_count,
                    retention_ms: request.retention_ms,
                    retention_bytes: request.retention_bytes,
                    now_ms: now_ms(),
                };
                match self.execute(command).await {
                    Ok(Outcome::StreamCreated(stream)) => {
                        Reply::new(Response::CreateStream(CreateStreamResponse {
                            stream: self.stream_record(&stream),
                        }))
                    }
                    Ok(other) => unexpected(&other),
                    Err(reply) => reply,
                }
            }
            Request::DescribeStream(request) => {
                if let Err(reply) = self.read_barrier().await {
                    return reply;
                }
                let state = self.state.borrow();
                match state.stream(request.stream_id) {
                    Some(stream) => Reply::new(Response::DescribeStream(DescribeStreamResponse {
                        stream: self.stream_record(stream),
                    })),
                    None => rejection_reply(&Rejection::StreamNotFound {
                        stream: request.stream_id,
                    }),
                }
            }
            Request::UpdateStream(request) => {
                let command = Command::UpdateStream {
                    stream: request.stream_id,
                    replica_count: request.replica_count,
                    ack_count: request.ack_count,
                    retention_ms: request.retention_ms,
                    retention_bytes: request.retention_bytes,
                    epoch: request.epoch,
                };
                match self.execute(command).await {
                    Ok(Outcome::StreamUpdated(stream)) => {
                        Reply::new(Response::UpdateStream(UpdateStreamResponse {
                            stream: self.stream_record(&stream),
                        }))
                    }
                    Ok(other) => unexpected(&other),
                    Err(reply) => reply,
                }
            }
            Request::TrimStream(request) => {
                let command = Command::TrimStream {
                    stream: request.stream_id,
                    offset: request.start_offset,
                };
                match self.execute(command).await {
                    Ok(Outcome::StreamTrimmed { stream, dropped }) => {
                        self.spawn_retention(&stream, dropped);
                        Reply::new(Response::TrimStream(TrimStreamResponse {
                            stream: self.stream_record(&stream),
                        }))
                    }
                    Ok(other) => unexpected(&other),
                    Err(reply) => reply,
                }
            }
            Request::DeleteStream(request) => {
                let command = Command::DeleteStream {
                    stream: request.stream_id,
                };
                match self.execute(command).await {
                    Ok(Outcome::StreamDeleted { stream, ranges }) => {
                        self.spawn_deletes(ranges);
                        Reply::new(Response::DeleteStream(DeleteStreamResponse {
                            stream: self.stream_record(&stream),
                        }))
                    }
                    Ok(other) => unexpected(&other),
                    Err(reply) => reply,
                }
            }
            Request::ListStreams(request) => {
                if let Err(reply) = self.read_barrier().await {
                    return reply;
                }
                let max = match request.max_count {
                    0 => LIST_STREAMS_PAGE,
                    count => (count as usize).min(LIST_STREAMS_PAGE),
                };
                let state = self.state.borrow();
                let streams = state
                    .list_streams(request.start_stream_id, max)
                    .into_iter()
                    .map(|stream| self.stream_record(stream))
                    .collect();
                Reply::new(Response::ListStreams(ListStreamsResponse { streams }))
            }
            Request::CreateRange(request) => self.create_range(request).await,
            Request::SealRange(request) => {
                if request.fence_only {
                    return Reply::error(
                        ErrorCode::InvalidArgument,
                        "a fence-only SEAL_RANGE is for data nodes; the placement manager records ends",
                    );
                }
                let Some(end) = request.end_offset else {
                    return Reply::error(
                        ErrorCode::InvalidArgument,
                        "SEAL_RANGE at the placement manager needs the end to record",
                    );
                };
                let command = Command::SealRange {
                    stream: request.stream_id,
                    index: request.range_index,
                    epoch: request.epoch,
                    end,
                    size_bytes: None,
                    now_ms: now_ms(),
                };
                match self.execute(command).await {
                    Ok(Outcome::RangeSealed(range)) => {
                        Reply::new(Response::SealRange(SealRangeResponse {
                            end_offset: Some(range.end.unwrap_or(end)),
                            durable_end: None,
                            epoch: range.epoch,
                        }))
                    }
                    Ok(other) => unexpected(&other),
                    Err(reply) => reply,
                }
            }
            Request::DescribeRange(request) => {
                if let Err(reply) = self.read_barrier().await {
                    return reply;
                }
                let key = RangeKey::new(request.stream_id, request.range_index);
                let range = self.state.borrow().range(key).cloned();
                match range {
                    Some(range) => Reply::new(Response::DescribeRange(DescribeRangeResponse {
                        range: self.range_record(&range),
                    })),
                    None => rejection_reply(&Rejection::RangeNotFound { range: key }),
                }
            }
            Request::ListRanges(request) => {
                if let Err(reply) = self.read_barrier().await {
                    return reply;
                }
                let ranges: Vec<RangeRecord> = {
                    let state = self.state.borrow();
                    match request.stream_id {
                        Some(stream) if state.stream(stream).is_none() => {
                            return rejection_reply(&Rejection::StreamNotFound { stream });
                        }
                        Some(stream) => state.ranges_of(stream).cloned().collect(),
                        None => {
                            let streams: Vec<StreamId> = state
                                .list_streams(StreamId(0), usize::MAX)
                                .iter()
                                .map(|stream| stream.id)
                                .collect();
                            streams
                                .into_iter()
                                .flat_map(|stream| state.ranges_of(stream).cloned())
                                .collect()
                        }
                    }
                };
                let ranges = ranges
                    .iter()
                    .map(|range| self.range_record(range))
                    .collect();
                Reply::new(Response::ListRanges(ListRangesResponse { ranges }))
            }
            Request::Goaway(_) => {
                Reply::error(ErrorCode::Internal, "GOAWAY is handled by the connection")
            }
            other => Reply::error_with_detail(
                ErrorCode::UnknownOpcode,
                u64::from(other.opcode().as_u16()),
                format!(
                    "{} is not served by the placement manager; send it to a data node",
                    other.opcode()
                ),
            ),
        }
    }

    async fn heartbeat(&self, request: wire::msg::HeartbeatRequest) -> Reply {
        let registered = self
            .state
            .borrow()
            .node(request.node_id)
            .map(|node| node.state);
        let Some(registered) = registered else {
            return node_not_found(request.node_id);
        };
        let reported = match request.state {
            wire::NodeState::ReadWrite => NodeState::ReadWrite,
            wire::NodeState::ReadOnly => NodeState::ReadOnly,
            wire::NodeState::Offline => NodeState::Offline,
        };
        let first = {
            let mut liveness = self.liveness.borrow_mut();
            let first = !liveness.contains_key(&request.node_id);
            liveness.insert(
                request.node_id,
                Liveness {
                    last_heartbeat: Instant::now(),
                    reported_state: request.state,
                    range_count: request.range_count,
                    disk_free_bytes: request.disk_free_bytes,
                    disk_total_bytes: request.disk_total_bytes,
                    append_bytes_per_second: request.append_bytes_per_second,
                },
            );
            first
        };
        if first {
            log::info!(
                "node {} at {} is heartbeating ({:?})",
                request.node_id,
                request.address,
                request.state
            );
        }
        if reported != registered {
            // A node's own report (OFFLINE at shutdown, READ_WRITE again at start) is logged:
            // placement reads the registered state.
            let command = Command::SetNodeState {
                node: request.node_id,
                state: reported,
            };
            if let Err(reply) = self.execute(command).await {
                return reply;
            }
            log::info!(
                "node {} is now {:?} (was {registered:?})",
                request.node_id,
                reported
            );
        }
        Reply::new(Response::Heartbeat(HeartbeatResponse {
            heartbeat_interval_ms: self.config.cluster.heartbeat_interval_ms as u32,
            session_timeout_ms: self.config.cluster.node_timeout_ms as u32,
        }))
    }

    fn describe_cluster(&self) -> Reply {
        let now = Instant::now();
        let state = self.state.borrow();
        let liveness = self.liveness.borrow();
        let nodes = state
            .nodes()
            .map(|node| {
                let live = liveness.get(&node.id);
                wire::msg::ClusterNode {
                    node_id: node.id,
                    range_count: live.map_or(0, |live| live.range_count),
                    disk_free_bytes: live.map_or(0, |live| live.disk_free_bytes),
                    disk_total_bytes: live.map_or(0, |live| live.disk_total_bytes),
                    last_heartbeat_age_ms: live.map_or(u64::MAX, |live| {
                        now.duration_since(live.last_heartbeat).as_millis() as u64
                    }),
                    state: match node.state {
                        NodeState::ReadWrite => wire::NodeState::ReadWrite,
                        NodeState::ReadOnly => wire::NodeState::ReadOnly,
                        NodeState::Offline => wire::NodeState::Offline,
                    },
                    alive: self.is_alive(node.id, now),
                    address: node.address.clone(),
                }
            })
            .collect();
        Reply::new(Response::DescribeCluster(DescribeClusterResponse { nodes }))
    }
}
