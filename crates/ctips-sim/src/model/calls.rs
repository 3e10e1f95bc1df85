//! Calls: arrival, delivery to a service, routing (RouteRequest, RouteSelect, the route
//! timeout), connection to an agent and hang-up.

use super::{emit, emit_to, refuse, Call, Emit, Model, Refusal, Req, Routing, Target};
use crate::wire::{fields, get_str, Fields, V};

impl Model {
    pub(super) fn new_call(&mut self, service: i64, call_type: &str, ani: &str, dnis: &str) -> i64 {
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

    pub(super) fn deliver(&mut self, id: i64, service: i64) -> Vec<Emit> {
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
}
