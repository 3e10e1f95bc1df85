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
//!
//! This file holds the method table, the per-tenant limit and queue, sending with retries and
//! idempotency, and the dispatch; `settings.rs` the tenant's section, `methods.rs` one builder
//! per method of the seed, `answers.rs` reading answers and mapping error codes, `poller.rs`
//! the §7 active-calls connector.

mod answers;
mod methods;
mod poller;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ivrgate_adapter::{
    idempotency, Command, CommandReply, EntityKey, Gateway, OutboundError, OutboundRequest,
    OutboundResponse,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use answers::{read_answer, reply_for};
use methods::{
    bulk, call_log, check_allowed, click2call, dialer, login, monitor, originate, query_value,
};
pub use poller::{run_poller, EXTENSION_KIND, QUEUE_KIND};
pub use settings::{
    ApiSettings, DEFAULT_CDR_URL, DEFAULT_CLICK2CALL_URL, DEFAULT_DIALER_URL, DEFAULT_LOGIN_URL,
    DEFAULT_MONITOR_URL, IDEMPOTENCY_KIND,
};

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

/// The tenant's parsed section.
#[derive(Debug, Default)]
pub struct Parsed(pub Option<Arc<ApiSettings>>);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Map, Value};

    use super::answers::verdict;
    use super::methods::{click2call_form, form};
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
