//! The store directory: lock file, immutable properties, `wal/` segment files.
//!
//! ```text
//! <path>/LOCK              flock()ed for the life of the store
//! <path>/PROPERTIES        format-version, segment-size-bytes, node-id, max-group-bytes
//!                          (text, key=value)
//! <path>/checkpoint        the index checkpoint (see checkpoint.rs)
//! <path>/clean             present only after a clean shutdown
//! <path>/wal/<16 hex digits of the start position>.wal   fixed-size segment files
//! <path>/wal/<...>.wal.tmp segment being written through; removed at open
//! ```

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use runtime::durable;

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::WalPosition;
use runtime::buf::AlignedBuf;

/// Version of the on-disk format written by this code. 2: every group opens with a group start
/// record carrying the synced position, and record headers carry their own checksum.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this code opens. A format 1 directory is recovered by the format 1 rules
/// (no synced positions in its log) and marked format 2 before anything new is written, so an
/// older build refuses it from then on instead of misreading the new records.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
const LOCK_FILE: &str = "LOCK";
const PROPERTIES_FILE: &str = "PROPERTIES";
pub(crate) const WAL_DIRECTORY: &str = "wal";
/// Unit of the writes that write a segment through.
pub(crate) const PREWRITE_CHUNK_BYTES: usize = 1 << 20;
/// What a segment is written through with before use. Not zero: thin-provisioned or
/// deduplicating storage (a VM's disk image, for one) may not really allocate blocks written
/// with zeros, and the first real write there then pays for the allocation. Never part of a
/// valid record (its kind byte would be 0xA5).
pub const SEGMENT_FILL_BYTE: u8 = 0xA5;

/// True for bytes that hold no record data: zeros (padding after a group) or segment filler.
pub(crate) fn is_blank(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&byte| byte == 0 || byte == SEGMENT_FILL_BYTE)
}

/// Holds the directory's lock until dropped.
pub(crate) struct DirectoryLock {
    _file: fs::File,
}

/// Takes the exclusive lock on `<path>/LOCK`, failing fast if another process holds it.
pub(crate) fn lock(path: &Path) -> Result<DirectoryLock> {
    let lock_path = path.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|error| Error::io(format!("opening {}", lock_path.display()), &error))?;
    // SAFETY: plain syscall on a descriptor `file` owns.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::Locked { path: lock_path });
        }
        return Err(Error::io(
            format!("locking {}", lock_path.display()),
            &error,
        ));
    }
    Ok(DirectoryLock { _file: file })
}

/// What the properties file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Properties {
    pub format_version: u32,
    pub segment_size_bytes: u64,
    pub node_id: Option<u32>,
    /// The largest group (and so record) ever written to this log: recovery sizes its reads
    /// and torn-tail window with the larger of this and the configured value. Raised, never
    /// lowered, when a larger value is configured; absent in format 1 directories.
    pub max_group_bytes: Option<u64>,
}

fn render(properties: &Properties) -> String {
    let node_id = properties
        .node_id
        .map_or_else(|| "none".to_string(), |id| id.to_string());
    let mut text = format!(
        "# ElasticStream store properties. Written by the store; do not edit.\n\
         format-version={}\nsegment-size-bytes={}\nnode-id={}\n",
        properties.format_version, properties.segment_size_bytes, node_id
    );
    if let Some(max_group_bytes) = properties.max_group_bytes {
        text.push_str(&format!("max-group-bytes={max_group_bytes}\n"));
    }
    text
}

fn parse(text: &str) -> Result<Properties> {
    let bad = |detail: String| Error::Corrupt {
        position: 0,
        detail: format!("PROPERTIES file {detail}"),
    };
    let mut format_version = None;
    let mut segment_size_bytes = None;
    let mut node_id = None;
    let mut max_group_bytes = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| bad(format!("has a line without `=`: {line:?}")))?;
        match key {
            "format-version" => format_version = value.parse().ok(),
            "segment-size-bytes" => segment_size_bytes = value.parse().ok(),
            "node-id" if value == "none" => node_id = Some(None),
            "node-id" => node_id = value.parse().ok().map(Some),
            "max-group-bytes" => {
                max_group_bytes = Some(value.parse().map_err(|_| {
                    bad(format!(
                        "has a max-group-bytes that is not a number: {value:?}"
                    ))
                })?)
            }
            other => return Err(bad(format!("has an unknown key {other:?}"))),
        }
    }
    Ok(Properties {
        format_version: format_version.ok_or_else(|| bad("lacks format-version".into()))?,
        segment_size_bytes: segment_size_bytes
            .ok_or_else(|| bad("lacks segment-size-bytes".into()))?,
        node_id: node_id.ok_or_else(|| bad("lacks node-id".into()))?,
        max_group_bytes,
    })
}

fn write_properties(path: &Path, properties: &Properties) -> Result<()> {
    let target = path.join(PROPERTIES_FILE);
    runtime::fs::write_file_durably(&target, render(properties).as_bytes())
        .map_err(|error| Error::io(format!("writing {}", target.display()), &error))
}

/// Creates the properties file on first open; afterwards checks it against the configuration.
/// A node id is recorded once: a store created without one takes the first one configured.
/// `max-group-bytes` is raised to the configured value when that is larger (never lowered), and
/// a format 1 directory is marked format 2: both are durable before the log is written to.
pub(crate) fn check_properties(config: &StoreConfig) -> Result<Properties> {
    let path = config.path.join(PROPERTIES_FILE);
    let configured_group = config.max_group_bytes as u64;
    let wanted = Properties {
        format_version: FORMAT_VERSION,
        segment_size_bytes: config.segment_size_bytes,
        node_id: config.node_id,
        max_group_bytes: Some(configured_group),
    };
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            write_properties(&config.path, &wanted)?;
            return Ok(wanted);
        }
        Err(error) => return Err(Error::io(format!("reading {}", path.display()), &error)),
    };
    let found = parse(&text)?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found.format_version) {
        return Err(Error::Properties {
            key: "format-version",
            on_disk: found.format_version.to_string(),
            configured: format!(
                "{OLDEST_FORMAT_VERSION} to {FORMAT_VERSION} (this build opens these; use the \
                 build that wrote the directory)"
            ),
        });
    }
    if found.segment_size_bytes != config.segment_size_bytes {
        return Err(Error::Properties {
            key: "segment-size-bytes",
            on_disk: found.segment_size_bytes.to_string(),
            configured: config.segment_size_bytes.to_string(),
        });
    }
    match (found.node_id, config.node_id) {
        (Some(on_disk), Some(configured)) if on_disk != configured => {
            return Err(Error::Properties {
                key: "node-id",
                on_disk: on_disk.to_string(),
                configured: configured.to_string(),
            })
        }
        _ => {}
    }
    let mut updated = found.clone();
    updated.node_id = found.node_id.or(config.node_id);
    updated.format_version = FORMAT_VERSION;
    updated.max_group_bytes = Some(found.max_group_bytes.unwrap_or(0).max(configured_group));
    if updated != found {
        write_properties(&config.path, &updated)?;
    }
    // Callers see what the log may hold: a format 1 directory's groups were at most what is
    // configured now as far as anything on disk can tell.
    Ok(Properties {
        format_version: found.format_version,
        ..updated
    })
}

/// File name of the segment starting at `start`.
pub(crate) fn segment_name(start: WalPosition) -> String {
    format!("{start:016x}.wal")
}

pub(crate) fn segment_path(wal_directory: &Path, start: WalPosition) -> PathBuf {
    wal_directory.join(segment_name(start))
}

/// Start positions of all complete segment files, in order. Half-written `.tmp` files left by
/// a crash are removed.
pub(crate) fn list_segments(wal_directory: &Path, segment_size_bytes: u64) -> Result<Vec<u64>> {
    let listing = fs::read_dir(wal_directory)
        .map_err(|error| Error::io(format!("listing {}", wal_directory.display()), &error))?;
    let mut starts = Vec::new();
    for item in listing {
        let item = item.map_err(|error| Error::io("listing the WAL directory", &error))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".wal.tmp") {
            let _ = durable::remove_file(&item.path());
            continue;
        }
        let Some(stem) = name.strip_suffix(".wal") else {
            continue;
        };
        let start = u64::from_str_radix(stem, 16).map_err(|_| Error::Corrupt {
            position: 0,
            detail: format!("unexpected file {name} in the WAL directory"),
        })?;
        if start % segment_size_bytes != 0 {
            return Err(Error::Corrupt {
                position: start,
                detail: format!(
                    "segment file {name} does not start at a multiple of the segment size"
                ),
            });
        }
        starts.push(start);
    }
    starts.sort_unstable();
    Ok(starts)
}

/// Opens a file for O_DIRECT reads and writes (through `runtime::durable`, which notes a
/// creation).
pub(crate) fn open_direct(path: &Path, create: bool) -> io::Result<OwnedFd> {
    let mut options = fs::OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(create)
        .mode(0o644)
        .custom_flags(libc::O_DIRECT);
    durable::open(path, &options).map(OwnedFd::from)
}

/// Positional read filling as much of `buffer` as the file holds. Blocking; used by recovery.
pub(crate) fn read_at(fd: RawFd, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        // SAFETY: the pointer and length describe the live, exclusively borrowed `buffer`.
        let result = unsafe {
            libc::pread(
                fd,
                buffer[done..].as_mut_ptr().cast(),
                buffer.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        if result < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if result == 0 {
            break;
        }
        done += result as usize;
    }
    Ok(done)
}

/// Positional write of all of `buffer`. Blocking; used at open and in recovery.
pub(crate) fn write_at(fd: RawFd, buffer: &[u8], offset: u64) -> io::Result<()> {
    durable::write_all_at(&fd, buffer, offset)
}

/// Creates `<start>.wal.tmp` with its space reserved. ENOSPC shows up here, not mid-write.
pub(crate) fn create_segment_file(
    wal_directory: &Path,
    start: WalPosition,
    segment_size_bytes: u64,
) -> io::Result<(OwnedFd, PathBuf)> {
    let temporary = wal_directory.join(format!("{}.tmp", segment_name(start)));
    let fd = open_direct(&temporary, true)?;
    if let Err(error) = durable::allocate(&fd, segment_size_bytes) {
        drop(fd);
        let _ = durable::remove_file(&temporary);
        return Err(error);
    }
    Ok((fd, temporary))
}

/// Makes a written-through `.tmp` segment a real one: sync, rename, sync the directory.
pub(crate) fn publish_segment(
    wal_directory: &Path,
    temporary: &Path,
    start: WalPosition,
) -> io::Result<()> {
    durable::rename_durably(temporary, &segment_path(wal_directory, start))
}

/// Makes an allocated (possibly not or partly written) `.tmp` segment a real one: its size and
/// extents are made durable first, so recovery always finds a full-size file whose unwritten
/// extents read as zeros (blank space).
pub(crate) fn publish_allocated_segment(
    wal_directory: &Path,
    fd: RawFd,
    temporary: &Path,
    start: WalPosition,
) -> io::Result<()> {
    durable::sync_data(&fd)?;
    publish_segment(wal_directory, temporary, start)
}

/// Creates and publishes a segment without writing it through, blocking. Used at open with
/// `prewrite: idle` when no segment is ready.
pub(crate) fn allocate_segment_blocking(
    wal_directory: &Path,
    start: WalPosition,
    segment_size_bytes: u64,
) -> io::Result<()> {
    let (fd, temporary) = create_segment_file(wal_directory, start, segment_size_bytes)?;
    let result = publish_allocated_segment(wal_directory, fd.as_raw_fd(), &temporary, start);
    if result.is_err() {
        let _ = durable::remove_file(&temporary);
    }
    result
}

/// Writes a whole segment through with the filler byte, blocking. Used at open when no segment is ready.
pub(crate) fn prewrite_segment_blocking(
    wal_directory: &Path,
    start: WalPosition,
    segment_size_bytes: u64,
) -> io::Result<()> {
    let (fd, temporary) = create_segment_file(wal_directory, start, segment_size_bytes)?;
    let mut filler = AlignedBuf::zeroed(PREWRITE_CHUNK_BYTES.min(segment_size_bytes as usize));
    filler.fill(SEGMENT_FILL_BYTE);
    let mut written = 0u64;
    let result = (|| {
        while written < segment_size_bytes {
            let len = (segment_size_bytes - written).min(filler.len() as u64) as usize;
            write_at(fd.as_raw_fd(), &filler[..len], written)?;
            written += len as u64;
        }
        durable::sync_all(&fd)?;
        publish_segment(wal_directory, &temporary, start)
    })();
    if result.is_err() {
        let _ = durable::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_and_mismatch() {
        let directory = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(directory.path());
        config.segment_size_bytes = 1 << 20;
        let created = check_properties(&config).unwrap();
        assert_eq!(created.node_id, None);
        config.node_id = Some(4);
        assert_eq!(check_properties(&config).unwrap().node_id, Some(4));
        config.node_id = Some(5);
        let error = check_properties(&config).unwrap_err();
        assert!(
            matches!(error, Error::Properties { key: "node-id", .. }),
            "{error}"
        );
        config.node_id = Some(4);
        config.segment_size_bytes = 2 << 20;
        let error = check_properties(&config).unwrap_err();
        assert!(
            error.to_string().contains("`segment-size-bytes`"),
            "{error}"
        );
    }

    #[test]
    fn max_group_bytes_is_raised_never_lowered() {
        let directory = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(directory.path());
        config.segment_size_bytes = 16 << 20;
        config.max_group_bytes = 1 << 20;
        assert_eq!(
            check_properties(&config).unwrap().max_group_bytes,
            Some(1 << 20)
        );
        config.max_group_bytes = 64 << 10;
        assert_eq!(
            check_properties(&config).unwrap().max_group_bytes,
            Some(1 << 20)
        );
        config.max_group_bytes = 4 << 20;
        assert_eq!(
            check_properties(&config).unwrap().max_group_bytes,
            Some(4 << 20)
        );
        config.max_group_bytes = 64 << 10;
        assert_eq!(
            check_properties(&config).unwrap().max_group_bytes,
            Some(4 << 20)
        );
        let text = fs::read_to_string(directory.path().join(PROPERTIES_FILE)).unwrap();
        assert!(text.contains("max-group-bytes=4194304"), "{text}");
    }

    #[test]
    fn format_1_directories_open_and_are_marked_format_2() {
        let directory = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(directory.path());
        config.segment_size_bytes = 1 << 20;
        fs::write(
            directory.path().join(PROPERTIES_FILE),
            "format-version=1\nsegment-size-bytes=1048576\nnode-id=none\n",
        )
        .unwrap();
        let found = check_properties(&config).unwrap();
        assert_eq!(found.format_version, 1);
        let text = fs::read_to_string(directory.path().join(PROPERTIES_FILE)).unwrap();
        assert!(text.contains("format-version=2"), "{text}");
        assert_eq!(check_properties(&config).unwrap().format_version, 2);
        fs::write(
            directory.path().join(PROPERTIES_FILE),
            "format-version=3\nsegment-size-bytes=1048576\nnode-id=none\n",
        )
        .unwrap();
        let error = check_properties(&config).unwrap_err();
        assert!(error.to_string().contains("`format-version`"), "{error}");
    }

    #[test]
    fn second_lock_fails_fast() {
        let directory = tempfile::tempdir().unwrap();
        let first = lock(directory.path()).unwrap();
        let second = lock(directory.path());
        assert!(matches!(second, Err(Error::Locked { .. })));
        drop(first);
        assert!(lock(directory.path()).is_ok());
    }
}
