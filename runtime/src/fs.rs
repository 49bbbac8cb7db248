//! Files over the ring, for the store: open, positioned reads and writes (O_DIRECT capable),
//! data and full syncs, fallocate, statx and close.
//!
//! Every call is an io_uring request owning its buffer (see [`crate::buf`]). With O_DIRECT the
//! buffer address, the length and the offset must all be multiples of the device's logical block
//! size; [`AlignedBuf`](crate::AlignedBuf) gives a 4096-aligned buffer. A misaligned request
//! fails with `EINVAL` from the kernel; nothing here pads or copies.
//!
//! [`File::write_at_and_sync_data`] submits a write and an fdatasync linked with IOSQE_IO_LINK:
//! one trip through the ring, and the sync starts only after the write succeeded.
//!
//! Off the ring, blocking: [`write_file_durably`] (write a temporary file, fsync, rename over
//! the target, fsync the directory) and [`rename_durably`] / [`sync_directory`], for the small
//! files a store or node replaces whole (checkpoints, properties, range files) and for
//! publishing segment files. They live in [`crate::durable`] with every other durable file
//! operation and are re-exported here.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use io_uring::{opcode, squeue, types};

use crate::buf::{IoBuf, IoBufMut};
use crate::op::{LinkedOp, Op};

/// How to open a file; mirrors `std::fs::OpenOptions` plus O_DIRECT.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    truncate: bool,
    direct: bool,
    mode: u32,
    custom_flags: i32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read: false,
            write: false,
            create: false,
            truncate: false,
            direct: false,
            mode: 0o644,
            custom_flags: 0,
        }
    }
}

impl OpenOptions {
    /// Nothing enabled; set at least `read` or `write`.
    pub fn new() -> Self {
        Self::default()
    }
    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.read = read;
        self
    }
    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.write = write;
        self
    }
    /// Create the file if it does not exist.
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }
    /// Truncate to zero length on open.
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.truncate = truncate;
        self
    }
    /// Bypass the page cache (O_DIRECT): buffers, lengths and offsets must be block aligned.
    pub fn direct(&mut self, direct: bool) -> &mut Self {
        self.direct = direct;
        self
    }
    /// Permission bits for a created file (default 0o644).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }
    /// Extra `open(2)` flags, OR-ed in (e.g. `libc::O_DSYNC`).
    pub fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.custom_flags = flags;
        self
    }

    fn flags(&self) -> io::Result<i32> {
        let mut flags = match (self.read, self.write) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "open needs read or write access (OpenOptions::read / ::write)",
                ))
            }
        };
        flags |= libc::O_CLOEXEC | self.custom_flags;
        if self.create {
            flags |= libc::O_CREAT;
        }
        if self.truncate {
            flags |= libc::O_TRUNC;
        }
        if self.direct {
            flags |= libc::O_DIRECT;
        }
        Ok(flags)
    }

    /// Opens `path` through the ring.
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let path = path.as_ref();
        let flags = self.flags()?;
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path {} contains a NUL byte", path.display()),
            )
        })?;
        let mode = self.mode;
        let op = Op::submit(c_path, |c_path| {
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c_path.as_ptr())
                .flags(flags)
                .mode(mode)
                .build()
        })
        .map_err(|(error, _)| error)?;
        let (completion, _) = op.await;
        let fd = completion.into_result().map_err(|error| {
            io::Error::new(error.kind(), format!("open {}: {error}", path.display()))
        })?;
        // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
        Ok(File {
            fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
        })
    }
}

/// File metadata from statx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Size in bytes.
    pub len: u64,
    /// Bytes actually allocated on disk.
    pub allocated_bytes: u64,
    /// Preferred I/O block size.
    pub block_size: u32,
    /// Alignment O_DIRECT needs for memory and offsets, when the kernel reports it (else 0).
    pub direct_io_alignment: u32,
}

/// An open file whose I/O goes through the ring.
#[derive(Debug)]
pub struct File {
    fd: OwnedFd,
}

impl File {
    /// Opens an existing file read-only.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Creates (or truncates) a file for reading and writing.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    /// Takes over a std file.
    pub fn from_std(file: std::fs::File) -> File {
        File {
            fd: OwnedFd::from(file),
        }
    }

    /// Reads once at `offset` into the spare capacity of `buf` (after its initialised bytes) and
    /// extends the initialised part. `Ok(0)` means end of file.
    pub async fn read_at<B: IoBufMut>(&self, mut buf: B, offset: u64) -> (io::Result<usize>, B) {
        let init = buf.bytes_init();
        let len = (buf.bytes_total() - init).min(u32::MAX as usize) as u32;
        // SAFETY: `init <= bytes_total()`, so the pointer stays inside the buffer. The buffer
        // moves into the `Op` below, which owns it until the completion arrives (if the `Op` is
        // dropped first, the driver keeps it until then), and an `IoBuf`'s storage never moves.
        let ptr = unsafe { buf.stable_mut_ptr().add(init) };
        let fd = self.fd.as_raw_fd();
        let op = match Op::submit(buf, |_| {
            opcode::Read::new(types::Fd(fd), ptr, len)
                .offset(offset)
                .build()
        }) {
            Ok(op) => op,
            Err((error, buf)) => return (Err(error), buf),
        };
        let (completion, mut buf) = op.await;
        match completion.into_result() {
            Ok(read) => {
                // SAFETY: the kernel wrote `read` bytes right after the initialised part.
                unsafe { buf.set_init(init + read as usize) };
                (Ok(read as usize), buf)
            }
            Err(error) => (Err(error), buf),
        }
    }

    /// Fills the whole spare capacity of `buf` from `offset`, or fails with `UnexpectedEof`.
    pub async fn read_exact_at<B: IoBufMut>(&self, buf: B, offset: u64) -> (io::Result<()>, B) {
        let start = buf.bytes_init();
        let end = buf.bytes_total();
        let mut buf = buf;
        while buf.bytes_init() < end {
            let done = (buf.bytes_init() - start) as u64;
            let (result, returned) = self.read_at(buf, offset + done).await;
            buf = returned;
            match result {
                Ok(0) => {
                    let error = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "file ends after {done} of {} bytes read at offset {offset}",
                            end - start
                        ),
                    );
                    return (Err(error), buf);
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (Err(error), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes the initialised bytes of `buf` at `offset`, once; may write fewer.
    pub async fn write_at<B: IoBuf>(&self, buf: B, offset: u64) -> (io::Result<usize>, B) {
        let fd = self.fd.as_raw_fd();
        let op = match Op::submit(buf, |buf| write_entry(fd, buf, offset)) {
            Ok(op) => op,
            Err((error, buf)) => return (Err(error), buf),
        };
        let (completion, buf) = op.await;
        (completion.into_result().map(|n| n as usize), buf)
    }

    /// Writes all initialised bytes of `buf` at `offset`.
    pub async fn write_all_at<B: IoBuf>(&self, buf: B, offset: u64) -> (io::Result<()>, B) {
        let total = buf.bytes_init();
        let mut written = 0;
        let mut buf = buf;
        while written < total {
            let (result, slice) = self
                .write_at(buf.slice(written..), offset + written as u64)
                .await;
            buf = slice.into_inner();
            match result {
                Ok(0) => {
                    let error = io::Error::new(io::ErrorKind::WriteZero, "file accepts no data");
                    return (Err(error), buf);
                }
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (Err(error), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes `buf` at `offset` and then fdatasyncs, as one linked submission. Succeeds only if
    /// the whole buffer was written and the sync succeeded; a short write is reported as
    /// `WriteZero` (the sync is then not run by the kernel).
    pub async fn write_at_and_sync_data<B: IoBuf>(
        &self,
        buf: B,
        offset: u64,
    ) -> (io::Result<usize>, B) {
        let fd = self.fd.as_raw_fd();
        let expected = buf.bytes_init();
        let op = match LinkedOp::submit(buf, |buf| {
            [
                write_entry(fd, buf, offset).flags(squeue::Flags::IO_LINK),
                opcode::Fsync::new(types::Fd(fd))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
            ]
        }) {
            Ok(op) => op,
            Err((error, buf)) => return (Err(error), buf),
        };
        let (write, sync, buf) = op.await;
        let written = match write.into_result() {
            Ok(written) => written as usize,
            Err(error) => return (Err(error), buf),
        };
        if written != expected {
            let error = io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write: {written} of {expected} bytes at offset {offset}, not synced"
                ),
            );
            return (Err(error), buf);
        }
        (sync.into_result().map(|_| written), buf)
    }

    /// fdatasync: the data and the metadata needed to read it back are durable.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.fsync(types::FsyncFlags::DATASYNC).await
    }

    /// fsync: data and all metadata are durable.
    pub async fn sync_all(&self) -> io::Result<()> {
        self.fsync(types::FsyncFlags::empty()).await
    }

    async fn fsync(&self, flags: types::FsyncFlags) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let op = Op::submit((), |_| {
            opcode::Fsync::new(types::Fd(fd)).flags(flags).build()
        })
        .map_err(|(error, _)| error)?;
        let (completion, ()) = op.await;
        completion.into_result().map(drop)
    }

    /// Allocates (mode 0) or otherwise manipulates (`libc::FALLOC_FL_*`) the byte range
    /// `[offset, offset + len)`.
    pub async fn fallocate(&self, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let op = Op::submit((), |_| {
            opcode::Fallocate::new(types::Fd(fd), len)
                .offset(offset)
                .mode(mode)
                .build()
        })
        .map_err(|(error, _)| error)?;
        let (completion, ()) = op.await;
        completion.into_result().map(drop)
    }

    /// Size and allocation information through statx.
    pub async fn metadata(&self) -> io::Result<Metadata> {
        struct StatxData {
            // Boxed so the kernel's pointer stays valid while the operation moves.
            buffer: Box<libc::statx>,
            empty_path: &'static std::ffi::CStr,
        }
        let data = StatxData {
            // SAFETY: statx is plain data; all-zero is a valid value.
            buffer: Box::new(unsafe { mem::zeroed() }),
            empty_path: c"",
        };
        let fd = self.fd.as_raw_fd();
        let op = Op::submit(data, |data| {
            opcode::Statx::new(
                types::Fd(fd),
                data.empty_path.as_ptr(),
                (&mut *data.buffer as *mut libc::statx).cast::<types::statx>(),
            )
            .flags(libc::AT_EMPTY_PATH)
            .mask(libc::STATX_SIZE | libc::STATX_BLOCKS | libc::STATX_DIOALIGN)
            .build()
        })
        .map_err(|(error, _)| error)?;
        let (completion, data) = op.await;
        completion.into_result()?;
        let statx = &*data.buffer;
        let direct_io_alignment = if statx.stx_mask & libc::STATX_DIOALIGN != 0 {
            statx.stx_dio_mem_align.max(statx.stx_dio_offset_align)
        } else {
            0
        };
        Ok(Metadata {
            len: statx.stx_size,
            allocated_bytes: statx.stx_blocks * 512,
            block_size: statx.stx_blksize,
            direct_io_alignment,
        })
    }

    /// Size in bytes.
    pub async fn len(&self) -> io::Result<u64> {
        Ok(self.metadata().await?.len)
    }

    /// Closes through the ring and reports errors (dropping the file closes it synchronously
    /// and silently).
    pub async fn close(self) -> io::Result<()> {
        crate::net::close_fd(self.fd).await
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for File {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

fn write_entry<B: IoBuf>(fd: RawFd, buf: &mut B, offset: u64) -> squeue::Entry {
    let len = buf.bytes_init().min(u32::MAX as usize) as u32;
    opcode::Write::new(types::Fd(fd), buf.stable_ptr(), len)
        .offset(offset)
        .build()
}

pub use crate::durable::{rename_durably, sync_directory, write_file_durably, TEMPORARY_SUFFIX};

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_file_durably_creates_then_replaces_and_leaves_no_temporary() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("checkpoint");
        write_file_durably(&path, b"first version").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first version");
        assert_eq!(entries(directory.path()), ["checkpoint"]);

        // A shorter replacement: the old content must not show through (no truncation bug).
        write_file_durably(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(directory.path()), ["checkpoint"]);

        // The old file is replaced by a rename, not rewritten in place: a reader holding it open
        // still sees the old content whole, which is what atomic replacement means to a crash.
        let held = std::fs::read(&path).unwrap();
        let mut open = std::fs::File::open(&path).unwrap();
        write_file_durably(&path, b"third, longer than the ones before").unwrap();
        let mut seen = Vec::new();
        std::io::Read::read_to_end(&mut open, &mut seen).unwrap();
        assert_eq!(seen, held);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"third, longer than the ones before"
        );
        assert_eq!(entries(directory.path()), ["checkpoint"]);
    }

    #[test]
    fn write_file_durably_overwrites_a_leftover_temporary() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("PROPERTIES");
        std::fs::write(
            directory.path().join("PROPERTIES.tmp"),
            b"left by a crash, longer",
        )
        .unwrap();
        write_file_durably(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(entries(directory.path()), ["PROPERTIES"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("range");
        write_file_durably(&path, b"old").unwrap();
        // The rename fails: the target is now a non-empty directory.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        assert!(write_file_durably(&path, b"new").is_err());
        assert_eq!(entries(directory.path()), ["range"]);
        assert!(path.is_dir());
    }

    #[test]
    fn rename_durably_moves_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let from = directory.path().join("0000.wal.tmp");
        let to = directory.path().join("0000.wal");
        std::fs::write(&from, b"segment").unwrap();
        rename_durably(&from, &to).unwrap();
        assert_eq!(entries(directory.path()), ["0000.wal"]);
        assert_eq!(std::fs::read(&to).unwrap(), b"segment");
        sync_directory(directory.path()).unwrap();
        assert!(sync_directory(&directory.path().join("missing")).is_err());
    }
}
