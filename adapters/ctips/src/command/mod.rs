//! The CTIPS part of the command API (`/api/{tenant}/ctips/...`, `docs/command-api.yaml`).
//!
//! A command is carried out by whichever instance holds the session, through the store: the
//! instance that got the HTTP request writes a `ctips.request` entity (and bumps the
//! `ctips.queue` entity in the same transition); the holder's connector, woken by
//! `wait_change` on the queue, claims it, sends it to CTIPS and writes the outcome; the first
//! instance, waiting on the request entity, answers. A command not claimed before its timeout
//! is marked `expired` and never sent later. No instance-to-instance RPC.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ivrgate_adapter::{
    AliasChange, Change, Command, CommandReply, Entity, EntityKey, Gateway, Transitioned, Waited,
    Write,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::proto::{
    AgentState, CallError, DestinationType, EntityType, Request, RouteType, Service, TransferType,
};
use crate::settings::{field_type, Settings, CONNECTOR, MAX_USER_DATA};
use crate::store::{
    now_ms, AGENT_KIND, CALL_KIND, LOGIN_ALIAS, SERVICE_KIND, SESSION_ID, SESSION_KIND,
};

pub const REQUEST_KIND: &str = "ctips.request";
pub const QUEUE_KIND: &str = "ctips.queue";
pub const QUEUE_ID: &str = "queue";
/// Alias namespace: a CTIPS RequestId → the command that sent it.
pub const RID_ALIAS: &str = "ctips.rid";

/// How long a command waits to be sent, unless `?timeout_ms=` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `?wait_ms=` for the first correlated event.
pub const MAX_WAIT_EVENT: Duration = Duration::from_secs(60);

fn bad(message: impl Into<String>) -> CommandReply {
    CommandReply::error(400, "invalid_request", message)
}

fn query_ms(query: Option<&str>, name: &str) -> Result<Option<u64>, CommandReply> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            if k == name {
                return v
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| bad(format!("{name} must be a number of milliseconds")));
            }
        }
    }
    Ok(None)
}

/// A JSON body field as text (strings as they are, numbers as their digits).
fn field_text(body: &Value, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn req_text(body: &Value, name: &str) -> Result<String, CommandReply> {
    field_text(body, name)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("{name} is required")))
}

fn int_of(text: &str, name: &str) -> Result<i64, CommandReply> {
    text.trim()
        .parse::<i32>()
        .map(i64::from)
        .map_err(|_| bad(format!("{name} must be a 32-bit integer, not {text:?}")))
}

fn opt_int(body: &Value, name: &str, default: i64) -> Result<i64, CommandReply> {
    match field_text(body, name) {
        Some(t) => int_of(&t, name),
        None => Ok(default),
    }
}

fn opt_bool(body: &Value, name: &str, default: bool) -> Result<bool, CommandReply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("{name} must be true or false"))),
    }
}

fn user_data(body: &Value) -> Result<Vec<String>, CommandReply> {
    let items = match body.get("user_data") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("user_data items are strings"))?,
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect(),
        Some(_) => return Err(bad("user_data is an array of strings or an object")),
    };
    if items.len() > MAX_USER_DATA {
        return Err(bad(format!(
            "user_data has at most {MAX_USER_DATA} positions"
        )));
    }
    Ok(items)
}

fn enum_of<T>(
    body: &Value,
    name: &str,
    default: Option<T>,
    parse: fn(&str) -> Option<T>,
) -> Result<T, CommandReply> {
    match field_text(body, name) {
        Some(t) => parse(&t).ok_or_else(|| bad(format!("{name}: unknown value {t:?}"))),
        None => default.ok_or_else(|| bad(format!("{name} is required"))),
    }
}

/// `{call}`: a CTIPS CallId, or a call entity id `{CallId}:{CallSequenceId}`.
fn call_id(segment: &str) -> Result<i64, CommandReply> {
    int_of(segment.split(':').next().unwrap_or_default(), "call")
}

/// `{agent}`: an AgentIdx, or a login name known from the agent's events.
async fn agent_idx(gw: &dyn Gateway, tenant: &str, agent: &str) -> Result<i64, CommandReply> {
    if let Ok(idx) = agent.trim().parse::<i32>() {
        return Ok(i64::from(idx));
    }
    match gw.find(tenant, LOGIN_ALIAS, agent).await {
        Ok(Some(entity)) => int_of(&entity.key.id, "agent"),
        Ok(None) => Err(CommandReply::error(
            404,
            "unknown_agent",
            format!("no agent with login name {agent:?} seen yet (use the AgentIdx)"),
        )),
        Err(e) => Err(CommandReply::error(503, "store_unavailable", e.to_string())),
    }
}

fn entity_json(e: &Entity) -> Value {
    json!({
        "id": e.key.id,
        "entity_id": e.entity_id,
        "status": e.status,
        "version": e.version,
        "state": e.state,
        "attached": e.attached,
    })
}

/// Serves one command.
pub async fn command(gw: &dyn Gateway, settings: Option<&Settings>, cmd: Command) -> CommandReply {
    let Some(settings) = settings else {
        return CommandReply::error(
            404,
            "not_found",
            "this tenant has no [tenants.ctips] section",
        );
    };
    let path = cmd.path.as_strs();
    let tenant = cmd.tenant.as_str();
    let body = &cmd.body;
    let method = cmd.method.clone();
    let timeout = match query_ms(cmd.query.as_deref(), "timeout_ms") {
        Ok(t) => t
            .map(|ms| Duration::from_millis(ms.clamp(1, 60_000)))
            .unwrap_or(DEFAULT_TIMEOUT),
        Err(r) => return r,
    };
    let wait = match query_ms(cmd.query.as_deref(), "wait_ms") {
        Ok(t) => t
            .map(Duration::from_millis)
            .unwrap_or_default()
            .min(MAX_WAIT_EVENT),
        Err(r) => return r,
    };
    let tenant_id = i64::from(settings.tenant_id());
    let get = method == http::Method::GET;
    let post = method == http::Method::POST;
    if post && path.as_slice() == ["originate"] {
        return originate(gw, &cmd, tenant_id, timeout, wait).await;
    }
    let built: Result<Request, CommandReply> = async {
        match (path.as_slice(), get, post) {
            (["session"], true, _) => Err(session_view(gw, settings, tenant).await),
            (["session", "filters"], true, _) => Err(filters_view(gw, tenant).await),
            (["session", "filters", kind, value], _, _)
                if method == http::Method::PUT || method == http::Method::DELETE =>
            {
                Err(filter(
                    gw,
                    settings,
                    tenant,
                    kind,
                    value,
                    method == http::Method::PUT,
                    timeout,
                )
                .await)
            }
            (["session", "snapshot"], _, true) => {
                let types = match body.get("entity_types").and_then(Value::as_array) {
                    Some(items) => items
                        .iter()
                        .map(|v| v.as_str().and_then(EntityType::from_wire))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("entity_types: AgentInfo, CallInfo, ServiceInfo"))?,
                    None => vec![EntityType::Agent, EntityType::Call, EntityType::Service],
                };
                Ok(Request::new("Snapshot", Service::Registration)
                    .entity_types("EntityType", types))
            }
            ([kind @ ("agents" | "calls" | "services")], true, _) => {
                let kind = entity_kind(kind);
                Err(match gw.list(tenant, kind, 1000).await {
                    Ok(list) => CommandReply::ok(
                        json!({"items": list.iter().map(entity_json).collect::<Vec<_>>()}),
                    ),
                    Err(e) => CommandReply::error(503, "store_unavailable", e.to_string()),
                })
            }
            ([kind @ ("agents" | "calls" | "services"), id], true, _) => {
                let kind = entity_kind(kind);
                let found = if kind == CALL_KIND && !id.contains(':') {
                    gw.find(tenant, crate::store::CALL_ALIAS, id).await
                } else if kind == AGENT_KIND && id.parse::<i64>().is_err() {
                    gw.find(tenant, LOGIN_ALIAS, id).await
                } else {
                    gw.load(EntityKey::new(tenant, kind, *id)).await
                };
                Err(match found {
                    Ok(Some(e)) => CommandReply::ok(entity_json(&e)),
                    Ok(None) => CommandReply::error(404, "not_found", format!("no such {kind}")),
                    Err(e) => CommandReply::error(503, "store_unavailable", e.to_string()),
                })
            }
            (["agents", "login"], _, true) => Ok({
                let mut r = Request::new("LoginAgent", Service::AgentCall)
                    .text("AgentLoginName", req_text(body, "login_name")?)
                    .text("StationId", req_text(body, "station_id")?)
                    .text(
                        "InitState",
                        enum_of(
                            body,
                            "init_state",
                            Some(AgentState::NotReady),
                            AgentState::from_wire,
                        )?
                        .wire(),
                    );
                if let Some(m) = field_text(body, "multi_line") {
                    r = r.int("MultiLine", int_of(&m, "multi_line")?);
                }
                r
            }),
            (["agents", "panic_logout"], _, true) => {
                let agent = match field_text(body, "agent") {
                    Some(a) => agent_idx(gw, tenant, &a).await?,
                    None => 0,
                };
                let names = match body.get("login_names") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("login_names are strings"))?,
                    Some(_) => return Err(bad("login_names is an array")),
                };
                Ok(Request::new("PanicLogoutAgent", Service::AgentCall)
                    .int("AgentIdx", agent)
                    .strings("AgentLoginNameList", names)
                    .bool("LogoutAllAgents", opt_bool(body, "all", false)?))
            }
            (["agents", agent, rest @ ..], _, true) => {
                let agent = agent_idx(gw, tenant, agent).await?;
                let base = |op: &str| Request::new(op, Service::AgentCall).int("AgentIdx", agent);
                match rest {
                    ["logout"] => {
                        Ok(base("LogoutAgent").int("ReasonCode", opt_int(body, "reason_code", 0)?))
                    }
                    ["state"] => Ok(base("SetAgentState").text(
                        "NewState",
                        enum_of(body, "state", None, AgentState::from_wire)?.wire(),
                    )),
                    ["state", "refresh"] => Ok(base("GetAgentState")),
                    ["disposition"] => Ok(base("SetDisposition")
                        .int("CallId", call_id(&req_text(body, "call")?)?)
                        .int(
                            "DispositionId",
                            int_of(&req_text(body, "disposition_id")?, "disposition_id")?,
                        )
                        .bool(
                            "SummaryDispositionSuccessful",
                            opt_bool(body, "successful", true)?,
                        )
                        .bool(
                            "WrapNotRequired",
                            opt_bool(body, "wrap_not_required", false)?,
                        )
                        .strings("UserData", user_data(body)?)),
                    _ => Err(CommandReply::error(
                        404,
                        "not_found",
                        "unknown agent command",
                    )),
                }
            }
            (["calls"], _, true) => {
                let agent = agent_idx(gw, tenant, &req_text(body, "agent")?).await?;
                Ok(Request::new("MakeCall", Service::AgentCall)
                    .int("AgentIdx", agent)
                    .int("CallId", opt_int(body, "call", -1)?)
                    .int("ServiceId", opt_int(body, "service_id", 0)?)
                    .text(
                        "DestinationType",
                        enum_of(
                            body,
                            "destination_type",
                            Some(DestinationType::External),
                            DestinationType::from_wire,
                        )?
                        .wire(),
                    )
                    .text("DestinationAddress", req_text(body, "destination")?)
                    .bool("WrapState", opt_bool(body, "wrap_state", false)?))
            }
            (["calls", call, "route"], _, true) => {
                Ok(Request::new("RouteSelect", Service::Routing)
                    .int("CallId", call_id(call)?)
                    .text(
                        "DestinationAddress",
                        field_text(body, "destination").unwrap_or_default(),
                    )
                    .text(
                        "RouteActionType",
                        enum_of(body, "type", None, RouteType::from_wire)?.wire(),
                    )
                    .strings("UserData", user_data(body)?))
            }
            (["calls", call, rest @ ..], _, true) => {
                let call = call_id(call)?;
                let agent = agent_idx(gw, tenant, &req_text(body, "agent")?).await?;
                let base = |op: &str| {
                    Request::new(op, Service::AgentCall)
                        .int("AgentIdx", agent)
                        .int("CallId", call)
                };
                match rest {
                    ["accept"] => Ok(base("AcceptCall")
                        .bool("AcceptCall", true)
                        .int("RejectReasonCode", 0)),
                    ["reject"] => Ok(base("AcceptCall")
                        .bool("AcceptCall", false)
                        .int("RejectReasonCode", opt_int(body, "reason_code", 0)?)),
                    ["clear"] => Ok(base("ClearCall")),
                    ["hold"] => Ok(base("HoldCall")),
                    ["retrieve"] => Ok(base("RetrieveCall")),
                    ["conference"] => Ok(base("ConferenceCall").int(
                        "ConsultationCallId",
                        call_id(&req_text(body, "consultation_call")?)?,
                    )),
                    ["consult"] => Ok(base("ConsultationCall")
                        .text(
                            "DestinationType",
                            enum_of(
                                body,
                                "destination_type",
                                Some(DestinationType::External),
                                DestinationType::from_wire,
                            )?
                            .wire(),
                        )
                        .text("DestinationAddress", req_text(body, "destination")?)
                        .int("ServiceId", opt_int(body, "service_id", 0)?)
                        .strings("UserData", user_data(body)?)),
                    ["transfer"] => Ok(base("TransferCall")
                        .text(
                            "TransferType",
                            enum_of(
                                body,
                                "transfer_type",
                                Some(TransferType::Blind),
                                TransferType::from_wire,
                            )?
                            .wire(),
                        )
                        .text(
                            "DestinationType",
                            enum_of(
                                body,
                                "destination_type",
                                Some(DestinationType::External),
                                DestinationType::from_wire,
                            )?
                            .wire(),
                        )
                        .text(
                            "DestinationAddress",
                            field_text(body, "destination").unwrap_or_default(),
                        )
                        .int(
                            "ConsultationCallId",
                            match field_text(body, "consultation_call") {
                                Some(c) => call_id(&c)?,
                                None => 0,
                            },
                        )
                        .strings("UserData", user_data(body)?)
                        .int("ServiceId", opt_int(body, "service_id", 0)?)),
                    ["dtmf"] => {
                        Ok(base("SendDTMFDigits").text("DtmfDigits", req_text(body, "digits")?))
                    }
                    ["data"] => Ok(base("SetCallData").strings("UserData", user_data(body)?)),
                    ["data", "refresh"] => Ok(base("GetCallData")),
                    _ => Err(CommandReply::error(
                        404,
                        "not_found",
                        "unknown call command",
                    )),
                }
            }
            _ => Err(CommandReply::error(
                404,
                "not_found",
                "unknown CTIPS command",
            )),
        }
    }
    .await;
    match built {
        Ok(request) => submit(gw, tenant, tenant_id, request, timeout, wait).await,
        Err(reply) => reply,
    }
}

fn entity_kind(kind: &str) -> &'static str {
    match kind {
        "agents" => AGENT_KIND,
        "services" => SERVICE_KIND,
        _ => CALL_KIND,
    }
}

async fn session_state(gw: &dyn Gateway, tenant: &str) -> Map<String, Value> {
    gw.load(EntityKey::new(tenant, SESSION_KIND, SESSION_ID))
        .await
        .ok()
        .flatten()
        .and_then(|e| e.state)
        .and_then(|s| match s {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

async fn session_view(gw: &dyn Gateway, settings: &Settings, tenant: &str) -> CommandReply {
    let state = session_state(gw, tenant).await;
    let runtime = state.get("filters").cloned().unwrap_or(json!([]));
    // What the session registers (session.rs, `register`): the configured filters, then the
    // runtime ones the command API stored that are not configured already.
    let mut filters: Vec<Value> = settings
        .filters
        .iter()
        .map(|f| json!({"type": f.field.wire(), "value": f.value}))
        .collect();
    for f in runtime.as_array().into_iter().flatten() {
        if !filters.contains(f) {
            filters.push(f.clone());
        }
    }
    let lease = gw
        .lease(tenant, crate::NAME, CONNECTOR)
        .await
        .ok()
        .flatten();
    let now = now_ms(gw.now());
    let held = lease.as_ref().is_some_and(|l| l.until_ms > now);
    let last_heartbeat_ms = lease
        .as_ref()
        .filter(|l| l.held_here)
        .and_then(|l| crate::live::get(tenant, l.epoch))
        .map(|live| live.last_heartbeat_ms())
        .filter(|ms| *ms > 0);
    CommandReply::ok(json!({
        "online": held && state.get("online") == Some(&json!(true)),
        "server": state.get("server"),
        "session_id": state.get("session_id"),
        "epoch": lease.as_ref().map(|l| l.epoch),
        "holder": lease.as_ref().filter(|_| held).map(|l| l.holder.clone()),
        "held_here": lease.as_ref().is_some_and(|l| l.held_here && held),
        "lease_until_ms": lease.as_ref().map(|l| l.until_ms),
        "last_heartbeat_ms": last_heartbeat_ms,
        "filters": filters,
        "runtime_filters": runtime,
        "snapshot": state.get("snapshot"),
    }))
}

async fn filters_view(gw: &dyn Gateway, tenant: &str) -> CommandReply {
    let state = session_state(gw, tenant).await;
    CommandReply::ok(json!({"filters": state.get("filters").cloned().unwrap_or(json!([]))}))
}

/// Stores a runtime filter (re-applied after every reconnect) and applies it now when a
/// session is up.
async fn filter(
    gw: &dyn Gateway,
    settings: &Settings,
    tenant: &str,
    kind: &str,
    value: &str,
    add: bool,
    timeout: Duration,
) -> CommandReply {
    let Some(field) = field_type(kind) else {
        return bad("filter type: agent, service, switch or tenant");
    };
    if value.is_empty() {
        return bad("a filter value must not be empty");
    }
    let entry = json!({"type": field.wire(), "value": value});
    let key = EntityKey::new(tenant, SESSION_KIND, SESSION_ID);
    let mut f = |read: &[Option<Entity>]| {
        let mut state = read
            .first()
            .and_then(Option::as_ref)
            .and_then(|e| e.state.clone())
            .and_then(|s| match s {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default();
        let mut list = state
            .get("filters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        list.retain(|f| f != &entry);
        if add {
            list.push(entry.clone());
        }
        state.insert("filters".into(), Value::Array(list));
        vec![Change::Write(Write::state(Value::Object(state)))]
    };
    if let Err(e) = gw.transition(vec![key], &mut f).await {
        return CommandReply::error(503, "store_unavailable", e.to_string());
    }
    let request = Request::new(
        if add { "AddFilter" } else { "DeleteFilter" },
        Service::Registration,
    )
    .text("FieldType", field.wire())
    .text("FieldValue", value);
    let reply = submit(
        gw,
        tenant,
        i64::from(settings.tenant_id()),
        request,
        timeout,
        Duration::ZERO,
    )
    .await;
    if reply.status == 503 {
        // Stored; applied when the session is (re)opened.
        return CommandReply::ok(json!({"stored": true, "applied": false, "filter": entry}));
    }
    reply
}

fn command_id(now: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(now.to_be_bytes());
    h.update(std::process::id().to_be_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let d = h.finalize();
    format!(
        "cmd_{}",
        d[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn status_of(e: &Entity) -> String {
    e.state
        .as_ref()
        .and_then(|s| s.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// Queues a request for the session holder and waits for CTIPS's answer.
async fn submit(
    gw: &dyn Gateway,
    tenant: &str,
    tenant_id: i64,
    request: Request,
    timeout: Duration,
    wait: Duration,
) -> CommandReply {
    // Is a session up at all?
    let state = session_state(gw, tenant).await;
    let lease = gw
        .lease(tenant, crate::NAME, CONNECTOR)
        .await
        .ok()
        .flatten();
    let now = now_ms(gw.now());
    let reason = match &lease {
        None => Some("no instance holds the CTIPS session (is [server] advertise_url set?)"),
        Some(l) if l.until_ms <= now => {
            Some("the CTIPS session's holder stopped renewing its lease")
        }
        Some(_) if state.get("online") != Some(&json!(true)) => {
            Some("the CTIPS session is down (connecting or reconnecting)")
        }
        Some(_) => None,
    };
    if let Some(reason) = reason {
        return CommandReply::error(503, "session_unavailable", reason);
    }
    let id = command_id(now);
    let key = EntityKey::new(tenant, REQUEST_KIND, id.clone());
    let queue = EntityKey::new(tenant, QUEUE_KIND, QUEUE_ID);
    let deadline = now + timeout.as_millis() as i64;
    let payload = serde_json::to_value(&request).unwrap_or(Value::Null);
    let mut f = |_: &[Option<Entity>]| {
        vec![
            Change::Write(Write::state(json!({
                "status": "queued",
                "op": request.op,
                "request": payload,
                "tenant_id": tenant_id,
                "created_ms": now,
                "deadline_ms": deadline,
            }))),
            Change::Write(Write::state(json!({"last": id}))),
        ]
    };
    let version = match gw.transition(vec![key.clone(), queue], &mut f).await {
        Ok(Transitioned::Done(entities)) => {
            entities.first().and_then(Option::as_ref).map(|e| e.version)
        }
        Ok(Transitioned::AliasTaken { .. }) => None,
        Err(e) => return CommandReply::error(503, "store_unavailable", e.to_string()),
    };
    let started = std::time::Instant::now();
    let mut seen = version;
    let outcome = loop {
        let left = timeout.saturating_sub(started.elapsed());
        let waited = if left.is_zero() {
            Waited::TimedOut
        } else {
            gw.wait_change(key.clone(), seen, left).await
        };
        match waited {
            Waited::Changed(Some(e)) => {
                seen = Some(e.version);
                if matches!(status_of(&e).as_str(), "queued" | "sending") {
                    continue;
                }
                break e;
            }
            Waited::Changed(None) => {
                return CommandReply::error(500, "lost", "the command vanished from the store")
            }
            Waited::ShuttingDown => {
                return CommandReply::error(503, "shutting_down", "ivrgate is stopping")
            }
            Waited::TimedOut => {
                // Not sent in time: make sure it never is.
                let mut expired = false;
                let mut f = |read: &[Option<Entity>]| {
                    expired = false;
                    match read.first().and_then(Option::as_ref) {
                        Some(e) if status_of(e) == "queued" => {
                            expired = true;
                            let mut state = e.state.clone().unwrap_or(Value::Null);
                            state["status"] = json!("expired");
                            vec![Change::Write(Write {
                                state: None,
                                ..Write::state(state)
                            })]
                        }
                        _ => vec![Change::Keep],
                    }
                };
                let _ = gw.transition(vec![key.clone()], &mut f).await;
                if expired {
                    return CommandReply::error(
                        504,
                        "timeout",
                        format!(
                            "not sent to CTIPS within {} ms; it will not be sent",
                            timeout.as_millis()
                        ),
                    );
                }
                // Being sent right now: its answer comes within the request timeout.
                match gw
                    .wait_change(key.clone(), seen, Duration::from_secs(30))
                    .await
                {
                    Waited::Changed(Some(e))
                        if !matches!(status_of(&e).as_str(), "queued" | "sending") =>
                    {
                        break e
                    }
                    _ => {
                        return CommandReply::error(504, "timeout", "CTIPS did not answer in time")
                    }
                }
            }
        }
    };
    let mut result = outcome.state.clone().unwrap_or(Value::Null);
    let status = status_of(&outcome);
    // Optionally wait for the first event correlated by RequestId.
    if status == "accepted" && !wait.is_zero() && result.get("event").is_none() {
        let started = std::time::Instant::now();
        let mut seen = Some(outcome.version);
        while result.get("event").is_none() {
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match gw.wait_change(key.clone(), seen, left).await {
                Waited::Changed(Some(e)) => {
                    seen = Some(e.version);
                    result = e.state.clone().unwrap_or(Value::Null);
                }
                _ => break,
            }
        }
    }
    // The request entity has served its purpose.
    let mut end = |read: &[Option<Entity>]| match read.first().and_then(Option::as_ref) {
        Some(e) if e.state.is_some() => vec![Change::Write(Write {
            state: None,
            aliases: result
                .get("request_id")
                .and_then(Value::as_i64)
                .map(|rid| AliasChange::Release {
                    namespace: RID_ALIAS.into(),
                    value: rid.to_string(),
                })
                .into_iter()
                .collect(),
            ..Write::default()
        })],
        _ => vec![Change::Keep],
    };
    let _ = gw.transition(vec![key], &mut end).await;
    let mut body = json!({
        "command_id": id,
        "op": result.get("op"),
        "request_id": result.get("request_id"),
    });
    match status.as_str() {
        "accepted" => {
            body["result"] = result.get("result").cloned().unwrap_or(Value::Null);
            if !wait.is_zero() {
                body["event"] = result.get("event").cloned().unwrap_or(Value::Null);
            }
            CommandReply::ok(body)
        }
        "faulted" => {
            let code = result
                .get("fault_code")
                .and_then(Value::as_str)
                .unwrap_or("GeneralError");
            let message = result.get("message").and_then(Value::as_str).unwrap_or("");
            let status = match code {
                "InvalidSessionId" => 503,
                "InvalidParameter" | "MissingArg" | "InvalidCallId" | "InvalidDestination"
                | "InvalidRouteType" | "InvalidTenantId" | "InvalidRequest" | "UnknownRequest" => {
                    422
                }
                _ => 502,
            };
            CommandReply {
                status,
                body: json!({"error": {"code": code, "message": message}, "command_id": id, "request_id": result.get("request_id")}),
            }
        }
        "outcome_unknown" => CommandReply::error(
            502,
            "outcome_unknown",
            "the session holder stopped while sending it; CTIPS may or may not have carried it out",
        ),
        "no_session" => CommandReply::error(
            503,
            "session_unavailable",
            "the CTIPS session went down before it was sent",
        ),
        other => CommandReply::error(
            502,
            "ctips_error",
            format!(
                "{other}: {}",
                result.get("message").and_then(Value::as_str).unwrap_or("")
            ),
        ),
    }
}

/// Sends the queued commands (run by the session holder's connector while online).
pub async fn work_queue(shared: &crate::session::Shared) {
    let gw = shared.ctx.gateway();
    let tenant = shared.ctx.tenant();
    let requests = match gw.list(tenant, REQUEST_KIND, 1000).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(tenant, error = %e, "ctips commands not listed");
            return;
        }
    };
    for entity in requests {
        if status_of(&entity) != "queued" {
            continue;
        }
        let state = entity.state.clone().unwrap_or(Value::Null);
        let deadline = state
            .get("deadline_ms")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let request: Option<Request> = state
            .get("request")
            .and_then(|r| serde_json::from_value(r.clone()).ok());
        let rid = match &request {
            Some(r) if crate::proto::takes_request_id(&r.op) => shared.ids.next(),
            _ => 0,
        };
        let now = now_ms(gw.now());
        // Claim it (queued → sending, its RequestId reserved so the events it causes find
        // it), or expire it when it is too late.
        let mut claimed = false;
        let mut f = |read: &[Option<Entity>]| {
            claimed = false;
            match read.first().and_then(Option::as_ref) {
                Some(e) if status_of(e) == "queued" => {
                    let mut s = e.state.clone().unwrap_or(Value::Null);
                    if now > deadline {
                        s["status"] = json!("expired");
                        vec![Change::Write(Write {
                            state: None,
                            ..Write::state(s)
                        })]
                    } else {
                        claimed = true;
                        s["status"] = json!("sending");
                        let mut aliases = Vec::new();
                        if rid != 0 {
                            s["request_id"] = json!(rid);
                            aliases.push(AliasChange::Claim {
                                namespace: RID_ALIAS.into(),
                                value: rid.to_string(),
                                until: Some(gw.now() + Duration::from_secs(600)),
                            });
                        }
                        vec![Change::Write(Write {
                            aliases,
                            ..Write::state(s)
                        })]
                    }
                }
                _ => vec![Change::Keep],
            }
        };
        if gw
            .transition(vec![entity.key.clone()], &mut f)
            .await
            .is_err()
            || !claimed
        {
            continue;
        }
        let outcome = match request {
            Some(request) => crate::session::send_command(shared, request, rid).await,
            None => Err(CallError::Protocol("unreadable stored request".into())),
        };
        let mut f = |read: &[Option<Entity>]| match read.first().and_then(Option::as_ref) {
            Some(e) if e.state.is_some() => {
                let mut s = e.state.clone().unwrap_or(Value::Null);
                match &outcome {
                    Ok(code) => {
                        s["status"] = json!("accepted");
                        s["result"] = json!(code);
                    }
                    Err(CallError::Fault { code, message }) => {
                        s["status"] = json!("faulted");
                        s["fault_code"] = json!(code);
                        s["message"] = json!(message);
                    }
                    Err(CallError::Unreachable(why)) if why == "no session" => {
                        s["status"] = json!("no_session");
                    }
                    Err(other) => {
                        s["status"] = json!("failed");
                        s["message"] = json!(other.to_string());
                    }
                }
                vec![Change::Write(Write::state(s))]
            }
            _ => vec![Change::Keep],
        };
        if let Err(e) = gw.transition(vec![entity.key.clone()], &mut f).await {
            tracing::warn!(tenant, error = %e, "ctips command outcome not stored");
        }
    }
}

/// Commands a previous holder claimed but never finished: their outcome is unknown.
pub async fn orphans(gw: &dyn Gateway, tenant: &str) {
    let Ok(requests) = gw.list(tenant, REQUEST_KIND, 1000).await else {
        return;
    };
    for entity in requests.into_iter().filter(|e| status_of(e) == "sending") {
        let mut f = |read: &[Option<Entity>]| match read.first().and_then(Option::as_ref) {
            Some(e) if status_of(e) == "sending" => {
                let mut s = e.state.clone().unwrap_or(Value::Null);
                s["status"] = json!("outcome_unknown");
                vec![Change::Write(Write::state(s))]
            }
            _ => vec![Change::Keep],
        };
        let _ = gw.transition(vec![entity.key], &mut f).await;
    }
}

/// The command that sent RequestId `request_id`, if one did (its alias is held while the
/// command is in flight and for a while after).
pub async fn command_for(gw: &dyn Gateway, tenant: &str, request_id: &str) -> Option<EntityKey> {
    match gw.find(tenant, RID_ALIAS, request_id).await {
        Ok(Some(entity)) if entity.key.kind == REQUEST_KIND => Some(entity.key),
        _ => None,
    }
}

/// Notes the first event correlated with a command (by its RequestId) on the command.
pub async fn note_event(gw: &dyn Gateway, command: EntityKey, webhook: &str, key: &EntityKey) {
    let event = json!({"type": webhook, "entity": {"kind": key.kind, "id": key.id}});
    let mut f = |read: &[Option<Entity>]| match read.first().and_then(Option::as_ref) {
        Some(e) if e.state.as_ref().is_some_and(|s| s.get("event").is_none()) => {
            let mut s = e.state.clone().unwrap_or(Value::Null);
            s["event"] = event.clone();
            vec![Change::Write(Write::state(s))]
        }
        _ => vec![Change::Keep],
    };
    let _ = gw.transition(vec![command], &mut f).await;
}

/// The neutral `originate` (`docs/command-api.yaml`): MakeCall for the agent `from` (id or
/// login name) to the external number `to`. CTIPS's MakeCall carries no announcement and no
/// call data, so those are refused by name. With `Idempotency-Key`, a retry gets the first
/// answer and never a second call.
async fn originate(
    gw: &dyn Gateway,
    cmd: &Command,
    tenant_id: i64,
    timeout: Duration,
    wait: Duration,
) -> CommandReply {
    let tenant = cmd.tenant.as_str();
    let Value::Object(body) = &cmd.body else {
        return CommandReply::error(422, "invalid_body", "the body is a JSON object");
    };
    for (key, value) in body {
        match key.as_str() {
            "from" | "to" | "service_id" => {}
            "announcement" | "attached" if value.is_null() => {}
            "announcement" => {
                return CommandReply::error(
                    422,
                    "unsupported_field",
                    "announcement: CTIPS MakeCall has no announcement to play",
                )
            }
            "attached" => {
                return CommandReply::error(
                    422,
                    "unsupported_field",
                    "attached: CTIPS MakeCall carries no call data (set it with POST calls/{call}/data once the call exists)",
                )
            }
            other => {
                return CommandReply::error(
                    422,
                    "unsupported_field",
                    format!("{other}: not an originate field (from, to, announcement, attached, service_id)"),
                )
            }
        }
    }
    let built = async {
        let agent = agent_idx(gw, tenant, &req_text(&cmd.body, "from")?).await?;
        let to = req_text(&cmd.body, "to")?;
        Ok::<Request, CommandReply>(
            Request::new("MakeCall", Service::AgentCall)
                .int("AgentIdx", agent)
                .int("CallId", -1)
                .int("ServiceId", opt_int(&cmd.body, "service_id", 0)?)
                .text("DestinationType", DestinationType::External.wire())
                .text("DestinationAddress", to)
                .bool("WrapState", false),
        )
    }
    .await;
    let request = match built {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let key = match ivrgate_adapter::idempotency::key(cmd) {
        Ok(k) => k,
        Err(reply) => return reply,
    };
    let Some(key) = key else {
        return submit(gw, tenant, tenant_id, request, timeout, wait).await;
    };
    let fingerprint = format!(
        "{:x}",
        Sha256::digest(format!("originate\0{}", cmd.body).as_bytes())
    );
    let entity = EntityKey::new(tenant, IDEMPOTENCY_KIND, key);
    let stale_ms = (timeout.as_millis() as i64) * 2 + 30_000;
    match ivrgate_adapter::idempotency::claim(gw, &entity, &fingerprint, stale_ms).await {
        Ok(ivrgate_adapter::idempotency::Claim::Go) => {}
        Ok(ivrgate_adapter::idempotency::Claim::Answer(reply)) | Err(reply) => return reply,
    }
    let reply = submit(gw, tenant, tenant_id, request, timeout, wait).await;
    let code = reply.body["error"]["code"].as_str().unwrap_or("");
    let outcome = match (reply.status, code) {
        // Expired in the queue or never queued: it will not be sent.
        (_, "session_unavailable" | "store_unavailable" | "shutting_down") => {
            ivrgate_adapter::idempotency::Outcome::NotSent
        }
        (504, m)
            if reply.body["error"]["message"]
                .as_str()
                .is_some_and(|t| t.contains("it will not be sent"))
                && m == "timeout" =>
        {
            ivrgate_adapter::idempotency::Outcome::NotSent
        }
        (504, _) => ivrgate_adapter::idempotency::Outcome::Unknown,
        _ => ivrgate_adapter::idempotency::Outcome::Answered,
    };
    if let Err(e) =
        ivrgate_adapter::idempotency::settle(gw, &entity, &fingerprint, &reply, outcome).await
    {
        tracing::warn!(tenant, error = %e, "ctips originate: idempotency outcome not stored");
    }
    reply
}

/// Entity kind of stored idempotency keys.
pub const IDEMPOTENCY_KIND: &str = "ctips.idempotency";
