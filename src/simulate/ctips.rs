//! Aspect CTIPS, where ivrgate is the client: the `ctips-sim` simulator (the CTI Portal
//! Server, checked against the real wire description independently of ivrgate's codec) runs
//! in this process, ivrgate's connector opens its session on it exactly as on a real server,
//! and a call arrives on an externally routed service: CTIPS publishes the RouteRequest to
//! ivrgate's callback service, the connector asks the developer (`decision.route_request`)
//! and answers RouteSelect, CTIPS routes the call (or reports why it cannot), and the caller
//! hangs up. What CTIPS received and published is printed from the simulator's records.

use std::time::Duration;

use ctips_sim::{SimConfig, SERVICE_PATH};

use super::{Sim, TransferOutcome};

/// The account ivrgate's session logs in with.
const USER: &str = "ivrgate";
const PASSWORD: &str = "simulate-password";
/// The service calls arrive on unless the scenario names one: routed externally.
const SERVICE: i64 = 3;
/// The RouteTimeout CTIPS gives ivrgate, in seconds.
const ROUTE_TIMEOUT_S: i64 = 10;
/// Heartbeats, seconds apart.
const HEARTBEAT_S: u64 = 5;

/// Starts one CTI Portal Server on 127.0.0.1.
pub async fn start() -> Result<ctips_sim::Sim, String> {
    ctips_sim::Sim::start(SimConfig {
        ports: vec![0],
        strict: true,
        heartbeat_interval: Duration::from_secs(HEARTBEAT_S),
        users: vec![(USER.into(), PASSWORD.into())],
        route_timeout_secs: ROUTE_TIMEOUT_S,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("cannot start the CTIPS simulator: {e}"))
}

/// The tenant's `[tenants.ctips]` for a session on `server`.
pub fn settings(server: &ctips_sim::Sim) -> toml::Table {
    let mut ctips = toml::Table::new();
    ctips.insert(
        "servers".into(),
        toml::Value::Array(vec![server.url(0).into()]),
    );
    ctips.insert("username".into(), USER.into());
    ctips.insert("password".into(), PASSWORD.into());
    ctips.insert("callback_token".into(), super::hex_id(32).into());
    ctips.insert("heartbeat_interval_s".into(), (HEARTBEAT_S as i64).into());
    // The whole tenant: a call routed to another service is still followed to its end.
    let mut filter = toml::Table::new();
    filter.insert("type".into(), "tenant".into());
    filter.insert("value".into(), "1".into());
    ctips.insert(
        "filters".into(),
        toml::Value::Array(vec![toml::Value::Table(filter)]),
    );
    ctips
}

/// What the simulator has shown so far.
#[derive(Default)]
struct Seen {
    requests: usize,
    callbacks: usize,
}

/// Plays one call to its end.
pub async fn play(sim: &mut Sim<'_>, server: &ctips_sim::Sim) -> Result<(), String> {
    let service: i64 = match &sim.scenario.queue {
        Some(q) => q
            .trim()
            .parse()
            .map_err(|_| format!("queue {q:?} is not a CTIPS service id (a number)"))?,
        None => SERVICE,
    };
    let mut seen = Seen::default();
    sim.step(&format!(
        "a CTI Portal Server listens on {}{SERVICE_PATH}; ivrgate's connector opens its session",
        server.url(0).trim_end_matches(SERVICE_PATH)
    ));
    if !sim
        .wait_for("ctips.session.online", Duration::from_secs(30))
        .await
    {
        show(sim, server, &mut seen);
        return Err("ivrgate's session did not come online within 30 s".into());
    }
    show(sim, server, &mut seen);
    sim.step("the session is online");
    if !sim.may_decide() {
        return Ok(());
    }
    let (caller, called) = (sim.scenario.caller.clone(), sim.scenario.called.clone());
    let call = server.inbound_call(service, &caller, &called, Some(ROUTE_TIMEOUT_S));
    sim.step(&format!(
        "call {call} from {caller} to {called} arrives on service {service}; CTIPS publishes a RouteRequest (RouteTimeout {ROUTE_TIMEOUT_S} s)"
    ));
    // The decision, the RouteSelect and CTIPS's verdict on it; with no RouteSelect in
    // time, CTIPS routes by default (RouteUsed with RequestId 0).
    let outcome = server
        .wait_for(
            Duration::from_secs(ROUTE_TIMEOUT_S as u64 + 5),
            |s: &ctips_sim::Sim| {
                s.callbacks().into_iter().find(|c| {
                    c.call_id == call
                        && matches!(
                            c.event.as_deref(),
                            Some("CTIRouteUsed" | "CTIRouteRequestFailed" | "CTIRouteRejected")
                        )
                })
            },
        )
        .await;
    sim.drain();
    show(sim, server, &mut seen);
    match &outcome {
        Some(cb) if cb.event.as_deref() == Some("CTIRouteUsed") && cb.request_id == 0 => {
            sim.finding(format!(
                "no RouteSelect for call {call} within its RouteTimeout: CTIPS applied its default routing"
            ))
        }
        Some(cb) if cb.event.as_deref() == Some("CTIRouteUsed") => {
            let select = server
                .requests()
                .into_iter()
                .rev()
                .find(|r| r.op == "RouteSelect")
                .map(|r| {
                    format!(
                        "{} {}",
                        element(&r.body, "RouteActionType"),
                        element(&r.body, "DestinationAddress")
                    )
                })
                .unwrap_or_default();
            sim.step(&format!("CTIPS routes the call as selected: {}", select.trim()));
        }
        Some(cb) => {
            let why = [
                element(&cb.body, "FailureType"),
                element(&cb.body, "FailureReason"),
                element(&cb.body, "RouteRejectReason"),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
            sim.finding(format!(
                "CTIPS could not carry out the route for call {call} ({}): {why}",
                cb.event.as_deref().unwrap_or("")
            ));
            sim.step("the call waits out its RouteTimeout, then CTIPS routes it by default");
        }
        None => sim.finding(format!("CTIPS reported no route outcome for call {call}")),
    }
    match sim.scenario.transfer {
        TransferOutcome::Answered => sim.step(&format!(
            "the conversation lasts {} s; the caller hangs up",
            sim.scenario.talk_s
        )),
        _ => sim.caller("hangs up before anyone answers"),
    }
    server.hangup(call);
    let ended = server
        .wait_for(Duration::from_secs(10), |s: &ctips_sim::Sim| {
            s.callbacks()
                .into_iter()
                .find(|c| c.call_id == call && c.event.as_deref() == Some("CTICallEnd") && c.ok)
        })
        .await;
    sim.drain();
    show(sim, server, &mut seen);
    if ended.is_none() {
        sim.finding(format!(
            "ivrgate did not acknowledge CTICallEnd for call {call}"
        ));
    }
    Ok(())
}

/// Prints what CTIPS received from ivrgate and published to it since the last time
/// (heartbeats left out).
fn show(sim: &mut Sim<'_>, server: &ctips_sim::Sim, seen: &mut Seen) {
    let requests = server.requests();
    for r in requests.iter().skip(seen.requests) {
        let outcome = match &r.fault {
            Some(fault) => format!("fault {fault}"),
            None => format!("{}", r.status),
        };
        let text = format!("ivrgate -> CTIPS {} ({outcome})", r.op);
        sim.platform(&text);
    }
    seen.requests = requests.len();
    let callbacks = server.callbacks();
    for c in callbacks.iter().skip(seen.callbacks) {
        if c.op == "Heartbeat" {
            continue;
        }
        let what = match &c.event {
            Some(event) if c.call_id != 0 => format!("{} {event} (call {})", c.op, c.call_id),
            Some(event) => format!("{} {event}", c.op),
            None => c.op.clone(),
        };
        let outcome = if c.ok {
            "acknowledged".to_owned()
        } else {
            format!("not acknowledged: {}", c.error.as_deref().unwrap_or("-"))
        };
        sim.platform(&format!("CTIPS -> ivrgate {what} ({outcome})"));
    }
    seen.callbacks = callbacks.len();
}

/// The text of the first element named `name` (any prefix) in `xml`.
fn element(xml: &str, name: &str) -> String {
    let mut from = 0;
    while let Some(at) = xml[from..].find(name) {
        let start = from + at;
        from = start + name.len();
        let before = xml[..start].chars().last();
        if !matches!(before, Some('<' | ':')) || !xml[from..].starts_with('>') {
            continue;
        }
        let text = &xml[from + 1..];
        return text[..text.find('<').unwrap_or(0)].trim().to_owned();
    }
    String::new()
}

#[cfg(test)]
mod tests {
    #[test]
    fn element_reads_the_text_of_a_prefixed_or_plain_element() {
        let xml = "<a:RouteActionType>RouteToService</a:RouteActionType><DestinationAddress>4</DestinationAddress>";
        assert_eq!(super::element(xml, "RouteActionType"), "RouteToService");
        assert_eq!(super::element(xml, "DestinationAddress"), "4");
        assert_eq!(super::element(xml, "UserData"), "");
    }
}
