//! The contract between the ivrgate core and each legacy-platform adapter.
//!
//! An adapter turns one platform's wire protocol into two kinds of requests to the core:
//! a [`DecisionRequest`] (the platform waits for the customer's next call action) and an
//! [`EventSubmission`] (something happened that must be stored and delivered as a webhook).
//! The core decides, stores, signs and delivers; the adapter renders the outcome back in the
//! platform's own encoding. Adapters depend on this crate only, never on each other and never
//! on the core.

#![forbid(unsafe_code)]

pub mod action;
pub mod connector;
pub mod epoch;
pub mod idempotency;
pub mod path;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::SystemTime;

pub use action::{Action, ActionKind, Answer};
pub use connector::{
    ClientTls, ConnectorCtx, ConnectorCtxRef, ConnectorExit, ConnectorHealth, ConnectorSpec,
    LeaseInfo, OutboundError, OutboundRequest, OutboundResponse, PlatformClient, StopReason,
};
pub use path::{PathError, PathSegments};
use serde_json::{Map, Value};
pub use state::{
    AliasChange, Change, Command, CommandReply, Entity, EntityEvent, EntityKey, TimerChange,
    TimerFired, TransitionFn, Transitioned, Waited, Write,
};

/// A boxed future, so that [`Gateway`] and [`Adapter`] stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One inbound HTTP request, already authenticated for `tenant` by the core.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The ivrgate tenant id from the URL path.
    pub tenant: String,
    pub method: http::Method,
    /// The decoded path segments after the tenant (and after the secret path token, when
    /// one is configured): `[]`, `["cdr"]`, `["popup"]`, ... Empty segments are dropped and a
    /// decoded `/` stays inside its segment (see [`path`]).
    pub path: PathSegments,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
    pub peer: SocketAddr,
    /// Whether phone numbers must be masked in log lines.
    pub mask_phones: bool,
    /// The deepest XML or JSON nesting the body may have (`server.max_nesting_depth`); the
    /// body's size is already bounded by the server.
    pub max_depth: usize,
}

/// What an adapter hands back: the response plus labels the core uses for metrics and logs.
#[derive(Debug)]
pub struct Handled {
    pub response: http::Response<bytes::Bytes>,
    /// The platform method (`GET_IVR_ACTION`, `CDR`, ...) or `"unknown"`.
    pub method: String,
    /// A short outcome label: `ok`, `fallback`, `duplicate`, `bad_request`, `refused`, ...
    pub outcome: &'static str,
    /// The vendor's call id, when the request named one, so the core's log line for the
    /// request can be found by it.
    pub vendor_call_id: Option<String>,
}

impl Handled {
    /// An answer with `status`, `Content-Type: content_type` and `body`, about no call in
    /// particular (set `vendor_call_id` when it is). A status that is not one (never with the
    /// adapters' constants) answers 500; a content type that is not a header value is left
    /// out.
    pub fn new(
        status: u16,
        content_type: &str,
        body: impl Into<bytes::Bytes>,
        method: impl Into<String>,
        outcome: &'static str,
    ) -> Handled {
        let mut response = http::Response::new(body.into());
        *response.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        Handled {
            response,
            method: method.into(),
            outcome,
            vendor_call_id: None,
        }
    }
}

/// One legacy platform. The binary wires adapters in with a closed list (`src/adapters.rs`).
pub trait Adapter: Send + Sync + 'static {
    /// The adapter's name, used as the first path segment and as a metrics label.
    fn name(&self) -> &'static str;
    /// The decision points this adapter can raise, so that configuration can be checked
    /// (deadlines, fallback actions) before any port is bound.
    fn decision_points(&self) -> &'static [DecisionPoint];
    /// Handle one request. Must not panic; bad input gets the platform's own error answer.
    fn handle<'a>(&'a self, gateway: &'a dyn Gateway, request: Inbound) -> BoxFuture<'a, Handled>;

    /// The platform's own "busy, send it again" answer for a request the gateway refuses
    /// before reading its body (the request bodies in flight fill the memory budget). Built
    /// from the request line and headers only: `request.body` is empty and must not be read
    /// as the request. The default is a plain `503` with `Retry-After`; adapters answer in
    /// their platform's encoding. Must not panic.
    fn busy(&self, gateway: &dyn Gateway, request: &Inbound) -> Handled {
        let _ = (gateway, request);
        let mut response = http::Response::new(bytes::Bytes::from_static(b"busy, retry later\n"));
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        Handled {
            response,
            method: "unknown".into(),
            outcome: "busy",
            vendor_call_id: None,
        }
    }

    /// The key of this adapter's section in a tenant's configuration (`[tenants.<key>]`),
    /// handed to [`Adapter::parse_settings`]. Defaults to [`Adapter::name`]; the core refuses
    /// a tenant key that is neither one of its own settings nor an adapter's section.
    fn settings_section(&self) -> &'static str {
        self.name()
    }

    /// Checks and parses the tenant's `[tenants.<section>]` configuration section (as JSON;
    /// `Null` when absent), once per configuration load, so `check-config` reports mistakes
    /// before any port is bound (each problem one line) and requests get the parsed form
    /// through [`Gateway::settings`] without parsing it again.
    fn parse_settings(&self, settings: &Value) -> Result<ParsedSettings, Vec<String>> {
        Ok(std::sync::Arc::new(settings.clone()))
    }

    /// Whether this adapter keeps its calls' state in entities and sets their expiry itself.
    /// Then a decision recorded on such a call leaves the expiry as the adapter set it;
    /// otherwise every decision moves it to the configured call TTL.
    fn keeps_call_state(&self) -> bool {
        false
    }

    /// Runs one of this adapter's entity timers that fell due. `Ok` lets the core drop the
    /// timer (unless the adapter set it again); `Err` leaves it to be retried after its lease.
    /// May run more than once for one due time (a crash between the adapter's commit and the
    /// timer's removal), so it must check the entity's state rather than assume.
    fn on_timer<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        timer: TimerFired,
    ) -> BoxFuture<'a, Result<(), String>> {
        // By default the only entity timers an adapter has are the ones
        // `idempotency` sets to forget an `Idempotency-Key`.
        Box::pin(async move { idempotency::on_timer(gateway, &timer).await.map(|_| ()) })
    }

    /// Why this platform cannot place a call for the neutral
    /// `POST /api/{tenant}/{adapter}/originate` (the core answers 501 with the reason);
    /// `None` when [`Adapter::command`] serves `originate`.
    fn cannot_originate(&self) -> Option<&'static str> {
        Some("this platform offers no way to place a call")
    }

    /// Serves this adapter's part of the command API (`/api/{tenant}/{adapter}/...`).
    fn command<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        command: Command,
    ) -> BoxFuture<'a, CommandReply> {
        let _ = (gateway, command);
        Box::pin(async { CommandReply::error(404, "not_found", "this adapter has no command API") })
    }

    /// The connectors this adapter wants run for a tenant, from the tenant's parsed settings
    /// (see [`connector`]). Called on every configuration load; the core compares the specs
    /// with the running ones and starts, restarts or stops connectors to match.
    fn connectors(&self, tenant: &str, settings: &ParsedSettings) -> Vec<ConnectorSpec> {
        let _ = (tenant, settings);
        Vec::new()
    }

    /// Runs one connector until `ctx.stopped()` resolves (then returns
    /// [`ConnectorExit::Stopped`] after saying goodbye to the platform as the reason asks) or
    /// it fails. Runs only while this instance holds the connector's lease.
    fn run_connector(&self, ctx: ConnectorCtxRef) -> BoxFuture<'static, ConnectorExit> {
        let _ = ctx;
        Box::pin(async { ConnectorExit::Failed("this adapter has no connectors".into()) })
    }

    /// Whether a request to this sub-path (after `/{adapter}/{tenant}`) authenticates itself,
    /// for callbacks from a platform that sends no HTTP credentials (a token in the path the
    /// adapter checks in constant time). The core then skips the tenant's inbound
    /// credential check for it; the address allowlist and every limit still apply.
    fn authenticates_itself(&self, sub_path: &str) -> bool {
        let _ = sub_path;
        false
    }
}

/// The services the core offers to adapters.
pub trait Gateway: Send + Sync {
    /// Ask the customer's decision webhook for the next action. Never fails: when the customer
    /// is slow, down or answers nonsense, the tenant's fallback comes back within the deadline.
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision>;
    /// Store an event durably (fsynced) together with the call-state change it implies.
    /// Resolves only after the commit, so the adapter may acknowledge to the legacy side.
    fn record<'a>(&'a self, event: EventSubmission)
        -> BoxFuture<'a, Result<Recorded, RecordError>>;
    /// The gateway's clock (controllable in tests).
    fn now(&self) -> SystemTime;

    /// The tenant's configuration section for an adapter (`[tenants.<adapter>]`) as the
    /// adapter's [`Adapter::parse_settings`] made it; `None` for an unknown tenant. Use
    /// [`settings_of`] to get it typed.
    fn settings(&self, tenant: &str, adapter: &str) -> Option<ParsedSettings> {
        let _ = (tenant, adapter);
        None
    }

    /// Reads one entity (see [`state`]).
    fn load<'a>(&'a self, key: EntityKey) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        let _ = key;
        Box::pin(async { Err(RecordError::Unavailable("no entity store".into())) })
    }

    /// Finds the entity holding an alias (a claim that has not lapsed).
    fn find<'a>(
        &'a self,
        tenant: &'a str,
        namespace: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        let _ = (tenant, namespace, value);
        Box::pin(async { Err(RecordError::Unavailable("no entity store".into())) })
    }

    /// Live entities of one kind in a tenant, oldest first, at most `limit`.
    fn list<'a>(
        &'a self,
        tenant: &'a str,
        kind: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entity>, RecordError>> {
        let _ = (tenant, kind, limit);
        Box::pin(async { Err(RecordError::Unavailable("no entity store".into())) })
    }

    /// Reads the entities, lets `f` compute their changes and commits them atomically
    /// (fsynced), calling `f` again when an entity changed in between. All keys must belong
    /// to one tenant. Refused like [`Gateway::record`] when storage is nearly full or the
    /// tenant's outbox quota is reached and the transition carries events.
    fn transition<'a>(
        &'a self,
        keys: Vec<EntityKey>,
        f: &'a mut TransitionFn<'a>,
    ) -> BoxFuture<'a, Result<Transitioned, RecordError>> {
        let _ = (keys, f);
        Box::pin(async { Err(RecordError::Unavailable("no entity store".into())) })
    }

    /// Waits until the entity's version differs from `seen` (`None`: until it exists), up to
    /// `timeout` (capped at [`state::MAX_WAIT`]). Changes committed by another instance on the
    /// same store wake the wait too. Answers [`Waited::ShuttingDown`] at once on shutdown.
    fn wait_change<'a>(
        &'a self,
        key: EntityKey,
        seen: Option<i64>,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Waited> {
        let _ = (key, seen, timeout);
        Box::pin(async { Waited::ShuttingDown })
    }

    /// The epoch of the connector lease `(tenant, adapter, name)` when this instance holds it
    /// and runs the connector now; `None` otherwise. Cheap (no store access): for fencing
    /// callbacks that name an epoch.
    fn held_epoch(&self, tenant: &str, adapter: &str, name: &str) -> Option<u64> {
        let _ = (tenant, adapter, name);
        None
    }

    /// The connector lease `(tenant, adapter, name)` as the store has it, whichever instance
    /// holds it; `None` when nobody ever held it.
    fn lease<'a>(
        &'a self,
        tenant: &'a str,
        adapter: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<LeaseInfo>, RecordError>> {
        let _ = (tenant, adapter, name);
        Box::pin(async { Ok(None) })
    }

    /// The core's client for a platform's API that a command calls on the customer's behalf
    /// (rustls, no redirects, a size cap; every request logged with its URL redacted and
    /// counted in `/metrics`); `None` when the core offers none (tests).
    fn platform_api(&self) -> Option<&dyn PlatformClient> {
        None
    }
}

/// An adapter's parsed settings for one tenant (its own type behind `Any`).
pub type ParsedSettings = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// The tenant's settings for `adapter`, as the type that adapter's `parse_settings` returns.
pub fn settings_of<T: std::any::Any + Send + Sync>(
    gateway: &dyn Gateway,
    tenant: &str,
    adapter: &str,
) -> Option<std::sync::Arc<T>> {
    gateway.settings(tenant, adapter)?.downcast::<T>().ok()
}

/// Runs a transition on a single entity: `f` sees it (or `None`) and returns its change.
pub async fn transition_one<F>(
    gateway: &dyn Gateway,
    key: EntityKey,
    mut f: F,
) -> Result<Transitioned, RecordError>
where
    F: FnMut(Option<&Entity>) -> Change + Send,
{
    let mut wrapped = move |read: &[Option<Entity>]| vec![f(read.first().and_then(Option::as_ref))];
    gateway.transition(vec![key], &mut wrapped).await
}

/// A place where a legacy platform waits for the customer's answer.
#[derive(Debug, Clone, Copy)]
pub struct DecisionPoint {
    /// The platform, e.g. `voicenter`.
    pub vendor: &'static str,
    /// The decision kind, used in the webhook type `decision.{kind}` and in configuration,
    /// e.g. `ivr_action`, `layer_input`, `caller_lookup`.
    pub kind: &'static str,
    /// The longest the platform tolerates, in milliseconds; a configured deadline above it is
    /// a configuration error.
    pub platform_max_ms: u64,
    /// The action this point falls back to when the tenant configured none.
    pub default_fallback: fn() -> Answer,
    /// Whether the platform can carry out an answer at this point; an `Err` names why not.
    pub validate: fn(&Answer) -> Result<(), String>,
    /// The key/value data a valid native answer attaches to the call (Voicenter's
    /// `CUSTOM_DATA`); neutral answers attach through [`action::Envelope::attach`].
    pub native_attach: fn(&serde_json::Value) -> Map<String, Value>,
}

impl DecisionPoint {
    /// The data an answer attaches to the call, neutral or native.
    pub fn attached_by(&self, answer: &Answer) -> Map<String, Value> {
        match answer {
            Answer::Action(envelope) => envelope.attach.clone(),
            Answer::Native(native) => (self.native_attach)(native),
        }
    }
}

/// The vendor's identifiers for a call.
#[derive(Debug, Clone, Default)]
pub struct CallRef {
    /// The vendor id that keys the call (e.g. Voicenter's `IVR_UNIQUE_ID`); `None` when the
    /// request is not about a call (a caller lookup).
    pub vendor_call_id: Option<String>,
    /// Every vendor id seen on the request, under the vendor's own names
    /// (`IVR_UNIQUE_ID`, `OriginalIvrUniqueID`, ...).
    pub correlation: Map<String, Value>,
}

/// A synchronous question to the customer.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    pub tenant: String,
    pub point: &'static DecisionPoint,
    pub call: CallRef,
    /// Vendor-neutral fields (`from`, `to`, `dtmf`, `menu`, ...). One named like a key the
    /// core sets (`decision_id`, `call_id`, `kind`, `previous_decision`, ...) is left out.
    pub data: Map<String, Value>,
    /// The vendor's fields, untouched.
    pub vendor_fields: Map<String, Value>,
    /// This request's own limit, when the platform said how long it waits this time (an
    /// OpenScape channel's RpcTimeout); the tenant's configured deadline still applies when it
    /// is shorter.
    pub deadline_ms: Option<u64>,
}

/// Why the customer's answer was replaced by a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    Timeout,
    Connect,
    Status,
    Invalid,
    RateLimited,
    CircuitOpen,
    /// The gateway is stopping and its shutdown grace ran out before the customer answered.
    Shutdown,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Timeout => "timeout",
            FallbackReason::Connect => "connect_error",
            FallbackReason::Status => "bad_status",
            FallbackReason::Invalid => "invalid_answer",
            FallbackReason::RateLimited => "rate_limited",
            FallbackReason::CircuitOpen => "circuit_open",
            FallbackReason::Shutdown => "shutdown",
        }
    }
}

/// Where the answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerSource {
    Customer,
    FallbackUrl,
    Fallback(FallbackReason),
}

/// The outcome of a decision: always something the platform can carry out.
#[derive(Debug, Clone)]
pub struct Decision {
    pub decision_id: String,
    /// The ivrgate call id, when the request was about a call.
    pub call_id: Option<String>,
    pub answer: Answer,
    pub source: AnswerSource,
    /// The data attached to the call so far, including what this answer attached.
    pub attached: Map<String, Value>,
}

/// What an event does to the call it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEffect {
    /// The call goes on (or the event is about a call that already ended, e.g. a late CDR).
    Continue,
    /// The call ended: its live state is released, its id and sequence numbers are kept.
    End,
}

/// A stored legacy answer, returned as is when the platform resends the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Duplicate detection for legacy resends.
#[derive(Debug, Clone)]
pub struct Dedup {
    /// Identifies the request (method, call id and body); the core scopes it to the tenant.
    pub key: Vec<u8>,
    /// The answer to give now and to any resend within the dedup window.
    pub response: StoredResponse,
}

/// An event to store durably and deliver as a webhook.
#[derive(Debug, Clone)]
pub struct EventSubmission {
    pub tenant: String,
    pub vendor: &'static str,
    /// The webhook type, e.g. `call.hangup`, `call.cdr`.
    pub event_type: &'static str,
    pub call: CallRef,
    /// When it happened, if the vendor said so plausibly; otherwise the receipt time is used.
    pub occurred_at: Option<SystemTime>,
    /// Vendor-neutral fields. One named like a key the core sets (`event_id`, `call_id`,
    /// `tenant`, `attached`, `seq`, ...) is left out of the payload, and logged.
    pub data: Map<String, Value>,
    /// The vendor's fields, untouched.
    pub vendor_fields: Map<String, Value>,
    pub effect: CallEffect,
    pub dedup: Option<Dedup>,
}

/// The outcome of [`Gateway::record`].
#[derive(Debug, Clone)]
pub enum Recorded {
    /// Committed and fsynced.
    New {
        event_id: String,
        call_id: Option<String>,
        seq: Option<u64>,
    },
    /// The same request was recorded before: answer as the first time.
    Duplicate(StoredResponse),
}

/// Why an event could not be stored. The adapter answers with its platform's "try again".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The tenant's outbox holds as many undelivered events as its quota allows.
    QuotaExceeded,
    /// Free space under the state directory is below the configured reserve.
    StorageFull,
    /// The store failed or is shutting down.
    Unavailable(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::QuotaExceeded => f.write_str("tenant outbox quota exceeded"),
            RecordError::StorageFull => f.write_str("storage nearly full"),
            RecordError::Unavailable(why) => write!(f, "storage unavailable: {why}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Masks all but the last three digits of a phone number for log lines.
pub fn mask_phone(number: &str, enabled: bool) -> String {
    if !enabled {
        return number.to_owned();
    }
    let digits = number.chars().filter(|c| c.is_ascii_alphanumeric()).count();
    let keep = digits.saturating_sub(3);
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                seen += 1;
                if seen <= keep {
                    return '*';
                }
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_all_but_last_three() {
        assert_eq!(mask_phone("0540000123", true), "*******123");
        assert_eq!(mask_phone("+972-54", true), "+**2-54");
        assert_eq!(mask_phone("0540000123", false), "0540000123");
    }
}
