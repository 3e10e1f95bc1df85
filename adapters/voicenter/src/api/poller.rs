//! The §7 active-calls connector: polls the monitor API and turns each change of an extension
//! or a queue into entity events.

use std::time::Duration;

use bytes::Bytes;
use ivrgate_adapter::{EntityKey, Gateway, OutboundRequest};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::answers::{read_answer, verdict};
use super::methods::{monitor, scalar};
use super::settings::ApiSettings;
use super::{Family, Parsed};

/// Entity kinds of the poller's last view.
pub const EXTENSION_KIND: &str = "voicenter.extension";
pub const QUEUE_KIND: &str = "voicenter.queue";

impl ApiSettings {
    /// The time between two polls: the interval, stretched so that the two requests of a
    /// poll stay within `poll_max_requests_per_min`.
    pub fn poll_period(&self) -> Option<Duration> {
        let floor =
            Duration::from_millis(120_000 / u64::from(self.poll_max_requests_per_min.max(1)));
        self.poll_interval.map(|i| i.max(floor))
    }

    /// The poller's connector, when it is on.
    pub fn connector(&self) -> Option<ivrgate_adapter::ConnectorSpec> {
        let period = self.poll_period()?;
        let mut hash = Sha256::new();
        for part in [
            self.code.as_str(),
            self.monitor_url.as_str(),
            &period.as_millis().to_string(),
            &self.timeout.as_millis().to_string(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        Some(ivrgate_adapter::ConnectorSpec {
            name: "active_calls".into(),
            fingerprint: format!("{:x}", hash.finalize()),
            tls: ivrgate_adapter::ClientTls::default(),
            request_timeout: self.timeout,
        })
    }
}

pub(super) fn scalar_text(v: Option<&Value>) -> Option<String> {
    v.and_then(scalar).map(|s| s.trim().to_owned())
}

/// A scalar's text, trimmed, when it is not empty.
fn non_empty_text(v: Option<&Value>) -> Option<String> {
    scalar_text(v).filter(|t| !t.is_empty())
}

/// The objects of a list by their `key` (those without one left out): an extension's calls
/// by `ivrid`, a queue's callers by `CallID`.
fn keyed_by(list: Option<&Value>, key: &str) -> Map<String, Value> {
    let items = list.and_then(Value::as_array).into_iter().flatten();
    items
        .filter_map(|item| Some((non_empty_text(item.get(key))?, item.clone())))
        .collect()
}

/// One extension's view from GetExtensionsCalls: its status and its calls by `ivrid`.
pub(super) fn extension_view(ext: &Value) -> Option<(String, Value)> {
    let username = non_empty_text(ext.get("username"))?;
    let calls = keyed_by(ext.get("calls"), "ivrid");
    Some((
        username,
        json!({
            "name": ext.get("name"),
            "representative": ext.get("representative"),
            "peerstatus": ext.get("peerstatus"),
            "calls": calls,
        }),
    ))
}

pub(super) fn monitor_event(
    event_type: &str,
    correlation: Map<String, Value>,
    data: Map<String, Value>,
    vendor: &Value,
) -> ivrgate_adapter::EntityEvent {
    ivrgate_adapter::EntityEvent {
        event_type: event_type.into(),
        occurred_at: None,
        correlation,
        data,
        vendor_fields: vendor.as_object().cloned().unwrap_or_default(),
    }
}

/// The events between an extension's last view and this one (none when nothing changed).
pub(super) fn extension_changes(
    username: &str,
    old: Option<&Value>,
    new: &Value,
) -> Vec<ivrgate_adapter::EntityEvent> {
    let mut events = Vec::new();
    let ext_corr = || {
        let mut c = Map::new();
        c.insert("username".into(), json!(username));
        c
    };
    let status_of =
        |v: Option<&Value>| v.map(|v| (v["peerstatus"].clone(), v["representative"].clone()));
    if status_of(old) != status_of(Some(new)) {
        let mut data = Map::new();
        data.insert("extension".into(), json!(username));
        data.insert("name".into(), new["name"].clone());
        data.insert("representative".into(), new["representative"].clone());
        data.insert("peerstatus".into(), new["peerstatus"].clone());
        data.insert(
            "previous_peerstatus".into(),
            old.map(|o| o["peerstatus"].clone()).unwrap_or(Value::Null),
        );
        events.push(monitor_event(
            "voicenter.extension.status",
            ext_corr(),
            data,
            &json!({}),
        ));
    }
    let empty = Map::new();
    let old_calls = old.and_then(|o| o["calls"].as_object()).unwrap_or(&empty);
    let new_calls = new["calls"].as_object().unwrap_or(&empty);
    let call_data = |id: &str, call: &Value| {
        let mut data = Map::new();
        data.insert("extension".into(), json!(username));
        data.insert("ivrid".into(), json!(id));
        for k in [
            "direction",
            "callstatus",
            "callerphone",
            "callername",
            "answered",
            "callstarted",
            "callanswered",
        ] {
            if let Some(v) = call.get(k) {
                data.insert(k.into(), v.clone());
            }
        }
        data
    };
    let call_corr = |id: &str| {
        let mut c = ext_corr();
        c.insert("ivrid".into(), json!(id));
        c
    };
    for (id, call) in new_calls {
        match old_calls.get(id) {
            None => events.push(monitor_event(
                "voicenter.extension.call_started",
                call_corr(id),
                call_data(id, call),
                call,
            )),
            Some(before)
                if before.get("callstatus") != call.get("callstatus")
                    || before.get("answered") != call.get("answered") =>
            {
                let mut data = call_data(id, call);
                data.insert(
                    "previous_callstatus".into(),
                    before.get("callstatus").cloned().unwrap_or(Value::Null),
                );
                events.push(monitor_event(
                    "voicenter.extension.call_changed",
                    call_corr(id),
                    data,
                    call,
                ));
            }
            Some(_) => {}
        }
    }
    for (id, call) in old_calls {
        if !new_calls.contains_key(id) {
            events.push(monitor_event(
                "voicenter.extension.call_ended",
                call_corr(id),
                call_data(id, call),
                call,
            ));
        }
    }
    events
}

/// One queue's view from GetQueuesCallers: its callers by `CallID`.
pub(super) fn queue_view(queue: &Value) -> Option<(String, Value)> {
    let id = non_empty_text(queue.get("ID"))?;
    let callers = keyed_by(queue.get("Callers"), "CallID");
    Some((id, json!({"name": queue.get("Name"), "callers": callers})))
}

pub(super) fn queue_changes(
    id: &str,
    old: Option<&Value>,
    new: &Value,
) -> Vec<ivrgate_adapter::EntityEvent> {
    let empty = Map::new();
    let before = old.and_then(|o| o["callers"].as_object()).unwrap_or(&empty);
    let now = new["callers"].as_object().unwrap_or(&empty);
    let one = |event: &str, call: &str, caller: &Value| {
        let mut corr = Map::new();
        corr.insert("queue_id".into(), json!(id));
        corr.insert("CallID".into(), json!(call));
        let mut data = Map::new();
        data.insert("queue_id".into(), json!(id));
        data.insert("queue_name".into(), new["name"].clone());
        data.insert("call".into(), json!(call));
        data.insert(
            "phone".into(),
            caller.get("Phone").cloned().unwrap_or(Value::Null),
        );
        data.insert(
            "join_time".into(),
            caller.get("JoinTime").cloned().unwrap_or(Value::Null),
        );
        monitor_event(event, corr, data, caller)
    };
    let mut events = Vec::new();
    for (call, caller) in now {
        if !before.contains_key(call) {
            events.push(one("voicenter.queue.caller_joined", call, caller));
        }
    }
    for (call, caller) in before {
        if !now.contains_key(call) {
            events.push(one("voicenter.queue.caller_left", call, caller));
        }
    }
    events
}

/// Commits one entity's new view with its events; nothing when nothing changed.
pub(super) async fn commit_view(
    gw: &dyn Gateway,
    key: EntityKey,
    view: Value,
    changes: impl Fn(Option<&Value>, &Value) -> Vec<ivrgate_adapter::EntityEvent> + Send + Sync,
) -> Result<(), String> {
    let result = ivrgate_adapter::transition_one(gw, key, |entity| {
        let old = entity.and_then(|e| e.state.as_ref());
        let events = changes(old, &view);
        if events.is_empty() && old == Some(&view) {
            return ivrgate_adapter::Change::Keep;
        }
        ivrgate_adapter::Change::Write(ivrgate_adapter::Write {
            state: Some(view.clone()),
            events,
            ..ivrgate_adapter::Write::default()
        })
    })
    .await;
    result.map(|_| ()).map_err(|e| e.to_string())
}

/// Fetches one monitor method and checks Voicenter's verdict.
pub(super) async fn fetch(
    ctx: &dyn ivrgate_adapter::ConnectorCtx,
    settings: &ApiSettings,
    name: &'static str,
) -> Result<Value, String> {
    let (_, upstream) = monitor(settings, name, &[]).map_err(|r| r.body.to_string())?;
    let response = ctx
        .http()
        .get(OutboundRequest {
            url: upstream.url,
            headers: vec![("Accept".into(), "application/json".into())],
            body: Bytes::new(),
            timeout: Some(settings.timeout),
        })
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    if response.status >= 300 {
        return Err(format!("{name}: HTTP {}", response.status));
    }
    let answer = read_answer(&response).map_err(|e| format!("{name}: {e}"))?;
    verdict(Family::Monitor, &answer)
        .map_err(|(_, _, code, message)| format!("{name}: {code} {message}"))?;
    Ok(answer)
}

/// One poll: both views, each entity committed with the events of its changes.
pub(super) async fn poll_once(
    ctx: &dyn ivrgate_adapter::ConnectorCtx,
    settings: &ApiSettings,
) -> Result<usize, String> {
    let gw = ctx.gateway();
    let tenant = ctx.tenant().to_owned();
    let mut seen = 0;
    let extensions = fetch(ctx, settings, "GetExtensionsCalls").await?;
    for ext in extensions
        .get("EXTENSIONS")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some((username, view)) = extension_view(ext) else {
            continue;
        };
        let key = EntityKey::new(tenant.clone(), EXTENSION_KIND, username.clone());
        commit_view(gw, key, view, |old, new| {
            extension_changes(&username, old, new)
        })
        .await?;
        seen += 1;
    }
    let queues = fetch(ctx, settings, "GetQueuesCallers").await?;
    for queue in queues
        .get("QUEUES")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some((id, view)) = queue_view(queue) else {
            continue;
        };
        let key = EntityKey::new(tenant.clone(), QUEUE_KIND, id.clone());
        commit_view(gw, key, view, |old, new| queue_changes(&id, old, new)).await?;
        seen += 1;
    }
    Ok(seen)
}

/// The poller connector: polls §7 every period while it holds the tenant's lease.
pub async fn run_poller(ctx: ivrgate_adapter::ConnectorCtxRef) -> ivrgate_adapter::ConnectorExit {
    let parsed = ivrgate_adapter::settings_of::<Parsed>(ctx.gateway(), ctx.tenant(), crate::VENDOR);
    let Some(settings) = parsed.and_then(|p| p.0.clone()) else {
        return ivrgate_adapter::ConnectorExit::Failed("no [tenants.voicenter_api] section".into());
    };
    let Some(period) = settings.poll_period() else {
        return ivrgate_adapter::ConnectorExit::Stopped;
    };
    let mut polls: u64 = 0;
    loop {
        let outcome = poll_once(ctx.as_ref(), &settings).await;
        polls += 1;
        let detail = match &outcome {
            Ok(n) => format!(
                "polling every {} ms: {n} extensions and queues",
                period.as_millis()
            ),
            Err(e) => {
                tracing::warn!(tenant = ctx.tenant(), error = %e, "voicenter active-calls poll failed");
                format!("poll failed: {e}")
            }
        };
        ctx.set_health(ivrgate_adapter::ConnectorHealth {
            connected: outcome.is_ok(),
            server: Some(settings.monitor_url.clone()),
            session_id: None,
            last_heartbeat_ms: None,
            sessions_opened: polls,
            detail,
        });
        tokio::select! {
            _ = ctx.stopped() => return ivrgate_adapter::ConnectorExit::Stopped,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
