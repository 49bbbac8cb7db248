//! The data node: serves streams' ranges over the wire protocol, storing them in the WAL.
//!
//! * `config`: `etc/data-node.yaml`, defaults and validation.
//! * `server`: start-up, threads, signals, shutdown; `worker`: one worker's ranges and its
//!   mailboxes to the other workers; `connection`: one client connection.
//! * `dispatch`: which worker answers a request; `handler::<operation>`: what each request does,
//!   answered as a `reply`; `range`: the per-range state machine.
//! * `storage`: the worker's handle on the store; `ranges_file`: which ranges exist, on disk.
//! * `metrics` and `http`: counters, histograms and the Prometheus endpoint.

pub mod config;
pub mod connection;
pub mod dispatch;
pub mod handler;
pub mod http;
pub mod local;
pub mod metrics;
pub mod range;
pub mod ranges_file;
pub mod reply;
pub mod server;
pub mod storage;
pub mod worker;
