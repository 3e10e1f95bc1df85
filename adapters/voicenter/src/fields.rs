//! From Voicenter's fields to the call reference and the vendor-neutral `data`.

use crate::request::{get, get_entry, same_name, Method};
use ivrgate_adapter::epoch::{plausible_epoch, time_field};
use ivrgate_adapter::CallRef;
use serde_json::{Map, Value};
use std::time::SystemTime;

/// Field names that carry the id of the call itself, in order of preference.
/// `ivrunique-id` is the spelling of the seed's CDR table example column.
const CALL_ID_FIELDS: [&str; 5] = [
    "IVR_UNIQUE_ID",
    "ivruniqueid",
    "ivrid",
    "CALLID",
    "ivrunique-id",
];

/// Field names that carry the id of a related call (the origin of a transfer).
const RELATED_ID_FIELDS: [&str; 1] = ["OriginalIvrUniqueID"];

/// An id with all whitespace removed: the seed's XML example breaks an `IVR_UNIQUE_ID`
/// across a line inside `<string>`, and Voicenter ids never contain whitespace.
pub(crate) fn clean_id(value: &Value) -> Option<String> {
    let text = match value {
        // an id without whitespace, as most are, is copied whole
        Value::String(s) if s.bytes().all(|b| b.is_ascii_graphic()) => s.clone(),
        Value::String(s) => {
            let mut id = String::with_capacity(s.len());
            s.split(char::is_whitespace)
                .for_each(|part| id.push_str(part));
            id
        }
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// The call reference: the call's own id keys the call; every id seen goes to `correlation`
/// under the name it was sent with.
pub(crate) fn call_ref(fields: &Map<String, Value>) -> CallRef {
    let mut call = CallRef::default();
    for (key, value) in fields {
        let known = CALL_ID_FIELDS
            .iter()
            .chain(RELATED_ID_FIELDS.iter())
            .any(|k| same_name(key, k));
        if known {
            if let Some(id) = clean_id(value) {
                call.correlation.insert(key.clone(), Value::String(id));
            }
        }
    }
    // the id under the first of the names sent, as cleaned above (a field the loop left out
    // has no id)
    call.vendor_call_id = CALL_ID_FIELDS.iter().find_map(|name| {
        let (key, _) = get_entry(fields, name)?;
        call.correlation
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    call
}

/// The vendor-neutral fields of a request, and when the call happened if the vendor said so
/// plausibly.
pub(crate) fn neutral(
    method: Method,
    fields: &Map<String, Value>,
    now: SystemTime,
) -> (Map<String, Value>, Option<SystemTime>) {
    // room for the fields a request usually maps to, so the map is not grown on the way
    let mut data = Map::with_capacity(16);
    let first = |names: &[&str]| names.iter().find_map(|n| get(fields, n));

    let from_names: &[&str] = if method == Method::Popup {
        &["phone", "CALLER_ID", "caller"]
    } else {
        &["CALLER_ID", "caller"]
    };
    put_str(&mut data, "from", first(from_names));
    // `to` is the number the caller dialled; a CDR of an outgoing call has no DID, so the
    // destination stands in for it.
    let did = first(&["DID", "did"]).filter(|v| !is_blank(v));
    let target = first(&["TARGET", "target"]);
    put_str(
        &mut data,
        "to",
        did.or_else(|| target.filter(|v| !is_blank(v))),
    );
    put_str(&mut data, "target", target);
    put_str(&mut data, "caller_name", first(&["CALLER_NAME"]));
    put_str(&mut data, "dtmf", first(&["DTMF"]));
    put_str(&mut data, "menu", first(&["MENU"]));
    put_str(&mut data, "previous_menu", first(&["PREVIOUS_MENU"]));
    put_int(&mut data, "layer_id", first(&["LAYER_ID"]));
    put_int(
        &mut data,
        "previous_layer_id",
        first(&["PREVIOUS_LAYER_ID"]),
    );
    if let Some(status) = first(&["CALL_STATUS", "status", "statusCall"]) {
        if let Some(s) = scalar_text(status) {
            data.insert("status".into(), Value::String(neutral_status(&s)));
        }
    }
    put_int(
        &mut data,
        "duration_s",
        first(&["CALL_DURATION", "duration"]),
    );
    put_int(
        &mut data,
        "dial_time_s",
        first(&["CALL_DAILTIME", "dialtime"]),
    );

    let time = first(&["time", "CALL_TIME_EPOCH"]);
    let start = first(&["CALL_START_EPOCH"]);
    let mut occurred_at = None;
    for (name, raw) in [("time", time), ("start_time", start)] {
        if let Some(raw) = raw {
            data.insert(name.into(), time_field(raw, now));
            if occurred_at.is_none() {
                occurred_at = epoch_seconds(raw).and_then(|s| plausible_epoch(s, now));
            }
        }
    }

    put_str(&mut data, "call_type", first(&["type"]));
    put_str(&mut data, "direction", first(&["direction"]));
    if let Some(url) = first(&["record"]).and_then(scalar_text) {
        let url: String = url.chars().filter(|c| !c.is_whitespace()).collect();
        data.insert("recording_url".into(), Value::String(url));
    }
    put_int(&mut data, "queue_id", first(&["queueid"]));
    put_str(&mut data, "queue_name", first(&["queuename"]));
    if let Some(price) = first(&["price"]) {
        if let Some(n) = number(price) {
            data.insert("price".into(), n);
        }
    }
    if let Some(ivr) = first(&["IVR"]) {
        data.insert("ivr".into(), embedded_json(ivr.clone()));
    }
    if let Some(custom) = first(&["CUSTOM_DATA"]) {
        data.insert("custom_data".into(), embedded_json(custom.clone()));
    }
    (data, occurred_at)
}

/// `ANSWER` (CDR) and `ANSWERED` (HANGUP_CALL) both mean `answered`; other statuses are
/// lower-cased (`busy`, `noanswer`, `cancel`, ...).
fn neutral_status(raw: &str) -> String {
    let status = raw.trim().to_ascii_lowercase();
    match status.as_str() {
        "answer" | "answered" => "answered".into(),
        _ => status,
    }
}

/// A value that may be JSON inside a string (`IVR`, `CUSTOM_DATA`): parsed when it is, kept
/// as given otherwise.
fn embedded_json(value: Value) -> Value {
    if let Value::String(s) = &value {
        let trimmed = s.trim();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            if let Ok(parsed) =
                ivrgate_wire::json::parse_lenient(trimmed, &ivrgate_wire::Limits::default())
            {
                return parsed;
            }
        }
    }
    value
}

fn is_blank(value: &Value) -> bool {
    match value {
        Value::String(s) => s.trim().is_empty(),
        Value::Null => true,
        _ => false,
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn put_str(data: &mut Map<String, Value>, name: &str, value: Option<&Value>) {
    if let Some(text) = value.and_then(scalar_text) {
        data.insert(name.into(), Value::String(text));
    }
}

/// An integer field, sent as a number or a numeric string, of any size: its digits are kept
/// (`999999999999999999999999999999` stays that, never a rounded float or a dropped field).
fn put_int(data: &mut Map<String, Value>, name: &str, value: Option<&Value>) {
    if let Some(n) = value.and_then(integer) {
        data.insert(name.into(), Value::Number(n));
    }
}

/// An integer of any size sent as a number or as a numeric string (`+7` and `007` read as 7).
fn integer(value: &Value) -> Option<serde_json::Number> {
    let n = match value {
        Value::Number(n) => n.clone(),
        Value::String(s) => ivrgate_wire::json::number(s)?,
        _ => return None,
    };
    let text = n.to_string();
    let digits = text.strip_prefix('-').unwrap_or(&text);
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(n)
}

/// An integer sent as a number or as a numeric string.
pub(crate) fn epoch_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A number sent as a number or as a numeric string (`price` may be a float), with its
/// digits as sent (`0.10` stays `0.10`).
fn number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(_) => Some(value.clone()),
        Value::String(s) => ivrgate_wire::json::number(s).map(Value::Number),
        _ => None,
    }
}
