//! Turning an answer (neutral action or Voicenter-native object) into Voicenter's reply.
//!
//! The same functions validate and render, so an answer that passes a decision point's
//! `validate` always renders. Replies are built as JSON trees with the seed's field names and
//! types, then written as JSON or as an XML-RPC `methodResponse`.

use ivrgate_adapter::action::{Action, Envelope, Goto};
use ivrgate_adapter::Answer;
use std::borrow::Cow;

use ivrgate_wire::reply::Reply;
use serde_json::{json, Map, Value};

/// `CALL_MAX_DIAL` when a dial action gives no ring timeout: the seed documents the field as
/// mandatory but gives no default; 30 s is the usual PBX ring time.
pub const DEFAULT_RING_TIMEOUT_S: u32 = 30;
/// `CALL_MAX` / `MAX_CALL_DURATION` when a dial action gives no limit: one hour.
pub const DEFAULT_MAX_CALL_S: u32 = 3600;
/// `LANGUAGE` when the answer names none (the seed's examples are Hebrew).
pub const DEFAULT_LANGUAGE: &str = "he";
/// The record name the seed uses for "no prompt" in mandatory record fields.
const BLANK_RECORD: &str = "blank";

/// `{"STATUS": 1}`: Voicenter falls back to its own flow.
pub(crate) fn status(code: i64) -> Value {
    members([("STATUS", Value::from(code))])
}

/// An object of the seed's field names in the order given. Built directly rather than with
/// `json!`, which writes every value through serde's serializer: GET_IVR_ACTION replies are
/// rendered twice per decision (the core's validation, then the answer).
fn members<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut map = Map::with_capacity(N);
    for (name, value) in fields {
        map.insert(name.to_owned(), value);
    }
    Value::Object(map)
}

// ---------------------------------------------------------------------------------------------
// GET_IVR_ACTION
// ---------------------------------------------------------------------------------------------

const IVR_POSSIBLE: &str = "menu, say_digits, dial, goto, record, hangup, default";

/// The reply to GET_IVR_ACTION.
pub(crate) fn ivr_action(answer: &Answer) -> Result<Rendered<'_>, String> {
    match answer {
        Answer::Native(native) => native_ivr(native).map(Rendered::Tree),
        Answer::Action(envelope) => neutral_ivr(envelope),
    }
}

/// A reply as rendered. A neutral GET_IVR_ACTION answer (the one a call flow run by webhooks
/// gets at every step) is the seed's field names over the answer's own values, borrowed:
/// validating it, which the core does once per decision before the adapter renders it again,
/// copies nothing, and it is written in the request's encoding without a JSON tree.
#[derive(Debug)]
pub(crate) enum Rendered<'a> {
    /// `STATUS`, `ACTION`, `LANGUAGE`, `DATA` of a neutral answer.
    Reply(Reply<'a>),
    /// Every other reply.
    Tree(Value),
}

impl Rendered<'_> {
    /// The reply as JSON (tests).
    #[cfg(test)]
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Rendered::Reply(reply) => reply.to_json(),
            Rendered::Tree(tree) => tree.clone(),
        }
    }
}

fn text(text: &str) -> Reply<'_> {
    Reply::Str(Cow::Borrowed(text))
}

fn int(n: impl Into<i64>) -> Reply<'static> {
    Reply::Int(n.into())
}

type Fields<'a> = Vec<(&'static str, Reply<'a>)>;

fn put_text<'a>(fields: &mut Fields<'a>, name: &'static str, value: &'a Option<String>) {
    if let Some(value) = value {
        fields.push((name, text(value)));
    }
}

fn put_int<T: Copy + Into<i64>>(fields: &mut Fields<'_>, name: &'static str, value: &Option<T>) {
    if let Some(value) = value {
        fields.push((name, int(*value)));
    }
}

fn neutral_ivr(envelope: &Envelope) -> Result<Rendered<'_>, String> {
    let language = language(envelope.language.as_deref())?;
    let (action, data) = match &envelope.action {
        Action::Default {} => return Ok(Rendered::Tree(status(1))),
        Action::Menu {
            prompt,
            menu,
            repeat,
            pause_s,
            max_digits,
            validate,
        } => (
            "MENU",
            vec![
                ("REC", text(prompt)),
                ("LOOP", int(*repeat)),
                ("DELAY", int(*pause_s)),
                ("SIZE", int(*max_digits)),
                ("MENU", text(menu)),
                ("VALIDATION", int(u8::from(*validate))),
            ],
        ),
        Action::SayDigits {
            digits,
            digits_prompt,
            prompt,
            menu,
            repeat,
            pause_s,
            max_digits,
            validate,
            next,
            next_if_failed,
        } => {
            if next.is_some() || next_if_failed.is_some() {
                return Err(
                    "say_digits next/next_if_failed are for layer_input; GET_IVR_ACTION continues with the menu".into(),
                );
            }
            check_digits(digits)?;
            (
                "SAYDIGITS",
                vec![
                    ("REC", text(prompt.as_deref().unwrap_or(BLANK_RECORD))),
                    ("LOOP", int(*repeat)),
                    ("DELAY", int(*pause_s)),
                    ("SIZE", int(*max_digits)),
                    ("MENU", text(menu.as_deref().unwrap_or(""))),
                    ("VALIDATION", int(u8::from(*validate))),
                    (
                        "SAYDIGITSRECORD",
                        text(digits_prompt.as_deref().unwrap_or(BLANK_RECORD)),
                    ),
                    ("DIGITS", text(digits)),
                ],
            )
        }
        Action::Dial {
            targets,
            caller_id,
            caller_name,
            ring_timeout_s,
            max_duration_s,
            record,
            caller_prompt,
            target_prompt,
            music_class,
            dtmf_after_answer,
            dialstrings,
            on_failure,
            on_answer_next,
            on_unavailable_next,
        } => {
            if on_answer_next.is_some() || on_unavailable_next.is_some() {
                return Err(
                    "dial on_answer_next/on_unavailable_next are for layer_input only".into(),
                );
            }
            let [target] = targets.as_slice() else {
                return Err(format!(
                    "CALL dials exactly one target, got {}; use dialstrings for alternative routes",
                    targets.len()
                ));
            };
            if target.trim().is_empty() {
                return Err("dial target is empty".into());
            }
            let mut data = Vec::with_capacity(CALL_FIELDS.len());
            data.push(("TARGET", text(target.trim())));
            data.push(("CALLERID", text(caller_id.as_deref().unwrap_or(""))));
            data.push(("CALLERNAME", text(caller_name.as_deref().unwrap_or(""))));
            put_text(&mut data, "CALLER_REC", caller_prompt);
            put_text(&mut data, "MOH_CLASS", music_class);
            put_text(&mut data, "TARGET_REC", target_prompt);
            data.push((
                "CALL_MAX_DIAL",
                int(ring_timeout_s.unwrap_or(DEFAULT_RING_TIMEOUT_S)),
            ));
            data.push((
                "CALL_MAX",
                int(max_duration_s.unwrap_or(DEFAULT_MAX_CALL_S)),
            ));
            if let Some(Goto {
                target,
                prompt,
                repeat,
                max_digits,
                pause_s,
            }) = on_failure
            {
                data.push(("NEXT_MENU", text(target)));
                put_text(&mut data, "NEXT_MENU_RECORD", prompt);
                put_int(&mut data, "NEXT_MENU_LOOP", repeat);
                put_int(&mut data, "NEXT_MENU_SIZE", max_digits);
                put_int(&mut data, "NEXT_MENU_WAIT", pause_s);
            }
            data.push(("REC_STATUS", int(u8::from(*record))));
            put_text(&mut data, "DTMF_PLAY", dtmf_after_answer);
            if !dialstrings.is_empty() {
                data.push(("DIALSTRINGS", Reply::Strs(dialstrings)));
            }
            ("CALL", data)
        }
        Action::Goto {
            target,
            prompt,
            repeat,
            pause_s,
            caller_name,
        } => {
            if caller_name.is_some() {
                return Err("goto caller_name is for layer_input only".into());
            }
            (
                "VO",
                vec![
                    ("LAYER", int(layer_number("goto target", target)?)),
                    ("RECORD", text(prompt.as_deref().unwrap_or(BLANK_RECORD))),
                    ("LOOP", int(*repeat)),
                    ("DELAY", int(*pause_s)),
                ],
            )
        }
        Action::Record {
            prompt,
            max_duration_s,
        } => {
            let mut data = Vec::with_capacity(2);
            put_text(&mut data, "REC", prompt);
            put_int(&mut data, "MAXDURATION", max_duration_s);
            ("SILENTRECORD", data)
        }
        Action::Hangup { prompt, cause } => {
            let mut data = Vec::with_capacity(2);
            put_text(&mut data, "HANGUP_REC", prompt);
            put_int(&mut data, "HANGUP_CAUSE", cause);
            ("HANGUP", data)
        }
        other => {
            return Err(format!(
                "{} is not possible at GET_IVR_ACTION (possible: {IVR_POSSIBLE})",
                other.kind().as_str()
            ))
        }
    };
    Ok(Rendered::Reply(Reply::Fields(vec![
        ("STATUS", int(0)),
        ("ACTION", text(action)),
        ("LANGUAGE", Reply::Str(language)),
        ("DATA", Reply::Fields(data)),
    ])))
}

/// The native actions of GET_IVR_ACTION and their `DATA` fields (seed 003, section 5.1).
const MENU_FIELDS: &[Field] = &[
    Field::req("REC", Ty::Str),
    Field::req("LOOP", Ty::Int),
    Field::req("DELAY", Ty::Int),
    Field::req("SIZE", Ty::Int),
    Field::req("MENU", Ty::Str),
    Field::req("VALIDATION", Ty::Flag),
];
const SAYDIGITS_EXTRA: &[Field] = &[
    Field::req("SAYDIGITSRECORD", Ty::Str),
    Field::req("DIGITS", Ty::Str),
];
const CALL_FIELDS: &[Field] = &[
    Field::req("TARGET", Ty::Str),
    Field::req("CALLERID", Ty::Str),
    Field::req("CALLERNAME", Ty::Str),
    Field::opt("CALLER_REC", Ty::Str),
    Field::opt("MOH_CLASS", Ty::Str),
    Field::opt("TARGET_REC", Ty::Str),
    Field::req("CALL_MAX_DIAL", Ty::Int),
    Field::req("CALL_MAX", Ty::Int),
    Field::opt("NEXT_MENU", Ty::Str),
    Field::opt("NEXT_MENU_RECORD", Ty::Str),
    Field::opt("NEXT_MENU_LOOP", Ty::Int),
    Field::opt("NEXT_MENU_SIZE", Ty::Int),
    Field::opt("NEXT_MENU_WAIT", Ty::Int),
    Field::req("REC_STATUS", Ty::Flag),
    Field::opt("DTMF_PLAY", Ty::Str),
    Field::opt("DIALSTRINGS", Ty::StrList),
];
const VO_FIELDS: &[Field] = &[
    Field::req("LAYER", Ty::Int),
    Field::req("RECORD", Ty::Str),
    Field::req("LOOP", Ty::Int),
    Field::req("DELAY", Ty::Int),
];
const SILENTRECORD_FIELDS: &[Field] = &[
    Field::opt("REC", Ty::Str),
    Field::opt("MAXDURATION", Ty::Int),
];
const HANGUP_FIELDS: &[Field] = &[
    Field::opt("HANGUP_REC", Ty::Str),
    Field::opt("HANGUP_CAUSE", Ty::Int),
];

fn native_ivr(native: &Value) -> Result<Value, String> {
    let object = native_object(native)?;
    if native_status(&object)? == 1 {
        return Ok(status(1));
    }
    let action = native_action(&object)?;
    let specs: Vec<&[Field]> = match action.as_str() {
        "MENU" => vec![MENU_FIELDS],
        "SAYDIGITS" => vec![MENU_FIELDS, SAYDIGITS_EXTRA],
        "CALL" => vec![CALL_FIELDS],
        "VO" => vec![VO_FIELDS],
        "SILENTRECORD" => vec![SILENTRECORD_FIELDS],
        "HANGUP" => vec![HANGUP_FIELDS],
        other => {
            return Err(format!(
                "ACTION {other:?} is not one of MENU, CALL, HANGUP, SAYDIGITS, VO, SILENTRECORD"
            ))
        }
    };
    let data = match object.get("DATA") {
        Some(Value::Object(data)) => trim_keys(data),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err("DATA is not an object".into()),
    };
    let data = normalize(&action, data, &specs)?;
    if action == "SAYDIGITS" {
        if let Some(Value::String(digits)) = data.get("DIGITS") {
            check_digits(digits)?;
        }
    }
    let language = match object.get("LANGUAGE") {
        Some(Value::String(l)) => language_code(l)?,
        None | Some(Value::Null) => DEFAULT_LANGUAGE.to_owned(),
        Some(_) => return Err("LANGUAGE is not a string".into()),
    };
    Ok(members([
        ("STATUS", Value::from(0)),
        ("ACTION", Value::String(action)),
        ("LANGUAGE", Value::String(language)),
        ("DATA", Value::Object(data)),
    ]))
}

// ---------------------------------------------------------------------------------------------
// IVR_LAYER_INPUT
// ---------------------------------------------------------------------------------------------

const LAYER_POSSIBLE: &str = "goto, dial, say_digits, default";

/// The reply to IVR_LAYER_INPUT. `attached` is the call's data, returned as `CUSTOM_DATA`.
pub(crate) fn layer_input(answer: &Answer, attached: &Map<String, Value>) -> Result<Value, String> {
    match answer {
        Answer::Native(native) => native_layer(native, attached),
        Answer::Action(envelope) => neutral_layer(envelope, attached),
    }
}

fn neutral_layer(envelope: &Envelope, attached: &Map<String, Value>) -> Result<Value, String> {
    let custom_data = Value::Object(attached.clone());
    match &envelope.action {
        Action::Default {} => Ok(status(1)),
        Action::Goto {
            target,
            prompt,
            caller_name,
            ..
        } => {
            if prompt.is_some() {
                return Err("GO_TO_LAYER cannot play a prompt; the layer plays its own".into());
            }
            let mut reply = Map::new();
            reply.insert("STATUS".into(), json!(0));
            reply.insert("ACTION".into(), json!("GO_TO_LAYER"));
            reply.insert("LAYER".into(), json!(layer_number("goto target", target)?));
            put_opt(&mut reply, "CALLER_NAME", caller_name);
            reply.insert("CUSTOM_DATA".into(), custom_data);
            Ok(Value::Object(reply))
        }
        Action::Dial {
            targets,
            caller_id,
            caller_name,
            ring_timeout_s,
            max_duration_s,
            record,
            caller_prompt,
            target_prompt,
            music_class,
            dtmf_after_answer,
            dialstrings,
            on_failure,
            on_answer_next,
            on_unavailable_next,
        } => {
            let unsupported = [
                ("caller_prompt", caller_prompt.is_some()),
                ("target_prompt", target_prompt.is_some()),
                ("music_class", music_class.is_some()),
                ("dtmf_after_answer", dtmf_after_answer.is_some()),
                ("dialstrings", !dialstrings.is_empty()),
            ];
            if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
                return Err(format!("the layer DIAL has no {name}"));
            }
            if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
                return Err("dial needs at least one non-empty target".into());
            }
            let mut reply = Map::new();
            reply.insert("STATUS".into(), json!(0));
            reply.insert("ACTION".into(), json!("DIAL"));
            let targets: Vec<Value> = targets
                .iter()
                .map(|t| json!({ "TARGET": t.trim(), "TYPE": "PHONE" }))
                .collect();
            reply.insert("TARGETS".into(), Value::Array(targets));
            put_opt(&mut reply, "CALLER_ID", caller_id);
            put_opt(&mut reply, "CALLER_NAME", caller_name);
            reply.insert(
                "MAX_CALL_DURATION".into(),
                json!(max_duration_s.unwrap_or(DEFAULT_MAX_CALL_S)),
            );
            reply.insert(
                "MAX_DIAL_DURATION".into(),
                json!(ring_timeout_s.unwrap_or(DEFAULT_RING_TIMEOUT_S)),
            );
            reply.insert(
                "RECORDING".into(),
                json!(if *record { "yes" } else { "no" }),
            );
            if let Some(goto) = on_failure {
                if goto.prompt.is_some()
                    || goto.repeat.is_some()
                    || goto.max_digits.is_some()
                    || goto.pause_s.is_some()
                {
                    return Err("the layer DIAL's on_failure takes a layer number only".into());
                }
                reply.insert(
                    "NEXT_VO_ID".into(),
                    json!(layer_number("on_failure target", &goto.target)?),
                );
            }
            if let Some(next) = on_answer_next {
                reply.insert(
                    "ANSWER_NEXT_VO_ID".into(),
                    json!(layer_number("on_answer_next", next)?),
                );
            }
            if let Some(next) = on_unavailable_next {
                reply.insert(
                    "UNAVAILABLE_VO_ID".into(),
                    json!(layer_number("on_unavailable_next", next)?),
                );
            }
            reply.insert("CUSTOM_DATA".into(), custom_data);
            Ok(Value::Object(reply))
        }
        Action::SayDigits {
            digits,
            digits_prompt,
            prompt,
            menu,
            next,
            next_if_failed,
            ..
        } => {
            if prompt.is_some() || menu.is_some() {
                return Err(
                    "the layer SAY_DIGITS plays digits and goes on; it has no menu or prompt (use digits_prompt)".into(),
                );
            }
            check_digits(digits)?;
            let Some(next) = next else {
                return Err("say_digits at layer_input needs next (a layer number)".into());
            };
            let next = layer_number("say_digits next", next)?;
            let failed = match next_if_failed {
                Some(f) => layer_number("say_digits next_if_failed", f)?,
                None => next,
            };
            let mut items = Vec::new();
            if let Some(p) = digits_prompt {
                items.push(json!({ "RecordType": "Record", "Content": p }));
            }
            items.push(json!({ "RecordType": "Digits", "Content": digits }));
            let mut reply = Map::new();
            reply.insert("STATUS".into(), json!(0));
            reply.insert("ACTION".into(), json!("SAY_DIGITS"));
            reply.insert("NEXT_LAYER".into(), json!(next));
            reply.insert("NEXT_LAYER_IF_FAILED".into(), json!(failed));
            if envelope.language.is_some() {
                reply.insert(
                    "LANGUAGE".into(),
                    json!(language(envelope.language.as_deref())?),
                );
            }
            reply.insert("DATA".into(), Value::Array(items));
            Ok(Value::Object(reply))
        }
        other => Err(format!(
            "{} is not possible at IVR_LAYER_INPUT (possible: {LAYER_POSSIBLE})",
            other.kind().as_str()
        )),
    }
}

const GO_TO_LAYER_FIELDS: &[Field] = &[
    Field::req("LAYER", Ty::Int),
    Field::opt("CALLER_NAME", Ty::Str),
    Field::opt("CUSTOM_DATA", Ty::Custom),
];
const DIAL_FIELDS: &[Field] = &[
    Field::req("TARGETS", Ty::Targets),
    Field::opt("CALLER_ID", Ty::Str),
    Field::opt("CALLER_NAME", Ty::Str),
    Field::opt("MAX_CALL_DURATION", Ty::Int),
    Field::opt("MAX_DIAL_DURATION", Ty::Int),
    Field::opt("RECORDING", Ty::YesNo),
    Field::opt("NEXT_VO_ID", Ty::Int),
    Field::opt("ANSWER_NEXT_VO_ID", Ty::Int),
    Field::opt("UNAVAILABLE_VO_ID", Ty::Int),
    Field::opt("UNAVAILABLE_VO", Ty::Int),
    Field::opt("CUSTOM_DATA", Ty::Custom),
];
const SAY_DIGITS_FIELDS: &[Field] = &[
    Field::req("NEXT_LAYER", Ty::Int),
    Field::opt("NEXT_LAYER_IF_FAILED", Ty::Int),
    Field::req("DATA", Ty::List),
    Field::opt("CUSTOM_DATA", Ty::Custom),
];

fn native_layer(native: &Value, attached: &Map<String, Value>) -> Result<Value, String> {
    let object = native_object(native)?;
    if native_status(&object)? == 1 {
        return Ok(status(1));
    }
    let action = native_action(&object)?;
    let spec = match action.as_str() {
        "GO_TO_LAYER" => GO_TO_LAYER_FIELDS,
        "DIAL" => DIAL_FIELDS,
        "SAY_DIGITS" => SAY_DIGITS_FIELDS,
        other => {
            return Err(format!(
                "ACTION {other:?} is not one of GO_TO_LAYER, DIAL, SAY_DIGITS"
            ))
        }
    };
    let mut rest = object.clone();
    rest.remove("STATUS");
    rest.remove("ACTION");
    let language = rest.remove("LANGUAGE");
    let body = normalize(&action, rest, &[spec])?;
    let mut reply = Map::new();
    reply.insert("STATUS".into(), json!(0));
    reply.insert("ACTION".into(), json!(action));
    match language {
        Some(Value::String(l)) => {
            reply.insert("LANGUAGE".into(), json!(language_code(&l)?));
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err("LANGUAGE is not a string".into()),
    }
    reply.extend(body);
    // CUSTOM_DATA is kept and returned: the customer's own when given, else the call's.
    if action != "SAY_DIGITS" && !reply.contains_key("CUSTOM_DATA") {
        reply.insert("CUSTOM_DATA".into(), Value::Object(attached.clone()));
    }
    Ok(Value::Object(reply))
}

// ---------------------------------------------------------------------------------------------
// Pop-up lookup
// ---------------------------------------------------------------------------------------------

/// `STATUS` of a pop-up answer when the caller is unknown (the seed documents only `OK`).
pub const POPUP_NOT_FOUND: &str = "NOT_FOUND";
/// `STATUS` of a pop-up answer to a request ivrgate could not read.
pub const POPUP_ERROR: &str = "ERROR";

/// The pop-up answer with every field present.
pub(crate) fn popup(status: &str, url: &str, name: &str, total: &str, company: &str) -> Value {
    json!({ "STATUS": status, "URL": url, "CLIENTNAME": name, "TOTAL": total, "COMPANY": company })
}

/// The reply to a pop-up lookup.
pub(crate) fn caller_lookup(answer: &Answer) -> Result<Value, String> {
    match answer {
        Answer::Action(envelope) => match &envelope.action {
            Action::Default {} => Ok(popup(POPUP_NOT_FOUND, "", "", "0", "")),
            Action::LookupResult {
                found,
                url,
                name,
                total,
                company,
            } => {
                let total = total.unwrap_or(u32::from(*found)).to_string();
                Ok(popup(
                    if *found { "OK" } else { POPUP_NOT_FOUND },
                    url.as_deref().unwrap_or(""),
                    name.as_deref().unwrap_or(""),
                    &total,
                    company.as_deref().unwrap_or(""),
                ))
            }
            other => Err(format!(
                "{} is not possible at the pop-up lookup (possible: lookup_result, default)",
                other.kind().as_str()
            )),
        },
        Answer::Native(native) => {
            let object = native_object(native)?;
            let text = |name: &str, default: &str| -> Result<String, String> {
                match object.get(name) {
                    None | Some(Value::Null) => Ok(default.to_owned()),
                    Some(Value::String(s)) => Ok(s.trim().to_owned()),
                    Some(Value::Number(n)) => Ok(n.to_string()),
                    Some(_) => Err(format!("{name} is not a string")),
                }
            };
            let status = text("STATUS", "")?;
            if status.is_empty() {
                return Err("STATUS is missing".into());
            }
            let default_total = if status.eq_ignore_ascii_case("OK") {
                "1"
            } else {
                "0"
            };
            Ok(popup(
                &status,
                &text("URL", "")?,
                &text("CLIENTNAME", "")?,
                &text("TOTAL", default_total)?,
                &text("COMPANY", "")?,
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Native answers: shared checks and normalisation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// A string; numbers are accepted and written as strings, text is trimmed.
    Str,
    /// An integer; numeric strings are accepted and written as integers.
    Int,
    /// An integer 0 or 1.
    Flag,
    /// An array of strings (`DIALSTRINGS`), each trimmed.
    StrList,
    /// An array, passed through (`DATA` of SAY_DIGITS).
    List,
    /// `"yes"` / `"no"`; booleans and 0/1 accepted.
    YesNo,
    /// `TARGETS`: objects with `TARGET` (and `TYPE`, default `PHONE`); bare strings accepted.
    Targets,
    /// `CUSTOM_DATA`: an object (or the empty array PHP writes for an empty one), passed
    /// through as given.
    Custom,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
}

impl Field {
    const fn req(name: &'static str, ty: Ty) -> Field {
        Field {
            name,
            ty,
            required: true,
        }
    }
    const fn opt(name: &'static str, ty: Ty) -> Field {
        Field {
            name,
            ty,
            required: false,
        }
    }
}

/// The answer as an object with trimmed keys (the seed's `"LAYER "`).
fn native_object(native: &Value) -> Result<Map<String, Value>, String> {
    match native {
        Value::Object(object) => Ok(trim_keys(object)),
        _ => Err("native answer is not an object".into()),
    }
}

fn trim_keys(object: &Map<String, Value>) -> Map<String, Value> {
    object
        .iter()
        .map(|(k, v)| (k.trim().to_owned(), v.clone()))
        .collect()
}

/// `STATUS` 0 or 1, as an integer or a numeric string.
fn native_status(object: &Map<String, Value>) -> Result<i64, String> {
    let status = match object.get("STATUS") {
        None => return Err("STATUS is missing".into()),
        Some(value) => crate::fields::epoch_seconds(value),
    };
    match status {
        Some(s @ (0 | 1)) => Ok(s),
        _ => Err("STATUS must be 0 or 1".into()),
    }
}

/// `ACTION`, trimmed and upper-cased (the seed sends `" SAYDIGITS "`).
fn native_action(object: &Map<String, Value>) -> Result<String, String> {
    match object.get("ACTION") {
        Some(Value::String(a)) if !a.trim().is_empty() => Ok(a.trim().to_ascii_uppercase()),
        Some(_) => Err("ACTION is not a non-empty string".into()),
        None => Err("ACTION is missing while STATUS is 0".into()),
    }
}

/// Checks and normalises the fields of `specs`; other fields pass through unchanged.
fn normalize(
    action: &str,
    mut object: Map<String, Value>,
    specs: &[&[Field]],
) -> Result<Map<String, Value>, String> {
    for field in specs.iter().flat_map(|s| s.iter()) {
        match object.get(field.name) {
            None | Some(Value::Null) => {
                if field.required {
                    return Err(format!("{} is missing for ACTION {action}", field.name));
                }
                object.remove(field.name);
            }
            Some(value) => {
                let value = coerce(field, value)
                    .map_err(|why| format!("{} of ACTION {action} {why}", field.name))?;
                object.insert(field.name.to_owned(), value);
            }
        }
    }
    Ok(object)
}

fn coerce(field: &Field, value: &Value) -> Result<Value, &'static str> {
    let int = |v: &Value| crate::fields::epoch_seconds(v);
    match field.ty {
        Ty::Str => match value {
            Value::String(s) => Ok(Value::String(s.trim().to_owned())),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            _ => Err("must be a string"),
        },
        Ty::Int => int(value).map(Value::from).ok_or("must be an integer"),
        Ty::Flag => match int(value) {
            Some(n @ (0 | 1)) => Ok(Value::from(n)),
            _ => Err("must be 0 or 1"),
        },
        Ty::StrList => match value {
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(Value::String(s.trim().to_owned())),
                    _ => Err("must hold strings only"),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err("must be an array of strings"),
        },
        Ty::List => match value {
            Value::Array(_) => Ok(value.clone()),
            _ => Err("must be an array"),
        },
        Ty::YesNo => match value {
            Value::Bool(b) => Ok(json!(if *b { "yes" } else { "no" })),
            Value::String(s) if s.trim().eq_ignore_ascii_case("yes") => Ok(json!("yes")),
            Value::String(s) if s.trim().eq_ignore_ascii_case("no") => Ok(json!("no")),
            other => match int(other) {
                Some(1) => Ok(json!("yes")),
                Some(0) => Ok(json!("no")),
                _ => Err("must be \"yes\" or \"no\""),
            },
        },
        Ty::Targets => {
            let Value::Array(items) = value else {
                return Err("must be an array of targets");
            };
            if items.is_empty() {
                return Err("must name at least one target");
            }
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) if !s.trim().is_empty() => {
                        Ok(json!({ "TARGET": s.trim(), "TYPE": "PHONE" }))
                    }
                    Value::Object(target) => {
                        let mut target = trim_keys(target);
                        let number = match target.get("TARGET") {
                            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
                            Some(Value::Number(n)) => n.to_string(),
                            _ => return Err("needs a TARGET in every target"),
                        };
                        target.insert("TARGET".into(), json!(number));
                        let kind = match target.get("TYPE") {
                            Some(Value::String(t)) if !t.trim().is_empty() => {
                                t.trim().to_ascii_uppercase()
                            }
                            _ => "PHONE".to_owned(),
                        };
                        target.insert("TYPE".into(), json!(kind));
                        Ok(Value::Object(target))
                    }
                    _ => Err("must hold target objects"),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Ty::Custom => match value {
            Value::Object(_) => Ok(value.clone()),
            Value::Array(items) if items.is_empty() => Ok(json!({})),
            _ => Err("must be an object of key/value pairs"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Small shared checks
// ---------------------------------------------------------------------------------------------

fn language(requested: Option<&str>) -> Result<Cow<'static, str>, String> {
    match requested {
        None => Ok(Cow::Borrowed(DEFAULT_LANGUAGE)),
        Some(l) => language_code(l).map(Cow::Owned),
    }
}

/// A language code, lower-cased (`he`, `en`; the seed also writes `HE`).
fn language_code(raw: &str) -> Result<String, String> {
    let code = raw.trim().to_ascii_lowercase();
    if (2..=8).contains(&code.len()) && code.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        Ok(code)
    } else {
        Err(format!(
            "LANGUAGE {raw:?} is not a language code such as he or en"
        ))
    }
}

/// A layer number given as text (`goto` targets are strings in the neutral vocabulary).
fn layer_number(what: &str, target: &str) -> Result<i64, String> {
    target
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("{what} must be an integer layer number, got {target:?}"))
}

/// Voicenter reads digits only ("any characters other than numbers will be ignored").
fn check_digits(digits: &str) -> Result<(), String> {
    if digits.chars().any(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err("say_digits digits hold no digit".into())
    }
}

fn put_opt<T: Clone + Into<Value>>(map: &mut Map<String, Value>, name: &str, value: &Option<T>) {
    if let Some(v) = value {
        map.insert(name.to_owned(), v.clone().into());
    }
}
