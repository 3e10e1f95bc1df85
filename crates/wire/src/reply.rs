//! Answers built only to be written: a [`Reply`] borrows its text from whatever it was made
//! of and is written as JSON ([`Reply::write_json`]) or as an XML-RPC response
//! ([`crate::xmlrpc::write_reply`]) without a JSON tree or an XML-RPC [`Value`] built first.
//!
//! A reply writes exactly the bytes its JSON tree ([`Reply::to_json`]) would: `serde_json`'s
//! compact text, and [`crate::xmlrpc::write_response`] of [`Value::from_json`] of it.
//!
//! [`Value`]: crate::xmlrpc::Value
//! [`Value::from_json`]: crate::xmlrpc::Value::from_json

use std::borrow::Cow;

/// A value of an answer, with its text borrowed where it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<'a> {
    /// An integer: a JSON number, an XML-RPC `<int>` (`<i8>` beyond 32 bits).
    Int(i64),
    /// A string.
    Str(Cow<'a, str>),
    /// An array of strings.
    Strs(&'a [String]),
    /// An object (XML-RPC `<struct>`) with its members in order; names are not repeated.
    Fields(Vec<(&'static str, Reply<'a>)>),
}

impl Reply<'_> {
    /// The reply as a JSON tree.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Reply::Int(n) => J::from(*n),
            Reply::Str(text) => J::String(text.to_string()),
            Reply::Strs(texts) => texts.iter().map(|t| J::from(t.as_str())).collect(),
            Reply::Fields(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                for (name, value) in fields {
                    map.insert((*name).to_string(), value.to_json());
                }
                J::Object(map)
            }
        }
    }

    /// The reply as compact JSON text: `serde_json::to_vec` of [`Reply::to_json`].
    pub fn write_json(&self) -> Vec<u8> {
        // serializing into a Vec cannot fail
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Serialized straight from the borrowed text, with no JSON tree built.
impl serde::Serialize for Reply<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Reply::Int(n) => s.serialize_i64(*n),
            Reply::Str(text) => s.serialize_str(text),
            Reply::Strs(texts) => s.collect_seq(texts.iter()),
            Reply::Fields(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(texts: &[String]) -> Reply<'_> {
        Reply::Fields(vec![
            ("STATUS", Reply::Int(0)),
            ("ACTION", Reply::Str(Cow::Borrowed("MENU"))),
            ("LANGUAGE", Reply::Str(Cow::Owned("he".to_string()))),
            (
                "DATA",
                Reply::Fields(vec![
                    (
                        "REC",
                        Reply::Str(Cow::Borrowed("a\"b\\c\n\u{1}<&>ש\u{2028}")),
                    ),
                    ("LOOP", Reply::Int(i64::MIN)),
                    ("DELAY", Reply::Int(i64::MAX)),
                    ("SIZE", Reply::Int(2_147_483_648)),
                    ("EMPTY", Reply::Fields(Vec::new())),
                    ("NONE", Reply::Strs(&[])),
                    ("DIALSTRINGS", Reply::Strs(texts)),
                ]),
            ),
        ])
    }

    #[test]
    fn writes_what_its_json_tree_writes() {
        let texts = ["SIP/1".to_string(), String::new(), "\r\t".to_string()];
        let reply = sample(&texts);
        let tree = reply.to_json();
        assert_eq!(
            String::from_utf8_lossy(&reply.write_json()),
            serde_json::to_string(&tree).unwrap_or_default()
        );
        assert_eq!(
            crate::xmlrpc::write_reply(&reply),
            crate::xmlrpc::write_response(&crate::xmlrpc::Value::from_json(&tree))
        );
        for scalar in [
            Reply::Int(-1),
            Reply::Str(Cow::Borrowed("")),
            Reply::Strs(&texts),
        ] {
            let tree = scalar.to_json();
            assert_eq!(
                scalar.write_json(),
                serde_json::to_vec(&tree).unwrap_or_default()
            );
            assert_eq!(
                crate::xmlrpc::write_reply(&scalar),
                crate::xmlrpc::write_response(&crate::xmlrpc::Value::from_json(&tree))
            );
        }
    }
}
