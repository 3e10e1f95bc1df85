//! The `ivrgate` command: `serve`, `check-config`, and dead-letter tools.

#![forbid(unsafe_code)]

/// mimalloc: async request handling allocates on one worker thread and frees on another,
/// which makes glibc's malloc contend on its arena locks (measured: ~14% of CPU in lock
/// wait/wake on the decision path; docs/performance.md). Its v2 allocator (Cargo feature)
/// returns freed pages after 10 ms rather than 1 s, so a large request's dropped copies do not
/// add to the peak.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ivrgate::config::{Config, LogFormat, ResolvedConfig};
use ivrgate::store::ReplayFilter;
use ivrgate::systemd;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Exit status for bad usage or bad configuration (EX_USAGE).
const EX_CONFIG: u8 = 64;

const USAGE: &str = "usage:
  ivrgate serve --config PATH
  ivrgate check-config PATH [--online]
  ivrgate dead-letters --config PATH [--tenant ID]
  ivrgate replay --config PATH [--tenant ID] [--event ID] [--include-delivered]
  ivrgate reload --pid PID
  ivrgate move-store --config PATH
  ivrgate simulate --platform NAME --url URL --secret SECRET [--scenario FILE] [...]
  ivrgate --help | --version";

/// `--help`: the usage, what each command does, and where to read more.
const HELP: &str = "ivrgate: legacy IVR and contact-center platforms to signed JSON webhooks

commands:
  serve --config PATH      run the gateway (systemd: Type=notify, SIGHUP reloads, SIGTERM drains)
  check-config PATH        validate a configuration file (exit 64 when invalid);
                           --online also asks the PostgreSQL store
  dead-letters --config PATH [--tenant ID]
                           list dead-lettered events
  replay --config PATH [--tenant ID] [--event ID] [--include-delivered]
                           put dead-lettered (or delivered) events back in the delivery queue
  move-store --config PATH move state_dir's embedded store into the configured PostgreSQL
                           (every instance stopped; the embedded store is left as it was)
  reload --pid PID         ask the running `serve` process PID to reload its configuration
                           and wait for its verdict: exit 0 when applied, 1 (with every
                           reason) when refused; the unit's ExecReload
  simulate --platform NAME --url URL --secret SECRET
                           play a whole call against your webhook without a PBX: the
                           same signed webhooks a real call sends, each step printed
                           (`ivrgate simulate --help`)
  --help, -h               this text
  --version, -V            the version

Every setting: /usr/share/doc/ivrgate/example.toml (config/example.toml in the source).
Operations (package, systemd, reload, shutdown): /usr/share/doc/ivrgate/operations.md.
Exit status: 0 success, 1 failure, 64 bad usage or invalid configuration.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // `--help` anywhere (`ivrgate serve --help`) asks for help, not for that command.
    if command == "simulate" && args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "{}\n\n{}",
            ivrgate::simulate::HELP,
            ivrgate::simulate::USAGE
        );
        return ExitCode::SUCCESS;
    }
    if command == "help" || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}\n\n{USAGE}");
        return ExitCode::SUCCESS;
    }
    match command {
        "simulate" => ivrgate::simulate::main(&args[1..]),
        "check-config" => {
            let Some(path) = args
                .get(1)
                .filter(|a| !a.starts_with("--"))
                .cloned()
                .or_else(|| flag("--config"))
            else {
                eprintln!("{USAGE}");
                return ExitCode::from(EX_CONFIG);
            };
            match load(&PathBuf::from(&path)) {
                Ok(config) => {
                    for warning in config.warnings() {
                        eprintln!("{path}: warning: {warning}");
                    }
                    println!(
                        "{path}: ok ({} tenant(s), listening on {} ({}), state in {})",
                        config.tenants.len(),
                        config.raw.listen,
                        if config.tls.is_some() {
                            "TLS"
                        } else {
                            "plain HTTP"
                        },
                        config.raw.state_dir.display()
                    );
                    // Plain check-config never connects: a reload must not fail because the
                    // database is down. `--online` asks the database.
                    if args.iter().any(|a| a == "--online") {
                        if let Some(pg) = &config.postgres {
                            return check_online(&path, pg);
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        "serve" | "dead-letters" | "replay" | "move-store" => {
            let Some(path) = flag("--config") else {
                eprintln!("{USAGE}");
                return ExitCode::from(EX_CONFIG);
            };
            let path = PathBuf::from(path);
            let config = match load(&path) {
                Ok(c) => c,
                Err(message) => {
                    eprintln!("{message}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let log_level = init_logging(&config);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = match command {
                "serve" => runtime.block_on(serve(config, path, log_level)),
                "dead-letters" => runtime.block_on(dead_letters(config, flag("--tenant"))),
                "move-store" => runtime.block_on(move_store(config)),
                _ => runtime.block_on(replay(
                    config,
                    ReplayFilter {
                        tenant: flag("--tenant"),
                        event_id: flag("--event"),
                        include_delivered: args.iter().any(|a| a == "--include-delivered"),
                    },
                )),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "ivrgate failed");
                    eprintln!("ivrgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        "reload" => {
            let Some(pid) = flag("--pid").and_then(|p| p.parse::<u32>().ok()) else {
                eprintln!("{USAGE}");
                return ExitCode::from(EX_CONFIG);
            };
            match systemd::request_reload(pid, Duration::from_secs(60)) {
                Ok(warnings) => {
                    for warning in warnings {
                        eprintln!("warning: {warning}");
                    }
                    println!("configuration reloaded");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("ivrgate reload: {why}");
                    ExitCode::FAILURE
                }
            }
        }
        "--version" | "-V" | "version" => {
            println!("ivrgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `check-config --online` for PostgreSQL: reachable, and migrated compatibly (or empty).
fn check_online(path: &str, pg: &ivrgate::store::postgres::PgSettings) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ivrgate::store::postgres::check_online(pg)) {
        Ok(state) => {
            println!("{path}: {state}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{path}: storage: {why}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Result<ResolvedConfig, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    config.validate(ivrgate::adapters::all()).map_err(|e| {
        // Each problem points at its line, as a parse error does (values masked).
        let located = match std::fs::read_to_string(path) {
            Ok(text) => ivrgate::config::locate_problems(&text, &e.to_string()),
            Err(_) => e.to_string(),
        };
        format!("{}: invalid configuration:\n{located}", path.display())
    })
}

/// The log filter of the running process, so a reload can apply `logging.level`.
struct LogLevel {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    /// `RUST_LOG` was set at start: it wins over `logging.level`, also on reload.
    from_env: bool,
}

impl LogLevel {
    /// Applies a reloaded `logging.level` (already checked by validation).
    fn apply(&self, level: &str) {
        if self.from_env {
            tracing::warn!(level, "RUST_LOG is set and overrides logging.level");
            return;
        }
        match (&self.handle, EnvFilter::try_new(level)) {
            (Some(handle), Ok(filter)) => {
                if let Err(e) = handle.reload(filter) {
                    tracing::error!(error = %e, "cannot apply logging.level");
                }
            }
            (_, Err(e)) => tracing::error!(error = %e, "cannot apply logging.level"),
            (None, _) => {}
        }
    }
}

fn init_logging(config: &ResolvedConfig) -> LogLevel {
    let logging = &config.raw.logging;
    let env = EnvFilter::try_from_default_env().ok();
    let from_env = env.is_some();
    let filter = env
        .or_else(|| EnvFilter::try_new(&logging.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match logging.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok();
    LogLevel {
        handle: installed.then_some(handle),
        from_env,
    }
}

async fn serve(config: ResolvedConfig, path: PathBuf, log_level: LogLevel) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = config.raw.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process listens there: `ss -ltnp` names it; change `listen` or stop it)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (a port below 1024 needs CAP_NET_BIND_SERVICE)"
            }
            _ => "",
        };
        tracing::error!(%listen, error = %e, "cannot listen");
        anyhow::anyhow!("cannot listen on {listen}: {e}{hint}")
    })?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        let _ = stop_rx.wait_for(|v| *v).await;
    };
    for tenant in &config.tenants {
        let mut inbound = Vec::new();
        if tenant.path_token.is_some() {
            inbound.push("path_token");
        }
        if tenant.basic_auth.is_some() {
            inbound.push("basic_auth");
        }
        if !tenant.allow_ips.is_empty() {
            inbound.push("allow_ips");
        }
        let host = reqwest::Url::parse(&tenant.webhook_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        tracing::info!(
            tenant = %tenant.id,
            webhook_host = %host,
            inbound = %if inbound.is_empty() { "none (loopback listener)".to_owned() } else { inbound.join("+") },
            "tenant configured"
        );
    }
    for warning in config.warnings() {
        tracing::warn!(%warning, "configuration warning");
    }
    tracing::info!(listen = %config.raw.listen, tls = config.tls.is_some(), state_dir = %config.raw.state_dir.display(), tenants = config.tenants.len(), "ivrgate starting");
    let run = ivrgate::run(
        config,
        listener,
        shutdown,
        ivrgate::Options::default(),
        move |handle| {
            let reload = reloader(handle.clone(), path, log_level);
            // The listener is bound and the store open: ready.
            let status = systemd::status_line(&systemd::ready_status(&handle.core));
            systemd::notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ]);
            if let Some(usec) = systemd::watchdog_usec() {
                systemd::spawn_watchdog(handle.core.clone(), usec, stop_tx.subscribe());
            }
            if let Err(e) = systemd::spawn_control(reload.clone()) {
                tracing::warn!(error = %e, "no control socket: `ivrgate reload` cannot reach this process (SIGHUP still reloads)");
            }
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        _ = tokio::signal::ctrl_c() => break,
                        _ = hup.recv() => {
                            let reload = reload.clone();
                            let _ = tokio::task::spawn_blocking(move || reload()).await;
                        }
                    }
                }
                tracing::info!("shutting down: finishing in-flight requests");
                systemd::notify(&[
                    sd_notify::NotifyState::Stopping,
                    sd_notify::NotifyState::Status(
                        "stopping: finishing in-flight requests and deliveries",
                    ),
                ]);
                let _ = stop_tx.send(true);
            });
        },
    );
    run.await
}

/// The running daemon's reload (SIGHUP and `ivrgate reload`): reads the file again and applies
/// it, or refuses it as a whole, telling systemd `RELOADING=1` (with `MONOTONIC_USEC`) before
/// and `READY=1` after either way. One reload at a time.
fn reloader(handle: ivrgate::Handle, path: PathBuf, log_level: LogLevel) -> systemd::Reloader {
    let one_at_a_time = std::sync::Mutex::new(());
    std::sync::Arc::new(move || {
        let _turn = one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        let status = systemd::status_line(&format!("reloading {}", path.display()));
        let mut reloading = vec![
            sd_notify::NotifyState::Reloading,
            sd_notify::NotifyState::Status(&status),
        ];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        systemd::notify(&reloading);
        // Every setting is either applied or refuses the reload as a whole.
        let verdict = match Config::load(&path).and_then(|new| handle.reload(new)) {
            Ok(()) => {
                let running = handle.core.runtime.load();
                log_level.apply(&running.config.raw.logging.level);
                tracing::info!(
                    tenants = running.config.tenants.len(),
                    "configuration reloaded"
                );
                let warnings = running.config.warnings();
                for warning in &warnings {
                    tracing::warn!(%warning, "configuration warning");
                }
                Ok(warnings)
            }
            Err(e) => {
                // One line per problem in the file, one log line for the refusal.
                let reasons = e.to_string();
                tracing::error!(error = %reasons.replace('\n', "; "), "reload refused; keeping the running configuration");
                Err(reasons)
            }
        };
        let status = systemd::status_line(&match &verdict {
            Ok(_) => systemd::ready_status(&handle.core),
            Err(reasons) => format!("reload refused, running configuration kept: {reasons}"),
        });
        systemd::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        verdict
    })
}

/// The store named by the configuration, for a one-off command: the embedded store, or
/// PostgreSQL (migrated like `serve` does, registered as a short-lived instance).
async fn open_store(config: &ResolvedConfig) -> anyhow::Result<ivrgate::store::Store> {
    Ok(match &config.postgres {
        Some(pg) => ivrgate::store::postgres::PgStore::start(pg, ivrgate::ids::instance_id())
            .await
            .map_err(anyhow::Error::msg)?,
        None => ivrgate::store::sqlite::SqliteStore::open(&config.raw.state_dir, 1)?,
    })
}

/// Moves `state_dir`'s embedded store into the configured PostgreSQL database.
async fn move_store(config: ResolvedConfig) -> anyhow::Result<()> {
    let Some(pg) = &config.postgres else {
        anyhow::bail!(
            "move-store moves state_dir's embedded store into PostgreSQL: the configuration \
             must say storage.backend = \"postgres\" with its storage.url"
        );
    };
    let moved = ivrgate::store::moving::move_embedded_store(&config.raw.state_dir, pg)
        .await
        .map_err(anyhow::Error::msg)?;
    println!(
        "moved {} from {} to PostgreSQL at {}; the embedded store was left as it was",
        moved,
        config.raw.state_dir.join("ivrgate.db").display(),
        pg.hosts()
    );
    Ok(())
}

async fn dead_letters(config: ResolvedConfig, tenant: Option<String>) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let listed = store.dead_letters(tenant, 10_000).await;
    store.shutdown().await;
    let listed = listed?;
    if listed.is_empty() {
        println!("none");
    }
    for d in listed {
        println!(
            "{}\t{}\t{}\tattempts={}\t{}",
            d.event_id,
            d.tenant,
            d.event_type,
            d.attempts,
            d.last_error.unwrap_or_default()
        );
    }
    Ok(())
}

async fn replay(config: ResolvedConfig, filter: ReplayFilter) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let now = ivrgate::clock::to_ms(std::time::SystemTime::now());
    let replayed = store.replay(filter.clone(), now).await;
    let why = match replayed {
        Ok(0) => Some(ivrgate::admin::why_nothing_replayed(&store, &filter).await),
        _ => None,
    };
    store.shutdown().await;
    match why {
        Some(why) => println!("0 event(s) put back in the delivery queue: {why}"),
        None => println!("{} event(s) put back in the delivery queue", replayed?),
    }
    Ok(())
}
