//! XML-RPC: a tolerant reader for calls and responses and a strict writer.
//!
//! Tolerances of the reader, each seen in the Voicenter seed or in real senders:
//! - element names are matched case-insensitively and without namespace prefix
//!   (`<methodresponse>`, `<ex:nil/>`);
//! - whitespace between elements is ignored, as is whitespace before the XML declaration;
//! - `<int>`, `<i4>` and `<i8>` all read as `i64` (`<int>15616841651</int>` is kept as given);
//!   an integer beyond 64 bits is kept as its digits ([`Value::BigInt`]) and a `<double>` as
//!   its text (`0.10`, `1e400`, `NaN`), so no value a sender can write is rounded or refused
//!   for its size; numbers, booleans, dates and base64 are trimmed, strings never are;
//! - an untyped `<value> SIP/...</value>` is a string, kept exactly (leading space included);
//!   `<value/>`, `<string/>` and `<string />` are empty strings;
//! - a closing tag broken after `</` (`</\nstring>`, from the seed's PDF extraction) is
//!   accepted: closing tags are compared by trimmed name;
//! - the root element may be closed by the other root name: the seed's HANGUP_CALL response
//!   opens `<methodResponse>` and closes it with `</methodCall>`;
//! - `<array>` without its `<data>` wrapper is accepted.
//!
//! The writer emits what Python's `xmlrpc.client` and every other XML-RPC library accept:
//! an XML declaration, canonical element names, `<int>` for values that fit in 32 bits and
//! `<i8>` beyond, `<boolean>0|1</boolean>`, escaped strings in `<string>` and `<nil/>`.

use base64::Engine as _;

use std::borrow::Cow;

use crate::reply::Reply;
use crate::xml::{is_blank, Name, Token, Tokenizer};
use crate::{Limits, WireError};

/// One XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<int>`, `<i4>` or `<i8>` that fits in 64 bits.
    Int(i64),
    /// `<int>`, `<i4>` or `<i8>` beyond 64 bits: its digits as sent (trimmed, optional sign).
    BigInt(String),
    /// `<boolean>`.
    Bool(bool),
    /// `<string>` or an untyped `<value>`, text kept exactly.
    Str(String),
    /// `<double>`, kept as the (trimmed) text sent: `0.10`, `.5`, `1e400`, `NaN`, `-Infinity`
    /// (whatever Rust's `f64` parser reads, so also values a float cannot hold).
    /// [`Value::double`] makes one from an `f64`.
    Double(String),
    /// `<dateTime.iso8601>`, kept as the (trimmed) text sent: formats vary between senders.
    DateTime(String),
    /// `<base64>`, decoded.
    Base64(Vec<u8>),
    /// `<struct>`: members in document order, duplicates kept.
    Struct(Vec<(String, Value)>),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<nil/>` or `<ex:nil/>`.
    Nil,
}

/// A decoded `<methodCall>`.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodCall {
    /// The `<methodName>`, trimmed.
    pub method: String,
    /// The parameters in order.
    pub params: Vec<Value>,
}

/// An XML-RPC fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// `faultCode`.
    pub code: i64,
    /// `faultString`.
    pub message: String,
}

/// Parses a `<methodCall>`. Tolerant reader: element names case-insensitive (`methodcall`,
/// `methodresponse`), whitespace between elements ignored, `<int>`/`<i4>`/`<i8>` as i64 (a value
/// with surrounding whitespace is trimmed for numbers, never for strings), untyped `<value>`
/// text is a string, `<nil/>` and `<ex:nil/>` are Nil, `<boolean>` 0/1/true/false.
/// Refuses: any `<!DOCTYPE>` or `<!ENTITY>` ([`WireError::DoctypeRefused`]), nesting deeper than
/// `limits.max_depth`, input longer than `limits.max_bytes`. Predefined entities and numeric character
/// references (`&#1488;` Hebrew) are decoded.
///
/// The values are built while the document is read (no tree of the document is held), so a
/// large call costs its text once more, not several times. A document that is not well
/// formed is refused as such ([`WireError::MalformedXml`], [`WireError::TooDeep`]) even when
/// it also breaks the XML-RPC grammar earlier on.
pub fn parse_call(xml: &str, limits: &Limits) -> Result<MethodCall, WireError> {
    read_document(xml, limits, |r| {
        let root = r.root()?;
        if !root.is("methodcall") {
            return Err(not_rpc(format!(
                "root element is <{root}>, expected <methodCall>"
            )));
        }
        let mut method = None;
        let mut params = Vec::new();
        let mut buf = [0; 16];
        while let Some(child) = r.child("methodCall")? {
            match child.lowered(&mut buf) {
                b"methodname" if method.is_none() => {
                    method = Some(r.scalar_text("methodname")?.trim().to_string());
                }
                // a second <params> replaces the first, as the tree reader did
                b"params" => params = r.params()?,
                _ => return Err(unexpected(child, "methodCall")),
            }
        }
        let method = method
            .filter(|m| !m.is_empty())
            .ok_or_else(|| not_rpc("missing <methodName>".to_string()))?;
        Ok(MethodCall { method, params })
    })
}

/// Parses a `<methodResponse>` (for tests and for clients): `Ok(Ok(params))` or
/// `Ok(Err(fault))`. Tolerates the seed's response closed with `</methodCall>`.
///
/// The closing-tag tolerance lives in the tokenizer: the root element may be closed by
/// either XML-RPC root name, as in the seed's HANGUP_CALL response example.
pub fn parse_response(xml: &str, limits: &Limits) -> Result<Result<Vec<Value>, Fault>, WireError> {
    read_document(xml, limits, |r| {
        let root = r.root()?;
        if !root.is("methodresponse") {
            return Err(not_rpc(format!(
                "root element is <{root}>, expected <methodResponse>"
            )));
        }
        let exactly_one =
            || not_rpc("<methodResponse> must hold exactly one of <params> or <fault>".to_string());
        let Some(body) = r.child("methodResponse")? else {
            return Err(exactly_one());
        };
        let mut buf = [0; 16];
        let answer = match body.lowered(&mut buf) {
            b"params" => Ok(r.params()?),
            b"fault" => {
                let one_value = || not_rpc("<fault> must hold one <value>".to_string());
                let value = match r.child("fault")? {
                    Some(name) if name.is("value") => r.value()?,
                    Some(name) => return Err(unexpected(name, "fault")),
                    None => return Err(one_value()),
                };
                if r.child("fault")?.is_some() {
                    return Err(one_value());
                }
                Err(fault_from(&value)?)
            }
            _ => return Err(unexpected(body, "methodResponse")),
        };
        if r.child("methodResponse")?.is_some() {
            return Err(exactly_one());
        }
        Ok(answer)
    })
}
/// Strictly valid output: `<?xml version="1.0" encoding="UTF-8"?>` then
/// `<methodResponse><params><param><value>..</value></param></params></methodResponse>`.
/// Ints that fit in i32 are written as `<int>`, larger ones as `<i8>`. Strings escaped
/// (&, <, >; keep non-ASCII as UTF-8). Struct member order preserved.
///
/// Characters XML 1.0 cannot carry at all (most C0 controls) are written as U+FFFD; a
/// carriage return is written as `&#13;` so that it survives end-of-line normalisation.
/// Doubles and big integers are written as their text (`NaN`, `inf` and `-Infinity` as well:
/// Python reads them); one whose text is not a number is written as a `<string>`.
pub fn write_response(value: &Value) -> String {
    let mut out = String::from(DECLARATION);
    out.push_str("<methodResponse><params><param>");
    write_value(&mut out, value);
    out.push_str("</param></params></methodResponse>");
    out
}

/// [`write_response`] of [`Value::from_json`]`(value)`, written straight from the JSON: the
/// same bytes without a copy of the tree. For answers built as JSON (the Voicenter adapter's).
pub fn write_json_response(value: &serde_json::Value) -> String {
    // room for a small answer's markup, so most are written without growing
    let mut out = String::with_capacity(RESPONSE_CAPACITY);
    out.push_str(DECLARATION);
    out.push_str("<methodResponse><params><param>");
    write_json_value(&mut out, value);
    out.push_str("</param></params></methodResponse>");
    out
}

/// [`write_response`] of the value a [`Reply`] stands for, written from the reply.
pub fn write_reply(reply: &Reply<'_>) -> String {
    let mut out = String::with_capacity(RESPONSE_CAPACITY);
    out.push_str(DECLARATION);
    out.push_str("<methodResponse><params><param>");
    write_reply_value(&mut out, reply);
    out.push_str("</param></params></methodResponse>");
    out
}

/// `<methodResponse><fault>` with `faultCode`/`faultString`.
pub fn write_fault(fault: &Fault) -> String {
    let mut out = String::from(DECLARATION);
    out.push_str("<methodResponse><fault>");
    write_value(
        &mut out,
        &Value::Struct(vec![
            ("faultCode".to_string(), Value::Int(fault.code)),
            ("faultString".to_string(), Value::Str(fault.message.clone())),
        ]),
    );
    out.push_str("</fault></methodResponse>");
    out
}

/// Writes a `<methodCall>` (used by tests and benchmarks to play the legacy side).
pub fn write_call(call: &MethodCall) -> String {
    let mut out = String::from(DECLARATION);
    out.push_str("<methodCall><methodName>");
    escape_into(&mut out, &call.method);
    out.push_str("</methodName><params>");
    for param in &call.params {
        out.push_str("<param>");
        write_value(&mut out, param);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

impl Value {
    /// A `<double>` holding `d` (Rust's shortest text for it: `0.1`, `NaN`, `inf`).
    pub fn double(d: f64) -> Value {
        Value::Double(d.to_string())
    }

    /// To JSON: Int/BigInt/Double -> number with the same digits, Str/DateTime -> string,
    /// Base64 -> base64 string, Bool -> bool, Nil -> null, Struct -> object (duplicate names:
    /// last wins, first position kept), Array -> array.
    ///
    /// Base64 uses the standard alphabet with padding. A double JSON has no number for
    /// (`NaN`, `Infinity`, `-inf`) becomes a string with the text as sent, never null; one
    /// written outside JSON's number grammar (`.5`, `+1`) gets the JSON form of the same
    /// digits (see [`crate::json::number`]).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Int(i) => J::from(*i),
            Value::BigInt(text) | Value::Double(text) => {
                crate::json::number(text).map_or_else(|| J::String(text.clone()), J::Number)
            }
            Value::Bool(b) => J::Bool(*b),
            Value::Str(s) | Value::DateTime(s) => J::String(s.clone()),
            Value::Base64(bytes) => {
                J::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            Value::Struct(members) => {
                let mut map = serde_json::Map::new();
                for (name, value) in members {
                    // with preserve_order, insert keeps the position of an existing key
                    map.insert(name.clone(), value.to_json());
                }
                J::Object(map)
            }
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Nil => J::Null,
        }
    }

    /// [`Value::to_json`] that moves strings, members and items instead of copying them, so
    /// a large call is not held twice while it is converted. Scalars convert as in `to_json`.
    pub fn into_json(self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Str(s) => J::String(s),
            Value::Struct(members) => {
                let mut map = serde_json::Map::with_capacity(members.len());
                for (name, value) in members {
                    // with preserve_order, insert keeps the position of an existing key
                    map.insert(name, value.into_json());
                }
                J::Object(map)
            }
            Value::Array(items) => J::Array(items.into_iter().map(Value::into_json).collect()),
            other => other.to_json(),
        }
    }

    /// From JSON: integers -> Int (BigInt beyond the i64 range), other numbers -> Double, all
    /// with the number's own text; strings -> Str, bool -> Bool, null -> Nil, objects ->
    /// Struct (order kept), arrays -> Array.
    pub fn from_json(value: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match value {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => {
                    let text = n.to_string();
                    if is_integer(&text) {
                        Value::BigInt(text)
                    } else {
                        Value::Double(text)
                    }
                }
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Array(items.iter().map(Value::from_json).collect()),
            J::Object(map) => Value::Struct(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Struct member lookup by exact name, then by trimmed case-insensitive name.
    ///
    /// With duplicate names the last one wins, as in [`Value::to_json`]. `None` for anything
    /// but a struct.
    pub fn member(&self, name: &str) -> Option<&Value> {
        let Value::Struct(members) = self else {
            return None;
        };
        members
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .or_else(|| {
                let wanted = name.trim();
                members
                    .iter()
                    .rev()
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case(wanted))
            })
            .map(|(_, v)| v)
    }
}

const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

/// What [`write_json_response`] and [`write_reply`] reserve at first: room for a reply of a
/// dozen members.
const RESPONSE_CAPACITY: usize = 1024;

/// An optional sign and at least one ASCII digit, nothing else.
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn not_rpc(message: String) -> WireError {
    WireError::NotXmlRpc(message)
}

fn unexpected(name: impl std::fmt::Display, parent: &str) -> WireError {
    not_rpc(format!("unexpected <{name}> in <{parent}>"))
}

fn fault_from(value: &Value) -> Result<Fault, WireError> {
    let code = match value.member("faultCode") {
        Some(Value::Int(code)) => *code,
        Some(Value::Str(code)) => code
            .trim()
            .parse()
            .map_err(|_| not_rpc(format!("faultCode {code:?} is not an integer")))?,
        _ => return Err(not_rpc("fault without an integer faultCode".to_string())),
    };
    let message = match value.member("faultString") {
        Some(Value::Str(message)) => message.clone(),
        Some(Value::Nil) | None => String::new(),
        Some(_) => return Err(not_rpc("faultString is not a string".to_string())),
    };
    Ok(Fault { code, message })
}

/// Runs `read` over the document's tokens, then makes sure the whole document is well
/// formed: an error of the document itself wins over an XML-RPC error found before it, so
/// the answer is the one a reader of the whole tree first would give.
fn read_document<'a, T>(
    xml: &'a str,
    limits: &Limits,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, WireError>,
) -> Result<T, WireError> {
    let mut reader = Reader {
        tokens: Tokenizer::new(xml, limits)?,
    };
    match read(&mut reader) {
        Ok(value) => {
            reader.tokens.drain()?;
            Ok(value)
        }
        Err(e @ WireError::NotXmlRpc(_)) => {
            reader.tokens.drain()?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The XML-RPC grammar over a [`Tokenizer`]. Each method is called just after the start
/// tag of the element it reads and returns after its end tag. Recursion follows the
/// document's nesting, which the tokenizer bounds.
struct Reader<'a> {
    tokens: Tokenizer<'a>,
}

impl<'a> Reader<'a> {
    /// The root element's name (text outside it never reaches here).
    fn root(&mut self) -> Result<Name<'a>, WireError> {
        match self.tokens.next()? {
            Token::Start(name) => Ok(name),
            _ => Err(WireError::MalformedXml("no root element".to_string())),
        }
    }

    /// The next child element of an element that holds only elements (and whitespace):
    /// its name, or `None` at the parent's end tag.
    fn child(&mut self, parent: &str) -> Result<Option<Name<'a>>, WireError> {
        loop {
            match self.tokens.next_skipping_blanks()? {
                Token::Start(name) => return Ok(Some(name)),
                Token::End => return Ok(None),
                Token::Text(text) if is_blank(&text) => {}
                Token::Text(text) => {
                    return Err(not_rpc(format!(
                        "unexpected text {:?} in <{}>",
                        text.trim(),
                        parent.to_ascii_lowercase()
                    )))
                }
                Token::Eof => return Err(end_of_input()),
            }
        }
    }

    /// The text of an element that holds no elements, exactly (empty when there is none).
    fn scalar_text(&mut self, name: &str) -> Result<Cow<'a, str>, WireError> {
        let mut text = Cow::Borrowed("");
        loop {
            match self.tokens.next()? {
                Token::Text(run) => text = run,
                Token::End => return Ok(text),
                Token::Start(child) => return Err(unexpected(child, name)),
                Token::Eof => return Err(end_of_input()),
            }
        }
    }

    fn params(&mut self) -> Result<Vec<Value>, WireError> {
        let mut out = Vec::new();
        while let Some(param) = self.child("params")? {
            if !param.is("param") {
                return Err(unexpected(param, "params"));
            }
            let exactly_one = || not_rpc("<param> must hold exactly one <value>".to_string());
            match self.child("param")? {
                Some(name) if name.is("value") => out.push(self.value()?),
                Some(name) => return Err(unexpected(name, "param")),
                None => return Err(exactly_one()),
            }
            if self.child("param")?.is_some() {
                return Err(exactly_one());
            }
        }
        Ok(out)
    }

    /// A `<value>`: typed, or untyped text kept exactly.
    fn value(&mut self) -> Result<Value, WireError> {
        let mut text = None;
        loop {
            match self.tokens.next_before_start()? {
                Token::Text(run) => text = Some(run),
                Token::End => return Ok(Value::Str(text.map(Cow::into_owned).unwrap_or_default())),
                Token::Start(inner) => {
                    if let Some(text) = text.as_deref().filter(|t| !is_blank(t)) {
                        return Err(not_rpc(format!(
                            "unexpected text {:?} in <value>",
                            text.trim()
                        )));
                    }
                    let value = self.typed(&inner)?;
                    return match self.child("value")? {
                        Some(extra) => Err(unexpected(extra, "value")),
                        None => Ok(value),
                    };
                }
                Token::Eof => return Err(end_of_input()),
            }
        }
    }

    /// The typed element `name` inside a `<value>`.
    fn typed(&mut self, name: &Name<'a>) -> Result<Value, WireError> {
        let mut buf = [0; 16];
        match name.lowered(&mut buf) {
            b"string" => Ok(Value::Str(self.scalar_text("string")?.into_owned())),
            b"int" => self.scalar("int"),
            b"i4" => self.scalar("i4"),
            b"i8" => self.scalar("i8"),
            b"boolean" => self.scalar("boolean"),
            b"double" => self.scalar("double"),
            b"datetime.iso8601" => self.scalar("datetime.iso8601"),
            b"base64" => self.scalar("base64"),
            b"nil" => match self.child("nil")? {
                Some(child) => Err(unexpected(child, "nil")),
                None => Ok(Value::Nil),
            },
            b"struct" => {
                let mut members = Vec::new();
                while let Some(member) = self.child("struct")? {
                    if !member.is("member") {
                        return Err(unexpected(member, "struct"));
                    }
                    members.push(self.member()?);
                }
                Ok(Value::Struct(members))
            }
            b"array" => {
                let mut items = Vec::new();
                match self.child("array")? {
                    None => {}
                    Some(data) if data.is("data") => {
                        self.items("data", &mut items)?;
                        if let Some(extra) = self.child("array")? {
                            return Err(unexpected(extra, "array"));
                        }
                    }
                    // tolerated: values directly inside <array>
                    Some(first) if first.is("value") => {
                        items.push(self.value()?);
                        self.items("array", &mut items)?;
                    }
                    Some(other) => return Err(unexpected(other, "array")),
                }
                Ok(Value::Array(items))
            }
            _ => Err(unexpected(name, "value")),
        }
    }

    /// The scalar element `name` (lowercase) inside a `<value>`.
    fn scalar(&mut self, name: &str) -> Result<Value, WireError> {
        let text = self.scalar_text(name)?;
        scalar(name, &text)
    }

    /// The `<value>`s of an array up to `holder`'s end tag.
    fn items(&mut self, holder: &str, items: &mut Vec<Value>) -> Result<(), WireError> {
        while let Some(item) = self.child(holder)? {
            if !item.is("value") {
                return Err(unexpected(item, holder));
            }
            items.push(self.value()?);
        }
        Ok(())
    }

    fn member(&mut self) -> Result<(String, Value), WireError> {
        let mut name = None;
        let mut value = None;
        let mut buf = [0; 16];
        while let Some(child) = self.child("member")? {
            match child.lowered(&mut buf) {
                b"name" if name.is_none() => {
                    name = Some(self.scalar_text("name")?.into_owned());
                }
                b"value" if value.is_none() => value = Some(self.value()?),
                _ => return Err(unexpected(child, "member")),
            }
        }
        match (name, value) {
            (Some(name), Some(value)) => Ok((name, value)),
            (None, _) => Err(not_rpc("<member> without <name>".to_string())),
            (Some(name), None) => Err(not_rpc(format!("<member> {name:?} without <value>"))),
        }
    }
}

/// The tokenizer ends a document only once every element is closed, so this is never seen.
fn end_of_input() -> WireError {
    WireError::MalformedXml("unexpected end of input".to_string())
}

/// A scalar from its element's text: numbers, booleans and dates trimmed, base64 decoded.
fn scalar(name: &str, text: &str) -> Result<Value, WireError> {
    match name {
        "int" | "i4" | "i8" => {
            let text = text.trim();
            match text.parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) if is_integer(text) => Ok(Value::BigInt(text.to_string())),
                Err(_) => Err(not_rpc(format!("<{name}> {text:?} is not an integer"))),
            }
        }
        "boolean" => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => Ok(Value::Bool(true)),
            "0" | "false" => Ok(Value::Bool(false)),
            other => Err(not_rpc(format!("<boolean> {other:?} is not 0 or 1"))),
        },
        "double" => {
            let text = text.trim();
            match text.parse::<f64>() {
                Ok(_) => Ok(Value::Double(text.to_string())),
                Err(_) => Err(not_rpc(format!("<double> {text:?} is not a number"))),
            }
        }
        "datetime.iso8601" => Ok(Value::DateTime(text.trim().to_string())),
        "base64" => {
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map(Value::Base64)
                .map_err(|e| not_rpc(format!("bad <base64>: {e}")))
        }
        other => Err(unexpected(other, "value")),
    }
}
fn write_value(out: &mut String, value: &Value) {
    out.push_str("<value>");
    match value {
        Value::Int(i) => write_int(out, *i),
        Value::Bool(b) => out.push_str(if *b {
            "<boolean>1</boolean>"
        } else {
            "<boolean>0</boolean>"
        }),
        Value::Str(s) => {
            out.push_str("<string>");
            escape_into(out, s);
            out.push_str("</string>");
        }
        // A number's text never needs escaping. Text that is not a number (a value built by
        // hand, never one the reader made) goes out as a string rather than as a bad number.
        Value::BigInt(text) if is_integer(text) => {
            out.push_str("<int>");
            out.push_str(text);
            out.push_str("</int>");
        }
        Value::Double(text) if text.trim().parse::<f64>().is_ok() => {
            out.push_str("<double>");
            out.push_str(text.trim());
            out.push_str("</double>");
        }
        Value::BigInt(text) | Value::Double(text) => {
            out.push_str("<string>");
            escape_into(out, text);
            out.push_str("</string>");
        }
        Value::DateTime(s) => {
            out.push_str("<dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(bytes) => {
            out.push_str("<base64>");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push_str("</base64>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (name, value) in members {
                out.push_str("<member><name>");
                escape_into(out, name);
                out.push_str("</name>");
                write_value(out, value);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for item in items {
                write_value(out, item);
            }
            out.push_str("</data></array>");
        }
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

/// `<int>` for a value that fits in 32 bits, `<i8>` beyond.
fn write_int(out: &mut String, i: i64) {
    use std::fmt::Write as _;
    // writing to a String cannot fail
    let _ = if i32::try_from(i).is_ok() {
        write!(out, "<int>{i}</int>")
    } else {
        write!(out, "<i8>{i}</i8>")
    };
}

/// [`write_value`] of the value `reply` stands for, without building it.
fn write_reply_value(out: &mut String, reply: &Reply<'_>) {
    out.push_str("<value>");
    match reply {
        Reply::Int(i) => write_int(out, *i),
        Reply::Str(text) => {
            out.push_str("<string>");
            escape_into(out, text);
            out.push_str("</string>");
        }
        Reply::Strs(texts) => {
            out.push_str("<array><data>");
            for text in texts.iter() {
                out.push_str("<value><string>");
                escape_into(out, text);
                out.push_str("</string></value>");
            }
            out.push_str("</data></array>");
        }
        Reply::Fields(fields) => {
            out.push_str("<struct>");
            for (name, value) in fields {
                out.push_str("<member><name>");
                escape_into(out, name);
                out.push_str("</name>");
                write_reply_value(out, value);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

/// [`write_value`] of [`Value::from_json`]`(value)`, without building it.
fn write_json_value(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value as J;
    match value {
        J::Number(n) => match n.as_i64() {
            Some(i) => {
                out.push_str("<value>");
                write_int(out, i);
                out.push_str("</value>");
            }
            // beyond i64 or not an integer: as from_json reads it (a rare case, so the copy of the text is no matter)
            None => write_value(out, &Value::from_json(value)),
        },
        J::String(s) => {
            out.push_str("<value><string>");
            escape_into(out, s);
            out.push_str("</string></value>");
        }
        J::Object(map) => {
            out.push_str("<value><struct>");
            for (name, value) in map {
                out.push_str("<member><name>");
                escape_into(out, name);
                out.push_str("</name>");
                write_json_value(out, value);
                out.push_str("</member>");
            }
            out.push_str("</struct></value>");
        }
        J::Array(items) => {
            out.push_str("<value><array><data>");
            for item in items {
                write_json_value(out, item);
            }
            out.push_str("</data></array></value>");
        }
        J::Null | J::Bool(_) => write_value(out, &Value::from_json(value)),
    }
}

/// Escapes text for element content; characters XML 1.0 forbids become U+FFFD.
fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    // runs of characters kept as they are go out whole; a byte that may need work (markup,
    // a control character, the lead byte of U+FFFE and U+FFFF) is looked at as a character
    while let Some(at) = rest
        .bytes()
        .position(|b| b < 0x20 || matches!(b, b'&' | b'<' | b'>' | 0xEF))
    {
        out.push_str(&rest[..at]);
        let Some(c) = rest[at..].chars().next() else {
            break;
        };
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn one(xml: &str) -> Result<Value, WireError> {
        let call = parse_call(
            &format!("<methodCall><methodName>m</methodName><params><param>{xml}</param></params></methodCall>"),
            &limits(),
        )?;
        call.params
            .into_iter()
            .next()
            .ok_or_else(|| WireError::NotXmlRpc("no param".to_string()))
    }

    #[test]
    fn scalar_types() {
        assert_eq!(one("<value><int> 42 </int></value>"), Ok(Value::Int(42)));
        assert_eq!(one("<value><i4>-7</i4></value>"), Ok(Value::Int(-7)));
        assert_eq!(
            one("<value><i8>-9223372036854775808</i8></value>"),
            Ok(Value::Int(i64::MIN))
        );
        assert_eq!(
            one("<value><boolean>1</boolean></value>"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            one("<value><boolean> false </boolean></value>"),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            one("<value><double>-1.5</double></value>"),
            Ok(Value::double(-1.5))
        );
        assert_eq!(
            one("<value><int> 99999999999999999999999 </int></value>"),
            Ok(Value::BigInt("99999999999999999999999".to_string()))
        );
        assert_eq!(
            one("<value><i8>-9223372036854775809</i8></value>"),
            Ok(Value::BigInt("-9223372036854775809".to_string()))
        );
        for text in [
            "NaN",
            "nan",
            "-Infinity",
            "inf",
            "1e400",
            "0.10",
            ".5",
            "+1",
        ] {
            assert_eq!(
                one(&format!("<value><double> {text} </double></value>")),
                Ok(Value::Double(text.to_string())),
                "{text}"
            );
        }
        assert_eq!(
            one("<value><dateTime.iso8601>20240101T10:00:00</dateTime.iso8601></value>"),
            Ok(Value::DateTime("20240101T10:00:00".to_string()))
        );
        assert_eq!(
            one("<value><base64>aGVs\n bG8=</base64></value>"),
            Ok(Value::Base64(b"hello".to_vec()))
        );
        assert_eq!(one("<value><nil/></value>"), Ok(Value::Nil));
        assert_eq!(
            one("<value><ex:nil xmlns:ex=\"http://ws.apache.org/xmlrpc/namespaces/extensions\"/></value>"),
            Ok(Value::Nil)
        );
        assert_eq!(one("<value/>"), Ok(Value::Str(String::new())));
        assert_eq!(one("<value></value>"), Ok(Value::Str(String::new())));
        assert_eq!(one("<value>  </value>"), Ok(Value::Str("  ".to_string())));
        assert_eq!(
            one("<value><string>  a  </string></value>"),
            Ok(Value::Str("  a  ".to_string()))
        );
        assert_eq!(
            one("<VALUE><STRING>x</STRING></VALUE>"),
            Ok(Value::Str("x".to_string()))
        );
    }

    #[test]
    fn bad_scalars_are_errors() {
        for bad in [
            "<value><int>12a</int></value>",
            "<value><int>9 9</int></value>",
            "<value><int>1e3</int></value>",
            "<value><int>-</int></value>",
            "<value><int></int></value>",
            "<value><boolean>2</boolean></value>",
            "<value><double>x</double></value>",
            "<value><base64>!!</base64></value>",
            "<value><float>1</float></value>",
            "<value><string>a</string><string>b</string></value>",
            "<value>text<string>b</string></value>",
            "<value><struct><member><name>a</name></member></struct></value>",
            "<value><struct><member><value>1</value></member></struct></value>",
            "<value><struct><oops/></struct></value>",
        ] {
            assert!(matches!(one(bad), Err(WireError::NotXmlRpc(_))), "{bad}");
        }
    }

    #[test]
    fn entities_and_hebrew_character_references() {
        assert_eq!(
            one("<value><string>&#1488;&#x5D1; &lt;a&gt; &amp; &quot;&apos;</string></value>"),
            Ok(Value::Str("אב <a> & \"'".to_string()))
        );
        assert_eq!(
            one("<value><string><![CDATA[<raw> & ]]>x</string></value>"),
            Ok(Value::Str("<raw> & x".to_string()))
        );
        assert!(matches!(
            one("<value><string>&custom;</string></value>"),
            Err(WireError::MalformedXml(_))
        ));
        assert!(matches!(
            one("<value><string>&#0;</string></value>"),
            Err(WireError::MalformedXml(_))
        ));
    }

    #[test]
    fn doctype_and_entities_are_refused() {
        let laughs = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n \
                      <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n]>\n\
                      <methodCall><methodName>&lol2;</methodName></methodCall>";
        assert_eq!(
            parse_call(laughs, &limits()),
            Err(WireError::DoctypeRefused)
        );
        let external = "<!doctype methodCall SYSTEM \"file:///etc/passwd\"><methodCall/>";
        assert_eq!(
            parse_call(external, &limits()),
            Err(WireError::DoctypeRefused)
        );
        let stray = "<methodCall><!ENTITY x \"y\"><methodName>m</methodName></methodCall>";
        assert_eq!(parse_call(stray, &limits()), Err(WireError::DoctypeRefused));
        assert_eq!(
            parse_response("<!DOCTYPE x><methodResponse/>", &limits()),
            Err(WireError::DoctypeRefused)
        );
    }

    #[test]
    fn depth_and_size_limits() {
        let depth = 1000;
        let deep = format!(
            "<methodCall><methodName>m</methodName><params><param>{}1{}</param></params></methodCall>",
            "<value><array><data>".repeat(depth),
            "</data></array></value>".repeat(depth)
        );
        assert_eq!(
            parse_call(&deep, &limits()),
            Err(WireError::TooDeep { limit: 32 })
        );
        // an unclosed tower of empty elements is refused the same way
        let tower = "<a>".repeat(100_000);
        assert_eq!(
            parse_call(&tower, &limits()),
            Err(WireError::TooDeep { limit: 32 })
        );
        // a huge configured depth is capped, so the stack stays safe
        let generous = Limits {
            max_depth: usize::MAX,
            max_bytes: usize::MAX,
        };
        assert_eq!(
            parse_call(&tower, &generous),
            Err(WireError::TooDeep {
                limit: crate::HARD_MAX_DEPTH
            })
        );
        // within limits a nested array parses
        let nested = format!(
            "<methodCall><methodName>m</methodName><params><param>{}<value><i4>1</i4></value>{}</param></params></methodCall>",
            "<value><array><data>".repeat(8),
            "</data></array></value>".repeat(8)
        );
        assert!(parse_call(&nested, &limits()).is_ok());
        let small = Limits {
            max_depth: 32,
            max_bytes: 10,
        };
        assert_eq!(
            parse_call("<methodCall></methodCall>", &small),
            Err(WireError::TooLarge {
                size: 25,
                limit: 10
            })
        );
    }

    #[test]
    fn structure_errors() {
        let l = limits();
        assert!(matches!(
            parse_call("", &l),
            Err(WireError::MalformedXml(_))
        ));
        assert!(matches!(
            parse_call("not xml", &l),
            Err(WireError::MalformedXml(_))
        ));
        assert!(matches!(
            parse_call("<methodCall>", &l),
            Err(WireError::MalformedXml(_))
        ));
        assert!(matches!(
            parse_call(
                "<methodCall><methodName>m</methodName></methodCall><x/>",
                &l
            ),
            Err(WireError::MalformedXml(_))
        ));
        assert!(matches!(
            parse_call(
                "<methodCall><methodName>m</methodName></methodCall>junk",
                &l
            ),
            Err(WireError::MalformedXml(_))
        ));
        assert!(matches!(
            parse_call("<methodCall><methodName>m</methodName></methodcall2>", &l),
            Err(WireError::MalformedXml(_))
        ));
        // only the root may be closed by the other root name
        assert!(matches!(
            parse_call(
                "<methodCall><methodName>m</methodName><params><param><value><string>a</methodCall></value></param></params></methodCall>",
                &l
            ),
            Err(WireError::MalformedXml(_))
        ));
        assert!(matches!(
            parse_call("<methodResponse><params/></methodResponse>", &l),
            Err(WireError::NotXmlRpc(_))
        ));
        assert!(matches!(
            parse_call("<methodCall><params/></methodCall>", &l),
            Err(WireError::NotXmlRpc(_))
        ));
        assert!(matches!(
            parse_response("<methodCall><methodName>m</methodName></methodCall>", &l),
            Err(WireError::NotXmlRpc(_))
        ));
        assert!(matches!(
            parse_response("<methodResponse></methodResponse>", &l),
            Err(WireError::NotXmlRpc(_))
        ));
        assert!(matches!(
            parse_response(
                "<methodResponse><fault><value><struct/></value></fault></methodResponse>",
                &l
            ),
            Err(WireError::NotXmlRpc(_))
        ));
    }

    #[test]
    fn call_without_params_and_with_comments() {
        let c = parse_call(
            "<?xml version=\"1.0\"?><!-- hi --><methodCall><methodName> ping </methodName>\
             <?pi x?></methodCall>",
            &limits(),
        );
        assert_eq!(
            c,
            Ok(MethodCall {
                method: "ping".to_string(),
                params: vec![]
            })
        );
        assert_eq!(
            parse_response("<methodResponse><params/></methodResponse>", &limits()),
            Ok(Ok(vec![]))
        );
    }

    #[test]
    fn array_without_data_wrapper() {
        assert_eq!(
            one("<value><array><value><int>1</int></value><value>b</value></array></value>"),
            Ok(Value::Array(vec![
                Value::Int(1),
                Value::Str("b".to_string())
            ]))
        );
        assert_eq!(
            one("<value><array><data/></array></value>"),
            Ok(Value::Array(vec![]))
        );
    }

    fn sample() -> Value {
        Value::Struct(vec![
            ("small".to_string(), Value::Int(i64::from(i32::MAX))),
            ("negative".to_string(), Value::Int(i64::from(i32::MIN))),
            ("big".to_string(), Value::Int(15616841651)),
            ("bool".to_string(), Value::Bool(true)),
            (
                "text".to_string(),
                Value::Str(" <שלום> & \"x\"\r\n\t".to_string()),
            ),
            ("double".to_string(), Value::double(0.1)),
            ("whole".to_string(), Value::double(3.0)),
            (
                "huge".to_string(),
                Value::BigInt("-99999999999999999999".to_string()),
            ),
            ("nan".to_string(), Value::Double("NaN".to_string())),
            ("far".to_string(), Value::Double("1e400".to_string())),
            (
                "when".to_string(),
                Value::DateTime("20240101T10:00:00".to_string()),
            ),
            ("bytes".to_string(), Value::Base64(vec![0, 1, 2, 255])),
            ("nothing".to_string(), Value::Nil),
            ("empty".to_string(), Value::Str(String::new())),
            ("dup".to_string(), Value::Int(1)),
            ("dup".to_string(), Value::Int(2)),
            (
                "list".to_string(),
                Value::Array(vec![Value::Struct(vec![]), Value::Array(vec![])]),
            ),
        ])
    }

    #[test]
    fn write_response_round_trips() {
        let value = sample();
        let xml = write_response(&value);
        assert_eq!(parse_response(&xml, &limits()), Ok(Ok(vec![value.clone()])));
        let call = MethodCall {
            method: "GET_IVR_ACTION".to_string(),
            params: vec![value, Value::Int(1)],
        };
        assert_eq!(parse_call(&write_call(&call), &limits()), Ok(call));
    }

    #[test]
    fn written_shape_is_what_python_accepts() {
        let xml = write_response(&sample());
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><methodResponse><params><param><value><struct>"));
        assert!(xml.ends_with("</struct></value></param></params></methodResponse>"));
        assert!(
            xml.contains("<member><name>small</name><value><int>2147483647</int></value></member>")
        );
        assert!(xml.contains("<value><int>-2147483648</int></value>"));
        assert!(xml.contains("<value><i8>15616841651</i8></value>"));
        assert!(xml.contains("<value><boolean>1</boolean></value>"));
        assert!(xml.contains("<string> &lt;שלום&gt; &amp; \"x\"&#13;\n\t</string>"));
        assert!(xml.contains("<double>0.1</double>"));
        assert!(xml.contains("<double>3</double>"));
        assert!(xml.contains("<int>-99999999999999999999</int>"));
        assert!(xml.contains("<double>NaN</double>"));
        assert!(xml.contains("<double>1e400</double>"));
        // text that is not a number is never written as one
        let odd = write_response(&Value::Array(vec![
            Value::Double("x<".to_string()),
            Value::BigInt("1.5".to_string()),
        ]));
        assert!(odd.contains("<string>x&lt;</string><"), "{odd}");
        assert!(odd.contains("<string>1.5</string>"), "{odd}");
        assert!(xml.contains("<dateTime.iso8601>20240101T10:00:00</dateTime.iso8601>"));
        assert!(xml.contains("<base64>AAEC/w==</base64>"));
        assert!(xml.contains("<value><nil/></value>"));
        assert!(xml.contains("<array><data><value><struct></struct></value><value><array><data></data></array></value></data></array>"));
        // member order is preserved, duplicates included
        let small = xml.find("small").unwrap_or(usize::MAX);
        let list = xml.find("list").unwrap_or(0);
        assert!(small < list);
        assert_eq!(xml.matches("<name>dup</name>").count(), 2);
    }

    #[test]
    fn faults() {
        let fault = Fault {
            code: -32700,
            message: "parse error: <bad> & worse".to_string(),
        };
        let xml = write_fault(&fault);
        assert!(xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><methodResponse><fault><value><struct>"
        ));
        assert!(
            xml.contains("<member><name>faultCode</name><value><int>-32700</int></value></member>")
        );
        assert!(xml.contains("<member><name>faultString</name><value><string>parse error: &lt;bad&gt; &amp; worse</string></value></member>"));
        assert!(xml.ends_with("</struct></value></fault></methodResponse>"));
        assert_eq!(parse_response(&xml, &limits()), Ok(Err(fault)));
        // a faultCode sent as a string is tolerated
        let lax = "<methodResponse><fault><value><struct><member><name>faultCode</name>\
                   <value><string> 4 </string></value></member><member><name>faultString</name>\
                   <value>Too many parameters.</value></member></struct></value></fault></methodResponse>";
        assert_eq!(
            parse_response(lax, &limits()),
            Ok(Err(Fault {
                code: 4,
                message: "Too many parameters.".to_string()
            }))
        );
    }

    #[test]
    fn control_characters_are_replaced_in_output() {
        let xml = write_response(&Value::Str("a\u{0}b\u{1b}c".to_string()));
        assert!(xml.contains("<string>a\u{FFFD}b\u{FFFD}c</string>"));
        assert!(parse_response(&xml, &limits()).is_ok());
    }

    #[test]
    fn json_conversion() {
        use serde_json::json;
        let value = Value::Struct(vec![
            ("b".to_string(), Value::Int(1)),
            ("a".to_string(), Value::Str("x".to_string())),
            ("b".to_string(), Value::Int(2)),
            (
                "c".to_string(),
                Value::Array(vec![Value::Nil, Value::Bool(false), Value::double(1.5)]),
            ),
            ("d".to_string(), Value::Base64(b"hi".to_vec())),
            (
                "e".to_string(),
                Value::DateTime("20240101T00:00:00".to_string()),
            ),
            ("f".to_string(), Value::Double("NaN".to_string())),
            ("g".to_string(), Value::Double("-Infinity".to_string())),
            ("h".to_string(), Value::Double("1e400".to_string())),
            ("i".to_string(), Value::Double("0.10".to_string())),
            ("j".to_string(), Value::Double(".5".to_string())),
            (
                "k".to_string(),
                Value::BigInt("99999999999999999999".to_string()),
            ),
        ]);
        let j = value.to_json();
        // the numbers keep their digits in JSON text; a NaN is its text, never null
        assert_eq!(
            serde_json::to_string(&j).unwrap_or_default(),
            r#"{"b":2,"a":"x","c":[null,false,1.5],"d":"aGk=","e":"20240101T00:00:00","f":"NaN","g":"-Infinity","h":1e+400,"i":0.10,"j":0.5,"k":99999999999999999999}"#
        );
        let keys: Vec<&String> = j
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            ["b", "a", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
        );

        let back = Value::from_json(
            &json!({"z": 1, "y": [1.5, "s", null, true], "x": 18446744073709551615_u64}),
        );
        assert_eq!(
            back,
            Value::Struct(vec![
                ("z".to_string(), Value::Int(1)),
                (
                    "y".to_string(),
                    Value::Array(vec![
                        Value::double(1.5),
                        Value::Str("s".to_string()),
                        Value::Nil,
                        Value::Bool(true)
                    ])
                ),
                (
                    "x".to_string(),
                    Value::BigInt("18446744073709551615".to_string())
                ),
            ])
        );
    }

    #[test]
    fn json_responses_are_written_as_from_json_writes_them() {
        use serde_json::json;
        let values = [
            sample().to_json(),
            json!({"STATUS": 0, "ACTION": "MENU", "LANGUAGE": "he", "DATA": {
                "REC": "a<b>&c\r\u{1}\u{fffe}\u{ffff}\u{fffd}\u{f000}ש\t\n", "LOOP": 1,
                "DIALSTRINGS": ["SIP/1", ""], "X": null, "Y": false, "Z": true}}),
            json!([
                i64::MIN,
                i64::MAX,
                u64::MAX,
                2147483648_i64,
                -2147483649_i64,
                0.5
            ]),
            serde_json::from_str("[1e400, -0, 00, 99999999999999999999999, -1.0]")
                .unwrap_or_default(),
            json!("plain"),
            json!(null),
        ];
        for value in values {
            assert_eq!(
                write_json_response(&value),
                write_response(&Value::from_json(&value)),
                "{value}"
            );
        }
    }

    #[test]
    fn escaping_runs_is_escaping_each_character() {
        fn one_by_one(text: &str) -> String {
            let mut out = String::new();
            for c in text.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '\r' => out.push_str("&#13;"),
                    '\t' | '\n' => out.push(c),
                    c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                        out.push('\u{FFFD}')
                    }
                    c => out.push(c),
                }
            }
            out
        }
        let pieces = [
            "",
            "a",
            "&",
            "<",
            ">",
            "\r",
            "\n",
            "\t",
            "\u{0}",
            "\u{1f}",
            " ",
            "ש",
            "\u{fffe}",
            "\u{ffff}",
            "\u{fffd}",
            "\u{f000}",
            "\u{10ffff}",
            "x y",
            "&amp;",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let text = format!("{a}{b}{c}");
                    let mut out = String::new();
                    escape_into(&mut out, &text);
                    assert_eq!(out, one_by_one(&text), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn into_json_is_to_json() {
        let value = sample();
        assert_eq!(value.clone().into_json(), value.to_json());
    }

    #[test]
    fn member_lookup() {
        let v = Value::Struct(vec![
            ("LAYER ".to_string(), Value::Int(22)),
            ("layer".to_string(), Value::Int(1)),
            ("Err".to_string(), Value::Int(0)),
            ("x".to_string(), Value::Int(1)),
            ("x".to_string(), Value::Int(2)),
        ]);
        assert_eq!(v.member("layer"), Some(&Value::Int(1)), "exact name first");
        assert_eq!(v.member("LAYER "), Some(&Value::Int(22)));
        assert_eq!(
            v.member("err"),
            Some(&Value::Int(0)),
            "case-insensitive fallback"
        );
        assert_eq!(v.member(" ERR "), Some(&Value::Int(0)));
        assert_eq!(v.member("x"), Some(&Value::Int(2)), "last duplicate wins");
        assert_eq!(v.member("missing"), None);
        assert_eq!(Value::Int(1).member("x"), None);
    }

    /// Both readers on one document: the same values, or errors of the same kind (the same
    /// error when the document is not well formed).
    fn agree(doc: &str, limits: &Limits) {
        fn same<T: PartialEq>(a: &Result<T, WireError>, b: &Result<T, WireError>) -> bool {
            match (a, b) {
                (Ok(a), Ok(b)) => a == b,
                // errors of the document itself carry the same message (names, positions);
                // XML-RPC errors only the same kind
                (
                    Err(
                        a @ (WireError::MalformedXml(_)
                        | WireError::TooDeep { .. }
                        | WireError::DoctypeRefused),
                    ),
                    Err(b),
                ) => a == b,
                (Err(a), Err(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
                _ => false,
            }
        }
        let (new, old) = (
            parse_call(doc, limits),
            super::oracle::parse_call(doc, limits),
        );
        assert!(
            same(&new, &old),
            "parse_call differs on {doc:?}:\n{new:?}\n{old:?}"
        );
        let (new, old) = (
            parse_response(doc, limits),
            super::oracle::parse_response(doc, limits),
        );
        assert!(
            same(&new, &old),
            "parse_response differs on {doc:?}:\n{new:?}\n{old:?}"
        );
    }

    /// A pseudo-random XML-RPC-shaped document: mostly the grammar, sometimes not.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'p>(&mut self, items: &[&'p str]) -> &'p str {
            items[self.next(items.len())]
        }

        fn filler(&mut self, out: &mut String) {
            let bits = [
                "",
                "",
                " ",
                "\n ",
                "x",
                " a b ",
                "&amp;",
                "&#1488;",
                "<![CDATA[<c>]]>",
                "<!--c-->",
                "<?p?>",
                "12",
                "-7",
                "1e3",
                "NaN",
                "true",
                "0",
                "AAEC/w==",
                "&lt;",
                "&bogus;",
            ];
            for _ in 0..self.next(3) {
                out.push_str(self.pick(&bits));
            }
        }

        fn value(&mut self, out: &mut String, depth: usize) {
            let typed = [
                "string",
                "int",
                "i4",
                "i8",
                "boolean",
                "double",
                "dateTime.iso8601",
                "base64",
                "ex:nil",
                "struct",
                "array",
                "bogus",
            ];
            out.push_str(self.pick(&["<value>", "<value>", "<VALUE>", "<value >"]));
            match self.next(4) {
                0 => self.filler(out),
                _ => {
                    if self.next(8) == 0 {
                        self.filler(out);
                    }
                    let name = self.pick(&typed);
                    match name {
                        "struct" if depth < 6 => {
                            out.push_str("<struct>");
                            for _ in 0..self.next(4) {
                                self.member(out, depth + 1);
                            }
                            out.push_str("</struct>");
                        }
                        "array" if depth < 6 => {
                            out.push_str("<array>");
                            let data = self.next(4) != 0;
                            if data {
                                out.push_str("<data>");
                            }
                            for _ in 0..self.next(4) {
                                self.value(out, depth + 1);
                            }
                            if data {
                                out.push_str("</data>");
                            }
                            if self.next(10) == 0 {
                                out.push_str("<data/>");
                            }
                            out.push_str("</array>");
                        }
                        "ex:nil" if self.next(2) == 0 => out.push_str("<ex:nil/>"),
                        _ if self.next(6) == 0 => {
                            out.push('<');
                            out.push_str(name);
                            out.push_str("/>");
                        }
                        _ => {
                            out.push('<');
                            out.push_str(name);
                            out.push('>');
                            self.filler(out);
                            if self.next(12) == 0 {
                                self.value(out, depth + 1);
                            }
                            out.push_str("</");
                            out.push_str(name);
                            out.push('>');
                        }
                    }
                    if self.next(10) == 0 {
                        self.filler(out);
                    }
                    if self.next(20) == 0 {
                        out.push_str("<string>x</string>");
                    }
                }
            }
            out.push_str(self.pick(&["</value>", "</value>", "</Value>", "</\nvalue>"]));
        }

        fn member(&mut self, out: &mut String, depth: usize) {
            out.push_str("<member>");
            let parts = self.next(8);
            if parts != 1 {
                out.push_str("<name>");
                self.filler(out);
                out.push_str("</name>");
            }
            if parts != 2 {
                self.value(out, depth);
            }
            if parts == 3 {
                out.push_str("<name>n</name>");
            }
            if parts == 4 {
                self.filler(out);
            }
            out.push_str("</member>");
        }

        fn document(&mut self) -> String {
            let mut out = String::new();
            if self.next(3) == 0 {
                out.push_str(" <?xml version=\"1.0\"?>\n");
            }
            let response = self.next(2) == 0;
            out.push_str(if response {
                "<methodResponse>"
            } else {
                "<methodCall>"
            });
            if (!response || self.next(10) == 0) && self.next(10) != 0 {
                out.push_str("<methodName>");
                self.filler(&mut out);
                out.push_str("M</methodName>");
            }
            if response && self.next(3) == 0 {
                out.push_str("<fault>");
                for _ in 0..self.next(3) {
                    self.value(&mut out, 1);
                }
                out.push_str("</fault>");
            } else {
                out.push_str("<params>");
                for _ in 0..self.next(4) {
                    out.push_str("<param>");
                    for _ in 0..=self.next(2) {
                        self.value(&mut out, 1);
                    }
                    out.push_str("</param>");
                }
                if self.next(10) == 0 {
                    self.filler(&mut out);
                }
                out.push_str("</params>");
            }
            let end = self.pick(&["</methodResponse>", "</methodCall>", "</methodcall>", ""]);
            out.push_str(end);
            if self.next(10) == 0 {
                out.push_str(self.pick(&["<x/>", "junk", " \n", "<!-- -->"]));
            }
            out
        }
    }

    #[test]
    fn whitespace_skipped_in_a_value_is_kept_unless_a_type_follows() {
        let cases = [
            ("<value>  </value>", "  "),
            ("<value>\r\n \r</value>", "\n \n"),
            ("<value> <!--c--> </value>", "  "),
            ("<value> <?p?>\t</value>", " \t"),
            ("<value> &amp;</value>", " &"),
            ("<value>\n <![CDATA[x]]> </value>", "\n x "),
            ("<value>\n x</value>", "\n x"),
            ("<value> <string>s</string> </value>", "s"),
            ("<value>\r\n<nil/></value>", ""),
        ];
        for (xml, text) in cases {
            let expected = match text {
                "" => Value::Nil,
                text => Value::Str(text.to_string()),
            };
            assert_eq!(one(xml), Ok(expected), "{xml:?}");
            agree(
                &format!("<methodCall><methodName>m</methodName><params><param>{xml}</param></params></methodCall>"),
                &limits(),
            );
        }
        assert!(one("<value> x <string>s</string></value>").is_err());
    }

    #[test]
    fn errors_after_skipped_whitespace_name_the_markup_position() {
        // the whitespace between elements is skipped in the same read as the markup after
        // it; errors still name where the markup starts, as the tree reader does
        let cases = [
            (
                "<methodCall>\n  </params></methodCall>",
                "closing tag </params> does not match <methodcall> at byte 15",
            ),
            (
                "<methodCall>\r\n\t&bogus;</methodCall>",
                "unknown entity &bogus; at byte 15",
            ),
            (
                "<methodCall><params> \n <param>  \n</value></param></params></methodCall>",
                "closing tag </value> does not match <param> at byte 33",
            ),
        ];
        for (doc, message) in cases {
            assert_eq!(
                parse_call(doc, &limits()),
                Err(WireError::MalformedXml(message.to_string())),
                "{doc:?}"
            );
            agree(doc, &limits());
        }
    }

    #[test]
    fn streaming_reader_agrees_with_the_tree_reader() {
        let mut generator = Gen(0x2545_F491_4F6C_DD1D);
        let shallow = Limits {
            max_depth: 9,
            max_bytes: 1 << 20,
        };
        let mut parsed = 0;
        for _ in 0..6_000 {
            let doc = generator.document();
            agree(&doc, &limits());
            agree(&doc, &shallow);
            // a document cut short or with one byte dropped
            let cut = generator.next(doc.len().max(1));
            if doc.is_char_boundary(cut) {
                agree(&doc[..cut], &limits());
                if let Some(c) = doc[cut..].chars().next() {
                    let dropped = format!("{}{}", &doc[..cut], &doc[cut + c.len_utf8()..]);
                    agree(&dropped, &limits());
                }
            }
            parsed += usize::from(parse_call(&doc, &limits()).is_ok());
            parsed += usize::from(matches!(parse_response(&doc, &limits()), Ok(Ok(_))));
        }
        // the generator reaches the readers' success paths, not only their errors
        assert!(parsed > 300, "only {parsed} documents parsed");
    }

    #[test]
    fn arbitrary_garbage_never_panics() {
        let pieces = [
            "<",
            ">",
            "</",
            "/>",
            "methodCall",
            "value",
            "struct",
            "member",
            "name",
            "string",
            "int",
            "&",
            "&#",
            "&#x",
            ";",
            "<![CDATA[",
            "]]>",
            "<!--",
            "-->",
            "<?",
            "?>",
            "\"",
            "=",
            " ",
            "\n",
            "ש",
            "\u{0}",
            "<!",
            "array",
            "data",
            "1",
            "x:",
        ];
        // a deterministic pseudo-random walk over the pieces
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            let mut doc = String::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                doc.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            agree(&doc, &limits());
        }
    }
}
