//! Voicenter's side of a call, as its servers play it against "the client's server": the
//! External IVR (`GET_IVR_ACTION` with the menu and the digits pressed), the External Layer
//! IVR (`IVR_LAYER_INPUT` once a `VO`/`GO_TO_LAYER` took the call to a layer), the hangup
//! report (`HANGUP_CALL`) and the CDR notification (on `/cdr`), in JSON or XML-RPC (seed 003).
//! Each reply is read as Voicenter reads it and followed.

use ivrgate_wire::xmlrpc;
use serde_json::{json, Map, Value};

use super::{Encoding, Reply, Sim, TransferOutcome};

/// Seconds an IVR step takes in the reported times (a prompt and a key press).
const STEP_S: i64 = 5;

/// Where the call is waiting for the customer's server next.
enum Ask {
    /// `GET_IVR_ACTION` for `menu` (`-1` at the start), with the digits pressed.
    Ivr {
        menu: String,
        previous: String,
        dtmf: String,
    },
    /// `IVR_LAYER_INPUT` from `layer`.
    Layer {
        layer: i64,
        previous: i64,
        dtmf: String,
    },
}

/// How the call ended, for HANGUP_CALL and the CDR.
struct End {
    /// HANGUP_CALL's `CALL_STATUS`.
    hangup_status: &'static str,
    /// The CDR's `status`.
    cdr_status: &'static str,
    target: String,
    dial_s: i64,
    talk_s: i64,
}

impl End {
    fn in_ivr(status: &'static str) -> End {
        End {
            hangup_status: status,
            cdr_status: status,
            target: String::new(),
            dial_s: 0,
            talk_s: 0,
        }
    }
}

/// What a dial leads to.
enum Dialed {
    Ended(End),
    /// The dial failed and the reply named where the call goes then.
    Next(Ask),
}

/// Plays one call to its end; `Err` when the gateway could not be reached or answered
/// something Voicenter could not read.
pub async fn play(sim: &mut Sim<'_>) -> Result<(), String> {
    // Set by the simulator before anything was recorded; a replay reuses both.
    let call_id = sim
        .scenario
        .call_id
        .clone()
        .unwrap_or_else(|| super::hex_id(32));
    let start = sim.scenario.start_epoch.unwrap_or_else(super::now_epoch);
    let mut next = Ask::Ivr {
        menu: "-1".into(),
        previous: "-1".into(),
        dtmf: String::new(),
    };
    sim.step(&format!(
        "an incoming call {call_id} from {} to {} reaches the External IVR",
        sim.scenario.caller, sim.scenario.called
    ));
    let end = loop {
        if !sim.may_decide() {
            break End::in_ivr("VOEND");
        }
        let result = match next {
            Ask::Ivr {
                menu,
                previous,
                dtmf,
            } => ivr_action(sim, &call_id, &menu, &previous, &dtmf).await?,
            Ask::Layer {
                layer,
                previous,
                dtmf,
            } => layer_input(sim, &call_id, layer, previous, &dtmf).await?,
        };
        match result {
            Flow::Next(ask) => next = ask,
            Flow::End(end) => break end,
        }
    };
    report(sim, &call_id, start, end).await
}

enum Flow {
    Next(Ask),
    End(End),
}

/// `GET_IVR_ACTION` and what Voicenter does with the reply.
async fn ivr_action(
    sim: &mut Sim<'_>,
    call_id: &str,
    menu: &str,
    previous: &str,
    dtmf: &str,
) -> Result<Flow, String> {
    let mut fields = Map::new();
    fields.insert("DID".into(), json!(sim.scenario.called));
    fields.insert("CALLER_ID".into(), json!(sim.scenario.caller));
    fields.insert(
        "CALLER_NAME".into(),
        json!(sim
            .scenario
            .caller_name
            .clone()
            .unwrap_or_else(|| sim.scenario.caller.clone())),
    );
    fields.insert("IVR_UNIQUE_ID".into(), json!(call_id));
    fields.insert("DTMF".into(), json!(dtmf));
    fields.insert("MENU".into(), json!(menu));
    fields.insert("PREVIOUS_MENU".into(), json!(previous));
    let label = format!("GET_IVR_ACTION (MENU {menu}, DTMF {dtmf:?})");
    let reply = send(sim, &label, "GET_IVR_ACTION", "", fields).await?;
    let reply = read(sim.scenario.encoding, &reply)?;
    let status = int(&reply, "STATUS");
    if status != Some(0) {
        sim.step("STATUS 1: Voicenter leaves the External IVR and goes on with the number's own call flow; the simulated caller hangs up there");
        return Ok(Flow::End(End::in_ivr("VOEND")));
    }
    let action = text(&reply, "ACTION").trim().to_ascii_uppercase();
    let data = reply
        .get("DATA")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let language = text(&reply, "LANGUAGE");
    match action.as_str() {
        "MENU" | "SAYDIGITS" => {
            if action == "SAYDIGITS" {
                sim.step(&format!(
                    "plays {:?}, then reads the digits {} ({language})",
                    text(&data, "SAYDIGITSRECORD"),
                    text(&data, "DIGITS")
                ));
            }
            let next_menu = text(&data, "MENU");
            sim.step(&format!(
                "plays {:?} {} time(s), {} s apart ({language}); waits for up to {} digit(s) for menu {next_menu:?}{}",
                text(&data, "REC"),
                text(&data, "LOOP"),
                text(&data, "DELAY"),
                text(&data, "SIZE"),
                if int(&data, "VALIDATION") == Some(1) { ", validating the input" } else { "" }
            ));
            let key = sim.press().await;
            Ok(Flow::Next(Ask::Ivr {
                menu: next_menu,
                previous: menu.to_owned(),
                dtmf: key,
            }))
        }
        "CALL" => {
            let target = text(&data, "TARGET");
            sim.step(&format!(
                "dials {target} as {:?} {:?}, ringing up to {} s, the call lasting at most {} s, recording {}{}",
                text(&data, "CALLERID"),
                text(&data, "CALLERNAME"),
                text(&data, "CALL_MAX_DIAL"),
                text(&data, "CALL_MAX"),
                if int(&data, "REC_STATUS") == Some(1) { "on" } else { "off" },
                match data.get("DIALSTRINGS") {
                    Some(v) => format!(", dial strings {v}"),
                    None => String::new(),
                }
            ));
            let next_menu = data
                .get("NEXT_MENU")
                .map(|_| text(&data, "NEXT_MENU"))
                .filter(|m| !m.is_empty());
            match dial(sim, target, next_menu.map(Where::Menu)).await {
                Dialed::Ended(end) => Ok(Flow::End(end)),
                Dialed::Next(Ask::Ivr { menu: m, .. }) => {
                    let key = sim.press().await;
                    Ok(Flow::Next(Ask::Ivr {
                        menu: m,
                        previous: menu.to_owned(),
                        dtmf: key,
                    }))
                }
                Dialed::Next(other) => Ok(Flow::Next(other)),
            }
        }
        "VO" => {
            let layer = int(&data, "LAYER").unwrap_or(0);
            sim.step(&format!(
                "goes to layer {layer}, playing {:?} {} time(s); the layer is taken to be an External Layer IVR pointing at ivrgate",
                text(&data, "RECORD"),
                text(&data, "LOOP")
            ));
            let key = sim.press().await;
            Ok(Flow::Next(Ask::Layer {
                layer,
                previous: 0,
                dtmf: key,
            }))
        }
        "SILENTRECORD" => {
            sim.step(&format!(
                "answers and records the caller after {:?}, for at most {} s",
                text(&data, "REC"),
                text(&data, "MAXDURATION")
            ));
            sim.caller("speaks, then hangs up");
            Ok(Flow::End(End::in_ivr("VOEND")))
        }
        "HANGUP" => {
            sim.step(&format!(
                "plays {:?} and hangs up (cause {})",
                text(&data, "HANGUP_REC"),
                text(&data, "HANGUP_CAUSE")
            ));
            Ok(Flow::End(End::in_ivr("TE")))
        }
        other => Err(format!(
            "Voicenter cannot carry out ACTION {other:?} from ivrgate's reply"
        )),
    }
}

/// `IVR_LAYER_INPUT` and what Voicenter does with the reply.
async fn layer_input(
    sim: &mut Sim<'_>,
    call_id: &str,
    layer: i64,
    previous: i64,
    dtmf: &str,
) -> Result<Flow, String> {
    let mut fields = Map::new();
    fields.insert("DID".into(), json!(sim.scenario.called));
    fields.insert("CALLER_ID".into(), json!(sim.scenario.caller));
    fields.insert("IVR_UNIQUE_ID".into(), json!(call_id));
    fields.insert("DTMF".into(), json!(dtmf));
    fields.insert("LAYER_ID".into(), json!(layer));
    fields.insert("PREVIOUS_LAYER_ID".into(), json!(previous));
    let label = format!("IVR_LAYER_INPUT (LAYER_ID {layer}, DTMF {dtmf:?})");
    let reply = send(sim, &label, "IVR_LAYER_INPUT", "", fields).await?;
    let reply = read(sim.scenario.encoding, &reply)?;
    if int(&reply, "STATUS") != Some(0) {
        sim.step("STATUS 1: the layer goes on with its own settings; the simulated caller hangs up there");
        return Ok(Flow::End(End::in_ivr("VOEND")));
    }
    if let Some(custom) = reply.get("CUSTOM_DATA").and_then(Value::as_object) {
        if !custom.is_empty() {
            sim.step(&format!(
                "keeps CUSTOM_DATA {} on the call",
                Value::Object(custom.clone())
            ));
        }
    }
    let action = text(&reply, "ACTION").trim().to_ascii_uppercase();
    match action.as_str() {
        "GO_TO_LAYER" => {
            let to = int(&reply, "LAYER").unwrap_or(0);
            sim.step(&format!("goes to layer {to}"));
            let key = sim.press().await;
            Ok(Flow::Next(Ask::Layer {
                layer: to,
                previous: layer,
                dtmf: key,
            }))
        }
        "SAY_DIGITS" => {
            let to = int(&reply, "NEXT_LAYER").unwrap_or(0);
            let items = reply.get("DATA").cloned().unwrap_or(Value::Null);
            sim.step(&format!("plays {items}, then goes to layer {to}"));
            let key = sim.press().await;
            Ok(Flow::Next(Ask::Layer {
                layer: to,
                previous: layer,
                dtmf: key,
            }))
        }
        "DIAL" => {
            let targets: Vec<String> = reply
                .get("TARGETS")
                .and_then(Value::as_array)
                .map(|list| list.iter().map(|t| text_of(t.get("TARGET"))).collect())
                .unwrap_or_default();
            sim.step(&format!(
                "dials {}, ringing up to {} s, the call lasting at most {} s, recording {}",
                targets.join(" or "),
                text(&reply, "MAX_DIAL_DURATION"),
                text(&reply, "MAX_CALL_DURATION"),
                text(&reply, "RECORDING")
            ));
            let failed = ["UNAVAILABLE_VO_ID", "UNAVAILABLE_VO", "NEXT_VO_ID"]
                .iter()
                .find_map(|k| int(&reply, k));
            let after = int(&reply, "ANSWER_NEXT_VO_ID");
            let target = targets.first().cloned().unwrap_or_default();
            match dial(sim, target, failed.map(Where::Layer)).await {
                Dialed::Ended(end) => {
                    if let Some(after) = after {
                        sim.step(&format!("the call would go on to layer {after} after the conversation; the simulated caller hangs up there"));
                    }
                    Ok(Flow::End(end))
                }
                Dialed::Next(Ask::Layer { layer: to, .. }) => {
                    let key = sim.press().await;
                    Ok(Flow::Next(Ask::Layer {
                        layer: to,
                        previous: layer,
                        dtmf: key,
                    }))
                }
                Dialed::Next(other) => Ok(Flow::Next(other)),
            }
        }
        other => Err(format!(
            "Voicenter cannot carry out layer ACTION {other:?} from ivrgate's reply"
        )),
    }
}

/// Where a failed dial continues.
enum Where {
    Menu(String),
    Layer(i64),
}

/// The transfer leg, as the scenario says it ends.
async fn dial(sim: &mut Sim<'_>, target: String, on_failure: Option<Where>) -> Dialed {
    let ring = i64::from(sim.scenario.ring_s);
    match sim.scenario.transfer {
        TransferOutcome::Answered => {
            let talk = i64::from(sim.scenario.talk_s);
            sim.step(&format!(
                "{target} answers after {ring} s; the conversation lasts {talk} s, then both hang up"
            ));
            Dialed::Ended(End {
                hangup_status: "ANSWERED",
                cdr_status: "ANSWER",
                target,
                dial_s: ring,
                talk_s: talk,
            })
        }
        outcome => {
            let (hangup_status, cdr_status, what) = match outcome {
                TransferOutcome::Busy => ("BUSY", "BUSY", "is busy"),
                _ => ("NOANSWER", "NOANSWER", "does not answer"),
            };
            match on_failure {
                Some(Where::Menu(menu)) => {
                    sim.step(&format!("{target} {what}; the call goes to menu {menu:?}"));
                    Dialed::Next(Ask::Ivr {
                        menu,
                        previous: String::new(),
                        dtmf: String::new(),
                    })
                }
                Some(Where::Layer(layer)) => {
                    sim.step(&format!("{target} {what}; the call goes to layer {layer}"));
                    Dialed::Next(Ask::Layer {
                        layer,
                        previous: 0,
                        dtmf: String::new(),
                    })
                }
                None => {
                    sim.step(&format!(
                        "{target} {what}; no next menu or layer was given, so Voicenter disconnects the call"
                    ));
                    Dialed::Ended(End {
                        hangup_status,
                        cdr_status,
                        target,
                        dial_s: ring,
                        talk_s: 0,
                    })
                }
            }
        }
    }
}

/// The end of the call: `HANGUP_CALL`, then the CDR notification.
async fn report(sim: &mut Sim<'_>, call_id: &str, start: i64, end: End) -> Result<(), String> {
    let ivr_s = i64::from(sim.decisions) * STEP_S;
    let duration = ivr_s + end.dial_s + end.talk_s;
    let mut fields = Map::new();
    fields.insert("DID".into(), json!(sim.scenario.called));
    fields.insert("CALLER_ID".into(), json!(sim.scenario.caller));
    fields.insert("IVR_UNIQUE_ID".into(), json!(call_id));
    fields.insert("TARGET".into(), json!(end.target));
    fields.insert("CALL_TIME_EPOCH".into(), json!(start));
    fields.insert("CALL_START_EPOCH".into(), json!(start + ivr_s));
    fields.insert("CALL_DURATION".into(), json!(duration));
    fields.insert("CALL_DAILTIME".into(), json!(end.dial_s));
    fields.insert("CALL_STATUS".into(), json!(end.hangup_status));
    sim.step(&format!(
        "the call is over ({}); reports it",
        end.hangup_status
    ));
    let reply = send(sim, "HANGUP_CALL", "HANGUP_CALL", "", fields).await?;
    let read_back = read(sim.scenario.encoding, &reply)?;
    match int(&read_back, "STATUS") {
        Some(0) => sim.step("STATUS 0: the hangup report is stored"),
        _ => sim.finding(format!(
            "HANGUP_CALL was not acknowledged (Voicenter would send it again): {}",
            reply.text()
        )),
    }
    let mut cdr = Map::new();
    cdr.insert("caller".into(), json!(sim.scenario.caller));
    cdr.insert("target".into(), json!(end.target));
    cdr.insert("time".into(), json!(start));
    cdr.insert("duration".into(), json!(end.talk_s));
    cdr.insert("ivruniqueid".into(), json!(call_id));
    cdr.insert("type".into(), json!("Incoming Call"));
    cdr.insert("status".into(), json!(end.cdr_status));
    cdr.insert("targetextension".into(), json!(""));
    cdr.insert("callerextension".into(), json!(""));
    cdr.insert("did".into(), json!(sim.scenario.called));
    cdr.insert("queueid".into(), json!(0));
    cdr.insert("dialtime".into(), json!(end.dial_s));
    let reply = send(sim, "CDR notification", "", "/cdr", cdr).await?;
    let read_back = read(sim.scenario.encoding, &reply)?;
    match int(&read_back, "err") {
        Some(0) => sim.step("err 0: the CDR is stored"),
        _ => sim.finding(format!(
            "the CDR was not acknowledged (Voicenter would send it again): {}",
            reply.text()
        )),
    }
    Ok(())
}

/// Sends one request in the scenario's encoding: `method` names an External IVR method
/// (empty for a CDR, which goes to `sub_path` without one).
async fn send(
    sim: &mut Sim<'_>,
    label: &str,
    method: &str,
    sub_path: &str,
    fields: Map<String, Value>,
) -> Result<Reply, String> {
    let path = sim.path("voicenter", sub_path);
    let (content_type, body) = match sim.scenario.encoding {
        Encoding::Json => {
            let body = if method.is_empty() {
                Value::Object(fields)
            } else {
                json!({"METHOD": method, "DATA": fields})
            };
            ("application/json", body.to_string().into_bytes())
        }
        Encoding::Xmlrpc => {
            let call = xmlrpc::MethodCall {
                method: if method.is_empty() {
                    "CDR".into()
                } else {
                    method.to_owned()
                },
                params: vec![xmlrpc::Value::from_json(&Value::Object(fields))],
            };
            ("text/xml", xmlrpc::write_call(&call).into_bytes())
        }
    };
    let label = format!("{label}, {}", content_type);
    sim.request(&label, http::Method::POST, &path, content_type, body)
        .await
}

/// Reads a reply as Voicenter does: the struct of an XML-RPC `methodResponse`, or JSON.
fn read(encoding: Encoding, reply: &Reply) -> Result<Map<String, Value>, String> {
    if reply.status != 200 {
        return Err(format!(
            "ivrgate answered HTTP {}: {}",
            reply.status,
            reply.text()
        ));
    }
    let text = reply.text();
    let value = match encoding {
        Encoding::Json => serde_json::from_str::<Value>(&text)
            .map_err(|e| format!("Voicenter cannot read ivrgate's JSON reply ({e}): {text}"))?,
        Encoding::Xmlrpc => match xmlrpc::parse_response(&text, &ivrgate_wire::Limits::default()) {
            Ok(Ok(params)) => params.first().map(|v| v.to_json()).unwrap_or(Value::Null),
            Ok(Err(fault)) => {
                return Err(format!(
                    "ivrgate answered an XML-RPC fault {}: {}",
                    fault.code, fault.message
                ))
            }
            Err(e) => {
                return Err(format!(
                    "Voicenter cannot read ivrgate's XML-RPC reply ({e}): {text}"
                ))
            }
        },
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!("ivrgate's reply is not a struct: {other}")),
    }
}

fn text(map: &Map<String, Value>, key: &str) -> String {
    text_of(map.get(key))
}

fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn int(map: &Map<String, Value>, key: &str) -> Option<i64> {
    match map.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
