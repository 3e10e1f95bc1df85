//! What went wrong with an outgoing webhook (a decision or an event delivery), in words an
//! operator can act on: connection refused, DNS, TLS (with rustls's reason), timeout, or the
//! HTTP status. The text is logged and kept as the event's last error (admin API,
//! `dead-letters`), so it never carries the URL (which may hold credentials): the caller
//! logs the endpoint apart, redacted.

use std::error::Error as _;
use std::io::ErrorKind;
use std::time::Duration;

/// One line naming the kind of failure first, then the detail: `connection refused`,
/// `DNS lookup failed: ...`, `TLS: invalid peer certificate: UnknownIssuer`,
/// `timeout after 5000 ms`, `connect error: ...`, `request error: ...`.
pub fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return timed_out(timeout);
    }
    explain(e.source(), e.is_connect(), timeout)
}

/// Whether `e` or one of its causes is a timeout (an `io::Error` of kind `TimedOut`, or
/// hyper's own), as reqwest tells it.
pub fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == ErrorKind::TimedOut {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// [`describe`]'s words for a chain of causes from `first` on (the decision client's hyper
/// errors start there; a reqwest error starts with its source, whose text is the same),
/// `connect` when it failed making the connection.
pub fn explain(
    first: Option<&(dyn std::error::Error + 'static)>,
    connect: bool,
    timeout: Duration,
) -> String {
    let mut chain = Vec::new();
    let mut tls = None;
    let mut io_kind = None;
    let mut source = first;
    while let Some(cause) = source {
        // io::Errors nest (hyper's connect error wraps tokio-rustls's, which wraps the
        // rustls error), and an io::Error's `source` skips its own payload: look inside.
        let mut inner: Option<&(dyn std::error::Error + 'static)> = Some(cause);
        while let Some(e) = inner {
            if let Some(t) = e.downcast_ref::<rustls::Error>() {
                tls.get_or_insert_with(|| t.to_string());
            }
            inner = match e.downcast_ref::<std::io::Error>() {
                Some(io) => {
                    if io.kind() != ErrorKind::Other {
                        io_kind.get_or_insert(io.kind());
                    }
                    io.get_ref()
                        .map(|i| i as &(dyn std::error::Error + 'static))
                }
                None => None,
            };
        }
        chain.push(cause.to_string());
        source = cause.source();
    }
    let detail = crate::redact::url(&dedup(&chain).join(": "));
    if let Some(tls) = tls {
        return format!("TLS: {tls}");
    }
    if chain.iter().any(|c| c.starts_with("dns error")) {
        return format!("DNS lookup failed: {detail}");
    }
    match io_kind {
        Some(ErrorKind::ConnectionRefused) => return "connection refused".to_owned(),
        Some(ErrorKind::ConnectionReset) => return format!("connection reset: {detail}"),
        Some(ErrorKind::TimedOut) => return timed_out(timeout),
        _ => {}
    }
    if connect {
        format!("connect error: {detail}")
    } else {
        format!("request error: {detail}")
    }
}

pub fn timed_out(timeout: Duration) -> String {
    format!("timeout after {} ms", timeout.as_millis())
}

/// An HTTP answer that is not a success: `HTTP 503 Service Unavailable`.
pub fn status(status: http::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Drops a cause that only repeats the one before it (hyper and reqwest often nest the same
/// text).
fn dedup(chain: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in chain {
        if out.last().is_none_or(|last| !last.contains(c.as_str())) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_name_their_reason() {
        assert_eq!(
            status(http::StatusCode::SERVICE_UNAVAILABLE),
            "HTTP 503 Service Unavailable"
        );
        assert_eq!(
            status(http::StatusCode::from_u16(599).expect("status")),
            "HTTP 599"
        );
    }

    #[tokio::test]
    async fn refused_and_dns_failures_are_told_apart() {
        // A port nobody listens on (bound, then closed).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let client = reqwest::Client::new();
        let timeout = Duration::from_secs(5);
        let e = client
            .post(format!("http://user:pw@127.0.0.1:{port}/hook"))
            .send()
            .await
            .expect_err("nobody listens");
        assert_eq!(describe(&e, timeout), "connection refused");
        let e = client
            .post("http://no-such-host.invalid/hook")
            .send()
            .await
            .expect_err("no such host");
        let text = describe(&e, timeout);
        assert!(text.starts_with("DNS lookup failed"), "{text}");
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_a_tls_failure() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        let e = reqwest::Client::new()
            .post(format!("https://127.0.0.1:{port}/hook"))
            .send()
            .await
            .expect_err("untrusted");
        assert_eq!(
            describe(&e, Duration::from_secs(5)),
            "TLS: invalid peer certificate: UnknownIssuer"
        );
    }
}
