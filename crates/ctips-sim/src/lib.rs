//! A simulator of Aspect Unified IP's CTI Portal Server (CTIPS), for tests and for running by
//! hand (`ctips-sim --help`).
//!
//! One [`Sim`] runs N CTIPS servers, each on its own loopback port and URL
//! (`http://127.0.0.1:PORT/Aspect.UnifiedIP.EDK.CTIPortalService`), over one simulated contact
//! centre ([`model::Model`]: agents, services, calls). It speaks the wire of WIRE.md (SOAP 1.1,
//! DataContract order) with its own XML reader and writer, independent of ivrgate's codec.
//!
//! Sessions behave as the seed describes: `OpenConnection` calls the client's `StartSession`
//! callback before answering; events are pushed to `ClientCallbackURL` by one ordered publisher
//! per session (an event whose delivery fails is dropped, never replayed); a heartbeat worker
//! per session calls `Heartbeat` every interval once the session went OnLine and disposes of
//! the session after `missed_heartbeats` consecutive failed calls. Every request received is
//! logged ([`Sim::requests`]); faults can be injected per server ([`Fault`]).

#![forbid(unsafe_code)]

pub mod control;
pub mod model;
mod server;
mod spec;
pub mod testkit;
pub mod wire;
pub mod xml;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use model::{AgentSpec, ServiceSpec};
use model::{Emit, Model, Target};
use wire::{Fields, V};

/// Records kept in each log (requests, callbacks); the oldest tenth is dropped beyond it.
pub const LOG_LIMIT: usize = 200_000;

/// Path of the service on every server.
pub const SERVICE_PATH: &str = "/Aspect.UnifiedIP.EDK.CTIPortalService";

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Ports of the servers (0 = any free port). Their number is the number of servers.
    pub ports: Vec<u16>,
    /// WCF strictness: fault on wrong namespace, element order, missing required members,
    /// unknown SOAPAction, wrong content type. Off: read leniently by local name.
    pub strict: bool,
    /// Heartbeat interval (seed default 30 s).
    pub heartbeat_interval: Duration,
    /// Consecutive failed Heartbeat calls that dispose of a session (seed default 3, 1..=999).
    pub missed_heartbeats: u32,
    /// Sessions per server (seed: 10).
    pub max_clients: usize,
    /// The tenant this Unified IP serves.
    pub tenant_id: i64,
    /// Accepted (user, password) pairs; empty accepts any.
    pub users: Vec<(String, String)>,
    /// Timeout of each callback (StartSession, Heartbeat, PublishCTIEvent).
    pub callback_timeout: Duration,
    /// RouteTimeout (seconds) of inbound calls when the scenario does not say.
    pub route_timeout_secs: i64,
    /// Agents.
    pub agents: Vec<AgentSpec>,
    /// Services.
    pub services: Vec<ServiceSpec>,
    /// `Response` of a successful OpenConnection (`success` or `_success`).
    pub open_response: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            ports: vec![0, 0],
            strict: true,
            heartbeat_interval: Duration::from_secs(30),
            missed_heartbeats: 3,
            max_clients: 10,
            tenant_id: 1,
            users: Vec::new(),
            callback_timeout: Duration::from_secs(5),
            route_timeout_secs: 10,
            agents: (1..=4)
                .map(|i| AgentSpec {
                    id: 1000 + i,
                    login: format!("agent{i}"),
                    services: vec![3, 4],
                })
                .collect(),
            services: vec![
                ServiceSpec {
                    id: 3,
                    external_routing: true,
                },
                ServiceSpec {
                    id: 4,
                    external_routing: false,
                },
                ServiceSpec {
                    id: 5,
                    external_routing: true,
                },
            ],
            open_response: "success".into(),
        }
    }
}

/// A fault injected into one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Healthy (also revives a killed server on the same port).
    None,
    /// Process gone: the port is closed, open connections dropped, the server's sessions
    /// disposed of (no heartbeats, no events).
    Kill,
    /// Process stuck: connections are accepted, nothing is ever answered, no heartbeats and
    /// no events go out until the fault is lifted.
    Hang,
    /// Every answer is delayed by `delay_ms`.
    Slow {
        /// Delay in milliseconds.
        delay_ms: u64,
    },
    /// Every request is answered HTTP 503 (the service is stopped behind its listener).
    Refuse,
    /// Sessions stay, requests are served, but no Heartbeat is sent.
    StopHeartbeats,
}

/// One request body received.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Order of arrival across all servers, from 1.
    pub seq: u64,
    /// Server index.
    pub server: usize,
    /// Operation (from SOAPAction, else the body's first element), `?` when unknown.
    pub op: String,
    /// SOAPAction header as received.
    pub soap_action: String,
    /// Body as received.
    pub body: String,
    /// HTTP status answered (0 while unanswered, e.g. hung).
    pub status: u16,
    /// Fault code answered, if any.
    pub fault: Option<String>,
    /// Milliseconds since the UNIX epoch.
    pub at_ms: u128,
}

/// One callback made (StartSession, Heartbeat, PublishCTIEvent).
#[derive(Debug, Clone, Serialize)]
pub struct CallbackRecord {
    /// Order across all callbacks, from 1.
    pub seq: u64,
    /// Server index.
    pub server: usize,
    /// SessionId.
    pub session: String,
    /// `StartSession`, `Heartbeat` or `PublishCTIEvent`.
    pub op: String,
    /// For PublishCTIEvent: the event contract (`CTIRouteRequest`).
    pub event: Option<String>,
    /// For PublishCTIEvent: RequestId sent.
    pub request_id: i64,
    /// For PublishCTIEvent: CallId when the event carries one.
    pub call_id: i64,
    /// Delivered (HTTP 200 without fault).
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// The body sent.
    pub body: String,
    /// Milliseconds since the UNIX epoch.
    pub at_ms: u128,
}

/// A session as seen from outside.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// SessionId.
    pub id: String,
    /// Server index.
    pub server: usize,
    /// ClientCallbackURL.
    pub callback_url: String,
    /// OnLine.
    pub online: bool,
    /// Registered categories.
    pub classes: Vec<String>,
    /// Filters (FieldType, FieldValue).
    pub filters: Vec<(String, String)>,
    /// Consecutive failed heartbeats.
    pub missed: u32,
}

/// A session that ended, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DisposedRecord {
    /// SessionId.
    pub id: String,
    /// Server index.
    pub server: usize,
    /// `closed` (CloseConnection), `heartbeat` (missed heartbeats), `killed`, `forgotten`.
    pub reason: String,
    /// Milliseconds since the UNIX epoch.
    pub at_ms: u128,
}

pub(crate) struct Outbound {
    body: String,
    event: String,
    request_id: i64,
    call_id: i64,
}

pub(crate) struct Session {
    id: String,
    server: usize,
    callback_url: String,
    online: bool,
    ever_online: bool,
    classes: BTreeSet<String>,
    filters: Vec<(String, String)>,
    missed: u32,
    tx: mpsc::UnboundedSender<Outbound>,
}

pub(crate) struct State {
    strict: bool,
    max_clients: usize,
    model: Model,
    sessions: BTreeMap<String, Session>,
    requests: Vec<RequestRecord>,
    callbacks: Vec<CallbackRecord>,
    route_sent: BTreeMap<i64, std::time::Instant>,
    route_selected: Vec<(i64, std::time::Instant)>,
    disposed: Vec<DisposedRecord>,
    faults: Vec<Fault>,
    next_seq: u64,
    next_session: u64,
}

pub(crate) struct Inner {
    cfg: SimConfig,
    st: Mutex<State>,
    version: watch::Sender<u64>,
    http: reqwest::Client,
    addrs: Vec<SocketAddr>,
    faults: Vec<watch::Sender<Fault>>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        match self.st.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn fault(&self, server: usize) -> Fault {
        self.faults
            .get(server)
            .map(|f| f.borrow().clone())
            .unwrap_or(Fault::None)
    }

    /// Publishes events to the sessions they are for, in order, under the state lock.
    pub(crate) fn dispatch(&self, st: &mut State, emits: Vec<Emit>) {
        for e in emits {
            let mut base = e.fields.clone();
            st.model.header(e.kind, &mut base);
            let call_id = wire::get_int(&base, "CallId");
            let (cat, _) = model::category_and_type(e.kind);
            for s in st.sessions.values() {
                let wanted = match &e.to {
                    Target::Session(id) => *id == s.id,
                    Target::All => {
                        s.online
                            && s.classes.contains(cat)
                            && st.model.passes_filters(e.kind, &base, &s.filters)
                    }
                };
                if !wanted {
                    continue;
                }
                let rid = match &e.request {
                    Some((sid, rid)) if *sid == s.id => *rid,
                    _ => 0,
                };
                let mut f = base.clone();
                f.insert("RequestId".into(), V::Int(rid));
                let body = wire::publish_body(e.kind, &f);
                let _ = s.tx.send(Outbound {
                    body,
                    event: e.kind.to_string(),
                    request_id: rid,
                    call_id,
                });
            }
        }
        self.bump();
    }

    pub(crate) fn record_callback(&self, mut rec: CallbackRecord) {
        let mut st = self.lock();
        st.next_seq += 1;
        rec.seq = st.next_seq;
        if st.callbacks.len() >= LOG_LIMIT {
            st.callbacks.drain(..LOG_LIMIT / 10);
        }
        st.callbacks.push(rec);
        drop(st);
        self.bump();
    }

    pub(crate) fn dispose(&self, st: &mut State, id: &str, reason: &str) -> bool {
        let Some(s) = st.sessions.remove(id) else {
            return false;
        };
        tracing::info!(
            session = id,
            server = s.server,
            reason,
            "ctips-sim: session disposed"
        );
        st.disposed.push(DisposedRecord {
            id: id.to_string(),
            server: s.server,
            reason: reason.to_string(),
            at_ms: now_ms(),
        });
        true
    }

    /// Posts a SOAP callback; Ok when answered 200 without a fault.
    pub(crate) async fn callback(
        &self,
        url: &str,
        action: &str,
        body: String,
    ) -> Result<(), String> {
        let resp = self
            .http
            .post(url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{action}\""))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{e}"))?;
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        if text.contains(":Fault") || text.contains("<Fault") {
            return Err("SOAP fault".into());
        }
        Ok(())
    }

    /// Waits while the server is hung (no heartbeats, no events go out from a stuck process).
    pub(crate) async fn wait_not_hung(&self, server: usize) {
        let Some(tx) = self.faults.get(server) else {
            return;
        };
        let mut rx = tx.subscribe();
        while matches!(*rx.borrow_and_update(), Fault::Hang) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A running simulator. Dropping it stops every server and worker.
pub struct Sim {
    inner: Arc<Inner>,
    servers: Vec<server::ServerHandle>,
}

impl Sim {
    /// Binds every server and starts them.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Sim> {
        let http = reqwest::Client::builder()
            .timeout(cfg.callback_timeout)
            .pool_max_idle_per_host(4)
            .tcp_nodelay(true)
            .build()
            .map_err(std::io::Error::other)?;
        let mut listeners = Vec::new();
        for p in &cfg.ports {
            listeners.push(server::bind(SocketAddr::from(([127, 0, 0, 1], *p)))?);
        }
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let faults = addrs
            .iter()
            .map(|_| watch::channel(Fault::None).0)
            .collect();
        let model = Model::new(cfg.tenant_id, &cfg.agents, &cfg.services);
        let inner = Arc::new(Inner {
            st: Mutex::new(State {
                strict: cfg.strict,
                max_clients: cfg.max_clients,
                model,
                sessions: BTreeMap::new(),
                requests: Vec::new(),
                callbacks: Vec::new(),
                route_sent: BTreeMap::new(),
                route_selected: Vec::new(),
                disposed: Vec::new(),
                faults: addrs.iter().map(|_| Fault::None).collect(),
                next_seq: 0,
                next_session: 0,
            }),
            cfg,
            version: watch::channel(0).0,
            http,
            addrs,
            faults,
        });
        let servers = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| server::ServerHandle::spawn(inner.clone(), i, l))
            .collect();
        Ok(Sim { inner, servers })
    }

    /// Number of servers.
    pub fn server_count(&self) -> usize {
        self.inner.addrs.len()
    }

    /// Service URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        let a = self
            .inner
            .addrs
            .get(i)
            .copied()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        format!("http://{a}{SERVICE_PATH}")
    }

    /// Service URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        (0..self.server_count()).map(|i| self.url(i)).collect()
    }

    /// Socket address of server `i`.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.inner.addrs.get(i).copied()
    }

    /// The settings the simulator runs with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    /// Switches strict mode.
    pub fn set_strict(&self, strict: bool) {
        self.inner.lock().strict = strict;
        self.inner.bump();
    }

    /// Strict mode on?
    pub fn strict(&self) -> bool {
        self.inner.lock().strict
    }

    /// Changes the number of sessions each server accepts (sessions already open stay).
    pub fn set_max_clients(&self, n: usize) {
        self.inner.lock().max_clients = n;
        self.inner.bump();
    }

    /// CTIPS forgets a session without telling the client (as after a restart behind the same
    /// port): no more heartbeats or events, and its requests answer InvalidSessionId. False
    /// when there is no such session.
    pub fn forget_session(&self, id: &str) -> bool {
        let mut st = self.inner.lock();
        let found = self.inner.dispose(&mut st, id, "forgotten");
        drop(st);
        self.inner.bump();
        found
    }

    /// Injects a fault into server `i` (or lifts it with [`Fault::None`]).
    pub async fn set_fault(&self, i: usize, fault: Fault) -> std::io::Result<()> {
        let Some(handle) = self.servers.get(i) else {
            return Err(std::io::Error::other(format!("no server {i}")));
        };
        handle.set_fault(fault).await
    }

    /// Current fault of server `i`.
    pub fn fault(&self, i: usize) -> Fault {
        self.inner.fault(i)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.lock().requests.clone()
    }

    /// Every callback made so far (StartSession, Heartbeat, PublishCTIEvent).
    pub fn callbacks(&self) -> Vec<CallbackRecord> {
        self.inner.lock().callbacks.clone()
    }

    /// Sessions that ended.
    pub fn disposed(&self) -> Vec<DisposedRecord> {
        self.inner.lock().disposed.clone()
    }

    /// Open sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.inner
            .lock()
            .sessions
            .values()
            .map(|s| SessionInfo {
                id: s.id.clone(),
                server: s.server,
                callback_url: s.callback_url.clone(),
                online: s.online,
                classes: s.classes.iter().cloned().collect(),
                filters: s.filters.clone(),
                missed: s.missed,
            })
            .collect()
    }

    /// A copy of the contact centre.
    pub fn model(&self) -> Model {
        self.inner.lock().model.clone()
    }

    /// Waits until `f` returns Some (checked on every change of the simulator's state), or
    /// `timeout` passes (None).
    pub async fn wait_for<T>(&self, timeout: Duration, f: impl Fn(&Sim) -> Option<T>) -> Option<T> {
        let mut rx = self.inner.version.subscribe();
        let fut = async {
            loop {
                rx.borrow_and_update();
                if let Some(v) = f(self) {
                    return v;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.ok()
    }

    /// An inbound call arrives at `service` (scenario helper). On a service configured for
    /// external routing it raises a RouteRequest with `route_timeout` seconds (None: the
    /// configured default); if no RouteSelect arrives in time, default routing is applied and
    /// RouteUsed(RouteDefaultUsed) with RequestId 0 is published. Returns the CallId.
    pub fn inbound_call(
        &self,
        service: i64,
        ani: &str,
        dnis: &str,
        route_timeout: Option<i64>,
    ) -> i64 {
        self.inbound_call_with_data(service, ani, dnis, route_timeout, Vec::new())
    }

    /// [`Sim::inbound_call`] with call data attached (sent in RouteRequest's CallInfo).
    pub fn inbound_call_with_data(
        &self,
        service: i64,
        ani: &str,
        dnis: &str,
        route_timeout: Option<i64>,
        data: Vec<(String, String)>,
    ) -> i64 {
        let timeout = route_timeout
            .unwrap_or(self.inner.cfg.route_timeout_secs)
            .max(0);
        let mut st = self.inner.lock();
        let (id, emits) = st.model.inbound_call(service, ani, dnis, timeout, data);
        let routed = st
            .model
            .calls
            .get(&id)
            .is_some_and(|c| c.routing == model::Routing::Pending);
        self.inner.dispatch(&mut st, emits);
        drop(st);
        if routed {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(timeout as u64)).await;
                let mut st = inner.lock();
                let emits = st.model.route_timeout(id);
                if !emits.is_empty() {
                    tracing::info!(
                        call = id,
                        "ctips-sim: RouteTimeout passed, default routing applied"
                    );
                }
                inner.dispatch(&mut st, emits);
            });
        }
        id
    }

    /// Publishes the RouteRequest of a call still waiting for a route once more (same
    /// CallId, CallSequenceId, RouteTimeout; the timer is not restarted). False when the call
    /// is unknown or already routed.
    pub fn repeat_route_request(&self, call_id: i64) -> bool {
        let mut st = self.inner.lock();
        let emits = st.model.repeat_route_request(call_id);
        let found = !emits.is_empty();
        self.inner.dispatch(&mut st, emits);
        found
    }

    /// For each call routed by a RouteSelect: the time from the moment the simulator started
    /// sending its first RouteRequest to the moment the first RouteSelect for it arrived
    /// (CallId, latency), in the order the selects arrived. For benchmarks.
    pub fn route_latencies(&self) -> Vec<(i64, Duration)> {
        let st = self.inner.lock();
        st.route_selected
            .iter()
            .filter_map(|(call, at)| {
                let sent = st.route_sent.get(call)?;
                Some((*call, at.saturating_duration_since(*sent)))
            })
            .collect()
    }

    /// The caller hangs up (scenario helper): CallCleared(FarEnd), CallEnd.
    pub fn hangup(&self, call_id: i64) -> bool {
        let mut st = self.inner.lock();
        let emits = st.model.hangup(call_id, "FarEnd", None);
        let found = !emits.is_empty();
        self.inner.dispatch(&mut st, emits);
        found
    }

    /// Publishes a LinkStatus event (component `Gateway`/`CenterCord`, state `Up`/`Down`) to
    /// the sessions of `server` (None: every server) registered for the System category.
    pub fn inject_link_status(&self, server: Option<usize>, component: &str, state: &str) {
        let mut st = self.inner.lock();
        let ids: Vec<String> = st
            .sessions
            .values()
            .filter(|s| {
                server.is_none_or(|x| x == s.server)
                    && s.online
                    && s.classes.contains("EventCategorySystem")
            })
            .map(|s| s.id.clone())
            .collect();
        let emits = ids
            .into_iter()
            .map(|id| Emit {
                kind: "CTILinkStatus",
                fields: wire::fields([
                    ("ComponentType", V::Enum(component.to_string())),
                    ("ComponentState", V::Enum(state.to_string())),
                ]),
                to: Target::Session(id),
                request: None,
            })
            .collect();
        self.inner.dispatch(&mut st, emits);
    }

    /// Publishes any event to every session it is for (categories and filters applied):
    /// for scenarios the helpers do not cover. Header members are filled in.
    pub fn publish(&self, kind: &'static str, fields: Fields) {
        let mut st = self.inner.lock();
        self.inner.dispatch(
            &mut st,
            vec![Emit {
                kind,
                fields,
                to: Target::All,
                request: None,
            }],
        );
    }

    /// Stops every server (as [`Fault::Kill`] on each).
    pub async fn shutdown(&self) {
        for s in &self.servers {
            let _ = s.set_fault(Fault::Kill).await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
        let mut st = self.inner.lock();
        st.sessions.clear();
    }
}
