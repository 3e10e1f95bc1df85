//! Changes to an interaction: ModifyInteraction, RemoveInteraction, UpdateUserData,
//! UpdateInteractionData and AssociateInteractionWithExternalTrackingID.

use std::time::SystemTime;

use ivrgate_adapter::AliasChange;
use serde_json::json;

use super::{
    claim, contact_alias, end_step, make_callback, move_step, release, Ctx, Step, CLIENT, CONTACT,
    EXTERNAL,
};
use crate::codes::*;
use crate::interaction;
use crate::reply::Reply;
use crate::settings::Segment;
use crate::state::{Interaction, Status, UserData, UserValue};

/// Contact validation: digits with an optional leading `+` (spaces, dashes, dots and
/// brackets are ignored), within the segment's lengths.
pub fn normalize_contact(segment: Option<&Segment>, contact: &str) -> Option<String> {
    let (min, max) = segment
        .map(|s| (s.contact_min_digits, s.contact_max_digits))
        .unwrap_or((3, 15));
    let mut out = String::new();
    for (i, c) in contact.trim().chars().enumerate() {
        match c {
            '+' if i == 0 => out.push(c),
            '0'..='9' => out.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    let digits = out.chars().filter(char::is_ascii_digit).count();
    (digits >= min && digits <= max).then_some(out)
}

/// ModifyInteraction AppointmentTime (and UpdateInteractionData's): a pending callback
/// re-booked at `at` (already checked against the segment), its due timer moved.
pub fn rebook(
    ctx: &Ctx,
    i: &Interaction,
    segment: &Segment,
    at: SystemTime,
) -> Result<Step, Reply> {
    if i.status != Status::CallbackPending {
        return Err(Reply::error(
            STATE_PREVENTS_APPOINTMENT,
            "the interaction is already active",
        ));
    }
    let contact = i.contact.clone().unwrap_or_default();
    let (next, timers, _) = make_callback(ctx, i.clone(), segment, contact, Some(at));
    let mut s = move_step(
        ctx,
        next,
        "ptk.interaction.modified",
        json!({"changed": "AppointmentTime"}),
    );
    s.timers = timers;
    Ok(s)
}

/// ModifyInteraction Result: the interaction completes with a configured result of `kind`.
pub fn complete(ctx: &Ctx, i: &Interaction, result: &str, kind: &str) -> Step {
    let status = match kind {
        "CALLINFO_CALLBACK_SUCCESSFUL" => "Completed",
        "CALLINFO_CALLBACK_CANCELLED" => "Cancelled",
        _ => "Failed",
    };
    let mut last = i.clone();
    last.result = Some(result.to_owned());
    end_step(
        ctx,
        &last,
        "ptk.interaction.completed",
        status,
        json!({"result": result, "result_type": kind}),
    )
}

/// ModifyInteraction ClientId: the ClientId index follows, so a retried AddInteraction with
/// the new ClientId finds this interaction and the old one is free.
pub fn set_client_id(ctx: &Ctx, i: &Interaction, client: &str) -> Step {
    let mut next = i.clone();
    next.client_id = Some(client.to_owned());
    let mut s = move_step(
        ctx,
        next,
        "ptk.interaction.modified",
        json!({"changed": "ClientId"}),
    );
    if let Some(old) = i.client_id.as_deref().filter(|old| *old != client) {
        s.aliases.push(release(CLIENT, &i.tenant, old));
    }
    s.aliases.push(claim(CLIENT, &i.tenant, client));
    s
}

/// ModifyInteraction DataName/DataValue: one UserData string.
pub fn set_data_value(ctx: &Ctx, i: &Interaction, name: &str, value: &str) -> Step {
    let mut next = i.clone();
    next.user_data
        .insert(name.to_owned(), UserValue::String(value.to_owned()));
    move_step(
        ctx,
        next,
        "ptk.interaction.modified",
        json!({"changed": "UserData"}),
    )
}

/// RemoveInteraction: ends it whatever its status.
pub fn remove(ctx: &Ctx, i: &Interaction, reason: &str) -> Step {
    end_step(
        ctx,
        i,
        "ptk.interaction.removed",
        "Removed",
        json!({"reason": reason}),
    )
}

/// UpdateUserData: merged as the seed documents.
pub fn update_user_data(ctx: &Ctx, i: &Interaction, data: &UserData) -> Step {
    let mut next = i.clone();
    interaction::merge(&mut next.user_data, data);
    move_step(ctx, next, "ptk.interaction.user_data_updated", json!({}))
}

/// AssociateInteractionWithExternalTrackingID (and UpdateInteractionData's): the new id is
/// claimed, the old one released.
pub fn set_external(ctx: &Ctx, i: &Interaction, ext: &str) -> Step {
    let mut next = i.clone();
    let mut aliases = Vec::new();
    if let Some(old) = i.external_id.as_deref().filter(|old| *old != ext) {
        aliases.push(release(EXTERNAL, &i.tenant, old));
    }
    aliases.push(claim(EXTERNAL, &i.tenant, ext));
    next.external_id = Some(ext.to_owned());
    let mut s = move_step(
        ctx,
        next,
        "ptk.interaction.external_id_associated",
        json!({}),
    );
    s.aliases = aliases;
    s
}

/// UpdateInteractionData Contact: a pending callback moves its contact claim along.
pub fn update_contact(ctx: &Ctx, i: &Interaction, value: &str) -> Result<Step, Reply> {
    let seg = ctx.segment_of(i);
    let Some(contact) = normalize_contact(seg, value) else {
        return Err(Reply::error(
            INVALID_CONTACT,
            "the contact fails phone number validation",
        ));
    };
    let mut next = i.clone();
    let mut aliases = Vec::new();
    let pending = i.status.is_pending_callback();
    if pending {
        if let Some(old) = contact_alias(i) {
            aliases.push(AliasChange::Release {
                namespace: CONTACT.into(),
                value: old,
            });
        }
    }
    next.contact = Some(contact);
    if pending && seg.is_some_and(|s| s.double_check) {
        if let Some(new) = contact_alias(&next) {
            aliases.push(AliasChange::Claim {
                namespace: CONTACT.into(),
                value: new,
                until: None,
            });
        }
    }
    let mut s = move_step(
        ctx,
        next,
        "ptk.interaction.modified",
        json!({"changed": "Contact"}),
    );
    s.aliases = aliases;
    Ok(s)
}

/// One value UpdateInteractionData changes, checked as far as it can be before the
/// transition reads the interaction.
#[derive(Debug, Clone)]
pub enum Update<'s> {
    Contact(String),
    /// An appointment already checked against the segment (and its live state).
    Appointment(SystemTime, &'s Segment),
    External(String),
    /// Refused before the transition.
    Refused(Reply),
}

impl Update<'_> {
    /// The alias namespace this update claims, if any.
    pub fn claims(&self) -> Option<&'static str> {
        match self {
            Update::Contact(_) => Some(CONTACT),
            Update::External(_) => Some(EXTERNAL),
            _ => None,
        }
    }
}

/// UpdateInteractionData: every value in one step, in order, each over the one before; a value
/// that fails leaves the others. One failure answers its own code, several 109031; nothing
/// written when every value failed.
pub fn update_interaction_data(
    ctx: &Ctx,
    i: &Interaction,
    updates: &[Update],
) -> Result<Step, Reply> {
    let mut failures = Vec::new();
    let mut done: Option<Step> = None;
    for update in updates {
        let current = done.as_ref().and_then(|s| s.next.as_ref()).unwrap_or(i);
        let step = match update {
            Update::Contact(value) => update_contact(ctx, current, value),
            Update::Appointment(at, seg) => rebook(ctx, current, seg, *at),
            Update::External(ext) => Ok(set_external(ctx, current, ext)),
            Update::Refused(reply) => Err(reply.clone()),
        };
        match step {
            Err(reply) => failures.push(reply),
            Ok(mut step) => {
                if let Some(mut before) = done.take() {
                    before.events.append(&mut step.events);
                    before.timers.append(&mut step.timers);
                    before.aliases.append(&mut step.aliases);
                    step.events = before.events;
                    step.timers = before.timers;
                    step.aliases = before.aliases;
                }
                done = Some(step);
            }
        }
    }
    let reply = match failures.len() {
        0 => Reply::ok().with_id(&i.id),
        1 => failures.remove(0),
        n => Reply::error(
            UPDATE_FAILED,
            format!("{n} of {} values failed to update", updates.len()),
        ),
    };
    match done {
        None => Err(reply),
        Some(mut step) => {
            step.reply = reply;
            Ok(step)
        }
    }
}
