//! One client connection: decode frames, run requests concurrently, send responses as they finish.
//!
//! Three kinds of task share a connection. The *reader* (the connection's own task) reads bytes,
//! splits frames off them and spawns one *request task* per request, so a slow FETCH never holds
//! up an APPEND behind it; responses therefore go out in completion order, matched by request id.
//! Request tasks queue their encoded responses; the *writer* task sends everything queued in
//! one vectored write per turn.
//!
//! Bounds: a frame larger than `server.max-frame-size-bytes` is refused before any memory is
//! reserved for it (the decoder checks the length first); at `max-in-flight-per-connection`
//! requests not yet answered on the wire (running, or answered but still queued for the writer)
//! the reader stops decoding (and so reading) until one is sent, which pushes back on the client
//! through TCP: a client that sends but never reads cannot make the node queue responses without
//! bound. The same goes for bytes: each frame's payload and the response it may produce are
//! charged to the connection's and the process's byte budgets (`budget.rs`) before the request
//! starts, and released once the response is handed to the kernel; the reader accepts no frame
//! the budgets cannot hold. A connection that completes no frame and has no write complete for
//! `idle-timeout-ms` (and has nothing running) is closed, so neither a client trickling a byte
//! now and then nor one that never reads keeps its slot or its budget for ever.
//! A request whose handler panics closes its connection with GOAWAY(INTERNAL_ERROR); the
//! worker and its other connections go on. A frame that cannot be delimited gets a
//! GOAWAY(PROTOCOL_ERROR) and closes this connection only; an intact frame with an unknown
//! opcode or a bad header gets an error response and the connection carries on. On shutdown the
//! reader stops, a GOAWAY(SHUTTING_DOWN) goes out first, the requests already accepted are
//! answered, then the connection closes.
//!
//! Authentication: the connection holds the role its last AUTHENTICATE granted (answered here,
//! with the token checked by [`Service::authenticate`]) and asks [`Service::authorize`] about
//! every other request as it is decoded; a refused request never reaches the service.
//!
//! What a request does is the [`Service`]'s business: this file knows frames, bounds and the
//! order things go out in, not what any operation means.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use runtime::{race, Either};
use wire::msg::{
    AuthenticateRequest, AuthenticateResponse, ErrorResponse, Goaway, GoawayReason, Request,
    Response, Role,
};
use wire::{DecodeError, Decoder, ErrorCode, Flags, Frame, Opcode};

use crate::auth::MAX_FAILED_AUTHENTICATIONS;
use crate::budget::{admission, Admission, BudgetLimits, NodeBudget};
use crate::catch_panic::catch_panic;
use crate::local::Notify;
use crate::reply::Reply;
use crate::service::Service;

/// Bytes asked of the kernel per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// State shared by a connection's reader, writer and request tasks.
struct Shared {
    /// Encoded frames waiting to be sent, in order.
    outgoing: RefCell<VecDeque<Bytes>>,
    /// Wakes the writer when `outgoing` gains a frame or the connection starts closing.
    writer_wake: Notify,
    /// Requests decoded but not yet answered.
    in_flight: Cell<usize>,
    /// Responses (error answers included) in `outgoing`, not yet taken by the writer.
    queued_responses: Cell<usize>,
    /// Responses in the writer's current write.
    sending_responses: Cell<usize>,
    /// Fires when a request finishes or a write completes (the reader may continue past the
    /// in-flight bound).
    request_done: Notify,
    /// The reader stopped: the writer closes once everything is answered and sent.
    reading_done: Cell<bool>,
    /// The socket failed; nobody should bother sending more.
    broken: Cell<bool>,
    /// The role the connection's last AUTHENTICATE granted; `None` until one succeeds.
    role: Cell<Option<Role>>,
    /// AUTHENTICATE requests refused so far; at [`MAX_FAILED_AUTHENTICATIONS`] the connection
    /// closes.
    failed_authentications: Cell<u32>,
    /// Bytes this connection holds: request payloads and response bounds of requests accepted
    /// and not finished, encoded responses not yet handed to the kernel. Each is also charged
    /// to `node_budget`.
    buffered_bytes: Cell<usize>,
    node_budget: Arc<NodeBudget>,
    /// Of `buffered_bytes`, the bytes read but not yet split off as a frame (a frame still
    /// arriving, at most one frame long).
    read_buffer_bytes: Cell<usize>,
    /// When a frame was last completed or a write last finished: the idle timeout's clock.
    last_progress: Cell<Instant>,
    /// Set by a request task whose handler panicked: the reader stops with GOAWAY(INTERNAL_ERROR).
    internal_error: RefCell<Option<String>>,
    /// Wakes the reader when `internal_error` is set.
    stop: Notify,
    /// The writer is in a write; `abort_write` cancels it (the peer stopped reading).
    writing: Cell<bool>,
    abort_write: Notify,
    aborted: Cell<bool>,
    peer: SocketAddr,
}

impl Shared {
    /// Queues the frames of one response, charging their bytes until the writer sends them.
    fn push_response(&self, frames: impl IntoIterator<Item = Bytes>) {
        if self.broken.get() {
            // The writer is gone: a queued answer would never be sent nor leave the count.
            return;
        }
        let mut outgoing = self.outgoing.borrow_mut();
        let before = outgoing.len();
        outgoing.extend(frames);
        let bytes: usize = outgoing.iter().skip(before).map(Bytes::len).sum();
        drop(outgoing);
        self.charge(bytes);
        self.queued_responses.set(self.queued_responses.get() + 1);
        self.writer_wake.notify();
    }

    fn charge(&self, bytes: usize) {
        self.buffered_bytes.set(self.buffered_bytes.get() + bytes);
        self.node_budget.charge(bytes);
    }

    /// Gives back bytes charged before; the reader may be waiting for them.
    fn release(&self, bytes: usize) {
        let held = self.buffered_bytes.get();
        debug_assert!(
            held >= bytes,
            "connection releases {bytes} bytes of {held} held"
        );
        // Never more than this connection charged: a miscount here must not make the process's
        // counter wrap (every reader would then wait for ever).
        let bytes = bytes.min(held);
        self.buffered_bytes.set(held - bytes);
        self.node_budget.release(bytes);
        if bytes > 0 {
            self.request_done.notify();
        }
    }

    /// Charges the bytes of the read buffer that are not yet part of a frame: `pending` now.
    fn settle_read_buffer(&self, pending: usize) {
        let charged = self.read_buffer_bytes.replace(pending);
        if pending > charged {
            self.charge(pending - charged);
        } else {
            self.release(charged - pending);
        }
    }

    /// Drops every frame still queued (the socket failed or the write was abandoned).
    fn discard_outgoing(&self) {
        let bytes: usize = self.outgoing.borrow_mut().drain(..).map(|f| f.len()).sum();
        self.release(bytes);
        // Nothing more will be sent: the reader must not wait for these answers.
        self.queued_responses.set(0);
        self.request_done.notify();
    }

    /// Requests accepted whose answer is not on the wire yet: what `max-in-flight-per-connection`
    /// bounds.
    fn unanswered(&self) -> usize {
        self.in_flight.get() + self.queued_responses.get() + self.sending_responses.get()
    }
}

/// Bytes charged to the budgets for one accepted request, released when it is dropped (when
/// the request task ends, after its response was queued and charged on its own).
struct Charge {
    shared: Rc<Shared>,
    bytes: usize,
}

impl Charge {
    fn new(shared: &Rc<Shared>, bytes: usize) -> Charge {
        shared.charge(bytes);
        Charge {
            shared: Rc::clone(shared),
            bytes,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shared.release(self.bytes);
    }
}

/// How the reader ended.
enum ReadEnd {
    PeerClosed,
    Shutdown,
    Idle,
    ProtocolError(String),
    InternalError(String),
    Failed,
}

/// Serves one accepted connection until it closes.
pub async fn serve<S: Service>(service: Rc<S>, stream: runtime::net::TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let shared = Rc::new(Shared {
        outgoing: RefCell::new(VecDeque::new()),
        writer_wake: Notify::default(),
        in_flight: Cell::new(0),
        queued_responses: Cell::new(0),
        sending_responses: Cell::new(0),
        request_done: Notify::default(),
        reading_done: Cell::new(false),
        broken: Cell::new(false),
        role: Cell::new(None),
        failed_authentications: Cell::new(0),
        buffered_bytes: Cell::new(0),
        node_budget: Arc::clone(service.node_budget()),
        read_buffer_bytes: Cell::new(0),
        last_progress: Cell::new(Instant::now()),
        internal_error: RefCell::new(None),
        stop: Notify::default(),
        writing: Cell::new(false),
        abort_write: Notify::default(),
        aborted: Cell::new(false),
        peer,
    });
    let writer = runtime::spawn(write_loop(
        Rc::clone(&stream),
        Rc::clone(&shared),
        Rc::clone(&service),
    ));
    let end = read_loop(&service, &stream, &shared).await;
    shared.settle_read_buffer(0);
    let goaway = match &end {
        ReadEnd::Shutdown => Some((
            GoawayReason::ShuttingDown,
            format!("the {} is shutting down", service.name()),
        )),
        ReadEnd::Idle => Some((
            GoawayReason::IdleTimeout,
            "connection idle for too long".to_string(),
        )),
        ReadEnd::ProtocolError(message) => Some((GoawayReason::ProtocolError, message.clone())),
        ReadEnd::InternalError(message) => Some((GoawayReason::InternalError, message.clone())),
        ReadEnd::PeerClosed | ReadEnd::Failed => None,
    };
    if let Some((reason, message)) = goaway {
        log::debug!("connection {peer}: GOAWAY {reason:?}: {message}");
        let mut buf = BytesMut::new();
        let goaway = Goaway { reason, message };
        if !shared.broken.get() && wire::codec::encode_goaway(&mut buf, &goaway).is_ok() {
            // GOAWAY goes before the answers still to come: the client learns at once that it
            // should send nothing more on this connection.
            shared.charge(buf.len());
            shared.outgoing.borrow_mut().push_front(buf.freeze());
        }
    }
    shared.reading_done.set(true);
    shared.writer_wake.notify();
    let idle_timeout = service.limits().idle_timeout_ms;
    if matches!(end, ReadEnd::Idle) && shared.writing.get() {
        // Idle with a write pending: the peer stopped reading. Nothing more can reach it.
        abort_writer(&shared);
    }
    let mut writer = pin!(writer);
    let mut writer_done = false;
    if idle_timeout > 0 {
        // The answers still owed get one idle timeout to drain; a peer that reads nothing
        // does not keep the connection (and its budget) for ever.
        let drain = runtime::time::sleep(Duration::from_millis(idle_timeout));
        match race(writer.as_mut(), drain).await {
            Either::Left(()) => writer_done = true,
            Either::Right(()) => abort_writer(&shared),
        }
    }
    if !writer_done {
        writer.await;
    }
    // Whatever the writer could not send leaves the budgets with the connection.
    shared.discard_outgoing();
    if let Ok(stream) = Rc::try_unwrap(stream) {
        let _ = stream.close().await;
    }
}

/// Stops the writer's pending write: its bytes can no longer reach the peer.
fn abort_writer(shared: &Shared) {
    shared.aborted.set(true);
    shared.abort_write.notify();
}

/// The idle timeout's timer. One for the connection's life, moved forward only when it fires
/// early: arming a new one per read would cost a timer insert and removal per read.
struct IdleClock {
    timeout: Option<Duration>,
    timer: Option<runtime::time::Sleep>,
}

impl IdleClock {
    fn new(timeout_ms: u64) -> IdleClock {
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        IdleClock {
            timeout,
            timer: timeout.map(runtime::time::sleep),
        }
    }

    /// Resolves once the connection has completed no frame and had no write complete for the
    /// timeout, with nothing running (a long poll or a slow append is not idleness). Bytes
    /// that do not complete a frame do not count: a client trickling a byte now and then is
    /// idle. Never resolves without a timeout.
    async fn expired(&mut self, shared: &Shared) {
        let (Some(timeout), Some(timer)) = (self.timeout, self.timer.as_mut()) else {
            return std::future::pending().await;
        };
        loop {
            (&mut *timer).await;
            if shared.last_progress.get().elapsed() >= timeout {
                if shared.in_flight.get() == 0 {
                    return;
                }
                shared.last_progress.set(Instant::now());
            }
            timer.reset(runtime::time::deadline_after(
                shared.last_progress.get(),
                timeout,
            ));
        }
    }
}

/// The budgets of `service`.
fn budget_limits<S: Service>(service: &S) -> BudgetLimits {
    let limits = service.limits();
    BudgetLimits {
        per_connection_bytes: limits.max_buffered_bytes_per_connection,
        node_bytes: limits.max_buffered_bytes,
    }
}

/// What the budgets say about accepting a frame costing `cost_bytes`.
fn frame_admission(limits: BudgetLimits, shared: &Shared, cost_bytes: usize) -> Admission {
    admission(
        limits,
        shared.buffered_bytes.get(),
        shared.node_budget.buffered_bytes(),
        cost_bytes,
    )
}

/// What the budgets say about reading another chunk. The bytes of a frame still arriving do
/// not count against its own connection (a budget holds at least one frame, so the frame can
/// always complete once the connection's other bytes drained); they do count for the process,
/// where only a connection holding nothing at all may read past the budget, one chunk (that is
/// how a PING on a fresh connection gets in while the process is at its budget).
fn read_admission(limits: BudgetLimits, shared: &Shared) -> Admission {
    let buffered = shared.buffered_bytes.get();
    let others = buffered - shared.read_buffer_bytes.get();
    if others > 0 && buffered + READ_CHUNK_BYTES > limits.per_connection_bytes {
        return Admission::WaitForConnection;
    }
    let node = shared.node_budget.buffered_bytes();
    if buffered == 0 || node == 0 || node + READ_CHUNK_BYTES <= limits.node_bytes {
        Admission::Admit
    } else {
        Admission::WaitForNode
    }
}

/// Waits until `decide` admits the next step (accepting a frame, reading a chunk) whose cost
/// is `cost_bytes`, or until reading must end.
async fn wait_for_budget<S: Service>(
    service: &Rc<S>,
    shared: &Shared,
    idle: &mut IdleClock,
    cost_bytes: usize,
    decide: impl Fn(&Shared) -> Admission,
) -> Result<(), ReadEnd> {
    let counters = service.counters();
    let mut paused = false;
    loop {
        if service.is_shutting_down() {
            return Err(ReadEnd::Shutdown);
        }
        if let Some(message) = shared.internal_error.borrow_mut().take() {
            return Err(ReadEnd::InternalError(message));
        }
        // Registered before the check, so a release in between is not missed.
        let drained = shared.request_done.notified();
        let shutdown = service.shutdown_notified();
        let stop = shared.stop.notified();
        let decision = decide(shared);
        let counter: &AtomicU64 = match decision {
            Admission::Admit => return Ok(()),
            Admission::WaitForConnection => &counters.paused_connection_budget,
            Admission::WaitForNode => &counters.paused_node_budget,
        };
        if !paused {
            paused = true;
            counters.add(counter, 1);
            log::debug!(
                "connection {}: reading paused ({decision:?}): it holds {} bytes, the process {}",
                shared.peer,
                shared.buffered_bytes.get(),
                shared.node_budget.buffered_bytes()
            );
        }
        let room = async {
            match decision {
                Admission::WaitForNode => {
                    race(shared.node_budget.room_for(cost_bytes), drained).await;
                }
                _ => drained.await,
            }
        };
        let ending = race(shutdown, race(stop, idle.expired(shared)));
        match race(room, ending).await {
            Either::Left(()) => {}
            Either::Right(Either::Left(())) => return Err(ReadEnd::Shutdown),
            Either::Right(Either::Right(Either::Left(()))) => {}
            Either::Right(Either::Right(Either::Right(()))) => return Err(ReadEnd::Idle),
        }
    }
}

async fn read_loop<S: Service>(
    service: &Rc<S>,
    stream: &runtime::net::TcpStream,
    shared: &Rc<Shared>,
) -> ReadEnd {
    let limits = service.limits();
    let counters = service.counters();
    let max_in_flight = limits.max_in_flight_per_connection;
    let mut decoder = Decoder::new(limits.max_frame_size_bytes);
    let mut received = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut idle = IdleClock::new(limits.idle_timeout_ms);
    let budget = budget_limits(&**service);
    loop {
        // Decode what is buffered, up to the in-flight bound.
        loop {
            if service.is_shutting_down() {
                return ReadEnd::Shutdown;
            }
            if let Some(message) = shared.internal_error.borrow_mut().take() {
                return ReadEnd::InternalError(message);
            }
            if shared.unanswered() >= max_in_flight {
                let done = shared.request_done.notified();
                let shutdown = service.shutdown_notified();
                let stop = shared.stop.notified();
                if shared.unanswered() >= max_in_flight {
                    race(done, race(shutdown, stop)).await;
                    continue;
                }
            }
            match decoder.decode(&mut received) {
                Ok(Some(frame)) => {
                    shared.last_progress.set(Instant::now());
                    // The frame's bytes move from the read buffer's charge to the request's.
                    shared.settle_read_buffer(received.len());
                    let cost_bytes = frame.payload.len() + service.response_bytes_bound(&frame);
                    let decide = |shared: &Shared| frame_admission(budget, shared, cost_bytes);
                    if let Err(end) =
                        wait_for_budget(service, shared, &mut idle, cost_bytes, decide).await
                    {
                        return end;
                    }
                    let charge = Charge::new(shared, cost_bytes);
                    if let Some(end) = accept_frame(service, shared, frame, Instant::now(), charge)
                    {
                        return end;
                    }
                }
                Ok(None) => break,
                Err(error) if error.is_fatal() => {
                    counters.add(&counters.bad_frames, 1);
                    return ReadEnd::ProtocolError(format!("{error}; closing the connection"));
                }
                Err(error) => {
                    counters.add(&counters.bad_frames, 1);
                    answer_decode_error(shared, error);
                }
            }
        }

        // Read more, straight behind the bytes not yet decoded: frames are split off this buffer
        // without a copy, so a payload goes from the kernel to the store as it was read. The
        // decoded frames own the front of the allocation; the kernel writes only into the spare
        // room after them. The read is cancelled only when the connection closes (shutdown, idle
        // with nothing in flight): whatever it might still have received then is never
        // answered, which the client learns from the GOAWAY. Idle time with requests in flight
        // keeps polling the same read, so no byte is lost.
        shared.settle_read_buffer(received.len());
        let decide = |shared: &Shared| read_admission(budget, shared);
        if let Err(end) =
            wait_for_budget(service, shared, &mut idle, READ_CHUNK_BYTES, decide).await
        {
            return end;
        }
        received.reserve(READ_CHUNK_BYTES);
        let mut read = pin!(stream.read(received));
        let (result, buffer) = loop {
            if service.is_shutting_down() {
                return ReadEnd::Shutdown;
            }
            if let Some(message) = shared.internal_error.borrow_mut().take() {
                return ReadEnd::InternalError(message);
            }
            let shutdown = service.shutdown_notified();
            let stop = shared.stop.notified();
            match race(
                read.as_mut(),
                race(shutdown, race(stop, idle.expired(shared))),
            )
            .await
            {
                Either::Left(done) => break done,
                Either::Right(Either::Left(())) => return ReadEnd::Shutdown,
                Either::Right(Either::Right(Either::Left(()))) => continue,
                Either::Right(Either::Right(Either::Right(()))) => return ReadEnd::Idle,
            }
        };
        received = buffer;
        match result {
            Ok(0) => return ReadEnd::PeerClosed,
            Ok(count) => {
                // Bytes alone are not progress: only a whole frame moves the idle clock.
                counters.add(&counters.bytes_in, count as u64);
                shared.settle_read_buffer(received.len());
            }
            Err(error) => {
                log::debug!("connection read failed: {error}");
                return ReadEnd::Failed;
            }
        }
    }
}

/// Starts a request task for `frame`, decoded at `received`; returns how reading ends if this
/// frame ends it. `charge` holds the frame's bytes in the budgets until the task ends.
fn accept_frame<S: Service>(
    service: &Rc<S>,
    shared: &Rc<Shared>,
    frame: Frame,
    received: Instant,
    charge: Charge,
) -> Option<ReadEnd> {
    let counters = service.counters();
    if frame.is_response() {
        counters.add(&counters.bad_frames, 1);
        return Some(ReadEnd::ProtocolError(format!(
            "received a response frame ({}, request id {}) but a {} only takes requests",
            frame.opcode,
            frame.request_id,
            service.name()
        )));
    }
    let request = match Request::decode(&frame) {
        Ok(request) => request,
        Err(error) => {
            counters.add(&counters.bad_frames, 1);
            push_error(
                shared,
                frame.opcode,
                frame.request_id,
                ErrorResponse::new(error.error_code(), error.to_string()),
            );
            return None;
        }
    };
    if let Request::Goaway(goaway) = &request {
        log::debug!("peer sent GOAWAY {:?}: {}", goaway.reason, goaway.message);
        return Some(ReadEnd::PeerClosed);
    }
    let opcode = frame.opcode;
    let request_id = frame.request_id;
    if let Request::Authenticate(authenticate) = &request {
        return authenticate_connection(service, shared, request_id, authenticate);
    }
    // Checked as the request is decoded, with the role the connection holds now: a request
    // pipelined behind an AUTHENTICATE is checked with the role that one granted.
    if let Err(refusal) = service.authorize(shared.role.get(), &request) {
        push_reply(shared, opcode, request_id, refusal);
        return None;
    }
    let payload = frame.payload;
    shared.in_flight.set(shared.in_flight.get() + 1);
    let service = Rc::clone(service);
    let shared = Rc::clone(shared);
    runtime::spawn(async move {
        let reply = match catch_panic(service.call(request, payload, received)).await {
            Ok(reply) => reply,
            Err(message) => {
                let counters = service.counters();
                counters.add(&counters.panics, 1);
                log::error!(
                    "{}: the handler of {opcode} (request {request_id}) from {} panicked: \
                     {message}; closing that connection, the others go on",
                    service.name(),
                    shared.peer
                );
                *shared.internal_error.borrow_mut() = Some(format!(
                    "internal error while handling {opcode} (request {request_id}); \
                     the {} logged it. Retry on a new connection",
                    service.name()
                ));
                shared.stop.notify();
                finish_request(&shared, charge);
                return;
            }
        };
        if !shared.broken.get() {
            match encode_reply(opcode, request_id, reply) {
                Ok(frames) => shared.push_response(frames),
                Err(message) => {
                    log::error!("cannot encode the response to request {request_id}: {message}");
                    push_error(
                        &shared,
                        opcode,
                        request_id,
                        ErrorResponse::new(ErrorCode::Internal, message),
                    );
                }
            }
        }
        finish_request(&shared, charge);
    });
    None
}

/// Answers AUTHENTICATE: the connection holds the role the token grants, or none after a wrong
/// token; too many wrong tokens close the connection. The token is never logged.
fn authenticate_connection<S: Service>(
    service: &Rc<S>,
    shared: &Shared,
    request_id: u64,
    request: &AuthenticateRequest,
) -> Option<ReadEnd> {
    match service.authenticate(&request.token) {
        Some(role) => {
            shared.role.set(Some(role));
            let reply = Reply::new(Response::Authenticate(AuthenticateResponse { role }));
            push_reply(shared, Opcode::Authenticate, request_id, reply);
            None
        }
        None => {
            shared.role.set(None);
            let failures = shared.failed_authentications.get() + 1;
            shared.failed_authentications.set(failures);
            log::debug!("AUTHENTICATE with a wrong token ({failures} on this connection)");
            push_reply(
                shared,
                Opcode::Authenticate,
                request_id,
                Reply::error(
                    ErrorCode::Unauthenticated,
                    format!(
                        "the token matches neither of the {}'s tokens; check the token",
                        service.name()
                    ),
                ),
            );
            (failures >= MAX_FAILED_AUTHENTICATIONS).then(|| {
                ReadEnd::ProtocolError(format!(
                    "{failures} AUTHENTICATE requests with a wrong token; closing the connection"
                ))
            })
        }
    }
}

/// Queues a reply produced without a request task (an answer of the connection itself).
fn push_reply(shared: &Shared, opcode: Opcode, request_id: u64, reply: Reply) {
    match encode_reply(opcode, request_id, reply) {
        Ok(frames) => shared.push_response(frames),
        Err(message) => push_error(
            shared,
            opcode,
            request_id,
            ErrorResponse::new(ErrorCode::Internal, message),
        ),
    }
}

/// A request task's end: its response (if any) is queued and charged on its own, so the
/// request's charge goes back now.
fn finish_request(shared: &Shared, charge: Charge) {
    drop(charge);
    shared.in_flight.set(shared.in_flight.get() - 1);
    shared.request_done.notify();
    shared.writer_wake.notify();
}

/// The frames of a reply. A FETCH payload is not copied: it goes out as its own buffer.
fn encode_reply(opcode: Opcode, request_id: u64, reply: Reply) -> Result<Vec<Bytes>, String> {
    if let Response::Fetch(header) = &*reply.response {
        let mut scratch = BytesMut::new();
        let parts = wire::encode_parts(
            &mut scratch,
            Flags::RESPONSE_END,
            request_id,
            header,
            reply.payload,
        )
        .map_err(|error| error.to_string())?;
        let mut frames = vec![parts.head];
        if !parts.payload.is_empty() {
            frames.push(parts.payload);
        }
        frames.push(Bytes::copy_from_slice(&parts.trailer));
        return Ok(frames);
    }
    let mut buf = BytesMut::new();
    reply
        .response
        .encode(&mut buf, opcode, request_id, &reply.payload)
        .map_err(|error| error.to_string())?;
    Ok(vec![buf.freeze()])
}

fn push_error(shared: &Shared, opcode: Opcode, request_id: u64, mut error: ErrorResponse) {
    error.truncate_message();
    let mut buf = BytesMut::new();
    if wire::encode_error(&mut buf, opcode, request_id, &error).is_ok() {
        shared.push_response([buf.freeze()]);
    }
}

fn answer_decode_error(shared: &Shared, error: DecodeError) {
    if let DecodeError::UnknownOpcode { opcode, request_id } = error {
        let response = ErrorResponse::new(
            ErrorCode::UnknownOpcode,
            format!("opcode {opcode:#06x} is not part of protocol version 1"),
        )
        .with_detail(u64::from(opcode));
        let mut buf = BytesMut::new();
        if wire::encode_error(&mut buf, Opcode::Ping, request_id, &response).is_ok() {
            shared.push_response([with_raw_opcode(buf, opcode)]);
        }
    }
}

/// Rewrites the opcode of an encoded frame to a number `Opcode` cannot name (an error response
/// echoes the request's opcode, even an unknown one) and recomputes the frame's CRC.
fn with_raw_opcode(mut frame: BytesMut, opcode: u16) -> Bytes {
    const OPCODE_AT: usize = 8;
    frame[OPCODE_AT..OPCODE_AT + 2].copy_from_slice(&opcode.to_le_bytes());
    let crc_at = frame.len() - 4;
    let crc = crc32c::crc32c(&frame[4..crc_at]);
    frame[crc_at..].copy_from_slice(&crc.to_le_bytes());
    frame.freeze()
}

mod write;
use write::write_loop;

#[cfg(test)]
mod tests;
