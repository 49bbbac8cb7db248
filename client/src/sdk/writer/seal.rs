//! Seal with repair: how a writer ends a range so that at least A replicas hold everything
//! below the end before the placement manager records it.
//!
//! 1. **Fence** every replica (SEAL_RANGE with `FENCE_ONLY`): it adopts the writer's epoch,
//!    takes no more ordinary appends, lets those in flight settle, and answers its durable end
//!    and any end already fixed. A fixed end counts only if the placement manager recorded it
//!    (DESCRIBE_RANGE there): a replica sealed by hand at another end is left out of the seal.
//! 2. **Choose the end** E: a live writer its acknowledged prefix; a recovering writer the
//!    (n − A)-th smallest durable end of at least n − A + 1 answers ([`super::end`]).
//! 3. **Repair**: every answering replica whose durable end is below E gets the batches it
//!    lacks, read with FETCH `DURABLE` from a replica that has them and written with APPEND
//!    `REPAIR`. If no reachable replica holds everything below E, fence again and choose again.
//!    Likewise when fewer than A replicas (all of an under-replicated range) hold `[start, E)`
//!    after the repair.
//! 4. **Commit**: SEAL_RANGE at the placement manager with E. Its record is the commit point.
//! 5. **Seal the replicas** at E; one that lacks data (it missed the repair) is repaired first.
//!
//! The seal hook is called after steps 1 (with 2), 3 and 4.

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use wire::msg::{
    AppendRequest, AppendResponse, DescribeRangeRequest, DescribeRangeResponse, FetchRequest,
    FetchResponse, SealRangeRequest, SealRangeResponse,
};
use wire::{BatchIter, Epoch, ErrorCode, NodeId, Offset, RangeKey, ReplicaNode};

use super::end::{answers_needed, recovery_end};
use crate::sdk::config::SealStep;
use crate::sdk::error::SdkError;
use crate::sdk::io::{join_all, Backoff, Io};

/// Bytes one repair FETCH asks for.
const REPAIR_FETCH_BYTES: u32 = 1 << 20;

/// How the end of the range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndRule {
    /// A live writer: everything it acknowledged, nothing more.
    Acknowledged(Offset),
    /// A writer recovering the range of one that died.
    Recover,
}

/// A sealed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) end: Offset,
    /// Replicas that did not answer at some step: the next range avoids them.
    pub(crate) unreachable: Vec<NodeId>,
}

/// A replica's answer to the fence.
#[derive(Debug, Clone)]
struct Fenced {
    replica: ReplicaNode,
    durable_end: Offset,
    end: Option<Offset>,
}

fn hook(io: &Io, step: SealStep) {
    if let Some(hook) = &io.config.seal_hook {
        hook(step);
    }
}

fn key(range: &wire::Range) -> RangeKey {
    RangeKey::new(range.stream_id, range.index)
}

/// Seals `range`, open at the placement manager, with `epoch`: fence, choose the end by
/// `rule`, repair, commit at the placement manager, seal the replicas that answered. Replicas
/// on `silent` nodes (they did not answer the writer in time) are not asked again: a stopped
/// node would only make every step wait out its timeout, and for a live writer nothing it
/// could answer changes the end.
pub(crate) async fn seal_with_repair(
    io: &Io,
    range: &wire::Range,
    epoch: Epoch,
    rule: EndRule,
    reason: &str,
    silent: &[NodeId],
) -> Result<Sealed, SdkError> {
    let key = key(range);
    log::info!("sealing range {key} at epoch {epoch}: {reason}");
    let started = Instant::now();
    let mut backoff = Backoff::new();
    let mut unreachable: BTreeSet<NodeId> = silent.iter().copied().collect();
    let mut asked: Vec<ReplicaNode> = range
        .replicas
        .iter()
        .filter(|replica| !silent.contains(&replica.node_id))
        .cloned()
        .collect();
    loop {
        let mut answers = fence(io, range, &asked, epoch, &mut unreachable).await?;
        // Replicas that did not answer the fence at all (damaged ones below do not count).
        let silent_now = range.replicas.len().saturating_sub(answers.len());
        // A later round asks every replica again: a silent one may hold what is missing.
        asked.clone_from(&range.replicas);
        // An end fixed on a replica counts only if the placement manager recorded it: anyone
        // with the stream's epoch can seal a data node's replica by hand (an end-less seal
        // fixes the replica's own durable end), and adopting such an end could cut
        // acknowledged batches. A replica sealed at an end the PM did not record is damaged
        // for this seal: neither a holder nor sealed again.
        let fixed = if answers.iter().any(|answer| answer.end.is_some()) {
            let recorded = recorded_end(io, range).await?;
            answers.retain(|answer| match answer.end {
                Some(end) if Some(end) != recorded => {
                    log::warn!(
                        "range {key}: node {} is sealed at {end}, an end the placement manager \
                         did not record ({}); it takes no part in this seal",
                        answer.replica.node_id,
                        recorded.map_or("open there".to_string(), |end| format!("end {end}"))
                    );
                    unreachable.insert(answer.replica.node_id);
                    false
                }
                _ => true,
            });
            recorded
        } else {
            None
        };
        let answered: Vec<ReplicaNode> = answers
            .iter()
            .map(|answer| answer.replica.clone())
            .collect();
        let chosen = match (fixed, rule) {
            (Some(end), _) => Some(end),
            (None, EndRule::Acknowledged(end)) => Some(end),
            (None, EndRule::Recover) => {
                let durable: Vec<Offset> =
                    answers.iter().map(|answer| answer.durable_end).collect();
                recovery_end(&durable, range.replicas.len(), usize::from(range.ack_count))
                    .map(|end| end.max(range.start_offset))
            }
        };
        let Some(end) = chosen else {
            let needed = answers_needed(range.replicas.len(), usize::from(range.ack_count));
            give_up_or_wait(
                io,
                started,
                &mut backoff,
                format!(
                    "recovering range {key}: {} of {} replicas answered the fence, {needed} needed",
                    answers.len(),
                    range.replicas.len()
                ),
            )
            .await?;
            continue;
        };
        log::info!(
            "range {key}: fenced ({} of {} replicas answered), end {end}{}",
            answers.len(),
            range.replicas.len(),
            if fixed.is_some() {
                " (already recorded)"
            } else {
                ""
            }
        );
        hook(io, SealStep::Fenced);
        if let Some(end) = fixed {
            // Recorded at the placement manager before any replica was sealed: adopt it. A
            // live writer's range ends at its acknowledged prefix and nowhere else.
            if let EndRule::Acknowledged(acknowledged) = rule {
                if end != acknowledged {
                    return Err(SdkError::Protocol(format!(
                        "range {key} was recorded with end {end} while this writer \
                         acknowledged everything below {acknowledged}"
                    )));
                }
            }
            let more = seal_replicas(io, range, epoch, end, &answered).await?;
            unreachable.extend(more);
            return Ok(Sealed {
                end,
                unreachable: unreachable.into_iter().collect(),
            });
        }
        match repair_all(io, range, epoch, end, &answers).await {
            Ok(report) => {
                // Rule 5: before the end is recorded, A replicas (of an under-replicated range,
                // all of them) hold everything below it. A recovery's end may lie above what
                // was acknowledged, so only what reachable replicas hold now counts: sources
                // still answering and targets repaired. A live writer's end is its
                // acknowledged prefix, which A replicas made durable on their disks: a replica
                // that does not answer now still holds it, but one that answered lacking data
                // and could not be repaired does not. Too few: fence again, choose again.
                let needed = usize::from(range.ack_count).clamp(1, range.replicas.len().max(1));
                let holders = match rule {
                    EndRule::Recover => report.holders,
                    EndRule::Acknowledged(_) => report.holders + silent_now,
                };
                unreachable.extend(report.failed.iter().copied());
                if holders < needed && end > range.start_offset {
                    give_up_or_wait(
                        io,
                        started,
                        &mut backoff,
                        format!(
                            "sealing range {key}: {holders} replica(s) hold everything below \
                             {end}, {needed} needed; fencing again"
                        ),
                    )
                    .await?;
                    continue;
                }
                if report.bytes > 0 {
                    log::info!(
                        "range {key}: repaired {} replica(s) with {} bytes below {end}",
                        report.replicas,
                        report.bytes
                    );
                }
            }
            Err(RepairError::Fatal(error)) => return Err(error),
            Err(RepairError::NoSource) => {
                give_up_or_wait(
                    io,
                    started,
                    &mut backoff,
                    format!(
                        "sealing range {key} at {end}: no reachable replica holds everything \
                         below the end; fencing again"
                    ),
                )
                .await?;
                continue;
            }
        }
        hook(io, SealStep::Repaired);
        let recorded = commit(io, range, epoch, end).await?;
        if recorded != end {
            if let EndRule::Acknowledged(_) = rule {
                return Err(SdkError::Protocol(format!(
                    "range {key} was recorded with end {recorded} while this writer sealed it at \
                     {end}"
                )));
            }
            log::warn!("range {key}: the placement manager already recorded end {recorded}");
        }
        hook(io, SealStep::Committed);
        log::info!("range {key}: end {recorded} recorded at the placement manager");
        let more = seal_replicas(io, range, epoch, recorded, &answered).await?;
        unreachable.extend(more);
        return Ok(Sealed {
            end: recorded,
            unreachable: unreachable.into_iter().collect(),
        });
    }
}

/// Fails with [`SdkError::Unavailable`] once `retry_for` has passed, else waits a back-off.
async fn give_up_or_wait(
    io: &Io,
    started: Instant,
    backoff: &mut Backoff,
    what: String,
) -> Result<(), SdkError> {
    if started.elapsed() >= io.config.retry_for {
        return Err(SdkError::Unavailable {
            what,
            waited: started.elapsed(),
        });
    }
    log::warn!("{what}");
    backoff.wait().await;
    Ok(())
}

/// Fences every replica; the answers of those that answered. Replicas that did not are added
/// to `unreachable`. A replica at a newer epoch means a newer writer: [`SdkError::Fenced`].
async fn fence(
    io: &Io,
    range: &wire::Range,
    replicas: &[ReplicaNode],
    epoch: Epoch,
    unreachable: &mut BTreeSet<NodeId>,
) -> Result<Vec<Fenced>, SdkError> {
    let request = SealRangeRequest {
        stream_id: range.stream_id,
        range_index: range.index,
        epoch,
        end_offset: None,
        fence_only: true,
    };
    let attempts = replicas.iter().map(|replica| {
        io.request::<SealRangeRequest, SealRangeResponse>(
            &replica.address,
            &request,
            Bytes::new(),
            io.config.replica_timeout,
        )
    });
    let results = join_all(attempts.collect()).await;
    let mut answers = Vec::new();
    for (replica, result) in replicas.iter().zip(results) {
        match result {
            Ok(Ok((response, _))) => match response.durable_end {
                Some(durable_end) => answers.push(Fenced {
                    replica: replica.clone(),
                    durable_end,
                    end: response.end_offset,
                }),
                None => {
                    log::warn!(
                        "fence of range {} on node {}: no durable end in the answer",
                        key(range),
                        replica.node_id
                    );
                    unreachable.insert(replica.node_id);
                }
            },
            Ok(Err(error)) if error.code == ErrorCode::StaleEpoch => {
                return Err(SdkError::Fenced {
                    epoch: Epoch(error.detail),
                });
            }
            Ok(Err(error)) => {
                log::warn!(
                    "fence of range {} on node {} ({}): {} {}",
                    key(range),
                    replica.node_id,
                    replica.address,
                    error.code,
                    error.message
                );
                unreachable.insert(replica.node_id);
            }
            Err(failure) => {
                log::warn!(
                    "fence of range {} on node {} ({}): {failure}",
                    key(range),
                    replica.node_id,
                    replica.address
                );
                unreachable.insert(replica.node_id);
            }
        }
    }
    Ok(answers)
}

/// What a repair did.
#[derive(Debug, Default)]
struct RepairReport {
    replicas: usize,
    bytes: u64,
    /// Targets that failed during the repair, and sources that failed to serve it.
    failed: Vec<NodeId>,
    /// Replicas that hold everything below the end now: sources that served (or were not
    /// needed) and targets repaired.
    holders: usize,
}

#[derive(Debug)]
enum RepairError {
    /// No reachable replica holds everything below the end.
    NoSource,
    Fatal(SdkError),
}

/// Copies `[durable end, end)` to every answering replica below `end`.
async fn repair_all(
    io: &Io,
    range: &wire::Range,
    epoch: Epoch,
    end: Offset,
    answers: &[Fenced],
) -> Result<RepairReport, RepairError> {
    let mut report = RepairReport::default();
    let mut sources: Vec<&ReplicaNode> = answers
        .iter()
        .filter(|answer| answer.durable_end >= end)
        .map(|answer| &answer.replica)
        .collect();
    if end > range.start_offset && sources.is_empty() {
        // Committing now would leave everything below the end on replicas nobody can reach.
        return Err(RepairError::NoSource);
    }
    let initial_sources: Vec<NodeId> = sources.iter().map(|source| source.node_id).collect();
    for target in answers.iter().filter(|answer| answer.durable_end < end) {
        let replica = &target.replica;
        match repair_replica(
            io,
            range,
            epoch,
            end,
            replica,
            target.durable_end,
            &mut sources,
        )
        .await
        {
            Ok(bytes) => {
                report.replicas += 1;
                report.bytes += bytes;
            }
            Err(RepairFailure::Target(reason)) => {
                log::warn!(
                    "repair of range {} on node {} failed: {reason}",
                    key(range),
                    replica.node_id
                );
                report.failed.push(replica.node_id);
            }
            Err(RepairFailure::NoSource) => return Err(RepairError::NoSource),
            Err(RepairFailure::Fatal(error)) => return Err(RepairError::Fatal(error)),
        }
    }
    for node in initial_sources {
        if !sources.iter().any(|source| source.node_id == node) {
            report.failed.push(node);
        }
    }
    report.holders = sources.len() + report.replicas;
    Ok(report)
}

#[derive(Debug)]
enum RepairFailure {
    /// The replica being repaired failed.
    Target(String),
    /// Every source failed.
    NoSource,
    Fatal(SdkError),
}

/// Copies `[from, end)` to `target` from the first of `sources` that serves it; sources that
/// fail are removed from the list. Returns the bytes copied.
async fn repair_replica(
    io: &Io,
    range: &wire::Range,
    epoch: Epoch,
    end: Offset,
    target: &ReplicaNode,
    from: Offset,
    sources: &mut Vec<&ReplicaNode>,
) -> Result<u64, RepairFailure> {
    let mut position = from;
    let mut bytes = 0u64;
    while position < end {
        let Some(source) = sources.first().copied() else {
            return Err(RepairFailure::NoSource);
        };
        let payload = match read_durable(io, range, source, position, end).await {
            Ok(payload) => payload,
            Err(reason) => {
                log::warn!(
                    "repair of range {}: reading from node {} failed: {reason}",
                    key(range),
                    source.node_id
                );
                sources.remove(0);
                continue;
            }
        };
        let request = AppendRequest {
            stream_id: range.stream_id,
            range_index: range.index,
            epoch,
            confirmed_offset: None,
            repair: true,
        };
        let length = payload.len() as u64;
        match io
            .request::<AppendRequest, AppendResponse>(
                &target.address,
                &request,
                payload,
                io.config.replica_timeout,
            )
            .await
        {
            Ok(Ok((response, _))) => {
                if response.next_offset <= position {
                    return Err(RepairFailure::Target(format!(
                        "repair append answered next offset {} at {position}",
                        response.next_offset
                    )));
                }
                position = response.next_offset;
                bytes += length;
            }
            Ok(Err(error))
                if matches!(
                    error.code,
                    ErrorCode::OffsetDuplicate | ErrorCode::OffsetGap
                ) =>
            {
                // The replica's next offset is elsewhere: go on from there.
                let next = Offset(error.detail);
                if next == position {
                    return Err(RepairFailure::Target(format!(
                        "{} at its own next offset {next}",
                        error.code
                    )));
                }
                position = next;
            }
            Ok(Err(error)) if error.code == ErrorCode::StaleEpoch => {
                return Err(RepairFailure::Fatal(SdkError::Fenced {
                    epoch: Epoch(error.detail),
                }))
            }
            Ok(Err(error)) => {
                return Err(RepairFailure::Target(format!(
                    "repair append answered {} {}",
                    error.code, error.message
                )))
            }
            Err(failure) => return Err(RepairFailure::Target(failure.to_string())),
        }
    }
    Ok(bytes)
}

/// Whole batches of `[position, end)` (at least one) read with FETCH `DURABLE` from `source`.
async fn read_durable(
    io: &Io,
    range: &wire::Range,
    source: &ReplicaNode,
    position: Offset,
    end: Offset,
) -> Result<Bytes, String> {
    let request = FetchRequest {
        stream_id: range.stream_id,
        range_index: range.index,
        max_bytes: REPAIR_FETCH_BYTES,
        start_offset: position,
        max_wait_ms: 0,
        read_durable: true,
        expect_sealed: false,
    };
    let (_, payload) = io
        .request::<FetchRequest, FetchResponse>(
            &source.address,
            &request,
            Bytes::new(),
            io.config.replica_timeout,
        )
        .await
        .map_err(|failure| failure.to_string())?
        .map_err(|error| format!("FETCH DURABLE answered {} {}", error.code, error.message))?;
    let mut copied = BytesMut::new();
    let mut next = position;
    for batch in BatchIter::new(payload) {
        let batch = batch.map_err(|error| format!("batch read for repair: {error}"))?;
        let header = batch.header();
        if header.next_offset() <= position {
            continue;
        }
        if header.base_offset >= end {
            break;
        }
        if header.base_offset != next || header.next_offset() > end {
            return Err(format!(
                "batch [{}, {}) does not fit the repair of [{next}, {end})",
                header.base_offset,
                header.next_offset()
            ));
        }
        next = header.next_offset();
        copied.extend_from_slice(batch.as_bytes());
    }
    if copied.is_empty() {
        return Err(format!("nothing durable at {position}"));
    }
    Ok(copied.freeze())
}

/// The end the placement manager recorded for `range` (DESCRIBE_RANGE), `None` while it is
/// open there.
async fn recorded_end(io: &Io, range: &wire::Range) -> Result<Option<Offset>, SdkError> {
    let request = DescribeRangeRequest {
        stream_id: range.stream_id,
        range_index: range.index,
    };
    match io
        .pm_call::<_, DescribeRangeResponse>("describe-range", &request)
        .await?
    {
        Ok(response) => Ok(response.range.end_offset),
        Err(error) => Err(SdkError::from_stream_answer(
            "describe-range",
            range.stream_id,
            &error,
        )),
    }
}

/// Records `end` at the placement manager; the end it holds afterwards.
async fn commit(
    io: &Io,
    range: &wire::Range,
    epoch: Epoch,
    end: Offset,
) -> Result<Offset, SdkError> {
    let request = SealRangeRequest {
        stream_id: range.stream_id,
        range_index: range.index,
        epoch,
        end_offset: Some(end),
        fence_only: false,
    };
    match io
        .pm_call::<_, SealRangeResponse>("seal-range", &request)
        .await?
    {
        Ok(response) => Ok(response.end_offset.unwrap_or(end)),
        Err(error) if error.code == ErrorCode::RangeSealed => Ok(Offset(error.detail)),
        Err(error) => Err(SdkError::from_stream_answer(
            "seal-range",
            range.stream_id,
            &error,
        )),
    }
}

/// A replica's seal at the recorded end.
enum ReplicaSeal {
    Sealed,
    /// It lacks data below the end (its durable end).
    Lacks(Offset),
    Unreachable,
}

/// Seals `replicas` of `range` at `end`, recorded at the placement manager: whoever finds a
/// range sealed there but not on a replica completes the seal. A replica lacking data below
/// the end is fenced, repaired from a sealed one, then sealed. Returns the replicas that could
/// not be reached.
pub(crate) async fn seal_replicas(
    io: &Io,
    range: &wire::Range,
    epoch: Epoch,
    end: Offset,
    replicas: &[ReplicaNode],
) -> Result<Vec<NodeId>, SdkError> {
    let attempts = replicas
        .iter()
        .map(|replica| seal_replica(io, range, epoch, end, replica));
    let results = join_all(attempts.collect()).await;
    let mut sealed = Vec::new();
    let mut lacking = Vec::new();
    let mut unreachable = Vec::new();
    for (replica, result) in replicas.iter().zip(results) {
        match result? {
            ReplicaSeal::Sealed => sealed.push(replica),
            ReplicaSeal::Lacks(durable_end) => lacking.push((replica, durable_end)),
            ReplicaSeal::Unreachable => unreachable.push(replica.node_id),
        }
    }
    for (replica, durable_end) in lacking {
        log::info!(
            "range {}: node {} holds up to {durable_end}, below the end {end}: repairing it",
            key(range),
            replica.node_id
        );
        let mut ignored = BTreeSet::new();
        // Repair appends need the range fenced at this epoch.
        let fenced = fence(
            io,
            range,
            std::slice::from_ref(replica),
            epoch,
            &mut ignored,
        )
        .await?;
        let Some(answer) = fenced.first() else {
            unreachable.push(replica.node_id);
            continue;
        };
        let mut sources = sealed.clone();
        match repair_replica(
            io,
            range,
            epoch,
            end,
            replica,
            answer.durable_end,
            &mut sources,
        )
        .await
        {
            Ok(bytes) => {
                log::info!(
                    "range {}: repaired node {} with {bytes} bytes",
                    key(range),
                    replica.node_id
                );
                match seal_replica(io, range, epoch, end, replica).await? {
                    ReplicaSeal::Sealed => sealed.push(replica),
                    _ => unreachable.push(replica.node_id),
                }
            }
            Err(RepairFailure::Fatal(error)) => return Err(error),
            Err(failure) => {
                log::warn!(
                    "range {}: node {} could not be repaired: {failure:?}",
                    key(range),
                    replica.node_id
                );
                unreachable.push(replica.node_id);
            }
        }
    }
    if sealed.len() < usize::from(range.ack_count.max(1)) {
        log::warn!(
            "range {}: sealed on {} replica(s), fewer than its ack count {}; readers use the \
             others once they are back",
            key(range),
            sealed.len(),
            range.ack_count
        );
    }
    Ok(unreachable)
}

async fn seal_replica(
    io: &Io,
    range: &wire::Range,
    epoch: Epoch,
    end: Offset,
    replica: &ReplicaNode,
) -> Result<ReplicaSeal, SdkError> {
    let request = SealRangeRequest {
        stream_id: range.stream_id,
        range_index: range.index,
        epoch,
        end_offset: Some(end),
        fence_only: false,
    };
    match io
        .request::<SealRangeRequest, SealRangeResponse>(
            &replica.address,
            &request,
            Bytes::new(),
            io.config.replica_timeout,
        )
        .await
    {
        Ok(Ok(_)) => Ok(ReplicaSeal::Sealed),
        Ok(Err(error)) if error.code == ErrorCode::RangeSealed && error.detail == end.0 => {
            Ok(ReplicaSeal::Sealed)
        }
        Ok(Err(error)) if error.code == ErrorCode::OffsetGap => {
            Ok(ReplicaSeal::Lacks(Offset(error.detail)))
        }
        Ok(Err(error)) if error.code == ErrorCode::StaleEpoch => Err(SdkError::Fenced {
            epoch: Epoch(error.detail),
        }),
        Ok(Err(error)) => {
            log::warn!(
                "seal of range {} at {end} on node {}: {} {}",
                key(range),
                replica.node_id,
                error.code,
                error.message
            );
            Ok(ReplicaSeal::Unreachable)
        }
        Err(failure) => {
            log::warn!(
                "seal of range {} at {end} on node {}: {failure}",
                key(range),
                replica.node_id
            );
            Ok(ReplicaSeal::Unreachable)
        }
    }
}
