//! Reading the customer's JSON and query parameters into CTIPS's types; every refusal is a
//! 400 that names the parameter.

use ivrgate_adapter::{CommandReply, Entity, Gateway};
use serde_json::{json, Value};

use crate::settings::MAX_USER_DATA;
use crate::store::LOGIN_ALIAS;

pub(super) fn bad(message: impl Into<String>) -> CommandReply {
    CommandReply::error(400, "invalid_request", message)
}

pub(super) fn query_ms(query: Option<&str>, name: &str) -> Result<Option<u64>, CommandReply> {
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
pub(super) fn field_text(body: &Value, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn req_text(body: &Value, name: &str) -> Result<String, CommandReply> {
    field_text(body, name)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("{name} is required")))
}

pub(super) fn int_of(text: &str, name: &str) -> Result<i64, CommandReply> {
    text.trim()
        .parse::<i32>()
        .map(i64::from)
        .map_err(|_| bad(format!("{name} must be a 32-bit integer, not {text:?}")))
}

pub(super) fn opt_int(body: &Value, name: &str, default: i64) -> Result<i64, CommandReply> {
    match field_text(body, name) {
        Some(t) => int_of(&t, name),
        None => Ok(default),
    }
}

pub(super) fn opt_bool(body: &Value, name: &str, default: bool) -> Result<bool, CommandReply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("{name} must be true or false"))),
    }
}

pub(super) fn user_data(body: &Value) -> Result<Vec<String>, CommandReply> {
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

pub(super) fn enum_of<T>(
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
pub(super) fn call_id(segment: &str) -> Result<i64, CommandReply> {
    int_of(segment.split(':').next().unwrap_or_default(), "call")
}

/// `{agent}`: an AgentIdx, or a login name known from the agent's events.
pub(super) async fn agent_idx(
    gw: &dyn Gateway,
    tenant: &str,
    agent: &str,
) -> Result<i64, CommandReply> {
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

pub(super) fn entity_json(e: &Entity) -> Value {
    json!({
        "id": e.key.id,
        "entity_id": e.entity_id,
        "status": e.status,
        "version": e.version,
        "state": e.state,
        "attached": e.attached,
    })
}
