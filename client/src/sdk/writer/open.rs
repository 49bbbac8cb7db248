//! Opening a stream for writing: raise the epoch, finish whatever the previous writer left,
//! and create the range to write to.
//!
//! 1. UPDATE_STREAM with the epoch bit: one above the stream's epoch (on `STALE_EPOCH`, one
//!    above the epoch the answer names; bounded). From here every older writer is fenced at
//!    the placement manager, and at each replica once it is fenced or sealed with this epoch.
//! 2. The stream's last range, if any:
//!    * open: recover it with seal-with-repair ([`super::seal`], [`EndRule::Recover`]);
//!    * sealed at the placement manager: complete the seal on any replica that missed it.
//! 3. CREATE_RANGE at the placement manager: the next index, starting at the last range's
//!    end, with the new epoch, away from replicas that did not answer.

use std::time::Instant;

use wire::msg::{
    CreateRangeRequest, CreateRangeResponse, ErrorResponse, UpdateStreamRequest,
    UpdateStreamResponse,
};
use wire::types::MAX_REPLICAS;
use wire::{Epoch, ErrorCode, NodeId, Offset, RangeIndex, StreamId};

use super::seal::{seal_replicas, seal_with_repair, EndRule};
use crate::sdk::client::{describe_stream, list_ranges};
use crate::sdk::error::SdkError;
use crate::sdk::io::Io;

/// Attempts at raising the epoch while other writers raise it too.
const MAX_EPOCH_ATTEMPTS: usize = 16;

pub(crate) struct Opened {
    pub(crate) epoch: Epoch,
    pub(crate) range: wire::Range,
}

pub(crate) async fn open(io: &Io, stream: StreamId) -> Result<Opened, SdkError> {
    let record = describe_stream(io, stream).await?;
    if record.deleted {
        return Err(SdkError::StreamDeleted { stream });
    }
    let epoch = raise_epoch(io, stream, record.epoch).await?;
    log::info!("stream {stream} opened for writing at epoch {epoch}");
    let ranges = list_ranges(io, stream).await?;
    let (index, start, exclude) = match ranges.last() {
        None => (RangeIndex(0), record.start_offset, Vec::new()),
        Some(last) => {
            let next = last.index.next().ok_or_else(|| {
                SdkError::InvalidArgument(format!("stream {stream} has used every range index"))
            })?;
            match last.end_offset {
                None => {
                    let sealed = seal_with_repair(
                        io,
                        last,
                        epoch,
                        EndRule::Recover,
                        "recovering the range the previous writer left open",
                        &[],
                    )
                    .await?;
                    (next, sealed.end, sealed.unreachable)
                }
                Some(end) => {
                    let unreachable = seal_replicas(io, last, epoch, end, &last.replicas).await?;
                    (next, end, unreachable)
                }
            }
        }
    };
    let range = match create_range(io, stream, epoch, index, start, exclude.clone()).await {
        // No range listed, yet the stream had some: all were trimmed away. The placement
        // manager names the next index in the answer's detail (protocol §5.9).
        Err(SdkError::Server {
            code: ErrorCode::InvalidArgument,
            detail,
            ..
        }) if ranges.is_empty() && detail > u64::from(index.0) && detail <= u64::from(u32::MAX) => {
            let next = RangeIndex(detail as u32);
            log::info!("stream {stream}: every range was trimmed away; the next one is {next}");
            create_range(io, stream, epoch, next, start, exclude).await?
        }
        result => result?,
    };
    Ok(Opened { epoch, range })
}

/// Raises the stream's epoch strictly above `current`; the epoch it now has.
async fn raise_epoch(io: &Io, stream: StreamId, current: Epoch) -> Result<Epoch, SdkError> {
    let mut proposed = current;
    for _ in 0..MAX_EPOCH_ATTEMPTS {
        proposed = proposed
            .0
            .checked_add(1)
            .filter(|epoch| *epoch < u64::MAX)
            .map(Epoch)
            .ok_or_else(|| {
                SdkError::InvalidArgument(format!("stream {stream} is at its last epoch"))
            })?;
        let request = UpdateStreamRequest {
            stream_id: stream,
            replica_count: None,
            ack_count: None,
            retention_ms: None,
            retention_bytes: None,
            epoch: Some(proposed),
        };
        match io
            .pm_call::<_, UpdateStreamResponse>("update-stream", &request)
            .await?
        {
            Ok(response) => return Ok(response.stream.epoch),
            Err(error) if error.code == ErrorCode::StaleEpoch => {
                // Another writer got there first (or an earlier try of ours was applied).
                proposed = Epoch(error.detail.max(proposed.0));
            }
            Err(error) => {
                return Err(SdkError::from_stream_answer(
                    "update-stream",
                    stream,
                    &error,
                ))
            }
        }
    }
    Err(SdkError::Timeout {
        operation: format!(
            "raising the epoch of stream {stream} ({MAX_EPOCH_ATTEMPTS} attempts, other writers \
             kept raising it)"
        ),
        waited: std::time::Duration::ZERO,
    })
}

/// CREATE_RANGE at the placement manager, which places it away from `exclude`; retried within
/// `retry_for` while it has too few live nodes, without `exclude` after the first
/// `NO_AVAILABLE_NODES` (the excluded nodes may have come back).
pub(crate) async fn create_range(
    io: &Io,
    stream: StreamId,
    epoch: Epoch,
    index: RangeIndex,
    start: Offset,
    mut exclude: Vec<NodeId>,
) -> Result<wire::Range, SdkError> {
    exclude.sort_unstable();
    exclude.dedup();
    exclude.truncate(MAX_REPLICAS);
    let request = CreateRangeRequest {
        stream_id: stream,
        range_index: index,
        epoch,
        start_offset: start,
        replica_count_target: 0,
        ack_count: 0,
        replicas: Vec::new(),
        exclude,
    };
    let started = Instant::now();
    // NO_AVAILABLE_NODES with nodes excluded: the excluded ones may be back (a blip); from
    // then on the placement manager's view of which nodes are live decides alone.
    let range = match io
        .pm_call_adjusting::<_, CreateRangeResponse>(
            "create-range",
            &request,
            without_exclusion_when_no_nodes,
        )
        .await?
    {
        Ok(response) => response.range,
        Err(error) if error.code == ErrorCode::NoAvailableNodes => {
            return Err(SdkError::NoAvailableNodes {
                stream,
                live: error.detail,
                waited: started.elapsed(),
            })
        }
        // Kept whole (detail included): the caller may act on it.
        Err(error) if error.code == ErrorCode::InvalidArgument && error.detail != 0 => {
            return Err(SdkError::server("create-range", &error))
        }
        Err(error) => return Err(SdkError::from_stream_answer("create-range", stream, &error)),
    };
    let ack_count = usize::from(range.ack_count.max(1));
    if range.replicas.is_empty()
        || range.replicas.len() > MAX_REPLICAS
        || ack_count > range.replicas.len()
    {
        return Err(SdkError::Protocol(format!(
            "range {} was created with {} replica(s) and ack count {}",
            index,
            range.replicas.len(),
            range.ack_count
        )));
    }
    let nodes: Vec<String> = range
        .replicas
        .iter()
        .map(|replica| format!("{}@{}", replica.node_id, replica.address))
        .collect();
    log::info!(
        "stream {stream}: range {index} from {start} at epoch {epoch} on {}{}",
        nodes.join(", "),
        if range.under_replicated {
            " (under-replicated)"
        } else {
            ""
        }
    );
    Ok(range)
}

/// What CREATE_RANGE sends after `error`: after a `NO_AVAILABLE_NODES` answer, the request
/// without its exclusion list (`None`: the same request).
fn without_exclusion_when_no_nodes(
    request: &CreateRangeRequest,
    error: &ErrorResponse,
) -> Option<CreateRangeRequest> {
    if error.code != ErrorCode::NoAvailableNodes || request.exclude.is_empty() {
        return None;
    }
    log::info!(
        "stream {}: no range can be placed away from node(s) {:?}; asking again without \
         excluding them",
        request.stream_id,
        request.exclude
    );
    Some(CreateRangeRequest {
        exclude: Vec::new(),
        ..request.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_available_nodes_drops_the_exclusion_list_before_the_retry() {
        let request = CreateRangeRequest {
            stream_id: StreamId(1),
            range_index: RangeIndex(2),
            epoch: Epoch(3),
            start_offset: Offset(4),
            replica_count_target: 0,
            ack_count: 0,
            replicas: Vec::new(),
            exclude: vec![NodeId(1), NodeId(2)],
        };
        let answer = |code| ErrorResponse {
            code,
            detail: 1,
            message: String::new(),
        };
        assert!(without_exclusion_when_no_nodes(&request, &answer(ErrorCode::NotLeader)).is_none());
        let retried =
            without_exclusion_when_no_nodes(&request, &answer(ErrorCode::NoAvailableNodes))
                .expect("retried without the exclusion");
        assert!(retried.exclude.is_empty());
        assert_eq!(retried.start_offset, request.start_offset);
    }
}
