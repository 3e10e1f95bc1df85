//! The PostgreSQL backend through the built binary: `check-config` never connects,
//! `--online` reports an unreachable or wrongly migrated database, and `serve` migrates the
//! schema (or refuses an incompatible one) before anything else. Each test that needs the
//! server gets its own database (`ivrgate::store::postgres::testing`).

use std::process::Command;

use ivrgate::store::postgres::testing::TestDb;

use crate::support::SECRET;

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

#[test]
fn check_config_never_connects_and_online_names_an_unreachable_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(dir.path());
    let path = path.to_str().expect("utf-8");
    let url = "postgresql://ivrgate:hunter2@127.0.0.1:1,127.0.0.1:2/ivrgate";
    let (code, text) = run(url, &["check-config", path]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("not complete in this build"), "{text}");
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
        text.contains("empty: serve creates schema version 1"),
        "{text}"
    );
    // serve migrates, then (in this build) refuses to run with a clear message.
    let (code, text) = run(&url, &["serve", "--config", &path]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not in this build yet"), "{text}");
    let (code, text) = run(&url, &["check-config", &path, "--online"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("schema version 1 (current)"), "{text}");
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
