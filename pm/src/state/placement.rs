//! Where a new range goes: a pure function of what the daemon knows about the nodes (their
//! registered state from the log, liveness and load from heartbeats), so every rule is
//! unit-tested and a simulation can drive it (ARCHITECTURE.md §8).
//!
//! A node is eligible when it is alive, registered READ_WRITE, has more free disk than the
//! threshold and is not excluded by the request (CREATE_RANGE's `exclude`: nodes the writer saw
//! fail, never chosen whatever else holds). Eligible nodes are ranked by
//!
//! ```text
//!   (held the previous range?, range_count, node id)      ascending
//! ```
//!
//! and the first R are chosen: nodes that did not hold the previous range come first, so the
//! previous range's nodes are avoided while enough others are live, and among equals the least
//! loaded wins, ties broken by node id, so the choice is deterministic.

use ids::NodeId;

use crate::state::{NodeState, Rejection};

/// What the daemon knows about one node when placing a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    /// The registered state, from the log.
    pub state: NodeState,
    /// Heard from within the liveness timeout (soft state, not logged).
    pub alive: bool,
    pub free_disk_bytes: u64,
    /// Ranges the node holds now.
    pub range_count: u64,
}

/// The nodes chosen for a new range, in rank order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub nodes: Vec<NodeId>,
    /// Fewer than R nodes were eligible (but at least A).
    pub under_replicated: bool,
}

/// Chooses up to `replica_count` nodes for a new range from `candidates` (one entry per node;
/// a repeated id counts once, its first eligible entry). `previous_nodes` are the nodes of the stream's
/// previous range; `excluded` nodes are never chosen. Fewer than `ack_count` eligible nodes is
/// `NotEnoughNodes`: the writer waits.
pub fn place(
    candidates: &[Candidate],
    replica_count: u8,
    ack_count: u8,
    previous_nodes: &[NodeId],
    excluded: &[NodeId],
    min_free_disk_bytes: u64,
) -> Result<Placement, Rejection> {
    crate::state::check_counts(replica_count, ack_count).map_err(Rejection::InvalidArgument)?;
    let mut ranked: Vec<(bool, u64, NodeId)> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let eligible = candidate.alive
            && candidate.state == NodeState::ReadWrite
            && candidate.free_disk_bytes > min_free_disk_bytes
            && !excluded.contains(&candidate.node);
        let seen = ranked.iter().any(|&(_, _, node)| node == candidate.node);
        if eligible && !seen {
            let held_previous = previous_nodes.contains(&candidate.node);
            ranked.push((held_previous, candidate.range_count, candidate.node));
        }
    }
    if ranked.len() < usize::from(ack_count) {
        return Err(Rejection::NotEnoughNodes {
            live: ranked.len(),
            needed: ack_count,
        });
    }
    ranked.sort_unstable();
    let nodes: Vec<NodeId> = ranked
        .into_iter()
        .take(usize::from(replica_count))
        .map(|(_, _, node)| node)
        .collect();
    debug_assert!(nodes.len() >= usize::from(ack_count));
    debug_assert!(nodes.iter().all(|node| !excluded.contains(node)));
    Ok(Placement {
        under_replicated: nodes.len() < usize::from(replica_count),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, range_count: u64) -> Candidate {
        Candidate {
            node: NodeId(id),
            state: NodeState::ReadWrite,
            alive: true,
            free_disk_bytes: 1 << 30,
            range_count,
        }
    }

    fn ids(nodes: &[u32]) -> Vec<NodeId> {
        nodes.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn fewest_ranges_first_ties_by_node_id() {
        let candidates = [node(4, 5), node(3, 1), node(2, 1), node(1, 9)];
        let placement = place(&candidates, 3, 2, &[], &[], 0).unwrap();
        assert_eq!(placement.nodes, ids(&[2, 3, 4]));
        assert!(!placement.under_replicated);
    }

    #[test]
    fn only_live_read_write_nodes_with_free_disk_are_chosen() {
        let mut dead = node(1, 0);
        dead.alive = false;
        let mut read_only = node(2, 0);
        read_only.state = NodeState::ReadOnly;
        let mut offline = node(3, 0);
        offline.state = NodeState::Offline;
        let mut full = node(4, 0);
        full.free_disk_bytes = 100;
        let at_threshold = Candidate {
            free_disk_bytes: 1000,
            ..node(5, 0)
        };
        let candidates = [dead, read_only, offline, full, at_threshold, node(6, 50)];
        let placement = place(&candidates, 1, 1, &[], &[], 1000).unwrap();
        assert_eq!(
            placement.nodes,
            ids(&[6]),
            "free disk must be above the threshold, not equal"
        );
    }

    #[test]
    fn previous_range_nodes_are_avoided_while_enough_others_are_live() {
        let candidates = [node(1, 0), node(2, 0), node(3, 9), node(4, 9)];
        let placement = place(&candidates, 2, 1, &ids(&[1, 2]), &[], 0).unwrap();
        assert_eq!(
            placement.nodes,
            ids(&[3, 4]),
            "busier but not the previous range's"
        );
        // Only one other node: the rest comes from the previous range's, least loaded first.
        let candidates = [node(1, 5), node(2, 0), node(3, 9)];
        let placement = place(&candidates, 2, 1, &ids(&[1, 2]), &[], 0).unwrap();
        assert_eq!(placement.nodes, ids(&[3, 2]));
    }

    #[test]
    fn fewer_than_r_but_at_least_a_is_under_replicated() {
        let mut dead = node(3, 0);
        dead.alive = false;
        let placement = place(&[node(1, 0), node(2, 0), dead], 3, 2, &[], &[], 0).unwrap();
        assert_eq!(placement.nodes, ids(&[1, 2]));
        assert!(placement.under_replicated);
    }

    #[test]
    fn fewer_than_a_is_not_enough_nodes() {
        let mut dead = node(2, 0);
        dead.alive = false;
        assert_eq!(
            place(&[node(1, 0), dead], 3, 2, &[], &[], 0),
            Err(Rejection::NotEnoughNodes { live: 1, needed: 2 })
        );
        assert_eq!(
            place(&[], 1, 1, &[], &[], 0),
            Err(Rejection::NotEnoughNodes { live: 0, needed: 1 })
        );
    }

    #[test]
    fn excluded_nodes_are_never_chosen() {
        let candidates = [node(1, 0), node(2, 0), node(3, 9), node(4, 9)];
        let placement = place(&candidates, 3, 2, &[], &ids(&[1]), 0).unwrap();
        assert_eq!(
            placement.nodes,
            ids(&[2, 3, 4]),
            "the least loaded node is excluded"
        );
        assert!(!placement.under_replicated);
        // Even when only the previous range's nodes are left, excluded ones stay out.
        let placement = place(&candidates, 3, 2, &ids(&[3, 4]), &ids(&[1, 2]), 0).unwrap();
        assert_eq!(placement.nodes, ids(&[3, 4]));
        assert!(placement.under_replicated, "fewer than R left, at least A");
        assert_eq!(
            place(&candidates, 3, 2, &[], &ids(&[1, 2, 3]), 0),
            Err(Rejection::NotEnoughNodes { live: 1, needed: 2 }),
            "fewer than A left"
        );
        // Excluding a node that is not a candidate (dead, unknown) changes nothing.
        let placement = place(&candidates, 2, 1, &[], &ids(&[9]), 0).unwrap();
        assert_eq!(placement.nodes, ids(&[1, 2]));
    }

    #[test]
    fn a_repeated_candidate_counts_once() {
        let placement = place(&[node(1, 0), node(1, 0)], 2, 1, &[], &[], 0).unwrap();
        assert_eq!(placement.nodes, ids(&[1]));
        assert!(placement.under_replicated);
    }

    #[test]
    fn invalid_counts_are_refused() {
        assert!(matches!(
            place(&[node(1, 0)], 1, 2, &[], &[], 0),
            Err(Rejection::InvalidArgument(_))
        ));
        assert!(matches!(
            place(&[node(1, 0)], 17, 1, &[], &[], 0),
            Err(Rejection::InvalidArgument(_))
        ));
    }

    proptest::proptest! {
        /// Whatever the nodes and the exclude list: no excluded, ineligible or repeated node is
        /// chosen; R are chosen when R are eligible, all of them when at least A are, and
        /// fewer than A is `NotEnoughNodes`.
        #[test]
        fn placement_never_chooses_an_excluded_node(
            nodes in proptest::collection::vec((1u32..12, 0u64..4, proptest::bool::ANY, 0u8..3), 0..12),
            excluded in proptest::collection::vec(1u32..12, 0..16),
            previous in proptest::collection::vec(1u32..12, 0..4),
            replica_count in 1u8..5,
            ack_offset in 0u8..5,
        ) {
            let ack_count = replica_count.saturating_sub(ack_offset).max(1);
            let candidates: Vec<Candidate> = nodes
                .iter()
                .map(|&(id, range_count, alive, state)| Candidate {
                    state: [NodeState::ReadWrite, NodeState::ReadOnly, NodeState::ReadWrite][usize::from(state)],
                    alive,
                    ..node(id, range_count)
                })
                .collect();
            let excluded = ids(&excluded);
            let mut eligible: Vec<NodeId> = candidates
                .iter()
                .filter(|c| c.alive && c.state == NodeState::ReadWrite && !excluded.contains(&c.node))
                .map(|c| c.node)
                .collect();
            // A repeated id counts once.
            eligible.sort_unstable();
            eligible.dedup();
            match place(&candidates, replica_count, ack_count, &ids(&previous), &excluded, 0) {
                Ok(placement) => {
                    proptest::prop_assert!(placement.nodes.iter().all(|n| !excluded.contains(n)));
                    proptest::prop_assert!(placement.nodes.iter().all(|n| eligible.contains(n)));
                    let mut unique = placement.nodes.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    proptest::prop_assert_eq!(unique.len(), placement.nodes.len());
                    proptest::prop_assert_eq!(
                        placement.nodes.len(),
                        eligible.len().min(usize::from(replica_count))
                    );
                    proptest::prop_assert_eq!(
                        placement.under_replicated,
                        placement.nodes.len() < usize::from(replica_count)
                    );
                }
                Err(rejection) => {
                    proptest::prop_assert_eq!(
                        rejection,
                        Rejection::NotEnoughNodes { live: eligible.len(), needed: ack_count }
                    );
                }
            }
        }
    }
}
