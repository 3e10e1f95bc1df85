//! SnapShotUpdate answers and the sessions' event filters.

use std::collections::BTreeMap;

use super::{category_and_type, Emit, Model, Req, Target};
use crate::wire::{fields, get_int, Fields, V};

impl Model {
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
