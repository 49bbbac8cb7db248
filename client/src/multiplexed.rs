//! A multiplexed connection on the runtime: many requests in flight on one TCP connection,
//! matched to their responses by request id, answered in any order.
//!
//! Two tasks per connection share the socket: the writer sends whatever requests queued since
//! its last write in one `send` (so a burst of small requests costs one syscall), and the reader
//! decodes frames straight out of its receive buffer and completes the waiting request. A
//! request waits for a free slot when `max_in_flight` are outstanding, so a caller can never
//! queue without bound. Requests take free slots strictly first come, first served: a new
//! request never goes ahead of one already waiting. [`Connection::start_request_bytes`] puts a
//! request in line synchronously (encoded now, sent as soon as a slot frees), so the order of
//! calls is the order on the wire whatever order tasks are polled in. Dropping the
//! [`Connection`] cancels both tasks.
//!
//! Everything here is `!Send`: a connection lives on the runtime thread that opened it.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use runtime::net::TcpStream;
use runtime::JoinHandle;
use wire::{Decoder, Frame, Message};

use crate::conn::{goaway_error, ClientError, MAX_FRAME_BYTES};

/// Room reserved in the receive buffer before each read.
const READ_RESERVE_BYTES: usize = 256 * 1024;
/// Payloads at least this large are sent by vectored write instead of being copied.
const ZERO_COPY_MIN_BYTES: usize = 4096;

/// A connection shared by the tasks of one runtime thread (wrap it in an `Rc`).
pub struct Connection {
    shared: Rc<Shared>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    stream: TcpStream,
    state: RefCell<State>,
}

struct State {
    next_request_id: u64,
    max_in_flight: usize,
    pending: HashMap<u64, Slot>,
    /// Frames (or parts of frames) ready to send, in order.
    outgoing: Vec<Bytes>,
    /// Small frames are encoded back to back here, then moved to `outgoing` as one piece.
    small: BytesMut,
    writer_waker: Option<Waker>,
    /// Requests waiting for an in-flight slot, oldest first, each under its waiter id. A
    /// waiter that gives up removes its entry, so a freed slot never wakes a dead task.
    slot_waiters: VecDeque<(u64, Waker)>,
    /// Requests started with [`Connection::start_request_bytes`] while no slot was free:
    /// encoded, registered as pending, sent in this order as slots free (before any
    /// `slot_waiters`, which came later: a waiter never goes while one of these waits).
    deferred: VecDeque<(u64, Vec<Bytes>)>,
    next_waiter_id: u64,
    /// Set once the connection failed or the server said GOAWAY; every later request fails.
    closed: Option<String>,
}

impl State {
    fn take_request_id(&mut self) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        request_id
    }

    /// Moves the small frames encoded so far to the send queue, keeping their order.
    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            let frames = self.small.split().freeze();
            self.outgoing.push(frames);
        }
    }

    /// Requests on the wire (or in the send queue), waiting for their answers.
    fn sent(&self) -> usize {
        self.pending.len() - self.deferred.len()
    }

    /// Whether a slot is free for a request that is first in line.
    fn slot_free(&self) -> bool {
        self.sent() < self.max_in_flight
    }

    /// A slot freed: sends deferred requests while slots are free, then returns the waker of
    /// the oldest request waiting for a slot (it stays first in line until it takes the slot
    /// or gives up).
    fn slot_freed(&mut self) -> Option<Waker> {
        let mut queued = false;
        while self.slot_free() {
            let Some((_, parts)) = self.deferred.pop_front() else {
                break;
            };
            self.flush_small();
            self.outgoing.extend(parts);
            queued = true;
        }
        if queued {
            if let Some(waker) = self.writer_waker.take() {
                waker.wake();
            }
        }
        if !self.deferred.is_empty() || !self.slot_free() {
            return None;
        }
        self.slot_waiters.front().map(|(_, waker)| waker.clone())
    }

    /// Every waiter for a slot, taken off the queue (the connection closed).
    fn all_slot_waiters(&mut self) -> impl Iterator<Item = Waker> {
        std::mem::take(&mut self.slot_waiters)
            .into_iter()
            .map(|(_, waker)| waker)
    }

    /// Registers the request as pending and wakes the writer.
    fn register(&mut self, request_id: u64) {
        self.pending.insert(request_id, Slot::default());
        if let Some(waker) = self.writer_waker.take() {
            waker.wake();
        }
    }
}

#[derive(Default)]
struct Slot {
    response: Option<Result<Frame, ClientError>>,
    waker: Option<Waker>,
}

impl Connection {
    /// Connects to `address` and starts the reader and writer tasks on the current runtime.
    pub async fn connect(
        address: SocketAddr,
        max_in_flight: usize,
    ) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|error| ClientError::Connect {
                address: address.to_string(),
                error,
            })?;
        stream.set_nodelay(true)?;
        let shared = Rc::new(Shared {
            stream,
            state: RefCell::new(State {
                next_request_id: 1,
                max_in_flight: max_in_flight.max(1),
                pending: HashMap::new(),
                outgoing: Vec::new(),
                small: BytesMut::with_capacity(64 * 1024),
                writer_waker: None,
                slot_waiters: VecDeque::new(),
                deferred: VecDeque::new(),
                next_waiter_id: 0,
                closed: None,
            }),
        });
        let reader = runtime::spawn(read_loop(Rc::clone(&shared)));
        let writer = runtime::spawn(write_loop(Rc::clone(&shared)));
        Ok(Connection {
            shared,
            reader: Some(reader),
            writer: Some(writer),
        })
    }

    /// Proves `token` on this connection (AUTHENTICATE), before any other request is sent on
    /// it; the role the server granted.
    pub async fn authenticate(&self, token: &str) -> Result<wire::Role, ClientError> {
        let request = wire::msg::AuthenticateRequest {
            token: token.to_string(),
        };
        let frame = self.request(&request, &[]).await?;
        crate::conn::authentication_result(&frame)
    }

    /// Requests currently waiting for their response.
    pub fn in_flight(&self) -> usize {
        self.shared.state.borrow().pending.len()
    }

    /// Why the connection is unusable, if it is.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.state.borrow().closed.clone()
    }

    /// Sends `message` with `payload` and resolves to the response frame (an error response
    /// is a frame too: check [`Frame::is_error`]). Waits for a slot first when
    /// `max_in_flight` requests are outstanding. The payload is copied into the send buffer;
    /// see [`Connection::request_bytes`] for large ones.
    pub async fn request<M: Message>(
        &self,
        message: &M,
        payload: &[u8],
    ) -> Result<Frame, ClientError> {
        self.wait_for_slot().await?;
        let request_id = {
            let mut state = self.shared.state.borrow_mut();
            let request_id = state.take_request_id();
            wire::encode_request(&mut state.small, request_id, message, payload)?;
            state.register(request_id);
            request_id
        };
        self.response(request_id).await
    }

    /// Like [`Connection::request`], but a large payload is sent from `payload` itself by
    /// vectored write, never copied.
    pub async fn request_bytes<M: Message>(
        &self,
        message: &M,
        payload: Bytes,
    ) -> Result<Frame, ClientError> {
        if payload.len() < ZERO_COPY_MIN_BYTES {
            return self.request(message, &payload).await;
        }
        self.wait_for_slot().await?;
        let request_id = {
            let mut state = self.shared.state.borrow_mut();
            let request_id = state.take_request_id();
            state.flush_small();
            let mut scratch = BytesMut::with_capacity(128);
            let parts = wire::encode_parts(
                &mut scratch,
                wire::Flags::REQUEST,
                request_id,
                message,
                payload,
            )?;
            state.outgoing.push(parts.head);
            state.outgoing.push(parts.payload);
            state.outgoing.push(Bytes::copy_from_slice(&parts.trailer));
            state.register(request_id);
            request_id
        };
        self.response(request_id).await
    }

    /// Puts a request in line now, synchronously: it is encoded at once and goes into the send
    /// queue now if a slot is free and nothing waits for one, else as soon as the requests
    /// ahead of it took theirs. Requests started one after the other are therefore sent in
    /// that order, whatever order the tasks awaiting them run in. The returned future resolves
    /// to the response; dropping it before the request was sent withdraws the request.
    /// Requests waiting for a slot this way are not bounded here: the caller bounds them.
    pub fn start_request_bytes<M: Message>(
        &self,
        message: &M,
        payload: Bytes,
    ) -> Result<PendingResponse, ClientError> {
        let mut state = self.shared.state.borrow_mut();
        if let Some(reason) = &state.closed {
            return Err(closed_error(reason));
        }
        let request_id = state.take_request_id();
        let mut scratch = BytesMut::with_capacity(128);
        let parts = if payload.len() < ZERO_COPY_MIN_BYTES {
            wire::encode_request(&mut scratch, request_id, message, &payload)?;
            vec![scratch.freeze()]
        } else {
            let parts = wire::encode_parts(
                &mut scratch,
                wire::Flags::REQUEST,
                request_id,
                message,
                payload,
            )?;
            vec![
                parts.head,
                parts.payload,
                Bytes::copy_from_slice(&parts.trailer),
            ]
        };
        let first_in_line = state.deferred.is_empty() && state.slot_waiters.is_empty();
        if first_in_line && state.slot_free() {
            state.flush_small();
            state.outgoing.extend(parts);
            state.register(request_id);
        } else {
            state.pending.insert(request_id, Slot::default());
            state.deferred.push_back((request_id, parts));
        }
        drop(state);
        Ok(self.response(request_id))
    }

    /// The answer to the request just registered under `request_id`.
    fn response(&self, request_id: u64) -> PendingResponse {
        PendingResponse {
            shared: Rc::clone(&self.shared),
            request_id,
            done: false,
        }
    }

    async fn wait_for_slot(&self) -> Result<(), ClientError> {
        SlotWait {
            shared: &self.shared,
            waiter_id: None,
        }
        .await
    }
}

/// Resolves once a slot is free and this request is first in line (no deferred request and no
/// older waiter ahead of it), or the connection closed. While waiting it holds one entry in
/// `slot_waiters`; dropped early, it removes that entry and, if it was first, wakes the next.
struct SlotWait<'a> {
    shared: &'a Shared,
    /// Its id in `slot_waiters` once it waited.
    waiter_id: Option<u64>,
}

impl Future for SlotWait<'_> {
    type Output = Result<(), ClientError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.shared.state.borrow_mut();
        let first = state.deferred.is_empty()
            && match this.waiter_id {
                None => state.slot_waiters.is_empty(),
                Some(id) => state
                    .slot_waiters
                    .front()
                    .is_some_and(|(front, _)| *front == id),
            };
        let ready = match &state.closed {
            Some(reason) => Some(Err(closed_error(reason))),
            None if first && state.slot_free() => Some(Ok(())),
            None => None,
        };
        if let Some(result) = ready {
            let mut next = None;
            if let Some(id) = this.waiter_id.take() {
                state.slot_waiters.retain(|(waiter, _)| *waiter != id);
                // Room for more than this one: the next in line may go too. (The caller
                // registers its request right after this returns, before anyone else runs.)
                if state.sent() + 1 < state.max_in_flight {
                    next = state.slot_waiters.front().map(|(_, waker)| waker.clone());
                }
            }
            drop(state);
            if let Some(waker) = next {
                waker.wake();
            }
            return Poll::Ready(result);
        }
        let waker = context.waker();
        let queued = this.waiter_id.and_then(|id| {
            state
                .slot_waiters
                .iter_mut()
                .find(|(waiter, _)| *waiter == id)
        });
        match queued {
            Some((_, known)) => {
                if !known.will_wake(waker) {
                    *known = waker.clone();
                }
            }
            None => {
                state.next_waiter_id += 1;
                let id = state.next_waiter_id;
                this.waiter_id = Some(id);
                state.slot_waiters.push_back((id, waker.clone()));
            }
        }
        Poll::Pending
    }
}

impl Drop for SlotWait<'_> {
    fn drop(&mut self) {
        let Some(id) = self.waiter_id else {
            return;
        };
        let next = {
            let mut state = self.shared.state.borrow_mut();
            let was_first = state
                .slot_waiters
                .front()
                .is_some_and(|(front, _)| *front == id);
            state.slot_waiters.retain(|(waiter, _)| *waiter != id);
            if was_first && state.closed.is_none() && state.deferred.is_empty() && state.slot_free()
            {
                // It was first in line for a free slot and gave up: the next one may go.
                state.slot_waiters.front().map(|(_, waker)| waker.clone())
            } else {
                None
            }
        };
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Shut the socket down now, so the server sees the end of the connection even if this
        // runtime never turns again to drop the cancelled tasks (which close the descriptor).
        // Cancelling the tasks cancels their in-flight socket operations; the runtime keeps
        // their buffers until the kernel is done with them.
        let fd = self.shared.stream.as_raw_fd();
        // SAFETY: plain syscall on a descriptor `shared` owns and keeps open; no memory is
        // handed to the kernel.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
        fail_all(&self.shared, "connection dropped".into());
    }
}

fn closed_error(reason: &str) -> ClientError {
    if reason.starts_with("GOAWAY") {
        ClientError::Goaway {
            reason: reason.to_string(),
            message: String::new(),
        }
    } else {
        ClientError::Unexpected(format!("connection closed: {reason}"))
    }
}

/// Marks the connection closed and fails every pending request.
fn fail_all(shared: &Shared, reason: String) {
    let (wakers, slot_waiters) = {
        let mut state = shared.state.borrow_mut();
        if state.closed.is_none() {
            state.closed = Some(reason.clone());
        }
        let mut wakers = Vec::new();
        for slot in state.pending.values_mut() {
            if slot.response.is_none() {
                slot.response = Some(Err(closed_error(&reason)));
                wakers.extend(slot.waker.take());
            }
        }
        wakers.extend(state.writer_waker.take());
        state.deferred.clear();
        let slot_waiters: Vec<Waker> = state.all_slot_waiters().collect();
        (wakers, slot_waiters)
    };
    for waker in wakers.into_iter().chain(slot_waiters) {
        waker.wake();
    }
}

/// The response to a request started with [`Connection::start_request_bytes`] (an error
/// response is a frame too). `!Send`, like the connection.
pub struct PendingResponse {
    shared: Rc<Shared>,
    request_id: u64,
    done: bool,
}

impl Future for PendingResponse {
    type Output = Result<Frame, ClientError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let request_id = self.request_id;
        let mut state = self.shared.state.borrow_mut();
        let Some(slot) = state.pending.get_mut(&request_id) else {
            drop(state);
            self.done = true;
            return Poll::Ready(Err(ClientError::Unexpected("request slot vanished".into())));
        };
        match slot.response.take() {
            Some(response) => {
                state.pending.remove(&request_id);
                let waiter = state.slot_freed();
                drop(state);
                if let Some(waiter) = waiter {
                    waiter.wake();
                }
                self.done = true;
                Poll::Ready(response)
            }
            None => {
                match &slot.waker {
                    Some(waker) if waker.will_wake(context.waker()) => {}
                    _ => slot.waker = Some(context.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for PendingResponse {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abandoned: forget the request; its response, if it comes, is discarded.
        let waiter = {
            let mut state = self.shared.state.borrow_mut();
            state.pending.remove(&self.request_id);
            let queued = state.deferred.len();
            let request_id = self.request_id;
            state.deferred.retain(|(id, _)| *id != request_id);
            if state.deferred.len() < queued {
                // Withdrawn before it was sent: it held no slot.
                None
            } else {
                state.slot_freed()
            }
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }
}

async fn write_loop(shared: Rc<Shared>) {
    let mut spare: Vec<Bytes> = Vec::new();
    loop {
        let batch = std::future::poll_fn(|context| {
            let mut state = shared.state.borrow_mut();
            if state.closed.is_some() {
                return Poll::Ready(None);
            }
            state.flush_small();
            if state.outgoing.is_empty() {
                state.writer_waker = Some(context.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Some(std::mem::replace(
                &mut state.outgoing,
                std::mem::take(&mut spare),
            )))
        })
        .await;
        let Some(batch) = batch else {
            return;
        };
        // Everything queued since the last write goes out in one sendmsg.
        let (result, mut returned) = shared.stream.writev_all(batch).await;
        if let Err(error) = result {
            fail_all(&shared, format!("write failed: {error}"));
            return;
        }
        returned.clear();
        spare = returned;
    }
}

async fn read_loop(shared: Rc<Shared>) {
    let mut decoder = Decoder::new(MAX_FRAME_BYTES);
    let mut received = BytesMut::with_capacity(READ_RESERVE_BYTES);
    loop {
        if received.capacity() - received.len() < READ_RESERVE_BYTES / 4 {
            received.reserve(READ_RESERVE_BYTES);
        }
        let (result, returned) = shared.stream.read(received).await;
        received = returned;
        match result {
            Ok(0) => {
                fail_all(&shared, "the server closed the connection".into());
                return;
            }
            Ok(_) => {}
            Err(error) => {
                fail_all(&shared, format!("read failed: {error}"));
                return;
            }
        }
        loop {
            match decoder.decode(&mut received) {
                Ok(Some(frame)) => deliver(&shared, frame),
                Ok(None) => break,
                Err(error) if !error.is_fatal() => {
                    log::warn!("skipping an undecodable response: {error}");
                }
                Err(error) => {
                    fail_all(&shared, format!("bad frame from the server: {error}"));
                    return;
                }
            }
        }
    }
}

fn deliver(shared: &Shared, frame: Frame) {
    if let Some(ClientError::Goaway { reason, message }) = goaway_error(&frame) {
        // Requests already sent will still be answered; new ones must go elsewhere.
        let mut state = shared.state.borrow_mut();
        let closed = state
            .closed
            .get_or_insert(format!("GOAWAY {reason}: {message}"))
            .clone();
        let mut waiters: Vec<Waker> = state.all_slot_waiters().collect();
        // Requests not sent yet never will be: they fail now.
        let deferred: Vec<u64> = state.deferred.drain(..).map(|(id, _)| id).collect();
        for id in deferred {
            if let Some(slot) = state.pending.get_mut(&id) {
                slot.response = Some(Err(closed_error(&closed)));
                waiters.extend(slot.waker.take());
            }
        }
        drop(state);
        waiters.into_iter().for_each(Waker::wake);
        return;
    }
    let waker = {
        let mut state = shared.state.borrow_mut();
        match state.pending.get_mut(&frame.request_id) {
            Some(slot) => {
                slot.response = Some(Ok(frame));
                slot.waker.take()
            }
            None => {
                log::debug!(
                    "response to unknown or abandoned request {}",
                    frame.request_id
                );
                None
            }
        }
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The payload of a successful response decoded as `M`, or the server's error.
pub fn decode_response<M: Message>(
    frame: &Frame,
) -> Result<Result<(M, Bytes), wire::msg::ErrorResponse>, ClientError> {
    if frame.is_error() {
        return Ok(Err(frame.error_response()?));
    }
    let message = frame.decode_message::<M>()?;
    Ok(Ok((message, frame.payload.clone())))
}
