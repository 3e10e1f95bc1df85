//! "Say what happened", through the built binary's log: a failed delivery or decision names
//! the endpoint (credentials redacted), what went wrong (connection refused, HTTP status,
//! timeout; TLS in `tls.rs`), the event type, the call and the attempt as "n of N"; a port
//! already in use names the address; shutdown says how many events still wait. Loopback
//! only; every wait is bounded and every process killed on every path.

use std::process::Command;
use std::time::Duration;

use crate::operations::{serve, signal, wait_log};
use crate::process::{free_port, run_with_timeout};
use crate::support::*;

/// A port nothing listens on (bound a moment ago, then closed).
fn closed_port() -> u16 {
    free_port()
}

fn config(port: u16, dir: &std::path::Path, webhook_url: &str, tenant_extra: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"

[logging]
level = "info"

[storage]
min_free_bytes = 0

[delivery]
retry_schedule_s = [1, 1]
jitter_percent = 0
timeout_ms = 400

[[tenants]]
id = "acme"
webhook_url = "{webhook_url}"
webhook_secret = "{SECRET}"
{tenant_extra}
"#,
        state = dir.join("state").display(),
    )
}

/// The log's lines holding `text`.
fn lines_with(log: &str, text: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

fn assert_has(line: &str, parts: &[&str]) {
    for part in parts {
        assert!(line.contains(part), "{part:?} not in: {line}");
    }
}

async fn post(url: &str, body: &str) -> u16 {
    client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

const CDR: &str = r#"{"ivruniqueid":"told-1","status":"ANSWER","duration":7,"caller":"0541234567","target":"0722776772","time":1414320455}"#;

const DECISION: &str = r#"{"METHOD":"GET_IVR_ACTION","DATA":{"DID":"0732793256","CALLER_ID":"0541234567","IVR_UNIQUE_ID":"told-call-2","DTMF":"","MENU":"-1","PREVIOUS_MENU":"-1"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_and_decisions_say_where_what_which_and_how_many() {
    let dir = tempfile::tempdir().expect("tmp");
    let dead = closed_port();
    // Credentials in the URL, in user info and in a query parameter, must not be logged.
    let webhook = format!("http://hook-user:hunter2-pw@127.0.0.1:{dead}/hooks?token=s3cr3t-tok");
    let port = free_port();
    let path = dir.path().join("told.toml");
    // The fallback URL is down too: the decision tries both, "1 of 2" and "2 of 2".
    let fallback = format!("http://127.0.0.1:{dead}/fallback");
    std::fs::write(
        &path,
        config(
            port,
            dir.path(),
            &webhook,
            &format!("fallback_url = \"{fallback}\"\n"),
        ),
    )
    .expect("config");
    let mut daemon = serve(dir.path(), "told", &path, port);
    daemon.ready().await;
    let base = format!("http://127.0.0.1:{port}");

    // A CDR to an endpoint nobody listens on: three attempts, then a dead letter.
    assert_eq!(post(&format!("{base}/voicenter/acme/cdr"), CDR).await, 200);
    let log = wait_log(&daemon, "event dead-lettered", 1);
    let retries = lines_with(&log, "delivery failed; will retry");
    assert_eq!(retries.len(), 2, "{log}");
    for (n, line) in retries.iter().enumerate() {
        assert_has(
            line,
            &[
                "WARN",
                &format!("endpoint=http://***:***@127.0.0.1:{dead}/hooks?token=***"),
                "error=connection refused",
                "event_type=call.cdr",
                "event_id=msg_",
                "call=call_",
                &format!("attempt={} of 3", n + 1),
            ],
        );
    }
    let dead_line = &lines_with(&log, "event dead-lettered")[0];
    assert_has(
        dead_line,
        &["ERROR", "attempt=3 of 3", "error=connection refused"],
    );
    // The same call in every line.
    let call = |line: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with("call="))
            .map(str::to_owned)
    };
    assert_eq!(call(&retries[0]), call(dead_line));

    // A decision to the same endpoint: the caller gets the fallback, the log says why.
    assert_eq!(post(&format!("{base}/voicenter/acme"), DECISION).await, 200);
    let log = wait_log(&daemon, "decision webhook failed", 2);
    let second = &lines_with(&log, "decision webhook failed")[1];
    assert_has(
        second,
        &[
            &format!("endpoint={fallback}"),
            "attempt=2 of 2",
            "error=connection refused",
        ],
    );
    let line = &lines_with(&log, "decision webhook failed")[0];
    assert_has(
        line,
        &[
            "WARN",
            &format!("endpoint=http://***:***@127.0.0.1:{dead}/hooks?token=***"),
            "event_type=decision.ivr_action",
            "decision_id=dec_",
            "call=call_",
            "attempt=1 of 2",
            "reason=connect_error",
            "error=connection refused",
        ],
    );
    for secret in ["hunter2-pw", "s3cr3t-tok"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }

    // A receiver that answers 503, then one too slow for delivery.timeout_ms (400 ms).
    let receiver = Receiver::start().await;
    // Retry-After keeps its event waiting (not dead-lettered) until the shutdown below.
    receiver.answer(|_| Reply::status(503).header("retry-after", "120"));
    let slow = Receiver::start().await;
    slow.answer(|_| Reply::ok("{}").after(Duration::from_secs(3)));
    std::fs::write(
        &path,
        config(
            port,
            dir.path(),
            &receiver.url("/events"),
            &format!("decision_url = \"{}\"\n", slow.url("/decide")),
        ),
    )
    .expect("config");
    signal(&daemon, "HUP");
    wait_log(&daemon, "configuration reloaded", 1);
    assert_eq!(
        post(
            &format!("{base}/voicenter/acme/cdr"),
            &CDR.replace("told-1", "told-3")
        )
        .await,
        200
    );
    let log = wait_log(&daemon, "error=HTTP 503 Service Unavailable", 1);
    let line = &lines_with(&log, "error=HTTP 503 Service Unavailable")[0];
    assert_has(
        line,
        &[
            &format!("endpoint={}", receiver.url("/events")),
            "event_type=call.cdr",
            "attempt=1 of 3",
        ],
    );
    assert_eq!(
        post(
            &format!("{base}/voicenter/acme"),
            &DECISION.replace("told-call-2", "told-call-4")
        )
        .await,
        200
    );
    let log = wait_log(&daemon, "reason=timeout", 1);
    let line = &lines_with(&log, "reason=timeout")[0];
    assert_has(
        line,
        &[
            "decision webhook failed",
            &format!("endpoint={}", slow.url("/decide")),
            "error=timeout: no answer within the decision's deadline",
        ],
    );

    // SIGTERM: the last line says how many events still wait (the 503 one, told to come
    // back in two minutes) and how many are dead letters (the first CDR).
    signal(&daemon, "TERM");
    let log = wait_log(&daemon, "still waiting for delivery", 1);
    let line = &lines_with(&log, "still waiting for delivery")[0];
    assert_has(
        line,
        &[
            "stopped; 1 event(s) still waiting for delivery",
            "events_waiting=1",
            "dead_letters=1",
            "waiting_by_tenant=acme=1",
        ],
    );
}

#[test]
fn a_port_in_use_names_the_address() {
    let dir = tempfile::tempdir().expect("tmp");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let path = dir.path().join("busy.toml");
    std::fs::write(&path, config(port, dir.path(), "http://127.0.0.1:9/", "")).expect("config");
    let (status, stdout, stderr) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_ivrgate"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("NOTIFY_SOCKET"),
        Duration::from_secs(30),
    );
    assert!(!status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: Address already in use"
        )),
        "{stderr}"
    );
    drop(taken);
}
