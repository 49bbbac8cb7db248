//! The worker as a [`serve::Service`]: the connections of the `serve` crate take their bounds
//! and shutdown signal from the worker, count into its metrics, and hand each decoded request
//! to [`dispatch`].

use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use serve::local::Notified;
use serve::{ConnectionCounters, Limits, Reply, Service};
use wire::msg::Request;

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

    fn call(
        self: &Rc<Self>,
        request: Request,
        payload: Bytes,
        received: Instant,
    ) -> impl Future<Output = Reply> {
        dispatch(self, request, payload, received)
    }
}
