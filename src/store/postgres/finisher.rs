//! The finisher: one task per instance takes queued delivery outcomes
//! ([`crate::store::Backend::finish_deliveries`]) and commits them in batches (group commit),
//! each batch a few set-based statements sent as a pipeline.
//!
//! Each delivered event used to run a transaction of its own that decremented its tenant's
//! row in `tenant_counters` first and held that row's lock through its remaining round trips
//! and its commit's WAL flush, so every finish (and the writer's batches, which move the same
//! row) waited for the one before. A batch now settles its rows first and moves each
//! tenant's counter once, as the last statement before `COMMIT`: the hot row is locked only
//! for the commit.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::uow::{pipeline, Reply, Step};
use super::writer::{retryable, ApplyError};
use super::{describe, lock, no_answer, PgStore};
use crate::store::DeliveryUpdate;

/// Outcomes of one caller waiting for the finisher.
pub(super) struct Finish {
    owner: String,
    updates: Vec<DeliveryUpdate>,
    reply: tokio::sync::oneshot::Sender<crate::store::Result<()>>,
}

/// How often a batch is tried again when the database chose it as a deadlock victim.
const DEADLOCK_RETRIES: usize = 3;

impl PgStore {
    /// [`crate::store::Backend::finish_deliveries`]: committed durably together with whatever
    /// other outcomes this instance queued meanwhile, in one transaction; rows no longer
    /// leased to `owner` (or no longer pending) are left alone.
    pub fn finish_deliveries(
        &self,
        owner: String,
        updates: Vec<DeliveryUpdate>,
    ) -> impl std::future::Future<Output = crate::store::Result<()>> + Send + 'static {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let empty = updates.is_empty();
        let sent = !empty
            && match lock(&self.finisher).as_ref() {
                Some(finisher) => finisher
                    .send(Finish {
                        owner,
                        updates,
                        reply,
                    })
                    .is_ok(),
                None => false,
            };
        async move {
            if empty {
                return Ok(());
            }
            if !sent {
                return Err(crate::store::StoreError::Closed);
            }
            answer.await.map_err(|_| crate::store::StoreError::Closed)?
        }
    }
}

pub(super) async fn finisher_loop(
    pool: Pool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Finish>,
    max: usize,
    answer_within: Duration,
) {
    let mut batch: Vec<Finish> = Vec::with_capacity(max);
    // The finisher's own connection, kept from batch to batch (its statements stay prepared).
    let mut conn: Option<deadpool_postgres::Object> = None;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let work = Work::of(&batch);
        match commit(&pool, &mut conn, &work, answer_within).await {
            // A statement the database refused (say an error text it cannot store) fails
            // only its own caller's outcomes, as when each caller had its transaction.
            Err(ApplyError::Db(e)) if e.code().is_some() && batch.len() > 1 => {
                tracing::warn!(error = %describe(&e), callers = batch.len(), "a batch of delivery outcomes failed; committing them one caller at a time");
                for job in batch.drain(..) {
                    let alone = Work::of(std::slice::from_ref(&job));
                    let result = commit(&pool, &mut conn, &alone, answer_within)
                        .await
                        .map_err(ApplyError::into_store);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, updates = alone.len(), "cannot record delivery outcomes");
                    }
                    let _ = job.reply.send(result);
                }
            }
            result => {
                let result = result.map_err(ApplyError::into_store);
                if let Err(e) = &result {
                    tracing::error!(error = %e, updates = work.len(), "cannot record delivery outcomes");
                }
                for job in batch.drain(..) {
                    let _ = job.reply.send(result.clone());
                }
            }
        }
    }
}

/// [`run_batch`] bounded by `answer_within`, again when the database chose it as a deadlock
/// victim. A connection that failed in any way is not used again.
async fn commit(
    pool: &Pool,
    conn: &mut Option<deadpool_postgres::Object>,
    work: &Work,
    answer_within: Duration,
) -> Result<(), ApplyError> {
    let mut tries = 0;
    loop {
        let result = tokio::time::timeout(answer_within, run_batch(pool, conn, work))
            .await
            .unwrap_or_else(|_| {
                // Whether it committed is unknown: the rows stay leased, and are sent again
                // (at least once) when the lease lapses.
                pool.retain(|_, _| false);
                Err(ApplyError::Other(no_answer(answer_within)))
            });
        if result.is_err() {
            // Whatever state it was left in (a transaction open), it is not used again.
            if let Some(broken) = conn.take() {
                drop(deadpool_postgres::Object::take(broken));
            }
        }
        match result {
            Err(ApplyError::Db(e)) if retryable(&e) && tries < DEADLOCK_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// A batch's outcomes as columns, one statement's worth each. Only the first outcome of
/// each (id, owner) in queue order is kept: applied one after the other, a later one would
/// find the row no longer leased to its owner (every outcome clears the lease) or, when the
/// first did not match, find it as the first did. Outcomes of one id under different owners
/// are all kept: at most one of them holds the lease, so their order does not matter.
#[derive(Default)]
struct Work {
    settle: Settle,
    retry: Retry,
    release: Release,
}

#[derive(Default)]
struct Settle {
    ids: Vec<i64>,
    owners: Vec<String>,
    statuses: Vec<i16>,
    errors: Vec<Option<String>>,
    at_ms: Vec<Option<i64>>,
}

#[derive(Default)]
struct Retry {
    ids: Vec<i64>,
    owners: Vec<String>,
    next_ms: Vec<i64>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Release {
    ids: Vec<i64>,
    owners: Vec<String>,
    next_ms: Vec<i64>,
}

impl Work {
    fn of(batch: &[Finish]) -> Work {
        let mut seen = std::collections::HashSet::new();
        let mut all: Vec<(&str, &DeliveryUpdate)> = batch
            .iter()
            .flat_map(|job| job.updates.iter().map(|u| (job.owner.as_str(), u)))
            .filter(|(owner, u)| seen.insert((id_of(u), *owner)))
            .collect();
        // Rows locked in id order (within each statement): two instances' batches touching
        // the same rows wait for each other rather than deadlock, nearly always.
        all.sort_by_key(|(_, u)| id_of(u));
        let mut work = Work::default();
        for (owner, update) in all {
            match update {
                DeliveryUpdate::Delivered { id, at_ms } => {
                    work.settle.push(*id, owner, 1, None, Some(*at_ms))
                }
                DeliveryUpdate::Dead { id, error } => {
                    work.settle.push(*id, owner, 2, Some(error.clone()), None)
                }
                DeliveryUpdate::Retry { id, next_ms, error } => {
                    work.retry.ids.push(*id);
                    work.retry.owners.push(owner.to_owned());
                    work.retry.next_ms.push(*next_ms);
                    work.retry.errors.push(error.clone());
                }
                DeliveryUpdate::Release { id, next_ms } => {
                    work.release.ids.push(*id);
                    work.release.owners.push(owner.to_owned());
                    work.release.next_ms.push(*next_ms);
                }
            }
        }
        work
    }

    fn len(&self) -> usize {
        self.settle.ids.len() + self.retry.ids.len() + self.release.ids.len()
    }
}

impl Settle {
    fn push(&mut self, id: i64, owner: &str, status: i16, error: Option<String>, at: Option<i64>) {
        self.ids.push(id);
        self.owners.push(owner.to_owned());
        self.statuses.push(status);
        self.errors.push(error);
        self.at_ms.push(at);
    }
}

fn id_of(update: &DeliveryUpdate) -> i64 {
    match update {
        DeliveryUpdate::Delivered { id, .. }
        | DeliveryUpdate::Dead { id, .. }
        | DeliveryUpdate::Retry { id, .. }
        | DeliveryUpdate::Release { id, .. } => *id,
    }
}

/// Delivered and dead rows: settled, their tenants returned (one row per settled row).
const SETTLE_SQL: &str = "UPDATE outbox o SET status = u.status, attempts = o.attempts + 1, \
     last_error = COALESCE(u.error, o.last_error), done_at_ms = u.at_ms, lease_owner = NULL, \
     lease_until_ms = 0 \
     FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::text[], $5::bigint[]) \
     AS u(id, owner, status, error, at_ms) \
     WHERE o.id = u.id AND o.lease_owner = u.owner AND o.status = 0 RETURNING o.tenant";

/// Failed attempts to be tried again at their time.
const RETRY_SQL: &str = "UPDATE outbox o SET attempts = o.attempts + 1, \
     next_attempt_ms = u.next_ms, last_error = u.error, lease_owner = NULL, lease_until_ms = 0 \
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) AS u(id, owner, next_ms, error) \
     WHERE o.id = u.id AND o.lease_owner = u.owner AND o.status = 0";

/// Rows not attempted, back to the queue.
const RELEASE_SQL: &str = "UPDATE outbox o SET next_attempt_ms = u.next_ms, lease_owner = NULL, \
     lease_until_ms = 0 \
     FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(id, owner, next_ms) \
     WHERE o.id = u.id AND o.lease_owner = u.owner AND o.status = 0";

/// One tenant's pending counter down by the rows settled (never below 0; created at 0).
const PENDING_SUB_SQL: &str = "INSERT INTO tenant_counters (tenant, pending) VALUES ($1, 0) \
     ON CONFLICT (tenant) DO UPDATE SET pending = GREATEST(tenant_counters.pending - $2::bigint, 0)";

/// One batch in one transaction, in two pipelines: `BEGIN` and the outcomes' statements
/// (only those with rows), then the settled rows' counters, once per tenant in tenant order
/// (one order for every instance and the writer), and `COMMIT`. `synchronous_commit` is on:
/// the outcomes are durable when this returns, as on the embedded store.
async fn run_batch(
    pool: &Pool,
    conn: &mut Option<deadpool_postgres::Object>,
    work: &Work,
) -> Result<(), ApplyError> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(pool.get().await.map_err(|e| {
            ApplyError::Other(crate::store::StoreError::Backend(format!(
                "PostgreSQL: {}",
                describe(&e)
            )))
        })?);
    }
    let Some(client) = conn.as_mut() else {
        return Err(ApplyError::Other(crate::store::StoreError::Closed));
    };
    let client: &deadpool_postgres::ClientWrapper = client;
    let settle_st = client.prepare_cached(SETTLE_SQL).await?;
    let retry_st = client.prepare_cached(RETRY_SQL).await?;
    let release_st = client.prepare_cached(RELEASE_SQL).await?;
    let pending_st = client.prepare_cached(PENDING_SUB_SQL).await?;

    let mut steps: Vec<Step<'_>> = vec![Box::pin(async move {
        client.batch_execute("BEGIN").await.map(|()| Reply::Done)
    })];
    let settling = !work.settle.ids.is_empty();
    if settling {
        let (s, st) = (&work.settle, &settle_st);
        steps.push(Box::pin(async move {
            client
                .query(st, &[&s.ids, &s.owners, &s.statuses, &s.errors, &s.at_ms])
                .await
                .map(Reply::Rows)
        }));
    }
    if !work.retry.ids.is_empty() {
        let (r, st) = (&work.retry, &retry_st);
        steps.push(Box::pin(async move {
            client
                .execute(st, &[&r.ids, &r.owners, &r.next_ms, &r.errors])
                .await
                .map(Reply::Count)
        }));
    }
    if !work.release.ids.is_empty() {
        let (r, st) = (&work.release, &release_st);
        steps.push(Box::pin(async move {
            client
                .execute(st, &[&r.ids, &r.owners, &r.next_ms])
                .await
                .map(Reply::Count)
        }));
    }
    let mut settled: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for reply in pipeline(steps).await {
        if let Reply::Rows(rows) = reply? {
            for row in rows {
                *settled.entry(row.try_get(0)?).or_insert(0) += 1;
            }
        }
    }
    // A failed statement above failed the transaction: `COMMIT` would roll it back without
    // an error, but this one is never reached then.
    let mut steps: Vec<Step<'_>> = Vec::with_capacity(settled.len() + 1);
    for (tenant, n) in &settled {
        let st = &pending_st;
        steps.push(Box::pin(async move {
            client.execute(st, &[tenant, n]).await.map(Reply::Count)
        }));
    }
    steps.push(Box::pin(async move {
        client.batch_execute("COMMIT").await.map(|()| Reply::Done)
    }));
    // Any failure here fails the batch (the connection is not used again, so the
    // transaction is gone with it): a counter statement that failed makes `COMMIT` a
    // rollback, reported through the counter's own error.
    for reply in pipeline(steps).await {
        reply?;
    }
    Ok(())
}
