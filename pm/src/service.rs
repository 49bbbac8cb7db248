//! The placement manager as a [`serve::Service`]: requests in, commands through the state
//! machine and the log, answers out.
//!
//! Everything runs on one runtime thread, so the state needs no lock. A request that changes
//! the state becomes a [`Command`]: it is applied to the in-memory state at once (so the next
//! request sees it, and every rule is checked in that one apply), appended to the command log,
//! and answered only once the log has made it durable. A request that only reads waits until
//! every command appended before it is durable (a read barrier), so nobody is ever told about a
//! change that a crash could still lose. A command the state machine rejects changes nothing
//! and is not logged.
//!
//! A failed log write is fatal: the in-memory state then holds a change the disk does not, so
//! the placement manager answers `STORAGE_UNAVAILABLE` from then on and shuts down; its restart
//! recovers what is durable.
//!
//! Node liveness (heartbeats, free disk, range counts) is soft state here, not logged: it is
//! rebuilt from the next round of heartbeats after a restart.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ids::{NodeId, RangeKey, StreamId};
use serve::local::{Notified, Notify};
use serve::{ConnectionCounters, Limits, NodeBudget, Reply, Service};
use wire::msg::{
    AllocateIdResponse, CreateRangeRequest, CreateRangeResponse, CreateStreamResponse,
    DeleteRangeRequest, DeleteStreamResponse, DescribeClusterResponse, DescribeRangeResponse,
    DescribeStreamResponse, HeartbeatResponse, ListRangesResponse, ListStreamsResponse,
    ReportMetricsResponse, Request, Response, SealRangeResponse, TrimRangeRequest,
    TrimStreamResponse, UpdateStreamResponse,
};
use wire::{ErrorCode, ReplicaNode};

use crate::command_log::CommandLog;
use crate::config::PmConfig;
use crate::data_nodes::DataNodes;
use crate::metrics::PmMetrics;
use crate::state::placement::{self, Candidate};
use crate::state::{
    Command, DroppedRange, NodeState, Outcome, PmState, RangeRecord, Rejection, StreamRecord,
};

/// Commands applied but not yet durable, at most: the log's own queue bound stays out of reach,
/// so an append never fails for want of room.
const MAX_UNDURABLE_COMMANDS: u64 = 2048;
/// Streams listed per LIST_STREAMS when the request asks for "the page limit".
const LIST_STREAMS_PAGE: usize = 1024;

/// What heartbeats tell about a node (soft state).
#[derive(Debug, Clone)]
pub struct Liveness {
    pub last_heartbeat: Instant,
    pub reported_state: wire::NodeState,
    pub range_count: u32,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub append_bytes_per_second: u64,
}

/// The placement manager's state on its runtime thread.
pub struct Pm {
    pub(crate) config: PmConfig,
    pub(crate) state: RefCell<PmState>,
    pub(crate) log: CommandLog,
    /// Index of the last command appended to the log.
    last_appended: Cell<u64>,
    /// Set when the log failed: nothing more is accepted.
    log_failed: Cell<bool>,
    pub(crate) liveness: RefCell<BTreeMap<NodeId, Liveness>>,
    pub(crate) data_nodes: DataNodes,
    /// Streams with a CREATE_RANGE being placed: a second one for the same stream waits.
    creating: RefCell<BTreeSet<StreamId>>,
    create_done: Notify,
    /// Replicas being created on data nodes and not yet committed: reconciliation must not
    /// remove them.
    pub(crate) uncommitted: RefCell<BTreeSet<(NodeId, RangeKey)>>,
    /// Range sizes data nodes reported (soft state, for retention by size).
    pub(crate) reported_sizes: RefCell<HashMap<RangeKey, u64>>,
    shutting_down: Cell<bool>,
    shutdown: Notify,
    counters: ConnectionCounters,
    /// Bytes held by all connections (`server.max-buffered-bytes`).
    node_budget: Arc<NodeBudget>,
    pub(crate) metrics: PmMetrics,
    pub(crate) commands_since_snapshot: Cell<u64>,
}

/// Milliseconds since the Unix epoch, the clock commands carry.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Pm {
    pub fn new(config: PmConfig, state: PmState, log: CommandLog) -> Pm {
        let last_appended = log.next_index().saturating_sub(1);
        let timeout = Duration::from_millis(config.cluster.node_request_timeout_ms);
        let node_budget = Arc::new(NodeBudget::new(config.server.max_buffered_bytes));
        Pm {
            config,
            state: RefCell::new(state),
            log,
            last_appended: Cell::new(last_appended),
            log_failed: Cell::new(false),
            liveness: RefCell::new(BTreeMap::new()),
            data_nodes: DataNodes::new(timeout),
            creating: RefCell::new(BTreeSet::new()),
            create_done: Notify::default(),
            uncommitted: RefCell::new(BTreeSet::new()),
            reported_sizes: RefCell::new(HashMap::new()),
            shutting_down: Cell::new(false),
            shutdown: Notify::default(),
            counters: ConnectionCounters::default(),
            node_budget,
            metrics: PmMetrics::default(),
            commands_since_snapshot: Cell::new(0),
        }
    }

    /// Starts the shutdown: connections stop reading and drain.
    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        self.shutdown.notify();
    }

    pub(crate) fn is_shutting_down_now(&self) -> bool {
        self.shutting_down.get()
    }

    /// Resolves once shutdown began (asked for, or because the log failed).
    pub(crate) async fn shutdown_wait(&self) {
        loop {
            let notified = self.shutdown.notified();
            if self.shutting_down.get() {
                return;
            }
            notified.await;
        }
    }

    /// Gives the log back once nothing else holds the placement manager.
    pub(crate) fn into_log(self) -> CommandLog {
        self.log
    }

    /// The log failed; the placement manager must stop.
    pub fn has_failed(&self) -> bool {
        self.log_failed.get()
    }

    /// Index of the last command appended (durable or not).
    pub fn last_appended(&self) -> u64 {
        self.last_appended.get()
    }

    /// Applies `command`; if it changed the state, logs it and waits until it is durable.
    pub(crate) async fn execute(&self, command: Command) -> Result<Outcome, Reply> {
        self.check_writable()?;
        while self.last_appended.get() >= self.log.durable_index() + MAX_UNDURABLE_COMMANDS {
            self.wait_durable(self.last_appended.get()).await?;
        }
        let revision = self.state.borrow().revision();
        let outcome = self
            .state
            .borrow_mut()
            .apply(&command)
            .map_err(|rejection| {
                self.metrics.add(&self.metrics.rejections, 1);
                rejection_reply(&rejection)
            })?;
        if self.state.borrow().revision() == revision {
            // An idempotent repeat: nothing to log, but what it reports may rest on commands
            // not yet durable.
            self.read_barrier().await?;
            return Ok(outcome);
        }
        let index = match self.log.append(command.encode()) {
            Ok((index, _ticket)) => index,
            Err(error) => return Err(self.fail(&format!("appending a command failed: {error}"))),
        };
        self.last_appended.set(index);
        self.metrics.add(&self.metrics.commands, 1);
        self.commands_since_snapshot
            .set(self.commands_since_snapshot.get() + 1);
        self.wait_durable(index).await?;
        Ok(outcome)
    }

    /// Waits until every command appended so far is durable.
    pub(crate) async fn read_barrier(&self) -> Result<(), Reply> {
        self.check_writable()?;
        let index = self.last_appended.get();
        if index > self.log.durable_index() {
            self.wait_durable(index).await?;
        }
        Ok(())
    }

    async fn wait_durable(&self, index: u64) -> Result<(), Reply> {
        match self.log.durable(index).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.fail(&format!("the command log failed: {error}"))),
        }
    }

    fn check_writable(&self) -> Result<(), Reply> {
        if self.log_failed.get() {
            return Err(Reply::error(
                ErrorCode::StorageUnavailable,
                "the placement manager's log failed; it is shutting down (retry once it is back)",
            ));
        }
        Ok(())
    }

    fn fail(&self, message: &str) -> Reply {
        if !self.log_failed.replace(true) {
            log::error!("{message}; the placement manager stops (its restart recovers the log)");
            self.begin_shutdown();
        }
        Reply::error(
            ErrorCode::StorageUnavailable,
            format!("{message}; retry once the placement manager is back"),
        )
    }

    /// Whether `node` heartbeated within the node timeout.
    pub(crate) fn is_alive(&self, node: NodeId, now: Instant) -> bool {
        let timeout = Duration::from_millis(self.config.cluster.node_timeout_ms);
        self.liveness
            .borrow()
            .get(&node)
            .is_some_and(|live| now.duration_since(live.last_heartbeat) < timeout)
    }

    /// The address of a registered node.
    pub(crate) fn address_of(&self, node: NodeId) -> Option<String> {
        self.state
            .borrow()
            .node(node)
            .map(|record| record.address.clone())
    }

    pub(crate) fn stream_record(&self, stream: &StreamRecord) -> wire::Stream {
        wire::Stream {
            id: stream.id,
            replica_count: stream.replica_count,
            ack_count: stream.ack_count,
            retention_ms: stream.retention_ms,
            retention_bytes: stream.retention_bytes,
            start_offset: stream.start_offset,
            epoch: stream.epoch,
            deleted: stream.deleted,
        }
    }

    pub(crate) fn range_record(&self, range: &RangeRecord) -> wire::Range {
        let state = self.state.borrow();
        wire::Range {
            stream_id: range.key.stream_id,
            index: range.key.range_index,
            epoch: range.epoch,
            start_offset: range.start,
            end_offset: range.end,
            next_offset: None,
            confirmed_offset: None,
            replica_count_target: range.replica_count,
            ack_count: range.ack_count,
            under_replicated: range.under_replicated,
            size_bytes: range
                .size_bytes
                .or_else(|| self.reported_sizes.borrow().get(&range.key).copied()),
            replicas: range
                .nodes
                .iter()
                .map(|node| ReplicaNode {
                    node_id: *node,
                    address: state
                        .node(*node)
                        .map(|record| record.address.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    async fn handle(self: &Rc<Self>, request: Request) -> Reply {
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
                            end_offset: range.end.unwrap_or(end),
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

    /// CREATE_RANGE at the placement manager: check, place, create the replicas on the chosen
    /// data nodes, and only then commit the range. One create per stream at a time.
    async fn create_range(self: &Rc<Self>, request: CreateRangeRequest) -> Reply {
        let stream = request.stream_id;
        while self.creating.borrow().contains(&stream) {
            self.create_done.notified().await;
        }
        self.creating.borrow_mut().insert(stream);
        let reply = self.place_and_create(request).await;
        self.creating.borrow_mut().remove(&stream);
        self.create_done.notify();
        reply
    }

    async fn place_and_create(self: &Rc<Self>, request: CreateRangeRequest) -> Reply {
        let key = RangeKey::new(request.stream_id, request.range_index);
        if let Err(reply) = self.read_barrier().await {
            return reply;
        }
        // An identical repeat (a writer retrying after a lost answer) gets the committed range.
        let (stream, previous_nodes) = {
            let state = self.state.borrow();
            if let Some(existing) = state.range(key) {
                if existing.epoch == request.epoch && existing.start == request.start_offset {
                    return Reply::new(Response::CreateRange(CreateRangeResponse {
                        range: self.range_record(existing),
                    }));
                }
            }
            let Some(stream) = state.stream(request.stream_id).cloned() else {
                return rejection_reply(&Rejection::StreamNotFound {
                    stream: request.stream_id,
                });
            };
            let previous = request
                .range_index
                .0
                .checked_sub(1)
                .and_then(|index| state.range(RangeKey::new(stream.id, ids::RangeIndex(index))))
                .map(|range| range.nodes.clone())
                .unwrap_or_default();
            (stream, previous)
        };
        // Check everything the commit will check, with placeholder nodes, before asking any
        // data node for anything: a stale writer must not leave replicas behind.
        if let Err(rejection) = self.check_create(&request, &stream) {
            return rejection_reply(&rejection);
        }
        let now = Instant::now();
        let mut candidates = self.candidates(now);
        let placement = match placement::place(
            &candidates,
            stream.replica_count,
            stream.ack_count,
            &previous_nodes,
            self.config.cluster.min_free_disk_bytes,
        ) {
            Ok(placement) => placement,
            Err(rejection) => return rejection_reply(&rejection),
        };
        let mut created: Vec<NodeId> = Vec::new();
        let mut tried: BTreeSet<NodeId> = BTreeSet::new();
        let mut wanted = placement.nodes.clone();
        loop {
            let batch: Vec<NodeId> = wanted
                .drain(..)
                .filter(|node| tried.insert(*node))
                .collect();
            if batch.is_empty() {
                break;
            }
            let attempts = batch.iter().map(|node| {
                let node = *node;
                let pm = Rc::clone(self);
                let request = CreateRangeRequest {
                    replica_count_target: stream.replica_count,
                    ack_count: stream.ack_count,
                    replicas: Vec::new(),
                    ..request.clone()
                };
                async move {
                    let Some(address) = pm.address_of(node) else {
                        return (node, Err("not registered".to_string()));
                    };
                    pm.uncommitted.borrow_mut().insert((node, key));
                    let result = pm.data_nodes.create_range(&address, &request).await;
                    (
                        node,
                        result.map(|_| ()).map_err(|failure| failure.to_string()),
                    )
                }
            });
            for (node, result) in join_all(attempts.collect()).await {
                match result {
                    Ok(()) => created.push(node),
                    Err(reason) => {
                        log::warn!("creating range {key} on node {node} failed: {reason}");
                        self.metrics.add(&self.metrics.node_request_failures, 1);
                    }
                }
            }
            let missing = usize::from(stream.replica_count).saturating_sub(created.len());
            if missing == 0 {
                break;
            }
            // Replace the nodes that failed with the next eligible ones not tried yet.
            candidates.retain(|candidate| !tried.contains(&candidate.node));
            let ranked = placement::place(
                &candidates,
                missing.min(usize::from(crate::state::MAX_REPLICA_COUNT)) as u8,
                1,
                &previous_nodes,
                self.config.cluster.min_free_disk_bytes,
            );
            match ranked {
                Ok(more) => wanted = more.nodes,
                Err(_) => break,
            }
        }
        if created.len() < usize::from(stream.ack_count) {
            self.forget_uncommitted(key, &tried);
            self.spawn_deletes(vec![DroppedRange {
                key,
                nodes: created.clone(),
            }]);
            return Reply::error_with_detail(
                ErrorCode::NoAvailableNodes,
                created.len() as u64,
                format!(
                    "range {key} could be created on {} node(s), fewer than the ack count {}; \
                     retry once more data nodes are live",
                    created.len(),
                    stream.ack_count
                ),
            );
        }
        let command = Command::CreateRange {
            stream: request.stream_id,
            index: request.range_index,
            epoch: request.epoch,
            start: request.start_offset,
            nodes: created.clone(),
            now_ms: now_ms(),
        };
        let result = self.execute(command).await;
        self.forget_uncommitted(key, &tried);
        match result {
            Ok(Outcome::RangeCreated(range)) => {
                if range.under_replicated {
                    log::warn!(
                        "range {key} created under-replicated on {} of {} nodes",
                        range.nodes.len(),
                        range.replica_count
                    );
                }
                Reply::new(Response::CreateRange(CreateRangeResponse {
                    range: self.range_record(&range),
                }))
            }
            Ok(other) => unexpected(&other),
            Err(reply) => {
                // Refused at commit (the writer was fenced meanwhile): the replicas go.
                self.spawn_deletes(vec![DroppedRange {
                    key,
                    nodes: created,
                }]);
                reply
            }
        }
    }

    fn forget_uncommitted(&self, key: RangeKey, nodes: &BTreeSet<NodeId>) {
        let mut uncommitted = self.uncommitted.borrow_mut();
        for node in nodes {
            uncommitted.remove(&(*node, key));
        }
    }

    /// The rules CREATE_RANGE's commit will check, checked on a scratch copy of the stream's
    /// part of the state with the stream's registered nodes standing in for the placement.
    fn check_create(
        &self,
        request: &CreateRangeRequest,
        stream: &StreamRecord,
    ) -> Result<(), Rejection> {
        let state = self.state.borrow();
        let stand_ins: Vec<NodeId> = state
            .nodes()
            .take(usize::from(stream.replica_count))
            .map(|node| node.id)
            .collect();
        let mut scratch = state.scratch_for(stream.id);
        let command = Command::CreateRange {
            stream: request.stream_id,
            index: request.range_index,
            epoch: request.epoch,
            start: request.start_offset,
            nodes: stand_ins,
            now_ms: 0,
        };
        match scratch.apply(&command) {
            Ok(_) => Ok(()),
            // Placement decides about nodes; everything else is final.
            Err(Rejection::NotEnoughNodes { .. }) | Err(Rejection::NodeNotFound { .. }) => Ok(()),
            Err(rejection) => Err(rejection),
        }
    }

    /// Every registered node as a placement candidate, with what heartbeats said.
    pub(crate) fn candidates(&self, now: Instant) -> Vec<Candidate> {
        let state = self.state.borrow();
        let liveness = self.liveness.borrow();
        state
            .nodes()
            .map(|node| {
                let live = liveness.get(&node.id);
                Candidate {
                    node: node.id,
                    state: node.state,
                    alive: self.is_alive(node.id, now),
                    free_disk_bytes: live.map_or(0, |live| live.disk_free_bytes),
                    range_count: live.map_or(0, |live| u64::from(live.range_count)),
                }
            })
            .collect()
    }

    /// After a trim: the dropped ranges go from their nodes, and the range that now starts
    /// below the trim point is trimmed on its nodes.
    pub(crate) fn spawn_retention(
        self: &Rc<Self>,
        stream: &StreamRecord,
        dropped: Vec<DroppedRange>,
    ) {
        self.spawn_deletes(dropped);
        let first = self
            .state
            .borrow()
            .ranges_of(stream.id)
            .next()
            .filter(|range| range.start < stream.start_offset)
            .cloned();
        if let Some(range) = first {
            let pm = Rc::clone(self);
            let offset = stream.start_offset;
            runtime::spawn(async move {
                for node in &range.nodes {
                    let Some(address) = pm.address_of(*node) else {
                        continue;
                    };
                    let request = TrimRangeRequest {
                        stream_id: range.key.stream_id,
                        range_index: range.key.range_index,
                        offset,
                    };
                    if let Err(failure) = pm.data_nodes.trim_range(&address, &request).await {
                        log::warn!(
                            "trimming range {} on node {node} to {offset} failed: {failure} \
                             (maintenance retries)",
                            range.key
                        );
                    }
                }
            });
        }
    }

    /// Tells the nodes holding `ranges` to delete them; failures are retried by maintenance.
    pub(crate) fn spawn_deletes(self: &Rc<Self>, ranges: Vec<DroppedRange>) {
        if ranges.iter().all(|range| range.nodes.is_empty()) {
            return;
        }
        let pm = Rc::clone(self);
        runtime::spawn(async move {
            for range in ranges {
                for node in range.nodes {
                    let Some(address) = pm.address_of(node) else {
                        continue;
                    };
                    let request = DeleteRangeRequest {
                        stream_id: range.key.stream_id,
                        range_index: range.key.range_index,
                    };
                    match pm.data_nodes.delete_range(&address, &request).await {
                        Ok(()) => log::debug!("range {} deleted on node {node}", range.key),
                        Err(failure) => log::warn!(
                            "deleting range {} on node {node} failed: {failure} (maintenance \
                             retries)",
                            range.key
                        ),
                    }
                }
            }
        });
    }
}

impl Service for Pm {
    fn name(&self) -> &'static str {
        "placement manager"
    }

    fn limits(&self) -> Limits {
        Limits {
            max_frame_size_bytes: self.config.server.max_frame_size_bytes,
            max_in_flight_per_connection: self.config.server.max_in_flight_per_connection,
            idle_timeout_ms: self.config.server.idle_timeout_ms,
            max_buffered_bytes_per_connection: self.config.server.max_buffered_bytes_per_connection,
            max_buffered_bytes: self.config.server.max_buffered_bytes,
        }
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    fn shutdown_notified(&self) -> Notified {
        self.shutdown.notified()
    }

    fn counters(&self) -> &ConnectionCounters {
        &self.counters
    }

    fn node_budget(&self) -> &Arc<NodeBudget> {
        &self.node_budget
    }

    async fn call(self: &Rc<Self>, request: Request, _payload: Bytes, received: Instant) -> Reply {
        let operation = request.opcode();
        let reply = self.handle(request).await;
        self.metrics
            .count(operation, reply.is_error(), received.elapsed());
        reply
    }
}

/// Runs every future to completion on this thread; their outputs in order.
async fn join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let handles: Vec<_> = futures.into_iter().map(runtime::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await);
    }
    outputs
}

fn unexpected(outcome: &Outcome) -> Reply {
    Reply::error(
        ErrorCode::Internal,
        format!("the state machine answered {outcome:?} to another command"),
    )
}

fn node_not_found(node: NodeId) -> Reply {
    rejection_reply(&Rejection::NodeNotFound { node })
}

/// The one place a refusal of the state machine becomes a protocol error.
pub fn rejection_reply(rejection: &Rejection) -> Reply {
    let message = rejection.to_string();
    match rejection {
        Rejection::StreamNotFound { .. } => Reply::error(ErrorCode::StreamNotFound, message),
        Rejection::StreamDeleted { .. } => Reply::error(ErrorCode::StreamDeleted, message),
        Rejection::StaleEpoch { current } => {
            Reply::error_with_detail(ErrorCode::StaleEpoch, *current, message)
        }
        Rejection::RangeNotFound { .. } => Reply::error(ErrorCode::RangeNotFound, message),
        Rejection::RangeAlreadyExists { .. } => {
            Reply::error(ErrorCode::RangeAlreadyExists, message)
        }
        Rejection::RangeSealed { end } => {
            Reply::error_with_detail(ErrorCode::RangeSealed, *end, message)
        }
        Rejection::NotEnoughNodes { live, .. } => {
            Reply::error_with_detail(ErrorCode::NoAvailableNodes, *live as u64, message)
        }
        Rejection::NodeNotFound { .. } => Reply::error(ErrorCode::NodeNotFound, message),
        Rejection::TrimPastEnd { end } => {
            Reply::error_with_detail(ErrorCode::OffsetOutOfRange, *end, message)
        }
        Rejection::FutureEpoch { current } => {
            Reply::error_with_detail(ErrorCode::InvalidArgument, *current, message)
        }
        Rejection::StreamNotDeleted { .. }
        | Rejection::InvalidArgument(_)
        | Rejection::PreviousRangeOpen { .. } => Reply::error(ErrorCode::InvalidArgument, message),
    }
}
