//! The executor: one per thread, running `!Send` tasks from a slab, woken from any thread.
//!
//! A [`Runtime`] owns a [`Driver`] (its io_uring ring), a timer heap and a slab of tasks. Its
//! loop, in [`Runtime::block_on`], repeats one *turn*:
//!
//! 1. poll the main future if it was woken, then up to `max_polls_per_turn` woken tasks, each with
//!    a fresh cooperative budget;
//! 2. move tasks woken from other threads (the remote queue) onto the local run queue;
//! 3. enter the kernel once: submit every queued SQE and, if nothing is runnable, sleep until a
//!    completion arrives, the next timer is due, or another thread wakes us;
//! 4. hand out completions (waking the operations' tasks) and fire expired timers.
//!
//! Wakers are `Send + Sync`. A wake on the runtime's own thread pushes the task id onto the local
//! run queue (one atomic swap to de-duplicate, no syscall, no allocation). A wake from another
//! thread pushes the task onto the runtime's remote queue, and writes the runtime's eventfd only
//! if the runtime has announced that it is going to sleep; the ring always has a read of that
//! eventfd in flight while it sleeps, so the write ends the wait. The sleep announcement and the
//! remote push use the same fence-then-check pairing as mailboxes, so no wake is lost.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::driver::{Driver, RingMode};
use crate::remote::Remote;
use crate::time::Timers;

/// Task id reserved for the future passed to `block_on`.
const MAIN_TASK: usize = usize::MAX;

/// The task is on a run queue (local or remote) and will be polled.
const QUEUED: u8 = 1;
/// The task has finished or was aborted; wakes are ignored.
const DONE: u8 = 2;

thread_local! {
    static CURRENT: RefCell<Option<Rc<Context>>> = const { RefCell::new(None) };
    /// Identity of the remote queue of the runtime running on this thread, to tell local wakes
    /// from cross-thread ones without touching `CURRENT`'s RefCell.
    static CURRENT_REMOTE: Cell<*const Remote> = const { Cell::new(std::ptr::null()) };
}

/// Configures and builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
    max_polls_per_turn: usize,
    budget: u32,
    defer_taskrun: bool,
    sqpoll_idle_ms: Option<u32>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            entries: 256,
            max_polls_per_turn: 128,
            budget: 128,
            defer_taskrun: true,
            sqpoll_idle_ms: None,
        }
    }
}

impl Builder {
    /// The defaults: 256 ring entries, 128 task polls per turn, a budget of 128 completed
    /// operations per task poll, SINGLE_ISSUER + DEFER_TASKRUN when the kernel has them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Submission queue size (the completion queue is twice as large). Rounded up to a power of
    /// two by the kernel.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries.max(8);
        self
    }

    /// How many woken tasks one turn polls before it reaps completions again.
    pub fn max_polls_per_turn(mut self, polls: usize) -> Self {
        self.max_polls_per_turn = polls.max(1);
        self
    }

    /// How many completed operations one task may consume in one poll before it is made to yield
    /// (cooperative scheduling: a task that always finds data ready cannot starve the others).
    pub fn budget(mut self, budget: u32) -> Self {
        self.budget = budget.max(1);
        self
    }

    /// Whether to ask for DEFER_TASKRUN (completions are processed only when this thread enters
    /// the kernel, which suits a loop that enters once per turn). Falls back silently when the
    /// kernel refuses it.
    pub fn defer_taskrun(mut self, enabled: bool) -> Self {
        self.defer_taskrun = enabled;
        self
    }

    /// Runs a kernel thread polling the submission queue, idling after `idle_ms`. Costs a core
    /// while busy; off by default. Incompatible with DEFER_TASKRUN, which is then not used.
    pub fn sqpoll(mut self, idle_ms: Option<u32>) -> Self {
        self.sqpoll_idle_ms = idle_ms;
        self
    }

    /// Sets up the ring and the runtime on the calling thread. The runtime must be used on this
    /// thread only (it is `!Send`).
    pub fn build(&self) -> io::Result<Runtime> {
        let remote = Arc::new(Remote::new()?);
        let driver = Driver::new(
            self.entries,
            self.defer_taskrun && self.sqpoll_idle_ms.is_none(),
            self.sqpoll_idle_ms,
            remote.eventfd(),
        )?;
        let context = Rc::new(Context {
            driver: RefCell::new(driver),
            timers: RefCell::new(Timers::default()),
            tasks: RefCell::new(Slab::with_capacity(64)),
            run_queue: RefCell::new(VecDeque::with_capacity(64)),
            remote,
            budget: Cell::new(self.budget),
            initial_budget: self.budget,
            main_woken: Cell::new(false),
            max_polls_per_turn: self.max_polls_per_turn,
        });
        Ok(Runtime { context })
    }
}

/// A single-threaded io_uring runtime. Build one per thread with [`Builder`], then drive
/// everything from [`Runtime::block_on`].
pub struct Runtime {
    context: Rc<Context>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("tasks", &self.context.tasks.borrow().len())
            .finish()
    }
}

impl Runtime {
    /// A runtime with the default [`Builder`] settings.
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// Runs `future` to completion on this thread, running spawned tasks, I/O and timers
    /// meanwhile. Tasks still pending when it returns stay in the runtime and resume at the next
    /// `block_on`; they are dropped with the runtime.
    ///
    /// Panics if called while another runtime is running on this thread (nested `block_on`).
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        let _guard = EnterGuard::enter(&self.context);
        let context = self.context.clone();
        let main_header = Arc::new(Header {
            id: MAIN_TASK,
            state: AtomicU8::new(0),
            remote: context.remote.clone(),
        });
        let main_waker = Waker::from(main_header.clone());
        let mut future = std::pin::pin!(future);
        context.main_woken.set(true);
        loop {
            if context.main_woken.replace(false) {
                main_header.state.fetch_and(!QUEUED, Ordering::AcqRel);
                context.budget.set(context.initial_budget);
                let mut task_context = TaskContext::from_waker(&main_waker);
                if let Poll::Ready(output) = future.as_mut().poll(&mut task_context) {
                    return output;
                }
            }
            context.turn();
        }
    }

    /// Which io_uring setup flags the kernel accepted for this runtime's ring.
    pub fn ring_mode(&self) -> RingMode {
        self.context.driver.borrow().mode()
    }

    /// Counters describing the runtime right now (tasks, operations in flight, parked buffers).
    pub fn stats(&self) -> Stats {
        self.context.stats()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Tasks are dropped with the runtime installed, so their in-flight operations can cancel
        // and park their buffers; then the driver waits for the kernel to finish with them.
        let _guard = EnterGuard::replace(&self.context);
        let tasks: Vec<Task> = self.context.tasks.borrow_mut().drain().collect();
        for task in &tasks {
            task.header.state.fetch_or(DONE, Ordering::AcqRel);
        }
        drop(tasks);
        self.context.run_queue.borrow_mut().clear();
        self.context.remote.close();
        self.context.driver.borrow_mut().shutdown();
    }
}

/// Installs a runtime's context as the thread's current one for the guard's lifetime.
struct EnterGuard {
    installed: bool,
    /// The context that was current before (`replace` only), restored on drop.
    previous: Option<Rc<Context>>,
}

impl EnterGuard {
    fn enter(context: &Rc<Context>) -> EnterGuard {
        let guard = Self::try_enter(context);
        assert!(
            guard.installed,
            "Runtime::block_on called while a runtime is already running on this thread"
        );
        guard
    }

    fn try_enter(context: &Rc<Context>) -> EnterGuard {
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            if current.is_some() {
                return EnterGuard {
                    installed: false,
                    previous: None,
                };
            }
            *current = Some(context.clone());
            CURRENT_REMOTE.with(|remote| remote.set(Arc::as_ptr(&context.remote)));
            EnterGuard {
                installed: true,
                previous: None,
            }
        })
    }

    /// Installs `context` even if another runtime is current (a runtime dropped inside another
    /// one's `block_on`), so destructors reach the right ring; the other is restored on drop.
    fn replace(context: &Rc<Context>) -> EnterGuard {
        let previous = CURRENT.with(|current| current.borrow_mut().replace(context.clone()));
        CURRENT_REMOTE.with(|remote| remote.set(Arc::as_ptr(&context.remote)));
        EnterGuard {
            installed: true,
            previous,
        }
    }
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        if self.installed {
            let previous = self.previous.take();
            let remote = previous
                .as_ref()
                .map_or(std::ptr::null(), |context| Arc::as_ptr(&context.remote));
            CURRENT_REMOTE.with(|current| current.set(remote));
            // Swap the context out first and drop it after the borrow ends: dropping it may run
            // destructors that look at CURRENT.
            let context =
                CURRENT.with(|current| std::mem::replace(&mut *current.borrow_mut(), previous));
            drop(context);
        }
    }
}

/// Runtime counters, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Spawned tasks not finished yet.
    pub tasks: usize,
    /// Operations submitted whose completion has not been reaped yet (including cancelled ones).
    pub ops_in_flight: usize,
    /// Cancelled operations whose buffers are parked until their completion arrives.
    pub ops_cancelled: usize,
    /// Timers registered and not fired or dropped yet.
    pub timers: usize,
    /// `io_uring_enter` calls made since the runtime was built.
    pub enters: u64,
}

/// Counters of the runtime running on this thread. Panics outside a runtime.
pub fn stats() -> Stats {
    with_context(|context| context.stats())
}

/// Everything a running runtime shares with the futures it polls.
pub(crate) struct Context {
    pub(crate) driver: RefCell<Driver>,
    pub(crate) timers: RefCell<Timers>,
    tasks: RefCell<Slab<Task>>,
    run_queue: RefCell<VecDeque<usize>>,
    remote: Arc<Remote>,
    budget: Cell<u32>,
    initial_budget: u32,
    main_woken: Cell<bool>,
    max_polls_per_turn: usize,
}

struct Task {
    header: Arc<Header>,
    /// `None` while the task is being polled (taken out so the slab stays usable by `spawn`).
    future: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

/// Runs `f` with the context of the runtime on this thread. Panics outside a runtime: spawning
/// or doing I/O without one is a programming error.
pub(crate) fn with_context<R>(f: impl FnOnce(&Context) -> R) -> R {
    CURRENT.with(|current| {
        let current = current.borrow();
        let context = current.as_ref().expect(
            "no runtime on this thread: call this inside Runtime::block_on (runtime::Builder)",
        );
        f(context)
    })
}

/// Like [`with_context`], but returns `None` outside a runtime (used by destructors).
pub(crate) fn try_with_context<R>(f: impl FnOnce(&Context) -> R) -> Option<R> {
    CURRENT.with(|current| {
        let current = current.try_borrow().ok()?;
        current.as_deref().map(f)
    })
}

impl Context {
    fn stats(&self) -> Stats {
        let driver = self.driver.borrow();
        Stats {
            tasks: self.tasks.borrow().len(),
            ops_in_flight: driver.ops_in_flight(),
            ops_cancelled: driver.ops_cancelled(),
            timers: self.timers.borrow().len(),
            enters: driver.enters(),
        }
    }

    /// One loop turn: run woken tasks, collect remote wakes, enter the kernel once, dispatch.
    fn turn(&self) {
        for _ in 0..self.max_polls_per_turn {
            let Some(id) = self.run_queue.borrow_mut().pop_front() else {
                break;
            };
            if id == MAIN_TASK {
                self.main_woken.set(true);
            } else {
                self.poll_task(id);
            }
        }
        self.take_remote_wakes();

        let runnable = self.main_woken.get() || !self.run_queue.borrow().is_empty();
        if runnable {
            self.driver.borrow_mut().submit_and_reap();
        } else {
            let now = Instant::now();
            let timeout = self
                .timers
                .borrow_mut()
                .next_deadline()
                .map(|deadline| deadline.saturating_duration_since(now));
            if timeout == Some(Duration::ZERO) {
                self.driver.borrow_mut().submit_and_reap();
            } else {
                self.sleep(timeout);
            }
        }
        self.driver.borrow_mut().dispatch_completions();
        let expired = self.timers.borrow_mut().take_expired(Instant::now());
        for waker in expired {
            waker.wake();
        }
        self.take_remote_wakes();
    }

    /// Enters the kernel to wait, unless another thread queued a wake meanwhile.
    fn sleep(&self, timeout: Option<Duration>) {
        self.driver.borrow_mut().arm_remote_wake();
        if !self.remote.prepare_sleep() {
            self.driver.borrow_mut().submit_and_reap();
            return;
        }
        self.driver.borrow_mut().submit_and_wait(timeout);
        self.remote.finish_sleep();
    }

    fn take_remote_wakes(&self) {
        let mut run_queue = self.run_queue.borrow_mut();
        self.remote.drain(|id| run_queue.push_back(id));
    }

    fn poll_task(&self, id: usize) {
        let (header, mut future) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(id) else {
                return;
            };
            let Some(future) = task.future.take() else {
                return;
            };
            (task.header.clone(), future)
        };
        header.state.fetch_and(!QUEUED, Ordering::AcqRel);
        self.budget.set(self.initial_budget);
        let waker = Waker::from(header.clone());
        let mut task_context = TaskContext::from_waker(&waker);
        let finished = future.as_mut().poll(&mut task_context).is_ready();
        let aborted = header.state.load(Ordering::Acquire) & DONE != 0;
        if finished || aborted {
            header.state.fetch_or(DONE, Ordering::AcqRel);
            {
                let mut tasks = self.tasks.borrow_mut();
                if tasks
                    .get(id)
                    .is_some_and(|task| Arc::ptr_eq(&task.header, &header))
                {
                    tasks.remove(id);
                }
            }
            drop(future);
        } else {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(id) {
                Some(task) if Arc::ptr_eq(&task.header, &header) => task.future = Some(future),
                _ => {
                    drop(tasks);
                    drop(future);
                }
            }
        }
    }

    fn spawn_boxed(&self, future: Pin<Box<dyn Future<Output = ()>>>) -> Arc<Header> {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let header = Arc::new(Header {
            id: entry.key(),
            state: AtomicU8::new(QUEUED),
            remote: self.remote.clone(),
        });
        entry.insert(Task {
            header: header.clone(),
            future: Some(future),
        });
        let task_count = tasks.len();
        drop(tasks);
        let mut run_queue = self.run_queue.borrow_mut();
        // Every task is on the run queue at most once (the QUEUED bit), so a queue as large as
        // the task count never reallocates on wake.
        if run_queue.capacity() < task_count + 1 {
            let queued = run_queue.len();
            run_queue.reserve(task_count + 1 - queued);
        }
        run_queue.push_back(header.id);
        header
    }

    fn abort(&self, header: &Arc<Header>) {
        header.state.fetch_or(DONE, Ordering::AcqRel);
        let future = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(header.id) {
                Some(task) if Arc::ptr_eq(&task.header, header) => match task.future.take() {
                    Some(future) => {
                        tasks.remove(header.id);
                        Some(future)
                    }
                    // Being polled right now (it aborted itself): `poll_task` drops it.
                    None => None,
                },
                _ => None,
            }
        };
        drop(future);
    }

    fn push_local(&self, id: usize) {
        if id == MAIN_TASK {
            self.main_woken.set(true);
            return;
        }
        self.run_queue.borrow_mut().push_back(id);
    }

    /// Takes one unit of the current task's budget; false when it is used up.
    pub(crate) fn consume_budget(&self) -> bool {
        let budget = self.budget.get();
        if budget == 0 {
            return false;
        }
        self.budget.set(budget - 1);
        true
    }
}

/// Adds one to an eventfd's counter.
pub(crate) fn signal_eventfd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live stack value; the kernel copies them during the call.
    unsafe { libc::write(fd, (&one as *const u64).cast(), std::mem::size_of::<u64>()) };
}

/// The part of a task that wakers point to. Shared with other threads, so only atomics inside.
struct Header {
    id: usize,
    state: AtomicU8,
    remote: Arc<Remote>,
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let previous = self.state.fetch_or(QUEUED, Ordering::AcqRel);
        if previous & (QUEUED | DONE) != 0 {
            return;
        }
        let on_own_thread =
            CURRENT_REMOTE.with(|current| std::ptr::eq(current.get(), Arc::as_ptr(&self.remote)));
        if on_own_thread {
            let pushed = try_with_context(|context| context.push_local(self.id));
            if pushed.is_some() {
                return;
            }
        }
        self.remote.push(self.id);
    }
}

/// Spawns a task on the runtime running on this thread. The task may hold `!Send` data; it is
/// polled only on this thread. Panics outside a runtime.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(RefCell::new(JoinState {
        output: None,
        waiter: None,
    }));
    let task_state = state.clone();
    let task = async move {
        let output = future.await;
        let waiter = {
            let mut state = task_state.borrow_mut();
            state.output = Some(output);
            state.waiter.take()
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    };
    let header = with_context(|context| context.spawn_boxed(Box::pin(task)));
    JoinHandle { header, state }
}

struct JoinState<T> {
    output: Option<T>,
    waiter: Option<Waker>,
}

/// Awaits a spawned task's output. Dropping the handle detaches the task (it keeps running);
/// [`JoinHandle::abort`] cancels it.
pub struct JoinHandle<T> {
    header: Arc<Header>,
    state: Rc<RefCell<JoinState<T>>>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped now (or, if it is the running task aborting
    /// itself, as soon as its current poll returns). In-flight operations it owned are cancelled
    /// and their buffers parked until the kernel is done with them.
    pub fn abort(self) {
        if self.header.state.load(Ordering::Acquire) & DONE != 0 {
            return;
        }
        with_context(|context| context.abort(&self.header));
    }

    /// True once the task has finished (or was aborted).
    pub fn is_finished(&self) -> bool {
        self.header.state.load(Ordering::Acquire) & DONE != 0
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        let mut state = self.state.borrow_mut();
        if let Some(output) = state.output.take() {
            return Poll::Ready(output);
        }
        match &state.waiter {
            Some(waiter) if waiter.will_wake(cx.waker()) => {}
            _ => state.waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.header.id)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Yields to the other tasks once: the caller is re-queued behind every task already woken.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Cooperative scheduling point for futures that can be ready many times in a row: returns
/// `Pending` (after re-waking the task) when the task used up its budget for this poll.
pub(crate) fn poll_budget(cx: &mut TaskContext<'_>) -> Poll<()> {
    match try_with_context(|context| context.consume_budget()) {
        Some(false) => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        _ => Poll::Ready(()),
    }
}
