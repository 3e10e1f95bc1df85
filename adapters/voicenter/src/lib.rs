//! The Voicenter adapter: ivrgate plays "the client's server" for Voicenter's cloud PBX.
//!
//! Voicenter calls ivrgate for its External IVR (`GET_IVR_ACTION`, `HANGUP_CALL`), its
//! External Layer IVR (`IVR_LAYER_INPUT`), its CDR notifications and its pop-up screen lookup
//! (`?phone=`). Requests come as XML-RPC, (lenient) JSON, form bodies or query strings; each
//! is answered in the encoding it came in. Questions (`GET_IVR_ACTION`, `IVR_LAYER_INPUT`,
//! the pop-up) become decision webhooks through [`Gateway::decide`]; reports (`HANGUP_CALL`,
//! `CDR`) become durable events through [`Gateway::record`] and are acknowledged only once
//! stored. Vendor field names keep Voicenter's spelling (`CALL_DAILTIME` stays).
//!
//! Routes (the core strips `/voicenter/{tenant}`): `""` (every method, dispatched on the
//! XML-RPC `methodName` or the JSON `METHOD`), `"cdr"` (CDR notifications without a method
//! name) and `"popup"` (the pop-up lookup).

#![forbid(unsafe_code)]

pub mod api;
mod fields;
mod render;
mod request;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use ivrgate_adapter::action::{Action, Envelope};
use ivrgate_adapter::{
    mask_phone, Adapter, Answer, AnswerSource, BoxFuture, CallEffect, Decision, DecisionPoint,
    DecisionRequest, Dedup, EventSubmission, Gateway, Handled, Inbound, Recorded, StoredResponse,
};
use ivrgate_wire::reply::Reply;
use ivrgate_wire::xmlrpc;
use render::Rendered;
use request::{Encoding, ErrorShape, Method, Parsed, Rejection};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub use render::{
    DEFAULT_LANGUAGE, DEFAULT_MAX_CALL_S, DEFAULT_RING_TIMEOUT_S, POPUP_ERROR, POPUP_NOT_FOUND,
};

/// Decodes a request as [`Adapter::handle`] does, without serving it: the method name and
/// the vendor's fields, or why the request is refused. The entry point of the fuzz targets
/// and their corpus replay (`crates/fuzz-props`); not part of the adapter's interface.
#[cfg(feature = "testing")]
pub fn decode_for_fuzzing(request: &Inbound) -> Result<(&'static str, Map<String, Value>), String> {
    request::decode(request)
        .map(|parsed| (parsed.method.as_str(), parsed.fields))
        .map_err(|rejection| rejection.reason)
}

/// Query parameters the decoder never copies into vendor fields: what the fuzz targets check
/// it against (`crates/fuzz-props`); not part of the adapter's interface.
#[cfg(feature = "testing")]
pub use request::SECRET_PARAMS;

/// The vendor name: path segment, metrics label and `vendor` of every event.
pub const VENDOR: &str = "voicenter";

/// Content type of XML-RPC answers.
const XML: &str = "text/xml; charset=utf-8";
/// Content type of JSON answers.
const JSON: &str = "application/json";

/// The places where Voicenter waits for the customer.
///
/// - `ivr_action` (`GET_IVR_ACTION`): the seed documents no timeout; 10 000 ms is the longest
///   deadline ivrgate accepts, a guess on the safe side of Voicenter's HTTP client.
/// - `layer_input` (`IVR_LAYER_INPUT`): Voicenter waits about 5 s (field notes).
/// - `caller_lookup` (the pop-up `?phone=`): an agent's screen waits; 5 000 ms.
pub static DECISION_POINTS: [DecisionPoint; 3] = [
    DecisionPoint {
        vendor: VENDOR,
        kind: "ivr_action",
        platform_max_ms: 10_000,
        default_fallback: platform_default,
        validate: validate_ivr_action,
        native_attach: no_attach,
    },
    DecisionPoint {
        vendor: VENDOR,
        kind: "layer_input",
        platform_max_ms: 5_000,
        default_fallback: platform_default,
        validate: validate_layer_input,
        native_attach: custom_data,
    },
    DecisionPoint {
        vendor: VENDOR,
        kind: "caller_lookup",
        platform_max_ms: 5_000,
        default_fallback: caller_not_found,
        validate: validate_caller_lookup,
        native_attach: no_attach,
    },
];

const IVR_ACTION: usize = 0;
const LAYER_INPUT: usize = 1;
const CALLER_LOOKUP: usize = 2;

/// GET_IVR_ACTION and pop-up answers carry no call data.
fn no_attach(_: &Value) -> Map<String, Value> {
    Map::new()
}

/// A native layer answer's `CUSTOM_DATA` is kept on the call, as Voicenter keeps it and
/// repeats it in its pop-up and CDR notifications (seed §12).
fn custom_data(native: &Value) -> Map<String, Value> {
    native
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.trim() == "CUSTOM_DATA"))
        .and_then(|(_, v)| v.as_object())
        .cloned()
        .unwrap_or_default()
}

/// `default`: Voicenter is answered `{"STATUS": 1}` and goes on with its own flow.
fn platform_default() -> Answer {
    Answer::Action(Envelope::new(Action::Default {}))
}

/// An unknown caller.
fn caller_not_found() -> Answer {
    Answer::Action(Envelope::new(Action::LookupResult {
        found: false,
        url: None,
        name: None,
        total: None,
        company: None,
    }))
}

/// `GET_IVR_ACTION` carries out menu, say_digits, dial (one target), goto (an integer
/// layer), record, hangup and default; natively MENU, CALL, HANGUP, SAYDIGITS, VO,
/// SILENTRECORD or `STATUS 1`.
fn validate_ivr_action(answer: &Answer) -> Result<(), String> {
    render::ivr_action(answer).map(drop)
}

/// `IVR_LAYER_INPUT` carries out goto (an integer layer), dial, say_digits (with a next
/// layer) and default; natively GO_TO_LAYER, DIAL, SAY_DIGITS or `STATUS 1`.
fn validate_layer_input(answer: &Answer) -> Result<(), String> {
    render::layer_input(answer, &Map::new()).map(drop)
}

/// The pop-up takes lookup_result and default; natively an object with a `STATUS` string.
fn validate_caller_lookup(answer: &Answer) -> Result<(), String> {
    render::caller_lookup(answer).map(drop)
}

/// The Voicenter adapter. Stateless: call state lives in the core.
#[derive(Debug, Default, Clone, Copy)]
pub struct Voicenter;

impl Voicenter {
    pub fn new() -> Self {
        Voicenter
    }
}

impl Adapter for Voicenter {
    fn name(&self) -> &'static str {
        VENDOR
    }

    fn decision_points(&self) -> &'static [DecisionPoint] {
        &DECISION_POINTS
    }

    fn handle<'a>(&'a self, gateway: &'a dyn Gateway, request: Inbound) -> BoxFuture<'a, Handled> {
        Box::pin(handle(gateway, request))
    }

    /// The §7 active-calls poller, when `poll_interval_ms` is set (see [`api`]).
    fn connectors(
        &self,
        _tenant: &str,
        settings: &ivrgate_adapter::ParsedSettings,
    ) -> Vec<ivrgate_adapter::ConnectorSpec> {
        match settings.clone().downcast::<api::Parsed>() {
            Ok(parsed) => parsed.0.iter().filter_map(|s| s.connector()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn run_connector(
        &self,
        ctx: ivrgate_adapter::ConnectorCtxRef,
    ) -> BoxFuture<'static, ivrgate_adapter::ConnectorExit> {
        Box::pin(api::run_poller(ctx))
    }

    /// Click2Call (see [`api`]).
    fn cannot_originate(&self) -> Option<&'static str> {
        None
    }

    /// Voicenter's section is named after what it configures: its outbound APIs.
    fn settings_section(&self) -> &'static str {
        "voicenter_api"
    }

    /// `[tenants.voicenter_api]`: Voicenter's outbound APIs (see [`api`]).
    fn parse_settings(
        &self,
        settings: &Value,
    ) -> Result<ivrgate_adapter::ParsedSettings, Vec<String>> {
        let parsed = api::ApiSettings::from_json(settings)?;
        Ok(std::sync::Arc::new(api::Parsed(
            parsed.map(std::sync::Arc::new),
        )))
    }

    fn command<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        command: ivrgate_adapter::Command,
    ) -> BoxFuture<'a, ivrgate_adapter::CommandReply> {
        Box::pin(async move {
            let parsed =
                ivrgate_adapter::settings_of::<api::Parsed>(gateway, &command.tenant, VENDOR);
            let settings = parsed.as_ref().and_then(|p| p.0.clone());
            api::command(gateway, settings.as_deref(), command).await
        })
    }

    /// Voicenter's "try again" without reading the body: a CDR (the `cdr` path) gets
    /// `err 2`, the pop-up its error answer, and the main path `STATUS 1` (HANGUP_CALL's
    /// "not stored, resend"; for a question it is the platform's own default flow). XML-RPC
    /// when the content type names XML, JSON otherwise.
    fn busy(&self, _gateway: &dyn Gateway, request: &Inbound) -> Handled {
        let xml = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("xml"));
        let encoding = if xml {
            Encoding::XmlRpc
        } else {
            Encoding::Json
        };
        let (stored, method) = match request.path.as_strs().as_slice() {
            ["cdr"] => (ack(Method::Cdr, encoding, Ack::Retry), Method::Cdr.as_str()),
            ["popup"] => (
                encode(Encoding::Json, &render::popup(POPUP_ERROR, "", "", "0", "")),
                Method::Popup.as_str(),
            ),
            _ => (encode(encoding, &render::status(1)), "unknown"),
        };
        handled(stored, method, "busy")
    }
}

async fn handle(gateway: &dyn Gateway, mut request: Inbound) -> Handled {
    let mut parsed = match request::decode(&request) {
        Ok(parsed) => parsed,
        Err(rejection) => return rejected(&request, rejection),
    };
    // Decoded: the body is needed only as its hash (an event's resend key) from here on, so
    // its memory goes back now rather than after the commit. A decision has no resend key.
    let body_hash = matches!(parsed.method, Method::HangupCall | Method::Cdr)
        .then(|| Sha256::digest(&parsed.raw));
    parsed.raw = Bytes::new();
    request.body = Bytes::new();
    let call = fields::call_ref(&parsed.fields);
    if call.vendor_call_id.is_none() && parsed.method != Method::Popup {
        let rejection = Rejection {
            encoding: parsed.encoding,
            shape: if parsed.method == Method::Cdr {
                ErrorShape::Cdr
            } else {
                ErrorShape::Status
            },
            method: Some(parsed.method),
            raw_method: None,
            reason: "missing call id (IVR_UNIQUE_ID / ivruniqueid)".into(),
        };
        return rejected_with_caller(&request, rejection, &parsed.fields);
    }
    let (mut data, occurred_at) = fields::neutral(parsed.method, &parsed.fields, gateway.now());
    if !parsed.undecodable.is_empty() {
        // The exact bytes of values the declared charset cannot read (the core logs and
        // counts them); the fields themselves hold a lossy rendering.
        data.insert(
            "undecodable".into(),
            Value::Object(parsed.undecodable.clone()),
        );
    }
    let vendor_fields = std::mem::take(&mut parsed.fields);
    let vendor_call_id = call.vendor_call_id.clone();

    let mut handled = match parsed.method {
        Method::HangupCall | Method::Cdr => {
            record(
                gateway,
                &request,
                &parsed,
                body_hash.as_deref().unwrap_or_default(),
                EventSubmission {
                    tenant: request.tenant.clone(),
                    vendor: VENDOR,
                    event_type: if parsed.method == Method::Cdr {
                        "call.cdr"
                    } else {
                        "call.hangup"
                    },
                    call,
                    occurred_at,
                    data,
                    vendor_fields,
                    // A CDR is the record of a finished call, like the hangup report: either
                    // one ends the call's live state (a CDR for a call ivrgate never saw
                    // must not start a call that later "expires").
                    effect: CallEffect::End,
                    dedup: None,
                },
            )
            .await
        }
        Method::GetIvrAction | Method::LayerInput | Method::Popup => {
            let point = match parsed.method {
                Method::GetIvrAction => IVR_ACTION,
                Method::LayerInput => LAYER_INPUT,
                _ => CALLER_LOOKUP,
            };
            let decision = gateway
                .decide(DecisionRequest {
                    tenant: request.tenant.clone(),
                    point: &DECISION_POINTS[point],
                    call,
                    data,
                    vendor_fields,
                    deadline_ms: None,
                })
                .await;
            answer_decision(&request, &parsed, &decision)
        }
    };
    handled.vendor_call_id = vendor_call_id;
    handled
}

/// Stores a HANGUP_CALL or CDR and acknowledges it once stored.
async fn record(
    gateway: &dyn Gateway,
    request: &Inbound,
    parsed: &Parsed,
    body_hash: &[u8],
    mut event: EventSubmission,
) -> Handled {
    let method = parsed.method;
    let ok = ack(method, parsed.encoding, Ack::Ok);
    let call_id = event.call.vendor_call_id.clone().unwrap_or_default();
    let mut key = Vec::with_capacity(64 + call_id.len());
    key.extend_from_slice(method.as_str().as_bytes());
    key.push(b'\n');
    key.extend_from_slice(call_id.as_bytes());
    key.push(b'\n');
    key.extend_from_slice(hex(body_hash).as_bytes());
    event.dedup = Some(Dedup {
        key,
        response: ok.clone(),
    });
    match gateway.record(event).await {
        Ok(Recorded::New { .. }) => handled(ok, method.as_str(), "ok"),
        Ok(Recorded::Duplicate(stored)) => handled(stored, method.as_str(), "duplicate"),
        Err(error) => {
            tracing::warn!(
                tenant = %request.tenant,
                method = method.as_str(),
                call_id = %call_id,
                reason = %error,
                "voicenter event not stored; answered retry"
            );
            handled(
                ack(method, parsed.encoding, Ack::Retry),
                method.as_str(),
                "refused",
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Ok,
    /// Not stored: Voicenter should send it again.
    Retry,
}

/// The acknowledgement of an event: `STATUS` for HANGUP_CALL, `err`/`errdesc` for a CDR.
/// `err` is written as an integer, as the seed's table says (its JSON example shows "0").
fn ack(method: Method, encoding: Encoding, ack: Ack) -> StoredResponse {
    let body = if method == Method::Cdr {
        let (err, desc) = match ack {
            Ack::Ok => (0, "OK"),
            Ack::Retry => (2, "temporarily unable to store, retry"),
        };
        json!({ "err": err, "errdesc": desc })
    } else {
        render::status(i64::from(ack != Ack::Ok))
    };
    encode(encoding, &body)
}

/// Writes a reply tree as an XML-RPC `methodResponse` or as JSON.
fn encode(encoding: Encoding, body: &Value) -> StoredResponse {
    match encoding {
        Encoding::XmlRpc => StoredResponse {
            status: 200,
            content_type: XML.into(),
            body: xmlrpc::write_json_response(body).into_bytes(),
        },
        Encoding::Json | Encoding::Form => StoredResponse {
            status: 200,
            content_type: JSON.into(),
            body: serde_json::to_vec(body).unwrap_or_else(|_| b"{\"STATUS\":1}".to_vec()),
        },
    }
}

/// Writes a reply as an XML-RPC `methodResponse` or as JSON: the bytes [`encode`] writes for
/// its JSON tree.
fn encode_reply(encoding: Encoding, reply: &Reply<'_>) -> StoredResponse {
    match encoding {
        Encoding::XmlRpc => StoredResponse {
            status: 200,
            content_type: XML.into(),
            body: xmlrpc::write_reply(reply).into_bytes(),
        },
        Encoding::Json | Encoding::Form => StoredResponse {
            status: 200,
            content_type: JSON.into(),
            body: reply.write_json(),
        },
    }
}

/// Renders a decision in the request's encoding (the pop-up answers JSON always).
fn answer_decision(request: &Inbound, parsed: &Parsed, decision: &Decision) -> Handled {
    let method = parsed.method;
    let rendered = match method {
        Method::GetIvrAction => render::ivr_action(&decision.answer),
        Method::LayerInput => {
            render::layer_input(&decision.answer, &decision.attached).map(Rendered::Tree)
        }
        _ => render::caller_lookup(&decision.answer).map(Rendered::Tree),
    };
    let mut outcome = match decision.source {
        AnswerSource::Fallback(_) => "fallback",
        AnswerSource::Customer | AnswerSource::FallbackUrl => "ok",
    };
    let body = match rendered {
        Ok(body) => body,
        Err(reason) => {
            // The core validates answers before handing them over; this is a last guard.
            tracing::warn!(
                tenant = %request.tenant,
                method = method.as_str(),
                decision_id = %decision.decision_id,
                reason = %reason,
                "voicenter answer not renderable; answered the platform default"
            );
            outcome = "fallback";
            Rendered::Tree(match method {
                Method::Popup => render::popup(POPUP_NOT_FOUND, "", "", "0", ""),
                _ => render::status(1),
            })
        }
    };
    let encoding = if method == Method::Popup {
        Encoding::Json
    } else {
        parsed.encoding
    };
    let stored = match &body {
        Rendered::Tree(tree) => encode(encoding, tree),
        Rendered::Reply(reply) => encode_reply(encoding, reply),
    };
    handled(stored, method.as_str(), outcome)
}

fn rejected(request: &Inbound, rejection: Rejection) -> Handled {
    rejected_with_caller(request, rejection, &Map::new())
}

/// The platform's own error answer for a request that cannot be served.
fn rejected_with_caller(
    request: &Inbound,
    rejection: Rejection,
    fields: &Map<String, Value>,
) -> Handled {
    let label = rejection.method.map(Method::as_str).unwrap_or("unknown");
    let raw_method: String = rejection
        .raw_method
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let caller = ["CALLER_ID", "caller", "phone"]
        .iter()
        .find_map(|k| request::get(fields, k).and_then(Value::as_str))
        .map(|c| mask_phone(c, request.mask_phones))
        .unwrap_or_default();
    tracing::warn!(
        tenant = %request.tenant,
        method = label,
        sent_method = %raw_method,
        caller = %caller,
        reason = %rejection.reason,
        "voicenter request rejected"
    );
    let response = match rejection.shape {
        ErrorShape::Fault => StoredResponse {
            status: 200,
            content_type: XML.into(),
            body: xmlrpc::write_fault(&xmlrpc::Fault {
                code: -32700,
                message: format!("parse error: {}", rejection.reason),
            })
            .into_bytes(),
        },
        // err 1 with the reason, so whoever reads Voicenter's side sees what was wrong.
        ErrorShape::Cdr => encode(
            rejection.encoding,
            &json!({ "err": 1, "errdesc": format!("parse error: {}", rejection.reason) }),
        ),
        ErrorShape::Status => encode(rejection.encoding, &render::status(1)),
        ErrorShape::Popup => encode(Encoding::Json, &render::popup(POPUP_ERROR, "", "", "0", "")),
    };
    handled(response, label, "bad_request")
}

fn handled(stored: StoredResponse, method: &str, outcome: &'static str) -> Handled {
    let response = http::Response::builder()
        .status(stored.status)
        .header(http::header::CONTENT_TYPE, stored.content_type.as_str())
        .body(Bytes::from(stored.body))
        .unwrap_or_else(|_| {
            let mut fallback = http::Response::new(Bytes::from_static(b"{\"STATUS\":1}"));
            fallback.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(JSON),
            );
            fallback
        });
    Handled {
        response,
        method: method.to_owned(),
        outcome,
        vendor_call_id: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
