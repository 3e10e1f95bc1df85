//! The simulated contact centre: agents, services and calls, and the events each change
//! publishes. Pure state: no I/O, no clocks (timers live in `lib.rs`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::wire::{fields, get_int, get_str, Fields, V};

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

    fn new_call(&mut self, service: i64, call_type: &str, ani: &str, dnis: &str) -> i64 {
        let id = self.next_call;
        self.next_call += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.calls.insert(
            id,
            Call {
                id,
                seq,
                service,
                agent: 0,
                state: "CallOffered".into(),
                call_type: call_type.into(),
                ani: ani.into(),
                dnis: dnis.into(),
                dest_type: "NoDestination".into(),
                destination: String::new(),
                routing: Routing::None,
                route_timeout: 0,
                data: Vec::new(),
            },
        );
        id
    }

    /// An inbound call arrives at `service`: CallStarted, CallOffered, then RouteRequest
    /// (external routing) or CallDelivered. Returns the CallId.
    pub fn inbound_call(
        &mut self,
        service: i64,
        ani: &str,
        dnis: &str,
        route_timeout: i64,
        data: Vec<(String, String)>,
    ) -> (i64, Vec<Emit>) {
        let external = self
            .services
            .get(&service)
            .is_some_and(|s| s.external_routing);
        let id = self.new_call(service, "InboundAcd", ani, dnis);
        let mut out = Vec::new();
        let Some(c) = self.calls.get_mut(&id) else {
            return (id, out);
        };
        c.data = data;
        if external {
            c.routing = Routing::Pending;
            c.route_timeout = route_timeout;
        }
        let c = c.clone();
        out.push(emit("CTICallStarted", self.call_fields(&c), None));
        let mut f = self.call_fields(&c);
        f.insert("ANI".into(), V::Str(c.ani.clone()));
        f.insert("DNIS".into(), V::Str(c.dnis.clone()));
        out.push(emit("CTICallOffered", f, None));
        if external {
            out.push(self.route_request_event(&c));
        } else {
            out.extend(self.deliver(id, service));
        }
        (id, out)
    }

    fn route_request_event(&self, c: &Call) -> Emit {
        let mut f = self.call_fields(c);
        f.insert("RouteTimeout".into(), V::Int(c.route_timeout));
        f.insert("MediaType".into(), V::Enum("VoiceSip".into()));
        f.insert("CallInfo".into(), Self::call_info(c));
        emit("CTIRouteRequest", f, None)
    }

    /// The same RouteRequest again (same CallId and CallSequenceId) for a call still waiting
    /// for a route: what a client sees when CTIPS repeats a request. Empty otherwise.
    pub fn repeat_route_request(&self, id: i64) -> Vec<Emit> {
        match self.calls.get(&id) {
            Some(c) if c.routing == Routing::Pending => vec![self.route_request_event(c)],
            _ => Vec::new(),
        }
    }

    fn deliver(&mut self, id: i64, service: i64) -> Vec<Emit> {
        let Some(c) = self.calls.get_mut(&id) else {
            return Vec::new();
        };
        c.service = service;
        c.state = "CallDelivered".into();
        let c = c.clone();
        let mut f = self.call_fields(&c);
        f.insert("CallType".into(), V::Enum(c.call_type.clone()));
        f.insert("ANI".into(), V::Str(c.ani.clone()));
        f.insert("DNIS".into(), V::Str(c.dnis.clone()));
        vec![emit("CTICallDelivered", f, None)]
    }

    fn connect_to_agent(&mut self, id: i64, agent: i64) -> Vec<Emit> {
        let mut out = Vec::new();
        let Some(c) = self.calls.get_mut(&id) else {
            return out;
        };
        c.agent = agent;
        c.state = "CallConnected".into();
        let c = c.clone();
        let mut f = self.call_fields(&c);
        f.insert("ResponseRequired".into(), V::Bool(true));
        f.insert("CallInfo".into(), Self::call_info(&c));
        f.insert("CallType".into(), V::Enum(c.call_type.clone()));
        out.push(emit("CTICallConnected", f, None));
        if let Some(a) = self.agents.get_mut(&agent) {
            a.state = "PendingActive".into();
            a.call = id;
            let a = a.clone();
            out.push(self.agent_state_event(&a, None));
        }
        out
    }

    /// RouteTimeout passed with no RouteSelect: default routing (the call is delivered to its
    /// service) and RouteUsed(RouteDefaultUsed) with RequestId 0.
    pub fn route_timeout(&mut self, id: i64) -> Vec<Emit> {
        let Some(c) = self.calls.get_mut(&id) else {
            return Vec::new();
        };
        if c.routing != Routing::Pending {
            return Vec::new();
        }
        c.routing = Routing::Defaulted;
        let c = c.clone();
        let mut f = self.call_fields(&c);
        f.insert("RouteStatus".into(), V::Enum("RouteDefaultUsed".into()));
        f.insert("RouteType".into(), V::Enum("RouteToDefault".into()));
        f.insert("RouteDestination".into(), V::Str(c.service.to_string()));
        let mut out = vec![emit("CTIRouteUsed", f, None)];
        out.extend(self.deliver(id, c.service));
        out
    }

    /// RouteSelect.
    pub fn route_select(&mut self, req: &Req, f: &Fields) -> Result<Vec<Emit>, Refusal> {
        let id = self.call_by_id(f)?;
        let route_type = get_str(f, "RouteActionType");
        if !matches!(
            route_type.as_str(),
            "RouteToAgent" | "RouteToService" | "RouteToExternal" | "RouteToDefault"
        ) {
            return Err(refuse(
                "InvalidRouteType",
                format!("RouteActionType {route_type} is not supported"),
            ));
        }
        let dest = get_str(f, "DestinationAddress");
        let Some(c) = self.calls.get(&id).cloned() else {
            return Err(refuse("InvalidCallId", format!("unknown CallId {id}")));
        };
        let mine = Some(req);
        if c.routing != Routing::Pending {
            let reason = match c.routing {
                Routing::Defaulted => "RouteTimeout",
                _ => "CallAlreadyRouted",
            };
            let mut rf = self.call_fields(&c);
            rf.insert("RouteRejectReason".into(), V::Enum(reason.into()));
            return Ok(vec![emit_to(
                "CTIRouteRejected",
                rf,
                mine,
                Target::Session(req.session.clone()),
            )]);
        }
        let failed = |this: &Model, ty: &str, why: String| {
            let mut rf = this.call_fields(&c);
            rf.insert("FailureType".into(), V::Enum(ty.into()));
            rf.insert("FailureReason".into(), V::Str(why));
            vec![emit("CTIRouteRequestFailed", rf, mine)]
        };
        let user_data: Vec<(String, String)> = f
            .get("UserData")
            .map(|v| {
                v.arr()
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("UserData{}", i + 1), s.text()))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        match route_type.as_str() {
            "RouteToAgent" => {
                let agent = self
                    .agents
                    .values()
                    .find(|a| a.login == dest || a.id.to_string() == dest)
                    .cloned();
                match agent {
                    None => {
                        return Ok(failed(
                            self,
                            "DestinationInvalidNumber",
                            format!("no agent {dest}"),
                        ))
                    }
                    Some(a) if !a.logged_in || a.state != "Idle" => {
                        return Ok(failed(
                            self,
                            "DestinationAgentNotAvailable",
                            format!("agent {dest} is not available"),
                        ))
                    }
                    Some(a) => {
                        out.push(self.route_used(&c, req, &route_type, &dest));
                        self.set_routed(id, user_data);
                        out.extend(self.connect_to_agent(id, a.id));
                    }
                }
            }
            "RouteToService" => {
                let sid = dest.trim().parse::<i64>().ok();
                match sid.filter(|s| self.services.contains_key(s)) {
                    None => {
                        return Ok(failed(
                            self,
                            "DestinationInvalidServiceIdentifier",
                            format!("no service {dest}"),
                        ))
                    }
                    Some(s) => {
                        out.push(self.route_used(&c, req, &route_type, &dest));
                        self.set_routed(id, user_data);
                        out.extend(self.deliver(id, s));
                    }
                }
            }
            "RouteToExternal" => {
                let ok = !dest.is_empty()
                    && dest
                        .chars()
                        .all(|ch| ch.is_ascii_digit() || "+*#".contains(ch));
                if !ok {
                    return Ok(failed(
                        self,
                        "DestinationInvalidNumber",
                        format!("'{dest}' is not a dialable number"),
                    ));
                }
                out.push(self.route_used(&c, req, &route_type, &dest));
                self.set_routed(id, user_data);
                if let Some(cm) = self.calls.get_mut(&id) {
                    cm.dest_type = "External".into();
                    cm.destination = dest.clone();
                    cm.state = "CallOriginated".into();
                }
            }
            _ => {
                out.push(self.route_used(&c, req, &route_type, &c.service.to_string()));
                self.set_routed(id, user_data);
                out.extend(self.deliver(id, c.service));
            }
        }
        Ok(out)
    }

    fn set_routed(&mut self, id: i64, user_data: Vec<(String, String)>) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.routing = Routing::Selected;
            c.data.extend(user_data);
        }
    }

    fn route_used(&self, c: &Call, req: &Req, route_type: &str, dest: &str) -> Emit {
        let mut f = self.call_fields(c);
        f.insert("RouteStatus".into(), V::Enum("RouteSuccess".into()));
        f.insert("RouteType".into(), V::Enum(route_type.into()));
        f.insert("RouteDestination".into(), V::Str(dest.into()));
        emit("CTIRouteUsed", f, Some(req))
    }

    /// The far end hangs up: CallCleared(FarEnd), CallEnd; the agent goes to Wrap.
    pub fn hangup(&mut self, id: i64, party: &str, req: Option<&Req>) -> Vec<Emit> {
        let Some(c) = self.calls.remove(&id) else {
            return Vec::new();
        };
        if c.agent != 0 {
            self.wrapping.insert(id, c.clone());
        }
        let mut out = Vec::new();
        let mut f = self.call_fields(&c);
        f.insert("ClearingPartyType".into(), V::Enum(party.into()));
        out.push(emit("CTICallCleared", f, req));
        if let Some(a) = self.agents.get_mut(&c.agent) {
            a.state = "Wrap".into();
            let a = a.clone();
            out.push(self.agent_state_event(&a, None));
        }
        let mut f = self.call_fields(&c);
        f.insert(
            "CallData".into(),
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
        );
        out.push(emit("CTICallEnd", f, None));
        out
    }

    /// The agent/call operations of the AgentCallService.
    pub fn agent_call_op(&mut self, op: &str, req: &Req, f: &Fields) -> Result<Vec<Emit>, Refusal> {
        let r = Some(req);
        match op {
            "LoginAgent" => {
                let login = get_str(f, "AgentLoginName");
                let Some(a) = self.agents.values().find(|a| a.login == login).cloned() else {
                    return Ok(vec![self.login_failed(
                        req,
                        0,
                        &login,
                        "InvalidAgentName",
                        "no such agent",
                    )]);
                };
                if a.logged_in {
                    return Ok(vec![self.login_failed(
                        req,
                        a.id,
                        &login,
                        "AgentAlreadyLoggedIn",
                        "agent is already logged in",
                    )]);
                }
                let init = match get_str(f, "InitState").as_str() {
                    "" | "INVALID" => "NotReady".to_string(),
                    s => s.to_string(),
                };
                let station = get_str(f, "StationId");
                let ag = self
                    .agents
                    .get_mut(&a.id)
                    .ok_or_else(|| refuse("GeneralError", "agent vanished"))?;
                ag.logged_in = true;
                ag.state = init;
                ag.station = station.clone();
                let ag = ag.clone();
                let lf = fields([
                    ("AgentId", V::Int(ag.id)),
                    ("AgentLoginName", V::Str(ag.login.clone())),
                    ("LoginState", V::Enum("AgentLoggedIn".into())),
                    (
                        "AgentCapabilities",
                        V::Arr(vec![V::Enum("StandardAgent".into())]),
                    ),
                    ("AgentStationAddress", V::Str(station)),
                    ("AgentCTIId", V::Int(ag.id)),
                    (
                        "ServiceState",
                        V::Arr(
                            ag.services
                                .iter()
                                .map(|s| {
                                    V::Obj(fields([
                                        ("ServiceId", V::Int(*s)),
                                        ("ServiceState", V::Enum("Active".into())),
                                    ]))
                                })
                                .collect(),
                        ),
                    ),
                ]);
                Ok(vec![
                    emit("CTIAgentLoginStateChange", lf, r),
                    self.agent_state_event(&ag, r),
                ])
            }
            "LogoutAgent" => {
                let idx = self.agent_by_idx(f)?;
                self.logout(req, &[idx])
            }
            "PanicLogoutAgent" => {
                let ids: Vec<i64> = if f.get("LogoutAllAgents").is_some_and(V::bool) {
                    self.agents
                        .values()
                        .filter(|a| a.logged_in)
                        .map(|a| a.id)
                        .collect()
                } else {
                    let names: Vec<String> = f
                        .get("AgentLoginNameList")
                        .map(|v| v.arr().iter().map(V::text).collect())
                        .unwrap_or_default();
                    let mut ids: Vec<i64> = self
                        .agents
                        .values()
                        .filter(|a| names.contains(&a.login))
                        .map(|a| a.id)
                        .collect();
                    let idx = get_int(f, "AgentIdx");
                    if self.agents.contains_key(&idx) && !ids.contains(&idx) {
                        ids.push(idx);
                    }
                    ids
                };
                self.logout(req, &ids)
            }
            "SetAgentState" => {
                let idx = self.agent_by_idx(f)?;
                let state = get_str(f, "NewState");
                let a = self
                    .agents
                    .get_mut(&idx)
                    .ok_or_else(|| refuse("InvalidParameter", "unknown agent"))?;
                if !a.logged_in {
                    return Ok(vec![self.agent_failed(
                        req,
                        idx,
                        0,
                        "InvalidStateForRequest",
                        "agent is not logged in",
                    )]);
                }
                if a.call != 0
                    && matches!(state.as_str(), "Idle" | "NotReady")
                    && a.state == "Active"
                {
                    let call = a.call;
                    return Ok(vec![self.agent_failed(
                        req,
                        idx,
                        call,
                        "InvalidStateForRequest",
                        "agent is on a call",
                    )]);
                }
                a.state = state;
                let a = a.clone();
                Ok(vec![self.agent_state_event(&a, r)])
            }
            "GetAgentState" => {
                let idx = self.agent_by_idx(f)?;
                let a = self
                    .agents
                    .get(&idx)
                    .cloned()
                    .ok_or_else(|| refuse("InvalidParameter", "unknown agent"))?;
                let mut e = self.agent_state_event(&a, r);
                e.to = Target::Session(req.session.clone());
                Ok(vec![e])
            }
            "SetDisposition" => {
                let idx = self.agent_by_idx(f)?;
                let a = self
                    .agents
                    .get_mut(&idx)
                    .ok_or_else(|| refuse("InvalidParameter", "unknown agent"))?;
                if a.state != "Wrap" && a.state != "WrapWarning" {
                    return Ok(vec![self.agent_failed(
                        req,
                        idx,
                        get_int(f, "CallId"),
                        "InvalidStateForRequest",
                        "agent is not in wrap",
                    )]);
                }
                let call = if a.call != 0 {
                    a.call
                } else {
                    get_int(f, "CallId")
                };
                a.call = 0;
                a.state = "Idle".into();
                let a = a.clone();
                let ended = self
                    .wrapping
                    .remove(&call)
                    .or_else(|| self.calls.get(&call).cloned());
                let mut cf = match &ended {
                    Some(c) => self.call_fields(c),
                    None => fields([("CallId", V::Int(call))]),
                };
                cf.insert("AgentId".into(), V::Int(idx));
                Ok(vec![
                    emit("CTICallCompleted", cf, r),
                    self.agent_state_event(&a, None),
                ])
            }
            "MakeCall" => {
                let idx = self.agent_by_idx(f)?;
                let a = self
                    .agents
                    .get(&idx)
                    .cloned()
                    .ok_or_else(|| refuse("InvalidParameter", "unknown agent"))?;
                if !a.logged_in || a.call != 0 {
                    return Ok(vec![self.agent_failed(
                        req,
                        idx,
                        0,
                        "InvalidStateForRequest",
                        "agent cannot make a call now",
                    )]);
                }
                let dest = get_str(f, "DestinationAddress");
                let dest_type = get_str(f, "DestinationType");
                if dest.is_empty() {
                    return Err(refuse("InvalidDestination", "DestinationAddress is empty"));
                }
                let id = self.new_call(
                    get_int(f, "ServiceId"),
                    "OutboundMakecall",
                    &a.station,
                    &dest,
                );
                let c = {
                    let c = self
                        .calls
                        .get_mut(&id)
                        .ok_or_else(|| refuse("GeneralError", "call vanished"))?;
                    c.agent = idx;
                    c.state = "CallEstablished".into();
                    c.dest_type = dest_type.clone();
                    c.destination = dest.clone();
                    c.clone()
                };
                if let Some(ag) = self.agents.get_mut(&idx) {
                    ag.call = id;
                    ag.state = "Active".into();
                }
                let mut of = self.call_fields(&c);
                of.insert("DestType".into(), V::Enum(dest_type));
                of.insert("Destination".into(), V::Str(dest.clone()));
                of.insert("CallProgressSignal".into(), V::Enum("Ringing".into()));
                let mut ef = self.call_fields(&c);
                ef.insert("MediaType".into(), V::Enum("VoiceSip".into()));
                ef.insert("ANI".into(), V::Str(c.ani.clone()));
                ef.insert("DNIS".into(), V::Str(dest));
                let ag = self
                    .agents
                    .get(&idx)
                    .cloned()
                    .ok_or_else(|| refuse("GeneralError", "agent vanished"))?;
                Ok(vec![
                    emit("CTICallStarted", self.call_fields(&c), r),
                    emit("CTICallOriginated", of, r),
                    emit("CTICallEstablished", ef, r),
                    self.agent_state_event(&ag, None),
                ])
            }
            "AcceptCall" => {
                let idx = self.agent_by_idx(f)?;
                let id = self.call_by_id(f)?;
                let c = self
                    .calls
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| refuse("InvalidCallId", "unknown call"))?;
                if c.agent != idx || c.state != "CallConnected" {
                    return Ok(vec![self.call_failed(
                        req,
                        id,
                        "InvalidStateForRequest",
                        "call is not offered to this agent",
                    )]);
                }
                if f.get("AcceptCall").is_some_and(V::bool) {
                    if let Some(cm) = self.calls.get_mut(&id) {
                        cm.state = "CallEstablished".into();
                    }
                    let mut ef = self.call_fields(&c);
                    ef.insert("MediaType".into(), V::Enum("VoiceSip".into()));
                    ef.insert("ANI".into(), V::Str(c.ani.clone()));
                    ef.insert("DNIS".into(), V::Str(c.dnis.clone()));
                    let a = self
                        .agents
                        .get_mut(&idx)
                        .ok_or_else(|| refuse("InvalidParameter", "unknown agent"))?;
                    a.state = "Active".into();
                    let a = a.clone();
                    Ok(vec![
                        emit("CTICallEstablished", ef, r),
                        self.agent_state_event(&a, None),
                    ])
                } else {
                    let a = self
                        .agents
                        .get_mut(&idx)
                        .ok_or_else(|| refuse("InvalidParameter", "unknown agent"))?;
                    a.state = "Idle".into();
                    a.call = 0;
                    let a = a.clone();
                    if let Some(cm) = self.calls.get_mut(&id) {
                        cm.agent = 0;
                    }
                    let mut out = vec![self.agent_state_event(&a, r)];
                    out.extend(self.deliver(id, c.service));
                    Ok(out)
                }
            }
            "ClearCall" => {
                self.agent_by_idx(f)?;
                let id = self.call_by_id(f)?;
                Ok(self.hangup(id, "NearEnd", r))
            }
            "HoldCall" | "RetrieveCall" => {
                self.agent_by_idx(f)?;
                let id = self.call_by_id(f)?;
                let (want, next, kind) = if op == "HoldCall" {
                    ("CallEstablished", "CallHeld", "CTICallHeld")
                } else {
                    ("CallHeld", "CallRetrieved", "CTICallRetrieved")
                };
                let c = self
                    .calls
                    .get_mut(&id)
                    .ok_or_else(|| refuse("InvalidCallId", "unknown call"))?;
                let ok = c.state == want || (op == "HoldCall" && c.state == "CallRetrieved");
                if !ok {
                    let why = format!("call is {}", c.state);
                    return Ok(vec![self.call_failed(
                        req,
                        id,
                        "InvalidStateForRequest",
                        &why,
                    )]);
                }
                c.state = next.into();
                let c = c.clone();
                Ok(vec![emit(kind, self.call_fields(&c), r)])
            }
            "ConsultationCall" => {
                let idx = self.agent_by_idx(f)?;
                let id = self.call_by_id(f)?;
                let dest = get_str(f, "DestinationAddress");
                if dest.is_empty() {
                    return Err(refuse("InvalidDestination", "DestinationAddress is empty"));
                }
                let consult =
                    self.new_call(get_int(f, "ServiceId"), "OutboundConsultation", "", &dest);
                let held = self
                    .calls
                    .get_mut(&id)
                    .ok_or_else(|| refuse("InvalidCallId", "unknown call"))?;
                held.state = "CallHeld".into();
                let held = held.clone();
                let cc = {
                    let cc = self
                        .calls
                        .get_mut(&consult)
                        .ok_or_else(|| refuse("GeneralError", "call vanished"))?;
                    cc.agent = idx;
                    cc.state = "CallConsulting".into();
                    cc.destination = dest;
                    cc.dest_type = get_str(f, "DestinationType");
                    cc.clone()
                };
                let mut cf = self.call_fields(&held);
                cf.insert("ConsultationCallId".into(), V::Int(cc.id));
                Ok(vec![
                    emit("CTICallHeld", self.call_fields(&held), r),
                    emit("CTICallConsultation", cf, r),
                ])
            }
            "ConferenceCall" | "TransferCall" => {
                let idx = self.agent_by_idx(f)?;
                let id = self.call_by_id(f)?;
                let consult = get_int(f, "ConsultationCallId");
                let c = self
                    .calls
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| refuse("InvalidCallId", "unknown call"))?;
                if op == "ConferenceCall" {
                    if !self.calls.contains_key(&consult) {
                        return Err(refuse(
                            "InvalidCallId",
                            format!("unknown ConsultationCallId {consult}"),
                        ));
                    }
                    self.calls.remove(&consult);
                    if let Some(cm) = self.calls.get_mut(&id) {
                        cm.state = "CallConferenced".into();
                    }
                    let mut cf = self.call_fields(&c);
                    cf.insert("ConsultingCallId".into(), V::Int(id));
                    cf.insert("ConsultedCallId".into(), V::Int(consult));
                    cf.insert("ConferenceCallId".into(), V::Int(id));
                    return Ok(vec![emit("CTICallConferenced", cf, r)]);
                }
                let blind = get_str(f, "TransferType") != "Consultation";
                if !blind && !self.calls.contains_key(&consult) {
                    return Err(refuse(
                        "InvalidCallId",
                        format!("unknown ConsultationCallId {consult}"),
                    ));
                }
                if blind && get_str(f, "DestinationAddress").is_empty() {
                    return Err(refuse("InvalidDestination", "DestinationAddress is empty"));
                }
                self.calls.remove(&consult);
                if let Some(cm) = self.calls.get_mut(&id) {
                    cm.state = "CallTransferred".into();
                    cm.agent = 0;
                    cm.destination = get_str(f, "DestinationAddress");
                }
                let mut tf = self.call_fields(&c);
                tf.insert("ConsultingCallId".into(), V::Int(id));
                tf.insert(
                    "ConsultedCallId".into(),
                    V::Int(if blind { 0 } else { consult }),
                );
                tf.insert("TransferredCallId".into(), V::Int(id));
                tf.insert("TransferredCallSwitchId".into(), V::Int(self.switch));
                let mut out = vec![emit("CTICallTransferred", tf, r)];
                if let Some(a) = self.agents.get_mut(&idx) {
                    a.state = "Wrap".into();
                    let a = a.clone();
                    out.push(self.agent_state_event(&a, None));
                }
                Ok(out)
            }
            "SendDTMFDigits" => {
                self.agent_by_idx(f)?;
                let id = self.call_by_id(f)?;
                let digits = get_str(f, "DtmfDigits");
                if digits.is_empty()
                    || !digits
                        .chars()
                        .all(|c| c.is_ascii_digit() || "*#ABCD".contains(c))
                {
                    return Err(refuse(
                        "InvalidParameter",
                        format!("'{digits}' is not a DTMF string"),
                    ));
                }
                let c = self
                    .calls
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| refuse("InvalidCallId", "unknown call"))?;
                let mut df = self.call_fields(&c);
                df.insert("DigitString".into(), V::Str(digits));
                Ok(vec![emit("CTIDigitsDialed", df, r)])
            }
            "GetCallData" | "SetCallData" => {
                self.agent_by_idx(f)?;
                let id = self.call_by_id(f)?;
                if op == "SetCallData" {
                    let items = f
                        .get("UserData")
                        .map(|v| v.arr().to_vec())
                        .unwrap_or_default();
                    if items.len() > 20 {
                        return Err(refuse(
                            "InvalidParameter",
                            "UserData holds at most 20 items",
                        ));
                    }
                    if let Some(c) = self.calls.get_mut(&id) {
                        for (i, it) in items.iter().enumerate() {
                            let key = format!("UserData{}", i + 1);
                            c.data.retain(|(k, _)| *k != key);
                            c.data.push((key, it.text()));
                        }
                    }
                }
                let c = self
                    .calls
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| refuse("InvalidCallId", "unknown call"))?;
                let mut df = self.call_fields(&c);
                if let V::Obj(info) = Self::call_info(&c) {
                    if let Some(d) = info.get("CallData") {
                        df.insert("CallData".into(), d.clone());
                    }
                }
                df.insert(
                    "UpdateType".into(),
                    V::Enum(
                        if op == "GetCallData" {
                            "GetCallDataReturned"
                        } else {
                            "SetCallDataSucceeded"
                        }
                        .into(),
                    ),
                );
                let mut e = emit("CTICallDataUpdate", df, r);
                e.to = Target::Session(req.session.clone());
                Ok(vec![e])
            }
            other => Err(refuse(
                "UnknownRequest",
                format!("{other} is not an agent or call request"),
            )),
        }
    }

    fn login_failed(&self, req: &Req, agent: i64, login: &str, ty: &str, reason: &str) -> Emit {
        Emit {
            kind: "CTIAgentLoginRequestFailed",
            fields: fields([
                ("AgentId", V::Int(agent)),
                ("AgentLoginName", V::Str(login.into())),
                ("FailureType", V::Enum(ty.into())),
                ("FailureReason", V::Str(reason.into())),
            ]),
            to: Target::Session(req.session.clone()),
            request: Some((req.session.clone(), req.request_id)),
        }
    }

    fn logout(&mut self, req: &Req, ids: &[i64]) -> Result<Vec<Emit>, Refusal> {
        let mut out = Vec::new();
        for id in ids {
            let Some(a) = self.agents.get_mut(id) else {
                continue;
            };
            if !a.logged_in {
                let login = a.login.clone();
                out.push(self.login_failed(
                    req,
                    *id,
                    &login,
                    "InvalidStateForRequest",
                    "agent is not logged in",
                ));
                continue;
            }
            a.logged_in = false;
            a.state = "INVALID".into();
            a.call = 0;
            self.wrapping.retain(|_, c| c.agent != *id);
            let a = a.clone();
            out.push(emit(
                "CTIAgentLoginStateChange",
                fields([
                    ("AgentId", V::Int(a.id)),
                    ("AgentLoginName", V::Str(a.login.clone())),
                    ("LoginState", V::Enum("AgentLoggedOut".into())),
                    ("AgentStationAddress", V::Str(a.station.clone())),
                    ("AgentCTIId", V::Int(a.id)),
                ]),
                Some(req),
            ));
        }
        Ok(out)
    }

    /// SnapShotUpdate events for the requested entity types, each type closed by an update
    /// with SnapShotTypeComplete=true and no data (SIM-6).
    pub fn snapshot(&self, req: &Req, types: &[String]) -> Vec<Emit> {
        let mut out = Vec::new();
        for t in types {
            let mut items: Vec<(&str, V)> = Vec::new();
            match t.as_str() {
                "AgentInfo" => {
                    for a in self.agents.values().filter(|a| a.logged_in) {
                        items.push((
                            "AgentData",
                            V::Obj(fields([
                                ("AgentId", V::Int(a.id)),
                                ("AgentLoginName", V::Str(a.login.clone())),
                                (
                                    "AgentCapabilities",
                                    V::Arr(vec![V::Enum("StandardAgent".into())]),
                                ),
                                ("CallId", V::Int(a.call)),
                                ("SwitchId", V::Int(self.switch)),
                                ("AgentState", V::Enum(a.state.clone())),
                                (
                                    "Services",
                                    V::Arr(
                                        a.services
                                            .iter()
                                            .map(|s| {
                                                V::Obj(fields([
                                                    ("ServiceId", V::Int(*s)),
                                                    ("ServiceState", V::Enum("Active".into())),
                                                ]))
                                            })
                                            .collect(),
                                    ),
                                ),
                                ("MediaType", V::Enum("VoiceSip".into())),
                                ("AgentStationAddress", V::Str(a.station.clone())),
                            ])),
                        ));
                    }
                }
                "CallInfo" => {
                    for c in self.calls.values() {
                        items.push((
                            "CallData",
                            V::Obj(fields([
                                ("CallId", V::Int(c.id)),
                                ("CallSequenceId", V::Int(c.seq)),
                                ("CallOriginatingSiteId", V::Int(self.site)),
                                ("SwitchId", V::Int(self.switch)),
                                ("ServiceId", V::Int(c.service)),
                                ("DestType", V::Enum(c.dest_type.clone())),
                                ("Destination", V::Str(c.destination.clone())),
                                ("CallState", V::Enum(c.state.clone())),
                                ("ANI", V::Str(c.ani.clone())),
                                ("DNIS", V::Str(c.dnis.clone())),
                                ("CallType", V::Enum(c.call_type.clone())),
                                ("AgentId", V::Int(c.agent)),
                                ("MediaType", V::Enum("VoiceSip".into())),
                            ])),
                        ));
                    }
                }
                "ServiceInfo" => {
                    for s in self.services.values() {
                        items.push((
                            "ServiceData",
                            V::Obj(fields([
                                ("ServiceId", V::Int(s.id)),
                                ("ServiceState", V::Enum(s.state.clone())),
                                ("ExternalRoutingEnabled", V::Bool(s.external_routing)),
                            ])),
                        ));
                    }
                }
                _ => {
                    out.push(Emit {
                        kind: "CTISnapShotRequestFailed",
                        fields: fields([
                            ("FailureType", V::Enum("InvalidStateForRequest".into())),
                            ("FailureReason", V::Str(format!("unknown entity type {t}"))),
                        ]),
                        to: Target::Session(req.session.clone()),
                        request: Some((req.session.clone(), req.request_id)),
                    });
                    continue;
                }
            }
            let done = (String::new(), V::Nil);
            for (member, data) in items
                .into_iter()
                .map(|(m, v)| (m.to_string(), v))
                .chain(std::iter::once(done))
            {
                let mut f = fields([
                    ("SnapShotType", V::Enum(t.clone())),
                    ("SnapShotTypeComplete", V::Bool(member.is_empty())),
                ]);
                if !member.is_empty() {
                    f.insert(member, data);
                }
                out.push(Emit {
                    kind: "CTISnapShotUpdate",
                    fields: f,
                    to: Target::Session(req.session.clone()),
                    request: Some((req.session.clone(), req.request_id)),
                });
            }
        }
        out
    }

    /// Does an event pass a session's filters? Filters of one field type are alternatives,
    /// different field types must all match; a field an event does not carry (0) is not
    /// filtered; system events are never filtered (SIM-5).
    pub fn passes_filters(&self, kind: &str, f: &Fields, filters: &[(String, String)]) -> bool {
        if filters.is_empty() || category_and_type(kind).0 == "EventCategorySystem" {
            return true;
        }
        let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (t, v) in filters {
            by_type.entry(t.as_str()).or_default().push(v.as_str());
        }
        by_type.iter().all(|(t, values)| {
            let member = match *t {
                "FT_AGENT_ID" => "AgentId",
                "FT_SERVICE_ID" => "ServiceId",
                "FT_SWITCH_ID" => "SwitchId",
                "FT_TENANT_ID" => "TenantId",
                _ => return true,
            };
            let have = get_int(f, member);
            if have == 0 {
                return true;
            }
            values.iter().any(|v| {
                v.trim().parse::<i64>().ok() == Some(have)
                    || (*t == "FT_AGENT_ID"
                        && self.agents.get(&have).is_some_and(|a| a.login == *v))
            })
        })
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
