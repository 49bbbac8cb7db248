//! The ring's setup: the default asks for SINGLE_ISSUER + DEFER_TASKRUN (which this project's
//! kernels have), and the other modes (no DEFER_TASKRUN, SQPOLL) still run I/O and timers.

use std::time::{Duration, Instant};

use runtime::net::{TcpListener, TcpStream};
use runtime::time::sleep;
use runtime::{spawn, Builder, Runtime};

fn round_trip(runtime: &mut Runtime) {
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (result, buf) = stream.read(Vec::with_capacity(16)).await;
            assert_eq!(result.unwrap(), 5);
            let (result, _) = stream.write_all(buf).await;
            result.unwrap();
        });
        let client = TcpStream::connect(addr).await.unwrap();
        let (result, _) = client.write_all(b"hello".to_vec()).await;
        result.unwrap();
        let (result, reply) = client.read(Vec::with_capacity(16)).await;
        assert_eq!(result.unwrap(), 5);
        assert_eq!(reply, b"hello");
        server.await;
        let started = Instant::now();
        sleep(Duration::from_millis(3)).await;
        assert!(started.elapsed() >= Duration::from_millis(3));
    });
}

#[test]
fn default_ring_uses_single_issuer_and_defer_taskrun() {
    let mut runtime = Runtime::new().unwrap();
    let mode = runtime.ring_mode();
    assert!(
        mode.single_issuer && mode.defer_taskrun && !mode.sqpoll,
        "{mode:?}"
    );
    round_trip(&mut runtime);
}

#[test]
fn ring_without_defer_taskrun_works() {
    let mut runtime = Builder::new().defer_taskrun(false).build().unwrap();
    assert!(!runtime.ring_mode().defer_taskrun);
    round_trip(&mut runtime);
}

#[test]
fn sqpoll_ring_works() {
    let mut runtime = Builder::new().sqpoll(Some(10)).build().unwrap();
    assert!(runtime.ring_mode().sqpoll);
    round_trip(&mut runtime);
}
