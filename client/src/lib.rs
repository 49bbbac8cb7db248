//! The Rust SDK and the `es` command-line tool.
