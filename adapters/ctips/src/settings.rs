//! The tenant's `[tenants.ctips]` section: which CTIPS servers to open a session on, with
//! which credentials, heartbeat rules, categories and filters, and how route answers map.

use std::path::PathBuf;
use std::time::Duration;

use ivrgate_adapter::{ClientTls, ConnectorSpec};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::proto::{FieldType, MessageClass};

/// The connector's name (one session per tenant): it names the lease with the tenant.
pub const CONNECTOR: &str = "session";

/// The most `UserData` positions a CTIPS request carries (seed 3-15).
pub const MAX_USER_DATA: usize = 20;

/// The section as written (secrets still as `env:`/`file:` sources).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    servers: Vec<String>,
    username: String,
    password: String,
    #[serde(default = "default_tenant_ids")]
    tenant_ids: Vec<i32>,
    callback_token: String,
    #[serde(default = "default_heartbeat_interval_s")]
    heartbeat_interval_s: u64,
    #[serde(default = "default_missed")]
    missed_heartbeats: u32,
    #[serde(default = "default_categories")]
    categories: Vec<String>,
    #[serde(default)]
    filters: Vec<RawFilter>,
    #[serde(default = "default_route_margin_ms")]
    route_margin_ms: u64,
    #[serde(default)]
    user_data_fields: Vec<String>,
    #[serde(default = "default_route_agent_by")]
    route_to_agent_by: String,
    #[serde(default = "default_request_timeout_ms")]
    request_timeout_ms: u64,
    #[serde(default = "default_call_max_s")]
    call_max_s: u64,
    #[serde(default)]
    tls: RawTls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
}

fn default_tenant_ids() -> Vec<i32> {
    vec![1]
}
fn default_heartbeat_interval_s() -> u64 {
    30
}
fn default_missed() -> u32 {
    3
}
fn default_categories() -> Vec<String> {
    ["agent", "call", "route", "system"]
        .into_iter()
        .map(String::from)
        .collect()
}
fn default_route_margin_ms() -> u64 {
    1_500
}
fn default_route_agent_by() -> String {
    "login_name".into()
}
fn default_request_timeout_ms() -> u64 {
    5_000
}
fn default_call_max_s() -> u64 {
    4 * 3600
}

/// How a `route_to_agent` answer names the agent in RouteSelect's DestinationAddress (the
/// seed allows "the index of the agent" or the login name, 3-20; see CT-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentBy {
    LoginName,
    Index,
}

/// One event filter (AddFilter): a field type and its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Filter {
    pub field: FieldType,
    pub value: String,
}

/// One tenant's CTIPS settings, secrets resolved.
#[derive(Clone)]
pub struct Settings {
    /// Service URLs, tried in order (the first is the primary).
    pub servers: Vec<String>,
    pub username: String,
    pub password: String,
    /// The CTIPS tenant ids the session is opened for (`TenantIds`); the first one is the
    /// `TenantId` of every later request.
    pub tenant_ids: Vec<i32>,
    /// The token in the callback path (`/ctips/{tenant}/{token}/{epoch}`).
    pub callback_token: String,
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
    pub categories: Vec<MessageClass>,
    pub filters: Vec<Filter>,
    pub route_margin_ms: u64,
    /// Attached keys written into UserData, one position each (`key=value`), in this order.
    pub user_data_fields: Vec<String>,
    pub agent_by: AgentBy,
    pub request_timeout: Duration,
    pub call_max: Duration,
    pub tls: ClientTls,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("servers", &self.servers)
            .field("username", &self.username)
            .field("password", &"***")
            .field("tenant_ids", &self.tenant_ids)
            .field("callback_token", &"***")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("missed_heartbeats", &self.missed_heartbeats)
            .field("categories", &self.categories)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

/// Resolves a secret written inline, as `env:NAME` or as `file:/path` (trailing newlines of
/// a file dropped), the same rule as every secret in the configuration.
pub fn resolve_secret(source: &str) -> Result<String, String> {
    if let Some(name) = source.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
    } else if let Some(path) = source.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("cannot read {path}: {e}"))
    } else {
        Ok(source.to_owned())
    }
}

fn category(name: &str) -> Option<MessageClass> {
    match name.to_ascii_lowercase().as_str() {
        "agent" | "eventcategoryagent" => Some(MessageClass::Agent),
        "call" | "eventcategorycall" => Some(MessageClass::Call),
        "route" | "eventcategoryroute" => Some(MessageClass::Route),
        "system" | "eventcategorysystem" => Some(MessageClass::System),
        _ => None,
    }
}

/// Reads a filter's field type: `agent`, `service`, `switch`, `tenant` or the wire names.
pub fn field_type(name: &str) -> Option<FieldType> {
    match name.to_ascii_lowercase().as_str() {
        "agent" | "ft_agent_id" => Some(FieldType::Agent),
        "service" | "ft_service_id" => Some(FieldType::Service),
        "switch" | "ft_switch_id" => Some(FieldType::Switch),
        "tenant" | "ft_tenant_id" => Some(FieldType::Tenant),
        _ => None,
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("server {url:?} is not an http(s) URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("server {url:?} has no host"));
    }
    if authority.contains('@') {
        return Err("a server URL must not carry credentials (use username/password)".into());
    }
    Ok(())
}

impl Settings {
    /// Parses the section (`Null`: CTIPS not used by this tenant → `Ok(None)`). Every problem
    /// is one line.
    pub fn from_json(value: &Value) -> Result<Option<Settings>, Vec<String>> {
        if value.is_null() {
            return Ok(None);
        }
        let raw: Raw = serde_json::from_value(value.clone()).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        if raw.servers.is_empty() {
            problems.push("servers: at least one CTIPS server URL is required".to_owned());
        }
        for url in &raw.servers {
            if let Err(why) = check_url(url) {
                problems.push(format!("servers: {why}"));
            }
        }
        if raw.username.is_empty() {
            problems.push("username must not be empty".to_owned());
        }
        let password = resolve_secret(&raw.password).unwrap_or_else(|why| {
            problems.push(format!("password: {why}"));
            String::new()
        });
        let callback_token = match resolve_secret(&raw.callback_token) {
            Ok(t)
                if t.len() >= 16
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) =>
            {
                t
            }
            Ok(_) => {
                problems.push(
                    "callback_token must be at least 16 characters of [A-Za-z0-9_-]".to_owned(),
                );
                String::new()
            }
            Err(why) => {
                problems.push(format!("callback_token: {why}"));
                String::new()
            }
        };
        if raw.tenant_ids.is_empty() {
            problems.push("tenant_ids must name at least one CTIPS tenant".to_owned());
        }
        if !(1..=3600).contains(&raw.heartbeat_interval_s) {
            problems.push("heartbeat_interval_s must be between 1 and 3600".to_owned());
        }
        if !(1..=999).contains(&raw.missed_heartbeats) {
            problems.push("missed_heartbeats must be between 1 and 999 (seed B-1)".to_owned());
        }
        let mut categories = Vec::new();
        for name in &raw.categories {
            match category(name) {
                Some(c) if !categories.contains(&c) => categories.push(c),
                Some(_) => {}
                None => problems.push(format!(
                    "categories: unknown category {name:?} (agent, call, route, system)"
                )),
            }
        }
        let mut filters = Vec::new();
        for f in &raw.filters {
            match field_type(&f.kind) {
                Some(field) if !f.value.is_empty() => filters.push(Filter {
                    field,
                    value: f.value.clone(),
                }),
                Some(_) => problems.push("filters: a filter value must not be empty".to_owned()),
                None => problems.push(format!(
                    "filters: unknown type {:?} (agent, service, switch, tenant)",
                    f.kind
                )),
            }
        }
        if raw.route_margin_ms > 60_000 {
            problems.push("route_margin_ms must be at most 60000".to_owned());
        }
        if raw.user_data_fields.len() > MAX_USER_DATA {
            problems.push(format!(
                "user_data_fields: at most {MAX_USER_DATA} positions (seed 3-15)"
            ));
        }
        let agent_by = match raw.route_to_agent_by.as_str() {
            "login_name" => AgentBy::LoginName,
            "index" => AgentBy::Index,
            other => {
                problems.push(format!(
                    "route_to_agent_by must be login_name or index, not {other:?}"
                ));
                AgentBy::LoginName
            }
        };
        if !(100..=120_000).contains(&raw.request_timeout_ms) {
            problems.push("request_timeout_ms must be between 100 and 120000".to_owned());
        }
        if raw.tls.client_cert_file.is_some() != raw.tls.client_key_file.is_some() {
            problems.push("tls: client_cert_file and client_key_file go together".to_owned());
        }
        for path in [
            &raw.tls.ca_file,
            &raw.tls.client_cert_file,
            &raw.tls.client_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if !path.is_file() {
                problems.push(format!("tls: {} is not a readable file", path.display()));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Some(Settings {
            servers: raw.servers,
            username: raw.username,
            password,
            tenant_ids: raw.tenant_ids,
            callback_token,
            heartbeat_interval: Duration::from_secs(raw.heartbeat_interval_s),
            missed_heartbeats: raw.missed_heartbeats,
            categories,
            filters,
            route_margin_ms: raw.route_margin_ms,
            user_data_fields: raw.user_data_fields,
            agent_by,
            request_timeout: Duration::from_millis(raw.request_timeout_ms),
            call_max: Duration::from_secs(raw.call_max_s.clamp(60, 7 * 24 * 3600)),
            tls: ClientTls {
                ca_file: raw.tls.ca_file,
                client_cert_file: raw.tls.client_cert_file,
                client_key_file: raw.tls.client_key_file,
            },
        }))
    }

    /// The CTIPS tenant id of every request after OpenConnection.
    pub fn tenant_id(&self) -> i32 {
        self.tenant_ids.first().copied().unwrap_or(1)
    }

    /// How long without a Heartbeat before the session counts as lost.
    pub fn lost_after(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }

    /// The connector spec: its fingerprint digests every setting the connector reads (the
    /// secrets only inside the digest).
    pub fn spec(&self) -> ConnectorSpec {
        let mut h = Sha256::new();
        let mut put = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        for s in &self.servers {
            put(s);
        }
        put(&self.username);
        put(&self.password);
        put(&format!("{:?}", self.tenant_ids));
        put(&self.callback_token);
        put(&format!(
            "{:?}/{}/{:?}/{:?}/{}/{:?}/{:?}/{:?}/{:?}/{:?}",
            self.heartbeat_interval,
            self.missed_heartbeats,
            self.categories,
            self.filters,
            self.route_margin_ms,
            self.user_data_fields,
            self.agent_by,
            self.request_timeout,
            self.call_max,
            self.tls
        ));
        let digest = h.finalize();
        let fingerprint = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        ConnectorSpec {
            name: CONNECTOR.into(),
            fingerprint,
            tls: self.tls.clone(),
            request_timeout: self.request_timeout,
        }
    }
}

/// Compares two secrets without an early exit on the first differing byte.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
