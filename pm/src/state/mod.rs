//! The placement manager's state: streams, ranges, nodes, id counters and a revision, changed
//! only by applying [`Command`]s in log order with [`PmState::apply`]. Pure: no I/O, no clock,
//! no randomness; the daemon puts the time and the chosen nodes into the command, logs its
//! encoding, then applies it, so a replay (or a raft follower) reaches the same state.
//!
//! The ranges of one stream, by index:
//!
//! ```text
//!   kept:     [k].start ... [k].end = [k+1].start ... [n].start ... [n].end or open
//!   trimmed:  indices below k, dropped once they ended at or below start_offset
//!   next_range_index = n + 1
//!   next_range_start = [n].start while [n] is open, [n].end once sealed (0 before any range)
//! ```
//!
//! * Only the last range may be open; a new range needs the last one sealed, takes the next
//!   index and starts where the previous one ended: offsets stay dense across ranges.
//! * Epochs fence writers. UpdateStream raises a stream's epoch strictly (never to the same
//!   value: two writers never share one); CreateRange and SealRange carry exactly the current
//!   epoch (`StaleEpoch` below it, `FutureEpoch` above it). A range records the epoch it was
//!   created with, then the one it was sealed with; epochs never go back.
//! * A range's recorded end never changes (ARCHITECTURE.md §8: it is the commit point of a seal).
//!   R and A are fixed per range at creation; UpdateStream changes them for later ranges.
//! * A command on a stream is checked in this order: the stream exists, is not deleted, the
//!   epoch is current, then the range's own rules; so a fenced writer hears `StaleEpoch`
//!   before anything else, even on a retry of a seal that had succeeded.
//! * CreateRange needs registered nodes, not READ_WRITE ones: the log records where replicas
//!   were created; whether a node should take new ranges is placement's question.
//! * TrimStream, DeleteStream and PurgeStream are administrative and carry no epoch. A trim may
//!   not move the start past a known end (last range sealed: `TrimPastEnd`); with a range open
//!   any offset goes, and should that range be sealed at or below the start, the next trim
//!   (a repeat of the same one will do) drops it. Deleted streams keep their ranges until
//!   PurgeStream, so the daemon can retry telling the data nodes.
//! * `revision` counts the commands that changed the state. A command that succeeds without
//!   changing anything (a repeated CreateRange or SealRange, a trim below the start, a second
//!   delete) returns its outcome and leaves the revision alone; a rejected command changes
//!   nothing at all. Replaying the same log therefore gives the same revision.
//!
//! Placement (which nodes a new range goes on) is the pure function in [`placement`]; the
//! daemon runs it with the liveness it learns from heartbeats, which is not logged. The daemon's
//! loop: build a [`Command`] (time and nodes filled in), log `command.encode()`, then
//! `state.apply(&command)`; on restart, `PmState::decode_snapshot` then apply each logged
//! record's `Command::decode` in order. `PmState::retention_trim_point` picks the offsets of
//! retention trims.

mod apply;
mod codec;
mod command;
pub mod placement;
mod rejection;
mod snapshot;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use ids::{Epoch, NodeId, Offset, RangeIndex, RangeKey, StreamId};

pub use codec::DecodeError;
pub use command::{Command, DroppedRange, Outcome, COMMAND_FORMAT_VERSION};
pub use rejection::Rejection;
pub use snapshot::SNAPSHOT_FORMAT_VERSION;

/// The most replicas a range may have (the protocol's bound).
pub const MAX_REPLICA_COUNT: u8 = wire::types::MAX_REPLICAS as u8;
/// The longest address a node may register (the protocol's bound).
pub const MAX_ADDRESS_BYTES: usize = wire::types::MAX_ADDRESS_BYTES;

/// The registered (administrative) state of a data node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    /// Takes new ranges and serves existing ones.
    ReadWrite,
    /// Serves existing ranges; placement skips it.
    ReadOnly,
    /// Shut down cleanly or taken out by an operator; placement skips it.
    Offline,
}

impl NodeState {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            NodeState::ReadWrite => 0,
            NodeState::ReadOnly => 1,
            NodeState::Offline => 2,
        }
    }
    pub(crate) fn from_byte(byte: u8) -> Result<NodeState, DecodeError> {
        match byte {
            0 => Ok(NodeState::ReadWrite),
            1 => Ok(NodeState::ReadOnly),
            2 => Ok(NodeState::Offline),
            other => Err(DecodeError::InvalidValue {
                field: "node state",
                value: u64::from(other),
            }),
        }
    }
}

/// A registered data node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    /// `host:port` the node serves clients on.
    pub address: String,
    pub state: NodeState,
    pub registered_at_ms: u64,
}

/// A stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub id: StreamId,
    /// R for ranges created from now on, 1..=16.
    pub replica_count: u8,
    /// A for ranges created from now on, 1 ≤ A ≤ R.
    pub ack_count: u8,
    /// 0 keeps data forever.
    pub retention_ms: u64,
    /// 0 keeps any amount.
    pub retention_bytes: u64,
    /// The trim point: offsets below it are gone.
    pub start_offset: Offset,
    /// The current writer epoch; starts at 0.
    pub epoch: Epoch,
    pub deleted: bool,
    pub created_at_ms: u64,
    /// The index the next CreateRange must carry.
    pub next_range_index: RangeIndex,
    /// Where the next range must start once the last one is sealed (while it is open: its start).
    pub next_range_start: Offset,
}

/// A range of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRecord {
    pub key: RangeKey,
    /// The stream epoch the range was created with; once sealed, the one it was sealed with.
    pub epoch: Epoch,
    pub start: Offset,
    /// `None` while open.
    pub end: Option<Offset>,
    /// The nodes holding a replica, in placement order.
    pub nodes: Vec<NodeId>,
    /// R at creation; fixed for the range's life.
    pub replica_count: u8,
    /// A at creation; fixed for the range's life.
    pub ack_count: u8,
    /// Created on fewer than R nodes.
    pub under_replicated: bool,
    pub created_at_ms: u64,
    pub sealed_at_ms: Option<u64>,
    /// Bytes the range holds, when the sealer reported it (retention by size uses it).
    pub size_bytes: Option<u64>,
}

impl RangeRecord {
    pub fn is_sealed(&self) -> bool {
        self.end.is_some()
    }
}

/// The whole replicated state of the placement manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmState {
    nodes: BTreeMap<NodeId, NodeRecord>,
    streams: BTreeMap<StreamId, StreamRecord>,
    ranges: BTreeMap<RangeKey, RangeRecord>,
    /// Ids start at 1: 0 is never allocated, so it can mean "none" on disk and on the wire.
    next_stream_id: StreamId,
    next_node_id: NodeId,
    revision: u64,
}

impl Default for PmState {
    fn default() -> PmState {
        PmState::new()
    }
}

impl PmState {
    /// The empty state every log starts from.
    pub fn new() -> PmState {
        PmState {
            nodes: BTreeMap::new(),
            streams: BTreeMap::new(),
            ranges: BTreeMap::new(),
            next_stream_id: StreamId(1),
            next_node_id: NodeId(1),
            revision: 0,
        }
    }

    /// Commands applied that changed the state.
    pub fn revision(&self) -> u64 {
        self.revision
    }
    /// The id the next CreateStream gets.
    pub fn next_stream_id(&self) -> StreamId {
        self.next_stream_id
    }
    /// The id the next RegisterNode gets.
    pub fn next_node_id(&self) -> NodeId {
        self.next_node_id
    }

    pub fn stream(&self, stream: StreamId) -> Option<&StreamRecord> {
        self.streams.get(&stream)
    }

    /// Up to `max` streams with ids from `from` on, in id order, deleted ones included (their
    /// `deleted` flag says so).
    pub fn list_streams(&self, from: StreamId, max: usize) -> Vec<&StreamRecord> {
        self.streams
            .range(from..)
            .map(|(_, stream)| stream)
            .take(max)
            .collect()
    }

    pub fn range(&self, key: RangeKey) -> Option<&RangeRecord> {
        self.ranges.get(&key)
    }

    /// The kept ranges of `stream` in index order; the last may be open.
    pub fn ranges_of(
        &self,
        stream: StreamId,
    ) -> impl DoubleEndedIterator<Item = &RangeRecord> + '_ {
        let first = RangeKey::new(stream, RangeIndex(0));
        let last = RangeKey::new(stream, RangeIndex(u32::MAX));
        self.ranges.range(first..=last).map(|(_, range)| range)
    }

    /// The open range of `stream`, if any (always its last).
    pub fn open_range(&self, stream: StreamId) -> Option<&RangeRecord> {
        self.ranges_of(stream)
            .next_back()
            .filter(|range| !range.is_sealed())
    }

    /// Nodes, streams and ranges held: what a snapshot has to encode.
    pub fn record_count(&self) -> u64 {
        (self.nodes.len() + self.streams.len() + self.ranges.len()) as u64
    }

    pub fn node(&self, node: NodeId) -> Option<&NodeRecord> {
        self.nodes.get(&node)
    }

    /// Every registered node in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> + '_ {
        self.nodes.values()
    }

    /// Where a retention sweep at `now_ms` should trim `stream` (the daemon then logs a
    /// TrimStream with it), or `None` if its retention keeps everything. Only sealed ranges
    /// expire, oldest first and whole: by time once `sealed_at_ms + retention_ms ≤ now_ms`, by
    /// size once the ranges newer than one already hold `retention_bytes` or more (a range
    /// sealed without a size counts as 0 bytes). The later of the two trim points wins.
    pub fn retention_trim_point(&self, stream: StreamId, now_ms: u64) -> Option<Offset> {
        self.retention_trim_point_with(stream, now_ms, |_| None)
    }

    /// [`PmState::retention_trim_point`] with `size_of` giving the size of a range sealed
    /// without one (what its data nodes reported).
    pub fn retention_trim_point_with(
        &self,
        stream: StreamId,
        now_ms: u64,
        size_of: impl Fn(RangeKey) -> Option<u64>,
    ) -> Option<Offset> {
        let record = self
            .streams
            .get(&stream)
            .filter(|record| !record.deleted)
            .filter(|record| record.retention_ms > 0 || record.retention_bytes > 0)?;
        let sealed: Vec<&RangeRecord> = self
            .ranges_of(stream)
            .filter(|range| range.is_sealed())
            .collect();
        let mut trim_point = record.start_offset;
        if record.retention_ms > 0 {
            let expired = sealed.iter().take_while(|range| {
                let sealed_at_ms = range.sealed_at_ms.unwrap_or(u64::MAX);
                sealed_at_ms.saturating_add(record.retention_ms) <= now_ms
            });
            if let Some(end) = expired.last().and_then(|range| range.end) {
                trim_point = trim_point.max(end);
            }
        }
        if record.retention_bytes > 0 {
            let mut newer_bytes = 0u64;
            for range in sealed.iter().rev() {
                if newer_bytes >= record.retention_bytes {
                    trim_point = trim_point.max(range.end.expect("sealed"));
                    break;
                }
                newer_bytes = newer_bytes
                    .saturating_add(range.size_bytes.or_else(|| size_of(range.key)).unwrap_or(0));
            }
        }
        (trim_point > record.start_offset).then_some(trim_point)
    }

    /// Checks every invariant of the module header; `Err` names the first one broken. Applying
    /// commands keeps them (the property tests check so after every step); a decoded snapshot
    /// is refused unless it passes.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, node) in &self.nodes {
            if *id != node.id || node.id.0 == 0 || node.id >= self.next_node_id {
                return Err(format!(
                    "node {} is filed under {id} or not below the next node id {}",
                    node.id, self.next_node_id
                ));
            }
        }
        for (id, stream) in &self.streams {
            if *id != stream.id || stream.id.0 == 0 || stream.id >= self.next_stream_id {
                return Err(format!(
                    "stream {} is filed under {id} or not below the next stream id {}",
                    stream.id, self.next_stream_id
                ));
            }
            check_counts(stream.replica_count, stream.ack_count)
                .map_err(|reason| format!("stream {id}: {reason}"))?;
            if stream.epoch > Epoch::MAX {
                return Err(format!(
                    "stream {id} has the reserved epoch {}",
                    stream.epoch
                ));
            }
            self.check_ranges_of(stream)?;
        }
        for key in self.ranges.keys() {
            if !self.streams.contains_key(&key.stream_id) {
                return Err(format!("range {key} belongs to no stream"));
            }
        }
        Ok(())
    }

    fn check_ranges_of(&self, stream: &StreamRecord) -> Result<(), String> {
        let mut previous: Option<&RangeRecord> = None;
        for range in self.ranges_of(stream.id) {
            let key = range.key;
            if let Some(previous) = previous {
                let Some(previous_end) = previous.end else {
                    return Err(format!("range {} is open but not the last", previous.key));
                };
                if previous.key.range_index.next() != Some(key.range_index) {
                    return Err(format!("range {key} does not follow {}", previous.key));
                }
                if range.start != previous_end {
                    return Err(format!(
                        "range {key} starts at {} but {} ended at {previous_end}",
                        range.start, previous.key
                    ));
                }
                if range.epoch < previous.epoch {
                    return Err(format!("range {key} has an epoch below {}'s", previous.key));
                }
            }
            if range.epoch > stream.epoch {
                return Err(format!("range {key} has an epoch above its stream's"));
            }
            if range.end.is_some_and(|end| end < range.start) {
                return Err(format!("range {key} ends before it starts"));
            }
            if range.end.is_some() != range.sealed_at_ms.is_some() {
                return Err(format!(
                    "range {key} has an end without a seal time or back"
                ));
            }
            check_counts(range.replica_count, range.ack_count)
                .map_err(|reason| format!("range {key}: {reason}"))?;
            let count = range.nodes.len();
            if count < usize::from(range.ack_count) || count > usize::from(range.replica_count) {
                return Err(format!("range {key} is on {count} nodes, outside A..=R"));
            }
            if range.under_replicated != (count < usize::from(range.replica_count)) {
                return Err(format!("range {key}'s under-replicated flag is wrong"));
            }
            let mut sorted = range.nodes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != count {
                return Err(format!("range {key} names a node twice"));
            }
            if let Some(node) = range
                .nodes
                .iter()
                .find(|node| !self.nodes.contains_key(node))
            {
                return Err(format!("range {key} is on unregistered node {node}"));
            }
            previous = Some(range);
        }
        if let Some(last) = previous {
            if last.key.range_index.next() != Some(stream.next_range_index) {
                return Err(format!(
                    "stream {}'s next range index {} does not follow its last range {}",
                    stream.id, stream.next_range_index, last.key
                ));
            }
            let expected_next_start = last.end.unwrap_or(last.start);
            if stream.next_range_start != expected_next_start {
                return Err(format!(
                    "stream {}'s next range start {} is not {expected_next_start}",
                    stream.id, stream.next_range_start
                ));
            }
        }
        Ok(())
    }
}

/// `1 ≤ ack_count ≤ replica_count ≤ 16`, or why not.
pub(crate) fn check_counts(replica_count: u8, ack_count: u8) -> Result<(), String> {
    if !(1..=MAX_REPLICA_COUNT).contains(&replica_count) {
        return Err(format!(
            "replica count must be 1..={MAX_REPLICA_COUNT}, found {replica_count}"
        ));
    }
    if !(1..=replica_count).contains(&ack_count) {
        return Err(format!(
            "ack count must be 1..={replica_count} (the replica count), found {ack_count}"
        ));
    }
    Ok(())
}

impl PmState {
    /// A copy holding every node, `stream`, its last range and its range `index` (if any), and
    /// nothing else: enough to check a CreateRange of `index` with [`PmState::apply`] (which
    /// reads only those) without copying the whole state or every range of the stream.
    pub fn scratch_for(&self, stream: StreamId, index: RangeIndex) -> PmState {
        let mut ranges = BTreeMap::new();
        if let Some(last) = self.ranges_of(stream).next_back() {
            ranges.insert(last.key, last.clone());
        }
        let key = RangeKey::new(stream, index);
        if let Some(range) = self.ranges.get(&key) {
            ranges.insert(key, range.clone());
        }
        PmState {
            nodes: self.nodes.clone(),
            streams: self
                .streams
                .get(&stream)
                .map(|record| (stream, record.clone()))
                .into_iter()
                .collect(),
            ranges,
            next_stream_id: self.next_stream_id,
            next_node_id: self.next_node_id,
            revision: self.revision,
        }
    }
}
