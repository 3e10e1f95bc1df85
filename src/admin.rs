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

use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::server::{json, App, Body};
use crate::store::ReplayFilter;

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
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "cannot read body"}),
                    )
                }
            };
            let value: Value = if body.is_empty() {
                json!({})
            } else {
                match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": format!("body is not JSON: {e}")}),
                        )
                    }
                }
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
            match store.replay(filter, now).await {
                Ok(n) => {
                    tracing::info!(events = n, "events replayed through the admin API");
                    json(StatusCode::OK, &json!({"replayed": n}))
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
