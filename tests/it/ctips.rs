//! The Aspect CTIPS adapter end to end: the built `ivrgate` binary against the CTIPS
//! simulator (`crates/ctips-sim`, strict WCF mode) over loopback HTTP. Startup order, golden
//! requests, no request faulted by the strict simulator and every one valid against the XSDs
//! written from WIRE.md, RouteRequest → decision → RouteSelect, the command API, heartbeats
//! lost and the next server, the primary killed (runtime filters restored, the gap
//! reconciled), SIGTERM's goodbye, two processes on one store (one session, SIGKILL take-over
//! within the lease plus two intervals, a command sent to the non-holder, every acknowledged
//! event delivered with gapless per-entity sequences) and SIGHUP with a new server list.
//! Every wait is bounded; every spawned process is killed on every path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ctips_sim::{Fault, Sim, SimConfig};
use serde_json::{json, Value};

use crate::process::{free_port, Daemon};
use crate::support::*;

const TOKEN: &str = "cb-token-0123456789abcdef";
/// Longest any step below may take.
const STEP: Duration = Duration::from_secs(20);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn ctips_toml(port: u16, state_dir: &Path, webhook_url: &str, servers: &[String]) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{dir}"

[server]
advertise_url = "http://127.0.0.1:{port}"

[logging]
level = "warn"

[storage]
min_free_bytes = 0

[delivery]
retry_schedule_s = [1, 1, 1, 2, 2, 2, 4, 4, 4]
jitter_percent = 0
lease_ms = 3000

[connectors]
lease_ms = 1500
backoff_min_ms = 100
backoff_max_ms = 500

[[tenants]]
id = "acme"
webhook_url = "{webhook_url}"
webhook_secret = "{SECRET}"

[tenants.ctips]
servers = [{servers}]
username = "ivrgate"
password = "env:IVRGATE_TEST_CTIPS_PASSWORD"
callback_token = "{TOKEN}"
heartbeat_interval_s = 1
missed_heartbeats = 2
filters = [{{ type = "service", value = "3" }}, {{ type = "service", value = "5" }}]
user_data_fields = ["acct"]
"#,
        dir = state_dir.display(),
        servers = servers.join(", ")
    )
}

fn spawn(name: &str, dir: &Path, port: u16, toml: &str) -> Daemon {
    // The password comes through env: like every secret.
    std::env::set_var("IVRGATE_TEST_CTIPS_PASSWORD", "pw");
    Daemon::spawn_with(name, dir, port, toml, None)
}

async fn sim() -> Sim {
    Sim::start(SimConfig {
        ports: vec![0, 0],
        strict: true,
        heartbeat_interval: Duration::from_secs(1),
        missed_heartbeats: 3,
        users: vec![("ivrgate".into(), "pw".into())],
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

/// Waits (bounded) until `f` holds; `what` and `log` explain a timeout.
async fn until(what: &str, log: impl Fn() -> String, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pulls webhooks into `hooks` until `f` holds on them (bounded).
async fn hooks_until(
    rx: &Receiver,
    hooks: &mut Vec<Hook>,
    what: &str,
    f: impl Fn(&[Hook]) -> bool,
) {
    let deadline = Instant::now() + STEP;
    while !f(hooks) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for webhooks: {what}; got {:?}",
            types(hooks)
        );
        if let Some(h) = rx.next_within(left.min(Duration::from_millis(200))).await {
            hooks.push(h);
        }
    }
}

fn types(hooks: &[Hook]) -> Vec<String> {
    hooks
        .iter()
        .map(|h| h.json["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn has(hooks: &[Hook], ty: &str) -> bool {
    hooks.iter().any(|h| h.json["type"] == ty)
}

fn signal(daemon: &Daemon, sig: &str) {
    let pid = daemon.child.as_ref().expect("running").id();
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits (bounded) for the process to exit after SIGTERM.
async fn exits(daemon: &mut Daemon) {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(child) = daemon.child.as_mut() {
            if child.try_wait().ok().flatten().is_some() {
                daemon.child = None;
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not stop:\n{}",
            daemon.name,
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request body with the values that change between runs replaced by placeholders.
fn normalized(body: &str) -> String {
    let mut out = body.to_owned();
    for (open, close, placeholder) in [
        ("<a:SessionId>", "</a:SessionId>", "SESSION"),
        ("<a:RequestId>", "</a:RequestId>", "REQUEST"),
        ("<a:CallId>", "</a:CallId>", "CALL"),
        (
            "<a:ClientCallbackURL>",
            "</a:ClientCallbackURL>",
            "CALLBACK",
        ),
    ] {
        if let Some(start) = out.find(open) {
            let from = start + open.len();
            if let Some(len) = out[from..].find(close) {
                out.replace_range(from..from + len, placeholder);
            }
        }
    }
    out
}

/// Compares a request with `tests/fixtures/ctips/{name}`; `IVRGATE_UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, body: &str) {
    let path = root().join("tests/fixtures/ctips").join(name);
    let actual = normalized(body) + "\n";
    if std::env::var_os("IVRGATE_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, &actual).expect("write golden");
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

fn run_python(script: &str, args: &[PathBuf]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(root().join("tests/py").join(script))
        .args(args)
        .output()
        .expect("python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// No request was faulted by the strict simulator (WCF's reading of WIRE.md: order,
/// namespaces, required members, enum names, operation and SOAPAction).
fn assert_no_faults(sim: &Sim) {
    let faulted: Vec<(String, Option<String>)> = sim
        .requests()
        .into_iter()
        .filter(|r| r.fault.is_some())
        .map(|r| (r.op, r.fault))
        .collect();
    assert!(
        faulted.is_empty(),
        "the strict simulator faulted {faulted:?}"
    );
}

/// Every request the simulator got is valid against the XSDs (lxml).
fn validate_requests(sim: &Sim, dir: &Path) {
    let mut files = Vec::new();
    for r in sim.requests() {
        let f = dir.join(format!("req-{:04}-{}.xml", r.seq, r.op));
        std::fs::write(&f, &r.body).expect("write request");
        files.push(f);
    }
    assert!(!files.is_empty());
    let (ok, out) = run_python("ctips_validate.py", &files);
    assert!(ok, "requests not valid against the XSDs:\n{out}");
}

/// Every webhook verifies and matches its JSON Schema.
fn validate_hooks(hooks: &[Hook], dir: &Path) {
    let mut by_schema: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (i, h) in hooks.iter().enumerate() {
        assert!(h.verifies(), "signature of webhook {i}");
        let ty = h.json["type"].as_str().unwrap_or("?");
        let schema = if ty.starts_with("decision.") {
            format!("{ty}.json")
        } else if ty.starts_with("ctips.") {
            "event.ctips.json".to_owned()
        } else {
            format!("event.{ty}.json")
        };
        let f = dir.join(format!("hook-{i:04}-{ty}.json"));
        std::fs::write(&f, &h.body).expect("write hook");
        by_schema.entry(schema).or_default().push(f);
    }
    for (schema, files) in by_schema {
        let mut args = vec![
            PathBuf::from("--schemas"),
            root().join("docs/schemas"),
            PathBuf::from(&schema),
        ];
        args.extend(files);
        let (ok, out) = run_python("validate_schemas.py", &args);
        assert!(ok, "webhooks not valid against {schema}:\n{out}");
    }
}

/// Per entity (`call_id`), the sequence numbers seen, sorted and without repeats (delivery is
/// at least once, so repeats are allowed).
fn seqs_by_entity(hooks: &[Hook]) -> BTreeMap<String, Vec<u64>> {
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for h in hooks.iter().filter(|h| h.json["data"]["seq"].is_u64()) {
        seqs.entry(h.json["data"]["call_id"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(h.json["data"]["seq"].as_u64().unwrap_or(0));
    }
    for list in seqs.values_mut() {
        list.sort_unstable();
        list.dedup();
    }
    seqs
}

/// Whether every entity's sequence numbers seen so far are 1..=n. Deliveries run
/// concurrently and are retried (docs/webhooks.md, Ordering), so a later event can arrive
/// before an earlier one: a test waits for this before asserting it.
fn gapless(hooks: &[Hook]) -> bool {
    seqs_by_entity(hooks)
        .values()
        .all(|list| list.iter().copied().eq(1..=list.len() as u64))
}

/// Per entity (`call_id`), the sequence numbers seen are 1..=n without a gap (repeats are
/// allowed: delivery is at least once).
fn assert_gapless(hooks: &[Hook]) -> usize {
    let seqs = seqs_by_entity(hooks);
    for (entity, list) in &seqs {
        let expected: Vec<u64> = (1..=list.len() as u64).collect();
        assert_eq!(list, &expected, "sequence of {entity} has a gap");
    }
    seqs.len()
}

/// The acknowledged events (contract, top-level CallId or 0, as the simulator logs them) that
/// no webhook carries yet: each acknowledgement needs a delivered webhook of its own with the
/// same `ctips_event` and `vendor_fields.CallId` (repeated deliveries count once).
fn undelivered(acked: &[(String, i64)], hooks: &[Hook]) -> Vec<(String, i64)> {
    let mut delivered: BTreeMap<(String, i64), BTreeSet<String>> = BTreeMap::new();
    for h in hooks {
        let Some(event) = h.json["data"]["ctips_event"].as_str() else {
            continue;
        };
        let call = h.json["data"]["vendor_fields"]["CallId"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        delivered
            .entry((event.to_owned(), call))
            .or_default()
            .insert(h.json["data"]["event_id"].as_str().unwrap_or("").to_owned());
    }
    let mut wanted: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for key in acked {
        *wanted.entry(key.clone()).or_default() += 1;
    }
    wanted
        .into_iter()
        .filter(|(key, n)| delivered.get(key).map_or(0, BTreeSet::len) < *n)
        .map(|(key, _)| key)
        .collect()
}

fn route_answer(rx: &Receiver) {
    rx.answer(|hook| {
        if hook.json["type"] == "decision.route_request" {
            Reply::ok(r#"{"action":"enqueue","queue":"4","attach":{"acct":"42"}}"#)
        } else {
            Reply::ok("")
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctips_session_routes_commands_failover_and_goodbye_through_the_binary() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let rx = Receiver::start().await;
    route_answer(&rx);
    let sim = sim().await;
    let port = free_port();
    let state = dir.join("state");
    let toml = ctips_toml(port, &state, &rx.url("/hook"), &sim.urls());
    let mut daemon = spawn("ctips-a", dir, port, &toml);
    daemon.ready().await;
    let log = || daemon.log_text();
    until("session online with its snapshot", log, || {
        sim.sessions().iter().any(|s| s.online && s.server == 0)
            && sim.requests().iter().any(|r| r.op == "Snapshot")
    })
    .await;
    // Startup order.
    let ops: Vec<String> = sim.requests().iter().map(|r| r.op.clone()).collect();
    assert_eq!(
        ops[..9],
        [
            "OpenConnection",
            "AddMessageClass",
            "AddMessageClass",
            "AddMessageClass",
            "AddMessageClass",
            "AddFilter",
            "AddFilter",
            "OnLine",
            "Snapshot"
        ]
    );
    let callbacks = sim.callbacks();
    assert_eq!(
        callbacks.first().map(|c| c.op.as_str()),
        Some("StartSession")
    );
    let session = sim
        .sessions()
        .into_iter()
        .find(|s| s.online)
        .expect("session");
    assert!(session
        .callback_url
        .starts_with(&format!("http://127.0.0.1:{port}/ctips/acme/{TOKEN}/")));
    golden(
        "open_connection.xml",
        &sim.requests()
            .iter()
            .find(|r| r.op == "OpenConnection")
            .expect("open")
            .body,
    );
    let mut hooks = Vec::new();
    hooks_until(&rx, &mut hooks, "online", |h| {
        has(h, "ctips.session.online")
    })
    .await;

    // A routed call: decision.route_request, RouteSelect, RouteUsed linked to the decision.
    let call = sim.inbound_call_with_data(
        3,
        "0501234567",
        "1800",
        Some(10),
        vec![("acct".into(), "41".into())],
    );
    hooks_until(&rx, &mut hooks, "route used", |h| {
        has(h, "ctips.route.used")
    })
    .await;
    let decision = hooks
        .iter()
        .find(|h| h.json["type"] == "decision.route_request")
        .expect("decision");
    assert_eq!(
        decision.json["data"]["correlation"]["CallId"],
        json!(call.to_string())
    );
    assert_eq!(decision.json["data"]["call_data"]["acct"], json!("41"));
    let deadline = decision.json["data"]["deadline_ms"]
        .as_u64()
        .expect("deadline");
    assert!(
        deadline <= 8_500,
        "RouteTimeout 10 s less the 1.5 s margin: {deadline}"
    );
    let used = hooks
        .iter()
        .find(|h| h.json["type"] == "ctips.route.used")
        .expect("used");
    assert_eq!(
        used.json["data"]["decision_id"],
        decision.json["data"]["decision_id"]
    );
    assert_eq!(used.json["data"]["late"], json!(false));
    let select = sim
        .requests()
        .into_iter()
        .find(|r| r.op == "RouteSelect")
        .expect("select");
    golden("route_select.xml", &select.body);

    // The command API: log an agent in, then MakeCall.
    let client = client();
    let login = client
        .post(daemon.url("/api/acme/ctips/agents/login?wait_ms=5000"))
        .json(&json!({"login_name": "agent1", "station_id": "4001", "init_state": "Idle"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let login: Value = login.json().await.expect("json");
    assert_eq!(
        login["event"]["type"],
        json!("ctips.agent.login_state"),
        "{login}"
    );
    let make = client
        .post(daemon.url("/api/acme/ctips/calls"))
        .json(&json!({"agent": "agent1", "service_id": 3, "destination": "+15550100"}))
        .send()
        .await
        .expect("make call");
    assert_eq!(make.status().as_u16(), 200, "{:?}", make.text().await);
    golden(
        "make_call.xml",
        &sim.requests()
            .iter()
            .find(|r| r.op == "MakeCall")
            .expect("MakeCall")
            .body,
    );
    let session_view: Value = client
        .get(daemon.url("/api/acme/ctips/session"))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert_eq!(session_view["online"], json!(true), "{session_view}");
    assert_eq!(session_view["held_here"], json!(true));
    // The configured filters show, not only runtime ones (none were added here).
    assert_eq!(
        session_view["filters"],
        json!([
            {"type": "FT_SERVICE_ID", "value": "3"},
            {"type": "FT_SERVICE_ID", "value": "5"}
        ]),
        "{session_view}"
    );
    assert_eq!(session_view["runtime_filters"], json!([]));

    // Heartbeats stop: lost after 2 intervals, online again on the next server within two
    // more, with the filters restored and a Snapshot.
    sim.set_fault(0, Fault::StopHeartbeats)
        .await
        .expect("fault");
    hooks_until(&rx, &mut hooks, "lost then online again", |h| {
        let lost = h
            .iter()
            .position(|x| x.json["type"] == "ctips.session.lost");
        lost.is_some_and(|i| {
            h[i..]
                .iter()
                .any(|x| x.json["type"] == "ctips.session.online")
        })
    })
    .await;
    let online = hooks
        .iter()
        .rev()
        .find(|h| h.json["type"] == "ctips.session.online")
        .expect("online");
    let gap = online.json["data"]["gap_ms"].as_u64().expect("gap_ms");
    assert!(
        gap <= 2_000,
        "online again within two heartbeat intervals, not {gap} ms"
    );
    assert_eq!(online.json["data"]["server"], json!(sim.url(1)));
    let backup = sim
        .sessions()
        .into_iter()
        .find(|s| s.online && s.server == 1)
        .expect("backup");
    assert_eq!(backup.filters.len(), 2);
    until(
        "snapshot on the backup",
        || daemon.log_text(),
        || {
            sim.requests()
                .iter()
                .any(|r| r.server == 1 && r.op == "Snapshot")
        },
    )
    .await;

    // SIGTERM: OffLine and CloseConnection on the session's server.
    signal(&daemon, "TERM");
    exits(&mut daemon).await;
    let last: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.server == 1)
        .map(|r| r.op)
        .collect();
    assert_eq!(
        last[last.len() - 2..],
        ["OffLine", "CloseConnection"],
        "{last:?}"
    );
    hooks.extend(rx.drain(Duration::from_millis(500)).await);
    validate_requests(&sim, dir);
    assert_no_faults(&sim);
    validate_hooks(&hooks, dir);
    assert!(assert_gapless(&hooks) >= 3);
}

on_both_backends!(4: two_binaries_hold_one_session_take_over_after_sigkill_and_reload_servers);

async fn two_binaries_hold_one_session_take_over_after_sigkill_and_reload_servers(
    backend: Backend,
) {
    let Some(storage) = Storage::new(backend, "ctips_two").await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let rx = Receiver::start().await;
    route_answer(&rx);
    let sim = sim().await;
    let state = dir.join("state");
    let (pa, pb) = (free_port(), free_port());
    let mut a = spawn(
        "ctips-a",
        dir,
        pa,
        &storage.apply(&ctips_toml(pa, &state, &rx.url("/hook"), &sim.urls())),
    );
    a.ready().await;
    let mut b = spawn(
        "ctips-b",
        dir,
        pb,
        &storage.apply(&ctips_toml(pb, &state, &rx.url("/hook"), &sim.urls())),
    );
    b.ready().await;
    let logs = || String::new();
    until("one session online", logs, || {
        sim.sessions().iter().any(|s| s.online)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let online: Vec<_> = sim.sessions().into_iter().filter(|s| s.online).collect();
    assert_eq!(
        online.len(),
        1,
        "two processes never hold two sessions: {online:?}"
    );
    let holder_port = if online[0].callback_url.contains(&format!(":{pa}/")) {
        pa
    } else {
        pb
    };
    let (holder, other) = if holder_port == pa {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    // A command sent to the instance that does not hold the session is carried out.
    let r = client()
        .post(other.url("/api/acme/ctips/agents/login"))
        .json(&json!({"login_name": "agent2", "station_id": "4002", "init_state": "Idle"}))
        .send()
        .await
        .expect("login via the non-holder");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    assert!(sim.requests().iter().any(|r| r.op == "LoginAgent"));

    // Events acknowledged, then the holder is killed: everything acknowledged is delivered,
    // per-entity sequences without gaps, and the other instance takes over.
    let mut calls = Vec::new();
    for i in 0..5 {
        let call = sim.inbound_call(3, &format!("050000000{i}"), "1800", Some(10));
        calls.push(call);
    }
    until(
        "call events acknowledged",
        || holder.log_text(),
        || {
            sim.callbacks()
                .iter()
                .filter(|c| {
                    c.op == "PublishCTIEvent"
                        && c.ok
                        && c.event.as_deref() == Some("CTICallStarted")
                })
                .count()
                >= 5
        },
    )
    .await;
    sim.hangup(calls[0]);
    // What CTIPS saw acknowledged before the kill: each must reach the customer.
    let acked: Vec<(String, i64)> = sim
        .callbacks()
        .into_iter()
        .filter(|c| c.op == "PublishCTIEvent" && c.ok)
        .map(|c| (c.event.unwrap_or_default(), c.call_id))
        .collect();
    // Up to the kill, one session was ever opened: the other process never held one too.
    let opened = sim
        .requests()
        .into_iter()
        .filter(|r| r.op == "OpenConnection")
        .map(|r| (r.status, r.fault))
        .collect::<Vec<_>>();
    assert_eq!(
        opened,
        [(200, None)],
        "two processes never hold two sessions"
    );
    let killed_at = std::time::SystemTime::now();
    holder.sigkill();
    let other_port = other.port;
    until(
        "the other instance holds the session",
        || other.log_text(),
        || {
            sim.sessions()
                .iter()
                .any(|s| s.online && s.callback_url.contains(&format!(":{other_port}/")))
        },
    )
    .await;
    // Within the lease (1.5 s) and two heartbeat intervals (2 s) of the SIGKILL, as the
    // simulator saw the new session go OnLine.
    let taken_over = sim
        .sessions()
        .into_iter()
        .find(|s| s.online && s.callback_url.contains(&format!(":{other_port}/")))
        .expect("new session");
    let online_at = sim
        .requests()
        .into_iter()
        .find(|r| r.op == "OnLine" && r.body.contains(&taken_over.id))
        .expect("OnLine of the new session")
        .at_ms;
    let killed_ms = killed_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let took = online_at.saturating_sub(killed_ms);
    assert!(
        took <= 3_500,
        "the other instance went OnLine {took} ms after the SIGKILL (lease 1.5 s + 2 × 1 s)"
    );
    let mut hooks = Vec::new();
    hooks_until(&rx, &mut hooks, "every acknowledged event delivered", |h| {
        // Deliveries interrupted by the SIGKILL are retried by the other instance and
        // may arrive after later ones: wait for every event acknowledged before the kill
        // and for no hole in any call's sequence.
        undelivered(&acked, h).is_empty() && gapless(h)
    })
    .await;
    assert!(
        acked.iter().filter(|(e, _)| e == "CTICallStarted").count() >= 5,
        "{acked:?}"
    );
    assert_gapless(&hooks);

    // SIGHUP with a changed server list: the session moves to the remaining server.
    let on = sim
        .sessions()
        .into_iter()
        .find(|s| s.online && s.callback_url.contains(&format!(":{other_port}/")))
        .expect("session")
        .server;
    let moved = sim.url(1 - on);
    let config = dir.join(format!("{}.toml", other.name));
    std::fs::write(
        &config,
        storage.apply(&ctips_toml(other_port, &state, &rx.url("/hook"), &[moved])),
    )
    .expect("rewrite");
    signal(other, "HUP");
    until(
        "session reopened on the new server",
        || other.log_text(),
        || {
            sim.sessions().iter().any(|s| {
                s.online
                    && s.server == 1 - on
                    && s.callback_url.contains(&format!(":{other_port}/"))
            })
        },
    )
    .await;
    signal(other, "TERM");
    exits(other).await;
    let ops: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.server == 1 - on)
        .map(|r| r.op)
        .collect();
    assert_eq!(
        ops[ops.len() - 2..],
        ["OffLine", "CloseConnection"],
        "{ops:?}"
    );
    hooks.extend(rx.drain(Duration::from_millis(500)).await);
    assert_gapless(&hooks);
    validate_requests(&sim, dir);
    assert_no_faults(&sim);
}

/// RouteSelect goes out before RouteTimeout whether the customer answers, is slow, answers
/// nonsense or is down (the tenant's fallback, RouteToDefault, at once); a RouteRequest
/// published twice for the same call makes one decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_select_beats_route_timeout_for_fine_slow_invalid_and_down_customers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        if hook.json["type"] != "decision.route_request" {
            return Reply::ok("");
        }
        match hook.json["data"]["from"].as_str().unwrap_or("") {
            "1111" => Reply::ok(r#"{"action":"enqueue","queue":"4"}"#),
            "2222" => {
                Reply::ok(r#"{"action":"enqueue","queue":"4"}"#).after(Duration::from_secs(10))
            }
            "3333" => Reply::ok(r#"{"action":"hangup"}"#),
            _ => Reply::status(503),
        }
    });
    let sim = sim().await;
    let port = free_port();
    let toml = ctips_toml(port, &dir.join("state"), &rx.url("/hook"), &sim.urls());
    let mut daemon = spawn("ctips-route", dir, port, &toml);
    daemon.ready().await;
    until(
        "online",
        || daemon.log_text(),
        || {
            sim.sessions().iter().any(|s| s.online)
                && sim.requests().iter().any(|r| r.op == "Snapshot")
        },
    )
    .await;
    // RouteTimeout 3 s: the decision deadline is 3000 - 1500 = 1500 ms.
    let calls: Vec<(i64, &str)> = ["1111", "2222", "3333", "4444"]
        .into_iter()
        .map(|ani| (sim.inbound_call(3, ani, "1800", Some(3)), ani))
        .collect();
    let mut hooks = Vec::new();
    hooks_until(&rx, &mut hooks, "four routes used", |h| {
        h.iter()
            .filter(|x| x.json["type"] == "ctips.route.used")
            .count()
            >= 4
    })
    .await;
    for (call, ani) in &calls {
        let used = hooks
            .iter()
            .find(|h| {
                h.json["type"] == "ctips.route.used"
                    && h.json["data"]["correlation"]["CallId"] == json!(call.to_string())
            })
            .unwrap_or_else(|| panic!("no RouteUsed for {ani}"));
        assert_eq!(
            used.json["data"]["late"],
            json!(false),
            "{ani}: {}",
            used.json
        );
        assert_eq!(
            used.json["data"]["vendor_fields"]["RouteStatus"],
            json!("RouteSuccess"),
            "{ani}: RouteSelect was in time"
        );
        let expected = if *ani == "1111" {
            "RouteToService"
        } else {
            "RouteToDefault"
        };
        assert_eq!(
            used.json["data"]["vendor_fields"]["RouteType"],
            json!(expected),
            "{ani}"
        );
    }
    assert!(!has(&hooks, "ctips.route.rejected"));
    // The same RouteRequest again (CTIPS resending it): no second decision.
    let first = hooks
        .iter()
        .find(|h| {
            h.json["type"] == "ctips.route.requested"
                && h.json["data"]["correlation"]["CallId"] == json!(calls[0].0.to_string())
        })
        .expect("requested");
    let seq: i64 = first.json["data"]["correlation"]["CallSequenceId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("seq");
    let epoch = sim
        .sessions()
        .into_iter()
        .find(|s| s.online)
        .expect("session")
        .callback_url;
    let events = dir.join("dup.json");
    std::fs::write(
        &events,
        serde_json::to_vec(&json!([{"event": "CTIRouteRequest", "fields": {
            "EventCategory": "EventCategoryRoute", "EventType": "RouteRequest",
            "CallId": calls[0].0, "CallSequenceId": seq, "ServiceId": 3, "RouteTimeout": 3,
            "CallInfo": {"ANI": "1111", "DNIS": "1800"}}}]))
        .expect("json"),
    )
    .expect("write");
    let (ok, out) = run_python("ctips_publish.py", &[PathBuf::from(&epoch), events]);
    assert!(ok, "zeep publish: {out}");
    hooks.extend(rx.drain(Duration::from_millis(700)).await);
    let decisions = hooks
        .iter()
        .filter(|h| {
            h.json["type"] == "decision.route_request"
                && h.json["data"]["correlation"]["CallId"] == json!(calls[0].0.to_string())
        })
        .count();
    assert_eq!(
        decisions, 1,
        "a repeated RouteRequest makes no second decision"
    );
    let selects = sim
        .requests()
        .iter()
        .filter(|r| r.op == "RouteSelect")
        .count();
    assert_eq!(selects, 4);
    signal(&daemon, "TERM");
    exits(&mut daemon).await;
    validate_hooks(&hooks, dir);
}

/// A callback naming an epoch this instance does not hold is refused with a fault, and the
/// operation its body names never becomes a metrics label: each name would be a new series
/// on `/metrics` (finding F5 of the `ctips` fuzz target; its input is the fixture).
#[tokio::test]
async fn a_stale_callback_names_no_metrics_label_from_its_body() {
    let input = std::fs::read_to_string(
        root().join("tests/fixtures/fuzz/ctips/stale-callback-names-its-operation"),
    )
    .expect("fixture");
    let mut lines = input.splitn(3, '\n');
    let (content_type, epoch, body) = (
        lines.next().expect("content type"),
        lines.next().expect("epoch"),
        lines.next().expect("body"),
    );
    let rx = Receiver::start().await;
    // Nothing listens there: the connector never holds a session, so every epoch is stale.
    let server = format!("http://127.0.0.1:{}/CTIPortalService", free_port());
    let gw = Gateway::start(
        &rx.url("/hook"),
        &format!(
            "[tenants.ctips]\nservers = [\"{server}\"]\nusername = \"ivrgate\"\n\
             password = \"pw\"\ncallback_token = \"{TOKEN}\"\n"
        ),
    )
    .await;
    let path = format!("/ctips/acme/{TOKEN}/{epoch}");
    for body in [body.to_owned(), body.replace("Anything", "Op-0123456789")] {
        let (status, _, answer) = gw.post(&path, content_type, body).await;
        assert_eq!(status, 500, "{answer}");
        assert!(answer.contains("InvalidSessionId"), "{answer}");
    }
    let (status, metrics) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        !metrics.contains("Anything") && !metrics.contains("Op-0123456789"),
        "a metrics label names what the request chose:\n{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ivrgate_requests_total{adapter="ctips",method="unknown",outcome="stale"} 2"#
        ),
        "{metrics}"
    );
    gw.stop().await;
}

/// Milliseconds since the UNIX epoch of a webhook's `timestamp` (RFC 3339).
fn timestamp_ms(hook: &Hook) -> i64 {
    let text = hook.json["timestamp"].as_str().unwrap_or("");
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {text:?}: {e}"));
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The simulator's control API (`docs/ctips-sim.md`): a JSON request, its JSON answer.
async fn control(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = client().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("control API");
    assert_eq!(response.status().as_u16(), 200, "control API {path}");
    response.json().await.expect("control API json")
}

/// What the simulator's `GET /state` says the online session on `server` registered: its
/// categories and its filters (`FieldType=FieldValue`).
fn registered(state: &Value, server: u64) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let session = state["sessions"]
        .as_array()?
        .iter()
        .find(|s| s["server"] == json!(server) && s["online"] == json!(true))?;
    let classes = session["classes"]
        .as_array()?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let filters = session["filters"]
        .as_array()?
        .iter()
        .map(|f| {
            format!(
                "{}={}",
                f[0].as_str().unwrap_or("?"),
                f[1].as_str().unwrap_or("?")
            )
        })
        .collect();
    Some((classes, filters))
}

fn call_hook<'a>(hooks: &'a [Hook], ty: &str, call: i64) -> Option<&'a Hook> {
    hooks.iter().find(|h| {
        h.json["type"] == ty && h.json["data"]["correlation"]["CallId"] == json!(call.to_string())
    })
}

/// The primary CTIPS server dies with ivrgate's session on it, after a filter was added at
/// run time through the command API. The binary declares the session lost after
/// `interval × missed` without a Heartbeat, opens one on the backup within two intervals of
/// that, registers every category and filter again (the runtime one too, as the simulator's
/// control API shows), takes a Snapshot, and reconciles it: a call that started while no
/// session was up arrives as `ctips.call.started` (`reconciled`) then `ctips.snapshot.call`
/// (`new`), a call that ended meanwhile as
/// `ctips.call.ended` (`reconciled`), every entity's sequence without a gap. The lost and
/// online events carry the gap's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_killed_backup_restores_runtime_filters_and_reconciles_the_gap() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let rx = Receiver::start().await;
    route_answer(&rx);
    let sim = std::sync::Arc::new(sim().await);
    let ctl = ctips_sim::control::serve(sim.clone(), 0)
        .await
        .expect("control API");
    let ctl = format!("http://{ctl}");
    let port = free_port();
    let toml = ctips_toml(port, &dir.join("state"), &rx.url("/hook"), &sim.urls());
    let mut daemon = spawn("ctips-failover", dir, port, &toml);
    daemon.ready().await;
    until(
        "session online on the primary with its snapshot",
        || daemon.log_text(),
        || {
            sim.sessions().iter().any(|s| s.online && s.server == 0)
                && sim.requests().iter().any(|r| r.op == "Snapshot")
        },
    )
    .await;
    let mut hooks = Vec::new();
    hooks_until(&rx, &mut hooks, "first online", |h| {
        has(h, "ctips.session.online")
    })
    .await;

    // A filter added at run time: service 4, which the configured filters (3, 5) leave out.
    let added = client()
        .put(daemon.url("/api/acme/ctips/session/filters/service/4"))
        .send()
        .await
        .expect("add filter");
    assert_eq!(added.status().as_u16(), 200, "{:?}", added.text().await);
    let state = control(&ctl, reqwest::Method::GET, "/state", None).await;
    let (_, filters) = registered(&state, 0).expect("primary session");
    assert!(filters.contains("FT_SERVICE_ID=4"), "{filters:?}");

    // A call on service 4 reaches the customer through the runtime filter; it will end while
    // no session is up.
    let ends = control(
        &ctl,
        reqwest::Method::POST,
        "/calls",
        Some(json!({"service": 4, "ani": "0507000001", "dnis": "1800"})),
    )
    .await["call_id"]
        .as_i64()
        .expect("call_id");
    hooks_until(&rx, &mut hooks, "the first call delivered", |h| {
        call_hook(h, "ctips.call.delivered", ends).is_some()
    })
    .await;

    // The primary dies. While no session is up, one call starts and the other ends.
    let killed = control(
        &ctl,
        reqwest::Method::POST,
        "/servers/0/fault",
        Some(json!({"kind": "kill"})),
    )
    .await;
    assert_eq!(killed["ok"], json!(true));
    let starts = control(
        &ctl,
        reqwest::Method::POST,
        "/calls",
        Some(json!({"service": 4, "ani": "0507000002", "dnis": "1800"})),
    )
    .await["call_id"]
        .as_i64()
        .expect("call_id");
    let hung_up = control(
        &ctl,
        reqwest::Method::POST,
        &format!("/calls/{ends}/hangup"),
        None,
    )
    .await;
    assert_eq!(hung_up["found"], json!(true));
    let state = control(&ctl, reqwest::Method::GET, "/state", None).await;
    assert!(
        registered(&state, 0).is_none() && registered(&state, 1).is_none(),
        "both calls changed while no session was up: {}",
        state["sessions"]
    );

    // Lost, then online on the backup.
    hooks_until(&rx, &mut hooks, "lost, then online on the backup", |h| {
        let lost = h
            .iter()
            .position(|x| x.json["type"] == "ctips.session.lost");
        lost.is_some_and(|i| {
            h[i..]
                .iter()
                .any(|x| x.json["type"] == "ctips.session.online")
        })
    })
    .await;
    let lost = hooks
        .iter()
        .find(|h| h.json["type"] == "ctips.session.lost")
        .expect("lost")
        .clone();
    let online = hooks
        .iter()
        .rev()
        .find(|h| h.json["type"] == "ctips.session.online")
        .expect("online")
        .clone();
    assert_eq!(lost.json["data"]["server"], json!(sim.url(0)));
    assert_eq!(online.json["data"]["server"], json!(sim.url(1)));
    // The lost event's gap so far: no Heartbeat for interval × missed (1 s × 2).
    let silent = lost.json["data"]["silent_ms"].as_i64().expect("silent_ms");
    assert!(
        silent >= 1_900,
        "declared lost after {silent} ms of silence"
    );
    assert!(
        lost.json["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Heartbeat")),
        "{}",
        lost.json
    );
    // Online again within two heartbeat intervals (2 s) of the loss being declared: as
    // ivrgate measured it, and as the backup saw it (its OnLine request against the time
    // the lost event was recorded).
    let gap = online.json["data"]["gap_ms"].as_i64().expect("gap_ms");
    assert!((0..=2_000).contains(&gap), "gap_ms {gap}");
    assert_eq!(
        online.json["data"]["lost_reason"], lost.json["data"]["reason"],
        "the online event says what ended the previous session"
    );
    let backup_online = sim
        .requests()
        .into_iter()
        .find(|r| r.server == 1 && r.op == "OnLine")
        .expect("OnLine on the backup");
    let after_loss = backup_online.at_ms as i64 - timestamp_ms(&lost);
    assert!(
        after_loss <= 2_000,
        "the backup went OnLine {after_loss} ms after the loss was declared"
    );

    // Every category and filter is registered on the backup, the runtime one too.
    let state = control(&ctl, reqwest::Method::GET, "/state", None).await;
    let (classes, filters) = registered(&state, 1).expect("backup session");
    assert_eq!(
        classes,
        [
            "EventCategoryAgent",
            "EventCategoryCall",
            "EventCategoryRoute",
            "EventCategorySystem"
        ]
        .map(str::to_owned)
        .into(),
        "{}",
        state["sessions"]
    );
    assert_eq!(
        filters,
        ["FT_SERVICE_ID=3", "FT_SERVICE_ID=4", "FT_SERVICE_ID=5"]
            .map(str::to_owned)
            .into(),
        "{}",
        state["sessions"]
    );

    // The Snapshot, and the gap reconciled.
    hooks_until(&rx, &mut hooks, "the gap reconciled", |h| {
        call_hook(h, "ctips.snapshot.call", starts).is_some()
            && call_hook(h, "ctips.call.ended", ends).is_some()
    })
    .await;
    let snapshots: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.server == 1)
        .map(|r| r.op)
        .collect();
    assert!(snapshots.contains(&"Snapshot".to_owned()), "{snapshots:?}");
    let snapshot = call_hook(&hooks, "ctips.snapshot.call", starts).expect("snapshot");
    assert_eq!(
        snapshot.json["data"]["new"],
        json!(true),
        "{}",
        snapshot.json
    );
    assert_eq!(snapshot.json["data"]["seq"], json!(2), "{}", snapshot.json);
    // The start nobody saw is reconciled as the missed end is: one ctips.call.started,
    // first in the call's sequence, marked reconciled, from the snapshot.
    let started: Vec<&Value> = hooks
        .iter()
        .map(|h| &h.json)
        .filter(|j| {
            j["type"] == "ctips.call.started"
                && j["data"]["call_id"] == snapshot.json["data"]["call_id"]
        })
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    let started = started[0];
    assert_eq!(started["data"]["reconciled"], json!(true), "{started}");
    assert_eq!(started["data"]["seq"], json!(1), "{started}");
    assert!(started["data"].get("new").is_none(), "{started}");
    assert_eq!(
        started["data"]["snapshot_request_id"], snapshot.json["data"]["request_id"],
        "{started}"
    );
    let ended = call_hook(&hooks, "ctips.call.ended", ends).expect("ended");
    assert_eq!(
        ended.json["data"]["reconciled"],
        json!(true),
        "{}",
        ended.json
    );
    let before: Vec<u64> = hooks
        .iter()
        .filter(|h| h.json["data"]["call_id"] == ended.json["data"]["call_id"])
        .filter_map(|h| h.json["data"]["seq"].as_u64())
        .collect();
    assert_eq!(
        ended.json["data"]["seq"].as_u64(),
        before.iter().max().copied(),
        "the reconciled end is the call's last event: {before:?}"
    );

    // The runtime filter works on the backup: a new call on service 4 reaches the customer.
    let later = control(
        &ctl,
        reqwest::Method::POST,
        "/calls",
        Some(json!({"service": 4, "ani": "0507000003", "dnis": "1800"})),
    )
    .await["call_id"]
        .as_i64()
        .expect("call_id");
    hooks_until(
        &rx,
        &mut hooks,
        "a call on service 4 through the backup",
        |h| call_hook(h, "ctips.call.delivered", later).is_some(),
    )
    .await;

    // Deliveries run concurrently and are retried: wait until every sequence seen is whole.
    hooks_until(&rx, &mut hooks, "every sequence complete", gapless).await;
    signal(&daemon, "TERM");
    exits(&mut daemon).await;
    hooks.extend(rx.drain(Duration::from_millis(500)).await);
    assert!(assert_gapless(&hooks) >= 4);
    assert_no_faults(&sim);
    validate_requests(&sim, dir);
    validate_hooks(&hooks, dir);
}

/// The neutral originate on CTIPS (issue 14): MakeCall for the agent `from` to `to`, against
/// the simulator through the binary. A retry with the same Idempotency-Key answers the first
/// answer again and sends no second MakeCall; fields MakeCall cannot carry are refused by
/// name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn originate_is_make_call_and_an_idempotency_key_places_one_call() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let rx = Receiver::start().await;
    route_answer(&rx);
    let sim = sim().await;
    let port = free_port();
    let state = dir.join("state");
    let toml = ctips_toml(port, &state, &rx.url("/hook"), &sim.urls());
    let mut daemon = spawn("ctips-originate", dir, port, &toml);
    daemon.ready().await;
    let log = || daemon.log_text();
    until("session online", log, || {
        sim.sessions().iter().any(|s| s.online)
    })
    .await;
    let client = client();
    // The simulator's session is up before ivrgate has stored it as online: wait for the
    // command API to say so.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let view: Value = client
            .get(daemon.url("/api/acme/ctips/session"))
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("json");
        if view["online"] == json!(true) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never online: {view}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let login = client
        .post(daemon.url("/api/acme/ctips/agents/login?wait_ms=5000"))
        .json(&json!({"login_name": "agent1", "station_id": "4001", "init_state": "Idle"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200, "{:?}", login.text().await);
    let originate = |body: Value, key: Option<&'static str>| {
        let mut req = client
            .post(daemon.url("/api/acme/ctips/originate"))
            .json(&body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        async move {
            let resp = req.send().await.expect("originate");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }
    };
    let body = json!({"from": "agent1", "to": "+15550100", "service_id": 3});
    let (status, first) = originate(body.clone(), Some("crm-991")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["op"], json!("MakeCall"), "{first}");
    let (status, again) = originate(body.clone(), Some("crm-991")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["idempotent_replay"], json!(true), "{again}");
    assert_eq!(again["command_id"], first["command_id"]);
    let make_calls: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.op == "MakeCall")
        .collect();
    assert_eq!(
        make_calls.len(),
        1,
        "one call for two requests with one key"
    );
    assert!(make_calls[0].body.contains("+15550100"));
    for (field, value) in [
        ("announcement", json!("promo")),
        ("attached", json!({"a": "1"})),
    ] {
        let mut b = body.clone();
        b[field] = value;
        let (status, refused) = originate(b, None).await;
        assert_eq!(status, 422, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(field)),
            "{refused}"
        );
    }
    assert_eq!(
        sim.requests().iter().filter(|r| r.op == "MakeCall").count(),
        1
    );
    signal(&daemon, "TERM");
    exits(&mut daemon).await;
}
