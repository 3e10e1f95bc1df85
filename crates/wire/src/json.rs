//! JSON as real senders write it.
//!
//! Well-formed JSON goes through `serde_json`. When that fails, a small lenient reader takes
//! over and accepts the deviations found in the Voicenter seed and in hand-written senders
//! (see [`parse_lenient`]). Key order is kept (the workspace enables serde_json's
//! `preserve_order`); with duplicate keys the last value wins at the first key's position, in
//! both readers.
//!
//! Numbers keep the text they were sent with (the workspace enables serde_json's
//! `arbitrary_precision`): `999999999999999999999999999999`, `-9223372036854775809`, `0.10` and
//! `1e400` are read, stored and written again digit for digit, never rounded through a float
//! and never refused for being out of a machine type's range. The one thing serde_json
//! normalises is an exponent's spelling: `1e400` and `1E400` are written `1e+400`.

use serde_json::{Map, Number, Value};

use crate::{Limits, WireError};

/// Parses JSON strictly first (serde_json); if that fails, with a lenient reader that
/// accepts what real senders and the seed send: unquoted object keys (identifiers of
/// letters/digits/_/$), single-quoted strings, duplicate keys (last wins, first position
/// kept), raw control characters (newline, tab) inside strings (kept as they are),
/// trailing commas, and an array holding `key: value` pairs (the seed's
/// `"TARGETS": [ TARGET: "050...", TYPE: "PHONE" ]`), read as an array of one object.
/// Depth and size limits apply; anything else is WireError::MalformedJson with a position.
/// The workspace's serde_json has the preserve_order feature: keep key order.
///
/// Not accepted, on purpose: comments, bare words as values, unclosed objects or arrays
/// (the seed's SAYDIGITS JSON example lacks its last `}`; that is an error in the document,
/// not something senders do), numbers outside JSON's grammar (`+1`, `.5`, `01`).
/// A leading byte order mark is skipped. Numbers of any size or precision are kept as their
/// exact text (see the module documentation).
pub fn parse_lenient(text: &str, limits: &Limits) -> Result<Value, WireError> {
    limits.check_size(text.len())?;
    let max_depth = limits.depth();
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return if depth(&value) > max_depth {
            Err(WireError::TooDeep { limit: max_depth })
        } else {
            Ok(value)
        };
    }
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        max_depth,
    };
    if text.starts_with('\u{FEFF}') {
        parser.pos = '\u{FEFF}'.len_utf8();
    }
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos < parser.bytes.len() {
        return Err(parser.error("unexpected characters after the value"));
    }
    Ok(value)
}

/// A decimal number as a sender wrote it (`12`, `-9223372036854775809`, `0.10`, `1e400`,
/// and the forms JSON does not allow but other senders write: `+1`, `.5`, `1.`, `007`) as a
/// JSON number with the same digits: a `+` sign, leading zeros and a dangling `.` are dropped,
/// a bare fraction gets its `0` and an exponent is spelt `e+N`/`e-N` (as serde_json keeps
/// it); no digit changes (no rounding, no range limit). `None` for
/// anything else, including `NaN` and `Infinity`, which JSON has no number for. Surrounding
/// whitespace is ignored.
pub fn number(text: &str) -> Option<Number> {
    let text = text.trim();
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    if let Some(exponent) = exponent {
        // `e`/`E`, an optional sign, then at least one digit
        let power = exponent[1..]
            .strip_prefix(['+', '-'])
            .unwrap_or(&exponent[1..]);
        if power.is_empty() || !digits(power) {
            return None;
        }
    }
    let int = int.trim_start_matches('0');
    let mut json = String::with_capacity(text.len() + 2);
    if negative {
        json.push('-');
    }
    json.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        json.push('.');
        json.push_str(frac);
    }
    json.push_str(exponent.unwrap_or(""));
    json.parse().ok()
}

/// Nesting depth of a value: scalars 0, each array or object level 1.
/// Only called on serde_json output, whose nesting serde_json bounds at 128.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') = self.peek() {
            self.pos += 1;
        }
    }

    fn error(&self, what: &str) -> WireError {
        let before = self.text.get(..self.pos).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        WireError::MalformedJson(format!(
            "{what} at line {line} column {column} (byte {})",
            self.pos
        ))
    }

    fn value(&mut self, depth: usize) -> Result<Value, WireError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b) if is_ident(b) => {
                let start = self.pos;
                let word = self.ident();
                match word {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "null" => Ok(Value::Null),
                    _ => {
                        self.pos = start;
                        Err(self.error("unexpected word"))
                    }
                }
            }
            Some(_) => Err(self.error("unexpected character")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), WireError> {
        if depth > self.max_depth {
            Err(WireError::TooDeep {
                limit: self.max_depth,
            })
        } else {
            Ok(())
        }
    }

    /// Reads `{ members }`; the cursor is on `{`.
    fn object(&mut self, depth: usize) -> Result<Value, WireError> {
        self.enter(depth)?;
        self.pos += 1;
        let map = self.members(depth, b'}')?;
        Ok(Value::Object(map))
    }

    /// Reads `key: value` pairs up to and including `close`; trailing comma allowed.
    fn members(&mut self, depth: usize, close: u8) -> Result<Map<String, Value>, WireError> {
        let mut map = Map::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(map);
            }
            let key = self.key()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':' after key"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            // last value wins; preserve_order keeps the first key's position
            map.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == close => {}
                Some(_) => return Err(self.error(&format!("expected ',' or '{}'", close as char))),
                None => return Err(self.error("unexpected end of input")),
            }
        }
    }

    /// Reads `[ values ]`, or `[ key: value, ... ]` as an array of one object.
    fn array(&mut self, depth: usize) -> Result<Value, WireError> {
        self.enter(depth)?;
        self.pos += 1;
        self.skip_ws();
        if self.starts_pair() {
            self.enter(depth + 1)?;
            let map = self.members(depth + 1, b']')?;
            return Ok(Value::Array(vec![Value::Object(map)]));
        }
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {}
                Some(_) => return Err(self.error("expected ',' or ']'")),
                None => return Err(self.error("unexpected end of input")),
            }
        }
    }

    /// Whether the cursor is on `key :` (the cursor does not move).
    fn starts_pair(&mut self) -> bool {
        let start = self.pos;
        let is_pair = self.key().is_ok() && {
            self.skip_ws();
            self.peek() == Some(b':')
        };
        self.pos = start;
        is_pair
    }

    fn key(&mut self) -> Result<String, WireError> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => self.string(q),
            Some(b) if is_ident(b) => Ok(self.ident().to_string()),
            Some(_) => Err(self.error("expected an object key")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    /// Reads a run of identifier bytes (non-ASCII letters included, whole characters).
    fn ident(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(is_ident) {
            self.pos += 1;
        }
        // bytes >= 0x80 are all taken, so the run ends on a character boundary
        self.text.get(start..self.pos).unwrap_or_default()
    }

    fn number(&mut self) -> Result<Value, WireError> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.pos += 1;
        }
        let token = self.text.get(start..self.pos).unwrap_or_default();
        // JSON's own grammar only; with arbitrary_precision any size is kept as its text
        token.parse::<Number>().map(Value::Number).map_err(|_| {
            self.pos = start;
            self.error(&format!("invalid number {token:?}"))
        })
    }

    /// Reads a string quoted with `quote`; raw control characters are kept as they are.
    fn string(&mut self, quote: u8) -> Result<String, WireError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut run = self.pos;
        loop {
            let Some(b) = self.peek() else {
                self.pos = open;
                return Err(self.error("unterminated string"));
            };
            if b == quote {
                out.push_str(self.text.get(run..self.pos).unwrap_or_default());
                self.pos += 1;
                return Ok(out);
            }
            if b != b'\\' {
                self.pos += 1;
                continue;
            }
            out.push_str(self.text.get(run..self.pos).unwrap_or_default());
            self.pos += 1;
            let simple = match self.peek() {
                Some(b'"') => Some('"'),
                Some(b'\'') => Some('\''),
                Some(b'\\') => Some('\\'),
                Some(b'/') => Some('/'),
                Some(b'b') => Some('\u{8}'),
                Some(b'f') => Some('\u{c}'),
                Some(b'n') => Some('\n'),
                Some(b'r') => Some('\r'),
                Some(b't') => Some('\t'),
                Some(b'u') => None,
                _ => return Err(self.error("invalid escape in string")),
            };
            self.pos += 1;
            let c = match simple {
                Some(c) => c,
                None => self.unicode_escape()?,
            };
            out.push(c);
            run = self.pos;
        }
    }

    /// Reads the hex digits after `\u` (and a low surrogate escape after a high one).
    fn unicode_escape(&mut self) -> Result<char, WireError> {
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u".as_slice()) {
                return Err(self.error("unpaired surrogate in string"));
            }
            self.pos += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error("unpaired surrogate in string"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error("unpaired surrogate in string"))
    }

    fn hex4(&mut self) -> Result<u32, WireError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("invalid \\u escape in string"))?;
        let value =
            u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Value, WireError> {
        parse_lenient(text, &Limits::default())
    }

    fn keys(v: &Value) -> Vec<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn strict_json_passes_through_with_order() {
        let v = parse(r#"{"z": 1, "a": [1, 2.5, "x", null, true], "m": {"k": "v"}}"#);
        assert_eq!(
            v,
            Ok(json!({"z": 1, "a": [1, 2.5, "x", null, true], "m": {"k": "v"}}))
        );
        assert_eq!(keys(&v.unwrap_or_default()), ["z", "a", "m"]);
        assert_eq!(parse("\"just a string\""), Ok(json!("just a string")));
        assert_eq!(parse(" 15616841651 "), Ok(json!(15616841651_i64)));
    }

    #[test]
    fn numbers_keep_their_text() {
        for text in [
            r#"{"big": 999999999999999999999999999999, "low": -9223372036854775809, "tenth": 0.10, "far": 1e400, "tiny": -1E-400}"#,
            "{big: 999999999999999999999999999999, low: -9223372036854775809, tenth: 0.10, far: 1e400, tiny: -1E-400,}",
        ] {
            let v = parse(text).expect(text);
            assert_eq!(
                serde_json::to_string(&v).expect("serialises"),
                r#"{"big":999999999999999999999999999999,"low":-9223372036854775809,"tenth":0.10,"far":1e+400,"tiny":-1e-400}"#,
                "{text}"
            );
        }
        // duplicate keys: the last number wins, exactly
        let v = parse("{a: 1e400, b: 2, a: 18446744073709551616}").expect("lenient");
        assert_eq!(
            serde_json::to_string(&v).expect("serialises"),
            r#"{"a":18446744073709551616,"b":2}"#
        );
        // integers that fit still read as integers
        assert_eq!(parse("{a: -7}").expect("lenient")["a"].as_i64(), Some(-7));
    }

    #[test]
    fn numbers_from_sender_text() {
        let n = |t: &str| number(t).map(|n| n.to_string());
        for (text, json) in [
            ("12", "12"),
            (" -9223372036854775809 ", "-9223372036854775809"),
            ("0.10", "0.10"),
            ("1e400", "1e+400"),
            ("-1E+5", "-1e+5"),
            ("+1", "1"),
            (".5", "0.5"),
            ("-.5e3", "-0.5e+3"),
            ("1.", "1"),
            ("007", "7"),
            ("-000", "-0"),
            ("0", "0"),
        ] {
            assert_eq!(n(text).as_deref(), Some(json), "{text:?}");
        }
        for bad in [
            "",
            "-",
            ".",
            "+",
            "e5",
            "1e",
            "1e+",
            "1.2.3",
            "0x10",
            "NaN",
            "inf",
            "-Infinity",
            "1_000",
            "1 2",
            "++1",
            "١",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn duplicate_keys_last_wins_first_position_kept() {
        for text in [
            r#"{"a": 1, "b": 2, "a": 3}"#, // strict path
            r#"{a: 1, "b": 2, a: 3,}"#,    // lenient path
        ] {
            let v = parse(text).unwrap_or_default();
            assert_eq!(v, json!({"a": 3, "b": 2}), "{text}");
            assert_eq!(keys(&v), ["a", "b"], "{text}");
        }
    }

    #[test]
    fn lenient_forms() {
        assert_eq!(
            parse(
                "{ METHOD: 'GET_IVR_ACTION', $x_1: 'it\\'s', DATA: {DID: \"07\",}, L: [1, 2,], }"
            ),
            Ok(
                json!({"METHOD": "GET_IVR_ACTION", "$x_1": "it's", "DATA": {"DID": "07"}, "L": [1, 2]})
            )
        );
        assert_eq!(
            parse("{\"a\": \"line one\n\tline two\"}"),
            Ok(json!({"a": "line one\n\tline two"}))
        );
        assert_eq!(parse("{שם: 'ערך'}"), Ok(json!({"שם": "ערך"})));
        assert_eq!(
            parse("{'s': \"\\u05e9\\ud83d\\ude00\\n\\/\"}"),
            Ok(json!({"s": "ש😀\n/"}))
        );
        assert_eq!(parse("\u{FEFF}{a: 1}"), Ok(json!({"a": 1})));
        assert_eq!(parse("[]"), Ok(json!([])));
        assert_eq!(parse("{a:[]}"), Ok(json!({"a": []})));
    }

    #[test]
    fn pairs_inside_an_array() {
        assert_eq!(
            parse("{\"TARGETS\": [ TARGET: \"0501234567\", TYPE: \"PHONE\", ]}"),
            Ok(json!({"TARGETS": [{"TARGET": "0501234567", "TYPE": "PHONE"}]}))
        );
        assert_eq!(parse("['k': 1]"), Ok(json!([{"k": 1}])));
        // a plain array of strings stays an array of strings
        assert_eq!(parse("['a', \"b\"]"), Ok(json!(["a", "b"])));
        // mixing is refused
        assert!(matches!(
            parse("[\"a\", k: 1]"),
            Err(WireError::MalformedJson(_))
        ));
    }

    #[test]
    fn errors_carry_a_position() {
        for (text, line, column) in [
            ("{\"a\": 1,\n  \"b\" 2}", 2, 7),
            ("{a: tru}", 1, 5),
            ("{a: 1} x", 1, 8),
            ("{a: +1}", 1, 5),
            ("{a: \"open", 1, 5),
            ("{a: 'x\\q'}", 1, 8),
            ("{a: \"\\ud800\"}", 1, 12),
            ("", 1, 1),
            ("{a: 1", 1, 6),
            ("// c\n{}", 1, 1),
        ] {
            match parse(text) {
                Err(WireError::MalformedJson(message)) => assert!(
                    message.contains(&format!("line {line} column {column}")),
                    "{text:?}: {message}"
                ),
                other => panic!("{text:?} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn limits_apply() {
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(parse(&deep), Err(WireError::TooDeep { limit: 32 }));
        let deep_lenient = format!("{}{}", "{a:".repeat(1000), "}".repeat(1000));
        assert_eq!(parse(&deep_lenient), Err(WireError::TooDeep { limit: 32 }));
        let unclosed = "[".repeat(100_000);
        assert_eq!(parse(&unclosed), Err(WireError::TooDeep { limit: 32 }));
        let generous = Limits {
            max_depth: usize::MAX,
            max_bytes: usize::MAX,
        };
        assert_eq!(
            parse_lenient(&unclosed, &generous),
            Err(WireError::TooDeep {
                limit: crate::HARD_MAX_DEPTH
            })
        );
        // strictly valid but deeper than the limit
        let five = "[[[[[1]]]]]";
        let shallow = Limits {
            max_depth: 4,
            max_bytes: 100,
        };
        assert_eq!(
            parse_lenient(five, &shallow),
            Err(WireError::TooDeep { limit: 4 })
        );
        assert!(parse_lenient("[[[[1]]]]", &shallow).is_ok());
        assert_eq!(
            parse_lenient(&"1".repeat(101), &shallow),
            Err(WireError::TooLarge {
                size: 101,
                limit: 100
            })
        );
    }

    #[test]
    fn arbitrary_garbage_never_panics() {
        let pieces = [
            "{", "}", "[", "]", ":", ",", "\"", "'", "\\", "\\u", "d800", "a", "1", "-", ".", "e",
            "true", " ", "\n", "ש", "$", "null", "\u{FEFF}",
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..5000 {
            let mut text = String::new();
            for _ in 0..(state % 30) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            let _ = parse(&text);
        }
    }
}
