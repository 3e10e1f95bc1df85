//! Operating the built binary: the systemd notify protocol and the dead-letter commands.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn ivrgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ivrgate"))
}

/// Kills the child on every path.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tells_systemd_it_is_ready_and_feeds_the_watchdog() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let config = config_toml(dir.path(), "http://127.0.0.1:9/hooks", "");
    std::fs::write(dir.path().join("ivrgate.toml"), config).expect("config");
    let child = Child(
        ivrgate()
            .args(["serve", "--config"])
            .arg(dir.path().join("ivrgate.toml"))
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline
        && !(seen.iter().any(|m: &String| m.contains("READY=1"))
            && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    assert!(
        seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "watchdog not fed every half interval: {seen:?}"
    );
    // SIGTERM: systemd hears STOPPING=1 before the process exits.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        if let Ok(n) = socket.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1");
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_command_line() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::status(503));
    let gw = Gateway::start_edited(&rx.url("/hooks"), |t| {
        t.replace("retry_schedule_s = [1, 2, 4]", "retry_schedule_s = [1]")
    })
    .await;
    let cdr = json!({"caller": "0544444444", "ivruniqueid": "cli-1", "time": 1_700_000_000, "status": "ANSWER"});
    gw.post("/voicenter/acme/cdr", "application/json", cdr.to_string())
        .await;
    let first = rx.next_of("call.cdr").await;
    let event_id = first.header("webhook-id").to_owned();
    gw.clock.advance(Duration::from_secs(2));
    let _ = rx.next_of("call.cdr").await;
    // Wait until the second failure is recorded: the schedule is exhausted.
    let mut dead = false;
    for _ in 0..50 {
        if gw.get("/admin/dead-letters").await.1.contains(&event_id) {
            dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dead, "not dead-lettered");
    let dir = gw.dir.clone();
    let config = dir.join("test.toml");
    let guard = gw.stop().await;

    let listed = ivrgate()
        .args(["dead-letters", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains(&event_id) && listed.contains("attempts=2") && listed.contains("HTTP 503"),
        "{listed}"
    );
    let replayed = ivrgate()
        .args(["replay", "--config"])
        .arg(&config)
        .args(["--event", &event_id])
        .output()
        .expect("run");
    assert!(replayed.status.success());
    assert!(
        String::from_utf8_lossy(&replayed.stdout).starts_with("1 event(s)"),
        "{replayed:?}"
    );

    // The next gateway on the same store delivers it, with the same webhook-id.
    rx.answer(|_| Reply::ok("{}"));
    let toml = std::fs::read_to_string(&config).expect("config");
    let gw = Gateway::start_in(
        &dir,
        &toml,
        std::sync::Arc::new(ivrgate::clock::ManualClock::default()),
    )
    .await;
    let again = rx.next_of("call.cdr").await;
    assert_eq!(again.header("webhook-id"), event_id);
    assert!(again.verifies());
    gw.stop().await;
    drop(guard);
}

#[tokio::test]
async fn the_admin_api_needs_its_token_or_a_direct_local_request() {
    let rx = Receiver::start().await;
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    // No token configured: a direct loopback request is served, a proxied one is not.
    assert_eq!(gw.get("/admin/outbox").await.0, 200);
    let proxied = client()
        .get(gw.url("/admin/outbox"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("request");
    assert_eq!(proxied.status(), 401);
    gw.stop().await;

    let gw = Gateway::start(
        &rx.url("/hooks"),
        "[admin]\ntoken = \"adm_0123456789abcdef\"\n",
    )
    .await;
    assert_eq!(gw.get("/admin/outbox").await.0, 401);
    let with = client()
        .get(gw.url("/admin/outbox"))
        .bearer_auth("adm_0123456789abcdef")
        .send()
        .await
        .expect("request");
    assert_eq!(with.status(), 200);
    let wrong = client()
        .get(gw.url("/admin/outbox"))
        .bearer_auth("adm_0123456789abcdeX")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    gw.stop().await;
}

/// The admin API reads its JSON bodies as every body is read (`web::read_json`): within
/// `server.max_body_bytes`, lenient JSON with the error saying why, none meaning `{}`.
#[tokio::test]
async fn admin_bodies_are_read_like_every_body() {
    let rx = Receiver::start().await;
    let gw = Gateway::start(&rx.url("/hooks"), "[server]\nmax_body_bytes = 64\n").await;
    let (status, _, body) = gw.post("/admin/replay", "application/json", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("json")["replayed"],
        json!(0)
    );
    let (status, _, body) = gw
        .post("/admin/retry", "application/json", "{\"tenant\":")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("body is not JSON"), "{body}");
    let big = format!("{{\"tenant\":\"{}\"}}", "a".repeat(100));
    let (status, _, body) = gw.post("/admin/retry", "application/json", big).await;
    assert_eq!(status, 413, "{body}");
    gw.stop().await;
}

/// Polls `GET path` until `ready` holds for its JSON; panics with the last answer after WAIT.
async fn poll_json(
    gw: &Gateway,
    path: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = gw.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if ready(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{path} never ready: {value}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_admin_api_shows_queues_pages_events_and_retries_now() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::status(503));
    // A five-minute retry: without "retry now" nothing would arrive during this test (the
    // manual clock does not move unless told).
    let gw = Gateway::start_edited(&rx.url("/hooks"), |t| {
        t.replace(
            "retry_schedule_s = [1, 2, 4]",
            "retry_schedule_s = [300, 300]",
        )
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let cdr = json!({"caller": "0544444444", "ivruniqueid": format!("adm-{n}"), "time": 1_700_000_000, "status": "ANSWER"});
        let (status, _, _) = gw
            .post("/voicenter/acme/cdr", "application/json", cdr.to_string())
            .await;
        assert_eq!(status, 200);
        ids.push(rx.next_of("call.cdr").await.header("webhook-id").to_owned());
    }
    // The clock follows real time (plus what the test adds), so ages and waits are read
    // with a margin.
    let secs = |v: &serde_json::Value| v.as_i64().unwrap_or(-1);
    let queues = poll_json(&gw, "/admin/queues", |v| {
        v["queues"][0]["last_error"] == json!("HTTP 503 Service Unavailable")
            && v["queues"][0]["next_attempt_in_s"].as_i64() > Some(200)
    })
    .await;
    let acme = &queues["queues"][0];
    assert_eq!(acme["tenant"], json!("acme"));
    assert_eq!(acme["endpoint"], json!(rx.url("/hooks")));
    assert_eq!(acme["pending"], json!(3));
    assert_eq!(acme["dead"], json!(0));
    assert_eq!(acme["disabled"], json!(false));
    // Three failures in a row, under the five that open the breaker.
    assert_eq!(acme["breaker"], json!("closed"));
    assert!(
        (0..5).contains(&secs(&acme["oldest_pending_age_s"])),
        "{acme}"
    );
    assert!(
        (295..=300).contains(&secs(&acme["next_attempt_in_s"])),
        "{acme}"
    );
    gw.clock.advance(Duration::from_secs(100));
    let (_, body) = gw.get("/admin/queues").await;
    let later = &serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["queues"][0];
    assert!(
        (100..105).contains(&secs(&later["oldest_pending_age_s"])),
        "{later}"
    );
    assert!(
        (195..=200).contains(&secs(&later["next_attempt_in_s"])),
        "{later}"
    );

    // Pending events, two per page, oldest first, with the cursor of the next page.
    let (status, body) = gw
        .get("/admin/events?status=pending&tenant=acme&limit=2")
        .await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let first: Vec<&str> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(first, [ids[0].as_str(), ids[1].as_str()]);
    let event = &page["events"][0];
    assert_eq!(event["type"], json!("call.cdr"));
    assert_eq!(event["status"], json!("pending"));
    assert_eq!(event["attempts"], json!(1));
    assert_eq!(event["last_error"], json!("HTTP 503 Service Unavailable"));
    assert!(
        event["call_id"].as_str().unwrap_or("").starts_with("call_"),
        "{event}"
    );
    let next = page["next"].as_str().expect("a next page");
    let (_, body) = gw
        .get(&format!(
            "/admin/events?status=pending&limit=2&after={next}"
        ))
        .await;
    let rest: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(rest["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["events"][0]["event_id"], json!(ids[2]));
    assert_eq!(rest["next"], json!(null));
    // Filters and bad parameters.
    let (_, body) = gw
        .get("/admin/events?status=pending&type=call.hangup")
        .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["events"],
        json!([])
    );
    let (_, body) = gw.get("/admin/events?status=dead").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["events"],
        json!([])
    );
    assert_eq!(gw.get("/admin/events?status=lost").await.0, 400);
    assert_eq!(gw.get("/admin/events?limit=0").await.0, 400);
    assert_eq!(gw.get("/admin/events?after=x").await.0, 400);

    // The receiver is fixed: "retry now" sends all three at once.
    rx.answer(|_| Reply::ok("{}"));
    let (status, _, body) = gw
        .post("/admin/retry", "application/json", r#"{"tenant":"nope"}"#)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = gw
        .post("/admin/retry", "application/json", r#"{"tenant":"acme"}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["retried"],
        json!(3)
    );
    let mut again = std::collections::BTreeSet::new();
    for _ in 0..3 {
        again.insert(rx.next_of("call.cdr").await.header("webhook-id").to_owned());
    }
    assert_eq!(again, ids.iter().cloned().collect());
    let queues = poll_json(&gw, "/admin/queues", |v| {
        v["queues"][0]["pending"] == json!(0)
    })
    .await;
    assert_eq!(queues["queues"][0]["breaker"], json!("closed"));
    assert_eq!(queues["queues"][0]["next_attempt_at"], json!(null));

    // A replay that matches nothing says why.
    let (_, _, body) = gw.post("/admin/replay", "application/json", "{}").await;
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["replayed"], json!(0));
    assert_eq!(answer["why"], json!("no dead letters"));
    let (_, _, body) = gw
        .post(
            "/admin/replay",
            "application/json",
            json!({"event_id": ids[0]}).to_string(),
        )
        .await;
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        answer["why"]
            .as_str()
            .unwrap_or("")
            .contains("was delivered"),
        "{answer}"
    );

    // The command line: "none", and the same reasons.
    let config = gw.dir.join("test.toml");
    let guard = gw.stop().await;
    let listed = ivrgate()
        .args(["dead-letters", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "none\n");
    let replayed = ivrgate()
        .args(["replay", "--config"])
        .arg(&config)
        .args(["--event", "msg_nosuchevent"])
        .output()
        .expect("run");
    assert!(replayed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout),
        "0 event(s) put back in the delivery queue: no event msg_nosuchevent (never stored, or purged after storage.delivered_retention_s)\n"
    );
    drop(guard);
}
