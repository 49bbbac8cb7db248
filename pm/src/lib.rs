//! The placement manager: streams, ranges, nodes and where new ranges go.
//!
//! Module map: [`config`] (the YAML configuration).

pub mod config;
