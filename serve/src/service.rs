//! What a daemon hands the connection code: its bounds, its shutdown signal, where to count
//! traffic, and how to answer one decoded request.
//!
//! Everything runs on one thread: a service is shared by its connections through an `Rc`, and
//! [`Service::call`]'s future need not be `Send`.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use wire::msg::{Request, Role};
use wire::Frame;

use crate::budget::NodeBudget;
use crate::local::Notified;
use crate::reply::Reply;

/// The bounds of one connection (the `server.*` settings of the daemon's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A frame longer than this is refused before any memory is reserved for it.
    pub max_frame_size_bytes: usize,
    /// Requests accepted but not yet answered on the wire; at this many the connection stops
    /// reading.
    pub max_in_flight_per_connection: usize,
    /// A connection with nothing in flight that neither completed a frame nor had a write
    /// complete for this long is closed with GOAWAY(IDLE_TIMEOUT), even if it trickles bytes;
    /// 0 never closes it.
    pub idle_timeout_ms: u64,
    /// Bytes one connection may hold (request payloads, responses being prepared or queued for
    /// the writer); the connection stops reading at this bound. At least one frame.
    pub max_buffered_bytes_per_connection: usize,
    /// Bytes all connections of the process may hold; every connection stops reading while
    /// they are over it (the [`NodeBudget`] counts them). At least the per-connection bound.
    pub max_buffered_bytes: usize,
}

/// Traffic counted by the connections of one thread. Atomics so that another thread (the
/// metrics endpoint) can read them; only the owning thread writes, so an increment is a plain
/// load and store, not a read-modify-write.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes handed to the kernel for clients.
    pub bytes_out: AtomicU64,
    /// Frames that failed to decode (undelimitable, unknown opcode, bad header, a response
    /// where a request was expected).
    pub bad_frames: AtomicU64,
    /// Times a connection stopped reading because its own byte budget was reached.
    pub paused_connection_budget: AtomicU64,
    /// Times a connection stopped reading because the process's byte budget was reached.
    pub paused_node_budget: AtomicU64,
    /// Requests whose handler panicked (each closed its connection with GOAWAY).
    pub panics: AtomicU64,
}

impl ConnectionCounters {
    /// Adds `amount` to `counter`, one of `self`'s. Only the owning thread may call this.
    pub fn add(&self, counter: &AtomicU64, amount: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(amount),
            Ordering::Relaxed,
        );
    }
}

/// A daemon that answers requests of the wire protocol.
pub trait Service: 'static {
    /// Name used in messages to clients ("data node", "placement manager").
    fn name(&self) -> &'static str;

    /// The bounds every connection of this service keeps.
    fn limits(&self) -> Limits;

    /// True once shutdown began: connections stop reading and send GOAWAY(SHUTTING_DOWN).
    fn is_shutting_down(&self) -> bool;

    /// Resolves when shutdown begins after this call (callers check
    /// [`Service::is_shutting_down`] first, with no `.await` in between).
    fn shutdown_notified(&self) -> Notified;

    /// Where connections count their traffic.
    fn counters(&self) -> &ConnectionCounters;

    /// The role `token` grants on this service, or `None` for a wrong token (answered
    /// `UNAUTHENTICATED`). The connection calls this for AUTHENTICATE, which it answers itself,
    /// and keeps the role for the rest of the connection. Compare in constant time
    /// ([`crate::auth::Tokens`] does); with authentication off, grant [`Role::Admin`].
    fn authenticate(&self, token: &str) -> Option<Role>;

    /// Whether a connection holding `role` (`None`: it has not authenticated) may run
    /// `request`; the refusal (`UNAUTHENTICATED`, `PERMISSION_DENIED`) is sent as the answer and
    /// [`Service::call`] is never made. Checked as each request is decoded.
    fn authorize(&self, role: Option<Role>, request: &Request) -> Result<(), Reply>;

    /// The byte budget shared by every connection of the process.
    fn node_budget(&self) -> &Arc<NodeBudget>;

    /// Bytes the response to `frame` may take, charged to the budgets when the frame is
    /// accepted, before the request runs (so requests that have not started cannot together
    /// promise more than the budget). Only what may be large needs an answer (a FETCH: its
    /// max_bytes); small responses are charged at their real size when they are queued.
    fn response_bytes_bound(&self, frame: &Frame) -> usize {
        let _ = frame;
        0
    }

    /// Answers one decoded request, `received` being when its frame was decoded. Each request
    /// runs as a task of its own, so a call may wait (a long poll, a disk write) without holding
    /// up the others of its connection.
    fn call(
        self: &Rc<Self>,
        request: Request,
        payload: Bytes,
        received: Instant,
    ) -> impl Future<Output = Reply>;
}
