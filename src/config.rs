//! Configuration: a strict TOML file, read once at start (and again on SIGHUP), checked by
//! [`Config::validate`] before any port is bound.
//!
//! Every setting but `listen`, `state_dir` and a tenant's id, webhook URL and secret has a
//! default. Secrets may be written inline, or as `env:NAME` or `file:/path` to keep them out of
//! the file. `config/example.toml` shows and documents every setting.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use ivrgate_adapter::{Adapter, Answer};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on for legacy platforms, health, metrics and the admin API. Only a
    /// restart changes it (a reload that does is refused). In the running configuration it
    /// is the address actually bound (port 0 resolved), which every rule that depends on the
    /// listener (inbound credentials off loopback, the admin and command API) checks.
    pub listen: SocketAddr,
    /// Directory for the embedded store (`ivrgate.db`); created if missing.
    pub state_dir: PathBuf,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub connectors: ConnectorsConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

/// Connectors: the long-lived platform sessions some adapters keep (ivrgate as the client),
/// each run by one instance among those sharing the store, under a lease.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorsConfig {
    /// How long a connector's lease lasts unless renewed. The holder renews it every third
    /// of this; when the holder dies another instance takes over within it (at once when
    /// the holder's process is found dead on this machine). At least 300.
    pub lease_ms: u64,
    /// The first wait before restarting a failed connector; it doubles per failure in a row.
    pub backoff_min_ms: u64,
    /// The longest wait before restarting a failed connector.
    pub backoff_max_ms: u64,
}

impl Default for ConnectorsConfig {
    fn default() -> Self {
        ConnectorsConfig {
            lease_ms: 10_000,
            backoff_min_ms: 500,
            backoff_max_ms: 30_000,
        }
    }
}

/// HTTP server limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Largest request body accepted; larger ones get 413 and a log line.
    pub max_body_bytes: usize,
    /// Memory budget for request bodies in flight (legacy platforms and the command API),
    /// all connections together: a body is reserved by its `Content-Length` before it is
    /// read (a chunked body as it arrives) and released when its request is answered. A
    /// request that does not fit gets its platform's "busy, send it again" answer (the
    /// command API: 503 `busy`), is logged and counted (`outcome="busy"`), so concurrent
    /// bodies cannot exhaust memory. Applied by a reload. Decoding a body takes about as much again as the body while it is handled.
    /// Unset: 32 × `max_body_bytes` (32 MiB with the defaults). At least `max_body_bytes`.
    pub max_bodies_in_flight_bytes: Option<usize>,
    /// Deepest XML or JSON nesting accepted in a request body.
    pub max_nesting_depth: usize,
    /// Time allowed for a client to send the request headers.
    pub header_read_timeout_ms: u64,
    /// Time allowed for a client to send the request body.
    pub body_read_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests may take. When it runs out, decisions still
    /// waiting for the customer answer with their fallback, then connections are closed;
    /// `check-config` warns when it is shorter than the longest decision deadline.
    pub shutdown_grace_ms: u64,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` and `Forwarded` headers
    /// are believed when checking a tenant's `allow_ips` and `admin.metrics_allow` (every
    /// line of each; when both name a client they must agree, otherwise the client is
    /// unknown and refused).
    #[serde(deserialize_with = "nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// This instance's own public base URL (absolute http or https, no credentials, query or
    /// fragment), which connectors give their platform for callbacks: each instance its own,
    /// not the load balancer's. Unset: connectors that need callbacks cannot offer them.
    pub advertise_url: Option<String>,
    /// TLS on the listener (`[server.tls]`). Unset: the listener speaks plain HTTP, which
    /// `check-config` warns about on a non-loopback address (fine behind a proxy that
    /// terminates TLS). Turning it on or off needs a restart; the files are read again on
    /// every reload, so a renewed certificate is picked up by SIGHUP.
    pub tls: Option<TlsConfig>,
}

/// TLS on the listener: rustls, TLS 1.2 and 1.3 with forward-secret AEAD suites only.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain: the server's certificate first, then any
    /// intermediates. Read at start and again on every reload (SIGHUP): new handshakes use
    /// the new certificate, open connections keep theirs. A reload whose file cannot be used
    /// is refused and the running certificate stays.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC), readable
    /// by the service user only (`check-config` warns when others may read it). Never logged.
    pub key_file: PathBuf,
    /// Mutual TLS: PEM file of the CA certificates a client's certificate must chain to.
    /// Unset: no client certificate is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (the default) refuses a client without a valid
    /// certificate; `optional` lets a client without one in, but still refuses an invalid one.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The oldest TLS version accepted: `"1.2"` (the default) or `"1.3"`. Older versions
    /// are never accepted.
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// Whether a client certificate is required when `client_ca_file` is set.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

/// The oldest TLS version the listener accepts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl ServerConfig {
    /// The budget for request bodies in flight: the setting, or 32 maximum-size bodies.
    pub fn bodies_in_flight_limit(&self) -> usize {
        self.max_bodies_in_flight_bytes
            .unwrap_or_else(|| self.max_body_bytes.saturating_mul(32))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 1024 * 1024,
            max_bodies_in_flight_bytes: None,
            max_nesting_depth: 32,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            trusted_proxies: Vec::new(),
            advertise_url: None,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `ivrgate=debug,info`; `RUST_LOG` overrides it. A
    /// reload applies it.
    pub level: String,
    /// Replace all but the last three digits of phone numbers in log lines.
    pub mask_phone_numbers: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            level: "info".into(),
            mask_phone_numbers: false,
        }
    }
}

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
    /// Most transactions committed together in one fsync.
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

/// The admin API (`/admin/...`): dead letters, replay, endpoint re-enabling.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for the admin API and `/metrics`. Without one they answer only on a
    /// loopback listener, to requests that did not come through a proxy.
    pub token: Option<Secret>,
    /// Addresses or CIDR ranges that may read `/metrics` without the token (a Prometheus
    /// scraper on another host). Behind a trusted proxy the forwarded client counts.
    #[serde(deserialize_with = "nets")]
    pub metrics_allow: Vec<IpNet>,
}

/// One customer of the gateway. Strict like every table, though not through serde: the keys
/// it does not know land in `sections`, and validation refuses those no adapter claims.
#[derive(Debug, Clone, Deserialize)]
pub struct TenantConfig {
    /// The tenant id used in URLs (`/voicenter/{id}`): letters, digits, `-` and `_`.
    pub id: String,
    /// Where event webhooks go (and decision webhooks, unless `decision_url` is set).
    pub webhook_url: String,
    /// Standard Webhooks secret(s), `whsec_<base64>`. Several during a rotation: every
    /// request carries one signature per secret.
    pub webhook_secret: Secrets,
    /// Where decision webhooks go; defaults to `webhook_url`.
    #[serde(default)]
    pub decision_url: Option<String>,
    /// Tried when the decision URL failed, within the same deadline.
    #[serde(default)]
    pub fallback_url: Option<String>,
    /// PEM file of CA certificates trusted for this tenant's https endpoints (`webhook_url`,
    /// `decision_url`, `fallback_url`) besides the public roots: a customer whose endpoint
    /// has a certificate from a private CA. Read at start and on every reload.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Default deadline for a decision, covering the fallback URL too.
    #[serde(default = "default_decision_deadline_ms")]
    pub decision_deadline_ms: u64,
    /// Per decision kind (`ivr_action`, `layer_input`, `caller_lookup`): deadline and fallback.
    #[serde(default)]
    pub decisions: BTreeMap<String, DecisionConfig>,
    /// Most undelivered events kept for this tenant; beyond it new events are refused with
    /// the platform's "try again" answer.
    #[serde(default = "default_outbox_quota")]
    pub outbox_quota: u64,
    /// Decision webhooks per second (burst the same); beyond it the fallback answers.
    #[serde(default = "default_decisions_per_second")]
    pub decisions_per_second: u32,
    /// Event deliveries per second to this tenant's endpoint.
    #[serde(default = "default_deliveries_per_second")]
    pub deliveries_per_second: u32,
    /// How the legacy platform proves it is allowed to use this tenant's URLs.
    #[serde(default)]
    pub inbound: InboundConfig,
    /// Bearer token for this tenant's command API (`/api/{tenant}/...`), at least 16
    /// characters. Without one the command API answers only on a loopback listener.
    #[serde(default)]
    pub command_token: Option<Secret>,
    /// Each adapter's own section (`[tenants.ptk]`, `[tenants.openscape]`, `[tenants.ctips]`,
    /// `[tenants.voicenter_api]`, ...), keyed by the adapter's `settings_section`, checked and
    /// parsed by that adapter (see its `docs/<adapter>.md`). Any other key is refused by
    /// [`Config::validate`], naming the valid ones.
    #[serde(flatten)]
    pub sections: BTreeMap<String, toml::Value>,
}

fn default_decision_deadline_ms() -> u64 {
    3_000
}
fn default_outbox_quota() -> u64 {
    1_000_000
}
fn default_decisions_per_second() -> u32 {
    500
}
fn default_deliveries_per_second() -> u32 {
    200
}

/// Deadline and fallback for one decision kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// Overrides the tenant's `decision_deadline_ms` for this kind.
    pub deadline_ms: Option<u64>,
    /// The answer used when the customer is slow, down or answers nonsense: a neutral action
    /// (`{ action = "hangup" }`) or `{ native = {...} }`. Defaults to the platform's own.
    pub fallback: Option<toml::Value>,
}

/// Inbound credentials; Voicenter's panel only takes a URL, so all of these fit in one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// A secret path segment after the tenant: `/voicenter/{tenant}/{path_token}/...`.
    pub path_token: Option<Secret>,
    /// HTTP Basic credentials, e.g. `https://user:pass@gateway/voicenter/acme`.
    pub basic_auth: Option<BasicAuth>,
    /// Source addresses (or CIDR ranges) allowed to call; empty means any.
    #[serde(default, deserialize_with = "nets")]
    pub allow_ips: Vec<IpNet>,
}

impl InboundConfig {
    pub fn has_credentials(&self) -> bool {
        self.path_token.is_some() || self.basic_auth.is_some() || !self.allow_ips.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// A secret value: inline, `env:NAME` or `file:/path`. Never printed.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct Secret {
    source: String,
}

impl From<String> for Secret {
    fn from(source: String) -> Self {
        Secret { source }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Resolves the secret (reads the variable or file); trailing newlines of files are dropped.
    pub fn resolve(&self) -> Result<String> {
        if let Some(name) = self.source.strip_prefix("env:") {
            std::env::var(name).map_err(|_| {
                ConfigError::Invalid(format!("environment variable {name} is not set"))
            })
        } else if let Some(path) = self.source.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })
        } else {
            Ok(self.source.clone())
        }
    }
}

/// One secret or several (rotation).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Secrets {
    One(Secret),
    Many(Vec<Secret>),
}

impl Secrets {
    pub fn all(&self) -> Vec<&Secret> {
        match self {
            Secrets::One(s) => vec![s],
            Secrets::Many(v) => v.iter().collect(),
        }
    }
}

impl Config {
    /// Reads and parses a file; does not validate.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        // A TOML error quotes the offending source line, which may hold a secret.
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: crate::redact::toml_error(&e.to_string()),
        })
    }

    /// Rules that span fields, and each adapter's own: its decision points' deadlines and
    /// fallbacks, its settings section. `adapters` are the ones the gateway serves
    /// (`crate::adapters::all()`, and any a test adds). All problems are reported at once,
    /// one per line.
    pub fn validate(&self, adapters: &[&'static dyn Adapter]) -> Result<ResolvedConfig> {
        self.validate_on(adapters, self.listen)
    }

    /// [`Config::validate`] for a gateway whose listener is bound to `bound`: every rule that
    /// depends on the listener (inbound credentials off loopback, the admin and command API
    /// rules) uses it, and so does the resolved configuration's `listen`.
    pub fn validate_on(
        &self,
        adapters: &[&'static dyn Adapter],
        bound: SocketAddr,
    ) -> Result<ResolvedConfig> {
        let points = crate::adapters::decision_points(adapters);
        let mut problems = Vec::new();
        let mut ids = HashSet::new();
        let loopback = bound.ip().is_loopback();
        let mut tenants = Vec::new();
        if self.tenants.is_empty() {
            problems.push("no [[tenants]] configured".to_owned());
        }
        if self.delivery.retry_schedule_s.is_empty() {
            problems.push("delivery.retry_schedule_s must list at least one delay".to_owned());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            problems.push(format!(
                "logging.level {:?} is not a tracing filter (such as \"info\" or \"ivrgate=debug,info\"): {e}",
                self.logging.level
            ));
        }
        if self.delivery.jitter_percent > 100 {
            problems.push("delivery.jitter_percent must be between 0 and 100".to_owned());
        }
        for zero in [
            ("delivery.workers", self.delivery.workers as u64),
            (
                "delivery.per_endpoint_concurrency",
                self.delivery.per_endpoint_concurrency as u64,
            ),
            ("delivery.timeout_ms", self.delivery.timeout_ms),
            (
                "storage.group_commit_max",
                self.storage.group_commit_max as u64,
            ),
            ("storage.call_ttl_s", self.storage.call_ttl_s),
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
        ] {
            if zero.1 == 0 {
                problems.push(format!("{} must be greater than 0", zero.0));
            }
        }
        let postgres = match crate::store::postgres::PgSettings::from_config(&self.storage) {
            Ok(settings) => settings,
            Err(why) => {
                problems.push(why);
                None
            }
        };
        // The files are read now (and on every reload), so a certificate that cannot be
        // used is a configuration error before any port is bound, and refuses a reload.
        let tls = match self.server.tls.as_ref().map(crate::tls::server_config) {
            Some(Ok(tls)) => Some(tls),
            Some(Err(why)) => {
                problems.push(why);
                None
            }
            None => None,
        };
        if let Some(url) = &self.server.advertise_url {
            if let Err(why) = check_advertise_url(url) {
                problems.push(format!("server.advertise_url {why}"));
            }
        }
        let c = &self.connectors;
        if c.lease_ms < 300 {
            problems.push(format!(
                "connectors.lease_ms ({}) must be at least 300",
                c.lease_ms
            ));
        }
        if c.backoff_min_ms == 0 {
            problems.push("connectors.backoff_min_ms must be greater than 0".to_owned());
        }
        if c.backoff_max_ms < c.backoff_min_ms {
            problems.push(format!(
                "connectors.backoff_max_ms ({}) must be at least connectors.backoff_min_ms ({})",
                c.backoff_max_ms, c.backoff_min_ms
            ));
        }
        if let Some(budget) = self.server.max_bodies_in_flight_bytes {
            if budget < self.server.max_body_bytes {
                problems.push(format!(
                    "server.max_bodies_in_flight_bytes ({budget}) must be at least \
                     server.max_body_bytes ({}), or no maximum-size body is ever read",
                    self.server.max_body_bytes
                ));
            }
        }
        if self.admin.token.is_none() && !loopback {
            tracing::debug!("admin API disabled: no admin.token and not a loopback listener");
        }
        for tenant in &self.tenants {
            let id = &tenant.id;
            let valid_id = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_id {
                problems.push(format!(
                    "tenant id {id:?}: use 1-64 letters, digits, '-' or '_'"
                ));
            }
            if !ids.insert(id.clone()) {
                problems.push(format!("tenant id {id:?} is used twice"));
            }
            for (name, url) in [
                ("webhook_url", Some(&tenant.webhook_url)),
                ("decision_url", tenant.decision_url.as_ref()),
                ("fallback_url", tenant.fallback_url.as_ref()),
            ] {
                if let Some(url) = url {
                    if let Err(why) = check_url(url) {
                        problems.push(format!("tenant {id}: {name} {why}"));
                    }
                }
            }
            if !tenant.inbound.has_credentials() && !loopback {
                problems.push(format!(
                    "tenant {id}: no inbound credentials on the non-loopback listener {}; \
                     set one of inbound.path_token, inbound.basic_auth or inbound.allow_ips",
                    bound
                ));
            }
            let mut secrets = Vec::new();
            for secret in tenant.webhook_secret.all() {
                match secret.resolve() {
                    Ok(value) => match crate::signing::SigningKey::from_whsec(&value) {
                        Ok(key) => secrets.push(key),
                        Err(why) => problems.push(format!("tenant {id}: webhook_secret {why}")),
                    },
                    Err(why) => problems.push(format!("tenant {id}: webhook_secret: {why}")),
                }
            }
            if secrets.is_empty() {
                problems.push(format!("tenant {id}: webhook_secret lists no secret"));
            }
            let path_token = match tenant.inbound.path_token.as_ref().map(Secret::resolve) {
                Some(Ok(token)) if token.len() >= 16 && !token.contains('/') => Some(token),
                Some(Ok(_)) => {
                    problems.push(format!(
                        "tenant {id}: inbound.path_token must be at least 16 characters without '/'"
                    ));
                    None
                }
                Some(Err(why)) => {
                    problems.push(format!("tenant {id}: inbound.path_token: {why}"));
                    None
                }
                None => None,
            };
            let basic_auth = match &tenant.inbound.basic_auth {
                Some(b) => match b.password.resolve() {
                    Ok(password) => Some((b.username.clone(), password)),
                    Err(why) => {
                        problems.push(format!("tenant {id}: inbound.basic_auth.password: {why}"));
                        None
                    }
                },
                None => None,
            };
            for kind in tenant.decisions.keys() {
                if !points.iter().any(|p| p.kind == kind) {
                    let known: Vec<_> = points.iter().map(|p| p.kind).collect();
                    problems.push(format!(
                        "tenant {id}: unknown decision kind {kind:?}; valid kinds: {}",
                        known.join(", ")
                    ));
                }
            }
            let mut decisions = BTreeMap::new();
            for point in &points {
                let own = tenant.decisions.get(point.kind);
                let deadline_ms = own
                    .and_then(|d| d.deadline_ms)
                    .unwrap_or(tenant.decision_deadline_ms);
                if deadline_ms == 0 || deadline_ms > point.platform_max_ms {
                    problems.push(format!(
                        "tenant {id}: the {} deadline of {deadline_ms} ms must be between 1 and \
                         {} ms, what {} tolerates",
                        point.kind, point.platform_max_ms, point.vendor
                    ));
                }
                let fallback = match own.and_then(|d| d.fallback.as_ref()) {
                    Some(value) => {
                        let json = serde_json::to_value(value).unwrap_or_default();
                        match Answer::from_json(&json)
                            .and_then(|a| strict_fallback(&json, &a).map(|()| a))
                            .and_then(|a| (point.validate)(&a).map(|()| a))
                        {
                            Ok(answer) => answer,
                            Err(why) => {
                                problems.push(format!(
                                    "tenant {id}: decisions.{}.fallback: {why}",
                                    point.kind
                                ));
                                (point.default_fallback)()
                            }
                        }
                    }
                    None => (point.default_fallback)(),
                };
                decisions.insert(
                    point.kind,
                    ResolvedDecision {
                        deadline_ms,
                        fallback,
                    },
                );
            }
            let parse = |u: &str| reqwest::Url::parse(u).ok();
            let decision_url = tenant
                .decision_url
                .clone()
                .unwrap_or_else(|| tenant.webhook_url.clone());
            let (Some(webhook_target), Some(decision_target)) =
                (parse(&tenant.webhook_url), parse(&decision_url))
            else {
                // Already reported by check_url above.
                continue;
            };
            let fallback_target = tenant.fallback_url.as_deref().and_then(parse);
            let settings = adapter_settings(tenant, adapters, &mut problems);
            let http = match &tenant.ca_file {
                None => None,
                Some(path) => match read_ca_file(path).and_then(|roots| {
                    crate::core::WebhookClients::new(&roots).map_err(|e| {
                        format!(
                            "ca_file {}: cannot build the webhook client: {e}",
                            path.display()
                        )
                    })
                }) {
                    Ok(clients) => Some(clients),
                    Err(why) => {
                        problems.push(format!("tenant {id}: {why}"));
                        None
                    }
                },
            };
            let command_token = match tenant.command_token.as_ref().map(Secret::resolve) {
                Some(Ok(t)) if t.len() >= 16 => Some(t),
                Some(Ok(_)) => {
                    problems.push(format!(
                        "tenant {id}: command_token must be at least 16 characters"
                    ));
                    None
                }
                Some(Err(why)) => {
                    problems.push(format!("tenant {id}: command_token: {why}"));
                    None
                }
                None => None,
            };
            tenants.push(ResolvedTenant {
                id: id.clone(),
                http,
                settings,
                command_token,
                webhook_target,
                decision_target,
                fallback_target,
                webhook_url: tenant.webhook_url.clone(),
                decision_url,
                fallback_url: tenant.fallback_url.clone(),
                secrets,
                decisions,
                outbox_quota: tenant.outbox_quota,
                decisions_per_second: tenant.decisions_per_second.max(1),
                deliveries_per_second: tenant.deliveries_per_second.max(1),
                path_token,
                basic_auth,
                allow_ips: tenant.inbound.allow_ips.clone(),
            });
        }
        let admin_token = match self.admin.token.as_ref().map(Secret::resolve) {
            Some(Ok(t)) if t.len() >= 16 => Some(t),
            Some(Ok(_)) => {
                problems.push("admin.token must be at least 16 characters".to_owned());
                None
            }
            Some(Err(why)) => {
                problems.push(format!("admin.token: {why}"));
                None
            }
            None => None,
        };
        if problems.is_empty() {
            let mut raw = self.clone();
            raw.listen = bound;
            Ok(ResolvedConfig {
                raw,
                tenants,
                admin_token,
                postgres,
                tls,
            })
        } else {
            Err(ConfigError::Invalid(problems.join("\n")))
        }
    }
}

impl Config {
    /// What keeps this configuration, read again on SIGHUP, from replacing `running` (the
    /// running gateway's, whose `listen` is the address actually bound): every setting a
    /// reload cannot apply, one line each, naming the setting. Empty: the reload may go on
    /// (to [`Config::validate_on`] with the bound address).
    ///
    /// Every field is named here, so a new setting does not compile until it is decided:
    /// `_` means a reload applies it (the running code reads it from the current
    /// configuration each time), a comparison means only a restart applies it.
    /// `docs/operations.md` lists both kinds.
    pub fn reload_refusals(&self, running: &Config) -> Vec<String> {
        let Config {
            listen,
            state_dir,
            server,
            logging,
            storage,
            delivery,
            admin: _,      // read per admin request
            connectors: _, // read per lease acquisition, renewal and restart
            tenants: _,    // resolved again; rate limiters and delivery slots are rebuilt
        } = self;
        let ServerConfig {
            max_body_bytes: _,             // per request
            max_bodies_in_flight_bytes: _, // per request
            max_nesting_depth: _,          // per request
            header_read_timeout_ms: _,     // per new connection
            body_read_timeout_ms: _,       // per request
            shutdown_grace_ms: _,          // read when the drain starts
            trusted_proxies: _,            // per request
            advertise_url: _,              // connectors restart with the new one
            tls,                           // files and settings per new connection; on/off: restart
        } = server;
        let LoggingConfig {
            format,
            level: _,              // the log filter is swapped (unless RUST_LOG is set)
            mask_phone_numbers: _, // per request
        } = logging;
        let StorageConfig {
            backend,
            url,
            pool_size,
            connect_timeout_ms,
            statement_timeout_ms,
            tls_ca_file,
            call_ttl_s: _,            // per write
            dedup_window_s: _,        // per event
            call_retention_s: _,      // per purge
            delivered_retention_s: _, // per purge
            min_free_bytes: _,        // per free-space check
            group_commit_max,
            heartbeat_ms,
            instance_lapse_ms,
        } = storage;
        let DeliveryConfig {
            workers,
            per_endpoint_concurrency: _, // delivery slots are rebuilt
            timeout_ms: _,               // per attempt
            retry_schedule_s: _,         // per outcome
            jitter_percent: _,           // per outcome
            lease_ms: _,                 // per claim
            breaker_failures,
            breaker_open_ms,
            max_retry_after_s: _, // per outcome
        } = delivery;
        let mut refusals = Vec::new();
        let mut restart = |name: &str, old: String, new: String| {
            if old != new {
                refusals.push(format!(
                    "{name} changed from {old} to {new}: only a restart applies it"
                ));
            }
        };
        // A file asking for any port (`:0`) is satisfied by the port bound.
        let same_listener =
            *listen == running.listen || (listen.port() == 0 && listen.ip() == running.listen.ip());
        if !same_listener {
            restart(
                "listen",
                format!("{} (bound)", running.listen),
                listen.to_string(),
            );
        }
        // A listener is TLS or plain: its clients are set up for one of them.
        let scheme = |tls: &Option<TlsConfig>| if tls.is_some() { "TLS" } else { "plain HTTP" };
        restart(
            "server.tls",
            scheme(&running.server.tls).to_owned(),
            scheme(tls).to_owned(),
        );
        restart(
            "state_dir",
            running.state_dir.display().to_string(),
            state_dir.display().to_string(),
        );
        restart(
            "logging.format",
            format!("{:?}", running.logging.format).to_lowercase(),
            format!("{format:?}").to_lowercase(),
        );
        restart(
            "storage.backend",
            format!("{:?}", running.storage.backend).to_lowercase(),
            format!("{backend:?}").to_lowercase(),
        );
        // The URL is a secret: compared by its source, never printed.
        restart(
            "storage.url",
            "the running value".to_owned(),
            if url.as_ref().map(|u| &u.source) == running.storage.url.as_ref().map(|u| &u.source) {
                "the running value".to_owned()
            } else {
                "another value".to_owned()
            },
        );
        restart(
            "storage.pool_size",
            running.storage.pool_size.to_string(),
            pool_size.to_string(),
        );
        restart(
            "storage.connect_timeout_ms",
            running.storage.connect_timeout_ms.to_string(),
            connect_timeout_ms.to_string(),
        );
        restart(
            "storage.statement_timeout_ms",
            running.storage.statement_timeout_ms.to_string(),
            statement_timeout_ms.to_string(),
        );
        restart(
            "storage.tls_ca_file",
            format!("{:?}", running.storage.tls_ca_file),
            format!("{tls_ca_file:?}"),
        );
        restart(
            "storage.group_commit_max",
            running.storage.group_commit_max.to_string(),
            group_commit_max.to_string(),
        );
        restart(
            "storage.heartbeat_ms",
            running.storage.heartbeat_ms.to_string(),
            heartbeat_ms.to_string(),
        );
        restart(
            "storage.instance_lapse_ms",
            running.storage.instance_lapse_ms.to_string(),
            instance_lapse_ms.to_string(),
        );
        restart(
            "delivery.workers",
            running.delivery.workers.to_string(),
            workers.to_string(),
        );
        restart(
            "delivery.breaker_failures",
            running.delivery.breaker_failures.to_string(),
            breaker_failures.to_string(),
        );
        restart(
            "delivery.breaker_open_ms",
            running.delivery.breaker_open_ms.to_string(),
            breaker_open_ms.to_string(),
        );
        refusals
    }
}

/// The keys of a tenant's own settings (every field of [`TenantConfig`] but `sections`), for
/// the message that refuses an unknown one.
const TENANT_KEYS: &[&str] = &[
    "id",
    "webhook_url",
    "webhook_secret",
    "decision_url",
    "fallback_url",
    "ca_file",
    "decision_deadline_ms",
    "decisions",
    "outbox_quota",
    "decisions_per_second",
    "deliveries_per_second",
    "inbound",
    "command_token",
];

/// Each adapter's settings section of one tenant, parsed by the adapter (absent: `Null`, so
/// the adapter decides what no section means), keyed by adapter name. A key of the tenant
/// no adapter claims is a problem naming the valid keys.
fn adapter_settings(
    tenant: &TenantConfig,
    adapters: &[&'static dyn Adapter],
    problems: &mut Vec<String>,
) -> BTreeMap<&'static str, ivrgate_adapter::ParsedSettings> {
    let id = &tenant.id;
    for key in tenant.sections.keys() {
        if !adapters.iter().any(|a| a.settings_section() == key) {
            let mut valid: Vec<&str> = TENANT_KEYS.to_vec();
            valid.extend(adapters.iter().map(|a| a.settings_section()));
            problems.push(format!(
                "tenant {id}: {key} is not a tenant setting; valid keys: {}",
                valid.join(", ")
            ));
        }
    }
    let mut settings = BTreeMap::new();
    for adapter in adapters {
        let section = adapter.settings_section();
        let value = match tenant.sections.get(section).map(serde_json::to_value) {
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                problems.push(format!("tenant {id}: [{section}] {e}"));
                continue;
            }
            None => serde_json::Value::Null,
        };
        match adapter.parse_settings(&value) {
            Ok(parsed) => {
                settings.insert(adapter.name(), parsed);
            }
            Err(lines) => {
                for line in lines {
                    problems.push(format!("tenant {id}: {}: {line}", adapter.name()));
                }
            }
        }
    }
    settings
}

/// A configured fallback is as strict as every other table: a key the answer does not read
/// (`promt` for `prompt`) is an error naming it and the valid ones, also in nested tables
/// (`on_failure`). The keys an action reads are the ones it writes back; `attach` is the
/// customer's own data, and a `native` answer is the platform's own object (its adapter
/// checks it).
fn strict_fallback(
    written: &serde_json::Value,
    answer: &Answer,
) -> std::result::Result<(), String> {
    use serde_json::Value;
    fn walk(path: &str, written: &Value, known: &Value, problems: &mut Vec<String>) {
        let (Value::Object(written), Value::Object(known)) = (written, known) else {
            return;
        };
        for (key, value) in written {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match known.get(key) {
                Some(inner) if key != "attach" => walk(&here, value, inner, problems),
                Some(_) => {}
                None => {
                    let valid: Vec<&str> = known.keys().map(String::as_str).collect();
                    problems.push(format!(
                        "unknown key {here:?}; valid keys: {}",
                        valid.join(", ")
                    ));
                }
            }
        }
    }
    let known = match answer {
        Answer::Action(_) => {
            let mut known = answer.to_json();
            if let Value::Object(map) = &mut known {
                // Written back only when set, read always.
                map.entry("language").or_insert(Value::Null);
                map.entry("attach").or_insert(Value::Null);
                // A nested table the action has not set is written back as null: take
                // its keys from an empty instance.
                if map.get("on_failure").is_some_and(Value::is_null) {
                    if let Ok(goto) = serde_json::to_value(ivrgate_adapter::action::Goto {
                        target: String::new(),
                        prompt: None,
                        repeat: None,
                        max_digits: None,
                        pause_s: None,
                    }) {
                        map.insert("on_failure".into(), goto);
                    }
                }
            }
            known
        }
        // `{ native = {...} }`: nothing beside `native`; a bare native object (`ACTION`,
        // `STATUS`) is the platform's own, whole.
        Answer::Native(_) if written.get("native").is_some() => {
            serde_json::json!({ "native": null })
        }
        Answer::Native(_) => return Ok(()),
    };
    let mut problems = Vec::new();
    walk("", written, &known, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Reads addresses or CIDR ranges: `192.0.2.7` is read as `192.0.2.7/32`.
fn nets<'de, D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Vec<IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(de)?;
    raw.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{s:?} is neither an IP address nor a CIDR range"
                    ))
                })
        })
        .collect()
}

/// Points each validation problem (one per line, as [`Config::validate`] reports them) at the
/// line of the file it is about, the way TOML parse errors do: the problem, then `--> line
/// N, column C` and the source line with every string value masked. A problem about no
/// particular setting (or a file that no longer parses) is left as it is.
pub fn locate_problems(text: &str, problems: &str) -> String {
    let Ok(root) = toml::de::DeTable::parse(text) else {
        return problems.to_owned();
    };
    let mut out = Vec::new();
    for problem in problems.lines() {
        out.push(problem.to_owned());
        let Some(offset) = locate(root.get_ref(), problem) else {
            continue;
        };
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        let source = text.lines().nth(line - 1).unwrap_or("");
        let gutter = " ".repeat(line.to_string().len());
        // The excerpt goes through the same masking as a TOML error's, so no value shows.
        let excerpt = crate::redact::toml_error(&format!("{line} | {source}"));
        out.push(format!("{gutter}--> line {line}, column {column}"));
        out.push(format!("{gutter} |"));
        out.push(excerpt);
    }
    out.join("\n")
}

/// The byte offset of the key a problem is about: `section.key ...` at the top level,
/// `tenant ID: key ...` in that tenant's table (its `id` when the key is not found).
fn locate(root: &toml::de::DeTable<'_>, problem: &str) -> Option<usize> {
    use toml::de::DeValue;
    fn find<'a, 'i>(
        table: &'a toml::de::DeTable<'i>,
        key: &str,
    ) -> Option<(usize, &'a DeValue<'i>)> {
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, v)| (k.span().start, v.get_ref()))
    }
    /// The deepest key of a dotted path that exists.
    fn descend(table: &toml::de::DeTable<'_>, path: &str) -> Option<usize> {
        let mut table = table;
        let mut found = None;
        for segment in path.split('.') {
            let Some((at, value)) = find(table, segment) else {
                break;
            };
            found = Some(at);
            match value {
                DeValue::Table(inner) => table = inner,
                _ => break,
            }
        }
        found
    }
    let tenant_table = |id: &str, last: bool| {
        let Some((_, DeValue::Array(tenants))) = find(root, "tenants") else {
            return None;
        };
        let mut matching = tenants.iter().filter_map(|t| match t.get_ref() {
            DeValue::Table(table)
                if find(table, "id")
                    .is_some_and(|(_, v)| matches!(v, DeValue::String(s) if s == id)) =>
            {
                Some(table)
            }
            _ => None,
        });
        if last {
            matching.next_back()
        } else {
            matching.next()
        }
    };
    // `tenant id "x": ...` and `tenant id "x" is used twice`: the (second) table's id.
    if let Some(rest) = problem.strip_prefix("tenant id \"") {
        let id = rest.split('"').next()?;
        let table = tenant_table(id, rest.contains("used twice"))?;
        return find(table, "id").map(|(at, _)| at);
    }
    let (table, rest) = match problem.strip_prefix("tenant ") {
        Some(rest) => {
            let (id, rest) = rest.split_once(": ")?;
            (tenant_table(id, false)?, rest)
        }
        None => (root, problem),
    };
    // What the problem is about, when its first word is not the key.
    let quoted = |after: &str| {
        rest.split_once(after)
            .and_then(|(_, r)| r.split('"').nth(1))
            .map(str::to_owned)
    };
    let key = if let Some(kind) = quoted("unknown decision kind ") {
        format!("decisions.{kind}")
    } else if let Some(kind) = rest
        .strip_prefix("the ")
        .and_then(|r| r.split_once(" deadline"))
        .map(|(kind, _)| kind)
    {
        format!("decisions.{kind}.deadline_ms")
    } else {
        rest.split(|c: char| c.is_whitespace() || c == ':' || c == '(')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    descend(table, &key).or_else(|| {
        // A tenant's problem with no key of its own (inbound credentials) points at its id;
        // a deadline not set per kind at the tenant's default.
        (!std::ptr::eq(table, root))
            .then(|| {
                key.ends_with(".deadline_ms")
                    .then(|| find(table, "decision_deadline_ms").map(|(at, _)| at))
                    .flatten()
                    .or_else(|| find(table, "id").map(|(at, _)| at))
            })
            .flatten()
    })
}

/// The certificates of a tenant's `ca_file`: at least one.
fn read_ca_file(path: &Path) -> std::result::Result<Vec<reqwest::Certificate>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("ca_file: cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| format!("ca_file {}: not a PEM certificate bundle", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// An instance's public base URL: absolute http(s) with a host, and nothing a platform could
/// leak or mangle (credentials, query, fragment).
fn check_advertise_url(url: &str) -> std::result::Result<(), String> {
    check_url(url)?;
    let shown = crate::redact::url(url);
    let u = reqwest::Url::parse(url).map_err(|e| format!("{shown:?}: {e}"))?;
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{shown:?} must not carry credentials"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{shown:?} must not have a query or fragment"));
    }
    Ok(())
}

fn check_url(url: &str) -> std::result::Result<(), String> {
    let shown = crate::redact::url(url);
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(u) => Err(format!(
            "{shown:?}: scheme {:?} is not http or https",
            u.scheme()
        )),
        Err(e) => Err(format!("{shown:?}: {e}")),
    }
}

/// A validated configuration with secrets resolved: what the running gateway uses.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub raw: Config,
    pub tenants: Vec<ResolvedTenant>,
    pub admin_token: Option<String>,
    /// The PostgreSQL connection settings, parsed (never connected) when
    /// `storage.backend = "postgres"`.
    pub postgres: Option<crate::store::postgres::PgSettings>,
    /// The listener's TLS configuration built from `server.tls` (files read), or plain HTTP.
    pub tls: Option<crate::tls::ServerTls>,
}

impl ResolvedConfig {
    pub fn tenant(&self, id: &str) -> Option<&ResolvedTenant> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// Valid but probably not meant: `check-config` prints these, `serve` logs them (WARN).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let listen = self.raw.listen;
        match &self.raw.server.tls {
            None if !listen.ip().is_loopback() => warnings.push(format!(
                "listen {listen} is not a loopback address and server.tls is not set: \
                 requests and their credentials travel as plain HTTP; fine behind a proxy \
                 that terminates TLS, otherwise set [server.tls]"
            )),
            None => {}
            Some(tls) => {
                warnings.extend(crate::tls::key_file_warning(&tls.key_file));
                warnings.extend(crate::tls::expiry_warning(
                    &tls.cert_file,
                    std::time::SystemTime::now(),
                ));
            }
        }
        let grace = self.raw.server.shutdown_grace_ms;
        let longest = self
            .tenants
            .iter()
            .flat_map(|t| {
                t.decisions
                    .iter()
                    .map(move |(kind, d)| (d.deadline_ms, kind, &t.id))
            })
            .max();
        if let Some((deadline, kind, tenant)) = longest {
            if grace < deadline {
                warnings.push(format!(
                    "server.shutdown_grace_ms ({grace}) is shorter than the longest decision \
                     deadline ({deadline} ms, tenant {tenant}, {kind}): decisions still waiting \
                     for the customer when the grace runs out on shutdown are answered with \
                     their fallback"
                ));
            }
        }
        warnings
    }
}

#[derive(Clone)]
pub struct ResolvedTenant {
    pub id: String,
    pub webhook_url: String,
    pub decision_url: String,
    pub fallback_url: Option<String>,
    /// The same URLs, parsed once rather than on every request.
    pub webhook_target: reqwest::Url,
    pub decision_target: reqwest::Url,
    pub fallback_target: Option<reqwest::Url>,
    pub secrets: Vec<crate::signing::SigningKey>,
    pub decisions: BTreeMap<&'static str, ResolvedDecision>,
    pub outbox_quota: u64,
    pub decisions_per_second: u32,
    pub deliveries_per_second: u32,
    pub path_token: Option<String>,
    pub basic_auth: Option<(String, String)>,
    pub allow_ips: Vec<IpNet>,
    /// Each adapter's settings section, parsed (once) by the adapter.
    pub settings: BTreeMap<&'static str, ivrgate_adapter::ParsedSettings>,
    pub command_token: Option<String>,
    /// The tenant's own webhook clients when it names a `ca_file`; otherwise the gateway's.
    pub http: Option<crate::core::WebhookClients>,
}

impl fmt::Debug for ResolvedTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedTenant")
            .field("id", &self.id)
            .field("webhook_url", &crate::redact::url(&self.webhook_url))
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ResolvedDecision {
    pub deadline_ms: u64,
    pub fallback: Answer,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("test.toml")).expect("parses")
    }

    fn file(listen: &str, inbound: &str, extra: &str) -> String {
        format!(
            "listen = \"{listen}\"\nstate_dir = \"/var/lib/ivrgate\"\n{extra}\n[[tenants]]\nid = \"acme\"\n\
             webhook_url = \"http://127.0.0.1:9/hooks\"\nwebhook_secret = \"{SECRET}\"\n{inbound}"
        )
    }

    const BASIC: &str =
        "[tenants.inbound]\nbasic_auth = { username = \"vc\", password = \"pa55-w0rd\" }\n";

    #[test]
    fn advertise_url_and_connector_settings_are_checked() {
        let adapters = crate::adapters::all();
        let check = |extra: &str| match parse(&file("127.0.0.1:8080", "", extra)).validate(adapters)
        {
            Ok(_) => String::new(),
            Err(ConfigError::Invalid(why)) => why,
            Err(other) => other.to_string(),
        };
        assert_eq!(
            check("[server]\nadvertise_url = \"https://gw1.example.net:8443/base\"\n[connectors]\nlease_ms = 3000\n"),
            ""
        );
        for (bad, expect) in [
            ("ftp://gw1.example.net", "is not http or https"),
            ("gw1.example.net:8443", "server.advertise_url"),
            (
                "https://u:secret@gw1.example.net",
                "must not carry credentials",
            ),
            ("https://gw1.example.net/?token=x", "must not have a query"),
            ("https://gw1.example.net/#top", "must not have a query"),
        ] {
            let why = check(&format!("[server]\nadvertise_url = \"{bad}\"\n"));
            assert!(why.contains(expect), "{bad}: {why}");
            assert!(!why.contains("secret@"), "{why}");
        }
        assert!(check("[connectors]\nlease_ms = 100\n").contains("connectors.lease_ms (100)"));
        assert!(check("[connectors]\nbackoff_min_ms = 0\n").contains("backoff_min_ms"));
        assert!(
            check("[connectors]\nbackoff_min_ms = 900\nbackoff_max_ms = 800\n")
                .contains("connectors.backoff_max_ms (800)")
        );
        // Strict like every table.
        let typo = Config::parse(
            &file("127.0.0.1:8080", "", "[connectors]\nlease = 3000\n"),
            Path::new("x.toml"),
        );
        assert!(typo.is_err());
        // Both reload-applied.
        let running = parse(&file("127.0.0.1:8080", "", ""));
        let changed = parse(&file(
            "127.0.0.1:8080",
            "",
            "[server]\nadvertise_url = \"https://gw1.example.net\"\n[connectors]\nlease_ms = 3000\n",
        ));
        assert!(changed.reload_refusals(&running).is_empty());
    }

    #[test]
    fn reload_is_checked_against_the_bound_listener() {
        let adapters = crate::adapters::all();
        // Running: bound to every address, with credentials.
        let running = parse(&file("0.0.0.0:8080", BASIC, ""))
            .validate(adapters)
            .expect("valid");
        // The new file moves to loopback and drops the credentials: fine on its own ...
        let new = parse(&file("127.0.0.1:8080", "", ""));
        assert!(new.validate(adapters).is_ok());
        // ... but not for the gateway that is running: `listen` needs a restart, and the
        // socket still bound to 0.0.0.0 would take requests without credentials.
        let refusals = new.reload_refusals(&running.raw);
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(
            refusals[0].starts_with("listen changed from 0.0.0.0:8080 (bound) to 127.0.0.1:8080")
        );
        let Err(ConfigError::Invalid(why)) = new.validate_on(adapters, running.raw.listen) else {
            panic!("no inbound credentials on 0.0.0.0 must be refused");
        };
        assert!(why.contains("no inbound credentials on the non-loopback listener 0.0.0.0:8080"));
        // Keeping the listener and the credentials reloads.
        let same = parse(&file(
            "0.0.0.0:8080",
            BASIC,
            "[server]\nmax_body_bytes = 2048",
        ));
        assert!(same.reload_refusals(&running.raw).is_empty());
        let resolved = same
            .validate_on(adapters, running.raw.listen)
            .expect("valid");
        assert_eq!(resolved.raw.server.max_body_bytes, 2048);
    }

    #[test]
    fn a_file_asking_for_any_port_matches_the_port_bound() {
        let mut running = parse(&file("127.0.0.1:0", "", ""));
        running.listen = "127.0.0.1:41234".parse().expect("addr");
        assert!(parse(&file("127.0.0.1:0", "", ""))
            .reload_refusals(&running)
            .is_empty());
        assert!(parse(&file("127.0.0.1:41234", "", ""))
            .reload_refusals(&running)
            .is_empty());
        assert_eq!(
            parse(&file("127.0.0.1:41235", "", ""))
                .reload_refusals(&running)
                .len(),
            1
        );
    }

    #[test]
    fn restart_only_settings_refuse_a_reload_and_name_the_setting() {
        let running = parse(&file("127.0.0.1:8080", "", ""));
        let changed = parse(
            &file("127.0.0.1:8080", "", "[logging]\nformat = \"json\"\nlevel = \"debug\"\n[storage]\ngroup_commit_max = 8\n[delivery]\nworkers = 2\nbreaker_failures = 9\nbreaker_open_ms = 1\ntimeout_ms = 5")
                .replace("/var/lib/ivrgate", "/srv/other"),
        );
        let refusals = changed.reload_refusals(&running).join("\n");
        for name in [
            "state_dir",
            "logging.format",
            "storage.group_commit_max",
            "delivery.workers",
            "delivery.breaker_failures",
            "delivery.breaker_open_ms",
        ] {
            assert!(
                refusals.contains(&format!("{name} changed from")),
                "{name}: {refusals}"
            );
        }
        // Applied by a reload: not refused.
        assert!(!refusals.contains("timeout_ms"), "{refusals}");
        assert!(!refusals.contains("logging.level"), "{refusals}");
    }

    #[test]
    fn unknown_keys_in_a_fallback_are_refused_with_the_valid_ones() {
        let adapters = crate::adapters::all();
        let with = |fallback: &str| {
            parse(&file(
                "127.0.0.1:8080",
                &format!("[tenants.decisions.ivr_action]\nfallback = {fallback}\n"),
                "",
            ))
            .validate(adapters)
        };
        let Err(ConfigError::Invalid(why)) = with("{ action = \"hangup\", promt = \"sorry\" }")
        else {
            panic!("promt must be refused");
        };
        assert!(
            why.contains("decisions.ivr_action.fallback: unknown key \"promt\"; valid keys:"),
            "{why}"
        );
        assert!(why.contains("prompt"), "{why}");
        let Err(ConfigError::Invalid(why)) = with(
            "{ action = \"dial\", targets = [\"100\"], on_failure = { target = \"m\", promt = \"x\" } }",
        ) else {
            panic!("a nested unknown key must be refused");
        };
        assert!(why.contains("unknown key \"on_failure.promt\""), "{why}");
        let Err(ConfigError::Invalid(why)) =
            with("{ native = { ACTION = \"HANGUP\" }, extra = 1 }")
        else {
            panic!("a key beside native must be refused");
        };
        assert!(
            why.contains("unknown key \"extra\"; valid keys: native"),
            "{why}"
        );
        // Every key the action reads is fine, `attach` is free-form.
        with("{ action = \"hangup\", prompt = \"bye\", cause = 16, language = \"he\", attach = { any = 1 } }")
            .expect("valid fallback");
    }

    #[test]
    fn parse_errors_do_not_quote_secrets() {
        let text = file(
            "127.0.0.1:8080",
            "[tenants.inbound.basic_auth]\nusername = \"vc\"\npassword = \"hunter2-pa55\" x\n",
            "",
        );
        let Err(ConfigError::Parse { message, .. }) = Config::parse(&text, Path::new("t")) else {
            panic!("must not parse");
        };
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("password = \""), "{message}");
        let unclosed = file("127.0.0.1:8080", "", "")
            .replace(&format!("\"{SECRET}\""), &format!("\"{SECRET}"));
        let Err(ConfigError::Parse { message, .. }) = Config::parse(&unclosed, Path::new("t"))
        else {
            panic!("must not parse");
        };
        assert!(!message.contains("MfKQ9r8"), "{message}");
    }

    #[test]
    fn validation_problems_point_at_their_line_with_values_masked() {
        let adapters = crate::adapters::all();
        let text = file(
            "127.0.0.1:8080",
            "command_token = \"short-s3cret\"\n[tenants.decisions.ivr_acton]\ndeadline_ms = 10\n",
            "[connectors]\nlease_ms = 100\n",
        )
        .replace("http://127.0.0.1:9/hooks", "ftp://user:pw@x/hooks");
        let Err(ConfigError::Invalid(problems)) = parse(&text).validate(adapters) else {
            panic!("must be invalid");
        };
        let located = locate_problems(&text, &problems);
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.starts_with(needle))
                .map(|i| i + 1)
                .unwrap_or_else(|| panic!("{needle} not in {text}"))
        };
        for (problem, key) in [
            ("connectors.lease_ms (100)", "lease_ms"),
            ("tenant acme: webhook_url", "webhook_url"),
            ("tenant acme: command_token must be", "command_token"),
            (
                "tenant acme: unknown decision kind \"ivr_acton\"",
                "[tenants.decisions.ivr_acton]",
            ),
        ] {
            let at = located
                .lines()
                .position(|l| l.starts_with(problem))
                .unwrap_or_else(|| panic!("{problem} not in {located}"));
            let pointer = located.lines().nth(at + 1).unwrap_or("");
            assert!(
                pointer.contains(&format!("--> line {}, column ", line_of(key))),
                "{problem}: {pointer}\n{located}"
            );
        }
        // The excerpt shows keys, never values.
        assert!(
            located.contains("| command_token = \"************\""),
            "{located}"
        );
        assert!(!located.contains("short-s3cret"), "{located}");
        assert!(!located.contains("user:pw"), "{located}");
    }

    /// The list the unknown-key message names is the tenant's own fields: each one set is
    /// read by a field, not collected as an adapter section.
    #[test]
    fn tenant_keys_are_the_tenants_own_fields() {
        let values = [
            ("decision_url", "\"http://127.0.0.1:9/d\""),
            ("fallback_url", "\"http://127.0.0.1:9/f\""),
            ("ca_file", "\"/etc/ssl/ca.pem\""),
            ("decision_deadline_ms", "1000"),
            ("outbox_quota", "10"),
            ("decisions_per_second", "10"),
            ("deliveries_per_second", "10"),
            ("command_token", "\"0123456789abcdef\""),
            ("decisions", "{}"),
            ("inbound", "{}"),
        ];
        let mut extra = String::new();
        for key in TENANT_KEYS {
            if ["id", "webhook_url", "webhook_secret"].contains(key) {
                continue; // written by `file`
            }
            let (_, value) = values
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("no test value for {key}"));
            extra.push_str(&format!("{key} = {value}\n"));
        }
        let config = parse(&file("127.0.0.1:8080", &extra, ""));
        assert!(
            config.tenants[0].sections.is_empty(),
            "{:?}",
            config.tenants[0].sections.keys()
        );
        let typo = parse(&file("127.0.0.1:8080", "decision_deadline = 1\n", ""));
        let Err(ConfigError::Invalid(why)) = typo.validate(crate::adapters::all()) else {
            panic!("a typo must be refused");
        };
        assert!(
            why.starts_with(
                "tenant acme: decision_deadline is not a tenant setting; valid keys: id, \
                 webhook_url, webhook_secret, decision_url, fallback_url, ca_file, \
                 decision_deadline_ms, decisions, outbox_quota, decisions_per_second, \
                 deliveries_per_second, inbound, command_token, voicenter_api, ptk, openscape, ctips"
            ),
            "{why}"
        );
    }

    #[test]
    fn grace_shorter_than_a_deadline_warns() {
        let adapters = crate::adapters::all();
        let config = parse(&file(
            "127.0.0.1:8080",
            "",
            "[server]\nshutdown_grace_ms = 1000",
        ))
        .validate(adapters)
        .expect("valid");
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0]
            .contains("shutdown_grace_ms (1000) is shorter than the longest decision deadline"));
        let fine = parse(&file("127.0.0.1:8080", "", ""))
            .validate(adapters)
            .expect("valid");
        assert!(fine.warnings().is_empty());
    }
}
