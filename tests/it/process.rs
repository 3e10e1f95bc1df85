//! The built `ivrgate` binary as a process: SIGKILL in the middle of a CDR stream loses no
//! acknowledged CDR and keeps each call's sequence; two processes share one state
//! directory; Python's own XML-RPC client and the Standard Webhooks reference verifier talk
//! to it. Loopback only; every wait is bounded and every spawned process is killed on every
//! path (see [`Daemon`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Longest a process may take to answer `/readyz`.
const BOOT: Duration = Duration::from_secs(30);
/// Longest every webhook may take to arrive once its request was acknowledged.
const DELIVERY: Duration = Duration::from_secs(30);

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The daemon's configuration: one tenant `acme`, short retries and a short delivery lease
/// (a process killed while holding leases must not keep the restarted one waiting a minute).
pub(crate) fn daemon_toml(port: u16, state_dir: &Path, webhook_url: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{dir}"

[logging]
level = "warn"

[storage]
min_free_bytes = 0

[delivery]
retry_schedule_s = [1, 1, 1, 2, 2, 2, 4, 4, 4]
jitter_percent = 0
lease_ms = 3000

[[tenants]]
id = "acme"
webhook_url = "{webhook_url}"
webhook_secret = "{SECRET}"
"#,
        dir = state_dir.display()
    )
}

/// One `ivrgate serve` process. Dropping it kills (SIGKILL) and reaps it.
pub(crate) struct Daemon {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Daemon {
    /// Starts the built binary on `port` with its configuration and log under `dir`.
    fn spawn(
        name: &str,
        dir: &Path,
        port: u16,
        state_dir: &Path,
        webhook_url: &str,
        storage: &Storage,
    ) -> Daemon {
        let toml = storage.apply(&daemon_toml(port, state_dir, webhook_url));
        Daemon::spawn_with(name, dir, port, &toml, None)
    }

    /// Starts the built binary with the configuration text `toml`. With `tmpfs` = (directory,
    /// size), it runs in its own mount namespace with a tmpfs of that size mounted on the
    /// directory (`unshare`, unprivileged through a user namespace): a small disk of its own.
    pub(crate) fn spawn_with(
        name: &str,
        dir: &Path,
        port: u16,
        toml: &str,
        tmpfs: Option<(&Path, &str)>,
    ) -> Daemon {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("create log");
        let binary = env!("CARGO_BIN_EXE_ivrgate");
        let mut command = match tmpfs {
            None => Command::new(binary),
            Some((mount, size)) => {
                let mut c = Command::new("unshare");
                c.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
                    .arg(format!(
                        r#"mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@""#
                    ))
                    .arg(mount)
                    .arg(binary);
                c
            }
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ivrgate");
        Daemon {
            name: name.to_owned(),
            port,
            child: Some(child),
            log,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/readyz` until it answers 200; panics (with the log) on exit or after `BOOT`.
    pub(crate) async fn ready(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let deadline = Instant::now() + BOOT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited before it was ready ({status}):\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {BOOT:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub(crate) fn sigkill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Panics (with the log) if the process has died on its own.
    fn assert_alive(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("{} died ({status}):\n{}", self.name, self.log_text());
        }
    }

    /// A counter from `/metrics`, e.g. `events_recorded_total{outcome="duplicate"}`.
    async fn metric(&self, series: &str) -> f64 {
        let text = client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter_map(|l| l.strip_prefix(series))
            .filter_map(|rest| rest.trim().split(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// POSTs a JSON body; the parsed answer, or why there is none (refused, reset, not JSON).
async fn post_json(client: &reqwest::Client, url: &str, body: &str) -> Result<Value, String> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("answer {text:?}: {e}"))
}

pub(crate) fn cdr_acked(answer: &Value) -> bool {
    answer["err"] == json!(0) && answer["errdesc"] == json!("OK")
}

/// A Voicenter JSON CDR shaped like tests/fixtures/voicenter/cdr.json (which is lenient
/// JSON, so it is rebuilt here); `duration` tells CDRs of one call apart.
pub(crate) fn cdr_body(ivruniqueid: &str, duration: u64) -> String {
    json!({
        "caller": "0544444444",
        "target": "0722776772",
        "time": 1414320455u64 + duration,
        "duration": duration,
        "ivruniqueid": ivruniqueid,
        "type": "Extension Outgoing",
        "status": "ANSWER",
        "targetextension": "",
        "callerextension": "SIPSIPSI",
        "did": "",
        "queueid": 0,
        "record": format!("http://recordings.example/{ivruniqueid}-{duration}.mp3"),
        "dialtime": 31
    })
    .to_string()
}

/// The JSON HANGUP_CALL of tests/fixtures/voicenter/hangup_call.json for another call.
fn hangup_body(ivr_unique_id: &str, duration: u64) -> String {
    json!({
        "METHOD": "HANGUP_CALL",
        "DATA": {
            "DID": "0730000000",
            "CALLER_ID": "0540000000",
            "IVR_UNIQUE_ID": ivr_unique_id,
            "TARGET": "0500000555",
            "CALL_TIME_EPOCH": 1561684165,
            "CALL_START_EPOCH": 1561684161,
            "CALL_DURATION": duration,
            "CALL_DAILTIME": 15,
            "CALL_STATUS": "ANSWERED"
        }
    })
    .to_string()
}

/// Which request a webhook came from: `call#duration` for CDRs, `call#hangup#duration` for
/// hangups (the vendor fields are passed through untouched).
fn request_key(hook: &Hook) -> Option<String> {
    let fields = &hook.json["data"]["vendor_fields"];
    match hook.json["type"].as_str()? {
        "call.cdr" => Some(format!(
            "{}#{}",
            fields["ivruniqueid"].as_str()?,
            fields["duration"].as_u64()?
        )),
        "call.hangup" => Some(format!(
            "{}#hangup#{}",
            fields["IVR_UNIQUE_ID"].as_str()?,
            fields["CALL_DURATION"].as_u64()?
        )),
        _ => None,
    }
}

/// Collects webhooks until every key in `want` was seen at least once, or panics after
/// `DELIVERY` naming what is missing.
async fn collect_until(receiver: &Receiver, want: &HashSet<String>, hooks: &mut Vec<Hook>) {
    let deadline = Instant::now() + DELIVERY;
    let mut seen: HashSet<String> = hooks.iter().filter_map(request_key).collect();
    while !want.iter().all(|k| seen.contains(k)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(hook) = receiver.next_within(left.min(Duration::from_secs(1))).await else {
            if Instant::now() >= deadline {
                let mut missing: Vec<&String> =
                    want.iter().filter(|k| !seen.contains(*k)).collect();
                missing.sort();
                panic!(
                    "{} of {} expected webhooks missing after {DELIVERY:?}: {:?}",
                    missing.len(),
                    want.len(),
                    &missing[..missing.len().min(20)]
                );
            }
            continue;
        };
        if let Some(key) = request_key(&hook) {
            seen.insert(key);
        }
        hooks.push(hook);
    }
}

/// Groups deliveries by `webhook-id` and checks the at-least-once contract: every delivery
/// verifies, `webhook-id` is the event id, and every delivery of one id carries the same
/// request. Returns one representative delivery per request key, panicking if a request
/// became two events (two ids for one key).
fn one_event_per_request(hooks: &[Hook]) -> BTreeMap<String, Hook> {
    let mut by_id: HashMap<String, String> = HashMap::new();
    let mut by_key: BTreeMap<String, Hook> = BTreeMap::new();
    for hook in hooks {
        assert!(
            hook.verifies(),
            "a delivery does not verify: {:?} {}",
            hook.headers,
            String::from_utf8_lossy(&hook.body)
        );
        let id = hook.header("webhook-id").to_owned();
        assert_eq!(
            hook.json["data"]["event_id"].as_str(),
            Some(id.as_str()),
            "webhook-id is not the event id"
        );
        let key = request_key(hook).unwrap_or_else(|| panic!("unexpected webhook {}", hook.json));
        if let Some(previous) = by_id.insert(id.clone(), key.clone()) {
            assert_eq!(
                previous, key,
                "webhook-id {id} carried two different requests"
            );
        }
        match by_key.get(&key) {
            Some(first) => {
                assert_eq!(
                    first.header("webhook-id"),
                    id,
                    "request {key} was stored as two events"
                );
                assert_eq!(
                    first.json, hook.json,
                    "two deliveries of {id} carry different payloads"
                );
            }
            None => {
                by_key.insert(key, hook.clone());
            }
        }
    }
    by_key
}

/// Runs a command with a deadline (killing it on overrun); returns status, stdout, stderr.
pub(crate) fn run_with_timeout(
    command: &mut Command,
    limit: Duration,
) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

pub(crate) fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// `tests/py/verify_webhook.py` on one delivery (`body` as given); its exit status and output.
fn python_verify(hook: &Hook, body: Value) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("hook.json");
    let mut doc = json!({
        "secret": SECRET,
        "headers": {
            "webhook-id": hook.header("webhook-id"),
            "webhook-timestamp": hook.header("webhook-timestamp"),
            "webhook-signature": hook.header("webhook-signature"),
        },
    });
    if let (Some(doc), Value::Object(body)) = (doc.as_object_mut(), body) {
        doc.extend(body);
    }
    std::fs::write(&file, doc.to_string()).expect("write hook file");
    let (status, out, err) = run_with_timeout(
        Command::new("python3")
            .arg(py_script("verify_webhook.py"))
            .arg(&file),
        Duration::from_secs(30),
    );
    (status, format!("{out}{err}"))
}

// ---------------------------------------------------------------------------------------------

const STREAM_TOTAL: usize = 300;
const KILL_AFTER_ACKS: usize = 100;
const SHARED_CALL: &str = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";

/// CDR `i` of the stream: 20 early ones and the last 4 belong to one call, every other CDR
/// is a call of its own.
fn stream_cdr(i: usize) -> (String, String) {
    let shared = (i % 12 == 5 && i < 240) || i >= STREAM_TOTAL - 4;
    let call = if shared {
        SHARED_CALL.to_owned()
    } else {
        format!("{i:08x}c0ffee00c0ffee00c0ffee00")
    };
    let duration = i as u64 + 1;
    (format!("{call}#{duration}"), cdr_body(&call, duration))
}

on_both_backends!(4: sigkill_mid_stream_loses_no_acknowledged_cdr);

async fn sigkill_mid_stream_loses_no_acknowledged_cdr(backend: Backend) {
    let Some(storage) = Storage::new(backend, "sigkill").await else {
        return;
    };
    let started = Instant::now();
    let receiver = Receiver::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let hooks_url = receiver.url("/hooks");
    let port = free_port();
    let mut first = Daemon::spawn("first", tmp.path(), port, &state, &hooks_url, &storage);
    first.ready().await;
    let cdr_url = first.url("/voicenter/acme/cdr");

    let cdrs: Arc<Vec<(String, String)>> = Arc::new((0..STREAM_TOTAL).map(stream_cdr).collect());
    let shared_keys: BTreeSet<String> = cdrs
        .iter()
        .filter(|(k, _)| k.starts_with(SHARED_CALL))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(shared_keys.len(), 24);

    // Phase 1: four concurrent senders until ~100 acknowledgements, then SIGKILL.
    let queue = Arc::new(Mutex::new((0..STREAM_TOTAL).collect::<VecDeque<usize>>()));
    let acked = Arc::new(Mutex::new(BTreeSet::<usize>::new()));
    let attempted = Arc::new(Mutex::new(BTreeSet::<usize>::new()));
    let unanswered = Arc::new(Mutex::new(Vec::<usize>::new()));
    let ack_count = Arc::new(AtomicUsize::new(0));
    let retry_answers = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (queue, acked, attempted, unanswered) = (
            queue.clone(),
            acked.clone(),
            attempted.clone(),
            unanswered.clone(),
        );
        let (ack_count, retry_answers, stop, cdrs, url) = (
            ack_count.clone(),
            retry_answers.clone(),
            stop.clone(),
            cdrs.clone(),
            cdr_url.clone(),
        );
        senders.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let Some(i) = queue.lock().expect("queue").pop_front() else {
                    break;
                };
                attempted.lock().expect("attempted").insert(i);
                match post_json(&client, &url, &cdrs[i].1).await {
                    Ok(answer) if cdr_acked(&answer) => {
                        acked.lock().expect("acked").insert(i);
                        ack_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(answer) => {
                        assert_eq!(answer["err"], json!(2), "unexpected CDR answer {answer}");
                        retry_answers.fetch_add(1, Ordering::SeqCst);
                        unanswered.lock().expect("unanswered").push(i);
                    }
                    Err(_) => unanswered.lock().expect("unanswered").push(i),
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ack_count.load(Ordering::SeqCst) < KILL_AFTER_ACKS {
        first.assert_alive();
        assert!(
            Instant::now() < deadline,
            "only {} CDRs acknowledged in 30 s:\n{}",
            ack_count.load(Ordering::SeqCst),
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let acks_at_kill = ack_count.load(Ordering::SeqCst);
    let status = first.sigkill().expect("killed");
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(30), sender)
            .await
            .expect("sender finished after the kill")
            .expect("sender task");
    }
    let acked_before: BTreeSet<usize> = acked.lock().expect("acked").clone();
    let attempted_before: BTreeSet<usize> = attempted.lock().expect("attempted").clone();
    let in_flight_at_kill = unanswered.lock().expect("unanswered").len();
    // Deliveries the first process made (the receiver keeps the rest queued for later).
    let mut hooks = receiver.drain(Duration::from_millis(100)).await;
    let delivered_by_first = hooks.len();

    // Phase 2: the same binary on the same state directory and port; send everything not
    // acknowledged (never sent, or sent without an answer) until acknowledged.
    let mut second = Daemon::spawn("second", tmp.path(), port, &state, &hooks_url, &storage);
    second.ready().await;
    let restarted_at = started.elapsed();
    let mut rest: Vec<usize> = queue.lock().expect("queue").drain(..).collect();
    rest.extend(unanswered.lock().expect("unanswered").drain(..));
    rest.sort_unstable();
    let rest_count = rest.len();
    let rest = Arc::new(Mutex::new(VecDeque::from(rest)));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (rest, acked, retry_answers, cdrs, url) = (
            rest.clone(),
            acked.clone(),
            retry_answers.clone(),
            cdrs.clone(),
            cdr_url.clone(),
        );
        senders.push(tokio::spawn(async move {
            let client = client();
            loop {
                let Some(i) = rest.lock().expect("rest").pop_front() else {
                    break;
                };
                let mut tries = 0;
                loop {
                    tries += 1;
                    match post_json(&client, &url, &cdrs[i].1).await {
                        Ok(answer) if cdr_acked(&answer) => break,
                        Ok(answer) if answer["err"] == json!(2) => {
                            retry_answers.fetch_add(1, Ordering::SeqCst);
                        }
                        other => panic!("CDR {i} after the restart: {other:?}"),
                    }
                    assert!(tries < 20, "CDR {i} still not acknowledged after 20 tries");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                acked.lock().expect("acked").insert(i);
            }
        }));
    }
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(40), sender)
            .await
            .expect("phase 2 finished in time")
            .expect("phase 2 sender");
    }
    second.assert_alive();
    assert_eq!(acked.lock().expect("acked").len(), STREAM_TOTAL);
    let resends_deduplicated = second
        .metric(r#"ivrgate_events_recorded_total{outcome="duplicate"}"#)
        .await;

    // Every CDR (in particular every one acknowledged before the kill) reaches the receiver.
    let want: HashSet<String> = cdrs.iter().map(|(k, _)| k.clone()).collect();
    collect_until(&receiver, &want, &mut hooks).await;
    // Stragglers: redeliveries of events the killed process had sent but not recorded.
    hooks.extend(receiver.drain(Duration::from_millis(300)).await);
    let events = one_event_per_request(&hooks);
    for i in &acked_before {
        assert!(
            events.contains_key(&cdrs[*i].0),
            "CDR {i} was acknowledged before the kill and never delivered"
        );
    }
    assert_eq!(
        events.len(),
        STREAM_TOTAL,
        "each CDR became exactly one event"
    );

    // The shared call: one call id, sequence 1..=24 across the restart, no gap, no repeat.
    let shared: Vec<&Hook> = shared_keys.iter().map(|k| &events[k]).collect();
    let call_ids: BTreeSet<&str> = shared
        .iter()
        .map(|h| h.json["data"]["call_id"].as_str().expect("call_id"))
        .collect();
    assert_eq!(
        call_ids.len(),
        1,
        "the shared call got several call ids: {call_ids:?}"
    );
    let seq_of = |key: &String| events[key].json["data"]["seq"].as_u64().expect("seq");
    let mut seqs: Vec<u64> = shared_keys.iter().map(seq_of).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=24).collect::<Vec<u64>>(), "shared call sequence");
    let max_before = shared_keys
        .iter()
        .filter(|k| acked_before.iter().any(|i| &cdrs[*i].0 == *k))
        .map(seq_of)
        .max()
        .unwrap_or(0);
    let after: Vec<u64> = (0..STREAM_TOTAL)
        .filter(|i| !attempted_before.contains(i) && shared_keys.contains(&cdrs[*i].0))
        .map(|i| seq_of(&cdrs[i].0))
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|s| *s > max_before),
        "sequence did not continue across the restart: before ≤ {max_before}, after {after:?}"
    );
    // Every other CDR is alone in its call.
    for (key, hook) in &events {
        if !key.starts_with(SHARED_CALL) {
            assert_eq!(hook.json["data"]["seq"], json!(1), "{key}");
        }
    }

    let redeliveries = hooks.len() - events.len();
    eprintln!(
        "sigkill: {acks_at_kill} CDRs acked when SIGKILL was sent ({} by the time the senders stopped; \
         first process exit {status}; {delivered_by_first} deliveries received from it), {in_flight_at_kill} in flight without an answer; \
         shared call seq ≤ {max_before} before the kill; restart ready at {restarted_at:?}; \
         {rest_count} sent after the restart, {resends_deduplicated} of them answered from the \
         dedup table; {} 'retry' answers; {} deliveries for {} events ({redeliveries} redelivered); \
         total {:?}",
        acked_before.len(),
        retry_answers.load(Ordering::SeqCst),
        hooks.len(),
        events.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------

on_both_backends!(4: two_processes_share_one_store);

async fn two_processes_share_one_store(backend: Backend) {
    let Some(storage) = Storage::new(backend, "two_proc").await else {
        return;
    };
    const CALLS: usize = 12;
    let started = Instant::now();
    let receiver = Receiver::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let hooks_url = receiver.url("/hooks");
    let mut a = Daemon::spawn("a", tmp.path(), free_port(), &state, &hooks_url, &storage);
    a.ready().await;
    let mut b = Daemon::spawn("b", tmp.path(), free_port(), &state, &hooks_url, &storage);
    b.ready().await;
    let urls = Arc::new([a.url("/voicenter/acme"), b.url("/voicenter/acme")]);

    // Per call, four requests at once, alternating between the processes:
    // CDR → A, HANGUP_CALL → B, another CDR → A, a third CDR → B.
    struct Req {
        key: String,
        target: usize,
        path: &'static str,
        body: String,
    }
    let call_name = |c: usize| format!("{c:04x}5badc0de5badc0de5badc0de0000");
    let plan: Vec<Vec<Req>> = (0..CALLS)
        .map(|c| {
            let call = call_name(c);
            vec![
                Req {
                    key: format!("{call}#1"),
                    target: 0,
                    path: "/cdr",
                    body: cdr_body(&call, 1),
                },
                Req {
                    key: format!("{call}#hangup#650"),
                    target: 1,
                    path: "",
                    body: hangup_body(&call, 650),
                },
                Req {
                    key: format!("{call}#2"),
                    target: 0,
                    path: "/cdr",
                    body: cdr_body(&call, 2),
                },
                Req {
                    key: format!("{call}#3"),
                    target: 1,
                    path: "/cdr",
                    body: cdr_body(&call, 3),
                },
            ]
        })
        .collect();
    let plan = Arc::new(plan);
    let retry_answers = Arc::new(AtomicUsize::new(0));
    // One task per request; `answers[c][n]` is what request n of call c was answered.
    let mut tasks = Vec::new();
    for c in 0..CALLS {
        for n in 0..4 {
            let (plan, urls, retry_answers) = (plan.clone(), urls.clone(), retry_answers.clone());
            tasks.push(tokio::spawn(async move {
                let req = &plan[c][n];
                let url = format!("{}{}", urls[req.target], req.path);
                let client = client();
                for _ in 0..20 {
                    let answer = post_json(&client, &url, &req.body)
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", req.key));
                    let ok = if req.path == "/cdr" {
                        cdr_acked(&answer)
                    } else {
                        answer == json!({"STATUS": 0})
                    };
                    if ok {
                        return answer.to_string();
                    }
                    retry_answers.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("{} never acknowledged", req.key)
            }));
        }
    }
    let mut answers: Vec<String> = Vec::new();
    for task in tasks {
        answers.push(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("requests answered in time")
                .expect("request task"),
        );
    }
    a.assert_alive();
    b.assert_alive();

    let want: HashSet<String> = plan.iter().flatten().map(|r| r.key.clone()).collect();
    let mut hooks = Vec::new();
    collect_until(&receiver, &want, &mut hooks).await;
    hooks.extend(receiver.drain(Duration::from_millis(300)).await);
    let events = one_event_per_request(&hooks);
    assert_eq!(events.len(), CALLS * 4, "one event per request, no more");
    for c in 0..CALLS {
        let call = call_name(c);
        let mine: Vec<&Hook> = events
            .iter()
            .filter(|(k, _)| k.starts_with(&call))
            .map(|(_, h)| h)
            .collect();
        let ids: BTreeSet<&str> = mine
            .iter()
            .map(|h| h.json["data"]["call_id"].as_str().expect("call_id"))
            .collect();
        assert_eq!(ids.len(), 1, "call {call} got several call ids: {ids:?}");
        let mut seqs: Vec<u64> = mine
            .iter()
            .map(|h| h.json["data"]["seq"].as_u64().expect("seq"))
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, vec![1, 2, 3, 4], "call {call} sequence");
    }

    // A resend of an identical body to the OTHER process gets the original answer and makes
    // no event: CDR #1 of call 0 went to A (resent to B), its HANGUP_CALL went to B (resent to A).
    let client = client();
    for (n, target) in [(0usize, 1usize), (1, 0)] {
        let req = &plan[0][n];
        assert_ne!(req.target, target);
        let url = format!("{}{}", urls[target], req.path);
        let answer = post_json(&client, &url, &req.body)
            .await
            .expect("resend answered");
        assert_eq!(
            answer.to_string(),
            answers[n],
            "resend of {} to the other process",
            req.key
        );
    }
    let late = receiver.drain(Duration::from_millis(1500)).await;
    for hook in &late {
        let id = hook.header("webhook-id");
        assert!(
            hooks.iter().any(|h| h.header("webhook-id") == id),
            "a resend produced a new event: {}",
            hook.json
        );
    }
    let duplicates = a
        .metric(r#"ivrgate_events_recorded_total{outcome="duplicate"}"#)
        .await
        + b.metric(r#"ivrgate_events_recorded_total{outcome="duplicate"}"#)
            .await;
    assert_eq!(
        duplicates, 2.0,
        "both resends answered from the dedup table"
    );
    eprintln!(
        "two processes: {} requests over {CALLS} calls, {} 'retry' answers, {} deliveries for {} events, \
         {} late redeliveries; total {:?}",
        CALLS * 4,
        retry_answers.load(Ordering::SeqCst),
        hooks.len(),
        events.len(),
        late.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------

/// The configuration of the crash-recovery and full-disk tests: one tenant `acme`, `extra`
/// lines in `[storage]`, and the delivery settings given.
fn store_toml(
    port: u16,
    state_dir: &Path,
    webhook_url: &str,
    storage: &str,
    delivery: &str,
) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{dir}"

[logging]
level = "warn"

[storage]
{storage}

[delivery]
jitter_percent = 0
{delivery}

[[tenants]]
id = "acme"
webhook_url = "{webhook_url}"
webhook_secret = "{SECRET}"
"#,
        dir = state_dir.display()
    )
}

/// A disk that fills under a CDR stream (a 16 MiB tmpfs of the daemon's own, with a 2 MiB
/// reserve): new events are refused with "try again" before any commit can fail for want of
/// space, and while the disk stays full every acknowledged CDR is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_events_before_any_commit_fails_and_still_drains() {
    const SENDERS: usize = 8;
    const MOST: usize = 3000;
    let receiver = Receiver::start().await;
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    // Until the disk is full the endpoint fails, so every event stays stored.
    receiver.answer(move |_| {
        if gate.load(Ordering::SeqCst) {
            Reply::ok("")
        } else {
            Reply::status(503)
        }
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let port = free_port();
    let toml = store_toml(
        port,
        &state,
        &receiver.url("/hooks"),
        "min_free_bytes = 2097152",
        &format!(
            "retry_schedule_s = [{}]\nbreaker_open_ms = 200",
            ["1"; 60].join(", ")
        ),
    );
    let mut daemon = Daemon::spawn_with("full", tmp.path(), port, &toml, Some((&state, "16m")));
    daemon.ready().await;

    // 48 KB CDRs from several senders until the gateway has said "try again" 40 times.
    let pad = "p".repeat(48_000);
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = daemon.url("/voicenter/acme/cdr");
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (next, refused, acked, url, pad) = (
            next.clone(),
            refused.clone(),
            acked.clone(),
            url.clone(),
            pad.clone(),
        );
        senders.push(tokio::spawn(async move {
            let client = client();
            while refused.load(Ordering::SeqCst) < 40 {
                let i = next.fetch_add(1, Ordering::SeqCst);
                assert!(i < MOST, "{MOST} CDRs of 48 KB fit on a 16 MiB disk");
                let call = format!("full{i:06}");
                let mut body: Value = serde_json::from_str(&cdr_body(&call, 1)).expect("cdr");
                body["notes"] = json!(pad);
                let answer = post_json(&client, &url, &body.to_string())
                    .await
                    .unwrap_or_else(|e| panic!("CDR {i}: {e}"));
                if cdr_acked(&answer) {
                    acked.lock().expect("acked").push(call);
                } else {
                    assert_eq!(answer["err"], json!(2), "CDR {i}: {answer}");
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(120), sender)
            .await
            .expect("senders done in time")
            .expect("sender");
    }
    daemon.assert_alive();
    let acked: Vec<String> = acked.lock().expect("acked").clone();
    assert!(
        !acked.is_empty(),
        "nothing was stored before the disk filled"
    );
    let failed = daemon
        .metric(r#"ivrgate_events_recorded_total{outcome="error"}"#)
        .await;
    let full = daemon
        .metric(r#"ivrgate_events_recorded_total{outcome="storage_full"}"#)
        .await;
    let log = daemon.log_text();
    assert_eq!(
        failed, 0.0,
        "events failed instead of being refused before the reserve:\n{log}"
    );
    assert!(full >= 40.0, "refusals counted as storage_full: {full}");
    assert!(
        !log.contains("disk is full"),
        "a write failed for want of space:\n{log}"
    );

    // The disk stays full; the endpoint recovers: everything acknowledged is delivered.
    open.store(true, Ordering::SeqCst);
    let want: HashSet<String> = acked.iter().cloned().collect();
    let mut delivered: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want.is_subset(&delivered) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(hook) = receiver.next_within(left).await else {
            panic!(
                "{} of {} acknowledged CDRs delivered while the disk was full:\n{}",
                want.intersection(&delivered).count(),
                want.len(),
                daemon.log_text()
            );
        };
        if hook.path == "/hooks" && hook.json["type"] == "call.cdr" {
            if let Some(call) = hook.json["data"]["vendor_fields"]["ivruniqueid"].as_str() {
                delivered.insert(call.to_owned());
            }
        }
    }
    // Still full: a new CDR is still refused with the platform's "try again".
    let answer = post_json(&client(), &url, &cdr_body("full-after", 1))
        .await
        .expect("answer");
    assert_eq!(answer["err"], json!(2), "{answer}");
    let log = daemon.log_text();
    assert!(
        !log.contains("disk is full"),
        "a write failed for want of space:\n{log}"
    );
    eprintln!(
        "full disk: {} CDRs acknowledged, {full} refused as storage_full, all delivered while full",
        acked.len()
    );
}

/// The webhook receiver for the crash tests: the first delivery of each event is held open
/// (as a slow endpoint would), later ones answered at once.
fn hold_first_delivery(receiver: &Receiver) {
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    receiver.answer(move |hook| {
        let first = seen
            .lock()
            .expect("seen")
            .insert(hook.header("webhook-id").to_owned());
        if first {
            Reply::ok("").after(Duration::from_secs(120))
        } else {
            Reply::ok("")
        }
    });
}

/// Posts one CDR and waits until its delivery reaches the receiver (and is held there);
/// returns its `webhook-id`.
async fn cdr_held_at_receiver(receiver: &Receiver, daemon: &Daemon, call: &str) -> String {
    let answer = post_json(
        &client(),
        &daemon.url("/voicenter/acme/cdr"),
        &cdr_body(call, 1),
    )
    .await
    .expect("CDR answered");
    assert!(cdr_acked(&answer), "{answer}");
    let hook = receiver
        .next_within(DELIVERY)
        .await
        .unwrap_or_else(|| panic!("no delivery:\n{}", daemon.log_text()));
    hook.header("webhook-id").to_owned()
}

/// Waits (at most `RESEND`, far below the 60 s lease) for the event to be sent again.
async fn resent_within_bound(receiver: &Receiver, id: &str, log: impl Fn() -> String) {
    const RESEND: Duration = Duration::from_secs(10);
    let deadline = Instant::now() + RESEND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let hook = receiver.next_within(left).await.unwrap_or_else(|| {
            panic!(
                "the killed instance's delivery was not sent again within {RESEND:?} \
                 (lease 60 s):\n{}",
                log()
            )
        });
        if hook.header("webhook-id") == id {
            return;
        }
    }
}

on_both_backends!(2: a_restart_after_kill_resends_held_deliveries_without_waiting_for_the_lease);

/// `kill -9` while the receiver holds a delivery, then a restart on the same state directory:
/// the delivery is sent again at once, not after the 60 s lease.
async fn a_restart_after_kill_resends_held_deliveries_without_waiting_for_the_lease(
    backend: Backend,
) {
    let Some(storage) = Storage::new(backend, "restart").await else {
        return;
    };
    let receiver = Receiver::start().await;
    hold_first_delivery(&receiver);
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let port = free_port();
    let toml = storage.apply(&store_toml(
        port,
        &state,
        &receiver.url("/hooks"),
        "min_free_bytes = 0",
        "lease_ms = 60000",
    ));
    let mut first = Daemon::spawn_with("first", tmp.path(), port, &toml, None);
    first.ready().await;
    let id = cdr_held_at_receiver(&receiver, &first, "crash0001").await;
    first.sigkill().expect("killed");
    let killed_at = Instant::now();
    let mut second = Daemon::spawn_with("second", tmp.path(), port, &toml, None);
    second.ready().await;
    resent_within_bound(&receiver, &id, || second.log_text()).await;
    eprintln!(
        "restart after kill -9: held delivery sent again {:?} after the kill",
        killed_at.elapsed()
    );
    second.assert_alive();
}

on_both_backends!(2: a_live_instance_takes_a_killed_ones_deliveries_without_waiting_for_the_lease);

/// Two instances on one state directory: the one holding a delivery is killed, and the
/// other sends it again at once, not after the 60 s lease.
async fn a_live_instance_takes_a_killed_ones_deliveries_without_waiting_for_the_lease(
    backend: Backend,
) {
    let Some(storage) = Storage::new(backend, "takeover").await else {
        return;
    };
    let receiver = Receiver::start().await;
    hold_first_delivery(&receiver);
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let hooks = receiver.url("/hooks");
    let (port_a, port_b) = (free_port(), free_port());
    let toml = |port| {
        storage.apply(&store_toml(
            port,
            &state,
            &hooks,
            "min_free_bytes = 0",
            "lease_ms = 60000",
        ))
    };
    let mut a = Daemon::spawn_with("a", tmp.path(), port_a, &toml(port_a), None);
    a.ready().await;
    // A alone claims the event; B starts while A holds it.
    let id = cdr_held_at_receiver(&receiver, &a, "crash0002").await;
    let mut b = Daemon::spawn_with("b", tmp.path(), port_b, &toml(port_b), None);
    b.ready().await;
    a.sigkill().expect("killed");
    let killed_at = Instant::now();
    resent_within_bound(&receiver, &id, || b.log_text()).await;
    eprintln!(
        "two instances: B sent A's held delivery {:?} after A was killed",
        killed_at.elapsed()
    );
    b.assert_alive();
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_xmlrpc_client_against_gateway() {
    let started = Instant::now();
    let receiver = Receiver::start().await;
    receiver.answer(|_| {
        Reply::ok(r#"{"action":"menu","prompt":"welcome","menu":"main","max_digits":4}"#)
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::spawn(
        "xmlrpc",
        tmp.path(),
        free_port(),
        &tmp.path().join("state"),
        &receiver.url("/hooks"),
        &Storage::sqlite(),
    );
    daemon.ready().await;
    let url = daemon.url("/voicenter/acme");
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        run_with_timeout(
            Command::new("python3")
                .arg(py_script("xmlrpc_client.py"))
                .arg(url),
            Duration::from_secs(30),
        )
    })
    .await
    .expect("python task");
    assert!(
        status.success(),
        "xmlrpc_client.py failed ({status}); stdout:\n{out}\nstderr:\n{err}\ngateway log:\n{}",
        daemon.log_text()
    );
    // What Python sent became webhooks: the decision, the hangup and two CDRs (the resend
    // made none).
    let mut types = Vec::new();
    let deadline = Instant::now() + DELIVERY;
    while types.len() < 4 && Instant::now() < deadline {
        if let Some(hook) = receiver.next_within(Duration::from_secs(1)).await {
            assert!(hook.verifies(), "{}", hook.json);
            let t = hook.json["type"].as_str().unwrap_or("").to_owned();
            let id = hook.header("webhook-id").to_owned();
            if !types.iter().any(|(_, i)| *i == id) || id.is_empty() {
                types.push((t, id));
            }
        }
    }
    let mut names: Vec<&str> = types.iter().map(|(t, _)| t.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["call.cdr", "call.cdr", "call.hangup", "decision.ivr_action"]
    );
    let extra = receiver.drain(Duration::from_millis(500)).await;
    assert!(
        extra
            .iter()
            .all(|h| types.iter().any(|(_, id)| id == h.header("webhook-id"))),
        "the CDR resend made a new event"
    );
    daemon.assert_alive();
    eprintln!(
        "xmlrpc client: {} total {:?}",
        out.trim().replace('\n', "; "),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn standard_webhooks_python_verifier() {
    let started = Instant::now();
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&receiver.url("/hooks"), "").await;
    let (status, _, answer) = gw
        .post(
            "/voicenter/acme/cdr",
            "application/json",
            fixture("voicenter/cdr.json"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&answer).expect("json answer"),
        json!({"err": 0, "errdesc": "OK"})
    );
    let hook = receiver.next_of("call.cdr").await;
    assert!(hook.verifies());

    // The body as text (as support::verify_with_python sends it) and as exact bytes.
    let (ok, output) = python_verify(
        &hook,
        json!({"body": String::from_utf8(hook.body.to_vec()).expect("utf-8 body")}),
    );
    assert!(
        ok.success(),
        "standardwebhooks refused the delivery: {output}"
    );
    let (ok, output) = python_verify(&hook, json!({"body_base64": base64_encode(&hook.body)}));
    assert!(
        ok.success(),
        "standardwebhooks refused the delivery (bytes): {output}"
    );

    // The verifier is not a rubber stamp: one changed byte, or a stale timestamp, is refused.
    let tampered = String::from_utf8_lossy(&hook.body).replacen("0544444444", "0544444445", 1);
    let (refused, output) = python_verify(&hook, json!({"body": tampered}));
    assert_eq!(
        refused.code(),
        Some(1),
        "a tampered body verified: {output}"
    );
    let ts: i64 = hook.header("webhook-timestamp").parse().expect("timestamp");
    let (refused, output) = python_verify(
        &hook,
        json!({"body": String::from_utf8_lossy(&hook.body), "now": ts + 6 * 3600}),
    );
    assert_eq!(
        refused.code(),
        Some(1),
        "a six-hour-old timestamp verified: {output}"
    );
    // ...and with "now" pinned to the signing moment it verifies again.
    let (ok, output) = python_verify(
        &hook,
        json!({"body": String::from_utf8_lossy(&hook.body), "now": ts}),
    );
    assert!(ok.success(), "pinned clock: {output}");

    // The shared helper the other tests use agrees.
    verify_with_python(&hook);
    gw.stop().await;
    eprintln!("python verifier: total {:?}", started.elapsed());
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------

on_both_backends!(4: three_instances_under_load_lose_nothing_when_one_is_killed);

/// Three instances on one store under load through all three (CDRs on calls shared across
/// instances, and decisions on the same calls, whose call-state writes race the CDRs'), one
/// killed with `kill -9` midway; what was sent to it goes to the others. Every acknowledged
/// CDR is delivered, each request is one event, each call keeps one ivrgate call id and a
/// gapless sequence, and a resend to another instance gets the original answer. Deliveries
/// are leased for 60 s, longer than the wait for them: whatever the killed instance had
/// claimed is taken over when its liveness lapses, not when the lease does.
async fn three_instances_under_load_lose_nothing_when_one_is_killed(backend: Backend) {
    const CALLS: usize = 10;
    const PER_CALL: usize = 12;
    const SINGLES: usize = 60;
    const KILL_AFTER: usize = 60;
    let Some(storage) = Storage::new(backend, "three").await else {
        return;
    };
    let started = Instant::now();
    let receiver = Receiver::start().await;
    let answer = fixture("voicenter/responses/call.json");
    receiver.answer(move |hook| {
        if hook.json["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("decision."))
        {
            Reply::ok(answer.clone())
        } else {
            Reply::ok("")
        }
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let hooks = receiver.url("/hooks");
    let mut daemons = Vec::new();
    for name in ["a", "b", "c"] {
        let port = free_port();
        let toml = storage.apply(&store_toml(
            port,
            &state,
            &hooks,
            "min_free_bytes = 0",
            "lease_ms = 60000",
        ));
        let mut d = Daemon::spawn_with(name, tmp.path(), port, &toml, None);
        d.ready().await;
        daemons.push(d);
    }
    let bases: Arc<Vec<String>> =
        Arc::new(daemons.iter().map(|d| d.url("/voicenter/acme")).collect());
    let killed = Arc::new(AtomicBool::new(false));

    // Requests: CDRs of shared calls interleaved with single-CDR calls, and a decision on
    // each shared call every third CDR.
    let shared = |c: usize| format!("{c:04x}7417ee7417ee7417ee7417ee0000");
    let mut requests: Vec<(Option<String>, String, String)> = Vec::new();
    for n in 0..PER_CALL.max(SINGLES / CALLS) {
        for c in 0..CALLS {
            if n < PER_CALL {
                let call = shared(c);
                requests.push((
                    Some(format!("{call}#{}", n + 1)),
                    "/cdr".into(),
                    cdr_body(&call, n as u64 + 1),
                ));
                if n % 3 == 0 {
                    let decision = json!({
                        "METHOD": "GET_IVR_ACTION",
                        "DATA": {"DID": "0732793256", "CALLER_ID": "0501234567",
                                 "IVR_UNIQUE_ID": call, "DTMF": "", "MENU": "-1",
                                 "PREVIOUS_MENU": "-1"}
                    });
                    requests.push((None, String::new(), decision.to_string()));
                }
            }
            let single = c + n * CALLS;
            if single < SINGLES {
                let call = format!("{single:04x}5199e05199e05199e05199e00000");
                requests.push((Some(format!("{call}#1")), "/cdr".into(), cdr_body(&call, 1)));
            }
        }
    }
    let requests = Arc::new(requests);
    let queue = Arc::new(Mutex::new((0..requests.len()).collect::<VecDeque<usize>>()));
    // Request index -> (instance that acknowledged it, its answer).
    let answered = Arc::new(Mutex::new(BTreeMap::<usize, (usize, String)>::new()));
    let acks = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..6 {
        let (requests, queue, answered, acks, retries, bases, killed) = (
            requests.clone(),
            queue.clone(),
            answered.clone(),
            acks.clone(),
            retries.clone(),
            bases.clone(),
            killed.clone(),
        );
        senders.push(tokio::spawn(async move {
            let client = client();
            let mut turn = s;
            loop {
                let Some(i) = queue.lock().expect("queue").pop_front() else {
                    return;
                };
                let (key, path, body) = &requests[i];
                let mut done = false;
                for _ in 0..100 {
                    turn += 1;
                    // Round robin over the instances, skipping the killed one once it is.
                    let mut target = turn % 3;
                    if target == 2 && killed.load(Ordering::SeqCst) {
                        target = turn % 2;
                    }
                    let url = format!("{}{path}", bases[target]);
                    match post_json(&client, &url, body).await {
                        Ok(answer) if key.is_none() || cdr_acked(&answer) => {
                            answered
                                .lock()
                                .expect("answered")
                                .insert(i, (target, answer.to_string()));
                            acks.fetch_add(1, Ordering::SeqCst);
                            done = true;
                            break;
                        }
                        _ => {
                            retries.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                assert!(done, "request {i} ({key:?}) never acknowledged");
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "load did not start:\n{}",
            daemons[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemons[2].sigkill().expect("killed");
    killed.store(true, Ordering::SeqCst);
    let killed_at = Instant::now();
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(120), sender)
            .await
            .expect("senders finished")
            .expect("sender");
    }
    daemons[0].assert_alive();
    daemons[1].assert_alive();
    let answered = answered.lock().expect("answered").clone();
    assert_eq!(answered.len(), requests.len());
    let by_killed = answered.values().filter(|(t, _)| *t == 2).count();
    assert!(by_killed > 0, "the killed instance acknowledged nothing");

    // Every CDR acknowledged, by whichever instance, is delivered, once as one event.
    let want: HashSet<String> = requests.iter().filter_map(|(k, _, _)| k.clone()).collect();
    let mut hooks = Vec::new();
    collect_until(&receiver, &want, &mut hooks).await;
    hooks.extend(receiver.drain(Duration::from_millis(300)).await);
    let taken_over = killed_at.elapsed();
    hooks.retain(|h| {
        h.json["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("call."))
    });
    let events = one_event_per_request(&hooks);
    assert_eq!(
        events.len(),
        want.len(),
        "each CDR became exactly one event"
    );
    for c in 0..CALLS {
        let call = shared(c);
        let mine: Vec<&Hook> = events
            .iter()
            .filter(|(k, _)| k.starts_with(&call))
            .map(|(_, h)| h)
            .collect();
        let ids: BTreeSet<&str> = mine
            .iter()
            .map(|h| h.json["data"]["call_id"].as_str().expect("call_id"))
            .collect();
        assert_eq!(ids.len(), 1, "call {call} got several call ids: {ids:?}");
        let mut seqs: Vec<u64> = mine
            .iter()
            .map(|h| h.json["data"]["seq"].as_u64().expect("seq"))
            .collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=PER_CALL as u64).collect::<Vec<_>>(),
            "call {call}"
        );
    }

    // A resend to another live instance than the one that acknowledged gets the same answer
    // and makes no event.
    let client = client();
    let mut resent = 0;
    for (i, (target, first)) in answered
        .iter()
        .filter(|(i, _)| requests[**i].0.is_some())
        .take(6)
    {
        let other = if *target == 0 { 1 } else { 0 };
        let (_, path, body) = &requests[*i];
        let again = post_json(&client, &format!("{}{path}", bases[other]), body)
            .await
            .expect("resend answered");
        assert_eq!(&again.to_string(), first, "resend of request {i}");
        resent += 1;
    }
    let late = receiver.drain(Duration::from_millis(1500)).await;
    for hook in late.iter().filter(|h| {
        h.json["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("call."))
    }) {
        let id = hook.header("webhook-id");
        assert!(
            hooks.iter().any(|h| h.header("webhook-id") == id),
            "a resend produced a new event: {}",
            hook.json
        );
    }
    eprintln!(
        "three instances ({backend:?}): {} requests ({} acknowledged by the killed one), {} retries, \
         {} deliveries for {} events, all delivered {:?} after the kill, {resent} resends \
         answered across instances; total {:?}",
        requests.len(),
        by_killed,
        retries.load(Ordering::SeqCst),
        hooks.len(),
        events.len(),
        taken_over,
        started.elapsed()
    );
}
