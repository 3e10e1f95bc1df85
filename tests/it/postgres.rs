//! The PostgreSQL backend through the built binary: `check-config` never connects,
//! `--online` reports an unreachable or wrongly migrated database, and `serve` migrates the
//! schema (or refuses an incompatible one) before anything else. Each test that needs the
//! server gets its own database (`ivrgate::store::postgres::testing`).

use std::process::Command;

use ivrgate::store::postgres::testing::TestDb;

use crate::process::{free_port, Daemon};
use crate::support::{client, Receiver, SECRET};

async fn exchange_post(url: &str, body: &str) -> (u16, String, String) {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, response.text().await.expect("body"))
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("ivrgate.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\n[storage]\nbackend = \"postgres\"\n\
         url = \"env:IVRGATE_IT_PG_URL\"\nconnect_timeout_ms = 2000\n\n[[tenants]]\nid = \"acme\"\n\
         webhook_url = \"http://127.0.0.1:9/hooks\"\nwebhook_secret = \"{SECRET}\"\n",
        dir.join("var").display()
    );
    std::fs::write(&path, text).expect("write");
    path
}

fn run(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ivrgate"))
        .args(args)
        .env("IVRGATE_IT_PG_URL", url)
        .output()
        .expect("run");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The test database's URL in `key=value` form (it came from `IVRGATE_TEST_PG`).
fn url_of(db: &TestDb) -> String {
    crate::support::pg_url(db)
}

#[test]
fn check_config_never_connects_and_online_names_an_unreachable_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(dir.path());
    let path = path.to_str().expect("utf-8");
    let url = "postgresql://ivrgate:hunter2@127.0.0.1:1,127.0.0.1:2/ivrgate";
    let (code, text) = run(url, &["check-config", path]);
    assert_eq!(code, 0, "{text}");
    // Limits hold for the cluster: no warning that instances multiply them.
    assert!(!text.contains("times its limits"), "{text}");
    let (code, text) = run(url, &["check-config", path, "--online"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(text.contains("127.0.0.1:1,127.0.0.1:2"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    // A URL that does not parse is a configuration error, found without connecting.
    let (code, text) = run(
        "postgresql://u:pw@h/db?sslmode=bogus",
        &["check-config", path],
    );
    assert_eq!(code, 64, "{text}");
    assert!(text.contains("storage.url"), "{text}");
    assert!(!text.contains("pw@"), "{text}");
}

#[tokio::test]
async fn serve_migrates_once_and_refuses_an_incompatible_schema() {
    let Some(db) = TestDb::create("it_serve").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(dir.path());
    let path = path.to_str().expect("utf-8").to_owned();
    let url = url_of(&db);
    let (code, text) = run(&url, &["check-config", &path, "--online"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("empty: serve creates schema version 2"),
        "{text}"
    );
    // serve migrates and runs on it: a CDR is acknowledged and reaches the webhook.
    {
        let receiver = Receiver::start().await;
        let port = free_port();
        let toml = format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n\n[logging]\nlevel = \"warn\"\n\n\
             [storage]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n\n[[tenants]]\n\
             id = \"acme\"\nwebhook_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\n",
            dir.path().join("var").display(),
            receiver.url("/hooks")
        );
        let mut daemon = Daemon::spawn_with("pg", dir.path(), port, &toml, None);
        daemon.ready().await;
        let (status, _, body) = exchange_post(
            &daemon.url("/voicenter/acme/cdr"),
            &crate::process::cdr_body("0001c0ffee00c0ffee00c0ffee00", 5),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(
            crate::process::cdr_acked(&answer),
            "{body}\n{}",
            daemon.log_text()
        );
        let hook = receiver
            .next_within(std::time::Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("no webhook:\n{}", daemon.log_text()));
        assert_eq!(hook.json["type"], "call.cdr", "{}", hook.json);
        assert_eq!(hook.json["data"]["seq"], 1, "{}", hook.json);
        assert!(hook.verifies());
        drop(daemon);
    }
    let (code, text) = run(&url, &["check-config", &path, "--online"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("schema version 2 (current)"), "{text}");
    // A later release's contracting migration: this binary refuses to start on it.
    {
        let pool = db.settings.pool().expect("pool");
        let client = pool.get().await.expect("client");
        client
            .execute(
                "INSERT INTO ivrgate_schema (version, name, compatible_from) VALUES (9, 'contract', 9)",
                &[],
            )
            .await
            .expect("insert");
    }
    let (code, text) = run(&url, &["serve", "--config", &path]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("schema is at version 9"), "{text}");
    assert!(text.contains("incompatible with this ivrgate"), "{text}");
    let (code, text) = run(&url, &["check-config", &path, "--online"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("incompatible"), "{text}");
    db.drop_db().await;
}

/// `ivrgate move-store` through the binary: a CDR acknowledged by an instance on the
/// embedded store (its webhook endpoint down) is delivered by an instance on PostgreSQL
/// after the move; the move is refused while the embedded store is in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_store_carries_a_pending_delivery_to_postgres() {
    let Some(db) = TestDb::create("it_move").await else {
        return;
    };
    let url = url_of(&db);
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("var");
    let receiver = Receiver::start().await;
    let toml = |port: u16, storage: &str, hooks: &str| {
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n\n[logging]\nlevel = \"warn\"\n\n\
             [storage]\nmin_free_bytes = 0\n{storage}\n[[tenants]]\nid = \"acme\"\n\
             webhook_url = \"{hooks}\"\nwebhook_secret = \"{SECRET}\"\n",
            state.display()
        )
    };
    let pg_lines = format!("backend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n");
    let port = free_port();
    let mut embedded = Daemon::spawn_with(
        "embedded",
        dir.path(),
        port,
        &toml(port, "", "http://127.0.0.1:9/hooks"),
        None,
    );
    embedded.ready().await;
    let (status, _, body) = exchange_post(
        &embedded.url("/voicenter/acme/cdr"),
        &crate::process::cdr_body("0002c0ffee00c0ffee00c0ffee00", 7),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let moving = dir.path().join("move.toml");
    std::fs::write(
        &moving,
        toml(free_port(), &pg_lines, &receiver.url("/hooks")),
    )
    .expect("write");
    let moving = moving.to_str().expect("utf-8");
    let (code, text) = run(&url, &["move-store", "--config", moving]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("stop every instance"), "{text}");
    embedded.sigkill();
    let (code, text) = run(&url, &["move-store", "--config", moving]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 pending deliveries"), "{text}");
    let port = free_port();
    let mut on_pg = Daemon::spawn_with(
        "on_pg",
        dir.path(),
        port,
        &toml(port, &pg_lines, &receiver.url("/hooks")),
        None,
    );
    on_pg.ready().await;
    let hook = receiver
        .next_within(std::time::Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the moved CDR was not delivered:\n{}", on_pg.log_text()));
    assert_eq!(hook.json["type"], "call.cdr", "{}", hook.json);
    assert_eq!(
        hook.json["data"]["vendor_fields"]["ivruniqueid"],
        "0002c0ffee00c0ffee00c0ffee00"
    );
    assert_eq!(hook.json["data"]["seq"], 1);
    assert!(hook.verifies());
    drop(on_pg);
    db.drop_db().await;
}
