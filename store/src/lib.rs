//! The write-ahead log that keeps every batch a data node acknowledges.
