//! The gateway's own tables besides storage: `[server]` (listener limits and TLS),
//! `[logging]`, `[admin]` and `[connectors]`.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::Secret;

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

/// Reads addresses or CIDR ranges: `192.0.2.7` is read as `192.0.2.7/32`.
pub(super) fn nets<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> std::result::Result<Vec<IpNet>, D::Error> {
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
