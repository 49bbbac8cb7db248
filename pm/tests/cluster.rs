//! A real cluster on loopback: one `pm` daemon and three `data-node` processes that register
//! with it and heartbeat every 300 ms (the PM counts a node dead after 1.5 s of silence and runs
//! maintenance every 500 ms). Each test checks what a user of the cluster relies on: ranges land
//! on distinct live nodes and really exist there, a dead node gets nothing new, too few live
//! nodes is a retriable refusal, a trim or delete frees the data nodes' disk, and a replica the
//! PM never committed does not stay behind.
//!
//! The tests start clusters one at a time ([`support::serial`]): on a two-core machine several
//! at once starve the heartbeats. Needs the `data-node` binary built (see `support`).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{batch, replica_ids, serial, wait_for, Cluster, NODE_TIMEOUT_MS, SEGMENT_SIZE_BYTES};
use wire::{ErrorCode, NodeState, StreamId};

/// How long the PM may take beyond its node timeout to call a killed node dead.
const LIVENESS_SLACK: Duration = Duration::from_secs(5);
/// How long maintenance or a spawned delete may take to reach every node.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn data_nodes_register_heartbeat_and_hold_the_replicas_placed_on_them() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let mut pm = cluster.pm.client();

    let listed = pm.describe_cluster();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let addresses: BTreeSet<&str> = listed.iter().map(|node| node.address.as_str()).collect();
    let started: BTreeSet<&str> = cluster.nodes.iter().map(|n| n.address.as_str()).collect();
    assert_eq!(
        addresses, started,
        "each node registers with its own address"
    );
    let ids: BTreeSet<_> = listed.iter().map(|node| node.node_id).collect();
    assert_eq!(ids.len(), 3, "each node gets an id of its own: {listed:?}");
    for node in &listed {
        assert!(node.alive, "{node:?}");
        assert_eq!(node.state, NodeState::ReadWrite, "{node:?}");
        assert!(
            node.disk_total_bytes > 0,
            "heartbeats report the disk: {node:?}"
        );
    }

    // Heartbeats keep coming, not only the first: every node's heartbeat age drops again.
    let first_ages: Vec<u64> = listed.iter().map(|n| n.last_heartbeat_age_ms).collect();
    let mut renewed = [false; 3];
    let mut previous = first_ages.clone();
    wait_for(
        Duration::from_millis(NODE_TIMEOUT_MS) + LIVENESS_SLACK,
        "every node heartbeats again",
        || {
            let now = pm.describe_cluster();
            for (slot, node) in now.iter().enumerate() {
                if node.last_heartbeat_age_ms < previous[slot] {
                    renewed[slot] = true;
                }
                previous[slot] = node.last_heartbeat_age_ms;
            }
            if renewed.iter().all(|renewed| *renewed) {
                Ok(())
            } else {
                Err(format!(
                    "renewed {renewed:?}, ages first {first_ages:?} now {previous:?}"
                ))
            }
        },
    );

    let stream = pm.create_stream(3, 2);
    let updated = pm
        .raise_epoch(stream.id, 1)
        .expect("UPDATE_STREAM epoch 1")
        .0;
    assert_eq!(updated.stream.epoch.0, 1);
    let range = pm
        .create_range(stream.id, 0, 1, 0)
        .expect("CREATE_RANGE at the PM with 3 live nodes")
        .0
        .range;
    let replicas: BTreeSet<_> = replica_ids(&range).into_iter().collect();
    assert_eq!(range.replicas.len(), 3, "{range:?}");
    assert_eq!(
        replicas, ids,
        "three replicas on three distinct nodes: {range:?}"
    );
    assert!(!range.under_replicated, "{range:?}");
    assert_eq!(
        (range.replica_count_target, range.ack_count, range.epoch.0),
        (3, 2, 1)
    );
    for replica in &range.replicas {
        let index = cluster.index_of(replica.node_id);
        assert_eq!(replica.address, cluster.nodes[index].address, "{range:?}");
        let held = cluster.nodes[index]
            .client()
            .describe_range(stream.id, 0)
            .unwrap_or_else(|error| panic!("node {} lacks its replica: {error}", replica.node_id))
            .0
            .range;
        assert_eq!(
            (
                held.epoch.0,
                held.start_offset.0,
                held.replica_count_target,
                held.ack_count
            ),
            (1, 0, 3, 2),
            "the replica carries the range's epoch, start, R and A: {held:?}"
        );
    }
    let described = pm.describe_range(stream.id, 0).expect("DESCRIBE_RANGE").0;
    assert_eq!(described.range.replicas, range.replicas);
}

#[test]
fn a_dead_node_gets_no_new_ranges_and_too_few_live_nodes_is_no_available_nodes() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    let mut pm = cluster.pm.client();
    let stream = pm.create_stream(3, 2);
    pm.raise_epoch(stream.id, 1).expect("UPDATE_STREAM epoch 1");
    let first = pm
        .create_range(stream.id, 0, 1, 0)
        .expect("CREATE_RANGE 0")
        .0;
    assert_eq!(first.range.replicas.len(), 3);

    let dead = cluster.node_id(2);
    cluster.nodes[2].process.kill();
    let killed_at = Instant::now();
    wait_until_dead(&mut pm, dead);
    let noticed_ms = killed_at.elapsed().as_millis();
    for index in 0..2 {
        let id = cluster.node_id(index);
        let node = pm
            .describe_cluster()
            .into_iter()
            .find(|node| node.node_id == id)
            .expect("still listed");
        assert!(node.alive, "node {id} still heartbeats: {node:?}");
    }
    eprintln!("the PM saw node {dead} dead {noticed_ms} ms after SIGKILL");

    let sealed = pm
        .seal_range(stream.id, 0, 1, Some(0))
        .expect("SEAL_RANGE 0 at the PM");
    assert_eq!(sealed.0.end_offset.map(|end| end.0), Some(0));
    let second = pm
        .create_range(stream.id, 1, 1, 0)
        .expect("CREATE_RANGE 1 with 2 live nodes and A = 2")
        .0
        .range;
    let placed: BTreeSet<_> = replica_ids(&second).into_iter().collect();
    let live: BTreeSet<_> = [cluster.node_id(0), cluster.node_id(1)].into();
    assert_eq!(
        placed, live,
        "placed on the two live nodes only: {second:?}"
    );
    assert!(
        second.under_replicated,
        "R = 3 on 2 nodes is under-replicated: {second:?}"
    );
    assert_eq!(second.replica_count_target, 3);
    for index in 0..2 {
        cluster.nodes[index]
            .client()
            .describe_range(stream.id, 1)
            .unwrap_or_else(|error| panic!("live node {index} lacks range 1: {error}"));
    }

    let second_dead = cluster.node_id(1);
    cluster.nodes[1].process.kill();
    wait_until_dead(&mut pm, second_dead);
    pm.seal_range(stream.id, 1, 1, Some(0))
        .expect("SEAL_RANGE 1 at the PM");
    let refused = pm
        .create_range(stream.id, 2, 1, 0)
        .expect_err("CREATE_RANGE with 1 live node and A = 2");
    assert_eq!(refused.code, ErrorCode::NoAvailableNodes, "{refused:?}");
    assert!(refused.code.is_retriable());
    assert_eq!(
        pm.describe_range(stream.id, 2)
            .expect_err("no range 2 was committed")
            .code,
        ErrorCode::RangeNotFound
    );
    // Whatever the failed create may have made on the one live node does not stay.
    let mut survivor = cluster.nodes[0].client();
    wait_for(
        CLEANUP_TIMEOUT,
        "no replica of the refused range on the live node",
        || gone(survivor.describe_range(stream.id, 2)),
    );
}

/// CREATE_RANGE with an exclude list (the writer saw those nodes fail), R = 3, A = 2, four live
/// nodes: the excluded nodes get no replica; excluding so that only A are left creates the range
/// under-replicated; fewer than A left is the retriable `NO_AVAILABLE_NODES`.
#[test]
fn excluded_nodes_get_no_replica_and_too_few_left_is_no_available_nodes() {
    let _serial = serial();
    let cluster = Cluster::start(4);
    let mut pm = cluster.pm.client();
    let stream = pm.create_stream(3, 2);
    pm.raise_epoch(stream.id, 1).expect("UPDATE_STREAM epoch 1");
    let ids: Vec<wire::NodeId> = (0..4).map(|index| cluster.node_id(index)).collect();
    let create = |pm: &mut support::Client, index: u32, exclude: &[wire::NodeId]| {
        let mut request = support::create_range_request(stream.id, index, 1, 0);
        request.exclude = exclude.to_vec();
        pm.call::<_, wire::msg::CreateRangeResponse>(&request, &[])
    };

    let first = create(&mut pm, 0, &[ids[0]])
        .expect("CREATE_RANGE 0 excluding one of four live nodes")
        .0
        .range;
    let placed: BTreeSet<_> = replica_ids(&first).into_iter().collect();
    assert_eq!(
        placed,
        [ids[1], ids[2], ids[3]].into(),
        "placed on the three others: {first:?}"
    );
    assert!(!first.under_replicated);
    assert!(
        gone(cluster.nodes[0].client().describe_range(stream.id, 0)).is_ok(),
        "no replica on the excluded node"
    );
    for index in 1..4 {
        cluster.nodes[index]
            .client()
            .describe_range(stream.id, 0)
            .unwrap_or_else(|error| panic!("node {index} lacks range 0: {error}"));
    }
    // An identical repeat (a retry after a lost answer) gets the range as committed.
    let repeat = create(&mut pm, 0, &[ids[1]])
        .expect("identical repeat of CREATE_RANGE 0")
        .0
        .range;
    assert_eq!(replica_ids(&repeat), replica_ids(&first));

    pm.seal_range(stream.id, 0, 1, Some(0))
        .expect("SEAL_RANGE 0");
    let second = create(&mut pm, 1, &[ids[0], ids[1]])
        .expect("CREATE_RANGE 1 with two of four excluded: A = 2 are left")
        .0
        .range;
    let placed: BTreeSet<_> = replica_ids(&second).into_iter().collect();
    assert_eq!(placed, [ids[2], ids[3]].into(), "{second:?}");
    assert!(
        second.under_replicated,
        "R = 3 on 2 nodes is under-replicated: {second:?}"
    );

    pm.seal_range(stream.id, 1, 1, Some(0))
        .expect("SEAL_RANGE 1");
    let refused = create(&mut pm, 2, &[ids[0], ids[1], ids[2]])
        .expect_err("CREATE_RANGE 2 with one node left and A = 2");
    assert_eq!(refused.code, ErrorCode::NoAvailableNodes, "{refused:?}");
    assert!(refused.code.is_retriable());
    assert_eq!(
        refused.detail, 1,
        "one eligible node: excluded ones do not count"
    );
    assert_eq!(
        pm.describe_range(stream.id, 2)
            .expect_err("no range 2 was committed")
            .code,
        ErrorCode::RangeNotFound
    );
    for (index, node) in cluster.nodes.iter().enumerate() {
        assert!(
            gone(node.client().describe_range(stream.id, 2)).is_ok(),
            "node {index} holds no replica of the refused range"
        );
    }
}

/// Waits until DESCRIBE_CLUSTER calls `node` not alive, within the node timeout and slack.
fn wait_until_dead(pm: &mut support::Client, node: wire::NodeId) {
    wait_for(
        Duration::from_millis(NODE_TIMEOUT_MS) + LIVENESS_SLACK,
        &format!("the PM calls killed node {node} dead"),
        || {
            let listed = pm.describe_cluster();
            if listed
                .iter()
                .any(|listed| listed.node_id == node && !listed.alive)
            {
                Ok(())
            } else {
                Err(format!("{listed:?}"))
            }
        },
    );
}

/// `Ok` when a DESCRIBE_RANGE answered RANGE_NOT_FOUND.
fn gone(answer: support::Answer<wire::msg::DescribeRangeResponse>) -> Result<(), String> {
    match answer {
        Err(error) if error.code == ErrorCode::RangeNotFound => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// Bytes written to every replica of a range in the trim and delete tests: six 4 MiB segments.
const FILL_BYTES: usize = 24 * 1024 * 1024;
const RECORD_BYTES: usize = 4096;
const RECORDS_PER_BATCH: u32 = 64;

/// Appends [`FILL_BYTES`] to range `index` of `stream` on every node directly, as a writer with
/// `epoch` would; returns the range's next offset.
fn fill_range(cluster: &Cluster, stream: StreamId, index: u32, epoch: u64) -> u64 {
    let batches = FILL_BYTES / (RECORD_BYTES * RECORDS_PER_BATCH as usize);
    let mut end = 0;
    for node in &cluster.nodes {
        let mut client = node.client();
        let mut base = 0;
        for _ in 0..batches {
            let bytes = batch(stream, index, epoch, base, RECORDS_PER_BATCH, RECORD_BYTES);
            let appended = client
                .append(stream, index, epoch, &bytes)
                .unwrap_or_else(|error| panic!("APPEND to {} failed: {error}", node.address))
                .0;
            base = appended.next_offset.0;
        }
        end = base;
    }
    end
}

/// Waits until the node at `index` no longer holds range `range` of `stream`.
fn wait_replica_gone(cluster: &Cluster, index: usize, stream: StreamId, range: u32) {
    let mut client = cluster.nodes[index].client();
    wait_for(
        CLEANUP_TIMEOUT,
        &format!("node {index} deletes range {range} of stream {stream}"),
        || gone(client.describe_range(stream, range)),
    );
}

/// Waits until every node's WAL in use fell below two segments and below half of `before`.
fn wait_disk_freed(cluster: &Cluster, before: &[u64]) {
    for (index, node) in cluster.nodes.iter().enumerate() {
        let limit = (2 * SEGMENT_SIZE_BYTES).min(before[index] / 2);
        wait_for(
            CLEANUP_TIMEOUT,
            &format!(
                "node {index}'s WAL in use falls from {} to below {limit} bytes",
                before[index]
            ),
            || {
                let used = node.wal_bytes_used();
                if used < limit {
                    eprintln!("node {index}: WAL in use {} -> {used} bytes", before[index]);
                    Ok(())
                } else {
                    Err(format!(
                        "es_wal_bytes_used {used}, files under wal/ {} bytes",
                        support::directory_bytes(&node.data_dir.join("wal"))
                    ))
                }
            },
        );
    }
}

/// The WAL in use on every node once it holds at least the filled bytes.
fn wal_in_use_after_fill(cluster: &Cluster) -> Vec<u64> {
    cluster
        .nodes
        .iter()
        .map(|node| {
            wait_for(
                Duration::from_secs(5),
                "the WAL gauge shows the appended bytes",
                || {
                    let used = node.wal_bytes_used();
                    if used >= FILL_BYTES as u64 {
                        Ok(used)
                    } else {
                        Err(format!("es_wal_bytes_used {used}"))
                    }
                },
            )
        })
        .collect()
}

#[test]
fn trimming_a_stream_deletes_its_dropped_range_on_every_node_and_frees_the_disk() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let mut pm = cluster.pm.client();
    let stream = pm.create_stream(3, 1);
    pm.raise_epoch(stream.id, 1).expect("UPDATE_STREAM epoch 1");
    let range = pm
        .create_range(stream.id, 0, 1, 0)
        .expect("CREATE_RANGE 0")
        .0;
    assert_eq!(range.range.replicas.len(), 3);

    let end = fill_range(&cluster, stream.id, 0, 1);
    let before = wal_in_use_after_fill(&cluster);
    pm.seal_range(stream.id, 0, 1, Some(end))
        .expect("SEAL_RANGE 0 at the PM");
    for node in &cluster.nodes {
        let sealed = node
            .client()
            .seal_range(stream.id, 0, 1, Some(end))
            .expect("SEAL_RANGE 0 on the node")
            .0;
        assert_eq!(sealed.end_offset.map(|end| end.0), Some(end));
    }
    pm.create_range(stream.id, 1, 1, end)
        .expect("CREATE_RANGE 1");

    let trimmed = pm.trim_stream(stream.id, end).expect("TRIM_STREAM").0;
    assert_eq!(trimmed.stream.start_offset.0, end);
    assert_eq!(
        pm.describe_range(stream.id, 0)
            .expect_err("range 0 is dropped at the PM")
            .code,
        ErrorCode::RangeNotFound
    );
    for index in 0..cluster.nodes.len() {
        wait_replica_gone(&cluster, index, stream.id, 0);
    }
    wait_disk_freed(&cluster, &before);
    for node in &cluster.nodes {
        node.client()
            .describe_range(stream.id, 1)
            .unwrap_or_else(|error| panic!("range 1 must stay on {}: {error}", node.address));
    }
}

#[test]
fn deleting_a_stream_deletes_its_ranges_on_every_node_and_frees_the_disk() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let mut pm = cluster.pm.client();
    let stream = pm.create_stream(3, 1);
    pm.raise_epoch(stream.id, 1).expect("UPDATE_STREAM epoch 1");
    pm.create_range(stream.id, 0, 1, 0).expect("CREATE_RANGE 0");
    fill_range(&cluster, stream.id, 0, 1);
    let before = wal_in_use_after_fill(&cluster);

    let deleted = pm.delete_stream(stream.id).expect("DELETE_STREAM").0;
    assert!(deleted.stream.deleted);
    for index in 0..cluster.nodes.len() {
        wait_replica_gone(&cluster, index, stream.id, 0);
    }
    wait_disk_freed(&cluster, &before);
}

#[test]
fn a_replica_the_pm_never_committed_is_removed_and_unknown_streams_are_left_alone() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let mut pm = cluster.pm.client();
    let stream = pm.create_stream(3, 1);
    pm.create_range(stream.id, 0, 0, 0).expect("CREATE_RANGE 0");

    // Range 1 of a known stream (an orphan of a create that never committed), and a range of a
    // stream id the PM never allocated.
    let unknown = StreamId(stream.id.0 + 1_000);
    let mut first = cluster.nodes[0].client();
    first
        .create_range(stream.id, 1, 0, 0)
        .expect("CREATE_RANGE straight on node 0");
    let mut second = cluster.nodes[1].client();
    second
        .create_range(unknown, 0, 0, 0)
        .expect("CREATE_RANGE straight on node 1");

    wait_replica_gone(&cluster, 0, stream.id, 1);
    // A stream id the PM never allocated is data created by hand before the node joined:
    // reconciliation leaves it alone (it ran at least once since the orphan above went).
    second
        .describe_range(unknown, 0)
        .expect("a replica of a never-allocated stream id is left alone");
    // Reconciliation removes only what the PM did not place: the committed range stays.
    for node in &cluster.nodes {
        node.client()
            .describe_range(stream.id, 0)
            .unwrap_or_else(|error| panic!("range 0 must stay on {}: {error}", node.address));
    }
}

#[test]
fn sigterm_stops_the_pm_cleanly_with_its_log_closed() {
    let _serial = serial();
    let directory = tempfile::tempdir().expect("temporary directory");
    let metrics_address = format!("127.0.0.1:{}", support::free_port());
    let options = support::PmOptions {
        metrics_address: Some(metrics_address.clone()),
        ..support::PmOptions::default()
    };
    let mut pm = support::PmProcess::start_with(&directory.path().join("pm"), None, &options);
    let mut client = pm.client();
    client.create_stream(1, 1);
    let page = support::http_get(&metrics_address, "/metrics").expect("GET /metrics answers");
    assert!(page.contains("# TYPE"), "a Prometheus page: {page}");
    drop(client);

    pm.process.signal(libc::SIGTERM);
    let status = pm
        .process
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("pm did not exit after SIGTERM; log:\n{}", pm.process.log()));
    let log = pm.process.log();
    assert!(
        status.success(),
        "SIGTERM exits 0, found {status}; log:\n{log}"
    );
    assert!(
        log.contains("placement manager stopped") && !log.contains("still hold"),
        "a clean stop closes the command log itself; log:\n{log}"
    );
}
