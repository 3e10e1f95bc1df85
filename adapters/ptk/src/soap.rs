//! PTK's use of the shared SOAP codec ([`ivrgate_wire::soap`]): the PTK's leniencies on top
//! of it (a bare operation without an envelope, parameters inside a `<data>` wrapper) and the
//! small writer its answers are built with.
//!
//! The codec does the reading: element names are matched by local name whatever the prefix,
//! attributes may be unquoted (the seed writes `InteractionType=FIFO`), DOCTYPE and entity
//! declarations are refused, and nesting is bounded by `Inbound.max_depth`.

use ivrgate_wire::soap::Limits;
pub use ivrgate_wire::soap::{envelope, version_from_content_type, Element, Version};

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    ivrgate_wire::soap::escape(text)
}

/// Parses a whole document into its root element, nesting bounded by `max_depth` (clamped to
/// 4..=128). The body size was bounded by the server before; the element count is bounded by
/// what the size allows (an element takes at least four bytes).
pub fn parse(xml: &str, max_depth: usize) -> Result<Element<'_>, String> {
    let limits = Limits {
        max_bytes: xml.len(),
        max_depth: max_depth.clamp(4, 128),
        max_elements: xml.len() / 4 + 1,
    };
    ivrgate_wire::soap::parse(xml, &limits).map_err(|e| e.to_string())
}

/// A SOAP request: its version, the operation element (the first child of `Body`) and its
/// parameters (the operation's children, or those of its `<data>` wrapper).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub version: Version,
    pub operation: Element<'a>,
    /// Whether the parameters came inside a `<data>` wrapper.
    pub wrapped: bool,
}

impl<'a> Request<'a> {
    /// The parameter element holder: `<data>` when present, the operation otherwise.
    pub fn params(&self) -> &Element<'a> {
        if self.wrapped {
            self.operation.child("data").unwrap_or(&self.operation)
        } else {
            &self.operation
        }
    }
}

/// Reads an envelope. Without an envelope (the seed's bare `<GetSegmentState>` example) the
/// root element is taken as the operation, in the version the content type names.
pub fn read_request<'a>(
    root: Element<'a>,
    content_type: Option<&str>,
) -> Result<Request<'a>, String> {
    if !root.name.eq_ignore_ascii_case("Envelope") {
        return Ok(Request {
            version: version_from_content_type(content_type).unwrap_or(Version::V11),
            wrapped: root.child("data").is_some(),
            operation: root,
        });
    }
    let request = ivrgate_wire::soap::read_request(root, content_type).map_err(|e| match e {
        ivrgate_wire::WireError::NotSoap(why) => why,
        other => other.to_string(),
    })?;
    Ok(Request {
        version: request.version,
        wrapped: request.operation.child("data").is_some(),
        operation: request.operation,
    })
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
            ivrgate_wire::soap::escape_into(&mut self.out, v);
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
        ivrgate_wire::soap::escape_into(&mut self.out, text);
        self.close(name)
    }
}

/// A SOAP Fault of `version`: the sender's fault (`soap:Client` / `soap:Sender`) with a reason.
pub fn fault(version: Version, reason: &str) -> String {
    ivrgate_wire::soap::fault(version, ivrgate_wire::soap::FaultCode::Sender, reason, None)
}

/// A SOAP Fault of `version` that blames the server, not the request (`soap:Server` /
/// `soap:Receiver`): the client may send the same request again.
pub fn server_fault(version: Version, reason: &str) -> String {
    ivrgate_wire::soap::fault(
        version,
        ivrgate_wire::soap::FaultCode::Receiver,
        reason,
        None,
    )
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
        let bare = "<GetSegmentState><Tenant>T</Tenant></GetSegmentState>";
        let request = read_request(
            parse(bare, 32).expect("parse"),
            Some("application/soap+xml"),
        )
        .expect("read");
        assert_eq!(request.version, Version::V12);
        assert_eq!(request.operation.name, "GetSegmentState");
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
