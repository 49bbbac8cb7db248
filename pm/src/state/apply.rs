//! [`PmState::apply`]: one function per command. Each checks every rule before it changes
//! anything, so a rejection leaves the state as it was, and bumps the revision only when it did
//! change something.

use ids::{Epoch, NodeId, Offset, RangeIndex, RangeKey, StreamId};

use crate::state::command::{Command, DroppedRange, Outcome};
use crate::state::rejection::Rejection;
use crate::state::{
    check_counts, NodeRecord, NodeState, PmState, RangeRecord, StreamRecord, MAX_ADDRESS_BYTES,
    MAX_REPLICA_COUNT,
};

impl PmState {
    /// Applies one command: `Ok` with what it produced, or `Err` with why it was refused, in
    /// which case nothing changed. Deterministic: the same commands in the same order give the
    /// same states and answers.
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, Rejection> {
        match command {
            Command::RegisterNode { address, now_ms } => self.register_node(address, *now_ms),
            Command::SetNodeState { node, state } => self.set_node_state(*node, *state),
            Command::CreateStream {
                replica_count,
                ack_count,
                retention_ms,
                retention_bytes,
                now_ms,
            } => self.create_stream(
                *replica_count,
                *ack_count,
                *retention_ms,
                *retention_bytes,
                *now_ms,
            ),
            Command::UpdateStream {
                stream,
                replica_count,
                ack_count,
                retention_ms,
                retention_bytes,
                epoch,
            } => self.update_stream(
                *stream,
                StreamChanges {
                    replica_count: *replica_count,
                    ack_count: *ack_count,
                    retention_ms: *retention_ms,
                    retention_bytes: *retention_bytes,
                    epoch: *epoch,
                },
            ),
            Command::TrimStream { stream, offset } => self.trim_stream(*stream, *offset),
            Command::DeleteStream { stream } => self.delete_stream(*stream),
            Command::PurgeStream { stream } => self.purge_stream(*stream),
            Command::CreateRange {
                stream,
                index,
                epoch,
                start,
                nodes,
                now_ms,
            } => self.create_range(*stream, *index, *epoch, *start, nodes, *now_ms),
            Command::SealRange {
                stream,
                index,
                epoch,
                end,
                size_bytes,
                now_ms,
            } => self.seal_range(*stream, *index, *epoch, *end, *size_bytes, *now_ms),
        }
    }

    fn changed(&mut self) {
        self.revision += 1;
    }

    fn register_node(&mut self, address: &str, now_ms: u64) -> Result<Outcome, Rejection> {
        if address.is_empty() || address.len() > MAX_ADDRESS_BYTES {
            return Err(Rejection::InvalidArgument(format!(
                "a node address must be 1..={MAX_ADDRESS_BYTES} bytes, found {}",
                address.len()
            )));
        }
        let id = self.next_node_id;
        let Some(next) = id.0.checked_add(1) else {
            return Err(Rejection::InvalidArgument(
                "every node id has been allocated".to_string(),
            ));
        };
        let node = NodeRecord {
            id,
            address: address.to_string(),
            state: NodeState::ReadWrite,
            registered_at_ms: now_ms,
        };
        self.next_node_id = NodeId(next);
        self.nodes.insert(id, node.clone());
        self.changed();
        Ok(Outcome::NodeRegistered(node))
    }

    fn set_node_state(&mut self, id: NodeId, state: NodeState) -> Result<Outcome, Rejection> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(Rejection::NodeNotFound { node: id })?;
        if node.state == state {
            return Ok(Outcome::NodeStateSet(node.clone()));
        }
        node.state = state;
        let node = node.clone();
        self.changed();
        Ok(Outcome::NodeStateSet(node))
    }

    fn create_stream(
        &mut self,
        replica_count: u8,
        ack_count: u8,
        retention_ms: u64,
        retention_bytes: u64,
        now_ms: u64,
    ) -> Result<Outcome, Rejection> {
        check_counts(replica_count, ack_count).map_err(Rejection::InvalidArgument)?;
        let id = self.next_stream_id;
        let Some(next) = id.0.checked_add(1) else {
            return Err(Rejection::InvalidArgument(
                "every stream id has been allocated".to_string(),
            ));
        };
        let stream = StreamRecord {
            id,
            replica_count,
            ack_count,
            retention_ms,
            retention_bytes,
            start_offset: Offset(0),
            epoch: Epoch(0),
            deleted: false,
            created_at_ms: now_ms,
            next_range_index: RangeIndex(0),
            next_range_start: Offset(0),
        };
        self.next_stream_id = StreamId(next);
        self.streams.insert(id, stream.clone());
        self.changed();
        Ok(Outcome::StreamCreated(stream))
    }

    /// The stream, unless it is missing or deleted.
    fn live_stream(&self, id: StreamId) -> Result<&StreamRecord, Rejection> {
        let stream = self
            .streams
            .get(&id)
            .ok_or(Rejection::StreamNotFound { stream: id })?;
        if stream.deleted {
            return Err(Rejection::StreamDeleted { stream: id });
        }
        Ok(stream)
    }

    fn update_stream(
        &mut self,
        id: StreamId,
        changes: StreamChanges,
    ) -> Result<Outcome, Rejection> {
        let current = self.live_stream(id)?;
        let mut updated = current.clone();
        updated.replica_count = changes.replica_count.unwrap_or(current.replica_count);
        updated.ack_count = changes.ack_count.unwrap_or(current.ack_count);
        updated.retention_ms = changes.retention_ms.unwrap_or(current.retention_ms);
        updated.retention_bytes = changes.retention_bytes.unwrap_or(current.retention_bytes);
        check_counts(updated.replica_count, updated.ack_count)
            .map_err(Rejection::InvalidArgument)?;
        if let Some(epoch) = changes.epoch {
            if epoch > Epoch::MAX {
                return Err(Rejection::InvalidArgument(format!(
                    "epoch must be at most {}, found {epoch} (reserved for \"absent\")",
                    Epoch::MAX
                )));
            }
            // Strictly greater: two writers can never hold the same epoch.
            if epoch <= current.epoch {
                return Err(Rejection::StaleEpoch {
                    current: current.epoch,
                });
            }
            updated.epoch = epoch;
        }
        if updated == *current {
            return Ok(Outcome::StreamUpdated(updated));
        }
        self.streams.insert(id, updated.clone());
        self.changed();
        Ok(Outcome::StreamUpdated(updated))
    }

    fn trim_stream(&mut self, id: StreamId, offset: Offset) -> Result<Outcome, Rejection> {
        let stream = self.live_stream(id)?;
        // With the last range sealed the stream's end is known and a trim may not move the
        // start past it. With a range open the PM cannot know how far it is written, so any
        // offset goes; if that range is then sealed below the start, the next trim (even a
        // repeat of this one) drops it.
        let moves_start = offset > stream.start_offset;
        if moves_start && self.open_range(id).is_none() && offset > stream.next_range_start {
            return Err(Rejection::TrimPastEnd {
                end: stream.next_range_start,
            });
        }
        let start_offset = stream.start_offset.max(offset);
        let dropped: Vec<RangeKey> = self
            .ranges_of(id)
            .take_while(|range| range.end.is_some_and(|end| end <= start_offset))
            .map(|range| range.key)
            .collect();
        let moved = start_offset != stream.start_offset;
        let dropped: Vec<DroppedRange> = dropped
            .into_iter()
            .map(|key| {
                let range = self.ranges.remove(&key).expect("listed just above");
                DroppedRange::of(&range)
            })
            .collect();
        let stream = self.streams.get_mut(&id).expect("checked live above");
        stream.start_offset = start_offset;
        let stream = stream.clone();
        if moved || !dropped.is_empty() {
            self.changed();
        }
        Ok(Outcome::StreamTrimmed { stream, dropped })
    }

    fn delete_stream(&mut self, id: StreamId) -> Result<Outcome, Rejection> {
        let stream = self
            .streams
            .get_mut(&id)
            .ok_or(Rejection::StreamNotFound { stream: id })?;
        // A repeated delete answers the same ranges again, so a daemon that crashed before
        // telling the data nodes can retry.
        let changed = !stream.deleted;
        stream.deleted = true;
        let stream = stream.clone();
        let ranges = self.ranges_of(id).map(DroppedRange::of).collect();
        if changed {
            self.changed();
        }
        Ok(Outcome::StreamDeleted { stream, ranges })
    }

    fn purge_stream(&mut self, id: StreamId) -> Result<Outcome, Rejection> {
        let stream = self
            .streams
            .get(&id)
            .ok_or(Rejection::StreamNotFound { stream: id })?;
        if !stream.deleted {
            return Err(Rejection::StreamNotDeleted { stream: id });
        }
        let keys: Vec<RangeKey> = self.ranges_of(id).map(|range| range.key).collect();
        let ranges = keys
            .into_iter()
            .map(|key| DroppedRange::of(&self.ranges.remove(&key).expect("listed just above")))
            .collect();
        self.streams.remove(&id);
        self.changed();
        Ok(Outcome::StreamPurged { stream: id, ranges })
    }

    /// `StaleEpoch` below the stream's epoch, `FutureEpoch` above it.
    fn check_current_epoch(stream: &StreamRecord, epoch: Epoch) -> Result<(), Rejection> {
        if epoch < stream.epoch {
            return Err(Rejection::StaleEpoch {
                current: stream.epoch,
            });
        }
        if epoch > stream.epoch {
            return Err(Rejection::FutureEpoch {
                current: stream.epoch,
            });
        }
        Ok(())
    }

    fn create_range(
        &mut self,
        stream_id: StreamId,
        index: RangeIndex,
        epoch: Epoch,
        start: Offset,
        nodes: &[NodeId],
        now_ms: u64,
    ) -> Result<Outcome, Rejection> {
        let stream = self.live_stream(stream_id)?;
        Self::check_current_epoch(stream, epoch)?;
        let key = RangeKey::new(stream_id, index);
        if let Some(existing) = self.ranges.get(&key) {
            // A retry of the command that created it: same answer, no change.
            if existing.epoch == epoch && existing.start == start && existing.nodes == nodes {
                return Ok(Outcome::RangeCreated(existing.clone()));
            }
            return Err(Rejection::RangeAlreadyExists { range: key });
        }
        if let Some(open) = self.open_range(stream_id) {
            return Err(Rejection::PreviousRangeOpen { open: open.key });
        }
        if index != stream.next_range_index {
            return Err(Rejection::RangeIndexNotNext {
                stream: stream_id,
                expected: stream.next_range_index,
                found: index,
            });
        }
        let Some(next_index) = index.next() else {
            return Err(Rejection::InvalidArgument(format!(
                "stream {stream_id} has used every range index"
            )));
        };
        if start != stream.next_range_start {
            return Err(Rejection::InvalidArgument(format!(
                "range {key} must start at {} (where the previous range ended), found {start}",
                stream.next_range_start
            )));
        }
        check_replica_nodes(stream, nodes)?;
        if let Some(&node) = nodes.iter().find(|node| !self.nodes.contains_key(node)) {
            return Err(Rejection::NodeNotFound { node });
        }
        if nodes.len() < usize::from(stream.ack_count) {
            return Err(Rejection::NotEnoughNodes {
                live: nodes.len(),
                needed: stream.ack_count,
            });
        }
        let range = RangeRecord {
            key,
            epoch,
            start,
            end: None,
            nodes: nodes.to_vec(),
            replica_count: stream.replica_count,
            ack_count: stream.ack_count,
            under_replicated: nodes.len() < usize::from(stream.replica_count),
            created_at_ms: now_ms,
            sealed_at_ms: None,
            size_bytes: None,
        };
        let stream = self
            .streams
            .get_mut(&stream_id)
            .expect("checked live above");
        stream.next_range_index = next_index;
        self.ranges.insert(key, range.clone());
        self.changed();
        Ok(Outcome::RangeCreated(range))
    }

    fn seal_range(
        &mut self,
        stream_id: StreamId,
        index: RangeIndex,
        epoch: Epoch,
        end: Offset,
        size_bytes: Option<u64>,
        now_ms: u64,
    ) -> Result<Outcome, Rejection> {
        let stream = self.live_stream(stream_id)?;
        Self::check_current_epoch(stream, epoch)?;
        let key = RangeKey::new(stream_id, index);
        let range = self
            .ranges
            .get(&key)
            .ok_or(Rejection::RangeNotFound { range: key })?;
        if let Some(recorded) = range.end {
            // The recorded end is the seal's commit point: a retry with it succeeds unchanged,
            // any other end is told the recorded one, to adopt.
            if recorded == end {
                return Ok(Outcome::RangeSealed(range.clone()));
            }
            return Err(Rejection::RangeSealed { end: recorded });
        }
        if end < range.start || end > Offset::MAX {
            return Err(Rejection::InvalidArgument(format!(
                "range {key} must end within {}..={}, found {end}",
                range.start,
                Offset::MAX
            )));
        }
        // Only the last range can be open (the module's invariant), so this seals the last.
        debug_assert_eq!(range.key.range_index.next(), Some(stream.next_range_index));
        let range = self.ranges.get_mut(&key).expect("found above");
        range.end = Some(end);
        range.epoch = epoch;
        range.sealed_at_ms = Some(now_ms);
        range.size_bytes = size_bytes;
        let range = range.clone();
        let stream = self
            .streams
            .get_mut(&stream_id)
            .expect("checked live above");
        stream.next_range_start = end;
        self.changed();
        Ok(Outcome::RangeSealed(range))
    }
}

/// The optional fields of an UpdateStream.
struct StreamChanges {
    replica_count: Option<u8>,
    ack_count: Option<u8>,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    epoch: Option<Epoch>,
}

/// A range's node list: distinct ids, at most the stream's R (itself at most 16). Whether each
/// is registered and whether there are at least A are checked after, as rejections of their own.
fn check_replica_nodes(stream: &StreamRecord, nodes: &[NodeId]) -> Result<(), Rejection> {
    debug_assert!(stream.replica_count <= MAX_REPLICA_COUNT);
    if nodes.len() > usize::from(stream.replica_count) {
        return Err(Rejection::InvalidArgument(format!(
            "stream {} takes at most {} nodes per range (its replica count), found {}",
            stream.id,
            stream.replica_count,
            nodes.len()
        )));
    }
    for (position, node) in nodes.iter().enumerate() {
        if nodes[..position].contains(node) {
            return Err(Rejection::InvalidArgument(format!(
                "node {node} is named twice; a range's nodes must be distinct"
            )));
        }
    }
    Ok(())
}
