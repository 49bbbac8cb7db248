//! The snapshot of a [`PmState`]: everything, revision and id counters included, so a member
//! can start from it and apply only the log after it.
//!
//! Layout: `b"EPMS"`, `[version: u8 = 1]`, revision `u64`, next stream id `u64`, next node id
//! `u32`, then nodes, streams and ranges, each a `u32` count and the records in key order
//! (fields as in [`crate::state::codec`]). A decoded snapshot must hold keys in strictly
//! increasing order and pass [`PmState::check_invariants`], else it is refused.

use std::collections::BTreeMap;

use ids::{Offset, RangeIndex};

use crate::state::codec::{DecodeError, Reader, Writer};
use crate::state::{NodeRecord, NodeState, PmState, RangeRecord, StreamRecord};

const SNAPSHOT_MAGIC: &[u8; 4] = b"EPMS";
/// The snapshot encoding version this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

// Smallest encodings, used to bound counts against the bytes left before allocating.
const NODE_MIN_BYTES: usize = 4 + 4 + 1 + 8;
const STREAM_MIN_BYTES: usize = 8 + 1 + 1 + 8 + 8 + 8 + 8 + 1 + 8 + 4 + 8;
const RANGE_MIN_BYTES: usize = 12 + 8 + 8 + 1 + 4 + 1 + 1 + 1 + 8 + 1 + 1;

impl PmState {
    /// The whole state as bytes, for the log's snapshot.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.bytes(SNAPSHOT_MAGIC);
        writer.u8(SNAPSHOT_FORMAT_VERSION);
        writer.u64(self.revision);
        writer.stream(self.next_stream_id);
        writer.node(self.next_node_id);
        writer.length(self.nodes.len());
        for node in self.nodes.values() {
            writer.node(node.id);
            writer.string(&node.address);
            writer.u8(node.state.to_byte());
            writer.u64(node.registered_at_ms);
        }
        writer.length(self.streams.len());
        for stream in self.streams.values() {
            writer.stream(stream.id);
            writer.u8(stream.replica_count);
            writer.u8(stream.ack_count);
            writer.u64(stream.retention_ms);
            writer.u64(stream.retention_bytes);
            writer.offset(stream.start_offset);
            writer.epoch(stream.epoch);
            writer.bool(stream.deleted);
            writer.u64(stream.created_at_ms);
            writer.u32(stream.next_range_index.0);
            writer.offset(stream.next_range_start);
        }
        writer.length(self.ranges.len());
        for range in self.ranges.values() {
            writer.range_key(range.key);
            writer.epoch(range.epoch);
            writer.offset(range.start);
            writer.option_u64(range.end.map(|end| end.0));
            writer.nodes(&range.nodes);
            writer.u8(range.replica_count);
            writer.u8(range.ack_count);
            writer.bool(range.under_replicated);
            writer.u64(range.created_at_ms);
            writer.option_u64(range.sealed_at_ms);
            writer.option_u64(range.size_bytes);
        }
        writer.into_bytes()
    }

    /// Rebuilds a state from [`PmState::encode_snapshot`]'s bytes; malformed or inconsistent
    /// input is an error, never a panic.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<PmState, DecodeError> {
        let mut reader = Reader::new(bytes);
        if reader.bytes("magic", SNAPSHOT_MAGIC.len()).ok() != Some(SNAPSHOT_MAGIC.as_slice()) {
            return Err(DecodeError::NotASnapshot);
        }
        let version = reader.u8("version")?;
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let revision = reader.u64("revision")?;
        let next_stream_id = reader.stream("next_stream_id")?;
        let next_node_id = reader.node("next_node_id")?;

        let mut nodes = BTreeMap::new();
        for _ in 0..reader.length("nodes", NODE_MIN_BYTES)? {
            let node = NodeRecord {
                id: reader.node("node id")?,
                address: reader.string("node address")?,
                state: NodeState::from_byte(reader.u8("node state")?)?,
                registered_at_ms: reader.u64("node registered_at_ms")?,
            };
            insert_in_order(&mut nodes, node.id, node, "node")?;
        }
        let mut streams = BTreeMap::new();
        for _ in 0..reader.length("streams", STREAM_MIN_BYTES)? {
            let stream = StreamRecord {
                id: reader.stream("stream id")?,
                replica_count: reader.u8("stream replica_count")?,
                ack_count: reader.u8("stream ack_count")?,
                retention_ms: reader.u64("stream retention_ms")?,
                retention_bytes: reader.u64("stream retention_bytes")?,
                start_offset: reader.offset("stream start_offset")?,
                epoch: reader.epoch("stream epoch")?,
                deleted: reader.bool("stream deleted")?,
                created_at_ms: reader.u64("stream created_at_ms")?,
                next_range_index: RangeIndex(reader.u32("stream next_range_index")?),
                next_range_start: reader.offset("stream next_range_start")?,
            };
            insert_in_order(&mut streams, stream.id, stream, "stream")?;
        }
        let mut ranges = BTreeMap::new();
        for _ in 0..reader.length("ranges", RANGE_MIN_BYTES)? {
            let range = RangeRecord {
                key: reader.range_key("range key")?,
                epoch: reader.epoch("range epoch")?,
                start: reader.offset("range start")?,
                end: reader.option_u64("range end")?.map(Offset),
                nodes: reader.nodes("range nodes")?,
                replica_count: reader.u8("range replica_count")?,
                ack_count: reader.u8("range ack_count")?,
                under_replicated: reader.bool("range under_replicated")?,
                created_at_ms: reader.u64("range created_at_ms")?,
                sealed_at_ms: reader.option_u64("range sealed_at_ms")?,
                size_bytes: reader.option_u64("range size_bytes")?,
            };
            insert_in_order(&mut ranges, range.key, range, "range")?;
        }
        reader.finish()?;
        let state = PmState {
            nodes,
            streams,
            ranges,
            next_stream_id,
            next_node_id,
            revision,
        };
        state
            .check_invariants()
            .map_err(DecodeError::Inconsistent)?;
        Ok(state)
    }
}

/// Inserts `value` under `key`, which must be above every key already in `map` (the encoder
/// writes keys in order, so a duplicate or a step back means corruption).
fn insert_in_order<K: Ord + Copy + std::fmt::Display, V>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    what: &str,
) -> Result<(), DecodeError> {
    if map.last_key_value().is_some_and(|(last, _)| *last >= key) {
        return Err(DecodeError::Inconsistent(format!(
            "{what} {key} is out of order or repeated"
        )));
    }
    map.insert(key, value);
    Ok(())
}
