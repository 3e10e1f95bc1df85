//! The command API: JSON over HTTP through which a customer's system acts on live calls
//! (`docs/command-api.yaml`). The core authenticates and reads the request; each adapter
//! serves its own resources under `/api/{tenant}/{adapter}/...` through
//! `Adapter::command`, so every platform's commands share one set of conventions:
//!
//! - `Authorization: Bearer <command_token>` of the tenant; a tenant without a token is
//!   served only on a loopback listener, to requests that did not come through a proxy.
//! - Request and response bodies are JSON; errors are `{"error": {"code", "message"}}`
//!   with an HTTP status that says whose fault it was.
//! - One tenant's token never reaches another tenant's calls: the tenant comes from the
//!   path, and every read and write the adapter makes is scoped to it.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use ivrgate_adapter::{Command, CommandReply};
use serde_json::json;

use crate::metrics::RequestLabels;
use crate::web::{json, App, Body};

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    peer: SocketAddr,
    tenant_id: &str,
    adapter_name: &str,
    path: ivrgate_adapter::PathSegments,
) -> Response<Body> {
    let runtime = app.core.runtime.load_full();
    let config = &runtime.config;
    let count = |outcome: &str| {
        app.core
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                adapter: "api".to_owned(),
                method: adapter_name.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    };
    let Some(tenant) = config.tenant(tenant_id) else {
        count("unknown_tenant");
        tracing::warn!(%peer, tenant = tenant_id, "command for an unknown tenant");
        return error(StatusCode::NOT_FOUND, "not_found", "no such tenant");
    };
    let allowed = crate::auth::bearer_or_local(
        req.headers(),
        tenant.command_token.as_deref(),
        config.raw.listen,
        peer,
    );
    if !allowed {
        count("denied");
        tracing::warn!(%peer, tenant = tenant_id, "command refused: bad or missing token");
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"ivrgate\""),
        );
        return response;
    }
    let Some(adapter) = app.core.adapter(adapter_name) else {
        count("not_found");
        return error(StatusCode::NOT_FOUND, "not_found", "no such adapter");
    };
    if path.as_strs().as_slice() == ["originate"] {
        if let Some(reason) = adapter.cannot_originate() {
            count("refused");
            tracing::info!(%peer, tenant = tenant_id, adapter = adapter_name, "originate refused: the platform cannot place calls");
            return error(StatusCode::NOT_IMPLEMENTED, "not_implemented", reason);
        }
    }
    let query = req.uri().query().map(str::to_owned);
    let (parts, body) = req.into_parts();
    // Command bodies count in the same budget as legacy ones; held until answered.
    let (body, _reservation) = match crate::web::read_json(
        app,
        &parts.headers,
        body,
        &config.raw.server,
    )
    .await
    {
        Ok(read) => read,
        Err(refused) => {
            if refused.code == "busy" {
                count("busy");
                tracing::warn!(%peer, tenant = tenant_id, "request bodies in flight fill the memory budget; command answered busy");
            } else {
                count("bad_request");
                tracing::info!(%peer, tenant = tenant_id, reason = %refused.message, "command body refused");
            }
            let mut response = error(refused.status, refused.code, &refused.message);
            refused.decorate(&mut response);
            return response;
        }
    };
    let command = Command {
        tenant: tenant.id.clone(),
        method: parts.method,
        path,
        query,
        body,
        headers: parts.headers,
    };
    let (method, path) = (command.method.clone(), command.path.clone());
    let CommandReply { status, body } = adapter.command(app.core.as_ref(), command).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    count(if status.is_success() { "ok" } else { "refused" });
    tracing::info!(
        tenant = tenant_id, adapter = adapter_name, %method, path = %path,
        status = status.as_u16(), "command handled"
    );
    let retry_after = body["error"]["retry_after_s"].as_u64();
    let mut response = json(status, &body);
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(seconds.max(1)),
        );
    }
    response
}
