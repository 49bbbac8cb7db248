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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};
use runtime::mailbox::{Receiver, Sender, TryRecvError};
use slab::Slab;

use crate::checkpoint;
use crate::config::{PrewriteMode, StoreConfig, SyncMode};
use crate::error::{Error, Result};
use crate::index::{BatchIndex, Index, IndexEntry};
use crate::layout::{self, PREWRITE_CHUNK_BYTES};
use crate::message::{Completion, Control, Extent, Outcome, Request, SharedStats};
use crate::record::{self, RecordHeader, RecordKind, HEADER_BYTES};
use crate::{Offset, RangeKey, WalPosition, PAGE_BYTES};
use runtime::buf::AlignedBuf;

const KIND_SHIFT: u32 = 56;
const OP_EVENTFD: u64 = 1;
const OP_GROUP_WRITE: u64 = 2;
const OP_GROUP_SYNC: u64 = 3;
const OP_BLOCK_READ: u64 = 4;
const OP_PREWRITE: u64 = 5;
const OP_PREWRITE_SYNC: u64 = 6;

/// Groups submitted and not yet durable. A group's write may start while earlier ones are
/// still being written only if it shares no page with them; data syncs run back to back, each
/// covering every write completed before it.
pub(crate) const MAX_GROUPS_IN_FLIGHT: usize = 16;
/// Memory for group buffers (each `max_group_bytes` plus a page): fewer groups are kept in
/// flight when groups are large, but never fewer than two.
const GROUP_BUFFER_BUDGET_BYTES: usize = 64 << 20;
/// Under load, a group this large is submitted at once, while more requests are drained.
const EAGER_GROUP_BYTES: usize = 256 << 10;
/// ... and together they write at most this many times `max_group_bytes`: it bounds how much a
/// crash can tear, and so the window recovery treats as a torn tail.
pub(crate) const MAX_BYTES_IN_FLIGHT_GROUPS: usize = 2;
/// Largest single write: a larger group goes out as several writes in flight together. Under
/// load a group is a few hundred KiB, so it usually goes out as one request.
const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Low bits of a group write's user data that number its chunk.
const CHUNK_BITS: u32 = 16;
/// A group at least this large ends on a page boundary so the next can be in flight with it.
const PIPELINE_MIN_GROUP_BYTES: usize = 32 << 10;
/// Payload of page-padding records.
static ZEROS: [u8; 2 * PAGE_BYTES] = [0; 2 * PAGE_BYTES];

/// Longest sleep of an idle IO thread: bounds how late a periodic checkpoint or a retry of a
/// failed segment preparation can be.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Longest sleep while the checkpoint writer thread is busy.
const CHECKPOINT_POLL: Duration = Duration::from_millis(2);
/// How often preparing a segment is retried after the disk was found full.
const FULL_RETRY: Duration = Duration::from_millis(500);

fn user_data(kind: u64, value: u64) -> u64 {
    debug_assert!(value < 1 << KIND_SHIFT);
    (kind << KIND_SHIFT) | value
}

/// Bytes at the end of each segment that only trims and deletes may use, so ranges can still
/// be trimmed (and space freed) when the disk is full.
pub(crate) fn reserve_bytes(segment_size_bytes: u64) -> u64 {
    (64 << 10).min(segment_size_bytes / 16)
}

struct WorkerPort {
    requests: Receiver<Request>,
    completions: Sender<Completion>,
    outbox: Vec<Completion>,
    /// A request drained but not yet staged (the staging group was full): it goes first.
    deferred: VecDeque<Request>,
    /// The completion mailbox's receiver is gone.
    closed: bool,
    /// The request mailbox's sender is gone and it is empty.
    requests_closed: bool,
}

struct Segment {
    fd: OwnedFd,
    /// Ranges with batches in this segment, with the end offset of their last batch here.
    ranges: HashMap<RangeKey, Offset>,
    reads_in_flight: u32,
}

struct GroupEntry {
    worker: usize,
    slot: u32,
    header: RecordHeader,
}

/// Records encoded into an aligned buffer that starts at the page holding `start`.
struct Group {
    buffer: AlignedBuf,
    page_start: WalPosition,
    start: WalPosition,
    end: WalPosition,
    /// A padding record ends the segment: the log continues at the next segment.
    sealed: bool,
    entries: Vec<GroupEntry>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.sealed
    }

    fn used_bytes(&self) -> usize {
        (self.end - self.page_start) as usize
    }
}

struct InFlightGroup {
    /// Counts submitted groups from 0 (fault injection names groups by it).
    sequence: u64,
    /// Write operations of the group not yet completed.
    writes_pending: usize,
    /// Bytes written, from `group.page_start`.
    write_len: usize,
    segment_start: WalPosition,
    group: Group,
    /// The write completed (successfully unless `error`).
    written: bool,
    error: Option<Error>,
    submitted: Instant,
}

/// The data sync in flight: one `fdatasync` per segment file with unsynced groups.
struct SyncInFlight {
    /// Makes every group up to this sequence durable.
    through: u64,
    submitted: Instant,
    awaiting: usize,
    error: Option<Error>,
}

struct BlockLoad {
    block_start: WalPosition,
    segment_start: WalPosition,
    buffer: Option<AlignedBuf>,
    /// The WAL was durable up to here when the read was issued; bytes beyond are not data.
    durable_at_issue: WalPosition,
    waiters: Vec<usize>,
}

struct PendingRead {
    worker: usize,
    slot: u32,
    extents: Vec<Extent>,
    blocks: HashMap<WalPosition, Bytes>,
    missing: usize,
    error: Option<Error>,
}

struct Prewrite {
    start: WalPosition,
    fd: OwnedFd,
    temporary: PathBuf,
    written: u64,
    filler: AlignedBuf,
    in_flight: bool,
    syncing: bool,
}

/// A bounded cache of WAL blocks, least recently used evicted first.
struct BlockCache {
    blocks: HashMap<WalPosition, (Bytes, u64)>,
    bytes: usize,
    capacity_bytes: usize,
    tick: u64,
}

impl BlockCache {
    fn get(&mut self, block_start: WalPosition, needed_len: usize) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, used) = self.blocks.get_mut(&block_start)?;
        if bytes.len() < needed_len {
            return None;
        }
        *used = tick;
        Some(bytes.clone())
    }

    fn insert(&mut self, block_start: WalPosition, bytes: Bytes) {
        if bytes.len() > self.capacity_bytes {
            return;
        }
        self.tick += 1;
        if let Some((old, _)) = self.blocks.insert(block_start, (bytes.clone(), self.tick)) {
            self.bytes -= old.len();
        }
        self.bytes += bytes.len();
        while self.bytes > self.capacity_bytes {
            let oldest = self
                .blocks
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(start, _)| *start);
            let Some(oldest) = oldest else { break };
            if let Some((old, _)) = self.blocks.remove(&oldest) {
                self.bytes -= old.len();
            }
        }
    }

    fn remove_segment(&mut self, start: WalPosition, end: WalPosition) {
        let doomed: Vec<WalPosition> = self
            .blocks
            .keys()
            .copied()
            .filter(|block| *block >= start && *block < end)
            .collect();
        for block in doomed {
            if let Some((old, _)) = self.blocks.remove(&block) {
                self.bytes -= old.len();
            }
        }
    }
}

/// Everything the IO thread starts from.
pub(crate) struct WalSetup {
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
pub(crate) struct Wal {
    config: StoreConfig,
    wal_directory: PathBuf,
    segment_size: u64,
    ring: IoUring,
    /// Ring set up with IOPOLL for WAL writes and block reads (`uring.iopoll` on a device that
    /// polls); it is polled, never waited on, while `polled_in_flight` is not zero.
    poll_ring: Option<IoUring>,
    polled_in_flight: usize,
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
    /// A failed group's write may have reached the disk up to here; the next group zeroes it.
    dirty_until: WalPosition,
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
    checkpoint_sequence: u64,
    checkpoint_position: WalPosition,
    last_checkpoint: Instant,
    checkpoint_wanted: bool,
    checkpoint_writer: checkpoint::Writer,
    shutting_down: bool,
    halting: bool,
    stats: Arc<SharedStats>,
}

impl Wal {
    /// Builds the ring and opens the segments. Runs on the thread that called `Store::open`, so
    /// setup errors reach the caller.
    pub(crate) fn new(setup: WalSetup) -> Result<Wal> {
        let WalSetup {
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
            entries: Vec::new(),
        };
        let cache = BlockCache {
            blocks: HashMap::new(),
            bytes: 0,
            capacity_bytes: config.cache_size_bytes / 2,
            tick: 0,
        };
        let mut wal = Wal {
            wal_directory,
            segment_size,
            ring,
            poll_ring,
            polled_in_flight: 0,
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
            max_groups_in_flight: (GROUP_BUFFER_BUDGET_BYTES / group_capacity)
                .saturating_sub(1)
                .clamp(2, MAX_GROUPS_IN_FLIGHT),
            sync_in_flight: None,
            synced_through: None,
            dirty_until: 0,
            spare_buffers: vec![AlignedBuf::zeroed(group_capacity)],
            failure: None,
            loads: Slab::new(),
            loads_by_block: HashMap::new(),
            reads: Slab::new(),
            cache,
            prewrite: None,
            segment_wanted: false,
            full_since: None,
            checkpoint_sequence,
            checkpoint_position,
            last_checkpoint: Instant::now(),
            checkpoint_wanted: false,
            checkpoint_writer: checkpoint::Writer::start(&config.path)?,
            shutting_down: false,
            halting: false,
            stats,
            config,
        };
        wal.reset_staging(durable, &tail_page);
        wal.tail_page = tail_page;
        wal.publish_segment_stats();
        wal.stats.durable_position.store(durable, Ordering::Relaxed);
        wal.stats
            .polled_writes
            .store(wal.polled.writes, Ordering::Relaxed);
        wal.stats
            .polled_reads
            .store(wal.polled.reads, Ordering::Relaxed);
        Ok(wal)
    }

    fn segment_start(&self, position: WalPosition) -> WalPosition {
        position - position % self.segment_size
    }

    /// Restarts staging at `position`, whose page begins with `prefix`.
    fn reset_staging(&mut self, position: WalPosition, prefix: &[u8]) {
        debug_assert_eq!(prefix.len() as u64, position % PAGE_BYTES as u64);
        let page_start = position - prefix.len() as u64;
        self.staging.buffer[..prefix.len()].copy_from_slice(prefix);
        self.staging.page_start = page_start;
        self.staging.start = position;
        self.staging.end = position;
        self.staging.sealed = false;
        self.staging.entries.clear();
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
            let sleep = !progress && self.polled_in_flight == 0 && self.arm_all();
            self.submit_and_reap(sleep);
            if sleep {
                self.disarm_all();
            }
        }
        self.exit();
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
            match self.write_checkpoint() {
                Ok(()) => {
                    if let Err(error) =
                        checkpoint::mark_clean(&self.config.path, self.checkpoint_sequence)
                    {
                        log::error!("store: {error}");
                    }
                }
                Err(error) => log::error!("store: final checkpoint failed: {error}"),
            }
        }
        if let Some(prewrite) = self.prewrite.take() {
            let _ = std::fs::remove_file(&prewrite.temporary);
        }
        // Only the mailbox polls are still in flight; they reference no memory of ours and
        // end with the ring.
        // Dropping the ports closes the completion mailboxes: workers fail what is pending.
    }

    // ----- mailboxes -----

    fn drain_control(&mut self) -> bool {
        let mut progress = false;
        while let Ok(control) = self.control.try_recv() {
            progress = true;
            match control {
                Control::Shutdown => self.shutting_down = true,
                Control::Halt => self.halting = true,
                Control::Checkpoint => self.checkpoint_wanted = true,
            }
        }
        if self.control.is_closed() && !self.shutting_down {
            // The owner handle is gone without a word: treat it as a shutdown.
            self.shutting_down = true;
        }
        progress
    }

    fn drain_workers(&mut self) -> bool {
        let mut progress = false;

        for worker in 0..self.ports.len() {
            while let Some(request) = self.ports[worker].deferred.pop_front() {
                match self.stage(worker, request) {
                    None => progress = true,
                    Some(request) => {
                        self.ports[worker].deferred.push_front(request);
                        break;
                    }
                }
            }
            if !self.ports[worker].deferred.is_empty() {
                continue;
            }
            loop {
                match self.ports[worker].requests.try_recv() {
                    Ok(request) => {
                        progress = true;
                        if let Some(request) = self.stage(worker, request) {
                            self.ports[worker].deferred.push_back(request);
                            break;
                        }
                        if self.staging.used_bytes() >= EAGER_GROUP_BYTES {
                            // Start writing what is staged while the rest is still copied.
                            self.maybe_submit_group();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        // The worker is gone; its mailbox never needs a wake-up again.
                        self.ports[worker].requests_closed = true;
                        break;
                    }
                }
            }
        }
        progress
    }

    fn complete(&mut self, worker: usize, slot: u32, outcome: Result<Outcome>) {
        self.ports[worker].outbox.push(Completion { slot, outcome });
    }

    fn flush_outboxes(&mut self) {
        for port in &mut self.ports {
            if port.outbox.is_empty() {
                continue;
            }
            if port.closed || port.completions.send_batch(&mut port.outbox).is_err() {
                port.closed = true;
                port.outbox.clear();
            }
        }
    }

    /// True when a group staged now could be submitted at once.
    fn could_submit(&self) -> bool {
        match self.in_flight.back() {
            None => true,
            Some(last) => {
                let in_flight_bytes: usize = self
                    .in_flight
                    .iter()
                    .map(|in_flight| in_flight.write_len)
                    .sum();
                self.in_flight.len() < self.max_groups_in_flight
                    && in_flight_bytes + self.staging.used_bytes()
                        <= MAX_BYTES_IN_FLIGHT_GROUPS * self.config.max_group_bytes
                    && self.dirty_until == 0
                    && (last.written
                        || self.staging.page_start >= last.group.page_start + last.write_len as u64)
            }
        }
    }

    fn arm_all(&mut self) -> bool {
        if !self.control.arm() {
            return false;
        }
        if !self.could_submit() {
            // New requests could not be written before a group completes anyway: let that
            // completion wake us, not every request (one wake-up per group, not per burst).
            // They are drained, and reads started, right after.
            return true;
        }
        for index in 0..self.ports.len() {
            if !self.ports[index].deferred.is_empty() || self.ports[index].requests_closed {
                continue;
            }
            if !self.ports[index].requests.arm() {
                self.disarm_all();
                return false;
            }
        }
        true
    }

    fn disarm_all(&mut self) {
        self.control.disarm();
        for port in &self.ports {
            port.requests.disarm();
        }
    }

    fn mailbox_eventfd(&self, port: usize) -> RawFd {
        if port == self.ports.len() {
            self.control.eventfd()
        } else {
            self.ports[port].requests.eventfd()
        }
    }

    /// Keeps a poll for readability of a mailbox's eventfd in flight. A poll, not a read: the
    /// eventfd is non-blocking, and io_uring answers a read of an empty non-blocking file with
    /// EAGAIN at once instead of waiting.
    fn submit_eventfd_poll(&mut self, port: usize) {
        let fd = self.mailbox_eventfd(port);
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(user_data(OP_EVENTFD, port as u64));
        // SAFETY: a poll references no memory of ours.
        unsafe { self.push(&entry) };
    }

    /// Resets a mailbox eventfd's counter after its poll fired.
    fn drain_eventfd(&self, port: usize) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live stack value; the fd is non-blocking.
        unsafe {
            libc::read(
                self.mailbox_eventfd(port),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// # Safety
    /// Every buffer the entry points to must stay alive until its completion is reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(error) = self.ring.submit() {
                log::error!("store: io_uring submit failed: {error}");
            }
        }
    }

    /// Pushes a WAL write or block read: onto the polled ring if there is one and `polled` says
    /// it carries this kind of operation.
    ///
    /// # Safety
    /// Every buffer the entry points to must stay alive until its completion is reaped.
    unsafe fn push_data(&mut self, entry: &squeue::Entry, polled: bool) {
        let Some(poll_ring) = self.poll_ring.as_mut().filter(|_| polled) else {
            // SAFETY: forwarded from the caller.
            unsafe { self.push(entry) };
            return;
        };
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { poll_ring.submission().push(entry) }.is_ok() {
                self.polled_in_flight += 1;
                return;
            }
            if let Err(error) = poll_ring.submit() {
                log::error!("store: polled io_uring submit failed: {error}");
            }
        }
    }

    /// Submits what the polled ring holds and reaps what completed, polling the device once.
    fn poll_data(&mut self) {
        let Some(poll_ring) = self.poll_ring.as_mut() else {
            return;
        };
        if self.polled_in_flight == 0 && poll_ring.submission().is_empty() {
            return;
        }
        // On an IOPOLL ring this enters with GETEVENTS: one pass over the device's poll queues.
        if let Err(error) = poll_ring.submit() {
            let errno = error.raw_os_error();
            if errno != Some(libc::EINTR) && errno != Some(libc::EAGAIN) {
                log::error!("store: polled io_uring enter failed: {error}");
            }
        }
        let entries: Vec<(u64, i32)> = poll_ring
            .completion()
            .map(|entry| (entry.user_data(), entry.result()))
            .collect();
        self.polled_in_flight -= entries.len().min(self.polled_in_flight);
        self.stats
            .polled_completions
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        for (data, result) in entries {
            self.dispatch(data, result);
        }
    }

    fn submit_and_reap(&mut self, sleep: bool) {
        let result = if sleep {
            // A checkpoint being written is noticed soon after it is durable: a segment may wait
            // for it to be reclaimed.
            let wait = if self.checkpoint_writer.busy() {
                CHECKPOINT_POLL
            } else {
                IDLE_WAIT
            };
            let timeout = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&timeout);
            self.ring.submitter().submit_with_args(1, &args)
        } else {
            self.ring.submit()
        };
        if let Err(error) = result {
            let errno = error.raw_os_error();
            if errno != Some(libc::ETIME)
                && errno != Some(libc::EINTR)
                && errno != Some(libc::EBUSY)
            {
                log::error!("store: io_uring wait failed: {error}");
            }
        }
        let entries: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|entry| (entry.user_data(), entry.result()))
            .collect();
        for (data, result) in entries {
            self.dispatch(data, result);
        }
        self.poll_data();
    }

    fn dispatch(&mut self, data: u64, result: i32) {
        let value = data & ((1 << KIND_SHIFT) - 1);
        match data >> KIND_SHIFT {
            OP_EVENTFD => {
                if result < 0 {
                    log::error!("store: mailbox eventfd poll failed: errno {}", -result);
                } else {
                    self.drain_eventfd(value as usize);
                }
                self.submit_eventfd_poll(value as usize);
            }
            OP_GROUP_WRITE => self.on_group_write(value, result),
            OP_GROUP_SYNC => self.on_group_sync(result),
            OP_BLOCK_READ => self.on_block_read(value as usize, result),
            OP_PREWRITE => self.on_prewrite_write(result),
            OP_PREWRITE_SYNC => self.on_prewrite_sync(result),
            other => log::error!("store: unexpected completion kind {other}"),
        }
    }

    // ----- appends: staging and group commit -----

    /// Stages one request. Returns it back if it has to wait for room.
    fn stage(&mut self, worker: usize, request: Request) -> Option<Request> {
        let request = match request {
            Request::Read { slot, extents } => {
                self.start_read(worker, slot, extents);
                return None;
            }
            other => other,
        };
        let (slot, kind, range, offset, count, payload): (_, _, _, _, _, &[u8]) = match &request {
            Request::Read { .. } => return None,
            Request::Append {
                slot,
                range,
                base_offset,
                count,
                batch,
            } => (
                *slot,
                RecordKind::Append,
                *range,
                *base_offset,
                *count,
                batch,
            ),
            Request::Trim {
                slot,
                range,
                offset,
            } => (*slot, RecordKind::Trim, *range, *offset, 0, &[]),
            Request::Delete { slot, range } => {
                (*slot, RecordKind::Delete, *range, Offset(0), 0, &[])
            }
        };
        if self.staging.sealed {
            return Some(request);
        }
        let position = self.staging.end;
        let segment_start = self.segment_start(position);
        if !self.segments.contains_key(&segment_start) {
            // The log has reached a segment that is not ready yet.
            if kind == RecordKind::Append && self.full_since.is_some() {
                self.complete(worker, slot, Err(self.full_error()));
                return None;
            }
            self.segment_wanted = true;
            return Some(request);
        }
        let segment_end = segment_start + self.segment_size;
        let length = record::record_length(payload.len());
        let limit = match kind {
            RecordKind::Append => segment_end - reserve_bytes(self.segment_size),
            _ => segment_end,
        };
        if position + length > limit {
            let next_ready = self.segments.contains_key(&segment_end);
            if next_ready {
                self.seal_staging();
                return Some(request);
            }
            if self.full_since.is_some() {
                self.complete(worker, slot, Err(self.full_error()));
                return None;
            }
            self.segment_wanted = true;
            return Some(request);
        }
        if self.staging.used_bytes() + length as usize > self.config.max_group_bytes {
            return Some(request);
        }
        match kind {
            RecordKind::Append => {
                let expected = self.expected_next.get(&range).copied().or_else(|| {
                    self.index
                        .get(&range)
                        .filter(|index| !index.entries().is_empty())
                        .map(BatchIndex::next_offset)
                });
                if let Some(expected) = expected.filter(|expected| *expected != offset) {
                    self.complete(
                        worker,
                        slot,
                        Err(Error::OutOfOrder {
                            range,
                            expected,
                            found: offset,
                        }),
                    );
                    return None;
                }
                self.expected_next.insert(range, offset + count as u64);
            }
            RecordKind::Trim => {
                if let Some(expected) = self.expected_next.get_mut(&range) {
                    *expected = (*expected).max(offset);
                }
            }
            _ => {
                self.expected_next.remove(&range);
            }
        }
        let header = RecordHeader {
            kind,
            payload_len: payload.len() as u32,
            count,
            position,
            range,
            offset,
        };
        let at = (position - self.staging.page_start) as usize;
        record::encode(
            &mut self.staging.buffer[at..at + length as usize],
            segment_start,
            &header,
            payload,
        );
        self.staging.end += length;
        self.staging.entries.push(GroupEntry {
            worker,
            slot,
            header,
        });
        None
    }

    /// Ends the staging group's segment with a padding record.
    fn seal_staging(&mut self) {
        debug_assert!(!self.staging.sealed);
        let position = self.staging.end;
        let segment_start = self.segment_start(position);
        let segment_end = segment_start + self.segment_size;
        if segment_end - position >= HEADER_BYTES as u64 {
            let header = RecordHeader {
                kind: RecordKind::Padding,
                payload_len: 0,
                count: 0,
                position,
                range: RangeKey::default(),
                offset: Offset(0),
            };
            let at = (position - self.staging.page_start) as usize;
            record::encode(
                &mut self.staging.buffer[at..at + HEADER_BYTES],
                segment_start,
                &header,
                &[],
            );
            self.staging.end += HEADER_BYTES as u64;
        }
        self.staging.sealed = true;
    }

    fn full_error(&self) -> Error {
        Error::Full {
            detail: format!(
                "no space to prepare the next {}-byte WAL segment in {}",
                self.segment_size,
                self.wal_directory.display()
            ),
        }
    }

    fn maybe_submit_group(&mut self) -> bool {
        if self.staging.is_empty() || self.failure.is_some() || !self.could_submit() {
            return false;
        }
        let spare = self
            .spare_buffers
            .pop()
            .unwrap_or_else(|| AlignedBuf::zeroed(self.config.max_group_bytes + PAGE_BYTES));
        let mut group = std::mem::replace(
            &mut self.staging,
            Group {
                buffer: spare,
                page_start: 0,
                start: 0,
                end: 0,
                sealed: false,
                entries: Vec::new(),
            },
        );
        let segment_start = self.segment_start(group.page_start);
        let segment_end = segment_start + self.segment_size;
        if !group.sealed
            && group.used_bytes() >= PIPELINE_MIN_GROUP_BYTES
            && group.end % PAGE_BYTES as u64 != 0
        {
            // Under load, end the group on a page boundary with a padding record, so the next
            // group can be written while this one is still in flight.
            let target = (group.end + HEADER_BYTES as u64).next_multiple_of(PAGE_BYTES as u64);
            if target <= segment_end && (target - group.page_start) as usize <= group.buffer.len() {
                let payload_len = (target - group.end) as usize - HEADER_BYTES;
                let header = RecordHeader {
                    kind: RecordKind::PagePadding,
                    payload_len: payload_len as u32,
                    count: 0,
                    position: group.end,
                    range: RangeKey::default(),
                    offset: Offset(0),
                };
                let at = (group.end - group.page_start) as usize;
                let end = (target - group.page_start) as usize;
                record::encode(
                    &mut group.buffer[at..end],
                    segment_start,
                    &header,
                    &ZEROS[..payload_len],
                );
                group.end = target;
            }
        }
        let used = group.used_bytes();
        let mut write_len = used.next_multiple_of(PAGE_BYTES);
        if self.dirty_until > group.page_start {
            // A failed group may have reached the disk after all: overwrite its whole extent
            // with zeros so none of its records can turn up behind the new tail.
            let dirty = (self.dirty_until.min(segment_end) - group.page_start) as usize;
            write_len = write_len.max(dirty.next_multiple_of(PAGE_BYTES).min(group.buffer.len()));
        }
        group.buffer[used..write_len].fill(0);
        if group.sealed {
            self.reset_staging(segment_end, &[]);
        } else {
            let keep = (group.end % PAGE_BYTES as u64) as usize;
            let prefix = group.buffer[used - keep..used].to_vec();
            self.reset_staging(group.end, &prefix);
        }
        let Some(segment) = self.segments.get(&segment_start) else {
            // Staging only accepts records for ready segments, and segments at or after the
            // log's tail are never reclaimed.
            unreachable!("group for a segment that is not open");
        };
        let fd = segment.fd.as_raw_fd();
        let file_offset = group.page_start - segment_start;
        debug_assert_eq!(file_offset % PAGE_BYTES as u64, 0);
        debug_assert!(file_offset + write_len as u64 <= self.segment_size);
        let sequence = self.groups_submitted;
        self.groups_submitted += 1;
        // The group goes out as several writes in flight together (none shares a page with
        // another), which keeps more of the device's queue busy than one large write.
        let chunks = write_len.div_ceil(WRITE_CHUNK_BYTES);
        for chunk in 0..chunks {
            let at = chunk * WRITE_CHUNK_BYTES;
            let len = WRITE_CHUNK_BYTES.min(write_len - at);
            let pointer = group.buffer[at..].as_mut_ptr();
            let write = opcode::Write::new(types::Fd(fd), pointer, len as u32)
                .offset(file_offset + at as u64)
                .build()
                .user_data(user_data(
                    OP_GROUP_WRITE,
                    (sequence << CHUNK_BITS) | chunk as u64,
                ));
            // SAFETY: the group buffer moves into `self.in_flight` below and stays there until
            // every write completion of the group has been reaped (`retire_groups` pops only
            // written groups).
            unsafe { self.push_data(&write, self.polled.writes) };
        }
        self.in_flight.push_back(InFlightGroup {
            sequence,
            writes_pending: chunks,
            write_len,
            segment_start,
            group,
            written: false,
            error: None,
            submitted: Instant::now(),
        });
        true
    }

    fn in_flight_group(&mut self, sequence: u64) -> Option<&mut InFlightGroup> {
        self.in_flight
            .iter_mut()
            .find(|in_flight| in_flight.sequence == sequence)
    }

    fn on_group_write(&mut self, value: u64, result: i32) {
        let sequence = value >> CHUNK_BITS;
        let chunk = (value & ((1 << CHUNK_BITS) - 1)) as usize;
        let result = match chunk {
            0 => self
                .config
                .inject_group_write_results
                .iter()
                .find(|(group, _)| *group == sequence)
                .map_or(result, |(_, injected)| *injected),
            _ => result,
        };
        let Some(in_flight) = self.in_flight_group(sequence) else {
            return;
        };
        let at = chunk * WRITE_CHUNK_BYTES;
        let expected = WRITE_CHUNK_BYTES.min(in_flight.write_len - at);
        let position = in_flight.group.page_start + at as u64;
        if in_flight.error.is_none() {
            if result < 0 {
                in_flight.error = Some(Error::errno(
                    format!("WAL write at position {position}"),
                    -result,
                ));
            } else if (result as usize) < expected {
                in_flight.error = Some(Error::Io {
                    operation: format!(
                        "WAL write at position {position} (short write: {result} of {expected} \
                         bytes)"
                    ),
                    errno: libc::EIO,
                });
            }
        }
        in_flight.writes_pending -= 1;
        if in_flight.writes_pending > 0 {
            return;
        }
        in_flight.written = true;
        let took = in_flight.submitted.elapsed().as_micros() as u64;
        let failed = in_flight.error.is_some();
        self.stats
            .group_write_micros
            .fetch_add(took, Ordering::Relaxed);
        if failed {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.retire_groups();
        self.maybe_submit_sync();
    }

    /// Starts one data sync covering the groups at the front of the log whose writes have
    /// completed, as soon as no sync is in flight. Writes still in flight go on meanwhile and are
    /// covered by the next sync: syncs run back to back, each making durable what was written
    /// before it started, so acknowledgements flow while later groups are still being written
    /// and at most one sync waits at a time.
    fn maybe_submit_sync(&mut self) {
        if self.config.sync != SyncMode::Always
            || self.halting
            || self.sync_in_flight.is_some()
            || self.failure.is_some()
        {
            return;
        }
        let mut target = None;
        let mut files: Vec<WalPosition> = Vec::new();
        for in_flight in &self.in_flight {
            if !in_flight.written || in_flight.error.is_some() {
                break;
            }
            if self
                .synced_through
                .is_some_and(|synced| in_flight.sequence <= synced)
            {
                continue;
            }
            target = Some(in_flight.sequence);
            if !files.contains(&in_flight.segment_start) {
                files.push(in_flight.segment_start);
            }
        }
        let Some(target) = target else {
            return;
        };
        let mut awaiting = 0;
        for start in files {
            let Some(segment) = self.segments.get(&start) else {
                continue;
            };
            let data_sync = opcode::Fsync::new(types::Fd(segment.fd.as_raw_fd()))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(user_data(OP_GROUP_SYNC, 0));
            // SAFETY: no buffers.
            unsafe { self.push(&data_sync) };
            awaiting += 1;
        }
        self.sync_in_flight = Some(SyncInFlight {
            through: target,
            submitted: Instant::now(),
            awaiting,
            error: None,
        });
    }

    fn on_group_sync(&mut self, result: i32) {
        if result >= 0 {
            self.stats.data_syncs.fetch_add(1, Ordering::Relaxed);
        }
        let Some(sync) = self.sync_in_flight.as_mut() else {
            return;
        };
        if result < 0 && sync.error.is_none() {
            sync.error = Some(Error::errno("WAL data sync", -result));
        }
        sync.awaiting -= 1;
        if sync.awaiting > 0 {
            return;
        }
        let Some(sync) = self.sync_in_flight.take() else {
            return;
        };
        self.stats.data_sync_micros.fetch_add(
            sync.submitted.elapsed().as_micros() as u64,
            Ordering::Relaxed,
        );
        match sync.error {
            Some(error) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                if self.failure.is_none() {
                    log::error!("store: {error}; failing every group not yet durable");
                    self.failure = Some(error);
                }
            }
            None => self.synced_through = Some(sync.through),
        }
        self.retire_groups();
        self.maybe_submit_sync();
    }

    /// Retires groups in WAL order: a group is done once its write completed and (with `sync:
    /// always`) a data sync issued after that completed. A failed write or sync fails every
    /// group behind it too (their records would follow a hole), and everything staged once the
    /// last one is done.
    fn retire_groups(&mut self) {
        let sync_always = self.config.sync == SyncMode::Always;
        while let Some(front) = self.in_flight.front() {
            let durable = !sync_always
                || self
                    .synced_through
                    .is_some_and(|synced| front.sequence <= synced);
            let failed = front.error.is_some() || self.failure.is_some();
            if !front.written || !(durable || failed) {
                break;
            }
            let Some(InFlightGroup {
                group,
                error,
                write_len,
                ..
            }) = self.in_flight.pop_front()
            else {
                break;
            };
            match error.or_else(|| self.failure.clone()) {
                Some(error) => self.fail_group(group, write_len, error),
                None => self.finish_group(group, write_len),
            }
        }
        if self.in_flight.is_empty() {
            if let Some(error) = self.failure.take() {
                let staged: Vec<(usize, u32)> = self
                    .staging
                    .entries
                    .iter()
                    .map(|entry| (entry.worker, entry.slot))
                    .collect();
                for (worker, slot) in staged {
                    self.complete(worker, slot, Err(error.clone()));
                }
                // Nothing is staged or in flight any more: every range continues at its index.
                self.expected_next.clear();
                let tail_page = std::mem::take(&mut self.tail_page);
                self.reset_staging(self.durable, &tail_page);
                self.tail_page = tail_page;
            }
        }
    }

    fn fail_group(&mut self, group: Group, write_len: usize, error: Error) {
        self.dirty_until = self.dirty_until.max(group.page_start + write_len as u64);
        if self.failure.is_none() {
            log::error!("store: {error}; failing the group and everything after it");
            self.failure = Some(error.clone());
        }
        for entry in &group.entries {
            self.complete(entry.worker, entry.slot, Err(error.clone()));
        }
        self.spare_buffers.push(group.buffer);
    }

    fn finish_group(&mut self, group: Group, write_len: usize) {
        let written_until = group.page_start + write_len as u64;
        let used = group.used_bytes();
        self.stats
            .wal_bytes_written
            .fetch_add(write_len as u64, Ordering::Relaxed);
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        debug_assert_eq!(group.start, self.durable, "groups complete in WAL order");
        if written_until >= self.dirty_until {
            self.dirty_until = 0;
        }
        if group.sealed {
            self.durable = self.segment_start(group.page_start) + self.segment_size;
            self.tail_page.clear();
        } else {
            self.durable = group.end;
            let keep = (group.end % PAGE_BYTES as u64) as usize;
            self.tail_page.clear();
            self.tail_page
                .extend_from_slice(&group.buffer[used - keep..used]);
        }
        self.stats
            .durable_position
            .store(self.durable, Ordering::Relaxed);
        let mut appends = 0u64;
        let mut append_bytes = 0u64;
        let mut retention_changed = false;
        for entry in &group.entries {
            let header = entry.header;
            let outcome = match header.kind {
                RecordKind::Append => {
                    appends += 1;
                    append_bytes += header.payload_len as u64;
                    let index_entry = IndexEntry {
                        base_offset: header.offset,
                        position: header.position,
                        payload_len: header.payload_len,
                        count: header.count,
                    };
                    let range = self
                        .index
                        .entry(header.range)
                        .or_insert_with(|| BatchIndex::new(header.offset));
                    range.push(index_entry);
                    if self.expected_next.get(&header.range) == Some(&range.next_offset()) {
                        self.expected_next.remove(&header.range);
                    }
                    let segment_start = self.segment_start(header.position);
                    if let Some(segment) = self.segments.get_mut(&segment_start) {
                        segment
                            .ranges
                            .insert(header.range, index_entry.end_offset());
                    }
                    Outcome::Appended {
                        position: header.position,
                    }
                }
                RecordKind::Trim => {
                    if let Some(range) = self.index.get_mut(&header.range) {
                        range.trim(header.offset);
                    }
                    for segment in self.segments.values_mut() {
                        if segment
                            .ranges
                            .get(&header.range)
                            .is_some_and(|end| *end <= header.offset)
                        {
                            segment.ranges.remove(&header.range);
                        }
                    }
                    retention_changed = true;
                    Outcome::Trimmed
                }
                RecordKind::Delete => {
                    self.index.remove(&header.range);
                    for segment in self.segments.values_mut() {
                        segment.ranges.remove(&header.range);
                    }
                    retention_changed = true;
                    Outcome::Deleted
                }
                RecordKind::Padding | RecordKind::PagePadding => continue,
            };
            self.complete(entry.worker, entry.slot, Ok(outcome));
        }
        self.stats.appends.fetch_add(appends, Ordering::Relaxed);
        self.stats
            .append_bytes
            .fetch_add(append_bytes, Ordering::Relaxed);
        self.spare_buffers.push(group.buffer);
        if retention_changed {
            self.reclaim_segments();
        }
    }

    // ----- reads -----

    fn block_size(&self) -> u64 {
        self.config.read_block_size_bytes as u64
    }

    fn start_read(&mut self, worker: usize, slot: u32, extents: Vec<Extent>) {
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
        for (block, needed) in wanted {
            if let Some(bytes) = self.cache.get(block, needed) {
                self.stats.block_cache_hits.fetch_add(1, Ordering::Relaxed);
                self.reads[read].blocks.insert(block, bytes);
                continue;
            }
            self.reads[read].missing += 1;
            if let Some(&load) = self.loads_by_block.get(&block) {
                // A load in flight covers the block if it was issued after the data was durable.
                if self.loads[load].durable_at_issue >= block + needed as u64 {
                    self.loads[load].waiters.push(read);
                    continue;
                }
            }
            self.issue_block_load(block, read);
        }
        if self.reads[read].missing == 0 {
            self.finish_read(read);
        }
    }

    fn issue_block_load(&mut self, block: WalPosition, read: usize) {
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

    fn on_block_read(&mut self, load_id: usize, result: i32) {
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

    fn finish_read(&mut self, read: usize) {
        let pending = self.reads.remove(read);
        let outcome = match pending.error {
            Some(error) => Err(error),
            None => self
                .assemble(&pending.extents, &pending.blocks)
                .map(Outcome::Read),
        };
        self.complete(pending.worker, pending.slot, outcome);
    }

    /// Cuts each record out of its block(s), verifies it and returns the payloads.
    fn assemble(
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

    // ----- segments: preparation, retention -----

    /// Segments ready beyond the one the log is being written in.
    fn ready_ahead(&self) -> usize {
        let current = self.segment_start(self.staging.end.max(self.durable));
        self.segments.range(current + 1..).count()
    }

    fn next_segment_to_prepare(&self) -> WalPosition {
        let current = self.segment_start(self.staging.end.max(self.durable));
        let last = self
            .segments
            .keys()
            .next_back()
            .copied()
            .unwrap_or(current)
            .max(current);
        last + self.segment_size
    }

    /// True when the IO thread has appends staged, waiting or in flight: with `prewrite: idle`
    /// no write-through chunk is issued then.
    fn appends_busy(&self) -> bool {
        !self.staging.is_empty()
            || !self.in_flight.is_empty()
            || self.sync_in_flight.is_some()
            || self.ports.iter().any(|port| !port.deferred.is_empty())
    }

    /// Prepares segments ahead of need. Returns true when it published one the log waits for.
    fn maybe_prewrite(&mut self) -> bool {
        if self.shutting_down {
            return false;
        }
        let wanted = std::mem::take(&mut self.segment_wanted);
        if self.prewrite.is_none() {
            let current = self.segment_start(self.staging.end.max(self.durable));
            let current_missing = !self.segments.contains_key(&current);
            if !current_missing && self.ready_ahead() >= self.config.preallocated_segments {
                return false;
            }
            if let Some(since) = self.full_since {
                if since.elapsed() < FULL_RETRY {
                    return false;
                }
            }
            let start = if current_missing {
                current
            } else {
                self.next_segment_to_prepare()
            };
            match layout::create_segment_file(&self.wal_directory, start, self.segment_size) {
                Ok((fd, temporary)) => {
                    let chunk = PREWRITE_CHUNK_BYTES.min(self.segment_size as usize);
                    self.prewrite = Some(Prewrite {
                        start,
                        fd,
                        temporary,
                        written: 0,
                        filler: {
                            let mut filler = AlignedBuf::zeroed(chunk);
                            filler.fill(layout::SEGMENT_FILL_BYTE);
                            filler
                        },
                        in_flight: false,
                        syncing: false,
                    });
                }
                Err(error) => {
                    self.on_prepare_failed(start, &error);
                    return false;
                }
            }
        }
        let idle_mode = self.config.prewrite == PrewriteMode::Idle;
        if idle_mode && wanted && self.ready_ahead() == 0 {
            return self.publish_unwritten();
        }
        if idle_mode && self.appends_busy() {
            return false;
        }
        let segment_size = self.segment_size;
        let Some(prewrite) = self.prewrite.as_mut() else {
            return false;
        };
        if prewrite.in_flight {
            return false;
        }
        prewrite.in_flight = true;
        let fd = prewrite.fd.as_raw_fd();
        let entry = if prewrite.written < segment_size {
            let len = (segment_size - prewrite.written).min(prewrite.filler.len() as u64);
            opcode::Write::new(types::Fd(fd), prewrite.filler.as_mut_ptr(), len as u32)
                .offset(prewrite.written)
                .build()
                .user_data(user_data(OP_PREWRITE, 0))
        } else {
            prewrite.syncing = true;
            opcode::Fsync::new(types::Fd(fd))
                .build()
                .user_data(user_data(OP_PREWRITE_SYNC, 0))
        };
        // SAFETY: the filler buffer belongs to `self.prewrite`, which is kept until this
        // completion is reaped (`in_flight` blocks its removal; `exit` waits for it).
        unsafe { self.push(&entry) };
        false
    }

    /// Publishes the segment being prepared as it stands (allocated, written through only in
    /// part or not at all) because the log needs it now. Waits for a write-through chunk or
    /// sync in flight first, so no filler can land after the log's records. Returns true if
    /// the segment was published.
    fn publish_unwritten(&mut self) -> bool {
        let Some(prewrite) = self.prewrite.as_ref() else {
            return false;
        };
        if prewrite.in_flight || prewrite.syncing {
            // Asked again once the completion arrives (the waiting append stays deferred).
            self.segment_wanted = true;
            return false;
        }
        let Some(prewrite) = self.prewrite.take() else {
            return false;
        };
        let published = layout::publish_allocated_segment(
            &self.wal_directory,
            prewrite.fd.as_raw_fd(),
            &prewrite.temporary,
            prewrite.start,
        );
        match published {
            Ok(()) => {
                self.stats
                    .segments_used_unwritten
                    .fetch_add(1, Ordering::Relaxed);
                log::debug!(
                    "store: segment {} used before write-through ({} of {} bytes written)",
                    layout::segment_name(prewrite.start),
                    prewrite.written,
                    self.segment_size
                );
                self.add_prepared_segment(prewrite.start, prewrite.fd);
                true
            }
            Err(error) => {
                let _ = std::fs::remove_file(&prewrite.temporary);
                self.on_prepare_failed(prewrite.start, &error);
                false
            }
        }
    }

    fn on_prepare_failed(&mut self, start: WalPosition, error: &std::io::Error) {
        if self.full_since.is_none() {
            log::error!(
                "store: cannot prepare WAL segment {} ({error}); appends fail with a retriable \
                 error once the current segment is full",
                layout::segment_name(start)
            );
        }
        self.full_since = Some(Instant::now());
        self.stats.full.store(true, Ordering::Relaxed);
        self.fail_waiting_appends();
    }

    /// Appends waiting for a segment that cannot be prepared fail now rather than hang.
    fn fail_waiting_appends(&mut self) {
        for worker in 0..self.ports.len() {
            let waiting: Vec<Request> = self.ports[worker].deferred.drain(..).collect();
            for request in waiting {
                if let Some(request) = self.stage(worker, request) {
                    self.ports[worker].deferred.push_back(request);
                }
            }
        }
    }

    fn on_prewrite_write(&mut self, result: i32) {
        let Some(prewrite) = self.prewrite.as_mut() else {
            return;
        };
        prewrite.in_flight = false;
        if result <= 0 {
            let error =
                std::io::Error::from_raw_os_error(if result < 0 { -result } else { libc::EIO });
            let prewrite = self.prewrite.take();
            if let Some(prewrite) = prewrite {
                let _ = std::fs::remove_file(&prewrite.temporary);
                self.on_prepare_failed(prewrite.start, &error);
            }
            return;
        }
        prewrite.written += result as u64;
    }

    fn on_prewrite_sync(&mut self, result: i32) {
        let Some(prewrite) = self.prewrite.take() else {
            return;
        };
        let published = if result < 0 {
            Err(std::io::Error::from_raw_os_error(-result))
        } else {
            layout::publish_segment(&self.wal_directory, &prewrite.temporary, prewrite.start)
        };
        match published {
            Ok(()) => {
                self.stats
                    .segments_written_through
                    .fetch_add(1, Ordering::Relaxed);
                self.add_prepared_segment(prewrite.start, prewrite.fd);
            }
            Err(error) => {
                let _ = std::fs::remove_file(&prewrite.temporary);
                self.on_prepare_failed(prewrite.start, &error);
            }
        }
    }

    /// A published segment joins the log's ready segments.
    fn add_prepared_segment(&mut self, start: WalPosition, fd: OwnedFd) {
        self.segments.insert(
            start,
            Segment {
                fd,
                ranges: HashMap::new(),
                reads_in_flight: 0,
            },
        );
        self.on_space_available();
    }

    fn on_space_available(&mut self) {
        if self.full_since.take().is_some() {
            log::info!("store: WAL segment ready again; appends resume");
        }
        self.stats.full.store(false, Ordering::Relaxed);
        self.publish_segment_stats();
    }

    fn publish_segment_stats(&self) {
        self.stats
            .segment_count
            .store(self.segments.len() as u64, Ordering::Relaxed);
        self.stats.oldest_segment_start.store(
            self.segments.keys().next().copied().unwrap_or(0),
            Ordering::Relaxed,
        );
    }

    /// Recycles or deletes segments that hold no live data, are not being read, and lie wholly
    /// below the last checkpoint (so recovery never needs them). Asks for a checkpoint when a
    /// segment only waits for one.
    fn reclaim_segments(&mut self) {
        let mut reclaimable = Vec::new();
        for (&start, segment) in &self.segments {
            let end = start + self.segment_size;
            if end > self.durable {
                break;
            }
            if !segment.ranges.is_empty() || segment.reads_in_flight > 0 {
                continue;
            }
            if end > self.checkpoint_position {
                self.checkpoint_wanted = true;
                continue;
            }
            reclaimable.push(start);
        }
        for start in reclaimable {
            let Some(segment) = self.segments.remove(&start) else {
                continue;
            };
            drop(segment);
            self.cache.remove_segment(start, start + self.segment_size);
            let old_path = layout::segment_path(&self.wal_directory, start);
            // Recycled files need no write-through, so up to twice the pool is kept that way.
            // With `prewrite: idle` a recycled file also replaces a segment still being
            // prepared (nothing of it is in flight), which would otherwise block recycling
            // for as long as appends keep its write-through waiting.
            let replaceable = self.config.prewrite == PrewriteMode::Idle
                && self
                    .prewrite
                    .as_ref()
                    .is_some_and(|prewrite| !prewrite.in_flight && !prewrite.syncing);
            let recycle = self.ready_ahead() < 2 * self.config.preallocated_segments
                && (self.prewrite.is_none() || replaceable);
            if recycle && replaceable {
                if let Some(prewrite) = self.prewrite.take() {
                    drop(prewrite.fd);
                    let _ = std::fs::remove_file(&prewrite.temporary);
                }
            }
            let outcome = if recycle {
                let new_start = self.next_segment_to_prepare();
                let new_path = layout::segment_path(&self.wal_directory, new_start);
                std::fs::rename(&old_path, &new_path)
                    .and_then(|()| checkpoint::sync_directory(&self.wal_directory))
                    .and_then(|()| layout::open_direct(&new_path, false))
                    .map(|fd| {
                        self.segments.insert(
                            new_start,
                            Segment {
                                fd,
                                ranges: HashMap::new(),
                                reads_in_flight: 0,
                            },
                        );
                        log::debug!(
                            "store: recycled segment {} as {}",
                            layout::segment_name(start),
                            layout::segment_name(new_start)
                        );
                    })
            } else {
                std::fs::remove_file(&old_path)
                    .and_then(|()| checkpoint::sync_directory(&self.wal_directory))
            };
            match outcome {
                Ok(()) => {
                    self.stats
                        .segments_reclaimed
                        .fetch_add(1, Ordering::Relaxed);
                    if recycle {
                        self.on_space_available();
                    }
                }
                Err(error) => log::error!(
                    "store: reclaiming segment {} failed: {error}",
                    old_path.display()
                ),
            }
        }
        self.publish_segment_stats();
    }

    // ----- checkpoints -----

    /// Notes a checkpoint the writer thread finished, and starts the next one when it is due
    /// (periodically while the log moves) or wanted (a segment waits for one to be reclaimed).
    fn maybe_checkpoint(&mut self) {
        if let Some(written) = self.checkpoint_writer.poll() {
            if self.note_checkpoint(written) {
                self.reclaim_segments();
            }
        }
        if self.checkpoint_writer.busy() {
            return;
        }
        let due = self.last_checkpoint.elapsed()
            >= Duration::from_millis(self.config.checkpoint_interval_ms)
            && self.durable != self.checkpoint_position;
        if !(due || self.checkpoint_wanted) {
            return;
        }
        self.checkpoint_wanted = false;
        // A failed one is tried again at the next interval rather than in a tight loop.
        self.last_checkpoint = Instant::now();
        let sequence = self.checkpoint_sequence + 1;
        let bytes = checkpoint::encode(sequence, self.durable, &self.tail_page, &self.index);
        self.checkpoint_writer.submit(sequence, self.durable, bytes);
    }

    /// Records a finished checkpoint. True if it was written.
    fn note_checkpoint(&mut self, written: checkpoint::Written) -> bool {
        match written.result {
            Ok(()) => {
                self.checkpoint_sequence = written.sequence;
                self.checkpoint_position = written.position;
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(error) => {
                log::error!("store: checkpoint {} failed: {error}", written.sequence);
                false
            }
        }
    }

    /// Writes a checkpoint on this thread, after the writer thread's one in flight (clean
    /// shutdown).
    fn write_checkpoint(&mut self) -> Result<()> {
        if let Some(written) = self.checkpoint_writer.finish() {
            self.note_checkpoint(written);
        }
        let sequence = self.checkpoint_sequence + 1;
        let bytes = checkpoint::encode(sequence, self.durable, &self.tail_page, &self.index);
        checkpoint::write(&self.config.path, &bytes)?;
        self.checkpoint_sequence = sequence;
        self.checkpoint_position = self.durable;
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Builds the IO thread's ring from the configuration, logging the modes in use.
fn build_ring(config: &StoreConfig) -> Result<IoUring> {
    let uring = &config.uring;
    let mut builder = IoUring::builder();
    builder.setup_cqsize(uring.queue_depth * 4);
    if uring.sqpoll {
        builder.setup_sqpoll(uring.sqpoll_idle_ms);
        if let Some(cpu) = uring.sqpoll_cpu {
            builder.setup_sqpoll_cpu(cpu);
        }
    } else {
        builder.setup_coop_taskrun();
    }
    let ring = builder
        .build(uring.queue_depth)
        .map_err(|error| Error::io("creating the IO thread's io_uring", &error))?;
    log::info!(
        "store: IO thread ring: sqpoll {} (cpu {:?}, idle {} ms), queue depth {}, sync {:?}",
        uring.sqpoll,
        uring.sqpoll_cpu,
        uring.sqpoll_idle_ms,
        uring.queue_depth,
        config.sync
    );
    Ok(ring)
}

/// Which operations go through the polled ring.
#[derive(Debug, Default, Clone, Copy)]
struct PolledOps {
    writes: bool,
    reads: bool,
}

/// The polled ring for WAL writes and block reads, when `uring.iopoll` asks for one and the
/// device can poll (or the configuration insists), with what a probe found it can carry. None,
/// with a log line saying why, otherwise.
fn build_poll_ring(config: &StoreConfig) -> Option<(IoUring, PolledOps)> {
    let uring = &config.uring;
    if !uring.iopoll {
        return None;
    }
    let polls = device_polls(&config.path);
    if polls != Some(true) && !uring.iopoll_without_poll_queues {
        log::warn!(
            "store: uring iopoll requested but the device of {} has no poll queues ({}); WAL I/O \
             completes by interrupt",
            config.path.display(),
            match polls {
                Some(_) => "queue/io_poll is 0",
                None => "queue/io_poll not found",
            }
        );
        return None;
    }
    let mut builder = IoUring::builder();
    builder.setup_iopoll().setup_cqsize(uring.queue_depth * 4);
    let mut ring = match builder.build(uring.queue_depth) {
        Ok(ring) => ring,
        Err(error) => {
            log::warn!(
                "store: cannot create a polled io_uring ({error}); WAL I/O completes by interrupt"
            );
            return None;
        }
    };
    let polled = match probe_polled(&mut ring, &config.path) {
        Ok(polled) => polled,
        Err(error) => {
            log::warn!(
                "store: probing polled I/O in {} failed ({error}); WAL I/O completes by interrupt",
                config.path.display()
            );
            return None;
        }
    };
    let describe = |ok: bool| {
        if ok {
            "polled"
        } else {
            "by interrupt (refused polled)"
        }
    };
    log::info!(
        "store: IOPOLL ring{}: WAL writes {}, block reads {}",
        if polls == Some(true) {
            ""
        } else {
            " on a device without poll queues (iopoll-without-poll-queues)"
        },
        describe(polled.writes),
        describe(polled.reads)
    );
    if !polled.writes && !polled.reads {
        return None;
    }
    Some((ring, polled))
}

/// Writes and reads one page of a scratch file in `directory` through the polled ring, to learn
/// which of the two the kernel completes there.
fn probe_polled(ring: &mut IoUring, directory: &std::path::Path) -> std::io::Result<PolledOps> {
    let path = directory.join("iopoll-probe.tmp");
    let fd = layout::open_direct(&path, true)?;
    // The descriptor keeps the file alive; nothing is left behind on disk.
    std::fs::remove_file(&path)?;
    let mut buffer = AlignedBuf::zeroed(PAGE_BYTES);
    let write = opcode::Write::new(
        types::Fd(fd.as_raw_fd()),
        buffer.as_mut_ptr(),
        PAGE_BYTES as u32,
    )
    .offset(0)
    .build();
    // SAFETY: `buffer` and `fd` outlive the call, which waits for this operation's completion.
    let written = unsafe { run_one(ring, &write) }?;
    let read = opcode::Read::new(
        types::Fd(fd.as_raw_fd()),
        buffer.as_mut_ptr(),
        PAGE_BYTES as u32,
    )
    .offset(0)
    .build();
    // SAFETY: as above.
    let read = unsafe { run_one(ring, &read) }?;
    Ok(PolledOps {
        writes: written == PAGE_BYTES as i32,
        reads: read == PAGE_BYTES as i32,
    })
}

/// Submits one operation on an otherwise idle ring and waits for its completion.
///
/// # Safety
/// The memory the entry points to must stay alive until this returns.
unsafe fn run_one(ring: &mut IoUring, entry: &squeue::Entry) -> std::io::Result<i32> {
    // SAFETY: forwarded from the caller; the ring is idle, so the queue has room.
    unsafe { ring.submission().push(entry) }
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EBUSY))?;
    loop {
        ring.submit_and_wait(1)?;
        if let Some(completion) = ring.completion().next() {
            return Ok(completion.result());
        }
    }
}

/// Whether the block device holding `path` has poll queues (`queue/io_poll` in sysfs).
fn device_polls(path: &std::path::Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(device), libc::minor(device));
    let base = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let read = |path: PathBuf| std::fs::read_to_string(path).ok();
    let value = read(base.join("queue/io_poll")).or_else(|| read(base.join("../queue/io_poll")))?;
    Some(value.trim() == "1")
}
