//! The connector and the callback service against the CTIPS simulator (strict WCF mode) over
//! real HTTP: a reqwest platform client, and a hyper server hosting the callback service with
//! the in-memory gateway. The wire checks (XSDs with lxml, events published by zeep) are the
//! independent Python peers in tests/py.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctips_sim::{Fault, Sim, SimConfig};
use http_body_util::{BodyExt, Full};
use ivrgate_adapter::action::{Action, Envelope};
use ivrgate_adapter::{
    Adapter, Answer, BoxFuture, ConnectorExit, Inbound, OutboundError, OutboundRequest,
    OutboundResponse, PathSegments, PlatformClient, StopReason,
};
use serde_json::{json, Value};

use crate::tests::{wait_for, Ctx, Fake};
use crate::Ctips;

const TOKEN: &str = "sim-token-0123456789abcdef";

struct Reqwest(reqwest::Client);

impl PlatformClient for Reqwest {
    fn post(
        &self,
        request: OutboundRequest,
    ) -> BoxFuture<'_, Result<OutboundResponse, OutboundError>> {
        Box::pin(async move {
            let mut r = self
                .0
                .post(&request.url)
                .timeout(request.timeout.unwrap_or(Duration::from_secs(5)));
            for (k, v) in &request.headers {
                r = r.header(k, v);
            }
            let resp = r.body(request.body).send().await.map_err(|e| {
                if e.is_timeout() {
                    OutboundError::Timeout
                } else {
                    OutboundError::Connect(e.to_string())
                }
            })?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp
                .bytes()
                .await
                .map_err(|e| OutboundError::Body(e.to_string()))?;
            Ok(OutboundResponse {
                status,
                content_type,
                body,
            })
        })
    }
}

/// Serves `/ctips/t1/...` with the adapter's callback service; returns the base URL.
async fn host(gw: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let gw = gw.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let gw = gw.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let segments: Vec<String> = parts
                                .uri
                                .path()
                                .split('/')
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect();
                            let rest = segments.get(2..).unwrap_or_default().to_vec();
                            let inbound = Inbound {
                                tenant: "t1".into(),
                                method: parts.method,
                                path: PathSegments::from_decoded(rest),
                                query: None,
                                headers: parts.headers,
                                body,
                                peer,
                                mask_phones: false,
                                max_depth: 32,
                            };
                            let handled = Ctips.handle(&*gw, inbound).await;
                            let (parts, body) = handled.response.into_parts();
                            Ok::<_, std::convert::Infallible>(hyper::Response::from_parts(
                                parts,
                                Full::new(body),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Validates request bodies against the XSDs written from WIRE.md (lxml).
fn validate(bodies: &[(String, String)]) {
    let dir = tempdir();
    let mut files = Vec::new();
    for (i, (op, body)) in bodies.iter().enumerate() {
        let f = dir.join(format!("{i:03}-{op}.xml"));
        std::fs::write(&f, body).unwrap();
        files.push(f);
    }
    let out = std::process::Command::new("python3")
        .arg(root().join("tests/py/ctips_validate.py"))
        .args(&files)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "XSD validation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempdir() -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "ivrgate-ctips-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn against_the_simulator_session_routes_failover_and_goodbye() {
    let sim = Sim::start(SimConfig {
        ports: vec![0, 0],
        strict: true,
        heartbeat_interval: Duration::from_secs(1),
        missed_heartbeats: 3,
        users: vec![("ivrgate".into(), "pw".into())],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Fake::with(json!({
        "servers": sim.urls(),
        "username": "ivrgate",
        "password": "pw",
        "callback_token": TOKEN,
        "heartbeat_interval_s": 1,
        "missed_heartbeats": 2,
        "filters": [{"type": "service", "value": "3"}],
        "user_data_fields": ["acct"],
    }));
    let base = host(gw.clone()).await;
    let (stop, _) = tokio::sync::watch::channel(None);
    let settings = crate::settings_for(&*gw, "t1").unwrap();
    let ctx = Arc::new(Ctx {
        gw: gw.clone(),
        http: Arc::new(Reqwest(reqwest::Client::new())),
        advertise: base.clone(),
        spec: settings.spec(),
        stop,
        health: Mutex::new(Vec::new()),
    });
    let run = tokio::spawn(Ctips.run_connector(ctx.clone()));
    wait_for("online on server 0", || {
        sim.sessions().iter().any(|s| s.online && s.server == 0)
    })
    .await;
    let session = sim.sessions().into_iter().find(|s| s.online).unwrap();
    assert_eq!(session.classes.len(), 4, "{session:?}");
    assert_eq!(session.filters.len(), 1, "{session:?}");
    assert!(session
        .callback_url
        .starts_with(&format!("{base}/ctips/t1/{TOKEN}/")));
    // StartSession came before the OpenConnection answer and was accepted.
    assert!(sim
        .callbacks()
        .iter()
        .any(|c| c.op == "StartSession" && c.ok));
    // A routed call: the customer answers enqueue on service 4, with attached data.
    let mut attach = serde_json::Map::new();
    attach.insert("acct".into(), json!("42"));
    *gw.answer.lock().unwrap() = Answer::Action(Envelope {
        action: Action::Enqueue {
            queue: "4".into(),
            priority: None,
            agent: None,
            agent_wait_s: None,
            description: None,
        },
        language: None,
        attach,
    });
    let call = sim.inbound_call(3, "0501234567", "1800", Some(10));
    wait_for("route used", || {
        gw.types().contains(&"ctips.route.used".to_owned())
    })
    .await;
    let used = gw
        .events()
        .into_iter()
        .find(|(_, _, e)| e.event_type == "ctips.route.used")
        .unwrap();
    assert_eq!(
        used.2.data.get("decision_id"),
        Some(&json!("dec_1")),
        "{:?} {:?}",
        used.2.data,
        used.2.vendor_fields
    );
    assert_eq!(
        used.2.data["late"],
        json!(false),
        "{:?}",
        used.2.vendor_fields
    );
    assert_eq!(used.2.vendor_fields["RouteStatus"], json!("RouteSuccess"));
    let select = sim
        .requests()
        .into_iter()
        .find(|r| r.op == "RouteSelect")
        .unwrap();
    assert!(select.body.contains("<a:UserData xmlns:b=\"http://schemas.microsoft.com/2003/10/Serialization/Arrays\"><b:string>acct=42</b:string></a:UserData>"), "{}", select.body);
    // Gapless per-entity sequences for the call.
    let call_events: Vec<u64> = gw
        .events()
        .into_iter()
        .filter(|(k, _, _)| k.kind == "ctips" && k.id.starts_with(&format!("{call}:")))
        .map(|(_, seq, _)| seq)
        .collect();
    assert_eq!(
        call_events,
        (1..=call_events.len() as u64).collect::<Vec<_>>()
    );
    // Events published by a real SOAP client (zeep) are accepted.
    let epoch = gw.epoch;
    let url = format!("{base}/ctips/t1/{TOKEN}/{epoch}");
    let events = tempdir().join("events.json");
    std::fs::write(
        &events,
        serde_json::to_vec(&json!([
            {"event": "CTIAgentStateChange", "fields": {"AgentId": 1001, "AgentState": "Idle", "ServiceIds": [3]}},
            {"event": "CTICallStarted", "fields": {"CallId": 9090, "CallSequenceId": 1}},
            {"event": "CTILinkStatus", "fields": {"ComponentType": "Gateway", "ComponentState": "Up"}},
            {"op": "Heartbeat", "sessionId": session.id},
        ]))
        .unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new("python3")
        .arg(root().join("tests/py/ctips_publish.py"))
        .arg(&url)
        .arg(&events)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "zeep publish failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gw.entity("ctips", "9090:1").is_some());
    // The primary dies: the backup takes over, filters restored, a Snapshot taken.
    sim.set_fault(0, Fault::Kill).await.unwrap();
    wait_for("online on server 1 with a snapshot", || {
        sim.sessions().iter().any(|s| s.online && s.server == 1)
            && sim
                .requests()
                .iter()
                .any(|r| r.server == 1 && r.op == "Snapshot")
    })
    .await;
    let backup = sim
        .sessions()
        .into_iter()
        .find(|s| s.online && s.server == 1)
        .unwrap();
    assert_eq!(backup.filters.len(), 1);
    wait_for("lost recorded", || {
        gw.types().contains(&"ctips.session.lost".to_owned())
    })
    .await;
    // SIGTERM: OffLine and CloseConnection.
    ctx.stop.send_replace(Some(StopReason::Shutdown));
    assert_eq!(run.await.unwrap(), ConnectorExit::Stopped);
    let ops: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.server == 1)
        .map(|r| r.op)
        .collect();
    assert_eq!(
        &ops[ops.len() - 2..],
        ["OffLine", "CloseConnection"],
        "{ops:?}"
    );
    // No request was faulted by the strict simulator, and every one is valid against the XSDs.
    let requests = sim.requests();
    let faulted: Vec<_> = requests
        .iter()
        .filter(|r| r.fault.is_some() && r.op != "CloseConnection")
        .map(|r| (r.op.clone(), r.fault.clone()))
        .collect();
    assert!(faulted.is_empty(), "{faulted:?}");
    let bodies: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.op.clone(), r.body.clone()))
        .collect();
    validate(&bodies);
    let _ = Value::Null;
}
