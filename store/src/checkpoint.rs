//! Index checkpoints: the whole index, the durable WAL position it covers and the bytes of the
//! partly filled tail page, so a clean restart reads no WAL at all and an unclean one scans
//! only what was written after the checkpoint.
//!
//! File `checkpoint` (replaced atomically: written to `checkpoint.tmp`, synced, renamed, the
//! directory synced), all integers little-endian:
//!
//! ```text
//! 8   magic "ESCKPT01"
//! 8   sequence (increases with every checkpoint)
//! 8   position: the WAL is complete up to here; recovery scans from here
//! 4   tail_len = position % 4096, then tail_len bytes: the WAL page holding `position`, up to it
//! 8   range count, then per range:
//!       8 stream_id, 4 range_index, 4 entry count n, 8 start_offset, 8 next_offset,
//!       n x (8 base_offset, 8 position, 4 payload_len, 4 count)
//! 4   crc32c of everything above
//! ```
//!
//! File `clean` holds the sequence of the checkpoint written at a clean shutdown. It is removed
//! (and the removal synced) before a reopened store accepts appends, so its presence proves
//! that nothing was written after that checkpoint.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use runtime::durable;

use crate::error::{Error, Result};
use crate::index::{BatchIndex, Index, IndexEntry};
use crate::{Offset, RangeIndex, RangeKey, StreamId, WalPosition, PAGE_BYTES};

const MAGIC: &[u8; 8] = b"ESCKPT01";
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
pub(crate) const CLEAN_FILE: &str = "clean";

/// A decoded checkpoint.
pub(crate) struct Checkpoint {
    pub sequence: u64,
    pub position: WalPosition,
    pub tail: Vec<u8>,
    pub index: Index,
}

pub(crate) fn encode(sequence: u64, position: WalPosition, tail: &[u8], index: &Index) -> Vec<u8> {
    assert_eq!(tail.len() as u64, position % PAGE_BYTES as u64);
    let entries: usize = index.values().map(|range| range.entries().len()).sum();
    let mut out = Vec::with_capacity(64 + tail.len() + index.len() * 32 + entries * 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&(tail.len() as u32).to_le_bytes());
    out.extend_from_slice(tail);
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    let mut keys: Vec<&RangeKey> = index.keys().collect();
    keys.sort();
    for key in keys {
        let range = &index[key];
        out.extend_from_slice(&key.stream_id.0.to_le_bytes());
        out.extend_from_slice(&key.range_index.0.to_le_bytes());
        out.extend_from_slice(&(range.entries().len() as u32).to_le_bytes());
        out.extend_from_slice(&range.start_offset().0.to_le_bytes());
        out.extend_from_slice(&range.next_offset().0.to_le_bytes());
        for entry in range.entries() {
            out.extend_from_slice(&entry.base_offset.0.to_le_bytes());
            out.extend_from_slice(&entry.position.to_le_bytes());
            out.extend_from_slice(&entry.payload_len.to_le_bytes());
            out.extend_from_slice(&entry.count.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8]> {
        if self.bytes.len() - self.at < len {
            return Err(corrupt("ends early"));
        }
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }
    fn u32(&mut self) -> Result<u32> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }
}

fn corrupt(detail: &str) -> Error {
    Error::Corrupt {
        position: 0,
        detail: format!(
            "checkpoint file {detail}; move it aside to recover by scanning the whole WAL"
        ),
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("does not start with the checkpoint magic"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut raw = [0u8; 4];
    raw.copy_from_slice(crc);
    if crc32c::crc32c(body) != u32::from_le_bytes(raw) {
        return Err(corrupt("fails its checksum"));
    }
    let mut reader = Reader {
        bytes: body,
        at: MAGIC.len(),
    };
    let sequence = reader.u64()?;
    let position = reader.u64()?;
    let tail_len = reader.u32()? as usize;
    if tail_len as u64 != position % PAGE_BYTES as u64 {
        return Err(corrupt("has a tail page that does not match its position"));
    }
    let tail = reader.take(tail_len)?.to_vec();
    let range_count = reader.u64()?;
    let mut index = Index::with_capacity(range_count.min(1 << 20) as usize);
    for _ in 0..range_count {
        let key = RangeKey {
            stream_id: StreamId(reader.u64()?),
            range_index: RangeIndex(reader.u32()?),
        };
        let entry_count = reader.u32()? as usize;
        let start_offset = Offset(reader.u64()?);
        let next_offset = Offset(reader.u64()?);
        if entry_count > (body.len() - reader.at) / 24 {
            return Err(corrupt("claims more entries than it holds"));
        }
        let mut entries = VecDeque::with_capacity(entry_count);
        for _ in 0..entry_count {
            entries.push_back(IndexEntry {
                base_offset: Offset(reader.u64()?),
                position: reader.u64()?,
                payload_len: reader.u32()?,
                count: reader.u32()?,
            });
        }
        index.insert(
            key,
            BatchIndex::from_parts(start_offset, next_offset, entries),
        );
    }
    if reader.at != body.len() {
        return Err(corrupt("has trailing bytes"));
    }
    Ok(Checkpoint {
        sequence,
        position,
        tail,
        index,
    })
}

/// Replaces the checkpoint file atomically and durably.
pub(crate) fn write(directory: &Path, bytes: &[u8]) -> Result<()> {
    let target = directory.join(CHECKPOINT_FILE);
    durable::write_file_durably(&target, bytes).map_err(|error| match error.raw_os_error() {
        Some(errno) => Error::errno("writing the index checkpoint", errno),
        None => Error::io("writing the index checkpoint", &error),
    })
}

/// Writes checkpoints on a thread of its own, one at a time, so the IO thread never waits for a
/// file write and its sync: it encodes the checkpoint (memory only), hands the bytes over, and
/// learns on a later turn of its loop that the file is durable.
pub(crate) struct Writer {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Written>,
    thread: Option<JoinHandle<()>>,
    busy: bool,
}

struct Job {
    sequence: u64,
    position: WalPosition,
    bytes: Vec<u8>,
}

/// A checkpoint the writer finished (or failed to write).
pub(crate) struct Written {
    pub sequence: u64,
    pub position: WalPosition,
    pub result: Result<()>,
}

impl Writer {
    /// Starts the writer thread for checkpoints in `directory`.
    pub(crate) fn start(directory: &Path) -> Result<Writer> {
        let directory: PathBuf = directory.to_path_buf();
        let (jobs, job_receiver) = mpsc::sync_channel::<Job>(1);
        let (done_sender, done) = mpsc::sync_channel::<Written>(1);
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                while let Ok(job) = job_receiver.recv() {
                    let result = write(&directory, &job.bytes);
                    let written = Written {
                        sequence: job.sequence,
                        position: job.position,
                        result,
                    };
                    if done_sender.send(written).is_err() {
                        break;
                    }
                }
            })
            .map_err(|error| Error::io("starting the checkpoint writer thread", &error))?;
        Ok(Writer {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            busy: false,
        })
    }

    /// True while a checkpoint is being written.
    pub(crate) fn busy(&self) -> bool {
        self.busy
    }

    /// Hands a checkpoint over. The caller checks [`Writer::busy`] first: one at a time.
    pub(crate) fn submit(&mut self, sequence: u64, position: WalPosition, bytes: Vec<u8>) {
        debug_assert!(!self.busy);
        let job = Job {
            sequence,
            position,
            bytes,
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        self.busy = matches!(sent, Some(Ok(())));
        if !self.busy {
            log::error!(
                "store: the checkpoint writer thread is gone; checkpoint {sequence} not written"
            );
        }
    }

    /// The checkpoint just finished, if it has.
    pub(crate) fn poll(&mut self) -> Option<Written> {
        if !self.busy {
            return None;
        }
        match self.done.try_recv() {
            Ok(written) => {
                self.busy = false;
                Some(written)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.busy = false;
                None
            }
        }
    }

    /// Waits for the checkpoint in flight, if any, and stops the thread.
    pub(crate) fn finish(&mut self) -> Option<Written> {
        let written = if self.busy {
            self.busy = false;
            self.done.recv().ok()
        } else {
            None
        };
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("store: the checkpoint writer thread panicked");
            }
        }
        written
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Reads the checkpoint, if any.
pub(crate) fn read(directory: &Path) -> Result<Option<Checkpoint>> {
    match fs::read(directory.join(CHECKPOINT_FILE)) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::io("reading the index checkpoint", &error)),
    }
}

/// Writes the clean-shutdown marker naming checkpoint `sequence`.
pub(crate) fn mark_clean(directory: &Path, sequence: u64) -> Result<()> {
    let path = directory.join(CLEAN_FILE);
    let result = (|| {
        let file = durable::open(
            &path,
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )?;
        durable::write_all_at(&file, &sequence.to_le_bytes(), 0)?;
        durable::sync_data(&file)?;
        durable::sync_directory(directory)
    })();
    result.map_err(|error| Error::io("writing the clean-shutdown marker", &error))
}

/// Reads and removes (durably) the clean-shutdown marker. True if it named `sequence`.
pub(crate) fn take_clean_mark(directory: &Path, sequence: Option<u64>) -> Result<bool> {
    let path = directory.join(CLEAN_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(Error::io("reading the clean-shutdown marker", &error)),
    };
    durable::remove_file(&path)
        .and_then(|()| durable::sync_directory(directory))
        .map_err(|error| Error::io("removing the clean-shutdown marker", &error))?;
    Ok(bytes.len() == 8
        && Some(u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]))) == sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_detected() {
        let mut index = Index::new();
        let mut range = BatchIndex::new(Offset(10));
        range.push(IndexEntry {
            base_offset: Offset(10),
            position: 4096,
            payload_len: 77,
            count: 4,
        });
        index.insert(
            RangeKey {
                stream_id: StreamId(1),
                range_index: RangeIndex(0),
            },
            range,
        );
        index.insert(
            RangeKey {
                stream_id: StreamId(2),
                range_index: RangeIndex(3),
            },
            BatchIndex::new(Offset(5)),
        );
        let tail = vec![7u8; 200];
        let bytes = encode(9, 8192 + 200, &tail, &index);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.sequence, 9);
        assert_eq!(decoded.position, 8392);
        assert_eq!(decoded.tail, tail);
        assert_eq!(decoded.index, index);
        for at in [0, 9, 30, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(decode(&damaged).is_err(), "byte {at}");
        }
        assert!(decode(&bytes[..bytes.len() - 5]).is_err());
    }
}
