//! The receiver examples (examples/receiver.py, examples/receiver-node/,
//! examples/receiver-java/, examples/receiver-go/) against the built `ivrgate` binary: a decision each example
//! answers reaches the legacy side, its events arrive, and each refuses what Standard Webhooks
//! says to refuse (sent to it directly: a forged signature, a stale or future timestamp, a bare
//! `v1,`), processes a resent `webhook-id` once, and verifies the Standard Webhooks test
//! vector. A test whose runtime (`node`, `java`, `go`) is absent says so and passes, except under
//! `CI=true` (CI has both, .ci/run installs them otherwise), where it fails.
//! Loopback only; every wait is bounded and every process is killed on every path.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::process::{daemon_toml, free_port, Daemon};
use crate::support::*;

/// Longest a receiver may take to say where it listens (`java` compiles the source first).
const START: Duration = Duration::from_secs(90);

/// The Standard Webhooks test vector (docs/webhooks.md, FIELD-NOTES.md).
const VECTOR_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const VECTOR_TS: &str = "1649367553";
const VECTOR_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
const VECTOR_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

/// Another valid secret: what a forger who does not know the tenant's secret signs with.
const OTHER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One example: the program and the arguments before the receiver's own.
struct Example {
    name: &'static str,
    program: String,
    args: Vec<PathBuf>,
    /// What asks the runtime for its version (whether it is installed).
    version_arg: &'static str,
    /// Go: the directory of the binary built from the example (killing `go run` would leave
    /// the receiver it started running).
    built: Option<tempfile::TempDir>,
}

impl Example {
    fn python() -> Example {
        Example {
            name: "python",
            program: "python3".into(),
            args: vec![root().join("examples/receiver.py")],
            version_arg: "--version",
            built: None,
        }
    }

    fn node() -> Example {
        Example {
            name: "node",
            program: "node".into(),
            args: vec![root().join("examples/receiver-node/receiver.mjs")],
            version_arg: "--version",
            built: None,
        }
    }

    fn java() -> Example {
        Example {
            name: "java",
            program: "java".into(),
            args: vec![root().join("examples/receiver-java/Receiver.java")],
            version_arg: "--version",
            built: None,
        }
    }

    fn go() -> Example {
        Example {
            name: "go",
            program: "go".into(),
            args: vec![],
            version_arg: "version",
            built: None,
        }
    }

    /// Builds the Go example (its runtime is installed); then runs the binary built.
    fn build_go(&mut self) {
        let dir = tempfile::tempdir().expect("tmp");
        let binary = dir.path().join("receiver-go");
        let output = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(root().join("examples/receiver-go/main.go"))
            .output()
            .expect("go build");
        assert!(
            output.status.success(),
            "go build examples/receiver-go: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.program = binary.display().to_string();
        self.built = Some(dir);
    }

    /// Whether its runtime is installed; prints why the test is skipped when not.
    fn available(&self) -> bool {
        let found = Command::new(&self.program)
            .arg(self.version_arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            // CI has both runtimes (.ci/run installs them otherwise): there a missing one is
            // a failure, not a skip.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "`{}` is not installed under CI=true: the {} receiver example cannot be tested",
                self.program,
                self.name
            );
            eprintln!(
                "SKIPPED: `{}` is not installed, the {} receiver example is not tested",
                self.program, self.name
            );
        }
        found
    }

    fn command(&self, secret: &str) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).env("WEBHOOK_SECRET", secret);
        command
    }

    /// `verify ID TIMESTAMP SIGNATURES < body`: the exit code and what it printed.
    fn verify(
        &self,
        secret: &str,
        id: &str,
        ts: &str,
        signatures: &str,
        body: &str,
    ) -> (i32, String) {
        let mut child = self
            .command(secret)
            .args(["verify", id, ts, signatures])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("write body");
        let output = child.wait_with_output().expect("wait verify");
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let code = output.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "{} verify crashed ({code}): {stdout}\n{}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        (code, stdout)
    }
}

/// A running receiver example; what it printed so far. Dropping it kills and reaps it.
struct Running {
    name: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    url: String,
}

impl Running {
    fn start(example: &Example) -> Running {
        let port = free_port();
        let mut child = example
            .command(SECRET)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", example.program));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        let mut running = Running {
            name: example.name,
            child,
            lines,
            url: format!("http://127.0.0.1:{port}/hooks"),
        };
        let announced = format!("listening on http://127.0.0.1:{port}/hooks");
        running.wait_for(START, |l| l.starts_with(&announced));
        running
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.output().iter().filter(|l| pred(l)).count()
    }

    /// Waits (bounded) until `n` printed lines match `pred` (the output reaches this test
    /// through a pipe, a moment after the receiver answered); how many match then.
    fn wait_count(&self, n: usize, pred: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + WAIT;
        while self.count(&pred) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.count(&pred)
    }

    /// Waits (bounded) for a printed line matching `pred`; panics with the output otherwise.
    fn wait_for(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.output().into_iter().find(|l| pred(l)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} receiver exited ({status}):\n{}",
                    self.name,
                    self.output().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} receiver: no expected line within {limit:?}:\n{}",
                self.name,
                self.output().join("\n")
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// POSTs `body` as a webhook signed with `secret` at `ts` (or with `signature` as given).
    async fn send(
        &self,
        id: &str,
        ts: i64,
        signature: Option<&str>,
        secret: &str,
        body: &str,
    ) -> (u16, String) {
        let key = ivrgate::signing::SigningKey::from_whsec(secret).expect("secret");
        let signature = signature
            .map(str::to_owned)
            .unwrap_or_else(|| key.sign(id, ts, body.as_bytes()));
        let response = client()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST to the {} receiver: {e}", self.name));
        let status = response.status().as_u16();
        (status, response.text().await.expect("receiver body"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The example's `verify` mode on the Standard Webhooks test vector and its near misses.
fn check_test_vector(example: &Example) {
    let ok = |secret: &str, sigs: &str, body: &str| {
        example.verify(secret, VECTOR_ID, VECTOR_TS, sigs, body)
    };
    let vector = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    assert_eq!(
        ok(vector, VECTOR_SIG, VECTOR_BODY),
        (0, "ok".into()),
        "{}: the test vector",
        example.name
    );
    // Rotation: the right signature among several.
    let rotated = format!("v1,dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSEhISE= {VECTOR_SIG}");
    assert_eq!(
        ok(vector, &rotated, VECTOR_BODY).0,
        0,
        "{}: several signatures",
        example.name
    );
    let tampered = VECTOR_BODY.replace("test_user", "test_usex");
    for (secret, sigs, body, what) in [
        (vector, VECTOR_SIG, tampered.as_str(), "a changed body"),
        (OTHER_SECRET, VECTOR_SIG, VECTOR_BODY, "another secret"),
        (vector, "v1,", VECTOR_BODY, "a bare v1,"),
        (vector, "", VECTOR_BODY, "no signature"),
        (
            vector,
            &VECTOR_SIG.replace("v1,", "v2,"),
            VECTOR_BODY,
            "another version",
        ),
        (
            vector,
            &VECTOR_SIG[..VECTOR_SIG.len() - 2],
            VECTOR_BODY,
            "a truncated signature",
        ),
    ] {
        assert_eq!(
            ok(secret, sigs, body),
            (1, "bad".into()),
            "{}: {what} verifies",
            example.name
        );
    }
}

/// POSTs a Voicenter JSON request to the gateway; the platform's answer as JSON.
async fn voicenter(gateway: &Daemon, path: &str, body: &Value) -> Value {
    let response = client()
        .post(gateway.url(&format!("/voicenter/acme{path}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST to the gateway");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("gateway body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("gateway answer {text:?}: {e}"))
}

async fn exercise(mut example: Example) {
    if !example.available() {
        return;
    }
    if example.name == "go" {
        example.build_go();
    }
    let name = example.name;
    check_test_vector(&example);

    let mut rx = Running::start(&example);
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let toml = daemon_toml(port, &dir.path().join("state"), &rx.url);
    let mut gateway = Daemon::spawn_with(name, dir.path(), port, &toml, None);
    gateway.ready().await;

    // A GET_IVR_ACTION: the example's menu reaches Voicenter.
    let call = "4b1d0c0ffee4b1d0c0ffee4b1d0c0ffe";
    let answer = voicenter(
        &gateway,
        "",
        &json!({"METHOD": "GET_IVR_ACTION", "DATA": {"DID": "0732793256", "CALLER_ID": "0501234567",
                "IVR_UNIQUE_ID": call, "DTMF": "", "MENU": "-1", "PREVIOUS_MENU": "-1"}}),
    )
    .await;
    assert_eq!(
        answer["STATUS"],
        0,
        "{name}: {answer}\n{}",
        gateway.log_text()
    );
    assert_eq!(answer["ACTION"], "MENU", "{name}: {answer}");
    assert_eq!(answer["DATA"]["MENU"], "main", "{name}: {answer}");
    assert_eq!(answer["DATA"]["REC"], "welcome", "{name}: {answer}");
    rx.wait_for(START, |l| {
        l.starts_with("decision.ivr_action  id=dec_") && l.ends_with("signature=ok")
    });

    // The layer IVR: the example's goto, with the data it attached as CUSTOM_DATA.
    let answer = voicenter(
        &gateway,
        "",
        &json!({"METHOD": "IVR_LAYER_INPUT", "DATA": {"DID": "0732793256", "CALLER_ID": "0501234567",
                "IVR_UNIQUE_ID": call, "DTMF": "1", "LAYER_ID": 8, "PREVIOUS_LAYER_ID": 4}}),
    )
    .await;
    assert_eq!(answer["ACTION"], "GO_TO_LAYER", "{name}: {answer}");
    assert_eq!(answer["LAYER"], 1, "{name}: {answer}");
    assert_eq!(answer["CUSTOM_DATA"]["crm_id"], "A-17", "{name}: {answer}");

    // The pop-up lookup.
    let response = client()
        .get(gateway.url("/voicenter/acme/popup?phone=0722776772"))
        .send()
        .await
        .expect("GET pop-up");
    let popup: Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("pop-up JSON");
    assert_eq!(popup["STATUS"], "OK", "{name}: {popup}");
    assert_eq!(popup["CLIENTNAME"], "Demo Caller", "{name}: {popup}");

    // An event: the call's CDR is delivered, verified and acknowledged (nothing left pending).
    let cdr = crate::process::cdr_body(call, 12);
    let ack = voicenter(&gateway, "/cdr", &serde_json::from_str(&cdr).expect("cdr")).await;
    assert!(crate::process::cdr_acked(&ack), "{name}: {ack}");
    rx.wait_for(START, |l| {
        l.starts_with("call.cdr  id=msg_") && l.ends_with("signature=ok")
    });
    // What the example printed for the CDR (up to the next webhook) carries the crm_id its
    // decision attached to the call.
    let output = rx.output();
    let start = output
        .iter()
        .position(|l| l.starts_with("call.cdr  id=msg_"))
        .expect("the call.cdr line");
    let printed: Vec<&String> = output[start + 1..]
        .iter()
        .take_while(|l| !l.contains("  id="))
        .collect();
    assert!(
        printed.iter().any(|l| l.contains("A-17")),
        "{name}: the CDR does not carry the attached crm_id: {printed:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, queues) = gateway_get(&gateway, "/admin/queues").await;
        assert_eq!(status, 200, "{queues}");
        let queues: Value = serde_json::from_str(&queues).expect("queues JSON");
        let pending: u64 = queues_pending(&queues);
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: events stay pending: {queues}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gateway);

    // Sent directly: what must be refused is refused, and not processed.
    let event = |id: &str| {
        json!({"type": "call.hangup", "timestamp": "2026-03-01T08:17:09.031Z",
               "data": {"event_id": id, "tenant": "acme", "vendor": "voicenter", "seq": 1}})
        .to_string()
    };
    let processed = |rx: &Running, id: &str| {
        rx.count(|l| l.starts_with("call.hangup") && l.contains(&format!("id={id} ")))
    };
    let refusals: [(&str, i64, Option<&str>, &str); 5] = [
        ("msg_kit_forged", now(), None, OTHER_SECRET),
        ("msg_kit_stale", now() - 6 * 60, None, SECRET),
        ("msg_kit_future", now() + 6 * 60, None, SECRET),
        ("msg_kit_bare", now(), Some("v1,"), SECRET),
        ("msg_kit_empty", now(), Some(""), SECRET),
    ];
    for (id, ts, signature, secret) in refusals {
        let (status, body) = rx.send(id, ts, signature, secret, &event(id)).await;
        assert!(
            (400..500).contains(&status),
            "{name}: {id} answered {status} {body}"
        );
        // The refusal is printed after anything processing would have printed.
        rx.wait_for(WAIT, |l| l.starts_with(&format!("refused id={id}:")));
        assert_eq!(processed(&rx, id), 0, "{name}: {id} was processed");
    }
    // Inside the tolerance is accepted; a refused id is not remembered as processed.
    let (status, _) = rx
        .send(
            "msg_kit_forged",
            now() - 4 * 60,
            None,
            SECRET,
            &event("msg_kit_forged"),
        )
        .await;
    assert_eq!(
        status, 200,
        "{name}: a genuine webhook after a forged one with its id"
    );
    let genuine = |l: &str| l.starts_with("call.hangup  id=msg_kit_forged ");
    assert_eq!(rx.wait_count(1, genuine), 1, "{name}");

    // A resent webhook-id: 2xx again, processed once; a decision gets the same answer.
    for _ in 0..3 {
        let (status, body) = rx
            .send("msg_kit_dup", now(), None, SECRET, &event("msg_kit_dup"))
            .await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    // The duplicates are printed after the one time it was processed.
    let duplicate = |l: &str| l.starts_with("duplicate id=msg_kit_dup:");
    assert_eq!(rx.wait_count(2, duplicate), 2, "{name}");
    assert_eq!(
        processed(&rx, "msg_kit_dup"),
        1,
        "{name}: {:#?}",
        rx.output()
    );
    let decision = json!({"type": "decision.layer_input", "timestamp": "2026-03-01T08:15:09.118Z",
                          "data": {"decision_id": "dec_kit", "kind": "layer_input", "tenant": "acme"}})
    .to_string();
    let first = rx.send("dec_kit", now(), None, SECRET, &decision).await;
    let again = rx.send("dec_kit", now(), None, SECRET, &decision).await;
    assert_eq!(first.0, 200, "{name}: {first:?}");
    assert_eq!(
        first, again,
        "{name}: a resent decision gets the same answer"
    );
    let answer: Value = serde_json::from_str(&first.1).expect("answer JSON");
    assert_eq!(answer["action"], "goto", "{name}: {answer}");
    let duplicate = |l: &str| l.starts_with("duplicate id=dec_kit:");
    assert_eq!(rx.wait_count(1, duplicate), 1, "{name}");
    let decided = |l: &str| l.starts_with("decision.layer_input  id=dec_kit ");
    assert_eq!(rx.count(decided), 1, "{name}");
}

async fn gateway_get(gateway: &Daemon, path: &str) -> (u16, String) {
    let response = client().get(gateway.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Pending events over every tenant and endpoint of `GET /admin/queues`.
fn queues_pending(queues: &Value) -> u64 {
    fn walk(v: &Value) -> u64 {
        match v {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    if k == "pending" {
                        v.as_u64().unwrap_or(0)
                    } else {
                        walk(v)
                    }
                })
                .sum(),
            Value::Array(items) => items.iter().map(walk).sum(),
            _ => 0,
        }
    }
    walk(queues)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_receiver_example() {
    exercise(Example::python()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_receiver_example() {
    exercise(Example::node()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_receiver_example() {
    exercise(Example::java()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_receiver_example() {
    exercise(Example::go()).await;
}
