//! Configuration: a strict TOML file, read once at start (and again on SIGHUP), checked by
//! [`Config::validate`] before any port is bound.
//!
//! Every setting but `listen`, `state_dir` and a tenant's id, webhook URL and secret has a
//! default. Secrets may be written inline, or as `env:NAME` or `file:/path` to keep them out of
//! the file. `config/example.toml` shows and documents every setting.

mod locate;
mod reload;
mod server;
mod storage;
mod tenants;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use ivrgate_adapter::Answer;
use serde::Deserialize;

pub use locate::locate_problems;
pub use server::{
    AdminConfig, ClientAuth, ConnectorsConfig, LogFormat, LoggingConfig, ServerConfig, TlsConfig,
    TlsVersion,
};
pub use storage::{DeliveryConfig, StorageBackend, StorageConfig};
pub use tenants::{BasicAuth, DecisionConfig, InboundConfig, Secret, Secrets, TenantConfig};

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
    pub decision_target: crate::decision_client::Target,
    pub fallback_target: Option<crate::decision_client::Target>,
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
mod tests;
