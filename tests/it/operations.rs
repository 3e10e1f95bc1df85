//! Operating the built binary across reloads and shutdowns: a reload either applies every
//! setting or is refused (checked against the listener actually bound), secrets stay out of
//! error messages and logs, and a shutdown answers open decisions with their fallback.
//! Every wait is bounded; every spawned process is killed on every path ([`Daemon`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::{free_port, run_with_timeout, Daemon};
use crate::support::*;

/// Longest a log line may take to appear.
const LOG_WAIT: Duration = Duration::from_secs(20);

fn ivrgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ivrgate"))
}

/// `ivrgate serve` on the file at `config` (listening on `port`), its stderr in `dir`.
pub(crate) fn serve(dir: &Path, name: &str, config: &Path, port: u16) -> Daemon {
    let log = dir.join(format!("{name}.log"));
    let stderr = std::fs::File::create(&log).expect("create log");
    let child = ivrgate()
        .arg("serve")
        .arg("--config")
        .arg(config)
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

pub(crate) fn signal(daemon: &Daemon, name: &str) {
    let pid = daemon.child.as_ref().expect("running").id();
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits until the log holds `text` `times` times; panics with the log otherwise.
pub(crate) fn wait_log(daemon: &Daemon, text: &str, times: usize) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let log = daemon.log_text();
        if log.matches(text).count() >= times {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {text:?} (x{times}) in the log within {LOG_WAIT:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This machine's own address on a non-loopback interface, if it has one: a request to it
/// arrives as from another host would, through the same socket.
fn outside_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // A UDP "connect" only picks the route and source address; nothing is sent.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

/// One tenant `acme` with `tenant_extra` lines in its table, and `top` lines before it.
fn config(
    listen: &str,
    state_dir: &Path,
    webhook_url: &str,
    top: &str,
    tenant_extra: &str,
) -> String {
    format!(
        r#"listen = "{listen}"
state_dir = "{dir}"
{top}
[logging]
level = "info"

[storage]
min_free_bytes = 0

[delivery]
retry_schedule_s = [1, 1, 1]
jitter_percent = 0

[[tenants]]
id = "acme"
webhook_url = "{webhook_url}"
webhook_secret = "{SECRET}"
{tenant_extra}"#,
        dir = state_dir.display()
    )
}

const CDR: &str = r#"{"ivruniqueid":"op-1","status":"ANSWER","duration":7,"caller":"0541234567","target":"0722776772","time":1414320455}"#;

async fn post_cdr(url: &str, basic: Option<(&str, &str)>) -> (u16, String) {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(CDR);
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.expect("CDR request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Issue 8, defect 1: a reload that moves `listen` to loopback and drops the credentials
/// used to be applied to the socket still bound to 0.0.0.0, which then took CDRs from
/// anyone. It is refused now (logged at ERROR, naming `listen`), and the credentials stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_drop_credentials_on_a_public_socket() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let port = free_port();
    let path = dir.path().join("ivrgate.toml");
    let basic =
        "[tenants.inbound]\nbasic_auth = { username = \"vc\", password = \"pa55-w0rd-x\" }\n";
    let public = config(
        &format!("0.0.0.0:{port}"),
        &state,
        &rx.url("/hooks"),
        "",
        basic,
    );
    write(&path, &public);
    let mut daemon = serve(dir.path(), "public", &path, port);
    daemon.ready().await;
    let cdr_url = daemon.url("/voicenter/acme/cdr");
    assert_eq!(
        post_cdr(&cdr_url, None).await.0,
        401,
        "credentials enforced at start"
    );

    // The file moves to loopback without credentials: valid on its own.
    let loopback = config(
        &format!("127.0.0.1:{port}"),
        &state,
        &rx.url("/hooks"),
        "",
        "",
    );
    write(&path, &loopback);
    let (status, stdout, stderr) = run_with_timeout(
        ivrgate().arg("check-config").arg(&path),
        Duration::from_secs(30),
    );
    assert!(status.success(), "check-config: {stdout}{stderr}");
    signal(&daemon, "HUP");
    let log = wait_log(&daemon, "reload refused", 1);
    let refused = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect("refusal line");
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(
        refused.contains(&format!(
            "listen changed from 0.0.0.0:{port} (bound) to 127.0.0.1:{port}"
        )),
        "{refused}"
    );
    assert!(
        refused.contains("no inbound credentials on the non-loopback listener"),
        "{refused}"
    );
    assert!(!log.contains("configuration reloaded"), "{log}");

    // Credentials are still enforced, from loopback and from another host.
    let (status, body) = post_cdr(&cdr_url, None).await;
    assert_eq!(
        status, 401,
        "unauthenticated CDR after the refused reload: {body}"
    );
    if let Some(ip) = outside_address() {
        let outside = format!("http://{ip}:{port}/voicenter/acme/cdr");
        let (status, body) = post_cdr(&outside, None).await;
        assert_eq!(status, 401, "unauthenticated CDR from {ip}: {body}");
        let (status, body) = post_cdr(&outside, Some(("vc", "pa55-w0rd-x"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post_cdr(&cdr_url, Some(("vc", "pa55-w0rd-x"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({"err": 0, "errdesc": "OK"}))
    );

    // A reload that keeps the listener applies what it changes (here the body limit and
    // the log level).
    let smaller = config(
        &format!("0.0.0.0:{port}"),
        &state,
        &rx.url("/hooks"),
        "[server]\nmax_body_bytes = 64\n",
        basic,
    )
    .replace("level = \"info\"", "level = \"debug\"");
    write(&path, &smaller);
    assert!(!daemon.log_text().contains("DEBUG"));
    signal(&daemon, "HUP");
    wait_log(&daemon, "configuration reloaded", 1);
    let (status, _) = post_cdr(&cdr_url, Some(("vc", "pa55-w0rd-x"))).await;
    assert_eq!(status, 413, "the reloaded body limit applies");
    // Debug lines now: a CDR small enough for the new limit logs its delivery at DEBUG.
    let small = client()
        .post(&cdr_url)
        .basic_auth("vc", Some("pa55-w0rd-x"))
        .header("content-type", "application/json")
        .body(r#"{"ivruniqueid":"op-2","status":"ANSWER"}"#)
        .send()
        .await
        .expect("small CDR");
    assert_eq!(small.status().as_u16(), 200);
    wait_log(&daemon, "DEBUG", 1);
}

/// Issue 8, defect 3: TOML errors quoted the offending line (a password, an unclosed
/// webhook secret) on check-config, serve and a refused reload, and a 410 logged the
/// webhook URL with its user:password and token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_config_errors_and_logs() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::status(410));
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // A typo next to a password; an unclosed webhook secret.
    let typo = config(
        &listen,
        &state,
        "http://127.0.0.1:9/hooks",
        "",
        "[tenants.inbound.basic_auth]\nusername = \"vc\"\npassword = \"Hunter2-pa55word\" x\n",
    );
    let unclosed = config(&listen, &state, "http://127.0.0.1:9/hooks", "", "").replace(
        &format!("webhook_secret = \"{SECRET}\""),
        "webhook_secret = \"whsec_Unclosed0Secret0Value0000000000",
    );
    for (name, text, secret) in [
        ("typo", &typo, "Hunter2-pa55word"),
        ("unclosed", &unclosed, "Unclosed0Secret0Value"),
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        write(&path, text);
        let (status, stdout, stderr) = run_with_timeout(
            ivrgate().arg("check-config").arg(&path),
            Duration::from_secs(30),
        );
        assert_eq!(status.code(), Some(64), "{name}: {stdout}{stderr}");
        assert!(stderr.contains("TOML parse error"), "{name}: {stderr}");
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "{name}: {stderr}"
        );
        let (status, stdout, stderr) = run_with_timeout(
            ivrgate().arg("serve").arg("--config").arg(&path),
            Duration::from_secs(30),
        );
        assert_eq!(status.code(), Some(64), "{name}: {stdout}{stderr}");
        assert!(stderr.contains("TOML parse error"), "{name}: {stderr}");
        assert!(!stderr.contains(secret), "{name}: {stderr}");
    }

    // A webhook URL with credentials and a token, answering 410.
    let url = format!(
        "http://hookuser:Url-pa55word@{}/hooks?tenant=acme&token=T0ken-in-query",
        rx.addr
    );
    let path = dir.path().join("ivrgate.toml");
    write(&path, &config(&listen, &state, &url, "", ""));
    let mut daemon = serve(dir.path(), "secrets", &path, port);
    daemon.ready().await;
    let (status, body) = post_cdr(&daemon.url("/voicenter/acme/cdr"), None).await;
    assert_eq!(status, 200, "{body}");
    let log = wait_log(&daemon, "410 Gone", 1);
    let gone = log
        .lines()
        .find(|l| l.contains("410 Gone"))
        .expect("410 line");
    assert!(gone.contains("hooks?tenant=acme&token=***"), "{gone}");

    // A refused reload of a broken file logs the error without the secret.
    write(&path, &typo);
    signal(&daemon, "HUP");
    let log = wait_log(&daemon, "reload refused", 1);
    assert!(log.contains("TOML parse error"), "{log}");
    for secret in [
        "Url-pa55word",
        "T0ken-in-query",
        "Hunter2-pa55word",
        "hookuser",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// Issue 8, defect 4: with a shutdown grace shorter than the decision deadline, SIGTERM
/// closed the connection of a decision still waiting for a slow customer: dead air. Now the
/// grace running out answers it with its fallback, on the wire, before the connection
/// closes; check-config warns about such a grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_open_decisions_with_their_fallback() {
    let rx = Receiver::start().await;
    // The customer takes far longer than the deadline (and the grace).
    rx.answer(|_| Reply::ok(r#"{"action":"default"}"#).after(Duration::from_secs(30)));
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let port = free_port();
    let path = dir.path().join("ivrgate.toml");
    write(
        &path,
        &config(
            &format!("127.0.0.1:{port}"),
            &state,
            &rx.url("/hooks"),
            "[server]\nshutdown_grace_ms = 300\n",
            "[tenants.decisions.ivr_action]\ndeadline_ms = 10000\n\
             fallback = { action = \"hangup\", prompt = \"sorry\" }\n",
        ),
    );
    let mut daemon = serve(dir.path(), "grace", &path, port);
    daemon.ready().await;
    let request = json!({"METHOD": "GET_IVR_ACTION", "DATA": {"DID": "0732793256",
        "CALLER_ID": "0541234567", "IVR_UNIQUE_ID": "grace-1", "DTMF": "", "MENU": "-1",
        "PREVIOUS_MENU": "-1"}})
    .to_string();
    let url = daemon.url("/voicenter/acme");
    let asked = tokio::spawn(async move {
        let response = client()
            .post(url)
            .header("content-type", "application/json")
            .body(request)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| format!("no body: {e}"))?;
        Ok::<_, String>((status, body))
    });
    // The decision webhook is out and waiting for the customer: now stop.
    let hook = rx.next().await;
    assert_eq!(hook.json["type"], "decision.ivr_action");
    signal(&daemon, "TERM");
    let (status, body) = tokio::time::timeout(Duration::from_secs(60), asked)
        .await
        .expect("bounded")
        .expect("task")
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", daemon.log_text()));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON answer");
    assert_eq!(
        answer["ACTION"], "HANGUP",
        "the configured fallback: {answer}"
    );
    let log = wait_log(&daemon, "stopped", 1);
    assert!(
        log.contains("reason=\"shutdown\"") || log.contains("reason=shutdown"),
        "{log}"
    );
    let mut child = daemon.child.take().expect("child");
    let deadline = Instant::now() + LOG_WAIT;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    // check-config warns about such a grace (and still says ok).
    let (status, stdout, stderr) = run_with_timeout(
        ivrgate().arg("check-config").arg(&path),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: server.shutdown_grace_ms (300) is shorter than the longest decision deadline (10000 ms"),
        "{stderr}"
    );
}

/// Issue 8, defect 12: an unknown key inside an inline table passed check-config
/// (`fallback = { action = "hangup", promt = "sorry" }`): every table in the file is strict,
/// also the free-form ones the adapters read, and the error names the key and the valid ones.
#[test]
fn check_config_refuses_unknown_keys_in_inline_tables() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    for (name, tenant_extra, expected) in [
        (
            "fallback",
            "[tenants.decisions.ivr_action]\nfallback = { action = \"hangup\", promt = \"sorry\" }\n",
            "tenant acme: decisions.ivr_action.fallback: unknown key \"promt\"; valid keys: action, prompt, cause, language, attach",
        ),
        (
            "nested",
            "[tenants.decisions.ivr_action]\nfallback = { action = \"dial\", targets = [\"100\"], \
             on_failure = { target = \"main\", promt = \"x\" } }\n",
            "unknown key \"on_failure.promt\"",
        ),
        (
            "native",
            "[tenants.decisions.ivr_action]\nfallback = { native = { ACTION = \"HANGUP\" }, action = \"hangup\" }\n",
            "unknown key \"action\"; valid keys: native",
        ),
        (
            "openscape",
            "[tenants.openscape]\ncallback_queues = { sales = { promt = \"x\" } }\n",
            "unknown field `promt`",
        ),
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        write(
            &path,
            &config("127.0.0.1:8080", &state, "http://127.0.0.1:9/hooks", "", tenant_extra),
        );
        let (status, stdout, stderr) = run_with_timeout(
            ivrgate().arg("check-config").arg(&path),
            Duration::from_secs(30),
        );
        assert_eq!(status.code(), Some(64), "{name}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}
