//! The instances sharing one database: this instance's heartbeat and leaving the registry,
//! connector leases, and taking over the claims of instances whose heartbeat lapsed.

use super::{db_err, PgStore, DB_NOW_MS};

impl PgStore {
    /// Marks this instance live now (database time); run every heartbeat interval.
    pub async fn heartbeat(&self) -> crate::store::Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO instances (owner_id) VALUES ($1) ON CONFLICT (owner_id) \
                 DO UPDATE SET heartbeat_at = now()",
                &[&self.owner_id],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Leaves the registry (a graceful stop), so this instance's leases are free at once.
    pub async fn deregister(&self) -> crate::store::Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM instances WHERE owner_id = $1",
                &[&self.owner_id],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

impl PgStore {
    /// [`crate::store::Backend::acquire_lease`] in one conditional upsert, timed by the database's
    /// clock: taken when never held, released, lapsed, held by `owner` itself, or held by an
    /// instance whose heartbeat lapsed (or that left the registry).
    pub async fn acquire_lease(
        &self,
        key: crate::store::LeaseKey,
        owner: String,
        lease_ms: i64,
    ) -> crate::store::Result<crate::store::LeaseAcquire> {
        let client = self.client().await?;
        let lapse_ms = self.lapse.as_millis() as i64;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO leases AS l (tenant, adapter, name, holder, epoch, until_ms) \
                     VALUES ($1, $2, $3, $4, 1, {DB_NOW_MS} + $5) \
                     ON CONFLICT (tenant, adapter, name) DO UPDATE SET holder = excluded.holder, \
                     epoch = l.epoch + 1, until_ms = excluded.until_ms \
                     WHERE l.holder IS NULL OR l.until_ms <= {DB_NOW_MS} OR l.holder = excluded.holder \
                     OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.owner_id = l.holder \
                     AND i.heartbeat_at > now() - make_interval(secs => $6::bigint / 1000.0)) \
                     RETURNING epoch, until_ms"
                ),
                &[
                    &key.tenant,
                    &key.adapter,
                    &key.name,
                    &owner,
                    &lease_ms.max(1),
                    &lapse_ms,
                ],
            )
            .await
            .map_err(db_err)?;
        if let Some(row) = row {
            return Ok(crate::store::LeaseAcquire::Acquired {
                epoch: row.get::<_, i64>(0).max(0) as u64,
                until_ms: row.get(1),
            });
        }
        drop(client);
        Ok(crate::store::LeaseAcquire::Held(
            self.read_lease(key)
                .await?
                .unwrap_or(crate::store::LeaseRow {
                    holder: None,
                    epoch: 0,
                    until_ms: 0,
                }),
        ))
    }

    /// [`crate::store::Backend::renew_lease`], timed by the database's clock.
    pub async fn renew_lease(
        &self,
        key: crate::store::LeaseKey,
        owner: String,
        epoch: u64,
        lease_ms: i64,
    ) -> crate::store::Result<Option<i64>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE leases SET until_ms = {DB_NOW_MS} + $1 WHERE tenant = $2 \
                     AND adapter = $3 AND name = $4 AND holder = $5 AND epoch = $6 \
                     AND until_ms > {DB_NOW_MS} RETURNING until_ms"
                ),
                &[
                    &lease_ms.max(1),
                    &key.tenant,
                    &key.adapter,
                    &key.name,
                    &owner,
                    &(epoch as i64),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// [`crate::store::Backend::release_lease`]: the epoch stays.
    pub async fn release_lease(
        &self,
        key: crate::store::LeaseKey,
        owner: String,
        epoch: u64,
    ) -> crate::store::Result<bool> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE leases SET holder = NULL, until_ms = 0 WHERE tenant = $1 \
                 AND adapter = $2 AND name = $3 AND holder = $4 AND epoch = $5",
                &[
                    &key.tenant,
                    &key.adapter,
                    &key.name,
                    &owner,
                    &(epoch as i64),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(changed == 1)
    }

    /// [`crate::store::Backend::read_lease`].
    pub async fn read_lease(
        &self,
        key: crate::store::LeaseKey,
    ) -> crate::store::Result<Option<crate::store::LeaseRow>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT holder, epoch, until_ms FROM leases \
                 WHERE tenant = $1 AND adapter = $2 AND name = $3",
                &[&key.tenant, &key.adapter, &key.name],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| crate::store::LeaseRow {
            holder: r.get(0),
            epoch: r.get::<_, i64>(1).max(0) as u64,
            until_ms: r.get(2),
        }))
    }
}

impl PgStore {
    /// [`crate::store::Backend::recover_dead_owners`]: owners holding claims or leases without a
    /// live heartbeat (lapsed, or gone from the registry) lose them at once, and lapsed
    /// instances leave the registry; returns the owners recovered.
    pub async fn recover_dead_owners(&self) -> crate::store::Result<Vec<String>> {
        let lapse_ms = self.lapse.as_millis() as i64;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let rows = tx
            .query(
                "WITH live AS (SELECT owner_id FROM instances \
                 WHERE heartbeat_at > now() - make_interval(secs => $1::bigint / 1000.0)), \
                 holders AS (SELECT lease_owner AS o FROM outbox WHERE lease_owner IS NOT NULL AND status = 0 \
                 UNION SELECT lease_owner FROM timers WHERE lease_owner IS NOT NULL \
                 UNION SELECT holder FROM leases WHERE holder IS NOT NULL \
                 UNION SELECT owner_id FROM instances) \
                 SELECT o FROM holders WHERE o <> $2 AND o NOT IN (SELECT owner_id FROM live) ORDER BY o",
                &[&lapse_ms, &self.owner_id],
            )
            .await
            .map_err(db_err)?;
        let dead: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if !dead.is_empty() {
            free_claims(&tx, &dead).await?;
            tx.execute("DELETE FROM instances WHERE owner_id = ANY($1)", &[&dead])
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        if !dead.is_empty() {
            self.changes.outbox.notify_one();
            self.changes.timers.notify_one();
        }
        Ok(dead)
    }
}

/// Makes every delivery and timer leased to one of `owners` due for claiming again, and
/// releases their connector leases.
pub(super) async fn free_claims(
    tx: &deadpool_postgres::Transaction<'_>,
    owners: &[String],
) -> crate::store::Result<()> {
    for sql in [
        "UPDATE outbox SET lease_owner = NULL, lease_until_ms = 0 \
         WHERE lease_owner = ANY($1) AND status = 0",
        "UPDATE timers SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ANY($1)",
        "UPDATE leases SET holder = NULL, until_ms = 0 WHERE holder = ANY($1)",
    ] {
        tx.execute(sql, &[&owners]).await.map_err(db_err)?;
    }
    Ok(())
}
