//! The admin API: outbox depth, dead letters, replay, re-enabling a disabled endpoint.
//! Guarded by `admin.token` (Bearer); without a token it answers only on a loopback listener,
//! to requests that did not come through a proxy.
//!
//! - `GET  /admin/outbox`                          pending and dead counts per tenant
//! - `GET  /admin/dead-letters?tenant=T&limit=N`   dead-lettered events
//! - `POST /admin/replay` `{"tenant":..,"event_id":..,"include_delivered":false}`
//! - `GET  /admin/endpoints`                       disabled endpoints
//! - `POST /admin/endpoints/{tenant}/enable`       re-enable after a 410
//! - `GET  /admin/connectors`                      connectors: lease, holder, session health
//! - `GET  /admin/queues`                          per tenant and endpoint: pending and dead
//!   counts, the oldest pending event's age, the next attempt, the last error, breaker state
//! - `GET  /admin/events?status=pending|dead|delivered&tenant=T&type=E&event_id=I&limit=N&after=C`
//!   a page of events (oldest first) and the cursor of the next page
//! - `POST /admin/retry` `{"tenant":..}` or `{"endpoint":..}` or `{}` (all): pending events
//!   waiting for a later attempt are due now, and the endpoints' breakers are closed

use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::store::{EventQuery, EventStatus, ReplayFilter};
use crate::web::{json, App, Body};

/// Most events one page of `GET /admin/events` lists.
const MAX_PAGE: usize = 1_000;

fn rfc3339_ms(ms: i64) -> String {
    ivrgate_adapter::epoch::rfc3339(crate::clock::from_ms(ms))
}

/// Reads a JSON body (none is `{}`) like every request body (`web::read_json`), or the
/// answer saying why not. The reservation in the body budget is held until answered.
async fn json_body(
    app: &App,
    req: Request<Incoming>,
) -> Result<(Value, crate::budget::Reservation), Response<Body>> {
    let runtime = app.core.runtime.load_full();
    let (parts, body) = req.into_parts();
    match crate::web::read_json(app, &parts.headers, body, &runtime.config.raw.server).await {
        Ok((Value::Null, held)) => Ok((json!({}), held)),
        Ok(read) => Ok(read),
        Err(refused) => {
            let mut response = json(refused.status, &json!({"error": refused.message}));
            refused.decorate(&mut response);
            Err(response)
        }
    }
}

/// Why a replay matched nothing, in words an operator can act on.
pub async fn why_nothing_replayed(store: &crate::store::Store, filter: &ReplayFilter) -> String {
    let find = |status: EventStatus| EventQuery {
        status,
        tenant: filter.tenant.clone(),
        event_type: None,
        event_id: filter.event_id.clone(),
        after_id: None,
        limit: 1,
    };
    let found = |status| async move {
        store
            .list_events(find(status))
            .await
            .ok()
            .and_then(|rows| rows.into_iter().next())
    };
    let scope = match &filter.tenant {
        Some(t) => format!(" for tenant {t}"),
        None => String::new(),
    };
    if let Some(id) = &filter.event_id {
        if let Some(e) = found(EventStatus::Pending).await {
            return format!(
                "event {id} is not dead: it is pending (attempt {} done, next at {}); \
                 POST /admin/retry sends it now",
                e.attempts,
                rfc3339_ms(e.next_attempt_ms)
            );
        }
        if !filter.include_delivered && found(EventStatus::Delivered).await.is_some() {
            return format!(
                "event {id} was delivered; replay it with include_delivered \
                 (--include-delivered) to send it again"
            );
        }
        return format!(
            "no event {id}{scope} (never stored, or purged after storage.delivered_retention_s)"
        );
    }
    let pending = found(EventStatus::Pending).await.is_some();
    let what = if filter.include_delivered {
        "no dead or delivered events"
    } else {
        "no dead letters"
    };
    if pending {
        format!(
            "{what}{scope}; some events are pending (not dead): POST /admin/retry sends them now"
        )
    } else {
        format!("{what}{scope}")
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    ivrgate_wire::form::parse(query.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// `segments` are the decoded path segments after `/admin`.
pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    peer: SocketAddr,
    segments: &[&str],
) -> Response<Body> {
    let runtime = app.core.runtime.load_full();
    let token = runtime.config.admin_token.clone();
    let allowed = crate::auth::bearer_or_local(
        req.headers(),
        token.as_deref(),
        runtime.config.raw.listen,
        peer,
    );
    if !allowed {
        tracing::warn!(%peer, "admin request refused");
        return json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "admin token required"}),
        );
    }
    let query = req.uri().query().map(str::to_owned);
    let store = &app.core.store;
    let now = app.core.clock.now_ms();
    let failed = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "admin request failed");
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": e.to_string()}),
        )
    };
    match (req.method().clone(), segments) {
        (Method::GET, ["connectors"]) => {
            let mut rows = Vec::new();
            for entry in app.core.connectors.entries() {
                let lease = match store.read_lease(entry.key.clone()).await {
                    Ok(lease) => lease,
                    Err(e) => return failed(e),
                };
                let health = entry.health();
                let held = entry.held_epoch();
                rows.push(json!({
                    "tenant": entry.key.tenant,
                    "adapter": entry.key.adapter,
                    "connector": entry.key.name,
                    "held_here": held.is_some(),
                    "epoch": held.or(lease.as_ref().map(|l| l.epoch)),
                    "holder": lease.as_ref().and_then(|l| l.holder.clone()),
                    "lease_until_ms": lease.as_ref().and_then(|l| l.holder.as_ref().map(|_| l.until_ms)),
                    "connected": held.is_some() && health.connected,
                    "server": health.server,
                    "session_id": health.session_id,
                    "last_heartbeat_ms": health.last_heartbeat_ms,
                    "sessions_opened": health.sessions_opened,
                    "reconnects": health.sessions_opened.saturating_sub(1),
                    "restarts": entry.restarts.load(std::sync::atomic::Ordering::Relaxed),
                    "detail": health.detail,
                }));
            }
            json(
                StatusCode::OK,
                &json!({"instance": app.core.instance, "connectors": rows}),
            )
        }
        (Method::GET, ["outbox"]) => match store.outbox_depth().await {
            Ok(rows) => json(
                StatusCode::OK,
                &json!(rows
                    .iter()
                    .map(|d| json!({"tenant": d.tenant, "pending": d.pending, "dead": d.dead}))
                    .collect::<Vec<_>>()),
            ),
            Err(e) => failed(e),
        },
        (Method::GET, ["dead-letters"]) => {
            let tenant = query_param(query.as_deref(), "tenant");
            let limit = query_param(query.as_deref(), "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100usize)
                .min(10_000);
            match store.dead_letters(tenant, limit).await {
                Ok(rows) => json(
                    StatusCode::OK,
                    &json!(rows
                        .iter()
                        .map(|d| json!({
                            "event_id": d.event_id, "tenant": d.tenant, "type": d.event_type,
                            "attempts": d.attempts, "last_error": d.last_error,
                            "created_at": ivrgate_adapter::epoch::rfc3339(crate::clock::from_ms(d.created_at_ms)),
                        }))
                        .collect::<Vec<_>>()),
                ),
                Err(e) => failed(e),
            }
        }
        (Method::POST, ["replay"]) => {
            let (value, _held) = match json_body(app, req).await {
                Ok(read) => read,
                Err(answer) => return answer,
            };
            let filter = ReplayFilter {
                tenant: value
                    .get("tenant")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                event_id: value
                    .get("event_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                include_delivered: value
                    .get("include_delivered")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            match store.replay(filter.clone(), now).await {
                Ok(0) => {
                    let why = why_nothing_replayed(store, &filter).await;
                    tracing::info!(why = %why, "admin replay matched nothing");
                    json(StatusCode::OK, &json!({"replayed": 0, "why": why}))
                }
                Ok(n) => {
                    tracing::info!(events = n, "events replayed through the admin API");
                    json(StatusCode::OK, &json!({"replayed": n}))
                }
                Err(e) => failed(e),
            }
        }
        (Method::GET, ["queues"]) => {
            let summary = match store.queue_summary().await {
                Ok(rows) => rows,
                Err(e) => return failed(e),
            };
            let disabled = match store.disabled_endpoints().await {
                Ok(rows) => rows,
                Err(e) => return failed(e),
            };
            // Every configured tenant, and any tenant with stored events that left the
            // configuration.
            let mut tenants: Vec<String> = runtime
                .config
                .tenants
                .iter()
                .map(|t| t.id.clone())
                .collect();
            for row in &summary {
                if !tenants.contains(&row.tenant) {
                    tenants.push(row.tenant.clone());
                }
            }
            let breaker = |state: crate::breaker::State| match state {
                crate::breaker::State::Closed => "closed",
                crate::breaker::State::Open => "open",
                crate::breaker::State::HalfOpen => "half_open",
            };
            let rows: Vec<Value> = tenants
                .iter()
                .map(|id| {
                    let q = summary.iter().find(|q| &q.tenant == id).cloned().unwrap_or_default();
                    let configured = runtime.config.tenant(id);
                    let endpoint = configured.map(|t| crate::redact::url(&t.webhook_url));
                    let decision_endpoint = configured.map(|t| crate::redact::url(&t.decision_url));
                    let reason = disabled.iter().find(|(t, _)| t == id).map(|(_, r)| r.clone());
                    json!({
                        "tenant": id,
                        "configured": configured.is_some(),
                        "endpoint": endpoint,
                        "pending": q.pending,
                        "dead": q.dead,
                        "oldest_pending_age_s": q.oldest_pending_ms.map(|ms| (now - ms).max(0) / 1000),
                        "oldest_pending_at": q.oldest_pending_ms.map(rfc3339_ms),
                        "next_attempt_at": q.next_attempt_ms.map(rfc3339_ms),
                        "next_attempt_in_s": q.next_attempt_ms.map(|ms| (ms - now).max(0) / 1000),
                        "last_error": q.last_error,
                        "breaker": configured.map(|t| breaker(app.core.delivery_breakers.state(&t.webhook_url))),
                        "disabled": reason.is_some(),
                        "disabled_reason": reason,
                        "decision_endpoint": decision_endpoint,
                        "decision_breaker": configured.map(|t| breaker(app.core.decision_breakers.state(&t.decision_url))),
                    })
                })
                .collect();
            json(StatusCode::OK, &json!({"queues": rows}))
        }
        (Method::GET, ["events"]) => {
            let q = |name| query_param(query.as_deref(), name);
            let status = match q("status").as_deref() {
                None | Some("pending") => EventStatus::Pending,
                Some("dead") => EventStatus::Dead,
                Some("delivered") => EventStatus::Delivered,
                Some(other) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("status {other:?}: use pending, dead or delivered")}),
                    )
                }
            };
            let limit = match q("limit").map(|l| l.parse::<usize>()) {
                None => 100,
                Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
                Some(_) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("limit must be a number from 1 to {MAX_PAGE}")}),
                    )
                }
            };
            let after_id = match q("after").map(|a| a.parse::<i64>()) {
                None => None,
                Some(Ok(n)) => Some(n),
                Some(Err(_)) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "after must be the next cursor of a previous page"}),
                    )
                }
            };
            let query = EventQuery {
                status,
                tenant: q("tenant"),
                event_type: q("type"),
                event_id: q("event_id"),
                after_id,
                // One more than asked tells whether there is a next page.
                limit: limit + 1,
            };
            let mut rows = match store.list_events(query).await {
                Ok(rows) => rows,
                Err(e) => return failed(e),
            };
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next = if more {
                rows.last().map(|r| r.id.to_string())
            } else {
                None
            };
            let events: Vec<Value> = rows
                .iter()
                .map(|e| {
                    json!({
                        "event_id": e.event_id,
                        "tenant": e.tenant,
                        "type": e.event_type,
                        "call_id": e.call_id,
                        "status": e.status.as_str(),
                        "attempts": e.attempts,
                        "next_attempt_at": (e.status == EventStatus::Pending).then(|| rfc3339_ms(e.next_attempt_ms)),
                        "last_error": e.last_error,
                        "created_at": rfc3339_ms(e.created_at_ms),
                    })
                })
                .collect();
            json(StatusCode::OK, &json!({"events": events, "next": next}))
        }
        (Method::POST, ["retry"]) => {
            let (value, _held) = match json_body(app, req).await {
                Ok(read) => read,
                Err(answer) => return answer,
            };
            let config = &runtime.config;
            let tenants: Vec<&crate::config::ResolvedTenant> = match (
                value.get("tenant").and_then(Value::as_str),
                value.get("endpoint").and_then(Value::as_str),
            ) {
                (Some(_), Some(_)) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "name a tenant or an endpoint, not both"}),
                    )
                }
                (Some(tenant), None) => match config.tenant(tenant) {
                    Some(t) => vec![t],
                    None => {
                        return json(
                            StatusCode::NOT_FOUND,
                            &json!({"error": format!("no tenant {tenant:?} in the configuration")}),
                        )
                    }
                },
                (None, Some(endpoint)) => {
                    let matching: Vec<_> = config
                        .tenants
                        .iter()
                        .filter(|t| t.webhook_url == endpoint)
                        .collect();
                    if matching.is_empty() {
                        return json(
                            StatusCode::NOT_FOUND,
                            &json!({"error": "no tenant has that webhook_url"}),
                        );
                    }
                    matching
                }
                (None, None) => config.tenants.iter().collect(),
            };
            let ids: Vec<String> = tenants.iter().map(|t| t.id.clone()).collect();
            // The receiver is fixed: its breaker must not hold the retried events back.
            for t in &tenants {
                app.core.delivery_breakers.success(&t.webhook_url);
            }
            match store.retry_now(ids.clone(), now).await {
                Ok(n) => {
                    app.core.store.changes().outbox.notify_one();
                    tracing::info!(events = n, tenants = %ids.join(","), "retry now through the admin API");
                    json(StatusCode::OK, &json!({"retried": n, "tenants": ids}))
                }
                Err(e) => failed(e),
            }
        }
        (Method::GET, ["endpoints"]) => match store.disabled_endpoints().await {
            Ok(rows) => json(
                StatusCode::OK,
                &json!(rows
                    .iter()
                    .map(|(t, r)| json!({"tenant": t, "disabled": true, "reason": r}))
                    .collect::<Vec<_>>()),
            ),
            Err(e) => failed(e),
        },
        (Method::POST, ["endpoints", tenant, "enable"]) => {
            match store
                .set_endpoint_disabled((*tenant).to_owned(), None)
                .await
            {
                Ok(()) => {
                    app.core
                        .disabled_endpoints
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(*tenant);
                    app.core.delivery_breakers.success(
                        &app.core
                            .runtime
                            .load()
                            .config
                            .tenant(tenant)
                            .map(|t| t.webhook_url.clone())
                            .unwrap_or_default(),
                    );
                    tracing::info!(tenant, "endpoint re-enabled through the admin API");
                    app.core.store.changes().outbox.notify_one();
                    json(
                        StatusCode::OK,
                        &json!({"tenant": tenant, "disabled": false}),
                    )
                }
                Err(e) => failed(e),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such admin route"}),
        ),
    }
}
