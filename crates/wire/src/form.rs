//! `application/x-www-form-urlencoded` bodies and URL query strings.
//!
//! Voicenter can send CDR notifications as form posts or GET queries on the same URL as its
//! JSON and XML-RPC ones; this reader turns them into ordered pairs.

/// application/x-www-form-urlencoded (and query strings): `+` is a space, %XX decoded as
/// UTF-8 (invalid UTF-8 => lossy is acceptable here, say so), pairs in order, keys without
/// `=` get an empty value.
///
/// Bytes that do not form valid UTF-8 after percent-decoding become U+FFFD: form bodies carry
/// no charset of their own and a lossy value is more useful than a refused notification. A `%`
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
    let bytes = part.as_bytes();
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
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::parse;

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
