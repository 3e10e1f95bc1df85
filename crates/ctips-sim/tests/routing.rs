//! Route requests: timeouts and default routing, RouteSelect outcomes, event order, filters.
#![allow(clippy::unwrap_used)]

mod common;

use common::{online, sim, WAIT};
use ctips_sim::testkit::CallbackMode;
use ctips_sim::wire::{fields, V};

fn select(call: i64, dest: &str, ty: &str) -> ctips_sim::wire::Fields {
    fields([
        ("CallId", V::Int(call)),
        ("DestinationAddress", V::Str(dest.into())),
        ("RouteActionType", V::Enum(ty.into())),
        ("UserData", V::Arr(vec![V::Str("acct=42".into())])),
    ])
}

#[tokio::test]
async fn route_timeout_applies_default_routing_with_request_id_zero() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    let call = sim.inbound_call_with_data(
        3,
        "5551234",
        "8001",
        Some(1),
        vec![("lang".into(), "fr".into())],
    );
    let rr = cb
        .wait_event(WAIT, "CTIRouteRequest", |e| e.int("CallId") == call)
        .await
        .unwrap();
    assert_eq!(rr.int("RouteTimeout"), 1);
    assert_eq!(rr.int("RequestId"), 0);
    assert_eq!(rr.text("EventType"), "RouteRequest");
    assert_eq!(rr.int("ServiceId"), 3);
    match rr.fields.get("CallInfo") {
        Some(V::Obj(ci)) => {
            assert_eq!(ctips_sim::wire::get_str(ci, "ANI"), "5551234");
            assert_eq!(ci.get("CallData").map(|d| d.arr().len()), Some(1));
        }
        other => panic!("CallInfo {other:?}"),
    }
    let used = cb
        .wait_event(WAIT, "CTIRouteUsed", |e| e.int("CallId") == call)
        .await
        .unwrap();
    assert_eq!(used.int("RequestId"), 0);
    assert_eq!(used.text("RouteStatus"), "RouteDefaultUsed");
    assert_eq!(used.text("RouteType"), "RouteToDefault");
    // the call was then delivered to its service
    let delivered = cb
        .wait_event(WAIT, "CTICallDelivered", |e| e.int("CallId") == call)
        .await
        .unwrap();
    assert_eq!(delivered.int("ServiceId"), 3);

    // a RouteSelect after the timeout is rejected
    let (r, rid) = c
        .send("RouteSelect", select(call, "4", "RouteToService"))
        .await
        .unwrap();
    assert_eq!(r.result, Some(0));
    let rej = cb
        .wait_event(WAIT, "CTIRouteRejected", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(rej.text("RouteRejectReason"), "RouteTimeout");
    assert_eq!(rej.text("EventType"), "RouteReject");

    // order of the call's events as published
    let kinds: Vec<String> = cb
        .events()
        .iter()
        .filter(|e| e.int("CallId") == call)
        .filter_map(|e| e.event.clone())
        .collect();
    assert_eq!(
        kinds[..5],
        [
            "CTICallStarted",
            "CTICallOffered",
            "CTIRouteRequest",
            "CTIRouteUsed",
            "CTICallDelivered"
        ]
    );
    assert!(
        cb.events().iter().all(|e| e.error.is_none()),
        "every event reads strictly"
    );
}

#[tokio::test]
async fn a_second_route_select_is_rejected_as_already_routed() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    let call = sim.inbound_call(3, "5551234", "8001", Some(60));
    cb.wait_event(WAIT, "CTIRouteRequest", |e| e.int("CallId") == call)
        .await
        .unwrap();
    let (r, rid1) = c
        .send("RouteSelect", select(call, "4", "RouteToService"))
        .await
        .unwrap();
    assert_eq!(r.result, Some(0), "{}", r.body);
    let used = cb
        .wait_event(WAIT, "CTIRouteUsed", |e| e.int("CallId") == call)
        .await
        .unwrap();
    assert_eq!(used.int("RequestId"), rid1);
    assert_eq!(used.text("RouteStatus"), "RouteSuccess");
    assert_eq!(used.text("RouteType"), "RouteToService");
    assert_eq!(used.text("RouteDestination"), "4");
    let (r, rid2) = c
        .send("RouteSelect", select(call, "4", "RouteToService"))
        .await
        .unwrap();
    assert_eq!(r.result, Some(0));
    let rej = cb
        .wait_event(WAIT, "CTIRouteRejected", |e| e.int("RequestId") == rid2)
        .await
        .unwrap();
    assert_eq!(rej.text("RouteRejectReason"), "CallAlreadyRouted");
    assert_eq!(rej.int("CallId"), call);
    // UserData became call data
    let data = &sim.model().calls[&call].data;
    assert_eq!(data[0], ("UserData1".to_string(), "acct=42".to_string()));
}

#[tokio::test]
async fn invalid_destinations_raise_route_request_failed() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    for (dest, ty, failure) in [
        (
            "99",
            "RouteToService",
            "DestinationInvalidServiceIdentifier",
        ),
        ("nobody", "RouteToAgent", "DestinationInvalidNumber"),
        ("agent2", "RouteToAgent", "DestinationAgentNotAvailable"),
        ("call me", "RouteToExternal", "DestinationInvalidNumber"),
    ] {
        let call = sim.inbound_call(3, "5551234", "8001", Some(60));
        cb.wait_event(WAIT, "CTIRouteRequest", |e| e.int("CallId") == call)
            .await
            .unwrap();
        let (r, rid) = c.send("RouteSelect", select(call, dest, ty)).await.unwrap();
        assert_eq!(r.result, Some(0));
        let f = cb
            .wait_event(WAIT, "CTIRouteRequestFailed", |e| e.int("RequestId") == rid)
            .await
            .unwrap();
        assert_eq!(f.text("FailureType"), failure, "{dest} {ty}");
        assert_eq!(f.int("CallId"), call);
    }
    // an unknown call and an unsupported route type are faults
    let (r, _) = c
        .send("RouteSelect", select(4242, "4", "RouteToService"))
        .await
        .unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidCallId"));
    let call = sim.inbound_call(3, "5551234", "8001", Some(60));
    let (r, _) = c
        .send("RouteSelect", select(call, "4", "Voicemail"))
        .await
        .unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidRouteType"));
}

#[tokio::test]
async fn route_to_an_idle_agent_connects_the_call() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    let (_, rid) = c
        .send(
            "LoginAgent",
            fields([
                ("AgentLoginName", V::Str("agent2".into())),
                ("StationId", V::Str("4002".into())),
                ("InitState", V::Enum("Idle".into())),
            ]),
        )
        .await
        .unwrap();
    cb.wait_event(WAIT, "CTIAgentStateChange", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    let call = sim.inbound_call(3, "5551234", "8001", Some(60));
    cb.wait_event(WAIT, "CTIRouteRequest", |e| e.int("CallId") == call)
        .await
        .unwrap();
    let (_, rid) = c
        .send("RouteSelect", select(call, "agent2", "RouteToAgent"))
        .await
        .unwrap();
    let used = cb
        .wait_event(WAIT, "CTIRouteUsed", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(used.text("RouteStatus"), "RouteSuccess");
    let conn = cb
        .wait_event(WAIT, "CTICallConnected", |e| e.int("CallId") == call)
        .await
        .unwrap();
    assert_eq!(conn.int("AgentId"), 1002);
    let st = cb
        .wait_event(WAIT, "CTIAgentStateChange", |e| {
            e.text("AgentState") == "PendingActive"
        })
        .await
        .unwrap();
    assert_eq!(st.int("CallId"), call);
}

#[tokio::test]
async fn categories_and_filters_decide_who_gets_an_event() {
    let sim = sim().await;
    let (mut route_only, cb_route) = online(&sim, 0).await;
    let (mut filtered, cb_filtered) = online(&sim, 1).await;
    // first client: only the Route category
    for class in [
        "EventCategoryAgent",
        "EventCategoryCall",
        "EventCategorySystem",
    ] {
        route_only
            .send(
                "DeleteMessageClass",
                fields([("MessageClass", V::Enum(class.into()))]),
            )
            .await
            .unwrap();
    }
    // second client: only service 4
    let (r, _) = filtered
        .send(
            "AddFilter",
            fields([
                ("FieldType", V::Enum("FT_SERVICE_ID".into())),
                ("FieldValue", V::Str("4".into())),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(r.result, Some(0));
    let on3 = sim.inbound_call(3, "1", "2", Some(60));
    let on4 = sim.inbound_call(4, "1", "2", Some(60));
    cb_route
        .wait_event(WAIT, "CTIRouteRequest", |e| e.int("CallId") == on3)
        .await
        .unwrap();
    cb_filtered
        .wait_event(WAIT, "CTICallDelivered", |e| e.int("CallId") == on4)
        .await
        .unwrap();
    // the sim has published everything for both calls by now (it publishes in order, and
    // the filtered client's last event for call 4 came after every event for call 3)
    assert!(cb_route
        .events()
        .iter()
        .all(|e| e.text("EventCategory") == "EventCategoryRoute"));
    assert!(cb_filtered.events().iter().all(|e| e.int("ServiceId") == 4));
    assert!(cb_filtered.events().iter().all(|e| e.int("CallId") != on3));
}

#[tokio::test]
async fn a_failed_event_is_dropped_and_never_replayed() {
    let sim = sim().await;
    let (_c, cb) = online(&sim, 0).await;
    cb.set_mode(CallbackMode::Fail);
    let lost = sim.inbound_call(4, "1", "2", None);
    sim.wait_for(WAIT, |s| {
        (s.callbacks()
            .iter()
            .filter(|r| r.call_id == lost && !r.ok)
            .count()
            == 3)
            .then_some(())
    })
    .await
    .unwrap();
    cb.set_mode(CallbackMode::Ok);
    let kept = sim.inbound_call(4, "1", "2", None);
    cb.wait_event(WAIT, "CTICallDelivered", |e| e.int("CallId") == kept)
        .await
        .unwrap();
    let ok_events: Vec<i64> = cb
        .events()
        .iter()
        .filter(|e| e.answered == CallbackMode::Ok)
        .map(|e| e.int("CallId"))
        .collect();
    assert!(
        !ok_events.contains(&lost),
        "dropped events are not replayed"
    );
    assert_eq!(ok_events, vec![kept, kept, kept]);
}

#[tokio::test]
async fn a_repeated_route_request_is_the_same_call_and_latencies_are_measured() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    let call = sim.inbound_call(3, "5551234", "8001", Some(60));
    let first = cb
        .wait_event(WAIT, "CTIRouteRequest", |e| e.int("CallId") == call)
        .await
        .unwrap();
    assert!(sim.repeat_route_request(call));
    let both = cb
        .wait_for(WAIT, |rs| {
            let v: Vec<_> = rs
                .iter()
                .filter(|e| e.event.as_deref() == Some("CTIRouteRequest"))
                .cloned()
                .collect();
            (v.len() == 2).then_some(v)
        })
        .await
        .unwrap();
    assert_eq!(both[1].int("CallId"), call);
    assert_eq!(both[1].int("CallSequenceId"), first.int("CallSequenceId"));
    assert_eq!(both[1].int("RouteTimeout"), 60);
    let (_, rid) = c
        .send("RouteSelect", select(call, "4", "RouteToService"))
        .await
        .unwrap();
    cb.wait_event(WAIT, "CTIRouteUsed", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    // routed: no more repeats
    assert!(!sim.repeat_route_request(call));
    assert!(!sim.repeat_route_request(999_999));
    let l = sim.route_latencies();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].0, call);
}
