//! A thread-per-core io_uring runtime: one ring per thread, `!Send` tasks, no work stealing.
//!
//! * [`spsc`]: a bounded lock-free single-producer single-consumer ring.
//! * [`mailbox`]: an SPSC ring plus a wake-up of the consumer that is skipped while it is awake.

pub mod mailbox;
pub mod spsc;
