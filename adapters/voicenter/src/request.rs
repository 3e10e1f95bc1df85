//! Reading a Voicenter request: which encoding, which method, which fields.
//!
//! Voicenter posts the same callbacks as XML-RPC, JSON (often with unquoted or duplicated
//! keys) or `application/x-www-form-urlencoded`, and sends the pop-up lookup and some CDRs by
//! GET. Everything ends up as one flat JSON object of the vendor's fields, under the vendor's
//! own names.

use std::borrow::Cow;

use base64::Engine as _;
use ivrgate_adapter::Inbound;
use ivrgate_wire::charset::{self, Declared, Escaped};
use ivrgate_wire::{form, json, xmlrpc, Limits, WireError};
use serde_json::{Map, Value};

/// How the request body was encoded; answers go back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    XmlRpc,
    Json,
    /// Form-encoded body or query string; answered in JSON, as the Voicenter SDK does.
    Form,
}

/// The Voicenter callbacks ivrgate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    GetIvrAction,
    LayerInput,
    HangupCall,
    Cdr,
    Popup,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::GetIvrAction => "GET_IVR_ACTION",
            Method::LayerInput => "IVR_LAYER_INPUT",
            Method::HangupCall => "HANGUP_CALL",
            Method::Cdr => "CDR",
            Method::Popup => "POPUP",
        }
    }

    /// Method names are matched trimmed and case-insensitively. `IvrExternalLayerInput` is
    /// the name seed section 12 gives the layer request in its prose.
    fn from_name(name: &str) -> Option<Method> {
        let name = name.trim();
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        if is("GET_IVR_ACTION") {
            Some(Method::GetIvrAction)
        } else if is("IVR_LAYER_INPUT") || is("IvrExternalLayerInput") {
            Some(Method::LayerInput)
        } else if is("HANGUP_CALL") {
            Some(Method::HangupCall)
        } else if is("CDR") {
            Some(Method::Cdr)
        } else {
            None
        }
    }
}

/// Which error shape a rejected request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// `STATUS 1` (External IVR, Layer IVR, HANGUP_CALL).
    Status,
    /// `err 1` (CDR: "1 – Parse error").
    Cdr,
    /// The pop-up answer with `STATUS` `ERROR`.
    Popup,
    /// An XML-RPC fault: the body is XML but not a method call at all.
    Fault,
}

/// A request that cannot be served, with what to answer.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    pub(crate) encoding: Encoding,
    pub(crate) shape: ErrorShape,
    /// The method, when it was recognised.
    pub(crate) method: Option<Method>,
    /// The method name as sent, for the log line only (never a metrics label).
    pub(crate) raw_method: Option<String>,
    pub(crate) reason: String,
}

/// A decoded request.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) encoding: Encoding,
    pub(crate) method: Method,
    /// The vendor's fields (the `DATA` object, the XML-RPC struct or the form pairs).
    pub(crate) fields: Map<String, Value>,
    /// The bytes the request was identified by (body, or query string for a GET); shares
    /// the body's buffer, no copy.
    pub(crate) raw: bytes::Bytes,
    /// Form and query values whose bytes the declared charset cannot read: field name →
    /// the exact bytes in base64 (the field itself holds a lossy rendering).
    pub(crate) undecodable: Map<String, Value>,
}

/// The route the core matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Main,
    Cdr,
    Popup,
}

/// Query parameters that may carry a credential; never copied into vendor fields.
pub const SECRET_PARAMS: [&str; 10] = [
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

pub(crate) fn decode(request: &Inbound) -> Result<Parsed, Rejection> {
    let route = match request.path.as_strs().as_slice() {
        [] => Route::Main,
        ["cdr"] => Route::Cdr,
        ["popup"] => Route::Popup,
        _ => {
            return Err(reject(
                Encoding::Json,
                ErrorShape::Status,
                "unknown path".into(),
            ))
        }
    };
    let route_shape = match route {
        Route::Main => ErrorShape::Status,
        Route::Cdr => ErrorShape::Cdr,
        Route::Popup => ErrorShape::Popup,
    };
    let content_type = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let xml_declared = content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("xml"));

    let body_blank = request
        .body
        .iter()
        .all(|b| b.is_ascii_whitespace() || *b == 0);
    if body_blank {
        let query = request.query.as_deref().unwrap_or("");
        if query.trim().is_empty() {
            let encoding = if xml_declared {
                Encoding::XmlRpc
            } else {
                Encoding::Json
            };
            let shape = if route_shape == ErrorShape::Status && xml_declared {
                ErrorShape::Fault
            } else {
                route_shape
            };
            return Err(reject(encoding, shape, "empty request".into()));
        }
        let (fields, undecodable) = form_fields(query.as_bytes(), content_type, true);
        let mut parsed = resolve(
            route,
            Encoding::Form,
            None,
            fields,
            bytes::Bytes::copy_from_slice(query.as_bytes()),
        )?;
        parsed.undecodable = undecodable;
        return Ok(parsed);
    }

    // A form body is plain ASCII with percent-escapes; its charset applies to the decoded
    // escapes, field by field, so a byte the charset cannot read never refuses the request.
    let decoded = charset::decode_borrowed(&request.body, content_type);
    let form_body = match &decoded {
        Ok(text) => !text
            .trim_start_matches(|c: char| c == '\u{feff}' || c.is_whitespace())
            .starts_with(['<', '{', '[']),
        Err(_) => !starts_structured(&request.body),
    };
    if form_body {
        return form_request(route, &request.body, content_type);
    }
    let undecodable_body = |e: &WireError| {
        let (encoding, shape) = if xml_declared {
            let shape = if route_shape == ErrorShape::Status {
                ErrorShape::Fault
            } else {
                route_shape
            };
            (Encoding::XmlRpc, shape)
        } else {
            (Encoding::Json, route_shape)
        };
        reject(encoding, shape, format!("undecodable body: {e}"))
    };
    // Bytes the charset cannot read inside string values do not refuse the document: they are
    // escaped, the document is parsed, and each affected field goes out recoverable.
    let (text, escapes) = match decoded {
        Ok(text) => (text, None),
        Err(first @ WireError::Undecodable(_)) => {
            match charset::decode_escaped(&request.body, content_type) {
                Ok(mut escaped) => (
                    Cow::Owned(std::mem::take(&mut escaped.text)),
                    Some((escaped, first)),
                ),
                Err(_) => return Err(undecodable_body(&first)),
            }
        }
        Err(e) => return Err(undecodable_body(&e)),
    };
    // Takes the escaped values out of the fields; refuses the body as undecodable when an
    // unreadable byte sat anywhere else (a name, the method, markup).
    let recover = |fields: &mut Map<String, Value>| -> Result<Map<String, Value>, Rejection> {
        let Some((escaped, first)) = &escapes else {
            return Ok(Map::new());
        };
        let mut out = Map::new();
        let mut found = 0;
        for (name, value) in fields.iter_mut() {
            found += restore_value(escaped, name, value, &mut out);
        }
        if found == escaped.escaped && fields.keys().all(|k| Escaped::count(k) == 0) {
            Ok(out)
        } else {
            Err(undecodable_body(first))
        }
    };
    let raw = request.body.clone();
    // The server bounded the body's size already; the nesting depth is the operator's.
    let limits = Limits {
        max_depth: request.max_depth,
        max_bytes: usize::MAX,
    };
    let start = text.trim_start_matches(|c: char| c == '\u{feff}' || c.is_whitespace());

    if start.starts_with('<') {
        let call = xmlrpc::parse_call(start, &limits).map_err(|e| {
            let shape = if route_shape == ErrorShape::Status {
                ErrorShape::Fault
            } else {
                route_shape
            };
            reject(Encoding::XmlRpc, shape, format!("not an xml-rpc call: {e}"))
        })?;
        let xmlrpc::MethodCall { method, params } = call;
        // Moved, not copied: the XML-RPC tree becomes the field map.
        let mut fields = match params.into_iter().next().map(xmlrpc::Value::into_json) {
            Some(Value::Object(fields)) => fields,
            _ => {
                let mut rejection = reject(
                    Encoding::XmlRpc,
                    route_shape,
                    "the first parameter is not a struct".into(),
                );
                rejection.method = Method::from_name(&method);
                rejection.raw_method = Some(method);
                if let Some(method) = rejection.method {
                    rejection.shape = shape_for(method);
                }
                return Err(rejection);
            }
        };
        let undecodable = recover(&mut fields)?;
        let mut parsed = resolve(route, Encoding::XmlRpc, Some(method), fields, raw)?;
        parsed.undecodable = undecodable;
        return Ok(parsed);
    }

    if start.starts_with('{') || start.starts_with('[') {
        let value = json::parse_lenient(start, &limits)
            .map_err(|e| reject(Encoding::Json, route_shape, format!("invalid json: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(reject(
                Encoding::Json,
                route_shape,
                "the json body is not an object".into(),
            ));
        };
        let Some(method_key) = find_key(&object, "METHOD") else {
            let undecodable = recover(&mut object)?;
            let mut parsed = resolve(route, Encoding::Json, None, object, raw)?;
            parsed.undecodable = undecodable;
            return Ok(parsed);
        };
        let method_value = object.remove(&method_key).unwrap_or(Value::Null);
        let Some(name) = method_value.as_str().map(str::to_owned) else {
            return Err(reject(
                Encoding::Json,
                route_shape,
                "METHOD is not a string".into(),
            ));
        };
        let data = find_key(&object, "DATA").and_then(|k| object.remove(&k));
        let mut fields = match data {
            Some(Value::Object(fields)) => fields,
            // A DATA sent as a string holding a JSON object.
            Some(Value::String(s)) => match json::parse_lenient(&s, &limits) {
                Ok(Value::Object(fields)) => fields,
                _ => return Err(missing_data(route_shape, &name)),
            },
            _ => return Err(missing_data(route_shape, &name)),
        };
        let undecodable = recover(&mut fields)?;
        let mut parsed = resolve(route, Encoding::Json, Some(name), fields, raw)?;
        parsed.undecodable = undecodable;
        return Ok(parsed);
    }

    // Neither XML nor JSON once decoded: a form, unless the body could not be decoded at all
    // (a UTF-16 byte order mark before bytes that are not UTF-16).
    if let Some((_, first)) = &escapes {
        return Err(undecodable_body(first));
    }
    form_request(route, &request.body, content_type)
}

/// Replaces each string under `value` that holds unreadable bytes with its lossy rendering and
/// records its exact bytes (base64) under its path (`name`, `name.member`, `name.0`); returns
/// how many unreadable bytes it found. A member name holding one is left for the caller's count
/// to catch.
fn restore_value(
    escaped: &Escaped,
    path: &str,
    value: &mut Value,
    out: &mut Map<String, Value>,
) -> usize {
    match value {
        Value::String(text) => match escaped.restore(text) {
            Some((lossy, bytes)) => {
                let found = Escaped::count(text);
                *text = lossy;
                out.insert(
                    path.to_owned(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
                );
                found
            }
            None => 0,
        },
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .map(|(i, item)| restore_value(escaped, &format!("{path}.{i}"), item, out))
            .sum(),
        Value::Object(members) => members
            .iter_mut()
            .map(|(name, item)| restore_value(escaped, &format!("{path}.{name}"), item, out))
            .sum(),
        _ => 0,
    }
}

/// Whether a body starts like XML or JSON (after whitespace and a byte order mark); a UTF-16
/// byte order mark counts too, since such a body is text, not a form.
fn starts_structured(body: &[u8]) -> bool {
    if body.starts_with(&[0xFF, 0xFE]) || body.starts_with(&[0xFE, 0xFF]) {
        return true;
    }
    let body = body.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(body);
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'<' | b'{' | b'[')
    )
}

/// A form-encoded body.
fn form_request(
    route: Route,
    body: &bytes::Bytes,
    content_type: Option<&str>,
) -> Result<Parsed, Rejection> {
    let (mut fields, undecodable) = form_fields(body, content_type, false);
    let name = find_key(&fields, "METHOD")
        .and_then(|k| fields.remove(&k))
        .and_then(|v| v.as_str().map(str::to_owned));
    let mut parsed = resolve(route, Encoding::Form, name, fields, body.clone())?;
    parsed.undecodable = undecodable;
    Ok(parsed)
}

fn missing_data(route_shape: ErrorShape, name: &str) -> Rejection {
    let method = Method::from_name(name);
    Rejection {
        encoding: Encoding::Json,
        shape: method.map(shape_for).unwrap_or(route_shape),
        method,
        raw_method: Some(name.to_owned()),
        reason: "missing DATA object".into(),
    }
}

fn shape_for(method: Method) -> ErrorShape {
    match method {
        Method::Cdr => ErrorShape::Cdr,
        Method::Popup => ErrorShape::Popup,
        _ => ErrorShape::Status,
    }
}

fn reject(encoding: Encoding, shape: ErrorShape, reason: String) -> Rejection {
    Rejection {
        encoding,
        shape,
        method: None,
        raw_method: None,
        reason,
    }
}

/// Picks the method: the pop-up path always means the pop-up; otherwise an explicit method
/// name wins; otherwise the `cdr` path means a CDR; on the main path a `phone` field means the
/// pop-up and CDR fields mean a CDR.
fn resolve(
    route: Route,
    encoding: Encoding,
    name: Option<String>,
    fields: Map<String, Value>,
    raw: bytes::Bytes,
) -> Result<Parsed, Rejection> {
    let method = if route == Route::Popup {
        Method::Popup
    } else if let Some(name) = &name {
        match Method::from_name(name) {
            Some(method) => method,
            None => {
                let shape = if route == Route::Cdr {
                    ErrorShape::Cdr
                } else {
                    ErrorShape::Status
                };
                let mut rejection = reject(encoding, shape, "unknown method".into());
                rejection.raw_method = Some(name.clone());
                return Err(rejection);
            }
        }
    } else if route == Route::Cdr {
        Method::Cdr
    } else if find_key(&fields, "phone").is_some() {
        Method::Popup
    } else if [
        "ivruniqueid",
        "caller",
        "callerextension",
        "dialtime",
        "ivrid",
    ]
    .iter()
    .any(|k| find_key(&fields, k).is_some())
    {
        Method::Cdr
    } else {
        return Err(reject(
            encoding,
            ErrorShape::Status,
            "no method and no cdr fields".into(),
        ));
    };
    Ok(Parsed {
        encoding,
        method,
        fields,
        raw,
        undecodable: Map::new(),
    })
}

/// The fields of a form body or query string, read in the charset the Content-Type declares
/// (UTF-8 when it names none), and the base64 of the values that charset cannot read.
fn form_fields(
    body: &[u8],
    content_type: Option<&str>,
    from_query: bool,
) -> (Map<String, Value>, Map<String, Value>) {
    let declared = charset::declared(content_type);
    if let Declared::Unknown(label) = declared {
        let label: String = label.chars().filter(|c| !c.is_control()).take(40).collect();
        tracing::warn!(
            charset = %label,
            "voicenter form or query with an unknown charset: only ASCII values are read"
        );
    }
    let mut fields = Map::new();
    let mut undecodable = Map::new();
    for pair in form::parse_in(body, declared) {
        let key = pair.name.trim().to_owned();
        if key.is_empty() {
            continue;
        }
        if from_query && SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s)) {
            continue;
        }
        match pair.undecodable {
            Some(bytes) => undecodable.insert(
                key.clone(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
            // a later value that reads well replaces an earlier one that did not
            None => undecodable.remove(&key),
        };
        fields.insert(key, Value::String(pair.value));
    }
    (fields, undecodable)
}

/// The key as sent that matches `name` exactly, else case-insensitively.
pub(crate) fn find_key(fields: &Map<String, Value>, name: &str) -> Option<String> {
    if fields.contains_key(name) {
        return Some(name.to_owned());
    }
    fields.keys().find(|k| same_name(k, name)).cloned()
}

/// The value under `name` (exact, else trimmed and case-insensitive).
///
/// One pass over the fields rather than a hashed lookup and then a pass: most names asked
/// for are missing from a request, so the pass is made anyway, and for the few dozen fields
/// of a request the hash cost more than the comparisons it saved.
pub(crate) fn get<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    get_entry(fields, name).map(|(_, value)| value)
}

/// [`get`] with the key as sent.
pub(crate) fn get_entry<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
) -> Option<(&'a String, &'a Value)> {
    let mut loose = None;
    for entry in fields {
        if entry.0 == name {
            return Some(entry);
        }
        if loose.is_none() && same_name(entry.0, name) {
            loose = Some(entry);
        }
    }
    loose
}

/// Whether `key`, trimmed, is `name` whatever its ASCII case; trims only a key that needs it.
pub(crate) fn same_name(key: &str, name: &str) -> bool {
    let bytes = key.as_bytes();
    // trimming only shortens a key
    if bytes.len() < name.len() {
        return false;
    }
    let plain = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    if plain(bytes.first()) && plain(bytes.last()) {
        key.eq_ignore_ascii_case(name)
    } else {
        key.trim().eq_ignore_ascii_case(name)
    }
}
