//! What a [`crate::sdk::Client`] is configured with, and the options of a new stream.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::pm::DEFAULT_PM_ADDRESS;

/// A step of a seal, reported to [`ClientConfig::seal_hook`] in the writing process right
/// after it completes (for tests that kill the writer in the middle of a seal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealStep {
    /// Every reachable replica answered the fence (FENCE_ONLY) and the end is chosen.
    Fenced,
    /// Every reachable replica holds `[start, end)` durably.
    Repaired,
    /// The placement manager recorded the end (the commit point).
    Committed,
}

/// The seal hook's type: called on the SDK's I/O thread, so it must be quick.
pub type SealHook = Arc<dyn Fn(SealStep) + Send + Sync>;

/// How the SDK reaches the cluster and how patient it is.
#[derive(Clone)]
pub struct ClientConfig {
    /// Placement managers, `host:port`, tried in order until one answers.
    pub pm_addresses: Vec<String>,
    /// Token every connection authenticates with (servers with tokens configured).
    pub token: Option<String>,
    /// A replica of the open range that has not answered an APPEND (or a seal step) within
    /// this long has failed: the writer seals the range and moves on. Well above the ~170 ms
    /// stalls of small virtual machines; a killed node shows up as a closed connection long
    /// before this.
    pub replica_timeout: Duration,
    /// How long one request to the placement manager may take.
    pub request_timeout: Duration,
    /// Bytes of batches a writer holds appended and not yet acknowledged (queued or sent).
    /// An append beyond it keeps its records in its future and waits for room (see
    /// [`crate::sdk::Writer::append`]).
    pub max_in_flight_bytes: usize,
    /// Batches a writer holds appended and not yet acknowledged (queued or sent).
    pub max_in_flight_batches: usize,
    /// An idle writer reports its acknowledged prefix to the replicas (a confirm-only APPEND)
    /// this long after its last append, so readers see the last batches.
    pub confirm_interval: Duration,
    /// How long retriable failures (placement manager unreachable, `NO_AVAILABLE_NODES`, every
    /// replica of a range unreachable, ...) are retried inside the SDK before an error reaches
    /// the application.
    pub retry_for: Duration,
    /// Test hook: called after each step of every seal (live or recovery).
    #[doc(hidden)]
    pub seal_hook: Option<SealHook>,
}

impl ClientConfig {
    /// Defaults, with these placement managers.
    pub fn new(pm_addresses: Vec<String>) -> ClientConfig {
        ClientConfig {
            pm_addresses,
            ..ClientConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.pm_addresses.is_empty() {
            return Err("pm_addresses is empty: give at least one placement manager".into());
        }
        if self.pm_addresses.len() > crate::pm::MAX_PM_ADDRESSES {
            return Err(format!(
                "pm_addresses lists {}, at most {} are tried",
                self.pm_addresses.len(),
                crate::pm::MAX_PM_ADDRESSES
            ));
        }
        for (name, value) in [
            ("replica_timeout", self.replica_timeout),
            ("request_timeout", self.request_timeout),
            ("confirm_interval", self.confirm_interval),
        ] {
            if value.is_zero() {
                return Err(format!("{name} is zero; it must be positive"));
            }
        }
        if self.max_in_flight_bytes == 0 || self.max_in_flight_batches == 0 {
            return Err("max_in_flight_bytes and max_in_flight_batches must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            pm_addresses: vec![DEFAULT_PM_ADDRESS.to_string()],
            token: None,
            replica_timeout: Duration::from_millis(1_000),
            request_timeout: Duration::from_secs(5),
            max_in_flight_bytes: 32 * 1024 * 1024,
            max_in_flight_batches: 1024,
            confirm_interval: Duration::from_millis(50),
            retry_for: Duration::from_secs(30),
            seal_hook: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientConfig")
            .field("pm_addresses", &self.pm_addresses)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("replica_timeout", &self.replica_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .field("max_in_flight_batches", &self.max_in_flight_batches)
            .field("confirm_interval", &self.confirm_interval)
            .field("retry_for", &self.retry_for)
            .field("seal_hook", &self.seal_hook.is_some())
            .finish()
    }
}

/// A new stream's replication and retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// R: replicas per range, 1..=16.
    pub replica_count: u8,
    /// A: replicas that must make a batch durable before it is acknowledged, 1..=R.
    pub ack_count: u8,
    /// Data older than this may be trimmed; 0 keeps it forever.
    pub retention_ms: u64,
    /// While the stream holds more than this its oldest data may be trimmed; 0 = unlimited.
    pub retention_bytes: u64,
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            replica_count: 3,
            ack_count: 2,
            retention_ms: 0,
            retention_bytes: 0,
        }
    }
}
