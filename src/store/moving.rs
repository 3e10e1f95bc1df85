//! `ivrgate move-store`: moves an embedded store (SQLite under `state_dir`) into the
//! configured PostgreSQL database, so an installation outgrowing one machine keeps its
//! pending deliveries, dead letters, delivered events (for replay), timers, live calls with
//! their sequence counters, dedupe answers, aliases, connector lease epochs and disabled
//! endpoints.
//!
//! It runs with every instance stopped (a live lock file under `state_dir/owners/` refuses
//! it), into a database that holds no ivrgate data yet, in one PostgreSQL transaction: it
//! either moves everything or nothing. Leases held in the embedded store are dropped (their
//! holders are stopped), so the first instance on PostgreSQL claims the work at once;
//! connector lease epochs are kept, so a fencing epoch is never handed out twice. The
//! embedded store is only read: it stays as it was, for a way back.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::postgres::{describe, migrate, PgSettings};

/// What was moved, table by table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    pub calls: u64,
    pub live_calls: u64,
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub timers: u64,
    pub dedup: u64,
    pub aliases: u64,
    pub leases: u64,
    pub endpoints: u64,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} call(s) ({} live), {} pending deliveries, {} delivered and {} dead event(s), \
             {} timer(s), {} dedupe answer(s), {} alias(es), {} connector lease(s), \
             {} disabled endpoint(s)",
            self.calls,
            self.live_calls,
            self.pending,
            self.delivered,
            self.dead,
            self.timers,
            self.dedup,
            self.aliases,
            self.leases,
            self.endpoints
        )
    }
}

/// Rows read from SQLite per round trip to the blocking pool.
const CHUNK: i64 = 2_000;

/// Moves the embedded store under `state_dir` into the database of `settings`.
pub async fn move_embedded_store(state_dir: &Path, settings: &PgSettings) -> Result<Moved, String> {
    let path = state_dir.join("ivrgate.db");
    if !path.exists() {
        return Err(format!("no embedded store at {}", path.display()));
    }
    let live = super::owner::live_owners(state_dir)
        .map_err(|e| format!("cannot check who uses {}: {e}", state_dir.display()))?;
    if !live.is_empty() {
        return Err(format!(
            "the embedded store at {} is in use by running ivrgate process(es) {}: stop every \
             instance first",
            path.display(),
            live.join(", ")
        ));
    }
    let sqlite = Sqlite::open(path.clone()).await?;
    let version = sqlite
        .run(|c| {
            c.query_row("SELECT max(version) FROM ivrgate_schema", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()
            .map(|v| v.flatten())
        })
        .await?;
    let known = super::schema::latest(super::sqlite::MIGRATIONS);
    if version.unwrap_or(1) > known {
        return Err(format!(
            "the embedded store's schema is at version {}, newer than this ivrgate's {known}: \
             move it with the ivrgate that wrote it",
            version.unwrap_or(1)
        ));
    }
    let pool = settings.pool()?;
    migrate(&pool).await?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", describe(&e)))?;
    let tx = client.transaction().await.map_err(|e| describe(&e))?;
    let existing: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM calls) + (SELECT count(*) FROM outbox) \
             + (SELECT count(*) FROM timers) + (SELECT count(*) FROM dedup)",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    if existing > 0 {
        return Err(format!(
            "the PostgreSQL database ({}) already holds ivrgate data: move into an empty one",
            settings.hosts()
        ));
    }
    let mut moved = Moved::default();
    copy_calls(&sqlite, &tx, &mut moved).await?;
    copy_outbox(&sqlite, &tx, &mut moved).await?;
    copy_rest(&sqlite, &tx, &mut moved).await?;
    // The pending counters follow from the outbox as moved.
    tx.batch_execute(
        "INSERT INTO tenant_counters (tenant, pending) \
         SELECT tenant, count(*) FROM outbox WHERE status = 0 GROUP BY tenant; \
         SELECT setval(pg_get_serial_sequence('outbox', 'id'), \
         GREATEST((SELECT max(id) FROM outbox), 1))",
    )
    .await
    .map_err(|e| describe(&e))?;
    tx.commit()
        .await
        .map_err(|e| format!("the move was not committed: {}", describe(&e)))?;
    Ok(moved)
}

/// The embedded store, opened read-only, read on the blocking pool.
struct Sqlite {
    conn: std::sync::Arc<std::sync::Mutex<Connection>>,
}

impl Sqlite {
    async fn open(path: PathBuf) -> Result<Sqlite, String> {
        let conn = tokio::task::spawn_blocking(move || {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(conn)
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(Sqlite {
            conn: std::sync::Arc::new(std::sync::Mutex::new(conn)),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn).map_err(|e| format!("reading the embedded store: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

fn pg(e: tokio_postgres::Error) -> String {
    format!("writing to PostgreSQL: {}", describe(&e))
}

/// One call row as read from SQLite: rowid, tenant, vendor, vendor_call_id, call_id,
/// status, version, next_seq, attached, state, expires_at_ms, updated_at_ms.
type CallRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<i64>,
    i64,
);

async fn copy_calls(sqlite: &Sqlite, tx: &Tx<'_>, moved: &mut Moved) -> Result<(), String> {
    copy_chunked::<CallRow>(
        sqlite,
        tx,
        "SELECT rowid, tenant, vendor, vendor_call_id, call_id, status, version, next_seq, \
         attached, state, expires_at_ms, updated_at_ms FROM calls \
         WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        |r| {
            let row = CallRow::try_from(r)?;
            Ok((row.0, row))
        },
        "INSERT INTO calls (tenant, vendor, vendor_call_id, call_id, version, next_seq, \
         status, attached, state, expires_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json, $9::text::json, $10, $11)",
        |c| {
            vec![
                &c.1, &c.2, &c.3, &c.4, &c.6, &c.7, &c.5, &c.8, &c.9, &c.10, &c.11,
            ]
        },
        |c| {
            moved.calls += 1;
            moved.live_calls += u64::from(c.9.is_some());
        },
    )
    .await
}

/// One outbox row as read from SQLite: id, event_id, tenant, call_id, seq, event_type,
/// payload, created_at_ms, status, attempts, next_attempt_ms, last_error, done_at_ms.
type OutboxRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    String,
    Vec<u8>,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<i64>,
);

async fn copy_outbox(sqlite: &Sqlite, tx: &Tx<'_>, moved: &mut Moved) -> Result<(), String> {
    copy_chunked::<(OutboxRow, i16, i32)>(
        sqlite,
        tx,
        // A large payload lives in `payloads` (the outbox column is then empty).
        "SELECT o.id, event_id, tenant, call_id, seq, event_type, \
         CASE WHEN length(o.payload) = 0 THEN coalesce(p.body, o.payload) ELSE o.payload END, \
         created_at_ms, status, attempts, next_attempt_ms, last_error, done_at_ms \
         FROM outbox o LEFT JOIN payloads p ON p.id = o.id \
         WHERE o.id > ?1 ORDER BY o.id LIMIT ?2",
        |r| {
            let row = OutboxRow::try_from(r)?;
            let status = i16::try_from(row.8).unwrap_or(0);
            let attempts = i32::try_from(row.9).unwrap_or(i32::MAX);
            Ok((row.0, (row, status, attempts)))
        },
        "INSERT INTO outbox (id, event_id, tenant, call_id, seq, event_type, payload, \
         created_at_ms, status, attempts, next_attempt_ms, last_error, done_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        |(o, status, attempts)| {
            vec![
                &o.0, &o.1, &o.2, &o.3, &o.4, &o.5, &o.6, &o.7, status, attempts, &o.10, &o.11,
                &o.12,
            ]
        },
        |(_, status, _)| match status {
            0 => moved.pending += 1,
            1 => moved.delivered += 1,
            _ => moved.dead += 1,
        },
    )
    .await
}

/// A SQL parameter of PostgreSQL.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Copies a large table [`CHUNK`] rows a round trip, in key order: `select` reads the rows
/// whose key is past `?1`, at most `?2` of them, and `read` makes one its key and a tuple;
/// each tuple is inserted into PostgreSQL by `insert` with `params` of it, then `count`ed.
async fn copy_chunked<T: Send + 'static>(
    sqlite: &Sqlite,
    tx: &Tx<'_>,
    select: &'static str,
    read: fn(&rusqlite::Row<'_>) -> rusqlite::Result<(i64, T)>,
    insert: &str,
    params: fn(&T) -> Vec<Param<'_>>,
    mut count: impl FnMut(&T),
) -> Result<(), String> {
    let insert = tx.prepare(insert).await.map_err(pg)?;
    let mut after = i64::MIN;
    loop {
        let rows: Vec<(i64, T)> = sqlite
            .run(move |c| {
                c.prepare(select)?
                    .query_map([after, CHUNK], read)?
                    .collect()
            })
            .await?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        after = *last;
        for (_, row) in &rows {
            tx.execute(&insert, &params(row)).await.map_err(pg)?;
            count(row);
        }
    }
}

/// Copies one small table whole: every row `select` reads from SQLite (`read` makes it a
/// tuple), inserted into PostgreSQL by `insert` with `params` of it. Returns the count.
async fn copy_table<T: Send + 'static>(
    sqlite: &Sqlite,
    tx: &Tx<'_>,
    select: &'static str,
    read: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    insert: &str,
    params: fn(&T) -> Vec<Param<'_>>,
) -> Result<u64, String> {
    let rows: Vec<T> = sqlite
        .run(move |c| c.prepare(select)?.query_map([], read)?.collect())
        .await?;
    for row in &rows {
        tx.execute(insert, &params(row)).await.map_err(pg)?;
    }
    Ok(rows.len() as u64)
}

/// A timer: key, kind, tenant, due time, payload.
type TimerRow = (String, String, String, i64, String);
/// A dedupe row: tenant, key hash, expiry, status, content type, body.
type DedupRow = (String, Vec<u8>, i64, i32, String, Vec<u8>);
/// An alias: tenant, namespace, value, owner kind, owner id, lapse.
type AliasRow = (String, String, String, String, String, Option<i64>);
/// A connector lease: tenant, adapter, name, epoch.
type LeaseRow = (String, String, String, i64);
/// A disabled endpoint: tenant, when, why.
type EndpointRow = (String, i64, String);

/// Timers, dedupe answers, aliases, connector leases and disabled endpoints: small tables,
/// read whole.
async fn copy_rest(sqlite: &Sqlite, tx: &Tx<'_>, moved: &mut Moved) -> Result<(), String> {
    moved.timers = copy_table::<TimerRow>(
        sqlite,
        tx,
        "SELECT key, kind, tenant, due_ms, payload FROM timers",
        |r| TimerRow::try_from(r),
        "INSERT INTO timers (key, kind, tenant, due_ms, payload) \
         VALUES ($1, $2, $3, $4, $5::text::json)",
        |t| vec![&t.0, &t.1, &t.2, &t.3, &t.4],
    )
    .await?;
    moved.dedup = copy_table::<DedupRow>(
        sqlite,
        tx,
        "SELECT tenant, key_hash, expires_at_ms, status, content_type, body FROM dedup",
        |r| {
            let status = i32::try_from(r.get::<_, i64>(3)?).unwrap_or(500);
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                status,
                r.get(4)?,
                r.get(5)?,
            ))
        },
        "INSERT INTO dedup (tenant, key_hash, expires_at_ms, status, content_type, body) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        |d| vec![&d.0, &d.1, &d.2, &d.3, &d.4, &d.5],
    )
    .await?;
    moved.aliases = copy_table::<AliasRow>(
        sqlite,
        tx,
        "SELECT tenant, namespace, value, owner_kind, owner_id, until_ms FROM aliases",
        |r| AliasRow::try_from(r),
        "INSERT INTO aliases (tenant, namespace, value, owner_kind, owner_id, until_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        |a| vec![&a.0, &a.1, &a.2, &a.3, &a.4, &a.5],
    )
    .await?;
    // Released (its holder is stopped), the epoch kept.
    moved.leases = copy_table::<LeaseRow>(
        sqlite,
        tx,
        "SELECT tenant, adapter, name, epoch FROM leases",
        |r| LeaseRow::try_from(r),
        "INSERT INTO leases (tenant, adapter, name, holder, epoch, until_ms) \
         VALUES ($1, $2, $3, NULL, $4, 0)",
        |l| vec![&l.0, &l.1, &l.2, &l.3],
    )
    .await?;
    moved.endpoints = copy_table::<EndpointRow>(
        sqlite,
        tx,
        "SELECT tenant, disabled_at_ms, reason FROM endpoints",
        |r| EndpointRow::try_from(r),
        "INSERT INTO endpoints (tenant, disabled_at_ms, reason) VALUES ($1, $2, $3)",
        |e| vec![&e.0, &e.1, &e.2],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ivrgate_adapter::StoredResponse;
    use serde_json::json;

    use super::*;
    use crate::store::postgres::testing::TestDb;
    use crate::store::postgres::PgStore;
    use crate::store::sqlite::SqliteStore;
    use crate::store::*;

    fn now() -> i64 {
        crate::clock::to_ms(std::time::SystemTime::now())
    }

    fn event(id: &str, bytes: usize) -> NewEvent {
        NewEvent {
            event_id: id.into(),
            event_type: "call.cdr".into(),
            payload: Arc::new(crate::envelope::EventPayload::raw(
                "call.cdr",
                json!({"pad": "x".repeat(bytes)}),
            )),
        }
    }

    fn key(id: &str) -> CallKey {
        CallKey {
            tenant: "acme".into(),
            vendor: "voicenter".into(),
            vendor_call_id: id.into(),
        }
    }

    fn write(id: &str, call_id: &str, version: Option<i64>, live: bool) -> CallWrite {
        CallWrite {
            key: key(id),
            call_id: call_id.into(),
            expected_version: version,
            status: if live { "active" } else { "ended" },
            attached: serde_json::from_str(r#"{"zeta": 1, "alpha": 2}"#).expect("map"),
            state: live.then(|| json!({"step": 3}).into()),
            expires_at_ms: live.then(|| now() + 3_600_000),
        }
    }

    fn answer() -> StoredResponse {
        StoredResponse {
            status: 200,
            content_type: "application/json".into(),
            body: br#"{"err":0}"#.to_vec(),
        }
    }

    /// Fills an embedded store with every kind of row, moves it, and reads each back through
    /// the PostgreSQL backend: the same calls, the same queue, the same answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_embedded_store_moves_whole_and_work_goes_on_where_it_stopped() {
        let Some(db) = TestDb::create("move").await else {
            return;
        };
        let dir = tempfile::tempdir().expect("tmp");
        let owner;
        {
            let store = SqliteStore::open(dir.path(), 16).expect("open");
            owner = store.owner_id().to_owned();
            let commit = |uow: UnitOfWork| store.commit(uow);
            let base = UnitOfWork {
                tenant: "acme".into(),
                now_ms: now(),
                ..UnitOfWork::default()
            };
            // A live call with three events (one over 64 KiB, kept apart by SQLite), a
            // resend answer, an alias and a timer.
            let first = commit(UnitOfWork {
                call: Some(write("v1", "call_1", None, true)),
                events: vec![event("e1", 10), event("e2", 70_000), event("e3", 10)],
                dedup: Some(DedupWrite {
                    key_hash: [9; 32],
                    response: answer(),
                    expires_at_ms: now() + 60_000,
                }),
                aliases: vec![AliasOp {
                    namespace: "agent".into(),
                    value: "42".into(),
                    owner_kind: "voicenter".into(),
                    owner_id: "v1".into(),
                    action: AliasAction::Claim { until_ms: None },
                }],
                timers: vec![TimerOp::Set {
                    key: "t1".into(),
                    kind: "test".into(),
                    tenant: "acme".into(),
                    due_ms: now() - 1,
                    payload: json!({"k": 1}),
                }],
                ..base.clone()
            })
            .await
            .expect("commit");
            assert!(matches!(first, CommitOutcome::Committed { .. }));
            // An ended call.
            commit(UnitOfWork {
                call: Some(write("v2", "call_2", None, false)),
                events: vec![event("e4", 10)],
                ..base.clone()
            })
            .await
            .expect("commit");
            // e1 delivered, e4 dead, e3 pending, e2 leased to a process that is gone (a
            // graceful close gives only its own claims back).
            let gone = "1-gone".to_owned();
            let claimed = store
                .claim_deliveries(gone.clone(), now() + 1, 600_000, 10, vec![])
                .await
                .expect("claim");
            let id = |e: &str| {
                claimed
                    .iter()
                    .find(|d| d.event_id == e)
                    .expect("claimed")
                    .id
            };
            store
                .finish_deliveries(
                    gone,
                    vec![
                        DeliveryUpdate::Delivered {
                            id: id("e1"),
                            at_ms: now(),
                        },
                        DeliveryUpdate::Dead {
                            id: id("e4"),
                            error: "HTTP 500".into(),
                        },
                        DeliveryUpdate::Release {
                            id: id("e3"),
                            next_ms: now(),
                        },
                    ],
                )
                .await
                .expect("finish");
            let lease = LeaseKey {
                tenant: "acme".into(),
                adapter: "ctips".into(),
                name: "session".into(),
            };
            for _ in 0..3 {
                store
                    .acquire_lease(lease.clone(), owner.clone(), now(), 60_000)
                    .await
                    .expect("lease");
            }
            store
                .set_endpoint_disabled("acme".into(), Some((5, "410 Gone".into())))
                .await
                .expect("disable");
            // A running process refuses the move.
            let refused = move_embedded_store(dir.path(), &db.settings)
                .await
                .expect_err("refused while in use");
            assert!(refused.contains("stop every instance"), "{refused}");
            store.close();
        }
        let moved = move_embedded_store(dir.path(), &db.settings)
            .await
            .expect("moved");
        assert_eq!(
            moved,
            Moved {
                calls: 2,
                live_calls: 1,
                pending: 2,
                delivered: 1,
                dead: 1,
                timers: 2, // t1 and the live call's expiry
                dedup: 1,
                aliases: 1,
                leases: 1,
                endpoints: 1,
            }
        );
        // Once is all: the database is no longer empty.
        let again = move_embedded_store(dir.path(), &db.settings)
            .await
            .expect_err("not twice");
        assert!(again.contains("already holds ivrgate data"), "{again}");

        let pg: Store = PgStore::start(&db.settings, "own_pg".into())
            .await
            .expect("open");
        let row = pg.load_call(key("v1")).await.expect("load").expect("row");
        assert_eq!((row.version, row.next_seq), (1, 4));
        assert_eq!(row.state, Some(json!({"step": 3})));
        assert_eq!(row.attached.keys().collect::<Vec<_>>(), ["zeta", "alpha"]);
        // The queue as it was, the leased one free at once, the large payload whole.
        let claimed = pg
            .claim_deliveries("own_pg".into(), now() + 1, 60_000, 10, vec![])
            .await
            .expect("claim");
        let mut ids: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["e2", "e3"]);
        let large = claimed.iter().find(|d| d.event_id == "e2").expect("e2");
        let payload: serde_json::Value = serde_json::from_slice(&large.payload).expect("json");
        assert_eq!(payload["data"]["pad"].as_str().map(str::len), Some(70_000));
        assert_eq!(payload["data"]["seq"], json!(2));
        let dead = pg.dead_letters(None, 10).await.expect("dead");
        assert_eq!(
            (
                dead.len(),
                dead[0].event_id.as_str(),
                dead[0].last_error.as_deref()
            ),
            (1, "e4", Some("HTTP 500"))
        );
        assert_eq!(
            pg.replay(
                ReplayFilter {
                    include_delivered: true,
                    ..ReplayFilter::default()
                },
                now()
            )
            .await
            .expect("replay"),
            2,
            "the delivered and the dead event replay"
        );
        let timers = pg
            .claim_timers("own_pg".into(), now(), 60_000, 10)
            .await
            .expect("timers");
        assert_eq!(timers.len(), 1);
        assert_eq!(timers[0].payload, json!({"k": 1}));
        assert_eq!(
            pg.find_alias("acme".into(), "agent".into(), "42".into(), now())
                .await
                .expect("alias"),
            Some(("voicenter".into(), "v1".into()))
        );
        assert_eq!(
            pg.disabled_endpoints().await.expect("endpoints"),
            vec![("acme".to_owned(), "410 Gone".to_owned())]
        );
        let lease = pg
            .read_lease(LeaseKey {
                tenant: "acme".into(),
                adapter: "ctips".into(),
                name: "session".into(),
            })
            .await
            .expect("lease")
            .expect("row");
        assert_eq!(
            (lease.holder, lease.epoch),
            (None, 3),
            "the epoch never goes back"
        );
        // The resend gets its answer; the call's sequence goes on; new events get new ids.
        let resend = pg
            .commit(UnitOfWork {
                tenant: "acme".into(),
                now_ms: now(),
                call: Some(write("v1", "call_1", Some(1), true)),
                events: vec![event("e5", 10)],
                dedup: Some(DedupWrite {
                    key_hash: [9; 32],
                    response: answer(),
                    expires_at_ms: now() + 60_000,
                }),
                ..UnitOfWork::default()
            })
            .await
            .expect("commit");
        assert_eq!(resend, CommitOutcome::Duplicate(answer()));
        let next = pg
            .commit(UnitOfWork {
                tenant: "acme".into(),
                now_ms: now(),
                call: Some(write("v1", "call_1", Some(1), true)),
                events: vec![event("e5", 10)],
                ..UnitOfWork::default()
            })
            .await
            .expect("commit");
        assert_eq!(
            next,
            CommitOutcome::Committed {
                seqs: vec![Some(4)]
            }
        );
        let depth = pg.outbox_depth().await.expect("depth");
        assert_eq!(depth[0].pending, 5, "e2, e3 claimed; e1, e4 replayed; e5");
        pg.shutdown().await;
        drop(pg);
        db.drop_db().await;
    }
}
