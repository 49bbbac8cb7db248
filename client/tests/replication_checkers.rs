//! The checkers the replication tests rely on, checked themselves: the verifier rejects every
//! way a stream can be wrong (a lost acknowledged call, a repeat, a gap, a torn call, two writers
//! interleaved, a changed byte), and the raw replica checker counts exactly the replicas of a
//! sealed range that hold everything below its end, over the wire, against real data nodes.
//! A checker that cannot fail would make every replication test pass vacuously.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use bytes::Bytes;
use cluster::{
    call_records, check_sealed_ranges, raw_stream_records, serial, verify_stream, Cluster,
    RawClient, SessionLog,
};
use wire::msg::{
    AppendRequest, AppendResponse, CreateRangeRequest, CreateRangeResponse, CreateStreamRequest,
    CreateStreamResponse, SealRangeRequest, SealRangeResponse, UpdateStreamRequest,
    UpdateStreamResponse,
};
use wire::{BatchBuilder, Epoch, Offset, RangeIndex, StreamId};

/// Lays out `calls` of session `session` (3 records each) from `base`: (offset, record) pairs
/// and the acknowledgements a writer would have seen for the first `acknowledged` of them.
fn written(
    session: u32,
    calls: u64,
    acknowledged: u64,
    base: u64,
) -> (Vec<(Offset, Bytes)>, SessionLog) {
    let mut records = Vec::new();
    let mut log = SessionLog::new(session);
    let mut offset = base;
    for call in 0..calls {
        let start = offset;
        for record in call_records(session, call, 3, 40 + call as u32) {
            records.push((Offset(offset), record));
            offset += 1;
        }
        if call < acknowledged {
            log.acknowledge(call, Offset(start), Offset(offset));
        }
    }
    (records, log)
}

#[test]
fn the_verifier_accepts_what_writers_wrote_and_rejects_every_kind_of_damage() {
    // One writer, all acknowledged; then with unacknowledged calls present (a crash).
    let (records, log) = written(1, 10, 10, 0);
    verify_stream(&records, std::slice::from_ref(&log), Offset(0)).expect("a whole stream");
    let (records, log) = written(1, 10, 6, 0);
    let summary = verify_stream(&records, std::slice::from_ref(&log), Offset(0))
        .expect("unacknowledged calls may be present, whole and in order");
    assert_eq!(summary.sessions[&1].0, 10);

    // Two writers one after the other, the first with some calls unacknowledged.
    let (mut first, first_log) = written(1, 8, 5, 0);
    first.truncate(6 * 3); // calls 6 and 7 never made it
    let (second, second_log) = written(2, 4, 4, 18);
    let both: Vec<_> = first.iter().chain(second.iter()).cloned().collect();
    verify_stream(&both, &[first_log.clone(), second_log.clone()], Offset(0))
        .expect("a new writer after a dead one");

    // An acknowledged call lost at the end of the first session.
    let short: Vec<_> = first[..4 * 3]
        .iter()
        .cloned()
        .chain(written(2, 4, 4, 12).0)
        .collect();
    let error = verify_stream(
        &short,
        &[first_log.clone(), written(2, 4, 4, 12).1],
        Offset(0),
    )
    .expect_err("a lost acknowledged call");
    assert!(error.contains("acknowledged data lost"), "{error}");

    // Interleaving: a call of the first writer after the second writer began.
    let mut interleaved = both.clone();
    let moved: Vec<_> = interleaved.drain(15..18).collect();
    interleaved.extend(moved);
    let renumbered: Vec<_> = interleaved
        .into_iter()
        .enumerate()
        .map(|(offset, (_, record))| (Offset(offset as u64), record))
        .collect();
    assert!(verify_stream(
        &renumbered,
        &[first_log.clone(), second_log.clone()],
        Offset(0)
    )
    .is_err());

    let (records, log) = written(1, 10, 10, 0);
    let logs = std::slice::from_ref(&log);
    // A repeated call (same offsets shifted: the offsets stay dense, the call repeats).
    let mut repeated = records[..9].to_vec();
    repeated.extend(records[6..].iter().cloned());
    let repeated: Vec<_> = repeated
        .into_iter()
        .enumerate()
        .map(|(offset, (_, record))| (Offset(offset as u64), record))
        .collect();
    assert!(
        verify_stream(&repeated, logs, Offset(0)).is_err(),
        "a repeated call"
    );
    // A gap in the offsets.
    let mut gap = records.clone();
    gap.remove(4);
    assert!(verify_stream(&gap, logs, Offset(0)).is_err(), "a gap");
    // A torn call: the last record of the last call missing.
    let torn = records[..records.len() - 1].to_vec();
    assert!(
        verify_stream(&torn, logs, Offset(0)).is_err(),
        "a torn call"
    );
    // A changed byte.
    let mut corrupt = records.clone();
    let mut bytes = corrupt[7].1.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    corrupt[7].1 = Bytes::from(bytes);
    let error = verify_stream(&corrupt, logs, Offset(0)).expect_err("a changed byte");
    assert!(error.contains("does not hold the bytes written"), "{error}");
    // An acknowledged call at another offset than acknowledged.
    let mut wrong = log.clone();
    wrong.acknowledge(2, Offset(7), Offset(10));
    assert!(verify_stream(&records, &[wrong], Offset(0)).is_err());
    // Acknowledged calls that are not a prefix (call 3 acknowledged, call 2 not).
    let mut holes = SessionLog::new(1);
    holes.acknowledge(0, Offset(0), Offset(3));
    holes.acknowledge(3, Offset(9), Offset(12));
    assert!(verify_stream(&records, &[holes], Offset(0)).is_err());
    // A trimmed stream read from the middle of a call.
    verify_stream(&records[10..], logs, Offset(10)).expect("read from a trim point");
}

/// A batch of `calls` calls of session 1 (3 records each) as a writer with `epoch` would send it
/// to range `index` at `base`.
fn raw_batch(stream: StreamId, index: u32, epoch: u64, base: u64, call: u64) -> Bytes {
    let mut builder = BatchBuilder::new(stream, RangeIndex(index), Epoch(epoch), Offset(base));
    for record in call_records(1, call, 3, 100) {
        builder.push_record(&record).expect("fits");
    }
    builder.finish().expect("builds")
}

#[test]
fn the_raw_checker_counts_the_replicas_that_hold_a_sealed_range() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    let mut pm = cluster.pm.client();
    let stream = pm
        .try_call::<_, CreateStreamResponse>(
            &CreateStreamRequest {
                replica_count: 3,
                ack_count: 2,
                retention_ms: 0,
                retention_bytes: 0,
            },
            &[],
        )
        .expect("CREATE_STREAM sent")
        .expect("CREATE_STREAM")
        .0
        .stream
        .id;
    pm.try_call::<_, UpdateStreamResponse>(
        &UpdateStreamRequest {
            stream_id: stream,
            replica_count: None,
            ack_count: None,
            retention_ms: None,
            retention_bytes: None,
            epoch: Some(Epoch(1)),
        },
        &[],
    )
    .expect("UPDATE_STREAM sent")
    .expect("UPDATE_STREAM epoch 1");
    let range = pm
        .try_call::<_, CreateRangeResponse>(
            &CreateRangeRequest {
                exclude: Vec::new(),
                stream_id: stream,
                range_index: RangeIndex(0),
                epoch: Epoch(1),
                start_offset: Offset(0),
                replica_count_target: 0,
                ack_count: 0,
                replicas: Vec::new(),
            },
            &[],
        )
        .expect("CREATE_RANGE sent")
        .expect("CREATE_RANGE")
        .0
        .range;
    assert_eq!(range.replicas.len(), 3);

    // Two replicas get calls 0..10, the third only 0..4, as if it had died early; every replica
    // gets the same bytes (a batch carries the writer's clock).
    let batches: Vec<Bytes> = (0..10)
        .map(|call| raw_batch(stream, 0, 1, call * 3, call))
        .collect();
    let mut full = Vec::new();
    for (position, replica) in range.replicas.iter().enumerate() {
        let calls = if position == 2 { 4 } else { 10 };
        let mut node = RawClient::connect(&replica.address);
        for call in 0..calls {
            let base = call * 3;
            node.try_call::<_, AppendResponse>(
                &AppendRequest {
                    repair: false,
                    stream_id: stream,
                    range_index: RangeIndex(0),
                    epoch: Epoch(1),
                    confirmed_offset: Some(Offset(base)),
                },
                &batches[call as usize],
            )
            .expect("APPEND sent")
            .expect("APPEND");
        }
        if position != 2 {
            node.try_call::<_, SealRangeResponse>(
                &SealRangeRequest {
                    fence_only: false,
                    stream_id: stream,
                    range_index: RangeIndex(0),
                    epoch: Epoch(1),
                    end_offset: Some(Offset(30)),
                },
                &[],
            )
            .expect("SEAL_RANGE sent")
            .expect("SEAL_RANGE on a full replica");
            full.push(replica.node_id);
        }
    }
    pm.try_call::<_, SealRangeResponse>(
        &SealRangeRequest {
            fence_only: false,
            stream_id: stream,
            range_index: RangeIndex(0),
            epoch: Epoch(1),
            end_offset: Some(Offset(30)),
        },
        &[],
    )
    .expect("SEAL_RANGE sent")
    .expect("SEAL_RANGE at the PM");

    let checks =
        check_sealed_ranges(&cluster.pm.address, stream).expect("two replicas of three hold it");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].holders, full, "{:?}", checks[0].replicas);
    let records = raw_stream_records(&cluster.pm.address, stream, Offset(0)).expect("read raw");
    let mut log = SessionLog::new(1);
    for call in 0..10 {
        log.acknowledge(call, Offset(call * 3), Offset(call * 3 + 3));
    }
    verify_stream(&records, std::slice::from_ref(&log), Offset(0)).expect("every call read back");

    // One of the two full replicas dies: one holder is below A = 2, and the checker says so.
    let dead = cluster.index_of(full[0]);
    cluster.nodes[dead].kill();
    let error = check_sealed_ranges(&cluster.pm.address, stream).expect_err("one holder of A = 2");
    assert!(error.contains("only 1 replica"), "{error}");
}
