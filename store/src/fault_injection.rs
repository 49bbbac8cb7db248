//! Faults the store's own tests inject, compiled only with the `fault-injection` feature (the
//! store's integration tests enable it through a dev-dependency on the store itself). A
//! production build has neither the settings nor the code that acts on them.

/// What to break, set through [`crate::StoreConfig::faults`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultInjection {
    /// (n, result) makes the n-th group write (from 0) complete with `result` (a negative
    /// errno, or a short byte count) after the real write ran.
    pub group_write_results: Vec<(u64, i32)>,
    /// Use the polled ring even where the device reports no poll queues. The kernel then
    /// completes the I/O by interrupt and the IO thread still reaps it by polling: for testing
    /// the polled path on machines without poll queues.
    pub iopoll_without_poll_queues: bool,
}

impl FaultInjection {
    /// The result group write `sequence`'s chunk `chunk` completes with: the injected one for
    /// the group's first chunk, if any, else what the kernel said.
    pub(crate) fn group_write_result(&self, sequence: u64, chunk: usize, result: i32) -> i32 {
        if chunk != 0 {
            return result;
        }
        self.group_write_results
            .iter()
            .find(|(group, _)| *group == sequence)
            .map_or(result, |(_, injected)| *injected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_groups_first_chunk_is_replaced() {
        let faults = FaultInjection {
            group_write_results: vec![(3, -libc::EIO), (6, 512)],
            iopoll_without_poll_queues: false,
        };
        assert_eq!(faults.group_write_result(3, 0, 4096), -libc::EIO);
        assert_eq!(faults.group_write_result(6, 0, 4096), 512);
        assert_eq!(faults.group_write_result(3, 1, 4096), 4096);
        assert_eq!(faults.group_write_result(4, 0, 4096), 4096);
    }
}
