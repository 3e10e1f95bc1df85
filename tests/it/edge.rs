//! The HTTP edge through the real server: forwarding headers on several lines, paths split
//! before they are decoded, case-insensitive auth schemes, and who may read `/metrics`.

use std::time::Duration;

use base64::Engine as _;
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
async fn forwarding_headers_on_several_lines_are_one_list() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let extra = r#"[tenants.inbound]
allow_ips = ["10.9.9.9"]

[server]
trusted_proxies = ["127.0.0.1"]
"#;
    let gw = Gateway::start(&rx.url("/hooks"), extra).await;
    let path = "/voicenter/acme/cdr";
    let xff = "x-forwarded-for";
    type Lines<'a> = Vec<(&'a str, &'a str)>;
    let cases: [(&str, Lines, u16); 10] = [
        ("xff-one", vec![(xff, "10.9.9.9")], 200),
        (
            "xff-both-one-line",
            vec![(xff, "10.9.9.9, 203.0.113.7")],
            403,
        ),
        // HAProxy's `option forwardfor` appends its own line: the client is its hop.
        (
            "xff-two-lines",
            vec![(xff, "10.9.9.9"), (xff, "203.0.113.7")],
            403,
        ),
        ("xff-garbage-hop", vec![(xff, "10.9.9.9, nonsense")], 403),
        (
            "fwd-one",
            vec![("forwarded", "for=10.9.9.9;proto=https")],
            200,
        ),
        (
            "fwd-two-lines",
            vec![
                ("forwarded", "for=10.9.9.9"),
                ("forwarded", "for=203.0.113.7"),
            ],
            403,
        ),
        (
            "fwd-ipv6",
            vec![("forwarded", "for=\"[2001:db8:cafe::17]:4711\"")],
            403,
        ),
        // A proxy that writes Forwarded passes a client's own X-Forwarded-For untouched:
        // when the two disagree, neither is believed.
        (
            "disagree",
            vec![(xff, "10.9.9.9"), ("forwarded", "for=203.0.113.7")],
            403,
        ),
        (
            "agree",
            vec![(xff, "10.9.9.9"), ("forwarded", "for=\"10.9.9.9:5060\"")],
            200,
        ),
        ("no-proxy-header", vec![], 403),
    ];
    let mut accepted = Vec::new();
    for (id, lines, want) in &cases {
        let (status, body) = send(&gw, path, id, lines).await;
        assert_eq!(status, *want, "{id}: {body}");
        if status == 200 {
            accepted.push((*id).to_owned());
        }
    }
    // Headers that are not lists may come once: which of two Content-Types would count?
    let (status, body) = send(
        &gw,
        path,
        "two-types",
        &[(xff, "10.9.9.9"), ("content-type", "text/xml")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    accepted.sort();
    assert_eq!(delivered_ids(&rx).await, accepted);
    gw.stop().await;
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

#[tokio::test]
async fn auth_scheme_names_are_case_insensitive() {
    let rx = Receiver::start().await;
    rx.answer(|_| Reply::ok("{}"));
    let extra = r#"command_token = "cmd-token-0123456789"
[tenants.inbound]
basic_auth = { username = "voicenter", password = "s3cret-pass" }

[admin]
token = "adm_0123456789abcdef"
"#;
    let gw = Gateway::start(&rx.url("/hooks"), extra).await;
    let basic = base64::engine::general_purpose::STANDARD.encode("voicenter:s3cret-pass");
    let path = "/voicenter/acme/cdr";
    for (i, scheme) in ["Basic", "basic", "BASIC", "bAsIc"].iter().enumerate() {
        let value = format!("{scheme} {basic}");
        let (status, body) = send(&gw, path, &format!("s{i}"), &[("authorization", &value)]).await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    // Authorization is not a list: two lines (one right, one wrong) are refused.
    let right = format!("Basic {basic}");
    let two = [
        ("authorization", right.as_str()),
        ("authorization", "Basic eDp5"),
    ];
    assert_eq!(send(&gw, path, "two", &two).await.0, 400);
    let get = |path: &str, auth: &str| {
        let request = client()
            .get(gw.url(path))
            .header("authorization", auth.to_owned());
        async move { request.send().await.expect("request").status().as_u16() }
    };
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let admin = format!("{scheme} adm_0123456789abcdef");
        assert_eq!(get("/admin/outbox", &admin).await, 200, "{scheme}");
        let command = format!("{scheme} cmd-token-0123456789");
        assert_eq!(
            get("/api/acme/openscape/calls", &command).await,
            200,
            "{scheme}"
        );
    }
    assert_eq!(
        get("/admin/outbox", "Basic adm_0123456789abcdef").await,
        401
    );
    assert_eq!(
        get("/admin/outbox", "Bearer adm_0123456789abcdeX").await,
        401
    );
    let mut want = vec!["s0", "s1", "s2", "s3"];
    want.sort();
    assert_eq!(delivered_ids(&rx).await, want);
    gw.stop().await;
}

/// A gateway listening on every address (not loopback), reached over 127.0.0.1.
async fn public_gateway(rx: &Receiver, extra: &str) -> Gateway {
    Gateway::start_edited(&rx.url("/hooks"), |toml| {
        // A public listener needs inbound credentials for the tenant.
        toml.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"")
            + "[tenants.inbound]\nallow_ips = [\"192.0.2.1\"]\n"
            + extra
    })
    .await
}

#[tokio::test]
async fn metrics_follow_the_admin_rule() {
    let rx = Receiver::start().await;
    let metrics = |gw: &Gateway, lines: &[(&str, &str)]| {
        let mut request = client().get(gw.url("/metrics"));
        for (name, value) in lines {
            request = request.header(*name, *value);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            if status == 200 {
                assert!(body.contains("ivrgate_"), "{body}");
            }
            status
        }
    };
    // On a loopback listener, loopback clients read metrics (as before).
    let gw = Gateway::start(&rx.url("/hooks"), "").await;
    assert_eq!(metrics(&gw, &[]).await, 200);
    assert_eq!(
        metrics(&gw, &[("x-forwarded-for", "203.0.113.7")]).await,
        401,
        "through a proxy"
    );
    gw.stop().await;

    // On a public listener: nobody without the token or an allowed address.
    let gw = public_gateway(&rx, "").await;
    assert_eq!(metrics(&gw, &[]).await, 401);
    gw.stop().await;

    let gw = public_gateway(&rx, "\n[admin]\ntoken = \"adm_0123456789abcdef\"\n").await;
    assert_eq!(metrics(&gw, &[]).await, 401);
    assert_eq!(
        metrics(&gw, &[("authorization", "Bearer adm_0123456789abcdef")]).await,
        200
    );
    assert_eq!(
        metrics(&gw, &[("authorization", "Bearer wrong_0123456789ab")]).await,
        401
    );
    gw.stop().await;

    // A scraper's addresses.
    let gw = public_gateway(&rx, "\n[admin]\nmetrics_allow = [\"127.0.0.1\"]\n").await;
    assert_eq!(metrics(&gw, &[]).await, 200);
    gw.stop().await;
    let gw = public_gateway(&rx, "\n[admin]\nmetrics_allow = [\"10.1.0.0/16\"]\n").await;
    assert_eq!(metrics(&gw, &[]).await, 401);
    gw.stop().await;
    // Behind a trusted proxy the forwarded client counts.
    let gw = public_gateway(
        &rx,
        "\n[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[admin]\nmetrics_allow = [\"10.0.0.5\", \"10.1.0.0/16\"]\n",
    )
    .await;
    assert_eq!(metrics(&gw, &[("x-forwarded-for", "10.0.0.5")]).await, 200);
    assert_eq!(metrics(&gw, &[("x-forwarded-for", "10.1.2.3")]).await, 200);
    assert_eq!(metrics(&gw, &[("x-forwarded-for", "10.0.0.6")]).await, 401);
    assert_eq!(metrics(&gw, &[]).await, 401, "the proxy itself");
    gw.stop().await;
}
