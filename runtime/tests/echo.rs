//! An echo server with hundreds of concurrent connections on one runtime; every byte comes back
//! in order. Also covers vectored writes, shutdown and peer addresses.

use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

use runtime::net::{TcpListener, TcpStream};
use runtime::{spawn, Runtime};

const CONNECTIONS: usize = 300;
const MESSAGES: usize = 20;

async fn echo(stream: TcpStream) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let (result, returned) = stream.read(buf).await;
        buf = returned;
        match result {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => panic!("server read failed: {error}"),
        }
        let (result, returned) = stream.write_all(buf).await;
        buf = returned;
        result.expect("server write failed");
    }
}

#[test]
fn hundreds_of_connections_echo_every_byte() {
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(async move {
            for _ in 0..CONNECTIONS {
                let (stream, peer) = listener.accept().await.unwrap();
                assert_eq!(stream.peer_addr().unwrap(), peer);
                spawn(echo(stream));
            }
        });
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|client| spawn(run_client(addr, client)))
            .collect();
        for client in clients {
            client.await;
        }
        server.await;
    });
    assert_eq!(runtime.stats().ops_in_flight, 0);
}

async fn run_client(addr: SocketAddr, client: usize) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    assert!(stream.nodelay().unwrap());
    assert_eq!(stream.peer_addr().unwrap(), addr);
    for message in 0..MESSAGES {
        let payload = format!("client {client} message {message} ").repeat(message + 1);
        let expected = payload.clone().into_bytes();
        let (result, _) = stream.write_all(payload.into_bytes()).await;
        result.unwrap();
        let mut received = Vec::with_capacity(expected.len());
        while received.len() < expected.len() {
            received.reserve(expected.len() - received.len());
            let (result, returned) = stream.read(received).await;
            received = returned;
            assert!(result.unwrap() > 0, "server closed early");
        }
        assert_eq!(received, expected);
    }
    stream.shutdown(Shutdown::Write).await.unwrap();
    let (result, _) = stream.read(Vec::with_capacity(16)).await;
    assert_eq!(result.unwrap(), 0, "server must close after our shutdown");
    stream.close().await.unwrap();
}

#[test]
fn writev_all_sends_every_buffer_in_order() {
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            loop {
                all.reserve(65536);
                let (result, returned) = stream.read(all).await;
                all = returned;
                if result.unwrap() == 0 {
                    return all;
                }
            }
        });
        let stream = Rc::new(TcpStream::connect(addr).await.unwrap());
        let bufs: Vec<Vec<u8>> = (0..64u8).map(|n| vec![n; 1000 + n as usize * 97]).collect();
        let expected: Vec<u8> = bufs.concat();
        let (result, bufs) = stream.writev_all(bufs).await;
        result.unwrap();
        assert_eq!(bufs.len(), 64);
        stream.shutdown(Shutdown::Write).await.unwrap();
        assert_eq!(server.await, expected);
    });
}

#[test]
fn connect_to_closed_port_is_an_error() {
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let error = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}
