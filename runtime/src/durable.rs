//! The one door for durable file operations: every write, sync, allocation, creation, rename and
//! removal of a file the store, the data node's range catalog or the placement manager's command
//! log relies on after a crash goes through here (or, for the store's io_uring writes and syncs,
//! is reported here by the ring's owner: [`ring_write_submitted`], [`ring_sync_submitted`],
//! [`ring_completed`]).
//!
//! The functions do the real blocking syscall and nothing else in a production build. With the
//! cargo feature `power-loss` they also report each operation, its submission and its completion,
//! to [`recording`], from which a test builds the disk as a power loss at any recorded moment
//! could leave it (the approach of simulation-tested storage engines, here over real I/O). Without
//! the feature the reports compile to nothing; with it, a process that records nothing pays one
//! relaxed atomic load per operation.
//!
//! Reads do not go through here: they change nothing a power loss could take away.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

#[cfg(feature = "power-loss")]
pub mod recording;

#[cfg(feature = "power-loss")]
use recording::hooks;

/// Suffix of the temporary file [`write_file_durably`] writes next to its target; a crash can
/// leave one behind, which the owner of the directory should delete at open.
pub const TEMPORARY_SUFFIX: &str = ".tmp";

/// Creates `path` and any missing parents (`std::fs::create_dir_all`). The new entries are
/// durable only once their parent directories are synced.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => {
            #[cfg(feature = "power-loss")]
            hooks::directory_created(path);
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Opens `path` with `options`. A file this creates (or truncates) is reported as such; its
/// name is durable only once its directory is synced, its content once the file is.
pub fn open(path: &Path, options: &OpenOptions) -> io::Result<File> {
    #[cfg(feature = "power-loss")]
    let before = hooks::before_open(path);
    let file = options.open(path)?;
    #[cfg(feature = "power-loss")]
    hooks::opened(path, &file, before);
    Ok(file)
}

/// Positional write of all of `bytes` at `offset`, blocking (one write as far as a power loss
/// is concerned: it may be kept, lost or torn until a sync of the file covers it).
pub fn write_all_at(file: &impl AsRawFd, bytes: &[u8], offset: u64) -> io::Result<()> {
    let fd = file.as_raw_fd();
    #[cfg(feature = "power-loss")]
    let token = hooks::write_submitted(fd, offset, bytes);
    let result = pwrite_all(fd, bytes, offset);
    #[cfg(feature = "power-loss")]
    hooks::completed(token, result.as_ref().map(|()| bytes.len()).map_err(|_| ()));
    result
}

/// fdatasync: every write to the file completed before this call is durable, with the
/// metadata needed to read it back (size, allocation).
pub fn sync_data(file: &impl AsRawFd) -> io::Result<()> {
    sync(file.as_raw_fd(), true)
}

/// fsync: the file's data and all its metadata are durable.
pub fn sync_all(file: &impl AsRawFd) -> io::Result<()> {
    sync(file.as_raw_fd(), false)
}

fn sync(fd: RawFd, data_only: bool) -> io::Result<()> {
    #[cfg(feature = "power-loss")]
    let token = hooks::sync_submitted(fd);
    let result = if data_only {
        // SAFETY: plain syscall on a descriptor the caller keeps open for the call.
        unsafe { libc::fdatasync(fd) }
    } else {
        // SAFETY: as above.
        unsafe { libc::fsync(fd) }
    };
    let result = if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    #[cfg(feature = "power-loss")]
    hooks::completed(token, result.as_ref().map(|()| 0).map_err(|_| ()));
    result
}

/// Reserves `[0, len)` (fallocate mode 0): the file is at least `len` bytes long, the new space
/// reads as zeros. Durable (size and allocation) once the file is synced.
pub fn allocate(file: &impl AsRawFd, len: u64) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let length = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "allocation length too large"))?;
    #[cfg(feature = "power-loss")]
    let token = hooks::length_submitted(fd, len, true);
    // SAFETY: plain syscall on a descriptor the caller keeps open for the call.
    let result = if unsafe { libc::fallocate(fd, 0, 0, length) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    #[cfg(feature = "power-loss")]
    hooks::completed(token, result.as_ref().map(|()| 0).map_err(|_| ()));
    result
}

/// Truncates or extends the file to `len` bytes. Durable once the file is synced.
pub fn set_len(file: &File, len: u64) -> io::Result<()> {
    #[cfg(feature = "power-loss")]
    let token = hooks::length_submitted(file.as_raw_fd(), len, false);
    let result = file.set_len(len);
    #[cfg(feature = "power-loss")]
    hooks::completed(token, result.as_ref().map(|()| 0).map_err(|_| ()));
    result
}

/// Renames `from` to `to` (same directory). Durable once the directory is synced.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    #[cfg(feature = "power-loss")]
    hooks::renamed(from, to);
    Ok(())
}

/// Removes the file at `path`. Durable once its directory is synced.
pub fn remove_file(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    #[cfg(feature = "power-loss")]
    hooks::removed(path);
    Ok(())
}

/// Makes creations, renames and removals of entries in `directory` durable (fsync of the
/// directory itself).
pub fn sync_directory(directory: &Path) -> io::Result<()> {
    #[cfg(feature = "power-loss")]
    let token = hooks::directory_sync_submitted(directory);
    let result = File::open(directory).and_then(|handle| handle.sync_all());
    #[cfg(feature = "power-loss")]
    hooks::completed(token, result.as_ref().map(|()| 0).map_err(|_| ()));
    result
}

/// Renames `from` to `to` and fsyncs the directory of `to`, so the new name survives a crash.
/// Both must be in the same directory (a rename is atomic only within one file system, and
/// only the target's directory is synced). The caller makes the file's content durable first.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    debug_assert_eq!(
        directory_of(from),
        directory_of(to),
        "rename_durably syncs only the target's directory"
    );
    rename(from, to)?;
    sync_directory(directory_of(to))
}

/// Replaces the file at `path` with `bytes`, atomically and durably, blocking: writes
/// `<path>.tmp`, fsyncs it, renames it over `path` and fsyncs the directory. After a crash the
/// file holds either its old or its new content, never a mix; once this returns `Ok` the new
/// content survives a crash. On an error the temporary file is removed (best effort) and the
/// old file, if any, is untouched unless the rename already happened.
pub fn write_file_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temporary = temporary_path(path);
    let result = (|| {
        let file = open(
            &temporary,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        write_all_at(&file, bytes, 0)?;
        // Content and size durable before the rename can be: otherwise a crash could leave
        // the new name pointing at a short or empty file.
        sync_all(&file)?;
        drop(file);
        rename_durably(&temporary, path)
    })();
    if result.is_err() {
        let _ = remove_file(&temporary);
    }
    result
}

/// The io_uring owner `ring` submitted, as operation `user_data`, a write of `bytes` at `offset`
/// of `file`. Reported before the submission; the buffer must not change until the completion.
#[inline]
pub fn ring_write_submitted(ring: RawFd, user_data: u64, file: RawFd, offset: u64, bytes: &[u8]) {
    #[cfg(feature = "power-loss")]
    hooks::ring_write_submitted(ring, user_data, file, offset, bytes);
    #[cfg(not(feature = "power-loss"))]
    let _ = (ring, user_data, file, offset, bytes);
}

/// The io_uring owner `ring` submitted, as operation `user_data`, an fsync or fdatasync of
/// `file`. Reported before the submission.
#[inline]
pub fn ring_sync_submitted(ring: RawFd, user_data: u64, file: RawFd) {
    #[cfg(feature = "power-loss")]
    hooks::ring_sync_submitted(ring, user_data, file);
    #[cfg(not(feature = "power-loss"))]
    let _ = (ring, user_data, file);
}

/// Operation `user_data` of `ring` completed with `result` (the completion's value: bytes
/// written, or a negative errno). Completions of operations not reported are ignored.
#[inline]
pub fn ring_completed(ring: RawFd, user_data: u64, result: i32) {
    #[cfg(feature = "power-loss")]
    hooks::ring_completed(ring, user_data, result);
    #[cfg(not(feature = "power-loss"))]
    let _ = (ring, user_data, result);
}

fn pwrite_all(fd: RawFd, bytes: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        let at = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        // SAFETY: the pointer and length describe the live `bytes`.
        let result =
            unsafe { libc::pwrite(fd, bytes[done..].as_ptr().cast(), bytes.len() - done, at) };
        if result < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if result == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "the file accepts no more data: {done} of {} bytes written at offset {offset}",
                    bytes.len()
                ),
            ));
        }
        done += result as usize;
    }
    Ok(())
}

/// `<path>.tmp`, next to `path`.
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(TEMPORARY_SUFFIX);
    PathBuf::from(name)
}

/// The directory holding `path`; `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}
