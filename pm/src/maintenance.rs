//! What the placement manager does on its own, every `cluster.maintenance-interval-ms`:
//!
//! * **Reconcile** every live data node: ask it for the ranges it holds (LIST_RANGES) and remove
//!   (DELETE_RANGE) each replica the state does not place on that node: left by a create that
//!   never committed, by a delete or trim whose request was lost, or of a purged stream. A
//!   replica being created right now is left alone, and so is a replica of a stream id this
//!   placement manager never allocated (data created by hand before the node joined). The replica of the first range of a trimmed
//!   stream is trimmed (TRIM_RANGE) when it still starts below the stream's start. The sizes the
//!   nodes report feed retention by size.
//! * **Retention**: a stream whose sealed ranges are older than `retention-ms`, or whose newer
//!   ranges already hold `retention-bytes`, is trimmed (a TrimStream command, as if an operator
//!   had asked), and its data nodes are told.
//! * **Purge** a deleted stream once no live node reported one of its ranges in this round.
//! * **Snapshot** the state once `storage.snapshot-every-commands` commands (and at least as
//!   many as the state has records) were logged since the last one and the log is idle; the log
//!   then drops the segments the snapshot covers.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ids::{NodeId, RangeKey, StreamId};
use wire::msg::{DeleteRangeRequest, TrimRangeRequest};
use wire::ErrorCode;

use crate::data_nodes::NodeFailure;
use crate::service::{now_ms, Pm};
use crate::state::{Command, Outcome};

/// Runs maintenance rounds until the placement manager shuts down.
pub async fn run(pm: Rc<Pm>) {
    let period = Duration::from_millis(pm.config.cluster.maintenance_interval_ms);
    loop {
        runtime::time::sleep(period).await;
        if pm.is_shutting_down_now() {
            return;
        }
        round(&pm).await;
    }
}

/// One maintenance round.
pub async fn round(pm: &Rc<Pm>) {
    let held = reconcile(pm).await;
    enforce_retention(pm).await;
    purge_deleted(pm, &held).await;
    snapshot_if_due(pm).await;
}

/// Lists every live node's ranges, removes the replicas the state does not place there, and
/// returns which streams still have replicas somewhere.
async fn reconcile(pm: &Rc<Pm>) -> BTreeSet<StreamId> {
    let now = Instant::now();
    let nodes: Vec<(NodeId, String)> = pm
        .state
        .borrow()
        .nodes()
        .filter(|node| pm.is_alive(node.id, now))
        .map(|node| (node.id, node.address.clone()))
        .collect();
    let mut held = BTreeSet::new();
    let mut sizes: BTreeMap<RangeKey, u64> = BTreeMap::new();
    for (node, address) in nodes {
        let listed = match pm.data_nodes.list_ranges(&address).await {
            Ok(listed) => listed,
            Err(failure) => {
                log::debug!("reconcile: listing the ranges of node {node} failed: {failure}");
                continue;
            }
        };
        for range in listed {
            let key = RangeKey::new(range.stream_id, range.index);
            held.insert(key.stream_id);
            if let Some(size) = range.size_bytes {
                let known = sizes.entry(key).or_default();
                *known = (*known).max(size);
            }
            let (placed, stream_start, deleted, allocated) = {
                let state = pm.state.borrow();
                let placed = state
                    .range(key)
                    .is_some_and(|record| record.nodes.contains(&node));
                let stream = state.stream(key.stream_id);
                (
                    placed,
                    stream.map(|stream| stream.start_offset),
                    stream.is_none_or(|stream| stream.deleted),
                    key.stream_id < state.next_stream_id(),
                )
            };
            if pm.uncommitted.borrow().contains(&(node, key)) {
                continue;
            }
            if !allocated {
                // A stream id this placement manager never gave out: data created on the node
                // by hand (or under another placement manager). Never deleted on a guess.
                log::warn!(
                    "reconcile: node {node} holds range {key} of stream {}, which this \
                     placement manager never created; left alone",
                    key.stream_id
                );
                continue;
            }
            if !placed || deleted {
                let request = DeleteRangeRequest {
                    stream_id: key.stream_id,
                    range_index: key.range_index,
                };
                match pm.data_nodes.delete_range(&address, &request).await {
                    Ok(()) => {
                        log::info!("reconcile: removed replica {key} from node {node}");
                        if !deleted {
                            pm.metrics.add(&pm.metrics.orphans_removed, 1);
                        }
                    }
                    Err(failure) => {
                        log::warn!("reconcile: removing replica {key} from node {node}: {failure}")
                    }
                }
                continue;
            }
            if let Some(start) = stream_start.filter(|start| range.start_offset < *start) {
                let request = TrimRangeRequest {
                    stream_id: key.stream_id,
                    range_index: key.range_index,
                    offset: start,
                };
                match pm.data_nodes.trim_range(&address, &request).await {
                    Ok(()) => {}
                    // The replica holds less than the trim point (it lags, or the range was
                    // sealed past what it holds): nothing of it below the point to drop.
                    Err(NodeFailure::Refused {
                        code: ErrorCode::OffsetOutOfRange,
                        ..
                    }) => log::debug!("reconcile: replica {key} on node {node} ends below {start}"),
                    Err(failure) => {
                        log::warn!("reconcile: trimming replica {key} on node {node}: {failure}")
                    }
                }
            }
        }
    }
    pm.reported_sizes.borrow_mut().extend(sizes);
    held
}

/// Trims every stream whose retention lets go of whole sealed ranges.
async fn enforce_retention(pm: &Rc<Pm>) {
    let now = now_ms();
    let due: Vec<(StreamId, ids::Offset)> = {
        let state = pm.state.borrow();
        let sizes = pm.reported_sizes.borrow();
        state
            .list_streams(StreamId(0), usize::MAX)
            .iter()
            .filter(|stream| !stream.deleted)
            .filter_map(|stream| {
                state
                    .retention_trim_point_with(stream.id, now, |key| sizes.get(&key).copied())
                    .map(|offset| (stream.id, offset))
            })
            .collect()
    };
    for (stream, offset) in due {
        let command = Command::TrimStream { stream, offset };
        match pm.execute(command).await {
            Ok(Outcome::StreamTrimmed { stream, dropped }) => {
                log::info!(
                    "retention: stream {} trimmed to {offset}, {} range(s) dropped",
                    stream.id,
                    dropped.len()
                );
                pm.metrics.add(&pm.metrics.retention_trims, 1);
                pm.spawn_retention(&stream, dropped);
            }
            Ok(_) => {}
            Err(reply) => log::warn!("retention: trimming stream {stream}: {:?}", reply.response),
        }
    }
}

/// Forgets deleted streams that no live node holds any more.
async fn purge_deleted(pm: &Rc<Pm>, held: &BTreeSet<StreamId>) {
    let deleted: Vec<StreamId> = pm
        .state
        .borrow()
        .list_streams(StreamId(0), usize::MAX)
        .iter()
        .filter(|stream| stream.deleted && !held.contains(&stream.id))
        .map(|stream| stream.id)
        .collect();
    for stream in deleted {
        if let Err(reply) = pm.execute(Command::PurgeStream { stream }).await {
            log::warn!("purging stream {stream}: {:?}", reply.response);
        } else {
            log::info!("stream {stream} purged: no live node holds its ranges");
        }
    }
}

/// Writes a snapshot once enough commands were logged and nothing is waiting for the disk.
pub async fn snapshot_if_due(pm: &Rc<Pm>) {
    // At least as many commands as the state has records: encoding a snapshot costs a pass over
    // the state on this thread, so a large state is snapshotted less often and the cost per
    // command stays bounded.
    let records = pm.state.borrow().record_count();
    let due = pm.config.storage.snapshot_every_commands.max(records);
    if pm.commands_since_snapshot.get() < due {
        return;
    }
    let index = pm.last_appended();
    if index == 0 || pm.log.durable_index() < index {
        return;
    }
    let bytes = pm.state.borrow().encode_snapshot();
    let size = bytes.len();
    let ticket = match pm.log.snapshot(index, bytes) {
        Ok(ticket) => ticket,
        Err(error) => {
            log::warn!("snapshot at command {index} not taken: {error}");
            return;
        }
    };
    match ticket.await {
        Ok(()) => {
            pm.commands_since_snapshot.set(0);
            log::info!("snapshot of {size} bytes at command {index}; older log segments dropped");
        }
        Err(error) => log::warn!("snapshot at command {index} failed: {error}"),
    }
}
