//! The placement manager's durable command log.
//!
//! Every state change of the PM is a command (opaque bytes here), appended to this log and
//! data-synced before the PM answers. Records get a dense index from 1, assigned by `append`
//! at once, so the caller's order is the log's order (Raft may later replicate the same log).
//!
//! ```text
//!  daemon thread(s)                            log thread "pm-log"
//!  append(record) ──► queue (bounded) ───────► take the whole queue = one group
//!    returns (index, Ticket) at once           one pwrite + one fdatasync
//!  ticket.await / wait_durable(index) ◄─────── durable_index = group's last; wake wakers
//!  snapshot(k, bytes) ──────────────────────► snapshot-k written durably, covered segments
//!                                              deleted, directory synced
//! ```
//!
//! Nothing the daemon calls blocks on the disk except `open`, `close` and the explicitly
//! blocking `wait_durable` / `install_snapshot` (for tests, tools and threads off the
//! runtime). Group commit falls out of the design: whatever queues while a sync runs is the
//! next group.
//!
//! # Files (see `docs/pm.md`)
//!
//! * `LOCK`: flock()ed for the life of the log, holds `pid <n>`.
//! * `log-<first index, 20 digits>.seg`: records back to back, no header, no padding. A
//!   segment grows by whole groups; a record starts a new segment when the current one is not
//!   empty and the record would take it past `segment_size_bytes` (so a segment always holds at
//!   least one record, and a segment's records continue the previous segment's exactly).
//! * A record: `u32 length | u32 crc32c(index ‖ length ‖ payload) | u64 index | payload`,
//!   little-endian, payload at most [`MAX_RECORD_BYTES`].
//! * `snapshot-<last index, 20 digits>`: `"PMSNAP01" | u64 last index | u64 length | payload |
//!   u32 crc32c(all before)`, replaced atomically (temporary file, fsync, rename, directory
//!   fsync). Only the newest is kept.
//!
//! # Durability
//!
//! A ticket resolves `Ok` only after the fdatasync covering its record returned; a new
//! segment's name is made durable (directory fsync) before a record is written into it.
//! Recovery (see `recovery.rs`) cuts a torn tail and refuses every other damage. Every write,
//! sync, creation, removal and truncation goes through `runtime::durable`, so the power-loss
//! test in `tests.rs` can drop what no sync covers.

mod error;
mod files;
mod record;
mod recovery;
mod shared;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

pub use error::LogError;
pub use record::{MAX_RECORD_BYTES, RECORD_HEADER_BYTES};
pub use shared::{SnapshotTicket, Ticket};

use shared::{Completion, Shared, SnapshotRequest, State};

/// How the log is sized and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is closed and a new one started once the next record would take it past this
    /// (64 MiB). At least `RECORD_HEADER_BYTES`.
    pub segment_size_bytes: u64,
    /// Records appended and not yet durable, at most (4096); beyond, `append` is `Busy`.
    pub max_pending_records: usize,
    /// Payload bytes appended and not yet durable, at most (64 MiB); beyond, `append` is
    /// `Busy`. Also bounds one group write. A single record is always accepted into an empty
    /// queue.
    pub max_pending_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size_bytes: 64 << 20,
            max_pending_records: 4096,
            max_pending_bytes: 64 << 20,
        }
    }
}

/// What `open` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The newest snapshot: (last index it covers, its bytes).
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Every record after the snapshot, in order: (index, bytes), indexes consecutive.
    pub records: Vec<(u64, Vec<u8>)>,
    /// What recovery did.
    pub report: RecoveryReport,
}

/// What recovery read, removed and cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The loaded snapshot's last index.
    pub snapshot_index: Option<u64>,
    /// Segment files read.
    pub segments_scanned: u64,
    /// Records returned (after the snapshot).
    pub records_recovered: u64,
    /// Bytes of segment and snapshot files read.
    pub bytes_read: u64,
    /// A torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Leftovers of an interrupted snapshot install, removed: temporary files, older snapshots,
    /// segments the snapshot covers.
    pub removed_files: Vec<PathBuf>,
}

/// A torn tail recovery cut off the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// Where it was cut: the end of its last valid record.
    pub offset: u64,
    /// Bytes removed.
    pub bytes_cut: u64,
    /// What was found at `offset`.
    pub reason: String,
}

/// Counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// fdatasync calls that made groups durable.
    pub data_syncs: u64,
    /// Groups written.
    pub groups: u64,
    /// Records made durable.
    pub records_written: u64,
    /// Bytes written to segments (headers included).
    pub bytes_written: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Segment files deleted by snapshots.
    pub segments_deleted: u64,
    /// Snapshots installed.
    pub snapshots_installed: u64,
}

/// The command log: appends from any thread, one log thread doing the I/O. See the module docs.
pub struct CommandLog {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    directory: PathBuf,
    options: LogOptions,
    _lock: files::DirectoryLock,
}

impl std::fmt::Debug for CommandLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandLog")
            .field("directory", &self.directory)
            .field("durable_index", &self.durable_index())
            .finish_non_exhaustive()
    }
}

impl CommandLog {
    /// Opens (creating if needed) the log in `directory`: takes the lock, recovers, and starts
    /// the log thread. Blocking: call it before the daemon's runtime starts serving.
    pub fn open(
        directory: &Path,
        options: LogOptions,
    ) -> Result<(CommandLog, Recovered), LogError> {
        if options.segment_size_bytes < RECORD_HEADER_BYTES as u64 {
            return Err(LogError::InvalidOptions(format!(
                "segment_size_bytes is {}, it must be at least {RECORD_HEADER_BYTES}",
                options.segment_size_bytes
            )));
        }
        if options.max_pending_records == 0 || options.max_pending_bytes == 0 {
            return Err(LogError::InvalidOptions(
                "max_pending_records and max_pending_bytes must be at least 1".into(),
            ));
        }
        runtime::durable::create_dir_all(directory).map_err(|error| {
            LogError::io(
                format!("creating directory {}", directory.display()),
                &error,
            )
        })?;
        let lock = files::lock(directory)?;
        let outcome = recovery::recover(directory, &options)?;
        let durable_index = outcome.next_index - 1;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Vec::new(),
                next_index: outcome.next_index,
                durable_index,
                pending_bytes: 0,
                failure: None,
                closing: false,
                stopped: false,
                wakers: Default::default(),
                next_waiter_id: 0,
                snapshot_request: None,
                snapshot_index: outcome.snapshot_index,
                stats: LogStats::default(),
                #[cfg(test)]
                held: false,
                #[cfg(test)]
                skip_data_sync: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let writer = outcome.writer;
            std::thread::Builder::new()
                .name("pm-log".into())
                .spawn(move || writer::run(writer, shared))
                .map_err(|error| LogError::io("starting the pm-log thread", &error))?
        };
        let log = CommandLog {
            shared,
            thread: Mutex::new(Some(thread)),
            directory: directory.to_path_buf(),
            options,
            _lock: lock,
        };
        Ok((log, outcome.recovered))
    }

    /// Assigns the next index to `record` and queues it for the log thread; never blocks on the
    /// disk. The ticket resolves once the record is durable. Appends are logged in the order
    /// of the calls. Fails with `Busy` (retriable) when the pending bounds are reached,
    /// `TooLarge`, `Closed`, or the error that stopped the log.
    pub fn append(&self, record: Vec<u8>) -> Result<(u64, Ticket), LogError> {
        if record.len() > MAX_RECORD_BYTES {
            return Err(LogError::TooLarge {
                bytes: record.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let index = {
            let mut state = self.shared.lock();
            if let Some(failure) = &state.failure {
                return Err(failure.clone());
            }
            if state.closing || state.stopped {
                return Err(LogError::Closed);
            }
            let pending_records = (state.next_index - 1 - state.durable_index) as usize;
            let over_records = pending_records >= self.options.max_pending_records;
            let over_bytes = pending_records > 0
                && state.pending_bytes + record.len() > self.options.max_pending_bytes;
            if over_records || over_bytes {
                return Err(LogError::Busy {
                    pending_records,
                    pending_bytes: state.pending_bytes,
                    max_pending_records: self.options.max_pending_records,
                    max_pending_bytes: self.options.max_pending_bytes,
                });
            }
            let index = state.next_index;
            state.next_index += 1;
            state.pending_bytes += record.len();
            state.queue.push(record);
            index
        };
        self.shared.work.notify_one();
        Ok((index, Ticket::new(Arc::clone(&self.shared), index)))
    }

    /// A future resolving when record `index` is durable (at once if it already is). Works with
    /// any executor: the log thread wakes the task's `Waker`.
    pub fn durable(&self, index: u64) -> Ticket {
        Ticket::new(Arc::clone(&self.shared), index)
    }

    /// Blocks the calling thread until record `index` is durable. For tests, tools and threads
    /// that are not a runtime's.
    pub fn wait_durable(&self, index: u64) -> Result<(), LogError> {
        shared::wait_durable(&self.shared, index)
    }

    /// Every record up to this index is durable.
    pub fn durable_index(&self) -> u64 {
        self.shared.lock().durable_index
    }

    /// The index the next `append` will assign.
    pub fn next_index(&self) -> u64 {
        self.shared.lock().next_index
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.shared.lock().stats
    }

    /// Asks the log thread to install a snapshot covering records up to `last_index` (which
    /// must be durable, and at least the installed snapshot's): it writes
    /// `snapshot-<last_index>` durably, then deletes the segments it wholly covers and the older
    /// snapshot. Returns at once; the ticket resolves when that is done. One snapshot may be
    /// requested at a time (`Busy` otherwise).
    pub fn snapshot(&self, last_index: u64, bytes: Vec<u8>) -> Result<SnapshotTicket, LogError> {
        let completion = Arc::new(Completion::default());
        {
            let mut state = self.shared.lock();
            if let Some(failure) = &state.failure {
                return Err(failure.clone());
            }
            if state.closing || state.stopped {
                return Err(LogError::Closed);
            }
            if last_index > state.durable_index
                || last_index < state.snapshot_index
                || last_index == 0
            {
                return Err(LogError::SnapshotOutOfRange {
                    last_index,
                    snapshot_index: state.snapshot_index,
                    durable_index: state.durable_index,
                });
            }
            if state.snapshot_request.is_some() {
                return Err(LogError::Busy {
                    pending_records: (state.next_index - 1 - state.durable_index) as usize,
                    pending_bytes: state.pending_bytes,
                    max_pending_records: self.options.max_pending_records,
                    max_pending_bytes: self.options.max_pending_bytes,
                });
            }
            state.snapshot_request = Some(SnapshotRequest {
                last_index,
                bytes,
                completion: Arc::clone(&completion),
            });
        }
        self.shared.work.notify_one();
        Ok(SnapshotTicket { completion })
    }

    /// [`snapshot`](Self::snapshot), blocking until it is installed. For tests and tools, or a
    /// thread that may block.
    pub fn install_snapshot(&self, last_index: u64, bytes: &[u8]) -> Result<(), LogError> {
        self.snapshot(last_index, bytes.to_vec())?.wait()
    }

    /// Writes everything queued, stops the log thread and releases the directory (blocking).
    /// Returns the error that stopped the log, if one did. Drop does the same, silently.
    pub fn close(self) -> Result<(), LogError> {
        self.stop();
        match self.shared.lock().failure.clone() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    fn stop(&self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                log::error!("the pm-log thread panicked");
                let mut state = self.shared.lock();
                state.stopped = true;
                let wakers = state.take_settled_wakers();
                drop(state);
                self.shared.progress.notify_all();
                wakers.into_iter().for_each(std::task::Waker::wake);
            }
        }
    }

    /// Tests: from now on groups are written without their fdatasync, so the power-loss test
    /// can show it sees a missing sync.
    #[cfg(test)]
    pub(crate) fn skip_data_syncs(&self) {
        self.shared.lock().skip_data_sync = true;
    }

    /// Tests: while held, the log thread takes nothing from the queue.
    #[cfg(test)]
    pub(crate) fn hold_writes(&self, held: bool) {
        self.shared.lock().held = held;
        self.shared.work.notify_all();
    }
}

impl Drop for CommandLog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
