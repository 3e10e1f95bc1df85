//! The IVR API on the wire: a request read as XML-RPC or JSON (`{"method", "params"}`, the
//! method also from the path), and the answer written back the same way: `ReturnCode`,
//! `ReturnText` in the caller's language and every by-reference parameter by name; faults
//! for what is no function call at all.

use ivrgate_adapter::{Handled, Inbound};
use ivrgate_wire::{charset, json as wjson, xmlrpc, Limits};
use serde_json::{json, Map, Value};

use crate::codes::{self, Context, Lang};
use crate::model::Effect;
use crate::params::{self, Function, Ty};

const XML: &str = "text/xml; charset=utf-8";
const JSON: &str = "application/json";

/// How the request came in; the answer goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    XmlRpc,
    Json,
}

/// A decoded request.
pub(crate) struct Decoded {
    pub encoding: Encoding,
    pub method: String,
    pub params: Vec<Value>,
}

pub(crate) fn decode(
    request: &Inbound,
    path_method: Option<String>,
) -> Result<Decoded, (Encoding, String)> {
    let content_type = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let looks_json = content_type.is_some_and(|c| c.contains("json"));
    let text = charset::decode_borrowed(&request.body, content_type).map_err(|e| {
        (
            if looks_json {
                Encoding::Json
            } else {
                Encoding::XmlRpc
            },
            e.to_string(),
        )
    })?;
    let limits = Limits {
        max_depth: request.max_depth,
        ..Limits::default()
    };
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('<') {
        let call =
            xmlrpc::parse_call(trimmed, &limits).map_err(|e| (Encoding::XmlRpc, e.to_string()))?;
        return Ok(Decoded {
            encoding: Encoding::XmlRpc,
            method: call.method,
            params: call
                .params
                .into_iter()
                .map(xmlrpc::Value::into_json)
                .collect(),
        });
    }
    let value =
        wjson::parse_lenient(trimmed, &limits).map_err(|e| (Encoding::Json, e.to_string()))?;
    let (method, params) = match (value, path_method) {
        (Value::Array(items), Some(m)) => (m, items),
        (Value::Object(mut o), path) => {
            let method = ["method", "methodName", "function"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str).map(str::to_owned))
                .or(path)
                .ok_or((Encoding::Json, "missing \"method\"".to_owned()))?;
            let params = match o.remove("params") {
                Some(Value::Array(items)) => items,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err((Encoding::Json, "\"params\" must be an array".into())),
            };
            (method, params)
        }
        _ => {
            return Err((
                Encoding::Json,
                "expected {\"method\": ..., \"params\": [...]}".into(),
            ))
        }
    };
    Ok(Decoded {
        encoding: Encoding::Json,
        method,
        params,
    })
}

/// `ReturnCode`, `ReturnText`, then every by-reference parameter under its documented name
/// (empty string or 0 when the function produced none).
pub(crate) fn answer_body(function: &Function, effect: &Effect, lang: Lang) -> Map<String, Value> {
    let context = match function.name {
        "QueryCallStatus" => Context::CallStatus,
        "QueryRoutingInfo" => Context::Routing,
        _ => Context::Plain,
    };
    let mut body = Map::new();
    body.insert("ReturnCode".into(), json!(effect.code));
    body.insert(
        "ReturnText".into(),
        json!(codes::text(effect.code, context, lang)),
    );
    for p in params::outputs(function) {
        let value = effect.outputs.get(p.name).cloned().unwrap_or(match p.ty {
            Ty::Str(_) => json!(""),
            Ty::Int(..) => json!(0),
        });
        body.insert(p.name.to_owned(), value);
    }
    body
}

pub(crate) fn respond(
    encoding: Encoding,
    body: &Map<String, Value>,
    method: &str,
    outcome: &'static str,
) -> Handled {
    let (content_type, bytes) = match encoding {
        Encoding::XmlRpc => (
            XML,
            xmlrpc::write_response(&xmlrpc::Value::from_json(&Value::Object(body.clone())))
                .into_bytes(),
        ),
        Encoding::Json => (JSON, serde_json::to_vec(body).unwrap_or_default()),
    };
    response(200, content_type, bytes, method, outcome)
}

pub(crate) fn fault(encoding: Encoding, code: i64, message: &str, method: &str) -> Handled {
    match encoding {
        Encoding::XmlRpc => response(
            200,
            XML,
            xmlrpc::write_fault(&xmlrpc::Fault {
                code,
                message: message.to_owned(),
            })
            .into_bytes(),
            method,
            "bad_request",
        ),
        Encoding::Json => {
            let body = json!({"error": {"code": if code == -32601 { "unknown_function" } else { "invalid_request" }, "message": message}});
            response(
                400,
                JSON,
                serde_json::to_vec(&body).unwrap_or_default(),
                method,
                "bad_request",
            )
        }
    }
}

pub(crate) fn plain(status: u16, text: &'static str, outcome: &'static str) -> Handled {
    response(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes().to_vec(),
        "unknown",
        outcome,
    )
}

pub(crate) fn response(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    method: &str,
    outcome: &'static str,
) -> Handled {
    Handled::new(status, content_type, body, method, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_every_by_reference_parameter() {
        let f = params::function("QueryCallInfo").expect("fn");
        let body = answer_body(f, &Effect::code(-304), Lang::Fr);
        let keys: Vec<&str> = body.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "ReturnCode",
                "ReturnText",
                "CallID",
                "originalANI",
                "originalDNIS",
                "UUID",
                "Visits",
                "FMNQ",
                "InternalANI",
                "InternalDNIS"
            ]
        );
        assert_eq!(body["Visits"], 0);
        assert!(body["ReturnText"]
            .as_str()
            .is_some_and(|t| t.starts_with("Initialize n'a pas")));
    }
}
