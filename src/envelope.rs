//! The webhook payloads ivrgate sends, typed and written in one place: every event and
//! decision is an [`Envelope`] (`{"type", "timestamp", "data"}`) whose `data` is one of the
//! structs below, serialised straight from them (no `serde_json::Value` tree is built), in
//! the key order `docs/schemas/` documents and receivers have always seen.
//!
//! The keys the core sets (`event_id`, `call_id`, `attached`, ...) are fields of those structs.
//! An adapter's vendor-neutral fields go in between, and a field of the adapter's that names
//! one of the core's keys is left out (and logged): an adapter can never replace the id a
//! receiver deduplicates on or the call an event belongs to.
//!
//! An event's `data.seq` is the call's sequence number, known only inside the store's
//! transaction; the store writes the payload through [`WithSeq`], which puts it last.

use std::time::SystemTime;

use ivrgate_adapter::epoch::rfc3339;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// The keys of an event's `data` that the core sets, in the order they are written (`seq`
/// last, by the store); an adapter's fields never replace them.
pub const EVENT_KEYS: [&str; 9] = [
    "event_id",
    "tenant",
    "vendor",
    "call_id",
    "correlation",
    "attached",
    "received_at",
    "vendor_fields",
    "seq",
];

/// The keys of a decision's `data` that the core sets; an adapter's fields never replace them.
pub const DECISION_KEYS: [&str; 10] = [
    "decision_id",
    "tenant",
    "vendor",
    "kind",
    "call_id",
    "deadline_ms",
    "correlation",
    "attached",
    "previous_decision",
    "vendor_fields",
];

/// One webhook payload: `{"type": ..., "timestamp": ..., "data": {...}}`.
#[derive(Debug, Clone)]
pub struct Envelope<D> {
    /// The payload's `type`: `call.cdr`, `ptk.interaction.queued`, `decision.ivr_action`, ...
    pub kind: String,
    /// When it happened (the vendor's time when it gave a plausible one), written as RFC 3339.
    pub timestamp: SystemTime,
    pub data: D,
}

/// An event as it goes into the outbox.
pub type EventPayload = Envelope<EventData>;

/// The `data` of an event.
#[derive(Debug, Clone)]
pub enum EventData {
    /// An event an adapter reported ([`ivrgate_adapter::Gateway::record`], or a transition's
    /// [`ivrgate_adapter::EntityEvent`]).
    Reported(Reported),
    /// `call.expired`, sent by the core itself.
    Expired(Expired),
    /// A payload given whole, for the store's own tests (which need no particular shape).
    #[cfg(test)]
    Raw(Map<String, Value>),
}

/// `data` of an event an adapter reported.
#[derive(Debug, Clone)]
pub struct Reported {
    pub event_id: String,
    pub tenant: String,
    pub vendor: String,
    /// `null` when the vendor named no call.
    pub call_id: Option<String>,
    pub correlation: Map<String, Value>,
    pub attached: Map<String, Value>,
    /// The adapter's vendor-neutral fields. Those naming one of [`EVENT_KEYS`] are not
    /// written.
    pub fields: Map<String, Value>,
    pub received_at: SystemTime,
    pub vendor_fields: Map<String, Value>,
}

/// `data` of `call.expired`.
#[derive(Debug, Clone)]
pub struct Expired {
    pub event_id: String,
    pub tenant: String,
    pub vendor: String,
    pub call_id: String,
    /// Written as `correlation.vendor_call_id`.
    pub vendor_call_id: String,
    pub attached: Map<String, Value>,
    /// The call's stored state when it expired.
    pub last_state: Option<Value>,
    pub expired_at: SystemTime,
}

/// `data` of a decision, borrowed from the decision being asked (it is written once and sent
/// to the decision URL and perhaps the fallback URL).
#[derive(Debug, Clone, Copy)]
pub struct DecisionData<'a> {
    pub decision_id: &'a str,
    pub tenant: &'a str,
    pub vendor: &'a str,
    /// The decision point's kind (`ivr_action`, `routing_info`, ...).
    pub kind: &'a str,
    /// `None` when the request named no call (a pop-up lookup by number).
    pub call_id: Option<&'a str>,
    pub deadline_ms: u64,
    pub correlation: &'a Map<String, Value>,
    pub attached: &'a Map<String, Value>,
    /// The call's last decision record, or `null`.
    pub previous_decision: &'a Value,
    /// The adapter's vendor-neutral fields. Those naming one of [`DECISION_KEYS`] are not
    /// written.
    pub fields: &'a Map<String, Value>,
    pub vendor_fields: &'a Map<String, Value>,
}

/// What was answered at a call's latest decision (`decision_record` in `common.json`): kept in
/// the call's state as `last_decision`, so it is the next decision's `previous_decision` and
/// part of `call.expired`'s `last_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    pub decision_id: String,
    /// The decision point's kind.
    pub kind: &'static str,
    pub at: SystemTime,
    /// The answer's action kind, or `native`.
    pub answer: &'static str,
    /// `customer`, `fallback_url` or `fallback`.
    pub source: &'static str,
    pub fallback_reason: Option<&'static str>,
}

impl Serialize for DecisionRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("decision_id", &self.decision_id)?;
        map.serialize_entry("kind", self.kind)?;
        map.serialize_entry("at", &Time(self.at))?;
        map.serialize_entry("answer", self.answer)?;
        map.serialize_entry("source", self.source)?;
        map.serialize_entry("fallback_reason", &self.fallback_reason)?;
        map.end()
    }
}

impl DecisionRecord {
    /// The record as it goes into the call's state document.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Logs each of an adapter's fields that names a key the core sets (`keys`): the envelope
/// leaves it out, so this is an adapter's mistake, said once per payload built.
pub fn note_core_keys(fields: &Map<String, Value>, keys: &[&str], payload_type: &str) {
    for key in fields.keys().filter(|k| keys.contains(&k.as_str())) {
        tracing::warn!(
            key = %key, r#type = %payload_type,
            "adapter field names a key the core sets; left out of the payload"
        );
    }
}

/// A time written as RFC 3339 UTC with milliseconds.
struct Time(SystemTime);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&rfc3339(self.0))
    }
}

/// An adapter's fields without those naming a key of `reserved`, written into the map being
/// written.
fn write_fields<M: SerializeMap>(
    map: &mut M,
    fields: &Map<String, Value>,
    reserved: &[&str],
) -> Result<(), M::Error> {
    for (key, value) in fields {
        if !reserved.contains(&key.as_str()) {
            map.serialize_entry(key, value)?;
        }
    }
    Ok(())
}

fn write_envelope<S: Serializer, D: Serialize>(
    serializer: S,
    kind: &str,
    timestamp: SystemTime,
    data: &D,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(3))?;
    map.serialize_entry("type", kind)?;
    map.serialize_entry("timestamp", &Time(timestamp))?;
    map.serialize_entry("data", data)?;
    map.end()
}

impl Serialize for EventPayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WithSeq(self, None).serialize(serializer)
    }
}

/// An event payload as the store writes it: `data.seq` set to the call's sequence number,
/// after every other key, when the event belongs to a call.
pub struct WithSeq<'a>(pub &'a EventPayload, pub Option<i64>);

impl Serialize for WithSeq<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let WithSeq(payload, seq) = self;
        write_envelope(
            serializer,
            &payload.kind,
            payload.timestamp,
            &Sequenced(&payload.data, *seq),
        )
    }
}

struct Sequenced<'a>(&'a EventData, Option<i64>);

impl Serialize for Sequenced<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self.0 {
            EventData::Reported(d) => {
                map.serialize_entry("event_id", &d.event_id)?;
                map.serialize_entry("tenant", &d.tenant)?;
                map.serialize_entry("vendor", &d.vendor)?;
                map.serialize_entry("call_id", &d.call_id)?;
                map.serialize_entry("correlation", &d.correlation)?;
                map.serialize_entry("attached", &d.attached)?;
                write_fields(&mut map, &d.fields, &EVENT_KEYS)?;
                map.serialize_entry("received_at", &Time(d.received_at))?;
                map.serialize_entry("vendor_fields", &d.vendor_fields)?;
            }
            EventData::Expired(d) => {
                map.serialize_entry("event_id", &d.event_id)?;
                map.serialize_entry("tenant", &d.tenant)?;
                map.serialize_entry("vendor", &d.vendor)?;
                map.serialize_entry("call_id", &d.call_id)?;
                map.serialize_entry("correlation", &VendorCallId(&d.vendor_call_id))?;
                map.serialize_entry("attached", &d.attached)?;
                map.serialize_entry("last_state", &d.last_state)?;
                map.serialize_entry("expired_at", &Time(d.expired_at))?;
            }
            #[cfg(test)]
            EventData::Raw(data) => write_fields(&mut map, data, &["seq"])?,
        }
        if let Some(seq) = self.1 {
            map.serialize_entry("seq", &seq)?;
        }
        map.end()
    }
}

/// `{"vendor_call_id": ...}`, the correlation of `call.expired`.
struct VendorCallId<'a>(&'a str);

impl Serialize for VendorCallId<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("vendor_call_id", self.0)?;
        map.end()
    }
}

impl Serialize for Envelope<DecisionData<'_>> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        write_envelope(serializer, &self.kind, self.timestamp, &self.data)
    }
}

impl Serialize for DecisionData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("decision_id", self.decision_id)?;
        map.serialize_entry("tenant", self.tenant)?;
        map.serialize_entry("vendor", self.vendor)?;
        map.serialize_entry("kind", self.kind)?;
        map.serialize_entry("call_id", &self.call_id)?;
        map.serialize_entry("deadline_ms", &self.deadline_ms)?;
        map.serialize_entry("correlation", self.correlation)?;
        map.serialize_entry("attached", self.attached)?;
        map.serialize_entry("previous_decision", self.previous_decision)?;
        write_fields(&mut map, self.fields, &DECISION_KEYS)?;
        map.serialize_entry("vendor_fields", self.vendor_fields)?;
        map.end()
    }
}

impl EventPayload {
    /// A payload of the given `type` whose `data` is `data` as given (the store's tests).
    #[cfg(test)]
    pub fn raw(kind: &str, data: Value) -> EventPayload {
        Envelope {
            kind: kind.to_owned(),
            timestamp: std::time::UNIX_EPOCH,
            data: EventData::Raw(match data {
                Value::Object(map) => map,
                _ => Map::new(),
            }),
        }
    }

    /// The vendor's fields of a reported event, taken out (an expired call's payload has
    /// none): a retry of the unit of work builds its payload again without copying them.
    pub fn take_vendor_fields(&mut self) -> Map<String, Value> {
        match &mut self.data {
            EventData::Reported(d) => std::mem::take(&mut d.vendor_fields),
            _ => Map::new(),
        }
    }

    /// The vendor's fields of a reported event, copied.
    pub fn vendor_fields(&self) -> Map<String, Value> {
        match &self.data {
            EventData::Reported(d) => d.vendor_fields.clone(),
            _ => Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// The map the core built by hand before the envelope existed, key by key, for an
    /// adapter's fields that do not collide with the core's keys.
    fn reported(seq: Option<i64>) -> (EventPayload, Value) {
        let fields = map(json!({"from": "0501234567", "duration_s": 12, "price": 0.3}));
        let vendor =
            map(json!({"CALLER_ID": "0501234567", "DURATION": "12", "big": 15616841651u64}));
        let payload = Envelope {
            kind: "call.cdr".into(),
            timestamp: at(1_767_614_400_459),
            data: EventData::Reported(Reported {
                event_id: "msg_1".into(),
                tenant: "acme".into(),
                vendor: "voicenter".into(),
                call_id: Some("call_1".into()),
                correlation: map(json!({"IVR_UNIQUE_ID": "u1"})),
                attached: map(json!({"crm": "42"})),
                fields: fields.clone(),
                received_at: at(1_767_614_401_000),
                vendor_fields: vendor.clone(),
            }),
        };
        let mut data = Map::new();
        data.insert("event_id".into(), json!("msg_1"));
        data.insert("tenant".into(), json!("acme"));
        data.insert("vendor".into(), json!("voicenter"));
        data.insert("call_id".into(), json!("call_1"));
        data.insert("correlation".into(), json!({"IVR_UNIQUE_ID": "u1"}));
        data.insert("attached".into(), json!({"crm": "42"}));
        data.extend(fields);
        data.insert("received_at".into(), json!("2026-01-05T12:00:01Z"));
        data.insert("vendor_fields".into(), Value::Object(vendor));
        if let Some(seq) = seq {
            data.insert("seq".into(), json!(seq));
        }
        let hand =
            json!({"type": "call.cdr", "timestamp": "2026-01-05T12:00:00.459Z", "data": data});
        (payload, hand)
    }

    #[test]
    fn a_reported_event_is_written_as_the_hand_built_map_was() {
        for seq in [None, Some(7)] {
            let (payload, hand) = reported(seq);
            let bytes = serde_json::to_vec(&WithSeq(&payload, seq)).expect("encode");
            assert_eq!(
                bytes,
                serde_json::to_vec(&hand).expect("encode"),
                "seq {seq:?}"
            );
        }
    }

    #[test]
    fn an_adapters_field_never_replaces_a_core_key() {
        let (mut payload, hand) = reported(Some(3));
        if let EventData::Reported(d) = &mut payload.data {
            for key in EVENT_KEYS {
                d.fields.insert(key.into(), json!("from the adapter"));
            }
        }
        let bytes = serde_json::to_vec(&WithSeq(&payload, Some(3))).expect("encode");
        assert_eq!(bytes, serde_json::to_vec(&hand).expect("encode"));
    }

    #[test]
    fn call_expired_keeps_its_shape() {
        let payload = Envelope {
            kind: "call.expired".into(),
            timestamp: at(1_000),
            data: EventData::Expired(Expired {
                event_id: "msg_2".into(),
                tenant: "acme".into(),
                vendor: "voicenter".into(),
                call_id: "call_2".into(),
                vendor_call_id: "v2".into(),
                attached: Map::new(),
                last_state: Some(json!({"started_at": "1970-01-01T00:00:00Z", "decisions": 1})),
                expired_at: at(1_000),
            }),
        };
        let hand = json!({
            "type": "call.expired",
            "timestamp": "1970-01-01T00:00:01Z",
            "data": {
                "event_id": "msg_2",
                "tenant": "acme",
                "vendor": "voicenter",
                "call_id": "call_2",
                "correlation": {"vendor_call_id": "v2"},
                "attached": {},
                "last_state": {"started_at": "1970-01-01T00:00:00Z", "decisions": 1},
                "expired_at": "1970-01-01T00:00:01Z",
                "seq": 2,
            },
        });
        let bytes = serde_json::to_vec(&WithSeq(&payload, Some(2))).expect("encode");
        assert_eq!(bytes, serde_json::to_vec(&hand).expect("encode"));
    }

    #[test]
    fn a_decision_is_written_in_its_documented_order_without_colliding_fields() {
        let correlation = map(json!({"ivrid": "9"}));
        let attached = Map::new();
        let previous = Value::Null;
        let fields =
            map(json!({"from": "1", "decision_id": "dec_forged", "dtmf": "5", "kind": "x"}));
        let vendor = map(json!({"ivrid": "9", "DTMF": "5"}));
        let envelope = Envelope {
            kind: "decision.ivr_action".into(),
            timestamp: at(2_500),
            data: DecisionData {
                decision_id: "dec_1",
                tenant: "acme",
                vendor: "voicenter",
                kind: "ivr_action",
                call_id: None,
                deadline_ms: 1500,
                correlation: &correlation,
                attached: &attached,
                previous_decision: &previous,
                fields: &fields,
                vendor_fields: &vendor,
            },
        };
        let text = serde_json::to_string(&envelope).expect("encode");
        assert_eq!(
            text,
            concat!(
                r#"{"type":"decision.ivr_action","timestamp":"1970-01-01T00:00:02.5Z","data":{"#,
                r#""decision_id":"dec_1","tenant":"acme","vendor":"voicenter","kind":"ivr_action","#,
                r#""call_id":null,"deadline_ms":1500,"correlation":{"ivrid":"9"},"attached":{},"#,
                r#""previous_decision":null,"from":"1","dtmf":"5","#,
                r#""vendor_fields":{"ivrid":"9","DTMF":"5"}}}"#
            )
        );
    }

    #[test]
    fn a_decision_record_keeps_its_documented_shape() {
        let record = DecisionRecord {
            decision_id: "dec_1".into(),
            kind: "ivr_action",
            at: at(9_120),
            answer: "menu",
            source: "fallback",
            fallback_reason: Some("timeout"),
        };
        assert_eq!(
            record.to_value(),
            json!({"decision_id": "dec_1", "kind": "ivr_action", "at": "1970-01-01T00:00:09.12Z",
                   "answer": "menu", "source": "fallback", "fallback_reason": "timeout"})
        );
        let keys: Vec<String> = map(record.to_value()).keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "decision_id",
                "kind",
                "at",
                "answer",
                "source",
                "fallback_reason"
            ]
        );
        let answered = DecisionRecord {
            fallback_reason: None,
            ..record
        };
        assert_eq!(answered.to_value()["fallback_reason"], Value::Null);
    }

    #[test]
    fn vendor_fields_come_back_out_for_a_retry() {
        let (mut payload, _) = reported(None);
        assert_eq!(payload.vendor_fields().len(), 3);
        let taken = payload.take_vendor_fields();
        assert_eq!(taken.get("DURATION"), Some(&json!("12")));
        assert!(payload.vendor_fields().is_empty());
    }
}
