//! The data node's configuration: one YAML file (`-c FILE`), every key with a default in code.
//!
//! Loading is two steps. `serde_yaml_ng` turns the text into [`Config`], rejecting unknown keys
//! (`deny_unknown_fields` names the key and where it is); then [`Config::validate`] checks every
//! value and reports each bad one as `section.key: expected <form>, found <value>`. Command-line
//! overrides are applied between the two, so they are validated like the file.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
pub use serve::config::{parse_socket_address, ConfigError};
use store::StoreConfig;

/// Largest number of worker threads a node accepts.
pub const MAX_WORKERS: usize = 64;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    pub server: ServerConfig,
    /// `store`: the write-ahead log and its IO thread, read straight into the store's own
    /// type, so its keys, defaults and documentation live in `store::config`.
    pub store: StoreConfig,
    pub pm: PmSection,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// `auth`: the tokens connections authenticate with; the placement manager's own section
    /// type, so the keys and the default (none: authentication off) are the same in both.
    pub auth: pm::config::AuthConfig,
    pub catalog: CatalogSection,
}

/// `catalog`: the ranges this node holds (the range catalog, `catalog/mod.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CatalogSection {
    /// Ranges the node holds at most; a CREATE_RANGE beyond is refused with `STORAGE_FULL`.
    pub max_ranges: usize,
}

/// Largest `catalog.max-ranges` accepted.
pub const MAX_MAX_RANGES: usize = 10_000_000;

impl Default for CatalogSection {
    fn default() -> Self {
        CatalogSection {
            max_ranges: 100_000,
        }
    }
}

/// `pm`: the placement manager this node joins, and the one it may run itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PmSection {
    /// Run a placement manager inside this process (its log under `<store.path>/pm`), so that
    /// one node is a whole cluster.
    pub embedded: bool,
    /// Address the embedded placement manager listens on.
    pub listen: String,
    /// Placement managers this node registers with and heartbeats to; empty: the node joins
    /// no cluster and ranges are created on it by hand.
    pub addresses: Vec<String>,
    /// How often the node heartbeats.
    pub heartbeat_interval_ms: u64,
}

impl Default for PmSection {
    fn default() -> Self {
        PmSection {
            embedded: true,
            listen: pm::config::DEFAULT_LISTEN.to_string(),
            addresses: vec![pm::config::DEFAULT_LISTEN.to_string()],
            heartbeat_interval_ms: 1_000,
        }
    }
}

/// `server`: network and worker threads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// Address the node accepts client connections on.
    pub listen: String,
    /// Address other parties should use to reach this node; the listen address when unset.
    pub advertised_address: Option<String>,
    /// Worker threads, each with its own io_uring ring; default: one per CPU.
    pub workers: usize,
    /// CPUs to pin the workers to, in order (worker i on `cpu_set[i % len]`); unpinned if empty.
    pub cpu_set: Vec<usize>,
    /// Connections accepted at once across all workers; more are closed on accept.
    pub max_connections: usize,
    /// Requests one connection may have in flight; the node stops reading it at this bound.
    pub max_in_flight_per_connection: usize,
    /// Largest frame accepted or sent, header included.
    pub max_frame_size_bytes: usize,
    /// A connection that completes no frame (and has no answer sent) for this long, with no
    /// request running, is closed; 0 disables the timeout.
    pub idle_timeout_ms: u64,
    /// Bytes one connection may hold (request payloads, FETCH answers being read or queued for
    /// the socket); it stops reading at this bound. At least `max-frame-size-bytes`.
    pub max_buffered_bytes_per_connection: usize,
    /// Bytes all connections of the node may hold; every connection stops reading while they
    /// are over it. At least `max-buffered-bytes-per-connection`.
    pub max_buffered_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub grace_period_ms: u64,
}

/// `metrics`: the Prometheus text endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` when true.
    pub enabled: bool,
    /// Address of the metrics endpoint.
    pub addr: String,
}

/// `log`: what gets logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace` or `off`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:10911".to_string(),
            advertised_address: None,
            workers: default_workers(),
            cpu_set: Vec::new(),
            max_connections: 1024,
            max_in_flight_per_connection: 256,
            max_frame_size_bytes: 16 * 1024 * 1024,
            idle_timeout_ms: 300_000,
            max_buffered_bytes_per_connection: 32 * 1024 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            grace_period_ms: 5_000,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            addr: "127.0.0.1:9911".to_string(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
        }
    }
}

/// One worker per CPU the process may run on.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(1)
        .clamp(1, MAX_WORKERS)
}

impl Config {
    /// Reads and parses a file; call [`Config::validate`] after applying overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        serve::config::load(path)
    }

    /// Parses YAML text; `origin` names the text in error messages. An empty text is all defaults.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        serve::config::parse(text, origin)
    }

    /// Checks every value; the error lists each bad key with the expected form and what was found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let pm = &self.pm;
        if pm.embedded && parse_socket_address(&pm.listen).is_none() {
            problems.push(format!(
                "pm.listen: expected host:port like {}, found {:?}",
                pm::config::DEFAULT_LISTEN,
                pm.listen
            ));
        }
        for address in &pm.addresses {
            if parse_socket_address(address).is_none() {
                problems.push(format!(
                    "pm.addresses: expected host:port items like {}, found {address:?}",
                    pm::config::DEFAULT_LISTEN
                ));
            }
        }
        if !(10..=600_000).contains(&pm.heartbeat_interval_ms) {
            problems.push(format!(
                "pm.heartbeat-interval-ms: expected 10..=600000, found {}",
                pm.heartbeat_interval_ms
            ));
        }
        let server = &self.server;
        if parse_socket_address(&server.listen).is_none() {
            problems.push(format!(
                "server.listen: expected host:port like 127.0.0.1:10911, found {:?}",
                server.listen
            ));
        }
        if let Some(advertised) = &server.advertised_address {
            if parse_socket_address(advertised).is_none() {
                problems.push(format!(
                    "server.advertised-address: expected host:port like 10.0.0.5:10911, found {advertised:?}"
                ));
            }
        }
        if !(1..=MAX_WORKERS).contains(&server.workers) {
            problems.push(format!(
                "server.workers: expected 1..={MAX_WORKERS}, found {}",
                server.workers
            ));
        }
        let cpus = online_cpus();
        for cpu in &server.cpu_set {
            if *cpu >= cpus {
                problems.push(format!(
                    "server.cpu-set: expected CPU numbers 0..{cpus}, found {cpu}"
                ));
            }
        }
        if !(1..=1_000_000).contains(&server.max_connections) {
            problems.push(format!(
                "server.max-connections: expected 1..=1000000, found {}",
                server.max_connections
            ));
        }
        if !(1..=65_536).contains(&server.max_in_flight_per_connection) {
            problems.push(format!(
                "server.max-in-flight-per-connection: expected 1..=65536, found {}",
                server.max_in_flight_per_connection
            ));
        }
        const MIN_FRAME: usize = 4 * 1024;
        const MAX_FRAME: usize = 1024 * 1024 * 1024;
        if !(MIN_FRAME..=MAX_FRAME).contains(&server.max_frame_size_bytes) {
            problems.push(format!(
                "server.max-frame-size-bytes: expected {MIN_FRAME}..={MAX_FRAME}, found {}",
                server.max_frame_size_bytes
            ));
        }
        const MAX_BUFFERED: usize = 64 * 1024 * 1024 * 1024;
        if server.max_buffered_bytes_per_connection < server.max_frame_size_bytes
            || server.max_buffered_bytes_per_connection > MAX_BUFFERED
        {
            problems.push(format!(
                "server.max-buffered-bytes-per-connection: expected server.max-frame-size-bytes \
                 ({})..={MAX_BUFFERED} (a connection must hold one whole frame), found {}",
                server.max_frame_size_bytes, server.max_buffered_bytes_per_connection
            ));
        }
        if server.max_buffered_bytes < server.max_buffered_bytes_per_connection
            || server.max_buffered_bytes > MAX_BUFFERED
        {
            problems.push(format!(
                "server.max-buffered-bytes: expected server.max-buffered-bytes-per-connection \
                 ({})..={MAX_BUFFERED}, found {}",
                server.max_buffered_bytes_per_connection, server.max_buffered_bytes
            ));
        }
        if server.grace_period_ms > 600_000 {
            problems.push(format!(
                "server.grace-period-ms: expected 0..=600000, found {}",
                server.grace_period_ms
            ));
        }

        let store = &self.store;
        if store.path.as_os_str().is_empty() {
            problems
                .push("store.path: expected a directory path, found an empty string".to_string());
        }
        const PAGE: u64 = 4096;
        if store.segment_size_bytes < 1024 * 1024
            || store.segment_size_bytes > 64 * 1024 * 1024 * 1024
            || store.segment_size_bytes % PAGE != 0
        {
            problems.push(format!(
                "store.segment-size-bytes: expected a multiple of 4096 in 1 MiB..=64 GiB, found {}",
                store.segment_size_bytes
            ));
        }
        if !(1..=64).contains(&store.preallocated_segments) {
            problems.push(format!(
                "store.preallocated-segments: expected 1..=64, found {}",
                store.preallocated_segments
            ));
        }
        if !(2..=65_536).contains(&store.worker_queue_capacity)
            || !store.worker_queue_capacity.is_power_of_two()
        {
            problems.push(format!(
                "store.worker-queue-capacity: expected a power of two in 2..=65536, found {}",
                store.worker_queue_capacity
            ));
        }
        if let Some(cpu) = store.io_thread_cpu {
            if cpu >= cpus {
                problems.push(format!(
                    "store.io-thread-cpu: expected a CPU number 0..{cpus}, found {cpu}"
                ));
            }
        }
        if !(100..=3_600_000).contains(&store.checkpoint_interval_ms) {
            problems.push(format!(
                "store.checkpoint-interval-ms: expected 100..=3600000, found {}",
                store.checkpoint_interval_ms
            ));
        }
        let uring = &store.uring;
        if !(16..=32_768).contains(&uring.queue_depth) || !uring.queue_depth.is_power_of_two() {
            problems.push(format!(
                "store.uring.queue-depth: expected a power of two in 16..=32768, found {}",
                uring.queue_depth
            ));
        }
        if let Some(cpu) = uring.sqpoll_cpu {
            if cpu as usize >= cpus {
                problems.push(format!(
                    "store.uring.sqpoll-cpu: expected a CPU number 0..{cpus}, found {cpu}"
                ));
            }
            if !uring.sqpoll {
                problems.push(
                    "store.uring.sqpoll-cpu: expected unset while store.uring.sqpoll is false"
                        .to_string(),
                );
            }
        }

        if self.metrics.enabled && parse_socket_address(&self.metrics.addr).is_none() {
            problems.push(format!(
                "metrics.addr: expected host:port like 127.0.0.1:9911, found {:?}",
                self.metrics.addr
            ));
        }
        if parse_level(&self.log.level).is_none() {
            problems.push(format!(
                "log.level: expected one of error, warn, info, debug, trace, off, found {:?}",
                self.log.level
            ));
        }
        // `catalog` section.
        if !(1..=MAX_MAX_RANGES).contains(&self.catalog.max_ranges) {
            problems.push(format!(
                "catalog.max-ranges: expected 1..={MAX_MAX_RANGES}, found {}",
                self.catalog.max_ranges
            ));
        }
        problems.extend(self.auth.problems());
        if problems.is_empty() {
            // The store's own checks, on the values the node hands it; the node's checks above
            // are stricter, so this only reports what they do not cover.
            if let Err(error) = self.store_config().validate() {
                problems.push(match error {
                    store::Error::Config(message) => message,
                    other => other.to_string(),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The listen address; only valid after [`Config::validate`] succeeded.
    pub fn listen_address(&self) -> SocketAddr {
        parse_socket_address(&self.server.listen).expect("validated listen address")
    }

    /// The address this node tells placement managers and clients to reach it on.
    pub fn advertised_address(&self) -> String {
        self.server
            .advertised_address
            .clone()
            .unwrap_or_else(|| self.server.listen.clone())
    }

    /// The configuration of the placement manager this node embeds (`pm.embedded`).
    pub fn embedded_pm_config(&self) -> pm::config::PmConfig {
        let mut config = pm::config::PmConfig::default();
        config.server.listen = self.pm.listen.clone();
        config.storage.path = self.store.path.join("pm");
        config.cluster.heartbeat_interval_ms = self.pm.heartbeat_interval_ms;
        config.cluster.node_timeout_ms = 3 * self.pm.heartbeat_interval_ms;
        // The node's own endpoint serves its metrics; the embedded placement manager has none.
        config.metrics.enabled = false;
        config.log.level = self.log.level.clone();
        // The node's own tokens: its PM client (membership) proves the admin token to it.
        config.auth = self.auth.clone();
        config
    }

    /// The metrics address when the endpoint is enabled; only valid after validation.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        if !self.metrics.enabled {
            return None;
        }
        parse_socket_address(&self.metrics.addr)
    }

    /// The CPU worker `worker` is pinned to, if a CPU set is configured.
    pub fn worker_cpu(&self, worker: usize) -> Option<usize> {
        if self.server.cpu_set.is_empty() {
            None
        } else {
            Some(self.server.cpu_set[worker % self.server.cpu_set.len()])
        }
    }

    /// The log filter named by `log.level`; only valid after validation.
    pub fn log_level(&self) -> log::LevelFilter {
        parse_level(&self.log.level).unwrap_or(log::LevelFilter::Info)
    }
}

impl Config {
    /// The store's configuration: the `store` section plus the two sizes the node derives.
    pub fn store_config(&self) -> StoreConfig {
        let mut config = self.store.clone();
        // One group write must carry the largest APPEND a frame can hold (plus a record header
        // and a partial page); the store allows at most half a segment and 1 GiB per group.
        const PAGE: u64 = 4096;
        let frame_need = (self.server.max_frame_size_bytes as u64 + 2 * PAGE).div_ceil(PAGE) * PAGE;
        let group = frame_need
            .max(config.max_group_bytes as u64)
            .min(config.segment_size_bytes / 2)
            .min(1 << 30);
        config.max_group_bytes = (group - group % PAGE) as usize;
        // The read block must divide the segment size: the largest power of two up to the
        // store's default block that does.
        let mut block = config.read_block_size_bytes as u64;
        while block > PAGE && config.segment_size_bytes % block != 0 {
            block /= 2;
        }
        config.read_block_size_bytes = block as usize;
        config
    }
}

fn parse_level(text: &str) -> Option<log::LevelFilter> {
    match text.to_ascii_lowercase().as_str() {
        "off" => Some(log::LevelFilter::Off),
        "error" => Some(log::LevelFilter::Error),
        "warn" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

/// CPUs the machine has online (not the affinity mask: pinning may name any online CPU).
fn online_cpus() -> usize {
    // SAFETY: sysconf reads a system constant and touches no memory of ours.
    let count = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if count < 1 {
        1
    } else {
        count as usize
    }
}

#[cfg(test)]
mod tests;
