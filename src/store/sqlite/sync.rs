//! The sync thread: makes committed transactions durable and only then answers their writes,
//! so the writer thread commits the next transaction while the disk syncs the last one.
//!
//! Why a write acknowledged after this thread's sync is as durable as one committed with
//! `synchronous=FULL` (the argument is also in ARCHITECTURE.md, "Durable before
//! acknowledged"):
//!
//! - The writer's connection runs with `synchronous=NORMAL` in WAL mode. Its `COMMIT` writes
//!   the transaction's frames (commit frame last) to the `-wal` file with `write()` and
//!   returns without syncing; the frames are laid out exactly as under `FULL`, which would
//!   only add an fsync of the `-wal` file here. The writer hands the transaction over after
//!   `COMMIT` returned; this thread takes what it was handed and only then calls `fdatasync`
//!   on the `-wal` file, so each sync starts after the commits it answers for returned, and
//!   covers their frames (and the file's size, which `fdatasync` also writes).
//! - The `-wal` file synced is the one SQLite writes: it is opened once the store is open,
//!   and SQLite deletes or replaces it only when the last connection to the database closes,
//!   while the writer's connection stays open until this thread has stopped. A
//!   `journal_size_limit` truncation keeps the file.
//! - Frames may be overwritten before the sync only when the WAL restarts, and SQLite restarts
//!   it only after a checkpoint copied every frame into the database file and synced it
//!   (checkpoints sync the `-wal` file before copying and the database file after, under
//!   `NORMAL` as under `FULL`; the new WAL header is synced too). So a commit whose frames
//!   were overwritten is already durable in the database file. This holds whichever process
//!   on the same file checkpoints, as every ivrgate connection runs `NORMAL` or `FULL`.
//! - A recovered WAL is read frame by frame up to the first frame whose checksum fails, and
//!   only whole transactions count; `fdatasync` covers every frame written before it, so a
//!   synced transaction never sits behind a torn earlier one.
//!
//! A failed sync leaves the page cache's state unknown (a later sync may succeed without the
//! lost pages), so the store refuses every later acknowledged write until it is reopened.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};

use crate::liveness::Beat;

use super::writer::{Job, Msg};
use super::*;

/// How the `-wal` file is made durable: `fdatasync` (tests give their own).
pub(super) type WalSync = Arc<dyn Fn(&File) -> std::io::Result<()> + Send + Sync>;

pub(super) fn fdatasync() -> WalSync {
    Arc::new(|wal: &File| wal.sync_data())
}

/// What the writer thread and the sync thread share.
#[derive(Default)]
pub(super) struct Pipe {
    /// Transactions committed and handed to the sync thread, not yet synced.
    pub(super) in_flight: AtomicUsize,
    /// A sync failed: acknowledged writes are refused from then on.
    pub(super) failed: AtomicBool,
    /// The writer waits out the lazy window parked (see `writer_loop`): only a write that
    /// someone waits on unparks it; writes nobody waits on join the queue without a wake.
    pub(super) lingering: AtomicBool,
    /// The writer thread, to unpark it; set when it starts.
    pub(super) writer: std::sync::OnceLock<std::thread::Thread>,
}

/// Syncs the `-wal` file for every round of committed transactions handed over (all those
/// waiting when a sync starts share it), then answers their writes and wakes the writer.
/// Ends when the writer thread ends, after answering everything it handed over.
pub(super) fn sync_loop(
    batches: Receiver<Vec<Job>>,
    wal: File,
    sync: WalSync,
    pipe: Arc<Pipe>,
    writer: Weak<Sender<Msg>>,
    beat: Arc<Beat>,
) {
    while let Ok(first) = batches.recv() {
        let mut round = vec![first];
        while let Ok(more) = batches.try_recv() {
            round.push(more);
        }
        let synced = if pipe.failed.load(Ordering::Acquire) {
            Err(sync_refused())
        } else {
            sync(&wal).map_err(|e| {
                if !pipe.failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %e, "cannot sync the write-ahead log: acknowledged writes are refused until ivrgate restarts");
                }
                sync_refused()
            })
        };
        let handed = round.len();
        for job in round.into_iter().flatten() {
            job.complete(synced.clone());
        }
        pipe.in_flight.fetch_sub(handed, Ordering::AcqRel);
        beat.beat();
        if let Some(writer) = writer.upgrade() {
            let _ = writer.send(Msg::Synced);
        }
    }
}

pub(super) fn sync_refused() -> StoreError {
    StoreError::Backend("the write-ahead log could not be synced; restart ivrgate".into())
}
