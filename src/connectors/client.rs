//! The clients through which the core reaches a platform on an adapter's behalf: a
//! connector's [`PlatformHttp`] (built from its spec's TLS settings) and [`ApiClient`] for
//! commands that call a platform's API. Both on rustls, without redirects, with timeouts and
//! a size cap on answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ivrgate_adapter::{
    BoxFuture, ConnectorSpec, OutboundError, OutboundRequest, OutboundResponse, PlatformClient,
};

/// The largest answer a connector's platform client reads; a larger one is an error.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The platform client: reqwest on rustls, trusting the spec's CA file in place of the web
/// PKI roots when one is given, presenting its client certificate when one is given, with
/// the spec's timeout and no redirects, reading at most [`MAX_RESPONSE_BYTES`].
pub struct PlatformHttp {
    client: Option<reqwest::Client>,
    timeout: Duration,
}

impl PlatformHttp {
    /// Builds the client for a spec, or says why it cannot (an unreadable or invalid file).
    pub fn new(spec: &ConnectorSpec) -> Result<PlatformHttp, String> {
        let tls = &spec.tls;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(spec.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if let Some(ca_file) = &tls.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|e| format!("cannot read CA file {}: {e}", ca_file.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("CA file {}: {e}", ca_file.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "CA file {} holds no certificate",
                    ca_file.display()
                ));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert).map_err(|e| {
                    format!("cannot read client certificate {}: {e}", cert.display())
                })?;
                let key_pem = std::fs::read(key)
                    .map_err(|e| format!("cannot read client key {}: {e}", key.display()))?;
                pem.push(b'\n');
                pem.extend_from_slice(&key_pem);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err("a client certificate needs both its certificate and key file".into()),
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the platform client: {e}"))?;
        Ok(PlatformHttp {
            client: Some(client),
            timeout: spec.request_timeout,
        })
    }

    pub(super) fn unusable() -> PlatformHttp {
        PlatformHttp {
            client: None,
            timeout: Duration::ZERO,
        }
    }

    async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        self.send_as(http::Method::POST, request).await
    }

    async fn send_as(
        &self,
        method: http::Method,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, OutboundError> {
        let Some(client) = &self.client else {
            return Err(OutboundError::Connect("no platform client".into()));
        };
        let timeout = request.timeout.unwrap_or(self.timeout);
        let get = method == http::Method::GET;
        let mut builder = client.request(method, &request.url).timeout(timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let sent = async {
            if !get {
                builder = builder.body(request.body);
            }
            let response = builder.send().await.map_err(classify)?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if response
                .content_length()
                .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
            {
                return Err(OutboundError::Body(format!(
                    "answer larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            let body = read_limited(response).await?;
            Ok(OutboundResponse {
                status,
                content_type,
                body,
            })
        };
        // The whole exchange (connect, send, read) within the timeout.
        match tokio::time::timeout(timeout, sent).await {
            Ok(result) => result,
            Err(_) => Err(OutboundError::Timeout),
        }
    }
}

/// A client error as one line: the error and its causes (TLS details are in the causes), with
/// any URL in it redacted.
fn classify(e: reqwest::Error) -> OutboundError {
    let (timeout, body) = (e.is_timeout(), e.is_body() || e.is_decode());
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let text = crate::redact::url(&text);
    if timeout {
        OutboundError::Timeout
    } else if body {
        OutboundError::Body(text)
    } else {
        OutboundError::Connect(text)
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Bytes, OutboundError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(OutboundError::Body(format!(
                "answer larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl PlatformClient for PlatformHttp {
    fn post(
        &self,
        request: OutboundRequest,
    ) -> BoxFuture<'_, Result<OutboundResponse, OutboundError>> {
        Box::pin(self.send(request))
    }

    fn get(
        &self,
        request: OutboundRequest,
    ) -> BoxFuture<'_, Result<OutboundResponse, OutboundError>> {
        Box::pin(self.send_as(http::Method::GET, request))
    }
}

/// The client commands use to call a platform's API on the customer's behalf
/// ([`ivrgate_adapter::Gateway::platform_api`]): the platform client with the web PKI roots,
/// every request logged (method, URL with its secrets redacted, outcome, duration) and
/// counted in `ivrgate_requests{adapter="platform_api"}` by the URL's last path segment.
pub struct ApiClient {
    http: PlatformHttp,
    metrics: Arc<crate::metrics::Metrics>,
}

impl ApiClient {
    pub fn new(metrics: Arc<crate::metrics::Metrics>) -> Result<ApiClient, String> {
        let spec = ConnectorSpec {
            name: "platform_api".into(),
            fingerprint: String::new(),
            tls: ivrgate_adapter::ClientTls::default(),
            request_timeout: Duration::from_secs(30),
        };
        Ok(ApiClient {
            http: PlatformHttp::new(&spec)?,
            metrics,
        })
    }

    async fn call(
        &self,
        method: http::Method,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, OutboundError> {
        let url = crate::redact::url(&request.url);
        let label = request
            .url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(48)
            .collect::<String>();
        let started = std::time::Instant::now();
        let result = self.http.send_as(method.clone(), request).await;
        let ms = started.elapsed().as_millis() as u64;
        let outcome = match &result {
            Ok(r) if r.status < 400 => "ok".to_owned(),
            Ok(r) => format!("http_{}", r.status),
            Err(OutboundError::Timeout) => "timeout".to_owned(),
            Err(OutboundError::Connect(_)) => "connect".to_owned(),
            Err(OutboundError::Body(_)) => "body".to_owned(),
        };
        match &result {
            Ok(r) => {
                tracing::info!(%method, url = %url, status = r.status, ms, "platform API request")
            }
            Err(e) => {
                tracing::warn!(%method, url = %url, error = %e, ms, "platform API request failed")
            }
        }
        self.metrics
            .requests
            .get_or_create(&crate::metrics::RequestLabels {
                adapter: "platform_api".to_owned(),
                method: label,
                outcome,
            })
            .inc();
        result
    }
}

impl PlatformClient for ApiClient {
    fn post(
        &self,
        request: OutboundRequest,
    ) -> BoxFuture<'_, Result<OutboundResponse, OutboundError>> {
        Box::pin(self.call(http::Method::POST, request))
    }

    fn get(
        &self,
        request: OutboundRequest,
    ) -> BoxFuture<'_, Result<OutboundResponse, OutboundError>> {
        Box::pin(self.call(http::Method::GET, request))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;
    use std::sync::Arc;

    use ivrgate_adapter::ClientTls;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    /// What the local server answers with.
    #[derive(Clone, Copy)]
    enum Answer {
        Ok,
        Huge,
        Hang,
    }

    /// A TLS server on 127.0.0.1 with the fixture certificate (signed by the fixture CA),
    /// asking for a client certificate from that CA when `client_auth`.
    async fn server(client_auth: bool, answer: Answer) -> String {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(fixture("server.pem"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
        let builder = rustls::ServerConfig::builder();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
                roots.add(ca.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(certs, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = match answer {
                        Answer::Ok => b"<ok/>".to_vec(),
                        Answer::Huge => vec![b'x'; MAX_RESPONSE_BYTES + 1],
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        format!("https://localhost:{}/CTIPortalService", addr.port())
    }

    fn spec(tls: ClientTls) -> ConnectorSpec {
        ConnectorSpec {
            name: "session".into(),
            fingerprint: "x".into(),
            tls,
            request_timeout: Duration::from_secs(5),
        }
    }

    fn with_ca() -> ClientTls {
        ClientTls {
            ca_file: Some(fixture("ca.pem")),
            ..ClientTls::default()
        }
    }

    fn post(url: &str) -> OutboundRequest {
        OutboundRequest {
            url: url.to_owned(),
            headers: vec![("SOAPAction".into(), "\"Heartbeat\"".into())],
            body: Bytes::from_static(b"<x/>"),
            timeout: None,
        }
    }

    #[tokio::test]
    async fn the_platform_client_trusts_the_ca_file_and_only_it() {
        let url = server(false, Answer::Ok).await;
        let client = PlatformHttp::new(&spec(with_ca())).unwrap();
        let answer = client.post(post(&url)).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.content_type.as_deref(), Some("text/xml"));
        assert_eq!(&answer.body[..], b"<ok/>");
        // Without the CA file, the web PKI roots do not know the test CA.
        let client = PlatformHttp::new(&spec(ClientTls::default())).unwrap();
        match client.post(post(&url)).await {
            Err(OutboundError::Connect(why)) => {
                assert!(why.to_lowercase().contains("certificate"), "{why}")
            }
            other => panic!("expected a certificate failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_platform_client_presents_its_client_certificate() {
        let url = server(true, Answer::Ok).await;
        let mtls = ClientTls {
            client_cert_file: Some(fixture("client.pem")),
            client_key_file: Some(fixture("client.key")),
            ..with_ca()
        };
        let client = PlatformHttp::new(&spec(mtls)).unwrap();
        assert_eq!(client.post(post(&url)).await.unwrap().status, 200);
        let client = PlatformHttp::new(&spec(with_ca())).unwrap();
        assert!(
            client.post(post(&url)).await.is_err(),
            "refused without a client certificate"
        );
    }

    #[tokio::test]
    async fn the_platform_client_caps_answers_and_times_out() {
        let url = server(false, Answer::Huge).await;
        let client = PlatformHttp::new(&spec(with_ca())).unwrap();
        match client.post(post(&url)).await {
            Err(OutboundError::Body(why)) => assert!(why.contains("larger than"), "{why}"),
            other => panic!("expected the size cap, got {other:?}"),
        }
        let url = server(false, Answer::Hang).await;
        let mut request = post(&url);
        request.timeout = Some(Duration::from_millis(200));
        assert_eq!(
            client.post(request).await.unwrap_err(),
            OutboundError::Timeout
        );
    }

    #[test]
    fn bad_tls_files_are_reported_not_panicked() {
        let missing = ClientTls {
            ca_file: Some(fixture("nope.pem")),
            ..ClientTls::default()
        };
        let why = PlatformHttp::new(&spec(missing)).err().unwrap();
        assert!(why.contains("cannot read CA file"), "{why}");
        let not_a_cert = ClientTls {
            ca_file: Some(fixture("server.key")),
            ..ClientTls::default()
        };
        assert!(PlatformHttp::new(&spec(not_a_cert)).is_err());
        let half = ClientTls {
            client_cert_file: Some(fixture("client.pem")),
            ..ClientTls::default()
        };
        let why = PlatformHttp::new(&spec(half)).err().unwrap();
        assert!(why.contains("both"), "{why}");
    }
}
