//! CTIPS events (PublishCTIEvent's polymorphic `ctiEvent`): reading them into verbatim JSON
//! and mapping each event type to its webhook type and the entity it belongs to.

use serde_json::{Map, Value};

use crate::xml::Node;

/// Which entity an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A call: `CallId`, and `CallSequenceId` when the event carries one (route events may
    /// not; then the call is found through its CallId alias).
    Call {
        call_id: String,
        seq: Option<String>,
    },
    Agent(String),
    Service(String),
    /// The session entity (link status, filters, snapshot completion, unknown events).
    System,
}

/// One event as read.
#[derive(Debug, Clone)]
pub struct CtiEvent {
    /// The contract type without its prefix (`CTIRouteRequest`).
    pub type_name: String,
    /// The vendor's fields, verbatim (strings, `null` for `i:nil`, arrays and objects).
    pub fields: Map<String, Value>,
}

/// Element names the seed uses where the service description has others (CT-1): read as the
/// wire name.
fn wire_name(name: &str) -> &str {
    match name {
        "RequestIdList" => "AgentIdList",
        "SnapShotComplete" => "SnapShotTypeComplete",
        other => other,
    }
}

/// Children whose element is an array even when empty or with one item.
const ARRAYS: &[&str] = &[
    "AgentCapabilities",
    "ServiceIds",
    "CallData",
    "AgentIdList",
    "Services",
    "TenantIds",
    "UserData",
];

fn to_json(node: &Node, parent: &str) -> Value {
    if node.is_nil() {
        return Value::Null;
    }
    // ServiceState is an array of CTIServiceInfo in AgentLoginStateChange, an enum elsewhere;
    // CallData in a snapshot is a CTISnapShotCallData object, elsewhere a CTICallDataItem list.
    let snapshot_call = node.name == "CallData" && parent == "CTISnapShotUpdate";
    let array = !snapshot_call
        && (ARRAYS.contains(&wire_name(&node.name))
            || (node.name == "ServiceState" && !node.children.is_empty()));
    if array {
        return Value::Array(
            node.children
                .iter()
                .map(|c| to_json(c, &node.name))
                .collect(),
        );
    }
    if node.children.is_empty() {
        return Value::String(node.value().to_owned());
    }
    let mut map = Map::new();
    for child in &node.children {
        map.insert(
            wire_name(&child.name).to_owned(),
            to_json(child, &node.name),
        );
    }
    Value::Object(map)
}

/// Reads the `ctiEvent` element. The type comes from `i:type`, or from EventType when a
/// sender left `i:type` out.
pub fn read(node: &Node) -> Result<CtiEvent, String> {
    let type_name = match node.xsi_type() {
        Some(t) if !t.is_empty() && t != "CTIEvent" => t.to_owned(),
        _ => {
            let event_type = node
                .child("EventType")
                .map(Node::value)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| "the event has neither i:type nor EventType".to_owned())?;
            match event_type {
                "RouteReject" => "CTIRouteRejected".to_owned(),
                other => format!("CTI{other}"),
            }
        }
    };
    let mut fields = Map::new();
    for child in &node.children {
        fields.insert(
            wire_name(&child.name).to_owned(),
            to_json(child, &type_name),
        );
    }
    Ok(CtiEvent { type_name, fields })
}

/// A field's text, when present and not nil.
pub fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str).map(str::trim)
}

/// A field's text unless it is empty or names no entity (`0`, `-1`).
fn id<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    text(fields, name).filter(|v| !v.is_empty() && *v != "0" && *v != "-1")
}

/// What an event becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The webhook type.
    pub webhook: String,
    pub target: Target,
    /// The event ends the call entity (CallEnd).
    pub ends: bool,
}

fn call_target(fields: &Map<String, Value>) -> Option<Target> {
    let call_id = id(fields, "CallId")?.to_owned();
    let seq = text(fields, "CallSequenceId")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(str::to_owned);
    Some(Target::Call { call_id, seq })
}

/// Maps an event to its webhook type and entity (DESIGN §2; CT-5 for CallEnd/CallCompleted).
pub fn map(event: &CtiEvent) -> Mapped {
    let f = &event.fields;
    let name = event
        .type_name
        .strip_prefix("CTI")
        .unwrap_or(&event.type_name);
    let call = |suffix: &str| -> Mapped {
        match call_target(f) {
            Some(target) => Mapped {
                webhook: format!("ctips.{suffix}"),
                target,
                ends: false,
            },
            None => Mapped {
                webhook: format!("ctips.{suffix}"),
                target: Target::System,
                ends: false,
            },
        }
    };
    let agent = |suffix: &str| -> Mapped {
        Mapped {
            webhook: format!("ctips.agent.{suffix}"),
            target: id(f, "AgentId")
                .map(|a| Target::Agent(a.to_owned()))
                .unwrap_or(Target::System),
            ends: false,
        }
    };
    let system = |webhook: &str| Mapped {
        webhook: webhook.to_owned(),
        target: Target::System,
        ends: false,
    };
    match name {
        "CallStarted" => call("call.started"),
        "CallOffered" => call("call.offered"),
        "CallDelivered" => call("call.delivered"),
        "CallEstablished" => call("call.established"),
        "CallConnected" => call("call.connected"),
        "CallOriginated" => call("call.originated"),
        "CallHeld" => call("call.held"),
        "CallRetrieved" => call("call.retrieved"),
        "CallConsultation" => call("call.consultation"),
        "CallConferenced" => call("call.conferenced"),
        "CallTransferred" => call("call.transferred"),
        "CallDataUpdate" => call("call.data_update"),
        "DigitsDialed" => call("call.digits_dialed"),
        "CallCleared" => call("call.cleared"),
        "CallRequestFailed" => call("call.request_failed"),
        "CallEnd" => Mapped {
            ends: true,
            ..call("call.ended")
        },
        "CallCompleted" => call("call.completed"),
        "RouteRequest" => call("route.requested"),
        "RouteUsed" => call("route.used"),
        "RouteRejected" => call("route.rejected"),
        "RouteRequestFailed" => call("route.failed"),
        "AgentLoginStateChange" => agent("login_state"),
        "AgentLoginRequestFailed" => agent("login_failed"),
        "AgentStateChange" => agent("state"),
        "AgentRequestFailed" => agent("request_failed"),
        "AudioPathStateChange" => agent("audio_path"),
        "EnterPasscode" => agent("enter_passcode"),
        "ServiceStateChange" => Mapped {
            webhook: "ctips.service.state".into(),
            target: id(f, "ServiceId")
                .map(|s| Target::Service(s.to_owned()))
                .unwrap_or(Target::System),
            ends: false,
        },
        "LinkStatus" => system("ctips.system.link"),
        "Filter" => system("ctips.system.filter"),
        "SnapShotRequestFailed" => system("ctips.snapshot.failed"),
        "SnapShotUpdate" => snapshot(f),
        _ => system("ctips.system.unknown_event"),
    }
}

fn snapshot(f: &Map<String, Value>) -> Mapped {
    let kind = text(f, "SnapShotType").unwrap_or_default();
    let object = |name: &str| f.get(name).and_then(Value::as_object);
    let target = match kind {
        "AgentInfo" => object("AgentData")
            .and_then(|d| id(d, "AgentId"))
            .map(|a| ("ctips.snapshot.agent", Target::Agent(a.to_owned()))),
        "CallInfo" => object("CallData")
            .and_then(call_target)
            .map(|t| ("ctips.snapshot.call", t)),
        "ServiceInfo" => object("ServiceData")
            .and_then(|d| id(d, "ServiceId"))
            .map(|s| ("ctips.snapshot.service", Target::Service(s.to_owned()))),
        _ => None,
    };
    match target {
        Some((webhook, target)) => Mapped {
            webhook: webhook.into(),
            target,
            ends: false,
        },
        None => Mapped {
            webhook: "ctips.snapshot.completed".into(),
            target: Target::System,
            ends: false,
        },
    }
}

/// Whether a SnapShotUpdate closes its entity type's snapshot.
pub fn snapshot_complete(event: &CtiEvent) -> bool {
    event.type_name == "CTISnapShotUpdate"
        && text(&event.fields, "SnapShotTypeComplete")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The webhook types this adapter emits, for the docs and schema checks.
pub const WEBHOOK_TYPES: &[&str] = &[
    "ctips.call.started",
    "ctips.call.offered",
    "ctips.call.delivered",
    "ctips.call.established",
    "ctips.call.connected",
    "ctips.call.originated",
    "ctips.call.held",
    "ctips.call.retrieved",
    "ctips.call.consultation",
    "ctips.call.conferenced",
    "ctips.call.transferred",
    "ctips.call.data_update",
    "ctips.call.digits_dialed",
    "ctips.call.cleared",
    "ctips.call.request_failed",
    "ctips.call.ended",
    "ctips.call.completed",
    "ctips.route.requested",
    "ctips.route.used",
    "ctips.route.rejected",
    "ctips.route.failed",
    "ctips.route.unanswered",
    "ctips.agent.login_state",
    "ctips.agent.login_failed",
    "ctips.agent.state",
    "ctips.agent.request_failed",
    "ctips.agent.audio_path",
    "ctips.agent.enter_passcode",
    "ctips.service.state",
    "ctips.system.link",
    "ctips.system.filter",
    "ctips.system.unknown_event",
    "ctips.snapshot.agent",
    "ctips.snapshot.call",
    "ctips.snapshot.service",
    "ctips.snapshot.failed",
    "ctips.snapshot.completed",
    "ctips.session.online",
    "ctips.session.lost",
];
