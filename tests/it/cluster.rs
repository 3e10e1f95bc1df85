//! Limits that hold for the cluster, through the built binary: three instances on one store
//! together let a tenant's decisions reach its webhook at the tenant's rate, not three times
//! it, and when one instance dies its share goes back to the others. Loopback only; every
//! load is paced and bounded, every process killed on every path.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::{free_port, Daemon};
use crate::support::*;

/// The tenant's `decisions_per_second`.
const LIMIT: u32 = 20;

/// One instance's configuration: the tenant limited to [`LIMIT`] decisions and deliveries a
/// second, its breakers opening after three failures, the
/// registry read every 500 ms (the PostgreSQL lines bring their own heartbeat).
fn instance_toml(port: u16, state_dir: &Path, hooks: &str, storage: &Storage) -> String {
    let beat = match storage.backend {
        Backend::Sqlite => "heartbeat_ms = 500",
        Backend::Postgres => "",
    };
    storage.apply(&format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{dir}"

[logging]
level = "warn"

[storage]
min_free_bytes = 0
{beat}

[delivery]
breaker_failures = 3
breaker_open_ms = 60000

[[tenants]]
id = "acme"
webhook_url = "{hooks}"
webhook_secret = "{SECRET}"
decisions_per_second = {LIMIT}
deliveries_per_second = {LIMIT}
"#,
        dir = state_dir.display()
    ))
}

/// A receiver that answers every decision with the customer's answer and notes when each
/// decision arrived.
async fn decision_receiver() -> (Receiver, Arc<Mutex<Vec<Instant>>>) {
    let receiver = Receiver::start().await;
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let seen = arrived.clone();
    let answer = fixture("voicenter/responses/call.json");
    receiver.answer(move |hook| {
        if hook.json["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("decision."))
        {
            seen.lock().expect("arrivals").push(Instant::now());
            Reply::ok(answer.clone())
        } else {
            Reply::ok("")
        }
    });
    (receiver, arrived)
}

/// A decision request on a new call `n`.
fn decision(n: usize) -> String {
    json!({
        "METHOD": "GET_IVR_ACTION",
        "DATA": {"DID": "0732793256", "CALLER_ID": "0501234567",
                 "IVR_UNIQUE_ID": format!("{n:08x}c1a5c1a5c1a5c1a5c1a5c1a5"),
                 "DTMF": "", "MENU": "-1", "PREVIOUS_MENU": "-1"}
    })
    .to_string()
}

/// Starts three instances on one store; returns them once each has had time to read the
/// registry with all three in it.
async fn three_instances(storage: &Storage, dir: &Path, hooks: &str) -> Vec<Daemon> {
    let state = dir.join("state");
    let mut daemons = Vec::new();
    for name in ["a", "b", "c"] {
        let port = free_port();
        let toml = instance_toml(port, &state, hooks, storage);
        let mut d = Daemon::spawn_with(name, dir, port, &toml, None);
        d.ready().await;
        daemons.push(d);
    }
    // Each has read the registry with all three in it.
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(15);
    for d in &daemons {
        loop {
            let text = match client.get(d.url("/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.lines().any(|l| l == "ivrgate_cluster_instances 3") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw three live instances:\n{text}\n{}",
                d.name,
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    daemons
}

/// Answers to the paced load: when each came back and what it said.
type Answers = Arc<Mutex<Vec<(Instant, String)>>>;

/// Sends decisions on new calls to `base` at `per_second` until `until`, each request on its
/// own task so a slow answer does not slow the pace. Every request must be answered.
fn paced_load(
    base: String,
    per_second: u32,
    until: Instant,
    answers: Answers,
    next_call: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = client();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = Vec::new();
        while Instant::now() < until {
            tick.tick().await;
            let body = decision(next_call.fetch_add(1, Ordering::SeqCst));
            let (client, url, answers, failures) = (
                client.clone(),
                base.clone(),
                answers.clone(),
                failures.clone(),
            );
            sent.push(tokio::spawn(async move {
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let text = match answer {
                    Ok(r) if r.status().as_u16() == 200 => r.text().await.ok(),
                    _ => None,
                };
                match text.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
                    Some(v) => answers
                        .lock()
                        .expect("answers")
                        .push((Instant::now(), v.to_string())),
                    None => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        for task in sent {
            let _ = task.await;
        }
    })
}

/// The answers by text, most frequent first.
fn tally(answers: &[(Instant, String)]) -> Vec<(String, usize)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, text) in answers {
        *counts.entry(text).or_default() += 1;
    }
    let mut counts: Vec<(String, usize)> =
        counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
}

on_both_backends!(4: a_tenants_decision_rate_holds_for_three_instances);

/// One tenant limited to [`LIMIT`] decisions a second, load of 45 a second spread evenly over
/// three instances for 20 s: between 0.9 and 1.1 times `LIMIT * 20` decisions (plus the
/// tenant's burst) reach the webhook; every other request is answered with the fallback.
async fn a_tenants_decision_rate_holds_for_three_instances(backend: Backend) {
    const SECONDS: u64 = 20;
    const PER_INSTANCE: u32 = 15;
    let Some(storage) = Storage::new(backend, "clrate").await else {
        return;
    };
    let (receiver, arrived) = decision_receiver().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let daemons = three_instances(&storage, tmp.path(), &receiver.url("/hooks")).await;
    let answers: Answers = Arc::new(Mutex::new(Vec::new()));
    let (next_call, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    let until = started + Duration::from_secs(SECONDS);
    let loads: Vec<_> = daemons
        .iter()
        .map(|d| {
            paced_load(
                d.url("/voicenter/acme"),
                PER_INSTANCE,
                until,
                answers.clone(),
                next_call.clone(),
                failures.clone(),
            )
        })
        .collect();
    for load in loads {
        tokio::time::timeout(Duration::from_secs(SECONDS + 15), load)
            .await
            .expect("load finished")
            .expect("load");
    }
    let sent = next_call.load(Ordering::SeqCst);
    let received = arrived.lock().expect("arrivals").len();
    let answers = answers.lock().expect("answers").clone();
    let kinds = tally(&answers);
    eprintln!(
        "cluster rate ({backend:?}): {sent} decisions sent over three instances in {:?}, \
         {received} reached the webhook (limit {LIMIT}/s over {SECONDS} s = {}), answers {:?}",
        started.elapsed(),
        LIMIT as u64 * SECONDS,
        kinds.iter().map(|(_, n)| n).collect::<Vec<_>>()
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0, "every request answered");
    assert_eq!(answers.len(), sent);
    let whole = f64::from(LIMIT) * SECONDS as f64;
    assert!(
        received as f64 >= 0.9 * whole && received as f64 <= 1.1 * whole + f64::from(LIMIT),
        "{received} decisions reached the webhook; the cluster-wide limit allows {whole} \
         (within 10 %, plus a burst of {LIMIT})\n{}",
        daemons[0].log_text()
    );
    // The rest got the fallback: two answers, the customer's as often as it was asked.
    assert_eq!(
        kinds.len(),
        2,
        "customer's answer and the fallback: {kinds:?}"
    );
    let customer = &answers[0].1;
    let asked = kinds.iter().find(|(k, _)| k == customer).map(|(_, n)| *n);
    assert_eq!(asked, Some(received), "{kinds:?}");
    assert_eq!(sent - received, answers.len() - received);
}

on_both_backends!(4: a_dead_instances_share_returns_to_the_others);

/// Three instances share the tenant's [`LIMIT`]; one is killed (`kill -9`) under load. Once
/// its liveness lapsed, the two left let the whole limit through between them, not their
/// two thirds: over 10 s between 0.9 and 1.1 times `LIMIT * 10` decisions reach the webhook.
async fn a_dead_instances_share_returns_to_the_others(backend: Backend) {
    const WINDOW: Duration = Duration::from_secs(10);
    let Some(storage) = Storage::new(backend, "cldead").await else {
        return;
    };
    // The heartbeat lapse (PostgreSQL's test lines: 2.5 s) or the lock file (at once), then
    // a registry read (500 ms) and time for the bursts of the resized limiters to drain.
    let settle = match backend {
        Backend::Sqlite => Duration::from_millis(2500),
        Backend::Postgres => Duration::from_millis(4500),
    };
    let (receiver, arrived) = decision_receiver().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut daemons = three_instances(&storage, tmp.path(), &receiver.url("/hooks")).await;
    let answers: Answers = Arc::new(Mutex::new(Vec::new()));
    let (next_call, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Three seconds on all three, then the third dies and the load goes on through the two.
    let before = Instant::now() + Duration::from_secs(3);
    let third = paced_load(
        daemons[2].url("/voicenter/acme"),
        15,
        before,
        answers.clone(),
        next_call.clone(),
        failures.clone(),
    );
    let end = before + settle + WINDOW;
    let loads: Vec<_> = daemons[..2]
        .iter()
        .map(|d| {
            paced_load(
                d.url("/voicenter/acme"),
                22,
                end,
                answers.clone(),
                next_call.clone(),
                failures.clone(),
            )
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(15), third)
        .await
        .expect("load on the third finished")
        .expect("load");
    daemons[2].sigkill().expect("killed");
    let killed = Instant::now();
    for load in loads {
        tokio::time::timeout(Duration::from_secs(40), load)
            .await
            .expect("load finished")
            .expect("load");
    }
    let from = killed + settle;
    let to = from + WINDOW;
    let in_window = arrived
        .lock()
        .expect("arrivals")
        .iter()
        .filter(|t| **t >= from && **t < to)
        .count();
    eprintln!(
        "cluster share after a kill ({backend:?}): {in_window} decisions reached the webhook \
         in the {WINDOW:?} from {settle:?} after the kill (limit {LIMIT}/s = {}; the two \
         instances' old shares alone would be {})",
        u64::from(LIMIT) * WINDOW.as_secs(),
        u64::from(LIMIT) * WINDOW.as_secs() * 2 / 3
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0, "every request answered");
    let whole = f64::from(LIMIT) * WINDOW.as_secs_f64();
    assert!(
        in_window as f64 >= 0.9 * whole && in_window as f64 <= 1.1 * whole,
        "{in_window} decisions reached the webhook in {WINDOW:?}; the two instances left \
         should let the whole {whole} through\n{}",
        daemons[0].log_text()
    );
}

on_both_backends!(4: a_breaker_opened_on_one_instance_holds_on_the_others);

/// The customer's decision URL fails: three failures through instance A open A's breaker
/// (`breaker_failures = 3`), and within a beat B and C leave the URL alone too: their
/// decisions get the fallback at once, without asking it. Before, B did ask.
async fn a_breaker_opened_on_one_instance_holds_on_the_others(backend: Backend) {
    let Some(storage) = Storage::new(backend, "clbreak").await else {
        return;
    };
    let receiver = Receiver::start().await;
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    receiver.answer(move |hook| {
        if hook.json["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("decision."))
        {
            count.fetch_add(1, Ordering::SeqCst);
        }
        Reply::status(500)
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let daemons = three_instances(&storage, tmp.path(), &receiver.url("/hooks")).await;
    let client = client();
    let ask = |d: &Daemon, n: usize| {
        let (client, url) = (client.clone(), d.url("/voicenter/acme"));
        async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(decision(n))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("answered");
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.expect("body")
        }
    };
    // B asks the customer while no breaker is open.
    let fallback = ask(&daemons[1], 0).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1, "B asked the customer");
    for n in 1..=3 {
        assert_eq!(ask(&daemons[0], n).await, fallback);
    }
    assert_eq!(asked.load(Ordering::SeqCst), 4, "A asked three times");
    // A beat on each (500 ms), twice over, then B and C leave the URL alone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in 4..10 {
        assert_eq!(ask(&daemons[1 + n % 2], n).await, fallback);
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        4,
        "B and C asked a URL whose breaker A opened\n{}",
        daemons[1].log_text()
    );
    assert!(
        daemons[1]
            .log_text()
            .contains("circuit breaker opened by another instance"),
        "{}",
        daemons[1].log_text()
    );
}

on_both_backends!(4: a_tenants_delivery_rate_holds_for_three_instances);

/// Three instances deliver one tenant's backlog of CDR events, the tenant limited to
/// [`LIMIT`] deliveries a second: over 10 s, once every instance holds a backlog, between 0.9
/// and 1.1 times `LIMIT * 10` events reach the webhook, not three times that.
async fn a_tenants_delivery_rate_holds_for_three_instances(backend: Backend) {
    const CDRS: usize = 400;
    const WINDOW: Duration = Duration::from_secs(10);
    let Some(storage) = Storage::new(backend, "cldeliv").await else {
        return;
    };
    let receiver = Receiver::start().await;
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let seen = arrived.clone();
    receiver.answer(move |hook| {
        if hook.json["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("call."))
        {
            seen.lock().expect("arrivals").push(Instant::now());
        }
        Reply::ok("")
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let daemons = three_instances(&storage, tmp.path(), &receiver.url("/hooks")).await;
    // The backlog: CDRs of new calls, spread over the three, six at a time.
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let urls: Arc<Vec<String>> = Arc::new(
        daemons
            .iter()
            .map(|d| d.url("/voicenter/acme/cdr"))
            .collect(),
    );
    let senders: Vec<_> = (0..6)
        .map(|_| {
            let (next, urls) = (next.clone(), urls.clone());
            tokio::spawn(async move {
                let client = client();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= CDRS {
                        return;
                    }
                    let call = format!("{n:08x}de11de11de11de11de11de11");
                    let mut acked = false;
                    for _ in 0..50 {
                        let answer = client
                            .post(&urls[n % 3])
                            .header("content-type", "application/json")
                            .body(crate::process::cdr_body(&call, 1))
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                        if let Ok(r) = answer {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            if crate::process::cdr_acked(&v) {
                                acked = true;
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    assert!(acked, "CDR {n} never acknowledged");
                }
            })
        })
        .collect();
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("senders finished")
            .expect("sender");
    }
    let stored = started.elapsed();
    // Measured from when all were stored (every instance then holds a backlog), for 10 s.
    let from = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let arrivals = arrived.lock().expect("arrivals").clone();
    let before = arrivals.iter().filter(|t| **t < from).count();
    let in_window = arrivals
        .iter()
        .filter(|t| **t >= from && **t < from + WINDOW)
        .count();
    eprintln!(
        "cluster delivery rate ({backend:?}): {CDRS} CDRs stored in {stored:?} ({before} \
         delivered meanwhile), {in_window} delivered in the next {WINDOW:?} (limit {LIMIT}/s = {})",
        u64::from(LIMIT) * WINDOW.as_secs()
    );
    assert!(
        CDRS - before > LIMIT as usize * WINDOW.as_secs() as usize + 60,
        "the backlog must outlast the window with more than the instances' prefetch left: \
         {before} of {CDRS} delivered while storing"
    );
    let whole = f64::from(LIMIT) * WINDOW.as_secs_f64();
    assert!(
        in_window as f64 >= 0.9 * whole && in_window as f64 <= 1.1 * whole,
        "{in_window} events delivered in {WINDOW:?}; the cluster-wide limit is {whole}\n{}",
        daemons[0].log_text()
    );
}
