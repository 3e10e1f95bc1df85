//! Interactions' ids, and UserData as the SOAP requests carry it, with its merge rule (the
//! stored form is in [`crate::state`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::soap::Element;
use crate::state::{UserData, UserValue};

/// Whether `id` has the documented form: `V` and 31 digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.starts_with('V') && id[1..].bytes().all(|b| b.is_ascii_digit())
}

/// This process's node digits (4), drawn once: instances sharing a store get different ones
/// with high probability, and a collision is caught when the id is created.
fn node() -> u64 {
    static NODE: OnceLock<u64> = OnceLock::new();
    *NODE.get_or_init(|| rand::random::<u64>() % 10_000)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new interaction id: `V`, 4 node digits, a 10-digit counter (a per-process counter from a
/// random start), then DDMMYYYY and HHMMSSmmm of `now` (UTC): 32 characters.
pub fn new_id(now: SystemTime) -> String {
    static START: OnceLock<u64> = OnceLock::new();
    let start = *START.get_or_init(|| rand::random::<u64>() % 10_000_000_000);
    let n = (start + COUNTER.fetch_add(1, Ordering::Relaxed)) % 10_000_000_000;
    let stamp = Timestamp::try_from(now)
        .map(|ts| ts.strftime("%d%m%Y%H%M%S%3f").to_string())
        .unwrap_or_else(|_| "01011970000000000".into());
    format!("V{:04}{:010}{}", node(), n, stamp)
}

/// Reads UserData (`UserDataAssignment` children with `Key` and `Value`).
pub fn read_user_data(container: &Element, depth: usize) -> Result<UserData, String> {
    if depth > 16 {
        return Err("UserData nested too deep".into());
    }
    // Sized to the assignments: grown by insertion, it would keep room for up to twice them.
    let mut out = UserData::with_capacity(container.children.len());
    for assignment in container
        .children
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case("UserDataAssignment"))
    {
        let key = assignment
            .child("Key")
            .map(Element::value)
            .filter(|k| !k.is_empty())
            .ok_or("a UserDataAssignment has no Key")?;
        let value = assignment
            .child("Value")
            .ok_or("a UserDataAssignment has no Value")?;
        out.insert(key.to_owned(), read_value(value, depth)?);
    }
    // Anything but assignments inside UserData is a format error.
    if let Some(other) = container
        .children
        .iter()
        .find(|c| !c.name.eq_ignore_ascii_case("UserDataAssignment"))
    {
        return Err(format!("unexpected <{}> in UserData", other.name));
    }
    Ok(out)
}

fn read_value(value: &Element, depth: usize) -> Result<UserValue, String> {
    let Some(typed) = value.children.first() else {
        return Ok(UserValue::String(value.value().to_owned()));
    };
    let name = typed.name.to_ascii_lowercase();
    match name.as_str() {
        "stringvalue" => Ok(UserValue::String(typed.text.to_string())),
        "integervalue" => typed
            .value()
            .parse::<i64>()
            .map(UserValue::Integer)
            .map_err(|_| format!("IntegerValue {:?} is not an integer", typed.value())),
        "binaryvalue" => {
            let hex = typed.value();
            if hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(UserValue::Binary(hex.to_ascii_uppercase()))
            } else {
                Err(format!("BinaryValue {hex:?} is not hexadecimal"))
            }
        }
        "listvalue" => Ok(UserValue::List(read_user_data(typed, depth + 1)?)),
        other => Err(format!("unexpected <{other}> in a UserData Value")),
    }
}

/// Merges `new` into `old` as UpdateUserData documents: a new value or list replaces the
/// old one, except that two lists are merged.
pub fn merge(old: &mut UserData, new: &UserData) {
    for (key, value) in new {
        if let (Some(UserValue::List(target)), UserValue::List(source)) = (old.get_mut(key), value)
        {
            merge(target, source);
            continue;
        }
        old.insert(key.clone(), value.clone());
    }
}

/// Writes UserData as `UserDataAssignment` elements.
pub fn write_user_data(w: &mut crate::soap::Writer, data: &UserData) {
    for (key, value) in data {
        w.open("UserDataAssignment").leaf("Key", key).open("Value");
        match value {
            UserValue::String(s) => {
                w.leaf("StringValue", s);
            }
            UserValue::Integer(n) => {
                w.leaf("IntegerValue", &n.to_string());
            }
            UserValue::Binary(b) => {
                w.leaf("BinaryValue", b);
            }
            UserValue::List(list) => {
                w.open("ListValue");
                write_user_data(w, list);
                w.close("ListValue");
            }
        }
        w.close("Value").close("UserDataAssignment");
    }
}

/// UserData as plain JSON for webhooks: strings, integers, `hex:..` for binary, objects for
/// lists.
pub fn plain(data: &UserData) -> Value {
    Value::Object(
        data.iter()
            .map(|(k, v)| {
                let plain = match v {
                    UserValue::String(s) => Value::String(s.clone()),
                    UserValue::Integer(n) => Value::from(*n),
                    UserValue::Binary(b) => Value::String(format!("hex:{b}")),
                    UserValue::List(list) => plain(list),
                };
                (k.clone(), plain)
            })
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Interaction, InteractionType, Licence, Status};
    use serde::Deserialize;
    use serde_json::json;

    fn s(n: i64) -> UserValue {
        UserValue::Integer(n)
    }
    fn list(pairs: &[(&str, UserValue)]) -> UserValue {
        UserValue::List(map(pairs))
    }
    fn map(pairs: &[(&str, UserValue)]) -> UserData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn merges_exactly_as_the_seed_examples() {
        // ("a"=1) merge ("a"=2) -> ("a"=2)
        let mut old = map(&[("a", s(1))]);
        merge(&mut old, &map(&[("a", s(2))]));
        assert_eq!(old, map(&[("a", s(2))]));
        // ("b"=("a"=2)) merge ("b"=("b"=2)) -> ("b"=("a"=2,"b"=2))
        let mut old = map(&[("b", list(&[("a", s(2))]))]);
        merge(&mut old, &map(&[("b", list(&[("b", s(2))]))]));
        assert_eq!(old, map(&[("b", list(&[("a", s(2)), ("b", s(2))]))]));
        // ("b"=("a"=2)) merge ("b"=("a"=3)) -> ("b"=("a"=3))
        let mut old = map(&[("b", list(&[("a", s(2))]))]);
        merge(&mut old, &map(&[("b", list(&[("a", s(3))]))]));
        assert_eq!(old, map(&[("b", list(&[("a", s(3))]))]));
        // ("b"=5) merge ("b"=("a"=3)) -> ("b"=("a"=3))
        let mut old = map(&[("b", s(5))]);
        merge(&mut old, &map(&[("b", list(&[("a", s(3))]))]));
        assert_eq!(old, map(&[("b", list(&[("a", s(3))]))]));
        // ("b"=("a"=3)) merge ("b"=5) -> ("b"=5)
        let mut old = map(&[("b", list(&[("a", s(3))]))]);
        merge(&mut old, &map(&[("b", s(5))]));
        assert_eq!(old, map(&[("b", s(5))]));
    }

    #[test]
    fn ids_have_the_documented_form() {
        let at = SystemTime::from(
            "2015-07-17T09:38:38.470Z"
                .parse::<Timestamp>()
                .expect("time"),
        );
        let id = new_id(at);
        assert_eq!(id.len(), 32, "{id}");
        assert!(valid_id(&id));
        assert!(id.ends_with("17072015093838470"), "{id}");
        assert_ne!(new_id(at), id);
        assert!(valid_id("V0014000000001917072015093838470"));
        assert!(!valid_id("V001400000000191707201509383847"));
        assert!(!valid_id("X0014000000001917072015093838470"));
    }

    #[test]
    fn the_state_moves_user_data_in_as_serialization_would_and_reads_back() {
        let mut i = Interaction::new(
            "V0014000000001917072015093838470",
            "T",
            "2015-07-17T09:38:38Z".into(),
        );
        i.segment = Some("S".into());
        i.contact = Some("5551234".into());
        i.interaction_type = InteractionType::Fifo;
        i.status = Status::CallbackPending;
        i.slot = Some(1_437_125_918);
        i.client_id = Some("c1".into());
        i.attempts = 2;
        i.due = Some("2015-07-17T09:38:38Z".into());
        i.user_data = map(&[
            ("b", s(1)),
            ("a", list(&[("n", UserValue::String("x".into()))])),
        ]);
        i.licence = Some(Licence::Callback);
        i.failures.insert("busy".into(), 1);
        let serialized = serde_json::to_string(&i).expect("json");
        let state = i.clone().into_state();
        // Same text, keys in the same order: stored states do not change shape.
        assert_eq!(state.to_string(), serialized);
        assert!(
            serialized.contains(r#""interaction_type":"FIFO""#),
            "{serialized}"
        );
        assert!(
            serialized.contains(r#""licence":"callback""#),
            "{serialized}"
        );
        assert_eq!(Interaction::deserialize(&state).ok(), Some(i.clone()));
        i.user_data = UserData::new();
        assert_eq!(
            Interaction::deserialize(&i.clone().into_state()).ok(),
            Some(i)
        );
    }

    #[test]
    fn reads_every_value_type() {
        let xml = "<UserData><UserDataAssignment><Key>s</Key><Value><StringValue>x</StringValue></Value></UserDataAssignment>\
<UserDataAssignment><Key>i</Key><Value><IntegerValue>7</IntegerValue></Value></UserDataAssignment>\
<UserDataAssignment><Key>b</Key><Value><BinaryValue>0aFF</BinaryValue></Value></UserDataAssignment>\
<UserDataAssignment><Key>l</Key><Value><ListValue><UserDataAssignment><Key>n</Key><Value>plain</Value></UserDataAssignment></ListValue></Value></UserDataAssignment></UserData>";
        let e = crate::soap::parse(xml, 32).expect("xml");
        let data = read_user_data(&e, 0).expect("data");
        assert_eq!(
            serde_json::to_value(&data).expect("json"),
            json!({"s": {"string": "x"}, "i": {"integer": 7}, "b": {"binary": "0AFF"},
                   "l": {"list": {"n": {"string": "plain"}}}})
        );
        assert_eq!(
            plain(&data),
            json!({"s": "x", "i": 7, "b": "hex:0AFF", "l": {"n": "plain"}})
        );
        let bad = crate::soap::parse(
            "<UserData><UserDataAssignment><Key>i</Key><Value><IntegerValue>x</IntegerValue></Value></UserDataAssignment></UserData>",
            32,
        )
        .expect("xml");
        assert!(read_user_data(&bad, 0).is_err());
    }
}
