//! What can go wrong, as the application sees it: every retriable failure has already been
//! retried within [`crate::sdk::ClientConfig::retry_for`], so an error that arrives is final.
//! Each message says what happened and what to do.

use std::fmt;
use std::time::Duration;

use wire::msg::ErrorResponse;
use wire::{Epoch, ErrorCode, Offset, StreamId};

/// An SDK operation's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkError {
    /// A newer writer opened the stream (its epoch is `epoch`): this writer can append no more.
    ///
    /// An append that failed with this error may still be in the stream: the newer writer's
    /// recovery ends the range at what enough replicas hold, which can include batches this
    /// writer sent but never acknowledged. Delivery of failed appends is at-least-once: an
    /// application that retries them elsewhere should be ready to find them twice.
    Fenced { epoch: Epoch },
    /// The stream was deleted.
    StreamDeleted { stream: StreamId },
    /// No stream has this id.
    StreamNotFound { stream: StreamId },
    /// The placement manager could not place a range on enough live data nodes for as long as
    /// the SDK retried.
    NoAvailableNodes {
        stream: StreamId,
        live: u64,
        waited: Duration,
    },
    /// No placement manager answered for as long as the SDK retried.
    PmUnreachable {
        addresses: Vec<String>,
        reason: String,
        waited: Duration,
    },
    /// Data nodes holding what was needed could not be reached for as long as the SDK retried.
    ///
    /// As with [`SdkError::Fenced`], an append that failed with this error may still appear
    /// in the stream (the next writer's recovery may keep batches that were sent but not
    /// acknowledged): delivery of failed appends is at-least-once.
    Unavailable { what: String, waited: Duration },
    /// An operation did not finish in time.
    Timeout { operation: String, waited: Duration },
    /// The offset asked for was trimmed: the stream now starts at `start`.
    Trimmed { start: Offset },
    /// The writer, reader or client is closed (or the SDK's I/O thread stopped).
    Closed,
    /// The application asked for something that cannot be done.
    InvalidArgument(String),
    /// A server refused the connection's token.
    Unauthenticated(String),
    /// A server answered with an error the SDK does not handle itself.
    Server {
        operation: String,
        code: ErrorCode,
        detail: u64,
        message: String,
    },
    /// A server answered something the protocol does not allow (a bug somewhere).
    Protocol(String),
}

impl SdkError {
    /// The error a server's answer to `operation` becomes when the SDK does not handle it.
    pub(crate) fn server(operation: &str, error: &ErrorResponse) -> SdkError {
        SdkError::Server {
            operation: operation.to_string(),
            code: error.code,
            detail: error.detail,
            message: error.message.clone(),
        }
    }

    /// The answer of the placement manager about `stream`, as the typed error it means.
    pub(crate) fn from_stream_answer(
        operation: &str,
        stream: StreamId,
        error: &ErrorResponse,
    ) -> SdkError {
        match error.code {
            ErrorCode::StreamNotFound => SdkError::StreamNotFound { stream },
            ErrorCode::StreamDeleted => SdkError::StreamDeleted { stream },
            ErrorCode::StaleEpoch => SdkError::Fenced {
                epoch: Epoch(error.detail),
            },
            ErrorCode::InvalidArgument => {
                SdkError::InvalidArgument(format!("{operation}: {}", error.message))
            }
            ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => {
                SdkError::Unauthenticated(format!("{operation}: {}", error.message))
            }
            _ => SdkError::server(operation, error),
        }
    }
}

impl fmt::Display for SdkError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdkError::Fenced { epoch } => write!(
                formatter,
                "fenced: a newer writer opened the stream (epoch {epoch}); this writer can \
                 append no more, so stop writing here or open a new writer"
            ),
            SdkError::StreamDeleted { stream } => {
                write!(formatter, "stream {stream} is deleted; create a new stream")
            }
            SdkError::StreamNotFound { stream } => write!(
                formatter,
                "stream {stream} does not exist; check the id (`es stream list`)"
            ),
            SdkError::NoAvailableNodes {
                stream,
                live,
                waited,
            } => write!(
                formatter,
                "no range of stream {stream} could be placed: {live} live data node(s), fewer \
                 than the stream's ack count, for {} ms; start more data nodes \
                 (`es cluster` shows them)",
                waited.as_millis()
            ),
            SdkError::PmUnreachable {
                addresses,
                reason,
                waited,
            } => write!(
                formatter,
                "no placement manager answered at {} for {} ms ({reason}); start one or fix \
                 the addresses",
                addresses.join(", "),
                waited.as_millis()
            ),
            SdkError::Unavailable { what, waited } => write!(
                formatter,
                "{what}: no data node holding it answered for {} ms; check the data nodes \
                 (`es cluster`)",
                waited.as_millis()
            ),
            SdkError::Timeout { operation, waited } => write!(
                formatter,
                "{operation} did not finish within {} ms; retry later",
                waited.as_millis()
            ),
            SdkError::Trimmed { start } => write!(
                formatter,
                "the offset was trimmed: the stream now starts at {start}; read from there"
            ),
            SdkError::Closed => write!(
                formatter,
                "closed: the writer, reader or client is closed; open a new one"
            ),
            SdkError::InvalidArgument(message) => write!(formatter, "invalid argument: {message}"),
            SdkError::Unauthenticated(message) => write!(
                formatter,
                "authentication failed: {message}; configure the cluster's token"
            ),
            SdkError::Server {
                operation,
                code,
                detail,
                message,
            } => write!(
                formatter,
                "{operation}: the server answered {code} (detail {detail}): {message}"
            ),
            SdkError::Protocol(message) => write!(
                formatter,
                "protocol violation: {message}; this is a bug, please report it"
            ),
        }
    }
}

impl std::error::Error for SdkError {}
