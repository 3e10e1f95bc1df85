//! The PTK's rules as pure functions: each step takes what a method parsed and what the
//! transition read (the interaction, its licence counter, its slots) and returns a [`Step`]:
//! the new interaction (or its end), events, timers, alias claims and the answer. No step
//! holds the gateway, so the core can run it inside a transition and again on a conflict, and
//! the unit tests below run it without a server.
//!
//! `mod.rs` holds what every step shares (context, events, callbacks, the claims an ending
//! interaction gives up, licence and slot accounting, new interactions, the timers);
//! `reports.rs` the VXML Interaction Server's state reports (`Interaction*`); `changes.rs`
//! ModifyInteraction, RemoveInteraction, UpdateUserData, UpdateInteractionData and
//! AssociateInteractionWithExternalTrackingID.

mod changes;
mod reports;

use std::time::{Duration, SystemTime};

use ivrgate_adapter::{AliasChange, EntityEvent, TimerChange};
use serde_json::{json, Map, Value};

use crate::codes::*;
use crate::interaction;
use crate::reply::Reply;
use crate::settings::{format_time, slot_start, Segment, Settings};
use crate::soap::Element;
use crate::state::{
    Interaction, InteractionType, Licence, LicenceCounter, Status, Stored, UserData,
};

pub use changes::*;
pub use reports::*;

/// The timer that makes a callback fall due.
pub const DUE_TIMER: &str = "callback.due";
/// The timer that ends an interaction nobody reported on for `idle_expiry_s`.
pub const IDLE_TIMER: &str = "idle";
/// How long the ids of an ended interaction stay claimed (a late report still finds it; a
/// second interaction cannot take its external tracking id).
pub const ENDED_CLAIM: Duration = Duration::from_secs(24 * 3600);

/// Alias namespaces: external tracking ids, ClientIds and pending callback contacts, each
/// `{ptk tenant}/...`.
pub const EXTERNAL: &str = "ptk.external";
pub const CLIENT: &str = "ptk.client";
pub const CONTACT: &str = "ptk.contact";

/// What a step knows besides its arguments and what it read.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub now: SystemTime,
    /// The method named in events (`timer` for the platform's own actor).
    pub method: &'static str,
    pub settings: &'a Settings,
    /// The request's parameters, for events' `vendor_fields` (none for timers).
    pub params: Option<&'a Element<'a>>,
}

impl Ctx<'_> {
    /// The request's parameters as JSON. Built for each event rather than kept for the whole
    /// request: with a large UserData it is several times the body's size.
    pub fn vendor_fields(&self) -> Map<String, Value> {
        self.params.map(|p| to_json(p, 0)).unwrap_or_default()
    }

    /// The configured segment an interaction is in.
    pub fn segment_of(&self, i: &Interaction) -> Option<&Segment> {
        self.settings.segment(&i.tenant, i.segment.as_deref()?)
    }
}

/// What a method does to an interaction, computed from what it read.
#[derive(Debug, Default)]
pub struct Step {
    /// Leave the interaction as it is (a repeated report, a stale timer).
    pub keep: bool,
    /// The new state; `None` ends the interaction (its licence and slot are released).
    pub next: Option<Interaction>,
    pub events: Vec<EntityEvent>,
    pub timers: Vec<TimerChange>,
    pub aliases: Vec<AliasChange>,
    pub reply: Reply,
    /// AddInteraction/CreateInteraction: counts toward the licence quota window (109035).
    pub counts_request: bool,
}

impl Step {
    /// Leaves everything as it is.
    pub fn keep() -> Step {
        Step {
            keep: true,
            ..Step::default()
        }
    }
}

/// The PTK tenant's live interaction in `stored`. An ended one answers `ended` (the method's
/// code for a report on an ended interaction; 107002 when `None`), one of another PTK tenant
/// or none 107002, and a state that does not read 109000, so it is never taken for ended.
pub fn live<'s>(
    stored: &'s Stored,
    ptk: &str,
    ended: Option<u32>,
) -> Result<&'s Interaction, Reply> {
    match (stored, ended) {
        (Stored::Live(i), _) if i.tenant == ptk => Ok(i),
        (Stored::Ended, Some(code)) => Err(Reply::error(code, "the interaction already ended")),
        (Stored::Unreadable(why), _) => Err(unreadable(why)),
        _ => Err(Reply::error(NOT_FOUND, "no such interaction")),
    }
}

/// 109000 for a stored interaction that does not read.
pub fn unreadable(why: &str) -> Reply {
    Reply::internal(format!(
        "the stored state of the interaction does not read; left as it is: {why}"
    ))
}

/// The request's parameters as JSON (text leaves, nested objects, repeated names as arrays).
pub fn to_json(e: &Element, depth: usize) -> Map<String, Value> {
    if depth > 32 {
        return Map::new();
    }
    // Sized to its keys: a map grown by insertion keeps room for twice its entries, and a
    // UserData-heavy request has thousands of these small objects. A repeated name is one
    // key (an array), so the runs of names bound the keys: thousands of
    // `UserDataAssignment`s are one entry, not room for thousands.
    let runs = e
        .children
        .iter()
        .zip(e.children.iter().skip(1))
        .filter(|(a, b)| a.name != b.name)
        .count()
        + usize::from(!e.children.is_empty());
    let mut out = Map::with_capacity(runs);
    for c in &e.children {
        let value = if c.children.is_empty() {
            Value::String(c.value().to_owned())
        } else {
            Value::Object(to_json(c, depth + 1))
        };
        match out.get_mut(c.name.as_ref()) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                out.insert(c.name.to_string(), value);
            }
        }
    }
    // An array grown by doubling keeps up to twice its items' room.
    for value in out.values_mut() {
        if let Value::Array(items) = value {
            items.shrink_to_fit();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Events, callbacks, claims
// ---------------------------------------------------------------------------------------------

/// An event about `i`, whose status after the change is `status`.
pub fn event(ctx: &Ctx, kind: &str, i: &Interaction, status: &str, extra: Value) -> EntityEvent {
    let mut e = EntityEvent::new(kind);
    e.correlation.insert("InteractionId".into(), json!(i.id));
    if let Some(ext) = &i.external_id {
        e.correlation
            .insert("ExternalTrackingId".into(), json!(ext));
    }
    let mut data = Map::new();
    data.insert("ptk_tenant".into(), json!(i.tenant));
    data.insert("interaction_id".into(), json!(i.id));
    data.insert("method".into(), json!(ctx.method));
    data.insert("status".into(), json!(status));
    data.insert("interaction_type".into(), json!(i.interaction_type));
    data.insert("segment".into(), json!(i.segment));
    data.insert("queue".into(), json!(i.queue));
    data.insert("contact".into(), json!(i.contact));
    data.insert("appointment_time".into(), json!(i.appointment));
    data.insert("external_tracking_id".into(), json!(i.external_id));
    data.insert("source_application".into(), json!(i.source_application));
    data.insert("attempts".into(), json!(i.attempts));
    data.insert("user_data".into(), interaction::plain(&i.user_data));
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            data.insert(k, v);
        }
    }
    e.data = data;
    e.vendor_fields = ctx.vendor_fields();
    e
}

/// A step that ends the interaction with `status`, emitting `kind`.
pub fn end_step(ctx: &Ctx, i: &Interaction, kind: &str, status: &str, extra: Value) -> Step {
    Step {
        next: None,
        events: vec![event(ctx, kind, i, status, extra)],
        timers: vec![TimerChange::Cancel {
            name: DUE_TIMER.into(),
        }],
        aliases: ending_aliases(i, ctx.now),
        reply: Reply::ok().with_id(&i.id),
        ..Step::default()
    }
}

/// A step that moves the interaction to `next`, emitting `kind`.
pub fn move_step(ctx: &Ctx, next: Interaction, kind: &str, extra: Value) -> Step {
    Step {
        events: vec![event(ctx, kind, &next, next.status.as_str(), extra)],
        reply: Reply::ok().with_id(&next.id),
        next: Some(next),
        ..Step::default()
    }
}

pub fn claim(namespace: &str, ptk: &str, value: &str) -> AliasChange {
    AliasChange::Claim {
        namespace: namespace.into(),
        value: format!("{ptk}/{value}"),
        until: None,
    }
}

pub fn release(namespace: &str, ptk: &str, value: &str) -> AliasChange {
    AliasChange::Release {
        namespace: namespace.into(),
        value: format!("{ptk}/{value}"),
    }
}

/// The pending-callback claim of an interaction: `{ptk tenant}/{queue}/{contact}`.
pub fn contact_alias(i: &Interaction) -> Option<String> {
    Some(format!(
        "{}/{}/{}",
        i.tenant,
        i.queue.as_deref()?,
        i.contact.as_deref()?
    ))
}

/// Releases what an ending interaction holds: its pending-contact and ClientId claims; its
/// external tracking id stays claimed a day more.
pub fn ending_aliases(i: &Interaction, now: SystemTime) -> Vec<AliasChange> {
    let mut out = Vec::new();
    if let Some(value) = contact_alias(i) {
        out.push(AliasChange::Release {
            namespace: CONTACT.into(),
            value,
        });
    }
    // A ClientId identifies a request to retry, not an interaction forever.
    if let Some(client) = &i.client_id {
        out.push(release(CLIENT, &i.tenant, client));
    }
    if let Some(ext) = &i.external_id {
        out.push(AliasChange::Claim {
            namespace: EXTERNAL.into(),
            value: format!("{}/{ext}", i.tenant),
            until: Some(now + ENDED_CLAIM),
        });
    }
    out
}

/// The due timer of a callback due at `due`.
pub fn due_timer(due: SystemTime) -> TimerChange {
    TimerChange::Set {
        name: DUE_TIMER.into(),
        due,
        payload: json!({"due": format_time(due)}),
    }
}

/// Makes `i` a callback to `contact` at `at` (ASAP when `None`) in `segment`, with its due
/// timer and pending-contact claim (the old one released).
pub fn make_callback(
    ctx: &Ctx,
    mut i: Interaction,
    segment: &Segment,
    contact: String,
    at: Option<SystemTime>,
) -> (Interaction, Vec<TimerChange>, Vec<AliasChange>) {
    let mut aliases = Vec::new();
    if let Some(old) = contact_alias(&i) {
        aliases.push(AliasChange::Release {
            namespace: CONTACT.into(),
            value: old,
        });
    }
    i.segment = Some(segment.name.clone());
    i.queue = Some(segment.queue().to_owned());
    i.contact = Some(contact);
    i.status = Status::CallbackPending;
    let due = at.unwrap_or(ctx.now);
    match at {
        Some(at) => {
            i.interaction_type = InteractionType::Appointment;
            i.appointment = Some(format_time(at));
            i.slot = Some(slot_start(segment, at));
        }
        None => {
            i.interaction_type = InteractionType::Fifo;
            i.appointment = None;
            i.slot = None;
        }
    }
    i.due = Some(format_time(due));
    if segment.double_check {
        if let Some(value) = contact_alias(&i) {
            aliases.push(AliasChange::Claim {
                namespace: CONTACT.into(),
                value,
                until: None,
            });
        }
    }
    (i, vec![due_timer(due)], aliases)
}

// ---------------------------------------------------------------------------------------------
// Licences and slots
// ---------------------------------------------------------------------------------------------

/// The licence counter after a step: the request counted in its window (109035 over the
/// quota), a licence taken (109005 when all are in use) or given back. `None`: unchanged.
pub fn account_licence(
    mut counter: LicenceCounter,
    settings: &Settings,
    now_s: u64,
    counts_request: bool,
    held: bool,
    holds: bool,
) -> Result<Option<LicenceCounter>, Reply> {
    let mut changed = false;
    if counts_request {
        if now_s >= counter.window_start + settings.licence_window_s {
            counter.window_start = now_s;
            counter.count = 0;
        }
        if let Some(max) = settings.licence_requests_per_window {
            if counter.count >= max {
                return Err(Reply::error(
                    BANDWIDTH_EXCEEDED,
                    format!(
                        "more than {max} requests in {} s",
                        settings.licence_window_s
                    ),
                ));
            }
        }
        counter.count += 1;
        changed = true;
    }
    match (held, holds) {
        (false, true) => {
            if settings.licences.is_some_and(|max| counter.live >= max) {
                return Err(Reply::error(LICENCE_UNAVAILABLE, "every licence is in use"));
            }
            counter.live += 1;
            changed = true;
        }
        (true, false) => {
            counter.live = counter.live.saturating_sub(1);
            changed = true;
        }
        _ => {}
    }
    Ok(changed.then_some(counter))
}

/// A slot's bookings after one more (107014 when it holds `capacity`).
pub fn book_slot(booked: u64, capacity: u64) -> Result<u64, Reply> {
    if booked >= capacity {
        Err(Reply::error(TIME_FULL, "the appointment slot is full"))
    } else {
        Ok(booked + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// New interactions
// ---------------------------------------------------------------------------------------------

/// AddInteraction's parameters, checked.
#[derive(Debug, Clone)]
pub struct AddArgs {
    pub ptk: String,
    pub contact: String,
    pub at: Option<SystemTime>,
    pub client: Option<String>,
    pub source_application: Option<String>,
}

/// AddInteraction: a new callback under `id`, holding a callback licence, its ClientId
/// claimed while it lives.
pub fn add(ctx: &Ctx, id: &str, args: &AddArgs, segment: &Segment, user_data: UserData) -> Step {
    let mut i = Interaction::new(id, &args.ptk, format_time(ctx.now));
    i.client_id = args.client.clone();
    i.licence = Some(Licence::Callback);
    i.source_application = Some(
        args.source_application
            .clone()
            .unwrap_or_else(|| "Platform Toolkit".into()),
    );
    i.user_data = user_data;
    let (i, timers, mut aliases) = make_callback(ctx, i, segment, args.contact.clone(), args.at);
    if let Some(client) = &args.client {
        // Held while the interaction lives: a retry returns it.
        aliases.push(claim(CLIENT, &args.ptk, client));
    }
    let data = interactions_xml(std::slice::from_ref(&i), false, false, ctx.now);
    let mut s = move_step(ctx, i, "ptk.interaction.created", json!({}));
    s.reply = Reply::ok().with_data(data).with_id(id);
    s.timers = timers;
    s.aliases = aliases;
    s.counts_request = true;
    s
}

/// CreateInteraction: a new interaction in inbound treatment under `id`, holding a voice
/// licence, its external tracking id claimed.
pub fn create(
    ctx: &Ctx,
    id: &str,
    ptk: &str,
    segment: &Segment,
    external: Option<&str>,
    source_application: Option<String>,
    user_data: UserData,
) -> Step {
    let mut i = Interaction::new(id, ptk, format_time(ctx.now));
    i.segment = Some(segment.name.clone());
    i.queue = Some(segment.queue().to_owned());
    i.external_id = external.map(str::to_owned);
    i.source_application = source_application;
    i.licence = Some(Licence::Voice);
    i.user_data = user_data;
    let mut s = move_step(ctx, i, "ptk.interaction.created", json!({}));
    if let Some(ext) = external {
        s.aliases.push(claim(EXTERNAL, ptk, ext));
    }
    s.counts_request = true;
    s
}

/// InteractionQueued for an interaction nobody created: it is created in the holding queue
/// (107100), with no licence.
pub fn queued_new(
    ctx: &Ctx,
    id: &str,
    ptk: &str,
    segment: Option<&Segment>,
    external: Option<&str>,
    skill: &str,
) -> Step {
    let mut i = Interaction::new(id, ptk, format_time(ctx.now));
    i.segment = segment.map(|s| s.name.clone());
    i.queue = segment.map(|s| s.queue().to_owned());
    i.external_id = external.map(str::to_owned);
    i.skill = Some(skill.to_owned());
    i.status = Status::QueuedHold;
    let created = event(ctx, "ptk.interaction.created", &i, "QueuedHold", json!({}));
    let mut s = move_step(
        ctx,
        i,
        "ptk.interaction.queued",
        json!({"skill_id": skill, "queue_kind": "hold"}),
    );
    s.reply = Reply::code(COMPLETED_WITH_ID).with_id(id);
    s.events.insert(0, created);
    if let Some(ext) = external {
        s.aliases.push(claim(EXTERNAL, ptk, ext));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The platform's own actor: timers
// ---------------------------------------------------------------------------------------------

/// The due timer for `due`: a pending callback still due then becomes due, with a durable
/// `callback.due`; anything else (cancelled, moved, already due) is left alone.
pub fn fall_due(ctx: &Ctx, stored: &Stored, due: &str) -> Result<Step, Reply> {
    let i = match stored {
        Stored::Live(i) => i,
        Stored::Unreadable(why) => return Err(unreadable(why)),
        Stored::Absent | Stored::Ended => return Ok(Step::keep()),
    };
    if i.status != Status::CallbackPending || i.due.as_deref() != Some(due) {
        return Ok(Step::keep());
    }
    let mut next = i.clone();
    next.status = Status::CallbackDue;
    let e = event(
        ctx,
        "callback.due",
        &next,
        "CallbackDue",
        json!({"due_at": due}),
    );
    Ok(Step {
        next: Some(next),
        events: vec![e],
        reply: Reply::ok(),
        ..Step::default()
    })
}

/// The idle timer: an interaction no report moved for `idle_expiry_s` ends with
/// `ptk.interaction.expired`; a callback waiting for its time is not idle.
pub fn expire_idle(ctx: &Ctx, stored: &Stored) -> Result<Step, Reply> {
    let i = match stored {
        Stored::Live(i) => i,
        Stored::Unreadable(why) => return Err(unreadable(why)),
        Stored::Absent | Stored::Ended => return Ok(Step::keep()),
    };
    let idle = Duration::from_secs(ctx.settings.idle_expiry_s);
    let touched = i.touched.as_deref().and_then(crate::settings::parse_time);
    if i.status == Status::CallbackPending || touched.is_some_and(|t| t + idle > ctx.now) {
        return Ok(Step::keep());
    }
    let mut s = end_step(
        ctx,
        i,
        "ptk.interaction.expired",
        "Expired",
        json!({"idle_s": ctx.settings.idle_expiry_s}),
    );
    s.reply = Reply::ok();
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Rendering interactions
// ---------------------------------------------------------------------------------------------

fn interaction_xml(
    w: &mut crate::soap::Writer,
    i: &Interaction,
    information: bool,
    user_data: bool,
    now: SystemTime,
) {
    w.open_attrs(
        "Interaction",
        &[
            ("Contact", i.contact.as_deref().unwrap_or("")),
            ("Id", &i.id),
            ("InteractionType", i.interaction_type.as_str()),
            ("Queue", i.queue.as_deref().unwrap_or("")),
            ("Segment", i.segment.as_deref().unwrap_or("")),
            ("Tenant", &i.tenant),
        ],
    );
    w.open("Information");
    if information {
        let mut items: Vec<(&str, String)> = vec![("Status", i.status.as_str().to_owned())];
        if let Some(at) = &i.appointment {
            items.push(("AppointmentTime", at.clone()));
        }
        if i.interaction_type == InteractionType::Fifo {
            let remaining = i
                .due
                .as_deref()
                .and_then(crate::settings::parse_time)
                .and_then(|due| due.duration_since(now).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            items.push(("RemainingWaitTime", remaining.to_string()));
        }
        if let Some(ext) = &i.external_id {
            items.push(("ExternalTrackingId", ext.clone()));
        }
        if let Some(client) = &i.client_id {
            items.push(("ClientId", client.clone()));
        }
        if let Some(app) = &i.source_application {
            items.push(("SourceApplication", app.clone()));
        }
        items.push(("Attempts", i.attempts.to_string()));
        if let Some(result) = &i.result {
            items.push(("Result", result.clone()));
        }
        for (name, value) in items {
            w.empty_attrs(
                "InteractionInformation",
                &[("Name", name), ("Value", &value)],
            );
        }
    }
    w.close("Information");
    if user_data {
        w.open("UserData");
        interaction::write_user_data(w, &i.user_data);
        w.close("UserData");
    }
    w.close("Interaction");
}

/// `<Interactions>` with each interaction, with its `Information` and `UserData` if asked.
pub fn interactions_xml(
    list: &[Interaction],
    information: bool,
    user_data: bool,
    now: SystemTime,
) -> String {
    let mut w = crate::soap::Writer::default();
    w.open("Interactions");
    for i in list {
        interaction_xml(&mut w, i, information, user_data, now);
    }
    w.close("Interactions");
    w.out
}

#[cfg(test)]
pub(crate) mod tests;
