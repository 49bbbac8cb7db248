//! The Rust SDK and the `es` command-line tool.
//!
//! * [`conn`]: frames over TCP. [`conn::blocking::Connection`] sends one request at a time
//!   over `std::net`; [`multiplexed::Connection`] keeps many requests in flight on the
//!   runtime.
//! * [`command`]: the grammar of shell lines and what each command means.
//! * [`session`]: runs a command against a server and decodes the answer.
//! * [`output`]: renders answers as text or JSON.
//! * [`shell`]: the interactive shell and its script mode.
//! * [`pm`]: placement manager addresses tried in order (`es --pm`).
//! * [`records`]: tables and bare JSON of streams, ranges and nodes (`es stream`, `es cluster`).
//! * [`sdk`]: the SDK proper: [`Client`], [`Writer`] and [`Reader`] of replicated streams, usable
//!   from any thread and any executor.

pub mod command;
pub mod conn;
pub mod multiplexed;
pub mod output;
pub mod pm;
pub mod records;
pub mod sdk;
pub mod session;
pub mod shell;

pub use conn::blocking;
pub use conn::ClientError;
pub use multiplexed::Connection;
pub use sdk::io::block_on;
pub use sdk::{
    AppendAck, AppendFuture, Client, ClientConfig, ReadBatch, ReadMode, Reader, SdkError, SealHook,
    SealStep, StreamOptions, Writer,
};
