//! Reads of calls and entities: the point read on the decision path, a call by its id, an
//! alias's owner, the live entities of a kind.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};

use super::*;

impl SqliteStore {
    /// Checks the store answers (readiness).
    pub async fn ping(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Reads one call by its key. A primary-key lookup in WAL mode never waits for the
    /// writer and takes microseconds, so it runs on the calling thread with a connection
    /// kept per thread, sparing a hand-off to the blocking pool on the decision path.
    pub async fn load_call(&self, key: CallKey) -> Result<Option<CallRow>> {
        thread_local! {
            static POINT_READER: std::cell::RefCell<Option<(PathBuf, Connection)>> =
                const { std::cell::RefCell::new(None) };
        }
        POINT_READER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let stale = slot.as_ref().is_none_or(|(path, _)| path != &self.path);
            if stale {
                *slot = Some((self.path.clone(), open_reader(&self.path)?));
            }
            match slot.as_ref() {
                Some((_, conn)) => load_call(conn, &key),
                None => Err(StoreError::Closed),
            }
        })
    }

    pub async fn load_call_by_id(&self, call_id: String) -> Result<Option<(CallKey, CallRow)>> {
        self.read(move |c| {
            let key = c
                .query_row(
                    "SELECT tenant, vendor, vendor_call_id FROM calls WHERE call_id = ?1",
                    [&call_id],
                    |r| {
                        Ok(CallKey {
                            tenant: r.get(0)?,
                            vendor: r.get(1)?,
                            vendor_call_id: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            match key {
                Some(key) => Ok(load_call(c, &key)?.map(|row| (key, row))),
                None => Ok(None),
            }
        })
        .await
    }

    pub async fn find_alias(
        &self,
        tenant: String,
        namespace: String,
        value: String,
        now_ms: i64,
    ) -> Result<Option<(String, String)>> {
        self.read(move |c| {
            let owner = c
                .prepare_cached(
                    "SELECT owner_kind, owner_id FROM aliases WHERE tenant = ?1 AND namespace = ?2 \
                     AND value = ?3 AND (until_ms IS NULL OR until_ms > ?4)",
                )?
                .query_row(params![tenant, namespace, value, now_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(owner)
        })
        .await
    }

    pub async fn list_live(
        &self,
        tenant: String,
        kind: String,
        limit: usize,
    ) -> Result<Vec<(CallKey, CallRow)>> {
        self.read(move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT vendor_call_id, call_id, version, next_seq, status, attached, state, \
                     expires_at_ms FROM calls WHERE tenant = ?1 AND vendor = ?2 \
                     AND state IS NOT NULL ORDER BY updated_at_ms LIMIT ?3",
                )?
                .query_map(params![tenant, kind, limit as i64], |r| {
                    let key = CallKey {
                        tenant: tenant.clone(),
                        vendor: kind.clone(),
                        vendor_call_id: r.get(0)?,
                    };
                    Ok((key, call_row(r, 1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

fn load_call(c: &Connection, key: &CallKey) -> Result<Option<CallRow>> {
    let row = c
        .prepare_cached(
            "SELECT call_id, version, next_seq, status, attached, state, expires_at_ms FROM calls \
             WHERE tenant = ?1 AND vendor = ?2 AND vendor_call_id = ?3",
        )?
        .query_row(params![key.tenant, key.vendor, key.vendor_call_id], |r| {
            call_row(r, 0)
        })
        .optional()?;
    Ok(row)
}

/// A call row from `call_id, version, next_seq, status, attached, state, expires_at_ms`
/// starting at column `at`.
fn call_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<CallRow> {
    let attached: String = r.get(at + 4)?;
    let state: Option<String> = r.get(at + 5)?;
    Ok(CallRow {
        call_id: r.get(at)?,
        version: r.get(at + 1)?,
        next_seq: r.get(at + 2)?,
        status: r.get(at + 3)?,
        attached: serde_json::from_str(&attached).unwrap_or_default(),
        state: state.and_then(|s| serde_json::from_str(&s).ok()),
        expires_at_ms: r.get(at + 6)?,
    })
}
