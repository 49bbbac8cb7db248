//! An idle store must not keep a core busy: on a 2-core machine that would be the only other
//! core. Alone in its own test binary so no other store's IO thread shares the name.

mod common;

use common::{batch, small_config};
use store::{RangeIndex, RangeKey, Store, StreamId};

/// CPU time (ns) the thread named `name` of this process has used.
fn thread_cpu_ns(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() == name {
            let schedstat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            return schedstat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

#[test]
fn idle_io_thread_sleeps_instead_of_spinning() {
    let directory = tempfile::tempdir().unwrap();
    let (store, mut wal) = Store::open_sync(small_config(directory.path())).unwrap();
    let range = RangeKey::new(StreamId(1), RangeIndex(0));
    wal.append(range, store::Offset(0), 1, batch(range, 0, 10))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = thread_cpu_ns("store-io").expect("IO thread is named store-io");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let used = thread_cpu_ns("store-io").unwrap() - before;
    // A spinning thread would use ~500 ms; an idle one wakes ~5 times for housekeeping.
    assert!(
        used < 100_000_000,
        "idle IO thread used {used} ns of CPU in 500 ms"
    );
    store.shutdown();
}
