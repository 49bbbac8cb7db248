//! The placement manager's SIGKILL ledger: every change it answered OK survives a crash.
//!
//! Each round starts the real `pm` on the same data directory and port; client threads issue
//! state-changing requests (create streams, raise epochs, create a range, trim) and record in a
//! shared ledger what every OK answer promised: the stream exists with this R and A, its epoch
//! is at least e, its start at least t, its range 0 exists. At a random moment the `pm` gets
//! SIGKILL; it is started again and every promise is checked with DESCRIBE_STREAM and
//! DESCRIBE_RANGE. The placement manager snapshots every 64 commands, so kills also land in
//! snapshot installs and the log truncation after them.
//!
//! One data node heartbeats to the `pm` so that CREATE_RANGE (and so trims, which need a range)
//! can succeed. The random choices come from a seeded xorshift; the seed is printed, and
//! `PM_CRASH_SEED=<seed>` replays a run's choices (not its timing).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Client, DataNode, PmOptions, PmProcess};
use wire::msg::{
    CreateRangeResponse, CreateStreamResponse, DescribeStreamRequest, DescribeStreamResponse,
    TrimStreamResponse, UpdateStreamResponse,
};
use wire::StreamId;

const ROUNDS: usize = 24;
const THREADS: usize = 4;
/// The `pm` runs between this and twice this long before it is killed.
const MIN_RUN_MS: u64 = 60;

/// What the OK answers about one stream promised.
#[derive(Clone, Debug, Default)]
struct Promise {
    replica_count: u8,
    ack_count: u8,
    min_epoch: u64,
    min_start: u64,
    has_range: bool,
}

type Ledger = Arc<Mutex<BTreeMap<u64, Promise>>>;

/// Counts of OK answers by kind, over the whole test.
#[derive(Default)]
struct Counts {
    created: AtomicU64,
    epochs: AtomicU64,
    ranges: AtomicU64,
    trims: AtomicU64,
}

/// xorshift64*: small, seeded, good enough to pick operations and kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[test]
fn every_change_the_pm_answered_survives_sigkill() {
    let seed = std::env::var("PM_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64)
                | 1
        });
    eprintln!("pm crash test seed: {seed} (PM_CRASH_SEED={seed} replays the choices)");
    let mut rng = Rng(seed);
    let directory = tempfile::tempdir().expect("temporary directory");
    let pm_directory = directory.path().join("pm");
    let options = PmOptions {
        snapshot_every_commands: 64,
        maintenance_interval_ms: 200,
        metrics_address: None,
    };
    let mut pm = PmProcess::start_with(&pm_directory, None, &options);
    let port: u16 = pm
        .address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("the pm address has a port");
    let _node = DataNode::start(&directory.path().join("node"), &pm.address);
    let ledger: Ledger = Arc::default();
    let counts = Arc::new(Counts::default());
    let started = Instant::now();

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let address = pm.address.clone();
                let ledger = Arc::clone(&ledger);
                let stop = Arc::clone(&stop);
                let counts = Arc::clone(&counts);
                let rng = Rng(rng.next() | 1);
                std::thread::spawn(move || work(&address, &ledger, &stop, &counts, rng))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(
            MIN_RUN_MS + rng.below(MIN_RUN_MS * 3),
        ));
        pm.process.kill();
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker.join().expect("a client thread panicked");
        }
        pm = PmProcess::start_with(&pm_directory, Some(port), &options);
        let checked = check(&pm, &ledger)
            .unwrap_or_else(|failure| panic!("round {round} (seed {seed}): {failure}"));
        eprintln!("round {round}: {checked} streams checked after SIGKILL");
    }

    let answered = [
        counts.created.load(Ordering::SeqCst),
        counts.epochs.load(Ordering::SeqCst),
        counts.ranges.load(Ordering::SeqCst),
        counts.trims.load(Ordering::SeqCst),
    ];
    eprintln!(
        "{ROUNDS} kills in {} ms; OK answers: {} streams created, {} epochs raised, {} ranges \
         created, {} trims",
        started.elapsed().as_millis(),
        answered[0],
        answered[1],
        answered[2],
        answered[3]
    );
    // The ledger must have held something of every kind, or the test checked nothing.
    assert!(
        answered.iter().all(|count| *count > 0),
        "every kind of change was answered OK at least once: {answered:?}"
    );
}

/// A client thread: issues random state-changing requests until `stop`, recording every OK.
fn work(address: &str, ledger: &Ledger, stop: &AtomicBool, counts: &Counts, mut rng: Rng) {
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let connection = match client.as_mut() {
            Some(connection) => connection,
            None => match Client::try_connect(address) {
                Ok(connection) => client.insert(connection),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        if one_request(connection, ledger, counts, &mut rng).is_err() {
            // The pm died (or the connection broke): reconnect, or stop when told.
            client = None;
        }
    }
}

/// One random request; `Err` when the connection failed.
fn one_request(
    client: &mut Client,
    ledger: &Ledger,
    counts: &Counts,
    rng: &mut Rng,
) -> Result<(), client::conn::ClientError> {
    let pick = |rng: &mut Rng, filter: &dyn Fn(&Promise) -> bool| {
        let ledger = ledger.lock().unwrap();
        let candidates: Vec<(u64, Promise)> = ledger
            .iter()
            .filter(|(_, promise)| filter(promise))
            .map(|(id, promise)| (*id, promise.clone()))
            .collect();
        (!candidates.is_empty())
            .then(|| candidates[rng.below(candidates.len() as u64) as usize].clone())
    };
    match rng.below(8) {
        0..=2 => {
            let replica_count = 1 + rng.below(3) as u8;
            let ack_count = 1 + rng.below(u64::from(replica_count)) as u8;
            let request = support::create_stream_request(replica_count, ack_count);
            if let Ok((response, _)) = client.try_call::<_, CreateStreamResponse>(&request, &[])? {
                let stream = response.stream;
                assert_eq!(
                    (stream.replica_count, stream.ack_count, stream.epoch.0),
                    (replica_count, ack_count, 0),
                    "CREATE_STREAM answered another stream than asked"
                );
                let promise = Promise {
                    replica_count,
                    ack_count,
                    ..Promise::default()
                };
                let previous = ledger.lock().unwrap().insert(stream.id.0, promise);
                assert!(previous.is_none(), "stream id {} given twice", stream.id);
                counts.created.fetch_add(1, Ordering::SeqCst);
            }
        }
        3..=4 => {
            let Some((id, promise)) = pick(rng, &|_| true) else {
                return Ok(());
            };
            let epoch = promise.min_epoch + 1 + rng.below(2);
            let request = support::raise_epoch_request(StreamId(id), epoch);
            if let Ok((response, _)) = client.try_call::<_, UpdateStreamResponse>(&request, &[])? {
                assert_eq!(response.stream.epoch.0, epoch, "UPDATE_STREAM answer");
                let mut ledger = ledger.lock().unwrap();
                let promise = ledger.get_mut(&id).expect("in the ledger");
                promise.min_epoch = promise.min_epoch.max(epoch);
                counts.epochs.fetch_add(1, Ordering::SeqCst);
            }
        }
        5 => {
            // The one data node can hold a range of any stream whose A is 1.
            let Some((id, _)) = pick(rng, &|promise| promise.ack_count == 1 && !promise.has_range)
            else {
                return Ok(());
            };
            let described = client.try_call::<_, DescribeStreamResponse>(
                &DescribeStreamRequest {
                    stream_id: StreamId(id),
                },
                &[],
            )?;
            let Ok((described, _)) = described else {
                return Ok(());
            };
            let request =
                support::create_range_request(StreamId(id), 0, described.stream.epoch.0, 0);
            if let Ok((response, _)) = client.try_call::<_, CreateRangeResponse>(&request, &[])? {
                assert_eq!(response.range.stream_id.0, id);
                ledger
                    .lock()
                    .unwrap()
                    .get_mut(&id)
                    .expect("in the ledger")
                    .has_range = true;
                counts.ranges.fetch_add(1, Ordering::SeqCst);
            }
        }
        _ => {
            let Some((id, promise)) = pick(rng, &|promise| promise.has_range) else {
                return Ok(());
            };
            let offset = promise.min_start + 1 + rng.below(1_000);
            let request = support::trim_stream_request(StreamId(id), offset);
            if let Ok((response, _)) = client.try_call::<_, TrimStreamResponse>(&request, &[])? {
                let start = response.stream.start_offset.0;
                assert!(
                    start >= offset,
                    "TRIM_STREAM to {offset} answered start {start}"
                );
                let mut ledger = ledger.lock().unwrap();
                let promise = ledger.get_mut(&id).expect("in the ledger");
                promise.min_start = promise.min_start.max(offset);
                counts.trims.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    Ok(())
}

/// Checks every promise of the ledger against the restarted `pm`; the number of streams.
fn check(pm: &PmProcess, ledger: &Ledger) -> Result<usize, String> {
    let mut client = pm.client();
    let ledger = ledger.lock().unwrap();
    for (id, promise) in ledger.iter() {
        let stream = match client.describe_stream(StreamId(*id)) {
            Ok((response, _)) => response.stream,
            Err(error) => {
                return Err(format!(
                    "stream {id}, answered {promise:?}, is lost after SIGKILL: {error:?}"
                ))
            }
        };
        let held = (stream.replica_count, stream.ack_count);
        if held != (promise.replica_count, promise.ack_count)
            || stream.epoch.0 < promise.min_epoch
            || stream.start_offset.0 < promise.min_start
            || stream.deleted
        {
            return Err(format!(
                "stream {id} promised {promise:?} but is {stream:?} after SIGKILL"
            ));
        }
        if promise.has_range {
            if let Err(error) = client.describe_range(StreamId(*id), 0) {
                return Err(format!(
                    "range 0 of stream {id}, answered by CREATE_RANGE, is lost: {error:?}"
                ));
            }
        }
    }
    Ok(ledger.len())
}
