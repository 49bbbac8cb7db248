//! How `es stream ...` and `es cluster` print the placement manager's records: aligned tables
//! for people, bare JSON values (an object per record, an array per list) for scripts. Unlike
//! the shell's `OK ... in 1.2 ms` lines these carry no latency or envelope, so `es stream
//! create` prints just the new id and `$(es stream create ...)` captures it.

use std::fmt::Write as _;

use serde_json::{json, Value};
use wire::msg::ClusterNode;
use wire::{Range, RangeKey, Stream};

use crate::output::{
    cluster_node_json, heartbeat_age, human_bytes, range_json, retention_age, retention_size,
    stream_json, Format,
};
use crate::session::Reply;

/// What a one-shot command prints of the reply it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `stream create`: the id alone (text), the stream record (JSON).
    StreamId,
    /// `stream open`: the new epoch alone (text), the stream record (JSON).
    Epoch,
    /// `stream describe|trim|delete`: the stream record.
    Stream,
    /// `stream list`.
    Streams,
    /// `cluster`.
    Cluster,
    /// `stream ranges`.
    Ranges,
    /// `stream new-range`: the range created.
    Range,
    /// `stream seal-range`: the range and the end it was sealed at.
    Sealed(RangeKey),
}

/// Renders a successful `reply` in `shape`, ending with a newline. `None` if the reply is not
/// of the kind the shape expects (an error response is the caller's to print).
pub fn render(shape: Shape, reply: &Reply, format: Format) -> Option<String> {
    let (text, value) = match (shape, reply) {
        (Shape::StreamId, Reply::Stream(stream)) => {
            (format!("{}\n", stream.id), stream_json(stream))
        }
        (Shape::Epoch, Reply::Stream(stream)) => {
            (format!("{}\n", stream.epoch), stream_json(stream))
        }
        (Shape::Stream, Reply::Stream(stream)) => (
            streams_table(std::slice::from_ref(stream)),
            stream_json(stream),
        ),
        (Shape::Streams, Reply::Streams(streams)) => (
            streams_table(streams),
            Value::Array(streams.iter().map(stream_json).collect()),
        ),
        (Shape::Cluster, Reply::Cluster(nodes)) => (
            cluster_table(nodes),
            Value::Array(nodes.iter().map(cluster_node_json).collect()),
        ),
        (Shape::Ranges, Reply::Ranges(ranges)) => (
            ranges_table(ranges),
            Value::Array(ranges.iter().map(range_json).collect()),
        ),
        (Shape::Range, Reply::Range(range)) => {
            (ranges_table(std::slice::from_ref(range)), range_json(range))
        }
        (
            Shape::Sealed(key),
            Reply::Sealed {
                end_offset: Some(end_offset),
                ..
            },
        ) => (
            format!("range {key} sealed at end={end_offset}\n"),
            json!({
                "stream_id": key.stream_id.0,
                "range_index": key.range_index.0,
                "end_offset": end_offset.0,
            }),
        ),
        _ => return None,
    };
    Some(match format {
        Format::Text => text,
        Format::Json => format!("{value}\n"),
    })
}

/// Columns separated by two spaces, each as wide as its widest cell; no trailing spaces.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        debug_assert_eq!(row.len(), headers.len());
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

pub fn streams_table(streams: &[Stream]) -> String {
    let rows: Vec<Vec<String>> = streams
        .iter()
        .map(|stream| {
            vec![
                stream.id.to_string(),
                stream.replica_count.to_string(),
                stream.ack_count.to_string(),
                retention_age(stream.retention_ms),
                retention_size(stream.retention_bytes),
                stream.start_offset.to_string(),
                stream.epoch.to_string(),
                yes_no(stream.deleted),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "R",
            "A",
            "RETENTION",
            "RETENTION-BYTES",
            "START",
            "EPOCH",
            "DELETED",
        ],
        &rows,
    )
}

pub fn cluster_table(nodes: &[ClusterNode]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|node| {
            vec![
                node.node_id.to_string(),
                node.address.clone(),
                node.state.name().to_string(),
                yes_no(node.alive),
                heartbeat_age(node.last_heartbeat_age_ms),
                human_bytes(node.disk_free_bytes),
                node.range_count.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ADDRESS",
            "STATE",
            "ALIVE",
            "LAST-HEARTBEAT",
            "FREE-DISK",
            "RANGES",
        ],
        &rows,
    )
}

pub fn ranges_table(ranges: &[Range]) -> String {
    let rows: Vec<Vec<String>> = ranges
        .iter()
        .map(|range| {
            let nodes: Vec<String> = range
                .replicas
                .iter()
                .map(|replica| format!("{}@{}", replica.node_id, replica.address))
                .collect();
            let mut nodes = if nodes.is_empty() {
                "-".to_string()
            } else {
                nodes.join(",")
            };
            if range.under_replicated {
                nodes.push_str("  under-replicated");
            }
            vec![
                range.index.to_string(),
                range.epoch.to_string(),
                range.start_offset.to_string(),
                range
                    .end_offset
                    .map_or_else(|| "open".to_string(), |end| end.to_string()),
                format!("{}/{}", range.replica_count_target, range.ack_count),
                range
                    .size_bytes
                    .map_or_else(|| "-".to_string(), human_bytes),
                nodes,
            ]
        })
        .collect();
    table(
        &["INDEX", "EPOCH", "START", "END", "R/A", "SIZE", "NODES"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{Epoch, NodeId, NodeState, Offset, RangeIndex, ReplicaNode, StreamId};

    fn stream() -> Stream {
        Stream {
            id: StreamId(7),
            replica_count: 3,
            ack_count: 2,
            retention_ms: 7 * 86_400_000,
            retention_bytes: 0,
            start_offset: Offset(100),
            epoch: Epoch(4),
            deleted: false,
        }
    }

    fn text(shape: Shape, reply: &Reply) -> String {
        render(shape, reply, Format::Text).expect("renders")
    }

    fn json(shape: Shape, reply: &Reply) -> Value {
        let rendered = render(shape, reply, Format::Json).expect("renders");
        assert!(rendered.ends_with('\n'));
        serde_json::from_str(&rendered).expect("valid JSON")
    }

    #[test]
    fn create_prints_the_bare_id_so_scripts_can_capture_it() {
        let reply = Reply::Stream(stream());
        assert_eq!(text(Shape::StreamId, &reply), "7\n");
        assert_eq!(text(Shape::Epoch, &reply), "4\n");
        let value = json(Shape::StreamId, &reply);
        assert_eq!(value["stream_id"], 7);
        assert_eq!(value["replica_count"], 3);
        assert_eq!(value["ack_count"], 2);
        assert_eq!(value["retention_ms"], 604_800_000u64);
        assert_eq!(value["retention_bytes"], 0);
        assert_eq!(value["start_offset"], 100);
        assert_eq!(value["epoch"], 4);
        assert_eq!(value["deleted"], false);
    }

    #[test]
    fn stream_table_aligns_columns_and_spells_retention_out() {
        let mut deleted = stream();
        deleted.id = StreamId(12);
        deleted.retention_ms = 0;
        deleted.retention_bytes = 1 << 30;
        deleted.deleted = true;
        let rendered = text(Shape::Streams, &Reply::Streams(vec![stream(), deleted]));
        assert_eq!(
            rendered,
            "ID  R  A  RETENTION  RETENTION-BYTES  START  EPOCH  DELETED\n\
             7   3  2  7d         unlimited        100    4      no\n\
             12  3  2  forever    1.0GiB           100    4      yes\n"
        );
        let value = json(Shape::Streams, &Reply::Streams(vec![stream()]));
        assert_eq!(value.as_array().map(Vec::len), Some(1));
        assert_eq!(value[0]["stream_id"], 7);
    }

    #[test]
    fn cluster_shows_state_liveness_and_free_disk() {
        let nodes = vec![
            ClusterNode {
                node_id: NodeId(1),
                range_count: 4,
                disk_free_bytes: 12 * (1 << 30) + (1 << 29),
                disk_total_bytes: 100 * (1 << 30),
                last_heartbeat_age_ms: 420,
                state: NodeState::ReadWrite,
                alive: true,
                address: "127.0.0.1:10911".into(),
            },
            ClusterNode {
                node_id: NodeId(2),
                range_count: 0,
                disk_free_bytes: 512,
                disk_total_bytes: 1024,
                last_heartbeat_age_ms: 65_000,
                state: NodeState::Offline,
                alive: false,
                address: "127.0.0.1:10912".into(),
            },
        ];
        let reply = Reply::Cluster(nodes);
        assert_eq!(
            text(Shape::Cluster, &reply),
            "ID  ADDRESS          STATE       ALIVE  LAST-HEARTBEAT  FREE-DISK  RANGES\n\
             1   127.0.0.1:10911  READ_WRITE  yes    420ms           12.5GiB    4\n\
             2   127.0.0.1:10912  OFFLINE     no     1m5s            512B       0\n"
        );
        let value = json(Shape::Cluster, &reply);
        assert_eq!(value[0]["state"], "READ_WRITE");
        assert_eq!(value[0]["alive"], true);
        assert_eq!(value[1]["state"], "OFFLINE");
        assert_eq!(value[1]["last_heartbeat_age_ms"], 65_000);
        assert_eq!(value[1]["address"], "127.0.0.1:10912");
    }

    #[test]
    fn ranges_show_open_ends_nodes_and_under_replication() {
        let open = Range {
            stream_id: StreamId(7),
            index: RangeIndex(1),
            epoch: Epoch(2),
            start_offset: Offset(50),
            replica_count_target: 3,
            ack_count: 2,
            under_replicated: true,
            replicas: vec![
                ReplicaNode {
                    node_id: NodeId(1),
                    address: "10.0.0.1:10911".into(),
                },
                ReplicaNode {
                    node_id: NodeId(3),
                    address: "10.0.0.3:10911".into(),
                },
            ],
            ..Range::default()
        };
        let sealed = Range {
            index: RangeIndex(0),
            epoch: Epoch(1),
            start_offset: Offset(0),
            end_offset: Some(Offset(50)),
            under_replicated: false,
            size_bytes: Some(2048),
            replicas: open.replicas[..1].to_vec(),
            ..open.clone()
        };
        let reply = Reply::Ranges(vec![sealed, open]);
        assert_eq!(
            text(Shape::Ranges, &reply),
            "INDEX  EPOCH  START  END   R/A  SIZE    NODES\n\
             0      1      0      50    3/2  2.0KiB  1@10.0.0.1:10911\n\
             1      2      50     open  3/2  -       1@10.0.0.1:10911,3@10.0.0.3:10911  under-replicated\n"
        );
        let value = json(Shape::Ranges, &reply);
        assert_eq!(value[1]["end_offset"], Value::Null);
        assert_eq!(value[1]["under_replicated"], true);
        assert_eq!(value[1]["replicas"][1]["node_id"], 3);
        assert_eq!(value[0]["end_offset"], 50);
    }

    #[test]
    fn seal_names_the_range_and_its_end() {
        let key = RangeKey::new(StreamId(7), RangeIndex(0));
        let reply = Reply::Sealed {
            end_offset: Some(Offset(50)),
            durable_end: None,
            epoch: Epoch(3),
        };
        assert_eq!(
            text(Shape::Sealed(key), &reply),
            "range 7/0 sealed at end=50\n"
        );
        assert_eq!(
            json(Shape::Sealed(key), &reply),
            json!({"stream_id": 7, "range_index": 0, "end_offset": 50})
        );
    }

    #[test]
    fn a_reply_of_another_kind_is_not_rendered() {
        assert!(render(Shape::Stream, &Reply::Ranges(vec![]), Format::Text).is_none());
    }
}
