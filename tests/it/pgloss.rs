//! The database lost during load, through the built binary on PostgreSQL: a loopback proxy
//! in front of the test's own database drops every connection (after `pg_terminate_backend`
//! on them, issued directly) and refuses new ones for 10 s while CDRs keep arriving and an
//! OpenScape long-poll waits. Voicenter gets its "try again" answer while the database is
//! gone, never a hang; every CDR acknowledged before, during or after is delivered; new
//! requests succeed afterwards without a restart, and the long-poll is not stuck. The
//! shared server is never restarted: other tests use it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use ivrgate::store::postgres::testing::TestDb;
use ivrgate_wire::{xmlrpc, Limits};

use crate::process::{cdr_acked, cdr_body, free_port, Daemon};
use crate::support::{client, Receiver, SECRET};

/// How long the database is gone.
const OUTAGE: Duration = Duration::from_secs(10);
/// Longest any legacy request may take, database gone or not: the connect timeout (2 s) and
/// the statement timeout (10 s) bound it; the rest is slack for a loaded machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// Longest the gateway may take to store again once the database is back.
const RECOVERY: Duration = Duration::from_secs(30);
/// Longest every acknowledged CDR may take to reach the webhook once the database is back.
const DELIVERY: Duration = Duration::from_secs(40);

/// A listener on `port` that can be bound again while closed connections wait out TIME_WAIT.
fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(64)
}

/// A TCP proxy to `upstream` on `port`. While `up` is false it has no listener (connections
/// are refused) and every connection it carried has been closed.
async fn proxy(port: u16, upstream: String, mut up: watch::Receiver<bool>) {
    loop {
        while !*up.borrow_and_update() {
            if up.changed().await.is_err() {
                return;
            }
        }
        let listener = match bind(port) {
            Ok(l) => l,
            Err(e) => panic!("proxy cannot listen on {port} again: {e}"),
        };
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((mut inbound, _)) = accepted {
                        let upstream = upstream.clone();
                        conns.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        });
                    }
                }
                changed = up.changed() => {
                    if changed.is_err() || !*up.borrow_and_update() {
                        break;
                    }
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        // Aborting a connection's task drops both its sockets: both sides see them closed.
        conns.shutdown().await;
    }
}

/// What one CDR got.
#[derive(Debug)]
struct Sent {
    key: String,
    at: Instant,
    took: Duration,
    outcome: Result<bool, String>,
}

/// Posts CDRs (each its own call) until `stop`, at most `max`.
async fn load(
    worker: usize,
    url: String,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Sent>>>,
    max: usize,
) {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN + Duration::from_secs(10))
        .build()
        .expect("client");
    for i in 0..max {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let key = format!("{:028x}", (worker as u64) << 32 | i as u64 | 0xc0ffee << 40);
        let at = Instant::now();
        let outcome = async {
            let response = http
                .post(&url)
                .header("content-type", "application/json")
                .body(cdr_body(&key, 5))
                .send()
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status().as_u16();
            let text = response.text().await.map_err(|e| format!("body: {e}"))?;
            let answer: Value =
                serde_json::from_str(&text).map_err(|e| format!("HTTP {status} {text:?}: {e}"))?;
            if status == 200 && cdr_acked(&answer) {
                Ok(true)
            } else if status == 200 && answer["err"] == json!(2) {
                Ok(false)
            } else {
                Err(format!("HTTP {status}: {text}"))
            }
        }
        .await;
        log.lock().expect("log").push(Sent {
            key,
            at,
            took: at.elapsed(),
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn acked_since(log: &Mutex<Vec<Sent>>, since: Instant) -> usize {
    log.lock()
        .expect("log")
        .iter()
        .filter(|s| s.at >= since && s.outcome == Ok(true))
        .count()
}

async fn rpc(base: &str, method: &str, params: Value) -> Value {
    let call = xmlrpc::MethodCall {
        method: method.to_owned(),
        params: params
            .as_array()
            .map(|p| p.iter().map(xmlrpc::Value::from_json).collect())
            .unwrap_or_default(),
    };
    let response = client()
        .post(format!("{base}/openscape/acme/6060"))
        .header("content-type", "text/xml")
        .body(xmlrpc::write_call(&call))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("body");
    match xmlrpc::parse_response(&text, &Limits::default()).expect("well-formed XML-RPC") {
        Ok(params) => params
            .first()
            .map(xmlrpc::Value::to_json)
            .unwrap_or(Value::Null),
        Err(fault) => json!({"fault": fault.code, "faultString": fault.message}),
    }
}

fn code(answer: &Value) -> i64 {
    answer["ReturnCode"]
        .as_i64()
        .unwrap_or_else(|| panic!("no ReturnCode in {answer}"))
}

/// A QueryCallStatus long-poll on `call`: how long it took and its answer.
fn long_poll(
    base: String,
    call: String,
    timeout_ms: i64,
) -> tokio::task::JoinHandle<(Duration, Value)> {
    tokio::spawn(async move {
        let t = Instant::now();
        let r = rpc(
            &base,
            "QueryCallStatus",
            json!([call, timeout_ms, ">E", ">P"]),
        )
        .await;
        (t.elapsed(), r)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_lost_during_load() {
    let Some(db) = TestDb::create("it_pgloss").await else {
        return;
    };
    let c = &db.settings.config;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let upstream = format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432));
    let direct = crate::support::pg_url(&db);
    let proxy_port = free_port();
    let proxied = direct
        .replace(&format!("host={host} "), "host=127.0.0.1 ")
        .replace(
            &format!(" port={} ", c.get_ports().first().copied().unwrap_or(5432)),
            &format!(" port={proxy_port} "),
        );
    assert!(proxied.contains(&format!("port={proxy_port}")), "{proxied}");
    let (up, up_rx) = watch::channel(true);
    let proxy_task = tokio::spawn(proxy(proxy_port, upstream, up_rx));

    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let toml = format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"

[logging]
level = "warn"

[storage]
backend = "postgres"
url = "{proxied}"
pool_size = 4
connect_timeout_ms = 2000
statement_timeout_ms = 10000
heartbeat_ms = 500
instance_lapse_ms = 5000

[delivery]
retry_schedule_s = [1, 1, 1, 2, 2, 2, 4, 4, 4]
jitter_percent = 0
lease_ms = 3000

[[tenants]]
id = "acme"
webhook_url = "{hooks}"
webhook_secret = "{SECRET}"

[tenants.openscape]
transit_numbers = ["8800", "8801"]
queues = ["Sales"]
"#,
        state = dir.path().join("var").display(),
        hooks = receiver.url("/hooks"),
    );
    let mut daemon = Daemon::spawn_with("pgloss", dir.path(), port, &toml, None);
    daemon.ready().await;
    let base = daemon.url("");

    // Load: two senders of CDRs, each CDR its own call.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let senders: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(load(
                w,
                daemon.url("/voicenter/acme/cdr"),
                stop.clone(),
                sent.clone(),
                2_000,
            ))
        })
        .collect();
    let deadline = Instant::now() + RECOVERY;
    while acked_since(&sent, start) < 10 {
        assert!(
            Instant::now() < deadline,
            "no CDRs acknowledged before the outage:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An OpenScape call in a queue, its IVR long-polling its status (up to 9 s: the
    // channel's RpcTimeout of 10 s less the margin).
    let a = rpc(&base, "Initialize", json!(["6060", "x", 10000])).await;
    assert_eq!(code(&a), 0, "{a}");
    let info = rpc(
        &base,
        "QueryCallInfo",
        json!(["6060", null, null, null, null, null, null, null, null, "1;"]),
    )
    .await;
    let call = info["CallID"].as_str().expect("CallID").to_owned();
    let e = rpc(
        &base,
        "Enqueue",
        json!([call, 1, "Sales", 10, "", ">E", ">C"]),
    )
    .await;
    assert_eq!(code(&e), 0, "{e}");
    let waiting = long_poll(base.clone(), call.clone(), 60_000);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The database goes: its backends for this database terminated (directly, not through
    // the proxy), then every proxied connection closed and new ones refused.
    let terminated: i64 = {
        let pool = db.settings.pool().expect("pool");
        let admin = pool.get().await.expect("direct connection");
        admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("terminate")
            .get(0)
    };
    up.send_replace(false);
    let down_at = Instant::now();
    assert!(
        terminated >= 1,
        "the gateway had no connection to terminate"
    );

    // The long-poll is answered within its wait (plus slack), not stuck on the lost database.
    let (took, r) = tokio::time::timeout(ANSWER_WITHIN, waiting)
        .await
        .unwrap_or_else(|_| panic!("long-poll stuck:\n{}", daemon.log_text()))
        .expect("task");
    assert!(took < ANSWER_WITHIN, "{took:?}");
    assert!(r["ReturnCode"].is_i64() || r["fault"].is_i64(), "{r}");

    let left = OUTAGE.saturating_sub(down_at.elapsed());
    tokio::time::sleep(left).await;
    up.send_replace(true);
    let up_at = Instant::now();
    daemon_alive(&mut daemon);

    // Stores again without a restart.
    let deadline = up_at + RECOVERY;
    while acked_since(&sent, up_at) < 10 {
        assert!(
            Instant::now() < deadline,
            "nothing acknowledged within {RECOVERY:?} of the database's return:\n{}",
            daemon.log_text()
        );
        daemon_alive(&mut daemon);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        tokio::time::timeout(ANSWER_WITHIN * 2, s)
            .await
            .expect("senders stop")
            .expect("sender");
    }

    // Every answer was an acknowledgement or Voicenter's "try again", in time; while the
    // database was gone (from a second after, to the end), "try again" was answered.
    let sent = std::mem::take(&mut *sent.lock().expect("log"));
    let failures: Vec<_> = sent.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(failures.is_empty(), "{failures:#?}\n{}", daemon.log_text());
    let slow: Vec<_> = sent.iter().filter(|s| s.took >= ANSWER_WITHIN).collect();
    assert!(slow.is_empty(), "{slow:#?}");
    let gone = |s: &&Sent| s.at >= down_at + Duration::from_secs(1) && s.at + s.took <= up_at;
    let retried = sent
        .iter()
        .filter(gone)
        .filter(|s| s.outcome == Ok(false))
        .count();
    assert!(
        retried >= 1,
        "no \"try again\" while the database was gone:\n{}",
        daemon.log_text()
    );
    let acked: BTreeSet<String> = sent
        .iter()
        .filter(|s| s.outcome == Ok(true))
        .map(|s| s.key.clone())
        .collect();
    assert!(acked.len() >= 20, "{}", acked.len());
    eprintln!(
        "pgloss: {} CDRs sent, {} acknowledged, {retried} \"try again\" while the database \
         was gone, {terminated} connections terminated, first acknowledgement {:?} after its \
         return; the long-poll then answered {r} after {took:?}",
        sent.len(),
        acked.len(),
        sent.iter()
            .filter(|s| s.at >= up_at && s.outcome == Ok(true))
            .map(|s| s.at + s.took - up_at)
            .min(),
    );

    // Nothing acknowledged is lost: each reaches the webhook.
    let mut missing = acked.clone();
    let deadline = Instant::now() + DELIVERY;
    while !missing.is_empty() {
        let Some(hook) = receiver.next_within(Duration::from_millis(500)).await else {
            assert!(
                Instant::now() < deadline,
                "{} of {} acknowledged CDRs never delivered, e.g. {:?}:\n{}",
                missing.len(),
                acked.len(),
                missing.iter().next(),
                daemon.log_text()
            );
            continue;
        };
        assert!(hook.verifies());
        if let Some(key) = hook.json["data"]["vendor_fields"]["ivruniqueid"].as_str() {
            missing.remove(key);
        }
        assert!(
            Instant::now() < deadline,
            "{} never delivered",
            missing.len()
        );
    }

    // The OpenScape waiter works again: a long-poll (9 s at most) woken by a command's commit.
    let waiting = long_poll(base.clone(), call.clone(), 60_000);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let response = client()
        .post(format!("{base}/api/acme/openscape/calls/{call}/assign"))
        .json(&json!({"extension": "4711"}))
        .send()
        .await
        .expect("assign");
    assert_eq!(response.status().as_u16(), 200);
    let (took, r) = tokio::time::timeout(ANSWER_WITHIN, waiting)
        .await
        .expect("long-poll answered")
        .expect("task");
    assert_eq!(
        (code(&r), r["Extension"].clone()),
        (2, json!("4711")),
        "{r}"
    );
    assert!(
        took < Duration::from_secs(7),
        "woken by the commit: {took:?}"
    );
    daemon_alive(&mut daemon);

    drop(daemon);
    proxy_task.abort();
    db.drop_db().await;
}

fn daemon_alive(daemon: &mut Daemon) {
    if let Some(status) = daemon
        .child
        .as_mut()
        .and_then(|c| c.try_wait().ok().flatten())
    {
        panic!("ivrgate died ({status}):\n{}", daemon.log_text());
    }
}

/// A TCP proxy to `upstream` on `port` that can hang: while `hung` is true it forwards
/// nothing on the connections it carries and accepts new ones without ever answering (the
/// database neither refuses nor answers). When `hung` turns false again, every connection it
/// held is closed and new ones are carried as before.
async fn hanging_proxy(port: u16, upstream: String, hung: watch::Receiver<bool>) {
    let listener = bind(port).expect("proxy listens");
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                let upstream = upstream.clone();
                let mut hung = hung.clone();
                conns.spawn(async move {
                    let held = *hung.borrow_and_update();
                    if held {
                        // Held open, never answered, closed once the hang ends.
                        let _ = hung.wait_for(|h| !*h).await;
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = async { hung.wait_for(|h| *h).await.is_ok() } => {
                            let _ = hung.wait_for(|h| !*h).await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The database hangs during load (through [`hanging_proxy`]: connections open, nothing
/// answered) for [`OUTAGE`]: every CDR is answered within [`ANSWER_WITHIN`], with Voicenter's
/// "try again" while the database hangs; every acknowledged CDR is delivered; storing resumes
/// once it answers again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_hanging_during_load() {
    let Some(db) = TestDb::create("it_pghang").await else {
        return;
    };
    let c = &db.settings.config;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let pg_port = c.get_ports().first().copied().unwrap_or(5432);
    let upstream = format!("{host}:{pg_port}");
    let direct = crate::support::pg_url(&db);
    let proxy_port = free_port();
    let proxied = direct
        .replace(&format!("host={host} "), "host=127.0.0.1 ")
        .replace(
            &format!(" port={pg_port} "),
            &format!(" port={proxy_port} "),
        );
    assert!(proxied.contains(&format!("port={proxy_port}")), "{proxied}");
    let (hang, hang_rx) = watch::channel(false);
    let proxy_task = tokio::spawn(hanging_proxy(proxy_port, upstream, hang_rx));

    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    // Every store operation answers within 1 s + 2 x 2 s.
    let toml = format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"

[logging]
level = "warn"

[storage]
backend = "postgres"
url = "{proxied}"
pool_size = 4
connect_timeout_ms = 1000
statement_timeout_ms = 2000

[delivery]
retry_schedule_s = [1, 1, 1, 2, 2, 2, 4, 4, 4]
jitter_percent = 0
lease_ms = 3000

[[tenants]]
id = "acme"
webhook_url = "{hooks}"
webhook_secret = "{SECRET}"
"#,
        state = dir.path().join("var").display(),
        hooks = receiver.url("/hooks"),
    );
    let mut daemon = Daemon::spawn_with("pghang", dir.path(), port, &toml, None);
    daemon.ready().await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let senders: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(load(
                w,
                daemon.url("/voicenter/acme/cdr"),
                stop.clone(),
                sent.clone(),
                2_000,
            ))
        })
        .collect();
    let deadline = Instant::now() + RECOVERY;
    while acked_since(&sent, start) < 10 {
        assert!(
            Instant::now() < deadline,
            "no CDRs acknowledged before the hang:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    hang.send_replace(true);
    let hung_at = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    hang.send_replace(false);
    let back_at = Instant::now();
    daemon_alive(&mut daemon);

    let deadline = back_at + RECOVERY;
    while acked_since(&sent, back_at) < 10 {
        assert!(
            Instant::now() < deadline,
            "nothing acknowledged within {RECOVERY:?} of the database answering again:\n{}",
            daemon.log_text()
        );
        daemon_alive(&mut daemon);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        tokio::time::timeout(ANSWER_WITHIN * 2, s)
            .await
            .expect("senders stop")
            .expect("sender");
    }

    let sent = std::mem::take(&mut *sent.lock().expect("log"));
    let failures: Vec<_> = sent.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(failures.is_empty(), "{failures:#?}\n{}", daemon.log_text());
    let slow: Vec<_> = sent.iter().filter(|s| s.took >= ANSWER_WITHIN).collect();
    assert!(slow.is_empty(), "{slow:#?}\n{}", daemon.log_text());
    let during = |s: &&Sent| s.at >= hung_at + Duration::from_secs(1) && s.at + s.took <= back_at;
    let retried = sent
        .iter()
        .filter(during)
        .filter(|s| s.outcome == Ok(false))
        .count();
    assert!(
        retried >= 1,
        "no \"try again\" while the database hung:\n{}",
        daemon.log_text()
    );
    let acked: BTreeSet<String> = sent
        .iter()
        .filter(|s| s.outcome == Ok(true))
        .map(|s| s.key.clone())
        .collect();
    eprintln!(
        "pghang: {} CDRs sent, {} acknowledged, {retried} \"try again\" while the database \
         hung, slowest answer {:?}",
        sent.len(),
        acked.len(),
        sent.iter().map(|s| s.took).max(),
    );

    let mut missing = acked.clone();
    let deadline = Instant::now() + DELIVERY;
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged CDRs never delivered, e.g. {:?}:\n{}",
            missing.len(),
            acked.len(),
            missing.iter().next(),
            daemon.log_text()
        );
        let Some(hook) = receiver.next_within(Duration::from_millis(500)).await else {
            continue;
        };
        assert!(hook.verifies());
        if let Some(key) = hook.json["data"]["vendor_fields"]["ivruniqueid"].as_str() {
            missing.remove(key);
        }
    }
    daemon_alive(&mut daemon);

    drop(daemon);
    proxy_task.abort();
    db.drop_db().await;
}
