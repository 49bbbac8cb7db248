//! The placement manager: streams, ranges, nodes and where new ranges go.
//!
//! So far only its durable command log ([`log`]) exists; ranges are created on data nodes
//! directly until the rest does.

pub mod log;
