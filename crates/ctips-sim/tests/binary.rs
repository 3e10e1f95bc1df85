//! The built `ctips-sim` binary: --help, startup lines, and the JSON control API.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::WAIT;
use ctips_sim::testkit::{CallbackServer, Client};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ctips-sim");

struct Running {
    child: Child,
    servers: Vec<String>,
    control: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args(["--ports", "0,0", "--control-port", "0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let mut servers = Vec::new();
    let control = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.strip_prefix("server ") {
            servers.push(rest.split_once(' ').unwrap().1.to_string());
        } else if let Some(c) = line.strip_prefix("control ") {
            break c.to_string();
        }
    };
    Running {
        child,
        servers,
        control,
    }
}

async fn post(url: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[test]
fn help_describes_the_options() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--ports",
        "--control-port",
        "--heartbeat-interval",
        "--missed-heartbeats",
        "--tolerant",
        "/servers/{i}/fault",
    ] {
        assert!(text.contains(opt), "{opt}");
    }
    let bad = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let bad = Command::new(BIN)
        .args(["--missed-heartbeats", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn the_binary_serves_ctips_and_the_control_api() {
    let sim = start(&["--route-timeout", "1"]);
    assert_eq!(sim.servers.len(), 2);
    assert!(sim.servers[0].ends_with("/Aspect.UnifiedIP.EDK.CTIPortalService"));
    let cb = CallbackServer::start().await.unwrap();
    let mut c = Client::new(&sim.servers[1]);
    c.register(&cb.url()).await.unwrap();

    let state = get(&format!("{}state", sim.control)).await;
    assert_eq!(state["sessions"][0]["server"], 1);
    assert_eq!(state["sessions"][0]["online"], true);
    assert_eq!(state["strict"], true);

    // a routed call through the control API: RouteRequest, then default routing after 1 s
    let r = post(
        &format!("{}calls", sim.control),
        json!({"service": 3, "ani": "555", "dnis": "800", "data": {"lang": "fr"}}),
    )
    .await;
    let call = r["call_id"].as_i64().unwrap();
    cb.wait_event(WAIT, "CTIRouteRequest", |e| e.int("CallId") == call)
        .await
        .unwrap();
    let used = cb
        .wait_event(WAIT, "CTIRouteUsed", |e| e.int("CallId") == call)
        .await
        .unwrap();
    assert_eq!(used.text("RouteStatus"), "RouteDefaultUsed");
    let r = post(&format!("{}calls/{call}/hangup", sim.control), json!(null)).await;
    assert_eq!(r["found"], true);
    cb.wait_event(WAIT, "CTICallEnd", |e| e.int("CallId") == call)
        .await
        .unwrap();

    // any event, and link status
    post(&format!("{}publish", sim.control), json!({"event": "CTIServiceStateChange", "fields": {"ServiceId": 3, "ServiceState": "Pause", "AgentIdList": [1001]}})).await;
    let ss = cb
        .wait_event(WAIT, "CTIServiceStateChange", |_| true)
        .await
        .unwrap();
    assert_eq!(ss.text("ServiceState"), "Pause");
    assert!(ss.error.is_none(), "{:?}", ss.error);
    post(
        &format!("{}link-status", sim.control),
        json!({"server": 1, "component": "Gateway", "state": "Down"}),
    )
    .await;
    cb.wait_event(WAIT, "CTILinkStatus", |_| true)
        .await
        .unwrap();

    // the logs
    let reqs = get(&format!("{}requests", sim.control)).await;
    assert_eq!(reqs[0]["op"], "OpenConnection");
    assert_eq!(reqs[0]["server"], 1);
    let last = reqs.as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(
        get(&format!("{}requests?since={last}", sim.control)).await,
        json!([])
    );
    let cbs = get(&format!("{}callbacks", sim.control)).await;
    assert_eq!(cbs[0]["op"], "StartSession");

    // faults: kill server 1 (its session is disposed), bring it back
    let r = post(
        &format!("{}servers/1/fault", sim.control),
        json!({"kind": "kill"}),
    )
    .await;
    assert_eq!(r["ok"], true);
    let state = get(&format!("{}state", sim.control)).await;
    assert_eq!(state["servers"][1]["fault"]["kind"], "kill");
    assert_eq!(state["disposed"][0]["reason"], "killed");
    assert!(c.send("OnLine", Default::default()).await.is_err());
    post(
        &format!("{}servers/1/fault", sim.control),
        json!({"kind": "none"}),
    )
    .await;
    let (r, _) = c.send("OnLine", Default::default()).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidSessionId"));

    // strict off through the API; bad input answers 400 with a reason
    post(&format!("{}strict", sim.control), json!({"strict": false})).await;
    assert_eq!(get(&format!("{}state", sim.control)).await["strict"], false);
    let resp = reqwest::Client::new()
        .post(format!("{}servers/0/fault", sim.control))
        .body("{\"kind\":\"explode\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = reqwest::Client::new()
        .post(format!("{}calls", sim.control))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn the_demo_client_prints_the_events_it_receives() {
    let sim = start(&[]);
    let mut client = Command::new(BIN)
        .args(["client", &sim.servers[0]])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = client.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first.starts_with("session "), "{first}");
    let r = post(
        &format!("{}calls", sim.control),
        json!({"service": 3, "ani": "5551234", "dnis": "8001"}),
    )
    .await;
    let call = r["call_id"].as_i64().unwrap();
    let line = tokio::time::timeout(WAIT, async {
        loop {
            let l = rx.recv().await.unwrap();
            if l.starts_with("event CTIRouteRequest") {
                return l;
            }
        }
    })
    .await
    .unwrap();
    assert!(line.contains(&format!("CallId={call}")), "{line}");
    assert!(line.contains("ANI=5551234"), "{line}");
    let _ = client.kill();
    let _ = client.wait();
}
