//! The simulated contact centre: agents, services and calls, and the events each change
//! publishes. Pure state: no I/O, no clocks (timers live in `lib.rs`).
//!
//! This file holds the types and the shared helpers; `calls.rs` a call's life and routing,
//! `agents.rs` the AgentCallService, `snapshot.rs` snapshots and event filters.

mod agents;
mod calls;
mod snapshot;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::wire::{fields, get_int, Fields, V};

/// An agent as configured.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSpec {
    /// AgentIdx / AgentId.
    pub id: i64,
    /// Login name.
    pub login: String,
    /// Services the agent serves.
    pub services: Vec<i64>,
}

/// A service as configured.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSpec {
    /// ServiceId.
    pub id: i64,
    /// Inbound service configured for external routing (raises RouteRequest).
    pub external_routing: bool,
}

/// An agent's live state.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    /// AgentIdx / AgentId.
    pub id: i64,
    /// Login name.
    pub login: String,
    /// Services served.
    pub services: Vec<i64>,
    /// Logged in.
    pub logged_in: bool,
    /// CTIAgentState name.
    pub state: String,
    /// Station the agent logged in at.
    pub station: String,
    /// Call the agent is on (0 = none).
    pub call: i64,
}

/// A service's live state.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// ServiceId.
    pub id: i64,
    /// CTIServiceState name.
    pub state: String,
    /// Raises RouteRequest for inbound calls.
    pub external_routing: bool,
}

/// Where a call stands in routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Routing {
    /// Not an externally routed call.
    None,
    /// RouteRequest raised, no RouteSelect yet.
    Pending,
    /// Routed by a RouteSelect.
    Selected,
    /// RouteTimeout passed: default routing applied.
    Defaulted,
}

/// A call's live state.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// CallId.
    pub id: i64,
    /// CallSequenceId.
    pub seq: i64,
    /// Service.
    pub service: i64,
    /// Agent on the call (0 = none).
    pub agent: i64,
    /// CTICallState name.
    pub state: String,
    /// CTICallType name.
    pub call_type: String,
    /// Caller.
    pub ani: String,
    /// Dialled number.
    pub dnis: String,
    /// Destination type and address (outbound and routed calls).
    pub dest_type: String,
    /// Destination address.
    pub destination: String,
    /// Routing state.
    pub routing: Routing,
    /// RouteTimeout in seconds, as sent in RouteRequest.
    pub route_timeout: i64,
    /// Call data (key, value).
    pub data: Vec<(String, String)>,
}

/// Who an event goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every online session whose categories and filters admit it.
    All,
    /// Only this session (snapshot answers, request failures).
    Session(String),
}

/// An event to publish: its contract, its own members, its audience, and the request it
/// answers (RequestId is that request's id for the requesting session, 0 for the others).
#[derive(Debug, Clone)]
pub struct Emit {
    /// Event contract name, e.g. `CTIRouteUsed`.
    pub kind: &'static str,
    /// Members (header members filled in by [`Model::header`]).
    pub fields: Fields,
    /// Audience.
    pub to: Target,
    /// (session, RequestId) that caused it.
    pub request: Option<(String, i64)>,
}

/// A request refused outright: a `CTIPortalServiceFault` (ErrorCode, Message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// FaultErrorCode name.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// (EventCategory, EventType) of an event contract.
pub fn category_and_type(kind: &str) -> (&'static str, String) {
    let ty = match kind {
        "CTIRouteRejected" => "RouteReject".to_string(),
        k => k.trim_start_matches("CTI").to_string(),
    };
    let cat = match kind {
        "CTIAgentLoginRequestFailed"
        | "CTIAgentLoginStateChange"
        | "CTIAgentRequestFailed"
        | "CTIAgentStateChange"
        | "CTIAudioPathStateChange"
        | "CTIEnterPasscode" => "EventCategoryAgent",
        k if k.starts_with("CTICall") || k == "CTIDigitsDialed" => "EventCategoryCall",
        k if k.starts_with("CTIRoute") => "EventCategoryRoute",
        _ => "EventCategorySystem",
    };
    (cat, ty)
}

/// The contact centre.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// TenantId.
    pub tenant: i64,
    /// SiteId.
    pub site: i64,
    /// SwitchId.
    pub switch: i64,
    /// Agents by AgentIdx.
    pub agents: BTreeMap<i64, Agent>,
    /// Services by ServiceId.
    pub services: BTreeMap<i64, Service>,
    /// Live calls by CallId.
    pub calls: BTreeMap<i64, Call>,
    /// Ended calls whose agent is still in wrap: CallCompleted (after SetDisposition) carries
    /// their CallSequenceId.
    pub wrapping: BTreeMap<i64, Call>,
    next_call: i64,
    next_seq: i64,
}

/// Context of a request: the session and its RequestId.
#[derive(Debug, Clone)]
pub struct Req {
    /// SessionId.
    pub session: String,
    /// RequestId of the request (0 when it has none).
    pub request_id: i64,
}

impl Model {
    /// A contact centre with these agents and services.
    pub fn new(tenant: i64, agents: &[AgentSpec], services: &[ServiceSpec]) -> Model {
        Model {
            tenant,
            site: 1,
            switch: 1,
            agents: agents
                .iter()
                .map(|a| {
                    (
                        a.id,
                        Agent {
                            id: a.id,
                            login: a.login.clone(),
                            services: a.services.clone(),
                            logged_in: false,
                            state: "INVALID".into(),
                            station: String::new(),
                            call: 0,
                        },
                    )
                })
                .collect(),
            services: services
                .iter()
                .map(|s| {
                    (
                        s.id,
                        Service {
                            id: s.id,
                            state: "Active".into(),
                            external_routing: s.external_routing,
                        },
                    )
                })
                .collect(),
            calls: BTreeMap::new(),
            wrapping: BTreeMap::new(),
            next_call: 5551,
            next_seq: 900_000_001,
        }
    }

    /// Fills the header members every event carries (EventCategory, EventType, SiteId,
    /// TenantId, SwitchId) unless the emitter set them.
    pub fn header(&self, kind: &str, f: &mut Fields) {
        let (cat, ty) = category_and_type(kind);
        f.entry("EventCategory".into())
            .or_insert(V::Enum(cat.into()));
        f.entry("EventType".into()).or_insert(V::Enum(ty));
        f.entry("SiteId".into()).or_insert(V::Int(self.site));
        f.entry("TenantId".into()).or_insert(V::Int(self.tenant));
        if kind != "CTISnapShotUpdate" {
            f.entry("SwitchId".into()).or_insert(V::Int(self.switch));
        }
    }

    fn call_fields(&self, c: &Call) -> Fields {
        fields([
            ("ServiceId", V::Int(c.service)),
            ("AgentId", V::Int(c.agent)),
            ("CallId", V::Int(c.id)),
            ("CallSequenceId", V::Int(c.seq)),
            ("CallOriginatingSiteId", V::Int(self.site)),
        ])
    }

    fn call_info(c: &Call) -> V {
        V::Obj(fields([
            ("ANI", V::Str(c.ani.clone())),
            ("DNIS", V::Str(c.dnis.clone())),
            ("CallerId", V::Str(c.ani.clone())),
            (
                "CallData",
                V::Arr(
                    c.data
                        .iter()
                        .map(|(k, v)| {
                            V::Obj(fields([
                                ("key", V::Str(k.clone())),
                                ("value", V::Str(v.clone())),
                            ]))
                        })
                        .collect(),
                ),
            ),
        ]))
    }

    fn agent_state_event(&self, a: &Agent, req: Option<&Req>) -> Emit {
        let mut f = fields([
            ("AgentId", V::Int(a.id)),
            ("AgentState", V::Enum(a.state.clone())),
            (
                "ServiceIds",
                V::Arr(a.services.iter().map(|s| V::Int(*s)).collect()),
            ),
        ]);
        if a.call != 0 {
            f.insert("CallId".into(), V::Int(a.call));
        }
        emit("CTIAgentStateChange", f, req)
    }

    fn agent_by_idx(&self, f: &Fields) -> Result<i64, Refusal> {
        let idx = get_int(f, "AgentIdx");
        if self.agents.contains_key(&idx) {
            Ok(idx)
        } else {
            Err(refuse(
                "InvalidParameter",
                format!("unknown AgentIdx {idx}"),
            ))
        }
    }

    fn call_by_id(&self, f: &Fields) -> Result<i64, Refusal> {
        let id = get_int(f, "CallId");
        if self.calls.contains_key(&id) {
            Ok(id)
        } else {
            Err(refuse("InvalidCallId", format!("unknown CallId {id}")))
        }
    }

    fn agent_failed(&self, req: &Req, agent: i64, call: i64, ty: &str, reason: &str) -> Emit {
        let mut f = fields([
            ("AgentId", V::Int(agent)),
            ("FailureType", V::Enum(ty.into())),
            ("FailureReason", V::Str(reason.into())),
        ]);
        if call != 0 {
            f.insert("CallId".into(), V::Int(call));
        }
        Emit {
            kind: "CTIAgentRequestFailed",
            fields: f,
            to: Target::Session(req.session.clone()),
            request: Some((req.session.clone(), req.request_id)),
        }
    }

    fn call_failed(&self, req: &Req, call: i64, ty: &str, reason: &str) -> Emit {
        let mut f = self
            .calls
            .get(&call)
            .map(|c| self.call_fields(c))
            .unwrap_or_default();
        f.insert("CallId".into(), V::Int(call));
        f.insert("FailureType".into(), V::Enum(ty.into()));
        f.insert("FailureReason".into(), V::Str(reason.into()));
        Emit {
            kind: "CTICallRequestFailed",
            fields: f,
            to: Target::Session(req.session.clone()),
            request: Some((req.session.clone(), req.request_id)),
        }
    }
}

fn emit(kind: &'static str, fields: Fields, req: Option<&Req>) -> Emit {
    emit_to(kind, fields, req, Target::All)
}

fn emit_to(kind: &'static str, fields: Fields, req: Option<&Req>, to: Target) -> Emit {
    Emit {
        kind,
        fields,
        to,
        request: req.map(|r| (r.session.clone(), r.request_id)),
    }
}
