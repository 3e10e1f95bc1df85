//! Shared test helpers: a gateway on 127.0.0.1:0 with its own state directory, a webhook
//! receiver that records what it gets and answers as scripted, and every wait bounded.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ivrgate::clock::{ManualClock, SharedClock};
use ivrgate::config::Config;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const WAIT: Duration = Duration::from_secs(10);

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub json: Value,
}

impl Hook {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Verifies the Standard Webhooks signature against the test secret.
    pub fn verifies(&self) -> bool {
        let key = ivrgate::signing::SigningKey::from_whsec(SECRET).expect("test secret");
        let ts: i64 = self.header("webhook-timestamp").parse().unwrap_or(0);
        ivrgate::signing::verify(
            &key,
            self.header("webhook-signature"),
            self.header("webhook-id"),
            ts,
            &self.body,
        )
    }
}

/// What the receiver answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
    /// Held until the gate gives a permit (at most `WAIT`), then answered.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
            headers: Vec::new(),
            gate: None,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: String::new(),
            delay: Duration::ZERO,
            headers: Vec::new(),
            gate: None,
        }
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Answers only once `gate` gives a permit (`add_permits(1)`), or after `WAIT`: the test
    /// decides when the request in flight ends.
    pub fn held(mut self, gate: &Arc<tokio::sync::Semaphore>) -> Reply {
        self.gate = Some(gate.clone());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Behaviour = Arc<dyn Fn(&Hook) -> Reply + Send + Sync>;

/// A webhook receiver on 127.0.0.1:0.
pub struct Receiver {
    pub addr: SocketAddr,
    /// `http`, or `https` for [`Receiver::start_tls`].
    scheme: &'static str,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Hook>>,
    behaviour: Arc<Mutex<Behaviour>>,
    _stop: oneshot::Sender<()>,
}

impl Receiver {
    /// Starts a receiver that answers decisions with `{"action":"default"}` and events with 200.
    pub async fn start() -> Receiver {
        Receiver::start_with(None).await
    }

    /// The same receiver over TLS with the given server configuration (certificates made
    /// by the test).
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Receiver {
        Receiver::start_with(Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let behaviour: Arc<Mutex<Behaviour>> = Arc::new(Mutex::new(Arc::new(|_: &Hook| {
            Reply::ok(r#"{"action":"default"}"#)
        })));
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let b = behaviour.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = &mut stop_rx => return,
                };
                let tx = tx.clone();
                let b = b.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        let b = b.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let hook = Hook {
                                path,
                                headers: parts.headers,
                                json: serde_json::from_slice(&body).unwrap_or(Value::Null),
                                body,
                            };
                            let behaviour = b.lock().expect("behaviour").clone();
                            let reply = behaviour(&hook);
                            let _ = tx.send(hook);
                            if let Some(gate) = &reply.gate {
                                if let Ok(Ok(permit)) =
                                    tokio::time::timeout(WAIT, gate.acquire()).await
                                {
                                    permit.forget();
                                }
                            }
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            let mut response =
                                hyper::Response::new(Full::new(Bytes::from(reply.body)));
                            *response.status_mut() =
                                http::StatusCode::from_u16(reply.status).expect("status");
                            response.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/json"),
                            );
                            for (k, v) in reply.headers {
                                response.headers_mut().insert(
                                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                                    http::HeaderValue::from_str(&v).expect("value"),
                                );
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(tls) => {
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(WAIT, tls.accept(stream)).await
                            else {
                                return;
                            };
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            scheme,
            rx: tokio::sync::Mutex::new(rx),
            behaviour,
            _stop: stop_tx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Sets how the receiver answers from now on.
    pub fn answer(&self, f: impl Fn(&Hook) -> Reply + Send + Sync + 'static) {
        *self.behaviour.lock().expect("behaviour") = Arc::new(f);
    }

    /// The next request, or a panic after `WAIT`.
    pub async fn next(&self) -> Hook {
        self.next_within(WAIT)
            .await
            .expect("the receiver got nothing in time")
    }

    pub async fn next_within(&self, wait: Duration) -> Option<Hook> {
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }

    /// The next request whose payload `type` starts with `prefix`.
    pub async fn next_of(&self, prefix: &str) -> Hook {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let hook = self
                .next_within(left)
                .await
                .unwrap_or_else(|| panic!("no {prefix} webhook in time"));
            if hook.json["type"].as_str().unwrap_or("").starts_with(prefix) {
                return hook;
            }
        }
    }

    /// Everything that arrives within `quiet` of the previous request.
    pub async fn drain(&self, quiet: Duration) -> Vec<Hook> {
        let mut out = Vec::new();
        while let Some(h) = self.next_within(quiet).await {
            out.push(h);
        }
        out
    }
}

/// The TOML for one tenant `acme` sending everything to `webhook_url`, plus `extra` lines
/// appended at the end of the tenant table (or top-level tables after it).
pub fn config_toml(state_dir: &Path, webhook_url: &str, extra: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
state_dir = "{dir}"

[storage]
min_free_bytes = 0

[delivery]
retry_schedule_s = [1, 2, 4]
jitter_percent = 0

[[tenants]]
id = "acme"
webhook_url = "{webhook_url}"
webhook_secret = "{SECRET}"
{extra}
"#,
        dir = state_dir.display()
    )
}

/// A gateway running in this process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub clock: Arc<ManualClock>,
    pub handle: ivrgate::Handle,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
    /// The PostgreSQL database it runs on, if any, kept while it runs.
    pub db: Option<Arc<PgDb>>,
}

impl Gateway {
    /// Starts a gateway with a fresh state directory.
    pub async fn start(webhook_url: &str, extra: &str) -> Gateway {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let toml = config_toml(&dir, webhook_url, extra);
        std::fs::write(dir.join("test.toml"), &toml).expect("write config");
        let mut gw = Gateway::start_in(&dir, &toml, Arc::new(ManualClock::default())).await;
        gw._tmp = Some(tmp);
        gw
    }

    /// Starts a gateway whose configuration text is changed by `edit` first.
    pub async fn start_edited(webhook_url: &str, edit: impl FnOnce(String) -> String) -> Gateway {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let toml = edit(config_toml(&dir, webhook_url, ""));
        std::fs::write(dir.join("test.toml"), &toml).expect("write config");
        let mut gw = Gateway::start_in(&dir, &toml, Arc::new(ManualClock::default())).await;
        gw._tmp = Some(tmp);
        gw
    }

    /// Starts a gateway on an existing directory with the given configuration text.
    pub async fn start_in(dir: &Path, toml: &str, clock: Arc<ManualClock>) -> Gateway {
        Gateway::start_with(dir, toml, clock, Vec::new()).await
    }

    /// [`Gateway::start_in`] serving test adapters beside the built-in ones.
    pub async fn start_with(
        dir: &Path,
        toml: &str,
        clock: Arc<ManualClock>,
        adapters: Vec<&'static dyn ivrgate_adapter::Adapter>,
    ) -> Gateway {
        let mut every_adapter = ivrgate::adapters::all().to_vec();
        every_adapter.extend(adapters.iter().copied());
        let config = Config::parse(toml, Path::new("test.toml"))
            .expect("parse")
            .validate(&every_adapter)
            .expect("valid config");
        // The configured address with a free port: 0.0.0.0 makes a non-loopback listener
        // (reached over 127.0.0.1).
        let listen = std::net::SocketAddr::new(config.raw.listen.ip(), 0);
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        let mut addr = listener.local_addr().expect("addr");
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (handle_tx, handle_rx) = oneshot::channel();
        let shared: SharedClock = clock.clone();
        let join = tokio::spawn(ivrgate::run(
            config,
            listener,
            async move {
                let _ = stop_rx.await;
            },
            ivrgate::Options {
                clock: shared,
                adapters,
                observer: None,
            },
            move |h| {
                let _ = handle_tx.send(h);
            },
        ));
        let handle = tokio::time::timeout(WAIT, handle_rx)
            .await
            .expect("gateway started in time")
            .expect("gateway handle");
        Gateway {
            addr,
            dir: dir.to_owned(),
            clock,
            handle,
            stop: Some(stop_tx),
            join: Some(join),
            _tmp: None,
            db: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful stop; returns the state directory guard so a restart can reuse it.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            tokio::time::timeout(Duration::from_secs(30), join)
                .await
                .expect("gateway stopped in time")
                .expect("gateway task")
                .expect("gateway result");
        }
        self._tmp.take()
    }

    /// POSTs a body; returns status, content type and body text.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String, String) {
        let request = client()
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        exchange(request).await
    }

    /// GETs a path; returns status, content type and body text.
    pub async fn get_full(&self, path: &str) -> (u16, String, String) {
        exchange(client().get(self.url(path))).await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = client().get(self.url(path)).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }
}

async fn exchange(request: reqwest::RequestBuilder) -> (u16, String, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A seed fixture from tests/fixtures.
pub fn fixture(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Replaces values that change on every run (ids, and times near now) with placeholders, for
/// golden files. Vendor times (the seed's 2012 and 2014 epochs) are kept.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("event_id" | "call_id" | "decision_id", Value::String(_)) => {
                            Value::String(format!("<{k}>"))
                        }
                        (_, Value::String(s)) if is_recent_time(s) => {
                            Value::String(format!("<{k}>"))
                        }
                        _ => normalize(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// An RFC 3339 time within two days of now: produced by this run, not by the vendor.
fn is_recent_time(text: &str) -> bool {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => (at - time::OffsetDateTime::now_utc()).abs() < time::Duration::days(2),
        Err(_) => false,
    }
}

/// Compares `actual` with the golden file `tests/fixtures/{path}`; with `UPDATE_GOLDEN=1` in
/// the environment, writes it instead.
pub fn check_golden(path: &str, actual: &Value) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let pretty = serde_json::to_string_pretty(&normalize(actual)).expect("json") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(&full, &pretty).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&full).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            full.display()
        )
    });
    assert_eq!(pretty, expected, "golden file {path} differs");
}

/// Verifies a captured delivery with the Standard Webhooks reference library for Python
/// (`standardwebhooks` from PyPI, installed by .ci/run): a real customer's verifier.
pub fn verify_with_python(hook: &Hook) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("hook.json");
    let doc = serde_json::json!({
        "secret": SECRET,
        "headers": {
            "webhook-id": hook.header("webhook-id"),
            "webhook-timestamp": hook.header("webhook-timestamp"),
            "webhook-signature": hook.header("webhook-signature"),
        },
        "body": String::from_utf8_lossy(&hook.body),
    });
    std::fs::write(&file, doc.to_string()).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/verify_webhook.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "standardwebhooks refused the delivery: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where a test's gateway keeps its state: the store tests and the integration tests that
/// touch storage run the same body on both (see [`on_both_backends!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own on the test PostgreSQL, dropped (its connections first) with the
/// last handle.
pub struct PgDb {
    db: Option<ivrgate::store::postgres::testing::TestDb>,
    /// Its connection string, for a configuration's `storage.url`.
    pub url: String,
}

impl PgDb {
    /// `None` (after a loud message) when no PostgreSQL is reachable outside CI.
    pub async fn create(hint: &str) -> Option<Arc<PgDb>> {
        let db = ivrgate::store::postgres::testing::TestDb::create(hint).await?;
        let url = pg_url(&db);
        Some(Arc::new(PgDb { db: Some(db), url }))
    }

    /// The `[storage]` lines that put a gateway on this database: a pool of 4, and fast
    /// heartbeats, so a killed instance is found dead within seconds.
    pub fn storage_lines(&self) -> String {
        format!(
            "backend = \"postgres\"\nurl = \"{}\"\npool_size = 4\nheartbeat_ms = 500\ninstance_lapse_ms = 2500\n",
            self.url
        )
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            // Dropped inside a test's runtime: drop the database from a thread of its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(db.drop_db());
                }
            })
            .join();
        }
    }
}

/// A test database's connection string in `key=value` form.
pub fn pg_url(db: &ivrgate::store::postgres::testing::TestDb) -> String {
    let c = &db.settings.config;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().unwrap_or("postgres");
    let ssl = match c.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => "disable",
        tokio_postgres::config::SslMode::Require => "require",
        _ => "prefer",
    };
    format!(
        "host={host} port={port} user={user} dbname={} sslmode={ssl}",
        db.name
    )
}

/// A test's storage: the `[storage]` lines for its backend, and the database (PostgreSQL)
/// kept while the test holds this.
#[derive(Clone)]
pub struct Storage {
    pub backend: Backend,
    pub db: Option<Arc<PgDb>>,
}

impl Storage {
    pub fn sqlite() -> Storage {
        Storage {
            backend: Backend::Sqlite,
            db: None,
        }
    }

    /// `None` when the backend is PostgreSQL and no server is reachable outside CI.
    pub async fn new(backend: Backend, hint: &str) -> Option<Storage> {
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDb::create(hint).await?),
        };
        Some(Storage { backend, db })
    }

    /// `toml` (which has a `[storage]` table) with this backend's lines added to it.
    pub fn apply(&self, toml: &str) -> String {
        match &self.db {
            None => toml.to_owned(),
            Some(db) => {
                assert!(
                    toml.contains("[storage]\n"),
                    "no [storage] table in:\n{toml}"
                );
                toml.replacen(
                    "[storage]\n",
                    &format!("[storage]\n{}", db.storage_lines()),
                    1,
                )
            }
        }
    }
}

/// Runs an `async fn(Backend)` test body on SQLite and on PostgreSQL, as two tests
/// (`name::sqlite`, `name::postgres`), on a runtime of `workers` threads (`current`: the
/// current-thread runtime of a plain `#[tokio::test]`).
macro_rules! on_both_backends {
    (current: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            }
        )*
    };
    ($workers:literal: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            }
        )*
    };
}

impl Gateway {
    /// [`Gateway::start`] on `backend`; `None` when it is PostgreSQL and no server is
    /// reachable outside CI.
    pub async fn start_on(backend: Backend, webhook_url: &str, extra: &str) -> Option<Gateway> {
        let storage = Storage::new(backend, "gw").await?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let toml = storage.apply(&config_toml(&dir, webhook_url, extra));
        std::fs::write(dir.join("test.toml"), &toml).expect("write config");
        let mut gw = Gateway::start_in(&dir, &toml, Arc::new(ManualClock::default())).await;
        gw._tmp = Some(tmp);
        gw.db = storage.db;
        Some(gw)
    }
}
