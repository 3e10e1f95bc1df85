//! Event delivery: claims due events from the outbox with a lease, sends each signed afresh
//! (same `webhook-id`, new `webhook-timestamp`), and records the outcome: delivered, retried
//! on the schedule (or the endpoint's `Retry-After`), dead-lettered when the schedule is
//! exhausted. A tenant whose endpoint is disabled (410), whose breaker is open or whose
//! per-endpoint slots are all busy is skipped, so it cannot hold the workers of the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};

use crate::core::Core;
use crate::observe::{self, Observed};
use crate::store::{Delivery, DeliveryUpdate};
use crate::{clock, retry, signing};

/// Claimed rows kept ready per tenant, as a multiple of its endpoint slots: enough to keep
/// the slots busy while the next claim waits for its commit, few enough that a slow endpoint
/// (`timeout_ms` per attempt) sends them well within the lease.
const PREFETCH_PER_SLOT: usize = 4;

/// Runs until `shutdown` turns true; deliveries in flight finish (or time out) first.
pub async fn run(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let workers = core.runtime.load().config.raw.delivery.workers.max(1);
    let slots = Arc::new(Semaphore::new(workers));
    let freed = Arc::new(Notify::new());
    let mut backlog: Vec<Delivery> = Vec::new();
    while !*shutdown.borrow() {
        core.liveness.delivery.beat();
        crate::liveness::test_stall_delivery().await;
        let runtime = core.runtime.load_full();
        let cfg = &runtime.config.raw.delivery;
        if let Ok(rows) = core.store.disabled_endpoints().await {
            core.set_disabled_endpoints(rows.into_iter().map(|(tenant, _)| tenant));
        }
        // Tenants that cannot be sent to now keep their rows in the store, not here.
        let blocked: Vec<String> = runtime
            .config
            .tenants
            .iter()
            .filter(|t| {
                core.endpoint_disabled(&t.id) || !core.delivery_breakers.try_peek(&t.webhook_url)
            })
            .map(|t| t.id.clone())
            .collect();
        let (held, kept): (Vec<_>, Vec<_>) = backlog
            .drain(..)
            .partition(|row| blocked.contains(&row.tenant));
        backlog = kept;
        for row in held {
            release(&core, row.id, core.clock.now_ms()).await;
        }
        // Claim what each tenant's prefetch budget still has room for.
        let budget = runtime.slots_per_endpoint.max(1) * PREFETCH_PER_SLOT;
        let mut skip = blocked;
        let mut room = 0;
        for tenant in &runtime.config.tenants {
            let slots = runtime.slots_per_endpoint;
            let in_flight = runtime
                .delivery_slots
                .get(&tenant.id)
                .map_or(0, |s| slots - s.available_permits().min(slots));
            let queued = backlog.iter().filter(|r| r.tenant == tenant.id).count();
            let left = budget.saturating_sub(in_flight + queued);
            if left == 0 {
                skip.push(tenant.id.clone());
            } else if !skip.contains(&tenant.id) {
                room += left;
            }
        }
        let mut claimed = 0;
        if room > 0 {
            match core
                .store
                .claim_deliveries(
                    core.instance.clone(),
                    core.clock.now_ms(),
                    cfg.lease_ms as i64,
                    room.min(256),
                    skip,
                )
                .await
            {
                Ok(rows) => {
                    claimed = rows.len();
                    backlog.extend(rows);
                }
                Err(e) => tracing::error!(error = %e, "cannot claim deliveries"),
            }
        }
        // Send what the free slots allow; the rest waits here, leased.
        let mut waiting = Vec::new();
        let mut sent = 0;
        for row in backlog.drain(..) {
            let tenant_slot = runtime
                .delivery_slots
                .get(&row.tenant)
                .and_then(|s| s.clone().try_acquire_owned().ok());
            let global = slots.clone().try_acquire_owned().ok();
            match (global, tenant_slot) {
                (Some(global), Some(tenant)) => {
                    sent += 1;
                    let core = core.clone();
                    let freed = freed.clone();
                    tokio::spawn(async move {
                        deliver(&core, row, (global, Some(tenant)), &freed).await;
                        // Early returns (breaker, disabled endpoint) free their slots too.
                        freed.notify_one();
                    });
                }
                _ => waiting.push(row),
            }
        }
        backlog = waiting;
        if claimed == 0 && sent == 0 {
            tokio::select! {
                _ = core.store.changes().outbox.notified() => {}
                _ = freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
        } else if !backlog.is_empty() && claimed == 0 {
            tokio::select! {
                _ = freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    // Rows claimed but not sent go back to the queue at once instead of waiting out the lease.
    for row in backlog {
        release(&core, row.id, core.clock.now_ms()).await;
    }
    // Let in-flight deliveries finish: they hold the permits.
    let _ = tokio::time::timeout(Duration::from_secs(15), slots.acquire_many(workers as u32)).await;
}

async fn release(core: &Core, id: i64, next_ms: i64) {
    let update = DeliveryUpdate::Release { id, next_ms };
    if let Err(e) = core
        .store
        .finish_deliveries(core.instance.clone(), vec![update])
        .await
    {
        tracing::error!(error = %e, "cannot release a claimed delivery");
    }
}

/// Sends one claimed event. `slots` (the global worker slot and the tenant's endpoint slot)
/// are given back as soon as the exchange is over; the lease keeps the row this instance's
/// until its outcome is written.
async fn deliver(
    core: &Core,
    mut row: Delivery,
    slots: (
        tokio::sync::OwnedSemaphorePermit,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    freed: &Notify,
) {
    let runtime = core.runtime.load_full();
    let now_ms = core.clock.now_ms();
    let owner = core.instance.clone();
    let finish = |update: DeliveryUpdate| {
        let store = core.store.clone();
        let owner = owner.clone();
        async move {
            if let Err(e) = store.finish_deliveries(owner, vec![update]).await {
                tracing::error!(error = %e, "cannot record a delivery outcome");
            }
        }
    };
    let Some(tenant) = runtime.config.tenant(&row.tenant) else {
        // The tenant left the configuration; keep its events for when it comes back.
        finish(DeliveryUpdate::Release {
            id: row.id,
            next_ms: now_ms + 60_000,
        })
        .await;
        return;
    };
    let cfg = &runtime.config.raw.delivery;
    let url = &tenant.webhook_url;
    if core.endpoint_disabled(&tenant.id) {
        finish(DeliveryUpdate::Release {
            id: row.id,
            next_ms: now_ms,
        })
        .await;
        return;
    }
    if !core.delivery_breakers.try_acquire(url) {
        core.metrics.delivery("breaker_open");
        finish(DeliveryUpdate::Release {
            id: row.id,
            next_ms: now_ms + cfg.breaker_open_ms as i64,
        })
        .await;
        return;
    }
    if let Some(limit) = runtime.delivery_limits.get(&tenant.id) {
        limit.until_ready().await;
    }
    let now = core.clock.now();
    let timestamp = clock::to_ms(now) / 1000;
    let signature =
        signing::signature_header(&tenant.secrets, &row.event_id, timestamp, &row.payload);
    // Per attempt, so a reload applies `delivery.timeout_ms` at once.
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let of = cfg.retry_schedule_s.len() as u32 + 1;
    if let Some(observer) = &core.observer {
        observer.observe(Observed::Sent(observe::Sent {
            id: row.event_id.clone(),
            webhook_type: row.event_type.clone(),
            url: crate::redact::url(url),
            attempt: row.attempts + 1,
            of,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-id".into(), row.event_id.clone()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                ("webhook-signature".into(), signature.clone()),
            ],
            body: row.payload.clone(),
        }));
    }
    let started = std::time::Instant::now();
    let observe =
        |status: Option<u16>, outcome: &str, error: Option<&str>, retry_in: Option<Duration>| {
            if let Some(observer) = &core.observer {
                observer.observe(Observed::Answered(observe::Answered {
                    id: row.event_id.clone(),
                    webhook_type: row.event_type.clone(),
                    attempt: row.attempts + 1,
                    status,
                    body: None,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    error: error.map(str::to_owned),
                    outcome: outcome.to_owned(),
                    retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                }));
            }
        };
    let result = core
        .delivery_client(tenant)
        .post(tenant.webhook_target.clone())
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &row.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        // The payload is not needed after this attempt: handed over, not copied.
        .body(std::mem::take(&mut row.payload))
        .send()
        .await;
    drop(slots);
    freed.notify_one();
    let attempts = row.attempts + 1;
    // What an operator needs to find the event and its endpoint: every failure line says
    // which endpoint (redacted), which event of which call, and the attempt as "n of N".
    let endpoint = crate::redact::url(url);
    let call = row.call_id.as_deref().unwrap_or("-");
    let attempt = format!("{attempts} of {}", cfg.retry_schedule_s.len() + 1);
    let mut answered_status = None;
    let (error, retry_after) = match result {
        Ok(response) if response.status().is_success() => {
            let response_status = response.status().as_u16();
            // Drain (a little of) the body so the connection is reused.
            let _ = crate::core::read_capped(response, 64 * 1024).await;
            core.delivery_breakers.success(url);
            core.metrics.delivery("delivered");
            observe(Some(response_status), "delivered", None, None);
            tracing::debug!(tenant = %tenant.id, event_id = %row.event_id, event_type = %row.event_type, attempts, "event delivered");
            finish(DeliveryUpdate::Delivered {
                id: row.id,
                at_ms: core.clock.now_ms(),
            })
            .await;
            return;
        }
        Ok(response) if response.status().as_u16() == 410 => {
            core.metrics.delivery("gone");
            observe(
                Some(410),
                "gone",
                Some("410 Gone: endpoint disabled until re-enabled through the admin API"),
                None,
            );
            tracing::error!(
                tenant = %tenant.id, endpoint = %endpoint, event_type = %row.event_type,
                event_id = %row.event_id, call = %call, attempt = %attempt,
                "endpoint answered 410 Gone: disabled until re-enabled through the admin API"
            );
            core.disabled_endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(tenant.id.clone());
            let reason = format!("410 Gone at attempt {attempts} of {}", row.event_id);
            if let Err(e) = core
                .store
                .set_endpoint_disabled(tenant.id.clone(), Some((now_ms, reason)))
                .await
            {
                tracing::error!(error = %e, "cannot record the disabled endpoint");
            }
            finish(DeliveryUpdate::Release {
                id: row.id,
                next_ms: now_ms,
            })
            .await;
            return;
        }
        Ok(response) => {
            let status = response.status();
            answered_status = Some(status.as_u16());
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    retry::parse_retry_after(v, now, Duration::from_secs(cfg.max_retry_after_s))
                });
            if status.is_server_error() || status.as_u16() == 429 {
                core.delivery_breakers.failure(url);
            }
            (crate::failure::status(status), retry_after)
        }
        Err(e) => {
            core.delivery_breakers.failure(url);
            (crate::failure::describe(&e, timeout), None)
        }
    };
    let scheduled = retry::next_delay(&cfg.retry_schedule_s, cfg.jitter_percent, attempts);
    let update = match (scheduled, retry_after) {
        (None, _) => {
            core.metrics.delivery("dead");
            tracing::error!(
                tenant = %tenant.id, endpoint = %endpoint, event_type = %row.event_type,
                event_id = %row.event_id, call = %call, attempt = %attempt, error = %error,
                "delivery failed and the retry schedule is exhausted: event dead-lettered"
            );
            observe(answered_status, "dead", Some(&error), None);
            DeliveryUpdate::Dead { id: row.id, error }
        }
        (Some(delay), after) => {
            let delay = after.unwrap_or(delay);
            core.metrics.delivery("retry");
            observe(answered_status, "retry", Some(&error), Some(delay));
            tracing::warn!(
                tenant = %tenant.id, endpoint = %endpoint, event_type = %row.event_type,
                event_id = %row.event_id, call = %call, attempt = %attempt, error = %error,
                retry_in_s = delay.as_secs(), "delivery failed; will retry"
            );
            DeliveryUpdate::Retry {
                id: row.id,
                next_ms: now_ms + delay.as_millis() as i64,
                error,
            }
        }
    };
    finish(update).await;
}
