//! SOAP 1.1 and 1.2 envelopes: a small, bounded XML tree on quick-xml, the request reader and
//! the response and fault writers.
//!
//! Element names are matched by local name whatever the prefix; attributes are kept (local
//! name to value) and may be unquoted (the seed writes `InteractionType=FIFO`). DOCTYPE and
//! entity declarations are refused, references other than the five predefined entities and
//! character references are refused, and nesting is bounded by `Inbound.max_depth`.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";

/// Which SOAP version a request used (and its answer must use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V11,
    V12,
}

impl Version {
    pub fn content_type(self) -> &'static str {
        match self {
            Version::V11 => "text/xml; charset=utf-8",
            Version::V12 => "application/soap+xml; charset=utf-8",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            Version::V11 => SOAP11_NS,
            Version::V12 => SOAP12_NS,
        }
    }
}

/// An element: its local name, attributes (local names), text and child elements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    /// The namespace prefix the sender used (empty for none).
    pub prefix: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name (case-insensitive, as senders vary `ClientId` and
    /// `ClientID`).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Every child with this local name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children
            .iter()
            .filter(move |c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed text of this element.
    pub fn value(&self) -> &str {
        self.text.trim()
    }

    /// Whether the element carries `xsi:nil="true"`.
    pub fn is_nil(&self) -> bool {
        self.attr("nil").is_some_and(|v| v.trim() == "true")
    }
}

/// Why a body is not a document we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn local(name: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(name);
    match text.split_once(':') {
        Some((prefix, local)) => (prefix.to_owned(), local.to_owned()),
        None => (String::new(), text.into_owned()),
    }
}

fn start_element(tag: &BytesStart<'_>, decoder: quick_xml::encoding::Decoder) -> Element {
    let (prefix, name) = local(tag.name().as_ref());
    let mut attributes = Vec::new();
    for attr in tag.html_attributes().with_checks(false).flatten() {
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .decode_and_unescape_value(decoder)
            .map(|v| v.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(&attr.value).into_owned());
        // Namespace declarations keep their full name (`xmlns:soap`), others their local name.
        let key = if key == "xmlns" || key.starts_with("xmlns:") {
            key
        } else {
            local(key.as_bytes()).1
        };
        attributes.push((key, value));
    }
    Element {
        name,
        prefix,
        attributes,
        ..Element::default()
    }
}

/// Parses a whole document into its root element.
pub fn parse(xml: &str, max_depth: usize) -> Result<Element, XmlError> {
    let max_depth = max_depth.clamp(4, 128);
    let upper = xml.to_ascii_uppercase();
    if upper.contains("<!DOCTYPE") || upper.contains("<!ENTITY") {
        return Err(XmlError(
            "DOCTYPE and ENTITY declarations are refused".into(),
        ));
    }
    let trimmed = xml.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
    let mut reader = Reader::from_str(trimmed);
    {
        let config = reader.config_mut();
        config.check_end_names = false;
        config.trim_markup_names_in_closing_tags = true;
        config.expand_empty_elements = false;
    }
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(|e| {
            XmlError(format!(
                "malformed XML: {e} at byte {}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::DocType(_) => {
                return Err(XmlError(
                    "DOCTYPE and ENTITY declarations are refused".into(),
                ))
            }
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError("malformed XML: a second root element".into()))
            }
            Event::Start(tag) => {
                if stack.len() >= max_depth {
                    return Err(XmlError(format!("XML nested deeper than {max_depth}")));
                }
                stack.push(start_element(&tag, reader.decoder()));
            }
            Event::Empty(tag) => {
                if stack.len() >= max_depth {
                    return Err(XmlError(format!("XML nested deeper than {max_depth}")));
                }
                let element = start_element(&tag, reader.decoder());
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(tag) => {
                let (_, name) = local(tag.name().as_ref());
                let Some(open) = stack.pop() else {
                    return Err(XmlError(format!(
                        "malformed XML: unexpected closing tag </{name}>"
                    )));
                };
                if !open.name.eq_ignore_ascii_case(name.trim()) {
                    return Err(XmlError(format!(
                        "malformed XML: </{name}> does not close <{}>",
                        open.name
                    )));
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(open),
                    None => root = Some(open),
                }
            }
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|e| XmlError(format!("malformed XML text: {e}")))?;
                push_text(&mut stack, &text)?;
            }
            Event::CData(data) => {
                let text = data
                    .xml10_content()
                    .map_err(|e| XmlError(format!("malformed XML CDATA: {e}")))?;
                push_text(&mut stack, &text)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = if reference.is_char_ref() {
                    reference
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .ok_or_else(|| XmlError("bad character reference".into()))?
                        .to_string()
                } else {
                    let name = reference
                        .decode()
                        .map_err(|e| XmlError(format!("bad reference: {e}")))?;
                    quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| XmlError(format!("unknown entity &{name};")))?
                        .to_owned()
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError(format!(
            "malformed XML: input ends inside <{}>",
            open.name
        )));
    }
    root.ok_or_else(|| XmlError("malformed XML: no root element".into()))
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => {
            parent.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError(
            "malformed XML: text outside the root element".into(),
        )),
    }
}

/// A SOAP request: its version, the operation element (the first child of `Body`) and its
/// parameters (the operation's children, or those of its `<data>` wrapper).
#[derive(Debug, Clone)]
pub struct Request {
    pub version: Version,
    pub operation: Element,
    /// Whether the parameters came inside a `<data>` wrapper.
    pub wrapped: bool,
}

impl Request {
    /// The parameter element holder: `<data>` when present, the operation otherwise.
    pub fn params(&self) -> &Element {
        if self.wrapped {
            self.operation.child("data").unwrap_or(&self.operation)
        } else {
            &self.operation
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

/// Reads an envelope. Without an envelope (the seed's bare `<GetSegmentState>` example) the
/// root element is taken as the operation, in the version the content type names.
pub fn read_request(root: Element, content_type: Option<&str>) -> Result<Request, String> {
    let announced = version_from_content_type(content_type);
    if !root.name.eq_ignore_ascii_case("Envelope") {
        return Ok(Request {
            version: announced.unwrap_or(Version::V11),
            wrapped: root.child("data").is_some(),
            operation: root,
        });
    }
    let declared = if root.prefix.is_empty() {
        "xmlns".to_owned()
    } else {
        format!("xmlns:{}", root.prefix)
    };
    let namespace = root
        .attributes
        .iter()
        .find(|(k, _)| *k == declared)
        .map(|(_, v)| v.trim().to_owned());
    let version = match namespace.as_deref() {
        Some(SOAP12_NS) => Version::V12,
        Some(SOAP11_NS) => Version::V11,
        Some(other) => {
            return Err(format!("unknown SOAP envelope namespace {other:?}"));
        }
        None => announced.unwrap_or(Version::V11),
    };
    let Some(body) = root.children.into_iter().find(|c| c.name == "Body") else {
        return Err("the envelope has no Body".into());
    };
    let Some(operation) = body.children.into_iter().next() else {
        return Err("the Body holds no operation".into());
    };
    Ok(Request {
        version,
        wrapped: operation.child("data").is_some(),
        operation,
    })
}

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// A small XML writer for responses.
#[derive(Debug, Default)]
pub struct Writer {
    pub out: String,
}

impl Writer {
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn open_attrs(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(&escape(v));
            self.out.push('"');
        }
        self.out.push('>');
        self
    }

    pub fn empty_attrs(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.open_attrs(name, attrs);
        self.out.pop();
        self.out.push_str(" />");
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        self.out.push_str(&escape(text));
        self.close(name)
    }
}

/// Wraps an operation's answer (`body`, already XML) in an envelope of `version`.
pub fn envelope(version: Version, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
<soap:Envelope xmlns:soap=\"{ns}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Body>{body}</soap:Body></soap:Envelope>",
        ns = version.namespace()
    )
}

/// A SOAP Fault of `version`: the sender's fault (`soap:Client` / `soap:Sender`) with a reason.
pub fn fault(version: Version, reason: &str) -> String {
    let body = match version {
        Version::V11 => format!(
            "<soap:Fault><faultcode>soap:Client</faultcode><faultstring>{}</faultstring></soap:Fault>",
            escape(reason)
        ),
        Version::V12 => format!(
            "<soap:Fault><soap:Code><soap:Value>soap:Sender</soap:Value></soap:Code>\
<soap:Reason><soap:Text xml:lang=\"en\">{}</soap:Text></soap:Reason></soap:Fault>",
            escape(reason)
        ),
    };
    envelope(version, &body)
}

/// A SOAP Fault of `version` that blames the server, not the request (`soap:Server` /
/// `soap:Receiver`): the client may send the same request again.
pub fn server_fault(version: Version, reason: &str) -> String {
    let body = match version {
        Version::V11 => format!(
            "<soap:Fault><faultcode>soap:Server</faultcode><faultstring>{}</faultstring></soap:Fault>",
            escape(reason)
        ),
        Version::V12 => format!(
            "<soap:Fault><soap:Code><soap:Value>soap:Receiver</soap:Value></soap:Code>\
<soap:Reason><soap:Text xml:lang=\"en\">{}</soap:Text></soap:Reason></soap:Fault>",
            escape(reason)
        ),
    };
    envelope(version, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_versions_with_and_without_data() {
        let v12 = r#"<soap12:Envelope xmlns:soap12="http://www.w3.org/2003/05/soap-envelope"><soap12:Body><AddInteraction><data><Tenant>VHTLab</Tenant></data></AddInteraction></soap12:Body></soap12:Envelope>"#;
        let request = read_request(parse(v12, 32).expect("parse"), None).expect("read");
        assert_eq!(request.version, Version::V12);
        assert!(request.wrapped);
        assert_eq!(
            request.params().child("Tenant").map(Element::value),
            Some("VHTLab")
        );
        let v11 = r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body><p:CreateInteraction xmlns:p="urn:x"><p:Tenant>Portree</p:Tenant></p:CreateInteraction></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;
        let request = read_request(parse(v11, 32).expect("parse"), None).expect("read");
        assert_eq!(request.version, Version::V11);
        assert!(!request.wrapped);
        assert_eq!(request.operation.name, "CreateInteraction");
        assert_eq!(
            request.params().child("tenant").map(Element::value),
            Some("Portree")
        );
    }

    #[test]
    fn refuses_doctype_depth_and_garbage() {
        assert!(parse("<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", 32).is_err());
        assert!(parse("<x>&bogus;</x>", 32).is_err());
        let deep = "<a>".repeat(50) + &"</a>".repeat(50);
        assert!(parse(&deep, 16).is_err());
        assert!(parse("<a><b></a>", 32).is_err());
        assert!(parse("", 32).is_err());
    }

    #[test]
    fn unquoted_attributes_are_read() {
        let e = parse("<Interaction Contact=\"1\" InteractionType=FIFO />", 8).expect("parse");
        assert_eq!(e.attr("InteractionType"), Some("FIFO"));
    }
}
