//! Agent and call requests change the model and publish their events.
#![allow(clippy::unwrap_used)]

mod common;

use common::{online, sim, WAIT};
use ctips_sim::testkit::{CallbackServer, Client};
use ctips_sim::wire::{fields, Fields, V};

fn agent(idx: i64, extra: Fields) -> Fields {
    let mut f = fields([("AgentIdx", V::Int(idx))]);
    f.extend(extra);
    f
}

async fn login(c: &mut Client, cb: &CallbackServer, name: &str, state: &str) {
    let (r, rid) = c
        .send(
            "LoginAgent",
            fields([
                ("AgentLoginName", V::Str(name.into())),
                ("StationId", V::Str("40".into())),
                ("InitState", V::Enum(state.into())),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(r.result, Some(0));
    cb.wait_event(WAIT, "CTIAgentStateChange", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
}

#[tokio::test]
async fn login_state_logout_and_their_failures() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    login(&mut c, &cb, "agent1", "NotReady").await;
    assert!(sim.model().agents[&1001].logged_in);
    // twice: AgentLoginRequestFailed(AgentAlreadyLoggedIn); unknown name: InvalidAgentName
    for (name, ty) in [
        ("agent1", "AgentAlreadyLoggedIn"),
        ("ghost", "InvalidAgentName"),
    ] {
        let (_, rid) = c
            .send(
                "LoginAgent",
                fields([
                    ("AgentLoginName", V::Str(name.into())),
                    ("StationId", V::Str("1".into())),
                    ("InitState", V::Enum("Idle".into())),
                ]),
            )
            .await
            .unwrap();
        let f = cb
            .wait_event(WAIT, "CTIAgentLoginRequestFailed", |e| {
                e.int("RequestId") == rid
            })
            .await
            .unwrap();
        assert_eq!(f.text("FailureType"), ty);
    }
    let (_, rid) = c
        .send(
            "SetAgentState",
            agent(1001, fields([("NewState", V::Enum("Idle".into()))])),
        )
        .await
        .unwrap();
    let st = cb
        .wait_event(WAIT, "CTIAgentStateChange", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(st.text("AgentState"), "Idle");
    assert_eq!(
        st.fields.get("ServiceIds"),
        Some(&V::Arr(vec![V::Int(3), V::Int(4)]))
    );
    let (_, rid) = c
        .send("GetAgentState", agent(1001, Fields::new()))
        .await
        .unwrap();
    assert_eq!(
        cb.wait_event(WAIT, "CTIAgentStateChange", |e| e.int("RequestId") == rid)
            .await
            .unwrap()
            .text("AgentState"),
        "Idle"
    );
    // a state change for an agent not logged in
    let (_, rid) = c
        .send(
            "SetAgentState",
            agent(1002, fields([("NewState", V::Enum("Idle".into()))])),
        )
        .await
        .unwrap();
    let f = cb
        .wait_event(WAIT, "CTIAgentRequestFailed", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(f.text("FailureType"), "InvalidStateForRequest");
    // unknown AgentIdx is a fault
    let (r, _) = c
        .send("GetAgentState", agent(4242, Fields::new()))
        .await
        .unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidParameter"));
    let (_, rid) = c
        .send(
            "LogoutAgent",
            agent(1001, fields([("ReasonCode", V::Int(3))])),
        )
        .await
        .unwrap();
    let out = cb
        .wait_event(WAIT, "CTIAgentLoginStateChange", |e| {
            e.int("RequestId") == rid
        })
        .await
        .unwrap();
    assert_eq!(out.text("LoginState"), "AgentLoggedOut");
    // panic logout of everyone
    login(&mut c, &cb, "agent2", "Idle").await;
    login(&mut c, &cb, "agent3", "Idle").await;
    let (_, rid) = c
        .send(
            "PanicLogoutAgent",
            agent(
                0,
                fields([
                    ("AgentLoginNameList", V::Arr(vec![])),
                    ("LogoutAllAgents", V::Bool(true)),
                ]),
            ),
        )
        .await
        .unwrap();
    let outs = cb
        .wait_for(WAIT, |rs| {
            let n = rs
                .iter()
                .filter(|e| {
                    e.event.as_deref() == Some("CTIAgentLoginStateChange")
                        && e.int("RequestId") == rid
                })
                .count();
            (n == 2).then_some(n)
        })
        .await;
    assert_eq!(outs, Some(2));
    assert!(sim.model().agents.values().all(|a| !a.logged_in));
}

#[tokio::test]
async fn make_hold_consult_conference_transfer_clear_and_dispose() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    login(&mut c, &cb, "agent1", "Idle").await;
    let (r, rid) = c
        .send(
            "MakeCall",
            agent(
                1001,
                fields([
                    ("CallId", V::Int(-1)),
                    ("ServiceId", V::Int(4)),
                    ("DestinationType", V::Enum("External".into())),
                    ("DestinationAddress", V::Str("0015551234".into())),
                    ("WrapState", V::Bool(true)),
                ]),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.result, Some(0));
    let orig = cb
        .wait_event(WAIT, "CTICallOriginated", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(orig.text("Destination"), "0015551234");
    let call = orig.int("CallId");
    let on = |op: &'static str, extra: Fields| {
        let mut f = agent(1001, fields([("CallId", V::Int(call))]));
        f.extend(extra);
        (op, f)
    };
    // hold and retrieve; retrieving twice fails
    for (op, ev) in [
        ("HoldCall", "CTICallHeld"),
        ("RetrieveCall", "CTICallRetrieved"),
    ] {
        let (op, f) = on(op, Fields::new());
        let (_, rid) = c.send(op, f).await.unwrap();
        cb.wait_event(WAIT, ev, |e| e.int("RequestId") == rid)
            .await
            .unwrap();
    }
    let (op, f) = on("RetrieveCall", Fields::new());
    let (_, rid) = c.send(op, f).await.unwrap();
    cb.wait_event(WAIT, "CTICallRequestFailed", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    // call data and DTMF
    let (op, f) = on(
        "SetCallData",
        fields([("UserData", V::Arr(vec![V::Str("acct=42".into())]))]),
    );
    let (_, rid) = c.send(op, f).await.unwrap();
    let upd = cb
        .wait_event(WAIT, "CTICallDataUpdate", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(upd.text("UpdateType"), "SetCallDataSucceeded");
    let (op, f) = on(
        "SetCallData",
        fields([(
            "UserData",
            V::Arr((0..21).map(|i| V::Str(i.to_string())).collect()),
        )]),
    );
    assert_eq!(
        c.send(op, f).await.unwrap().0.fault.as_deref(),
        Some("InvalidParameter")
    );
    let (op, f) = on("GetCallData", Fields::new());
    let (_, rid) = c.send(op, f).await.unwrap();
    let got = cb
        .wait_event(WAIT, "CTICallDataUpdate", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(got.fields.get("CallData").map(|d| d.arr().len()), Some(1));
    let (op, f) = on(
        "SendDTMFDigits",
        fields([("DtmfDigits", V::Str("12#".into()))]),
    );
    let (_, rid) = c.send(op, f).await.unwrap();
    assert_eq!(
        cb.wait_event(WAIT, "CTIDigitsDialed", |e| e.int("RequestId") == rid)
            .await
            .unwrap()
            .text("DigitString"),
        "12#"
    );
    // consultation then conference
    let (op, f) = on(
        "ConsultationCall",
        fields([
            ("DestinationType", V::Enum("Agent".into())),
            ("DestinationAddress", V::Str("agent2".into())),
            ("ServiceId", V::Int(4)),
            ("UserData", V::Arr(vec![])),
        ]),
    );
    let (_, rid) = c.send(op, f).await.unwrap();
    let cons = cb
        .wait_event(WAIT, "CTICallConsultation", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    let consult = cons.int("ConsultationCallId");
    assert_ne!(consult, call);
    let (op, f) = on(
        "ConferenceCall",
        fields([("ConsultationCallId", V::Int(consult))]),
    );
    let (_, rid) = c.send(op, f).await.unwrap();
    let conf = cb
        .wait_event(WAIT, "CTICallConferenced", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(conf.int("ConsultedCallId"), consult);
    // blind transfer: the agent goes to wrap
    let (op, f) = on(
        "TransferCall",
        fields([
            ("TransferType", V::Enum("Blind".into())),
            ("DestinationType", V::Enum("External".into())),
            ("DestinationAddress", V::Str("0015550000".into())),
            ("ConsultationCallId", V::Int(0)),
            ("UserData", V::Arr(vec![])),
            ("ServiceId", V::Int(4)),
        ]),
    );
    let (_, rid) = c.send(op, f).await.unwrap();
    cb.wait_event(WAIT, "CTICallTransferred", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    cb.wait_event(WAIT, "CTIAgentStateChange", |e| {
        e.text("AgentState") == "Wrap"
    })
    .await
    .unwrap();
    // clear the transferred call, then the disposition completes it and the agent is idle
    let (op, f) = on("ClearCall", Fields::new());
    let (_, rid) = c.send(op, f).await.unwrap();
    let cl = cb
        .wait_event(WAIT, "CTICallCleared", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(cl.text("ClearingPartyType"), "NearEnd");
    cb.wait_event(WAIT, "CTICallEnd", |e| e.int("CallId") == call)
        .await
        .unwrap();
    let (op, f) = on(
        "SetDisposition",
        fields([
            ("DispositionId", V::Int(7)),
            ("SummaryDispositionSuccessful", V::Bool(true)),
            ("WrapNotRequired", V::Bool(false)),
            ("UserData", V::Arr(vec![])),
        ]),
    );
    let (_, rid) = c.send(op, f).await.unwrap();
    cb.wait_event(WAIT, "CTICallCompleted", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(sim.model().agents[&1001].state, "Idle");
    // an unknown call is a fault
    let (r, _) = c
        .send("ClearCall", agent(1001, fields([("CallId", V::Int(1))])))
        .await
        .unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidCallId"));
    assert!(cb.events().iter().all(|e| e.error.is_none()));
}

#[tokio::test]
async fn an_offered_call_is_accepted_or_rejected() {
    let sim = sim().await;
    let (mut c, cb) = online(&sim, 0).await;
    login(&mut c, &cb, "agent1", "Idle").await;
    let sel = |call: i64| {
        fields([
            ("CallId", V::Int(call)),
            ("DestinationAddress", V::Str("agent1".into())),
            ("RouteActionType", V::Enum("RouteToAgent".into())),
            ("UserData", V::Arr(vec![])),
        ])
    };
    let call = sim.inbound_call(3, "1", "2", Some(60));
    c.send("RouteSelect", sel(call)).await.unwrap();
    cb.wait_event(WAIT, "CTICallConnected", |e| e.int("CallId") == call)
        .await
        .unwrap();
    let (_, rid) = c
        .send(
            "AcceptCall",
            agent(
                1001,
                fields([
                    ("CallId", V::Int(call)),
                    ("AcceptCall", V::Bool(false)),
                    ("RejectReasonCode", V::Int(1)),
                ]),
            ),
        )
        .await
        .unwrap();
    cb.wait_event(WAIT, "CTIAgentStateChange", |e| {
        e.int("RequestId") == rid && e.text("AgentState") == "Idle"
    })
    .await
    .unwrap();
    let call2 = sim.inbound_call(3, "1", "2", Some(60));
    c.send("RouteSelect", sel(call2)).await.unwrap();
    cb.wait_event(WAIT, "CTICallConnected", |e| e.int("CallId") == call2)
        .await
        .unwrap();
    let (_, rid) = c
        .send(
            "AcceptCall",
            agent(
                1001,
                fields([
                    ("CallId", V::Int(call2)),
                    ("AcceptCall", V::Bool(true)),
                    ("RejectReasonCode", V::Int(0)),
                ]),
            ),
        )
        .await
        .unwrap();
    cb.wait_event(WAIT, "CTICallEstablished", |e| e.int("RequestId") == rid)
        .await
        .unwrap();
    assert_eq!(sim.model().agents[&1001].state, "Active");
    // the caller hangs up: cleared by the far end, the agent wraps
    assert!(sim.hangup(call2));
    let cl = cb
        .wait_event(WAIT, "CTICallCleared", |e| e.int("CallId") == call2)
        .await
        .unwrap();
    assert_eq!(cl.text("ClearingPartyType"), "FarEnd");
    assert_eq!(sim.model().agents[&1001].state, "Wrap");
}
