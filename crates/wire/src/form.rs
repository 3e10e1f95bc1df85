//! `application/x-www-form-urlencoded` bodies and URL query strings.
//!
//! Voicenter can send CDR notifications as form posts or GET queries on the same URL as its
//! JSON and XML-RPC ones; this reader turns them into ordered pairs. [`parse_in`] reads the
//! percent-decoded bytes in the charset the request declares (`windows-1255` forms carry
//! Hebrew as `%F9%EC%E5%ED`) and hands back the bytes of any value that charset cannot read,
//! so nothing is replaced silently.

use crate::charset::Declared;

/// One name/value pair of a form body or query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The name, decoded (bytes the charset cannot read become U+FFFD).
    pub name: String,
    /// The value, decoded; when `undecodable` is set, a lossy rendering with U+FFFD in place
    /// of what could not be read.
    pub value: String,
    /// The value's exact bytes (after percent-decoding) when the charset cannot read them.
    pub undecodable: Option<Vec<u8>>,
}

/// Reads a form body or query string (`+` is a space, `%XX` a byte, pairs in order, names
/// without `=` get an empty value, as [`parse`]) and decodes each name and value in the
/// declared charset. A value whose bytes are not valid in that charset (say `%F9` in a form
/// that declares no charset, so UTF-8) keeps its exact bytes in [`Pair::undecodable`]. With an
/// unknown charset label, ASCII values are read as they are (every form charset agrees on
/// ASCII) and any other value is undecodable. Charsets that are not ASCII-compatible (UTF-16)
/// cannot carry a form body byte for byte; the body is decoded as text first and its
/// percent-escapes read as UTF-8, as browsers send them.
pub fn parse_in(body: &[u8], charset: Declared<'_>) -> Vec<Pair> {
    let encoding = match charset {
        Declared::Known(encoding) if !encoding.is_ascii_compatible() => {
            let (text, _, _) = encoding.decode(body);
            return parse_in(text.as_bytes(), Declared::Known(encoding_rs::UTF_8));
        }
        Declared::Known(encoding) => Some(encoding),
        Declared::Unknown(_) => None,
    };
    let read = |bytes: Vec<u8>| -> (String, Option<Vec<u8>>) {
        let strict = match encoding {
            Some(encoding) => encoding
                .decode_without_bom_handling_and_without_replacement(&bytes)
                .map(|text| text.into_owned()),
            None if bytes.is_ascii() => String::from_utf8(bytes.clone()).ok(),
            None => None,
        };
        match strict {
            Some(text) => (text, None),
            None => {
                let lossy = match encoding {
                    Some(encoding) => encoding.decode_without_bom_handling(&bytes).0.into_owned(),
                    None => String::from_utf8_lossy(&bytes).into_owned(),
                };
                (lossy, Some(bytes))
            }
        }
    };
    let body = body.strip_prefix(b"?").unwrap_or(body);
    body.split(|&b| b == b'&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = match segment.iter().position(|&b| b == b'=') {
                Some(at) => (&segment[..at], &segment[at + 1..]),
                None => (segment, &[][..]),
            };
            let (name, _) = read(percent_decode(name));
            let (value, undecodable) = read(percent_decode(value));
            Pair {
                name,
                value,
                undecodable,
            }
        })
        .collect()
}

/// application/x-www-form-urlencoded (and query strings): `+` is a space, %XX decoded as
/// UTF-8, pairs in order, keys without `=` get an empty value.
///
/// Bytes that do not form valid UTF-8 after percent-decoding become U+FFFD, so this is for
/// text whose charset does not matter; requests are read with [`parse_in`], which honours the
/// declared charset and keeps the bytes it cannot read. A `%`
/// not followed by two hex digits is kept literally. One leading `?` is skipped, and empty
/// segments (`a=1&&b=2`) are dropped. Duplicate keys are all kept, in order.
pub fn parse(text: &str) -> Vec<(String, String)> {
    let text = text.strip_prefix('?').unwrap_or(text);
    text.split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.split_once('=') {
            Some((key, value)) => (decode(key), decode(value)),
            None => (decode(segment), String::new()),
        })
        .collect()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(part: &str) -> String {
    String::from_utf8_lossy(&percent_decode(part.as_bytes())).into_owned()
}

/// `+` to a space and `%XX` to its byte; a `%` without two hex digits is kept literally.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex);
                let low = bytes.get(i + 2).copied().and_then(hex);
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high << 4 | low);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{parse, parse_in, Pair};
    use crate::charset::Declared;
    use encoding_rs::{UTF_16LE, UTF_8, WINDOWS_1255};

    fn pair(name: &str, value: &str, undecodable: Option<&[u8]>) -> Pair {
        Pair {
            name: name.to_string(),
            value: value.to_string(),
            undecodable: undecodable.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn declared_charset_is_honoured() {
        let body = b"ivruniqueid=X1&status=ANSWER&queueid=7&queuename=%F9%EC%E5%ED";
        assert_eq!(
            parse_in(body, Declared::Known(WINDOWS_1255)),
            vec![
                pair("ivruniqueid", "X1", None),
                pair("status", "ANSWER", None),
                pair("queueid", "7", None),
                pair("queuename", "שלום", None),
            ]
        );
        // raw (not percent-encoded) bytes of the charset are read the same way
        assert_eq!(
            parse_in(b"?n=\xF9\xEC+%E5%ED", Declared::Known(WINDOWS_1255)),
            vec![pair("n", "של ום", None)]
        );
        // UTF-8 by default
        assert_eq!(
            parse_in(b"n=%D7%A9%D7%9C%D7%95%D7%9D", Declared::Known(UTF_8)),
            vec![pair("n", "שלום", None)]
        );
    }

    #[test]
    fn undecodable_bytes_are_kept() {
        // windows-1255 bytes in a form that declares no charset (UTF-8)
        assert_eq!(
            parse_in(b"a=1&n=%F9%EC", Declared::Known(UTF_8)),
            vec![
                pair("a", "1", None),
                pair("n", "\u{FFFD}\u{FFFD}", Some(&[0xF9, 0xEC])),
            ]
        );
        // 0xFB is unassigned in windows-1255
        assert_eq!(
            parse_in(b"n=%F9%FB", Declared::Known(WINDOWS_1255)),
            vec![pair("n", "ש\u{FFFD}", Some(&[0xF9, 0xFB]))]
        );
        // an unknown charset: ASCII is read, anything else is kept as bytes
        assert_eq!(
            parse_in(b"a=x+y&n=%F9", Declared::Unknown("x-foo")),
            vec![pair("a", "x y", None), pair("n", "\u{FFFD}", Some(&[0xF9]))]
        );
    }

    #[test]
    fn utf16_form_body() {
        let body: Vec<u8> = "n=%D7%A9&m=x"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(
            parse_in(&body, Declared::Known(UTF_16LE)),
            vec![pair("n", "ש", None), pair("m", "x", None)]
        );
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cdr_form_post() {
        let body = "caller=0544444444&target=0722776772&time=1414320455&type=Extension+Outgoing\
                    &status=ANSWER&targetextension=&did";
        assert_eq!(
            parse(body),
            pairs(&[
                ("caller", "0544444444"),
                ("target", "0722776772"),
                ("time", "1414320455"),
                ("type", "Extension Outgoing"),
                ("status", "ANSWER"),
                ("targetextension", ""),
                ("did", ""),
            ])
        );
    }

    #[test]
    fn percent_decoding() {
        // "שלום" percent-encoded as UTF-8, a literal plus, an encoded '=' and '&'
        assert_eq!(
            parse("name=%D7%A9%D7%9C%D7%95%D7%9D&sum=1%2B1%3D2&x=a%26b"),
            pairs(&[("name", "שלום"), ("sum", "1+1=2"), ("x", "a&b")])
        );
        // only the first '=' splits
        assert_eq!(parse("a=b=c"), pairs(&[("a", "b=c")]));
    }

    #[test]
    fn query_string_and_edge_cases() {
        assert_eq!(
            parse("?a=1&&b=2&a=3&"),
            pairs(&[("a", "1"), ("b", "2"), ("a", "3")])
        );
        assert!(parse("").is_empty());
        assert_eq!(parse("=v"), pairs(&[("", "v")]));
    }

    #[test]
    fn bad_percent_and_bad_utf8() {
        assert_eq!(
            parse("a=100%&b=%zz&c=%4"),
            pairs(&[("a", "100%"), ("b", "%zz"), ("c", "%4")])
        );
        // windows-1255 bytes are not UTF-8: replaced, never a panic
        assert_eq!(parse("n=%F9%EC"), pairs(&[("n", "\u{FFFD}\u{FFFD}")]));
    }
}
