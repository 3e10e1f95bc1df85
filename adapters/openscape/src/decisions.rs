//! The decision webhooks of the IVR API: where the IVR waits for the customer
//! ([`DECISION_POINTS`]), and the functions that ask: QueryRoutingInfo (its answer read into
//! the routing return codes) and, when the tenant configures them, the figures of
//! QueryQueueStatistics, QueryAgentStatus and QuerySystemStatus (otherwise the figures the
//! customer pushed through the command API, or what ivrgate counts itself).

use ivrgate_adapter::action::{Action, Envelope};
use ivrgate_adapter::{Answer, AnswerSource, CallRef, DecisionPoint, DecisionRequest, EntityKey};
use serde_json::{json, Map, Value};

use crate::model::{self, Call, Channel, Effect};
use crate::params::Ty;
use crate::{
    codes, command, live_calls, load, load_channel, precheck_call, queue_figures, store_code,
    wait_cap, Req, VENDOR,
};

/// Where the IVR waits for the customer. The IVR's own limit is the RpcTimeout it gave
/// Initialize (10 000 ms or more advised by the seed); 9 000 ms leaves the answer a margin.
pub static DECISION_POINTS: [DecisionPoint; 4] = [
    DecisionPoint {
        vendor: VENDOR,
        kind: "routing_info",
        platform_max_ms: 9_000,
        default_fallback: platform_default,
        validate: validate_routing,
        native_attach: no_attach,
    },
    DecisionPoint {
        vendor: VENDOR,
        kind: "queue_statistics",
        platform_max_ms: 9_000,
        default_fallback: platform_default,
        validate: validate_queue_statistics,
        native_attach: no_attach,
    },
    DecisionPoint {
        vendor: VENDOR,
        kind: "agent_status",
        platform_max_ms: 9_000,
        default_fallback: platform_default,
        validate: validate_agent_status,
        native_attach: no_attach,
    },
    DecisionPoint {
        vendor: VENDOR,
        kind: "system_status",
        platform_max_ms: 9_000,
        default_fallback: platform_default,
        validate: validate_system_status,
        native_attach: no_attach,
    },
];

const ROUTING: usize = 0;
const QUEUE_STATS: usize = 1;
const AGENT_STATUS: usize = 2;
const SYSTEM_STATUS: usize = 3;

fn no_attach(_: &Value) -> Map<String, Value> {
    Map::new()
}

/// `default`: QueryRoutingInfo answers -915 (no routing information); the figures come
/// from what the customer pushed.
fn platform_default() -> Answer {
    Answer::Action(Envelope::new(Action::Default {}))
}

fn validate_routing(answer: &Answer) -> Result<(), String> {
    routing_effect(answer, (0, 0)).map(drop)
}

fn validate_queue_statistics(answer: &Answer) -> Result<(), String> {
    native_figures(answer, &QUEUE_FIELDS).map(drop)
}

fn validate_agent_status(answer: &Answer) -> Result<(), String> {
    match answer {
        Answer::Native(Value::Object(o))
            if o.get("ReturnCode")
                .and_then(Value::as_i64)
                .is_some_and(|c| c == -904 || c == -909) =>
        {
            Ok(())
        }
        _ => native_figures(answer, &["AgentStatus"]).map(drop),
    }
}

fn validate_system_status(answer: &Answer) -> Result<(), String> {
    match answer {
        Answer::Action(e) if matches!(e.action, Action::Default {}) => Ok(()),
        Answer::Native(Value::Object(o)) => {
            if !matches!(o.get("OverallStatus").and_then(Value::as_i64), Some(0 | 1)) {
                return Err("OverallStatus must be 0 or 1".into());
            }
            match o.get("IndividualServerStates") {
                Some(Value::String(s)) if s.chars().count() <= 250 => Ok(()),
                _ => {
                    Err("IndividualServerStates must be a string of at most 250 characters".into())
                }
            }
        }
        _ => Err("system_status takes default or a native object".into()),
    }
}

const QUEUE_FIELDS: [&str; 5] = [
    "CallsInQueue",
    "EstimatedWait",
    "AverageWait",
    "OldestCallInQueue",
    "ServiceLevel",
];

/// A native figures answer: an object whose named fields are non-negative integers.
fn native_figures(answer: &Answer, fields: &[&str]) -> Result<Option<Map<String, Value>>, String> {
    match answer {
        Answer::Action(e) if matches!(e.action, Action::Default {}) => Ok(None),
        Answer::Native(Value::Object(o)) => {
            for f in fields {
                if o.get(*f).and_then(Value::as_i64).is_none_or(|v| v < 0) {
                    return Err(format!("{f} must be a non-negative integer"));
                }
            }
            Ok(Some(o.clone()))
        }
        _ => Err("takes default or a native object".into()),
    }
}

/// QueryRoutingInfo's return code and outputs for an answer: enqueue 0, hangup 1, dial 2,
/// default -915; natively `{"ReturnCode": 0|1|2|-915|-916, "Destination": ..., ...}`.
fn routing_effect(answer: &Answer, figures: (i64, i64)) -> Result<Effect, String> {
    let text_ok = |s: &str, max: usize| s.chars().count() <= max;
    match answer {
        Answer::Action(envelope) => match &envelope.action {
            Action::Enqueue {
                queue,
                priority,
                agent,
                agent_wait_s,
                description,
            } => {
                if queue.is_empty() || !text_ok(queue, 32) {
                    return Err("enqueue: queue must be 1 to 32 characters".into());
                }
                let priority = i64::from(priority.unwrap_or(1));
                if !(1..=100).contains(&priority) {
                    return Err("enqueue: priority must be 1 to 100".into());
                }
                let agent = agent.clone().unwrap_or_default();
                let description = description.clone().unwrap_or_default();
                if !text_ok(&agent, 8) || !text_ok(&description, 100) {
                    return Err("enqueue: agent is at most 8 and description 100 characters".into());
                }
                Ok(Effect::code(0)
                    .out("Destination", queue.clone())
                    .out("AgentID", agent)
                    .out("AgentWaitTime", i64::from(agent_wait_s.unwrap_or(0)))
                    .out("Description", description)
                    .out("InitialPriority", priority)
                    .out("EstimatedWait", figures.0)
                    .out("CallsInQueue", figures.1))
            }
            Action::Hangup { .. } => Ok(Effect::code(1)),
            Action::Dial { targets, .. } => match targets.first() {
                Some(t) if !t.is_empty() && text_ok(t, 80) => {
                    Ok(Effect::code(2).out("Destination", t.clone()))
                }
                _ => Err("dial: one target of 1 to 80 characters".into()),
            },
            Action::Default {} => Ok(Effect::code(codes::NO_ROUTING)),
            other => Err(format!(
                "QueryRoutingInfo can enqueue, hangup, dial or default, not {}",
                other.kind().as_str()
            )),
        },
        Answer::Native(Value::Object(o)) => {
            let code = o
                .get("ReturnCode")
                .and_then(Value::as_i64)
                .ok_or("native answer needs an integer ReturnCode")?;
            if ![0, 1, 2, -915, -916].contains(&code) {
                return Err(format!("ReturnCode {code} is not 0, 1, 2, -915 or -916"));
            }
            let mut eff = Effect::code(code as i32);
            for (name, ty) in [
                ("Destination", Ty::Str(80)),
                ("AgentID", Ty::Str(8)),
                ("AgentWaitTime", Ty::Int(0, i64::MAX)),
                ("Description", Ty::Str(100)),
                ("InitialPriority", Ty::Int(1, 100)),
                ("EstimatedWait", Ty::Int(0, i64::MAX)),
                ("CallsInQueue", Ty::Int(0, i64::MAX)),
            ] {
                let Some(v) = o.get(name) else { continue };
                let ok = match ty {
                    Ty::Str(max) => v.as_str().is_some_and(|s| text_ok(s, max)),
                    Ty::Int(min, max) => v.as_i64().is_some_and(|i| (min..=max).contains(&i)),
                };
                if !ok {
                    return Err(format!("{name} out of range"));
                }
                eff.outputs.insert(name.to_owned(), v.clone());
            }
            if matches!(code, 0 | 2)
                && eff
                    .outputs
                    .get("Destination")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                return Err("ReturnCode 0 and 2 need a Destination".into());
            }
            Ok(eff)
        }
        Answer::Native(_) => Err("a native answer is an object".into()),
    }
}

fn decision_outcome(source: &AnswerSource) -> &'static str {
    match source {
        AnswerSource::Fallback(_) => "fallback",
        AnswerSource::Customer | AnswerSource::FallbackUrl => "ok",
    }
}

pub(crate) async fn query_routing_info(req: &Req<'_>) -> (Effect, &'static str) {
    let call = match precheck_call(req).await {
        Ok(c) => c,
        Err(eff) => return (eff, "ok"),
    };
    let anidnis = req.args.text("ANIDNIS");
    if !anidnis.is_empty() && !anidnis.contains(';') {
        return (Effect::code(codes::BAD_PARAMETER), "ok");
    }
    // Contact data ANI/DNIS take precedence over the parameter (seed §4.18).
    let (mut from, mut to) = (call.ani.clone(), call.dnis.clone());
    if let Some((a, d)) = anidnis.split_once(';') {
        from = a.to_owned();
        to = d.to_owned();
    }
    for (k, slot) in [("ANI", &mut from), ("DNIS", &mut to)] {
        if let Some(v) = call.contact_data.get(k).and_then(Value::as_str) {
            *slot = v.to_owned();
        }
    }
    let mut correlation = Map::new();
    correlation.insert("CallID".into(), json!(call.call_id));
    let mut data = Map::new();
    data.insert("from".into(), json!(from));
    data.insert("to".into(), json!(to));
    data.insert("channel".into(), json!(req.channel));
    data.insert("monitored".into(), json!(call.monitored));
    data.insert(
        "contact_data".into(),
        Value::Object(call.contact_data.clone()),
    );
    let mut vendor_fields = req.args.to_json();
    vendor_fields.insert("function".into(), json!("QueryRoutingInfo"));
    let decision = req
        .gw
        .decide(DecisionRequest {
            tenant: req.tenant.to_owned(),
            point: &DECISION_POINTS[ROUTING],
            call: CallRef {
                vendor_call_id: Some(call.call_id.clone()),
                correlation,
            },
            data,
            vendor_fields,
            deadline_ms: channel_wait_ms(req).await,
        })
        .await;
    let queue = match &decision.answer {
        Answer::Action(e) => match &e.action {
            Action::Enqueue { queue, .. } => Some(queue.clone()),
            _ => None,
        },
        Answer::Native(_) => None,
    };
    let figures = match queue {
        Some(q) => match queue_figures(req, &q).await {
            Ok(figures) => figures,
            Err(eff) => return (eff, "ok"),
        },
        None => (0, 0),
    };
    let outcome = decision_outcome(&decision.source);
    match routing_effect(&decision.answer, figures) {
        Ok(eff) => (eff, outcome),
        Err(why) => {
            tracing::warn!(tenant = %req.tenant, channel = %req.channel, call_id = %call.call_id, reason = %why, decision_id = %decision.decision_id, "routing answer not usable; -915");
            (Effect::code(codes::NO_ROUTING), "fallback")
        }
    }
}

/// Asks the figures webhook when the tenant configured it; `None`: use the pushed figures.
async fn figures_decision(
    req: &Req<'_>,
    point: usize,
    data: Map<String, Value>,
) -> Option<(Map<String, Value>, &'static str)> {
    let kind = DECISION_POINTS[point].kind;
    if !req.settings.figures_from_webhook(kind) {
        return None;
    }
    let decision = req
        .gw
        .decide(DecisionRequest {
            tenant: req.tenant.to_owned(),
            point: &DECISION_POINTS[point],
            call: CallRef::default(),
            data,
            vendor_fields: req.args.to_json(),
            deadline_ms: channel_wait_ms(req).await,
        })
        .await;
    match decision.answer {
        Answer::Native(Value::Object(o)) => Some((o, decision_outcome(&decision.source))),
        _ => None,
    }
}

/// How long the IVR waits for this answer: its RpcTimeout less the margin, so a slow
/// webhook's fallback still reaches the IVR in time.
async fn channel_wait_ms(req: &Req<'_>) -> Option<u64> {
    let channel = load_channel(req).await.ok().flatten()?;
    Some(wait_cap(channel.rpc_timeout_ms).as_millis() as u64)
}

async fn require_initialized(req: &Req<'_>) -> Result<Channel, Effect> {
    match load_channel(req).await? {
        Some(ch) if ch.initialized => Ok(ch),
        _ => Err(Effect::code(codes::NOT_INITIALIZED)),
    }
}

pub(crate) async fn query_queue_statistics(req: &Req<'_>) -> (Effect, &'static str) {
    if let Err(eff) = require_initialized(req).await {
        return (eff, "ok");
    }
    let queue = req.args.text("QueueName");
    if req.settings.multitenant() {
        let bu = req.args.text("BusinessUnitName");
        if !req.settings.business_units.contains(&bu) {
            return (Effect::code(codes::BAD_BUSINESS_UNIT), "ok");
        }
    }
    if !req.settings.queues.is_empty() && !req.settings.queues.contains(&queue) {
        return (Effect::code(codes::UNKNOWN_QUEUE), "ok");
    }
    let mut data = Map::new();
    data.insert("queue".into(), json!(queue));
    data.insert(
        "business_unit".into(),
        json!(req.args.str("BusinessUnitName")),
    );
    if let Some((o, outcome)) = figures_decision(req, QUEUE_STATS, data).await {
        let mut eff = Effect::code(codes::OK);
        for f in QUEUE_FIELDS {
            eff.outputs
                .insert(f.into(), o.get(f).cloned().unwrap_or(json!(0)));
        }
        return (eff, outcome);
    }
    let key = EntityKey::new(req.tenant, model::QUEUE_KIND, &queue);
    let pushed = match load::<command::QueueFigures>(req.gw, key).await {
        Ok((q, _)) => q,
        Err(eff) if eff.unreadable.is_some() => return (eff, "ok"),
        Err(_) => None,
    };
    let eff = match pushed {
        Some(q) => Effect::code(codes::OK)
            .out("CallsInQueue", q.calls_in_queue)
            .out("EstimatedWait", q.estimated_wait_s)
            .out("AverageWait", q.average_wait_s)
            .out("OldestCallInQueue", q.oldest_call_s)
            .out("ServiceLevel", q.service_level),
        None => {
            let now = model::ms(req.now);
            let queued: Vec<Call> = live_calls(req.gw, req.tenant)
                .await
                .into_iter()
                .filter(|c| {
                    c.status == model::Status::Queued && c.queue.as_deref() == Some(queue.as_str())
                })
                .collect();
            let oldest = queued
                .iter()
                .filter_map(|c| c.enqueued_at_ms)
                .min()
                .map_or(0, |t| (now - t).max(0) / 1000);
            Effect::code(codes::OK)
                .out("CallsInQueue", queued.len() as i64)
                .out("OldestCallInQueue", oldest)
        }
    };
    (eff, "ok")
}

pub(crate) async fn query_agent_status(req: &Req<'_>) -> (Effect, &'static str) {
    if let Err(eff) = require_initialized(req).await {
        return (eff, "ok");
    }
    let agent_id = req.args.text("AgentID");
    let device = req.args.text("Device");
    if agent_id.is_empty() && device.is_empty() {
        return (Effect::code(codes::BAD_PARAMETER), "ok");
    }
    let mut data = Map::new();
    data.insert("agent_id".into(), json!(agent_id));
    data.insert("device".into(), json!(device));
    if let Some((o, outcome)) = figures_decision(req, AGENT_STATUS, data).await {
        if let Some(code) = o
            .get("ReturnCode")
            .and_then(Value::as_i64)
            .filter(|c| *c < 0)
        {
            return (Effect::code(code as i32), outcome);
        }
        let eff = Effect::code(codes::OK)
            .out(
                "AgentID",
                o.get("AgentID").cloned().unwrap_or(json!(agent_id)),
            )
            .out("Device", o.get("Device").cloned().unwrap_or(json!(device)))
            .out(
                "AgentStatus",
                o.get("AgentStatus").cloned().unwrap_or(json!(13)),
            );
        return (eff, outcome);
    }
    let entity = if agent_id.is_empty() {
        match req
            .gw
            .find(req.tenant, model::NS_AGENT_DEVICE, &device)
            .await
        {
            Ok(Some(e)) if e.state.is_some() => e,
            Ok(_) => return (Effect::code(codes::UNKNOWN_DEVICE), "ok"),
            Err(e) => return (Effect::code(store_code(&e)), "ok"),
        }
    } else {
        match req
            .gw
            .load(EntityKey::new(req.tenant, model::AGENT_KIND, &agent_id))
            .await
        {
            Ok(Some(e)) if e.state.is_some() => e,
            Ok(_) => return (Effect::code(codes::UNKNOWN_AGENT), "ok"),
            Err(e) => return (Effect::code(store_code(&e)), "ok"),
        }
    };
    let agent: command::Agent = match model::read(Some(&entity)) {
        Ok(agent) => agent.unwrap_or_default(),
        Err(why) => return (Effect::unreadable(why), "ok"),
    };
    let eff = Effect::code(codes::OK)
        .out("AgentID", entity.key.id.clone())
        .out("Device", agent.device.unwrap_or_default())
        .out("AgentStatus", agent.status);
    (eff, "ok")
}

pub(crate) async fn query_system_status(req: &Req<'_>) -> (Effect, &'static str) {
    if let Err(eff) = require_initialized(req).await {
        return (eff, "ok");
    }
    if let Some((o, outcome)) = figures_decision(req, SYSTEM_STATUS, Map::new()).await {
        let states = o
            .get("IndividualServerStates")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let entries = o
            .get("Entries")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| states.split(';').filter(|s| !s.trim().is_empty()).count() as i64);
        let eff = Effect::code(codes::OK)
            .out(
                "OverallStatus",
                o.get("OverallStatus").cloned().unwrap_or(json!(0)),
            )
            .out("IndividualServerStates", states)
            .out("Entries", entries);
        return (eff, outcome);
    }
    let key = EntityKey::new(req.tenant, model::SYSTEM_KIND, model::SYSTEM_ID);
    let system = match load::<command::System>(req.gw, key).await {
        Ok((s, _)) => s.unwrap_or_default(),
        Err(eff) if eff.unreadable.is_some() => return (eff, "ok"),
        Err(_) => command::System::default(),
    };
    if !system.administration_server_available {
        return (Effect::code(codes::NO_STATUS_INFO), "ok");
    }
    let (states, entries) = system.states();
    let eff = Effect::code(codes::OK)
        .out("OverallStatus", system.overall())
        .out("IndividualServerStates", states)
        .out("Entries", entries);
    (eff, "ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(v: Value) -> Answer {
        Answer::Action(serde_json::from_value(v).expect("action"))
    }

    #[test]
    fn routing_answers_become_return_codes() {
        let e = routing_effect(
            &action(json!({"action": "enqueue", "queue": "Sales", "priority": 12, "agent": "790006", "agent_wait_s": 120})),
            (45, 3),
        )
        .expect("enqueue");
        assert_eq!(e.code, 0);
        assert_eq!(e.outputs["Destination"], "Sales");
        assert_eq!(e.outputs["EstimatedWait"], 45);
        assert_eq!(
            routing_effect(&action(json!({"action": "hangup"})), (0, 0)).map(|e| e.code),
            Ok(1)
        );
        let e = routing_effect(
            &action(json!({"action": "dial", "targets": ["5678"]})),
            (0, 0),
        )
        .expect("dial");
        assert_eq!(
            (e.code, e.outputs["Destination"].clone()),
            (2, json!("5678"))
        );
        assert_eq!(
            routing_effect(&platform_default(), (0, 0)).map(|e| e.code),
            Ok(-915)
        );
        assert!(routing_effect(
            &action(json!({"action": "enqueue", "queue": "Sales", "priority": 101})),
            (0, 0)
        )
        .is_err());
        assert!(routing_effect(&action(json!({"action": "record"})), (0, 0)).is_err());
        assert!(routing_effect(&Answer::Native(json!({"ReturnCode": 0})), (0, 0)).is_err());
        assert!(routing_effect(&Answer::Native(json!({"ReturnCode": 7})), (0, 0)).is_err());
        assert_eq!(
            routing_effect(&Answer::Native(json!({"ReturnCode": -916})), (0, 0)).map(|e| e.code),
            Ok(-916)
        );
        assert!(validate_routing(&action(json!({"action": "dial", "targets": []}))).is_err());
    }

    #[test]
    fn system_figures_validation() {
        assert!(validate_system_status(&Answer::Native(
            json!({"OverallStatus": 1, "IndividualServerStates": "a=1"})
        ))
        .is_ok());
        assert!(validate_system_status(&Answer::Native(
            json!({"OverallStatus": 2, "IndividualServerStates": "a=1"})
        ))
        .is_err());
        assert!(validate_queue_statistics(&Answer::Native(json!({"CallsInQueue": 1}))).is_err());
        assert!(validate_agent_status(&Answer::Native(json!({"ReturnCode": -909}))).is_ok());
    }
}
