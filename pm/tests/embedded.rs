//! The shipped `etc/data-node.yaml` is a working one-node cluster: a data node started with it
//! (only its ports and directory changed) runs a placement manager of its own, registers with
//! it, and a stream created there gets its ranges on that node. Then SIGTERM stops it cleanly.
//!
//! The config is the shipped file itself, copied with five lines replaced, so a change to the
//! shipped defaults that breaks the one-command cluster fails here. Needs the `data-node`
//! binary built (see `support`).

mod support;

use std::path::Path;
use std::time::Duration;

use support::{free_port, replica_ids, wait_for, wait_ready, Client, Process};
use wire::NodeState;

/// The shipped file with `replacements` (whole lines, trimmed, to their new text) applied; each
/// line must be found exactly once.
fn shipped_config_with(replacements: &[(&str, String)]) -> String {
    let shipped_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/data-node.yaml");
    let shipped = std::fs::read_to_string(&shipped_path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", shipped_path.display()));
    let mut found = vec![0; replacements.len()];
    let lines: Vec<String> = shipped
        .lines()
        .map(|line| {
            let trimmed = line.trim();
            match replacements.iter().position(|(from, _)| *from == trimmed) {
                Some(slot) => {
                    found[slot] += 1;
                    let indent = &line[..line.len() - line.trim_start().len()];
                    format!("{indent}{}", replacements[slot].1)
                }
                None => line.to_string(),
            }
        })
        .collect();
    for ((from, _), count) in replacements.iter().zip(&found) {
        assert_eq!(
            *count, 1,
            "etc/data-node.yaml should have the line `{from}` once (found {count} times); \
             update this test with the shipped file"
        );
    }
    lines.join("\n") + "\n"
}

#[test]
fn the_shipped_data_node_config_is_a_working_one_node_cluster() {
    let binary = support::data_node_binary();
    let directory = tempfile::tempdir().expect("temporary directory");
    let data_dir = directory.path().join("data");
    let (mut process, address, pm_address) = (0..5)
        .find_map(|_| {
            let address = format!("127.0.0.1:{}", free_port());
            let pm_address = format!("127.0.0.1:{}", free_port());
            let metrics_address = format!("127.0.0.1:{}", free_port());
            let config = shipped_config_with(&[
                ("listen: 127.0.0.1:10911", format!("listen: {address}")),
                ("listen: 127.0.0.1:12378", format!("listen: {pm_address}")),
                (
                    "addresses: [127.0.0.1:12378]",
                    format!("addresses: [{pm_address}]"),
                ),
                ("addr: 127.0.0.1:9911", format!("addr: {metrics_address}")),
                ("path: ./data", format!("path: {}", data_dir.display())),
            ]);
            let config_path = directory.path().join("data-node.yaml");
            std::fs::write(&config_path, config).expect("write the config");
            let mut process = Process::spawn(
                "data-node",
                &binary,
                &["-c", config_path.to_str().expect("utf-8 path")],
                &directory.path().join("data-node.log"),
            );
            if wait_ready(&mut process, &address, Duration::from_secs(30))
                && wait_ready(&mut process, &pm_address, Duration::from_secs(10))
            {
                return Some((process, address, pm_address));
            }
            let log = process.log();
            process.kill();
            assert!(
                log.contains("in use"),
                "the data node with the shipped config did not serve on {address} and its \
                 placement manager on {pm_address}; its log:\n{log}"
            );
            None
        })
        .expect("the data node found free ports within 5 attempts");

    // What a user of the one-command start types first.
    let created = std::process::Command::new(support::es_binary())
        .args([
            "--pm",
            &pm_address,
            "stream",
            "create",
            "--replica",
            "1",
            "--ack",
            "1",
        ])
        .output()
        .expect("es runs");
    let printed = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(
        created.status.success() && printed.parse::<u64>().is_ok(),
        "`es stream create` against the embedded placement manager prints the new stream id; \
         found status {}, stdout {printed:?}, stderr {:?}",
        created.status,
        String::from_utf8_lossy(&created.stderr)
    );

    let mut pm = Client::connect(&pm_address);
    let stream = pm.create_stream(1, 1);
    let node = wait_for(
        Duration::from_secs(15),
        "the node registers with its embedded placement manager and is alive",
        || {
            let listed = pm.describe_cluster();
            match listed.as_slice() {
                [node] if node.alive => Ok(node.clone()),
                _ => Err(format!("{listed:?}")),
            }
        },
    );
    assert_eq!(node.address, address, "{node:?}");
    assert_eq!(node.state, NodeState::ReadWrite, "{node:?}");

    let range = pm
        .create_range(stream.id, 0, 0, 0)
        .expect("CREATE_RANGE at the embedded placement manager")
        .0
        .range;
    assert_eq!(replica_ids(&range), vec![node.node_id], "{range:?}");
    assert!(!range.under_replicated, "{range:?}");
    let mut data = Client::connect(&address);
    let held = data
        .describe_range(stream.id, 0)
        .expect("the node holds the replica the placement manager placed")
        .0;
    assert_eq!(held.range.stream_id, stream.id);
    let appended = data
        .append(stream.id, 0, 0, &support::batch(stream.id, 0, 0, 0, 4, 100))
        .expect("APPEND to the placed range")
        .0;
    assert_eq!(appended.next_offset.0, 4);
    drop((pm, data));

    process.signal(libc::SIGTERM);
    let status = process
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit within 20 s of SIGTERM; log:\n{}", process.log()));
    assert!(
        status.success(),
        "SIGTERM exits 0, found {status}; log:\n{}",
        process.log()
    );
}
