//! Shared helpers for the microbenchmarks and the `es-bench` load generator: latency
//! summaries, the hiccup probe, the server-side metrics view, process CPU and memory, and the
//! raw disk baseline.

pub mod hiccup;
pub mod metrics;
pub mod procstat;
pub mod raw_disk;
pub mod report;
pub mod workload;
