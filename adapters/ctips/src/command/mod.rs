//! The CTIPS part of the command API (`/api/{tenant}/ctips/...`, `docs/command-api.yaml`).
//!
//! A command is carried out by whichever instance holds the session, through the store: the
//! instance that got the HTTP request writes a `ctips.request` entity (and bumps the
//! `ctips.queue` entity in the same transition); the holder's connector, woken by
//! `wait_change` on the queue, claims it, sends it to CTIPS and writes the outcome; the first
//! instance, waiting on the request entity, answers. A command not claimed before its timeout
//! is marked `expired` and never sent later. No instance-to-instance RPC.
//!
//! This file parses each command into a CTIPS request and holds `originate`; `params.rs` reads
//! the customer's parameters, `views.rs` answers from the store (session, filters) and stores
//! runtime filters, `queue.rs` is the store-mediated queue between the two instances.

mod params;
mod queue;
mod views;

use std::time::Duration;

use ivrgate_adapter::{Command, CommandReply, EntityKey, Gateway};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::proto::{
    AgentState, DestinationType, EntityType, Request, RouteType, Service, TransferType,
};
use crate::settings::Settings;
use crate::store::{AGENT_KIND, CALL_KIND, LOGIN_ALIAS};
use params::{
    agent_idx, bad, call_id, entity_json, enum_of, field_text, int_of, opt_bool, opt_int, query_ms,
    req_text, user_data,
};
use queue::submit;
pub use queue::{command_for, note_event, orphans, work_queue};
use views::{entity_kind, filter, filters_view, session_view};

pub const REQUEST_KIND: &str = "ctips.request";
pub const QUEUE_KIND: &str = "ctips.queue";
pub const QUEUE_ID: &str = "queue";
/// Alias namespace: a CTIPS RequestId → the command that sent it.
pub const RID_ALIAS: &str = "ctips.rid";

/// How long a command waits to be sent, unless `?timeout_ms=` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `?wait_ms=` for the first correlated event.
pub const MAX_WAIT_EVENT: Duration = Duration::from_secs(60);

/// Serves one command.
pub async fn command(gw: &dyn Gateway, settings: Option<&Settings>, cmd: Command) -> CommandReply {
    let Some(settings) = settings else {
        return CommandReply::error(
            404,
            "not_found",
            "this tenant has no [tenants.ctips] section",
        );
    };
    let path = cmd.path.as_strs();
    let tenant = cmd.tenant.as_str();
    let body = &cmd.body;
    let method = cmd.method.clone();
    let timeout = match query_ms(cmd.query.as_deref(), "timeout_ms") {
        Ok(t) => t
            .map(|ms| Duration::from_millis(ms.clamp(1, 60_000)))
            .unwrap_or(DEFAULT_TIMEOUT),
        Err(r) => return r,
    };
    let wait = match query_ms(cmd.query.as_deref(), "wait_ms") {
        Ok(t) => t
            .map(Duration::from_millis)
            .unwrap_or_default()
            .min(MAX_WAIT_EVENT),
        Err(r) => return r,
    };
    let tenant_id = i64::from(settings.tenant_id());
    let get = method == http::Method::GET;
    let post = method == http::Method::POST;
    if post && path.as_slice() == ["originate"] {
        return originate(gw, &cmd, tenant_id, timeout, wait).await;
    }
    let built: Result<Request, CommandReply> = async {
        match (path.as_slice(), get, post) {
            (["session"], true, _) => Err(session_view(gw, settings, tenant).await),
            (["session", "filters"], true, _) => Err(filters_view(gw, tenant).await),
            (["session", "filters", kind, value], _, _)
                if method == http::Method::PUT || method == http::Method::DELETE =>
            {
                Err(filter(
                    gw,
                    settings,
                    tenant,
                    kind,
                    value,
                    method == http::Method::PUT,
                    timeout,
                )
                .await)
            }
            (["session", "snapshot"], _, true) => {
                let types = match body.get("entity_types").and_then(Value::as_array) {
                    Some(items) => items
                        .iter()
                        .map(|v| v.as_str().and_then(EntityType::from_wire))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("entity_types: AgentInfo, CallInfo, ServiceInfo"))?,
                    None => vec![EntityType::Agent, EntityType::Call, EntityType::Service],
                };
                Ok(Request::new("Snapshot", Service::Registration)
                    .entity_types("EntityType", types))
            }
            ([kind @ ("agents" | "calls" | "services")], true, _) => {
                let kind = entity_kind(kind);
                Err(match gw.list(tenant, kind, 1000).await {
                    Ok(list) => CommandReply::ok(
                        json!({"items": list.iter().map(entity_json).collect::<Vec<_>>()}),
                    ),
                    Err(e) => CommandReply::error(503, "store_unavailable", e.to_string()),
                })
            }
            ([kind @ ("agents" | "calls" | "services"), id], true, _) => {
                let kind = entity_kind(kind);
                let found = if kind == CALL_KIND && !id.contains(':') {
                    gw.find(tenant, crate::store::CALL_ALIAS, id).await
                } else if kind == AGENT_KIND && id.parse::<i64>().is_err() {
                    gw.find(tenant, LOGIN_ALIAS, id).await
                } else {
                    gw.load(EntityKey::new(tenant, kind, *id)).await
                };
                Err(match found {
                    Ok(Some(e)) => CommandReply::ok(entity_json(&e)),
                    Ok(None) => CommandReply::error(404, "not_found", format!("no such {kind}")),
                    Err(e) => CommandReply::error(503, "store_unavailable", e.to_string()),
                })
            }
            (["agents", "login"], _, true) => Ok({
                let mut r = Request::new("LoginAgent", Service::AgentCall)
                    .text("AgentLoginName", req_text(body, "login_name")?)
                    .text("StationId", req_text(body, "station_id")?)
                    .text(
                        "InitState",
                        enum_of(
                            body,
                            "init_state",
                            Some(AgentState::NotReady),
                            AgentState::from_wire,
                        )?
                        .wire(),
                    );
                if let Some(m) = field_text(body, "multi_line") {
                    r = r.int("MultiLine", int_of(&m, "multi_line")?);
                }
                r
            }),
            (["agents", "panic_logout"], _, true) => {
                let agent = match field_text(body, "agent") {
                    Some(a) => agent_idx(gw, tenant, &a).await?,
                    None => 0,
                };
                let names = match body.get("login_names") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("login_names are strings"))?,
                    Some(_) => return Err(bad("login_names is an array")),
                };
                Ok(Request::new("PanicLogoutAgent", Service::AgentCall)
                    .int("AgentIdx", agent)
                    .strings("AgentLoginNameList", names)
                    .bool("LogoutAllAgents", opt_bool(body, "all", false)?))
            }
            (["agents", agent, rest @ ..], _, true) => {
                let agent = agent_idx(gw, tenant, agent).await?;
                let base = |op: &str| Request::new(op, Service::AgentCall).int("AgentIdx", agent);
                match rest {
                    ["logout"] => {
                        Ok(base("LogoutAgent").int("ReasonCode", opt_int(body, "reason_code", 0)?))
                    }
                    ["state"] => Ok(base("SetAgentState").text(
                        "NewState",
                        enum_of(body, "state", None, AgentState::from_wire)?.wire(),
                    )),
                    ["state", "refresh"] => Ok(base("GetAgentState")),
                    ["disposition"] => Ok(base("SetDisposition")
                        .int("CallId", call_id(&req_text(body, "call")?)?)
                        .int(
                            "DispositionId",
                            int_of(&req_text(body, "disposition_id")?, "disposition_id")?,
                        )
                        .bool(
                            "SummaryDispositionSuccessful",
                            opt_bool(body, "successful", true)?,
                        )
                        .bool(
                            "WrapNotRequired",
                            opt_bool(body, "wrap_not_required", false)?,
                        )
                        .strings("UserData", user_data(body)?)),
                    _ => Err(CommandReply::error(
                        404,
                        "not_found",
                        "unknown agent command",
                    )),
                }
            }
            (["calls"], _, true) => {
                let agent = agent_idx(gw, tenant, &req_text(body, "agent")?).await?;
                Ok(Request::new("MakeCall", Service::AgentCall)
                    .int("AgentIdx", agent)
                    .int("CallId", opt_int(body, "call", -1)?)
                    .int("ServiceId", opt_int(body, "service_id", 0)?)
                    .text(
                        "DestinationType",
                        enum_of(
                            body,
                            "destination_type",
                            Some(DestinationType::External),
                            DestinationType::from_wire,
                        )?
                        .wire(),
                    )
                    .text("DestinationAddress", req_text(body, "destination")?)
                    .bool("WrapState", opt_bool(body, "wrap_state", false)?))
            }
            (["calls", call, "route"], _, true) => {
                Ok(Request::new("RouteSelect", Service::Routing)
                    .int("CallId", call_id(call)?)
                    .text(
                        "DestinationAddress",
                        field_text(body, "destination").unwrap_or_default(),
                    )
                    .text(
                        "RouteActionType",
                        enum_of(body, "type", None, RouteType::from_wire)?.wire(),
                    )
                    .strings("UserData", user_data(body)?))
            }
            (["calls", call, rest @ ..], _, true) => {
                let call = call_id(call)?;
                let agent = agent_idx(gw, tenant, &req_text(body, "agent")?).await?;
                let base = |op: &str| {
                    Request::new(op, Service::AgentCall)
                        .int("AgentIdx", agent)
                        .int("CallId", call)
                };
                match rest {
                    ["accept"] => Ok(base("AcceptCall")
                        .bool("AcceptCall", true)
                        .int("RejectReasonCode", 0)),
                    ["reject"] => Ok(base("AcceptCall")
                        .bool("AcceptCall", false)
                        .int("RejectReasonCode", opt_int(body, "reason_code", 0)?)),
                    ["clear"] => Ok(base("ClearCall")),
                    ["hold"] => Ok(base("HoldCall")),
                    ["retrieve"] => Ok(base("RetrieveCall")),
                    ["conference"] => Ok(base("ConferenceCall").int(
                        "ConsultationCallId",
                        call_id(&req_text(body, "consultation_call")?)?,
                    )),
                    ["consult"] => Ok(base("ConsultationCall")
                        .text(
                            "DestinationType",
                            enum_of(
                                body,
                                "destination_type",
                                Some(DestinationType::External),
                                DestinationType::from_wire,
                            )?
                            .wire(),
                        )
                        .text("DestinationAddress", req_text(body, "destination")?)
                        .int("ServiceId", opt_int(body, "service_id", 0)?)
                        .strings("UserData", user_data(body)?)),
                    ["transfer"] => Ok(base("TransferCall")
                        .text(
                            "TransferType",
                            enum_of(
                                body,
                                "transfer_type",
                                Some(TransferType::Blind),
                                TransferType::from_wire,
                            )?
                            .wire(),
                        )
                        .text(
                            "DestinationType",
                            enum_of(
                                body,
                                "destination_type",
                                Some(DestinationType::External),
                                DestinationType::from_wire,
                            )?
                            .wire(),
                        )
                        .text(
                            "DestinationAddress",
                            field_text(body, "destination").unwrap_or_default(),
                        )
                        .int(
                            "ConsultationCallId",
                            match field_text(body, "consultation_call") {
                                Some(c) => call_id(&c)?,
                                None => 0,
                            },
                        )
                        .strings("UserData", user_data(body)?)
                        .int("ServiceId", opt_int(body, "service_id", 0)?)),
                    ["dtmf"] => {
                        Ok(base("SendDTMFDigits").text("DtmfDigits", req_text(body, "digits")?))
                    }
                    ["data"] => Ok(base("SetCallData").strings("UserData", user_data(body)?)),
                    ["data", "refresh"] => Ok(base("GetCallData")),
                    _ => Err(CommandReply::error(
                        404,
                        "not_found",
                        "unknown call command",
                    )),
                }
            }
            _ => Err(CommandReply::error(
                404,
                "not_found",
                "unknown CTIPS command",
            )),
        }
    }
    .await;
    match built {
        Ok(request) => submit(gw, tenant, tenant_id, request, timeout, wait).await,
        Err(reply) => reply,
    }
}

/// The neutral `originate` (`docs/command-api.yaml`): MakeCall for the agent `from` (id or
/// login name) to the external number `to`. CTIPS's MakeCall carries no announcement and no
/// call data, so those are refused by name. With `Idempotency-Key`, a retry gets the first
/// answer and never a second call.
async fn originate(
    gw: &dyn Gateway,
    cmd: &Command,
    tenant_id: i64,
    timeout: Duration,
    wait: Duration,
) -> CommandReply {
    let tenant = cmd.tenant.as_str();
    let Value::Object(body) = &cmd.body else {
        return CommandReply::error(422, "invalid_body", "the body is a JSON object");
    };
    for (key, value) in body {
        match key.as_str() {
            "from" | "to" | "service_id" => {}
            "announcement" | "attached" if value.is_null() => {}
            "announcement" => {
                return CommandReply::error(
                    422,
                    "unsupported_field",
                    "announcement: CTIPS MakeCall has no announcement to play",
                )
            }
            "attached" => {
                return CommandReply::error(
                    422,
                    "unsupported_field",
                    "attached: CTIPS MakeCall carries no call data (set it with POST calls/{call}/data once the call exists)",
                )
            }
            other => {
                return CommandReply::error(
                    422,
                    "unsupported_field",
                    format!("{other}: not an originate field (from, to, announcement, attached, service_id)"),
                )
            }
        }
    }
    let built = async {
        let agent = agent_idx(gw, tenant, &req_text(&cmd.body, "from")?).await?;
        let to = req_text(&cmd.body, "to")?;
        Ok::<Request, CommandReply>(
            Request::new("MakeCall", Service::AgentCall)
                .int("AgentIdx", agent)
                .int("CallId", -1)
                .int("ServiceId", opt_int(&cmd.body, "service_id", 0)?)
                .text("DestinationType", DestinationType::External.wire())
                .text("DestinationAddress", to)
                .bool("WrapState", false),
        )
    }
    .await;
    let request = match built {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let key = match ivrgate_adapter::idempotency::key(cmd) {
        Ok(k) => k,
        Err(reply) => return reply,
    };
    let Some(key) = key else {
        return submit(gw, tenant, tenant_id, request, timeout, wait).await;
    };
    let fingerprint = format!(
        "{:x}",
        Sha256::digest(format!("originate\0{}", cmd.body).as_bytes())
    );
    let entity = EntityKey::new(tenant, IDEMPOTENCY_KIND, key);
    let stale_ms = (timeout.as_millis() as i64) * 2 + 30_000;
    match ivrgate_adapter::idempotency::claim(gw, &entity, &fingerprint, stale_ms).await {
        Ok(ivrgate_adapter::idempotency::Claim::Go) => {}
        Ok(ivrgate_adapter::idempotency::Claim::Answer(reply)) | Err(reply) => return reply,
    }
    let reply = submit(gw, tenant, tenant_id, request, timeout, wait).await;
    let code = reply.body["error"]["code"].as_str().unwrap_or("");
    let outcome = match (reply.status, code) {
        // Expired in the queue or never queued: it will not be sent.
        (_, "session_unavailable" | "store_unavailable" | "shutting_down") => {
            ivrgate_adapter::idempotency::Outcome::NotSent
        }
        (504, m)
            if reply.body["error"]["message"]
                .as_str()
                .is_some_and(|t| t.contains("it will not be sent"))
                && m == "timeout" =>
        {
            ivrgate_adapter::idempotency::Outcome::NotSent
        }
        (504, _) => ivrgate_adapter::idempotency::Outcome::Unknown,
        _ => ivrgate_adapter::idempotency::Outcome::Answered,
    };
    if let Err(e) =
        ivrgate_adapter::idempotency::settle(gw, &entity, &fingerprint, &reply, outcome).await
    {
        tracing::warn!(tenant, error = %e, "ctips originate: idempotency outcome not stored");
    }
    reply
}

/// Entity kind of stored idempotency keys.
pub const IDEMPOTENCY_KIND: &str = "ctips.idempotency";
