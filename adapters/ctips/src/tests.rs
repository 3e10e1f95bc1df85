//! Unit tests with an in-memory gateway (entities, aliases, events) and a scripted CTIPS.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ivrgate_adapter::action::{Action, Envelope};
use ivrgate_adapter::{
    Adapter, AliasChange, Answer, AnswerSource, BoxFuture, Change, Command, ConnectorCtx,
    ConnectorExit, ConnectorHealth, ConnectorSpec, Decision, DecisionRequest, Entity, EntityEvent,
    EntityKey, EventSubmission, Gateway, Inbound, LeaseInfo, OutboundError, OutboundRequest,
    OutboundResponse, ParsedSettings, PathSegments, PlatformClient, RecordError, Recorded,
    StopReason, TransitionFn, Transitioned, Waited,
};
use serde_json::{json, Map, Value};

use crate::proto::{self, Request, Service};
use crate::{event, route, xml, Ctips, Settings};

const TOKEN: &str = "cb-token-0123456789abcdef";

fn settings_json() -> Value {
    json!({
        "servers": ["http://primary.test/Aspect.UnifiedIP.EDK.CTIPortalService",
                    "http://backup.test/Aspect.UnifiedIP.EDK.CTIPortalService"],
        "username": "ivrgate",
        "password": "s3cret&<pw>",
        "callback_token": TOKEN,
        "heartbeat_interval_s": 1,
        "missed_heartbeats": 1,
        "filters": [{"type": "service", "value": "3"}],
        "user_data_fields": ["acct", "lang"],
    })
}

fn settings() -> Settings {
    Settings::from_json(&settings_json()).unwrap().unwrap()
}

// ---------------------------------------------------------------- the in-memory gateway

#[derive(Default)]
struct Store {
    entities: BTreeMap<EntityKey, Entity>,
    seqs: HashMap<EntityKey, u64>,
    aliases: HashMap<(String, String), EntityKey>,
    events: Vec<(EntityKey, u64, EntityEvent)>,
    next_id: u64,
}

pub(crate) struct Fake {
    pub(crate) epoch: u64,
    store: Mutex<Store>,
    settings: ParsedSettings,
    held: Mutex<Option<u64>>,
    pub(crate) answer: Mutex<Answer>,
    /// How long the customer takes to answer a decision.
    decide_delay: Mutex<Duration>,
    decisions: Mutex<Vec<DecisionRequest>>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Fake::with(settings_json())
    }

    pub(crate) fn with(settings: Value) -> Arc<Fake> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);
        let epoch = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(Fake {
            epoch,
            store: Mutex::new(Store::default()),
            settings: Ctips.parse_settings(&settings).unwrap(),
            held: Mutex::new(Some(epoch)),
            answer: Mutex::new(Answer::Action(Envelope::new(Action::Default {}))),
            decide_delay: Mutex::new(Duration::ZERO),
            decisions: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn path(&self) -> [String; 2] {
        [TOKEN.to_owned(), self.epoch.to_string()]
    }

    pub(crate) fn events(&self) -> Vec<(EntityKey, u64, EntityEvent)> {
        self.store.lock().unwrap().events.clone()
    }

    pub(crate) fn types(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .map(|(_, _, e)| e.event_type)
            .collect()
    }

    pub(crate) fn entity(&self, kind: &str, id: &str) -> Option<Entity> {
        self.store
            .lock()
            .unwrap()
            .entities
            .get(&EntityKey::new("t1", kind, id))
            .cloned()
    }
}

impl Gateway for Fake {
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let delay = *self.decide_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let answer = self.answer.lock().unwrap().clone();
            let attached = match &answer {
                Answer::Action(e) => e.attach.clone(),
                Answer::Native(_) => Map::new(),
            };
            let id = format!("dec_{}", self.decisions.lock().unwrap().len() + 1);
            self.decisions.lock().unwrap().push(request);
            Decision {
                decision_id: id,
                call_id: None,
                answer,
                source: AnswerSource::Customer,
                attached,
            }
        })
    }

    fn record<'a>(
        &'a self,
        _event: EventSubmission,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async { Err(RecordError::Unavailable("not used".into())) })
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn settings(&self, tenant: &str, adapter: &str) -> Option<ParsedSettings> {
        (tenant == "t1" && adapter == "ctips").then(|| self.settings.clone())
    }

    fn load<'a>(&'a self, key: EntityKey) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(async move { Ok(self.store.lock().unwrap().entities.get(&key).cloned()) })
    }

    fn find<'a>(
        &'a self,
        _tenant: &'a str,
        namespace: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(async move {
            let store = self.store.lock().unwrap();
            Ok(store
                .aliases
                .get(&(namespace.to_owned(), value.to_owned()))
                .and_then(|k| store.entities.get(k))
                .cloned())
        })
    }

    fn list<'a>(
        &'a self,
        _tenant: &'a str,
        kind: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entity>, RecordError>> {
        Box::pin(async move {
            Ok(self
                .store
                .lock()
                .unwrap()
                .entities
                .values()
                .filter(|e| e.key.kind == kind && e.state.is_some())
                .take(limit)
                .cloned()
                .collect())
        })
    }

    fn transition<'a>(
        &'a self,
        keys: Vec<EntityKey>,
        f: &'a mut TransitionFn<'a>,
    ) -> BoxFuture<'a, Result<Transitioned, RecordError>> {
        Box::pin(async move {
            let mut store = self.store.lock().unwrap();
            let read: Vec<Option<Entity>> = keys
                .iter()
                .map(|k| store.entities.get(k).cloned())
                .collect();
            let changes = f(&read);
            // Alias claims first (all or nothing).
            for (key, change) in keys.iter().zip(&changes) {
                if let Change::Write(w) = change {
                    for a in &w.aliases {
                        if let AliasChange::Claim {
                            namespace, value, ..
                        } = a
                        {
                            if let Some(owner) =
                                store.aliases.get(&(namespace.clone(), value.clone()))
                            {
                                let released = keys.iter().zip(&changes).any(|(k, c)| {
                                    k == owner
                                        && matches!(c, Change::Write(w) if w.aliases.iter().any(|a| matches!(a, AliasChange::Release { namespace: n, value: v } if n == namespace && v == value)))
                                });
                                if owner != key && !released {
                                    return Ok(Transitioned::AliasTaken {
                                        namespace: namespace.clone(),
                                        value: value.clone(),
                                        owner: owner.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
            let mut out = Vec::new();
            for (key, change) in keys.iter().zip(changes) {
                let Change::Write(w) = change else {
                    out.push(store.entities.get(key).cloned());
                    continue;
                };
                for a in &w.aliases {
                    if let AliasChange::Release { namespace, value } = a {
                        if store.aliases.get(&(namespace.clone(), value.clone())) == Some(key) {
                            store.aliases.remove(&(namespace.clone(), value.clone()));
                        }
                    }
                }
                for a in &w.aliases {
                    if let AliasChange::Claim {
                        namespace, value, ..
                    } = a
                    {
                        store
                            .aliases
                            .insert((namespace.clone(), value.clone()), key.clone());
                    }
                }
                store.next_id += 1;
                let next_id = store.next_id;
                let entity = store.entities.entry(key.clone()).or_insert(Entity {
                    key: key.clone(),
                    entity_id: format!("ent_{next_id}"),
                    version: 0,
                    status: "active".into(),
                    state: None,
                    attached: Map::new(),
                    expires_at: None,
                });
                entity.version += 1;
                entity.status = if w.state.is_some() { "active" } else { "ended" }.into();
                entity.state = w.state;
                entity.expires_at = w.expires_at;
                let entity = entity.clone();
                for e in w.events {
                    let seq = store.seqs.entry(key.clone()).or_insert(0);
                    *seq += 1;
                    let seq = *seq;
                    store.events.push((key.clone(), seq, e));
                }
                out.push(Some(entity));
            }
            Ok(Transitioned::Done(out))
        })
    }

    fn wait_change<'a>(
        &'a self,
        key: EntityKey,
        seen: Option<i64>,
        timeout: Duration,
    ) -> BoxFuture<'a, Waited> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            loop {
                let now = self.store.lock().unwrap().entities.get(&key).cloned();
                if now.as_ref().map(|e| e.version) != seen {
                    return Waited::Changed(now);
                }
                if started.elapsed() >= timeout {
                    return Waited::TimedOut;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }

    fn lease<'a>(
        &'a self,
        tenant: &'a str,
        adapter: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<LeaseInfo>, RecordError>> {
        Box::pin(async move {
            Ok(self
                .held_epoch(tenant, adapter, name)
                .map(|epoch| LeaseInfo {
                    holder: "owner-a".into(),
                    epoch,
                    until_ms: crate::store::now_ms(SystemTime::now()) + 10_000,
                    held_here: true,
                }))
        })
    }

    fn held_epoch(&self, tenant: &str, adapter: &str, name: &str) -> Option<u64> {
        if tenant == "t1" && adapter == "ctips" && name == "session" {
            *self.held.lock().unwrap()
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------- the scripted CTIPS

/// Answers every request like a healthy CTIPS (session ids `S-{n}`), except servers listed
/// in `down` (connection refused) and the faults in `fault_op`.
#[derive(Default)]
struct Script {
    log: Vec<(String, String, String)>, // (url, op, body)
    down: Vec<String>,
    fault_open: Option<String>,
    sessions: u32,
}

struct FakeHttp {
    script: Mutex<Script>,
}

impl FakeHttp {
    fn new() -> Arc<FakeHttp> {
        Arc::new(FakeHttp {
            script: Mutex::new(Script::default()),
        })
    }

    fn ops(&self) -> Vec<String> {
        self.script
            .lock()
            .unwrap()
            .log
            .iter()
            .map(|(u, op, _)| format!("{}:{op}", if u.contains("primary") { "P" } else { "B" }))
            .collect()
    }

    fn bodies(&self, op: &str) -> Vec<String> {
        self.script
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(_, o, _)| o == op)
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

fn soap_ok(body: &str) -> OutboundResponse {
    OutboundResponse {
        status: 200,
        content_type: Some("text/xml; charset=utf-8".into()),
        body: Bytes::from(format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>{body}</s:Body></s:Envelope>"
        )),
    }
}

fn soap_fault(code: &str) -> OutboundResponse {
    OutboundResponse {
        status: 500,
        content_type: Some("text/xml; charset=utf-8".into()),
        body: Bytes::from(format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring xml:lang=\"en-US\">refused</faultstring><detail><CTIPortalServiceFault xmlns=\"{}\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><ErrorCode>{code}</ErrorCode><Message>no</Message></CTIPortalServiceFault></detail></s:Fault></s:Body></s:Envelope>",
            proto::NS_API
        )),
    }
}

impl PlatformClient for FakeHttp {
    fn post(
        &self,
        request: OutboundRequest,
    ) -> BoxFuture<'_, Result<OutboundResponse, OutboundError>> {
        Box::pin(async move {
            let body = String::from_utf8(request.body.to_vec()).unwrap();
            let action = request
                .headers
                .iter()
                .find(|(k, _)| k == "SOAPAction")
                .map(|(_, v)| v.trim_matches('"').to_owned())
                .unwrap();
            let op = action.rsplit('/').next().unwrap().to_owned();
            let mut s = self.script.lock().unwrap();
            s.log.push((request.url.clone(), op.clone(), body));
            if s.down.iter().any(|d| request.url.contains(d.as_str())) {
                return Err(OutboundError::Connect("connection refused".into()));
            }
            if op == "OpenConnection" {
                if let Some(code) = &s.fault_open {
                    return Ok(soap_fault(code));
                }
                s.sessions += 1;
                return Ok(soap_ok(&format!(
                    "<OpenConnectionResponse xmlns=\"{api}\"><OpenConnectionResult xmlns:a=\"{api}\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><a:Response>success</a:Response><a:SessionId>S-{n}</a:SessionId></OpenConnectionResult></OpenConnectionResponse>",
                    api = proto::NS_API,
                    n = s.sessions
                )));
            }
            Ok(soap_ok(&format!(
                "<{op}Response xmlns=\"{}\"><{op}Result>0</{op}Result></{op}Response>",
                proto::NS_API
            )))
        })
    }
}

pub(crate) struct Ctx {
    pub(crate) gw: Arc<Fake>,
    pub(crate) http: Arc<dyn PlatformClient>,
    pub(crate) advertise: String,
    pub(crate) spec: ConnectorSpec,
    pub(crate) stop: tokio::sync::watch::Sender<Option<StopReason>>,
    pub(crate) health: Mutex<Vec<ConnectorHealth>>,
}

impl ConnectorCtx for Ctx {
    fn gateway(&self) -> &dyn Gateway {
        &*self.gw
    }
    fn tenant(&self) -> &str {
        "t1"
    }
    fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }
    fn epoch(&self) -> u64 {
        self.gw.epoch
    }
    fn stopped(&self) -> BoxFuture<'_, StopReason> {
        let mut rx = self.stop.subscribe();
        Box::pin(async move {
            loop {
                if let Some(r) = *rx.borrow_and_update() {
                    return r;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }
    fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }
    fn http(&self) -> &dyn PlatformClient {
        &*self.http
    }
    fn advertise_url(&self) -> Option<&str> {
        Some(&self.advertise)
    }
    fn set_health(&self, health: ConnectorHealth) {
        self.health.lock().unwrap().push(health);
    }
}

fn inbound<S: AsRef<str>>(path: &[S], body: &str) -> Inbound {
    Inbound {
        tenant: "t1".into(),
        method: http::Method::POST,
        path: PathSegments::from_decoded(path.iter().map(|s| s.as_ref().to_owned())),
        query: None,
        headers: http::HeaderMap::new(),
        body: Bytes::from(body.to_owned()),
        peer: SocketAddr::from(([127, 0, 0, 1], 9)),
        mask_phones: false,
        max_depth: 32,
    }
}

fn publish(event_xml: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><PublishCTIEvent xmlns=\"{}\">{event_xml}</PublishCTIEvent></s:Body></s:Envelope>",
        proto::NS_PUB
    )
}

/// A `ctiEvent` of `ty` with the header and the given members (already in wire order).
fn cti_event(ty: &str, event_type: &str, category: &str, request_id: i64, members: &str) -> String {
    format!(
        "<ctiEvent i:type=\"a:CTI{ty}\" xmlns:a=\"{pub_}\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><a:EventCategory>{category}</a:EventCategory><a:EventType>{event_type}</a:EventType><a:SiteId>1</a:SiteId><a:TenantId>1</a:TenantId><a:RequestId>{request_id}</a:RequestId><a:SwitchId>1</a:SwitchId><a:ServiceId>3</a:ServiceId><a:AgentId>0</a:AgentId>{members}</ctiEvent>",
        pub_ = proto::NS_PUB
    )
}

fn call_event(ty: &str, call: i64, seq: i64) -> String {
    cti_event(
        ty,
        ty,
        "EventCategoryCall",
        0,
        &format!("<a:CallId>{call}</a:CallId><a:CallSequenceId>{seq}</a:CallSequenceId><a:CallOriginatingSiteId>1</a:CallOriginatingSiteId><a:ResourceGroupId>0</a:ResourceGroupId><a:CircuitId>0</a:CircuitId><a:ChannelId>0</a:ChannelId>"),
    )
}

fn route_request(call: i64, seq: i64, timeout_s: i64) -> String {
    cti_event(
        "RouteRequest",
        "RouteRequest",
        "EventCategoryRoute",
        0,
        &format!("<a:CallId>{call}</a:CallId><a:RouteTimeout>{timeout_s}</a:RouteTimeout><a:ResourceGroupId>1</a:ResourceGroupId><a:CircuitId>2</a:CircuitId><a:ChannelId>3</a:ChannelId><a:MediaType>VoiceSip</a:MediaType><a:SipIpAddress i:nil=\"true\"/><a:SipPortNumber>0</a:SipPortNumber><a:CallInfo><a:ANI>0501234567</a:ANI><a:DNIS>1800</a:DNIS><a:FirstName i:nil=\"true\"/><a:LastName i:nil=\"true\"/><a:PhoneNumber i:nil=\"true\"/><a:CallerId i:nil=\"true\"/><a:CallData xmlns:b=\"{cd}\"><b:CTICallDataItem><b:key>acct</b:key><b:value>42</b:value></b:CTICallDataItem></a:CallData></a:CallInfo><a:CallSequenceId>{seq}</a:CallSequenceId><a:CallOriginatingSiteId>1</a:CallOriginatingSiteId>", cd = proto::NS_CD),
    )
}

fn status_and_body(h: &ivrgate_adapter::Handled) -> (u16, String) {
    (
        h.response.status().as_u16(),
        String::from_utf8(h.response.body().to_vec()).unwrap(),
    )
}

// ---------------------------------------------------------------- settings

#[test]
fn settings_parse_defaults_and_secrets() {
    std::env::set_var("CTIPS_TEST_PW", "from-env");
    let mut v = settings_json();
    v["password"] = json!("env:CTIPS_TEST_PW");
    let s = Settings::from_json(&v).unwrap().unwrap();
    assert_eq!(s.password, "from-env");
    assert_eq!(s.route_margin_ms, 1500);
    assert_eq!(s.tenant_ids, vec![1]);
    assert_eq!(s.categories.len(), 4);
    assert_eq!(s.lost_after(), Duration::from_secs(1));
    assert!(!format!("{s:?}").contains("from-env"));
    assert!(Settings::from_json(&Value::Null).unwrap().is_none());
    // The fingerprint changes with any setting, including the servers.
    let mut w = settings_json();
    w["servers"] = json!(["http://other.test/x"]);
    let other = Settings::from_json(&w).unwrap().unwrap();
    assert_ne!(settings().spec().fingerprint, other.spec().fingerprint);
    assert_eq!(settings().spec().fingerprint, settings().spec().fingerprint);
}

#[test]
fn settings_problems_are_reported_one_per_line() {
    let v = json!({
        "servers": ["ftp://x", "http://user:pw@host/x"],
        "username": "",
        "password": "env:CTIPS_TEST_SURELY_UNSET",
        "callback_token": "short",
        "heartbeat_interval_s": 0,
        "missed_heartbeats": 1000,
        "categories": ["agent", "bogus"],
        "filters": [{"type": "nope", "value": "1"}],
        "route_to_agent_by": "name",
        "user_data_fields": (0..21).map(|i| format!("k{i}")).collect::<Vec<_>>(),
    });
    let problems = Settings::from_json(&v).unwrap_err();
    for needle in [
        "ftp://x",
        "credentials",
        "username",
        "CTIPS_TEST_SURELY_UNSET",
        "callback_token",
        "heartbeat_interval_s",
        "missed_heartbeats",
        "bogus",
        "nope",
        "route_to_agent_by",
        "user_data_fields",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle} not in {problems:?}"
        );
    }
    assert!(!problems.iter().any(|p| p.contains("pw@")));
    // Unknown keys are refused.
    let mut w = settings_json();
    w["heartbeat"] = json!(3);
    assert!(Settings::from_json(&w).is_err());
}

// ---------------------------------------------------------------- wire

#[test]
fn open_connection_is_written_in_wire_order() {
    let r = Request::new("OpenConnection", Service::Registration)
        .ints("TenantIds", vec![1])
        .credentials("UserCredentials", "u", "p<&>")
        .text("ClientCallbackURL", "http://h/ctips/t1/tok/7");
    assert_eq!(
        r.action(),
        "http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08/RegistrationService/OpenConnection"
    );
    assert_eq!(
        r.envelope(),
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
<OpenConnection xmlns=\"http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08\">\
<args xmlns:a=\"http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">\
<a:TenantIds xmlns:b=\"http://schemas.microsoft.com/2003/10/Serialization/Arrays\"><b:int>1</b:int></a:TenantIds>\
<a:UserCredentials xmlns:b=\"http://www.aspect.com/unifiedip/edk/commondata/2009/08\"><b:UserName>u</b:UserName><b:Password>p&lt;&amp;&gt;</b:Password></a:UserCredentials>\
<a:ClientCallbackURL>http://h/ctips/t1/tok/7</a:ClientCallbackURL></args></OpenConnection></s:Body></s:Envelope>"
    );
}

#[test]
fn replies_and_faults_are_read() {
    let ok = soap_ok(&format!(
        "<OnLineResponse xmlns=\"{}\"><OnLineResult>101</OnLineResult></OnLineResponse>",
        proto::NS_API
    ));
    assert_eq!(proto::read_reply("OnLine", &ok).unwrap().value(), "101");
    assert!(proto::is_success_code(101) && proto::is_success_code(0));
    assert!(!proto::is_success_code(405));
    let f =
        proto::read_reply("OpenConnection", &soap_fault("MaxNumberClientConnections")).unwrap_err();
    assert!(f.is_fault("MaxNumberClientConnections"), "{f:?}");
    let wrong = proto::read_reply("OffLine", &ok).unwrap_err();
    assert!(matches!(wrong, proto::CallError::Protocol(_)));
    let bomb = OutboundResponse {
        status: 200,
        content_type: None,
        body: Bytes::from("<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>"),
    };
    assert!(matches!(
        proto::read_reply("OnLine", &bomb),
        Err(proto::CallError::Protocol(_))
    ));
}

#[test]
fn xml_reader_refuses_depth_and_entities() {
    let deep = "<a>".repeat(200) + &"</a>".repeat(200);
    assert!(xml::parse(deep.as_bytes(), 32).is_err());
    assert!(xml::parse(b"<a>&foo;</a>", 32).is_err());
    assert!(xml::parse(b"<a/><b/>", 32).is_err());
    let n = xml::parse(b"<p:a xmlns:p=\"x\"><p:b i:nil=\"true\"/></p:a>", 32).unwrap();
    assert!(n.child("b").unwrap().is_nil());
}

// ---------------------------------------------------------------- events

#[test]
fn route_request_is_read_verbatim_and_mapped() {
    let root = xml::parse(publish(&route_request(5551, 9, 10)).as_bytes(), 32).unwrap();
    let op = xml::body_op(&root).unwrap();
    let e = event::read(op.child("ctiEvent").unwrap()).unwrap();
    assert_eq!(e.type_name, "CTIRouteRequest");
    assert_eq!(e.fields["CallId"], json!("5551"));
    assert_eq!(e.fields["SipIpAddress"], Value::Null);
    assert_eq!(
        e.fields["CallInfo"]["CallData"],
        json!([{"key": "acct", "value": "42"}])
    );
    let m = event::map(&e);
    assert_eq!(m.webhook, "ctips.route.requested");
    assert_eq!(
        m.target,
        event::Target::Call {
            call_id: "5551".into(),
            seq: Some("9".into())
        }
    );
}

#[test]
fn every_event_type_maps_to_a_documented_webhook() {
    let names = [
        "AgentLoginRequestFailed",
        "AgentLoginStateChange",
        "AgentRequestFailed",
        "AgentStateChange",
        "AudioPathStateChange",
        "CallCleared",
        "CallCompleted",
        "CallConferenced",
        "CallConnected",
        "CallConsultation",
        "CallDataUpdate",
        "CallDelivered",
        "CallEnd",
        "CallEstablished",
        "CallHeld",
        "CallOffered",
        "CallOriginated",
        "CallRequestFailed",
        "CallRetrieved",
        "CallStarted",
        "CallTransferred",
        "DigitsDialed",
        "EnterPasscode",
        "Filter",
        "LinkStatus",
        "RouteRejected",
        "RouteRequest",
        "RouteRequestFailed",
        "RouteUsed",
        "ServiceStateChange",
        "SnapShotRequestFailed",
        "SnapShotUpdate",
    ];
    for name in names {
        let e = event::CtiEvent {
            type_name: format!("CTI{name}"),
            fields: serde_json::from_value(
                json!({"CallId": "1", "CallSequenceId": "2", "AgentId": "4", "ServiceId": "3"}),
            )
            .unwrap(),
        };
        let m = event::map(&e);
        assert!(event::WEBHOOK_TYPES.contains(&m.webhook.as_str()), "{name}");
        assert_ne!(m.webhook, "ctips.system.unknown_event", "{name}");
    }
    // RouteRejected's EventType is RouteReject; the seed's element names are read too.
    let x = format!(
        "<ctiEvent xmlns:a=\"{}\"><a:EventType>RouteReject</a:EventType><a:CallId>5</a:CallId><a:RequestIdList><a:int>1</a:int></a:RequestIdList></ctiEvent>",
        proto::NS_PUB
    );
    let e = event::read(&xml::parse(x.as_bytes(), 32).unwrap()).unwrap();
    assert_eq!(e.type_name, "CTIRouteRejected");
    assert_eq!(e.fields["AgentIdList"], json!(["1"]));
}

// ---------------------------------------------------------------- callback service

#[tokio::test]
async fn callback_refuses_wrong_token_stale_epoch_and_junk() {
    let gw = Fake::new();
    let (_live, _rx, _g) = crate::live::register("t1", gw.epoch);
    let body = publish(&call_event("CallStarted", 1, 1));
    let h = Ctips
        .handle(
            &*gw,
            inbound(&["wrong-token-0123456789", &gw.epoch.to_string()], &body),
        )
        .await;
    assert_eq!(h.response.status(), 404);
    let stale = (gw.epoch - 1).to_string();
    let h = Ctips.handle(&*gw, inbound(&[TOKEN, &stale], &body)).await;
    let (status, text) = status_and_body(&h);
    assert_eq!(status, 500);
    assert!(text.contains("InvalidSessionId"), "{text}");
    *gw.held.lock().unwrap() = None;
    let h = Ctips.handle(&*gw, inbound(&gw.path(), &body)).await;
    assert_eq!(h.response.status(), 500);
    *gw.held.lock().unwrap() = Some(gw.epoch);
    let h = Ctips.handle(&*gw, inbound(&gw.path(), "<not xml")).await;
    assert_eq!(h.response.status(), 500);
    assert!(gw.events().is_empty());
    assert!(Ctips.authenticates_itself(&format!("/{TOKEN}/7")));
    assert!(!Ctips.authenticates_itself(&format!("/{TOKEN}/x")));
    assert!(!Ctips.authenticates_itself("/cdr"));
}

#[tokio::test]
async fn events_are_committed_before_the_answer_with_gapless_sequences() {
    let gw = Fake::new();
    let (live, _rx, _g) = crate::live::register("t1", gw.epoch);
    for ty in [
        "CallStarted",
        "CallDelivered",
        "CallEstablished",
        "CallEnd",
        "CallCompleted",
    ] {
        let h = Ctips
            .handle(&*gw, inbound(&gw.path(), &publish(&call_event(ty, 77, 5))))
            .await;
        let (status, text) = status_and_body(&h);
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("<PublishCTIEventResult>0</PublishCTIEventResult>"));
    }
    let events = gw.events();
    assert_eq!(
        gw.types(),
        [
            "ctips.call.started",
            "ctips.call.delivered",
            "ctips.call.established",
            "ctips.call.ended",
            "ctips.call.completed"
        ]
    );
    assert!(events
        .iter()
        .all(|(k, _, _)| k.kind == "ctips" && k.id == "77:5"));
    assert_eq!(
        events.iter().map(|(_, s, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(gw.entity("ctips", "77:5").unwrap().state.is_none());
    // Heartbeat and StartSession.
    let hb = format!(
        "<s:Envelope xmlns:s=\"{}\"><s:Body><Heartbeat xmlns=\"{}\"><sessionId>S-1</sessionId></Heartbeat></s:Body></s:Envelope>",
        proto::NS_SOAP11,
        proto::NS_PUB
    );
    let h = Ctips.handle(&*gw, inbound(&gw.path(), &hb)).await;
    assert!(status_and_body(&h)
        .1
        .contains("<HeartbeatResult>0</HeartbeatResult>"));
    assert!(live.last_heartbeat_ms() > 0);
    live.set_session_id(Some("S-2".into()));
    let h = Ctips.handle(&*gw, inbound(&gw.path(), &hb)).await;
    assert_eq!(
        h.response.status(),
        500,
        "a heartbeat for another session is refused"
    );
}

#[tokio::test]
async fn agents_services_and_system_events_have_their_entities() {
    let gw = Fake::new();
    let (_live, _rx, _g) = crate::live::register("t1", gw.epoch);
    let agent = cti_event(
        "AgentStateChange",
        "AgentStateChange",
        "EventCategoryAgent",
        0,
        "<a:AgentState>Idle</a:AgentState><a:ServiceIds xmlns:b=\"http://schemas.microsoft.com/2003/10/Serialization/Arrays\"><b:int>3</b:int></a:ServiceIds>",
    )
    .replace("<a:AgentId>0</a:AgentId>", "<a:AgentId>12</a:AgentId>");
    let link = cti_event(
        "LinkStatus",
        "LinkStatus",
        "EventCategorySystem",
        0,
        "<a:ComponentType>Gateway</a:ComponentType><a:ComponentState>Down</a:ComponentState>",
    );
    let service = cti_event(
        "ServiceStateChange",
        "ServiceStateChange",
        "EventCategoryAgent",
        0,
        "<a:ServiceState>Active</a:ServiceState><a:AgentIdList xmlns:b=\"http://schemas.microsoft.com/2003/10/Serialization/Arrays\"/>",
    );
    for x in [agent, link, service] {
        let h = Ctips.handle(&*gw, inbound(&gw.path(), &publish(&x))).await;
        assert_eq!(h.response.status(), 200);
    }
    let events = gw.events();
    assert_eq!(events[0].0, EntityKey::new("t1", "ctips.agent", "12"));
    assert_eq!(events[0].2.event_type, "ctips.agent.state");
    assert_eq!(events[0].2.vendor_fields["ServiceIds"], json!(["3"]));
    assert_eq!(
        events[1].0,
        EntityKey::new("t1", "ctips.session", "session")
    );
    assert_eq!(events[2].0, EntityKey::new("t1", "ctips.service", "3"));
    assert_eq!(events[2].2.vendor_fields["AgentIdList"], json!([]));
    assert_eq!(
        gw.entity("ctips.agent", "12").unwrap().state.unwrap()["AgentState"],
        json!("Idle")
    );
}

#[tokio::test]
async fn a_repeated_route_request_makes_one_decision_job() {
    let gw = Fake::new();
    let (_live, mut rx, _g) = crate::live::register("t1", gw.epoch);
    for _ in 0..2 {
        let h = Ctips
            .handle(
                &*gw,
                inbound(&gw.path(), &publish(&route_request(5551, 9, 10))),
            )
            .await;
        assert_eq!(h.response.status(), 200);
    }
    assert!(matches!(rx.try_recv(), Ok(crate::live::Notice::Route(_))));
    assert!(rx.try_recv().is_err(), "the repeat is not decided again");
    assert_eq!(gw.types(), ["ctips.route.requested"]);
}

// ---------------------------------------------------------------- routing

#[test]
fn answers_become_route_selects() {
    let s = settings();
    let mut attach = Map::new();
    attach.insert("lang".into(), json!("he"));
    let sel =
        |a: Action| route::select(&s, &Answer::Action(Envelope::new(a)), &attach, None).unwrap();
    let agent = sel(Action::RouteToAgent {
        agent: "jdoe".into(),
    });
    assert_eq!(agent.route_type, proto::RouteType::ToAgent);
    assert_eq!(agent.destination, "jdoe");
    assert_eq!(
        agent.user_data,
        ["", "lang=he"],
        "positions follow user_data_fields"
    );
    let q = sel(Action::Enqueue {
        queue: "3".into(),
        priority: None,
        agent: None,
        agent_wait_s: None,
        description: None,
    });
    assert_eq!(
        (q.route_type, q.destination.as_str()),
        (proto::RouteType::ToService, "3")
    );
    assert_eq!(
        sel(Action::Default {}).route_type,
        proto::RouteType::ToDefault
    );
    let native = Answer::Native(
        json!({"RouteActionType": "RouteToExternal", "RouteDestination": "+15550100", "UserData": ["a=1"]}),
    );
    let n = route::select(&s, &native, &Map::new(), None).unwrap();
    assert_eq!(
        (n.route_type, n.destination.as_str()),
        (proto::RouteType::ToExternal, "+15550100")
    );
    assert!(
        route::validate(&Answer::Action(Envelope::new(Action::Enqueue {
            queue: "sales".into(),
            priority: None,
            agent: None,
            agent_wait_s: None,
            description: None
        })))
        .is_err()
    );
    assert!(
        route::validate(&Answer::Action(Envelope::new(Action::Hangup {
            prompt: None,
            cause: None
        })))
        .is_err()
    );
    assert_eq!(route::deadline_ms(10, 1500, 0), Some(8500));
    assert_eq!(route::deadline_ms(10, 1500, 8450), None);
    assert_eq!(route::deadline_ms(1, 1500, 0), None);
}

// ---------------------------------------------------------------- the connector

pub(crate) async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached: {what}");
}

fn start(gw: Arc<Fake>, http: Arc<FakeHttp>) -> (Arc<Ctx>, tokio::task::JoinHandle<ConnectorExit>) {
    let (stop, _) = tokio::sync::watch::channel(None);
    let ctx = Arc::new(Ctx {
        gw,
        http,
        advertise: "http://ivrgate-a.test:8080/".into(),
        spec: settings().spec(),
        stop,
        health: Mutex::new(Vec::new()),
    });
    let run = tokio::spawn(Ctips.run_connector(ctx.clone()));
    (ctx, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_order_route_select_and_goodbye() {
    let gw = Fake::new();
    let http = FakeHttp::new();
    let (ctx, run) = start(gw.clone(), http.clone());
    wait_for("w2", || http.ops().iter().any(|o| o.ends_with("Snapshot"))).await;
    assert_eq!(
        http.ops(),
        [
            "P:OpenConnection",
            "P:AddMessageClass",
            "P:AddMessageClass",
            "P:AddMessageClass",
            "P:AddMessageClass",
            "P:AddFilter",
            "P:OnLine",
            "P:Snapshot"
        ]
    );
    let open = &http.bodies("OpenConnection")[0];
    assert!(open.contains(&format!(
        "<a:ClientCallbackURL>http://ivrgate-a.test:8080/ctips/t1/{TOKEN}/{}</a:ClientCallbackURL>",
        gw.epoch
    )));
    assert!(open.contains("<b:Password>s3cret&amp;&lt;pw&gt;</b:Password>"));
    assert!(http.bodies("AddFilter")[0]
        .contains("<a:FieldType>FT_SERVICE_ID</a:FieldType><a:FieldValue>3</a:FieldValue>"));
    wait_for("w3", || {
        gw.types().contains(&"ctips.session.online".to_owned())
    })
    .await;
    // A route request: decided and answered.
    let mut attach = Map::new();
    attach.insert("acct".into(), json!("42"));
    *gw.answer.lock().unwrap() = Answer::Action(Envelope {
        action: Action::RouteToAgent {
            agent: "jdoe".into(),
        },
        language: None,
        attach,
    });
    let beat = format!(
        "<s:Envelope xmlns:s=\"{}\"><s:Body><Heartbeat xmlns=\"{}\"><sessionId>S-1</sessionId></Heartbeat></s:Body></s:Envelope>",
        proto::NS_SOAP11,
        proto::NS_PUB
    );
    Ctips.handle(&*gw, inbound(&gw.path(), &beat)).await;
    let h = Ctips
        .handle(
            &*gw,
            inbound(&gw.path(), &publish(&route_request(5551, 9, 10))),
        )
        .await;
    assert_eq!(h.response.status(), 200);
    wait_for("w4", || !http.bodies("RouteSelect").is_empty()).await;
    let select = &http.bodies("RouteSelect")[0];
    assert!(
        select.contains("<a:SessionId>S-1</a:SessionId><a:RequestId>"),
        "{select}"
    );
    assert!(select.contains("<a:TenantId>1</a:TenantId><a:CallId>5551</a:CallId><a:DestinationAddress>jdoe</a:DestinationAddress><a:RouteActionType>RouteToAgent</a:RouteActionType><a:UserData xmlns:b=\"http://schemas.microsoft.com/2003/10/Serialization/Arrays\"><b:string>acct=42</b:string></a:UserData>"), "{select}");
    {
        let decisions = gw.decisions.lock().unwrap();
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].point.kind, "route_request");
        assert_eq!(decisions[0].call.vendor_call_id.as_deref(), Some("5551:9"));
        assert!(decisions[0].deadline_ms.unwrap() <= 8500);
        assert_eq!(decisions[0].data["from"], json!("0501234567"));
    }
    wait_for("w5", || {
        gw.entity("ctips", "5551:9")
            .and_then(|e| e.state)
            .is_some_and(|s| s["route"]["state"] == json!("selected"))
    })
    .await;
    // RouteUsed links to the decision.
    let used = cti_event("RouteUsed", "RouteUsed", "EventCategoryRoute", 0, "<a:CallId>5551</a:CallId><a:RouteStatus>RouteSuccess</a:RouteStatus><a:RouteType>RouteToAgent</a:RouteType><a:RouteDestination>jdoe</a:RouteDestination><a:CallSequenceId>9</a:CallSequenceId><a:CallOriginatingSiteId>1</a:CallOriginatingSiteId>");
    Ctips
        .handle(&*gw, inbound(&gw.path(), &publish(&used)))
        .await;
    let ev = gw
        .events()
        .into_iter()
        .find(|(_, _, e)| e.event_type == "ctips.route.used")
        .unwrap();
    assert_eq!(ev.2.data["decision_id"], json!("dec_1"));
    assert_eq!(ev.2.data["late"], json!(true));
    // SIGTERM: OffLine then CloseConnection.
    ctx.stop.send_replace(Some(StopReason::Shutdown));
    assert_eq!(run.await.unwrap(), ConnectorExit::Stopped);
    let ops = http.ops();
    assert_eq!(&ops[ops.len() - 2..], ["P:OffLine", "P:CloseConnection"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_stop_the_session_is_lost_and_the_backup_takes_over() {
    let gw = Fake::new();
    let http = FakeHttp::new();
    // A runtime filter stored by the command API is restored too.
    crate::store::session_event(
        &*gw,
        "t1",
        "",
        Map::new(),
        serde_json::from_value(json!({"filters": [{"type": "FT_AGENT_ID", "value": "jdoe"}]}))
            .unwrap(),
    )
    .await
    .unwrap();
    let (ctx, run) = start(gw.clone(), http.clone());
    wait_for("w6", || {
        gw.types().contains(&"ctips.session.online".to_owned())
    })
    .await;
    // A call that started before and will be missing from the next snapshot.
    Ctips
        .handle(
            &*gw,
            inbound(&gw.path(), &publish(&call_event("CallStarted", 90, 1))),
        )
        .await;
    http.script.lock().unwrap().down.push("primary".into());
    // No heartbeats: lost after 1 s, then the backup.
    wait_for("w7", || http.ops().contains(&"B:Snapshot".to_owned())).await;
    let types = gw.types();
    assert!(
        types.contains(&"ctips.session.lost".to_owned()),
        "{types:?}"
    );
    let online: Vec<_> = gw
        .events()
        .into_iter()
        .filter(|(_, _, e)| e.event_type == "ctips.session.online")
        .collect();
    assert_eq!(online.len(), 2);
    assert!(online[1].2.data["gap_ms"].as_i64().is_some());
    assert_eq!(online[1].2.data["server"], json!(settings().servers[1]));
    let filters = http.bodies("AddFilter");
    assert_eq!(
        filters.len(),
        4,
        "configured and runtime filters, on both servers"
    );
    assert!(filters[3]
        .contains("<a:FieldType>FT_AGENT_ID</a:FieldType><a:FieldValue>jdoe</a:FieldValue>"));
    // The call snapshot completes without call 90: it is reconciled as ended.
    let snap_id = {
        let s = gw
            .entity("ctips.session", "session")
            .unwrap()
            .state
            .unwrap();
        s["snapshot"]["request_id"].as_i64().unwrap()
    };
    let done = cti_event(
        "SnapShotUpdate",
        "SnapShotUpdate",
        "EventCategorySystem",
        snap_id,
        "<a:SnapShotType>CallInfo</a:SnapShotType><a:AgentData i:nil=\"true\"/><a:CallData i:nil=\"true\"/><a:ServiceData i:nil=\"true\"/><a:SnapShotTypeComplete>true</a:SnapShotTypeComplete>",
    )
    .replace("<a:SwitchId>1</a:SwitchId><a:ServiceId>3</a:ServiceId><a:AgentId>0</a:AgentId>", "");
    Ctips
        .handle(&*gw, inbound(&gw.path(), &publish(&done)))
        .await;
    wait_for("w8", || {
        gw.entity("ctips", "90:1")
            .is_some_and(|e| e.state.is_none())
    })
    .await;
    let ended = gw
        .events()
        .into_iter()
        .find(|(_, _, e)| e.event_type == "ctips.call.ended")
        .unwrap();
    assert_eq!(ended.2.data["reconciled"], json!(true));
    assert_eq!(
        ended.1, 2,
        "the reconciled end continues the call's sequence"
    );
    ctx.stop.send_replace(Some(StopReason::LeaseLost));
    assert_eq!(run.await.unwrap(), ConnectorExit::Stopped);
    assert_ne!(
        http.ops().last().unwrap(),
        "B:CloseConnection",
        "a lost lease leaves the session alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_backs_off_and_is_shown() {
    let gw = Fake::new();
    let http = FakeHttp::new();
    http.script.lock().unwrap().fault_open = Some("MaxNumberClientConnections".into());
    let (ctx, run) = start(gw.clone(), http.clone());
    wait_for("w9", || {
        ctx.health
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.detail.contains("MaxNumberClientConnections"))
    })
    .await;
    ctx.stop.send_replace(Some(StopReason::Shutdown));
    assert_eq!(run.await.unwrap(), ConnectorExit::Stopped);
    assert!(!http.ops().iter().any(|o| o.ends_with("OnLine")));
}

// ---------------------------------------------------------------- command API

fn cmd(method: http::Method, path: &str, query: Option<&str>, body: Value) -> Command {
    Command {
        tenant: "t1".into(),
        method,
        path: PathSegments::from_decoded(path.split('/').map(str::to_owned)),
        query: query.map(str::to_owned),
        body,
        headers: http::HeaderMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_go_through_the_store_to_the_holder() {
    let gw = Fake::new();
    let http = FakeHttp::new();
    // No session yet: 503 with a reason.
    let r = Ctips
        .command(
            &*gw,
            cmd(
                http::Method::POST,
                "calls",
                None,
                json!({"agent": "12", "destination": "+15550100"}),
            ),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], json!("session_unavailable"));
    let (ctx, run) = start(gw.clone(), http.clone());
    wait_for("online", || {
        gw.types().contains(&"ctips.session.online".to_owned())
    })
    .await;
    let r = Ctips
        .command(
            &*gw,
            cmd(
                http::Method::POST,
                "calls",
                None,
                json!({"agent": "12", "service_id": 3, "destination": "+15550100"}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rid = r.body["request_id"].as_i64().unwrap();
    assert!(rid > 0);
    let make = &http.bodies("MakeCall")[0];
    assert!(make.contains(&format!("<a:SessionId>S-1</a:SessionId><a:RequestId>{rid}</a:RequestId><a:TenantId>1</a:TenantId><a:AgentIdx>12</a:AgentIdx><a:CallId>-1</a:CallId><a:ServiceId>3</a:ServiceId><a:DestinationType>External</a:DestinationType><a:DestinationAddress>+15550100</a:DestinationAddress><a:WrapState>false</a:WrapState>")), "{make}");
    // Bad input is a 400 naming the field; unknown paths 404.
    let r = Ctips
        .command(
            &*gw,
            cmd(
                http::Method::POST,
                "agents/12/state",
                None,
                json!({"state": "Dancing"}),
            ),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = Ctips
        .command(&*gw, cmd(http::Method::POST, "nope", None, Value::Null))
        .await;
    assert_eq!(r.status, 404);
    // A runtime filter is stored and applied.
    let r = Ctips
        .command(
            &*gw,
            cmd(
                http::Method::PUT,
                "session/filters/agent/jdoe",
                None,
                Value::Null,
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(http
        .bodies("AddFilter")
        .last()
        .unwrap()
        .contains("<a:FieldType>FT_AGENT_ID</a:FieldType><a:FieldValue>jdoe</a:FieldValue>"));
    let r = Ctips
        .command(&*gw, cmd(http::Method::GET, "session", None, Value::Null))
        .await;
    assert_eq!(r.body["online"], json!(true), "{}", r.body);
    // The configured filter (service 3) and the one added at runtime.
    assert_eq!(
        r.body["filters"],
        json!([
            {"type": "FT_SERVICE_ID", "value": "3"},
            {"type": "FT_AGENT_ID", "value": "jdoe"}
        ])
    );
    assert_eq!(
        r.body["runtime_filters"],
        json!([{"type": "FT_AGENT_ID", "value": "jdoe"}])
    );
    // wait_ms: the first event correlated by RequestId comes back with the reply.
    let gw2 = gw.clone();
    let waiter = tokio::spawn(async move {
        Ctips
            .command(
                &*gw2,
                cmd(
                    http::Method::POST,
                    "agents/12/state",
                    Some("wait_ms=5000"),
                    json!({"state": "Idle"}),
                ),
            )
            .await
    });
    wait_for("SetAgentState sent", || {
        !http.bodies("SetAgentState").is_empty()
    })
    .await;
    let body = &http.bodies("SetAgentState")[0];
    let rid: String = body
        .split("<a:RequestId>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let ev = cti_event(
        "AgentStateChange",
        "AgentStateChange",
        "EventCategoryAgent",
        rid.parse().unwrap(),
        "<a:AgentState>Idle</a:AgentState><a:ServiceIds/>",
    )
    .replace("<a:AgentId>0</a:AgentId>", "<a:AgentId>12</a:AgentId>");
    Ctips.handle(&*gw, inbound(&gw.path(), &publish(&ev))).await;
    let r = waiter.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["event"]["type"], json!("ctips.agent.state"));
    let state_event = gw
        .events()
        .into_iter()
        .find(|(_, _, e)| e.event_type == "ctips.agent.state")
        .unwrap();
    assert_eq!(state_event.2.data["command_id"], r.body["command_id"]);
    ctx.stop.send_replace(Some(StopReason::Shutdown));
    assert_eq!(run.await.unwrap(), ConnectorExit::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_not_sent_in_time_is_504_and_never_sent_later() {
    let gw = Fake::new();
    let http = FakeHttp::new();
    // The store says online, but no connector works the queue (a holder that hangs).
    crate::store::session_event(
        &*gw,
        "t1",
        "",
        Map::new(),
        serde_json::from_value(json!({"online": true})).unwrap(),
    )
    .await
    .unwrap();
    let r = Ctips
        .command(
            &*gw,
            cmd(
                http::Method::POST,
                "calls/5551/clear",
                Some("timeout_ms=200"),
                json!({"agent": 12}),
            ),
        )
        .await;
    assert_eq!(r.status, 504, "{}", r.body);
    // Now a connector comes: the expired command is not sent.
    let (ctx, run) = start(gw.clone(), http.clone());
    wait_for("online", || {
        http.ops().iter().any(|o| o.ends_with("Snapshot"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(http.bodies("ClearCall").is_empty());
    ctx.stop.send_replace(Some(StopReason::Shutdown));
    run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_pending_route_requests_before_going_offline() {
    let gw = Fake::new();
    let http = FakeHttp::new();
    let (ctx, run) = start(gw.clone(), http.clone());
    wait_for("online", || {
        gw.types().contains(&"ctips.session.online".to_owned())
    })
    .await;
    *gw.decide_delay.lock().unwrap() = Duration::from_millis(300);
    let h = Ctips
        .handle(
            &*gw,
            inbound(&gw.path(), &publish(&route_request(6001, 1, 10))),
        )
        .await;
    assert_eq!(h.response.status(), 200);
    wait_for("decision asked", || {
        !gw.decisions.lock().unwrap().is_empty()
    })
    .await;
    ctx.stop.send_replace(Some(StopReason::Shutdown));
    assert_eq!(run.await.unwrap(), ConnectorExit::Stopped);
    let ops = http.ops();
    let n = ops.len();
    assert_eq!(
        ops[n - 3..],
        ["P:RouteSelect", "P:OffLine", "P:CloseConnection"],
        "{ops:?}"
    );
}

// ---------------------------------------------------------------- requests against WIRE.md

/// Reads a request body as CTIPS' WCF dispatcher would (the simulator's strict reader, which
/// shares no code with ivrgate's writer): the operation element, its `args`, and every member
/// in WIRE.md's order and namespace, a missing required one being an error.
fn read_strictly(op: &str, body: &str) -> Result<(), String> {
    use ctips_sim::wire;
    let envelope = ctips_sim::xml::parse(body.as_bytes())?;
    let op_el = envelope
        .children
        .iter()
        .find(|c| c.name == "Body" && c.ns == wire::NS_SOAP)
        .and_then(|b| b.children.first())
        .ok_or("empty SOAP body")?;
    if op_el.name != op || op_el.ns != wire::NS_API {
        return Err(format!("operation element {}:{}", op_el.ns, op_el.name));
    }
    let args = op_el
        .children
        .iter()
        .find(|c| c.name == "args" && c.ns == wire::NS_API)
        .ok_or("no args")?;
    let members = &wire::spec().ops.get(op).ok_or("not in WIRE.md")?.members;
    wire::read_members(args, wire::NS_API, members, true).map(|_| ())
}

/// WIRE.md's request operations (everything on the `ctipsapi` contract).
fn wire_operations() -> Vec<&'static ctips_sim::wire::Operation> {
    ctips_sim::wire::spec()
        .ops
        .values()
        .filter(|o| o.action.contains("/ctipsapi/"))
        .collect()
}

/// CT-11: RequestId goes out exactly where WIRE.md marks it required, whatever its value (a
/// RequestId of 0 was once left out, which WCF faults as a missing member).
#[test]
fn a_request_id_goes_out_wherever_wire_md_requires_one() {
    let ops = wire_operations();
    assert_eq!(ops.len(), 27, "WIRE.md's request operations");
    for op in ops {
        let required = op
            .members
            .iter()
            .any(|m| m.name == "RequestId" && m.required);
        assert_eq!(
            proto::takes_request_id(&op.name),
            required,
            "{}: WIRE.md says RequestId required = {required}",
            op.name
        );
        let service = if op.action.contains("/AgentCallService/") {
            Service::AgentCall
        } else if op.action.contains("/RoutingService/") {
            Service::Routing
        } else {
            Service::Registration
        };
        for rid in [0, 7] {
            let body =
                crate::session::command_request("S-1", 1, Request::new(&op.name, service), rid)
                    .envelope();
            let head = if required {
                format!("<a:SessionId>S-1</a:SessionId><a:RequestId>{rid}</a:RequestId><a:TenantId>1</a:TenantId>")
            } else {
                "<a:SessionId>S-1</a:SessionId><a:TenantId>1</a:TenantId>".to_owned()
            };
            assert!(
                body.contains(&head),
                "{} with RequestId {rid}: {body}",
                op.name
            );
        }
    }
}

/// Every request ivrgate sends (the connector's own and every command API operation) is read
/// by the strict WIRE.md reader without a fault; together they cover every request operation
/// of WIRE.md but DeleteMessageClass (ivrgate never unregisters a category).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_adapter_sends_is_read_strictly_against_wire_md() {
    let mut settings = settings_json();
    // No heartbeats come from the scripted CTIPS: keep the session up for the whole test.
    settings["heartbeat_interval_s"] = json!(60);
    let gw = Fake::with(settings);
    let http = FakeHttp::new();
    let (ctx, run) = start(gw.clone(), http.clone());
    wait_for("online", || {
        gw.types().contains(&"ctips.session.online".to_owned())
    })
    .await;
    let commands: Vec<(http::Method, &str, Value)> = vec![
        (http::Method::POST, "session/snapshot", Value::Null),
        (http::Method::PUT, "session/filters/agent/jdoe", Value::Null),
        (
            http::Method::DELETE,
            "session/filters/agent/jdoe",
            Value::Null,
        ),
        (
            http::Method::POST,
            "agents/login",
            json!({"login_name": "jdoe", "station_id": "4001", "init_state": "Idle", "multi_line": 1}),
        ),
        (
            http::Method::POST,
            "agents/panic_logout",
            json!({"agent": 12, "login_names": ["jdoe"], "all": false}),
        ),
        (
            http::Method::POST,
            "agents/12/logout",
            json!({"reason_code": 3}),
        ),
        (
            http::Method::POST,
            "agents/12/state",
            json!({"state": "Idle"}),
        ),
        (http::Method::POST, "agents/12/state/refresh", Value::Null),
        (
            http::Method::POST,
            "agents/12/disposition",
            json!({"call": "5551", "disposition_id": 4, "user_data": {"acct": "42"}}),
        ),
        (
            http::Method::POST,
            "calls",
            json!({"agent": 12, "service_id": 3, "destination": "+15550100"}),
        ),
        (
            http::Method::POST,
            "calls/5551/route",
            json!({"type": "RouteToService", "destination": "4", "user_data": ["acct=42"]}),
        ),
        (
            http::Method::POST,
            "calls/5551/accept",
            json!({"agent": 12}),
        ),
        (
            http::Method::POST,
            "calls/5551/reject",
            json!({"agent": 12, "reason_code": 2}),
        ),
        (http::Method::POST, "calls/5551/clear", json!({"agent": 12})),
        (http::Method::POST, "calls/5551/hold", json!({"agent": 12})),
        (
            http::Method::POST,
            "calls/5551/retrieve",
            json!({"agent": 12}),
        ),
        (
            http::Method::POST,
            "calls/5551/consult",
            json!({"agent": 12, "destination": "+15550101", "service_id": 3}),
        ),
        (
            http::Method::POST,
            "calls/5551/conference",
            json!({"agent": 12, "consultation_call": "5552"}),
        ),
        (
            http::Method::POST,
            "calls/5551/transfer",
            json!({"agent": 12, "transfer_type": "Consultation", "destination": "+15550101", "consultation_call": "5552"}),
        ),
        (
            http::Method::POST,
            "calls/5551/dtmf",
            json!({"agent": 12, "digits": "12#"}),
        ),
        (
            http::Method::POST,
            "calls/5551/data",
            json!({"agent": 12, "user_data": {"lang": "fr"}}),
        ),
        (
            http::Method::POST,
            "calls/5551/data/refresh",
            json!({"agent": 12}),
        ),
    ];
    for (method, path, body) in commands {
        let r = Ctips
            .command(&*gw, cmd(method.clone(), path, None, body))
            .await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    }
    ctx.stop.send_replace(Some(StopReason::Shutdown));
    assert_eq!(run.await.unwrap(), ConnectorExit::Stopped);
    let log = http.script.lock().unwrap().log.clone();
    let mut sent = std::collections::BTreeSet::new();
    for (_, op, body) in &log {
        if let Err(e) = read_strictly(op, body) {
            panic!("{op} is not what WIRE.md requires: {e}\n{body}");
        }
        sent.insert(op.clone());
    }
    let missing: Vec<&str> = wire_operations()
        .into_iter()
        .map(|o| o.name.as_str())
        .filter(|op| !sent.contains(*op) && *op != "DeleteMessageClass")
        .collect();
    assert!(missing.is_empty(), "never sent: {missing:?}");
}
