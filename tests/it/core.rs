//! The core's guarantees through the real HTTP server: decisions answer within their
//! deadline whatever the customer does, events are stored before they are acknowledged and
//! delivered at least once with the same webhook-id, calls end even when nobody says so.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn ivr_action(call: &str) -> String {
    json!({"METHOD": "GET_IVR_ACTION", "DATA": {
        "DID": "0730000000", "CALLER_ID": "0540000000", "CALLER_NAME": "Dana",
        "IVR_UNIQUE_ID": call, "DTMF": "", "MENU": "-1", "PREVIOUS_MENU": "-1"}})
    .to_string()
}

fn hangup(call: &str) -> String {
    json!({"METHOD": "HANGUP_CALL", "DATA": {
        "DID": "0730000000", "CALLER_ID": "0540000000", "IVR_UNIQUE_ID": call,
        "TARGET": "0500000555", "CALL_TIME_EPOCH": 1_700_000_000, "CALL_START_EPOCH": 1_700_000_000,
        "CALL_DURATION": 30, "CALL_DAILTIME": 5, "CALL_STATUS": "ANSWER"}})
    .to_string()
}

fn cdr(call: &str, duration: u32) -> String {
    json!({"caller": "0544444444", "target": "0722776772", "time": 1_700_000_000,
        "duration": duration, "ivruniqueid": call, "type": "Incoming Call", "status": "ANSWER",
        "did": "0722776772", "queueid": 0, "dialtime": 3})
    .to_string()
}

const MENU: &str = r#"{"action":"menu","prompt":"welcome","menu":"main","max_digits":1}"#;
const HANGUP_FALLBACK: &str = r#"
[tenants.decisions.ivr_action]
deadline_ms = 300
fallback = { action = "hangup", prompt = "sorry", cause = 16 }
"#;

on_both_backends!(current: fallback_arrives_within_the_deadline_when_the_webhook_hangs);

async fn fallback_arrives_within_the_deadline_when_the_webhook_hangs(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok(MENU).after(Duration::from_secs(5)));
    let Some(gw) = Gateway::start_on(backend, &rx.url("/hooks"), HANGUP_FALLBACK).await else {
        return;
    };
    let started = Instant::now();
    let (status, _, body) = gw
        .post("/voicenter/acme", "application/json", ivr_action("c-hang"))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).expect("json answer");
    assert_eq!(answer["STATUS"], 0);
    assert_eq!(answer["ACTION"], "HANGUP");
    assert_eq!(answer["DATA"]["HANGUP_CAUSE"], 16);
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(700),
        "fallback too late: {elapsed:?}"
    );

    // The next request on the same call tells the customer the answer was replaced, and why.
    rx.answer(|_| Reply::ok(MENU));
    let _ = rx.next().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, _, body) = gw
        .post("/voicenter/acme", "application/json", ivr_action("c-hang"))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["ACTION"],
        "MENU"
    );
    let second = rx.next().await;
    let previous = &second.json["data"]["previous_decision"];
    assert_eq!(previous["source"], "fallback", "{previous}");
    assert_eq!(previous["fallback_reason"], "timeout");
    assert!(previous["decision_id"]
        .as_str()
        .is_some_and(|d| d.starts_with("dec_")));
    assert!(second.verifies());
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics
            .contains(r#"ivrgate_decision_fallbacks_total{kind="ivr_action",reason="timeout"} 1"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn fallback_url_answers_within_the_same_deadline() {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        if hook.path == "/primary" {
            Reply::status(502)
        } else {
            Reply::ok(r#"{"action":"goto","target":"7","prompt":"p"}"#)
        }
    });
    let extra = format!(
        "fallback_url = \"{}\"\n{HANGUP_FALLBACK}",
        rx.url("/secondary")
    );
    let gw = Gateway::start(&rx.url("/primary"), &extra).await;
    let (_, _, body) = gw
        .post("/voicenter/acme", "application/json", ivr_action("c-fb"))
        .await;
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["ACTION"], "VO", "{answer}");
    assert_eq!(answer["DATA"]["LAYER"], 7);
    assert_eq!(rx.next().await.path, "/primary");
    assert_eq!(rx.next().await.path, "/secondary");
    gw.stop().await;
}

#[tokio::test]
async fn invalid_or_failed_answers_fall_back_and_are_counted_by_reason() {
    let rx = Receiver::start().await;
    let gw = Gateway::start(&rx.url("/hooks"), HANGUP_FALLBACK).await;
    // An action Voicenter cannot carry out at GET_IVR_ACTION, a non-2xx, and nonsense.
    for (reply, reason) in [
        (
            Reply::ok(r#"{"action":"enqueue","queue":"sales"}"#),
            "invalid_answer",
        ),
        (Reply::status(503), "bad_status"),
        (Reply::ok("<html>oops</html>"), "invalid_answer"),
        // A valid action padded past the answer size cap is cut, so it is not valid JSON.
        (
            Reply::ok(format!(
                r#"{{"action":"menu","prompt":"p","menu":"m","max_digits":1,"pad":"{}"}}"#,
                "x".repeat(300 * 1024)
            )),
            "invalid_answer",
        ),
    ] {
        rx.answer(move |_| reply.clone());
        let (status, _, body) = gw
            .post("/voicenter/acme", "application/json", ivr_action("c-inv"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json")["ACTION"],
            "HANGUP",
            "{reason}"
        );
    }
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"ivrgate_decision_fallbacks_total{kind="ivr_action",reason="invalid_answer"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ivrgate_decision_fallbacks_total{kind="ivr_action",reason="bad_status"} 1"#
        ),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_dead_endpoint_does_not_delay_another_tenants_decisions() {
    // The dead tenant's endpoint accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hole = black_hole.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            held.push(s);
        }
    });
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok(MENU));
    let extra = format!(
        r#"
[[tenants]]
id = "dead"
webhook_url = "http://{hole}/hooks"
webhook_secret = "{SECRET}"
decision_deadline_ms = 2000
"#
    );
    let gw = Gateway::start(&rx.url("/hooks"), &extra).await;
    let gw = std::sync::Arc::new(gw);
    let mut dead = Vec::new();
    for i in 0..40 {
        let gw = gw.clone();
        dead.push(tokio::spawn(async move {
            gw.post(
                "/voicenter/dead",
                "application/json",
                ivr_action(&format!("d{i}")),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let (_, _, body) = gw
            .post(
                "/voicenter/acme",
                "application/json",
                ivr_action(&format!("a{i}")),
            )
            .await;
        worst = worst.max(started.elapsed());
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json")["ACTION"],
            "MENU"
        );
    }
    assert!(
        worst < Duration::from_millis(500),
        "live tenant slowed to {worst:?}"
    );
    for d in dead {
        let (_, _, body) = d.await.expect("task");
        // Voicenter's own default when the customer is unreachable and no fallback is set.
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json")["STATUS"],
            1
        );
    }
    // The breaker opened: the dead tenant is now answered at once.
    let started = Instant::now();
    gw.post("/voicenter/dead", "application/json", ivr_action("d-late"))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "breaker did not open"
    );
    match std::sync::Arc::try_unwrap(gw) {
        Ok(gw) => {
            gw.stop().await;
        }
        Err(_) => panic!("gateway still shared"),
    }
}

#[tokio::test]
async fn a_retry_six_hours_later_still_verifies() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::status(500));
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = config_toml(tmp.path(), &rx.url("/hooks"), "").replace(
        "retry_schedule_s = [1, 2, 4]",
        "retry_schedule_s = [21600, 21600]",
    );
    // The gateway's clock starts six hours in the past; moving it to now is "six hours later".
    let six_hours = Duration::from_secs(6 * 3600);
    let clock = std::sync::Arc::new(ivrgate::clock::ManualClock::with_offset_ms(
        -(six_hours.as_millis() as i64),
    ));
    let gw = Gateway::start_in(tmp.path(), &toml, clock.clone()).await;
    let (_, _, ack) = gw
        .post("/voicenter/acme/cdr", "application/json", cdr("c-6h", 12))
        .await;
    assert!(ack.contains(r#""err":0"#), "{ack}");
    let first = rx.next_of("call.cdr").await;
    assert!(first.verifies());
    assert!(
        rx.next_within(Duration::from_millis(1500)).await.is_none(),
        "retried before its time"
    );
    rx.answer(|_| Reply::ok("{}"));
    clock.advance(six_hours);
    let retry = rx.next_of("call.cdr").await;
    assert_eq!(retry.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(
        retry.body, first.body,
        "the payload is the same on every attempt"
    );
    let first_ts: i64 = first.header("webhook-timestamp").parse().expect("ts");
    let retry_ts: i64 = retry.header("webhook-timestamp").parse().expect("ts");
    assert!(
        (retry_ts - first_ts - six_hours.as_secs() as i64).abs() <= 5,
        "{first_ts} {retry_ts}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("now")
        .as_secs() as i64;
    assert!(
        (retry_ts - now).abs() <= 5,
        "the retry is signed at its own time"
    );
    assert!(retry.verifies());
    verify_with_python(&retry);
    gw.stop().await;
}

on_both_backends!(current: retry_after_is_honoured_and_410_disables_until_re_enabled);

async fn retry_after_is_honoured_and_410_disables_until_re_enabled(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::status(429).header("retry-after", "120"));
    let Some(gw) = Gateway::start_on(backend, &rx.url("/hooks"), "").await else {
        return;
    };
    gw.post("/voicenter/acme/cdr", "application/json", cdr("c-ra", 1))
        .await;
    let first = rx.next_of("call.cdr").await;
    // The schedule says 1 s; the endpoint said 120 s.
    assert!(
        rx.next_within(Duration::from_millis(2500)).await.is_none(),
        "Retry-After ignored"
    );
    rx.answer(|_| Reply::status(410));
    gw.clock.advance(Duration::from_secs(121));
    let gone = rx.next_of("call.cdr").await;
    assert_eq!(gone.header("webhook-id"), first.header("webhook-id"));
    // The 410 is recorded once the answer is read; wait for it rather than race it.
    let mut recorded = false;
    for _ in 0..50 {
        if gw.get("/admin/endpoints").await.1.contains("410") {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recorded, "the 410 was not recorded");
    // Disabled: new events are stored and acknowledged, but nothing is sent.
    rx.answer(|_| Reply::ok("{}"));
    let (_, _, ack) = gw
        .post("/voicenter/acme/cdr", "application/json", cdr("c-ra2", 1))
        .await;
    assert!(ack.contains(r#""err":0"#));
    assert!(
        rx.next_within(Duration::from_millis(2000)).await.is_none(),
        "sent to a disabled endpoint"
    );
    let (status, endpoints) = gw.get("/admin/endpoints").await;
    assert_eq!(status, 200);
    assert!(endpoints.contains("410"), "{endpoints}");
    let enable = client()
        .post(gw.url("/admin/endpoints/acme/enable"))
        .send()
        .await
        .expect("enable");
    assert_eq!(enable.status(), 200);
    let delivered: Vec<Hook> = vec![rx.next_of("call.cdr").await, rx.next_of("call.cdr").await];
    let ids: Vec<&str> = delivered.iter().map(|h| h.header("webhook-id")).collect();
    assert!(
        ids.contains(&first.header("webhook-id")),
        "the first event kept its id"
    );
    gw.stop().await;
}

on_both_backends!(current: exhausted_schedule_dead_letters_and_replay_delivers_the_same_id);

async fn exhausted_schedule_dead_letters_and_replay_delivers_the_same_id(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::status(500));
    let Some(gw) = Gateway::start_on(backend, &rx.url("/hooks"), "").await else {
        return;
    };
    gw.post("/voicenter/acme/cdr", "application/json", cdr("c-dead", 1))
        .await;
    let first = rx.next_of("call.cdr").await;
    for step in [1, 2, 4] {
        gw.clock.advance(Duration::from_secs(step));
        let again = rx.next_of("call.cdr").await;
        assert_eq!(again.header("webhook-id"), first.header("webhook-id"));
    }
    gw.clock.advance(Duration::from_secs(3600));
    assert!(
        rx.next_within(Duration::from_millis(1500)).await.is_none(),
        "attempted after the schedule"
    );
    let (_, dead) = gw.get("/admin/dead-letters?tenant=acme").await;
    let dead: Value = serde_json::from_str(&dead).expect("json");
    assert_eq!(dead[0]["event_id"], first.header("webhook-id"));
    assert_eq!(dead[0]["attempts"], 4);
    assert_eq!(dead[0]["last_error"], "HTTP 500 Internal Server Error");
    rx.answer(|_| Reply::ok("{}"));
    let replay = client()
        .post(gw.url("/admin/replay"))
        .body(json!({"event_id": first.header("webhook-id")}).to_string())
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.json::<Value>().await.expect("json")["replayed"], 1);
    let replayed = rx.next_of("call.cdr").await;
    assert_eq!(replayed.header("webhook-id"), first.header("webhook-id"));
    assert!(replayed.verifies());
    gw.stop().await;
}

on_both_backends!(current: a_resent_cdr_gets_the_original_answer_and_makes_no_second_event);

async fn a_resent_cdr_gets_the_original_answer_and_makes_no_second_event(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let Some(gw) = Gateway::start_on(backend, &rx.url("/hooks"), "").await else {
        return;
    };
    let body = fixture("voicenter/cdr.xml");
    let first = gw
        .post("/voicenter/acme/cdr", "text/xml", body.clone())
        .await;
    let again = gw.post("/voicenter/acme/cdr", "text/xml", body).await;
    assert_eq!(first, again);
    let events = rx.drain(Duration::from_millis(1500)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    // A different body for the same call is a new event, with the next sequence number.
    let (_, _, hangup_ack) = gw
        .post(
            "/voicenter/acme",
            "application/json",
            fixture("voicenter/hangup_call.json"),
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&hangup_ack).expect("json")["STATUS"],
        0
    );
    let (_, _, resent) = gw
        .post(
            "/voicenter/acme",
            "application/json",
            fixture("voicenter/hangup_call.json"),
        )
        .await;
    assert_eq!(hangup_ack, resent);
    let events = rx.drain(Duration::from_millis(1500)).await;
    assert_eq!(events.len(), 1);
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"ivrgate_events_recorded_total{outcome="duplicate"} 2"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn abandoned_calls_expire_and_sequence_numbers_outlive_them() {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        if hook.json["type"] == "decision.layer_input" {
            Reply::ok(r#"{"action":"goto","target":"22","attach":{"crm_id":"A-17"}}"#)
        } else {
            Reply::ok("{}")
        }
    });
    let gw = Gateway::start_edited(&rx.url("/hooks"), |t| {
        t.replace("min_free_bytes = 0", "min_free_bytes = 0\ncall_ttl_s = 60")
    })
    .await;
    let layer = json!({"METHOD": "IVR_LAYER_INPUT", "DATA": {"DID": "0732793256", "CALLER_ID": "0523574321",
        "IVR_UNIQUE_ID": "c-exp", "DTMF": "1", "LAYER_ID": 8, "PREVIOUS_LAYER_ID": 4}});
    let (_, _, answer) = gw
        .post("/voicenter/acme", "application/json", layer.to_string())
        .await;
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["ACTION"], "GO_TO_LAYER");
    assert_eq!(answer["CUSTOM_DATA"]["crm_id"], "A-17");
    let decision = rx.next_of("decision.layer_input").await;
    let call_id = decision.json["data"]["call_id"]
        .as_str()
        .expect("call id")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.clock.advance(Duration::from_secs(61));
    let expired = rx.next_of("call.expired").await;
    assert_eq!(expired.json["data"]["call_id"], call_id.as_str());
    assert_eq!(expired.json["data"]["seq"], 1);
    assert_eq!(expired.json["data"]["attached"]["crm_id"], "A-17");
    // A late CDR continues the sequence and still carries the attached data.
    gw.post("/voicenter/acme/cdr", "application/json", cdr("c-exp", 9))
        .await;
    let late = rx.next_of("call.cdr").await;
    assert_eq!(late.json["data"]["call_id"], call_id.as_str());
    assert_eq!(late.json["data"]["seq"], 2);
    assert_eq!(late.json["data"]["attached"]["crm_id"], "A-17");
    // And across a restart.
    let dir = gw.dir.clone();
    let clock = gw.clock.clone();
    let toml = std::fs::read_to_string(dir.join("test.toml")).expect("toml");
    let guard = gw.stop().await;
    let gw = Gateway::start_in(&dir, &toml, clock).await;
    gw.post("/voicenter/acme", "application/json", hangup("c-exp"))
        .await;
    let after = rx.next_of("call.hangup").await;
    assert_eq!(after.json["data"]["call_id"], call_id.as_str());
    assert_eq!(after.json["data"]["seq"], 3);
    gw.stop().await;
    drop(guard);
}

on_both_backends!(current: over_quota_events_get_the_platforms_try_again_answer);

async fn over_quota_events_get_the_platforms_try_again_answer(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::status(500));
    let Some(gw) = Gateway::start_on(backend, &rx.url("/hooks"), "outbox_quota = 2").await else {
        return;
    };
    for i in 0..2 {
        let (_, _, ack) = gw
            .post(
                "/voicenter/acme/cdr",
                "application/json",
                cdr(&format!("q{i}"), 1),
            )
            .await;
        assert!(ack.contains(r#""err":0"#), "{ack}");
    }
    let (status, _, refused) = gw
        .post("/voicenter/acme/cdr", "application/json", cdr("q2", 1))
        .await;
    assert_eq!(status, 200);
    let refused: Value = serde_json::from_str(&refused).expect("json");
    assert_eq!(refused["err"], 2, "{refused}");
    let (_, _, hangup_refused) = gw
        .post("/voicenter/acme", "application/json", hangup("q3"))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&hangup_refused).expect("json")["STATUS"],
        1
    );
    gw.stop().await;
}

on_both_backends!(current: health_readiness_metrics_and_graceful_shutdown);

async fn health_readiness_metrics_and_graceful_shutdown(backend: Backend) {
    let rx = Receiver::start().await;
    let Some(gw) = Gateway::start_on(backend, &rx.url("/hooks"), "").await else {
        return;
    };
    assert_eq!(gw.get("/healthz").await.0, 200);
    assert_eq!(gw.get("/readyz").await.0, 200);
    rx.answer(|_| Reply::ok("{}"));
    gw.post(
        "/voicenter/acme/cdr",
        "application/json",
        cdr("c-metrics", 1),
    )
    .await;
    let _ = rx.next_of("call.cdr").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, metrics) = gw.get("/metrics").await;
    for series in [
        r#"ivrgate_requests_total{adapter="voicenter",method="CDR",outcome="ok"} 1"#,
        r#"ivrgate_deliveries_total{outcome="delivered"} 1"#,
        r#"ivrgate_events_recorded_total{outcome="new"} 1"#,
        r#"ivrgate_outbox_pending{tenant="acme"}"#,
        r#"ivrgate_breaker_open{tenant="acme"} 0"#,
    ] {
        assert!(metrics.contains(series), "{series} missing: {metrics}");
    }
    rx.answer(|_| Reply::ok(MENU).after(Duration::from_millis(600)));
    let url = gw.url("/voicenter/acme");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .header("content-type", "application/json")
            .body(ivr_action("c-drain"))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.stop().await;
    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight request was finished");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["ACTION"], "MENU",
        "answered by the customer, not cut off"
    );
}

#[tokio::test]
async fn nearly_full_storage_refuses_events_with_the_platforms_answer() {
    let rx = Receiver::start().await;
    // A reserve no disk has: free space is read before each commit, so the first event is
    // already refused.
    let gw = Gateway::start_edited(&rx.url("/hooks"), |t| {
        t.replace(
            "min_free_bytes = 0",
            "min_free_bytes = 18000000000000000000",
        )
    })
    .await;
    let (status, _, body) = gw
        .post("/voicenter/acme/cdr", "application/json", cdr("c-full", 1))
        .await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["err"], 2, "{body}");
    let (_, _, hangup_answer) = gw
        .post("/voicenter/acme", "application/json", hangup("c-full"))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&hangup_answer).expect("json")["STATUS"],
        1
    );
    // Decisions still work: a caller is never left in dead air.
    rx.answer(|_| Reply::ok(MENU));
    let (_, _, decision) = gw
        .post("/voicenter/acme", "application/json", ivr_action("c-full"))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&decision).expect("json")["ACTION"],
        "MENU"
    );
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"ivrgate_events_recorded_total{outcome="storage_full"} 2"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn decision_rate_limit_answers_with_the_fallback_at_once() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok(MENU));
    let gw = Gateway::start(
        &rx.url("/hooks"),
        &format!("decisions_per_second = 1\n{HANGUP_FALLBACK}"),
    )
    .await;
    let (_, _, first) = gw
        .post("/voicenter/acme", "application/json", ivr_action("c-rl1"))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&first).expect("json")["ACTION"],
        "MENU"
    );
    let started = Instant::now();
    let (_, _, second) = gw
        .post("/voicenter/acme", "application/json", ivr_action("c-rl2"))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&second).expect("json")["ACTION"],
        "HANGUP"
    );
    assert!(started.elapsed() < Duration::from_millis(200));
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"ivrgate_decision_fallbacks_total{kind="ivr_action",reason="rate_limited"} 1"#
        ),
        "{metrics}"
    );
    // Events are never refused for rate reasons.
    for i in 0..5 {
        let (_, _, ack) = gw
            .post(
                "/voicenter/acme/cdr",
                "application/json",
                cdr(&format!("c-rl-e{i}"), 1),
            )
            .await;
        assert!(ack.contains(r#""err":0"#), "{ack}");
    }
    gw.stop().await;
}

on_both_backends!(current: a_native_answers_custom_data_is_kept_on_the_call);

async fn a_native_answers_custom_data_is_kept_on_the_call(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        if hook.json["type"] == "decision.layer_input" {
            Reply::ok(
                r#"{"STATUS":0,"ACTION":"GO_TO_LAYER","LAYER":3,"CUSTOM_DATA":{"ticket":"T-9"}}"#,
            )
        } else {
            Reply::ok("{}")
        }
    });
    let Some(gw) = Gateway::start_on(backend, &rx.url("/hooks"), "").await else {
        return;
    };
    let layer = json!({"METHOD": "IVR_LAYER_INPUT", "DATA": {"DID": "0732793256", "CALLER_ID": "0523574321",
        "IVR_UNIQUE_ID": "c-native", "DTMF": "2", "LAYER_ID": 3, "PREVIOUS_LAYER_ID": 1}});
    gw.post("/voicenter/acme", "application/json", layer.to_string())
        .await;
    let _ = rx.next_of("decision.layer_input").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.post("/voicenter/acme", "application/json", hangup("c-native"))
        .await;
    let ended = rx.next_of("call.hangup").await;
    assert_eq!(ended.json["data"]["attached"], json!({"ticket": "T-9"}));
    gw.stop().await;
}

on_both_backends!(current: back_to_back_decisions_on_one_call_see_each_other);

async fn back_to_back_decisions_on_one_call_see_each_other(backend: Backend) {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        let n = hook.json["data"]["dtmf"].as_str().unwrap_or("0").to_owned();
        Reply::ok(format!(
            r#"{{"action":"goto","target":"{n}","attach":{{"step{n}":"seen"}}}}"#
        ))
    });
    let Some(gw) = Gateway::start_on(backend, &rx.url("/hooks"), "").await else {
        return;
    };
    let mut ids = Vec::new();
    for step in 1..=3 {
        let layer = json!({"METHOD": "IVR_LAYER_INPUT", "DATA": {"DID": "0732793256", "CALLER_ID": "0523574321",
            "IVR_UNIQUE_ID": "c-b2b", "DTMF": step.to_string(), "LAYER_ID": step, "PREVIOUS_LAYER_ID": 1}});
        let (_, _, answer) = gw
            .post("/voicenter/acme", "application/json", layer.to_string())
            .await;
        let answer: Value = serde_json::from_str(&answer).expect("json");
        assert_eq!(answer["LAYER"], step, "{answer}");
        let hook = rx.next_of("decision.layer_input").await;
        let data = &hook.json["data"];
        if let Some(previous) = ids.last() {
            assert_eq!(
                data["previous_decision"]["decision_id"], *previous,
                "{data}"
            );
            assert_eq!(data["call_id"], hook.json["data"]["call_id"]);
        } else {
            assert_eq!(data["previous_decision"], Value::Null);
        }
        assert_eq!(
            data["attached"].as_object().map(|a| a.len()),
            Some(step as usize - 1),
            "{data}"
        );
        ids.push(data["decision_id"].clone());
    }
    gw.stop().await;
}

#[tokio::test]
async fn failing_event_deliveries_do_not_short_circuit_decisions_on_the_same_url() {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        if hook.json["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("decision.")
        {
            Reply::ok(MENU)
        } else {
            Reply::status(500)
        }
    });
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    // Six failing deliveries open the delivery breaker (5 failures by default).
    for i in 0..6 {
        gw.post(
            "/voicenter/acme/cdr",
            "application/json",
            cdr(&format!("c-br{i}"), 1),
        )
        .await;
    }
    for _ in 0..5 {
        let _ = rx.next_of("call.cdr").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, metrics) = gw.get("/metrics").await;
    // All six may have been attempted before the breaker opened; at least five were.
    let retries: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"ivrgate_deliveries_total{outcome="retry"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(retries >= 5, "{metrics}");
    let (_, _, answer) = gw
        .post(
            "/voicenter/acme",
            "application/json",
            ivr_action("c-br-call"),
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&answer).expect("json")["ACTION"],
        "MENU",
        "the decision was answered by the customer, not a fallback"
    );
    gw.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let rx = Receiver::start().await;
    let elsewhere = rx.url("/elsewhere");
    let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(307));
    let answered = status.clone();
    rx.answer(move |hook| {
        if hook.path == "/elsewhere" {
            Reply::ok(MENU)
        } else {
            Reply::status(answered.load(std::sync::atomic::Ordering::Relaxed))
                .header("location", &elsewhere)
        }
    });
    let gw = Gateway::start(&rx.url("/hooks"), HANGUP_FALLBACK).await;
    // Every redirect is the customer's answer, and not a 2xx: the caller gets the fallback.
    for code in [301, 302, 303, 307, 308] {
        status.store(code, std::sync::atomic::Ordering::Relaxed);
        let (_, _, body) = gw
            .post(
                "/voicenter/acme",
                "application/json",
                ivr_action(&format!("c-redir-{code}")),
            )
            .await;
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json")["ACTION"],
            "HANGUP",
            "{code}"
        );
    }
    gw.post(
        "/voicenter/acme/cdr",
        "application/json",
        cdr("c-redir-307", 1),
    )
    .await;
    let hooks = rx.drain(Duration::from_millis(800)).await;
    assert!(
        hooks.iter().all(|h| h.path == "/hooks"),
        "a redirect was followed"
    );
    assert_eq!(hooks.len(), 6, "{hooks:?}");
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"ivrgate_decision_fallbacks_total{kind="ivr_action",reason="bad_status"} 5"#
        ),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn credentials_in_the_decision_url_are_sent_as_basic_authorization() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok(MENU));
    let hooks = rx.url("/hooks");
    let with_credentials = hooks.replacen("http://", "http://dec%40ider:s3cret@", 1);
    let gw = Gateway::start(
        &hooks,
        &format!("decision_url = \"{with_credentials}?k=v\"\n{HANGUP_FALLBACK}"),
    )
    .await;
    let (_, _, body) = gw
        .post("/voicenter/acme", "application/json", ivr_action("c-basic"))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["ACTION"],
        "MENU"
    );
    let hook = rx.next().await;
    assert_eq!(hook.path, "/hooks");
    // "dec@ider:s3cret": the user name percent-decoded.
    assert_eq!(hook.header("authorization"), "Basic ZGVjQGlkZXI6czNjcmV0");
    assert!(hook.verifies());
    gw.stop().await;
}
