//! Rendering of results: a line-oriented text form for people and one JSON object per command
//! for scripts. Payloads are shown as text when they are printable UTF-8, as hex otherwise.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use wire::msg::ClusterNode;
use wire::{Offset, Range, RangeKey, Stream};

use crate::session::{FetchedBatch, Outcome, Reply};

/// Payload bytes shown in text mode before the rest is elided.
const PAYLOAD_PREVIEW_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `1.23 ms` or `850 us`.
pub fn format_latency(latency: Duration) -> String {
    let micros = latency.as_micros();
    if micros < 1_000 {
        format!("{micros} us")
    } else {
        format!("{:.2} ms", latency.as_secs_f64() * 1_000.0)
    }
}

fn optional(offset: Option<Offset>, absent: &str) -> String {
    offset.map_or_else(|| absent.to_string(), |offset| offset.to_string())
}

/// Printable text in double quotes (escaped like the shell's input), or `hex:...`.
pub fn format_payload(payload: &[u8]) -> String {
    let shown = &payload[..payload.len().min(PAYLOAD_PREVIEW_BYTES)];
    let elided = payload.len() - shown.len();
    let mut text = match std::str::from_utf8(shown) {
        Ok(text)
            if text
                .chars()
                .all(|c| !c.is_control() || c == '\n' || c == '\t') =>
        {
            let mut quoted = String::from("\"");
            for character in text.chars() {
                match character {
                    '"' => quoted.push_str("\\\""),
                    '\\' => quoted.push_str("\\\\"),
                    '\n' => quoted.push_str("\\n"),
                    '\t' => quoted.push_str("\\t"),
                    other => quoted.push(other),
                }
            }
            quoted.push('"');
            quoted
        }
        _ => format!("hex:{}", hex(shown)),
    };
    if elided > 0 {
        let _ = write!(text, " (+{elided} more bytes)");
    }
    text
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A classic hex dump: offset, 16 bytes in hex, printable characters.
pub fn hex_dump(prefix: &str, bytes: &[u8]) -> String {
    let mut out = String::new();
    for (line, chunk) in bytes.chunks(16).enumerate() {
        let mut hex_part = String::new();
        for (index, byte) in chunk.iter().enumerate() {
            if index == 8 {
                hex_part.push(' ');
            }
            let _ = write!(hex_part, "{byte:02x} ");
        }
        let printable: String = chunk
            .iter()
            .map(|&byte| {
                if byte.is_ascii_graphic() || byte == b' ' {
                    byte as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{prefix} {:06x}  {hex_part:<49} |{printable}|",
            line * 16
        );
    }
    if bytes.is_empty() {
        let _ = writeln!(out, "{prefix} (nothing)");
    }
    out
}

fn range_text(range: &Range) -> String {
    let state = if range.is_sealed() { "sealed" } else { "open" };
    let mut text = format!(
        "range {} {state} epoch={} start={} end={} next={} confirmed={}",
        RangeKey::new(range.stream_id, range.index),
        range.epoch,
        range.start_offset,
        optional(range.end_offset, "open"),
        optional(range.next_offset, "unknown"),
        optional(range.confirmed_offset, "unknown"),
    );
    let _ = write!(
        text,
        " replica-count-target={} ack-count={} size={}",
        range.replica_count_target,
        range.ack_count,
        range
            .size_bytes
            .map_or_else(|| "unknown".to_string(), |bytes| format!("{bytes}B")),
    );
    if range.under_replicated {
        text.push_str(" under-replicated");
    }
    if !range.replicas.is_empty() {
        let replicas: Vec<String> = range
            .replicas
            .iter()
            .map(|replica| format!("{}@{}", replica.node_id, replica.address))
            .collect();
        let _ = write!(text, " replicas={}", replicas.join(","));
    }
    text
}

/// `1.5GiB`, `512B`: binary units, one decimal above bytes; no space, so a table cell stays one
/// word for `awk`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// A retention by age as people write it: `forever` for 0, else the largest unit that divides
/// it exactly (`7d`, `36h`, `90s`, `250ms`).
pub fn retention_age(retention_ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    if retention_ms == 0 {
        return "forever".into();
    }
    UNITS
        .iter()
        .find(|(unit_ms, _)| retention_ms % unit_ms == 0)
        .map_or_else(
            || format!("{retention_ms}ms"),
            |(unit_ms, name)| format!("{}{name}", retention_ms / unit_ms),
        )
}

/// A retention by size: `unlimited` for 0, else the bytes in binary units.
pub fn retention_size(retention_bytes: u64) -> String {
    if retention_bytes == 0 {
        "unlimited".into()
    } else {
        human_bytes(retention_bytes)
    }
}

/// `850ms`, `4.2s`, `3m10s`: how long ago a heartbeat arrived.
pub fn heartbeat_age(age_ms: u64) -> String {
    match age_ms {
        0..=999 => format!("{age_ms}ms"),
        1_000..=59_999 => format!("{:.1}s", age_ms as f64 / 1_000.0),
        _ => format!("{}m{}s", age_ms / 60_000, age_ms % 60_000 / 1_000),
    }
}

fn stream_text(stream: &Stream) -> String {
    let mut text = format!(
        "stream {} replica-count={} ack-count={} retention-ms={} retention-bytes={} start={} epoch={}",
        stream.id,
        stream.replica_count,
        stream.ack_count,
        stream.retention_ms,
        stream.retention_bytes,
        stream.start_offset,
        stream.epoch,
    );
    if stream.deleted {
        text.push_str(" deleted");
    }
    text
}

fn cluster_node_text(node: &ClusterNode) -> String {
    format!(
        "node {} {} {} {} last-heartbeat={} ranges={} disk-free={} disk-total={}",
        node.node_id,
        node.address,
        node.state.name(),
        if node.alive { "alive" } else { "dead" },
        heartbeat_age(node.last_heartbeat_age_ms),
        node.range_count,
        human_bytes(node.disk_free_bytes),
        human_bytes(node.disk_total_bytes),
    )
}

fn batch_text(batch: &FetchedBatch) -> String {
    format!(
        "  batch offsets [{}, {}) count={} epoch={} timestamp_ms={} payload={}",
        batch.base_offset,
        batch.next_offset(),
        batch.record_count,
        batch.epoch,
        batch.timestamp_ms,
        format_payload(&batch.payload)
    )
}

/// Text rendering: the result line (with the latency), detail lines, then the hex dumps when
/// asked for.
pub fn text(outcome: &Outcome, show_hex: bool) -> String {
    let latency = format_latency(outcome.latency);
    let mut out = String::new();
    if let Some(note) = &outcome.note {
        let _ = writeln!(out, "({note})");
    }
    if show_hex {
        out.push_str(&hex_dump(">>", &outcome.sent));
    }
    match &outcome.reply {
        Reply::Pong { payload } => {
            let _ = writeln!(
                out,
                "PONG {} bytes {} in {latency}",
                payload.len(),
                format_payload(payload)
            );
        }
        Reply::Range(range) => {
            let _ = writeln!(out, "OK {} in {latency}", range_text(range));
        }
        Reply::Appended {
            base_offset,
            next_offset,
        } => {
            let _ = writeln!(
                out,
                "OK appended offsets [{base_offset}, {next_offset}) next={next_offset} in {latency}"
            );
        }
        Reply::Fetched {
            batches,
            confirmed_offset,
            next_offset,
            end_offset,
        } => {
            let bytes: usize = batches.iter().map(|batch| batch.payload.len()).sum();
            let _ = writeln!(
                out,
                "OK fetched {} batch(es), {bytes} payload bytes; confirmed={} next={next_offset} end={} in {latency}",
                batches.len(),
                optional(*confirmed_offset, "unknown"),
                optional(*end_offset, "open"),
            );
            for batch in batches {
                let _ = writeln!(out, "{}", batch_text(batch));
            }
        }
        Reply::Sealed {
            end_offset,
            durable_end,
            epoch,
        } => {
            let _ = writeln!(
                out,
                "OK sealed end={} durable_end={} epoch={epoch} in {latency}",
                optional(*end_offset, "open (fenced)"),
                optional(*durable_end, "-"),
            );
        }
        Reply::Ranges(ranges) => {
            let _ = writeln!(out, "OK {} range(s) in {latency}", ranges.len());
            for range in ranges {
                let _ = writeln!(out, "  {}", range_text(range));
            }
        }
        Reply::Trimmed { key, offset } => {
            let _ = writeln!(out, "OK trimmed range {key} below {offset} in {latency}");
        }
        Reply::Deleted { key } => {
            let _ = writeln!(out, "OK deleted range {key} in {latency}");
        }
        Reply::Stream(stream) => {
            let _ = writeln!(out, "OK {} in {latency}", stream_text(stream));
        }
        Reply::Streams(streams) => {
            let _ = writeln!(out, "OK {} stream(s) in {latency}", streams.len());
            for stream in streams {
                let _ = writeln!(out, "  {}", stream_text(stream));
            }
        }
        Reply::Cluster(nodes) => {
            let _ = writeln!(out, "OK {} node(s) in {latency}", nodes.len());
            for node in nodes {
                let _ = writeln!(out, "  {}", cluster_node_text(node));
            }
        }
        Reply::NodeAllocated { node_id } => {
            let _ = writeln!(out, "OK node id {node_id} in {latency}");
        }
        Reply::HeartbeatAnswered {
            heartbeat_interval_ms,
            session_timeout_ms,
        } => {
            let _ = writeln!(
                out,
                "OK heartbeat-interval-ms={heartbeat_interval_ms} session-timeout-ms={session_timeout_ms} in {latency}"
            );
        }
        Reply::Failed(error) => {
            let retriable = if error.is_retriable() {
                "retriable"
            } else {
                "not retriable"
            };
            let _ = writeln!(
                out,
                "ERROR {} detail={} ({retriable}): {} in {latency}",
                error.code, error.detail, error.message
            );
        }
        Reply::Raw {
            received,
            frames,
            undecoded,
            ending,
        } => {
            let _ = writeln!(
                out,
                "RAW sent {} bytes, received {} bytes in {} frame(s); {} after {latency}",
                outcome.sent.len(),
                received.len(),
                frames.len(),
                ending.describe()
            );
            for frame in frames {
                let _ = writeln!(out, "  {}", frame_text(frame));
            }
            if let Some((error, rest)) = undecoded {
                let _ = writeln!(out, "  {rest} trailing bytes do not decode: {error}");
            }
        }
    }
    // Raw mode always shows what came back; other commands only with `.hex on`.
    let is_raw = matches!(outcome.reply, Reply::Raw { .. });
    if show_hex || (is_raw && !outcome.received.is_empty()) {
        out.push_str(&hex_dump("<<", &outcome.received));
    }
    out
}

/// One line describing any frame (raw mode).
pub fn frame_text(frame: &wire::Frame) -> String {
    let kind = if frame.is_error() {
        "error response"
    } else if frame.is_response() {
        "response"
    } else {
        "request"
    };
    let mut text = format!(
        "{} {kind} request_id={} header={}B payload={}B",
        frame.opcode.name(),
        frame.request_id,
        frame.header.len(),
        frame.payload.len()
    );
    if frame.opcode == wire::Opcode::Goaway {
        match frame.decode_message::<wire::msg::Goaway>() {
            Ok(goaway) => {
                let _ = write!(text, ": {:?} {}", goaway.reason, goaway.message);
            }
            Err(error) => {
                let _ = write!(text, ": undecodable GOAWAY ({error})");
            }
        }
    } else if frame.is_error() {
        match frame.error_response() {
            Ok(error) => {
                let _ = write!(
                    text,
                    ": {} detail={} {}",
                    error.code, error.detail, error.message
                );
            }
            Err(error) => {
                let _ = write!(text, ": undecodable error header ({error})");
            }
        }
    }
    text
}

fn offset_json(offset: Option<Offset>) -> Value {
    offset.map_or(Value::Null, |offset| json!(offset.0))
}

/// A stream record as JSON, as `es stream ... -o json` prints it.
pub fn stream_json(stream: &Stream) -> Value {
    json!({
        "stream_id": stream.id.0,
        "replica_count": stream.replica_count,
        "ack_count": stream.ack_count,
        "retention_ms": stream.retention_ms,
        "retention_bytes": stream.retention_bytes,
        "start_offset": stream.start_offset.0,
        "epoch": stream.epoch.0,
        "deleted": stream.deleted,
    })
}

/// A data node as the placement manager sees it, as JSON (`es cluster -o json`).
pub fn cluster_node_json(node: &ClusterNode) -> Value {
    json!({
        "node_id": node.node_id.0,
        "address": node.address,
        "state": node.state.name(),
        "alive": node.alive,
        "last_heartbeat_age_ms": node.last_heartbeat_age_ms,
        "disk_free_bytes": node.disk_free_bytes,
        "disk_total_bytes": node.disk_total_bytes,
        "range_count": node.range_count,
    })
}

/// A range record as JSON.
pub fn range_json(range: &Range) -> Value {
    json!({
        "stream_id": range.stream_id.0,
        "range_index": range.index.0,
        "epoch": range.epoch.0,
        "start_offset": range.start_offset.0,
        "end_offset": offset_json(range.end_offset),
        "next_offset": offset_json(range.next_offset),
        "confirmed_offset": offset_json(range.confirmed_offset),
        "sealed": range.is_sealed(),
        "replica_count_target": range.replica_count_target,
        "ack_count": range.ack_count,
        "under_replicated": range.under_replicated,
        "size_bytes": range.size_bytes,
        "replicas": range.replicas.iter().map(|replica| json!({
            "node_id": replica.node_id.0,
            "address": replica.address,
        })).collect::<Vec<_>>(),
    })
}

fn payload_json(payload: &[u8]) -> Value {
    match std::str::from_utf8(payload) {
        Ok(text) => json!({ "text": text, "bytes": payload.len() }),
        Err(_) => json!({ "hex": hex(payload), "bytes": payload.len() }),
    }
}

/// JSON rendering: one object per command.
pub fn json_value(outcome: &Outcome, show_hex: bool) -> Value {
    let mut value = json!({
        "operation": outcome.operation,
        "latency_us": outcome.latency.as_micros() as u64,
    });
    let result = match &outcome.reply {
        Reply::Pong { payload } => json!({ "ok": true, "payload": payload_json(payload) }),
        Reply::Range(range) => json!({ "ok": true, "range": range_json(range) }),
        Reply::Appended {
            base_offset,
            next_offset,
        } => {
            json!({ "ok": true, "base_offset": base_offset.0, "next_offset": next_offset.0 })
        }
        Reply::Fetched {
            batches,
            confirmed_offset,
            next_offset,
            end_offset,
        } => json!({
            "ok": true,
            "confirmed_offset": offset_json(*confirmed_offset),
            "next_offset": next_offset.0,
            "end_offset": offset_json(*end_offset),
            "batches": batches.iter().map(|batch| json!({
                "base_offset": batch.base_offset.0,
                "record_count": batch.record_count,
                "epoch": batch.epoch.0,
                "timestamp_ms": batch.timestamp_ms,
                "payload": payload_json(&batch.payload),
            })).collect::<Vec<_>>(),
        }),
        Reply::Sealed {
            end_offset,
            durable_end,
            epoch,
        } => json!({
            "ok": true,
            "end_offset": end_offset.map(|offset| offset.0),
            "durable_end": durable_end.map(|offset| offset.0),
            "epoch": epoch.0,
        }),
        Reply::Ranges(ranges) => {
            json!({ "ok": true, "ranges": ranges.iter().map(range_json).collect::<Vec<_>>() })
        }
        Reply::Trimmed { key, offset } => json!({
            "ok": true,
            "stream_id": key.stream_id.0,
            "range_index": key.range_index.0,
            "trimmed_below": offset.0,
        }),
        Reply::Deleted { key } => json!({
            "ok": true,
            "stream_id": key.stream_id.0,
            "range_index": key.range_index.0,
            "deleted": true,
        }),
        Reply::Stream(stream) => json!({ "ok": true, "stream": stream_json(stream) }),
        Reply::Streams(streams) => {
            json!({ "ok": true, "streams": streams.iter().map(stream_json).collect::<Vec<_>>() })
        }
        Reply::Cluster(nodes) => json!({
            "ok": true,
            "nodes": nodes.iter().map(cluster_node_json).collect::<Vec<_>>(),
        }),
        Reply::NodeAllocated { node_id } => json!({ "ok": true, "node_id": node_id.0 }),
        Reply::HeartbeatAnswered {
            heartbeat_interval_ms,
            session_timeout_ms,
        } => json!({
            "ok": true,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "session_timeout_ms": session_timeout_ms,
        }),
        Reply::Failed(error) => failed_json(error),
        Reply::Raw {
            received,
            frames,
            undecoded,
            ending,
        } => json!({
            "ok": true,
            "received_hex": hex(received),
            "frames": frames.iter().map(frame_text).collect::<Vec<_>>(),
            "undecoded": undecoded.as_ref().map(|(error, rest)| json!({
                "error": error.to_string(),
                "bytes": rest,
            })),
            "ending": ending.describe(),
        }),
    };
    merge(&mut value, result);
    if let Some(request_id) = outcome.request_id {
        value["request_id"] = json!(request_id);
    }
    if let Some(note) = &outcome.note {
        value["note"] = json!(note);
    }
    if show_hex {
        value["sent_hex"] = json!(hex(&outcome.sent));
        value["received_hex"] = json!(hex(&outcome.received));
    }
    value
}

/// An error response as JSON: `ok: false` and the error's code, name, detail and message.
pub fn failed_json(error: &wire::msg::ErrorResponse) -> Value {
    json!({
        "ok": false,
        "error": {
            "code": error.code.as_u16(),
            "name": error.code.name(),
            "retriable": error.is_retriable(),
            "detail": error.detail,
            "message": error.message,
        }
    })
}

fn merge(target: &mut Value, source: Value) {
    if let (Value::Object(target), Value::Object(source)) = (target, source) {
        target.extend(source);
    }
}

/// A failure to run a command at all, as JSON.
pub fn error_json(operation: &str, message: &str) -> Value {
    json!({ "operation": operation, "ok": false, "error": { "message": message } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_render_as_text_or_hex() {
        assert_eq!(format_payload(b"hello"), "\"hello\"");
        assert_eq!(format_payload(b"a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(format_payload(&[0, 1, 0xff]), "hex:0001ff");
        let long = vec![b'x'; PAYLOAD_PREVIEW_BYTES + 10];
        assert!(format_payload(&long).ends_with("(+10 more bytes)"));
    }

    #[test]
    fn hex_dump_shows_offsets_and_printables() {
        let dump = hex_dump(">>", b"ES\x01\x00abcdefghijklmnop");
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(">> 000000  45 53 01 00"), "{dump}");
        assert!(lines[0].ends_with("|ES..abcdefghijkl|"), "{dump}");
        assert!(lines[1].starts_with(">> 000010  6d 6e 6f 70"), "{dump}");
    }

    #[test]
    fn latency_units() {
        assert_eq!(format_latency(Duration::from_micros(850)), "850 us");
        assert_eq!(format_latency(Duration::from_micros(1_250)), "1.25 ms");
    }
}
