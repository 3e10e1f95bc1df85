//! What the command API answers from the store without CTIPS (the session, the stored
//! filters) and the runtime filters, stored to be re-applied after every reconnect.

use std::time::Duration;

use ivrgate_adapter::{Change, CommandReply, Entity, EntityKey, Gateway, Write};
use serde_json::{json, Map, Value};

use super::params::bad;
use super::queue::submit;
use crate::proto::{Request, Service};
use crate::settings::{field_type, Settings, CONNECTOR};
use crate::store::{now_ms, AGENT_KIND, CALL_KIND, SERVICE_KIND, SESSION_ID, SESSION_KIND};

pub(super) fn entity_kind(kind: &str) -> &'static str {
    match kind {
        "agents" => AGENT_KIND,
        "services" => SERVICE_KIND,
        _ => CALL_KIND,
    }
}

pub(super) async fn session_state(gw: &dyn Gateway, tenant: &str) -> Map<String, Value> {
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

pub(super) async fn session_view(
    gw: &dyn Gateway,
    settings: &Settings,
    tenant: &str,
) -> CommandReply {
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

pub(super) async fn filters_view(gw: &dyn Gateway, tenant: &str) -> CommandReply {
    let state = session_state(gw, tenant).await;
    CommandReply::ok(json!({"filters": state.get("filters").cloned().unwrap_or(json!([]))}))
}

/// Stores a runtime filter (re-applied after every reconnect) and applies it now when a
/// session is up.
pub(super) async fn filter(
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
