//! A full disk: on a 16 MiB loop-mounted ext4 the store fills up, appends fail with a
//! retriable `Full` error, reads go on, and appends resume once a trim frees segments.
//!
//! Needs root (mount -o loop). Without it the test says so and returns.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{batch, small_config};
use store::{Error, RangeIndex, RangeKey, Store, StreamId};

struct LoopMount {
    mount_point: PathBuf,
}

impl LoopMount {
    fn new(directory: &Path, size_bytes: u64) -> Result<LoopMount, String> {
        let image = directory.join("disk.img");
        let mount_point = directory.join("mnt");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(size_bytes))
            .map_err(|error| format!("creating the image: {error}"))?;
        std::fs::create_dir(&mount_point).map_err(|error| error.to_string())?;
        let run = |program: &str, args: &[&str]| -> Result<(), String> {
            let output = Command::new(program)
                .args(args)
                .output()
                .map_err(|error| format!("{program}: {error}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} {args:?}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        };
        let image_arg = image.to_string_lossy().to_string();
        let mount_arg = mount_point.to_string_lossy().to_string();
        run("mkfs.ext4", &["-q", "-F", "-O", "^has_journal", &image_arg])?;
        run("mount", &["-o", "loop", &image_arg, &mount_arg])?;
        Ok(LoopMount { mount_point })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

#[test]
fn full_disk_fails_appends_retriably_keeps_reads_and_recovers_after_trim() {
    let directory = tempfile::tempdir().unwrap();
    let mount = match LoopMount::new(directory.path(), 16 << 20) {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!("SKIPPED full-disk test: cannot mount a small filesystem ({reason})");
            return;
        }
    };
    let config = small_config(&mount.mount_point.join("store"));
    let (mut store, mut wal) = Store::open_sync(config).unwrap();
    let range = RangeKey::new(StreamId(1), RangeIndex(0));
    let mut next = 0u64;
    let full_error = loop {
        match wal.append(range, store::Offset(next), 10, batch(range, next, 20_000)) {
            Ok(_) => next += 10,
            Err(error) => break error,
        }
        assert!(next < 100_000, "the 16 MiB disk never filled");
    };
    assert!(matches!(full_error, Error::Full { .. }), "{full_error}");
    assert!(full_error.is_retriable());
    assert!(store.stats().full);
    assert!(next > 100, "only {next} offsets fit");
    // Appends keep failing the same clear way; nothing panics.
    let again = wal
        .append(range, store::Offset(next), 10, batch(range, next, 20_000))
        .unwrap_err();
    assert!(matches!(again, Error::Full { .. }), "{again}");
    // Reads go on.
    for base in (0..next).step_by(10) {
        assert_eq!(
            wal.read(range, store::Offset(base), 1).unwrap()[0],
            batch(range, base, 20_000)
        );
    }
    // Free space: trim most of the range (trims use the segment's reserve).
    wal.trim(range, store::Offset(next - 100)).unwrap();
    store.request_checkpoint().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match wal.append(range, store::Offset(next), 10, batch(range, next, 20_000)) {
            Ok(_) => break,
            Err(Error::Full { .. }) => {
                assert!(
                    Instant::now() < deadline,
                    "appends never resumed: {:?}",
                    store.stats()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(other) => panic!("unexpected error while waiting for space: {other}"),
        }
    }
    next += 10;
    assert!(!store.stats().full);
    for _ in 0..20 {
        wal.append(range, store::Offset(next), 10, batch(range, next, 20_000))
            .unwrap();
        next += 10;
    }
    store.shutdown();
    let (store, mut wal) =
        Store::open_sync(small_config(&mount.mount_point.join("store"))).unwrap();
    assert_eq!(wal.index(range).unwrap().next_offset, store::Offset(next));
    assert_eq!(
        wal.read(range, store::Offset(next - 10), 1).unwrap()[0],
        batch(range, next - 10, 20_000)
    );
    store.shutdown();
    drop(mount);
}
