//! Inbound credentials for a tenant's legacy URLs: a secret path token, HTTP Basic
//! credentials carried in the URL, and a source-address allowlist that believes
//! `X-Forwarded-For` only from trusted proxies. Tenants are isolated: a request is only ever
//! handled for the tenant its credentials belong to.

use std::net::{IpAddr, SocketAddr};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ipnet::IpNet;

use crate::config::ResolvedTenant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Wrong or missing path token: answered like an unknown URL.
    NotFound,
    /// Basic credentials missing or wrong.
    Unauthorized,
    /// Source address not in the allowlist.
    Forbidden,
}

/// Constant-time equality for secrets (length first, then every byte).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer-token rule of the admin and command APIs: with a token, the request must carry
/// `Authorization: Bearer <token>`; without one, only a loopback listener answers, and only
/// requests that did not come through a proxy (behind a local reverse proxy every peer is
/// loopback).
pub fn bearer_or_local(
    headers: &http::HeaderMap,
    token: Option<&str>,
    listen: SocketAddr,
    peer: SocketAddr,
) -> bool {
    match token {
        Some(token) => headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes())),
        None => {
            let proxied =
                headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded");
            listen.ip().is_loopback() && peer.ip().is_loopback() && !proxied
        }
    }
}

/// The client's address: the peer, or the right-most untrusted `X-Forwarded-For` hop when the
/// peer is a trusted proxy.
pub fn client_ip(peer: SocketAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut ip = peer.ip();
    if !is_trusted(&ip) {
        return ip;
    }
    if let Some(header) = forwarded_for {
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(hop_ip) => {
                    ip = hop_ip;
                    if !is_trusted(&hop_ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    ip
}

/// Checks a request against the tenant's inbound settings. `path` is the decoded segments
/// after `/{adapter}/{tenant}`; on success returns the segments after the path token.
pub fn check<'p>(
    tenant: &ResolvedTenant,
    path: &'p [String],
    authorization: Option<&str>,
    client: IpAddr,
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
    if !tenant.allow_ips.is_empty() && !tenant.allow_ips.iter().any(|n| n.contains(&client)) {
        return Err(Denied::Forbidden);
    }
    if let Some((user, password)) = &tenant.basic_auth {
        let given = authorization
            .and_then(|h| {
                h.strip_prefix("Basic ")
                    .or_else(|| h.strip_prefix("basic "))
            })
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .unwrap_or_default();
        let expected = format!("{user}:{password}");
        if !same(&given, expected.as_bytes()) {
            return Err(Denied::Unauthorized);
        }
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpNet = "10.0.0.0/8".parse().expect("net");
        let peer: SocketAddr = "10.1.1.1:5000".parse().expect("addr");
        let outside: SocketAddr = "203.0.113.9:5000".parse().expect("addr");
        let xff = Some("198.51.100.7, 10.2.2.2");
        assert_eq!(client_ip(peer, xff, &[proxy]).to_string(), "198.51.100.7");
        assert_eq!(client_ip(outside, xff, &[proxy]).to_string(), "203.0.113.9");
        assert_eq!(client_ip(peer, xff, &[]).to_string(), "10.1.1.1");
    }
}
