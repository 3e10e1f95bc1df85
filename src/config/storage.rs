//! `[storage]` (the embedded store or PostgreSQL, retention, group commit, the cluster's
//! heartbeat) and `[delivery]` (event webhook workers, retries, breakers).

use std::path::PathBuf;

use serde::Deserialize;

use super::Secret;

/// Which store keeps the durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// The embedded SQLite file under `state_dir` (one machine).
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by several instances.
    Postgres,
}

/// The store: the embedded one (default) or PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite` (the default: the embedded store under `state_dir`) or `postgres`.
    pub backend: StorageBackend,
    /// PostgreSQL only: the connection URL or key=value string (a secret: inline, `env:NAME`
    /// or `file:/path`), e.g. `postgresql://ivrgate@db1,db2/ivrgate?target_session_attrs=read-write`.
    /// Several hosts are tried in order, so a failover to another primary is followed.
    /// `sslmode` (`disable`, `prefer`, `require`) decides TLS, through rustls.
    pub url: Option<Secret>,
    /// PostgreSQL only: the most connections this instance opens.
    pub pool_size: usize,
    /// PostgreSQL only: how long opening one connection may take (per host).
    pub connect_timeout_ms: u64,
    /// PostgreSQL only: the longest a statement may run on the server.
    pub statement_timeout_ms: u64,
    /// PostgreSQL only: extra CA certificates (PEM) trusted for the server's TLS
    /// certificate, besides the public roots.
    pub tls_ca_file: Option<PathBuf>,
    /// How long a call without news stays live before it ends with `call.expired`.
    pub call_ttl_s: u64,
    /// How long a legacy resend (same tenant, call, method and body) gets the original answer.
    pub dedup_window_s: u64,
    /// How long a call's id, sequence counter and attached data outlive the call, so late
    /// events (a CDR after the hangup) continue its sequence.
    pub call_retention_s: u64,
    /// Delivered events are kept this long for replay, then purged.
    pub delivered_retention_s: u64,
    /// Free space kept under `state_dir`. Before each batch of writes that add rows the
    /// writer reads the free space; a unit of work that could reach into this reserve
    /// (counting its own size and the write-ahead log, a few MiB) is refused with the
    /// platform's "try again" answer instead of risking a failed write. Claims and delivery
    /// outcomes may use the reserve, so stored events still drain while the disk is full.
    /// 0 turns the check off.
    pub min_free_bytes: u64,
    /// Most units of work committed together in one transaction (one fsync covers one or
    /// more such transactions).
    pub group_commit_max: usize,
    /// How often this instance reads the registry of live instances (its share of the
    /// tenants' limits follows their number) and the breakers others opened; on PostgreSQL
    /// also how often it renews its own row there (database clock).
    pub heartbeat_ms: u64,
    /// PostgreSQL only: an instance whose heartbeat is older than this is taken for dead,
    /// and its delivery, timer and connector leases go to the others at once.
    pub instance_lapse_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Sqlite,
            url: None,
            pool_size: 16,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            tls_ca_file: None,
            call_ttl_s: 4 * 3600,
            dedup_window_s: 24 * 3600,
            call_retention_s: 7 * 24 * 3600,
            delivered_retention_s: 3 * 24 * 3600,
            min_free_bytes: 256 * 1024 * 1024,
            group_commit_max: 512,
            heartbeat_ms: 2_000,
            instance_lapse_ms: 10_000,
        }
    }
}

/// Event webhook delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Deliveries in flight at once, over all tenants.
    pub workers: usize,
    /// Deliveries in flight at once to one endpoint, so a slow endpoint cannot hold every worker.
    pub per_endpoint_concurrency: usize,
    /// Time allowed for one delivery attempt (connect, send, answer).
    pub timeout_ms: u64,
    /// Delay before each retry, in seconds; when the list is exhausted the event is
    /// dead-lettered (replay it with the admin API or `ivrgate replay`).
    pub retry_schedule_s: Vec<u64>,
    /// Random spread applied to each retry delay, in percent either way.
    pub jitter_percent: u8,
    /// How long a claimed delivery is reserved for this instance before another may take it.
    /// An instance that stops, even by `kill -9`, has its claims taken within about a second
    /// by any instance on the same `state_dir` (or by itself restarted); the lease is the
    /// bound only where that cannot be told (see ARCHITECTURE.md, invariant 4).
    pub lease_ms: u64,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before one probe delivery.
    pub breaker_open_ms: u64,
    /// Longest `Retry-After` honoured, in seconds.
    pub max_retry_after_s: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            workers: 64,
            per_endpoint_concurrency: 8,
            timeout_ms: 10_000,
            retry_schedule_s: vec![5, 300, 1_800, 7_200, 18_000, 36_000, 36_000],
            jitter_percent: 20,
            lease_ms: 60_000,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
            max_retry_after_s: 24 * 3600,
        }
    }
}
