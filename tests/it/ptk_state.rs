//! PTK state written by an earlier release still loads and behaves the same.
//!
//! `tests/fixtures/ptk/state/previous_release.json` holds entity documents (interactions in
//! every status, an ended one, the licence counter, an appointment slot) as the release before
//! the typed PTK model wrote them, together with what that release answered about them: the
//! `GetInteractionData` answer, and the status code and new state of one report on each. The
//! test seeds a fresh store with those documents and checks the answers and states match.
//!
//! The fixture was made by this same test with `PTK_STATE_CAPTURE=1` on main at f2270e6 (the
//! untyped `methods.rs`); run so again only to capture a release that writes a new shape.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ivrgate::clock::ManualClock;
use ivrgate_adapter::{transition_one, Change, EntityKey, Gateway as _, TimerChange, Write};
use ivrgate_ptk::testing::text_of;
use serde_json::{json, Value};

use crate::support::*;

/// Monday 2026-11-23 15:00:00 UTC: the segment is open (no hours configured anyway).
const AT_S: i64 = 1_795_446_000;

const TOML: &str = r#"
[tenants.ptk]
tenants = ["Portree"]
target_namespace = "urn:ivrgate:test:ptk"
licences = 100
licence_requests_per_window = 1000

[[tenants.ptk.segments]]
tenant = "Portree"
name = "VHT_Test"
skills = ["100", "200"]
max_attempts = 5
retry_interval_s = 600
slot_minutes = 15
slot_capacity = 4
"#;

const T: &str = "<Tenant>Portree</Tenant>";

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ptk/state/previous_release.json")
}

async fn start(receiver: &Receiver) -> (Gateway, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = config_toml(tmp.path(), &receiver.url("/hook"), TOML);
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("epoch")
        .as_millis() as i64;
    let clock = Arc::new(ManualClock::with_offset_ms(AT_S * 1000 - now_ms));
    let gw = Gateway::start_in(tmp.path(), &toml, clock).await;
    (gw, tmp)
}

async fn call(gw: &Gateway, method: &str, inner: &str) -> String {
    let body = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><{method} xmlns="urn:ivrgate:test:ptk">{inner}</{method}></s:Body></s:Envelope>"#
    );
    let (status, _, text) = gw.post("/ptk/acme", "text/xml; charset=utf-8", body).await;
    assert_eq!(status, 200, "{method}: {text}");
    text
}

fn code(body: &str) -> u32 {
    text_of(body, "ResultCode")
        .or_else(|| text_of(body, "Code"))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {body}"))
}

fn id_of(body: &str) -> String {
    text_of(body, "InteractionId")
        .or_else(|| {
            ivrgate_ptk::testing::attrs_of(body, "Interaction", "Id")
                .into_iter()
                .next()
        })
        .unwrap_or_else(|| panic!("no interaction id in {body}"))
}

/// The answer without what differs on every call: the response GUID, and the remaining
/// wait, which counts down with the clock.
fn masked_answer(body: &str) -> String {
    let body = mask(body, "<Id>", "</Id>");
    mask(&body, "Name=\"RemainingWaitTime\" Value=\"", "\"")
}

/// `text` with what stands between each `open` and the next `close` replaced by `*`.
fn mask(text: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = start + open.len();
        let Some(len) = rest[after..].find(close) else {
            break;
        };
        out.push_str(&rest[..after]);
        out.push('*');
        rest = &rest[after + len..];
    }
    out.push_str(rest);
    out
}

/// A state without the times a report sets from the clock (`touched`, a rescheduled `due`).
fn masked_state(state: &Value) -> Value {
    let mut state = state.clone();
    if let Value::Object(fields) = &mut state {
        for key in ["touched", "due"] {
            if let Some(v) = fields.get_mut(key) {
                if v.is_string() {
                    *v = json!("*");
                }
            }
        }
    }
    state
}

async fn state_of(gw: &Gateway, kind: &str, id: &str) -> Value {
    gw.handle
        .core
        .load(EntityKey::new("acme", kind, id))
        .await
        .expect("load")
        .map(|e| e.state.unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

/// The reports applied to each captured interaction, in order: (case, method, parameters).
fn reports(ids: &Value) -> Vec<(String, String, String)> {
    let id = |case: &str| {
        format!(
            "{T}<InteractionId>{}</InteractionId>",
            ids[case].as_str().unwrap_or("")
        )
    };
    vec![
        ("due".into(), "InteractionOutboundConnected".into(), id("due")),
        (
            "appointment".into(),
            "InteractionCancelled".into(),
            format!("{}<CancelledBy>Caller</CancelledBy>", id("appointment")),
        ),
        (
            "inbound".into(),
            "InteractionQueued".into(),
            format!("{}<SkillId>100</SkillId>", id("inbound")),
        ),
        (
            "queued_hold".into(),
            "InteractionDequeued".into(),
            format!("{}<Reason>AgentAnswered</Reason>", id("queued_hold")),
        ),
        (
            "retrying".into(),
            "UpdateUserData".into(),
            format!(
                "<data>{}<UserData><UserDataAssignment><Key>list</Key><Value><ListValue><UserDataAssignment><Key>added</Key><Value><IntegerValue>9</IntegerValue></Value></UserDataAssignment></ListValue></Value></UserDataAssignment></UserData></data>",
                id("retrying")
            ),
        ),
        (
            "queued_callback".into(),
            "ModifyInteraction".into(),
            format!(
                "<data>{}<Action>Result</Action><Options><Result>Successful</Result></Options></data>",
                id("queued_callback")
            ),
        ),
        (
            "retrying".into(),
            "InteractionOutboundAttemptFailed".into(),
            format!("{}<Reason>NoAnswer</Reason>", id("retrying")),
        ),
        ("ended".into(), "InteractionOutboundConnected".into(), id("ended")),
    ]
}

const USER_DATA: &str = "<UserData><UserDataAssignment><Key>name</Key><Value><StringValue>Ann</StringValue></Value></UserDataAssignment>\
<UserDataAssignment><Key>n</Key><Value><IntegerValue>42</IntegerValue></Value></UserDataAssignment>\
<UserDataAssignment><Key>blob</Key><Value><BinaryValue>0aff</BinaryValue></Value></UserDataAssignment>\
<UserDataAssignment><Key>plain</Key><Value>text</Value></UserDataAssignment>\
<UserDataAssignment><Key>list</Key><Value><ListValue><UserDataAssignment><Key>inner</Key><Value><StringValue>x</StringValue></Value></UserDataAssignment>\
<UserDataAssignment><Key>deeper</Key><Value><ListValue><UserDataAssignment><Key>d</Key><Value><IntegerValue>-1</IntegerValue></Value></UserDataAssignment></ListValue></Value></UserDataAssignment></ListValue></Value></UserDataAssignment></UserData>";

/// Drives today's code into every status worth keeping; returns the interaction id per case.
async fn build(gw: &Gateway, receiver: &Receiver) -> Value {
    let add = |contact: &str, extra: &str| {
        format!("<data>{T}<Segment>VHT_Test</Segment><Contact>{contact}</Contact>{extra}<Options><ClientId>c-{contact}</ClientId><SourceApplication>IVR7</SourceApplication></Options>{USER_DATA}</data>")
    };
    let with_id = |id: &str| format!("{T}<InteractionId>{id}</InteractionId>");
    // An ASAP callback that fell due.
    let due = id_of(&call(gw, "AddInteraction", &add("5550001", "")).await);
    receiver.next_of("callback.due").await;
    // An appointment two hours ahead: a slot.
    let at = ivrgate_ptk::settings::format_time(
        SystemTime::UNIX_EPOCH + Duration::from_secs(AT_S as u64 + 7200),
    );
    let appointment = id_of(
        &call(
            gw,
            "AddInteraction",
            &add(
                "5550002",
                &format!("<AppointmentTime>{at}</AppointmentTime>"),
            ),
        )
        .await,
    );
    // Inbound treatment with an external tracking id and UserData (a voice licence).
    let inbound = id_of(
        &call(
            gw,
            "CreateInteraction",
            &format!("{T}<Segment>VHT_Test</Segment><ExternalTrackingId>ext-1</ExternalTrackingId><SourceApplication>IVR7</SourceApplication>{USER_DATA}"),
        )
        .await,
    );
    // In the holding queue.
    let queued_hold = id_of(
        &call(
            gw,
            "CreateInteraction",
            &format!("{T}<Segment>VHT_Test</Segment>"),
        )
        .await,
    );
    call(
        gw,
        "InteractionQueued",
        &format!("{}<SkillId>200</SkillId>", with_id(&queued_hold)),
    )
    .await;
    // A callback whose first attempt failed: rescheduled, with its failure counted.
    let retrying = id_of(&call(gw, "AddInteraction", &add("5550003", "")).await);
    receiver.next_of("callback.due").await;
    call(
        gw,
        "InteractionOutboundAttemptFailed",
        &format!("{}<Reason>Busy</Reason>", with_id(&retrying)),
    )
    .await;
    // A connected callback waiting for an agent.
    let queued_callback = id_of(&call(gw, "AddInteraction", &add("5550004", "")).await);
    receiver.next_of("callback.due").await;
    call(
        gw,
        "InteractionOutboundConnected",
        &with_id(&queued_callback),
    )
    .await;
    call(
        gw,
        "InteractionQueued",
        &format!("{}<SkillId>100</SkillId>", with_id(&queued_callback)),
    )
    .await;
    // Ended.
    let ended = id_of(
        &call(
            gw,
            "CreateInteraction",
            &format!("{T}<Segment>VHT_Test</Segment>"),
        )
        .await,
    );
    call(
        gw,
        "RemoveInteraction",
        &format!(
            "<data>{}<Reason>Admin Canceled</Reason></data>",
            with_id(&ended)
        ),
    )
    .await;
    json!({
        "due": due, "appointment": appointment, "inbound": inbound, "queued_hold": queued_hold,
        "retrying": retrying, "queued_callback": queued_callback, "ended": ended,
    })
}

/// Every entity the cases touch: (kind, id, state).
async fn entities(gw: &Gateway, ids: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, id) in ids.as_object().expect("ids") {
        let id = id.as_str().expect("id");
        out.push(json!({"kind": "ptk", "id": id, "state": state_of(gw, "ptk", id).await}));
    }
    out.push(json!({"kind": "ptk.licence", "id": "Portree", "state": state_of(gw, "ptk.licence", "Portree").await}));
    for slot in gw
        .handle
        .core
        .list("acme", "ptk.slot", 100)
        .await
        .expect("slots")
    {
        out.push(json!({"kind": "ptk.slot", "id": slot.key.id, "state": slot.state}));
    }
    out
}

/// What the gateway answers and writes for the captured states: per case the
/// GetInteractionData answer, then each report's code and the states after it.
async fn behaviour(gw: &Gateway, ids: &Value) -> Value {
    let mut queries = serde_json::Map::new();
    for (case, id) in ids.as_object().expect("ids") {
        let id = id.as_str().expect("id");
        let answer = call(
            gw,
            "GetInteractionData",
            &format!("<data>{T}<InteractionId>{id}</InteractionId></data>"),
        )
        .await;
        queries.insert(case.clone(), json!(masked_answer(&answer)));
    }
    let mut after = Vec::new();
    for (case, method, params) in reports(ids) {
        let answer = call(gw, &method, &params).await;
        let id = ids[&case].as_str().expect("id");
        after.push(json!({
            "case": case, "method": method, "code": code(&answer),
            "state": masked_state(&state_of(gw, "ptk", id).await),
            "licence": state_of(gw, "ptk.licence", "Portree").await,
        }));
    }
    json!({"queries": queries, "reports": after})
}

/// Writes the captured documents into a fresh store (an ended one: written, then ended).
async fn seed(gw: &Gateway, entities: &[Value]) {
    let core = gw.handle.core.clone();
    for e in entities {
        let key = EntityKey::new(
            "acme",
            e["kind"].as_str().expect("kind"),
            e["id"].as_str().expect("id"),
        );
        let state = e["state"].clone();
        let first = if state.is_null() {
            json!({"ended": true})
        } else {
            state.clone()
        };
        transition_one(core.as_ref(), key.clone(), |_| {
            Change::Write(Write::state(first.clone()))
        })
        .await
        .expect("seeded");
        if state.is_null() {
            transition_one(core.as_ref(), key.clone(), |_| {
                Change::Write(Write::default())
            })
            .await
            .expect("ended");
        }
    }
}

#[tokio::test]
async fn ptk_state_written_by_the_previous_release_still_loads() {
    let receiver = Receiver::start().await;
    if std::env::var_os("PTK_STATE_CAPTURE").is_some() {
        let (gw, _tmp) = start(&receiver).await;
        let ids = build(&gw, &receiver).await;
        let entities = entities(&gw, &ids).await;
        let behaviour = behaviour(&gw, &ids).await;
        let doc = json!({"ids": ids, "entities": entities, "behaviour": behaviour});
        let path = fixture_path();
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        let text = serde_json::to_string_pretty(&doc).expect("json") + "\n";
        std::fs::write(&path, text).expect("write fixture");
        gw.stop().await;
        return;
    }
    let doc: Value =
        serde_json::from_str(&fixture("ptk/state/previous_release.json")).expect("fixture");
    let (gw, _tmp) = start(&receiver).await;
    let entities = doc["entities"].as_array().expect("entities");
    assert!(entities.len() >= 9, "the fixture covers every status");
    seed(&gw, entities).await;
    let got = behaviour(&gw, &doc["ids"]).await;
    let want = &doc["behaviour"];
    for (case, answer) in want["queries"].as_object().expect("queries") {
        assert_eq!(
            got["queries"][case], *answer,
            "GetInteractionData of the {case} interaction"
        );
    }
    let (got, want) = (
        got["reports"].as_array().expect("reports"),
        want["reports"].as_array().expect("reports"),
    );
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(want) {
        assert_eq!(
            got, want,
            "{} on the {} interaction",
            want["method"], want["case"]
        );
    }
    gw.stop().await;
}

/// The sum of the `/metrics` series starting with `prefix`.
async fn series(gw: &Gateway, prefix: &str) -> f64 {
    gw.get("/metrics")
        .await
        .1
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn ptk_state_that_does_not_read_is_an_internal_error_never_an_ended_call() {
    let receiver = Receiver::start().await;
    let (gw, _tmp) = start(&receiver).await;
    let core = gw.handle.core.clone();
    // A live interaction whose state no release wrote: an unknown status.
    let id = "V0001000000000123112026150000000";
    let garbage = json!({"id": id, "tenant": "Portree", "interaction_type": "FIFO",
        "status": "Sleeping", "created": "2026-11-23T15:00:00Z"});
    let key = EntityKey::new("acme", "ptk", id);
    transition_one(core.as_ref(), key.clone(), |_| {
        Change::Write(Write::state(garbage.clone()))
    })
    .await
    .expect("seeded");
    let before = core.load(key.clone()).await.expect("load").expect("stored");
    let with_id = format!("{T}<InteractionId>{id}</InteractionId>");
    for (method, params) in [
        ("GetInteractionData", format!("<data>{with_id}</data>")),
        ("FindInteraction", format!("<data>{with_id}</data>")),
        ("InteractionOutboundConnected", with_id.clone()),
        (
            "InteractionDisconnectedByCaller",
            format!("{with_id}<Reason>Abandon</Reason>"),
        ),
        (
            "RemoveInteraction",
            format!("<data>{with_id}<Reason>Web Canceled</Reason></data>"),
        ),
    ] {
        let answer = call(&gw, method, &params).await;
        assert_eq!(code(&answer), 109000, "{method}: {answer}");
        assert!(
            !answer.contains("Sleeping"),
            "the reason stays in the log: {answer}"
        );
    }
    // Nothing was written: not ended, no new version, no event.
    let after = core.load(key.clone()).await.expect("load").expect("stored");
    assert_eq!(after.version, before.version);
    assert_eq!(after.state, Some(garbage.clone()));
    assert_eq!(after.status, "active");
    assert!(receiver
        .next_within(Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(
        series(
            &gw,
            "ivrgate_requests_total{adapter=\"ptk\",method=\"InteractionOutboundConnected\",outcome=\"internal_error\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        series(&gw, "ivrgate_requests_total{adapter=\"ptk\",method=\"").await,
        5.0,
        "every request counted once"
    );

    // Its due timer falls due: the timer fails (logged, counted, tried again after its
    // lease) and the interaction is still not ended.
    transition_one(core.as_ref(), key.clone(), |_| {
        Change::Write(Write::state(garbage.clone()).timer(TimerChange::Set {
            name: "callback.due".into(),
            due: SystemTime::UNIX_EPOCH + Duration::from_secs(AT_S as u64),
            payload: json!({"due": "2026-11-23T15:00:00Z"}),
        }))
    })
    .await
    .expect("timer set");
    let deadline = tokio::time::Instant::now() + WAIT;
    while series(&gw, "ivrgate_timers_run_total{outcome=\"failed\"}").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timer did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = core.load(key.clone()).await.expect("load").expect("stored");
    assert_eq!(
        (after.status.as_str(), after.state),
        ("active", Some(garbage.clone()))
    );
    assert!(receiver
        .next_within(Duration::from_millis(300))
        .await
        .is_none());

    // A licence counter that does not read refuses new interactions rather than counting
    // from zero, and is left as it is.
    let licence = EntityKey::new("acme", "ptk.licence", "Portree");
    transition_one(core.as_ref(), licence.clone(), |_| {
        Change::Write(Write::state(json!({"live": "many"})))
    })
    .await
    .expect("seeded");
    let answer = call(
        &gw,
        "AddInteraction",
        &format!("<data>{T}<Segment>VHT_Test</Segment><Contact>5550009</Contact></data>"),
    )
    .await;
    assert_eq!(code(&answer), 109000, "{answer}");
    let answer = call(
        &gw,
        "GetSegmentState",
        &format!("<data>{T}<Segment>VHT_Test</Segment></data>"),
    )
    .await;
    assert_eq!(code(&answer), 109000, "{answer}");
    assert_eq!(
        state_of(&gw, "ptk.licence", "Portree").await,
        json!({"live": "many"})
    );
    gw.stop().await;
}
