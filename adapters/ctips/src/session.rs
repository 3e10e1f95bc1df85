//! The connector: one CTIPS session per tenant, held by whichever instance holds the lease.
//!
//! Lifecycle (seed 5-1 to 5-4): OpenConnection (StartSession arrives during it),
//! AddMessageClass per category, AddFilter per filter (configured and runtime ones), OnLine,
//! Snapshot. Then the heartbeat watchdog: no Heartbeat for `interval × missed` → the session
//! is lost, the old session is closed where the server still answers, and the next server in
//! the list is tried at once. RouteRequests committed by the callback service are decided
//! here and answered with RouteSelect. On SIGTERM: pending routes answered, OffLine,
//! CloseConnection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivrgate_adapter::{
    CallRef, ConnectorCtxRef, ConnectorExit, ConnectorHealth, DecisionRequest, EntityKey,
    StopReason,
};
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use crate::event::text;
use crate::live::{self, Live, Notice, RouteJob};
use crate::proto::{self, CallError, EntityType, Request, Service};
use crate::route;
use crate::settings::{Filter, Settings};
use crate::store::{self, now_ms, CALL_KIND, LOGIN_ALIAS};

/// Request ids unique across reconnects and instances: the lease epoch in the high bits, a
/// counter in the low ones, never 0 (0 means "unsolicited" in events, CT-7).
pub struct RequestIds {
    base: i64,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new(epoch: u64) -> Self {
        RequestIds {
            base: ((epoch & 0x7FFF) as i64) << 16,
            next: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> i64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % 0xFFFF + 1;
        self.base | n as i64
    }
}

/// The session as the connector holds it now.
#[derive(Debug, Clone)]
pub struct Current {
    pub server: String,
    pub session_id: String,
}

/// What the connector's pieces share.
pub struct Shared {
    pub ctx: ConnectorCtxRef,
    pub settings: Arc<Settings>,
    pub live: Arc<Live>,
    pub ids: RequestIds,
    pub current: Mutex<Option<Current>>,
    pub health: Mutex<ConnectorHealth>,
    pub routes_too_late: AtomicU64,
}

impl Shared {
    fn current(&self) -> Option<Current> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn health(&self, f: impl FnOnce(&mut ConnectorHealth)) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut h);
        let hb = self.live.last_heartbeat_ms();
        h.last_heartbeat_ms = (hb > 0).then_some(hb);
        self.ctx.set_health(h.clone());
    }

    async fn send(&self, server: &str, request: &Request) -> Result<i64, CallError> {
        proto::call_int(self.ctx.http(), server, request, None).await
    }
}

/// A command as it goes out on a session: SessionId, RequestId where the operation takes one
/// (always, whatever its value: WIRE.md marks it required there), TenantId, then the
/// command's own fields.
pub fn command_request(session_id: &str, tenant_id: i64, request: Request, rid: i64) -> Request {
    let mut full = Request::new(&request.op, request.service).text("SessionId", session_id);
    if proto::takes_request_id(&request.op) {
        full = full.int("RequestId", rid);
    }
    full = full.int("TenantId", tenant_id);
    full.fields.extend(request.fields);
    full
}

/// Sends one command with the current session ([`command_request`]).
pub async fn send_command(shared: &Shared, request: Request, rid: i64) -> Result<i64, CallError> {
    let Some(current) = shared.current() else {
        return Err(CallError::Unreachable("no session".into()));
    };
    let tenant_id = i64::from(shared.settings.tenant_id());
    let full = command_request(&current.session_id, tenant_id, request, rid);
    shared.send(&current.server, &full).await
}

/// The command worker: sends what the command API queued, woken by the queue entity.
async fn command_worker(shared: Arc<Shared>) {
    let gw = shared.ctx.gateway();
    let tenant = shared.ctx.tenant().to_owned();
    let queue = EntityKey::new(
        &tenant,
        crate::command::QUEUE_KIND,
        crate::command::QUEUE_ID,
    );
    crate::command::orphans(gw, &tenant).await;
    loop {
        let seen = gw
            .load(queue.clone())
            .await
            .ok()
            .flatten()
            .map(|e| e.version);
        crate::command::work_queue(&shared).await;
        match gw
            .wait_change(queue.clone(), seen, Duration::from_secs(30))
            .await
        {
            ivrgate_adapter::Waited::ShuttingDown => return,
            _ => continue,
        }
    }
}

/// Why the online phase ended.
enum Ended {
    Lost(String),
    Stop(StopReason),
}

/// The callback URL CTIPS calls for this session.
pub fn callback_url(advertise: &str, tenant: &str, token: &str, epoch: u64) -> String {
    let tenant: String = tenant
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "{}/ctips/{tenant}/{token}/{epoch}",
        advertise.trim_end_matches('/')
    )
}

/// Runs the connector until it must stop.
pub async fn run(ctx: ConnectorCtxRef) -> ConnectorExit {
    let tenant = ctx.tenant().to_owned();
    let Some(settings) = crate::settings_for(ctx.gateway(), &tenant) else {
        return ConnectorExit::Failed("the tenant has no [tenants.ctips] section".into());
    };
    let Some(advertise) = ctx.advertise_url().map(str::to_owned) else {
        return ConnectorExit::Failed(
            "CTIPS needs [server] advertise_url: the callback URL CTIPS calls".into(),
        );
    };
    let epoch = ctx.epoch();
    let url = callback_url(&advertise, &tenant, &settings.callback_token, epoch);
    let (live, mut notices, _guard) = live::register(&tenant, epoch);
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        settings: settings.clone(),
        live,
        ids: RequestIds::new(epoch),
        current: Mutex::new(None),
        health: Mutex::new(ConnectorHealth {
            detail: "connecting".into(),
            ..ConnectorHealth::default()
        }),
        routes_too_late: AtomicU64::new(0),
    });
    let mut routes: JoinSet<()> = JoinSet::new();
    let mut server_index = 0usize;
    let mut lost_at: Option<i64> = None;
    let mut lost_reason: Option<String> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        if let Some(reason) = ctx.stop_reason() {
            return stop(&shared, &mut routes, reason).await;
        }
        // Connect: every server once, starting with the next one.
        let mut connected = None;
        for attempt in 0..settings.servers.len() {
            let index = (server_index + attempt) % settings.servers.len();
            let server = &settings.servers[index];
            shared.health(|h| {
                h.connected = false;
                h.server = Some(server.clone());
                h.detail = "connecting".into();
            });
            match open(&shared, server, &url).await {
                Ok(session_id) => {
                    server_index = index;
                    connected = Some(session_id);
                    break;
                }
                Err(e) if e.is_fault("MaxNumberClientConnections") => {
                    tracing::warn!(tenant = %tenant, server = %server,
                        "CTIPS refused the session: it already serves its maximum of clients (MaxNumberClientConnections); backing off");
                    shared.health(|h| h.detail = "backoff: MaxNumberClientConnections".into());
                    backoff = (backoff * 4).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant, server = %server, error = %e,
                        "CTIPS session could not be opened; trying the next server");
                }
            }
        }
        let Some(session_id) = connected else {
            shared.health(|h| {
                h.connected = false;
                h.detail = format!(
                    "backoff {} ms: no server accepted a session",
                    backoff.as_millis()
                );
            });
            server_index = (server_index + 1) % settings.servers.len();
            let wait = backoff;
            backoff = (backoff * 2)
                .min(settings.heartbeat_interval / 2)
                .max(Duration::from_millis(200));
            tokio::select! {
                reason = ctx.stopped() => return stop(&shared, &mut routes, reason).await,
                _ = tokio::time::sleep(wait) => continue,
            }
        };
        backoff = Duration::from_millis(200);
        let server = settings.servers[server_index].clone();
        let now = now_ms(ctx.gateway().now());
        let mut data = Map::new();
        data.insert("server".into(), json!(server));
        data.insert("session_id".into(), json!(session_id));
        data.insert("epoch".into(), json!(epoch));
        data.insert("gap_ms".into(), json!(lost_at.map(|t| (now - t).max(0))));
        data.insert("lost_reason".into(), json!(lost_reason.take()));
        let mut patch = Map::new();
        patch.insert("online".into(), json!(true));
        patch.insert("server".into(), json!(server));
        patch.insert("session_id".into(), json!(session_id));
        patch.insert("epoch".into(), json!(epoch));
        patch.insert("holder_since_ms".into(), json!(now));
        if let Err(e) =
            store::session_event(ctx.gateway(), &tenant, "ctips.session.online", data, patch).await
        {
            tracing::warn!(tenant = %tenant, error = %e, "ctips.session.online not stored");
        }
        shared.health(|h| {
            h.connected = true;
            h.server = Some(server.clone());
            h.session_id = Some(session_id.clone());
            h.sessions_opened += 1;
            h.detail = "online".into();
        });
        tracing::info!(tenant = %tenant, server = %server, epoch, "CTIPS session online");
        let ended = online(&shared, &mut notices, &mut routes).await;
        match ended {
            Ended::Stop(reason) => return stop(&shared, &mut routes, reason).await,
            Ended::Lost(reason) => {
                let now = now_ms(ctx.gateway().now());
                tracing::warn!(tenant = %tenant, server = %server, reason = %reason,
                    "CTIPS session lost; reconnecting");
                shared.health(|h| {
                    h.connected = false;
                    h.detail = format!("lost: {reason}");
                });
                *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let mut data = Map::new();
                data.insert("server".into(), json!(server));
                data.insert("session_id".into(), json!(session_id));
                data.insert("epoch".into(), json!(epoch));
                data.insert("reason".into(), json!(reason));
                let hb = shared.live.last_heartbeat_ms();
                data.insert("last_heartbeat_ms".into(), json!((hb > 0).then_some(hb)));
                // The gap so far: how long the session had been silent when it was declared
                // lost (`ctips.session.online`'s `gap_ms` is the rest of it).
                data.insert(
                    "silent_ms".into(),
                    json!((hb > 0).then(|| (now - hb).max(0))),
                );
                let mut patch = Map::new();
                patch.insert("online".into(), json!(false));
                if let Err(e) =
                    store::session_event(ctx.gateway(), &tenant, "ctips.session.lost", data, patch)
                        .await
                {
                    tracing::warn!(tenant = %tenant, error = %e, "ctips.session.lost not stored");
                }
                // Close the old session where the server still answers, without waiting long.
                let close = Request::new("CloseConnection", Service::Registration)
                    .text("SessionId", session_id.clone());
                let _ = proto::call_int(ctx.http(), &server, &close, Some(Duration::from_secs(1)))
                    .await;
                lost_at = Some(now);
                lost_reason = Some(reason);
                if settings.servers.len() > 1 {
                    server_index = (server_index + 1) % settings.servers.len();
                }
            }
        }
    }
}

/// Opens a session on one server: OpenConnection, categories, filters, OnLine, Snapshot.
async fn open(shared: &Arc<Shared>, server: &str, callback: &str) -> Result<String, CallError> {
    let s = &shared.settings;
    let ctx = &shared.ctx;
    shared.live.set_session_id(None);
    let request = Request::new("OpenConnection", Service::Registration)
        .ints(
            "TenantIds",
            s.tenant_ids.iter().map(|&t| i64::from(t)).collect(),
        )
        .credentials("UserCredentials", &s.username, &s.password)
        .text("ClientCallbackURL", callback);
    let result = proto::call(ctx.http(), server, &request, None).await?;
    let session_id = proto::read_session(&result)?;
    shared.live.set_session_id(Some(session_id.clone()));
    shared.live.beat(now_ms(ctx.gateway().now()));
    let registered = register(shared, server, &session_id).await;
    if let Err(e) = registered {
        let close = Request::new("CloseConnection", Service::Registration)
            .text("SessionId", session_id.clone());
        let _ = proto::call_int(ctx.http(), server, &close, Some(Duration::from_secs(1))).await;
        return Err(e);
    }
    *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Current {
        server: server.to_owned(),
        session_id: session_id.clone(),
    });
    Ok(session_id)
}

/// The runtime filters the command API stored on the session entity.
async fn runtime_filters(shared: &Shared) -> Vec<Filter> {
    let key = EntityKey::new(shared.ctx.tenant(), store::SESSION_KIND, store::SESSION_ID);
    let Ok(Some(entity)) = shared.ctx.gateway().load(key).await else {
        return Vec::new();
    };
    entity
        .state
        .as_ref()
        .and_then(|s| s.get("filters"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|f| {
                    let field = crate::settings::field_type(f.get("type")?.as_str()?)?;
                    let value = f.get("value")?.as_str()?.to_owned();
                    Some(Filter { field, value })
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn register(shared: &Arc<Shared>, server: &str, session_id: &str) -> Result<(), CallError> {
    let s = &shared.settings;
    let tenant_id = i64::from(s.tenant_id());
    for class in &s.categories {
        let r = Request::new("AddMessageClass", Service::Registration)
            .text("SessionId", session_id)
            .int("TenantId", tenant_id)
            .text("MessageClass", class.wire());
        shared.send(server, &r).await?;
    }
    let mut filters = s.filters.clone();
    for f in runtime_filters(shared).await {
        if !filters.contains(&f) {
            filters.push(f);
        }
    }
    for f in &filters {
        let r = Request::new("AddFilter", Service::Registration)
            .text("SessionId", session_id)
            .int("TenantId", tenant_id)
            .text("FieldType", f.field.wire())
            .text("FieldValue", f.value.clone());
        shared.send(server, &r).await?;
    }
    let r = Request::new("OnLine", Service::Registration)
        .text("SessionId", session_id)
        .int("TenantId", tenant_id);
    shared.send(server, &r).await?;
    snapshot(shared, server, session_id).await
}

/// Asks for a snapshot of agents, calls and services; remembers when, for reconciliation.
pub async fn snapshot(shared: &Shared, server: &str, session_id: &str) -> Result<(), CallError> {
    let request_id = shared.ids.next();
    let sent = now_ms(shared.ctx.gateway().now());
    let mut patch = Map::new();
    patch.insert(
        "snapshot".into(),
        json!({"request_id": request_id, "sent_ms": sent}),
    );
    let _ = store::session_event(
        shared.ctx.gateway(),
        shared.ctx.tenant(),
        "",
        Map::new(),
        patch,
    )
    .await;
    let r = Request::new("Snapshot", Service::Registration)
        .text("SessionId", session_id)
        .int("RequestId", request_id)
        .int("TenantId", i64::from(shared.settings.tenant_id()))
        .entity_types(
            "EntityType",
            vec![EntityType::Agent, EntityType::Call, EntityType::Service],
        );
    shared.send(server, &r).await.map(|_| ())
}

/// The online phase: heartbeat watchdog, route requests, snapshot completions.
async fn online(
    shared: &Arc<Shared>,
    notices: &mut tokio::sync::mpsc::UnboundedReceiver<Notice>,
    routes: &mut JoinSet<()>,
) -> Ended {
    let lost_after = shared.settings.lost_after();
    let worker = tokio::spawn(command_worker(shared.clone()));
    let _abort = AbortOnDrop(worker);
    loop {
        let due = shared.live.last_beat() + lost_after;
        let due = tokio::time::Instant::from_std(due);
        tokio::select! {
            reason = shared.ctx.stopped() => return Ended::Stop(reason),
            _ = tokio::time::sleep_until(due) => {
                if shared.live.last_beat().elapsed() >= lost_after {
                    return Ended::Lost(format!(
                        "no Heartbeat for {} ms ({} × {} s)",
                        lost_after.as_millis(),
                        shared.settings.missed_heartbeats,
                        shared.settings.heartbeat_interval.as_secs()
                    ));
                }
                shared.health(|_| {});
            }
            notice = notices.recv() => match notice {
                Some(Notice::Route(job)) => {
                    let shared = shared.clone();
                    routes.spawn(async move { answer_route(&shared, job).await });
                }
                Some(Notice::SnapshotDone { request_id, entity_type }) => {
                    if entity_type == "CallInfo" {
                        reconcile(shared, request_id).await;
                    }
                }
                None => return Ended::Lost("notice channel closed".into()),
            },
            Some(_) = routes.join_next(), if !routes.is_empty() => {}
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Calls that ended while no session was up: live call entities the completed call snapshot
/// did not mention, and that did not change since it was asked for, end with
/// `ctips.call.ended` (`reconciled: true`). Calls it mentioned that were unknown were already
/// created by their `ctips.snapshot.call` event (`new: true`), preceded by
/// `ctips.call.started` (`reconciled: true`).
async fn reconcile(shared: &Shared, request_id: i64) {
    let gw = shared.ctx.gateway();
    let tenant = shared.ctx.tenant();
    let session = gw
        .load(EntityKey::new(
            tenant,
            store::SESSION_KIND,
            store::SESSION_ID,
        ))
        .await
        .ok()
        .flatten();
    let snap = session
        .as_ref()
        .and_then(|e| e.state.as_ref())
        .and_then(|s| s.get("snapshot"))
        .cloned()
        .unwrap_or(Value::Null);
    if snap.get("request_id").and_then(Value::as_i64) != Some(request_id) {
        return;
    }
    let sent_ms = snap.get("sent_ms").and_then(Value::as_i64).unwrap_or(0);
    let calls = match gw.list(tenant, CALL_KIND, 100_000).await {
        Ok(calls) => calls,
        Err(e) => {
            tracing::warn!(tenant, error = %e, "ctips reconciliation: calls not listed");
            return;
        }
    };
    let mut ended = 0;
    for call in calls {
        let Some(state) = call.state.as_ref() else {
            continue;
        };
        let seen = state.get("snapshot_request").and_then(Value::as_i64) == Some(request_id);
        let updated = state.get("updated_ms").and_then(Value::as_i64).unwrap_or(0);
        if seen || updated >= sent_ms {
            continue;
        }
        match store::reconcile_end(
            gw,
            call.key.clone(),
            request_id,
            sent_ms,
            shared.settings.call_max,
        )
        .await
        {
            Ok(true) => ended += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(tenant, error = %e, "ctips reconciliation: call not ended"),
        }
    }
    if ended > 0 {
        tracing::info!(
            tenant,
            ended,
            "ctips reconciliation ended calls missing from the snapshot"
        );
    }
}

/// Decides one RouteRequest and sends RouteSelect; the fallback goes out at once when the
/// customer is slow, failing or invalid (the core's deadline), or when too little time is left.
pub async fn answer_route(shared: &Shared, job: RouteJob) {
    let gw = shared.ctx.gateway();
    let tenant = shared.ctx.tenant().to_owned();
    let s = &shared.settings;
    let spent = job.received.elapsed().as_millis() as u64;
    let deadline = route::deadline_ms(job.route_timeout_s, s.route_margin_ms, spent);
    let f = &job.fields;
    let info = f.get("CallInfo").and_then(Value::as_object);
    let mut data = Map::new();
    for (name, key) in [("ANI", "from"), ("DNIS", "to")] {
        if let Some(v) = info.and_then(|i| text(i, name)).filter(|v| !v.is_empty()) {
            data.insert(key.into(), json!(v));
        }
    }
    if let Some(service) = text(f, "ServiceId") {
        data.insert("service_id".into(), json!(service));
    }
    if let Some(items) = info
        .and_then(|i| i.get("CallData"))
        .and_then(Value::as_array)
    {
        let mut call_data = Map::new();
        for item in items {
            if let (Some(k), Some(v)) = (
                item.get("key").and_then(Value::as_str),
                item.get("value").and_then(Value::as_str),
            ) {
                call_data.insert(k.to_owned(), json!(v));
            }
        }
        data.insert("call_data".into(), Value::Object(call_data));
    }
    data.insert("route_timeout_s".into(), json!(job.route_timeout_s));
    let mut correlation = Map::new();
    correlation.insert("CallId".into(), json!(job.call_id.to_string()));
    if let Some(seq) = text(f, "CallSequenceId") {
        correlation.insert("CallSequenceId".into(), json!(seq));
    }
    if deadline.is_none() {
        let n = shared.routes_too_late.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(tenant = %tenant, call = %job.entity, route_timeout_s = job.route_timeout_s,
            too_late_total = n, "RouteRequest leaves under 100 ms: the fallback goes out at once");
        shared.health(|h| {
            h.detail = format!("online; {n} route requests answered by fallback for lack of time")
        });
    }
    let decision = gw
        .decide(DecisionRequest {
            tenant: tenant.clone(),
            point: &route::ROUTE_REQUEST,
            call: CallRef {
                vendor_call_id: Some(job.entity.clone()),
                correlation,
            },
            data,
            vendor_fields: f.clone(),
            // Zero: the core answers with the tenant's fallback at once.
            deadline_ms: Some(deadline.unwrap_or(0)),
        })
        .await;
    // Resolve a login name to an agent index when the tenant routes by index.
    let agent_index = match &decision.answer {
        ivrgate_adapter::Answer::Action(e) => match &e.action {
            ivrgate_adapter::Action::RouteToAgent { agent } => gw
                .find(&tenant, LOGIN_ALIAS, agent.trim())
                .await
                .ok()
                .flatten()
                .map(|e| e.key.id),
            _ => None,
        },
        _ => None,
    };
    let select = match route::select(
        s,
        &decision.answer,
        &decision.attached,
        agent_index.as_deref(),
    ) {
        Ok(select) => select,
        Err(why) => {
            tracing::warn!(tenant = %tenant, decision_id = %decision.decision_id, error = %why,
                "route answer cannot become a RouteSelect: RouteToDefault goes out");
            route::default_select()
        }
    };
    let request_id = shared.ids.next();
    shared
        .live
        .remember_route(request_id, &decision.decision_id);
    let outcome = match shared.current() {
        Some(current) => {
            let r = Request::new("RouteSelect", Service::Routing)
                .text("SessionId", current.session_id)
                .int("RequestId", request_id)
                .int("TenantId", i64::from(s.tenant_id()))
                .int("CallId", job.call_id)
                .text("DestinationAddress", select.destination.clone())
                .text("RouteActionType", select.route_type.wire())
                .strings("UserData", select.user_data.clone());
            match shared.send(&current.server, &r).await {
                Ok(_) => "selected".to_owned(),
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "RouteSelect failed");
                    format!("select_failed: {e}")
                }
            }
        }
        None => "unanswered: no session".to_owned(),
    };
    let key = EntityKey::new(&tenant, CALL_KIND, job.entity.clone());
    let route_state = json!({
        "state": if outcome == "selected" { "selected" } else { "unanswered" },
        "decision_id": decision.decision_id,
        "request_id": request_id,
        "route_type": select.route_type.wire(),
        "destination": select.destination,
        "outcome": outcome,
    });
    if let Err(e) = store::route_selected(gw, key, route_state, outcome != "selected").await {
        tracing::warn!(tenant = %tenant, error = %e, "route outcome not stored");
    }
}

/// Stops as the reason asks: on SIGTERM and reconfiguration, pending routes are answered
/// first, then OffLine and CloseConnection; a lost lease leaves the session to its new holder.
async fn stop(shared: &Arc<Shared>, routes: &mut JoinSet<()>, reason: StopReason) -> ConnectorExit {
    if reason == StopReason::LeaseLost {
        routes.abort_all();
        return ConnectorExit::Stopped;
    }
    // Answer every pending RouteRequest (their decisions have deadlines, so this ends).
    let wait = tokio::time::timeout(Duration::from_secs(30), async {
        while routes.join_next().await.is_some() {}
    });
    let _ = wait.await;
    if let Some(current) = shared.current() {
        let tenant_id = i64::from(shared.settings.tenant_id());
        let off = Request::new("OffLine", Service::Registration)
            .text("SessionId", current.session_id.clone())
            .int("TenantId", tenant_id);
        if let Err(e) = shared.send(&current.server, &off).await {
            tracing::warn!(tenant = %shared.ctx.tenant(), error = %e, "OffLine failed");
        }
        let close = Request::new("CloseConnection", Service::Registration)
            .text("SessionId", current.session_id.clone());
        if let Err(e) = shared.send(&current.server, &close).await {
            tracing::warn!(tenant = %shared.ctx.tenant(), error = %e, "CloseConnection failed");
        }
        let mut patch = Map::new();
        patch.insert("online".into(), json!(false));
        let _ = store::session_event(
            shared.ctx.gateway(),
            shared.ctx.tenant(),
            "",
            Map::new(),
            patch,
        )
        .await;
        tracing::info!(tenant = %shared.ctx.tenant(), ?reason, "CTIPS session closed");
    }
    shared.health(|h| {
        h.connected = false;
        h.detail = "stopped".into();
    });
    ConnectorExit::Stopped
}
