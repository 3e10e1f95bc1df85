//! The JSON Schemas of docs/schemas/ against what ivrgate really sends and accepts: every
//! kind of Voicenter request of the seed fixtures goes through an in-process gateway, every
//! webhook body the receiver gets (decisions, events, a `call.expired`) is validated with the
//! Python `jsonschema` package (tests/py/validate_schemas.py), and a set of decision answers is
//! checked against answer.json and against ivrgate's own reading of answers, so the schema and
//! the code cannot drift apart unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ivrgate_adapter::Answer;
use serde_json::{json, Value};

use crate::support::*;

const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the validator with `args`; returns whether it exited 0, its exit code and its output.
/// Bounded: the process is killed after `PYTHON_TIMEOUT`.
fn validator(args: &[&str]) -> (bool, Option<i32>, String) {
    let out_dir = tempfile::tempdir().expect("tmp");
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = Command::new("python3")
        .arg(root().join("tests/py/validate_schemas.py"))
        .arg("--schemas")
        .arg(root().join("docs/schemas"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("run python3");
    let started = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait for python3") {
            Some(status) => break status,
            None if started.elapsed() > PYTHON_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("validate_schemas.py took longer than {PYTHON_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    (status.success(), status.code(), output)
}

fn assert_valid(schema: &str, files: &[PathBuf]) {
    let mut args = vec![schema.to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, code, output) = validator(&args);
    assert!(
        ok,
        "{} document(s) not valid against {schema} (exit {code:?}):\n{output}",
        files.len()
    );
}

/// The schema file for a payload `type`.
fn schema_for(payload_type: &str) -> String {
    if payload_type.starts_with("decision.") {
        format!("{payload_type}.json")
    } else {
        format!("event.{payload_type}.json")
    }
}

#[test]
fn schemas_are_valid_and_their_examples_match() {
    let (ok, code, output) = validator(&["--check"]);
    assert!(ok, "schema check failed (exit {code:?}):\n{output}");
}

#[tokio::test]
async fn every_webhook_ivrgate_sends_matches_its_schema() {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        let data = &hook.json["data"];
        match hook.json["type"].as_str().unwrap_or("") {
            // The JSON request's call: first answered with nonsense (the fallback answers,
            // so the next decision's previous_decision carries a fallback_reason).
            "decision.ivr_action"
                if data["correlation"]["IVR_UNIQUE_ID"] == "1bcd7954224861f85a2d70612f248282"
                    && data["previous_decision"].is_null() =>
            {
                Reply::ok("nonsense")
            }
            "decision.ivr_action" => Reply::ok(
                r#"{"action":"menu","prompt":"welcome","menu":"main","max_digits":1,"attach":{"crm_id":"42"}}"#,
            ),
            "decision.layer_input" => Reply::ok(
                r#"{"action":"goto","target":"22","caller_name":"Shlomi","attach":{"layer_seen":true}}"#,
            ),
            "decision.caller_lookup" => Reply::ok(
                r#"{"action":"lookup_result","found":true,"name":"John Doe","total":1}"#,
            ),
            _ => Reply::ok("{}"),
        }
    });
    let gw = Gateway::start_edited(&rx.url("/hooks"), |t| {
        t.replace("min_free_bytes = 0", "min_free_bytes = 0\ncall_ttl_s = 60")
    })
    .await;

    let json_type = "application/json";
    let requests: Vec<(&str, &str, String)> = vec![
        (
            "/voicenter/acme",
            "text/xml",
            fixture("voicenter/get_ivr_action.xmlrpc.xml"),
        ),
        (
            "/voicenter/acme",
            json_type,
            fixture("voicenter/get_ivr_action.json"),
        ),
        (
            "/voicenter/acme",
            json_type,
            fixture("voicenter/get_ivr_action.json"),
        ),
        (
            "/voicenter/acme",
            json_type,
            fixture("voicenter/layer_input.json"),
        ),
        (
            "/voicenter/acme",
            json_type,
            fixture("voicenter/layer_input_sdk.json"),
        ),
    ];
    for (path, content_type, body) in requests {
        let (status, _, answer) = gw.post(path, content_type, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        // A decision is recorded on its call just after the platform got its answer; give
        // the write time to land so the next request on the call sees previous_decision.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let popup = format!(
        "/voicenter/acme/popup?{}",
        fixture("voicenter/popup.query").trim()
    );
    let (status, answer) = gw.get(&popup).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""STATUS":"OK""#), "{answer}");
    // Let the decisions' call records land before the reports of the same calls.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let events: Vec<(&str, &str, String)> = vec![
        (
            "/voicenter/acme",
            "text/xml",
            fixture("voicenter/hangup_call.xml"),
        ),
        (
            "/voicenter/acme",
            json_type,
            fixture("voicenter/hangup_call.json"),
        ),
        (
            "/voicenter/acme/cdr",
            "text/xml",
            fixture("voicenter/cdr.xml"),
        ),
        (
            "/voicenter/acme/cdr",
            json_type,
            fixture("voicenter/cdr.json"),
        ),
        (
            "/voicenter/acme/cdr",
            "application/x-www-form-urlencoded",
            fixture("voicenter/cdr_form.txt"),
        ),
        (
            "/voicenter/acme/cdr",
            json_type,
            fixture("voicenter/cdr_sdk.json"),
        ),
    ];
    for (path, content_type, body) in events {
        let (status, _, answer) = gw.post(path, content_type, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    // The calls that got decisions but no report expire: get_ivr_action.json's and the two
    // layer calls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.clock.advance(Duration::from_secs(61));

    let wanted: BTreeMap<&str, usize> = [
        ("decision.ivr_action", 3),
        ("decision.layer_input", 2),
        ("decision.caller_lookup", 1),
        ("call.hangup", 2),
        ("call.cdr", 4),
        ("call.expired", 3),
    ]
    .into_iter()
    .collect();
    let mut hooks: Vec<Hook> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let count = |hooks: &[Hook], t: &str| hooks.iter().filter(|h| h.json["type"] == t).count();
    while wanted.iter().any(|(t, n)| count(&hooks, t) < *n) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.next_within(left).await {
            Some(hook) => hooks.push(hook),
            None => {
                let got: BTreeMap<&str, usize> =
                    wanted.keys().map(|t| (*t, count(&hooks, t))).collect();
                panic!("webhooks missing: wanted {wanted:?}, got {got:?}");
            }
        }
    }
    hooks.extend(rx.drain(Duration::from_millis(500)).await);
    gw.stop().await;

    // The paths the schemas must cover were taken.
    assert!(
        hooks
            .iter()
            .any(|h| h.json["data"]["previous_decision"]["fallback_reason"] == "invalid_answer"),
        "no decision carried a previous fallback"
    );
    assert!(
        hooks.iter().any(
            |h| h.json["type"] == "call.hangup" && h.json["data"]["attached"]["crm_id"] == "42"
        ),
        "attached data not repeated on the hangup"
    );
    assert!(hooks
        .iter()
        .any(|h| h.json["type"] == "call.expired"
            && h.json["data"]["attached"]["layer_seen"] == true));
    assert!(hooks
        .iter()
        .any(|h| h.json["type"] == "call.hangup" && h.json["data"]["time"]["utc"].is_null()));

    let dir = tempfile::tempdir().expect("tmp");
    let mut by_schema: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (i, hook) in hooks.iter().enumerate() {
        assert!(hook.verifies(), "signature of webhook {i}");
        let payload_type = hook.json["type"].as_str().expect("payload type");
        let file = dir.path().join(format!("{i:02}-{payload_type}.json"));
        // The exact bytes received.
        std::fs::write(&file, &hook.body).expect("write webhook");
        by_schema
            .entry(schema_for(payload_type))
            .or_default()
            .push(file);
    }
    assert_eq!(by_schema.len(), wanted.len(), "{:?}", by_schema.keys());
    for (schema, files) in &by_schema {
        assert_valid(schema, files);
    }
}

/// The fallback of `[tenants.decisions.ivr_action]` in config/example.toml, as JSON.
fn example_toml_fallback() -> Value {
    let text = std::fs::read_to_string(root().join("config/example.toml")).expect("example.toml");
    let config = ivrgate::config::Config::parse(&text, Path::new("config/example.toml"))
        .expect("example.toml parses");
    let fallback = config.tenants[0].decisions["ivr_action"]
        .fallback
        .as_ref()
        .expect("example.toml has an ivr_action fallback");
    serde_json::to_value(fallback).expect("fallback as JSON")
}

/// Whether ivrgate accepts `answer` at the decision point `kind`.
fn accepted_at(answer: &Value, kind: &str) -> Result<(), String> {
    let points = ivrgate::decision_points();
    let point = points
        .iter()
        .find(|p| p.kind == kind)
        .unwrap_or_else(|| panic!("no decision point {kind}"));
    Answer::from_json(answer).and_then(|a| (point.validate)(&a))
}

#[test]
fn answers_match_answer_schema_and_what_ivrgate_accepts() {
    // (answer, the decision point that accepts it; None: in the vocabulary, no Voicenter point)
    let good: Vec<(Value, Option<&str>)> = vec![
        (
            json!({"action": "menu", "prompt": "welcome", "menu": "main", "max_digits": 1}),
            Some("ivr_action"),
        ),
        (
            json!({"action": "menu", "prompt": "record", "menu": "menu", "repeat": 4, "pause_s": 3,
                   "max_digits": 2, "validate": true, "language": "HE", "attach": {"crm_id": "42"}}),
            Some("ivr_action"),
        ),
        (
            json!({"action": "say_digits", "digits": "154654", "prompt": "record_filename",
                   "menu": "menu_name", "repeat": 2, "pause_s": 1, "max_digits": 4, "validate": true}),
            Some("ivr_action"),
        ),
        (
            json!({"action": "say_digits", "digits": "1234", "digits_prompt": "your_code_is",
                   "next": "2", "next_if_failed": "1"}),
            Some("layer_input"),
        ),
        (
            json!({"action": "dial", "targets": ["0540123456"], "caller_id": "Unknown",
                   "caller_name": "?????", "ring_timeout_s": 35, "max_duration_s": 600, "record": true,
                   "caller_prompt": "now_calling", "target_prompt": "blank",
                   "music_class": "californication", "dtmf_after_answer": "3",
                   "dialstrings": ["SIP/972547000000@provider1"],
                   "on_failure": {"target": "SOME-MENU", "prompt": "record-filename", "repeat": 3,
                                  "max_digits": 4, "pause_s": 1}}),
            Some("ivr_action"),
        ),
        (
            json!({"action": "dial", "targets": ["0501234567", "0501234568"],
                   "caller_id": "0722776772", "caller_name": "Voicenter", "record": true,
                   "on_failure": {"target": "1"}, "on_answer_next": "1", "on_unavailable_next": "2"}),
            Some("layer_input"),
        ),
        (
            json!({"action": "goto", "target": "7", "prompt": "blank", "repeat": 1, "pause_s": 0}),
            Some("ivr_action"),
        ),
        (
            json!({"action": "goto", "target": "22", "caller_name": "Shlomi",
                   "attach": {"xxx": "111", "yyy ": "222"}}),
            Some("layer_input"),
        ),
        (
            json!({"action": "record", "prompt": "beep", "max_duration_s": 120}),
            Some("ivr_action"),
        ),
        (
            json!({"action": "hangup", "prompt": "blank", "cause": 16}),
            Some("ivr_action"),
        ),
        (json!({"action": "default"}), Some("ivr_action")),
        (json!({"action": "default"}), Some("layer_input")),
        (json!({"action": "default"}), Some("caller_lookup")),
        (
            json!({"action": "lookup_result", "found": true, "url": "http://crm.example/c?p=0722776772",
                   "name": "John Doe", "total": 1, "company": "Voicenter"}),
            Some("caller_lookup"),
        ),
        (
            json!({"action": "lookup_result", "found": false}),
            Some("caller_lookup"),
        ),
        (json!({"action": "enqueue", "queue": "sales"}), None),
        (json!({"action": "route_to_agent", "agent": "walter"}), None),
        (
            json!({"native": {"STATUS": 0, "ACTION": "HANGUP", "LANGUAGE": "HE",
                              "DATA": {"HANGUP_REC": "blank", "HANGUP_CAUSE": 16}}}),
            Some("ivr_action"),
        ),
        (
            json!({"STATUS": 0, "ACTION": " SAYDIGITS ", "LANGUAGE": "he", "DATA": {
                "REC": "record_filename", "LOOP": 2, "DELAY": 1, "SIZE": 4, "MENU": "menu_name",
                "VALIDATION": 1, "SAYDIGITSRECORD": "blank", "DIGITS": "154654"}}),
            Some("ivr_action"),
        ),
        (
            json!({"STATUS": 0, "ACTION": "GO_TO_LAYER", "LAYER ": 22, "CALLER_NAME": "Shlomi",
                   "CUSTOM_DATA": {"xxx": "111", "yyy ": "222", "zzz": "333"}}),
            Some("layer_input"),
        ),
        (json!({"STATUS": 1}), Some("layer_input")),
        (
            json!({"STATUS": "OK", "URL": "http://crm.example/c", "CLIENTNAME": "John Doe",
                   "TOTAL": "1", "COMPANY": "Voicenter"}),
            Some("caller_lookup"),
        ),
        (example_toml_fallback(), Some("ivr_action")),
    ];
    let dir = tempfile::tempdir().expect("tmp");
    let mut files = Vec::new();
    for (i, (answer, point)) in good.iter().enumerate() {
        match point {
            Some(kind) => assert_eq!(accepted_at(answer, kind), Ok(()), "{answer} at {kind}"),
            None => {
                assert!(Answer::from_json(answer).is_ok(), "{answer}");
                for kind in ["ivr_action", "layer_input", "caller_lookup"] {
                    assert!(accepted_at(answer, kind).is_err(), "{answer} at {kind}");
                }
            }
        }
        let file = dir.path().join(format!("good-{i:02}.json"));
        std::fs::write(&file, answer.to_string()).expect("write");
        files.push(file);
    }
    assert_valid("answer.json", &files);

    // (answer, whether ivrgate refuses it too; the schema is stricter about unknown fields)
    let bad: Vec<(Value, bool)> = vec![
        (json!({"action": "menu"}), true),
        (json!({"action": "menu", "prompt": "p", "menu": "m"}), true),
        (json!({"action": "teleport"}), true),
        (json!({"menu": "x"}), true),
        (json!([1, 2]), true),
        (json!({"action": "dial", "targets": "0501234567"}), true),
        (json!({"action": "dial"}), true),
        (json!({"action": "hangup", "cause": "16"}), true),
        (
            json!({"action": "menu", "prompt": "p", "menu": "m", "max_digits": -1}),
            true,
        ),
        (json!({"action": "goto"}), true),
        (json!({"action": "lookup_result"}), true),
        (json!({"action": "enqueue"}), true),
        (json!({"action": "record", "attach": null}), true),
        (json!({"native": "HANGUP"}), true),
        (
            json!({"action": "menu", "prompt": "p", "menu": "m", "max_digits": 1, "max_digit": 2}),
            false,
        ),
    ];
    for (i, (answer, refused_by_ivrgate)) in bad.iter().enumerate() {
        if *refused_by_ivrgate {
            for kind in ["ivr_action", "layer_input", "caller_lookup"] {
                assert!(
                    accepted_at(answer, kind).is_err(),
                    "ivrgate accepts {answer} at {kind}"
                );
            }
        }
        let file = dir.path().join(format!("bad-{i:02}.json"));
        std::fs::write(&file, answer.to_string()).expect("write");
        let name = file.display().to_string();
        let (ok, code, output) = validator(&["answer.json", &name]);
        assert!(!ok, "answer.json accepts {answer}:\n{output}");
        assert_eq!(
            code,
            Some(1),
            "{answer}: a validation failure, not a crash:\n{output}"
        );
        assert!(output.contains("INVALID"), "{output}");
    }
}
