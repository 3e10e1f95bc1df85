//! Deliveries and timers leased to a process: claims, outcomes and releases.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::uow::{bump_pending, separate_payload};
use super::*;

/// Outbox statuses (0 is pending).
const DELIVERED: i64 = 1;

const DEAD: i64 = 2;

impl SqliteStore {
    /// Leases up to `limit` due deliveries to `owner`, skipping the given tenants.
    pub async fn claim_deliveries(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        skip_tenants: Vec<String>,
    ) -> Result<Vec<Delivery>> {
        self.write(false, move |c| {
            let mut sql = String::from(
                "SELECT id, event_id, tenant, event_type, payload, attempts, created_at_ms, \
                 call_id FROM outbox WHERE status = 0 AND next_attempt_ms <= ?1 \
                 AND lease_until_ms <= ?1",
            );
            for (i, _) in skip_tenants.iter().enumerate() {
                sql.push_str(&format!(" AND tenant <> ?{}", i + 3));
            }
            sql.push_str(" ORDER BY next_attempt_ms, id LIMIT ?2");
            let mut stmt = c.prepare_cached(&sql)?;
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![&now_ms, &limit];
            for t in &skip_tenants {
                values.push(t);
            }
            let mut rows = stmt
                .query_map(values.as_slice(), |r| {
                    Ok(Delivery {
                        id: r.get(0)?,
                        event_id: r.get(1)?,
                        tenant: r.get(2)?,
                        event_type: r.get(3)?,
                        payload: r.get::<_, Vec<u8>>(4)?.into(),
                        attempts: r.get(5)?,
                        created_at_ms: r.get(6)?,
                        call_id: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for row in rows.iter_mut().filter(|r| r.payload.is_empty()) {
                if let Some(payload) = separate_payload(c, row.id)? {
                    row.payload = payload;
                }
            }
            let mut lease = c.prepare_cached(
                "UPDATE outbox SET lease_owner = ?1, lease_until_ms = ?2 WHERE id = ?3",
            )?;
            for row in &rows {
                lease.execute(params![owner, now_ms + lease_ms, row.id])?;
            }
            Ok(rows)
        })
        .await
    }

    /// Records what happened to claimed deliveries (only rows still leased to `owner`).
    pub async fn finish_deliveries(
        &self,
        owner: String,
        updates: Vec<DeliveryUpdate>,
    ) -> Result<()> {
        self.write(true, move |c| {
            for update in &updates {
                match update {
                    DeliveryUpdate::Delivered { id, at_ms } => {
                        let tenant = settle(c, *id, &owner, DELIVERED, None, Some(*at_ms))?;
                        if let Some(tenant) = tenant {
                            bump_pending(c, &tenant, -1)?;
                        }
                    }
                    DeliveryUpdate::Dead { id, error } => {
                        let tenant = settle(c, *id, &owner, DEAD, Some(error), None)?;
                        if let Some(tenant) = tenant {
                            bump_pending(c, &tenant, -1)?;
                        }
                    }
                    DeliveryUpdate::Retry { id, next_ms, error } => {
                        c.prepare_cached(
                            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?1, \
                             last_error = ?2, lease_owner = NULL, lease_until_ms = 0 \
                             WHERE id = ?3 AND lease_owner = ?4 AND status = 0",
                        )?
                        .execute(params![next_ms, error, id, owner])?;
                    }
                    DeliveryUpdate::Release { id, next_ms } => {
                        c.prepare_cached(
                            "UPDATE outbox SET next_attempt_ms = ?1, lease_owner = NULL, \
                             lease_until_ms = 0 WHERE id = ?2 AND lease_owner = ?3 AND status = 0",
                        )?
                        .execute(params![next_ms, id, owner])?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Leases up to `limit` due timers to `owner`.
    pub async fn claim_timers(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<TimerRow>> {
        self.write(false, move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT key, kind, tenant, due_ms, payload FROM timers \
                     WHERE due_ms <= ?1 AND lease_until_ms <= ?1 ORDER BY due_ms LIMIT ?2",
                )?
                .query_map(params![now_ms, limit], |r| {
                    let payload: String = r.get(4)?;
                    Ok(TimerRow {
                        key: r.get(0)?,
                        kind: r.get(1)?,
                        tenant: r.get(2)?,
                        due_ms: r.get(3)?,
                        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut lease = c.prepare_cached(
                "UPDATE timers SET lease_owner = ?1, lease_until_ms = ?2 WHERE key = ?3",
            )?;
            for row in &rows {
                lease.execute(params![owner, now_ms + lease_ms, row.key])?;
            }
            Ok(rows)
        })
        .await
    }

    /// Gives a leased timer back without running it (it was rescheduled meanwhile).
    pub async fn release_timer(&self, key: String, owner: String) -> Result<()> {
        self.write(false, move |c| {
            c.execute(
                "UPDATE timers SET lease_owner = NULL, lease_until_ms = 0 \
                 WHERE key = ?1 AND lease_owner = ?2",
                params![key, owner],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes a timer that ran, unless it was set again (which clears its lease) meanwhile.
    pub async fn finish_timer(&self, key: String, owner: String) -> Result<()> {
        self.write(false, move |c| {
            c.prepare_cached("DELETE FROM timers WHERE key = ?1 AND lease_owner = ?2")?
                .execute(params![key, owner])?;
            Ok(())
        })
        .await
    }
}

fn settle(
    c: &Connection,
    id: i64,
    owner: &str,
    status: i64,
    error: Option<&String>,
    at_ms: Option<i64>,
) -> Result<Option<String>> {
    let tenant = c
        .prepare_cached(
            "UPDATE outbox SET status = ?1, attempts = attempts + 1, last_error = COALESCE(?2, last_error), \
             done_at_ms = ?3, lease_owner = NULL, lease_until_ms = 0 \
             WHERE id = ?4 AND lease_owner = ?5 AND status = 0 RETURNING tenant",
        )?
        .query_row(params![status, error, at_ms, id, owner], |r| r.get(0))
        .optional()?;
    Ok(tenant)
}
