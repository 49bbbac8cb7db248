//! Shared helpers for the microbenchmarks and the `es-bench` load generator: latency
//! summaries, the hiccup probe, the server-side metrics view, process CPU and memory, and the
//! raw disk baseline; the placement manager's workload.

pub mod hiccup;
pub mod metrics;
pub mod pm_workload;
pub mod procstat;
pub mod raw_disk;
pub mod report;
pub mod workload;
