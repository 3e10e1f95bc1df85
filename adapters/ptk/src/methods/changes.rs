//! Changes to an interaction: ModifyInteraction, RemoveInteraction, UpdateUserData,
//! UpdateInteractionData and AssociateInteractionWithExternalTrackingID.

use super::*;
use crate::model::Update;
use crate::settings::check_appointment;
use crate::state::Status;
use crate::wsdl;

/// The appointment time asked for (108010 when missing, 108004 when not a time).
fn appointment_time(text: Option<&str>) -> Result<SystemTime, Reply> {
    time(text.ok_or_else(|| Reply::error(APPOINTMENT_REQUIRED, "AppointmentTime is required"))?)
}

/// The segment a pending callback is re-booked in at `at`, checked against its live state.
async fn appointment<'c>(
    cx: &'c Cx<'_>,
    current: &Interaction,
    at: SystemTime,
) -> Result<&'c Segment, Reply> {
    if current.status != Status::CallbackPending {
        return Err(Reply::error(
            STATE_PREVENTS_APPOINTMENT,
            format!(
                "a {} interaction is already active",
                current.status.as_str()
            ),
        ));
    }
    let seg = current
        .segment
        .as_deref()
        .and_then(|s| cx.settings.segment(&current.tenant, s))
        .ok_or_else(|| {
            Reply::error(
                QUEUE_NOT_FOUND,
                "the interaction's segment is not configured",
            )
        })?;
    let state = segment_state(cx, seg).await?;
    let model = seg.model().map_err(|why| Reply::error(UNEXPECTED, why))?;
    match check_appointment(seg, &model, &state, cx.now, at) {
        Ok(()) => Ok(seg),
        // ModifyInteraction and UpdateInteractionData list no 107007.
        Err(APPOINTMENTS_DISABLED) => Err(Reply::error(
            APPOINTMENT_ERROR,
            "scheduling is not enabled for the segment",
        )),
        Err(code) => Err(Reply::error(
            code,
            "appointment time refused by the segment",
        )),
    }
}

/// ModifyInteraction's `Action`: which field the request changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    AppointmentTime,
    Result,
    ClientId,
    /// `DataName` or `DataValue`: one UserData value, named by DataName.
    Data,
}

impl Action {
    /// The action named (case-insensitively), or 108030 naming the valid ones.
    fn parse(text: Option<&str>) -> Result<Action, Reply> {
        let valid = wsdl::MODIFY_ACTIONS.values;
        let named = text.and_then(|a| valid.iter().find(|x| x.eq_ignore_ascii_case(a)));
        match named.copied() {
            Some("AppointmentTime") => Ok(Action::AppointmentTime),
            Some("Result") => Ok(Action::Result),
            Some("ClientId") => Ok(Action::ClientId),
            Some(_) => Ok(Action::Data),
            None => Err(Reply::error(
                BAD_ACTION,
                format!("Action must be one of {}", valid.join(", ")),
            )),
        }
    }
}

pub(super) async fn modify(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let action = Action::parse(cx.text("Action"))?;
    let ctx = cx.ctx();
    match action {
        Action::AppointmentTime => {
            let at = appointment_time(cx.text("AppointmentTime"))?;
            // Read first for the segment whose live state (perhaps a decision) takes it.
            let current = load_live(cx, &ptk, &id)
                .await?
                .ok_or_else(|| Reply::error(NOT_FOUND, "no such interaction"))?;
            let seg = appointment(cx, &current, at).await?;
            let slots = booking(cx, &current, seg, Some(at));
            drop(current);
            let ran = on_slots(cx, &ptk, &id, slots, |stored| {
                model::rebook(&ctx, model::live(stored, &ptk, None)?, seg, at)
            })
            .await;
            Ok(finish(ran))
        }
        Action::Result => {
            let (result, kind) = cx
                .text("Result")
                .and_then(|r| {
                    cx.settings
                        .results
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(r))
                })
                .ok_or_else(|| {
                    Reply::error(BAD_RESULT, "Result is not a configured result code")
                })?;
            on_live(cx, &ptk, &id, None, |i| {
                Ok(model::complete(&ctx, i, result, kind))
            })
            .await
        }
        Action::ClientId => {
            let client = cx
                .text("ClientId")
                .ok_or_else(|| Reply::error(DATA_VALUE_REQUIRED, "Options/ClientId is required"))?;
            let ran = on_interaction(cx, &ptk, &id, |stored| {
                let i = model::live(stored, &ptk, None)?;
                Ok(model::set_client_id(&ctx, i, client))
            })
            .await;
            match ran {
                Ran::Taken { .. } => Err(Reply::error(
                    DATA_VALUE_REQUIRED,
                    "the ClientId belongs to another interaction",
                )),
                other => Ok(finish(other)),
            }
        }
        Action::Data => {
            if cx.element("DataName").is_none_or(|e| e.value().is_empty()) {
                return Err(Reply::error(BAD_DATA_NAME, "Options/DataName is required"));
            }
            let Some((name, value)) = data_name(cx, true)? else {
                return Err(Reply::error(BAD_DATA_NAME, "Options/DataName is required"));
            };
            on_live(cx, &ptk, &id, None, |i| {
                Ok(model::set_data_value(&ctx, i, &name, &value))
            })
            .await
        }
    }
}

pub(super) async fn remove(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, INVALID_ID)?;
    let reason = cx
        .text("Reason")
        .ok_or_else(|| Reply::error(REASON_REQUIRED, "Reason is required"))?;
    let squashed: String = reason
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let reason = match squashed.as_str() {
        "webcanceled" | "webcancelled" => "Web Canceled",
        "admincanceled" | "admincancelled" => "Admin Canceled",
        _ => {
            return Err(Reply::error(
                BAD_REASON,
                "Reason must be Web Canceled or Admin Canceled",
            ))
        }
    };
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, None, |i| Ok(model::remove(&ctx, i, reason))).await
}

pub(super) async fn update_user_data(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let data = user_data(cx)?
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Reply::error(USERDATA_REQUIRED, "UserData is required"))?;
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, None, |i| {
        Ok(model::update_user_data(&ctx, i, &data))
    })
    .await
}

pub(super) async fn associate(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, INVALID_ID)?;
    let ext = cx
        .text("ExternalTrackingId")
        .filter(|e| valid_external(e))
        .ok_or_else(|| {
            Reply::error(
                EXTERNAL_MISSING,
                "the external tracking id is missing or invalid",
            )
        })?;
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, None, |i| {
        Ok(model::set_external(&ctx, i, ext))
    })
    .await
}

pub(super) async fn update_interaction_data(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let holder = cx.element("InteractionData").unwrap_or(cx.params);
    let pairs: Vec<(String, Option<&str>)> = holder
        .children
        .iter()
        .filter(|c| {
            ["KeyValuePair", "InteractionKeyValuePair"]
                .iter()
                .any(|n| c.name.eq_ignore_ascii_case(n))
        })
        .map(|c| {
            (
                c.child("Key")
                    .map(|k| k.value().to_owned())
                    .unwrap_or_default(),
                c.child("Value")
                    .filter(|v| !v.is_nil() && !v.value().is_empty())
                    .map(|v| v.value()),
            )
        })
        .collect();
    if pairs.is_empty() {
        return Err(Reply::error(
            DATA_VALUE_REQUIRED,
            "no KeyValuePair was given",
        ));
    }
    // Read first: an appointment is checked against its segment's live state.
    let current = load_live(cx, &ptk, &id)
        .await?
        .ok_or_else(|| Reply::error(NOT_FOUND, "no such interaction"))?;
    let mut updates = Vec::with_capacity(pairs.len());
    for (key, value) in &pairs {
        let update = match key.to_ascii_lowercase().as_str() {
            "contact" | "phonenumber" => match value {
                None => Update::Refused(Reply::error(CONTACT_REQUIRED, "Contact needs a value")),
                Some(v) => Update::Contact((*v).to_owned()),
            },
            "appointmenttime" => match appointment_time(*value) {
                Err(reply) => Update::Refused(reply),
                Ok(at) => match appointment(cx, &current, at).await {
                    Ok(seg) => Update::Appointment(at, seg),
                    Err(reply) => Update::Refused(reply),
                },
            },
            "externaltrackingid" => match value.filter(|v| valid_external(v)) {
                None => Update::Refused(Reply::error(
                    EXTERNAL_MISSING,
                    "the external tracking id is missing or invalid",
                )),
                Some(v) => Update::External(v.to_owned()),
            },
            _ if value.is_none() => Update::Refused(Reply::error(
                DATA_VALUE_REQUIRED,
                format!("{key} needs a value"),
            )),
            _ => Update::Refused(Reply::error(
                KEY_NOT_SUPPORTED,
                format!("{key:?} cannot be updated"),
            )),
        };
        updates.push(update);
    }
    let booked = updates.iter().rev().find_map(|u| match u {
        Update::Appointment(at, seg) => Some((*at, *seg)),
        _ => None,
    });
    let slots = match booked {
        Some((at, seg)) => booking(cx, &current, seg, Some(at)),
        None => {
            let held = store::slot_of(cx.tenant, &current);
            (held.clone(), held)
        }
    };
    drop(current);
    // One transition for every value. A claim another interaction holds (a contact pending
    // in the queue, an external tracking id) refuses the whole of it: that value is marked
    // refused and the rest run again.
    let ctx = cx.ctx();
    loop {
        let ran = on_slots(cx, &ptk, &id, slots.clone(), |stored| {
            let i = model::live(stored, &ptk, None)?;
            model::update_interaction_data(&ctx, i, &updates)
        })
        .await;
        let Ran::Taken { namespace } = ran else {
            return Ok(finish(ran));
        };
        let Some(claimer) = updates
            .iter_mut()
            .find(|u| u.claims() == Some(namespace.as_str()))
        else {
            return Ok(taken(&namespace));
        };
        *claimer = Update::Refused(taken(&namespace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modify_actions_are_read_once_into_their_enum() {
        assert_eq!(
            Action::parse(Some("appointmenttime")).map_err(|r| r.code),
            Ok(Action::AppointmentTime)
        );
        assert_eq!(
            Action::parse(Some("Result")).map_err(|r| r.code),
            Ok(Action::Result)
        );
        assert_eq!(
            Action::parse(Some("CLIENTID")).map_err(|r| r.code),
            Ok(Action::ClientId)
        );
        assert_eq!(
            Action::parse(Some("DataName")).map_err(|r| r.code),
            Ok(Action::Data)
        );
        assert_eq!(
            Action::parse(Some("DataValue")).map_err(|r| r.code),
            Ok(Action::Data)
        );
        for bad in [None, Some("Contact")] {
            let refused = Action::parse(bad)
                .map_err(|r| (r.code, r.message))
                .expect_err("bad");
            assert_eq!(refused.0, BAD_ACTION);
            assert!(
                refused.1.contains("AppointmentTime, Result, ClientId"),
                "{}",
                refused.1
            );
        }
    }
}
