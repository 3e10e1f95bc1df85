//! The writer thread: writes queued by this process (units of work, claims, outcomes, admin
//! changes) are run by one thread and committed together in one transaction (group commit),
//! after a free-space check before each batch that adds rows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::liveness::Beat;

use super::sync::{sync_refused, Pipe};
use super::uow::{apply_uow, find_duplicate, ByteCount};
use super::*;

impl SqliteStore {
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

    pub(super) fn enqueue<T, F>(
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
        sender.send(Msg::Job(job)).map_err(|_| StoreError::Closed)?;
        // A writer lingering for company is woken only by a write someone waits on. It set
        // `lingering` before it last looked at the queue, so this job is either seen by
        // that look or unparks it.
        if !lazy && self.pipe.lingering.load(Ordering::SeqCst) {
            if let Some(writer) = self.pipe.writer.get() {
                writer.unpark();
            }
        }
        Ok(answer)
    }
}

pub(super) type Job = Box<dyn WriteJob>;

/// A write run by the writer thread inside the shared transaction.
pub(super) trait WriteJob: Send {
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
pub(super) const WAL_SIZE_LIMIT: i64 = 8 * 1024 * 1024;

/// The writer's view of free space: the reserve to keep, how to read free space, and
/// whether the last growing write was refused (logged once per change).
pub(super) struct Space {
    pub(super) reserve: AtomicU64,
    pub(super) probe: FreeSpace,
    pub(super) wal: PathBuf,
    pub(super) page_size: u64,
    pub(super) full: AtomicBool,
    pub(super) probe_failed: AtomicBool,
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
    let mut count = ByteCount(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0 as u64
}

/// What the writer thread is sent.
pub(super) enum Msg {
    Job(Job),
    /// The sync thread finished a sync: a transaction held open for it may commit now.
    Synced,
}

/// The writer thread's part of the store: its connection and where committed batches go.
pub(super) struct Writer {
    conn: Connection,
    /// Most writes in one transaction (`storage.group_commit_max`).
    max: usize,
    changes: Arc<ChangeFeed>,
    space: Arc<Space>,
    /// Committed batches awaiting their sync (see `sync.rs`).
    to_sync: std::sync::mpsc::Sender<Vec<Job>>,
    /// The sync thread, which ends once `to_sync` is dropped and its work is answered.
    sync_thread: Option<std::thread::JoinHandle<()>>,
    pipe: Arc<Pipe>,
    /// `PRAGMA data_version` when last read: it changes only when another connection
    /// (another process) committed, which wakes this process's waiters for foreign changes.
    seen: Option<i64>,
}

/// The transaction the writer holds open, with the writes applied in it in queue order.
struct Open {
    jobs: Vec<Job>,
    /// Some write in it waits to be acknowledged (it commits only with a sync to follow).
    durable: bool,
    touches_outbox: bool,
    /// Room left for writes that add rows, read at the first such write (`None` before).
    budget: Option<Option<u64>>,
    refused: usize,
    admitted: usize,
    /// Each write runs under a savepoint of its own: only once one failed without.
    guarded: bool,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        max: usize,
        changes: Arc<ChangeFeed>,
        space: Arc<Space>,
        to_sync: std::sync::mpsc::Sender<Vec<Job>>,
        sync_thread: std::thread::JoinHandle<()>,
        pipe: Arc<Pipe>,
    ) -> Writer {
        let mut writer = Writer {
            conn,
            max: max.max(1),
            changes,
            space,
            to_sync,
            sync_thread: Some(sync_thread),
            pipe,
            seen: None,
        };
        writer.seen = writer.data_version();
        writer
    }

    /// Lets the sync thread answer what it was handed and end, then closes the connection:
    /// the `-wal` file it syncs stays in place while the connection is open.
    fn finish(self) {
        let Writer {
            conn,
            to_sync,
            sync_thread,
            ..
        } = self;
        drop(to_sync);
        if let Some(handle) = sync_thread {
            let _ = handle.join();
        }
        drop(conn);
    }

    fn data_version(&self) -> Option<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
            .ok()
    }

    /// Wakes every waiter when another process committed since the last look.
    fn look_for_foreign_commits(&mut self) {
        let now = self.data_version();
        if now != self.seen {
            self.seen = now;
            self.changes.all();
        }
    }

    /// Opens a transaction and applies `jobs` in it; on failure answers them at once.
    fn begin(&mut self, jobs: Vec<Job>) -> Option<Open> {
        self.look_for_foreign_commits();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "store commit failed");
            for job in jobs {
                job.complete(Err(e.clone()));
            }
            return None;
        }
        let mut open = Open {
            jobs: Vec::with_capacity(self.max.min(jobs.len().max(64))),
            durable: false,
            touches_outbox: false,
            budget: None,
            refused: 0,
            admitted: 0,
            guarded: false,
        };
        for job in jobs {
            if let Err(e) = self.apply(&mut open, job) {
                self.fail(open, e);
                return None;
            }
        }
        Some(open)
    }

    /// Applies one write in the open transaction. Free space is read once the write lock is
    /// held (so other processes' commits are on disk), at the first write that adds rows;
    /// those that could reach into the reserve are refused, in queue order. A write runs
    /// without a savepoint of its own (copying every page it touches into the statement
    /// journal costs more than the write) until one fails: then the transaction starts again
    /// with each write under its savepoint, so a failed write leaves nothing behind. `Err`:
    /// the transaction is lost.
    fn apply(&mut self, open: &mut Open, mut job: Job) -> Result<()> {
        if let Some(need) = job.growth() {
            let budget = open
                .budget
                .get_or_insert_with(|| self.space.budget(&self.conn));
            if let Some(left) = budget.as_mut() {
                if need > *left {
                    job.refuse();
                    open.refused += 1;
                } else {
                    *left -= need;
                    open.admitted += 1;
                }
            }
        }
        open.durable |= !job.lazy();
        open.touches_outbox |= job.touches_outbox();
        if open.guarded {
            apply_guarded(&self.conn, &mut job)?;
            open.jobs.push(job);
            return Ok(());
        }
        let failed = job.apply(&self.conn).is_err();
        open.jobs.push(job);
        if failed {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            open.guarded = true;
            for job in open.jobs.iter_mut() {
                apply_guarded(&self.conn, job)?;
            }
        }
        Ok(())
    }

    /// Ends a transaction that cannot commit: nothing in it happened.
    fn fail(&self, open: Open, e: StoreError) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        tracing::error!(error = %e, "store commit failed");
        for job in open.jobs {
            job.complete(Err(e.clone()));
        }
    }

    /// Commits the open transaction (its frames written to the write-ahead log, not synced:
    /// the connection runs with `synchronous=NORMAL`) and hands it to the sync thread, which
    /// answers its writes after a sync that began after this commit returned. A transaction
    /// of writes nobody acknowledges is answered at once; the next sync covers it.
    fn commit(&mut self, open: Open) {
        if open.durable && self.pipe.failed.load(Ordering::Acquire) {
            return self.fail(open, sync_refused());
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            return self.fail(open, e.into());
        }
        self.space.note(open.refused, open.admitted);
        if open.durable {
            self.pipe.in_flight.fetch_add(1, Ordering::AcqRel);
            if let Err(unsent) = self.to_sync.send(open.jobs) {
                self.pipe.in_flight.fetch_sub(1, Ordering::AcqRel);
                for job in unsent.0 {
                    job.complete(Err(sync_refused()));
                }
            }
        } else {
            for job in open.jobs {
                job.complete(Ok(()));
            }
        }
        if open.touches_outbox {
            self.changes.outbox.notify_one();
        }
    }
}

/// Applies one write under a savepoint of its own: when it fails, what it wrote is undone
/// and the others stand. `Err`: the transaction is lost.
fn apply_guarded(conn: &Connection, job: &mut Job) -> Result<()> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match job.apply(conn) {
        Ok(()) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
        }
        Err(_) => conn.execute_batch("ROLLBACK TO job; RELEASE job")?,
    }
    Ok(())
}

/// The writer thread. Writes are applied as they arrive in one open transaction, which
/// commits as soon as no sync is running (or at `max` writes): while the sync thread syncs
/// the last commit, the next transaction fills, so one sync covers everything that arrived
/// during the previous one, and the writer never waits on the disk. Writes nobody
/// acknowledges wait up to [`LAZY_WINDOW`] for company (outside any transaction) and, alone,
/// commit without a sync of their own.
pub(super) fn writer_loop(mut w: Writer, rx: std::sync::mpsc::Receiver<Msg>, beat: &Beat) {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    use std::time::{Duration, Instant};
    let mut open: Option<Open> = None;
    let mut lazy: Vec<Job> = Vec::new();
    let mut lazy_until = Instant::now();
    let mut closing = false;
    let _ = w.pipe.writer.set(std::thread::current());
    loop {
        let syncing = w.pipe.in_flight.load(Ordering::Acquire) > 0;
        // While a sync runs, its thread proves the pipeline turns (a hung disk stops both).
        if !syncing {
            beat.beat();
        }
        let wait = match (&open, lazy.is_empty()) {
            (Some(_), _) if !syncing => Duration::ZERO,
            (None, false) => lazy_until.saturating_duration_since(Instant::now()),
            _ => FOREIGN_POLL,
        };
        let try_recv = |rx: &std::sync::mpsc::Receiver<Msg>| {
            rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        };
        let mut next = if wait.is_zero() {
            try_recv(&rx)
        } else if open.is_none() && !lazy.is_empty() {
            // Only writes nobody waits on are held: wait out their window parked, so the
            // writes that join them (a decision's, one per call) do not each wake this
            // thread. A write someone waits on unparks it (see `enqueue`).
            w.pipe.lingering.store(true, Ordering::SeqCst);
            let mut first = try_recv(&rx);
            if matches!(first, Err(RecvTimeoutError::Timeout)) {
                std::thread::park_timeout(wait);
                first = try_recv(&rx);
            }
            w.pipe.lingering.store(false, Ordering::SeqCst);
            first
        } else {
            rx.recv_timeout(wait)
        };
        loop {
            match next {
                Ok(Msg::Job(job)) => match open.as_mut() {
                    Some(o) => {
                        if let Err(e) = w.apply(o, job) {
                            if let Some(o) = open.take() {
                                w.fail(o, e);
                            }
                        }
                    }
                    None if job.lazy() => {
                        if lazy.is_empty() {
                            lazy_until = Instant::now() + LAZY_WINDOW;
                        }
                        lazy.push(job);
                    }
                    None => {
                        lazy.push(job);
                        open = w.begin(std::mem::take(&mut lazy));
                    }
                },
                Ok(Msg::Synced) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closing = true;
                    break;
                }
            }
            let held = open.as_ref().map_or(0, |o| o.jobs.len()) + lazy.len();
            if held >= w.max {
                break;
            }
            next = try_recv(&rx);
        }
        if open.is_none()
            && !lazy.is_empty()
            && (closing || lazy.len() >= w.max || Instant::now() >= lazy_until)
        {
            open = w.begin(std::mem::take(&mut lazy));
        }
        if let Some(o) = open.take() {
            let due = closing
                || !o.durable
                || o.jobs.len() >= w.max
                || w.pipe.in_flight.load(Ordering::Acquire) == 0;
            if due {
                w.commit(o);
            } else {
                open = Some(o);
            }
        }
        if open.is_none() && lazy.is_empty() {
            if closing {
                break;
            }
            w.look_for_foreign_commits();
        }
    }
    w.finish();
}
