//! Interactions through the core's transitions: one interaction, its PTK tenant's licence
//! counter and the appointment slots it leaves and takes, committed together.

use std::time::{Duration, SystemTime};

use ivrgate_adapter::{
    Change, Entity, EntityKey, Gateway, RecordError, TimerChange, Transitioned, Write,
};
use serde_json::Value;

use crate::codes;
use crate::model::{self, Step, IDLE_TIMER};
use crate::reply::Reply;
use crate::settings::{epoch_s, format_time, Settings};
use crate::state::{
    counter_state, read_counter, Interaction, LicenceCounter, SlotBookings, Status, Stored,
};

/// The entity kind of interactions (call-like: the adapter's own name).
pub const KIND: &str = "ptk";
/// A PTK tenant's licence counters.
pub const LICENCE: &str = "ptk.licence";
/// One appointment slot's bookings.
pub const SLOT: &str = "ptk.slot";

/// The outcome of [`run`].
#[derive(Debug)]
pub enum Ran {
    /// Committed (or nothing to commit).
    Done { reply: Reply },
    /// The method's own refusal, or a licence, quota or slot refusal.
    Refused(Reply),
    /// An alias the step claimed is held by another interaction.
    Taken { namespace: String },
}

pub fn key(tenant: &str, id: &str) -> EntityKey {
    EntityKey::new(tenant, KIND, id)
}

pub fn slot_key(tenant: &str, ptk: &str, segment: &str, slot: u64) -> EntityKey {
    EntityKey::new(tenant, SLOT, format!("{ptk}/{segment}/{slot}"))
}

/// The slot entity an interaction's appointment holds.
pub fn slot_of(tenant: &str, i: &Interaction) -> Option<EntityKey> {
    Some(slot_key(tenant, &i.tenant, i.segment.as_deref()?, i.slot?))
}

/// The interaction in an entity.
pub fn read(entity: Option<&Entity>) -> Stored {
    Stored::read(entity)
}

/// The code for a storage refusal: the PTK's "try again".
pub fn storage(error: &RecordError) -> Reply {
    Reply::error(codes::RESOURCES_UNAVAILABLE, error.to_string())
}

enum Out {
    Pending,
    /// The slots the step leaves and takes are not the ones read: read them too.
    Slots(Option<EntityKey>, Option<EntityKey>),
    Refused(Reply),
    Done(Reply),
}

/// The slots a transition is expected to leave and take, when the method knows them (it read
/// the interaction, or books a time): then an appointment is one round trip too.
pub type Slots = (Option<EntityKey>, Option<EntityKey>);

/// Runs `step` on interaction `id` in one transition with its PTK tenant's licence counter and
/// the slots it leaves and takes. `step` sees what is stored; it must be pure.
///
/// One round trip for an interaction without an appointment, or when `slots` are right; when
/// they are not, the run reads the interaction, finds them, and runs again with them.
#[allow(clippy::too_many_arguments)]
pub async fn run<F>(
    gw: &dyn Gateway,
    tenant: &str,
    settings: &Settings,
    ptk_tenant: &str,
    id: &str,
    now: SystemTime,
    slots: Slots,
    mut step: F,
) -> Ran
where
    F: FnMut(&Stored) -> Result<Step, Reply> + Send,
{
    let ikey = key(tenant, id);
    let (mut old_slot, mut new_slot) = slots;
    for _ in 0..ivrgate_adapter::state::REPLAN_ATTEMPTS {
        let mut keys = vec![ikey.clone(), EntityKey::new(tenant, LICENCE, ptk_tenant)];
        keys.extend(old_slot.clone());
        keys.extend(new_slot.clone().filter(|k| Some(k) != old_slot.as_ref()));
        let mut out = Out::Pending;
        let mut f = |read_back: &[Option<Entity>]| -> Vec<Change> {
            let (changes, result) = transition(
                &mut step,
                read_back,
                &keys,
                (&old_slot, &new_slot),
                settings,
                now,
                tenant,
            );
            out = result;
            changes
        };
        let result = gw.transition(keys.clone(), &mut f).await;
        match result {
            Err(e) => return Ran::Refused(storage(&e)),
            Ok(Transitioned::AliasTaken { namespace, .. }) => return Ran::Taken { namespace },
            Ok(Transitioned::Done(_)) => {}
        }
        match out {
            Out::Done(reply) => return Ran::Done { reply },
            Out::Refused(reply) => return Ran::Refused(reply),
            Out::Slots(was, will) => (old_slot, new_slot) = (was, will),
            Out::Pending => {}
        }
    }
    Ran::Refused(Reply::error(
        codes::RESOURCES_UNAVAILABLE,
        "the interaction kept changing; try again",
    ))
}

/// The changes of one run of the transition: the step's, the licence counter's and the
/// slots'.
fn transition<F>(
    step: &mut F,
    read_back: &[Option<Entity>],
    keys: &[EntityKey],
    (old_slot, new_slot): (&Option<EntityKey>, &Option<EntityKey>),
    settings: &Settings,
    now: SystemTime,
    tenant: &str,
) -> (Vec<Change>, Out)
where
    F: FnMut(&Stored) -> Result<Step, Reply>,
{
    let current = read(read_back.first().and_then(Option::as_ref));
    let s = match step(&current) {
        Ok(s) => s,
        Err(reply) => return (vec![], Out::Refused(reply)),
    };
    if s.keep {
        return (vec![], Out::Done(s.reply));
    }
    let was = current.live().and_then(|i| slot_of(tenant, i));
    let will = s.next.as_ref().and_then(|i| slot_of(tenant, i));
    if was != *old_slot || will != *new_slot {
        return (vec![], Out::Slots(was, will));
    }
    let mut changes = vec![Change::Keep; read_back.len()];
    let licence = match read_counter::<LicenceCounter>(read_back.get(1).and_then(Option::as_ref)) {
        Ok(l) => l,
        Err(why) => return (vec![], Out::Refused(Reply::internal(why))),
    };
    let held = current.live().is_some_and(Interaction::holds_licence);
    let holds = s.next.as_ref().is_some_and(Interaction::holds_licence);
    // The interaction as read is not needed past here: a large UserData is not held twice
    // while the new state is built.
    drop(current);
    match model::account_licence(
        licence,
        settings,
        epoch_s(now),
        s.counts_request,
        held,
        holds,
    ) {
        Err(reply) => return (vec![], Out::Refused(reply)),
        Ok(Some(counter)) => changes[1] = Change::Write(Write::state(counter_state(&counter))),
        Ok(None) => {}
    }
    if was != will {
        for (index, entity) in read_back.iter().enumerate().skip(2) {
            let Some(k) = keys.get(index) else { continue };
            let booked = match read_counter::<SlotBookings>(entity.as_ref()) {
                Ok(slot) => slot.count,
                Err(why) => return (vec![], Out::Refused(Reply::internal(why))),
            };
            if Some(k) == was.as_ref() {
                let left = booked.saturating_sub(1);
                changes[index] = Change::Write(Write {
                    state: (left > 0).then(|| counter_state(&SlotBookings { count: left })),
                    ..Write::default()
                });
            } else if Some(k) == will.as_ref() {
                let capacity = s
                    .next
                    .as_ref()
                    .and_then(|i| settings.segment(&i.tenant, i.segment.as_deref()?))
                    .map(|seg| u64::from(seg.slot_capacity))
                    .unwrap_or(0);
                match model::book_slot(booked, capacity) {
                    Ok(count) => {
                        changes[index] =
                            Change::Write(Write::state(counter_state(&SlotBookings { count })))
                    }
                    Err(reply) => return (vec![], Out::Refused(reply)),
                }
            }
        }
    }
    // An interaction nobody reports on ends after `idle_expiry_s` (see the idle timer); a
    // callback waiting for its time is not idle.
    let mut timers = s.timers;
    let mut next = s.next;
    match next.as_mut() {
        Some(i) if i.status != Status::CallbackPending => {
            i.touched = Some(format_time(now));
            timers.push(TimerChange::Set {
                name: IDLE_TIMER.into(),
                due: now + Duration::from_secs(settings.idle_expiry_s),
                payload: Value::Null,
            });
        }
        _ => timers.push(TimerChange::Cancel {
            name: IDLE_TIMER.into(),
        }),
    }
    changes[0] = Change::Write(Write {
        state: next.map(Interaction::into_state),
        attached: None,
        expires_at: None,
        events: s.events,
        timers,
        aliases: s.aliases,
    });
    (changes, Out::Done(s.reply))
}
