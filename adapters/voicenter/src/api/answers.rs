//! Reading Voicenter's answers (XML-RPC, JSON, the seed's unquoted-key JSON) and mapping each
//! family's error codes to the command API's status and code.

use ivrgate_adapter::{CommandReply, OutboundResponse};
use serde_json::{json, Value};

use super::methods::scalar;
use super::{Family, Method};

/// Reads Voicenter's answer into JSON: XML-RPC (`<methodResponse>`), JSON, or the seed's
/// JSON with unquoted keys and trailing commas.
pub(super) fn read_answer(response: &OutboundResponse) -> Result<Value, String> {
    let text = std::str::from_utf8(&response.body)
        .map_err(|_| "the answer is not UTF-8".to_owned())?
        .trim_start_matches('\u{feff}')
        .trim();
    if text.is_empty() {
        return Err("an empty answer".into());
    }
    let limits = ivrgate_wire::Limits::default();
    if text.starts_with('<') {
        if text.len() >= 5 && text[..5].eq_ignore_ascii_case("<html") || text.starts_with("<!") {
            return Err("an HTML page, not an API answer".into());
        }
        return match ivrgate_wire::xmlrpc::parse_response(text, &limits) {
            Ok(Ok(params)) => Ok(params
                .first()
                .map(ivrgate_wire::xmlrpc::Value::to_json)
                .unwrap_or(Value::Null)),
            Ok(Err(fault)) => Ok(json!({"faultCode": fault.code, "faultString": fault.message})),
            Err(e) => Err(format!("unreadable XML: {e}")),
        };
    }
    ivrgate_wire::json::parse_lenient(text, &limits).map_err(|e| format!("unreadable JSON: {e}"))
}

pub(super) fn number(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.to_string().parse().ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn text_of(value: Option<&Value>) -> String {
    value.and_then(scalar).unwrap_or_default()
}

/// Voicenter's verdict: `Ok` or (HTTP status, error code, Voicenter's code, its message).
pub(super) fn verdict(
    family: Family,
    answer: &Value,
) -> Result<(), (u16, &'static str, i64, String)> {
    let get = |name: &str| answer.get(name);
    if let Some(code) = number(get("faultCode")) {
        return Err((502, "voicenter_fault", code, text_of(get("faultString"))));
    }
    let (code, message) = match family {
        Family::Click2Call => (number(get("ERRORCODE")), text_of(get("ERRORMESSAGE"))),
        Family::CallLog => (
            number(get("ERROR_NUMBER")),
            text_of(get("ERROR_DESCRIPTION")),
        ),
        Family::Dialer => (number(get("ErrorCode")), text_of(get("Description"))),
        Family::Monitor => (number(get("ERR")), text_of(get("DESC"))),
        Family::Login => {
            let status = number(get("Status"));
            if status == Some(1) {
                return Ok(());
            }
            let detail = text_of(get("StatusErrorMessage"));
            let message = if detail.is_empty() {
                text_of(get("StatusError"))
            } else {
                detail
            };
            let status = status.unwrap_or(-1);
            let http = match status {
                2 => (502, "voicenter_auth_failed"),
                3 => (422, "voicenter_refused"),
                4 | 5 => (409, "voicenter_refused"),
                _ => (502, "voicenter_unexpected"),
            };
            return Err((http.0, http.1, status, message));
        }
    };
    let Some(code) = code else {
        return Err((
            502,
            "voicenter_unexpected",
            -1,
            "the answer carries no error code".into(),
        ));
    };
    if code == 0 {
        return Ok(());
    }
    let auth = message.to_ascii_lowercase().contains("authoriz")
        || message.to_ascii_lowercase().contains("not trusted");
    let (status, name) = match (family, code) {
        _ if auth => (502, "voicenter_auth_failed"),
        (Family::Click2Call, 1) => (422, "voicenter_refused"),
        (Family::Click2Call, 3) => (409, "voicenter_refused"),
        (Family::Click2Call, 4) => (403, "voicenter_refused"),
        (Family::CallLog, 1) => (429, "voicenter_rate_limited"),
        (Family::CallLog, 3) => (422, "voicenter_refused"),
        (Family::Dialer, 1) => (404, "voicenter_refused"),
        (Family::Dialer, 2 | 4) => (422, "voicenter_refused"),
        _ => (502, "voicenter_error"),
    };
    Err((status, name, code, message))
}

/// The command API reply for Voicenter's answer.
pub(super) fn reply_for(method: &Method, answer: Value) -> CommandReply {
    match verdict(method.family, &answer) {
        Ok(()) => CommandReply::ok(json!({"method": method.name, "voicenter": answer})),
        Err((status, code, vc_code, message)) => {
            let message = if message.is_empty() {
                format!("Voicenter answered error {vc_code} without a message")
            } else {
                message
            };
            let mut error = json!({
                "code": code,
                "message": message,
                "method": method.name,
                "voicenter_code": vc_code,
            });
            if code == "voicenter_auth_failed" {
                error["hint"] = json!(
                    "Voicenter refused the tenant's code (or this host's address): check [tenants.voicenter_api] code"
                );
            }
            if status == 429 {
                error["retry_after_s"] = json!(5);
            }
            CommandReply {
                status,
                body: json!({"error": error, "voicenter": answer}),
            }
        }
    }
}
