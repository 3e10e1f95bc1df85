//! The OpenScape part of the command API (`/api/{tenant}/openscape/...`, see
//! `docs/command-api.yaml`): the customer's system registers monitored calls on devices,
//! assigns queued calls, reports transit-number arrivals and pushes the figures the IVR
//! queries. Every write is one core transition; errors are `{"error": {"code", "message"}}`.

use ivrgate_adapter::{
    transition_one, AliasChange, Change, Command, CommandReply, Entity, EntityKey, Gateway,
    Transitioned, Write,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::model::{self, Call, Order};
use crate::{plain_ctx, settings_of, transition_typed};

/// Figures of one queue, as pushed (`PUT queues/{queue}/statistics`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueFigures {
    pub calls_in_queue: i64,
    pub estimated_wait_s: i64,
    pub average_wait_s: i64,
    pub oldest_call_s: i64,
    pub service_level: i64,
    /// When the figures were pushed (ms since the epoch, the gateway's clock).
    pub updated_at_ms: i64,
}

/// One agent (user), as pushed (`PUT agents/{id}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Agent {
    pub device: Option<String>,
    /// QueryAgentStatus's AgentStatus, 1-16.
    pub status: i64,
}

/// The system status, as pushed (`PUT system`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct System {
    /// Server name to state (QuerySystemStatus status values 0-10), in the order given.
    pub servers: Map<String, Value>,
    /// 0 or 1; derived when absent: 1 when every server is 1 (the T-Server 8).
    pub overall_status: Option<i64>,
    /// false: QuerySystemStatus answers -901 (no status information).
    pub administration_server_available: bool,
}

impl Default for System {
    /// Nothing pushed: ivrgate stands in for the routing server and the T-Server.
    fn default() -> Self {
        let mut servers = Map::new();
        servers.insert("RoutingServer".into(), json!(1));
        servers.insert("TServer".into(), json!(8));
        System {
            servers,
            overall_status: None,
            administration_server_available: true,
        }
    }
}

fn is_tserver(name: &str) -> bool {
    let n: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    n.eq_ignore_ascii_case("tserver")
}

impl System {
    pub fn tserver_up(&self) -> bool {
        self.servers
            .iter()
            .filter(|(k, _)| is_tserver(k))
            .all(|(_, v)| v.as_i64() == Some(8))
    }

    pub fn overall(&self) -> i64 {
        self.overall_status.unwrap_or_else(|| {
            let up = self
                .servers
                .iter()
                .all(|(k, v)| v.as_i64() == Some(if is_tserver(k) { 8 } else { 1 }));
            i64::from(up)
        })
    }

    /// `name=state; name=state` within 250 characters, and how many entries it holds.
    pub fn states(&self) -> (String, i64) {
        let mut out = String::new();
        let mut n = 0;
        for (k, v) in &self.servers {
            let entry = format!("{k}={}", v.as_i64().unwrap_or(0));
            let sep = if out.is_empty() { "" } else { "; " };
            if out.chars().count() + sep.len() + entry.chars().count() > 250 {
                break;
            }
            out.push_str(sep);
            out.push_str(&entry);
            n += 1;
        }
        (out, n)
    }
}

const AGENT_STATES: [&str; 16] = [
    "dialing",
    "line_busy",
    "ringing",
    "talking",
    "line_queued",
    "holding",
    "consulting",
    "out_of_service",
    "available",
    "unavailable",
    "work",
    "logged_off",
    "unknown",
    "pending",
    "processing",
    "post_processing",
];

fn bad(message: impl Into<String>) -> CommandReply {
    CommandReply::error(400, "invalid_request", message)
}

fn not_found(what: &str) -> CommandReply {
    CommandReply::error(404, "not_found", format!("no such {what}"))
}

fn store_error(e: &ivrgate_adapter::RecordError) -> CommandReply {
    CommandReply::error(503, "unavailable", e.to_string())
}

/// An entity whose stored state cannot be read: logged, left as it is, answered 500 (never
/// taken for an absent or ended one).
fn unreadable(tenant: &str, why: &model::Unreadable) -> CommandReply {
    why.log(tenant, "command");
    CommandReply::error(
        500,
        "internal_error",
        format!("the stored state of {} {} cannot be read", why.kind, why.id),
    )
}

fn text_field(body: &Value, name: &str, max: usize) -> Result<String, CommandReply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.chars().count() <= max && !s.chars().any(char::is_control) => {
            Ok(s.clone())
        }
        Some(Value::Number(n)) if n.is_i64() => Ok(n.to_string()),
        Some(_) => Err(bad(format!(
            "{name} must be a string of at most {max} characters"
        ))),
    }
}

fn int_field(body: &Value, name: &str, min: i64, max: i64) -> Result<Option<i64>, CommandReply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64().filter(|i| (min..=max).contains(i)) {
            Some(i) => Ok(Some(i)),
            None => Err(bad(format!(
                "{name} must be an integer from {min} to {max}"
            ))),
        },
    }
}

/// A JSON object whose keys are all in `allowed`.
fn known_keys(body: &Value, allowed: &[&str]) -> Result<(), CommandReply> {
    let Value::Object(o) = body else {
        return Err(bad("the body is a JSON object"));
    };
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "unknown field {k:?}; expected {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+*#@".contains(c))
}

/// A telephone number as people write it: at most 80 characters, no control characters.
fn valid_number(number: &str) -> bool {
    !number.trim().is_empty()
        && number.chars().count() <= 80
        && !number.chars().any(char::is_control)
}

pub async fn handle(gw: &dyn Gateway, command: Command) -> CommandReply {
    let segments = command.path.as_strs();
    let method = command.method.as_str();
    // A transit number comes as configured (`+1 (555) 555-0180`), so it has its own rule.
    let transit = segments.first() == Some(&"transit");
    let valid = |(i, s): (usize, &&str)| {
        if transit && i == 1 {
            valid_number(s)
        } else {
            valid_id(s)
        }
    };
    if !segments.iter().enumerate().skip(1).all(valid) {
        return bad(
            "path segments are letters, digits and ._-+*#@ (at most 80); a transit number \
             is written as configured or as its digits",
        );
    }
    let reply = match (method, segments.as_slice()) {
        ("GET", ["calls"]) => list_calls(gw, &command.tenant).await,
        ("GET", ["calls", id]) => get_call(gw, &command.tenant, id).await,
        ("POST", ["calls", id, action]) => match Order::parse(action) {
            Some(order) => order_call(gw, &command.tenant, id, order, &command.body).await,
            None => not_found("call action (assign, timeout, transfer, disconnect, error)"),
        },
        ("POST", ["devices", device, "calls"]) => {
            register(gw, &command.tenant, device, &command.body).await
        }
        ("POST", ["transit", number, "arrived"]) => {
            transit_arrived(gw, &command.tenant, number).await
        }
        ("PUT", ["queues", queue, "statistics"]) => {
            put_queue(gw, &command.tenant, queue, &command.body).await
        }
        ("PUT", ["agents", id]) => put_agent(gw, &command.tenant, id, &command.body).await,
        ("DELETE", ["agents", id]) => delete_agent(gw, &command.tenant, id).await,
        ("PUT", ["system"]) => put_system(gw, &command.tenant, &command.body).await,
        ("GET", ["channels", id]) => get_channel(gw, &command.tenant, id).await,
        (
            _,
            ["calls"]
            | ["calls", _]
            | ["calls", _, _]
            | ["devices", _, "calls"]
            | ["transit", _, "arrived"]
            | ["queues", _, "statistics"]
            | ["agents", _]
            | ["system"]
            | ["channels", _],
        ) => CommandReply::error(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on this resource"),
        ),
        _ => not_found("resource"),
    };
    tracing::info!(tenant = %command.tenant, method, path = %command.path, status = reply.status, "openscape command");
    reply
}

async fn list_calls(gw: &dyn Gateway, tenant: &str) -> CommandReply {
    match gw.list(tenant, model::CALL_KIND, 1000).await {
        Ok(entities) => {
            let mut calls = Vec::with_capacity(entities.len());
            for e in &entities {
                match model::read::<Call>(Some(e)) {
                    Ok(Some(c)) => calls.push(with_ids(c.view(), e)),
                    Ok(None) => {}
                    Err(why) => return unreadable(tenant, &why),
                }
            }
            CommandReply::ok(json!({"calls": calls}))
        }
        Err(e) => store_error(&e),
    }
}

fn with_ids(mut view: Value, e: &Entity) -> Value {
    view["entity_id"] = json!(e.entity_id);
    view["version"] = json!(e.version);
    view
}

async fn get_call(gw: &dyn Gateway, tenant: &str, id: &str) -> CommandReply {
    match gw.load(EntityKey::new(tenant, model::CALL_KIND, id)).await {
        Ok(Some(e)) => match model::read::<Call>(Some(&e)) {
            Ok(Some(c)) => CommandReply::ok(json!({"call": with_ids(c.view(), &e)})),
            Ok(None) => CommandReply::error(410, "ended", "the call has ended"),
            Err(why) => unreadable(tenant, &why),
        },
        Ok(None) => not_found("call"),
        Err(e) => store_error(&e),
    }
}

async fn get_channel(gw: &dyn Gateway, tenant: &str, id: &str) -> CommandReply {
    match gw
        .load(EntityKey::new(tenant, model::CHANNEL_KIND, id))
        .await
    {
        Ok(Some(e)) => CommandReply::ok(json!({"channel": e.state, "version": e.version})),
        Ok(None) => not_found("channel"),
        Err(e) => store_error(&e),
    }
}

async fn order_call(
    gw: &dyn Gateway,
    tenant: &str,
    id: &str,
    order: Order,
    body: &Value,
) -> CommandReply {
    let target = match text_field(body, "extension", 80) {
        Ok(t) if !t.is_empty() => t,
        Ok(_) => match text_field(body, "target", 80) {
            Ok(t) => t,
            Err(r) => return r,
        },
        Err(r) => return r,
    };
    let settings = settings_of(gw, tenant);
    let ctx = plain_ctx(gw, &settings, "command", Map::new());
    let call_max = settings.call_max();
    let mut outcome: Result<Value, (u16, &'static str, String)> =
        Err((404, "not_found", "no such call".into()));
    let key = EntityKey::new(tenant, model::CALL_KIND, id);
    let result = transition_typed(gw, key, |call: Option<Call>| {
        let Some(call) = call else {
            outcome = Err((404, "not_found", "no such live call".into()));
            return Change::Keep;
        };
        match model::order(&call, order, &target, &ctx) {
            Ok(eff) => {
                if let model::CallWrite::Put(c) = &eff.call {
                    outcome = Ok(c.view());
                }
                eff.changes(ctx.now, call_max).pop().unwrap_or_default()
            }
            Err(refusal) => {
                outcome = Err(refusal);
                Change::Keep
            }
        }
    })
    .await;
    let result = match result {
        Ok(result) => result,
        Err(why) => return unreadable(tenant, &why),
    };
    match (result, outcome) {
        (Err(e), _) => store_error(&e),
        (Ok(_), Ok(view)) => CommandReply::ok(json!({"call": view})),
        (Ok(_), Err((status, code, message))) => CommandReply::error(status, code, message),
    }
}

async fn register(gw: &dyn Gateway, tenant: &str, device: &str, body: &Value) -> CommandReply {
    if device.chars().count() > 16 {
        return bad("a device has at most 16 characters");
    }
    let fields = (|| -> Result<Call, CommandReply> {
        let fmnq = match body.get("fmnq") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => match v.as_i64() {
                Some(0) => false,
                Some(1) => true,
                _ => return Err(bad("fmnq must be true, false, 0 or 1")),
            },
        };
        Ok(Call {
            call_id: text_field(body, "call_id", 18)?,
            monitored: true,
            device: Some(device.to_owned()),
            ani: text_field(body, "ani", 80)?,
            dnis: text_field(body, "dnis", 80)?,
            uuid: text_field(body, "uuid", 32)?,
            visits: int_field(body, "visits", 0, i64::from(i32::MAX))?.unwrap_or(1),
            fmnq,
            internal_ani: text_field(body, "internal_ani", 80)?,
            internal_dnis: text_field(body, "internal_dnis", 80)?,
            ..Call::default()
        })
    })();
    let mut call = match fields {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !call.call_id.is_empty() && !call.call_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return bad("call_id is letters and digits");
    }
    let now = gw.now();
    call.arrived_at_ms = model::ms(now);
    let generated = call.call_id.is_empty();
    let settings = settings_of(gw, tenant);
    let call_max = settings.call_max();
    let ctx = plain_ctx(gw, &settings, "command", Map::new());
    for attempt in 0..ivrgate_adapter::state::REPLAN_ATTEMPTS {
        if generated {
            let seed = format!("{tenant}/{device}/{now:?}/{attempt}");
            call.call_id = format!(
                "{:010}{:06}",
                model::ms(now).rem_euclid(10_000_000_000),
                crate::fnv(seed.as_bytes()) % 1_000_000
            );
        }
        let keys = vec![
            EntityKey::new(tenant, model::DEVICE_KIND, device),
            EntityKey::new(tenant, model::CALL_KIND, &call.call_id),
        ];
        let mut fresh = false;
        let mut f = |read: &[Option<Entity>]| {
            fresh = read.get(1).is_some_and(Option::is_none);
            if !fresh {
                return Vec::new();
            }
            let ev = model::event("call.arrived", &call, &ctx, json!({"monitored": true}));
            vec![
                Change::Write(Write::state(json!({"call_id": call.call_id}))),
                Change::Write(Write {
                    state: Some(model::to_value(&call)),
                    expires_at: now.checked_add(call_max),
                    events: vec![ev],
                    ..Write::default()
                }),
            ]
        };
        match gw.transition(keys, &mut f).await {
            Ok(Transitioned::Done(_)) if fresh => {
                return CommandReply {
                    status: 201,
                    body: json!({"call": call.view()}),
                }
            }
            Ok(Transitioned::Done(_)) if generated => continue,
            Ok(Transitioned::Done(_)) => {
                return CommandReply::error(409, "conflict", "a call with this call_id exists")
            }
            Ok(Transitioned::AliasTaken { .. }) => continue,
            Err(e) => return store_error(&e),
        }
    }
    CommandReply::error(503, "unavailable", "no free call id")
}

async fn transit_arrived(gw: &dyn Gateway, tenant: &str, number: &str) -> CommandReply {
    let owner = match gw
        .find(tenant, model::NS_TRANSIT, &model::transit_key(number))
        .await
    {
        Ok(Some(e)) => e.key,
        Ok(None) => return not_found("allocated transit number"),
        Err(e) => return store_error(&e),
    };
    let settings = settings_of(gw, tenant);
    let ctx = plain_ctx(gw, &settings, "command", Map::new());
    let call_max = settings.call_max();
    let mut view = None;
    let result = transition_typed(gw, owner, |call: Option<Call>| {
        view = None;
        let Some(call) = call else {
            return Change::Keep;
        };
        match model::transit_arrived(&call, number, "arrived", &ctx) {
            Some(eff) => {
                view = Some(match &eff.call {
                    model::CallWrite::Put(c) | model::CallWrite::End(c) => c.view(),
                    model::CallWrite::Keep => call.view(),
                });
                eff.changes(ctx.now, call_max).pop().unwrap_or_default()
            }
            None => Change::Keep,
        }
    })
    .await;
    let result = match result {
        Ok(result) => result,
        Err(why) => return unreadable(tenant, &why),
    };
    match (result, view) {
        (Err(e), _) => store_error(&e),
        (Ok(_), Some(v)) => CommandReply::ok(json!({"call": v})),
        (Ok(_), None) => CommandReply::error(
            409,
            "not_allocated",
            "the number is not allocated to a live call (released, expired or in quarantine)",
        ),
    }
}

async fn put_queue(gw: &dyn Gateway, tenant: &str, queue: &str, body: &Value) -> CommandReply {
    if queue.chars().count() > 32 {
        return bad("a queue name has at most 32 characters");
    }
    if let Err(r) = known_keys(
        body,
        &[
            "calls_in_queue",
            "estimated_wait_s",
            "average_wait_s",
            "oldest_call_s",
            "service_level",
        ],
    ) {
        return r;
    }
    let mut figures: QueueFigures = match serde_json::from_value(body.clone()) {
        Ok(f) => f,
        Err(e) => return bad(format!("queue statistics: {e}")),
    };
    let ranges = [
        figures.calls_in_queue,
        figures.estimated_wait_s,
        figures.average_wait_s,
        figures.oldest_call_s,
    ];
    if ranges.iter().any(|v| *v < 0) || !(0..=100).contains(&figures.service_level) {
        return bad("figures are non-negative; service_level is 0 to 100");
    }
    figures.updated_at_ms = model::ms(gw.now());
    put_state(
        gw,
        EntityKey::new(tenant, model::QUEUE_KIND, queue),
        model::to_value(&figures),
    )
    .await
}

async fn put_state(gw: &dyn Gateway, key: EntityKey, state: Value) -> CommandReply {
    let result = transition_one(gw, key, |_| Change::Write(Write::state(state.clone()))).await;
    match result {
        Ok(_) => CommandReply::ok(state),
        Err(e) => store_error(&e),
    }
}

async fn put_agent(gw: &dyn Gateway, tenant: &str, id: &str, body: &Value) -> CommandReply {
    if id.chars().count() > 8 {
        return bad("an agent id has at most 8 characters");
    }
    let device = match text_field(body, "device", 16) {
        Ok(d) => (!d.is_empty()).then_some(d),
        Err(r) => return r,
    };
    let status = match body.get("status") {
        Some(Value::String(s)) => match AGENT_STATES.iter().position(|n| n.eq_ignore_ascii_case(s))
        {
            Some(i) => i as i64 + 1,
            None => {
                return bad(format!(
                    "status is 1-16 or one of {}",
                    AGENT_STATES.join(", ")
                ))
            }
        },
        Some(v) => match v.as_i64().filter(|i| (1..=16).contains(i)) {
            Some(i) => i,
            None => {
                return bad(format!(
                    "status is 1-16 or one of {}",
                    AGENT_STATES.join(", ")
                ))
            }
        },
        None => return bad("status is required"),
    };
    let agent = Agent {
        device: device.clone(),
        status,
    };
    let state = model::to_value(&agent);
    let key = EntityKey::new(tenant, model::AGENT_KIND, id);
    let result = transition_typed(gw, key, |old: Option<Agent>| {
        let mut write = Write::state(state.clone());
        if let Some(old_device) = old.and_then(|a| a.device) {
            if Some(&old_device) != device.as_ref() {
                write.aliases.push(AliasChange::Release {
                    namespace: model::NS_AGENT_DEVICE.into(),
                    value: old_device,
                });
            }
        }
        if let Some(d) = &device {
            write.aliases.push(AliasChange::Claim {
                namespace: model::NS_AGENT_DEVICE.into(),
                value: d.clone(),
                until: None,
            });
        }
        Change::Write(write)
    })
    .await;
    let result = match result {
        Ok(result) => result,
        Err(why) => return unreadable(tenant, &why),
    };
    match result {
        Ok(Transitioned::Done(_)) => {
            CommandReply::ok(json!({"agent_id": id, "device": device, "status": status}))
        }
        Ok(Transitioned::AliasTaken { owner, .. }) => CommandReply::error(
            409,
            "conflict",
            format!("agent {} is logged on to this device", owner.id),
        ),
        Err(e) => store_error(&e),
    }
}

async fn delete_agent(gw: &dyn Gateway, tenant: &str, id: &str) -> CommandReply {
    let mut found = false;
    let key = EntityKey::new(tenant, model::AGENT_KIND, id);
    let result = transition_typed(gw, key, |old: Option<Agent>| {
        found = old.is_some();
        let Some(old) = old else { return Change::Keep };
        Change::Write(Write {
            state: None,
            aliases: old
                .device
                .map(|d| AliasChange::Release {
                    namespace: model::NS_AGENT_DEVICE.into(),
                    value: d,
                })
                .into_iter()
                .collect(),
            ..Write::default()
        })
    })
    .await;
    match result {
        Err(why) => unreadable(tenant, &why),
        Ok(Ok(_)) if found => CommandReply::ok(json!({"agent_id": id, "deleted": true})),
        Ok(Ok(_)) => not_found("agent"),
        Ok(Err(e)) => store_error(&e),
    }
}

async fn put_system(gw: &dyn Gateway, tenant: &str, body: &Value) -> CommandReply {
    if let Err(r) = known_keys(
        body,
        &[
            "servers",
            "overall_status",
            "administration_server_available",
        ],
    ) {
        return r;
    }
    let mut body = body.clone();
    if let Value::Object(o) = &mut body {
        o.entry("administration_server_available")
            .or_insert(json!(true));
    }
    let system: System = match serde_json::from_value(body) {
        Ok(s) => s,
        Err(e) => return bad(format!("system status: {e}")),
    };
    if system
        .servers
        .values()
        .any(|v| !v.as_i64().is_some_and(|i| (0..=10).contains(&i)))
    {
        return bad("server states are integers 0 to 10");
    }
    if system.overall_status.is_some_and(|o| !(0..=1).contains(&o)) {
        return bad("overall_status is 0 or 1");
    }
    put_state(
        gw,
        EntityKey::new(tenant, model::SYSTEM_KIND, model::SYSTEM_ID),
        model::to_value(&system),
    )
    .await
}
