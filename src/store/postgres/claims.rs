//! Deliveries and timers claimed by one instance: taken with `FOR UPDATE SKIP LOCKED` under
//! a lease timed by the database's clock, then finished or released.

use super::{db_err, PgStore, DB_NOW_MS};

impl PgStore {
    /// [`crate::store::Backend::claim_deliveries`]: due rows (`next_attempt_ms <= now_ms`) whose
    /// lease lapsed by the database's clock, taken with `FOR UPDATE SKIP LOCKED` so
    /// instances claiming at once get disjoint rows, leased until the database's
    /// now + `lease_ms`.
    pub async fn claim_deliveries(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        skip_tenants: Vec<String>,
    ) -> crate::store::Result<Vec<crate::store::Delivery>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "WITH due AS (SELECT id FROM outbox WHERE status = 0 AND next_attempt_ms <= $1 \
                     AND lease_until_ms <= {DB_NOW_MS} AND NOT (tenant = ANY($2)) \
                     ORDER BY next_attempt_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     UPDATE outbox o SET lease_owner = $4, lease_until_ms = {DB_NOW_MS} + $5 \
                     FROM due WHERE o.id = due.id RETURNING o.id, o.event_id, o.tenant, \
                     o.event_type, o.payload, o.attempts, o.created_at_ms, o.next_attempt_ms, o.call_id"
                ),
                &[
                    &now_ms,
                    &skip_tenants,
                    &(limit as i64),
                    &owner,
                    &lease_ms.max(1),
                ],
            )
            .await
            .map_err(db_err)?;
        let mut claimed: Vec<(i64, crate::store::Delivery)> = rows
            .iter()
            .map(|r| {
                (
                    r.get(7),
                    crate::store::Delivery {
                        id: r.get(0),
                        event_id: r.get(1),
                        tenant: r.get(2),
                        event_type: r.get(3),
                        payload: r.get::<_, Vec<u8>>(4).into(),
                        attempts: r.get::<_, i32>(5).max(0) as u32,
                        created_at_ms: r.get(6),
                        call_id: r.get(8),
                    },
                )
            })
            .collect();
        claimed.sort_by_key(|(next, d)| (*next, d.id));
        Ok(claimed.into_iter().map(|(_, d)| d).collect())
    }

    /// [`crate::store::Backend::finish_deliveries`], in one transaction; rows no longer leased to
    /// `owner` are left alone.
    pub async fn finish_deliveries(
        &self,
        owner: String,
        updates: Vec<crate::store::DeliveryUpdate>,
    ) -> crate::store::Result<()> {
        use crate::store::DeliveryUpdate;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        for update in &updates {
            let settled = match update {
                DeliveryUpdate::Delivered { id, at_ms } => Some((*id, 1i16, None, Some(*at_ms))),
                DeliveryUpdate::Dead { id, error } => Some((*id, 2i16, Some(error.clone()), None)),
                DeliveryUpdate::Retry { id, next_ms, error } => {
                    tx.execute(
                        "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = $1, \
                         last_error = $2, lease_owner = NULL, lease_until_ms = 0 \
                         WHERE id = $3 AND lease_owner = $4 AND status = 0",
                        &[next_ms, error, id, &owner],
                    )
                    .await
                    .map_err(db_err)?;
                    None
                }
                DeliveryUpdate::Release { id, next_ms } => {
                    tx.execute(
                        "UPDATE outbox SET next_attempt_ms = $1, lease_owner = NULL, \
                         lease_until_ms = 0 WHERE id = $2 AND lease_owner = $3 AND status = 0",
                        &[next_ms, id, &owner],
                    )
                    .await
                    .map_err(db_err)?;
                    None
                }
            };
            let Some((id, status, error, at_ms)) = settled else {
                continue;
            };
            let tenant = tx
                .query_opt(
                    "UPDATE outbox SET status = $1, attempts = attempts + 1, \
                     last_error = COALESCE($2, last_error), done_at_ms = $3, lease_owner = NULL, \
                     lease_until_ms = 0 WHERE id = $4 AND lease_owner = $5 AND status = 0 \
                     RETURNING tenant",
                    &[&status, &error, &at_ms, &id, &owner],
                )
                .await
                .map_err(db_err)?;
            if let Some(row) = tenant {
                let tenant: String = row.get(0);
                tx.execute(
                    "INSERT INTO tenant_counters (tenant, pending) VALUES ($1, 0) \
                     ON CONFLICT (tenant) DO UPDATE SET pending = GREATEST(tenant_counters.pending - 1, 0)",
                    &[&tenant],
                )
                .await
                .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)
    }
}

impl PgStore {
    /// [`crate::store::Backend::claim_timers`]: due timers (`due_ms <= now_ms`) whose lease lapsed
    /// by the database's clock, oldest first, taken with `FOR UPDATE SKIP LOCKED`.
    pub async fn claim_timers(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> crate::store::Result<Vec<crate::store::TimerRow>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "WITH due AS (SELECT key FROM timers WHERE due_ms <= $1 \
                     AND lease_until_ms <= {DB_NOW_MS} ORDER BY due_ms, key LIMIT $2 \
                     FOR UPDATE SKIP LOCKED) \
                     UPDATE timers t SET lease_owner = $3, lease_until_ms = {DB_NOW_MS} + $4 \
                     FROM due WHERE t.key = due.key \
                     RETURNING t.key, t.kind, t.tenant, t.due_ms, t.payload"
                ),
                &[&now_ms, &(limit as i64), &owner, &lease_ms.max(1)],
            )
            .await
            .map_err(db_err)?;
        let mut timers: Vec<crate::store::TimerRow> = rows
            .iter()
            .map(|r| crate::store::TimerRow {
                key: r.get(0),
                kind: r.get(1),
                tenant: r.get(2),
                due_ms: r.get(3),
                payload: r.get(4),
            })
            .collect();
        timers.sort_by(|a, b| (a.due_ms, &a.key).cmp(&(b.due_ms, &b.key)));
        Ok(timers)
    }

    /// [`crate::store::Backend::release_timer`]: back to the queue without running it.
    pub async fn release_timer(&self, key: String, owner: String) -> crate::store::Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE timers SET lease_owner = NULL, lease_until_ms = 0 \
                 WHERE key = $1 AND lease_owner = $2",
                &[&key, &owner],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// [`crate::store::Backend::finish_timer`]: removes a timer that ran, unless it was set again
    /// (which clears its lease) since it was claimed.
    pub async fn finish_timer(&self, key: String, owner: String) -> crate::store::Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM timers WHERE key = $1 AND lease_owner = $2",
                &[&key, &owner],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
