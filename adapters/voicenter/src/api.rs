//! Voicenter's outbound APIs behind the command API (`/api/{tenant}/voicenter/...`,
//! `docs/voicenter.md`): Click2Call (seed §1), the call log (§3), the Dialer API (§6), active
//! calls and queue callers (§7), the extension list (§8), agent login/logout (§10) and the
//! neutral `originate`.
//!
//! The customer sends JSON with the seed's parameter names; ivrgate adds the tenant's secret
//! `code`, calls Voicenter through the core's platform client (which logs every URL with the
//! `code` redacted and counts it), reads the answer whatever its encoding (XML-RPC, JSON,
//! the seed's unquoted-key JSON) and answers JSON: `{"method", "voicenter": <answer>}`, or an
//! error whose `message` is Voicenter's own text and whose HTTP status says whose fault it
//! was. Per tenant: a governor limit with a bounded queue (then 429 with `Retry-After`), a
//! timeout (504), retries only for methods that read, `Idempotency-Key` on methods that place
//! or queue calls (kept as `voicenter.idempotency` entities).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ivrgate_adapter::{
    idempotency, Command, CommandReply, EntityKey, Gateway, OutboundError, OutboundRequest,
    OutboundResponse,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Seed hosts, the defaults of the base URLs.
pub const DEFAULT_CLICK2CALL_URL: &str =
    "https://api.voicenter.co.il/ForwardDialer/click2call.aspx";
pub const DEFAULT_CDR_URL: &str = "https://api1.voicenter.co.il/hub/cdr/";
pub const DEFAULT_DIALER_URL: &str = "https://api.voicenter.co.il/ForwardDialer/Dialer";
pub const DEFAULT_MONITOR_URL: &str = "https://monitor.voicenter.co.il/comet/API";
pub const DEFAULT_LOGIN_URL: &str = "https://betaapi.voicenter.co.il/UserLogin/SetStatusFromAPI";

/// Entity kind of stored idempotency keys.
pub const IDEMPOTENCY_KIND: &str = "voicenter.idempotency";

/// One tenant's `[tenants.voicenter_api]`, secrets resolved.
pub struct ApiSettings {
    code: String,
    pub click2call_url: String,
    pub cdr_url: String,
    pub dialer_url: String,
    pub monitor_url: String,
    pub login_url: String,
    pub timeout: Duration,
    pub retries: u32,
    pub queue_wait: Duration,
    pub bulk_max_rows: usize,
    pub bulk_chunk_rows: usize,
    /// Destination prefixes allowed for calls ivrgate places (`None`: any).
    pub allow_destinations: Option<Vec<String>>,
    /// The §7 active-calls poller: its interval (`None`: off) and its request cap.
    pub poll_interval: Option<Duration>,
    pub poll_max_requests_per_min: u32,
    limiter: DefaultDirectRateLimiter,
    queue: tokio::sync::Semaphore,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("code", &"***")
            .field("click2call_url", &self.click2call_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

const KEYS: &[&str] = &[
    "code",
    "click2call_url",
    "cdr_url",
    "dialer_url",
    "monitor_url",
    "login_url",
    "timeout_ms",
    "retries",
    "rate_per_s",
    "burst",
    "queue",
    "queue_wait_ms",
    "bulk_max_rows",
    "bulk_chunk_rows",
    "allow_destinations",
    "poll_interval_ms",
    "poll_max_requests_per_min",
];

fn resolve_secret(source: &str) -> Result<String, String> {
    if let Some(name) = source.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
    } else if let Some(path) = source.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("cannot read {path}: {e}"))
    } else {
        Err("must be a secret source, env:NAME or file:/path (never the code itself)".into())
    }
}

impl ApiSettings {
    /// Reads the section (`Value::Null`: the tenant does not use the APIs).
    pub fn from_json(value: &Value) -> Result<Option<ApiSettings>, Vec<String>> {
        let map = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            _ => return Err(vec!["[voicenter_api] must be a table".into()]),
        };
        let mut problems = Vec::new();
        for key in map.keys() {
            if !KEYS.contains(&key.as_str()) {
                problems.push(format!("voicenter_api: unknown key {key:?}"));
            }
        }
        let text = |name: &str, default: &str, problems: &mut Vec<String>| match map.get(name) {
            None => default.to_owned(),
            Some(Value::String(s)) if s.starts_with("https://") || s.starts_with("http://") => {
                s.trim_end_matches('/').to_owned() + if name == "cdr_url" { "/" } else { "" }
            }
            Some(_) => {
                problems.push(format!("voicenter_api.{name} must be an http(s) URL"));
                default.to_owned()
            }
        };
        let int =
            |name: &str, default: u64, min: u64, max: u64, problems: &mut Vec<String>| match map
                .get(name)
            {
                None => default,
                Some(v) => match v.as_u64().filter(|n| (min..=max).contains(n)) {
                    Some(n) => n,
                    None => {
                        problems.push(format!(
                            "voicenter_api.{name} must be an integer from {min} to {max}"
                        ));
                        default
                    }
                },
            };
        let code = match map.get("code") {
            Some(Value::String(source)) => match resolve_secret(source) {
                Ok(code) if !code.trim().is_empty() => code.trim().to_owned(),
                Ok(_) => {
                    problems.push("voicenter_api.code is empty".into());
                    String::new()
                }
                Err(why) => {
                    problems.push(format!("voicenter_api.code {why}"));
                    String::new()
                }
            },
            _ => {
                problems.push("voicenter_api.code is required (env:NAME or file:/path)".into());
                String::new()
            }
        };
        let allow_destinations = match map.get("allow_destinations") {
            None => None,
            Some(Value::Array(items)) => {
                let prefixes: Option<Vec<String>> = items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                            .map(str::to_owned)
                    })
                    .collect();
                if prefixes.is_none() {
                    problems.push(
                        "voicenter_api.allow_destinations holds digit prefixes, e.g. \"9723\""
                            .into(),
                    );
                }
                prefixes
            }
            Some(_) => {
                problems.push("voicenter_api.allow_destinations is an array of prefixes".into());
                None
            }
        };
        let settings = ApiSettings {
            click2call_url: text("click2call_url", DEFAULT_CLICK2CALL_URL, &mut problems),
            cdr_url: text("cdr_url", DEFAULT_CDR_URL, &mut problems),
            dialer_url: text("dialer_url", DEFAULT_DIALER_URL, &mut problems),
            monitor_url: text("monitor_url", DEFAULT_MONITOR_URL, &mut problems),
            login_url: text("login_url", DEFAULT_LOGIN_URL, &mut problems),
            timeout: Duration::from_millis(int("timeout_ms", 10_000, 100, 120_000, &mut problems)),
            retries: int("retries", 2, 0, 5, &mut problems) as u32,
            queue_wait: Duration::from_millis(int(
                "queue_wait_ms",
                2_000,
                0,
                60_000,
                &mut problems,
            )),
            bulk_max_rows: int("bulk_max_rows", 10_000, 1, 100_000, &mut problems) as usize,
            bulk_chunk_rows: int("bulk_chunk_rows", 500, 1, 10_000, &mut problems) as usize,
            allow_destinations,
            poll_interval: map
                .contains_key("poll_interval_ms")
                .then(|| int("poll_interval_ms", 10_000, 1_000, 3_600_000, &mut problems))
                .map(Duration::from_millis),
            poll_max_requests_per_min: int("poll_max_requests_per_min", 12, 1, 600, &mut problems)
                as u32,
            limiter: {
                let rate = int("rate_per_s", 5, 1, 10_000, &mut problems) as u32;
                let burst = int("burst", 10, 1, 10_000, &mut problems) as u32;
                let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
                RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
            },
            queue: tokio::sync::Semaphore::new(int("queue", 20, 0, 10_000, &mut problems) as usize),
            code,
        };
        if problems.is_empty() {
            Ok(Some(settings))
        } else {
            Err(problems)
        }
    }

    /// Whether `destination` may be called (the allowlist, when there is one).
    pub fn allows(&self, destination: &str) -> bool {
        let digits: String = destination
            .trim_start_matches('+')
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .collect();
        match &self.allow_destinations {
            None => true,
            Some(prefixes) => prefixes.iter().any(|p| digits.starts_with(p.as_str())),
        }
    }
}

/// Which document a method belongs to: how its answer says success or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// §1: `ERRORCODE`, `ERRORMESSAGE`, `CALLID`.
    Click2Call,
    /// §3: `ERROR_NUMBER`, `ERROR_DESCRIPTION`.
    CallLog,
    /// §6: `ErrorCode`, `Description`.
    Dialer,
    /// §7, §8: `ERR`, `DESC`.
    Monitor,
    /// §10: `Status` (1 = OK), `StatusError`, `StatusErrorMessage`.
    Login,
}

/// One method of Voicenter's APIs as the command API offers it.
#[derive(Debug, Clone, Copy)]
struct Method {
    /// The seed's name (metrics and logs).
    name: &'static str,
    family: Family,
    /// Safe to send again (reads): retried on timeouts, connection failures and 5xx.
    safe: bool,
    /// Places or queues calls: takes `Idempotency-Key` and the destination allowlist.
    places: bool,
}

const DIALER: &[(&str, bool, bool)] = &[
    // (name, safe, places)
    ("AddCall", false, true),
    ("RemoveCall", false, false),
    ("GetCampaignList", true, false),
    ("GetMembersList", true, false),
    ("RemoveMember", false, false),
    ("AddMember", false, false),
    ("StopCampaign", false, false),
    ("StartCampaign", false, false),
    ("UpdateCampaignStrategy", false, false),
    ("ClearCampaignCalls", false, false),
    ("AddCallsBulk", false, true),
    ("GetCampaignPendingCalls", true, false),
    ("UpdateCall", false, false),
    ("GetCampaignDetails", true, false),
    ("ConfigureIvrCampaign", false, false),
];

/// The Dialer method named by a path segment (its seed name, any case).
fn dialer_method(segment: &str) -> Option<Method> {
    DIALER
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(segment))
        .map(|&(name, safe, places)| Method {
            name,
            family: Family::Dialer,
            safe,
            places,
        })
}

fn error(status: u16, code: &str, message: impl Into<String>) -> CommandReply {
    CommandReply::error(status, code, message)
}

fn retry_later(code: &str, message: &str, seconds: u64) -> CommandReply {
    CommandReply {
        status: 429,
        body: json!({"error": {"code": code, "message": message, "retry_after_s": seconds}}),
    }
}

/// A scalar parameter as Voicenter's form and query values want it.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Refuses the keys ivrgate sets itself.
fn reserved(body: &Map<String, Value>, keys: &[&str]) -> Result<(), CommandReply> {
    for key in body.keys() {
        if keys.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(error(
                422,
                "reserved_field",
                format!("{key} is set by ivrgate (the tenant's configuration), not by the request"),
            ));
        }
    }
    Ok(())
}

fn object(body: &Value) -> Result<Map<String, Value>, CommandReply> {
    match body {
        Value::Object(map) => Ok(map.clone()),
        Value::Null => Ok(Map::new()),
        _ => Err(error(422, "invalid_body", "the body is a JSON object")),
    }
}

/// Click2Call's form fields from a JSON body: scalars as they are, `custom_data` (or
/// `CustomData`) keys as `var_*` (at most 10, as the seed allows).
fn click2call_form(
    settings: &ApiSettings,
    action: &str,
    body: &Map<String, Value>,
) -> Result<Vec<(String, String)>, CommandReply> {
    reserved(body, &["code", "format", "action"])?;
    let mut pairs = vec![
        ("code".to_owned(), settings.code.clone()),
        ("action".to_owned(), action.to_owned()),
        ("format".to_owned(), "JSON".to_owned()),
    ];
    let mut vars = 0;
    for (key, value) in body {
        if key.eq_ignore_ascii_case("custom_data") || key == "CustomData" {
            let Value::Object(custom) = value else {
                return Err(error(422, "invalid_field", format!("{key} is an object")));
            };
            for (name, v) in custom {
                let v = scalar(v).ok_or_else(|| {
                    error(422, "invalid_field", format!("{key}.{name} is a scalar"))
                })?;
                let name = if name.starts_with("var_") {
                    name.clone()
                } else {
                    format!("var_{name}")
                };
                vars += 1;
                pairs.push((name, v));
            }
            continue;
        }
        let v = scalar(value)
            .ok_or_else(|| error(422, "invalid_field", format!("{key} is a scalar")))?;
        if key.starts_with("var_") {
            vars += 1;
        }
        pairs.push((key.clone(), v));
    }
    if vars > 10 {
        return Err(error(
            422,
            "invalid_field",
            format!("{vars} var_* parameters; Voicenter takes at most 10"),
        ));
    }
    Ok(pairs)
}

/// The value of a field by any of its spellings (the seed writes `Phone` and `phone`).
fn field<'a>(body: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    body.iter()
        .find(|(k, _)| names.iter().any(|n| n.eq_ignore_ascii_case(k)))
        .map(|(_, v)| v)
}

/// Reads Voicenter's answer into JSON: XML-RPC (`<methodResponse>`), JSON, or the seed's
/// JSON with unquoted keys and trailing commas.
fn read_answer(response: &OutboundResponse) -> Result<Value, String> {
    let text = std::str::from_utf8(&response.body)
        .map_err(|_| "the answer is not UTF-8".to_owned())?
        .trim_start_matches('\u{feff}')
        .trim();
    if text.is_empty() {
        return Err("an empty answer".into());
    }
    let limits = ivrgate_wire::Limits::default();
    if text.starts_with('<') {
        if text.len() >= 5 && text[..5].eq_ignore_ascii_case("<html") || text.starts_with("<!") {
            return Err("an HTML page, not an API answer".into());
        }
        return match ivrgate_wire::xmlrpc::parse_response(text, &limits) {
            Ok(Ok(params)) => Ok(params
                .first()
                .map(ivrgate_wire::xmlrpc::Value::to_json)
                .unwrap_or(Value::Null)),
            Ok(Err(fault)) => Ok(json!({"faultCode": fault.code, "faultString": fault.message})),
            Err(e) => Err(format!("unreadable XML: {e}")),
        };
    }
    ivrgate_wire::json::parse_lenient(text, &limits).map_err(|e| format!("unreadable JSON: {e}"))
}

fn number(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.to_string().parse().ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_of(value: Option<&Value>) -> String {
    value.and_then(scalar).unwrap_or_default()
}

/// Voicenter's verdict: `Ok` or (HTTP status, error code, Voicenter's code, its message).
fn verdict(family: Family, answer: &Value) -> Result<(), (u16, &'static str, i64, String)> {
    let get = |name: &str| answer.get(name);
    if let Some(code) = number(get("faultCode")) {
        return Err((502, "voicenter_fault", code, text_of(get("faultString"))));
    }
    let (code, message) = match family {
        Family::Click2Call => (number(get("ERRORCODE")), text_of(get("ERRORMESSAGE"))),
        Family::CallLog => (
            number(get("ERROR_NUMBER")),
            text_of(get("ERROR_DESCRIPTION")),
        ),
        Family::Dialer => (number(get("ErrorCode")), text_of(get("Description"))),
        Family::Monitor => (number(get("ERR")), text_of(get("DESC"))),
        Family::Login => {
            let status = number(get("Status"));
            if status == Some(1) {
                return Ok(());
            }
            let detail = text_of(get("StatusErrorMessage"));
            let message = if detail.is_empty() {
                text_of(get("StatusError"))
            } else {
                detail
            };
            let status = status.unwrap_or(-1);
            let http = match status {
                2 => (502, "voicenter_auth_failed"),
                3 => (422, "voicenter_refused"),
                4 | 5 => (409, "voicenter_refused"),
                _ => (502, "voicenter_unexpected"),
            };
            return Err((http.0, http.1, status, message));
        }
    };
    let Some(code) = code else {
        return Err((
            502,
            "voicenter_unexpected",
            -1,
            "the answer carries no error code".into(),
        ));
    };
    if code == 0 {
        return Ok(());
    }
    let auth = message.to_ascii_lowercase().contains("authoriz")
        || message.to_ascii_lowercase().contains("not trusted");
    let (status, name) = match (family, code) {
        _ if auth => (502, "voicenter_auth_failed"),
        (Family::Click2Call, 1) => (422, "voicenter_refused"),
        (Family::Click2Call, 3) => (409, "voicenter_refused"),
        (Family::Click2Call, 4) => (403, "voicenter_refused"),
        (Family::CallLog, 1) => (429, "voicenter_rate_limited"),
        (Family::CallLog, 3) => (422, "voicenter_refused"),
        (Family::Dialer, 1) => (404, "voicenter_refused"),
        (Family::Dialer, 2 | 4) => (422, "voicenter_refused"),
        _ => (502, "voicenter_error"),
    };
    Err((status, name, code, message))
}

/// The command API reply for Voicenter's answer.
fn reply_for(method: &Method, answer: Value) -> CommandReply {
    match verdict(method.family, &answer) {
        Ok(()) => CommandReply::ok(json!({"method": method.name, "voicenter": answer})),
        Err((status, code, vc_code, message)) => {
            let message = if message.is_empty() {
                format!("Voicenter answered error {vc_code} without a message")
            } else {
                message
            };
            let mut error = json!({
                "code": code,
                "message": message,
                "method": method.name,
                "voicenter_code": vc_code,
            });
            if code == "voicenter_auth_failed" {
                error["hint"] = json!(
                    "Voicenter refused the tenant's code (or this host's address): check [tenants.voicenter_api] code"
                );
            }
            if status == 429 {
                error["retry_after_s"] = json!(5);
            }
            CommandReply {
                status,
                body: json!({"error": error, "voicenter": answer}),
            }
        }
    }
}

/// What one request to Voicenter is.
struct Upstream {
    get: bool,
    url: String,
    content_type: Option<&'static str>,
    body: Bytes,
}

enum Sent {
    Answer(OutboundResponse),
    /// No answer: (status, code, message); `sent` when the request may have reached Voicenter.
    Failed(u16, &'static str, String, bool),
}

/// Sends one request under the tenant's limit, with retries for safe methods.
async fn send(
    gw: &dyn Gateway,
    settings: &ApiSettings,
    tenant: &str,
    method: &Method,
    upstream: &Upstream,
) -> Result<Sent, CommandReply> {
    let Some(client) = gw.platform_api() else {
        return Err(error(
            503,
            "unavailable",
            "no platform client in this process",
        ));
    };
    let attempts = if method.safe { settings.retries + 1 } else { 1 };
    let mut last = Sent::Failed(502, "upstream_unreachable", "not sent".into(), false);
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
        }
        admit(settings, tenant, method).await?;
        let mut headers = Vec::new();
        if let Some(ct) = upstream.content_type {
            headers.push(("Content-Type".to_owned(), ct.to_owned()));
        }
        headers.push((
            "Accept".to_owned(),
            "application/json, text/xml;q=0.9".to_owned(),
        ));
        let request = OutboundRequest {
            url: upstream.url.clone(),
            headers,
            body: upstream.body.clone(),
            timeout: Some(settings.timeout),
        };
        let result = if upstream.get {
            client.get(request).await
        } else {
            client.post(request).await
        };
        last = match result {
            Ok(r) if r.status >= 500 => Sent::Failed(
                502,
                "upstream_http",
                format!("Voicenter answered HTTP {}", r.status),
                true,
            ),
            Ok(r) if r.status >= 300 && r.status < 400 => Sent::Answer(r),
            Ok(r) => return Ok(Sent::Answer(r)),
            Err(OutboundError::Timeout) => Sent::Failed(
                504,
                "upstream_timeout",
                format!(
                    "Voicenter did not answer within {} ms",
                    settings.timeout.as_millis()
                ),
                true,
            ),
            Err(OutboundError::Connect(e)) => Sent::Failed(
                502,
                "upstream_unreachable",
                format!("Voicenter: {e}"),
                false,
            ),
            Err(OutboundError::Body(e)) => {
                Sent::Failed(502, "upstream_unreadable", format!("Voicenter: {e}"), true)
            }
        };
        if let Sent::Failed(_, code, message, _) = &last {
            tracing::warn!(
                tenant, method = method.name, attempt = attempt + 1, outcome = code,
                reason = %message, "voicenter API call failed"
            );
        }
    }
    Ok(last)
}

/// The tenant's limit: a place in the bounded queue, then a governor cell within
/// `queue_wait`; otherwise 429.
async fn admit(settings: &ApiSettings, tenant: &str, method: &Method) -> Result<(), CommandReply> {
    if settings.limiter.check().is_ok() {
        return Ok(());
    }
    let Ok(_place) = settings.queue.try_acquire() else {
        tracing::warn!(
            tenant,
            method = method.name,
            "voicenter API limit: queue full, answered 429"
        );
        return Err(retry_later(
            "rate_limited",
            "too many Voicenter API calls for this tenant; try again shortly",
            1,
        ));
    };
    match tokio::time::timeout(settings.queue_wait, settings.limiter.until_ready()).await {
        Ok(()) => Ok(()),
        Err(_) => {
            tracing::warn!(
                tenant,
                method = method.name,
                "voicenter API limit: waited too long, answered 429"
            );
            Err(retry_later(
                "rate_limited",
                "too many Voicenter API calls for this tenant; try again shortly",
                1,
            ))
        }
    }
}

/// Calls Voicenter and turns the outcome into the reply; `sent` says whether the call may
/// have reached Voicenter without an answer (a timeout).
async fn call(
    gw: &dyn Gateway,
    settings: &ApiSettings,
    tenant: &str,
    method: &Method,
    upstream: &Upstream,
) -> (CommandReply, bool) {
    let sent = match send(gw, settings, tenant, method, upstream).await {
        Ok(sent) => sent,
        Err(reply) => return (reply, false),
    };
    let (reply, unknown) = match sent {
        Sent::Failed(status, code, message, reached) => (
            CommandReply::error(status, code, message),
            reached && status == 504,
        ),
        Sent::Answer(response) if response.status >= 300 => (
            CommandReply::error(
                502,
                "upstream_http",
                format!("Voicenter answered HTTP {}", response.status),
            ),
            false,
        ),
        Sent::Answer(response) => match read_answer(&response) {
            Ok(answer) => (reply_for(method, answer), false),
            Err(why) => (
                CommandReply::error(
                    502,
                    "upstream_unreadable",
                    format!("Voicenter's answer: {why}"),
                ),
                false,
            ),
        },
    };
    let outcome = if reply.status < 300 {
        "ok".to_owned()
    } else {
        reply.body["error"]["code"]
            .as_str()
            .unwrap_or("error")
            .to_owned()
    };
    tracing::info!(tenant, method = method.name, status = reply.status, outcome = %outcome, "voicenter API call");
    (reply, unknown)
}

/// Runs `method` with the key's protection when the request has one.
async fn guarded(
    gw: &dyn Gateway,
    settings: &ApiSettings,
    cmd: &Command,
    method: &Method,
    upstream: Upstream,
) -> CommandReply {
    let key = match idempotency::key(cmd) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let Some(key) = key.filter(|_| method.places) else {
        return call(gw, settings, &cmd.tenant, method, &upstream).await.0;
    };
    let mut hash = Sha256::new();
    hash.update(method.name.as_bytes());
    hash.update([0]);
    hash.update(cmd.body.to_string().as_bytes());
    let fingerprint = format!("{:x}", hash.finalize());
    let entity = EntityKey::new(cmd.tenant.clone(), IDEMPOTENCY_KIND, key);
    let stale_ms =
        (settings.timeout.as_millis() as i64) * 2 + settings.queue_wait.as_millis() as i64;
    match idempotency::claim(gw, &entity, &fingerprint, stale_ms).await {
        Ok(idempotency::Claim::Go) => {}
        Ok(idempotency::Claim::Answer(reply)) | Err(reply) => return reply,
    }
    let (reply, unknown) = call(gw, settings, &cmd.tenant, method, &upstream).await;
    store_outcome(gw, &entity, &fingerprint, &reply, unknown).await;
    reply
}

/// Keeps what became of a request under its key: a timeout is `Unknown` (never sent again),
/// a request that never left frees the key, anything Voicenter answered is replayed.
async fn store_outcome(
    gw: &dyn Gateway,
    entity: &EntityKey,
    fingerprint: &str,
    reply: &CommandReply,
    unknown: bool,
) {
    let code = reply.body["error"]["code"].as_str().unwrap_or("");
    let outcome = if unknown {
        idempotency::Outcome::Unknown
    } else if matches!(
        code,
        "upstream_unreachable" | "rate_limited" | "unavailable"
    ) {
        idempotency::Outcome::NotSent
    } else {
        idempotency::Outcome::Answered
    };
    if let Err(e) = idempotency::settle(gw, entity, fingerprint, reply, outcome).await {
        tracing::warn!(entity = %entity.id, error = %e, "voicenter API: idempotency outcome not stored");
    }
}

/// `/api/{tenant}/voicenter/...`.
pub async fn command(
    gw: &dyn Gateway,
    settings: Option<&ApiSettings>,
    cmd: Command,
) -> CommandReply {
    let Some(settings) = settings else {
        return error(
            404,
            "not_found",
            "this tenant has no [tenants.voicenter_api] section",
        );
    };
    let path = cmd.path.as_strs();
    let get = cmd.method == http::Method::GET;
    let post = cmd.method == http::Method::POST;
    let built: Result<(Method, Upstream), CommandReply> = match (path.as_slice(), get, post) {
        (["originate"], _, true) => {
            return originate(gw, settings, &cmd).await;
        }
        (["click2call", rest @ ..], _, true) => {
            let action = match rest {
                [] => "call",
                ["message"] => "message",
                ["callference"] => "callference",
                ["terminate"] => "terminate",
                _ => return error(404, "not_found", "no such Click2Call action"),
            };
            click2call(settings, action, &cmd.body)
        }
        (["call-log"], _, true) => call_log(settings, &cmd.body),
        (["dialer", name], _, true) => match dialer_method(name) {
            Some(method) if method.name == "AddCallsBulk" => {
                return bulk(gw, settings, &cmd, method).await;
            }
            Some(method) => dialer(settings, method, &cmd.body),
            None => Err(error(
                404,
                "not_found",
                format!("no Dialer method {name:?}"),
            )),
        },
        (["active-calls", "extensions"], true, _) => monitor(settings, "GetExtensionsCalls", &[]),
        (["active-calls", "queues"], true, _) => monitor(settings, "GetQueuesCallers", &[]),
        (["extensions"], true, _) => {
            let all = query_value(cmd.query.as_deref(), "show_all")
                .map(|v| matches!(v.as_str(), "1" | "true" | "yes"))
                .unwrap_or(false);
            monitor(
                settings,
                "GetExtensions",
                &[("showAll", if all { "1" } else { "0" })],
            )
        }
        (["agents", "status"], _, true) => login(settings, &cmd.body),
        (["originate" | "click2call" | "call-log" | "agents", ..] | ["dialer", _], _, _) => {
            Err(error(405, "method_not_allowed", "use POST"))
        }
        (["active-calls", ..] | ["extensions"], _, _) => {
            Err(error(405, "method_not_allowed", "use GET"))
        }
        _ => Err(error(404, "not_found", "no such Voicenter resource")),
    };
    let (method, upstream) = match built {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    if method.places {
        if let Err(reply) = check_allowed(settings, &cmd.body) {
            return reply;
        }
    }
    guarded(gw, settings, &cmd, &method, upstream).await
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    ivrgate_wire::form::parse(query?)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Destinations of a call-placing body under the allowlist (`target`, `Target`, `phone`).
fn check_allowed(settings: &ApiSettings, body: &Value) -> Result<(), CommandReply> {
    if settings.allow_destinations.is_none() {
        return Ok(());
    }
    let Value::Object(map) = body else {
        return Ok(());
    };
    for name in ["target", "to"] {
        if let Some(v) = field(map, &[name]).and_then(scalar) {
            if !settings.allows(&v) {
                return Err(not_allowed(name, &v));
            }
        }
    }
    Ok(())
}

fn not_allowed(field: &str, _value: &str) -> CommandReply {
    error(
        403,
        "destination_not_allowed",
        format!("{field}: the destination is not in this tenant's allow_destinations"),
    )
}

fn click2call(
    settings: &ApiSettings,
    action: &str,
    body: &Value,
) -> Result<(Method, Upstream), CommandReply> {
    let map = object(body)?;
    let pairs = click2call_form(settings, action, &map)?;
    Ok((
        Method {
            name: match action {
                "call" => "Click2Call",
                "message" => "Click2Call.message",
                "callference" => "Click2Call.callference",
                _ => "Click2Call.terminate",
            },
            family: Family::Click2Call,
            safe: false,
            places: action != "terminate",
        },
        Upstream {
            get: false,
            url: settings.click2call_url.clone(),
            content_type: Some("application/x-www-form-urlencoded"),
            body: Bytes::from(form(&pairs)),
        },
    ))
}

fn call_log(settings: &ApiSettings, body: &Value) -> Result<(Method, Upstream), CommandReply> {
    let mut map = object(body)?;
    reserved(&map, &["code"])?;
    match map.get("format").and_then(Value::as_str) {
        None => {}
        Some(f) if f.eq_ignore_ascii_case("json") => {}
        Some(_) => {
            return Err(error(
                422,
                "invalid_field",
                "format: the command API answers JSON only",
            ))
        }
    }
    let mut out = Map::new();
    out.insert("code".into(), json!(settings.code));
    out.insert("format".into(), json!("JSON"));
    map.remove("format");
    out.extend(map);
    Ok((
        Method {
            name: "CallLog",
            family: Family::CallLog,
            safe: true,
            places: false,
        },
        Upstream {
            get: false,
            url: settings.cdr_url.clone(),
            content_type: Some("application/json"),
            body: Bytes::from(Value::Object(out).to_string()),
        },
    ))
}

fn dialer(
    settings: &ApiSettings,
    method: Method,
    body: &Value,
) -> Result<(Method, Upstream), CommandReply> {
    let map = object(body)?;
    reserved(&map, &["code"])?;
    if method.name != "GetCampaignList" && field(&map, &["Campaign"]).and_then(scalar).is_none() {
        return Err(error(422, "missing_field", "Campaign is required"));
    }
    if matches!(method.name, "AddCall" | "UpdateCall" | "RemoveCall")
        && field(&map, &["Target"]).and_then(scalar).is_none()
    {
        return Err(error(422, "missing_field", "Target is required"));
    }
    let mut out = Map::new();
    out.insert("Code".into(), json!(settings.code));
    out.extend(map);
    Ok((
        method,
        Upstream {
            get: false,
            url: format!("{}/{}", settings.dialer_url, method.name),
            content_type: Some("application/json"),
            body: Bytes::from(Value::Object(out).to_string()),
        },
    ))
}

fn monitor(
    settings: &ApiSettings,
    name: &'static str,
    extra: &[(&str, &str)],
) -> Result<(Method, Upstream), CommandReply> {
    let mut pairs = vec![("code".to_owned(), settings.code.clone())];
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Ok((
        Method {
            name,
            family: Family::Monitor,
            safe: true,
            places: false,
        },
        Upstream {
            get: true,
            url: format!("{}/{name}?{}", settings.monitor_url, form(&pairs)),
            content_type: None,
            body: Bytes::new(),
        },
    ))
}

fn login(settings: &ApiSettings, body: &Value) -> Result<(Method, Upstream), CommandReply> {
    let map = object(body)?;
    reserved(&map, &["code"])?;
    let mut out = Map::new();
    for (name, aliases) in [
        ("UserID", &["UserID", "user_id"][..]),
        ("Status", &["Status", "status"][..]),
        ("ExtensionUser", &["ExtensionUser", "extension_user"][..]),
    ] {
        match field(&map, aliases) {
            Some(v) if scalar(v).is_some() => {
                out.insert(name.into(), v.clone());
            }
            Some(_) => return Err(error(422, "invalid_field", format!("{name} is a scalar"))),
            None if name == "ExtensionUser" => {}
            None => return Err(error(422, "missing_field", format!("{name} is required"))),
        }
    }
    out.insert("Code".into(), json!(settings.code));
    Ok((
        Method {
            name: "SetStatusFromAPI",
            family: Family::Login,
            safe: false,
            places: false,
        },
        Upstream {
            get: false,
            url: settings.login_url.clone(),
            content_type: Some("application/json"),
            body: Bytes::from(Value::Object(out).to_string()),
        },
    ))
}

/// Why one AddCallsBulk row cannot be sent, if it cannot.
fn bulk_row_problem(row: &Value) -> Option<String> {
    let Value::Object(map) = row else {
        return Some("a row is a JSON object".into());
    };
    if map.keys().any(|k| k.eq_ignore_ascii_case("code")) {
        return Some("code is set by ivrgate".into());
    }
    match field(map, &["Campaign"]) {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => return Some("Campaign is required (a string)".into()),
    }
    match field(map, &["Target"]).and_then(scalar) {
        Some(t)
            if !t.is_empty()
                && t.trim_start_matches('+')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) => {}
        Some(_) => return Some("Target is a phone number (digits)".into()),
        None => return Some("Target is required".into()),
    }
    if let Some(p) = field(map, &["Priority"]) {
        if number(Some(p)).is_none() {
            return Some("Priority is an integer".into());
        }
    }
    if let Some(c) = field(map, &["CustomData"]) {
        if !c.is_object() {
            return Some("CustomData is an object".into());
        }
    }
    None
}

/// AddCallsBulk: rows checked here first (each bad row reported, never sent), good rows
/// sent in chunks of `bulk_chunk_rows`; each row's result is its chunk's answer.
async fn bulk(
    gw: &dyn Gateway,
    settings: &ApiSettings,
    cmd: &Command,
    method: Method,
) -> CommandReply {
    let rows = match &cmd.body {
        Value::Array(rows) => rows,
        Value::Object(map) => match map.get("calls").or_else(|| map.get("Calls")) {
            Some(Value::Array(rows)) => rows,
            _ => {
                return error(
                    422,
                    "invalid_body",
                    "the body is an array of calls (or {\"calls\": [...]})",
                )
            }
        },
        _ => return error(422, "invalid_body", "the body is an array of calls"),
    };
    if rows.is_empty() {
        return error(422, "invalid_body", "no calls");
    }
    if rows.len() > settings.bulk_max_rows {
        return error(
            413,
            "too_many_rows",
            format!(
                "{} calls; at most {} in one request (bulk_max_rows)",
                rows.len(),
                settings.bulk_max_rows
            ),
        );
    }
    let mut results: Vec<Value> = Vec::with_capacity(rows.len());
    let mut good: Vec<usize> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if let Some(problem) = bulk_row_problem(row) {
            results.push(json!({"row": i, "status": "invalid", "error": problem}));
            continue;
        }
        let target = row
            .as_object()
            .and_then(|m| field(m, &["Target"]))
            .and_then(scalar)
            .unwrap_or_default();
        if !settings.allows(&target) {
            results.push(json!({"row": i, "status": "invalid", "error": "Target: the destination is not in this tenant's allow_destinations"}));
            continue;
        }
        results.push(Value::Null);
        good.push(i);
    }
    let key = match idempotency::key(cmd) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    // The whole request is one idempotent unit.
    let mut hash = Sha256::new();
    hash.update(b"AddCallsBulk\0");
    hash.update(cmd.body.to_string().as_bytes());
    let fingerprint = format!("{:x}", hash.finalize());
    let entity = key.map(|k| EntityKey::new(cmd.tenant.clone(), IDEMPOTENCY_KIND, k));
    if let Some(entity) = &entity {
        let stale_ms = (settings.timeout.as_millis() as i64)
            * 2
            * good.len().div_ceil(settings.bulk_chunk_rows).max(1) as i64
            + settings.queue_wait.as_millis() as i64;
        match idempotency::claim(gw, entity, &fingerprint, stale_ms).await {
            Ok(idempotency::Claim::Go) => {}
            Ok(idempotency::Claim::Answer(reply)) | Err(reply) => return reply,
        }
    }
    let mut unknown_any = false;
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for chunk in good.chunks(settings.bulk_chunk_rows) {
        let with_code: Vec<Value> = chunk.iter().map(|&i| rows[i].clone()).collect();
        let upstream = Upstream {
            get: false,
            url: format!(
                "{}/AddCallsBulk?{}",
                settings.dialer_url,
                form(&[("Code".to_owned(), settings.code.clone())])
            ),
            content_type: Some("application/json"),
            body: Bytes::from(Value::Array(with_code).to_string()),
        };
        let (reply, unknown) = call(gw, settings, &cmd.tenant, &method, &upstream).await;
        unknown_any |= unknown;
        let status = if reply.status == 200 {
            "queued"
        } else if unknown {
            "unknown"
        } else {
            "failed"
        };
        for &i in chunk {
            let mut r = json!({"row": i, "status": status});
            if reply.status != 200 {
                r["error"] = reply.body["error"].clone();
            }
            results[i] = r;
        }
    }
    for r in &results {
        let s = match r["status"].as_str() {
            Some("queued") => "queued",
            Some("invalid") => "invalid",
            Some("unknown") => "unknown",
            _ => "failed",
        };
        *counts.entry(s).or_default() += 1;
    }
    let reply = CommandReply {
        status: if counts.get("queued").copied().unwrap_or(0) == rows.len() {
            200
        } else {
            207
        },
        body: json!({
            "method": "AddCallsBulk",
            "total": rows.len(),
            "queued": counts.get("queued").copied().unwrap_or(0),
            "invalid": counts.get("invalid").copied().unwrap_or(0),
            "failed": counts.get("failed").copied().unwrap_or(0),
            "unknown": counts.get("unknown").copied().unwrap_or(0),
            "rows": results,
        }),
    };
    if let Some(entity) = &entity {
        store_outcome(gw, entity, &fingerprint, &reply, unknown_any).await;
    }
    reply
}

/// The neutral `originate` on Voicenter: Click2Call (`action=call`), `from` the first leg
/// (`phone`: an extension or a number), `to` the second (`target`), `attached` as `var_*`,
/// `caller_id` as `targetcallerid`. An announcement has no Click2Call equivalent: refused.
async fn originate(gw: &dyn Gateway, settings: &ApiSettings, cmd: &Command) -> CommandReply {
    let map = match object(&cmd.body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut out = Map::new();
    for (key, value) in &map {
        match key.as_str() {
            "from" => {
                out.insert("phone".into(), value.clone());
            }
            "to" => {
                out.insert("target".into(), value.clone());
            }
            "caller_id" => {
                out.insert("targetcallerid".into(), value.clone());
            }
            "record" => {
                out.insert("record".into(), value.clone());
            }
            "attached" => match value {
                Value::Object(_) => {
                    out.insert("custom_data".into(), value.clone());
                }
                Value::Null => {}
                _ => return error(422, "invalid_field", "attached is an object"),
            },
            "announcement" => {
                return error(
                    422,
                    "unsupported_field",
                    "announcement: Voicenter's Click2Call cannot play an announcement to a connected call (its action=message plays recordings to one number only)",
                )
            }
            other => {
                return error(
                    422,
                    "unsupported_field",
                    format!("{other}: not an originate field (from, to, announcement, attached, caller_id, record)"),
                )
            }
        }
    }
    for needed in ["phone", "target"] {
        if out
            .get(needed)
            .and_then(scalar)
            .filter(|s| !s.is_empty())
            .is_none()
        {
            let name = if needed == "phone" { "from" } else { "to" };
            return error(422, "missing_field", format!("{name} is required"));
        }
    }
    let to = out.get("target").and_then(scalar).unwrap_or_default();
    if !settings.allows(&to) {
        return not_allowed("to", &to);
    }
    let (mut method, upstream) = match click2call(settings, "call", &Value::Object(out)) {
        Ok(b) => b,
        Err(r) => return r,
    };
    method.name = "originate";
    let mut reply = guarded(gw, settings, cmd, &method, upstream).await;
    if reply.status == 200 {
        if let Some(id) = reply.body["voicenter"]
            .get("CALLID")
            .and_then(scalar)
            .filter(|s| !s.is_empty())
        {
            reply.body["call_id"] = json!(id);
        }
        reply.body["platform"] = json!("voicenter");
    }
    reply
}

/// The tenant's parsed section.
#[derive(Debug, Default)]
pub struct Parsed(pub Option<Arc<ApiSettings>>);

// ------------------------------------------------------------------ the §7 poller

/// Entity kinds of the poller's last view.
pub const EXTENSION_KIND: &str = "voicenter.extension";
pub const QUEUE_KIND: &str = "voicenter.queue";

impl ApiSettings {
    /// The time between two polls: the interval, stretched so that the two requests of a
    /// poll stay within `poll_max_requests_per_min`.
    pub fn poll_period(&self) -> Option<Duration> {
        let floor =
            Duration::from_millis(120_000 / u64::from(self.poll_max_requests_per_min.max(1)));
        self.poll_interval.map(|i| i.max(floor))
    }

    /// The poller's connector, when it is on.
    pub fn connector(&self) -> Option<ivrgate_adapter::ConnectorSpec> {
        let period = self.poll_period()?;
        let mut hash = Sha256::new();
        for part in [
            self.code.as_str(),
            self.monitor_url.as_str(),
            &period.as_millis().to_string(),
            &self.timeout.as_millis().to_string(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        Some(ivrgate_adapter::ConnectorSpec {
            name: "active_calls".into(),
            fingerprint: format!("{:x}", hash.finalize()),
            tls: ivrgate_adapter::ClientTls::default(),
            request_timeout: self.timeout,
        })
    }
}

fn scalar_text(v: Option<&Value>) -> Option<String> {
    v.and_then(scalar).map(|s| s.trim().to_owned())
}

/// A scalar's text, trimmed, when it is not empty.
fn non_empty_text(v: Option<&Value>) -> Option<String> {
    scalar_text(v).filter(|t| !t.is_empty())
}

/// The objects of a list by their `key` (those without one left out): an extension's calls
/// by `ivrid`, a queue's callers by `CallID`.
fn keyed_by(list: Option<&Value>, key: &str) -> Map<String, Value> {
    let items = list.and_then(Value::as_array).into_iter().flatten();
    items
        .filter_map(|item| Some((non_empty_text(item.get(key))?, item.clone())))
        .collect()
}

/// One extension's view from GetExtensionsCalls: its status and its calls by `ivrid`.
fn extension_view(ext: &Value) -> Option<(String, Value)> {
    let username = non_empty_text(ext.get("username"))?;
    let calls = keyed_by(ext.get("calls"), "ivrid");
    Some((
        username,
        json!({
            "name": ext.get("name"),
            "representative": ext.get("representative"),
            "peerstatus": ext.get("peerstatus"),
            "calls": calls,
        }),
    ))
}

fn monitor_event(
    event_type: &str,
    correlation: Map<String, Value>,
    data: Map<String, Value>,
    vendor: &Value,
) -> ivrgate_adapter::EntityEvent {
    ivrgate_adapter::EntityEvent {
        event_type: event_type.into(),
        occurred_at: None,
        correlation,
        data,
        vendor_fields: vendor.as_object().cloned().unwrap_or_default(),
    }
}

/// The events between an extension's last view and this one (none when nothing changed).
fn extension_changes(
    username: &str,
    old: Option<&Value>,
    new: &Value,
) -> Vec<ivrgate_adapter::EntityEvent> {
    let mut events = Vec::new();
    let ext_corr = || {
        let mut c = Map::new();
        c.insert("username".into(), json!(username));
        c
    };
    let status_of =
        |v: Option<&Value>| v.map(|v| (v["peerstatus"].clone(), v["representative"].clone()));
    if status_of(old) != status_of(Some(new)) {
        let mut data = Map::new();
        data.insert("extension".into(), json!(username));
        data.insert("name".into(), new["name"].clone());
        data.insert("representative".into(), new["representative"].clone());
        data.insert("peerstatus".into(), new["peerstatus"].clone());
        data.insert(
            "previous_peerstatus".into(),
            old.map(|o| o["peerstatus"].clone()).unwrap_or(Value::Null),
        );
        events.push(monitor_event(
            "voicenter.extension.status",
            ext_corr(),
            data,
            &json!({}),
        ));
    }
    let empty = Map::new();
    let old_calls = old.and_then(|o| o["calls"].as_object()).unwrap_or(&empty);
    let new_calls = new["calls"].as_object().unwrap_or(&empty);
    let call_data = |id: &str, call: &Value| {
        let mut data = Map::new();
        data.insert("extension".into(), json!(username));
        data.insert("ivrid".into(), json!(id));
        for k in [
            "direction",
            "callstatus",
            "callerphone",
            "callername",
            "answered",
            "callstarted",
            "callanswered",
        ] {
            if let Some(v) = call.get(k) {
                data.insert(k.into(), v.clone());
            }
        }
        data
    };
    let call_corr = |id: &str| {
        let mut c = ext_corr();
        c.insert("ivrid".into(), json!(id));
        c
    };
    for (id, call) in new_calls {
        match old_calls.get(id) {
            None => events.push(monitor_event(
                "voicenter.extension.call_started",
                call_corr(id),
                call_data(id, call),
                call,
            )),
            Some(before)
                if before.get("callstatus") != call.get("callstatus")
                    || before.get("answered") != call.get("answered") =>
            {
                let mut data = call_data(id, call);
                data.insert(
                    "previous_callstatus".into(),
                    before.get("callstatus").cloned().unwrap_or(Value::Null),
                );
                events.push(monitor_event(
                    "voicenter.extension.call_changed",
                    call_corr(id),
                    data,
                    call,
                ));
            }
            Some(_) => {}
        }
    }
    for (id, call) in old_calls {
        if !new_calls.contains_key(id) {
            events.push(monitor_event(
                "voicenter.extension.call_ended",
                call_corr(id),
                call_data(id, call),
                call,
            ));
        }
    }
    events
}

/// One queue's view from GetQueuesCallers: its callers by `CallID`.
fn queue_view(queue: &Value) -> Option<(String, Value)> {
    let id = non_empty_text(queue.get("ID"))?;
    let callers = keyed_by(queue.get("Callers"), "CallID");
    Some((id, json!({"name": queue.get("Name"), "callers": callers})))
}

fn queue_changes(id: &str, old: Option<&Value>, new: &Value) -> Vec<ivrgate_adapter::EntityEvent> {
    let empty = Map::new();
    let before = old.and_then(|o| o["callers"].as_object()).unwrap_or(&empty);
    let now = new["callers"].as_object().unwrap_or(&empty);
    let one = |event: &str, call: &str, caller: &Value| {
        let mut corr = Map::new();
        corr.insert("queue_id".into(), json!(id));
        corr.insert("CallID".into(), json!(call));
        let mut data = Map::new();
        data.insert("queue_id".into(), json!(id));
        data.insert("queue_name".into(), new["name"].clone());
        data.insert("call".into(), json!(call));
        data.insert(
            "phone".into(),
            caller.get("Phone").cloned().unwrap_or(Value::Null),
        );
        data.insert(
            "join_time".into(),
            caller.get("JoinTime").cloned().unwrap_or(Value::Null),
        );
        monitor_event(event, corr, data, caller)
    };
    let mut events = Vec::new();
    for (call, caller) in now {
        if !before.contains_key(call) {
            events.push(one("voicenter.queue.caller_joined", call, caller));
        }
    }
    for (call, caller) in before {
        if !now.contains_key(call) {
            events.push(one("voicenter.queue.caller_left", call, caller));
        }
    }
    events
}

/// Commits one entity's new view with its events; nothing when nothing changed.
async fn commit_view(
    gw: &dyn Gateway,
    key: EntityKey,
    view: Value,
    changes: impl Fn(Option<&Value>, &Value) -> Vec<ivrgate_adapter::EntityEvent> + Send + Sync,
) -> Result<(), String> {
    let result = ivrgate_adapter::transition_one(gw, key, |entity| {
        let old = entity.and_then(|e| e.state.as_ref());
        let events = changes(old, &view);
        if events.is_empty() && old == Some(&view) {
            return ivrgate_adapter::Change::Keep;
        }
        ivrgate_adapter::Change::Write(ivrgate_adapter::Write {
            state: Some(view.clone()),
            events,
            ..ivrgate_adapter::Write::default()
        })
    })
    .await;
    result.map(|_| ()).map_err(|e| e.to_string())
}

/// Fetches one monitor method and checks Voicenter's verdict.
async fn fetch(
    ctx: &dyn ivrgate_adapter::ConnectorCtx,
    settings: &ApiSettings,
    name: &'static str,
) -> Result<Value, String> {
    let (_, upstream) = monitor(settings, name, &[]).map_err(|r| r.body.to_string())?;
    let response = ctx
        .http()
        .get(OutboundRequest {
            url: upstream.url,
            headers: vec![("Accept".into(), "application/json".into())],
            body: Bytes::new(),
            timeout: Some(settings.timeout),
        })
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    if response.status >= 300 {
        return Err(format!("{name}: HTTP {}", response.status));
    }
    let answer = read_answer(&response).map_err(|e| format!("{name}: {e}"))?;
    verdict(Family::Monitor, &answer)
        .map_err(|(_, _, code, message)| format!("{name}: {code} {message}"))?;
    Ok(answer)
}

/// One poll: both views, each entity committed with the events of its changes.
async fn poll_once(
    ctx: &dyn ivrgate_adapter::ConnectorCtx,
    settings: &ApiSettings,
) -> Result<usize, String> {
    let gw = ctx.gateway();
    let tenant = ctx.tenant().to_owned();
    let mut seen = 0;
    let extensions = fetch(ctx, settings, "GetExtensionsCalls").await?;
    for ext in extensions
        .get("EXTENSIONS")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some((username, view)) = extension_view(ext) else {
            continue;
        };
        let key = EntityKey::new(tenant.clone(), EXTENSION_KIND, username.clone());
        commit_view(gw, key, view, |old, new| {
            extension_changes(&username, old, new)
        })
        .await?;
        seen += 1;
    }
    let queues = fetch(ctx, settings, "GetQueuesCallers").await?;
    for queue in queues
        .get("QUEUES")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some((id, view)) = queue_view(queue) else {
            continue;
        };
        let key = EntityKey::new(tenant.clone(), QUEUE_KIND, id.clone());
        commit_view(gw, key, view, |old, new| queue_changes(&id, old, new)).await?;
        seen += 1;
    }
    Ok(seen)
}

/// The poller connector: polls §7 every period while it holds the tenant's lease.
pub async fn run_poller(ctx: ivrgate_adapter::ConnectorCtxRef) -> ivrgate_adapter::ConnectorExit {
    let parsed = ivrgate_adapter::settings_of::<Parsed>(ctx.gateway(), ctx.tenant(), crate::VENDOR);
    let Some(settings) = parsed.and_then(|p| p.0.clone()) else {
        return ivrgate_adapter::ConnectorExit::Failed("no [tenants.voicenter_api] section".into());
    };
    let Some(period) = settings.poll_period() else {
        return ivrgate_adapter::ConnectorExit::Stopped;
    };
    let mut polls: u64 = 0;
    loop {
        let outcome = poll_once(ctx.as_ref(), &settings).await;
        polls += 1;
        let detail = match &outcome {
            Ok(n) => format!(
                "polling every {} ms: {n} extensions and queues",
                period.as_millis()
            ),
            Err(e) => {
                tracing::warn!(tenant = ctx.tenant(), error = %e, "voicenter active-calls poll failed");
                format!("poll failed: {e}")
            }
        };
        ctx.set_health(ivrgate_adapter::ConnectorHealth {
            connected: outcome.is_ok(),
            server: Some(settings.monitor_url.clone()),
            session_id: None,
            last_heartbeat_ms: None,
            sessions_opened: polls,
            detail,
        });
        tokio::select! {
            _ = ctx.stopped() => return ivrgate_adapter::ConnectorExit::Stopped,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn settings(extra: Value) -> ApiSettings {
        let dir = std::env::temp_dir().join(format!("vcapi-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("code");
        std::fs::write(&file, "secret-code\n").unwrap();
        let mut v = json!({"code": format!("file:{}", file.display())});
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        ApiSettings::from_json(&v).unwrap().unwrap()
    }

    #[test]
    fn the_code_is_a_secret_source_and_unknown_keys_are_refused() {
        let e = ApiSettings::from_json(&json!({"code": "inline-code"})).unwrap_err();
        assert!(e[0].contains("env:NAME or file:/path"), "{e:?}");
        let e = ApiSettings::from_json(&json!({"code": "env:VCAPI_UNSET_FOR_SURE", "rate": 1}))
            .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(ApiSettings::from_json(&Value::Null).unwrap().is_none());
        let s = settings(json!({}));
        assert_eq!(s.code, "secret-code");
        assert_eq!(s.click2call_url, DEFAULT_CLICK2CALL_URL);
        assert!(!format!("{s:?}").contains("secret-code"));
    }

    #[test]
    fn click2call_form_adds_code_and_var_prefix_and_caps_vars() {
        let s = settings(json!({}));
        let body = json!({"phone": "050", "target": 972, "record": true, "custom_data": {"a": 1, "var_b": "x"}});
        let pairs = click2call_form(&s, "call", body.as_object().unwrap()).unwrap();
        let text = form(&pairs);
        assert_eq!(
            text,
            "code=secret-code&action=call&format=JSON&phone=050&target=972&record=true&var_a=1&var_b=x"
        );
        let many: Map<String, Value> = (0..11).map(|i| (format!("var_{i}"), json!(i))).collect();
        let e = click2call_form(&s, "call", &many).unwrap_err();
        assert_eq!(e.status, 422);
        let e = click2call_form(&s, "call", json!({"code": "x"}).as_object().unwrap()).unwrap_err();
        assert_eq!(e.body["error"]["code"], json!("reserved_field"));
    }

    #[test]
    fn answers_are_read_in_any_encoding_and_mapped_to_statuses() {
        let xml = "<methodResponse><params><param><value><struct><member><name>ERRORCODE</name><value><string>3</string></value></member><member><name>ERRORMESSAGE</name><value><string>Extension representative offline</string></value></member></struct></value></param></params></methodResponse>";
        let r = OutboundResponse {
            status: 200,
            content_type: None,
            body: Bytes::from(xml),
        };
        let answer = read_answer(&r).unwrap();
        let m = Method {
            name: "Click2Call",
            family: Family::Click2Call,
            safe: false,
            places: true,
        };
        let reply = reply_for(&m, answer);
        assert_eq!(reply.status, 409);
        assert_eq!(
            reply.body["error"]["message"],
            json!("Extension representative offline")
        );
        let r = OutboundResponse {
            status: 200,
            content_type: None,
            body: Bytes::from("{ERR: 1, DESC: \"Authorization failed.\",}"),
        };
        let m = Method {
            name: "GetExtensions",
            family: Family::Monitor,
            safe: true,
            places: false,
        };
        let reply = reply_for(&m, read_answer(&r).unwrap());
        assert_eq!(reply.status, 502);
        assert_eq!(reply.body["error"]["code"], json!("voicenter_auth_failed"));
        let html = OutboundResponse {
            status: 200,
            content_type: None,
            body: Bytes::from("<html><body>x</body></html>"),
        };
        assert!(read_answer(&html).unwrap_err().contains("HTML"));
        let login_ok = json!({"Status": 1, "StatusError": "0"});
        assert!(verdict(Family::Login, &login_ok).is_ok());
        let cdr_limit = json!({"ERROR_NUMBER": 1, "ERROR_DESCRIPTION": "Request limit exceeded. Please try again later."});
        assert_eq!(verdict(Family::CallLog, &cdr_limit).unwrap_err().0, 429);
    }

    #[test]
    fn the_allowlist_matches_prefixes_of_the_digits() {
        let s = settings(json!({"allow_destinations": ["9725", "05"]}));
        assert!(s.allows("+972-54-1234567"));
        assert!(s.allows("0501234567"));
        assert!(!s.allows("8825551234"));
        assert!(settings(json!({})).allows("8825551234"));
        assert!(
            ApiSettings::from_json(&json!({"code": "env:X", "allow_destinations": ["+1"]}))
                .is_err()
        );
    }
}
