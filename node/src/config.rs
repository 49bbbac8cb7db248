//! The data node's configuration: one YAML file (`-c FILE`), every key with a default in code.
//!
//! Loading is two steps. `serde_yaml_ng` turns the text into [`Config`], rejecting unknown keys
//! (`deny_unknown_fields` names the key and where it is); then [`Config::validate`] checks every
//! value and reports each bad one as `section.key: expected <form>, found <value>`. Command-line
//! overrides are applied between the two, so they are validated like the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
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

/// Why a configuration could not be used. The message names the file or key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: PathBuf, reason: String },
    /// The text is not valid YAML for this schema (unknown key, wrong type).
    Parse { origin: String, reason: String },
    /// Values that parse but are out of range; one message per key.
    Invalid(Vec<String>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, reason } => {
                write!(
                    formatter,
                    "cannot read config file {}: {reason}",
                    path.display()
                )
            }
            ConfigError::Parse { origin, reason } => write!(formatter, "{origin}: {reason}"),
            ConfigError::Invalid(problems) => {
                write!(formatter, "invalid configuration: {}", problems.join("; "))
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and parses a file; call [`Config::validate`] after applying overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses YAML text; `origin` names the text in error messages. An empty text is all defaults.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml_ng::from_str(text).map_err(|error| ConfigError::Parse {
            origin: origin.to_string(),
            reason: error.to_string(),
        })
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

/// Parses `host:port`, resolving names such as `localhost`; `None` when it cannot.
pub fn parse_socket_address(text: &str) -> Option<SocketAddr> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Some(address);
    }
    use std::net::ToSocketAddrs;
    text.to_socket_addrs().ok()?.next()
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
mod tests {
    use super::*;
    use store::{PrewriteMode, SyncMode};

    fn shipped() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/data-node.yaml");
        std::fs::read_to_string(path).expect("etc/data-node.yaml is shipped")
    }

    #[test]
    fn shipped_config_parses_and_validates() {
        let config = Config::parse(&shipped(), "etc/data-node.yaml").expect("parses");
        config.validate().expect("validates");
        // The shipped file must suit a 2-core laptop: one worker, no spinning SQPOLL thread,
        // data under the working directory.
        assert_eq!(config.server.workers, 1);
        assert!(!config.store.uring.sqpoll);
        assert!(config.store.path.is_relative());
        assert_eq!(config.store.sync, SyncMode::Always);
    }

    #[test]
    fn shipped_config_sets_every_key() {
        // Every key has a comment in etc/; a key missing from the file would silently use the
        // code default, so compare the parsed file against a document listing every key.
        let text = shipped();
        for key in [
            "listen:",
            "advertised-address:",
            "workers:",
            "cpu-set:",
            "max-connections:",
            "max-in-flight-per-connection:",
            "max-frame-size-bytes:",
            "idle-timeout-ms:",
            "max-buffered-bytes-per-connection:",
            "max-buffered-bytes:",
            "grace-period-ms:",
            "path:",
            "segment-size-bytes:",
            "preallocated-segments:",
            "sync:",
            "prewrite:",
            "cache-size-bytes:",
            "worker-queue-capacity:",
            "io-thread-cpu:",
            "checkpoint-interval-ms:",
            "queue-depth:",
            "sqpoll:",
            "sqpoll-idle-ms:",
            "sqpoll-cpu:",
            "iopoll:",
            "enabled:",
            "addr:",
            "level:",
        ] {
            assert!(text.contains(key), "etc/data-node.yaml lacks {key}");
        }
    }

    #[test]
    fn empty_text_is_all_defaults() {
        let config = Config::parse("", "test").unwrap();
        assert_eq!(config, Config::default());
        config.validate().unwrap();
        assert!(config.server.workers >= 1);
        assert_eq!(config.server.max_frame_size_bytes, 16 * 1024 * 1024);
        assert_eq!(config.listen_address().port(), 10911);
        assert_eq!(config.metrics_address().unwrap().port(), 9911);
    }

    #[test]
    fn prewrite_mode_reaches_the_store() {
        let config = Config::parse("", "test").unwrap();
        assert_eq!(config.store.prewrite, PrewriteMode::Idle);
        assert_eq!(config.store_config().prewrite, store::PrewriteMode::Idle);
        let config = Config::parse("store:\n  prewrite: always\n", "test").unwrap();
        assert_eq!(config.store_config().prewrite, store::PrewriteMode::Always);
        let error = Config::parse("store:\n  prewrite: sometimes\n", "test.yaml").unwrap_err();
        assert!(error.to_string().contains("prewrite"), "{error}");
    }

    #[test]
    fn partial_sections_keep_defaults_for_the_rest() {
        let config =
            Config::parse("server:\n  workers: 3\nstore:\n  sync: never\n", "test").unwrap();
        assert_eq!(config.server.workers, 3);
        assert_eq!(config.server.listen, ServerConfig::default().listen);
        assert_eq!(config.store.sync, SyncMode::Never);
        assert_eq!(config.store.path, PathBuf::from("./data"));
    }

    #[test]
    fn unknown_key_error_names_the_key() {
        let error = Config::parse("server:\n  wrokers: 2\n", "test.yaml").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("wrokers"), "{message}");
        assert!(message.contains("test.yaml"), "{message}");

        let error = Config::parse("store:\n  uring:\n    spqoll: true\n", "test.yaml").unwrap_err();
        assert!(error.to_string().contains("spqoll"), "{error}");

        let error = Config::parse("bogus-section: {}\n", "test.yaml").unwrap_err();
        assert!(error.to_string().contains("bogus-section"), "{error}");
    }

    #[test]
    fn wrong_type_is_a_parse_error() {
        let error = Config::parse("server:\n  workers: many\n", "test.yaml").unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }));
        assert!(error.to_string().contains("workers"), "{error}");
        let error = Config::parse("store:\n  sync: sometimes\n", "test.yaml").unwrap_err();
        assert!(error.to_string().contains("sometimes"), "{error}");
    }

    #[test]
    fn bad_values_are_named_with_expected_form() {
        let text = "server:\n  workers: 0\n  listen: nowhere\n  max-frame-size-bytes: 10\n\
                    store:\n  segment-size-bytes: 1000\n  worker-queue-capacity: 3\n\
                    metrics:\n  addr: \"x\"\nlog:\n  level: loud\n";
        let config = Config::parse(text, "test").unwrap();
        let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
            panic!("expected validation errors");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("server.workers: expected 1..=64, found 0"),
            "{all}"
        );
        assert!(all.contains("server.listen: expected host:port"), "{all}");
        assert!(
            all.contains("server.max-frame-size-bytes: expected"),
            "{all}"
        );
        assert!(
            all.contains("store.segment-size-bytes: expected a multiple of 4096"),
            "{all}"
        );
        assert!(
            all.contains("store.worker-queue-capacity: expected a power of two"),
            "{all}"
        );
        assert!(all.contains("metrics.addr: expected host:port"), "{all}");
        assert!(all.contains("log.level: expected one of"), "{all}");
        assert_eq!(problems.len(), 7, "{all}");
    }

    #[test]
    fn disabled_metrics_need_no_address() {
        let config = Config::parse("metrics:\n  enabled: false\n  addr: \"\"\n", "test").unwrap();
        config.validate().unwrap();
        assert_eq!(config.metrics_address(), None);
    }

    #[test]
    fn workers_are_pinned_round_robin_over_the_cpu_set() {
        let mut config = Config::default();
        assert_eq!(config.worker_cpu(0), None);
        config.server.cpu_set = vec![0, 1];
        assert_eq!(config.worker_cpu(0), Some(0));
        assert_eq!(config.worker_cpu(1), Some(1));
        assert_eq!(config.worker_cpu(2), Some(0));
    }

    /// The dotted keys (`store.uring.sqpoll`) of every leaf in a YAML mapping.
    fn leaf_keys(value: &serde_yaml_ng::Value, prefix: &str, keys: &mut Vec<String>) {
        match value {
            serde_yaml_ng::Value::Mapping(mapping) => {
                for (key, child) in mapping {
                    let key = key.as_str().expect("string keys");
                    let path = if prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaf_keys(child, &path, keys);
                }
            }
            _ => keys.push(prefix.to_string()),
        }
    }

    fn shipped_keys() -> Vec<String> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&shipped()).unwrap();
        let mut keys = Vec::new();
        leaf_keys(&value, "", &mut keys);
        keys
    }

    #[test]
    fn shipped_values_are_the_defaults_and_cover_every_key() {
        // The one deliberate difference: one worker (the default is one per CPU), so that on a
        // 2-core machine the IO thread has the other core.
        let mut expected = Config::default();
        expected.server.workers = 1;
        let config = Config::parse(&shipped(), "etc/data-node.yaml").unwrap();
        assert_eq!(config, expected);

        // Every key the code reads is in the file, and the file has no key the code lacks
        // (unknown keys are refused anyway; this also catches a key the file leaves out).
        let mut from_code = Vec::new();
        leaf_keys(
            &serde_yaml_ng::to_value(Config::default()).unwrap(),
            "",
            &mut from_code,
        );
        let mut in_file = shipped_keys();
        from_code.sort();
        in_file.sort();
        assert_eq!(from_code, in_file);
        // Test-only fault injection is not a key.
        assert!(
            !shipped().contains("inject"),
            "etc/ mentions fault injection"
        );
        assert!(!shipped().contains("without-poll-queues"));
        let error = Config::parse(
            "store:\n  uring:\n    iopoll-without-poll-queues: true\n",
            "test.yaml",
        )
        .unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
        let error =
            Config::parse("store:\n  inject-group-write-results: []\n", "test.yaml").unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
    }

    /// Dotted keys (`store.segment-size-bytes`) a message names.
    fn named_keys(message: &str) -> Vec<String> {
        message
            .split(|c: char| {
                !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            })
            .map(|token| token.trim_end_matches('.'))
            .filter(|token| {
                ["server.", "store.", "metrics.", "log.", "catalog.", "auth."]
                    .iter()
                    .any(|section| token.starts_with(section))
            })
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_validation_error_names_a_shipped_key() {
        let keys = shipped_keys();
        let check = |message: &str| {
            // The message starts with the key it is about (`section.key: expected ...`), or,
            // for a value the node derives, names the keys it is derived from.
            let named = named_keys(message);
            assert!(!named.is_empty(), "names no key: {message}");
            for key in named {
                assert!(
                    keys.contains(&key),
                    "{key} is not in etc/data-node.yaml: {message}"
                );
            }
        };

        // One bad value for each of the node's checks.
        let node_cases = [
            "server:\n  listen: nowhere\n",
            "server:\n  advertised-address: nowhere\n",
            "server:\n  workers: 0\n",
            "server:\n  cpu-set: [100000]\n",
            "server:\n  max-connections: 0\n",
            "server:\n  max-in-flight-per-connection: 0\n",
            "server:\n  max-frame-size-bytes: 10\n",
            "server:\n  max-buffered-bytes-per-connection: 4096\n",
            "server:\n  max-buffered-bytes: 4096\n",
            "server:\n  grace-period-ms: 600001\n",
            "store:\n  path: \"\"\n",
            "store:\n  segment-size-bytes: 1000\n",
            "store:\n  preallocated-segments: 0\n",
            "store:\n  worker-queue-capacity: 3\n",
            "store:\n  io-thread-cpu: 100000\n",
            "store:\n  checkpoint-interval-ms: 1\n",
            "store:\n  uring:\n    queue-depth: 3\n",
            "store:\n  uring:\n    sqpoll: true\n    sqpoll-cpu: 100000\n",
            "store:\n  uring:\n    sqpoll-cpu: 0\n",
            "metrics:\n  addr: x\n",
            "log:\n  level: loud\n",
            "catalog:\n  max-ranges: 0\n",
            "auth:\n  admin-token: short\n",
            "auth:\n  client-token: client-token-0123456789\n",
        ];
        for text in node_cases {
            let config = Config::parse(text, "test").unwrap();
            let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
                panic!("{text}: expected validation errors");
            };
            for problem in &problems {
                check(problem);
            }
        }

        // One bad value for each of the store's checks, on a configuration the node produced.
        let valid = Config::default().store_config();
        valid.validate().unwrap();
        let mut store_cases = Vec::new();
        let mut config = valid.clone();
        config.segment_size_bytes = 1000;
        store_cases.push(config);
        let mut config = valid.clone();
        config.max_group_bytes = 1000;
        store_cases.push(config);
        let mut config = valid.clone();
        config.read_block_size_bytes = 1000;
        store_cases.push(config);
        let mut config = valid.clone();
        config.preallocated_segments = 0;
        store_cases.push(config);
        let mut config = valid.clone();
        config.worker_queue_capacity = 0;
        store_cases.push(config);
        let mut config = valid.clone();
        config.uring.queue_depth = 3;
        store_cases.push(config);
        for config in store_cases {
            let store::Error::Config(message) = config.validate().unwrap_err() else {
                panic!("expected a configuration error");
            };
            check(&message);
        }
    }

    #[test]
    fn store_keys_use_the_store_defaults() {
        // One default per key: the node's `store` section is the store's own type.
        let config = Config::parse("store:\n  sync: never\n", "test").unwrap();
        let expected = StoreConfig {
            sync: SyncMode::Never,
            ..StoreConfig::default()
        };
        assert_eq!(config.store, expected);
        let derived = config.store_config();
        assert!(derived.max_group_bytes >= config.server.max_frame_size_bytes);
        assert_eq!(
            derived.segment_size_bytes % derived.read_block_size_bytes as u64,
            0
        );
        derived.validate().unwrap();
    }
}
