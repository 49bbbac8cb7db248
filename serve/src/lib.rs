//! Serving the binary protocol: what the data node and the placement manager share.
//!
//! * `connection`: one client connection — frames decoded, requests run concurrently, answers
//!   sent as they finish — for any [`Service`].
//! * `service`: what a daemon plugs into a connection: its [`Limits`], its shutdown signal, its
//!   [`ConnectionCounters`] and how it answers one request with a [`Reply`].
//! * `auth`: the tokens a daemon holds, compared in constant time, and the role check every
//!   request passes before it reaches the daemon.
//! * `config`: reading a daemon's YAML configuration and the error that names the key at fault.
//! * `reply`: a response header and its payload, ready to encode.
//! * `budget`: the byte budgets of a connection and of the process, and when a reader waits.
//! * `catch_panic`: a request's future polled so that its panic closes only its connection.
//! * `local`: single-thread synchronisation (one-shot slot, notification) for the tasks of one
//!   runtime.
//! * `http`: the Prometheus metrics endpoint, rendering whatever page the daemon hands it.
//!
//! Dependencies point one way: a daemon calls [`connection::serve`], the connection calls the
//! daemon's [`Service::call`]; nothing here knows ranges, streams or the store.

pub mod auth;
pub mod budget;
pub mod catch_panic;
pub mod config;
pub mod connection;
pub mod http;
pub mod local;
pub mod reply;
pub mod service;

pub use auth::Tokens;
pub use budget::NodeBudget;
pub use reply::Reply;
pub use service::{ConnectionCounters, Limits, Service};
