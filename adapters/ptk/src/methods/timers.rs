//! The platform's own actor: callbacks falling due, idle interactions expiring.

use ivrgate_adapter::{Gateway, TimerFired};

use super::*;
use crate::model::{DUE_TIMER, IDLE_TIMER};
use crate::settings::Settings;

/// A callback's due timer or an interaction's idle timer (see [`model::fall_due`] and
/// [`model::expire_idle`]). A state that does not read fails the timer, which runs again
/// after its lease; the interaction is left as it is.
pub(crate) async fn on_timer(gw: &dyn Gateway, timer: TimerFired) -> Result<(), String> {
    let due = match timer.name.as_str() {
        DUE_TIMER => Some(
            timer
                .payload
                .get("due")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ),
        IDLE_TIMER => None,
        _ => return Ok(()),
    };
    let tenant = &timer.entity.tenant;
    let Some(settings) = ivrgate_adapter::settings_of::<Settings>(gw, tenant, crate::VENDOR) else {
        if due.is_some() {
            tracing::warn!(tenant = %tenant, interaction_id = %timer.entity.id, "ptk timer for a tenant without PTK settings; dropped");
        }
        return Ok(());
    };
    // Only its PTK tenant is wanted from the interaction here: the transition reads it again,
    // so neither the stored entity nor the interaction is held through it.
    let Some(ptk) = stored_tenant(gw, &timer).await? else {
        return Ok(());
    };
    let ctx = Ctx {
        now: gw.now(),
        method: "timer",
        settings: &settings,
        params: None,
    };
    let id = &timer.entity.id;
    let ran = store::run(
        gw,
        tenant,
        &settings,
        &ptk,
        id,
        ctx.now,
        (None, None),
        |stored| match &due {
            Some(due) => model::fall_due(&ctx, stored, due),
            None => model::expire_idle(&ctx, stored),
        },
    )
    .await;
    let what = if due.is_some() {
        "callback.due"
    } else {
        "idle expiry"
    };
    match ran {
        Ran::Done { .. } => {
            match &due {
                Some(due) => {
                    tracing::info!(tenant = %tenant, ptk_tenant = %ptk, interaction_id = %id, due = %due, "ptk callback due")
                }
                None => {
                    tracing::info!(tenant = %tenant, ptk_tenant = %ptk, interaction_id = %id, "ptk interaction idle; checked for expiry")
                }
            }
            Ok(())
        }
        Ran::Refused(r) => Err(format!("{what} not stored: {} {}", r.code, r.message)),
        Ran::Taken { namespace } => Err(format!("alias {namespace} taken")),
    }
}

/// The PTK tenant of the timer's interaction, `None` when it is no longer live.
async fn stored_tenant(gw: &dyn Gateway, timer: &TimerFired) -> Result<Option<String>, String> {
    let stored = gw
        .load(timer.entity.clone())
        .await
        .map_err(|e| e.to_string())?;
    match store::read(stored.as_ref()) {
        Stored::Live(i) => Ok(Some(i.tenant)),
        Stored::Absent | Stored::Ended => Ok(None),
        Stored::Unreadable(why) => Err(format!(
            "the stored state of interaction {} does not read; left as it is: {why}",
            timer.entity.id
        )),
    }
}
