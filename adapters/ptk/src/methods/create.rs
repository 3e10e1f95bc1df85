//! AddInteraction and CreateInteraction: new interactions, each a retry of an earlier one
//! when it names the same ClientId or ExternalTrackingId.

use super::*;
use crate::model::{AddArgs, CLIENT};

pub(super) async fn add_interaction(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let seg_name = cx
        .text("Segment")
        .ok_or_else(|| Reply::error(SEGMENT_REQUIRED, "Segment is required"))?;
    let seg = segment(cx, &ptk, seg_name, INVALID_SEGMENT)?;
    let contact = cx
        .text("Contact")
        .ok_or_else(|| Reply::error(CONTACT_REQUIRED, "Contact is required"))?;
    let contact = model::normalize_contact(Some(seg), contact).ok_or_else(|| {
        Reply::error(INVALID_CONTACT, "the contact fails phone number validation")
    })?;
    let args = AddArgs {
        at: cx.text("AppointmentTime").map(time).transpose()?,
        source_application: check_source_application(cx)?,
        client: cx.text("ClientId").map(str::to_owned),
        ptk,
        contact,
    };
    // Checked now, read again where the interaction is built: a large UserData is not held
    // through the segment lookup and the decision.
    user_data(cx)?;
    if let Some(original) = retried(cx, &args).await? {
        return Ok(original);
    }
    let state = segment_state(cx, seg).await?;
    mode_status(&state)?;
    accepts_callback(cx, seg, &state, args.at)?;
    tracing::debug!(
        tenant = %cx.tenant,
        ptk_tenant = %args.ptk,
        segment = %seg.name,
        contact = %ivrgate_adapter::mask_phone(&args.contact, cx.mask),
        "ptk callback accepted by the segment"
    );
    let ctx = cx.ctx();
    let slot = args.at.map(|at| {
        let start = crate::settings::slot_start(seg, at);
        store::slot_key(cx.tenant, &args.ptk, &seg.name, start)
    });
    let ran = create(cx, &args.ptk, slot, |id| {
        let data = user_data(cx)?.unwrap_or_default();
        Ok(model::add(&ctx, id, &args, seg, data))
    })
    .await;
    if let Ran::Taken { .. } | Ran::Refused(_) = ran {
        // A copy of this request (same ClientId) won a race meanwhile: its claims (client,
        // contact) refused ours, or it took the last licence or slot place. Answer its
        // interaction, as a retry after it would get.
        if let Some(original) = retried(cx, &args).await? {
            return Ok(original);
        }
    }
    Ok(finish(ran))
}

/// The answer to an AddInteraction whose ClientId a live interaction holds: that one.
async fn retried(cx: &Cx<'_>, args: &AddArgs) -> Result<Option<Reply>, Reply> {
    let Some(client) = &args.client else {
        return Ok(None);
    };
    let Some(original) = live_owner(cx, CLIENT, &format!("{}/{client}", args.ptk)).await? else {
        return Ok(None);
    };
    let data = model::interactions_xml(std::slice::from_ref(&original), false, false, cx.now);
    Ok(Some(Reply::ok().with_data(data).with_id(original.id)))
}

pub(super) async fn create_interaction(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let seg_name = cx
        .text("Segment")
        .ok_or_else(|| Reply::error(SEGMENT_REQUIRED, "Segment is required"))?;
    let seg = segment(cx, &ptk, seg_name, INVALID_SEGMENT)?;
    let ext = match cx.element("ExternalTrackingId") {
        Some(e) if !e.is_nil() && !e.value().is_empty() => {
            if !valid_external(e.value()) {
                return Err(Reply::error(
                    EXTERNAL_MISSING,
                    "the external tracking id is not valid",
                ));
            }
            Some(e.value().to_owned())
        }
        _ => None,
    };
    let app = check_source_application(cx)?;
    // Checked now, read again where the interaction is built: a large UserData is not held
    // through the segment lookup and the decision.
    user_data(cx)?;
    if let Some(ext) = &ext {
        match owner(cx, EXTERNAL, &format!("{ptk}/{ext}")).await? {
            Some((original, true)) => return Ok(Reply::ok().with_id(original)),
            Some((_, false)) => {
                return Err(Reply::error(
                    EXTERNAL_DUPLICATE,
                    "the external tracking id was used by an interaction that ended",
                ))
            }
            None => {}
        }
    }
    let state = segment_state(cx, seg).await?;
    if state.operation_mode == "Shutdown" {
        return Err(Reply::error(
            MODE_REFUSED,
            "the segment is in Shutdown mode",
        ));
    }
    let ctx = cx.ctx();
    let ran = create(cx, &ptk, None, |id| {
        let data = user_data(cx)?.unwrap_or_default();
        Ok(model::create(
            &ctx,
            id,
            &ptk,
            seg,
            ext.as_deref(),
            app.clone(),
            data,
        ))
    })
    .await;
    if let (Ran::Taken { .. } | Ran::Refused(_), Some(ext)) = (&ran, &ext) {
        // A copy of this request (same ExternalTrackingId) won a race meanwhile: its claim
        // refused ours, or it took the last licence.
        if let Some((original, true)) = owner(cx, EXTERNAL, &format!("{ptk}/{ext}")).await? {
            return Ok(Reply::ok().with_id(original));
        }
    }
    Ok(unable_to_create(ran))
}

/// CreateInteraction's (and InteractionQueued's) answer: a storage refusal is 109010
/// UnableToCreateInteraction, its documented "try again".
pub(super) fn unable_to_create(ran: Ran) -> Reply {
    match ran {
        Ran::Refused(r) if r.code == RESOURCES_UNAVAILABLE => {
            Reply::error(UNABLE_TO_CREATE, r.message)
        }
        other => finish(other),
    }
}
