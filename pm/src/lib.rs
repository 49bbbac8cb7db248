//! The placement manager: streams, ranges, nodes and where new ranges go.
//!
//! Holds the PM's state machine now ([`state`]: the commands of its log, the pure function that
//! applies them, snapshots and placement). The durable log and the daemon that serves requests
//! follow; until then ranges are created on data nodes directly.

pub mod state;
