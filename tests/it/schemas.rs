//! The JSON Schemas of docs/schemas/ against what ivrgate really sends and accepts: every
//! kind of Voicenter request of the seed fixtures, and PTK and OpenScape flows reaching every
//! event and decision type of those adapters, go through an in-process gateway; every webhook
//! body the receiver gets (decisions, events, `call.expired`) is validated with the Python
//! `jsonschema` package (tests/py/validate_schemas.py), and a set of decision answers is
//! checked against answer.json and against ivrgate's own reading of answers, so the schema and
//! the code cannot drift apart unnoticed.

use std::collections::{BTreeMap, BTreeSet};
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

/// The schema file for a payload `type`: one file per decision kind, one per event family
/// for the adapters' entity events, one per type for the core's events.
fn schema_for(payload_type: &str) -> String {
    const FAMILIES: [(&str, &str); 7] = [
        ("ptk.interaction.", "event.ptk.interaction.json"),
        ("openscape.call.", "event.openscape.call.json"),
        ("openscape.transit.", "event.openscape.transit.json"),
        ("openscape.callback.", "event.openscape.callback.json"),
        ("ctips.", "event.ctips.json"),
        ("voicenter.extension.", "event.voicenter.monitor.json"),
        ("voicenter.queue.", "event.voicenter.monitor.json"),
    ];
    if payload_type.starts_with("decision.") {
        return format!("{payload_type}.json");
    }
    FAMILIES
        .iter()
        .find(|(prefix, _)| payload_type.starts_with(prefix))
        .map(|(_, file)| (*file).to_owned())
        .unwrap_or_else(|| format!("event.{payload_type}.json"))
}

/// Checks every webhook's signature and validates its exact bytes against its schema (one
/// validator run per schema file); returns how many webhooks each schema file got.
pub(crate) fn assert_hooks_match_schemas(hooks: &[Hook]) -> BTreeMap<String, usize> {
    let dir = tempfile::tempdir().expect("tmp");
    let mut by_schema: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (i, hook) in hooks.iter().enumerate() {
        assert!(hook.verifies(), "signature of webhook {i}");
        let payload_type = hook.json["type"].as_str().expect("payload type");
        let file = dir.path().join(format!("{i:03}-{payload_type}.json"));
        // The exact bytes received.
        std::fs::write(&file, &hook.body).expect("write webhook");
        by_schema
            .entry(schema_for(payload_type))
            .or_default()
            .push(file);
    }
    // IVRGATE_DUMP_WEBHOOKS=<dir> keeps a copy of every payload (to write examples from).
    if let Some(keep) = std::env::var_os("IVRGATE_DUMP_WEBHOOKS") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).expect("dump dir");
        for file in by_schema.values().flatten() {
            let name = file.file_name().expect("file name");
            std::fs::copy(file, keep.join(name)).expect("dump webhook");
        }
    }
    for (schema, files) in &by_schema {
        assert_valid(schema, files);
    }
    by_schema
        .iter()
        .map(|(k, v)| (k.clone(), v.len()))
        .collect()
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
        // windows-1255 bytes in a form that declares no charset: data.undecodable
        (
            "/voicenter/acme/cdr",
            "application/x-www-form-urlencoded",
            "ivruniqueid=schema-undecodable&status=ANSWER&queuename=%F9%EC%E5%ED".to_owned(),
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
        ("call.cdr", 5),
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

    assert!(
        hooks
            .iter()
            .any(|h| h.json["data"]["undecodable"]["queuename"] == "+ezl7Q=="),
        "no event carried data.undecodable"
    );

    let by_schema = assert_hooks_match_schemas(&hooks);
    assert_eq!(by_schema.len(), wanted.len(), "{:?}", by_schema.keys());
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
    let points = ivrgate::adapters::decision_points(ivrgate::adapters::all());
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

/// The lines of docs/webhooks.md from the heading `title` to the next heading of its level.
fn webhooks_md_section(title: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("docs/webhooks.md")).expect("webhooks.md");
    let mut lines = text.lines().skip_while(|l| *l != title);
    assert!(lines.next().is_some(), "docs/webhooks.md has no {title:?}");
    lines
        .take_while(|l| !l.starts_with("### ") && !l.starts_with("## "))
        .map(str::to_owned)
        .collect()
}

/// The backticked words of `text`, in order.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[test]
fn webhooks_md_answer_examples_are_accepted_where_they_say() {
    // (the last paragraph before the example, the example)
    let mut examples: Vec<(String, Value)> = Vec::new();
    let mut paragraph = String::new();
    let mut block: Option<String> = None;
    // Whether a blank line ended the paragraph (the next text line starts another).
    let mut ended = false;
    for line in webhooks_md_section("### Answer examples, one per action") {
        match (&mut block, line.as_str()) {
            (None, "```json") => block = Some(String::new()),
            (Some(json), "```") => {
                let answer: Value = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("not JSON after {paragraph:?}: {e}\n{json}"));
                examples.push((paragraph.clone(), answer));
                block = None;
            }
            (Some(json), l) => json.push_str(l),
            (None, "") => ended = true,
            (None, l) => {
                if ended {
                    paragraph.clear();
                    ended = false;
                }
                paragraph.push(' ');
                paragraph.push_str(l);
            }
        }
    }
    assert!(block.is_none(), "an unclosed example");

    let dir = tempfile::tempdir().expect("tmp");
    let mut files = Vec::new();
    let mut covered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, (paragraph, answer)) in examples.iter().enumerate() {
        let words = backticked(paragraph);
        let action = words
            .first()
            .unwrap_or_else(|| panic!("{paragraph:?} names no action before {answer}"))
            .to_string();
        let kinds: Vec<&str> = words
            .iter()
            .filter_map(|w| w.strip_prefix("decision."))
            .collect();
        assert!(!kinds.is_empty(), "{paragraph:?} names no decision point");
        if action == "native" {
            assert!(answer.get("action").is_none(), "{answer}");
        } else {
            assert_eq!(answer["action"], action.as_str(), "{paragraph:?}: {answer}");
        }
        for kind in kinds {
            assert_eq!(accepted_at(answer, kind), Ok(()), "{answer} at {kind}");
            covered
                .entry(action.clone())
                .or_default()
                .insert(kind.to_owned());
        }
        let file = dir.path().join(format!("doc-{i:02}.json"));
        std::fs::write(&file, answer.to_string()).expect("write");
        files.push(file);
    }
    assert_valid("answer.json", &files);

    // Every action of the neutral actions table has an example, and every Voicenter decision
    // point a native one.
    let actions: Vec<String> = webhooks_md_section("### Answers: the neutral actions")
        .iter()
        .filter(|l| l.starts_with("| `"))
        .map(|l| backticked(l)[0].to_owned())
        .collect();
    assert!(actions.len() >= 10, "{actions:?}");
    for action in &actions {
        assert!(
            covered.contains_key(action),
            "no example for `{action}`: {covered:?}"
        );
    }
    for kind in ["ivr_action", "layer_input", "caller_lookup"] {
        assert!(
            covered["native"].contains(kind),
            "no native example at {kind}"
        );
    }
}

/// Every webhook a flow produced, kept in arrival order, and bounded waits for the next ones.
struct Captured<'a> {
    rx: &'a Receiver,
    hooks: Vec<Hook>,
}

impl<'a> Captured<'a> {
    fn new(rx: &'a Receiver) -> Self {
        Captured {
            rx,
            hooks: Vec::new(),
        }
    }

    fn count(&self, payload_type: &str) -> usize {
        self.hooks
            .iter()
            .filter(|h| h.json["type"] == payload_type)
            .count()
    }

    /// Waits (at most `WAIT`) until `n` webhooks of `payload_type` were received in all.
    async fn wait_for_n(&mut self, payload_type: &str, n: usize) -> &Hook {
        let deadline = Instant::now() + WAIT;
        while self.count(payload_type) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.next_within(left).await {
                Some(hook) => self.hooks.push(hook),
                None => panic!(
                    "no {payload_type} webhook #{n} in time; got {:?}",
                    self.types()
                ),
            }
        }
        self.hooks
            .iter()
            .rev()
            .find(|h| h.json["type"] == payload_type)
            .expect("counted")
    }

    /// Waits for one more webhook of `payload_type` than was received so far.
    async fn wait_for_next(&mut self, payload_type: &str) -> &Hook {
        let n = self.count(payload_type) + 1;
        self.wait_for_n(payload_type, n).await
    }

    /// Takes whatever still arrives until the receiver is quiet for `quiet` (at most `WAIT`).
    async fn drain(&mut self, quiet: Duration) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.rx.next_within(quiet).await {
                Some(hook) => self.hooks.push(hook),
                None => return,
            }
        }
    }

    fn types(&self) -> std::collections::BTreeSet<String> {
        self.hooks
            .iter()
            .map(|h| h.json["type"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Asserts every type of `wanted` was received, then validates every webhook.
    fn assert_all_seen_and_valid(&self, wanted: &[&str]) {
        let seen = self.types();
        let missing: Vec<&&str> = wanted.iter().filter(|t| !seen.contains(**t)).collect();
        assert!(
            missing.is_empty(),
            "never received {missing:?}; got {seen:?}"
        );
        assert_hooks_match_schemas(&self.hooks);
    }
}

// ---------------------------------------------------------------------------------------------
// PTK
// ---------------------------------------------------------------------------------------------

const PTK_TOML: &str = r#"
[tenants.ptk]
tenants = ["Portree"]
target_namespace = "urn:ivrgate:test:ptk"
idle_expiry_s = 7200

[[tenants.ptk.segments]]
tenant = "Portree"
name = "VHT_Test"
skills = ["100", "200"]

[[tenants.ptk.segments]]
tenant = "Portree"
name = "Retry"
max_attempts = 3
retry_interval_s = 600

[[tenants.ptk.segments]]
tenant = "Portree"
name = "Hooked"
decision = true
"#;

/// Calls a PTK `method` (SOAP 1.1) and asserts its status code; returns the answer.
async fn ptk(gw: &Gateway, method: &str, inner: &str, expected: u32) -> String {
    let body = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><{method} xmlns="urn:ivrgate:test:ptk">{inner}</{method}></s:Body></s:Envelope>"#
    );
    let (status, _, text) = gw.post("/ptk/acme", "text/xml; charset=utf-8", body).await;
    assert_eq!(status, 200, "{method}: {text}");
    let code = ivrgate_ptk::testing::text_of(&text, "ResultCode")
        .or_else(|| ivrgate_ptk::testing::text_of(&text, "Code"))
        .and_then(|c| c.parse::<u32>().ok());
    assert_eq!(code, Some(expected), "{method} {inner}\n{text}");
    text
}

fn ptk_id(body: &str) -> String {
    ivrgate_ptk::testing::text_of(body, "InteractionId")
        .or_else(|| {
            ivrgate_ptk::testing::attrs_of(body, "Interaction", "Id")
                .into_iter()
                .next()
        })
        .unwrap_or_else(|| panic!("no interaction id in {body}"))
}

fn ptk_time(gw: &Gateway, ahead: Duration) -> String {
    use ivrgate::clock::Clock as _;
    ivrgate_ptk::settings::format_time(gw.clock.now() + ahead)
}

#[tokio::test]
async fn ptk_webhooks_match_their_schemas() {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        if hook.json["type"] == "decision.segment_state" {
            Reply::ok(r#"{"native":{"OperationMode":"Normal","EWT":"30"}}"#)
        } else {
            Reply::ok("{}")
        }
    });
    let gw = Gateway::start(&rx.url("/hook"), PTK_TOML).await;
    let mut got = Captured::new(&rx);
    let t = "<Tenant>Portree</Tenant>";
    let hour = Duration::from_secs(3600);

    // The segment state, answered by the decision webhook.
    ptk(
        &gw,
        "GetSegmentState",
        &format!("<data>{t}<Segment>Hooked</Segment></data>"),
        107000,
    )
    .await;
    got.wait_for_next("decision.segment_state").await;

    // An inbound call: holding queue, user data, external id, a callback at an appointment,
    // a client id; due an hour later, connected, queued for an agent and answered.
    let create = format!("{t}<Segment>VHT_Test</Segment>");
    let a = ptk_id(&ptk(&gw, "CreateInteraction", &create, 107000).await);
    let with_a = format!("{t}<InteractionId>{a}</InteractionId>");
    ptk(
        &gw,
        "InteractionQueued",
        &format!("{with_a}<SkillId>100</SkillId>"),
        107000,
    )
    .await;
    ptk(
        &gw,
        "UpdateUserData",
        &format!("<data>{with_a}<UserData><UserDataAssignment><Key>crm</Key><Value>42</Value></UserDataAssignment></UserData></data>"),
        107000,
    )
    .await;
    ptk(
        &gw,
        "AssociateInteractionWithExternalTrackingID",
        &format!("{with_a}<ExternalTrackingId>EXT-1</ExternalTrackingId>"),
        107000,
    )
    .await;
    let at = ptk_time(&gw, hour);
    ptk(
        &gw,
        "InteractionRequestContact",
        &format!("{with_a}<ContactURI>voice://5551234/{at}</ContactURI>"),
        107000,
    )
    .await;
    ptk(
        &gw,
        "ModifyInteraction",
        &format!("<data>{with_a}<Action>ClientId</Action><Options><ClientId>c-9</ClientId></Options></data>"),
        107000,
    )
    .await;
    got.wait_for_next("ptk.interaction.modified").await;
    gw.clock.advance(hour + Duration::from_secs(1));
    got.wait_for_next("callback.due").await;
    ptk(&gw, "InteractionOutboundConnected", &with_a, 107000).await;
    ptk(
        &gw,
        "InteractionQueued",
        &format!("{with_a}<SkillId>200</SkillId>"),
        107000,
    )
    .await;
    ptk(
        &gw,
        "InteractionDequeued",
        &format!("{with_a}<Reason>AgentAnswered</Reason>"),
        107000,
    )
    .await;

    // Sent to the holding queue, then the caller hangs up.
    let b = ptk_id(&ptk(&gw, "CreateInteraction", &create, 107000).await);
    let with_b = format!("{t}<InteractionId>{b}</InteractionId>");
    ptk(
        &gw,
        "InteractionSendToQueue",
        &format!(
            "{with_b}<Reason>ChoseHold</Reason><DataName>lang</DataName><DataValue>en</DataValue>"
        ),
        107000,
    )
    .await;
    ptk(
        &gw,
        "InteractionDisconnectedByCaller",
        &format!("{with_b}<Reason>Abandon</Reason>"),
        107000,
    )
    .await;

    // The application disconnects one.
    let c = ptk_id(&ptk(&gw, "CreateInteraction", &create, 107000).await);
    ptk(
        &gw,
        "InteractionDisconnectedByApplication",
        &format!("{t}<InteractionId>{c}</InteractionId><Reason>Other</Reason>"),
        107000,
    )
    .await;

    // Scheduled callbacks: cancelled by the caller, removed, completed with a result.
    let add = |segment: &str, contact: &str, at: &str| {
        format!("<data>{t}<Segment>{segment}</Segment><Contact>{contact}</Contact><Options><AppointmentTime>{at}</AppointmentTime></Options></data>")
    };
    let at = ptk_time(&gw, 2 * hour);
    let d = ptk_id(&ptk(&gw, "AddInteraction", &add("Retry", "5550100", &at), 107000).await);
    ptk(
        &gw,
        "InteractionCancelled",
        &format!("{t}<InteractionId>{d}</InteractionId><CancelledBy>Caller</CancelledBy>"),
        107000,
    )
    .await;
    let f = ptk_id(
        &ptk(
            &gw,
            "AddInteraction",
            &add("VHT_Test", "5550102", &at),
            107000,
        )
        .await,
    );
    ptk(
        &gw,
        "RemoveInteraction",
        &format!("<data>{t}<InteractionId>{f}</InteractionId><Reason>Web Canceled</Reason></data>"),
        107000,
    )
    .await;
    let at = ptk_time(&gw, 3 * hour);
    let g = ptk_id(
        &ptk(
            &gw,
            "AddInteraction",
            &add("VHT_Test", "5550103", &at),
            107000,
        )
        .await,
    );
    ptk(
        &gw,
        "ModifyInteraction",
        &format!("<data>{t}<InteractionId>{g}</InteractionId><Action>Result</Action><Options><Result>Successful</Result></Options></data>"),
        107000,
    )
    .await;

    // An ASAP callback, due at once; the attempt fails (Busy) and is rescheduled.
    let before = got.count("callback.due");
    let e = ptk_id(
        &ptk(
            &gw,
            "AddInteraction",
            &format!("<data>{t}<Segment>Retry</Segment><Contact>5550101</Contact></data>"),
            107000,
        )
        .await,
    );
    got.wait_for_n("callback.due", before + 1).await;
    ptk(
        &gw,
        "InteractionOutboundAttemptFailed",
        &format!("{t}<InteractionId>{e}</InteractionId><Reason>Busy</Reason>"),
        107000,
    )
    .await;
    got.wait_for_next("ptk.interaction.outbound_attempt_failed")
        .await;

    // An inbound interaction nobody reports on expires after idle_expiry_s.
    let h = ptk_id(&ptk(&gw, "CreateInteraction", &create, 107000).await);
    // (eight interactions were created: A, B, C, D, F, G, E and H)
    got.wait_for_n("ptk.interaction.created", 8).await;
    gw.clock.advance(2 * hour + Duration::from_secs(1));
    got.wait_for_next("ptk.interaction.expired").await;
    got.drain(Duration::from_millis(700)).await;
    assert!(
        got.hooks
            .iter()
            .any(|x| x.json["type"] == "ptk.interaction.expired"
                && x.json["data"]["interaction_id"] == json!(h)),
        "the idle interaction {h} did not expire"
    );
    gw.stop().await;

    got.assert_all_seen_and_valid(&[
        "decision.segment_state",
        "ptk.interaction.created",
        "ptk.interaction.queued",
        "ptk.interaction.dequeued",
        "ptk.interaction.callback_requested",
        "ptk.interaction.cancelled",
        "ptk.interaction.completed",
        "ptk.interaction.disconnected",
        "ptk.interaction.expired",
        "ptk.interaction.external_id_associated",
        "ptk.interaction.modified",
        "ptk.interaction.outbound_attempt_failed",
        "ptk.interaction.outbound_connected",
        "ptk.interaction.removed",
        "ptk.interaction.sent_to_queue",
        "ptk.interaction.user_data_updated",
        "callback.due",
    ]);
}

// ---------------------------------------------------------------------------------------------
// OpenScape
// ---------------------------------------------------------------------------------------------

const OPENSCAPE_TOML: &str = r#"
[tenants.openscape]
transit_numbers = ["8800", "8801"]
transit_quarantine_ms = 2000
queues = ["Sales", "Support"]
call_max_s = 60
figures_from_webhook = ["queue_statistics", "agent_status", "system_status"]

[tenants.openscape.callback_queues.CBQueue]
timezone = "America/Toronto"
open_hours = ["mon-fri 08:00-18:00"]
max_days_ahead = 30
"#;

/// Calls one OpenScape function over XML-RPC on `channel`; returns the answer as JSON.
async fn openscape(gw: &Gateway, channel: &str, method: &str, params: Value) -> Value {
    use ivrgate_wire::{xmlrpc, Limits};
    let call = xmlrpc::MethodCall {
        method: method.to_owned(),
        params: params
            .as_array()
            .map(|a| a.iter().map(xmlrpc::Value::from_json).collect())
            .unwrap_or_default(),
    };
    let (status, _, body) = gw
        .post(
            &format!("/openscape/acme/{channel}"),
            "text/xml",
            xmlrpc::write_call(&call),
        )
        .await;
    assert_eq!(status, 200, "{method}: {body}");
    match xmlrpc::parse_response(&body, &Limits::default()).expect("XML-RPC answer") {
        Ok(params) => params
            .first()
            .map(xmlrpc::Value::to_json)
            .unwrap_or(Value::Null),
        Err(fault) => panic!("{method}: fault {} {}", fault.code, fault.message),
    }
}

/// Calls `method` and asserts its ReturnCode is `expected`.
async fn openscape_ok(
    gw: &Gateway,
    channel: &str,
    method: &str,
    params: Value,
    expected: i64,
) -> Value {
    let a = openscape(gw, channel, method, params.clone()).await;
    assert_eq!(a["ReturnCode"], json!(expected), "{method} {params}: {a}");
    a
}

/// A command API request; asserts a 2xx status.
async fn openscape_command(gw: &Gateway, path: &str, body: Value) -> Value {
    let response = client()
        .post(gw.url(&format!("/api/acme/openscape/{path}")))
        .json(&body)
        .send()
        .await
        .expect("command");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert!((200..300).contains(&status), "{path}: {status} {answer}");
    answer
}

/// Initialize, SetCallInfo and QueryCallInfo on `channel`: an unmonitored call's CallID.
async fn openscape_call(gw: &Gateway, channel: &str) -> String {
    openscape_ok(
        gw,
        channel,
        "Initialize",
        json!(["6060", "6000@deerhurst", 10_000]),
        0,
    )
    .await;
    openscape_ok(
        gw,
        channel,
        "SetCallInfo",
        json!(["9055551234", "12345"]),
        0,
    )
    .await;
    let a = openscape_ok(
        gw,
        channel,
        "QueryCallInfo",
        json!([channel, null, null, null, null, null, null, null, null, "1;"]),
        0,
    )
    .await;
    a["CallID"].as_str().expect("CallID").to_owned()
}

#[tokio::test]
async fn openscape_webhooks_match_their_schemas() {
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        let reply = match hook.json["type"].as_str().unwrap_or("") {
            "decision.routing_info" => {
                r#"{"native":{"ReturnCode":0,"Destination":"Support","InitialPriority":7}}"#
            }
            "decision.queue_statistics" => {
                r#"{"native":{"CallsInQueue":7,"EstimatedWait":90,"AverageWait":60,"OldestCallInQueue":300,"ServiceLevel":75}}"#
            }
            "decision.agent_status" => {
                r#"{"native":{"AgentID":"188001","Device":"4711","AgentStatus":1}}"#
            }
            "decision.system_status" => {
                r#"{"native":{"OverallStatus":1,"IndividualServerStates":"RoutingServer=1; TServer=8; CallbackServer=1"}}"#
            }
            _ => "{}",
        };
        Reply::ok(reply)
    });
    // Monday 2026-01-05 12:00 UTC, inside the callback queue's open hours.
    let at = time::OffsetDateTime::parse(
        "2026-01-05T12:00:00Z",
        &time::format_description::well_known::Rfc3339,
    )
    .expect("time");
    let real_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let offset = (at.unix_timestamp_nanos() / 1_000_000) as i64 - real_ms;
    let clock = std::sync::Arc::new(ivrgate::clock::ManualClock::with_offset_ms(offset));
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = config_toml(tmp.path(), &rx.url("/hooks"), OPENSCAPE_TOML);
    let gw = Gateway::start_in(tmp.path(), &toml, clock).await;
    let mut got = Captured::new(&rx);

    // An unmonitored call: routing decision, queued, every order of the command API,
    // dequeued, queued and assigned, a transit number, a callback, then the caller leaves.
    let a = openscape_call(&gw, "6060").await;
    openscape_ok(
        &gw,
        "6060",
        "SetContactData",
        json!([a, "Name", "John Doe"]),
        0,
    )
    .await;
    openscape_ok(
        &gw,
        "6060",
        "QueryRoutingInfo",
        json!([
            a,
            ">D",
            ">A",
            ">W",
            ">De",
            ">P",
            ">E",
            ">C",
            "9055557900;69030"
        ]),
        0,
    )
    .await;
    openscape_ok(&gw, "6060", "Enqueue", json!([a, 1, "Sales", 10]), 0).await;
    for order in ["timeout", "error", "disconnect", "transfer"] {
        openscape_command(
            &gw,
            &format!("calls/{a}/{order}"),
            json!({"extension": "7777"}),
        )
        .await;
    }
    openscape_ok(&gw, "6060", "Dequeue", json!([a]), 0).await;
    openscape_ok(&gw, "6060", "Enqueue", json!([a, 1, "Sales", 10]), 0).await;
    openscape_command(
        &gw,
        &format!("calls/{a}/assign"),
        json!({"extension": "4711"}),
    )
    .await;
    openscape_ok(&gw, "6060", "GetTransitNumber", json!([a, ">T"]), 0).await;
    openscape_ok(&gw, "6060", "ReleaseTransitNumber", json!([a]), 0).await;
    let cb = openscape_ok(
        &gw,
        "6060",
        "CreateCallback",
        json!([
            a,
            "CBQueue",
            "Callback",
            0,
            "Alan Smith",
            ">CB",
            "5555550199;01/05/2026;09:00;01/05/2026;16:00"
        ]),
        0,
    )
    .await;
    let cb = cb["CallbackID"].as_str().expect("CallbackID").to_owned();
    openscape_ok(&gw, "6060", "DeleteCallback", json!([cb]), 0).await;
    openscape_ok(&gw, "6060", "CallerDisconnected", json!([a, 2]), 0).await;

    // Another caller hangs up in the IVR.
    let b = openscape_call(&gw, "6061").await;
    openscape_ok(&gw, "6061", "CallerDisconnected", json!([b, 0]), 0).await;

    // A monitored call, transferred by the IVR.
    let monitored = "1341023126268002";
    openscape_command(
        &gw,
        "devices/36200/calls",
        json!({"call_id": monitored, "ani": "9055557900", "dnis": "69030", "fmnq": false}),
    )
    .await;
    openscape_ok(
        &gw,
        "36200",
        "Initialize",
        json!(["6060", "6000@deerhurst", 10_000]),
        0,
    )
    .await;
    openscape_ok(
        &gw,
        "36200",
        "QueryCallInfo",
        json!(["36200", ">CallID", ">ANI", ">DNIS"]),
        0,
    )
    .await;
    openscape_ok(&gw, "36200", "Transfer", json!([monitored, "4711"]), 0).await;

    // The figures, answered by the decision webhook.
    openscape_ok(
        &gw,
        "6060",
        "QueryQueueStatistics",
        json!(["Sales", ">C", ">E", ">A", ">O", ">S"]),
        0,
    )
    .await;
    openscape_ok(
        &gw,
        "6060",
        "QueryAgentStatus",
        json!(["188001", ">D", ">S"]),
        0,
    )
    .await;
    openscape_ok(
        &gw,
        "6060",
        "QuerySystemStatus",
        json!([">O", ">S", ">E"]),
        0,
    )
    .await;

    // A call nobody hears of again expires after call_max_s.
    let c = openscape_call(&gw, "6062").await;
    got.wait_for_n("openscape.call.arrived", 4).await;
    gw.clock.advance(Duration::from_secs(61));
    let expired = got.wait_for_next("call.expired").await;
    assert_eq!(expired.json["data"]["vendor"], json!("openscape"));
    assert_eq!(
        expired.json["data"]["correlation"]["vendor_call_id"],
        json!(c)
    );
    got.drain(Duration::from_millis(700)).await;
    gw.stop().await;

    got.assert_all_seen_and_valid(&[
        "decision.routing_info",
        "decision.queue_statistics",
        "decision.agent_status",
        "decision.system_status",
        "openscape.call.arrived",
        "openscape.call.enqueued",
        "openscape.call.dequeued",
        "openscape.call.assigned",
        "openscape.call.timed_out",
        "openscape.call.transfer_ordered",
        "openscape.call.disconnect_ordered",
        "openscape.call.error",
        "openscape.call.transferred",
        "openscape.call.disconnected",
        "openscape.call.abandoned",
        "openscape.transit.allocated",
        "openscape.transit.released",
        "openscape.callback.created",
        "openscape.callback.deleted",
        "call.expired",
    ]);
}
