//! The independent checks: the XSDs written from WIRE.md (lxml, tests/py/ctips_validate.py)
//! accept the simulator's traffic and catch disorder; zeep (tests/py/ctips_publish.py, from the
//! callback WSDL written from WIRE.md) publishes events the strict reader accepts.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{online, sim, WAIT};
use ctips_sim::testkit::CallbackServer;
use ctips_sim::wire::{fields, V};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ctips-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn python(args: Vec<String>) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&args)
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn validate(files: &[PathBuf]) -> (i32, String) {
    let mut args = vec![repo()
        .join("tests/py/ctips_validate.py")
        .display()
        .to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    python(args).await
}

#[tokio::test]
async fn the_xsds_accept_the_sims_traffic_and_catch_disorder() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    let s = |v: &str| V::Str(v.into());
    let e = |v: &str| V::Enum(v.into());
    c.send(
        "AddFilter",
        fields([("FieldType", e("FT_SWITCH_ID")), ("FieldValue", s("1"))]),
    )
    .await
    .unwrap();
    c.send(
        "LoginAgent",
        fields([
            ("AgentLoginName", s("agent1")),
            ("StationId", s("4001")),
            ("InitState", e("Idle")),
            ("MultiLine", V::Int(1)),
        ]),
    )
    .await
    .unwrap();
    c.send(
        "SetAgentState",
        fields([("AgentIdx", V::Int(1001)), ("NewState", e("NotReady"))]),
    )
    .await
    .unwrap();
    let (r, rid) = c
        .send(
            "MakeCall",
            fields([
                ("AgentIdx", V::Int(1001)),
                ("CallId", V::Int(-1)),
                ("ServiceId", V::Int(4)),
                ("DestinationType", e("External")),
                ("DestinationAddress", s("0015551234")),
                ("WrapState", V::Bool(true)),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(r.result, Some(0), "{}", r.body);
    let est = cb
        .wait_event(WAIT, "CTICallEstablished", |ev| ev.int("RequestId") == rid)
        .await
        .unwrap();
    let out_call = est.int("CallId");
    c.send(
        "SetCallData",
        fields([
            ("AgentIdx", V::Int(1001)),
            ("CallId", V::Int(out_call)),
            ("UserData", V::Arr(vec![s("a=1"), s("b=2")])),
        ]),
    )
    .await
    .unwrap();
    c.send(
        "SendDTMFDigits",
        fields([
            ("AgentIdx", V::Int(1001)),
            ("CallId", V::Int(out_call)),
            ("DtmfDigits", s("12#")),
        ]),
    )
    .await
    .unwrap();
    c.send(
        "HoldCall",
        fields([("AgentIdx", V::Int(1001)), ("CallId", V::Int(out_call))]),
    )
    .await
    .unwrap();
    c.send(
        "RetrieveCall",
        fields([("AgentIdx", V::Int(1001)), ("CallId", V::Int(out_call))]),
    )
    .await
    .unwrap();
    c.send(
        "ClearCall",
        fields([("AgentIdx", V::Int(1001)), ("CallId", V::Int(out_call))]),
    )
    .await
    .unwrap();
    let call = sim.inbound_call_with_data(
        3,
        "5551234",
        "8001",
        Some(60),
        vec![("lang".into(), "fr & <en>".into())],
    );
    cb.wait_event(WAIT, "CTIRouteRequest", |ev| ev.int("CallId") == call)
        .await
        .unwrap();
    c.send(
        "RouteSelect",
        fields([
            ("CallId", V::Int(call)),
            ("DestinationAddress", s("4")),
            ("RouteActionType", e("RouteToService")),
            ("UserData", V::Arr(vec![s("acct=42")])),
        ]),
    )
    .await
    .unwrap();
    let (_, snap) = c
        .send(
            "Snapshot",
            fields([(
                "EntityType",
                V::Arr(vec![e("AgentInfo"), e("CallInfo"), e("ServiceInfo")]),
            )]),
        )
        .await
        .unwrap();
    cb.wait_for(WAIT, |rs| {
        (rs.iter()
            .filter(|r| {
                r.int("RequestId") == snap
                    && r.fields.get("SnapShotTypeComplete") == Some(&V::Bool(true))
            })
            .count()
            == 3)
            .then_some(())
    })
    .await
    .unwrap();
    sim.inject_link_status(None, "Gateway", "Up");
    cb.wait_event(WAIT, "CTILinkStatus", |_| true)
        .await
        .unwrap();

    // every request received and every callback made, one file each
    let dir = scratch("validate");
    let mut files = Vec::new();
    let mut event_kinds = std::collections::BTreeSet::new();
    for r in sim.requests() {
        let p = dir.join(format!("req-{:03}-{}.xml", r.seq, r.op));
        std::fs::write(&p, &r.body).unwrap();
        files.push(p);
    }
    for cbk in sim.callbacks() {
        let p = dir.join(format!(
            "cb-{:03}-{}.xml",
            cbk.seq,
            cbk.event.clone().unwrap_or(cbk.op.clone())
        ));
        std::fs::write(&p, &cbk.body).unwrap();
        if let Some(k) = cbk.event {
            event_kinds.insert(k);
        }
        files.push(p);
    }
    assert!(event_kinds.len() >= 15, "{event_kinds:?}");
    let (code, out) = validate(&files).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("OK ")).count(),
        files.len(),
        "{out}"
    );

    // a request with two members swapped, an event with two members swapped, a seed name
    let rs = sim
        .requests()
        .into_iter()
        .find(|r| r.op == "RouteSelect")
        .unwrap();
    let swapped = rs
        .body
        .replacen("<a:TenantId>1</a:TenantId>", "", 1)
        .replacen(
            "<a:DestinationAddress>",
            "<a:TenantId>1</a:TenantId><a:DestinationAddress>",
            1,
        );
    let bad_req = dir.join("bad-request.xml");
    std::fs::write(&bad_req, swapped).unwrap();
    let ev = sim
        .callbacks()
        .into_iter()
        .find(|c| c.event.as_deref() == Some("CTIRouteUsed"))
        .unwrap();
    let ev_bad = ev.body.replacen(
        "<a:SiteId>1</a:SiteId><a:TenantId>1</a:TenantId>",
        "<a:TenantId>1</a:TenantId><a:SiteId>1</a:SiteId>",
        1,
    );
    assert_ne!(ev_bad, ev.body);
    let bad_ev = dir.join("bad-event.xml");
    std::fs::write(&bad_ev, ev_bad).unwrap();
    let seed_name = dir.join("seed-name.xml");
    std::fs::write(
        &seed_name,
        rs.body.replace("DestinationAddress", "RouteDestination"),
    )
    .unwrap();
    for bad in [&bad_req, &bad_ev, &seed_name] {
        let (code, out) = validate(&[files[0].clone(), bad.clone()]).await;
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("INVALID"), "{out}");
        assert!(out.contains("OK "), "the good file still passes: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn zeep_publishes_events_that_read_strictly() {
    let cb = CallbackServer::start().await.unwrap();
    let dir = scratch("zeep");
    let events = serde_json::json!([
        {"op": "StartSession", "sessionId": "s-1", "userName": "ivr", "password": "pw"},
        {"event": "CTIRouteRequest", "fields": {"TenantId": 1, "ServiceId": 3, "CallId": 5551, "RouteTimeout": 10,
            "MediaType": "VoiceSip", "CallSequenceId": 900000001,
            "CallInfo": {"ANI": "5551234", "DNIS": "8001", "CallData": [{"key": "lang", "value": "fr"}]}}},
        {"event": "CTIAgentLoginStateChange", "fields": {"AgentId": 1001, "AgentLoginName": "agent1", "LoginState": "AgentLoggedIn",
            "AgentCapabilities": ["StandardAgent"], "ServiceState": [{"ServiceId": 3, "ServiceState": "Active"}]}},
        {"event": "CTISnapShotUpdate", "fields": {"RequestId": 7, "SnapShotType": "AgentInfo",
            "AgentData": {"AgentId": 1001, "AgentLoginName": "agent1", "AgentState": "Idle"}, "SnapShotTypeComplete": false}},
        {"event": "CTIRouteRejected", "fields": {"CallId": 5551, "RouteRejectReason": "CallAlreadyRouted"}},
        {"event": "CTIServiceStateChange", "fields": {"ServiceId": 3, "ServiceState": "Pause", "AgentIdList": [1001, 1002]}},
        {"op": "Heartbeat", "sessionId": "s-1"}
    ]);
    let path = dir.join("events.json");
    std::fs::write(&path, events.to_string()).unwrap();
    let (code, out) = python(vec![
        repo()
            .join("tests/py/ctips_publish.py")
            .display()
            .to_string(),
        cb.url(),
        path.display().to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let got = cb.received();
    assert_eq!(got.len(), 7, "{out}");
    assert_eq!(got[0].op, "StartSession");
    assert_eq!(got[0].session, "s-1");
    assert_eq!(got[6].op, "Heartbeat");
    for r in &got {
        assert!(r.error.is_none(), "{:?} in {}", r.error, r.body);
    }
    let rr = &got[1];
    assert_eq!(rr.event.as_deref(), Some("CTIRouteRequest"));
    assert_eq!(rr.text("EventCategory"), "EventCategoryRoute");
    assert_eq!(rr.text("EventType"), "RouteRequest");
    assert_eq!(rr.int("CallId"), 5551);
    assert_eq!(rr.int("CallSequenceId"), 900000001);
    match rr.fields.get("CallInfo") {
        Some(V::Obj(ci)) => {
            let data = ci.get("CallData").unwrap().arr();
            match &data[0] {
                V::Obj(item) => assert_eq!(ctips_sim::wire::get_str(item, "value"), "fr"),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("CallInfo {other:?}"),
    }
    assert_eq!(got[2].text("EventCategory"), "EventCategoryAgent");
    assert_eq!(
        got[2]
            .fields
            .get("AgentCapabilities")
            .map(|v| v.arr().len()),
        Some(1)
    );
    assert_eq!(got[3].int("RequestId"), 7);
    assert_eq!(got[4].text("EventType"), "RouteReject");
    assert_eq!(
        got[5].fields.get("AgentIdList"),
        Some(&V::Arr(vec![V::Int(1001), V::Int(1002)]))
    );
    // the events zeep wrote validate against the XSDs too
    let files: Vec<PathBuf> = got
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = dir.join(format!("zeep-{i}.xml"));
            std::fs::write(&p, &r.body).unwrap();
            p
        })
        .collect();
    let (code, out) = validate(&files).await;
    assert_eq!(code, 0, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_committed_xsds_are_those_gen_xsd_writes() {
    let out = Command::new("python3")
        .arg(repo().join("tests/ctips/gen_xsd.py"))
        .arg("--check")
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
