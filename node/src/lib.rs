//! The data node: serves streams' ranges over the wire protocol, storing them in the WAL.
//!
//! `config` loads `etc/data-node.yaml`; `range` is the per-range state machine; `ranges_file`
//! persists which ranges exist; `metrics` counts and renders Prometheus text.

pub mod config;
pub mod metrics;
pub mod range;
pub mod ranges_file;
pub mod server;
