//! The SDK's futures are `Send` and work under any executor: here a dozen lines of
//! thread-park executor (not the project's runtime), and several threads appending through one
//! shared writer at once.

#[path = "support/sdk_cluster.rs"]
mod sdk_cluster;
mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use client::{ReadMode, StreamOptions, Writer};
use sdk_cluster::SdkCluster;
use wire::Offset;

/// The smallest executor: poll, park until woken, poll again.
fn park_executor<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

const THREADS: u64 = 4;
const BATCHES_PER_THREAD: u64 = 50;

#[test]
fn appends_from_a_foreign_executor_and_several_threads() {
    let cluster = SdkCluster::start(3);
    let client = cluster.client();
    let stream = park_executor(assert_send(client.create_stream(StreamOptions {
        replica_count: 3,
        ack_count: 2,
        ..StreamOptions::default()
    })))
    .expect("create stream");
    let writer: Arc<Writer> =
        Arc::new(park_executor(assert_send(client.open_writer(stream.id))).expect("writer"));

    // Each thread appends its batches, pipelined (several calls, then the awaits), on its own
    // executor; the writer is shared.
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || {
                let futures: Vec<_> = (0..BATCHES_PER_THREAD)
                    .map(|batch| {
                        let payload = format!("thread {thread} batch {batch}");
                        (
                            payload.clone(),
                            assert_send(writer.append(vec![Bytes::from(payload)])),
                        )
                    })
                    .collect();
                let mut acknowledged = Vec::new();
                let mut previous = None;
                for (payload, future) in futures {
                    let ack = park_executor(future).expect("append acknowledged");
                    // One thread's calls keep their order in the stream.
                    assert!(previous.is_none_or(|previous| ack.base_offset > previous));
                    previous = Some(ack.base_offset);
                    acknowledged.push((ack.base_offset.0, payload));
                }
                acknowledged
            })
        })
        .collect();
    let mut expected = BTreeMap::new();
    for thread in threads {
        for (offset, payload) in thread.join().expect("thread") {
            assert!(
                expected.insert(offset, payload).is_none(),
                "offset given twice"
            );
        }
    }
    let total = THREADS * BATCHES_PER_THREAD;
    assert_eq!(expected.len() as u64, total);
    assert_eq!(
        expected.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );
    park_executor(assert_send(writer.flush())).expect("flush");
    // The idle writer reports its acknowledged prefix (confirm-only APPEND) after
    // confirm_interval (50 ms): then readers of the open range see every batch.
    std::thread::sleep(std::time::Duration::from_millis(300));

    // Read back under the same executor: every acknowledged batch once, in order.
    let mut reader =
        park_executor(client.open_reader(stream.id, Offset(0), ReadMode::ToEnd)).expect("reader");
    let mut read = BTreeMap::new();
    while let Some(batch) = park_executor(assert_send(reader.next())).expect("read") {
        for (index, record) in batch.records.into_iter().enumerate() {
            let offset = batch.base_offset.0 + index as u64;
            let text = String::from_utf8(record.to_vec()).expect("utf-8");
            assert!(
                read.insert(offset, text).is_none(),
                "offset {offset} read twice"
            );
        }
    }
    assert_eq!(read, expected);
    let writer = Arc::into_inner(writer).expect("the threads are done with it");
    assert_eq!(park_executor(writer.close()).expect("close"), Offset(total));
}
