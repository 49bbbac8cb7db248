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
use wire::msg::{DeleteRangeRequest, Request, TrimRangeRequest};
use wire::{ErrorCode, ReplicaNode, Role};

use crate::command_log::CommandLog;
use crate::config::PmConfig;
use crate::data_nodes::DataNodes;
use crate::metrics::PmMetrics;
use crate::state::{Command, DroppedRange, Outcome, PmState, RangeRecord, Rejection, StreamRecord};

/// Commands applied but not yet durable, at most: the log's own queue bound stays out of reach,
/// so an append never fails for want of room.
const MAX_UNDURABLE_COMMANDS: u64 = 2048;
/// Streams listed per LIST_STREAMS when the request asks for "the page limit".
pub(crate) const LIST_STREAMS_PAGE: usize = 1024;

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
    pub(crate) creating: RefCell<BTreeSet<StreamId>>,
    pub(crate) create_done: Notify,
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
    /// The `auth` tokens connections prove.
    tokens: serve::Tokens,
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
        let tokens = config.auth.tokens();
        // The placement manager is an admin towards data nodes.
        let admin_token = config
            .auth
            .admin_token
            .as_ref()
            .map(|token| token.expose().to_string());
        let node_budget = Arc::new(NodeBudget::new(config.server.max_buffered_bytes));
        Pm {
            tokens,
            config,
            state: RefCell::new(state),
            log,
            last_appended: Cell::new(last_appended),
            log_failed: Cell::new(false),
            liveness: RefCell::new(BTreeMap::new()),
            data_nodes: DataNodes::new(timeout, admin_token),
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

    fn authenticate(&self, token: &str) -> Option<Role> {
        self.tokens.authenticate(token)
    }

    fn authorize(&self, role: Option<Role>, request: &Request) -> Result<(), Reply> {
        self.tokens
            .authorize(role, required_role(request), request.opcode())
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

/// The role a request needs at the placement manager (`docs/protocol.md` §5.21): applications
/// (client) manage and read their streams and ranges; membership, cluster state and deleting a
/// stream are for data nodes and operators (admin). Anything not listed needs admin.
pub fn required_role(request: &Request) -> Option<Role> {
    match request {
        Request::Ping(_) | Request::Authenticate(_) => None,
        Request::CreateStream(_)
        | Request::DescribeStream(_)
        | Request::UpdateStream(_)
        | Request::TrimStream(_)
        | Request::ListStreams(_)
        | Request::CreateRange(_)
        | Request::SealRange(_)
        | Request::DescribeRange(_)
        | Request::ListRanges(_) => Some(Role::Client),
        Request::Heartbeat(_)
        | Request::AllocateId(_)
        | Request::ReportMetrics(_)
        | Request::DescribeCluster(_)
        | Request::DeleteStream(_)
        | Request::TrimRange(_)
        | Request::DeleteRange(_)
        | Request::Append(_)
        | Request::Fetch(_)
        | Request::Goaway(_) => Some(Role::Admin),
    }
}

pub(crate) fn unexpected(outcome: &Outcome) -> Reply {
    Reply::error(
        ErrorCode::Internal,
        format!("the state machine answered {outcome:?} to another command"),
    )
}

pub(crate) fn node_not_found(node: NodeId) -> Reply {
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
        Rejection::RangeIndexNotNext { expected, .. } => {
            Reply::error_with_detail(ErrorCode::InvalidArgument, u64::from(expected.0), message)
        }
        Rejection::FutureEpoch { current } => {
            Reply::error_with_detail(ErrorCode::InvalidArgument, *current, message)
        }
        Rejection::StreamNotDeleted { .. }
        | Rejection::InvalidArgument(_)
        | Rejection::PreviousRangeOpen { .. } => Reply::error(ErrorCode::InvalidArgument, message),
    }
}
