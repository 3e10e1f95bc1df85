//! The methods of seed 004, each with its documented parameters and status codes.

use std::time::{Duration, SystemTime};

use ivrgate_adapter::{
    AliasChange, Answer, CallRef, DecisionRequest, EntityEvent, EntityKey, Gateway, TimerChange,
    TimerFired,
};
use serde_json::{json, Map, Value};

use crate::codes::*;
use crate::interaction;
use crate::reply::Reply;
use crate::settings::{
    check_appointment, format_time, parse_time, slot_start, Segment, SegmentState, Settings, MODES,
};
use crate::soap::{Element, Writer};
use crate::state::{
    read_counter, Interaction, InteractionType, Licence, LicenceCounter, SlotBookings, Status,
    Stored, UserData, UserValue,
};
use crate::store::{self, Ran, Step};
use crate::{wsdl, Cx, DECISION_POINTS};

/// The name of the timer that makes a callback fall due.
const DUE_TIMER: &str = "callback.due";
/// How long the ids of an ended interaction stay claimed (a late report still finds it; a
/// second interaction cannot take its external tracking id).
const ENDED_CLAIM: Duration = Duration::from_secs(24 * 3600);

pub(crate) async fn dispatch(cx: &Cx<'_>) -> Reply {
    match cx.method.name {
        "AddInteraction" => add_interaction(cx).await,
        "AssociateInteractionWithExternalTrackingID" => associate(cx).await,
        "CreateInteraction" => create_interaction(cx).await,
        "FindInteraction" => find_interaction(cx).await,
        "GetInteractionData" => get_interaction_data(cx).await,
        "GetNextAvailableAppointmentTime" => next_appointments(cx).await,
        "GetSegments" => get_segments(cx),
        "GetSegmentState" => get_segment_state(cx).await,
        "GetSegmentVariables" => get_segment_variables(cx),
        "GetStatus" => get_status(cx).await,
        "GetSystemVariables" => get_system_variables(cx),
        "GetVersion" => get_version(cx),
        "InteractionCancelled" => cancelled(cx).await,
        "InteractionDequeued" => dequeued(cx).await,
        "InteractionDisconnectedByApplication" => disconnected_by_application(cx).await,
        "InteractionDisconnectedByCaller" => disconnected_by_caller(cx).await,
        "InteractionOutboundAttemptFailed" => attempt_failed(cx).await,
        "InteractionOutboundConnected" => outbound_connected(cx).await,
        "InteractionQueued" => queued(cx).await,
        "InteractionRequestContact" => request_contact(cx).await,
        "InteractionSendToQueue" => send_to_queue(cx).await,
        "ModifyInteraction" => modify(cx).await,
        "RemoveInteraction" => remove(cx).await,
        "UpdateInteractionData" => update_interaction_data(cx).await,
        "UpdateUserData" => update_user_data(cx).await,
        "ValidateContact" => validate_contact(cx),
        _ => Reply::fault("unknown operation"),
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// The request's parameters as JSON (text leaves, nested objects, repeated names as arrays).
pub(crate) fn to_json(e: &Element, depth: usize) -> Map<String, Value> {
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

/// The configured PTK tenant named by `Tenant`, or 108000.
fn tenant(cx: &Cx<'_>) -> Result<String, Reply> {
    let name = cx
        .text("Tenant")
        .ok_or_else(|| Reply::error(INVALID_TENANT, "Tenant is required"))?;
    cx.settings
        .tenant(name)
        .map(str::to_owned)
        .ok_or_else(|| Reply::error(INVALID_TENANT, format!("unknown tenant {name:?}")))
}

/// The interaction id: `missing` when absent, `malformed` when not `V` + 31 digits.
fn interaction_id(cx: &Cx<'_>, missing: u32, malformed: u32) -> Result<String, Reply> {
    let id = cx
        .text("InteractionId")
        .ok_or_else(|| Reply::error(missing, "InteractionId is required"))?;
    if interaction::valid_id(id) {
        Ok(id.to_owned())
    } else {
        Err(Reply::error(
            malformed,
            "an interaction id is V followed by 31 digits",
        ))
    }
}

fn time(text: &str) -> Result<SystemTime, Reply> {
    parse_time(text).ok_or_else(|| {
        Reply::error(
            INVALID_DATETIME,
            format!("{text:?} is not yyyy-mm-ddTHH:mm:ssZ"),
        )
    })
}

/// Contact validation: digits with an optional leading `+` (spaces, dashes, dots and
/// brackets are ignored), within the segment's lengths.
fn normalize_contact(segment: Option<&Segment>, contact: &str) -> Option<String> {
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

/// Source applications are free text without `|` or control characters, up to 100 chars.
fn check_source_application(cx: &Cx<'_>) -> Result<Option<String>, Reply> {
    match cx.text("SourceApplication") {
        None => Ok(None),
        Some(app) if app.len() <= 100 && !app.chars().any(|c| c == '|' || c.is_control()) => {
            Ok(Some(app.to_owned()))
        }
        Some(_) => Err(Reply::error(
            BAD_SOURCE_APP,
            "SourceApplication may not hold | or control characters, nor exceed 100 characters",
        )),
    }
}

fn valid_external(ext: &str) -> bool {
    !ext.is_empty() && ext.len() <= 64 && !ext.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// UserData, from `UserData` or `Options/UserDataContainer`.
fn user_data(cx: &Cx<'_>) -> Result<Option<UserData>, Reply> {
    let Some(container) = cx
        .element("UserData")
        .or_else(|| cx.element("UserDataContainer"))
    else {
        return Ok(None);
    };
    if container.is_nil() {
        return Ok(None);
    }
    // Tolerate one `<UserData>` inside the container.
    let holder = match container.child("UserData") {
        Some(inner) if container.children.len() == 1 => inner,
        _ => container,
    };
    interaction::read_user_data(holder, 0)
        .map(Some)
        .map_err(|why| Reply::error(USERDATA_INVALID, why))
}

/// The segment of `name`, or `code`.
fn segment<'a>(cx: &'a Cx<'_>, ptk: &str, name: &str, code: u32) -> Result<&'a Segment, Reply> {
    cx.settings
        .segment(ptk, name)
        .ok_or_else(|| Reply::error(code, format!("no segment {name:?} for tenant {ptk}")))
}

// ---------------------------------------------------------------------------------------------
// Segment state
// ---------------------------------------------------------------------------------------------

/// The segment's live state: the configuration, or the decision webhook's answer over it.
async fn segment_state(cx: &Cx<'_>, segment: &Segment) -> Result<SegmentState, Reply> {
    let model = segment
        .model()
        .map_err(|why| Reply::error(UNEXPECTED, why))?;
    let mut state = SegmentState::configured(segment, &model, cx.now);
    if !segment.decision {
        return Ok(state);
    }
    let configured = json!({
        "OperationMode": state.operation_mode, "EWT": state.ewt_s,
        "OfferTreatment": state.offer_treatment, "ModeStatus": state.mode_status,
        "RecommendedDestination": state.recommended_destination, "QueueMode": state.queue_mode,
    });
    let mut data = Map::new();
    data.insert("ptk_tenant".into(), json!(segment.tenant));
    data.insert("segment".into(), json!(segment.name));
    data.insert("queue".into(), json!(segment.queue()));
    data.insert("method".into(), json!(cx.method.name));
    data.insert("configured".into(), configured);
    let decision = cx
        .gw
        .decide(DecisionRequest {
            tenant: cx.tenant.to_owned(),
            point: &DECISION_POINTS[0],
            call: CallRef::default(),
            data,
            vendor_fields: cx.vendor_fields(),
            deadline_ms: None,
        })
        .await;
    let Answer::Native(Value::Object(answer)) = decision.answer else {
        return Ok(state);
    };
    let get = |k: &str| {
        answer
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    };
    if let Some(mode) = get("OperationMode") {
        match mode
            .as_str()
            .and_then(|m| MODES.iter().find(|x| x.eq_ignore_ascii_case(m)))
        {
            Some(m) => state.operation_mode = (*m).to_owned(),
            None => {
                return Err(Reply::error(
                    107004,
                    format!("the segment_state answer has OperationMode {mode}"),
                ))
            }
        }
    }
    if let Some(ewt) = get("EWT") {
        let parsed = ewt
            .as_u64()
            .or_else(|| ewt.as_str().and_then(|s| s.trim().parse().ok()));
        match parsed {
            Some(s) if s <= crate::settings::MAX_EWT_S => state.ewt_s = s,
            _ => {
                return Err(Reply::error(
                    109012,
                    format!("the segment_state answer has EWT {ewt}"),
                ))
            }
        }
    }
    // The offer follows the mode and EWT the customer gave, unless it names one itself.
    state.offer_treatment =
        u8::from(state.operation_mode == "Normal" && state.ewt_s >= segment.offer_threshold_s);
    if let Some(offer) = get("OfferTreatment") {
        let parsed = offer
            .as_u64()
            .or_else(|| offer.as_str().and_then(|s| s.trim().parse().ok()))
            .or_else(|| offer.as_bool().map(u64::from));
        match parsed {
            Some(v @ (0 | 1)) => state.offer_treatment = v as u8,
            _ => {
                return Err(Reply::error(
                    109015,
                    format!("the segment_state answer has OfferTreatment {offer}"),
                ))
            }
        }
    }
    for (field, code, target) in [
        ("ModeStatus", 109024, &mut state.mode_status),
        (
            "RecommendedDestination",
            109025,
            &mut state.recommended_destination,
        ),
        ("QueueMode", 109036, &mut state.queue_mode),
    ] {
        if let Some(v) = get(field) {
            match v.as_str() {
                Some(s) if !(field == "QueueMode" && s.trim().is_empty()) => *target = s.to_owned(),
                _ => {
                    return Err(Reply::error(
                        code,
                        format!("the segment_state answer has {field} {v}"),
                    ))
                }
            }
        }
    }
    Ok(state)
}

// ---------------------------------------------------------------------------------------------
// Events and rendering
// ---------------------------------------------------------------------------------------------

fn event(
    cx_fields: Map<String, Value>,
    method: &str,
    kind: &str,
    i: &Interaction,
    status: &str,
    extra: Value,
) -> EntityEvent {
    let mut e = EntityEvent::new(kind);
    e.correlation.insert("InteractionId".into(), json!(i.id));
    if let Some(ext) = &i.external_id {
        e.correlation
            .insert("ExternalTrackingId".into(), json!(ext));
    }
    let mut data = Map::new();
    data.insert("ptk_tenant".into(), json!(i.tenant));
    data.insert("interaction_id".into(), json!(i.id));
    data.insert("method".into(), json!(method));
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
    e.vendor_fields = cx_fields;
    e
}

fn interaction_xml(
    w: &mut Writer,
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
                .and_then(parse_time)
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

fn interactions_data(
    list: &[Interaction],
    information: bool,
    user_data: bool,
    now: SystemTime,
) -> String {
    let mut w = Writer::default();
    w.open("Interactions");
    for i in list {
        interaction_xml(&mut w, i, information, user_data, now);
    }
    w.close("Interactions");
    w.out
}

/// Loads a live interaction of this PTK tenant.
async fn load_live(cx: &Cx<'_>, ptk: &str, id: &str) -> Result<Option<Interaction>, Reply> {
    let entity = cx
        .gw
        .load(store::key(cx.tenant, id))
        .await
        .map_err(|e| store::storage(&e))?;
    match store::read(entity.as_ref()) {
        Stored::Live(i) => Ok((i.tenant == ptk).then_some(i)),
        Stored::Unreadable(why) => Err(unreadable(id, &why)),
        Stored::Absent | Stored::Ended => Ok(None),
    }
}

/// 109000 for an interaction whose stored state does not read.
fn unreadable(id: &str, why: &str) -> Reply {
    Reply::internal(format!(
        "the stored state of interaction {id} does not read: {why}"
    ))
}

/// The PTK tenant's live interaction in `stored`. An ended one answers `ended` (the method's
/// code for a report on an ended interaction; 107002 when `None`), one of another PTK tenant
/// or none 107002, and a state that does not read 109000, so it is never taken for ended.
fn live<'s>(stored: &'s Stored, ptk: &str, ended: Option<u32>) -> Result<&'s Interaction, Reply> {
    match stored {
        Stored::Live(i) if i.tenant == ptk => Ok(i),
        Stored::Ended if ended.is_some() => Err(Reply::error(
            ended.unwrap_or(NOT_FOUND),
            "the interaction already ended",
        )),
        Stored::Unreadable(why) => Err(Reply::internal(format!(
            "the stored state of the interaction does not read: {why}"
        ))),
        _ => Err(Reply::error(NOT_FOUND, "no such interaction")),
    }
}

/// What an interaction transition answered, with alias conflicts mapped to their codes.
fn finish(ran: Ran) -> Reply {
    match ran {
        Ran::Done { reply, .. } => reply,
        Ran::Refused(reply) => reply,
        Ran::Taken { namespace, .. } => match namespace.as_str() {
            store::EXTERNAL => Reply::error(
                EXTERNAL_DUPLICATE,
                "the external tracking id belongs to another interaction",
            ),
            store::CONTACT => Reply::error(
                DUPLICATE_CONTACT,
                "another callback for this contact is pending in this queue",
            ),
            _ => Reply::error(UNEXPECTED, format!("alias {namespace} taken")),
        },
    }
}

fn contact_alias(i: &Interaction) -> Option<String> {
    Some(format!(
        "{}/{}/{}",
        i.tenant,
        i.queue.as_deref()?,
        i.contact.as_deref()?
    ))
}

/// Releases what an ending interaction holds: its pending-contact and ClientId claims; its
/// external tracking id stays claimed a day more.
fn ending_aliases(i: &Interaction, now: SystemTime) -> Vec<AliasChange> {
    let mut out = Vec::new();
    if let Some(value) = contact_alias(i) {
        out.push(AliasChange::Release {
            namespace: store::CONTACT.into(),
            value,
        });
    }
    // A ClientId identifies a request to retry, not an interaction forever.
    if let Some(client) = &i.client_id {
        out.push(AliasChange::Release {
            namespace: store::CLIENT.into(),
            value: format!("{}/{client}", i.tenant),
        });
    }
    if let Some(ext) = &i.external_id {
        out.push(AliasChange::Claim {
            namespace: store::EXTERNAL.into(),
            value: format!("{}/{ext}", i.tenant),
            until: Some(now + ENDED_CLAIM),
        });
    }
    out
}

/// A step that ends the interaction with `status`, emitting `kind`.
fn end_step(
    cx: &Cx<'_>,
    i: &Interaction,
    kind: &str,
    status: &str,
    extra: Value,
    reply: Reply,
) -> Step {
    Step {
        next: None,
        events: vec![event(
            cx.vendor_fields(),
            cx.method.name,
            kind,
            i,
            status,
            extra,
        )],
        timers: vec![TimerChange::Cancel {
            name: DUE_TIMER.into(),
        }],
        aliases: ending_aliases(i, cx.now),
        reply,
        ..Step::default()
    }
}

/// A step that moves the interaction to `next`, emitting `kind`.
fn move_step(cx: &Cx<'_>, next: Interaction, kind: &str, extra: Value, reply: Reply) -> Step {
    Step {
        events: vec![event(
            cx.vendor_fields(),
            cx.method.name,
            kind,
            &next,
            next.status.as_str(),
            extra,
        )],
        next: Some(next),
        reply,
        ..Step::default()
    }
}

/// Runs `step` on the interaction of the request.
async fn on_interaction<F>(cx: &Cx<'_>, ptk: &str, id: &str, step: F) -> Reply
where
    F: FnMut(&Stored) -> Result<Step, Reply> + Send,
{
    finish(store::run(cx.gw, cx.tenant, cx.settings, ptk, id, cx.now, step).await)
}

/// The callback fields of an interaction asking for a callback to `contact` at `at` (ASAP
/// when `None`), with its due timer and pending-contact claim.
fn make_callback(
    cx: &Cx<'_>,
    mut i: Interaction,
    segment: &Segment,
    contact: String,
    at: Option<SystemTime>,
) -> (Interaction, Vec<TimerChange>, Vec<AliasChange>) {
    let mut aliases = Vec::new();
    if let Some(old) = contact_alias(&i) {
        aliases.push(AliasChange::Release {
            namespace: store::CONTACT.into(),
            value: old,
        });
    }
    i.segment = Some(segment.name.clone());
    i.queue = Some(segment.queue().to_owned());
    i.contact = Some(contact);
    i.status = Status::CallbackPending;
    let due = at.unwrap_or(cx.now);
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
                namespace: store::CONTACT.into(),
                value,
                until: None,
            });
        }
    }
    let timers = vec![TimerChange::Set {
        name: DUE_TIMER.into(),
        due,
        payload: json!({"due": format_time(due)}),
    }];
    (i, timers, aliases)
}

fn new_interaction(cx: &Cx<'_>, id: &str, ptk: &str) -> Interaction {
    Interaction::new(id, ptk, format_time(cx.now))
}

/// Creates a new interaction with a fresh id: `make` builds its first step; an id already in
/// use (another instance drew the same) is retried with another.
async fn create<F>(cx: &Cx<'_>, ptk: &str, mut make: F) -> Ran
where
    F: FnMut(&str) -> Result<Step, Reply> + Send,
{
    for _ in 0..5 {
        let id = interaction::new_id(cx.now);
        let mut collided = false;
        let ran = store::run(cx.gw, cx.tenant, cx.settings, ptk, &id, cx.now, |stored| {
            if !matches!(stored, Stored::Absent) {
                collided = true;
                return Err(Reply::code(0));
            }
            collided = false;
            make(&id)
        })
        .await;
        if !collided {
            return ran;
        }
    }
    Ran::Refused(Reply::error(UNEXPECTED, "no free interaction id"))
}

/// The live interaction owning an alias in this PTK tenant.
async fn owner(
    cx: &Cx<'_>,
    namespace: &str,
    value: &str,
) -> Result<Option<(Interaction, bool)>, Reply> {
    let found = cx
        .gw
        .find(cx.tenant, namespace, value)
        .await
        .map_err(|e| store::storage(&e))?;
    let Some(e) = found else { return Ok(None) };
    match store::read(Some(&e)) {
        Stored::Live(i) => Ok(Some((i, false))),
        Stored::Ended => Ok(Some((new_interaction(cx, &e.key.id, ""), true))),
        Stored::Absent => Ok(None),
        Stored::Unreadable(why) => Err(unreadable(&e.key.id, &why)),
    }
}

/// A mode status (from the decision webhook) other than empty, `Normal` or `Valid` takes no
/// new callbacks (109030).
fn mode_status(state: &SegmentState) -> Result<(), Reply> {
    let status = state.mode_status.trim();
    if status.is_empty()
        || status.eq_ignore_ascii_case("Normal")
        || status.eq_ignore_ascii_case("Valid")
    {
        Ok(())
    } else {
        Err(Reply::error(
            109030,
            format!("mode status {status:?} takes no callbacks"),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// AddInteraction, CreateInteraction
// ---------------------------------------------------------------------------------------------

async fn add_interaction(cx: &Cx<'_>) -> Reply {
    match add_inner(cx).await {
        Ok(r) | Err(r) => r,
    }
}

async fn add_inner(cx: &Cx<'_>) -> Result<Reply, Reply> {
    let ptk = tenant(cx)?;
    let seg_name = cx
        .text("Segment")
        .ok_or_else(|| Reply::error(SEGMENT_REQUIRED, "Segment is required"))?;
    let seg = segment(cx, &ptk, seg_name, INVALID_SEGMENT)?;
    let contact = cx
        .text("Contact")
        .ok_or_else(|| Reply::error(CONTACT_REQUIRED, "Contact is required"))?;
    let contact = normalize_contact(Some(seg), contact).ok_or_else(|| {
        Reply::error(INVALID_CONTACT, "the contact fails phone number validation")
    })?;
    let at = cx.text("AppointmentTime").map(time).transpose()?;
    let app = check_source_application(cx)?;
    // Checked now, read again where the interaction is built: a large UserData is not held
    // through the segment lookup and the store's dry run.
    user_data(cx)?;
    let client = cx.text("ClientId").map(str::to_owned);
    if let Some(client) = &client {
        if let Some((original, false)) =
            owner(cx, store::CLIENT, &format!("{ptk}/{client}")).await?
        {
            let data = interactions_data(std::slice::from_ref(&original), false, false, cx.now);
            return Ok(Reply::ok().with_data(data).with_id(original.id));
        }
    }
    let state = segment_state(cx, seg).await?;
    mode_status(&state)?;
    match at {
        None if state.operation_mode != "Normal" => {
            return Err(Reply::error(
                MODE_REFUSED,
                format!("{} mode takes no ASAP callbacks", state.operation_mode),
            ))
        }
        None => {}
        Some(at) => {
            let model = seg.model().map_err(|why| Reply::error(UNEXPECTED, why))?;
            check_appointment(seg, &model, &state, cx.now, at)
                .map_err(|code| Reply::error(code, "appointment time refused by the segment"))?;
        }
    }
    tracing::debug!(
        tenant = %cx.tenant,
        ptk_tenant = %ptk,
        segment = %seg.name,
        contact = %ivrgate_adapter::mask_phone(&contact, cx.mask),
        "ptk callback accepted by the segment"
    );
    let ran = create(cx, &ptk, |id| {
        let mut i = new_interaction(cx, id, &ptk);
        i.client_id = client.clone();
        i.licence = Some(Licence::Callback);
        i.source_application = Some(app.clone().unwrap_or_else(|| "Platform Toolkit".into()));
        i.user_data = user_data(cx)?.unwrap_or_default();
        let (i, timers, mut aliases) = make_callback(cx, i, seg, contact.clone(), at);
        if let Some(client) = &client {
            // Held while the interaction lives: a retry returns it.
            aliases.push(AliasChange::Claim {
                namespace: store::CLIENT.into(),
                value: format!("{ptk}/{client}"),
                until: None,
            });
        }
        let reply = Reply::ok()
            .with_data(interactions_data(
                std::slice::from_ref(&i),
                false,
                false,
                cx.now,
            ))
            .with_id(id);
        let mut s = move_step(cx, i, "ptk.interaction.created", json!({}), reply);
        s.timers = timers;
        s.aliases = aliases;
        s.counts_request = true;
        Ok(s)
    })
    .await;
    if let (Ran::Taken { .. } | Ran::Refused(_), Some(client)) = (&ran, &client) {
        // A copy of this request (same ClientId) won a race meanwhile: its claims (client,
        // contact) refused ours, or it took the last licence or slot place. Answer its
        // interaction, as a retry after it would get.
        if let Some((original, false)) =
            owner(cx, store::CLIENT, &format!("{ptk}/{client}")).await?
        {
            let data = interactions_data(std::slice::from_ref(&original), false, false, cx.now);
            return Ok(Reply::ok().with_data(data).with_id(original.id));
        }
    }
    Ok(finish(ran))
}

async fn create_interaction(cx: &Cx<'_>) -> Reply {
    match create_inner(cx).await {
        Ok(r) | Err(r) => r,
    }
}

async fn create_inner(cx: &Cx<'_>) -> Result<Reply, Reply> {
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
    // through the segment lookup and the store's dry run.
    user_data(cx)?;
    if let Some(ext) = &ext {
        match owner(cx, store::EXTERNAL, &format!("{ptk}/{ext}")).await? {
            Some((original, false)) => return Ok(Reply::ok().with_id(original.id)),
            Some((_, true)) => {
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
    let ran = create(cx, &ptk, |id| {
        let mut i = new_interaction(cx, id, &ptk);
        i.segment = Some(seg.name.clone());
        i.queue = Some(seg.queue().to_owned());
        i.external_id = ext.clone();
        i.source_application = app.clone();
        i.licence = Some(Licence::Voice);
        i.user_data = user_data(cx)?.unwrap_or_default();
        let mut s = move_step(
            cx,
            i,
            "ptk.interaction.created",
            json!({}),
            Reply::ok().with_id(id),
        );
        if let Some(ext) = &ext {
            s.aliases.push(AliasChange::Claim {
                namespace: store::EXTERNAL.into(),
                value: format!("{ptk}/{ext}"),
                until: None,
            });
        }
        s.counts_request = true;
        Ok(s)
    })
    .await;
    if let (Ran::Taken { .. } | Ran::Refused(_), Some(ext)) = (&ran, &ext) {
        // A copy of this request (same ExternalTrackingId) won a race meanwhile: its claim
        // refused ours, or it took the last licence.
        if let Some((original, false)) = owner(cx, store::EXTERNAL, &format!("{ptk}/{ext}")).await?
        {
            return Ok(Reply::ok().with_id(original.id));
        }
    }
    Ok(match ran {
        Ran::Refused(r) if r.code == RESOURCES_UNAVAILABLE => {
            Reply::error(UNABLE_TO_CREATE, r.message)
        }
        other => finish(other),
    })
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

async fn find_interaction(cx: &Cx<'_>) -> Reply {
    let inner = async {
        let ptk = tenant(cx)?;
        let seg_filter = match cx.text("Segment") {
            Some(name) => Some(segment(cx, &ptk, name, QUEUE_NOT_FOUND)?.name.clone()),
            None => None,
        };
        if let Some(id) = cx.text("InteractionId") {
            if !interaction::valid_id(id) {
                return Err(Reply::error(BAD_SEARCH, "the interaction id is not valid"));
            }
            let found = load_live(cx, &ptk, id)
                .await?
                .filter(|i| seg_filter.is_none() || i.segment == seg_filter)
                .ok_or_else(|| Reply::error(NOT_FOUND, "no such interaction"))?;
            return Ok(Reply::ok().with_data(interactions_data(&[found], true, false, cx.now)));
        }
        let Some(contact) = cx.text("Contact") else {
            return Err(Reply::error(
                BAD_SEARCH,
                "give an InteractionId or a Contact",
            ));
        };
        let contact = normalize_contact(None, contact)
            .ok_or_else(|| Reply::error(BAD_SEARCH, "the contact is not a phone number"))?;
        let all = cx
            .gw
            .list(cx.tenant, store::KIND, 10_000)
            .await
            .map_err(|e| store::storage(&e))?;
        let mut found: Vec<Interaction> = Vec::new();
        for e in &all {
            match store::read(Some(e)) {
                Stored::Live(i)
                    if i.tenant == ptk
                        && i.contact.as_deref() == Some(contact.as_str())
                        && (seg_filter.is_none() || i.segment == seg_filter) =>
                {
                    found.push(i)
                }
                Stored::Unreadable(why) => return Err(unreadable(&e.key.id, &why)),
                _ => {}
            }
        }
        if found.is_empty() {
            return Err(Reply::error(
                CONTACT_NOT_FOUND,
                "no interaction for this contact",
            ));
        }
        Ok(Reply::ok().with_data(interactions_data(&found, true, false, cx.now)))
    };
    match inner.await {
        Ok(r) | Err(r) => r,
    }
}

async fn get_interaction_data(cx: &Cx<'_>) -> Reply {
    let inner = async {
        let ptk = tenant(cx)?;
        let id = interaction_id(cx, INVALID_ID, INVALID_ID)?;
        let found = load_live(cx, &ptk, &id)
            .await?
            .ok_or_else(|| Reply::error(NOT_FOUND, "no such interaction"))?;
        Ok::<_, Reply>(
            Reply::ok()
                .with_data(interactions_data(&[found], true, true, cx.now))
                .with_id(id),
        )
    };
    match inner.await {
        Ok(r) | Err(r) => r,
    }
}

async fn next_appointments(cx: &Cx<'_>) -> Reply {
    let inner = async {
        let ptk = tenant(cx)?;
        let seg = match cx.text("Segment") {
            Some(name) => segment(cx, &ptk, name, QUEUE_ID_REQUIRED)?,
            None => {
                let mut all = cx.settings.segments_of(&ptk);
                match (all.next(), all.next()) {
                    (Some(only), None) => only,
                    _ => return Err(Reply::error(QUEUE_ID_REQUIRED, "name the Segment")),
                }
            }
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
            let key = EntityKey::new(
                cx.tenant,
                store::SLOT,
                format!("{ptk}/{}/{}", seg.name, start - len),
            );
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
    };
    match inner.await {
        Ok(r) | Err(r) => r,
    }
}

fn segment_xml(w: &mut Writer, seg: &Segment) {
    w.empty_attrs(
        "Segment",
        &[
            ("Name", &seg.name),
            ("Queue", seg.queue()),
            ("Tenant", &seg.tenant),
        ],
    );
}

fn get_segments(cx: &Cx<'_>) -> Reply {
    let tenants: Vec<String> = match cx.text("Tenant") {
        Some(name) => match cx.settings.tenant(name) {
            Some(t) => vec![t.to_owned()],
            None => return Reply::error(INVALID_TENANT, format!("unknown tenant {name:?}")),
        },
        None => cx.settings.tenants.clone(),
    };
    let mut w = Writer::default();
    w.open("Segments");
    let mut n = 0;
    for seg in cx
        .settings
        .segments
        .iter()
        .filter(|s| tenants.contains(&s.tenant))
    {
        segment_xml(&mut w, seg);
        n += 1;
    }
    w.close("Segments");
    if n == 0 {
        return Reply::error(SEGMENTS_NOT_FOUND, "no segments are configured");
    }
    Reply::ok().with_data(w.out)
}

async fn get_segment_state(cx: &Cx<'_>) -> Reply {
    let inner = async {
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
        Ok::<_, Reply>(Reply::ok().with_data(w.out))
    };
    match inner.await {
        Ok(r) | Err(r) => r,
    }
}

fn get_segment_variables(cx: &Cx<'_>) -> Reply {
    let ptk = match tenant(cx) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let segments: Vec<&Segment> = match cx.text("Segment") {
        Some(name) => match segment(cx, &ptk, name, INVALID_SEGMENT) {
            Ok(s) => vec![s],
            Err(r) => return r,
        },
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
    Reply::ok().with_data(w.out)
}

async fn get_status(cx: &Cx<'_>) -> Reply {
    let tenants: Vec<String> = match cx.text("Tenant") {
        Some(name) => match cx.settings.tenant(name) {
            Some(t) => vec![t.to_owned()],
            None => return Reply::error(TENANTS_NOT_FOUND, format!("unknown tenant {name:?}")),
        },
        None => cx.settings.tenants.clone(),
    };
    if tenants.is_empty() {
        return Reply::error(TENANTS_NOT_FOUND, "no tenants are configured");
    }
    // The platform is available when its store answers.
    let probe = EntityKey::new(cx.tenant, store::LICENCE, &tenants[0]);
    if let Err(e) = cx.gw.load(probe).await {
        return Reply::error(PLATFORM_UNAVAILABLE, e.to_string());
    }
    let mut w = Writer::default();
    w.open("Tenants");
    for t in &tenants {
        w.leaf("Tenant", t);
    }
    w.close("Tenants");
    Reply::code(PLATFORM_AVAILABLE).with_data(w.out)
}

fn get_system_variables(cx: &Cx<'_>) -> Reply {
    if let Err(r) = tenant(cx) {
        return r;
    }
    let mut w = Writer::default();
    for (name, value) in &cx.settings.system_variables {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        w.empty_attrs("Variable", &[("Name", name), ("Value", &value)]);
    }
    Reply::ok().with_data(w.out)
}

fn get_version(cx: &Cx<'_>) -> Reply {
    let mut w = Writer::default();
    w.leaf("PlatformToolkitVersion", &cx.settings.version);
    Reply::ok().with_data(w.out)
}

fn validate_contact(cx: &Cx<'_>) -> Reply {
    let inner = || {
        let ptk = tenant(cx)?;
        let contact = cx
            .text("Contact")
            .ok_or_else(|| Reply::error(CONTACT_REQUIRED, "Contact is required"))?;
        let seg = match cx.text("Segment") {
            Some(name) => segment(cx, &ptk, name, INVALID_SEGMENT)?,
            None => {
                let mut all = cx.settings.segments_of(&ptk);
                match (all.next(), all.next()) {
                    (Some(only), None) => only,
                    _ => {
                        return Err(Reply::error(
                            SEGMENT_REQUIRED,
                            "the tenant has several segments: name one",
                        ))
                    }
                }
            }
        };
        normalize_contact(Some(seg), contact)
            .map(|_| Reply::ok())
            .ok_or_else(|| {
                Reply::error(INVALID_CONTACT, "the contact fails phone number validation")
            })
    };
    match inner() {
        Ok(r) | Err(r) => r,
    }
}

// ---------------------------------------------------------------------------------------------
// Reports and changes
// ---------------------------------------------------------------------------------------------

/// Reads `Tenant` and the interaction id for a state report.
fn report_target(cx: &Cx<'_>, malformed: u32) -> Result<(String, String), Reply> {
    let ptk = tenant(cx)?;
    let id = interaction_id(cx, ID_REQUIRED, malformed)?;
    Ok((ptk, id))
}

/// Checks an enumerated parameter; a value outside the enumeration is a SOAP Fault (the WSDL
/// enumerates it and the method documents no code for it).
fn enumerated(
    cx: &Cx<'_>,
    name: &str,
    valid: &[&'static str],
    missing: Option<u32>,
) -> Result<&'static str, Reply> {
    let Some(value) = cx.text(name) else {
        return Err(match missing {
            Some(code) => Reply::error(code, format!("{name} is required")),
            None => Reply::fault(format!("{name} is required: one of {}", valid.join(", "))),
        });
    };
    valid
        .iter()
        .find(|v| v.eq_ignore_ascii_case(value))
        .copied()
        .ok_or_else(|| Reply::fault(format!("{name} must be one of {}", valid.join(", "))))
}

/// DataName/DataValue on a report: sets one UserData string.
fn data_name(cx: &Cx<'_>, value_required: bool) -> Result<Option<(String, String)>, Reply> {
    let Some(name) = cx.element("DataName").filter(|e| !e.is_nil()) else {
        return Ok(None);
    };
    let name = name.value();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(Reply::error(
            BAD_DATA_NAME,
            "DataName is not a valid data name",
        ));
    }
    if cx
        .settings
        .private_data_names
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
        || name.starts_with('_')
    {
        return Err(Reply::error(
            109028,
            format!("{name} is a private data name"),
        ));
    }
    let value = cx.text("DataValue");
    if value.is_none() && value_required {
        return Err(Reply::error(
            DATA_VALUE_REQUIRED,
            "DataValue is required with DataName",
        ));
    }
    Ok(Some((name.to_owned(), value.unwrap_or("").to_owned())))
}

fn set_data(i: &mut Interaction, data: &Option<(String, String)>) {
    if let Some((k, v)) = data {
        i.user_data.insert(k.clone(), UserValue::String(v.clone()));
    }
}

macro_rules! tryr {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

const CANCELLED_BY: &[&str] = wsdl::CANCELLED_BY.values;

async fn cancelled(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    let by = match cx.text("CancelledBy") {
        Some(v) => match CANCELLED_BY.iter().find(|c| c.eq_ignore_ascii_case(v)) {
            Some(c) => *c,
            None => {
                return Reply::error(
                    CANCELLED_BY_REQUIRED,
                    format!("CancelledBy must be one of {}", CANCELLED_BY.join(", ")),
                )
            }
        },
        None => return Reply::error(CANCELLED_BY_REQUIRED, "CancelledBy is required"),
    };
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, Some(CANNOT_CANCEL))?;
        if !i.status.is_pending_callback() {
            return Err(Reply::error(
                CANNOT_CANCEL,
                format!(
                    "a {} interaction is not a pending callback",
                    i.status.as_str()
                ),
            ));
        }
        Ok(end_step(
            cx,
            i,
            "ptk.interaction.cancelled",
            "Cancelled",
            json!({"cancelled_by": by}),
            Reply::ok().with_id(&i.id),
        ))
    })
    .await
}

async fn dequeued(cx: &Cx<'_>) -> Reply {
    let ptk = tryr!(tenant(cx));
    let reason = match cx.text("Reason") {
        None => return Reply::error(DEQUEUE_REASON_MISSING, "Reason is required"),
        Some(r) => match wsdl::DEQUEUE_REASONS
            .values
            .iter()
            .find(|v| v.eq_ignore_ascii_case(r))
        {
            Some(v) => *v,
            None => {
                return Reply::error(
                    DEQUEUE_REASON_INVALID,
                    "Reason must be AgentAnswered or Abandoned",
                )
            }
        },
    };
    let id = match (cx.text("InteractionId"), cx.text("ExternalTrackingId")) {
        (Some(id), _) => id.to_owned(),
        (None, Some(ext)) => match tryr!(owner(cx, store::EXTERNAL, &format!("{ptk}/{ext}")).await)
        {
            Some((i, _)) => i.id,
            None => return Reply::error(NOT_FOUND, "no interaction has this external tracking id"),
        },
        (None, None) => {
            return Reply::error(
                ID_OR_EXTERNAL_REQUIRED,
                "InteractionId or ExternalTrackingId is required",
            )
        }
    };
    if !interaction::valid_id(&id) {
        return Reply::error(NOT_FOUND, "no such interaction");
    }
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, Some(STATE_PREVENTS))?;
        if !matches!(i.status, Status::QueuedHold | Status::QueuedCallback) {
            return Err(Reply::error(STATE_PREVENTS, format!("a {} interaction is not in a queue", i.status.as_str())));
        }
        let status = if reason == "AgentAnswered" { "Completed" } else { "Abandoned" };
        Ok(end_step(cx, i, "ptk.interaction.dequeued", status, json!({"reason": reason, "queue_kind": if i.status == Status::QueuedHold { "hold" } else { "callback" }}), Reply::ok().with_id(&i.id)))
    })
    .await
}

async fn disconnected_by_application(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    let data = tryr!(data_name(cx, false));
    let reason = tryr!(enumerated(
        cx,
        "Reason",
        wsdl::APPLICATION_DISCONNECT_REASONS.values,
        None
    ));
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, None)?;
        let mut last = i.clone();
        set_data(&mut last, &data);
        Ok(end_step(
            cx,
            &last,
            "ptk.interaction.disconnected",
            "Disconnected",
            json!({"by": "application", "reason": reason}),
            Reply::ok().with_id(&i.id),
        ))
    })
    .await
}

async fn disconnected_by_caller(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    let reason = tryr!(enumerated(
        cx,
        "Reason",
        wsdl::CALLER_DISCONNECT_REASONS.values,
        None
    ));
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, Some(CANNOT_DISCONNECT))?;
        if !matches!(
            i.status,
            Status::Inbound
                | Status::QueuedHold
                | Status::QueuedCallback
                | Status::OutboundConnected
        ) {
            return Err(Reply::error(
                CANNOT_DISCONNECT,
                format!(
                    "a {} interaction is neither in treatment nor queued",
                    i.status.as_str()
                ),
            ));
        }
        Ok(end_step(
            cx,
            i,
            "ptk.interaction.disconnected",
            "Abandoned",
            json!({"by": "caller", "reason": reason}),
            Reply::ok().with_id(&i.id),
        ))
    })
    .await
}

const ATTEMPT_REASONS: &[&str] = wsdl::ATTEMPT_REASONS.values;

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

async fn attempt_failed(cx: &Cx<'_>) -> Reply {
    if cx
        .params
        .children
        .iter()
        .all(|c| c.value().is_empty() && c.children.is_empty())
    {
        return Reply::error(DATA_REQUIRED, "the request carries no data");
    }
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    let reason = tryr!(enumerated(
        cx,
        "Reason",
        ATTEMPT_REASONS,
        Some(REASON_REQUIRED)
    ));
    let data = tryr!(data_name(cx, false));
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, Some(STATE_PREVENTS))?;
        if !matches!(
            i.status,
            Status::CallbackDue | Status::OutboundConnected | Status::CallbackPending
        ) {
            return Err(Reply::error(
                STATE_PREVENTS,
                format!(
                    "a {} interaction has no outbound attempt",
                    i.status.as_str()
                ),
            ));
        }
        let seg = i
            .segment
            .as_deref()
            .and_then(|s| cx.settings.segment(&i.tenant, s));
        let mut next = i.clone();
        set_data(&mut next, &data);
        next.attempts += 1;
        let count = next.failures.get(reason).copied().unwrap_or(0) + 1;
        next.failures.insert(reason.into(), count);
        let max = seg.map(|s| s.max_attempts).unwrap_or(1);
        let reason_max = seg.and_then(|s| reason_limit(s, reason));
        let exhausted = reason == "Abandon"
            || next.attempts >= max
            || reason_max.is_some_and(|m| count >= u64::from(m));
        if exhausted || seg.is_none() {
            return Ok(end_step(
                cx,
                &next,
                "ptk.interaction.outbound_attempt_failed",
                "Failed",
                json!({"reason": reason, "next": "completed"}),
                Reply::ok().with_id(&i.id),
            ));
        }
        let retry_s = seg.map(|s| s.retry_interval_s).unwrap_or(300);
        let due = cx.now + Duration::from_secs(retry_s);
        next.status = Status::CallbackPending;
        next.due = Some(format_time(due));
        let mut s = move_step(
            cx,
            next,
            "ptk.interaction.outbound_attempt_failed",
            json!({"reason": reason, "next": "rescheduled", "retry_at": format_time(due)}),
            Reply::ok().with_id(&i.id),
        );
        s.timers.push(TimerChange::Set {
            name: DUE_TIMER.into(),
            due,
            payload: json!({"due": format_time(due)}),
        });
        Ok(s)
    })
    .await
}

async fn outbound_connected(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, Some(STATE_PREVENTS))?;
        if !matches!(i.status, Status::CallbackDue | Status::CallbackPending) {
            return Err(Reply::error(
                STATE_PREVENTS,
                format!(
                    "a {} interaction is not a callback being placed",
                    i.status.as_str()
                ),
            ));
        }
        let mut next = i.clone();
        next.status = Status::OutboundConnected;
        next.due = None;
        let mut s = move_step(
            cx,
            next,
            "ptk.interaction.outbound_connected",
            json!({}),
            Reply::ok().with_id(&i.id),
        );
        s.timers.push(TimerChange::Cancel {
            name: DUE_TIMER.into(),
        });
        Ok(s)
    })
    .await
}

async fn queued(cx: &Cx<'_>) -> Reply {
    let ptk = tryr!(tenant(cx));
    let given_segment = match cx.text("Segment") {
        Some(name) => Some(tryr!(segment(cx, &ptk, name, INVALID_SEGMENT))),
        None => None,
    };
    let ext = cx.text("ExternalTrackingId").map(str::to_owned);
    if let Some(ext) = &ext {
        if !valid_external(ext) {
            return Reply::error(EXTERNAL_MISSING, "the external tracking id is not valid");
        }
    }
    let Some(skill) = cx.text("SkillId").map(str::to_owned) else {
        return Reply::error(SKILL_NOT_FOUND, "SkillId is required");
    };
    let mut id = match (cx.text("InteractionId"), &ext) {
        (Some(id), _) if !interaction::valid_id(id) => {
            return Reply::error(NOT_FOUND, "the interaction id is not valid")
        }
        (Some(id), _) => Some(id.to_owned()),
        (None, Some(ext)) => {
            tryr!(owner(cx, store::EXTERNAL, &format!("{ptk}/{ext}")).await).map(|(i, _)| i.id)
        }
        (None, None) => {
            return Reply::error(
                EXTERNAL_MISSING,
                "InteractionId or ExternalTrackingId is required",
            )
        }
    };
    let existing = match &id {
        Some(id) => tryr!(cx
            .gw
            .load(store::key(cx.tenant, id))
            .await
            .map_err(|e| store::storage(&e))),
        None => None,
    };
    let found = store::read(existing.as_ref()).into_live();
    let seg = match (
        given_segment,
        found.as_ref().and_then(|i| i.segment.clone()),
    ) {
        (Some(s), _) => Some(s),
        (None, Some(name)) => match cx.settings.segment(&ptk, &name) {
            Some(s) => Some(s),
            None => {
                return Reply::error(
                    QUEUE_NOT_FOUND,
                    format!("segment {name} is no longer configured"),
                )
            }
        },
        (None, None) => None,
    };
    if let Some(seg) = seg {
        if !seg.skills.is_empty() && !seg.skills.iter().any(|s| s.eq_ignore_ascii_case(&skill)) {
            return Reply::error(
                SKILL_NOT_FOUND,
                format!("skill {skill} is not a skill of segment {}", seg.name),
            );
        }
    }
    let exists = existing.is_some();
    if !exists {
        // A new interaction arriving in the holding queue.
        if let Some(seg) = seg {
            let state = tryr!(segment_state(cx, seg).await);
            if state.operation_mode == "Shutdown" {
                return Reply::error(MODE_REFUSED, "the segment is in Shutdown mode");
            }
        }
        let build = |new_id: &str| {
            let mut i = new_interaction(cx, new_id, &ptk);
            i.segment = seg.map(|s| s.name.clone());
            i.queue = seg.map(|s| s.queue().to_owned());
            i.external_id = ext.clone();
            i.skill = Some(skill.clone());
            i.status = Status::QueuedHold;
            let created = event(
                cx.vendor_fields(),
                cx.method.name,
                "ptk.interaction.created",
                &i,
                "QueuedHold",
                json!({}),
            );
            let mut s = move_step(
                cx,
                i,
                "ptk.interaction.queued",
                json!({"skill_id": skill, "queue_kind": "hold"}),
                Reply::code(COMPLETED_WITH_ID).with_id(new_id),
            );
            s.events.insert(0, created);
            if let Some(ext) = &ext {
                s.aliases.push(AliasChange::Claim {
                    namespace: store::EXTERNAL.into(),
                    value: format!("{ptk}/{ext}"),
                    until: None,
                });
            }
            s
        };
        let ran = match id.take() {
            Some(given) => {
                store::run(
                    cx.gw,
                    cx.tenant,
                    cx.settings,
                    &ptk,
                    &given,
                    cx.now,
                    |stored| {
                        if !matches!(stored, Stored::Absent) {
                            return Err(Reply::error(
                                STATE_PREVENTS,
                                "the interaction changed meanwhile; retry",
                            ));
                        }
                        Ok(build(&given))
                    },
                )
                .await
            }
            None => create(cx, &ptk, |new_id| Ok(build(new_id))).await,
        };
        if let (Ran::Taken { .. }, Some(ext)) = (&ran, &ext) {
            // The same report arrived twice at once: the first one created it.
            if let Ok(Some((original, false))) =
                owner(cx, store::EXTERNAL, &format!("{ptk}/{ext}")).await
            {
                return Reply::code(COMPLETED_WITH_ID).with_id(original.id);
            }
        }
        return match ran {
            Ran::Refused(r) if r.code == RESOURCES_UNAVAILABLE => {
                Reply::error(UNABLE_TO_CREATE, r.message)
            }
            other => finish(other),
        };
    }
    let Some(id) = id else {
        return Reply::error(NOT_FOUND, "no such interaction");
    };
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, Some(STATE_PREVENTS))?;
        let mut next = i.clone();
        next.status = match i.status {
            Status::Inbound | Status::QueuedHold => Status::QueuedHold,
            Status::OutboundConnected | Status::QueuedCallback => Status::QueuedCallback,
            other => {
                return Err(Reply::error(
                    STATE_PREVENTS,
                    format!("a {} interaction cannot be queued", other.as_str()),
                ))
            }
        };
        if let Some(seg) = seg {
            next.segment = Some(seg.name.clone());
            next.queue = Some(seg.queue().to_owned());
        }
        next.skill = Some(skill.clone());
        let mut aliases = Vec::new();
        if let Some(ext) = &ext {
            if next.external_id.as_deref() != Some(ext) {
                next.external_id = Some(ext.clone());
                aliases.push(AliasChange::Claim {
                    namespace: store::EXTERNAL.into(),
                    value: format!("{ptk}/{ext}"),
                    until: None,
                });
            }
        }
        let kind = if next.status == Status::QueuedHold {
            "hold"
        } else {
            "callback"
        };
        let mut s = move_step(
            cx,
            next,
            "ptk.interaction.queued",
            json!({"skill_id": skill, "queue_kind": kind}),
            Reply::ok().with_id(&i.id),
        );
        s.aliases = aliases;
        Ok(s)
    })
    .await
}

/// A parsed ContactURI: `voice://NUMBER/` (ASAP) or `voice://NUMBER/yyyy-mm-ddTHH:mm:ssZ`.
fn contact_uri(uri: &str) -> Result<(String, Option<String>), Reply> {
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
    Ok((
        number.to_owned(),
        (!time.is_empty()).then(|| time.to_owned()),
    ))
}

async fn request_contact(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, INVALID_ID));
    let Some(uri) = cx.text("ContactURI") else {
        return Reply::error(BAD_CONTACT_URI, "ContactURI is required");
    };
    let (number, at_text) = tryr!(contact_uri(uri));
    let current = match tryr!(load_live(cx, &ptk, &id).await) {
        Some(i) => i,
        None => return Reply::error(NOT_FOUND, "no such interaction"),
    };
    let seg = match (cx.text("Segment"), current.segment.as_deref()) {
        (Some(name), _) | (None, Some(name)) => match cx.settings.segment(&ptk, name) {
            Some(s) => s,
            None => {
                return Reply::error(QUEUE_NOT_FOUND, format!("segment {name} is not configured"))
            }
        },
        (None, None) => {
            return Reply::error(SEGMENT_NOT_SET, "the interaction has no segment; name one")
        }
    };
    let Some(contact) = normalize_contact(Some(seg), &number) else {
        return Reply::error(INVALID_CONTACT, "the contact fails phone number validation");
    };
    let at = match &at_text {
        Some(t) => Some(tryr!(time(t))),
        None => None,
    };
    let state = tryr!(segment_state(cx, seg).await);
    tryr!(mode_status(&state));
    match at {
        None if state.operation_mode != "Normal" => {
            return Reply::error(
                MODE_REFUSED,
                format!("{} mode takes no ASAP callbacks", state.operation_mode),
            )
        }
        None => {}
        Some(at) => {
            let model = tryr!(seg.model().map_err(|why| Reply::error(UNEXPECTED, why)));
            if let Err(code) = check_appointment(seg, &model, &state, cx.now, at) {
                return Reply::error(code, "appointment time refused by the segment");
            }
        }
    }
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, None)?;
        if !matches!(
            i.status,
            Status::Inbound | Status::QueuedHold | Status::CallbackPending
        ) {
            return Err(Reply::error(
                STATE_PREVENTS,
                format!(
                    "a {} interaction cannot become a callback",
                    i.status.as_str()
                ),
            ));
        }
        let (next, timers, aliases) = make_callback(cx, i.clone(), seg, contact.clone(), at);
        let mut s = move_step(
            cx,
            next,
            "ptk.interaction.callback_requested",
            json!({"contact_uri": uri}),
            Reply::ok().with_id(&i.id),
        );
        s.timers = timers;
        s.aliases = aliases;
        Ok(s)
    })
    .await
}

const SEND_REASONS: &[&str] = wsdl::SEND_REASONS.values;

async fn send_to_queue(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    let data = tryr!(data_name(cx, true));
    let reason = tryr!(enumerated(cx, "Reason", SEND_REASONS, None));
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, Some(STATE_PREVENTS))?;
        let mut next = i.clone();
        set_data(&mut next, &data);
        next.status = match i.status {
            Status::Inbound | Status::QueuedHold => Status::QueuedHold,
            Status::OutboundConnected | Status::QueuedCallback => Status::QueuedCallback,
            other => {
                return Err(Reply::error(
                    STATE_PREVENTS,
                    format!("a {} interaction cannot be sent to a queue", other.as_str()),
                ))
            }
        };
        Ok(move_step(
            cx,
            next,
            "ptk.interaction.sent_to_queue",
            json!({"reason": reason}),
            Reply::ok().with_id(&i.id),
        ))
    })
    .await
}

/// Re-books an appointment on a pending callback, with the segment's checks.
async fn appointment_change(
    cx: &Cx<'_>,
    ptk: &str,
    id: &str,
    text: Option<&str>,
    disabled_code: u32,
) -> Reply {
    let Some(text) = text else {
        return Reply::error(APPOINTMENT_REQUIRED, "AppointmentTime is required");
    };
    let at = tryr!(time(text));
    let current = match tryr!(load_live(cx, ptk, id).await) {
        Some(i) => i,
        None => return Reply::error(NOT_FOUND, "no such interaction"),
    };
    if current.status != Status::CallbackPending {
        return Reply::error(
            STATE_PREVENTS_APPOINTMENT,
            format!(
                "a {} interaction is already active",
                current.status.as_str()
            ),
        );
    }
    let Some(seg) = current
        .segment
        .as_deref()
        .and_then(|s| cx.settings.segment(ptk, s))
    else {
        return Reply::error(
            QUEUE_NOT_FOUND,
            "the interaction's segment is not configured",
        );
    };
    let state = tryr!(segment_state(cx, seg).await);
    let model = tryr!(seg.model().map_err(|why| Reply::error(UNEXPECTED, why)));
    match check_appointment(seg, &model, &state, cx.now, at) {
        Ok(()) => {}
        Err(APPOINTMENTS_DISABLED) => {
            return Reply::error(disabled_code, "scheduling is not enabled for the segment")
        }
        Err(code) => return Reply::error(code, "appointment time refused by the segment"),
    }
    on_interaction(cx, ptk, id, |stored| {
        let i = live(stored, ptk, None)?;
        if i.status != Status::CallbackPending {
            return Err(Reply::error(
                STATE_PREVENTS_APPOINTMENT,
                "the interaction is already active",
            ));
        }
        let contact = i.contact.clone().unwrap_or_default();
        let (next, timers, _) = make_callback(cx, i.clone(), seg, contact, Some(at));
        let mut s = move_step(
            cx,
            next,
            "ptk.interaction.modified",
            json!({"changed": "AppointmentTime"}),
            Reply::ok().with_id(&i.id),
        );
        s.timers = timers;
        Ok(s)
    })
    .await
}

const ACTIONS: &[&str] = wsdl::MODIFY_ACTIONS.values;

async fn modify(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    let Some(action) = cx
        .text("Action")
        .and_then(|a| ACTIONS.iter().find(|x| x.eq_ignore_ascii_case(a)))
    else {
        return Reply::error(
            BAD_ACTION,
            format!("Action must be one of {}", ACTIONS.join(", ")),
        );
    };
    match *action {
        "AppointmentTime" => {
            appointment_change(cx, &ptk, &id, cx.text("AppointmentTime"), APPOINTMENT_ERROR).await
        }
        "Result" => {
            let Some((result, kind)) = cx.text("Result").and_then(|r| {
                cx.settings
                    .results
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(r))
            }) else {
                return Reply::error(BAD_RESULT, "Result is not a configured result code");
            };
            let status = match kind.as_str() {
                "CALLINFO_CALLBACK_SUCCESSFUL" => "Completed",
                "CALLINFO_CALLBACK_CANCELLED" => "Cancelled",
                _ => "Failed",
            };
            on_interaction(cx, &ptk, &id, |stored| {
                let i = live(stored, &ptk, None)?;
                let mut last = i.clone();
                last.result = Some(result.clone());
                Ok(end_step(
                    cx,
                    &last,
                    "ptk.interaction.completed",
                    status,
                    json!({"result": result, "result_type": kind}),
                    Reply::ok().with_id(&i.id),
                ))
            })
            .await
        }
        "ClientId" => {
            let Some(client) = cx.text("ClientId").map(str::to_owned) else {
                return Reply::error(DATA_VALUE_REQUIRED, "Options/ClientId is required");
            };
            let ran = store::run(cx.gw, cx.tenant, cx.settings, &ptk, &id, cx.now, |stored| {
                let i = live(stored, &ptk, None)?;
                let mut next = i.clone();
                next.client_id = Some(client.clone());
                let mut s = move_step(
                    cx,
                    next,
                    "ptk.interaction.modified",
                    json!({"changed": "ClientId"}),
                    Reply::ok().with_id(&i.id),
                );
                // The ClientId index follows: a retried AddInteraction with the new ClientId
                // finds this interaction, and the old one is free.
                if let Some(old) = i.client_id.as_ref().filter(|old| **old != client) {
                    s.aliases.push(AliasChange::Release {
                        namespace: store::CLIENT.into(),
                        value: format!("{ptk}/{old}"),
                    });
                }
                s.aliases.push(AliasChange::Claim {
                    namespace: store::CLIENT.into(),
                    value: format!("{ptk}/{client}"),
                    until: None,
                });
                Ok(s)
            })
            .await;
            match ran {
                Ran::Taken { .. } => Reply::error(
                    DATA_VALUE_REQUIRED,
                    "the ClientId belongs to another interaction",
                ),
                other => finish(other),
            }
        }
        _ => {
            if cx.element("DataName").is_none_or(|e| e.value().is_empty()) {
                return Reply::error(BAD_DATA_NAME, "Options/DataName is required");
            }
            let data = tryr!(data_name(cx, true));
            on_interaction(cx, &ptk, &id, |stored| {
                let i = live(stored, &ptk, None)?;
                let mut next = i.clone();
                set_data(&mut next, &data);
                Ok(move_step(
                    cx,
                    next,
                    "ptk.interaction.modified",
                    json!({"changed": "UserData"}),
                    Reply::ok().with_id(&i.id),
                ))
            })
            .await
        }
    }
}

async fn remove(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, INVALID_ID));
    let Some(reason) = cx.text("Reason") else {
        return Reply::error(REASON_REQUIRED, "Reason is required");
    };
    let squashed: String = reason
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let reason = match squashed.as_str() {
        "webcanceled" | "webcancelled" => "Web Canceled",
        "admincanceled" | "admincancelled" => "Admin Canceled",
        _ => return Reply::error(BAD_REASON, "Reason must be Web Canceled or Admin Canceled"),
    };
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, None)?;
        Ok(end_step(
            cx,
            i,
            "ptk.interaction.removed",
            "Removed",
            json!({"reason": reason}),
            Reply::ok().with_id(&i.id),
        ))
    })
    .await
}

async fn update_user_data(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    let data = match user_data(cx) {
        Ok(Some(d)) if !d.is_empty() => d,
        Ok(_) => return Reply::error(USERDATA_REQUIRED, "UserData is required"),
        Err(r) => return r,
    };
    on_interaction(cx, &ptk, &id, |stored| {
        let i = live(stored, &ptk, None)?;
        let mut next = i.clone();
        interaction::merge(&mut next.user_data, &data);
        Ok(move_step(
            cx,
            next,
            "ptk.interaction.user_data_updated",
            json!({}),
            Reply::ok().with_id(&i.id),
        ))
    })
    .await
}

async fn associate(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, INVALID_ID));
    let Some(ext) = cx
        .text("ExternalTrackingId")
        .filter(|e| valid_external(e))
        .map(str::to_owned)
    else {
        return Reply::error(
            EXTERNAL_MISSING,
            "the external tracking id is missing or invalid",
        );
    };
    set_external(cx, &ptk, &id, ext).await
}

async fn set_external(cx: &Cx<'_>, ptk: &str, id: &str, ext: String) -> Reply {
    on_interaction(cx, ptk, id, |stored| {
        let i = live(stored, ptk, None)?;
        let mut next = i.clone();
        let mut aliases = Vec::new();
        if let Some(old) = &i.external_id {
            if *old != ext {
                aliases.push(AliasChange::Release {
                    namespace: store::EXTERNAL.into(),
                    value: format!("{ptk}/{old}"),
                });
            }
        }
        aliases.push(AliasChange::Claim {
            namespace: store::EXTERNAL.into(),
            value: format!("{ptk}/{ext}"),
            until: None,
        });
        next.external_id = Some(ext.clone());
        let mut s = move_step(
            cx,
            next,
            "ptk.interaction.external_id_associated",
            json!({}),
            Reply::ok().with_id(&i.id),
        );
        s.aliases = aliases;
        Ok(s)
    })
    .await
}

async fn update_interaction_data(cx: &Cx<'_>) -> Reply {
    let (ptk, id) = tryr!(report_target(cx, NOT_FOUND));
    let holder = cx.element("InteractionData").unwrap_or(cx.params);
    let pairs: Vec<(String, Option<String>)> = holder
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
                    .map(|v| v.value().to_owned()),
            )
        })
        .collect();
    if pairs.is_empty() {
        return Reply::error(DATA_VALUE_REQUIRED, "no KeyValuePair was given");
    }
    if tryr!(load_live(cx, &ptk, &id).await).is_none() {
        return Reply::error(NOT_FOUND, "no such interaction");
    }
    let mut failures = Vec::new();
    for (key, value) in &pairs {
        let reply = match key.to_ascii_lowercase().as_str() {
            "contact" | "phonenumber" => match value {
                None => Reply::error(CONTACT_REQUIRED, "Contact needs a value"),
                Some(v) => update_contact(cx, &ptk, &id, v).await,
            },
            "appointmenttime" => {
                appointment_change(cx, &ptk, &id, value.as_deref(), APPOINTMENT_ERROR).await
            }
            "externaltrackingid" => match value.as_deref().filter(|v| valid_external(v)) {
                None => Reply::error(
                    EXTERNAL_MISSING,
                    "the external tracking id is missing or invalid",
                ),
                Some(v) => set_external(cx, &ptk, &id, v.to_owned()).await,
            },
            _ if value.is_none() => {
                Reply::error(DATA_VALUE_REQUIRED, format!("{key} needs a value"))
            }
            _ => Reply::error(KEY_NOT_SUPPORTED, format!("{key:?} cannot be updated")),
        };
        if !reply.succeeded() {
            failures.push(reply);
        }
    }
    match failures.len() {
        0 => Reply::ok().with_id(id),
        1 => failures.remove(0),
        n => Reply::error(
            UPDATE_FAILED,
            format!("{n} of {} values failed to update", pairs.len()),
        ),
    }
}

async fn update_contact(cx: &Cx<'_>, ptk: &str, id: &str, value: &str) -> Reply {
    on_interaction(cx, ptk, id, |stored| {
        let i = live(stored, ptk, None)?;
        let seg = i
            .segment
            .as_deref()
            .and_then(|s| cx.settings.segment(ptk, s));
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
                    namespace: store::CONTACT.into(),
                    value: old,
                });
            }
        }
        next.contact = Some(contact);
        if pending && seg.is_some_and(|s| s.double_check) {
            if let Some(new) = contact_alias(&next) {
                aliases.push(AliasChange::Claim {
                    namespace: store::CONTACT.into(),
                    value: new,
                    until: None,
                });
            }
        }
        let mut s = move_step(
            cx,
            next,
            "ptk.interaction.modified",
            json!({"changed": "Contact"}),
            Reply::ok().with_id(&i.id),
        );
        s.aliases = aliases;
        Ok(s)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The platform's own actor: callbacks falling due
// ---------------------------------------------------------------------------------------------

/// A callback's due timer: a pending callback whose due time this is becomes due, with a
/// durable `callback.due` event; anything else (cancelled, moved, already due) is left alone.
pub(crate) async fn on_timer(gw: &dyn Gateway, timer: TimerFired) -> Result<(), String> {
    if timer.name == store::IDLE_TIMER {
        return on_idle(gw, timer).await;
    }
    if timer.name != DUE_TIMER {
        return Ok(());
    }
    let Some(settings) =
        ivrgate_adapter::settings_of::<Settings>(gw, &timer.entity.tenant, crate::VENDOR)
    else {
        tracing::warn!(tenant = %timer.entity.tenant, interaction_id = %timer.entity.id, "ptk timer for a tenant without PTK settings; dropped");
        return Ok(());
    };
    let due = timer
        .payload
        .get("due")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    // Only its PTK tenant is wanted from the interaction here: the transition reads it again,
    // so neither the stored entity nor the interaction is held through it.
    let Some(ptk) = stored_tenant(gw, &timer).await? else {
        return Ok(());
    };
    let now = gw.now();
    let ran = store::run(
        gw,
        &timer.entity.tenant,
        &settings,
        &ptk,
        &timer.entity.id,
        now,
        |stored| {
            let i = match stored {
                Stored::Live(i) => i,
                Stored::Unreadable(why) => return Err(Reply::internal(why.clone())),
                Stored::Absent | Stored::Ended => {
                    return Ok(Step {
                        keep: true,
                        ..Step::default()
                    })
                }
            };
            if i.status != Status::CallbackPending || i.due.as_deref() != Some(due.as_str()) {
                return Ok(Step {
                    keep: true,
                    ..Step::default()
                });
            }
            let mut next = i.clone();
            next.status = Status::CallbackDue;
            let e = event(
                Map::new(),
                "timer",
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
        },
    )
    .await;
    match ran {
        Ran::Done { .. } => {
            tracing::info!(tenant = %timer.entity.tenant, ptk_tenant = %ptk, interaction_id = %timer.entity.id, due = %due, "ptk callback due");
            Ok(())
        }
        Ran::Refused(r) => Err(format!("callback.due not stored: {} {}", r.code, r.message)),
        Ran::Taken { namespace, .. } => Err(format!("alias {namespace} taken")),
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

/// The idle timer: an interaction no report moved for `idle_expiry_s` ends with
/// `ptk.interaction.expired` (its licence, slot and contact claim are released).
async fn on_idle(gw: &dyn Gateway, timer: TimerFired) -> Result<(), String> {
    let Some(settings) =
        ivrgate_adapter::settings_of::<Settings>(gw, &timer.entity.tenant, crate::VENDOR)
    else {
        return Ok(());
    };
    // Only its PTK tenant is wanted from the interaction here: the transition reads it again,
    // so neither the stored entity nor the interaction is held through it.
    let Some(ptk) = stored_tenant(gw, &timer).await? else {
        return Ok(());
    };
    let now = gw.now();
    let idle = Duration::from_secs(settings.idle_expiry_s);
    let ran = store::run(
        gw,
        &timer.entity.tenant,
        &settings,
        &ptk,
        &timer.entity.id,
        now,
        |stored| {
            let i = match stored {
                Stored::Live(i) => i,
                Stored::Unreadable(why) => return Err(Reply::internal(why.clone())),
                Stored::Absent | Stored::Ended => {
                    return Ok(Step {
                        keep: true,
                        ..Step::default()
                    })
                }
            };
            let touched = i.touched.as_deref().and_then(parse_time);
            if i.status == Status::CallbackPending || touched.is_some_and(|t| t + idle > now) {
                return Ok(Step {
                    keep: true,
                    ..Step::default()
                });
            }
            let e = event(
                Map::new(),
                "timer",
                "ptk.interaction.expired",
                i,
                "Expired",
                json!({"idle_s": settings.idle_expiry_s}),
            );
            Ok(Step {
                next: None,
                events: vec![e],
                timers: vec![TimerChange::Cancel {
                    name: DUE_TIMER.into(),
                }],
                aliases: ending_aliases(i, now),
                reply: Reply::ok(),
                ..Step::default()
            })
        },
    )
    .await;
    match ran {
        Ran::Done { .. } => {
            tracing::info!(tenant = %timer.entity.tenant, ptk_tenant = %ptk, interaction_id = %timer.entity.id, "ptk interaction idle; checked for expiry");
            Ok(())
        }
        Ran::Refused(r) => Err(format!("idle expiry not stored: {} {}", r.code, r.message)),
        Ran::Taken { namespace } => Err(format!("alias {namespace} taken")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_as_json_group_repeated_names_into_arrays() {
        let xml = "<AddInteraction><Tenant> T </Tenant><a>1</a><b>2</b><a>3</a><a>4</a>\
<Options><UserDataContainer><UserDataAssignment><Key>k1</Key><Value><StringValue>x</StringValue></Value></UserDataAssignment>\
<UserDataAssignment><Key>k2</Key><Value><StringValue>y</StringValue></Value></UserDataAssignment></UserDataContainer></Options>\
<Empty/></AddInteraction>";
        let root = crate::soap::parse(xml, 32).expect("xml");
        let fields = Value::Object(to_json(&root, 0));
        assert_eq!(
            fields.to_string(),
            json!({
                "Tenant": "T",
                "a": ["1", "3", "4"],
                "b": "2",
                "Options": {"UserDataContainer": {"UserDataAssignment": [
                    {"Key": "k1", "Value": {"StringValue": "x"}},
                    {"Key": "k2", "Value": {"StringValue": "y"}},
                ]}},
                "Empty": "",
            })
            .to_string()
        );
    }
}
