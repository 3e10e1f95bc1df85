//! The model's rules without a server: each step from a typed interaction to its effect.

use std::time::{Duration, SystemTime};

use ivrgate_adapter::{AliasChange, TimerChange};
use serde_json::{json, Value};

use super::*;
use crate::state::{Interaction, InteractionType, Licence, LicenceCounter, Status, Stored};

/// 2026-11-23T15:00:00Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_446_000)
}

fn settings(more: Value) -> Settings {
    let mut section = json!({
        "tenants": ["T"],
        "segments": [
            {"tenant": "T", "name": "S", "queue": "Q", "max_attempts": 3, "retry_interval_s": 600,
             "variables": {"BUSYATTEMPTS": "2"}},
            {"tenant": "T", "name": "Loose", "double_check": false},
        ],
    });
    if let (Some(target), Value::Object(more)) = (section.as_object_mut(), more) {
        target.extend(more);
    }
    Settings::parse(&section).expect("settings")
}

fn ctx(settings: &Settings) -> Ctx<'_> {
    Ctx {
        now: now(),
        method: "Test",
        settings,
        params: None,
    }
}

fn interaction(status: Status) -> Interaction {
    let mut i = Interaction::new("V0001000000000123112026150000000", "T", format_time(now()));
    i.segment = Some("S".into());
    i.queue = Some("Q".into());
    i.contact = Some("5551234".into());
    i.status = status;
    i.client_id = Some("c1".into());
    i.external_id = Some("e1".into());
    i.licence = Some(Licence::Callback);
    i
}

fn kinds(step: &Step) -> Vec<String> {
    step.events.iter().map(|e| e.event_type.clone()).collect()
}

fn aliases(step: &Step) -> Vec<String> {
    step.aliases
        .iter()
        .map(|a| match a {
            AliasChange::Claim {
                namespace,
                value,
                until,
            } => format!(
                "claim {namespace} {value}{}",
                if until.is_some() { " for a while" } else { "" }
            ),
            AliasChange::Release { namespace, value } => format!("release {namespace} {value}"),
        })
        .collect()
}

fn timers(step: &Step) -> Vec<String> {
    step.timers
        .iter()
        .map(|t| match t {
            TimerChange::Set { name, payload, .. } => format!("set {name} {payload}"),
            TimerChange::Cancel { name } => format!("cancel {name}"),
        })
        .collect()
}

#[test]
fn the_live_interaction_else_ended_else_not_found_and_unreadable_is_internal() {
    let live_one = Stored::Live(interaction(Status::Inbound));
    assert!(live(&live_one, "T", None).is_ok());
    assert_eq!(
        live(&live_one, "Other", Some(STATE_PREVENTS))
            .map_err(|r| r.code)
            .err(),
        Some(NOT_FOUND)
    );
    assert_eq!(
        live(&Stored::Ended, "T", Some(CANNOT_CANCEL))
            .map_err(|r| r.code)
            .err(),
        Some(CANNOT_CANCEL)
    );
    assert_eq!(
        live(&Stored::Ended, "T", None).map_err(|r| r.code).err(),
        Some(NOT_FOUND)
    );
    assert_eq!(
        live(&Stored::Absent, "T", Some(CANNOT_CANCEL))
            .map_err(|r| r.code)
            .err(),
        Some(NOT_FOUND)
    );
    let refused =
        live(&Stored::Unreadable("bad".into()), "T", Some(CANNOT_CANCEL)).expect_err("refused");
    assert_eq!(refused.code, UNEXPECTED);
    assert!(
        refused.internal,
        "an internal error, logged and counted as one"
    );
}

#[test]
fn ending_releases_the_contact_and_client_id_and_keeps_the_external_id_a_day() {
    let s = settings(json!({}));
    let step =
        cancelled(&ctx(&s), &interaction(Status::CallbackPending), "Caller").expect("cancelled");
    assert!(step.next.is_none(), "ended");
    assert_eq!(kinds(&step), ["ptk.interaction.cancelled"]);
    assert_eq!(step.events[0].data["status"], json!("Cancelled"));
    assert_eq!(step.events[0].data["cancelled_by"], json!("Caller"));
    assert_eq!(
        aliases(&step),
        [
            "release ptk.contact T/Q/5551234",
            "release ptk.client T/c1",
            "claim ptk.external T/e1 for a while",
        ]
    );
    assert_eq!(timers(&step), ["cancel callback.due"]);
    let refused =
        cancelled(&ctx(&s), &interaction(Status::QueuedHold), "Caller").expect_err("refused");
    assert_eq!(refused.code, CANNOT_CANCEL);
}

#[test]
fn reports_move_through_the_queues_as_the_status_allows() {
    let s = settings(json!({}));
    let cx = ctx(&s);
    let seg = s.segment("T", "S");
    for (from, to) in [
        (Status::Inbound, Some(Status::QueuedHold)),
        (Status::QueuedHold, Some(Status::QueuedHold)),
        (Status::OutboundConnected, Some(Status::QueuedCallback)),
        (Status::QueuedCallback, Some(Status::QueuedCallback)),
        (Status::CallbackPending, None),
        (Status::CallbackDue, None),
    ] {
        let got = queued(&cx, &interaction(from), seg, Some("e1"), "100");
        match (got, to) {
            (Ok(step), Some(to)) => {
                let next = step.next.as_ref().expect("live");
                assert_eq!(next.status, to);
                assert_eq!(next.skill.as_deref(), Some("100"));
                assert!(
                    step.aliases.is_empty(),
                    "its own external id is not claimed again"
                );
            }
            (Err(refused), None) => assert_eq!(refused.code, STATE_PREVENTS),
            (got, _) => panic!("{from:?}: {got:?}"),
        }
    }
    let step = queued(&cx, &interaction(Status::Inbound), seg, Some("e2"), "100").expect("queued");
    assert_eq!(aliases(&step), ["claim ptk.external T/e2"]);
    assert_eq!(step.events[0].data["queue_kind"], json!("hold"));
    // Dequeued ends it; only from a queue.
    let step = dequeued(&cx, &interaction(Status::QueuedCallback), "AgentAnswered").expect("out");
    assert_eq!(step.events[0].data["status"], json!("Completed"));
    assert_eq!(step.events[0].data["queue_kind"], json!("callback"));
    assert_eq!(
        dequeued(&cx, &interaction(Status::Inbound), "Abandoned")
            .map_err(|r| r.code)
            .err(),
        Some(STATE_PREVENTS)
    );
    // Disconnected by the caller only in treatment or a queue.
    assert!(disconnected_by_caller(&cx, &interaction(Status::Inbound), "Abandon").is_ok());
    assert_eq!(
        disconnected_by_caller(&cx, &interaction(Status::CallbackDue), "Abandon")
            .map_err(|r| r.code)
            .err(),
        Some(CANNOT_DISCONNECT)
    );
    // Connected: the due timer goes.
    let step = outbound_connected(&cx, &interaction(Status::CallbackDue)).expect("connected");
    assert_eq!(
        step.next.as_ref().map(|i| i.status),
        Some(Status::OutboundConnected)
    );
    assert_eq!(timers(&step), ["cancel callback.due"]);
}

#[test]
fn a_failed_attempt_is_rescheduled_until_the_attempts_or_its_reason_run_out() {
    let s = settings(json!({}));
    let cx = ctx(&s);
    let step =
        attempt_failed(&cx, &interaction(Status::CallbackDue), "NoAnswer", &None).expect("ok");
    let next = step.next.as_ref().expect("rescheduled");
    assert_eq!(next.status, Status::CallbackPending);
    assert_eq!(next.attempts, 1);
    assert_eq!(next.failures.get("NoAnswer"), Some(&1));
    assert_eq!(next.due.as_deref(), Some("2026-11-23T15:10:00Z"));
    assert_eq!(
        timers(&step),
        [r#"set callback.due {"due":"2026-11-23T15:10:00Z"}"#]
    );
    assert_eq!(step.events[0].data["next"], json!("rescheduled"));
    // The segment's max_attempts (3).
    let mut twice = interaction(Status::CallbackDue);
    twice.attempts = 2;
    let step = attempt_failed(&cx, &twice, "NoAnswer", &None).expect("ok");
    assert!(step.next.is_none());
    assert_eq!(step.events[0].data["status"], json!("Failed"));
    assert_eq!(step.events[0].data["next"], json!("completed"));
    // BUSYATTEMPTS = 2: the second Busy ends it, with DataName kept in its last state.
    let mut busy = interaction(Status::CallbackDue);
    busy.failures.insert("Busy".into(), 1);
    let data = Some(("why".to_owned(), "line busy".to_owned()));
    let step = attempt_failed(&cx, &busy, "Busy", &data).expect("ok");
    assert!(step.next.is_none());
    assert_eq!(
        step.events[0].data["user_data"],
        json!({"why": "line busy"})
    );
    // Abandon ends it at once; a queued interaction has no attempt.
    assert!(
        attempt_failed(&cx, &interaction(Status::CallbackDue), "Abandon", &None)
            .expect("ok")
            .next
            .is_none()
    );
    assert_eq!(
        attempt_failed(&cx, &interaction(Status::QueuedHold), "Busy", &None)
            .map_err(|r| r.code)
            .err(),
        Some(STATE_PREVENTS)
    );
}

#[test]
fn callbacks_asap_and_booked_claim_the_contact_where_double_checked() {
    let s = settings(json!({}));
    let cx = ctx(&s);
    let seg = s.segment("T", "S").expect("segment");
    let mut inbound = interaction(Status::Inbound);
    inbound.contact = None;
    let step =
        request_contact(&cx, &inbound, seg, "5559999", None, "voice://5559999/").expect("ok");
    let next = step.next.as_ref().expect("live");
    assert_eq!(next.interaction_type, InteractionType::Fifo);
    assert_eq!(next.due.as_deref(), Some("2026-11-23T15:00:00Z"));
    assert_eq!(aliases(&step), ["claim ptk.contact T/Q/5559999"]);
    let at = now() + Duration::from_secs(3600 + 420);
    let step = request_contact(
        &cx,
        &interaction(Status::QueuedHold),
        seg,
        "5559999",
        Some(at),
        "u",
    )
    .expect("ok");
    let next = step.next.as_ref().expect("live");
    assert_eq!(next.interaction_type, InteractionType::Appointment);
    assert_eq!(next.appointment.as_deref(), Some("2026-11-23T16:07:00Z"));
    assert_eq!(
        next.slot,
        Some(1_795_449_600),
        "the 16:00 slot of 15 minutes"
    );
    assert_eq!(
        aliases(&step),
        [
            "release ptk.contact T/Q/5551234",
            "claim ptk.contact T/Q/5559999"
        ]
    );
    // Without double check no claim is made.
    let loose = s.segment("T", "Loose").expect("segment");
    let step = request_contact(&cx, &inbound, loose, "5559999", None, "u").expect("ok");
    assert!(step.aliases.is_empty(), "{:?}", aliases(&step));
    assert_eq!(
        request_contact(
            &cx,
            &interaction(Status::CallbackDue),
            seg,
            "5559999",
            None,
            "u"
        )
        .map_err(|r| r.code)
        .err(),
        Some(STATE_PREVENTS)
    );
}

#[test]
fn new_interactions_take_their_licence_and_claims() {
    let s = settings(json!({}));
    let cx = ctx(&s);
    let seg = s.segment("T", "S").expect("segment");
    let args = AddArgs {
        ptk: "T".into(),
        contact: "5551234".into(),
        at: None,
        client: Some("c9".into()),
        source_application: None,
    };
    let step = add(&cx, "V1", &args, seg, UserData::new());
    let i = step.next.as_ref().expect("created");
    assert_eq!(i.licence, Some(Licence::Callback));
    assert!(i.holds_licence());
    assert_eq!(i.source_application.as_deref(), Some("Platform Toolkit"));
    assert!(step.counts_request);
    assert_eq!(
        aliases(&step),
        ["claim ptk.contact T/Q/5551234", "claim ptk.client T/c9"]
    );
    assert!(
        step.reply.data.contains("InteractionType=\"FIFO\""),
        "{}",
        step.reply.data
    );
    let step = create(&cx, "V2", "T", seg, Some("x1"), None, UserData::new());
    let i = step.next.as_ref().expect("created");
    assert_eq!(
        (i.status, i.licence),
        (Status::Inbound, Some(Licence::Voice))
    );
    assert_eq!(aliases(&step), ["claim ptk.external T/x1"]);
    // The voice licence is held only during the inbound treatment.
    let mut queued_one = i.clone();
    queued_one.status = Status::QueuedHold;
    assert!(i.holds_licence() && !queued_one.holds_licence());
    let step = queued_new(&cx, "V3", "T", Some(seg), None, "100");
    assert_eq!(
        kinds(&step),
        ["ptk.interaction.created", "ptk.interaction.queued"]
    );
    assert_eq!(step.reply.code, COMPLETED_WITH_ID);
    assert!(!step.next.as_ref().expect("created").holds_licence());
}

#[test]
fn licences_and_the_request_quota_are_counted_in_their_window() {
    let s =
        settings(json!({"licences": 2, "licence_requests_per_window": 2, "licence_window_s": 60}));
    let start = LicenceCounter {
        window_start: 1000,
        count: 0,
        live: 0,
    };
    let taken = account_licence(start, &s, 1010, true, false, true)
        .expect("ok")
        .expect("changed");
    assert_eq!(
        taken,
        LicenceCounter {
            window_start: 1000,
            count: 1,
            live: 1
        }
    );
    let full = LicenceCounter {
        window_start: 1000,
        count: 2,
        live: 1,
    };
    assert_eq!(
        account_licence(full, &s, 1059, true, false, true)
            .map_err(|r| r.code)
            .err(),
        Some(BANDWIDTH_EXCEEDED)
    );
    // A new window starts counting again.
    let later = account_licence(full, &s, 1060, true, false, true)
        .expect("ok")
        .expect("changed");
    assert_eq!(
        later,
        LicenceCounter {
            window_start: 1060,
            count: 1,
            live: 2
        }
    );
    assert_eq!(
        account_licence(later, &s, 1061, false, false, true)
            .map_err(|r| r.code)
            .err(),
        Some(LICENCE_UNAVAILABLE)
    );
    let released = account_licence(later, &s, 1061, false, true, false).expect("ok");
    assert_eq!(released.map(|l| l.live), Some(1));
    assert_eq!(
        account_licence(later, &s, 1061, false, true, true).map_err(|r| r.code),
        Ok(None),
        "unchanged"
    );
    assert_eq!(book_slot(3, 4).map_err(|r| r.code), Ok(4));
    assert_eq!(book_slot(4, 4).map_err(|r| r.code), Err(TIME_FULL));
}

#[test]
fn client_id_and_external_id_changes_move_their_claims() {
    let s = settings(json!({}));
    let cx = ctx(&s);
    let i = interaction(Status::CallbackPending);
    let step = set_client_id(&cx, &i, "c2");
    assert_eq!(
        step.next.as_ref().and_then(|n| n.client_id.as_deref()),
        Some("c2")
    );
    assert_eq!(
        aliases(&step),
        ["release ptk.client T/c1", "claim ptk.client T/c2"]
    );
    assert_eq!(
        aliases(&set_client_id(&cx, &i, "c1")),
        ["claim ptk.client T/c1"]
    );
    let step = set_external(&cx, &i, "e2");
    assert_eq!(
        aliases(&step),
        ["release ptk.external T/e1", "claim ptk.external T/e2"]
    );
    assert_eq!(kinds(&step), ["ptk.interaction.external_id_associated"]);
}

#[test]
fn update_interaction_data_applies_every_value_in_one_step() {
    let s = settings(json!({}));
    let cx = ctx(&s);
    let i = interaction(Status::CallbackPending);
    let seg = s.segment("T", "S").expect("segment");
    let at = now() + Duration::from_secs(7200);
    let updates = [
        Update::Contact("5552222".into()),
        Update::Appointment(at, seg),
        Update::External("e2".into()),
    ];
    let step = update_interaction_data(&cx, &i, &updates).expect("ok");
    let next = step.next.as_ref().expect("live");
    assert_eq!(next.contact.as_deref(), Some("5552222"));
    assert_eq!(next.appointment.as_deref(), Some("2026-11-23T17:00:00Z"));
    assert_eq!(next.external_id.as_deref(), Some("e2"));
    assert_eq!(
        kinds(&step),
        [
            "ptk.interaction.modified",
            "ptk.interaction.modified",
            "ptk.interaction.external_id_associated"
        ]
    );
    assert_eq!(step.reply.code, COMPLETED);
    // One value refused: its code; the others are still written.
    let updates = [Update::Contact("12".into()), Update::External("e2".into())];
    let step = update_interaction_data(&cx, &i, &updates).expect("written");
    assert_eq!(step.reply.code, INVALID_CONTACT);
    assert_eq!(kinds(&step), ["ptk.interaction.external_id_associated"]);
    // Two refused: 109031; all refused: nothing is written.
    let updates = [
        Update::Contact("12".into()),
        Update::Refused(Reply::error(KEY_NOT_SUPPORTED, "no")),
    ];
    let refused = update_interaction_data(&cx, &i, &updates).expect_err("nothing to write");
    assert_eq!(refused.code, UPDATE_FAILED);
}

#[test]
fn timers_act_only_on_what_they_were_set_for() {
    let s = settings(json!({}));
    let cx = Ctx {
        method: "timer",
        ..ctx(&s)
    };
    let mut pending = interaction(Status::CallbackPending);
    pending.due = Some("2026-11-23T15:00:00Z".into());
    let stored = Stored::Live(pending.clone());
    let step = fall_due(&cx, &stored, "2026-11-23T15:00:00Z").expect("due");
    assert_eq!(
        step.next.as_ref().map(|i| i.status),
        Some(Status::CallbackDue)
    );
    assert_eq!(kinds(&step), ["callback.due"]);
    assert_eq!(step.events[0].data["method"], json!("timer"));
    assert!(
        fall_due(&cx, &stored, "2026-11-23T16:00:00Z")
            .expect("moved")
            .keep
    );
    assert!(fall_due(&cx, &Stored::Ended, "x").expect("ended").keep);
    let refused = fall_due(&cx, &Stored::Unreadable("bad".into()), "x").expect_err("unreadable");
    assert!(refused.internal);
    // Idle: a pending callback waits; a report within idle_expiry_s keeps it.
    assert!(expire_idle(&cx, &stored).expect("pending").keep);
    let mut queued_one = interaction(Status::QueuedHold);
    queued_one.touched = Some("2026-11-23T00:00:00Z".into());
    assert!(
        expire_idle(&cx, &Stored::Live(queued_one.clone()))
            .expect("recent")
            .keep
    );
    queued_one.touched = Some("2026-11-22T14:59:59Z".into());
    let step = expire_idle(&cx, &Stored::Live(queued_one)).expect("idle");
    assert!(step.next.is_none());
    assert_eq!(step.events[0].data["status"], json!("Expired"));
    assert!(expire_idle(&cx, &Stored::Unreadable("bad".into())).is_err());
}
