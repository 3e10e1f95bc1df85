//! TLS on the listener, on rustls (never OpenSSL): the server configuration built from the
//! PEM files `[server.tls]` names, and the handshake of one accepted connection.
//!
//! The configuration is built by [`crate::config::Config::validate_on`], so the files are
//! read at start and again on every reload: a file that cannot be used is a configuration
//! error (start refused, reload refused with the running certificate kept). The server takes
//! the running configuration's TLS for each new connection, so after a reload new handshakes
//! use the new certificate while open connections keep theirs.
//!
//! Only TLS 1.2 and 1.3 are offered, with rustls's ring suites: ECDHE key exchange and AEAD
//! ciphers (AES-GCM, ChaCha20-Poly1305); no CBC, RSA key exchange or SHA-1 suites exist in it.
//! Messages never quote a file's bytes: a key file's content is a secret.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{ClientAuth, TlsConfig, TlsVersion};

/// The listener's TLS configuration, shared by every connection accepted while it runs.
pub type ServerTls = Arc<rustls::ServerConfig>;

/// Builds the listener's TLS configuration from `[server.tls]`, reading its files; the error
/// names the setting and the file and says what is wrong, never quoting the file.
pub fn server_config(tls: &TlsConfig) -> Result<ServerTls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    // Both files are read, so a swapped pair is reported as such.
    let (certs, key) = match (
        read_certs(&tls.cert_file, "server.tls.cert_file"),
        read_key(&tls.key_file),
    ) {
        (Ok(certs), Ok(key)) => (certs, key),
        (certs, key) => {
            let problems: Vec<String> = [certs.err(), key.err()].into_iter().flatten().collect();
            return Err(problems.join("\n"));
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("server.tls: {e}"))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path, "server.tls.client_ca_file")? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "server.tls.client_ca_file {}: not a usable CA certificate: {e}",
                        path.display()
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = match tls.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("server.tls.client_ca_file {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "server.tls.key_file {} is not the key of the certificate in server.tls.cert_file {}",
            tls.key_file.display(),
            tls.cert_file.display()
        ),
        other => format!(
            "server.tls: the certificate {} and key {} cannot be used together: {other}",
            tls.cert_file.display(),
            tls.key_file.display()
        ),
    })?;
    // The server speaks HTTP/1.1 only; a client offering ALPN learns it in the handshake.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file (other sections are skipped); at least one.
fn read_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{setting}: cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{setting} {}: {}", path.display(), pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{setting} {}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let setting = "server.tls.key_file";
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{setting}: cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{setting} {}: no PEM private key (\"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \
             \"EC PRIVATE KEY\") in the file",
            path.display()
        ),
        other => format!("{setting} {}: {}", path.display(), pem_problem(&other)),
    })
}

/// What is wrong with a PEM file, without quoting it (some variants carry a line of it).
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
        pem::Error::NoItemsFound => "nothing PEM in the file",
        _ => "not a readable PEM file",
    }
}

/// Certificates this close to their end get a warning (`check-config`, `serve`, reloads).
pub const EXPIRY_WARNING_DAYS: u64 = 30;

/// A warning when the listener's certificate (the first in `cert_file`) has expired, is not
/// valid yet, or expires within [`EXPIRY_WARNING_DAYS`]: rustls serves it either way, but
/// clients will refuse it.
pub fn expiry_warning(cert_file: &Path, now: std::time::SystemTime) -> Option<String> {
    use x509_cert::der::Decode;
    let bytes = std::fs::read(cert_file).ok()?;
    let der = CertificateDer::pem_slice_iter(&bytes).next()?.ok()?;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
    let validity = &cert.tbs_certificate.validity;
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?;
    let not_after = validity.not_after.to_unix_duration();
    let not_before = validity.not_before.to_unix_duration();
    let shown = cert_file.display();
    let date = |d: Duration| {
        time::OffsetDateTime::from_unix_timestamp(d.as_secs() as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{}s after 1970", d.as_secs()))
    };
    if now >= not_after {
        Some(format!(
            "server.tls.cert_file {shown}: the certificate expired at {}; clients will refuse it",
            date(not_after)
        ))
    } else if now < not_before {
        Some(format!(
            "server.tls.cert_file {shown}: the certificate is not valid before {}; clients will refuse it until then",
            date(not_before)
        ))
    } else {
        let left = not_after - now;
        let days = left.as_secs() / 86_400;
        (days < EXPIRY_WARNING_DAYS).then(|| {
            format!(
                "server.tls.cert_file {shown}: the certificate expires in {days} day(s), at {}; \
                 renew it and reload",
                date(not_after)
            )
        })
    }
}

/// A warning when the key file may be read by users other than its owner and group.
pub fn key_file_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!(
            "server.tls.key_file {} is readable by every user (mode {:o}); \
             chmod o-r it (0640 with the service's group, or 0600)",
            path.display(),
            mode & 0o777
        )
    })
}

/// A connection after the handshake, or why there is none.
pub enum Accepted {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Handshake failed, timed out or the client spoke plain HTTP; already logged and counted.
    Refused,
}

/// The reason label of a failed handshake (`ivrgate_tls_handshake_failures_total`).
fn reason(e: &std::io::Error) -> &'static str {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::PeerIncompatible(p)) => match p {
            // A TLS 1.0/1.1 client hello lacks the signature_algorithms extension, which
            // rustls checks before the version.
            rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::SignatureAlgorithmsExtensionRequired
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
            | rustls::PeerIncompatible::Tls13RequiredForQuic
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired => "protocol_version",
            rustls::PeerIncompatible::NoCipherSuitesInCommon => "no_common_cipher",
            _ => "incompatible",
        },
        Some(rustls::Error::NoCertificatesPresented) => "no_client_certificate",
        Some(rustls::Error::InvalidCertificate(_)) => "bad_client_certificate",
        Some(rustls::Error::NoApplicationProtocol) => "alpn",
        Some(_) => "protocol_error",
        None if e.kind() == ErrorKind::UnexpectedEof => "closed",
        None => "io",
    }
}

/// The TLS handshake of one accepted connection within `timeout`. A client that sends plain
/// HTTP gets a plain `400` saying the listener speaks HTTPS (so a platform set up with
/// `http://` learns why) and the connection is closed. Failures are logged with the peer
/// and counted by reason.
pub async fn accept(
    tls: ServerTls,
    mut stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    metrics: &crate::metrics::Metrics,
) -> Accepted {
    let fail = |reason: &str| {
        metrics
            .tls_handshake_failures
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: reason.to_owned(),
            })
            .inc();
    };
    let timed_out = || {
        fail("timeout");
        tracing::warn!(
            %peer,
            timeout_ms = timeout.as_millis() as u64,
            "TLS handshake not finished in time"
        );
        Accepted::Refused
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // A TLS record starts with its content type (22 for a handshake); a letter is the
    // start of a plain HTTP request line.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Err(_) => return timed_out(),
        Ok(Ok(1)) if first[0].is_ascii_alphabetic() => {
            fail("plain_http");
            tracing::warn!(%peer, "plain HTTP request on the TLS listener; answered 400");
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Connection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
                PLAIN_HTTP_BODY.len()
            );
            let _ = tokio::time::timeout_at(deadline, async {
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
            return Accepted::Refused;
        }
        Ok(_) => {}
    }
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => Accepted::Tls(Box::new(stream)),
        Ok(Err(e)) => {
            let reason = reason(&e);
            fail(reason);
            tracing::warn!(%peer, reason = %reason, error = %e, "TLS handshake failed");
            Accepted::Refused
        }
        Err(_) => timed_out(),
    }
}

/// The body of the answer to a plain HTTP request on the TLS listener.
pub const PLAIN_HTTP_BODY: &str = "this listener speaks HTTPS: use an https:// URL\n";
