//! Event delivery: claims due events from the outbox with a lease, sends each signed afresh
//! (same `webhook-id`, new `webhook-timestamp`), and records the outcome: delivered, retried
//! on the schedule (or the endpoint's `Retry-After`), dead-lettered when the schedule is
//! exhausted. A tenant whose endpoint is disabled (410), whose breaker is open or whose
//! per-endpoint slots are all busy is skipped, so it cannot hold the workers of the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::core::Core;
use crate::store::{Delivery, DeliveryUpdate};
use crate::{clock, retry, signing};

/// Runs until `shutdown` turns true; deliveries in flight finish (or time out) first.
pub async fn run(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let workers = core.runtime.load().config.raw.delivery.workers.max(1);
    let slots = Arc::new(Semaphore::new(workers));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let free = slots.available_permits();
        let mut claimed = Vec::new();
        if free > 0 {
            let runtime = core.runtime.load_full();
            let delivery = &runtime.config.raw.delivery;
            let mut skip: Vec<String> = Vec::new();
            if let Ok(rows) = core.store.disabled_endpoints().await {
                core.set_disabled_endpoints(rows.into_iter().map(|(tenant, _)| tenant));
            }
            for tenant in &runtime.config.tenants {
                let busy = runtime
                    .delivery_slots
                    .get(&tenant.id)
                    .is_some_and(|s| s.available_permits() == 0);
                let open = !core.breakers.try_peek(&tenant.webhook_url);
                if busy || open || core.endpoint_disabled(&tenant.id) {
                    skip.push(tenant.id.clone());
                }
            }
            let now = core.clock.now_ms();
            match core
                .store
                .claim_deliveries(
                    core.instance.clone(),
                    now,
                    delivery.lease_ms as i64,
                    free.min(256),
                    skip,
                )
                .await
            {
                Ok(rows) => claimed = rows,
                Err(e) => tracing::error!(error = %e, "cannot claim deliveries"),
            }
        }
        let got = claimed.len();
        for row in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let core = core.clone();
            tokio::spawn(async move {
                deliver(&core, row).await;
                drop(permit);
            });
        }
        if got == 0 || slots.available_permits() == 0 {
            tokio::select! {
                _ = core.store.changes.outbox.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    // Let in-flight deliveries finish: they hold the permits.
    let _ = tokio::time::timeout(Duration::from_secs(15), slots.acquire_many(workers as u32)).await;
}

async fn deliver(core: &Core, row: Delivery) {
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
    let _slot = match runtime.delivery_slots.get(&tenant.id) {
        Some(s) => match s.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                finish(DeliveryUpdate::Release {
                    id: row.id,
                    next_ms: now_ms,
                })
                .await;
                return;
            }
        },
        None => None,
    };
    let url = &tenant.webhook_url;
    if core.endpoint_disabled(&tenant.id) {
        finish(DeliveryUpdate::Release {
            id: row.id,
            next_ms: now_ms,
        })
        .await;
        return;
    }
    if !core.breakers.try_acquire(url) {
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
    let result = core
        .delivery_http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &row.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(row.payload.clone())
        .send()
        .await;
    let attempts = row.attempts + 1;
    let (error, retry_after) = match result {
        Ok(response) if response.status().is_success() => {
            core.breakers.success(url);
            core.metrics.delivery("delivered");
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
            tracing::error!(tenant = %tenant.id, url = %url, "endpoint answered 410 Gone: disabled until re-enabled through the admin API");
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
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    retry::parse_retry_after(v, now, Duration::from_secs(cfg.max_retry_after_s))
                });
            if status.is_server_error() || status.as_u16() == 429 {
                core.breakers.failure(url);
            }
            (format!("HTTP {}", status.as_u16()), retry_after)
        }
        Err(e) => {
            core.breakers.failure(url);
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect error"
            } else {
                "request error"
            };
            (kind.to_owned(), None)
        }
    };
    let scheduled = retry::next_delay(&cfg.retry_schedule_s, cfg.jitter_percent, attempts);
    let update = match (scheduled, retry_after) {
        (None, _) => {
            core.metrics.delivery("dead");
            tracing::error!(tenant = %tenant.id, event_id = %row.event_id, attempts, error = %error, "retry schedule exhausted: event dead-lettered");
            DeliveryUpdate::Dead { id: row.id, error }
        }
        (Some(delay), after) => {
            let delay = after.unwrap_or(delay);
            core.metrics.delivery("retry");
            tracing::warn!(tenant = %tenant.id, event_id = %row.event_id, attempts, error = %error, retry_in_s = delay.as_secs(), "delivery failed; will retry");
            DeliveryUpdate::Retry {
                id: row.id,
                next_ms: now_ms + delay.as_millis() as i64,
                error,
            }
        }
    };
    finish(update).await;
}
