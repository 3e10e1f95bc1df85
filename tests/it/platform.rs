//! A fifth platform is one adapter and nothing else: a test adapter given to the gateway the
//! way `src/adapters.rs` lists the built-in ones brings its own settings section (checked and
//! parsed by the adapter, refused with the adapter's own lines), decision point (deadline and
//! fallback checked, the webhook typed after it), routes, entity timers, connectors and
//! command API. Nothing in the core names it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ivrgate::clock::ManualClock;
use ivrgate::config::{Config, ConfigError};
use ivrgate_adapter::action::Action;
use ivrgate_adapter::{
    settings_of, transition_one, Adapter, Answer, BoxFuture, CallRef, Change, Command,
    CommandReply, ConnectorCtxRef, ConnectorExit, ConnectorSpec, DecisionPoint, DecisionRequest,
    EntityEvent, EntityKey, Gateway, Handled, Inbound, ParsedSettings, TimerChange, TimerFired,
    Write,
};
use serde_json::{json, Map, Value};

use crate::support::{client, config_toml, Gateway as TestGateway, Receiver, Reply, WAIT};

/// `[tenants.fifth]`: what the adapter reads from a tenant's section.
#[derive(Debug)]
struct FifthSettings {
    greeting: String,
    session: bool,
}

fn parse(settings: &Value) -> Result<FifthSettings, Vec<String>> {
    let mut parsed = FifthSettings {
        greeting: "hello".into(),
        session: false,
    };
    let table = match settings {
        Value::Null => return Ok(parsed),
        Value::Object(table) => table,
        _ => return Err(vec!["[fifth] must be a table".into()]),
    };
    let mut problems = Vec::new();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("greeting", Value::String(s)) => parsed.greeting = s.clone(),
            ("session", Value::Bool(b)) => parsed.session = *b,
            ("greeting" | "session", _) => problems.push(format!("fifth.{key} has the wrong type")),
            _ => problems.push(format!(
                "unknown key {key:?}; valid keys: greeting, session"
            )),
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

fn hangup() -> Answer {
    Answer::Action(ivrgate_adapter::action::Envelope::new(Action::Hangup {
        prompt: None,
        cause: None,
    }))
}

fn neutral_only(answer: &Answer) -> Result<(), String> {
    match answer {
        Answer::Action(_) => Ok(()),
        Answer::Native(_) => Err("fifth has no native answers".into()),
    }
}

static POINTS: [DecisionPoint; 1] = [DecisionPoint {
    vendor: "fifth",
    kind: "fifth_menu",
    platform_max_ms: 5_000,
    default_fallback: hangup,
    validate: neutral_only,
    native_attach: |_| Map::new(),
}];

/// What the adapter saw: timers fired, connector starts and stops.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Seen {
    fn push(&self, line: String) {
        self.0.lock().expect("seen").push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().expect("seen").clone()
    }
}

struct Fifth {
    seen: Arc<Seen>,
}

fn text(body: String, method: &str) -> Handled {
    Handled {
        response: http::Response::new(Bytes::from(body)),
        method: method.into(),
        outcome: "ok",
        vendor_call_id: None,
    }
}

impl Adapter for Fifth {
    fn name(&self) -> &'static str {
        "fifth"
    }

    fn decision_points(&self) -> &'static [DecisionPoint] {
        &POINTS
    }

    fn parse_settings(&self, settings: &Value) -> Result<ParsedSettings, Vec<String>> {
        Ok(Arc::new(parse(settings)?))
    }

    fn handle<'a>(&'a self, gateway: &'a dyn Gateway, request: Inbound) -> BoxFuture<'a, Handled> {
        Box::pin(async move {
            let settings = settings_of::<FifthSettings>(gateway, &request.tenant, "fifth");
            let greeting = settings.map_or_else(String::new, |s| s.greeting.clone());
            let path: Vec<&str> = request.path.segments().iter().map(String::as_str).collect();
            match path.as_slice() {
                ["ask", call] => {
                    let decision = gateway
                        .decide(DecisionRequest {
                            tenant: request.tenant.clone(),
                            point: &POINTS[0],
                            call: CallRef {
                                vendor_call_id: Some((*call).to_owned()),
                                correlation: Map::new(),
                            },
                            data: Map::new(),
                            vendor_fields: Map::new(),
                            deadline_ms: None,
                        })
                        .await;
                    text(format!("{greeting} {}", decision.answer.label()), "ASK")
                }
                ["later", id] => {
                    let due = gateway.now();
                    let key = EntityKey::new(&request.tenant, "fifth.job", *id);
                    let set = transition_one(gateway, key, |_| {
                        Change::Write(Write::state(json!({"phase": "waiting"})).timer(
                            TimerChange::Set {
                                name: "wake".into(),
                                due,
                                payload: json!({"why": "test"}),
                            },
                        ))
                    })
                    .await;
                    text(format!("{}", set.is_ok()), "LATER")
                }
                _ => text(format!("{greeting} unknown"), "unknown"),
            }
        })
    }

    fn on_timer<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        timer: TimerFired,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.seen
                .push(format!("timer {} {}", timer.entity.id, timer.name));
            transition_one(gateway, timer.entity.clone(), |_| {
                Change::Write(
                    Write::state(json!({"phase": "woken"}))
                        .event(EntityEvent::new("fifth.job.woken")),
                )
            })
            .await
            .map(drop)
            .map_err(|e| e.to_string())
        })
    }

    fn command<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        command: Command,
    ) -> BoxFuture<'a, CommandReply> {
        Box::pin(async move {
            let Some(settings) = settings_of::<FifthSettings>(gateway, &command.tenant, "fifth")
            else {
                return CommandReply::error(500, "no_settings", "no settings");
            };
            match command.path.segments() {
                [only] if only == "greeting" => {
                    CommandReply::ok(json!({"greeting": settings.greeting}))
                }
                _ => CommandReply::error(404, "not_found", "no such resource"),
            }
        })
    }

    fn connectors(&self, tenant: &str, settings: &ParsedSettings) -> Vec<ConnectorSpec> {
        match settings.clone().downcast::<FifthSettings>() {
            Ok(s) if s.session => vec![ConnectorSpec {
                name: format!("session-{tenant}"),
                fingerprint: s.greeting.clone(),
                tls: Default::default(),
                request_timeout: Duration::from_secs(5),
            }],
            _ => Vec::new(),
        }
    }

    fn run_connector(&self, ctx: ConnectorCtxRef) -> BoxFuture<'static, ConnectorExit> {
        let seen = self.seen.clone();
        Box::pin(async move {
            seen.push(format!("connector {}", ctx.spec().name));
            ctx.stopped().await;
            ConnectorExit::Stopped
        })
    }
}

fn fifth() -> (&'static Fifth, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let adapter: &'static Fifth = Box::leak(Box::new(Fifth { seen: seen.clone() }));
    (adapter, seen)
}

fn with(adapter: &'static Fifth) -> Vec<&'static dyn Adapter> {
    let mut all = ivrgate::adapters::all().to_vec();
    all.push(adapter);
    all
}

fn problems(toml: &str, adapters: &[&'static dyn Adapter]) -> String {
    match Config::parse(toml, Path::new("test.toml"))
        .expect("parses")
        .validate(adapters)
    {
        Ok(_) => String::new(),
        Err(ConfigError::Invalid(lines)) => lines,
        Err(other) => other.to_string(),
    }
}

/// The adapter's section, decision point and deadline are checked like a built-in one's,
/// before any port is bound; without the adapter its section is an unknown key.
#[test]
fn a_fifth_platforms_configuration_is_checked_by_its_adapter() {
    let (adapter, _) = fifth();
    let dir = Path::new("/var/lib/ivrgate");
    let file = |extra: &str| config_toml(dir, "http://127.0.0.1:9/hook", extra);
    let good = file("[tenants.fifth]\ngreeting = \"shalom\"\nsession = true\n");
    assert_eq!(problems(&good, &with(adapter)), "");

    let without = problems(&good, ivrgate::adapters::all());
    assert!(
        without.contains("tenant acme: fifth is not a tenant setting; valid keys: id, "),
        "{without}"
    );
    assert!(without.contains("voicenter_api"), "{without}");

    let typo = problems(&file("[tenants.fifth]\ngreting = \"x\"\n"), &with(adapter));
    assert_eq!(
        typo,
        "tenant acme: fifth: unknown key \"greting\"; valid keys: greeting, session"
    );
    let section = problems(&file("[tenants.fifht]\ngreeting = \"x\"\n"), &with(adapter));
    assert!(
        section.starts_with("tenant acme: fifht is not a tenant setting; valid keys: ")
            && section.ends_with(", fifth"),
        "{section}"
    );

    let slow = problems(
        &file("[tenants.decisions.fifth_menu]\ndeadline_ms = 6000\n"),
        &with(adapter),
    );
    assert!(
        slow.contains("the fifth_menu deadline of 6000 ms must be between 1 and 5000 ms, what fifth tolerates"),
        "{slow}"
    );
    let native = problems(
        &file("[tenants.decisions.fifth_menu]\nfallback = { native = { X = 1 } }\n"),
        &with(adapter),
    );
    assert!(
        native.contains("decisions.fifth_menu.fallback: fifth has no native answers"),
        "{native}"
    );
}

/// Served beside the built-in adapters: its route asks the customer through its own
/// decision point, its entity timer comes back to it, its connector runs under a lease and
/// its command API reads its settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_platform_is_served_through_its_adapter_alone() {
    let (adapter, seen) = fifth();
    let receiver = Receiver::start().await;
    receiver.answer(|hook| {
        if hook.json["type"] == "decision.fifth_menu" {
            Reply::ok(r#"{"action":"hangup"}"#)
        } else {
            Reply::ok("")
        }
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let toml = config_toml(
        tmp.path(),
        &receiver.url("/hook"),
        "[tenants.fifth]\ngreeting = \"shalom\"\nsession = true\n",
    );
    let gw = TestGateway::start_with(
        tmp.path(),
        &toml,
        Arc::new(ManualClock::default()),
        vec![adapter],
    )
    .await;

    let (status, body) = gw.get("/fifth/acme/ask/call-1").await;
    assert_eq!((status, body.as_str()), (200, "shalom hangup"));
    let asked = receiver.next_of("decision.").await;
    assert_eq!(asked.json["type"], json!("decision.fifth_menu"));
    assert!(asked.verifies());

    let (status, body) = gw.get("/fifth/acme/later/job-1").await;
    assert_eq!((status, body.as_str()), (200, "true"));
    let woken = receiver.next_of("fifth.").await;
    assert_eq!(woken.json["type"], json!("fifth.job.woken"));
    assert_eq!(woken.json["data"]["vendor"], json!("fifth"));
    assert!(seen.lines().contains(&"timer job-1 wake".to_owned()));

    let deadline = tokio::time::Instant::now() + WAIT;
    while gw
        .handle
        .core
        .held_epoch("acme", "fifth", "session-acme")
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "connector not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.lines().contains(&"connector session-acme".to_owned()));

    let answer = client()
        .get(gw.url("/api/acme/fifth/greeting"))
        .send()
        .await
        .expect("command");
    assert_eq!(answer.status().as_u16(), 200);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body, json!({"greeting": "shalom"}));
    gw.stop().await;
}
