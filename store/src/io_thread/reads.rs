//! Reads the workers cannot serve from their tail memory: each arrives as record extents,
//! which are mapped to read blocks, served from the block cache or loaded with block-sized
//! O_DIRECT reads (one load per block, shared by every read waiting for it), then cut out,
//! verified and handed back as payloads.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use io_uring::{opcode, types};
use runtime::buf::AlignedBuf;

use super::ring::{user_data, OP_BLOCK_READ};
use super::IoThread;
use crate::error::{Error, Result};
use crate::message::{Extent, Outcome};
use crate::record::{self, RecordKind, HEADER_BYTES};
use crate::{WalPosition, PAGE_BYTES};

pub(super) struct BlockLoad {
    pub(super) block_start: WalPosition,
    pub(super) segment_start: WalPosition,
    pub(super) buffer: Option<AlignedBuf>,
    /// The WAL was durable up to here when the read was issued; bytes beyond are not data.
    pub(super) durable_at_issue: WalPosition,
    pub(super) waiters: Vec<usize>,
}

pub(super) struct PendingRead {
    pub(super) worker: usize,
    pub(super) slot: u32,
    pub(super) extents: Vec<Extent>,
    pub(super) blocks: HashMap<WalPosition, Bytes>,
    pub(super) missing: usize,
    pub(super) error: Option<Error>,
}

impl IoThread {
    pub(super) fn block_size(&self) -> u64 {
        self.config.read_block_size_bytes as u64
    }

    pub(super) fn start_read(&mut self, worker: usize, slot: u32, extents: Vec<Extent>) {
        let block_size = self.block_size();
        let read = self.reads.insert(PendingRead {
            worker,
            slot,
            extents,
            blocks: HashMap::new(),
            missing: 0,
            error: None,
        });
        let mut wanted: Vec<(WalPosition, usize)> = Vec::new();
        for extent in &self.reads[read].extents {
            let end = extent.position + record::record_length(extent.payload_len as usize);
            let mut block = extent.position - extent.position % block_size;
            while block < end {
                let needed = (end.min(block + block_size) - block) as usize;
                match wanted.iter_mut().find(|(start, _)| *start == block) {
                    Some((_, len)) => *len = (*len).max(needed),
                    None => wanted.push((block, needed)),
                }
                block += block_size;
            }
        }
        let mut to_load = Vec::new();
        for (block, needed) in wanted {
            match self.cache.get(block, needed) {
                Some(bytes) => {
                    self.stats.block_cache_hits.fetch_add(1, Ordering::Relaxed);
                    self.reads[read].blocks.insert(block, bytes);
                }
                None => to_load.push((block, needed)),
            }
        }
        if to_load.is_empty() {
            self.finish_read(read);
            return;
        }
        // Counted before any load is issued: a load that fails at once (its segment is gone)
        // finishes the read only when it is the last one missing, never in the middle of
        // this loop (the read would be gone for the blocks after it).
        self.reads[read].missing = to_load.len();
        for (block, needed) in to_load {
            if let Some(&load) = self.loads_by_block.get(&block) {
                // A load in flight covers the block if it was issued after the data was durable.
                if self.loads[load].durable_at_issue >= block + needed as u64 {
                    self.loads[load].waiters.push(read);
                    continue;
                }
            }
            self.issue_block_load(block, read);
        }
    }

    pub(super) fn issue_block_load(&mut self, block: WalPosition, read: usize) {
        let block_size = self.block_size();
        let segment_start = self.segment_start(block);
        let durable = self.durable;
        let Some(segment) = self.segments.get_mut(&segment_start) else {
            let pending = &mut self.reads[read];
            pending.missing -= 1;
            pending.error = Some(Error::Corrupt {
                position: block,
                detail: "the segment file holding this data no longer exists".to_string(),
            });
            if pending.missing == 0 {
                self.finish_read(read);
            }
            return;
        };
        segment.reads_in_flight += 1;
        let fd = segment.fd.as_raw_fd();
        let readable = durable.saturating_sub(block).min(block_size);
        let len = (readable as usize)
            .next_multiple_of(PAGE_BYTES)
            .max(PAGE_BYTES);
        let mut buffer = AlignedBuf::zeroed(len);
        let pointer = buffer.as_mut_ptr();
        let load = self.loads.insert(BlockLoad {
            block_start: block,
            segment_start,
            buffer: Some(buffer),
            durable_at_issue: durable,
            waiters: vec![read],
        });
        self.loads_by_block.insert(block, load);
        let entry = opcode::Read::new(types::Fd(fd), pointer, len as u32)
            .offset(block - segment_start)
            .build()
            .user_data(user_data(OP_BLOCK_READ, load as u64));
        self.stats.disk_reads.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the buffer is owned by `self.loads[load]` until `on_block_read` takes it after
        // the completion arrives; the slab entry is not removed before that.
        unsafe { self.push_data(&entry, self.polled.reads) };
    }

    pub(super) fn on_block_read(&mut self, load_id: usize, result: i32) {
        if !self.loads.contains(load_id) {
            return;
        }
        let mut load = self.loads.remove(load_id);
        if self.loads_by_block.get(&load.block_start) == Some(&load_id) {
            self.loads_by_block.remove(&load.block_start);
        }
        if let Some(segment) = self.segments.get_mut(&load.segment_start) {
            segment.reads_in_flight -= 1;
        }
        let outcome = if result < 0 {
            Err(Error::errno(
                format!("WAL read at position {}", load.block_start),
                -result,
            ))
        } else {
            let valid = (result as u64).min(load.durable_at_issue.saturating_sub(load.block_start))
                as usize;
            let buffer = load
                .buffer
                .take()
                .unwrap_or_else(|| AlignedBuf::zeroed(PAGE_BYTES));
            let bytes = Bytes::from_owner(buffer).slice(..valid);
            self.stats
                .disk_read_bytes
                .fetch_add(result as u64, Ordering::Relaxed);
            self.cache.insert(load.block_start, bytes.clone());
            self.stats
                .block_cache_bytes
                .store(self.cache.bytes as u64, Ordering::Relaxed);
            Ok(bytes)
        };
        for read in load.waiters {
            let Some(pending) = self.reads.get_mut(read) else {
                continue;
            };
            match &outcome {
                Ok(bytes) => {
                    pending.blocks.insert(load.block_start, bytes.clone());
                }
                Err(error) => pending.error = Some(error.clone()),
            }
            pending.missing -= 1;
            if pending.missing == 0 {
                self.finish_read(read);
            }
        }
        if !self.shutting_down {
            self.reclaim_segments();
        }
    }

    pub(super) fn finish_read(&mut self, read: usize) {
        let pending = self.reads.remove(read);
        let outcome = match pending.error {
            Some(error) => Err(error),
            None => self
                .assemble(&pending.extents, &pending.blocks)
                .map(Outcome::Read),
        };
        if matches!(outcome, Err(Error::Corrupt { .. })) {
            self.stats.corrupt_reads.fetch_add(1, Ordering::Relaxed);
        }
        self.complete(pending.worker, pending.slot, outcome);
    }

    /// Cuts each record out of its block(s), verifies it and returns the payloads.
    pub(super) fn assemble(
        &self,
        extents: &[Extent],
        blocks: &HashMap<WalPosition, Bytes>,
    ) -> Result<Vec<Bytes>> {
        let block_size = self.block_size();
        let mut payloads = Vec::with_capacity(extents.len());
        for extent in extents {
            let length = record::record_length(extent.payload_len as usize) as usize;
            let end = extent.position + length as u64;
            let first_block = extent.position - extent.position % block_size;
            let short = || Error::Corrupt {
                position: extent.position,
                detail: "the record extends past the data read from disk".to_string(),
            };
            let record: Bytes = if end <= first_block + block_size {
                let block = blocks.get(&first_block).ok_or_else(short)?;
                let at = (extent.position - first_block) as usize;
                if block.len() < at + length {
                    return Err(short());
                }
                block.slice(at..at + length)
            } else {
                let mut joined = Vec::with_capacity(length);
                let mut position = extent.position;
                while position < end {
                    let block_start = position - position % block_size;
                    let block = blocks.get(&block_start).ok_or_else(short)?;
                    let at = (position - block_start) as usize;
                    let take = ((end - position) as usize).min(block_size as usize - at);
                    if block.len() < at + take {
                        return Err(short());
                    }
                    joined.extend_from_slice(&block[at..at + take]);
                    position += take as u64;
                }
                Bytes::from(joined)
            };
            let segment_start = self.segment_start(extent.position);
            match record::decode(
                &record,
                segment_start,
                segment_start + self.segment_size,
                extent.position,
            ) {
                Ok(header)
                    if header.kind == RecordKind::Append
                        && header.payload_len == extent.payload_len => {}
                Ok(_) => {
                    return Err(Error::Corrupt {
                        position: extent.position,
                        detail: "the record found there is not the batch the index names"
                            .to_string(),
                    })
                }
                Err(invalid) => {
                    return Err(Error::Corrupt {
                        position: extent.position,
                        detail: format!("the batch's record does not verify ({invalid:?})"),
                    })
                }
            }
            payloads.push(record.slice(HEADER_BYTES..HEADER_BYTES + extent.payload_len as usize));
        }
        Ok(payloads)
    }
}
