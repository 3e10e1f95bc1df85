//! Body charset detection and decoding to UTF-8.
//!
//! Legacy platforms in Israel still send `windows-1255` and `iso-8859-8` bodies, sometimes
//! declared only in the XML declaration. The order of precedence is: the `charset` parameter
//! of the `Content-Type` header, then a byte order mark, then the XML declaration's
//! `encoding="..."` (looked for only when the body starts with `<?xml`), then UTF-8. Charset
//! names are resolved with the WHATWG labels of `encoding_rs`. Bytes that are invalid for the
//! chosen charset are an error, never silently replaced.

use std::borrow::Cow;

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};

use crate::WireError;

/// How far into the body the XML declaration is looked for.
const DECL_WINDOW: usize = 256;

/// Decodes a body to UTF-8: the charset parameter of the Content-Type wins, then a BOM, then
/// the XML declaration's encoding="..." (only when the body starts with `<?xml`), then UTF-8.
/// Uses encoding_rs labels (windows-1255, iso-8859-8, utf-16...). Invalid bytes for the
/// declared charset => WireError (no silent replacement).
///
/// A BOM matching the chosen charset is removed. When the header says UTF-16 and a UTF-16 BOM
/// is present, the BOM decides the byte order. An XML declaration naming UTF-16 in a body
/// that starts with ASCII `<?xml` is self-contradictory and is ignored (UTF-8 is used).
pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<String, WireError> {
    decode_borrowed(body, content_type).map(Cow::into_owned)
}

/// The first of the private-use characters that stand for bytes [`decode_escaped`] could not
/// read: byte `b` becomes U+10FF00 + `b`.
const ESCAPE_BASE: u32 = 0x10_FF00;

/// A body decoded by [`decode_escaped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped {
    /// The text, each unreadable byte standing as one private-use character.
    pub text: String,
    /// How many bytes could not be read (how many such characters were put in).
    pub escaped: usize,
    /// The charset the body was read in.
    pub encoding: &'static Encoding,
}

/// Like [`decode`] (same charset rules, same errors for an unknown label), but bytes that are
/// invalid in the charset do not fail the body: each becomes one private-use character
/// (U+10FF00 + byte), so a reader can still parse the document and [`Escaped::restore`] can
/// give each affected value back with its exact bytes. A caller must check that it found as
/// many such characters in the values it restores as [`Escaped::escaped`] says (the document
/// itself may hold those characters, as character references): otherwise a byte sat where no
/// value can carry it.
pub fn decode_escaped(body: &[u8], content_type: Option<&str>) -> Result<Escaped, WireError> {
    let (encoding, content) = choose(body, content_type)?;
    let undecodable = || WireError::Undecodable(encoding.name().to_string());
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut text = String::new();
    let mut escaped = 0;
    let mut src = content;
    loop {
        let room = decoder
            .max_utf8_buffer_length_without_replacement(src.len())
            .ok_or_else(undecodable)?;
        text.reserve(room);
        let (result, read) = decoder.decode_to_string_without_replacement(src, &mut text, true);
        match result {
            encoding_rs::DecoderResult::InputEmpty => break,
            encoding_rs::DecoderResult::OutputFull => {}
            encoding_rs::DecoderResult::Malformed(bad, extra) => {
                let end = read
                    .checked_sub(usize::from(extra))
                    .ok_or_else(undecodable)?;
                let start = end.checked_sub(usize::from(bad)).ok_or_else(undecodable)?;
                // the malformed bytes may lie in input already consumed; then give up
                let bytes = src.get(start..end).ok_or_else(undecodable)?;
                for &b in bytes {
                    text.push(escape_char(b));
                    escaped += 1;
                }
            }
        }
        src = src.get(read..).unwrap_or_default();
    }
    Ok(Escaped {
        text,
        escaped,
        encoding,
    })
}

fn escape_char(b: u8) -> char {
    char::from_u32(ESCAPE_BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn escaped_byte(c: char) -> Option<u8> {
    u32::from(c)
        .checked_sub(ESCAPE_BASE)
        .and_then(|b| u8::try_from(b).ok())
}

impl Escaped {
    /// How many escape characters `text` holds.
    pub fn count(text: &str) -> usize {
        text.chars().filter(|&c| escaped_byte(c).is_some()).count()
    }

    /// For a value holding escape characters: the value with U+FFFD in their place, and its
    /// bytes in the body's charset with the unreadable bytes as they were sent. `None` when
    /// the value holds none. (For a UTF-16 body the readable characters are given in UTF-8,
    /// encoding_rs writes no UTF-16.)
    pub fn restore(&self, value: &str) -> Option<(String, Vec<u8>)> {
        if Escaped::count(value) == 0 {
            return None;
        }
        let mut lossy = String::with_capacity(value.len());
        let mut bytes = Vec::with_capacity(value.len());
        let mut run = String::new();
        for c in value.chars() {
            match escaped_byte(c) {
                Some(b) => {
                    bytes.extend_from_slice(&self.encoding.encode(&run).0);
                    run.clear();
                    bytes.push(b);
                    lossy.push(char::REPLACEMENT_CHARACTER);
                }
                None => {
                    run.push(c);
                    lossy.push(c);
                }
            }
        }
        bytes.extend_from_slice(&self.encoding.encode(&run).0);
        Some((lossy, bytes))
    }
}

/// [`decode`] without a copy when it can: a body that is already valid UTF-8 (without a
/// BOM, or the BOM skipped) is borrowed, so decoding a large body does not double it.
pub fn decode_borrowed<'a>(
    body: &'a [u8],
    content_type: Option<&str>,
) -> Result<Cow<'a, str>, WireError> {
    let (encoding, content) = choose(body, content_type)?;
    encoding
        .decode_without_bom_handling_and_without_replacement(content)
        .ok_or_else(|| WireError::Undecodable(encoding.name().to_string()))
}

/// The charset that applies to a body (see [`decode`]) and the body without a BOM that
/// matches it.
fn choose<'a>(
    body: &'a [u8],
    content_type: Option<&str>,
) -> Result<(&'static Encoding, &'a [u8]), WireError> {
    let bom = Encoding::for_bom(body);
    let encoding = match content_type.and_then(charset_param) {
        Some(label) => {
            let declared = Encoding::for_label(label.as_bytes())
                .ok_or_else(|| WireError::UnknownCharset(label.to_string()))?;
            match bom {
                Some((from_bom, _)) if is_utf16(declared) && is_utf16(from_bom) => from_bom,
                _ => declared,
            }
        }
        None => match bom {
            Some((from_bom, _)) => from_bom,
            None => match xml_declared_encoding(body) {
                Some(label) => {
                    let declared = Encoding::for_label(label.as_bytes())
                        .ok_or_else(|| WireError::UnknownCharset(label.to_string()))?;
                    if is_utf16(declared) {
                        UTF_8
                    } else {
                        declared
                    }
                }
                None => UTF_8,
            },
        },
    };
    let content = match bom {
        Some((from_bom, len)) if from_bom == encoding => body.get(len..).unwrap_or_default(),
        _ => body,
    };
    Ok((encoding, content))
}

/// What a request's `Content-Type` says about the charset of text that does not describe its
/// own (form bodies and query strings): UTF-8 when it names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared<'a> {
    /// A known label, or none at all (UTF-8).
    Known(&'static Encoding),
    /// A label that names no encoding (`charset=x-foo`), as sent.
    Unknown(&'a str),
}

/// The charset the `Content-Type` declares for form bodies and query strings (see [`Declared`]).
pub fn declared(content_type: Option<&str>) -> Declared<'_> {
    match content_type.and_then(charset_param) {
        None => Declared::Known(UTF_8),
        Some(label) => match Encoding::for_label(label.as_bytes()) {
            Some(encoding) => Declared::Known(encoding),
            None => Declared::Unknown(label),
        },
    }
}

fn is_utf16(encoding: &'static Encoding) -> bool {
    encoding == UTF_16LE || encoding == UTF_16BE
}

/// The value of the `charset` parameter of a Content-Type header, unquoted and trimmed.
fn charset_param(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .trim();
        (!value.is_empty()).then_some(value)
    })
}

/// The `encoding` pseudo-attribute of an XML declaration at the very start of the body.
fn xml_declared_encoding(body: &[u8]) -> Option<String> {
    if !body.starts_with(b"<?xml") {
        return None;
    }
    let window = &body[..body.len().min(DECL_WINDOW)];
    let end = window.windows(2).position(|w| w == b"?>")?;
    // The declaration itself is ASCII; anything else means there is no usable declaration.
    let decl = std::str::from_utf8(&window[..end]).ok()?;
    let mut rest = decl;
    while let Some(pos) = rest.find("encoding") {
        let after = &rest[pos + "encoding".len()..];
        let preceded_by_space = rest[..pos]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_whitespace());
        let after_eq = after.trim_start().strip_prefix('=').map(str::trim_start);
        if let (true, Some(value)) = (preceded_by_space, after_eq) {
            let quote = value.chars().next()?;
            if quote == '"' || quote == '\'' {
                let inner = &value[1..];
                let close = inner.find(quote)?;
                return Some(inner[..close].trim().to_string());
            }
            return None;
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "שלום" in windows-1255.
    const SHALOM_1255: &[u8] = &[0xF9, 0xEC, 0xE5, 0xED];

    #[test]
    fn plain_utf8_by_default() {
        assert_eq!(decode("שלום".as_bytes(), None), Ok("שלום".to_string()));
        assert_eq!(decode(b"", None), Ok(String::new()));
    }

    #[test]
    fn windows_1255_from_xml_declaration() {
        let mut body = b"<?xml version=\"1.0\" encoding=\"windows-1255\"?><s>".to_vec();
        body.extend_from_slice(SHALOM_1255);
        body.extend_from_slice(b"</s>");
        let text = decode(&body, Some("text/xml")).expect("decodes");
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"windows-1255\"?><s>שלום</s>"
        );
        // single quotes and spaces around '=' are allowed in the declaration
        let mut body = b"<?xml version='1.0' encoding = 'ISO-8859-8' ?><s>".to_vec();
        body.extend_from_slice(SHALOM_1255);
        body.extend_from_slice(b"</s>");
        assert!(decode(&body, None).expect("decodes").contains("שלום"));
    }

    #[test]
    fn content_type_charset_wins_over_declaration() {
        let mut body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><s>".to_vec();
        body.extend_from_slice(SHALOM_1255);
        body.extend_from_slice(b"</s>");
        // the declaration alone says UTF-8 and the bytes are not UTF-8
        assert_eq!(
            decode(&body, None),
            Err(WireError::Undecodable("UTF-8".to_string()))
        );
        let text = decode(&body, Some("text/xml; Charset=\"windows-1255\"")).expect("decodes");
        assert!(text.ends_with("<s>שלום</s>"));
    }

    #[test]
    fn bom_wins_over_declaration() {
        let mut body = vec![0xEF, 0xBB, 0xBF];
        body.extend_from_slice(
            "<?xml version=\"1.0\" encoding=\"windows-1255\"?><s>ש</s>".as_bytes(),
        );
        let text = decode(&body, None).expect("decodes");
        assert!(text.starts_with("<?xml"), "bom removed");
        assert!(text.ends_with("<s>ש</s>"));
    }

    #[test]
    fn utf16_with_bom() {
        let mut body = vec![0xFF, 0xFE];
        for unit in "{\"a\":\"ש\"}".encode_utf16() {
            body.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(decode(&body, None), Ok("{\"a\":\"ש\"}".to_string()));
        // header says utf-16, BOM says little endian: fine
        assert_eq!(
            decode(&body, Some("application/json; charset=utf-16")),
            Ok("{\"a\":\"ש\"}".to_string())
        );
        let mut be = vec![0xFE, 0xFF];
        for unit in "x".encode_utf16() {
            be.extend_from_slice(&unit.to_be_bytes());
        }
        assert_eq!(
            decode(&be, Some("application/json; charset=utf-16")),
            Ok("x".to_string())
        );
    }

    #[test]
    fn utf16_declaration_in_ascii_body_is_ignored() {
        let body = b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><a/>";
        assert_eq!(
            decode(body, None),
            Ok(String::from_utf8_lossy(body).into_owned())
        );
    }

    #[test]
    fn unknown_charset_is_refused() {
        assert_eq!(
            decode(b"x", Some("text/plain; charset=klingon")),
            Err(WireError::UnknownCharset("klingon".to_string()))
        );
        assert_eq!(
            decode(b"<?xml version=\"1.0\" encoding=\"nope\"?><a/>", None),
            Err(WireError::UnknownCharset("nope".to_string()))
        );
    }

    #[test]
    fn invalid_bytes_are_refused_not_replaced() {
        assert_eq!(
            decode(&[b'a', 0xFF, b'b'], Some("application/json; charset=utf-8")),
            Err(WireError::Undecodable("UTF-8".to_string()))
        );
        // 0xFB is unassigned in windows-1255
        assert_eq!(
            decode(&[0xFB], Some("text/xml; charset=windows-1255")),
            Err(WireError::Undecodable("windows-1255".to_string()))
        );
    }

    #[test]
    fn declaration_only_at_start() {
        // not at the start: the encoding attribute is not honoured, UTF-8 is used
        let mut body = b" <?xml version=\"1.0\" encoding=\"windows-1255\"?>".to_vec();
        body.extend_from_slice(SHALOM_1255);
        assert!(matches!(
            decode(&body, None),
            Err(WireError::Undecodable(_))
        ));
        // an unterminated declaration is not a declaration
        assert_eq!(
            decode(b"<?xml encoding=\"windows-1255\"", None),
            Ok("<?xml encoding=\"windows-1255\"".to_string())
        );
    }

    #[test]
    fn escaped_decoding_keeps_unreadable_bytes() {
        // windows-1255 Hebrew in an undeclared (UTF-8) body, and a truncated UTF-8 sequence
        let mut body = b"{\"q\": \"".to_vec();
        body.extend_from_slice(SHALOM_1255);
        body.extend_from_slice("\", \"ok\": \"ש\", \"t\": \"a".as_bytes());
        body.extend_from_slice(&[0xD7, b'"', b'}']);
        let escaped = decode_escaped(&body, None).expect("decodes");
        assert_eq!(escaped.escaped, 5);
        assert_eq!(escaped.encoding, UTF_8);
        let q = escaped.text.split('"').nth(3).unwrap_or_default();
        assert_eq!(
            escaped.restore(q),
            Some(("\u{FFFD}".repeat(4), SHALOM_1255.to_vec()))
        );
        assert_eq!(escaped.restore("ש"), None);
        assert_eq!(Escaped::count(&escaped.text), 5);
        // an unassigned byte in windows-1255, next to readable Hebrew
        let escaped = decode_escaped(&[0xF9, 0xFB, b'x'], Some("text/xml; charset=windows-1255"))
            .expect("decodes");
        assert_eq!(escaped.escaped, 1);
        assert_eq!(
            escaped.restore(&escaped.text),
            Some(("ש\u{FFFD}x".to_string(), vec![0xF9, 0xFB, b'x']))
        );
        // valid bodies decode as decode() does; an unknown label is still an error
        let plain = decode_escaped("שלום".as_bytes(), None).expect("decodes");
        assert_eq!((plain.text.as_str(), plain.escaped), ("שלום", 0));
        assert_eq!(
            decode_escaped(b"x", Some("text/xml; charset=klingon")),
            Err(WireError::UnknownCharset("klingon".to_string()))
        );
    }

    #[test]
    fn declared_charset_for_forms() {
        assert_eq!(declared(None), Declared::Known(UTF_8));
        assert_eq!(
            declared(Some("application/x-www-form-urlencoded")),
            Declared::Known(UTF_8)
        );
        assert_eq!(
            declared(Some(
                "application/x-www-form-urlencoded; charset=windows-1255"
            )),
            Declared::Known(encoding_rs::WINDOWS_1255)
        );
        assert_eq!(
            declared(Some("application/x-www-form-urlencoded; charset=\"x-foo\"")),
            Declared::Unknown("x-foo")
        );
    }

    #[test]
    fn charset_param_parsing() {
        assert_eq!(charset_param("text/xml;charset=UTF-8"), Some("UTF-8"));
        assert_eq!(
            charset_param("text/xml; boundary=x; charset = \" cp1255 \""),
            Some("cp1255")
        );
        assert_eq!(charset_param("text/xml"), None);
        assert_eq!(charset_param("text/xml; charset="), None);
    }
}
