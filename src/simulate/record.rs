//! Recordings of a simulated call and their replay.
//!
//! A recording is JSON lines: first `{"record": "ivrgate-simulate", "version": 1, "scenario":
//! {...}}` (the scenario with the call id and start time the run used), then one line per
//! thing that happened, each with `at_ms` and `kind`: `platform_request` / `platform_reply`
//! (the platform's HTTP exchange with ivrgate, bodies as text), `webhook` (a request ivrgate
//! sent: type, id, attempt, headers, body as sent), `webhook_answer` (status, body, error,
//! outcome), `decided` (source and fallback reason), `step` and `caller` (what the platform
//! and the caller did), and a closing `summary`.
//!
//! `--replay` runs the recorded scenario again against a stub receiver that answers each
//! webhook as the recorded endpoint did (in order, per payload type) and verifies every
//! signature, then compares: the webhooks sent (bodies with ids and times masked; decisions
//! in order, events as a set since deliveries run concurrently) and the platform's exchanges
//! (in order). A recording committed beside a test is that test's fixture.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::{Output, Scenario, Target, EXIT_FAILED, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

pub const MAGIC: &str = "ivrgate-simulate";
pub const VERSION: u64 = 1;

/// The secret the replay signs with (its stub verifies with it).
const REPLAY_SECRET: &str = "whsec_c2ltdWxhdGUtcmVwbGF5LXNpZ25pbmcta2V5";

/// Where recorded lines go.
pub struct Recorder {
    sink: Sink,
}

enum Sink {
    File(std::io::BufWriter<std::fs::File>),
    Memory(Arc<Mutex<Vec<Value>>>),
}

impl Recorder {
    pub fn create(path: &Path) -> Result<Recorder, String> {
        let file = std::fs::File::create(path)
            .map_err(|e| format!("cannot write the recording {}: {e}", path.display()))?;
        Ok(Recorder {
            sink: Sink::File(std::io::BufWriter::new(file)),
        })
    }

    pub fn memory(lines: Arc<Mutex<Vec<Value>>>) -> Recorder {
        Recorder {
            sink: Sink::Memory(lines),
        }
    }

    pub fn write(&mut self, entry: Value) {
        match &mut self.sink {
            Sink::File(file) => {
                use std::io::Write;
                let _ = writeln!(file, "{entry}");
                let _ = file.flush();
            }
            Sink::Memory(lines) => lines.lock().unwrap_or_else(|p| p.into_inner()).push(entry),
        }
    }
}

/// Reads a recording: the scenario and the lines after it.
pub fn load(path: &Path) -> Result<(Scenario, Vec<Value>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the recording {}: {e}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let head: Value = lines
        .next()
        .ok_or_else(|| format!("{} is empty", path.display()))
        .and_then(|l| {
            serde_json::from_str(l).map_err(|e| format!("{}: line 1: {e}", path.display()))
        })?;
    if head["record"] != MAGIC || head["version"] != VERSION {
        return Err(format!(
            "{} is not an ivrgate simulate recording (version {VERSION})",
            path.display()
        ));
    }
    let scenario: Scenario = serde_json::from_value(head["scenario"].clone())
        .map_err(|e| format!("{}: the recorded scenario: {e}", path.display()))?;
    let entries = lines
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}: line {}: {e}", path.display(), i + 2))
        })
        .collect::<Result<Vec<Value>, String>>()?;
    Ok((scenario, entries))
}

/// How the recorded endpoint answered, per payload type in order.
#[derive(Default)]
struct Answers {
    /// (type, status or None when no answer came, body).
    queue: Vec<(String, Option<u16>, String)>,
}

impl Answers {
    fn from(entries: &[Value]) -> Answers {
        let queue = entries
            .iter()
            .filter(|e| e["kind"] == "webhook_answer")
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or("").to_owned(),
                    e["status"].as_u64().map(|s| s as u16),
                    e["body"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        Answers { queue }
    }

    /// The next recorded answer to a request of `webhook_type`.
    fn take(&mut self, webhook_type: &str) -> Option<(Option<u16>, String)> {
        let i = self.queue.iter().position(|(t, _, _)| t == webhook_type)?;
        let (_, status, body) = self.queue.remove(i);
        Some((status, body))
    }
}

/// A receiver on 127.0.0.1:0 answering as recorded; counts bad signatures.
struct Stub {
    url: String,
    bad_signatures: Arc<Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn stub(answers: Answers, deadline_ms: u64) -> Result<Stub, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen for the replay's stub: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the stub's address: {e}"))?;
    let answers = Arc::new(Mutex::new(answers));
    let bad = Arc::new(Mutex::new(Vec::new()));
    let key = crate::signing::SigningKey::from_whsec(REPLAY_SECRET)
        .map_err(|e| format!("the replay secret: {e}"))?;
    let key = Arc::new(key);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bad_signatures = bad.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                _ = &mut stop_rx => return,
            };
            let answers = answers.clone();
            let bad = bad.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let answers = answers.clone();
                    let bad = bad.clone();
                    let key = key.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let header = |name: &str| {
                            parts
                                .headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let id = header("webhook-id");
                        let timestamp = header("webhook-timestamp").parse().unwrap_or(0);
                        if !crate::signing::verify(
                            &key,
                            &header("webhook-signature"),
                            &id,
                            timestamp,
                            &body,
                        ) {
                            bad.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(id.clone());
                        }
                        let kind = serde_json::from_slice::<Value>(&body)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let answer = answers
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take(&kind);
                        let (status, text) = match answer {
                            Some((Some(status), text)) => (status, text),
                            // The recorded endpoint gave no answer: a decision waits out its
                            // deadline, an event gets a 503.
                            Some((None, _)) if kind.starts_with("decision.") => {
                                tokio::time::sleep(Duration::from_millis(deadline_ms + 200)).await;
                                (503, String::new())
                            }
                            Some((None, _)) => (503, String::new()),
                            None => (200, "{}".to_owned()),
                        };
                        let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
                        *response.status_mut() =
                            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Stub {
        url: format!("http://{addr}/replay"),
        bad_signatures,
        _stop: stop_tx,
    })
}

/// What a recording says happened, with what changes from run to run masked: ids, times,
/// signatures, the endpoint.
fn comparable(entries: &[Value]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut decisions = Vec::new();
    let mut events = Vec::new();
    let mut platform = Vec::new();
    // The values ivrgate made up for the run, each written as its position: the n-th value
    // of the recording stands for the n-th value of the replay.
    let mut volatiles: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e["kind"] == "volatile")
        .filter_map(|e| e["value"].as_str())
        .enumerate()
        .map(|(i, v)| (v.to_owned(), format!("<made-up #{}>", i + 1)))
        .collect();
    // Longest first, so a value inside another is not replaced in it.
    volatiles.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
    let masked = |value: Value| {
        let mut text = value.to_string();
        for (v, name) in &volatiles {
            text = text.replace(v.as_str(), name);
        }
        text
    };
    for e in entries {
        match e["kind"].as_str().unwrap_or("") {
            "webhook" => {
                let kind = e["type"].as_str().unwrap_or("").to_owned();
                let body = serde_json::from_str::<Value>(e["body"].as_str().unwrap_or(""))
                    .map(mask)
                    .unwrap_or(Value::Null);
                let mut headers: Vec<String> = e["headers"]
                    .as_object()
                    .map(|h| h.keys().cloned().collect())
                    .unwrap_or_default();
                headers.sort();
                let entry = json!({
                    "type": kind, "attempt": e["attempt"], "of": e["of"],
                    "headers": headers, "body": body,
                });
                if kind.starts_with("decision.") {
                    decisions.push(masked(entry));
                } else {
                    events.push(masked(entry));
                }
            }
            "platform_request" => platform.push(masked(json!({
                "request": e["label"], "path": e["path"], "content_type": e["content_type"],
                "body": e["body"],
            }))),
            "platform_reply" => platform.push(masked(json!({
                "reply": e["status"], "content_type": e["content_type"], "body": e["body"],
            }))),
            _ => {}
        }
    }
    events.sort();
    (decisions, events, platform)
}

const VOLATILE: &str = "<varies>";

/// A payload with its per-run values replaced: ids and the times of the run (a decision's
/// or a PTK or OpenScape event's `timestamp` is when ivrgate received it).
fn mask(mut body: Value) -> Value {
    body["timestamp"] = json!(VOLATILE);
    if let Some(data) = body.get_mut("data").and_then(Value::as_object_mut) {
        for key in [
            "decision_id",
            "event_id",
            "call_id",
            "received_at",
            "due_at",
            "retry_at",
        ] {
            if data.contains_key(key) {
                data.insert(key.into(), json!(VOLATILE));
            }
        }
        if let Some(previous) = data
            .get_mut("previous_decision")
            .and_then(Value::as_object_mut)
        {
            for key in ["decision_id", "at"] {
                if previous.contains_key(key) {
                    previous.insert(key.into(), json!(VOLATILE));
                }
            }
        }
    }
    body
}

/// `--replay FILE`: the exit status.
pub async fn replay(path: &Path) -> u8 {
    let (scenario, recorded) = match load(path) {
        Ok(r) => r,
        Err(why) => {
            eprintln!("ivrgate simulate: {why}");
            return EXIT_USAGE;
        }
    };
    if scenario.platform == super::Platform::Ctips {
        eprintln!(
            "ivrgate simulate: {} records a CTIPS call; --replay covers voicenter, openscape and ptk (a CTIPS session's ids, epochs and event times are the server's own, so two runs never send the same webhooks)",
            path.display()
        );
        return EXIT_USAGE;
    }
    let deadline = scenario.deadline_ms.unwrap_or(3_000);
    let stub = match stub(Answers::from(&recorded), deadline).await {
        Ok(s) => s,
        Err(why) => {
            eprintln!("ivrgate simulate: {why}");
            return EXIT_FAILED;
        }
    };
    let target = Target {
        url: stub.url.clone(),
        decision_url: None,
        secret: REPLAY_SECRET.into(),
        ca_file: None,
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut out = match Output::stdout(None) {
        Ok(o) => o,
        Err(why) => {
            eprintln!("ivrgate simulate: {why}");
            return EXIT_FAILED;
        }
    };
    out.record = Some(Recorder::memory(lines.clone()));
    println!("replaying {}", path.display());
    let ran = super::simulate(scenario, target, &mut out).await;
    if ran == EXIT_FAILED || ran == EXIT_USAGE {
        return ran;
    }
    let now = lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let differences = compare(
        &recorded,
        &now,
        &stub
            .bad_signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    if differences.is_empty() {
        let (d, e, p) = comparable(&recorded);
        println!(
            "replay: the same exchange as recorded ({} decision webhook(s), {} event delivery attempt(s), {} platform message(s)); every signature verified",
            d.len(),
            e.len(),
            p.len()
        );
        EXIT_OK
    } else {
        println!(
            "replay: {} difference(s) from the recording:",
            differences.len()
        );
        for d in &differences {
            println!("  - {d}");
        }
        EXIT_FINDINGS
    }
}

/// The differences between a recording and a replay, each in words.
pub fn compare(recorded: &[Value], now: &[Value], bad_signatures: &[String]) -> Vec<String> {
    let (rd, re, rp) = comparable(recorded);
    let (nd, ne, np) = comparable(now);
    let mut out = Vec::new();
    for id in bad_signatures {
        out.push(format!("webhook {id}: the signature does not verify"));
    }
    let mut list = |what: &str, a: &[String], b: &[String]| {
        if a.len() != b.len() {
            out.push(format!("{what}: {} recorded, {} now", a.len(), b.len()));
        }
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            if x != y {
                out.push(format!(
                    "{what} #{}: recorded {} / now {}",
                    i + 1,
                    super::call::clip(x, 600),
                    super::call::clip(y, 600)
                ));
            }
        }
    };
    list("decision webhook", &rd, &nd);
    list("event delivery", &re, &ne);
    list("platform message", &rp, &np);
    out
}
