//! The embedded store: one SQLite file in WAL mode; a commit is on disk before it is
//! acknowledged. All writes go through one writer thread per process that applies whatever is
//! queued in one transaction (group commit) and commits it with `synchronous=NORMAL` (the log
//! written, not synced); a sync thread then syncs the `-wal` file and only after that answers
//! the transaction's writes, while the writer already fills the next transaction (`sync.rs`
//! has the argument that this is as durable as `synchronous=FULL`). Several processes may
//! open the same file; SQLite's write lock serializes their transactions and `PRAGMA
//! data_version` tells each process that another one committed.
//!
//! Free space is checked by the writer before each batch that would add rows (one `statvfs`
//! while it holds the write lock): a unit of work that could reach into the configured reserve
//! is refused ([`CommitOutcome::StorageFull`]) instead of attempted, while claims, outcomes
//! and purges (which keep or shrink the store) may use the reserve, so deliveries drain a
//! full disk.
//!
//! The code is split along those lines: `schema.rs` (tables and migrations), `writer.rs` (the
//! writer thread, group commit, free space), `sync.rs` (the sync thread), `uow.rs` (a unit of work applied), `reads.rs`,
//! `claims.rs` (deliveries and timers), `cluster.rs` (owners, connector leases, instances,
//! breakers) and `admin.rs`; this file opens and closes the store and implements [`Backend`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivrgate_adapter::BoxFuture;
use rusqlite::Connection;

use crate::liveness::Beat;

use super::owner::{self, Owner};
use super::*;

mod admin;
mod claims;
mod cluster;
mod reads;
mod schema;
mod sync;
#[cfg(test)]
mod tests;
mod uow;
mod writer;

pub use schema::MIGRATIONS;
pub use writer::FreeSpace;

use cluster::{free_claims, read_lease};
use schema::migrate;
use sync::{fdatasync, sync_loop, Pipe, WalSync};
use writer::{writer_loop, Msg, Space, Writer, WAL_SIZE_LIMIT};

pub struct SqliteStore {
    path: PathBuf,
    dir: PathBuf,
    owner_id: String,
    /// This process's liveness proof, held until [`SqliteStore::close`].
    owner: Mutex<Option<Owner>>,
    space: Arc<Space>,
    /// The writer thread's queue. The sync thread holds only a weak reference, to wake the
    /// writer: dropping this one (close, drop) ends the writer once it has drained the queue.
    writer: Mutex<Option<Arc<std::sync::mpsc::Sender<Msg>>>>,
    /// The writer thread; it ends the sync thread (`sync.rs`) before it ends.
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The write pipeline's last turn: the writer's while no sync is pending (it turns at
    /// least every [`FOREIGN_POLL`] while it lives), the sync thread's after each sync.
    writer_beat: Arc<Beat>,
    /// Shared with the writer and sync threads: whether the writer lingers parked.
    pipe: Arc<Pipe>,
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
        SqliteStore::open_with(dir, group_commit_max, probe, fdatasync())
    }

    /// [`SqliteStore::open_with_free_space`] with the `-wal` file made durable by `sync`
    /// (tests watch or hold it).
    fn open_with(
        dir: &Path,
        group_commit_max: usize,
        probe: FreeSpace,
        sync: WalSync,
    ) -> Result<Arc<SqliteStore>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("ivrgate.db");
        let conn = open(&path)?;
        migrate(&conn)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        // Commits write the log without syncing it; the sync thread syncs it before any
        // write is acknowledged (see `sync.rs`).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let wal_path = dir.join("ivrgate.db-wal");
        let wal = std::fs::File::open(&wal_path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", wal_path.display())))?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let space = Arc::new(Space {
            reserve: AtomicU64::new(0),
            probe,
            wal: wal_path,
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
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let tx = Arc::new(tx);
        let (to_sync, synced) = std::sync::mpsc::channel();
        let changes = Arc::new(ChangeFeed::default());
        let stop = Arc::new(AtomicBool::new(false));
        let pipe = Arc::new(Pipe::default());
        let writer_beat = Arc::new(Beat::default());
        let sync_thread = {
            let (pipe, wake, beat) = (pipe.clone(), Arc::downgrade(&tx), writer_beat.clone());
            std::thread::Builder::new()
                .name("ivrgate-sync".into())
                .spawn(move || sync_loop(synced, wal, sync, pipe, wake, beat))
                .map_err(|e| StoreError::Backend(format!("cannot start sync thread: {e}")))?
        };
        let writer = Writer::new(
            conn,
            group_commit_max,
            changes.clone(),
            space.clone(),
            to_sync,
            sync_thread,
            pipe.clone(),
        );
        let beat = writer_beat.clone();
        let writer_thread = std::thread::Builder::new()
            .name("ivrgate-writer".into())
            .spawn(move || writer_loop(writer, rx, &beat))
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
            pipe,
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
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub(crate) use crate::envelope::WithSeq;

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
