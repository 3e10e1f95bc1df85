//! A small, limited XML reader over quick-xml events, without recursion: a [`Tokenizer`]
//! that hands out start tags, end tags and merged text runs one at a time, so a reader can
//! build its values while it reads instead of holding a tree of the whole document.
//! (The generic tree it replaced is kept for the tests, as the reference the streaming
//! reader is compared with.)
//!
//! Element names are reduced to their lowercase local name (`ex:nil` becomes `nil`,
//! `methodResponse` becomes `methodresponse`); attributes are ignored; comments and
//! processing instructions are skipped; text, CDATA and references are merged into one text
//! node per run. DOCTYPE and entity declarations are refused, as are references to anything but
//! the five predefined entities and character references.
//!
//! Closing tags are compared with the open element by trimmed, case-insensitive local name, so
//! `</\nstring>` closes `<string>` (a closing tag broken after `</`, as in the seed's PDF
//! extraction). The one other leniency: the root element of an XML-RPC document may be closed
//! by the other XML-RPC root name (the seed closes a `<methodResponse>` with `</methodCall>`).

use std::borrow::Cow;

use quick_xml::events::{BytesRef, Event};
use quick_xml::Reader;

use crate::{Limits, WireError};

/// A node of the tree.
#[derive(Debug)]
#[cfg(test)]
pub(crate) enum Node<'a> {
    /// A child element.
    Element(Element<'a>),
    /// A run of character data (already unescaped), borrowed from the document when it
    /// needed no unescaping, so a large text is not held twice while it is read.
    Text(Cow<'a, str>),
}

/// An element with its lowercase local name and its children in document order.
#[derive(Debug)]
#[cfg(test)]
pub(crate) struct Element<'a> {
    pub name: String,
    pub children: Vec<Node<'a>>,
}

#[cfg(test)]
impl<'a> Element<'a> {
    fn new(name: String) -> Self {
        Element {
            name,
            children: Vec::new(),
        }
    }

    fn push_text(&mut self, text: Cow<'a, str>) {
        if let Some(Node::Text(last)) = self.children.last_mut() {
            last.to_mut().push_str(&text);
        } else {
            self.children.push(Node::Text(text));
        }
    }

    /// Child elements, skipping text.
    pub fn elements(&self) -> impl Iterator<Item = &Element<'a>> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// All the text directly inside this element, concatenated.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            if let Node::Text(t) = node {
                out.push_str(t);
            }
        }
        out
    }

    /// The first text run that is not only whitespace, if any.
    pub fn stray_text(&self) -> Option<&str> {
        self.children.iter().find_map(|n| match n {
            Node::Text(t) if !t.trim().is_empty() => Some(t.as_ref()),
            _ => None,
        })
    }
}

const ROOT_ALIASES: [&str; 2] = ["methodcall", "methodresponse"];

/// What the [`Tokenizer`] hands out.
#[derive(Debug)]
pub(crate) enum Token<'a> {
    /// A start tag (or an empty element, which is followed by its [`Token::End`]), with its
    /// lowercase local name.
    Start(String),
    /// The end of the element last started; its name was checked against the start tag.
    End,
    /// A run of character data inside an element (already unescaped), merged across
    /// references, CDATA, comments and processing instructions as the tree merged it;
    /// borrowed from the document when it needed no unescaping.
    Text(Cow<'a, str>),
    /// The end of a well-formed document (root element closed, nothing but whitespace,
    /// comments and processing instructions after it).
    Eof,
}

/// A reader over `xml` (its size checked and declarations refused by the caller), past
/// leading whitespace or a byte order mark (senders, PHP scripts and the seed's own
/// examples, put them before the declaration), configured as every reader of this crate is:
/// the caller matches closing tags, an empty element is one event, comments are checked.
/// With the offset the reader starts at, for error positions.
pub(crate) fn reader(xml: &str) -> (Reader<&[u8]>, usize) {
    let doc = xml.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
    let start = xml.len() - doc.len();
    let mut reader = Reader::from_str(doc);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.trim_markup_names_in_closing_tags = true;
    config.expand_empty_elements = false;
    config.check_comments = true;
    (reader, start)
}

/// Reads a document one token at a time, with the checks and leniencies described at the
/// top of this module. Holds only the names of the open elements, never the document's
/// content; a reader that stops early calls [`Tokenizer::drain`] to learn whether the
/// document was well formed after all.
pub(crate) struct Tokenizer<'a> {
    reader: Reader<&'a [u8]>,
    /// Offset of the reader's input in the document (leading whitespace skipped).
    start: usize,
    open: Vec<String>,
    max_depth: usize,
    root_done: bool,
    /// Tokens already read: an empty element's `End`, a tag read after a text run.
    pending: std::collections::VecDeque<Token<'a>>,
}

impl<'a> Tokenizer<'a> {
    /// Checks the size and refuses declarations before anything is read.
    pub(crate) fn new(xml: &'a str, limits: &Limits) -> Result<Self, WireError> {
        limits.check_size(xml.len())?;
        refuse_declarations(xml)?;
        let (reader, start) = reader(xml);
        Ok(Tokenizer {
            reader,
            start,
            open: Vec::new(),
            max_depth: limits.depth(),
            root_done: false,
            pending: std::collections::VecDeque::with_capacity(3),
        })
    }

    /// The next token. After an error the document is malformed and the tokenizer must not
    /// be used again.
    pub(crate) fn next(&mut self) -> Result<Token<'a>, WireError> {
        if let Some(token) = self.pending.pop_front() {
            return Ok(token);
        }
        let mut run: Option<Cow<'a, str>> = None;
        loop {
            let position = self.reader.buffer_position() as usize + self.start;
            let event = self.reader.read_event().map_err(|e| {
                WireError::MalformedXml(format!(
                    "{e} at byte {}",
                    self.reader.error_position() as usize + self.start
                ))
            })?;
            let text = match event {
                Event::DocType(_) => return Err(WireError::DoctypeRefused),
                Event::Start(tag) | Event::Empty(tag) if self.root_done => {
                    let name = local_name(tag.local_name().as_ref());
                    return Err(WireError::MalformedXml(format!(
                        "second root element <{name}> at byte {position}"
                    )));
                }
                Event::Start(tag) => {
                    if self.open.len() >= self.max_depth {
                        return Err(WireError::TooDeep {
                            limit: self.max_depth,
                        });
                    }
                    let name = local_name(tag.local_name().as_ref());
                    self.open.push(name.clone());
                    return Ok(self.after_run(run, Token::Start(name), None));
                }
                Event::Empty(tag) => {
                    if self.open.len() >= self.max_depth {
                        return Err(WireError::TooDeep {
                            limit: self.max_depth,
                        });
                    }
                    if self.open.is_empty() {
                        self.root_done = true;
                    }
                    let name = local_name(tag.local_name().as_ref());
                    return Ok(self.after_run(run, Token::Start(name), Some(Token::End)));
                }
                Event::End(tag) => {
                    let name = local_name(tag.name().as_ref());
                    let name = name.trim();
                    let Some(open) = self.open.pop() else {
                        return Err(WireError::MalformedXml(format!(
                            "unexpected closing tag </{name}> at byte {position}"
                        )));
                    };
                    let root_alias = self.open.is_empty()
                        && ROOT_ALIASES.contains(&open.as_str())
                        && ROOT_ALIASES.contains(&name);
                    if open != name && !root_alias {
                        return Err(WireError::MalformedXml(format!(
                            "closing tag </{name}> does not match <{open}> at byte {position}"
                        )));
                    }
                    if self.open.is_empty() {
                        self.root_done = true;
                    }
                    return Ok(self.after_run(run, Token::End, None));
                }
                Event::Text(text) => text
                    .xml10_content()
                    .map_err(|e| WireError::MalformedXml(format!("{e} at byte {position}")))?,
                Event::CData(data) => data
                    .xml10_content()
                    .map_err(|e| WireError::MalformedXml(format!("{e} at byte {position}")))?,
                Event::GeneralRef(reference) => {
                    Cow::Owned(resolve_reference(&reference, position)?)
                }
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
                Event::Eof => {
                    if let Some(open) = self.open.last() {
                        return Err(WireError::MalformedXml(format!(
                            "unexpected end of input inside <{open}>"
                        )));
                    }
                    if !self.root_done {
                        return Err(WireError::MalformedXml("no root element".to_string()));
                    }
                    return Ok(Token::Eof);
                }
            };
            if self.open.is_empty() {
                // Text outside the root element may only be whitespace.
                if !text.trim().is_empty() {
                    return Err(WireError::MalformedXml(format!(
                        "text outside the root element at byte {position}"
                    )));
                }
                continue;
            }
            match &mut run {
                Some(run) => run.to_mut().push_str(&text),
                None => run = Some(text),
            }
        }
    }

    /// `token` (and `then`) after the text run read before them, if any.
    fn after_run(
        &mut self,
        run: Option<Cow<'a, str>>,
        token: Token<'a>,
        then: Option<Token<'a>>,
    ) -> Token<'a> {
        match run {
            Some(run) => {
                self.pending.push_back(token);
                self.pending.extend(then);
                Token::Text(run)
            }
            None => {
                self.pending.extend(then);
                token
            }
        }
    }

    /// Reads the rest of the document: `Ok` if it is well formed, else its first error.
    pub(crate) fn drain(&mut self) -> Result<(), WireError> {
        loop {
            if let Token::Eof = self.next()? {
                return Ok(());
            }
        }
    }
}

/// The text of a character reference or of one of the five predefined entities.
pub(crate) fn resolve_reference(
    reference: &BytesRef<'_>,
    position: usize,
) -> Result<String, WireError> {
    if reference.is_char_ref() {
        let c = reference
            .resolve_char_ref()
            .map_err(|e| {
                WireError::MalformedXml(format!("bad character reference: {e} at byte {position}"))
            })?
            .ok_or_else(|| {
                WireError::MalformedXml(format!("bad character reference at byte {position}"))
            })?;
        Ok(c.to_string())
    } else {
        let name = reference
            .decode()
            .map_err(|e| WireError::MalformedXml(format!("{e} at byte {position}")))?;
        quick_xml::escape::resolve_predefined_entity(&name)
            .map(str::to_string)
            .ok_or_else(|| {
                WireError::MalformedXml(format!("unknown entity &{name}; at byte {position}"))
            })
    }
}

/// Parses a whole document into its root element.
#[cfg(test)]
pub(crate) fn parse<'a>(xml: &'a str, limits: &Limits) -> Result<Element<'a>, WireError> {
    limits.check_size(xml.len())?;
    refuse_declarations(xml)?;
    let max_depth = limits.depth();
    let (mut reader, start) = reader(xml);
    let mut stack: Vec<Element<'a>> = Vec::new();
    let mut root: Option<Element<'a>> = None;
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
            Event::Start(tag) | Event::Empty(tag) if root.is_some() => {
                let name = local_name(tag.local_name().as_ref());
                return Err(WireError::MalformedXml(format!(
                    "second root element <{name}> at byte {position}"
                )));
            }
            Event::Start(tag) => {
                if stack.len() >= max_depth {
                    return Err(WireError::TooDeep { limit: max_depth });
                }
                stack.push(Element::new(local_name(tag.local_name().as_ref())));
            }
            Event::Empty(tag) => {
                if stack.len() >= max_depth {
                    return Err(WireError::TooDeep { limit: max_depth });
                }
                let element = Element::new(local_name(tag.local_name().as_ref()));
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(element)),
                    None => root = Some(element),
                }
            }
            Event::End(tag) => {
                let name = local_name(tag.name().as_ref());
                let name = name.trim();
                let Some(open) = stack.pop() else {
                    return Err(WireError::MalformedXml(format!(
                        "unexpected closing tag </{name}> at byte {position}"
                    )));
                };
                let root_alias = stack.is_empty()
                    && ROOT_ALIASES.contains(&open.name.as_str())
                    && ROOT_ALIASES.contains(&name);
                if open.name != name && !root_alias {
                    return Err(WireError::MalformedXml(format!(
                        "closing tag </{name}> does not match <{}> at byte {position}",
                        open.name
                    )));
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(open)),
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
                let resolved = resolve_reference(&reference, position)?;
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

/// Text outside the root element may only be whitespace.
#[cfg(test)]
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

fn local_name(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw);
    let local = match name.rsplit_once(':') {
        Some((_, local)) => local,
        None => &name,
    };
    local.to_ascii_lowercase()
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
