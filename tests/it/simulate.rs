//! `ivrgate simulate` through the built binary, against a real receiver in Python that checks
//! every request with the Standard Webhooks reference library (`tests/py/sim_receiver.py`):
//! the steps printed, the webhooks in a real call's order, signatures, events delivered, an
//! answer the platform cannot carry out named with its reason and fallback, a receiver over
//! TLS with a private CA, connection failures, and a recording replayed. Loopback only;
//! every process is bounded and killed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::process::{py_script, run_with_timeout};
use crate::support::SECRET;
use crate::tls::Ca;

/// Longest one simulated call may take (events retried included).
const CALL: Duration = Duration::from_secs(60);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ivrgate")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/simulate")
        .join(name)
}

/// `tests/py/sim_receiver.py` running: its port and the requests it logged.
struct PyReceiver {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
    got: Vec<Value>,
}

impl PyReceiver {
    fn start(flow: &str, tls: Option<(&Path, &Path)>) -> PyReceiver {
        let mut command = Command::new("python3");
        command
            .arg(py_script("sim_receiver.py"))
            .arg(SECRET)
            .arg(flow);
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/py/sim_receiver.py (is the venv on PATH?)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the receiver says where it listens");
        let port = serde_json::from_str::<Value>(&first).expect("port line")["port"]
            .as_u64()
            .expect("port") as u16;
        PyReceiver {
            child,
            port,
            lines,
            got: Vec::new(),
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/hooks", self.port)
    }

    /// Everything logged so far (the simulator has exited, so every request is in).
    fn requests(&mut self) -> &[Value] {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.got
                .push(serde_json::from_str(&line).expect("a JSON line per request"));
        }
        &self.got
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ivrgate simulate ARGS`; exit status and stdout (stderr appended on failure).
fn simulate(args: &[&str]) -> (ExitStatus, String, String) {
    let mut command = Command::new(bin());
    command.arg("simulate").args(args);
    run_with_timeout(&mut command, CALL)
}

/// Runs `ivrgate simulate` on one of `examples/simulate/`'s scenarios against `url`.
fn simulate_example(scenario: &str, url: &str) -> (ExitStatus, String, String) {
    let path = example(scenario);
    simulate(&[
        "--scenario",
        path.to_str().expect("path"),
        "--url",
        url,
        "--secret",
        SECRET,
    ])
}

/// Asserts that `needles` appear in `text` in this order.
fn in_order(text: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match text[from..].find(needle) {
            Some(at) => from += at + needle.len(),
            None => panic!("{needle:?} not found (in order) in:\n{text}"),
        }
    }
}

fn types(requests: &[Value]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_voicenter_call_plays_menu_then_dial_with_every_webhook_signed_and_delivered() {
    let mut receiver = PyReceiver::start("menu-dial", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate_example("voicenter-menu-dial.toml", &url);
    assert!(status.success(), "exit {status:?}\n{out}\n{err}");
    in_order(
        &out,
        &[
            "simulating a call on voicenter from 0541234567 to 0731234567",
            "-> GET_IVR_ACTION (MENU -1, DTMF \"\")",
            "webhook decision.ivr_action dec_",
            "voicenter: plays \"welcome\" 1 time(s)",
            "waits for up to 1 digit(s) for menu \"main\"",
            "caller: presses 1",
            "-> GET_IVR_ACTION (MENU main, DTMF \"1\")",
            "voicenter: dials 2001",
            "ringing up to 20 s",
            "2001 answers after 4 s; the conversation lasts 30 s",
            "-> HANGUP_CALL",
            "STATUS 0: the hangup report is stored",
            "err 0: the CDR is stored",
            "summary: 2 decision(s), 2 answered by your endpoint, 0 fallback(s); 2 event(s) delivered, 0 not delivered",
            "result: the call completed",
        ],
    );
    let got = receiver.requests().to_vec();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(
        got.iter().all(|r| r["verified"] == true),
        "every request verifies with the reference library: {got:#?}"
    );
    // Decisions first, in the call's order; the two events after them (delivered
    // concurrently, so in either order).
    let t = types(&got);
    assert_eq!(t[..2], ["decision.ivr_action", "decision.ivr_action"]);
    let mut events = t[2..].to_vec();
    events.sort();
    assert_eq!(events, ["call.cdr", "call.hangup"]);
    assert_eq!(got[0]["data"]["menu"], "-1");
    assert_eq!(got[1]["data"]["menu"], "main");
    assert_eq!(got[1]["data"]["dtmf"], "1");
    assert_eq!(got[1]["data"]["previous_decision"]["answer"], "menu");
    // One call throughout: the same ivrgate call id, the attached data on the events, the
    // transfer's target and status in the hangup report.
    let call_id = got[0]["data"]["call_id"].as_str().expect("call id");
    assert!(call_id.starts_with("call_"));
    for r in &got {
        assert_eq!(r["data"]["call_id"], call_id, "{r}");
    }
    let hangup = got
        .iter()
        .find(|r| r["type"] == "call.hangup")
        .expect("hangup");
    assert_eq!(hangup["data"]["attached"]["crm_id"], "A-17");
    assert_eq!(hangup["data"]["target"], "2001");
    assert_eq!(hangup["data"]["status"], "answered");
    assert_eq!(hangup["data"]["vendor_fields"]["CALL_DURATION"], 44);
    assert_eq!(hangup["data"]["vendor_fields"]["CALL_DAILTIME"], 4);
}

#[test]
fn a_goto_leads_to_the_layer_input_in_xml_rpc_and_a_busy_target_ends_the_call() {
    let mut receiver = PyReceiver::start("menu-dial", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate_example("voicenter-layer.toml", &url);
    assert!(status.success(), "exit {status:?}\n{out}\n{err}");
    in_order(
        &out,
        &[
            "-> GET_IVR_ACTION (MENU -1, DTMF \"\"), text/xml",
            "<- voicenter answered 200: (XML-RPC) {\"STATUS\":0,\"ACTION\":\"MENU\"",
            "caller: presses 2",
            "voicenter: goes to layer 7",
            "caller: presses 5",
            "-> IVR_LAYER_INPUT (LAYER_ID 7, DTMF \"5\"), text/xml",
            "webhook decision.layer_input",
            "voicenter: keeps CUSTOM_DATA {\"crm_id\":\"A-17\"} on the call",
            "voicenter: dials 2002 or 2003",
            "2002 is busy; no next menu or layer was given, so Voicenter disconnects the call",
            "-> HANGUP_CALL, text/xml",
            "result: the call completed",
        ],
    );
    let got = receiver.requests().to_vec();
    let t = types(&got);
    assert_eq!(
        t[..3],
        [
            "decision.ivr_action",
            "decision.ivr_action",
            "decision.layer_input"
        ]
    );
    assert_eq!(got[2]["data"]["layer_id"], 7);
    assert_eq!(got[2]["data"]["dtmf"], "5");
    let hangup = got
        .iter()
        .find(|r| r["type"] == "call.hangup")
        .expect("hangup");
    assert_eq!(hangup["data"]["status"], "busy");
    assert!(got.iter().all(|r| r["verified"] == true), "{got:#?}");
}

#[test]
fn an_answer_voicenter_cannot_carry_out_is_named_with_its_reason_and_the_fallback() {
    let mut receiver = PyReceiver::start("bad", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate(&[
        "--platform",
        "voicenter",
        "--url",
        &url,
        "--secret",
        SECRET,
        "--keys",
        "1",
    ]);
    assert_eq!(status.code(), Some(1), "findings exit 1\n{out}\n{err}");
    in_order(
        &out,
        &[
            "caller: presses 1",
            "{\"action\": \"dial\", \"targets\": [\"2001\", \"2002\"]}",
            "your answer was not used (invalid_answer: invalid answer: CALL dials exactly one target, got 2; use dialstrings for alternative routes); the fallback plays instead: {\"action\":\"default\"}",
            "<- voicenter answered 200: {\"STATUS\":1}",
            "STATUS 1: Voicenter leaves the External IVR",
            "result: 1 finding(s)",
        ],
    );
    // The call still ends properly: hangup and CDR delivered.
    let got = receiver.requests().to_vec();
    assert_eq!(
        types(&got)
            .iter()
            .filter(|t| t.starts_with("call."))
            .count(),
        2
    );
}

#[test]
fn a_receiver_over_tls_with_a_private_ca_is_reached_with_ca_file_and_refused_without() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("developer private CA");
    let (cert, key) = ca.issue("127.0.0.1", false);
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).expect("ca");
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    let mut receiver = PyReceiver::start("menu-dial", Some((&cert_path, &key_path)));
    let url = receiver.url("https");
    let (status, out, err) = simulate(&[
        "--platform",
        "voicenter",
        "--url",
        &url,
        "--secret",
        SECRET,
        "--keys",
        "1",
        "--ca-file",
        ca_path.to_str().expect("path"),
    ]);
    assert!(status.success(), "exit {status:?}\n{out}\n{err}");
    in_order(
        &out,
        &["voicenter: dials 2001", "result: the call completed"],
    );
    let got = receiver.requests().to_vec();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(got.iter().all(|r| r["verified"] == true));

    // Without the CA the certificate is not trusted: every decision falls back saying so,
    // and the events are not delivered.
    let (status, out, _) =
        simulate(&["--platform", "voicenter", "--url", &url, "--secret", SECRET]);
    assert_eq!(status.code(), Some(1), "{out}");
    in_order(
        &out,
        &[
            "your answer was not used (connect_error: ",
            "certificate",
            "the fallback plays instead",
            "event call.",
            "not delivered: ",
            "certificate",
            "summary: 1 decision(s), 0 answered by your endpoint, 1 fallback(s); 0 event(s) delivered, 2 not delivered",
        ],
    );
}

#[test]
fn a_recording_replays_to_the_same_exchange_and_a_changed_one_is_told_apart() {
    let dir = tempfile::tempdir().expect("tmp");
    let recording = dir.path().join("call.jsonl");
    let receiver = PyReceiver::start("menu-dial", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate(&[
        "--platform",
        "voicenter",
        "--url",
        &url,
        "--secret",
        SECRET,
        "--keys",
        "1",
        "--record",
        recording.to_str().expect("path"),
    ]);
    assert!(status.success(), "{out}\n{err}");
    drop(receiver);
    let text = std::fs::read_to_string(&recording).expect("recording");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["record"], "ivrgate-simulate");
    let kinds: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["kind"].as_str().unwrap_or(""))
        .collect();
    for kind in [
        "platform_request",
        "webhook",
        "webhook_answer",
        "decided",
        "platform_reply",
        "step",
        "summary",
    ] {
        assert!(kinds.contains(&kind), "{kind} recorded: {kinds:?}");
    }
    let webhook = lines
        .iter()
        .find(|l| l["kind"] == "webhook")
        .expect("a webhook line");
    assert!(webhook["headers"]["webhook-signature"]
        .as_str()
        .expect("signature")
        .starts_with("v1,"));
    assert!(webhook["body"]
        .as_str()
        .expect("body as sent")
        .contains("\"type\":\"decision.ivr_action\""));

    // The receiver is gone: the replay answers as it did.
    let (status, out, err) = simulate(&["--replay", recording.to_str().expect("path")]);
    assert!(status.success(), "{out}\n{err}");
    in_order(
        &out,
        &[
            "replaying",
            "voicenter: dials 2001",
            "replay: the same exchange as recorded (2 decision webhook(s), 2 event delivery attempt(s), 8 platform message(s)); every signature verified",
        ],
    );

    // A recording whose webhooks differ from what the gateway sends now is a failure.
    let changed = text.replacen(
        "\\\"from\\\":\\\"0541234567\\\"",
        "\\\"from\\\":\\\"0500000000\\\"",
        1,
    );
    assert_ne!(changed, text, "the recording holds the payload's from");
    std::fs::write(&recording, changed).expect("write");
    let (status, out, _) = simulate(&["--replay", recording.to_str().expect("path")]);
    assert_eq!(status.code(), Some(1), "{out}");
    in_order(
        &out,
        &[
            "replay: 1 difference(s) from the recording:",
            "decision webhook #1: recorded",
            "0500000000",
        ],
    );
}

#[test]
fn an_endpoint_that_refuses_connections_is_named_and_events_go_dead_within_the_schedule() {
    // A port nothing listens on.
    let port = crate::process::free_port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let (status, out, _) =
        simulate(&["--platform", "voicenter", "--url", &url, "--secret", SECRET]);
    assert_eq!(status.code(), Some(1), "{out}");
    in_order(
        &out,
        &[
            "your answer was not used (connect_error: connection refused",
            "the fallback plays instead: {\"action\":\"default\"}",
            "STATUS 1",
            "(attempt 3 of 3)",
            "no attempt left",
            "2 not delivered",
        ],
    );
}

#[test]
fn bad_usage_exits_64_and_help_exits_0() {
    let (status, out, err) = simulate(&["--platform", "voicenter", "--secret", SECRET]);
    assert_eq!(status.code(), Some(64), "{out}{err}");
    assert!(err.contains("--url is required"), "{err}");
    let (status, _, err) = simulate(&["--platform", "asterisk", "--url", "http://127.0.0.1:1/"]);
    assert_eq!(status.code(), Some(64));
    assert!(
        err.contains("unknown platform \"asterisk\" (possible: voicenter, openscape, ptk, ctips)"),
        "{err}"
    );
    let (status, _, err) = simulate(&[
        "--platform",
        "voicenter",
        "--url",
        "http://127.0.0.1:1/",
        "--secret",
        "not-a-secret",
    ]);
    assert_eq!(status.code(), Some(64));
    assert!(err.contains("webhook_secret"), "{err}");
    assert!(
        !err.contains("not-a-secret"),
        "the secret is never printed: {err}"
    );
    let (status, out, _) = simulate(&["--help"]);
    assert!(status.success());
    assert!(
        out.contains("--record FILE") && out.contains("Exit status"),
        "{out}"
    );
}

#[test]
fn an_openscape_call_is_routed_queued_assigned_and_transferred() {
    let mut receiver = PyReceiver::start("menu-dial", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate_example("openscape-queue.toml", &url);
    assert!(status.success(), "exit {status:?}\n{out}\n{err}");
    in_order(
        &out,
        &[
            "simulating a call on openscape from 9055557900 to 69030",
            "-> Initialize",
            "-> QueryCallInfo",
            "caller: presses 1",
            "-> SetContactData",
            "-> QueryRoutingInfo",
            "webhook decision.routing_info dec_",
            "openscape: routing says: enqueue in \"Sales\" (priority 5, \"asked for sales\")",
            "-> Enqueue",
            "the call waits in \"Sales\" (IVR Hold)",
            "QueryCallStatus: 1 (position 1)",
            "-> command API: assign",
            "QueryCallStatus 2 (pending): the IVR transfers the call to extension 4711",
            "-> CallerDisconnected",
            "result: the call completed",
        ],
    );
    let got = receiver.requests().to_vec();
    assert!(got.iter().all(|r| r["verified"] == true), "{got:#?}");
    let routing = got
        .iter()
        .find(|r| r["type"] == "decision.routing_info")
        .expect("routing decision");
    assert_eq!(routing["data"]["contact_data"]["Choice"], "1");
    assert_eq!(routing["data"]["from"], "9055557900");
    assert_eq!(routing["data"]["channel"], "6060");
    let mut events: Vec<String> = types(&got)
        .into_iter()
        .filter(|t| !t.starts_with("decision."))
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "openscape.call.arrived",
            "openscape.call.assigned",
            "openscape.call.disconnected",
            "openscape.call.enqueued"
        ]
    );
    let last = got
        .iter()
        .find(|r| r["type"] == "openscape.call.disconnected")
        .expect("disconnected");
    assert_eq!(last["data"]["attached"]["crm_id"], "B-9", "{last}");
}

#[test]
fn an_openscape_routing_answer_out_of_range_plays_no_routing_with_its_reason() {
    let receiver = PyReceiver::start("bad", None);
    let url = receiver.url("http");
    let (status, out, err) =
        simulate(&["--platform", "openscape", "--url", &url, "--secret", SECRET]);
    assert_eq!(status.code(), Some(1), "findings exit 1\n{out}\n{err}");
    in_order(
        &out,
        &[
            "-> QueryRoutingInfo",
            "\"priority\": 500",
            "your answer was not used (invalid_answer: invalid answer: enqueue: priority must be 1 to 100); the fallback plays instead: {\"action\":\"default\"}",
            "QueryRoutingInfo returned -915",
            "-> CallerDisconnected",
            "result: 1 finding(s)",
        ],
    );
}

#[test]
fn a_ptk_call_takes_the_callback_offer_and_the_dialer_calls_back_when_due() {
    let mut receiver = PyReceiver::start("menu-dial", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate_example("ptk-callback.toml", &url);
    assert!(status.success(), "exit {status:?}\n{out}\n{err}");
    in_order(
        &out,
        &[
            "simulating a call on ptk from 5551234 to 8005550100",
            "-> GetSegmentState (SOAP 1.1)",
            "webhook decision.segment_state dec_",
            "ptk: the segment is in Normal mode, estimated wait 300 s; callback offered",
            "-> CreateInteraction (SOAP 1.1)",
            "ptk: the interaction is V",
            "caller: presses 1",
            "-> InteractionRequestContact (SOAP 1.1)",
            "event callback.due msg_",
            "ptk: the callback is due: the platform's dialer calls 5551234",
            "-> InteractionOutboundConnected",
            "-> InteractionQueued",
            "-> InteractionDequeued",
            "InteractionDequeued: 107000, request completed",
            "result: the call completed",
        ],
    );
    let got = receiver.requests().to_vec();
    assert!(got.iter().all(|r| r["verified"] == true), "{got:#?}");
    let state = got
        .iter()
        .find(|r| r["type"] == "decision.segment_state")
        .expect("segment state asked");
    assert_eq!(state["data"]["ptk_tenant"], "Portree");
    assert_eq!(state["data"]["segment"], "VHT_Test");
    let mut events: Vec<String> = types(&got)
        .into_iter()
        .filter(|t| !t.starts_with("decision."))
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "callback.due",
            "ptk.interaction.callback_requested",
            "ptk.interaction.created",
            "ptk.interaction.dequeued",
            "ptk.interaction.outbound_connected",
            "ptk.interaction.queued"
        ]
    );
    // One interaction throughout, numbered in order.
    let mut seqs: Vec<u64> = got
        .iter()
        .filter(|r| !r["type"].as_str().unwrap_or("").starts_with("decision."))
        .map(|r| r["data"]["seq"].as_u64().expect("seq"))
        .collect();
    seqs.sort();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_segment_answer_ptk_cannot_use_is_named_and_the_caller_holds_for_an_agent() {
    let mut receiver = PyReceiver::start("bad", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate(&[
        "--platform",
        "ptk",
        "--url",
        &url,
        "--secret",
        SECRET,
        "--keys",
        "2",
        "--scenario",
        example("ptk-callback.toml").to_str().expect("path"),
    ]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    // The answer is refused with its reason and the configured state plays: Normal, with
    // the 120 s estimate and a callback offered, which the caller declines.
    in_order(
        &out,
        &[
            "your answer was not used (invalid_answer: invalid answer: segment_state takes default or a native object, not enqueue); the fallback plays instead: {\"action\":\"default\"}",
            "ptk: the segment is in Normal mode, estimated wait 120 s; callback offered",
            "caller: presses 2",
            "-> InteractionQueued",
            "ptk: an agent answers",
            "InteractionDequeued: 107000",
        ],
    );
    let got = receiver.requests().to_vec();
    let dequeued = got
        .iter()
        .find(|r| r["type"] == "ptk.interaction.dequeued")
        .expect("dequeued");
    assert_eq!(dequeued["data"]["reason"], "AgentAnswered");
}

#[test]
fn a_ctips_session_comes_online_and_a_route_request_is_answered_with_route_select() {
    let mut receiver = PyReceiver::start("menu-dial", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate_example("ctips-route.toml", &url);
    assert!(status.success(), "exit {status:?}\n{out}\n{err}");
    in_order(
        &out,
        &[
            "simulating a call on ctips from 0501234567 to 1800",
            "~ ivrgate -> CTIPS OpenConnection (200)",
            "~ ivrgate -> CTIPS OnLine (200)",
            "~ CTIPS -> ivrgate StartSession (acknowledged)",
            "ctips: the session is online",
            "arrives on service 3; CTIPS publishes a RouteRequest (RouteTimeout 10 s)",
            "webhook decision.route_request dec_",
            "~ ivrgate -> CTIPS RouteSelect (200)",
            "PublishCTIEvent CTIRouteUsed",
            "ctips: CTIPS routes the call as selected: RouteToService 4",
            "PublishCTIEvent CTICallEnd",
            "result: the call completed",
        ],
    );
    let got = receiver.requests().to_vec();
    assert!(got.iter().all(|r| r["verified"] == true), "{got:#?}");
    let decision = got
        .iter()
        .find(|r| r["type"] == "decision.route_request")
        .expect("route decision");
    assert_eq!(decision["data"]["from"], "0501234567");
    let deadline = decision["data"]["deadline_ms"].as_u64().expect("deadline");
    assert!(
        deadline <= 8_500,
        "RouteTimeout 10 s less the margin: {deadline}"
    );
    let t = types(&got);
    for expected in [
        "ctips.session.online",
        "ctips.route.requested",
        "ctips.route.used",
        "ctips.call.ended",
    ] {
        assert!(t.iter().any(|x| x == expected), "{expected} in {t:?}");
    }
    let used = got
        .iter()
        .find(|r| r["type"] == "ctips.route.used")
        .expect("route used");
    assert_eq!(used["data"]["decision_id"], decision["data"]["decision_id"]);
}

#[test]
fn a_route_ctips_cannot_carry_out_is_named_with_ctips_reason() {
    let receiver = PyReceiver::start("bad", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate(&["--platform", "ctips", "--url", &url, "--secret", SECRET]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    in_order(
        &out,
        &[
            "{\"action\": \"enqueue\", \"queue\": \"99\"}",
            "~ ivrgate -> CTIPS RouteSelect (200)",
            "PublishCTIEvent CTIRouteRequestFailed",
            "! CTIPS could not carry out the route for call",
            "(CTIRouteRequestFailed): DestinationInvalidServiceIdentifier: no service 99",
            "result: 1 finding(s)",
        ],
    );
}

/// Recordings committed as fixtures (tests/fixtures/simulate/, made with --record against
/// tests/py/sim_receiver.py): replaying each must give the same exchange. They fail when a
/// change alters what a receiver gets or what a platform is told for the same answers;
/// re-record them (docs/simulate.md) when such a change is intended.
#[test]
fn committed_recordings_replay_to_the_same_exchange() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/simulate");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for path in names {
        let (status, out, err) = simulate(&["--replay", path.to_str().expect("path")]);
        assert!(
            status.success() && out.contains("replay: the same exchange as recorded"),
            "{}: {status:?}\n{out}\n{err}",
            path.display()
        );
    }
}

#[test]
fn a_ctips_recording_is_refused_for_replay_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ctips.jsonl");
    std::fs::write(
        &path,
        "{\"record\":\"ivrgate-simulate\",\"version\":1,\"scenario\":{\"platform\":\"ctips\"}}\n",
    )
    .expect("write");
    let (status, _, err) = simulate(&["--replay", path.to_str().expect("path")]);
    assert_eq!(status.code(), Some(64));
    assert!(
        err.contains("--replay covers voicenter, openscape and ptk"),
        "{err}"
    );
}

/// The issue's "Done when": the service runs (`ivrgate serve`, the built binary), a simulated
/// call is pointed at it and reaches a receiver over TLS with a private CA, and what happened
/// is read from the admin API (and, when the receiver is gone, from the service's log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_service_takes_a_simulated_call_to_a_tls_receiver_and_its_admin_api_tells() {
    use crate::process::{free_port, Daemon};
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("receiver private CA");
    let (cert, key) = ca.issue("127.0.0.1", false);
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).expect("ca");
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    let mut receiver = PyReceiver::start("menu-dial", Some((&cert_path, &key_path)));
    let port = free_port();
    let toml = format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"

[logging]
level = "info"

[storage]
min_free_bytes = 0

[delivery]
retry_schedule_s = [1, 1]
jitter_percent = 0
# Two events of three attempts each fail below: the sixth failure in a row would otherwise
# find the breaker open (after 5) and wait 30 s.
breaker_failures = 100

[[tenants]]
id = "acme"
webhook_url = "{url}"
webhook_secret = "{SECRET}"
ca_file = "{ca}"
"#,
        state = dir.path().join("state").display(),
        url = receiver.url("https"),
        ca = ca_path.display()
    );
    let mut daemon = Daemon::spawn_with("svc", dir.path(), port, &toml, None);
    daemon.ready().await;
    let gateway = format!("http://127.0.0.1:{port}");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            simulate(&args)
        })
    };
    let args = |keys: &str| -> Vec<String> {
        [
            "--gateway",
            &gateway,
            "--tenant",
            "acme",
            "--platform",
            "voicenter",
            "--keys",
            keys,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (status, out, err) = run(args("1")).await.expect("join");
    assert!(status.success(), "{out}\n{err}\n{}", daemon.log_text());
    in_order(
        &out,
        &[
            &format!("through the running gateway at http://127.0.0.1:{port} (tenant acme)"),
            "voicenter: dials 2001",
            "err 0: the CDR is stored",
            &format!(
                "admin API, tenant acme: endpoint {}, pending 0, dead 0",
                receiver.url("https")
            ),
            "result: the call completed",
        ],
    );
    let got = receiver.requests().to_vec();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(got.iter().all(|r| r["verified"] == true), "{got:#?}");

    // The receiver goes away: the call falls back, its events go dead within the schedule,
    // and the admin API and the log say why.
    drop(receiver);
    let (status, out, _) = run(args("1")).await.expect("join");
    assert_eq!(status.code(), Some(1), "{out}");
    in_order(
        &out,
        &[
            "<- voicenter answered 200: {\"STATUS\":1}",
            "admin API, tenant acme: endpoint",
            "dead 2",
            "2 event(s) of tenant acme went dead during the call (last error: connection refused",
        ],
    );
    let log = daemon.log_text();
    assert!(
        log.contains("decision answered with the fallback") && log.contains("connect_error"),
        "{log}"
    );
}

#[test]
fn a_receiver_slower_than_the_deadline_is_named_with_the_timeout() {
    let mut receiver = PyReceiver::start("slow", None);
    let url = receiver.url("http");
    let (status, out, err) = simulate(&[
        "--platform",
        "voicenter",
        "--url",
        &url,
        "--secret",
        SECRET,
        "--deadline-ms",
        "300",
    ]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    in_order(
        &out,
        &[
            "webhook decision.ivr_action dec_",
            "your answer was not used (timeout: timeout: no answer within the decision's deadline",
            "the fallback plays instead: {\"action\":\"default\"}",
            "<- voicenter answered 200: {\"STATUS\":1}",
        ],
    );
    // The receiver did get it, signed, with the deadline it was given.
    let got = receiver.requests().to_vec();
    let decision = got
        .iter()
        .find(|r| r["type"] == "decision.ivr_action")
        .expect("decision");
    assert_eq!(decision["verified"], true);
    assert_eq!(decision["data"]["deadline_ms"], 300);
}
