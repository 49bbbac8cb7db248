//! TCP ping-pong over loopback: this runtime against tokio's current-thread runtime, same run.
//!
//! For each connection count (1, 16, 64, 128) a server thread pinned to CPU 0 echoes 64-byte
//! messages and a client thread pinned to CPU 1 keeps one message in flight per connection:
//! write 64 bytes, read the 64-byte echo, repeat. Server and client use the same runtime kind.
//! After a warm-up, the client counts completed round trips and records each round trip's
//! latency (nanoseconds). Reports requests per second (the ratio against tokio first) and the
//! round-trip p50/p90/p99.
//!
//! Each case runs `PINGPONG_REPEATS` times (default 3), alternating the two runtimes, so a stall
//! of the machine hits one repeat rather than one runtime; the table shows the median requests
//! per second and quantiles over all repeats' round trips.
//!
//! `cargo bench -p benches --bench pingpong`; `PINGPONG_SECONDS` (default 1) sets the measured
//! time per repeat, `PINGPONG_COUNTS` (e.g. `1,64`) the connection counts.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const MESSAGE_BYTES: usize = 64;
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;
const WARMUP: Duration = Duration::from_millis(300);

/// Client-side phase shared by the connection tasks of one run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Stop,
}

struct Outcome {
    requests_per_second: f64,
    round_trip_ns: Histogram<u64>,
    /// io_uring_enter calls per round trip on the client (this runtime only).
    enters_per_request: Option<f64>,
}

fn new_histogram() -> Histogram<u64> {
    // 100 ns .. 10 s, three significant digits.
    Histogram::new_with_bounds(100, 10_000_000_000, 3).expect("valid bounds")
}

fn main() {
    let seconds: f64 = std::env::var("PINGPONG_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1.0);
    let measure = Duration::from_secs_f64(seconds);
    let repeats: usize = std::env::var("PINGPONG_REPEATS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3)
        .max(1);
    let counts: Vec<usize> = std::env::var("PINGPONG_COUNTS")
        .ok()
        .map(|value| {
            value
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1, 16, 64, 128]);

    println!(
        "TCP ping-pong, {MESSAGE_BYTES}-byte messages, server on cpu {SERVER_CPU}, client on cpu \
         {CLIENT_CPU}, {repeats} x {seconds} s measured per case after {} ms warm-up each",
        WARMUP.as_millis()
    );
    println!(
        "{:>5} | {:>12} {:>12} {:>6} | {:>22} | {:>22}",
        "conns",
        "runtime r/s",
        "tokio r/s",
        "ratio",
        "runtime p50/p90/p99 us",
        "tokio p50/p90/p99 us"
    );
    // The machine's own stalls, measured on the client's CPU during the whole run: a p99 of
    // several ms below is the hypervisor, not either runtime.
    let probe = benches::hiccup::HiccupProbe::start(Some(CLIENT_CPU)).expect("hiccup probe");
    for connections in counts {
        let mut ours_runs = Vec::with_capacity(repeats);
        let mut tokio_runs = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            ours_runs.push(run_ours(connections, measure));
            tokio_runs.push(run_tokio(connections, measure));
        }
        let ours = combine(ours_runs);
        let tokio = combine(tokio_runs);
        println!(
            "{:>5} | {:>12.0} {:>12.0} {:>5.2}x | {:>22} | {:>22} | {:>9.2}",
            connections,
            ours.requests_per_second,
            tokio.requests_per_second,
            ours.requests_per_second / tokio.requests_per_second,
            quantiles(&ours.round_trip_ns),
            quantiles(&tokio.round_trip_ns),
            ours.enters_per_request.unwrap_or(f64::NAN),
        );
    }
    let stalls_us = probe.stop();
    println!(
        "machine stalls (1 ms sleep overshoot on cpu {CLIENT_CPU}): p50 {} us, p90 {} us, p99 {} \
         us, max {} us",
        stalls_us.value_at_quantile(0.50),
        stalls_us.value_at_quantile(0.90),
        stalls_us.value_at_quantile(0.99),
        stalls_us.max()
    );
}

/// Median requests per second, all round trips in one histogram, mean enters per request.
fn combine(mut runs: Vec<Outcome>) -> Outcome {
    runs.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    let requests_per_second = runs[runs.len() / 2].requests_per_second;
    let mut round_trip_ns = new_histogram();
    for run in &runs {
        round_trip_ns.add(&run.round_trip_ns).expect("same bounds");
    }
    let enters: Vec<f64> = runs
        .iter()
        .filter_map(|run| run.enters_per_request)
        .collect();
    let enters_per_request =
        (!enters.is_empty()).then(|| enters.iter().sum::<f64>() / enters.len() as f64);
    Outcome {
        requests_per_second,
        round_trip_ns,
        enters_per_request,
    }
}

fn quantiles(histogram: &Histogram<u64>) -> String {
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
    format!("{:.1}/{:.1}/{:.1}", us(0.50), us(0.90), us(0.99))
}

// ---- this runtime ----------------------------------------------------------------------------

fn run_ours(connections: usize, measure: Duration) -> Outcome {
    use runtime::net::{TcpListener, TcpStream};
    use runtime::time::sleep;
    use runtime::{spawn, Builder};

    async fn echo(stream: TcpStream) {
        let mut buf = Vec::with_capacity(MESSAGE_BYTES);
        loop {
            buf.clear();
            while buf.len() < MESSAGE_BYTES {
                let (result, returned) = stream.read(buf).await;
                buf = returned;
                match result {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            let (result, returned) = stream.write_all(buf).await;
            buf = returned;
            if result.is_err() {
                return;
            }
        }
    }

    async fn client(addr: SocketAddr, phase: Rc<Cell<Phase>>) -> (u64, Histogram<u64>) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut histogram = new_histogram();
        let mut count = 0;
        let mut message = vec![7u8; MESSAGE_BYTES];
        let mut reply = Vec::with_capacity(MESSAGE_BYTES);
        loop {
            let current = phase.get();
            if current == Phase::Stop {
                break;
            }
            let started = Instant::now();
            let (result, returned) = stream.write_all(message).await;
            message = returned;
            result.expect("write");
            reply.clear();
            while reply.len() < MESSAGE_BYTES {
                let (result, returned) = stream.read(reply).await;
                reply = returned;
                assert!(result.expect("read") > 0, "server closed");
            }
            if current == Phase::Measure {
                count += 1;
                let _ = histogram.record(started.elapsed().as_nanos() as u64);
            }
        }
        (count, histogram)
    }

    let (addr_sender, addr_receiver) = mpsc::channel();
    let server = runtime::thread::spawn_runtime(
        "pingpong-server",
        Some(SERVER_CPU),
        Builder::new(),
        move || async move {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
            addr_sender.send(listener.local_addr().unwrap()).unwrap();
            let mut echoes = Vec::with_capacity(connections);
            for _ in 0..connections {
                let (stream, _) = listener.accept().await.expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                echoes.push(spawn(echo(stream)));
            }
            for echo in echoes {
                echo.await;
            }
        },
    )
    .expect("server thread");
    let addr: SocketAddr = addr_receiver.recv().unwrap();
    let client = runtime::thread::spawn_runtime(
        "pingpong-client",
        Some(CLIENT_CPU),
        Builder::new(),
        move || async move {
            let phase = Rc::new(Cell::new(Phase::Warmup));
            let clients: Vec<_> = (0..connections)
                .map(|_| spawn(client(addr, phase.clone())))
                .collect();
            sleep(WARMUP).await;
            phase.set(Phase::Measure);
            let enters_at_measure = Cell::new(runtime::stats().enters);
            let started = Instant::now();
            sleep(measure).await;
            phase.set(Phase::Stop);
            let elapsed = started.elapsed();
            let mut total = 0;
            let mut histogram = new_histogram();
            let enters_before = enters_at_measure.get();
            let enters = runtime::stats().enters - enters_before;
            for client in clients {
                let (count, client_histogram) = client.await;
                total += count;
                histogram.add(&client_histogram).unwrap();
            }
            Outcome {
                requests_per_second: total as f64 / elapsed.as_secs_f64(),
                round_trip_ns: histogram,
                enters_per_request: Some(enters as f64 / total.max(1) as f64),
            }
        },
    )
    .expect("client thread");
    let outcome = client.join().unwrap().expect("client runtime");
    server.join().unwrap().expect("server runtime");
    outcome
}

// ---- tokio current-thread baseline -------------------------------------------------------------

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn run_tokio(connections: usize, measure: Duration) -> Outcome {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn echo(mut stream: TcpStream) {
        let mut buf = [0u8; MESSAGE_BYTES];
        loop {
            if stream.read_exact(&mut buf).await.is_err() {
                return;
            }
            if stream.write_all(&buf).await.is_err() {
                return;
            }
        }
    }

    async fn client(addr: SocketAddr, phase: Arc<AtomicU8>) -> (u64, Histogram<u64>) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut histogram = new_histogram();
        let mut count = 0;
        let message = [7u8; MESSAGE_BYTES];
        let mut reply = [0u8; MESSAGE_BYTES];
        loop {
            let current = phase.load(Ordering::Relaxed);
            if current == Phase::Stop as u8 {
                break;
            }
            let started = Instant::now();
            stream.write_all(&message).await.expect("write");
            stream.read_exact(&mut reply).await.expect("read");
            if current == Phase::Measure as u8 {
                count += 1;
                let _ = histogram.record(started.elapsed().as_nanos() as u64);
            }
        }
        (count, histogram)
    }

    let (addr_sender, addr_receiver) = mpsc::channel();
    let server = runtime::thread::spawn_pinned("tokio-server", Some(SERVER_CPU), move || {
        tokio_runtime().block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addr_sender.send(listener.local_addr().unwrap()).unwrap();
            let mut echoes = Vec::with_capacity(connections);
            for _ in 0..connections {
                let (stream, _) = listener.accept().await.expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                echoes.push(tokio::spawn(echo(stream)));
            }
            for echo in echoes {
                echo.await.unwrap();
            }
        })
    })
    .expect("server thread");
    let addr: SocketAddr = addr_receiver.recv().unwrap();
    let client = runtime::thread::spawn_pinned("tokio-client", Some(CLIENT_CPU), move || {
        tokio_runtime().block_on(async move {
            let phase = Arc::new(AtomicU8::new(Phase::Warmup as u8));
            let clients: Vec<_> = (0..connections)
                .map(|_| tokio::spawn(client(addr, phase.clone())))
                .collect();
            tokio::time::sleep(WARMUP).await;
            phase.store(Phase::Measure as u8, Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(measure).await;
            phase.store(Phase::Stop as u8, Ordering::Relaxed);
            let elapsed = started.elapsed();
            let mut total = 0;
            let mut histogram = new_histogram();
            for client in clients {
                let (count, client_histogram) = client.await.unwrap();
                total += count;
                histogram.add(&client_histogram).unwrap();
            }
            Outcome {
                requests_per_second: total as f64 / elapsed.as_secs_f64(),
                round_trip_ns: histogram,
                enters_per_request: None,
            }
        })
    })
    .expect("client thread");
    let outcome = client.join().unwrap();
    server.join().unwrap();
    outcome
}
