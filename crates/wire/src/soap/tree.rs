//! The element tree: a bounded, namespace-resolving reader on quick-xml, without recursion.
//!
//! Names keep their case and are matched case-insensitively by the lookup helpers (senders vary
//! `ClientId` and `ClientID`); closing tags are compared by trimmed, case-insensitive local
//! name. Attributes may be unquoted (PTK's seed writes `InteractionType=FIFO`). Namespace
//! declarations are resolved and kept out of the attribute list; a prefix nobody declared
//! leaves the namespace unknown (`None`) rather than failing the document. Namespace names are
//! taken as written (a character reference in one is not resolved; real senders never write
//! one) and shared by every element in their scope; at most 256 declarations are in scope at
//! once. Text and names are borrowed from the document wherever they need no unescaping, so a
//! large body is not held twice while it is read and the tree stays linear in the input.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};

use super::{Limits, XSI_NS};
use crate::WireError;

/// Most namespace declarations in scope at once: real messages use a handful, and each name
/// lookup scans them.
const MAX_BINDINGS: usize = 256;

/// The namespace bound to the `xml` prefix by definition.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// An element: its name, resolved namespace, attributes, text and child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element<'a> {
    /// The namespace prefix the sender used (empty for none).
    pub prefix: Cow<'a, str>,
    /// The local name, as written.
    pub name: Cow<'a, str>,
    /// The namespace the prefix (or the default namespace) resolves to, if any.
    pub namespace: Option<Cow<'a, str>>,
    /// The attributes other than namespace declarations, in document order.
    pub attributes: Vec<Attribute<'a>>,
    /// The `xsi:type` (`i:type`) attribute with its prefix resolved, if present.
    pub xsi_type: Option<Box<TypeName<'a>>>,
    /// All the character data directly inside this element (unescaped), concatenated;
    /// whitespace-only runs after the first child element are dropped.
    pub text: Cow<'a, str>,
    /// Child elements in document order.
    pub children: Vec<Element<'a>>,
}

/// An attribute with its namespace resolved (unprefixed attributes have none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The prefix as written (empty for none).
    pub prefix: Cow<'a, str>,
    /// The local name.
    pub name: Cow<'a, str>,
    /// The namespace of a prefixed attribute.
    pub namespace: Option<Cow<'a, str>>,
    /// The unescaped value.
    pub value: Cow<'a, str>,
}

/// A qualified type name from `xsi:type="a:CTIRouteRequest"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeName<'a> {
    /// The namespace the value's prefix resolves to, if any.
    pub namespace: Option<Cow<'a, str>>,
    /// The local part of the type name.
    pub name: Cow<'a, str>,
}

impl<'a> Element<'a> {
    /// The first child with this local name (ASCII case-insensitive).
    pub fn child(&self, name: &str) -> Option<&Element<'a>> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The first child with this exact namespace and local name.
    pub fn child_ns(&self, namespace: &str, name: &str) -> Option<&Element<'a>> {
        self.children
            .iter()
            .find(|c| c.name == name && c.namespace.as_deref() == Some(namespace))
    }

    /// Every child with this local name (ASCII case-insensitive).
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Element<'a>> + 's {
        self.children
            .iter()
            .filter(move |c| c.name.eq_ignore_ascii_case(name))
    }

    /// The value of the first attribute with this local name (ASCII case-insensitive).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .map(|a| a.value.as_ref())
    }

    /// The value of the attribute with this exact namespace and local name.
    pub fn attr_ns(&self, namespace: &str, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name && a.namespace.as_deref() == Some(namespace))
            .map(|a| a.value.as_ref())
    }

    /// The trimmed text of this element.
    pub fn value(&self) -> &str {
        self.text.trim()
    }

    /// Whether the element carries `xsi:nil="true"` (or `"1"`), whatever the prefix.
    pub fn is_nil(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case("nil") && matches!(a.value.trim(), "true" | "1"))
    }

    /// The text of the child with this local name, `None` when it is absent or nil.
    pub fn child_value(&self, name: &str) -> Option<&str> {
        self.child(name).filter(|c| !c.is_nil()).map(Element::value)
    }

    /// A copy that borrows nothing from the document.
    pub fn into_owned(self) -> Element<'static> {
        Element {
            prefix: own(self.prefix),
            name: own(self.name),
            namespace: self.namespace.map(own),
            attributes: self
                .attributes
                .into_iter()
                .map(|a| Attribute {
                    prefix: own(a.prefix),
                    name: own(a.name),
                    namespace: a.namespace.map(own),
                    value: own(a.value),
                })
                .collect(),
            xsi_type: self.xsi_type.map(|t| {
                Box::new(TypeName {
                    namespace: t.namespace.map(own),
                    name: own(t.name),
                })
            }),
            text: own(self.text),
            children: self.children.into_iter().map(Element::into_owned).collect(),
        }
    }

    /// How many elements this tree holds, itself included.
    pub fn count(&self) -> usize {
        let mut total = 0;
        let mut pending = vec![self];
        while let Some(e) = pending.pop() {
            total += 1;
            pending.extend(e.children.iter());
        }
        total
    }

    /// How deep this tree is (1 for an element without children).
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut pending = vec![(self, 1)];
        while let Some((e, d)) = pending.pop() {
            deepest = deepest.max(d);
            pending.extend(e.children.iter().map(|c| (c, d + 1)));
        }
        deepest
    }

    fn push_text(&mut self, text: Cow<'a, str>) {
        if !self.children.is_empty() && text.trim().is_empty() {
            return;
        }
        if self.text.is_empty() {
            self.text = text;
        } else {
            self.text.to_mut().push_str(&text);
        }
    }
}

fn own(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

/// `part` as a slice of `doc` when it lies inside it, so it can be kept with `doc`'s lifetime.
fn within<'a>(doc: &'a str, part: &[u8]) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    doc.get(start..end)
}

fn text_of<'a>(doc: &'a str, part: &[u8]) -> Cow<'a, str> {
    match within(doc, part) {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(String::from_utf8_lossy(part).into_owned()),
    }
}

fn keep<'a>(doc: &'a str, value: Cow<'_, str>) -> Cow<'a, str> {
    match value {
        Cow::Borrowed(s) => text_of(doc, s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s),
    }
}

fn split_qname<'a>(doc: &'a str, raw: &[u8]) -> (Cow<'a, str>, Cow<'a, str>) {
    let (prefix, local) = match raw.iter().position(|&b| b == b':') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (&raw[..0], raw),
    };
    (text_of(doc, prefix), text_of(doc, local))
}

/// The namespace declarations in scope, innermost last.
#[derive(Default)]
struct Scopes<'a> {
    /// (prefix, namespace); an empty namespace undeclares the default namespace.
    bindings: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// How many bindings each open element added.
    marks: Vec<usize>,
}

impl<'a> Scopes<'a> {
    fn resolve(&self, prefix: &str) -> Option<Cow<'a, str>> {
        if prefix == "xml" {
            return Some(Cow::Borrowed(XML_NS));
        }
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, ns)| ns.clone())
            .filter(|ns| !ns.is_empty())
    }

    fn pop(&mut self) {
        let added = self.marks.pop().unwrap_or(0);
        self.bindings
            .truncate(self.bindings.len().saturating_sub(added));
    }
}

/// Reads a start tag: declarations into `scopes` (one mark pushed), the rest into an element.
fn start_element<'a>(
    doc: &'a str,
    tag: &BytesStart<'_>,
    decoder: quick_xml::encoding::Decoder,
    scopes: &mut Scopes<'a>,
) -> Result<Element<'a>, WireError> {
    let mut raw_attributes = Vec::new();
    let mut added = 0;
    for attr in tag.html_attributes().with_checks(false).flatten() {
        let key = attr.key.as_ref();
        let declared = if key == b"xmlns" {
            Some(Cow::Borrowed(""))
        } else {
            key.strip_prefix(b"xmlns:").map(|p| text_of(doc, p))
        };
        if let Some(prefix) = declared {
            // A namespace name is kept as written, borrowed from the document, so the elements
            // in its scope share it instead of each holding a copy.
            let namespace = within(doc, &attr.value).unwrap_or_default();
            scopes.bindings.push((prefix, Cow::Borrowed(namespace)));
            added += 1;
            continue;
        }
        let value = match attr.decode_and_unescape_value(decoder) {
            Ok(v) => keep(doc, v),
            Err(_) => text_of(doc, &attr.value),
        };
        raw_attributes.push((split_qname(doc, key), value));
    }
    scopes.marks.push(added);
    if scopes.bindings.len() > MAX_BINDINGS {
        return Err(WireError::MalformedXml(format!(
            "more than {MAX_BINDINGS} namespace declarations in scope"
        )));
    }
    let (prefix, name) = split_qname(doc, tag.name().as_ref());
    let namespace = scopes.resolve(&prefix);
    let mut xsi_type = None;
    let attributes = raw_attributes
        .into_iter()
        .map(|((prefix, name), value)| {
            let namespace = if prefix.is_empty() {
                None
            } else {
                scopes.resolve(&prefix)
            };
            Attribute {
                prefix,
                name,
                namespace,
                value,
            }
        })
        .collect::<Vec<_>>();
    if let Some(t) = attributes.iter().find(|a| {
        a.name == "type"
            && (a.namespace.as_deref() == Some(XSI_NS)
                || (a.namespace.is_none() && matches!(a.prefix.as_ref(), "i" | "xsi")))
    }) {
        let (type_prefix, type_name) = match t.value.trim().split_once(':') {
            Some((p, n)) => (p.to_owned(), n.to_owned()),
            None => (String::new(), t.value.trim().to_owned()),
        };
        xsi_type = Some(Box::new(TypeName {
            namespace: scopes.resolve(&type_prefix),
            name: Cow::Owned(type_name),
        }));
    }
    Ok(Element {
        prefix,
        name,
        namespace,
        attributes,
        xsi_type,
        ..Element::default()
    })
}

/// Parses a whole document into its root element, enforcing `limits` (size, depth, element
/// count) and refusing DOCTYPE and entity declarations and unknown entity references.
pub fn parse<'a>(xml: &'a str, limits: &Limits) -> Result<Element<'a>, WireError> {
    limits.check_size(xml.len())?;
    refuse_declarations(xml)?;
    let max_depth = limits.depth();
    let (mut reader, start) = crate::xml::reader(xml);
    let doc = &xml[start..];
    let mut stack: Vec<Element<'a>> = Vec::new();
    let mut scopes = Scopes::default();
    let mut root: Option<Element<'a>> = None;
    let mut elements = 0usize;
    loop {
        let position = reader.buffer_position() as usize + start;
        let event = reader.read_event().map_err(|e| {
            WireError::MalformedXml(format!(
                "{e} at byte {}",
                reader.error_position() as usize + start
            ))
        })?;
        match event {
            Event::DocType(_) => return Err(WireError::DoctypeRefused),
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(WireError::MalformedXml(format!(
                    "second root element at byte {position}"
                )));
            }
            Event::Start(_) | Event::Empty(_) if stack.len() >= max_depth => {
                return Err(WireError::TooDeep { limit: max_depth });
            }
            Event::Start(tag) => {
                elements = count_element(elements, limits)?;
                let element = start_element(doc, &tag, reader.decoder(), &mut scopes)?;
                stack.push(element);
            }
            Event::Empty(tag) => {
                elements = count_element(elements, limits)?;
                let element = start_element(doc, &tag, reader.decoder(), &mut scopes)?;
                scopes.pop();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(tag) => {
                let raw = tag.name();
                let raw = raw.as_ref();
                let local = match raw.iter().rposition(|&b| b == b':') {
                    Some(i) => &raw[i + 1..],
                    None => raw,
                };
                let name = String::from_utf8_lossy(local);
                let name = name.trim();
                let Some(open) = stack.pop() else {
                    return Err(WireError::MalformedXml(format!(
                        "unexpected closing tag </{name}> at byte {position}"
                    )));
                };
                if !open.name.eq_ignore_ascii_case(name) {
                    return Err(WireError::MalformedXml(format!(
                        "closing tag </{name}> does not match <{}> at byte {position}",
                        open.name
                    )));
                }
                scopes.pop();
                // Vectors grow by doubling (at least four slots): give the slack back, so a
                // tree of many small elements is not twice its size.
                let mut open = open;
                open.children.shrink_to_fit();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(open),
                    None => root = Some(open),
                }
            }
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|e| WireError::MalformedXml(format!("{e} at byte {position}")))?;
                add_text(&mut stack, text, position)?;
            }
            Event::CData(data) => {
                let text = data
                    .xml10_content()
                    .map_err(|e| WireError::MalformedXml(format!("{e} at byte {position}")))?;
                add_text(&mut stack, text, position)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = crate::xml::resolve_reference(&reference, position)?;
                add_text(&mut stack, Cow::Owned(resolved), position)?;
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(WireError::MalformedXml(format!(
            "unexpected end of input inside <{}>",
            open.name
        )));
    }
    root.ok_or_else(|| WireError::MalformedXml("no root element".to_string()))
}

fn count_element(seen: usize, limits: &Limits) -> Result<usize, WireError> {
    if seen >= limits.max_elements {
        Err(WireError::TooManyElements {
            limit: limits.max_elements,
        })
    } else {
        Ok(seen + 1)
    }
}

/// Text outside the root element may only be whitespace.
fn add_text<'a>(
    stack: &mut [Element<'a>],
    text: Cow<'a, str>,
    position: usize,
) -> Result<(), WireError> {
    match stack.last_mut() {
        Some(parent) => {
            parent.push_text(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(WireError::MalformedXml(format!(
            "text outside the root element at byte {position}"
        ))),
    }
}

/// Refuses `<!DOCTYPE` and `<!ENTITY` anywhere, whatever their case, before parsing starts.
fn refuse_declarations(xml: &str) -> Result<(), WireError> {
    let bytes = xml.as_bytes();
    for (i, _) in xml.match_indices("<!") {
        let rest = bytes.get(i + 2..).unwrap_or_default();
        let starts =
            |word: &[u8]| rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word);
        if starts(b"doctype") || starts(b"entity") {
            return Err(WireError::DoctypeRefused);
        }
    }
    Ok(())
}
