//! Why the state machine refused a command. A rejected command changes nothing; each reason is a
//! variant of its own so the daemon can map it to one protocol error code.

use std::fmt;

use ids::{Epoch, NodeId, Offset, RangeIndex, RangeKey, StreamId};

/// Why [`crate::state::PmState::apply`] refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No stream has this id (never created, or purged).
    StreamNotFound { stream: StreamId },
    /// The stream is deleted; only DeleteStream (again) and PurgeStream apply to it.
    StreamDeleted { stream: StreamId },
    /// PurgeStream of a stream that was not deleted first.
    StreamNotDeleted { stream: StreamId },
    /// The command's epoch is below the stream's (CreateRange, SealRange), or an UpdateStream
    /// raise is not strictly above it: the sender was fenced by a newer writer.
    StaleEpoch { current: Epoch },
    /// The command's epoch is above the stream's: no UpdateStream ever granted it, so the sender
    /// skipped opening the stream (or its raise was rejected). Distinct from `StaleEpoch`
    /// because the cure differs: raise the epoch first, rather than stop writing.
    FutureEpoch { current: Epoch },
    /// A field is outside its domain; the message says which, what was expected and found.
    InvalidArgument(String),
    /// CreateRange of an index other than the stream's next one (`expected`: the previous
    /// range's index + 1, 0 for the first; kept when every range was trimmed away).
    RangeIndexNotNext {
        stream: StreamId,
        expected: RangeIndex,
        found: RangeIndex,
    },
    /// No such range (never created, trimmed, or purged).
    RangeNotFound { range: RangeKey },
    /// CreateRange of a range that exists with other parameters (epoch, start or nodes).
    RangeAlreadyExists { range: RangeKey },
    /// SealRange with an end other than the one recorded; a recorded end never changes.
    RangeSealed { end: Offset },
    /// CreateRange while the stream's last range is still open; seal it first.
    PreviousRangeOpen { open: RangeKey },
    /// Fewer nodes than the stream's ack count A.
    NotEnoughNodes { live: usize, needed: u8 },
    /// A node id that was never registered.
    NodeNotFound { node: NodeId },
    /// TrimStream past the end of a stream whose last range is sealed (or that has none).
    TrimPastEnd { end: Offset },
}

impl fmt::Display for Rejection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::StreamNotFound { stream } => {
                write!(
                    formatter,
                    "stream {stream} does not exist (never created, or purged)"
                )
            }
            Rejection::StreamDeleted { stream } => write!(
                formatter,
                "stream {stream} is deleted; only delete and purge apply to it"
            ),
            Rejection::StreamNotDeleted { stream } => write!(
                formatter,
                "stream {stream} is not deleted; delete it before purging it"
            ),
            Rejection::StaleEpoch { current } => write!(
                formatter,
                "epoch is stale: the stream is at epoch {current}; a newer writer fenced this one"
            ),
            Rejection::FutureEpoch { current } => write!(
                formatter,
                "epoch is ahead of the stream's epoch {current}: raise it with UpdateStream first"
            ),
            Rejection::InvalidArgument(reason) => write!(formatter, "invalid argument: {reason}"),
            Rejection::RangeIndexNotNext {
                stream,
                expected,
                found,
            } => write!(
                formatter,
                "invalid argument: stream {stream}'s next range has index {expected}, found {found}"
            ),
            Rejection::RangeNotFound { range } => write!(formatter, "range {range} does not exist"),
            Rejection::RangeAlreadyExists { range } => write!(
                formatter,
                "range {range} already exists with another epoch, start or node list"
            ),
            Rejection::RangeSealed { end } => write!(
                formatter,
                "range is already sealed at end {end}; a recorded end never changes"
            ),
            Rejection::PreviousRangeOpen { open } => write!(
                formatter,
                "range {open} is still open; seal it before creating the next one"
            ),
            Rejection::NotEnoughNodes { live, needed } => write!(
                formatter,
                "{live} nodes given, at least {needed} (the ack count) needed"
            ),
            Rejection::NodeNotFound { node } => {
                write!(formatter, "node {node} is not registered")
            }
            Rejection::TrimPastEnd { end } => write!(
                formatter,
                "trim offset is past the stream's end {end}; trim at or below it"
            ),
        }
    }
}

impl std::error::Error for Rejection {}
