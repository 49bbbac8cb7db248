//! Faults the node's own integration tests inject, compiled in only with the cargo feature
//! `fault-injection` (the node's tests enable it through a dev-dependency on the node itself,
//! as `store` does). A production build has neither the switch nor the code that acts on it:
//! [`armed`] is then a constant `false`.
//!
//! A test points the environment variable `ES_NODE_FAULT_DIR` at a directory and arms a fault
//! by creating a file named after it there (and disarms it by removing the file), so a running
//! node can be broken at an exact step.

/// Every catalog save fails (before anything is written) while armed.
pub const CATALOG_SAVE_FAILS: &str = "catalog-save-fails";
/// The process aborts right after an APPEND's batch is durable in the WAL, before anything
/// else happens for that request (the reply, any save of the range).
pub const ABORT_AFTER_APPEND_DURABLE: &str = "abort-after-append-durable";
/// The catalog thread sleeps 20 ms before each group write, so concurrent saves queue up and
/// share one (group commit made visible on any disk).
pub const SLOW_CATALOG_SYNC: &str = "slow-catalog-sync";

/// Whether the fault `name` is armed.
#[cfg(feature = "fault-injection")]
pub fn armed(name: &str) -> bool {
    std::env::var_os("ES_NODE_FAULT_DIR")
        .is_some_and(|directory| std::path::Path::new(&directory).join(name).exists())
}

/// Whether the fault `name` is armed: never, without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn armed(_name: &str) -> bool {
    false
}
