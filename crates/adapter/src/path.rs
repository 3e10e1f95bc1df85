//! Request paths as the server routes them: split at `/` first, then each segment
//! percent-decoded on its own, so a decoded `/`, `.` or `..` is data inside one segment and
//! never changes where a request goes. Empty segments (`//`, a leading or trailing `/`) are
//! dropped: `//voicenter/acme/cdr/` is `/voicenter/acme/cdr`. A bad escape, a segment that
//! is not UTF-8 or decodes to a control character makes the whole path unreadable (400).
//!
//! Adapters get the segments after their routing prefix as [`PathSegments`] and match on
//! [`PathSegments::as_strs`]; there is deliberately no joined string to split again.

use std::fmt;

/// Why a path cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hexadecimal digits.
    BadEscape,
    /// A segment that does not decode to UTF-8 text.
    NotUtf8,
    /// A segment that decodes to a control character (`%0A`, ...): never a name, and it
    /// would forge lines in the logs that show it.
    Control,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "a '%' in the path is not followed by two hex digits",
            PathError::NotUtf8 => "a path segment does not decode to UTF-8",
            PathError::Control => "a path segment decodes to a control character",
        })
    }
}

impl std::error::Error for PathError {}

/// Decoded, non-empty path segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathSegments(Vec<String>);

impl PathSegments {
    /// Splits a raw request path (as it came on the request line, without the query) at
    /// `/`, drops empty segments and percent-decodes each one.
    pub fn parse(raw: &str) -> Result<PathSegments, PathError> {
        raw.split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect::<Result<Vec<_>, _>>()
            .map(PathSegments)
    }

    /// Segments that are already decoded (tests, and the rest of a routed path).
    pub fn from_decoded<S: Into<String>>(segments: impl IntoIterator<Item = S>) -> Self {
        PathSegments(
            segments
                .into_iter()
                .map(Into::into)
                .filter(|s: &String| !s.is_empty())
                .collect(),
        )
    }

    /// The segments, for slice patterns: `match path.as_strs().as_slice() { ["cdr"] => .. }`.
    pub fn as_strs(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).collect()
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The segments from `index` on.
    pub fn tail(&self, index: usize) -> PathSegments {
        PathSegments(self.0.get(index..).unwrap_or_default().to_vec())
    }
}

/// For logs: segments joined with `/`, each re-encoded where a character would be ambiguous
/// or unprintable (`/`, `%`, controls, spaces), so the shown path routes as the real one.
impl fmt::Display for PathSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.0 {
            f.write_str("/")?;
            for c in segment.chars() {
                if c == '/' || c == '%' || c.is_control() || c.is_whitespace() {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "%{b:02X}")?;
                    }
                } else {
                    write!(f, "{c}")?;
                }
            }
        }
        Ok(())
    }
}

fn decode(segment: &str) -> Result<String, PathError> {
    if !segment.contains('%') {
        // Raw control characters are refused like encoded ones (found by the `path` fuzz
        // target: "/\x04zz" came through as a segment).
        if segment.chars().any(char::is_control) {
            return Err(PathError::Control);
        }
        return Ok(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| {
                bytes
                    .get(j)
                    .and_then(|b| (*b as char).to_digit(16))
                    .ok_or(PathError::BadEscape)
            };
            let (hi, lo) = (hex(i + 1)?, hex(i + 2)?);
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Vec<String> {
        PathSegments::parse(raw).expect("path").segments().to_vec()
    }

    #[test]
    fn raw_control_characters_are_refused_like_encoded_ones() {
        assert_eq!(PathSegments::parse("/\x04zz"), Err(PathError::Control));
        assert_eq!(PathSegments::parse("/a/%04zz"), Err(PathError::Control));
        assert_eq!(parse("/a/zz"), vec!["a", "zz"]);
    }

    #[test]
    fn split_first_then_decode() {
        assert_eq!(parse("//voicenter/acme/cdr/"), ["voicenter", "acme", "cdr"]);
        assert_eq!(parse("/"), Vec::<String>::new());
        assert_eq!(parse(""), Vec::<String>::new());
        assert_eq!(parse("/a%2Fb/c"), ["a/b", "c"]);
        assert_eq!(parse("/%2E%2E/x"), ["..", "x"]);
        assert_eq!(parse("/../x"), ["..", "x"]);
        assert_eq!(
            parse("/transit/+1%20(555)%20555-0180/arrived"),
            ["transit", "+1 (555) 555-0180", "arrived"]
        );
        assert_eq!(parse("/%2B15555550180"), ["+15555550180"]);
        assert_eq!(parse("/%D7%A9"), ["ש"]);
        assert_eq!(PathSegments::parse("/a%2"), Err(PathError::BadEscape));
        assert_eq!(PathSegments::parse("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(PathSegments::parse("/%FF"), Err(PathError::NotUtf8));
        assert_eq!(
            PathSegments::parse("/acme%0Aforged"),
            Err(PathError::Control)
        );
        assert_eq!(PathSegments::parse("/%7F"), Err(PathError::Control));
    }

    #[test]
    fn shown_paths_route_like_the_real_one() {
        let p = PathSegments::parse("/a%2Fb/c%20d/%25").expect("path");
        assert_eq!(p.to_string(), "/a%2Fb/c%20d/%25");
        assert_eq!(PathSegments::parse(&p.to_string()), Ok(p.clone()));
        assert_eq!(p.tail(1).as_strs(), ["c d", "%"]);
        assert!(p.tail(9).is_empty());
    }
}
