//! The SDK against the real binaries: a placement manager and data nodes on loopback.
//! Writes, reads back across ranges, close() seals, a second writer recovers and continues,
//! trim through the SDK.

#[path = "support/sdk_cluster.rs"]
mod sdk_cluster;
mod support;

use bytes::Bytes;
use client::{block_on, ReadMode, SdkError, StreamOptions};
use sdk_cluster::SdkCluster;
use wire::Offset;

fn record(stream_offset: u64) -> Bytes {
    Bytes::from(format!("record-{stream_offset:06}"))
}

/// Reads the whole stream from `from` with a `ToEnd` reader: every record with its offset.
fn read_to_end(client: &client::Client, stream: wire::StreamId, from: u64) -> Vec<(u64, Bytes)> {
    block_on(async {
        let mut reader = client
            .open_reader(stream, Offset(from), ReadMode::ToEnd)
            .await
            .expect("open reader");
        let mut records = Vec::new();
        while let Some(batch) = reader.next().await.expect("read") {
            for (index, record) in batch.records.into_iter().enumerate() {
                records.push((batch.base_offset.0 + index as u64, record));
            }
        }
        records
    })
}

fn write_records(writer: &client::Writer, from: u64, count: u64, per_batch: u64) -> u64 {
    block_on(async {
        let mut futures = Vec::new();
        let mut offset = from;
        while offset < from + count {
            let records: Vec<Bytes> = (offset..(offset + per_batch).min(from + count))
                .map(record)
                .collect();
            let expected = offset;
            offset += records.len() as u64;
            futures.push((expected, writer.append(records)));
        }
        for (expected, future) in futures {
            let ack = future.await.expect("append acknowledged");
            assert_eq!(ack.base_offset, Offset(expected), "offsets in call order");
        }
        offset
    })
}

fn check_records(records: &[(u64, Bytes)], from: u64, to: u64) {
    assert_eq!(records.len() as u64, to - from, "every record once");
    for (offset, payload) in records {
        assert_eq!(payload, &record(*offset), "record at {offset}");
    }
    let offsets: Vec<u64> = records.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, (from..to).collect::<Vec<_>>(), "in order");
}

#[test]
fn single_node_write_close_reopen_and_read_back() {
    let cluster = SdkCluster::start(1);
    let client = cluster.client();
    let stream = block_on(client.create_stream(StreamOptions {
        replica_count: 1,
        ack_count: 1,
        ..StreamOptions::default()
    }))
    .expect("create stream");

    let writer = block_on(client.open_writer(stream.id)).expect("open writer");
    assert_eq!(writer.epoch().0, 1);
    let end = write_records(&writer, 0, 100, 7);
    block_on(writer.flush()).expect("flush");
    let closed = block_on(writer.close()).expect("close seals");
    assert_eq!(closed, Offset(end));

    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    assert_eq!(ranges.len(), 1);
    assert_eq!(
        ranges[0].end_offset,
        Some(Offset(100)),
        "close sealed range 0"
    );

    // A second writer continues in range 1 at the end.
    let writer = block_on(client.open_writer(stream.id)).expect("reopen");
    assert_eq!(writer.epoch().0, 2);
    assert_eq!(writer.next_offset(), Offset(100));
    let end = write_records(&writer, 100, 50, 5);
    // Dropped without close: the next writer recovers the open range.
    drop(writer);
    let writer = block_on(client.open_writer(stream.id)).expect("recovering writer");
    assert_eq!(
        writer.next_offset(),
        Offset(end),
        "nothing acknowledged is lost"
    );
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    assert_eq!(ranges.len(), 3);
    assert_eq!(ranges[1].end_offset, Some(Offset(150)));
    assert_eq!(ranges[2].end_offset, None);
    let end = write_records(&writer, end, 10, 3);
    block_on(writer.close()).expect("close");

    check_records(&read_to_end(&client, stream.id, 0), 0, end);
    // From the middle of a batch.
    check_records(&read_to_end(&client, stream.id, 101), 101, end);
}

#[test]
fn three_nodes_replicated_write_and_read_across_ranges() {
    let cluster = SdkCluster::start(3);
    let client = cluster.client();
    let stream = block_on(client.create_stream(StreamOptions {
        replica_count: 3,
        ack_count: 2,
        ..StreamOptions::default()
    }))
    .expect("create stream");
    let mut end = 0;
    for _ in 0..3 {
        let writer = block_on(client.open_writer(stream.id)).expect("open writer");
        end = write_records(&writer, end, 200, 10);
        assert_eq!(block_on(writer.close()).expect("close"), Offset(end));
    }
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    assert_eq!(ranges.len(), 3);
    for range in &ranges {
        assert_eq!(range.replicas.len(), 3, "{range:?}");
        assert_eq!((range.replica_count_target, range.ack_count), (3, 2));
        assert!(range.is_sealed());
    }
    check_records(&read_to_end(&client, stream.id, 0), 0, end);
}

#[test]
fn a_second_writer_fences_the_first() {
    let cluster = SdkCluster::start(1);
    let client = cluster.client();
    let stream = block_on(client.create_stream(StreamOptions {
        replica_count: 1,
        ack_count: 1,
        ..StreamOptions::default()
    }))
    .expect("create stream");
    let first = block_on(client.open_writer(stream.id)).expect("first writer");
    let end = write_records(&first, 0, 20, 4);
    let second = block_on(client.open_writer(stream.id)).expect("second writer");
    assert_eq!(second.next_offset(), Offset(end));
    let refused = block_on(first.append(vec![Bytes::from("late")]));
    assert!(
        matches!(refused, Err(SdkError::Fenced { .. })),
        "{refused:?}"
    );
    // And every later call fails the same way.
    assert!(matches!(
        block_on(first.append(vec![Bytes::from("later")])),
        Err(SdkError::Fenced { .. })
    ));
    let end = write_records(&second, end, 10, 2);
    block_on(second.close()).expect("close");
    check_records(&read_to_end(&client, stream.id, 0), 0, end);
}

#[test]
fn trim_through_the_sdk() {
    let cluster = SdkCluster::start(1);
    let client = cluster.client();
    let stream = block_on(client.create_stream(StreamOptions {
        replica_count: 1,
        ack_count: 1,
        ..StreamOptions::default()
    }))
    .expect("create stream");
    let writer = block_on(client.open_writer(stream.id)).expect("writer");
    let end = write_records(&writer, 0, 30, 10);
    block_on(writer.close()).expect("close");
    let writer = block_on(client.open_writer(stream.id)).expect("writer");
    let end = write_records(&writer, end, 30, 10);
    block_on(writer.close()).expect("close");

    let trimmed = block_on(client.trim(stream.id, Offset(35))).expect("trim");
    assert_eq!(trimmed.start_offset, Offset(35));
    // Range 0 ended at 30, below the trim point: gone.
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    assert_eq!(
        ranges.first().map(|range| range.index.0),
        Some(1),
        "{ranges:?}"
    );
    let refused = block_on(client.open_reader(stream.id, Offset(0), ReadMode::ToEnd));
    assert!(
        matches!(refused, Err(SdkError::Trimmed { start }) if start >= Offset(30)),
        "{:?}",
        refused.err()
    );
    check_records(&read_to_end(&client, stream.id, 35), 35, end);

    block_on(client.delete(stream.id)).expect("delete");
    let described = block_on(client.describe_stream(stream.id));
    assert!(
        matches!(&described, Ok(record) if record.deleted)
            || matches!(described, Err(SdkError::StreamNotFound { .. })),
    );
    assert!(matches!(
        block_on(client.open_writer(stream.id)),
        Err(SdkError::StreamDeleted { .. } | SdkError::StreamNotFound { .. })
    ));
}

#[test]
fn a_killed_replica_is_sealed_around_and_writing_goes_on() {
    let mut cluster = SdkCluster::start(4);
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut config = cluster.config();
    let recorded = std::sync::Arc::clone(&steps);
    config.seal_hook = Some(std::sync::Arc::new(move |step| {
        recorded.lock().unwrap().push(step)
    }));
    let client = client::Client::connect(config).expect("connect");
    let stream = block_on(client.create_stream(StreamOptions {
        replica_count: 3,
        ack_count: 2,
        ..StreamOptions::default()
    }))
    .expect("create stream");
    let writer = block_on(client.open_writer(stream.id)).expect("writer");
    let end = write_records(&writer, 0, 100, 5);
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    let victim = ranges[0].replicas[1].address.clone();
    let position = cluster
        .nodes
        .iter()
        .position(|node| node.address == victim)
        .expect("replica is one of the nodes");
    // Pipelined appends in flight while the node dies.
    let futures: Vec<_> = (end..end + 40)
        .map(|offset| writer.append(vec![record(offset)]))
        .collect();
    drop(cluster.nodes.remove(position));
    let end = block_on(async {
        let mut next = end;
        for future in futures {
            let ack = future.await.expect("acknowledged despite the kill");
            assert_eq!(ack.base_offset, Offset(next));
            next = ack.next_offset.0;
        }
        next
    });
    let end = write_records(&writer, end, 60, 6);
    assert_eq!(
        steps.lock().unwrap().as_slice(),
        [
            client::SealStep::Fenced,
            client::SealStep::Repaired,
            client::SealStep::Committed
        ],
        "one seal, every step reported"
    );
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(ranges[0].is_sealed());
    assert!(
        ranges[1]
            .replicas
            .iter()
            .all(|replica| replica.address != victim),
        "the new range avoids the dead node: {ranges:?}"
    );
    assert_eq!(block_on(writer.close()).expect("close"), Offset(end));
    check_records(&read_to_end(&client, stream.id, 0), 0, end);
}

/// A replica sealed by hand (the shell can) at an end below the writer's acknowledged prefix
/// is not taken as the range's end: the placement manager never recorded it, so the writer
/// seals the range at its acknowledged prefix on the other replicas, commits that at the PM
/// and goes on; nothing acknowledged is cut.
#[test]
fn a_replica_sealed_by_hand_below_the_acknowledged_prefix_does_not_cut_the_range() {
    use client::command::RequestCommand;
    use client::session::{Reply, Session};

    let cluster = SdkCluster::start(3);
    let mut config = cluster.config();
    // No idle confirm-only reports: each replica's confirmed offset stays at the start of
    // the last batch, so the replica can be sealed there by hand.
    config.confirm_interval = std::time::Duration::from_secs(3600);
    let client = client::Client::connect(config).expect("connect");
    let stream = block_on(client.create_stream(StreamOptions {
        replica_count: 3,
        ack_count: 2,
        ..StreamOptions::default()
    }))
    .expect("create stream");
    let writer = block_on(client.open_writer(stream.id)).expect("writer");
    let mut end = 0;
    for _ in 0..10 {
        end = write_records(&writer, end, 2, 2);
    }
    let acknowledged = end;
    let below = acknowledged - 2;
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    let victim = ranges[0].replicas[0].address.clone();
    let mut session = Session::connect(&victim).expect("shell session to the replica");
    let outcome = session
        .execute(&RequestCommand::Seal {
            stream_id: stream.id,
            range_index: ranges[0].index,
            epoch: writer.epoch(),
            end_offset: Some(Offset(below)),
        })
        .expect("seal by hand");
    assert!(
        matches!(outcome.reply, Reply::Sealed { end_offset: Some(sealed), .. } if sealed == Offset(below)),
        "the replica takes the seal at {below}: {:?}",
        outcome.reply
    );
    // The next append meets the sealed replica: the writer seals the range and moves on.
    let end = write_records(&writer, end, 10, 2);
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    assert!(ranges.len() >= 2, "{ranges:?}");
    assert_eq!(
        ranges[0].end_offset,
        Some(Offset(acknowledged)),
        "the range ends at the acknowledged prefix, not at the hand-made seal"
    );
    assert_eq!(block_on(writer.close()).expect("close"), Offset(end));
    check_records(&read_to_end(&client, stream.id, 0), 0, end);
}

/// Every range of a stream trimmed away: a new writer still finds the next range index (the
/// placement manager names it) and writes on from the stream's end.
#[test]
fn a_writer_opens_a_stream_whose_ranges_were_all_trimmed_away() {
    let cluster = SdkCluster::start(1);
    let client = cluster.client();
    let stream = block_on(client.create_stream(StreamOptions {
        replica_count: 1,
        ack_count: 1,
        ..StreamOptions::default()
    }))
    .expect("create stream");
    let writer = block_on(client.open_writer(stream.id)).expect("writer");
    let end = write_records(&writer, 0, 20, 5);
    assert_eq!(block_on(writer.close()).expect("close"), Offset(end));
    block_on(client.trim(stream.id, Offset(end))).expect("trim");
    assert!(block_on(client.ranges(stream.id))
        .expect("ranges")
        .is_empty());

    let writer = block_on(client.open_writer(stream.id)).expect("writer after trimming all");
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_eq!(ranges[0].index.0, 1, "the index after the trimmed range");
    assert_eq!(ranges[0].start_offset, Offset(end));
    let next = write_records(&writer, end, 10, 5);
    assert_eq!(block_on(writer.close()).expect("close"), Offset(next));
    check_records(&read_to_end(&client, stream.id, end), end, next);
}

/// A replica that stops answering while the others keep acknowledging collects requests on
/// its lane; past the lane's bound (sent or waiting for a slot) the writer fails it over long
/// before `replica_timeout`, instead of queueing without bound.
#[test]
fn a_replica_far_behind_is_failed_over_once_its_lane_is_full() {
    let cluster = SdkCluster::start(3);
    let mut config = cluster.config();
    config.replica_timeout = std::time::Duration::from_secs(60);
    config.max_in_flight_batches = 2;
    let client = client::Client::connect(config).expect("connect");
    let stream = block_on(client.create_stream(StreamOptions {
        replica_count: 3,
        ack_count: 2,
        ..StreamOptions::default()
    }))
    .expect("create stream");
    let writer = block_on(client.open_writer(stream.id)).expect("writer");
    let end = write_records(&writer, 0, 10, 1);
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    let victim = ranges[0].replicas[2].address.clone();
    let node = cluster
        .nodes
        .iter()
        .find(|node| node.address == victim)
        .expect("replica is one of the nodes");
    let pid = i32::try_from(node.pid()).expect("pid");
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let started = std::time::Instant::now();
    // The lane's bound is 2 x (2 + 64) requests: 400 one-batch appends overflow it.
    let end = write_records(&writer, end, 400, 1);
    let elapsed = started.elapsed();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert!(
        elapsed < std::time::Duration::from_secs(30),
        "failed over after {elapsed:?}, not at replica_timeout"
    );
    let ranges = block_on(client.ranges(stream.id)).expect("ranges");
    assert!(
        ranges.len() >= 2,
        "the lagging replica was sealed around: {ranges:?}"
    );
    assert!(ranges[1]
        .replicas
        .iter()
        .all(|replica| replica.address != victim));
    assert_eq!(block_on(writer.close()).expect("close"), Offset(end));
    check_records(&read_to_end(&client, stream.id, 0), 0, end);
}
