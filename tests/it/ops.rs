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
