//! The Mitel OpenScape Contact Center IVR API adapter: ivrgate plays hppcivr.dll and the
//! contact-center servers behind it for IVR scripts ported one call at a time.
//!
//! Each IVR channel has its own URL, `/openscape/{tenant}/{channel}` (the core strips
//! `/openscape/{tenant}`), and its API state (initialized, RpcTimeout, SetCallInfo's
//! ANI/DNIS, the current call, ...) is an entity in the core's store, so it survives a
//! restart and is shared by every instance. The 25 functions are XML-RPC methods (or JSON
//! `{"method", "params"}`) named after them, by-value parameters positional, by-reference
//! ones returned by name beside `ReturnCode` and `ReturnText` (English, or French with
//! `Accept-Language: fr`). Every state change is a pure step ([`model`]) run inside one
//! core transition; routing and assignment come from the customer: decision webhooks
//! (QueryRoutingInfo, optionally the figures) and the command API ([`command`]).

#![forbid(unsafe_code)]

pub mod callback;
pub mod codes;
mod command;
pub mod model;
pub mod params;
pub mod settings;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ivrgate_adapter::action::{Action, Envelope};
use ivrgate_adapter::{
    Adapter, Answer, AnswerSource, BoxFuture, CallRef, Command, CommandReply, DecisionPoint,
    DecisionRequest, Entity, EntityKey, Gateway, Handled, Inbound, RecordError, TimerFired,
    Transitioned, Waited,
};
use ivrgate_wire::{charset, json as wjson, xmlrpc, Limits};
use serde_json::{json, Map, Value};

use codes::{Context, Lang};
use model::{Call, Channel, Ctx, Effect};
use params::{Args, Function, Ty};
use settings::Settings;

/// The vendor name: path segment, metrics label and `vendor` of every event.
pub const VENDOR: &str = "openscape";

const XML: &str = "text/xml; charset=utf-8";
const JSON: &str = "application/json";

/// Where the IVR waits for the customer. The IVR's own limit is the RpcTimeout it gave
/// Initialize (10 000 ms or more advised by the seed); 9 000 ms leaves the answer a margin.
pub static DECISION_POINTS: [DecisionPoint; 4] = [
    DecisionPoint {
        vendor: VENDOR,
        kind: "routing_info",
        platform_max_ms: 9_000,
        default_fallback: platform_default,
        validate: validate_routing,
        native_attach: no_attach,
    },
    DecisionPoint {
        vendor: VENDOR,
        kind: "queue_statistics",
        platform_max_ms: 9_000,
        default_fallback: platform_default,
        validate: validate_queue_statistics,
        native_attach: no_attach,
    },
    DecisionPoint {
        vendor: VENDOR,
        kind: "agent_status",
        platform_max_ms: 9_000,
        default_fallback: platform_default,
        validate: validate_agent_status,
        native_attach: no_attach,
    },
    DecisionPoint {
        vendor: VENDOR,
        kind: "system_status",
        platform_max_ms: 9_000,
        default_fallback: platform_default,
        validate: validate_system_status,
        native_attach: no_attach,
    },
];

const ROUTING: usize = 0;
const QUEUE_STATS: usize = 1;
const AGENT_STATUS: usize = 2;
const SYSTEM_STATUS: usize = 3;

fn no_attach(_: &Value) -> Map<String, Value> {
    Map::new()
}

/// `default`: QueryRoutingInfo answers -915 (no routing information); the figures come
/// from what the customer pushed.
fn platform_default() -> Answer {
    Answer::Action(Envelope::new(Action::Default {}))
}

fn validate_routing(answer: &Answer) -> Result<(), String> {
    routing_effect(answer, (0, 0)).map(drop)
}

fn validate_queue_statistics(answer: &Answer) -> Result<(), String> {
    native_figures(answer, &QUEUE_FIELDS).map(drop)
}

fn validate_agent_status(answer: &Answer) -> Result<(), String> {
    match answer {
        Answer::Native(Value::Object(o))
            if o.get("ReturnCode")
                .and_then(Value::as_i64)
                .is_some_and(|c| c == -904 || c == -909) =>
        {
            Ok(())
        }
        _ => native_figures(answer, &["AgentStatus"]).map(drop),
    }
}

fn validate_system_status(answer: &Answer) -> Result<(), String> {
    match answer {
        Answer::Action(e) if matches!(e.action, Action::Default {}) => Ok(()),
        Answer::Native(Value::Object(o)) => {
            if !matches!(o.get("OverallStatus").and_then(Value::as_i64), Some(0 | 1)) {
                return Err("OverallStatus must be 0 or 1".into());
            }
            match o.get("IndividualServerStates") {
                Some(Value::String(s)) if s.chars().count() <= 250 => Ok(()),
                _ => {
                    Err("IndividualServerStates must be a string of at most 250 characters".into())
                }
            }
        }
        _ => Err("system_status takes default or a native object".into()),
    }
}

const QUEUE_FIELDS: [&str; 5] = [
    "CallsInQueue",
    "EstimatedWait",
    "AverageWait",
    "OldestCallInQueue",
    "ServiceLevel",
];

/// A native figures answer: an object whose named fields are non-negative integers.
fn native_figures(answer: &Answer, fields: &[&str]) -> Result<Option<Map<String, Value>>, String> {
    match answer {
        Answer::Action(e) if matches!(e.action, Action::Default {}) => Ok(None),
        Answer::Native(Value::Object(o)) => {
            for f in fields {
                if o.get(*f).and_then(Value::as_i64).is_none_or(|v| v < 0) {
                    return Err(format!("{f} must be a non-negative integer"));
                }
            }
            Ok(Some(o.clone()))
        }
        _ => Err("takes default or a native object".into()),
    }
}

/// QueryRoutingInfo's return code and outputs for an answer: enqueue 0, hangup 1, dial 2,
/// default -915; natively `{"ReturnCode": 0|1|2|-915|-916, "Destination": ..., ...}`.
fn routing_effect(answer: &Answer, figures: (i64, i64)) -> Result<Effect, String> {
    let text_ok = |s: &str, max: usize| s.chars().count() <= max;
    match answer {
        Answer::Action(envelope) => match &envelope.action {
            Action::Enqueue {
                queue,
                priority,
                agent,
                agent_wait_s,
                description,
            } => {
                if queue.is_empty() || !text_ok(queue, 32) {
                    return Err("enqueue: queue must be 1 to 32 characters".into());
                }
                let priority = i64::from(priority.unwrap_or(1));
                if !(1..=100).contains(&priority) {
                    return Err("enqueue: priority must be 1 to 100".into());
                }
                let agent = agent.clone().unwrap_or_default();
                let description = description.clone().unwrap_or_default();
                if !text_ok(&agent, 8) || !text_ok(&description, 100) {
                    return Err("enqueue: agent is at most 8 and description 100 characters".into());
                }
                Ok(Effect::code(0)
                    .out("Destination", queue.clone())
                    .out("AgentID", agent)
                    .out("AgentWaitTime", i64::from(agent_wait_s.unwrap_or(0)))
                    .out("Description", description)
                    .out("InitialPriority", priority)
                    .out("EstimatedWait", figures.0)
                    .out("CallsInQueue", figures.1))
            }
            Action::Hangup { .. } => Ok(Effect::code(1)),
            Action::Dial { targets, .. } => match targets.first() {
                Some(t) if !t.is_empty() && text_ok(t, 80) => {
                    Ok(Effect::code(2).out("Destination", t.clone()))
                }
                _ => Err("dial: one target of 1 to 80 characters".into()),
            },
            Action::Default {} => Ok(Effect::code(codes::NO_ROUTING)),
            other => Err(format!(
                "QueryRoutingInfo can enqueue, hangup, dial or default, not {}",
                other.kind().as_str()
            )),
        },
        Answer::Native(Value::Object(o)) => {
            let code = o
                .get("ReturnCode")
                .and_then(Value::as_i64)
                .ok_or("native answer needs an integer ReturnCode")?;
            if ![0, 1, 2, -915, -916].contains(&code) {
                return Err(format!("ReturnCode {code} is not 0, 1, 2, -915 or -916"));
            }
            let mut eff = Effect::code(code as i32);
            for (name, ty) in [
                ("Destination", Ty::Str(80)),
                ("AgentID", Ty::Str(8)),
                ("AgentWaitTime", Ty::Int(0, i64::MAX)),
                ("Description", Ty::Str(100)),
                ("InitialPriority", Ty::Int(1, 100)),
                ("EstimatedWait", Ty::Int(0, i64::MAX)),
                ("CallsInQueue", Ty::Int(0, i64::MAX)),
            ] {
                let Some(v) = o.get(name) else { continue };
                let ok = match ty {
                    Ty::Str(max) => v.as_str().is_some_and(|s| text_ok(s, max)),
                    Ty::Int(min, max) => v.as_i64().is_some_and(|i| (min..=max).contains(&i)),
                };
                if !ok {
                    return Err(format!("{name} out of range"));
                }
                eff.outputs.insert(name.to_owned(), v.clone());
            }
            if matches!(code, 0 | 2)
                && eff
                    .outputs
                    .get("Destination")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                return Err("ReturnCode 0 and 2 need a Destination".into());
            }
            Ok(eff)
        }
        Answer::Native(_) => Err("a native answer is an object".into()),
    }
}

/// The OpenScape adapter. Stateless: channels and calls live in the core's store.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenScape;

impl Adapter for OpenScape {
    fn cannot_originate(&self) -> Option<&'static str> {
        Some("the OpenScape Contact Center IVR API serves IVR scripts on calls the switch delivers; it has no function that places a call")
    }

    fn name(&self) -> &'static str {
        VENDOR
    }

    fn decision_points(&self) -> &'static [DecisionPoint] {
        &DECISION_POINTS
    }

    fn handle<'a>(&'a self, gateway: &'a dyn Gateway, request: Inbound) -> BoxFuture<'a, Handled> {
        Box::pin(handle(gateway, request))
    }

    fn keeps_call_state(&self) -> bool {
        true
    }

    /// OpenScape's "busy" without reading the body: return code -400 (low system
    /// resources), the code the IVR script already handles for a refused store, in the
    /// encoding the content type names (JSON when it says `json`, XML-RPC otherwise). When the
    /// path names the function, its by-reference parameters are named as usual.
    fn busy(&self, gateway: &dyn Gateway, request: &Inbound) -> Handled {
        let looks_json = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("json"));
        let encoding = if looks_json {
            Encoding::Json
        } else {
            Encoding::XmlRpc
        };
        let lang = request
            .headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(Lang::from_accept_language)
            .unwrap_or_else(|| settings_of(gateway, &request.tenant).lang());
        let effect = Effect::code(codes::LOW_RESOURCES);
        let function = request
            .path
            .as_strs()
            .get(1)
            .and_then(|name| params::function(name));
        let body = match function {
            Some(function) => answer_body(function, &effect, lang),
            None => {
                let mut body = Map::new();
                body.insert("ReturnCode".into(), json!(effect.code));
                body.insert(
                    "ReturnText".into(),
                    json!(codes::text(effect.code, Context::Plain, lang)),
                );
                body
            }
        };
        respond(
            encoding,
            &body,
            function.map(|f| f.name).unwrap_or("unknown"),
            "busy",
        )
    }

    fn parse_settings(
        &self,
        settings: &Value,
    ) -> Result<ivrgate_adapter::ParsedSettings, Vec<String>> {
        let parsed = Settings::from_json(settings).map_err(|e| vec![e])?;
        let problems = parsed.check();
        if problems.is_empty() {
            Ok(std::sync::Arc::new(parsed))
        } else {
            Err(problems)
        }
    }

    fn on_timer<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        timer: TimerFired,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(on_timer(gateway, timer))
    }

    fn command<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        command: Command,
    ) -> BoxFuture<'a, CommandReply> {
        Box::pin(command::handle(gateway, command))
    }
}

/// How the request came in; the answer goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    XmlRpc,
    Json,
}

/// A decoded request.
struct Decoded {
    encoding: Encoding,
    method: String,
    params: Vec<Value>,
}

/// What the handler knows about the request, for logs and events.
pub(crate) struct Req<'a> {
    pub gw: &'a dyn Gateway,
    pub tenant: &'a str,
    pub channel: &'a str,
    pub settings: &'a Settings,
    pub function: &'static Function,
    pub args: &'a Args,
    pub now: SystemTime,
}

impl Req<'_> {
    fn ctx(&self) -> Ctx {
        Ctx {
            now: self.now,
            quarantine: self.settings.quarantine(),
            multitenant: self.settings.multitenant(),
            business_units: self.settings.business_units.clone(),
            queues: self.settings.queues.clone(),
            tserver_up: true,
            agent_known: true,
            queue_figures: (0, 0),
            function: self.function.name,
            args: self.args.to_json(),
        }
    }

    fn channel_key(&self) -> EntityKey {
        EntityKey::new(self.tenant, model::CHANNEL_KIND, self.channel)
    }

    fn call_key(&self, id: &str) -> EntityKey {
        EntityKey::new(self.tenant, model::CALL_KIND, id)
    }
}

async fn handle(gw: &dyn Gateway, request: Inbound) -> Handled {
    let (channel, path_method) = match request.path.as_strs().as_slice() {
        [channel] => ((*channel).to_owned(), None),
        [channel, method] => ((*channel).to_owned(), Some((*method).to_owned())),
        _ => (String::new(), None),
    };
    if !valid_token(&channel) {
        tracing::warn!(tenant = %request.tenant, path = %request.path, "openscape request without a valid channel");
        return plain(404, "use /openscape/{tenant}/{channel}: a channel token of letters, digits, '.', '_' or '-'\n", "bad_request");
    }
    if request.method != http::Method::POST {
        return plain(405, "POST an XML-RPC or JSON call\n", "bad_request");
    }
    let settings = settings_of(gw, &request.tenant);
    let lang = request
        .headers
        .get(http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(Lang::from_accept_language)
        .unwrap_or_else(|| settings.lang());
    let decoded = match decode(&request, path_method) {
        Ok(d) => d,
        Err((encoding, why)) => {
            tracing::warn!(tenant = %request.tenant, channel = %channel, reason = %why, "openscape request unreadable");
            return fault(encoding, -32700, &format!("parse error: {why}"), "unknown");
        }
    };
    let Some(function) = params::function(&decoded.method) else {
        let shown: String = decoded
            .method
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        tracing::warn!(tenant = %request.tenant, channel = %channel, function = %shown, "unknown openscape function");
        return fault(
            decoded.encoding,
            -32601,
            &format!("no such function {shown:?}: the 25 functions of the IVR API"),
            "unknown",
        );
    };
    let (effect, call_id, outcome) = match params::parse(function, &decoded.params) {
        Ok(args) => {
            let req = Req {
                gw,
                tenant: &request.tenant,
                channel: &channel,
                settings: &settings,
                function,
                args: &args,
                now: gw.now(),
            };
            let (effect, outcome) = dispatch(&req).await;
            let call_id = args.str("CallID").map(str::to_owned).or_else(|| {
                effect
                    .outputs
                    .get("CallID")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            (effect, call_id, outcome)
        }
        Err(params::BadArgs(why)) => {
            tracing::info!(tenant = %request.tenant, channel = %channel, function = function.name, reason = %why, code = codes::BAD_PARAMETER, "openscape parameters refused");
            (Effect::code(codes::BAD_PARAMETER), None, "bad_request")
        }
    };
    tracing::info!(
        tenant = %request.tenant,
        channel = %channel,
        function = function.name,
        call_id = call_id.as_deref().unwrap_or(""),
        code = effect.code,
        "openscape function answered"
    );
    if let Some(why) = &effect.unreadable {
        why.log(&request.tenant, function.name);
    }
    let outcome = if effect.unreadable.is_some() {
        "state_unreadable"
    } else if outcome != "ok" {
        outcome
    } else if effect.code == codes::TIMED_OUT {
        "timeout"
    } else if effect.code < 0 {
        "refused"
    } else {
        "ok"
    };
    let body = answer_body(function, &effect, lang);
    let mut handled = respond(decoded.encoding, &body, function.name, outcome);
    handled.vendor_call_id = call_id;
    handled
}

fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Decodes a call and reads its arguments as `handle` does, without serving it: the function
/// and its by-value arguments, or why the call is refused. The entry point of the fuzz
/// targets and their corpus replay (`crates/fuzz-props`); not part of the adapter's interface.
#[doc(hidden)]
pub fn read_call_for_fuzzing(
    request: &Inbound,
    path_method: Option<String>,
) -> Result<(&'static Function, Args), String> {
    let decoded = decode(request, path_method).map_err(|(_, why)| why)?;
    let function = params::function(&decoded.method).ok_or("no such function")?;
    let args = params::parse(function, &decoded.params).map_err(|params::BadArgs(why)| why)?;
    Ok((function, args))
}

fn decode(request: &Inbound, path_method: Option<String>) -> Result<Decoded, (Encoding, String)> {
    let content_type = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let looks_json = content_type.is_some_and(|c| c.contains("json"));
    let text = charset::decode_borrowed(&request.body, content_type).map_err(|e| {
        (
            if looks_json {
                Encoding::Json
            } else {
                Encoding::XmlRpc
            },
            e.to_string(),
        )
    })?;
    let limits = Limits {
        max_depth: request.max_depth,
        ..Limits::default()
    };
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('<') {
        let call =
            xmlrpc::parse_call(trimmed, &limits).map_err(|e| (Encoding::XmlRpc, e.to_string()))?;
        return Ok(Decoded {
            encoding: Encoding::XmlRpc,
            method: call.method,
            params: call
                .params
                .into_iter()
                .map(xmlrpc::Value::into_json)
                .collect(),
        });
    }
    let value =
        wjson::parse_lenient(trimmed, &limits).map_err(|e| (Encoding::Json, e.to_string()))?;
    let (method, params) = match (value, path_method) {
        (Value::Array(items), Some(m)) => (m, items),
        (Value::Object(mut o), path) => {
            let method = ["method", "methodName", "function"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str).map(str::to_owned))
                .or(path)
                .ok_or((Encoding::Json, "missing \"method\"".to_owned()))?;
            let params = match o.remove("params") {
                Some(Value::Array(items)) => items,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err((Encoding::Json, "\"params\" must be an array".into())),
            };
            (method, params)
        }
        _ => {
            return Err((
                Encoding::Json,
                "expected {\"method\": ..., \"params\": [...]}".into(),
            ))
        }
    };
    Ok(Decoded {
        encoding: Encoding::Json,
        method,
        params,
    })
}

/// `ReturnCode`, `ReturnText`, then every by-reference parameter under its documented name
/// (empty string or 0 when the function produced none).
fn answer_body(function: &Function, effect: &Effect, lang: Lang) -> Map<String, Value> {
    let context = match function.name {
        "QueryCallStatus" => Context::CallStatus,
        "QueryRoutingInfo" => Context::Routing,
        _ => Context::Plain,
    };
    let mut body = Map::new();
    body.insert("ReturnCode".into(), json!(effect.code));
    body.insert(
        "ReturnText".into(),
        json!(codes::text(effect.code, context, lang)),
    );
    for p in params::outputs(function) {
        let value = effect.outputs.get(p.name).cloned().unwrap_or(match p.ty {
            Ty::Str(_) => json!(""),
            Ty::Int(..) => json!(0),
        });
        body.insert(p.name.to_owned(), value);
    }
    body
}

fn respond(
    encoding: Encoding,
    body: &Map<String, Value>,
    method: &str,
    outcome: &'static str,
) -> Handled {
    let (content_type, bytes) = match encoding {
        Encoding::XmlRpc => (
            XML,
            xmlrpc::write_response(&xmlrpc::Value::from_json(&Value::Object(body.clone())))
                .into_bytes(),
        ),
        Encoding::Json => (JSON, serde_json::to_vec(body).unwrap_or_default()),
    };
    response(200, content_type, bytes, method, outcome)
}

fn fault(encoding: Encoding, code: i64, message: &str, method: &str) -> Handled {
    match encoding {
        Encoding::XmlRpc => response(
            200,
            XML,
            xmlrpc::write_fault(&xmlrpc::Fault {
                code,
                message: message.to_owned(),
            })
            .into_bytes(),
            method,
            "bad_request",
        ),
        Encoding::Json => {
            let body = json!({"error": {"code": if code == -32601 { "unknown_function" } else { "invalid_request" }, "message": message}});
            response(
                400,
                JSON,
                serde_json::to_vec(&body).unwrap_or_default(),
                method,
                "bad_request",
            )
        }
    }
}

fn plain(status: u16, text: &'static str, outcome: &'static str) -> Handled {
    response(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes().to_vec(),
        "unknown",
        outcome,
    )
}

fn response(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    method: &str,
    outcome: &'static str,
) -> Handled {
    let response = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Bytes::from(body))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()));
    Handled {
        response,
        method: method.to_owned(),
        outcome,
        vendor_call_id: None,
    }
}

/// A store refusal as the platform's own code: full or over quota is -400 (low system
/// resources), anything else -801 (cannot reach the servers).
fn store_code(error: &RecordError) -> i32 {
    match error {
        RecordError::QuotaExceeded | RecordError::StorageFull => codes::LOW_RESOURCES,
        RecordError::Unavailable(_) => codes::NO_CONNECTION,
    }
}

/// The outcome of running a step in a transition.
#[allow(clippy::large_enum_variant)]
enum Ran {
    Done(Effect),
    /// A claimed alias belongs to another entity; nothing was written.
    Taken,
    /// The step asked to be run again with other keys (the channel's call changed).
    Stale,
}

/// A step's answer when it saw other entities than those it was set up for (the channel's
/// call changed meanwhile, a generated CallID is taken): nothing is written, and the caller
/// runs it again with the keys read anew.
struct Stale;

/// Runs `step` on the channel and the call `call_id` (when given) in one transition. When
/// either state cannot be read, the step does not run: nothing is written and the effect is
/// the internal error ([`Effect::unreadable`]).
async fn run(
    req: &Req<'_>,
    call_id: Option<&str>,
    mut step: impl FnMut(Option<&Channel>, Option<&Call>, bool) -> Result<Effect, Stale> + Send,
) -> Ran {
    let mut keys = vec![req.channel_key()];
    if let Some(id) = call_id {
        keys.push(req.call_key(id));
    }
    let now = req.now;
    let call_max = req.settings.call_max();
    let mut result = Ok(Effect::code(codes::UNKNOWN_ERROR));
    let mut f = |read: &[Option<Entity>]| {
        let call_entity = read.get(1).and_then(Option::as_ref);
        let ch = model::read::<Channel>(read.first().and_then(Option::as_ref));
        let eff = match (ch, model::read::<Call>(call_entity)) {
            (Ok(ch), Ok(call)) => step(ch.as_ref(), call.as_ref(), call_entity.is_some()),
            (Err(why), _) | (_, Err(why)) => Ok(Effect::unreadable(why)),
        };
        let changes = match &eff {
            Ok(eff) if eff.unreadable.is_none() => eff.changes(now, call_max),
            _ => Vec::new(),
        };
        result = eff;
        changes
    };
    match req.gw.transition(keys, &mut f).await {
        Ok(Transitioned::Done(_)) => match result {
            Ok(eff) => Ran::Done(eff),
            Err(Stale) => Ran::Stale,
        },
        Ok(Transitioned::AliasTaken { .. }) => Ran::Taken,
        Err(e) => {
            tracing::warn!(tenant = %req.tenant, channel = %req.channel, function = req.function.name, reason = %e, "openscape state not stored");
            Ran::Done(Effect::code(store_code(&e)))
        }
    }
}

fn done(ran: Ran, taken: i32) -> Effect {
    match ran {
        Ran::Done(e) => e,
        Ran::Taken => Effect::code(taken),
        Ran::Stale => Effect::code(codes::UNKNOWN_ERROR),
    }
}

/// An entity and its state as `T`. The error is the answer: the store's refusal as the
/// platform's code, or the internal error when the state cannot be read (tell the two apart
/// by [`Effect::unreadable`]).
async fn load<T: for<'de> serde::Deserialize<'de>>(
    gw: &dyn Gateway,
    key: EntityKey,
) -> Result<(Option<T>, Option<Entity>), Effect> {
    match gw.load(key).await {
        Ok(e) => match model::read(e.as_ref()) {
            Ok(state) => Ok((state, e)),
            Err(why) => Err(Effect::unreadable(why)),
        },
        Err(e) => Err(Effect::code(store_code(&e))),
    }
}

/// The channel and its preconditions for call functions.
async fn load_channel(req: &Req<'_>) -> Result<Option<Channel>, Effect> {
    load(req.gw, req.channel_key()).await.map(|(c, _)| c)
}

async fn dispatch(req: &Req<'_>) -> (Effect, &'static str) {
    let eff = match req.function.name {
        "Initialize" => initialize(req).await,
        "SetCallInfo" => done(
            run(req, None, |ch, _, _| Ok(model::set_call_info(req.args, ch))).await,
            0,
        ),
        "QueryCallInfo" => query_call_info(req).await,
        "QueryCallStatus" => query_call_status(req).await,
        "GetTransitNumber" => get_transit_number(req).await,
        "QueryRoutingInfo" => return query_routing_info(req).await,
        "QueryQueueStatistics" => return query_queue_statistics(req).await,
        "QueryAgentStatus" => return query_agent_status(req).await,
        "QuerySystemStatus" => return query_system_status(req).await,
        "CreateCallback" => create_callback(req).await,
        "DeleteCallback" => delete_callback(req).await,
        "Enqueue" | "EnqueueForAgent" => enqueue(req).await,
        _ => call_function(req, req.ctx()).await,
    };
    (eff, "ok")
}

async fn call_function(req: &Req<'_>, ctx: Ctx) -> Effect {
    let call_id = req.args.text("CallID");
    let name = req.function.name;
    done(
        run(req, Some(&call_id), |ch, call, _| {
            Ok(model::call_function(name, req.args, ch, call, &ctx)
                .unwrap_or_else(|| Effect::code(codes::UNKNOWN_ERROR)))
        })
        .await,
        codes::FAILED,
    )
}

async fn initialize(req: &Req<'_>) -> Effect {
    let ctx = req.ctx();
    for _ in 0..5 {
        let current = match load_channel(req).await {
            Ok(ch) => ch.and_then(|c| c.call_id),
            Err(eff) => return eff,
        };
        let expected = current.clone();
        let ran = run(req, current.as_deref(), |ch, call, _| {
            if ch.and_then(|c| c.call_id.clone()) != expected {
                return Err(Stale);
            }
            Ok(model::initialize(req.args, call, &ctx))
        })
        .await;
        if !matches!(ran, Ran::Stale) {
            return done(ran, codes::FAILED);
        }
    }
    Effect::code(codes::UNKNOWN_ERROR)
}

/// The longest a request may wait inside the IVR's RpcTimeout: a margin of a second (half
/// of it for short timeouts) is kept for the answer's way back.
pub fn wait_cap(rpc_timeout_ms: i64) -> Duration {
    let rpc = u64::try_from(rpc_timeout_ms).unwrap_or(0).max(1);
    let margin = (rpc / 2).min(1_000);
    // Never beyond what the core waits anyway (and never an Instant overflow).
    Duration::from_millis(rpc - margin).min(ivrgate_adapter::state::MAX_WAIT)
}

fn new_call_id(req: &Req<'_>, attempt: u32) -> String {
    let now_ms = model::ms(req.now);
    let seed = format!(
        "{}/{}/{}/{attempt}",
        req.tenant,
        req.channel,
        req.now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    format!(
        "{:010}{:06}",
        now_ms.rem_euclid(10_000_000_000),
        fnv(seed.as_bytes()) % 1_000_000
    )
}

pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

async fn query_call_info(req: &Req<'_>) -> Effect {
    let ctx = req.ctx();
    let unmonitored = req.args.str("TrunkConnectedIVRCall") == Some("1;");
    if unmonitored {
        for attempt in 0..5 {
            let id = new_call_id(req, attempt);
            let ran = run(req, Some(&id), |ch, _, exists| {
                model::query_call_info_unmonitored(ch, req.channel, &id, exists, &ctx).ok_or(Stale)
            })
            .await;
            if !matches!(ran, Ran::Stale) {
                return done(ran, codes::FAILED);
            }
        }
        return Effect::code(codes::UNKNOWN_ERROR);
    }
    // Monitored: the call the command API registered on the device, waited for within the
    // RpcTimeout when none is there yet.
    let ch = match load_channel(req).await {
        Ok(Some(ch)) if ch.initialized => ch,
        Ok(_) => return Effect::code(codes::NOT_INITIALIZED),
        Err(eff) => return eff,
    };
    let device = req.args.text("Device");
    let key = EntityKey::new(req.tenant, model::DEVICE_KIND, &device);
    let deadline = Instant::now() + wait_cap(ch.rpc_timeout_ms);
    let (mut entity, mut version) = match req.gw.load(key.clone()).await {
        Ok(e) => {
            let v = e.as_ref().map(|e| e.version);
            (e, v)
        }
        Err(e) => return Effect::code(store_code(&e)),
    };
    loop {
        let call_id = match model::read::<model::Device>(entity.as_ref()) {
            Ok(device) => device.and_then(|d| d.call_id),
            Err(why) => return Effect::unreadable(why),
        };
        if let Some(call_id) = call_id {
            let ran = run(req, Some(&call_id), |ch, call, _| {
                Ok(model::query_call_info_monitored(
                    ch,
                    req.channel,
                    call,
                    &device,
                ))
            })
            .await;
            let eff = done(ran, codes::FAILED);
            if eff.code != codes::UNKNOWN_CALL {
                return eff;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Effect::code(codes::TIMED_OUT);
        }
        match req.gw.wait_change(key.clone(), version, left).await {
            Waited::Changed(e) => {
                version = e.as_ref().map(|e| e.version);
                entity = e;
            }
            Waited::TimedOut | Waited::ShuttingDown => return Effect::code(codes::TIMED_OUT),
        }
    }
}

/// Whether the T-Server is reported operational (state 8), or nothing says otherwise (also
/// when the store cannot be read); an unreadable system status is the internal error.
async fn tserver_up(req: &Req<'_>) -> Result<bool, Effect> {
    let key = EntityKey::new(req.tenant, model::SYSTEM_KIND, model::SYSTEM_ID);
    match load::<command::System>(req.gw, key).await {
        Ok((Some(system), _)) => Ok(system.tserver_up()),
        Err(eff) if eff.unreadable.is_some() => Err(eff),
        _ => Ok(true),
    }
}

/// The tenant's live calls. One whose state cannot be read is left out, and logged: it is
/// another call's, and must not fail this one's request.
async fn live_calls(gw: &dyn Gateway, tenant: &str) -> Vec<Call> {
    gw.list(tenant, model::CALL_KIND, 10_000)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|e| match model::read::<Call>(Some(e)) {
            Ok(call) => call,
            Err(why) => {
                tracing::error!(tenant, reason = %why, "openscape call left out of the live calls: its state cannot be read");
                None
            }
        })
        .collect()
}

/// EstimatedWait and CallsInQueue: the pushed figures, or the calls queued here.
async fn queue_figures(req: &Req<'_>, queue: &str) -> Result<(i64, i64), Effect> {
    let key = EntityKey::new(req.tenant, model::QUEUE_KIND, queue);
    match load::<command::QueueFigures>(req.gw, key).await {
        Ok((Some(q), _)) => return Ok((q.estimated_wait_s, q.calls_in_queue)),
        Err(eff) if eff.unreadable.is_some() => return Err(eff),
        _ => {}
    }
    let queued = live_calls(req.gw, req.tenant)
        .await
        .iter()
        .filter(|c| c.status == model::Status::Queued && c.queue.as_deref() == Some(queue))
        .count();
    Ok((0, queued as i64))
}

async fn enqueue(req: &Req<'_>) -> Effect {
    let mut ctx = req.ctx();
    ctx.tserver_up = match tserver_up(req).await {
        Ok(up) => up,
        Err(eff) => return eff,
    };
    let queue = req.args.text("QueueName");
    let (wait, in_queue) = match queue_figures(req, &queue).await {
        Ok(figures) => figures,
        Err(eff) => return eff,
    };
    ctx.queue_figures = (wait, in_queue + 1);
    if let Some(agent) = req.args.str("AgentID") {
        let key = EntityKey::new(req.tenant, model::AGENT_KIND, agent);
        ctx.agent_known = matches!(req.gw.load(key).await, Ok(Some(e)) if e.state.is_some());
    }
    call_function(req, ctx).await
}

async fn query_call_status(req: &Req<'_>) -> Effect {
    let call_id = req.args.text("CallID");
    let ch = match load_channel(req).await {
        Ok(ch) => ch,
        Err(eff) => return eff,
    };
    let key = req.call_key(&call_id);
    let (call, entity) = match load::<Call>(req.gw, key.clone()).await {
        Ok(x) => x,
        Err(eff) => return eff,
    };
    let mut call = match model::precheck(ch.as_ref(), call.as_ref(), &call_id) {
        Ok(c) => c.clone(),
        Err(code) => return Effect::code(code),
    };
    match tserver_up(req).await {
        Ok(true) => {}
        Ok(false) => return Effect::code(codes::TSERVER_DOWN),
        Err(eff) => return eff,
    }
    let timeout =
        Duration::from_millis(u64::try_from(req.args.int("Timeout").unwrap_or(0)).unwrap_or(0));
    let rpc = ch.map(|c| c.rpc_timeout_ms).unwrap_or(10_000);
    let mut version = entity.map(|e| e.version);
    if !timeout.is_zero() && !call.status.actionable() {
        let initial = call.status;
        let deadline = Instant::now() + timeout.min(wait_cap(rpc));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Effect::code(codes::TIMED_OUT);
            }
            match req.gw.wait_change(key.clone(), version, left).await {
                Waited::Changed(Some(e)) => {
                    version = Some(e.version);
                    match model::read::<Call>(Some(&e)) {
                        Ok(Some(c)) if c.status != initial => {
                            call = c;
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return Effect::code(codes::UNKNOWN_CALL),
                        Err(why) => return Effect::unreadable(why),
                    }
                }
                Waited::Changed(None) => return Effect::code(codes::UNKNOWN_CALL),
                Waited::TimedOut | Waited::ShuttingDown => return Effect::code(codes::TIMED_OUT),
            }
        }
    }
    let position = if call.status == model::Status::Queued {
        model::position(&call, &live_calls(req.gw, req.tenant).await)
    } else {
        0
    };
    model::call_status(&call, position)
}

async fn get_transit_number(req: &Req<'_>) -> Effect {
    let call_id = req.args.text("CallID");
    let ctx = req.ctx();
    let pool = &req.settings.transit_numbers;
    let check = |ch: Option<&Channel>, call: Option<&Call>| -> Result<Call, Box<Effect>> {
        let call =
            model::transit_precheck(ch, call, &call_id).map_err(|c| Box::new(Effect::code(c)))?;
        if let Some(t) = &call.transit {
            return Err(Box::new(
                Effect::code(codes::OK).out("TransitNumber", t.number.clone()),
            ));
        }
        if pool.is_empty() {
            return Err(Box::new(Effect::code(codes::TRANSIT_NONE_CONFIGURED)));
        }
        Ok(call)
    };
    let start = (fnv(call_id.as_bytes()) % pool.len().max(1) as u64) as usize;
    for i in 0..pool.len().max(1) {
        let number = pool
            .get((start + i) % pool.len().max(1))
            .cloned()
            .unwrap_or_default();
        let ran = run(req, Some(&call_id), |ch, call, _| match check(ch, call) {
            Ok(call) => Ok(model::allocate_transit(&call, &number, &ctx)),
            Err(eff) => Ok(*eff),
        })
        .await;
        match ran {
            Ran::Done(eff) => return eff,
            Ran::Taken | Ran::Stale => continue,
        }
    }
    Effect::code(codes::TRANSIT_BUSY)
}

async fn precheck_call(req: &Req<'_>) -> Result<Call, Effect> {
    let call_id = req.args.text("CallID");
    let ch = load_channel(req).await?;
    let (call, _) = load::<Call>(req.gw, req.call_key(&call_id)).await?;
    model::precheck(ch.as_ref(), call.as_ref(), &call_id)
        .cloned()
        .map_err(Effect::code)
}

fn decision_outcome(source: &AnswerSource) -> &'static str {
    match source {
        AnswerSource::Fallback(_) => "fallback",
        AnswerSource::Customer | AnswerSource::FallbackUrl => "ok",
    }
}

async fn query_routing_info(req: &Req<'_>) -> (Effect, &'static str) {
    let call = match precheck_call(req).await {
        Ok(c) => c,
        Err(eff) => return (eff, "ok"),
    };
    let anidnis = req.args.text("ANIDNIS");
    if !anidnis.is_empty() && !anidnis.contains(';') {
        return (Effect::code(codes::BAD_PARAMETER), "ok");
    }
    // Contact data ANI/DNIS take precedence over the parameter (seed §4.18).
    let (mut from, mut to) = (call.ani.clone(), call.dnis.clone());
    if let Some((a, d)) = anidnis.split_once(';') {
        from = a.to_owned();
        to = d.to_owned();
    }
    for (k, slot) in [("ANI", &mut from), ("DNIS", &mut to)] {
        if let Some(v) = call.contact_data.get(k).and_then(Value::as_str) {
            *slot = v.to_owned();
        }
    }
    let mut correlation = Map::new();
    correlation.insert("CallID".into(), json!(call.call_id));
    let mut data = Map::new();
    data.insert("from".into(), json!(from));
    data.insert("to".into(), json!(to));
    data.insert("channel".into(), json!(req.channel));
    data.insert("monitored".into(), json!(call.monitored));
    data.insert(
        "contact_data".into(),
        Value::Object(call.contact_data.clone()),
    );
    let mut vendor_fields = req.args.to_json();
    vendor_fields.insert("function".into(), json!("QueryRoutingInfo"));
    let decision = req
        .gw
        .decide(DecisionRequest {
            tenant: req.tenant.to_owned(),
            point: &DECISION_POINTS[ROUTING],
            call: CallRef {
                vendor_call_id: Some(call.call_id.clone()),
                correlation,
            },
            data,
            vendor_fields,
            deadline_ms: channel_wait_ms(req).await,
        })
        .await;
    let queue = match &decision.answer {
        Answer::Action(e) => match &e.action {
            Action::Enqueue { queue, .. } => Some(queue.clone()),
            _ => None,
        },
        Answer::Native(_) => None,
    };
    let figures = match queue {
        Some(q) => match queue_figures(req, &q).await {
            Ok(figures) => figures,
            Err(eff) => return (eff, "ok"),
        },
        None => (0, 0),
    };
    let outcome = decision_outcome(&decision.source);
    match routing_effect(&decision.answer, figures) {
        Ok(eff) => (eff, outcome),
        Err(why) => {
            tracing::warn!(tenant = %req.tenant, channel = %req.channel, call_id = %call.call_id, reason = %why, decision_id = %decision.decision_id, "routing answer not usable; -915");
            (Effect::code(codes::NO_ROUTING), "fallback")
        }
    }
}

/// Asks the figures webhook when the tenant configured it; `None`: use the pushed figures.
async fn figures_decision(
    req: &Req<'_>,
    point: usize,
    data: Map<String, Value>,
) -> Option<(Map<String, Value>, &'static str)> {
    let kind = DECISION_POINTS[point].kind;
    if !req.settings.figures_from_webhook(kind) {
        return None;
    }
    let decision = req
        .gw
        .decide(DecisionRequest {
            tenant: req.tenant.to_owned(),
            point: &DECISION_POINTS[point],
            call: CallRef::default(),
            data,
            vendor_fields: req.args.to_json(),
            deadline_ms: channel_wait_ms(req).await,
        })
        .await;
    match decision.answer {
        Answer::Native(Value::Object(o)) => Some((o, decision_outcome(&decision.source))),
        _ => None,
    }
}

/// How long the IVR waits for this answer: its RpcTimeout less the margin, so a slow
/// webhook's fallback still reaches the IVR in time.
async fn channel_wait_ms(req: &Req<'_>) -> Option<u64> {
    let channel = load_channel(req).await.ok().flatten()?;
    Some(wait_cap(channel.rpc_timeout_ms).as_millis() as u64)
}

async fn require_initialized(req: &Req<'_>) -> Result<Channel, Effect> {
    match load_channel(req).await? {
        Some(ch) if ch.initialized => Ok(ch),
        _ => Err(Effect::code(codes::NOT_INITIALIZED)),
    }
}

async fn query_queue_statistics(req: &Req<'_>) -> (Effect, &'static str) {
    if let Err(eff) = require_initialized(req).await {
        return (eff, "ok");
    }
    let queue = req.args.text("QueueName");
    if req.settings.multitenant() {
        let bu = req.args.text("BusinessUnitName");
        if !req.settings.business_units.contains(&bu) {
            return (Effect::code(codes::BAD_BUSINESS_UNIT), "ok");
        }
    }
    if !req.settings.queues.is_empty() && !req.settings.queues.contains(&queue) {
        return (Effect::code(codes::UNKNOWN_QUEUE), "ok");
    }
    let mut data = Map::new();
    data.insert("queue".into(), json!(queue));
    data.insert(
        "business_unit".into(),
        json!(req.args.str("BusinessUnitName")),
    );
    if let Some((o, outcome)) = figures_decision(req, QUEUE_STATS, data).await {
        let mut eff = Effect::code(codes::OK);
        for f in QUEUE_FIELDS {
            eff.outputs
                .insert(f.into(), o.get(f).cloned().unwrap_or(json!(0)));
        }
        return (eff, outcome);
    }
    let key = EntityKey::new(req.tenant, model::QUEUE_KIND, &queue);
    let pushed = match load::<command::QueueFigures>(req.gw, key).await {
        Ok((q, _)) => q,
        Err(eff) if eff.unreadable.is_some() => return (eff, "ok"),
        Err(_) => None,
    };
    let eff = match pushed {
        Some(q) => Effect::code(codes::OK)
            .out("CallsInQueue", q.calls_in_queue)
            .out("EstimatedWait", q.estimated_wait_s)
            .out("AverageWait", q.average_wait_s)
            .out("OldestCallInQueue", q.oldest_call_s)
            .out("ServiceLevel", q.service_level),
        None => {
            let now = model::ms(req.now);
            let queued: Vec<Call> = live_calls(req.gw, req.tenant)
                .await
                .into_iter()
                .filter(|c| {
                    c.status == model::Status::Queued && c.queue.as_deref() == Some(queue.as_str())
                })
                .collect();
            let oldest = queued
                .iter()
                .filter_map(|c| c.enqueued_at_ms)
                .min()
                .map_or(0, |t| (now - t).max(0) / 1000);
            Effect::code(codes::OK)
                .out("CallsInQueue", queued.len() as i64)
                .out("OldestCallInQueue", oldest)
        }
    };
    (eff, "ok")
}

async fn query_agent_status(req: &Req<'_>) -> (Effect, &'static str) {
    if let Err(eff) = require_initialized(req).await {
        return (eff, "ok");
    }
    let agent_id = req.args.text("AgentID");
    let device = req.args.text("Device");
    if agent_id.is_empty() && device.is_empty() {
        return (Effect::code(codes::BAD_PARAMETER), "ok");
    }
    let mut data = Map::new();
    data.insert("agent_id".into(), json!(agent_id));
    data.insert("device".into(), json!(device));
    if let Some((o, outcome)) = figures_decision(req, AGENT_STATUS, data).await {
        if let Some(code) = o
            .get("ReturnCode")
            .and_then(Value::as_i64)
            .filter(|c| *c < 0)
        {
            return (Effect::code(code as i32), outcome);
        }
        let eff = Effect::code(codes::OK)
            .out(
                "AgentID",
                o.get("AgentID").cloned().unwrap_or(json!(agent_id)),
            )
            .out("Device", o.get("Device").cloned().unwrap_or(json!(device)))
            .out(
                "AgentStatus",
                o.get("AgentStatus").cloned().unwrap_or(json!(13)),
            );
        return (eff, outcome);
    }
    let entity = if agent_id.is_empty() {
        match req
            .gw
            .find(req.tenant, model::NS_AGENT_DEVICE, &device)
            .await
        {
            Ok(Some(e)) if e.state.is_some() => e,
            Ok(_) => return (Effect::code(codes::UNKNOWN_DEVICE), "ok"),
            Err(e) => return (Effect::code(store_code(&e)), "ok"),
        }
    } else {
        match req
            .gw
            .load(EntityKey::new(req.tenant, model::AGENT_KIND, &agent_id))
            .await
        {
            Ok(Some(e)) if e.state.is_some() => e,
            Ok(_) => return (Effect::code(codes::UNKNOWN_AGENT), "ok"),
            Err(e) => return (Effect::code(store_code(&e)), "ok"),
        }
    };
    let agent: command::Agent = match model::read(Some(&entity)) {
        Ok(agent) => agent.unwrap_or_default(),
        Err(why) => return (Effect::unreadable(why), "ok"),
    };
    let eff = Effect::code(codes::OK)
        .out("AgentID", entity.key.id.clone())
        .out("Device", agent.device.unwrap_or_default())
        .out("AgentStatus", agent.status);
    (eff, "ok")
}

async fn query_system_status(req: &Req<'_>) -> (Effect, &'static str) {
    if let Err(eff) = require_initialized(req).await {
        return (eff, "ok");
    }
    if let Some((o, outcome)) = figures_decision(req, SYSTEM_STATUS, Map::new()).await {
        let states = o
            .get("IndividualServerStates")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let entries = o
            .get("Entries")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| states.split(';').filter(|s| !s.trim().is_empty()).count() as i64);
        let eff = Effect::code(codes::OK)
            .out(
                "OverallStatus",
                o.get("OverallStatus").cloned().unwrap_or(json!(0)),
            )
            .out("IndividualServerStates", states)
            .out("Entries", entries);
        return (eff, outcome);
    }
    let key = EntityKey::new(req.tenant, model::SYSTEM_KIND, model::SYSTEM_ID);
    let system = match load::<command::System>(req.gw, key).await {
        Ok((s, _)) => s.unwrap_or_default(),
        Err(eff) if eff.unreadable.is_some() => return (eff, "ok"),
        Err(_) => command::System::default(),
    };
    if !system.administration_server_available {
        return (Effect::code(codes::NO_STATUS_INFO), "ok");
    }
    let (states, entries) = system.states();
    let eff = Effect::code(codes::OK)
        .out("OverallStatus", system.overall())
        .out("IndividualServerStates", states)
        .out("Entries", entries);
    (eff, "ok")
}

fn new_callback_id(req: &Req<'_>, attempt: u32) -> String {
    let seed = format!(
        "{}/{}/{:?}/{attempt}",
        req.tenant,
        req.args.text("CallID"),
        req.now
    );
    format!(
        "{:013}{:04}",
        model::ms(req.now).rem_euclid(10_000_000_000_000),
        fnv(seed.as_bytes()) % 10_000
    )
}

async fn create_callback(req: &Req<'_>) -> Effect {
    let call = match precheck_call(req).await {
        Ok(c) => c,
        Err(eff) => return eff,
    };
    let s = req.settings;
    if s.multitenant() && call.business_unit.is_none() {
        return Effect::code(codes::BAD_BUSINESS_UNIT);
    }
    let queue = req.args.text("QueueName");
    let Some(cbq) = s.callback_queues.get(&queue) else {
        return Effect::code(codes::CB_BAD_QUEUE);
    };
    if call.contact_data_len() > 1000 {
        return Effect::code(codes::CB_DATA_TOO_LONG);
    }
    let offset = req.args.int("TimeZoneOffset").unwrap_or(0);
    let mut schedules = Vec::new();
    for name in ["Schedule1", "Schedule2", "Schedule3"] {
        if let Some(text) = req.args.str(name) {
            match callback::parse_schedule(text, offset) {
                Ok(sch) => schedules.push(sch),
                Err(code) => return Effect::code(code),
            }
        }
    }
    let excluded = s.excluded_digits();
    if schedules.iter().any(|sch| excluded.contains(&sch.digits)) {
        return Effect::code(codes::CB_EXCLUDED);
    }
    let Ok(now) = jiff::Timestamp::from_millisecond(model::ms(req.now)) else {
        return Effect::code(codes::UNKNOWN_ERROR);
    };
    if schedules.iter().all(|sch| sch.end <= now) {
        return Effect::code(codes::CB_ALL_EXPIRED);
    }
    let horizon = now
        .checked_add(jiff::SignedDuration::from_hours(
            24 * i64::from(cbq.max_days_ahead),
        ))
        .unwrap_or(now);
    if schedules
        .iter()
        .any(|sch| sch.start > horizon || sch.end > horizon)
    {
        return Effect::code(codes::CB_TOO_FAR);
    }
    let hours = match cbq.hours() {
        Ok(h) => h,
        Err(_) => callback::OpenHours::always(),
    };
    if !schedules
        .iter()
        .filter(|sch| sch.end > now)
        .any(|sch| hours.overlaps(sch.start.max(now), sch.end))
    {
        return Effect::code(codes::CB_NO_OVERLAP);
    }
    let last_end = schedules.iter().map(|sch| sch.end).max().unwrap_or(now);
    let until = model::at_ms(last_end.as_millisecond());
    let template = callback::Callback {
        callback_id: String::new(),
        call_id: call.call_id.clone(),
        queue,
        description: req.args.text("Description"),
        contact_name: req.args.text("ContactName"),
        time_zone_offset_min: offset,
        schedules: schedules.iter().map(callback::Window::of).collect(),
        contact_data: call.contact_data.clone(),
        business_unit: call.business_unit.clone(),
        from: call.ani.clone(),
    };
    let alias = template.number_alias();
    for attempt in 0..5 {
        let id = new_callback_id(req, attempt);
        let key = EntityKey::new(req.tenant, model::CALLBACK_KIND, &id);
        let state = model::to_value(&callback::Callback {
            callback_id: id.clone(),
            ..template.clone()
        });
        let mut fresh = false;
        let mut f = |read: &[Option<Entity>]| {
            fresh = read.first().is_some_and(Option::is_none);
            if !fresh {
                return Vec::new();
            }
            let mut ev = ivrgate_adapter::EntityEvent::new("openscape.callback.created");
            ev.correlation.insert("CallID".into(), json!(call.call_id));
            ev.correlation.insert("CallbackID".into(), json!(id));
            if let Value::Object(o) = &state {
                ev.data = o.clone();
            }
            ev.vendor_fields = req.args.to_json();
            ev.vendor_fields
                .insert("function".into(), json!("CreateCallback"));
            vec![ivrgate_adapter::Change::Write(
                ivrgate_adapter::Write::state(state.clone())
                    .event(ev)
                    .alias(ivrgate_adapter::AliasChange::Claim {
                        namespace: model::NS_CALLBACK.into(),
                        value: alias.clone(),
                        until: Some(until),
                    }),
            )]
        };
        match req.gw.transition(vec![key], &mut f).await {
            Ok(Transitioned::Done(_)) if fresh => {
                return Effect::code(codes::OK).out("CallbackID", id);
            }
            Ok(Transitioned::Done(_)) => continue,
            Ok(Transitioned::AliasTaken { .. }) => return Effect::code(codes::CB_DUPLICATE),
            Err(e) => return Effect::code(store_code(&e)),
        }
    }
    Effect::code(codes::UNKNOWN_ERROR)
}

async fn delete_callback(req: &Req<'_>) -> Effect {
    match load_channel(req).await {
        Ok(Some(ch)) if ch.initialized && ch.queried => {}
        Ok(Some(ch)) if ch.initialized => return Effect::code(codes::NO_CALL_INFO),
        Ok(_) => return Effect::code(codes::NOT_INITIALIZED),
        Err(eff) => return eff,
    }
    let id = req.args.text("CallbackID");
    let key = EntityKey::new(req.tenant, model::CALLBACK_KIND, &id);
    let mut found = false;
    let mut broken = None;
    let args = req.args.to_json();
    let result = ivrgate_adapter::transition_one(req.gw, key, |e| {
        broken = None;
        let stored = match model::read::<callback::Callback>(e) {
            Ok(stored) => stored,
            Err(why) => {
                broken = Some(why);
                return ivrgate_adapter::Change::Keep;
            }
        };
        found = stored.is_some();
        let Some(stored) = stored else {
            return ivrgate_adapter::Change::Keep;
        };
        let mut ev = ivrgate_adapter::EntityEvent::new("openscape.callback.deleted");
        ev.correlation.insert("CallbackID".into(), json!(id));
        ev.correlation
            .insert("CallID".into(), json!(stored.call_id));
        if let Value::Object(o) = model::to_value(&stored) {
            ev.data = o;
        }
        ev.vendor_fields = args.clone();
        ev.vendor_fields
            .insert("function".into(), json!("DeleteCallback"));
        ivrgate_adapter::Change::Write(ivrgate_adapter::Write {
            state: None,
            events: vec![ev],
            aliases: vec![ivrgate_adapter::AliasChange::Release {
                namespace: model::NS_CALLBACK.into(),
                value: stored.number_alias(),
            }],
            ..ivrgate_adapter::Write::default()
        })
    })
    .await;
    if let Some(why) = broken {
        return Effect::unreadable(why);
    }
    match result {
        Ok(_) if found => Effect::code(codes::OK),
        Ok(_) => Effect::code(codes::CB_INVALID_ID),
        Err(e) => Effect::code(store_code(&e)),
    }
}

/// A transit number's 30 s are up: released unless the call arrived or released it.
async fn on_timer(gw: &dyn Gateway, timer: TimerFired) -> Result<(), String> {
    if timer.name != model::TRANSIT_TIMER || timer.entity.kind != model::CALL_KIND {
        return Ok(());
    }
    let number = timer
        .payload
        .get("number")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let settings = settings_of(gw, &timer.entity.tenant);
    let ctx = Ctx {
        now: gw.now(),
        quarantine: settings.quarantine(),
        multitenant: false,
        business_units: Vec::new(),
        queues: Vec::new(),
        tserver_up: true,
        agent_known: true,
        queue_figures: (0, 0),
        function: "TransitNumberExpired",
        args: Map::new(),
    };
    let call_max = settings.call_max();
    let mut unreadable = None;
    let result = ivrgate_adapter::transition_one(gw, timer.entity.clone(), |e| {
        unreadable = None;
        let call = match model::read::<Call>(e) {
            Ok(Some(call)) => call,
            Ok(None) => return ivrgate_adapter::Change::Keep,
            Err(why) => {
                unreadable = Some(why);
                return ivrgate_adapter::Change::Keep;
            }
        };
        match model::transit_arrived(&call, &number, "expired", &ctx) {
            Some(eff) => eff.changes(ctx.now, call_max).pop().unwrap_or_default(),
            None => ivrgate_adapter::Change::Keep,
        }
    })
    .await;
    // Left untouched; the core logs and counts the failure and runs the timer again after
    // its lease, until the call ends.
    if let Some(why) = unreadable {
        return Err(why.to_string());
    }
    match result {
        Ok(_) => {
            tracing::info!(tenant = %timer.entity.tenant, call_id = %timer.entity.id, transit_number = %number, "openscape transit number expired");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Helpers shared with the command API.
/// The tenant's settings as parsed at configuration load (the defaults without a section).
pub(crate) fn settings_of(gw: &dyn Gateway, tenant: &str) -> std::sync::Arc<Settings> {
    ivrgate_adapter::settings_of::<Settings>(gw, tenant, VENDOR).unwrap_or_default()
}

pub(crate) fn plain_ctx(
    gw: &dyn Gateway,
    settings: &Settings,
    function: &'static str,
    args: Map<String, Value>,
) -> Ctx {
    Ctx {
        now: gw.now(),
        quarantine: settings.quarantine(),
        multitenant: settings.multitenant(),
        business_units: settings.business_units.clone(),
        queues: settings.queues.clone(),
        tserver_up: true,
        agent_known: true,
        queue_figures: (0, 0),
        function,
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(v: Value) -> Answer {
        Answer::Action(serde_json::from_value(v).expect("action"))
    }

    #[test]
    fn routing_answers_become_return_codes() {
        let e = routing_effect(
            &action(json!({"action": "enqueue", "queue": "Sales", "priority": 12, "agent": "790006", "agent_wait_s": 120})),
            (45, 3),
        )
        .expect("enqueue");
        assert_eq!(e.code, 0);
        assert_eq!(e.outputs["Destination"], "Sales");
        assert_eq!(e.outputs["EstimatedWait"], 45);
        assert_eq!(
            routing_effect(&action(json!({"action": "hangup"})), (0, 0)).map(|e| e.code),
            Ok(1)
        );
        let e = routing_effect(
            &action(json!({"action": "dial", "targets": ["5678"]})),
            (0, 0),
        )
        .expect("dial");
        assert_eq!(
            (e.code, e.outputs["Destination"].clone()),
            (2, json!("5678"))
        );
        assert_eq!(
            routing_effect(&platform_default(), (0, 0)).map(|e| e.code),
            Ok(-915)
        );
        assert!(routing_effect(
            &action(json!({"action": "enqueue", "queue": "Sales", "priority": 101})),
            (0, 0)
        )
        .is_err());
        assert!(routing_effect(&action(json!({"action": "record"})), (0, 0)).is_err());
        assert!(routing_effect(&Answer::Native(json!({"ReturnCode": 0})), (0, 0)).is_err());
        assert!(routing_effect(&Answer::Native(json!({"ReturnCode": 7})), (0, 0)).is_err());
        assert_eq!(
            routing_effect(&Answer::Native(json!({"ReturnCode": -916})), (0, 0)).map(|e| e.code),
            Ok(-916)
        );
        assert!(validate_routing(&action(json!({"action": "dial", "targets": []}))).is_err());
    }

    #[test]
    fn waits_stay_inside_the_rpc_timeout() {
        assert_eq!(wait_cap(10_000), Duration::from_millis(9_000));
        assert_eq!(wait_cap(1_000), Duration::from_millis(500));
        assert_eq!(wait_cap(0), Duration::from_millis(1));
        assert_eq!(wait_cap(-5), Duration::from_millis(1));
        assert_eq!(wait_cap(i64::MAX), ivrgate_adapter::state::MAX_WAIT);
    }

    #[test]
    fn channel_tokens() {
        assert!(valid_token("6060"));
        assert!(valid_token("ivr-1.a_b"));
        assert!(!valid_token(""));
        assert!(!valid_token("a b"));
        assert!(!valid_token(&"x".repeat(65)));
    }

    #[test]
    fn answers_name_every_by_reference_parameter() {
        let f = params::function("QueryCallInfo").expect("fn");
        let body = answer_body(f, &Effect::code(-304), Lang::Fr);
        let keys: Vec<&str> = body.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "ReturnCode",
                "ReturnText",
                "CallID",
                "originalANI",
                "originalDNIS",
                "UUID",
                "Visits",
                "FMNQ",
                "InternalANI",
                "InternalDNIS"
            ]
        );
        assert_eq!(body["Visits"], 0);
        assert!(body["ReturnText"]
            .as_str()
            .is_some_and(|t| t.starts_with("Initialize n'a pas")));
    }

    #[test]
    fn system_figures_validation() {
        assert!(validate_system_status(&Answer::Native(
            json!({"OverallStatus": 1, "IndividualServerStates": "a=1"})
        ))
        .is_ok());
        assert!(validate_system_status(&Answer::Native(
            json!({"OverallStatus": 2, "IndividualServerStates": "a=1"})
        ))
        .is_err());
        assert!(validate_queue_statistics(&Answer::Native(json!({"CallsInQueue": 1}))).is_err());
        assert!(validate_agent_status(&Answer::Native(json!({"ReturnCode": -909}))).is_ok());
    }
}
