//! Issue 14: Voicenter's outbound APIs and the neutral `originate` through the command API,
//! against the simulator built from the seed's examples (`vcapi_sim`): every method with
//! Python's urllib as the customer's client, a wrong code, the BAD ANSWERS, the per-tenant
//! limit under a burst, timeouts (504, no retry for methods that place calls), the
//! Idempotency-Key, AddCallsBulk's per-row results, the allowlist, and platforms that cannot
//! originate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::process::{py_script, run_with_timeout};
use crate::support::*;
use crate::vcapi_sim::{fixture_json, VoicenterSim, CODE};

struct Setup {
    sim: VoicenterSim,
    gw: Gateway,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(code: &str, extra: &str) -> Setup {
        let sim = VoicenterSim::start().await;
        let dir = tempfile::tempdir().expect("tmp");
        let code_file = dir.path().join("voicenter.code");
        std::fs::write(&code_file, format!("{code}\n")).expect("code file");
        let gw = Gateway::start(
            "http://127.0.0.1:9/unused",
            &sim.settings(&code_file, extra),
        )
        .await;
        Setup { sim, gw, _dir: dir }
    }

    fn api(&self) -> String {
        format!("http://{}/api/acme/voicenter", self.gw.addr)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, &[]).await
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let (status, _, body) = self.raw(method, path, body, headers).await;
        (status, body)
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let client = reqwest::Client::new();
        let mut req = client
            .request(method, format!("{}{path}", self.api()))
            .timeout(Duration::from_secs(20));
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("command answered");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.expect("JSON answer");
        (status, headers, body)
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/voicenter/api")
}

/// A request fixture as ivrgate forwards it: without the example's own code.
fn request_without_code(name: &str) -> Value {
    let mut v = fixture_json(&format!("{name}.request.json"));
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !k.eq_ignore_ascii_case("code"));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_method_through_the_command_api_with_urllib() {
    let s = Setup::start(CODE, "").await;
    let api = s.api();
    let dir = fixtures();
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_with_timeout(
            Command::new("python3")
                .arg(py_script("voicenter_api.py"))
                .arg(&api)
                .arg(&dir),
            Duration::from_secs(60),
        )
    })
    .await
    .expect("python");
    assert!(status.success(), "{stdout}{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).expect("python output");
    let requests = s.sim.requests();

    // Every Dialer method: Voicenter's answer is the seed's example, and what reached
    // Voicenter is the seed's request example with the tenant's code.
    for (name, result) in out["dialer"].as_object().expect("dialer") {
        let sent = requests
            .iter()
            .find(|r| r.uri.starts_with(&format!("/ForwardDialer/Dialer/{name}")))
            .unwrap_or_else(|| panic!("{name} never reached Voicenter"));
        assert_eq!(sent.method, "POST", "{name}");
        if name == "AddCallsBulk" {
            assert!(sent.uri.contains(&format!("Code={CODE}")), "{}", sent.uri);
            assert_eq!(
                sent.params["_body"],
                fixture_json("AddCallsBulk.request.json"),
                "{name}"
            );
            assert_eq!(result["body"]["rows"].as_array().map(Vec::len), Some(2));
            continue;
        }
        assert_eq!(
            result["body"]["voicenter"],
            fixture_json(&format!("{name}.response.json")),
            "{name}"
        );
        assert_eq!(sent.params["Code"], json!(CODE), "{name}");
        let mut forwarded = sent.params.clone();
        forwarded.remove("Code");
        assert_eq!(
            Value::Object(forwarded),
            request_without_code(name),
            "{name}"
        );
    }
    // Click2Call: a form POST with the code, action and format; the answer's CALLID.
    let c2c: Vec<_> = requests
        .iter()
        .filter(|r| r.uri.starts_with("/ForwardDialer/click2call.aspx"))
        .collect();
    assert!(c2c.len() >= 6, "{c2c:?}");
    let first = &c2c[0];
    assert_eq!(first.params["code"], json!(CODE));
    assert_eq!(first.params["action"], json!("call"));
    assert_eq!(first.params["format"], json!("JSON"));
    assert_eq!(first.params["var_customer"], json!("2342"));
    assert_eq!(first.params["record"], json!("true"));
    assert!(
        first.body.contains("action=call") && first.body.contains("&format=JSON"),
        "a form body: {}",
        first.body
    );
    for (key, action) in [
        ("message", "message"),
        ("callference", "callference"),
        ("terminate", "terminate"),
    ] {
        assert_eq!(
            out[key]["body"]["method"],
            json!(format!("Click2Call.{action}"))
        );
        assert!(c2c.iter().any(|r| r.params["action"] == json!(action)));
    }
    assert_eq!(
        out["missing_phone"]["body"]["error"]["voicenter_code"],
        json!(1)
    );
    // The call log, the monitor methods (GET, code in the query), login.
    assert_eq!(
        out["call_log"]["body"]["voicenter"],
        fixture_json("CallLog.response.json")
    );
    let log = requests
        .iter()
        .find(|r| r.uri.starts_with("/hub/cdr"))
        .expect("call log sent");
    assert_eq!(log.params["code"], json!(CODE));
    assert_eq!(log.params["format"], json!("JSON"));
    assert_eq!(
        log.params["search"],
        fixture_json("CallLog.request.json")["search"]
    );
    for (key, name) in [
        ("extensions_calls", "GetExtensionsCalls"),
        ("queues_callers", "GetQueuesCallers"),
        ("extensions", "GetExtensions"),
    ] {
        assert_eq!(
            out[key]["body"]["voicenter"],
            fixture_json(&format!("{name}.response.json")),
            "{key}"
        );
        let sent = requests
            .iter()
            .find(|r| r.uri.starts_with(&format!("/comet/API/{name}")))
            .expect("monitor call");
        assert_eq!(sent.method, "GET");
        assert!(sent.uri.contains(&format!("code={CODE}")), "{}", sent.uri);
    }
    assert!(requests
        .iter()
        .any(|r| r.uri.contains("GetExtensions?") && r.params["showAll"] == json!("1")));
    assert_eq!(
        out["login"]["body"]["voicenter"],
        fixture_json("SetStatusFromAPI.response.json")
    );
    // originate placed one call for two requests with one Idempotency-Key.
    assert_eq!(out["originate"]["body"]["platform"], json!("voicenter"));
    let originated: Vec<_> = c2c
        .iter()
        .filter(|r| r.params.get("var_ticket") == Some(&json!("T-1")))
        .collect();
    assert_eq!(originated.len(), 1, "{originated:?}");

    // /metrics counts the platform calls by method.
    let metrics = reqwest::get(format!("http://{}/metrics", s.gw.addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"adapter="platform_api",method="AddCall",outcome="ok""#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_and_the_bad_answers_are_clear_errors() {
    let s = Setup::start("not-the-code", "").await;
    let (status, body) = s
        .call(reqwest::Method::GET, "/active-calls/extensions", None)
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body["error"]["code"],
        json!("voicenter_auth_failed"),
        "{body}"
    );
    assert_eq!(
        body["error"]["message"],
        json!("Authorization failed."),
        "{body}"
    );
    assert_eq!(body["error"]["voicenter_code"], json!(1), "{body}");
    assert!(body["error"]["hint"]
        .as_str()
        .is_some_and(|h| h.contains("voicenter_api")));
    assert_eq!(body["voicenter"], fixture_json("monitor.auth_failed.json"));
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/call-log",
            Some(json!({"search": {}})),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["message"], json!("Authorization failed."));
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/agents/status",
            Some(json!({"UserID": "12345", "Status": 2})),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], json!("voicenter_auth_failed"));
    // The code never appears in an answer.
    assert!(!body.to_string().contains("not-the-code"));

    // §7's other BAD ANSWER with the right code.
    let s = Setup::start(CODE, "").await;
    s.sim.set_internal_error(true);
    let (status, body) = s
        .call(reqwest::Method::GET, "/active-calls/queues", None)
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["message"], json!("Internal error."), "{body}");
    assert_eq!(body["error"]["voicenter_code"], json!(2));
    // A Dialer refusal: the campaign is unknown (404), the target invalid (422).
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/dialer/AddCall",
            Some(json!({"Campaign": "unknown", "Target": "0501234567"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["message"], json!("Invalid campaign code"));
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/dialer/AddCall",
            Some(json!({"Campaign": "c1", "Target": "05x"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["message"], json!("The target is invalid"));
    // The code is ivrgate's: a request carrying one is refused.
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/dialer/GetCampaignList",
            Some(json!({"Code": "x"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], json!("reserved_field"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tenant_limit_holds_under_a_burst() {
    let s = Setup::start(
        CODE,
        "rate_per_s = 1\nburst = 2\nqueue = 1\nqueue_wait_ms = 300",
    )
    .await;
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.raw(reqwest::Method::GET, "/extensions", None, &[]).await
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (status, headers, body) = t.await.expect("task");
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(body["error"]["code"], json!("rate_limited"), "{body}");
                assert_eq!(
                    headers.get("retry-after").and_then(|v| v.to_str().ok()),
                    Some("1")
                );
            }
            other => panic!("{other}: {body}"),
        }
    }
    // Two from the burst; the next cell is 1 s away, beyond the 300 ms a request may wait.
    assert!((2..=3).contains(&ok), "ok {ok}, limited {limited}");
    assert_eq!(ok + limited, 12);
    assert_eq!(
        s.sim.requests().len(),
        ok,
        "a refused call never reached Voicenter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_504_and_only_reads_are_retried() {
    let s = Setup::start(CODE, "timeout_ms = 300\nretries = 2").await;
    s.sim.set_delay(Duration::from_millis(1500));
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/dialer/StartCampaign",
            Some(json!({"Campaign": "c1"})),
        )
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], json!("upstream_timeout"));
    assert_eq!(
        s.sim.requests().len(),
        1,
        "StartCampaign is never sent twice"
    );
    let (status, body) = s
        .call(reqwest::Method::GET, "/active-calls/extensions", None)
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        s.sim.requests().len(),
        1 + 3,
        "a read is tried 1 + retries times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originate_with_an_idempotency_key_places_one_call() {
    let s = Setup::start(
        CODE,
        "timeout_ms = 300\nallow_destinations = [\"972\", \"05\"]",
    )
    .await;
    let body = json!({"from": "SIPEXT1", "to": "0501234567", "attached": {"lead": "42"}});
    // The first attempt times out (Voicenter placed the call, ivrgate did not hear back).
    s.sim.set_delay(Duration::from_millis(1000));
    let key = [("Idempotency-Key", "order-77")];
    let (status, first) = s
        .call_with(
            reqwest::Method::POST,
            "/originate",
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(status, 504, "{first}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(s.sim.calls_placed(), 1);
    // The customer retries after the 504 with the same key: nothing is placed again.
    s.sim.set_delay(Duration::ZERO);
    let (status, again) = s
        .call_with(
            reqwest::Method::POST,
            "/originate",
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(status, 504, "{again}");
    assert_eq!(again["error"]["code"], json!("outcome_unknown"));
    assert_eq!(
        s.sim.calls_placed(),
        1,
        "a retry after 504 placed a second call"
    );
    assert_eq!(s.sim.requests().len(), 1);

    // A key whose first attempt succeeded: the retry gets the same answer, one call.
    let key = [("Idempotency-Key", "order-78")];
    let (status, placed) = s
        .call_with(
            reqwest::Method::POST,
            "/originate",
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(status, 200, "{placed}");
    let call_id = placed["call_id"].as_str().expect("call_id").to_owned();
    let (status, replay) = s
        .call_with(
            reqwest::Method::POST,
            "/originate",
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["call_id"], json!(call_id));
    assert_eq!(replay["idempotent_replay"], json!(true));
    assert_eq!(s.sim.calls_placed(), 2);
    // The same key for another request is refused.
    let other = json!({"from": "SIPEXT1", "to": "0507654321"});
    let (status, reused) = s
        .call_with(reqwest::Method::POST, "/originate", Some(other), &key)
        .await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(reused["error"]["code"], json!("idempotency_key_reused"));

    // A field Click2Call cannot honour is refused by name, never dropped.
    let (status, refused) = s
        .call(
            reqwest::Method::POST,
            "/originate",
            Some(json!({"from": "SIPEXT1", "to": "0501234567", "announcement": "promo"})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("announcement")));
    // Outside the allowlist (toll fraud): refused before Voicenter hears of it.
    let before = s.sim.requests().len();
    for (path, body) in [
        ("/originate", json!({"from": "SIPEXT1", "to": "8825551234"})),
        (
            "/click2call",
            json!({"phone": "SIPEXT1", "target": "8825551234"}),
        ),
        (
            "/dialer/AddCall",
            json!({"Campaign": "c1", "Target": "8825551234"}),
        ),
    ] {
        let (status, refused) = s.call(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 403, "{path}: {refused}");
        assert_eq!(refused["error"]["code"], json!("destination_not_allowed"));
    }
    assert_eq!(s.sim.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_calls_bulk_reports_each_row_and_bounds_the_request() {
    let s = Setup::start(CODE, "bulk_max_rows = 50\nbulk_chunk_rows = 20").await;
    let mut rows: Vec<Value> = (0..45)
        .map(|i| json!({"Campaign": "c1", "Target": format!("05000000{i:02}"), "Priority": i}))
        .collect();
    rows[3] = json!({"Campaign": "c1", "Target": "not-a-phone"});
    rows[7] = json!({"Target": "0500000007"});
    rows[9] = json!("junk");
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/dialer/AddCallsBulk",
            Some(Value::Array(rows)),
        )
        .await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["total"], json!(45));
    assert_eq!(body["queued"], json!(42));
    assert_eq!(body["invalid"], json!(3));
    let results = body["rows"].as_array().expect("rows");
    assert_eq!(results.len(), 45);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["row"], json!(i));
        let want = if [3, 7, 9].contains(&i) {
            "invalid"
        } else {
            "queued"
        };
        assert_eq!(r["status"], json!(want), "{r}");
    }
    assert!(results[7]["error"]
        .as_str()
        .is_some_and(|e| e.contains("Campaign")));
    // 42 good rows in chunks of 20: three requests.
    let sent: Vec<usize> = s
        .sim
        .requests()
        .iter()
        .map(|r| r.params["_body"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sent, vec![20, 20, 2]);

    let too_many: Vec<Value> = (0..51)
        .map(|_| json!({"Campaign": "c1", "Target": "0500000000"}))
        .collect();
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/dialer/AddCallsBulk",
            Some(Value::Array(too_many)),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(s.sim.requests().len(), 3);
}

#[tokio::test]
async fn platforms_that_cannot_originate_say_why() {
    let gw = Gateway::start("http://127.0.0.1:9/unused", "").await;
    for platform in ["ptk", "openscape"] {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/acme/{platform}/originate", gw.addr))
            .json(&json!({"from": "1000", "to": "0501234567"}))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), 501, "{platform}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], json!("not_implemented"), "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 20));
    }
}

/// The §7 poller: a connector that turns changes in the active calls into
/// `voicenter.extension.*` / `voicenter.queue.*` events (valid against their schema), keeps
/// its last view as entities so a restart emits nothing again, and reports what ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_active_calls_poller_emits_changes_once_across_a_restart() {
    let rx = Receiver::start().await;
    let sim = VoicenterSim::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let code_file = dir.join("voicenter.code");
    std::fs::write(&code_file, CODE).expect("code");
    let extra = sim.settings(
        &code_file,
        "poll_interval_ms = 1000\npoll_max_requests_per_min = 600",
    );
    let toml = config_toml(dir, &rx.url("/hook"), &extra);
    let clock = std::sync::Arc::new(ivrgate::clock::ManualClock::default());
    let gw = Gateway::start_in(dir, &toml, clock.clone()).await;
    let mut hooks = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while hooks.len() < 4 && tokio::time::Instant::now() < deadline {
        if let Some(h) = rx.next_within(Duration::from_millis(200)).await {
            hooks.push(h);
        }
    }
    let types: Vec<String> = hooks
        .iter()
        .map(|h| h.json["type"].as_str().unwrap_or("").to_owned())
        .collect();
    let count = |t: &str| types.iter().filter(|x| x.as_str() == t).count();
    assert_eq!(count("voicenter.extension.status"), 2, "{types:?}");
    assert_eq!(count("voicenter.extension.call_started"), 1, "{types:?}");
    assert_eq!(count("voicenter.queue.caller_joined"), 1, "{types:?}");
    let started = hooks
        .iter()
        .find(|h| h.json["type"] == "voicenter.extension.call_started")
        .expect("started");
    assert_eq!(
        started.json["data"]["ivrid"],
        json!("xxxxXxxxXxxxXxxxXxxxXxxxXxxxXxxx")
    );
    assert_eq!(started.json["data"]["callstatus"], json!("Talking"));
    // Several polls later nothing new: the view did not change.
    let polls = sim.requests().len();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(sim.requests().len() >= polls + 2, "it keeps polling");
    assert!(rx.drain(Duration::from_millis(300)).await.is_empty());
    gw.stop().await;

    // A restart on the same store: the stored view, so nothing is emitted again; then the
    // calls end and that is reported.
    let before = sim.requests().len();
    let gw = Gateway::start_in(dir, &toml, clock).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.requests().len() < before + 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rx.drain(Duration::from_millis(500)).await.is_empty());
    sim.set_idle(true);
    let mut later = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while later.len() < 2 && tokio::time::Instant::now() < deadline {
        if let Some(h) = rx.next_within(Duration::from_millis(200)).await {
            later.push(h);
        }
    }
    let later_types: Vec<&str> = later
        .iter()
        .map(|h| h.json["type"].as_str().unwrap_or(""))
        .collect();
    assert!(
        later_types.contains(&"voicenter.extension.call_ended"),
        "{later_types:?}"
    );
    assert!(
        later_types.contains(&"voicenter.queue.caller_left"),
        "{later_types:?}"
    );
    let ended = later
        .iter()
        .find(|h| h.json["type"] == "voicenter.extension.call_ended")
        .expect("ended");
    assert_eq!(
        ended.json["data"]["call_id"],
        started.json["data"]["call_id"]
    );
    assert_eq!(
        ended.json["data"]["seq"],
        json!(3),
        "status, started, ended: {}",
        ended.json
    );
    hooks.extend(later);
    crate::schemas::assert_hooks_match_schemas(&hooks);
    gw.stop().await;
}
