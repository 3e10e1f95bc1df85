//! A small bounded XML tree on quick-xml for what CTIPS sends: callbacks (events, heartbeats,
//! StartSession) and replies to our requests. Names are matched by local name whatever the
//! prefix (the seed's samples and WCF use different prefixes); `i:type` and `i:nil` are read
//! by local name. DOCTYPE and entity declarations, unknown entities, a second root and nesting
//! deeper than the limit are refused; the element count is bounded by the input size.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

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

fn local(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    match text.split_once(':') {
        Some((_, local)) => local.to_owned(),
        None => text.into_owned(),
    }
}

fn start(tag: &BytesStart<'_>, decoder: quick_xml::encoding::Decoder) -> Result<Node, XmlError> {
    let name = local(tag.name().as_ref());
    let mut attributes = Vec::new();
    for attr in tag.attributes() {
        let attr = attr.map_err(|e| XmlError(format!("malformed attribute: {e}")))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .decode_and_unescape_value(decoder)
            .map_err(|e| XmlError(format!("malformed attribute value: {e}")))?
            .into_owned();
        let key = if key == "xmlns" || key.starts_with("xmlns:") {
            key
        } else {
            local(key.as_bytes())
        };
        attributes.push((key, value));
    }
    Ok(Node {
        name,
        attributes,
        ..Node::default()
    })
}

/// Parses a document into its root element. `max_depth` is clamped to 4..=128.
pub fn parse(xml: &[u8], max_depth: usize) -> Result<Node, XmlError> {
    let max_depth = max_depth.clamp(4, 128);
    let xml = std::str::from_utf8(xml)
        .map_err(|_| XmlError("the body is not UTF-8 (WCF sends utf-8)".into()))?;
    let trimmed = xml.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
    let mut reader = Reader::from_str(trimmed);
    reader.config_mut().expand_empty_elements = false;
    let max_elements = xml.len() / 4 + 1;
    let mut count = 0usize;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError(format!("malformed XML: {e}")))?;
        let opened = match event {
            Event::DocType(_) => {
                return Err(XmlError(
                    "DOCTYPE and ENTITY declarations are refused".into(),
                ))
            }
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError("malformed XML: a second root element".into()))
            }
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                if stack.len() >= max_depth {
                    return Err(XmlError(format!("XML nested deeper than {max_depth}")));
                }
                count += 1;
                if count > max_elements {
                    return Err(XmlError("too many elements".into()));
                }
                Some((
                    start(tag, reader.decoder())?,
                    matches!(event, Event::Empty(_)),
                ))
            }
            Event::End(_) => {
                let Some(open) = stack.pop() else {
                    return Err(XmlError("malformed XML: unexpected closing tag".into()));
                };
                attach(&mut stack, &mut root, open);
                None
            }
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|e| XmlError(format!("malformed XML text: {e}")))?;
                push_text(&mut stack, &text)?;
                None
            }
            Event::CData(data) => {
                let text = data
                    .xml10_content()
                    .map_err(|e| XmlError(format!("malformed CDATA: {e}")))?;
                push_text(&mut stack, &text)?;
                None
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
                None
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => None,
            Event::Eof => break,
        };
        if let Some((node, empty)) = opened {
            if empty {
                attach(&mut stack, &mut root, node);
            } else {
                stack.push(node);
            }
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

fn attach(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn push_text(stack: &mut [Node], text: &str) -> Result<(), XmlError> {
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
