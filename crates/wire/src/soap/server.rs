//! The server side: a platform calls us with a SOAP request; we answer in its version.

use super::{escape, Element, SOAP11_NS, SOAP12_NS};
use crate::WireError;

/// Which SOAP version a request used (and its answer must use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SOAP 1.1 (`text/xml`).
    V11,
    /// SOAP 1.2 (`application/soap+xml`).
    V12,
}

impl Version {
    /// The Content-Type of a message in this version.
    pub fn content_type(self) -> &'static str {
        match self {
            Version::V11 => "text/xml; charset=utf-8",
            Version::V12 => "application/soap+xml; charset=utf-8",
        }
    }

    /// The envelope namespace of this version.
    pub fn namespace(self) -> &'static str {
        match self {
            Version::V11 => SOAP11_NS,
            Version::V12 => SOAP12_NS,
        }
    }

    /// The version whose envelope namespace this is.
    pub fn from_namespace(namespace: &str) -> Option<Version> {
        match namespace.trim() {
            SOAP11_NS => Some(Version::V11),
            SOAP12_NS => Some(Version::V12),
            _ => None,
        }
    }
}

/// The version a request announced by its content type, if it did.
pub fn version_from_content_type(content_type: Option<&str>) -> Option<Version> {
    let ct = content_type?.to_ascii_lowercase();
    if ct.contains("application/soap+xml") {
        Some(Version::V12)
    } else if ct.contains("text/xml") {
        Some(Version::V11)
    } else {
        None
    }
}

/// A SOAP request: its version, its header (if any) and the operation element (the first
/// element inside `Body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The version of the envelope (the answer must use the same).
    pub version: Version,
    /// The `Header` element, when the envelope has one.
    pub header: Option<Element<'a>>,
    /// The operation element: `<AddInteraction>`, `<PublishCTIEvent>`...
    pub operation: Element<'a>,
}

/// Reads an envelope into its version, header and operation. The version comes from the
/// envelope's namespace; an envelope without one (seen from hand-written senders) takes the
/// version the content type announces, else 1.1. An unknown envelope namespace, a missing
/// `Body` or an empty one is refused with [`WireError::NotSoap`].
pub fn read_request<'a>(
    root: Element<'a>,
    content_type: Option<&str>,
) -> Result<Request<'a>, WireError> {
    if !root.name.eq_ignore_ascii_case("Envelope") {
        return Err(WireError::NotSoap(format!(
            "the root element is <{}>, not an Envelope",
            root.name
        )));
    }
    let version = match root.namespace.as_deref() {
        Some(ns) => Version::from_namespace(ns)
            .ok_or_else(|| WireError::NotSoap(format!("unknown SOAP envelope namespace {ns:?}")))?,
        None => version_from_content_type(content_type).unwrap_or(Version::V11),
    };
    let mut header = None;
    let mut body = None;
    for child in root.children {
        if child.name.eq_ignore_ascii_case("Header") && header.is_none() {
            header = Some(child);
        } else if child.name.eq_ignore_ascii_case("Body") && body.is_none() {
            body = Some(child);
        }
    }
    let body = body.ok_or_else(|| WireError::NotSoap("the envelope has no Body".into()))?;
    let operation = body
        .children
        .into_iter()
        .next()
        .ok_or_else(|| WireError::NotSoap("the Body holds no operation".into()))?;
    Ok(Request {
        version,
        header,
        operation,
    })
}

/// Wraps an answer (`body`, already XML) in an envelope of `version`, with the XML
/// declaration and the `xsi` and `xsd` prefixes declared for the body's use.
pub fn envelope(version: Version, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
<soap:Envelope xmlns:soap=\"{ns}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Body>{body}</soap:Body></soap:Envelope>",
        ns = version.namespace()
    )
}

/// Who a fault blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    /// The request is at fault (`soap:Client` in 1.1, `soap:Sender` in 1.2): do not resend it.
    Sender,
    /// The server is at fault (`soap:Server` / `soap:Receiver`): the same request may be sent
    /// again.
    Receiver,
}

/// A SOAP Fault of `version` in its envelope. `detail`, when given, is XML written as is inside
/// `<detail>` (1.1) or `<soap:Detail>` (1.2); build it with [`super::Builder`].
pub fn fault(version: Version, code: FaultCode, reason: &str, detail: Option<&str>) -> String {
    let reason = escape(reason);
    let body = match version {
        Version::V11 => {
            let code = match code {
                FaultCode::Sender => "soap:Client",
                FaultCode::Receiver => "soap:Server",
            };
            let detail = detail
                .map(|d| format!("<detail>{d}</detail>"))
                .unwrap_or_default();
            format!(
                "<soap:Fault><faultcode>{code}</faultcode><faultstring>{reason}</faultstring>{detail}</soap:Fault>"
            )
        }
        Version::V12 => {
            let code = match code {
                FaultCode::Sender => "soap:Sender",
                FaultCode::Receiver => "soap:Receiver",
            };
            let detail = detail
                .map(|d| format!("<soap:Detail>{d}</soap:Detail>"))
                .unwrap_or_default();
            format!(
                "<soap:Fault><soap:Code><soap:Value>{code}</soap:Value></soap:Code>\
<soap:Reason><soap:Text xml:lang=\"en\">{reason}</soap:Text></soap:Reason>{detail}</soap:Fault>"
            )
        }
    };
    envelope(version, &body)
}
