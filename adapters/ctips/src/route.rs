//! RouteRequest as a decision (`decision.route_request`) and its answer as RouteSelect.

use ivrgate_adapter::action::{Action, Answer};
use ivrgate_adapter::DecisionPoint;
use serde_json::{Map, Value};

use crate::proto::RouteType;
use crate::settings::{AgentBy, Settings, MAX_USER_DATA};

/// The longest RouteTimeout ivrgate plans for (CTIPS sends seconds; the seed gives no bound).
pub const PLATFORM_MAX_MS: u64 = 120_000;

/// Below this much time left, the fallback is sent at once.
pub const MIN_DEADLINE_MS: u64 = 100;

pub static ROUTE_REQUEST: DecisionPoint = DecisionPoint {
    vendor: "ctips",
    kind: "route_request",
    platform_max_ms: PLATFORM_MAX_MS,
    default_fallback,
    validate,
    native_attach,
};

pub static POINTS: [DecisionPoint; 1] = [ROUTE_REQUEST];

fn default_fallback() -> Answer {
    Answer::Action(ivrgate_adapter::action::Envelope::new(Action::Default {}))
}

/// What RouteSelect carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    pub route_type: RouteType,
    pub destination: String,
    /// `key=value` per position (see `user_data_fields`), empty positions as `""`.
    pub user_data: Vec<String>,
}

/// Whether an answer can become a RouteSelect (before any settings are known).
pub fn validate(answer: &Answer) -> Result<(), String> {
    match answer {
        Answer::Action(envelope) => match &envelope.action {
            Action::RouteToAgent { agent } if !agent.trim().is_empty() => Ok(()),
            Action::RouteToAgent { .. } => Err("route_to_agent needs an agent".into()),
            Action::Enqueue { queue, .. } if is_id(queue) => Ok(()),
            Action::Enqueue { queue, .. } => Err(format!(
                "enqueue needs a numeric CTIPS service id as queue, not {queue:?}"
            )),
            Action::Dial { targets, .. } if targets.len() == 1 && !targets[0].trim().is_empty() => {
                Ok(())
            }
            Action::Dial { .. } => Err("dial needs exactly one target for RouteToExternal".into()),
            Action::Default {} => Ok(()),
            other => Err(format!(
                "{} cannot answer a CTIPS RouteRequest (route_to_agent, enqueue, dial, default)",
                other.kind().as_str()
            )),
        },
        Answer::Native(native) => native_select(native).map(|_| ()),
    }
}

fn is_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit())
}

/// A native answer: `{"RouteActionType": "RouteToService", "DestinationAddress": "3",
/// "UserData": ["k=v", ...]}` (the seed's `RouteDestination` accepted too).
fn native_select(native: &Value) -> Result<Select, String> {
    let obj = native
        .as_object()
        .ok_or_else(|| "a native CTIPS answer is an object".to_owned())?;
    let kind = obj
        .get("RouteActionType")
        .and_then(Value::as_str)
        .ok_or_else(|| "a native CTIPS answer needs RouteActionType".to_owned())?;
    let route_type =
        RouteType::from_wire(kind).ok_or_else(|| format!("unknown RouteActionType {kind:?}"))?;
    let destination = obj
        .get("DestinationAddress")
        .or_else(|| obj.get("RouteDestination"))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    if route_type != RouteType::ToDefault && destination.is_empty() {
        return Err(format!("{kind} needs a DestinationAddress"));
    }
    let user_data = match obj.get("UserData") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err("UserData items are strings".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("UserData is an array of strings".into()),
    };
    if user_data.len() > MAX_USER_DATA {
        return Err(format!("UserData has at most {MAX_USER_DATA} positions"));
    }
    Ok(Select {
        route_type,
        destination,
        user_data,
    })
}

fn native_attach(native: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(items) = native.get("UserData").and_then(Value::as_array) {
        for item in items.iter().filter_map(Value::as_str) {
            if let Some((k, v)) = item.split_once('=') {
                out.insert(k.to_owned(), Value::String(v.to_owned()));
            }
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The UserData positions for attached data: the configured `user_data_fields` positions
/// (`key=value`, empty when the key is not attached), or else every attached key in order,
/// at most 20 (CT-6). Trailing empty positions are left out.
pub fn user_data(settings: &Settings, attached: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = if settings.user_data_fields.is_empty() {
        attached
            .iter()
            .take(MAX_USER_DATA)
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect()
    } else {
        settings
            .user_data_fields
            .iter()
            .map(|k| match attached.get(k) {
                Some(v) => format!("{k}={}", scalar(v)),
                None => String::new(),
            })
            .collect()
    };
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

/// Turns a decided answer into RouteSelect's fields. `agent_index` resolves a login name to
/// an agent index when the tenant routes agents by index. `Err` when the answer cannot be
/// carried out (the fallback goes out instead).
pub fn select(
    settings: &Settings,
    answer: &Answer,
    attached: &Map<String, Value>,
    agent_index: Option<&str>,
) -> Result<Select, String> {
    validate(answer)?;
    let user_data = user_data(settings, attached);
    match answer {
        Answer::Native(native) => native_select(native),
        Answer::Action(envelope) => {
            let (route_type, destination) = match &envelope.action {
                Action::RouteToAgent { agent } => {
                    let agent = agent.trim();
                    let destination = match settings.agent_by {
                        AgentBy::LoginName => agent.to_owned(),
                        AgentBy::Index if is_id(agent) => agent.to_owned(),
                        AgentBy::Index => agent_index
                            .map(str::to_owned)
                            .ok_or_else(|| format!("no agent index known for login {agent:?}"))?,
                    };
                    (RouteType::ToAgent, destination)
                }
                Action::Enqueue { queue, .. } => (RouteType::ToService, queue.clone()),
                Action::Dial { targets, .. } => (
                    RouteType::ToExternal,
                    targets.first().cloned().unwrap_or_default(),
                ),
                _ => (RouteType::ToDefault, String::new()),
            };
            Ok(Select {
                route_type,
                destination,
                user_data,
            })
        }
    }
}

/// The RouteSelect that lets CTIPS apply its own default routing.
pub fn default_select() -> Select {
    Select {
        route_type: RouteType::ToDefault,
        destination: String::new(),
        user_data: Vec::new(),
    }
}

/// The decision deadline for a RouteRequest: RouteTimeout × 1000 − margin − time already
/// spent since it was received; `None` when less than [`MIN_DEADLINE_MS`] is left.
pub fn deadline_ms(route_timeout_s: i64, margin_ms: u64, spent_ms: u64) -> Option<u64> {
    let total = (route_timeout_s.max(0) as u64).saturating_mul(1000);
    let left = total.saturating_sub(margin_ms).saturating_sub(spent_ms);
    (left >= MIN_DEADLINE_MS).then_some(left)
}
