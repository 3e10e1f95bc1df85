//! Adapter state kept by the core: entities, their atomic transitions, aliases, timers and
//! waiting for a change.
//!
//! A platform whose protocol has state of its own (a PTK interaction, an OpenScape IVR channel
//! and the calls on it, a transit-number allocation) keeps it as **entities**. An entity is a
//! JSON document with a version, stored in the same table as the core's calls: the events of an
//! entity get the entity's own sequence numbers, and a decision about a call-like entity (kind
//! equal to the vendor name, id equal to the vendor's call id) shares its row, so
//! `previous_decision` and attached data carry over.
//!
//! Every change is a **transition** ([`Gateway::transition`]): the core reads the entities, the
//! adapter's closure computes the new states, events, timers and alias claims from what it read,
//! and the core commits all of it in one fsynced transaction guarded by the versions it read,
//! calling the closure again when another request (or instance) changed an entity meanwhile.
//! The closure must therefore be a pure function of its input (plus what it captures by value):
//! no I/O, and it must overwrite (not accumulate into) whatever output it writes to captures.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// Identifies an entity within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    /// The ivrgate tenant id.
    pub tenant: String,
    /// The entity kind, prefixed by the adapter's name: `ptk` (an interaction),
    /// `openscape` (a call), `openscape.channel`, ... A kind equal to the adapter's name is
    /// call-like: decisions with the same vendor call id land on the same entity. The prefix
    /// before the first `.` routes the entity's timers to the adapter of that name.
    pub kind: String,
    /// The vendor's identifier (an interaction id, a channel token, a call UUID).
    pub id: String,
}

impl EntityKey {
    pub fn new(tenant: impl Into<String>, kind: impl Into<String>, id: impl Into<String>) -> Self {
        EntityKey {
            tenant: tenant.into(),
            kind: kind.into(),
            id: id.into(),
        }
    }

    /// The adapter that owns this kind of entity.
    pub fn adapter(&self) -> &str {
        self.kind.split('.').next().unwrap_or_default()
    }
}

/// An entity as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub key: EntityKey,
    /// The ivrgate id, stable for the entity's life; its events carry it as `call_id`.
    pub entity_id: String,
    /// Increases with every committed change.
    pub version: i64,
    /// `active` while `state` is present; `ended` or `expired` afterwards (core-managed: keep
    /// your own status inside `state`).
    pub status: String,
    /// The live state; `None` once the entity ended. An ended entity keeps its id and sequence
    /// counter for the retention period, so late events continue its sequence. Only the
    /// adapter's own document: what the core keeps on a call-like entity (its decisions,
    /// `started_at`) is stored beside it and never appears here, nor can a write replace it.
    pub state: Option<Value>,
    /// Data the customer attached through decisions (neutral `attach` or native).
    pub attached: Map<String, Value>,
    /// When the entity expires with `call.expired` if nothing changes it.
    pub expires_at: Option<SystemTime>,
}

impl Entity {
    /// The live state, if any.
    pub fn live(&self) -> Option<&Value> {
        self.state.as_ref()
    }
}

/// What a transition does to one of the entities it read.
// Short-lived values built once per transition: boxing would only cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Default)]
pub enum Change {
    /// Leave it exactly as it is (nothing is written for it).
    #[default]
    Keep,
    /// Write it (create it when it did not exist).
    Write(Write),
}

/// The new content of one entity and what goes with it.
#[derive(Debug, Clone, Default)]
pub struct Write {
    /// The new live state, or `None` to end the entity.
    pub state: Option<Value>,
    /// Replaces the attached data when `Some`.
    pub attached: Option<Map<String, Value>>,
    /// When the entity expires (`call.expired`) if no later change moves it; `None` for never.
    pub expires_at: Option<SystemTime>,
    /// Durable webhook events, in order; each gets the entity's next sequence number.
    pub events: Vec<EntityEvent>,
    /// The entity's timers to set or cancel.
    pub timers: Vec<TimerChange>,
    /// Aliases to claim for or release from this entity.
    pub aliases: Vec<AliasChange>,
}

impl Write {
    /// A write of `state` with nothing else.
    pub fn state(state: Value) -> Self {
        Write {
            state: Some(state),
            ..Write::default()
        }
    }

    pub fn event(mut self, event: EntityEvent) -> Self {
        self.events.push(event);
        self
    }

    pub fn timer(mut self, timer: TimerChange) -> Self {
        self.timers.push(timer);
        self
    }

    pub fn alias(mut self, alias: AliasChange) -> Self {
        self.aliases.push(alias);
        self
    }
}

/// A durable webhook event produced by a transition. The core builds the payload as for
/// [`crate::Gateway::record`]: `data` holds `event_id`, `tenant`, `vendor`, `call_id` (the
/// entity id), `correlation`, `attached`, the fields below, `received_at`, `vendor_fields`
/// and `seq`. A field below named like one of the core's keys is left out (and logged).
#[derive(Debug, Clone, Default)]
pub struct EntityEvent {
    /// The webhook type, e.g. `ptk.interaction.queued`.
    pub event_type: String,
    /// When it happened, if the vendor said so; otherwise the commit time.
    pub occurred_at: Option<SystemTime>,
    /// Vendor ids for correlation (`InteractionId`, `ExternalTrackingId`, ...).
    pub correlation: Map<String, Value>,
    /// Vendor-neutral fields.
    pub data: Map<String, Value>,
    /// The vendor's fields, untouched.
    pub vendor_fields: Map<String, Value>,
}

impl EntityEvent {
    pub fn new(event_type: impl Into<String>) -> Self {
        EntityEvent {
            event_type: event_type.into(),
            ..EntityEvent::default()
        }
    }
}

/// A timer owned by an entity. When it falls due, the core calls the owning adapter's
/// [`crate::Adapter::on_timer`] (on whichever instance claims it first). A timer is
/// identified by its entity and name: setting it again moves it.
#[derive(Debug, Clone)]
pub enum TimerChange {
    Set {
        name: String,
        due: SystemTime,
        payload: Value,
    },
    Cancel {
        name: String,
    },
}

/// A unique secondary key (`ExternalTrackingId`, `ClientId`, a transit number, ...) within a
/// tenant and namespace, owned by one entity. A claim fails the whole transition with
/// [`Transitioned::AliasTaken`] when another entity holds it; claiming one's own alias again
/// just moves its expiry.
#[derive(Debug, Clone)]
pub enum AliasChange {
    Claim {
        namespace: String,
        value: String,
        /// The claim lapses at this time (others may then claim it); `None` for never.
        until: Option<SystemTime>,
    },
    Release {
        namespace: String,
        value: String,
    },
}

/// One timer that fell due, handed to the owning adapter.
#[derive(Debug, Clone)]
pub struct TimerFired {
    pub entity: EntityKey,
    pub name: String,
    pub due: SystemTime,
    pub payload: Value,
}

/// The outcome of [`crate::Gateway::transition`].
#[derive(Debug, Clone)]
pub enum Transitioned {
    /// Committed and fsynced (or nothing to write): the entities as they are now, in the
    /// order of the keys; an entity the transition left alone is as it was read.
    Done(Vec<Option<Entity>>),
    /// A claimed alias belongs to another entity; nothing was written.
    AliasTaken {
        namespace: String,
        value: String,
        owner: EntityKey,
    },
}

/// The outcome of [`crate::Gateway::wait_change`].
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Waited {
    /// The entity's version moved past the one given (or it appeared or vanished).
    Changed(Option<Entity>),
    /// Nothing changed within the time allowed.
    TimedOut,
    /// The gateway is stopping: answer now.
    ShuttingDown,
}

/// The closure of a transition: the entities read (in key order, `None` for absent ones) and
/// the changes, one per key (missing trailing entries mean [`Change::Keep`]).
pub type TransitionFn<'a> = dyn FnMut(&[Option<Entity>]) -> Vec<Change> + Send + 'a;

/// A request to an adapter's part of the command API: `/api/{tenant}/{adapter}/{path}`,
/// already authenticated for `tenant` by the core.
#[derive(Debug, Clone)]
pub struct Command {
    pub tenant: String,
    pub method: http::Method,
    /// The decoded path segments after `/api/{tenant}/{adapter}/`, e.g. `["calls", "123",
    /// "assign"]` (see [`crate::path`]).
    pub path: crate::PathSegments,
    pub query: Option<String>,
    /// The JSON body (`Value::Null` when there was none).
    pub body: Value,
    /// The request's headers (`Idempotency-Key` and the like; the core already checked
    /// `Authorization`).
    pub headers: http::HeaderMap,
}

/// The answer to a [`Command`]: an HTTP status and a JSON body. Errors use
/// `{"error": {"code": "...", "message": "..."}}`; an error that carries
/// `"retry_after_s": N` is answered with `Retry-After: N`.
#[derive(Debug, Clone)]
pub struct CommandReply {
    pub status: u16,
    pub body: Value,
}

impl CommandReply {
    pub fn ok(body: Value) -> Self {
        CommandReply { status: 200, body }
    }

    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        CommandReply {
            status,
            body: serde_json::json!({"error": {"code": code, "message": message.into()}}),
        }
    }
}

/// How many times an adapter chooses a transition's keys again: when the fresh id it drew
/// is taken, or when what it read to choose the keys (the slot an interaction holds, the
/// call on a channel) changed before the transition ran. [`crate::Gateway::transition`]
/// already recomputes on a version conflict of the keys it was given; this bounds choosing
/// them. A collision or a change in between is rare, five in a row means something is wrong
/// (the adapter answers with its platform's error).
pub const REPLAN_ATTEMPTS: u32 = 5;

/// How long to wait at most in [`crate::Gateway::wait_change`]; longer requests are capped.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
