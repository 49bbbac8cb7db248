//! A thread-per-core io_uring runtime: one ring per thread, `!Send` tasks, no work stealing.
//!
//! * [`Runtime`] / [`Builder`]: the executor and its loop; [`spawn`], [`JoinHandle`],
//!   [`yield_now`].
//! * [`net`]: TCP with owned buffers; [`fs`]: O_DIRECT-capable files; [`time`]: sleep, timeout,
//!   interval; [`signal`]: SIGINT/SIGTERM/SIGHUP as futures.
//! * [`durable`]: the one door for durable file operations (blocking writes, syncs, renames,
//!   creations, and reports of io_uring writes and syncs), recorded for simulated power loss
//!   with the `power-loss` feature.
//! * [`race`] / [`Either`]: wait for whichever of two futures finishes first, dropping the other.
//! * [`spsc`]: a bounded lock-free single-producer single-consumer ring.
//! * [`mailbox`]: an SPSC ring plus a wake-up of the consumer that is skipped while it is awake.
//! * [`thread`]: named threads pinned to a CPU, each running its own runtime.
//!
//! See `docs/runtime.md` for the loop, an operation's life cycle and cancellation.

pub mod buf;
mod driver;
pub mod durable;
mod executor;
pub mod fs;
pub mod mailbox;
pub mod net;
mod op;
mod remote;
pub mod select;
pub mod signal;
pub mod spsc;
pub mod thread;
pub mod time;

pub use buf::{AlignedBuf, IoBuf, IoBufMut, Slice};
pub use driver::RingMode;
pub use executor::{spawn, stats, yield_now, Builder, JoinHandle, Runtime, Stats};
pub use select::{race, Either};
