//! SOAP 1.1 and 1.2: one hardened codec for both sides of the wire.
//!
//! - [`parse`] reads a document into an [`Element`] tree with namespaces resolved, `xsi:type`
//!   and `xsi:nil` exposed, attributes and text; it enforces [`Limits`] (size, depth, element
//!   count) and refuses DOCTYPE and entity declarations. [`decode`] turns a body into text
//!   first, through [`crate::charset`].
//! - Server side ([`read_request`], [`envelope`], [`fault`]): a platform calls us; we find
//!   the version and the operation and answer with an envelope or a fault of that version.
//! - Client side ([`Builder`], [`write_request`], [`read_response`]): we call a WCF-style
//!   service (document/literal wrapped, SOAP 1.1); elements are written in exactly the order
//!   the caller gives (DataContract order is the caller's knowledge), and an answer becomes
//!   its `{Op}Result` element or a typed [`SoapFault`].
//!
//! The codec knows nothing about any vendor beyond [`PortalServiceFault`], the detail type
//! of WCF faults that the CTI Portal sends.

use std::borrow::Cow;

use crate::WireError;

mod client;
mod server;
mod tree;

pub use client::{
    read_fault, read_response, soap_action, write_request, write_response, Builder,
    PortalServiceFault, ResponseError, SoapFault, REQUEST_CONTENT_TYPE,
};
pub use server::{
    envelope, fault, read_request, version_from_content_type, FaultCode, Request, Version,
};
pub use tree::{parse, Attribute, Element, TypeName};

/// The SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The XML Schema instance namespace (`xsi:type`, `xsi:nil`; WCF writes the prefix `i`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The XML Schema namespace.
pub const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";
/// The namespace of WCF's arrays of primitives (`<b:int>`, `<b:string>`).
pub const ARRAYS_NS: &str = "http://schemas.microsoft.com/2003/10/Serialization/Arrays";

/// Resource limits applied by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest document accepted, in bytes of UTF-8 text.
    pub max_bytes: usize,
    /// Deepest element nesting accepted (the root is depth 1); capped at 128.
    pub max_depth: usize,
    /// Most elements accepted in one document.
    pub max_elements: usize,
}

impl Default for Limits {
    /// 1 MiB, depth 32, 100,000 elements: far above any legitimate SOAP message here.
    fn default() -> Self {
        Limits {
            max_bytes: 1024 * 1024,
            max_depth: 32,
            max_elements: 100_000,
        }
    }
}

impl Limits {
    pub(crate) fn depth(&self) -> usize {
        self.max_depth.min(crate::HARD_MAX_DEPTH)
    }

    pub(crate) fn check_size(&self, len: usize) -> Result<(), WireError> {
        if len > self.max_bytes {
            Err(WireError::TooLarge {
                size: len,
                limit: self.max_bytes,
            })
        } else {
            Ok(())
        }
    }
}

/// Decodes a SOAP body to text (charset from the Content-Type, a BOM or the XML declaration,
/// see [`crate::charset::decode`]) after refusing one longer than `limits.max_bytes`.
/// Borrows the body when it already is UTF-8.
pub fn decode<'a>(
    body: &'a [u8],
    content_type: Option<&str>,
    limits: &Limits,
) -> Result<Cow<'a, str>, WireError> {
    limits.check_size(body.len())?;
    crate::charset::decode_borrowed(body, content_type)
}

/// Escapes text for element content and attribute values; characters XML 1.0 cannot carry
/// (controls other than tab, newline and carriage return) are left out.
pub fn escape(text: &str) -> Cow<'_, str> {
    let clean = |c: char| {
        !matches!(c, '&' | '<' | '>' | '"' | '\'')
            && ((c as u32) >= 0x20 || matches!(c, '\t' | '\n'))
            && !matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    if text.chars().all(clean) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    escape_into(&mut out, text);
    Cow::Owned(out)
}

/// Appends `text`, escaped like [`escape`], to `out`.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
