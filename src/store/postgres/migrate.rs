//! The schema migrations kept in `migrations/postgres/`, applied at start under an advisory
//! lock, so several instances starting at once migrate once.

use deadpool_postgres::Pool;

use super::describe;
use crate::store::schema::{self, Migration, Plan, Stored};

/// The migrations shipped with this binary, in order. Each file's first line declares its
/// `compatible_from` (a unit test checks this list against the directory).
pub(super) const MIGRATION_FILES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "shared_breakers",
        include_str!("../../../migrations/postgres/0002_shared_breakers.sql"),
    ),
];

/// Advisory lock key held while migrating ("ivrgate" + 1).
const MIGRATION_LOCK: i64 = 0x6976_7267_6174_6501;

/// The migrations with their declared markers.
pub fn migrations() -> Vec<Migration> {
    MIGRATION_FILES
        .iter()
        .map(|&(version, name, sql)| Migration {
            version,
            name,
            // A file without the marker is caught by the tests; at run time it counts as
            // compatible only with itself.
            compatible_from: schema::declared_compatible_from(sql).unwrap_or(version),
            sql,
        })
        .collect()
}

/// The newest migration recorded in the database, `None` when it has none. An error when the
/// database holds ivrgate's tables without a version record (not migrated by ivrgate).
pub(super) async fn stored_version(
    client: &tokio_postgres::Client,
) -> Result<Option<Stored>, String> {
    let row = client
        .query_one(
            "SELECT to_regclass('ivrgate_schema') IS NOT NULL, to_regclass('outbox') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?;
    let (versioned, has_tables): (bool, bool) = (row.get(0), row.get(1));
    if !versioned {
        if has_tables {
            return Err(
                "the database has ivrgate's tables but no ivrgate_schema version table: it was \
                 not migrated by ivrgate; give ivrgate an empty database"
                    .to_owned(),
            );
        }
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT version, compatible_from FROM ivrgate_schema ORDER BY version DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(row.map(|r| Stored {
        version: r.get(0),
        compatible_from: r.get(1),
    }))
}

/// What the schema looked like and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version before (`None`: an empty database).
    pub from: Option<i64>,
    /// The version now.
    pub to: i64,
}

/// Brings the database's schema to this binary's version under an advisory lock (several
/// instances starting at once migrate once), or refuses a schema marked incompatible.
pub async fn migrate(pool: &Pool) -> Result<Migrated, String> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", describe(&e)))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| format!("cannot take the migration lock: {}", describe(&e)))?;
    let result = migrate_locked(&mut client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    if unlocked.is_err() {
        // A session lock dies with its connection: do not give this one back to the pool.
        let _ = deadpool_postgres::Object::take(client);
    }
    result
}

async fn migrate_locked(client: &mut tokio_postgres::Client) -> Result<Migrated, String> {
    // Read before the version table is created, so tables without it are found out.
    let stored = stored_version(client).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ivrgate_schema (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                compatible_from bigint NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(|e| format!("cannot create the schema version table: {}", describe(&e)))?;
    let from = stored.map(|s| s.version);
    match schema::plan("the PostgreSQL", stored, &migrations())? {
        Plan::Current => Ok(Migrated {
            from,
            to: from.unwrap_or(0),
        }),
        Plan::NewerCompatible(s) => Ok(Migrated {
            from,
            to: s.version,
        }),
        Plan::Apply(pending) => {
            let mut to = from.unwrap_or(0);
            for m in pending {
                let tx = client.transaction().await.map_err(|e| describe(&e))?;
                tx.batch_execute(m.sql).await.map_err(|e| {
                    format!(
                        "migration {:04}_{} failed: {}",
                        m.version,
                        m.name,
                        describe(&e)
                    )
                })?;
                tx.execute(
                    "INSERT INTO ivrgate_schema (version, name, compatible_from) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &m.compatible_from],
                )
                .await
                .map_err(|e| describe(&e))?;
                tx.commit().await.map_err(|e| {
                    format!(
                        "migration {:04}_{} failed: {}",
                        m.version,
                        m.name,
                        describe(&e)
                    )
                })?;
                tracing::info!(
                    version = m.version,
                    name = m.name,
                    "PostgreSQL schema migrated"
                );
                to = m.version;
            }
            Ok(Migrated { from, to })
        }
    }
}
