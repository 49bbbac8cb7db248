//! A thread-per-core io_uring runtime: one ring per thread, `!Send` tasks, no work stealing.
//!
//! Nothing here yet; see docs/ and the issue tracker for what this crate will hold.
