//! The binary protocol spoken between clients, data nodes and the placement manager.
