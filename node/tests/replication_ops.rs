//! The data-node operations of a seal with repair (`docs/replication.md`), against the real
//! binary: fence-only SEAL_RANGE, REPAIR appends, seals above and below the durable end,
//! FETCH with `DURABLE` and `SEALED`, confirm-only APPENDs, and what of it survives SIGKILL.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{
    append_request, fetch_request, is_error, make_batch, split_batches, CallResult, Client, Node,
};
use wire::msg::{AppendResponse, FetchResponse, SealRangeRequest, SealRangeResponse};
use wire::{Epoch, ErrorCode, Offset, RangeIndex, StreamId};

/// The wire's absent value, sent as the `detail` of `RANGE_SEALED` while no end is fixed.
const ABSENT: u64 = u64::MAX;

fn temp_data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    (root, data)
}

fn sigkill(node: &mut Node) {
    node.signal(libc::SIGKILL);
    node.wait_exit(Duration::from_secs(10)).expect("killed");
}

fn fence(client: &mut Client, stream: u64, epoch: u64) -> CallResult<SealRangeResponse> {
    let request = SealRangeRequest {
        stream_id: StreamId(stream),
        range_index: RangeIndex(0),
        epoch: Epoch(epoch),
        end_offset: None,
        fence_only: true,
    };
    client.call(&request, &[]).expect("SEAL_RANGE round trip")
}

fn repair(
    client: &mut Client,
    stream: u64,
    epoch: u64,
    batches: &[u8],
) -> CallResult<AppendResponse> {
    let mut request = append_request(stream, 0, epoch, None);
    request.repair = true;
    client.call(&request, batches).expect("APPEND round trip")
}

fn confirm(
    client: &mut Client,
    stream: u64,
    epoch: u64,
    confirmed: Option<u64>,
) -> CallResult<AppendResponse> {
    let request = append_request(stream, 0, epoch, confirmed);
    client.call(&request, &[]).expect("APPEND round trip")
}

fn fetch_with(
    client: &mut Client,
    stream: u64,
    start: u64,
    max_wait_ms: u32,
    durable: bool,
    sealed: bool,
) -> CallResult<FetchResponse> {
    let mut request = fetch_request(stream, 0, start, 1 << 20, max_wait_ms);
    request.read_durable = durable;
    request.expect_sealed = sealed;
    client.call(&request, &[]).expect("FETCH round trip")
}

/// Appends `[base, base + 3)` as one batch of epoch `batch_epoch`; returns the batch.
fn append_ok(
    client: &mut Client,
    stream: u64,
    epoch: u64,
    base: u64,
    confirmed: Option<u64>,
) -> Bytes {
    let batch = make_batch(stream, 0, epoch, base, 3, 64);
    let (response, _) = client
        .append(stream, 0, epoch, &batch, confirmed)
        .unwrap_or_else(|error| panic!("append at {base}: {error:?}"));
    assert_eq!(response.next_offset.0, base + 3);
    batch
}

fn concat(parts: &[Bytes]) -> Bytes {
    let mut all = BytesMut::new();
    for part in parts {
        all.extend_from_slice(part);
    }
    all.freeze()
}

/// The batches of a fetch's payload, whole.
fn batches_of(payload: &Bytes) -> Vec<Bytes> {
    split_batches(payload)
        .into_iter()
        .map(|(_, _, bytes)| bytes)
        .collect()
}

#[test]
fn fence_only_answers_the_durable_end_and_epoch_and_stops_appends() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    client.create_range(1, 0, 1, 0).unwrap();
    for base in [0, 3, 6] {
        append_ok(&mut client, 1, 1, base, Some(base));
    }

    let (fenced, _) = fence(&mut client, 1, 2).expect("fence at a higher epoch");
    assert_eq!(
        fenced,
        SealRangeResponse {
            end_offset: None,
            durable_end: Some(Offset(9)),
            epoch: Epoch(2)
        }
    );
    let (described, _) = client.describe(1, 0).unwrap();
    assert_eq!(
        described.range.epoch,
        Epoch(2),
        "the fence raised the epoch"
    );
    assert_eq!(described.range.end_offset, None, "a fence fixes no end");

    let refused = client.append(1, 0, 2, &make_batch(1, 0, 2, 9, 3, 64), None);
    assert!(is_error(&refused, ErrorCode::RangeSealed), "{refused:?}");
    assert_eq!(refused.unwrap_err().detail, ABSENT, "no end fixed yet");
    let stale = client.append(1, 0, 1, &make_batch(1, 0, 1, 9, 3, 64), None);
    assert!(is_error(&stale, ErrorCode::StaleEpoch), "{stale:?}");
    assert_eq!(stale.unwrap_err().detail, 2);
    assert!(is_error(
        &confirm(&mut client, 1, 2, Some(9)),
        ErrorCode::RangeSealed
    ));
    let stale_fence = fence(&mut client, 1, 1);
    assert!(
        is_error(&stale_fence, ErrorCode::StaleEpoch),
        "{stale_fence:?}"
    );
    assert_eq!(
        fence(&mut client, 1, 2).unwrap().0,
        fenced,
        "fencing again answers the same"
    );
    let with_end = client.call::<_, SealRangeResponse>(
        &SealRangeRequest {
            stream_id: StreamId(1),
            range_index: RangeIndex(0),
            epoch: Epoch(2),
            end_offset: Some(Offset(9)),
            fence_only: true,
        },
        &[],
    );
    assert!(is_error(&with_end.unwrap(), ErrorCode::InvalidArgument));

    // A live writer fencing its own range: the same epoch, no raise.
    client.create_range(2, 0, 5, 0).unwrap();
    append_ok(&mut client, 2, 5, 0, Some(3));
    let (own, _) = fence(&mut client, 2, 5).unwrap();
    assert_eq!(own.epoch, Epoch(5));
    assert_eq!(own.durable_end, Some(Offset(3)));
    assert!(is_error(
        &client.append(2, 0, 5, &make_batch(2, 0, 5, 3, 3, 64), None),
        ErrorCode::RangeSealed
    ));

    // A sealed range answers its end; its epoch is not raised.
    client.create_range(3, 0, 1, 0).unwrap();
    append_ok(&mut client, 3, 1, 0, Some(3));
    client.seal(3, 0, 1, None).unwrap();
    let (sealed, _) = fence(&mut client, 3, 7).unwrap();
    assert_eq!(sealed.end_offset, Some(Offset(3)));
    assert_eq!(sealed.durable_end, Some(Offset(3)));
    assert_eq!(sealed.epoch, Epoch(1));
    assert!(node.metric("es_fences_total").unwrap() >= 4.0);
}

#[test]
fn fence_answers_only_once_the_appends_in_flight_settled() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    client.create_range(4, 0, 1, 0).unwrap();
    let records = 16u32;
    let mut append_ids = Vec::new();
    for number in 0..48u64 {
        let base = number * u64::from(records);
        let batch = make_batch(4, 0, 1, base, records, 4096);
        let id = client.send(&append_request(4, 0, 1, None), &batch).unwrap();
        append_ids.push((id, base));
    }
    let fence_id = client
        .send(
            &SealRangeRequest {
                stream_id: StreamId(4),
                range_index: RangeIndex(0),
                epoch: Epoch(1),
                end_offset: None,
                fence_only: true,
            },
            &[],
        )
        .unwrap();
    let fenced: CallResult<SealRangeResponse> =
        common::decode_response(&client.wait_for(fence_id).unwrap());
    let durable_end = fenced.expect("fence").0.durable_end.unwrap().0;
    let mut acknowledged_end = 0;
    for (id, base) in append_ids {
        let answer: CallResult<AppendResponse> =
            common::decode_response(&client.wait_for(id).unwrap());
        match answer {
            Ok((response, _)) => {
                assert!(
                    response.next_offset.0 <= durable_end,
                    "append to {} acknowledged but the fence answered {durable_end}: it did \
                     not wait for it",
                    response.next_offset
                );
                acknowledged_end = acknowledged_end.max(response.next_offset.0);
            }
            Err(error) => {
                assert_eq!(error.code, ErrorCode::RangeSealed, "{error:?}");
                assert!(
                    base >= durable_end,
                    "refused append at {base} below the fence"
                );
            }
        }
    }
    assert_eq!(
        acknowledged_end, durable_end,
        "the fence answered exactly what was acknowledged"
    );
    assert!(durable_end > 0, "some appends went in before the fence");
}

/// Two nodes, replicas of one range: A holds `[0, 9)` in batches of epochs 1 and 2, B only
/// `[0, 3)`. The writer of epoch 3 fences both, reads `[3, 9)` from A with a durable fetch,
/// repairs B with it, and seals both at 9.
#[test]
fn repair_copies_batches_of_older_epochs_into_a_fenced_replica_then_seals_there() {
    let (_root_a, data_a) = temp_data_dir();
    let (_root_b, data_b) = temp_data_dir();
    let node_a = Node::start(&data_a);
    let mut node_b = Node::start(&data_b);
    let (mut a, mut b) = (node_a.client(), node_b.client());
    const STREAM: u64 = 10;
    a.create_range(STREAM, 0, 1, 0).unwrap();
    b.create_range(STREAM, 0, 1, 0).unwrap();
    let first = append_ok(&mut a, STREAM, 1, 0, None);
    b.append(STREAM, 0, 1, &first, None)
        .expect("the same batch on B");
    let second = append_ok(&mut a, STREAM, 1, 3, None);
    let third = append_ok(&mut a, STREAM, 2, 6, Some(3));

    // Not fenced yet: no repair, no durable read.
    assert!(is_error(
        &repair(&mut b, STREAM, 1, &second),
        ErrorCode::InvalidArgument
    ));
    assert!(is_error(
        &fetch_with(&mut a, STREAM, 0, 0, true, false),
        ErrorCode::InvalidArgument
    ));

    assert_eq!(
        fence(&mut a, STREAM, 3).unwrap().0.durable_end,
        Some(Offset(9))
    );
    assert_eq!(
        fence(&mut b, STREAM, 3).unwrap().0.durable_end,
        Some(Offset(3))
    );
    // B cannot be sealed at 9 before it is repaired.
    let gap = b.seal(STREAM, 0, 3, Some(9));
    assert!(is_error(&gap, ErrorCode::OffsetGap), "{gap:?}");
    assert_eq!(gap.unwrap_err().detail, 3);

    let (header, payload) = fetch_with(&mut a, STREAM, 3, 0, true, false).expect("durable read");
    assert_eq!(
        header.confirmed_offset,
        Some(Offset(9)),
        "bound: the durable end"
    );
    assert_eq!(payload, concat(&[second.clone(), third.clone()]));

    // The refusals first: stale epoch, newer batch epoch, gap, a newer epoch than the fence's.
    assert!(is_error(
        &repair(&mut b, STREAM, 2, &payload),
        ErrorCode::StaleEpoch
    ));
    let newer = make_batch(STREAM, 0, 4, 3, 3, 64);
    assert!(is_error(
        &repair(&mut b, STREAM, 3, &newer),
        ErrorCode::InvalidArgument
    ));
    assert!(is_error(
        &repair(&mut b, STREAM, 3, &third),
        ErrorCode::OffsetGap
    ));
    assert!(is_error(
        &repair(&mut b, STREAM, 4, &payload),
        ErrorCode::InvalidArgument
    ));
    let (repaired, _) = repair(&mut b, STREAM, 3, &payload).expect("repair");
    assert_eq!((repaired.base_offset.0, repaired.next_offset.0), (3, 9));
    assert!(is_error(
        &repair(&mut b, STREAM, 3, &second),
        ErrorCode::OffsetDuplicate
    ));
    assert_eq!(node_b.metric("es_repair_append_batches_total"), Some(2.0));
    assert_eq!(
        node_b.metric("es_repair_append_bytes_total"),
        Some(payload.len() as f64)
    );

    for client in [&mut a, &mut b] {
        let (sealed, _) = client.seal(STREAM, 0, 3, Some(9)).expect("seal at 9");
        assert_eq!(sealed.end_offset, Some(Offset(9)));
        assert_eq!(sealed.durable_end, Some(Offset(9)));
    }
    let beyond = repair(&mut b, STREAM, 3, &make_batch(STREAM, 0, 3, 9, 3, 64));
    assert!(is_error(&beyond, ErrorCode::InvalidArgument), "{beyond:?}");
    assert_eq!(beyond.unwrap_err().detail, 9, "detail: the end");

    let expected = concat(&[first, second, third]);
    let (_, read) = b.fetch(STREAM, 0, 0, 1 << 20, 0).unwrap();
    assert_eq!(
        read, expected,
        "the repaired replica serves [0, 9) bit-exact"
    );

    // Durable where it claims to be: the repaired batches and the seal survive SIGKILL.
    drop(b);
    sigkill(&mut node_b);
    let node_b = Node::start(&data_b);
    let mut b = node_b.client();
    let (described, _) = b.describe(STREAM, 0).unwrap();
    assert_eq!(described.range.end_offset, Some(Offset(9)));
    assert_eq!(described.range.epoch, Epoch(3));
    let (_, read) = b.fetch(STREAM, 0, 0, 1 << 20, 0).unwrap();
    assert_eq!(read, expected);
}

#[test]
fn seal_below_the_durable_end_serves_nothing_at_or_above_it_also_after_a_restart() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let mut client = node.client();
    client.create_range(20, 0, 1, 0).unwrap();
    let mut batches = Vec::new();
    for base in [0, 3, 6, 9] {
        batches.push(append_ok(&mut client, 20, 1, base, Some(3)));
    }
    let (sealed, _) = client
        .seal(20, 0, 1, Some(6))
        .expect("seal below the durable end");
    assert_eq!(sealed.end_offset, Some(Offset(6)));
    assert_eq!(
        sealed.durable_end,
        Some(Offset(6)),
        "what the range holds here"
    );

    let check = |client: &mut Client| {
        let (header, payload) = client.fetch(20, 0, 0, 1 << 20, 0).unwrap();
        assert_eq!(payload, concat(&batches[..2]));
        assert_eq!(header.end_offset, Some(Offset(6)));
        assert_eq!(header.next_offset, Offset(6));
        let (header, payload) = client.fetch(20, 0, 6, 1 << 20, 1000).unwrap();
        assert!(payload.is_empty(), "the end of the range");
        assert_eq!(header.end_offset, Some(Offset(6)));
        let beyond = client.fetch(20, 0, 9, 1 << 20, 0);
        assert!(is_error(&beyond, ErrorCode::OffsetOutOfRange), "{beyond:?}");
        let (_, payload) = fetch_with(client, 20, 3, 0, true, true).unwrap();
        assert_eq!(payload, batches[1], "a durable read stops at the end too");
        let (described, _) = client.describe(20, 0).unwrap();
        assert_eq!(described.range.next_offset, Some(Offset(6)));
        assert_eq!(described.range.end_offset, Some(Offset(6)));
    };
    check(&mut client);
    drop(client);
    sigkill(&mut node);
    let node = Node::start(&data);
    let mut client = node.client();
    check(&mut client);
}

#[test]
fn durable_fetch_needs_a_fenced_or_sealed_range() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    client.create_range(30, 0, 1, 0).unwrap();
    let first = append_ok(&mut client, 30, 1, 0, Some(3));
    let second = append_ok(&mut client, 30, 1, 3, None);
    let open = fetch_with(&mut client, 30, 0, 0, true, false);
    assert!(is_error(&open, ErrorCode::InvalidArgument), "{open:?}");

    fence(&mut client, 30, 1).unwrap();
    let (_, normal) = client.fetch(30, 0, 0, 1 << 20, 0).unwrap();
    assert_eq!(normal, first, "a normal read stops at the confirmed offset");
    let (header, durable) = fetch_with(&mut client, 30, 0, 0, true, false).unwrap();
    assert_eq!(durable, concat(&[first, second]), "a durable read does not");
    assert_eq!(header.confirmed_offset, Some(Offset(6)));
    assert_eq!(header.next_offset, Offset(6));
    assert_eq!(header.end_offset, None);
}

#[test]
fn sealed_fetch_of_an_offset_not_held_answers_at_once_instead_of_waiting() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut client = node.client();
    client.create_range(40, 0, 1, 0).unwrap();
    let first = append_ok(&mut client, 40, 1, 0, Some(3));
    append_ok(&mut client, 40, 1, 3, None);

    let started = Instant::now();
    let not_held = fetch_with(&mut client, 40, 3, 10_000, false, true);
    assert!(started.elapsed() < Duration::from_secs(2), "no long poll");
    assert!(
        is_error(&not_held, ErrorCode::OffsetNotHeld),
        "{not_held:?}"
    );
    assert_eq!(
        not_held.unwrap_err().detail,
        3,
        "detail: the readable bound"
    );
    let (_, readable) = fetch_with(&mut client, 40, 0, 10_000, false, true).unwrap();
    assert_eq!(readable, first, "below the bound it serves as usual");

    // Both flags on a fenced replica: its durable data, then OFFSET_NOT_HELD.
    fence(&mut client, 40, 1).unwrap();
    let (_, durable) = fetch_with(&mut client, 40, 3, 10_000, true, true).unwrap();
    assert_eq!(split_batches(&durable)[0].0, 3);
    let started = Instant::now();
    let beyond = fetch_with(&mut client, 40, 6, 10_000, true, true);
    assert!(started.elapsed() < Duration::from_secs(2), "no long poll");
    assert!(is_error(&beyond, ErrorCode::OffsetNotHeld), "{beyond:?}");
    assert_eq!(beyond.unwrap_err().detail, 6);
    assert!(node.metric("es_offset_not_held_total").unwrap() >= 2.0);

    // Sealed here: the end of the range is not an error.
    client.seal(40, 0, 1, Some(6)).unwrap();
    let (header, payload) = fetch_with(&mut client, 40, 6, 10_000, false, true).unwrap();
    assert!(payload.is_empty());
    assert_eq!(header.end_offset, Some(Offset(6)));
}

#[test]
fn confirm_only_append_makes_data_readable_and_wakes_a_long_poll() {
    let (_root, data) = temp_data_dir();
    let node = Node::start(&data);
    let mut writer = node.client();
    writer.create_range(50, 0, 1, 0).unwrap();
    let batch = append_ok(&mut writer, 50, 1, 0, None);

    let mut reader = node.client();
    let poll = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = reader.fetch(50, 0, 0, 1 << 20, 20_000);
        (answer, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let empty = confirm(&mut writer, 50, 1, None);
    assert!(is_error(&empty, ErrorCode::InvalidArgument), "{empty:?}");
    let (confirmed, payload) = confirm(&mut writer, 50, 1, Some(3)).expect("confirm-only");
    assert!(payload.is_empty());
    assert_eq!(
        (confirmed.base_offset.0, confirmed.next_offset.0),
        (3, 3),
        "answered with the node's next offset"
    );
    let (answer, waited) = poll.join().unwrap();
    let (_, read) = answer.expect("long poll answered");
    assert_eq!(read, batch);
    assert!(
        waited < Duration::from_secs(10),
        "woken by the confirmation, not the timeout ({waited:?})"
    );

    // Epoch rules: below refused, above raised (and saved: it survives the restart below).
    let stale = confirm(&mut writer, 50, 0, Some(3));
    assert!(is_error(&stale, ErrorCode::StaleEpoch), "{stale:?}");
    confirm(&mut writer, 50, 4, Some(3)).expect("confirm at a higher epoch");
    assert_eq!(writer.describe(50, 0).unwrap().0.range.epoch, Epoch(4));
    writer.seal(50, 0, 4, None).unwrap();
    let sealed = confirm(&mut writer, 50, 4, Some(3));
    assert!(is_error(&sealed, ErrorCode::RangeSealed), "{sealed:?}");
    assert_eq!(sealed.unwrap_err().detail, 3);
}

#[test]
fn a_fence_survives_sigkill_as_its_epoch_and_is_redone_after_the_restart() {
    let (_root, data) = temp_data_dir();
    let mut node = Node::start(&data);
    let mut client = node.client();
    client.create_range(60, 0, 1, 0).unwrap();
    append_ok(&mut client, 60, 1, 0, Some(3));
    append_ok(&mut client, 60, 1, 3, Some(3));
    assert_eq!(
        fence(&mut client, 60, 2).unwrap().0.durable_end,
        Some(Offset(6))
    );
    drop(client);
    sigkill(&mut node);

    let node = Node::start(&data);
    let mut client = node.client();
    let (described, _) = client.describe(60, 0).unwrap();
    assert_eq!(
        described.range.epoch,
        Epoch(2),
        "the fence's raise was saved"
    );
    assert_eq!(described.range.next_offset, Some(Offset(6)));
    let stale = client.append(60, 0, 1, &make_batch(60, 0, 1, 6, 3, 64), None);
    assert!(
        is_error(&stale, ErrorCode::StaleEpoch),
        "the fenced writer stays fenced: {stale:?}"
    );
    // The fenced mark itself is not saved: the fencing writer fences again.
    let repair_first = repair(&mut client, 60, 2, &make_batch(60, 0, 1, 6, 3, 64));
    assert!(
        is_error(&repair_first, ErrorCode::InvalidArgument),
        "{repair_first:?}"
    );
    assert_eq!(
        fence(&mut client, 60, 2).unwrap().0.durable_end,
        Some(Offset(6))
    );
    let repaired = make_batch(60, 0, 1, 6, 3, 64);
    repair(&mut client, 60, 2, &repaired).expect("repair after the new fence");
    client
        .seal(60, 0, 2, Some(9))
        .expect("seal at the repaired end");
    let (_, read) = client.fetch(60, 0, 6, 1 << 20, 0).unwrap();
    assert_eq!(batches_of(&read), vec![repaired]);
}
