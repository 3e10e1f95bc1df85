//! What the core lets a watcher see of its webhook traffic, as it happens: each decision
//! and event request as sent (headers and body), what came back, and how each decision was
//! settled (the customer's answer, or the fallback and exactly why). `ivrgate simulate`
//! prints and records a call from it; the daemon sets no observer, and then nothing here
//! costs more than a branch.

use bytes::Bytes;
use serde_json::Value;

/// One thing the core did with a webhook.
#[derive(Debug, Clone)]
pub enum Observed {
    /// A signed request is about to go out: a decision (`decision.<kind>`) or one delivery
    /// attempt of an event.
    Sent(Sent),
    /// What the endpoint answered to a [`Observed::Sent`] request, or why there was no answer.
    Answered(Answered),
    /// A decision is settled: the answer the platform gets and where it came from.
    Decided(Decided),
}

/// A webhook request as sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `webhook-id`: the decision id or the event id.
    pub id: String,
    /// The payload type (`decision.ivr_action`, `call.hangup`, ...).
    pub webhook_type: String,
    /// The endpoint, redacted (no credentials, no secret query parameters).
    pub url: String,
    /// This try: the decision URL then the fallback URL (decisions), or the delivery attempt
    /// (events), as `number` of `of`.
    pub attempt: u32,
    pub of: u32,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// The endpoint's answer to one request.
#[derive(Debug, Clone)]
pub struct Answered {
    pub id: String,
    pub webhook_type: String,
    pub attempt: u32,
    /// The HTTP status, when one came back.
    pub status: Option<u16>,
    /// The answer's body (decisions only; capped as the core caps it).
    pub body: Option<Bytes>,
    pub elapsed_ms: u64,
    /// What went wrong, in the words of the log line, when this answer is not used: a
    /// decision's fallback reason and error ("invalid answer: CALL dials exactly one target,
    /// got 2 ..."), an event's delivery failure.
    pub error: Option<String>,
    /// Events: `delivered`, `retry` (with `retry_in_ms`), `dead`, `gone`; decisions: `answer`
    /// or the fallback reason of this try.
    pub outcome: String,
    pub retry_in_ms: Option<u64>,
}

/// How a decision was settled.
#[derive(Debug, Clone)]
pub struct Decided {
    pub decision_id: String,
    pub kind: String,
    pub vendor: String,
    pub vendor_call_id: Option<String>,
    /// `customer`, `fallback_url` or `fallback`.
    pub source: String,
    /// Why the fallback answered (`timeout`, `invalid`, `connect`, ...), when it did.
    pub fallback_reason: Option<String>,
    /// The answer handed to the adapter, as JSON (neutral or `{"native": ...}`).
    pub answer: Value,
}

/// Watches the core. Called inline on the request path: must be quick and never block.
pub trait Observer: Send + Sync {
    fn observe(&self, what: Observed);
}
