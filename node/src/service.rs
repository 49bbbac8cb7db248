//! The worker as a [`serve::Service`]: the connections of the `serve` crate take their bounds
//! and shutdown signal from the worker, count into its metrics, and hand each decoded request
//! to [`dispatch`].

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
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
