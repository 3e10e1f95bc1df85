//! Stored timers: claimed with a lease and run by whichever instance gets them first, so a
//! restart or a second instance never forgets what is due. Today: call expiry (`call.expired`);
//! the same table carries the adapters' later timers.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;
use tokio::sync::watch;

use crate::core::Core;
use crate::entities::EntityTimer;
use crate::envelope::{Envelope, EventData, Expired};
use crate::ids;
use crate::store::{CallWrite, CommitOutcome, NewEvent, TimerRow, UnitOfWork};

const LEASE_MS: i64 = 30_000;

pub async fn run(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        core.liveness.timers.beat();
        let now = core.clock.now_ms();
        let due = match core
            .store
            .claim_timers(core.instance.clone(), now, LEASE_MS, 64)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot claim timers");
                Vec::new()
            }
        };
        let idle = due.is_empty();
        for timer in due {
            match timer.kind.as_str() {
                "call_expiry" => expire_call(&core, timer).await,
                crate::entities::TIMER_KIND => {
                    let core = core.clone();
                    // Each in its own task: an adapter's timer may wait on a decision.
                    tokio::spawn(async move { run_entity_timer(&core, timer).await });
                }
                other => {
                    tracing::warn!(kind = other, key = %timer.key, "unknown timer kind left alone");
                }
            }
        }
        if idle {
            tokio::select! {
                _ = core.store.changes().timers.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Hands an entity timer to the adapter owning the entity, then drops it unless the adapter
/// set it again. A failure leaves it leased, so it runs again when the lease lapses.
async fn run_entity_timer(core: &Core, timer: TimerRow) {
    let count = |outcome: &str| {
        core.metrics
            .timers_run
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    };
    let stored = match EntityTimer::deserialize(&timer.payload) {
        Ok(stored) => stored,
        Err(e) => {
            // Not a timer any release wrote: nobody can run it, and it would fall due again
            // after every lease.
            count("unreadable");
            tracing::error!(key = %timer.key, error = %e, "entity timer unreadable; dropped");
            let _ = core
                .store
                .finish_timer(timer.key, core.instance.clone())
                .await;
            return;
        }
    };
    let entity = ivrgate_adapter::EntityKey::new(&timer.tenant, stored.kind, stored.id);
    let name = stored.name;
    let Some(adapter) = core.adapter(entity.adapter()) else {
        count("unknown_adapter");
        tracing::warn!(kind = %entity.kind, key = %timer.key, "timer for an unknown adapter dropped");
        let _ = core
            .store
            .finish_timer(timer.key, core.instance.clone())
            .await;
        return;
    };
    let fired = ivrgate_adapter::TimerFired {
        entity: entity.clone(),
        name: name.clone(),
        due: crate::clock::from_ms(timer.due_ms),
        payload: stored.payload,
    };
    match adapter.on_timer(core, fired).await {
        Ok(()) => {
            count("ok");
            if let Err(e) = core
                .store
                .finish_timer(timer.key, core.instance.clone())
                .await
            {
                tracing::error!(error = %e, "cannot remove a timer that ran");
            }
        }
        Err(why) => {
            count("failed");
            tracing::warn!(
                tenant = %entity.tenant, kind = %entity.kind, id = %entity.id, timer = %name,
                reason = %why, "timer failed; it runs again after its lease"
            );
        }
    }
}

async fn expire_call(core: &Core, timer: TimerRow) {
    let Some(call_id) = timer.payload.get("call_id").and_then(Value::as_str) else {
        return;
    };
    for _ in 0..5 {
        let loaded = match core.store.load_call_by_id(call_id.to_owned()).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, call_id, "cannot read call for expiry");
                return;
            }
        };
        let now = core.clock.now();
        let now_ms = crate::clock::to_ms(now);
        let Some((key, row)) = loaded else { return };
        let live = row.state.is_some();
        if live && row.expires_at_ms.is_some_and(|at| at > now_ms) {
            // News arrived since the timer was set; the commit moved it already.
            let _ = core
                .store
                .release_timer(timer.key.clone(), core.instance.clone())
                .await;
            return;
        }
        let mut events = Vec::new();
        if live {
            let event_id = ids::event_id();
            events.push(NewEvent {
                event_id: event_id.clone(),
                event_type: "call.expired".into(),
                payload: Arc::new(Envelope {
                    kind: "call.expired".into(),
                    timestamp: now,
                    data: EventData::Expired(Expired {
                        event_id,
                        tenant: key.tenant.clone(),
                        vendor: key.vendor.clone(),
                        call_id: row.call_id.clone(),
                        vendor_call_id: key.vendor_call_id.clone(),
                        attached: row.attached.clone(),
                        last_state: row.state.clone(),
                        expired_at: now,
                    }),
                }),
            });
        }
        let uow = UnitOfWork {
            tenant: key.tenant.clone(),
            now_ms,
            call: Some(CallWrite {
                key: key.clone(),
                call_id: row.call_id.clone(),
                expected_version: Some(row.version),
                status: if live {
                    "expired"
                } else {
                    ended_status(&row.status)
                },
                attached: row.attached.clone(),
                state: None,
                expires_at_ms: None,
            }),
            events,
            ..UnitOfWork::default()
        };
        match core.store.commit(uow).await {
            Ok(CommitOutcome::Committed { .. }) => {
                core.wake_entity(&key);
                if live {
                    core.metrics.calls_expired.inc();
                    tracing::info!(tenant = %key.tenant, call_id = %row.call_id, "call expired without news");
                }
                return;
            }
            Ok(CommitOutcome::Conflict) => continue,
            Ok(other) => {
                tracing::warn!(?other, call_id, "call expiry not committed");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, call_id, "call expiry failed");
                return;
            }
        }
    }
}

/// The status a call without live state keeps when its timer is cleared.
fn ended_status(status: &str) -> &'static str {
    match status {
        "expired" => "expired",
        _ => "ended",
    }
}

/// Housekeeping every few seconds: gauges, the free-space reserve, purging old rows.
pub async fn maintenance(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let mut ticks: u64 = 0;
    loop {
        let runtime = core.runtime.load_full();
        let cfg = &runtime.config.raw;
        // The writer checks free space before each batch that adds rows; this keeps the
        // reserve it holds to the configuration's (a reload changes it).
        core.store
            .set_free_space_reserve(cfg.storage.min_free_bytes);
        if let Ok(depths) = core.store.outbox_depth().await {
            for tenant in &runtime.config.tenants {
                let d = depths.iter().find(|d| d.tenant == tenant.id);
                let label = crate::metrics::TenantLabels {
                    tenant: tenant.id.clone(),
                };
                core.metrics
                    .outbox_pending
                    .get_or_create(&label)
                    .set(d.map_or(0, |d| d.pending as i64));
                core.metrics
                    .outbox_dead
                    .get_or_create(&label)
                    .set(d.map_or(0, |d| d.dead as i64));
                let open = core.delivery_breakers.state(&tenant.webhook_url)
                    != crate::breaker::State::Closed;
                core.metrics
                    .breaker_open
                    .get_or_create(&label)
                    .set(i64::from(open));
            }
        }
        if ticks % 120 == 0 {
            let now = core.clock.now_ms();
            match core
                .store
                .purge(
                    now,
                    cfg.storage.call_retention_s as i64 * 1000,
                    cfg.storage.delivered_retention_s as i64 * 1000,
                )
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged expired rows"),
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
        }
        ticks += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// How often instances look for lease owners whose process is gone.
pub const OWNER_SWEEP: Duration = Duration::from_secs(1);

/// Frees the claims (deliveries, timers) of instances that died, at start and then every
/// [`OWNER_SWEEP`], so they are sent again at once rather than after their lease.
pub async fn recover_owners(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match core.store.recover_dead_owners().await {
            Ok(owners) if owners.is_empty() => {}
            Ok(owners) => {
                tracing::warn!(
                    ?owners,
                    "claims and connector leases of stopped instances freed"
                );
                core.connectors.wake();
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for stopped instances"),
        }
        tokio::select! {
            _ = tokio::time::sleep(OWNER_SWEEP) => {}
            _ = shutdown.changed() => return,
        }
    }
}
