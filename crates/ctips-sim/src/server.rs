//! One CTIPS server: the HTTP listener, request dispatch, and the per-session workers
//! (ordered publisher, heartbeat).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::model::{Refusal, Req};
use crate::wire::{self, get_int, get_str, Fields, NS_API, NS_PUB, NS_SOAP, V};
use crate::xml;
use crate::{now_ms, CallbackRecord, Fault, Inner, Outbound, RequestRecord, Session, SERVICE_PATH};

/// Binds a listener with SO_REUSEADDR (a killed server comes back on the same port).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(256)
}

pub(crate) struct ServerHandle {
    inner: Arc<Inner>,
    idx: usize,
    accept: Mutex<Option<JoinHandle<()>>>,
    generation: watch::Sender<u64>,
}

impl ServerHandle {
    pub(crate) fn spawn(inner: Arc<Inner>, idx: usize, listener: TcpListener) -> ServerHandle {
        let generation = watch::channel(0u64).0;
        let h = ServerHandle {
            inner,
            idx,
            accept: Mutex::new(None),
            generation,
        };
        h.start_accept(listener);
        h
    }

    fn start_accept(&self, listener: TcpListener) {
        let inner = self.inner.clone();
        let idx = self.idx;
        let gen_rx = self.generation.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let inner = inner.clone();
                let mut gen_rx = gen_rx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(inner, idx, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = gen_rx.changed() => {}
                    }
                });
            }
        });
        if let Ok(mut g) = self.accept.lock() {
            if let Some(old) = g.replace(task) {
                old.abort();
            }
        }
    }

    pub(crate) fn abort(&self) {
        if let Ok(mut g) = self.accept.lock() {
            if let Some(t) = g.take() {
                t.abort();
            }
        }
        self.generation.send_modify(|g| *g += 1);
    }

    pub(crate) async fn set_fault(&self, fault: Fault) -> std::io::Result<()> {
        let was_killed = self.inner.fault(self.idx) == Fault::Kill;
        if fault == Fault::Kill {
            self.abort();
            let mut st = self.inner.lock();
            let ids: Vec<String> = st
                .sessions
                .values()
                .filter(|s| s.server == self.idx)
                .map(|s| s.id.clone())
                .collect();
            for id in ids {
                self.inner.dispose(&mut st, &id, "killed");
            }
        } else if was_killed {
            let addr = self.inner.addrs[self.idx];
            let listener = bind(addr)?;
            self.start_accept(listener);
        }
        tracing::info!(server = self.idx, ?fault, "ctips-sim: fault set");
        if let Some(tx) = self.inner.faults.get(self.idx) {
            tx.send_replace(fault.clone());
        }
        {
            let mut st = self.inner.lock();
            if let Some(f) = st.faults.get_mut(self.idx) {
                *f = fault;
            }
        }
        self.inner.bump();
        Ok(())
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = "text/xml; charset=utf-8".parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The outcome of one request: status, body, fault code.
struct Outcome {
    status: StatusCode,
    body: String,
    fault: Option<String>,
}

impl Outcome {
    fn ok(body: String) -> Outcome {
        Outcome {
            status: StatusCode::OK,
            body,
            fault: None,
        }
    }

    fn service_fault(code: &str, message: &str) -> Outcome {
        Outcome {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: wire::service_fault(code, message),
            fault: Some(code.to_string()),
        }
    }

    fn dispatcher_fault(code: &str, message: &str) -> Outcome {
        Outcome {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: wire::dispatcher_fault(code, message),
            fault: Some(code.to_string()),
        }
    }
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Outcome {
        Outcome::service_fault(r.code, &r.message)
    }
}

async fn handle(inner: Arc<Inner>, idx: usize, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let arrived = Instant::now();
    match inner.fault(idx) {
        Fault::Refuse => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "<h1>Service Unavailable</h1>".into(),
            )
        }
        Fault::Slow { delay_ms } => tokio::time::sleep(Duration::from_millis(delay_ms)).await,
        _ => {}
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let soap_action = req
        .headers()
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_string();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = match Limited::new(req.into_body(), xml::MAX_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            tracing::warn!(server = idx, error = %e, "ctips-sim: request body refused");
            return reply(StatusCode::PAYLOAD_TOO_LARGE, String::new());
        }
    };
    if method != hyper::Method::POST || path != SERVICE_PATH {
        return reply(StatusCode::NOT_FOUND, String::new());
    }
    let op_from_action = wire::spec()
        .ops
        .values()
        .find(|o| o.action == soap_action)
        .map(|o| o.name.clone());
    let seq = {
        let mut st = inner.lock();
        st.next_seq += 1;
        let seq = st.next_seq;
        if st.requests.len() >= crate::LOG_LIMIT {
            st.requests.drain(..crate::LOG_LIMIT / 10);
        }
        st.requests.push(RequestRecord {
            seq,
            server: idx,
            op: op_from_action.clone().unwrap_or_else(|| "?".into()),
            soap_action: soap_action.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
            fault: None,
            at_ms: now_ms(),
        });
        seq
    };
    inner.bump();
    inner.wait_not_hung(idx).await;
    let out = process(&inner, idx, &soap_action, &content_type, &body, arrived).await;
    if let Some(code) = &out.fault {
        tracing::info!(
            server = idx,
            fault = code.as_str(),
            "ctips-sim: request faulted"
        );
    }
    {
        let mut st = inner.lock();
        if let Some(r) = st.requests.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = out.status.as_u16();
            r.fault = out.fault.clone();
        }
    }
    inner.bump();
    reply(out.status, out.body)
}

fn deser_fault(detail: &str) -> Outcome {
    Outcome::dispatcher_fault(
        "DeserializationFailed",
        &format!(
            "The formatter threw an exception while trying to deserialize the message: There was an error while trying to deserialize parameter {NS_API}:args. The InnerException message was '{detail}'."
        ),
    )
}

async fn process(
    inner: &Arc<Inner>,
    idx: usize,
    action: &str,
    ctype: &str,
    body: &[u8],
    arrived: Instant,
) -> Outcome {
    let strict = inner.lock().strict;
    if strict && !ctype.starts_with("text/xml") {
        return Outcome {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            body: String::new(),
            fault: Some("ContentType".into()),
        };
    }
    let root = match xml::parse(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(server = idx, error = %e, "ctips-sim: unreadable request");
            return Outcome {
                status: StatusCode::BAD_REQUEST,
                body: String::new(),
                fault: Some("BadRequest".into()),
            };
        }
    };
    if root.name != "Envelope" || (strict && root.ns != NS_SOAP) {
        return Outcome::dispatcher_fault("VersionMismatch", "not a SOAP 1.1 envelope");
    }
    let Some(op_el) = root
        .children
        .iter()
        .find(|c| c.name == "Body")
        .and_then(|b| b.children.first())
    else {
        return Outcome::dispatcher_fault("DeserializationFailed", "empty SOAP body");
    };
    let by_action = wire::spec()
        .ops
        .values()
        .find(|o| o.action == action && !o.action.contains(NS_PUB_MARK));
    let op = if strict {
        match by_action {
            Some(o) => o,
            None => {
                return Outcome::dispatcher_fault(
                    "ActionNotSupported",
                    &format!("The message with Action '{action}' cannot be processed at the receiver, due to a ContractFilter mismatch at the EndpointDispatcher."),
                )
            }
        }
    } else {
        match by_action.or_else(|| {
            wire::spec()
                .ops
                .get(&op_el.name)
                .filter(|o| o.action.contains("/ctipsapi/"))
        }) {
            Some(o) => o,
            None => {
                return Outcome::service_fault(
                    "UnknownRequest",
                    &format!("unknown operation {}", op_el.name),
                )
            }
        }
    };
    if strict && (op_el.name != op.name || op_el.ns != NS_API) {
        return Outcome::dispatcher_fault(
            "DeserializationFailed",
            &format!(
                "Expecting element '{}' from namespace '{NS_API}'.. Encountered 'Element'  with name '{}', namespace '{}'.",
                op.name, op_el.name, op_el.ns
            ),
        );
    }
    let args_el = if strict {
        op_el
            .children
            .iter()
            .find(|c| c.name == "args" && c.ns == NS_API)
    } else {
        op_el.child("args").or_else(|| op_el.children.first())
    };
    let Some(args_el) = args_el else {
        return Outcome::service_fault("MissingArg", "args is null");
    };
    if args_el.is_nil() {
        return Outcome::service_fault("NullReference", "args is null");
    }
    let args = match wire::read_members(args_el, NS_API, &op.members, strict) {
        Ok(a) => a,
        Err(e) => return deser_fault(&e),
    };
    execute(inner, idx, &op.name, args, arrived).await
}

const NS_PUB_MARK: &str = "/clientpublishapi/";

fn new_session_id(n: u64) -> String {
    let r: u64 = rand::random();
    let t = now_ms() as u64;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (r >> 32) as u32,
        (r >> 16) as u16,
        0x4000 | ((r as u16) & 0x0fff),
        0x8000 | ((n as u16) & 0x3fff),
        t & 0xffff_ffff_ffff
    )
}

async fn execute(
    inner: &Arc<Inner>,
    idx: usize,
    op: &str,
    args: Fields,
    arrived: Instant,
) -> Outcome {
    let tenant = inner.cfg.tenant_id;
    if op == "OpenConnection" {
        return open_connection(inner, idx, args).await;
    }
    let sid = get_str(&args, "SessionId");
    let mut st = inner.lock();
    let Some(sess) = st.sessions.get(&sid).filter(|s| s.server == idx) else {
        return Outcome::service_fault("InvalidSessionId", &format!("Invalid session {sid}"));
    };
    let online = sess.online;
    if op != "CloseConnection" && get_int(&args, "TenantId") != tenant {
        return Outcome::service_fault(
            "InvalidTenantId",
            &format!("tenant {} is not served here", get_int(&args, "TenantId")),
        );
    }
    let ok = |op: &str| Outcome::ok(wire::int_response(op, NS_API, 0));
    match op {
        "CloseConnection" => {
            inner.dispose(&mut st, &sid, "closed");
            drop(st);
            inner.bump();
            ok(op)
        }
        "OnLine" | "OffLine" => {
            let start_hb = {
                let Some(s) = st.sessions.get_mut(&sid) else {
                    return Outcome::service_fault("InvalidSessionId", "Invalid session");
                };
                s.online = op == "OnLine";
                let first = s.online && !s.ever_online;
                s.ever_online |= s.online;
                first
            };
            drop(st);
            if start_hb {
                spawn_heartbeat(inner.clone(), idx, sid);
            }
            inner.bump();
            ok(op)
        }
        "AddMessageClass" | "DeleteMessageClass" => {
            let class = get_str(&args, "MessageClass");
            if class == "INVALID" || class.is_empty() {
                return Outcome::service_fault("InvalidParameter", "MessageClass INVALID");
            }
            if let Some(s) = st.sessions.get_mut(&sid) {
                if op == "AddMessageClass" {
                    s.classes.insert(class);
                } else {
                    s.classes.remove(&class);
                }
            }
            drop(st);
            inner.bump();
            ok(op)
        }
        "AddFilter" | "DeleteFilter" => {
            let ft = get_str(&args, "FieldType");
            let fv = get_str(&args, "FieldValue");
            if ft == "INVALID" || ft.is_empty() || fv.trim().is_empty() {
                return Outcome::service_fault(
                    "InvalidParameter",
                    "FieldType or FieldValue invalid",
                );
            }
            if let Some(s) = st.sessions.get_mut(&sid) {
                s.filters.retain(|(t, v)| !(t == &ft && v == &fv));
                if op == "AddFilter" {
                    s.filters.push((ft, fv));
                }
            }
            drop(st);
            inner.bump();
            ok(op)
        }
        _ => {
            if !online {
                return Outcome::service_fault(
                    "InvalidRequest",
                    "the session is offline: only OnLine is accepted",
                );
            }
            let req = Req {
                session: sid.clone(),
                request_id: get_int(&args, "RequestId"),
            };
            let emits = match op {
                "Snapshot" => {
                    let types: Vec<String> = args
                        .get("EntityType")
                        .map(|v| v.arr().iter().map(V::text).collect())
                        .unwrap_or_default();
                    if types.is_empty() {
                        return Outcome::service_fault("InvalidParameter", "EntityType is empty");
                    }
                    Ok(st.model.snapshot(&req, &types))
                }
                "RouteSelect" => {
                    let call = get_int(&args, "CallId");
                    if !st.route_selected.iter().any(|(c, _)| *c == call) {
                        st.route_selected.push((call, arrived));
                    }
                    st.model.route_select(&req, &args)
                }
                other => st.model.agent_call_op(other, &req, &args),
            };
            match emits {
                Ok(emits) => {
                    inner.dispatch(&mut st, emits);
                    ok(op)
                }
                Err(r) => r.into(),
            }
        }
    }
}

async fn open_connection(inner: &Arc<Inner>, idx: usize, args: Fields) -> Outcome {
    let tenants: Vec<i64> = args
        .get("TenantIds")
        .map(|v| v.arr().iter().map(V::int).collect())
        .unwrap_or_default();
    if !tenants.contains(&inner.cfg.tenant_id) {
        return Outcome::service_fault(
            "InvalidTenantId",
            &format!(
                "TenantIds {tenants:?} do not include tenant {}",
                inner.cfg.tenant_id
            ),
        );
    }
    let (user, password) = match args.get("UserCredentials") {
        Some(V::Obj(c)) => (get_str(c, "UserName"), get_str(c, "Password")),
        _ => (String::new(), String::new()),
    };
    if !inner.cfg.users.is_empty()
        && !inner
            .cfg
            .users
            .iter()
            .any(|(u, p)| *u == user && *p == password)
    {
        tracing::info!(server = idx, user, "ctips-sim: logon failed");
        return Outcome::ok(wire::open_connection_response(None, "logonFailed"));
    }
    let url = get_str(&args, "ClientCallbackURL");
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || reqwest::Url::parse(&url).is_err()
    {
        return Outcome::service_fault(
            "InvalidParameter",
            &format!("invalid ClientCallbackURL '{url}'"),
        );
    }
    let (sid, rx) = {
        let mut st = inner.lock();
        let open = st.sessions.values().filter(|s| s.server == idx).count();
        let max = st.max_clients;
        if open >= max {
            return Outcome::service_fault(
                "MaxNumberClientConnections",
                &format!(
                    "the maximum number of client connections ({}) has been reached",
                    max
                ),
            );
        }
        st.next_session += 1;
        let sid = new_session_id(st.next_session);
        let (tx, rx) = mpsc::unbounded_channel();
        st.sessions.insert(
            sid.clone(),
            Session {
                id: sid.clone(),
                server: idx,
                callback_url: url.clone(),
                online: false,
                ever_online: false,
                classes: Default::default(),
                filters: Vec::new(),
                missed: 0,
                tx,
            },
        );
        (sid, rx)
    };
    inner.bump();
    // StartSession goes out before OpenConnection is answered (seed 4-2).
    let action = format!("{NS_PUB}/CTIEventService/StartSession");
    let body = wire::start_session_body(&user, &password, &sid);
    let res = inner.callback(&url, &action, body.clone()).await;
    inner.record_callback(CallbackRecord {
        seq: 0,
        server: idx,
        session: sid.clone(),
        op: "StartSession".into(),
        event: None,
        request_id: 0,
        call_id: 0,
        ok: res.is_ok(),
        error: res.as_ref().err().cloned(),
        body,
        at_ms: now_ms(),
    });
    if let Err(e) = res {
        let mut st = inner.lock();
        st.sessions.remove(&sid);
        drop(st);
        inner.bump();
        return Outcome::service_fault(
            "RequestFailed",
            &format!("StartSession callback failed: {e}"),
        );
    }
    spawn_publisher(inner.clone(), idx, sid.clone(), url, rx);
    Outcome::ok(wire::open_connection_response(
        Some(&sid),
        &inner.cfg.open_response,
    ))
}

fn spawn_publisher(
    inner: Arc<Inner>,
    idx: usize,
    sid: String,
    url: String,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
) {
    let action = format!("{NS_PUB}/CTIEventService/PublishCTIEvent");
    tokio::spawn(async move {
        while let Some(ob) = rx.recv().await {
            inner.wait_not_hung(idx).await;
            if !inner.lock().sessions.contains_key(&sid) {
                break;
            }
            if ob.event == "CTIRouteRequest" {
                inner
                    .lock()
                    .route_sent
                    .entry(ob.call_id)
                    .or_insert_with(Instant::now);
            }
            let res = inner.callback(&url, &action, ob.body.clone()).await;
            if let Err(e) = &res {
                tracing::info!(
                    session = sid.as_str(),
                    event = ob.event.as_str(),
                    error = e.as_str(),
                    "ctips-sim: event dropped"
                );
            }
            inner.record_callback(CallbackRecord {
                seq: 0,
                server: idx,
                session: sid.clone(),
                op: "PublishCTIEvent".into(),
                event: Some(ob.event),
                request_id: ob.request_id,
                call_id: ob.call_id,
                ok: res.is_ok(),
                error: res.err(),
                body: ob.body,
                at_ms: now_ms(),
            });
        }
    });
}

fn spawn_heartbeat(inner: Arc<Inner>, idx: usize, sid: String) {
    let action = format!("{NS_PUB}/CTIEventService/Heartbeat");
    let interval = inner.cfg.heartbeat_interval;
    let max_missed = inner.cfg.missed_heartbeats.max(1);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            if !first {
                tokio::time::sleep(interval).await;
            }
            first = false;
            inner.wait_not_hung(idx).await;
            if inner.fault(idx) == Fault::StopHeartbeats {
                continue;
            }
            let url = match inner.lock().sessions.get(&sid) {
                Some(s) => s.callback_url.clone(),
                None => break,
            };
            let body = wire::heartbeat_body(&sid);
            let res = inner.callback(&url, &action, body.clone()).await;
            let ok = res.is_ok();
            inner.record_callback(CallbackRecord {
                seq: 0,
                server: idx,
                session: sid.clone(),
                op: "Heartbeat".into(),
                event: None,
                request_id: 0,
                call_id: 0,
                ok,
                error: res.err(),
                body,
                at_ms: now_ms(),
            });
            let mut st = inner.lock();
            let Some(s) = st.sessions.get_mut(&sid) else {
                break;
            };
            if ok {
                s.missed = 0;
            } else {
                s.missed += 1;
                if s.missed >= max_missed {
                    inner.dispose(&mut st, &sid, "heartbeat");
                    drop(st);
                    inner.bump();
                    break;
                }
            }
            drop(st);
            inner.bump();
        }
    });
}
