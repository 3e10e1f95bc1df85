//! A small namespace-resolving XML tree, read with quick-xml, for the simulator's own use.
//!
//! The simulator must not share ivrgate's codec (it is an independent check of it), so it
//! reads SOAP bodies with its own reader. DOCTYPE is refused, depth and size are bounded.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Largest body read (bytes).
pub const MAX_BYTES: usize = 1024 * 1024;
/// Deepest element nesting read.
pub const MAX_DEPTH: usize = 48;

/// The XML Schema instance namespace (`i:type`, `i:nil`).
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// One element: resolved namespace, local name, attributes, children and text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Elem {
    /// Namespace URI, empty when the element has none.
    pub ns: String,
    /// Local name.
    pub name: String,
    /// Attributes: (namespace URI or empty, local name, value). `xmlns` declarations excluded.
    pub attrs: Vec<(String, String, String)>,
    /// Child elements in document order.
    pub children: Vec<Elem>,
    /// Concatenated text content (unescaped).
    pub text: String,
    /// In-scope prefix bindings at this element: (prefix, uri). Needed to resolve `i:type`.
    pub scope: Vec<(String, String)>,
}

impl Elem {
    /// First child with this local name, any namespace.
    pub fn child(&self, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Attribute value by namespace and local name.
    pub fn attr(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, l, _)| n == ns && l == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// `i:nil="true"`.
    pub fn is_nil(&self) -> bool {
        matches!(self.attr(NS_XSI, "nil"), Some("true") | Some("1"))
    }

    /// `i:type` resolved to (namespace, local name).
    pub fn xsi_type(&self) -> Option<(String, String)> {
        let raw = self.attr(NS_XSI, "type")?;
        let (prefix, local) = match raw.split_once(':') {
            Some((p, l)) => (p, l),
            None => ("", raw),
        };
        let ns = self
            .scope
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.clone())
            .unwrap_or_default();
        Some((ns, local.to_string()))
    }
}

/// Parses a whole document and returns its root element.
pub fn parse(body: &[u8]) -> Result<Elem, String> {
    if body.len() > MAX_BYTES {
        return Err(format!("body of {} bytes exceeds {MAX_BYTES}", body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Elem> = Vec::new();
    let mut root: Option<Elem> = None;
    loop {
        let (resolved, ev) = reader
            .read_resolved_event()
            .map_err(|e| format!("malformed XML: {e}"))?;
        match ev {
            Event::DocType(_) => return Err("DOCTYPE is not accepted".into()),
            Event::Start(ref s) | Event::Empty(ref s) => {
                if root.is_some() {
                    return Err("content after the root element".into());
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nesting deeper than {MAX_DEPTH}"));
                }
                let ns = match resolved {
                    ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                    ResolveResult::Unbound => String::new(),
                    ResolveResult::Unknown(p) => {
                        return Err(format!("unbound prefix {}", String::from_utf8_lossy(&p)))
                    }
                };
                let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                let mut scope = stack.last().map(|p| p.scope.clone()).unwrap_or_default();
                let mut attrs = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| format!("malformed attribute: {e}"))?;
                    let key = a.key;
                    let value = a
                        .unescape_value()
                        .map_err(|e| format!("malformed attribute value: {e}"))?
                        .into_owned();
                    let raw_key = String::from_utf8_lossy(key.as_ref()).into_owned();
                    if raw_key == "xmlns" {
                        scope.push((String::new(), value));
                        continue;
                    }
                    if let Some(p) = raw_key.strip_prefix("xmlns:") {
                        scope.push((p.to_string(), value));
                        continue;
                    }
                    let (ans, _) = reader.resolve_attribute(key);
                    let ans = match ans {
                        ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                        ResolveResult::Unbound => String::new(),
                        ResolveResult::Unknown(p) => {
                            if p == b"xml" {
                                "http://www.w3.org/XML/1998/namespace".into()
                            } else {
                                return Err(format!(
                                    "unbound attribute prefix {}",
                                    String::from_utf8_lossy(&p)
                                ));
                            }
                        }
                    };
                    let local = String::from_utf8_lossy(key.local_name().as_ref()).into_owned();
                    attrs.push((ans, local, value));
                }
                let el = Elem {
                    ns,
                    name,
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                    scope,
                };
                if matches!(ev, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let Some(el) = stack.pop() else {
                    return Err("unbalanced end tag".into());
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(cur) = stack.last_mut() {
                    let s = t.decode().map_err(|e| format!("malformed text: {e}"))?;
                    let s = quick_xml::escape::unescape(&s)
                        .map_err(|e| format!("malformed text: {e}"))?;
                    cur.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(cur) = stack.last_mut() {
                    cur.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                if let Some(cur) = stack.last_mut() {
                    let name = String::from_utf8_lossy(&r).into_owned();
                    let ch = match name.as_str() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        n => {
                            let code = if let Some(h) = n.strip_prefix("#x") {
                                u32::from_str_radix(h, 16).ok()
                            } else if let Some(d) = n.strip_prefix('#') {
                                d.parse::<u32>().ok()
                            } else {
                                None
                            };
                            code.and_then(char::from_u32)
                                .ok_or_else(|| format!("unknown entity &{n};"))?
                        }
                    };
                    cur.text.push(ch);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("unexpected end of document".into());
    }
    root.ok_or_else(|| "no root element".into())
}

/// Escapes text for element content and attribute values.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolves_namespaces_types_and_nil() {
        let doc = br#"<r xmlns="urn:d" xmlns:a="urn:a" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><a:x i:type="a:T">1 &amp; 2</a:x><y i:nil="true"/></r>"#;
        let r = parse(doc).unwrap();
        assert_eq!(r.ns, "urn:d");
        let x = r.child("x").unwrap();
        assert_eq!(x.ns, "urn:a");
        assert_eq!(x.text, "1 & 2");
        assert_eq!(x.xsi_type(), Some(("urn:a".into(), "T".into())));
        assert!(r.child("y").unwrap().is_nil());
    }

    #[test]
    fn refuses_doctype_and_deep_nesting() {
        assert!(parse(b"<!DOCTYPE x [<!ENTITY e 'x'>]><x/>").is_err());
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
        assert!(parse(b"<a><b></a>").is_err());
    }
}
