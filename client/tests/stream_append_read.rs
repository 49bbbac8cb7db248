//! `es stream append` and `es stream read` (the SDK under the CLI) against a real placement
//! manager and data node: a round trip, stdin mode, JSON output, --from and --follow.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{es_binary, run_es, DataNode, PlacementManager};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn es_ok(pm: &str, arguments: &[&str]) -> String {
    let mut all = vec!["--pm", pm];
    all.extend_from_slice(arguments);
    let output = run_es(&all);
    assert!(
        output.status.success(),
        "es {arguments:?} failed ({:?}): {}{}",
        output.status.code(),
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

/// A placement manager and one data node it sees alive.
fn cluster() -> (PlacementManager, DataNode) {
    let pm = PlacementManager::start();
    let node = DataNode::start_with_pm(Some(&pm.address));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let cluster: serde_json::Value =
            serde_json::from_str(&es_ok(&pm.address, &["-o", "json", "cluster"])).unwrap();
        if cluster
            .as_array()
            .is_some_and(|nodes| nodes.iter().any(|node| node["alive"] == true))
        {
            return (pm, node);
        }
        assert!(std::time::Instant::now() < deadline, "node never alive");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn append_then_read_round_trip() {
    let (pm, _node) = cluster();
    let pm = pm.address.clone();
    let id = es_ok(&pm, &["stream", "create", "--replica", "1", "--ack", "1"])
        .trim()
        .to_string();

    // One batch per PAYLOAD; each acknowledged offset on its own line.
    assert_eq!(
        es_ok(&pm, &["stream", "append", &id, "alpha", "beta", "gamma"]),
        "0\n1\n2\n"
    );
    // --stdin: one batch per line, like a console producer; JSON acknowledgements.
    let mut child = Command::new(es_binary())
        .args([
            "--pm", &pm, "-o", "json", "stream", "append", &id, "--stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start es stream append --stdin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"delta\nepsilon with spaces\n\nzeta")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acknowledged: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let offsets: Vec<u64> = acknowledged
        .iter()
        .map(|ack| ack["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![3, 4, 5, 6]);

    // Read prints each record's payload on its own line and nothing else, across the two
    // writers' ranges.
    assert_eq!(
        es_ok(&pm, &["stream", "read", &id]),
        "alpha\nbeta\ngamma\ndelta\nepsilon with spaces\n\nzeta\n"
    );
    assert_eq!(
        es_ok(&pm, &["stream", "read", &id, "--from", "4"]),
        "epsilon with spaces\n\nzeta\n"
    );
    let batches: Vec<serde_json::Value> =
        es_ok(&pm, &["-o", "json", "stream", "read", &id, "--from", "2"])
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per batch"))
            .collect();
    assert_eq!(batches.len(), 5);
    assert_eq!(batches[0]["offset"], 2);
    assert_eq!(batches[0]["payload"][0]["text"], "gamma");
    assert_eq!(batches[4]["offset"], 6);
    assert_eq!(batches[4]["payload"][0]["text"], "zeta");

    // Nothing to append is a usage error; an unknown stream a server error.
    let output = run_es(&["--pm", &pm, "stream", "append", &id]);
    assert_eq!(output.status.code(), Some(2));
    let output = run_es(&["--pm", &pm, "stream", "read", "999"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("stream 999 does not exist"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn read_follow_tails_new_appends() {
    let (pm, _node) = cluster();
    let pm = pm.address.clone();
    let id = es_ok(&pm, &["stream", "create", "--replica", "1", "--ack", "1"])
        .trim()
        .to_string();
    es_ok(&pm, &["stream", "append", &id, "first"]);
    let mut follower = Command::new(es_binary())
        .args(["--pm", &pm, "stream", "read", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start es stream read --follow");
    let (lines_sender, lines) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_sender.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from --follow")
    };
    assert_eq!(next(), "first");
    // A second writer: the follower moves from the sealed range to the new one.
    es_ok(&pm, &["stream", "append", &id, "second", "third"]);
    assert_eq!(next(), "second");
    assert_eq!(next(), "third");
    assert!(
        matches!(follower.try_wait(), Ok(None)),
        "--follow keeps running"
    );
    let _ = follower.kill();
    let _ = follower.wait();
}
