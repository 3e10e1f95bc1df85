//! Deliveries and timers claimed by one instance: taken with `FOR UPDATE SKIP LOCKED` under
//! a lease timed by the database's clock, then finished or released (deliveries' outcomes
//! are committed by the finisher, `finisher.rs`).

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
