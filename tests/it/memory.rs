//! Memory under large and many request bodies: the budget for bodies in flight answers the
//! platform's "busy, send it again" when it is full, and the built binary's peak memory stays
//! bounded under many concurrent maximum-size bodies.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::process::free_port;
use crate::support::*;

/// `max_body_bytes` in the budget test: the default budget is 32 of these.
const MAX_BODY: usize = 64 * 1024;

/// A JSON CDR of exactly `size` bytes (padded with a filler field).
fn padded_cdr(call: &str, size: usize) -> String {
    let head = format!(r#"{{"ivruniqueid":"{call}","status":"ANSWER","queueid":7,"pad":""#);
    let fill = size - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(fill))
}

/// A request whose body is sent only in part: it holds its reservation until finished.
struct Holder {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl Holder {
    async fn open(gw: &Gateway, call: &str) -> Holder {
        let body = padded_cdr(call, MAX_BODY).into_bytes();
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        let head = format!(
            "POST /voicenter/acme/cdr HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(&body[..1000]).await.expect("first part");
        Holder {
            stream,
            rest: body[1000..].to_vec(),
        }
    }

    /// Sends the rest and reads the answer (status line and body).
    async fn finish(mut self) -> String {
        self.stream.write_all(&self.rest).await.expect("rest");
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut answer))
            .await
            .expect("answer in time")
            .expect("read answer");
        String::from_utf8_lossy(&answer).into_owned()
    }
}

async fn metrics(gw: &Gateway) -> String {
    gw.get("/metrics").await.1
}

fn series(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn bodies_over_the_budget_get_the_platforms_try_again_answer() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let gw = Gateway::start_edited(&rx.url("/hooks"), |t| {
        t.replace(
            "[storage]",
            &format!("[server]\nmax_body_bytes = {MAX_BODY}\n\n[storage]"),
        )
    })
    .await;

    // 32 maximum-size bodies fit the default budget at once: all are being read.
    let mut holders = Vec::new();
    for i in 0..32 {
        holders.push(Holder::open(&gw, &format!("held-{i}")).await);
    }
    let full = (32 * MAX_BODY) as f64;
    let deadline = Instant::now() + WAIT;
    loop {
        let reserved = series(&metrics(&gw).await, "ivrgate_body_bytes_in_flight ");
        if reserved == full {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 32 bodies were not all admitted: {reserved} bytes reserved, want {full}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The budget is full: every platform answers its own "try again", never 500 or a crash.
    let cdr = r#"{"ivruniqueid":"late-1","status":"ANSWER","queueid":7}"#;
    let (status, _, answer) = gw
        .post("/voicenter/acme/cdr", "application/json", cdr)
        .await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json answer");
    assert_eq!(answer["err"], 2, "{answer}");

    let xml = r#"<?xml version="1.0"?><methodCall><methodName>CDR</methodName><params><param><value><struct><member><name>ivruniqueid</name><value><string>late-2</string></value></member></struct></value></param></params></methodCall>"#;
    let (status, content_type, answer) = gw.post("/voicenter/acme/cdr", "text/xml", xml).await;
    assert_eq!(status, 200, "{answer}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    assert!(
        answer.contains("<name>err</name><value><int>2</int>"),
        "{answer}"
    );

    let hangup = r#"{"METHOD":"HANGUP_CALL","DATA":{"IVR_UNIQUE_ID":"late-3"}}"#;
    let (status, _, answer) = gw.post("/voicenter/acme", "application/json", hangup).await;
    assert_eq!((status, answer.as_str()), (200, r#"{"STATUS":1}"#));

    // A body without Content-Length is reserved as it arrives: over the budget, refused.
    let answer = raw(
        &gw,
        "POST /voicenter/acme/cdr HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         14\r\n{\"ivruniqueid\":\"l4\",\r\n12\r\n\"status\":\"ANSWER\"}\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""err":2"#), "{answer}");

    for (v12, content_type) in [
        (false, "text/xml; charset=utf-8"),
        (true, "application/soap+xml; charset=utf-8"),
    ] {
        let body = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><GetStatus/></s:Body></s:Envelope>";
        let (status, ct, answer) = gw.post("/ptk/acme", content_type, body).await;
        assert_eq!(status, 500, "SOAP faults travel with 500: {answer}");
        assert!(
            ct.starts_with(content_type.split(';').next().unwrap_or("")),
            "{ct}"
        );
        assert!(answer.contains("BandwidthExceeded"), "{answer}");
        let code = if v12 { "soap:Receiver" } else { "soap:Server" };
        assert!(answer.contains(code), "{answer}");
    }

    let (status, _, answer) = gw
        .post(
            "/openscape/acme/ch1",
            "application/json",
            r#"{"method":"Initialize","params":[]}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json answer");
    assert_eq!(answer["ReturnCode"], -400, "{answer}");

    // The command API's bodies share the budget: 503 with its JSON error.
    let (status, _, answer) = gw
        .post(
            "/api/acme/openscape/calls/c1/assign",
            "application/json",
            r#"{"extension":"1001"}"#,
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json answer");
    assert_eq!(answer["error"]["code"], "busy", "{answer}");

    let text = metrics(&gw).await;
    assert!(
        series(&text, "ivrgate_requests_total{") > 0.0
            && series(
                &text,
                "ivrgate_requests_total{adapter=\"voicenter\",method=\"CDR\",outcome=\"busy\"}"
            ) == 3.0,
        "busy answers are counted:\n{text}"
    );

    // The held bodies complete and are stored; the refused ones are taken when sent again.
    let mut acknowledged = BTreeSet::new();
    for (i, holder) in holders.into_iter().enumerate() {
        let answer = holder.finish().await;
        assert!(answer.contains(r#"{"err":0"#), "held-{i}: {answer}");
        acknowledged.insert(format!("held-{i}"));
    }
    let (_, _, answer) = gw
        .post("/voicenter/acme/cdr", "application/json", cdr)
        .await;
    assert!(answer.contains(r#""err":0"#), "{answer}");
    acknowledged.insert("late-1".to_owned());
    let (_, _, answer) = gw.post("/voicenter/acme/cdr", "text/xml", xml).await;
    assert!(answer.contains("<int>0</int>"), "{answer}");
    acknowledged.insert("late-2".to_owned());
    assert_eq!(
        series(&metrics(&gw).await, "ivrgate_body_bytes_in_flight "),
        0.0
    );

    // Every acknowledged CDR is delivered; nothing refused was stored.
    let mut delivered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.len() < acknowledged.len() && Instant::now() < deadline {
        if let Some(hook) = rx.next_within(Duration::from_secs(1)).await {
            let id = hook.json["data"]["vendor_fields"]["ivruniqueid"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            delivered.insert(id);
        }
    }
    assert_eq!(delivered, acknowledged);
    assert!(rx.drain(Duration::from_millis(300)).await.is_empty());
    gw.stop().await;
}

/// Sends a raw HTTP request and reads the whole answer.
async fn raw(gw: &Gateway, request: &str) -> String {
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Peak resident memory (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn a_hundred_concurrent_megabyte_cdrs_stay_within_bounded_memory() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("ivrgate.toml");
    std::fs::write(&config, daemon_toml(port, dir.path(), &rx.url("/hooks"))).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivrgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ivrgate");
    let base = format!("http://127.0.0.1:{port}");
    // A loaded machine may take a while for a hundred megabytes in a debug build.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // 100 JSON CDRs of 1 MiB (the default max_body_bytes), all sent at once.
    let size = 1024 * 1024;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/voicenter/acme/cdr");
            let body = padded_cdr(&format!("big-{i}"), size);
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let text = response.text().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((i, status, text))
            })
        })
        .collect();
    let mut acknowledged = BTreeSet::new();
    let mut busy = 0;
    for task in tasks {
        let (i, status, text) = task.await.expect("task").expect("an answer, not a crash");
        assert_eq!(status, 200, "{text}");
        if text.contains(r#""err":0"#) {
            acknowledged.insert(format!("big-{i}"));
        } else {
            assert!(text.contains(r#""err":2"#), "ok or try again: {text}");
            busy += 1;
        }
    }
    assert!(
        acknowledged.len() >= 32,
        "at least 32 maximum-size bodies fit (busy {busy})"
    );
    let mut delivered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered.len() < acknowledged.len() && Instant::now() < deadline {
        if let Some(hook) = rx.next_within(Duration::from_secs(1)).await {
            if let Some(id) = hook.json["data"]["vendor_fields"]["ivruniqueid"].as_str() {
                delivered.insert(id.to_owned());
            }
        }
    }
    assert_eq!(
        delivered, acknowledged,
        "every acknowledged CDR is delivered"
    );
    let peak = peak_rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "peak RSS {} MiB, {} acknowledged, {busy} busy",
        peak / (1024 * 1024),
        acknowledged.len()
    );
    // Unbounded, this reached about 0.7-1.1 GB; bounded, it stays far below this line.
    assert!(
        peak > 0 && peak < 512 * 1024 * 1024,
        "peak RSS {} MiB",
        peak / (1024 * 1024)
    );
}

fn daemon_toml(port: u16, state_dir: &Path, webhook_url: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{dir}"

[server]
# Generous: a slow machine must not turn admitted bodies into timeouts.
body_read_timeout_ms = 60000

[logging]
level = "warn"

[storage]
min_free_bytes = 0

[[tenants]]
id = "acme"
webhook_url = "{webhook_url}"
webhook_secret = "{SECRET}"
"#,
        dir = state_dir.display()
    )
}

#[test]
fn check_config_refuses_a_budget_smaller_than_one_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.toml");
    let toml = daemon_toml(8080, dir.path(), "http://127.0.0.1:9/hooks").replace(
        "[server]\n",
        "[server]\nmax_body_bytes = 2000000\nmax_bodies_in_flight_bytes = 1000000\n",
    );
    std::fs::write(&path, toml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ivrgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(text.contains("max_bodies_in_flight_bytes"), "{text}");
}

/// Resident memory now (VmRSS) of a process, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// An XML-RPC CDR of about `size` bytes in string members of 1 KiB.
fn large_xmlrpc_cdr(call: &str, size: usize) -> String {
    let filler: String = "0123456789abcdef".chars().cycle().take(1024).collect();
    let mut xml = format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>CDR</methodName><params><param>\
         <value><struct><member><name>ivruniqueid</name><value><string>{call}</string></value>\
         </member><member><name>status</name><value><string>ANSWER</string></value></member>"
    );
    let mut i = 0;
    while xml.len() < size {
        xml.push_str(&format!(
            "<member><name>field{i:05}</name><value><string>{filler}</string></value></member>"
        ));
        i += 1;
    }
    xml.push_str("</struct></value></param></params></methodCall>");
    xml
}

/// One large XML-RPC CDR (`max_body_bytes` raised) through the built binary: stored,
/// acknowledged and delivered whole, while the gateway's memory grows by less than three
/// times the body. Reading it through a tree of the document, copying the payload into the
/// event, or reading it back whole through SQLite each add about one more body's worth, and
/// this fails (before these were removed the growth was about six times the body).
#[tokio::test]
async fn a_large_xmlrpc_cdr_costs_less_than_three_times_its_size() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("ivrgate.toml");
    let toml = daemon_toml(port, dir.path(), &rx.url("/hooks"))
        .replace("[server]\n", "[server]\nmax_body_bytes = 33554432\n");
    std::fs::write(&config, toml).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivrgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ivrgate");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let idle = rss(child.id());

    let body = large_xmlrpc_cdr("LARGE1", 24 * 1024 * 1024);
    let size = body.len() as u64;
    let response = client
        .post(format!("{base}/voicenter/acme/cdr"))
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("answer body");
    let ack = ivrgate_wire::xmlrpc::parse_response(&text, &ivrgate_wire::Limits::default());
    let err = match &ack {
        Ok(Ok(params)) => params.first().and_then(|v| v.member("err")).cloned(),
        _ => None,
    };
    assert_eq!(
        err,
        Some(ivrgate_wire::xmlrpc::Value::Int(0)),
        "acknowledged: {text}"
    );
    let hook = rx
        .next_within(Duration::from_secs(120))
        .await
        .expect("the CDR is delivered");
    let fields = &hook.json["data"]["vendor_fields"];
    assert_eq!(fields["ivruniqueid"], "LARGE1");
    let members = fields.as_object().map_or(0, |m| m.len()) as u64;
    assert!(members > size / 1100, "every member delivered ({members})");
    let peak = peak_rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let growth = peak.saturating_sub(idle);
    eprintln!(
        "body {} MiB, idle RSS {} MiB, peak RSS {} MiB, growth {:.2}x the body",
        size / (1024 * 1024),
        idle / (1024 * 1024),
        peak / (1024 * 1024),
        growth as f64 / size as f64
    );
    assert!(
        growth < 3 * size,
        "peak RSS grew by {:.2}x the body",
        growth as f64 / size as f64
    );
}
