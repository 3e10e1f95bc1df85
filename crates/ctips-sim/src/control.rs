//! The JSON control API of a running simulator (for `ctips-sim` run by hand, and for tests
//! that drive the binary): scenarios, fault injection, the request and callback logs.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /state` | | servers (url, fault), strict, sessions, disposed sessions, the model |
//! | `GET /requests?since=N` | | request records with `seq > N` |
//! | `GET /callbacks?since=N` | | callback records with `seq > N` |
//! | `POST /calls` | `{"service":3,"ani":"..","dnis":"..","route_timeout":10,"data":{"k":"v"}}` | `{"call_id":5551}` |
//! | `POST /calls/{id}/hangup` | | `{"found":true}` |
//! | `POST /calls/{id}/route-request` | | the call's RouteRequest published again: `{"found":true}` |
//! | `GET /route-latencies` | | `[{"call_id":5551,"us":1234}]`: first RouteRequest sent → first RouteSelect received |
//! | `POST /servers/{i}/fault` | `{"kind":"kill"}` (`none`, `kill`, `hang`, `slow` + `delay_ms`, `refuse`, `stop_heartbeats`) | `{"ok":true}` |
//! | `POST /link-status` | `{"server":0,"component":"Gateway","state":"Down"}` | `{"ok":true}` |
//! | `POST /sessions/{id}/forget` | | CTIPS forgets the session silently: `{"found":true}` |
//! | `POST /max-clients` | `{"max_clients":0}` | `{"ok":true}` |
//! | `POST /strict` | `{"strict":false}` | `{"ok":true}` |
//! | `POST /publish` | `{"event":"CTIServiceStateChange","fields":{"ServiceId":3,"ServiceState":"Pause"}}` | `{"ok":true}` |
//!
//! Errors answer 400/404 with `{"error": "..."}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::wire::{self, Fields, V};
use crate::{Fault, Sim};

/// Serves the control API on `127.0.0.1:port` (0 = any free port); returns its address.
pub async fn serve(sim: Arc<Sim>, port: u16) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let sim = sim.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let sim = sim.clone();
                    async move { Ok::<_, Infallible>(handle(&sim, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn json_reply(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    if let Ok(h) = "application/json".parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, h);
    }
    r
}

fn bad(msg: impl Into<String>) -> Response<Full<Bytes>> {
    let msg = msg.into();
    tracing::warn!(error = msg.as_str(), "ctips-sim control: request refused");
    json_reply(StatusCode::BAD_REQUEST, json!({ "error": msg }))
}

fn to_v(v: &Value) -> V {
    match v {
        Value::Null => V::Nil,
        Value::Bool(b) => V::Bool(*b),
        Value::Number(n) => V::Int(n.as_i64().unwrap_or(0)),
        Value::String(s) => V::Str(s.clone()),
        Value::Array(a) => V::Arr(a.iter().map(to_v).collect()),
        Value::Object(o) => V::Obj(o.iter().map(|(k, v)| (k.clone(), to_v(v))).collect()),
    }
}

fn since(req: &Request<hyper::body::Incoming>) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(sim: &Sim, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let from = since(&req);
    let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad("body too large"),
    };
    let input: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return bad(format!("body is not JSON: {e}")),
        }
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        (Method::GET, ["state"]) | (Method::GET, []) => {
            let servers: Vec<Value> = (0..sim.server_count())
                .map(|i| json!({ "index": i, "url": sim.url(i), "fault": sim.fault(i) }))
                .collect();
            json_reply(
                StatusCode::OK,
                json!({
                    "servers": servers,
                    "strict": sim.strict(),
                    "sessions": sim.sessions(),
                    "disposed": sim.disposed(),
                    "model": sim.model(),
                }),
            )
        }
        (Method::GET, ["requests"]) => {
            let r: Vec<_> = sim
                .requests()
                .into_iter()
                .filter(|r| r.seq > from)
                .collect();
            json_reply(StatusCode::OK, json!(r))
        }
        (Method::GET, ["callbacks"]) => {
            let r: Vec<_> = sim
                .callbacks()
                .into_iter()
                .filter(|r| r.seq > from)
                .collect();
            json_reply(StatusCode::OK, json!(r))
        }
        (Method::POST, ["calls"]) => {
            let Some(service) = input.get("service").and_then(Value::as_i64) else {
                return bad("service (int) is required");
            };
            let s = |k: &str| {
                input
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let data: Vec<(String, String)> = input
                .get("data")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let timeout = input.get("route_timeout").and_then(Value::as_i64);
            let id = sim.inbound_call_with_data(service, &s("ani"), &s("dnis"), timeout, data);
            json_reply(StatusCode::OK, json!({ "call_id": id }))
        }
        (Method::POST, ["calls", id, "hangup"]) => match id.parse::<i64>() {
            Ok(id) => json_reply(StatusCode::OK, json!({ "found": sim.hangup(id) })),
            Err(_) => bad("call id must be an int"),
        },
        (Method::POST, ["calls", id, "route-request"]) => match id.parse::<i64>() {
            Ok(id) => json_reply(
                StatusCode::OK,
                json!({ "found": sim.repeat_route_request(id) }),
            ),
            Err(_) => bad("call id must be an int"),
        },
        (Method::GET, ["route-latencies"]) => {
            let l: Vec<Value> = sim
                .route_latencies()
                .into_iter()
                .map(|(c, d)| json!({ "call_id": c, "us": d.as_micros() as u64 }))
                .collect();
            json_reply(StatusCode::OK, json!(l))
        }
        (Method::POST, ["servers", i, "fault"]) => {
            let Ok(i) = i.parse::<usize>() else {
                return bad("server index must be an int");
            };
            let fault: Fault = match serde_json::from_value(input) {
                Ok(f) => f,
                Err(e) => return bad(format!("fault: {e}")),
            };
            match sim.set_fault(i, fault).await {
                Ok(()) => json_reply(StatusCode::OK, json!({ "ok": true })),
                Err(e) => bad(e.to_string()),
            }
        }
        (Method::POST, ["link-status"]) => {
            let server = input
                .get("server")
                .and_then(Value::as_u64)
                .map(|s| s as usize);
            let component = input
                .get("component")
                .and_then(Value::as_str)
                .unwrap_or("Gateway");
            let state = input.get("state").and_then(Value::as_str).unwrap_or("Down");
            sim.inject_link_status(server, component, state);
            json_reply(StatusCode::OK, json!({ "ok": true }))
        }
        (Method::POST, ["sessions", id, "forget"]) => {
            json_reply(StatusCode::OK, json!({ "found": sim.forget_session(id) }))
        }
        (Method::POST, ["max-clients"]) => match input.get("max_clients").and_then(Value::as_u64) {
            Some(n) => {
                sim.set_max_clients(n as usize);
                json_reply(StatusCode::OK, json!({ "ok": true }))
            }
            None => bad("max_clients (int) is required"),
        },
        (Method::POST, ["strict"]) => match input.get("strict").and_then(Value::as_bool) {
            Some(b) => {
                sim.set_strict(b);
                json_reply(StatusCode::OK, json!({ "ok": true }))
            }
            None => bad("strict (bool) is required"),
        },
        (Method::POST, ["publish"]) => {
            let name = input.get("event").and_then(Value::as_str).unwrap_or("");
            let Some((kind, _)) = wire::spec().contracts.get_key_value(name).filter(|(k, c)| {
                c.ns == wire::NS_PUB
                    && k.starts_with("CTI")
                    && c.members.iter().any(|m| m.name == "EventType")
            }) else {
                return bad(format!("unknown event contract '{name}'"));
            };
            let fields: Fields = match input.get("fields") {
                Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), to_v(v))).collect(),
                _ => Fields::new(),
            };
            sim.publish(kind.as_str(), fields);
            json_reply(StatusCode::OK, json!({ "ok": true }))
        }
        _ => json_reply(
            StatusCode::NOT_FOUND,
            json!({ "error": "no such control endpoint" }),
        ),
    }
}
