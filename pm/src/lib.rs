//! The placement manager: streams, ranges, nodes and where new ranges go.
//!
//! Module map:
//! * [`config`]: the YAML configuration (`etc/pm.yaml`).
//! * [`state`]: the commands of its log, the pure function that applies them, snapshots and
//!   placement. No I/O: time comes in with the commands.
//! * [`command_log`]: the durable command log (group commit, snapshots, recovery).
//! * [`service`]: requests in, commands through the state and the log, answers out;
//!   `requests` maps each request to what answers it, `create_range` places new ranges.
//! * [`data_nodes`]: creating, trimming, deleting and listing replicas on data nodes.
//! * [`maintenance`]: reconciliation with the data nodes, retention, purge, snapshots.
//! * [`server`]: start (recover, bind, serve on a thread of its own) and stop; used by the `pm`
//!   binary and by a data node that embeds a placement manager.
//! * [`metrics`]: the Prometheus page.
//!
//! See `docs/pm.md` for the state, the rules, the log format and how to run a cluster.

pub mod command_log;
pub mod config;
mod create_range;
pub mod data_nodes;
pub mod maintenance;
pub mod metrics;
mod requests;
pub mod server;
pub mod service;
pub mod state;
