//! The worker as a [`serve::Service`]: the connections of the `serve` crate take their bounds
//! and shutdown signal from the worker, count into its metrics, check each request against the
//! connection's role ([`required_role`]), and hand each decoded request to [`dispatch`].

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serve::local::Notified;
use serve::{ConnectionCounters, Limits, NodeBudget, Reply, Service};
use wire::msg::{FetchRequest, Request, Role};
use wire::{Frame, Opcode};

use crate::dispatch::dispatch;
use crate::worker::Worker;

impl Service for Worker {
    fn name(&self) -> &'static str {
        "data node"
    }

    fn limits(&self) -> Limits {
        let server = &self.config.server;
        Limits {
            max_frame_size_bytes: server.max_frame_size_bytes,
            max_in_flight_per_connection: server.max_in_flight_per_connection,
            idle_timeout_ms: server.idle_timeout_ms,
            max_buffered_bytes_per_connection: server.max_buffered_bytes_per_connection,
            max_buffered_bytes: server.max_buffered_bytes,
        }
    }

    fn is_shutting_down(&self) -> bool {
        Worker::is_shutting_down(self)
    }

    fn shutdown_notified(&self) -> Notified {
        self.shutdown.notified()
    }

    fn counters(&self) -> &ConnectionCounters {
        &self.metrics.connection
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

    /// A FETCH answer is at most its max_bytes (cut to a frame) or one whole append, whichever
    /// is larger: charged before the request runs, so FETCHes that have not read yet cannot
    /// together promise more than the budgets, whatever max_bytes they ask for.
    fn response_bytes_bound(&self, frame: &Frame) -> usize {
        if frame.opcode != Opcode::Fetch {
            return 0;
        }
        match frame.decode_message::<FetchRequest>() {
            Ok(request) => crate::handler::fetch::read_bytes_bound(self, &request)
                .max(self.largest_append_bytes.load(Ordering::Relaxed)),
            Err(_) => 0,
        }
    }

    fn call(
        self: &Rc<Self>,
        request: Request,
        payload: Bytes,
        received: Instant,
    ) -> impl Future<Output = Reply> {
        let worker = Rc::clone(self);
        // Recorded once stored, so a refused APPEND cannot inflate what every FETCH is charged.
        let append_bytes = matches!(request, Request::Append(_)).then_some(payload.len());
        async move {
            let reply = dispatch(&worker, request, payload, received).await;
            if let (Some(bytes), false) = (append_bytes, reply.is_error()) {
                worker
                    .largest_append_bytes
                    .fetch_max(bytes, Ordering::Relaxed);
            }
            reply
        }
    }
}

/// The role a request needs at a data node (`docs/protocol.md` §5.21). Applications (client)
/// write, read and seal; creating, trimming and deleting replicas is the placement manager's or
/// an operator's (admin). A client's SEAL_RANGE is bounded by the range's epoch check: below the
/// range's current epoch it is `STALE_EPOCH`, so a client seals only as the range's current
/// writer or as a writer holding a newer epoch. Operations a data node does not serve need admin
/// (and are then refused as they always were).
pub fn required_role(request: &Request) -> Option<Role> {
    match request {
        Request::Ping(_) | Request::Authenticate(_) => None,
        Request::Append(_)
        | Request::Fetch(_)
        | Request::SealRange(_)
        | Request::DescribeRange(_)
        | Request::ListRanges(_)
        | Request::Heartbeat(_) => Some(Role::Client),
        Request::CreateRange(_)
        | Request::TrimRange(_)
        | Request::DeleteRange(_)
        | Request::AllocateId(_)
        | Request::ReportMetrics(_)
        | Request::DescribeCluster(_)
        | Request::CreateStream(_)
        | Request::DescribeStream(_)
        | Request::UpdateStream(_)
        | Request::TrimStream(_)
        | Request::DeleteStream(_)
        | Request::ListStreams(_)
        | Request::Goaway(_) => Some(Role::Admin),
    }
}
