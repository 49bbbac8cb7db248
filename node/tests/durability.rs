//! Durability of the range catalog against the real `data-node` binary: epoch raises and seals
//! are saved before they take effect (faults injected between the WAL and the save, and into
//! the save), the epoch is recovered from the last stored batch, reserved epochs are refused,
//! the catalog group-commits off the workers and keeps every acknowledged change across
//! SIGKILL, and `catalog.max-ranges` bounds the ranges of a node.
//!
//! Faults come from the node's `fault-injection` feature (`node::fault`), armed by files in the
//! directory the harness passes as `ES_NODE_FAULT_DIR`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{is_error, make_batch, set_fault, Client, Node, NodeOptions};
use wire::msg::{CreateRangeRequest, CreateRangeResponse, SealRangeRequest};
use wire::{Epoch, ErrorCode, Offset, RangeIndex, StreamId};

fn temp_data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    (root, data)
}

fn append_ok(client: &mut Client, stream: u64, epoch: u64, base: u64, count: u32) {
    let batch = make_batch(stream, 0, epoch, base, count, 40);
    let result = client.append(stream, 0, epoch, &batch, None);
    assert!(
        result.is_ok(),
        "append {stream}@{epoch} at {base}: {result:?}"
    );
}

fn described_epoch(client: &mut Client, stream: u64) -> u64 {
    client
        .describe(stream, 0)
        .expect("describe")
        .0
        .range
        .epoch
        .0
}

/// Kills the node with SIGKILL and waits for it.
fn sigkill(node: &mut Node) {
    node.signal(libc::SIGKILL);
    node.wait_exit(Duration::from_secs(10)).expect("killed");
}

fn metric(node: &Node, name: &str) -> f64 {
    let text = node.metrics();
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn epoch_raise_survives_a_crash_right_after_its_batch_is_durable() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let mut client = node.client();
    client.create_range(11, 0, 1, 0).unwrap();
    append_ok(&mut client, 11, 1, 0, 2);
    // The writer at epoch 2 takes over; the node dies once its batch is durable, before it
    // answers or saves anything else.
    set_fault(&data, node::fault::ABORT_AFTER_APPEND_DURABLE, true);
    let batch = make_batch(11, 0, 2, 2, 2, 40);
    let request_id = client
        .send(&common::append_request(11, 0, 2, None), &batch)
        .unwrap();
    assert!(client.wait_for(request_id).is_err(), "the node aborted");
    node.wait_exit(Duration::from_secs(10)).expect("aborted");
    set_fault(&data, node::fault::ABORT_AFTER_APPEND_DURABLE, false);

    let node = Node::start(&data);
    let mut client = node.client();
    let stale = client.append(11, 0, 1, &make_batch(11, 0, 1, 4, 1, 40), None);
    assert!(
        is_error(&stale, ErrorCode::StaleEpoch),
        "the old writer must stay fenced after the crash: {stale:?}"
    );
    assert_eq!(stale.unwrap_err().detail, 2);
    assert_eq!(described_epoch(&mut client, 11), 2);
}

#[test]
fn duplicate_append_at_a_higher_epoch_saves_the_raise_before_answering() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let mut client = node.client();
    client.create_range(12, 0, 1, 0).unwrap();
    append_ok(&mut client, 12, 1, 0, 2);
    // The new writer resends offsets 0..2 at epoch 2: already durable here.
    let duplicate = client.append(12, 0, 2, &make_batch(12, 0, 2, 0, 2, 40), None);
    assert!(
        is_error(&duplicate, ErrorCode::OffsetDuplicate),
        "{duplicate:?}"
    );
    sigkill(&mut node);

    let node = Node::start(&data);
    let mut client = node.client();
    let stale = client.append(12, 0, 1, &make_batch(12, 0, 1, 2, 1, 40), None);
    assert!(
        is_error(&stale, ErrorCode::StaleEpoch),
        "a duplicate at epoch 2 fenced epoch 1, and that survives SIGKILL: {stale:?}"
    );
}

#[test]
fn epoch_is_recovered_from_the_last_stored_batch() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    client.create_range(13, 0, 1, 0).unwrap();
    append_ok(&mut client, 13, 1, 0, 2);
    append_ok(&mut client, 13, 3, 2, 2);
    drop(client);
    drop(node);
    // Lose the saved epoch: a data directory of the old layout whose range file still says
    // epoch 1 (what a crash before the old code's epoch save left), with the epoch-3 batch in
    // the WAL.
    let ranges = data.join("ranges");
    std::fs::remove_file(ranges.join("catalog.log")).unwrap();
    let old = node::ranges_file::RangeRecord {
        key: wire::RangeKey::new(StreamId(13), RangeIndex(0)),
        epoch: Epoch(1),
        start: Offset(0),
        end: None,
        confirmed: Offset(0),
        replica_count_target: 0,
        ack_count: 0,
    };
    node::ranges_file::LegacyRangeFiles::open(&data)
        .unwrap()
        .save(&old)
        .unwrap();

    let node = Node::start(&data);
    let mut client = node.client();
    assert_eq!(described_epoch(&mut client, 13), 3);
    let stale = client.append(13, 0, 2, &make_batch(13, 0, 2, 4, 1, 40), None);
    assert!(is_error(&stale, ErrorCode::StaleEpoch), "{stale:?}");
    assert!(
        !ranges.join("13-0.range").exists(),
        "the old range file was migrated into the catalog and removed"
    );
}

#[test]
fn seal_whose_save_fails_is_refused_and_leaves_the_range_open() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let mut client = node.client();
    client.create_range(14, 0, 1, 0).unwrap();
    append_ok(&mut client, 14, 1, 0, 3);
    set_fault(&data, node::fault::CATALOG_SAVE_FAILS, true);
    let sealed = client.seal(14, 0, 2, None);
    assert!(
        is_error(&sealed, ErrorCode::StorageUnavailable),
        "{sealed:?}"
    );
    // An epoch raise whose save fails is refused too, and the epoch stays.
    let raised = client.append(14, 0, 5, &make_batch(14, 0, 5, 3, 1, 40), None);
    assert!(
        is_error(&raised, ErrorCode::StorageUnavailable),
        "{raised:?}"
    );
    set_fault(&data, node::fault::CATALOG_SAVE_FAILS, false);
    let (described, _) = client.describe(14, 0).unwrap();
    assert_eq!(described.range.end_offset, None, "not sealed");
    assert_eq!(described.range.epoch, Epoch(1), "the epoch did not move");
    append_ok(&mut client, 14, 1, 3, 2);
    sigkill(&mut node);

    let node = Node::start(&data);
    let mut client = node.client();
    let (described, _) = client.describe(14, 0).unwrap();
    assert_eq!(described.range.end_offset, None, "not sealed after restart");
    assert_eq!(described.range.epoch, Epoch(1));
    append_ok(&mut client, 14, 1, 5, 1);
    let (sealed, _) = client.seal(14, 0, 2, None).unwrap();
    assert_eq!(sealed.end_offset, Some(Offset(6)));
}

#[test]
fn epoch_u64_max_is_refused_on_append_seal_and_create() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    let created: common::CallResult<CreateRangeResponse> = client
        .call(
            &CreateRangeRequest {
                exclude: Vec::new(),
                stream_id: StreamId(15),
                range_index: RangeIndex(0),
                epoch: Epoch(u64::MAX),
                start_offset: Offset(0),
                replica_count_target: 0,
                ack_count: 0,
                replicas: Vec::new(),
            },
            &[],
        )
        .unwrap();
    assert!(
        is_error(&created, ErrorCode::InvalidArgument),
        "{created:?}"
    );
    client.create_range(15, 0, 1, 0).unwrap();
    let appended = client.append(
        15,
        0,
        u64::MAX,
        &make_batch(15, 0, u64::MAX, 0, 1, 40),
        None,
    );
    assert!(
        is_error(&appended, ErrorCode::InvalidArgument),
        "{appended:?}"
    );
    let sealed: common::CallResult<wire::msg::SealRangeResponse> = client
        .call(
            &SealRangeRequest {
                fence_only: false,
                stream_id: StreamId(15),
                range_index: RangeIndex(0),
                epoch: Epoch(u64::MAX),
                end_offset: None,
            },
            &[],
        )
        .unwrap();
    assert!(is_error(&sealed, ErrorCode::InvalidArgument), "{sealed:?}");
    // Nothing changed: the largest valid epoch is still accepted.
    assert_eq!(described_epoch(&mut client, 15), 1);
    let max = Epoch::MAX.0;
    append_ok(&mut client, 15, max, 0, 1);
    assert_eq!(described_epoch(&mut client, 15), max);
}

#[test]
fn seal_below_the_confirmed_offset_is_refused() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    client.create_range(16, 0, 1, 0).unwrap();
    let batch = make_batch(16, 0, 1, 0, 4, 40);
    client.append(16, 0, 1, &batch, Some(4)).unwrap();
    let sealed = client.seal(16, 0, 1, Some(2));
    assert!(is_error(&sealed, ErrorCode::InvalidArgument), "{sealed:?}");
    assert_eq!(sealed.unwrap_err().detail, 4);
    let (described, _) = client.describe(16, 0).unwrap();
    assert_eq!(described.range.end_offset, None, "nothing was sealed");
    append_ok(&mut client, 16, 1, 4, 1);
    let (sealed, _) = client.seal(16, 0, 1, Some(4)).unwrap();
    assert_eq!(
        sealed.end_offset,
        Some(Offset(4)),
        "at the confirmed offset is fine"
    );
}

#[test]
fn concurrent_creates_and_seals_share_catalog_syncs() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    // Each group waits 20 ms before its write, so what arrives meanwhile joins it.
    set_fault(&data, node::fault::SLOW_CATALOG_SYNC, true);
    let syncs_before = metric(&node, "es_catalog_syncs_total");
    let changes_before = metric(&node, "es_catalog_changes_total");
    let mut client = node.client();
    // 200 creates pipelined on one connection, then 200 seals.
    let ids: Vec<u64> = (0..200u64)
        .map(|stream| {
            let request = CreateRangeRequest {
                exclude: Vec::new(),
                stream_id: StreamId(1000 + stream),
                range_index: RangeIndex(0),
                epoch: Epoch(1),
                start_offset: Offset(0),
                replica_count_target: 0,
                ack_count: 0,
                replicas: Vec::new(),
            };
            client.send(&request, &[]).unwrap()
        })
        .collect();
    for id in ids {
        assert!(!client.wait_for(id).unwrap().is_error());
    }
    let ids: Vec<u64> = (0..200u64)
        .map(|stream| {
            let request = SealRangeRequest {
                fence_only: false,
                stream_id: StreamId(1000 + stream),
                range_index: RangeIndex(0),
                epoch: Epoch(2),
                end_offset: None,
            };
            client.send(&request, &[]).unwrap()
        })
        .collect();
    for id in ids {
        assert!(!client.wait_for(id).unwrap().is_error());
    }
    set_fault(&data, node::fault::SLOW_CATALOG_SYNC, false);
    let syncs = metric(&node, "es_catalog_syncs_total") - syncs_before;
    let changes = metric(&node, "es_catalog_changes_total") - changes_before;
    assert_eq!(changes, 400.0);
    assert!(
        syncs <= 100.0,
        "400 creates and seals took {syncs} fdatasyncs: expected groups of several"
    );
}

#[test]
fn sigkill_loop_keeps_every_acknowledged_create_seal_and_epoch_raise() {
    let (_root, data) = temp_data_dir();
    // What the node acknowledged, by stream (range 0 of each): the highest epoch acknowledged
    // (create, append or seal) and the end of an acknowledged seal.
    let mut epochs: BTreeMap<u64, u64> = BTreeMap::new();
    let mut seals: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_stream = 1u64;
    for round in 0..10u64 {
        let mut node = Node::start(&data);
        // Check the ledger so far.
        let mut client = node.client();
        for (stream, epoch) in &epochs {
            let (described, _) = client
                .describe(*stream, 0)
                .unwrap_or_else(|error| panic!("round {round}: range {stream} lost: {error:?}"));
            assert!(
                described.range.epoch.0 >= *epoch,
                "round {round}: range {stream} at epoch {} below acknowledged {epoch}",
                described.range.epoch
            );
            if let Some(end) = seals.get(stream) {
                assert_eq!(
                    described.range.end_offset,
                    Some(Offset(*end)),
                    "round {round}: seal of {stream} lost"
                );
            }
        }
        drop(client);
        // Four writers create ranges, raise their epochs with appends and seal them, until
        // the node dies under them.
        let address = node.address;
        let writers: Vec<_> = (0..4u64)
            .map(|writer| {
                let first = next_stream + writer * 1000;
                std::thread::spawn(move || {
                    let mut acknowledged = Vec::new();
                    let Ok(mut client) = Client::connect(address) else {
                        return acknowledged;
                    };
                    for stream in first.. {
                        let request = CreateRangeRequest {
                            exclude: Vec::new(),
                            stream_id: StreamId(stream),
                            range_index: RangeIndex(0),
                            epoch: Epoch(1),
                            start_offset: Offset(0),
                            replica_count_target: 0,
                            ack_count: 0,
                            replicas: Vec::new(),
                        };
                        let Ok(id) = client.send(&request, &[]) else {
                            return acknowledged;
                        };
                        match client.wait_for(id) {
                            Ok(frame) if !frame.is_error() => acknowledged.push((stream, 1, None)),
                            _ => return acknowledged,
                        }
                        for epoch in 2..=3u64 {
                            let base = epoch - 2;
                            let request = common::append_request(stream, 0, epoch, None);
                            let batch = make_batch(stream, 0, epoch, base, 1, 16);
                            let Ok(id) = client.send(&request, &batch) else {
                                return acknowledged;
                            };
                            match client.wait_for(id) {
                                Ok(frame) if !frame.is_error() => {
                                    acknowledged.push((stream, epoch, None))
                                }
                                _ => return acknowledged,
                            }
                        }
                        let request = SealRangeRequest {
                            fence_only: false,
                            stream_id: StreamId(stream),
                            range_index: RangeIndex(0),
                            epoch: Epoch(4),
                            end_offset: None,
                        };
                        let Ok(id) = client.send(&request, &[]) else {
                            return acknowledged;
                        };
                        match client.wait_for(id) {
                            Ok(frame) if !frame.is_error() => {
                                acknowledged.push((stream, 4, Some(2)))
                            }
                            _ => return acknowledged,
                        }
                    }
                    acknowledged
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 37 * round));
        sigkill(&mut node);
        let mut total = 0;
        for writer in writers {
            for (stream, epoch, sealed) in writer.join().expect("writer thread") {
                total += 1;
                let known = epochs.entry(stream).or_insert(epoch);
                *known = (*known).max(epoch);
                if let Some(end) = sealed {
                    seals.insert(stream, end);
                }
            }
        }
        assert!(
            total > 0,
            "round {round}: nothing acknowledged before the kill"
        );
        next_stream += 4 * 1000;
    }
    assert!(
        seals.len() > 10,
        "too few seals to prove anything: {}",
        seals.len()
    );
    let node = Node::start(&data);
    let mut client = node.client();
    for (stream, epoch) in &epochs {
        let (described, _) = client.describe(*stream, 0).expect("range kept");
        assert!(described.range.epoch.0 >= *epoch);
        if let Some(end) = seals.get(stream) {
            assert_eq!(described.range.end_offset, Some(Offset(*end)));
        }
    }
}

#[test]
fn create_range_beyond_max_ranges_is_refused_with_storage_full() {
    let (_root, data) = temp_data_dir();
    let options = NodeOptions {
        extra_yaml: "catalog:\n  max-ranges: 3\n".to_string(),
        ..NodeOptions::default()
    };
    let mut node = Node::start_with(&data, &options);
    let mut client = node.client();
    for stream in 0..3 {
        client.create_range(20 + stream, 0, 1, 0).unwrap();
    }
    let refused = client.create_range(23, 0, 1, 0);
    assert!(is_error(&refused, ErrorCode::StorageFull), "{refused:?}");
    let error = refused.unwrap_err();
    assert_eq!(error.detail, 3);
    assert!(
        error.message.contains("catalog.max-ranges"),
        "{}",
        error.message
    );
    // A retry of an existing range is not a new range.
    client.create_range(20, 0, 1, 0).unwrap();
    // Deleting one makes room; the bound holds across a restart.
    client.delete_range(20, 0).unwrap();
    client.create_range(23, 0, 1, 0).unwrap();
    sigkill(&mut node);
    let node = Node::start_with(&data, &options);
    let mut client = node.client();
    assert!(is_error(
        &client.create_range(24, 0, 1, 0),
        ErrorCode::StorageFull
    ));
}
