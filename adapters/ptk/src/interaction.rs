//! Interactions: their ids, their state (kept by the core as the JSON state of a `ptk`
//! entity) and UserData with its merge rule.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::soap::Element;

/// The status of an interaction (ivrgate's names for the Queue Manager states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Created by CreateInteraction: receiving inbound treatment.
    Inbound,
    /// In the holding queue (InteractionQueued, InteractionSendToQueue).
    QueuedHold,
    /// A callback waiting for its ASAP or appointment time.
    CallbackPending,
    /// The callback fell due: the platform is calling the contact.
    CallbackDue,
    /// The contact answered the callback.
    OutboundConnected,
    /// The connected callback waits in the callback queue for an agent.
    QueuedCallback,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Inbound => "Inbound",
            Status::QueuedHold => "QueuedHold",
            Status::CallbackPending => "CallbackPending",
            Status::CallbackDue => "CallbackDue",
            Status::OutboundConnected => "OutboundConnected",
            Status::QueuedCallback => "QueuedCallback",
        }
    }
}

/// A live interaction, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub contact: Option<String>,
    /// FIFO (ASAP callback), Appointment, or Inbound.
    pub interaction_type: String,
    pub status: Status,
    #[serde(default)]
    pub appointment: Option<String>,
    /// The slot the appointment holds (epoch seconds of its start).
    #[serde(default)]
    pub slot: Option<u64>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub source_application: Option<String>,
    #[serde(default)]
    pub skill: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub result: Option<String>,
    /// When the callback is due (UTC text), while pending.
    #[serde(default)]
    pub due: Option<String>,
    pub created: String,
    #[serde(default)]
    pub user_data: Map<String, Value>,
    /// The licence it took: `voice` (CreateInteraction: held during inbound treatment, released
    /// by the next report as the seed says) or `callback` (AddInteraction: held until it ends).
    #[serde(default)]
    pub licence: Option<String>,
    /// When a report last moved it (UTC text); the idle timer compares against it.
    #[serde(default)]
    pub touched: Option<String>,
    /// Failed outbound attempts per reason.
    #[serde(default)]
    pub failures: Map<String, Value>,
}

impl Interaction {
    /// Reads the stored state in place: a clone of it first would hold its UserData twice.
    pub fn from_state(state: &Value) -> Option<Interaction> {
        Interaction::deserialize(state).ok()
    }

    /// Whether it holds one of its PTK tenant's licences now.
    pub fn holds_licence(&self) -> bool {
        match self.licence.as_deref() {
            Some("voice") => self.status == Status::Inbound,
            Some(_) => true,
            None => false,
        }
    }

    /// The state to store. UserData is moved into it, not copied: with a large UserData the
    /// interaction and a copy of its state would each hold it while the transition runs.
    pub fn into_state(mut self) -> Value {
        let user_data = std::mem::take(&mut self.user_data);
        let mut state = serde_json::to_value(&self).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut state {
            // Replaces the empty map where it was serialized: the key order is unchanged.
            fields.insert("user_data".into(), Value::Object(user_data));
        }
        state
    }
}

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

/// Reads UserData (`UserDataAssignment` children with `Key` and `Value`) into a map.
/// A value is `{"string": ..}`, `{"integer": n}`, `{"binary": "hex"}` or `{"list": {..}}`.
pub fn read_user_data(container: &Element, depth: usize) -> Result<Map<String, Value>, String> {
    if depth > 16 {
        return Err("UserData nested too deep".into());
    }
    // Sized to the assignments: grown by insertion, it would keep room for up to twice them.
    let mut out = Map::with_capacity(container.children.len());
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

fn read_value(value: &Element, depth: usize) -> Result<Value, String> {
    let Some(typed) = value.children.first() else {
        return Ok(serde_json::json!({"string": value.value()}));
    };
    let name = typed.name.to_ascii_lowercase();
    match name.as_str() {
        "stringvalue" => {
            // One entry, sized so: `json!` would leave room for three.
            let mut one = Map::with_capacity(1);
            one.insert("string".into(), Value::String(typed.text.to_string()));
            Ok(Value::Object(one))
        }
        "integervalue" => typed
            .value()
            .parse::<i64>()
            .map(|n| serde_json::json!({"integer": n}))
            .map_err(|_| format!("IntegerValue {:?} is not an integer", typed.value())),
        "binaryvalue" => {
            let hex = typed.value();
            if hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(serde_json::json!({"binary": hex.to_ascii_uppercase()}))
            } else {
                Err(format!("BinaryValue {hex:?} is not hexadecimal"))
            }
        }
        "listvalue" => Ok(serde_json::json!({"list": read_user_data(typed, depth + 1)?})),
        other => Err(format!("unexpected <{other}> in a UserData Value")),
    }
}

/// Merges `new` into `old` as UpdateUserData documents: a new value or list replaces the
/// old one, except that two lists are merged.
pub fn merge(old: &mut Map<String, Value>, new: &Map<String, Value>) {
    for (key, value) in new {
        let both_lists =
            old.get(key).and_then(|v| v.get("list")).is_some() && value.get("list").is_some();
        if both_lists {
            if let (Some(Value::Object(target)), Some(Value::Object(source))) = (
                old.get_mut(key).and_then(|v| v.get_mut("list")),
                value.get("list"),
            ) {
                merge(target, source);
                continue;
            }
        }
        old.insert(key.clone(), value.clone());
    }
}

/// Writes UserData as `UserDataAssignment` elements.
pub fn write_user_data(w: &mut crate::soap::Writer, data: &Map<String, Value>) {
    for (key, value) in data {
        w.open("UserDataAssignment").leaf("Key", key).open("Value");
        if let Some(s) = value.get("string").and_then(Value::as_str) {
            w.leaf("StringValue", s);
        } else if let Some(n) = value.get("integer").and_then(Value::as_i64) {
            w.leaf("IntegerValue", &n.to_string());
        } else if let Some(b) = value.get("binary").and_then(Value::as_str) {
            w.leaf("BinaryValue", b);
        } else if let Some(Value::Object(list)) = value.get("list") {
            w.open("ListValue");
            write_user_data(w, list);
            w.close("ListValue");
        }
        w.close("Value").close("UserDataAssignment");
    }
}

/// UserData as plain JSON for webhooks: strings, integers, `hex:..` for binary, objects for
/// lists.
pub fn plain(data: &Map<String, Value>) -> Value {
    Value::Object(
        data.iter()
            .map(|(k, v)| {
                let plain = if let Some(s) = v.get("string") {
                    s.clone()
                } else if let Some(n) = v.get("integer") {
                    n.clone()
                } else if let Some(b) = v.get("binary").and_then(Value::as_str) {
                    Value::String(format!("hex:{b}"))
                } else if let Some(Value::Object(list)) = v.get("list") {
                    plain(list)
                } else {
                    Value::Null
                };
                (k.clone(), plain)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(n: i64) -> Value {
        json!({"integer": n})
    }
    fn list(pairs: &[(&str, Value)]) -> Value {
        json!({"list": pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Map<_, _>>()})
    }
    fn map(pairs: &[(&str, Value)]) -> Map<String, Value> {
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
        let mut i = Interaction {
            id: "V0014000000001917072015093838470".into(),
            tenant: "T".into(),
            segment: Some("S".into()),
            queue: None,
            contact: Some("5551234".into()),
            interaction_type: "FIFO".into(),
            status: Status::CallbackPending,
            appointment: None,
            slot: Some(1_437_125_918),
            external_id: None,
            client_id: Some("c1".into()),
            source_application: None,
            skill: None,
            attempts: 2,
            result: None,
            due: Some("2015-07-17T09:38:38Z".into()),
            created: "2015-07-17T09:38:38Z".into(),
            user_data: map(&[("b", s(1)), ("a", list(&[("n", json!({"string": "x"}))]))]),
            licence: Some("callback".into()),
            touched: None,
            failures: map(&[("busy", json!(1))]),
        };
        let serialized = serde_json::to_string(&i).expect("json");
        let state = i.clone().into_state();
        // Same text, keys in the same order: stored states do not change shape.
        assert_eq!(state.to_string(), serialized);
        assert_eq!(Interaction::from_state(&state), Some(i.clone()));
        i.user_data = Map::new();
        assert_eq!(Interaction::from_state(&i.clone().into_state()), Some(i));
        assert_eq!(Interaction::from_state(&json!({"id": 1})), None);
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
            Value::Object(data),
            json!({"s": {"string": "x"}, "i": {"integer": 7}, "b": {"binary": "0AFF"},
                   "l": {"list": {"n": {"string": "plain"}}}})
        );
        let bad = crate::soap::parse(
            "<UserData><UserDataAssignment><Key>i</Key><Value><IntegerValue>x</IntegerValue></Value></UserDataAssignment></UserData>",
            32,
        )
        .expect("xml");
        assert!(read_user_data(&bad, 0).is_err());
    }
}
