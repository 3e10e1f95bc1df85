//! Vendor data kept exactly: numbers keep their text (no rounding through a float, no refusal
//! of a value ivrgate does not need), and text in a declared charset reaches the webhook as
//! the characters the platform meant, or, when its bytes cannot be decoded, recoverable.
//! Every check reads the delivered webhook's raw bytes.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Posts one request, checks the platform's answer and returns the webhook it produced.
async fn deliver(path: &str, content_type: &str, body: &str, answer_has: &str) -> Hook {
    let rx = Receiver::start().await;
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    let (status, _, answer) = gw.post(path, content_type, body.to_owned()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(answer_has), "answer: {answer}");
    let hook = rx.next().await;
    assert!(hook.verifies(), "signature");
    gw.stop().await;
    hook
}

fn raw(hook: &Hook) -> &str {
    std::str::from_utf8(&hook.body).expect("webhooks are UTF-8")
}

fn assert_has(hook: &Hook, wanted: &[&str]) {
    let body = raw(hook);
    for w in wanted {
        assert!(body.contains(w), "webhook lacks {w}: {body}");
    }
}

#[tokio::test]
async fn json_cdr_numbers_keep_their_exact_text() {
    let body = r#"{"ivruniqueid": "N1", "status": "ANSWER", "duration": 999999999999999999999999999999,
        "queueid": -9223372036854775809, "price": 0.10, "far": 1e400, "tiny": -1E-400, "n": 5}"#;
    let hook = deliver("/voicenter/acme/cdr", "application/json", body, "\"err\":0").await;
    assert_eq!(hook.json["type"], "call.cdr");
    assert_has(
        &hook,
        &[
            r#""duration":999999999999999999999999999999"#,
            r#""queueid":-9223372036854775809"#,
            r#""price":0.10"#,
            r#""far":1e+400"#,
            r#""tiny":-1e-400"#,
            r#""n":5"#,
            // the neutral fields carry the same integers, exactly
            r#""duration_s":999999999999999999999999999999"#,
            r#""queue_id":-9223372036854775809"#,
        ],
    );
}

#[tokio::test]
async fn lenient_json_numbers_keep_their_exact_text() {
    // unquoted keys and a duplicate key take the lenient reader
    let body = "{ivruniqueid: 'N2', status: 'ANSWER', dialtime: 18446744073709551616, \
                far: 1, far: -1e400, }";
    let hook = deliver("/voicenter/acme/cdr", "application/json", body, "\"err\":0").await;
    assert_has(
        &hook,
        &[
            r#""dialtime":18446744073709551616"#,
            r#""far":-1e+400"#,
            r#""dial_time_s":18446744073709551616"#,
        ],
    );
}

#[tokio::test]
async fn xmlrpc_cdr_numbers_keep_their_exact_text() {
    let member = |name: &str, value: &str| {
        format!("<member><name>{name}</name><value>{value}</value></member>")
    };
    let body = format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>CDR</methodName><params><param><value><struct>{}</struct></value></param></params></methodCall>",
        [
            member("ivruniqueid", "<string>N3</string>"),
            member("status", "<string>ANSWER</string>"),
            member("duration", "<int>99999999999999999999999</int>"),
            member("queueid", "<i8> -9223372036854775809 </i8>"),
            member("nan", "<double>NaN</double>"),
            member("minus_inf", "<double>-Infinity</double>"),
            member("far", "<double>1e400</double>"),
            member("tenth", "<double>0.10</double>"),
            member("half", "<double>.5</double>"),
            member("small", "<i4>7</i4>"),
        ]
        .concat()
    );
    let hook = deliver("/voicenter/acme/cdr", "text/xml", &body, "<int>0</int>").await;
    assert_has(
        &hook,
        &[
            r#""duration":99999999999999999999999"#,
            r#""queueid":-9223372036854775809"#,
            r#""nan":"NaN""#,
            r#""minus_inf":"-Infinity""#,
            r#""far":1e+400"#,
            r#""tenth":0.10"#,
            r#""half":0.5"#,
            r#""small":7"#,
            r#""duration_s":99999999999999999999999"#,
            r#""queue_id":-9223372036854775809"#,
        ],
    );
    assert!(!raw(&hook).contains("null"), "{}", raw(&hook));
}

#[tokio::test]
async fn form_cdr_numbers_keep_their_exact_text() {
    let body = "ivruniqueid=N4&status=ANSWER&duration=999999999999999999999999999999\
                &queueid=-9223372036854775809&price=0.10";
    let hook = deliver(
        "/voicenter/acme/cdr",
        "application/x-www-form-urlencoded",
        body,
        "\"err\":0",
    )
    .await;
    assert_has(
        &hook,
        &[
            // form values are text: kept as text in vendor_fields
            r#""duration":"999999999999999999999999999999""#,
            r#""queueid":"-9223372036854775809""#,
            // and read as numbers, exactly, in the neutral fields
            r#""duration_s":999999999999999999999999999999"#,
            r#""queue_id":-9223372036854775809"#,
            r#""price":0.10"#,
        ],
    );
}

/// Decision answers go through serde's flatten and internally tagged enums, which see numbers
/// differently once numbers keep their text: numeric fields of neutral and native answers
/// still reach the platform, and attached numbers come back exactly on the call's events.
#[tokio::test]
async fn decision_answers_with_numbers_reach_the_platform() {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        let menu = hook.json["data"]["vendor_fields"]["MENU"]
            .as_str()
            .unwrap_or("");
        match (hook.json["type"].as_str().unwrap_or(""), menu) {
            ("decision.ivr_action", "-1") => Reply::ok(
                r#"{"action":"menu","prompt":"welcome","menu":"main","repeat":3,"pause_s":2,
                    "max_digits":4,"attach":{"big":123456789012345678901234567890,"ratio":0.50}}"#,
            ),
            ("decision.ivr_action", "main") => Reply::ok(
                r#"{"action":"dial","targets":["0540123456"],"ring_timeout_s":35,
                    "max_duration_s":600,"on_failure":{"target":"m2","repeat":2,"max_digits":3,"pause_s":1}}"#,
            ),
            ("decision.ivr_action", _) => Reply::ok(
                r#"{"STATUS":0,"ACTION":"MENU","DATA":{"REC":"r","LOOP":2,"DELAY":1,"SIZE":4,
                    "MENU":"m3","VALIDATION":1}}"#,
            ),
            _ => Reply::ok("{}"),
        }
    });
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    let ask = |menu: &str| {
        format!(
            r#"{{"METHOD":"GET_IVR_ACTION","DATA":{{"IVR_UNIQUE_ID":"D1","CALLER_ID":"0501234567",
                "DID":"0722776772","MENU":"{menu}","DTMF":"1"}}}}"#
        )
    };
    let post = |body: String| {
        let gw = &gw;
        async move {
            let (status, _, answer) = gw.post("/voicenter/acme", "application/json", body).await;
            assert_eq!(status, 200, "{answer}");
            serde_json::from_str::<Value>(&answer).expect("JSON answer")
        }
    };

    let menu = post(ask("-1")).await;
    assert_eq!(menu["ACTION"], "MENU", "{menu}");
    assert_eq!(menu["DATA"]["LOOP"], 3, "{menu}");
    assert_eq!(menu["DATA"]["DELAY"], 2, "{menu}");
    assert_eq!(menu["DATA"]["SIZE"], 4, "{menu}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let dial = post(ask("main")).await;
    assert_eq!(dial["ACTION"], "CALL", "{dial}");
    assert_eq!(dial["DATA"]["CALL_MAX_DIAL"], 35, "{dial}");
    assert_eq!(dial["DATA"]["CALL_MAX"], 600, "{dial}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let native = post(ask("main2")).await;
    assert_eq!(native["ACTION"], "MENU", "{native}");
    assert_eq!(native["DATA"]["LOOP"], 2, "{native}");
    assert_eq!(native["DATA"]["SIZE"], 4, "{native}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, _, answer) = gw
        .post(
            "/voicenter/acme",
            "application/json",
            r#"{"METHOD":"HANGUP_CALL","DATA":{"IVR_UNIQUE_ID":"D1","CALL_STATUS":"ANSWERED"}}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let hangup = rx.next_of("call.hangup").await;
    assert_has(
        &hangup,
        &[r#""big":123456789012345678901234567890"#, r#""ratio":0.50"#],
    );
    gw.stop().await;
}

/// Issue 8, defect 9, exactly as reported: a windows-1255 form CDR arrives as "שלום".
#[tokio::test]
async fn form_cdr_in_windows_1255_arrives_as_hebrew() {
    let hook = deliver(
        "/voicenter/acme/cdr",
        "application/x-www-form-urlencoded; charset=windows-1255",
        "ivruniqueid=X1&status=ANSWER&queueid=7&queuename=%F9%EC%E5%ED",
        "\"err\":0",
    )
    .await;
    assert_eq!(hook.json["data"]["vendor_fields"]["queuename"], "שלום");
    assert_eq!(hook.json["data"]["queue_name"], "שלום");
    assert_has(&hook, &[r#""queuename":"שלום""#]);
    assert!(!raw(&hook).contains('\u{FFFD}'), "{}", raw(&hook));
    assert!(hook.json["data"].get("undecodable").is_none());
}

/// Bytes the request's charset cannot read are delivered recoverable (base64 under
/// data.undecodable), logged and counted, and the CDR is stored and acknowledged.
#[tokio::test]
async fn undecodable_form_and_query_values_arrive_recoverable() {
    let rx = Receiver::start().await;
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    let form = "application/x-www-form-urlencoded";
    for (content_type, body) in [
        // windows-1255 bytes in a form that declares no charset (so UTF-8)
        (form, "ivruniqueid=U1&status=ANSWER&queuename=%F9%EC%E5%ED"),
        // a charset label that names no encoding: ASCII values are read, the rest is kept
        (
            "application/x-www-form-urlencoded; charset=x-foo",
            "ivruniqueid=U2&status=ANSWER&queuename=%F9%EC%E5%ED",
        ),
        // 0xFB is unassigned in windows-1255
        (
            "application/x-www-form-urlencoded; charset=windows-1255",
            "ivruniqueid=U3&status=ANSWER&queuename=%F9%FB",
        ),
    ] {
        let (status, _, answer) = gw.post("/voicenter/acme/cdr", content_type, body).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("\"err\":0"), "{content_type}: {answer}");
    }
    // a GET CDR: the query string, in the charset the Content-Type declares when there is one
    let (status, answer) = gw
        .get("/voicenter/acme/cdr?ivruniqueid=U4&status=ANSWER&queuename=%F9%EC%E5%ED")
        .await;
    assert_eq!(status, 200, "{answer}");
    let response = client()
        .get(gw.url("/voicenter/acme/cdr?ivruniqueid=U5&status=ANSWER&queuename=%F9%EC%E5%ED"))
        .header("content-type", "text/plain; charset=windows-1255")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);

    let mut by_call = std::collections::BTreeMap::new();
    for _ in 0..5 {
        let hook = rx.next().await;
        let id = hook.json["data"]["correlation"]["ivruniqueid"]
            .as_str()
            .expect("call id")
            .to_owned();
        by_call.insert(id, hook);
    }
    for (id, bytes) in [
        ("U1", "+ezl7Q=="),
        ("U2", "+ezl7Q=="),
        ("U3", "+fs="),
        ("U4", "+ezl7Q=="),
    ] {
        let data = &by_call[id].json["data"];
        assert_eq!(data["undecodable"]["queuename"], bytes, "{id}: {data}");
        // the field is still there, as a lossy rendering
        assert!(
            data["vendor_fields"]["queuename"]
                .as_str()
                .is_some_and(|v| v.contains('\u{FFFD}')),
            "{id}: {data}"
        );
        assert_eq!(data["vendor_fields"]["status"], "ANSWER", "{id}");
    }
    let u5 = &by_call["U5"].json["data"];
    assert_eq!(u5["vendor_fields"]["queuename"], "שלום", "{u5}");
    assert!(u5.get("undecodable").is_none(), "{u5}");

    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains("ivrgate_undecodable_fields_total{adapter=\"voicenter\"} 4"),
        "{metrics}"
    );
    gw.stop().await;
}

/// Posts raw bytes; returns status and answer.
async fn post_bytes(gw: &Gateway, path: &str, content_type: &str, body: Vec<u8>) -> String {
    let (status, _, answer) = gw.post(path, content_type, body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// XML-RPC and JSON bodies with bytes their charset cannot read inside string values are
/// stored and delivered like forms (the values recoverable under data.undecodable); a byte
/// outside any value (a member name) still refuses the body with the platform's parse error.
#[tokio::test]
async fn undecodable_bytes_in_xmlrpc_and_json_values_arrive_recoverable() {
    let rx = Receiver::start().await;
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    let shalom: &[u8] = &[0xF9, 0xEC, 0xE5, 0xED];
    let with = |before: &str, after: &str| {
        let mut body = before.as_bytes().to_vec();
        body.extend_from_slice(shalom);
        body.extend_from_slice(after.as_bytes());
        body
    };
    let xml = with(
        "<?xml version=\"1.0\"?><methodCall><methodName>CDR</methodName><params><param><value><struct>\
         <member><name>ivruniqueid</name><value><string>J1</string></value></member>\
         <member><name>status</name><value><string>ANSWER</string></value></member>\
         <member><name>queuename</name><value><string>",
        "</string></value></member></struct></value></param></params></methodCall>",
    );
    let answer = post_bytes(&gw, "/voicenter/acme/cdr", "text/xml", xml).await;
    assert!(answer.contains("<int>0</int>"), "{answer}");
    let json = with(
        r#"{"ivruniqueid": "J2", "status": "ANSWER", "IVR": {"path": [1, ""#,
        r#""]}, "queuename": "x"}"#,
    );
    let answer = post_bytes(&gw, "/voicenter/acme/cdr", "application/json", json).await;
    assert!(answer.contains("\"err\":0"), "{answer}");
    // in a member name: refused, as before, and nothing is stored
    let bad_name = with(r#"{"ivruniqueid": "J3", ""#, r#"": 1}"#);
    let answer = post_bytes(&gw, "/voicenter/acme/cdr", "application/json", bad_name).await;
    assert!(
        answer.contains("\"err\":1") && answer.contains("UTF-8"),
        "{answer}"
    );

    let xml_hook = rx.next().await;
    let json_hook = rx.next().await;
    assert_eq!(
        xml_hook.json["data"]["undecodable"]["queuename"],
        "+ezl7Q==",
        "{}",
        raw(&xml_hook)
    );
    assert_eq!(xml_hook.json["data"]["vendor_fields"]["status"], "ANSWER");
    assert_eq!(
        json_hook.json["data"]["undecodable"]["IVR.path.1"],
        "+ezl7Q==",
        "{}",
        raw(&json_hook)
    );
    assert_eq!(json_hook.json["data"]["vendor_fields"]["queuename"], "x");
    assert!(rx.next_within(Duration::from_millis(500)).await.is_none());
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains("ivrgate_undecodable_fields_total{adapter=\"voicenter\"} 2"),
        "{metrics}"
    );
    gw.stop().await;
}
