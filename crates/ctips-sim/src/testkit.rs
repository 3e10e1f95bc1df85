//! Test peers for the simulator: a CTIPS client ([`Client`]) and a client-side callback
//! service ([`CallbackServer`]) that records StartSession, Heartbeat and PublishCTIEvent calls
//! and reads every event strictly (so the simulator's own output is checked too).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::wire::{self, fields, Fields, NS_PUB, V};
use crate::xml;

/// How the callback service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CallbackMode {
    /// 200 with a result of 0.
    Ok,
    /// HTTP 500 with a SOAP fault.
    Fail,
    /// Never answers.
    Hang,
}

/// One callback received.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// `StartSession`, `Heartbeat`, `PublishCTIEvent` (or the element name seen).
    pub op: String,
    /// SessionId for StartSession and Heartbeat.
    pub session: String,
    /// Event contract for PublishCTIEvent (`CTIRouteRequest`).
    pub event: Option<String>,
    /// Event members, read strictly (DataContract order and required members).
    #[serde(skip)]
    pub fields: Fields,
    /// Error reading the event strictly, if any.
    pub error: Option<String>,
    /// Raw body.
    pub body: String,
    /// Mode the call was answered in.
    pub answered: CallbackMode,
    /// When it arrived.
    #[serde(skip)]
    pub at: Option<Instant>,
}

impl Received {
    /// Integer member of the event.
    pub fn int(&self, name: &str) -> i64 {
        wire::get_int(&self.fields, name)
    }

    /// Text member of the event.
    pub fn text(&self, name: &str) -> String {
        wire::get_str(&self.fields, name)
    }
}

struct CbState {
    received: Vec<Received>,
    mode: CallbackMode,
}

/// A client-side CTIEventService on a loopback port.
pub struct CallbackServer {
    addr: SocketAddr,
    state: Arc<Mutex<CbState>>,
    version: watch::Sender<u64>,
    task: JoinHandle<()>,
}

fn lock(m: &Mutex<CbState>) -> MutexGuard<'_, CbState> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl CallbackServer {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<CallbackServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(CbState {
            received: Vec::new(),
            mode: CallbackMode::Ok,
        }));
        let version = watch::channel(0u64).0;
        let (st, ver) = (state.clone(), version.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (st, ver) = (st.clone(), ver.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, ver) = (st.clone(), ver.clone());
                        async move { Ok::<_, Infallible>(serve(st, ver, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(CallbackServer {
            addr,
            state,
            version,
            task,
        })
    }

    /// The URL to give as ClientCallbackURL.
    pub fn url(&self) -> String {
        format!("http://{}/ctips/callback", self.addr)
    }

    /// Sets how calls are answered from now on.
    pub fn set_mode(&self, mode: CallbackMode) {
        lock(&self.state).mode = mode;
    }

    /// Every callback received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    /// Events received so far (PublishCTIEvent only).
    pub fn events(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.op == "PublishCTIEvent")
            .collect()
    }

    /// Waits until `f` over the received calls returns Some, or `timeout` passes.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        f: impl Fn(&[Received]) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.version.subscribe();
        let fut = async {
            loop {
                rx.borrow_and_update();
                if let Some(v) = f(&lock(&self.state).received) {
                    return v;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.ok()
    }

    /// Waits for an event of this contract matching `pred`.
    pub async fn wait_event(
        &self,
        timeout: Duration,
        kind: &str,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        self.wait_for(timeout, |rs| {
            rs.iter()
                .find(|r| r.event.as_deref() == Some(kind) && pred(r))
                .cloned()
        })
        .await
    }
}

impl Drop for CallbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    st: Arc<Mutex<CbState>>,
    ver: watch::Sender<u64>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), xml::MAX_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mode = lock(&st).mode;
    let mut rec = Received {
        op: String::new(),
        session: String::new(),
        event: None,
        fields: Fields::new(),
        error: None,
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: mode,
        at: Some(Instant::now()),
    };
    match xml::parse(&body) {
        Err(e) => rec.error = Some(e),
        Ok(root) => {
            if let Some(op) = root.child("Body").and_then(|b| b.children.first()) {
                rec.op = op.name.clone();
                if op.ns != NS_PUB {
                    rec.error = Some(format!("operation in namespace {}", op.ns));
                }
                match op.name.as_str() {
                    "Heartbeat" => {
                        rec.session = op
                            .child("sessionId")
                            .map(|s| s.text.clone())
                            .unwrap_or_default()
                    }
                    "StartSession" => {
                        rec.session = op
                            .child("sessionId")
                            .map(|s| s.text.clone())
                            .unwrap_or_default()
                    }
                    "PublishCTIEvent" => {
                        if let Some(ev) = op.child("ctiEvent") {
                            if let Some((_, kind)) = ev.xsi_type() {
                                match wire::spec().contracts.get(&kind) {
                                    Some(c) => {
                                        match wire::read_members(ev, NS_PUB, &c.members, true) {
                                            Ok(f) => rec.fields = f,
                                            Err(e) => rec.error = Some(e),
                                        }
                                    }
                                    None => rec.error = Some(format!("unknown event type {kind}")),
                                }
                                rec.event = Some(kind);
                            } else {
                                rec.error = Some("ctiEvent without i:type".into());
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let op = rec.op.clone();
    lock(&st).received.push(rec);
    ver.send_modify(|v| *v += 1);
    match mode {
        CallbackMode::Hang => std::future::pending::<Response<Full<Bytes>>>().await,
        CallbackMode::Fail => {
            let mut r = Response::new(Full::new(Bytes::from(wire::envelope(
                "<s:Fault><faultcode>s:Server</faultcode><faultstring>callback failing on purpose</faultstring></s:Fault>",
            ))));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
        CallbackMode::Ok => {
            let op = if op.is_empty() {
                "PublishCTIEvent".to_string()
            } else {
                op
            };
            Response::new(Full::new(Bytes::from(wire::int_response(&op, NS_PUB, 0))))
        }
    }
}

/// What a CTIPS request got back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
    /// `CTIPortalServiceFault` ErrorCode, or the SOAP faultcode's local part (e.g.
    /// `DeserializationFailed`), when the reply is a fault.
    pub fault: Option<String>,
    /// The int result (OpResult), when there is one.
    pub result: Option<i64>,
    /// SessionId of an OpenConnection reply.
    pub session_id: Option<String>,
    /// Response of an OpenConnection reply.
    pub response: Option<String>,
}

fn read_reply(status: u16, body: String) -> Reply {
    let mut r = Reply {
        status,
        body,
        fault: None,
        result: None,
        session_id: None,
        response: None,
    };
    let Ok(root) = xml::parse(r.body.as_bytes()) else {
        return r;
    };
    let Some(first) = root.child("Body").and_then(|b| b.children.first()) else {
        return r;
    };
    if first.name == "Fault" {
        let code = first
            .child("detail")
            .and_then(|d| d.child("CTIPortalServiceFault"))
            .and_then(|f| f.child("ErrorCode"))
            .map(|e| e.text.clone())
            .or_else(|| {
                first
                    .child("faultcode")
                    .map(|c| c.text.rsplit(':').next().unwrap_or("").to_string())
            });
        r.fault = code;
        return r;
    }
    if let Some(res) = first.children.first() {
        if let Some(sid) = res.child("SessionId") {
            r.session_id = (!sid.is_nil()).then(|| sid.text.clone());
            r.response = res.child("Response").map(|x| x.text.clone());
        } else {
            r.result = res.text.trim().parse().ok();
        }
    }
    r
}

/// A CTIPS client for tests: writes requests in DataContract order from the wire tables.
pub struct Client {
    http: reqwest::Client,
    /// Service URL.
    pub url: String,
    /// SessionId after [`Client::open`].
    pub session_id: String,
    /// TenantId sent.
    pub tenant: i64,
    next_request: i64,
}

impl Client {
    /// A client of the server at `url`.
    pub fn new(url: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            url: url.to_string(),
            session_id: String::new(),
            tenant: 1,
            next_request: 1000,
        }
    }

    /// Posts a raw body with a SOAPAction and content type.
    pub async fn post_raw(
        &self,
        action: &str,
        content_type: &str,
        body: String,
    ) -> Result<Reply, String> {
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", content_type)
            .header("SOAPAction", format!("\"{action}\""))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok(read_reply(status, text))
    }

    /// Sends operation `op` with exactly these members.
    pub async fn call(&self, op: &str, args: &Fields) -> Result<Reply, String> {
        let action = wire::spec()
            .ops
            .get(op)
            .map(|o| o.action.clone())
            .unwrap_or_default();
        self.post_raw(
            &action,
            "text/xml; charset=utf-8",
            wire::request_body(op, args),
        )
        .await
    }

    /// OpenConnection for this tenant with a callback URL; keeps the SessionId.
    pub async fn open(
        &mut self,
        callback_url: &str,
        user: &str,
        password: &str,
    ) -> Result<Reply, String> {
        let args = fields([
            ("TenantIds", V::Arr(vec![V::Int(self.tenant)])),
            (
                "UserCredentials",
                V::Obj(fields([
                    ("UserName", V::Str(user.into())),
                    ("Password", V::Str(password.into())),
                ])),
            ),
            ("ClientCallbackURL", V::Str(callback_url.into())),
        ]);
        let r = self.call("OpenConnection", &args).await?;
        if let Some(s) = &r.session_id {
            self.session_id = s.clone();
        }
        Ok(r)
    }

    /// Sends `op` with SessionId, TenantId and a fresh RequestId filled in, plus `extra`.
    /// Returns the reply and the RequestId used.
    pub async fn send(&mut self, op: &str, extra: Fields) -> Result<(Reply, i64), String> {
        self.next_request += 1;
        let rid = self.next_request;
        let mut args = fields([
            ("SessionId", V::Str(self.session_id.clone())),
            ("TenantId", V::Int(self.tenant)),
            ("RequestId", V::Int(rid)),
        ]);
        args.extend(extra);
        Ok((self.call(op, &args).await?, rid))
    }

    /// The registration sequence: OpenConnection, AddMessageClass for each category, OnLine.
    pub async fn register(&mut self, callback_url: &str) -> Result<(), String> {
        let r = self.open(callback_url, "user", "pass").await?;
        if r.session_id.is_none() {
            return Err(format!("OpenConnection failed: {} {}", r.status, r.body));
        }
        for c in [
            "EventCategoryAgent",
            "EventCategoryCall",
            "EventCategoryRoute",
            "EventCategorySystem",
        ] {
            let (r, _) = self
                .send(
                    "AddMessageClass",
                    fields([("MessageClass", V::Enum(c.into()))]),
                )
                .await?;
            if r.result != Some(0) {
                return Err(format!("AddMessageClass failed: {}", r.body));
            }
        }
        let (r, _) = self.send("OnLine", Fields::new()).await?;
        if r.result != Some(0) {
            return Err(format!("OnLine failed: {}", r.body));
        }
        Ok(())
    }
}
