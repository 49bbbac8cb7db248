//! The IO thread: owns the WAL segment files and its io_uring ring (plus a polled ring for WAL
//! writes and reads with `uring.iopoll` on a device that polls), and nothing else runs here.
//!
//! Data flow:
//! * Each worker has a request mailbox to this thread and a completion mailbox back. The thread
//!   keeps a poll of every request mailbox's eventfd in flight in its ring, arms the mailboxes
//!   before it waits and disarms them after, so busy workers pay no syscalls for wake-ups.
//! * Appends, trims and deletes are encoded straight into the *staging* group buffer as they
//!   are drained. A group is written as whole pages starting at the page that holds the log's
//!   tail (the partly filled page is rewritten in place, with its old bytes unchanged), as one
//!   O_DIRECT write of up to 1 MiB (several in flight together beyond that). The next group's
//!   writes start only once the previous group's writes completed, so two writes of one page
//!   are never in flight together, unless the previous group ended on a page boundary (a
//!   page-padding record, added to groups of 32 KiB or more): then both are written at once.
//! * Every group carrying records opens with a group start record, encoded at submission with
//!   the durable (synced) position of that moment: recovery's evidence that damage below it is
//!   corruption of acknowledged data, not a torn write. A failed group's extent is zeroed and
//!   synced (blocking, failure path only) before its appends are answered.
//! * Data syncs are decoupled from writes: whenever written groups wait at the front of the log
//!   and no sync is in flight, one `fdatasync` per segment file concerned makes them durable,
//!   while later writes go on. Groups retire in WAL order when a sync issued after their write
//!   completes; completions go back to each worker in WAL
//!   order, after the thread's own copy of the index (used for checkpoints and retention) has
//!   been updated.
//! * Reads the workers cannot serve from their tail memory arrive as record extents; they are
//!   served from the block cache or with block-sized O_DIRECT reads (read-ahead for catch-up
//!   readers), every record's checksum verified before its payload is handed out.
//! * In the background the thread prepares new segments (a small pool ahead of need): with
//!   `prewrite: always` each is written through with filler before use; with `prewrite: idle`
//!   (the default) the write-through runs only while no appends are staged or in flight, and a
//!   segment the log needs first is used as allocated. It also recycles segments whose every
//!   range was trimmed or deleted once a checkpoint covers them, and encodes checkpoints
//!   periodically (a `store-checkpoint` thread writes them) and writes one at shutdown.
//!
//! This file holds the thread's state ([`IoThread`]) and its loop; each concern has a file:
//! `ring` (ring set-up, submission, dispatch of completions), `mailboxes` (worker and control
//! mailboxes, wake-ups), `staging` (requests encoded into the staging group), `group` (group
//! forming decisions), `group_commit` (group writes, data syncs, retiring groups in WAL order),
//! `sync_policy` (what a sync covers, when a group is acknowledged), `reads` (reads and
//! read-ahead), `block_cache`, `segments` (preparing, recycling and deleting segments). The
//! checkpoint schedule is `crate::checkpoint_schedule`.

mod block_cache;
mod group;
mod group_commit;
mod mailboxes;
mod reads;
mod ring;
mod segments;
mod staging;
mod sync_policy;

use block_cache::BlockCache;
use group::Group;
use group_commit::{InFlightGroup, SyncInFlight};
use mailboxes::WorkerPort;
use reads::{BlockLoad, PendingRead};
use ring::{build_poll_ring, build_ring, PolledOps};
use segments::{Prewrite, Segment};

pub(crate) use group::{MAX_BYTES_IN_FLIGHT_GROUPS, MAX_GROUPS_IN_FLIGHT};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use io_uring::IoUring;
use runtime::buf::AlignedBuf;
use runtime::mailbox::{Receiver, Sender};
use slab::Slab;

use crate::checkpoint;
use crate::checkpoint_schedule::CheckpointSchedule;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::layout::{self};
use crate::message::{Completion, Control, Request, SharedStats};
use crate::{Offset, RangeKey, WalPosition, PAGE_BYTES};

/// Everything the IO thread starts from.
pub(crate) struct IoThreadSetup {
    pub config: StoreConfig,
    pub index: Index,
    pub durable: WalPosition,
    pub tail_page: Vec<u8>,
    pub segments: Vec<u64>,
    pub checkpoint_sequence: u64,
    pub checkpoint_position: WalPosition,
    pub workers: Vec<(Receiver<Request>, Sender<Completion>)>,
    pub control: Receiver<Control>,
    pub stats: Arc<SharedStats>,
}

/// The IO thread's state.
pub(crate) struct IoThread {
    config: StoreConfig,
    wal_directory: PathBuf,
    segment_size: u64,
    ring: IoUring,
    /// Ring set up with IOPOLL for WAL writes and block reads (`uring.iopoll` on a device that
    /// polls); it is polled, never waited on, while `polled_in_flight` is not zero.
    poll_ring: Option<IoUring>,
    polled_in_flight: usize,
    /// Completions reaped while an entry waited for room in a submission queue, dispatched
    /// first at the next turn.
    reaped: Vec<(u64, i32)>,
    /// What the polled ring carries: probed at start, since a kernel may poll one and refuse
    /// the other (reads from a device without poll queues fail with EOPNOTSUPP).
    polled: PolledOps,
    ports: Vec<WorkerPort>,
    control: Receiver<Control>,
    segments: BTreeMap<WalPosition, Segment>,
    index: Index,
    /// Next offset of ranges with appends staged or in flight.
    expected_next: HashMap<RangeKey, Offset>,
    durable: WalPosition,
    /// Bytes of the page holding `durable`, up to it: rewritten in place by the next group.
    tail_page: Vec<u8>,
    staging: Group,
    in_flight: VecDeque<InFlightGroup>,
    groups_submitted: u64,
    /// Groups allowed in flight: `MAX_GROUPS_IN_FLIGHT` within `GROUP_BUFFER_BUDGET_BYTES`.
    max_groups_in_flight: usize,
    sync_in_flight: Option<SyncInFlight>,
    /// Groups up to this sequence are durable.
    synced_through: Option<u64>,
    /// A failed group's write may have reached the disk up to here; it is zeroed before the
    /// failed appends are answered (or, if that fails too, by the next group's write).
    dirty_until: WalPosition,
    /// Appends of failed groups, answered once their extent is zeroed.
    failed_appends: Vec<(usize, u32, Error)>,
    spare_buffers: Vec<AlignedBuf>,
    /// A group failed; the groups behind it fail as they complete, and nothing new is
    /// submitted until all are done.
    failure: Option<Error>,
    loads: Slab<BlockLoad>,
    loads_by_block: HashMap<WalPosition, usize>,
    reads: Slab<PendingRead>,
    cache: BlockCache,
    prewrite: Option<Prewrite>,
    /// Appends wait for a segment that is not ready: with `prewrite: idle` the segment being
    /// prepared is published as it stands.
    segment_wanted: bool,
    full_since: Option<Instant>,
    checkpoints: CheckpointSchedule,
    shutting_down: bool,
    halting: bool,
    stats: Arc<SharedStats>,
}

impl IoThread {
    /// Builds the ring and opens the segments. Runs on the thread that called `Store::open`, so
    /// setup errors reach the caller.
    pub(crate) fn new(setup: IoThreadSetup) -> Result<IoThread> {
        let IoThreadSetup {
            config,
            index,
            durable,
            tail_page,
            segments,
            checkpoint_sequence,
            checkpoint_position,
            workers,
            control,
            stats,
        } = setup;
        let wal_directory = config.path.join(layout::WAL_DIRECTORY);
        let segment_size = config.segment_size_bytes;
        let mut open_segments = BTreeMap::new();
        for start in segments {
            let path = layout::segment_path(&wal_directory, start);
            let fd = layout::open_direct(&path, false)
                .map_err(|error| Error::io(format!("opening {}", path.display()), &error))?;
            open_segments.insert(
                start,
                Segment {
                    fd,
                    ranges: HashMap::new(),
                    reads_in_flight: 0,
                },
            );
        }
        for (key, range) in &index {
            for entry in range.entries() {
                let start = entry.position - entry.position % segment_size;
                if let Some(segment) = open_segments.get_mut(&start) {
                    segment.ranges.insert(*key, entry.end_offset());
                }
            }
        }
        let ring = build_ring(&config)?;
        let (poll_ring, polled) = match build_poll_ring(&config) {
            Some((ring, polled)) => (Some(ring), polled),
            None => (None, PolledOps::default()),
        };
        let ports = workers
            .into_iter()
            .map(|(requests, completions)| WorkerPort {
                requests,
                completions,
                outbox: Vec::new(),
                deferred: VecDeque::new(),
                closed: false,
                requests_closed: false,
            })
            .collect();
        let group_capacity = config.max_group_bytes + PAGE_BYTES;
        let staging = Group {
            buffer: AlignedBuf::zeroed(group_capacity),
            page_start: 0,
            start: 0,
            end: 0,
            sealed: false,
            opened: false,
            entries: Vec::new(),
        };
        let cache = BlockCache {
            blocks: HashMap::new(),
            bytes: 0,
            capacity_bytes: config.cache_size_bytes / 2,
            tick: 0,
        };
        let mut io_thread = IoThread {
            wal_directory,
            segment_size,
            ring,
            poll_ring,
            polled_in_flight: 0,
            reaped: Vec::new(),
            polled,
            ports,
            control,
            segments: open_segments,
            index,
            expected_next: HashMap::new(),
            durable,
            tail_page: Vec::new(),
            staging,
            in_flight: VecDeque::new(),
            groups_submitted: 0,
            max_groups_in_flight: group::max_groups_in_flight(group_capacity),
            sync_in_flight: None,
            synced_through: None,
            dirty_until: 0,
            failed_appends: Vec::new(),
            spare_buffers: vec![AlignedBuf::zeroed(group_capacity)],
            failure: None,
            loads: Slab::new(),
            loads_by_block: HashMap::new(),
            reads: Slab::new(),
            cache,
            prewrite: None,
            segment_wanted: false,
            full_since: None,
            checkpoints: CheckpointSchedule::start(
                &config.path,
                config.checkpoint_interval_ms,
                checkpoint_sequence,
                checkpoint_position,
            )?,
            shutting_down: false,
            halting: false,
            stats,
            config,
        };
        io_thread.reset_staging(durable, &tail_page);
        io_thread.tail_page = tail_page;
        io_thread.publish_segment_stats();
        io_thread
            .stats
            .durable_position
            .store(durable, Ordering::Relaxed);
        io_thread
            .stats
            .polled_writes
            .store(io_thread.polled.writes, Ordering::Relaxed);
        io_thread
            .stats
            .polled_reads
            .store(io_thread.polled.reads, Ordering::Relaxed);
        Ok(io_thread)
    }

    fn segment_start(&self, position: WalPosition) -> WalPosition {
        position - position % self.segment_size
    }

    /// The IO thread's main loop.
    pub(crate) fn run(mut self) {
        for port in 0..=self.ports.len() {
            self.submit_eventfd_poll(port);
        }
        loop {
            let mut progress = self.drain_control();
            if !self.halting {
                progress |= self.drain_workers();
                progress |= self.maybe_submit_group();
                // Checked every turn, not only when a write or sync completes, so a written group
                // never waits for a completion that is not coming.
                self.maybe_submit_sync();
                progress |= self.maybe_prewrite();
                self.maybe_checkpoint();
            }
            self.flush_outboxes();
            if self.finished() {
                break;
            }
            // Polled I/O completes only when polled: no sleeping while any is in flight.
            let sleep =
                !progress && self.polled_in_flight == 0 && self.reaped.is_empty() && self.arm_all();
            self.submit_and_reap(sleep);
            if sleep {
                self.disarm_all();
            }
        }
        self.exit();
    }

    /// Notes a checkpoint the writer thread finished (reclaiming what it lets go) and starts
    /// the next one when it is due or wanted.
    fn maybe_checkpoint(&mut self) {
        if self.checkpoints.poll_written(&self.stats) {
            self.reclaim_segments();
        }
        self.checkpoints
            .maybe_start(self.durable, &self.tail_page, &self.index);
    }

    fn finished(&self) -> bool {
        if self.halting {
            // A halt stands for a crash: it waits only for the kernel to be done with our
            // buffers, not for written groups to become durable (no sync is issued any more).
            return self.in_flight.iter().all(|in_flight| in_flight.written)
                && self.sync_in_flight.is_none()
                && self.loads.is_empty()
                && self
                    .prewrite
                    .as_ref()
                    .is_none_or(|prewrite| !prewrite.in_flight);
        }
        let quiet = self.in_flight.is_empty()
            && self.sync_in_flight.is_none()
            && self.loads.is_empty()
            && self
                .prewrite
                .as_ref()
                .is_none_or(|prewrite| !prewrite.in_flight);
        // Requests still deferred (waiting for a segment, which is no longer prepared once
        // shutting down) fail with `Closed` in `exit`.
        self.shutting_down && quiet && self.staging.is_empty() && self.reads.is_empty()
    }

    fn exit(mut self) {
        for worker in 0..self.ports.len() {
            let deferred: Vec<Request> = self.ports[worker].deferred.drain(..).collect();
            for request in deferred {
                let slot = match request {
                    Request::Append { slot, .. }
                    | Request::Trim { slot, .. }
                    | Request::Delete { slot, .. }
                    | Request::Read { slot, .. } => slot,
                };
                self.complete(worker, slot, Err(Error::Closed));
            }
        }
        self.flush_outboxes();
        if self.shutting_down && !self.halting {
            let written = self.checkpoints.write_final(
                self.durable,
                &self.tail_page,
                &self.index,
                &self.stats,
            );
            match written {
                Ok(()) => {
                    if let Err(error) =
                        checkpoint::mark_clean(&self.config.path, self.checkpoints.sequence())
                    {
                        log::error!("store: {error}");
                    }
                }
                Err(error) => log::error!("store: final checkpoint failed: {error}"),
            }
        }
        if let Some(prewrite) = self.prewrite.take() {
            let _ = runtime::durable::remove_file(&prewrite.temporary);
        }
        // Only the mailbox polls are still in flight; they reference no memory of ours and
        // end with the ring.
        // Dropping the ports closes the completion mailboxes: workers fail what is pending.
    }
}
