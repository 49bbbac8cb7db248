//! Crash test of the command log: a child process appends records and prints a ledger line for
//! every index once the log says it is durable; the parent kills it with SIGKILL at a random
//! moment, 24 times on the same directory. After every kill the parent reopens the log and
//! checks that every index the ledger calls durable is there with the exact bytes (records are
//! a function of their index), or covered by the recovered snapshot.
//!
//! The child is this test binary re-executed with `--ignored --exact log_crash_child` and the
//! directory in `PM_LOG_CRASH_DIR`. It uses small segments and installs a snapshot every 400
//! records, so kills also land in segment rolls and snapshot installs.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pm::command_log::{CommandLog, LogOptions};

const KILLS: usize = 24;
const IN_FLIGHT: usize = 32;
const SNAPSHOT_EVERY: u64 = 400;

fn options() -> LogOptions {
    LogOptions {
        segment_size_bytes: 16 << 10,
        ..LogOptions::default()
    }
}

/// The record with index `index`: 8 to 207 bytes, all derived from the index.
fn record(index: u64) -> Vec<u8> {
    let len = 8 + (index.wrapping_mul(7919) % 200) as usize;
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The state machine image a snapshot at `index` carries.
fn snapshot_bytes(index: u64) -> Vec<u8> {
    format!("state after {index}").into_bytes()
}

/// Runs only as the child of `durable_records_survive_sigkill`.
#[test]
#[ignore = "child process of the crash test; runs only when PM_LOG_CRASH_DIR is set"]
fn log_crash_child() {
    let Ok(directory) = std::env::var("PM_LOG_CRASH_DIR") else {
        return;
    };
    let (log, _) = CommandLog::open(Path::new(&directory), options()).expect("child: open");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut in_flight = VecDeque::new();
    let mut last_snapshot = 0;
    loop {
        while in_flight.len() < IN_FLIGHT {
            let index = log.next_index();
            let (assigned, ticket) = log.append(record(index)).expect("child: append");
            assert_eq!(assigned, index);
            in_flight.push_back(ticket);
        }
        let ticket = in_flight.pop_front().unwrap();
        let index = ticket.index();
        ticket.wait().expect("child: durable");
        // One write per line: a pipe write this small is atomic.
        writeln!(out, "DURABLE {index}").unwrap();
        out.flush().unwrap();
        if index >= last_snapshot + SNAPSHOT_EVERY {
            log.install_snapshot(index, &snapshot_bytes(index))
                .expect("child: snapshot");
            last_snapshot = index;
            writeln!(out, "SNAPSHOT {index}").unwrap();
            out.flush().unwrap();
        }
    }
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn durable_records_survive_sigkill() {
    let directory = tempfile::tempdir().unwrap();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("log crash test seed {seed}");
    let executable = std::env::current_exe().unwrap();
    // The highest index any child reported durable, and the highest snapshot installed.
    let mut durable = 0u64;
    let mut snapshotted = 0u64;
    let mut torn_tails = 0;
    let test_started = Instant::now();
    for kill in 0..KILLS {
        let mut child = Command::new(&executable)
            .args([
                "--ignored",
                "--exact",
                "log_crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("PM_LOG_CRASH_DIR", directory.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_sender, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut stdout = std::io::BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match std::io::BufRead::read_until(&mut stdout, b'\n', &mut line) {
                    // Only newline-terminated lines count; a torn last line is ignored.
                    Ok(_) if line.ends_with(b"\n") => {
                        let text = String::from_utf8_lossy(&line).trim().to_string();
                        if lines_sender.send(text).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        loop {
            match lines.recv_timeout(Duration::from_secs(30)).as_deref() {
                Ok(line) if line.ends_with("READY") => break,
                Ok(line) => eprintln!("child: {line}"),
                Err(error) => panic!("kill {kill}: child did not start: {error}"),
            }
        }
        let delay = Duration::from_millis(10 + next_random(&mut seed) % 150);
        let started = Instant::now();
        let durable_before = durable;
        let mut record_line = |line: String| {
            let mut fields = line.split_whitespace();
            let (kind, value) = (fields.next(), fields.next().and_then(|v| v.parse().ok()));
            match (kind, value) {
                (Some("DURABLE"), Some(index)) => {
                    // The child reports in index order and never below what it recovered.
                    assert!(index > durable || index <= durable_before, "ledger order");
                    durable = durable.max(index);
                }
                (Some("SNAPSHOT"), Some(index)) => snapshotted = snapshotted.max(index),
                _ => {}
            }
        };
        while let Some(left) = delay.checked_sub(started.elapsed()) {
            match lines.recv_timeout(left) {
                Ok(line) => record_line(line),
                Err(_) => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for line in lines.try_iter() {
            record_line(line);
        }

        // Reopen in this process and check the ledger.
        let (log, recovered) = CommandLog::open(directory.path(), options())
            .unwrap_or_else(|error| panic!("kill {kill}: reopen failed: {error}"));
        let snapshot_index = match &recovered.snapshot {
            Some((index, bytes)) => {
                assert_eq!(
                    bytes,
                    &snapshot_bytes(*index),
                    "kill {kill}: snapshot bytes"
                );
                *index
            }
            None => 0,
        };
        assert!(
            snapshot_index >= snapshotted,
            "kill {kill}: snapshot {snapshotted} was installed, recovery found {snapshot_index}"
        );
        for (position, (index, bytes)) in recovered.records.iter().enumerate() {
            assert_eq!(
                *index,
                snapshot_index + 1 + position as u64,
                "kill {kill}: dense"
            );
            assert!(
                bytes == &record(*index),
                "kill {kill}: record {index} differs"
            );
        }
        let last = recovered
            .records
            .last()
            .map_or(snapshot_index, |(index, _)| *index);
        assert!(
            last >= durable,
            "kill {kill}: index {durable} was reported durable, the log ends at {last}"
        );
        if recovered.report.torn_tail.is_some() {
            torn_tails += 1;
        }
        println!(
            "kill {kill}: after {:?}, durable up to {durable} (+{}), recovered up to {last}, \
             snapshot {snapshot_index}, {} records after it",
            started.elapsed(),
            durable - durable_before,
            recovered.records.len()
        );
        assert_eq!(log.next_index(), last + 1);
        log.close().unwrap();
    }
    println!(
        "{KILLS} kills in {:?}, {torn_tails} torn tails cut, {durable} records durable, \
         last snapshot at {snapshotted}",
        test_started.elapsed()
    );
    assert!(
        durable > 20 * KILLS as u64,
        "the child made too little durable to test anything: {durable}"
    );
    assert!(snapshotted > 0, "no snapshot was installed");
}
