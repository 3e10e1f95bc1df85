//! The HTTP edge through the real server: paths split before they are decoded.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn cdr(id: &str) -> String {
    json!({"caller": "0541234567", "ivruniqueid": id, "time": 1_700_000_000, "status": "ANSWER"})
        .to_string()
}

/// POSTs a CDR with extra header lines (a name may repeat); returns status and body.
async fn send(gw: &Gateway, path: &str, id: &str, lines: &[(&str, &str)]) -> (u16, String) {
    let mut request = client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(cdr(id));
    for (name, value) in lines {
        // RequestBuilder::header appends: a repeated name goes out as a second line.
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The `ivruniqueid`s of the CDR events that arrive until the receiver is quiet.
async fn delivered_ids(rx: &Receiver) -> Vec<String> {
    let mut ids: Vec<String> = rx
        .drain(Duration::from_millis(1200))
        .await
        .iter()
        .map(|h| {
            h.json["data"]["correlation"]["ivruniqueid"]
                .as_str()
                .unwrap_or_else(|| panic!("no call id in {}", h.json))
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// One request with a raw request line (no client-side normalisation of the path); returns
/// the status code.
async fn raw_status(gw: &Gateway, method: &str, target: &str, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read answer");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn paths_are_split_before_they_are_decoded() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    // Empty segments are ignored on every route: a base URL with a trailing slash joined to
    // a path with a leading one still reaches the tenant.
    for (id, path) in [
        ("leading", "//voicenter/acme/cdr"),
        ("inner", "/voicenter//acme///cdr/"),
        ("encoded", "/%76oicenter/%61cme/%63dr"),
    ] {
        let (status, body) = send(&gw, path, id, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        let ack: Value = serde_json::from_str(&body).expect("json ack");
        assert_eq!(ack["err"], json!(0), "{path}: {body}");
    }
    assert_eq!(gw.get("//healthz").await.0, 200);
    assert_eq!(gw.get("/healthz/").await.0, 200);
    assert_eq!(gw.get("/admin//outbox").await.0, 200);
    assert_eq!(gw.get("//api/acme/openscape//calls/").await.0, 200);
    assert_eq!(gw.get("//metrics").await.0, 200);
    // A decoded '/', '.' or '..' is data inside one segment, never routing.
    let body = cdr("never");
    for (target, want) in [
        ("/voicenter/acme%2Fcdr", 404),
        ("/voicenter%2Facme/cdr", 404),
        ("/api/acme%2Fopenscape/calls", 404),
        ("/admin/outbox%2F", 404),
        ("/admin%2Foutbox", 404),
        ("/voicenter/%2E%2E/acme/cdr", 404),
        ("/voicenter/../acme/cdr", 404),
        ("/voicenter/x/../acme/cdr", 404),
        // Unreadable escapes are refused before routing.
        ("/voicenter/acme/%zz", 400),
        ("/voicenter/acme/cdr%", 400),
        ("/voicenter/acme/%FF", 400),
        ("/voicenter/acme%0Aforged/cdr", 400),
    ] {
        assert_eq!(
            raw_status(&gw, "POST", target, &body).await,
            want,
            "{target}"
        );
    }
    // Inside the tenant the adapter sees the decoded segments: an encoded slash or a dot
    // segment is an unknown Voicenter path (its own error answer), and nothing is stored.
    for path in [
        "/voicenter/acme/c%2Fdr",
        "/voicenter/acme/%2E%2E/cdr",
        "/voicenter/acme/../cdr",
    ] {
        let status = raw_status(&gw, "POST", path, &body).await;
        assert!(status == 200 || status == 400, "{path}: {status}");
    }
    let mut want = vec!["encoded", "inner", "leading"];
    want.sort();
    assert_eq!(delivered_ids(&rx).await, want);
    gw.stop().await;
}
