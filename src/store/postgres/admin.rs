//! Admin queries on the PostgreSQL store: outbox depth, dead letters, replay, the queue
//! summary and event listing, retry-now, disabled endpoints and the retention purge.

use super::{db_err, PgStore, DB_NOW_MS};

impl PgStore {
    /// [`crate::store::Backend::outbox_depth`]: pending and dead events per tenant.
    pub async fn outbox_depth(&self) -> crate::store::Result<Vec<crate::store::OutboxDepth>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant, count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status = 2) \
                 FROM outbox WHERE status IN (0, 2) GROUP BY tenant ORDER BY tenant",
                &[],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| crate::store::OutboxDepth {
                tenant: r.get(0),
                pending: r.get::<_, i64>(1).max(0) as u64,
                dead: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    /// [`crate::store::Backend::dead_letters`], oldest first.
    pub async fn dead_letters(
        &self,
        tenant: Option<String>,
        limit: usize,
    ) -> crate::store::Result<Vec<crate::store::DeadLetter>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT event_id, tenant, event_type, attempts, last_error, created_at_ms \
                 FROM outbox WHERE status = 2 AND ($1::text IS NULL OR tenant = $1) \
                 ORDER BY id LIMIT $2",
                &[&tenant, &(limit as i64)],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| crate::store::DeadLetter {
                event_id: r.get(0),
                tenant: r.get(1),
                event_type: r.get(2),
                attempts: r.get::<_, i32>(3).max(0) as u32,
                last_error: r.get(4),
                created_at_ms: r.get(5),
            })
            .collect())
    }

    /// [`crate::store::Backend::replay`]: matching dead (and, if asked, delivered) events back in
    /// the queue, due at `now_ms`, in one transaction with the pending counters.
    pub async fn replay(
        &self,
        filter: crate::store::ReplayFilter,
        now_ms: i64,
    ) -> crate::store::Result<u64> {
        let statuses: Vec<i16> = if filter.include_delivered {
            vec![1, 2]
        } else {
            vec![2]
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let rows = tx
            .query(
                "WITH replayed AS (UPDATE outbox SET status = 0, attempts = 0, next_attempt_ms = $1, \
                 lease_owner = NULL, lease_until_ms = 0, done_at_ms = NULL \
                 WHERE status = ANY($2) AND ($3::text IS NULL OR tenant = $3) \
                 AND ($4::text IS NULL OR event_id = $4) RETURNING tenant) \
                 SELECT tenant, count(*) FROM replayed GROUP BY tenant",
                &[&now_ms, &statuses, &filter.tenant, &filter.event_id],
            )
            .await
            .map_err(db_err)?;
        let mut total = 0u64;
        for row in &rows {
            let (tenant, n): (String, i64) = (row.get(0), row.get(1));
            tx.execute(
                "INSERT INTO tenant_counters (tenant, pending) VALUES ($1, $2) \
                 ON CONFLICT (tenant) DO UPDATE SET pending = tenant_counters.pending + $2",
                &[&tenant, &n],
            )
            .await
            .map_err(db_err)?;
            total += n.max(0) as u64;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(total)
    }

    /// [`crate::store::Backend::queue_summary`].
    pub async fn queue_summary(&self) -> crate::store::Result<Vec<crate::store::QueueSummary>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT o.tenant, count(*) FILTER (WHERE o.status = 0), \
                 count(*) FILTER (WHERE o.status = 2), \
                 min(o.created_at_ms) FILTER (WHERE o.status = 0), \
                 min(o.next_attempt_ms) FILTER (WHERE o.status = 0), \
                 (SELECT e.last_error FROM outbox e WHERE e.tenant = o.tenant \
                  AND e.status IN (0, 2) AND e.last_error IS NOT NULL ORDER BY e.id DESC LIMIT 1) \
                 FROM outbox o WHERE o.status IN (0, 2) GROUP BY o.tenant ORDER BY o.tenant",
                &[],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| crate::store::QueueSummary {
                tenant: r.get(0),
                pending: r.get::<_, i64>(1).max(0) as u64,
                dead: r.get::<_, i64>(2).max(0) as u64,
                oldest_pending_ms: r.get(3),
                next_attempt_ms: r.get(4),
                last_error: r.get(5),
            })
            .collect())
    }

    /// [`crate::store::Backend::list_events`].
    pub async fn list_events(
        &self,
        query: crate::store::EventQuery,
    ) -> crate::store::Result<Vec<crate::store::EventListing>> {
        let status = query.status.code() as i16;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, event_id, tenant, event_type, call_id, status, attempts, \
                 next_attempt_ms, last_error, created_at_ms FROM outbox \
                 WHERE status = $1 AND ($2::text IS NULL OR tenant = $2) \
                 AND ($3::text IS NULL OR event_type = $3) AND ($4::text IS NULL OR event_id = $4) \
                 AND id > $5 ORDER BY id LIMIT $6",
                &[
                    &status,
                    &query.tenant,
                    &query.event_type,
                    &query.event_id,
                    &query.after_id.unwrap_or(0),
                    &(query.limit as i64),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| crate::store::EventListing {
                id: r.get(0),
                event_id: r.get(1),
                tenant: r.get(2),
                event_type: r.get(3),
                call_id: r.get(4),
                status: crate::store::EventStatus::from_code(i64::from(r.get::<_, i16>(5))),
                attempts: r.get::<_, i32>(6).max(0) as u32,
                next_attempt_ms: r.get(7),
                last_error: r.get(8),
                created_at_ms: r.get(9),
            })
            .collect())
    }

    /// [`crate::store::Backend::retry_now`]: not-yet-due, unclaimed pending events due now (by the
    /// caller's clock, as `next_attempt_ms` is written).
    pub async fn retry_now(&self, tenants: Vec<String>, now_ms: i64) -> crate::store::Result<u64> {
        let all = tenants.is_empty();
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE outbox SET next_attempt_ms = $1 WHERE status = 0 \
                     AND next_attempt_ms > $1 AND lease_until_ms <= {DB_NOW_MS} \
                     AND ($2 OR tenant = ANY($3))"
                ),
                &[&now_ms, &all, &tenants],
            )
            .await
            .map_err(db_err)?;
        Ok(n)
    }

    /// [`crate::store::Backend::set_endpoint_disabled`].
    pub async fn set_endpoint_disabled(
        &self,
        tenant: String,
        disabled: Option<(i64, String)>,
    ) -> crate::store::Result<()> {
        let client = self.client().await?;
        match &disabled {
            Some((at, reason)) => client
                .execute(
                    "INSERT INTO endpoints (tenant, disabled_at_ms, reason) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant) DO UPDATE SET disabled_at_ms = $2, reason = $3",
                    &[&tenant, at, reason],
                )
                .await
                .map_err(db_err)?,
            None => client
                .execute("DELETE FROM endpoints WHERE tenant = $1", &[&tenant])
                .await
                .map_err(db_err)?,
        };
        Ok(())
    }

    /// [`crate::store::Backend::disabled_endpoints`].
    pub async fn disabled_endpoints(&self) -> crate::store::Result<Vec<(String, String)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT tenant, reason FROM endpoints ORDER BY tenant", &[])
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// [`crate::store::Backend::purge`]: expired dedupe answers, ended calls past retention, their
    /// (or long-lapsed) aliases, and delivered events past retention.
    pub async fn purge(
        &self,
        now_ms: i64,
        call_retention_ms: i64,
        delivered_retention_ms: i64,
    ) -> crate::store::Result<u64> {
        let client = self.client().await?;
        let mut n = 0;
        for (sql, at) in [
            ("DELETE FROM dedup WHERE expires_at_ms <= $1", now_ms),
            (
                "DELETE FROM calls WHERE state IS NULL AND updated_at_ms <= $1",
                now_ms - call_retention_ms,
            ),
            (
                "DELETE FROM aliases WHERE (until_ms IS NOT NULL AND until_ms <= $1) \
                 OR NOT EXISTS (SELECT 1 FROM calls WHERE calls.tenant = aliases.tenant \
                 AND calls.vendor = aliases.owner_kind AND calls.vendor_call_id = aliases.owner_id)",
                now_ms - 24 * 3600 * 1000,
            ),
            (
                "DELETE FROM outbox WHERE status = 1 AND done_at_ms <= $1",
                now_ms - delivered_retention_ms,
            ),
            (
                "DELETE FROM breakers WHERE open_until_ms <= $1",
                now_ms - crate::store::STALE_BREAKER_MS,
            ),
        ] {
            n += client.execute(sql, &[&at]).await.map_err(db_err)?;
        }
        Ok(n)
    }
}
