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

#![forbid(unsafe_code)]

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ivrgate_adapter::{
    AnswerSource, BoxFuture, Command, Decision, DecisionRequest, Entity, EntityKey,
    EventSubmission, FallbackReason, Gateway, Inbound, RecordError, Recorded,
};
use ivrgate_wire::{charset, form, json, xmlrpc, Limits};
use serde_json::Value;

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

fn limits() -> Limits {
    Limits {
        max_depth: DEPTH,
        max_bytes: MAX_BYTES,
    }
}

/// Splits off the first `N` lines (without their `\n`); the rest is the body. Missing lines
/// are empty.
fn header_lines<const N: usize>(data: &[u8]) -> ([&[u8]; N], &[u8]) {
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
fn content_type(line: &[u8]) -> Option<http::HeaderValue> {
    if line.is_empty() {
        return None;
    }
    http::HeaderValue::from_bytes(line).ok()
}

// ---------------------------------------------------------------------------------------
// XML-RPC (crates/wire/src/xmlrpc.rs)

/// XML-RPC calls and responses (`xmlrpc::parse_call`, `parse_response`): within the limits
/// (an input one byte over the size limit is refused);
/// one value per 8 input bytes at most (`<value/>` is the smallest) and no more text than
/// the input; a decoded call, response or fault written by `write_call`, `write_response` or
/// `write_fault` reads back as itself (with the writer's documented replacement of
/// characters XML 1.0 cannot carry).
pub fn xmlrpc(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The writer's output is at most one level deeper (an untyped `<value>` gets its
    // `<string>`), never larger than a few times the decoded text.
    let again_limits = Limits {
        max_depth: DEPTH + 1,
        max_bytes: usize::MAX,
    };
    // The size limit holds: one byte over it is never accepted.
    if let Some(smaller) = text.len().checked_sub(1) {
        let tight = Limits {
            max_depth: DEPTH,
            max_bytes: smaller,
        };
        assert!(
            xmlrpc::parse_call(text, &tight).is_err(),
            "call over the size limit"
        );
        assert!(
            xmlrpc::parse_response(text, &tight).is_err(),
            "response over the size limit"
        );
    }
    if let Ok(call) = xmlrpc::parse_call(text, &limits()) {
        check_values(&call.params, data.len());
        check_into_json(&call.params);
        let written = xmlrpc::write_call(&call);
        let again = xmlrpc::parse_call(&written, &again_limits)
            .unwrap_or_else(|e| panic!("a written call does not read back: {e}\n{written}"));
        let expected = xmlrpc::MethodCall {
            method: writable(&call.method).trim().to_owned(),
            params: call.params.iter().map(writable_value).collect(),
        };
        assert!(
            again.method == expected.method && same_values(&again.params, &expected.params),
            "a call does not survive writing and reading:\n{call:?}\n{again:?}\n{written}"
        );
    }
    match xmlrpc::parse_response(text, &limits()) {
        Ok(Ok(values)) => {
            check_values(&values, data.len());
            check_into_json(&values);
            for value in &values {
                let written = xmlrpc::write_response(value);
                let again = xmlrpc::parse_response(&written, &again_limits);
                let expected = writable_value(value);
                match again {
                    Ok(Ok(again)) if again.len() == 1 && same_value(&again[0], &expected) => {}
                    other => panic!(
                        "a response does not survive writing and reading:\n{value:?}\n{other:?}\n{written}"
                    ),
                }
            }
        }
        Ok(Err(fault)) => {
            let written = xmlrpc::write_fault(&fault);
            let again = xmlrpc::parse_response(&written, &again_limits);
            let expected = xmlrpc::Fault {
                code: fault.code,
                message: writable(&fault.message),
            };
            assert!(
                again == Ok(Err(expected.clone())),
                "a fault does not survive writing and reading:\n{expected:?}\n{again:?}\n{written}"
            );
        }
        Err(_) => {}
    }
}

/// `Value::into_json` (which moves) gives what `Value::to_json` (which copies) gives.
fn check_into_json(values: &[xmlrpc::Value]) {
    for value in values {
        let copied = value.to_json();
        let moved = value.clone().into_json();
        assert!(
            moved == copied,
            "into_json and to_json differ for {value:?}:\n{moved}\n{copied}"
        );
    }
}

/// The writer's documented replacement: characters XML 1.0 cannot carry become U+FFFD.
fn writable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

fn writable_value(value: &xmlrpc::Value) -> xmlrpc::Value {
    use xmlrpc::Value as V;
    match value {
        V::Str(s) => V::Str(writable(s)),
        V::DateTime(s) => V::DateTime(writable(s).trim().to_owned()),
        V::Struct(members) => V::Struct(
            members
                .iter()
                .map(|(k, v)| (writable(k), writable_value(v)))
                .collect(),
        ),
        V::Array(items) => V::Array(items.iter().map(writable_value).collect()),
        other => other.clone(),
    }
}

/// Equality that takes every NaN as equal to every other (the writer writes `nan`).
fn same_value(a: &xmlrpc::Value, b: &xmlrpc::Value) -> bool {
    use xmlrpc::Value as V;
    match (a, b) {
        // Debug text: every NaN prints as `NaN`, and `-0` stays apart from `0`.
        (V::Double(x), V::Double(y)) => format!("{x:?}") == format!("{y:?}"),
        (V::Struct(x), V::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_value(vx, vy))
        }
        (V::Array(x), V::Array(y)) => same_values(x, y),
        _ => a == b,
    }
}

fn same_values(a: &[xmlrpc::Value], b: &[xmlrpc::Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y))
}

/// Counts values and decoded bytes; checks depth.
#[derive(Default)]
struct Tally {
    nodes: usize,
    bytes: usize,
    depth: usize,
}

fn tally_xmlrpc(value: &xmlrpc::Value, level: usize, t: &mut Tally) {
    use xmlrpc::Value as V;
    t.nodes += 1;
    t.depth = t.depth.max(level);
    match value {
        V::Str(s) | V::DateTime(s) => t.bytes += s.len(),
        V::Base64(b) => t.bytes += b.len(),
        V::Struct(members) => {
            for (name, v) in members {
                t.bytes += name.len();
                tally_xmlrpc(v, level + 1, t);
            }
        }
        V::Array(items) => {
            for v in items {
                tally_xmlrpc(v, level + 1, t);
            }
        }
        _ => {}
    }
}

fn check_values(values: &[xmlrpc::Value], input: usize) {
    let mut t = Tally::default();
    for v in values {
        tally_xmlrpc(v, 1, &mut t);
    }
    // Each nested value costs three elements (value, struct/array, member/data).
    assert!(t.depth * 3 <= DEPTH, "values nest {} deep", t.depth);
    assert!(
        t.nodes * 8 <= input,
        "{} values from {input} bytes",
        t.nodes
    );
    assert!(t.bytes <= input, "{} bytes of text from {input}", t.bytes);
}

// ---------------------------------------------------------------------------------------
// Lenient JSON and forms (crates/wire/src/json.rs, form.rs)

fn tally_json(value: &Value, level: usize, t: &mut Tally) {
    t.nodes += 1;
    t.depth = t.depth.max(level);
    match value {
        Value::String(s) => t.bytes += s.len(),
        Value::Array(items) => {
            for v in items {
                tally_json(v, level + 1, t);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                t.bytes += k.len();
                tally_json(v, level + 1, t);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Checks a decoded JSON value against the input it came from: containers nest at most
/// `DEPTH` deep, at most one value per input byte, no more text than the input.
fn check_json(value: &Value, input: usize, what: &str) {
    let mut t = Tally::default();
    tally_json(value, 0, &mut t);
    assert!(t.depth <= DEPTH, "{what}: nests {} deep", t.depth);
    assert!(
        t.nodes <= input.max(1),
        "{what}: {} values from {input} bytes",
        t.nodes
    );
    assert!(
        t.bytes <= input,
        "{what}: {} bytes of text from {input}",
        t.bytes
    );
}

/// `json::parse_lenient`: within the limits (one byte over the size limit is refused),
/// linear in the input, and what it reads is
/// JSON: written by serde_json, it reads back (strictly) as exactly the same value (numbers
/// keep their text, so this holds to the last digit; docs/robustness.md, finding F1).
pub fn json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(smaller) = text.len().checked_sub(1) {
        let tight = Limits {
            max_depth: DEPTH,
            max_bytes: smaller,
        };
        assert!(
            json::parse_lenient(text, &tight).is_err(),
            "json over the size limit"
        );
    }
    let Ok(value) = json::parse_lenient(text, &limits()) else {
        return;
    };
    check_json(&value, data.len(), "json");
    let written = serde_json::to_string(&value).expect("a value serialises");
    let again: Value = serde_json::from_str(&written)
        .unwrap_or_else(|e| panic!("lenient output is not JSON ({e}): {written}"));
    assert!(
        again == value,
        "lenient output does not read back: {value:?}\n{again:?}\n{written}"
    );
}

/// `form::parse`: no more text out than three bytes per input byte (an undecodable byte
/// becomes U+FFFD), and the pairs, percent-encoded again, read back as themselves.
/// `form::parse_in` (the same input, as bytes, in UTF-8, windows-1255, an unknown charset and
/// UTF-16LE): see [`form_in`].
pub fn form(data: &[u8]) {
    form_in(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs = form::parse(text);
    let out: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(
        out <= 3 * data.len(),
        "{out} bytes of text from {}",
        data.len()
    );
    assert!(pairs.len() <= data.len(), "{} pairs", pairs.len());
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect();
    let again = form::parse(&encoded.join("&"));
    assert_eq!(again, pairs, "form pairs do not survive encoding");
}

/// `form::parse_in`: in UTF-8 it reads what `parse` reads (names and values, U+FFFD where
/// `parse` puts it) and keeps a value's bytes exactly when they are not UTF-8; in every
/// ASCII-compatible charset, a value's kept bytes, percent-encoded again, read back as the
/// same pair; with an unknown charset only non-ASCII values are kept as bytes.
fn form_in(data: &[u8]) {
    use ivrgate_wire::charset::Declared;
    let utf8 = form::parse_in(data, charset::declared(None));
    let lossy = form::parse(&String::from_utf8_lossy(data));
    let utf8_pairs: Vec<(String, String)> = utf8
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    // `parse` reads text: a byte sequence that is not UTF-8 is one U+FFFD before it splits,
    // so only UTF-8 input is compared pair for pair.
    if std::str::from_utf8(data).is_ok() {
        assert_eq!(utf8_pairs, lossy, "parse_in (UTF-8) and parse differ");
    }
    for pair in &utf8 {
        if let Some(bytes) = &pair.undecodable {
            assert!(
                std::str::from_utf8(bytes).is_err(),
                "UTF-8 value {bytes:?} kept as undecodable"
            );
            assert_eq!(
                pair.value,
                String::from_utf8_lossy(bytes),
                "lossy value differs from its bytes"
            );
        }
    }
    for declared in [
        charset::declared(None),
        charset::declared(Some(
            "application/x-www-form-urlencoded; charset=windows-1255",
        )),
        Declared::Unknown("x-fuzz"),
    ] {
        for pair in form::parse_in(data, declared) {
            if let Declared::Unknown(_) = declared {
                match &pair.undecodable {
                    Some(bytes) => assert!(!bytes.is_ascii(), "ASCII kept as bytes: {pair:?}"),
                    None => assert!(pair.value.is_ascii(), "non-ASCII read: {pair:?}"),
                }
            }
            let Some(bytes) = &pair.undecodable else {
                continue;
            };
            let again = form::parse_in(format!("v={}", percent_bytes(bytes)).as_bytes(), declared);
            assert!(
                again.len() == 1
                    && again[0].value == pair.value
                    && again[0].undecodable.as_ref() == Some(bytes),
                "kept bytes do not read back in {declared:?}: {pair:?}\n{again:?}"
            );
        }
    }
    // UTF-16 cannot carry a form byte for byte: only that it reads.
    let _ = form::parse_in(
        data,
        charset::declared(Some("text/plain; charset=utf-16le")),
    );
}

fn percent_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Charset detection (crates/wire/src/charset.rs)

/// `charset::decode`, `decode_borrowed`, `decode_escaped` with `Escaped::restore`, and
/// `declared`; input: content type line, then the body. At most three bytes of UTF-8 per
/// input byte, and decoding the result again as declared UTF-8 changes nothing;
/// `decode_borrowed` gives what `decode` gives; `decode_escaped` succeeds wherever `decode`
/// does, with the same text and nothing escaped; where it escapes bytes, `restore` gives the
/// body's exact bytes back (UTF-8 and single-byte charsets, whose text encodes back to the
/// bytes it came from); a charset label `declared` does not know fails `decode` as unknown.
pub fn charset(data: &[u8]) {
    let ([ct], body) = header_lines::<1>(data);
    let ct = content_type(ct);
    let ct = ct.as_ref().and_then(|v| v.to_str().ok());
    let decoded = charset::decode(body, ct);
    let borrowed = charset::decode_borrowed(body, ct);
    assert_eq!(
        borrowed.as_deref().map_err(ToString::to_string),
        decoded.as_deref().map_err(ToString::to_string),
        "decode_borrowed and decode differ"
    );
    match charset::declared(ct) {
        charset::Declared::Unknown(label) => assert!(
            matches!(&decoded, Err(ivrgate_wire::WireError::UnknownCharset(l)) if l == label),
            "{label:?} is unknown to declared but not to decode: {decoded:?}"
        ),
        charset::Declared::Known(_) => {}
    }
    check_escaped(body, ct, decoded.as_deref().ok());
    let Ok(text) = decoded else {
        return;
    };
    assert!(
        text.len() <= 3 * body.len(),
        "{} bytes of text from {}",
        text.len(),
        body.len()
    );
    if !text.starts_with('\u{feff}') {
        let again = charset::decode(text.as_bytes(), Some("text/plain; charset=utf-8"));
        assert_eq!(
            again.as_deref(),
            Ok(text.as_str()),
            "UTF-8 does not decode to itself"
        );
    }
}

/// `decode_escaped` against `decode` (`decoded`: its text, when it succeeded).
fn check_escaped(body: &[u8], ct: Option<&str>, decoded: Option<&str>) {
    let escaped = charset::decode_escaped(body, ct);
    if let Some(decoded) = decoded {
        let escaped = escaped
            .as_ref()
            .unwrap_or_else(|e| panic!("decode_escaped fails ({e}) where decode succeeds"));
        assert_eq!(escaped.text, decoded, "decode_escaped and decode differ");
        assert_eq!(escaped.escaped, 0, "escapes in a body decode reads");
        return;
    }
    let Ok(escaped) = escaped else {
        return;
    };
    assert!(
        escaped.text.len() <= 4 * body.len(),
        "{} bytes of escaped text from {}",
        escaped.text.len(),
        body.len()
    );
    let in_text = charset::Escaped::count(&escaped.text);
    assert!(
        in_text >= escaped.escaped,
        "{} escapes counted, {in_text} in the text",
        escaped.escaped
    );
    // The text holds escape characters the body itself sent: restore cannot tell them apart.
    if in_text != escaped.escaped {
        return;
    }
    let Some((lossy, bytes)) = escaped.restore(&escaped.text) else {
        assert_eq!(
            escaped.escaped, 0,
            "restore finds no escape in escaped text"
        );
        return;
    };
    assert_eq!(
        lossy.chars().count(),
        escaped.text.chars().count(),
        "restore's lossy text is not one character per character"
    );
    let content = if escaped.encoding.name() == "UTF-8" {
        body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
    } else if escaped.encoding.is_single_byte() {
        body
    } else {
        return;
    };
    assert!(
        bytes == content,
        "restore does not give the bytes back ({}):\n{content:?}\n{bytes:?}",
        escaped.encoding.name()
    );
}

// ---------------------------------------------------------------------------------------
// Adapters' request decoders

/// A path as the server hands it to an adapter: split, then each segment decoded. A path the
/// server would refuse (a bad escape) is taken as already decoded, which gives the adapter
/// odder segments still.
fn segments(raw: &str) -> ivrgate_adapter::PathSegments {
    ivrgate_adapter::PathSegments::parse(raw).unwrap_or_else(|_| {
        ivrgate_adapter::PathSegments::from_decoded(raw.split('/').filter(|s| !s.is_empty()))
    })
}

fn inbound(
    method: http::Method,
    sub_path: &[u8],
    query: Option<&[u8]>,
    ct: Option<http::HeaderValue>,
    body: &[u8],
) -> Inbound {
    let mut headers = http::HeaderMap::new();
    if let Some(ct) = ct {
        headers.insert(http::header::CONTENT_TYPE, ct);
    }
    Inbound {
        tenant: "acme".into(),
        method,
        path: segments(&String::from_utf8_lossy(sub_path)),
        query: query.map(|q| String::from_utf8_lossy(q).into_owned()),
        headers,
        body: Bytes::copy_from_slice(body),
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
        mask_phones: true,
        max_depth: DEPTH,
    }
}

/// Query parameters that may carry a credential (the Voicenter adapter's list).
const SECRET_PARAMS: [&str; 10] = [
    "token",
    "secret",
    "key",
    "apikey",
    "api_key",
    "password",
    "pass",
    "signature",
    "sig",
    "auth",
];

/// The Voicenter request decoder (XML-RPC, JSON, form and GET). Input: content type, sub
/// path, query (empty: none), then the body. The fields are within the limits, linear in the
/// input (a legacy charset's byte may become three bytes of UTF-8), and a query string never
/// puts a credential parameter into the vendor's fields.
pub fn voicenter(data: &[u8]) {
    let ([ct, sub_path, query], body) = header_lines::<3>(data);
    let query = (!query.is_empty()).then_some(query);
    let method = if body.is_empty() {
        http::Method::GET
    } else {
        http::Method::POST
    };
    let request = inbound(method, sub_path, query, content_type(ct), body);
    let Ok((_, fields)) = ivrgate_voicenter::decode_for_fuzzing(&request) else {
        return;
    };
    let fields = Value::Object(fields);
    // A legacy charset turns one byte into up to three, and a `DATA` string holding JSON
    // is read again: the tally is bounded by three times the input.
    check_json(&fields, 3 * data.len(), "voicenter fields");
    let from_query = request
        .body
        .iter()
        .all(|b| b.is_ascii_whitespace() || *b == 0);
    if from_query {
        if let Value::Object(map) = &fields {
            for key in map.keys() {
                assert!(
                    !SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s)),
                    "credential parameter {key:?} copied from the query"
                );
            }
        }
    }
}

/// The PTK SOAP reader (`soap::parse`, `soap::read_request`) after charset decoding. Input:
/// content type, then the body. The tree is within the depth limit, has at most one element
/// per four input bytes (`<a/>`) and no more text than three bytes per input byte.
pub fn ptk_soap(data: &[u8]) {
    let ([ct], body) = header_lines::<1>(data);
    let ct = content_type(ct);
    let ct = ct.as_ref().and_then(|v| v.to_str().ok());
    let Ok(text) = charset::decode(body, ct) else {
        return;
    };
    let Ok(root) = ivrgate_ptk::soap::parse(&text, DEPTH) else {
        return;
    };
    let mut t = Tally::default();
    tally_element(&root, 1, &mut t);
    assert!(t.depth <= DEPTH, "elements nest {} deep", t.depth);
    assert!(
        t.nodes * 4 <= text.len(),
        "{} elements from {} bytes",
        t.nodes,
        text.len()
    );
    assert!(
        t.bytes <= text.len(),
        "{} bytes of text from {}",
        t.bytes,
        text.len()
    );
    if let Ok(request) = ivrgate_ptk::soap::read_request(root, ct) {
        let _ = request.params().value();
    }
}

fn tally_element(e: &ivrgate_ptk::soap::Element<'_>, level: usize, t: &mut Tally) {
    t.nodes += 1;
    t.depth = t.depth.max(level);
    t.bytes += e.name.len() + e.prefix.len() + e.text.len();
    t.bytes += e
        .attributes
        .iter()
        .map(|a| a.prefix.len() + a.name.len() + a.value.len())
        .sum::<usize>();
    for c in &e.children {
        tally_element(c, level + 1, t);
    }
}

/// The shared SOAP codec's reader (`ivrgate_wire::soap`): `decode`, `parse`, `read_request`,
/// `read_response`. Input: content type, then the body. The tree is within the depth limit,
/// has at most one element per four input bytes and no more text (names, text, attribute
/// values) than the input; `into_owned` keeps it; reading it as a request or an answer never
/// panics. The writer has its own target, [`soap_write`] (F4 in docs/robustness.md).
pub fn soap(data: &[u8]) {
    use ivrgate_wire::soap;
    let ([ct], body) = header_lines::<1>(data);
    let ct = content_type(ct);
    let ct = ct.as_ref().and_then(|v| v.to_str().ok());
    let limits = soap::Limits {
        max_bytes: MAX_BYTES,
        max_depth: DEPTH,
        max_elements: MAX_BYTES,
    };
    let Ok(text) = soap::decode(body, ct, &limits) else {
        return;
    };
    if let Ok(root) = soap::parse(&text, &limits) {
        let mut t = Tally::default();
        tally_soap(&root, 1, &mut t);
        assert!(t.depth <= DEPTH, "elements nest {} deep", t.depth);
        assert_eq!(t.depth, root.depth(), "depth() disagrees");
        assert_eq!(t.nodes, root.count(), "count() disagrees");
        assert!(
            t.nodes * 4 <= text.len(),
            "{} elements from {} bytes",
            t.nodes,
            text.len()
        );
        assert!(
            t.bytes <= text.len(),
            "{} bytes of text from {}",
            t.bytes,
            text.len()
        );
        let owned = root.clone().into_owned();
        assert!(owned == root, "into_owned changed the tree");
        if let Ok(request) = soap::read_request(root, ct) {
            if request.operation.name.eq_ignore_ascii_case("Fault") {
                let _ = soap::read_fault(request.version, &request.operation);
            }
        }
        let _ = soap::read_response(body, ct, "Op", &limits);
    }
}

/// The text the SOAP writer carries of `text` (it leaves out what XML 1.0 cannot carry).
fn carried(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            ((c as u32) >= 0x20 || matches!(c, '\t' | '\n' | '\r'))
                && !matches!(c, '\u{FFFE}' | '\u{FFFF}')
        })
        .collect()
}

/// The shared SOAP codec's request writer (`Builder`, `write_request`) read back by its
/// reader. Input: text (bytes that are not UTF-8 are replaced). A request is written with the
/// input's lines (at most 64) as values: leaves, nil for an empty line, the first line as an
/// attribute, the first three as a string array. It parses, is a request in the written
/// operation namespace, and its values, attribute and array read back as the lines (without
/// the characters XML 1.0 cannot carry, which the writer documents it leaves out).
pub fn soap_write(data: &[u8]) {
    use ivrgate_wire::soap::{self, Builder};
    const NS: &str = "urn:ivrgate:fuzz";
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').take(64).collect();
    let mut b = Builder::new();
    b.start_with("args", &[("xmlns:a", NS), ("xmlns:i", soap::XSI_NS)]);
    for line in &lines {
        b.optional("a:V", (!line.is_empty()).then_some(*line));
    }
    b.leaf_with("a:Attr", &[("v", lines[0])], "")
        .strings("a:List", lines.iter().take(3))
        .end();
    let xml = soap::write_request("Op", NS, b);
    let limits = soap::Limits {
        max_bytes: usize::MAX,
        ..soap::Limits::default()
    };
    let root = soap::parse(&xml, &limits)
        .unwrap_or_else(|e| panic!("a written request does not parse: {e}\n{xml}"));
    let request =
        soap::read_request(root, None).unwrap_or_else(|e| panic!("not a request: {e}\n{xml}"));
    let op = request.operation;
    assert_eq!(op.namespace.as_deref(), Some(NS), "operation namespace");
    let args = op
        .child("args")
        .unwrap_or_else(|| panic!("no args in {xml}"));
    let values: Vec<_> = args.all("V").collect();
    assert_eq!(values.len(), lines.len(), "values written");
    for (element, line) in values.iter().zip(&lines) {
        assert_eq!(element.namespace.as_deref(), Some(NS), "value namespace");
        if line.is_empty() {
            assert!(element.is_nil(), "an empty line is written nil");
        } else {
            assert_eq!(element.text, carried(line), "a value reads back as itself");
        }
    }
    let attr = args.child("Attr").and_then(|e| e.attr("v"));
    assert_eq!(
        attr,
        Some(carried(lines[0]).as_str()),
        "an attribute reads back"
    );
    let list: Vec<_> = args
        .child("List")
        .map(|l| l.all("string").map(|e| e.text.to_string()).collect())
        .unwrap_or_default();
    let expected: Vec<_> = lines.iter().take(3).map(|l| carried(l)).collect();
    assert_eq!(list, expected, "an array reads back");
}

fn tally_soap(e: &ivrgate_wire::soap::Element<'_>, level: usize, t: &mut Tally) {
    t.nodes += 1;
    t.depth = t.depth.max(level);
    t.bytes += e.name.len() + e.prefix.len() + e.text.len();
    t.bytes += e
        .attributes
        .iter()
        .map(|a| a.prefix.len() + a.name.len() + a.value.len())
        .sum::<usize>();
    for c in &e.children {
        tally_soap(c, level + 1, t);
    }
}

// ---------------------------------------------------------------------------------------
// The CTIPS callback service (adapters/ctips: callback.rs, xml.rs, event.rs)

/// The tenant, callback token and lease epoch the `ctips` target's gateway holds.
const CTIPS_TENANT: &str = "acme";
const CTIPS_TOKEN: &str = "fuzz-callback-token-0123";
const CTIPS_EPOCH: u64 = 7;
/// The session id StartSession named on the live side (a Heartbeat naming another is refused).
const CTIPS_SESSION: &str = "S-fuzz";

/// Operations the callback service answers by name; anything else is `unknown`.
const CTIPS_OPS: [&str; 5] = [
    "PublishCTIEvent",
    "Heartbeat",
    "HeartbeatMessage",
    "StartSession",
    "unknown",
];

fn ctips_settings() -> &'static ivrgate_ctips::Settings {
    static SETTINGS: std::sync::OnceLock<ivrgate_ctips::Settings> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(|| {
        let raw = serde_json::json!({
            "servers": ["http://ctips.invalid/Aspect.UnifiedIP.EDK.CTIPortalService"],
            "username": "ivrgate",
            "password": "fuzz",
            "callback_token": CTIPS_TOKEN,
        });
        match ivrgate_ctips::Settings::from_json(&raw) {
            Ok(Some(settings)) => settings,
            other => panic!("the ctips target's settings do not parse: {other:?}"),
        }
    })
}

/// An empty entity store that holds the CTIPS lease and answers at once; it keeps the
/// webhook types of the events committed, so the target can see what a request made durable.
#[derive(Default)]
struct CtipsStore {
    committed: std::sync::Mutex<Vec<String>>,
}

impl CtipsStore {
    fn committed(&self) -> Vec<String> {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Gateway for CtipsStore {
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision> {
        NoStore.decide(request)
    }

    fn record<'a>(
        &'a self,
        event: EventSubmission,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        NoStore.record(event)
    }

    fn now(&self) -> SystemTime {
        NoStore.now()
    }

    fn load<'a>(&'a self, _key: EntityKey) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(async { Ok(None) })
    }

    fn find<'a>(
        &'a self,
        _tenant: &'a str,
        _namespace: &'a str,
        _value: &'a str,
    ) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(async { Ok(None) })
    }

    fn list<'a>(
        &'a self,
        _tenant: &'a str,
        _kind: &'a str,
        _limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entity>, RecordError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn transition<'a>(
        &'a self,
        keys: Vec<EntityKey>,
        f: &'a mut ivrgate_adapter::TransitionFn<'a>,
    ) -> BoxFuture<'a, Result<ivrgate_adapter::Transitioned, RecordError>> {
        use ivrgate_adapter::{Change, Transitioned};
        Box::pin(async move {
            let read = vec![None; keys.len()];
            let changes = f(&read);
            assert_eq!(changes.len(), keys.len(), "one change per entity read");
            let mut now = Vec::new();
            for (key, change) in keys.into_iter().zip(changes) {
                let Change::Write(write) = change else {
                    now.push(None);
                    continue;
                };
                self.committed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(write.events.iter().map(|e| e.event_type.clone()));
                now.push(Some(Entity {
                    key,
                    entity_id: "ent_fuzz".into(),
                    version: 1,
                    status: if write.state.is_some() {
                        "active"
                    } else {
                        "ended"
                    }
                    .into(),
                    state: write.state,
                    attached: write.attached.unwrap_or_default(),
                    expires_at: write.expires_at,
                }));
            }
            Ok(Transitioned::Done(now))
        })
    }

    fn held_epoch(&self, tenant: &str, adapter: &str, _name: &str) -> Option<u64> {
        (tenant == CTIPS_TENANT && adapter == ivrgate_ctips::NAME).then_some(CTIPS_EPOCH)
    }
}

fn tally_node(n: &ivrgate_ctips::xml::Node, level: usize, t: &mut Tally) {
    t.nodes += 1;
    t.depth = t.depth.max(level);
    t.bytes += n.name.len() + n.text.len();
    t.bytes += n
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>();
    for c in &n.children {
        tally_node(c, level + 1, t);
    }
}

/// An XML 1.0 name without a prefix (what the writer is given names as).
fn ncname(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || !c.is_ascii())
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.') || !c.is_ascii())
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// Writes an event's element tree with the shared SOAP writer: every element by its local
/// name in the event namespace, `i:nil` kept, its trimmed text, then its children.
fn write_node(b: &mut ivrgate_wire::soap::Builder, n: &ivrgate_ctips::xml::Node) {
    let name = format!("a:{}", n.name);
    let nil: &[(&str, &str)] = if n.is_nil() {
        &[("i:nil", "true")]
    } else {
        &[]
    };
    b.start_with(&name, nil).text(n.value());
    for c in &n.children {
        write_node(b, c);
    }
    b.end();
}

/// What the writer makes of a tree: each element's text trimmed and without the characters
/// XML 1.0 cannot carry.
fn as_written(n: &ivrgate_ctips::xml::Node) -> ivrgate_ctips::xml::Node {
    ivrgate_ctips::xml::Node {
        name: n.name.clone(),
        attributes: n
            .is_nil()
            .then(|| ("nil".into(), "true".into()))
            .into_iter()
            .collect(),
        text: carried(n.value()),
        children: n.children.iter().map(as_written).collect(),
    }
}

fn names_writable(n: &ivrgate_ctips::xml::Node) -> bool {
    ncname(&n.name) && n.children.iter().all(names_writable)
}

/// A PublishCTIEvent's `ctiEvent`, read (`event::read`) and mapped (`event::map`): the
/// fields are linear in the input, the webhook is one the adapter documents, and the event
/// written again by the shared SOAP writer (names, `i:type`, `i:nil`, text, children) reads
/// back as the same event.
fn ctips_event(node: &ivrgate_ctips::xml::Node, input: usize) {
    use ivrgate_ctips::{event, proto, xml};
    let Ok(read) = event::read(node) else {
        return;
    };
    check_json(
        &Value::Object(read.fields.clone()),
        3 * input,
        "ctips event fields",
    );
    let mapped = event::map(&read);
    assert!(
        event::WEBHOOK_TYPES.contains(&mapped.webhook.as_str()),
        "webhook {} is not documented",
        mapped.webhook
    );
    if !names_writable(node) {
        return;
    }
    let typed = node
        .xsi_type()
        .filter(|t| {
            !t.is_empty() && *t != "CTIEvent" && !t.contains(char::is_control) && carried(t) == *t
        })
        .map(|t| format!("a:{t}"));
    let mut attrs = vec![("xmlns:a", proto::NS_PUB), ("xmlns:i", proto::NS_XSI)];
    if let Some(t) = &typed {
        attrs.push(("i:type", t));
    }
    let mut b = ivrgate_wire::soap::Builder::new();
    b.start_with("ctiEvent", &attrs).text(node.value());
    for c in &node.children {
        write_node(&mut b, c);
    }
    b.end();
    let written = ivrgate_wire::soap::write_request("PublishCTIEvent", proto::NS_PUB, b);
    let root = xml::parse(written.as_bytes(), 128)
        .unwrap_or_else(|e| panic!("a written event does not parse: {e}\n{written}"));
    let op = xml::body_op(&root).unwrap_or_else(|e| panic!("{e}\n{written}"));
    let again = op
        .child("ctiEvent")
        .unwrap_or_else(|| panic!("no ctiEvent in {written}"));
    // The writer leaves out what XML 1.0 cannot carry: compare with the event as written.
    let mut expected = as_written(node);
    if let Some(t) = typed {
        expected.attributes.push(("type".into(), t));
    }
    let expected = event::read(&expected).map(|e| (e.type_name, e.fields));
    let again = event::read(again).map(|e| (e.type_name, e.fields));
    assert_eq!(again, expected, "an event does not read back\n{written}");
}

/// The CTIPS callback service (`ivrgate_ctips::callback::handle`: PublishCTIEvent,
/// Heartbeat, StartSession) on a gateway that holds the session's lease. Input: content
/// type, the epoch the callback path names (empty: the held one), then the body.
///
/// The body's tree (`xml::parse_typed`) is within the depth limit, has at most one element
/// per four input bytes and no more text than three bytes per input byte (a legacy charset);
/// a `ctiEvent` keeps [`ctips_event`]'s properties. The service answers without waiting,
/// with a SOAP envelope: `200` with `{Op}Result` 0, or a `500` fault with a code and a
/// reason; it names the operation only as one it serves or `unknown` (a metrics label,
/// never chosen by the input). An event is acknowledged only once committed, with the
/// webhook its type maps to; a fault commits nothing.
pub fn ctips(data: &[u8]) {
    use ivrgate_ctips::{callback, event, live, xml};
    let ([ct, epoch], body) = header_lines::<2>(data);
    let ct = content_type(ct);
    let ct_text = ct.as_ref().and_then(|v| v.to_str().ok());
    let mut published = None;
    if let Ok(root) = xml::parse_typed(body, ct_text, DEPTH) {
        let mut t = Tally::default();
        tally_node(&root, 1, &mut t);
        assert!(t.depth <= DEPTH, "elements nest {} deep", t.depth);
        assert!(
            t.nodes <= body.len() / 4 + 1,
            "{} elements from {} bytes",
            t.nodes,
            body.len()
        );
        assert!(
            t.bytes <= 3 * body.len(),
            "{} bytes of text from {}",
            t.bytes,
            body.len()
        );
        if let Ok(op) = xml::body_op(&root) {
            if op.name == "PublishCTIEvent" {
                if let Some(node) = op.child("ctiEvent") {
                    ctips_event(node, body.len());
                    published = event::read(node).ok().map(|e| event::map(&e).webhook);
                }
            }
        }
    }

    let epoch = std::str::from_utf8(epoch)
        .ok()
        .filter(|e| !e.is_empty())
        .map_or_else(|| CTIPS_EPOCH.to_string(), str::to_owned);
    let path = format!("{CTIPS_TOKEN}/{epoch}");
    let mut request = inbound(http::Method::POST, path.as_bytes(), None, ct, body);
    request.tenant = CTIPS_TENANT.into();
    let (live, _notices, _registered) = live::register(CTIPS_TENANT, CTIPS_EPOCH);
    live.set_session_id(Some(CTIPS_SESSION.into()));
    let gateway = CtipsStore::default();
    let Some(handled) = run_ready(callback::handle(&gateway, Some(ctips_settings()), request))
    else {
        panic!("a callback waited on a gateway that answers at once");
    };
    let committed = gateway.committed();
    assert!(
        CTIPS_OPS.contains(&handled.method.as_str()),
        "the operation is named {:?}, not one the service serves",
        handled.method
    );
    let status = handled.response.status().as_u16();
    if status == 404 {
        // A path that is no callback path (the epoch line made it one with more segments).
        assert!(
            committed.is_empty(),
            "a refused path committed {committed:?}"
        );
        return;
    }
    assert_eq!(
        handled
            .response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/xml; charset=utf-8"),
        "answer content type"
    );
    let answer = xml::parse(handled.response.body(), DEPTH)
        .unwrap_or_else(|e| panic!("the answer does not parse: {e}"));
    let answer = xml::body_op(&answer).unwrap_or_else(|e| panic!("the answer: {e}"));
    match status {
        200 => {
            let reply = match handled.method.as_str() {
                "HeartbeatMessage" => "Heartbeat",
                other => other,
            };
            assert_eq!(answer.name, format!("{reply}Response"), "answer element");
            assert_eq!(
                answer
                    .child(&format!("{reply}Result"))
                    .map(xml::Node::value),
                Some("0"),
                "answer result"
            );
            if handled.method == "PublishCTIEvent" {
                let webhook = published.unwrap_or_else(|| panic!("acknowledged an unread event"));
                assert!(
                    committed.contains(&webhook),
                    "acknowledged {webhook} before committing it (committed {committed:?})"
                );
            } else {
                assert!(
                    committed.is_empty(),
                    "{} committed {committed:?}",
                    handled.method
                );
            }
        }
        500 => {
            assert_eq!(answer.name, "Fault", "a 500 is a SOAP fault");
            assert!(
                answer
                    .child("faultcode")
                    .is_some_and(|c| !c.value().is_empty())
                    && answer.child("faultstring").is_some(),
                "a fault without code and reason"
            );
            assert!(committed.is_empty(), "a fault committed {committed:?}");
        }
        other => panic!("status {other}"),
    }
}

/// The OpenScape call decoder and its by-value/by-reference parameter reader. Input:
/// content type, the method named in the path (empty: none), then the body. Every accepted
/// argument is a by-value parameter of the function, of its type and within its range or
/// length, without control characters.
pub fn openscape(data: &[u8]) {
    use ivrgate_openscape::params::{Dir, Ty};
    let ([ct, path_method], body) = header_lines::<2>(data);
    let path_method =
        (!path_method.is_empty()).then(|| String::from_utf8_lossy(path_method).into_owned());
    let request = inbound(http::Method::POST, b"ch1", None, content_type(ct), body);
    let Ok((function, args)) = ivrgate_openscape::read_call_for_fuzzing(&request, path_method)
    else {
        return;
    };
    for (name, value) in args.to_json() {
        let param = function
            .params
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not a parameter of {}", function.name));
        assert!(param.dir != Dir::Out, "{name} is passed by reference");
        match (param.ty, &value) {
            (Ty::Int(min, max), Value::Number(n)) => {
                let n = n
                    .as_i64()
                    .unwrap_or_else(|| panic!("{name} = {n} is no i64"));
                assert!(
                    (min..=max).contains(&n),
                    "{name} = {n} outside {min}..={max}"
                );
            }
            (Ty::Str(max), Value::String(s)) => {
                assert!(max == 0 || s.chars().count() <= max, "{name} too long");
                assert!(
                    !s.chars().any(|c| c.is_control() && c != '\t'),
                    "{name} holds control characters"
                );
            }
            // LocalPort is an integer kept as its text.
            (Ty::Int(..), Value::String(s)) if name == "LocalPort" => {
                assert!(s.parse::<u16>().is_ok(), "LocalPort {s:?}");
            }
            (ty, value) => panic!("{name}: {value:?} for a {ty:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The command API (src/api.rs and the adapters' commands)

/// A gateway without a store: decisions take the fallback, events are stored, every entity
/// is absent. The command handlers run their request checks against it.
struct NoStore;

impl Gateway for NoStore {
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            Decision {
                decision_id: "dec_fuzz".into(),
                call_id: None,
                answer: (request.point.default_fallback)(),
                source: AnswerSource::Fallback(FallbackReason::Timeout),
                attached: serde_json::Map::new(),
            }
        })
    }

    fn record<'a>(
        &'a self,
        _event: EventSubmission,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async {
            Ok(Recorded::New {
                event_id: "evt_fuzz".into(),
                call_id: None,
                seq: None,
            })
        })
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }

    fn load<'a>(&'a self, _key: EntityKey) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(async { Ok(None) })
    }

    fn find<'a>(
        &'a self,
        _tenant: &'a str,
        _namespace: &'a str,
        _value: &'a str,
    ) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(async { Ok(None) })
    }

    fn list<'a>(
        &'a self,
        _tenant: &'a str,
        _kind: &'a str,
        _limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entity>, RecordError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Polls a future that never waits on anything external (the [`NoStore`] gateway answers at
/// once) to completion; `None` if it is still pending after a few polls.
fn run_ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..16 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Some(out);
        }
    }
    None
}

/// The command API's body reader (`web::parse_json`) and the adapters' commands. Input:
/// `METHOD adapter/path`, then the body. The body is within the limits and linear in the
/// input; every answer is a valid status with a JSON body, errors as `{"error": {"code",
/// "message"}}`.
pub fn command(data: &[u8]) {
    let ([line], body) = header_lines::<1>(data);
    let line = String::from_utf8_lossy(line);
    let (method, path) = line.split_once(' ').unwrap_or((&line, ""));
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let path = path.trim_matches('/');
    let (adapter, path) = path.split_once('/').unwrap_or((path, ""));
    let Ok(body) = ivrgate::web::parse_json(body, DEPTH) else {
        return;
    };
    check_json(&body, data.len(), "command body");
    let Some(adapter) = ivrgate::adapters::get(adapter) else {
        return;
    };
    let command = Command {
        tenant: "acme".into(),
        method,
        path: segments(path),
        query: None,
        body,
        headers: http::HeaderMap::new(),
    };
    let Some(reply) = run_ready(adapter.command(&NoStore, command)) else {
        panic!("a command waited on a gateway that answers at once");
    };
    assert!(
        (200..=599).contains(&reply.status),
        "status {}",
        reply.status
    );
    if reply.status >= 400 {
        assert!(
            reply.body["error"]["code"].is_string() && reply.body["error"]["message"].is_string(),
            "error answer without code and message: {}",
            reply.body
        );
    }
}

// ---------------------------------------------------------------------------------------
// Configuration (src/config.rs)

/// `Config::parse` then `validate` (with every adapter's settings parser): no panic, and a
/// file that validates names each tenant once.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ivrgate::config::Config::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    // `file:` secrets read files: keep the fuzzer from reading devices or large files.
    if text.contains("file:") {
        return;
    }
    if let Ok(resolved) = config.validate(ivrgate::adapters::all()) {
        for tenant in &config.tenants {
            assert!(
                resolved.tenant(&tenant.id).is_some(),
                "tenant {} lost",
                tenant.id
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request paths (crates/adapter/src/path.rs)

/// `PathSegments::parse` on the input as a raw request path: no segment is empty, none
/// holds a control character, and the segments, each percent-encoded again (`/` as `%2F`),
/// parse back as themselves; a segment holds a `/` only where the input had `%2F`.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(segments) = ivrgate_adapter::PathSegments::parse(raw) else {
        return;
    };
    let slashes: usize = segments
        .segments()
        .iter()
        .map(|s| s.matches('/').count())
        .sum();
    let encoded_slashes = raw.to_ascii_lowercase().matches("%2f").count();
    assert!(
        slashes <= encoded_slashes,
        "{slashes} '/' in segments from {encoded_slashes} %2F: {segments:?}"
    );
    for segment in segments.segments() {
        assert!(!segment.is_empty(), "empty segment in {segments:?}");
        assert!(
            !segment.chars().any(char::is_control),
            "control character in {segment:?}"
        );
    }
    let again_raw: String = segments
        .segments()
        .iter()
        .map(|s| format!("/{}", percent(s)))
        .collect();
    let again = ivrgate_adapter::PathSegments::parse(&again_raw)
        .unwrap_or_else(|e| panic!("re-encoded path does not parse ({e}): {again_raw}"));
    assert_eq!(again, segments, "segments do not survive encoding");
    // What logs show routes as the real path.
    let shown = segments.to_string();
    let from_log = ivrgate_adapter::PathSegments::parse(&shown)
        .unwrap_or_else(|e| panic!("the logged path does not parse ({e}): {shown}"));
    assert_eq!(
        from_log, segments,
        "the logged path routes elsewhere: {shown}"
    );
}

// ---------------------------------------------------------------------------------------
// Redaction (src/redact.rs)

/// Characters a planted secret is made of: no quote, escape, `#`, or URL delimiter, so it
/// stays one value wherever it is put.
fn plantable(secret: &str) -> bool {
    secret.len() >= 6
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$'()*+,;=".contains(&b))
        && secret.bytes().any(|b| b.is_ascii_digit())
        && secret.bytes().any(|b| b.is_ascii_alphabetic())
}

/// `redact::url` and `redact::toml_error` (and `Config::parse`, which applies the latter).
/// Input: a secret, then noise. Neither ever panics (on the noise alone too). A secret of
/// at least six characters (letters and digits, no delimiters), found nowhere else, planted
/// as a TOML `password = "` value before the noise, as URL credentials, or as a secret
/// query parameter, never shows in the redacted text.
pub fn redact(data: &[u8]) {
    let ([secret], noise) = header_lines::<1>(data);
    let (Ok(secret), Ok(noise)) = (std::str::from_utf8(secret), std::str::from_utf8(noise)) else {
        return;
    };
    let _ = ivrgate::redact::url(noise);
    let _ = ivrgate::redact::toml_error(noise);
    let planted = plantable(secret)
        && !noise.contains(secret)
        && !"password = https://u:@?x=1&token=".contains(secret);
    for text in [
        format!("https://u:{secret}@{noise}"),
        format!("https://{noise}?x=1&token={secret}"),
    ] {
        let shown = ivrgate::redact::url(&text);
        assert!(
            !(planted && shown.contains(secret)),
            "the secret survives redact::url: {shown}"
        );
    }
    let document = format!("password = \"{secret}{noise}");
    if let Err(e) = document.parse::<toml::Table>() {
        let shown = ivrgate::redact::toml_error(&e.to_string());
        assert!(
            !(planted && shown.contains(secret)),
            "the secret survives redact::toml_error: {shown}"
        );
    }
    if let Err(e) = ivrgate::config::Config::parse(&document, Path::new("fuzz.toml")) {
        let shown = e.to_string();
        assert!(
            !(planted && shown.contains(secret)),
            "the secret survives Config::parse: {shown}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Forwarding headers (src/auth.rs)

/// `auth::client_ip`. Input: the peer address, the trusted networks (comma-separated;
/// unreadable ones left out), then header lines (`name: value`). Never panics; an untrusted
/// peer is the client whatever the headers say; without forwarding headers the peer is the
/// client; a client other than the peer is only found through a trusted peer and is named
/// in a forwarding header.
pub fn forwarded(data: &[u8]) {
    let ([peer, trusted], rest) = header_lines::<2>(data);
    let peer_ip = String::from_utf8_lossy(peer)
        .trim()
        .parse::<std::net::IpAddr>()
        .unwrap_or(std::net::IpAddr::from([10, 0, 0, 1]));
    let peer = std::net::SocketAddr::new(peer_ip, 40000);
    let trusted: Vec<ipnet::IpNet> = String::from_utf8_lossy(trusted)
        .split(',')
        .filter_map(|net| net.trim().parse().ok())
        .collect();
    let mut headers = http::HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let client = ivrgate::auth::client_ip(peer, &headers, &trusted);
    let peer_trusted = trusted.iter().any(|net| net.contains(&peer_ip));
    if !peer_trusted {
        assert_eq!(client, Some(peer_ip), "an untrusted peer is not the client");
    }
    if !headers.contains_key("x-forwarded-for") && !headers.contains_key(http::header::FORWARDED) {
        assert_eq!(
            client,
            Some(peer_ip),
            "no forwarding header, yet not the peer"
        );
    }
    if let Some(ip) = client.filter(|ip| *ip != peer_ip) {
        assert!(peer_trusted, "{ip} found through an untrusted peer");
        let named = headers
            .get_all("x-forwarded-for")
            .iter()
            .chain(headers.get_all(http::header::FORWARDED))
            .any(|v| {
                // quoted-pairs (`"1.2.3.\\4"`) name the address too
                let v = String::from_utf8_lossy(v.as_bytes())
                    .to_ascii_lowercase()
                    .replace('\\', "");
                v.contains(&ip.to_string()) || named_v6(&v, ip)
            });
        assert!(named, "{ip} is named in no forwarding header");
    }
}

/// Whether an IPv6 address is named in a header value in some other spelling (`::0:1`).
fn named_v6(value: &str, ip: std::net::IpAddr) -> bool {
    ip.is_ipv6()
        && value
            .split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
            .flat_map(|token| [token, token.trim_matches(':')])
            .filter_map(|token| token.parse::<std::net::IpAddr>().ok())
            .any(|parsed| parsed == ip)
}
