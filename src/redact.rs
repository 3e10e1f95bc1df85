//! Keeping secrets out of log lines and error messages: the one place that masks URL
//! credentials and secret query parameters, and the values a TOML error quotes from the file.
//!
//! Every URL that reaches a log line or an error message goes through [`url`]; every TOML
//! error goes through [`toml_error`] before it is printed or logged.

/// Query parameter names that carry secrets, compared case-insensitively with `-` read as
/// `_`. Names ending in `_token`, `_key`, `_secret`, `_password` or `_signature` count too.
const SECRET_PARAMS: &[&str] = &[
    "code",
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pass",
    "pwd",
    "sig",
    "signature",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "authorization",
    "client_secret",
    "credential",
    "credentials",
    "session",
    "jwt",
    "hash",
    "x_amz_signature",
    "x_amz_credential",
    "x_amz_security_token",
];

const MASK: &str = "***";

/// Whether a query parameter of this name carries a secret.
fn secret_param(name: &str) -> bool {
    let decoded = percent_decode(name).to_ascii_lowercase().replace('-', "_");
    let name = decoded.trim();
    SECRET_PARAMS.contains(&name)
        || [
            "_token",
            "_key",
            "_secret",
            "_password",
            "_signature",
            "_sig",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL fit for a log line: user and password replaced by `***`, the values of secret
/// query parameters (`token`, `key`, `sig`, ...) replaced by `***`, a fragment dropped.
/// Works on text that does not parse as a URL too (it is often logged because it did not).
pub fn url(text: &str) -> String {
    let (before_fragment, fragment) = match text.find('#') {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let (base, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(text.len());
    // Userinfo: between `scheme://` (or the start) and the first `@` of the authority.
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let rest = &base[authority_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    out.push_str(&base[..authority_start]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            out.push_str(MASK);
            if userinfo.contains(':') {
                out.push(':');
                out.push_str(MASK);
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&rest[authority_end..]);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if secret_param(name) => format!("{name}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if fragment.is_some_and(|f| !f.is_empty()) {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

/// A TOML error message fit to print: the source excerpt it quotes keeps its keys and
/// structure, but every string value is masked (`"****"`, same length so the caret still
/// points at the right column), a string left open is masked to the end of its line, and
/// so is a bare value that is not a number, boolean or date. Quoted text in the message
/// itself (`invalid type: string "..."`) is masked too. Line and column stay.
pub fn toml_error(message: &str) -> String {
    let mut out = Vec::new();
    for line in message.lines() {
        out.push(match excerpt_line(line) {
            Some((gutter, source)) => format!("{gutter}{}", mask_toml_line(source)),
            None => mask_quoted(line),
        });
    }
    let mut joined = out.join("\n");
    if message.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

/// `"9 | password = ..."` → `("9 | ", "password = ...")`: a source line of the excerpt.
fn excerpt_line(line: &str) -> Option<(&str, &str)> {
    let bar = line.find('|')?;
    let number = line[..bar].trim();
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let gutter_end = if line[bar + 1..].starts_with(' ') {
        bar + 2
    } else {
        bar + 1
    };
    Some((&line[..gutter_end], &line[gutter_end..]))
}

/// Masks double-quoted text (backslash escapes honoured) in a message line, keeping the
/// quotes and the length.
fn mask_quoted(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '`' {
            // Backticks quote the grammar (`=`, `"`), never a value: kept.
            for inner in chars.by_ref() {
                out.push(inner);
                if inner == '`' {
                    break;
                }
            }
            continue;
        }
        if c != '"' {
            continue;
        }
        let mut escaped = false;
        for inner in chars.by_ref() {
            if !escaped && inner == '"' {
                out.push('"');
                break;
            }
            escaped = !escaped && inner == '\\';
            out.push('*');
        }
    }
    out
}

/// Masks the values on one TOML source line: strings (closed or not) and bare words that
/// are not numbers, booleans or dates. Keys (before `=`, in `[headers]`) stay readable.
fn mask_toml_line(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    // Whether the next word is a value (after `=`, in an array) or a key. A line with no
    // `=` that is no `[table]` header continues a value (a multi-line string or array):
    // everything on it is a value.
    let mut in_value = !line.contains('=') && !line.trim_start().starts_with('[');
    // Open brackets: `{` inline table, `A` array, `H` table header.
    let mut open: Vec<char> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '#' => {
                // A comment: kept as written (the operator's note, not a value).
                out.extend(&chars[i..]);
                break;
            }
            '"' | '\'' => {
                let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
                let quotes = if triple { 3 } else { 1 };
                out.extend(std::iter::repeat_n(c, quotes));
                i += quotes;
                let mut escaped = false;
                let mut closed = false;
                while i < chars.len() {
                    let inner = chars[i];
                    let closes = !escaped
                        && inner == c
                        && (!triple
                            || (chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c)));
                    if closes {
                        out.extend(std::iter::repeat_n(c, quotes));
                        i += quotes;
                        closed = true;
                        break;
                    }
                    escaped = c == '"' && !escaped && inner == '\\';
                    // Quoted keys are masked too: they rarely matter, and the mask is safe.
                    out.push('*');
                    i += 1;
                }
                if !closed {
                    // An unclosed string runs to the end of the line, all masked above.
                    break;
                }
                continue;
            }
            '=' => {
                in_value = true;
                out.push(c);
            }
            '{' => {
                open.push('{');
                in_value = false;
                out.push(c);
            }
            '[' => {
                open.push(if in_value { 'A' } else { 'H' });
                out.push(c);
            }
            ']' | '}' => {
                open.pop();
                out.push(c);
            }
            ',' => {
                in_value = open.last() == Some(&'A');
                out.push(c);
            }
            ' ' | '\t' => out.push(c),
            _ if in_value => {
                let start = i;
                while i < chars.len() && !" \t,]}#=\"'".contains(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if literal(&word) {
                    out.push_str(&word);
                } else {
                    out.extend(std::iter::repeat_n('*', word.chars().count()));
                }
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// A bare TOML value that is no secret: a number, boolean, date or time.
fn literal(word: &str) -> bool {
    let plain = word.replace('_', "");
    let radix = |prefix: &str, radix: u32| {
        plain
            .strip_prefix(prefix)
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_digit(radix)))
    };
    matches!(
        word,
        "true" | "false" | "inf" | "+inf" | "-inf" | "nan" | "+nan" | "-nan"
    ) || plain.parse::<i64>().is_ok()
        || plain.parse::<f64>().is_ok()
        || radix("0x", 16)
        || radix("0o", 8)
        || radix("0b", 2)
        || (word.starts_with(|c: char| c.is_ascii_digit())
            && word
                .chars()
                .all(|c| c.is_ascii_digit() || "-:TZ.+".contains(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_and_secret_parameters_are_masked() {
        assert_eq!(
            url("https://user:hunter2@hooks.example.com/in?tenant=a&Token=abc&API-Key=k#frag"),
            "https://***:***@hooks.example.com/in?tenant=a&Token=***&API-Key=***#***"
        );
        assert_eq!(
            url("https://hooks.example.com/x?code=1&sig=2&X-Amz-Signature=3&page=4"),
            "https://hooks.example.com/x?code=***&sig=***&X-Amz-Signature=***&page=4"
        );
        assert_eq!(
            url("http://tok@h/p?access_token=a&my_secret=b&signature=c&password=d"),
            "http://***@h/p?access_token=***&my_secret=***&signature=***&password=***"
        );
        // Nothing to hide: unchanged.
        assert_eq!(
            url("http://127.0.0.1:8080/hook?tenant=a"),
            "http://127.0.0.1:8080/hook?tenant=a"
        );
        // Not a URL at all, still masked.
        assert_eq!(
            url("http://u:p@[bad host/x?key=v"),
            "http://***:***@[bad host/x?key=***"
        );
    }

    #[test]
    fn odd_input_neither_panics_nor_leaks() {
        for text in [
            "",
            "|",
            "1 |",
            "12 | \"",
            "3 | k = '''abc",
            "4 | k = \"\"\"abc\\\"",
            "5 | k = [\"abc\", {b = \"abc\"}, 0x1F, 1979-05-27T07:32:00Z, nan] # note",
            "6 | שם = \"סוד\" ✓",
            "\"abc",
            "`a` \"abc\" `c",
            "7 | abc def\"\"\"  x",
            "8 |   abc,",
        ] {
            let masked = toml_error(text);
            assert!(
                !masked.contains("abc") && !masked.contains("סוד"),
                "{text} -> {masked}"
            );
        }
        for text in [
            "",
            "@",
            "://@",
            "http://",
            "?",
            "#",
            "a?b&=&c=%ZZ&%74oken=x",
            "http://ü:ö@ä/?ß=1",
        ] {
            let masked = url(text);
            assert!(
                !masked.contains("oken=x") && !masked.contains("ö@"),
                "{text} -> {masked}"
            );
        }
    }

    #[test]
    fn toml_excerpts_keep_structure_and_hide_values() {
        let message = "TOML parse error at line 9, column 29\n  |\n9 | password = \"hunter2-secret\" x\n  |                             ^\nunexpected key or value, expected newline, `#`\n";
        let masked = toml_error(message);
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(
            masked.contains("9 | password = \"**************\" *"),
            "{masked}"
        );
        assert!(masked.contains("line 9, column 29"));
        assert!(masked.contains("expected newline, `#`"));
        // The caret still points at the same column.
        let lines: Vec<&str> = masked.lines().collect();
        assert_eq!(lines[2].len(), "9 | password = \"hunter2-secret\" x".len());

        let unclosed = "TOML parse error at line 6, column 18\n  |\n6 | webhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8\n  |                  ^\ninvalid basic string\n";
        let masked = toml_error(unclosed);
        assert!(!masked.contains("MfKQ9r8"), "{masked}");
        assert!(masked.contains("6 | webhook_secret = \""), "{masked}");

        let bare = "TOML parse error at line 3, column 12\n  |\n3 | password = hunter2\n  |            ^\ninvalid string\nexpected `\"`, `'`\n";
        let masked = toml_error(bare);
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(masked.contains("expected `\"`, `'`"), "{masked}");

        let inline = "x\n  |\n4 | basic_auth = { username = \"u\", password = 'p4ss', n = 3 }\n";
        assert_eq!(
            toml_error(inline),
            "x\n  |\n4 | basic_auth = { username = \"*\", password = '****', n = 3 }\n"
        );

        let message = "invalid type: string \"s3cret\", expected u64";
        assert_eq!(
            toml_error(message),
            "invalid type: string \"******\", expected u64"
        );
    }
}
