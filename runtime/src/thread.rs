//! Named threads pinned to a CPU, optionally running their own runtime.
//!
//! Thread-per-core means each worker owns a core: [`spawn_pinned`] sets the new thread's CPU
//! affinity before running its closure; a CPU the process may not use is an error up front. [`spawn_runtime`] also builds a [`Runtime`] on the new
//! thread (a ring must be created by the thread that submits to it) and runs a future on it.

use std::future::Future;
use std::io;
use std::mem;
use std::thread::JoinHandle;

use crate::executor::{Builder, Runtime};

/// CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is out of range (max {})", libc::CPU_SETSIZE - 1),
        ));
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it (cpu checked above).
    let result = unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("cannot pin thread to cpu {cpu}: {error}"),
        ));
    }
    Ok(())
}

/// True when this process may run on `cpu` (its affinity mask, e.g. from `taskset`, allows it).
pub fn cpu_allowed(cpu: usize) -> io::Result<bool> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Ok(false);
    }
    // SAFETY: cpu_set_t is plain data filled by the kernel; CPU_ISSET reads inside it.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        if libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(libc::CPU_ISSET(cpu, &set))
    }
}

/// Spawns a thread named `name`, pinned to `cpu` when given, running `f`. A CPU this process may
/// not use is an error before any thread starts.
pub fn spawn_pinned<F, T>(
    name: impl Into<String>,
    cpu: Option<usize>,
    f: F,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let name = name.into();
    if let Some(cpu) = cpu {
        if !cpu_allowed(cpu)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "thread {name}: cpu {cpu} is not available to this process ({} cpus)",
                    available_cpus()
                ),
            ));
        }
    }
    let thread_name = name.clone();
    std::thread::Builder::new().name(name).spawn(move || {
        if let Some(cpu) = cpu {
            // Checked above; only a concurrent affinity change can make this fail.
            if let Err(error) = pin_current_thread(cpu) {
                log::error!("thread {thread_name} runs unpinned: {error}");
            }
        }
        f()
    })
}

/// Spawns a pinned thread that builds a runtime with `builder` and runs the future `f` makes on
/// it. The thread's result is the future's output, or the error from building the ring.
pub fn spawn_runtime<F, Fut>(
    name: impl Into<String>,
    cpu: Option<usize>,
    builder: Builder,
    f: F,
) -> io::Result<JoinHandle<io::Result<Fut::Output>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    spawn_pinned(name, cpu, move || {
        let mut runtime: Runtime = builder.build()?;
        Ok(runtime.block_on(f()))
    })
}
