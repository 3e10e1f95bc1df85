//! What the processes on one store file share: lease owners (and the claims of dead ones
//! freed), connector leases, the live instances, circuit breakers.

use rusqlite::{params, Connection, OptionalExtension};

use super::owner;
use super::*;

impl SqliteStore {
    /// Frees the claims of owners whose lock file under `owners/` is no longer locked (their
    /// process is gone), then removes their lock files; returns the owners recovered.
    pub async fn recover_dead_owners(&self) -> Result<Vec<String>> {
        let dir = self.dir.clone();
        let me = self.owner_id.clone();
        let dead = tokio::task::spawn_blocking(move || owner::dead_owners(&dir, &me))
            .await
            .map_err(|e| StoreError::Backend(format!("owner scan failed: {e}")))?
            .map_err(|e| StoreError::Backend(format!("cannot scan lease owners: {e}")))?;
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = dead.iter().map(|d| d.id.clone()).collect();
        let owners = ids.clone();
        self.write(true, move |c| free_claims(c, &owners)).await?;
        for d in dead {
            d.forget();
        }
        self.changes.timers.notify_one();
        Ok(ids)
    }

    /// Takes a connector lease (see [`Backend::acquire_lease`]). When another owner holds it,
    /// that owner's lock file is tested: a dead holder's lease is taken at once, by a second
    /// write conditional on the holder and epoch read (so a racing instance cannot lose it
    /// to a stale view).
    pub async fn acquire_lease(
        &self,
        key: LeaseKey,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<LeaseAcquire> {
        let (k, o) = (key.clone(), owner.clone());
        let first = self
            .write(false, move |c| {
                take_lease(c, &k, &o, now_ms, lease_ms, None)
            })
            .await?;
        let LeaseAcquire::Held(row) = &first else {
            return Ok(first);
        };
        let Some(holder) = row.holder.clone() else {
            return Ok(first);
        };
        let dir = self.dir.clone();
        let dead = tokio::task::spawn_blocking(move || owner::is_dead(&dir, &holder))
            .await
            .map_err(|e| StoreError::Backend(format!("owner check failed: {e}")))?
            .unwrap_or(false);
        if !dead {
            return Ok(first);
        }
        let seen = row.clone();
        self.write(false, move |c| {
            take_lease(c, &key, &owner, now_ms, lease_ms, Some(&seen))
        })
        .await
    }

    /// Extends a held lease (see [`Backend::renew_lease`]).
    pub async fn renew_lease(
        &self,
        key: LeaseKey,
        owner: String,
        epoch: u64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<i64>> {
        let until_ms = now_ms.saturating_add(lease_ms.max(1));
        self.write(false, move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE leases SET until_ms = ?1 WHERE tenant = ?2 AND adapter = ?3 \
                     AND name = ?4 AND holder = ?5 AND epoch = ?6 AND until_ms > ?7",
                )?
                .execute(params![
                    until_ms,
                    key.tenant,
                    key.adapter,
                    key.name,
                    owner,
                    epoch as i64,
                    now_ms
                ])?;
            Ok((changed == 1).then_some(until_ms))
        })
        .await
    }

    /// Gives a held lease up (see [`Backend::release_lease`]).
    pub async fn release_lease(&self, key: LeaseKey, owner: String, epoch: u64) -> Result<bool> {
        self.write(false, move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE leases SET holder = NULL, until_ms = 0 WHERE tenant = ?1 \
                     AND adapter = ?2 AND name = ?3 AND holder = ?4 AND epoch = ?5",
                )?
                .execute(params![
                    key.tenant,
                    key.adapter,
                    key.name,
                    owner,
                    epoch as i64
                ])?;
            Ok(changed == 1)
        })
        .await
    }

    /// [`Backend::live_instances`]: the owners whose lock file under `owners/` is held.
    pub async fn live_instances(&self) -> Result<Vec<String>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || owner::live_owners(&dir))
            .await
            .map_err(|e| StoreError::Backend(format!("owner scan failed: {e}")))?
            .map_err(|e| StoreError::Backend(format!("cannot scan lease owners: {e}")))
    }

    /// [`Backend::trip_breaker`]; the processes on one file share a host, so its clock.
    pub async fn trip_breaker(&self, scope: String, endpoint: String, open_ms: i64) -> Result<()> {
        let until = crate::clock::to_ms(std::time::SystemTime::now()).saturating_add(open_ms);
        self.write(false, move |c| {
            c.execute(
                "INSERT INTO breakers (scope, endpoint, open_until_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (scope, endpoint) DO UPDATE SET open_until_ms = ?3",
                params![scope, endpoint, until],
            )?;
            Ok(())
        })
        .await
    }

    /// [`Backend::close_breaker`].
    pub async fn close_breaker(&self, scope: String, endpoint: String) -> Result<()> {
        self.write(false, move |c| {
            c.execute(
                "DELETE FROM breakers WHERE scope = ?1 AND endpoint = ?2",
                params![scope, endpoint],
            )?;
            Ok(())
        })
        .await
    }

    /// [`Backend::open_breakers`].
    pub async fn open_breakers(&self) -> Result<Vec<SharedBreaker>> {
        let now = crate::clock::to_ms(std::time::SystemTime::now());
        self.read(move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT scope, endpoint, open_until_ms - ?1 FROM breakers \
                     WHERE open_until_ms > ?1 ORDER BY scope, endpoint",
                )?
                .query_map([now], |r| {
                    Ok(SharedBreaker {
                        scope: r.get(0)?,
                        endpoint: r.get(1)?,
                        left_ms: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

/// Makes every delivery and timer leased to one of `owners` due for claiming again, and
/// releases their connector leases.
pub(super) fn free_claims(c: &Connection, owners: &[String]) -> Result<()> {
    for owner in owners {
        c.prepare_cached(
            "UPDATE outbox SET lease_owner = NULL, lease_until_ms = 0 \
             WHERE lease_owner = ?1 AND status = 0",
        )?
        .execute([owner])?;
        c.prepare_cached(
            "UPDATE timers SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ?1",
        )?
        .execute([owner])?;
        c.prepare_cached("UPDATE leases SET holder = NULL, until_ms = 0 WHERE holder = ?1")?
            .execute([owner])?;
    }
    Ok(())
}

/// Takes the lease `key` for `owner` with the next epoch when it is free, lapsed, held by
/// `owner`, or (`dead`) still held by exactly that holder and epoch; otherwise says who holds it.
fn take_lease(
    c: &Connection,
    key: &LeaseKey,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
    dead: Option<&LeaseRow>,
) -> Result<LeaseAcquire> {
    let row = read_lease(c, key)?;
    let free = match &row {
        None => true,
        Some(row) => match &row.holder {
            None => true,
            Some(holder) => row.until_ms <= now_ms || holder == owner || dead == Some(row),
        },
    };
    if !free {
        return Ok(LeaseAcquire::Held(row.unwrap_or(LeaseRow {
            holder: None,
            epoch: 0,
            until_ms: 0,
        })));
    }
    let epoch = row.map(|r| r.epoch).unwrap_or(0) + 1;
    let until_ms = now_ms.saturating_add(lease_ms.max(1));
    c.prepare_cached(
        "INSERT INTO leases (tenant, adapter, name, holder, epoch, until_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, adapter, name) DO UPDATE SET \
         holder = excluded.holder, epoch = excluded.epoch, until_ms = excluded.until_ms",
    )?
    .execute(params![
        key.tenant,
        key.adapter,
        key.name,
        owner,
        epoch as i64,
        until_ms
    ])?;
    Ok(LeaseAcquire::Acquired { epoch, until_ms })
}

pub(super) fn read_lease(c: &Connection, key: &LeaseKey) -> Result<Option<LeaseRow>> {
    Ok(c.prepare_cached(
        "SELECT holder, epoch, until_ms FROM leases \
             WHERE tenant = ?1 AND adapter = ?2 AND name = ?3",
    )?
    .query_row(params![key.tenant, key.adapter, key.name], |r| {
        Ok(LeaseRow {
            holder: r.get(0)?,
            epoch: r.get::<_, i64>(1)?.max(0) as u64,
            until_ms: r.get(2)?,
        })
    })
    .optional()?)
}
