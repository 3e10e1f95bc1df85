//! The callback service CTIPS calls (`CTIEventService` at the ClientCallbackURL ivrgate gave
//! it): `/ctips/{tenant}/{token}/{epoch}` with PublishCTIEvent, Heartbeat (also the seed's
//! HeartbeatMessage) and StartSession. The token is compared in constant time; a callback
//! naming an epoch this instance does not hold now gets a fault, so CTIPS drops that session.

use ivrgate_adapter::{Gateway, Handled, Inbound, RecordError};
use serde_json::Map;

use crate::event;
use crate::live::{self, Notice, RouteJob};
use crate::proto::{NS_PUB, NS_SOAP11};
use crate::settings::{same_secret, Settings, CONNECTOR};
use crate::store::{self, now_ms, RouteOutcome};
use crate::xml::{self, escape};

/// The callback path's shape after `/ctips/{tenant}`: a token and a decimal epoch.
pub fn callback_shape(segments: &[&str]) -> Option<(String, u64)> {
    match segments {
        [token, epoch]
            if !token.is_empty()
                && !epoch.is_empty()
                && epoch.len() <= 19
                && epoch.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(((*token).to_owned(), epoch.parse().ok()?))
        }
        _ => None,
    }
}

fn respond(status: u16, body: String, method: &str, outcome: &'static str) -> Handled {
    Handled::new(status, "text/xml; charset=utf-8", body, method, outcome)
}

fn envelope(body: &str) -> String {
    format!("<s:Envelope xmlns:s=\"{NS_SOAP11}\"><s:Body>{body}</s:Body></s:Envelope>")
}

/// `<{op}Response><{op}Result>0</{op}Result></{op}Response>`.
fn ok(op: &str) -> Handled {
    let reply = if op == "HeartbeatMessage" {
        "Heartbeat"
    } else {
        op
    };
    respond(
        200,
        envelope(&format!(
            "<{reply}Response xmlns=\"{NS_PUB}\"><{reply}Result>0</{reply}Result></{reply}Response>"
        )),
        op,
        "ok",
    )
}

/// A SOAP 1.1 fault (HTTP 500); `client` blames the request, otherwise the server.
pub fn fault(client: bool, reason: &str, method: &str, outcome: &'static str) -> Handled {
    let code = if client { "s:Client" } else { "s:Server" };
    respond(
        500,
        envelope(&format!(
            "<s:Fault><faultcode>{code}</faultcode><faultstring xml:lang=\"en-US\">{}</faultstring></s:Fault>",
            escape(reason)
        )),
        method,
        outcome,
    )
}

fn plain(status: u16, text: &'static str, outcome: &'static str) -> Handled {
    Handled::new(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes(),
        "unknown",
        outcome,
    )
}

/// Serves one callback request.
pub async fn handle(gw: &dyn Gateway, settings: Option<&Settings>, request: Inbound) -> Handled {
    let Some(settings) = settings else {
        return plain(404, "not found\n", "not_found");
    };
    let segments: Vec<&str> = request.path.as_strs();
    let Some((token, epoch)) = callback_shape(&segments) else {
        return plain(404, "not found\n", "not_found");
    };
    if !same_secret(&token, &settings.callback_token) {
        tracing::warn!(tenant = %request.tenant, "ctips callback with a wrong token");
        return plain(404, "not found\n", "not_found");
    }
    if request.method != http::Method::POST {
        return plain(405, "POST only\n", "bad_request");
    }
    let content_type = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let root = match xml::parse_typed(&request.body, content_type, request.max_depth) {
        Ok(root) => root,
        Err(e) => {
            tracing::warn!(tenant = %request.tenant, error = %e, "ctips callback: unreadable body");
            return fault(true, &e.0, "unknown", "bad_request");
        }
    };
    let op = match xml::body_op(&root) {
        Ok(op) => op,
        Err(e) => return fault(true, &e.0, "unknown", "bad_request"),
    };
    // The operation as the answer and the metrics label name it: one this service serves, or
    // `unknown`, never a name the request chose (each would be a new series on /metrics).
    let method = match op.name.as_str() {
        name @ ("Heartbeat" | "HeartbeatMessage" | "StartSession" | "PublishCTIEvent") => {
            name.to_owned()
        }
        _ => "unknown".to_owned(),
    };
    let held = gw.held_epoch(&request.tenant, crate::NAME, CONNECTOR);
    let live = (held == Some(epoch))
        .then(|| live::get(&request.tenant, epoch))
        .flatten();
    let Some(live) = live else {
        tracing::info!(
            tenant = %request.tenant, epoch, held = ?held, op = %op.name,
            "ctips callback for a session this instance does not hold: refused"
        );
        return fault(
            true,
            "InvalidSessionId: stale or unknown session",
            &method,
            "stale",
        );
    };
    let now = now_ms(gw.now());
    match method.as_str() {
        "Heartbeat" | "HeartbeatMessage" => {
            let given = op
                .child("sessionId")
                .map(|n| n.value().to_owned())
                .unwrap_or_default();
            match live.session_id() {
                Some(id) if !given.is_empty() && id != given => {
                    tracing::info!(tenant = %request.tenant, "heartbeat for another session: refused");
                    fault(true, "InvalidSessionId", &method, "stale")
                }
                _ => {
                    live.beat(now);
                    ok(&method)
                }
            }
        }
        "StartSession" => {
            let given = op
                .child("sessionId")
                .map(|n| n.value().to_owned())
                .filter(|s| !s.is_empty());
            if let Some(id) = given {
                live.set_session_id(Some(id));
            }
            live.beat(now);
            live.started.notify_waiters();
            ok(&method)
        }
        "PublishCTIEvent" => {
            let Some(node) = op.child("ctiEvent") else {
                return fault(
                    true,
                    "PublishCTIEvent without ctiEvent",
                    &method,
                    "bad_request",
                );
            };
            let event = match event::read(node) {
                Ok(e) => e,
                Err(why) => return fault(true, &why, &method, "bad_request"),
            };
            let mapped = event::map(&event);
            let mut extra = Map::new();
            if let Some(decision_id) = event::text(&event.fields, "RequestId")
                .and_then(|r| r.parse::<i64>().ok())
                .filter(|r| *r != 0)
                .and_then(|r| live.route_decision(r))
            {
                extra.insert("decision_id".into(), serde_json::Value::String(decision_id));
            }
            let command = match event::text(&event.fields, "RequestId")
                .filter(|r| !r.is_empty() && *r != "0")
            {
                Some(rid) => crate::command::command_for(gw, &request.tenant, rid).await,
                None => None,
            };
            if let Some(command) = &command {
                extra.insert(
                    "command_id".into(),
                    serde_json::Value::String(command.id.clone()),
                );
            }
            match store::commit(
                gw,
                &request.tenant,
                &event,
                &mapped,
                settings.call_max,
                &extra,
            )
            .await
            {
                Ok(committed) => {
                    if committed.route == RouteOutcome::New {
                        let call_id = event::text(&event.fields, "CallId")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0);
                        let route_timeout_s = event::text(&event.fields, "RouteTimeout")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0);
                        live.notify(Notice::Route(RouteJob {
                            entity: committed.key.id.clone(),
                            call_id,
                            route_timeout_s,
                            fields: event.fields.clone(),
                            received: std::time::Instant::now(),
                        }));
                    }
                    if let Some(command) = command {
                        crate::command::note_event(gw, command, &mapped.webhook, &committed.key)
                            .await;
                    }
                    if event::snapshot_complete(&event) {
                        live.notify(Notice::SnapshotDone {
                            request_id: event::text(&event.fields, "RequestId")
                                .and_then(|r| r.parse().ok())
                                .unwrap_or(0),
                            entity_type: event::text(&event.fields, "SnapShotType")
                                .unwrap_or_default()
                                .to_owned(),
                        });
                    }
                    let mut handled = ok(&method);
                    handled.outcome = match committed.route {
                        RouteOutcome::Duplicate => "duplicate",
                        _ => "ok",
                    };
                    handled.vendor_call_id = match &mapped.target {
                        event::Target::Call { .. } => Some(committed.key.id),
                        _ => None,
                    };
                    handled
                }
                Err(e) => {
                    tracing::warn!(tenant = %request.tenant, error = %e, event = %event.type_name,
                        "ctips event not stored: answered with a fault");
                    let outcome = match e {
                        RecordError::QuotaExceeded | RecordError::StorageFull => "refused",
                        RecordError::Unavailable(_) => "unavailable",
                    };
                    fault(false, "event not stored, try again", &method, outcome)
                }
            }
        }
        _ => {
            tracing::warn!(tenant = %request.tenant, op = %op.name, "ctips callback: unknown operation");
            fault(
                true,
                &format!("unknown operation {}", op.name),
                "unknown",
                "bad_request",
            )
        }
    }
}
