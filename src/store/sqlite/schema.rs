//! The embedded store's tables, their versions, and the migration run when a store is opened.

use rusqlite::{params, Connection, OptionalExtension};

use super::*;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS calls (
    tenant TEXT NOT NULL,
    vendor TEXT NOT NULL,
    vendor_call_id TEXT NOT NULL,
    call_id TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    attached TEXT NOT NULL,
    state TEXT,
    expires_at_ms INTEGER,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, vendor, vendor_call_id)
);
CREATE INDEX IF NOT EXISTS calls_updated ON calls (updated_at_ms) WHERE state IS NULL;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    call_id TEXT,
    seq INTEGER,
    event_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_ms);
CREATE TABLE IF NOT EXISTS payloads (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS outbox_payload_gone AFTER DELETE ON outbox BEGIN
    DELETE FROM payloads WHERE id = OLD.id;
END;
CREATE INDEX IF NOT EXISTS outbox_tenant ON outbox (tenant, status);
CREATE TABLE IF NOT EXISTS tenant_counters (
    tenant TEXT PRIMARY KEY,
    pending INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS timers (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    payload TEXT NOT NULL,
    lease_owner TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due_ms);
CREATE TABLE IF NOT EXISTS dedup (
    tenant TEXT NOT NULL,
    key_hash BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (tenant, key_hash)
);
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at_ms);
CREATE TABLE IF NOT EXISTS aliases (
    tenant TEXT NOT NULL,
    namespace TEXT NOT NULL,
    value TEXT NOT NULL,
    owner_kind TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    until_ms INTEGER,
    PRIMARY KEY (tenant, namespace, value)
);
CREATE INDEX IF NOT EXISTS aliases_owner ON aliases (tenant, owner_kind, owner_id);
CREATE TABLE IF NOT EXISTS leases (
    tenant TEXT NOT NULL,
    adapter TEXT NOT NULL,
    name TEXT NOT NULL,
    holder TEXT,
    epoch INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, adapter, name)
);
CREATE TABLE IF NOT EXISTS endpoints (
    tenant TEXT PRIMARY KEY,
    disabled_at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"#;

/// The embedded store's schema versions (see [`crate::store::schema`]). Version 1 is the schema
/// every store had before versions were recorded, so such a store is taken as version 1.
pub const MIGRATIONS: &[crate::store::schema::Migration] = &[
    crate::store::schema::Migration {
        version: 1,
        name: "init",
        compatible_from: 1,
        sql: SCHEMA,
    },
    // Expands only: a binary that knows version 1 never reads the new table.
    crate::store::schema::Migration {
        version: 2,
        name: "shared_breakers",
        compatible_from: 1,
        sql: SHARED_BREAKERS,
    },
];

/// Circuit breakers shared by the processes on this store: a row while some process has the
/// breaker open (`open_until_ms`, wall clock), replaced by a later trip, gone once the
/// endpoint answered again.
const SHARED_BREAKERS: &str = r#"
CREATE TABLE IF NOT EXISTS breakers (
    scope TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    open_until_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, endpoint)
);
"#;

/// Checks the store's schema version and applies this binary's migrations, in one
/// `BEGIN IMMEDIATE` transaction (processes opening the file at once migrate once); refuses a
/// store marked incompatible with this binary before touching it.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    use crate::store::schema::{plan, Plan, Stored};
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS ivrgate_schema (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                compatible_from INTEGER NOT NULL,
                applied_at_ms INTEGER NOT NULL
            )",
        )?;
        let stored = conn
            .query_row(
                "SELECT version, compatible_from FROM ivrgate_schema ORDER BY version DESC LIMIT 1",
                [],
                |r| {
                    Ok(Stored {
                        version: r.get(0)?,
                        compatible_from: r.get(1)?,
                    })
                },
            )
            .optional()?;
        match plan("the embedded store's", stored, MIGRATIONS).map_err(StoreError::Backend)? {
            Plan::Current | Plan::NewerCompatible(_) => Ok(()),
            Plan::Apply(pending) => {
                for m in pending {
                    // Version 1 creates its tables only if missing: a store from before
                    // versions were recorded gets its record without change.
                    conn.execute_batch(m.sql)?;
                    conn.execute(
                        "INSERT INTO ivrgate_schema (version, name, compatible_from, applied_at_ms)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![
                            m.version,
                            m.name,
                            m.compatible_from,
                            crate::clock::to_ms(std::time::SystemTime::now())
                        ],
                    )?;
                }
                Ok(())
            }
        }
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}
