//! Every Voicenter request example of seed 003 (sections 2, 4, 5, 12) through the real HTTP
//! server: the webhook it produces is pinned by a golden file, and the answer Voicenter gets
//! is compared by meaning with the seed's own response example (see docs/seed-errata.md).

use std::time::Duration;

use ivrgate_wire::{json::parse_lenient, xmlrpc, Limits};
use serde_json::{json, Value};

use crate::support::*;

/// What a response means: XML-RPC or JSON parsed to JSON; numeric strings read as numbers
/// and LANGUAGE lower-cased, the two differences the seed's own examples disagree on.
fn meaning(content_type: &str, body: &str) -> Value {
    let value = if content_type.contains("xml") || body.trim_start().starts_with('<') {
        match xmlrpc::parse_response(body, &Limits::default()).expect("well-formed XML-RPC") {
            Ok(params) => params
                .first()
                .map(xmlrpc::Value::to_json)
                .unwrap_or(Value::Null),
            Err(fault) => json!({"fault": fault.code}),
        }
    } else {
        parse_lenient(body, &Limits::default()).expect("JSON answer")
    };
    canonical(&value)
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let k = k.trim().to_owned();
                    let v = if k == "LANGUAGE" {
                        json!(v.as_str().unwrap_or("").to_lowercase())
                    } else {
                        canonical(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(n) if !s.trim().starts_with('0') || s.trim() == "0" => json!(n),
            _ => json!(s.trim()),
        },
        other => other.clone(),
    }
}

struct Case<'a> {
    /// Golden file name under tests/fixtures/voicenter/golden/.
    name: &'a str,
    get: bool,
    path: &'a str,
    content_type: &'a str,
    body: String,
    /// The customer's answer to a decision webhook (a file under responses/).
    answer: Option<&'a str>,
    /// The webhook type expected, if any.
    webhook: Option<&'a str>,
    /// What Voicenter must get back, by meaning.
    expect: Value,
}

async fn check(case: Case<'_>) {
    let rx = Receiver::start().await;
    let answer = case
        .answer
        .map(|f| fixture(&format!("voicenter/responses/{f}")));
    rx.answer(move |hook| match (&answer, hook.json["type"].as_str()) {
        (Some(a), Some(t)) if t.starts_with("decision.") => Reply::ok(a.clone()),
        _ => Reply::ok("{}"),
    });
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    let (status, content_type, body) = if case.get {
        gw.get_full(case.path).await
    } else {
        gw.post(case.path, case.content_type, case.body.clone())
            .await
    };
    assert_eq!(status, 200, "{}: {body}", case.name);
    assert_eq!(
        meaning(&content_type, &body),
        canonical(&case.expect),
        "{}: {body}",
        case.name
    );
    match case.webhook {
        Some(kind) => {
            let hook = rx.next().await;
            assert_eq!(hook.json["type"], kind, "{}", case.name);
            assert!(hook.verifies(), "{}: signature", case.name);
            check_golden(&format!("voicenter/golden/{}.json", case.name), &hook.json);
        }
        None => assert!(
            rx.next_within(Duration::from_millis(800)).await.is_none(),
            "{}: no webhook expected",
            case.name
        ),
    }
    gw.stop().await;
}

fn xml(body: &str) -> Value {
    meaning("text/xml", body)
}

#[tokio::test]
async fn get_ivr_action_xmlrpc_answered_in_xmlrpc() {
    check(Case {
        name: "get_ivr_action.xmlrpc",
        get: false,
        path: "/voicenter/acme",
        content_type: "text/xml",
        body: fixture("voicenter/get_ivr_action.xmlrpc.xml"),
        answer: Some("menu.json"),
        webhook: Some("decision.ivr_action"),
        expect: parse_lenient(
            &fixture("voicenter/responses/menu.json"),
            &Limits::default(),
        )
        .expect("seed menu"),
    })
    .await;
}

#[tokio::test]
async fn get_ivr_action_json_with_a_native_call_answer() {
    check(Case {
        name: "get_ivr_action.json",
        get: false,
        path: "/voicenter/acme",
        content_type: "application/json",
        body: fixture("voicenter/get_ivr_action.json"),
        answer: Some("call.json"),
        webhook: Some("decision.ivr_action"),
        expect: parse_lenient(
            &fixture("voicenter/responses/call.json"),
            &Limits::default(),
        )
        .expect("seed call"),
    })
    .await;
}

#[tokio::test]
async fn get_ivr_action_with_the_seeds_xmlrpc_hangup_answer() {
    // The seed's XML-RPC HANGUP answer, given by the customer as JSON, comes back as XML-RPC.
    check(Case {
        name: "get_ivr_action.hangup",
        get: false,
        path: "/voicenter/acme",
        content_type: "text/xml",
        body: fixture("voicenter/get_ivr_action.xmlrpc.xml"),
        answer: Some("hangup.json"),
        webhook: Some("decision.ivr_action"),
        expect: xml(&fixture("voicenter/responses/hangup.xml")),
    })
    .await;
}

#[tokio::test]
async fn hangup_call_xmlrpc_and_json() {
    check(Case {
        name: "hangup_call.xmlrpc",
        get: false,
        path: "/voicenter/acme",
        content_type: "text/xml",
        body: fixture("voicenter/hangup_call.xml"),
        answer: None,
        webhook: Some("call.hangup"),
        expect: xml(&fixture("voicenter/responses/hangup_call.xml")),
    })
    .await;
    check(Case {
        name: "hangup_call.json",
        get: false,
        path: "/voicenter/acme",
        content_type: "application/json",
        body: fixture("voicenter/hangup_call.json"),
        answer: None,
        webhook: Some("call.hangup"),
        expect: parse_lenient(
            &fixture("voicenter/responses/hangup_call.json"),
            &Limits::default(),
        )
        .expect("seed"),
    })
    .await;
}

#[tokio::test]
async fn cdr_in_every_encoding() {
    let ok_xml = xml(&fixture("voicenter/responses/cdr_ok.xml"));
    let ok_json = parse_lenient(
        &fixture("voicenter/responses/cdr_ok.json"),
        &Limits::default(),
    )
    .expect("seed");
    for (name, path, content_type, body, expect) in [
        (
            "cdr.xmlrpc",
            "/voicenter/acme/cdr",
            "text/xml",
            fixture("voicenter/cdr.xml"),
            ok_xml.clone(),
        ),
        (
            "cdr.xmlrpc.main_url",
            "/voicenter/acme",
            "text/xml",
            fixture("voicenter/cdr.xml"),
            ok_xml,
        ),
        (
            "cdr.json",
            "/voicenter/acme/cdr",
            "application/json",
            fixture("voicenter/cdr.json"),
            ok_json.clone(),
        ),
        (
            "cdr.form",
            "/voicenter/acme/cdr",
            "application/x-www-form-urlencoded",
            fixture("voicenter/cdr_form.txt"),
            ok_json.clone(),
        ),
        (
            "cdr.sdk",
            "/voicenter/acme/cdr",
            "application/json",
            fixture("voicenter/cdr_sdk.json"),
            ok_json.clone(),
        ),
    ] {
        check(Case {
            name,
            get: false,
            path,
            content_type,
            body,
            answer: None,
            webhook: Some("call.cdr"),
            expect,
        })
        .await;
    }
    let query = format!(
        "/voicenter/acme/cdr?{}",
        fixture("voicenter/cdr_form.txt").trim()
    );
    check(Case {
        name: "cdr.get",
        get: true,
        path: &query,
        content_type: "",
        body: String::new(),
        answer: None,
        webhook: Some("call.cdr"),
        expect: ok_json,
    })
    .await;
}

#[tokio::test]
async fn a_cdr_without_a_call_id_is_a_parse_error_and_no_event() {
    check(Case {
        name: "cdr.page1",
        get: false,
        path: "/voicenter/acme/cdr",
        content_type: "text/xml",
        body: fixture("voicenter/cdr_page1.xml"),
        answer: None,
        webhook: None,
        expect: json!({"err": 1, "errdesc": "parse error: missing call id (IVR_UNIQUE_ID / ivruniqueid)"}),
    })
    .await;
}

#[tokio::test]
async fn layer_ivr_seed_and_sdk_forms() {
    check(Case {
        name: "layer_input",
        get: false,
        path: "/voicenter/acme",
        content_type: "application/json",
        body: fixture("voicenter/layer_input.json"),
        answer: Some("layer_go_to_layer.json"),
        webhook: Some("decision.layer_input"),
        expect: json!({"STATUS": 0, "ACTION": "GO_TO_LAYER", "LAYER": 22, "CALLER_NAME": "Shlomi",
            "CUSTOM_DATA": {"xxx": "111", "yyy ": "222", "zzz": "333"}}),
    })
    .await;
    check(Case {
        name: "layer_input.sdk",
        get: false,
        path: "/voicenter/acme",
        content_type: "application/json",
        body: fixture("voicenter/layer_input_sdk.json"),
        answer: Some("layer_dial.json"),
        webhook: Some("decision.layer_input"),
        expect: json!({"STATUS": 0, "ACTION": "DIAL", "MAX_CALL_DURATION": 7200, "MAX_DIAL_DURATION": 30,
            "RECORDING": "yes", "TARGETS": [{"TARGET": "0501234567", "TYPE": "PHONE"}],
            "CALLER_ID": "0722776772", "CALLER_NAME": "Voicenter", "NEXT_VO_ID": 1,
            "ANSWER_NEXT_VO_ID": 1, "UNAVAILABLE_VO_ID": 2,
            "CUSTOM_DATA": {"xxx": "111", "yyy ": "222", "zzz": "333"}}),
    })
    .await;
}

#[tokio::test]
async fn popup_lookup() {
    let path = format!(
        "/voicenter/acme/popup?{}",
        fixture("voicenter/popup.query").trim()
    );
    check(Case {
        name: "popup",
        get: true,
        path: &path,
        content_type: "",
        body: String::new(),
        answer: Some("popup.json"),
        webhook: Some("decision.caller_lookup"),
        expect: parse_lenient(
            &fixture("voicenter/responses/popup.json"),
            &Limits::default(),
        )
        .expect("seed"),
    })
    .await;
}
