//! The placement manager's Prometheus metrics: requests by operation, commands logged, the log's
//! syncs, and gauges of the state (streams, ranges, under-replicated ranges, nodes by state and
//! liveness). Counters are written by the PM's one thread and read by the metrics endpoint on
//! the same thread, so plain cells would do; atomics keep the type shareable.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use wire::Opcode;

/// Counters of the placement manager.
#[derive(Debug, Default)]
pub struct PmMetrics {
    /// Commands appended to the log.
    pub commands: AtomicU64,
    /// Commands the state machine refused.
    pub rejections: AtomicU64,
    /// Requests to data nodes that failed (no answer in time, or refused).
    pub node_request_failures: AtomicU64,
    /// Replicas removed from data nodes by reconciliation.
    pub orphans_removed: AtomicU64,
    /// Retention trims logged.
    pub retention_trims: AtomicU64,
    /// Requests, errors and summed latency by operation.
    requests: Mutex<BTreeMap<&'static str, RequestCounts>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct RequestCounts {
    requests: u64,
    errors: u64,
    seconds: f64,
}

/// What the metrics page shows of the state and the log, sampled when it is rendered.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub revision: u64,
    pub streams: u64,
    pub ranges: u64,
    pub ranges_under_replicated: u64,
    pub nodes_read_write: u64,
    pub nodes_read_only: u64,
    pub nodes_offline: u64,
    pub nodes_alive: u64,
    pub log_durable_index: u64,
    pub log_data_syncs: u64,
}

impl PmMetrics {
    /// Adds `amount` to `counter`.
    pub fn add(&self, counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub fn count(&self, operation: Opcode, error: bool, elapsed: Duration) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let counts = requests.entry(operation.name()).or_default();
        counts.requests += 1;
        counts.errors += u64::from(error);
        counts.seconds += elapsed.as_secs_f64();
    }

    /// The Prometheus text page.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        type Family = (&'static str, &'static str, fn(&RequestCounts) -> f64);
        let families: [Family; 3] = [
            (
                "es_pm_requests_total",
                "Requests answered, by operation.",
                |counts| counts.requests as f64,
            ),
            (
                "es_pm_request_errors_total",
                "Requests answered with an error, by operation.",
                |counts| counts.errors as f64,
            ),
            (
                "es_pm_request_seconds_total",
                "Time from decoding a request to its answer, summed, by operation.",
                |counts| counts.seconds,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (operation, counts) in &requests {
                let _ = writeln!(out, "{name}{{operation=\"{operation}\"}} {}", value(counts));
            }
        }
        let counters = [
            ("es_pm_commands_total", "Commands logged.", &self.commands),
            (
                "es_pm_rejections_total",
                "Commands the state machine refused.",
                &self.rejections,
            ),
            (
                "es_pm_node_request_failures_total",
                "Requests to data nodes that failed or timed out.",
                &self.node_request_failures,
            ),
            (
                "es_pm_orphan_replicas_removed_total",
                "Replicas left by creates that never committed, removed from data nodes.",
                &self.orphans_removed,
            ),
            (
                "es_pm_retention_trims_total",
                "Trims the placement manager logged to enforce retention.",
                &self.retention_trims,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let plain = [
            (
                "es_pm_revision",
                "Commands applied to the state.",
                gauges.revision,
            ),
            (
                "es_pm_streams",
                "Streams, deleted ones included.",
                gauges.streams,
            ),
            ("es_pm_ranges", "Ranges of all streams.", gauges.ranges),
            (
                "es_pm_ranges_under_replicated",
                "Ranges created on fewer nodes than their replica count.",
                gauges.ranges_under_replicated,
            ),
            (
                "es_pm_nodes_alive",
                "Registered data nodes heard from within the node timeout.",
                gauges.nodes_alive,
            ),
            (
                "es_pm_log_durable_index",
                "Index of the last durable command.",
                gauges.log_durable_index,
            ),
            (
                "es_pm_log_data_syncs",
                "Data syncs of the command log.",
                gauges.log_data_syncs,
            ),
        ];
        for (name, help, value) in plain {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let name = "es_pm_nodes";
        let _ = writeln!(
            out,
            "# HELP {name} Registered data nodes by state.\n# TYPE {name} gauge"
        );
        for (state, value) in [
            ("read_write", gauges.nodes_read_write),
            ("read_only", gauges.nodes_read_only),
            ("offline", gauges.nodes_offline),
        ] {
            let _ = writeln!(out, "{name}{{state=\"{state}\"}} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_operation_and_gauges_rendered() {
        let metrics = PmMetrics::default();
        metrics.count(Opcode::CreateStream, false, Duration::from_millis(2));
        metrics.count(Opcode::CreateStream, true, Duration::from_millis(1));
        metrics.add(&metrics.commands, 1);
        let page = metrics.render(&Gauges {
            ranges_under_replicated: 3,
            nodes_offline: 1,
            ..Gauges::default()
        });
        assert!(
            page.contains("es_pm_requests_total{operation=\"CREATE_STREAM\"} 2"),
            "{page}"
        );
        assert!(page.contains("es_pm_request_errors_total{operation=\"CREATE_STREAM\"} 1"));
        assert!(page.contains("es_pm_commands_total 1"));
        assert!(page.contains("es_pm_ranges_under_replicated 3"));
        assert!(page.contains("es_pm_nodes{state=\"offline\"} 1"));
    }
}
