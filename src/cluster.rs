//! Limits that hold for the cluster: several instances on one store together allow a tenant
//! what one instance alone would.
//!
//! - Rates (`decisions_per_second`, `deliveries_per_second`) and per-endpoint concurrency are
//!   divided among the live instances: each keeps its share in memory, so the decision path
//!   never asks the store. The share follows the store's registry of live instances, read
//!   every `storage.heartbeat_ms` ([`watch`]); when an instance dies its share goes back to
//!   the others once its liveness lapses (its lock file on the embedded store, its heartbeat
//!   on PostgreSQL).
//! - Circuit breakers are shared through the store: an instance that opens one writes it
//!   (which endpoint, until when, in the store's clock), the others read the open ones on the
//!   same beat and leave the endpoint alone until then; the instance whose probe gets an
//!   answer again forgets it.
//! - The outbox quota needs nothing here: it is counted in the store, in the transaction that
//!   adds the events.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::core::{Core, Runtime};

/// This instance's place among the live instances: how many there are and its rank in the
/// registry's order (owner ids sorted), so the remainders of an uneven split go to the
/// first ones and the shares add up to the whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub count: usize,
    pub rank: usize,
}

impl Membership {
    /// One instance alone: the whole of every limit.
    pub const ALONE: Membership = Membership { count: 1, rank: 0 };

    /// The membership of `me` in the registry `live` (sorted owner ids). An instance that
    /// is not (yet, or no longer) listed counts itself in all the same.
    pub fn of(live: &[String], me: &str) -> Membership {
        match live.binary_search_by(|id| id.as_str().cmp(me)) {
            Ok(rank) => Membership {
                count: live.len(),
                rank,
            },
            Err(rank) => Membership {
                count: live.len() + 1,
                rank,
            },
        }
    }

    /// This instance's share of a whole count (a concurrency, a burst): the whole divided
    /// evenly, the remainder one each to the first instances. At least one, so every
    /// instance can still serve (a whole below the number of instances is exceeded by the
    /// difference).
    pub fn split(&self, whole: u64) -> u64 {
        let count = self.count.max(1) as u64;
        let rank = self.rank as u64;
        let share = whole / count + u64::from(rank < whole % count);
        share.max(1)
    }

    /// This instance's share of `per_second` (a tenant's rate): `per_second / count` per
    /// second exactly, with a burst of [`Membership::split`] of `per_second`, so the
    /// instances' bursts add up to the tenant's.
    pub fn rate(&self, per_second: u32) -> Quota {
        let per_second = per_second.max(1);
        let whole = || Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN));
        if self.count <= 1 {
            return whole();
        }
        let period =
            Duration::from_nanos(1_000_000_000 * self.count as u64 / u64::from(per_second));
        let burst = u32::try_from(self.split(u64::from(per_second))).unwrap_or(u32::MAX);
        match (Quota::with_period(period), NonZeroU32::new(burst)) {
            (Some(quota), Some(burst)) => quota.allow_burst(burst),
            _ => whole(),
        }
    }
}

/// Which breakers a shared breaker belongs to.
pub const DECISION: &str = "decision";
pub const DELIVERY: &str = "delivery";

/// A breaker that opened or closed here, to be told to the other instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerNews {
    Tripped {
        scope: &'static str,
        endpoint: String,
        open_ms: i64,
    },
    Closed {
        scope: &'static str,
        endpoint: String,
    },
}

/// Breaker news waiting to be written; more than this many unwritten means the store is
/// not keeping up, and the oldest news is not worth more than the newest.
pub const NEWS_QUEUE: usize = 256;

/// How an endpoint is named in the store: a digest of its URL, never the URL itself (it may
/// carry credentials).
pub fn endpoint_key(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Keeps this instance's shares and breakers in step with the cluster: at start and then
/// every `storage.heartbeat_ms`, reads the live instances (resizing the shares when their
/// number or this instance's rank changed) and the breakers others opened.
pub async fn watch(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let mut last_error: Option<String> = None;
    loop {
        let result = refresh(&core).await;
        match (&result, &last_error) {
            (Ok(()), Some(_)) => {
                tracing::info!("cluster registry read again: limits follow the live instances")
            }
            (Err(e), None) => {
                tracing::warn!(error = %e, "cannot read the registry of live instances: this instance keeps its last share of the tenants' limits")
            }
            _ => {}
        }
        last_error = result.err();
        let every =
            Duration::from_millis(core.runtime.load().config.raw.storage.heartbeat_ms.max(100));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn refresh(core: &Core) -> Result<(), String> {
    let live = core
        .store
        .live_instances()
        .await
        .map_err(|e| e.to_string())?;
    let membership = Membership::of(&live, &core.instance);
    core.metrics
        .cluster_instances
        .set(i64::try_from(membership.count).unwrap_or(i64::MAX));
    let old = core.runtime.load_full();
    if old.membership != membership {
        let new = Arc::new(Runtime::resized(&old, membership));
        // A reload in between wins: it sized its own limits, and the next beat checks them.
        core.runtime.compare_and_swap(&old, new);
        tracing::info!(
            instances = membership.count,
            rank = membership.rank,
            "live instances changed: this instance now takes 1/{} of each tenant's rates and its share of per-endpoint concurrency",
            membership.count
        );
    }
    let open = core
        .store
        .open_breakers()
        .await
        .map_err(|e| e.to_string())?;
    if open.is_empty() {
        return Ok(());
    }
    let runtime = core.runtime.load();
    let mut urls: HashMap<String, &str> = HashMap::new();
    for tenant in &runtime.config.tenants {
        let targets = [
            Some(tenant.webhook_url.as_str()),
            Some(tenant.decision_target.as_str()),
            tenant.fallback_target.as_ref().map(|t| t.as_str()),
        ];
        for url in targets.into_iter().flatten() {
            urls.insert(endpoint_key(url), url);
        }
    }
    for shared in open {
        let Some(url) = urls.get(&shared.endpoint) else {
            continue;
        };
        let breakers = match shared.scope.as_str() {
            DECISION => &core.decision_breakers,
            DELIVERY => &core.delivery_breakers,
            _ => continue,
        };
        let left = Duration::from_millis(shared.left_ms.max(0) as u64);
        if breakers.adopt(url, left) {
            tracing::warn!(
                endpoint = %crate::redact::url(url), scope = %shared.scope,
                open_ms = shared.left_ms,
                "circuit breaker opened by another instance: endpoint left alone here too"
            );
        }
    }
    Ok(())
}

/// Writes breaker news to the store as it comes, so the other instances read it on their
/// next beat. A failed write is logged; the breaker still holds here.
pub async fn tell(
    core: Arc<Core>,
    news: Option<mpsc::Receiver<BreakerNews>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(mut news) = news else {
        return;
    };
    loop {
        let item = tokio::select! {
            item = news.recv() => item,
            _ = shutdown.changed() => return,
        };
        let Some(item) = item else {
            return;
        };
        let result = match &item {
            BreakerNews::Tripped {
                scope,
                endpoint,
                open_ms,
            } => {
                core.store
                    .trip_breaker((*scope).to_owned(), endpoint_key(endpoint), *open_ms)
                    .await
            }
            BreakerNews::Closed { scope, endpoint } => {
                core.store
                    .close_breaker((*scope).to_owned(), endpoint_key(endpoint))
                    .await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot share a circuit breaker's state with the other instances");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn shares_add_up_to_the_whole() {
        let live = ids(&["a", "b", "c"]);
        let members: Vec<Membership> = live.iter().map(|me| Membership::of(&live, me)).collect();
        assert_eq!(
            members.iter().map(|m| m.rank).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        for whole in [3u64, 8, 10, 11, 100] {
            let total: u64 = members.iter().map(|m| m.split(whole)).sum();
            assert_eq!(total, whole, "split of {whole}");
        }
        // Below one per instance each still gets one.
        assert_eq!(members.iter().map(|m| m.split(2)).sum::<u64>(), 3);
        // Not listed (yet): counted all the same, in its place.
        assert_eq!(
            Membership::of(&ids(&["a", "c"]), "b"),
            Membership { count: 3, rank: 1 }
        );
        assert_eq!(Membership::of(&[], "x"), Membership::ALONE);
    }

    #[test]
    fn rate_shares_add_up_to_the_tenants_rate() {
        for (count, per_second) in [(3usize, 20u32), (3, 10), (2, 7), (4, 1)] {
            let mut rate = 0.0;
            let mut burst = 0;
            for rank in 0..count {
                let quota = Membership { count, rank }.rate(per_second);
                rate += 1.0 / quota.replenish_interval().as_secs_f64();
                burst += quota.burst_size().get();
            }
            assert!(
                (rate - f64::from(per_second)).abs() < 1e-6,
                "{count} instances at {per_second}/s: {rate}"
            );
            assert_eq!(burst, per_second.max(count as u32));
        }
        let alone = Membership::ALONE.rate(20);
        assert_eq!(alone.burst_size().get(), 20);
    }

    #[test]
    fn endpoint_keys_do_not_show_the_url() {
        let key = endpoint_key("https://user:secret@example.test/hooks");
        assert_eq!(key.len(), 32);
        assert!(!key.contains("secret"));
        assert_ne!(key, endpoint_key("https://example.test/hooks"));
    }
}
