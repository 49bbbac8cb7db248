//! Pinned runtime threads, and mailboxes between a runtime task and a plain thread in both
//! directions (the wake must reach a runtime sleeping in io_uring_enter).

use std::time::Duration;

use runtime::mailbox;
use runtime::thread::{available_cpus, spawn_pinned, spawn_runtime};
use runtime::Builder;

#[test]
fn pinned_thread_runs_on_its_cpu() {
    let handle = spawn_pinned("pinned-test", Some(0), || {
        // SAFETY: plain syscall returning the current CPU.
        unsafe { libc::sched_getcpu() }
    })
    .unwrap();
    assert_eq!(handle.join().unwrap(), 0);
    let error = spawn_pinned("bad-cpu", Some(available_cpus() + 1000), || ()).unwrap_err();
    assert!(error.to_string().contains("not available"), "{error}");
}

#[test]
fn runtime_task_and_plain_thread_ping_pong_through_mailboxes() {
    const ROUNDS: u64 = 2_000;
    let (mut to_runtime, mut runtime_inbox) = mailbox::channel::<u64>(8).unwrap();
    let (mut to_thread, mut thread_inbox) = mailbox::channel::<u64>(8).unwrap();
    let worker = spawn_runtime("mailbox-worker", None, Builder::new(), move || async move {
        let mut count = 0;
        while let Some(value) = runtime_inbox.recv().await {
            to_thread.send(value + 1).unwrap();
            count += 1;
        }
        count
    })
    .unwrap();
    for round in 0..ROUNDS {
        to_runtime.send(round * 2).unwrap();
        if round % 100 == 0 {
            // Let the runtime fall asleep in the kernel before the next send.
            std::thread::sleep(Duration::from_micros(300));
        }
        let reply = thread_inbox
            .recv_blocking(Some(Duration::from_secs(10)))
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        assert_eq!(reply, round * 2 + 1);
    }
    drop(to_runtime);
    assert_eq!(worker.join().unwrap().unwrap(), ROUNDS);
}
