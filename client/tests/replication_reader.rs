//! A reader tailing a stream (`ReadMode::Follow`) while its writer writes and fails over twice
//! (a replica SIGKILLed, then one SIGSTOPped), with the real binaries on loopback: it sees every
//! batch once, in order, across the ranges, and never one that was not acknowledged by then or
//! later.

#[path = "support/cluster.rs"]
mod cluster;
mod support;
#[path = "support/writing.rs"]
mod writing;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::{parse_record, serial, wait_for, Cluster};
use wire::Offset;
use writing::{
    block_on, connect, create_stream, read_to_end, verify_everything, Pump, PumpOptions, Tail,
};

const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn a_tailing_reader_sees_every_batch_once_in_order_across_failovers() {
    let _serial = serial();
    let mut cluster = Cluster::start(4);
    let pm = cluster.pm_address();
    let client = connect(&pm);
    let stream = create_stream(&client, 3, 2);
    let writer = block_on("open_writer", client.open_writer(stream)).expect("open_writer");
    let pump = Pump::start(
        writer,
        PumpOptions {
            in_flight: 8,
            ..PumpOptions::new(1)
        },
    );
    pump.wait_acknowledged(16, PATIENCE);
    // The reader is another client: it never raises the epoch, never disturbs the writer.
    let tail = Tail::start(connect(&pm), stream, Offset(0));
    tail.wait_seen(16 * 3, PATIENCE);

    for (round, stop) in [(0, false), (1, true)] {
        let open = cluster.open_range(stream, PATIENCE);
        let victim = cluster.index_of_address(&open.replicas[round].address);
        let acknowledged = pump.acknowledged();
        if stop {
            cluster.nodes[victim].pause();
        } else {
            cluster.nodes[victim].kill();
        }
        wait_for(PATIENCE, "the writer moves to a new range", || {
            let ranges = cluster.ranges(stream)?;
            if ranges.len() > open.index.0 as usize + 1 {
                Ok(())
            } else {
                Err(format!("{ranges:?}"))
            }
        });
        pump.wait_acknowledged(acknowledged + 64, PATIENCE);
        if stop {
            cluster.nodes[victim].resume();
        } else {
            cluster.nodes[victim].restart();
        }
        cluster.wait_node_alive(victim, true, PATIENCE);
    }
    let (writer, events) = pump.stop();
    assert!(events.iter().all(|event| event.result.is_ok()));
    block_on("close", writer.close()).expect("close");
    let log = writing::session_log(1, &events);
    verify_everything(&pm, &client, stream, std::slice::from_ref(&log));
    let complete = read_to_end(&client, stream, Offset(0)).expect("read back");

    tail.wait_seen(complete.len(), PATIENCE);
    // A little longer: anything more would be a record seen twice or never written.
    std::thread::sleep(Duration::from_millis(300));
    let seen = tail.stop();
    assert_eq!(
        seen.len(),
        complete.len(),
        "the tailing reader saw {} records, the stream holds {}",
        seen.len(),
        complete.len()
    );
    // When each call was acknowledged to the application.
    let acknowledged_at: BTreeMap<u64, Instant> =
        events.iter().map(|event| (event.call, event.at)).collect();
    let mut seen_before_ack = 0;
    for ((offset, record, at), (final_offset, final_record)) in seen.iter().zip(complete.iter()) {
        assert_eq!(offset, final_offset, "every batch once, in order");
        assert!(record == final_record, "bit-exact at offset {offset}");
        let name = parse_record(record).expect("a record of this test");
        let acknowledged = acknowledged_at.get(&name.call).unwrap_or_else(|| {
            panic!(
                "the reader saw call {} that was never acknowledged",
                name.call
            )
        });
        if at < acknowledged {
            seen_before_ack += 1;
        }
    }
    eprintln!(
        "the tailing reader saw {} records across {} ranges; {seen_before_ack} of them before the \
         application's future resolved (acknowledged later, as the rule allows)",
        seen.len(),
        cluster.ranges(stream).expect("LIST_RANGES").len()
    );
}
