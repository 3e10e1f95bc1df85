//! The store-mediated command queue: `submit` writes a `ctips.request` and waits for its
//! outcome; the session holder's `work_queue` claims, sends and settles it; `orphans`,
//! `command_for` and `note_event` tie requests to CTIPS's RequestIds and later events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ivrgate_adapter::{
    AliasChange, Change, CommandReply, Entity, EntityKey, Gateway, Transitioned, Waited, Write,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::views::session_state;
use super::{QUEUE_ID, QUEUE_KIND, REQUEST_KIND, RID_ALIAS};
use crate::proto::{CallError, Request};
use crate::settings::CONNECTOR;
use crate::store::now_ms;

pub(super) fn command_id(now: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(now.to_be_bytes());
    h.update(std::process::id().to_be_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let d = h.finalize();
    format!(
        "cmd_{}",
        d[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

pub(super) fn status_of(e: &Entity) -> String {
    e.state
        .as_ref()
        .and_then(|s| s.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// Queues a request for the session holder and waits for CTIPS's answer.
pub(super) async fn submit(
    gw: &dyn Gateway,
    tenant: &str,
    tenant_id: i64,
    request: Request,
    timeout: Duration,
    wait: Duration,
) -> CommandReply {
    // Is a session up at all?
    let state = session_state(gw, tenant).await;
    let lease = gw
        .lease(tenant, crate::NAME, CONNECTOR)
        .await
        .ok()
        .flatten();
    let now = now_ms(gw.now());
    let reason = match &lease {
        None => Some("no instance holds the CTIPS session (is [server] advertise_url set?)"),
        Some(l) if l.until_ms <= now => {
            Some("the CTIPS session's holder stopped renewing its lease")
        }
        Some(_) if state.get("online") != Some(&json!(true)) => {
            Some("the CTIPS session is down (connecting or reconnecting)")
        }
        Some(_) => None,
    };
    if let Some(reason) = reason {
        return CommandReply::error(503, "session_unavailable", reason);
    }
    let id = command_id(now);
    let key = EntityKey::new(tenant, REQUEST_KIND, id.clone());
    let queue = EntityKey::new(tenant, QUEUE_KIND, QUEUE_ID);
    let deadline = now + timeout.as_millis() as i64;
    let payload = serde_json::to_value(&request).unwrap_or(Value::Null);
    let mut f = |_: &[Option<Entity>]| {
        vec![
            Change::Write(Write::state(json!({
                "status": "queued",
                "op": request.op,
                "request": payload,
                "tenant_id": tenant_id,
                "created_ms": now,
                "deadline_ms": deadline,
            }))),
            Change::Write(Write::state(json!({"last": id}))),
        ]
    };
    let version = match gw.transition(vec![key.clone(), queue], &mut f).await {
        Ok(Transitioned::Done(entities)) => {
            entities.first().and_then(Option::as_ref).map(|e| e.version)
        }
        Ok(Transitioned::AliasTaken { .. }) => None,
        Err(e) => return CommandReply::error(503, "store_unavailable", e.to_string()),
    };
    let started = std::time::Instant::now();
    let mut seen = version;
    let outcome = loop {
        let left = timeout.saturating_sub(started.elapsed());
        let waited = if left.is_zero() {
            Waited::TimedOut
        } else {
            gw.wait_change(key.clone(), seen, left).await
        };
        match waited {
            Waited::Changed(Some(e)) => {
                seen = Some(e.version);
                if matches!(status_of(&e).as_str(), "queued" | "sending") {
                    continue;
                }
                break e;
            }
            Waited::Changed(None) => {
                return CommandReply::error(500, "lost", "the command vanished from the store")
            }
            Waited::ShuttingDown => {
                return CommandReply::error(503, "shutting_down", "ivrgate is stopping")
            }
            Waited::TimedOut => {
                // Not sent in time: make sure it never is.
                let mut expired = false;
                let mut f = |read: &[Option<Entity>]| {
                    expired = false;
                    match read.first().and_then(Option::as_ref) {
                        Some(e) if status_of(e) == "queued" => {
                            expired = true;
                            let mut state = e.state.clone().unwrap_or(Value::Null);
                            state["status"] = json!("expired");
                            vec![Change::Write(Write {
                                state: None,
                                ..Write::state(state)
                            })]
                        }
                        _ => vec![Change::Keep],
                    }
                };
                let _ = gw.transition(vec![key.clone()], &mut f).await;
                if expired {
                    return CommandReply::error(
                        504,
                        "timeout",
                        format!(
                            "not sent to CTIPS within {} ms; it will not be sent",
                            timeout.as_millis()
                        ),
                    );
                }
                // Being sent right now: its answer comes within the request timeout.
                match gw
                    .wait_change(key.clone(), seen, Duration::from_secs(30))
                    .await
                {
                    Waited::Changed(Some(e))
                        if !matches!(status_of(&e).as_str(), "queued" | "sending") =>
                    {
                        break e
                    }
                    _ => {
                        return CommandReply::error(504, "timeout", "CTIPS did not answer in time")
                    }
                }
            }
        }
    };
    let mut result = outcome.state.clone().unwrap_or(Value::Null);
    let status = status_of(&outcome);
    // Optionally wait for the first event correlated by RequestId.
    if status == "accepted" && !wait.is_zero() && result.get("event").is_none() {
        let started = std::time::Instant::now();
        let mut seen = Some(outcome.version);
        while result.get("event").is_none() {
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match gw.wait_change(key.clone(), seen, left).await {
                Waited::Changed(Some(e)) => {
                    seen = Some(e.version);
                    result = e.state.clone().unwrap_or(Value::Null);
                }
                _ => break,
            }
        }
    }
    // The request entity has served its purpose.
    let mut end = |read: &[Option<Entity>]| match read.first().and_then(Option::as_ref) {
        Some(e) if e.state.is_some() => vec![Change::Write(Write {
            state: None,
            aliases: result
                .get("request_id")
                .and_then(Value::as_i64)
                .map(|rid| AliasChange::Release {
                    namespace: RID_ALIAS.into(),
                    value: rid.to_string(),
                })
                .into_iter()
                .collect(),
            ..Write::default()
        })],
        _ => vec![Change::Keep],
    };
    let _ = gw.transition(vec![key], &mut end).await;
    let mut body = json!({
        "command_id": id,
        "op": result.get("op"),
        "request_id": result.get("request_id"),
    });
    match status.as_str() {
        "accepted" => {
            body["result"] = result.get("result").cloned().unwrap_or(Value::Null);
            if !wait.is_zero() {
                body["event"] = result.get("event").cloned().unwrap_or(Value::Null);
            }
            CommandReply::ok(body)
        }
        "faulted" => {
            let code = result
                .get("fault_code")
                .and_then(Value::as_str)
                .unwrap_or("GeneralError");
            let message = result.get("message").and_then(Value::as_str).unwrap_or("");
            let status = match code {
                "InvalidSessionId" => 503,
                "InvalidParameter" | "MissingArg" | "InvalidCallId" | "InvalidDestination"
                | "InvalidRouteType" | "InvalidTenantId" | "InvalidRequest" | "UnknownRequest" => {
                    422
                }
                _ => 502,
            };
            CommandReply {
                status,
                body: json!({"error": {"code": code, "message": message}, "command_id": id, "request_id": result.get("request_id")}),
            }
        }
        "outcome_unknown" => CommandReply::error(
            502,
            "outcome_unknown",
            "the session holder stopped while sending it; CTIPS may or may not have carried it out",
        ),
        "no_session" => CommandReply::error(
            503,
            "session_unavailable",
            "the CTIPS session went down before it was sent",
        ),
        other => CommandReply::error(
            502,
            "ctips_error",
            format!(
                "{other}: {}",
                result.get("message").and_then(Value::as_str).unwrap_or("")
            ),
        ),
    }
}

/// Sends the queued commands (run by the session holder's connector while online).
pub async fn work_queue(shared: &crate::session::Shared) {
    let gw = shared.ctx.gateway();
    let tenant = shared.ctx.tenant();
    let requests = match gw.list(tenant, REQUEST_KIND, 1000).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(tenant, error = %e, "ctips commands not listed");
            return;
        }
    };
    for entity in requests {
        if status_of(&entity) != "queued" {
            continue;
        }
        let state = entity.state.clone().unwrap_or(Value::Null);
        let deadline = state
            .get("deadline_ms")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let request: Option<Request> = state
            .get("request")
            .and_then(|r| serde_json::from_value(r.clone()).ok());
        let rid = match &request {
            Some(r) if crate::proto::takes_request_id(&r.op) => shared.ids.next(),
            _ => 0,
        };
        let now = now_ms(gw.now());
        // Claim it (queued → sending, its RequestId reserved so the events it causes find
        // it), or expire it when it is too late.
        let mut claimed = false;
        let mut f = |read: &[Option<Entity>]| {
            claimed = false;
            match read.first().and_then(Option::as_ref) {
                Some(e) if status_of(e) == "queued" => {
                    let mut s = e.state.clone().unwrap_or(Value::Null);
                    if now > deadline {
                        s["status"] = json!("expired");
                        vec![Change::Write(Write {
                            state: None,
                            ..Write::state(s)
                        })]
                    } else {
                        claimed = true;
                        s["status"] = json!("sending");
                        let mut aliases = Vec::new();
                        if rid != 0 {
                            s["request_id"] = json!(rid);
                            aliases.push(AliasChange::Claim {
                                namespace: RID_ALIAS.into(),
                                value: rid.to_string(),
                                until: Some(gw.now() + Duration::from_secs(600)),
                            });
                        }
                        vec![Change::Write(Write {
                            aliases,
                            ..Write::state(s)
                        })]
                    }
                }
                _ => vec![Change::Keep],
            }
        };
        if gw
            .transition(vec![entity.key.clone()], &mut f)
            .await
            .is_err()
            || !claimed
        {
            continue;
        }
        let outcome = match request {
            Some(request) => crate::session::send_command(shared, request, rid).await,
            None => Err(CallError::Protocol("unreadable stored request".into())),
        };
        let mut f = |read: &[Option<Entity>]| match read.first().and_then(Option::as_ref) {
            Some(e) if e.state.is_some() => {
                let mut s = e.state.clone().unwrap_or(Value::Null);
                match &outcome {
                    Ok(code) => {
                        s["status"] = json!("accepted");
                        s["result"] = json!(code);
                    }
                    Err(CallError::Fault { code, message }) => {
                        s["status"] = json!("faulted");
                        s["fault_code"] = json!(code);
                        s["message"] = json!(message);
                    }
                    Err(CallError::Unreachable(why)) if why == "no session" => {
                        s["status"] = json!("no_session");
                    }
                    Err(other) => {
                        s["status"] = json!("failed");
                        s["message"] = json!(other.to_string());
                    }
                }
                vec![Change::Write(Write::state(s))]
            }
            _ => vec![Change::Keep],
        };
        if let Err(e) = gw.transition(vec![entity.key.clone()], &mut f).await {
            tracing::warn!(tenant, error = %e, "ctips command outcome not stored");
        }
    }
}

/// Commands a previous holder claimed but never finished: their outcome is unknown.
pub async fn orphans(gw: &dyn Gateway, tenant: &str) {
    let Ok(requests) = gw.list(tenant, REQUEST_KIND, 1000).await else {
        return;
    };
    for entity in requests.into_iter().filter(|e| status_of(e) == "sending") {
        let mut f = |read: &[Option<Entity>]| match read.first().and_then(Option::as_ref) {
            Some(e) if status_of(e) == "sending" => {
                let mut s = e.state.clone().unwrap_or(Value::Null);
                s["status"] = json!("outcome_unknown");
                vec![Change::Write(Write::state(s))]
            }
            _ => vec![Change::Keep],
        };
        let _ = gw.transition(vec![entity.key], &mut f).await;
    }
}

/// The command that sent RequestId `request_id`, if one did (its alias is held while the
/// command is in flight and for a while after).
pub async fn command_for(gw: &dyn Gateway, tenant: &str, request_id: &str) -> Option<EntityKey> {
    match gw.find(tenant, RID_ALIAS, request_id).await {
        Ok(Some(entity)) if entity.key.kind == REQUEST_KIND => Some(entity.key),
        _ => None,
    }
}

/// Notes the first event correlated with a command (by its RequestId) on the command.
pub async fn note_event(gw: &dyn Gateway, command: EntityKey, webhook: &str, key: &EntityKey) {
    let event = json!({"type": webhook, "entity": {"kind": key.kind, "id": key.id}});
    let mut f = |read: &[Option<Entity>]| match read.first().and_then(Option::as_ref) {
        Some(e) if e.state.as_ref().is_some_and(|s| s.get("event").is_none()) => {
            let mut s = e.state.clone().unwrap_or(Value::Null);
            s["event"] = event.clone();
            vec![Change::Write(Write::state(s))]
        }
        _ => vec![Change::Keep],
    };
    let _ = gw.transition(vec![command], &mut f).await;
}
