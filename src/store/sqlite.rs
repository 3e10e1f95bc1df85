//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a commit is on
//! disk before it is acknowledged. All writes go through one writer thread per process that
//! commits whatever is queued in one transaction (group commit: one fsync for many units of
//! work, each under its own savepoint). Several processes may open the same file; SQLite's
//! write lock serializes their transactions and `PRAGMA data_version` tells each process that
//! another one committed.
//!
//! Free space is checked by the writer before each batch that would add rows (one `statvfs`
//! while it holds the write lock): a unit of work that could reach into the configured reserve
//! is refused ([`CommitOutcome::StorageFull`]) instead of attempted, while claims, outcomes
//! and purges (which keep or shrink the store) may use the reserve, so deliveries drain a
//! full disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivrgate_adapter::BoxFuture;
use ivrgate_adapter::StoredResponse;
use rusqlite::blob::ZeroBlob;
use rusqlite::{params, Connection, OptionalExtension, MAIN_DB};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::liveness::Beat;

use super::owner::{self, Owner};
use super::*;

const SCHEMA: &str = r#"
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

/// The embedded store's schema versions (see [`super::schema`]). Version 1 is the schema
/// every store had before versions were recorded, so such a store is taken as version 1.
pub const MIGRATIONS: &[super::schema::Migration] = &[
    super::schema::Migration {
        version: 1,
        name: "init",
        compatible_from: 1,
        sql: SCHEMA,
    },
    // Expands only: a binary that knows version 1 never reads the new table.
    super::schema::Migration {
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
fn migrate(conn: &Connection) -> Result<()> {
    use super::schema::{plan, Plan, Stored};
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

/// Outbox statuses (0 is pending).
const DELIVERED: i64 = 1;
const DEAD: i64 = 2;

type Job = Box<dyn WriteJob>;

/// A write run by the writer thread inside the shared transaction.
trait WriteJob: Send {
    fn apply(&mut self, conn: &Connection) -> Result<()>;
    /// Called after the transaction ended: `Ok` when it committed.
    fn complete(self: Box<Self>, committed: Result<()>);
    fn touches_outbox(&self) -> bool;
    /// Bytes this write may add to the store (write-ahead log and database file), when it
    /// adds rows; `None` when it keeps or shrinks the store.
    fn growth(&self) -> Option<u64>;
    /// Tells the write there is no room for what it adds: it then writes nothing and answers
    /// for itself (a unit of work still finds a legacy resend's stored answer).
    fn refuse(&mut self);
    /// Nobody waits on this write to acknowledge anything: it may wait briefly for company
    /// and be committed without an fsync of its own.
    fn lazy(&self) -> bool;
}

struct Op<T, F> {
    run: F,
    value: Option<Result<T>>,
    reply: Option<oneshot::Sender<Result<T>>>,
    outbox: bool,
    lazy: bool,
    /// Bytes it may add, and the flag its `run` reads to learn there is no room for them.
    grows: Option<(u64, Arc<AtomicBool>)>,
}

impl<T, F> WriteJob for Op<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T> + Send + 'static,
{
    fn apply(&mut self, conn: &Connection) -> Result<()> {
        let result = (self.run)(conn);
        let failed = result.as_ref().err().cloned();
        self.value = Some(result);
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn complete(self: Box<Self>, committed: Result<()>) {
        let Op {
            run, value, reply, ..
        } = *self;
        // What the write held (a unit of work's states and payloads) is let go before the
        // waiter wakes: it may then take back a state it shares without copying it.
        drop(run);
        let value = match (committed, value) {
            (Ok(()), Some(v)) => v,
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(StoreError::Backend("write was not applied".into())),
        };
        if let Some(reply) = reply {
            let _ = reply.send(value);
        }
    }

    fn touches_outbox(&self) -> bool {
        self.outbox
    }

    fn lazy(&self) -> bool {
        self.lazy
    }

    fn growth(&self) -> Option<u64> {
        self.grows.as_ref().map(|(bytes, _)| *bytes)
    }

    fn refuse(&mut self) {
        if let Some((_, no_room)) = &self.grows {
            no_room.store(true, Ordering::Relaxed);
        }
    }
}

/// Free bytes on the filesystem holding the store. The default reads `statvfs` of the state
/// directory; tests may give their own.
pub type FreeSpace = Arc<dyn Fn() -> std::io::Result<u64> + Send + Sync>;

/// Database pages a unit of work that adds rows may touch besides its payloads (table and
/// index leaves of the outbox, calls, timers, dedup and counters), for the space estimate.
const PAGES_PER_UNIT: u64 = 8;
/// The write-ahead log is cut back to this size when it restarts, so the space it holds
/// (counted against the reserve) stays small after a burst.
const WAL_SIZE_LIMIT: i64 = 8 * 1024 * 1024;

/// The writer's view of free space: the reserve to keep, how to read free space, and
/// whether the last growing write was refused (logged once per change).
struct Space {
    reserve: AtomicU64,
    probe: FreeSpace,
    wal: PathBuf,
    page_size: u64,
    full: AtomicBool,
    probe_failed: AtomicBool,
}

impl Space {
    /// Bytes that units of work adding rows may still use in this transaction without
    /// reaching into the reserve; `None` when unlimited (no reserve, or free space unknown).
    /// Counts pages free inside the database file as room, and the write-ahead log's size
    /// as already spoken for (its frames may still be copied into the database file).
    fn budget(&self, conn: &Connection) -> Option<u64> {
        let reserve = self.reserve.load(Ordering::Relaxed);
        if reserve == 0 {
            return None;
        }
        let free = match (self.probe)() {
            Ok(free) => {
                if self.probe_failed.swap(false, Ordering::Relaxed) {
                    tracing::info!("free space readable again");
                }
                free
            }
            Err(e) => {
                if !self.probe_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot read free space; writes are not held back");
                }
                return None;
            }
        };
        let free_pages = conn
            .query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
            .max(0) as u64;
        let wal = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        Some(
            free.saturating_add(free_pages * self.page_size)
                .saturating_sub(reserve.saturating_add(wal)),
        )
    }

    /// Records how a batch went: `refused` growing writes, `admitted` ones.
    fn note(&self, refused: usize, admitted: usize) {
        if refused > 0 {
            if !self.full.swap(true, Ordering::Relaxed) {
                let free = (self.probe)().unwrap_or(0);
                tracing::error!(
                    free_bytes = free,
                    reserve = self.reserve.load(Ordering::Relaxed),
                    "storage nearly full: new events are refused until space is freed"
                );
            }
        } else if admitted > 0 && self.full.swap(false, Ordering::Relaxed) {
            tracing::info!("storage has room again: new events are accepted");
        }
    }

    /// What a unit of work adding rows may add: its payloads and a few pages, twice (once in
    /// the write-ahead log, once when copied into the database file).
    fn estimate(&self, uow: &UnitOfWork) -> Option<u64> {
        let creates = |row: &CallWrite| row.expected_version.is_none();
        let grows = uow.event_count() > 0
            || uow.dedup.is_some()
            || uow.call.as_ref().is_some_and(creates)
            || uow.entities.iter().any(|e| creates(&e.row));
        if !grows {
            return None;
        }
        let mut bytes = 0;
        let mut row = |w: &CallWrite| {
            bytes += w.state.as_deref().map_or(0, json_len) + 256;
            bytes += w
                .attached
                .iter()
                .map(|(k, v)| k.len() as u64 + json_len(v))
                .sum::<u64>();
        };
        if let Some(call) = &uow.call {
            row(call);
        }
        for entity in &uow.entities {
            row(&entity.row);
        }
        let events = uow
            .events
            .iter()
            .chain(uow.entities.iter().flat_map(|e| &e.events));
        for event in events {
            bytes += json_len(event.payload.as_ref()) + 128;
        }
        if let Some(dedup) = &uow.dedup {
            bytes += dedup.response.body.len() as u64 + 128;
        }
        Some(2 * (bytes + PAGES_PER_UNIT * self.page_size))
    }
}

/// The length of a value's JSON text, without building it.
fn json_len(value: &impl serde::Serialize) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

pub struct SqliteStore {
    path: PathBuf,
    dir: PathBuf,
    owner_id: String,
    /// This process's liveness proof, held until [`SqliteStore::close`].
    owner: Mutex<Option<Owner>>,
    space: Arc<Space>,
    writer: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The writer's last turn (it turns at least every [`FOREIGN_POLL`] while it lives).
    writer_beat: Arc<Beat>,
    readers: Mutex<Vec<Connection>>,
    pub changes: Arc<ChangeFeed>,
    stop: Arc<AtomicBool>,
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(conn)
}

/// Reader connections kept for reuse (a new one costs a schema read).
const READER_POOL: usize = 64;
/// How long writes nobody waits on may wait for others to share their commit.
const LAZY_WINDOW: Duration = Duration::from_millis(2);
/// How often an idle writer looks for other processes' commits.
const FOREIGN_POLL: Duration = Duration::from_millis(25);

/// A connection for reads: the journal mode is the file's, set by the writer.
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/ivrgate.db`, registers this process as a lease owner
    /// under `dir/owners/` and starts the writer thread.
    pub fn open(dir: &Path, group_commit_max: usize) -> Result<Arc<SqliteStore>> {
        let probe_dir = dir.to_owned();
        let probe: FreeSpace = Arc::new(move || fs4::available_space(&probe_dir));
        SqliteStore::open_with_free_space(dir, group_commit_max, probe)
    }

    /// [`SqliteStore::open`] with free space read by `probe` (tests fake a small disk).
    pub fn open_with_free_space(
        dir: &Path,
        group_commit_max: usize,
        probe: FreeSpace,
    ) -> Result<Arc<SqliteStore>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("ivrgate.db");
        let conn = open(&path)?;
        migrate(&conn)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let space = Arc::new(Space {
            reserve: AtomicU64::new(0),
            probe,
            wal: dir.join("ivrgate.db-wal"),
            page_size: page_size.max(512) as u64,
            full: AtomicBool::new(false),
            probe_failed: AtomicBool::new(false),
        });
        let owner = Owner::register(dir, crate::ids::instance_id()).map_err(|e| {
            StoreError::Backend(format!(
                "cannot register a lease owner under {}: {e}",
                owner::owners_dir(dir).display()
            ))
        })?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let changes = Arc::new(ChangeFeed::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writer_changes = changes.clone();
        let max = group_commit_max.max(1);
        let writer_space = space.clone();
        let writer_beat = Arc::new(Beat::default());
        let beat = writer_beat.clone();
        let writer_thread = std::thread::Builder::new()
            .name("ivrgate-writer".into())
            .spawn(move || writer_loop(conn, rx, max, writer_changes, writer_space, &beat))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(Arc::new(SqliteStore {
            path,
            dir: dir.to_owned(),
            owner_id: owner.id.clone(),
            owner: Mutex::new(Some(owner)),
            space,
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(writer_thread)),
            writer_beat,
            readers: Mutex::new(Vec::new()),
            changes,
            stop,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting writes, lets the writer finish what is queued, and waits for it.
    pub fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Claims still held (a delivery that outlived the drain) are given back with the
        // last write, so they need not wait out the lease; then the owner retires.
        let owners = vec![self.owner_id.clone()];
        let _ = self.enqueue(true, false, None, move |c| free_claims(c, &owners));
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handle = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        let owner = self.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(owner) = owner {
            owner.retire();
        }
    }

    /// The lease owner this process writes into its claims.
    pub fn owner_id(&self) -> &str {
        &self.owner_id
    }

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

    /// Sets the free space to keep (see [`Backend::set_free_space_reserve`]).
    pub fn set_free_space_reserve(&self, bytes: u64) {
        self.space.reserve.store(bytes, Ordering::Relaxed);
    }

    async fn write<T, F>(&self, outbox: bool, run: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let answer = self.enqueue(outbox, false, None, run)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, run: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&path)?,
            };
            let result = run(&conn);
            Ok::<_, StoreError>((conn, result))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))??;
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READER_POOL {
            pool.push(conn);
        }
        result
    }

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

    /// Commits one unit of work (after fsync) or says why not.
    pub async fn commit(&self, uow: UnitOfWork) -> Result<CommitOutcome> {
        self.queue_uow(uow, false).await
    }

    /// Queues a unit of work right away (before the returned future is first polled), so
    /// that writes queued later by this process are committed after it. Nobody acknowledges
    /// it: it may wait up to [`LAZY_WINDOW`] for other writes and, in a batch of such writes
    /// only, is committed without an fsync of its own (the next durable commit's fsync
    /// covers it, as the WAL is synced in order).
    pub fn commit_queued(
        &self,
        uow: UnitOfWork,
    ) -> impl std::future::Future<Output = Result<CommitOutcome>> + Send + 'static {
        self.queue_uow(uow, true)
    }

    fn queue_uow(
        &self,
        uow: UnitOfWork,
        lazy: bool,
    ) -> impl std::future::Future<Output = Result<CommitOutcome>> + Send + 'static {
        let outbox = uow.event_count() > 0;
        let no_room = Arc::new(AtomicBool::new(false));
        let grows = self
            .space
            .estimate(&uow)
            .map(|bytes| (bytes, no_room.clone()));
        let queued = self.enqueue(outbox, lazy, grows, move |c| {
            if no_room.load(Ordering::Relaxed) {
                // Nothing is written; a legacy resend still gets its original answer.
                return Ok(match find_duplicate(c, &uow)? {
                    Some(found) => CommitOutcome::Duplicate(found),
                    None => CommitOutcome::StorageFull,
                });
            }
            apply_uow(c, &uow)
        });
        async move { queued?.await.map_err(|_| StoreError::Closed)? }
    }

    fn enqueue<T, F>(
        &self,
        outbox: bool,
        lazy: bool,
        grows: Option<(u64, Arc<AtomicBool>)>,
        run: F,
    ) -> Result<oneshot::Receiver<Result<T>>>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(Op {
            run,
            value: None,
            reply: Some(reply),
            outbox,
            lazy,
            grows,
        });
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let sender = guard.as_ref().ok_or(StoreError::Closed)?;
        sender.send(job).map_err(|_| StoreError::Closed)?;
        Ok(answer)
    }

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
                [now_ms - STALE_BREAKER_MS],
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

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
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

/// Makes every delivery and timer leased to one of `owners` due for claiming again, and
/// releases their connector leases.
fn free_claims(c: &Connection, owners: &[String]) -> Result<()> {
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

fn read_lease(c: &Connection, key: &LeaseKey) -> Result<Option<LeaseRow>> {
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

fn bump_pending(c: &Connection, tenant: &str, by: i64) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO tenant_counters (tenant, pending) VALUES (?1, MAX(?2, 0)) \
         ON CONFLICT (tenant) DO UPDATE SET pending = MAX(pending + ?2, 0)",
    )?
    .execute(params![tenant, by])?;
    Ok(())
}

/// Applies a unit of work. Every refusal but a version conflict or a taken alias of an
/// entity is decided before the first write; those two roll back what the unit wrote, so a
/// refusal leaves nothing behind. A backend error rolls the job's savepoint back.
fn apply_uow(c: &Connection, uow: &UnitOfWork) -> Result<CommitOutcome> {
    if uow.entities.is_empty() && uow.aliases.is_empty() {
        return apply_checked(c, uow);
    }
    c.prepare_cached("SAVEPOINT uow")?.execute([])?;
    let outcome = apply_checked(c, uow);
    match &outcome {
        Ok(CommitOutcome::Committed { .. }) => {
            c.prepare_cached("RELEASE uow")?.execute([])?;
        }
        _ => c.execute_batch("ROLLBACK TO uow; RELEASE uow")?,
    }
    outcome
}

/// The stored answer of an earlier request with the unit's resend key, if it has one.
fn find_duplicate(c: &Connection, uow: &UnitOfWork) -> Result<Option<StoredResponse>> {
    let Some(dedup) = &uow.dedup else {
        return Ok(None);
    };
    let found = c
        .prepare_cached(
            "SELECT status, content_type, body FROM dedup \
             WHERE tenant = ?1 AND key_hash = ?2 AND expires_at_ms > ?3",
        )?
        .query_row(params![uow.tenant, &dedup.key_hash[..], uow.now_ms], |r| {
            Ok(StoredResponse {
                status: r.get::<_, i64>(0)? as u16,
                content_type: r.get(1)?,
                body: r.get(2)?,
            })
        })
        .optional()?;
    Ok(found)
}

fn apply_checked(c: &Connection, uow: &UnitOfWork) -> Result<CommitOutcome> {
    if let Some(found) = find_duplicate(c, uow)? {
        return Ok(CommitOutcome::Duplicate(found));
    }
    let total_events = uow.event_count();
    if let (Some(quota), true) = (uow.outbox_quota, total_events > 0) {
        let pending: i64 = c
            .prepare_cached("SELECT pending FROM tenant_counters WHERE tenant = ?1")?
            .query_row([&uow.tenant], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if pending as u64 + total_events as u64 > quota {
            return Ok(CommitOutcome::QuotaExceeded);
        }
    }
    // The call first: its version check decides whether anything is written, and its
    // sequence counter is advanced by the number of events in the same statement.
    let mut seqs = Vec::with_capacity(uow.events.len());
    match &uow.call {
        Some(call) => {
            let Some(first_seq) = write_call(c, call, uow.events.len() as i64, uow.now_ms)? else {
                return Ok(CommitOutcome::Conflict);
            };
            seqs = insert_events(c, uow, Some((&call.call_id, first_seq)), &uow.events)?;
        }
        None => {
            insert_events(c, uow, None, &uow.events)?;
            seqs.resize(uow.events.len(), None);
        }
    }
    for entity in &uow.entities {
        let Some(first_seq) = write_call(c, &entity.row, entity.events.len() as i64, uow.now_ms)?
        else {
            return Ok(CommitOutcome::Conflict);
        };
        insert_events(
            c,
            uow,
            Some((&entity.row.call_id, first_seq)),
            &entity.events,
        )?;
    }
    for alias in &uow.aliases {
        if let Some(taken) = apply_alias(c, &uow.tenant, alias, uow.now_ms)? {
            return Ok(taken);
        }
    }
    if total_events > 0 {
        bump_pending(c, &uow.tenant, total_events as i64)?;
    }
    for timer in &uow.timers {
        match timer {
            TimerOp::Set {
                key,
                kind,
                tenant,
                due_ms,
                payload,
            } => set_timer(c, key, kind, tenant, *due_ms, payload)?,
            TimerOp::Delete { key } => {
                c.prepare_cached("DELETE FROM timers WHERE key = ?1")?
                    .execute([key])?;
            }
        }
    }
    if let Some(dedup) = &uow.dedup {
        c.prepare_cached(
            "INSERT INTO dedup (tenant, key_hash, expires_at_ms, status, content_type, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, key_hash) DO UPDATE SET \
             expires_at_ms = ?3, status = ?4, content_type = ?5, body = ?6",
        )?
        .execute(params![
            uow.tenant,
            &dedup.key_hash[..],
            dedup.expires_at_ms,
            dedup.response.status,
            dedup.response.content_type,
            dedup.response.body
        ])?;
    }
    Ok(CommitOutcome::Committed { seqs })
}

/// Writes a call (or entity) row guarded by its version and moves its expiry timer. Returns
/// the sequence number of the first of its `events` new events, or `None` on a conflict.
fn write_call(c: &Connection, call: &CallWrite, events: i64, now_ms: i64) -> Result<Option<i64>> {
    let attached = serde_json::to_string(&call.attached).unwrap_or_else(|_| "{}".into());
    let state = call.state.as_ref().map(|s| s.to_string());
    let mut first_seq = 1;
    match call.expected_version {
        None => {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO calls (tenant, vendor, vendor_call_id, call_id, version, next_seq, \
                     status, attached, state, expires_at_ms, updated_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    call.key.tenant,
                    call.key.vendor,
                    call.key.vendor_call_id,
                    call.call_id,
                    1 + events,
                    call.status,
                    attached,
                    state,
                    call.expires_at_ms,
                    now_ms
                ])?;
            if inserted == 0 {
                return Ok(None);
            }
        }
        Some(version) => {
            let updated: Option<i64> = c
                .prepare_cached(
                    "UPDATE calls SET version = version + 1, next_seq = next_seq + ?1, status = ?2, \
                     attached = ?3, state = ?4, expires_at_ms = ?5, updated_at_ms = ?6 \
                     WHERE tenant = ?7 AND vendor = ?8 AND vendor_call_id = ?9 AND version = ?10 \
                     AND call_id = ?11 RETURNING next_seq - ?1",
                )?
                .query_row(
                    params![
                        events,
                        call.status,
                        attached,
                        state,
                        call.expires_at_ms,
                        now_ms,
                        call.key.tenant,
                        call.key.vendor,
                        call.key.vendor_call_id,
                        version,
                        call.call_id
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            match updated {
                Some(seq) => first_seq = seq,
                None => return Ok(None),
            }
        }
    }
    let timer_key = format!("call_expiry:{}", call.call_id);
    match call.expires_at_ms {
        Some(due) => set_timer(
            c,
            &timer_key,
            "call_expiry",
            &call.key.tenant,
            due,
            &serde_json::json!({"call_id": call.call_id}),
        )?,
        None => {
            c.prepare_cached("DELETE FROM timers WHERE key = ?1")?
                .execute([&timer_key])?;
        }
    }
    Ok(Some(first_seq))
}

/// Puts events in the outbox, numbered from `first_seq` of their call when they have one.
fn insert_events(
    c: &Connection,
    uow: &UnitOfWork,
    call: Option<(&String, i64)>,
    events: &[NewEvent],
) -> Result<Vec<Option<i64>>> {
    let mut seqs = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let seq = call.map(|(_, first)| first + i as i64);
        // The row is inserted with a zero-filled payload of the exact size, then the payload is
        // written into it in place, with `data.seq` spliced in, without copying the payload
        // first: a bound blob would be copied by SQLite and once more into the row, three
        // copies of a large event at once (ours, the bound one, the row).
        let payload = WithSeq(&event.payload, seq);
        let encode =
            |e: serde_json::Error| StoreError::Backend(format!("cannot encode event: {e}"));
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, &payload).map_err(encode)?;
        let len = i32::try_from(size.0).map_err(|_| {
            StoreError::Backend(format!("cannot store an event of {} bytes", size.0))
        })?;
        // A large payload goes in a row of its own (the outbox row's column stays empty):
        // there it is the record's last column, so SQLite never builds the zero-filled record
        // in memory, and updating the delivery's state never rewrites it.
        let separate = size.0 > INLINE_PAYLOAD;
        let mut insert = c.prepare_cached(
            "INSERT INTO outbox (event_id, tenant, call_id, seq, event_type, payload, created_at_ms, \
             next_attempt_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )?;
        insert.execute(params![
            &event.event_id,
            &uow.tenant,
            call.map(|(id, _)| id),
            seq,
            &event.event_type,
            ZeroBlob(if separate { 0 } else { len }),
            uow.now_ms,
        ])?;
        let id = c.last_insert_rowid();
        let blob = if separate {
            c.prepare_cached("INSERT INTO payloads (id, body) VALUES (?1, ?2)")?
                .execute(params![id, ZeroBlob(len)])?;
            c.blob_open(MAIN_DB, "payloads", "body", id, false)?
        } else {
            c.blob_open(MAIN_DB, "outbox", "payload", id, false)?
        };
        let mut writer = std::io::BufWriter::with_capacity(64 * 1024, blob);
        serde_json::to_writer(&mut writer, &payload).map_err(encode)?;
        writer
            .into_inner()
            .map_err(|e| StoreError::Backend(format!("cannot write event: {}", e.error())))?
            .close()?;
        seqs.push(seq);
    }
    Ok(seqs)
}

/// Event payloads longer than this are kept in the `payloads` table, not in the outbox row.
const INLINE_PAYLOAD: usize = 64 * 1024;

/// The payload of outbox row `id` when it is kept in `payloads`, read with incremental BLOB
/// I/O into one buffer of its size (reading the column would have SQLite build a copy of
/// its own first; a large buffer is mapped on its own, see [`crate::buffer`]); `None` when
/// the row has none there.
fn separate_payload(c: &Connection, id: i64) -> Result<Option<bytes::Bytes>> {
    use std::io::Read as _;
    let exists = c
        .prepare_cached("SELECT 1 FROM payloads WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut blob = c.blob_open(MAIN_DB, "payloads", "body", id, true)?;
    let mut payload = crate::buffer::Buffer::zeroed(blob.len());
    blob.read_exact(payload.filled_mut())
        .map_err(|e| StoreError::Backend(format!("cannot read event payload {id}: {e}")))?;
    Ok(Some(payload.freeze()))
}

/// A writer that only counts what is written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) use crate::envelope::WithSeq;

/// Claims or releases one alias; a claim held (and not lapsed) by another owner is refused.
fn apply_alias(
    c: &Connection,
    tenant: &str,
    alias: &AliasOp,
    now_ms: i64,
) -> Result<Option<CommitOutcome>> {
    match alias.action {
        AliasAction::Release => {
            c.prepare_cached(
                "DELETE FROM aliases WHERE tenant = ?1 AND namespace = ?2 AND value = ?3 \
                 AND owner_kind = ?4 AND owner_id = ?5",
            )?
            .execute(params![
                tenant,
                alias.namespace,
                alias.value,
                alias.owner_kind,
                alias.owner_id
            ])?;
            Ok(None)
        }
        AliasAction::Claim { until_ms: until } => {
            let claimed = c
                .prepare_cached(
                    "INSERT INTO aliases (tenant, namespace, value, owner_kind, owner_id, until_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, namespace, value) DO UPDATE \
                     SET owner_kind = excluded.owner_kind, owner_id = excluded.owner_id, \
                     until_ms = excluded.until_ms \
                     WHERE (aliases.owner_kind = excluded.owner_kind AND aliases.owner_id = excluded.owner_id) \
                     OR (aliases.until_ms IS NOT NULL AND aliases.until_ms <= ?7)",
                )?
                .execute(params![
                    tenant,
                    alias.namespace,
                    alias.value,
                    alias.owner_kind,
                    alias.owner_id,
                    until,
                    now_ms
                ])?;
            if claimed > 0 {
                return Ok(None);
            }
            let (owner_kind, owner_id) = c
                .prepare_cached(
                    "SELECT owner_kind, owner_id FROM aliases \
                     WHERE tenant = ?1 AND namespace = ?2 AND value = ?3",
                )?
                .query_row(params![tenant, alias.namespace, alias.value], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
            Ok(Some(CommitOutcome::AliasTaken {
                namespace: alias.namespace.clone(),
                value: alias.value.clone(),
                owner_kind,
                owner_id,
            }))
        }
    }
}

fn set_timer(
    c: &Connection,
    key: &str,
    kind: &str,
    tenant: &str,
    due: i64,
    payload: &Value,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO timers (key, kind, tenant, due_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (key) DO UPDATE SET due_ms = ?4, payload = ?5, lease_owner = NULL, lease_until_ms = 0",
    )?
    .execute(params![key, kind, tenant, due, payload.to_string()])?;
    Ok(())
}

fn writer_loop(
    conn: Connection,
    rx: std::sync::mpsc::Receiver<Job>,
    max: usize,
    changes: Arc<ChangeFeed>,
    space: Arc<Space>,
    beat: &Beat,
) {
    use std::sync::mpsc::RecvTimeoutError;
    // `data_version` on this connection changes only when another connection (another
    // process) committed: that is what wakes this process's waiters for foreign changes.
    let version = |c: &Connection| {
        c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
            .ok()
    };
    let mut seen = version(&conn);
    let mut synchronous_full = true;
    let mut batch: Vec<Job> = Vec::with_capacity(max);
    loop {
        beat.beat();
        let first = match rx.recv_timeout(FOREIGN_POLL) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = version(&conn);
        if now != seen {
            seen = now;
            changes.all();
        }
        let Some(first) = first else { continue };
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Writes nobody waits on give others a moment to join them, unless a durable one
        // (an acknowledgement waits on it) arrives.
        if batch.iter().all(|j| j.lazy()) {
            let until = std::time::Instant::now() + LAZY_WINDOW;
            while batch.len() < max {
                let left = until.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        let durable = !job.lazy();
                        batch.push(job);
                        if durable {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        let durable = batch.iter().any(|j| !j.lazy());
        if durable != synchronous_full {
            let mode = if durable { "FULL" } else { "NORMAL" };
            match conn.pragma_update(None, "synchronous", mode) {
                Ok(()) => synchronous_full = durable,
                Err(e) => tracing::error!(error = %e, mode, "cannot set synchronous"),
            }
        }
        let outcome = if durable && !synchronous_full {
            Err(StoreError::Backend("cannot make the commit durable".into()))
        } else {
            run_batch(&conn, &mut batch, &space)
        };
        let outbox = batch.iter().any(|j| j.touches_outbox());
        for job in batch.drain(..) {
            job.complete(outcome.clone());
        }
        match &outcome {
            Ok(()) => {
                if outbox {
                    changes.outbox.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "store commit failed"),
        }
    }
}

/// Runs a batch in one transaction. Free space is read once the write lock is held (so other
/// processes' commits are on disk), and only when a write in the batch adds rows; those that
/// could reach into the reserve are refused, in queue order, the rest applied.
fn run_batch(conn: &Connection, batch: &mut [Job], space: &Space) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut budget = if batch.iter().any(|j| j.growth().is_some()) {
        space.budget(conn)
    } else {
        None
    };
    let (mut refused, mut admitted) = (0, 0);
    for job in batch.iter_mut() {
        if let (Some(need), Some(left)) = (job.growth(), budget.as_mut()) {
            if need > *left {
                job.refuse();
                refused += 1;
            } else {
                *left -= need;
                admitted += 1;
            }
        }
        conn.prepare_cached("SAVEPOINT job")?.execute([])?;
        match job.apply(conn) {
            Ok(()) => {
                conn.prepare_cached("RELEASE job")?.execute([])?;
            }
            Err(_) => conn.execute_batch("ROLLBACK TO job; RELEASE job")?,
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    space.note(refused, admitted);
    Ok(())
}

impl Backend for SqliteStore {
    fn changes(&self) -> &ChangeFeed {
        &self.changes
    }

    fn writer_beat(&self) -> Option<&Beat> {
        Some(&self.writer_beat)
    }

    fn acquire_lease(
        &self,
        key: LeaseKey,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<LeaseAcquire>> {
        Box::pin(SqliteStore::acquire_lease(
            self, key, owner, now_ms, lease_ms,
        ))
    }

    fn renew_lease(
        &self,
        key: LeaseKey,
        owner: String,
        epoch: u64,
        now_ms: i64,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(SqliteStore::renew_lease(
            self, key, owner, epoch, now_ms, lease_ms,
        ))
    }

    fn release_lease(
        &self,
        key: LeaseKey,
        owner: String,
        epoch: u64,
    ) -> BoxFuture<'_, Result<bool>> {
        Box::pin(SqliteStore::release_lease(self, key, owner, epoch))
    }

    fn read_lease(&self, key: LeaseKey) -> BoxFuture<'_, Result<Option<LeaseRow>>> {
        Box::pin(async move { self.read(move |c| read_lease(c, &key)).await })
    }

    fn close(&self) {
        SqliteStore::close(self)
    }

    fn owner_id(&self) -> &str {
        SqliteStore::owner_id(self)
    }

    fn recover_dead_owners(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(SqliteStore::recover_dead_owners(self))
    }

    fn set_free_space_reserve(&self, bytes: u64) {
        SqliteStore::set_free_space_reserve(self, bytes)
    }

    fn storage_full(&self) -> bool {
        self.space.full.load(Ordering::Relaxed)
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteStore::ping(self))
    }

    fn load_call(&self, key: CallKey) -> BoxFuture<'_, Result<Option<CallRow>>> {
        Box::pin(SqliteStore::load_call(self, key))
    }

    fn load_call_by_id(
        &self,
        call_id: String,
    ) -> BoxFuture<'_, Result<Option<(CallKey, CallRow)>>> {
        Box::pin(SqliteStore::load_call_by_id(self, call_id))
    }

    fn commit(&self, uow: UnitOfWork) -> BoxFuture<'_, Result<CommitOutcome>> {
        Box::pin(SqliteStore::commit(self, uow))
    }

    fn commit_queued(&self, uow: UnitOfWork) -> BoxFuture<'static, Result<CommitOutcome>> {
        Box::pin(SqliteStore::commit_queued(self, uow))
    }

    fn claim_deliveries(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        skip_tenants: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Delivery>>> {
        Box::pin(SqliteStore::claim_deliveries(
            self,
            owner,
            now_ms,
            lease_ms,
            limit,
            skip_tenants,
        ))
    }

    fn finish_deliveries(
        &self,
        owner: String,
        updates: Vec<DeliveryUpdate>,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteStore::finish_deliveries(self, owner, updates))
    }

    fn claim_timers(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<TimerRow>>> {
        Box::pin(SqliteStore::claim_timers(
            self, owner, now_ms, lease_ms, limit,
        ))
    }

    fn release_timer(&self, key: String, owner: String) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteStore::release_timer(self, key, owner))
    }

    fn finish_timer(&self, key: String, owner: String) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteStore::finish_timer(self, key, owner))
    }

    fn find_alias(
        &self,
        tenant: String,
        namespace: String,
        value: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<(String, String)>>> {
        Box::pin(SqliteStore::find_alias(
            self, tenant, namespace, value, now_ms,
        ))
    }

    fn list_live(
        &self,
        tenant: String,
        kind: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(CallKey, CallRow)>>> {
        Box::pin(SqliteStore::list_live(self, tenant, kind, limit))
    }

    fn outbox_depth(&self) -> BoxFuture<'_, Result<Vec<OutboxDepth>>> {
        Box::pin(SqliteStore::outbox_depth(self))
    }

    fn dead_letters(
        &self,
        tenant: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(SqliteStore::dead_letters(self, tenant, limit))
    }

    fn replay(&self, filter: ReplayFilter, now_ms: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(SqliteStore::replay(self, filter, now_ms))
    }

    fn queue_summary(&self) -> BoxFuture<'_, Result<Vec<QueueSummary>>> {
        Box::pin(SqliteStore::queue_summary(self))
    }

    fn list_events(&self, query: EventQuery) -> BoxFuture<'_, Result<Vec<EventListing>>> {
        Box::pin(SqliteStore::list_events(self, query))
    }

    fn retry_now(&self, tenants: Vec<String>, now_ms: i64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(SqliteStore::retry_now(self, tenants, now_ms))
    }

    fn set_endpoint_disabled(
        &self,
        tenant: String,
        disabled: Option<(i64, String)>,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteStore::set_endpoint_disabled(self, tenant, disabled))
    }

    fn disabled_endpoints(&self) -> BoxFuture<'_, Result<Vec<(String, String)>>> {
        Box::pin(SqliteStore::disabled_endpoints(self))
    }

    fn purge(
        &self,
        now_ms: i64,
        call_retention_ms: i64,
        delivered_retention_ms: i64,
    ) -> BoxFuture<'_, Result<u64>> {
        Box::pin(SqliteStore::purge(
            self,
            now_ms,
            call_retention_ms,
            delivered_retention_ms,
        ))
    }

    fn live_instances(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(SqliteStore::live_instances(self))
    }

    fn trip_breaker(
        &self,
        scope: String,
        endpoint: String,
        open_ms: i64,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteStore::trip_breaker(self, scope, endpoint, open_ms))
    }

    fn close_breaker(&self, scope: String, endpoint: String) -> BoxFuture<'_, Result<()>> {
        Box::pin(SqliteStore::close_breaker(self, scope, endpoint))
    }

    fn open_breakers(&self) -> BoxFuture<'_, Result<Vec<SharedBreaker>>> {
        Box::pin(SqliteStore::open_breakers(self))
    }

    fn call_events(&self, call_id: String) -> BoxFuture<'_, Result<Vec<(i64, String, i64)>>> {
        Box::pin(SqliteStore::call_events(self, call_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(n: usize, bytes: usize) -> UnitOfWork {
        UnitOfWork {
            tenant: "acme".into(),
            now_ms: 1_000,
            events: vec![NewEvent {
                event_id: format!("msg_{n}"),
                event_type: "call.cdr".into(),
                payload: crate::envelope::EventPayload::raw(
                    "call.cdr",
                    json!({"pad": "x".repeat(bytes)}),
                )
                .into(),
            }],
            ..UnitOfWork::default()
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// A payload over 64 KiB is kept in `payloads`, not in its outbox row (so updating the
    /// delivery's state never rewrites it), is delivered whole, and goes with its row.
    #[test]
    fn large_payloads_live_apart_and_go_with_their_row() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(dir.path(), 16).expect("open");
        let inspect = Connection::open(dir.path().join("ivrgate.db")).expect("inspect");
        let lengths = |event: &str| -> (i64, Option<i64>) {
            inspect
                .query_row(
                    "SELECT length(o.payload), length(p.body) FROM outbox o \
                     LEFT JOIN payloads p ON p.id = o.id WHERE o.event_id = ?1",
                    [event],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("row")
        };
        runtime().block_on(async {
            for (n, bytes) in [(1, 100), (2, 200_000), (3, 64 * 1024)] {
                let outcome = store.commit(event(n, bytes)).await.expect("commit");
                assert!(matches!(outcome, CommitOutcome::Committed { .. }));
            }
            let big = lengths("msg_2");
            assert_eq!(big.0, 0, "the outbox row holds no copy");
            assert!(big.1.is_some_and(|len| len > 200_000), "{big:?}");
            assert!(lengths("msg_1").0 > 100);
            assert_eq!(lengths("msg_1").1, None);
            // just over the limit once serialized: apart too
            assert_eq!(lengths("msg_3").0, 0);

            let owner = String::from("1-owner");
            let claimed = store
                .claim_deliveries(owner.clone(), 2_000, 60_000, 10, Vec::new())
                .await
                .expect("claim");
            assert_eq!(claimed.len(), 3);
            for (delivery, bytes) in claimed.iter().zip([100, 200_000, 64 * 1024]) {
                let payload: Value =
                    serde_json::from_slice(&delivery.payload).expect("the payload is JSON");
                assert_eq!(payload["data"]["pad"], json!("x".repeat(bytes)));
            }
            store
                .finish_deliveries(
                    owner.clone(),
                    claimed
                        .iter()
                        .map(|d| DeliveryUpdate::Delivered {
                            id: d.id,
                            at_ms: 2_000,
                        })
                        .collect(),
                )
                .await
                .expect("finish");
            assert_eq!(lengths("msg_2").0, 0, "the state update left it apart");
            store.purge(3_000, 0, 0).await.expect("purge");
        });
        let left: i64 = inspect
            .query_row("SELECT count(*) FROM payloads", [], |r| r.get(0))
            .expect("count");
        assert_eq!(left, 0, "a purged row's payload goes with it");
        store.close();
    }

    /// Free space is read per batch: the first unit of work that could reach into the
    /// reserve is refused (nothing written), while claims, outcomes, timers and purges go on.
    #[test]
    fn growing_writes_stop_at_the_reserve_and_claims_go_on() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().expect("tmp");
        let free = Arc::new(AtomicU64::new(100 * MIB));
        let probe_free = free.clone();
        let probe: FreeSpace = Arc::new(move || Ok(probe_free.load(Ordering::SeqCst)));
        let store = SqliteStore::open_with_free_space(dir.path(), 16, probe).expect("open");
        store.set_free_space_reserve(10 * MIB);
        runtime().block_on(async {
            let first = store.commit(event(1, 10_000)).await.expect("commit");
            assert!(
                matches!(first, CommitOutcome::Committed { .. }),
                "{first:?}"
            );
            assert!(!Backend::storage_full(&*store));
            // Just above the reserve, but not by what the unit may write: refused.
            free.store(10 * MIB + 30_000, Ordering::SeqCst);
            let refused = store.commit(event(2, 10_000)).await.expect("commit");
            assert_eq!(refused, CommitOutcome::StorageFull);
            assert!(Backend::storage_full(&*store));
            assert!(store
                .call_events(String::new())
                .await
                .expect("read")
                .is_empty());
            // Deliveries drain: claims and outcomes use the reserve.
            let owner = String::from("1-owner");
            let claimed = store
                .claim_deliveries(owner.clone(), 2_000, 60_000, 10, Vec::new())
                .await
                .expect("claim while full");
            assert_eq!(
                claimed
                    .iter()
                    .map(|d| d.event_id.as_str())
                    .collect::<Vec<_>>(),
                ["msg_1"],
                "only the admitted event is stored"
            );
            store
                .finish_deliveries(
                    owner.clone(),
                    vec![DeliveryUpdate::Delivered {
                        id: claimed[0].id,
                        at_ms: 2_000,
                    }],
                )
                .await
                .expect("finish while full");
            store
                .claim_timers(owner.clone(), 2_000, 30_000, 10)
                .await
                .expect("timers while full");
            store.purge(2_000, 0, 0).await.expect("purge while full");
            // Space again: accepted.
            free.store(100 * MIB, Ordering::SeqCst);
            let again = store.commit(event(3, 10_000)).await.expect("commit");
            assert!(
                matches!(again, CommitOutcome::Committed { .. }),
                "{again:?}"
            );
            assert!(!Backend::storage_full(&*store));
            // No reserve: no check.
            store.set_free_space_reserve(0);
            free.store(0, Ordering::SeqCst);
            let unchecked = store.commit(event(4, 10)).await.expect("commit");
            assert!(matches!(unchecked, CommitOutcome::Committed { .. }));
        });
        store.close();
    }

    /// With no room for new rows, a legacy resend still gets the answer stored with its
    /// original (so the platform stops resending), and a new request is refused.
    #[test]
    fn a_resend_gets_its_stored_answer_while_storage_is_full() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().expect("tmp");
        let free = Arc::new(AtomicU64::new(100 * MIB));
        let probe_free = free.clone();
        let probe: FreeSpace = Arc::new(move || Ok(probe_free.load(Ordering::SeqCst)));
        let store = SqliteStore::open_with_free_space(dir.path(), 16, probe).expect("open");
        store.set_free_space_reserve(10 * MIB);
        let with_key = |n: usize, key: u8| {
            let mut uow = event(n, 100);
            uow.dedup = Some(DedupWrite {
                key_hash: [key; 32],
                response: StoredResponse {
                    status: 200,
                    content_type: "application/json".into(),
                    body: br#"{"err":0}"#.to_vec(),
                },
                expires_at_ms: 10_000,
            });
            uow
        };
        runtime().block_on(async {
            let first = store.commit(with_key(1, 7)).await.expect("commit");
            assert!(
                matches!(first, CommitOutcome::Committed { .. }),
                "{first:?}"
            );
            free.store(10 * MIB, Ordering::SeqCst);
            match store.commit(with_key(2, 7)).await.expect("commit") {
                CommitOutcome::Duplicate(found) => assert_eq!(found.body, br#"{"err":0}"#),
                other => panic!("resend while full: {other:?}"),
            }
            let new = store.commit(with_key(3, 8)).await.expect("commit");
            assert_eq!(new, CommitOutcome::StorageFull);
        });
        store.close();
    }

    /// An owner whose lock is free (its process died) has its claims freed at once; a live
    /// owner's claims are left alone, and the dead owner's lock file goes.
    #[test]
    fn schema_version_is_recorded_and_a_current_store_reopens() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(dir.path(), 16).expect("open");
        store.close();
        let again = SqliteStore::open(dir.path(), 16).expect("reopen a current store");
        again.close();
        let conn = Connection::open(dir.path().join("ivrgate.db")).expect("conn");
        let rows: Vec<(i64, String, i64)> = conn
            .prepare("SELECT version, name, compatible_from FROM ivrgate_schema ORDER BY version")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            rows,
            vec![
                (1, "init".to_owned(), 1),
                (2, "shared_breakers".to_owned(), 1)
            ],
            "recorded once"
        );
    }

    #[test]
    fn a_store_from_before_versions_is_taken_as_version_one() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let conn = Connection::open(dir.path().join("ivrgate.db")).expect("conn");
            conn.execute_batch(SCHEMA).expect("old schema");
            conn.execute(
                "INSERT INTO timers (key, kind, tenant, due_ms, payload) VALUES ('t', 'k', 'acme', 5, '{}')",
                [],
            )
            .expect("a row");
        }
        let store = SqliteStore::open(dir.path(), 16).expect("open an unversioned store");
        store.close();
        let conn = Connection::open(dir.path().join("ivrgate.db")).expect("conn");
        let (version, timers): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT max(version) FROM ivrgate_schema), (SELECT count(*) FROM timers)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("read");
        // Taken as version 1 (its record added without change), then migrated on.
        assert_eq!((version, timers), (2, 1), "versioned, nothing lost");
    }

    #[test]
    fn a_newer_store_opens_only_while_marked_compatible() {
        let dir = tempfile::tempdir().expect("tmp");
        SqliteStore::open(dir.path(), 16).expect("open").close();
        let path = dir.path().join("ivrgate.db");
        let add = |version: i64, compatible_from: i64| {
            let conn = Connection::open(&path).expect("conn");
            conn.execute(
                "INSERT INTO ivrgate_schema (version, name, compatible_from, applied_at_ms) VALUES (?1, 'future', ?2, 0)",
                params![version, compatible_from],
            )
            .expect("insert");
        };
        // A newer binary's expanding migration keeps this binary working (rolling upgrade).
        add(3, 1);
        SqliteStore::open(dir.path(), 16)
            .expect("a newer but compatible store opens")
            .close();
        // A contracting one refuses it, with a message saying why.
        add(4, 4);
        let err = SqliteStore::open(dir.path(), 16)
            .err()
            .expect("a newer incompatible store is refused");
        let text = err.to_string();
        assert!(text.contains("schema is at version 4"), "{text}");
        assert!(text.contains("incompatible with this ivrgate"), "{text}");
        assert!(text.contains("up to 2"), "{text}");
    }

    #[test]
    fn claims_of_a_dead_owner_are_freed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(dir.path(), 16).expect("open");
        let other = SqliteStore::open(dir.path(), 16).expect("open another");
        let dead = Owner::register(dir.path(), "1-deadbeef".into()).expect("owner");
        runtime().block_on(async {
            for n in 0..2 {
                let mut uow = event(n, 10);
                uow.timers.push(TimerOp::Set {
                    key: format!("t{n}"),
                    kind: "test".into(),
                    tenant: "acme".into(),
                    due_ms: 500,
                    payload: json!({}),
                });
                store.commit(uow).await.expect("commit");
            }
            // One delivery and one timer each for the (soon dead) owner and a live one.
            let lease = |owner: &str| {
                let owner = owner.to_owned();
                let store = store.clone();
                async move {
                    let d = store
                        .claim_deliveries(owner.clone(), 1_000, 60_000, 1, Vec::new())
                        .await
                        .expect("claim");
                    let t = store
                        .claim_timers(owner, 1_000, 60_000, 1)
                        .await
                        .expect("claim");
                    (d[0].event_id.clone(), t[0].key.clone())
                }
            };
            let of_dead = lease("1-deadbeef").await;
            let of_live = lease(other.owner_id()).await;
            assert!(store.recover_dead_owners().await.expect("sweep").is_empty());
            drop(dead); // what a killed process leaves: the file, unlocked
            assert_eq!(
                store.recover_dead_owners().await.expect("sweep"),
                ["1-deadbeef"]
            );
            let me = store.owner_id().to_owned();
            let d = store
                .claim_deliveries(me.clone(), 1_000, 60_000, 10, Vec::new())
                .await
                .expect("claim");
            let t = store
                .claim_timers(me, 1_000, 60_000, 10)
                .await
                .expect("claim");
            assert_eq!(
                (d.len(), t.len()),
                (1, 1),
                "only the dead owner's claims are free"
            );
            assert_eq!((d[0].event_id.clone(), t[0].key.clone()), of_dead);
            assert_ne!(of_dead, of_live);
        });
        assert!(!owner::owners_dir(dir.path())
            .join("1-deadbeef.lock")
            .exists());
        other.close();
        store.close();
        assert_eq!(
            std::fs::read_dir(owner::owners_dir(dir.path()))
                .expect("owners")
                .count(),
            0,
            "stopped owners remove their lock files"
        );
    }

    fn lease_key() -> LeaseKey {
        LeaseKey {
            tenant: "acme".into(),
            adapter: "ctips".into(),
            name: "session".into(),
        }
    }

    /// Two owners racing for one lease: exactly one gets it; the other sees who holds it
    /// and gets it only once the lease lapses, with the next epoch.
    #[test]
    fn a_lease_goes_to_one_of_two_racing_owners_and_its_epoch_grows() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = SqliteStore::open(dir.path(), 16).expect("open");
        let b = SqliteStore::open(dir.path(), 16).expect("open another");
        runtime().block_on(async {
            for round in 0..20_i64 {
                let key = LeaseKey {
                    name: format!("s{round}"),
                    ..lease_key()
                };
                let (ra, rb) = tokio::join!(
                    a.acquire_lease(key.clone(), a.owner_id().into(), 1_000, 10_000),
                    b.acquire_lease(key.clone(), b.owner_id().into(), 1_000, 10_000),
                );
                let (ra, rb) = (ra.expect("a"), rb.expect("b"));
                let won = [&ra, &rb]
                    .iter()
                    .filter(|r| matches!(r, LeaseAcquire::Acquired { .. }))
                    .count();
                assert_eq!(won, 1, "round {round}: {ra:?} {rb:?}");
                let (winner, loser) = match ra {
                    LeaseAcquire::Acquired { .. } => (a.owner_id(), &rb),
                    _ => (b.owner_id(), &ra),
                };
                assert_eq!(
                    loser,
                    &LeaseAcquire::Held(LeaseRow {
                        holder: Some(winner.into()),
                        epoch: 1,
                        until_ms: 11_000,
                    })
                );
            }
            let key = lease_key();
            let got = a
                .acquire_lease(key.clone(), a.owner_id().into(), 1_000, 10_000)
                .await
                .expect("a");
            assert_eq!(
                got,
                LeaseAcquire::Acquired {
                    epoch: 1,
                    until_ms: 11_000
                }
            );
            // Held until it lapses, renewed or not.
            let held = b
                .acquire_lease(key.clone(), b.owner_id().into(), 10_999, 10_000)
                .await
                .expect("b");
            assert!(matches!(held, LeaseAcquire::Held(_)), "{held:?}");
            let lapsed = b
                .acquire_lease(key.clone(), b.owner_id().into(), 11_000, 10_000)
                .await
                .expect("b");
            assert_eq!(
                lapsed,
                LeaseAcquire::Acquired {
                    epoch: 2,
                    until_ms: 21_000
                }
            );
            // Released, the epoch is kept: the next acquisition gets a new one.
            assert!(b
                .release_lease(key.clone(), b.owner_id().into(), 2)
                .await
                .expect("release"));
            let row = b.read_lease(key.clone()).await.expect("read").expect("row");
            assert_eq!((row.holder, row.epoch), (None, 2));
            let again = a
                .acquire_lease(key.clone(), a.owner_id().into(), 12_000, 10_000)
                .await
                .expect("a");
            assert_eq!(
                again,
                LeaseAcquire::Acquired {
                    epoch: 3,
                    until_ms: 22_000
                }
            );
            assert_eq!(
                b.read_lease(LeaseKey {
                    name: "never".into(),
                    ..lease_key()
                })
                .await
                .expect("read"),
                None
            );
        });
        b.close();
        a.close();
    }

    /// Only the holder with its epoch renews, and only before the lease lapsed; a renewal
    /// or release with a stale epoch changes nothing.
    #[test]
    fn a_lease_is_renewed_only_by_its_holder_with_its_epoch_before_it_lapses() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = SqliteStore::open(dir.path(), 16).expect("open");
        let b = SqliteStore::open(dir.path(), 16).expect("open another");
        let key = lease_key();
        runtime().block_on(async {
            let me = a.owner_id().to_owned();
            let other = b.owner_id().to_owned();
            a.acquire_lease(key.clone(), me.clone(), 1_000, 1_000)
                .await
                .expect("acquire");
            let renew = |owner: &str, epoch, now| {
                a.renew_lease(key.clone(), owner.to_owned(), epoch, now, 1_000)
            };
            assert_eq!(renew(&me, 1, 1_500).await.expect("renew"), Some(2_500));
            assert_eq!(renew(&other, 1, 1_600).await.expect("renew"), None);
            assert_eq!(renew(&me, 0, 1_600).await.expect("renew"), None);
            assert_eq!(renew(&me, 1, 2_500).await.expect("renew"), None, "lapsed");
            // Taken by another after the lapse: the old epoch neither renews nor releases.
            let taken = b
                .acquire_lease(key.clone(), other.clone(), 2_500, 1_000)
                .await
                .expect("take");
            assert_eq!(
                taken,
                LeaseAcquire::Acquired {
                    epoch: 2,
                    until_ms: 3_500
                }
            );
            assert_eq!(renew(&me, 1, 2_600).await.expect("renew"), None);
            assert!(!a
                .release_lease(key.clone(), me.clone(), 1)
                .await
                .expect("release"));
            assert!(!a
                .release_lease(key.clone(), me.clone(), 2)
                .await
                .expect("release"));
            let row = a.read_lease(key.clone()).await.expect("read");
            assert_eq!(
                row,
                Some(LeaseRow {
                    holder: Some(other.clone()),
                    epoch: 2,
                    until_ms: 3_500
                })
            );
        });
        b.close();
        a.close();
    }

    /// A holder whose process is gone (its lock file unlocked) loses its lease at once, long
    /// before it lapses; a live one keeps it; a stopped store gives its leases back.
    #[test]
    fn a_dead_owners_lease_is_taken_at_once_and_a_closed_ones_is_released() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = SqliteStore::open(dir.path(), 16).expect("open");
        let live = SqliteStore::open(dir.path(), 16).expect("open another");
        let dead = Owner::register(dir.path(), "1-deadbeef".into()).expect("owner");
        let key = lease_key();
        let other = LeaseKey {
            name: "other".into(),
            ..lease_key()
        };
        runtime().block_on(async {
            a.acquire_lease(key.clone(), "1-deadbeef".into(), 1_000, 60_000)
                .await
                .expect("acquire");
            live.acquire_lease(other.clone(), live.owner_id().into(), 1_000, 60_000)
                .await
                .expect("acquire");
            let me = a.owner_id().to_owned();
            let held = a
                .acquire_lease(key.clone(), me.clone(), 2_000, 60_000)
                .await
                .expect("acquire");
            assert!(matches!(held, LeaseAcquire::Held(_)), "{held:?}");
            drop(dead); // what a killed process leaves: its lock file, unlocked
            let taken = a
                .acquire_lease(key.clone(), me.clone(), 2_000, 60_000)
                .await
                .expect("acquire");
            assert_eq!(
                taken,
                LeaseAcquire::Acquired {
                    epoch: 2,
                    until_ms: 62_000
                }
            );
            let kept = a
                .acquire_lease(other.clone(), me.clone(), 2_000, 60_000)
                .await
                .expect("acquire");
            assert!(matches!(kept, LeaseAcquire::Held(_)), "{kept:?}");
        });
        live.close();
        runtime().block_on(async {
            let row = a
                .read_lease(other.clone())
                .await
                .expect("read")
                .expect("row");
            assert_eq!((row.holder, row.epoch), (None, 1), "closing releases");
        });
        a.close();
    }
}
