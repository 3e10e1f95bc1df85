//! One function per method of the seed's sections (§1 Click2Call, §3 the call log, §6 the
//! Dialer, §7/§8 monitoring, §10 agent login), plus the bulk dialer and the neutral `originate`:
//! each checks the customer's JSON and builds the request to Voicenter.

use std::collections::BTreeMap;

use bytes::Bytes;
use ivrgate_adapter::{idempotency, Command, CommandReply, EntityKey, Gateway};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::answers::number;
use super::settings::{ApiSettings, IDEMPOTENCY_KIND};
use super::{call, error, guarded, store_outcome, Family, Method, Upstream};

/// A scalar parameter as Voicenter's form and query values want it.
pub(super) fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn form(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Refuses the keys ivrgate sets itself.
pub(super) fn reserved(body: &Map<String, Value>, keys: &[&str]) -> Result<(), CommandReply> {
    for key in body.keys() {
        if keys.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(error(
                422,
                "reserved_field",
                format!("{key} is set by ivrgate (the tenant's configuration), not by the request"),
            ));
        }
    }
    Ok(())
}

pub(super) fn object(body: &Value) -> Result<Map<String, Value>, CommandReply> {
    match body {
        Value::Object(map) => Ok(map.clone()),
        Value::Null => Ok(Map::new()),
        _ => Err(error(422, "invalid_body", "the body is a JSON object")),
    }
}

/// Click2Call's form fields from a JSON body: scalars as they are, `custom_data` (or
/// `CustomData`) keys as `var_*` (at most 10, as the seed allows).
pub(super) fn click2call_form(
    settings: &ApiSettings,
    action: &str,
    body: &Map<String, Value>,
) -> Result<Vec<(String, String)>, CommandReply> {
    reserved(body, &["code", "format", "action"])?;
    let mut pairs = vec![
        ("code".to_owned(), settings.code.clone()),
        ("action".to_owned(), action.to_owned()),
        ("format".to_owned(), "JSON".to_owned()),
    ];
    let mut vars = 0;
    for (key, value) in body {
        if key.eq_ignore_ascii_case("custom_data") || key == "CustomData" {
            let Value::Object(custom) = value else {
                return Err(error(422, "invalid_field", format!("{key} is an object")));
            };
            for (name, v) in custom {
                let v = scalar(v).ok_or_else(|| {
                    error(422, "invalid_field", format!("{key}.{name} is a scalar"))
                })?;
                let name = if name.starts_with("var_") {
                    name.clone()
                } else {
                    format!("var_{name}")
                };
                vars += 1;
                pairs.push((name, v));
            }
            continue;
        }
        let v = scalar(value)
            .ok_or_else(|| error(422, "invalid_field", format!("{key} is a scalar")))?;
        if key.starts_with("var_") {
            vars += 1;
        }
        pairs.push((key.clone(), v));
    }
    if vars > 10 {
        return Err(error(
            422,
            "invalid_field",
            format!("{vars} var_* parameters; Voicenter takes at most 10"),
        ));
    }
    Ok(pairs)
}

/// The value of a field by any of its spellings (the seed writes `Phone` and `phone`).
pub(super) fn field<'a>(body: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    body.iter()
        .find(|(k, _)| names.iter().any(|n| n.eq_ignore_ascii_case(k)))
        .map(|(_, v)| v)
}

pub(super) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    ivrgate_wire::form::parse(query?)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Destinations of a call-placing body under the allowlist (`target`, `Target`, `phone`).
pub(super) fn check_allowed(settings: &ApiSettings, body: &Value) -> Result<(), CommandReply> {
    if settings.allow_destinations.is_none() {
        return Ok(());
    }
    let Value::Object(map) = body else {
        return Ok(());
    };
    for name in ["target", "to"] {
        if let Some(v) = field(map, &[name]).and_then(scalar) {
            if !settings.allows(&v) {
                return Err(not_allowed(name, &v));
            }
        }
    }
    Ok(())
}

pub(super) fn not_allowed(field: &str, _value: &str) -> CommandReply {
    error(
        403,
        "destination_not_allowed",
        format!("{field}: the destination is not in this tenant's allow_destinations"),
    )
}

pub(super) fn click2call(
    settings: &ApiSettings,
    action: &str,
    body: &Value,
) -> Result<(Method, Upstream), CommandReply> {
    let map = object(body)?;
    let pairs = click2call_form(settings, action, &map)?;
    Ok((
        Method {
            name: match action {
                "call" => "Click2Call",
                "message" => "Click2Call.message",
                "callference" => "Click2Call.callference",
                _ => "Click2Call.terminate",
            },
            family: Family::Click2Call,
            safe: false,
            places: action != "terminate",
        },
        Upstream {
            get: false,
            url: settings.click2call_url.clone(),
            content_type: Some("application/x-www-form-urlencoded"),
            body: Bytes::from(form(&pairs)),
        },
    ))
}

pub(super) fn call_log(
    settings: &ApiSettings,
    body: &Value,
) -> Result<(Method, Upstream), CommandReply> {
    let mut map = object(body)?;
    reserved(&map, &["code"])?;
    match map.get("format").and_then(Value::as_str) {
        None => {}
        Some(f) if f.eq_ignore_ascii_case("json") => {}
        Some(_) => {
            return Err(error(
                422,
                "invalid_field",
                "format: the command API answers JSON only",
            ))
        }
    }
    let mut out = Map::new();
    out.insert("code".into(), json!(settings.code));
    out.insert("format".into(), json!("JSON"));
    map.remove("format");
    out.extend(map);
    Ok((
        Method {
            name: "CallLog",
            family: Family::CallLog,
            safe: true,
            places: false,
        },
        Upstream {
            get: false,
            url: settings.cdr_url.clone(),
            content_type: Some("application/json"),
            body: Bytes::from(Value::Object(out).to_string()),
        },
    ))
}

pub(super) fn dialer(
    settings: &ApiSettings,
    method: Method,
    body: &Value,
) -> Result<(Method, Upstream), CommandReply> {
    let map = object(body)?;
    reserved(&map, &["code"])?;
    if method.name != "GetCampaignList" && field(&map, &["Campaign"]).and_then(scalar).is_none() {
        return Err(error(422, "missing_field", "Campaign is required"));
    }
    if matches!(method.name, "AddCall" | "UpdateCall" | "RemoveCall")
        && field(&map, &["Target"]).and_then(scalar).is_none()
    {
        return Err(error(422, "missing_field", "Target is required"));
    }
    let mut out = Map::new();
    out.insert("Code".into(), json!(settings.code));
    out.extend(map);
    Ok((
        method,
        Upstream {
            get: false,
            url: format!("{}/{}", settings.dialer_url, method.name),
            content_type: Some("application/json"),
            body: Bytes::from(Value::Object(out).to_string()),
        },
    ))
}

pub(super) fn monitor(
    settings: &ApiSettings,
    name: &'static str,
    extra: &[(&str, &str)],
) -> Result<(Method, Upstream), CommandReply> {
    let mut pairs = vec![("code".to_owned(), settings.code.clone())];
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Ok((
        Method {
            name,
            family: Family::Monitor,
            safe: true,
            places: false,
        },
        Upstream {
            get: true,
            url: format!("{}/{name}?{}", settings.monitor_url, form(&pairs)),
            content_type: None,
            body: Bytes::new(),
        },
    ))
}

pub(super) fn login(
    settings: &ApiSettings,
    body: &Value,
) -> Result<(Method, Upstream), CommandReply> {
    let map = object(body)?;
    reserved(&map, &["code"])?;
    let mut out = Map::new();
    for (name, aliases) in [
        ("UserID", &["UserID", "user_id"][..]),
        ("Status", &["Status", "status"][..]),
        ("ExtensionUser", &["ExtensionUser", "extension_user"][..]),
    ] {
        match field(&map, aliases) {
            Some(v) if scalar(v).is_some() => {
                out.insert(name.into(), v.clone());
            }
            Some(_) => return Err(error(422, "invalid_field", format!("{name} is a scalar"))),
            None if name == "ExtensionUser" => {}
            None => return Err(error(422, "missing_field", format!("{name} is required"))),
        }
    }
    out.insert("Code".into(), json!(settings.code));
    Ok((
        Method {
            name: "SetStatusFromAPI",
            family: Family::Login,
            safe: false,
            places: false,
        },
        Upstream {
            get: false,
            url: settings.login_url.clone(),
            content_type: Some("application/json"),
            body: Bytes::from(Value::Object(out).to_string()),
        },
    ))
}

/// Why one AddCallsBulk row cannot be sent, if it cannot.
pub(super) fn bulk_row_problem(row: &Value) -> Option<String> {
    let Value::Object(map) = row else {
        return Some("a row is a JSON object".into());
    };
    if map.keys().any(|k| k.eq_ignore_ascii_case("code")) {
        return Some("code is set by ivrgate".into());
    }
    match field(map, &["Campaign"]) {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => return Some("Campaign is required (a string)".into()),
    }
    match field(map, &["Target"]).and_then(scalar) {
        Some(t)
            if !t.is_empty()
                && t.trim_start_matches('+')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) => {}
        Some(_) => return Some("Target is a phone number (digits)".into()),
        None => return Some("Target is required".into()),
    }
    if let Some(p) = field(map, &["Priority"]) {
        if number(Some(p)).is_none() {
            return Some("Priority is an integer".into());
        }
    }
    if let Some(c) = field(map, &["CustomData"]) {
        if !c.is_object() {
            return Some("CustomData is an object".into());
        }
    }
    None
}

/// AddCallsBulk: rows checked here first (each bad row reported, never sent), good rows
/// sent in chunks of `bulk_chunk_rows`; each row's result is its chunk's answer.
pub(super) async fn bulk(
    gw: &dyn Gateway,
    settings: &ApiSettings,
    cmd: &Command,
    method: Method,
) -> CommandReply {
    let rows = match &cmd.body {
        Value::Array(rows) => rows,
        Value::Object(map) => match map.get("calls").or_else(|| map.get("Calls")) {
            Some(Value::Array(rows)) => rows,
            _ => {
                return error(
                    422,
                    "invalid_body",
                    "the body is an array of calls (or {\"calls\": [...]})",
                )
            }
        },
        _ => return error(422, "invalid_body", "the body is an array of calls"),
    };
    if rows.is_empty() {
        return error(422, "invalid_body", "no calls");
    }
    if rows.len() > settings.bulk_max_rows {
        return error(
            413,
            "too_many_rows",
            format!(
                "{} calls; at most {} in one request (bulk_max_rows)",
                rows.len(),
                settings.bulk_max_rows
            ),
        );
    }
    let mut results: Vec<Value> = Vec::with_capacity(rows.len());
    let mut good: Vec<usize> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if let Some(problem) = bulk_row_problem(row) {
            results.push(json!({"row": i, "status": "invalid", "error": problem}));
            continue;
        }
        let target = row
            .as_object()
            .and_then(|m| field(m, &["Target"]))
            .and_then(scalar)
            .unwrap_or_default();
        if !settings.allows(&target) {
            results.push(json!({"row": i, "status": "invalid", "error": "Target: the destination is not in this tenant's allow_destinations"}));
            continue;
        }
        results.push(Value::Null);
        good.push(i);
    }
    let key = match idempotency::key(cmd) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    // The whole request is one idempotent unit.
    let mut hash = Sha256::new();
    hash.update(b"AddCallsBulk\0");
    hash.update(cmd.body.to_string().as_bytes());
    let fingerprint = format!("{:x}", hash.finalize());
    let entity = key.map(|k| EntityKey::new(cmd.tenant.clone(), IDEMPOTENCY_KIND, k));
    if let Some(entity) = &entity {
        let stale_ms = (settings.timeout.as_millis() as i64)
            * 2
            * good.len().div_ceil(settings.bulk_chunk_rows).max(1) as i64
            + settings.queue_wait.as_millis() as i64;
        match idempotency::claim(gw, entity, &fingerprint, stale_ms).await {
            Ok(idempotency::Claim::Go) => {}
            Ok(idempotency::Claim::Answer(reply)) | Err(reply) => return reply,
        }
    }
    let mut unknown_any = false;
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for chunk in good.chunks(settings.bulk_chunk_rows) {
        let with_code: Vec<Value> = chunk.iter().map(|&i| rows[i].clone()).collect();
        let upstream = Upstream {
            get: false,
            url: format!(
                "{}/AddCallsBulk?{}",
                settings.dialer_url,
                form(&[("Code".to_owned(), settings.code.clone())])
            ),
            content_type: Some("application/json"),
            body: Bytes::from(Value::Array(with_code).to_string()),
        };
        let (reply, unknown) = call(gw, settings, &cmd.tenant, &method, &upstream).await;
        unknown_any |= unknown;
        let status = if reply.status == 200 {
            "queued"
        } else if unknown {
            "unknown"
        } else {
            "failed"
        };
        for &i in chunk {
            let mut r = json!({"row": i, "status": status});
            if reply.status != 200 {
                r["error"] = reply.body["error"].clone();
            }
            results[i] = r;
        }
    }
    for r in &results {
        let s = match r["status"].as_str() {
            Some("queued") => "queued",
            Some("invalid") => "invalid",
            Some("unknown") => "unknown",
            _ => "failed",
        };
        *counts.entry(s).or_default() += 1;
    }
    let reply = CommandReply {
        status: if counts.get("queued").copied().unwrap_or(0) == rows.len() {
            200
        } else {
            207
        },
        body: json!({
            "method": "AddCallsBulk",
            "total": rows.len(),
            "queued": counts.get("queued").copied().unwrap_or(0),
            "invalid": counts.get("invalid").copied().unwrap_or(0),
            "failed": counts.get("failed").copied().unwrap_or(0),
            "unknown": counts.get("unknown").copied().unwrap_or(0),
            "rows": results,
        }),
    };
    if let Some(entity) = &entity {
        store_outcome(gw, entity, &fingerprint, &reply, unknown_any).await;
    }
    reply
}

/// The neutral `originate` on Voicenter: Click2Call (`action=call`), `from` the first leg
/// (`phone`: an extension or a number), `to` the second (`target`), `attached` as `var_*`,
/// `caller_id` as `targetcallerid`. An announcement has no Click2Call equivalent: refused.
pub(super) async fn originate(
    gw: &dyn Gateway,
    settings: &ApiSettings,
    cmd: &Command,
) -> CommandReply {
    let map = match object(&cmd.body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut out = Map::new();
    for (key, value) in &map {
        match key.as_str() {
            "from" => {
                out.insert("phone".into(), value.clone());
            }
            "to" => {
                out.insert("target".into(), value.clone());
            }
            "caller_id" => {
                out.insert("targetcallerid".into(), value.clone());
            }
            "record" => {
                out.insert("record".into(), value.clone());
            }
            "attached" => match value {
                Value::Object(_) => {
                    out.insert("custom_data".into(), value.clone());
                }
                Value::Null => {}
                _ => return error(422, "invalid_field", "attached is an object"),
            },
            "announcement" => {
                return error(
                    422,
                    "unsupported_field",
                    "announcement: Voicenter's Click2Call cannot play an announcement to a connected call (its action=message plays recordings to one number only)",
                )
            }
            other => {
                return error(
                    422,
                    "unsupported_field",
                    format!("{other}: not an originate field (from, to, announcement, attached, caller_id, record)"),
                )
            }
        }
    }
    for needed in ["phone", "target"] {
        if out
            .get(needed)
            .and_then(scalar)
            .filter(|s| !s.is_empty())
            .is_none()
        {
            let name = if needed == "phone" { "from" } else { "to" };
            return error(422, "missing_field", format!("{name} is required"));
        }
    }
    let to = out.get("target").and_then(scalar).unwrap_or_default();
    if !settings.allows(&to) {
        return not_allowed("to", &to);
    }
    let (mut method, upstream) = match click2call(settings, "call", &Value::Object(out)) {
        Ok(b) => b,
        Err(r) => return r,
    };
    method.name = "originate";
    let mut reply = guarded(gw, settings, cmd, &method, upstream).await;
    if reply.status == 200 {
        if let Some(id) = reply.body["voicenter"]
            .get("CALLID")
            .and_then(scalar)
            .filter(|s| !s.is_empty())
        {
            reply.body["call_id"] = json!(id);
        }
        reply.body["platform"] = json!("voicenter");
    }
    reply
}
