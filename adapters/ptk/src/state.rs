//! What the PTK keeps in the core's entities, as typed documents: an interaction (kind `ptk`),
//! its PTK tenant's licence counter (`ptk.licence`) and an appointment slot's bookings
//! (`ptk.slot`).
//!
//! The JSON shapes are the ones earlier releases wrote (field names, enum spellings, the
//! tagged UserData values, key order), so their states load and a state written now reads
//! back in an earlier release (`tests/fixtures/ptk/state/`). A document that does not read as
//! its type is never taken for an ended interaction or an empty counter: it is
//! [`Stored::Unreadable`], which the methods answer with 109000 and leave untouched.

use indexmap::IndexMap;
use ivrgate_adapter::Entity;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

    /// A callback not yet answered: pending or due.
    pub fn is_pending_callback(self) -> bool {
        matches!(self, Status::CallbackPending | Status::CallbackDue)
    }
}

/// The seed's `InteractionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InteractionType {
    /// An ASAP callback ("first available").
    #[serde(rename = "FIFO")]
    Fifo,
    /// A scheduled callback.
    Appointment,
    /// A call in inbound treatment (CreateInteraction, InteractionQueued).
    Inbound,
}

impl InteractionType {
    pub fn as_str(self) -> &'static str {
        match self {
            InteractionType::Fifo => "FIFO",
            InteractionType::Appointment => "Appointment",
            InteractionType::Inbound => "Inbound",
        }
    }
}

/// The licence an interaction took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Licence {
    /// CreateInteraction's: held during the inbound treatment, released by the next report
    /// that moves the interaction on (the seed).
    Voice,
    /// AddInteraction's: held until the callback ends.
    Callback,
}

/// UserData: keys in the order they were given.
pub type UserData = IndexMap<String, UserValue>;

/// One UserData value, stored as `{"string": ..}`, `{"integer": n}`, `{"binary": "HEX"}` or
/// `{"list": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserValue {
    String(String),
    Integer(i64),
    /// Upper-case hexadecimal.
    Binary(String),
    List(UserData),
}

/// A live interaction, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub id: String,
    /// The PTK tenant.
    pub tenant: String,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub contact: Option<String>,
    pub interaction_type: InteractionType,
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
    pub user_data: UserData,
    #[serde(default)]
    pub licence: Option<Licence>,
    /// When a report last moved it (UTC text); the idle timer compares against it.
    #[serde(default)]
    pub touched: Option<String>,
    /// Failed outbound attempts per reason.
    #[serde(default)]
    pub failures: IndexMap<String, u64>,
}

impl Interaction {
    /// A new interaction in inbound treatment, created at `created` (UTC text).
    pub fn new(id: &str, tenant: &str, created: String) -> Interaction {
        Interaction {
            id: id.to_owned(),
            tenant: tenant.to_owned(),
            segment: None,
            queue: None,
            contact: None,
            interaction_type: InteractionType::Inbound,
            status: Status::Inbound,
            appointment: None,
            slot: None,
            external_id: None,
            client_id: None,
            source_application: None,
            skill: None,
            attempts: 0,
            result: None,
            due: None,
            created,
            user_data: UserData::new(),
            licence: None,
            touched: None,
            failures: IndexMap::new(),
        }
    }

    /// Whether it holds one of its PTK tenant's licences now.
    pub fn holds_licence(&self) -> bool {
        match self.licence {
            Some(Licence::Voice) => self.status == Status::Inbound,
            Some(Licence::Callback) => true,
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
            fields.insert("user_data".into(), user_data_into_json(user_data));
        }
        state
    }
}

/// UserData as its stored JSON, moving the strings rather than copying them.
pub fn user_data_into_json(data: UserData) -> Value {
    let mut out = Map::with_capacity(data.len());
    for (key, value) in data {
        let (tag, inner) = match value {
            UserValue::String(s) => ("string", Value::String(s)),
            UserValue::Integer(n) => ("integer", Value::from(n)),
            UserValue::Binary(b) => ("binary", Value::String(b)),
            UserValue::List(list) => ("list", user_data_into_json(list)),
        };
        let mut one = Map::with_capacity(1);
        one.insert(tag.into(), inner);
        out.insert(key, Value::Object(one));
    }
    Value::Object(out)
}

/// A PTK tenant's licence counters (`ptk.licence`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LicenceCounter {
    /// Epoch seconds the quota window started.
    pub window_start: u64,
    /// AddInteraction/CreateInteraction requests in the window (109035).
    pub count: u64,
    /// Licences in use (109005).
    pub live: u64,
}

/// One appointment slot's bookings (`ptk.slot`); ended when none are left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlotBookings {
    pub count: u64,
}

/// What an interaction's entity holds.
// Read once per transition and dropped: boxing the interaction would only cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// No entity under this id.
    Absent,
    /// The interaction ended (its id stays known for the retention period).
    Ended,
    Live(Interaction),
    /// A live state that does not read as an interaction: never taken for an ended one.
    Unreadable(String),
}

impl Stored {
    /// Reads the stored state in place: a clone of it first would hold its UserData twice.
    pub fn read(entity: Option<&Entity>) -> Stored {
        match entity {
            None => Stored::Absent,
            Some(e) => match &e.state {
                None => Stored::Ended,
                Some(state) => match Interaction::deserialize(state) {
                    Ok(i) => Stored::Live(i),
                    Err(why) => Stored::Unreadable(why.to_string()),
                },
            },
        }
    }

    /// The live interaction, if that is what is stored.
    pub fn live(&self) -> Option<&Interaction> {
        match self {
            Stored::Live(i) => Some(i),
            _ => None,
        }
    }

    pub fn into_live(self) -> Option<Interaction> {
        match self {
            Stored::Live(i) => Some(i),
            _ => None,
        }
    }
}

/// A counter entity (licence, slot): absent or ended reads as the default; a state that does
/// not read as `T` is an error naming why.
pub fn read_counter<T>(entity: Option<&Entity>) -> Result<T, String>
where
    T: Default + for<'de> Deserialize<'de>,
{
    match entity.and_then(|e| e.state.as_ref()) {
        None => Ok(T::default()),
        Some(state) => T::deserialize(state).map_err(|why| {
            let kind = entity.map(|e| e.key.kind.as_str()).unwrap_or("");
            format!("{kind} state unreadable: {why}")
        }),
    }
}

/// The state to store for a counter.
pub fn counter_state<T: Serialize>(counter: &T) -> Value {
    serde_json::to_value(counter).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivrgate_adapter::EntityKey;
    use serde_json::json;

    fn entity(kind: &str, state: Option<Value>) -> Entity {
        Entity {
            key: EntityKey::new("acme", kind, "x"),
            entity_id: "call_1".into(),
            version: 1,
            status: if state.is_some() { "active" } else { "ended" }.into(),
            state,
            attached: Map::new(),
            expires_at: None,
        }
    }

    /// The documents as the release before the typed model wrote them.
    fn captured() -> Vec<(String, Value)> {
        let text = include_str!("../../../tests/fixtures/ptk/state/previous_release.json");
        let doc: Value = serde_json::from_str(text).expect("fixture");
        let mut out = Vec::new();
        for e in doc["entities"].as_array().expect("entities") {
            out.push((
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["state"].clone(),
            ));
        }
        for r in doc["behaviour"]["reports"].as_array().expect("reports") {
            out.push(("ptk".into(), r["state"].clone()));
            out.push(("ptk.licence".into(), r["licence"].clone()));
        }
        out
    }

    #[test]
    fn states_written_by_the_previous_release_read_and_write_back_unchanged() {
        let mut seen = (0, 0, 0, 0);
        for (kind, state) in captured() {
            if state.is_null() {
                let read = Stored::read(Some(&entity(&kind, None)));
                assert_eq!(read, Stored::Ended);
                seen.3 += 1;
                continue;
            }
            // Same text, keys in the same order: an earlier release reads what is written now.
            let written = match kind.as_str() {
                "ptk" => {
                    seen.0 += 1;
                    let Stored::Live(i) = Stored::read(Some(&entity(&kind, Some(state.clone()))))
                    else {
                        panic!("not read: {state}")
                    };
                    i.into_state()
                }
                "ptk.licence" => {
                    seen.1 += 1;
                    let e = entity(&kind, Some(state.clone()));
                    counter_state(&read_counter::<LicenceCounter>(Some(&e)).expect("licence"))
                }
                "ptk.slot" => {
                    seen.2 += 1;
                    let e = entity(&kind, Some(state.clone()));
                    counter_state(&read_counter::<SlotBookings>(Some(&e)).expect("slot"))
                }
                other => panic!("unexpected kind {other}"),
            };
            assert_eq!(written.to_string(), state.to_string());
        }
        assert!(
            seen.0 >= 6 && seen.1 >= 2 && seen.2 >= 1 && seen.3 >= 1,
            "{seen:?}"
        );
    }

    #[test]
    fn a_state_that_does_not_read_is_unreadable_never_ended() {
        for state in [
            json!({"id": 1}),
            json!("text"),
            json!({"id": "V1", "tenant": "T", "interaction_type": "Fax", "status": "Inbound", "created": "x"}),
            json!({"id": "V1", "tenant": "T", "interaction_type": "FIFO", "status": "Inbound", "created": "x",
                   "user_data": {"k": {"float": 1.5}}}),
        ] {
            let read = Stored::read(Some(&entity("ptk", Some(state.clone()))));
            assert!(matches!(read, Stored::Unreadable(_)), "{state}: {read:?}");
        }
        assert_eq!(Stored::read(None), Stored::Absent);
        let bad = entity("ptk.licence", Some(json!({"live": "many"})));
        let why = read_counter::<LicenceCounter>(Some(&bad)).expect_err("unreadable");
        assert!(why.contains("ptk.licence"), "{why}");
        assert_eq!(
            read_counter::<LicenceCounter>(None),
            Ok(LicenceCounter::default())
        );
    }

    #[test]
    fn user_data_is_a_tagged_union() {
        let data: UserData = serde_json::from_value(json!({
            "s": {"string": "x"}, "i": {"integer": 7}, "b": {"binary": "0AFF"},
            "l": {"list": {"n": {"string": "plain"}}}
        }))
        .expect("reads");
        assert_eq!(data["i"], UserValue::Integer(7));
        let UserValue::List(inner) = &data["l"] else {
            panic!("a list")
        };
        assert_eq!(inner["n"], UserValue::String("plain".into()));
        assert_eq!(
            serde_json::to_value(&data).expect("json"),
            user_data_into_json(data)
        );
    }
}
