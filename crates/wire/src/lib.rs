//! Wire formats spoken by legacy IVR platforms, decoded tolerantly and encoded strictly.
//!
//! `ivrgate-wire` turns raw request bodies into values the adapters can work with and turns
//! replies back into bytes the legacy side accepts. It knows nothing about any vendor: it
//! decodes body charsets ([`charset`]), reads and writes XML-RPC ([`xmlrpc`]) and SOAP ([`soap`]), reads the loose
//! JSON that real senders and the vendor documents produce ([`json`]) and reads
//! `application/x-www-form-urlencoded` bodies ([`form`]); answers built only to be written go
//! out as JSON or XML-RPC without a tree built first ([`reply`]). Readers accept the quirks seen in
//! the seed documents (each one is documented where it is handled and tested with the seed's
//! own example); writers only ever emit strictly valid protocol. Every reader enforces the
//! size and depth [`Limits`] and refuses DOCTYPE and entity declarations, so no input can make
//! it panic, overflow the stack or expand entities.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod charset;
pub mod form;
pub mod json;
pub mod reply;
pub mod soap;
pub mod xmlrpc;

mod xml;

/// Nesting depth that is never exceeded whatever [`Limits::max_depth`] says: the readers and
/// the drop of the values they build recurse once per level, so this bounds stack use.
pub(crate) const HARD_MAX_DEPTH: usize = 128;

/// Resource limits applied by every reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest element (XML) or array/object (JSON) nesting accepted; the document's root
    /// element counts as depth 1. Values above 128 (serde_json's own recursion limit) are treated as 128.
    pub max_depth: usize,
    /// Longest input accepted, in bytes of UTF-8 text.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// Depth 32 and 1 MiB: far above anything a legitimate IVR message needs.
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// The depth limit actually applied (`max_depth` capped at 128).
    pub(crate) fn depth(&self) -> usize {
        self.max_depth.min(HARD_MAX_DEPTH)
    }

    /// Refuses input longer than `max_bytes`.
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

/// Everything that can go wrong while decoding a body.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum WireError {
    /// The input is longer than [`Limits::max_bytes`].
    #[error("input too large: {size} bytes, limit {limit}")]
    TooLarge {
        /// Length of the input in bytes.
        size: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The input nests deeper than [`Limits::max_depth`].
    #[error("input nested deeper than {limit} levels")]
    TooDeep {
        /// The depth limit that was exceeded.
        limit: usize,
    },
    /// The XML holds a `<!DOCTYPE>` or `<!ENTITY>` declaration; these are never processed.
    #[error("doctype and entity declarations are refused")]
    DoctypeRefused,
    /// The XML is not well formed.
    #[error("malformed xml: {0}")]
    MalformedXml(String),
    /// The XML is well formed but is not an XML-RPC call or response.
    #[error("not xml-rpc: {0}")]
    NotXmlRpc(String),
    /// The JSON could not be read even leniently; the message gives the position.
    #[error("malformed json: {0}")]
    MalformedJson(String),
    /// The XML holds more elements than the reader's limit.
    #[error("input holds more than {limit} elements")]
    TooManyElements {
        /// The element limit that was exceeded.
        limit: usize,
    },
    /// The XML is well formed but is not the SOAP message expected.
    #[error("not soap: {0}")]
    NotSoap(String),
    /// The declared charset is not a known encoding label.
    #[error("unknown charset {0:?}")]
    UnknownCharset(String),
    /// The body holds bytes that are invalid in its charset (named here).
    #[error("body is not valid {0}")]
    Undecodable(String),
}
