//! Connectors: long-lived tasks an adapter owns per tenant, for platforms where ivrgate is the
//! client (it opens a session on the platform and keeps it alive).
//!
//! The core starts one connector per [`ConnectorSpec`] an adapter names for a tenant, holds a
//! lease for it in the store so that one instance among those sharing the store runs it (the
//! lease's epoch fences a holder that lost it), restarts it with backoff when it fails, restarts
//! it when SIGHUP changes its spec, and stops it before the HTTP drain on SIGTERM. The adapter
//! reaches its platform only through [`ConnectorCtx::http`], a client the core owns; it still
//! never signs, stores or delivers a webhook itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{BoxFuture, Gateway};

/// One connector an adapter wants run for a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorSpec {
    /// Short name, unique per (tenant, adapter); with them it names the lease (`session`).
    pub name: String,
    /// A digest of every setting the connector reads. A reload that changes it restarts the
    /// connector; one that leaves it alone leaves the running connector alone.
    pub fingerprint: String,
    /// TLS for the platform client: a CA file to trust in place of the web PKI roots, and an
    /// optional client certificate (PEM certificate chain and key).
    pub tls: ClientTls,
    /// How long one request to the platform may take before it fails.
    pub request_timeout: Duration,
}

/// TLS settings of a connector's platform client. rustls only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// Why a connector must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM: the process is shutting down. Say goodbye to the platform (log off, close the
    /// session) before returning; the core waits for that, up to its grace.
    Shutdown,
    /// The lease was lost (another instance holds it now). Stop at once without touching the
    /// platform session: its new holder owns it.
    LeaseLost,
    /// SIGHUP changed this connector's spec or removed it. Close the session; a new connector
    /// with the new settings starts after this one returned.
    Reconfigured,
}

/// How a connector's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorExit {
    /// It stopped because [`ConnectorCtx::stopped`] resolved.
    Stopped,
    /// It failed; the core logs the reason, counts it and restarts it after a backoff with
    /// jitter (while the lease is still held).
    Failed(String),
}

/// The connector's view of its own health, shown in `/metrics` and `GET /admin/connectors`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorHealth {
    /// Whether the platform session is up.
    pub connected: bool,
    /// Which platform server the session is on.
    pub server: Option<String>,
    /// The platform's session id (not a secret in CTIPS; still never a credential here).
    pub session_id: Option<String>,
    /// When the platform last proved the session alive (heartbeat), as Unix milliseconds.
    pub last_heartbeat_ms: Option<i64>,
    /// Sessions opened since the connector started (the first one included).
    pub sessions_opened: u64,
    /// A short human-readable state, e.g. `online`, `connecting`, `backoff: MaxNumberClientConnections`.
    pub detail: String,
}

/// A request to the platform, sent by the core's client.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub url: String,
    /// Header name and value pairs (`Content-Type`, `SOAPAction`, ...).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Overrides the spec's request timeout for this request.
    pub timeout: Option<Duration>,
}

/// The platform's answer, whatever its status.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// A request that got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// Connection refused, reset, DNS or TLS failure: the server is not reachable.
    Connect(String),
    /// No complete answer within the timeout.
    Timeout,
    /// The answer was larger than the client's limit, or otherwise unreadable.
    Body(String),
}

impl std::fmt::Display for OutboundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutboundError::Connect(e) => write!(f, "cannot connect: {e}"),
            OutboundError::Timeout => f.write_str("timed out"),
            OutboundError::Body(e) => write!(f, "unreadable answer: {e}"),
        }
    }
}

/// The HTTP client the core gives a connector (rustls, timeouts, the spec's TLS settings).
pub trait PlatformClient: Send + Sync {
    /// Sends one POST request. Logged URLs are redacted by the core.
    fn post(
        &self,
        request: OutboundRequest,
    ) -> BoxFuture<'_, Result<OutboundResponse, OutboundError>>;

    /// Sends one GET request (the body is ignored). Clients that cannot answer
    /// [`OutboundError::Connect`].
    fn get(
        &self,
        request: OutboundRequest,
    ) -> BoxFuture<'_, Result<OutboundResponse, OutboundError>> {
        let _ = request;
        Box::pin(async { Err(OutboundError::Connect("GET is not supported".into())) })
    }
}

/// What the core offers a running connector.
pub trait ConnectorCtx: Send + Sync {
    fn gateway(&self) -> &dyn Gateway;
    fn tenant(&self) -> &str;
    /// The spec this connector runs with.
    fn spec(&self) -> &ConnectorSpec;
    /// The lease's fencing epoch: it grows every time any instance acquires the lease, so a
    /// callback or command that names an older epoch comes from a superseded session.
    fn epoch(&self) -> u64;
    /// Resolves when the connector must stop, with the reason. Cancel-safe; may be awaited
    /// repeatedly (always resolves with the first reason).
    fn stopped(&self) -> BoxFuture<'_, StopReason>;
    /// The reason, when the connector must stop already.
    fn stop_reason(&self) -> Option<StopReason>;
    /// The core's client for the platform.
    fn http(&self) -> &dyn PlatformClient;
    /// This instance's public base URL (`[server] advertise_url`, no trailing slash), for
    /// callback URLs the platform calls; `None` when not configured.
    fn advertise_url(&self) -> Option<&str>;
    /// Publishes the connector's health (replaces the previous one).
    fn set_health(&self, health: ConnectorHealth);
}

/// The lease a connector name holds in the store, as any instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder's owner identity (stable per running process).
    pub holder: String,
    pub epoch: u64,
    /// When the lease lapses unless renewed, Unix milliseconds.
    pub until_ms: i64,
    /// Whether this instance is the holder.
    pub held_here: bool,
}

/// Shared handle to a running connector's context.
pub type ConnectorCtxRef = Arc<dyn ConnectorCtx>;
