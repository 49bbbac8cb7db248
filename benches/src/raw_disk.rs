//! The raw disk baseline: the write pattern a durable 64 KiB append turns into, without any
//! server. `queue_depth` O_DIRECT writes of `block_size_bytes` are submitted together through
//! io_uring, then one fdatasync; repeat. The file is written through once before measuring,
//! because writing into fallocated-but-unwritten extents costs a journal commit per sync and
//! would make the baseline look slower than the disk is.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{opcode, types, IoUring};

use crate::report::new_histogram;

const ALIGNMENT_BYTES: usize = 4096;
/// user_data tag of the sync that closes a group; writes use their index in the group.
const SYNC_TAG: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub struct RawDiskOptions {
    pub block_size_bytes: usize,
    pub queue_depth: usize,
    pub file_size_bytes: u64,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct RawDiskResult {
    pub bytes_written: u64,
    pub elapsed: Duration,
    pub groups: u64,
    /// Per write: from the submission of its group to the completion of the group's sync.
    pub write_latency_us: Histogram<u64>,
}

/// A heap buffer aligned for O_DIRECT. Freed on drop.
struct AlignedBuffer {
    pointer: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuffer {
    fn new(length: usize) -> std::io::Result<AlignedBuffer> {
        let layout = std::alloc::Layout::from_size_align(length, ALIGNMENT_BYTES)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        assert!(layout.size() > 0, "buffer length must be positive");
        // SAFETY: the layout has a non-zero size (asserted above).
        let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
        if pointer.is_null() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "aligned buffer",
            ));
        }
        // A recognisable, incompressible-enough pattern rather than zeros.
        // SAFETY: pointer is valid for layout.size() bytes, owned by this buffer.
        let bytes = unsafe { std::slice::from_raw_parts_mut(pointer, layout.size()) };
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = (index as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
        }
        Ok(AlignedBuffer { pointer, layout })
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; every write that used it has completed
        // (run() waits for all completions before returning, also on error paths below which
        // return only after draining).
        unsafe { std::alloc::dealloc(self.pointer, self.layout) };
    }
}

/// Checks the options; returns the size of the file to write (whole groups).
fn checked_file_size(options: &RawDiskOptions) -> std::io::Result<u64> {
    let block = options.block_size_bytes;
    if block == 0 || block % ALIGNMENT_BYTES != 0 {
        return Err(invalid(format!(
            "block size {block} must be a positive multiple of 4096"
        )));
    }
    if options.queue_depth == 0 || options.queue_depth > 4096 {
        return Err(invalid(format!(
            "queue depth {} must be in 1..=4096",
            options.queue_depth
        )));
    }
    let group_bytes = (block * options.queue_depth) as u64;
    let file_size = options.file_size_bytes / group_bytes * group_bytes;
    if file_size == 0 {
        return Err(invalid(format!(
            "file size {} is smaller than one group ({group_bytes} bytes)",
            options.file_size_bytes
        )));
    }
    Ok(file_size)
}

/// Runs the baseline in a temporary file under `directory`, removed at the end.
pub fn run(directory: &Path, options: &RawDiskOptions) -> std::io::Result<RawDiskResult> {
    let file_size = checked_file_size(options)?;
    let file_path = directory.join(format!("es-bench-raw-disk-{}.dat", std::process::id()));
    let result = run_in_file(&file_path, file_size, options, None);
    let _ = std::fs::remove_file(&file_path);
    result
}

/// Zero-fill unit of the segment pre-writer, as the store uses.
const PREWRITE_CHUNK_BYTES: usize = 1 << 20;

/// The same baseline plus what a WAL that never recycles segments adds in steady state: for
/// every byte appended, a byte of a fresh segment file written through (zero-filled in 1 MiB
/// O_DIRECT writes, one fdatasync per `segment_bytes`, then the file is emptied so the next
/// pass allocates again), by a second thread running alongside, as fast as the appends go.
pub fn run_with_prewrite(
    directory: &Path,
    options: &RawDiskOptions,
    segment_bytes: u64,
) -> std::io::Result<RawDiskResult> {
    let segment_bytes = segment_bytes / PREWRITE_CHUNK_BYTES as u64 * PREWRITE_CHUNK_BYTES as u64;
    if segment_bytes == 0 {
        return Err(invalid(format!(
            "segment size must be at least {PREWRITE_CHUNK_BYTES} bytes"
        )));
    }
    let appended = std::sync::Arc::new(AtomicU64::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let segment_path = directory.join(format!("es-bench-prewrite-{}.dat", std::process::id()));
    let prewriter = {
        let appended = std::sync::Arc::clone(&appended);
        let stop = std::sync::Arc::clone(&stop);
        let segment_path = segment_path.clone();
        std::thread::Builder::new()
            .name("raw-prewrite".into())
            .spawn(move || prewrite_loop(&segment_path, segment_bytes, &appended, &stop))?
    };
    let file_path = directory.join(format!("es-bench-raw-disk-{}.dat", std::process::id()));
    let result = checked_file_size(options)
        .and_then(|file_size| run_in_file(&file_path, file_size, options, Some(&appended)));
    stop.store(true, Ordering::Relaxed);
    let prewrite_result = prewriter
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("pre-writer thread panicked")));
    let _ = std::fs::remove_file(&file_path);
    let _ = std::fs::remove_file(&segment_path);
    prewrite_result?;
    result
}

/// Writes zeros into a fresh segment file, keeping up with `appended`; returns on `stop`.
fn prewrite_loop(
    path: &Path,
    segment_bytes: u64,
    appended: &AtomicU64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let chunk = AlignedBuffer::new(PREWRITE_CHUNK_BYTES)?;
    let mut prewritten = 0u64;
    let mut in_segment = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if prewritten + PREWRITE_CHUNK_BYTES as u64 > appended.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_micros(100));
            continue;
        }
        // SAFETY: the buffer is valid for its whole length and owned by this thread for the
        // duration of the (blocking) call.
        let written = unsafe {
            libc::pwrite(
                file.as_raw_fd(),
                chunk.pointer as *const libc::c_void,
                PREWRITE_CHUNK_BYTES,
                in_segment as libc::off_t,
            )
        };
        if written != PREWRITE_CHUNK_BYTES as isize {
            return Err(std::io::Error::last_os_error());
        }
        prewritten += PREWRITE_CHUNK_BYTES as u64;
        in_segment += PREWRITE_CHUNK_BYTES as u64;
        if in_segment >= segment_bytes {
            file.sync_data()?;
            // Empty the file so the next segment's writes allocate blocks again, as a new
            // segment file would.
            file.set_len(0)?;
            in_segment = 0;
        }
    }
    Ok(())
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

fn run_in_file(
    path: &Path,
    file_size: u64,
    options: &RawDiskOptions,
    appended: Option<&AtomicU64>,
) -> std::io::Result<RawDiskResult> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let fd = types::Fd(file.as_raw_fd());
    let buffer = AlignedBuffer::new(options.block_size_bytes)?;
    let mut ring = IoUring::new((options.queue_depth as u32 + 1).next_power_of_two())?;

    // Write the whole file through once (untimed), then sync it.
    let mut offset = 0;
    while offset < file_size {
        run_group(&mut ring, fd, &buffer, offset, options)?;
        offset += (options.block_size_bytes * options.queue_depth) as u64;
    }

    let mut write_latency_us = new_histogram();
    let mut bytes_written = 0u64;
    let mut groups = 0u64;
    let mut offset = 0u64;
    let start = Instant::now();
    while start.elapsed() < options.duration {
        let group_start = Instant::now();
        run_group(&mut ring, fd, &buffer, offset, options)?;
        let latency_us = group_start.elapsed().as_micros() as u64;
        write_latency_us.saturating_record_n(latency_us.max(1), options.queue_depth as u64);
        let group_bytes = (options.block_size_bytes * options.queue_depth) as u64;
        bytes_written += group_bytes;
        if let Some(appended) = appended {
            appended.fetch_add(group_bytes, Ordering::Relaxed);
        }
        groups += 1;
        offset = (offset + group_bytes) % file_size;
    }
    Ok(RawDiskResult {
        bytes_written,
        elapsed: start.elapsed(),
        groups,
        write_latency_us,
    })
}

/// Submits `queue_depth` writes at consecutive offsets from `offset`, waits for all of them,
/// then one fdatasync and waits for it.
fn run_group(
    ring: &mut IoUring,
    fd: types::Fd,
    buffer: &AlignedBuffer,
    offset: u64,
    options: &RawDiskOptions,
) -> std::io::Result<()> {
    let block = options.block_size_bytes;
    for index in 0..options.queue_depth {
        let write = opcode::Write::new(fd, buffer.pointer, block as u32)
            .offset(offset + (index * block) as u64)
            .build()
            .user_data(index as u64);
        // SAFETY: the buffer outlives the write: this function waits for every completion
        // below before returning, and the buffer is owned by the caller for longer. The ring
        // has room for queue_depth + 1 entries and is empty at the start of a group.
        unsafe { ring.submission().push(&write) }.map_err(|_| invalid("ring full".into()))?;
    }
    let mut first_error = wait_for(ring, options.queue_depth, block)?;
    let sync = opcode::Fsync::new(fd)
        .flags(types::FsyncFlags::DATASYNC)
        .build()
        .user_data(SYNC_TAG);
    // SAFETY: fsync carries no buffer.
    unsafe { ring.submission().push(&sync) }.map_err(|_| invalid("ring full".into()))?;
    if let Some(error) = wait_for(ring, 1, 0)? {
        first_error.get_or_insert(error);
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Submits what is queued and reaps exactly `count` completions. A failed or short write is
/// returned as the first error, after every completion has been reaped (so no write still
/// uses the buffer when the caller drops it).
fn wait_for(
    ring: &mut IoUring,
    count: usize,
    expected_bytes: usize,
) -> std::io::Result<Option<std::io::Error>> {
    let mut reaped = 0;
    let mut first_error = None;
    while reaped < count {
        ring.submit_and_wait(1)?;
        for completion in ring.completion() {
            reaped += 1;
            let result = completion.result();
            if result < 0 {
                first_error.get_or_insert(std::io::Error::from_raw_os_error(-result));
            } else if completion.user_data() != SYNC_TAG && result as usize != expected_bytes {
                first_error.get_or_insert(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {result} of {expected_bytes} bytes"),
                ));
            }
        }
    }
    Ok(first_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_syncs_whole_groups() {
        let directory = tempfile::tempdir().expect("temp dir");
        let options = RawDiskOptions {
            block_size_bytes: 64 * 1024,
            queue_depth: 4,
            file_size_bytes: 1024 * 1024,
            duration: Duration::from_millis(30),
        };
        let result = run(directory.path(), &options).expect("raw disk run");
        assert!(result.groups > 0);
        assert_eq!(result.bytes_written, result.groups * 4 * 64 * 1024);
        assert_eq!(result.write_latency_us.len(), result.groups * 4);
        // The temporary file is gone.
        assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
    }

    #[test]
    fn prewrite_variant_keeps_up_and_cleans_up() {
        let directory = tempfile::tempdir().expect("temp dir");
        let options = RawDiskOptions {
            block_size_bytes: 64 * 1024,
            queue_depth: 16,
            file_size_bytes: 4 << 20,
            duration: Duration::from_millis(100),
        };
        let result = run_with_prewrite(directory.path(), &options, 2 << 20).expect("run");
        assert!(result.groups > 0);
        assert_eq!(result.bytes_written, result.groups * 16 * 64 * 1024);
        assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
    }

    #[test]
    fn rejects_unaligned_blocks() {
        let directory = tempfile::tempdir().expect("temp dir");
        let options = RawDiskOptions {
            block_size_bytes: 1000,
            queue_depth: 1,
            file_size_bytes: 1 << 20,
            duration: Duration::from_millis(1),
        };
        let error = run(directory.path(), &options).unwrap_err();
        assert!(error.to_string().contains("multiple of 4096"), "{error}");
    }
}
