//! Session lifecycle, StartSession ordering, heartbeats, the client limit, strict mode.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{cfg, hb_cfg, online, sim, WAIT};
use ctips_sim::testkit::{CallbackMode, CallbackServer, Client};
use ctips_sim::wire::{self, fields, Fields, V};
use ctips_sim::{Sim, SimConfig};

#[tokio::test]
async fn lifecycle_open_register_online_snapshot_offline_close() {
    let sim = sim().await;
    let cb = CallbackServer::start().await.unwrap();
    let mut c = Client::new(&sim.url(0));
    let r = c.open(&cb.url(), "user", "pass").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.response.as_deref(), Some("success"));
    let sid = r.session_id.clone().unwrap();
    assert_eq!(sim.sessions().len(), 1);
    assert!(!sim.sessions()[0].online);

    for class in [
        "EventCategoryAgent",
        "EventCategoryCall",
        "EventCategoryRoute",
        "EventCategorySystem",
    ] {
        let (r, _) = c
            .send(
                "AddMessageClass",
                fields([("MessageClass", V::Enum(class.into()))]),
            )
            .await
            .unwrap();
        assert_eq!(r.result, Some(0), "{}", r.body);
    }
    // Snapshot before OnLine is refused: the session is not online yet.
    let (r, _) = c
        .send(
            "Snapshot",
            fields([("EntityType", V::Arr(vec![V::Enum("AgentInfo".into())]))]),
        )
        .await
        .unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidRequest"));

    let (r, _) = c.send("OnLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
    assert!(sim.sessions()[0].online);

    // log an agent in so the agent snapshot has an entry
    let (r, login_rid) = c
        .send(
            "LoginAgent",
            fields([
                ("AgentLoginName", V::Str("agent1".into())),
                ("StationId", V::Str("4001".into())),
                ("InitState", V::Enum("Idle".into())),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(r.result, Some(0));
    let ev = cb
        .wait_event(WAIT, "CTIAgentLoginStateChange", |e| {
            e.int("RequestId") == login_rid
        })
        .await
        .unwrap();
    assert_eq!(ev.text("LoginState"), "AgentLoggedIn");
    assert_eq!(ev.text("EventCategory"), "EventCategoryAgent");
    assert_eq!(ev.int("AgentId"), 1001);

    let (r, snap_rid) = c
        .send(
            "Snapshot",
            fields([(
                "EntityType",
                V::Arr(vec![
                    V::Enum("AgentInfo".into()),
                    V::Enum("ServiceInfo".into()),
                ]),
            )]),
        )
        .await
        .unwrap();
    assert_eq!(r.result, Some(0), "{}", r.body);
    let done = cb
        .wait_for(WAIT, |rs| {
            let snaps: Vec<_> = rs
                .iter()
                .filter(|e| {
                    e.event.as_deref() == Some("CTISnapShotUpdate")
                        && e.int("RequestId") == snap_rid
                })
                .cloned()
                .collect();
            (snaps
                .iter()
                .filter(|e| e.fields.get("SnapShotTypeComplete") == Some(&V::Bool(true)))
                .count()
                == 2)
                .then_some(snaps)
        })
        .await
        .unwrap();
    // agents: 1 logged in + terminator; services: 3 + terminator, in that order
    let types: Vec<(String, bool)> = done
        .iter()
        .map(|e| {
            (
                e.text("SnapShotType"),
                e.fields.get("SnapShotTypeComplete") == Some(&V::Bool(true)),
            )
        })
        .collect();
    assert_eq!(
        types,
        vec![
            ("AgentInfo".into(), false),
            ("AgentInfo".into(), true),
            ("ServiceInfo".into(), false),
            ("ServiceInfo".into(), false),
            ("ServiceInfo".into(), false),
            ("ServiceInfo".into(), true),
        ]
    );
    match done[0].fields.get("AgentData") {
        Some(V::Obj(a)) => assert_eq!(wire::get_str(a, "AgentLoginName"), "agent1"),
        other => panic!("AgentData {other:?}"),
    }
    assert!(done.iter().all(|e| e.error.is_none()));

    // OffLine: unsolicited events stop; requests other than OnLine are refused
    let (r, _) = c.send("OffLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
    let before = cb.events().len();
    let call = sim.inbound_call(4, "5551234", "8001", None);
    let delivered = sim
        .wait_for(WAIT, |s| {
            s.model()
                .calls
                .get(&call)
                .filter(|c| c.state == "CallDelivered")
                .map(|_| ())
        })
        .await;
    assert!(delivered.is_some());
    let (r, _) = c
        .send("GetAgentState", fields([("AgentIdx", V::Int(1001))]))
        .await
        .unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidRequest"));
    let (r, _) = c.send("OnLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
    assert_eq!(
        cb.events().len(),
        before,
        "no event was published while offline"
    );

    let (r, _) = c.send("CloseConnection", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
    assert!(sim.sessions().is_empty());
    assert_eq!(sim.disposed()[0].id, sid);
    assert_eq!(sim.disposed()[0].reason, "closed");
    let (r, _) = c.send("OnLine", Fields::new()).await.unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.fault.as_deref(), Some("InvalidSessionId"));

    // the request log holds every request with its operation and server
    let ops: Vec<String> = sim.requests().iter().map(|r| r.op.clone()).collect();
    assert_eq!(ops[0], "OpenConnection");
    assert_eq!(ops.last().map(String::as_str), Some("OnLine"));
    assert!(sim
        .requests()
        .iter()
        .all(|r| r.server == 0 && r.status != 0));
}

#[tokio::test]
async fn start_session_is_called_before_open_connection_is_answered() {
    let sim = sim().await;
    let cb = CallbackServer::start().await.unwrap();
    let mut c = Client::new(&sim.url(1));
    let r = c.open(&cb.url(), "svc-user", "s3cret").await.unwrap();
    let answered = Instant::now();
    let sid = r.session_id.unwrap();
    let got = cb.received();
    assert_eq!(got[0].op, "StartSession");
    assert_eq!(got[0].session, sid);
    assert!(got[0].at.unwrap() < answered);
    assert!(got[0]
        .body
        .contains("<a:UserName>svc-user</a:UserName><a:Password>s3cret</a:Password>"));
    // no heartbeat before OnLine
    assert!(got.iter().all(|r| r.op != "Heartbeat"));

    // a callback URL that fails StartSession: OpenConnection faults, no session is kept
    cb.set_mode(CallbackMode::Fail);
    let mut c2 = Client::new(&sim.url(1));
    let r = c2.open(&cb.url(), "u", "p").await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("RequestFailed"));
    assert_eq!(sim.sessions().len(), 1);
}

#[tokio::test]
async fn wrong_credentials_and_tenant_are_refused() {
    let sim = Sim::start(SimConfig {
        users: vec![("ivr".into(), "pw".into())],
        ..cfg()
    })
    .await
    .unwrap();
    let cb = CallbackServer::start().await.unwrap();
    let mut c = Client::new(&sim.url(0));
    let r = c.open(&cb.url(), "ivr", "wrong").await.unwrap();
    assert_eq!(r.response.as_deref(), Some("logonFailed"));
    assert_eq!(r.session_id, None);
    assert!(
        cb.received().is_empty(),
        "no StartSession for a failed logon"
    );
    c.tenant = 7;
    let r = c.open(&cb.url(), "ivr", "pw").await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidTenantId"));
    c.tenant = 1;
    let r = c.open("not a url", "ivr", "pw").await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidParameter"));
    let r = c.open(&cb.url(), "ivr", "pw").await.unwrap();
    assert!(r.session_id.is_some());
}

#[tokio::test]
async fn heartbeats_start_at_online_and_missed_ones_dispose_the_session() {
    let sim = Sim::start(hb_cfg()).await.unwrap();
    let (c, cb) = online(&sim, 0).await;
    // heartbeats arrive, carry the session id and keep the session
    let hb = cb
        .wait_for(WAIT, |rs| {
            let hbs: Vec<_> = rs.iter().filter(|r| r.op == "Heartbeat").cloned().collect();
            (hbs.len() >= 3).then_some(hbs)
        })
        .await
        .unwrap();
    assert!(hb.iter().all(|h| h.session == c.session_id));
    assert_eq!(sim.sessions().len(), 1);

    // the client stops answering: after exactly 3 failed heartbeats the session is disposed
    cb.set_mode(CallbackMode::Fail);
    let d = sim
        .wait_for(WAIT, |s| s.disposed().first().cloned())
        .await
        .unwrap();
    assert_eq!(d.reason, "heartbeat");
    assert_eq!(d.id, c.session_id);
    let failed: Vec<_> = sim
        .callbacks()
        .into_iter()
        .filter(|r| r.op == "Heartbeat" && !r.ok)
        .collect();
    assert_eq!(failed.len(), 3);
    // and no more heartbeats go out for it
    let n = sim
        .callbacks()
        .iter()
        .filter(|r| r.op == "Heartbeat")
        .count();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        sim.callbacks()
            .iter()
            .filter(|r| r.op == "Heartbeat")
            .count(),
        n
    );
    let mut c = c;
    let (r, _) = c.send("OnLine", Fields::new()).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidSessionId"));
}

#[tokio::test]
async fn one_failed_heartbeat_disposes_when_missed_count_is_one() {
    let sim = Sim::start(SimConfig {
        missed_heartbeats: 1,
        callback_timeout: Duration::from_millis(300),
        ..hb_cfg()
    })
    .await
    .unwrap();
    let (_c, cb) = online(&sim, 0).await;
    cb.wait_for(WAIT, |rs| {
        rs.iter().find(|r| r.op == "Heartbeat").map(|_| ())
    })
    .await
    .unwrap();
    cb.set_mode(CallbackMode::Hang); // a heartbeat that times out fails too
    let d = sim
        .wait_for(WAIT, |s| s.disposed().first().cloned())
        .await
        .unwrap();
    assert_eq!(d.reason, "heartbeat");
    let failed = sim
        .callbacks()
        .into_iter()
        .filter(|r| r.op == "Heartbeat" && !r.ok)
        .count();
    assert_eq!(failed, 1);
}

#[tokio::test]
async fn the_eleventh_client_gets_max_number_client_connections() {
    let sim = sim().await;
    let cb = CallbackServer::start().await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut c = Client::new(&sim.url(0));
        let r = c.open(&cb.url(), "u", "p").await.unwrap();
        assert!(r.session_id.is_some(), "{}", r.body);
        clients.push(c);
    }
    let mut eleventh = Client::new(&sim.url(0));
    let r = eleventh.open(&cb.url(), "u", "p").await.unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.fault.as_deref(), Some("MaxNumberClientConnections"));
    assert!(r
        .body
        .contains("<ErrorCode>MaxNumberClientConnections</ErrorCode>"));
    // the limit is per server
    let mut other = Client::new(&sim.url(1));
    assert!(other
        .open(&cb.url(), "u", "p")
        .await
        .unwrap()
        .session_id
        .is_some());
    // a closed session frees its place
    let (r, _) = clients[0]
        .send("CloseConnection", Fields::new())
        .await
        .unwrap();
    assert_eq!(r.result, Some(0));
    assert!(eleventh
        .open(&cb.url(), "u", "p")
        .await
        .unwrap()
        .session_id
        .is_some());
}

#[tokio::test]
async fn a_session_is_only_known_to_its_own_server() {
    let sim = sim().await;
    let (c, _cb) = online(&sim, 0).await;
    let mut other = Client::new(&sim.url(1));
    other.session_id = c.session_id.clone();
    let (r, _) = other.send("OffLine", Fields::new()).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidSessionId"));
}

fn route_select_body(sid: &str) -> String {
    wire::request_body(
        "RouteSelect",
        &fields([
            ("SessionId", V::Str(sid.into())),
            ("RequestId", V::Int(9)),
            ("TenantId", V::Int(1)),
            ("CallId", V::Int(5551)),
            ("DestinationAddress", V::Str("4".into())),
            ("RouteActionType", V::Enum("RouteToService".into())),
            ("UserData", V::Arr(vec![])),
        ]),
    )
}

const RS_ACTION: &str =
    "http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08/RoutingService/RouteSelect";
const XML: &str = "text/xml; charset=utf-8";

#[tokio::test]
async fn strict_mode_faults_like_wcf() {
    let sim = sim().await;
    let (c, _cb) = online(&sim, 0).await;
    let good = route_select_body(&c.session_id);

    // element order: TenantId after CallId
    let swapped = good.replace(
        "<a:TenantId>1</a:TenantId><a:CallId>5551</a:CallId>",
        "<a:CallId>5551</a:CallId><a:TenantId>1</a:TenantId>",
    );
    assert_ne!(swapped, good);
    let r = c.post_raw(RS_ACTION, XML, swapped.clone()).await.unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(
        r.fault.as_deref(),
        Some("DeserializationFailed"),
        "{}",
        r.body
    );
    assert!(r.body.contains("TenantId"));

    // a required member missing
    let missing = good.replace("<a:RouteActionType>RouteToService</a:RouteActionType>", "");
    let r = c.post_raw(RS_ACTION, XML, missing).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("DeserializationFailed"));
    assert!(r.body.contains("RouteActionType"));

    // members in the wrong namespace (the seed's unqualified style)
    let wrong_ns = good.replace(
        "xmlns:a=\"http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08\"",
        "xmlns:a=\"http://www.aspect.com/unifiedip/edk/ctipsapi/2009/07\"",
    );
    let r = c.post_raw(RS_ACTION, XML, wrong_ns).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("DeserializationFailed"));

    // the seed's name RouteDestination instead of DestinationAddress
    let seed_name = good.replace("DestinationAddress", "RouteDestination");
    let r = c.post_raw(RS_ACTION, XML, seed_name).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("DeserializationFailed"));

    // an unknown enum name
    let bad_enum = good.replace(">RouteToService<", ">ToService<");
    let r = c.post_raw(RS_ACTION, XML, bad_enum).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("DeserializationFailed"));

    // unknown SOAPAction
    let r = c
        .post_raw("urn:RouteSelect", XML, good.clone())
        .await
        .unwrap();
    assert_eq!(r.fault.as_deref(), Some("ActionNotSupported"));

    // SOAP 1.2 content type
    let r = c
        .post_raw(
            RS_ACTION,
            "application/soap+xml; charset=utf-8",
            good.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 415);

    // well-formed and in order: accepted up to the model (the call does not exist)
    let r = c.post_raw(RS_ACTION, XML, good.clone()).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidCallId"));

    // tolerant mode reads the swapped order
    sim.set_strict(false);
    let r = c.post_raw(RS_ACTION, XML, swapped).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidCallId"));

    // every one of them is in the request log, with the fault answered
    let faults: Vec<Option<String>> = sim
        .requests()
        .iter()
        .filter(|r| r.op == "RouteSelect" || r.soap_action == "urn:RouteSelect")
        .map(|r| r.fault.clone())
        .collect();
    assert_eq!(faults.len(), 9);
    assert_eq!(faults[0].as_deref(), Some("DeserializationFailed"));

    // malformed XML and DOCTYPE: 400, never a panic
    let r = c
        .post_raw(RS_ACTION, XML, "<s:Envelope".into())
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = c
        .post_raw(
            RS_ACTION,
            XML,
            "<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>".into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
}

/// WIRE.md marks RequestId required on Snapshot, RouteSelect and every AgentCallService
/// operation: in strict mode each of them without it is a DeserializationFailed fault naming
/// it, and the same request with it is read (whatever the model then says of its values).
#[tokio::test]
async fn strict_mode_faults_every_request_missing_its_request_id() {
    let sim = sim().await;
    let (c, _cb) = online(&sim, 0).await;
    let mut checked = Vec::new();
    for op in wire::spec().ops.values() {
        let takes = op
            .members
            .iter()
            .any(|m| m.name == "RequestId" && m.required);
        if !op.action.contains("/ctipsapi/") || !takes {
            continue;
        }
        let args = fields([
            ("SessionId", V::Str(c.session_id.clone())),
            ("RequestId", V::Int(4242)),
            ("TenantId", V::Int(1)),
        ]);
        let with = wire::request_body(&op.name, &args);
        let r = c.post_raw(&op.action, XML, with.clone()).await.unwrap();
        assert_ne!(
            r.fault.as_deref(),
            Some("DeserializationFailed"),
            "{} with its RequestId: {}",
            op.name,
            r.body
        );
        let without = with.replace("<a:RequestId>4242</a:RequestId>", "");
        assert_ne!(without, with);
        let r = c.post_raw(&op.action, XML, without).await.unwrap();
        assert_eq!(r.status, 500, "{}: {}", op.name, r.body);
        assert_eq!(
            r.fault.as_deref(),
            Some("DeserializationFailed"),
            "{} without RequestId: {}",
            op.name,
            r.body
        );
        assert!(r.body.contains("RequestId"), "{}: {}", op.name, r.body);
        checked.push(op.name.clone());
    }
    // Snapshot, RouteSelect and the 17 AgentCallService operations.
    assert_eq!(checked.len(), 19, "{checked:?}");
}
