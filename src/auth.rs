//! Inbound credentials for a tenant's legacy URLs: a secret path token, HTTP Basic
//! credentials carried in the URL, and a source-address allowlist that believes
//! `X-Forwarded-For` and `Forwarded` only from trusted proxies. Tenants are isolated: a
//! request is only ever handled for the tenant its credentials belong to.
//!
//! Header rules (RFC 7230 §3.2.2, RFC 7235, RFC 7239):
//! - `X-Forwarded-For` and `Forwarded` are lists: every line of one header counts, in order,
//!   as if joined with commas. A hop that cannot be read (garbage, `unknown`, an obfuscated
//!   `_name`, a `Forwarded` element without `for=`) makes the client unknown.
//! - When both headers carry addresses they must name the same client; otherwise the client
//!   is unknown. An unknown client never passes an allowlist.
//! - `Host`, `Content-Type` and `Authorization` are not lists: the server refuses a request
//!   with more than one. Scheme names are case-insensitive (`basic`, `BEARER`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderMap;
use ipnet::IpNet;

use crate::config::ResolvedTenant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Wrong or missing path token: answered like an unknown URL.
    NotFound,
    /// Basic credentials missing or wrong.
    Unauthorized,
    /// Source address not in the allowlist, or not known.
    Forbidden,
}

/// Constant-time equality for secrets (length first, then every byte).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credentials of the request's one `Authorization` header when its scheme is `scheme`
/// (compared case-insensitively). `None` when there is no such header, more than one, or
/// another scheme.
pub fn credentials<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?.trim_start();
    let (given, rest) = value.split_once([' ', '\t'])?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim())
        .filter(|c| !c.is_empty())
}

/// The bearer-token rule of the admin and command APIs: with a token, the request must carry
/// `Authorization: Bearer <token>`; without one, only a loopback listener answers, and only
/// requests that did not come through a proxy (behind a local reverse proxy every peer is
/// loopback).
pub fn bearer_or_local(
    headers: &HeaderMap,
    token: Option<&str>,
    listen: SocketAddr,
    peer: SocketAddr,
) -> bool {
    match token {
        Some(token) => credentials(headers, "bearer")
            .is_some_and(|given| same(given.as_bytes(), token.as_bytes())),
        None => {
            let proxied =
                headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded");
            listen.ip().is_loopback() && peer.ip().is_loopback() && !proxied
        }
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// untrusted hop of `X-Forwarded-For` / `Forwarded` (all lines of each). `None` when the
/// client cannot be known: an unreadable hop, or the two headers naming different clients.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer_ip = peer.ip();
    if !is_trusted(&peer_ip) {
        return Some(peer_ip);
    }
    let xff = walk(peer_ip, forwarded_for_hops(headers), &is_trusted);
    let fwd = walk(peer_ip, forwarded_hops(headers), &is_trusted);
    match (xff, fwd) {
        (Chain::Absent, Chain::Absent) => Some(peer_ip),
        (Chain::Client(ip), Chain::Absent) | (Chain::Absent, Chain::Client(ip)) => Some(ip),
        (Chain::Client(a), Chain::Client(b)) if a == b => Some(a),
        _ => None,
    }
}

/// A client address for log lines: the address, or `unknown`.
#[derive(Debug, Clone, Copy)]
pub struct Shown(pub Option<IpAddr>);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("unknown"),
        }
    }
}

/// What one forwarding header says about the client.
#[derive(Debug, PartialEq, Eq)]
enum Chain {
    /// The header is absent (or names no address at all).
    Absent,
    Client(IpAddr),
    Unknown,
}

/// Walks hops from the right: each trusted hop passes to the one before it.
fn walk(
    peer: IpAddr,
    hops: Option<Vec<Option<IpAddr>>>,
    is_trusted: &impl Fn(&IpAddr) -> bool,
) -> Chain {
    let Some(hops) = hops else {
        return Chain::Unknown;
    };
    if hops.is_empty() {
        return Chain::Absent;
    }
    let mut ip = peer;
    for hop in hops.iter().rev() {
        let Some(hop) = hop else {
            return Chain::Unknown;
        };
        ip = *hop;
        if !is_trusted(hop) {
            break;
        }
    }
    Chain::Client(ip)
}

/// Every `X-Forwarded-For` hop, all lines in order; `None` when a line is not text.
fn forwarded_for_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for line in headers.get_all("x-forwarded-for") {
        let line = line.to_str().ok()?;
        hops.extend(
            line.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(node_ip),
        );
    }
    Some(hops)
}

/// The `for=` node of every `Forwarded` element, all lines in order (an element without
/// `for=` is an unknown hop); `None` when a line cannot be read. Empty when no element has
/// a `for=` at all (a proxy that only says `proto=https` tells nothing about addresses).
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut any_for = false;
    for line in headers.get_all(http::header::FORWARDED) {
        for element in forwarded_elements(line.to_str().ok()?)? {
            let mut node = None;
            for (name, value) in element {
                if name.eq_ignore_ascii_case("for") {
                    if node.is_some() {
                        return None;
                    }
                    node = Some(value);
                }
            }
            any_for |= node.is_some();
            hops.push(node.as_deref().and_then(node_ip));
        }
    }
    Some(if any_for { hops } else { Vec::new() })
}

/// One hop's address: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711` (a port may be obfuscated, `:_p1`). `None` for anything else
/// (`unknown`, `_hidden`, garbage).
fn node_ip(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(port);
        return port_ok
            .then(|| inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (host, p) = node.split_once(':')?;
    if !port(p) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn port(p: &str) -> bool {
    let obfuscated = p.strip_prefix('_').is_some_and(|o| {
        !o.is_empty()
            && o.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    });
    obfuscated || (!p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

/// RFC 7239 `Forwarded` elements: `a=b;c="d", e=f` → `[[(a,b),(c,d)],[(e,f)]]`. Values are
/// tokens or quoted strings (with `\` escapes). `None` on a syntax error.
fn forwarded_elements(line: &str) -> Option<Vec<Vec<(String, String)>>> {
    let mut elements = Vec::new();
    let mut element: Vec<(String, String)> = Vec::new();
    let mut chars = line.chars().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
    };
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    loop {
        skip_ws(&mut chars);
        match chars.peek() {
            None => break,
            Some(',') => {
                chars.next();
                if !element.is_empty() {
                    elements.push(std::mem::take(&mut element));
                }
                continue;
            }
            Some(';') => {
                chars.next();
                continue;
            }
            Some(_) => {}
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if !is_tchar(c) {
                break;
            }
            name.push(c);
            chars.next();
        }
        skip_ws(&mut chars);
        if name.is_empty() || chars.next() != Some('=') {
            return None;
        }
        skip_ws(&mut chars);
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if !is_tchar(c) && c != ':' && c != '[' && c != ']' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            if value.is_empty() {
                return None;
            }
        }
        element.push((name, value));
        skip_ws(&mut chars);
        match chars.peek() {
            None | Some(',') | Some(';') => {}
            Some(_) => return None,
        }
    }
    if !element.is_empty() {
        elements.push(element);
    }
    Some(elements)
}

/// Checks a request against the tenant's inbound settings. `path` is the decoded segments
/// after `/{adapter}/{tenant}`; on success returns the segments after the path token.
/// `client` is `None` when the client's address is unknown (see [`client_ip`]).
/// The address allowlist alone, for a request whose adapter authenticates it itself (a
/// platform callback carrying a token in its path; see `Adapter::authenticates_itself`).
pub fn check_address(tenant: &ResolvedTenant, client: Option<IpAddr>) -> Result<(), Denied> {
    if !tenant.allow_ips.is_empty()
        && !client.is_some_and(|ip| tenant.allow_ips.iter().any(|n| n.contains(&ip)))
    {
        return Err(Denied::Forbidden);
    }
    Ok(())
}

pub fn check<'p>(
    tenant: &ResolvedTenant,
    path: &'p [String],
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<&'p [String], Denied> {
    let mut rest = path;
    if let Some(token) = &tenant.path_token {
        let Some((first, after)) = rest.split_first() else {
            return Err(Denied::NotFound);
        };
        if !same(first.as_bytes(), token.as_bytes()) {
            return Err(Denied::NotFound);
        }
        rest = after;
    }
    check_address(tenant, client)?;
    if let Some((user, password)) = &tenant.basic_auth {
        let given = credentials(headers, "basic")
            .and_then(|b| STANDARD.decode(b).ok())
            .unwrap_or_default();
        let expected = format!("{user}:{password}");
        if !same(&given, expected.as_bytes()) {
            return Err(Denied::Unauthorized);
        }
    }
    Ok(rest)
}

/// Who may read `/metrics`: whoever the admin rule lets in ([`bearer_or_local`] with the
/// admin token), and clients in `admin.metrics_allow` (a scraper's addresses; behind a
/// trusted proxy, the forwarded client).
pub fn metrics_allowed(
    headers: &HeaderMap,
    admin_token: Option<&str>,
    listen: SocketAddr,
    peer: SocketAddr,
    client: Option<IpAddr>,
    allow: &[IpNet],
) -> bool {
    bearer_or_local(headers, admin_token, listen, peer)
        || client.is_some_and(|ip| allow.iter().any(|n| n.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(*name, value.parse().expect("header value"));
        }
        h
    }

    fn client(peer: &str, lines: &[(&'static str, &str)], trusted: &[&str]) -> Option<String> {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().expect("net")).collect();
        let peer: SocketAddr = peer.parse().expect("addr");
        client_ip(peer, &headers(lines), &trusted).map(|ip| ip.to_string())
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let xff = [("x-forwarded-for", "198.51.100.7, 10.2.2.2")];
        let proxy = ["10.0.0.0/8"];
        assert_eq!(
            client("10.1.1.1:5000", &xff, &proxy).as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            client("203.0.113.9:5000", &xff, &proxy).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            client("10.1.1.1:5000", &xff, &[]).as_deref(),
            Some("10.1.1.1")
        );
        assert_eq!(
            client("10.1.1.1:5000", &[], &proxy).as_deref(),
            Some("10.1.1.1")
        );
    }

    #[test]
    fn every_line_of_a_list_header_counts() {
        let proxy = ["127.0.0.1/32"];
        let two = [
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-for", "203.0.113.7"),
        ];
        assert_eq!(
            client("127.0.0.1:1", &two, &proxy).as_deref(),
            Some("203.0.113.7")
        );
        let fwd = [
            ("forwarded", "for=10.9.9.9"),
            ("forwarded", "for=203.0.113.7;proto=https"),
        ];
        assert_eq!(
            client("127.0.0.1:1", &fwd, &proxy).as_deref(),
            Some("203.0.113.7")
        );
    }

    #[test]
    fn unreadable_hops_and_disagreeing_headers_make_the_client_unknown() {
        let proxy = ["127.0.0.1/32"];
        for lines in [
            vec![("x-forwarded-for", "10.9.9.9, garbage")],
            vec![("x-forwarded-for", "unknown")],
            vec![("forwarded", "for=unknown")],
            vec![("forwarded", "for=\"_hidden\"")],
            vec![("forwarded", "for=10.9.9.9, proto=https")],
            vec![("forwarded", "for=10.9.9.9;for=10.9.9.8")],
            vec![("forwarded", "for=\"10.9.9.9")],
            vec![
                ("x-forwarded-for", "10.9.9.9"),
                ("forwarded", "for=203.0.113.7"),
            ],
        ] {
            assert_eq!(client("127.0.0.1:1", &lines, &proxy), None, "{lines:?}");
        }
        // Both headers naming the same client: that client.
        let both = [
            ("x-forwarded-for", "10.9.9.9"),
            ("forwarded", "for=10.9.9.9;proto=https"),
        ];
        assert_eq!(
            client("127.0.0.1:1", &both, &proxy).as_deref(),
            Some("10.9.9.9")
        );
        // A Forwarded header without any for= says nothing about addresses.
        let proto = [
            ("x-forwarded-for", "10.9.9.9"),
            ("forwarded", "proto=https;host=example.com"),
        ];
        assert_eq!(
            client("127.0.0.1:1", &proto, &proxy).as_deref(),
            Some("10.9.9.9")
        );
    }

    #[test]
    fn forwarded_nodes() {
        let proxy = ["127.0.0.1/32"];
        for (value, want) in [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            ("for=\"192.0.2.43:47011\"", "192.0.2.43"),
            ("for=192.0.2.43:_p1", "192.0.2.43"),
            ("for=198.51.100.17, for=\"127.0.0.1\"", "198.51.100.17"),
            ("for=\"\\1\\9\\8.51.100.17\"", "198.51.100.17"),
        ] {
            assert_eq!(
                client("127.0.0.1:1", &[("forwarded", value)], &proxy).as_deref(),
                Some(want),
                "{value}"
            );
        }
        for (value, want) in [
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("192.0.2.1:8080", "192.0.2.1"),
            (" 192.0.2.1 ,, ", "192.0.2.1"),
        ] {
            assert_eq!(
                client("127.0.0.1:1", &[("x-forwarded-for", value)], &proxy).as_deref(),
                Some(want),
                "{value}"
            );
        }
    }

    #[test]
    fn authorization_schemes_are_case_insensitive_and_single() {
        let h = headers(&[("authorization", "bearer abc")]);
        assert_eq!(credentials(&h, "Bearer"), Some("abc"));
        let h = headers(&[("authorization", "BASIC  dTpw ")]);
        assert_eq!(credentials(&h, "basic"), Some("dTpw"));
        assert_eq!(credentials(&h, "bearer"), None);
        let h = headers(&[("authorization", "Bearer")]);
        assert_eq!(credentials(&h, "bearer"), None);
        let h = headers(&[("authorization", "Bearerabc")]);
        assert_eq!(credentials(&h, "bearer"), None);
        let h = headers(&[
            ("authorization", "Bearer good"),
            ("authorization", "Bearer other"),
        ]);
        assert_eq!(credentials(&h, "bearer"), None);
    }
}
