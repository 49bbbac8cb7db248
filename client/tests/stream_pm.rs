//! `es stream ...`, `es cluster` and the shell's placement-manager commands against the real
//! `pm` binary (and a real data node registered with it, so ranges get placed).

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::{free_port, run_es, run_shell, DataNode, PlacementManager};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `es --pm ADDRESS ARGUMENTS...` and checks it succeeded.
fn es_ok(pm: &str, arguments: &[&str]) -> String {
    let output = es(pm, arguments);
    assert!(
        output.status.success(),
        "es {arguments:?} failed ({:?}): {}{}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

fn es(pm: &str, arguments: &[&str]) -> Output {
    let mut all = vec!["--pm", pm];
    all.extend_from_slice(arguments);
    run_es(&all)
}

/// The table's rows, each split into its cells, after checking the header.
fn rows(table: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let first = lines.next().unwrap_or_default();
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>().join(" "),
        header,
        "{table}"
    );
    lines
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

const STREAM_HEADER: &str = "ID R A RETENTION RETENTION-BYTES START EPOCH DELETED";

#[test]
fn stream_lifecycle_and_cluster_through_the_placement_manager() {
    let mut pm = PlacementManager::start();
    let address = pm.address.clone();

    // Create prints the bare id, for `$(es stream create ...)`.
    let created = es_ok(
        &address,
        &["stream", "create", "--replica", "1", "--ack", "1"],
    );
    let stream_id: u64 = created
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("create printed `{created}`, not an id"));
    let id = stream_id.to_string();

    let described = es_ok(&address, &["stream", "describe", &id]);
    assert_eq!(
        rows(&described, STREAM_HEADER),
        vec![vec![&*id, "1", "1", "forever", "unlimited", "0", "0", "no"]]
    );

    // JSON: the stream record itself.
    let second: serde_json::Value = serde_json::from_str(&es_ok(
        &address,
        &[
            "-o",
            "json",
            "stream",
            "create",
            "--replica",
            "1",
            "--ack",
            "1",
            "--retention-ms",
            "3600000",
            "--retention-bytes",
            "1048576",
        ],
    ))
    .expect("create -o json prints JSON");
    let second_id = second["stream_id"].as_u64().expect("stream_id");
    assert!(second_id > stream_id, "{second}");
    assert_eq!(second["retention_ms"], 3_600_000);
    assert_eq!(second["retention_bytes"], 1_048_576);
    assert_eq!(second["deleted"], false);

    let listed = rows(&es_ok(&address, &["stream", "list"]), STREAM_HEADER);
    let listed_ids: Vec<&str> = listed.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(listed_ids, vec![id.clone(), second_id.to_string()]);
    assert_eq!(listed[1][3..5], ["1h", "1.0MiB"]);
    let from_second = es_ok(
        &address,
        &["stream", "list", "--from", &second_id.to_string()],
    );
    assert_eq!(rows(&from_second, STREAM_HEADER).len(), 1, "{from_second}");

    // Opening raises the epoch by one each time.
    assert_eq!(es_ok(&address, &["stream", "open", &id]), "1\n");
    assert_eq!(es_ok(&address, &["stream", "open", &id]), "2\n");

    // A data node registers; `es cluster` shows it once it has heartbeated.
    let node = DataNode::start_with_pm(Some(&address));
    let deadline = Instant::now() + Duration::from_secs(20);
    let cluster = loop {
        let cluster: serde_json::Value =
            serde_json::from_str(&es_ok(&address, &["-o", "json", "cluster"])).expect("JSON");
        if cluster.as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|node_json| node_json["address"] == node.address && node_json["alive"] == true)
        }) {
            break cluster;
        }
        assert!(
            Instant::now() < deadline,
            "the data node never showed up alive: {cluster}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(cluster[0]["state"], "READ_WRITE", "{cluster}");
    let node_id = cluster[0]["node_id"].as_u64().expect("node_id");
    let cluster_text = es_ok(&address, &["cluster"]);
    let cluster_rows = rows(
        &cluster_text,
        "ID ADDRESS STATE ALIVE LAST-HEARTBEAT FREE-DISK RANGES",
    );
    assert_eq!(cluster_rows.len(), 1, "{cluster_text}");
    assert_eq!(
        cluster_rows[0][..4],
        [&*node_id.to_string(), &*node.address, "READ_WRITE", "yes"]
    );
    assert!(cluster_rows[0][4].ends_with('s'), "{cluster_text}");

    // Drive the range lifecycle by hand: the PM places range 0 on the node.
    let range_header = "INDEX EPOCH START END R/A SIZE NODES";
    let replica = format!("{node_id}@{}", node.address);
    let created_range = es_ok(
        &address,
        &["stream", "new-range", &id, "--epoch", "2", "--index", "0"],
    );
    let created_rows = rows(&created_range, range_header);
    assert_eq!(created_rows.len(), 1, "{created_range}");
    assert_eq!(created_rows[0][..5], ["0", "2", "0", "open", "1/1"]);
    assert_eq!(created_rows[0].last().unwrap(), &replica, "{created_range}");
    assert_eq!(
        es_ok(
            &address,
            &[
                "stream",
                "seal-range",
                &id,
                "0",
                "--epoch",
                "2",
                "--end",
                "10"
            ]
        ),
        format!("range {id}/0 sealed at end=10\n")
    );
    let ranges = es_ok(&address, &["stream", "ranges", &id]);
    let range_rows = rows(&ranges, range_header);
    assert_eq!(range_rows.len(), 1, "{ranges}");
    assert_eq!(range_rows[0][..5], ["0", "2", "0", "10", "1/1"], "{ranges}");
    let ranges_json: serde_json::Value =
        serde_json::from_str(&es_ok(&address, &["-o", "json", "stream", "ranges", &id]))
            .expect("JSON");
    assert_eq!(ranges_json[0]["end_offset"], 10, "{ranges_json}");
    assert_eq!(ranges_json[0]["replicas"][0]["node_id"], node_id);

    // Trim, then delete: each prints the record as it now is. The PM refuses a trim point past
    // the end of the stream's sealed ranges.
    let trimmed = es_ok(&address, &["stream", "trim", &id, "5"]);
    assert_eq!(rows(&trimmed, STREAM_HEADER)[0][5], "5", "{trimmed}");
    let past_end = es(&address, &["stream", "trim", &id, "11"]);
    assert_eq!(past_end.status.code(), Some(1));
    assert!(
        stderr(&past_end).contains("OFFSET_OUT_OF_RANGE"),
        "{}",
        stderr(&past_end)
    );
    let deleted = es_ok(&address, &["stream", "delete", &id]);
    assert_eq!(rows(&deleted, STREAM_HEADER)[0][7], "yes", "{deleted}");
    let after = es_ok(&address, &["stream", "describe", &id]);
    assert_eq!(rows(&after, STREAM_HEADER)[0][7], "yes", "{after}");

    // An error answer: its code name and message on stderr, exit 1; JSON on stdout with -o json.
    let missing = es(&address, &["stream", "describe", "999999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("ERROR STREAM_NOT_FOUND (200)"),
        "{}",
        stderr(&missing)
    );
    let missing_ranges = es(&address, &["stream", "ranges", "999999"]);
    assert_eq!(missing_ranges.status.code(), Some(1));
    assert!(
        stderr(&missing_ranges).contains("ERROR STREAM_NOT_FOUND (200)"),
        "the ranges of a stream that does not exist are an error, not an empty table: {}",
        stderr(&missing_ranges)
    );
    let missing_json = es(&address, &["-o", "json", "stream", "describe", "999999"]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&missing_json)).expect("JSON");
    assert_eq!(value["error"]["name"], "STREAM_NOT_FOUND");
    let on_deleted = es(
        &address,
        &[
            "stream",
            "new-range",
            &id,
            "--epoch",
            "2",
            "--index",
            "1",
            "--start",
            "10",
        ],
    );
    assert_eq!(on_deleted.status.code(), Some(1));
    assert!(
        stderr(&on_deleted).contains("es: create-range: ERROR STREAM_DELETED (202)"),
        "{}",
        stderr(&on_deleted)
    );

    // Several addresses: one nobody listens on is passed over.
    let closed = format!("127.0.0.1:{}", free_port());
    let both = format!("{closed},{address}");
    assert_eq!(
        es_ok(&both, &["stream", "describe", &second_id.to_string()])
            .lines()
            .count(),
        2
    );

    pm.kill();
    // The killed process's listening socket can outlive it for a moment (io_uring releases the
    // ring's files asynchronously): wait until connections are refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{address} still accepts after the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let unreachable = es(&address, &["stream", "list"]);
    assert_eq!(unreachable.status.code(), Some(3));
    let message = stderr(&unreachable);
    assert!(
        message.contains(&format!("no placement manager answered at {address}")),
        "{message}"
    );
    assert!(
        message.contains("is a placement manager running?"),
        "{message}"
    );
    assert!(message.contains("`pm -c etc/pm.yaml`"), "{message}");
}

#[test]
fn shell_speaks_every_placement_manager_operation() {
    let pm = PlacementManager::start();
    let script = "\
create-stream 1 1 retention-ms=60000
describe-stream 1
update-stream 1 epoch=3 retention-bytes=4096
update-stream 1 epoch=2
list-streams
allocate-id 127.0.0.1:19999
heartbeat 1 127.0.0.1:19999 state=read-only ranges=0 disk-free=1048576 disk-total=2097152
describe-cluster
trim-stream 1 5
trim-stream 1 0
delete-stream 1
describe-stream 2
create-stream 1
";
    let output = run_shell(&pm.address, script, &[]);
    let transcript = stdout(&output);
    println!("{transcript}");
    let answer = |command: &str| -> String {
        let echo = format!("> {command}");
        let mut lines = transcript.lines();
        while let Some(line) = lines.next() {
            if line == echo {
                return lines.next().unwrap_or_default().to_string();
            }
        }
        panic!("`{command}` not echoed in:\n{transcript}")
    };
    assert!(answer("create-stream 1 1 retention-ms=60000").starts_with(
        "OK stream 1 replica-count=1 ack-count=1 retention-ms=60000 retention-bytes=0 start=0 epoch=0 in "
    ));
    assert!(answer("describe-stream 1").starts_with("OK stream 1 replica-count=1"));
    assert!(answer("update-stream 1 epoch=3 retention-bytes=4096")
        .starts_with("OK stream 1 replica-count=1 ack-count=1 retention-ms=60000 retention-bytes=4096 start=0 epoch=3 in "));
    assert!(answer("update-stream 1 epoch=2").starts_with("ERROR STALE_EPOCH (103) detail=3"));
    assert!(answer("list-streams").starts_with("OK 1 stream(s) in "));
    assert!(answer("allocate-id 127.0.0.1:19999").starts_with("OK node id "));
    assert!(answer(
        "heartbeat 1 127.0.0.1:19999 state=read-only ranges=0 disk-free=1048576 disk-total=2097152"
    )
    .starts_with("OK heartbeat-interval-ms=200 session-timeout-ms="));
    assert!(answer("describe-cluster").starts_with("OK 1 node(s) in "));
    assert!(
        transcript.contains("  node 1 127.0.0.1:19999 READ_ONLY alive last-heartbeat=")
            && transcript.contains(" disk-free=1.0MiB disk-total=2.0MiB"),
        "{transcript}"
    );
    // Nothing is sealed yet: the PM will not trim past the stream's end (0).
    assert!(answer("trim-stream 1 5").starts_with("ERROR OFFSET_OUT_OF_RANGE (107)"));
    assert!(answer("trim-stream 1 0").contains(" start=0 "));
    assert!(answer("delete-stream 1").contains(" deleted in "));
    assert!(answer("describe-stream 2").starts_with("ERROR STREAM_NOT_FOUND (200)"));
    assert!(answer("create-stream 1").starts_with("error: create-stream needs 2 positional"));
    // The parse error is the one failure; server errors do not count.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}
