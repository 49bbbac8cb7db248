//! Choosing the end of a range being sealed (pure).
//!
//! A live writer knows what it acknowledged: the end is its acknowledged prefix. A writer that
//! recovers the range of one that died knows only what the replicas answer to the fence. Every
//! acknowledged batch is durable on at least A of the range's n replicas; with k answers, at
//! most n − k replicas are missing, so an acknowledged offset lies below the durable end of at
//! least A − (n − k) answering replicas. Sorted ascending, the durable end at index
//! k − (A − (n − k)) = n − A (0-based) is therefore at or above every acknowledged offset, and
//! it exists once k ≥ n − A + 1. That is the end a recovery takes: with all n answering it is
//! what A replicas hold.

use wire::Offset;

/// The end a recovery takes from the durable ends the fence answered, for a range of
/// `replica_count` replicas acknowledged under `ack_count`; `None` while fewer than
/// `replica_count - ack_count + 1` answered (fence again).
pub(crate) fn recovery_end(
    durable_ends: &[Offset],
    replica_count: usize,
    ack_count: usize,
) -> Option<Offset> {
    let replica_count = replica_count.max(1);
    // A = 0 (unknown) is treated as 1: every answer is then needed and the largest end taken.
    let ack_count = ack_count.clamp(1, replica_count);
    let index = replica_count - ack_count;
    if durable_ends.len() < index + 1 {
        return None;
    }
    let mut sorted = durable_ends.to_vec();
    sorted.sort_unstable();
    Some(sorted[index])
}

/// Answers a recovery needs before it can choose.
pub(crate) fn answers_needed(replica_count: usize, ack_count: usize) -> usize {
    let replica_count = replica_count.max(1);
    replica_count - ack_count.clamp(1, replica_count) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(values: &[u64]) -> Vec<Offset> {
        values.iter().copied().map(Offset).collect()
    }

    #[test]
    fn all_answers_take_what_a_replicas_hold() {
        // R=3, A=2: the second largest (index 1 ascending) is held by 2 replicas.
        assert_eq!(
            recovery_end(&offsets(&[10, 30, 20]), 3, 2),
            Some(Offset(20))
        );
        // A=3: everything acknowledged is on all three, the smallest suffices.
        assert_eq!(
            recovery_end(&offsets(&[10, 30, 20]), 3, 3),
            Some(Offset(10))
        );
        // A=1: a batch acknowledged by one replica may be on the largest only.
        assert_eq!(
            recovery_end(&offsets(&[10, 30, 20]), 3, 1),
            Some(Offset(30))
        );
    }

    #[test]
    fn too_few_answers_cannot_choose() {
        // R=3, A=2 needs 2 answers; A=1 needs all 3.
        assert_eq!(recovery_end(&offsets(&[10]), 3, 2), None);
        assert_eq!(recovery_end(&offsets(&[10, 20]), 3, 1), None);
        assert_eq!(answers_needed(3, 2), 2);
        assert_eq!(answers_needed(3, 1), 3);
        assert_eq!(answers_needed(5, 3), 3);
    }

    #[test]
    fn with_missing_answers_the_end_still_covers_every_acknowledged_offset() {
        // R=3, A=2, replica 2 missing. Whatever it held, an acknowledged offset x is on two
        // replicas, so on at least one of the two that answered: x <= max of the answers,
        // which is index 1 of two sorted answers.
        assert_eq!(recovery_end(&offsets(&[25, 12]), 3, 2), Some(Offset(25)));
        // Exhaustively: every assignment of durable ends in 0..=4 to 3 replicas, every
        // acknowledged prefix consistent with A=2, every missing replica.
        for a in 0..=4u64 {
            for b in 0..=4u64 {
                for c in 0..=4u64 {
                    let ends = [a, b, c];
                    let mut sorted = ends;
                    sorted.sort_unstable();
                    // The largest prefix two replicas hold: what may have been acknowledged.
                    let acknowledged = sorted[1];
                    for missing in 0..3 {
                        let answered: Vec<Offset> = (0..3)
                            .filter(|replica| *replica != missing)
                            .map(|replica| Offset(ends[replica]))
                            .collect();
                        let end = recovery_end(&answered, 3, 2).expect("two answers suffice");
                        assert!(end.0 >= acknowledged, "{ends:?} missing {missing}: {end}");
                        // And some answering replica holds all of it, to repair from.
                        assert!(answered.iter().any(|durable| *durable >= end));
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_ack_count_is_the_safe_one() {
        assert_eq!(recovery_end(&offsets(&[5, 9]), 2, 0), Some(Offset(9)));
        assert_eq!(recovery_end(&offsets(&[5]), 2, 0), None);
    }
}
