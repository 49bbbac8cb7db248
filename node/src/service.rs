//! The worker as a [`serve::Service`]: the connections of the `serve` crate take their bounds
//! and shutdown signal from the worker, count into its metrics, and hand each decoded request
//! to [`dispatch`].

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serve::local::Notified;
use serve::{ConnectionCounters, Limits, NodeBudget, Reply, Service};
use wire::msg::{FetchRequest, Request};
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

    fn node_budget(&self) -> &Arc<NodeBudget> {
        &self.node_budget
    }

    /// A FETCH answer may be as large as its max_bytes (cut to a frame): charged before the
    /// request runs, so FETCHes that have not read yet cannot together promise more than the
    /// budgets. (One batch larger than max_bytes is charged at its real size once read.)
    fn response_bytes_bound(&self, frame: &Frame) -> usize {
        if frame.opcode != Opcode::Fetch {
            return 0;
        }
        match frame.decode_message::<FetchRequest>() {
            Ok(request) => crate::handler::fetch::read_bytes_bound(self, &request),
            Err(_) => 0,
        }
    }

    fn call(
        self: &Rc<Self>,
        request: Request,
        payload: Bytes,
        received: Instant,
    ) -> impl Future<Output = Reply> {
        dispatch(self, request, payload, received)
    }
}
