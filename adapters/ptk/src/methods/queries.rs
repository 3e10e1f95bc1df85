//! The queries: interactions (FindInteraction, GetInteractionData), appointment times,
//! segments and their state and variables, the platform (GetStatus, GetSystemVariables,
//! GetVersion) and ValidateContact. None writes anything.

use std::time::Duration;

use ivrgate_adapter::EntityKey;

use super::*;
use crate::settings::{check_appointment, format_time};
use crate::soap::Writer;
use crate::state::{read_counter, LicenceCounter, SlotBookings};

pub(super) async fn find_interaction(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let seg_filter = match cx.text("Segment") {
        Some(name) => Some(segment(cx, &ptk, name, QUEUE_NOT_FOUND)?.name.clone()),
        None => None,
    };
    let in_segment = |i: &Interaction| seg_filter.is_none() || i.segment == seg_filter;
    if let Some(id) = cx.text("InteractionId") {
        if !interaction::valid_id(id) {
            return Err(Reply::error(BAD_SEARCH, "the interaction id is not valid"));
        }
        let found = load_live(cx, &ptk, id)
            .await?
            .filter(in_segment)
            .ok_or_else(|| Reply::error(NOT_FOUND, "no such interaction"))?;
        return Ok(Reply::ok().with_data(model::interactions_xml(&[found], true, false, cx.now)));
    }
    let Some(contact) = cx.text("Contact") else {
        return Err(Reply::error(
            BAD_SEARCH,
            "give an InteractionId or a Contact",
        ));
    };
    let contact = model::normalize_contact(None, contact)
        .ok_or_else(|| Reply::error(BAD_SEARCH, "the contact is not a phone number"))?;
    let all = cx
        .gw
        .list(cx.tenant, store::KIND, 10_000)
        .await
        .map_err(|e| store::storage(&e))?;
    let mut found = Vec::new();
    for e in &all {
        match store::read(Some(e)) {
            Stored::Live(i)
                if i.tenant == ptk
                    && i.contact.as_deref() == Some(contact.as_str())
                    && in_segment(&i) =>
            {
                found.push(i)
            }
            Stored::Unreadable(why) => return Err(model::unreadable(&why)),
            _ => {}
        }
    }
    if found.is_empty() {
        return Err(Reply::error(
            CONTACT_NOT_FOUND,
            "no interaction for this contact",
        ));
    }
    Ok(Reply::ok().with_data(model::interactions_xml(&found, true, false, cx.now)))
}

pub(super) async fn get_interaction_data(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let id = interaction_id(cx, INVALID_ID, INVALID_ID)?;
    let found = load_live(cx, &ptk, &id)
        .await?
        .ok_or_else(|| Reply::error(NOT_FOUND, "no such interaction"))?;
    Ok(Reply::ok()
        .with_data(model::interactions_xml(&[found], true, true, cx.now))
        .with_id(id))
}

pub(super) async fn next_appointments(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let seg = match cx.text("Segment") {
        Some(name) => segment(cx, &ptk, name, QUEUE_ID_REQUIRED)?,
        None => only_segment(cx, &ptk, QUEUE_ID_REQUIRED, "name the Segment")?,
    };
    let from = match cx.text("AppointmentTime") {
        Some(t) => time(t)?,
        None => cx.now,
    };
    let wanted = cx
        .text("NumberOfAppointments")
        .or_else(|| cx.text("NumberofAppointments"))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(4)
        .clamp(1, 50);
    let state = segment_state(cx, seg).await?;
    let model = seg.model().map_err(|why| Reply::error(UNEXPECTED, why))?;
    let len = u64::from(seg.slot_minutes) * 60;
    let earliest = from.max(cx.now + Duration::from_secs(state.ewt_s));
    let mut start = crate::settings::epoch_s(earliest).div_ceil(len) * len;
    let mut found = Vec::new();
    let mut checked = 0;
    while found.len() < wanted && checked < 20_000 {
        checked += 1;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
        start += len;
        if check_appointment(seg, &model, &state, cx.now, at).is_err() {
            if at > cx.now + Duration::from_secs(u64::from(seg.appointment_days) * 86_400)
                || !seg.appointments
                || state.operation_mode == "Shutdown"
            {
                break;
            }
            continue;
        }
        let key = store::slot_key(cx.tenant, &ptk, &seg.name, start - len);
        let slot = cx.gw.load(key).await.map_err(|e| store::storage(&e))?;
        let booked = read_counter::<SlotBookings>(slot.as_ref())
            .map_err(Reply::internal)?
            .count;
        if booked < u64::from(seg.slot_capacity) {
            found.push(format_time(at));
        }
    }
    if found.is_empty() {
        return Err(Reply::error(SLOTS_NOT_FOUND, "no appointment slot is free"));
    }
    let mut w = Writer::default();
    w.open("AppointmentTimes");
    for at in &found {
        w.leaf("AppointmentTime", at);
    }
    w.close("AppointmentTimes");
    Ok(Reply::ok().with_data(w.out))
}

/// The PTK tenants named by `Tenant` (all when absent), or `unknown`.
fn tenants(cx: &Cx<'_>, unknown: u32) -> Result<Vec<String>, Reply> {
    match cx.text("Tenant") {
        Some(name) => match cx.settings.tenant(name) {
            Some(t) => Ok(vec![t.to_owned()]),
            None => Err(Reply::error(unknown, format!("unknown tenant {name:?}"))),
        },
        None => Ok(cx.settings.tenants.clone()),
    }
}

pub(super) fn get_segments(cx: &Cx<'_>) -> Answered {
    let tenants = tenants(cx, INVALID_TENANT)?;
    let mut w = Writer::default();
    w.open("Segments");
    let mut n = 0;
    for seg in cx
        .settings
        .segments
        .iter()
        .filter(|s| tenants.contains(&s.tenant))
    {
        w.empty_attrs(
            "Segment",
            &[
                ("Name", &seg.name),
                ("Queue", seg.queue()),
                ("Tenant", &seg.tenant),
            ],
        );
        n += 1;
    }
    w.close("Segments");
    if n == 0 {
        return Err(Reply::error(
            SEGMENTS_NOT_FOUND,
            "no segments are configured",
        ));
    }
    Ok(Reply::ok().with_data(w.out))
}

pub(super) async fn get_segment_state(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let name = cx
        .text("Segment")
        .ok_or_else(|| Reply::error(INVALID_SEGMENT, "Segment is required"))?;
    let seg = segment(cx, &ptk, name, INVALID_SEGMENT)?;
    if let Some(max) = cx.settings.licences {
        let licence = cx
            .gw
            .load(EntityKey::new(cx.tenant, store::LICENCE, &ptk))
            .await
            .map_err(|e| store::storage(&e))?;
        let live = read_counter::<LicenceCounter>(licence.as_ref())
            .map_err(Reply::internal)?
            .live;
        if live >= max {
            return Err(Reply::error(LICENCE_UNAVAILABLE, "every licence is in use"));
        }
    }
    let state = segment_state(cx, seg).await?;
    let mut w = Writer::default();
    w.open("Segments")
        .open_attrs(
            "Segment",
            &[
                ("Tenant", &seg.tenant),
                ("Queue", seg.queue()),
                ("Name", &seg.name),
            ],
        )
        .open("StateData");
    for (name, value) in [
        ("OperationMode", state.operation_mode.clone()),
        ("EWT", state.ewt_s.to_string()),
        ("OfferTreatment", state.offer_treatment.to_string()),
        ("ModeStatus", state.mode_status.clone()),
        (
            "RecommendedDestination",
            state.recommended_destination.clone(),
        ),
        ("QueueMode", state.queue_mode.clone()),
    ] {
        w.empty_attrs("StateData", &[("Name", name), ("Value", &value)]);
    }
    w.close("StateData").close("Segment").close("Segments");
    Ok(Reply::ok().with_data(w.out))
}

pub(super) fn get_segment_variables(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let segments: Vec<&Segment> = match cx.text("Segment") {
        Some(name) => vec![segment(cx, &ptk, name, INVALID_SEGMENT)?],
        None => cx.settings.segments_of(&ptk).collect(),
    };
    let wanted: Vec<String> = cx
        .params
        .child("Options")
        .map(|o| {
            o.all("Variable")
                .map(|v| v.value().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut w = Writer::default();
    w.open("Segments");
    for seg in segments {
        w.open_attrs(
            "Segment",
            &[
                ("Name", &seg.name),
                ("Queue", seg.queue()),
                ("Tenant", &seg.tenant),
            ],
        )
        .open("Variables");
        for (name, value) in crate::settings::variables(seg) {
            if wanted.is_empty() || wanted.iter().any(|v| v.eq_ignore_ascii_case(&name)) {
                w.empty_attrs("Variable", &[("Name", &name), ("Value", &value)]);
            }
        }
        w.close("Variables").close("Segment");
    }
    w.close("Segments");
    Ok(Reply::ok().with_data(w.out))
}

pub(super) async fn get_status(cx: &Cx<'_>) -> Answered {
    let tenants = tenants(cx, TENANTS_NOT_FOUND)?;
    let Some(first) = tenants.first() else {
        return Err(Reply::error(TENANTS_NOT_FOUND, "no tenants are configured"));
    };
    // The platform is available when its store answers.
    let probe = EntityKey::new(cx.tenant, store::LICENCE, first);
    if let Err(e) = cx.gw.load(probe).await {
        return Err(Reply::error(PLATFORM_UNAVAILABLE, e.to_string()));
    }
    let mut w = Writer::default();
    w.open("Tenants");
    for t in &tenants {
        w.leaf("Tenant", t);
    }
    w.close("Tenants");
    Ok(Reply::code(PLATFORM_AVAILABLE).with_data(w.out))
}

pub(super) fn get_system_variables(cx: &Cx<'_>) -> Answered {
    tenant(cx)?;
    let mut w = Writer::default();
    for (name, value) in &cx.settings.system_variables {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        w.empty_attrs("Variable", &[("Name", name), ("Value", &value)]);
    }
    Ok(Reply::ok().with_data(w.out))
}

pub(super) fn get_version(cx: &Cx<'_>) -> Reply {
    let mut w = Writer::default();
    w.leaf("PlatformToolkitVersion", &cx.settings.version);
    Reply::ok().with_data(w.out)
}

pub(super) fn validate_contact(cx: &Cx<'_>) -> Answered {
    let ptk = tenant(cx)?;
    let contact = cx
        .text("Contact")
        .ok_or_else(|| Reply::error(CONTACT_REQUIRED, "Contact is required"))?;
    let seg = match cx.text("Segment") {
        Some(name) => segment(cx, &ptk, name, INVALID_SEGMENT)?,
        None => only_segment(
            cx,
            &ptk,
            SEGMENT_REQUIRED,
            "the tenant has several segments: name one",
        )?,
    };
    model::normalize_contact(Some(seg), contact)
        .map(|_| Reply::ok())
        .ok_or_else(|| Reply::error(INVALID_CONTACT, "the contact fails phone number validation"))
}
