//! Writers that die, and writers that are fenced, with the real binaries on loopback.
//!
//! A writer process is this test binary re-executed with `--ignored --exact writer_child`: it
//! writes through the SDK with 32 appends in flight and prints every acknowledgement on its own
//! line (`ACK call base next`), flushed, so the parent knows exactly what was acknowledged when it
//! died. It dies by SIGKILL mid-stream, or aborts inside the seal hook right after a chosen step
//! of the seal that the parent provokes by SIGKILLing a replica: after fencing, after the repair,
//! after the PM recorded the end. A new writer (`open_writer`) must then complete or redo that
//! seal: at least A replicas hold everything below the end (checked on each replica with the raw
//! checker), each of those replicas alone still serves every acknowledged batch when the others
//! are killed, and a reader tailing all along saw nothing that the recovery dropped.

#[path = "support/cluster.rs"]
mod cluster;
mod support;
#[path = "support/writing.rs"]
mod writing;

use std::io::{BufRead, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{SdkError, SealStep};
use cluster::{
    call_records, check_sealed_ranges, serial, verify_stream, wait_for, Cluster, SessionLog,
};
use wire::{Offset, Range, StreamId};
use writing::{
    block_on, connect, create_stream, read_to_end, verify_everything, Pump, PumpOptions, Tail,
};

const PATIENCE: Duration = Duration::from_secs(20);
const CHILD_IN_FLIGHT: usize = 32;
const CHILD_SESSION: u32 = 1;
const RECOVERY_SESSION: u32 = 2;

/// Runs only as the child of the writer crash tests (`REPL_CHILD_PM` set).
#[test]
#[ignore = "child process of the writer crash tests; runs only when REPL_CHILD_PM is set"]
fn writer_child() {
    let Ok(pm) = std::env::var("REPL_CHILD_PM") else {
        return;
    };
    // The test harness has printed "test writer_child ... " without a newline: end that line so
    // that the first line of ours stands on its own.
    println!();
    let stream = StreamId(
        std::env::var("REPL_CHILD_STREAM")
            .expect("REPL_CHILD_STREAM")
            .parse()
            .expect("a stream id"),
    );
    let session: u32 = std::env::var("REPL_CHILD_SESSION")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(CHILD_SESSION);
    let abort_at = match std::env::var("REPL_CHILD_ABORT").as_deref() {
        Ok("Fenced") => Some(SealStep::Fenced),
        Ok("Repaired") => Some(SealStep::Repaired),
        Ok("Committed") => Some(SealStep::Committed),
        _ => None,
    };
    let mut config = writing::test_config(&pm);
    config.seal_hook = Some(Arc::new(move |step: SealStep| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "HOOK {step:?}");
        if Some(step) == abort_at {
            let _ = writeln!(out, "ABORT {step:?}");
            let _ = out.flush();
            std::process::abort();
        }
        let _ = out.flush();
    }));
    let client = client::Client::connect(config).expect("child: connect");
    let writer = block_on("child: open_writer", client.open_writer(stream)).expect("open_writer");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "OPEN {}", writer.epoch()).expect("stdout");
        out.flush().expect("stdout");
    }
    // One thread submits (a bounded channel keeps about CHILD_IN_FLIGHT unresolved), this one
    // awaits in call order and prints each acknowledgement as it resolves.
    let (sender, receiver) =
        std::sync::mpsc::sync_channel::<(u64, client::AppendFuture)>(CHILD_IN_FLIGHT - 1);
    std::thread::spawn(move || {
        for call in 0.. {
            let future = writer.append(call_records(session, call, 3, 256));
            if sender.send((call, future)).is_err() {
                return;
            }
        }
    });
    for (call, future) in receiver {
        let result = block_on("child: append", future);
        let mut out = std::io::stdout().lock();
        match result {
            Ok(ack) => writeln!(
                out,
                "ACK {call} {} {}",
                ack.base_offset.0, ack.next_offset.0
            )
            .expect("stdout"),
            Err(error) => {
                writeln!(out, "ERROR {call} {error:?}").expect("stdout");
                out.flush().expect("stdout");
                return;
            }
        }
        out.flush().expect("stdout");
    }
}

/// A writer child process and the lines it printed.
struct ChildWriter {
    child: Option<Child>,
    lines: Receiver<String>,
    log: SessionLog,
    hooks: Vec<String>,
    other: Vec<String>,
}

impl ChildWriter {
    fn spawn(pm: &str, stream: StreamId, abort: Option<SealStep>) -> ChildWriter {
        ChildWriter::spawn_session(pm, stream, abort, CHILD_SESSION)
    }

    fn spawn_session(
        pm: &str,
        stream: StreamId,
        abort: Option<SealStep>,
        session: u32,
    ) -> ChildWriter {
        let mut child = Command::new(std::env::current_exe().expect("test executable"))
            .args([
                "--ignored",
                "--exact",
                "writer_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("REPL_CHILD_PM", pm)
            .env("REPL_CHILD_STREAM", stream.0.to_string())
            .env("REPL_CHILD_SESSION", session.to_string())
            .env(
                "REPL_CHILD_ABORT",
                abort.map_or_else(|| "none".to_string(), |step| format!("{step:?}")),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the writer child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = std::io::BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match stdout.read_until(b'\n', &mut line) {
                    // Only whole lines count: a line torn by the kill is not an acknowledgement.
                    Ok(_) if line.ends_with(b"\n") => {
                        let text = String::from_utf8_lossy(&line).trim().to_string();
                        if sender.send(text).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        ChildWriter {
            child: Some(child),
            lines,
            log: SessionLog::new(session),
            hooks: Vec::new(),
            other: Vec::new(),
        }
    }

    fn take(&mut self, line: String) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["ACK", call, base, next] => {
                let call: u64 = call.parse().expect("call");
                assert_eq!(
                    call,
                    self.log.acknowledged_calls(),
                    "the child's acknowledgements come in call order"
                );
                self.log.acknowledge(
                    call,
                    Offset(base.parse().expect("base")),
                    Offset(next.parse().expect("next")),
                );
            }
            ["HOOK", ..] | ["ABORT", ..] => self.hooks.push(line),
            _ => self.other.push(line),
        }
    }

    /// Reads lines until `calls` are acknowledged.
    fn wait_acknowledged(&mut self, calls: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log.acknowledged_calls() < calls {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(error) => panic!(
                    "the writer child acknowledged {} of {calls} calls ({error:?}); its other lines: {:?}",
                    self.log.acknowledged_calls(),
                    self.other
                ),
            }
        }
    }

    /// Waits for the child to exit by itself; its status.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the writer child did not exit within {} ms; hooks seen {:?}",
                timeout.as_millis(),
                self.hooks
            );
            while let Ok(line) = self.lines.try_recv() {
                self.take(line);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the child exits (its status) or has an acknowledgement (`None`).
    fn wait_exit_or_acknowledged(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.take(line);
            }
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if self.log.acknowledged_calls() > 0 {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "the writer child neither exited nor wrote within {} ms; hooks seen {:?}, other lines {:?}",
                timeout.as_millis(),
                self.hooks,
                self.other
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL by pid and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Takes every line left after the child is gone.
    fn drain(&mut self) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(5)) {
                Ok(line) => self.take(line),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => panic!("the child's stdout stays open"),
            }
        }
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        self.kill();
    }
}

fn range_at_pm(cluster: &Cluster, stream: StreamId, index: u32) -> Range {
    cluster
        .ranges(stream)
        .expect("LIST_RANGES")
        .into_iter()
        .find(|range| range.index.0 == index)
        .unwrap_or_else(|| panic!("no range {stream}/{index} at the PM"))
}

/// The writer child dies (SIGKILL mid-stream, or an abort right after `abort` during a seal
/// provoked by killing a replica); a new writer takes over; everything acknowledged survives,
/// also the loss of any single replica after the recovery.
fn a_dead_writer_is_recovered_by_the_next(abort: Option<SealStep>) {
    let _serial = serial();
    let mut cluster = Cluster::start(4);
    let pm = cluster.pm_address();
    let client = connect(&pm);
    let stream = create_stream(&client, 3, 2);
    let mut child = ChildWriter::spawn(&pm, stream, abort);
    child.wait_acknowledged(120, PATIENCE);
    let tail = Tail::start(connect(&pm), stream, Offset(0));
    let open = cluster.open_range(stream, PATIENCE);
    assert_eq!(open.index.0, 0);

    let mut dead_node = None;
    match abort {
        None => child.kill(),
        Some(step) => {
            let victim = cluster.index_of_address(&open.replicas[0].address);
            cluster.nodes[victim].kill();
            dead_node = Some(victim);
            let status = child.wait_exit(PATIENCE);
            assert!(!status.success(), "the child aborts in the hook: {status}");
            child.drain();
            assert!(
                child
                    .hooks
                    .iter()
                    .any(|line| line == &format!("ABORT {step:?}")),
                "the child died in the seal hook after {step:?}; hooks {:?}",
                child.hooks
            );
        }
    }
    child.drain();
    let acknowledged = child.log.clone();
    eprintln!(
        "writer child gone ({abort:?}): {} calls acknowledged, hooks {:?}",
        acknowledged.acknowledged_calls(),
        child.hooks
    );
    let before = range_at_pm(&cluster, stream, 0);
    assert_eq!(
        before.end_offset.is_some(),
        abort == Some(SealStep::Committed),
        "the PM records the end only at the commit step: {before:?}"
    );

    // A new writer completes or redoes the seal before it writes.
    let opened_at = Instant::now();
    let writer = block_on("open_writer (recovery)", client.open_writer(stream))
        .expect("open_writer recovers the dead writer's range");
    let sealed = range_at_pm(&cluster, stream, 0);
    let end = sealed
        .end_offset
        .expect("open_writer seals the dead writer's range");
    eprintln!(
        "recovery: open_writer took {:.1} ms; range 0 sealed at {end} (epoch {})",
        opened_at.elapsed().as_secs_f64() * 1e3,
        writer.epoch()
    );
    if let Some(recorded) = before.end_offset {
        assert_eq!(
            end, recorded,
            "an end the PM recorded is adopted, never recomputed"
        );
    }
    let last_acknowledged = acknowledged
        .acknowledged
        .values()
        .map(|(_, next)| *next)
        .max()
        .unwrap_or(Offset(0));
    assert!(
        end >= last_acknowledged,
        "the end {end} keeps every acknowledged offset (below {last_acknowledged})"
    );
    // Each reachable replica of range 0 is sealed at the end (whoever finds the range sealed at
    // the PM completes the seal on the replicas).
    let checks = check_sealed_ranges(&pm, stream).unwrap_or_else(|error| panic!("{error}"));
    let reachable = sealed.replicas.len() - usize::from(dead_node.is_some());
    assert_eq!(
        checks[0].holders.len(),
        reachable,
        "every reachable replica holds [start, end) after the repair: {:?}",
        checks[0].replicas
    );

    let pump = Pump::start(writer, PumpOptions::new(RECOVERY_SESSION));
    pump.wait_acknowledged(64, PATIENCE);
    let (writer, events) = pump.stop();
    block_on("close", writer.close()).expect("close");
    let sessions = [
        acknowledged,
        writing::session_log(RECOVERY_SESSION, &events),
    ];
    verify_everything(&pm, &client, stream, &sessions);
    let complete = read_to_end(&client, stream, Offset(0)).expect("read back");

    // The reader that tailed through the crash and the recovery saw exactly the final stream:
    // nothing that the recovery dropped, nothing twice.
    tail.wait_seen(complete.len(), PATIENCE);
    let seen = tail.stop();
    assert_eq!(
        seen.len(),
        complete.len(),
        "the tailing reader saw more than the stream holds"
    );
    for ((offset, record, _), (final_offset, final_record)) in seen.iter().zip(complete.iter()) {
        assert_eq!(offset, final_offset);
        assert!(
            record == final_record,
            "the tailing reader saw at offset {offset} a record the stream does not hold (dropped by the recovery?)"
        );
    }

    // A replica killed after the repair loses nothing: each holder of range 0 alone serves every
    // acknowledged batch.
    if let Some(victim) = dead_node {
        cluster.nodes[victim].restart();
        cluster.wait_node_alive(victim, true, PATIENCE);
    }
    for holder in checks[0].holders.clone() {
        let others: Vec<usize> = checks[0]
            .holders
            .iter()
            .filter(|other| **other != holder)
            .map(|other| cluster.index_of(*other))
            .collect();
        for &other in &others {
            cluster.nodes[other].kill();
        }
        let records = read_to_end(&connect(&pm), stream, Offset(0)).unwrap_or_else(|error| {
            panic!("reading with only node {holder} of range 0's holders up: {error:?}")
        });
        verify_stream(&records, &sessions, Offset(0)).unwrap_or_else(|error| {
            panic!("with only node {holder} of range 0's holders up: {error}")
        });
        for &other in &others {
            cluster.nodes[other].restart();
            cluster.wait_node_alive(other, true, PATIENCE);
        }
    }
}

#[test]
fn a_writer_killed_mid_stream_is_recovered_by_the_next_writer() {
    a_dead_writer_is_recovered_by_the_next(None);
}

#[test]
fn a_writer_killed_after_fencing_has_its_seal_redone_by_the_next_writer() {
    a_dead_writer_is_recovered_by_the_next(Some(SealStep::Fenced));
}

#[test]
fn a_writer_killed_after_the_repair_has_its_seal_redone_by_the_next_writer() {
    a_dead_writer_is_recovered_by_the_next(Some(SealStep::Repaired));
}

#[test]
fn a_writer_killed_after_the_pm_commit_has_its_seal_completed_by_the_next_writer() {
    a_dead_writer_is_recovered_by_the_next(Some(SealStep::Committed));
}

#[test]
fn a_second_writer_fences_the_first() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let pm = cluster.pm_address();
    let first_client = connect(&pm);
    let stream = create_stream(&first_client, 3, 2);
    let first = block_on("open_writer", first_client.open_writer(stream)).expect("open_writer");
    let first_epoch = first.epoch();
    let pump = Pump::start(first, PumpOptions::new(1));
    pump.wait_acknowledged(100, PATIENCE);

    // Another client (another process, as far as the cluster can tell) opens a writer.
    let second_client = connect(&pm);
    let second =
        block_on("open_writer", second_client.open_writer(stream)).expect("the second open_writer");
    assert!(
        second.epoch() > first_epoch,
        "opening a writer raises the epoch strictly: {} then {}",
        first_epoch,
        second.epoch()
    );
    let (call, error) = wait_for(PATIENCE, "the first writer is told it is fenced", || {
        pump.failure()
            .ok_or_else(|| format!("{} acknowledged, no failure yet", pump.acknowledged()))
    });
    assert!(
        matches!(error, SdkError::Fenced { .. }),
        "the first writer's call {call} fails with Fenced, not {error:?}"
    );
    let (first, events) = pump.stop();
    let first_failure = events
        .iter()
        .position(|event| event.result.is_err())
        .expect("a failure");
    assert!(
        events[first_failure..]
            .iter()
            .all(|event| event.result.is_err()),
        "nothing is acknowledged to the first writer after it was fenced"
    );
    let late = block_on(
        "append after the fence",
        first.append(call_records(1, 1 << 40, 1, 64)),
    );
    assert!(
        matches!(late, Err(SdkError::Fenced { .. })),
        "a fenced writer stays fenced: {late:?}"
    );

    let pump = Pump::start(second, PumpOptions::new(2));
    pump.wait_acknowledged(100, PATIENCE);
    let (second, second_events) = pump.stop();
    block_on("close", second.close()).expect("close the second writer");
    verify_everything(
        &pm,
        &first_client,
        stream,
        &[
            writing::session_log(1, &events),
            writing::session_log(2, &second_events),
        ],
    );
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Writer processes SIGKILLed one after another at random moments, every other time together
/// with a replica of the open range (so that the writer dies in the middle of its seal, or the
/// next writer recovers with a replica missing), and every third one aborting in the middle of
/// its recovery of its predecessor's range: each new writer (a new process) recovers its
/// predecessor's range in `open_writer`, and in the end every call any of them saw acknowledged
/// is in the stream, in order, once; a reader tailing all along saw exactly the final stream.
#[test]
fn writers_killed_again_and_again_lose_nothing_acknowledged() {
    const WRITERS: u32 = 8;
    let _serial = serial();
    let mut cluster = Cluster::start(4);
    let pm = cluster.pm_address();
    let client = connect(&pm);
    let stream = create_stream(&client, 3, 2);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut sessions = Vec::new();
    let mut tail = None;
    for session in 1..=WRITERS {
        if session % 3 == 0 {
            // This writer dies in the middle of recovering its predecessor's range, after a
            // random step of that seal, before it writes anything.
            let step = [SealStep::Fenced, SealStep::Repaired, SealStep::Committed]
                [(next_random(&mut seed) % 3) as usize];
            let mut child = ChildWriter::spawn_session(&pm, stream, Some(step), session);
            let Some(status) = child.wait_exit_or_acknowledged(PATIENCE) else {
                // Its predecessor died after its range's end was recorded and before it
                // opened another: nothing to recover (the replicas' seal is completed without
                // a seal of its own). It writes; kill it as any other.
                child.wait_acknowledged(20, PATIENCE);
                child.kill();
                child.drain();
                eprintln!(
                    "writer {session}: had nothing to recover (hooks {:?}); killed after {} acknowledged calls",
                    child.hooks,
                    child.log.acknowledged_calls()
                );
                sessions.push(child.log.clone());
                continue;
            };
            assert!(!status.success(), "the recovering writer aborts: {status}");
            child.drain();
            assert!(
                child.hooks.contains(&format!("ABORT {step:?}")),
                "writer {session} died in its recovery seal after {step:?}: {:?}",
                child.hooks
            );
            eprintln!(
                "writer {session}: died recovering after {step:?}, {} calls acknowledged",
                child.log.acknowledged_calls()
            );
            sessions.push(child.log.clone());
            continue;
        }
        let mut child = ChildWriter::spawn_session(&pm, stream, None, session);
        let calls = 20 + next_random(&mut seed) % 150;
        child.wait_acknowledged(calls, PATIENCE);
        if tail.is_none() {
            tail = Some(Tail::start(connect(&pm), stream, Offset(0)));
        }
        let mut victim = None;
        if session % 2 == 0 {
            let open = cluster.open_range(stream, PATIENCE);
            let which = (next_random(&mut seed) % open.replicas.len() as u64) as usize;
            let index = cluster.index_of_address(&open.replicas[which].address);
            cluster.nodes[index].kill();
            victim = Some(index);
            // Into the seal, maybe: a few ms for the writer to notice.
            std::thread::sleep(Duration::from_millis(next_random(&mut seed) % 40));
        }
        child.kill();
        child.drain();
        eprintln!(
            "writer {session}: killed after {} acknowledged calls{}; hooks {:?}",
            child.log.acknowledged_calls(),
            victim.map_or_else(String::new, |index| format!(", with node {index}")),
            child.hooks
        );
        sessions.push(child.log.clone());
        if let Some(index) = victim {
            cluster.nodes[index].restart();
            cluster.wait_node_alive(index, true, PATIENCE);
        }
    }
    // The last writer recovers, writes a little and closes.
    let writer = block_on("open_writer (recovery)", client.open_writer(stream))
        .expect("open_writer recovers");
    let pump = Pump::start(writer, PumpOptions::new(WRITERS + 1));
    pump.wait_acknowledged(32, PATIENCE);
    let (writer, events) = pump.stop();
    block_on("close", writer.close()).expect("close");
    sessions.push(writing::session_log(WRITERS + 1, &events));
    verify_everything(&pm, &client, stream, &sessions);
    let complete = read_to_end(&client, stream, Offset(0)).expect("read back");
    let tail = tail.expect("started");
    tail.wait_seen(complete.len(), PATIENCE);
    let seen = tail.stop();
    assert_eq!(
        seen.len(),
        complete.len(),
        "the tailing reader saw more than the stream holds"
    );
    for ((offset, record, _), (final_offset, final_record)) in seen.iter().zip(complete.iter()) {
        assert_eq!(offset, final_offset);
        assert!(
            record == final_record,
            "the tailing reader saw at offset {offset} a record the stream does not hold"
        );
    }
}

#[test]
fn appends_keep_call_order_when_the_writer_window_is_full() {
    // One thread calls append in order and hands each future to another that awaits them in
    // call order (what any pipelining application does), with more appends outstanding than
    // the writer's window holds: the stream must hold the calls in call order.
    let _serial = serial();
    let cluster = Cluster::start(3);
    let pm = cluster.pm_address();
    let mut config = writing::test_config(&pm);
    config.max_in_flight_batches = 4;
    let client = client::Client::connect(config).expect("connect");
    let stream = create_stream(&client, 3, 2);
    let writer = block_on("open_writer", client.open_writer(stream)).expect("open_writer");
    let pump = Pump::start(
        writer,
        PumpOptions {
            in_flight: 32,
            max_calls: Some(400),
            ..PumpOptions::new(1)
        },
    );
    pump.wait_acknowledged(400, PATIENCE);
    let (writer, events) = pump.stop();
    block_on("close", writer.close()).expect("close");
    let order: Vec<u64> = events
        .iter()
        .filter_map(|event| event.result.as_ref().ok().map(|ack| ack.base_offset.0))
        .collect();
    let first_out_of_order = order.windows(2).position(|pair| pair[1] <= pair[0]);
    assert!(
        first_out_of_order.is_none(),
        "calls acknowledged at offsets out of call order, first at call {:?}: {:?}",
        first_out_of_order.map(|position| position + 1),
        first_out_of_order.map(|position| &order[position..(position + 4).min(order.len())])
    );
    verify_everything(&pm, &client, stream, &[writing::session_log(1, &events)]);
}
