//! The placement manager: streams, ranges, nodes and where new ranges go.
//!
//! Module map: [`config`] (the YAML configuration), [`state`] (the commands of its log, the pure
//! function that applies them, snapshots and placement), [`command_log`] (the durable command log).

pub mod command_log;
pub mod config;
pub mod state;
