//! Targets for the wire crate's decoders and writers: XML-RPC, lenient JSON, forms and
//! charset detection.

use ivrgate_wire::{charset, form, json, xmlrpc, Limits};
use serde_json::Value;

use crate::{content_type, header_lines, limits, Tally, DEPTH};

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
pub(crate) fn check_json(value: &Value, input: usize, what: &str) {
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

pub(crate) fn percent(text: &str) -> String {
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
