//! A VXML Interaction Server's side of a call to the Mindful Callback Platform Toolkit (seed
//! 004), in SOAP 1.1: GetSegmentState (the `decision.segment_state` webhook), then
//! CreateInteraction, the callback offer (the caller's key: 1 a callback, else hold), and the
//! state reports a real call makes: InteractionRequestContact, the due callback
//! (`callback.due`) placed by the platform's dialer, InteractionOutboundConnected,
//! InteractionQueued and InteractionDequeued; or InteractionQueued on hold and
//! InteractionDequeued; or InteractionDisconnectedByApplication outside Normal mode.

use std::time::Duration;

use ivrgate_wire::soap::{self, Builder, Element};

use super::{Sim, TransferOutcome};

/// The namespace requests are written in (PTK matches elements by local name).
const NS: &str = "http://ivrgate.dev/ptk/2026/01";
/// PTK's "request completed".
const COMPLETED: &str = "107000";
/// The skill the simulated queue reports.
const SKILL: &str = "1000";

/// Plays one call to its end.
pub async fn play(sim: &mut Sim<'_>) -> Result<(), String> {
    let tenant = sim.scenario.ptk_tenant.clone();
    let segment = sim.scenario.segment.clone();
    let caller = sim.scenario.caller.clone();
    sim.step(&format!(
        "a call from {caller} to {} reaches the VXML interaction server for segment {segment} ({tenant})",
        sim.scenario.called
    ));
    let mut b = Builder::new();
    b.start("data")
        .leaf("Tenant", &tenant)
        .leaf("Segment", &segment)
        .end();
    let state = call(sim, "GetSegmentState", b).await?;
    let status = code(&state);
    if status != COMPLETED {
        sim.finding(format!(
            "GetSegmentState answered {status} ({}): the IVR cannot use the segment's state",
            describe(&state)
        ));
        return Ok(());
    }
    let value = |name: &str| {
        state
            .child("Data")
            .and_then(|d| d.child("Segments"))
            .and_then(|s| s.child("Segment"))
            .and_then(|s| s.child("StateData"))
            .and_then(|s| {
                s.all("StateData")
                    .find(|d| d.attr("Name").is_some_and(|n| n.eq_ignore_ascii_case(name)))
                    .and_then(|d| d.attr("Value"))
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    };
    let mode = value("OperationMode");
    let offer = value("OfferTreatment") == "1";
    sim.step(&format!(
        "the segment is in {mode} mode, estimated wait {} s; callback {}",
        value("EWT"),
        if offer { "offered" } else { "not offered" }
    ));
    let mut b = Builder::new();
    b.leaf("Tenant", &tenant)
        .leaf("Segment", &segment)
        .leaf("Contact", &caller);
    let created = call(sim, "CreateInteraction", b).await?;
    if code(&created) != COMPLETED {
        sim.finding(format!(
            "CreateInteraction answered {} ({})",
            code(&created),
            describe(&created)
        ));
        return Ok(());
    }
    let id = created
        .child_value("InteractionId")
        .unwrap_or_default()
        .to_owned();
    sim.step(&format!("the interaction is {id}"));
    if !mode.eq_ignore_ascii_case("Normal") {
        sim.step(&format!(
            "outside Normal mode the IVR plays its {mode} message and ends the call"
        ));
        let reason = if mode.eq_ignore_ascii_case("AfterHours") {
            "AfterHours"
        } else {
            "Other"
        };
        return report(
            sim,
            &tenant,
            &id,
            "InteractionDisconnectedByApplication",
            &[("Reason", reason)],
        )
        .await;
    }
    let callback = if offer {
        sim.step("plays the offer: press 1 for a callback, 2 to hold");
        if !sim.may_decide() {
            return report(
                sim,
                &tenant,
                &id,
                "InteractionDisconnectedByCaller",
                &[("Reason", "Abandon")],
            )
            .await;
        }
        sim.press().await == "1"
    } else {
        false
    };
    if callback {
        return callback_path(sim, &tenant, &id, &caller).await;
    }
    report(
        sim,
        &tenant,
        &id,
        "InteractionQueued",
        &[("SkillId", SKILL)],
    )
    .await?;
    sim.step("the caller holds in the queue");
    match sim.scenario.transfer {
        TransferOutcome::Answered => {
            sim.step("an agent answers");
            report(
                sim,
                &tenant,
                &id,
                "InteractionDequeued",
                &[("Reason", "AgentAnswered")],
            )
            .await
        }
        _ => {
            sim.caller("gives up waiting and hangs up");
            report(
                sim,
                &tenant,
                &id,
                "InteractionDequeued",
                &[("Reason", "Abandoned")],
            )
            .await
        }
    }
}

/// The caller takes the callback: requested, due, placed by the platform's dialer.
async fn callback_path(
    sim: &mut Sim<'_>,
    tenant: &str,
    id: &str,
    caller: &str,
) -> Result<(), String> {
    let uri = format!("voice://{caller}/");
    report(
        sim,
        tenant,
        id,
        "InteractionRequestContact",
        &[("ContactURI", &uri)],
    )
    .await?;
    sim.step("the caller hangs up and waits for the callback");
    if !sim.wait_for("callback.due", Duration::from_secs(15)).await {
        sim.finding("the callback never fell due (no callback.due within 15 s)".into());
        return Ok(());
    }
    sim.step(&format!(
        "the callback is due: the platform's dialer calls {caller}"
    ));
    match sim.scenario.transfer {
        TransferOutcome::Answered => {
            report(sim, tenant, id, "InteractionOutboundConnected", &[]).await?;
            report(sim, tenant, id, "InteractionQueued", &[("SkillId", SKILL)]).await?;
            sim.step("an agent answers the called-back caller");
            report(
                sim,
                tenant,
                id,
                "InteractionDequeued",
                &[("Reason", "AgentAnswered")],
            )
            .await
        }
        TransferOutcome::Busy | TransferOutcome::NoAnswer => {
            let reason = if sim.scenario.transfer == TransferOutcome::Busy {
                "Busy"
            } else {
                "NoAnswer"
            };
            report(
                sim,
                tenant,
                id,
                "InteractionOutboundAttemptFailed",
                &[("Reason", reason)],
            )
            .await?;
            sim.step("the attempt failed; the platform keeps the callback for a later attempt (the simulation ends here)");
            Ok(())
        }
    }
}

/// A state report on the interaction; its status code must be 107000.
async fn report(
    sim: &mut Sim<'_>,
    tenant: &str,
    id: &str,
    method: &str,
    params: &[(&str, &str)],
) -> Result<(), String> {
    let mut b = Builder::new();
    b.leaf("Tenant", tenant).leaf("InteractionId", id);
    for (name, value) in params {
        b.leaf(name, value);
    }
    let answer = call(sim, method, b).await?;
    let status = code(&answer);
    if status == COMPLETED {
        sim.step(&format!("{method}: 107000, request completed"));
    } else {
        sim.finding(format!(
            "{method} answered {status} ({})",
            describe(&answer)
        ));
    }
    Ok(())
}

/// One PTK method; the `{method}Result` element.
async fn call(
    sim: &mut Sim<'_>,
    method: &str,
    params: Builder,
) -> Result<Element<'static>, String> {
    let body = soap::write_request(method, NS, params);
    let path = sim.path("ptk", "");
    let reply = sim
        .request(
            &format!("{method} (SOAP 1.1)"),
            http::Method::POST,
            &path,
            "text/xml; charset=utf-8",
            body.into_bytes(),
        )
        .await?;
    let result = soap::read_response(
        &reply.body,
        Some(&reply.content_type),
        method,
        &soap::Limits::default(),
    )
    .map_err(|e| format!("{method}: {e}"))?;
    // Made up by ivrgate for this run: the interaction's id, each answer's Guid and Id.
    for value in [
        result.child_value("InteractionId"),
        result.child_value("Guid"),
        result.child("Header").and_then(|h| h.child_value("Id")),
    ]
    .into_iter()
    .flatten()
    {
        sim.volatile(value.trim());
    }
    Ok(result)
}

/// The status code of either answer shape.
fn code(result: &Element<'_>) -> String {
    result
        .child_value("ResultCode")
        .or_else(|| {
            result
                .child("Header")
                .and_then(|h| h.child("Status"))
                .and_then(|s| s.child_value("Code"))
        })
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn describe(result: &Element<'_>) -> String {
    result
        .child_value("Description")
        .or_else(|| {
            result
                .child("Header")
                .and_then(|h| h.child("Status"))
                .and_then(|s| s.child_value("Description"))
        })
        .unwrap_or("")
        .trim()
        .to_owned()
}
