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
use ivrgate_adapter::{Answer, DecisionPoint};
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
    /// Address to listen on for legacy platforms, health, metrics and the admin API.
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
    pub tenants: Vec<TenantConfig>,
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
    /// On SIGTERM, how long in-flight requests may take before connections are closed.
    pub shutdown_grace_ms: u64,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` header is believed when
    /// checking a tenant's `allow_ips`.
    #[serde(deserialize_with = "nets")]
    pub trusted_proxies: Vec<IpNet>,
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
    /// A tracing filter such as `info` or `ivrgate=debug,info`; `RUST_LOG` overrides it.
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

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How long a call without news stays live before it ends with `call.expired`.
    pub call_ttl_s: u64,
    /// How long a legacy resend (same tenant, call, method and body) gets the original answer.
    pub dedup_window_s: u64,
    /// How long a call's id, sequence counter and attached data outlive the call, so late
    /// events (a CDR after the hangup) continue its sequence.
    pub call_retention_s: u64,
    /// Delivered events are kept this long for replay, then purged.
    pub delivered_retention_s: u64,
    /// Below this much free space under `state_dir`, new events are refused with the
    /// platform's "try again" answer instead of risking a failed write.
    pub min_free_bytes: u64,
    /// Most transactions committed together in one fsync.
    pub group_commit_max: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            call_ttl_s: 4 * 3600,
            dedup_window_s: 24 * 3600,
            call_retention_s: 7 * 24 * 3600,
            delivered_retention_s: 3 * 24 * 3600,
            min_free_bytes: 256 * 1024 * 1024,
            group_commit_max: 512,
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
    /// Bearer token for the admin API. Without one the admin API answers only on a loopback
    /// listener, to requests that did not come through a proxy.
    pub token: Option<Secret>,
}

/// One customer of the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Settings of the PTK adapter for this tenant (see `docs/ptk.md`).
    #[serde(default)]
    pub ptk: Option<toml::Value>,
    /// Settings of the OpenScape adapter for this tenant (see `docs/openscape.md`).
    #[serde(default)]
    pub openscape: Option<toml::Value>,
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
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Rules that span fields. `points` are the decision points of every adapter.
    /// All problems are reported at once, one per line.
    pub fn validate(&self, points: &[&'static DecisionPoint]) -> Result<ResolvedConfig> {
        let mut problems = Vec::new();
        let mut ids = HashSet::new();
        let loopback = self.listen.ip().is_loopback();
        let mut tenants = Vec::new();
        if self.tenants.is_empty() {
            problems.push("no [[tenants]] configured".to_owned());
        }
        if self.delivery.retry_schedule_s.is_empty() {
            problems.push("delivery.retry_schedule_s must list at least one delay".to_owned());
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
                    self.listen
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
            for point in points {
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
            let mut settings = BTreeMap::new();
            for (adapter, section) in [("ptk", &tenant.ptk), ("openscape", &tenant.openscape)] {
                let value = match section {
                    Some(section) => match serde_json::to_value(section) {
                        Ok(value) => value,
                        Err(e) => {
                            problems.push(format!("tenant {id}: [{adapter}] {e}"));
                            continue;
                        }
                    },
                    None => serde_json::Value::Null,
                };
                let Some(a) = crate::adapters::get(adapter) else {
                    continue;
                };
                match a.parse_settings(&value) {
                    Ok(parsed) => {
                        settings.insert(adapter, parsed);
                    }
                    Err(lines) => {
                        for line in lines {
                            problems.push(format!("tenant {id}: {adapter}: {line}"));
                        }
                    }
                }
            }
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
            Ok(ResolvedConfig {
                raw: self.clone(),
                tenants,
                admin_token,
            })
        } else {
            Err(ConfigError::Invalid(problems.join("\n")))
        }
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

fn check_url(url: &str) -> std::result::Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(u) => Err(format!(
            "{url:?}: scheme {:?} is not http or https",
            u.scheme()
        )),
        Err(e) => Err(format!("{url:?}: {e}")),
    }
}

/// A validated configuration with secrets resolved: what the running gateway uses.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub raw: Config,
    pub tenants: Vec<ResolvedTenant>,
    pub admin_token: Option<String>,
}

impl ResolvedConfig {
    pub fn tenant(&self, id: &str) -> Option<&ResolvedTenant> {
        self.tenants.iter().find(|t| t.id == id)
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
}

impl fmt::Debug for ResolvedTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedTenant")
            .field("id", &self.id)
            .field("webhook_url", &self.webhook_url)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ResolvedDecision {
    pub deadline_ms: u64,
    pub fallback: Answer,
}
