//! Bad input and hostile clients: size, depth, DTDs, slow senders, charsets, inbound
//! credentials, configuration checks, and logs that never carry secrets.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn ivr_action(call: &str, caller_name: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="windows-1255"?>
<methodCall><methodName>GET_IVR_ACTION</methodName><params><param><value><struct>
<member><name>DID</name><value><string>0730000000</string></value></member>
<member><name>CALLER_ID</name><value><string>0541234567</string></value></member>
<member><name>CALLER_NAME</name><value><string>{caller_name}</string></value></member>
<member><name>IVR_UNIQUE_ID</name><value><string>{call}</string></value></member>
<member><name>DTMF</name><value><string/></value></member>
<member><name>MENU</name><value><string>-1</string></value></member>
<member><name>PREVIOUS_MENU</name><value><string>-1</string></value></member>
</struct></value></param></params></methodCall>"#
    )
}

#[tokio::test]
async fn oversized_deep_and_dtd_bodies_are_refused_without_events() {
    let rx = Receiver::start().await;
    let gw = Gateway::start(&rx.url("/hooks"), "[server]\nmax_body_bytes = 4096\n").await;
    let (status, _, _) = gw
        .post(
            "/voicenter/acme/cdr",
            "application/json",
            "x".repeat(10_000),
        )
        .await;
    assert_eq!(status, 413);

    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>
<methodCall><methodName>CDR</methodName><params><param><value><struct><member><name>caller</name><value><string>&lol2;</string></value></member></struct></value></param></params></methodCall>"#;
    let (status, _, body) = gw.post("/voicenter/acme", "text/xml", laughs).await;
    assert_eq!(status, 200);
    assert!(body.contains("<fault>"), "DOCTYPE not refused: {body}");
    let (_, _, body) = gw.post("/voicenter/acme/cdr", "text/xml", laughs).await;
    assert!(
        body.contains("<name>err</name><value><int>1</int>"),
        "{body}"
    );

    let deep = format!(
        "{}{}",
        "{\"a\":".repeat(200),
        "1".to_owned() + &"}".repeat(200)
    );
    let (status, _, body) = gw
        .post("/voicenter/acme/cdr", "application/json", deep)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["err"],
        1,
        "{body}"
    );
    assert!(
        rx.next_within(Duration::from_millis(800)).await.is_none(),
        "an event was made"
    );
    gw.stop().await;
}

#[tokio::test]
async fn slow_senders_are_cut_off() {
    let rx = Receiver::start().await;
    let gw = Gateway::start(
        &rx.url("/hooks"),
        "[server]\nheader_read_timeout_ms = 300\nbody_read_timeout_ms = 300\n",
    )
    .await;
    let addr = gw.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        // Headers never finished: the connection is closed.
        let mut slow = std::net::TcpStream::connect(addr).expect("connect");
        slow.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        slow.write_all(b"POST /voicenter/acme HTTP/1.1\r\nHost: x\r\n").expect("write");
        let started = Instant::now();
        let mut buf = [0u8; 512];
        let n = slow.read(&mut buf).unwrap_or(0);
        let headers_cut = started.elapsed();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        // A body that stops half-way: 408.
        let mut stalled = std::net::TcpStream::connect(addr).expect("connect");
        stalled.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        stalled
            .write_all(b"POST /voicenter/acme/cdr HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"caller\"")
            .expect("write");
        let started = Instant::now();
        let mut buf = [0u8; 512];
        let n = stalled.read(&mut buf).unwrap_or(0);
        (headers_cut, text, started.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .expect("task");
    let (headers_cut, header_answer, body_cut, body_answer) = outcome;
    assert!(
        headers_cut < Duration::from_millis(1500),
        "slow headers held {headers_cut:?}"
    );
    assert!(
        header_answer.is_empty() || header_answer.contains("408"),
        "{header_answer}"
    );
    assert!(
        body_cut < Duration::from_millis(1500),
        "slow body held {body_cut:?}"
    );
    assert!(body_answer.starts_with("HTTP/1.1 408"), "{body_answer}");
    gw.stop().await;
}

#[tokio::test]
async fn the_declared_charset_is_honoured() {
    let rx = Receiver::start().await;
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    // "שלום" in windows-1255, declared in the XML declaration only.
    let mut body = Vec::new();
    let text = ivr_action("c-heb", "@@");
    let (head, tail) = text.split_once("@@").expect("marker");
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(&[0xF9, 0xEC, 0xE5, 0xED]);
    body.extend_from_slice(tail.as_bytes());
    let (status, _, _) = gw.post("/voicenter/acme", "text/xml", body).await;
    assert_eq!(status, 200);
    let hook = rx.next().await;
    assert_eq!(hook.json["data"]["caller_name"], "שלום");
    // Declared in the header instead, as ISO-8859-8 (the same letters).
    let mut body = Vec::new();
    let text = ivr_action("c-heb2", "@@").replace("windows-1255", "ISO-8859-8");
    let (head, tail) = text.split_once("@@").expect("marker");
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(&[0xF9, 0xEC, 0xE5, 0xED]);
    body.extend_from_slice(tail.as_bytes());
    gw.post("/voicenter/acme", "text/xml; charset=iso-8859-8", body)
        .await;
    assert_eq!(rx.next().await.json["data"]["caller_name"], "שלום");
    gw.stop().await;
}

#[tokio::test]
async fn inbound_credentials_and_tenant_isolation() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let extra = format!(
        r#"[tenants.inbound]
path_token = "tok_0123456789abcdef"
basic_auth = {{ username = "voicenter", password = "s3cret-pass" }}

[[tenants]]
id = "globex"
webhook_url = "{url}"
webhook_secret = "{SECRET}"
[tenants.inbound]
allow_ips = ["192.0.2.0/24"]

[[tenants]]
id = "initech"
webhook_url = "{url}"
webhook_secret = "{SECRET}"
[tenants.inbound]
allow_ips = ["198.51.100.7"]

[server]
trusted_proxies = ["127.0.0.1"]
"#,
        url = rx.url("/hooks")
    );
    let gw = Gateway::start(&rx.url("/hooks"), &extra).await;
    let cdr = json!({"caller": "0541234567", "ivruniqueid": "iso-1", "time": 1_700_000_000, "status": "ANSWER"}).to_string();
    let send = |path: &str, auth: Option<(&str, &str)>, xff: Option<&str>| {
        let mut request = client()
            .post(gw.url(path))
            .header("content-type", "application/json")
            .body(cdr.clone());
        if let Some((u, p)) = auth {
            request = request.basic_auth(u, Some(p));
        }
        if let Some(x) = xff {
            request = request.header("x-forwarded-for", x);
        }
        async move { request.send().await.expect("request").status().as_u16() }
    };
    assert_eq!(
        send(
            "/voicenter/acme/cdr",
            Some(("voicenter", "s3cret-pass")),
            None
        )
        .await,
        404,
        "token missing"
    );
    assert_eq!(
        send(
            "/voicenter/acme/tok_wrong_________/cdr",
            Some(("voicenter", "s3cret-pass")),
            None
        )
        .await,
        404
    );
    assert_eq!(
        send("/voicenter/acme/tok_0123456789abcdef/cdr", None, None).await,
        401
    );
    assert_eq!(
        send(
            "/voicenter/acme/tok_0123456789abcdef/cdr",
            Some(("voicenter", "wrong")),
            None
        )
        .await,
        401
    );
    assert_eq!(
        send(
            "/voicenter/acme/tok_0123456789abcdef/cdr",
            Some(("voicenter", "s3cret-pass")),
            None
        )
        .await,
        200
    );
    // Another tenant's credentials open nothing of acme's, and the other way round.
    assert_eq!(
        send(
            "/voicenter/globex/tok_0123456789abcdef/cdr",
            Some(("voicenter", "s3cret-pass")),
            None
        )
        .await,
        403
    );
    assert_eq!(
        send("/voicenter/globex/cdr", None, Some("192.0.2.50")).await,
        200,
        "trusted proxy hop"
    );
    assert_eq!(
        send("/voicenter/globex/cdr", None, Some("203.0.113.1")).await,
        403
    );
    assert_eq!(
        send("/voicenter/initech/cdr", None, Some("198.51.100.7")).await,
        200
    );
    assert_eq!(send("/voicenter/nobody/cdr", None, None).await, 404);
    // Exactly the three accepted requests made events, each for its own tenant.
    let hooks = rx.drain(Duration::from_millis(1200)).await;
    let mut tenants: Vec<String> = hooks
        .iter()
        .map(|h| h.json["data"]["tenant"].as_str().unwrap_or("").to_owned())
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["acme", "globex", "initech"]);
    gw.stop().await;
}

fn ivrgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ivrgate"))
}

fn check_config(toml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ivrgate.toml");
    std::fs::write(&path, toml).expect("write");
    let out = ivrgate()
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_config_accepts_the_shipped_files_and_names_what_is_wrong() {
    for shipped in ["config/example.toml", "config/minimal.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(shipped);
        let out = ivrgate()
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{shipped}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let open = fixture_config("0.0.0.0:8080", "");
    let (code, text) = check_config(&open);
    assert_eq!(code, 64);
    for option in [
        "inbound.path_token",
        "inbound.basic_auth",
        "inbound.allow_ips",
    ] {
        assert!(text.contains(option), "{option} not named: {text}");
    }
    let (code, text) = check_config(&fixture_config(
        "127.0.0.1:8080",
        "[tenants.decisions.layer_input]\ndeadline_ms = 9000\n",
    ));
    assert_eq!(code, 64);
    assert!(text.contains("5000 ms"), "{text}");
    let (code, text) = check_config(&fixture_config("127.0.0.1:8080", "webhook_timeout = 3\n"));
    assert_eq!(code, 64);
    assert!(text.contains("webhook_timeout"), "{text}");
    let (code, text) = check_config(&fixture_config(
        "127.0.0.1:8080",
        "[tenants.decisions.ivr_action]\nfallback = { action = \"enqueue\", queue = \"q\" }\n",
    ));
    assert_eq!(code, 64);
    assert!(text.contains("decisions.ivr_action.fallback"), "{text}");
    let (code, text) =
        check_config(&fixture_config("127.0.0.1:8080", "").replace("whsec_C2FV", "C2FV"));
    assert_eq!(code, 64);
    assert!(text.contains("whsec_"), "{text}");
}

fn fixture_config(listen: &str, extra: &str) -> String {
    format!(
        "listen = \"{listen}\"\nstate_dir = \"./var\"\n\n[[tenants]]\nid = \"acme\"\nwebhook_url = \"http://127.0.0.1:9/hooks\"\nwebhook_secret = \"{SECRET}\"\n{extra}"
    )
}

#[tokio::test]
async fn logs_carry_no_secrets_and_mask_phone_numbers() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let dir = tempfile::tempdir().expect("tmp");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let toml = format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{dir}"
[logging]
level = "debug"
format = "json"
mask_phone_numbers = true
[storage]
min_free_bytes = 0
[[tenants]]
id = "acme"
webhook_url = "{url}"
webhook_secret = "env:IVRGATE_TEST_SECRET"
[tenants.inbound]
path_token = "file:{dir}/token"
basic_auth = {{ username = "vc", password = "env:IVRGATE_TEST_PASS" }}
"#,
        dir = dir.path().display(),
        url = rx.url("/hooks")
    );
    std::fs::write(dir.path().join("token"), "tok_9f8e7d6c5b4a3210\n").expect("token");
    std::fs::write(dir.path().join("ivrgate.toml"), toml).expect("config");
    let mut child = ivrgate()
        .args(["serve", "--config"])
        .arg(dir.path().join("ivrgate.toml"))
        .env("IVRGATE_TEST_SECRET", SECRET)
        .env("IVRGATE_TEST_PASS", "pa55-w0rd-x")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let ready = async {
        for _ in 0..100 {
            if let Ok(r) = client().get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(ready.await, "gateway did not become ready");
    let hangup =
        json!({"METHOD": "HANGUP_CALL", "DATA": {"DID": "0730000000", "CALLER_ID": "0541234567",
        "IVR_UNIQUE_ID": "log-1", "CALL_STATUS": "ANSWER"}})
        .to_string();
    let ok = client()
        .post(format!("{base}/voicenter/acme/tok_9f8e7d6c5b4a3210"))
        .basic_auth("vc", Some("pa55-w0rd-x"))
        .body(hangup.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    let refused = client()
        .post(format!("{base}/voicenter/acme/tok_9f8e7d6c5b4a3210"))
        .basic_auth("vc", Some("wrong-pa55"))
        .body(hangup)
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);
    let bad = client()
        .post(format!("{base}/voicenter/acme/tok_9f8e7d6c5b4a3210"))
        .basic_auth("vc", Some("pa55-w0rd-x"))
        .body(r#"{"METHOD":"HANGUP_CALL","DATA":{"CALLER_ID":"0541234567"}}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), 200);
    let _ = rx.next_of("call.hangup").await;
    // SIGHUP reloads the configuration: a tenant added to the file starts working.
    assert_eq!(
        client()
            .post(format!("{base}/voicenter/globex/cdr"))
            .body("{}")
            .send()
            .await
            .expect("request")
            .status(),
        404
    );
    let config_path = dir.path().join("ivrgate.toml");
    let mut text = std::fs::read_to_string(&config_path).expect("config");
    text.push_str(&format!(
        "\n[[tenants]]\nid = \"globex\"\nwebhook_url = \"{}\"\nwebhook_secret = \"env:IVRGATE_TEST_SECRET\"\n",
        rx.url("/hooks")
    ));
    std::fs::write(&config_path, text).expect("rewrite config");
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let mut reloaded = false;
    for _ in 0..50 {
        let r = client()
            .post(format!("{base}/voicenter/globex/cdr"))
            .body("{}")
            .send()
            .await
            .expect("request");
        if r.status() == 200 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "SIGHUP did not load the new tenant");
    // SIGTERM: a graceful stop with status 0.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit after SIGTERM: {exit:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("read");
    assert!(
        logs.contains("\"message\":\"inbound request refused\""),
        "{logs}"
    );
    assert!(logs.contains("voicenter request rejected"), "{logs}");
    for secret in [
        "pa55-w0rd-x",
        "wrong-pa55",
        "tok_9f8e7d6c5b4a3210",
        "C2FVsBQIhrscChlQIMV",
        "0541234567",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
    assert!(
        logs.contains("*******567"),
        "masked number not logged:\n{logs}"
    );
}

#[tokio::test]
async fn the_configured_nesting_depth_applies() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    // Depth 4: the CDR object, aiData, "a" and "b".
    let nested = json!({"caller": "0544444444", "ivruniqueid": "deep-1", "status": "ANSWER",
        "aiData": {"a": {"b": {"c": 1}}}})
    .to_string();
    let gw = Gateway::start(&rx.url("/hooks"), "[server]\nmax_nesting_depth = 3\n").await;
    let (_, _, body) = gw
        .post("/voicenter/acme/cdr", "application/json", nested.clone())
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["err"],
        1,
        "{body}"
    );
    gw.stop().await;
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    let (_, _, body) = gw
        .post("/voicenter/acme/cdr", "application/json", nested)
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["err"],
        0,
        "{body}"
    );
    gw.stop().await;
}
