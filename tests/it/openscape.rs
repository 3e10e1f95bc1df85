//! The OpenScape IVR API adapter through the real HTTP server: every example call of seed
//! 000 chapter 4 (`tests/fixtures/openscape/`), the return codes each function lists, the
//! seed's IVR Hold step sequence, a Queue Hold and an FMNQ flow played by Python's own
//! `xmlrpc.client`, and two gateway processes over one store.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ivrgate::clock::ManualClock;
use ivrgate_wire::{xmlrpc, Limits};
use serde_json::{json, Value};

use crate::process::{free_port, py_script, run_with_timeout, Daemon};
use crate::support::*;

/// The tenant's `[tenants.openscape]` for most tests.
fn settings(extra: &str) -> String {
    format!(
        r#"
[tenants.openscape]
transit_numbers = ["8800", "8801"]
transit_quarantine_ms = 2000
queues = ["Sales", "Support"]
excluded_numbers = ["+1 (555) 555-0100"]
{extra}

[tenants.openscape.callback_queues.CBQueue]
timezone = "America/Toronto"
open_hours = ["mon-fri 08:00-18:00"]
max_days_ahead = 30
"#
    )
}

const MULTITENANT: &str = r#"business_units = ["WirelessDept", "Toronto"]"#;

/// [`start`] on `backend`; `None` when it is PostgreSQL and no server is reachable.
async fn start_on(backend: Backend, extra: &str) -> Option<(Gateway, Receiver)> {
    let receiver = Receiver::start().await;
    let gw = Gateway::start_on(backend, &receiver.url("/hooks"), &settings(extra)).await?;
    Some((gw, receiver))
}

async fn start(extra: &str) -> (Gateway, Receiver) {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&receiver.url("/hooks"), &settings(extra)).await;
    (gw, receiver)
}

/// A gateway whose clock shows `at` (RFC 3339).
async fn start_at(receiver: &Receiver, extra: &str, at: &str) -> (Gateway, tempfile::TempDir) {
    let target = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .expect("time");
    let target_ms = (target.unix_timestamp_nanos() / 1_000_000) as i64;
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let clock = Arc::new(ManualClock::with_offset_ms(target_ms - real));
    let tmp = tempfile::tempdir().expect("tempdir");
    let toml = config_toml(tmp.path(), &receiver.url("/hooks"), &settings(extra));
    let gw = Gateway::start_in(tmp.path(), &toml, clock).await;
    (gw, tmp)
}

/// An XML-RPC answer (or fault) as JSON.
fn answer(body: &str) -> Value {
    match xmlrpc::parse_response(body, &Limits::default()).expect("well-formed XML-RPC") {
        Ok(params) => params
            .first()
            .map(xmlrpc::Value::to_json)
            .unwrap_or(Value::Null),
        Err(fault) => json!({"fault": fault.code, "faultString": fault.message}),
    }
}

async fn post_xml(gw: &Gateway, channel: &str, xml: String) -> Value {
    let (status, content_type, body) = gw
        .post(&format!("/openscape/acme/{channel}"), "text/xml", xml)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    answer(&body)
}

/// Calls one function over XML-RPC; `null` parameters become `<nil/>` placeholders.
async fn rpc(gw: &Gateway, channel: &str, method: &str, params: Value) -> Value {
    let call = xmlrpc::MethodCall {
        method: method.to_owned(),
        params: params
            .as_array()
            .map(|a| a.iter().map(xmlrpc::Value::from_json).collect())
            .unwrap_or_default(),
    };
    post_xml(gw, channel, xmlrpc::write_call(&call)).await
}

fn code(answer: &Value) -> i64 {
    answer["ReturnCode"]
        .as_i64()
        .unwrap_or_else(|| panic!("no ReturnCode in {answer}"))
}

/// A command API request; status and JSON body.
async fn cmd(gw: &Gateway, method: &str, path: &str, body: Value) -> (u16, Value) {
    cmd_at(&gw.url(""), method, path, body).await
}

async fn cmd_at(base: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{base}/api/acme/openscape/{path}");
    let mut request = client().request(method.parse().expect("method"), url);
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.expect("command");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn initialize(gw: &Gateway, channel: &str, rpc_timeout: i64) {
    let a = rpc(
        gw,
        channel,
        "Initialize",
        json!(["6060", "6000@deerhurst", rpc_timeout]),
    )
    .await;
    assert_eq!(code(&a), 0, "{a}");
}

/// Initialize, SetCallInfo and QueryCallInfo with `1;`: an unmonitored call's CallID.
async fn unmonitored_call(gw: &Gateway, channel: &str) -> String {
    unmonitored_call_with(gw, channel, 10_000).await
}

async fn unmonitored_call_with(gw: &Gateway, channel: &str, rpc_timeout: i64) -> String {
    initialize(gw, channel, rpc_timeout).await;
    let a = rpc(gw, channel, "SetCallInfo", json!(["9055551234", "12345"])).await;
    assert_eq!(code(&a), 0, "{a}");
    let a = rpc(
        gw,
        channel,
        "QueryCallInfo",
        json!([channel, null, null, null, null, null, null, null, null, "1;"]),
    )
    .await;
    assert_eq!(code(&a), 0, "{a}");
    a["CallID"].as_str().expect("CallID").to_owned()
}

/// A monitored call registered on `device` (the channel) and taken by QueryCallInfo.
async fn monitored_call(gw: &Gateway, device: &str, call_id: &str, fmnq: bool) {
    let (status, body) = cmd(
        gw,
        "POST",
        &format!("devices/{device}/calls"),
        json!({"call_id": call_id, "ani": "9055557900", "dnis": "69030", "fmnq": fmnq}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    initialize(gw, device, 10_000).await;
    let a = rpc(
        gw,
        device,
        "QueryCallInfo",
        json!([device, ">CallID", ">ANI", ">DNIS"]),
    )
    .await;
    assert_eq!(a["CallID"], json!(call_id), "{a}");
}

fn matches(expected: &Value, actual: &Value) -> bool {
    match expected.as_str() {
        Some("*") => actual.as_str().is_some_and(|s| !s.is_empty()) || actual.is_number(),
        Some(s) if s.starts_with('*') => {
            let n: usize = s[1..].parse().expect("*N");
            actual.as_str().is_some_and(|a| a.chars().count() == n)
        }
        _ => expected == actual,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openscape_every_seed_example_through_http() {
    let started = Instant::now();
    let index: Value =
        serde_json::from_str(&fixture("openscape/examples.json")).expect("examples.json");
    let examples = index["examples"].as_array().expect("examples");
    let functions: std::collections::BTreeSet<&str> = examples
        .iter()
        .filter_map(|e| e["file"].as_str())
        .filter_map(|f| f.split('_').nth(1))
        .collect();
    assert_eq!(functions.len(), 25, "one example per function");
    let receiver = Receiver::start().await;
    for example in examples {
        let file = example["file"].as_str().expect("file");
        let setup: Vec<&str> = example["setup"]
            .as_array()
            .expect("setup")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let extra = if setup.contains(&"multitenant") {
            MULTITENANT
        } else {
            ""
        };
        let at = if setup.contains(&"clock_2010") {
            "2010-06-09T12:00:00Z"
        } else {
            "2026-01-05T12:00:00Z"
        };
        let (gw, _tmp) = start_at(&receiver, extra, at).await;
        let mut request = fixture(&format!("openscape/{file}"));
        let method = request
            .split("<methodName>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .expect("methodName")
            .to_owned();
        // The channel: the device of a monitored call, else the seed's IVR extension.
        let mut channel = "6060".to_owned();
        let mut call_id = String::new();
        for step in &setup {
            match step.split_once(':') {
                Some(("monitored", id)) => {
                    channel = "36200".into();
                    call_id = id.into();
                    monitored_call(&gw, &channel, id, false).await;
                }
                Some(("registered", id)) => {
                    let (status, body) = cmd(
                        &gw,
                        "POST",
                        "devices/36200/calls",
                        json!({"call_id": id, "ani": "9055557900", "dnis": "69030"}),
                    )
                    .await;
                    assert_eq!(status, 201, "{body}");
                    channel = "36200".into();
                }
                _ => match *step {
                    "multitenant" | "clock_2010" => {}
                    "initialized" => initialize(&gw, &channel, 10_000).await,
                    "unmonitored" => {
                        call_id = unmonitored_call(&gw, &channel).await;
                        request = request.replace("1341023126268002", &call_id);
                    }
                    "enqueued" => {
                        let a = rpc(&gw, &channel, "Enqueue", json!([call_id, 1, "Sales", 12])).await;
                        assert_eq!(code(&a), 0, "{a}");
                    }
                    "assigned" => {
                        let (s, b) = cmd(
                            &gw,
                            "POST",
                            &format!("calls/{call_id}/assign"),
                            json!({"extension": "4711"}),
                        )
                        .await;
                        assert_eq!(s, 200, "{b}");
                    }
                    "queue_figures" => {
                        let (s, b) = cmd(
                            &gw,
                            "PUT",
                            "queues/Sales/statistics",
                            json!({"calls_in_queue": 3, "estimated_wait_s": 45, "average_wait_s": 30, "oldest_call_s": 120, "service_level": 80}),
                        )
                        .await;
                        assert_eq!(s, 200, "{b}");
                    }
                    "agent" => {
                        for (id, device) in [("188001", "4711"), ("790006", "4712")] {
                            let (s, b) = cmd(
                                &gw,
                                "PUT",
                                &format!("agents/{id}"),
                                json!({"device": device, "status": "available"}),
                            )
                            .await;
                            assert_eq!(s, 200, "{b}");
                        }
                    }
                    "business_unit" => {
                        let a = rpc(&gw, &channel, "SetBusinessUnit", json!([call_id, "WirelessDept"])).await;
                        assert_eq!(code(&a), 0, "{a}");
                    }
                    "contact_data" => {
                        let a = rpc(&gw, &channel, "SetContactData", json!([call_id, "Name", "John Doe"])).await;
                        assert_eq!(code(&a), 0, "{a}");
                    }
                    "transit" => {
                        let a = rpc(&gw, &channel, "GetTransitNumber", json!([call_id, ">T"])).await;
                        assert_eq!(code(&a), 0, "{a}");
                    }
                    "callback" => {
                        let create = fixture("openscape/4.03_CreateCallback.xml")
                            .replace("{{CallID}}", &call_id);
                        let a = post_xml(&gw, &channel, create).await;
                        assert_eq!(code(&a), 0, "{a}");
                        let id = a["CallbackID"].as_str().expect("CallbackID").to_owned();
                        request = request.replace("{{CBCallID}}", &id);
                    }
                    "routing_enqueue" => receiver.answer(|hook| {
                        if hook.json["type"].as_str().unwrap_or("").starts_with("decision.") {
                            Reply::ok(r#"{"action":"enqueue","queue":"Sales","priority":12,"agent":"790006","agent_wait_s":120,"description":"VIP"}"#)
                        } else {
                            Reply::ok("")
                        }
                    }),
                    other => panic!("{file}: unknown setup step {other}"),
                },
            }
        }
        request = request.replace("{{CallID}}", &call_id);
        let got = post_xml(&gw, &channel, request).await;
        for (name, want) in example["expect"].as_object().expect("expect") {
            assert!(
                matches(want, &got[name]),
                "{file}: {name} expected {want}, got {}",
                got
            );
        }
        // Every by-reference value comes back under its documented name.
        let function = ivrgate_openscape::params::function(&method).expect("function");
        for p in ivrgate_openscape::params::outputs(function) {
            assert!(got.get(p.name).is_some(), "{file}: no {} in {got}", p.name);
        }
        assert!(got["ReturnText"].as_str().is_some_and(|t| !t.is_empty()));
        receiver.answer(|_| Reply::ok(r#"{"action":"default"}"#));
        gw.stop().await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

on_both_backends!(current: openscape_sequencing_and_parameter_codes);

async fn openscape_sequencing_and_parameter_codes(backend: Backend) {
    let Some((gw, _receiver)) = start_on(backend, "").await else {
        return;
    };
    let id = "1341023126268002";
    // -304 before Initialize, for call functions and the others alike.
    for (f, p) in [
        ("Dequeue", json!([id])),
        ("SetCallInfo", json!(["1", "2"])),
        ("QueryCallInfo", json!(["7000", ">C", ">A", ">D"])),
        ("QuerySystemStatus", json!([">O", ">S", ">E"])),
        (
            "QueryQueueStatistics",
            json!(["Sales", ">C", ">E", ">A", ">O", ">S"]),
        ),
        ("QueryAgentStatus", json!(["188001", ">D", ">S"])),
        ("QueryCallStatus", json!([id, 0, ">E", ">P"])),
    ] {
        let a = rpc(&gw, "7000", f, p).await;
        assert_eq!(code(&a), -304, "{f}: {a}");
    }
    initialize(&gw, "7000", 2_000).await;
    // -308: QueryCallInfo not called yet.
    for f in [
        "Dequeue",
        "Disconnect",
        "ReleaseTransitNumber",
        "Transfer",
        "SetDisplay",
    ] {
        let p = if f == "Transfer" || f == "SetDisplay" {
            json!([id, "5678"])
        } else {
            json!([id])
        };
        let a = rpc(&gw, "7000", f, p).await;
        assert_eq!(code(&a), -308, "{f}: {a}");
    }
    // -306: by-reference rules, ranges, types.
    for (f, p) in [
        ("Initialize", json!(["6060", "6000@deerhurst", 0])),
        ("Initialize", json!(["40000", "x", 10000])),
        ("Enqueue", json!([id, 1, "Sales", 101])),
        ("Enqueue", json!([id, 1, "Sales", 10, "d", 5, ">C"])),
        ("Enqueue", json!([id, 1, ">Q", 10, "d", ">E", ">C"])),
        ("QueryCallStatus", json!([id, -1])),
        ("SetCallInfo", json!(["a".repeat(81), "1"])),
        ("CallerDisconnected", json!([id, 3])),
        ("SetDisplay", json!([id, "x", 0])),
        ("GetBusinessUnit", json!([id, "not a placeholder"])),
    ] {
        let a = rpc(&gw, "7000", f, p.clone()).await;
        assert_eq!(code(&a), -306, "{f} {p}: {a}");
    }
    // -312: SetCallInfo after QueryCallInfo; -903: an unknown CallID.
    let call = unmonitored_call_with(&gw, "7000", 2_000).await;
    let a = rpc(&gw, "7000", "SetCallInfo", json!(["1", "2"])).await;
    assert_eq!(code(&a), -312, "{a}");
    let a = rpc(&gw, "7000", "Dequeue", json!(["999999"])).await;
    assert_eq!(code(&a), -903, "{a}");
    // -311: monitored-only functions on an unmonitored call.
    for (f, p) in [
        ("Disconnect", json!([call])),
        ("Transfer", json!([call, "5678"])),
        ("GetCallTransferable", json!([call, ">F"])),
        ("SetCallTransferable", json!([call, 0])),
    ] {
        let a = rpc(&gw, "7000", f, p).await;
        assert_eq!(code(&a), -311, "{f}: {a}");
    }
    // -307, -905, -955.
    let a = rpc(&gw, "7000", "GetContactData", json!([call, "Name", ">V"])).await;
    assert_eq!(code(&a), -307, "{a}");
    let a = rpc(&gw, "7000", "Enqueue", json!([call, 1, "Nowhere", 10])).await;
    assert_eq!(code(&a), -905, "{a}");
    let a = rpc(
        &gw,
        "7000",
        "QueryQueueStatistics",
        json!(["Nowhere", ">C", ">E", ">A", ">O", ">S"]),
    )
    .await;
    assert_eq!(code(&a), -905, "{a}");
    let a = rpc(
        &gw,
        "7000",
        "SetBusinessUnit",
        json!([call, "WirelessDept"]),
    )
    .await;
    assert_eq!(code(&a), -955, "{a}");
    let a = rpc(&gw, "7000", "GetBusinessUnit", json!([call, ">B"])).await;
    assert_eq!(code(&a), -955, "{a}");
    // A queued call with nothing happening: QueryCallStatus waits, capped below the
    // RpcTimeout of 2 000 ms (1 000 ms margin), and answers -701.
    let a = rpc(&gw, "7000", "Enqueue", json!([call, 1, "Sales", 10])).await;
    assert_eq!(code(&a), 0, "{a}");
    let t = Instant::now();
    let a = rpc(
        &gw,
        "7000",
        "QueryCallStatus",
        json!([call, 60_000, ">E", ">P"]),
    )
    .await;
    assert_eq!(code(&a), -701, "{a}");
    assert!(
        t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    // Statuses 3, 4, 5, 6 from the command API (each also an immediate answer).
    let (s, b) = cmd(
        &gw,
        "POST",
        &format!("calls/{call}/timeout"),
        json!({"extension": "7777"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let a = rpc(
        &gw,
        "7000",
        "QueryCallStatus",
        json!([call, 1000, ">E", ">P"]),
    )
    .await;
    assert_eq!(
        (code(&a), a["Extension"].clone()),
        (3, json!("7777")),
        "{a}"
    );
    for (order, want) in [("error", 4), ("disconnect", 5), ("transfer", 6)] {
        let (s, b) = cmd(
            &gw,
            "POST",
            &format!("calls/{call}/{order}"),
            json!({"extension": "4711"}),
        )
        .await;
        assert_eq!(s, 200, "{order}: {b}");
        let a = rpc(&gw, "7000", "QueryCallStatus", json!([call, 0])).await;
        assert_eq!(code(&a), want, "{order}: {a}");
    }
    // Dequeue brings it back to idle (0).
    let a = rpc(&gw, "7000", "Dequeue", json!([call])).await;
    assert_eq!(code(&a), 0, "{a}");
    let a = rpc(&gw, "7000", "QueryCallStatus", json!([call, 0, ">E", ">P"])).await;
    assert_eq!(code(&a), 0, "{a}");
    assert_eq!(a["ReturnText"], json!("The call is idle."));
    // Unknown function and unreadable body: XML-RPC faults.
    let a = rpc(&gw, "7000", "NoSuchFunction", json!([])).await;
    assert_eq!(a["fault"], json!(-32601), "{a}");
    let a = post_xml(&gw, "7000", "<methodCall><methodName>Dequeue".into()).await;
    assert_eq!(a["fault"], json!(-32700), "{a}");
    let (status, _, _) = gw
        .post("/openscape/acme/bad%20channel", "text/xml", "")
        .await;
    assert_eq!(status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn openscape_json_and_french() {
    let (gw, _receiver) = start("").await;
    let url = gw.url("/openscape/acme/6060");
    let post = |body: Value, lang: Option<&'static str>| {
        let mut r = client().post(url.clone()).json(&body);
        if let Some(l) = lang {
            r = r.header("accept-language", l);
        }
        r.send()
    };
    let r = post(
        json!({"method": "Dequeue", "params": ["1341023126268002"]}),
        Some("fr-CA, en;q=0.5"),
    )
    .await
    .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["ReturnCode"], json!(-304));
    assert_eq!(
        body["ReturnText"],
        json!("Initialize n'a pas été appelé avant d'invoquer cette fonction. Vous devez appeler Initialize au démarrage de votre script.")
    );
    // Numbers sent as strings are read as numbers.
    let r = post(
        json!({"method": "Initialize", "params": ["6060", "6000@deerhurst", "10000"]}),
        None,
    )
    .await
    .expect("post");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body, json!({"ReturnCode": 0, "ReturnText": "Successful."}));
    let r = post(json!({"method": "QuerySystemStatus", "params": []}), None)
        .await
        .expect("post");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["Entries"], json!(2), "{body}");
    let r = post(json!({"method": "Nope"}), None).await.expect("post");
    assert_eq!(r.status().as_u16(), 400);
    gw.stop().await;
}

on_both_backends!(current: openscape_transit_numbers);

async fn openscape_transit_numbers(backend: Backend) {
    let Some((gw, receiver)) = start_on(backend, "").await else {
        return;
    };
    let a = unmonitored_call(&gw, "6060").await;
    let b = unmonitored_call(&gw, "6061").await;
    let c = unmonitored_call(&gw, "6062").await;
    // A monitored call is refused (-310).
    monitored_call(&gw, "36200", "1341023126268002", false).await;
    let r = rpc(
        &gw,
        "36200",
        "GetTransitNumber",
        json!(["1341023126268002", ">T"]),
    )
    .await;
    assert_eq!(code(&r), -310, "{r}");
    let r = rpc(
        &gw,
        "36200",
        "CallerDisconnected",
        json!(["1341023126268002", 2]),
    )
    .await;
    assert_eq!(code(&r), -310, "{r}");
    let r = rpc(&gw, "6060", "ReleaseTransitNumber", json!([a])).await;
    assert_eq!(code(&r), -928, "{r}");
    let first = rpc(&gw, "6060", "GetTransitNumber", json!([a, ">T"])).await;
    let second = rpc(&gw, "6061", "GetTransitNumber", json!([b, ">T"])).await;
    assert_eq!((code(&first), code(&second)), (0, 0));
    assert_ne!(first["TransitNumber"], second["TransitNumber"]);
    // Both numbers are busy.
    let r = rpc(&gw, "6062", "GetTransitNumber", json!([c, ">T"])).await;
    assert_eq!(code(&r), -927, "{r}");
    let allocated = receiver.next_of("openscape.transit.allocated").await;
    assert!(allocated.verifies());
    // CallerDisconnected frees a's number; after the quarantine it goes to c.
    let r = rpc(&gw, "6060", "CallerDisconnected", json!([a, 2])).await;
    assert_eq!(code(&r), 0, "{r}");
    let r = rpc(&gw, "6062", "GetTransitNumber", json!([c, ">T"])).await;
    assert_eq!(code(&r), -927, "quarantine: {r}");
    gw.clock.advance(Duration::from_millis(2_100));
    let r = rpc(&gw, "6062", "GetTransitNumber", json!([c, ">T"])).await;
    assert_eq!(
        (code(&r), &r["TransitNumber"]),
        (0, &first["TransitNumber"]),
        "{r}"
    );
    // b's number expires after 30 s (a durable timer): released with reason "expired".
    gw.clock.advance(Duration::from_secs(31));
    let deadline = Instant::now() + WAIT;
    loop {
        // c's number (a's, handed on) expires in the same step: events of two entities
        // come in either order.
        let hook = receiver.next_of("openscape.transit.released").await;
        if hook.json["data"]["reason"] == json!("expired")
            && hook.json["data"]["transit_number"] == second["TransitNumber"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "no expiry");
    }
    let r = rpc(&gw, "6061", "ReleaseTransitNumber", json!([b])).await;
    assert_eq!(code(&r), -928, "{r}");
    // An expired number reported as arrived is refused.
    let number = second["TransitNumber"].as_str().expect("number");
    let (s, body) = cmd(
        &gw,
        "POST",
        &format!("transit/{number}/arrived"),
        Value::Null,
    )
    .await;
    assert!(s == 409 || s == 404, "{s} {body}");
    gw.stop().await;

    // A tenant without a pool: -929.
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&receiver.url("/hooks"), "").await;
    let a = unmonitored_call(&gw, "6060").await;
    let r = rpc(&gw, "6060", "GetTransitNumber", json!([a, ">T"])).await;
    assert_eq!(code(&r), -929, "{r}");
    gw.stop().await;
}

/// Transit numbers written as `config/example.toml` shows them: GetTransitNumber hands out
/// the configured text, and the arrival may name the number in that format (percent-encoded
/// in the path) or by its digits. The seed's IVR Hold sequence runs to step 8 with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openscape_transit_numbers_in_the_configured_format() {
    let receiver = Receiver::start().await;
    let formatted = r#"
[tenants.openscape]
transit_numbers = ["+1 (555) 555-0180", "+1 (555) 555-0181"]
transit_quarantine_ms = 0
queues = ["Sales"]
"#;
    let gw = Gateway::start(&receiver.url("/hooks"), formatted).await;
    let base = gw.url("");
    let out = tokio::task::spawn_blocking(move || python_flow(&base, "ivr_hold", None))
        .await
        .expect("python");
    let number = out["transit_number"].as_str().expect("transit_number");
    assert!(number.starts_with("+1 (555) 555-018"), "{out}");
    let call_id = out["call_id"].as_str().expect("call_id");
    let events = call_events(&receiver, call_id, 6).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("openscape.call.transferred"),
        "{events:?}"
    );

    // The digits alone, and the configured text percent-encoded (%2B for '+').
    for (channel, spelled) in [("6061", "digits"), ("6062", "encoded")] {
        let call = unmonitored_call(&gw, channel).await;
        let r = rpc(&gw, channel, "GetTransitNumber", json!([call, ">T"])).await;
        assert_eq!(code(&r), 0, "{r}");
        let number = r["TransitNumber"].as_str().expect("number").to_owned();
        assert!(number.starts_with("+1 (555) 555-018"), "{r}");
        let path = match spelled {
            "digits" => number
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>(),
            _ => number
                .replace('+', "%2B")
                .replace(' ', "%20")
                .replace('(', "%28")
                .replace(')', "%29"),
        };
        let (s, body) = cmd(&gw, "POST", &format!("transit/{path}/arrived"), Value::Null).await;
        assert_eq!(s, 200, "{spelled} {path}: {body}");
        assert_eq!(body["call"]["transit_number"], Value::Null, "{body}");
        let released = loop {
            let hook = receiver.next_of("openscape.transit.released").await;
            if hook.json["data"]["correlation"]["CallID"] == json!(call) {
                break hook;
            }
        };
        assert_eq!(released.json["data"]["transit_number"], json!(number));
        assert_eq!(released.json["data"]["reason"], json!("arrived"));
        // Reported again: no longer allocated.
        let (s, body) = cmd(&gw, "POST", &format!("transit/{path}/arrived"), Value::Null).await;
        assert!(s == 404 || s == 409, "{s} {body}");
    }
    // A number nobody holds, and one that is not a number at all.
    let (s, _) = cmd(
        &gw,
        "POST",
        "transit/+1%20(555)%20555-0199/arrived",
        Value::Null,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = cmd(&gw, "POST", "transit/%01/arrived", Value::Null).await;
    assert_eq!(s, 400);
    gw.stop().await;

    // Two configured numbers with the same digits are one number: check-config says so.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ivrgate.toml");
    let toml = config_toml(dir.path(), "http://127.0.0.1:9/hooks", "")
        + "[tenants.openscape]\ntransit_numbers = [\"+1 (555) 555-0180\", \"+15555550180\"]\n";
    std::fs::write(&path, toml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ivrgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(text.contains("is the same number as"), "{text}");
}

/// A Monday in January: 08:00-18:00 Toronto is 13:00-23:00 UTC.
const MONDAY: &str = "2026-01-05T12:00:00Z";

#[tokio::test]
async fn openscape_callbacks() {
    let receiver = Receiver::start().await;
    let (gw, _tmp) = start_at(&receiver, "", MONDAY).await;
    let call = unmonitored_call(&gw, "6060").await;
    let create = |queue: &'static str, tz: i64, s1: String, s2: Option<String>| {
        let mut p = vec![
            json!(call),
            json!(queue),
            json!("Callback"),
            json!(tz),
            json!("Alan Smith"),
            json!(">CB"),
            json!(s1),
        ];
        if let Some(s2) = s2 {
            p.push(json!(s2));
        }
        Value::Array(p)
    };
    let ok = "5555550199;01/05/2026;09:00;01/05/2026;16:00".to_owned();
    let cases = [
        (create("Nope", 0, ok.clone(), None), -1045),
        (
            create(
                "CBQueue",
                0,
                "5555550199;01/05/2026;09:00;01/05/2026".into(),
                None,
            ),
            -306,
        ),
        (
            create(
                "CBQueue",
                0,
                "5555550199;13/05/2026;09:00;01/05/2026;16:00".into(),
                None,
            ),
            -1028,
        ),
        (
            create(
                "CBQueue",
                0,
                "5555550199;01/05/2026;16:00;01/05/2026;09:00".into(),
                None,
            ),
            -1028,
        ),
        (
            create(
                "CBQueue",
                0,
                "+1 (555) 555-0100--12;01/05/2026;09:00;01/05/2026;16:00".into(),
                None,
            ),
            -1031,
        ),
        (
            create(
                "CBQueue",
                0,
                "5555550199;01/04/2026;09:00;01/04/2026;16:00".into(),
                None,
            ),
            -1040,
        ),
        (
            create(
                "CBQueue",
                0,
                "5555550199;03/05/2026;09:00;03/05/2026;16:00".into(),
                None,
            ),
            -1047,
        ),
        // Saturday, and a Monday night (19:00-23:00 local, -300 minutes: 00:00-04:00 UTC).
        (
            create(
                "CBQueue",
                0,
                "5555550199;01/10/2026;09:00;01/10/2026;16:00".into(),
                None,
            ),
            -1029,
        ),
        (
            create(
                "CBQueue",
                -300,
                "5555550199;01/05/2026;19:00;01/05/2026;23:00".into(),
                None,
            ),
            -1029,
        ),
    ];
    for (params, want) in cases {
        let a = rpc(&gw, "6060", "CreateCallback", params.clone()).await;
        assert_eq!(code(&a), want, "{params}: {a}");
    }
    // Valid: the second schedule overlaps the open hours although the first has expired.
    let a = rpc(
        &gw,
        "6060",
        "CreateCallback",
        create(
            "CBQueue",
            0,
            "5555550199;01/04/2026;09:00;01/04/2026;16:00".into(),
            Some(ok.clone()),
        ),
    )
    .await;
    assert_eq!(code(&a), 0, "{a}");
    let id = a["CallbackID"].as_str().expect("CallbackID").to_owned();
    assert_eq!(id.len(), 17);
    let created = receiver.next_of("openscape.callback.created").await;
    assert_eq!(created.json["data"]["correlation"]["CallbackID"], json!(id));
    assert_eq!(created.json["data"]["correlation"]["CallID"], json!(call));
    assert!(created.json["data"]["call_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("call_")));
    assert_eq!(
        created.json["data"]["schedules"][1]["start"],
        json!("2026-01-05T09:00:00Z")
    );
    // The same number in the same queue again: -1006.
    let a = rpc(
        &gw,
        "6060",
        "CreateCallback",
        create("CBQueue", 0, ok.clone(), None),
    )
    .await;
    assert_eq!(code(&a), -1006, "{a}");
    let a = rpc(&gw, "6060", "DeleteCallback", json!([id])).await;
    assert_eq!(code(&a), 0, "{a}");
    receiver.next_of("openscape.callback.deleted").await;
    let a = rpc(&gw, "6060", "DeleteCallback", json!([id])).await;
    assert_eq!(code(&a), -1021, "{a}");
    // Deleted: the number may be called back again.
    let a = rpc(
        &gw,
        "6060",
        "CreateCallback",
        create("CBQueue", 0, ok, None),
    )
    .await;
    assert_eq!(code(&a), 0, "{a}");
    // Contact data beyond 1000 bytes: -1033.
    for i in 0..9 {
        let a = rpc(
            &gw,
            "6060",
            "SetContactData",
            json!([call, format!("K{i}"), "v".repeat(120)]),
        )
        .await;
        assert_eq!(code(&a), 0, "{a}");
    }
    let a = rpc(
        &gw,
        "6060",
        "CreateCallback",
        create(
            "CBQueue",
            0,
            "5555550111;01/05/2026;09:00;01/05/2026;16:00".into(),
            None,
        ),
    )
    .await;
    assert_eq!(code(&a), -1033, "{a}");
    gw.stop().await;
}

#[tokio::test]
async fn openscape_multitenancy_figures_and_routing() {
    let (gw, receiver) = start(MULTITENANT).await;
    let id = "8271023217459002";
    monitored_call(&gw, "36200", id, false).await;
    // Multitenant: Enqueue needs SetBusinessUnit first (-314), once (-313).
    let a = rpc(&gw, "36200", "Enqueue", json!([id, 1, "Sales", 10])).await;
    assert_eq!(code(&a), -314, "{a}");
    let a = rpc(&gw, "36200", "GetBusinessUnit", json!([id, ">B"])).await;
    assert_eq!(code(&a), -914, "{a}");
    let a = rpc(
        &gw,
        "36200",
        "CreateCallback",
        json!([
            id,
            "CBQueue",
            "",
            0,
            "Alan Smith",
            ">CB",
            "5555550199;01/05/2026;09:00;01/05/2026;16:00"
        ]),
    )
    .await;
    assert_eq!(code(&a), -314, "{a}");
    let a = rpc(&gw, "36200", "SetBusinessUnit", json!([id, "Nope"])).await;
    assert_eq!(code(&a), -314, "{a}");
    let a = rpc(&gw, "36200", "SetBusinessUnit", json!([id, "WirelessDept"])).await;
    assert_eq!(code(&a), 0, "{a}");
    let a = rpc(&gw, "36200", "SetBusinessUnit", json!([id, "Toronto"])).await;
    assert_eq!(code(&a), -313, "{a}");
    let a = rpc(
        &gw,
        "36200",
        "QueryQueueStatistics",
        json!(["Sales", ">C", ">E", ">A", ">O", ">S"]),
    )
    .await;
    assert_eq!(code(&a), -314, "BusinessUnitName required: {a}");
    // Agents: -904, -909; EnqueueForAgent -904.
    let a = rpc(
        &gw,
        "36200",
        "QueryAgentStatus",
        json!(["188001", ">D", ">S"]),
    )
    .await;
    assert_eq!(code(&a), -904, "{a}");
    let a = rpc(
        &gw,
        "36200",
        "QueryAgentStatus",
        json!([">A", "4711", ">S"]),
    )
    .await;
    assert_eq!(code(&a), -909, "{a}");
    let a = rpc(
        &gw,
        "36200",
        "EnqueueForAgent",
        json!([id, 1, "Sales", 10, "", "188001", 60]),
    )
    .await;
    assert_eq!(code(&a), -904, "{a}");
    let (s, b) = cmd(
        &gw,
        "PUT",
        "agents/188001",
        json!({"device": "4711", "status": 4}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let a = rpc(
        &gw,
        "36200",
        "QueryAgentStatus",
        json!([">A", "4711", ">S"]),
    )
    .await;
    assert_eq!(
        (code(&a), a["AgentID"].clone(), a["AgentStatus"].clone()),
        (0, json!("188001"), json!(4)),
        "{a}"
    );
    let (s, _) = cmd(
        &gw,
        "PUT",
        "agents/188002",
        json!({"device": "4711", "status": 9}),
    )
    .await;
    assert_eq!(s, 409, "one agent per device");
    // System status: T-Server down gives -907 on Enqueue and -908 on QueryCallStatus; the
    // administration server down gives -901.
    let (s, b) = cmd(
        &gw,
        "PUT",
        "system",
        json!({"servers": {"RoutingServer": 1, "TServer": 5}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let a = rpc(&gw, "36200", "QuerySystemStatus", json!([">O", ">S", ">E"])).await;
    assert_eq!(
        (
            code(&a),
            a["OverallStatus"].clone(),
            a["IndividualServerStates"].clone()
        ),
        (0, json!(0), json!("RoutingServer=1; TServer=5")),
        "{a}"
    );
    let a = rpc(&gw, "36200", "Enqueue", json!([id, 1, "Sales", 10])).await;
    assert_eq!(code(&a), -907, "{a}");
    let a = rpc(&gw, "36200", "QueryCallStatus", json!([id, 0])).await;
    assert_eq!(code(&a), -908, "{a}");
    let (s, _) = cmd(
        &gw,
        "PUT",
        "system",
        json!({"servers": {"TServer": 8}, "administration_server_available": false}),
    )
    .await;
    assert_eq!(s, 200);
    let a = rpc(&gw, "36200", "QuerySystemStatus", json!([">O", ">S", ">E"])).await;
    assert_eq!(code(&a), -901, "{a}");
    // Routing decisions: hangup 1, dial 2, default -915, native -916.
    for (reply, want, dest) in [
        (r#"{"action":"hangup"}"#, 1, ""),
        (
            r#"{"action":"dial","targets":["+1 (555) 555-0199"]}"#,
            2,
            "+1 (555) 555-0199",
        ),
        (r#"{"action":"default"}"#, -915, ""),
        (r#"{"native":{"ReturnCode":-916}}"#, -916, ""),
        (
            r#"{"native":{"ReturnCode":0,"Destination":"Support","InitialPriority":7}}"#,
            0,
            "Support",
        ),
    ] {
        receiver.answer(move |hook| {
            if hook.json["type"]
                .as_str()
                .unwrap_or("")
                .starts_with("decision.")
            {
                Reply::ok(reply)
            } else {
                Reply::ok("")
            }
        });
        let a = rpc(
            &gw,
            "36200",
            "QueryRoutingInfo",
            json!([
                id,
                ">D",
                ">A",
                ">W",
                ">De",
                ">P",
                ">E",
                ">C",
                "9055557900;69030"
            ]),
        )
        .await;
        assert_eq!(
            (code(&a), a["Destination"].clone()),
            (want, json!(dest)),
            "{reply}: {a}"
        );
    }
    let decision = receiver.next_of("decision.routing_info").await;
    assert_eq!(
        decision.json["data"]["from"],
        json!("9055557900"),
        "{}",
        decision.json
    );
    gw.stop().await;
}

#[tokio::test]
async fn openscape_initialize_abandons_and_shutdown_answers_701() {
    let (gw, receiver) = start("").await;
    let call = unmonitored_call(&gw, "6060").await;
    initialize(&gw, "6060", 10_000).await;
    let abandoned = receiver.next_of("openscape.call.abandoned").await;
    assert_eq!(abandoned.json["data"]["correlation"]["CallID"], json!(call));
    assert_eq!(abandoned.json["data"]["reason"], json!("initialize"));
    let a = rpc(&gw, "6060", "Dequeue", json!([call])).await;
    assert_eq!(code(&a), -308, "{a}");
    // A waiting QueryCallStatus is answered -701 at once when the gateway stops.
    let call = unmonitored_call(&gw, "6060").await;
    let a = rpc(&gw, "6060", "Enqueue", json!([call, 1, "Sales", 10])).await;
    assert_eq!(code(&a), 0);
    let url = gw.url("/openscape/acme/6060");
    let body = xmlrpc::write_call(&xmlrpc::MethodCall {
        method: "QueryCallStatus".into(),
        params: vec![xmlrpc::Value::Str(call.clone()), xmlrpc::Value::Int(60_000)],
    });
    let waiter = tokio::spawn(async move {
        let t = Instant::now();
        let text = client()
            .post(url)
            .body(body)
            .send()
            .await
            .expect("post")
            .text()
            .await
            .expect("body");
        (t.elapsed(), text)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop().await;
    let (elapsed, text) = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(code(&answer(&text)), -701, "{text}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

fn python_flow(base: &str, flow: &str, command_base: Option<&str>) -> Value {
    let mut command = Command::new("python3");
    command
        .arg(py_script("openscape_flows.py"))
        .arg(base)
        .arg(flow);
    if let Some(c) = command_base {
        command.arg(c);
    }
    let (status, stdout, stderr) = run_with_timeout(&mut command, Duration::from_secs(25));
    assert!(status.success(), "{flow}: {stdout}{stderr}");
    serde_json::from_str(stdout.trim()).expect("flow output")
}

/// The events of one call, in their sequence order.
async fn call_events(receiver: &Receiver, call_id: &str, count: usize) -> Vec<String> {
    let mut events = Vec::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let Some(hook) = receiver.next_within(Duration::from_millis(500)).await else {
            continue;
        };
        if hook.json["data"]["correlation"]["CallID"] != json!(call_id) {
            continue;
        }
        assert!(hook.verifies());
        let seq = hook.json["data"]["seq"].as_i64().unwrap_or(0);
        let kind = hook.json["type"].as_str().unwrap_or("").to_owned();
        events.push((seq, kind));
        if events.len() == count {
            break;
        }
    }
    events.sort();
    events.into_iter().map(|(_, k)| k).collect()
}

/// Runs one flow of tests/py/openscape_flows.py against a fresh gateway and checks the events
/// of the call it drove, in sequence order.
async fn check_python_flow(flow: &'static str, expected: &[&str]) {
    let (gw, receiver) = start("").await;
    let base = gw.url("");
    let out = tokio::task::spawn_blocking(move || python_flow(&base, flow, None))
        .await
        .expect("python");
    let call_id = out["call_id"].as_str().expect("call_id");
    let events = call_events(&receiver, call_id, expected.len()).await;
    assert_eq!(events, expected, "{out}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openscape_python_ivr_hold_step_sequence() {
    check_python_flow(
        "ivr_hold",
        &[
            "openscape.call.arrived",
            "openscape.call.enqueued",
            "openscape.call.assigned",
            "openscape.transit.allocated",
            "openscape.transit.released",
            "openscape.call.transferred",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openscape_python_queue_hold_flow() {
    check_python_flow(
        "queue_hold",
        &[
            "openscape.call.arrived",
            "openscape.call.enqueued",
            "openscape.transit.allocated",
            "openscape.transit.released",
            "openscape.call.assigned",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openscape_python_fmnq_flow() {
    check_python_flow(
        "fmnq",
        &[
            "openscape.call.arrived",
            "openscape.call.enqueued",
            "openscape.call.assigned",
            "openscape.call.transferred",
        ],
    )
    .await;
}

/// A daemon with the OpenScape settings (process.rs's Daemon, its own configuration).
fn spawn_daemon(
    name: &str,
    dir: &Path,
    state: &Path,
    webhook_url: &str,
    storage: &Storage,
) -> Daemon {
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    let toml = storage
        .apply(&config_toml(state, webhook_url, &settings("")))
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        + "\n[logging]\nlevel = \"warn\"\n";
    std::fs::write(&config, toml).expect("config");
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_ivrgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn ivrgate");
    Daemon {
        name: name.to_owned(),
        port,
        child: Some(child),
        log,
    }
}

on_both_backends!(2: openscape_two_processes_one_store);

/// Two instances on one store (a state directory, or one PostgreSQL database): a long-poll
/// on A is woken by a command on B.
async fn openscape_two_processes_one_store(backend: Backend) {
    let Some(storage) = Storage::new(backend, "os_two").await else {
        return;
    };
    let receiver = Receiver::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let hooks = receiver.url("/hooks");
    let mut a = spawn_daemon("a", tmp.path(), &state, &hooks, &storage);
    a.ready().await;
    let mut b = spawn_daemon("b", tmp.path(), &state, &hooks, &storage);
    b.ready().await;
    // Rust side: QueryCallStatus waits on A while the assignment arrives through B.
    let rpc_at = |base: String, method: &'static str, params: Value| async move {
        let call = xmlrpc::MethodCall {
            method: method.to_owned(),
            params: params
                .as_array()
                .map(|p| p.iter().map(xmlrpc::Value::from_json).collect())
                .unwrap_or_default(),
        };
        let text = client()
            .post(format!("{base}/openscape/acme/6060"))
            .body(xmlrpc::write_call(&call))
            .send()
            .await
            .expect("post")
            .text()
            .await
            .expect("body");
        answer(&text)
    };
    let (ua, ub) = (a.url(""), b.url(""));
    assert_eq!(
        code(&rpc_at(ua.clone(), "Initialize", json!(["6060", "x", 10000])).await),
        0
    );
    let info = rpc_at(
        ua.clone(),
        "QueryCallInfo",
        json!(["6060", null, null, null, null, null, null, null, null, "1;"]),
    )
    .await;
    let call = info["CallID"].as_str().expect("CallID").to_owned();
    // The channel's state is shared: B sees the call A created.
    let e = rpc_at(
        ub.clone(),
        "Enqueue",
        json!([call, 1, "Sales", 10, "", ">E", ">C"]),
    )
    .await;
    assert_eq!(code(&e), 0, "{e}");
    let waiting = tokio::spawn({
        let ua = ua.clone();
        let call = call.clone();
        async move {
            let t = Instant::now();
            let r = rpc_at(ua, "QueryCallStatus", json!([call, 8000, ">E", ">P"])).await;
            (t.elapsed(), r)
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, body) = cmd_at(
        &ub,
        "POST",
        &format!("calls/{call}/assign"),
        json!({"extension": "4711"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (elapsed, r) = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(
        (code(&r), r["Extension"].clone()),
        (2, json!("4711")),
        "{r}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "woken by B's commit, not the timeout: {elapsed:?}"
    );
    // And the Python IVR Hold sequence with its IVR on A and the customer on B.
    let (pa, pb) = (ua.clone(), ub.clone());
    let out = tokio::task::spawn_blocking(move || python_flow(&pa, "ivr_hold", Some(&pb)))
        .await
        .expect("python");
    assert!(out["call_id"].is_string(), "{out}");
    drop(a);
    drop(b);
}

#[test]
fn openscape_example_config_section_is_valid() {
    // The shipped example's [tenants.openscape] passes the adapter's check (check-config).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let text = std::fs::read_to_string(&path).expect("example");
    let config = ivrgate::config::Config::parse(&text, &path).expect("parse");
    if let Err(e) = config.validate(ivrgate::adapters::all()) {
        panic!("config/example.toml: {e}");
    }
    // So does the section the tests use; a wrong one names each problem.
    let value: toml::Value = toml::from_str(&settings(MULTITENANT)).expect("toml");
    let section = serde_json::to_value(&value["tenants"]["openscape"]).expect("json");
    use ivrgate_adapter::Adapter as _;
    assert_eq!(
        ivrgate_openscape::OpenScape
            .parse_settings(&section)
            .map(drop),
        Ok(())
    );
    let bad = json!({"transit_numbers": [""], "language": "de"});
    let problems = ivrgate_openscape::OpenScape
        .parse_settings(&bad)
        .map(drop)
        .err()
        .unwrap_or_default();
    assert_eq!(problems.len(), 2, "{problems:?}");
    let unknown = json!({"transit": []});
    assert!(ivrgate_openscape::OpenScape
        .parse_settings(&unknown)
        .is_err());
}

on_both_backends!(current: openscape_monitored_calls_and_devices);

async fn openscape_monitored_calls_and_devices(backend: Backend) {
    let Some((gw, receiver)) = start_on(backend, "").await else {
        return;
    };
    // No call on the device: QueryCallInfo waits within the RpcTimeout, then -701.
    // (RpcTimeout 1 000 ms: the wait is capped at 500 ms; the bound below allows for a
    // loaded machine and still excludes waiting for the RpcTimeout-less forever.)
    initialize(&gw, "36300", 1_000).await;
    let t = Instant::now();
    let a = rpc(
        &gw,
        "36300",
        "QueryCallInfo",
        json!(["36300", ">C", ">A", ">D"]),
    )
    .await;
    assert_eq!(code(&a), -701, "{a}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // A call registered while QueryCallInfo waits is returned at once.
    let url = gw.url("/openscape/acme/36300");
    initialize(&gw, "36300", 10_000).await;
    let waiter = tokio::spawn(async move {
        let body = xmlrpc::write_call(&xmlrpc::MethodCall {
            method: "QueryCallInfo".into(),
            params: ["36300", ">C", ">A", ">D", ">U", ">V", ">F", ">IA", ">ID"]
                .iter()
                .map(|s| xmlrpc::Value::Str((*s).into()))
                .collect(),
        });
        let t = Instant::now();
        let text = client()
            .post(url)
            .body(body)
            .send()
            .await
            .expect("post")
            .text()
            .await
            .expect("body");
        (t.elapsed(), answer(&text))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, b) = cmd(
        &gw,
        "POST",
        "devices/36300/calls",
        json!({"ani": "+1 555 0100", "dnis": "69030", "uuid": "abc", "visits": 2, "fmnq": true, "internal_ani": "4400", "internal_dnis": "36000"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (elapsed, a) = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(code(&a), 0, "{a}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(a["CallID"], b["call"]["call_id"]);
    assert_eq!(
        (a["Visits"].clone(), a["FMNQ"].clone(), a["UUID"].clone()),
        (json!(2), json!(1), json!("abc"))
    );
    let call = a["CallID"].as_str().expect("CallID").to_owned();
    let arrived = receiver.next_of("openscape.call.arrived").await;
    assert_eq!(arrived.json["data"]["monitored"], json!(true));
    // Monitored calls: -310 for the unmonitored-only functions; Transfer's ToDevice codes.
    let a = rpc(&gw, "36300", "ReleaseTransitNumber", json!([call])).await;
    assert_eq!(code(&a), -310, "{a}");
    let a = rpc(&gw, "36300", "Transfer", json!([call, "sip:agent"])).await;
    assert_eq!(code(&a), -913, "{a}");
    let a = rpc(&gw, "36300", "Transfer", json!([call, "+1 (555"])).await;
    assert_eq!(code(&a), -917, "{a}");
    let a = rpc(&gw, "36300", "SetDisplay", json!([call, "IVR Call"])).await;
    assert_eq!(code(&a), 0, "{a}");
    // The command API sees the live call, refuses bad requests, and ends with Disconnect.
    let (s, b) = cmd(&gw, "GET", "calls", Value::Null).await;
    assert_eq!(s, 200);
    assert!(
        b["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .any(|c| c["call_id"] == json!(call)),
        "{b}"
    );
    let (s, b) = cmd(
        &gw,
        "POST",
        &format!("calls/{call}/assign"),
        json!({"extension": "4711"}),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (409, json!("wrong_state")),
        "not queued: {b}"
    );
    let (s, _) = cmd(&gw, "POST", &format!("calls/{call}/fly"), Value::Null).await;
    assert_eq!(s, 404);
    let (s, _) = cmd(&gw, "DELETE", "system", Value::Null).await;
    assert_eq!(s, 405);
    let (s, b) = cmd(&gw, "PUT", "queues/Sales/statistics", json!({"calls": 1})).await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (400, json!("invalid_request")),
        "{b}"
    );
    let (s, _) = cmd(&gw, "POST", "devices/36300/calls", json!({"call_id": call})).await;
    assert_eq!(s, 409, "a CallID is used once");
    let a = rpc(&gw, "36300", "Disconnect", json!([call])).await;
    assert_eq!(code(&a), 0, "{a}");
    let disconnected = receiver.next_of("openscape.call.disconnected").await;
    assert_eq!(disconnected.json["data"]["by"], json!("ivr"));
    let (s, _) = cmd(&gw, "GET", &format!("calls/{call}"), Value::Null).await;
    assert_eq!(s, 410);
    let a = rpc(&gw, "36300", "Disconnect", json!([call])).await;
    assert_eq!(code(&a), -903, "{a}");
    gw.stop().await;
}

#[tokio::test]
async fn openscape_store_refusals_are_low_resources() {
    // The tenant's outbox holds one undelivered event (the receiver refuses them all): a
    // function whose change carries an event is refused with -400, others go on.
    let receiver = Receiver::start().await;
    receiver.answer(|_| Reply::status(500));
    let gw = Gateway::start(
        &receiver.url("/hooks"),
        &format!("outbox_quota = 1\n{}", settings("")),
    )
    .await;
    let call = unmonitored_call(&gw, "6060").await;
    let a = rpc(
        &gw,
        "6060",
        "SetContactData",
        json!([call, "Name", "John Doe"]),
    )
    .await;
    assert_eq!(code(&a), 0, "{a}");
    let a = rpc(&gw, "6060", "Enqueue", json!([call, 1, "Sales", 10])).await;
    assert_eq!(code(&a), -400, "{a}");
    assert_eq!(
        a["ReturnText"],
        json!("The system has low system resources.")
    );
    let a = rpc(&gw, "6060", "QueryCallStatus", json!([call, 0])).await;
    assert_eq!(code(&a), 0, "nothing was enqueued: {a}");
    gw.stop().await;
}

#[test]
fn openscape_command_api_is_documented() {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/command-api.yaml"),
    )
    .expect("docs/command-api.yaml");
    for path in [
        "/api/{tenant}/openscape/calls:",
        "/api/{tenant}/openscape/calls/{callId}:",
        "/api/{tenant}/openscape/calls/{callId}/{order}:",
        "/api/{tenant}/openscape/devices/{device}/calls:",
        "/api/{tenant}/openscape/transit/{number}/arrived:",
        "/api/{tenant}/openscape/queues/{queue}/statistics:",
        "/api/{tenant}/openscape/agents/{agentId}:",
        "/api/{tenant}/openscape/system:",
        "/api/{tenant}/openscape/channels/{channel}:",
    ] {
        assert!(
            yaml.contains(path),
            "{path} missing from docs/command-api.yaml"
        );
    }
    for order in ["assign", "timeout", "transfer", "disconnect", "error"] {
        assert!(yaml.contains(order), "{order}");
    }
}

#[tokio::test]
async fn openscape_figures_from_the_decision_webhook() {
    let (gw, receiver) =
        start(r#"figures_from_webhook = ["queue_statistics", "agent_status", "system_status"]"#)
            .await;
    receiver.answer(|hook| {
        let reply = match hook.json["type"].as_str().unwrap_or("") {
            "decision.queue_statistics" => r#"{"native":{"CallsInQueue":7,"EstimatedWait":90,"AverageWait":60,"OldestCallInQueue":300,"ServiceLevel":75}}"#,
            "decision.agent_status" => r#"{"native":{"ReturnCode":-904}}"#,
            "decision.system_status" => r#"{"native":{"OverallStatus":1,"IndividualServerStates":"RoutingServer=1; TServer=8; CallbackServer=1"}}"#,
            _ => "",
        };
        Reply::ok(reply)
    });
    initialize(&gw, "6060", 10_000).await;
    let a = rpc(
        &gw,
        "6060",
        "QueryQueueStatistics",
        json!(["Sales", ">C", ">E", ">A", ">O", ">S"]),
    )
    .await;
    assert_eq!(
        (
            code(&a),
            a["CallsInQueue"].clone(),
            a["ServiceLevel"].clone()
        ),
        (0, json!(7), json!(75)),
        "{a}"
    );
    let a = rpc(
        &gw,
        "6060",
        "QueryAgentStatus",
        json!(["188001", ">D", ">S"]),
    )
    .await;
    assert_eq!(code(&a), -904, "{a}");
    let a = rpc(&gw, "6060", "QuerySystemStatus", json!([">O", ">S", ">E"])).await;
    assert_eq!((code(&a), a["Entries"].clone()), (0, json!(3)), "{a}");
    let hook = receiver.next_of("decision.queue_statistics").await;
    assert_eq!(hook.json["data"]["queue"], json!("Sales"), "{}", hook.json);
    // A webhook answering nonsense falls back to the pushed (here: counted) figures.
    receiver.answer(|_| Reply::ok(r#"{"native":{"CallsInQueue":-1}}"#));
    let a = rpc(
        &gw,
        "6060",
        "QueryQueueStatistics",
        json!(["Sales", ">C", ">E", ">A", ">O", ">S"]),
    )
    .await;
    assert_eq!((code(&a), a["CallsInQueue"].clone()), (0, json!(0)), "{a}");
    // JSON with the function in the path and the parameters as the body.
    let r = client()
        .post(gw.url("/openscape/acme/6060/QueryQueueStatistics"))
        .json(&json!(["Sales", ">C", ">E", ">A", ">O", ">S"]))
        .send()
        .await
        .expect("post");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["ReturnCode"], json!(0), "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn openscape_event_payloads_are_pinned() {
    let (gw, receiver) = start("").await;
    monitored_call(&gw, "36200", "1341023126268002", true).await;
    let a = rpc(
        &gw,
        "36200",
        "SetContactData",
        json!(["1341023126268002", "Name", "John Doe"]),
    )
    .await;
    assert_eq!(code(&a), 0);
    let enqueue = fixture("openscape/4.07_Enqueue.xml");
    let a = post_xml(&gw, "36200", enqueue).await;
    assert_eq!(code(&a), 0, "{a}");
    let (s, _) = cmd(
        &gw,
        "POST",
        "calls/1341023126268002/assign",
        json!({"extension": "4711"}),
    )
    .await;
    assert_eq!(s, 200);
    let enqueued = receiver.next_of("openscape.call.enqueued").await;
    assert!(enqueued.verifies());
    // data.call_id is ivrgate's id, the same on every event of the call; CallID correlates.
    let call_id = enqueued.json["data"]["call_id"]
        .as_str()
        .expect("call_id")
        .to_owned();
    assert!(call_id.starts_with("call_"), "{call_id}");
    check_golden("openscape/event.call.enqueued.json", &enqueued.json);
    let assigned = receiver.next_of("openscape.call.assigned").await;
    assert_eq!(assigned.json["data"]["call_id"], json!(call_id));
    check_golden("openscape/event.call.assigned.json", &assigned.json);
    verify_with_python(&assigned);
    gw.stop().await;
}

/// A channel whose RpcTimeout is shorter than the tenant's routing deadline: the decision's
/// deadline shrinks to what the IVR waits, so the fallback (-915) arrives before the IVR
/// gives up, even though the webhook would answer within the configured deadline.
#[tokio::test]
async fn openscape_routing_deadline_follows_the_channels_rpc_timeout() {
    let receiver = Receiver::start().await;
    receiver.answer(|hook| {
        if hook.json["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("decision.")
        {
            Reply::ok(r#"{"action":"enqueue","queue":"Sales"}"#).after(Duration::from_secs(4))
        } else {
            Reply::ok("")
        }
    });
    let extra = format!(
        "{}\n[tenants.decisions.routing_info]\ndeadline_ms = 9000\n",
        settings("")
    );
    let gw = Gateway::start(&receiver.url("/hooks"), &extra).await;
    let id = unmonitored_call_with(&gw, "7001", 2_000).await;
    let started = std::time::Instant::now();
    let a = rpc(
        &gw,
        "7001",
        "QueryRoutingInfo",
        json!([id, ">D", ">A", ">W", ">De", ">P", ">E", ">C", ""]),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(code(&a), -915, "{a}");
    assert!(
        took < Duration::from_millis(1_900),
        "answered after {took:?}, beyond the IVR's 2000 ms RpcTimeout"
    );
    let decision = receiver.next_of("decision.routing_info").await;
    assert_eq!(decision.json["data"]["deadline_ms"], json!(1000));
    gw.stop().await;
}
