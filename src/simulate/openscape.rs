//! An OpenScape Contact Center IVR script's side of a call (seed 000, "Unmonitored IVR system
//! Step Sequence (IVR Hold)"), in XML-RPC on the channel's URL: Initialize, SetCallInfo,
//! QueryCallInfo (`"1;"`), the caller's menu choice as contact data, QueryRoutingInfo (the
//! `decision.routing_info` webhook), then what its return code says: Enqueue and
//! QueryCallStatus until the contact centre assigns the call (through the command API, as the
//! customer's system would), or the transfer, or the disconnect; CallerDisconnected ends it.

use ivrgate_wire::xmlrpc::{self, Value as X};
use serde_json::{Map, Value};

use super::{Sim, TransferOutcome};

/// The extension the simulated contact centre assigns a queued call to.
const EXTENSION: &str = "4711";

/// Plays one call to its end.
pub async fn play(sim: &mut Sim<'_>) -> Result<(), String> {
    let ani_dnis = format!("{};{}", sim.scenario.caller, sim.scenario.called);
    sim.step(&format!(
        "an unmonitored IVR answers a call from {} to {} on channel {}",
        sim.scenario.caller, sim.scenario.called, sim.scenario.channel
    ));
    let r = call(
        sim,
        "Initialize",
        vec![X::Int(6060), s("6000@ccserver"), X::Int(10_000)],
    )
    .await?;
    expect_ok(&r, "Initialize")?;
    let r = call(
        sim,
        "SetCallInfo",
        vec![
            s(&sim.scenario.caller.clone()),
            s(&sim.scenario.called.clone()),
        ],
    )
    .await?;
    expect_ok(&r, "SetCallInfo")?;
    let channel = sim.scenario.channel.clone();
    let mut params = vec![s(&channel)];
    params.extend(
        [
            "CallID",
            "originalANI",
            "originalDNIS",
            "UUID",
            "Visits",
            "FMNQ",
            "InternalANI",
            "InternalDNIS",
        ]
        .iter()
        .map(|n| out(n)),
    );
    params.push(s("1;"));
    let r = call(sim, "QueryCallInfo", params).await?;
    expect_ok(&r, "QueryCallInfo")?;
    let call_id = text(&r, "CallID");
    sim.volatile(&call_id);
    sim.step(&format!(
        "the call is {call_id} in OpenScape Contact Center"
    ));
    // The script's own main menu: the caller's choice goes to the routing as contact data.
    let key = sim.press().await;
    let r = call(
        sim,
        "SetContactData",
        vec![s(&call_id), s("Choice"), s(&key)],
    )
    .await?;
    expect_ok(&r, "SetContactData")?;
    if !sim.may_decide() {
        return disconnect(sim, &call_id, 2, "the caller hangs up in the IVR").await;
    }
    let mut params = vec![s(&call_id)];
    params.extend(
        [
            "Destination",
            "AgentID",
            "AgentWaitTime",
            "Description",
            "InitialPriority",
            "EstimatedWait",
            "CallsInQueue",
        ]
        .iter()
        .map(|n| out(n)),
    );
    params.push(s(&ani_dnis));
    let r = call(sim, "QueryRoutingInfo", params).await?;
    let destination = text(&r, "Destination");
    match code(&r) {
        0 => {
            let queue = destination;
            let agent = text(&r, "AgentID");
            sim.step(&format!(
                "routing says: enqueue in {queue:?}{} (priority {}, {:?})",
                if agent.is_empty() {
                    String::new()
                } else {
                    format!(
                        " reserved for user {agent} up to {} s",
                        text(&r, "AgentWaitTime")
                    )
                },
                text(&r, "InitialPriority"),
                text(&r, "Description")
            ));
            queued(sim, &call_id, &queue, &r, &ani_dnis).await
        }
        1 => disconnect(sim, &call_id, 0, "routing says: disconnect the call").await,
        2 => {
            sim.step(&format!(
                "routing says: transfer to {destination}; the IVR transfers the call"
            ));
            transferred(sim, &call_id, &destination).await
        }
        other => {
            sim.step(&format!(
                "QueryRoutingInfo returned {other} ({}): no routing, so the script's own default handling goes on; the simulated caller hangs up",
                text(&r, "ReturnText")
            ));
            disconnect(sim, &call_id, 2, "the caller hangs up").await
        }
    }
}

/// Enqueue, then QueryCallStatus until the contact centre assigns the call.
async fn queued(
    sim: &mut Sim<'_>,
    call_id: &str,
    queue: &str,
    routing: &Map<String, Value>,
    ani_dnis: &str,
) -> Result<(), String> {
    let priority = routing
        .get("InitialPriority")
        .and_then(Value::as_i64)
        .filter(|p| (1..=100).contains(p))
        .unwrap_or(1);
    let description = text(routing, "Description");
    let r = call(
        sim,
        "Enqueue",
        vec![
            s(call_id),
            X::Int(1),
            s(queue),
            X::Int(priority),
            s(&description),
            out("EstWaitTime"),
            out("CallInQueue"),
            s(ani_dnis),
        ],
    )
    .await?;
    if code(&r) != 0 {
        sim.finding(format!(
            "Enqueue in {queue:?} returned {} ({}): the routing answer names a queue OpenScape cannot take",
            code(&r),
            text(&r, "ReturnText")
        ));
        return disconnect(sim, call_id, 0, "the IVR gives up on the call").await;
    }
    sim.step(&format!(
        "the call waits in {queue:?} (IVR Hold): {} s estimated, {} call(s) in queue",
        text(&r, "EstimatedWait"),
        text(&r, "CallsInQueue")
    ));
    let r = call(sim, "QueryCallStatus", status_params(call_id, 0)).await?;
    sim.step(&format!(
        "QueryCallStatus: {} (position {})",
        code(&r),
        text(&r, "PositionInQueue")
    ));
    if sim.scenario.transfer != TransferOutcome::Answered {
        return disconnect(
            sim,
            call_id,
            2,
            "no user takes the call and the caller abandons in the queue",
        )
        .await;
    }
    // The contact centre (the customer's system, through the command API) assigns it.
    let path = sim.api_path("openscape", &format!("calls/{call_id}/assign"));
    let body = serde_json::json!({ "extension": EXTENSION }).to_string();
    let reply = sim
        .request(
            &format!("command API: assign {call_id} to extension {EXTENSION}"),
            http::Method::POST,
            &path,
            "application/json",
            body.into_bytes(),
        )
        .await?;
    if reply.status != 200 {
        return Err(format!(
            "the command API refused the assignment ({}): {}",
            reply.status,
            reply.text()
        ));
    }
    let r = call(sim, "QueryCallStatus", status_params(call_id, 5_000)).await?;
    if code(&r) == 2 {
        let extension = text(&r, "Extension");
        sim.step(&format!(
            "QueryCallStatus 2 (pending): the IVR transfers the call to extension {extension}"
        ));
        transferred(sim, call_id, &extension).await
    } else {
        sim.finding(format!(
            "QueryCallStatus after the assignment returned {} ({})",
            code(&r),
            text(&r, "ReturnText")
        ));
        disconnect(sim, call_id, 0, "the IVR gives up on the call").await
    }
}

/// The transfer's far end, then CallerDisconnected with "transferred out of scope".
async fn transferred(sim: &mut Sim<'_>, call_id: &str, target: &str) -> Result<(), String> {
    match sim.scenario.transfer {
        TransferOutcome::Answered => {
            sim.step(&format!(
                "{target} answers after {} s; the call has left the IVR",
                sim.scenario.ring_s
            ));
            disconnect(sim, call_id, 1, "the IVR reports the call transferred").await
        }
        TransferOutcome::Busy | TransferOutcome::NoAnswer => {
            disconnect(
                sim,
                call_id,
                2,
                &format!("{target} does not take the call and the caller hangs up"),
            )
            .await
        }
    }
}

/// CallerDisconnected with `term_type` (0 internal, 1 transferred out of scope, 2 abandoned).
async fn disconnect(
    sim: &mut Sim<'_>,
    call_id: &str,
    term_type: i64,
    why: &str,
) -> Result<(), String> {
    sim.step(why);
    let r = call(
        sim,
        "CallerDisconnected",
        vec![s(call_id), X::Int(term_type)],
    )
    .await?;
    expect_ok(&r, "CallerDisconnected")
}

fn status_params(call_id: &str, timeout_ms: i64) -> Vec<X> {
    vec![
        s(call_id),
        X::Int(timeout_ms),
        out("Extension"),
        out("PositionInQueue"),
    ]
}

/// One IVR API function on the channel's URL; the answer's struct.
async fn call(
    sim: &mut Sim<'_>,
    function: &str,
    params: Vec<X>,
) -> Result<Map<String, Value>, String> {
    let path = sim.path("openscape", &format!("/{}", sim.scenario.channel));
    let body = xmlrpc::write_call(&xmlrpc::MethodCall {
        method: function.to_owned(),
        params,
    });
    let reply = sim
        .request(
            function,
            http::Method::POST,
            &path,
            "text/xml",
            body.into_bytes(),
        )
        .await?;
    if reply.status != 200 {
        return Err(format!(
            "{function}: ivrgate answered HTTP {}: {}",
            reply.status,
            reply.text()
        ));
    }
    match xmlrpc::parse_response(&reply.text(), &ivrgate_wire::Limits::default()) {
        Ok(Ok(params)) => match params.first().map(X::to_json) {
            Some(Value::Object(map)) => Ok(map),
            other => Err(format!("{function}: the answer is not a struct: {other:?}")),
        },
        Ok(Err(fault)) => Err(format!(
            "{function}: XML-RPC fault {}: {}",
            fault.code, fault.message
        )),
        Err(e) => Err(format!("{function}: unreadable answer: {e}")),
    }
}

fn expect_ok(r: &Map<String, Value>, function: &str) -> Result<(), String> {
    match code(r) {
        0 => Ok(()),
        other => Err(format!(
            "{function} returned {other} ({})",
            text(r, "ReturnText")
        )),
    }
}

fn code(r: &Map<String, Value>) -> i64 {
    r.get("ReturnCode").and_then(Value::as_i64).unwrap_or(-305)
}

fn text(r: &Map<String, Value>, key: &str) -> String {
    match r.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn s(text: &str) -> X {
    X::Str(text.to_owned())
}

/// A by-reference placeholder (`>Name`).
fn out(name: &str) -> X {
    X::Str(format!(">{name}"))
}
