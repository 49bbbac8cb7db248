//! The log thread ("pm-log"): owns the segment files, turns whatever is queued into one group
//! (one write, one fdatasync), publishes the new durable index, and installs snapshots.
//!
//! ```text
//! loop:
//!   wait until records are queued, a snapshot is requested, or close was called
//!   take the whole queue                       (appends go on queuing meanwhile)
//!   encode it into one buffer; one pwrite + one fdatasync per segment touched
//!     (a new segment: create, sync the directory, then write into it)
//!   durable_index = last index of the group; wake its tasks and blocking waiters
//!   install the requested snapshot, if any, then delete the segments it covers
//! ```
//!
//! A failed write or sync stops the log for good: the records of the group and everything
//! queued behind it fail with `LogError::Io`, and so does every later append. Retrying an
//! fdatasync after an error is not safe on Linux (the error may not be reported twice while
//! the data was dropped), so the honest answer is to stop and let recovery decide at the next
//! open what is on disk. A failed append's record may therefore be found there (its outcome is
//! unknown, as with a timeout), but never a record after one that is missing.

use std::fs;

use runtime::durable;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files;
use super::record;
use super::shared::{Shared, SnapshotRequest};
use super::LogError;

/// The segment being appended to.
pub(crate) struct ActiveSegment {
    pub file: fs::File,
    pub path: PathBuf,
    /// Bytes of whole records in the file; the next record goes here.
    pub bytes: u64,
}

/// What the log thread owns, as recovery left it.
pub(crate) struct Writer {
    pub directory: PathBuf,
    pub segment_size_bytes: u64,
    /// Every segment file, oldest first: (first index, path). The last one is `active`'s.
    pub segments: Vec<(u64, PathBuf)>,
    /// None until the first write when the log has no segment to continue (a new log, or one
    /// whose records all lie below the snapshot).
    pub active: Option<ActiveSegment>,
    /// Snapshot files on disk, oldest first (more than one only while installing).
    pub snapshots: Vec<(u64, PathBuf)>,
}

pub(crate) fn run(mut writer: Writer, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    loop {
        let (first_index, records, snapshot) = {
            let mut state = shared.lock();
            loop {
                #[cfg(test)]
                let held = state.held;
                #[cfg(not(test))]
                let held = false;
                let has_work = !state.queue.is_empty() || state.snapshot_request.is_some();
                if (has_work || state.closing) && !held {
                    break;
                }
                state = shared.wait_work(state);
            }
            if state.queue.is_empty() && state.snapshot_request.is_none() {
                debug_assert!(state.closing);
                break;
            }
            let records = std::mem::take(&mut state.queue);
            let first_index = state.next_index - records.len() as u64;
            if state.failure.is_some() {
                // Nothing queued after a failure is written (append refuses new records, but
                // these were queued before it happened).
                debug_assert!(records.is_empty());
            }
            (first_index, records, state.snapshot_request.take())
        };

        if !records.is_empty() {
            let last_index = first_index + records.len() as u64 - 1;
            let result = writer.write_group(&shared, first_index, &records, &mut buffer);
            let wakers = {
                let mut state = shared.lock();
                match result {
                    Ok(()) => {
                        assert_eq!(
                            state.durable_index + 1,
                            first_index,
                            "groups become durable in index order"
                        );
                        state.durable_index = last_index;
                        let bytes: usize = records.iter().map(Vec::len).sum();
                        state.pending_bytes -= bytes;
                        state.stats.groups += 1;
                        state.stats.records_written += records.len() as u64;
                    }
                    Err(error) => {
                        log::error!("command log stopped: {error}");
                        state.failure = Some(error);
                        // Everything still queued fails with it.
                        state.queue.clear();
                    }
                }
                state.take_settled_wakers()
            };
            shared.progress.notify_all();
            for waker in wakers {
                waker.wake();
            }
        }

        if let Some(request) = snapshot {
            let result = writer.install_snapshot(&shared, &request);
            if result.is_ok() {
                let mut state = shared.lock();
                state.snapshot_index = request.last_index;
                state.stats.snapshots_installed += 1;
            }
            request.completion.complete(result);
        }
    }
    let wakers = {
        let mut state = shared.lock();
        state.stopped = true;
        state.take_settled_wakers()
    };
    shared.progress.notify_all();
    for waker in wakers {
        waker.wake();
    }
}

impl Writer {
    /// Writes records `first_index..` and data-syncs them: one write and one fdatasync per
    /// segment touched (one, unless the group fills a segment).
    fn write_group(
        &mut self,
        shared: &Shared,
        first_index: u64,
        records: &[Vec<u8>],
        buffer: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        buffer.clear();
        for (index, payload) in (first_index..).zip(records) {
            let record_bytes = record::encoded_len(payload.len()) as u64;
            let in_segment =
                self.active.as_ref().map_or(0, |active| active.bytes) + buffer.len() as u64;
            let must_roll = match &self.active {
                None => true,
                // A segment holds at least one record, so a record larger than a segment fits.
                Some(_) => in_segment > 0 && in_segment + record_bytes > self.segment_size_bytes,
            };
            if must_roll {
                self.write_and_sync(shared, buffer)?;
                buffer.clear();
                self.start_segment(shared, index)?;
            }
            record::encode_into(buffer, index, payload);
        }
        self.write_and_sync(shared, buffer)?;
        buffer.clear();
        Ok(())
    }

    fn write_and_sync(&mut self, shared: &Shared, bytes: &[u8]) -> Result<(), LogError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let active = self
            .active
            .as_mut()
            .expect("a segment is started before anything is written");
        durable::write_all_at(&active.file, bytes, active.bytes)
            .map_err(|error| LogError::io(format!("writing {}", active.path.display()), &error))?;
        #[cfg(test)]
        let skip_data_sync = shared.lock().skip_data_sync;
        #[cfg(not(test))]
        let skip_data_sync = false;
        if !skip_data_sync {
            // fdatasync also makes the new file size durable; no other metadata is needed.
            durable::sync_data(&active.file).map_err(|error| {
                LogError::io(format!("fdatasync of {}", active.path.display()), &error)
            })?;
        }
        active.bytes += bytes.len() as u64;
        let mut state = shared.lock();
        state.stats.data_syncs += 1;
        state.stats.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// Creates the segment whose first record is `first_index` and makes its name durable
    /// before anything is written to it.
    fn start_segment(&mut self, shared: &Shared, first_index: u64) -> Result<(), LogError> {
        let path = files::segment_path(&self.directory, first_index);
        let file = durable::open(&path, fs::OpenOptions::new().write(true).create_new(true))
            .map_err(|error| LogError::io(format!("creating {}", path.display()), &error))?;
        durable::sync_directory(&self.directory).map_err(|error| {
            LogError::io(
                format!("fsync of directory {}", self.directory.display()),
                &error,
            )
        })?;
        self.segments.push((first_index, path.clone()));
        self.active = Some(ActiveSegment {
            file,
            path,
            bytes: 0,
        });
        shared.lock().stats.segments_created += 1;
        Ok(())
    }

    /// Writes the snapshot durably, then deletes the segments it wholly covers and older
    /// snapshots, then syncs the directory. A crash in between leaves files recovery deletes.
    fn install_snapshot(
        &mut self,
        shared: &Shared,
        request: &SnapshotRequest,
    ) -> Result<(), LogError> {
        let last_index = request.last_index;
        let path = files::snapshot_path(&self.directory, last_index);
        let bytes = files::encode_snapshot(last_index, &request.bytes);
        durable::write_file_durably(&path, &bytes)
            .map_err(|error| LogError::io(format!("writing {}", path.display()), &error))?;
        self.snapshots.retain(|(index, _)| *index != last_index);
        self.snapshots.push((last_index, path));

        let mut removed = 0;
        // Segment i is wholly covered when the next one starts at or below last_index + 1. The
        // active segment is never deleted: the next group continues it.
        while self.segments.len() >= 2 && self.segments[1].0 <= last_index + 1 {
            let (_, path) = self.segments.remove(0);
            remove(&path)?;
            removed += 1;
        }
        while self.snapshots.len() >= 2 {
            let (_, path) = self.snapshots.remove(0);
            remove(&path)?;
        }
        durable::sync_directory(&self.directory).map_err(|error| {
            LogError::io(
                format!("fsync of directory {}", self.directory.display()),
                &error,
            )
        })?;
        shared.lock().stats.segments_deleted += removed;
        Ok(())
    }
}

pub(crate) fn remove(path: &Path) -> Result<(), LogError> {
    durable::remove_file(path)
        .map_err(|error| LogError::io(format!("removing {}", path.display()), &error))
}
