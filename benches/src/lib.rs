//! Shared helpers for the microbenchmarks and the `es-bench` load generator: latency
//! summaries, the hiccup probe, the server-side metrics view, process CPU and memory, and the
//! raw disk baseline; the placement manager's workload; appends through the SDK and the
//! replication comparison.

pub mod hiccup;
pub mod metrics;
pub mod pm_workload;
pub mod procstat;
pub mod raw_disk;
pub mod replication;
pub mod report;
pub mod sdk_workload;
pub mod workload;
