//! The admin API's queries and changes: queue depths and summaries, dead letters, replay and
//! retry, event listings, disabled endpoints, purge, a call's events.

use rusqlite::params;

use super::uow::bump_pending;
use super::*;

impl SqliteStore {
    pub async fn outbox_depth(&self) -> Result<Vec<OutboxDepth>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT tenant, SUM(status = 0), SUM(status = 2) FROM outbox \
                 WHERE status IN (0, 2) GROUP BY tenant ORDER BY tenant",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(OutboxDepth {
                        tenant: r.get(0)?,
                        pending: r.get::<_, i64>(1)? as u64,
                        dead: r.get::<_, i64>(2)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn dead_letters(
        &self,
        tenant: Option<String>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT event_id, tenant, event_type, attempts, last_error, created_at_ms \
                 FROM outbox WHERE status = 2 AND (?1 IS NULL OR tenant = ?1) ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![tenant, limit], |r| {
                    Ok(DeadLetter {
                        event_id: r.get(0)?,
                        tenant: r.get(1)?,
                        event_type: r.get(2)?,
                        attempts: r.get(3)?,
                        last_error: r.get(4)?,
                        created_at_ms: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Puts matching events back in the delivery queue (same `webhook-id`); returns how many.
    pub async fn replay(&self, filter: ReplayFilter, now_ms: i64) -> Result<u64> {
        self.write(true, move |c| {
            let statuses = if filter.include_delivered {
                "(1, 2)"
            } else {
                "(2)"
            };
            let tenants: Vec<String> = c
                .prepare(&format!(
                    "SELECT tenant FROM outbox WHERE status IN {statuses} \
                     AND (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR event_id = ?2)"
                ))?
                .query_map(params![filter.tenant, filter.event_id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            c.execute(
                &format!(
                    "UPDATE outbox SET status = 0, attempts = 0, next_attempt_ms = ?3, \
                     lease_owner = NULL, lease_until_ms = 0, done_at_ms = NULL \
                     WHERE status IN {statuses} AND (?1 IS NULL OR tenant = ?1) \
                     AND (?2 IS NULL OR event_id = ?2)"
                ),
                params![filter.tenant, filter.event_id, now_ms],
            )?;
            for tenant in &tenants {
                bump_pending(c, tenant, 1)?;
            }
            Ok(tenants.len() as u64)
        })
        .await
    }

    /// [`Backend::queue_summary`].
    pub async fn queue_summary(&self) -> Result<Vec<QueueSummary>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT o.tenant, SUM(o.status = 0), SUM(o.status = 2), \
                 MIN(CASE WHEN o.status = 0 THEN o.created_at_ms END), \
                 MIN(CASE WHEN o.status = 0 THEN o.next_attempt_ms END), \
                 (SELECT e.last_error FROM outbox e WHERE e.tenant = o.tenant \
                  AND e.status IN (0, 2) AND e.last_error IS NOT NULL ORDER BY e.id DESC LIMIT 1) \
                 FROM outbox o WHERE o.status IN (0, 2) GROUP BY o.tenant ORDER BY o.tenant",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(QueueSummary {
                        tenant: r.get(0)?,
                        pending: r.get::<_, i64>(1)?.max(0) as u64,
                        dead: r.get::<_, i64>(2)?.max(0) as u64,
                        oldest_pending_ms: r.get(3)?,
                        next_attempt_ms: r.get(4)?,
                        last_error: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// [`Backend::list_events`].
    pub async fn list_events(&self, query: EventQuery) -> Result<Vec<EventListing>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, event_id, tenant, event_type, call_id, status, attempts, \
                 next_attempt_ms, last_error, created_at_ms FROM outbox \
                 WHERE status = ?1 AND (?2 IS NULL OR tenant = ?2) \
                 AND (?3 IS NULL OR event_type = ?3) AND (?4 IS NULL OR event_id = ?4) \
                 AND id > ?5 ORDER BY id LIMIT ?6",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        query.status.code(),
                        query.tenant,
                        query.event_type,
                        query.event_id,
                        query.after_id.unwrap_or(0),
                        query.limit as i64
                    ],
                    |r| {
                        Ok(EventListing {
                            id: r.get(0)?,
                            event_id: r.get(1)?,
                            tenant: r.get(2)?,
                            event_type: r.get(3)?,
                            call_id: r.get(4)?,
                            status: EventStatus::from_code(r.get(5)?),
                            attempts: r.get(6)?,
                            next_attempt_ms: r.get(7)?,
                            last_error: r.get(8)?,
                            created_at_ms: r.get(9)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// [`Backend::retry_now`].
    pub async fn retry_now(&self, tenants: Vec<String>, now_ms: i64) -> Result<u64> {
        self.write(true, move |c| {
            let mut n = 0;
            let all = tenants.is_empty();
            let names: Vec<Option<&str>> = if all {
                vec![None]
            } else {
                tenants.iter().map(|t| Some(t.as_str())).collect()
            };
            for tenant in names {
                n += c.execute(
                    "UPDATE outbox SET next_attempt_ms = ?1 WHERE status = 0 \
                     AND next_attempt_ms > ?1 AND lease_until_ms <= ?1 \
                     AND (?2 IS NULL OR tenant = ?2)",
                    params![now_ms, tenant],
                )? as u64;
            }
            Ok(n)
        })
        .await
    }

    /// Marks a tenant's endpoint disabled (it answered 410) or enabled again.
    pub async fn set_endpoint_disabled(
        &self,
        tenant: String,
        disabled: Option<(i64, String)>,
    ) -> Result<()> {
        self.write(true, move |c| {
            match &disabled {
                Some((at, reason)) => c.execute(
                    "INSERT INTO endpoints (tenant, disabled_at_ms, reason) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (tenant) DO UPDATE SET disabled_at_ms = ?2, reason = ?3",
                    params![tenant, at, reason],
                )?,
                None => c.execute("DELETE FROM endpoints WHERE tenant = ?1", [&tenant])?,
            };
            Ok(())
        })
        .await
    }

    pub async fn disabled_endpoints(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let rows = c
                .prepare_cached("SELECT tenant, reason FROM endpoints ORDER BY tenant")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Drops expired resend answers, long-ended calls and old delivered events.
    pub async fn purge(
        &self,
        now_ms: i64,
        call_retention_ms: i64,
        delivered_retention_ms: i64,
    ) -> Result<u64> {
        self.write(false, move |c| {
            let mut n = c.execute("DELETE FROM dedup WHERE expires_at_ms <= ?1", [now_ms])?;
            n += c.execute(
                "DELETE FROM calls WHERE state IS NULL AND updated_at_ms <= ?1",
                [now_ms - call_retention_ms],
            )?;
            // Aliases go with their (purged) owner, or a day after they lapsed.
            n += c.execute(
                "DELETE FROM aliases WHERE (until_ms IS NOT NULL AND until_ms <= ?1) \
                 OR NOT EXISTS (SELECT 1 FROM calls WHERE calls.tenant = aliases.tenant \
                 AND calls.vendor = aliases.owner_kind AND calls.vendor_call_id = aliases.owner_id)",
                [now_ms - 24 * 3600 * 1000],
            )?;
            n += c.execute(
                "DELETE FROM outbox WHERE status = 1 AND done_at_ms <= ?1",
                [now_ms - delivered_retention_ms],
            )?;
            n += c.execute(
                "DELETE FROM breakers WHERE open_until_ms <= ?1",
                [now_ms - crate::store::STALE_BREAKER_MS],
            )?;
            Ok(n as u64)
        })
        .await
    }

    /// Events of one call in sequence order (for the admin API and tests).
    pub async fn call_events(&self, call_id: String) -> Result<Vec<(i64, String, i64)>> {
        self.read(move |c| {
            let rows = c
                .prepare(
                    "SELECT seq, event_type, status FROM outbox WHERE call_id = ?1 ORDER BY seq",
                )?
                .query_map([call_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}
