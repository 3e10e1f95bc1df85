//! A small, limited XML reader over quick-xml events, without recursion: a [`Tokenizer`]
//! that hands out start tags, end tags and merged text runs one at a time, so a reader can
//! build its values while it reads instead of holding a tree of the whole document.
//! (The generic tree it replaced is kept for the tests, as the reference the streaming
//! reader is compared with.)
//!
//! Element names are reduced to their local name (`ex:nil` becomes `nil`), compared
//! case-insensitively and shown lowercase (`methodResponse` is `methodresponse`), borrowed
//! from the document rather than copied ([`Name`]); attributes are ignored; comments and
//! processing instructions are skipped; text, CDATA and references are merged into one text
//! node per run. DOCTYPE and entity declarations are refused, as are references to anything but
//! the five predefined entities and character references.
//!
//! Closing tags are compared with the open element by trimmed, case-insensitive local name, so
//! `</\nstring>` closes `<string>` (a closing tag broken after `</`, as in the seed's PDF
//! extraction). The one other leniency: the root element of an XML-RPC document may be closed
//! by the other XML-RPC root name (the seed closes a `<methodResponse>` with `</methodCall>`).

use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesText, Event};
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

/// An element's local name as the document writes it (`ex:Nil` is `Nil`), borrowed from the
/// document: compared case-insensitively ([`Name::is`], [`Name::lowered`]) and shown
/// lowercase, as the reader's messages always named elements.
#[derive(Debug, Clone)]
pub(crate) struct Name<'a>(Cow<'a, str>);

impl<'a> Name<'a> {
    /// The local name (after the last `:`) of `raw`, a name quick-xml read from `doc`.
    fn of(doc: &'a str, raw: &[u8]) -> Name<'a> {
        fn local(name: &str) -> &str {
            // names are short: a plain scan beats a searcher
            match name.bytes().rposition(|b| b == b':') {
                Some(colon) => &name[colon + 1..],
                None => name,
            }
        }
        match in_doc(doc, raw) {
            Some(name) => Name(Cow::Borrowed(local(name))),
            None => Name(Cow::Owned(local(&String::from_utf8_lossy(raw)).to_string())),
        }
    }

    /// Whether this is the element `lowercase` names, whatever its case.
    pub(crate) fn is(&self, lowercase: &str) -> bool {
        self.0.eq_ignore_ascii_case(lowercase)
    }

    /// The name's bytes lowercased into `buf`, to match on; empty (no element's name) when
    /// it is longer than `buf`, which holds every name of the XML-RPC grammar.
    pub(crate) fn lowered<'b>(&self, buf: &'b mut [u8; 16]) -> &'b [u8] {
        let bytes = self.0.as_bytes();
        let Some(head) = buf.get_mut(..bytes.len()) else {
            return b"";
        };
        head.copy_from_slice(bytes);
        head.make_ascii_lowercase();
        head
    }

    fn trimmed(self) -> Name<'a> {
        match self.0 {
            Cow::Borrowed(name) => Name(Cow::Borrowed(name.trim())),
            Cow::Owned(name) => Name(Cow::Owned(name.trim().to_string())),
        }
    }
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0
            .chars()
            .try_for_each(|c| std::fmt::Write::write_char(f, c.to_ascii_lowercase()))
    }
}

/// `part`, a slice of an event quick-xml read from `doc`, as the text of `doc` it is: the
/// document is already `&str`, so this costs no UTF-8 check (slicing checks the two char
/// boundaries only). `None` for bytes that are not part of `doc`: a slice of another live
/// buffer cannot overlap the document's memory.
fn in_doc<'a>(doc: &'a str, part: &[u8]) -> Option<&'a str> {
    if part.is_empty() {
        return Some("");
    }
    let start = (part.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
    doc.get(start..start.checked_add(part.len())?)
}

/// Whether `text` is empty or only whitespace (as `str::trim` reads it), without the trim
/// when it is ASCII whitespace, as between the elements of every document: eight bytes at a
/// time while they are spaces, as indentation is.
pub(crate) fn is_blank(text: &str) -> bool {
    let mut words = text.as_bytes().chunks_exact(8);
    let ascii = words.all(|w| w == b"        " || w.iter().all(u8::is_ascii_whitespace))
        && words.remainder().iter().all(u8::is_ascii_whitespace);
    ascii || text.trim().is_empty()
}

/// Whether `bytes` hold a carriage return (text that needs its line ends normalised), eight
/// bytes at a time.
fn has_carriage_return(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const CR: u64 = u64::from_ne_bytes([b'\r'; 8]);
    let mut words = bytes.chunks_exact(8);
    // a word has a zero byte where it had a carriage return before the xor
    let found = words.any(|w| {
        let x = u64::from_ne_bytes(w.try_into().unwrap_or([b'\r'; 8])) ^ CR;
        x.wrapping_sub(ONES) & !x & HIGH != 0
    });
    found || words.remainder().contains(&b'\r')
}

/// Which blank text a [`Tokenizer`] read hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blanks {
    /// All text, as read.
    Keep,
    /// No blank run, nor the blank start of a run ([`Tokenizer::next_skipping_blanks`]).
    Skip,
    /// No blank run just before a start tag ([`Tokenizer::next_before_start`]).
    BeforeStart,
}

/// What the [`Tokenizer`] hands out.
#[derive(Debug)]
pub(crate) enum Token<'a> {
    /// A start tag (or an empty element, which is followed by its [`Token::End`]), with its
    /// local name.
    Start(Name<'a>),
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
    /// The document the reader reads (leading whitespace skipped), which the names and text
    /// handed out borrow from.
    doc: &'a str,
    /// Offset of the reader's input in the document (leading whitespace skipped).
    start: usize,
    open: Vec<Name<'a>>,
    max_depth: usize,
    root_done: bool,
    /// Tokens already read (an empty element's `End`, a tag read after a text run), handed
    /// out first, in order: never more than two.
    pending: [Option<Token<'a>>; 2],
}

impl<'a> Tokenizer<'a> {
    /// Checks the size and refuses declarations before anything is read.
    pub(crate) fn new(xml: &'a str, limits: &Limits) -> Result<Self, WireError> {
        limits.check_size(xml.len())?;
        refuse_declarations(xml)?;
        let (reader, start) = reader(xml);
        Ok(Tokenizer {
            reader,
            doc: &xml[start..],
            start,
            open: Vec::with_capacity(8),
            max_depth: limits.depth(),
            root_done: false,
            pending: [None, None],
        })
    }

    /// The next token. After an error the document is malformed and the tokenizer must not
    /// be used again.
    pub(crate) fn next(&mut self) -> Result<Token<'a>, WireError> {
        self.read(Blanks::Keep)
    }

    /// [`Tokenizer::next`] for a reader that ignores blank text (between the elements of an
    /// element that holds only elements): a text run is handed out without the blank pieces
    /// before its first other piece, and not at all when it is blank. The same tokens
    /// otherwise, read from the same events, so the same errors; only cheaper, since the
    /// whitespace between elements is most of a document's text.
    pub(crate) fn next_skipping_blanks(&mut self) -> Result<Token<'a>, WireError> {
        self.read(Blanks::Skip)
    }

    /// [`Tokenizer::next`] for a reader that ignores blank text before a start tag but keeps
    /// any other text exactly (an XML-RPC `<value>`: `<value> <string>` is typed, `<value> </value>`
    /// is the string `" "`): a start tag after nothing but whitespace comes without the text
    /// run before it. The same tokens otherwise, and the same errors.
    pub(crate) fn next_before_start(&mut self) -> Result<Token<'a>, WireError> {
        self.read(Blanks::BeforeStart)
    }

    fn read(&mut self, blanks: Blanks) -> Result<Token<'a>, WireError> {
        if let Some(token) = self.pending[0].take() {
            self.pending.swap(0, 1);
            return Ok(token);
        }
        let mut run: Option<Cow<'a, str>> = None;
        loop {
            // Blank text before a reader's next element need not become an event at all:
            // quick-xml skips the whitespace (space, tab, CR, LF, all whitespace to `str::trim`
            // too) in the same read as the markup after it. Only before a run starts, so a
            // run's text is never cut, and only inside the root element, where whitespace is
            // all such text can be. Positions of what follows skipped whitespace are taken
            // from the event itself ([`Tokenizer::at`]); a reader that keeps blank text
            // unless a start tag follows gets the skipped text back otherwise.
            let trim = blanks != Blanks::Keep && run.is_none() && !self.open.is_empty();
            self.reader.config_mut().trim_text_start = trim;
            let position = self.reader.buffer_position() as usize + self.start;
            let event = self.reader.read_event().map_err(|e| {
                WireError::MalformedXml(format!(
                    "{e} at byte {}",
                    self.reader.error_position() as usize + self.start
                ))
            })?;
            if trim
                && blanks == Blanks::BeforeStart
                && !matches!(event, Event::Start(_) | Event::Empty(_))
            {
                // not a start tag: the whitespace skipped before it is text after all
                run = self.skipped(position)?;
            }
            let text = match event {
                Event::DocType(_) => return Err(WireError::DoctypeRefused),
                Event::Start(tag) | Event::Empty(tag) if self.root_done => {
                    let name = Name::of(self.doc, tag.name().as_ref());
                    let position = self.at(tag.name().as_ref(), "<");
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
                    let name = Name::of(self.doc, tag.name().as_ref());
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
                    let name = Name::of(self.doc, tag.name().as_ref());
                    return Ok(self.after_run(run, Token::Start(name), Some(Token::End)));
                }
                Event::End(tag) => {
                    let position = self.at(tag.name().as_ref(), "</");
                    let name = Name::of(self.doc, tag.name().as_ref()).trimmed();
                    let Some(open) = self.open.pop() else {
                        return Err(WireError::MalformedXml(format!(
                            "unexpected closing tag </{name}> at byte {position}"
                        )));
                    };
                    // a closing tag is nearly always written as its start tag was: the exact
                    // comparison first, the case-insensitive one only when that fails
                    let same = open.0 == name.0 || open.0.eq_ignore_ascii_case(&name.0);
                    let root_alias = || {
                        self.open.is_empty()
                            && ROOT_ALIASES.iter().any(|alias| open.is(alias))
                            && ROOT_ALIASES.iter().any(|alias| name.is(alias))
                    };
                    if !same && !root_alias() {
                        return Err(WireError::MalformedXml(format!(
                            "closing tag </{name}> does not match <{open}> at byte {position}"
                        )));
                    }
                    if self.open.is_empty() {
                        self.root_done = true;
                    }
                    return Ok(self.after_run(run, Token::End, None));
                }
                Event::Text(text) => match in_doc(self.doc, &text) {
                    // line ends need no normalising without a carriage return
                    Some(content) if !has_carriage_return(content.as_bytes()) => {
                        Cow::Borrowed(content)
                    }
                    _ => event_text(&Event::Text(text), position)?,
                },
                Event::CData(_) => event_text(&event, position)?,
                Event::GeneralRef(ref reference) => {
                    let position = self.at(reference, "&");
                    event_text(&event, position)?
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
                if !is_blank(&text) {
                    return Err(WireError::MalformedXml(format!(
                        "text outside the root element at byte {position}"
                    )));
                }
                continue;
            }
            match &mut run {
                Some(run) => run.to_mut().push_str(&text),
                None if blanks == Blanks::Skip && is_blank(&text) => {}
                None => run = Some(text),
            }
        }
    }

    /// The whitespace quick-xml skipped from `position` on before the event it read last, as
    /// the text it is (line ends normalised); `None` when there was none.
    fn skipped(&self, position: usize) -> Result<Option<Cow<'a, str>>, WireError> {
        let rest = self.doc.get(position - self.start..).unwrap_or_default();
        let end = rest
            .bytes()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .unwrap_or(rest.len());
        let skipped = &rest[..end];
        Ok(match skipped {
            "" => None,
            _ if !has_carriage_return(skipped.as_bytes()) => Some(Cow::Borrowed(skipped)),
            _ => Some(event_text(
                &Event::Text(BytesText::from_escaped(skipped)),
                position,
            )?),
        })
    }

    /// The offset in the input of the markup `lead` that `part`, a slice of an event just
    /// read from the document, follows: where the event starts, even when skipped whitespace
    /// came before it in the same read.
    fn at(&self, part: &[u8], lead: &str) -> usize {
        (part.as_ptr() as usize)
            .wrapping_sub(self.doc.as_ptr() as usize)
            .wrapping_sub(lead.len())
            .wrapping_add(self.start)
    }

    /// `token` (and `then`) after the text run read before them, if any.
    #[inline]
    fn after_run(
        &mut self,
        run: Option<Cow<'a, str>>,
        token: Token<'a>,
        then: Option<Token<'a>>,
    ) -> Token<'a> {
        match run {
            Some(run) => {
                self.pending = [Some(token), then];
                Token::Text(run)
            }
            None => {
                self.pending[0] = then;
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

/// The text a `Text`, `CData` or `GeneralRef` event carries: content with XML 1.0 line ends,
/// a reference resolved. Every other event carries none (empty).
pub(crate) fn event_text<'a>(
    event: &Event<'a>,
    position: usize,
) -> Result<Cow<'a, str>, WireError> {
    let malformed = |e: quick_xml::encoding::EncodingError| {
        WireError::MalformedXml(format!("{e} at byte {position}"))
    };
    match event {
        Event::Text(text) => text.xml10_content().map_err(malformed),
        Event::CData(data) => data.xml10_content().map_err(malformed),
        Event::GeneralRef(reference) => resolve_reference(reference, position).map(Cow::Owned),
        _ => Ok(Cow::Borrowed("")),
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
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                add_text(&mut stack, event_text(&event, position)?, position)?;
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

#[cfg(test)]
fn local_name(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw);
    let local = match name.rsplit_once(':') {
        Some((_, local)) => local,
        None => &name,
    };
    local.to_ascii_lowercase()
}

/// Refuses `<!DOCTYPE` and `<!ENTITY` anywhere, whatever their case, before parsing starts.
pub(crate) fn refuse_declarations(xml: &str) -> Result<(), WireError> {
    let bytes = xml.as_bytes();
    // a search for the one byte (`!` is rare in a document) rather than for `<!`
    for (i, _) in xml.match_indices('!') {
        if i.checked_sub(1).and_then(|before| bytes.get(before)) != Some(&b'<') {
            continue;
        }
        let rest = bytes.get(i + 1..).unwrap_or_default();
        let starts =
            |word: &[u8]| rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word);
        if starts(b"doctype") || starts(b"entity") {
            return Err(WireError::DoctypeRefused);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_what_trim_leaves_empty() {
        let pieces = [
            "", " ", "\n", "\t", "\r", "\u{b}", "\u{c}", "\u{a0}", "\u{2028}", "\u{3000}", "x",
            "\u{1c}", "        ", "ש",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    // across the eight-byte words too
                    for text in [format!("{a}{b}{c}"), format!("{a}         {b}{c}        ")] {
                        assert_eq!(is_blank(&text), text.trim().is_empty(), "{text:?}");
                        assert_eq!(
                            has_carriage_return(text.as_bytes()),
                            text.contains('\r'),
                            "{text:?}"
                        );
                    }
                }
            }
        }
        for at in 0..40 {
            let mut text = "a".repeat(40);
            text.replace_range(at..=at, "\r");
            assert!(has_carriage_return(text.as_bytes()), "{at}");
        }
    }

    #[test]
    fn names_are_local_compared_and_shown_lowercase() {
        let doc = "<Ex:Value><ns:a:STRING/><datetime.iso8601/><Ünicode/><averyveryverylongname/>";
        let name = |raw: &str| {
            let at = doc.find(raw).unwrap_or_default();
            Name::of(doc, &doc.as_bytes()[at..at + raw.len()])
        };
        let mut buf = [0; 16];
        let value = name("Ex:Value");
        assert!(matches!(value.0, Cow::Borrowed("Value")));
        assert!(value.is("value") && !value.is("values"));
        assert_eq!(value.lowered(&mut buf), b"value");
        assert_eq!(value.to_string(), "value");
        assert_eq!(name("ns:a:STRING").lowered(&mut buf), b"string");
        assert_eq!(
            name("datetime.iso8601").lowered(&mut buf),
            b"datetime.iso8601"
        );
        assert_eq!(name("Ünicode").to_string(), "Ünicode".to_ascii_lowercase());
        let long = name("averyveryverylongname");
        assert_eq!(long.lowered(&mut buf), b"");
        assert_eq!(long.to_string(), "averyveryverylongname");
        // bytes that are not the document's are copied
        assert!(matches!(Name::of(doc, b"x:Copied").0, Cow::Owned(ref n) if n == "Copied"));
        assert!(matches!(Name::of(doc, b"").0, Cow::Borrowed("")));
    }
}
