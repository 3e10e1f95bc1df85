//! A small owned view of what CTIPS sends (callbacks: events, heartbeats, StartSession; and
//! replies to our requests), read by the shared SOAP reader. Names are matched by local name
//! whatever the prefix (the seed's samples and WCF use different prefixes); `i:type` is kept
//! as the `type` attribute (its local name), `i:nil` as `nil`.

use ivrgate_wire::soap;

/// An element: local name, attributes (local names; `xmlns*` kept whole), text, children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// The first child with this local name (exact, then ASCII case-insensitive).
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name).or_else(|| {
            self.children
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name))
        })
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed text.
    pub fn value(&self) -> &str {
        self.text.trim()
    }

    /// `i:nil="true"`.
    pub fn is_nil(&self) -> bool {
        self.attr("nil").is_some_and(|v| v.trim() == "true")
    }

    /// The local part of `i:type` (`a:CTIRouteRequest` → `CTIRouteRequest`).
    pub fn xsi_type(&self) -> Option<&str> {
        self.attr("type")
            .map(|t| t.rsplit(':').next().unwrap_or(t).trim())
    }

    /// A descendant path of local names.
    pub fn path(&self, names: &[&str]) -> Option<&Node> {
        let mut node = self;
        for name in names {
            node = node.child(name)?;
        }
        Some(node)
    }
}

/// Why a body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn node(element: &soap::Element<'_>) -> Node {
    let mut attributes: Vec<(String, String)> = element
        .attributes
        .iter()
        .map(|a| (a.name.to_string(), a.value.to_string()))
        .collect();
    if let Some(t) = &element.xsi_type {
        attributes.retain(|(k, _)| k != "type");
        attributes.push(("type".into(), t.name.to_string()));
    }
    Node {
        name: element.name.to_string(),
        attributes,
        text: element.text.to_string(),
        children: element.children.iter().map(node).collect(),
    }
}

/// Parses a document (in the charset `content_type` names; UTF-8 without one) into its root
/// element with the shared hardened SOAP reader (`ivrgate_wire::soap`): DOCTYPE and entity
/// declarations refused, nesting bounded by `max_depth` (clamped to 4..=128), the element
/// count bounded by the input size.
pub fn parse_typed(
    body: &[u8],
    content_type: Option<&str>,
    max_depth: usize,
) -> Result<Node, XmlError> {
    let limits = soap::Limits {
        max_bytes: body.len().max(1),
        max_depth: max_depth.clamp(4, 128),
        max_elements: body.len() / 4 + 1,
    };
    let text = soap::decode(body, content_type, &limits).map_err(|e| XmlError(e.to_string()))?;
    let root = soap::parse(&text, &limits).map_err(|e| XmlError(e.to_string()))?;
    Ok(node(&root))
}

/// [`parse_typed`] for a UTF-8 body.
pub fn parse(body: &[u8], max_depth: usize) -> Result<Node, XmlError> {
    parse_typed(body, None, max_depth)
}

/// Escapes text for element content and attribute values; characters XML 1.0 cannot carry
/// are dropped.
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
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The SOAP body's first element, from an envelope (SOAP 1.1 or 1.2, any prefix).
pub fn body_op(root: &Node) -> Result<&Node, XmlError> {
    if root.name != "Envelope" {
        return Err(XmlError(format!(
            "expected a SOAP Envelope, got <{}>",
            root.name
        )));
    }
    let body = root
        .child("Body")
        .ok_or_else(|| XmlError("the envelope has no Body".into()))?;
    body.children
        .first()
        .ok_or_else(|| XmlError("the SOAP Body is empty".into()))
}
