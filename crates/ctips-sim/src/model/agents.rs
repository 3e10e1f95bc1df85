//! The AgentCallService: login and logout, agent states, and the agent's operations on
//! calls (answer, hold, transfer, conference, disposition, ...).

use super::{emit, refuse, Emit, Model, Refusal, Req, Target};
use crate::wire::{fields, get_int, get_str, Fields, V};

impl Model {
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
}
