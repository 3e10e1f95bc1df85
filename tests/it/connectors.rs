//! Connectors and their lease, through the real server with a test adapter (no shipped
//! adapter has connectors yet): one holder across gateways on one store, takeover when the
//! holder stops, dies or stops renewing, restarts with backoff, SIGHUP, shutdown order, and
//! callbacks that authenticate themselves.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ivrgate::clock::ManualClock;
use ivrgate::store::sqlite::SqliteStore;
use ivrgate::store::{Backend, LeaseAcquire, LeaseKey};
use ivrgate_adapter::{
    Adapter, BoxFuture, ConnectorCtxRef, ConnectorExit, ConnectorHealth, ConnectorSpec,
    DecisionPoint, Gateway as _, Handled, Inbound, OutboundRequest, ParsedSettings, StopReason,
};

use crate::support::{config_toml, Gateway, WAIT};

/// What the test adapter saw, in order: `start <epoch> <fingerprint>`, `stop <reason>`,
/// `fail`.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    fingerprint: Mutex<String>,
    fail_first: AtomicU32,
    /// Where the connector says goodbye on `Shutdown`, through the core's platform client.
    goodbye_url: Mutex<Option<String>>,
}

impl Log {
    fn push(&self, line: String) {
        self.lines.lock().expect("log").push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log").clone()
    }

    fn starts(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with("start"))
            .count()
    }
}

struct TestAdapter {
    name: &'static str,
    log: Arc<Log>,
}

fn adapter(name: &'static str) -> (&'static TestAdapter, Arc<Log>) {
    let log = Arc::new(Log::default());
    *log.fingerprint.lock().expect("fp") = "fp1".into();
    let a: &'static TestAdapter = Box::leak(Box::new(TestAdapter {
        name,
        log: log.clone(),
    }));
    (a, log)
}

impl Adapter for TestAdapter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decision_points(&self) -> &'static [DecisionPoint] {
        &[]
    }

    fn handle<'a>(
        &'a self,
        _gateway: &'a dyn ivrgate_adapter::Gateway,
        request: Inbound,
    ) -> BoxFuture<'a, Handled> {
        Box::pin(async move {
            let body = format!("path={}", request.path.segments().join("/"));
            Handled {
                response: http::Response::new(Bytes::from(body)),
                method: "test".into(),
                outcome: "ok",
                vendor_call_id: None,
            }
        })
    }

    fn connectors(&self, tenant: &str, _settings: &ParsedSettings) -> Vec<ConnectorSpec> {
        vec![ConnectorSpec {
            name: format!("session-{tenant}"),
            fingerprint: self.log.fingerprint.lock().expect("fp").clone(),
            tls: Default::default(),
            request_timeout: Duration::from_secs(5),
        }]
    }

    fn run_connector(&self, ctx: ConnectorCtxRef) -> BoxFuture<'static, ConnectorExit> {
        let log = self.log.clone();
        Box::pin(async move {
            log.push(format!("start {} {}", ctx.epoch(), ctx.spec().fingerprint));
            if log
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                log.push("fail".into());
                return ConnectorExit::Failed("platform refused the session".into());
            }
            ctx.set_health(ConnectorHealth {
                connected: true,
                server: Some("primary".into()),
                session_id: Some(format!("sess-{}", ctx.epoch())),
                last_heartbeat_ms: Some(0),
                sessions_opened: 1,
                detail: "online".into(),
            });
            let reason = ctx.stopped().await;
            log.push(format!("stop {reason:?}"));
            let goodbye = log.goodbye_url.lock().expect("url").clone();
            if let (StopReason::Shutdown, Some(url)) = (reason, goodbye) {
                let sent = ctx
                    .http()
                    .post(OutboundRequest {
                        url,
                        headers: vec![("Content-Type".into(), "text/plain".into())],
                        body: Bytes::from_static(b"bye"),
                        timeout: None,
                    })
                    .await;
                match sent {
                    Ok(answer) => log.push(format!(
                        "goodbye {} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    )),
                    Err(e) => log.push(format!("goodbye failed: {e}")),
                }
            }
            ConnectorExit::Stopped
        })
    }

    fn authenticates_itself(&self, sub_path: &str) -> bool {
        sub_path.starts_with("/cb/")
    }
}

const CONNECTORS: &str =
    "\n[connectors]\nlease_ms = 600\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n";

async fn start(dir: &Path, a: &'static TestAdapter, extra: &str) -> Gateway {
    let toml = config_toml(dir, "http://127.0.0.1:9/hook", extra);
    Gateway::start_with(dir, &toml, Arc::new(ManualClock::default()), vec![a]).await
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn held(gw: &Gateway, adapter: &str) -> Option<u64> {
    gw.handle.core.held_epoch("acme", adapter, "session-acme")
}

fn key(adapter: &str) -> LeaseKey {
    LeaseKey {
        tenant: "acme".into(),
        adapter: adapter.into(),
        name: "session-acme".into(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Two gateways on one store: only one runs the connector; when it stops (stopping its
/// connector with `Shutdown` and releasing the lease) the other runs it with the next epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_gateways_runs_a_connector_and_the_other_takes_over_on_shutdown() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, log) = adapter("conn-a");
    let first = start(tmp.path(), a, CONNECTORS).await;
    until("the first gateway holds the lease", || {
        held(&first, "conn-a").is_some()
    })
    .await;
    let second = start(tmp.path(), a, CONNECTORS).await;
    // Several renewal periods: the second never runs it while the first holds it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(held(&first, "conn-a"), Some(1));
    assert_eq!(held(&second, "conn-a"), None);
    assert_eq!(log.lines(), ["start 1 fp1"]);
    let (_, admin) = second.get("/admin/connectors").await;
    let admin: serde_json::Value = serde_json::from_str(&admin).expect("json");
    let row = &admin["connectors"][0];
    assert_eq!(row["held_here"], false, "{admin}");
    assert_eq!(
        row["holder"],
        first.handle.core.instance.as_str(),
        "{admin}"
    );
    let first_id = first.handle.core.instance.clone();
    first.stop().await;
    // (The second gateway may have started it already: the lease was released before the
    // first one's drain.)
    assert_eq!(log.lines()[..2], ["start 1 fp1", "stop Shutdown"]);
    let lease = second
        .handle
        .core
        .lease("acme", "conn-a", "session-acme")
        .await
        .expect("lease");
    // Released on shutdown (or already taken by the second gateway).
    assert!(
        lease.as_ref().is_some_and(|l| l.holder != first_id),
        "{lease:?}"
    );
    until("the second gateway takes over", || {
        held(&second, "conn-a") == Some(2)
    })
    .await;
    assert_eq!(log.lines()[2], "start 2 fp1");
    let (_, metrics) = second.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"ivrgate_connector_epoch{tenant="acme",adapter="conn-a",connector="session-acme"} 2"#
        ),
        "{metrics}"
    );
    second.stop().await;
}

/// A holder whose process died (its owner lock is free) loses the lease at once, long before
/// it lapses; a live holder that stops renewing loses it when it lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_replaced_at_once_and_a_silent_one_after_its_lease() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, log) = adapter("conn-b");
    {
        // Another "process" on the store takes the lease for a minute, then dies.
        let other = SqliteStore::open(tmp.path(), 16).expect("open");
        let got = other
            .acquire_lease(key("conn-b"), other.owner_id().into(), now_ms(), 60_000)
            .await
            .expect("acquire");
        assert!(matches!(got, LeaseAcquire::Acquired { epoch: 1, .. }));
        // Dropped without closing: its lock file stays, unlocked (what kill -9 leaves).
        std::mem::drop(other);
    }
    let gw = start(
        tmp.path(),
        a,
        "\n[connectors]\nlease_ms = 60000\nbackoff_min_ms = 50\n",
    )
    .await;
    until("the dead holder's lease is taken", || {
        held(&gw, "conn-b") == Some(2)
    })
    .await;
    assert_eq!(log.lines(), ["start 2 fp1"]);
    gw.stop().await;

    // A live holder (its lock held) that stops renewing: taken once its lease lapses.
    let (b, log) = adapter("conn-c");
    let silent = SqliteStore::open(tmp.path(), 16).expect("open");
    let got = silent
        .acquire_lease(key("conn-c"), silent.owner_id().into(), now_ms(), 1_000)
        .await
        .expect("acquire");
    assert!(matches!(got, LeaseAcquire::Acquired { epoch: 1, .. }));
    let gw = start(tmp.path(), b, CONNECTORS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        held(&gw, "conn-c"),
        None,
        "a live holder's lease is not taken early"
    );
    until("the lapsed lease is taken", || {
        held(&gw, "conn-c") == Some(2)
    })
    .await;
    assert_eq!(log.lines(), ["start 2 fp1"]);
    // The old holder's renewal with its stale epoch is refused.
    let renewed = silent
        .renew_lease(key("conn-c"), silent.owner_id().into(), 1, now_ms(), 1_000)
        .await
        .expect("renew");
    assert_eq!(renewed, None);
    gw.stop().await;
    silent.close();
}

/// The lease taken from under a running connector (another instance took it over) stops it
/// with `LeaseLost` at the next renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_whose_lease_is_taken_stops_with_lease_lost() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, log) = adapter("conn-d");
    let gw = start(tmp.path(), a, CONNECTORS).await;
    until("held", || held(&gw, "conn-d") == Some(1)).await;
    // Another owner forces the lease (as if this instance had been partitioned long enough
    // for it to lapse): the store is told the lease lapsed by a clock far ahead.
    let other = SqliteStore::open(tmp.path(), 16).expect("open");
    let got = other
        .acquire_lease(
            key("conn-d"),
            other.owner_id().into(),
            now_ms() + 3_600_000,
            3_600_000 * 2,
        )
        .await
        .expect("acquire");
    assert!(matches!(got, LeaseAcquire::Acquired { epoch: 2, .. }));
    until("the connector stops", || log.lines().len() == 2).await;
    assert_eq!(log.lines(), ["start 1 fp1", "stop LeaseLost"]);
    until("not held", || held(&gw, "conn-d").is_none()).await;
    gw.stop().await;
    other.close();
}

/// A failing connector is restarted after a backoff, counted, while the lease stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_connector_is_restarted_with_backoff_and_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, log) = adapter("conn-e");
    log.fail_first.store(3, Ordering::SeqCst);
    let gw = start(tmp.path(), a, CONNECTORS).await;
    until("it runs after three failures", || log.starts() == 4).await;
    assert_eq!(
        log.lines(),
        [
            "start 1 fp1",
            "fail",
            "start 1 fp1",
            "fail",
            "start 1 fp1",
            "fail",
            "start 1 fp1"
        ]
    );
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"ivrgate_connector_restarts_total{tenant="acme",adapter="conn-e",connector="session-acme"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ivrgate_connector_up{tenant="acme",adapter="conn-e",connector="session-acme"} 1"#
        ),
        "{metrics}"
    );
    let (_, admin) = gw.get("/admin/connectors").await;
    let admin: serde_json::Value = serde_json::from_str(&admin).expect("json");
    let row = &admin["connectors"][0];
    assert_eq!(row["restarts"], 3, "{admin}");
    assert_eq!(row["session_id"], "sess-1", "{admin}");
    assert_eq!(row["detail"], "online", "{admin}");
    gw.stop().await;
}

/// SIGHUP (a reload): an unchanged fingerprint leaves the connector alone; a changed one
/// stops it with `Reconfigured` and starts it with the new spec; a removed tenant stops it
/// and releases its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_a_changed_connector_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, log) = adapter("conn-f");
    let gw = start(tmp.path(), a, CONNECTORS).await;
    until("held", || log.starts() == 1).await;
    let toml = config_toml(tmp.path(), "http://127.0.0.1:9/hook", CONNECTORS);
    let parse =
        |text: &str| ivrgate::config::Config::parse(text, Path::new("test.toml")).expect("parse");
    gw.handle.reload(parse(&toml)).expect("reload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log.lines(), ["start 1 fp1"], "unchanged: left alone");
    *log.fingerprint.lock().expect("fp") = "fp2".into();
    gw.handle.reload(parse(&toml)).expect("reload");
    until("restarted", || log.starts() == 2).await;
    assert_eq!(
        log.lines(),
        ["start 1 fp1", "stop Reconfigured", "start 1 fp2"]
    );
    // A new advertise_url restarts it too.
    let moved = format!("{toml}\n[server]\nadvertise_url = \"https://gw1.example.net:8443/\"\n");
    gw.handle.reload(parse(&moved)).expect("reload");
    until("restarted again", || log.starts() == 3).await;
    // The tenant goes: the connector stops and its lease is released.
    let other_tenant = moved.replace("id = \"acme\"", "id = \"other\"");
    gw.handle.reload(parse(&other_tenant)).expect("reload");
    until("the other tenant's starts", || log.starts() == 4).await;
    until("the old tenant's stops", || log.lines().len() == 7).await;
    let mut lines = log.lines();
    // The old tenant's connector stopping and the new tenant's starting run side by side.
    lines[5..].sort();
    assert_eq!(
        lines,
        [
            "start 1 fp1",
            "stop Reconfigured",
            "start 1 fp2",
            "stop Reconfigured", // advertise_url
            "start 1 fp2",
            "start 1 fp2",       // the new tenant's own connector
            "stop Reconfigured", // the removed tenant's
        ]
    );
    // Released once its connector returned (bounded wait).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lease = gw
            .handle
            .core
            .store
            .read_lease(key("conn-f"))
            .await
            .expect("read");
        if lease.as_ref().map(|l| l.holder.is_none()) == Some(true) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not released: {lease:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
}

/// A request whose adapter says it authenticates itself skips the tenant's credentials
/// (Basic here), while the address allowlist still applies; other paths still need them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_authenticating_callback_skips_credentials_but_not_the_allowlist() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, _log) = adapter("conn-g");
    let extra = "[tenants.inbound]\nbasic_auth = { username = \"u\", password = \"p4ssw0rd\" }\n";
    let gw = start(tmp.path(), a, extra).await;
    let (status, _, body) = gw.post("/conn-g/acme/cb/token/1", "text/xml", "x").await;
    assert_eq!((status, body.as_str()), (200, "path=cb/token/1"));
    let (status, _, _) = gw.post("/conn-g/acme/other", "text/xml", "x").await;
    assert_eq!(status, 401);
    gw.stop().await;

    let tmp = tempfile::tempdir().expect("tmp");
    let extra = "[tenants.inbound]\nallow_ips = [\"192.0.2.0/24\"]\n";
    let gw = start(tmp.path(), a, extra).await;
    let (status, _, _) = gw.post("/conn-g/acme/cb/token/1", "text/xml", "x").await;
    assert_eq!(status, 403);
    gw.stop().await;
}

/// Shutdown stops the connector with `Shutdown` before the drain (its goodbye, sent through
/// the core's client to the gateway's own listener, still gets an answer) and releases its
/// lease, so another instance takes it at once with the next epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_connectors_before_the_drain_and_releases_their_leases() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, log) = adapter("conn-h");
    let gw = start(tmp.path(), a, CONNECTORS).await;
    *log.goodbye_url.lock().expect("url") = Some(gw.url("/conn-h/acme/cb/bye"));
    until("held", || log.starts() == 1).await;
    let store = SqliteStore::open(tmp.path(), 16).expect("open");
    gw.stop().await;
    assert_eq!(
        log.lines(),
        ["start 1 fp1", "stop Shutdown", "goodbye 200 path=cb/bye"]
    );
    let lease = store.read_lease(key("conn-h")).await.expect("read");
    assert_eq!(lease.map(|l| (l.holder, l.epoch)), Some((None, 1)));
    // Released: another instance takes it at once, with the next epoch.
    let got = store
        .acquire_lease(key("conn-h"), store.owner_id().into(), now_ms(), 60_000)
        .await
        .expect("acquire");
    assert!(
        matches!(got, LeaseAcquire::Acquired { epoch: 2, .. }),
        "{got:?}"
    );
    store.close();
}
