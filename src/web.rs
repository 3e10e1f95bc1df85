//! What the HTTP server and the JSON APIs it routes to (`admin`, `api`) share: the state
//! every handler gets ([`App`]), response builders, and the one body reader: size limit, read
//! time and the budget for bodies in flight for every request, and JSON read the same way for
//! the admin and command APIs ([`read_json`]). Depends on no handler, so the handlers depend
//! on it rather than on each other.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use ivrgate_adapter::Adapter;
use serde_json::Value;

use crate::budget::{BodyBudget, Reservation};
use crate::buffer::Buffer;
use crate::core::Core;

pub struct App {
    pub core: Arc<Core>,
    pub shutting_down: AtomicBool,
    /// Request bodies in flight, against `server.max_bodies_in_flight_bytes`.
    pub bodies: Arc<BodyBudget>,
}

impl App {
    /// The adapter serving a path's first segment.
    pub(crate) fn adapter(&self, name: &str) -> Option<&'static dyn Adapter> {
        self.core.adapter(name)
    }
}

pub type Body = Full<Bytes>;

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The body's `Content-Length`, if it declared one.
pub(crate) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads a request body within `server.max_body_bytes`, by `deadline`, under a reservation in
/// the budget for bodies in flight (taken whole by `Content-Length` before a byte is read,
/// grown as a chunked body arrives). The caller holds the reservation until it has answered.
pub(crate) async fn read_budgeted(
    app: &App,
    body: Incoming,
    declared: Option<u64>,
    server: &crate::config::ServerConfig,
    deadline: tokio::time::Instant,
) -> Result<(Bytes, Reservation), BodyRefused> {
    let limit = server.max_body_bytes;
    let budget = server.bodies_in_flight_limit();
    let declared = match declared {
        Some(n) if n > limit as u64 => return Err(BodyRefused::TooLarge),
        Some(n) => n as usize,
        None => 0,
    };
    let Some(reservation) = app.bodies.try_reserve(declared, budget) else {
        return Err(BodyRefused::Busy(body));
    };
    in_flight_gauge(app);
    let read = read_body(body, limit, budget, reservation);
    let read = match tokio::time::timeout_at(deadline, read).await {
        Ok(read) => read,
        Err(_) => Err(BodyRefused::Timeout),
    };
    in_flight_gauge(app);
    read
}

/// Publishes the bytes reserved in the body budget.
pub(crate) fn in_flight_gauge(app: &App) {
    app.core
        .metrics
        .body_bytes_in_flight
        .set(i64::try_from(app.bodies.in_flight()).unwrap_or(i64::MAX));
}

/// Why a request's body was not read.
pub(crate) enum BodyRefused {
    TooLarge,
    /// Over the budget for bodies in flight; the unread body, to be discarded.
    Busy(Incoming),
    Timeout,
    Read(hyper::Error),
}

/// Reads a body of at most `limit` bytes under `reservation`, growing it as a body without
/// `Content-Length` arrives. The body is copied once, into a buffer of its declared size (a
/// large one mapped on its own, see [`crate::buffer`]); a body that arrives in one piece is
/// kept as it came.
async fn read_body(
    mut body: Incoming,
    limit: usize,
    budget: usize,
    mut reservation: Reservation,
) -> Result<(Bytes, Reservation), BodyRefused> {
    let mut first: Option<Bytes> = None;
    let mut buffer: Option<Buffer> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyRefused::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyRefused::TooLarge);
        }
        if !reservation.grow_to(total, budget) {
            return Err(BodyRefused::Busy(body));
        }
        match (first.take(), &mut buffer) {
            (None, None) => first = Some(data),
            (held, buffer) => {
                let buffer = buffer
                    .get_or_insert_with(|| Buffer::with_capacity(reservation.bytes().max(total)));
                if let Some(held) = held {
                    buffer.extend_from_slice(&held);
                }
                buffer.extend_from_slice(&data);
            }
        }
    }
    let body = match (first, buffer) {
        (Some(only), _) => only,
        (None, Some(buffer)) => buffer.freeze(),
        (None, None) => Bytes::new(),
    };
    Ok((body, reservation))
}

/// Reads and throws away (never keeps) what is left of a refused body, at most `limit` more
/// bytes by `deadline`, so the answer is not lost to a reset of a connection closed with
/// unread data. A client waiting for `100 Continue` is not asked to send it at all.
pub(crate) async fn discard(
    body: Incoming,
    headers: &http::HeaderMap,
    limit: usize,
    deadline: tokio::time::Instant,
) {
    let waits_for_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits_for_continue {
        let _ = tokio::time::timeout_at(deadline, discard_all(body, limit)).await;
    }
}

async fn discard_all(mut body: Incoming, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > limit {
                return;
            }
        }
    }
}

/// Reads a JSON request body: `null` when there is none (only whitespace), otherwise UTF-8
/// JSON read leniently within `max_depth`, or why it is not.
pub fn parse_json(bytes: &[u8], max_depth: usize) -> Result<Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let limits = ivrgate_wire::Limits {
        max_depth,
        ..ivrgate_wire::Limits::default()
    };
    let text = std::str::from_utf8(bytes).map_err(|_| "body is not UTF-8".to_owned())?;
    ivrgate_wire::json::parse_lenient(text, &limits).map_err(|e| e.to_string())
}

/// Why [`read_json`] has no body for the handler: the status to answer with, a short code
/// and a message; each API words its error document its own way.
#[derive(Debug)]
pub(crate) struct JsonRefused {
    pub status: StatusCode,
    /// `busy`, `too_large`, `timeout` or `invalid_json`.
    pub code: &'static str,
    pub message: String,
}

impl JsonRefused {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        JsonRefused {
            status,
            code,
            message: message.into(),
        }
    }

    /// Adds `Retry-After: 1` to a `busy` answer.
    pub fn decorate(&self, response: &mut Response<Body>) {
        if self.code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        }
    }
}

/// Reads a JSON API request's body like every body ([`read_budgeted`]: size limit, read time,
/// the budget for bodies in flight, whose reservation the caller holds until it answered)
/// and parses it with [`parse_json`].
pub(crate) async fn read_json(
    app: &App,
    headers: &http::HeaderMap,
    body: Incoming,
    server: &crate::config::ServerConfig,
) -> Result<(Value, Reservation), JsonRefused> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(server.body_read_timeout_ms);
    let declared = declared_length(headers);
    let (bytes, reservation) = match read_budgeted(app, body, declared, server, deadline).await {
        Ok(read) => read,
        Err(BodyRefused::Busy(rest)) => {
            discard(rest, headers, server.max_body_bytes, deadline).await;
            return Err(JsonRefused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many request bodies in flight; send it again shortly",
            ));
        }
        Err(BodyRefused::TooLarge | BodyRefused::Read(_)) => {
            return Err(JsonRefused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "request body too large or unreadable",
            ))
        }
        Err(BodyRefused::Timeout) => {
            return Err(JsonRefused::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "request body not received in time",
            ))
        }
    };
    match parse_json(&bytes, server.max_nesting_depth) {
        Ok(value) => Ok((value, reservation)),
        Err(why) => Err(JsonRefused::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not JSON: {why}"),
        )),
    }
}
