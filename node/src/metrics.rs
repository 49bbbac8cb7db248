//! Counters and latency histograms, rendered in Prometheus text format.
//!
//! Each worker owns one [`WorkerMetrics`] and is its only writer: updates are a relaxed load and
//! store of an atomic (no lock, no read-modify-write bus lock). The metrics endpoint reads every
//! worker's values and sums them when scraped, so a scrape may see one worker a few updates
//! behind another, which is fine for monitoring. Histograms use fixed log-spaced buckets (powers
//! of two in microseconds, 1 us to ~33 s) so recording is one index computation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serve::ConnectionCounters;

/// Request kinds counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Ping,
    Heartbeat,
    CreateRange,
    Append,
    Fetch,
    SealRange,
    DescribeRange,
    ListRanges,
    TrimRange,
    DeleteRange,
    /// Anything else, including unknown opcodes.
    Other,
}

impl Operation {
    pub const ALL: [Operation; 11] = [
        Operation::Ping,
        Operation::Heartbeat,
        Operation::CreateRange,
        Operation::Append,
        Operation::Fetch,
        Operation::SealRange,
        Operation::DescribeRange,
        Operation::ListRanges,
        Operation::TrimRange,
        Operation::DeleteRange,
        Operation::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Ping => "ping",
            Operation::Heartbeat => "heartbeat",
            Operation::CreateRange => "create_range",
            Operation::Append => "append",
            Operation::Fetch => "fetch",
            Operation::SealRange => "seal_range",
            Operation::DescribeRange => "describe_range",
            Operation::ListRanges => "list_ranges",
            Operation::TrimRange => "trim_range",
            Operation::DeleteRange => "delete_range",
            Operation::Other => "other",
        }
    }
}

/// Latency histograms: one per operation stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Frame decoded until the owning worker starts the append (includes mailbox hops).
    AppendQueue,
    /// Handed to the store until the store reports it durable: its group written and, under
    /// `sync: always`, synced. The split between write and sync time is in the store's
    /// counters (`es_wal_group_write_seconds_total`, `es_wal_data_sync_seconds_total`).
    AppendWrite,
    /// Durable until the response is queued on the connection.
    AppendReply,
    /// Frame decoded until the response is queued.
    AppendTotal,
    FetchQueue,
    /// Time a long-poll fetch waited for data.
    FetchWait,
    /// Reading the batches from the store.
    FetchRead,
    FetchTotal,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::AppendQueue,
        Stage::AppendWrite,
        Stage::AppendReply,
        Stage::AppendTotal,
        Stage::FetchQueue,
        Stage::FetchWait,
        Stage::FetchRead,
        Stage::FetchTotal,
    ];

    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Stage::AppendQueue => ("append", "queue"),
            Stage::AppendWrite => ("append", "write"),
            Stage::AppendReply => ("append", "reply"),
            Stage::AppendTotal => ("append", "total"),
            Stage::FetchQueue => ("fetch", "queue"),
            Stage::FetchWait => ("fetch", "wait"),
            Stage::FetchRead => ("fetch", "read"),
            Stage::FetchTotal => ("fetch", "total"),
        }
    }
}

/// Buckets: upper bounds 2^0 .. 2^(BUCKETS-2) microseconds, then +Inf.
const BUCKETS: usize = 27;

/// One writer increments; readers sum.
fn bump(counter: &AtomicU64, amount: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(amount),
        Ordering::Relaxed,
    );
}

/// A latency histogram with fixed power-of-two microsecond buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation. Only the owning worker may call this.
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        bump(&self.buckets[bucket_of(micros)], 1);
        bump(&self.sum_us, micros);
        bump(&self.count, 1);
    }
}

/// Index of the first bucket whose upper bound (2^i us) holds `micros`.
fn bucket_of(micros: u64) -> usize {
    if micros <= 1 {
        return 0;
    }
    let index = (64 - (micros - 1).leading_zeros()) as usize;
    index.min(BUCKETS - 1)
}

/// Everything one worker counts. Gauges are set by the worker, counters only grow.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    requests: [AtomicU64; Operation::ALL.len()],
    errors: [AtomicU64; Operation::ALL.len()],
    latency: [Histogram; Stage::ALL.len()],
    /// Bytes in and out and bad frames, counted by the worker's connections.
    pub connection: ConnectionCounters,
    pub connections_accepted: AtomicU64,
    pub connections_closed: AtomicU64,
    pub connections_rejected: AtomicU64,
    /// Requests forwarded to another worker's mailbox.
    pub forwarded: AtomicU64,
    /// Fence-only SEAL_RANGEs answered (the range fenced, or found sealed).
    pub fences: AtomicU64,
    /// Record batches and payload bytes written by repair APPENDs.
    pub repair_append_batches: AtomicU64,
    pub repair_append_bytes: AtomicU64,
    /// FETCHes with `SEALED` answered `OFFSET_NOT_HELD`.
    pub offset_not_held: AtomicU64,
    /// Gauge: messages waiting in this worker's inbound mailboxes at the last poll.
    pub mailbox_depth: AtomicU64,
    /// Gauge: ranges owned by this worker.
    pub ranges: AtomicU64,
    /// Gauge: long-poll fetches waiting on this worker.
    pub fetch_waiters: AtomicU64,
}

impl WorkerMetrics {
    pub fn request(&self, operation: Operation) {
        bump(&self.requests[operation as usize], 1);
    }
    pub fn error(&self, operation: Operation) {
        bump(&self.errors[operation as usize], 1);
    }
    pub fn latency(&self, stage: Stage, elapsed: Duration) {
        self.latency[stage as usize].record(elapsed);
    }
    pub fn add(&self, counter: &AtomicU64, amount: u64) {
        bump(counter, amount);
    }
    pub fn set(&self, gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }
}

/// Chooses one counter of a worker.
type Pick = fn(&WorkerMetrics) -> &AtomicU64;

/// Values that live outside the workers (the store), sampled at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreGauges {
    pub wal_bytes_used: u64,
    pub wal_bytes_capacity: u64,
    pub cache_bytes_used: u64,
    pub cache_bytes_capacity: u64,
    /// Group writes completed, and their time in all (submission to completion).
    pub group_writes: u64,
    pub group_write_micros: u64,
    /// Data syncs completed, and their time in all (submission to completion).
    pub data_syncs: u64,
    pub data_sync_micros: u64,
    /// Damaged regions of acknowledged data recovery found at open (kept, never served).
    pub damaged_regions: u64,
    /// Reads refused because the data they asked for is damaged, since open.
    pub corrupt_reads: u64,
}

/// Store gauges as last published by the thread that owns the store.
#[derive(Debug, Default)]
pub struct PublishedStoreGauges {
    wal_bytes_used: AtomicU64,
    wal_bytes_capacity: AtomicU64,
    cache_bytes_used: AtomicU64,
    cache_bytes_capacity: AtomicU64,
    group_writes: AtomicU64,
    group_write_micros: AtomicU64,
    data_syncs: AtomicU64,
    data_sync_micros: AtomicU64,
    damaged_regions: AtomicU64,
    corrupt_reads: AtomicU64,
}

impl PublishedStoreGauges {
    pub fn publish(&self, gauges: StoreGauges) {
        self.wal_bytes_used
            .store(gauges.wal_bytes_used, Ordering::Relaxed);
        self.wal_bytes_capacity
            .store(gauges.wal_bytes_capacity, Ordering::Relaxed);
        self.cache_bytes_used
            .store(gauges.cache_bytes_used, Ordering::Relaxed);
        self.cache_bytes_capacity
            .store(gauges.cache_bytes_capacity, Ordering::Relaxed);
        self.group_writes
            .store(gauges.group_writes, Ordering::Relaxed);
        self.group_write_micros
            .store(gauges.group_write_micros, Ordering::Relaxed);
        self.data_syncs.store(gauges.data_syncs, Ordering::Relaxed);
        self.data_sync_micros
            .store(gauges.data_sync_micros, Ordering::Relaxed);
        self.damaged_regions
            .store(gauges.damaged_regions, Ordering::Relaxed);
        self.corrupt_reads
            .store(gauges.corrupt_reads, Ordering::Relaxed);
    }

    pub fn load(&self) -> StoreGauges {
        StoreGauges {
            wal_bytes_used: self.wal_bytes_used.load(Ordering::Relaxed),
            wal_bytes_capacity: self.wal_bytes_capacity.load(Ordering::Relaxed),
            cache_bytes_used: self.cache_bytes_used.load(Ordering::Relaxed),
            cache_bytes_capacity: self.cache_bytes_capacity.load(Ordering::Relaxed),
            group_writes: self.group_writes.load(Ordering::Relaxed),
            group_write_micros: self.group_write_micros.load(Ordering::Relaxed),
            data_syncs: self.data_syncs.load(Ordering::Relaxed),
            data_sync_micros: self.data_sync_micros.load(Ordering::Relaxed),
            damaged_regions: self.damaged_regions.load(Ordering::Relaxed),
            corrupt_reads: self.corrupt_reads.load(Ordering::Relaxed),
        }
    }
}

/// All workers' metrics; cheap to clone and share with the metrics endpoint.
#[derive(Debug, Clone)]
pub struct Registry {
    workers: Arc<Vec<Arc<WorkerMetrics>>>,
    /// Store gauges, published periodically by the owner of the store.
    pub store: Arc<PublishedStoreGauges>,
    /// The range catalog thread's counters, which it updates itself.
    pub catalog: Arc<crate::catalog::CatalogStats>,
    /// Bytes held by all connections (`es_buffered_bytes`).
    pub node_budget: Arc<serve::NodeBudget>,
}

impl Registry {
    pub fn new(workers: usize, node_budget: Arc<serve::NodeBudget>) -> Registry {
        Registry {
            workers: Arc::new(
                (0..workers)
                    .map(|_| Arc::new(WorkerMetrics::default()))
                    .collect(),
            ),
            store: Arc::new(PublishedStoreGauges::default()),
            catalog: Arc::default(),
            node_budget,
        }
    }

    /// The metrics of worker `index`; that worker must be their only writer.
    pub fn worker(&self, index: usize) -> Arc<WorkerMetrics> {
        Arc::clone(&self.workers[index])
    }

    fn sum(&self, pick: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .map(|worker| pick(worker).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Renders every metric in Prometheus text exposition format 0.0.4.
    /// Ranges held by all workers.
    pub fn range_count(&self) -> u64 {
        self.workers
            .iter()
            .map(|worker| worker.ranges.load(Ordering::Relaxed))
            .sum()
    }

    pub fn render(&self, store: StoreGauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP es_requests_total Requests received, by operation.\n# TYPE es_requests_total counter\n");
        for operation in Operation::ALL {
            let value = self.sum(|worker| &worker.requests[operation as usize]);
            let _ = writeln!(
                out,
                "es_requests_total{{operation=\"{}\"}} {value}",
                operation.name()
            );
        }
        out.push_str("# HELP es_request_errors_total Requests answered with an error, by operation.\n# TYPE es_request_errors_total counter\n");
        for operation in Operation::ALL {
            let value = self.sum(|worker| &worker.errors[operation as usize]);
            let _ = writeln!(
                out,
                "es_request_errors_total{{operation=\"{}\"}} {value}",
                operation.name()
            );
        }

        out.push_str("# HELP es_latency_seconds Latency of each stage of appends and fetches.\n# TYPE es_latency_seconds histogram\n");
        for stage in Stage::ALL {
            let (operation, stage_name) = stage.labels();
            let labels = format!("operation=\"{operation}\",stage=\"{stage_name}\"");
            let mut cumulative = 0u64;
            for bucket in 0..BUCKETS {
                cumulative += self.sum(|worker| &worker.latency[stage as usize].buckets[bucket]);
                if bucket + 1 == BUCKETS {
                    let _ = writeln!(
                        out,
                        "es_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
                    );
                } else {
                    let bound_seconds = (1u64 << bucket) as f64 / 1e6;
                    let _ = writeln!(
                        out,
                        "es_latency_seconds_bucket{{{labels},le=\"{bound_seconds}\"}} {cumulative}"
                    );
                }
            }
            let sum_us = self.sum(|worker| &worker.latency[stage as usize].sum_us);
            let count = self.sum(|worker| &worker.latency[stage as usize].count);
            let _ = writeln!(
                out,
                "es_latency_seconds_sum{{{labels}}} {}",
                sum_us as f64 / 1e6
            );
            let _ = writeln!(out, "es_latency_seconds_count{{{labels}}} {count}");
        }

        let counters: [(&str, &str, Pick); 12] = [
            (
                "es_bytes_in_total",
                "Bytes received from clients.",
                |worker| &worker.connection.bytes_in,
            ),
            ("es_bytes_out_total", "Bytes sent to clients.", |worker| {
                &worker.connection.bytes_out
            }),
            (
                "es_connections_accepted_total",
                "Connections accepted.",
                |worker| &worker.connections_accepted,
            ),
            (
                "es_connections_closed_total",
                "Connections closed.",
                |worker| &worker.connections_closed,
            ),
            (
                "es_connections_rejected_total",
                "Connections refused at accept (server.max-connections reached).",
                |worker| &worker.connections_rejected,
            ),
            (
                "es_bad_frames_total",
                "Frames that failed to decode.",
                |worker| &worker.connection.bad_frames,
            ),
            (
                "es_forwarded_requests_total",
                "Requests passed to the owning worker.",
                |worker| &worker.forwarded,
            ),
            (
                "es_fences_total",
                "Fence-only SEAL_RANGEs answered (the first step of a seal with repair).",
                |worker| &worker.fences,
            ),
            (
                "es_repair_append_batches_total",
                "Record batches written by repair APPENDs into fenced or sealed ranges.",
                |worker| &worker.repair_append_batches,
            ),
            (
                "es_repair_append_bytes_total",
                "Payload bytes written by repair APPENDs.",
                |worker| &worker.repair_append_bytes,
            ),
            (
                "es_offset_not_held_total",
                "FETCHes of a sealed range answered OFFSET_NOT_HELD (read it from another replica).",
                |worker| &worker.offset_not_held,
            ),
            (
                "es_panics_total",
                "Requests whose handler panicked; each closed its connection with GOAWAY(INTERNAL_ERROR).",
                |worker| &worker.connection.panics,
            ),
        ];
        for (name, help, pick) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                self.sum(pick)
            );
        }
        let _ = writeln!(
            out,
            "# HELP es_connection_paused_total Times a connection stopped reading at a byte budget, by budget.\n# TYPE es_connection_paused_total counter\nes_connection_paused_total{{budget=\"connection\"}} {}\nes_connection_paused_total{{budget=\"node\"}} {}",
            self.sum(|worker| &worker.connection.paused_connection_budget),
            self.sum(|worker| &worker.connection.paused_node_budget),
        );
        let _ = writeln!(
            out,
            "# HELP es_buffered_bytes Bytes held by all connections (requests and queued answers).\n# TYPE es_buffered_bytes gauge\nes_buffered_bytes {}\n# HELP es_buffered_bytes_limit server.max-buffered-bytes.\n# TYPE es_buffered_bytes_limit gauge\nes_buffered_bytes_limit {}",
            self.node_budget.buffered_bytes(),
            self.node_budget.limit_bytes(),
        );
        let open = self
            .sum(|worker| &worker.connections_accepted)
            .saturating_sub(self.sum(|worker| &worker.connections_closed));
        let _ = writeln!(
            out,
            "# HELP es_connections_open Connections currently open.\n# TYPE es_connections_open gauge\nes_connections_open {open}"
        );

        let per_worker: [(&str, &str, Pick); 3] = [
            (
                "es_mailbox_depth",
                "Messages waiting in a worker's inbound mailboxes.",
                |worker| &worker.mailbox_depth,
            ),
            ("es_ranges", "Ranges owned by a worker.", |worker| {
                &worker.ranges
            }),
            (
                "es_fetch_waiters",
                "Long-poll fetches waiting on a worker.",
                |worker| &worker.fetch_waiters,
            ),
        ];
        for (name, help, pick) in per_worker {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (index, worker) in self.workers.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{worker=\"{index}\"}} {}",
                    pick(worker).load(Ordering::Relaxed)
                );
            }
        }

        let gauges = [
            (
                "es_wal_bytes_used",
                "WAL bytes holding live data.",
                store.wal_bytes_used,
            ),
            (
                "es_wal_damaged_regions",
                "Damaged regions of acknowledged WAL data found at start: kept on disk, never served.",
                store.damaged_regions,
            ),
            (
                "es_wal_bytes_capacity",
                "WAL bytes in segment files.",
                store.wal_bytes_capacity,
            ),
            (
                "es_cache_bytes_used",
                "Block cache bytes in use.",
                store.cache_bytes_used,
            ),
            (
                "es_cache_bytes_capacity",
                "Block cache size.",
                store.cache_bytes_capacity,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "es_wal_group_writes_total",
                "WAL group writes completed.",
                store.group_writes as f64,
            ),
            (
                "es_wal_group_write_seconds_total",
                "Time WAL group writes took, submission to completion, summed.",
                store.group_write_micros as f64 / 1e6,
            ),
            (
                "es_wal_data_syncs_total",
                "WAL data syncs completed.",
                store.data_syncs as f64,
            ),
            (
                "es_wal_corrupt_reads_total",
                "Reads refused because the WAL data they asked for is damaged.",
                store.corrupt_reads as f64,
            ),
            (
                "es_wal_data_sync_seconds_total",
                "Time WAL data syncs took, submission to completion, summed.",
                store.data_sync_micros as f64 / 1e6,
            ),
            (
                "es_catalog_changes_total",
                "Range catalog changes (creates, seals, epoch raises, trims, deletes) made durable.",
                self.catalog.changes.load(Ordering::Relaxed) as f64,
            ),
            (
                "es_catalog_syncs_total",
                "Range catalog group writes, each made durable by one fdatasync.",
                self.catalog.syncs.load(Ordering::Relaxed) as f64,
            ),
            (
                "es_catalog_compactions_total",
                "Range catalog log rewrites to its live records.",
                self.catalog.compactions.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, prefix: &str) -> f64 {
        let line = text
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(4), 2);
        assert_eq!(bucket_of(5), 3);
        assert_eq!(bucket_of(1024), 10);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn workers_are_summed_when_rendered() {
        let registry = Registry::new(2, Arc::new(serve::NodeBudget::new(1 << 20)));
        let first = registry.worker(0);
        let second = registry.worker(1);
        first.request(Operation::Append);
        first.request(Operation::Append);
        second.request(Operation::Append);
        second.error(Operation::Fetch);
        first.add(&first.connection.bytes_in, 100);
        second.add(&second.connection.bytes_in, 50);
        first.add(&first.connections_accepted, 3);
        first.add(&first.connections_closed, 1);
        second.set(&second.mailbox_depth, 7);

        let text = registry.render(StoreGauges {
            wal_bytes_used: 4096,
            group_writes: 5,
            group_write_micros: 500_000,
            data_syncs: 3,
            data_sync_micros: 250_000,
            damaged_regions: 1,
            corrupt_reads: 2,
            ..StoreGauges::default()
        });
        assert_eq!(
            line_value(&text, "es_requests_total{operation=\"append\"}"),
            3.0
        );
        assert_eq!(
            line_value(&text, "es_requests_total{operation=\"fetch\"}"),
            0.0
        );
        assert_eq!(
            line_value(&text, "es_request_errors_total{operation=\"fetch\"}"),
            1.0
        );
        assert_eq!(line_value(&text, "es_bytes_in_total"), 150.0);
        assert_eq!(line_value(&text, "es_connections_open"), 2.0);
        assert_eq!(line_value(&text, "es_mailbox_depth{worker=\"1\"}"), 7.0);
        assert_eq!(line_value(&text, "es_wal_bytes_used"), 4096.0);
        assert_eq!(line_value(&text, "es_wal_data_syncs_total"), 3.0);
        assert_eq!(line_value(&text, "es_wal_damaged_regions"), 1.0);
        assert_eq!(line_value(&text, "es_wal_corrupt_reads_total"), 2.0);
        assert_eq!(line_value(&text, "es_wal_data_sync_seconds_total"), 0.25);
        assert_eq!(line_value(&text, "es_wal_group_writes_total"), 5.0);
        assert_eq!(line_value(&text, "es_wal_group_write_seconds_total"), 0.5);
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let registry = Registry::new(2, Arc::new(serve::NodeBudget::new(1 << 20)));
        registry
            .worker(0)
            .latency(Stage::AppendWrite, Duration::from_micros(3));
        registry
            .worker(1)
            .latency(Stage::AppendWrite, Duration::from_micros(100));
        registry
            .worker(1)
            .latency(Stage::AppendWrite, Duration::from_secs(3600));
        let text = registry.render(StoreGauges::default());
        let labels = "operation=\"append\",stage=\"write\"";
        assert_eq!(
            line_value(
                &text,
                &format!("es_latency_seconds_bucket{{{labels},le=\"0.000002\"}}")
            ),
            0.0
        );
        assert_eq!(
            line_value(
                &text,
                &format!("es_latency_seconds_bucket{{{labels},le=\"0.000004\"}}")
            ),
            1.0
        );
        assert_eq!(
            line_value(
                &text,
                &format!("es_latency_seconds_bucket{{{labels},le=\"0.000128\"}}")
            ),
            2.0
        );
        assert_eq!(
            line_value(
                &text,
                &format!("es_latency_seconds_bucket{{{labels},le=\"+Inf\"}}")
            ),
            3.0
        );
        assert_eq!(
            line_value(&text, &format!("es_latency_seconds_count{{{labels}}}")),
            3.0
        );
        let sum = line_value(&text, &format!("es_latency_seconds_sum{{{labels}}}"));
        assert!((sum - 3600.000103).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn every_sample_line_belongs_to_a_declared_metric() {
        let text = Registry::new(1, Arc::new(serve::NodeBudget::new(1 << 20)))
            .render(StoreGauges::default());
        let declared: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| rest.split(' ').next().unwrap())
            .collect();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                declared.contains(&name) || declared.contains(&base),
                "undeclared metric in {line}"
            );
        }
    }
}
