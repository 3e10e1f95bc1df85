//! `[[tenants]]`: one customer each, its own settings, and the secrets they carry (inline,
//! `env:NAME` or `file:/path`). Each adapter's section of a tenant is the adapter's to read
//! (see `validate`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::server::nets;
use super::{ConfigError, Result};

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
    pub(super) source: String,
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

/// The keys of a tenant's own settings (every field of [`TenantConfig`] but `sections`), for
/// the message that refuses an unknown one.
pub(super) const TENANT_KEYS: &[&str] = &[
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
