//! The log directory: names of segment and snapshot files, the lock file, the snapshot file
//! format. Blocking std calls only; used at open and by the log thread.
//!
//! ```text
//! <dir>/LOCK                               flock()ed for the life of the log; holds the pid
//! <dir>/log-<first index, 20 digits>.seg   segment files, records back to back
//! <dir>/snapshot-<last index, 20 digits>   the newest snapshot (an older one only after a crash)
//! <dir>/*.tmp                              a snapshot being written; removed at open
//! ```

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::LogError;

const LOCK_FILE: &str = "LOCK";
const SEGMENT_PREFIX: &str = "log-";
const SEGMENT_SUFFIX: &str = ".seg";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_MAGIC: &[u8; 8] = b"PMSNAP01";
/// Magic, last index, payload length.
const SNAPSHOT_HEADER_BYTES: usize = 24;
const SNAPSHOT_TRAILER_BYTES: usize = 4;

pub(crate) fn segment_path(directory: &Path, first_index: u64) -> PathBuf {
    directory.join(format!("{SEGMENT_PREFIX}{first_index:020}{SEGMENT_SUFFIX}"))
}

pub(crate) fn snapshot_path(directory: &Path, last_index: u64) -> PathBuf {
    directory.join(format!("{SNAPSHOT_PREFIX}{last_index:020}"))
}

/// The index in a name `<prefix><20 digits><suffix>`, or None for any other name.
fn parse_index(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the directory holds, each list sorted by index.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub segments: Vec<(u64, PathBuf)>,
    pub snapshots: Vec<(u64, PathBuf)>,
    pub temporaries: Vec<PathBuf>,
}

pub(crate) fn list(directory: &Path) -> Result<Listing, LogError> {
    let listing_error =
        |error: io::Error| LogError::io(format!("listing {}", directory.display()), &error);
    let mut listing = Listing::default();
    for entry in fs::read_dir(directory).map_err(listing_error)? {
        let entry = entry.map_err(listing_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            log::warn!(
                "command log: ignoring {} (not a log file)",
                entry.path().display()
            );
            continue;
        };
        if let Some(index) = parse_index(name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
            listing.segments.push((index, entry.path()));
        } else if let Some(index) = parse_index(name, SNAPSHOT_PREFIX, "") {
            listing.snapshots.push((index, entry.path()));
        } else if name.ends_with(runtime::fs::TEMPORARY_SUFFIX) {
            listing.temporaries.push(entry.path());
        } else if name != LOCK_FILE {
            log::warn!(
                "command log: ignoring {} (not a log file)",
                entry.path().display()
            );
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// Holds the directory's lock until dropped (closing the descriptor releases the flock).
#[derive(Debug)]
pub(crate) struct DirectoryLock {
    _file: fs::File,
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on `<dir>/LOCK` and writes this process's pid into it, so a
/// second placement manager on the same directory fails at once with `Locked` naming the holder.
/// flock rather than an `O_EXCL` file: the kernel releases it when the holder dies, even by
/// SIGKILL, so a crash never leaves a stale lock behind.
pub(crate) fn lock(directory: &Path) -> Result<DirectoryLock, LogError> {
    let path = directory.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|error| LogError::io(format!("opening {}", path.display()), &error))?;
    // SAFETY: a plain syscall on a descriptor `file` owns for the duration of the call.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "holder unknown".to_string(),
                text => text.to_string(),
            };
            return Err(LogError::Locked { path, holder });
        }
        return Err(LogError::io(format!("locking {}", path.display()), &error));
    }
    // The pid is for the operator reading the error above; the flock is what excludes.
    let record_pid = |file: &mut fs::File| -> io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(format!("pid {}\n", std::process::id()).as_bytes())
    };
    record_pid(&mut file)
        .map_err(|error| LogError::io(format!("writing {}", path.display()), &error))?;
    Ok(DirectoryLock { _file: file })
}

/// The snapshot file's bytes:
/// `"PMSNAP01" | u64 last_index | u64 length | payload | u32 crc32c(all before)`, LE.
pub(crate) fn encode_snapshot(last_index: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes =
        Vec::with_capacity(SNAPSHOT_HEADER_BYTES + payload.len() + SNAPSHOT_TRAILER_BYTES);
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&last_index.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_snapshot(&bytes, last_index).ok(), Some(payload));
    bytes
}

/// The payload of a snapshot file named for `named_index`, or (offset, what is wrong).
pub(crate) fn decode_snapshot(bytes: &[u8], named_index: u64) -> Result<&[u8], (u64, String)> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES {
        return Err((
            0,
            format!(
                "snapshot file has {} bytes, less than its {} bytes of header and checksum",
                bytes.len(),
                SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES
            ),
        ));
    }
    if &bytes[..8] != SNAPSHOT_MAGIC {
        return Err((
            0,
            format!("snapshot magic {:?} is not PMSNAP01", &bytes[..8]),
        ));
    }
    let u64_at = |at: usize| {
        let mut field = [0u8; 8];
        field.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(field)
    };
    let last_index = u64_at(8);
    let length = u64_at(16);
    let expected_len = (SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES) as u64 + length;
    if expected_len != bytes.len() as u64 {
        return Err((
            16,
            format!(
                "snapshot says {length} payload bytes, the file holds {}",
                bytes.len() - SNAPSHOT_HEADER_BYTES - SNAPSHOT_TRAILER_BYTES
            ),
        ));
    }
    let body_end = bytes.len() - SNAPSHOT_TRAILER_BYTES;
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[body_end..]);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32c::crc32c(&bytes[..body_end]);
    if stored != computed {
        return Err((
            body_end as u64,
            format!("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    if last_index != named_index {
        return Err((
            8,
            format!("snapshot file is named for index {named_index} but covers {last_index}"),
        ));
    }
    Ok(&bytes[SNAPSHOT_HEADER_BYTES..body_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_not_parsed() {
        let directory = Path::new("/x");
        let segment = segment_path(directory, 1234);
        assert_eq!(
            segment.file_name().unwrap().to_str().unwrap(),
            "log-00000000000000001234.seg"
        );
        let name = segment.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            parse_index(name, SEGMENT_PREFIX, SEGMENT_SUFFIX),
            Some(1234)
        );
        assert_eq!(
            parse_index("log-12.seg", SEGMENT_PREFIX, SEGMENT_SUFFIX),
            None
        );
        assert_eq!(
            parse_index(
                "log-0000000000000000123x.seg",
                SEGMENT_PREFIX,
                SEGMENT_SUFFIX
            ),
            None
        );
        assert_eq!(
            parse_index("snapshot-00000000000000000009.tmp", SNAPSHOT_PREFIX, ""),
            None
        );
    }

    #[test]
    fn snapshot_round_trip_and_damage_is_detected() {
        let bytes = encode_snapshot(77, b"state machine image");
        assert_eq!(decode_snapshot(&bytes, 77).unwrap(), b"state machine image");
        assert!(decode_snapshot(&bytes, 78).is_err());
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(decode_snapshot(&damaged, 77).is_err(), "byte {at}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut], 77).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn second_lock_fails_and_names_the_holder() {
        let directory = tempfile::tempdir().unwrap();
        let held = lock(directory.path()).unwrap();
        match lock(directory.path()) {
            Err(LogError::Locked { holder, .. }) => {
                assert_eq!(holder, format!("pid {}", std::process::id()))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        lock(directory.path()).unwrap();
    }
}
