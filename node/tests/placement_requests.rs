//! End-to-end tests of the requests the placement manager sends a data node besides APPEND and
//! FETCH traffic: CREATE_RANGE retried with the same parameters, TRIM_RANGE and DELETE_RANGE,
//! against the real `data-node` binary, including across a SIGKILL restart.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{is_error, make_batch, split_batches, Client, Node};
use wire::ErrorCode;

fn temp_data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    (root, data)
}

/// Appends `count` confirmed batches of 3 records at offsets 0, 3, 6, ... to range 0 of
/// `stream` (which must exist, epoch 1) and returns them.
fn append_batches(client: &mut Client, stream: u64, count: u64) -> Vec<Bytes> {
    (0..count)
        .map(|number| {
            let base = number * 3;
            let batch = make_batch(stream, 0, 1, base, 3, 50);
            client
                .append(stream, 0, 1, &batch, Some(base + 3))
                .expect("append acknowledged");
            batch
        })
        .collect()
}

fn kill_and_restart(node: &mut Node, data: &std::path::Path) -> Node {
    node.signal(libc::SIGKILL);
    node.wait_exit(Duration::from_secs(10)).expect("killed");
    Node::start(data)
}

#[test]
fn create_range_twice_with_identical_parameters_returns_the_same_range() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let mut client = node.client();
    let (created, _) = client.create_range_with(41, 0, 1, 0, 3, 2).unwrap();
    assert_eq!(
        (created.range.replica_count_target, created.range.ack_count),
        (3, 2)
    );
    assert_eq!(created.range.size_bytes, Some(0));
    let batches = append_batches(&mut client, 41, 2);

    // A retry after a lost answer: success, and the range as it is now (not reset).
    let (again, _) = client.create_range_with(41, 0, 1, 0, 3, 2).unwrap();
    let (described, _) = client.describe(41, 0).unwrap();
    assert_eq!(again.range, described.range);
    assert_eq!(again.range.next_offset.map(|offset| offset.0), Some(6));
    let stored: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
    assert_eq!(again.range.size_bytes, Some(stored));

    // Any other parameter is a different range.
    for (epoch, start, replica_count_target, ack_count) in
        [(2, 0, 3, 2), (1, 5, 3, 2), (1, 0, 2, 2), (1, 0, 3, 1)]
    {
        let other = client.create_range_with(41, 0, epoch, start, replica_count_target, ack_count);
        assert!(
            is_error(&other, ErrorCode::RangeAlreadyExists),
            "epoch {epoch} start {start} R {replica_count_target} A {ack_count}: {other:?}"
        );
    }
    let invalid = client.create_range_with(42, 0, 1, 0, 2, 3);
    assert!(
        is_error(&invalid, ErrorCode::InvalidArgument),
        "A above R: {invalid:?}"
    );

    // R and A are persisted with the range, so the retry still matches after a restart.
    let node = kill_and_restart(&mut node, &data);
    let mut client = node.client();
    let (after, _) = client.describe(41, 0).unwrap();
    assert_eq!(
        (after.range.replica_count_target, after.range.ack_count),
        (3, 2)
    );
    assert_eq!(after.range.size_bytes, Some(stored));
    client.create_range_with(41, 0, 1, 0, 3, 2).unwrap();
}

#[test]
fn trim_range_refuses_fetches_below_the_new_start_and_survives_a_restart() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let mut client = node.client();
    client.create_range(43, 0, 1, 0).unwrap();
    let batches = append_batches(&mut client, 43, 5);
    let size_before = client.describe(43, 0).unwrap().0.range.size_bytes.unwrap();

    client.trim_range(43, 0, 7).unwrap();
    let (described, _) = client.describe(43, 0).unwrap();
    assert_eq!(described.range.start_offset.0, 7);
    assert_eq!(
        described.range.size_bytes,
        Some(size_before - batches[0].len() as u64 - batches[1].len() as u64),
        "the two batches wholly below 7 are dropped, the one holding 7 stays"
    );
    let below = client.fetch(43, 0, 6, 64 * 1024, 0);
    assert!(is_error(&below, ErrorCode::OffsetOutOfRange), "{below:?}");
    assert_eq!(below.unwrap_err().detail, 7, "detail = the range start");
    let (_, payload) = client.fetch(43, 0, 7, 64 * 1024, 0).unwrap();
    let fetched: Vec<Bytes> = split_batches(&payload)
        .into_iter()
        .map(|(_, _, bytes)| bytes)
        .collect();
    assert_eq!(
        fetched,
        batches[2..],
        "from the batch holding the new start"
    );

    // Idempotent: the same or a lower offset succeeds and changes nothing.
    client.trim_range(43, 0, 7).unwrap();
    client.trim_range(43, 0, 2).unwrap();
    assert_eq!(client.describe(43, 0).unwrap().0.range.start_offset.0, 7);
    // A replica cannot drop what it does not hold.
    let beyond = client.trim_range(43, 0, 16);
    assert!(is_error(&beyond, ErrorCode::OffsetOutOfRange), "{beyond:?}");
    assert_eq!(beyond.unwrap_err().detail, 15);
    let missing = client.trim_range(44, 0, 1);
    assert!(is_error(&missing, ErrorCode::RangeNotFound), "{missing:?}");

    // Appends go on at the range's next offset.
    let next = make_batch(43, 0, 1, 15, 3, 50);
    client.append(43, 0, 1, &next, Some(18)).unwrap();

    let node = kill_and_restart(&mut node, &data);
    let mut client = node.client();
    assert_eq!(client.describe(43, 0).unwrap().0.range.start_offset.0, 7);
    let below = client.fetch(43, 0, 6, 64 * 1024, 0);
    assert!(is_error(&below, ErrorCode::OffsetOutOfRange), "{below:?}");
}

#[test]
fn delete_range_is_idempotent_and_the_range_stays_gone_after_a_restart() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let mut client = node.client();
    client.create_range(45, 0, 1, 0).unwrap();
    append_batches(&mut client, 45, 3);
    client.create_range(46, 0, 1, 0).unwrap();

    client.delete_range(45, 0).unwrap();
    let described = client.describe(45, 0);
    assert!(
        is_error(&described, ErrorCode::RangeNotFound),
        "{described:?}"
    );
    let fetched = client.fetch(45, 0, 0, 1024, 0);
    assert!(is_error(&fetched, ErrorCode::RangeNotFound), "{fetched:?}");
    // Again, and a range that never existed: both succeed so the placement manager can retry.
    client.delete_range(45, 0).unwrap();
    client.delete_range(47, 3).unwrap();

    let node = kill_and_restart(&mut node, &data);
    let mut client = node.client();
    let described = client.describe(45, 0);
    assert!(
        is_error(&described, ErrorCode::RangeNotFound),
        "{described:?}"
    );
    let (listed, _) = client.list_ranges(None).unwrap();
    let keys: Vec<(u64, u32)> = listed
        .ranges
        .iter()
        .map(|range| (range.stream_id.0, range.index.0))
        .collect();
    assert_eq!(keys, [(46, 0)], "only the range not deleted");

    // The data went with it: the range created again starts empty and takes offset 0.
    let (recreated, _) = client.create_range(45, 0, 1, 0).unwrap();
    assert_eq!(recreated.range.next_offset.map(|offset| offset.0), Some(0));
    assert_eq!(recreated.range.size_bytes, Some(0));
    let batch = make_batch(45, 0, 1, 0, 3, 50);
    let appended = client.append(45, 0, 1, &batch, Some(3));
    assert!(appended.is_ok(), "{appended:?}");
}
