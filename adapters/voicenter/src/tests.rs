//! The adapter in isolation: a fake gateway, the seed's own examples as fixtures.

use super::*;
use ivrgate_adapter::action::Goto;
use ivrgate_adapter::{FallbackReason, RecordError};
use ivrgate_wire::Limits;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/voicenter/",
            $name
        ))
    };
}

#[derive(Clone, Copy, PartialEq)]
enum RecordMode {
    Store,
    Fail,
}

/// Records what the adapter submits; answers decisions with a scripted answer.
struct FakeGateway {
    answer: Option<Answer>,
    attached: Map<String, Value>,
    mode: RecordMode,
    decisions: Mutex<Vec<DecisionRequest>>,
    events: Mutex<Vec<EventSubmission>>,
    stored: Mutex<HashMap<Vec<u8>, StoredResponse>>,
}

impl FakeGateway {
    fn new() -> Self {
        FakeGateway {
            answer: None,
            attached: Map::new(),
            mode: RecordMode::Store,
            decisions: Mutex::default(),
            events: Mutex::default(),
            stored: Mutex::default(),
        }
    }
    fn answering(answer: Answer) -> Self {
        FakeGateway {
            answer: Some(answer),
            ..FakeGateway::new()
        }
    }
    fn decisions(&self) -> Vec<DecisionRequest> {
        self.decisions.lock().expect("lock").clone()
    }
    fn events(&self) -> Vec<EventSubmission> {
        self.events.lock().expect("lock").clone()
    }
}

impl Gateway for FakeGateway {
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let (answer, source) = match &self.answer {
                Some(answer) => (answer.clone(), AnswerSource::Customer),
                None => (
                    (request.point.default_fallback)(),
                    AnswerSource::Fallback(FallbackReason::Timeout),
                ),
            };
            assert_eq!((request.point.validate)(&answer), Ok(()));
            self.decisions.lock().expect("lock").push(request);
            Decision {
                decision_id: "dec_1".into(),
                call_id: Some("call_1".into()),
                answer,
                source,
                attached: self.attached.clone(),
            }
        })
    }

    fn record<'a>(
        &'a self,
        event: EventSubmission,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async move {
            if self.mode == RecordMode::Fail {
                return Err(RecordError::StorageFull);
            }
            let dedup = event.dedup.clone().expect("events carry a dedup key");
            self.events.lock().expect("lock").push(event);
            let mut stored = self.stored.lock().expect("lock");
            if let Some(previous) = stored.get(&dedup.key) {
                return Ok(Recorded::Duplicate(previous.clone()));
            }
            stored.insert(dedup.key, dedup.response);
            Ok(Recorded::New {
                event_id: "evt_1".into(),
                call_id: Some("call_1".into()),
                seq: Some(1),
            })
        })
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }
}

fn inbound(
    method: http::Method,
    sub_path: &str,
    content_type: Option<&str>,
    body: &str,
    query: Option<&str>,
) -> Inbound {
    let mut headers = http::HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_str(ct).expect("header"),
        );
    }
    Inbound {
        tenant: "acme".into(),
        method,
        path: ivrgate_adapter::PathSegments::from_decoded(sub_path.split('/')),
        query: query.map(str::to_owned),
        headers,
        body: Bytes::copy_from_slice(body.as_bytes()),
        peer: "127.0.0.1:9".parse().expect("addr"),
        mask_phones: true,
        max_depth: 32,
    }
}

fn post(sub_path: &str, content_type: &str, body: &str) -> Inbound {
    inbound(http::Method::POST, sub_path, Some(content_type), body, None)
}

async fn run(gateway: &FakeGateway, request: Inbound) -> Handled {
    Voicenter.handle(gateway, request).await
}

fn content_type(handled: &Handled) -> &str {
    handled
        .response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The meaning of a reply: the JSON tree of a JSON body or of the XML-RPC response's value.
fn meaning(handled: &Handled) -> Value {
    assert_eq!(handled.response.status(), 200);
    let body = std::str::from_utf8(handled.response.body()).expect("utf-8");
    if content_type(handled).starts_with("text/xml") {
        xml_meaning(body)
    } else {
        serde_json::from_str(body).expect("strict json")
    }
}

fn xml_meaning(xml: &str) -> Value {
    let params = xmlrpc::parse_response(xml, &Limits::default())
        .expect("xml-rpc")
        .expect("not a fault");
    assert_eq!(params.len(), 1);
    params[0].to_json()
}

fn lenient(text: &str) -> Value {
    ivrgate_wire::json::parse_lenient(text, &Limits::default()).expect("lenient json")
}

fn action(action: Action) -> Answer {
    Answer::Action(Envelope::new(action))
}

// ---------------------------------------------------------------------------------------------
// Requests: every seed example reaches the right call with the right fields
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_ivr_action_xmlrpc_becomes_an_ivr_action_decision() {
    let gateway = FakeGateway::new();
    let handled = run(
        &gateway,
        post("", "text/xml", fixture!("get_ivr_action.xmlrpc.xml")),
    )
    .await;
    assert_eq!(handled.method, "GET_IVR_ACTION");
    assert_eq!(handled.outcome, "fallback");
    assert!(content_type(&handled).starts_with("text/xml"));
    assert_eq!(meaning(&handled), json!({"STATUS": 1}));

    let decisions = gateway.decisions();
    let request = &decisions[0];
    assert_eq!(request.tenant, "acme");
    assert_eq!(request.point.kind, "ivr_action");
    // The id split across a line inside <string> is rejoined (erratum).
    assert_eq!(
        request.call.vendor_call_id.as_deref(),
        Some("ced4619f30fc17182d8e41ddf4d6869X")
    );
    assert_eq!(
        request.call.correlation,
        json!({"IVR_UNIQUE_ID": "ced4619f30fc17182d8e41ddf4d6869X"})
            .as_object()
            .cloned()
            .expect("object")
    );
    assert_eq!(
        Value::Object(request.data.clone()),
        json!({
            "from": "0540000000", "to": "0730000000", "caller_name": "017W",
            "dtmf": "", "menu": "-1", "previous_menu": "-1"
        })
    );
    // Vendor fields stay untouched, whitespace of the split id included.
    assert_eq!(request.vendor_fields["CALLER_NAME"], json!("017W"));
    assert!(request.vendor_fields["IVR_UNIQUE_ID"]
        .as_str()
        .is_some_and(|id| id.contains('\n')));
}

#[tokio::test]
async fn get_ivr_action_json_with_unquoted_keys() {
    let gateway = FakeGateway::new();
    let handled = run(
        &gateway,
        post("", "application/json", fixture!("get_ivr_action.json")),
    )
    .await;
    assert_eq!(content_type(&handled), "application/json");
    assert_eq!(meaning(&handled), json!({"STATUS": 1}));
    let request = &gateway.decisions()[0];
    assert_eq!(
        request.call.vendor_call_id.as_deref(),
        Some("1bcd7954224861f85a2d70612f248282")
    );
    assert_eq!(request.data["from"], json!("n5zx1C2a"));
    assert_eq!(request.data["to"], json!("0732793256"));
    assert_eq!(request.data["menu"], json!("-1"));
    assert_eq!(request.vendor_fields["PREVIOUS_MENU"], json!("-1"));
}

#[tokio::test]
async fn hangup_call_xmlrpc_is_recorded_then_acknowledged() {
    let gateway = FakeGateway::new();
    let handled = run(&gateway, post("", "text/xml", fixture!("hangup_call.xml"))).await;
    assert_eq!(handled.method, "HANGUP_CALL");
    assert_eq!(handled.outcome, "ok");
    // The seed's response example (closed by </methodCall>, erratum) means STATUS 0.
    let seed = xml_meaning(fixture!("responses/hangup_call.xml"));
    assert_eq!(seed, json!({"STATUS": 0}));
    assert_eq!(meaning(&handled), seed);

    let events = gateway.events();
    let event = &events[0];
    assert_eq!(event.event_type, "call.hangup");
    assert_eq!(event.vendor, "voicenter");
    assert_eq!(event.effect, CallEffect::End);
    assert_eq!(
        event.call.vendor_call_id.as_deref(),
        Some("ced4619f30fc17182d8e41ddf4d6869X")
    );
    // 15616841651 is not a plausible epoch: kept raw, no UTC, no occurred_at.
    assert_eq!(
        event.data["time"],
        json!({"raw": 15616841651_i64, "utc": null})
    );
    assert_eq!(
        event.data["start_time"],
        json!({"raw": 15616841612_i64, "utc": null})
    );
    assert_eq!(event.occurred_at, None);
    assert_eq!(event.data["status"], json!("answered"));
    assert_eq!(event.data["duration_s"], json!(125));
    assert_eq!(event.data["dial_time_s"], json!(15));
    assert_eq!(event.data["from"], json!("0540000000"));
    assert_eq!(event.data["to"], json!("0730000000"));
    assert_eq!(event.data["target"], json!("0500000555"));
    assert_eq!(event.vendor_fields["CALL_DAILTIME"], json!(15));
    assert_eq!(event.vendor_fields["CALL_STATUS"], json!("ANSWERED"));
    let dedup = event.dedup.as_ref().expect("dedup");
    assert!(dedup
        .key
        .starts_with(b"HANGUP_CALL\nced4619f30fc17182d8e41ddf4d6869X\n"));
    assert_eq!(dedup.key.len(), "HANGUP_CALL\n".len() + 32 + 1 + 64);
    assert_eq!(dedup.response.body, handled.response.body().to_vec());
}

#[tokio::test]
async fn hangup_call_json() {
    let gateway = FakeGateway::new();
    let handled = run(
        &gateway,
        post("", "application/json", fixture!("hangup_call.json")),
    )
    .await;
    assert_eq!(
        meaning(&handled),
        lenient(fixture!("responses/hangup_call.json"))
    );
    let event = &gateway.events()[0];
    assert_eq!(event.data["duration_s"], json!(650));
    assert_eq!(event.data["time"]["utc"], Value::Null);
    assert_eq!(
        event.vendor_fields["CALL_TIME_EPOCH"],
        json!(15616841651_i64)
    );
}

#[tokio::test]
async fn resent_hangup_gets_the_stored_answer() {
    let gateway = FakeGateway::new();
    let first = run(&gateway, post("", "text/xml", fixture!("hangup_call.xml"))).await;
    let second = run(&gateway, post("", "text/xml", fixture!("hangup_call.xml"))).await;
    assert_eq!(second.outcome, "duplicate");
    assert_eq!(second.response.body(), first.response.body());
    let events = gateway.events();
    assert_eq!(
        events[0].dedup.as_ref().map(|d| &d.key),
        events[1].dedup.as_ref().map(|d| &d.key)
    );
}

#[tokio::test]
async fn cdr_xmlrpc_is_recorded() {
    let gateway = FakeGateway::new();
    let handled = run(&gateway, post("cdr", "text/xml", fixture!("cdr.xml"))).await;
    assert_eq!(handled.method, "CDR");
    assert_eq!(handled.outcome, "ok");
    let seed = xml_meaning(fixture!("responses/cdr_ok.xml"));
    assert_eq!(seed, json!({"err": 0, "errdesc": "OK"}));
    assert_eq!(meaning(&handled), seed);

    let event = &gateway.events()[0];
    assert_eq!(event.event_type, "call.cdr");
    assert_eq!(event.effect, CallEffect::End);
    assert_eq!(event.call.vendor_call_id.as_deref(), Some("sdfsdfsdfsfsf"));
    assert_eq!(
        event.data["time"],
        json!({"raw": 1345373417, "utc": "2012-08-19T10:50:17Z"})
    );
    assert_eq!(
        event.occurred_at,
        Some(UNIX_EPOCH + Duration::from_secs(1_345_373_417))
    );
    assert_eq!(event.data["status"], json!("answered"));
    assert_eq!(event.data["call_type"], json!("Extension Outgoing"));
    assert_eq!(event.data["duration_s"], json!(12));
    assert_eq!(event.data["from"], json!("0540000000"));
    // No DID on this CDR: the destination stands in.
    assert_eq!(event.data["to"], json!("0500000000"));
    assert_eq!(event.vendor_fields["status"], json!("ANSWER"));
    assert_eq!(event.vendor_fields["targetextension"], json!(""));
    assert_eq!(event.vendor_fields["queueid"], json!(0));
}

#[tokio::test]
async fn cdr_xmlrpc_on_the_main_path_dispatches_on_method_name() {
    let gateway = FakeGateway::new();
    let handled = run(&gateway, post("", "text/xml", fixture!("cdr.xml"))).await;
    assert_eq!(handled.method, "CDR");
    assert_eq!(meaning(&handled), json!({"err": 0, "errdesc": "OK"}));
}

#[tokio::test]
async fn cdr_first_page_alone_has_no_call_id() {
    // The seed's first CDR fragment closes before the ivruniqueid member.
    let gateway = FakeGateway::new();
    let handled = run(&gateway, post("cdr", "text/xml", fixture!("cdr_page1.xml"))).await;
    assert_eq!(handled.outcome, "bad_request");
    assert_eq!(meaning(&handled)["err"], json!(1));
    assert!(gateway.events().is_empty());
}

#[tokio::test]
async fn cdr_json_with_duplicate_keys_and_a_broken_url() {
    let gateway = FakeGateway::new();
    let handled = run(
        &gateway,
        post("cdr", "application/json", fixture!("cdr.json")),
    )
    .await;
    // The seed answers "err": "0" (a string); ivrgate writes the table's int (erratum).
    let seed = lenient(fixture!("responses/cdr_ok.json"));
    assert_eq!(seed, json!({"err": "0", "errdesc": "OK"}));
    assert_eq!(meaning(&handled), json!({"err": 0, "errdesc": "OK"}));

    let event = &gateway.events()[0];
    assert_eq!(
        event.call.vendor_call_id.as_deref(),
        Some("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
    );
    assert_eq!(event.data["from"], json!("0544444444"));
    assert_eq!(event.data["to"], json!("0722776772"));
    assert_eq!(event.data["dial_time_s"], json!(31));
    assert_eq!(event.data["queue_id"], json!(0));
    assert_eq!(
        event.data["recording_url"],
        json!("http://starkey-centrex-recordings.s3.amazonaws.com/xxxxxxxx-aws-0544444444-0722776772.mp3")
    );
    assert!(event.vendor_fields["record"]
        .as_str()
        .is_some_and(|r| r.contains('\n')));
}

#[tokio::test]
async fn cdr_json_without_method_on_the_main_path_is_a_cdr() {
    let gateway = FakeGateway::new();
    let handled = run(&gateway, post("", "application/json", fixture!("cdr.json"))).await;
    assert_eq!(handled.method, "CDR");
    assert_eq!(gateway.events()[0].event_type, "call.cdr");
}

#[tokio::test]
async fn cdr_form_by_post_and_by_get() {
    let gateway = FakeGateway::new();
    let handled = run(
        &gateway,
        post(
            "cdr",
            "application/x-www-form-urlencoded",
            fixture!("cdr_form.txt"),
        ),
    )
    .await;
    assert_eq!(content_type(&handled), "application/json");
    assert_eq!(meaning(&handled), json!({"err": 0, "errdesc": "OK"}));
    let by_get = run(
        &gateway,
        inbound(
            http::Method::GET,
            "",
            None,
            "",
            Some(fixture!("cdr_form.txt")),
        ),
    )
    .await;
    assert_eq!(by_get.method, "CDR");
    assert_eq!(meaning(&by_get), json!({"err": 0, "errdesc": "OK"}));
    for event in gateway.events() {
        assert_eq!(event.data["call_type"], json!("Extension Outgoing"));
        assert_eq!(event.data["duration_s"], json!(12));
        assert_eq!(event.data["time"]["utc"], json!("2014-10-26T10:47:35Z"));
        assert_eq!(event.vendor_fields["queueid"], json!("0"));
    }
}

#[tokio::test]
async fn form_and_query_values_are_read_in_the_declared_charset() {
    let gateway = FakeGateway::new();
    let hebrew = "ivruniqueid=C1&status=ANSWER&queuename=%F9%EC%E5%ED";
    for request in [
        post(
            "cdr",
            "application/x-www-form-urlencoded; charset=windows-1255",
            hebrew,
        ),
        post(
            "cdr",
            "application/x-www-form-urlencoded; charset=\"ISO-8859-8\"",
            hebrew,
        ),
        inbound(
            http::Method::GET,
            "cdr",
            Some("text/plain; charset=cp1255"),
            "",
            Some(hebrew),
        ),
        // undeclared: UTF-8, so the windows-1255 bytes cannot be read
        post("cdr", "application/x-www-form-urlencoded", hebrew),
        inbound(http::Method::GET, "cdr", None, "", Some(hebrew)),
        // a label that names no encoding
        post(
            "cdr",
            "application/x-www-form-urlencoded; charset=x-foo",
            hebrew,
        ),
    ] {
        let handled = run(&gateway, request).await;
        assert_eq!(meaning(&handled), json!({"err": 0, "errdesc": "OK"}));
    }
    let events = gateway.events();
    assert_eq!(events.len(), 6);
    for event in &events[..3] {
        assert_eq!(event.vendor_fields["queuename"], json!("שלום"));
        assert_eq!(event.data["queue_name"], json!("שלום"));
        assert!(event.data.get("undecodable").is_none());
    }
    for event in &events[3..] {
        assert_eq!(event.data["undecodable"], json!({"queuename": "+ezl7Q=="}));
        assert_eq!(event.vendor_fields["status"], json!("ANSWER"));
        let lossy = event.vendor_fields["queuename"].as_str().unwrap_or("");
        assert!(lossy.contains('\u{FFFD}'), "{lossy}");
    }
}

#[tokio::test]
async fn newer_cdr_fields_are_carried() {
    let gateway = FakeGateway::new();
    run(
        &gateway,
        post("cdr", "application/json", fixture!("cdr_sdk.json")),
    )
    .await;
    let event = &gateway.events()[0];
    assert_eq!(
        event.call.correlation["OriginalIvrUniqueID"],
        json!("2020020419490000000000000000")
    );
    assert_eq!(
        event.call.vendor_call_id.as_deref(),
        Some("2020020419500000000000000000")
    );
    assert_eq!(event.data["price"], json!(0.5));
    assert_eq!(event.data["direction"], json!("Incoming"));
    assert_eq!(event.data["ivr"][1]["layer_name"], json!("אבן גבירול"));
    assert!(event.vendor_fields["IVR"].is_string());
    for name in [
        "extenUser",
        "isAnswer",
        "actualCallDuration",
        "DepartmentID",
        "aiData",
    ] {
        assert!(event.vendor_fields.contains_key(name), "{name}");
    }
}

#[tokio::test]
async fn seed_spellings_of_call_ids_are_recognised() {
    // The §4 table spells the id "ivrunique-id"; the JSON CDR table writes
    // "OriginalivrUniqueID" with a lower-case i. The first keys the call, the second is
    // correlation only.
    let gateway = FakeGateway::new();
    let body = r#"{"caller": "0544444444", "ivrunique-id": "201809131615530APIAPI-APIAac40c3d53",
        "OriginalivrUniqueID": "201809131730110122APIAPI-API ", "status": "ANSWER", "time": 1536855354}"#;
    let handled = run(&gateway, post("cdr", "application/json", body)).await;
    assert_eq!(meaning(&handled), json!({"err": 0, "errdesc": "OK"}));
    let event = &gateway.events()[0];
    assert_eq!(
        event.call.vendor_call_id.as_deref(),
        Some("201809131615530APIAPI-APIAac40c3d53")
    );
    assert_eq!(
        event.call.correlation.get("OriginalivrUniqueID"),
        Some(&json!("201809131730110122APIAPI-API"))
    );
}

#[tokio::test]
async fn the_prose_name_ivr_external_layer_input_is_an_alias() {
    // §12's prose calls the request "IvrExternalLayerInput"; its examples say IVR_LAYER_INPUT.
    let gateway = FakeGateway::new();
    let body = r#"{"METHOD": "IvrExternalLayerInput", "DATA": {"DID": "0732793256",
        "CALLER_ID": "0523574321", "IVR_UNIQUE_ID": "abc", "DTMF": "1", "LAYER_ID": 8}}"#;
    let handled = run(&gateway, post("", "application/json", body)).await;
    assert_eq!(handled.method, "IVR_LAYER_INPUT");
    assert_eq!(gateway.decisions()[0].point.kind, "layer_input");
}

#[tokio::test]
async fn layer_input_requests() {
    let gateway = FakeGateway::new();
    let handled = run(
        &gateway,
        post("", "application/json", fixture!("layer_input.json")),
    )
    .await;
    assert_eq!(handled.method, "IVR_LAYER_INPUT");
    assert_eq!(meaning(&handled), json!({"STATUS": 1}));
    run(
        &gateway,
        post("", "application/json", fixture!("layer_input_sdk.json")),
    )
    .await;
    let decisions = gateway.decisions();
    assert_eq!(decisions[0].point.kind, "layer_input");
    assert_eq!(
        decisions[0].call.vendor_call_id.as_deref(),
        Some("xxxxxxxxxxxxxxxxxxxxxxxxxxxx")
    );
    assert_eq!(
        Value::Object(decisions[0].data.clone()),
        json!({"from": "0523574321", "to": "0732793256", "dtmf": "1234567",
               "layer_id": 8, "previous_layer_id": 4})
    );
    // LAYER_ID as a string, DTMF "0", CUSTOM_DATA carried.
    assert_eq!(decisions[1].data["layer_id"], json!(8));
    assert_eq!(decisions[1].data["dtmf"], json!("0"));
    assert_eq!(decisions[1].data["custom_data"], json!({"crm_id": "42"}));
    assert_eq!(decisions[1].vendor_fields["LAYER_ID"], json!("8"));
}

#[tokio::test]
async fn popup_lookup_by_query() {
    for sub_path in ["", "popup"] {
        let gateway = FakeGateway::new();
        let handled = run(
            &gateway,
            inbound(
                http::Method::GET,
                sub_path,
                None,
                "",
                Some(fixture!("popup.query")),
            ),
        )
        .await;
        assert_eq!(handled.method, "POPUP");
        assert_eq!(content_type(&handled), "application/json");
        assert_eq!(
            meaning(&handled),
            json!({"STATUS": "NOT_FOUND", "URL": "", "CLIENTNAME": "", "TOTAL": "0", "COMPANY": ""})
        );
        let request = &gateway.decisions()[0];
        assert_eq!(request.point.kind, "caller_lookup");
        assert_eq!(request.call.vendor_call_id, None);
        assert_eq!(request.data["from"], json!("0722776772"));
    }
}

#[tokio::test]
async fn popup_query_never_carries_credentials() {
    let gateway = FakeGateway::new();
    run(
        &gateway,
        inbound(
            http::Method::GET,
            "popup",
            None,
            "",
            Some("phone=0722776772&token=s3cret&ivrid=abc"),
        ),
    )
    .await;
    let request = &gateway.decisions()[0];
    assert!(!request.vendor_fields.contains_key("token"));
    assert_eq!(request.call.correlation["ivrid"], json!("abc"));
}

// ---------------------------------------------------------------------------------------------
// Replies: the seed's response examples, from neutral actions and as native answers
// ---------------------------------------------------------------------------------------------

/// Runs GET_IVR_ACTION in both encodings with `answer` and returns the two replies' meanings.
async fn ivr_replies(answer: Answer) -> (Value, Value) {
    let gateway = FakeGateway::answering(answer.clone());
    let xml = run(
        &gateway,
        post("", "text/xml", fixture!("get_ivr_action.xmlrpc.xml")),
    )
    .await;
    assert_eq!(xml.outcome, "ok");
    let js = run(
        &gateway,
        post("", "application/json", fixture!("get_ivr_action.json")),
    )
    .await;
    (meaning(&xml), meaning(&js))
}

async fn assert_ivr_reply(answer: Answer, expected: &Value) {
    let (xml, js) = ivr_replies(answer).await;
    assert_eq!(&xml, expected);
    assert_eq!(&js, expected);
}

#[tokio::test]
async fn menu_examples() {
    let xml_seed = xml_meaning(fixture!("responses/menu.xml"));
    let expected = json!({"STATUS": 0, "ACTION": "MENU", "LANGUAGE": "he", "DATA": {
        "REC": "record_filename", "LOOP": 2, "DELAY": 1, "SIZE": 4, "MENU": "menu_name",
        "VALIDATION": 1}});
    assert_eq!(xml_seed, expected);
    assert_ivr_reply(Answer::Native(xml_seed), &expected).await;
    assert_ivr_reply(
        action(Action::Menu {
            prompt: "record_filename".into(),
            menu: "menu_name".into(),
            repeat: 2,
            pause_s: 1,
            max_digits: 4,
            validate: true,
        }),
        &expected,
    )
    .await;

    // JSON example: LANGUAGE "HE" is written lower-case (erratum).
    let json_seed = lenient(fixture!("responses/menu.json"));
    let expected = json!({"STATUS": 0, "ACTION": "MENU", "LANGUAGE": "he", "DATA": {
        "REC": "record", "LOOP": 4, "DELAY": 3, "SIZE": 2, "MENU": "menu", "VALIDATION": 0}});
    assert_ivr_reply(Answer::Native(json_seed), &expected).await;
    let mut envelope = Envelope::new(Action::Menu {
        prompt: "record".into(),
        menu: "menu".into(),
        repeat: 4,
        pause_s: 3,
        max_digits: 2,
        validate: false,
    });
    envelope.language = Some("HE".into());
    assert_ivr_reply(Answer::Action(envelope), &expected).await;
}

#[tokio::test]
async fn call_examples() {
    // XML: NEXT_MENU_* and REC_STATUS sent as strings, DTMF_PLAY split over a line,
    // a dial string with a leading space: written as ints and trimmed (errata).
    let xml_seed = xml_meaning(fixture!("responses/call.xml"));
    assert_eq!(xml_seed["DATA"]["REC_STATUS"], json!("1"));
    let expected = json!({"STATUS": 0, "ACTION": "CALL", "LANGUAGE": "he", "DATA": {
        "TARGET": "0540123456", "CALLERID": "Unknown", "CALLERNAME": "?????",
        "CALLER_REC": "now_calling", "MOH_CLASS": "californication", "TARGET_REC": "blank",
        "CALL_MAX_DIAL": 35, "CALL_MAX": 600, "NEXT_MENU": "SOME-MENU",
        "NEXT_MENU_RECORD": "record-filename", "NEXT_MENU_LOOP": 3, "NEXT_MENU_WAIT": 1,
        "NEXT_MENU_SIZE": 4, "REC_STATUS": 1, "DTMF_PLAY": "3",
        "DIALSTRINGS": ["SIP/972547000000@provider1", "SIP/972547000000@provider2"]}});
    assert_ivr_reply(Answer::Native(xml_seed), &expected).await;
    assert_ivr_reply(
        action(Action::Dial {
            targets: vec!["0540123456".into()],
            caller_id: Some("Unknown".into()),
            caller_name: Some("?????".into()),
            ring_timeout_s: Some(35),
            max_duration_s: Some(600),
            record: true,
            caller_prompt: Some("now_calling".into()),
            target_prompt: Some("blank".into()),
            music_class: Some("californication".into()),
            dtmf_after_answer: Some("3".into()),
            dialstrings: vec![
                "SIP/972547000000@provider1".into(),
                "SIP/972547000000@provider2".into(),
            ],
            on_failure: Some(Goto {
                target: "SOME-MENU".into(),
                prompt: Some("record-filename".into()),
                repeat: Some(3),
                max_digits: Some(4),
                pause_s: Some(1),
            }),
            on_answer_next: None,
            on_unavailable_next: None,
        }),
        &expected,
    )
    .await;

    let json_seed = lenient(fixture!("responses/call.json"));
    let expected = json!({"STATUS": 0, "ACTION": "CALL", "LANGUAGE": "he", "DATA": {
        "TARGET": "0540123456", "CALLERID": "0500000000", "CALLERNAME": "",
        "CALLER_REC": "rec", "MOH_CLASS": "musiconhold", "TARGET_REC": "",
        "CALL_MAX_DIAL": 25, "CALL_MAX": 3200, "NEXT_MENU": "16", "NEXT_MENU_RECORD": "rec",
        "NEXT_MENU_LOOP": 1, "NEXT_MENU_SIZE": 2, "NEXT_MENU_WAIT": 1, "REC_STATUS": 0,
        "DTMF_PLAY": "16",
        "DIALSTRINGS": ["SIP/972547000000@provider1", "SIP/972547000000@provider2"]}});
    assert_ivr_reply(Answer::Native(json_seed), &expected).await;
    let mut envelope = Envelope::new(Action::Dial {
        targets: vec!["0540123456".into()],
        caller_id: Some("0500000000".into()),
        caller_name: None,
        ring_timeout_s: Some(25),
        max_duration_s: Some(3200),
        record: false,
        caller_prompt: Some("rec".into()),
        target_prompt: Some("".into()),
        music_class: Some("musiconhold".into()),
        dtmf_after_answer: Some("16".into()),
        dialstrings: vec![
            "SIP/972547000000@provider1".into(),
            "SIP/972547000000@provider2".into(),
        ],
        on_failure: Some(Goto {
            target: "16".into(),
            prompt: Some("rec".into()),
            repeat: Some(1),
            max_digits: Some(2),
            pause_s: Some(1),
        }),
        on_answer_next: None,
        on_unavailable_next: None,
    });
    envelope.language = Some("HE".into());
    assert_ivr_reply(Answer::Action(envelope), &expected).await;
}

#[tokio::test]
async fn dial_defaults_fill_the_mandatory_fields() {
    let (xml, _) = ivr_replies(action(Action::Dial {
        targets: vec!["0501234567".into()],
        caller_id: None,
        caller_name: None,
        ring_timeout_s: None,
        max_duration_s: None,
        record: false,
        caller_prompt: None,
        target_prompt: None,
        music_class: None,
        dtmf_after_answer: None,
        dialstrings: vec![],
        on_failure: None,
        on_answer_next: None,
        on_unavailable_next: None,
    }))
    .await;
    assert_eq!(
        xml["DATA"],
        json!({"TARGET": "0501234567", "CALLERID": "", "CALLERNAME": "",
               "CALL_MAX_DIAL": 30, "CALL_MAX": 3600, "REC_STATUS": 0})
    );
}

#[tokio::test]
async fn hangup_examples() {
    let xml_seed = xml_meaning(fixture!("responses/hangup.xml"));
    let expected = json!({"STATUS": 0, "ACTION": "HANGUP", "LANGUAGE": "he",
        "DATA": {"HANGUP_REC": "blank", "HANGUP_CAUSE": 16}});
    assert_eq!(xml_seed, expected);
    assert_ivr_reply(Answer::Native(xml_seed), &expected).await;
    assert_ivr_reply(
        Answer::Native(lenient(fixture!("responses/hangup.json"))),
        &expected,
    )
    .await;
    assert_ivr_reply(
        action(Action::Hangup {
            prompt: Some("blank".into()),
            cause: Some(16),
        }),
        &expected,
    )
    .await;
}

#[tokio::test]
async fn saydigits_examples() {
    // The seed's XML example lost its <member> tags at the page break; its meaning is
    // this (erratum).
    let expected = json!({"STATUS": 0, "ACTION": "SAYDIGITS", "LANGUAGE": "he", "DATA": {
        "REC": "record_filename", "LOOP": 2, "DELAY": 1, "SIZE": 4, "MENU": "menu_name",
        "VALIDATION": 1, "SAYDIGITSRECORD": "blank", "DIGITS": "154654"}});
    assert_ivr_reply(
        action(Action::SayDigits {
            digits: "154654".into(),
            digits_prompt: None,
            prompt: Some("record_filename".into()),
            menu: Some("menu_name".into()),
            repeat: 2,
            pause_s: 1,
            max_digits: 4,
            validate: true,
            next: None,
            next_if_failed: None,
        }),
        &expected,
    )
    .await;
    // The native form with " SAYDIGITS " and "HE" is normalised.
    let native = json!({"STATUS": 0, "ACTION": " SAYDIGITS ", "LANGUAGE": "HE", "DATA": {
        "REC": "record_filename", "LOOP": 2, "DELAY": 1, "SIZE": 4, "MENU": "menu_name",
        "VALIDATION": 1, "SAYDIGITSRECORD": "blank", "DIGITS": "154654"}});
    assert_ivr_reply(Answer::Native(native), &expected).await;

    // The seed's JSON example itself is garbled: one closing brace short, and the
    // SAYDIGITSRECORD / DIGITS names written as duplicate VALIDATION values. Repaired
    // brace, last key wins: the answer lacks SAYDIGITSRECORD and is refused.
    let repaired = format!("{}}}", fixture!("responses/saydigits.json"));
    let garbled = lenient(&repaired);
    assert_eq!(garbled["ACTION"], json!(" SAYDIGITS "));
    let why = validate_ivr_action(&Answer::Native(garbled)).expect_err("invalid");
    assert!(
        why.contains("VALIDATION") || why.contains("SAYDIGITSRECORD"),
        "{why}"
    );
}

#[tokio::test]
async fn vo_and_silentrecord() {
    assert_ivr_reply(
        action(Action::Goto {
            target: "7".into(),
            prompt: None,
            repeat: 1,
            pause_s: 0,
            caller_name: None,
        }),
        &json!({"STATUS": 0, "ACTION": "VO", "LANGUAGE": "he",
                "DATA": {"LAYER": 7, "RECORD": "blank", "LOOP": 1, "DELAY": 0}}),
    )
    .await;
    assert_ivr_reply(
        action(Action::Record {
            prompt: Some("beep".into()),
            max_duration_s: Some(120),
        }),
        &json!({"STATUS": 0, "ACTION": "SILENTRECORD", "LANGUAGE": "he",
                "DATA": {"REC": "beep", "MAXDURATION": 120}}),
    )
    .await;
}

async fn layer_reply(answer: Answer, attached: Map<String, Value>) -> Value {
    let mut gateway = FakeGateway::answering(answer);
    gateway.attached = attached;
    let handled = run(
        &gateway,
        post("", "application/json", fixture!("layer_input.json")),
    )
    .await;
    assert_eq!(handled.outcome, "ok");
    meaning(&handled)
}

fn seed_custom_data() -> Map<String, Value> {
    json!({"xxx": "111", "yyy ": "222", "zzz": "333"})
        .as_object()
        .cloned()
        .expect("object")
}

#[tokio::test]
async fn go_to_layer_example() {
    let seed = lenient(fixture!("responses/layer_go_to_layer.json"));
    // "LAYER " with a trailing space is read as LAYER (erratum); CUSTOM_DATA keys are the
    // customer's and stay as given.
    let expected = json!({"STATUS": 0, "ACTION": "GO_TO_LAYER", "LAYER": 22,
        "CALLER_NAME": "Shlomi", "CUSTOM_DATA": {"xxx": "111", "yyy ": "222", "zzz": "333"}});
    assert_eq!(
        layer_reply(Answer::Native(seed), Map::new()).await,
        expected
    );
    let neutral = action(Action::Goto {
        target: "22".into(),
        prompt: None,
        repeat: 1,
        pause_s: 0,
        caller_name: Some("Shlomi".into()),
    });
    assert_eq!(layer_reply(neutral, seed_custom_data()).await, expected);
}

#[tokio::test]
async fn layer_dial_example() {
    // TARGETS is written `[TARGET: .., TYPE: ..]` in the seed: read as one target object.
    let seed = lenient(fixture!("responses/layer_dial.json"));
    let expected = json!({"STATUS": 0, "ACTION": "DIAL",
        "TARGETS": [{"TARGET": "0501234567", "TYPE": "PHONE"}],
        "CALLER_ID": "0722776772", "CALLER_NAME": "Voicenter",
        "MAX_CALL_DURATION": 7200, "MAX_DIAL_DURATION": 30, "RECORDING": "yes",
        "NEXT_VO_ID": 1, "ANSWER_NEXT_VO_ID": 1, "UNAVAILABLE_VO_ID": 2,
        "CUSTOM_DATA": {"xxx": "111", "yyy ": "222", "zzz": "333"}});
    assert_eq!(
        layer_reply(Answer::Native(seed), Map::new()).await,
        expected
    );
    let neutral = action(Action::Dial {
        targets: vec!["0501234567".into()],
        caller_id: Some("0722776772".into()),
        caller_name: Some("Voicenter".into()),
        ring_timeout_s: Some(30),
        max_duration_s: Some(7200),
        record: true,
        caller_prompt: None,
        target_prompt: None,
        music_class: None,
        dtmf_after_answer: None,
        dialstrings: vec![],
        on_failure: Some(Goto {
            target: "1".into(),
            prompt: None,
            repeat: None,
            max_digits: None,
            pause_s: None,
        }),
        on_answer_next: Some("1".into()),
        on_unavailable_next: Some("2".into()),
    });
    assert_eq!(layer_reply(neutral, seed_custom_data()).await, expected);
}

#[tokio::test]
async fn layer_say_digits_sdk_form() {
    let neutral = action(Action::SayDigits {
        digits: "1234".into(),
        digits_prompt: Some("your_code_is".into()),
        prompt: None,
        menu: None,
        repeat: 1,
        pause_s: 0,
        max_digits: 0,
        validate: false,
        next: Some("2".into()),
        next_if_failed: Some("1".into()),
    });
    assert_eq!(
        layer_reply(neutral, Map::new()).await,
        json!({"STATUS": 0, "ACTION": "SAY_DIGITS", "NEXT_LAYER": 2, "NEXT_LAYER_IF_FAILED": 1,
               "DATA": [{"RecordType": "Record", "Content": "your_code_is"},
                        {"RecordType": "Digits", "Content": "1234"}]})
    );
    let native = json!({"STATUS": 0, "ACTION": "SAY_DIGITS", "NEXT_LAYER": 2,
        "NEXT_LAYER_IF_FAILED": 1, "LANGUAGE": "EN",
        "DATA": [{"RecordType": "Number", "Content": 42}]});
    let reply = layer_reply(Answer::Native(native), Map::new()).await;
    assert_eq!(reply["LANGUAGE"], json!("en"));
    assert_eq!(reply["DATA"][0]["Content"], json!(42));
}

#[tokio::test]
async fn layer_input_returns_attached_data_on_native_answers_without_it() {
    let native = json!({"STATUS": 0, "ACTION": "GO_TO_LAYER", "LAYER": "5"});
    let reply = layer_reply(Answer::Native(native), seed_custom_data()).await;
    assert_eq!(reply["LAYER"], json!(5));
    assert_eq!(reply["CUSTOM_DATA"], Value::Object(seed_custom_data()));
}

#[tokio::test]
async fn popup_example() {
    let seed = lenient(fixture!("responses/popup.json"));
    for answer in [
        Answer::Native(seed.clone()),
        action(Action::LookupResult {
            found: true,
            url: Some("http://www.yourdomain.com/contact_search.asp?user_phone=0722776772".into()),
            name: Some("John Doe".into()),
            total: Some(1),
            company: Some("Voicenter".into()),
        }),
    ] {
        let gateway = FakeGateway::answering(answer);
        let handled = run(
            &gateway,
            inbound(
                http::Method::GET,
                "popup",
                None,
                "",
                Some(fixture!("popup.query")),
            ),
        )
        .await;
        assert_eq!(meaning(&handled), seed);
    }
}

// ---------------------------------------------------------------------------------------------
// Validation of answers per decision point
// ---------------------------------------------------------------------------------------------

#[test]
fn points_and_fallbacks() {
    assert_eq!(Voicenter.name(), "voicenter");
    let kinds: Vec<_> = Voicenter.decision_points().iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["ivr_action", "layer_input", "caller_lookup"]);
    for point in &DECISION_POINTS {
        assert_eq!((point.validate)(&(point.default_fallback)()), Ok(()));
    }
    assert_eq!(
        render::ivr_action(&(DECISION_POINTS[0].default_fallback)()).map(|r| r.to_json()),
        Ok(json!({"STATUS": 1}))
    );
}

#[test]
fn refuses_what_a_point_cannot_carry_out() {
    let enqueue = action(Action::Enqueue {
        queue: "sales".into(),
        priority: None,
        agent: None,
        agent_wait_s: None,
        description: None,
    });
    for point in &DECISION_POINTS {
        assert!((point.validate)(&enqueue).is_err());
    }
    let goto_name = action(Action::Goto {
        target: "main".into(),
        prompt: None,
        repeat: 1,
        pause_s: 0,
        caller_name: None,
    });
    let why = validate_ivr_action(&goto_name).expect_err("not a layer number");
    assert!(why.contains("integer layer"), "{why}");
    assert!(validate_layer_input(&goto_name).is_err());
    let two_targets = action(Action::Dial {
        targets: vec!["1".into(), "2".into()],
        caller_id: None,
        caller_name: None,
        ring_timeout_s: None,
        max_duration_s: None,
        record: false,
        caller_prompt: None,
        target_prompt: None,
        music_class: None,
        dtmf_after_answer: None,
        dialstrings: vec![],
        on_failure: None,
        on_answer_next: None,
        on_unavailable_next: None,
    });
    assert!(validate_ivr_action(&two_targets).is_err());
    assert_eq!(validate_layer_input(&two_targets), Ok(()));
    let menu = action(Action::Menu {
        prompt: "p".into(),
        menu: "m".into(),
        repeat: 1,
        pause_s: 0,
        max_digits: 1,
        validate: false,
    });
    assert!(validate_layer_input(&menu).is_err());
    assert!(validate_caller_lookup(&menu).is_err());
}

#[test]
fn native_answers_are_checked() {
    let check = |v: Value| validate_ivr_action(&Answer::Native(v));
    assert_eq!(check(json!({"STATUS": 1})), Ok(()));
    assert_eq!(check(json!({"STATUS": "1"})), Ok(()));
    assert!(check(json!({"STATUS": 2})).is_err());
    assert!(check(json!({"ACTION": "HANGUP"})).is_err());
    assert!(check(json!({"STATUS": 0})).is_err());
    assert!(check(json!({"STATUS": 0, "ACTION": "DANCE", "DATA": {}})).is_err());
    assert_eq!(check(json!({"STATUS": "0", "ACTION": "hangup"})), Ok(()));
    let why = check(json!({"STATUS": 0, "ACTION": "MENU", "DATA": {"REC": "r"}}))
        .expect_err("incomplete");
    assert!(why.contains("LOOP"), "{why}");
    assert!(check(json!({"STATUS": 0, "ACTION": "VO", "DATA":
        {"LAYER": "x", "RECORD": "r", "LOOP": 1, "DELAY": 0}}))
    .is_err());
    assert!(check(json!([1])).is_err());
    assert!(validate_layer_input(&Answer::Native(json!({"STATUS": 0, "ACTION": "MENU"}))).is_err());
    assert!(validate_layer_input(&Answer::Native(
        json!({"STATUS": 0, "ACTION": "DIAL", "TARGETS": []})
    ))
    .is_err());
    assert!(validate_caller_lookup(&Answer::Native(json!({"URL": "x"}))).is_err());
    assert_eq!(
        validate_caller_lookup(&Answer::Native(json!({"STATUS": "OK", "TOTAL": 3}))),
        Ok(())
    );
}

// ---------------------------------------------------------------------------------------------
// Storage refusals and malformed input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unstored_events_ask_for_a_retry() {
    let mut gateway = FakeGateway::new();
    gateway.mode = RecordMode::Fail;
    let cdr = run(&gateway, post("cdr", "text/xml", fixture!("cdr.xml"))).await;
    assert_eq!(cdr.outcome, "refused");
    assert_eq!(
        meaning(&cdr),
        json!({"err": 2, "errdesc": "temporarily unable to store, retry"})
    );
    // Same shape as the seed's error example.
    assert_eq!(
        xml_meaning(fixture!("responses/cdr_error.xml"))["err"],
        meaning(&cdr)["err"]
    );
    let hangup = run(
        &gateway,
        post("", "application/json", fixture!("hangup_call.json")),
    )
    .await;
    assert_eq!(hangup.outcome, "refused");
    assert_eq!(meaning(&hangup), json!({"STATUS": 1}));
}

#[tokio::test]
async fn malformed_requests_get_the_platform_error() {
    let gateway = FakeGateway::new();
    let cases: Vec<(Inbound, Value)> = vec![
        (post("", "text/plain", "garbage"), json!({"STATUS": 1})),
        (post("", "application/json", ""), json!({"STATUS": 1})),
        (post("", "application/json", "{\"METHOD\": "), json!({"STATUS": 1})),
        (
            post("", "application/json", "{\"METHOD\": \"GET_IVR_ACTION\"}"),
            json!({"STATUS": 1}),
        ),
        (
            post("", "application/json", "{\"METHOD\": \"FOO\", \"DATA\": {}}"),
            json!({"STATUS": 1}),
        ),
        (
            post(
                "",
                "application/json",
                "{\"METHOD\": \"HANGUP_CALL\", \"DATA\": {\"DID\": \"1\"}}",
            ),
            json!({"STATUS": 1}),
        ),
        (
            post("cdr", "application/json", "[1,2]"),
            json!({"err": 1, "errdesc": "parse error: the json body is not an object"}),
        ),
        (post("cdr", "application/json", "{}"), json!({"err": 1, "errdesc": "parse error: missing call id (IVR_UNIQUE_ID / ivruniqueid)"})),
        (post("cdr", "text/xml", "<nope"), json!({"err": 1, "errdesc": "parse error: not an xml-rpc call: malformed xml: syntax error: tag not closed: `>` not found before end of input at byte 0"})),
        (
            post("popup", "text/plain", ""),
            json!({"STATUS": "ERROR", "URL": "", "CLIENTNAME": "", "TOTAL": "0", "COMPANY": ""}),
        ),
        (
            post(
                "",
                "text/xml",
                "<?xml version=\"1.0\"?><methodCall><methodName>FOO</methodName><params/></methodCall>",
            ),
            json!({"STATUS": 1}),
        ),
    ];
    for (request, expected) in cases {
        let body = String::from_utf8_lossy(&request.body).into_owned();
        let handled = run(&gateway, request).await;
        assert_eq!(handled.outcome, "bad_request", "{body}");
        if content_type(&handled).starts_with("text/xml") {
            let xml = std::str::from_utf8(handled.response.body()).expect("utf-8");
            match xmlrpc::parse_response(xml, &Limits::default()).expect("xml-rpc") {
                Ok(params) => assert_eq!(params[0].to_json(), expected, "{body}"),
                Err(fault) => panic!("unexpected fault {fault:?} for {body}"),
            }
        } else {
            assert_eq!(meaning(&handled), expected, "{body}");
        }
    }
    assert!(gateway.events().is_empty());
    assert!(gateway.decisions().is_empty());
}

#[tokio::test]
async fn xml_that_is_not_a_method_call_gets_a_fault() {
    let gateway = FakeGateway::new();
    for body in [
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><methodCall/>",
        "<html><body>hi</body></html>",
        "<",
    ] {
        let handled = run(&gateway, post("", "text/xml", body)).await;
        assert_eq!(handled.outcome, "bad_request");
        assert_eq!(handled.method, "unknown");
        assert_eq!(handled.response.status(), 200);
        let xml = std::str::from_utf8(handled.response.body()).expect("utf-8");
        let fault = xmlrpc::parse_response(xml, &Limits::default())
            .expect("xml-rpc")
            .expect_err("a fault");
        assert_eq!(fault.code, -32700);
    }
}

#[tokio::test]
async fn binary_garbage_never_panics() {
    let gateway = FakeGateway::new();
    for sub_path in ["", "cdr", "popup", "elsewhere"] {
        let mut request = post(sub_path, "application/json; charset=utf-8", "");
        request.body = Bytes::from_static(b"\xff\xfe\x00{\x01<\x80");
        let handled = run(&gateway, request).await;
        assert_eq!(handled.outcome, "bad_request");
    }
}

#[test]
fn fields_are_found_by_exact_then_trimmed_case_insensitive_name() {
    let fields: Map<String, Value> = serde_json::from_value(json!({
        " did ": "loose", "DID": "exact", "\u{a0}Menu\t": "m", "CALLER": "c", "DI D": "x",
    }))
    .unwrap_or_default();
    let value = |name: &str| request::get(&fields, name).and_then(Value::as_str);
    assert_eq!(
        value("DID"),
        Some("exact"),
        "an exact name wins wherever it is"
    );
    assert_eq!(value("did"), Some("loose"), "else the first trimmed match");
    assert_eq!(value("menu"), Some("m"), "trimmed as str::trim trims");
    assert_eq!(value("caller"), Some("c"));
    assert_eq!(value("CALLER_ID"), None);
    assert_eq!(value(" did"), None, "a name is never trimmed");
    assert_eq!(
        request::find_key(&fields, "Menu"),
        Some("\u{a0}Menu\t".to_owned())
    );
    assert_eq!(
        request::get_entry(&fields, "did").map(|(k, _)| k.as_str()),
        Some(" did ")
    );
}

#[test]
fn ids_lose_their_whitespace() {
    let id = |v: Value| fields::clean_id(&v);
    assert_eq!(
        id(json!("ced4619f30fc\n   d6869X")),
        Some("ced4619f30fcd6869X".into())
    );
    assert_eq!(id(json!(" a\u{2028}b\u{b}c ")), Some("abc".into()));
    assert_eq!(id(json!("plain-id_1")), Some("plain-id_1".into()));
    assert_eq!(id(json!(" \n")), None);
    assert_eq!(id(json!(15616841651_i64)), Some("15616841651".into()));
    assert_eq!(id(json!(true)), None);
    // the call's id is the first of its names, as cleaned for the correlation ids
    let fields: Map<String, Value> = serde_json::from_value(json!({
        "ivrid": "second", "ivr_unique_id ": "first\n id", "CALLID": ""
    }))
    .unwrap_or_default();
    let call = fields::call_ref(&fields);
    assert_eq!(call.vendor_call_id.as_deref(), Some("firstid"));
    assert_eq!(
        Value::Object(call.correlation),
        json!({"ivrid": "second", "ivr_unique_id ": "firstid"})
    );
}
