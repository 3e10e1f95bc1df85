//! Operating the built binary across reloads and shutdowns: a reload either applies every
//! setting or is refused (checked against the listener actually bound), secrets stay out of
//! error messages and logs, and a shutdown answers open decisions with their fallback.
//! Every wait is bounded; every spawned process is killed on every path ([`Daemon`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, run_with_timeout, Daemon};
use crate::support::*;

/// Longest a log line may take to appear.
const LOG_WAIT: Duration = Duration::from_secs(20);

fn ivrgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ivrgate"))
}

/// `ivrgate serve` on the file at `config` (listening on `port`), its stderr in `dir`.
fn serve(dir: &Path, name: &str, config: &Path, port: u16) -> Daemon {
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

fn signal(daemon: &Daemon, name: &str) {
    let pid = daemon.child.as_ref().expect("running").id();
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits until the log holds `text` `times` times; panics with the log otherwise.
fn wait_log(daemon: &Daemon, text: &str, times: usize) -> String {
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
