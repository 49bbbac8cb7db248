//! Seal with repair (stub).
