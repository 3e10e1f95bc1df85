//! Interactions through the core's transitions: one interaction, its PTK tenant's licence
//! counter and the appointment slots it leaves and takes, committed together.

use std::time::{Duration, SystemTime};

use ivrgate_adapter::{
    AliasChange, Change, Entity, EntityEvent, EntityKey, Gateway, RecordError, TimerChange,
    Transitioned, Write,
};
use serde_json::Value;

use crate::codes;
use crate::reply::Reply;
use crate::settings::{epoch_s, format_time, Settings};
use crate::state::{
    counter_state, read_counter, Interaction, LicenceCounter, SlotBookings, Status, Stored,
};

/// The timer that ends an interaction nobody reported on for `idle_expiry_s`.
pub const IDLE_TIMER: &str = "idle";

/// The entity kind of interactions (call-like: the adapter's own name).
pub const KIND: &str = "ptk";
/// A PTK tenant's licence counters.
pub const LICENCE: &str = "ptk.licence";
/// One appointment slot's bookings.
pub const SLOT: &str = "ptk.slot";
/// Alias namespaces.
pub const EXTERNAL: &str = "ptk.external";
pub const CLIENT: &str = "ptk.client";
pub const CONTACT: &str = "ptk.contact";

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

fn slot_key(tenant: &str, i: &Interaction) -> Option<EntityKey> {
    Some(EntityKey::new(
        tenant,
        SLOT,
        format!("{}/{}/{}", i.tenant, i.segment.as_deref()?, i.slot?),
    ))
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
    Retry,
    Refused(Reply),
    Done(Reply),
}

/// Runs `step` on interaction `id` in one transition with its PTK tenant's licence counter and
/// the slots it leaves and takes. `step` sees what is stored; it must be pure.
pub async fn run<F>(
    gw: &dyn Gateway,
    tenant: &str,
    settings: &Settings,
    ptk_tenant: &str,
    id: &str,
    now: SystemTime,
    mut step: F,
) -> Ran
where
    F: FnMut(&Stored) -> Result<Step, Reply> + Send,
{
    let ikey = key(tenant, id);
    for _ in 0..5 {
        // A dry run on what is stored now tells which slot entities the transition touches.
        // Only the slots are kept from it: what it read and built (the stored interaction,
        // the step's with the request's UserData and parameters) need not stay alive through
        // the transition.
        let (old_slot, new_slot) = {
            let stored = match gw.load(ikey.clone()).await {
                Ok(e) => e,
                Err(e) => return Ran::Refused(storage(&e)),
            };
            let current = read(stored.as_ref());
            drop(stored);
            let planned = match step(&current) {
                Ok(s) => s,
                Err(reply) => return Ran::Refused(reply),
            };
            let old_slot = current.live().and_then(|i| slot_key(tenant, i));
            let new_slot = if planned.keep {
                old_slot.clone()
            } else {
                planned.next.as_ref().and_then(|i| slot_key(tenant, i))
            };
            (old_slot, new_slot)
        };
        let lkey = EntityKey::new(tenant, LICENCE, ptk_tenant);
        let mut keys = vec![ikey.clone(), lkey];
        if let Some(k) = &old_slot {
            keys.push(k.clone());
        }
        if let Some(k) = new_slot.as_ref().filter(|k| Some(*k) != old_slot.as_ref()) {
            keys.push(k.clone());
        }
        let mut out = Out::Pending;
        let now_s = epoch_s(now);
        let mut f = |read_back: &[Option<Entity>]| -> Vec<Change> {
            let current = read(read_back.first().and_then(Option::as_ref));
            let s = match step(&current) {
                Ok(s) => s,
                Err(reply) => {
                    out = Out::Refused(reply);
                    return vec![];
                }
            };
            if s.keep {
                out = Out::Done(s.reply);
                return vec![];
            }
            let was = current.live().and_then(|i| slot_key(tenant, i));
            let will = s.next.as_ref().and_then(|i| slot_key(tenant, i));
            if was != old_slot || will != new_slot {
                out = Out::Retry;
                return vec![];
            }
            let mut changes = vec![Change::Keep; read_back.len()];
            // The licence counters.
            let mut licence =
                match read_counter::<LicenceCounter>(read_back.get(1).and_then(Option::as_ref)) {
                    Ok(l) => l,
                    Err(why) => {
                        out = Out::Refused(Reply::internal(why));
                        return vec![];
                    }
                };
            let mut licence_changed = false;
            if s.counts_request {
                if now_s >= licence.window_start + settings.licence_window_s {
                    licence.window_start = now_s;
                    licence.count = 0;
                }
                if settings
                    .licence_requests_per_window
                    .is_some_and(|max| licence.count >= max)
                {
                    out = Out::Refused(Reply::error(
                        codes::BANDWIDTH_EXCEEDED,
                        format!(
                            "more than {} requests in {} s",
                            settings.licence_requests_per_window.unwrap_or(0),
                            settings.licence_window_s
                        ),
                    ));
                    return vec![];
                }
                licence.count += 1;
                licence_changed = true;
            }
            let held = current.live().is_some_and(Interaction::holds_licence);
            let holds = s.next.as_ref().is_some_and(Interaction::holds_licence);
            // The interaction as read is not needed past here: a large UserData is not held
            // twice while the new state is built.
            drop(current);
            match (held, holds) {
                (false, true) => {
                    if settings.licences.is_some_and(|max| licence.live >= max) {
                        out = Out::Refused(Reply::error(
                            codes::LICENCE_UNAVAILABLE,
                            "every licence is in use",
                        ));
                        return vec![];
                    }
                    licence.live += 1;
                    licence_changed = true;
                }
                (true, false) => {
                    licence.live = licence.live.saturating_sub(1);
                    licence_changed = true;
                }
                _ => {}
            }
            if licence_changed {
                changes[1] = Change::Write(Write::state(counter_state(&licence)));
            }
            // The slots.
            if was != will {
                for (index, entity) in read_back.iter().enumerate().skip(2) {
                    let Some(k) = keys.get(index) else { continue };
                    let booked = match read_counter::<SlotBookings>(entity.as_ref()) {
                        Ok(slot) => slot.count,
                        Err(why) => {
                            out = Out::Refused(Reply::internal(why));
                            return vec![];
                        }
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
                        if booked >= capacity {
                            out = Out::Refused(Reply::error(
                                codes::TIME_FULL,
                                "the appointment slot is full",
                            ));
                            return vec![];
                        }
                        changes[index] =
                            Change::Write(Write::state(counter_state(&SlotBookings {
                                count: booked + 1,
                            })));
                    }
                }
            }
            // An interaction nobody reports on ends after `idle_expiry_s` (see the idle timer);
            // a callback waiting for its time is not idle.
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
            out = Out::Done(s.reply);
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
            Out::Retry | Out::Pending => continue,
        }
    }
    Ran::Refused(Reply::error(
        codes::RESOURCES_UNAVAILABLE,
        "the interaction kept changing; try again",
    ))
}
