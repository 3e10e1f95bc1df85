//! The HTTP client of decision webhooks: hyper's pooled client on rustls, driven directly.
//! A decision is one signed POST to a URL parsed when the configuration loads, answered
//! within its deadline: reqwest's layers around the same hyper client (redirect and retry
//! policies, the URL parsed and formatted again per request, header maps merged and copied)
//! cost the decision path time and allocations for nothing it uses. Event deliveries stay
//! on reqwest.
//!
//! What the decision client keeps from the reqwest client it replaces: redirects are never
//! followed (a 3xx is the answer), TCP_NODELAY, TCP keepalive, 256 idle connections per
//! host, a 2 s connect limit (TCP and TLS handshake together), HTTP/2 when the receiver
//! offers it by ALPN, the public webpki roots plus the tenant's `ca_file`, `accept: */*`,
//! and credentials in the URL sent as Basic authorization. With a proxy in the environment
//! (`HTTPS_PROXY` and the like, which reqwest honours), decisions go through reqwest as
//! before, so they take the proxy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

/// How long a connection may take to be made, TLS handshake included.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);
/// Idle connections kept per host: enough for a burst of concurrent decisions.
const IDLE_PER_HOST: usize = 256;
/// How long an idle connection is kept (reqwest's default).
const IDLE_FOR: Duration = Duration::from_secs(90);

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// A decision URL, parsed once: the URL (for logs and breakers), the request URI without
/// credentials, and the credentials as the Basic authorization they are sent as.
#[derive(Clone)]
pub struct Target {
    pub url: reqwest::Url,
    uri: Uri,
    authorization: Option<HeaderValue>,
}

impl Target {
    /// The request target of `url`, or why it cannot be one (the reason never holds the
    /// URL, which may carry credentials).
    pub fn new(url: reqwest::Url) -> Result<Target, String> {
        let mut bare = url.clone();
        let authorization = credentials(&mut bare);
        let uri = bare
            .as_str()
            .parse::<Uri>()
            .map_err(|e| format!("not usable as an HTTP request target: {e}"))?;
        Ok(Target {
            url,
            uri,
            authorization,
        })
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::redact::url(self.url.as_str()))
    }
}

/// Takes the user name and password out of `url` (percent-decoded, as reqwest does) and
/// gives them as a Basic authorization header.
fn credentials(url: &mut reqwest::Url) -> Option<HeaderValue> {
    use base64::Engine;
    if !url.has_authority() || (url.username().is_empty() && url.password().is_none()) {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
    };
    let user = decode(url.username()).ok()?;
    let password = match url.password() {
        Some(p) => Some(decode(p).ok()?),
        None => None,
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let pair = format!("{user}:{}", password.unwrap_or_default());
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

type Connector = ConnectWithin<HttpsConnector<HttpConnector>>;

/// The decision client. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub enum DecisionClient {
    Direct(Box<Client<Connector, Full<Bytes>>>),
    /// A proxy is configured in the environment: reqwest, which takes it.
    Proxied(reqwest::Client),
}

/// Why the decision client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("trusted roots: {0}")]
    Roots(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
}

impl DecisionClient {
    /// A client trusting the public webpki roots and `extra_roots`.
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<DecisionClient, BuildError> {
        if let Some(name) = environment_proxy() {
            tracing::info!(
                variable = name,
                "a proxy is set in the environment: decision webhooks go through reqwest, which uses it"
            );
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(IDLE_PER_HOST)
                .tcp_nodelay(true)
                .connect_timeout(CONNECT_WITHIN);
            for root in extra_roots {
                builder = builder.add_root_certificate(reqwest::Certificate::from_der(root)?);
            }
            return Ok(DecisionClient::Proxied(builder.build()?));
        }
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for root in extra_roots {
            roots
                .add(root.clone())
                .map_err(|e| BuildError::Roots(e.to_string()))?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_WITHIN));
        // As reqwest's: dead peers are noticed on idle pooled connections.
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        #[cfg(target_os = "linux")]
        http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let connector = ConnectWithin {
            inner: HttpsConnector::from((http, tls)),
            limit: CONNECT_WITHIN,
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_FOR)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .build(connector);
        Ok(DecisionClient::Direct(Box::new(client)))
    }

    /// POSTs a signed decision body to `target` and reads the answer's status and up to
    /// `cap` bytes of its body. A redirect is an answer like any other: never followed.
    pub async fn post(
        &self,
        target: &Target,
        webhook: &WebhookHeaders<'_>,
        body: &[u8],
        cap: usize,
    ) -> Result<(StatusCode, Bytes), SendError> {
        let client = match self {
            DecisionClient::Direct(client) => client,
            DecisionClient::Proxied(client) => {
                let response = client
                    .post(target.url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(WEBHOOK_ID, webhook.id)
                    .header(WEBHOOK_TIMESTAMP, webhook.timestamp)
                    .header(WEBHOOK_SIGNATURE, webhook.signature)
                    .body(body.to_vec())
                    .send()
                    .await
                    .map_err(SendError::Reqwest)?;
                let status = response.status();
                let bytes = crate::core::read_capped(response, cap)
                    .await
                    .map_err(SendError::Reqwest)?;
                return Ok((status, bytes));
            }
        };
        let mut request = Request::new(Full::new(Bytes::copy_from_slice(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = target.uri.clone();
        let headers = request.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(WEBHOOK_ID, value(webhook.id)?);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(webhook.timestamp));
        headers.insert(WEBHOOK_SIGNATURE, value(webhook.signature)?);
        if let Some(authorization) = &target.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        let response = client.request(request).await.map_err(SendError::Send)?;
        let status = response.status();
        let bytes = read_capped(response.into_body(), cap)
            .await
            .map_err(SendError::Body)?;
        Ok((status, bytes))
    }
}

/// The webhook headers of one decision request.
pub struct WebhookHeaders<'a> {
    pub id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
}

fn value(text: &str) -> Result<HeaderValue, SendError> {
    HeaderValue::from_str(text).map_err(|_| SendError::Header)
}

/// The name of the first proxy variable set in the environment, of those reqwest reads.
fn environment_proxy() -> Option<&'static str> {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .find(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// Reads a body up to `cap` bytes; a body of one chunk (the usual answer) is not copied.
/// Reading it to its end also lets the connection go back to the pool.
async fn read_capped<B>(mut body: B, cap: usize) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue;
        };
        let len = joined.as_ref().map_or(first.len(), BytesMut::len);
        let chunk = chunk.slice(..chunk.len().min(cap.saturating_sub(len)));
        match &mut joined {
            Some(all) => all.extend_from_slice(&chunk),
            None if first.is_empty() => first = chunk,
            None => {
                let mut all = BytesMut::with_capacity(first.len() + chunk.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&chunk);
                joined = Some(all);
            }
        }
        if joined.as_ref().map_or(first.len(), BytesMut::len) >= cap {
            break;
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// What went wrong sending a decision or reading its answer.
#[derive(Debug)]
pub enum SendError {
    /// Connecting, sending the request or reading the answer's head.
    Send(hyper_util::client::legacy::Error),
    /// Reading the answer's body.
    Body(hyper::Error),
    /// A header value the request cannot carry.
    Header,
    /// Through the proxied client.
    Reqwest(reqwest::Error),
}

impl SendError {
    /// A timeout (connecting, or reading), as opposed to a failure.
    pub fn is_timeout(&self) -> bool {
        match self {
            SendError::Send(e) => crate::failure::is_timeout(e),
            SendError::Body(e) => crate::failure::is_timeout(e),
            SendError::Header => false,
            SendError::Reqwest(e) => e.is_timeout(),
        }
    }

    /// What went wrong, in the words of [`crate::failure::describe`].
    pub fn describe(&self, timeout: Duration) -> String {
        if self.is_timeout() {
            return crate::failure::timed_out(timeout);
        }
        match self {
            SendError::Send(e) => crate::failure::explain(Some(e), e.is_connect(), timeout),
            SendError::Body(e) => crate::failure::explain(Some(e), false, timeout),
            SendError::Header => "request error: a webhook header value is not valid".into(),
            SendError::Reqwest(e) => crate::failure::describe(e, timeout),
        }
    }
}

/// A connector that gives up after `limit`, the TLS handshake included (hyper's own connect
/// timeout covers the TCP connection only).
#[derive(Clone)]
pub struct ConnectWithin<S> {
    inner: S,
    limit: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> tower_service::Service<Uri> for ConnectWithin<S>
where
    S: tower_service::Service<Uri>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("not connected within {} ms", limit.as_millis()),
                )) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_basic_authorization_and_leave_the_uri() {
        let url = reqwest::Url::parse("https://us%65r:p%40ss@example.com:8443/hook?token=t")
            .expect("url");
        let target = Target::new(url).expect("target");
        assert_eq!(
            target.uri.to_string(),
            "https://example.com:8443/hook?token=t"
        );
        // "user:p@ss"
        assert_eq!(
            target.authorization.as_ref().expect("authorization"),
            "Basic dXNlcjpwQHNz"
        );
        assert!(target
            .authorization
            .as_ref()
            .is_some_and(|v| v.is_sensitive()));
        let plain = Target::new(reqwest::Url::parse("http://h/x").expect("url")).expect("target");
        assert!(plain.authorization.is_none());
        assert_eq!(
            format!("{target:?}"),
            "https://***:***@example.com:8443/hook?token=***"
        );
    }

    /// A body of the given chunks.
    struct Chunks(std::collections::VecDeque<&'static str>);

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            let next = self.get_mut().0.pop_front();
            Poll::Ready(
                next.map(|c| Ok(hyper::body::Frame::data(Bytes::from_static(c.as_bytes())))),
            )
        }
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_cap() {
        let read = |parts: &[&'static str], cap| {
            let body = Chunks(parts.iter().copied().collect());
            async move { read_capped(body, cap).await.expect("read") }
        };
        assert_eq!(read(&["hello"], 100).await, "hello");
        assert_eq!(read(&["hel", "lo", " you"], 100).await, "hello you");
        assert_eq!(read(&["hel", "lo", " you"], 4).await, "hell");
        assert_eq!(read(&["hello"], 2).await, "he");
        assert_eq!(read(&[], 2).await, "");
    }

    fn target(url: &str) -> Target {
        Target::new(reqwest::Url::parse(url).expect("url")).expect("target")
    }

    const HEADERS: WebhookHeaders<'static> = WebhookHeaders {
        id: "dec_test",
        timestamp: 1_700_000_000,
        signature: "v1,c2lnbmF0dXJl",
    };

    async fn post(client: &DecisionClient, url: &str) -> Result<(StatusCode, Bytes), SendError> {
        client.post(&target(url), &HEADERS, b"{}", 1024).await
    }

    #[tokio::test]
    async fn refused_and_dns_failures_are_told_as_before() {
        let client = DecisionClient::new(&[]).expect("client");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let timeout = Duration::from_secs(5);
        let e = post(&client, &format!("http://user:pw@127.0.0.1:{port}/hook"))
            .await
            .expect_err("nobody listens");
        assert!(!e.is_timeout());
        assert_eq!(e.describe(timeout), "connection refused");
        let e = post(&client, "http://no-such-host.invalid/hook")
            .await
            .expect_err("no such host");
        let text = e.describe(timeout);
        assert!(text.starts_with("DNS lookup failed"), "{text}");
    }

    /// A CA and a server certificate for 127.0.0.1 it signed: (CA, certificate, key).
    fn private_ca() -> (
        CertificateDer<'static>,
        CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "decision test CA");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("leaf");
        (
            CertificateDer::from(ca.der().to_vec()),
            CertificateDer::from(leaf.der().to_vec()),
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    /// A TLS receiver offering `alpn`, answering every request with `status` and the HTTP
    /// version it was asked in; its URL.
    async fn receiver(alpn: &[&[u8]], status: u16) -> (String, CertificateDer<'static>) {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let (ca, cert, key) = private_ca();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let answer =
                        service_fn(move |request: Request<hyper::body::Incoming>| async move {
                            let mut response = http::Response::new(Full::new(Bytes::from(
                                format!("{:?}", request.version()),
                            )));
                            *response.status_mut() = StatusCode::from_u16(status).expect("status");
                            response
                                .headers_mut()
                                .insert("location", HeaderValue::from_static("https://elsewhere/"));
                            Ok::<_, std::convert::Infallible>(response)
                        });
                    let io = TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, answer)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, answer)
                            .await;
                    }
                });
            }
        });
        (format!("https://127.0.0.1:{port}/hook"), ca)
    }

    #[tokio::test]
    async fn a_private_ca_is_trusted_when_given_and_alpn_picks_the_version() {
        let (h2, ca) = receiver(&[b"h2", b"http/1.1"], 200).await;
        let timeout = Duration::from_secs(5);
        // Only the public roots: the private CA is not trusted.
        let e = post(&DecisionClient::new(&[]).expect("client"), &h2)
            .await
            .expect_err("untrusted");
        assert_eq!(
            e.describe(timeout),
            "TLS: invalid peer certificate: UnknownIssuer"
        );
        let client = DecisionClient::new(&[ca]).expect("client");
        let (status, body) = post(&client, &h2).await.expect("answered");
        assert_eq!((status.as_u16(), &body[..]), (200, &b"HTTP/2.0"[..]));
        let (h1, ca) = receiver(&[], 200).await;
        let client = DecisionClient::new(&[ca]).expect("client");
        let (status, body) = post(&client, &h1).await.expect("answered");
        assert_eq!((status.as_u16(), &body[..]), (200, &b"HTTP/1.1"[..]));
    }

    #[tokio::test]
    async fn a_redirect_is_the_answer_not_followed() {
        let (url, ca) = receiver(&[], 307).await;
        let client = DecisionClient::new(&[ca]).expect("client");
        let (status, _) = post(&client, &url).await.expect("answered");
        assert_eq!(status.as_u16(), 307);
    }
}
