//! When the IO thread checkpoints, and the glue between it and the checkpoint writer.
//!
//! The IO thread owns a [`CheckpointSchedule`]: every loop turn it notes a checkpoint the
//! `store-checkpoint` thread finished (segments below it may then be reclaimed) and, when one is
//! due (periodically while the log moves) or wanted (a segment waits for one), encodes the index
//! with [`checkpoint::encode`] and hands the bytes to [`checkpoint::Writer`]. At clean shutdown
//! the last one is written on the IO thread itself. The file format and the atomic write are in
//! `checkpoint.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::checkpoint;
use crate::error::Result;
use crate::index::Index;
use crate::message::SharedStats;
use crate::WalPosition;

/// The IO thread's checkpoint state: the last one written and when the next is due.
pub(crate) struct CheckpointSchedule {
    directory: PathBuf,
    interval: Duration,
    /// Sequence of the last checkpoint written.
    sequence: u64,
    /// The WAL position the last checkpoint written covers.
    position: WalPosition,
    last_started: Instant,
    wanted: bool,
    writer: checkpoint::Writer,
}

impl CheckpointSchedule {
    /// Starts the writer thread for checkpoints in `directory`; the last one on disk is
    /// `sequence`, covering the WAL up to `position`.
    pub(crate) fn start(
        directory: &Path,
        interval_ms: u64,
        sequence: u64,
        position: WalPosition,
    ) -> Result<CheckpointSchedule> {
        Ok(CheckpointSchedule {
            directory: directory.to_path_buf(),
            interval: Duration::from_millis(interval_ms),
            sequence,
            position,
            last_started: Instant::now(),
            wanted: false,
            writer: checkpoint::Writer::start(directory)?,
        })
    }

    /// The WAL position the last checkpoint written covers: recovery never reads below it.
    pub(crate) fn position(&self) -> WalPosition {
        self.position
    }

    /// Sequence of the last checkpoint written.
    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Asks for a checkpoint at the next turn (a segment waits for one, or the owner asked).
    pub(crate) fn want(&mut self) {
        self.wanted = true;
    }

    /// True while the writer thread writes one.
    pub(crate) fn busy(&self) -> bool {
        self.writer.busy()
    }

    /// Notes a checkpoint the writer thread finished. True if one was written since the last
    /// call: segments below it may now be reclaimed.
    pub(crate) fn poll_written(&mut self, stats: &SharedStats) -> bool {
        match self.writer.poll() {
            Some(written) => self.note(written, stats),
            None => false,
        }
    }

    /// Starts the next checkpoint on the writer thread when it is due or wanted and the writer
    /// is free.
    pub(crate) fn maybe_start(&mut self, durable: WalPosition, tail_page: &[u8], index: &Index) {
        if self.writer.busy() {
            return;
        }
        if !is_due(
            self.last_started.elapsed(),
            self.interval,
            durable,
            self.position,
            self.wanted,
        ) {
            return;
        }
        self.wanted = false;
        // A failed one is tried again at the next interval rather than in a tight loop.
        self.last_started = Instant::now();
        let sequence = self.sequence + 1;
        let bytes = checkpoint::encode(sequence, durable, tail_page, index);
        self.writer.submit(sequence, durable, bytes);
    }

    /// Writes a checkpoint on this thread, after the writer thread's one in flight (clean
    /// shutdown).
    pub(crate) fn write_final(
        &mut self,
        durable: WalPosition,
        tail_page: &[u8],
        index: &Index,
        stats: &SharedStats,
    ) -> Result<()> {
        if let Some(written) = self.writer.finish() {
            self.note(written, stats);
        }
        let sequence = self.sequence + 1;
        let bytes = checkpoint::encode(sequence, durable, tail_page, index);
        assert!(
            durable >= self.position,
            "a checkpoint never moves back: {durable} below {}",
            self.position
        );
        checkpoint::write(&self.directory, &bytes)?;
        self.sequence = sequence;
        self.position = durable;
        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records a finished checkpoint. True if it was written.
    fn note(&mut self, written: checkpoint::Written, stats: &SharedStats) -> bool {
        match written.result {
            Ok(()) => {
                self.sequence = written.sequence;
                self.position = written.position;
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(error) => {
                log::error!("store: checkpoint {} failed: {error}", written.sequence);
                false
            }
        }
    }
}

/// A checkpoint is due when one is wanted, or when the interval has passed since the last one
/// started and the log moved past what the last one covers (an idle log is not checkpointed
/// again and again).
pub(crate) fn is_due(
    since_last: Duration,
    interval: Duration,
    durable: WalPosition,
    checkpoint_position: WalPosition,
    wanted: bool,
) -> bool {
    wanted || (since_last >= interval && durable != checkpoint_position)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn due_once_the_interval_passed_and_the_log_moved() {
        assert!(is_due(MINUTE, MINUTE, 8192, 4096, false));
        assert!(!is_due(
            MINUTE - Duration::from_millis(1),
            MINUTE,
            8192,
            4096,
            false
        ));
    }

    #[test]
    fn an_idle_log_is_not_checkpointed_again() {
        assert!(!is_due(10 * MINUTE, MINUTE, 4096, 4096, false));
    }

    #[test]
    fn a_wanted_checkpoint_is_due_at_once() {
        assert!(is_due(Duration::ZERO, MINUTE, 4096, 4096, true));
    }
}
