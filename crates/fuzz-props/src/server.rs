//! Targets for the server's own readers of untrusted input: the command API, configuration,
//! request paths, redaction and forwarding headers.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ivrgate_adapter::{
    AnswerSource, BoxFuture, Command, Decision, DecisionRequest, Entity, EntityKey,
    EventSubmission, FallbackReason, Gateway, RecordError, Recorded,
};

use crate::adapters::segments;
use crate::wire::{check_json, percent};
use crate::{header_lines, DEPTH};

// ---------------------------------------------------------------------------------------
// The command API (src/api.rs and the adapters' commands)

/// A gateway without a store: decisions take the fallback, events are stored, every entity
/// is absent. The command handlers run their request checks against it.
pub(crate) struct NoStore;

impl Gateway for NoStore {
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            Decision {
                decision_id: "dec_fuzz".into(),
                call_id: None,
                answer: (request.point.default_fallback)(),
                source: AnswerSource::Fallback(FallbackReason::Timeout),
                attached: serde_json::Map::new(),
            }
        })
    }

    fn record<'a>(
        &'a self,
        _event: EventSubmission,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async {
            Ok(Recorded::New {
                event_id: "evt_fuzz".into(),
                call_id: None,
                seq: None,
            })
        })
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }

    fn load<'a>(&'a self, _key: EntityKey) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(async { Ok(None) })
    }

    fn find<'a>(
        &'a self,
        _tenant: &'a str,
        _namespace: &'a str,
        _value: &'a str,
    ) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(async { Ok(None) })
    }

    fn list<'a>(
        &'a self,
        _tenant: &'a str,
        _kind: &'a str,
        _limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entity>, RecordError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Polls a future that never waits on anything external (the [`NoStore`] gateway answers at
/// once) to completion; `None` if it is still pending after a few polls.
pub(crate) fn run_ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..16 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Some(out);
        }
    }
    None
}

/// The command API's body reader (`web::parse_json`) and the adapters' commands. Input:
/// `METHOD adapter/path`, then the body. The body is within the limits and linear in the
/// input; every answer is a valid status with a JSON body, errors as `{"error": {"code",
/// "message"}}`.
pub fn command(data: &[u8]) {
    let ([line], body) = header_lines::<1>(data);
    let line = String::from_utf8_lossy(line);
    let (method, path) = line.split_once(' ').unwrap_or((&line, ""));
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let path = path.trim_matches('/');
    let (adapter, path) = path.split_once('/').unwrap_or((path, ""));
    let Ok(body) = ivrgate::web::parse_json(body, DEPTH) else {
        return;
    };
    check_json(&body, data.len(), "command body");
    let Some(adapter) = ivrgate::adapters::get(adapter) else {
        return;
    };
    let command = Command {
        tenant: "acme".into(),
        method,
        path: segments(path),
        query: None,
        body,
        headers: http::HeaderMap::new(),
    };
    let Some(reply) = run_ready(adapter.command(&NoStore, command)) else {
        panic!("a command waited on a gateway that answers at once");
    };
    assert!(
        (200..=599).contains(&reply.status),
        "status {}",
        reply.status
    );
    if reply.status >= 400 {
        assert!(
            reply.body["error"]["code"].is_string() && reply.body["error"]["message"].is_string(),
            "error answer without code and message: {}",
            reply.body
        );
    }
}

// ---------------------------------------------------------------------------------------
// Configuration (src/config.rs)

/// `Config::parse` then `validate` (with every adapter's settings parser): no panic, and a
/// file that validates names each tenant once.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ivrgate::config::Config::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    // `file:` secrets read files: keep the fuzzer from reading devices or large files.
    if text.contains("file:") {
        return;
    }
    if let Ok(resolved) = config.validate(ivrgate::adapters::all()) {
        for tenant in &config.tenants {
            assert!(
                resolved.tenant(&tenant.id).is_some(),
                "tenant {} lost",
                tenant.id
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request paths (crates/adapter/src/path.rs)

/// `PathSegments::parse` on the input as a raw request path: no segment is empty, none
/// holds a control character, and the segments, each percent-encoded again (`/` as `%2F`),
/// parse back as themselves; a segment holds a `/` only where the input had `%2F`.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(segments) = ivrgate_adapter::PathSegments::parse(raw) else {
        return;
    };
    let slashes: usize = segments
        .segments()
        .iter()
        .map(|s| s.matches('/').count())
        .sum();
    let encoded_slashes = raw.to_ascii_lowercase().matches("%2f").count();
    assert!(
        slashes <= encoded_slashes,
        "{slashes} '/' in segments from {encoded_slashes} %2F: {segments:?}"
    );
    for segment in segments.segments() {
        assert!(!segment.is_empty(), "empty segment in {segments:?}");
        assert!(
            !segment.chars().any(char::is_control),
            "control character in {segment:?}"
        );
    }
    let again_raw: String = segments
        .segments()
        .iter()
        .map(|s| format!("/{}", percent(s)))
        .collect();
    let again = ivrgate_adapter::PathSegments::parse(&again_raw)
        .unwrap_or_else(|e| panic!("re-encoded path does not parse ({e}): {again_raw}"));
    assert_eq!(again, segments, "segments do not survive encoding");
    // What logs show routes as the real path.
    let shown = segments.to_string();
    let from_log = ivrgate_adapter::PathSegments::parse(&shown)
        .unwrap_or_else(|e| panic!("the logged path does not parse ({e}): {shown}"));
    assert_eq!(
        from_log, segments,
        "the logged path routes elsewhere: {shown}"
    );
}

// ---------------------------------------------------------------------------------------
// Redaction (src/redact.rs)

/// Characters a planted secret is made of: no quote, escape, `#`, or URL delimiter, so it
/// stays one value wherever it is put.
fn plantable(secret: &str) -> bool {
    secret.len() >= 6
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$'()*+,;=".contains(&b))
        && secret.bytes().any(|b| b.is_ascii_digit())
        && secret.bytes().any(|b| b.is_ascii_alphabetic())
}

/// `redact::url` and `redact::toml_error` (and `Config::parse`, which applies the latter).
/// Input: a secret, then noise. Neither ever panics (on the noise alone too). A secret of
/// at least six characters (letters and digits, no delimiters), found nowhere else, planted
/// as a TOML `password = "` value before the noise, as URL credentials, or as a secret
/// query parameter, never shows in the redacted text.
pub fn redact(data: &[u8]) {
    let ([secret], noise) = header_lines::<1>(data);
    let (Ok(secret), Ok(noise)) = (std::str::from_utf8(secret), std::str::from_utf8(noise)) else {
        return;
    };
    let _ = ivrgate::redact::url(noise);
    let _ = ivrgate::redact::toml_error(noise);
    let planted = plantable(secret)
        && !noise.contains(secret)
        && !"password = https://u:@?x=1&token=".contains(secret);
    for text in [
        format!("https://u:{secret}@{noise}"),
        format!("https://{noise}?x=1&token={secret}"),
    ] {
        let shown = ivrgate::redact::url(&text);
        assert!(
            !(planted && shown.contains(secret)),
            "the secret survives redact::url: {shown}"
        );
    }
    let document = format!("password = \"{secret}{noise}");
    if let Err(e) = document.parse::<toml::Table>() {
        let shown = ivrgate::redact::toml_error(&e.to_string());
        assert!(
            !(planted && shown.contains(secret)),
            "the secret survives redact::toml_error: {shown}"
        );
    }
    if let Err(e) = ivrgate::config::Config::parse(&document, Path::new("fuzz.toml")) {
        let shown = e.to_string();
        assert!(
            !(planted && shown.contains(secret)),
            "the secret survives Config::parse: {shown}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Forwarding headers (src/auth.rs)

/// `auth::client_ip`. Input: the peer address, the trusted networks (comma-separated;
/// unreadable ones left out), then header lines (`name: value`). Never panics; an untrusted
/// peer is the client whatever the headers say; without forwarding headers the peer is the
/// client; a client other than the peer is only found through a trusted peer and is named
/// in a forwarding header.
pub fn forwarded(data: &[u8]) {
    let ([peer, trusted], rest) = header_lines::<2>(data);
    let peer_ip = String::from_utf8_lossy(peer)
        .trim()
        .parse::<std::net::IpAddr>()
        .unwrap_or(std::net::IpAddr::from([10, 0, 0, 1]));
    let peer = std::net::SocketAddr::new(peer_ip, 40000);
    let trusted: Vec<ipnet::IpNet> = String::from_utf8_lossy(trusted)
        .split(',')
        .filter_map(|net| net.trim().parse().ok())
        .collect();
    let mut headers = http::HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let client = ivrgate::auth::client_ip(peer, &headers, &trusted);
    let peer_trusted = trusted.iter().any(|net| net.contains(&peer_ip));
    if !peer_trusted {
        assert_eq!(client, Some(peer_ip), "an untrusted peer is not the client");
    }
    if !headers.contains_key("x-forwarded-for") && !headers.contains_key(http::header::FORWARDED) {
        assert_eq!(
            client,
            Some(peer_ip),
            "no forwarding header, yet not the peer"
        );
    }
    if let Some(ip) = client.filter(|ip| *ip != peer_ip) {
        assert!(peer_trusted, "{ip} found through an untrusted peer");
        let named = headers
            .get_all("x-forwarded-for")
            .iter()
            .chain(headers.get_all(http::header::FORWARDED))
            .any(|v| {
                // quoted-pairs (`"1.2.3.\\4"`) name the address too
                let v = String::from_utf8_lossy(v.as_bytes())
                    .to_ascii_lowercase()
                    .replace('\\', "");
                v.contains(&ip.to_string()) || named_v6(&v, ip)
            });
        assert!(named, "{ip} is named in no forwarding header");
    }
}

/// Whether an IPv6 address is named in a header value in some other spelling (`::0:1`).
fn named_v6(value: &str, ip: std::net::IpAddr) -> bool {
    ip.is_ipv6()
        && value
            .split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
            .flat_map(|token| [token, token.trim_matches(':')])
            .filter_map(|token| token.parse::<std::net::IpAddr>().ok())
            .any(|parsed| parsed == ip)
}
