//! The placement manager's configuration: one YAML file (`-c FILE`), every key with a default in
//! code, the same two steps as the data node's: `serde_yaml_ng` rejects unknown keys and wrong
//! types, then [`PmConfig::validate`] checks every value and names each bad key as
//! `section.key: expected <form>, found <value>`. Command-line overrides go between the two.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub use serve::config::{parse_socket_address, ConfigError};

/// The default address of a placement manager, standalone or embedded in a data node.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:12378";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PmConfig {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
}

/// `server`: the protocol listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// Address clients and data nodes reach the placement manager on.
    pub listen: String,
    /// Connections accepted at once; more are closed on accept.
    pub max_connections: usize,
    /// Requests one connection may have in flight; reading stops at this bound.
    pub max_in_flight_per_connection: usize,
    /// Largest frame accepted or sent, header included (placement requests are small).
    pub max_frame_size_bytes: usize,
    /// A connection that completes no frame (and has no answer sent) for this long, with no
    /// request running, is closed; 0 disables the timeout.
    pub idle_timeout_ms: u64,
    /// Bytes one connection may hold (request payloads, answers queued for the socket); it
    /// stops reading at this bound. At least `max-frame-size-bytes`.
    pub max_buffered_bytes_per_connection: usize,
    /// Bytes all connections may hold; every connection stops reading while they are over it.
    /// At least `max-buffered-bytes-per-connection`.
    pub max_buffered_bytes: usize,
    /// How long accepted requests may take to finish after SIGTERM/SIGINT.
    pub grace_period_ms: u64,
}

/// `storage`: the durable command log and its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StorageConfig {
    /// Directory of the log segments, snapshots and the lock file.
    pub path: PathBuf,
    /// Size at which a log segment file is closed and the next one started.
    pub segment_size_bytes: u64,
    /// A snapshot is taken (and the log before it dropped) after this many commands.
    pub snapshot_every_commands: u64,
}

/// `cluster`: data nodes, placement and retention.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ClusterConfig {
    /// How often data nodes are asked to heartbeat (sent back in every heartbeat answer).
    pub heartbeat_interval_ms: u64,
    /// A node silent for this long counts as dead: no new ranges are placed on it.
    pub node_timeout_ms: u64,
    /// How long a request to a data node (create, trim or delete a range) may take before the
    /// placement manager gives up on that node.
    pub node_request_timeout_ms: u64,
    /// A node reporting less free disk than this gets no new ranges.
    pub min_free_disk_bytes: u64,
    /// How often streams are checked against their retention and data nodes against the ranges
    /// they should hold.
    pub maintenance_interval_ms: u64,
}

/// `auth`: the tokens connections authenticate with (`docs/operations.md`, Authentication).
/// None set: authentication is off and every connection has full rights. Shared by the data
/// node's configuration (the same section, the same keys), so there is one default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AuthConfig {
    /// Grants the admin role: what the placement manager, data nodes (towards the placement
    /// manager) and operators use.
    pub admin_token: Option<Token>,
    /// Grants the client role: what applications use. Needs `admin-token` too.
    pub client_token: Option<Token>,
}

/// A secret from a configuration file. `Debug`, `Display` and serialisation show
/// `<redacted>`, never the secret, so a configuration can be logged or dumped safely.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }

    /// The secret itself, for the comparison and the AUTHENTICATE request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl AuthConfig {
    /// Whether connections must authenticate.
    pub fn enabled(&self) -> bool {
        self.admin_token.is_some() || self.client_token.is_some()
    }

    /// The tokens as the connections check them.
    pub fn tokens(&self) -> serve::Tokens {
        serve::Tokens::new(
            self.admin_token.as_ref().map(Token::expose),
            self.client_token.as_ref().map(Token::expose),
        )
    }

    /// What is wrong with the tokens, one message per key. Messages give lengths, never a
    /// token.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, token) in [
            ("auth.admin-token", &self.admin_token),
            ("auth.client-token", &self.client_token),
        ] {
            let Some(token) = token else { continue };
            let secret = token.expose();
            if secret.len() < MIN_TOKEN_BYTES || secret.len() > wire::msg::MAX_TOKEN_BYTES {
                problems.push(format!(
                    "{key}: expected {MIN_TOKEN_BYTES}..={} bytes, found {} bytes",
                    wire::msg::MAX_TOKEN_BYTES,
                    secret.len()
                ));
            } else if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(format!(
                    "{key}: expected printable characters without spaces, found a space or \
                     control character"
                ));
            }
        }
        if self.client_token.is_some() && self.admin_token.is_none() {
            problems.push(
                "auth.client-token: expected auth.admin-token to be set too (without it nobody \
                 could create ranges on data nodes), found it unset"
                    .to_string(),
            );
        }
        if let (Some(admin), Some(client)) = (&self.admin_token, &self.client_token) {
            if admin == client {
                problems.push(
                    "auth.client-token: expected a token different from auth.admin-token, found \
                     the same"
                        .to_string(),
                );
            }
        }
        problems
    }
}

/// Shortest token accepted: long enough that guessing it over the network is hopeless.
pub const MIN_TOKEN_BYTES: usize = 16;

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
            listen: DEFAULT_LISTEN.to_string(),
            max_connections: 1024,
            max_in_flight_per_connection: 256,
            max_frame_size_bytes: 1024 * 1024,
            idle_timeout_ms: 300_000,
            max_buffered_bytes_per_connection: 4 * 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            grace_period_ms: 5_000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./pm-data"),
            segment_size_bytes: 64 * 1024 * 1024,
            snapshot_every_commands: 10_000,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat_interval_ms: 1_000,
            node_timeout_ms: 3_000,
            node_request_timeout_ms: 2_000,
            min_free_disk_bytes: 64 * 1024 * 1024,
            maintenance_interval_ms: 5_000,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            addr: "127.0.0.1:9912".to_string(),
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

impl PmConfig {
    /// Reads and parses a file; call [`PmConfig::validate`] after applying overrides.
    pub fn load(path: &Path) -> Result<PmConfig, ConfigError> {
        serve::config::load(path)
    }

    /// Parses YAML text; `origin` names the text in error messages. An empty text is all defaults.
    pub fn parse(text: &str, origin: &str) -> Result<PmConfig, ConfigError> {
        serve::config::parse(text, origin)
    }

    /// Checks every value; the error lists each bad key with the expected form and what was found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        let server = &self.server;
        check(
            parse_socket_address(&server.listen).is_some(),
            format!(
                "server.listen: expected host:port like {DEFAULT_LISTEN}, found {:?}",
                server.listen
            ),
        );
        check(
            (1..=1_000_000).contains(&server.max_connections),
            format!(
                "server.max-connections: expected 1..=1000000, found {}",
                server.max_connections
            ),
        );
        check(
            (1..=65_536).contains(&server.max_in_flight_per_connection),
            format!(
                "server.max-in-flight-per-connection: expected 1..=65536, found {}",
                server.max_in_flight_per_connection
            ),
        );
        check(
            (64 * 1024..=64 * 1024 * 1024).contains(&server.max_frame_size_bytes),
            format!(
                "server.max-frame-size-bytes: expected 65536..=67108864, found {}",
                server.max_frame_size_bytes
            ),
        );
        const MAX_BUFFERED: usize = 64 * 1024 * 1024 * 1024;
        check(
            (server.max_frame_size_bytes..=MAX_BUFFERED)
                .contains(&server.max_buffered_bytes_per_connection),
            format!(
                "server.max-buffered-bytes-per-connection: expected server.max-frame-size-bytes \
                 ({})..={MAX_BUFFERED} (a connection must hold one whole frame), found {}",
                server.max_frame_size_bytes, server.max_buffered_bytes_per_connection
            ),
        );
        check(
            server.max_buffered_bytes > 0
                && (server.max_buffered_bytes_per_connection..=MAX_BUFFERED)
                    .contains(&server.max_buffered_bytes),
            format!(
                "server.max-buffered-bytes: expected server.max-buffered-bytes-per-connection \
                 ({})..={MAX_BUFFERED}, found {}",
                server.max_buffered_bytes_per_connection, server.max_buffered_bytes
            ),
        );
        check(
            server.grace_period_ms <= 600_000,
            format!(
                "server.grace-period-ms: expected 0..=600000, found {}",
                server.grace_period_ms
            ),
        );
        let storage = &self.storage;
        check(
            !storage.path.as_os_str().is_empty(),
            "storage.path: expected a directory path, found an empty string".to_string(),
        );
        check(
            (1024 * 1024..=1024 * 1024 * 1024).contains(&storage.segment_size_bytes),
            format!(
                "storage.segment-size-bytes: expected 1 MiB..=1 GiB, found {}",
                storage.segment_size_bytes
            ),
        );
        check(
            (1..=100_000_000).contains(&storage.snapshot_every_commands),
            format!(
                "storage.snapshot-every-commands: expected 1..=100000000, found {}",
                storage.snapshot_every_commands
            ),
        );
        let cluster = &self.cluster;
        check(
            (10..=600_000).contains(&cluster.heartbeat_interval_ms),
            format!(
                "cluster.heartbeat-interval-ms: expected 10..=600000, found {}",
                cluster.heartbeat_interval_ms
            ),
        );
        check(
            cluster.node_timeout_ms > cluster.heartbeat_interval_ms
                && cluster.node_timeout_ms <= 3_600_000,
            format!(
                "cluster.node-timeout-ms: expected more than cluster.heartbeat-interval-ms ({}) \
                 and at most 3600000, found {}",
                cluster.heartbeat_interval_ms, cluster.node_timeout_ms
            ),
        );
        check(
            (10..=600_000).contains(&cluster.node_request_timeout_ms),
            format!(
                "cluster.node-request-timeout-ms: expected 10..=600000, found {}",
                cluster.node_request_timeout_ms
            ),
        );
        check(
            (10..=3_600_000).contains(&cluster.maintenance_interval_ms),
            format!(
                "cluster.maintenance-interval-ms: expected 10..=3600000, found {}",
                cluster.maintenance_interval_ms
            ),
        );
        if self.metrics.enabled {
            check(
                parse_socket_address(&self.metrics.addr).is_some(),
                format!(
                    "metrics.addr: expected host:port like 127.0.0.1:9912, found {:?}",
                    self.metrics.addr
                ),
            );
        }
        check(
            self.log.level.parse::<log::LevelFilter>().is_ok(),
            format!(
                "log.level: expected error, warn, info, debug, trace or off, found {:?}",
                self.log.level
            ),
        );
        problems.extend(self.auth.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The configured log level (validated).
    pub fn log_level(&self) -> log::LevelFilter {
        self.log.level.parse().unwrap_or(log::LevelFilter::Info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../etc/pm.yaml");

    #[test]
    fn the_shipped_file_holds_exactly_the_defaults() {
        let shipped = PmConfig::parse(SHIPPED, "etc/pm.yaml").unwrap();
        assert_eq!(shipped, PmConfig::default());
        shipped.validate().unwrap();
    }

    #[test]
    fn token_rules_name_their_keys() {
        let mut config = PmConfig::default();
        config.auth.client_token = Some(Token::new("client-token-0123456789"));
        let problems = config.auth.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("auth.client-token: expected auth.admin-token"));
        config.auth.admin_token = Some(Token::new("client-token-0123456789"));
        let problems = config.auth.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("different"), "{problems:?}");
        config.auth.admin_token = Some(Token::new("admin-token-0123456789"));
        assert_eq!(config.auth.problems(), Vec::<String>::new());
        config.validate().unwrap();
        assert!(config.auth.enabled());
    }

    #[test]
    fn tokens_never_show_in_debug_display_or_serialisation() {
        let text = "auth:\n  admin-token: admin-secret-0123456789\n  \
                    client-token: client-secret-0123456789\n";
        let config = PmConfig::parse(text, "test").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.auth.admin_token.as_ref().unwrap().expose(),
            "admin-secret-0123456789"
        );
        let shown = [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{}", config.auth.client_token.as_ref().unwrap()),
            serde_yaml_ng::to_string(&config).unwrap(),
        ];
        for shown in shown {
            assert!(!shown.contains("secret"), "{shown}");
        }
        // Nor in the errors about them.
        let mut config = config;
        config.auth.admin_token = Some(Token::new("tiny-secret"));
        let error = config.validate().unwrap_err().to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let error = PmConfig::parse("cluster:\n  node-timeout: 5\n", "test").unwrap_err();
        assert!(error.to_string().contains("node-timeout"), "{error}");
    }

    #[test]
    fn every_validation_error_names_a_shipped_key() {
        let mut config = PmConfig::default();
        config.server.listen = "nowhere".into();
        config.server.max_connections = 0;
        config.server.max_in_flight_per_connection = 0;
        config.server.max_frame_size_bytes = 1;
        config.server.max_buffered_bytes_per_connection = 0;
        config.server.max_buffered_bytes = 0;
        config.server.grace_period_ms = u64::MAX;
        config.storage.path = PathBuf::new();
        config.storage.segment_size_bytes = 1;
        config.storage.snapshot_every_commands = 0;
        config.cluster.heartbeat_interval_ms = 1;
        config.cluster.node_timeout_ms = 1;
        config.cluster.node_request_timeout_ms = 1;
        config.cluster.maintenance_interval_ms = 1;
        config.metrics.addr = "nowhere".into();
        config.log.level = "loud".into();
        config.auth.admin_token = Some(Token::new("short"));
        config.auth.client_token = Some(Token::new("a client token with spaces"));
        let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
            panic!("expected invalid values");
        };
        assert_eq!(problems.len(), 18, "{problems:?}");
        let shipped: serde_yaml_ng::Value = serde_yaml_ng::from_str(SHIPPED).unwrap();
        for problem in problems {
            let key = problem.split(':').next().unwrap();
            let (section, field) = key.split_once('.').unwrap();
            assert!(
                shipped[section].get(field).is_some(),
                "{problem} names {key}, which etc/pm.yaml does not have"
            );
        }
    }
}
