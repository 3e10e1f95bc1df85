//! ivrgate: lets legacy IVR and contact-center platforms be driven by, and report to, signed
//! JSON webhooks. This crate is the core and the daemon: configuration, the durable store,
//! decisions, event delivery, timers and the HTTP server. Each legacy platform lives in its
//! own adapter crate under `adapters/`; [`adapters`] is the one place that knows them all.

#![forbid(unsafe_code)]

pub mod adapters;
pub mod admin;
pub mod api;
pub mod auth;
pub mod breaker;
pub mod budget;
pub mod buffer;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connectors;
pub mod core;
pub mod decision_client;
pub mod decisions;
pub mod delivery;
pub mod entities;
pub mod envelope;
pub mod failure;
pub mod ids;
pub mod liveness;
pub mod metrics;
pub mod observe;
pub mod redact;
pub mod retry;
pub mod server;
pub mod signing;
pub mod simulate;
pub mod store;
pub mod systemd;
pub mod timers;
pub mod tls;
pub mod web;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError, ResolvedConfig};

/// Options a test or benchmark may change.
#[derive(Clone)]
pub struct Options {
    pub clock: SharedClock,
    /// Adapters served beside the built-in ones, exactly as a built-in one is (routes,
    /// settings section, decision points, timers, connectors, command API). Only tests set
    /// it; the daemon never does. A configuration given to [`run`] must have been validated
    /// with them too (`Config::validate` with `adapters::all()` and these).
    pub adapters: Vec<&'static dyn ivrgate_adapter::Adapter>,
    /// Watches the webhooks the core sends ([`observe`]); `ivrgate simulate` sets one, the
    /// daemon never does.
    pub observer: Option<Arc<dyn observe::Observer>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
            adapters: Vec::new(),
            observer: None,
        }
    }
}

/// A running gateway's handles: reload configuration, reach the core.
#[derive(Clone)]
pub struct Handle {
    pub core: Arc<core::Core>,
}

impl Handle {
    /// Checks a configuration read again (SIGHUP) against the running gateway and swaps it
    /// in: tenants, deadlines, limits. Refused as a whole, with every reason, when it changes
    /// a setting only a restart applies ([`Config::reload_refusals`]) or is invalid for the
    /// listener actually bound (the loopback rule); the running configuration then stays.
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        let running = self.core.runtime.load_full();
        let bound = running.config.raw.listen;
        let mut problems = config.reload_refusals(&running.config.raw);
        match config.validate_on(&self.core.adapters(), bound) {
            Ok(resolved) if problems.is_empty() => {
                self.core
                    .runtime
                    .store(Arc::new(core::Runtime::new(resolved, running.membership)));
                // Connectors follow: new ones start, changed ones restart, removed ones stop.
                self.core.connectors.reconcile(&self.core);
                return Ok(());
            }
            Ok(_) => {}
            Err(ConfigError::Invalid(lines)) => problems.push(lines),
            Err(other) => problems.push(other.to_string()),
        }
        Err(ConfigError::Invalid(problems.join("\n")))
    }
}

/// Runs the gateway on `listener` until `shutdown` resolves, then drains: stops accepting,
/// lets in-flight requests finish, stops workers, and flushes the store.
pub async fn run(
    config: ResolvedConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: Options,
    on_start: impl FnOnce(Handle),
) -> anyhow::Result<()> {
    // From here on the configuration's `listen` is what is bound, so the rules that depend
    // on the listener (now and on every reload) see the real address.
    let mut config = config;
    config.raw.listen = listener.local_addr()?;
    let store: store::Store = match &config.postgres {
        // Opening migrates the schema to this binary's version (or refuses the start) first,
        // so the operator learns about an incompatible database before anything else.
        Some(pg) => {
            let store = store::postgres::PgStore::start(pg, ids::instance_id())
                .await
                .map_err(anyhow::Error::msg)?;
            tracing::info!(hosts = %pg.hosts(), owner = store.owner_id(), "PostgreSQL store ready");
            store
        }
        None => store::sqlite::SqliteStore::open(
            &config.raw.state_dir,
            config.raw.storage.group_commit_max,
        )?,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let mut every_adapter = adapters::all().to_vec();
    every_adapter.extend(options.adapters.iter().copied());
    let mut core = core::Core::new(
        config,
        store.clone(),
        options.clock,
        metrics,
        adapters::decision_points(&every_adapter),
    )?;
    core.extra_adapters = options.adapters;
    core.observer = options.observer;
    let core = Arc::new(core);
    let app = Arc::new(web::App {
        core: core.clone(),
        shutting_down: AtomicBool::new(false),
        bodies: budget::BodyBudget::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let breaker_news = core
        .breaker_news
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let workers = [
        tokio::spawn(delivery::run(core.clone(), stop_rx.clone())),
        tokio::spawn(timers::run(core.clone(), stop_rx.clone())),
        tokio::spawn(timers::maintenance(core.clone(), stop_rx.clone())),
        tokio::spawn(timers::recover_owners(core.clone(), stop_rx.clone())),
        tokio::spawn(cluster::watch(core.clone(), stop_rx.clone())),
        tokio::spawn(cluster::tell(core.clone(), breaker_news, stop_rx.clone())),
    ];
    core.connectors.reconcile(&core);
    on_start(Handle { core: core.clone() });
    // Connectors stop (saying goodbye to their platform) and release their leases before
    // the HTTP drain begins, while the listener still answers their platform's callbacks.
    let supervisor_core = core.clone();
    let shutdown = async move {
        shutdown.await;
        let grace_ms = supervisor_core
            .runtime
            .load()
            .config
            .raw
            .server
            .shutdown_grace_ms;
        supervisor_core
            .connectors
            .shutdown(std::time::Duration::from_millis(grace_ms))
            .await;
    };
    let served = server::serve(app, listener, shutdown).await;
    let _ = stop_tx.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    // What the next start (or another instance on the same store) still has to send.
    match store.outbox_depth().await {
        Ok(depth) => {
            let waiting: u64 = depth.iter().map(|d| d.pending).sum();
            let dead: u64 = depth.iter().map(|d| d.dead).sum();
            let by_tenant: Vec<String> = depth
                .iter()
                .filter(|d| d.pending > 0)
                .map(|d| format!("{}={}", d.tenant, d.pending))
                .collect();
            tracing::info!(
                events_waiting = waiting,
                dead_letters = dead,
                waiting_by_tenant = %by_tenant.join(","),
                "stopped; {waiting} event(s) still waiting for delivery"
            );
        }
        Err(e) => tracing::warn!(error = %e, "stopped; cannot count the events still waiting"),
    }
    store.shutdown().await;
    served.map_err(Into::into)
}
