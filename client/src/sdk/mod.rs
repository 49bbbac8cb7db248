//! The SDK: streams written with chasing-write replication and read across ranges, from any
//! thread and under any executor.
//!
//! How data flows: the application calls [`Client`], [`Writer`] and [`Reader`] from its own
//! threads; each call hands a job to the SDK's I/O thread ([`io`]), which runs the project's
//! runtime and owns every connection ([`crate::multiplexed::Connection`]). Results come back
//! through a [`completion`] slot that wakes the caller's `Waker`, so every public future is
//! `Send` and works under any executor.
//!
//! * [`config`]: [`ClientConfig`], [`StreamOptions`], [`SealStep`].
//! * [`error`]: [`SdkError`], what reaches the application once the SDK's retries are spent.
//! * [`client`]: [`Client`], the stream operations at the placement manager.
//! * [`writer`]: [`Writer`]: the pipeline of appends (pure bookkeeping in `writer::pipeline`),
//!   the writer's driver on the I/O thread, and seal-with-repair (`writer::seal`, the choice of
//!   the end in `writer::end`).
//! * [`reader`]: [`Reader`], reading each range from a replica that holds the offset.
//!
//! The replication protocol the writer keeps is written down in `docs/replication.md`.

pub mod client;
pub(crate) mod completion;
pub mod config;
pub mod error;
pub mod io;
pub mod reader;
pub mod writer;

pub use client::Client;
pub use config::{ClientConfig, SealHook, SealStep, StreamOptions};
pub use error::SdkError;
pub use reader::{ReadBatch, ReadMode, Reader};
pub use writer::{AppendAck, AppendFuture, Writer};
