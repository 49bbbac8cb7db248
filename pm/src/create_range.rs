//! CREATE_RANGE at the placement manager: check, place, create the replicas on the chosen data
//! nodes (replacing nodes that fail), and only then commit the range.
//!
//! The request's `exclude` list (nodes the writer saw fail) keeps those nodes out of the
//! placement and out of the replacements; it is not forwarded to the data nodes. An identical
//! repeat (same index, epoch and start) is answered with the range as committed, whatever its
//! `exclude` says: it is the answer the first request lost.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Instant;

use ids::{NodeId, RangeKey};
use serve::Reply;
use wire::msg::{CreateRangeRequest, CreateRangeResponse, Response};
use wire::ErrorCode;

use crate::service::{now_ms, rejection_reply, unexpected, Pm};
use crate::state::placement::{self, Candidate};
use crate::state::{Command, DroppedRange, Outcome, Rejection, StreamRecord};

impl Pm {
    /// CREATE_RANGE at the placement manager: check, place, create the replicas on the chosen
    /// data nodes, and only then commit the range. One create per stream at a time.
    pub(crate) async fn create_range(self: &Rc<Self>, request: CreateRangeRequest) -> Reply {
        let stream = request.stream_id;
        while self.creating.borrow().contains(&stream) {
            self.create_done.notified().await;
        }
        self.creating.borrow_mut().insert(stream);
        let reply = self.place_and_create(request).await;
        self.creating.borrow_mut().remove(&stream);
        self.create_done.notify();
        reply
    }

    async fn place_and_create(self: &Rc<Self>, request: CreateRangeRequest) -> Reply {
        let key = RangeKey::new(request.stream_id, request.range_index);
        if let Err(reply) = self.read_barrier().await {
            return reply;
        }
        // An identical repeat (a writer retrying after a lost answer) gets the committed range.
        let (stream, previous_nodes) = {
            let state = self.state.borrow();
            if let Some(existing) = state.range(key) {
                if existing.epoch == request.epoch && existing.start == request.start_offset {
                    return Reply::new(Response::CreateRange(CreateRangeResponse {
                        range: self.range_record(existing),
                    }));
                }
            }
            let Some(stream) = state.stream(request.stream_id).cloned() else {
                return rejection_reply(&Rejection::StreamNotFound {
                    stream: request.stream_id,
                });
            };
            let previous = request
                .range_index
                .0
                .checked_sub(1)
                .and_then(|index| state.range(RangeKey::new(stream.id, ids::RangeIndex(index))))
                .map(|range| range.nodes.clone())
                .unwrap_or_default();
            (stream, previous)
        };
        // Check everything the commit will check, with placeholder nodes, before asking any
        // data node for anything: a stale writer must not leave replicas behind.
        if let Err(rejection) = self.check_create(&request, &stream) {
            return rejection_reply(&rejection);
        }
        let now = Instant::now();
        let mut candidates = self.candidates(now);
        let placement = match placement::place(
            &candidates,
            stream.replica_count,
            stream.ack_count,
            &previous_nodes,
            &request.exclude,
            self.config.cluster.min_free_disk_bytes,
        ) {
            Ok(placement) => placement,
            Err(rejection) => return rejection_reply(&rejection),
        };
        let mut created: Vec<NodeId> = Vec::new();
        let mut tried: BTreeSet<NodeId> = BTreeSet::new();
        let mut wanted = placement.nodes.clone();
        loop {
            let batch: Vec<NodeId> = wanted
                .drain(..)
                .filter(|node| tried.insert(*node))
                .collect();
            if batch.is_empty() {
                break;
            }
            let attempts = batch.iter().map(|node| {
                let node = *node;
                let pm = Rc::clone(self);
                // The exclude list is the PM's business: data nodes are not sent it.
                let request = CreateRangeRequest {
                    replica_count_target: stream.replica_count,
                    ack_count: stream.ack_count,
                    replicas: Vec::new(),
                    exclude: Vec::new(),
                    ..request.clone()
                };
                async move {
                    let Some(address) = pm.address_of(node) else {
                        return (node, Err("not registered".to_string()));
                    };
                    pm.uncommitted.borrow_mut().insert((node, key));
                    let result = pm.data_nodes.create_range(&address, &request).await;
                    (
                        node,
                        result.map(|_| ()).map_err(|failure| failure.to_string()),
                    )
                }
            });
            for (node, result) in join_all(attempts.collect()).await {
                match result {
                    Ok(()) => created.push(node),
                    Err(reason) => {
                        log::warn!("creating range {key} on node {node} failed: {reason}");
                        self.metrics.add(&self.metrics.node_request_failures, 1);
                    }
                }
            }
            let missing = usize::from(stream.replica_count).saturating_sub(created.len());
            if missing == 0 {
                break;
            }
            // Replace the nodes that failed with the next eligible ones not tried yet.
            candidates.retain(|candidate| !tried.contains(&candidate.node));
            let ranked = placement::place(
                &candidates,
                missing.min(usize::from(crate::state::MAX_REPLICA_COUNT)) as u8,
                1,
                &previous_nodes,
                &request.exclude,
                self.config.cluster.min_free_disk_bytes,
            );
            match ranked {
                Ok(more) => wanted = more.nodes,
                Err(_) => break,
            }
        }
        if created.len() < usize::from(stream.ack_count) {
            self.forget_uncommitted(key, &tried);
            self.spawn_deletes(vec![DroppedRange {
                key,
                nodes: created.clone(),
            }]);
            return Reply::error_with_detail(
                ErrorCode::NoAvailableNodes,
                created.len() as u64,
                format!(
                    "range {key} could be created on {} node(s), fewer than the ack count {}; \
                     retry once more data nodes are live",
                    created.len(),
                    stream.ack_count
                ),
            );
        }
        let command = Command::CreateRange {
            stream: request.stream_id,
            index: request.range_index,
            epoch: request.epoch,
            start: request.start_offset,
            nodes: created.clone(),
            now_ms: now_ms(),
        };
        let result = self.execute(command).await;
        self.forget_uncommitted(key, &tried);
        match result {
            Ok(Outcome::RangeCreated(range)) => {
                if range.under_replicated {
                    log::warn!(
                        "range {key} created under-replicated on {} of {} nodes",
                        range.nodes.len(),
                        range.replica_count
                    );
                }
                Reply::new(Response::CreateRange(CreateRangeResponse {
                    range: self.range_record(&range),
                }))
            }
            Ok(other) => unexpected(&other),
            Err(reply) => {
                // Refused at commit (the writer was fenced meanwhile): the replicas go.
                self.spawn_deletes(vec![DroppedRange {
                    key,
                    nodes: created,
                }]);
                reply
            }
        }
    }

    fn forget_uncommitted(&self, key: RangeKey, nodes: &BTreeSet<NodeId>) {
        let mut uncommitted = self.uncommitted.borrow_mut();
        for node in nodes {
            uncommitted.remove(&(*node, key));
        }
    }

    /// The rules CREATE_RANGE's commit will check, checked on a scratch copy of the stream's
    /// part of the state with the stream's registered nodes standing in for the placement.
    fn check_create(
        &self,
        request: &CreateRangeRequest,
        stream: &StreamRecord,
    ) -> Result<(), Rejection> {
        let state = self.state.borrow();
        let stand_ins: Vec<NodeId> = state
            .nodes()
            .take(usize::from(stream.replica_count))
            .map(|node| node.id)
            .collect();
        let mut scratch = state.scratch_for(stream.id, request.range_index);
        let command = Command::CreateRange {
            stream: request.stream_id,
            index: request.range_index,
            epoch: request.epoch,
            start: request.start_offset,
            nodes: stand_ins,
            now_ms: 0,
        };
        match scratch.apply(&command) {
            Ok(_) => Ok(()),
            // Placement decides about nodes; everything else is final.
            Err(Rejection::NotEnoughNodes { .. }) | Err(Rejection::NodeNotFound { .. }) => Ok(()),
            Err(rejection) => Err(rejection),
        }
    }

    /// Every registered node as a placement candidate, with what heartbeats said.
    pub(crate) fn candidates(&self, now: Instant) -> Vec<Candidate> {
        let state = self.state.borrow();
        let liveness = self.liveness.borrow();
        state
            .nodes()
            .map(|node| {
                let live = liveness.get(&node.id);
                Candidate {
                    node: node.id,
                    state: node.state,
                    alive: self.is_alive(node.id, now),
                    free_disk_bytes: live.map_or(0, |live| live.disk_free_bytes),
                    range_count: live.map_or(0, |live| u64::from(live.range_count)),
                }
            })
            .collect()
    }
}

/// Runs every future to completion on this thread; their outputs in order.
async fn join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let handles: Vec<_> = futures.into_iter().map(runtime::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await);
    }
    outputs
}
