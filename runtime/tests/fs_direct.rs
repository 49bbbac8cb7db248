//! O_DIRECT file I/O through the ring: write, linked write+sync, read back, statx, fallocate,
//! and the kernel's error (not a panic) for a misaligned buffer.

use runtime::fs::{File, OpenOptions};
use runtime::{AlignedBuf, Runtime};

/// A temp dir on the build's disk: /tmp may be a tmpfs, which refuses O_DIRECT.
fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn direct_write_sync_read_round_trip() {
    let dir = temp_dir();
    let path = dir.path().join("segment");
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .direct(true)
            .open(&path)
            .await
            .unwrap();
        file.fallocate(0, 64 * 1024, 0).await.unwrap();
        assert_eq!(file.len().await.unwrap(), 64 * 1024);

        let mut first = AlignedBuf::new(8192);
        first.extend_from_slice(&pattern(1, 8192));
        let (result, _) = file.write_all_at(first, 0).await;
        result.unwrap();
        file.sync_data().await.unwrap();

        let mut second = AlignedBuf::new(4096);
        second.extend_from_slice(&pattern(2, 4096));
        let (result, _) = file.write_at_and_sync_data(second, 8192).await;
        assert_eq!(result.unwrap(), 4096);
        file.sync_all().await.unwrap();

        let (result, read) = file.read_exact_at(AlignedBuf::new(12288), 0).await;
        result.unwrap();
        assert_eq!(&read[..8192], &pattern(1, 8192)[..]);
        assert_eq!(&read[8192..], &pattern(2, 4096)[..]);

        let metadata = file.metadata().await.unwrap();
        assert_eq!(metadata.len, 64 * 1024);
        assert!(metadata.allocated_bytes >= 64 * 1024);
        file.close().await.unwrap();

        // A misaligned O_DIRECT write is refused by the kernel with EINVAL.
        let file = OpenOptions::new()
            .write(true)
            .direct(true)
            .open(&path)
            .await
            .unwrap();
        let (result, _) = file.write_at(vec![7u8; 100], 3).await;
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EINVAL));

        // Buffered reopen sees the same bytes.
        let file = File::open(&path).await.unwrap();
        let (result, read) = file.read_at(Vec::with_capacity(4096), 8192).await;
        assert_eq!(result.unwrap(), 4096);
        assert_eq!(read, pattern(2, 4096));
        let (result, read) = file.read_at(Vec::with_capacity(16), 64 * 1024).await;
        assert_eq!(result.unwrap(), 0, "read past the end is end of file");
        assert!(read.is_empty());
    });
    assert_eq!(runtime.stats().ops_in_flight, 0);
}

#[test]
fn open_missing_file_names_the_path() {
    let dir = temp_dir();
    let path = dir.path().join("missing");
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let error = File::open(&path).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        assert!(error.to_string().contains("missing"), "{error}");
    });
}
