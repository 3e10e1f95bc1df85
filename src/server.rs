//! The HTTP server: routes legacy platforms to their adapter after the tenant's inbound
//! checks, and serves health, readiness, metrics and the admin API. Limits every request:
//! header and body read time, body size. Stops accepting on shutdown and lets in-flight
//! requests finish within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ivrgate_adapter::{Inbound, PathSegments};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::auth::{self, Denied};
use crate::metrics::RequestLabels;
use crate::web::{
    declared_length, discard, in_flight_gauge, read_budgeted, text, App, Body, BodyRefused,
};

/// The largest read buffer of one connection, which also bounds a request's headers.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Accepts connections until `shutdown` resolves, then drains.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Read per connection, so a reload applies them to the connections that follow: a
        // renewed certificate is used by the next handshake, open connections keep theirs.
        let (header_read_timeout, tls) = {
            let runtime = app.core.runtime.load();
            let timeout = Duration::from_millis(runtime.config.raw.server.header_read_timeout_ms);
            (timeout, runtime.config.tls.clone())
        };
        // Watched from now on, so a drain waits for a handshake under way too.
        let watcher = graceful.watcher();
        let app = app.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(app, stream, peer, header_read_timeout, watcher).await,
                Some(tls) => {
                    // The handshake gets the time a client has for its headers.
                    let metrics = &app.core.metrics;
                    match crate::tls::accept(tls, stream, peer, header_read_timeout, metrics).await
                    {
                        crate::tls::Accepted::Tls(stream) => {
                            serve_connection(app, stream, peer, header_read_timeout, watcher).await
                        }
                        crate::tls::Accepted::Refused => {}
                    }
                }
            }
        });
    }
    app.shutting_down.store(true, Ordering::SeqCst);
    // Long-polls answer now rather than holding the drain for their whole timeout.
    app.core.stopping.send_replace(true);
    drop(listener);
    // The grace of the configuration running now (a reload applies it).
    let grace_ms = app.core.runtime.load().config.raw.server.shutdown_grace_ms;
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(Duration::from_millis(grace_ms), &mut drained)
        .await
        .is_err()
    {
        // A caller never hears dead air, also on shutdown: every decision still waiting for
        // the customer gives up and answers with its fallback, which goes out on the wire
        // before its connection closes.
        let open = app.core.decisions_in_flight();
        tracing::warn!(
            grace_ms,
            open_decisions = open,
            "in-flight requests outlived the grace period: open decisions answer with their fallback"
        );
        app.core.grace_over.send_replace(true);
        if tokio::time::timeout(FALLBACK_FLUSH, &mut drained)
            .await
            .is_err()
        {
            tracing::warn!(
                flush_ms = FALLBACK_FLUSH.as_millis() as u64,
                "requests still open after the fallback answers: closing their connections"
            );
        }
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection (plain, or after its TLS handshake) until it closes or
/// the drain ends it.
async fn serve_connection<S>(
    app: Arc<App>,
    stream: S,
    peer: SocketAddr,
    header_read_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(app, req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // A connection's read buffer stays small (headers fit; bodies stream through it
        // into their budgeted buffer), so many connections sending at once cannot each
        // hold hyper's default ~400 KiB.
        .max_buf_size(READ_BUFFER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Headers a request may carry at most once: a second `Host` or `Content-Type` would leave
/// it to chance which one an adapter reads (RFC 7230 §3.2.2, §5.4).
const SINGLE_HEADERS: [header::HeaderName; 3] =
    [header::HOST, header::CONTENT_TYPE, header::AUTHORIZATION];

/// After the grace: how long the fallback answers of open decisions (and any other request
/// still finishing) get to go out before the remaining connections are closed. A fallback
/// answer needs no network beyond its own connection, so this is generous.
const FALLBACK_FLUSH: Duration = Duration::from_secs(2);

async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if let Some(name) = SINGLE_HEADERS
        .iter()
        .find(|name| req.headers().get_all(*name).iter().nth(1).is_some())
    {
        tracing::warn!(%peer, header = %name, "request refused: header repeated");
        return text(
            StatusCode::BAD_REQUEST,
            format!("more than one {name} header\n"),
        );
    }
    // Split first, then decode each segment: a decoded '/', '.' or '..' never routes.
    let path = match PathSegments::parse(req.uri().path()) {
        Ok(path) => path,
        Err(e) => {
            tracing::warn!(%peer, reason = %e, "request refused: unreadable path");
            return text(StatusCode::BAD_REQUEST, format!("bad request path: {e}\n"));
        }
    };
    let segments = path.as_strs();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => {
            if app.shutting_down.load(Ordering::SeqCst) {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            }
            match app.core.store.ping().await {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(e) => {
                    tracing::error!(error = %e, "readiness check failed");
                    text(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n")
                }
            }
        }
        (&Method::GET, ["metrics"]) => metrics(&app, &req, peer),
        (_, ["admin", rest @ ..]) => crate::admin::handle(&app, req, peer, rest).await,
        (_, ["api", tenant, adapter, ..]) => {
            let (tenant, adapter) = ((*tenant).to_owned(), (*adapter).to_owned());
            let span = tracing::info_span!("command", tenant = %tenant, adapter = %adapter);
            crate::api::handle(&app, req, peer, &tenant, &adapter, path.tail(3))
                .instrument(span)
                .await
        }
        (_, [adapter, tenant, ..]) if app.adapter(adapter).is_some() => {
            let adapter_name = (*adapter).to_owned();
            let tenant = (*tenant).to_owned();
            let span = tracing::info_span!("request", adapter = %adapter_name, tenant = %tenant);
            legacy(app, req, peer, adapter_name, tenant, path.tail(2))
                .instrument(span)
                .await
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/metrics` follows the admin rule (admin token, or loopback), plus the scraper addresses
/// of `admin.metrics_allow`.
fn metrics(app: &App, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let runtime = app.core.runtime.load();
    let config = &runtime.config;
    let client = auth::client_ip(peer, req.headers(), &config.raw.server.trusted_proxies);
    let allowed = auth::metrics_allowed(
        req.headers(),
        config.admin_token.as_deref(),
        config.raw.listen,
        peer,
        client,
        &config.raw.admin.metrics_allow,
    );
    if !allowed {
        tracing::warn!(%peer, client = %auth::Shown(client), "metrics request refused");
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "metrics need the admin token or an address in admin.metrics_allow\n",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"ivrgate\""),
        );
        return response;
    }
    app.core
        .connectors
        .refresh_metrics(&app.core.metrics, app.core.clock.now_ms());
    let mut response = text(StatusCode::OK, app.core.metrics.render());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

async fn legacy(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    adapter_name: String,
    tenant_id: String,
    path: PathSegments,
) -> Response<Body> {
    let runtime = app.core.runtime.load_full();
    let config = &runtime.config;
    let count = |method: &str, outcome: &str| {
        app.core
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                adapter: adapter_name.clone(),
                method: method.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    };
    let Some(tenant) = config.tenant(&tenant_id) else {
        count("unknown", "unknown_tenant");
        tracing::warn!(%peer, "request for an unknown tenant");
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let client_ip = auth::client_ip(peer, req.headers(), &config.raw.server.trusted_proxies);
    let client = auth::Shown(client_ip);
    let Some(adapter) = app.adapter(&adapter_name) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    // A platform callback that carries its own proof (a token in the path the adapter checks
    // in constant time) skips the tenant's inbound credentials; the allowlist still applies.
    let whole = format!("/{}", path.segments().join("/"));
    let checked = if adapter.authenticates_itself(&whole) {
        auth::check_address(tenant, client_ip).map(|()| path.segments())
    } else {
        auth::check(tenant, path.segments(), req.headers(), client_ip)
    };
    let sub_path = match checked {
        Ok(rest) => PathSegments::from_decoded(rest.iter().cloned()),
        Err(denied) => {
            count("unknown", "denied");
            tracing::warn!(%peer, %client, reason = ?denied, "inbound request refused");
            return match denied {
                Denied::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
                Denied::Forbidden => text(StatusCode::FORBIDDEN, "forbidden\n"),
                Denied::Unauthorized => {
                    let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Basic realm=\"ivrgate\""),
                    );
                    r
                }
            };
        }
    };
    let (parts, body) = req.into_parts();
    let server = &config.raw.server;
    let limit = server.max_body_bytes;
    let declared = declared_length(&parts.headers);
    let mut inbound = Inbound {
        tenant: tenant.id.clone(),
        method: parts.method,
        path: sub_path,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: Bytes::new(),
        peer,
        mask_phones: config.raw.logging.mask_phone_numbers,
        max_depth: server.max_nesting_depth,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(server.body_read_timeout_ms);
    let budget = server.bodies_in_flight_limit();
    let read = read_budgeted(&app, body, declared, server, deadline).await;
    let (body, reservation) = match read {
        Ok(read) => read,
        Err(BodyRefused::TooLarge) => {
            count("unknown", "too_large");
            tracing::warn!(%client, limit, "request body over the size limit");
            return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        Err(BodyRefused::Busy(rest)) => {
            let handled = adapter.busy(app.core.as_ref(), &inbound);
            count(&handled.method, handled.outcome);
            tracing::warn!(
                %client,
                declared = declared.unwrap_or(0),
                in_flight = app.bodies.in_flight(),
                budget,
                "request bodies in flight fill the memory budget; answered busy"
            );
            discard(rest, &inbound.headers, limit, deadline).await;
            let (parts, body) = handled.response.into_parts();
            return Response::from_parts(parts, Full::new(body));
        }
        Err(BodyRefused::Read(e)) => {
            count("unknown", "read_error");
            tracing::warn!(%client, error = %e, "cannot read request body");
            return text(StatusCode::BAD_REQUEST, "cannot read request body\n");
        }
        Err(BodyRefused::Timeout) => {
            count("unknown", "body_timeout");
            tracing::warn!(%client, "request body not received in time");
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            );
        }
    };
    inbound.body = body;
    let handled = adapter.handle(app.core.as_ref(), inbound).await;
    count(&handled.method, handled.outcome);
    tracing::info!(
        method = %handled.method,
        outcome = handled.outcome,
        call = handled.vendor_call_id.as_deref().unwrap_or("-"),
        status = handled.response.status().as_u16(),
        "handled"
    );
    drop(reservation);
    in_flight_gauge(&app);
    let (parts, body) = handled.response.into_parts();
    Response::from_parts(parts, Full::new(body))
}
