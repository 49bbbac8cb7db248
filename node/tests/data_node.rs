//! End-to-end tests of the real `data-node` binary over loopback TCP.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{is_error, make_batch, split_batches, Client, Node, NodeOptions};
use wire::msg::{AppendResponse, GoawayReason};
use wire::{ErrorCode, Offset};

fn temp_data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    (root, data)
}

/// Appends `count` batches of 3 records each to a fresh range and returns the batches sent.
fn fill_range(client: &mut Client, stream: u64, count: usize, confirm: bool) -> Vec<Bytes> {
    let created = client.create_range(stream, 0, 1, 0);
    assert!(created.is_ok(), "create range {stream}: {created:?}");
    let mut sent = Vec::new();
    for number in 0..count as u64 {
        let base = number * 3;
        let batch = make_batch(stream, 0, 1, base, 3, 100);
        let confirmed = confirm.then_some(base + 3);
        let (response, _) = client
            .append(stream, 0, 1, &batch, confirmed)
            .expect("append acknowledged");
        assert_eq!(response.base_offset.0, base);
        assert_eq!(response.next_offset.0, base + 3);
        sent.push(batch);
    }
    sent
}

/// Fetches everything readable from `start`, following `next` until an empty answer.
fn fetch_all(client: &mut Client, stream: u64, start: u64) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut offset = start;
    loop {
        let (header, payload) = client
            .fetch(stream, 0, offset, 64 * 1024, 0)
            .expect("fetch");
        let found = split_batches(&payload);
        if found.is_empty() {
            let _ = header;
            return batches;
        }
        for (base, count, bytes) in found {
            assert!(
                base <= offset && offset < base + u64::from(count),
                "batch {base}+{count} does not hold {offset}"
            );
            offset = base + u64::from(count);
            batches.push(bytes);
        }
    }
}

#[test]
fn append_then_fetch_is_bit_exact() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    let sent = fill_range(&mut client, 7, 20, true);
    let fetched = fetch_all(&mut client, 7, 0);
    assert_eq!(fetched, sent, "fetched batches differ from appended ones");
    // From the middle of a batch: the batch holding the offset comes first.
    let (_, payload) = client.fetch(7, 0, 4, 1, 0).unwrap();
    let batches = split_batches(&payload);
    assert_eq!(
        batches.len(),
        1,
        "max_bytes 1 still returns one whole batch"
    );
    assert_eq!(batches[0].2, sent[1]);
}

#[test]
fn fetch_never_passes_the_confirmed_offset() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    client.create_range(3, 0, 1, 0).unwrap();
    let first = make_batch(3, 0, 1, 0, 2, 10);
    let second = make_batch(3, 0, 1, 2, 2, 10);
    client.append(3, 0, 1, &first, None).unwrap();
    let (header, payload) = client.fetch(3, 0, 0, 1 << 20, 0).unwrap();
    assert!(payload.is_empty(), "nothing confirmed yet");
    assert_eq!(header.next_offset.0, 2);
    // The second append confirms the first batch only.
    client.append(3, 0, 1, &second, Some(2)).unwrap();
    let (header, payload) = client.fetch(3, 0, 0, 1 << 20, 0).unwrap();
    assert_eq!(header.confirmed_offset.map(|offset| offset.0), Some(2));
    assert_eq!(payload, first);
    // Sealing makes everything durable readable.
    let (sealed, _) = client.seal(3, 0, 1, None).unwrap();
    assert_eq!(sealed.end_offset, Some(Offset(4)));
    assert_eq!(fetch_all(&mut client, 3, 0), vec![first, second]);
}

#[test]
fn hundred_ranges_written_concurrently_from_several_connections() {
    let (_root, data) = temp_data_dir();
    let node = Node::start_with(
        &data,
        &NodeOptions {
            workers: 2,
            ..NodeOptions::default()
        },
    );
    let address = node.address;
    let threads: Vec<_> = (0..4u64)
        .map(|connection| {
            std::thread::spawn(move || {
                let mut client = Client::connect(address).unwrap();
                let streams: Vec<u64> = (0..25)
                    .map(|number| 1000 + connection * 25 + number)
                    .collect();
                for &stream in &streams {
                    client.create_range(stream, 0, 1, 0).unwrap();
                }
                // Pipeline one append per range per round, then collect the answers.
                let mut sent: Vec<Vec<Bytes>> = vec![Vec::new(); streams.len()];
                for round in 0..4u64 {
                    let mut ids = Vec::new();
                    for (slot, &stream) in streams.iter().enumerate() {
                        let batch = make_batch(stream, 0, 1, round * 2, 2, 64);
                        let request = common::append_request(stream, 0, 1, Some(round * 2 + 2));
                        ids.push(client.send(&request, &batch).unwrap());
                        sent[slot].push(batch);
                    }
                    for id in ids {
                        let frame = client.wait_for(id).unwrap();
                        let result: common::CallResult<AppendResponse> =
                            common::decode_response(&frame);
                        assert!(result.is_ok(), "append failed: {result:?}");
                    }
                }
                for (slot, &stream) in streams.iter().enumerate() {
                    assert_eq!(
                        fetch_all(&mut client, stream, 0),
                        sent[slot],
                        "stream {stream}"
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    // Every range is listed, gathered from both workers, in order, with its durable end.
    let (listed, _) = node.client().list_ranges(None).unwrap();
    let streams: Vec<u64> = listed
        .ranges
        .iter()
        .map(|range| range.stream_id.0)
        .collect();
    assert_eq!(streams, (1000..1100).collect::<Vec<u64>>());
    assert!(listed
        .ranges
        .iter()
        .all(|range| range.next_offset.map(|offset| offset.0) == Some(8)));
    let (one, _) = node.client().list_ranges(Some(1042)).unwrap();
    assert_eq!(one.ranges.len(), 1);
    let metrics = node.metrics();
    assert!(
        metrics.contains("es_requests_total{operation=\"append\"} 400"),
        "{metrics}"
    );
}

#[test]
fn long_poll_fetch_wakes_on_append_and_expires_empty() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut writer = node.client();
    writer.create_range(11, 0, 1, 0).unwrap();

    // Nothing arrives: the fetch answers empty after max_wait_ms.
    let mut reader = node.client();
    let started = Instant::now();
    let (_, payload) = reader.fetch(11, 0, 0, 1 << 20, 300).unwrap();
    let waited = started.elapsed();
    assert!(payload.is_empty());
    assert!(
        waited >= Duration::from_millis(290),
        "answered after {waited:?}, before max_wait_ms"
    );
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");

    // An append arrives while the fetch waits: it answers right after the append is durable.
    let request_id = reader
        .send(&common::fetch_request(11, 0, 0, 1 << 20, 10_000), &[])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let batch = make_batch(11, 0, 1, 0, 1, 32);
    writer.append(11, 0, 1, &batch, Some(1)).unwrap();
    let acknowledged = Instant::now();
    let frame = reader.wait_for(request_id).unwrap();
    let woke_after = acknowledged.elapsed();
    let (_, payload) = common::decode_response::<wire::msg::FetchResponse>(&frame).unwrap();
    assert_eq!(payload, batch);
    assert!(
        woke_after < Duration::from_millis(500),
        "long poll answered {woke_after:?} after the append"
    );
}

#[test]
fn appends_are_refused_with_distinct_codes() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    assert!(is_error(
        &client.append(5, 0, 1, &make_batch(5, 0, 1, 0, 1, 8), None),
        ErrorCode::RangeNotFound
    ));
    client.create_range(5, 0, 3, 0).unwrap();
    // The same range at another start (identical parameters would be a successful retry).
    assert!(is_error(
        &client.create_range(5, 0, 3, 10),
        ErrorCode::RangeAlreadyExists
    ));

    // Stale epoch.
    let stale = client.append(5, 0, 2, &make_batch(5, 0, 2, 0, 1, 8), None);
    assert!(is_error(&stale, ErrorCode::StaleEpoch), "{stale:?}");
    assert_eq!(stale.unwrap_err().detail, 3);

    client
        .append(5, 0, 3, &make_batch(5, 0, 3, 0, 2, 8), None)
        .unwrap();
    // A fenced writer cannot move the confirmed offset either.
    let fenced = client.append(5, 0, 2, &make_batch(5, 0, 2, 2, 1, 8), Some(2));
    assert!(is_error(&fenced, ErrorCode::StaleEpoch), "{fenced:?}");
    let (described, _) = client.describe(5, 0).unwrap();
    assert_eq!(
        described.range.confirmed_offset.map(|offset| offset.0),
        Some(0)
    );
    // Duplicate of a durable batch, and a gap.
    let duplicate = client.append(5, 0, 3, &make_batch(5, 0, 3, 0, 2, 8), None);
    assert!(
        is_error(&duplicate, ErrorCode::OffsetDuplicate),
        "{duplicate:?}"
    );
    assert_eq!(duplicate.unwrap_err().detail, 2);
    let gap = client.append(5, 0, 3, &make_batch(5, 0, 3, 5, 1, 8), None);
    assert!(is_error(&gap, ErrorCode::OffsetGap), "{gap:?}");
    assert_eq!(gap.unwrap_err().detail, 2);

    // Duplicate of a batch still in flight: both copies in one TCP write.
    let batch = make_batch(5, 0, 3, 2, 1, 8);
    let request = common::append_request(5, 0, 3, None);
    let mut frames = BytesMut::new();
    wire::encode_request(&mut frames, 9001, &request, &batch).unwrap();
    wire::encode_request(&mut frames, 9002, &request, &batch).unwrap();
    client.raw_stream().write_all(&frames).unwrap();
    let first = common::decode_response::<AppendResponse>(&client.wait_for(9001).unwrap());
    let second = common::decode_response::<AppendResponse>(&client.wait_for(9002).unwrap());
    assert!(first.is_ok(), "{first:?}");
    assert!(
        is_error(&second, ErrorCode::OffsetInFlightDuplicate),
        "{second:?}"
    );

    // A corrupt batch is refused before it is stored.
    let mut corrupt = make_batch(5, 0, 3, 3, 1, 8).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    assert!(is_error(
        &client.append(5, 0, 3, &corrupt, None),
        ErrorCode::CorruptedData
    ));

    // Seal: appends are refused with the end; a stale sealer is refused too.
    assert!(is_error(&client.seal(5, 0, 2, None), ErrorCode::StaleEpoch));
    let (sealed, _) = client.seal(5, 0, 3, None).unwrap();
    assert_eq!(sealed.end_offset, Some(Offset(3)));
    let after_seal = client.append(5, 0, 3, &make_batch(5, 0, 3, 3, 1, 8), None);
    assert!(
        is_error(&after_seal, ErrorCode::RangeSealed),
        "{after_seal:?}"
    );
    assert_eq!(after_seal.unwrap_err().detail, 3);
    assert_eq!(
        client.seal(5, 0, 3, Some(3)).unwrap().0.end_offset,
        Some(Offset(3)),
        "same end is idempotent"
    );
    assert!(is_error(
        &client.seal(5, 0, 3, Some(2)),
        ErrorCode::RangeSealed
    ));
    let (described, _) = client.describe(5, 0).unwrap();
    assert_eq!(described.range.end_offset.map(|offset| offset.0), Some(3));
    assert!(is_error(
        &client.fetch(5, 0, 4, 1024, 0),
        ErrorCode::OffsetOutOfRange
    ));
}

#[test]
fn restart_keeps_every_acknowledged_batch_and_range() {
    let (_root, data) = temp_data_dir();
    let (sealed_batches, open_batches);
    {
        let mut node = Node::start(&data);
        let mut client = node.client();
        sealed_batches = fill_range(&mut client, 21, 10, false);
        client.seal(21, 0, 1, None).unwrap();
        open_batches = fill_range(&mut client, 22, 7, false);
        client.create_range(23, 0, 1, 500).unwrap();
        // A newer writer (epoch 2) fences the creator's epoch on this range.
        client.create_range(24, 0, 1, 0).unwrap();
        client
            .append(24, 0, 2, &make_batch(24, 0, 2, 0, 1, 8), None)
            .unwrap();
        // An unclean stop: every acknowledged batch must still be there.
        node.signal(libc::SIGKILL);
        node.wait_exit(Duration::from_secs(10)).expect("killed");
    }
    let node = Node::start(&data);
    let mut client = node.client();
    let (sealed, _) = client.describe(21, 0).unwrap();
    assert_eq!(sealed.range.end_offset.map(|offset| offset.0), Some(30));
    assert_eq!(fetch_all(&mut client, 21, 0), sealed_batches);

    let (open, _) = client.describe(22, 0).unwrap();
    assert_eq!(open.range.end_offset, None);
    assert_eq!(open.range.next_offset.map(|offset| offset.0), Some(21));
    // The writer continues where it left off and confirms everything.
    let next = make_batch(22, 0, 1, 21, 3, 100);
    client.append(22, 0, 1, &next, Some(24)).unwrap();
    let mut expected = open_batches;
    expected.push(next);
    assert_eq!(fetch_all(&mut client, 22, 0), expected);

    let (empty, _) = client.describe(23, 0).unwrap();
    assert_eq!(empty.range.start_offset.0, 500);
    assert_eq!(empty.range.next_offset.map(|offset| offset.0), Some(500));

    // The fence survived the restart.
    let fenced = client.append(24, 0, 1, &make_batch(24, 0, 1, 1, 1, 8), None);
    assert!(is_error(&fenced, ErrorCode::StaleEpoch), "{fenced:?}");
    assert_eq!(fenced.unwrap_err().detail, 2);
}

#[test]
fn sigterm_while_appending_sends_goaway_and_loses_nothing() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let address = node.address;
    let writer = std::thread::spawn(move || {
        let mut client = Client::connect(address).unwrap();
        client.create_range(31, 0, 1, 0).unwrap();
        let mut acknowledged = Vec::new();
        let mut base = 0u64;
        loop {
            let batch = make_batch(31, 0, 1, base, 2, 200);
            let request = common::append_request(31, 0, 1, None);
            let Ok(id) = client.send(&request, &batch) else {
                break;
            };
            match client.wait_for(id) {
                Ok(frame) => match common::decode_response::<AppendResponse>(&frame) {
                    Ok(_) => {
                        acknowledged.push(batch);
                        base += 2;
                    }
                    Err(error) => {
                        assert!(
                            matches!(error.code, ErrorCode::ShuttingDown),
                            "append refused with {error:?} during shutdown"
                        );
                        break;
                    }
                },
                Err(_) => break,
            }
            if client.goaway.is_some() {
                break;
            }
        }
        (acknowledged, client.goaway.clone())
    });
    std::thread::sleep(Duration::from_millis(300));
    node.signal(libc::SIGTERM);
    let (acknowledged, goaway) = writer.join().expect("writer thread");
    let status = node
        .wait_exit(Duration::from_secs(15))
        .expect("node exits after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{}",
        node.log()
    );
    let goaway = goaway.expect("the client saw a GOAWAY");
    assert_eq!(goaway.reason, GoawayReason::ShuttingDown);
    assert!(
        !acknowledged.is_empty(),
        "some appends were acknowledged before the signal"
    );

    let node = Node::start(&data);
    let mut client = node.client();
    client.seal(31, 0, 1, None).unwrap();
    let fetched = fetch_all(&mut client, 31, 0);
    assert!(
        fetched.len() >= acknowledged.len(),
        "lost acknowledged batches"
    );
    assert_eq!(&fetched[..acknowledged.len()], &acknowledged[..]);
}

#[test]
fn garbage_on_one_connection_leaves_others_unaffected() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut healthy = node.client();
    healthy.create_range(41, 0, 1, 0).unwrap();

    // An intact frame with an unknown opcode gets an error response; the connection lives on.
    let mut unknown = node.client();
    let mut frame = BytesMut::new();
    wire::encode_request(&mut frame, 77, &wire::msg::PingRequest {}, &[]).unwrap();
    frame[8..10].copy_from_slice(&0x7777u16.to_le_bytes());
    let crc_at = frame.len() - 4;
    let crc = crc32c_of(&frame[4..crc_at]);
    frame[crc_at..].copy_from_slice(&crc.to_le_bytes());
    unknown.raw_stream().write_all(&frame).unwrap();
    // The error response echoes the unknown opcode, which the client's decoder cannot name
    // either, so check its bytes: flags RESPONSE|END|ERROR, opcode, request id, error code.
    let mut answer = [0u8; 28];
    std::io::Read::read_exact(unknown.raw_stream(), &mut answer).unwrap();
    let length = u32::from_le_bytes(answer[0..4].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; length + 4 - answer.len()];
    std::io::Read::read_exact(unknown.raw_stream(), &mut rest).unwrap();
    assert_eq!(answer[7], 0x07, "flags");
    assert_eq!(u16::from_le_bytes([answer[8], answer[9]]), 0x7777);
    assert_eq!(u64::from_le_bytes(answer[12..20].try_into().unwrap()), 77);
    assert_eq!(
        u16::from_le_bytes([answer[24], answer[25]]),
        ErrorCode::UnknownOpcode.as_u16()
    );
    assert_eq!(
        unknown.ping(b"still here").unwrap(),
        Bytes::from_static(b"still here")
    );

    // An intact frame whose header does not parse gets MALFORMED_HEADER; the connection lives on.
    let mut malformed = BytesMut::new();
    wire::encode_frame(
        &mut malformed,
        wire::Opcode::Append,
        wire::Flags::REQUEST,
        78,
        &[1, 2, 3],
        &[],
    )
    .unwrap();
    unknown.raw_stream().write_all(&malformed).unwrap();
    let answer = unknown.wait_for(78).unwrap();
    assert!(answer.is_error());
    assert_eq!(
        answer.error_response().unwrap().code,
        ErrorCode::MalformedHeader
    );
    assert_eq!(
        unknown.ping(b"again").unwrap(),
        Bytes::from_static(b"again")
    );

    // A frame longer than the maximum is refused before anything is reserved for it.
    let mut oversized = node.client();
    let mut prefix = Vec::new();
    prefix.extend_from_slice(&(32u32 << 20).to_le_bytes());
    prefix.extend_from_slice(&wire::frame::MAGIC.to_le_bytes());
    prefix.push(wire::frame::VERSION);
    oversized.raw_stream().write_all(&prefix).unwrap();
    let frame = oversized
        .read_frame()
        .expect("GOAWAY for the oversized frame");
    let goaway: wire::msg::Goaway = frame.decode_message().unwrap();
    assert_eq!(goaway.reason, GoawayReason::ProtocolError);
    assert!(oversized.read_frame().is_err(), "closed after the GOAWAY");

    // Garbage: the node sends GOAWAY(PROTOCOL_ERROR) and closes that connection.
    let mut garbage = node.client();
    garbage.raw_stream().write_all(&[0xAB; 64]).unwrap();
    let mut saw_goaway = false;
    while let Ok(frame) = garbage.read_frame() {
        if frame.opcode == wire::Opcode::Goaway {
            let goaway: wire::msg::Goaway = frame.decode_message().unwrap();
            assert_eq!(goaway.reason, GoawayReason::ProtocolError);
            saw_goaway = true;
        }
    }
    assert!(saw_goaway, "no GOAWAY before the close");

    // The other connection does not notice.
    let batch = make_batch(41, 0, 1, 0, 1, 16);
    healthy.append(41, 0, 1, &batch, Some(1)).unwrap();
    assert_eq!(healthy.fetch(41, 0, 0, 1024, 0).unwrap().1, batch);
    assert!(
        node.metrics().contains("es_bad_frames_total 4"),
        "{}",
        node.metrics()
    );
}

#[test]
fn command_line_reports_usage_and_config_errors_with_exit_code_2() {
    let binary = env!("CARGO_BIN_EXE_data-node");
    let help = Command::new(binary).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
    let version = Command::new(binary).arg("--version").output().unwrap();
    assert_eq!(version.status.code(), Some(0));

    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("bad.yaml");
    std::fs::write(&config, "server:\n  wrokers: 2\n").unwrap();
    let bad = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wrokers"));
    let usage = Command::new(binary).arg("--no-such-flag").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let missing = Command::new(binary)
        .arg("-c")
        .arg(root.path().join("absent.yaml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

#[test]
fn sigkill_mid_append_loses_no_acknowledged_batch() {
    let (_root, data) = temp_data_dir();
    // Every batch acknowledged in any round, by base offset.
    let mut acknowledged: std::collections::BTreeMap<u64, Bytes> =
        std::collections::BTreeMap::new();
    for round in 0..3 {
        let mut node = Node::start(&data);
        let address = node.address;
        let mut client = node.client();
        let next = if round == 0 {
            client.create_range(81, 0, 1, 0).unwrap();
            0
        } else {
            let (described, _) = client.describe(81, 0).unwrap();
            described.range.next_offset.expect("next offset").0
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer_stop = std::sync::Arc::clone(&stop);
        let writer = std::thread::spawn(move || {
            let mut client = Client::connect(address).unwrap();
            let mut done = Vec::new();
            let mut base = next;
            // Eight appends in flight at a time, until the node dies.
            let mut in_flight = std::collections::VecDeque::new();
            loop {
                while in_flight.len() < 8 && !writer_stop.load(std::sync::atomic::Ordering::Relaxed)
                {
                    let batch = make_batch(81, 0, 1, base, 2, 300);
                    let Ok(id) = client.send(&common::append_request(81, 0, 1, None), &batch)
                    else {
                        return done;
                    };
                    in_flight.push_back((id, base, batch));
                    base += 2;
                }
                let Some((id, base, batch)) = in_flight.pop_front() else {
                    return done;
                };
                match client.wait_for(id) {
                    Ok(frame) if !frame.is_error() => done.push((base, batch)),
                    _ => return done,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(150 + 100 * round));
        node.signal(libc::SIGKILL);
        node.wait_exit(Duration::from_secs(10)).expect("killed");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let done = writer.join().expect("writer thread");
        assert!(
            !done.is_empty(),
            "round {round}: nothing acknowledged before the kill"
        );
        acknowledged.extend(done);
    }
    let node = Node::start(&data);
    let mut client = node.client();
    client.seal(81, 0, 1, None).unwrap();
    let stored: std::collections::BTreeMap<u64, Bytes> = fetch_all(&mut client, 81, 0)
        .into_iter()
        .map(|batch| (split_batches(&batch)[0].0, batch))
        .collect();
    for (base, batch) in &acknowledged {
        assert_eq!(
            stored.get(base),
            Some(batch),
            "acknowledged batch at offset {base} lost or changed"
        );
    }
}

#[test]
fn clean_restart_keeps_the_confirmed_offset_of_open_ranges() {
    let (_root, data) = temp_data_dir();
    let sent;
    {
        let mut node = Node::start(&data);
        let mut client = node.client();
        sent = fill_range(&mut client, 91, 3, true);
        node.signal(libc::SIGTERM);
        let status = node.wait_exit(Duration::from_secs(15)).expect("exits");
        assert_eq!(status.code(), Some(0));
    }
    let node = Node::start(&data);
    let mut client = node.client();
    let (described, _) = client.describe(91, 0).unwrap();
    assert_eq!(described.range.end_offset, None, "still open");
    assert_eq!(
        described.range.confirmed_offset.map(|offset| offset.0),
        Some(9)
    );
    // A tailing reader goes on without waiting for the writer's next report.
    assert_eq!(fetch_all(&mut client, 91, 0), sent);
}
