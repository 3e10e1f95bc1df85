//! The bodies of ivrgate's fuzz targets: one function per decoder that reads untrusted
//! bytes, each checking properties of what it decoded, not only that it did not panic.
//!
//! Both the coverage-guided fuzzer (`fuzz/`, outside the workspace, `cargo +nightly fuzz`)
//! and the corpus replay test (`tests/replay.rs`, part of `cargo nextest run --workspace`)
//! call these functions, so CI checks every committed input against the same properties the
//! fuzzer explored. A property that does not hold panics with a message saying which.
//!
//! Inputs that carry more than a body (a content type, a path, a query) put those first,
//! one per line, then the body: the fuzzer mutates them together, and the corpus files stay
//! readable. Properties common to all targets:
//!
//! - depth and size limits are respected: nothing decoded nests deeper than the limit the
//!   decoder was given;
//! - memory per input is linear in the input: the decoded value has at most one node per
//!   few input bytes and no more decoded text than the input can carry (so the decoded form
//!   is at most a fixed multiple of the input's size);
//! - writers read back: what a writer produces from a decoded value decodes to that value.
//!
//! The targets are grouped by what they read: `wire.rs` (XML-RPC, JSON, forms, charsets),
//! `adapters.rs` (the adapters' request decoders and SOAP), `ctips.rs` (the CTIPS callback
//! service), `server.rs` (command API, configuration, paths, redaction, forwarding headers);
//! this file holds the list of targets and what they share.

#![forbid(unsafe_code)]

mod adapters;
mod ctips;
mod server;
mod wire;

use ivrgate_wire::Limits;

pub use adapters::{openscape, ptk_soap, soap, soap_write, voicenter};
pub use ctips::ctips;
pub use server::{command, config, forwarded, path, redact};
pub use wire::{charset, form, json, xmlrpc};

/// Nesting depth the targets decode with: the server's default `max_nesting_depth`.
pub const DEPTH: usize = 32;

/// Largest input the targets decode: the server's default `max_body_bytes`.
pub const MAX_BYTES: usize = 1024 * 1024;

/// A target's body: decodes one input and panics when a property does not hold.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory (`fuzz/corpus/{name}`) and fuzz binary carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("xmlrpc", xmlrpc),
    ("json", json),
    ("form", form),
    ("charset", charset),
    ("voicenter", voicenter),
    ("ptk_soap", ptk_soap),
    ("soap", soap),
    ("soap_write", soap_write),
    ("ctips", ctips),
    ("openscape", openscape),
    ("command", command),
    ("config", config),
    ("path", path),
    ("redact", redact),
    ("forwarded", forwarded),
];

pub(crate) fn limits() -> Limits {
    Limits {
        max_depth: DEPTH,
        max_bytes: MAX_BYTES,
    }
}

/// Splits off the first `N` lines (without their `\n`); the rest is the body. Missing lines
/// are empty.
pub(crate) fn header_lines<const N: usize>(data: &[u8]) -> ([&[u8]; N], &[u8]) {
    let mut lines = [&data[..0]; N];
    let mut rest = data;
    for line in &mut lines {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                *line = &rest[..i];
                rest = &rest[i + 1..];
            }
            None => {
                *line = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    (lines, rest)
}

/// A header line as a content type: `None` when empty or not a valid header value.
pub(crate) fn content_type(line: &[u8]) -> Option<http::HeaderValue> {
    if line.is_empty() {
        return None;
    }
    http::HeaderValue::from_bytes(line).ok()
}

/// Counts values and decoded bytes; checks depth.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) nodes: usize,
    pub(crate) bytes: usize,
    pub(crate) depth: usize,
}

impl Tally {
    /// A decoded XML tree: within the depth limit, at most one element per four input bytes
    /// and no more text (names, text, attribute values) than the input.
    pub(crate) fn check_tree(&self, input: usize) {
        assert!(self.depth <= DEPTH, "elements nest {} deep", self.depth);
        assert!(
            self.nodes * 4 <= input,
            "{} elements from {} bytes",
            self.nodes,
            input
        );
        assert!(
            self.bytes <= input,
            "{} bytes of text from {}",
            self.bytes,
            input
        );
    }
}
