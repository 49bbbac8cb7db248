//! The placement manager's side of talking to data nodes: create, trim, delete and list the
//! replicas of ranges.
//!
//! One multiplexed connection per node address, opened on first use and dropped when it fails,
//! so the next request reconnects. Every request is bounded by `cluster.node-request-timeout-ms`:
//! a node that does not answer in time is treated as failed for that request (placement then
//! picks another node). Everything runs on the placement manager's one runtime thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use client::multiplexed::{decode_response, Connection};
use wire::msg::{
    CreateRangeRequest, CreateRangeResponse, DeleteRangeRequest, DeleteRangeResponse,
    ListRangesRequest, ListRangesResponse, TrimRangeRequest, TrimRangeResponse,
};
use wire::{Message, Range};

use crate::config::parse_socket_address;

/// Requests one placement manager keeps in flight on one data-node connection.
const MAX_IN_FLIGHT_PER_NODE: usize = 64;

/// Why a request to a data node failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFailure {
    /// No answer in time, or the connection failed: the node may be down.
    Unreachable(String),
    /// The node answered with an error response.
    Refused {
        code: wire::ErrorCode,
        message: String,
    },
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeFailure::Unreachable(reason) => write!(formatter, "unreachable: {reason}"),
            NodeFailure::Refused { code, message } => write!(formatter, "{code}: {message}"),
        }
    }
}

/// Connections to data nodes, by address.
pub struct DataNodes {
    timeout: Duration,
    /// `auth.admin-token`: each new connection authenticates with it (the data nodes must
    /// hold the same admin token). Never logged.
    admin_token: Option<String>,
    connections: RefCell<HashMap<String, Rc<Connection>>>,
}

impl DataNodes {
    pub fn new(timeout: Duration, admin_token: Option<String>) -> DataNodes {
        DataNodes {
            timeout,
            admin_token,
            connections: RefCell::new(HashMap::new()),
        }
    }

    /// Creates the replica of `request`'s range on the node at `address`.
    pub async fn create_range(
        &self,
        address: &str,
        request: &CreateRangeRequest,
    ) -> Result<Range, NodeFailure> {
        let response: CreateRangeResponse = self.call(address, request).await?;
        Ok(response.range)
    }

    /// Drops whole batches below `request.offset` on the node at `address`.
    pub async fn trim_range(
        &self,
        address: &str,
        request: &TrimRangeRequest,
    ) -> Result<(), NodeFailure> {
        let _: TrimRangeResponse = self.call(address, request).await?;
        Ok(())
    }

    /// Deletes the replica on the node at `address` (a missing replica is a success).
    pub async fn delete_range(
        &self,
        address: &str,
        request: &DeleteRangeRequest,
    ) -> Result<(), NodeFailure> {
        let _: DeleteRangeResponse = self.call(address, request).await?;
        Ok(())
    }

    /// Every range the node at `address` holds.
    pub async fn list_ranges(&self, address: &str) -> Result<Vec<Range>, NodeFailure> {
        let response: ListRangesResponse = self
            .call(address, &ListRangesRequest { stream_id: None })
            .await?;
        Ok(response.ranges)
    }

    async fn call<Q: Message, A: Message>(
        &self,
        address: &str,
        request: &Q,
    ) -> Result<A, NodeFailure> {
        let exchange = async {
            let connection = self.connection(address).await?;
            let frame = connection
                .request(request, &[])
                .await
                .map_err(|error| NodeFailure::Unreachable(error.to_string()))?;
            match decode_response::<A>(&frame) {
                Ok(Ok((answer, _payload))) => Ok(answer),
                Ok(Err(refusal)) => Err(NodeFailure::Refused {
                    code: refusal.code,
                    message: refusal.message,
                }),
                Err(error) => Err(NodeFailure::Unreachable(error.to_string())),
            }
        };
        let result = match runtime::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(NodeFailure::Unreachable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        };
        if matches!(result, Err(NodeFailure::Unreachable(_))) {
            // The next request reconnects instead of queueing behind a dead connection.
            self.connections.borrow_mut().remove(address);
        }
        result
    }

    async fn connection(&self, address: &str) -> Result<Rc<Connection>, NodeFailure> {
        if let Some(connection) = self.connections.borrow().get(address) {
            if connection.closed_reason().is_none() {
                return Ok(Rc::clone(connection));
            }
        }
        let socket: SocketAddr = parse_socket_address(address).ok_or_else(|| {
            NodeFailure::Unreachable(format!("{address:?} is not a host:port address"))
        })?;
        let connection = Connection::connect(socket, MAX_IN_FLIGHT_PER_NODE)
            .await
            .map_err(|error| NodeFailure::Unreachable(error.to_string()))?;
        if let Some(token) = &self.admin_token {
            // Sent before any other request on the connection, so they are all checked with
            // the admin role. A refusal is this node's configuration, not a dead node, but
            // placement must pick another node either way.
            connection
                .authenticate(token)
                .await
                .map_err(|error| NodeFailure::Unreachable(error.to_string()))?;
        }
        let connection = Rc::new(connection);
        self.connections
            .borrow_mut()
            .insert(address.to_string(), Rc::clone(&connection));
        Ok(connection)
    }
}
