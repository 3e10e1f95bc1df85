//! TLS on the listener, through the built binary and Python's own `ssl` client (OpenSSL's
//! side of the handshake, not rustls talking to itself): a real CDR over TLS, old protocols
//! and weak suites refused, plain HTTP on the TLS port told what to do, mutual TLS, the
//! certificate rotated by SIGHUP without dropping open connections, a bad file refused at
//! start and on reload without its bytes in any message. Certificates are made here (rcgen).
//! Loopback only; every wait is bounded and every process killed on every path.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};

use crate::operations::{serve, signal, wait_log};
use crate::process::{free_port, py_script, run_with_timeout, Daemon};
use crate::support::*;

/// Longest the daemon may take to answer `/readyz`, and a Python command to answer.
const WAIT_LONG: Duration = Duration::from_secs(30);

/// A certificate authority made for one test.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `name` (an IP address or DNS name) signed by this CA, for a server
    /// or a client: (certificate PEM, key PEM).
    pub(crate) fn issue(&self, name: &str, client: bool) -> (String, String) {
        self.issue_until(name, client, None)
    }

    /// [`Ca::issue`], valid until `not_after` when given (from a day before it).
    fn issue_until(
        &self,
        name: &str,
        client: bool,
        not_after: Option<time::OffsetDateTime>,
    ) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("leaf params");
        if let Some(end) = not_after {
            params.not_before = end - time::Duration::days(400);
            params.not_after = end;
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The PEM files of one test under `dir`.
struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn write(dir: &Path, ca: &Ca, server: &(String, String)) -> Files {
        let files = Files {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&files.ca, ca.pem()).expect("write CA");
        files.put(server);
        files
    }

    /// Replaces the server's certificate and key (as a renewal does).
    fn put(&self, (cert, key): &(String, String)) {
        std::fs::write(&self.cert, cert).expect("write certificate");
        std::fs::write(&self.key, key).expect("write key");
        set_mode(&self.key, 0o600);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The SHA-256 of a PEM certificate's DER, as Python prints it.
fn fingerprint(pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM");
    sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(port: u16, dir: &Path, files: &Files, tls_extra: &str, webhook_url: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"

[server.tls]
cert_file = "{cert}"
key_file = "{key}"
{tls_extra}

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
"#,
        state = dir.join("state").display(),
        cert = files.cert.display(),
        key = files.key.display(),
    )
}

/// An HTTPS client trusting `ca` only, presenting `identity` (certificate and key PEM).
fn https_client(ca: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}\n{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

/// Polls `https://127.0.0.1:port/readyz` until it answers 200; panics with the log on exit
/// or after `WAIT_LONG`.
async fn ready(daemon: &mut Daemon, client: &reqwest::Client) {
    let deadline = Instant::now() + WAIT_LONG;
    let url = format!("https://127.0.0.1:{}/readyz", daemon.port);
    loop {
        if let Some(status) = daemon
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "exited before it was ready ({status}):\n{}",
                daemon.log_text()
            );
        }
        if let Ok(r) = client.get(&url).send().await {
            if r.status().as_u16() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not ready over TLS within {WAIT_LONG:?}:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tests/py/tls_client.py`: Python's ssl client, one JSON answer per command. Killed on drop.
struct Python {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Python {
    fn start(port: u16, ca: &Path, args: &[&str]) -> Python {
        let mut child = Command::new("python3")
            .arg(py_script("tls_client.py"))
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(ca)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Python {
            child,
            stdin,
            lines,
        }
    }

    /// Runs one command; its JSON answer.
    fn run(&mut self, command: &str) -> Value {
        writeln!(self.stdin, "{command}").expect("write to python");
        self.stdin.flush().expect("flush");
        let line = self
            .lines
            .recv_timeout(WAIT_LONG)
            .unwrap_or_else(|e| panic!("python gave no answer to {command:?}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("python said {line:?}: {e}"))
    }

    /// Connects and asserts the handshake worked; its answer.
    fn connect(&mut self) -> Value {
        let answer = self.run("connect");
        assert_eq!(answer["ok"], json!(true), "handshake: {answer}");
        answer
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One handshake with Python's client under `args`; its answer.
fn handshake(port: u16, ca: &Path, args: &[&str]) -> Value {
    let mut python = Python::start(port, ca, args);
    let answer = python.run("connect");
    if answer["ok"] == json!(true) {
        // TLS 1.3 lets the client finish first; the server's verdict on a client
        // certificate comes with the first read.
        return python.run("request GET /healthz");
    }
    answer
}

fn error_of(answer: &Value) -> String {
    assert_eq!(answer["ok"], json!(false), "expected a refusal: {answer}");
    answer["error"].as_str().unwrap_or_default().to_owned()
}

const CDR: &str = r#"{"ivruniqueid":"tls-cdr-1","status":"ANSWER","duration":7,"caller":"0541234567","target":"0722776772","time":1414320455}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdr_over_tls_from_pythons_client_and_old_protocols_refused() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("ivrgate test CA");
    let server = ca.issue("127.0.0.1", false);
    let files = Files::write(dir.path(), &ca, &server);
    let port = free_port();
    let path = dir.path().join("tls.toml");
    std::fs::write(
        &path,
        config(port, dir.path(), &files, "", &receiver.url("/hooks")),
    )
    .expect("config");
    let (status, stdout, stderr) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_ivrgate"))
            .arg("check-config")
            .arg(&path),
        WAIT_LONG,
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("(TLS)"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let mut daemon = serve(dir.path(), "tls", &path, port);
    ready(&mut daemon, &https_client(&ca.pem(), None)).await;

    // TLS 1.3 by default, with the server's certificate, and a CDR acknowledged and delivered.
    let mut python = Python::start(port, &files.ca, &[]);
    let hello = python.connect();
    assert_eq!(hello["version"], json!("TLSv1.3"), "{hello}");
    assert_eq!(hello["alpn"], json!("http/1.1"), "{hello}");
    assert_eq!(hello["cert_sha256"], json!(fingerprint(&server.0)));
    let body = dir.path().join("cdr.json");
    std::fs::write(&body, CDR).expect("body");
    let answer = python.run(&format!(
        "request POST /voicenter/acme/cdr {}",
        body.display()
    ));
    assert_eq!(answer["status"], json!(200), "{answer}");
    let ack: Value = serde_json::from_str(answer["body"].as_str().unwrap_or("")).expect("JSON");
    assert_eq!(ack, json!({"err": 0, "errdesc": "OK"}));
    let hook = receiver.next().await;
    assert_eq!(hook.json["type"], json!("call.cdr"));
    assert_eq!(
        hook.json["data"]["vendor_fields"]["ivruniqueid"],
        json!("tls-cdr-1")
    );
    assert!(hook.verifies());
    drop(python);

    // TLS 1.2 with a forward-secret AEAD suite.
    let tls12 = handshake(port, &files.ca, &["--tls-max", "1.2"]);
    assert_eq!(tls12["status"], json!(200), "{tls12}");
    let mut python = Python::start(port, &files.ca, &["--tls-max", "1.2"]);
    let hello = python.connect();
    assert_eq!(hello["version"], json!("TLSv1.2"), "{hello}");
    let cipher = hello["cipher"].as_str().unwrap_or_default();
    assert!(
        cipher.starts_with("ECDHE-") && (cipher.contains("GCM") || cipher.contains("CHACHA20")),
        "{cipher}"
    );
    drop(python);

    // TLS 1.1 is refused by the server (an alert it sends: rustls answers a TLS 1.1 hello,
    // which lacks the signature_algorithms extension, with handshake_failure), not by the
    // client, which did offer it (the log says so too).
    let why = error_of(&handshake(
        port,
        &files.ca,
        &["--tls-min", "1.1", "--tls-max", "1.1"],
    ));
    assert!(
        why.contains("ALERT_HANDSHAKE_FAILURE") || why.contains("ALERT_PROTOCOL_VERSION"),
        "{why}"
    );
    // A client offering only CBC suites finds none in common.
    let why = error_of(&handshake(
        port,
        &files.ca,
        &[
            "--tls-max",
            "1.2",
            "--ciphers",
            "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256",
        ],
    ));
    assert!(why.contains("HANDSHAKE_FAILURE"), "{why}");

    // Plain HTTP on the TLS port is told to use https.
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("plain request");
    assert_eq!(plain.status().as_u16(), 400);
    assert!(plain.text().await.expect("body").contains("speaks HTTPS"));

    let log = wait_log(&daemon, "reason=no_common_cipher", 1);
    assert!(
        log.lines()
            .any(|l| l.contains("TLS handshake failed") && l.contains("reason=protocol_version")),
        "{log}"
    );
    assert!(
        log.contains("plain HTTP request on the TLS listener"),
        "{log}"
    );
    let metrics = https_client(&ca.pem(), None)
        .get(format!("https://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains("ivrgate_tls_handshake_failures_total{outcome=\"protocol_version\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("server CA");
    let clients = Ca::new("platform client CA");
    let stranger = Ca::new("someone else's CA");
    let server = ca.issue("127.0.0.1", false);
    let files = Files::write(dir.path(), &ca, &server);
    let client_ca = dir.path().join("clients.pem");
    std::fs::write(&client_ca, clients.pem()).expect("client CA");
    let good = clients.issue("platform.example", true);
    let bad = stranger.issue("platform.example", true);
    for (name, (cert, key)) in [("good", &good), ("bad", &bad)] {
        std::fs::write(dir.path().join(format!("{name}.pem")), cert).expect("cert");
        std::fs::write(dir.path().join(format!("{name}.key")), key).expect("key");
    }
    let arg = |name: &str, ext: &str| {
        dir.path()
            .join(format!("{name}.{ext}"))
            .display()
            .to_string()
    };
    let (good_cert, good_key, bad_cert, bad_key) = (
        arg("good", "pem"),
        arg("good", "key"),
        arg("bad", "pem"),
        arg("bad", "key"),
    );
    let port = free_port();
    let path = dir.path().join("mtls.toml");
    let required = format!("client_ca_file = \"{}\"\n", client_ca.display());
    std::fs::write(
        &path,
        config(port, dir.path(), &files, &required, "http://127.0.0.1:9/"),
    )
    .expect("config");
    let mut daemon = serve(dir.path(), "mtls", &path, port);
    ready(&mut daemon, &https_client(&ca.pem(), Some(&good))).await;

    // With a certificate from the client CA: served (TLS 1.3 and 1.2).
    for max in ["1.3", "1.2"] {
        let answer = handshake(
            port,
            &files.ca,
            &["--tls-max", max, "--cert", &good_cert, "--key", &good_key],
        );
        assert_eq!(answer["status"], json!(200), "TLS {max}: {answer}");
    }
    // Without one: refused with the certificate_required alert, in TLS 1.3 and 1.2.
    for max in ["1.3", "1.2"] {
        let why = error_of(&handshake(port, &files.ca, &["--tls-max", max]));
        assert!(why.contains("CERTIFICATE_REQUIRED"), "TLS {max}: {why}");
    }
    // With one from another CA: refused.
    let why = error_of(&handshake(
        port,
        &files.ca,
        &["--cert", &bad_cert, "--key", &bad_key],
    ));
    assert!(why.contains("UNKNOWN_CA"), "{why}");
    let log = wait_log(&daemon, "reason=bad_client_certificate", 1);
    assert!(log.contains("reason=no_client_certificate"), "{log}");

    // `optional`, applied by a reload: no certificate is fine, a bad one still is not.
    std::fs::write(
        &path,
        config(
            port,
            dir.path(),
            &files,
            &format!("{required}client_auth = \"optional\"\n"),
            "http://127.0.0.1:9/",
        ),
    )
    .expect("config");
    signal(&daemon, "HUP");
    wait_log(&daemon, "configuration reloaded", 1);
    let answer = handshake(port, &files.ca, &[]);
    assert_eq!(answer["status"], json!(200), "{answer}");
    let why = error_of(&handshake(
        port,
        &files.ca,
        &["--cert", &bad_cert, "--key", &bad_key],
    ));
    assert!(why.contains("UNKNOWN_CA"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("rotation CA");
    let old = ca.issue("127.0.0.1", false);
    let new = ca.issue("127.0.0.1", false);
    let files = Files::write(dir.path(), &ca, &old);
    let port = free_port();
    let path = dir.path().join("rotate.toml");
    std::fs::write(
        &path,
        config(port, dir.path(), &files, "", "http://127.0.0.1:9/"),
    )
    .expect("config");
    let mut daemon = serve(dir.path(), "rotate", &path, port);
    ready(&mut daemon, &https_client(&ca.pem(), None)).await;

    let mut open = Python::start(port, &files.ca, &[]);
    assert_eq!(open.connect()["cert_sha256"], json!(fingerprint(&old.0)));
    assert_eq!(open.run("request GET /healthz")["status"], json!(200));

    // Renewed files, then SIGHUP.
    files.put(&new);
    signal(&daemon, "HUP");
    wait_log(&daemon, "configuration reloaded", 1);
    // The open connection goes on, with the certificate it was opened with ...
    let again = open.run("request GET /healthz");
    assert_eq!(again["status"], json!(200), "{again}");
    assert_eq!(again["cert_sha256"], json!(fingerprint(&old.0)));
    // ... and a new handshake gets the new certificate.
    let mut fresh = Python::start(port, &files.ca, &[]);
    assert_eq!(fresh.connect()["cert_sha256"], json!(fingerprint(&new.0)));

    // A renewal gone wrong: the key of another certificate, then a key file that is not PEM.
    // Each reload is refused, logged with the file and without its bytes; the running
    // certificate stays.
    let other = ca.issue("127.0.0.1", false);
    std::fs::write(&files.key, &other.1).expect("key");
    signal(&daemon, "HUP");
    let log = wait_log(&daemon, "reload refused", 1);
    let refusal = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect("refusal line");
    assert!(
        refusal.contains("is not the key of the certificate in server.tls.cert_file"),
        "{refusal}"
    );
    let secret_line = "c2VjcmV0LWtleS1ieXRlcy1uZXZlci10by1iZS1sb2dnZWQ";
    std::fs::write(
        &files.key,
        format!("-----BEGIN PRIVATE KEY-----\n{secret_line}!!\n-----END PRIVATE KEY-----\n"),
    )
    .expect("key");
    signal(&daemon, "HUP");
    let log = wait_log(&daemon, "reload refused", 2);
    assert!(log.contains("server.tls.key_file"), "{log}");
    assert!(!log.contains(secret_line), "key bytes in the log:\n{log}");
    for key in [&old.1, &new.1, &other.1] {
        let body_line = key.lines().nth(1).expect("a base64 line");
        assert!(!log.contains(body_line), "key bytes in the log:\n{log}");
    }
    let mut after = Python::start(port, &files.ca, &[]);
    assert_eq!(after.connect()["cert_sha256"], json!(fingerprint(&new.0)));
    assert_eq!(after.run("request GET /healthz")["status"], json!(200));
    assert_eq!(
        open.run("request GET /healthz")["status"],
        json!(200),
        "the first connection outlived two refused reloads"
    );

    // Turning TLS off is a restart, not a reload.
    let plain = std::fs::read_to_string(&path)
        .expect("config")
        .replace("[server.tls]", "[unused]");
    let plain: String = plain
        .lines()
        .filter(|l| {
            !l.starts_with("[unused]") && !l.starts_with("cert_file") && !l.starts_with("key_file")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, plain).expect("config");
    signal(&daemon, "HUP");
    let log = wait_log(&daemon, "reload refused", 3);
    assert!(
        log.contains("server.tls changed from TLS to plain HTTP: only a restart applies it"),
        "{log}"
    );
}

#[test]
fn bad_tls_files_are_configuration_errors_that_never_quote_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("check CA");
    let server = ca.issue("127.0.0.1", false);
    let files = Files::write(dir.path(), &ca, &server);
    let path = dir.path().join("check.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).expect("config");
        let (status, stdout, stderr) = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_ivrgate"))
                .arg("check-config")
                .arg(&path),
            WAIT_LONG,
        );
        (status.code(), format!("{stdout}{stderr}"))
    };
    let good = config(1, dir.path(), &files, "", "http://127.0.0.1:9/");
    let (code, out) = check(&good);
    assert_eq!(code, Some(0), "{out}");

    let key_line = server.1.lines().nth(1).expect("key body").to_owned();
    // Certificate and key swapped.
    let swapped = good
        .replace("server.pem", "SWAP")
        .replace("server.key", "server.pem")
        .replace("SWAP", "server.key");
    let (code, out) = check(&swapped);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("server.tls.cert_file") && out.contains("no PEM certificate"),
        "{out}"
    );
    assert!(out.contains("no PEM private key"), "{out}");
    assert!(!out.contains(&key_line), "key bytes quoted:\n{out}");
    // Each problem points at its line, the value masked, like a parse error.
    assert!(out.contains("--> line 5, column 1"), "{out}");
    assert!(out.contains("--> line 6, column 1"), "{out}");
    assert!(out.contains("5 | cert_file = \"*"), "{out}");
    assert!(!out.contains("server.key\"\n"), "{out}");
    // A missing file is named.
    let (code, out) = check(&good.replace("server.key", "missing.key"));
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("cannot read") && out.contains("missing.key"),
        "{out}"
    );
    // An unknown setting and a bad client_auth are refused like every strict table.
    let (code, out) = check(&good.replace("key_file =", "client_auth = \"sometimes\"\nkey_file ="));
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("required") && out.contains("optional"),
        "{out}"
    );
    // A key readable by everyone is a warning, not an error.
    set_mode(&files.key, 0o644);
    let (code, out) = check(&good);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: server.tls.key_file") && out.contains("mode 644"),
        "{out}"
    );
    set_mode(&files.key, 0o600);
}

#[test]
fn plain_http_off_loopback_is_a_check_config_warning() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("plain.toml");
    let text = config_toml(
        &dir.path().join("state"),
        "http://127.0.0.1:9/",
        "[tenants.inbound]\nbasic_auth = { username = \"vc\", password = \"pa55-w0rd-x\" }\n",
    )
    .replace("127.0.0.1:0", "0.0.0.0:8080");
    std::fs::write(&path, text).expect("config");
    let (status, stdout, stderr) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_ivrgate"))
            .arg("check-config")
            .arg(&path),
        WAIT_LONG,
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("(plain HTTP)"), "{stdout}");
    assert!(
        stderr.contains(
            "warning: listen 0.0.0.0:8080 is not a loopback address and server.tls is not set"
        ),
        "{stderr}"
    );
}

/// A rustls server configuration for a receiver: the certificate and key PEM.
fn receiver_tls((cert, key): &(String, String)) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("receiver TLS");
    std::sync::Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_ca_file_reaches_a_receiver_with_a_private_ca() {
    // The customer's receiver has a certificate from their own CA.
    let customer = Ca::new("customer private CA");
    let receiver = Receiver::start_tls(receiver_tls(&customer.issue("127.0.0.1", false))).await;
    let hooks = receiver.url("/hooks");
    assert!(hooks.starts_with("https://"), "{hooks}");
    let dir = tempfile::tempdir().expect("tmp");
    let customer_ca = dir.path().join("customer-ca.pem");
    std::fs::write(&customer_ca, customer.pem()).expect("customer CA");
    // The gateway's own listener is TLS too: a call over TLS, a webhook over TLS.
    let ca = Ca::new("gateway CA");
    let files = Files::write(dir.path(), &ca, &ca.issue("127.0.0.1", false));
    let port = free_port();
    let path = dir.path().join("ca_file.toml");
    let base = config(port, dir.path(), &files, "", &hooks);
    let with_ca = format!("{base}ca_file = \"{}\"\n", customer_ca.display());
    std::fs::write(&path, &with_ca).expect("config");
    let mut daemon = serve(dir.path(), "ca_file", &path, port);
    let gateway = https_client(&ca.pem(), None);
    ready(&mut daemon, &gateway).await;
    let cdr_url = format!("https://127.0.0.1:{port}/voicenter/acme/cdr");
    let send = |id: &str| {
        gateway
            .post(&cdr_url)
            .header("content-type", "application/json")
            .body(CDR.replace("tls-cdr-1", id))
            .send()
    };
    let ack = send("private-ca-1").await.expect("CDR");
    assert_eq!(ack.status().as_u16(), 200);
    let hook = receiver.next().await;
    assert_eq!(
        hook.json["data"]["vendor_fields"]["ivruniqueid"],
        json!("private-ca-1")
    );
    assert!(hook.verifies());

    // Without the CA file the receiver's certificate is not trusted: the delivery fails,
    // and the log says why, naming the endpoint and the event.
    std::fs::write(&path, &base).expect("config");
    signal(&daemon, "HUP");
    wait_log(&daemon, "configuration reloaded", 1);
    let ack = send("private-ca-2").await.expect("CDR");
    assert_eq!(ack.status().as_u16(), 200);
    let log = wait_log(&daemon, "delivery failed; will retry", 1);
    let line = log
        .lines()
        .find(|l| l.contains("delivery failed; will retry"))
        .expect("failure line");
    for part in [
        &format!("endpoint={hooks}"),
        "event_type=call.cdr",
        "call=call_",
        "attempt=1 of 4",
        "error=TLS: invalid peer certificate: UnknownIssuer",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }

    // A CA file that is not one is a configuration error naming the tenant and the file.
    let bad = format!("{base}ca_file = \"{}\"\n", files.key.display());
    std::fs::write(&path, bad).expect("config");
    let (status, stdout, stderr) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_ivrgate"))
            .arg("check-config")
            .arg(&path),
        WAIT_LONG,
    );
    assert_eq!(status.code(), Some(64), "{stdout}{stderr}");
    assert!(
        stderr.contains("tenant acme: ca_file") && stderr.contains("server.key"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("stall CA");
    let files = Files::write(dir.path(), &ca, &ca.issue("127.0.0.1", false));
    let port = free_port();
    let path = dir.path().join("stall.toml");
    let text = config(port, dir.path(), &files, "", "http://127.0.0.1:9/").replace(
        "[server.tls]",
        "[server]\nheader_read_timeout_ms = 300\n\n[server.tls]",
    );
    std::fs::write(&path, text).expect("config");
    let mut daemon = serve(dir.path(), "stall", &path, port);
    ready(&mut daemon, &https_client(&ca.pem(), None)).await;
    // A client that connects and never says hello is closed after the timeout, not held.
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT_LONG, silent.read(&mut buf))
        .await
        .expect("closed within the wait");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let log = wait_log(&daemon, "TLS handshake not finished in time", 1);
    assert!(log.contains("timeout_ms=300"), "{log}");
}

#[test]
fn an_expired_or_expiring_certificate_is_a_warning() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("expiry CA");
    let now = time::OffsetDateTime::now_utc();
    let path = dir.path().join("expiry.toml");
    let check = |server: &(String, String)| {
        let files = Files::write(dir.path(), &ca, server);
        std::fs::write(
            &path,
            config(1, dir.path(), &files, "", "http://127.0.0.1:9/"),
        )
        .expect("config");
        let (status, stdout, stderr) = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_ivrgate"))
                .arg("check-config")
                .arg(&path),
            WAIT_LONG,
        );
        assert!(status.success(), "{stdout}{stderr}");
        stderr
    };
    let expired = check(&ca.issue_until("127.0.0.1", false, Some(now - time::Duration::days(2))));
    assert!(
        expired.contains("warning: server.tls.cert_file")
            && expired.contains("the certificate expired at"),
        "{expired}"
    );
    let soon = check(&ca.issue_until("127.0.0.1", false, Some(now + time::Duration::days(10))));
    assert!(
        soon.contains("the certificate expires in 9 day(s)")
            || soon.contains("the certificate expires in 10 day(s)"),
        "{soon}"
    );
    let fine = check(&ca.issue_until("127.0.0.1", false, Some(now + time::Duration::days(90))));
    assert!(!fine.contains("warning"), "{fine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_reaches_a_receiver_with_a_private_ca_and_falls_back_without_it() {
    // The customer's decision receiver has a certificate from their own CA.
    let customer = Ca::new("customer decision CA");
    let receiver = Receiver::start_tls(receiver_tls(&customer.issue("127.0.0.1", false))).await;
    receiver.answer(|_| {
        Reply::ok(r#"{"action":"menu","prompt":"welcome","menu":"main","max_digits":1}"#)
    });
    let hooks = receiver.url("/hooks");
    assert!(hooks.starts_with("https://"), "{hooks}");
    let dir = tempfile::tempdir().expect("tmp");
    let customer_ca = dir.path().join("customer-ca.pem");
    std::fs::write(&customer_ca, customer.pem()).expect("customer CA");
    let fallback = "\n[tenants.decisions.ivr_action]\ndeadline_ms = 2000\n\
                    fallback = { action = \"hangup\", prompt = \"sorry\", cause = 16 }\n";
    let decision = |call: &str| {
        json!({"METHOD": "GET_IVR_ACTION", "DATA": {
            "DID": "0730000000", "CALLER_ID": "0540000000", "CALLER_NAME": "Dana",
            "IVR_UNIQUE_ID": call, "DTMF": "", "MENU": "-1", "PREVIOUS_MENU": "-1"}})
        .to_string()
    };
    let action = |body: &str| {
        serde_json::from_str::<Value>(body).expect("json")["ACTION"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // With the tenant's ca_file the customer answers, over TLS, signed.
    let gw = Gateway::start(
        &hooks,
        &format!("ca_file = \"{}\"\n{fallback}", customer_ca.display()),
    )
    .await;
    let (status, _, body) = gw
        .post("/voicenter/acme", "application/json", decision("tls-dec-1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(action(&body), "MENU", "{body}");
    let hook = receiver.next().await;
    assert_eq!(hook.path, "/hooks");
    assert_eq!(
        hook.json["type"],
        json!("decision.ivr_action"),
        "{}",
        hook.json
    );
    assert_eq!(hook.header("content-type"), "application/json");
    assert!(hook.header("webhook-id").starts_with("dec_"), "{hook:?}");
    assert!(hook.verifies());
    // The connection is kept and used again.
    let (_, _, body) = gw
        .post("/voicenter/acme", "application/json", decision("tls-dec-2"))
        .await;
    assert_eq!(action(&body), "MENU", "{body}");
    receiver.next().await;
    gw.stop().await;

    // Without it the receiver's certificate is not trusted: the caller gets the fallback.
    let gw = Gateway::start(&hooks, fallback).await;
    let (status, _, body) = gw
        .post("/voicenter/acme", "application/json", decision("tls-dec-3"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(action(&body), "HANGUP", "{body}");
    assert!(
        receiver
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "a request got through an untrusted TLS handshake"
    );
    gw.stop().await;
}
