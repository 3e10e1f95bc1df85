//! The writer thread: writes queued by this process (units of work, claims, outcomes, admin
//! changes) are run by one thread and committed together in one transaction (group commit),
//! after a free-space check before each batch that adds rows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::liveness::Beat;

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
        sender.send(job).map_err(|_| StoreError::Closed)?;
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

pub(super) fn writer_loop(
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
