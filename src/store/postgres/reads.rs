//! Reads of calls, entities, aliases and events on the PostgreSQL store.

use super::{db_err, PgStore};

const CALL_COLUMNS: &str = "call_id, version, next_seq, status, attached, state, expires_at_ms";

fn call_row(r: &tokio_postgres::Row, at: usize) -> crate::store::CallRow {
    let attached: serde_json::Value = r.get(at + 4);
    crate::store::CallRow {
        call_id: r.get(at),
        version: r.get(at + 1),
        next_seq: r.get(at + 2),
        status: r.get(at + 3),
        attached: match attached {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        state: r.get(at + 5),
        expires_at_ms: r.get(at + 6),
    }
}

impl PgStore {
    /// [`crate::store::Backend::ping`].
    pub async fn ping(&self) -> crate::store::Result<()> {
        self.client()
            .await?
            .execute("SELECT 1", &[])
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// [`crate::store::Backend::load_call`].
    pub async fn load_call(
        &self,
        key: crate::store::CallKey,
    ) -> crate::store::Result<Option<crate::store::CallRow>> {
        // On the decision path: a statement prepared once per connection, one round trip.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {CALL_COLUMNS} FROM calls \
                 WHERE tenant = $1 AND vendor = $2 AND vendor_call_id = $3"
            ))
            .await
            .map_err(db_err)?;
        let row = client
            .query_opt(&stmt, &[&key.tenant, &key.vendor, &key.vendor_call_id])
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| call_row(&r, 0)))
    }

    /// [`crate::store::Backend::load_call_by_id`].
    pub async fn load_call_by_id(
        &self,
        call_id: String,
    ) -> crate::store::Result<Option<(crate::store::CallKey, crate::store::CallRow)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT tenant, vendor, vendor_call_id, {CALL_COLUMNS} FROM calls \
                     WHERE call_id = $1"
                ),
                &[&call_id],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| {
            (
                crate::store::CallKey {
                    tenant: r.get(0),
                    vendor: r.get(1),
                    vendor_call_id: r.get(2),
                },
                call_row(&r, 3),
            )
        }))
    }

    /// [`crate::store::Backend::list_live`]: live rows of one kind, least recently changed first.
    pub async fn list_live(
        &self,
        tenant: String,
        kind: String,
        limit: usize,
    ) -> crate::store::Result<Vec<(crate::store::CallKey, crate::store::CallRow)>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT vendor_call_id, {CALL_COLUMNS} FROM calls WHERE tenant = $1 \
                     AND vendor = $2 AND state IS NOT NULL ORDER BY updated_at_ms LIMIT $3"
                ),
                &[&tenant, &kind, &(limit as i64)],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    crate::store::CallKey {
                        tenant: tenant.clone(),
                        vendor: kind.clone(),
                        vendor_call_id: r.get(0),
                    },
                    call_row(r, 1),
                )
            })
            .collect())
    }

    /// [`crate::store::Backend::find_alias`]: the owner of an alias whose claim has not lapsed.
    pub async fn find_alias(
        &self,
        tenant: String,
        namespace: String,
        value: String,
        now_ms: i64,
    ) -> crate::store::Result<Option<(String, String)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT owner_kind, owner_id FROM aliases WHERE tenant = $1 AND namespace = $2 \
                 AND value = $3 AND (until_ms IS NULL OR until_ms > $4)",
                &[&tenant, &namespace, &value, &now_ms],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// [`crate::store::Backend::call_events`]: (seq, type, delivery status) in sequence order.
    pub async fn call_events(
        &self,
        call_id: String,
    ) -> crate::store::Result<Vec<(i64, String, i64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, event_type, status FROM outbox WHERE call_id = $1 ORDER BY seq",
                &[&call_id],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), i64::from(r.get::<_, i16>(2))))
            .collect())
    }
}
