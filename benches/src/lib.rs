//! Shared helpers for the microbenchmarks and the `es-bench` load generator.
