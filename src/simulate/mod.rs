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

mod call;
mod ctips;
mod external;
mod openscape;
mod ptk;
mod record;
mod scenario;
mod voicenter;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::observe::{Observed, Observer};
pub use call::{Output, Reply, Sim};
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
  ivrgate simulate --gateway URL --tenant ID --platform NAME [--scenario FILE] [--keys 1,2]
                   [--path-token T] [--command-token T] [--admin-token T] [--ca-file PEM]
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
  --scenario FILE     a scenario (TOML, or JSON named *.json): caller, called, keys, ...;
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

  --gateway URL       play the call against a running gateway (`ivrgate serve`) instead,
                      for its tenant --tenant ID: its webhooks go where that tenant's
                      configuration says; the simulator prints the platform's side and the
                      tenant's queue from the admin API (GET /admin/queues) at the end.
                      Credentials in the URL (https://user:pass@...) are the platform's Basic
                      auth; --path-token the tenant's path token; --command-token the command
                      API's (OpenScape's assignment); --admin-token (or IVRGATE_ADMIN_TOKEN)
                      the admin API's; --ca-file trusts the gateway's private CA. Tokens take
                      env:NAME or file:PATH too. Not for ctips.

Exit status: 0 the call completed, every decision answered by your endpoint and every event
delivered; 1 the call ran but a fallback played, an event was not delivered, the flow did not
end within max_decisions or a replay differs (each said in the summary); 2 the simulation
could not run; 64 bad usage or scenario. Documentation: /usr/share/doc/ivrgate/simulate.md
(docs/simulate.md in the source); example scenarios beside it in examples/simulate/.";

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
    gateway: Option<String>,
    tenant: Option<String>,
    path_token: Option<String>,
    command_token: Option<String>,
    admin_token: Option<String>,
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
            "--gateway" => out.gateway = Some(value()?),
            "--tenant" => out.tenant = Some(value()?),
            "--path-token" => out.path_token = Some(value()?),
            "--command-token" => out.command_token = Some(value()?),
            "--admin-token" => out.admin_token = Some(value()?),
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
            Ok((scenario, mode)) => match Output::stdout(args.record.as_deref()) {
                Ok(mut out) => match mode {
                    Mode::InProcess(target) => {
                        runtime.block_on(simulate(scenario, target, &mut out))
                    }
                    Mode::Running(running) => {
                        runtime.block_on(external::simulate(scenario, running, &mut out))
                    }
                },
                Err(why) => {
                    eprintln!("ivrgate simulate: {why}");
                    EXIT_USAGE
                }
            },
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

/// Which gateway the call goes through.
enum Mode {
    /// One run in this process, sending to the developer's endpoint.
    InProcess(Target),
    /// A running service (`--gateway`).
    Running(external::Running),
}

/// A secret given on the command line: inline, `env:NAME` or `file:PATH`.
fn secret(name: &str, value: &Option<String>) -> Result<Option<String>, String> {
    value
        .as_ref()
        .map(|v| {
            crate::config::Secret::from(v.clone())
                .resolve()
                .map_err(|e| format!("{name}: {e}"))
        })
        .transpose()
}

/// The scenario (file, then flags) and the gateway.
fn settle(args: &Args) -> Result<(Scenario, Mode), String> {
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
    if let Some(gateway) = &args.gateway {
        let tenant = args.tenant.clone().ok_or_else(|| {
            format!("--gateway needs --tenant: which of its tenants the call is for\n{USAGE}")
        })?;
        if args.url.is_some() || args.secret.is_some() || args.decision_url.is_some() {
            return Err("--gateway sends the webhooks where the running gateway's tenant says: --url, --decision-url and --secret do not apply".into());
        }
        return Ok((
            scenario,
            Mode::Running(external::Running {
                url: gateway.clone(),
                tenant,
                path_token: secret("--path-token", &args.path_token)?,
                command_token: secret("--command-token", &args.command_token)?,
                admin_token: secret("--admin-token", &args.admin_token)?
                    .or_else(|| std::env::var("IVRGATE_ADMIN_TOKEN").ok()),
                ca_file: args.ca_file.clone(),
            }),
        ));
    }
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
        Mode::InProcess(Target {
            url,
            decision_url: args.decision_url.clone(),
            secret,
            ca_file: args.ca_file.clone(),
        }),
    ))
}

/// The in-memory configuration: one tenant with the developer's endpoint and secret, an
/// embedded store in `state_dir`, a short retry schedule so an event is delivered or dead
/// within seconds.
fn config(
    scenario: &Scenario,
    target: &Target,
    state_dir: &std::path::Path,
    addr: SocketAddr,
    ctips: Option<toml::Table>,
) -> toml::Table {
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
            // One segment whose state the developer's endpoint decides (segment_state);
            // configured so that, by default, a callback is offered.
            let mut segment = toml::Table::new();
            segment.insert("tenant".into(), scenario.ptk_tenant.clone().into());
            segment.insert("name".into(), scenario.segment.clone().into());
            segment.insert("decision".into(), true.into());
            segment.insert("ewt_s".into(), 120.into());
            segment.insert("offer_threshold_s".into(), 60.into());
            let mut ptk = toml::Table::new();
            ptk.insert(
                "tenants".into(),
                toml::Value::Array(vec![scenario.ptk_tenant.clone().into()]),
            );
            ptk.insert(
                "segments".into(),
                toml::Value::Array(vec![toml::Value::Table(segment)]),
            );
            tenant.insert("ptk".into(), ptk.into());
        }
        Platform::Openscape | Platform::Voicenter | Platform::Ctips => {}
    }
    if let Some(ctips) = ctips {
        tenant.insert("ctips".into(), ctips.into());
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
    if scenario.platform == Platform::Ctips {
        // The CTIPS session's callbacks come to this listener; the session lease is taken
        // and the connector restarted quickly.
        let mut server = toml::Table::new();
        server.insert("advertise_url".into(), format!("http://{addr}").into());
        root.insert("server".into(), server.into());
        let mut connectors = toml::Table::new();
        connectors.insert("lease_ms".into(), 1_500.into());
        connectors.insert("backoff_min_ms".into(), 100.into());
        connectors.insert("backoff_max_ms".into(), 1_000.into());
        root.insert("connectors".into(), connectors.into());
    }
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
    // CTIPS is the one platform that is a server: its simulator runs before the gateway,
    // whose connector opens a session on it.
    let ctips_server = match scenario.platform {
        Platform::Ctips => match ctips::start().await {
            Ok(server) => Some(server),
            Err(why) => {
                out.fail(&why);
                return EXIT_FAILED;
            }
        },
        _ => None,
    };
    let ctips_settings = ctips_server.as_ref().map(ctips::settings);
    let text = match toml::to_string(&config(&scenario, &target, &dir.0, addr, ctips_settings)) {
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
    let gw = call::Gateway {
        base: format!("http://{addr}"),
        tenant: TENANT.into(),
        path_token: None,
        basic: None,
        command_token: None,
        admin_token: None,
        handle: Some(handle),
        target: Some(target),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let mut sim = Sim::new(scenario, gw, http, rx, out);
    sim.header();
    let played = match sim.scenario.platform {
        Platform::Voicenter => voicenter::play(&mut sim).await,
        Platform::Openscape => openscape::play(&mut sim).await,
        Platform::Ptk => ptk::play(&mut sim).await,
        Platform::Ctips => match &ctips_server {
            Some(server) => ctips::play(&mut sim, server).await,
            None => Err("the CTIPS simulator is not running".into()),
        },
    };
    if let Err(why) = &played {
        sim.finding(why.clone());
    }
    sim.wait_events().await;
    let code = sim.summary();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), gateway).await;
    if let Some(server) = ctips_server {
        server.shutdown().await;
    }
    drop(dir);
    code
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
