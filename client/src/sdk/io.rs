//! The SDK's I/O thread: one thread running the project's runtime, owning every connection to
//! placement managers and data nodes.
//!
//! Application threads hand it jobs through an [`Inbox`] (a short mutex-protected queue plus
//! the runtime task's `Waker`, which the runtime lets any thread wake). A job runs on the I/O
//! thread and usually spawns a task there; its result goes back through a
//! [`crate::sdk::completion::Completion`]. Connections are kept per address and replaced when
//! they fail. The thread stops once every handle (client, writer, reader, append future) is
//! dropped.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wire::msg::ErrorResponse;
use wire::{ErrorCode, Message};

use crate::multiplexed::{decode_response, Connection};
use crate::sdk::completion::{Completion, Wait};
use crate::sdk::config::ClientConfig;
use crate::sdk::error::SdkError;

/// Requests one connection keeps in flight before more wait for a slot.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 4096;
/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First and largest pause between retries of a retriable failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(1_000);

/// A job for the I/O thread.
type Job = Box<dyn FnOnce(&Rc<Io>) + Send>;

/// Jobs from any thread to the I/O thread.
struct Inbox {
    state: Mutex<InboxState>,
}

struct InboxState {
    jobs: VecDeque<Job>,
    waker: Option<Waker>,
    closed: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `job` and wakes the I/O thread; gives it back if the thread is gone.
    fn push(&self, job: Job) -> Result<(), Job> {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(job);
            }
            state.jobs.push_back(job);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The application side's handle on the I/O thread. Dropping the last one stops the thread.
pub(crate) struct IoHandle {
    inbox: Arc<Inbox>,
    config: ClientConfig,
}

impl IoHandle {
    /// Starts the I/O thread with its runtime.
    pub(crate) fn start(config: ClientConfig) -> Result<Arc<IoHandle>, SdkError> {
        config.validate().map_err(SdkError::InvalidArgument)?;
        let inbox = Arc::new(Inbox {
            state: Mutex::new(InboxState {
                jobs: VecDeque::new(),
                waker: None,
                closed: false,
            }),
        });
        let (started_sender, started) = std::sync::mpsc::channel();
        let thread_inbox = Arc::clone(&inbox);
        let thread_config = config.clone();
        std::thread::Builder::new()
            .name("es-sdk-io".into())
            .spawn(move || {
                let mut runtime = match runtime::Runtime::new() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        thread_inbox.close();
                        let _ = started_sender.send(Err(error.to_string()));
                        return;
                    }
                };
                let _ = started_sender.send(Ok(()));
                runtime.block_on(run(thread_inbox, thread_config));
            })
            .map_err(|error| {
                SdkError::InvalidArgument(format!("cannot start the SDK's I/O thread: {error}"))
            })?;
        match started.recv() {
            Ok(Ok(())) => Ok(Arc::new(IoHandle { inbox, config })),
            Ok(Err(error)) => Err(SdkError::InvalidArgument(format!(
                "cannot start the SDK's runtime (io_uring): {error}"
            ))),
            Err(_) => Err(SdkError::Closed),
        }
    }

    /// The configuration the I/O thread runs with.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Runs `make(io)` on the I/O thread and resolves to its output, from any thread and any
    /// executor.
    pub(crate) fn submit<T, F, Fut>(
        &self,
        make: F,
    ) -> impl Future<Output = Result<T, SdkError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(Rc<Io>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SdkError>> + 'static,
    {
        let slot = Completion::<Result<T, SdkError>>::new();
        let filler = Arc::clone(&slot);
        let job: Job = Box::new(move |io: &Rc<Io>| {
            let future = make(Rc::clone(io));
            runtime::spawn(async move {
                filler.complete(future.await);
            });
        });
        if self.inbox.push(job).is_err() {
            slot.complete(Err(SdkError::Closed));
        }
        let wait = Wait::new(slot);
        async move { wait.await.unwrap_or(Err(SdkError::Closed)) }
    }

    /// Runs `job` on the I/O thread (fire and forget); false if the thread is gone.
    pub(crate) fn spawn(&self, job: impl FnOnce(&Rc<Io>) + Send + 'static) -> bool {
        self.inbox.push(Box::new(job)).is_ok()
    }
}

impl Drop for IoHandle {
    fn drop(&mut self) {
        self.inbox.close();
    }
}

/// The I/O thread's main task: runs jobs until the inbox closes.
async fn run(inbox: Arc<Inbox>, config: ClientConfig) {
    let io = Rc::new(Io::new(config));
    let mut jobs = VecDeque::new();
    loop {
        let open = std::future::poll_fn(|context| {
            let mut state = inbox.lock();
            if !state.jobs.is_empty() {
                std::mem::swap(&mut jobs, &mut state.jobs);
                return Poll::Ready(true);
            }
            if state.closed {
                return Poll::Ready(false);
            }
            state.waker = Some(context.waker().clone());
            Poll::Pending
        })
        .await;
        if !open {
            log::debug!("SDK I/O thread stops: every handle is dropped");
            return;
        }
        for job in jobs.drain(..) {
            job(&io);
        }
    }
}

/// Why a request to a data node got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection could be made, or it broke (a killed node shows up here).
    Connection(String),
    /// The server refused the configured token.
    Unauthenticated(String),
    /// No answer within the timeout (a stopped node shows up here).
    Timeout(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connection(reason) | Failure::Unauthenticated(reason) => {
                write!(formatter, "{reason}")
            }
            Failure::Timeout(waited) => {
                write!(formatter, "no answer within {} ms", waited.as_millis())
            }
        }
    }
}

/// An answer: the decoded response with its payload, or the server's error.
pub(crate) type Answer<R> = Result<(R, Bytes), ErrorResponse>;

/// Everything on the I/O thread: the configuration and the connections.
pub(crate) struct Io {
    pub(crate) config: ClientConfig,
    connections: RefCell<HashMap<String, Rc<Connection>>>,
    /// Index in `pm_addresses` of the placement manager that answered last.
    preferred_pm: Cell<usize>,
}

impl Io {
    fn new(config: ClientConfig) -> Io {
        Io {
            config,
            connections: RefCell::new(HashMap::new()),
            preferred_pm: Cell::new(0),
        }
    }

    /// A live connection to `address`, made (and authenticated) if needed.
    pub(crate) async fn connection(&self, address: &str) -> Result<Rc<Connection>, Failure> {
        if let Some(connection) = self.connections.borrow().get(address) {
            if connection.closed_reason().is_none() {
                return Ok(Rc::clone(connection));
            }
        }
        self.connections.borrow_mut().remove(address);
        let connection = Rc::new(
            self.open_connection(address, MAX_IN_FLIGHT_PER_CONNECTION, CONNECT_TIMEOUT)
                .await?,
        );
        // Two tasks may have connected at once: keep the first, use whichever is ours.
        self.connections
            .borrow_mut()
            .entry(address.to_string())
            .or_insert_with(|| Rc::clone(&connection));
        Ok(connection)
    }

    /// A new connection to `address` of its own (not shared), authenticated if a token is
    /// configured, made within `timeout`.
    pub(crate) async fn open_connection(
        &self,
        address: &str,
        max_in_flight: usize,
        timeout: Duration,
    ) -> Result<Connection, Failure> {
        let socket_address = resolve(address).map_err(Failure::Connection)?;
        let connected =
            runtime::time::timeout(timeout, Connection::connect(socket_address, max_in_flight))
                .await
                .map_err(|_| Failure::Timeout(timeout))?
                .map_err(|error| Failure::Connection(error.to_string()))?;
        if let Some(token) = &self.config.token {
            runtime::time::timeout(timeout, connected.authenticate(token))
                .await
                .map_err(|_| Failure::Timeout(timeout))?
                .map_err(|error| match error {
                    crate::conn::ClientError::Unauthenticated(_) => {
                        Failure::Unauthenticated(format!("{address}: {error}"))
                    }
                    _ => Failure::Connection(error.to_string()),
                })?;
        }
        Ok(connected)
    }

    /// Forgets the connection to `address` (it failed), so the next request reconnects.
    pub(crate) fn forget(&self, address: &str) {
        self.connections.borrow_mut().remove(address);
    }

    /// Sends `request` with `payload` to `address` and waits up to `timeout` for the answer.
    pub(crate) async fn request<M: Message, R: Message>(
        &self,
        address: &str,
        request: &M,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Answer<R>, Failure> {
        let started = Instant::now();
        let exchange = async {
            let connection = self.connection(address).await?;
            let frame = connection
                .request_bytes(request, payload)
                .await
                .map_err(|error| Failure::Connection(error.to_string()))?;
            decode_response::<R>(&frame).map_err(|error| Failure::Connection(error.to_string()))
        };
        match runtime::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => {
                self.forget_if_closed(address);
                Err(failure)
            }
            Err(_) => Err(Failure::Timeout(started.elapsed())),
        }
    }

    fn forget_if_closed(&self, address: &str) {
        let closed = self
            .connections
            .borrow()
            .get(address)
            .is_some_and(|connection| connection.closed_reason().is_some());
        if closed {
            self.forget(address);
        }
    }

    /// One pass over the placement managers, from the one that answered last: the first
    /// answer that is not `NOT_LEADER` or `SHUTTING_DOWN`. With `resend` false, a request
    /// whose exchange failed after it may have been sent is not sent again elsewhere (it may
    /// have been applied).
    pub(crate) async fn pm_once<M: Message, R: Message>(
        &self,
        request: &M,
        resend: bool,
    ) -> Result<Result<R, ErrorResponse>, PmFailure> {
        let addresses = &self.config.pm_addresses;
        let first = self.preferred_pm.get() % addresses.len();
        let mut reasons = Vec::new();
        let mut refusal = None;
        for step in 0..addresses.len() {
            let index = (first + step) % addresses.len();
            let address = &addresses[index];
            let connected = match self.connection(address).await {
                Ok(_) => true,
                Err(Failure::Unauthenticated(reason)) => {
                    return Err(PmFailure::Unauthenticated(reason));
                }
                Err(failure) => {
                    reasons.push(format!("{address}: {failure}"));
                    false
                }
            };
            if !connected {
                continue;
            }
            match self
                .request::<M, R>(address, request, Bytes::new(), self.config.request_timeout)
                .await
            {
                Ok(Ok((response, _))) => {
                    self.preferred_pm.set(index);
                    return Ok(Ok(response));
                }
                Ok(Err(error))
                    if matches!(error.code, ErrorCode::NotLeader | ErrorCode::ShuttingDown) =>
                {
                    reasons.push(format!("{address}: {}", error.code));
                    refusal = Some(error);
                }
                Ok(Err(error)) => {
                    self.preferred_pm.set(index);
                    return Ok(Err(error));
                }
                Err(failure) => {
                    reasons.push(format!("{address}: {failure}"));
                    if !resend {
                        return Err(PmFailure::MaybeApplied(reasons.join("; ")));
                    }
                }
            }
        }
        match refusal {
            Some(error) => Ok(Err(error)),
            None => Err(PmFailure::Unreachable(reasons.join("; "))),
        }
    }

    /// A request to the placement manager, retried within `retry_for` while no placement
    /// manager answers or the answer is a retriable error (`NO_AVAILABLE_NODES`, `NOT_LEADER`,
    /// ...). The request must be safe to repeat.
    pub(crate) async fn pm_call<M: Message, R: Message>(
        &self,
        operation: &str,
        request: &M,
    ) -> Result<Result<R, ErrorResponse>, SdkError> {
        self.pm_call_adjusting(operation, request, |_, _| None)
            .await
    }

    /// [`Io::pm_call`]; after each retriable error answer, `adjust` may give the request to
    /// send from then on instead.
    pub(crate) async fn pm_call_adjusting<M: Message, R: Message>(
        &self,
        operation: &str,
        request: &M,
        mut adjust: impl FnMut(&M, &ErrorResponse) -> Option<M>,
    ) -> Result<Result<R, ErrorResponse>, SdkError> {
        let started = Instant::now();
        let mut backoff = Backoff::new();
        let mut adjusted: Option<M> = None;
        loop {
            let request = adjusted.as_ref().unwrap_or(request);
            let outcome = self.pm_once::<M, R>(request, true).await;
            let waited = started.elapsed();
            let give_up = waited >= self.config.retry_for;
            match outcome {
                Ok(Err(error)) if error.code.is_retriable() && !give_up => {
                    log::info!(
                        "{operation}: the placement manager answered {} ({}); retrying",
                        error.code,
                        error.message
                    );
                    if let Some(next) = adjust(request, &error) {
                        adjusted = Some(next);
                    }
                }
                Ok(answer) => return Ok(answer),
                Err(PmFailure::Unauthenticated(reason)) => {
                    return Err(SdkError::Unauthenticated(reason))
                }
                Err(PmFailure::Unreachable(reason) | PmFailure::MaybeApplied(reason)) => {
                    if give_up {
                        return Err(SdkError::PmUnreachable {
                            addresses: self.config.pm_addresses.clone(),
                            reason,
                            waited,
                        });
                    }
                    log::warn!("{operation}: no placement manager answered ({reason}); retrying");
                }
            }
            backoff.wait().await;
        }
    }
}

/// Why a pass over the placement managers got no answer.
#[derive(Debug)]
pub(crate) enum PmFailure {
    /// None could be reached, or all refused.
    Unreachable(String),
    /// The request may have been applied: the exchange broke after sending.
    MaybeApplied(String),
    /// A placement manager refused the configured token.
    Unauthenticated(String),
}

/// Doubling pauses between retries, from 50 ms up to 1 s.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }

    pub(crate) async fn wait(&mut self) {
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        runtime::time::sleep(pause).await;
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {address}: {error}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

/// Waits for every future, in order of the list; outputs in the same order.
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Runs `future` to completion on the calling thread, parking it between polls: the smallest
/// executor there is, for programs that do not run one (the `es` tool, scripts, tests). The
/// SDK's own I/O runs on its I/O thread either way.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(test)]
pub(crate) fn block_on_for_tests<F: Future>(future: F) -> F::Output {
    block_on(future)
}
