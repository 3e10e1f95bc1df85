//! The client side: requests to a WCF-style service (BasicHttpBinding: SOAP 1.1, document/
//! literal wrapped) and its answers and faults.

use super::{decode, escape_into, parse, Element, Limits, Version, ARRAYS_NS, SOAP11_NS};
use crate::WireError;

/// The Content-Type of a SOAP 1.1 request.
pub const REQUEST_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The `SOAPAction` header value for an action: SOAP 1.1 wants it quoted.
pub fn soap_action(action: &str) -> String {
    format!("\"{}\"", action.replace('"', ""))
}

/// Writes XML elements in exactly the order they are added, escaping text and attribute
/// values. Element and attribute names are the caller's constants and are written as given
/// (`"a:SessionId"`); a prefix used in a name or by [`Builder::nil`] (`i`) must be declared on
/// an enclosing element, as WCF does on the parameter element:
///
/// ```
/// use ivrgate_wire::soap::{Builder, XSI_NS};
/// let mut b = Builder::new();
/// b.start_with("args", &[("xmlns:a", "urn:x"), ("xmlns:i", XSI_NS)])
///     .leaf("a:SessionId", "s-1")
///     .nil("a:Note")
///     .array("a:TenantIds", ivrgate_wire::soap::ARRAYS_NS, "int", ["1", "2"])
///     .end();
/// assert!(b.finish().starts_with("<args xmlns:a=\"urn:x\""));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    out: String,
    open: Vec<String>,
}

impl Builder {
    /// An empty builder.
    pub fn new() -> Self {
        Builder::default()
    }

    fn tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value);
            self.out.push('"');
        }
    }

    /// Opens an element; [`Builder::end`] closes it.
    pub fn start(&mut self, name: &str) -> &mut Self {
        self.start_with(name, &[])
    }

    /// Opens an element with attributes (namespace declarations included).
    pub fn start_with(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.tag(name, attrs);
        self.out.push('>');
        self.open.push(name.to_owned());
        self
    }

    /// Closes the innermost open element (nothing when none is open).
    pub fn end(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(&name);
            self.out.push('>');
        }
        self
    }

    /// Writes escaped text into the open element.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&mut self.out, text);
        self
    }

    /// `<name>text</name>`.
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.leaf_with(name, &[], text)
    }

    /// `<name attrs>text</name>`.
    pub fn leaf_with(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start_with(name, attrs).text(text).end()
    }

    /// `<name attrs/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.tag(name, attrs);
        self.out.push_str("/>");
        self
    }

    /// `<name i:nil="true"/>` (the `i` prefix must be declared on an enclosing element).
    pub fn nil(&mut self, name: &str) -> &mut Self {
        self.empty(name, &[("i:nil", "true")])
    }

    /// A leaf when there is a value, a nil element when there is none.
    pub fn optional(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.leaf(name, v),
            None => self.nil(name),
        }
    }

    /// An array the WCF way: `<name xmlns:b="item_ns"><b:item>v</b:item>...</name>`, e.g.
    /// `array("a:TenantIds", ARRAYS_NS, "int", ["1"])`. An empty array is `<name .../>`. The
    /// prefix `b` is declared on the array element itself, so `name` must not use it.
    pub fn array<I, S>(&mut self, name: &str, item_ns: &str, item: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let item = format!("b:{item}");
        self.start_with(name, &[("xmlns:b", item_ns)]);
        let mark = self.out.len();
        for value in values {
            self.leaf(&item, value.as_ref());
        }
        if self.out.len() == mark {
            // no items: turn `<name ...>` into `<name .../>`
            self.out.pop();
            self.out.push_str("/>");
            self.open.pop();
            return self;
        }
        self.end()
    }

    /// An array of strings in WCF's arrays namespace (`<b:string>`).
    pub fn strings<I, S>(&mut self, name: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.array(name, ARRAYS_NS, "string", values)
    }

    /// The XML written so far, every element still open closed.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.end();
        }
        self.out
    }
}

fn wrap(name: &str, ns: &str, children: Builder) -> String {
    let children = children.finish();
    let mut out = String::with_capacity(children.len() + 2 * name.len() + ns.len() + 160);
    out.push_str("<s:Envelope xmlns:s=\"");
    out.push_str(SOAP11_NS);
    out.push_str("\"><s:Body><");
    out.push_str(name);
    out.push_str(" xmlns=\"");
    escape_into(&mut out, ns);
    out.push_str("\">");
    out.push_str(&children);
    out.push_str("</");
    out.push_str(name);
    out.push_str("></s:Body></s:Envelope>");
    out
}

/// A SOAP 1.1 request for operation `op` of contract namespace `ns`, document/literal
/// wrapped: `<s:Envelope><s:Body><op xmlns="ns">children</op></s:Body></s:Envelope>`, no XML
/// declaration (as WCF clients send it).
pub fn write_request(op: &str, ns: &str, children: Builder) -> String {
    wrap(op, ns, children)
}

/// A SOAP 1.1 answer for operation `op`: `<opResponse xmlns="ns">children</opResponse>` in
/// an envelope, where `children` holds `<opResult>` (for the callback services we host).
pub fn write_response(op: &str, ns: &str, children: Builder) -> String {
    wrap(&format!("{op}Response"), ns, children)
}

/// A SOAP Fault as read from an answer (1.1 or 1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapFault {
    /// The version of the envelope the fault came in.
    pub version: Version,
    /// The fault code as written (`s:Client`, `s:Sender`...).
    pub code: String,
    /// The fault string (1.1) or the first reason text (1.2).
    pub reason: String,
    /// The `detail` (1.1) or `Detail` (1.2) element, when present.
    pub detail: Option<Box<Element<'static>>>,
}

/// The detail of a CTI Portal fault: `CTIPortalServiceFault{ErrorCode, Message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalServiceFault {
    /// The `FaultErrorCode` name (`InvalidSessionId`, `MaxNumberClientConnections`...).
    pub error_code: String,
    /// The message (empty when absent or nil).
    pub message: String,
}

impl SoapFault {
    /// The local part of the fault code (`Client` for `s:Client`).
    pub fn code_local(&self) -> &str {
        match self.code.rsplit_once(':') {
            Some((_, local)) => local,
            None => &self.code,
        }
    }

    /// The `CTIPortalServiceFault` in the detail, whatever its namespace or prefix.
    pub fn portal_service_fault(&self) -> Option<PortalServiceFault> {
        let detail = self.detail.as_ref()?;
        let fault = if detail.name.eq_ignore_ascii_case("CTIPortalServiceFault") {
            detail
        } else {
            detail.child("CTIPortalServiceFault")?
        };
        Some(PortalServiceFault {
            error_code: fault.child_value("ErrorCode")?.to_owned(),
            message: fault.child_value("Message").unwrap_or_default().to_owned(),
        })
    }
}

impl std::fmt::Display for SoapFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "soap fault {}: {}", self.code, self.reason)?;
        if let Some(p) = self.portal_service_fault() {
            write!(f, " ({}: {})", p.error_code, p.message)?;
        }
        Ok(())
    }
}

/// Why an answer did not give a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResponseError {
    /// The service answered with a SOAP Fault.
    #[error("{0}")]
    Fault(SoapFault),
    /// The answer is not a SOAP answer to this operation (or not readable at all).
    #[error(transparent)]
    Invalid(#[from] WireError),
}

/// Reads a `Fault` element (1.1 `faultcode`/`faultstring`/`detail` or 1.2
/// `Code/Value`/`Reason/Text`/`Detail`, whichever it holds).
pub fn read_fault(version: Version, fault: &Element<'_>) -> SoapFault {
    let (code, reason) = match fault.child("Code") {
        Some(code) => (
            code.child_value("Value").unwrap_or_default(),
            fault
                .child("Reason")
                .and_then(|r| r.child_value("Text"))
                .unwrap_or_default(),
        ),
        None => (
            fault.child_value("faultcode").unwrap_or_default(),
            fault.child_value("faultstring").unwrap_or_default(),
        ),
    };
    SoapFault {
        version,
        code: code.to_owned(),
        reason: reason.to_owned(),
        detail: fault
            .child("detail")
            .cloned()
            .map(|d| Box::new(d.into_owned())),
    }
}

/// Reads the answer to operation `op` (any HTTP status: WCF sends faults with 500): the
/// `{op}Result` element of `<{op}Response>`, or the fault. The body is decoded by its
/// charset and read within `limits`.
pub fn read_response(
    body: &[u8],
    content_type: Option<&str>,
    op: &str,
    limits: &Limits,
) -> Result<Element<'static>, ResponseError> {
    let text = decode(body, content_type, limits)?;
    let root = parse(&text, limits)?;
    let request = super::read_request(root, content_type)?;
    let answer = request.operation;
    if answer.name.eq_ignore_ascii_case("Fault") {
        return Err(ResponseError::Fault(read_fault(request.version, &answer)));
    }
    let expected = format!("{op}Response");
    if !answer.name.eq_ignore_ascii_case(&expected) {
        return Err(WireError::NotSoap(format!(
            "expected <{expected}>, the answer holds <{}>",
            answer.name
        ))
        .into());
    }
    let result = format!("{op}Result");
    let found = answer
        .children
        .into_iter()
        .find(|c| c.name.eq_ignore_ascii_case(&result))
        .ok_or_else(|| WireError::NotSoap(format!("<{expected}> holds no <{result}>")))?;
    Ok(found.into_owned())
}
