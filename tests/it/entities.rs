//! The entity API the core offers stateful adapters: atomic multi-entity transitions with
//! per-entity sequence numbers, aliases with lapses, recomputation on conflicts, waiting for
//! a change (and being answered at once on shutdown), decisions sharing a call-like entity,
//! and the command API's authentication and error shape.

use std::time::Duration;

use ivrgate_adapter::{
    transition_one, AliasChange, CallEffect, CallRef, Change, DecisionRequest, EntityEvent,
    EntityKey, EventSubmission, Gateway as _, Recorded, TimerChange, Transitioned, Waited, Write,
};
use serde_json::{json, Map, Value};

use crate::support::{client, Backend, Gateway, Receiver, WAIT};

fn key(kind: &str, id: &str) -> EntityKey {
    EntityKey::new("acme", kind, id)
}

fn counter(e: Option<&ivrgate_adapter::Entity>) -> i64 {
    e.and_then(|e| e.state.as_ref())
        .and_then(|s| s.get("n"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

on_both_backends!(current: transition_commits_state_events_and_aliases_together);

async fn transition_commits_state_events_and_aliases_together(backend: Backend) {
    let receiver = Receiver::start().await;
    let Some(gw) = Gateway::start_on(backend, &receiver.url("/hook"), "").await else {
        return;
    };
    let core = gw.handle.core.clone();
    let k = key("voicenter.test", "E1");
    let done = transition_one(core.as_ref(), k.clone(), |e| {
        assert!(e.is_none(), "a new entity is read as absent");
        Change::Write(
            Write::state(json!({"phase": "created"}))
                .event(EntityEvent::new("test.created"))
                .event(EntityEvent::new("test.noted"))
                .alias(AliasChange::Claim {
                    namespace: "test.ext".into(),
                    value: "X-1".into(),
                    until: None,
                }),
        )
    })
    .await
    .expect("committed");
    let Transitioned::Done(after) = done else {
        panic!("alias free, yet {done:?}")
    };
    let created = after[0].clone().expect("entity after the write");
    assert_eq!(created.version, 1);
    assert_eq!(created.status, "active");
    let loaded = core.load(k.clone()).await.expect("load").expect("stored");
    assert_eq!(loaded.entity_id, created.entity_id);
    assert_eq!(loaded.state, Some(json!({"phase": "created"})));
    let found = core.find("acme", "test.ext", "X-1").await.expect("find");
    assert_eq!(found.map(|e| e.key), Some(k.clone()));

    // Both events delivered, signed, numbered 1 and 2 in the entity's own sequence.
    let first = receiver.next_of("test.created").await;
    let second = receiver.next_of("test.noted").await;
    assert!(first.verifies());
    assert_eq!(first.json["data"]["call_id"], json!(created.entity_id));
    assert_eq!(first.json["data"]["vendor"], json!("voicenter"));
    assert_eq!(first.json["data"]["seq"], json!(1));
    assert_eq!(second.json["data"]["seq"], json!(2));

    // A second entity claiming the same alias changes nothing, not even its own state.
    let other = key("voicenter.test", "E2");
    let mut calls = 0;
    let refused = transition_one(core.as_ref(), other.clone(), |_| {
        calls += 1;
        Change::Write(
            Write::state(json!({"phase": "never"}))
                .event(EntityEvent::new("test.never"))
                .alias(AliasChange::Claim {
                    namespace: "test.ext".into(),
                    value: "X-1".into(),
                    until: None,
                }),
        )
    })
    .await
    .expect("answered");
    match refused {
        Transitioned::AliasTaken { owner, value, .. } => {
            assert_eq!(owner, k);
            assert_eq!(value, "X-1");
        }
        other => panic!("expected AliasTaken, got {other:?}"),
    }
    assert_eq!(calls, 1, "a taken alias is final, not retried");
    assert!(core.load(other).await.expect("load").is_none());
    assert!(receiver
        .next_within(Duration::from_millis(700))
        .await
        .is_none());
    gw.stop().await;
}

on_both_backends!(current: multi_entity_transition_is_all_or_nothing);

async fn multi_entity_transition_is_all_or_nothing(backend: Backend) {
    let receiver = Receiver::start().await;
    let Some(gw) = Gateway::start_on(backend, &receiver.url("/hook"), "").await else {
        return;
    };
    let core = gw.handle.core.clone();
    let holder = key("voicenter.test", "holder");
    transition_one(core.as_ref(), holder.clone(), |_| {
        Change::Write(Write::state(json!({})).alias(AliasChange::Claim {
            namespace: "test.number".into(),
            value: "5001".into(),
            until: None,
        }))
    })
    .await
    .expect("holder");
    // Writes A (fine on its own) and B (claims a taken alias): neither may be stored.
    let (a, b) = (key("voicenter.test", "A"), key("voicenter.test", "B"));
    let mut f = |_: &[Option<ivrgate_adapter::Entity>]| {
        vec![
            Change::Write(Write::state(json!({"a": 1})).event(EntityEvent::new("test.a"))),
            Change::Write(Write::state(json!({"b": 1})).alias(AliasChange::Claim {
                namespace: "test.number".into(),
                value: "5001".into(),
                until: None,
            })),
        ]
    };
    let outcome = core
        .transition(vec![a.clone(), b.clone()], &mut f)
        .await
        .expect("answered");
    assert!(
        matches!(outcome, Transitioned::AliasTaken { .. }),
        "{outcome:?}"
    );
    assert!(core.load(a.clone()).await.expect("load").is_none());
    assert!(core.load(b.clone()).await.expect("load").is_none());
    assert!(receiver
        .next_within(Duration::from_millis(700))
        .await
        .is_none());

    // Once released, the same transition commits both.
    transition_one(core.as_ref(), holder.clone(), |e| {
        Change::Write(Write {
            state: e.and_then(|e| e.state.clone()),
            aliases: vec![AliasChange::Release {
                namespace: "test.number".into(),
                value: "5001".into(),
            }],
            ..Write::default()
        })
    })
    .await
    .expect("release");
    let outcome = core
        .transition(vec![a.clone(), b.clone()], &mut f)
        .await
        .expect("answered");
    let Transitioned::Done(after) = outcome else {
        panic!("released alias, yet {outcome:?}")
    };
    assert!(after.iter().all(Option::is_some));
    assert_eq!(
        core.find("acme", "test.number", "5001")
            .await
            .expect("find")
            .map(|e| e.key),
        Some(b)
    );
    assert_eq!(
        receiver.next_of("test.a").await.json["data"]["seq"],
        json!(1)
    );
    gw.stop().await;
}

on_both_backends!(current: alias_claims_lapse_at_their_time);

async fn alias_claims_lapse_at_their_time(backend: Backend) {
    let Some(gw) = Gateway::start_on(backend, "http://127.0.0.1:9/none", "").await else {
        return;
    };
    let core = gw.handle.core.clone();
    let until = core.now() + Duration::from_secs(30);
    let claim = |until| AliasChange::Claim {
        namespace: "test.transit".into(),
        value: "5001".into(),
        until,
    };
    let first = transition_one(core.as_ref(), key("voicenter.test", "first"), |_| {
        Change::Write(Write::state(json!({})).alias(claim(Some(until))))
    })
    .await
    .expect("first");
    assert!(matches!(first, Transitioned::Done(_)));
    let early = transition_one(core.as_ref(), key("voicenter.test", "second"), |_| {
        Change::Write(Write::state(json!({})).alias(claim(None)))
    })
    .await
    .expect("second");
    assert!(
        matches!(early, Transitioned::AliasTaken { .. }),
        "{early:?}"
    );
    gw.clock.advance(Duration::from_secs(31));
    assert!(core
        .find("acme", "test.transit", "5001")
        .await
        .expect("find")
        .is_none());
    let late = transition_one(core.as_ref(), key("voicenter.test", "second"), |_| {
        Change::Write(Write::state(json!({})).alias(claim(None)))
    })
    .await
    .expect("second again");
    assert!(matches!(late, Transitioned::Done(_)), "{late:?}");
    gw.stop().await;
}

on_both_backends!(current: concurrent_transitions_are_recomputed_not_lost);

async fn concurrent_transitions_are_recomputed_not_lost(backend: Backend) {
    let Some(gw) = Gateway::start_on(backend, "http://127.0.0.1:9/none", "").await else {
        return;
    };
    let core = gw.handle.core.clone();
    let k = key("voicenter.test", "counter");
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let core = core.clone();
            let k = k.clone();
            tokio::spawn(async move {
                transition_one(core.as_ref(), k, |e| {
                    Change::Write(Write::state(json!({"n": counter(e) + 1})))
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(
            task.await.expect("task"),
            Ok(Transitioned::Done(_))
        ));
    }
    let stored = core.load(k).await.expect("load");
    assert_eq!(counter(stored.as_ref()), 24, "every increment kept");
    assert_eq!(stored.map(|e| e.version), Some(24));
    gw.stop().await;
}

on_both_backends!(current: wait_change_wakes_on_commit_times_out_and_ends_on_shutdown);

async fn wait_change_wakes_on_commit_times_out_and_ends_on_shutdown(backend: Backend) {
    let Some(gw) = Gateway::start_on(backend, "http://127.0.0.1:9/none", "").await else {
        return;
    };
    let core = gw.handle.core.clone();
    let k = key("voicenter.test", "waited");
    transition_one(core.as_ref(), k.clone(), |_| {
        Change::Write(Write::state(json!({"n": 1})))
    })
    .await
    .expect("create");

    let waiter = {
        let core = core.clone();
        let k = k.clone();
        tokio::spawn(async move { core.wait_change(k, Some(1), Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "nothing changed yet");
    transition_one(core.as_ref(), k.clone(), |e| {
        Change::Write(Write::state(json!({"n": counter(e) + 1})))
    })
    .await
    .expect("change");
    let woke = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken by the commit, not the timeout")
        .expect("task");
    match woke {
        Waited::Changed(Some(e)) => assert_eq!(counter(Some(&e)), 2),
        other => panic!("expected the change, got {other:?}"),
    }

    let started = std::time::Instant::now();
    let idle = core
        .wait_change(k.clone(), Some(2), Duration::from_millis(300))
        .await;
    assert!(matches!(idle, Waited::TimedOut), "{idle:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A waiter with a long timeout is answered as soon as the gateway stops.
    let long = {
        let core = core.clone();
        tokio::spawn(async move { core.wait_change(k, Some(2), Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = std::time::Instant::now();
    gw.stop().await;
    let answer = tokio::time::timeout(Duration::from_secs(2), long)
        .await
        .expect("answered at shutdown")
        .expect("task");
    assert!(matches!(answer, Waited::ShuttingDown), "{answer:?}");
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn decisions_on_a_call_like_entity_keep_its_state_and_its_expiry() {
    let receiver = Receiver::start().await;
    receiver.answer(|_| crate::support::Reply::ok(r#"{"action":"hangup","attach":{"crm":"42"}}"#));
    let gw = Gateway::start(&receiver.url("/hook"), "").await;
    let core = gw.handle.core.clone();
    let k = key("openscape", "IVR-77");
    // The adapter's own limit for the call, far shorter than the configured call TTL.
    let expiry = core.now() + Duration::from_secs(60);
    transition_one(core.as_ref(), k.clone(), |_| {
        Change::Write(Write {
            expires_at: Some(expiry),
            ..Write::state(json!({"mine": 1}))
        })
    })
    .await
    .expect("create");
    let decision = core
        .decide(DecisionRequest {
            tenant: "acme".into(),
            point: &ivrgate_openscape::DECISION_POINTS[0],
            call: CallRef {
                vendor_call_id: Some("IVR-77".into()),
                correlation: Map::new(),
            },
            data: Map::new(),
            vendor_fields: Map::new(),
            deadline_ms: None,
        })
        .await;
    let entity_id = core
        .load(k.clone())
        .await
        .expect("load")
        .map(|e| e.entity_id);
    assert_eq!(decision.call_id, entity_id, "the decision names the entity");
    // The decision's write is queued; wait for it to land. It is the core's: kept in the
    // stored state, never shown to the adapter.
    let stored = || async {
        let row = core
            .store
            .load_call(ivrgate::store::CallKey {
                tenant: "acme".into(),
                vendor: "openscape".into(),
                vendor_call_id: "IVR-77".into(),
            })
            .await
            .expect("row")
            .expect("stored");
        row.state.expect("live")
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let with_decision = loop {
        let e = core.load(k.clone()).await.expect("load").expect("entity");
        if stored().await.get("last_decision").is_some() {
            assert_eq!(e.state, Some(json!({"mine": 1})), "the adapter's view");
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "decision never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        with_decision.state.as_ref().map(|s| &s["mine"]),
        Some(&json!(1))
    );
    let ms = |t: Option<std::time::SystemTime>| t.map(ivrgate::clock::to_ms);
    assert_eq!(
        ms(with_decision.expires_at),
        ms(Some(expiry)),
        "the adapter's expiry, not the call TTL"
    );
    assert_eq!(with_decision.attached.get("crm"), Some(&json!("42")));
    // The adapter's next write leaves the core's keys out; they are kept.
    transition_one(core.as_ref(), k.clone(), |_| {
        Change::Write(Write::state(json!({"mine": 2})).event(EntityEvent::new("test.after")))
    })
    .await
    .expect("update");
    let after = core.load(k).await.expect("load").expect("entity");
    let state = after.state.expect("live");
    assert_eq!(state["mine"], json!(2));
    assert!(stored().await.get("last_decision").is_some());
    assert_eq!(state, json!({"mine": 2}), "the adapter's view");
    let hook = receiver.next_of("test.after").await;
    assert_eq!(hook.json["data"]["attached"]["crm"], json!("42"));
    gw.stop().await;
}

#[tokio::test]
async fn entity_timers_run_once_and_go() {
    let gw = Gateway::start("http://127.0.0.1:9/none", "").await;
    let core = gw.handle.core.clone();
    let due = core.now() + Duration::from_secs(60);
    transition_one(core.as_ref(), key("voicenter.test", "timed"), |_| {
        Change::Write(Write::state(json!({})).timer(TimerChange::Set {
            name: "nudge".into(),
            due,
            payload: json!({"why": "test"}),
        }))
    })
    .await
    .expect("create");
    let ran = || {
        gw.handle
            .core
            .metrics
            .render()
            .lines()
            .find(|l| l.starts_with("ivrgate_timers_run_total{outcome=\"ok\"}"))
            .map(str::to_owned)
    };
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(ran(), None, "not due yet");
    gw.clock.advance(Duration::from_secs(61));
    let deadline = tokio::time::Instant::now() + WAIT;
    while ran().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "timer never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        ran().as_deref(),
        Some("ivrgate_timers_run_total{outcome=\"ok\"} 1"),
        "ran exactly once"
    );
    gw.stop().await;
}

#[tokio::test]
async fn command_api_checks_the_tenant_token_and_answers_json_errors() {
    let gw = Gateway::start(
        "http://127.0.0.1:9/none",
        "command_token = \"cmd-token-0123456789\"",
    )
    .await;
    let http = client();
    let url = gw.url("/api/acme/voicenter/calls");
    let none = http.get(&url).send().await.expect("request");
    assert_eq!(none.status().as_u16(), 401);
    let body: Value = none.json().await.expect("json");
    assert_eq!(body["error"]["code"], json!("unauthorized"));
    let wrong = http
        .get(&url)
        .bearer_auth("cmd-token-wrong-000000")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    // Right token: the adapter answers (Voicenter has no commands: a JSON 404).
    let right = http
        .get(&url)
        .bearer_auth("cmd-token-0123456789")
        .send()
        .await
        .expect("request");
    assert_eq!(right.status().as_u16(), 404);
    let body: Value = right.json().await.expect("json");
    assert_eq!(body["error"]["code"], json!("not_found"));
    let bad = http
        .post(&url)
        .bearer_auth("cmd-token-0123456789")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status().as_u16(), 400);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(body["error"]["code"], json!("invalid_json"));
    let other_tenant = http
        .get(gw.url("/api/nobody/voicenter/calls"))
        .bearer_auth("cmd-token-0123456789")
        .send()
        .await
        .expect("request");
    assert_eq!(other_tenant.status().as_u16(), 404);
    let unknown_adapter = http
        .get(gw.url("/api/acme/nosuch/calls"))
        .bearer_auth("cmd-token-0123456789")
        .send()
        .await
        .expect("request");
    assert_eq!(unknown_adapter.status().as_u16(), 404);
    gw.stop().await;
}

#[tokio::test]
async fn short_command_tokens_are_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = crate::support::config_toml(
        dir.path(),
        "http://127.0.0.1:9/",
        "command_token = \"short\"",
    );
    let err = ivrgate::config::Config::parse(&toml, std::path::Path::new("t.toml"))
        .expect("parses")
        .validate(ivrgate::adapters::all())
        .expect_err("too short");
    assert!(err.to_string().contains("command_token"), "{err}");
}

#[tokio::test]
async fn adapter_event_data_cannot_replace_the_cores_fields() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&receiver.url("/hook"), "").await;
    let core = gw.handle.core.clone();
    let mut event = EntityEvent::new("test.shadowed");
    for (k, v) in [
        ("call_id", json!("not-the-entity")),
        ("seq", json!(99)),
        ("tenant", json!("other")),
        ("mine", json!(1)),
    ] {
        event.data.insert(k.to_owned(), v);
    }
    let done = transition_one(core.as_ref(), key("voicenter.test", "S"), |_| {
        Change::Write(Write::state(json!({})).event(event.clone()))
    })
    .await
    .expect("committed");
    let Transitioned::Done(after) = done else {
        panic!("{done:?}")
    };
    let entity_id = after[0].as_ref().map(|e| e.entity_id.clone());
    let hook = receiver.next_of("test.shadowed").await;
    assert_eq!(hook.json["data"]["call_id"], json!(entity_id));
    assert_eq!(hook.json["data"]["seq"], json!(1));
    assert_eq!(hook.json["data"]["tenant"], json!("acme"));
    assert_eq!(hook.json["data"]["mine"], json!(1));
    gw.stop().await;
}

/// `Gateway::record` keeps the core's keys too (it used to let an adapter's `data` replace
/// `event_id`, `call_id` and the rest): the event's id stays its `webhook-id`, the call is the
/// one recorded, and the adapter's own fields still arrive.
#[tokio::test]
async fn recorded_event_data_cannot_replace_the_cores_fields() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&receiver.url("/hook"), "").await;
    let core = gw.handle.core.clone();
    let mut data = Map::new();
    for (k, v) in [
        ("event_id", json!("msg_forged")),
        ("call_id", json!("not-the-call")),
        ("tenant", json!("other")),
        ("attached", json!({"forged": true})),
        ("seq", json!(99)),
        ("mine", json!(1)),
    ] {
        data.insert(k.to_owned(), v);
    }
    let recorded = core
        .record(EventSubmission {
            tenant: "acme".into(),
            vendor: "voicenter",
            event_type: "call.hangup",
            call: CallRef {
                vendor_call_id: Some("R-1".into()),
                correlation: Map::new(),
            },
            occurred_at: None,
            data,
            vendor_fields: Map::new(),
            effect: CallEffect::End,
            dedup: None,
        })
        .await
        .expect("recorded");
    let Recorded::New {
        event_id, call_id, ..
    } = recorded
    else {
        panic!("{recorded:?}")
    };
    let hook = receiver.next_of("call.hangup").await;
    let data = &hook.json["data"];
    assert_eq!(data["event_id"], json!(event_id));
    assert_eq!(hook.header("webhook-id"), event_id);
    assert_eq!(data["call_id"], json!(call_id));
    assert_eq!(data["tenant"], json!("acme"));
    assert_eq!(data["attached"], json!({}));
    assert_eq!(data["seq"], json!(1));
    assert_eq!(data["mine"], json!(1));
    gw.stop().await;
}

/// A decision's payload keeps the core's keys: the adapter's fields cannot rename the
/// decision (its `webhook-id`), its call or its kind.
#[tokio::test]
async fn decision_data_cannot_replace_the_cores_fields() {
    let receiver = Receiver::start().await;
    receiver.answer(|_| crate::support::Reply::ok(r#"{"action":"hangup"}"#));
    let gw = Gateway::start(&receiver.url("/hook"), "").await;
    let core = gw.handle.core.clone();
    let mut data = Map::new();
    for (k, v) in [
        ("decision_id", json!("dec_forged")),
        ("call_id", json!("not-the-call")),
        ("kind", json!("other")),
        ("deadline_ms", json!(1)),
        ("previous_decision", json!({"forged": true})),
        ("mine", json!(1)),
    ] {
        data.insert(k.to_owned(), v);
    }
    let decision = core
        .decide(DecisionRequest {
            tenant: "acme".into(),
            point: &ivrgate_openscape::DECISION_POINTS[0],
            call: CallRef {
                vendor_call_id: Some("D-1".into()),
                correlation: Map::new(),
            },
            data,
            vendor_fields: Map::new(),
            deadline_ms: None,
        })
        .await;
    let hook = receiver.next_of("decision.").await;
    let data = &hook.json["data"];
    assert_eq!(data["decision_id"], json!(decision.decision_id));
    assert_eq!(hook.header("webhook-id"), decision.decision_id);
    assert_eq!(data["call_id"], json!(decision.call_id));
    assert_eq!(
        data["kind"],
        json!(ivrgate_openscape::DECISION_POINTS[0].kind)
    );
    assert_ne!(data["deadline_ms"], json!(1));
    assert_eq!(data["previous_decision"], Value::Null);
    assert_eq!(data["mine"], json!(1));
    gw.stop().await;
}
