//! Crash test: a child process appends with `sync: always` and prints every acknowledged batch;
//! the parent kills it with SIGKILL at a random moment, 24 times on the same directory. After
//! every kill the parent reopens the store and checks that every acknowledged batch reads back
//! bit-exact and that new appends succeed.
//!
//! The child is this same test binary re-executed with `--ignored --exact crash_child` and the
//! store directory in `STORE_CRASH_DIR`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{batch, small_config};
use store::{RangeIndex, RangeKey, Store, StreamId, SyncMode};

const KILLS: usize = 24;
const RANGES: u64 = 6;
const IN_FLIGHT: usize = 24;

fn batch_len(range: RangeKey, base: u64) -> usize {
    let mix = base.wrapping_mul(7919) ^ range.stream_id.0.wrapping_mul(104_729);
    64 + (mix % 12_000) as usize
}

/// Runs only as the child of `acknowledged_batches_survive_sigkill`.
#[test]
#[ignore = "child process of the crash test; runs only when STORE_CRASH_DIR is set"]
fn crash_child() {
    let Ok(directory) = std::env::var("STORE_CRASH_DIR") else {
        return;
    };
    let mut config = small_config(std::path::Path::new(&directory));
    config.sync = SyncMode::Always;
    config.checkpoint_interval_ms = 50;
    let (store, mut wal) = Store::open_sync(config).expect("child: open");
    let mut next: Vec<u64> = (0..RANGES)
        .map(|stream| {
            wal.index(RangeKey::new(StreamId(stream), RangeIndex(0)))
                .map_or(0, |summary| summary.next_offset.0)
        })
        .collect();
    let mut submitted = BTreeMap::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut turn = 0u64;
    loop {
        while wal.in_flight() < IN_FLIGHT {
            let stream = turn % RANGES;
            turn += 1;
            let range = RangeKey::new(StreamId(stream), RangeIndex(0));
            let base = next[stream as usize];
            let len = batch_len(range, base);
            let count = (len / 100).max(1) as u32;
            let ticket = wal
                .submit_append(range, store::Offset(base), count, batch(range, base, len))
                .expect("child: submit");
            next[stream as usize] += count as u64;
            submitted.insert(ticket, (stream, base, len));
        }
        if let Some((ticket, result)) = wal.next_completed(None) {
            let (stream, base, len) = submitted.remove(&ticket).expect("known ticket");
            let result = result.expect("child: append");
            // One write per line: a pipe write this small is atomic.
            writeln!(out, "ACK {stream} {base} {len} {}", result.position).unwrap();
            out.flush().unwrap();
        }
        let _ = &store;
    }
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let directory = tempfile::tempdir().unwrap();
    let config = small_config(directory.path());
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let executable = std::env::current_exe().unwrap();
    // (stream, base) -> len of every batch ever acknowledged.
    let mut acknowledged: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for kill in 0..KILLS {
        let mut child = Command::new(&executable)
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("STORE_CRASH_DIR", directory.path())
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
        // The test harness prints its own lines first.
        loop {
            let line = lines.recv_timeout(Duration::from_secs(30));
            match line.as_deref() {
                Ok(line) if line.ends_with("READY") => break,
                Ok(line) => eprintln!("child: {line}"),
                Err(error) => panic!("kill {kill}: child did not start: {error}"),
            }
        }
        // Kill at a random moment while appends are in flight.
        let delay = Duration::from_millis(1 + next_random(&mut seed) % 120);
        let started = Instant::now();
        let mut acks = 0;
        let mut record = |line: String, acknowledged: &mut BTreeMap<(u64, u64), usize>| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first() != Some(&"ACK") {
                return;
            }
            let stream: u64 = fields[1].parse().unwrap();
            let base: u64 = fields[2].parse().unwrap();
            let len: usize = fields[3].parse().unwrap();
            acknowledged.insert((stream, base), len);
            acks += 1;
        };
        while let Some(left) = delay.checked_sub(started.elapsed()) {
            match lines.recv_timeout(left) {
                Ok(line) => record(line, &mut acknowledged),
                Err(_) => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for line in lines.try_iter() {
            record(line, &mut acknowledged);
        }
        println!(
            "kill {kill}: after {:?}, {acks} new acknowledgements, {} in total",
            started.elapsed(),
            acknowledged.len()
        );

        // Restart in this process and check every acknowledged batch.
        let (store, mut wal) = Store::open_sync(config.clone()).unwrap();
        for stream in 0..RANGES {
            let range = RangeKey::new(StreamId(stream), RangeIndex(0));
            let mut held: BTreeMap<u64, bytes::Bytes> = BTreeMap::new();
            if let Some(summary) = wal.index(range) {
                let mut offset = summary.start_offset;
                while offset < summary.next_offset {
                    let batches = wal.read(range, offset, 1 << 20).unwrap();
                    assert!(!batches.is_empty());
                    for data in batches {
                        held.insert(offset.0, data.clone());
                        offset += (data.len() / 100).max(1) as u64;
                    }
                }
            }
            for (&(_, base), &len) in acknowledged.range((stream, 0)..(stream + 1, 0)) {
                let data = held.get(&base).unwrap_or_else(|| {
                    panic!("kill {kill}: acknowledged batch {stream}/{base} lost")
                });
                assert_eq!(
                    *data,
                    batch(range, base, len),
                    "kill {kill}: {stream}/{base}"
                );
            }
        }
        // New appends succeed after every restart.
        let probe = RangeKey::new(StreamId(1000), RangeIndex(0));
        let next = wal.index(probe).map_or(0, |summary| summary.next_offset.0);
        wal.append(probe, store::Offset(next), 1, batch(probe, next, 10))
            .unwrap();
        if kill % 2 == 0 {
            store.shutdown();
        } else {
            store.halt();
        }
    }
    assert!(
        acknowledged.len() > KILLS,
        "the child acknowledged too little to test anything: {}",
        acknowledged.len()
    );
}
