//! Dropping operations before their completion arrives: thousands of reads and accepts are
//! cancelled mid-flight (some racing with data that does arrive). Nothing may crash, every
//! buffer must be freed exactly once, and the runtime's operation table must drain to zero.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runtime::net::{TcpListener, TcpStream};
use runtime::time::{sleep, timeout};
use runtime::{spawn, yield_now, IoBuf, IoBufMut, Runtime};

/// Buffers alive right now, per test (each test uses its own counter).
struct CountedBuf {
    bytes: Vec<u8>,
    live: &'static AtomicUsize,
}

impl CountedBuf {
    fn new(live: &'static AtomicUsize, capacity: usize) -> CountedBuf {
        live.fetch_add(1, Ordering::SeqCst);
        CountedBuf {
            bytes: Vec::with_capacity(capacity),
            live,
        }
    }
}

impl Drop for CountedBuf {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

// SAFETY: delegates to Vec<u8>, whose heap storage is stable.
unsafe impl IoBuf for CountedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.bytes.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.bytes.bytes_init()
    }
}

// SAFETY: delegates to Vec<u8>.
unsafe impl IoBufMut for CountedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.bytes.stable_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.bytes.bytes_total()
    }
    unsafe fn set_init(&mut self, init: usize) {
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.bytes.set_init(init) }
    }
}

async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = spawn(async move { listener.accept().await.unwrap().0 });
    let client = TcpStream::connect(addr).await.unwrap();
    (client, accept.await)
}

/// Yields until at least `count` operations are in the kernel.
async fn wait_for_ops_in_flight(count: usize) {
    for _ in 0..100 {
        if runtime::stats().ops_in_flight >= count {
            return;
        }
        yield_now().await;
    }
    panic!(
        "expected {count} operations in flight: {:?}",
        runtime::stats()
    );
}

/// Runs loop turns until every cancelled operation's completion has been reaped.
async fn drain_cancellations() {
    for _ in 0..1_000 {
        let stats = runtime::stats();
        if stats.ops_in_flight == 0 && stats.ops_cancelled == 0 {
            return;
        }
        sleep(Duration::from_millis(1)).await;
    }
    panic!(
        "cancelled operations never completed: {:?}",
        runtime::stats()
    );
}

#[test]
fn thousands_of_dropped_reads_free_every_buffer() {
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let (client, server) = connected_pair().await;
        let server = std::rc::Rc::new(server);
        for round in 0..20 {
            let mut readers = Vec::new();
            for _ in 0..200 {
                let server = server.clone();
                readers.push(spawn(async move {
                    let (result, buf) = server.read(CountedBuf::new(&LIVE, 64)).await;
                    (result.map(|_| buf.bytes.len()), buf.bytes.len())
                }));
            }
            // Let every read reach the kernel, then race some data against the cancels.
            wait_for_ops_in_flight(200).await;
            if round % 2 == 1 {
                let (result, _) = client.write_all(vec![round as u8; 64 * 50]).await;
                result.unwrap();
            }
            for reader in readers {
                reader.abort();
            }
            if round % 2 == 0 {
                // No data was sent: every read is still in the kernel, so every buffer must be
                // parked in the driver, not freed.
                assert!(runtime::stats().ops_cancelled >= 200);
                assert!(LIVE.load(Ordering::SeqCst) >= 200);
            }
        }
        drain_cancellations().await;
        let stats = runtime::stats();
        assert_eq!(stats.ops_in_flight, 0, "{stats:?}");
        assert_eq!(stats.ops_cancelled, 0, "{stats:?}");
        drop(client);
    });
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        0,
        "buffers leaked or double-freed"
    );
}

#[test]
fn thousands_of_timed_out_accepts_leave_nothing_behind() {
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = std::rc::Rc::new(TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..2_000 {
            let listener = listener.clone();
            tasks.push(spawn(async move {
                timeout(Duration::from_millis(2), listener.accept())
                    .await
                    .is_err()
            }));
        }
        for task in tasks {
            assert!(
                task.await,
                "no client connected, so every accept must time out"
            );
        }
        drain_cancellations().await;
        // The listener still works after all that.
        let addr: SocketAddr = listener.local_addr().unwrap();
        let client = spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (accepted, _) = listener.accept().await.unwrap();
        let client = client.await;
        let (result, _) = client.write_all(b"ok".to_vec()).await;
        result.unwrap();
        let (result, buf) = accepted.read(Vec::with_capacity(8)).await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(buf, b"ok");
    });
    assert_eq!(runtime.stats().ops_in_flight, 0);
}

#[test]
fn dropping_the_runtime_with_reads_in_flight_frees_buffers() {
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    {
        let mut runtime = Runtime::new().unwrap();
        runtime.block_on(async {
            let (client, server) = connected_pair().await;
            let server = std::rc::Rc::new(server);
            for _ in 0..500 {
                let server = server.clone();
                // Detached: still pending when block_on returns.
                drop(spawn(async move {
                    let _ = server.read(CountedBuf::new(&LIVE, 64)).await;
                }));
            }
            wait_for_ops_in_flight(500).await;
            std::mem::forget(client);
        });
        assert_eq!(LIVE.load(Ordering::SeqCst), 500);
    }
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        0,
        "runtime drop must cancel and free"
    );
}
