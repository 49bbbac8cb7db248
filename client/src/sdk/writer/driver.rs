//! The writer's driver: one task on the SDK's I/O thread per writer.
//!
//! Each turn it takes appended batches from the application's queue while the in-flight bounds
//! allow, sends every batch to every replica of the open range (chasing writes: the same
//! batches, in the same order, on one connection per replica), and turns replica answers into
//! acknowledgements in offset order ([`Pipeline`]). APPENDs carry the acknowledged prefix as
//! the confirmed offset; an idle writer reports it with a confirm-only APPEND after
//! `confirm_interval`.
//!
//! On the first failure of a replica (an error answer, a closed connection, no answer within
//! `replica_timeout`) it seals the range at its acknowledged prefix ([`super::seal`]), asks the
//! placement manager for the next range away from the failed node, and re-sends every batch not
//! yet acknowledged there, with the same offsets. Answers from the old range that arrive later
//! are ignored (each range's sends carry a generation number).
//!
//! Order on the wire: a replica's connection is this driver's own, and each APPEND is put in
//! line on it synchronously, in offset order, with [`Connection::start_request_bytes`]
//! (encoded at once; sent as soon as a slot is free, strictly first come, first served), so
//! the order on the wire never depends on the order tasks are polled in; a task per request
//! only awaits its answer. A lane's outstanding requests (sent or waiting for a slot, answers
//! to batches other replicas already acknowledged included) are bounded: a replica that falls
//! further behind than that is failed over like one that stopped answering.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use wire::msg::{AppendRequest, AppendResponse};
use wire::{BatchView, Epoch, ErrorCode, NodeId, Offset, RangeKey};

use super::open::create_range;
use super::pipeline::{Entry, Pipeline, RequestLimit};
use super::seal::{seal_with_repair, EndRule};
use super::{AppendAck, AppendSlot, Shared, Submitted};
use crate::multiplexed::{decode_response, Connection, PendingResponse};
use crate::sdk::error::SdkError;
use crate::sdk::io::{join_all, Io};

/// What one APPEND request carries at most when several batches wait for a replica.
const REQUEST_LIMIT: RequestLimit = RequestLimit {
    max_bytes: 1 << 20,
    max_batches: 256,
};
/// Requests a replica connection has room for beyond the pipeline's batches (confirm-only
/// APPENDs).
const CONNECTION_SPARE_REQUESTS: usize = 64;

/// What the send tasks report to the driver.
#[derive(Debug)]
enum Event {
    Durable {
        generation: u64,
        replica: usize,
        base: Offset,
        next: Offset,
    },
    Failed {
        generation: u64,
        replica: usize,
        reason: String,
        /// No answer within the timeout (a stopped node): the seal does not wait for it again.
        timed_out: bool,
        /// The error the replica answered, if it answered one.
        code: Option<ErrorCode>,
    },
    /// The replica answered `STORAGE_FULL` to the batches from `base`: it holds nothing from
    /// there on.
    Full {
        generation: u64,
        replica: usize,
        base: Offset,
    },
    Fenced {
        epoch: Epoch,
    },
}

#[derive(Default)]
struct Events {
    queue: RefCell<VecDeque<Event>>,
    waker: RefCell<Option<Waker>>,
}

impl Events {
    fn push(&self, event: Event) {
        self.queue.borrow_mut().push_back(event);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// A replica of the open range and this driver's connection to it.
struct Lane {
    node: NodeId,
    address: String,
    connection: Option<Rc<Connection>>,
    /// When the replica last answered anything on this lane: a request times out only when
    /// the replica has been silent for `replica_timeout` (a busy disk answers late requests
    /// late, but keeps answering).
    last_answer: Rc<Cell<Instant>>,
    /// Requests started on this lane and not answered yet (sent or waiting for a slot).
    outstanding: Rc<Cell<usize>>,
    /// The replica answered `STORAGE_FULL` from this offset on (its next offset).
    full_at: Option<Offset>,
}

/// Counts one outstanding request of a lane while it lives.
struct Outstanding(Rc<Cell<usize>>);

impl Outstanding {
    fn new(count: &Rc<Cell<usize>>) -> Outstanding {
        count.set(count.get() + 1);
        Outstanding(Rc::clone(count))
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

pub(crate) struct Driver {
    io: Rc<Io>,
    shared: Arc<Shared>,
    range: wire::Range,
    lanes: Vec<Lane>,
    /// Bumped at every move to a new range; answers of older ones are ignored.
    generation: u64,
    pipeline: Pipeline<AppendSlot>,
    events: Rc<Events>,
    /// The confirmed offset last reported to the replicas of the open range.
    reported: Offset,
    /// When the last request went to the replicas.
    last_sent: Instant,
    /// Nodes seen failing since the open range was created; the next range avoids them (a
    /// node that comes back is eligible again for the range after).
    failed_nodes: BTreeSet<NodeId>,
    /// Those of them that did not answer in time: the seal does not wait for them.
    silent_nodes: BTreeSet<NodeId>,
    /// When the first seal since the last acknowledgement began: failing over again and again
    /// without progress ends after `retry_for`.
    stalled_since: Option<Instant>,
    /// The pause before failing over a range that acknowledged nothing (every replica full,
    /// say): no storm of empty ranges.
    failover_pause: FailoverPause,
    /// Since when every replica of the open range has been full without progress, and the
    /// pause before the next try of the same range.
    full_since: Option<Instant>,
    full_pause: FailoverPause,
}

/// What to do about replicas that answered `STORAGE_FULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FullDecision {
    /// No replica is full, or some have not answered about the first batch not acknowledged.
    Wait,
    /// Every replica is full exactly at the acknowledged prefix: placement cannot help, wait
    /// and send the same range the same batches again.
    RetrySameRange,
    /// Every replica either holds the first batch not acknowledged or is full, and too few hold
    /// it: seal and move on, away from the full nodes.
    FailOver,
}

/// `lanes`: for each replica, where it answered `STORAGE_FULL` (if it did) and whether it
/// holds the first batch not acknowledged (at `acked`).
fn full_decision(lanes: &[(Option<Offset>, bool)], acked: Offset) -> FullDecision {
    if lanes.iter().all(|(full_at, _)| full_at.is_none()) {
        return FullDecision::Wait;
    }
    if lanes
        .iter()
        .any(|(full_at, _)| full_at.is_some_and(|at| at < acked))
    {
        return FullDecision::FailOver;
    }
    if lanes.iter().all(|(full_at, _)| *full_at == Some(acked)) {
        return FullDecision::RetrySameRange;
    }
    if lanes
        .iter()
        .all(|(full_at, holds)| *full_at == Some(acked) || *holds)
    {
        return FullDecision::FailOver;
    }
    FullDecision::Wait
}

/// Pauses between failovers of ranges that acknowledged nothing: 10 ms doubling up to 1 s,
/// back to none after an acknowledgement.
#[derive(Debug, Default)]
struct FailoverPause {
    next: Option<Duration>,
}

impl FailoverPause {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// The pause before this failover: none the first time after progress.
    fn before_failover(&mut self, range_acknowledged_nothing: bool) -> Duration {
        if !range_acknowledged_nothing {
            self.next = None;
            return Duration::ZERO;
        }
        let pause = self.next.unwrap_or(Self::FIRST);
        self.next = Some((pause * 2).min(Self::MAX));
        pause
    }

    fn progress(&mut self) {
        self.next = None;
    }
}

impl Driver {
    pub(crate) fn new(io: Rc<Io>, shared: Arc<Shared>, range: wire::Range) -> Driver {
        let pipeline = Pipeline::new(
            range.start_offset,
            range.replicas.len(),
            usize::from(range.ack_count.max(1)),
        );
        let lanes = lanes_of(&range);
        Driver {
            io,
            shared,
            reported: range.start_offset,
            range,
            lanes,
            generation: 0,
            pipeline,
            events: Rc::new(Events::default()),
            last_sent: Instant::now(),
            failed_nodes: BTreeSet::new(),
            silent_nodes: BTreeSet::new(),
            stalled_since: None,
            failover_pause: FailoverPause::default(),
            full_since: None,
            full_pause: FailoverPause::default(),
        }
    }

    fn key(&self) -> RangeKey {
        RangeKey::new(self.range.stream_id, self.range.index)
    }

    pub(crate) async fn run(mut self) {
        self.connect_lanes().await;
        let result = self.drive().await;
        match result {
            Ok(()) => {}
            Err(error) => self.fail(error),
        }
    }

    async fn drive(&mut self) -> Result<(), SdkError> {
        loop {
            self.admit();
            self.send();
            if let Some(reason) = self.handle_events()? {
                self.fail_over(reason).await?;
                continue;
            }
            match self.full_decision() {
                FullDecision::Wait => {}
                FullDecision::RetrySameRange => {
                    self.retry_same_range().await?;
                    continue;
                }
                FullDecision::FailOver => {
                    let full: Vec<NodeId> = self
                        .lanes
                        .iter()
                        .filter(|lane| lane.full_at.is_some())
                        .map(|lane| lane.node)
                        .collect();
                    self.failed_nodes.extend(full.iter().copied());
                    self.fail_over(format!("replica(s) on node(s) {full:?} are full"))
                        .await?;
                    continue;
                }
            }
            if self.finish_if_done().await? {
                return Ok(());
            }
            self.confirm_if_idle();
            self.wait().await;
        }
    }

    /// Moves appended batches into the pipeline while the bounds allow.
    fn admit(&mut self) {
        let config = &self.io.config;
        let mut queue = self.shared.lock();
        while let Some(front) = queue.incoming.front() {
            if !self.pipeline.has_room(
                front.batch.len(),
                config.max_in_flight_bytes,
                config.max_in_flight_batches,
            ) {
                break;
            }
            let Submitted {
                base,
                next,
                batch,
                range_index,
                completion,
            } = queue.incoming.pop_front().expect("front exists");
            let batch = if range_index == self.range.index {
                batch
            } else {
                restamp(&batch, self.range.index, self.shared.epoch)
            };
            self.pipeline
                .push(Entry::new(base, next, batch, completion));
        }
    }

    /// Requests a lane may have outstanding (sent or waiting for a slot): twice what its
    /// connection sends at once.
    fn lane_bound(&self) -> usize {
        2 * (self.io.config.max_in_flight_batches + CONNECTION_SPARE_REQUESTS)
    }

    /// Sends every replica the batches it has not been sent, each request put in line on the
    /// replica's connection now, in offset order.
    fn send(&mut self) {
        let acked = self.pipeline.acked();
        let bound = self.lane_bound();
        let mut sent = false;
        for (replica, lane) in self.lanes.iter().enumerate() {
            let Some(connection) = &lane.connection else {
                continue;
            };
            while let Some((base, batches)) = self.pipeline.take_unsent(replica, REQUEST_LIMIT) {
                let next = batches_end(&batches).unwrap_or(base);
                if lane.outstanding.get() >= bound {
                    self.events.push(Event::Failed {
                        generation: self.generation,
                        replica,
                        reason: format!(
                            "{} requests outstanding: the replica fell too far behind",
                            lane.outstanding.get()
                        ),
                        // Like a silent replica: the seal does not wait for it.
                        timed_out: true,
                        code: None,
                    });
                    break;
                }
                let payload = concatenate(batches);
                let request = AppendRequest {
                    stream_id: self.range.stream_id,
                    range_index: self.range.index,
                    epoch: self.shared.epoch,
                    confirmed_offset: Some(acked),
                    repair: false,
                };
                let outstanding = Outstanding::new(&lane.outstanding);
                let response = connection.start_request_bytes(&request, payload);
                runtime::spawn(send_append(
                    response,
                    outstanding,
                    Rc::clone(&lane.last_answer),
                    self.io.config.replica_timeout,
                    Rc::clone(&self.events),
                    Sent::Batches {
                        generation: self.generation,
                        replica,
                        base,
                        next,
                    },
                ));
                sent = true;
            }
        }
        if sent {
            self.reported = self.reported.max(acked);
            self.last_sent = Instant::now();
        }
    }

    /// Applies the replicas' answers. `Some(reason)` on the first failure of a replica of the
    /// open range.
    fn handle_events(&mut self) -> Result<Option<String>, SdkError> {
        loop {
            let Some(event) = self.events.queue.borrow_mut().pop_front() else {
                return Ok(None);
            };
            match event {
                Event::Durable {
                    generation,
                    replica,
                    base,
                    next,
                } if generation == self.generation => {
                    let acknowledged = self.pipeline.durable(replica, base, next);
                    if !acknowledged.is_empty() {
                        self.stalled_since = None;
                        self.failover_pause.progress();
                        self.full_since = None;
                        self.full_pause.progress();
                        self.acknowledge(acknowledged);
                    }
                }
                Event::Full {
                    generation,
                    replica,
                    base,
                } if generation == self.generation => {
                    let lane = &mut self.lanes[replica];
                    lane.full_at = Some(lane.full_at.map_or(base, |at| at.min(base)));
                }
                // A full replica refuses what follows its refusal too: not a new failure.
                Event::Failed {
                    generation,
                    replica,
                    code: Some(ErrorCode::OffsetGap | ErrorCode::StorageFull),
                    ..
                } if generation == self.generation && self.lanes[replica].full_at.is_some() => {}
                Event::Failed {
                    generation,
                    replica,
                    reason,
                    timed_out,
                    ..
                } if generation == self.generation => {
                    let lane = &self.lanes[replica];
                    self.failed_nodes.insert(lane.node);
                    if timed_out {
                        self.silent_nodes.insert(lane.node);
                    }
                    return Ok(Some(format!(
                        "replica on node {} ({}) failed: {reason}",
                        lane.node, lane.address
                    )));
                }
                Event::Fenced { epoch } => return Err(SdkError::Fenced { epoch }),
                // An answer from a range this writer already left (or an earlier try).
                Event::Durable { .. } | Event::Failed { .. } | Event::Full { .. } => {}
            }
        }
    }

    /// What the `STORAGE_FULL` answers so far call for.
    fn full_decision(&mut self) -> FullDecision {
        let acked = self.pipeline.acked();
        // Full below the prefix the others acknowledged past: it will never catch up here.
        if self
            .lanes
            .iter()
            .any(|lane| lane.full_at.is_some_and(|at| at < acked))
        {
            return FullDecision::FailOver;
        }
        if self.pipeline.is_empty() {
            // Nothing waits: the next batch finds out afresh.
            for lane in &mut self.lanes {
                lane.full_at = None;
            }
            return FullDecision::Wait;
        }
        let lanes: Vec<(Option<Offset>, bool)> = (0..self.lanes.len())
            .map(|replica| {
                (
                    self.lanes[replica].full_at,
                    self.pipeline.front_held_by(replica),
                )
            })
            .collect();
        full_decision(&lanes, acked)
    }

    /// Every replica is full at the acknowledged prefix: another range would not help (the
    /// placement manager would choose among the same full nodes, and a storm of empty ranges
    /// helps nobody). Waits, longer each time, then sends the same batches to the same range
    /// again; gives up after `retry_for` without progress.
    async fn retry_same_range(&mut self) -> Result<(), SdkError> {
        let since = *self.full_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.io.config.retry_for {
            return Err(SdkError::Unavailable {
                what: format!(
                    "writing stream {}: every replica of range {} answered STORAGE_FULL",
                    self.range.stream_id, self.range.index
                ),
                waited: since.elapsed(),
            });
        }
        let pause = self.full_pause.before_failover(true);
        log::warn!(
            "stream {}: every replica of range {} is full; trying again in {} ms",
            self.range.stream_id,
            self.range.index,
            pause.as_millis()
        );
        runtime::time::sleep(pause).await;
        // Answers to the earlier sends (refusals of what followed) are dropped.
        self.generation += 1;
        self.events.queue.borrow_mut().clear();
        for lane in &mut self.lanes {
            lane.full_at = None;
        }
        self.pipeline.resend_all();
        Ok(())
    }

    /// Completes acknowledged batches and the flushes they satisfy.
    fn acknowledge(&mut self, entries: Vec<Entry<AppendSlot>>) {
        let acked = self.pipeline.acked();
        let flushes = {
            let mut queue = self.shared.lock();
            queue.acked = acked;
            let bytes = entries.iter().map(|entry| entry.batch.len()).sum();
            queue.release(bytes, entries.len());
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut queue.flushes)
                .into_iter()
                .partition(|(target, _)| *target <= acked);
            queue.flushes = waiting;
            done
        };
        for entry in entries {
            entry.completion.complete(Ok(AppendAck {
                base_offset: entry.base,
                next_offset: entry.next,
            }));
        }
        for (_, flush) in flushes {
            flush.complete(Ok(()));
        }
    }

    /// Seals the open range at the acknowledged prefix and moves every batch in flight to a
    /// new range.
    async fn fail_over(&mut self, reason: String) -> Result<(), SdkError> {
        // A range that acknowledged nothing since the last failover (every node full, say):
        // pause first, longer each time, so a cluster that cannot take data is not flooded
        // with empty ranges.
        let pause = self
            .failover_pause
            .before_failover(self.stalled_since.is_some());
        if !pause.is_zero() {
            log::info!(
                "stream {}: range {} acknowledged nothing; failing over in {} ms",
                self.range.stream_id,
                self.range.index,
                pause.as_millis()
            );
            runtime::time::sleep(pause).await;
        }
        let started = Instant::now();
        let stalled_since = *self.stalled_since.get_or_insert(started);
        if stalled_since.elapsed() >= self.io.config.retry_for {
            return Err(SdkError::Unavailable {
                what: format!(
                    "writing stream {}: ranges kept failing without an acknowledgement ({reason})",
                    self.range.stream_id
                ),
                waited: stalled_since.elapsed(),
            });
        }
        log::warn!(
            "stream {}: {reason}; sealing range {} and moving on",
            self.range.stream_id,
            self.range.index
        );
        let end = self.pipeline.begin_seal();
        let silent: Vec<NodeId> = self.silent_nodes.iter().copied().collect();
        let sealed = seal_with_repair(
            &self.io,
            &self.range,
            self.shared.epoch,
            EndRule::Acknowledged(end),
            &reason,
            &silent,
        )
        .await?;
        if sealed.end != end {
            // Never acknowledge past the end of the range: an end below the acknowledged prefix
            // would lose acknowledged batches.
            return Err(SdkError::Protocol(format!(
                "range {} was sealed at {} although this writer acknowledged everything below \
                 {end}; the writer stops",
                self.key(),
                sealed.end
            )));
        }
        self.failed_nodes.extend(sealed.unreachable.iter().copied());
        let next_index = self.range.index.next().ok_or_else(|| {
            SdkError::InvalidArgument(format!(
                "stream {} has used every range index",
                self.range.stream_id
            ))
        })?;
        let range = create_range(
            &self.io,
            self.range.stream_id,
            self.shared.epoch,
            next_index,
            sealed.end,
            self.failed_nodes.iter().copied().collect(),
        )
        .await?;
        self.failed_nodes.clear();
        self.silent_nodes.clear();
        self.move_to(range).await;
        log::info!(
            "stream {}: failed over to range {} in {} ms, {} batch(es) re-sent",
            self.range.stream_id,
            self.range.index,
            started.elapsed().as_millis(),
            self.pipeline.len()
        );
        Ok(())
    }

    /// Makes `range` the open range: every batch in flight is restamped for it and sent to its
    /// replicas from the acknowledged prefix.
    async fn move_to(&mut self, range: wire::Range) {
        self.generation += 1;
        self.events.queue.borrow_mut().clear();
        let index = range.index;
        let epoch = self.shared.epoch;
        self.pipeline.move_to(
            range.replicas.len(),
            usize::from(range.ack_count.max(1)),
            |batch| restamp(batch, index, epoch),
        );
        self.reported = self.pipeline.acked();
        self.shared.lock().range_index = index;
        self.lanes = lanes_of(&range);
        self.range = range;
        self.connect_lanes().await;
    }

    /// Connects to every replica of the open range; one that cannot be reached fails now.
    async fn connect_lanes(&mut self) {
        let io = &self.io;
        let max_in_flight = io.config.max_in_flight_batches + CONNECTION_SPARE_REQUESTS;
        let timeout = io.config.replica_timeout;
        let attempts = self
            .lanes
            .iter()
            .map(|lane| io.open_connection(&lane.address, max_in_flight, timeout));
        let results = join_all(attempts.collect()).await;
        for (replica, (lane, result)) in self.lanes.iter_mut().zip(results).enumerate() {
            match result {
                Ok(connection) => lane.connection = Some(Rc::new(connection)),
                Err(failure) => self.events.push(Event::Failed {
                    generation: self.generation,
                    replica,
                    timed_out: matches!(failure, crate::sdk::io::Failure::Timeout(_)),
                    code: None,
                    reason: format!("cannot connect: {failure}"),
                }),
            }
        }
    }

    /// Handles `close()` and a dropped writer once nothing is left in flight. True when the
    /// driver is done.
    async fn finish_if_done(&mut self) -> Result<bool, SdkError> {
        let (close, dropped, idle) = {
            let queue = self.shared.lock();
            (
                queue.close.clone(),
                queue.dropped,
                queue.incoming.is_empty() && self.pipeline.is_empty(),
            )
        };
        if !idle {
            return Ok(false);
        }
        if let Some(close) = close {
            let end = self.pipeline.begin_seal();
            let result = seal_with_repair(
                &self.io,
                &self.range,
                self.shared.epoch,
                EndRule::Acknowledged(end),
                "the writer is closing",
                &[],
            )
            .await
            .and_then(|sealed| {
                if sealed.end == end {
                    Ok(sealed.end)
                } else {
                    Err(SdkError::Protocol(format!(
                        "range {} was sealed at {} although this writer acknowledged everything \
                         below {end}",
                        self.key(),
                        sealed.end
                    )))
                }
            });
            if let Ok(end) = result {
                log::info!("stream {}: writer closed at {end}", self.range.stream_id);
            }
            self.shared.lock().failed = Some(SdkError::Closed);
            close.complete(result);
            return Ok(true);
        }
        if dropped {
            // Let readers see the last batches before the range is left open for the next
            // writer to recover.
            if self.reported < self.pipeline.acked() {
                self.confirm().await;
            }
            log::debug!("{}: writer dropped, range left open", self.key());
            return Ok(true);
        }
        Ok(false)
    }

    /// Reports the acknowledged prefix with a confirm-only APPEND when nothing was sent for
    /// `confirm_interval`.
    fn confirm_if_idle(&mut self) {
        if self.reported < self.pipeline.acked()
            && self.last_sent.elapsed() >= self.io.config.confirm_interval
        {
            let confirm = self.confirm();
            // Answers come back as events; nothing to await here.
            runtime::spawn(confirm);
        }
    }

    /// A confirm-only APPEND to every replica: the returned future sends them and waits for
    /// the answers (failures come back as events).
    fn confirm(&mut self) -> impl std::future::Future<Output = ()> + 'static {
        let acked = self.pipeline.acked();
        self.reported = acked;
        self.last_sent = Instant::now();
        let request = AppendRequest {
            stream_id: self.range.stream_id,
            range_index: self.range.index,
            epoch: self.shared.epoch,
            confirmed_offset: Some(acked),
            repair: false,
        };
        let sends: Vec<_> = self
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(replica, lane)| {
                let connection = lane.connection.as_ref()?;
                let outstanding = Outstanding::new(&lane.outstanding);
                let response = connection.start_request_bytes(&request, Bytes::new());
                Some(send_append(
                    response,
                    outstanding,
                    Rc::clone(&lane.last_answer),
                    self.io.config.replica_timeout,
                    Rc::clone(&self.events),
                    Sent::ConfirmOnly {
                        generation: self.generation,
                        replica,
                    },
                ))
            })
            .collect();
        async move {
            join_all(sends).await;
        }
    }

    /// Waits for replica answers, new appends (when there is room), close or drop, or the time
    /// of the next confirm-only report.
    async fn wait(&mut self) {
        let confirm_due = (self.reported < self.pipeline.acked())
            .then(|| self.last_sent + self.io.config.confirm_interval);
        let config = &self.io.config;
        let events = &self.events;
        let shared = &self.shared;
        let pipeline = &self.pipeline;
        let woken = std::future::poll_fn(|context| {
            if !events.queue.borrow().is_empty() {
                return Poll::Ready(());
            }
            *events.waker.borrow_mut() = Some(context.waker().clone());
            let mut queue = shared.lock();
            let admissible = queue.incoming.front().is_some_and(|front| {
                pipeline.has_room(
                    front.batch.len(),
                    config.max_in_flight_bytes,
                    config.max_in_flight_batches,
                )
            });
            let idle = queue.incoming.is_empty() && pipeline.is_empty();
            if admissible || (idle && (queue.close.is_some() || queue.dropped)) {
                return Poll::Ready(());
            }
            queue.driver_waker = Some(context.waker().clone());
            Poll::Pending
        });
        match confirm_due {
            Some(due) => {
                runtime::race(woken, runtime::time::sleep_until(due)).await;
            }
            None => woken.await,
        }
    }

    /// The writer failed: every pending and later append, flush and close gets `error`.
    fn fail(&mut self, error: SdkError) {
        log::warn!("writer of stream {} failed: {error}", self.range.stream_id);
        let (incoming, flushes, close) = {
            let mut queue = self.shared.lock();
            queue.failed = Some(error.clone());
            // Appends waiting for room fail too.
            queue.wake_waiting();
            (
                std::mem::take(&mut queue.incoming),
                std::mem::take(&mut queue.flushes),
                queue.close.take(),
            )
        };
        for entry in self.pipeline.drain() {
            entry.completion.complete(Err(error.clone()));
        }
        for submitted in incoming {
            submitted.completion.complete(Err(error.clone()));
        }
        for (_, flush) in flushes {
            flush.complete(Err(error.clone()));
        }
        if let Some(close) = close {
            close.complete(Err(error));
        }
    }
}

fn lanes_of(range: &wire::Range) -> Vec<Lane> {
    range
        .replicas
        .iter()
        .map(|replica| Lane {
            node: replica.node_id,
            address: replica.address.clone(),
            connection: None,
            last_answer: Rc::new(Cell::new(Instant::now())),
            outstanding: Rc::new(Cell::new(0)),
            full_at: None,
        })
        .collect()
}

/// The batch rewritten for another range (the offsets and payload stay).
fn restamp(batch: &Bytes, index: wire::RangeIndex, epoch: Epoch) -> Bytes {
    match BatchView::parse_unverified(batch.clone()) {
        Ok(view) => view.restamp(index, epoch),
        // Built by this writer: cannot happen; sent as it is, a replica would refuse it.
        Err(_) => batch.clone(),
    }
}

/// Batches back to back in one payload (no copy for a single batch).
fn concatenate(mut batches: Vec<Bytes>) -> Bytes {
    if batches.len() == 1 {
        return batches.pop().expect("one batch");
    }
    let total = batches.iter().map(Bytes::len).sum();
    let mut payload = BytesMut::with_capacity(total);
    for batch in batches {
        payload.extend_from_slice(&batch);
    }
    payload.freeze()
}

/// What an APPEND carried.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// Batches covering `[base, next)`.
    Batches {
        generation: u64,
        replica: usize,
        base: Offset,
        next: Offset,
    },
    /// Only the confirmed offset: its answer says nothing about durability.
    ConfirmOnly { generation: u64, replica: usize },
}

/// One past the last offset of `batches` (whole batches, built by this writer).
fn batches_end(batches: &[Bytes]) -> Option<Offset> {
    let last = batches.last()?;
    wire::BatchHeader::parse(last)
        .ok()
        .map(|header| header.next_offset())
}

/// One APPEND to one replica; its outcome becomes an event (a confirm-only one's success
/// none). It times out once the replica has answered nothing on this lane for `timeout` since
/// the request was sent.
async fn send_append(
    response: Result<PendingResponse, crate::conn::ClientError>,
    _outstanding: Outstanding,
    last_answer: Rc<Cell<Instant>>,
    timeout: Duration,
    events: Rc<Events>,
    sent: Sent,
) {
    let (generation, replica) = match sent {
        Sent::Batches {
            generation,
            replica,
            ..
        }
        | Sent::ConfirmOnly {
            generation,
            replica,
        } => (generation, replica),
    };
    let exchange = async {
        let frame = response
            .map_err(|error| error.to_string())?
            .await
            .map_err(|error| error.to_string())?;
        decode_response::<AppendResponse>(&frame).map_err(|error| error.to_string())
    };
    let mut exchange = std::pin::pin!(exchange);
    let sent_at = Instant::now();
    let outcome = loop {
        let deadline = sent_at.max(last_answer.get()) + timeout;
        match runtime::race(exchange.as_mut(), runtime::time::sleep_until(deadline)).await {
            runtime::Either::Left(outcome) => {
                last_answer.set(last_answer.get().max(Instant::now()));
                break Ok(outcome);
            }
            // The replica answered other requests meanwhile: it is alive, keep waiting.
            runtime::Either::Right(()) if last_answer.get() + timeout > Instant::now() => {}
            runtime::Either::Right(()) => break Err(()),
        }
    };
    let event = match outcome {
        Ok(Ok(Ok(_))) => match sent {
            // The whole request is durable on the replica once it answers.
            Sent::Batches { base, next, .. } => Event::Durable {
                generation,
                replica,
                base,
                next,
            },
            Sent::ConfirmOnly { .. } => return,
        },
        Ok(Ok(Err(error))) if error.code == ErrorCode::StaleEpoch => Event::Fenced {
            epoch: Epoch(error.detail),
        },
        Ok(Ok(Err(error))) => match sent {
            Sent::Batches { base, .. } if error.code == ErrorCode::StorageFull => Event::Full {
                generation,
                replica,
                base,
            },
            _ => Event::Failed {
                generation,
                replica,
                reason: format!("APPEND answered {}: {}", error.code, error.message),
                timed_out: false,
                code: Some(error.code),
            },
        },
        Ok(Err(reason)) => Event::Failed {
            generation,
            replica,
            reason,
            timed_out: false,
            code: None,
        },
        Err(_) => Event::Failed {
            generation,
            replica,
            reason: format!("no answer within {} ms", timeout.as_millis()),
            timed_out: true,
            code: None,
        },
    };
    events.push(event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_full_everywhere_retries_the_same_range_and_elsewhere_fails_over() {
        let at = Offset(10);
        let above = Offset(12);
        // Nobody full.
        assert_eq!(
            full_decision(&[(None, false), (None, true)], at),
            FullDecision::Wait
        );
        // Every replica full at the acknowledged prefix: placement cannot help.
        assert_eq!(
            full_decision(
                &[(Some(at), false), (Some(at), false), (Some(at), false)],
                at
            ),
            FullDecision::RetrySameRange
        );
        // One full, another not answered yet about the first batch: wait.
        assert_eq!(
            full_decision(&[(Some(at), false), (None, false), (None, true)], at),
            FullDecision::Wait
        );
        // Full further on while the batch at the prefix may still be acknowledged: wait.
        assert_eq!(
            full_decision(&[(Some(above), false), (Some(above), false)], at),
            FullDecision::Wait
        );
        // Full below what the others acknowledged since: it never catches up.
        assert_eq!(
            full_decision(&[(Some(Offset(8)), false), (None, false)], at),
            FullDecision::FailOver
        );
        // Some hold the batch, the others are full: a range elsewhere can take it.
        assert_eq!(
            full_decision(&[(Some(at), false), (Some(at), false), (None, true)], at),
            FullDecision::FailOver
        );
    }

    #[test]
    fn failovers_without_progress_pause_longer_each_time_up_to_a_second() {
        let mut pause = FailoverPause::default();
        assert_eq!(
            pause.before_failover(false),
            Duration::ZERO,
            "first failure: at once"
        );
        let pauses: Vec<u128> = (0..10)
            .map(|_| pause.before_failover(true).as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        pause.progress();
        assert_eq!(pause.before_failover(true), FailoverPause::FIRST);
        assert_eq!(pause.before_failover(false), Duration::ZERO);
        assert_eq!(pause.before_failover(true), FailoverPause::FIRST);
    }
}
