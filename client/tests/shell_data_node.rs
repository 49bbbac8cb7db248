//! `es` against a real data node: a shell script's transcript, one-shot commands with JSON
//! output, `fetch --follow`, and raw garbage that must not take the node down.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{es_binary, run_es, run_shell, DataNode};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The output line answering `command` in a transcript (the line after `> command`).
fn answer<'a>(transcript: &'a str, command: &str) -> &'a str {
    let mut lines = transcript.lines();
    let echo = format!("> {command}");
    while let Some(line) = lines.next() {
        if line == echo {
            return lines
                .next()
                .unwrap_or_else(|| panic!("no answer to `{command}`"));
        }
    }
    panic!("`{command}` not echoed in:\n{transcript}")
}

#[test]
fn shell_script_reads_like_a_transcript() {
    let node = DataNode::start();
    let script = r#"
ping "hello"
create-range stream=7 index=0 start=0
append 7 0 "first"
append 7 0 "second batch" count=3
fetch 7 0 offset=0
describe-range 7 0
append 7 0 "skips ahead" offset=10
append 7 0 "again" offset=0
seal 7 0
append 7 0 "too late"
fetch 7 0 offset=1
create-range stream=7 index=0 start=0 epoch=0
create-range stream=7 index=0 start=5
append 7 0 "x" count=0
describe-range 8 0
"#;
    let output = run_shell(&node.address, script, &[]);
    let transcript = stdout(&output);
    println!("{transcript}");

    assert!(answer(&transcript, "ping \"hello\"").starts_with("PONG 5 bytes \"hello\" in "));
    assert!(answer(&transcript, "create-range stream=7 index=0 start=0")
        .starts_with("OK range 7/0 open epoch=0 start=0 end=open next=0"));
    assert!(answer(&transcript, "append 7 0 \"first\"")
        .starts_with("OK appended offsets [0, 1) next=1 in "));
    assert!(answer(&transcript, "append 7 0 \"second batch\" count=3")
        .starts_with("OK appended offsets [1, 4) next=4 in "));

    let fetch = answer(&transcript, "fetch 7 0 offset=0");
    assert!(
        fetch.starts_with("OK fetched 2 batch(es), 17 payload bytes; confirmed=4 next=4 end=open"),
        "{fetch}"
    );
    assert!(
        transcript.contains("  batch offsets [0, 1) count=1 epoch=0"),
        "{transcript}"
    );
    assert!(transcript.contains("payload=\"first\""), "{transcript}");
    assert!(
        transcript.contains("  batch offsets [1, 4) count=3 epoch=0"),
        "{transcript}"
    );
    assert!(
        transcript.contains("payload=\"second batch\""),
        "{transcript}"
    );

    assert!(answer(&transcript, "describe-range 7 0")
        .starts_with("OK range 7/0 open epoch=0 start=0 end=open next=4 confirmed=4"));
    assert!(answer(&transcript, "append 7 0 \"skips ahead\" offset=10")
        .starts_with("ERROR OFFSET_GAP (106) detail=4"));
    assert!(answer(&transcript, "append 7 0 \"again\" offset=0")
        .starts_with("ERROR OFFSET_DUPLICATE (104) detail=4"));
    assert!(answer(&transcript, "seal 7 0").starts_with("OK sealed end=4"));
    assert!(answer(&transcript, "append 7 0 \"too late\"")
        .starts_with("ERROR RANGE_SEALED (102) detail=4"));
    let after_seal = answer(&transcript, "fetch 7 0 offset=1");
    assert!(
        after_seal.starts_with("OK fetched 1 batch(es), 12 payload bytes; confirmed="),
        "{after_seal}"
    );
    assert!(after_seal.contains("end=4"), "{after_seal}");
    // CREATE_RANGE at a data node is idempotent on identical parameters (protocol §5.9): a
    // retry after a lost answer gets the existing range; other parameters are refused.
    let again = answer(&transcript, "create-range stream=7 index=0 start=0 epoch=0");
    assert!(again.starts_with("OK range 7/0 sealed"), "{again}");
    let different = answer(&transcript, "create-range stream=7 index=0 start=5");
    assert!(
        different.starts_with("ERROR RANGE_ALREADY_EXISTS (101)"),
        "{different}"
    );
    // A parse error names the problem and the expected form, and sends nothing.
    assert!(answer(&transcript, "append 7 0 \"x\" count=0").starts_with(
        "error: count=0: a batch covers at least one offset; expected: append STREAM INDEX PAYLOAD"
    ));
    assert!(answer(&transcript, "describe-range 8 0").starts_with("ERROR RANGE_NOT_FOUND (100)"));
    // The parse error makes the exit status 1; server errors alone do not.
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn hex_mode_dumps_the_frames_both_ways() {
    let node = DataNode::start();
    let output = run_shell(&node.address, ".hex on\nping \"AB\"\n.hex off\nping\n", &[]);
    let transcript = stdout(&output);
    // The request frame: length 26, magic "ES", version 1, flags 0, opcode PING; payload "AB".
    assert!(
        transcript.contains(">> 000000  1a 00 00 00 45 53 01 00  01 00"),
        "{transcript}"
    );
    // The response: same layout with flags RESPONSE|END_OF_RESPONSE.
    assert!(
        transcript.contains("<< 000000  1a 00 00 00 45 53 01 03  01 00"),
        "{transcript}"
    );
    assert_eq!(
        transcript.matches(">> 0000").count(),
        2,
        "only the first ping is dumped: {transcript}"
    );
    assert!(output.status.success());
}

#[test]
fn one_shot_commands_speak_json() {
    let node = DataNode::start();
    let address = node.address.as_str();
    let json = |arguments: &[&str]| -> serde_json::Value {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(arguments);
        let output = run_es(&full);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{arguments:?}: {error}: {}", stdout(&output)))
    };
    let created = json(&[
        "create-range",
        "-a",
        address,
        "--stream",
        "3",
        "--index",
        "0",
    ]);
    assert_eq!(created["ok"], true);
    assert_eq!(created["range"]["stream_id"], 3);
    assert_eq!(created["range"]["sealed"], false);

    let appended = json(&["append", "-a", address, "3", "0", "payload one"]);
    assert_eq!(appended["base_offset"], 0);
    assert_eq!(appended["next_offset"], 1);
    // The base offset was learned from the node, since this process never wrote the range.
    assert!(appended["note"]
        .as_str()
        .unwrap()
        .contains("describe-range"));
    let appended = json(&["append", "-a", address, "--hex", "3", "0", "00ff"]);
    assert_eq!(appended["base_offset"], 1);

    let fetched = json(&["fetch", "-a", address, "3", "0", "--offset", "0"]);
    let batches = fetched["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0]["payload"]["text"], "payload one");
    assert_eq!(batches[1]["payload"]["hex"], "00ff");

    // A server error is reported in JSON with its stable code, and exit status 1.
    let output = run_es(&[
        "--output",
        "json",
        "describe-range",
        "-a",
        address,
        "99",
        "0",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["error"]["name"], "RANGE_NOT_FOUND");
    assert_eq!(error["error"]["code"], 100);
}

#[test]
fn fetch_follow_tails_until_the_range_is_sealed() {
    let node = DataNode::start();
    let address = node.address.clone();
    let created = run_es(&[
        "create-range",
        "-a",
        &address,
        "--stream",
        "5",
        "--index",
        "0",
    ]);
    assert!(created.status.success());
    let follower = Command::new(es_binary())
        .args([
            "fetch",
            "-a",
            &address,
            "5",
            "0",
            "--follow",
            "--wait-ms",
            "200",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follower = KillOnDrop(Some(follower));
    std::thread::sleep(Duration::from_millis(300));
    let script = "append 5 0 \"tail one\"\nappend 5 0 \"tail two\"\nseal 5 0\n";
    let output = run_shell(&address, script, &[]);
    assert!(output.status.success(), "{}", stdout(&output));
    let output = follower.wait_with_output(Duration::from_secs(10));
    let tail = stdout(&output);
    assert!(output.status.success(), "follower failed: {tail}");
    assert!(tail.contains("payload=\"tail one\""), "{tail}");
    assert!(tail.contains("payload=\"tail two\""), "{tail}");
}

#[test]
fn raw_garbage_is_refused_and_the_node_stays_up() {
    let mut node = DataNode::start();
    let address = node.address.clone();
    // A length field far above the maximum frame size: the node must refuse without reserving
    // memory for it, say why, and close this connection only.
    let output = run_es(&["raw", "-a", &address, "ffffff7f", "4553", "0100", "0100"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("GOAWAY") || text.contains("connection closed") || text.contains("reset"),
        "{text}"
    );
    // Bad magic.
    let output = run_es(&[
        "raw",
        "-a",
        &address,
        "1c000000",
        "dead",
        "0100",
        "0100",
        "0000",
        "0100000000000000",
        "00000000",
        "00000000",
    ]);
    let text = stdout(&output);
    assert!(
        text.contains("GOAWAY") || text.contains("closed") || text.contains("reset"),
        "{text}"
    );
    // The node still answers on a new connection.
    assert!(node.is_running());
    let output = run_es(&["ping", &address]);
    assert!(output.status.success());
    assert!(stdout(&output).starts_with("PONG"));
}

struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    /// Waits for the child to exit on its own for up to `timeout`, then kills it.
    fn wait_with_output(mut self, timeout: Duration) -> std::process::Output {
        let mut child = self.0.take().unwrap();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
