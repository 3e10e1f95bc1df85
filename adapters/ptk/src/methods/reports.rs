//! The VXML Interaction Server's state reports (`Interaction*`). Never refused for rate or
//! licence reasons; a report the interaction's status does not allow gets the method's code.

use super::*;
use crate::wsdl;

pub(super) async fn cancelled(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let valid = wsdl::CANCELLED_BY.values;
    let by = cx
        .text("CancelledBy")
        .ok_or_else(|| Reply::error(CANCELLED_BY_REQUIRED, "CancelledBy is required"))?;
    let by = valid
        .iter()
        .find(|c| c.eq_ignore_ascii_case(by))
        .ok_or_else(|| {
            Reply::error(
                CANCELLED_BY_REQUIRED,
                format!("CancelledBy must be one of {}", valid.join(", ")),
            )
        })?;
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, Some(CANNOT_CANCEL), |i| {
        model::cancelled(&ctx, i, by)
    })
    .await
}

pub(super) async fn dequeued(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let reason = cx
        .text("Reason")
        .ok_or_else(|| Reply::error(DEQUEUE_REASON_MISSING, "Reason is required"))?;
    let reason = wsdl::DEQUEUE_REASONS
        .values
        .iter()
        .find(|v| v.eq_ignore_ascii_case(reason))
        .ok_or_else(|| {
            Reply::error(
                DEQUEUE_REASON_INVALID,
                "Reason must be AgentAnswered or Abandoned",
            )
        })?;
    let id = match (cx.text("InteractionId"), cx.text("ExternalTrackingId")) {
        (Some(id), _) => id.to_owned(),
        (None, Some(ext)) => owner(cx, EXTERNAL, &format!("{ptk}/{ext}"))
            .await?
            .map(|(id, _)| id)
            .ok_or_else(|| {
                Reply::error(NOT_FOUND, "no interaction has this external tracking id")
            })?,
        (None, None) => {
            return Err(Reply::error(
                ID_OR_EXTERNAL_REQUIRED,
                "InteractionId or ExternalTrackingId is required",
            ))
        }
    };
    if !interaction::valid_id(&id) {
        return Err(Reply::error(NOT_FOUND, "no such interaction"));
    }
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, Some(STATE_PREVENTS), |i| {
        model::dequeued(&ctx, i, reason)
    })
    .await
}

pub(super) async fn disconnected_by_application(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let data = data_name(cx, false)?;
    let valid = wsdl::APPLICATION_DISCONNECT_REASONS.values;
    let reason = enumerated(cx, "Reason", valid, None)?;
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, None, |i| {
        Ok(model::disconnected_by_application(&ctx, i, reason, &data))
    })
    .await
}

pub(super) async fn disconnected_by_caller(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let valid = wsdl::CALLER_DISCONNECT_REASONS.values;
    let reason = enumerated(cx, "Reason", valid, None)?;
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, Some(CANNOT_DISCONNECT), |i| {
        model::disconnected_by_caller(&ctx, i, reason)
    })
    .await
}

pub(super) async fn attempt_failed(cx: &Cx<'_>) -> Answered {
    if cx
        .params
        .children
        .iter()
        .all(|c| c.value().is_empty() && c.children.is_empty())
    {
        return Err(Reply::error(DATA_REQUIRED, "the request carries no data"));
    }
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let valid = wsdl::ATTEMPT_REASONS.values;
    let reason = enumerated(cx, "Reason", valid, Some(REASON_REQUIRED))?;
    let data = data_name(cx, false)?;
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, Some(STATE_PREVENTS), |i| {
        model::attempt_failed(&ctx, i, reason, &data)
    })
    .await
}

pub(super) async fn outbound_connected(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, Some(STATE_PREVENTS), |i| {
        model::outbound_connected(&ctx, i)
    })
    .await
}

pub(super) async fn queued(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let given_segment = match cx.text("Segment") {
        Some(name) => Some(segment(cx, &ptk, name, INVALID_SEGMENT)?),
        None => None,
    };
    let ext = cx.text("ExternalTrackingId");
    if ext.is_some_and(|ext| !valid_external(ext)) {
        return Err(Reply::error(
            EXTERNAL_MISSING,
            "the external tracking id is not valid",
        ));
    }
    let skill = cx
        .text("SkillId")
        .ok_or_else(|| Reply::error(SKILL_NOT_FOUND, "SkillId is required"))?;
    let id = match (cx.text("InteractionId"), ext) {
        (Some(id), _) if !interaction::valid_id(id) => {
            return Err(Reply::error(NOT_FOUND, "the interaction id is not valid"))
        }
        (Some(id), _) => Some(id.to_owned()),
        (None, Some(ext)) => owner(cx, EXTERNAL, &format!("{ptk}/{ext}"))
            .await?
            .map(|(id, _)| id),
        (None, None) => {
            return Err(Reply::error(
                EXTERNAL_MISSING,
                "InteractionId or ExternalTrackingId is required",
            ))
        }
    };
    let existing = match &id {
        Some(id) => cx
            .gw
            .load(store::key(cx.tenant, id))
            .await
            .map_err(|e| store::storage(&e))?,
        None => None,
    };
    let exists = existing.is_some();
    let stored_segment = store::read(existing.as_ref())
        .into_live()
        .and_then(|i| i.segment);
    drop(existing);
    let seg = match (given_segment, stored_segment) {
        (Some(s), _) => Some(s),
        (None, Some(name)) => Some(cx.settings.segment(&ptk, &name).ok_or_else(|| {
            Reply::error(
                QUEUE_NOT_FOUND,
                format!("segment {name} is no longer configured"),
            )
        })?),
        (None, None) => None,
    };
    if let Some(seg) = seg {
        if !seg.skills.is_empty() && !seg.skills.iter().any(|s| s.eq_ignore_ascii_case(skill)) {
            return Err(Reply::error(
                SKILL_NOT_FOUND,
                format!("skill {skill} is not a skill of segment {}", seg.name),
            ));
        }
    }
    let ctx = cx.ctx();
    if exists {
        let id = id.unwrap_or_default();
        return on_live(cx, &ptk, &id, Some(STATE_PREVENTS), |i| {
            model::queued(&ctx, i, seg, ext, skill)
        })
        .await;
    }
    // A new interaction arriving in the holding queue.
    if let Some(seg) = seg {
        let state = segment_state(cx, seg).await?;
        if state.operation_mode == "Shutdown" {
            return Err(Reply::error(
                MODE_REFUSED,
                "the segment is in Shutdown mode",
            ));
        }
    }
    let build = |new_id: &str| model::queued_new(&ctx, new_id, &ptk, seg, ext, skill);
    let ran = match id {
        Some(given) => {
            on_interaction(cx, &ptk, &given, |stored| {
                if !matches!(stored, Stored::Absent) {
                    return Err(Reply::error(
                        STATE_PREVENTS,
                        "the interaction changed meanwhile; retry",
                    ));
                }
                Ok(build(&given))
            })
            .await
        }
        None => create(cx, &ptk, None, |new_id| Ok(build(new_id))).await,
    };
    if let (Ran::Taken { .. }, Some(ext)) = (&ran, ext) {
        // The same report arrived twice at once: the first one created it.
        if let Ok(Some((original, true))) = owner(cx, EXTERNAL, &format!("{ptk}/{ext}")).await {
            return Ok(Reply::code(COMPLETED_WITH_ID).with_id(original));
        }
    }
    Ok(create::unable_to_create(ran))
}

/// A parsed ContactURI: `voice://NUMBER/` (ASAP) or `voice://NUMBER/yyyy-mm-ddTHH:mm:ssZ`.
fn contact_uri(uri: &str) -> Result<(&str, Option<&str>), Reply> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(Reply::error(
            BAD_CONTACT_URI,
            "ContactURI is scheme://number/[time]",
        ));
    };
    if !scheme.eq_ignore_ascii_case("voice") {
        return Err(Reply::error(
            BAD_CALL_TYPE,
            format!("call type {scheme:?} is not voice"),
        ));
    }
    let (number, time) = match rest.split_once('/') {
        Some((n, t)) => (n, t.trim_end_matches('/')),
        None => (rest, ""),
    };
    if number.trim().is_empty() {
        return Err(Reply::error(BAD_CONTACT_URI, "ContactURI has no number"));
    }
    Ok((number, (!time.is_empty()).then_some(time)))
}

pub(super) async fn request_contact(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, INVALID_ID)?;
    let uri = cx
        .text("ContactURI")
        .ok_or_else(|| Reply::error(BAD_CONTACT_URI, "ContactURI is required"))?;
    let (number, at_text) = contact_uri(uri)?;
    // Read first for the segment whose live state (perhaps a decision) accepts the callback.
    let current = load_live(cx, &ptk, &id)
        .await?
        .ok_or_else(|| Reply::error(NOT_FOUND, "no such interaction"))?;
    let seg = match (cx.text("Segment"), current.segment.as_deref()) {
        (Some(name), _) | (None, Some(name)) => {
            cx.settings.segment(&ptk, name).ok_or_else(|| {
                Reply::error(QUEUE_NOT_FOUND, format!("segment {name} is not configured"))
            })?
        }
        (None, None) => {
            return Err(Reply::error(
                SEGMENT_NOT_SET,
                "the interaction has no segment; name one",
            ))
        }
    };
    let contact = model::normalize_contact(Some(seg), number).ok_or_else(|| {
        Reply::error(INVALID_CONTACT, "the contact fails phone number validation")
    })?;
    let at = at_text.map(time).transpose()?;
    let slots = booking(cx, &current, seg, at);
    drop(current);
    let state = segment_state(cx, seg).await?;
    mode_status(&state)?;
    accepts_callback(cx, seg, &state, at)?;
    let ctx = cx.ctx();
    let ran = on_slots(cx, &ptk, &id, slots, |stored| {
        let i = model::live(stored, &ptk, None)?;
        model::request_contact(&ctx, i, seg, &contact, at, uri)
    })
    .await;
    Ok(finish(ran))
}

pub(super) async fn send_to_queue(cx: &Cx<'_>) -> Answered {
    let (ptk, id) = report_target(cx, NOT_FOUND)?;
    let data = data_name(cx, true)?;
    let reason = enumerated(cx, "Reason", wsdl::SEND_REASONS.values, None)?;
    let ctx = cx.ctx();
    on_live(cx, &ptk, &id, Some(STATE_PREVENTS), |i| {
        model::send_to_queue(&ctx, i, reason, &data)
    })
    .await
}
