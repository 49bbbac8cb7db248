//! Signals as futures: a signalfd read through the ring.
//!
//! [`Signals::new`] blocks the chosen signals for the calling thread (so they are queued instead
//! of running their default action) and opens a signalfd for them; [`Signals::recv`] reads it
//! through the ring. A process-directed signal (`kill`, Ctrl-C) is delivered to *any* thread that
//! does not block it, so call [`block`] (or create the `Signals`) on the main thread *before*
//! spawning other threads: they inherit the mask. The signals stay blocked after the `Signals`
//! is dropped, so a late Ctrl-C cannot kill a process that is shutting down cleanly.

use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types};

use crate::op::Op;

/// A signal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// Ctrl-C.
    pub const INTERRUPT: Signal = Signal(libc::SIGINT);
    /// Polite termination request (`kill`, service managers).
    pub const TERMINATE: Signal = Signal(libc::SIGTERM);
    /// Hang-up, conventionally "reload configuration".
    pub const HANGUP: Signal = Signal(libc::SIGHUP);
    /// User-defined signal 1.
    pub const USER1: Signal = Signal(libc::SIGUSR1);
    /// User-defined signal 2.
    pub const USER2: Signal = Signal(libc::SIGUSR2);

    /// Any signal by number.
    pub const fn from_raw(number: i32) -> Signal {
        Signal(number)
    }

    /// The signal number.
    pub const fn as_raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGHUP => "SIGHUP",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGUSR2 => "SIGUSR2",
            number => return write!(f, "signal {number}"),
        };
        f.write_str(name)
    }
}

fn signal_set(signals: &[Signal]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t on the stack.
    unsafe { libc::sigemptyset(&mut set) };
    for signal in signals {
        // SAFETY: as above; an invalid number is reported through the return value.
        if unsafe { libc::sigaddset(&mut set, signal.0) } != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{signal} is not a valid signal number"),
            ));
        }
    }
    Ok(set)
}

/// Blocks `signals` for the calling thread and the threads it spawns afterwards.
pub fn block(signals: &[Signal]) -> io::Result<()> {
    let set = signal_set(signals)?;
    // SAFETY: `set` is initialised; the old mask is not requested.
    let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if result != 0 {
        return Err(io::Error::from_raw_os_error(result));
    }
    Ok(())
}

/// A set of signals received through the ring.
#[derive(Debug)]
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks `signals` for this thread and opens a signalfd for them.
    pub fn new(signals: &[Signal]) -> io::Result<Signals> {
        block(signals)?;
        let set = signal_set(signals)?;
        // A blocking signalfd: io_uring would answer EAGAIN instead of waiting on a non-blocking
        // one.
        // SAFETY: `set` is initialised; the result is checked.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        Ok(Signals {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Waits for the next of the signals.
    pub async fn recv(&mut self) -> io::Result<Signal> {
        // SAFETY: signalfd_siginfo is plain data; all-zero is valid.
        let info: Box<libc::signalfd_siginfo> = Box::new(unsafe { mem::zeroed() });
        let fd = self.fd.as_raw_fd();
        let op = Op::submit(info, |info| {
            opcode::Read::new(
                types::Fd(fd),
                (&mut **info as *mut libc::signalfd_siginfo).cast(),
                mem::size_of::<libc::signalfd_siginfo>() as u32,
            )
            .build()
        })
        .map_err(|(error, _)| error)?;
        let (completion, info) = op.await;
        let read = completion.into_result()? as usize;
        if read != mem::size_of::<libc::signalfd_siginfo>() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("signalfd returned {read} bytes, expected a whole siginfo"),
            ));
        }
        Ok(Signal(info.ssi_signo as i32))
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits for one of `signals` (blocking them for this thread first).
pub async fn wait(signals: &[Signal]) -> io::Result<Signal> {
    Signals::new(signals)?.recv().await
}

/// Waits for SIGINT, SIGTERM or SIGHUP: the usual shutdown/reload trio.
pub async fn shutdown_or_reload() -> io::Result<Signal> {
    wait(&[Signal::INTERRUPT, Signal::TERMINATE, Signal::HANGUP]).await
}
