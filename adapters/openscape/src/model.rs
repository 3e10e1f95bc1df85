//! The API state one hppcivr.dll holds for a channel, and the calls on it, as entity JSON,
//! with every function's effect as a pure function of what was read (so the core can run it
//! inside a transition and run it again on a conflict).
//!
//! Entities (kinds): `openscape.channel` (id = channel token: initialized, RpcTimeout, call
//! info set, current call), `openscape` (id = CallID: call-like, so decisions about the call
//! share its row), `openscape.device` (id = device: the monitored call on it),
//! `openscape.callback`, and the figures the customer pushes: `openscape.queue`,
//! `openscape.agent`, `openscape.system`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ivrgate_adapter::{AliasChange, Change, EntityEvent, TimerChange, Write};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::codes;
use crate::params::Args;

pub const CHANNEL_KIND: &str = "openscape.channel";
pub const CALL_KIND: &str = "openscape";
pub const DEVICE_KIND: &str = "openscape.device";
pub const CALLBACK_KIND: &str = "openscape.callback";
pub const QUEUE_KIND: &str = "openscape.queue";
pub const AGENT_KIND: &str = "openscape.agent";
pub const SYSTEM_KIND: &str = "openscape.system";
pub const SYSTEM_ID: &str = "system";
pub const NS_TRANSIT: &str = "openscape.transit";
pub const NS_CALLBACK: &str = "openscape.callback.number";
pub const NS_AGENT_DEVICE: &str = "openscape.agent.device";
pub const TRANSIT_TIMER: &str = "transit_expiry";
/// The seed: "The transit number expires if the call is not transferred within 30 seconds."
pub const TRANSIT_HOLD: Duration = Duration::from_secs(30);

pub fn ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// One IVR channel's API state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Channel {
    pub initialized: bool,
    pub local_port: String,
    pub admin_server: String,
    pub rpc_timeout_ms: i64,
    /// ANI and DNIS from SetCallInfo, for the next unmonitored call.
    pub call_info: Option<(String, String)>,
    /// QueryCallInfo was called since Initialize.
    pub queried: bool,
    /// The call QueryCallInfo returned last.
    pub call_id: Option<String>,
}

/// QueryCallStatus's states (return codes 0-6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Idle,
    Queued,
    Pending,
    Unanswered,
    Error,
    Disconnect,
    Transfer,
}

impl Status {
    pub fn code(self) -> i32 {
        match self {
            Status::Idle => 0,
            Status::Queued => 1,
            Status::Pending => 2,
            Status::Unanswered => 3,
            Status::Error => 4,
            Status::Disconnect => 5,
            Status::Transfer => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Queued => "queued",
            Status::Pending => "pending",
            Status::Unanswered => "unanswered",
            Status::Error => "error",
            Status::Disconnect => "disconnect",
            Status::Transfer => "transfer",
        }
    }

    /// A state the IVR must act on: QueryCallStatus answers it without waiting.
    pub fn actionable(self) -> bool {
        !matches!(self, Status::Idle | Status::Queued)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Transit {
    pub number: String,
    pub allocated_at_ms: i64,
}

/// One call as the IVR API sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Call {
    pub call_id: String,
    pub status: Status,
    pub monitored: bool,
    pub channel: Option<String>,
    pub device: Option<String>,
    pub ani: String,
    pub dnis: String,
    pub uuid: String,
    pub visits: i64,
    pub fmnq: bool,
    pub internal_ani: String,
    pub internal_dnis: String,
    pub business_unit: Option<String>,
    pub transferable: bool,
    pub contact_data: Map<String, Value>,
    pub queue: Option<String>,
    pub ivr_hold: bool,
    pub priority: i64,
    pub description: String,
    pub agent_id: Option<String>,
    pub agent_wait_s: Option<i64>,
    pub anidnis: Option<String>,
    pub enqueued_at_ms: Option<i64>,
    /// The target of a Pending, Unanswered or Transfer status.
    pub extension: String,
    pub transit: Option<Transit>,
    pub display: Option<String>,
    pub arrived_at_ms: i64,
    /// The call reached the contact center through its transit number.
    pub left_ivr: bool,
}

impl Default for Call {
    fn default() -> Self {
        Call {
            call_id: String::new(),
            status: Status::Idle,
            monitored: false,
            channel: None,
            device: None,
            ani: String::new(),
            dnis: String::new(),
            uuid: String::new(),
            visits: 0,
            fmnq: false,
            internal_ani: String::new(),
            internal_dnis: String::new(),
            business_unit: None,
            transferable: true,
            contact_data: Map::new(),
            queue: None,
            ivr_hold: false,
            priority: 0,
            description: String::new(),
            agent_id: None,
            agent_wait_s: None,
            anidnis: None,
            enqueued_at_ms: None,
            extension: String::new(),
            transit: None,
            display: None,
            arrived_at_ms: 0,
            left_ivr: false,
        }
    }
}

impl Call {
    /// The contact data as `key=value;` text, whose length the 1000-byte limit applies to.
    pub fn contact_data_len(&self) -> usize {
        self.contact_data
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len) + 2)
            .sum()
    }

    /// The neutral view used in events and the command API.
    pub fn view(&self) -> Value {
        json!({
            "call_id": self.call_id,
            "status": self.status.as_str(),
            "monitored": self.monitored,
            "channel": self.channel,
            "device": self.device,
            "from": self.ani,
            "to": self.dnis,
            "uuid": self.uuid,
            "visits": self.visits,
            "fmnq": self.fmnq,
            "transferable": self.transferable,
            "business_unit": self.business_unit,
            "queue": self.queue,
            "ivr_hold": self.ivr_hold,
            "priority": self.priority,
            "agent_id": self.agent_id,
            "extension": self.extension,
            "transit_number": self.transit.as_ref().map(|t| t.number.clone()),
            "contact_data": self.contact_data,
        })
    }
}

/// What a device entity (`openscape.device`, id = the device) holds: the monitored call the
/// command API registered on it, for the channel's QueryCallInfo to take.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub call_id: Option<String>,
}

/// An entity whose stored state this release cannot read as its type (written by hand, by
/// a newer release, or damaged). Never taken for an absent or ended entity: the request is
/// answered with the platform's internal error (-305), the entity is left as it is, and
/// [`Unreadable::log`] says which one and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub kind: String,
    pub id: String,
    pub error: String,
}

impl Unreadable {
    pub fn log(&self, tenant: &str, function: &str) {
        tracing::error!(
            tenant, function, kind = %self.kind, id = %self.id, error = %self.error,
            "openscape entity state unreadable: answered -305, entity left untouched"
        );
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "state of {} {} unreadable: {}",
            self.kind, self.id, self.error
        )
    }
}

/// Reads an entity's state as `T`: `None` when the entity is absent or ended, an error when
/// it has a state that is not a `T`.
pub fn read<T: for<'de> Deserialize<'de>>(
    entity: Option<&ivrgate_adapter::Entity>,
) -> Result<Option<T>, Unreadable> {
    let Some(e) = entity else { return Ok(None) };
    let Some(state) = &e.state else {
        return Ok(None);
    };
    T::deserialize(state).map(Some).map_err(|err| Unreadable {
        kind: e.key.kind.clone(),
        id: e.key.id.clone(),
        error: err.to_string(),
    })
}

pub fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// What happens to the call entity.
#[derive(Debug, Clone, Default)]
pub enum CallWrite {
    #[default]
    Keep,
    Put(Box<Call>),
    End(Box<Call>),
}

/// The effect of one function call: its return code and outputs, and the writes.
#[derive(Debug, Clone, Default)]
pub struct Effect {
    pub code: i32,
    pub outputs: Map<String, Value>,
    pub channel: Option<Channel>,
    pub call: CallWrite,
    pub events: Vec<EntityEvent>,
    pub timers: Vec<TimerChange>,
    pub aliases: Vec<AliasChange>,
    /// Set when the answer is -305 because an entity's state could not be read: logged and
    /// counted (`state_unreadable`) where the request is answered.
    pub unreadable: Option<Unreadable>,
}

impl Effect {
    pub fn code(code: i32) -> Effect {
        Effect {
            code,
            ..Effect::default()
        }
    }

    /// The platform's internal error for an entity whose state could not be read; nothing
    /// is written.
    pub fn unreadable(why: Unreadable) -> Effect {
        Effect {
            code: codes::UNKNOWN_ERROR,
            unreadable: Some(why),
            ..Effect::default()
        }
    }

    pub fn out(mut self, name: &str, value: impl Into<Value>) -> Effect {
        self.outputs.insert(name.to_owned(), value.into());
        self
    }

    /// The changes for the keys `[channel, call]`.
    pub fn changes(&self, now: SystemTime, call_max: Duration) -> Vec<Change> {
        let channel = match &self.channel {
            Some(ch) => Change::Write(Write::state(to_value(ch))),
            None => Change::Keep,
        };
        let mut write = match &self.call {
            CallWrite::Keep => return vec![channel, Change::Keep],
            CallWrite::Put(call) => Write {
                state: Some(to_value(call.as_ref())),
                expires_at: now.checked_add(call_max),
                ..Write::default()
            },
            CallWrite::End(_) => Write::default(),
        };
        write.events = self.events.clone();
        write.timers = self.timers.clone();
        write.aliases = self.aliases.clone();
        vec![channel, Change::Write(write)]
    }
}

/// What the pure steps need besides the entities.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub now: SystemTime,
    pub quarantine: Duration,
    pub multitenant: bool,
    pub business_units: Vec<String>,
    /// Queues configured (empty: any queue is accepted).
    pub queues: Vec<String>,
    /// The T-Server is reported up (or nothing was reported).
    pub tserver_up: bool,
    /// The agent of EnqueueForAgent is known.
    pub agent_known: bool,
    /// EstimatedWait and CallsInQueue for Enqueue.
    pub queue_figures: (i64, i64),
    pub function: &'static str,
    pub args: Map<String, Value>,
}

impl Ctx {
    pub fn now_ms(&self) -> i64 {
        ms(self.now)
    }
}

/// A webhook event about a call.
pub fn event(kind: &str, call: &Call, ctx: &Ctx, extra: Value) -> EntityEvent {
    let mut e = EntityEvent::new(format!("openscape.{kind}"));
    e.correlation.insert("CallID".into(), json!(call.call_id));
    if let Value::Object(mut view) = call.view() {
        // `call_id` in an event is ivrgate's id (the core's); the CallID is in correlation.
        view.remove("call_id");
        e.data = view;
    }
    if let Value::Object(extra) = extra {
        e.data.extend(extra);
    }
    e.vendor_fields
        .insert("function".into(), json!(ctx.function));
    e.vendor_fields.extend(ctx.args.clone());
    e
}

/// Releases the call's transit number (kept from others for the quarantine).
pub fn release_transit(call: &mut Call, reason: &str, ctx: &Ctx, eff: &mut Effect) {
    if let Some(t) = call.transit.take() {
        eff.aliases.push(AliasChange::Claim {
            namespace: NS_TRANSIT.into(),
            value: transit_key(&t.number),
            until: Some(ctx.now + ctx.quarantine),
        });
        eff.timers.push(TimerChange::Cancel {
            name: TRANSIT_TIMER.into(),
        });
        eff.events.push(event(
            "transit.released",
            call,
            ctx,
            json!({"transit_number": t.number, "reason": reason}),
        ));
    }
}

/// Ends a call: its transit number is released, the event says why.
pub fn end_call(mut call: Call, kind: &str, extra: Value, ctx: &Ctx, mut eff: Effect) -> Effect {
    release_transit(&mut call, "call_ended", ctx, &mut eff);
    eff.events.push(event(kind, &call, ctx, extra));
    eff.call = CallWrite::End(Box::new(call));
    eff
}

/// Initialize, QueryCallInfo before a call function, and the call itself.
pub fn precheck<'c>(
    ch: Option<&Channel>,
    call: Option<&'c Call>,
    call_id: &str,
) -> Result<&'c Call, i32> {
    let ch = ch.filter(|c| c.initialized).ok_or(codes::NOT_INITIALIZED)?;
    if !ch.queried {
        return Err(codes::NO_CALL_INFO);
    }
    call.filter(|c| c.call_id == call_id)
        .ok_or(codes::UNKNOWN_CALL)
}

/// Initialize: a fresh API state for the channel; a call still live on it was abandoned.
pub fn initialize(args: &Args, call: Option<&Call>, ctx: &Ctx) -> Effect {
    let ch = Channel {
        initialized: true,
        local_port: args.text("LocalPort"),
        admin_server: args.text("AdminServerName"),
        rpc_timeout_ms: args.int("RpcTimeout").unwrap_or(10_000),
        call_info: None,
        queried: false,
        call_id: None,
    };
    let mut eff = Effect::code(codes::OK);
    eff.channel = Some(ch);
    match call {
        // Only an unmonitored call, or a monitored one still bound to this channel, ends
        // with the channel: the IVR line dropped it without saying so.
        Some(call) if !call.left_ivr => end_call(
            call.clone(),
            "call.abandoned",
            json!({"reason": "initialize"}),
            ctx,
            eff,
        ),
        _ => eff,
    }
}

/// SetCallInfo: only between Initialize and QueryCallInfo.
pub fn set_call_info(args: &Args, ch: Option<&Channel>) -> Effect {
    let Some(ch) = ch.filter(|c| c.initialized) else {
        return Effect::code(codes::NOT_INITIALIZED);
    };
    if ch.queried {
        return Effect::code(codes::WRONG_SEQUENCE);
    }
    let mut ch = ch.clone();
    ch.call_info = Some((args.text("ANI"), args.text("DNIS")));
    let mut eff = Effect::code(codes::OK);
    eff.channel = Some(ch);
    eff
}

/// The by-reference values of QueryCallInfo.
pub fn call_info_outputs(call: &Call, eff: Effect) -> Effect {
    eff.out("CallID", call.call_id.clone())
        .out("originalANI", call.ani.clone())
        .out("originalDNIS", call.dnis.clone())
        .out("UUID", call.uuid.clone())
        .out("Visits", call.visits)
        .out("FMNQ", i64::from(call.fmnq))
        .out("InternalANI", call.internal_ani.clone())
        .out("InternalDNIS", call.internal_dnis.clone())
}

/// QueryCallInfo for an unmonitored call (`TrunkConnectedIVRCall` = `1;`): the call starts
/// here with the ANI and DNIS of SetCallInfo. `existing` is what is stored under the new id.
pub fn query_call_info_unmonitored(
    ch: Option<&Channel>,
    channel: &str,
    new_id: &str,
    existing: bool,
    ctx: &Ctx,
) -> Option<Effect> {
    let Some(ch) = ch.filter(|c| c.initialized) else {
        return Some(Effect::code(codes::NOT_INITIALIZED));
    };
    if existing {
        return None;
    }
    let (ani, dnis) = ch.call_info.clone().unwrap_or_default();
    let call = Call {
        call_id: new_id.to_owned(),
        monitored: false,
        channel: Some(channel.to_owned()),
        ani,
        dnis,
        arrived_at_ms: ctx.now_ms(),
        ..Call::default()
    };
    let mut ch = ch.clone();
    ch.queried = true;
    ch.call_id = Some(new_id.to_owned());
    let mut eff = call_info_outputs(&call, Effect::code(codes::OK));
    eff.channel = Some(ch);
    eff.events.push(event(
        "call.arrived",
        &call,
        ctx,
        json!({"monitored": false}),
    ));
    eff.call = CallWrite::Put(Box::new(call));
    Some(eff)
}

/// QueryCallInfo for a monitored call registered on the device.
pub fn query_call_info_monitored(
    ch: Option<&Channel>,
    channel: &str,
    call: Option<&Call>,
    device: &str,
) -> Effect {
    let Some(ch) = ch.filter(|c| c.initialized) else {
        return Effect::code(codes::NOT_INITIALIZED);
    };
    let Some(call) = call.filter(|c| c.device.as_deref() == Some(device)) else {
        return Effect::code(codes::UNKNOWN_CALL);
    };
    let mut ch = ch.clone();
    ch.queried = true;
    ch.call_id = Some(call.call_id.clone());
    let mut eff = call_info_outputs(call, Effect::code(codes::OK));
    eff.channel = Some(ch);
    if call.channel.as_deref() != Some(channel) {
        let mut call = call.clone();
        call.channel = Some(channel.to_owned());
        eff.call = CallWrite::Put(Box::new(call));
    }
    eff
}

fn monitored_only(call: &Call) -> Result<(), i32> {
    if call.monitored {
        Ok(())
    } else {
        Err(codes::MONITORED_ONLY)
    }
}

fn unmonitored_only(call: &Call) -> Result<(), i32> {
    if call.monitored {
        Err(codes::UNMONITORED_ONLY)
    } else {
        Ok(())
    }
}

fn valid_anidnis(text: &str) -> bool {
    text.is_empty() || text.split_once(';').is_some()
}

/// What Transfer's ToDevice means: `-913` not a device at all, `-917` canonical-looking but
/// not translatable.
pub fn check_to_device(to: &str) -> Result<(), i32> {
    let t = to.trim();
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_digit() || " +()-#*".contains(c))
    {
        return Err(codes::BAD_TO_DEVICE);
    }
    if t.chars()
        .all(|c| c.is_ascii_digit() || c == '#' || c == '*')
    {
        return Ok(());
    }
    crate::callback::phone_digits(t)
        .map(drop)
        .ok_or(codes::UNTRANSLATABLE)
}

/// The call functions whose whole effect is a pure function of the channel and the call.
/// `None` for functions handled elsewhere.
pub fn call_function(
    name: &str,
    args: &Args,
    ch: Option<&Channel>,
    call: Option<&Call>,
    ctx: &Ctx,
) -> Option<Effect> {
    let call_id = args.text("CallID");
    let call = match precheck(ch, call, &call_id) {
        Ok(call) => call,
        Err(code) => return Some(Effect::code(code)),
    };
    let result = match name {
        "CallerDisconnected" => caller_disconnected(args, call, ctx),
        "Dequeue" => Ok(dequeue(call, ctx)),
        "Disconnect" => monitored_only(call).map(|()| {
            end_call(
                call.clone(),
                "call.disconnected",
                json!({"by": "ivr"}),
                ctx,
                Effect::code(codes::OK),
            )
        }),
        "Enqueue" | "EnqueueForAgent" => enqueue(name, args, call, ctx),
        "GetBusinessUnit" => get_business_unit(call, ctx),
        "GetCallTransferable" => monitored_only(call)
            .map(|()| Effect::code(codes::OK).out("FlagValue", i64::from(call.transferable))),
        "GetContactData" => {
            let key = args.text("Key");
            match call.contact_data.get(&key).and_then(Value::as_str) {
                Some(v) => Ok(Effect::code(codes::OK).out("Value", v)),
                None => Err(codes::KEY_NOT_SET),
            }
        }
        "ReleaseTransitNumber" => unmonitored_only(call).and_then(|()| {
            if call.transit.is_none() {
                return Err(codes::NO_TRANSIT);
            }
            let mut eff = Effect::code(codes::OK);
            let mut call = call.clone();
            release_transit(&mut call, "released", ctx, &mut eff);
            eff.call = CallWrite::Put(Box::new(call));
            Ok(eff)
        }),
        "SetBusinessUnit" => set_business_unit(args, call, ctx),
        "SetCallTransferable" => monitored_only(call).and_then(|()| {
            let flag = args.int("FlagValue").unwrap_or(1) == 1;
            // "If you do not receive a successful return code, this indicates that the call
            // is in the process of being transferred."
            if !flag && matches!(call.status, Status::Pending | Status::Transfer) {
                return Err(codes::FAILED);
            }
            let mut eff = Effect::code(codes::OK);
            if call.transferable != flag {
                let mut call = call.clone();
                call.transferable = flag;
                eff.call = CallWrite::Put(Box::new(call));
            }
            Ok(eff)
        }),
        "SetContactData" => {
            let mut call = call.clone();
            call.contact_data
                .insert(args.text("Key"), Value::String(args.text("Value")));
            let mut eff = Effect::code(codes::OK);
            eff.call = CallWrite::Put(Box::new(call));
            Ok(eff)
        }
        "SetDisplay" => {
            let mut call = call.clone();
            call.display = Some(args.text("DisplayInfo"));
            let mut eff = Effect::code(codes::OK);
            eff.call = CallWrite::Put(Box::new(call));
            Ok(eff)
        }
        "Transfer" => monitored_only(call).and_then(|()| {
            let to = args.text("ToDevice");
            check_to_device(&to)?;
            Ok(end_call(
                call.clone(),
                "call.transferred",
                json!({"target": to, "by": "ivr"}),
                ctx,
                Effect::code(codes::OK),
            ))
        }),
        _ => return None,
    };
    Some(result.unwrap_or_else(Effect::code))
}

fn caller_disconnected(args: &Args, call: &Call, ctx: &Ctx) -> Result<Effect, i32> {
    unmonitored_only(call)?;
    let term = args.int("TermType").unwrap_or(0);
    let (kind, reason) = match term {
        2 => ("call.abandoned", "abandoned"),
        1 => ("call.disconnected", "transferred_out_of_scope"),
        _ => ("call.disconnected", "internal"),
    };
    Ok(end_call(
        call.clone(),
        kind,
        json!({"term_type": term, "reason": reason, "by": "caller"}),
        ctx,
        Effect::code(codes::OK),
    ))
}

fn dequeue(call: &Call, ctx: &Ctx) -> Effect {
    let mut eff = Effect::code(codes::OK);
    // Any routing state (queued, or an order the IVR has not carried out) is withdrawn.
    if call.status != Status::Idle {
        let mut call = call.clone();
        call.status = Status::Idle;
        call.extension.clear();
        eff.events.push(event(
            "call.dequeued",
            &call,
            ctx,
            json!({"queue": call.queue}),
        ));
        call.queue = None;
        call.enqueued_at_ms = None;
        eff.call = CallWrite::Put(Box::new(call));
    }
    eff
}

fn enqueue(name: &str, args: &Args, call: &Call, ctx: &Ctx) -> Result<Effect, i32> {
    if ctx.multitenant && call.business_unit.is_none() {
        return Err(codes::BAD_BUSINESS_UNIT);
    }
    let queue = args.text("QueueName");
    if !ctx.queues.is_empty() && !ctx.queues.contains(&queue) {
        return Err(codes::UNKNOWN_QUEUE);
    }
    let anidnis = args.text("ANIDNIS");
    if !valid_anidnis(&anidnis) {
        return Err(codes::BAD_PARAMETER);
    }
    if name == "EnqueueForAgent" && !ctx.agent_known {
        return Err(codes::UNKNOWN_AGENT);
    }
    if !ctx.tserver_up {
        return Err(codes::TSERVER_ENQUEUE);
    }
    let mut call = call.clone();
    call.status = Status::Queued;
    call.queue = Some(queue.clone());
    call.ivr_hold = args.int("IVRHold") == Some(1);
    call.priority = args.int("InitialPriority").unwrap_or(1);
    call.description = args.text("Description");
    call.agent_id = args.str("AgentID").map(str::to_owned);
    call.agent_wait_s = args.int("AgentWaitTime");
    call.anidnis = (!anidnis.is_empty()).then_some(anidnis);
    call.enqueued_at_ms = Some(ctx.now_ms());
    call.extension.clear();
    // "If the call is transferred back to the queue by the IVR, the flag is automatically
    // reset to true."
    call.transferable = true;
    let (wait, in_queue) = ctx.queue_figures;
    let mut eff = Effect::code(codes::OK)
        .out("EstimatedWait", wait)
        .out("CallsInQueue", in_queue);
    eff.events.push(event(
        "call.enqueued",
        &call,
        ctx,
        json!({
            "description": call.description,
            "agent_wait_s": call.agent_wait_s,
            "hold": if call.ivr_hold { "ivr" } else { "queue" },
        }),
    ));
    eff.call = CallWrite::Put(Box::new(call));
    Ok(eff)
}

fn get_business_unit(call: &Call, ctx: &Ctx) -> Result<Effect, i32> {
    if !ctx.multitenant {
        return Err(codes::NOT_MULTITENANT);
    }
    let name = call.business_unit.clone().ok_or(codes::FAILED)?;
    Ok(Effect::code(codes::OK).out("BusinessUnitName", name))
}

fn set_business_unit(args: &Args, call: &Call, ctx: &Ctx) -> Result<Effect, i32> {
    if !ctx.multitenant {
        return Err(codes::NOT_MULTITENANT);
    }
    if call.business_unit.is_some() {
        return Err(codes::BUSINESS_UNIT_SET);
    }
    let name = args.text("BusinessUnitName");
    if !ctx.business_units.contains(&name) {
        return Err(codes::BAD_BUSINESS_UNIT);
    }
    let mut call = call.clone();
    call.business_unit = Some(name);
    let mut eff = Effect::code(codes::OK);
    eff.call = CallWrite::Put(Box::new(call));
    Ok(eff)
}

/// A transit number's identity: what is left without the separators people write (`+`,
/// spaces, parentheses, `-`, `.`), so `+1 (555) 555-0180`, `+15555550180` and `15555550180`
/// are one number. Transit claims (alias `openscape.transit`) are keyed by it.
pub fn transit_key(number: &str) -> String {
    number
        .chars()
        .filter(|c| !matches!(c, '+' | '(' | ')' | '-' | '.') && !c.is_whitespace())
        .collect()
}

/// GetTransitNumber's allocation of `number` to the call (the alias claim fails the
/// transition when another call holds the number).
pub fn allocate_transit(call: &Call, number: &str, ctx: &Ctx) -> Effect {
    let mut call = call.clone();
    call.transit = Some(Transit {
        number: number.to_owned(),
        allocated_at_ms: ctx.now_ms(),
    });
    let mut eff = Effect::code(codes::OK).out("TransitNumber", number);
    eff.aliases.push(AliasChange::Claim {
        namespace: NS_TRANSIT.into(),
        value: transit_key(number),
        until: Some(ctx.now + TRANSIT_HOLD + ctx.quarantine),
    });
    eff.timers.push(TimerChange::Set {
        name: TRANSIT_TIMER.into(),
        due: ctx.now + TRANSIT_HOLD,
        payload: json!({"number": number}),
    });
    eff.events.push(event(
        "transit.allocated",
        &call,
        ctx,
        json!({"transit_number": number, "expires_at": ivrgate_adapter::epoch::rfc3339(ctx.now + TRANSIT_HOLD)}),
    ));
    eff.call = CallWrite::Put(Box::new(call));
    eff
}

/// The unmonitored-only and sequencing checks of GetTransitNumber, before allocation.
pub fn transit_precheck(
    ch: Option<&Channel>,
    call: Option<&Call>,
    call_id: &str,
) -> Result<Call, i32> {
    let call = precheck(ch, call, call_id)?;
    unmonitored_only(call)?;
    Ok(call.clone())
}

/// A customer's order on a queued call (command API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Assign,
    Timeout,
    Disconnect,
    Transfer,
    Error,
}

impl Order {
    pub fn parse(text: &str) -> Option<Order> {
        match text {
            "assign" => Some(Order::Assign),
            "timeout" => Some(Order::Timeout),
            "disconnect" => Some(Order::Disconnect),
            "transfer" => Some(Order::Transfer),
            "error" => Some(Order::Error),
            _ => None,
        }
    }
}

/// Why an order is refused: (HTTP status, error code, message).
pub type Refusal = (u16, &'static str, String);

/// Applies an order: Pending (2) with the agent's extension, Unanswered (3) with the
/// time-out target, Disconnect (5), Transfer (6) with an extension, Error (4). Assignment
/// and transfer check the transferable flag (FMNQ) in the same transition.
pub fn order(call: &Call, order: Order, target: &str, ctx: &Ctx) -> Result<Effect, Refusal> {
    let needs_target = matches!(order, Order::Assign | Order::Timeout | Order::Transfer);
    if needs_target && target.trim().is_empty() {
        return Err((400, "invalid_request", "an extension is required".into()));
    }
    if target.chars().count() > 80 {
        return Err((
            400,
            "invalid_request",
            "extension longer than 80 characters".into(),
        ));
    }
    if matches!(order, Order::Assign | Order::Timeout) && call.status != Status::Queued {
        return Err((
            409,
            "wrong_state",
            format!("the call is {}, not queued", call.status.as_str()),
        ));
    }
    if matches!(order, Order::Assign | Order::Transfer) && !call.transferable {
        return Err((
            409,
            "not_transferable",
            "the IVR set the call non-transferable (SetCallTransferable 0)".into(),
        ));
    }
    let mut call = call.clone();
    let (status, kind) = match order {
        Order::Assign => (Status::Pending, "call.assigned"),
        Order::Timeout => (Status::Unanswered, "call.timed_out"),
        Order::Disconnect => (Status::Disconnect, "call.disconnect_ordered"),
        Order::Transfer => (Status::Transfer, "call.transfer_ordered"),
        Order::Error => (Status::Error, "call.error"),
    };
    call.status = status;
    call.extension = if needs_target {
        target.trim().to_owned()
    } else {
        String::new()
    };
    let mut eff = Effect::code(codes::OK);
    eff.events.push(event(
        kind,
        &call,
        ctx,
        json!({"extension": call.extension}),
    ));
    eff.call = CallWrite::Put(Box::new(call));
    Ok(eff)
}

/// The transit-number call reached the contact center: the number is released, and a call
/// that was assigned goes on to its target (it leaves ivrgate's hands). `number` may be
/// written in any format with the same [`transit_key`]; events carry the configured one.
pub fn transit_arrived(call: &Call, number: &str, reason: &str, ctx: &Ctx) -> Option<Effect> {
    let held = call.transit.as_ref()?;
    if transit_key(&held.number) != transit_key(number) {
        return None;
    }
    let number = held.number.clone();
    let mut call = call.clone();
    let mut eff = Effect::code(codes::OK);
    release_transit(&mut call, reason, ctx, &mut eff);
    if reason == "expired" {
        eff.call = CallWrite::Put(Box::new(call));
        return Some(eff);
    }
    call.left_ivr = true;
    if call.status.actionable() {
        let to = call.extension.clone();
        eff.events.push(event(
            "call.transferred",
            &call,
            ctx,
            json!({"target": to, "by": "transit", "transit_number": number}),
        ));
        eff.call = CallWrite::End(Box::new(call));
    } else {
        eff.call = CallWrite::Put(Box::new(call));
    }
    Some(eff)
}

/// QueryCallStatus's answer for the call as it is.
pub fn call_status(call: &Call, position: i64) -> Effect {
    let code = call.status.code();
    let mut eff = Effect::code(code).out("Extension", call.extension.clone());
    eff = eff.out(
        "PositionInQueue",
        if call.status == Status::Queued {
            position
        } else {
            0
        },
    );
    eff
}

/// The position of `call` among the queued calls of its queue: higher priority first, then
/// the earlier enqueued.
pub fn position(call: &Call, others: &[Call]) -> i64 {
    let key = |c: &Call| {
        (
            -c.priority,
            c.enqueued_at_ms.unwrap_or(0),
            c.call_id.clone(),
        )
    };
    let mine = key(call);
    1 + others
        .iter()
        .filter(|o| {
            o.call_id != call.call_id
                && o.status == Status::Queued
                && o.queue == call.queue
                && key(o) < mine
        })
        .count() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{function, parse};

    fn stored(state: Option<Value>) -> ivrgate_adapter::Entity {
        ivrgate_adapter::Entity {
            key: ivrgate_adapter::EntityKey::new("acme", CALL_KIND, "77"),
            entity_id: "call_x".into(),
            version: 3,
            status: if state.is_some() { "active" } else { "ended" }.into(),
            state,
            attached: Map::new(),
            expires_at: None,
        }
    }

    #[test]
    fn read_tells_absent_ended_and_unreadable_apart() {
        assert_eq!(read::<Call>(None), Ok(None));
        assert_eq!(read::<Call>(Some(&stored(None))), Ok(None));
        let call = read::<Call>(Some(&stored(Some(
            json!({"call_id": "77", "status": "queued"}),
        ))));
        assert_eq!(call.map(|c| c.map(|c| c.status)), Ok(Some(Status::Queued)));
        let broken = read::<Call>(Some(&stored(Some(json!({"status": "teleported"})))));
        let Err(why) = broken else {
            panic!("{broken:?}")
        };
        assert_eq!((why.kind.as_str(), why.id.as_str()), (CALL_KIND, "77"));
        assert!(why.error.contains("teleported"), "{}", why.error);
        let eff = Effect::unreadable(why);
        assert_eq!(eff.code, codes::UNKNOWN_ERROR);
        let changes = eff.changes(SystemTime::UNIX_EPOCH, Duration::ZERO);
        assert!(
            changes.iter().all(|c| matches!(c, Change::Keep)),
            "{changes:?}"
        );
    }

    fn ctx() -> Ctx {
        Ctx {
            now: at_ms(1_700_000_000_000),
            quarantine: Duration::from_secs(5),
            multitenant: false,
            business_units: vec![],
            queues: vec![],
            tserver_up: true,
            agent_known: true,
            queue_figures: (30, 2),
            function: "test",
            args: Map::new(),
        }
    }

    fn args(name: &str, v: Value) -> Args {
        parse(
            function(name).expect("fn"),
            v.as_array().map(Vec::as_slice).unwrap_or_default(),
        )
        .expect("args")
    }

    fn ready() -> (Channel, Call) {
        let ch = Channel {
            initialized: true,
            queried: true,
            call_id: Some("1341023126268002".into()),
            rpc_timeout_ms: 10_000,
            ..Channel::default()
        };
        let call = Call {
            call_id: "1341023126268002".into(),
            ..Call::default()
        };
        (ch, call)
    }

    fn run(name: &str, a: Value, ch: Option<&Channel>, call: Option<&Call>) -> Effect {
        call_function(name, &args(name, a), ch, call, &ctx()).expect("handled")
    }

    #[test]
    fn sequencing() {
        let (ch, call) = ready();
        let id = json!(["1341023126268002"]);
        assert_eq!(run("Dequeue", id.clone(), None, Some(&call)).code, -304);
        let mut fresh = ch.clone();
        fresh.queried = false;
        assert_eq!(
            run("Dequeue", id.clone(), Some(&fresh), Some(&call)).code,
            -308
        );
        assert_eq!(
            run("Dequeue", json!(["999"]), Some(&ch), Some(&call)).code,
            -903
        );
        assert_eq!(run("Dequeue", id, Some(&ch), Some(&call)).code, 0);
        let e = set_call_info(
            &args("SetCallInfo", json!(["9055551234", "12345"])),
            Some(&ch),
        );
        assert_eq!(e.code, -312);
        let e = set_call_info(
            &args("SetCallInfo", json!(["9055551234", "12345"])),
            Some(&fresh),
        );
        assert_eq!(e.code, 0);
        assert_eq!(
            e.channel.and_then(|c| c.call_info).map(|c| c.1),
            Some("12345".into())
        );
    }

    #[test]
    fn monitored_and_unmonitored_only() {
        let (ch, call) = ready();
        let id = "1341023126268002";
        assert_eq!(
            run("Disconnect", json!([id]), Some(&ch), Some(&call)).code,
            -311
        );
        assert_eq!(
            run("Transfer", json!([id, "5678"]), Some(&ch), Some(&call)).code,
            -311
        );
        assert_eq!(
            run(
                "SetCallTransferable",
                json!([id, 0]),
                Some(&ch),
                Some(&call)
            )
            .code,
            -311
        );
        assert_eq!(
            run("ReleaseTransitNumber", json!([id]), Some(&ch), Some(&call)).code,
            -928
        );
        let mut m = call.clone();
        m.monitored = true;
        assert_eq!(
            run("CallerDisconnected", json!([id, 2]), Some(&ch), Some(&m)).code,
            -310
        );
        assert_eq!(
            run("ReleaseTransitNumber", json!([id]), Some(&ch), Some(&m)).code,
            -310
        );
        assert_eq!(
            run("Transfer", json!([id, "abc"]), Some(&ch), Some(&m)).code,
            -913
        );
        assert_eq!(
            run("Transfer", json!([id, "+1 (555"]), Some(&ch), Some(&m)).code,
            -917
        );
        let e = run("Transfer", json!([id, "5678"]), Some(&ch), Some(&m));
        assert_eq!(e.code, 0);
        assert!(matches!(e.call, CallWrite::End(_)));
        assert_eq!(e.events[0].event_type, "openscape.call.transferred");
    }

    #[test]
    fn transferable_flag_and_assignment() {
        let (ch, mut call) = ready();
        call.monitored = true;
        call.fmnq = true;
        let id = "1341023126268002";
        let e = run(
            "SetCallTransferable",
            json!([id, 0]),
            Some(&ch),
            Some(&call),
        );
        let CallWrite::Put(held) = e.call else {
            panic!("write")
        };
        assert!(!held.transferable);
        let mut queued = (*held).clone();
        queued.status = Status::Queued;
        assert_eq!(
            order(&queued, Order::Assign, "4711", &ctx())
                .map(|_| ())
                .err()
                .map(|r| r.1),
            Some("not_transferable")
        );
        queued.transferable = true;
        let e = order(&queued, Order::Assign, "4711", &ctx()).expect("assigned");
        let CallWrite::Put(pending) = e.call else {
            panic!("write")
        };
        assert_eq!(call_status(&pending, 1).code, 2);
        // Setting it non-transferable while the transfer is under way fails.
        assert_eq!(
            run(
                "SetCallTransferable",
                json!([id, 0]),
                Some(&ch),
                Some(&pending)
            )
            .code,
            -914
        );
        assert_eq!(
            run(
                "GetCallTransferable",
                json!([id, ">F"]),
                Some(&ch),
                Some(&pending)
            )
            .outputs["FlagValue"],
            1
        );
    }

    #[test]
    fn business_units() {
        let (ch, call) = ready();
        let id = "1341023126268002";
        assert_eq!(
            run("SetBusinessUnit", json!([id, "X"]), Some(&ch), Some(&call)).code,
            -955
        );
        let mut c = ctx();
        c.multitenant = true;
        c.business_units = vec!["WirelessDept".into()];
        let a = args("SetBusinessUnit", json!([id, "Nope"]));
        assert_eq!(
            call_function("SetBusinessUnit", &a, Some(&ch), Some(&call), &c).map(|e| e.code),
            Some(-314)
        );
        let a = args("Enqueue", json!([id, 1, "Sales", 10]));
        assert_eq!(
            call_function("Enqueue", &a, Some(&ch), Some(&call), &c).map(|e| e.code),
            Some(-314)
        );
        let mut set = call.clone();
        set.business_unit = Some("WirelessDept".into());
        let a = args("SetBusinessUnit", json!([id, "WirelessDept"]));
        assert_eq!(
            call_function("SetBusinessUnit", &a, Some(&ch), Some(&set), &c).map(|e| e.code),
            Some(-313)
        );
    }

    #[test]
    fn initialize_abandons_a_live_call() {
        let (_, call) = ready();
        let a = args("Initialize", json!(["6060", "6000@deerhurst", 10000]));
        let e = initialize(&a, Some(&call), &ctx());
        assert!(matches!(e.call, CallWrite::End(_)));
        assert_eq!(e.events[0].event_type, "openscape.call.abandoned");
        assert_eq!(e.channel.map(|c| c.rpc_timeout_ms), Some(10_000));
        assert!(matches!(initialize(&a, None, &ctx()).call, CallWrite::Keep));
    }

    #[test]
    fn queue_position() {
        let mk = |id: &str, p: i64, at: i64| Call {
            call_id: id.into(),
            status: Status::Queued,
            queue: Some("Sales".into()),
            priority: p,
            enqueued_at_ms: Some(at),
            ..Call::default()
        };
        let a = mk("a", 10, 1);
        let b = mk("b", 10, 2);
        let c = mk("c", 50, 3);
        let all = vec![a.clone(), b.clone(), c.clone()];
        assert_eq!(position(&c, &all), 1);
        assert_eq!(position(&a, &all), 2);
        assert_eq!(position(&b, &all), 3);
    }

    #[test]
    fn contact_data() {
        let (ch, call) = ready();
        let id = "1341023126268002";
        assert_eq!(
            run(
                "GetContactData",
                json!([id, "Name", ">V"]),
                Some(&ch),
                Some(&call)
            )
            .code,
            -307
        );
        let e = run(
            "SetContactData",
            json!([id, "Name", "John Doe", 0]),
            Some(&ch),
            Some(&call),
        );
        let CallWrite::Put(c) = e.call else {
            panic!("write")
        };
        let e = run(
            "GetContactData",
            json!([id, "Name", ">V"]),
            Some(&ch),
            Some(&c),
        );
        assert_eq!(e.outputs["Value"], "John Doe");
    }
}
