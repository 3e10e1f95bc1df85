//! The VXML Interaction Server's state reports (`Interaction*`): each moves a live interaction
//! on, or ends it, when its status allows.

use std::time::{Duration, SystemTime};

use ivrgate_adapter::TimerChange;
use serde_json::json;

use super::{claim, due_timer, end_step, make_callback, move_step, Ctx, Step, DUE_TIMER, EXTERNAL};
use crate::codes::*;
use crate::reply::Reply;
use crate::settings::{format_time, Segment};
use crate::state::{Interaction, Status, UserValue};

/// DataName/DataValue carried by a report: one UserData string to set.
pub type DataItem = Option<(String, String)>;

fn set_data(i: &mut Interaction, data: &DataItem) {
    if let Some((k, v)) = data {
        i.user_data.insert(k.clone(), UserValue::String(v.clone()));
    }
}

fn refused(code: u32, i: &Interaction, what: &str) -> Reply {
    Reply::error(code, format!("a {} interaction {what}", i.status.as_str()))
}

/// InteractionCancelled: only a pending or due callback (108029).
pub fn cancelled(ctx: &Ctx, i: &Interaction, by: &str) -> Result<Step, Reply> {
    if !i.status.is_pending_callback() {
        return Err(refused(CANNOT_CANCEL, i, "is not a pending callback"));
    }
    Ok(end_step(
        ctx,
        i,
        "ptk.interaction.cancelled",
        "Cancelled",
        json!({"cancelled_by": by}),
    ))
}

/// InteractionDequeued: out of a queue, answered by an agent or abandoned.
pub fn dequeued(ctx: &Ctx, i: &Interaction, reason: &str) -> Result<Step, Reply> {
    let queue_kind = match i.status {
        Status::QueuedHold => "hold",
        Status::QueuedCallback => "callback",
        _ => return Err(refused(STATE_PREVENTS, i, "is not in a queue")),
    };
    let status = if reason == "AgentAnswered" {
        "Completed"
    } else {
        "Abandoned"
    };
    Ok(end_step(
        ctx,
        i,
        "ptk.interaction.dequeued",
        status,
        json!({"reason": reason, "queue_kind": queue_kind}),
    ))
}

/// InteractionDisconnectedByApplication: ends it whatever its status.
pub fn disconnected_by_application(
    ctx: &Ctx,
    i: &Interaction,
    reason: &str,
    data: &DataItem,
) -> Step {
    let mut last = i.clone();
    set_data(&mut last, data);
    end_step(
        ctx,
        &last,
        "ptk.interaction.disconnected",
        "Disconnected",
        json!({"by": "application", "reason": reason}),
    )
}

/// InteractionDisconnectedByCaller: only in treatment or in a queue (108055).
pub fn disconnected_by_caller(ctx: &Ctx, i: &Interaction, reason: &str) -> Result<Step, Reply> {
    if !matches!(
        i.status,
        Status::Inbound | Status::QueuedHold | Status::QueuedCallback | Status::OutboundConnected
    ) {
        return Err(refused(
            CANNOT_DISCONNECT,
            i,
            "is neither in treatment nor queued",
        ));
    }
    Ok(end_step(
        ctx,
        i,
        "ptk.interaction.disconnected",
        "Abandoned",
        json!({"by": "caller", "reason": reason}),
    ))
}

/// The per-reason attempt limit, from the segment's queue variables.
fn reason_limit(seg: &Segment, reason: &str) -> Option<u32> {
    let var = match reason {
        "Busy" => "BUSYATTEMPTS",
        "NoAnswer" => "NOANSATTEMPTS",
        "AnsweringMachine" => "MAXANSMACHATTEMPTS",
        "TryAgain" => "TRYAGAINATTEMPTS",
        _ => return None,
    };
    crate::settings::variables(seg)
        .into_iter()
        .find(|(k, _)| k == var)
        .and_then(|(_, v)| v.parse().ok())
}

/// InteractionOutboundAttemptFailed: counts the attempt; with attempts left (in total and for
/// the reason) the callback is rescheduled `retry_interval_s` later, otherwise (or for
/// `Abandon`, or without its segment) it completes as Failed.
pub fn attempt_failed(
    ctx: &Ctx,
    i: &Interaction,
    reason: &str,
    data: &DataItem,
) -> Result<Step, Reply> {
    if !matches!(
        i.status,
        Status::CallbackDue | Status::OutboundConnected | Status::CallbackPending
    ) {
        return Err(refused(STATE_PREVENTS, i, "has no outbound attempt"));
    }
    let seg = ctx.segment_of(i);
    let mut next = i.clone();
    set_data(&mut next, data);
    next.attempts += 1;
    let count = next.failures.get(reason).copied().unwrap_or(0) + 1;
    next.failures.insert(reason.into(), count);
    let max = seg.map(|s| s.max_attempts).unwrap_or(1);
    let reason_max = seg.and_then(|s| reason_limit(s, reason));
    let exhausted = reason == "Abandon"
        || next.attempts >= max
        || reason_max.is_some_and(|m| count >= u64::from(m));
    let Some(seg) = seg.filter(|_| !exhausted) else {
        return Ok(end_step(
            ctx,
            &next,
            "ptk.interaction.outbound_attempt_failed",
            "Failed",
            json!({"reason": reason, "next": "completed"}),
        ));
    };
    let due = ctx.now + Duration::from_secs(seg.retry_interval_s);
    next.status = Status::CallbackPending;
    next.due = Some(format_time(due));
    let mut s = move_step(
        ctx,
        next,
        "ptk.interaction.outbound_attempt_failed",
        json!({"reason": reason, "next": "rescheduled", "retry_at": format_time(due)}),
    );
    s.timers.push(due_timer(due));
    Ok(s)
}

/// InteractionOutboundConnected: the contact answered a pending or due callback.
pub fn outbound_connected(ctx: &Ctx, i: &Interaction) -> Result<Step, Reply> {
    if !i.status.is_pending_callback() {
        return Err(refused(STATE_PREVENTS, i, "is not a callback being placed"));
    }
    let mut next = i.clone();
    next.status = Status::OutboundConnected;
    next.due = None;
    let mut s = move_step(ctx, next, "ptk.interaction.outbound_connected", json!({}));
    s.timers.push(TimerChange::Cancel {
        name: DUE_TIMER.into(),
    });
    Ok(s)
}

/// The queue an interaction joins from its status: the holding queue from inbound treatment,
/// the callback queue once connected.
fn queue_for(i: &Interaction, what: &str) -> Result<Status, Reply> {
    match i.status {
        Status::Inbound | Status::QueuedHold => Ok(Status::QueuedHold),
        Status::OutboundConnected | Status::QueuedCallback => Ok(Status::QueuedCallback),
        _ => Err(refused(STATE_PREVENTS, i, what)),
    }
}

/// InteractionQueued on a live interaction: into the holding or callback queue, with the
/// skill, the segment named (if any) and an external tracking id given now (claimed).
pub fn queued(
    ctx: &Ctx,
    i: &Interaction,
    segment: Option<&Segment>,
    external: Option<&str>,
    skill: &str,
) -> Result<Step, Reply> {
    let mut next = i.clone();
    next.status = queue_for(i, "cannot be queued")?;
    if let Some(seg) = segment {
        next.segment = Some(seg.name.clone());
        next.queue = Some(seg.queue().to_owned());
    }
    next.skill = Some(skill.to_owned());
    let mut aliases = Vec::new();
    if let Some(ext) = external {
        if next.external_id.as_deref() != Some(ext) {
            next.external_id = Some(ext.to_owned());
            aliases.push(claim(EXTERNAL, &i.tenant, ext));
        }
    }
    let kind = if next.status == Status::QueuedHold {
        "hold"
    } else {
        "callback"
    };
    let mut s = move_step(
        ctx,
        next,
        "ptk.interaction.queued",
        json!({"skill_id": skill, "queue_kind": kind}),
    );
    s.aliases = aliases;
    Ok(s)
}

/// InteractionRequestContact: the caller asks for a callback to `contact` at `at` (ASAP when
/// `None`), from treatment, the holding queue or a pending callback.
pub fn request_contact(
    ctx: &Ctx,
    i: &Interaction,
    segment: &Segment,
    contact: &str,
    at: Option<SystemTime>,
    uri: &str,
) -> Result<Step, Reply> {
    if !matches!(
        i.status,
        Status::Inbound | Status::QueuedHold | Status::CallbackPending
    ) {
        return Err(refused(STATE_PREVENTS, i, "cannot become a callback"));
    }
    let (next, timers, aliases) = make_callback(ctx, i.clone(), segment, contact.to_owned(), at);
    let mut s = move_step(
        ctx,
        next,
        "ptk.interaction.callback_requested",
        json!({"contact_uri": uri}),
    );
    s.timers = timers;
    s.aliases = aliases;
    Ok(s)
}

/// InteractionSendToQueue: into the holding or callback queue, as InteractionQueued.
pub fn send_to_queue(
    ctx: &Ctx,
    i: &Interaction,
    reason: &str,
    data: &DataItem,
) -> Result<Step, Reply> {
    let mut next = i.clone();
    set_data(&mut next, data);
    next.status = queue_for(i, "cannot be sent to a queue")?;
    Ok(move_step(
        ctx,
        next,
        "ptk.interaction.sent_to_queue",
        json!({"reason": reason}),
    ))
}
