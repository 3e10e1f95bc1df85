//! What the instances on one database share beside the rows of work: the registry of live
//! instances as the cluster-wide limits read it, and the circuit breakers some instance
//! opened. Every time here is the database's clock.

use super::{db_err, PgStore, DB_NOW_MS};
use crate::store::{Result, SharedBreaker};

impl PgStore {
    /// [`crate::store::Backend::live_instances`]: owners whose heartbeat has not lapsed.
    pub async fn live_instances(&self) -> Result<Vec<String>> {
        let lapse_ms = self.lapse.as_millis() as i64;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT owner_id FROM instances \
                 WHERE heartbeat_at > now() - make_interval(secs => $1::bigint / 1000.0) \
                 ORDER BY owner_id",
                &[&lapse_ms],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// [`crate::store::Backend::trip_breaker`].
    pub async fn trip_breaker(&self, scope: String, endpoint: String, open_ms: i64) -> Result<()> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO breakers (scope, endpoint, open_until_ms) \
                     VALUES ($1, $2, {DB_NOW_MS} + $3) ON CONFLICT (scope, endpoint) \
                     DO UPDATE SET open_until_ms = EXCLUDED.open_until_ms"
                ),
                &[&scope, &endpoint, &open_ms],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// [`crate::store::Backend::close_breaker`].
    pub async fn close_breaker(&self, scope: String, endpoint: String) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM breakers WHERE scope = $1 AND endpoint = $2",
                &[&scope, &endpoint],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// [`crate::store::Backend::open_breakers`].
    pub async fn open_breakers(&self) -> Result<Vec<SharedBreaker>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT scope, endpoint, open_until_ms - {DB_NOW_MS} FROM breakers \
                     WHERE open_until_ms > {DB_NOW_MS} ORDER BY scope, endpoint"
                ),
                &[],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| SharedBreaker {
                scope: r.get(0),
                endpoint: r.get(1),
                left_ms: r.get(2),
            })
            .collect())
    }
}
