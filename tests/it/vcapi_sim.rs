//! A simulator of Voicenter's outbound APIs (seed 003 §1, §3, §6, §7, §8, §10) on 127.0.0.1,
//! built from the seed's examples in `tests/fixtures/voicenter/api/`: each answer it gives is
//! a response example as the seed prints it (unquoted keys, trailing commas, XML-RPC), and
//! the error answers are the seed's ("Phone is missing", "Authorization failed.", "Internal
//! error."). It keeps what it was sent, the calls Click2Call placed and the calls queued per
//! campaign, and can be told to answer slowly or fail.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

/// The code the simulator's organisation has.
pub const CODE: &str = "c0de5ecret9f8e7d6c5b4a";

/// One request the simulator got.
#[derive(Debug, Clone)]
pub struct SimRequest {
    pub method: String,
    /// Path and query as sent (the code in it).
    pub uri: String,
    pub body: String,
    /// The parameters: query, form fields or JSON members, by name.
    pub params: Map<String, Value>,
}

#[derive(Default)]
struct State {
    requests: Vec<SimRequest>,
    delay: Duration,
    internal_error: bool,
    idle: bool,
    calls_placed: u32,
    pending: BTreeMap<String, Vec<Value>>,
}

pub struct VoicenterSim {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/voicenter/api")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture read as JSON (leniently, as the seed writes it).
pub fn fixture_json(name: &str) -> Value {
    ivrgate_wire::json::parse_lenient(&fixture(name), &ivrgate_wire::Limits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn lenient(text: &str) -> Option<Value> {
    ivrgate_wire::json::parse_lenient(text, &ivrgate_wire::Limits::default()).ok()
}

impl VoicenterSim {
    pub async fn start() -> VoicenterSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind simulator");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let s = s.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let (status, ct, text, delay) = answer(&s, &parts, &body);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
                            *response.status_mut() =
                                http::StatusCode::from_u16(status).expect("status");
                            response
                                .headers_mut()
                                .insert("content-type", http::HeaderValue::from_static(ct));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        VoicenterSim { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `[tenants.voicenter_api]` lines pointing every API at this simulator.
    pub fn settings(&self, code_file: &std::path::Path, extra: &str) -> String {
        let b = self.base();
        format!(
            r#"
[tenants.voicenter_api]
code = "file:{code}"
click2call_url = "{b}/ForwardDialer/click2call.aspx"
cdr_url = "{b}/hub/cdr/"
dialer_url = "{b}/ForwardDialer/Dialer"
monitor_url = "{b}/comet/API"
login_url = "{b}/UserLogin/SetStatusFromAPI"
{extra}
"#,
            code = code_file.display()
        )
    }

    pub fn requests(&self) -> Vec<SimRequest> {
        self.state.lock().expect("sim").requests.clone()
    }

    pub fn calls_placed(&self) -> u32 {
        self.state.lock().expect("sim").calls_placed
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("sim").delay = delay;
    }

    /// Every extension and queue without calls (the seed's examples with the lists emptied).
    pub fn set_idle(&self, on: bool) {
        self.state.lock().expect("sim").idle = on;
    }

    pub fn set_internal_error(&self, on: bool) {
        self.state.lock().expect("sim").internal_error = on;
    }
}

fn params_of(parts: &http::request::Parts, body: &[u8]) -> Map<String, Value> {
    let mut params = Map::new();
    if let Some(q) = parts.uri.query() {
        for (k, v) in ivrgate_wire::form::parse(q) {
            params.insert(k, json!(v));
        }
    }
    let text = String::from_utf8_lossy(body);
    let ct = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.contains("json") {
        match lenient(&text) {
            Some(Value::Object(m)) => params.extend(m),
            Some(other) => {
                params.insert("_body".into(), other);
            }
            None => {}
        }
    } else if ct.contains("x-www-form-urlencoded") {
        for (k, v) in ivrgate_wire::form::parse(&text) {
            params.insert(k, json!(v));
        }
    }
    params
}

fn param<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn text(params: &Map<String, Value>, name: &str) -> Option<String> {
    param(params, name).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

const JSON: &str = "application/json; charset=utf-8";
const XML: &str = "text/xml; charset=utf-8";

fn answer(
    state: &Mutex<State>,
    parts: &http::request::Parts,
    body: &[u8],
) -> (u16, &'static str, String, Duration) {
    let params = params_of(parts, body);
    let mut st = state.lock().expect("sim");
    st.requests.push(SimRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        body: String::from_utf8_lossy(body).into_owned(),
        params: params.clone(),
    });
    let delay = st.delay;
    let code_ok = text(&params, "code").as_deref() == Some(CODE);
    let path = parts.uri.path().to_ascii_lowercase();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, ct, text) = match segments.as_slice() {
        ["forwarddialer", "click2call.aspx"] => {
            let action = text_of(&params, "action");
            if !code_ok {
                json_answer(
                    r#"{"ERRORCODE":1,"ERRORMESSAGE":"Invalid request parameters","CALLID":""}"#,
                )
            } else if text_of(&params, "phone").is_empty() {
                // The seed's own error example, in XML-RPC whatever format was asked for.
                (200, XML, fixture("click2call.error.xml"))
            } else if action == "call" && text_of(&params, "target").is_empty() {
                json_answer(r#"{"ERRORCODE":1,"ERRORMESSAGE":"Target is missing","CALLID":""}"#)
            } else if text_of(&params, "phone") == "offline" {
                json_answer(
                    r#"{"ERRORCODE":3,"ERRORMESSAGE":"Extension representative offline","CALLID":""}"#,
                )
            } else {
                st.calls_placed += 1;
                let n = st.calls_placed;
                let mut ok = fixture_json("click2call.ok.json");
                if action != "terminate" {
                    ok["CALLID"] = json!(format!("{:0>32}", format!("sim{n}")));
                } else {
                    ok["CALLID"] = json!("");
                }
                let format = text_of(&params, "format").to_ascii_uppercase();
                if format == "JSON" {
                    (200, JSON, ok.to_string())
                } else {
                    (200, XML, xmlrpc_struct(&ok))
                }
            }
        }
        ["hub", "cdr"] => {
            if !code_ok {
                (200, JSON, fixture("CallLog.auth_failed.json"))
            } else {
                (200, JSON, fixture("CallLog.response.json"))
            }
        }
        ["forwarddialer", "dialer", method] => dialer(&mut st, method, &params, code_ok),
        ["comet", "api", method] => {
            if !code_ok {
                (200, JSON, fixture("monitor.auth_failed.json"))
            } else if st.internal_error {
                (200, JSON, fixture("monitor.internal_error.json"))
            } else {
                match *method {
                    "getextensionscalls" if st.idle => {
                        let mut v = fixture_json("GetExtensionsCalls.response.json");
                        for ext in v["EXTENSIONS"].as_array_mut().into_iter().flatten() {
                            ext["calls"] = json!([]);
                        }
                        (200, JSON, v.to_string())
                    }
                    "getqueuescallers" if st.idle => {
                        let mut v = fixture_json("GetQueuesCallers.response.json");
                        for q in v["QUEUES"].as_array_mut().into_iter().flatten() {
                            q["Callers"] = json!([]);
                        }
                        (200, JSON, v.to_string())
                    }
                    "getextensionscalls" => {
                        (200, JSON, fixture("GetExtensionsCalls.response.json"))
                    }
                    "getqueuescallers" => (200, JSON, fixture("GetQueuesCallers.response.json")),
                    "getextensions" => (200, JSON, fixture("GetExtensions.response.json")),
                    _ => (
                        404,
                        "text/html",
                        "<html><body>Not Found</body></html>".into(),
                    ),
                }
            }
        }
        ["userlogin", "setstatusfromapi"] => {
            if !code_ok {
                (200, JSON, fixture("SetStatusFromAPI.auth_failed.json"))
            } else if text(&params, "UserID").is_none() || text(&params, "Status").is_none() {
                json_answer(
                    r#"{"Status":3,"StatusError":"0","StatusErrorMessage":"Missing parameters"}"#,
                )
            } else {
                (200, JSON, fixture("SetStatusFromAPI.response.json"))
            }
        }
        _ => (
            404,
            "text/html",
            "<html><body>Not Found</body></html>".into(),
        ),
    };
    (status, ct, text, delay)
}

fn json_answer(text: &str) -> (u16, &'static str, String) {
    (200, JSON, text.to_owned())
}

fn text_of(params: &Map<String, Value>, name: &str) -> String {
    text(params, name).unwrap_or_default()
}

/// A flat JSON object as the XML-RPC struct the seed shows.
fn xmlrpc_struct(value: &Value) -> String {
    let mut out =
        String::from("<?xml version=\"1.0\"?>\n<methodResponse><params><param><value><struct>");
    if let Value::Object(map) = value {
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!(
                "<member><name>{k}</name><value><string>{v}</string></value></member>"
            ));
        }
    }
    out.push_str("</struct></value></param></params></methodResponse>\n");
    out
}

fn dialer(
    st: &mut State,
    method: &str,
    params: &Map<String, Value>,
    code_ok: bool,
) -> (u16, &'static str, String) {
    // The seed documents no authorization error for the Dialer; its "unexpected internal
    // error" is the closest answer it lists.
    if !code_ok {
        return json_answer(r#"{"ErrorCode":3,"Description":"Unexpected internal error"}"#);
    }
    let names = [
        "AddCall",
        "RemoveCall",
        "GetCampaignList",
        "GetMembersList",
        "RemoveMember",
        "AddMember",
        "StopCampaign",
        "StartCampaign",
        "UpdateCampaignStrategy",
        "ClearCampaignCalls",
        "AddCallsBulk",
        "GetCampaignPendingCalls",
        "UpdateCall",
        "GetCampaignDetails",
        "ConfigureIvrCampaign",
    ];
    let Some(name) = names.iter().find(|n| n.eq_ignore_ascii_case(method)) else {
        return (
            404,
            "text/html",
            "<html><body>Not Found</body></html>".into(),
        );
    };
    let campaign = text_of(params, "Campaign");
    if campaign == "unknown" {
        return json_answer(r#"{"ErrorCode":1,"Description":"Invalid campaign code"}"#);
    }
    let valid_target = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match *name {
        "AddCall" => {
            let target = text_of(params, "Target");
            if !valid_target(&target) {
                return json_answer(r#"{"ErrorCode":2,"Description":"The target is invalid"}"#);
            }
            st.pending
                .entry(campaign)
                .or_default()
                .push(Value::Object(params.clone()));
        }
        "AddCallsBulk" => {
            let rows = param(params, "_body")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if rows.iter().any(|r| {
                !valid_target(
                    &r.get("Target")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .unwrap_or_default(),
                )
            }) {
                return json_answer(r#"{"ErrorCode":2,"Description":"The target is invalid"}"#);
            }
            for row in rows {
                let c = row["Campaign"].as_str().unwrap_or_default().to_owned();
                st.pending.entry(c).or_default().push(row);
            }
        }
        _ => {}
    }
    (200, JSON, fixture(&format!("{name}.response.json")))
}
