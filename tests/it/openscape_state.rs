//! OpenScape state written by an earlier release still loads and behaves the same.
//!
//! `tests/fixtures/openscape/state/previous_release.json` holds entity documents as the
//! release before the typed callback entity wrote them (channels, calls queued, idle, holding
//! a transit number and monitored on a device, the device, a callback, an agent, queue
//! figures, the system), the aliases they held, and what that release answered about them:
//! a series of IVR API functions and command-API requests, with the state of every entity
//! they touched afterwards. The test seeds a fresh store with those documents and aliases and
//! checks every answer and state matches.
//!
//! The fixture was made by this same test with `OPENSCAPE_STATE_CAPTURE=1` on main at
//! 0d650ab (the untyped callback entity); run so again only to capture a release that
//! writes a new shape.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ivrgate::clock::ManualClock;
use ivrgate_adapter::{transition_one, AliasChange, Change, EntityKey, Gateway as _, Write};
use ivrgate_wire::{xmlrpc, Limits};
use serde_json::{json, Value};

use crate::support::*;

/// Monday 2026-01-05 12:00:00 UTC: the callback queue is open.
const AT_MS: i64 = 1_767_614_400_000;

const TOML: &str = r#"
[tenants.openscape]
transit_numbers = ["8800", "8801"]
queues = ["Sales", "Support"]

[tenants.openscape.callback_queues.CBQueue]
timezone = "America/Toronto"
open_hours = ["mon-fri 08:00-18:00"]
max_days_ahead = 30
"#;

/// Every kind of entity the adapter keeps.
const KINDS: [&str; 7] = [
    "openscape.channel",
    "openscape",
    "openscape.device",
    "openscape.callback",
    "openscape.queue",
    "openscape.agent",
    "openscape.system",
];

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openscape/state/previous_release.json")
}

async fn start(receiver: &Receiver) -> (Gateway, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = config_toml(tmp.path(), &receiver.url("/hook"), TOML);
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("epoch")
        .as_millis() as i64;
    let clock = Arc::new(ManualClock::with_offset_ms(AT_MS - now_ms));
    let gw = Gateway::start_in(tmp.path(), &toml, clock).await;
    (gw, tmp)
}

/// One IVR API function over XML-RPC: its answer (or fault) as JSON.
async fn rpc(gw: &Gateway, channel: &str, method: &str, params: Value) -> Value {
    let call = xmlrpc::MethodCall {
        method: method.to_owned(),
        params: params
            .as_array()
            .map(|a| a.iter().map(xmlrpc::Value::from_json).collect())
            .unwrap_or_default(),
    };
    let (status, _, body) = gw
        .post(
            &format!("/openscape/acme/{channel}"),
            "text/xml",
            xmlrpc::write_call(&call),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    match xmlrpc::parse_response(&body, &Limits::default()).expect("XML-RPC") {
        Ok(params) => params
            .first()
            .map(xmlrpc::Value::to_json)
            .unwrap_or(Value::Null),
        Err(fault) => json!({"fault": fault.code}),
    }
}

fn ok(answer: &Value) -> &Value {
    assert_eq!(answer["ReturnCode"], json!(0), "{answer}");
    answer
}

async fn cmd(gw: &Gateway, method: &str, path: &str, body: Value) -> (u16, Value) {
    let url = gw.url(&format!("/api/acme/openscape/{path}"));
    let mut request = client().request(method.parse().expect("method"), url);
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.expect("command");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Drives today's code into every state worth keeping; returns the ids the probes use.
async fn build(gw: &Gateway) -> Value {
    // A queued call with contact data on channel 6060.
    ok(&rpc(
        gw,
        "6060",
        "Initialize",
        json!(["6060", "6000@deerhurst", 10_000]),
    )
    .await);
    ok(&rpc(gw, "6060", "SetCallInfo", json!(["9055551234", "12345"])).await);
    let a = ok(&rpc(
        gw,
        "6060",
        "QueryCallInfo",
        json!(["6060", null, null, null, null, null, null, null, null, "1;"]),
    )
    .await)
    .clone();
    let queued = a["CallID"].as_str().expect("CallID").to_owned();
    ok(&rpc(
        gw,
        "6060",
        "SetContactData",
        json!([queued, "Name", "John Doe"]),
    )
    .await);
    ok(&rpc(gw, "6060", "Enqueue", json!([queued, 1, "Sales", 12])).await);
    // An idle call holding a transit number and a callback on channel 6061.
    ok(&rpc(
        gw,
        "6061",
        "Initialize",
        json!(["6060", "6000@deerhurst", 10_000]),
    )
    .await);
    ok(&rpc(gw, "6061", "SetCallInfo", json!(["9055550000", "12346"])).await);
    let a = ok(&rpc(
        gw,
        "6061",
        "QueryCallInfo",
        json!(["6061", null, null, null, null, null, null, null, null, "1;"]),
    )
    .await)
    .clone();
    let transit = a["CallID"].as_str().expect("CallID").to_owned();
    let t = ok(&rpc(gw, "6061", "GetTransitNumber", json!([transit, ">T"])).await).clone();
    let cb = ok(&rpc(
        gw,
        "6061",
        "CreateCallback",
        json!([
            transit,
            "CBQueue",
            "Callback",
            0,
            "Alan Smith",
            ">CB",
            "5555550199;01/05/2026;09:00;01/05/2026;16:00"
        ]),
    )
    .await)
    .clone();
    // A monitored call on device 36300, and the figures the customer pushes.
    let (s, b) = cmd(
        gw,
        "POST",
        "devices/36300/calls",
        json!({"call_id": "4400000000000001", "ani": "9055557900", "dnis": "69030", "fmnq": true}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    ok(&rpc(
        gw,
        "36300",
        "Initialize",
        json!(["6060", "6000@deerhurst", 10_000]),
    )
    .await);
    ok(&rpc(
        gw,
        "36300",
        "QueryCallInfo",
        json!(["36300", ">C", ">A", ">D"]),
    )
    .await);
    for (method, path, body) in [
        (
            "PUT",
            "queues/Sales/statistics",
            json!({"calls_in_queue": 3, "estimated_wait_s": 45, "average_wait_s": 30, "oldest_call_s": 120, "service_level": 80}),
        ),
        (
            "PUT",
            "agents/188001",
            json!({"device": "4711", "status": "available"}),
        ),
        (
            "PUT",
            "system",
            json!({"servers": {"RoutingServer": 1, "TServer": 8, "StatServer": 1}}),
        ),
    ] {
        let (s, b) = cmd(gw, method, path, body).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    json!({
        "queued": queued,
        "transit": transit,
        "transit_number": t["TransitNumber"],
        "callback": cb["CallbackID"],
        "monitored": "4400000000000001",
    })
}

/// Every live entity of the adapter, as stored.
async fn entities(gw: &Gateway) -> Vec<Value> {
    let mut out = Vec::new();
    for kind in KINDS {
        for e in gw.handle.core.list("acme", kind, 100).await.expect("list") {
            out.push(json!({"kind": kind, "id": e.key.id, "state": e.state}));
        }
    }
    out
}

/// The aliases the entities hold, read from the store file.
fn aliases(dir: &Path) -> Vec<Value> {
    let db = rusqlite::Connection::open(dir.join("ivrgate.db")).expect("open store");
    let mut statement = db
        .prepare(
            "SELECT namespace, value, owner_kind, owner_id, until_ms FROM aliases \
             ORDER BY namespace, value",
        )
        .expect("prepare");
    let rows = statement
        .query_map([], |r| {
            Ok(json!({
                "namespace": r.get::<_, String>(0)?,
                "value": r.get::<_, String>(1)?,
                "kind": r.get::<_, String>(2)?,
                "id": r.get::<_, String>(3)?,
                "until_ms": r.get::<_, Option<i64>>(4)?,
            }))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

async fn state_of(gw: &Gateway, kind: &str, id: &str) -> Value {
    gw.handle
        .core
        .load(EntityKey::new("acme", kind, id))
        .await
        .expect("load")
        .and_then(|e| e.state)
        .unwrap_or(Value::Null)
}

/// What the gateway answers and writes for the captured states, in order.
async fn behaviour(gw: &Gateway, receiver: &Receiver, ids: &Value) -> Vec<Value> {
    let id = |name: &str| ids[name].as_str().expect("id").to_owned();
    let (queued, transit, monitored) = (id("queued"), id("transit"), id("monitored"));
    let number = id("transit_number");
    let mut out = Vec::new();
    let probes: Vec<(&str, &str, Value)> = vec![
        ("6060", "QueryCallStatus", json!([queued, 0, ">E", ">P"])),
        ("6061", "GetTransitNumber", json!([transit, ">T"])),
        ("6061", "QueryCallStatus", json!([transit, 0, ">E", ">P"])),
        (
            "36300",
            "QueryCallStatus",
            json!([monitored, 0, ">E", ">P"]),
        ),
        ("6061", "QueryAgentStatus", json!(["188001", ">D", ">S"])),
        ("6061", "QueryAgentStatus", json!(["", "4711", ">S"])),
        (
            "6061",
            "QueryQueueStatistics",
            json!(["Sales", ">C", ">E", ">A", ">O", ">S"]),
        ),
        ("6061", "QuerySystemStatus", json!([">O", ">S", ">E"])),
        ("6061", "DeleteCallback", json!([ids["callback"]])),
        ("6061", "DeleteCallback", json!([ids["callback"]])),
        ("6060", "SetContactData", json!([queued, "Account", "42"])),
        ("6060", "Dequeue", json!([queued])),
        ("36300", "Disconnect", json!([monitored])),
    ];
    for (channel, function, params) in probes {
        let answer = rpc(gw, channel, function, params.clone()).await;
        out.push(json!({
            "channel": channel, "function": function, "params": params, "answer": answer,
            "channel_state": state_of(gw, "openscape.channel", channel).await,
        }));
    }
    let commands: Vec<(&str, String)> = vec![
        ("GET", format!("calls/{queued}")),
        ("POST", format!("transit/{number}/arrived")),
        ("GET", "channels/6061".to_owned()),
    ];
    for (method, path) in commands {
        let (status, mut body) = cmd(gw, method, &path, Value::Null).await;
        // Ids ivrgate gave when the entity was first written, not part of the state.
        if let Some(call) = body.get_mut("call").and_then(Value::as_object_mut) {
            call.remove("entity_id");
            call.remove("version");
        }
        if let Some(o) = body.as_object_mut() {
            o.remove("version");
        }
        out.push(json!({"command": format!("{method} {path}"), "status": status, "body": body}));
    }
    out.push(json!({"events": events(receiver).await}));
    for (kind, id) in [
        ("openscape", queued),
        ("openscape", transit),
        ("openscape", monitored),
        ("openscape.device", "36300".to_owned()),
        ("openscape.callback", id("callback")),
    ] {
        out.push(json!({"kind": kind, "id": id, "state": state_of(gw, kind, &id).await}));
    }
    out
}

/// The webhooks the probes caused, without what each run gives anew (ids, times,
/// sequence numbers), sorted: deliveries of different entities overlap.
async fn events(receiver: &Receiver) -> Vec<Value> {
    let mut out: Vec<Value> = receiver
        .drain(Duration::from_millis(500))
        .await
        .into_iter()
        .map(|hook| {
            let mut data = hook.json["data"].clone();
            if let Some(o) = data.as_object_mut() {
                for key in ["event_id", "call_id", "received_at", "seq"] {
                    o.remove(key);
                }
            }
            json!({"type": hook.json["type"], "data": data})
        })
        .collect();
    out.sort_by_key(|e| e.to_string());
    out
}

/// Writes the captured documents and their aliases into a fresh store.
async fn seed(gw: &Gateway, entities: &[Value], aliases: &[Value]) {
    let core = gw.handle.core.clone();
    for e in entities {
        let (kind, id) = (
            e["kind"].as_str().expect("kind"),
            e["id"].as_str().expect("id"),
        );
        let claims: Vec<AliasChange> = aliases
            .iter()
            .filter(|a| a["kind"] == kind && a["id"] == id)
            .map(|a| AliasChange::Claim {
                namespace: a["namespace"].as_str().expect("namespace").to_owned(),
                value: a["value"].as_str().expect("value").to_owned(),
                until: a["until_ms"]
                    .as_i64()
                    .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)),
            })
            .collect();
        let state = e["state"].clone();
        transition_one(core.as_ref(), EntityKey::new("acme", kind, id), |_| {
            let mut write = Write::state(state.clone());
            write.aliases = claims.clone();
            Change::Write(write)
        })
        .await
        .expect("seeded");
    }
}

#[tokio::test]
async fn openscape_state_written_by_the_previous_release_still_loads() {
    let receiver = Receiver::start().await;
    receiver.answer(|_| Reply::ok("{}"));
    if std::env::var_os("OPENSCAPE_STATE_CAPTURE").is_some() {
        let (gw, tmp) = start(&receiver).await;
        let ids = build(&gw).await;
        let entities = entities(&gw).await;
        let aliases = aliases(tmp.path());
        receiver.drain(Duration::from_millis(500)).await;
        let behaviour = behaviour(&gw, &receiver, &ids).await;
        let doc =
            json!({"ids": ids, "entities": entities, "aliases": aliases, "behaviour": behaviour});
        let path = fixture_path();
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        let text = serde_json::to_string_pretty(&doc).expect("json") + "\n";
        std::fs::write(&path, text).expect("write fixture");
        gw.stop().await;
        return;
    }
    let doc: Value =
        serde_json::from_str(&fixture("openscape/state/previous_release.json")).expect("fixture");
    let (gw, _tmp) = start(&receiver).await;
    let entities = doc["entities"].as_array().expect("entities");
    let kinds: std::collections::BTreeSet<&str> =
        entities.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds.len(),
        KINDS.len(),
        "the fixture has every kind: {kinds:?}"
    );
    seed(&gw, entities, doc["aliases"].as_array().expect("aliases")).await;
    let got = behaviour(&gw, &receiver, &doc["ids"]).await;
    let want = doc["behaviour"].as_array().expect("behaviour");
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(want) {
        assert_eq!(got, want);
    }
    gw.stop().await;
}

/// A state this release cannot read is never taken for an absent or ended call: the IVR gets
/// the platform's internal error (-305), the command API a 500, the request is counted as
/// `state_unreadable`, and the entity is left exactly as it was (state and version).
#[tokio::test]
async fn openscape_unreadable_state_is_an_internal_error_not_an_ended_call() {
    let receiver = Receiver::start().await;
    let (gw, _tmp) = start(&receiver).await;
    let core = gw.handle.core.clone();
    let call_id = "7614400000000009";
    let channel = json!({
        "initialized": true, "local_port": "6060", "admin_server": "6000@deerhurst",
        "rpc_timeout_ms": 10000, "call_info": null, "queried": true, "call_id": call_id,
    });
    // A status no release wrote, and a callback without its schedules.
    let broken_call = json!({"call_id": call_id, "status": "teleported", "channel": "6060"});
    let broken_callback = json!({"callback_id": "1", "CallID": call_id, "queue": "CBQueue"});
    for (kind, id, state) in [
        ("openscape.channel", "6060", &channel),
        ("openscape", call_id, &broken_call),
        ("openscape.callback", "1", &broken_callback),
    ] {
        transition_one(core.as_ref(), EntityKey::new("acme", kind, id), |_| {
            Change::Write(Write::state(state.clone()))
        })
        .await
        .expect("seeded");
    }
    let before = |kind: &'static str, id: &'static str| {
        let core = core.clone();
        async move {
            let e = core
                .load(EntityKey::new("acme", kind, id))
                .await
                .expect("load")
                .expect("stored");
            (e.version, e.state)
        }
    };
    let call_before = before("openscape", call_id).await;
    let callback_before = before("openscape.callback", "1").await;
    for (function, params) in [
        ("SetContactData", json!([call_id, "Name", "x"])),
        ("QueryCallStatus", json!([call_id, 0, ">E", ">P"])),
        ("Disconnect", json!([call_id])),
        ("DeleteCallback", json!(["1"])),
    ] {
        let a = rpc(&gw, "6060", function, params).await;
        assert_eq!(a["ReturnCode"], json!(-305), "{function}: {a}");
    }
    let (status, body) = cmd(&gw, "GET", &format!("calls/{call_id}"), Value::Null).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], json!("internal_error"));
    let (status, body) = cmd(
        &gw,
        "POST",
        &format!("calls/{call_id}/assign"),
        json!({"extension": "4711"}),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(before("openscape", call_id).await, call_before);
    assert_eq!(before("openscape.callback", "1").await, callback_before);
    let metrics = core.metrics.render();
    for function in [
        "SetContactData",
        "QueryCallStatus",
        "Disconnect",
        "DeleteCallback",
    ] {
        let line = format!(
            r#"ivrgate_requests_total{{adapter="openscape",method="{function}",outcome="state_unreadable"}} 1"#
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    // Nothing was sent about the call: no event claims it ended.
    assert!(
        receiver
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "no webhook"
    );
    gw.stop().await;
}
