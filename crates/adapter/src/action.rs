//! The vendor-neutral action vocabulary a customer answers decision webhooks with.
//!
//! A customer answers either `{"action": "<kind>", ...}` (one [`Action`]) or
//! `{"native": {...}}` (the platform's own answer object, passed through by the adapter).
//! A bare object that carries the platform's own upper-case `ACTION` or `STATUS` key is taken
//! as native too, so answers written for the legacy platform keep working.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The customer's answer to a decision webhook.
// An answer lives for one request; boxing the common variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Action(Envelope),
    /// The platform's own answer object; the adapter validates and passes it through.
    Native(Value),
}

/// An action with the fields every action may carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(flatten)]
    pub action: Action,
    /// Prompt language, e.g. `he` or `en` (Voicenter); platforms without one ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Key/value data to keep on the call and repeat on its later events.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attach: Map<String, Value>,
}

impl Envelope {
    pub fn new(action: Action) -> Self {
        Envelope {
            action,
            language: None,
            attach: Map::new(),
        }
    }
}

/// One neutral call action. Durations are in seconds and say so in their names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Play a prompt and gather digits.
    Menu {
        /// Prompt (record file name) to play.
        prompt: String,
        /// The customer's identifier for this menu, echoed back on the next request.
        menu: String,
        /// How many times to play the prompt.
        #[serde(default = "one")]
        repeat: u32,
        /// Seconds to wait between repeats.
        #[serde(default)]
        pause_s: u32,
        /// The most digits to gather.
        max_digits: u32,
        /// Whether the platform validates the input.
        #[serde(default)]
        validate: bool,
    },
    /// Read digits to the caller, then gather like a menu.
    SayDigits {
        digits: String,
        /// Prompt played before the digits.
        #[serde(default)]
        digits_prompt: Option<String>,
        #[serde(default)]
        prompt: Option<String>,
        #[serde(default)]
        menu: Option<String>,
        #[serde(default = "one")]
        repeat: u32,
        #[serde(default)]
        pause_s: u32,
        #[serde(default)]
        max_digits: u32,
        #[serde(default)]
        validate: bool,
        /// Where to go after the digits were read (layer IVRs).
        #[serde(default)]
        next: Option<String>,
        /// Where to go if reading failed (layer IVRs).
        #[serde(default)]
        next_if_failed: Option<String>,
    },
    /// Dial one or more external numbers and connect the caller.
    Dial {
        targets: Vec<String>,
        #[serde(default)]
        caller_id: Option<String>,
        #[serde(default)]
        caller_name: Option<String>,
        /// Seconds to ring before giving up.
        #[serde(default)]
        ring_timeout_s: Option<u32>,
        /// Longest call, in seconds.
        #[serde(default)]
        max_duration_s: Option<u32>,
        #[serde(default)]
        record: bool,
        /// Prompt the caller hears before dialing.
        #[serde(default)]
        caller_prompt: Option<String>,
        /// Prompt the target hears before being connected.
        #[serde(default)]
        target_prompt: Option<String>,
        /// Music class while dialing.
        #[serde(default)]
        music_class: Option<String>,
        /// Digits sent as DTMF once the target answers.
        #[serde(default)]
        dtmf_after_answer: Option<String>,
        /// Ready-made dial strings (`SIP/...`).
        #[serde(default)]
        dialstrings: Vec<String>,
        /// Where the call goes when the dial fails.
        #[serde(default)]
        on_failure: Option<Goto>,
        /// Where the call goes after the target answered and hung up (layer IVRs).
        #[serde(default)]
        on_answer_next: Option<String>,
        /// Where the call goes when no target is available (layer IVRs).
        #[serde(default)]
        on_unavailable_next: Option<String>,
    },
    /// Go to another menu or layer of the platform's own IVR.
    Goto {
        target: String,
        #[serde(default)]
        prompt: Option<String>,
        #[serde(default = "one")]
        repeat: u32,
        #[serde(default)]
        pause_s: u32,
        /// Caller name shown to the destination (layer IVRs).
        #[serde(default)]
        caller_name: Option<String>,
    },
    /// Answer the call and record the caller.
    Record {
        #[serde(default)]
        prompt: Option<String>,
        #[serde(default)]
        max_duration_s: Option<u32>,
    },
    /// Hang up, optionally after a prompt.
    Hangup {
        #[serde(default)]
        prompt: Option<String>,
        /// ISUP cause code (16 = normal clearing).
        #[serde(default)]
        cause: Option<u16>,
    },
    /// Put the call in a queue.
    Enqueue {
        queue: String,
        #[serde(default)]
        priority: Option<u32>,
        #[serde(default)]
        agent: Option<String>,
        #[serde(default)]
        agent_wait_s: Option<u32>,
        #[serde(default)]
        description: Option<String>,
    },
    /// Route the call to one agent.
    RouteToAgent { agent: String },
    /// Let the platform do its own default thing.
    Default {},
    /// The answer to a caller lookup (a pop-up screen), not a call action.
    LookupResult {
        found: bool,
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        total: Option<u32>,
        #[serde(default)]
        company: Option<String>,
    },
}

fn one() -> u32 {
    1
}

/// The kind of an action, for validation messages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Menu,
    SayDigits,
    Dial,
    Goto,
    Record,
    Hangup,
    Enqueue,
    RouteToAgent,
    Default,
    LookupResult,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Menu { .. } => ActionKind::Menu,
            Action::SayDigits { .. } => ActionKind::SayDigits,
            Action::Dial { .. } => ActionKind::Dial,
            Action::Goto { .. } => ActionKind::Goto,
            Action::Record { .. } => ActionKind::Record,
            Action::Hangup { .. } => ActionKind::Hangup,
            Action::Enqueue { .. } => ActionKind::Enqueue,
            Action::RouteToAgent { .. } => ActionKind::RouteToAgent,
            Action::Default {} => ActionKind::Default,
            Action::LookupResult { .. } => ActionKind::LookupResult,
        }
    }
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Menu => "menu",
            ActionKind::SayDigits => "say_digits",
            ActionKind::Dial => "dial",
            ActionKind::Goto => "goto",
            ActionKind::Record => "record",
            ActionKind::Hangup => "hangup",
            ActionKind::Enqueue => "enqueue",
            ActionKind::RouteToAgent => "route_to_agent",
            ActionKind::Default => "default",
            ActionKind::LookupResult => "lookup_result",
        }
    }
}

/// A jump target for a failed dial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goto {
    pub target: String,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub max_digits: Option<u32>,
    #[serde(default)]
    pub pause_s: Option<u32>,
}

impl Answer {
    /// Reads a customer's answer body. An `Err` says what is wrong, for the log line.
    pub fn from_json(value: &Value) -> Result<Answer, String> {
        let Value::Object(object) = value else {
            return Err("answer is not a JSON object".into());
        };
        if let Some(native) = object.get("native") {
            return Ok(Answer::Native(native.clone()));
        }
        if object.contains_key("action") {
            // `&Value` is a deserializer itself: no copy of the answer is made.
            return Envelope::deserialize(value)
                .map(Answer::Action)
                .map_err(|e| format!("invalid action: {e}"));
        }
        if object.contains_key("ACTION") || object.contains_key("STATUS") {
            return Ok(Answer::Native(value.clone()));
        }
        Err("answer has neither \"action\" nor \"native\"".into())
    }

    /// The data this answer attaches to the call.
    pub fn attach(&self) -> Option<&Map<String, Value>> {
        match self {
            Answer::Action(envelope) if !envelope.attach.is_empty() => Some(&envelope.attach),
            _ => None,
        }
    }

    /// A short label for logs and metrics: the action kind or `native`.
    pub fn label(&self) -> &'static str {
        match self {
            Answer::Action(envelope) => envelope.action.kind().as_str(),
            Answer::Native(_) => "native",
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Answer::Action(envelope) => serde_json::to_value(envelope).unwrap_or(Value::Null),
            Answer::Native(native) => serde_json::json!({ "native": native }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_neutral_action_with_attach() {
        let answer = Answer::from_json(&json!({
            "action": "menu", "prompt": "welcome", "menu": "main", "max_digits": 1,
            "language": "he", "attach": {"crm_id": "42"}
        }))
        .expect("valid");
        let Answer::Action(envelope) = &answer else {
            panic!("expected an action")
        };
        assert_eq!(envelope.action.kind(), ActionKind::Menu);
        assert_eq!(envelope.language.as_deref(), Some("he"));
        assert_eq!(
            answer.attach().and_then(|a| a.get("crm_id")),
            Some(&json!("42"))
        );
    }

    #[test]
    fn native_answers_pass_through() {
        let native = json!({"STATUS": 0, "ACTION": "HANGUP", "DATA": {}});
        assert_eq!(
            Answer::from_json(&native),
            Ok(Answer::Native(native.clone()))
        );
        let wrapped = json!({"native": native.clone()});
        assert_eq!(Answer::from_json(&wrapped), Ok(Answer::Native(native)));
    }

    #[test]
    fn rejects_unknown_actions_and_shapes() {
        assert!(Answer::from_json(&json!({"action": "teleport"})).is_err());
        assert!(Answer::from_json(&json!({"menu": "x"})).is_err());
        assert!(Answer::from_json(&json!([1, 2])).is_err());
        assert!(Answer::from_json(&json!({"action": "menu", "prompt": "p"})).is_err());
    }
}
