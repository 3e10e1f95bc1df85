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
//! (QueryRoutingInfo, optionally the figures: `decisions.rs`) and the command API
//! (`command.rs`).
//!
//! This file routes a request to its function and runs the steps against the store; `wire.rs`
//! reads and writes the XML-RPC and JSON, [`params`] the functions' parameters, [`callback`]
//! CreateCallback and DeleteCallback, [`codes`] the return codes and their texts.

#![forbid(unsafe_code)]

pub mod callback;
pub mod codes;
mod command;
mod decisions;
pub mod model;
pub mod params;
pub mod settings;
mod wire;

pub use decisions::DECISION_POINTS;

use std::time::{Duration, Instant, SystemTime};

use ivrgate_adapter::{
    Adapter, BoxFuture, Command, CommandReply, DecisionPoint, Entity, EntityKey, Gateway, Handled,
    Inbound, RecordError, TimerFired, Transitioned, Waited,
};
use serde_json::{json, Map, Value};

use codes::{Context, Lang};
use model::{Call, Channel, Ctx, Effect};
use params::{Args, Function};
use settings::Settings;
use wire::{answer_body, decode, fault, plain, respond, Encoding};

/// The vendor name: path segment, metrics label and `vendor` of every event.
pub const VENDOR: &str = "openscape";

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

/// One transition on one entity whose state is read as `T` (`None`: absent or ended). When
/// the state cannot be read the step does not run, nothing is written, and the answer is
/// why; otherwise the transition's own outcome.
pub(crate) async fn transition_typed<T, F>(
    gw: &dyn Gateway,
    key: EntityKey,
    mut step: F,
) -> Result<Result<Transitioned, RecordError>, model::Unreadable>
where
    T: for<'de> serde::Deserialize<'de>,
    F: FnMut(Option<T>) -> ivrgate_adapter::Change + Send,
{
    let mut broken = None;
    let result = ivrgate_adapter::transition_one(gw, key, |e| match model::read::<T>(e) {
        Ok(state) => {
            broken = None;
            step(state)
        }
        Err(why) => {
            broken = Some(why);
            ivrgate_adapter::Change::Keep
        }
    })
    .await;
    match broken {
        Some(why) => Err(why),
        None => Ok(result),
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
        "QueryRoutingInfo" => return decisions::query_routing_info(req).await,
        "QueryQueueStatistics" => return decisions::query_queue_statistics(req).await,
        "QueryAgentStatus" => return decisions::query_agent_status(req).await,
        "QuerySystemStatus" => return decisions::query_system_status(req).await,
        "CreateCallback" => callback::create_callback(req).await,
        "DeleteCallback" => callback::delete_callback(req).await,
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
    for _ in 0..ivrgate_adapter::state::REPLAN_ATTEMPTS {
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
        for attempt in 0..ivrgate_adapter::state::REPLAN_ATTEMPTS {
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
    let result = transition_typed(gw, timer.entity.clone(), |call: Option<Call>| {
        let Some(call) = call else {
            return ivrgate_adapter::Change::Keep;
        };
        match model::transit_arrived(&call, &number, "expired", &ctx) {
            Some(eff) => eff.changes(ctx.now, call_max).pop().unwrap_or_default(),
            None => ivrgate_adapter::Change::Keep,
        }
    })
    .await
    // An unreadable call is left untouched; the core logs and counts the failure and runs
    // the timer again after its lease, until the call ends.
    .map_err(|why| why.to_string())?;
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
}
