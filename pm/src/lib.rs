//! The placement manager: streams, ranges, nodes and where new ranges go.
//!
//! Not written yet; ranges are created on data nodes directly until it exists.
