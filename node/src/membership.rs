//! The data node as a member of a cluster: its id, and its heartbeats to the placement manager.
//!
//! On first start (no `node-id` file in the data directory) the node asks a placement manager of
//! `pm.addresses` for an id (ALLOCATE_ID) and keeps it in `<store.path>/node-id`, written
//! durably, so it has the same id for the life of its data. Then it sends HEARTBEAT every
//! `pm.heartbeat-interval-ms` to every address of `pm.addresses` (all members of a future
//! replicated placement manager hear from it), with its advertised address, its state, its range
//! count and its free disk. When it begins a clean shutdown it reports OFFLINE once, before it
//! drains, so the placement manager stops placing ranges on it at once instead of after the node
//! timeout.
//!
//! With `auth.admin-token` set, every connection to a placement manager first authenticates
//! with it (ALLOCATE_ID and HEARTBEAT need the admin role).
//!
//! Everything here runs on the node's main runtime thread and never blocks the workers; a
//! placement manager that does not answer costs a timeout per heartbeat, nothing else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use client::multiplexed::{decode_response, Connection};
use wire::msg::{AllocateIdRequest, AllocateIdResponse, HeartbeatRequest, HeartbeatResponse};
use wire::{NodeId, NodeState};

use crate::config::{parse_socket_address, Config};
use crate::metrics::Registry;

/// The file in the data directory that keeps the node's id.
pub const NODE_ID_FILE: &str = "node-id";
/// How long one request to a placement manager may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to get an id.
const MAX_ALLOCATE_BACKOFF: Duration = Duration::from_secs(5);

/// The node's id as kept in its data directory, if it has one.
pub fn load_node_id(data_directory: &Path) -> Result<Option<NodeId>, String> {
    let path = data_directory.join(NODE_ID_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let value = text.trim().strip_prefix("node-id=").unwrap_or(text.trim());
    value
        .parse::<u32>()
        .map(|id| Some(NodeId(id)))
        .map_err(|_| {
            format!(
                "{} holds {:?}, expected node-id=<number>; restore it or remove it to register as \
             a new node",
                path.display(),
                text.trim()
            )
        })
}

/// Keeps `node` as the node's id, durably.
pub fn save_node_id(data_directory: &Path, node: NodeId) -> Result<(), String> {
    let path = data_directory.join(NODE_ID_FILE);
    runtime::fs::write_file_durably(&path, format!("node-id={node}\n").as_bytes())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// What heartbeats need to know about the node.
pub struct Member {
    addresses: Vec<SocketAddr>,
    advertised: String,
    data_directory: PathBuf,
    /// `pm.heartbeat-interval-ms`; a placement manager that asks for more frequent heartbeats
    /// (in its HEARTBEAT answer) gets them.
    configured_interval: Duration,
    interval: Duration,
    /// `catalog.max-ranges`: a node holding that many takes no new range, and says so.
    max_ranges: u64,
    registry: Registry,
    connections: Vec<Option<Connection>>,
    /// `auth.admin-token`: each new connection to a placement manager authenticates with it.
    /// Never logged.
    admin_token: Option<String>,
}

impl Member {
    /// `None` when the node joins no placement manager (`pm.addresses` is empty).
    pub fn new(config: &Config, registry: Registry) -> Option<Member> {
        let addresses: Vec<SocketAddr> = config
            .pm
            .addresses
            .iter()
            .filter_map(|address| parse_socket_address(address))
            .collect();
        if addresses.is_empty() {
            return None;
        }
        Some(Member {
            connections: addresses.iter().map(|_| None).collect(),
            addresses,
            advertised: config.advertised_address(),
            data_directory: config.store.path.clone(),
            configured_interval: Duration::from_millis(config.pm.heartbeat_interval_ms),
            max_ranges: config.catalog.max_ranges as u64,
            interval: Duration::from_millis(config.pm.heartbeat_interval_ms),
            registry,
            admin_token: config
                .auth
                .admin_token
                .as_ref()
                .map(|token| token.expose().to_string()),
        })
    }

    /// The node's id: from its data directory, or allocated by a placement manager (retried
    /// until one answers).
    pub async fn node_id(&mut self) -> Result<NodeId, String> {
        if let Some(node) = load_node_id(&self.data_directory)? {
            return Ok(node);
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            for slot in 0..self.addresses.len() {
                let request = AllocateIdRequest {
                    address: self.advertised.clone(),
                };
                match self.call::<_, AllocateIdResponse>(slot, &request).await {
                    Ok(response) => {
                        save_node_id(&self.data_directory, response.node_id)?;
                        log::info!(
                            "registered with the placement manager at {} as node {}",
                            self.addresses[slot],
                            response.node_id
                        );
                        return Ok(response.node_id);
                    }
                    Err(reason) => log::warn!(
                        "cannot register with the placement manager at {}: {reason}; retrying",
                        self.addresses[slot]
                    ),
                }
            }
            runtime::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_ALLOCATE_BACKOFF);
        }
    }

    /// Heartbeats every interval, forever (the caller drops the future to stop).
    pub async fn heartbeat_forever(&mut self, node: NodeId) {
        let mut warned = vec![false; self.addresses.len()];
        loop {
            #[allow(clippy::needless_range_loop)] // `self.call` needs `self` mutably in the loop
            for slot in 0..self.addresses.len() {
                let ranges = self.registry.range_count();
                let request = self.heartbeat_request(node, serving_state(ranges, self.max_ranges));
                match self.call::<_, HeartbeatResponse>(slot, &request).await {
                    Ok(answer) => {
                        let wanted = Duration::from_millis(u64::from(answer.heartbeat_interval_ms));
                        self.interval = self
                            .configured_interval
                            .min(wanted.max(Duration::from_millis(10)));
                        if warned[slot] {
                            log::info!(
                                "the placement manager at {} answers heartbeats again",
                                self.addresses[slot]
                            );
                        }
                        warned[slot] = false;
                    }
                    Err(reason) => {
                        if !warned[slot] {
                            log::warn!(
                                "heartbeat to the placement manager at {} failed: {reason}",
                                self.addresses[slot]
                            );
                        }
                        warned[slot] = true;
                    }
                }
            }
            runtime::time::sleep(self.interval).await;
        }
    }

    /// Tells every placement manager the node is going OFFLINE (best effort, bounded).
    pub async fn report_offline(&mut self, node: NodeId) {
        for slot in 0..self.addresses.len() {
            let request = self.heartbeat_request(node, NodeState::Offline);
            match self.call::<_, HeartbeatResponse>(slot, &request).await {
                Ok(_) => log::info!(
                    "told the placement manager at {} that node {node} goes offline",
                    self.addresses[slot]
                ),
                Err(reason) => log::warn!(
                    "cannot tell the placement manager at {} that the node goes offline: {reason}",
                    self.addresses[slot]
                ),
            }
        }
    }

    fn heartbeat_request(&self, node: NodeId, state: NodeState) -> HeartbeatRequest {
        let (free, total) = disk_space(&self.data_directory).unwrap_or((0, 0));
        HeartbeatRequest {
            node_id: node,
            range_count: self.registry.range_count().min(u64::from(u32::MAX)) as u32,
            disk_free_bytes: free,
            disk_total_bytes: total,
            append_bytes_per_second: 0,
            state,
            address: self.advertised.clone(),
        }
    }

    async fn call<Q: wire::Message, A: wire::Message>(
        &mut self,
        slot: usize,
        request: &Q,
    ) -> Result<A, String> {
        let address = self.addresses[slot];
        if self.connections[slot]
            .as_ref()
            .is_none_or(|connection| connection.closed_reason().is_some())
        {
            let connection =
                runtime::time::timeout(REQUEST_TIMEOUT, Connection::connect(address, 4))
                    .await
                    .map_err(|_| "no connection within 2 s".to_string())?
                    .map_err(|error| error.to_string())?;
            if let Some(token) = &self.admin_token {
                // First on the connection: ALLOCATE_ID and HEARTBEAT need the admin role.
                runtime::time::timeout(REQUEST_TIMEOUT, connection.authenticate(token))
                    .await
                    .map_err(|_| "no answer to AUTHENTICATE within 2 s".to_string())?
                    .map_err(|error| error.to_string())?;
            }
            self.connections[slot] = Some(connection);
        }
        let connection = self.connections[slot].as_ref().expect("connected above");
        let result =
            match runtime::time::timeout(REQUEST_TIMEOUT, connection.request(request, &[])).await {
                Err(_) => Err("no answer within 2 s".to_string()),
                Ok(Err(error)) => Err(error.to_string()),
                Ok(Ok(frame)) => match decode_response::<A>(&frame) {
                    Ok(Ok((answer, _))) => Ok(answer),
                    Ok(Err(refusal)) => Err(format!("{}: {}", refusal.code, refusal.message)),
                    Err(error) => Err(error.to_string()),
                },
            };
        if result.is_err() {
            self.connections[slot] = None;
        }
        result
    }
}

/// The state a serving node reports: `READ_ONLY` once it holds `catalog.max-ranges` ranges (it
/// refuses new ones, so the placement manager should place them elsewhere), else `READ_WRITE`.
pub fn serving_state(range_count: u64, max_ranges: u64) -> NodeState {
    if range_count >= max_ranges {
        NodeState::ReadOnly
    } else {
        NodeState::ReadWrite
    }
}

/// Free and total bytes of the file system holding `directory`.
pub fn disk_space(directory: &Path) -> Option<(u64, u64)> {
    let stats = nix::sys::statvfs::statvfs(directory).ok()?;
    let fragment = stats.fragment_size() as u64;
    Some((
        stats.blocks_available() as u64 * fragment,
        stats.blocks() as u64 * fragment,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_at_its_range_limit_reports_read_only() {
        assert_eq!(serving_state(0, 100), NodeState::ReadWrite);
        assert_eq!(serving_state(99, 100), NodeState::ReadWrite);
        assert_eq!(serving_state(100, 100), NodeState::ReadOnly);
        assert_eq!(serving_state(150, 100), NodeState::ReadOnly);
    }

    #[test]
    fn the_node_id_file_round_trips_and_a_bad_one_is_named() {
        let directory = tempfile::tempdir().unwrap();
        assert_eq!(load_node_id(directory.path()).unwrap(), None);
        save_node_id(directory.path(), NodeId(7)).unwrap();
        assert_eq!(load_node_id(directory.path()).unwrap(), Some(NodeId(7)));
        std::fs::write(directory.path().join(NODE_ID_FILE), "node-id=seven\n").unwrap();
        let error = load_node_id(directory.path()).unwrap_err();
        assert!(
            error.contains("node-id") && error.contains("seven"),
            "{error}"
        );
    }
}
