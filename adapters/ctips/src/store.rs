//! Committing CTIPS events: each event is one transition of the entity it belongs to (a call,
//! an agent, a service or the session), carrying its webhook, so it is durable before
//! PublishCTIEvent is answered and gets the entity's next sequence number.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ivrgate_adapter::{
    AliasChange, Change, Entity, EntityEvent, EntityKey, Gateway, RecordError, Transitioned, Write,
};
use serde_json::{json, Map, Value};

use crate::event::{text, CtiEvent, Mapped, Target};

pub const CALL_KIND: &str = "ctips";
pub const AGENT_KIND: &str = "ctips.agent";
pub const SERVICE_KIND: &str = "ctips.service";
pub const SESSION_KIND: &str = "ctips.session";
pub const SESSION_ID: &str = "session";
/// Alias namespace: a CTIPS CallId → the call entity that holds it now.
pub const CALL_ALIAS: &str = "ctips.call";
/// Alias namespace: an agent's login name → its agent entity.
pub const LOGIN_ALIAS: &str = "ctips.agent_login";

pub fn now_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What committing a RouteRequest means for the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome {
    /// Not a RouteRequest.
    None,
    /// A new route request: decide it.
    New,
    /// The call already has a route request pending or answered: no second decision.
    Duplicate,
}

/// The outcome of committing one event.
#[derive(Debug, Clone)]
pub struct Committed {
    pub key: EntityKey,
    pub route: RouteOutcome,
}

/// The entity key of a target. A call without a CallSequenceId is found through its CallId
/// alias, else keyed with sequence 0.
pub async fn key_of(
    gw: &dyn Gateway,
    tenant: &str,
    target: &Target,
) -> Result<EntityKey, RecordError> {
    Ok(match target {
        Target::Call {
            call_id,
            seq: Some(seq),
        } => EntityKey::new(tenant, CALL_KIND, format!("{call_id}:{seq}")),
        Target::Call { call_id, seq: None } => match gw.find(tenant, CALL_ALIAS, call_id).await? {
            Some(entity) if entity.key.kind == CALL_KIND => entity.key,
            _ => EntityKey::new(tenant, CALL_KIND, format!("{call_id}:0")),
        },
        Target::Agent(id) => EntityKey::new(tenant, AGENT_KIND, id.clone()),
        Target::Service(id) => EntityKey::new(tenant, SERVICE_KIND, id.clone()),
        Target::System => EntityKey::new(tenant, SESSION_KIND, SESSION_ID),
    })
}

/// The vendor ids of an event. A snapshot item carries its entity's ids inside its
/// `AgentData`, `CallData` or `ServiceData` object (elsewhere `CallData` is a list of call data
/// items), so those are read too: a call first seen in a snapshot is correlated like any other.
fn correlation(fields: &Map<String, Value>) -> Map<String, Value> {
    let item = ["AgentData", "CallData", "ServiceData"]
        .into_iter()
        .find_map(|name| fields.get(name).and_then(Value::as_object));
    let mut out = Map::new();
    for name in [
        "CallId",
        "CallSequenceId",
        "AgentId",
        "ServiceId",
        "RequestId",
        "SwitchId",
    ] {
        let found = [Some(fields), item]
            .into_iter()
            .flatten()
            .find_map(|f| text(f, name).filter(|v| !v.is_empty() && *v != "0"));
        if let Some(v) = found {
            out.insert(name.into(), json!(v));
        }
    }
    out
}

/// Neutral fields every CTIPS webhook carries.
fn neutral(event: &CtiEvent) -> Map<String, Value> {
    let f = &event.fields;
    let mut data = Map::new();
    data.insert("ctips_event".into(), json!(event.type_name));
    let request_id = text(f, "RequestId")
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or(0);
    data.insert("request_id".into(), json!(request_id));
    let info = f.get("CallInfo").and_then(Value::as_object);
    let ani = text(f, "ANI").or_else(|| info.and_then(|i| text(i, "ANI")));
    let dnis = text(f, "DNIS").or_else(|| info.and_then(|i| text(i, "DNIS")));
    if let Some(ani) = ani.filter(|v| !v.is_empty()) {
        data.insert("from".into(), json!(ani));
    }
    if let Some(dnis) = dnis.filter(|v| !v.is_empty()) {
        data.insert("to".into(), json!(dnis));
    }
    data
}

/// Top-level scalar fields of an event, merged into an entity's state.
fn merge_scalars(state: &mut Map<String, Value>, fields: &Map<String, Value>) {
    for (k, v) in fields {
        if matches!(k.as_str(), "EventCategory" | "EventType" | "RequestId") {
            continue;
        }
        if v.is_string() {
            state.insert(k.clone(), v.clone());
        }
    }
}

/// Builds the change for the event's own entity.
struct Plan<'a> {
    event: &'a CtiEvent,
    mapped: &'a Mapped,
    now: SystemTime,
    call_max: Duration,
    extra: &'a Map<String, Value>,
}

impl Plan<'_> {
    fn change(&self, entity: Option<&Entity>, route: &mut RouteOutcome) -> Change {
        *route = RouteOutcome::None;
        let fields = &self.event.fields;
        let mut data = neutral(self.event);
        for (k, v) in self.extra {
            data.insert(k.clone(), v.clone());
        }
        let existed = entity.is_some();
        let ended = entity.is_some_and(|e| e.state.is_none());
        let mut state = entity
            .and_then(|e| e.state.clone())
            .and_then(|s| match s {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default();
        let now_ms = now_ms(self.now);
        let name = self
            .event
            .type_name
            .strip_prefix("CTI")
            .unwrap_or(&self.event.type_name);
        let mut aliases = Vec::new();
        let mut expires_at = None;
        let mut events = Vec::new();
        match &self.mapped.target {
            Target::Call { call_id, .. } => {
                expires_at = Some(self.now + self.call_max);
                let route_state = state
                    .get("route")
                    .and_then(|r| r.get("state"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let decision_id = state
                    .get("route")
                    .and_then(|r| r.get("decision_id"))
                    .cloned();
                match name {
                    "RouteRequest" => {
                        if matches!(
                            route_state.as_deref(),
                            Some("pending" | "selected" | "used")
                        ) {
                            *route = RouteOutcome::Duplicate;
                            return Change::Keep;
                        }
                        *route = RouteOutcome::New;
                        state.insert(
                            "route".into(),
                            json!({
                                "state": "pending",
                                "received_ms": now_ms,
                                "route_timeout_s": text(fields, "RouteTimeout").and_then(|t| t.parse::<i64>().ok()),
                            }),
                        );
                    }
                    "RouteUsed" | "RouteRejected" | "RouteRequestFailed" => {
                        if let Some(id) = decision_id {
                            data.insert("decision_id".into(), id);
                        }
                        let request_id = text(fields, "RequestId").unwrap_or("0");
                        if name == "RouteUsed" {
                            data.insert(
                                "late".into(),
                                json!(request_id == "0" || request_id.is_empty()),
                            );
                        }
                        let outcome = match name {
                            "RouteUsed" => "used",
                            "RouteRejected" => "rejected",
                            _ => "failed",
                        };
                        if let Some(Value::Object(r)) = state.get_mut("route") {
                            r.insert("state".into(), json!(outcome));
                        } else {
                            state.insert("route".into(), json!({"state": outcome}));
                        }
                    }
                    "SnapShotUpdate" => {
                        let new = !existed || ended;
                        data.insert("new".into(), json!(new));
                        if new {
                            // A call that started while no session watched: its start goes
                            // out as reconciled, as an end missed meanwhile does.
                            let mut started = data.clone();
                            started.remove("new");
                            started.insert("reconciled".into(), json!(true));
                            if let Some(id) =
                                text(fields, "RequestId").and_then(|r| r.parse::<i64>().ok())
                            {
                                started.insert("snapshot_request_id".into(), json!(id));
                            }
                            events.push(EntityEvent {
                                event_type: "ctips.call.started".into(),
                                occurred_at: None,
                                correlation: correlation(fields),
                                data: started,
                                vendor_fields: fields.clone(),
                            });
                        }
                        state.insert(
                            "snapshot_request".into(),
                            json!(text(fields, "RequestId").and_then(|r| r.parse::<i64>().ok())),
                        );
                        if let Some(Value::Object(call)) = fields.get("CallData") {
                            merge_scalars(&mut state, call);
                        }
                    }
                    _ => {}
                }
                merge_scalars(&mut state, fields);
                if self.mapped.ends || ended {
                    aliases.push(AliasChange::Release {
                        namespace: CALL_ALIAS.into(),
                        value: call_id.clone(),
                    });
                } else {
                    aliases.push(AliasChange::Claim {
                        namespace: CALL_ALIAS.into(),
                        value: call_id.clone(),
                        until: Some(self.now + self.call_max),
                    });
                }
            }
            Target::Agent(_) => {
                let source = match fields.get("AgentData") {
                    Some(Value::Object(agent)) => agent,
                    _ => fields,
                };
                merge_scalars(&mut state, source);
                if let Some(login) = text(source, "AgentLoginName").filter(|l| !l.is_empty()) {
                    aliases.push(AliasChange::Claim {
                        namespace: LOGIN_ALIAS.into(),
                        value: login.to_owned(),
                        until: None,
                    });
                }
            }
            Target::Service(_) => {
                let source = match fields.get("ServiceData") {
                    Some(Value::Object(service)) => service,
                    _ => fields,
                };
                merge_scalars(&mut state, source);
            }
            Target::System => {}
        }
        state.insert("last_event".into(), json!(self.mapped.webhook));
        state.insert("updated_ms".into(), json!(now_ms));
        events.push(EntityEvent {
            event_type: self.mapped.webhook.clone(),
            occurred_at: None,
            correlation: correlation(fields),
            data,
            vendor_fields: fields.clone(),
        });
        let keep_state = !(self.mapped.ends || ended);
        Change::Write(Write {
            state: keep_state.then_some(Value::Object(state)),
            attached: None,
            expires_at,
            events,
            timers: Vec::new(),
            aliases,
        })
    }
}

/// Commits one event (with `extra` neutral data) on its entity. Resolves after the commit.
pub async fn commit(
    gw: &dyn Gateway,
    tenant: &str,
    event: &CtiEvent,
    mapped: &Mapped,
    call_max: Duration,
    extra: &Map<String, Value>,
) -> Result<Committed, RecordError> {
    let key = key_of(gw, tenant, &mapped.target).await?;
    let plan = Plan {
        event,
        mapped,
        now: gw.now(),
        call_max,
        extra,
    };
    let mut route = RouteOutcome::None;
    let first = {
        let mut f = |read: &[Option<Entity>]| {
            vec![plan.change(read.first().and_then(Option::as_ref), &mut route)]
        };
        gw.transition(vec![key.clone()], &mut f).await?
    };
    match first {
        Transitioned::Done(_) => Ok(Committed { key, route }),
        Transitioned::AliasTaken {
            namespace,
            value,
            owner,
        } => {
            // The alias (a reused CallId, a login name on another agent id) moves to this
            // entity: release it from its old owner in the same transition.
            let mut f = |read: &[Option<Entity>]| {
                let own = plan.change(read.first().and_then(Option::as_ref), &mut route);
                let release = match read.get(1).and_then(Option::as_ref) {
                    Some(old) => Change::Write(Write {
                        state: old.state.clone(),
                        attached: None,
                        expires_at: old.expires_at,
                        events: Vec::new(),
                        timers: Vec::new(),
                        aliases: vec![AliasChange::Release {
                            namespace: namespace.clone(),
                            value: value.clone(),
                        }],
                    }),
                    None => Change::Keep,
                };
                vec![own, release]
            };
            match gw.transition(vec![key.clone(), owner], &mut f).await? {
                Transitioned::Done(_) => Ok(Committed { key, route }),
                Transitioned::AliasTaken { .. } => Err(RecordError::Unavailable(
                    "an alias kept moving between entities".into(),
                )),
            }
        }
    }
}

/// Records one of ivrgate's own session events (`ctips.session.online|lost`, reconciliation)
/// on the session entity, with `state` fields merged into the session's state.
pub async fn session_event(
    gw: &dyn Gateway,
    tenant: &str,
    webhook: &str,
    data: Map<String, Value>,
    state_patch: Map<String, Value>,
) -> Result<(), RecordError> {
    let key = EntityKey::new(tenant, SESSION_KIND, SESSION_ID);
    let now = now_ms(gw.now());
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
        for (k, v) in &state_patch {
            state.insert(k.clone(), v.clone());
        }
        state.insert("updated_ms".into(), json!(now));
        let mut w = Write::state(Value::Object(state));
        if !webhook.is_empty() {
            w = w.event(EntityEvent {
                event_type: webhook.to_owned(),
                occurred_at: None,
                correlation: Map::new(),
                data: data.clone(),
                vendor_fields: Map::new(),
            });
        }
        vec![Change::Write(w)]
    };
    gw.transition(vec![key], &mut f).await.map(|_| ())
}

/// Ends a call the completed snapshot `request_id` did not mention, unless it changed since
/// the snapshot was asked for (`sent_ms`). `Ok(true)` when it was ended here.
pub async fn reconcile_end(
    gw: &dyn Gateway,
    key: EntityKey,
    request_id: i64,
    sent_ms: i64,
    call_max: Duration,
) -> Result<bool, RecordError> {
    let now = gw.now();
    let mut ended = false;
    let mut f = |read: &[Option<Entity>]| {
        ended = false;
        let Some(entity) = read.first().and_then(Option::as_ref) else {
            return vec![Change::Keep];
        };
        let Some(state) = entity.state.as_ref() else {
            return vec![Change::Keep];
        };
        let seen = state.get("snapshot_request").and_then(Value::as_i64) == Some(request_id);
        let updated = state.get("updated_ms").and_then(Value::as_i64).unwrap_or(0);
        if seen || updated >= sent_ms {
            return vec![Change::Keep];
        }
        ended = true;
        let call_id = state
            .get("CallId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut correlation = Map::new();
        for name in ["CallId", "CallSequenceId"] {
            if let Some(v) = state.get(name) {
                correlation.insert(name.into(), v.clone());
            }
        }
        let mut data = Map::new();
        data.insert("reconciled".into(), json!(true));
        data.insert("snapshot_request_id".into(), json!(request_id));
        vec![Change::Write(Write {
            state: None,
            attached: None,
            expires_at: Some(now + call_max),
            events: vec![EntityEvent {
                event_type: "ctips.call.ended".into(),
                occurred_at: None,
                correlation,
                data,
                vendor_fields: Map::new(),
            }],
            timers: Vec::new(),
            aliases: vec![AliasChange::Release {
                namespace: CALL_ALIAS.into(),
                value: call_id,
            }],
        })]
    };
    gw.transition(vec![key], &mut f).await?;
    Ok(ended)
}

/// Stores what became of a route request (decision id, RouteSelect sent or not) on its call,
/// so RouteUsed/RouteRejected/RouteRequestFailed link to the decision. `unanswered` also
/// emits `ctips.route.unanswered`.
pub async fn route_selected(
    gw: &dyn Gateway,
    key: EntityKey,
    route: Value,
    unanswered: bool,
) -> Result<(), RecordError> {
    let now = now_ms(gw.now());
    let mut f = |read: &[Option<Entity>]| {
        let Some(entity) = read.first().and_then(Option::as_ref) else {
            return vec![Change::Keep];
        };
        let Some(Value::Object(mut state)) = entity.state.clone() else {
            return vec![Change::Keep];
        };
        // A RouteUsed/Rejected that raced ahead keeps its state; the ids are added.
        let mut merged = route.as_object().cloned().unwrap_or_default();
        if let Some(Value::Object(old)) = state.get("route") {
            if let Some(s) = old.get("state").and_then(Value::as_str) {
                if s != "pending" {
                    merged.insert("state".into(), json!(s));
                }
            }
        }
        state.insert("route".into(), Value::Object(merged.clone()));
        state.insert("updated_ms".into(), json!(now));
        let mut w = Write {
            state: Some(Value::Object(state)),
            attached: None,
            expires_at: entity.expires_at,
            ..Write::default()
        };
        if unanswered {
            let mut data = Map::new();
            for k in ["decision_id", "outcome"] {
                if let Some(v) = merged.get(k) {
                    data.insert(k.into(), v.clone());
                }
            }
            w.events.push(EntityEvent {
                event_type: "ctips.route.unanswered".into(),
                data,
                ..EntityEvent::default()
            });
        }
        vec![Change::Write(w)]
    };
    gw.transition(vec![key], &mut f).await.map(|_| ())
}
