//! The connector supervisor: runs the long-lived tasks adapters own per tenant (see
//! [`ivrgate_adapter::connector`]) on the one instance that holds each one's lease.
//!
//! On every configuration load (start and each accepted SIGHUP) [`Supervisor::reconcile`]
//! asks every adapter for its connectors per tenant and keeps one task per
//! (tenant, adapter, name):
//! - while the lease is not held here, the task tries to acquire it every `lease_ms / 3`
//!   (jittered), and at once when its holder's process is dead (the store tests that);
//! - while held, it runs the connector and renews the lease every `lease_ms / 3`; a refused
//!   renewal, or a lease that lapses because renewals failed, stops the connector with
//!   [`StopReason::LeaseLost`] at once (the epoch of the new holder fences it anyway);
//! - a connector that fails (or returns unasked) is logged with its reason, counted and
//!   started again after an exponential backoff with jitter, while the lease stays held;
//! - a changed fingerprint (or `advertise_url`) stops it with [`StopReason::Reconfigured`]
//!   and starts it again with the new spec; a removed one is stopped and its lease released;
//! - on shutdown, [`Supervisor::shutdown`] stops every connector with
//!   [`StopReason::Shutdown`], waits for them (bounded by the grace) and releases the leases,
//!   before the HTTP drain begins, so another instance takes over at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ivrgate_adapter::{
    Adapter, BoxFuture, ConnectorCtx, ConnectorExit, ConnectorHealth, ConnectorSpec, Gateway,
    PlatformClient, StopReason,
};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::Core;
use crate::metrics::ConnectorLabels;
use crate::store::{LeaseAcquire, LeaseKey};

mod client;

pub use client::{ApiClient, PlatformHttp, MAX_RESPONSE_BYTES};

/// One connector as the supervisor tracks it, shared with its task, the admin view and
/// [`Gateway::held_epoch`].
pub struct Entry {
    pub key: LeaseKey,
    /// The spec wanted now, with `advertise_url` (a change of either restarts it); `None`
    /// once removed.
    wanted: watch::Sender<Option<Wanted>>,
    /// The epoch while this instance holds the lease and runs the connector; 0 otherwise.
    epoch: AtomicU64,
    pub restarts: AtomicU64,
    health: Mutex<ConnectorHealth>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone)]
struct Wanted {
    adapter: &'static dyn Adapter,
    spec: ConnectorSpec,
    advertise_url: Option<String>,
}

impl PartialEq for Wanted {
    fn eq(&self, other: &Self) -> bool {
        self.adapter.name() == other.adapter.name()
            && self.spec == other.spec
            && self.advertise_url == other.advertise_url
    }
}

impl Entry {
    /// The epoch while held and running here.
    pub fn held_epoch(&self) -> Option<u64> {
        match self.epoch.load(Ordering::SeqCst) {
            0 => None,
            e => Some(e),
        }
    }

    pub fn health(&self) -> ConnectorHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_health(&self, health: ConnectorHealth) {
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = health;
    }

    fn set_detail(&self, detail: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.connected = false;
        h.detail = detail.to_owned();
    }
}

/// The connectors of this instance.
#[derive(Default)]
pub struct Supervisor {
    entries: Mutex<BTreeMap<LeaseKey, Arc<Entry>>>,
    /// Set by [`Supervisor::shutdown`]: tasks stop their connector with `Shutdown`.
    shutdown: watch::Sender<bool>,
    stopping: AtomicBool,
    /// Woken when this instance freed a dead owner's leases: waiting connectors try at once.
    wake: tokio::sync::Notify,
    /// Label sets in `/metrics` at the last refresh.
    reported: Mutex<std::collections::BTreeSet<ConnectorLabels>>,
}

impl Supervisor {
    /// Every connector tracked, in key order.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<LeaseKey, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets every connector waiting for its lease try again now (a dead owner's claims were
    /// just freed).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// The epoch of a lease held and run here (no store access).
    pub fn held_epoch(&self, tenant: &str, adapter: &str, name: &str) -> Option<u64> {
        let key = LeaseKey {
            tenant: tenant.to_owned(),
            adapter: adapter.to_owned(),
            name: name.to_owned(),
        };
        self.lock().get(&key).and_then(|e| e.held_epoch())
    }

    /// Matches the running connectors to the configuration running now: starts new ones,
    /// hands changed specs to theirs (which restart), and stops removed ones.
    pub fn reconcile(&self, core: &Arc<Core>) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let runtime = core.runtime.load_full();
        let advertise_url = runtime
            .config
            .raw
            .server
            .advertise_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned());
        let mut wanted: BTreeMap<LeaseKey, Wanted> = BTreeMap::new();
        for tenant in &runtime.config.tenants {
            for adapter in core.adapters() {
                let settings = match tenant.settings.get(adapter.name()) {
                    Some(s) => s.clone(),
                    None => Arc::new(()) as ivrgate_adapter::ParsedSettings,
                };
                for spec in adapter.connectors(&tenant.id, &settings) {
                    let key = LeaseKey {
                        tenant: tenant.id.clone(),
                        adapter: adapter.name().to_owned(),
                        name: spec.name.clone(),
                    };
                    wanted.insert(
                        key,
                        Wanted {
                            adapter,
                            spec,
                            advertise_url: advertise_url.clone(),
                        },
                    );
                }
            }
        }
        let mut entries = self.lock();
        for (key, entry) in entries.iter() {
            if !wanted.contains_key(key) {
                entry.wanted.send_if_modified(|w| w.take().is_some());
            }
        }
        entries.retain(|key, _| wanted.contains_key(key));
        for (key, want) in wanted {
            match entries.get(&key) {
                Some(entry) => {
                    entry.wanted.send_if_modified(|w| {
                        if w.as_ref() == Some(&want) {
                            false
                        } else {
                            *w = Some(want.clone());
                            true
                        }
                    });
                }
                None => {
                    let entry = Arc::new(Entry {
                        key: key.clone(),
                        wanted: watch::Sender::new(Some(want)),
                        epoch: AtomicU64::new(0),
                        restarts: AtomicU64::new(0),
                        health: Mutex::new(ConnectorHealth {
                            detail: "starting".into(),
                            ..ConnectorHealth::default()
                        }),
                        task: Mutex::new(None),
                    });
                    let handle = tokio::spawn(supervise(
                        Arc::downgrade(core),
                        entry.clone(),
                        self.shutdown.subscribe(),
                    ));
                    *entry.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                    entries.insert(key, entry);
                }
            }
        }
    }

    /// Brings the connector gauges up to date (called before `/metrics` renders); a removed
    /// connector's series go.
    pub fn refresh_metrics(&self, metrics: &crate::metrics::Metrics, now_ms: i64) {
        let entries = self.entries();
        let mut seen = std::collections::BTreeSet::new();
        for entry in &entries {
            let l = labels(&entry.key);
            let health = entry.health();
            let epoch = entry.held_epoch();
            metrics
                .connector_up
                .get_or_create(&l)
                .set(i64::from(epoch.is_some() && health.connected));
            metrics
                .connector_held
                .get_or_create(&l)
                .set(i64::from(epoch.is_some()));
            metrics
                .connector_epoch
                .get_or_create(&l)
                .set(epoch.unwrap_or(0) as i64);
            metrics
                .connector_sessions_opened
                .get_or_create(&l)
                .set(health.sessions_opened as i64);
            let _ = metrics.connector_restarts.get_or_create(&l);
            match health.last_heartbeat_ms {
                Some(at) if epoch.is_some() => {
                    metrics
                        .connector_heartbeat_age
                        .get_or_create(&l)
                        .set((now_ms - at).max(0) as f64 / 1000.0);
                }
                _ => {
                    metrics.connector_heartbeat_age.remove(&l);
                }
            }
            seen.insert(l);
        }
        let mut gone = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        for l in gone.iter().filter(|l| !seen.contains(*l)) {
            metrics.connector_up.remove(l);
            metrics.connector_held.remove(l);
            metrics.connector_epoch.remove(l);
            metrics.connector_sessions_opened.remove(l);
            metrics.connector_restarts.remove(l);
            metrics.connector_heartbeat_age.remove(l);
        }
        *gone = seen;
    }

    /// Stops every connector with [`StopReason::Shutdown`], waits for them up to `grace`
    /// and releases their leases. Connectors are gone when this returns.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = self
            .lock()
            .values()
            .filter_map(|e| e.task.lock().unwrap_or_else(|p| p.into_inner()).take())
            .collect();
        if tasks.is_empty() {
            return;
        }
        tracing::info!(connectors = tasks.len(), "stopping connectors");
        // Each task bounds its connector's goodbye by the grace and then releases its lease;
        // this bound covers a task stuck in the store.
        let all = futures_join_all(tasks);
        if tokio::time::timeout(grace + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            tracing::warn!("connectors outlived the shutdown grace");
        }
    }
}

async fn futures_join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// Settings read from the configuration running now, each time they are needed.
struct Timing {
    lease_ms: i64,
    backoff_min: Duration,
    backoff_max: Duration,
    grace: Duration,
}

fn timing(core: &Core) -> Timing {
    let runtime = core.runtime.load();
    let raw = &runtime.config.raw;
    Timing {
        lease_ms: raw.connectors.lease_ms.max(300) as i64,
        backoff_min: Duration::from_millis(raw.connectors.backoff_min_ms.max(1)),
        backoff_max: Duration::from_millis(
            raw.connectors
                .backoff_max_ms
                .max(raw.connectors.backoff_min_ms.max(1)),
        ),
        grace: Duration::from_millis(raw.server.shutdown_grace_ms),
    }
}

/// `d` ± 20 %.
fn jittered(d: Duration) -> Duration {
    let f = rand::rng().random_range(0.8..1.2);
    d.mul_f64(f)
}

/// The backoff before restart `attempt` (1-based): doubling from the minimum, capped, with
/// full jitter in its upper half.
fn backoff(t: &Timing, attempt: u32) -> Duration {
    let base = t
        .backoff_min
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(t.backoff_max);
    base.mul_f64(rand::rng().random_range(0.5..1.0))
}

/// How a held lease ended.
enum HeldEnd {
    Lost,
    Removed,
    Shutdown,
}

/// One connector's task: acquire, run while held, renew, restart, stop.
async fn supervise(core: Weak<Core>, entry: Arc<Entry>, mut shutdown: watch::Receiver<bool>) {
    let mut wanted = entry.wanted.subscribe();
    let key = entry.key.clone();
    loop {
        if *shutdown.borrow() || wanted.borrow().is_none() {
            return;
        }
        let Some(core_ref) = core.upgrade() else {
            return;
        };
        let t = timing(&core_ref);
        // Listening for the owner sweep's wake-up from before the lease is read: a dead
        // holder's lease freed while this try is under way must not wait a third of a lease.
        let mut swept = Box::pin(core_ref.connectors.wake.notified());
        swept.as_mut().enable();
        let now = core_ref.clock.now_ms();
        let got = core_ref
            .store
            .acquire_lease(key.clone(), core_ref.instance.clone(), now, t.lease_ms)
            .await;
        let mut lapses_at = None;
        match got {
            Ok(LeaseAcquire::Acquired { epoch, until_ms }) => {
                tracing::info!(tenant = %key.tenant, adapter = %key.adapter,
                    connector = %key.name, epoch, "connector lease acquired");
                let end = held(
                    &core_ref,
                    &entry,
                    epoch,
                    until_ms,
                    &mut wanted,
                    &mut shutdown,
                )
                .await;
                entry.epoch.store(0, Ordering::SeqCst);
                match end {
                    HeldEnd::Lost => {
                        entry.set_detail("lease lost");
                        tracing::warn!(tenant = %key.tenant, adapter = %key.adapter,
                            connector = %key.name, epoch, "connector lease lost");
                    }
                    HeldEnd::Removed | HeldEnd::Shutdown => {
                        let released = core_ref
                            .store
                            .release_lease(key.clone(), core_ref.instance.clone(), epoch)
                            .await;
                        if let Err(e) = released {
                            tracing::warn!(tenant = %key.tenant, adapter = %key.adapter,
                                connector = %key.name, error = %e, "cannot release a connector lease");
                        }
                        entry.set_detail("stopped");
                        return;
                    }
                }
            }
            Ok(LeaseAcquire::Held(row)) => {
                lapses_at = Some(row.until_ms);
                let holder = row.holder.unwrap_or_default();
                entry.set_detail(&format!("standby: held by {holder}"));
            }
            Err(e) => {
                entry.set_detail("standby: store unavailable");
                tracing::warn!(tenant = %key.tenant, adapter = %key.adapter,
                    connector = %key.name, error = %e, "cannot acquire a connector lease");
            }
        }
        // Try again after a third of the lease, or when it lapses if sooner; at once when
        // this instance found its holder dead (the owner sweep); and on another process's
        // commit (a release on its shutdown) when a read shows the lease free.
        let mut pause = jittered(Duration::from_millis(t.lease_ms as u64 / 3));
        if let Some(until_ms) = lapses_at {
            let left = (until_ms - core_ref.clock.now_ms()).max(0) as u64 + 1;
            pause = pause.min(Duration::from_millis(left));
        }
        let deadline = Instant::now() + pause;
        loop {
            let woken = tokio::select! {
                () = tokio::time::sleep_until(deadline) => false,
                _ = shutdown.changed() => false,
                _ = wanted.changed() => false,
                () = swept.as_mut() => false,
                () = core_ref.store.changes().foreign.notified() => true,
            };
            if !woken {
                break;
            }
            // Another process committed: only a free or lapsed lease is worth a write.
            match core_ref.store.read_lease(key.clone()).await {
                Ok(Some(row)) if row.holder.is_some() && row.until_ms > core_ref.clock.now_ms() => {
                }
                _ => break,
            }
        }
        drop(swept);
        drop(core_ref);
    }
}

/// A running connector: its context and task.
struct Running {
    ctx: Arc<Ctx>,
    task: JoinHandle<ConnectorExit>,
}

impl Running {
    /// Asks it to stop and waits up to `bound`; aborts it after that.
    async fn stop(mut self, reason: StopReason, bound: Duration) {
        self.ctx.stop.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
        if tokio::time::timeout(bound, &mut self.task).await.is_err() {
            tracing::warn!(tenant = %self.ctx.tenant, connector = %self.ctx.spec.name,
                ?reason, "connector did not stop in time: aborted");
            self.task.abort();
        }
    }
}

async fn held(
    core: &Arc<Core>,
    entry: &Arc<Entry>,
    epoch: u64,
    mut until_ms: i64,
    wanted: &mut watch::Receiver<Option<Wanted>>,
    shutdown: &mut watch::Receiver<bool>,
) -> HeldEnd {
    let key = &entry.key;
    let mut attempt: u32 = 0;
    let mut running: Option<Running> = None;
    let mut restart_at: Option<Instant> = Some(Instant::now());
    let mut next_renew = Instant::now() + jittered(renew_every(core));
    loop {
        let lapse =
            Instant::now() + Duration::from_millis((until_ms - core.clock.now_ms()).max(0) as u64);
        let restart = restart_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            () = tokio::time::sleep_until(restart), if restart_at.is_some() => {
                restart_at = None;
                let Some(want) = wanted.borrow().clone() else { continue };
                running = Some(start(core, entry, epoch, want));
                entry.epoch.store(epoch, Ordering::SeqCst);
            }
            exit = async { running.as_mut().map(|r| &mut r.task) .expect("guarded").await },
                if running.is_some() => {
                running = None;
                attempt += 1;
                entry.restarts.fetch_add(1, Ordering::Relaxed);
                let reason = match exit {
                    Ok(ConnectorExit::Failed(reason)) => reason,
                    Ok(ConnectorExit::Stopped) => "returned without being asked to stop".into(),
                    Err(e) => format!("panicked: {e}"),
                };
                let t = timing(core);
                let pause = backoff(&t, attempt);
                core.metrics
                    .connector_restarts
                    .get_or_create(&labels(key))
                    .inc();
                entry.set_detail(&format!("backoff: {reason}"));
                tracing::warn!(tenant = %key.tenant, adapter = %key.adapter,
                    connector = %key.name, attempt, backoff_ms = pause.as_millis() as u64,
                    reason = %reason, "connector failed: restarting after a backoff");
                restart_at = Some(Instant::now() + pause);
            }
            () = tokio::time::sleep_until(next_renew) => {
                let t = timing(core);
                let now = core.clock.now_ms();
                match core
                    .store
                    .renew_lease(key.clone(), core.instance.clone(), epoch, now, t.lease_ms)
                    .await
                {
                    Ok(Some(until)) => until_ms = until,
                    Ok(None) => {
                        stop(running.take(), StopReason::LeaseLost, Duration::from_millis(t.lease_ms as u64 / 3)).await;
                        return HeldEnd::Lost;
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %key.tenant, adapter = %key.adapter,
                            connector = %key.name, error = %e, "cannot renew a connector lease");
                    }
                }
                next_renew = Instant::now() + jittered(renew_every(core));
            }
            () = tokio::time::sleep_until(lapse) => {
                let t = timing(core);
                stop(running.take(), StopReason::LeaseLost, Duration::from_millis(t.lease_ms as u64 / 3)).await;
                return HeldEnd::Lost;
            }
            _ = shutdown.changed() => {
                let t = timing(core);
                stop(running.take(), StopReason::Shutdown, t.grace).await;
                return HeldEnd::Shutdown;
            }
            _ = wanted.changed() => {
                let t = timing(core);
                let removed = wanted.borrow().is_none();
                if running.is_some() {
                    tracing::info!(tenant = %key.tenant, adapter = %key.adapter,
                        connector = %key.name, removed, "connector reconfigured: stopping it");
                }
                stop(running.take(), StopReason::Reconfigured, t.grace).await;
                entry.epoch.store(0, Ordering::SeqCst);
                if removed {
                    return HeldEnd::Removed;
                }
                attempt = 0;
                restart_at = Some(Instant::now());
            }
        }
    }
}

fn renew_every(core: &Core) -> Duration {
    Duration::from_millis(timing(core).lease_ms as u64 / 3)
}

async fn stop(running: Option<Running>, reason: StopReason, bound: Duration) {
    if let Some(r) = running {
        r.stop(reason, bound).await;
    }
}

pub fn labels(key: &LeaseKey) -> ConnectorLabels {
    ConnectorLabels {
        tenant: key.tenant.clone(),
        adapter: key.adapter.clone(),
        connector: key.name.clone(),
    }
}

fn start(core: &Arc<Core>, entry: &Arc<Entry>, epoch: u64, want: Wanted) -> Running {
    let key = &entry.key;
    let http = PlatformHttp::new(&want.spec);
    let (stop, _) = watch::channel(None);
    let adapter = want.adapter;
    match http {
        Ok(http) => {
            let ctx = Arc::new(Ctx {
                core: core.clone(),
                tenant: key.tenant.clone(),
                spec: want.spec,
                epoch,
                stop,
                http,
                advertise_url: want.advertise_url,
                entry: Arc::downgrade(entry),
            });
            tracing::info!(tenant = %key.tenant, adapter = %key.adapter,
                connector = %key.name, epoch, "connector starting");
            let task = tokio::spawn(adapter.run_connector(ctx.clone()));
            Running { ctx, task }
        }
        Err(why) => {
            // A client that cannot be built (unreadable CA file) fails like the connector.
            let ctx = Arc::new(Ctx {
                core: core.clone(),
                tenant: key.tenant.clone(),
                spec: want.spec,
                epoch,
                stop,
                http: PlatformHttp::unusable(),
                advertise_url: want.advertise_url,
                entry: Arc::downgrade(entry),
            });
            let task = tokio::spawn(async move { ConnectorExit::Failed(why) });
            Running { ctx, task }
        }
    }
}

/// What a running connector gets from the core.
struct Ctx {
    core: Arc<Core>,
    tenant: String,
    spec: ConnectorSpec,
    epoch: u64,
    stop: watch::Sender<Option<StopReason>>,
    http: PlatformHttp,
    advertise_url: Option<String>,
    entry: Weak<Entry>,
}

impl ConnectorCtx for Ctx {
    fn gateway(&self) -> &dyn Gateway {
        self.core.as_ref()
    }

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn stopped(&self) -> BoxFuture<'_, StopReason> {
        let mut rx = self.stop.subscribe();
        Box::pin(async move {
            loop {
                if let Some(reason) = *rx.borrow_and_update() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    return StopReason::Shutdown;
                }
            }
        })
    }

    fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }

    fn http(&self) -> &dyn PlatformClient {
        &self.http
    }

    fn advertise_url(&self) -> Option<&str> {
        self.advertise_url.as_deref()
    }

    fn set_health(&self, health: ConnectorHealth) {
        if let Some(entry) = self.entry.upgrade() {
            entry.set_health(health);
        }
    }
}
