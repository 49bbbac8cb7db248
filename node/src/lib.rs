//! The data node: serves streams' ranges over the wire protocol, storing them in the WAL.
//!
//! * `config`: `etc/data-node.yaml`, defaults and validation.
//! * `server`: start-up, threads, signals, shutdown; `worker`: one worker's ranges and its
//!   mailboxes to the other workers; `service`: the worker as a `serve::Service`, which the
//!   `serve` crate's connections call.
//! * `dispatch`: which worker answers a request; `handler::<operation>`: what each request does,
//!   answered as a `serve::Reply`; `range`: the per-range state machine.
//! * `storage`: the worker's handle on the store; `catalog`: which ranges exist and their
//!   saved state, in one group-committed log written by a thread of its own; `ranges_file`: the
//!   64-byte range record and the old one-file-per-range layout it migrates from.
//! * `fault`: test-only fault injection (cargo feature `fault-injection`).
//! * `metrics`: counters and histograms, rendered for `serve`'s Prometheus endpoint.

pub mod catalog;
pub mod config;
pub mod dispatch;
pub mod fault;
pub mod handler;
pub mod membership;
pub mod metrics;
pub mod range;
pub mod ranges_file;
pub mod send_line;
pub mod server;
pub mod service;
pub mod storage;
pub mod worker;
