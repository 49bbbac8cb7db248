//! Trim through the SDK with the real binaries on loopback: the ranges below the trim point go
//! from the PM and from every data node, and the nodes' WAL space in use falls (segments are
//! recycled), while the data above the trim point stays readable.

#[path = "support/cluster.rs"]
mod cluster;
mod support;
#[path = "support/writing.rs"]
mod writing;

use std::time::Duration;

use client::SdkError;
use cluster::{
    read_replica, serial, verify_stream, wait_for, Cluster, RawClient, SEGMENT_SIZE_BYTES,
};
use wire::msg::{DescribeRangeRequest, DescribeRangeResponse};
use wire::{ErrorCode, Offset, RangeIndex};
use writing::{block_on, connect, create_stream, read_to_end, Pump, PumpOptions};

const PATIENCE: Duration = Duration::from_secs(20);
/// Payload written before the trim: six segments' worth on every replica.
const FILL_BYTES: u64 = 6 * SEGMENT_SIZE_BYTES;
const RECORD_BYTES: u32 = 64 * 1024;

#[test]
fn trim_through_the_sdk_frees_disk_on_the_nodes() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let pm = cluster.pm_address();
    let client = connect(&pm);
    let stream = create_stream(&client, 3, 2);

    // Range 0: FILL_BYTES in 64 KiB records, sealed by close().
    let writer = block_on("open_writer", client.open_writer(stream)).expect("open_writer");
    let calls = FILL_BYTES / u64::from(RECORD_BYTES);
    let pump = Pump::start(
        writer,
        PumpOptions {
            in_flight: 16,
            records_per_call: 1,
            record_bytes: RECORD_BYTES,
            max_calls: Some(calls),
            ..PumpOptions::new(1)
        },
    );
    pump.wait_acknowledged(calls, Duration::from_secs(60));
    let (writer, first_events) = pump.stop();
    let trim_point = block_on("close", writer.close()).expect("close");
    let ranges = cluster.ranges(stream).expect("LIST_RANGES");
    assert_eq!(ranges.len(), 1, "no failover in this test: {ranges:?}");
    assert_eq!(ranges[0].end_offset, Some(trim_point));

    // Range 1: a little more, by a second writer.
    let writer = block_on("open_writer", client.open_writer(stream)).expect("open_writer");
    let pump = Pump::start(
        writer,
        PumpOptions {
            max_calls: Some(20),
            ..PumpOptions::new(2)
        },
    );
    pump.wait_acknowledged(20, PATIENCE);
    let (writer, second_events) = pump.stop();
    block_on("close", writer.close()).expect("close");

    let before: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| {
            wait_for(
                PATIENCE,
                "the WAL gauge shows the filled bytes",
                || match node.wal_bytes_used() {
                    Some(used) if used >= FILL_BYTES => Ok(used),
                    other => Err(format!("es_wal_bytes_used {other:?}")),
                },
            )
        })
        .collect();

    let trimmed = block_on("trim", client.trim(stream, trim_point)).expect("trim");
    assert_eq!(trimmed.start_offset, trim_point);

    // Range 0 goes from every node, and the disk space with it.
    for (index, node) in cluster.nodes.iter().enumerate() {
        let mut raw = RawClient::connect(&node.address);
        wait_for(
            PATIENCE,
            &format!("node {index} deletes range 0 of the trimmed stream"),
            || match raw.try_call::<_, DescribeRangeResponse>(
                &DescribeRangeRequest {
                    stream_id: stream,
                    range_index: RangeIndex(0),
                },
                &[],
            ) {
                Ok(Err(error)) if error.code == ErrorCode::RangeNotFound => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        let limit = (2 * SEGMENT_SIZE_BYTES).min(before[index] / 2);
        wait_for(
            PATIENCE,
            &format!(
                "node {index}'s WAL in use falls from {} below {limit} bytes",
                before[index]
            ),
            || match node.wal_bytes_used() {
                Some(used) if used < limit => {
                    eprintln!("node {index}: WAL in use {} -> {used} bytes", before[index]);
                    Ok(())
                }
                other => Err(format!("es_wal_bytes_used {other:?}")),
            },
        );
        assert!(
            read_replica(&node.address, stream, RangeIndex(0), Offset(0), None).is_err(),
            "node {index} serves nothing of range 0 any more"
        );
    }
    let ranges = cluster.ranges(stream).expect("LIST_RANGES");
    assert!(
        ranges.iter().all(|range| range.index.0 >= 1),
        "the PM dropped range 0: {ranges:?}"
    );

    // Reading below the trim point is refused as trimmed; above it everything is there.
    match read_to_end(&client, stream, Offset(0)) {
        Err(SdkError::Trimmed { start }) => assert_eq!(start, trim_point),
        other => panic!("reading from 0 after the trim: expected Trimmed, got {other:?}"),
    }
    let records = read_to_end(&client, stream, trim_point).expect("read from the trim point");
    let first = writing::session_log(1, &first_events);
    let second = writing::session_log(2, &second_events);
    let summary = verify_stream(&records, &[first, second], trim_point)
        .unwrap_or_else(|error| panic!("after the trim: {error}"));
    assert_eq!(summary.sessions[&2].0, 20, "{summary:?}");
}
