//! Targets for the adapters' request decoders: Voicenter's fields, PTK's and the wire's
//! SOAP (reading and writing), and OpenScape's calls.

use bytes::Bytes;
use ivrgate_adapter::Inbound;
use ivrgate_wire::charset;
use serde_json::Value;

use crate::wire::check_json;
use crate::{content_type, header_lines, Tally, DEPTH, MAX_BYTES};

// ---------------------------------------------------------------------------------------
// Adapters' request decoders

/// A path as the server hands it to an adapter: split, then each segment decoded. A path the
/// server would refuse (a bad escape) is taken as already decoded, which gives the adapter
/// odder segments still.
pub(crate) fn segments(raw: &str) -> ivrgate_adapter::PathSegments {
    ivrgate_adapter::PathSegments::parse(raw).unwrap_or_else(|_| {
        ivrgate_adapter::PathSegments::from_decoded(raw.split('/').filter(|s| !s.is_empty()))
    })
}

pub(crate) fn inbound(
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
                    !ivrgate_voicenter::SECRET_PARAMS
                        .iter()
                        .any(|s| key.eq_ignore_ascii_case(s)),
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
    t.check_tree(text.len());
    if let Ok(request) = ivrgate_ptk::soap::read_request(root, ct) {
        let _ = request.params().value();
    }
}

/// Counts a SOAP tree (PTK reads SOAP with the wire's codec: one element type for both).
fn tally_element(e: &ivrgate_wire::soap::Element<'_>, level: usize, t: &mut Tally) {
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
        tally_element(&root, 1, &mut t);
        t.check_tree(text.len());
        assert_eq!(t.depth, root.depth(), "depth() disagrees");
        assert_eq!(t.nodes, root.count(), "count() disagrees");
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
pub(crate) fn carried(text: &str) -> String {
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
