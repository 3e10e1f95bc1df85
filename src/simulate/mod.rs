//! `ivrgate simulate`: a whole call played against a developer's webhook, without a PBX.
//!
//! The gateway runs in this process exactly as `serve` runs it (its own adapters, core,
//! signing, store and outbox), configured with one tenant whose endpoint and secret are the
//! developer's. A scripted platform then speaks the platform's own wire to that gateway
//! (Voicenter XML-RPC or JSON, ...) in the order a real call does, follows each answer (a
//! menu leads to the next key press, a goto to its target, a dial to the transfer leg, a
//! hangup to the hangup report and CDR) and prints what the platform does. The webhooks,
//! their answers and how each decision was settled (with the exact reason when the fallback
//! played) come from the core through [`crate::observe`]: the simulator never builds a
//! payload or judges an answer itself.
//!
//! `--record FILE` writes the exchange as JSON lines; `--replay FILE` plays a recording
//! again against a stub receiver that answers as the developer's did and checks that the
//! gateway sends the same webhooks and the platform gets the same replies ([`record`]).

mod openscape;
mod record;
mod scenario;
mod voicenter;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::observe::{Observed, Observer};
pub use scenario::{Encoding, Keys, Platform, Scenario, TransferOutcome};

/// Exit status: the call completed, every decision answered by the receiver and every event
/// delivered.
pub const EXIT_OK: u8 = 0;
/// The call ran, but something needs the developer's attention: a fallback played, an event
/// was not delivered, the flow never ended, a replay differs.
pub const EXIT_FINDINGS: u8 = 1;
/// The simulation could not run (store, listener, runtime).
pub const EXIT_FAILED: u8 = 2;
/// Bad usage, scenario or settings.
pub const EXIT_USAGE: u8 = 64;

/// The tenant id the simulated gateway serves.
const TENANT: &str = "sim";

pub const USAGE: &str = "usage:
  ivrgate simulate --platform NAME --url URL --secret SECRET [--decision-url URL]
                   [--scenario FILE] [--keys 1,2] [--caller NUMBER] [--called NUMBER]
                   [--deadline-ms N] [--ca-file PEM] [--record FILE] [--verbose]
  ivrgate simulate --replay FILE [--verbose]";

pub const HELP: &str = "ivrgate simulate: play a whole call against your webhook, without a PBX

Runs ivrgate's own adapters and core in this process against a scripted platform and sends
your endpoint the same signed decision webhooks and events a real call would, in the same
order. Each answer is followed (a menu leads to the next key press, a goto to its target, a
dial to the transfer, a hangup to the hangup report and CDR) and every step is printed with
what the platform does; an answer the platform cannot carry out is flagged with the exact
reason and the fallback that plays instead.

  --platform NAME     voicenter, openscape, ptk or ctips (or `platform` in the scenario)
  --url URL           your webhook endpoint: events, and decisions unless --decision-url
  --decision-url URL  where decision webhooks go, when not --url
  --secret SECRET     your whsec_ secret; env:NAME or file:PATH read it from there;
                      default: the IVRGATE_SIMULATE_SECRET environment variable
  --scenario FILE     a scenario (TOML): caller, called, keys, transfer outcome, ...;
                      examples/simulate/*.toml
  --keys 1,2          the keys the caller presses, one per menu (then 1, the first option)
  --caller, --called  the caller's number and the number called
  --deadline-ms N     the decision deadline (default 3000, within the platform's limit)
  --ca-file PEM       CA certificates to trust for your endpoint (a private CA)
  --record FILE       write the exchange as JSON lines (webhooks with headers, answers,
                      platform requests and replies, steps), for --replay in tests
  --replay FILE       play a recording again against a stub that answers as recorded;
                      checks that the same webhooks are sent and the same replies given
  --verbose           the gateway's log lines on stderr

Exit status: 0 the call completed, every decision answered by your endpoint and every event
delivered; 1 the call ran but a fallback played, an event was not delivered, the flow did not
end within max_decisions or a replay differs (each said in the summary); 2 the simulation
could not run; 64 bad usage or scenario. Documentation: docs/simulate.md.";

/// What the command line asks for.
#[derive(Debug, Default)]
struct Args {
    platform: Option<String>,
    url: Option<String>,
    decision_url: Option<String>,
    secret: Option<String>,
    scenario: Option<PathBuf>,
    keys: Option<Vec<String>>,
    caller: Option<String>,
    called: Option<String>,
    deadline_ms: Option<u64>,
    ca_file: Option<PathBuf>,
    record: Option<PathBuf>,
    replay: Option<PathBuf>,
    verbose: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        if name == "--verbose" || name == "-v" {
            out.verbose = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "--platform" => out.platform = Some(value()?),
            "--url" => out.url = Some(value()?),
            "--decision-url" => out.decision_url = Some(value()?),
            "--secret" => out.secret = Some(value()?),
            "--scenario" => out.scenario = Some(value()?.into()),
            "--keys" => {
                out.keys = Some(
                    value()?
                        .split(',')
                        .map(|k| k.trim().to_owned())
                        .filter(|k| !k.is_empty())
                        .collect(),
                )
            }
            "--caller" => out.caller = Some(value()?),
            "--called" => out.called = Some(value()?),
            "--deadline-ms" => {
                let v = value()?;
                out.deadline_ms = Some(
                    v.parse()
                        .map_err(|_| format!("--deadline-ms {v:?} is not a number"))?,
                )
            }
            "--ca-file" => out.ca_file = Some(value()?.into()),
            "--record" => out.record = Some(value()?.into()),
            "--replay" => out.replay = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

/// What one run needs besides its scenario: where the webhooks go and how they are signed.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub decision_url: Option<String>,
    /// The secret as given (`whsec_...`, `env:NAME` or `file:PATH`).
    pub secret: String,
    pub ca_file: Option<PathBuf>,
}

/// `ivrgate simulate ARGS...` (the arguments after `simulate`).
pub fn main(args: &[String]) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("ivrgate simulate: {why}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.verbose {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ivrgate simulate: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = match &args.replay {
        Some(path) => runtime.block_on(record::replay(path)),
        None => match settle(&args) {
            Ok((scenario, target)) => {
                let mut out = Output::stdout(args.record.as_deref());
                match out {
                    Ok(ref mut out) => runtime.block_on(simulate(scenario, target, out)),
                    Err(why) => {
                        eprintln!("ivrgate simulate: {why}");
                        EXIT_USAGE
                    }
                }
            }
            Err(why) => {
                eprintln!("ivrgate simulate: {why}");
                EXIT_USAGE
            }
        },
    };
    // Connections the gateway left open must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    ExitCode::from(code)
}

/// The scenario (file, then flags) and the target.
fn settle(args: &Args) -> Result<(Scenario, Target), String> {
    let platform = args
        .platform
        .as_deref()
        .map(|p| {
            Platform::parse(p)
                .ok_or_else(|| format!("unknown platform {p:?} (possible: {})", Platform::NAMES))
        })
        .transpose()?;
    let mut scenario = match (&args.scenario, platform) {
        (Some(path), _) => Scenario::load(path)?,
        (None, Some(p)) => Scenario::new(p),
        (None, None) => {
            return Err(format!(
                "--platform is required (possible: {}) unless the scenario names it\n{USAGE}",
                Platform::NAMES
            ))
        }
    };
    if let Some(p) = platform {
        scenario.platform = p;
    }
    if let Some(keys) = &args.keys {
        scenario.keys = keys.clone();
    }
    if let Some(c) = &args.caller {
        scenario.caller = c.clone();
    }
    if let Some(c) = &args.called {
        scenario.called = c.clone();
    }
    if args.deadline_ms.is_some() {
        scenario.deadline_ms = args.deadline_ms;
    }
    scenario.check()?;
    let url = args
        .url
        .clone()
        .ok_or_else(|| format!("--url is required: your webhook endpoint\n{USAGE}"))?;
    let secret = match &args.secret {
        Some(s) => s.clone(),
        None => std::env::var("IVRGATE_SIMULATE_SECRET").map_err(|_| {
            "--secret is required (whsec_..., env:NAME or file:PATH), or set IVRGATE_SIMULATE_SECRET"
                .to_owned()
        })?,
    };
    Ok((
        scenario,
        Target {
            url,
            decision_url: args.decision_url.clone(),
            secret,
            ca_file: args.ca_file.clone(),
        },
    ))
}

/// The in-memory configuration: one tenant with the developer's endpoint and secret, an
/// embedded store in `state_dir`, a short retry schedule so an event is delivered or dead
/// within seconds.
fn config(scenario: &Scenario, target: &Target, state_dir: &std::path::Path) -> toml::Table {
    let mut tenant = toml::Table::new();
    tenant.insert("id".into(), TENANT.into());
    tenant.insert("webhook_url".into(), target.url.clone().into());
    tenant.insert("webhook_secret".into(), target.secret.clone().into());
    if let Some(url) = &target.decision_url {
        tenant.insert("decision_url".into(), url.clone().into());
    }
    if let Some(ca) = &target.ca_file {
        tenant.insert("ca_file".into(), ca.display().to_string().into());
    }
    if let Some(ms) = scenario.deadline_ms {
        tenant.insert(
            "decision_deadline_ms".into(),
            (ms.min(i64::MAX as u64) as i64).into(),
        );
    }
    match scenario.platform {
        Platform::Ptk => {
            let mut ptk = toml::Table::new();
            ptk.insert(
                "tenants".into(),
                toml::Value::Array(vec![scenario.ptk_tenant.clone().into()]),
            );
            tenant.insert("ptk".into(), ptk.into());
        }
        Platform::Openscape | Platform::Voicenter | Platform::Ctips => {}
    }
    let mut storage = toml::Table::new();
    storage.insert("min_free_bytes".into(), 0.into());
    let mut delivery = toml::Table::new();
    delivery.insert(
        "retry_schedule_s".into(),
        toml::Value::Array(vec![1.into(), 2.into()]),
    );
    delivery.insert("jitter_percent".into(), 0.into());
    delivery.insert("timeout_ms".into(), 5_000.into());
    // One call is no pattern: the circuit breakers would stop the third attempt of a
    // second event (or a later decision) after five failures, and hide what happens.
    delivery.insert("breaker_failures".into(), 1_000.into());
    let mut root = toml::Table::new();
    root.insert("listen".into(), "127.0.0.1:0".into());
    root.insert("state_dir".into(), state_dir.display().to_string().into());
    root.insert("storage".into(), storage.into());
    root.insert("delivery".into(), delivery.into());
    root.insert(
        "tenants".into(),
        toml::Value::Array(vec![toml::Value::Table(tenant)]),
    );
    root
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "ivrgate-simulate-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The observer: the core's observations, handed to the simulator in order.
struct Channel(mpsc::UnboundedSender<Observed>);

impl Observer for Channel {
    fn observe(&self, what: Observed) {
        let _ = self.0.send(what);
    }
}

/// Runs one simulated call; the exit status.
pub async fn simulate(scenario: Scenario, target: Target, out: &mut Output) -> u8 {
    let dir = match TempDir::new() {
        Ok(d) => d,
        Err(e) => {
            out.fail(&format!("cannot make a temporary directory: {e}"));
            return EXIT_FAILED;
        }
    };
    let text = match toml::to_string(&config(&scenario, &target, &dir.0)) {
        Ok(t) => t,
        Err(e) => {
            out.fail(&format!("cannot write the configuration: {e}"));
            return EXIT_FAILED;
        }
    };
    let resolved = match Config::parse(&text, std::path::Path::new("simulate"))
        .and_then(|c| c.validate(crate::adapters::all()))
    {
        Ok(c) => c,
        Err(e) => {
            // The problems name the setting (webhook_url, webhook_secret, ca_file, ...),
            // never the secret's value.
            out.fail(&format!("invalid settings:\n{e}"));
            return EXIT_USAGE;
        }
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            out.fail(&format!("cannot listen on 127.0.0.1: {e}"));
            return EXIT_FAILED;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            out.fail(&format!("cannot read the listener's address: {e}"));
            return EXIT_FAILED;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let options = crate::Options {
        observer: Some(Arc::new(Channel(tx))),
        ..crate::Options::default()
    };
    let gateway = tokio::spawn(crate::run(
        resolved,
        listener,
        async move {
            let _ = stop_rx.await;
        },
        options,
        move |handle| {
            let _ = handle_tx.send(handle);
        },
    ));
    let handle = match tokio::time::timeout(Duration::from_secs(30), handle_rx).await {
        Ok(Ok(h)) => h,
        _ => {
            let why = match tokio::time::timeout(Duration::from_secs(5), gateway).await {
                Ok(Ok(Err(e))) => format!("{e:#}"),
                _ => "it did not start in time".to_owned(),
            };
            out.fail(&format!("cannot start the gateway: {why}"));
            return EXIT_FAILED;
        }
    };
    // The call's id and start time are fixed before anything is recorded, so a replay of
    // the recording sends the same requests.
    let mut scenario = scenario;
    scenario.call_id.get_or_insert_with(|| hex_id(32));
    scenario.start_epoch.get_or_insert_with(now_epoch);
    let mut sim = Sim::new(scenario, target, addr, handle, rx, out);
    sim.header();
    let played = match sim.scenario.platform {
        Platform::Voicenter => voicenter::play(&mut sim).await,
        Platform::Openscape => openscape::play(&mut sim).await,
        other => Err(format!(
            "simulating {} is not available yet (possible: voicenter, openscape)",
            other.as_str()
        )),
    };
    if let Err(why) = &played {
        sim.finding(why.clone());
    }
    sim.wait_events().await;
    let code = sim.summary();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), gateway).await;
    drop(dir);
    code
}

/// Where the run is printed, and recorded when asked.
pub struct Output {
    print: Box<dyn FnMut(&str) + Send>,
    record: Option<record::Recorder>,
}

impl Output {
    /// Prints to stdout; records to `record` when given.
    pub fn stdout(record: Option<&std::path::Path>) -> Result<Output, String> {
        Ok(Output {
            print: Box::new(|line| println!("{line}")),
            record: record.map(record::Recorder::create).transpose()?,
        })
    }

    fn line(&mut self, line: &str) {
        (self.print)(line);
    }

    fn fail(&mut self, why: &str) {
        eprintln!("ivrgate simulate: {why}");
    }

    fn record(&mut self, entry: Value) {
        if let Some(recorder) = &mut self.record {
            recorder.write(entry);
        }
    }
}

/// A platform's HTTP answer.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One simulated call in progress: the gateway's address, the observations, the output.
pub struct Sim<'o> {
    pub scenario: Scenario,
    target: Target,
    addr: SocketAddr,
    handle: crate::Handle,
    observed: mpsc::UnboundedReceiver<Observed>,
    out: &'o mut Output,
    http: reqwest::Client,
    started: Instant,
    pub keys: Keys,
    /// Decisions asked so far in this call.
    pub decisions: u32,
    fallbacks: u32,
    delivered: Vec<String>,
    dead: Vec<String>,
    findings: Vec<String>,
    /// Why a decision's try was not used, by decision id, until the decision is settled.
    why: std::collections::HashMap<String, String>,
}

impl<'o> Sim<'o> {
    fn new(
        scenario: Scenario,
        target: Target,
        addr: SocketAddr,
        handle: crate::Handle,
        observed: mpsc::UnboundedReceiver<Observed>,
        out: &'o mut Output,
    ) -> Sim<'o> {
        let keys = Keys::new(&scenario.keys);
        Sim {
            scenario,
            target,
            addr,
            handle,
            observed,
            out,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            started: Instant::now(),
            keys,
            decisions: 0,
            fallbacks: 0,
            delivered: Vec::new(),
            dead: Vec::new(),
            findings: Vec::new(),
            why: Default::default(),
        }
    }

    fn header(&mut self) {
        let s = &self.scenario;
        let line = format!(
            "simulating a call on {} from {} to {}; webhooks to {} (decisions to {})",
            s.platform.as_str(),
            s.caller,
            s.called,
            crate::redact::url(&self.target.url),
            crate::redact::url(
                self.target
                    .decision_url
                    .as_deref()
                    .unwrap_or(&self.target.url)
            ),
        );
        self.out.line(&line);
        let scenario = serde_json::to_value(&self.scenario).unwrap_or(Value::Null);
        self.out.record(json!({
            "record": record::MAGIC,
            "version": record::VERSION,
            "scenario": scenario,
        }));
    }

    fn at_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The platform does something: printed as a step.
    pub fn step(&mut self, text: &str) {
        let line = format!("  {}: {text}", self.scenario.platform.as_str());
        self.out.line(&line);
        let at = self.at_ms();
        self.out
            .record(json!({"at_ms": at, "kind": "step", "text": text}));
    }

    /// The caller does something.
    pub fn caller(&mut self, text: &str) {
        self.out.line(&format!("  caller: {text}"));
        let at = self.at_ms();
        self.out
            .record(json!({"at_ms": at, "kind": "caller", "text": text}));
    }

    /// Something the developer should look at; it makes the exit status 1.
    pub fn finding(&mut self, text: String) {
        self.out.line(&format!("  ! {text}"));
        self.findings.push(text);
    }

    /// The next key press, after the scenario's delay.
    pub async fn press(&mut self) -> String {
        if self.scenario.key_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.scenario.key_delay_ms)).await;
        }
        let (key, scripted) = self.keys.press();
        let how = if scripted {
            ""
        } else {
            " (no scripted key left: the first option)"
        };
        self.caller(&format!("presses {key}{how}"));
        key
    }

    /// Whether the call may ask one more decision; says why not when it may not.
    pub fn may_decide(&mut self) -> bool {
        if let Some(after) = self.scenario.hangup_after {
            if self.decisions >= after {
                self.caller(&format!("hangs up after {after} decision(s), as scripted"));
                return false;
            }
        }
        if self.decisions >= self.scenario.max_decisions {
            self.finding(format!(
                "the call did not end within {} decisions (max_decisions): the caller hangs up; does your flow loop?",
                self.scenario.max_decisions
            ));
            return false;
        }
        true
    }

    /// Sends one platform request to the gateway (`path` after the host, e.g.
    /// `/voicenter/sim`), prints and records it with every webhook it caused.
    pub async fn request(
        &mut self,
        label: &str,
        method: http::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let url = format!("http://{}{}", self.addr, path);
        self.out.line(&format!("  -> {label}"));
        let at = self.at_ms();
        self.out.record(json!({
            "at_ms": at, "kind": "platform_request", "label": label, "method": method.as_str(),
            "path": path, "content_type": content_type,
            "body": String::from_utf8_lossy(&body),
        }));
        let mut request = self.http.request(method, &url);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let sent = request.body(body).send().await;
        let reply = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| format!("reading the gateway's reply to {label}: {e}"))?;
                Reply {
                    status,
                    content_type,
                    body,
                }
            }
            Err(e) => return Err(format!("the gateway did not answer {label}: {e}")),
        };
        // The observations of this request are all in: the core sends them before the
        // adapter answers.
        self.drain();
        let at = self.at_ms();
        self.out.record(json!({
            "at_ms": at, "kind": "platform_reply", "status": reply.status,
            "content_type": reply.content_type, "body": reply.text(),
        }));
        // An XML-RPC answer reads better as the struct it carries.
        let shown = match ivrgate_wire::xmlrpc::parse_response(
            &reply.text(),
            &ivrgate_wire::Limits::default(),
        ) {
            Ok(Ok(params)) if reply.content_type.contains("xml") => format!(
                "(XML-RPC) {}",
                params.first().map(|v| v.to_json()).unwrap_or(Value::Null)
            ),
            _ => reply.text(),
        };
        self.out.line(&format!(
            "  <- {} answered {}: {}",
            self.scenario.platform.as_str(),
            reply.status,
            clip(&shown, 400)
        ));
        Ok(reply)
    }

    /// Prints and records what the core reported so far.
    fn drain(&mut self) {
        while let Ok(what) = self.observed.try_recv() {
            self.show(what);
        }
    }

    fn show(&mut self, what: Observed) {
        let at = self.at_ms();
        match what {
            Observed::Sent(sent) => {
                let decision = sent.webhook_type.starts_with("decision.");
                if decision {
                    self.decisions += u32::from(sent.attempt == 1);
                }
                let headers: serde_json::Map<String, Value> = sent
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                self.out.line(&format!(
                    "     {} {} {} {} (attempt {} of {})",
                    if decision { "webhook" } else { "event" },
                    sent.webhook_type,
                    sent.id,
                    sent.url,
                    sent.attempt,
                    sent.of
                ));
                self.out.record(json!({
                    "at_ms": at, "kind": "webhook", "id": sent.id, "type": sent.webhook_type,
                    "url": sent.url, "attempt": sent.attempt, "of": sent.of,
                    "headers": headers, "body": String::from_utf8_lossy(&sent.body),
                }));
            }
            Observed::Answered(answered) => {
                let status = answered
                    .status
                    .map_or("no answer".to_owned(), |s| s.to_string());
                let body = answered
                    .body
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                // Deliveries run concurrently: each answer names its event.
                let mut line = if answered.webhook_type.starts_with("decision.") {
                    format!("       {status} in {} ms", answered.elapsed_ms)
                } else {
                    format!(
                        "       {} {}: {status} in {} ms",
                        answered.webhook_type, answered.id, answered.elapsed_ms
                    )
                };
                if let Some(b) = &body {
                    line.push_str(&format!(": {}", clip(b, 400)));
                }
                match answered.outcome.as_str() {
                    "answer" => {}
                    "delivered" => line.push_str(" (delivered)"),
                    "retry" => line.push_str(&format!(
                        " (not delivered: {}; retried in {} s)",
                        answered.error.as_deref().unwrap_or("-"),
                        answered.retry_in_ms.unwrap_or(0) / 1000
                    )),
                    "dead" | "gone" => line.push_str(&format!(
                        " (not delivered: {}; no attempt left)",
                        answered.error.as_deref().unwrap_or("-")
                    )),
                    reason => line.push_str(&format!(
                        " (not usable, {reason}: {})",
                        answered.error.as_deref().unwrap_or("-")
                    )),
                }
                self.out.line(&line);
                if let (Some(error), true) = (
                    &answered.error,
                    answered.webhook_type.starts_with("decision."),
                ) {
                    self.why.insert(answered.id.clone(), error.clone());
                }
                match answered.outcome.as_str() {
                    "delivered" => self
                        .delivered
                        .push(format!("{} {}", answered.webhook_type, answered.id)),
                    "dead" | "gone" => {
                        let text = format!(
                            "event {} {} was not delivered: {}",
                            answered.webhook_type,
                            answered.id,
                            answered.error.as_deref().unwrap_or("-")
                        );
                        self.dead.push(text.clone());
                        self.finding(text);
                    }
                    _ => {}
                }
                self.out.record(json!({
                    "at_ms": at, "kind": "webhook_answer", "id": answered.id,
                    "type": answered.webhook_type, "attempt": answered.attempt,
                    "status": answered.status, "body": body, "error": answered.error,
                    "outcome": answered.outcome, "retry_in_ms": answered.retry_in_ms,
                }));
            }
            Observed::Decided(decided) => {
                let answer = decided.answer.to_string();
                if decided.source == "fallback" {
                    self.fallbacks += 1;
                    let reason = decided.fallback_reason.clone().unwrap_or_default();
                    // The exact words of the try that failed last (the decision URL's, or
                    // the fallback URL's); a rate limit or shutdown has no try.
                    let why = self
                        .why
                        .remove(&decided.decision_id)
                        .unwrap_or_else(|| reason.replace('_', " "));
                    self.finding(format!(
                        "decision.{} {}: your answer was not used ({reason}: {why}); the fallback plays instead: {}",
                        decided.kind,
                        decided.decision_id,
                        clip(&answer, 300)
                    ));
                } else if decided.source == "fallback_url" {
                    self.out.line(&format!(
                        "       answered by the fallback URL: {}",
                        clip(&answer, 300)
                    ));
                }
                self.out.record(json!({
                    "at_ms": at, "kind": "decided", "decision_id": decided.decision_id,
                    "decision": decided.kind, "source": decided.source,
                    "fallback_reason": decided.fallback_reason, "answer": decided.answer,
                }));
            }
        }
    }

    /// Waits until every event of the call is delivered or dead, printing each attempt.
    async fn wait_events(&mut self) {
        let store = self.handle.core.store.clone();
        let cfg = self.handle.core.runtime.load().config.raw.delivery.clone();
        let attempts = cfg.retry_schedule_s.len() as u64 + 1;
        let worst = Duration::from_millis(
            attempts * cfg.timeout_ms + cfg.retry_schedule_s.iter().sum::<u64>() * 1000 + 5_000,
        );
        let until = Instant::now() + worst;
        loop {
            self.drain();
            let pending = match store.outbox_depth().await {
                Ok(depth) => depth
                    .iter()
                    .filter(|d| d.tenant == TENANT)
                    .map(|d| d.pending)
                    .sum::<u64>(),
                Err(e) => {
                    self.finding(format!("cannot read the outbox: {e}"));
                    return;
                }
            };
            if pending == 0 {
                self.drain();
                return;
            }
            if Instant::now() >= until {
                self.finding(format!(
                    "{pending} event(s) still waiting for delivery after {} s",
                    worst.as_secs()
                ));
                return;
            }
            if let Ok(Some(what)) =
                tokio::time::timeout(Duration::from_millis(200), self.observed.recv()).await
            {
                self.show(what);
            }
        }
    }

    /// The closing lines; the exit status.
    fn summary(&mut self) -> u8 {
        let answered = self.decisions.saturating_sub(self.fallbacks);
        let line = format!(
            "summary: {} decision(s), {answered} answered by your endpoint, {} fallback(s); {} event(s) delivered, {} not delivered",
            self.decisions,
            self.fallbacks,
            self.delivered.len(),
            self.dead.len()
        );
        self.out.line(&line);
        let at = self.at_ms();
        self.out.record(json!({
            "at_ms": at, "kind": "summary", "decisions": self.decisions,
            "fallbacks": self.fallbacks, "delivered": self.delivered, "not_delivered": self.dead,
            "findings": self.findings,
        }));
        if self.findings.is_empty() {
            self.out.line("result: the call completed");
            EXIT_OK
        } else {
            self.out
                .line(&format!("result: {} finding(s):", self.findings.len()));
            for f in self.findings.clone() {
                self.out.line(&format!("  - {f}"));
            }
            EXIT_FINDINGS
        }
    }
}

/// At most `max` characters of `text` on one line.
fn clip(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max).collect();
    cut.push_str("...");
    cut
}

/// Now, in Unix seconds.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh id of `len` lowercase hex digits, for a platform's call id.
pub fn hex_id(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}
