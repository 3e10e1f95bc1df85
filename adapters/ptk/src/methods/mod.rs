//! The methods of seed 004 on the request side: each reads its parameters (with the status
//! codes the seed documents for them), makes the reads and the decision it needs, then runs at
//! most one transition whose rule is a pure step of [`crate::model`].
//!
//! Grouped as the seed's methods fall: `create.rs` AddInteraction and CreateInteraction,
//! `queries.rs` the queries (Find, Get*, ValidateContact), `reports.rs` the state reports
//! (`Interaction*`), `changes.rs` Modify, Remove, UpdateUserData, UpdateInteractionData and
//! AssociateInteractionWithExternalTrackingID; `timers.rs` the platform's own actor.

mod changes;
mod create;
mod queries;
mod reports;
mod timers;

use std::time::SystemTime;

use ivrgate_adapter::{Answer, CallRef, DecisionRequest, EntityKey};
use serde_json::{json, Map, Value};

pub(crate) use timers::on_timer;

use crate::codes::*;
use crate::interaction;
use crate::method::Method;
use crate::model::{self, Ctx, Step, CONTACT, EXTERNAL};
use crate::reply::Reply;
use crate::settings::{parse_time, Segment, SegmentState, MODES};
use crate::state::{Interaction, Stored, UserData};
use crate::store::{self, Ran};
use crate::{Cx, DECISION_POINTS};

/// What a method answers: `Err` is an answer too (a refusal), so `?` returns it.
type Answered = Result<Reply, Reply>;

pub(crate) async fn dispatch(cx: &Cx<'_>) -> Reply {
    let answered = match cx.method {
        Method::AddInteraction => create::add_interaction(cx).await,
        Method::CreateInteraction => create::create_interaction(cx).await,
        Method::FindInteraction => queries::find_interaction(cx).await,
        Method::GetInteractionData => queries::get_interaction_data(cx).await,
        Method::GetNextAvailableAppointmentTime => queries::next_appointments(cx).await,
        Method::GetSegments => queries::get_segments(cx),
        Method::GetSegmentState => queries::get_segment_state(cx).await,
        Method::GetSegmentVariables => queries::get_segment_variables(cx),
        Method::GetStatus => queries::get_status(cx).await,
        Method::GetSystemVariables => queries::get_system_variables(cx),
        Method::GetVersion => Ok(queries::get_version(cx)),
        Method::ValidateContact => queries::validate_contact(cx),
        Method::InteractionCancelled => reports::cancelled(cx).await,
        Method::InteractionDequeued => reports::dequeued(cx).await,
        Method::InteractionDisconnectedByApplication => {
            reports::disconnected_by_application(cx).await
        }
        Method::InteractionDisconnectedByCaller => reports::disconnected_by_caller(cx).await,
        Method::InteractionOutboundAttemptFailed => reports::attempt_failed(cx).await,
        Method::InteractionOutboundConnected => reports::outbound_connected(cx).await,
        Method::InteractionQueued => reports::queued(cx).await,
        Method::InteractionRequestContact => reports::request_contact(cx).await,
        Method::InteractionSendToQueue => reports::send_to_queue(cx).await,
        Method::ModifyInteraction => changes::modify(cx).await,
        Method::RemoveInteraction => changes::remove(cx).await,
        Method::UpdateInteractionData => changes::update_interaction_data(cx).await,
        Method::UpdateUserData => changes::update_user_data(cx).await,
        Method::AssociateInteractionWithExternalTrackingId => changes::associate(cx).await,
    };
    match answered {
        Ok(reply) | Err(reply) => reply,
    }
}

impl<'a> Cx<'a> {
    /// What the model's steps get: the clock, the settings and the parameters, not the
    /// gateway.
    pub(crate) fn ctx(&self) -> Ctx<'a> {
        Ctx {
            now: self.now,
            method: self.method.name(),
            settings: self.settings,
            params: Some(self.params),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

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

/// Reads `Tenant` and the interaction id for a report or change.
fn report_target(cx: &Cx<'_>, malformed: u32) -> Result<(String, String), Reply> {
    let ptk = tenant(cx)?;
    let id = interaction_id(cx, ID_REQUIRED, malformed)?;
    Ok((ptk, id))
}

fn time(text: &str) -> Result<SystemTime, Reply> {
    parse_time(text).ok_or_else(|| {
        Reply::error(
            INVALID_DATETIME,
            format!("{text:?} is not yyyy-mm-ddTHH:mm:ssZ"),
        )
    })
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

/// The tenant's only segment when `Segment` is absent, or `code`.
fn only_segment<'a>(
    cx: &'a Cx<'_>,
    ptk: &'a str,
    code: u32,
    why: &str,
) -> Result<&'a Segment, Reply> {
    let mut all = cx.settings.segments_of(ptk);
    match (all.next(), all.next()) {
        (Some(only), None) => Ok(only),
        _ => Err(Reply::error(code, why)),
    }
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
fn data_name(cx: &Cx<'_>, value_required: bool) -> Result<model::DataItem, Reply> {
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
    data.insert("method".into(), json!(cx.method.name()));
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
    over_configured(&mut state, segment, &answer)?;
    Ok(state)
}

/// The customer's native segment_state answer over the configured state; a field that is not
/// valid is GetSegmentState's own code for it.
fn over_configured(
    state: &mut SegmentState,
    segment: &Segment,
    answer: &Map<String, Value>,
) -> Result<(), Reply> {
    let get = |k: &str| {
        answer
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    };
    let number = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    let refused = |code: u32, field: &str, v: &Value| {
        Reply::error(code, format!("the segment_state answer has {field} {v}"))
    };
    if let Some(mode) = get("OperationMode") {
        let known = mode
            .as_str()
            .and_then(|m| MODES.iter().find(|x| x.eq_ignore_ascii_case(m)));
        let m = known.ok_or_else(|| refused(107004, "OperationMode", mode))?;
        state.operation_mode = (*m).to_owned();
    }
    if let Some(ewt) = get("EWT") {
        match number(ewt) {
            Some(s) if s <= crate::settings::MAX_EWT_S => state.ewt_s = s,
            _ => return Err(refused(109012, "EWT", ewt)),
        }
    }
    // The offer follows the mode and EWT the customer gave, unless it names one itself.
    state.offer_treatment =
        u8::from(state.operation_mode == "Normal" && state.ewt_s >= segment.offer_threshold_s);
    if let Some(offer) = get("OfferTreatment") {
        match number(offer).or_else(|| offer.as_bool().map(u64::from)) {
            Some(v @ (0 | 1)) => state.offer_treatment = v as u8,
            _ => return Err(refused(109015, "OfferTreatment", offer)),
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
                _ => return Err(refused(code, field, v)),
            }
        }
    }
    Ok(())
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

/// The checks a callback at `at` (ASAP when `None`) passes in the segment's live state.
fn accepts_callback(
    cx: &Cx<'_>,
    seg: &Segment,
    state: &SegmentState,
    at: Option<SystemTime>,
) -> Result<(), Reply> {
    match at {
        None if state.operation_mode != "Normal" => Err(Reply::error(
            MODE_REFUSED,
            format!("{} mode takes no ASAP callbacks", state.operation_mode),
        )),
        None => Ok(()),
        Some(at) => {
            let model = seg.model().map_err(|why| Reply::error(UNEXPECTED, why))?;
            crate::settings::check_appointment(seg, &model, state, cx.now, at)
                .map_err(|code| Reply::error(code, "appointment time refused by the segment"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads and the transition
// ---------------------------------------------------------------------------------------------

/// Loads a live interaction of this PTK tenant (109000 when its state does not read).
async fn load_live(cx: &Cx<'_>, ptk: &str, id: &str) -> Result<Option<Interaction>, Reply> {
    let entity = cx
        .gw
        .load(store::key(cx.tenant, id))
        .await
        .map_err(|e| store::storage(&e))?;
    match store::read(entity.as_ref()) {
        Stored::Live(i) => Ok((i.tenant == ptk).then_some(i)),
        Stored::Unreadable(why) => Err(model::unreadable(&why)),
        Stored::Absent | Stored::Ended => Ok(None),
    }
}

/// Who owns an alias in this PTK tenant: `(id, live)`, or `None` when nobody holds it.
async fn owner(cx: &Cx<'_>, namespace: &str, value: &str) -> Result<Option<(String, bool)>, Reply> {
    let found = cx
        .gw
        .find(cx.tenant, namespace, value)
        .await
        .map_err(|e| store::storage(&e))?;
    let Some(e) = found else { return Ok(None) };
    match store::read(Some(&e)) {
        Stored::Live(i) => Ok(Some((i.id, true))),
        Stored::Ended => Ok(Some((e.key.id, false))),
        Stored::Absent => Ok(None),
        Stored::Unreadable(why) => Err(model::unreadable(&why)),
    }
}

/// The live interaction owning an alias, rendered as AddInteraction answers it.
async fn live_owner(
    cx: &Cx<'_>,
    namespace: &str,
    value: &str,
) -> Result<Option<Interaction>, Reply> {
    let found = cx
        .gw
        .find(cx.tenant, namespace, value)
        .await
        .map_err(|e| store::storage(&e))?;
    match store::read(found.as_ref()) {
        Stored::Live(i) => Ok(Some(i)),
        Stored::Unreadable(why) => Err(model::unreadable(&why)),
        Stored::Absent | Stored::Ended => Ok(None),
    }
}

/// What a transition answered, with alias conflicts mapped to their codes.
fn finish(ran: Ran) -> Reply {
    match ran {
        Ran::Done { reply } => reply,
        Ran::Refused(reply) => reply,
        Ran::Taken { namespace } => taken(&namespace),
    }
}

/// The code for an alias another interaction holds.
fn taken(namespace: &str) -> Reply {
    match namespace {
        EXTERNAL => Reply::error(
            EXTERNAL_DUPLICATE,
            "the external tracking id belongs to another interaction",
        ),
        CONTACT => Reply::error(
            DUPLICATE_CONTACT,
            "another callback for this contact is pending in this queue",
        ),
        _ => Reply::error(UNEXPECTED, format!("alias {namespace} taken")),
    }
}

/// Runs `step` on the interaction of the request: the one transition of a report or change.
async fn on_interaction<F>(cx: &Cx<'_>, ptk: &str, id: &str, step: F) -> Ran
where
    F: FnMut(&Stored) -> Result<Step, Reply> + Send,
{
    on_slots(cx, ptk, id, (None, None), step).await
}

/// [`on_interaction`] for a method that knows the slots it leaves and takes.
async fn on_slots<F>(cx: &Cx<'_>, ptk: &str, id: &str, slots: store::Slots, step: F) -> Ran
where
    F: FnMut(&Stored) -> Result<Step, Reply> + Send,
{
    store::run(cx.gw, cx.tenant, cx.settings, ptk, id, cx.now, slots, step).await
}

/// The slots a (re)booking leaves and takes: `current`'s, and the one holding `at` in `seg`.
fn booking(
    cx: &Cx<'_>,
    current: &Interaction,
    seg: &Segment,
    at: Option<SystemTime>,
) -> store::Slots {
    let taken = at.map(|at| {
        let slot = crate::settings::slot_start(seg, at);
        store::slot_key(cx.tenant, &current.tenant, &seg.name, slot)
    });
    (store::slot_of(cx.tenant, current), taken)
}

/// Runs `step` on the PTK tenant's live interaction `id` (an ended one answers `ended`, see
/// [`model::live`]).
async fn on_live<F>(cx: &Cx<'_>, ptk: &str, id: &str, ended: Option<u32>, mut step: F) -> Answered
where
    F: FnMut(&Interaction) -> Result<Step, Reply> + Send,
{
    Ok(finish(
        on_interaction(cx, ptk, id, |stored| step(model::live(stored, ptk, ended)?)).await,
    ))
}

/// Creates a new interaction with a fresh id: `make` builds its first step (booking `slot`,
/// if any); an id already in use (another instance drew the same) is retried with another.
async fn create<F>(cx: &Cx<'_>, ptk: &str, slot: Option<EntityKey>, mut make: F) -> Ran
where
    F: FnMut(&str) -> Result<Step, Reply> + Send,
{
    for _ in 0..ivrgate_adapter::state::REPLAN_ATTEMPTS {
        let id = interaction::new_id(cx.now);
        let mut collided = false;
        let ran = on_slots(cx, ptk, &id, (None, slot.clone()), |stored| {
            collided = !matches!(stored, Stored::Absent);
            if collided {
                return Err(Reply::code(0));
            }
            make(&id)
        })
        .await;
        if !collided {
            return ran;
        }
    }
    Ran::Refused(Reply::error(UNEXPECTED, "no free interaction id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_segment_state_answer_is_checked_field_by_field() {
        let seg: Segment =
            serde_json::from_value(json!({"tenant": "T", "name": "S"})).expect("segment");
        let model = seg.model().expect("model");
        let configured = SegmentState::configured(&seg, &model, SystemTime::UNIX_EPOCH);
        let mut state = configured.clone();
        let answer = json!({"operationmode": "standby", "EWT": "120", "QueueMode": "Q"});
        over_configured(&mut state, &seg, answer.as_object().expect("object")).expect("valid");
        assert_eq!(state.operation_mode, "Standby");
        assert_eq!(state.ewt_s, 120);
        assert_eq!(state.offer_treatment, 0, "no offer outside Normal mode");
        assert_eq!(state.queue_mode, "Q");
        for (answer, code) in [
            (json!({"OperationMode": "Asleep"}), 107004),
            (json!({"EWT": -1}), 109012),
            (json!({"OfferTreatment": 2}), 109015),
            (json!({"ModeStatus": 1}), 109024),
            (json!({"RecommendedDestination": false}), 109025),
            (json!({"QueueMode": " "}), 109036),
        ] {
            let mut state = configured.clone();
            let refused = over_configured(&mut state, &seg, answer.as_object().expect("object"))
                .expect_err("refused");
            assert_eq!(refused.code, code, "{answer}");
        }
    }
}
