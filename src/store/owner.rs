//! Lease owners: the identity a process writes into the leases it takes (deliveries, timers),
//! with a proof that the process is alive which any other instance can test.
//!
//! The embedded store proves liveness with an exclusive OS lock on `owners/<id>.lock` under
//! the state directory, held for the process's lifetime. The kernel drops the lock when the
//! process ends, however it ends (`kill -9` included), so an instance that can take an owner's
//! lock knows that owner is gone and frees its claims at once instead of waiting out the
//! lease. The lock file appears only once it is locked (it is created under a temporary name
//! and renamed), so a live owner is never mistaken for a dead one. The lock needs a local
//! filesystem with `flock` semantics; where it cannot be tested, leases still expire.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

// `flock(2)`; std's `File::try_lock` is newer than the workspace's minimum Rust.
use fs4::fs_std::FileExt;

/// How an owner shows that it is alive.
#[derive(Debug)]
pub enum Liveness {
    /// An exclusive lock held on this file while the process lives.
    LockFile { path: PathBuf, file: File },
}

/// One process's identity as a lease owner.
#[derive(Debug)]
pub struct Owner {
    /// Written as `lease_owner` into every claim this process takes.
    pub id: String,
    pub liveness: Liveness,
}

/// The directory of lock files under a state directory.
pub fn owners_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("owners")
}

impl Owner {
    /// Registers a new owner `id` under `state_dir`: its lock file exists only once locked.
    pub fn register(state_dir: &Path, id: String) -> io::Result<Owner> {
        let dir = owners_dir(state_dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{id}.lock"));
        let staging = dir.join(format!(".{id}.new"));
        let file = File::create(&staging)?;
        if !file.try_lock_exclusive()? {
            return Err(io::Error::other("a fresh lock file is locked by another"));
        }
        std::fs::rename(&staging, &path)?;
        Ok(Owner {
            id,
            liveness: Liveness::LockFile { path, file },
        })
    }

    /// Ends this owner (a graceful stop): its lock file goes, then the lock.
    pub fn retire(self) {
        match self.liveness {
            Liveness::LockFile { path, file } => {
                let _ = std::fs::remove_file(&path);
                drop(file);
            }
        }
    }
}

/// An owner found dead: its lock is held here until [`DeadOwner::forget`], so two instances
/// sweeping at once do not both act on it at the same moment (doing so is harmless anyway).
#[derive(Debug)]
pub struct DeadOwner {
    pub id: String,
    path: PathBuf,
    _lock: File,
}

impl DeadOwner {
    /// Removes the dead owner's lock file, once its claims are freed.
    pub fn forget(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the owner `id` is gone: its lock file can be locked, or it is missing (a live
/// owner's file exists from registration until it retires, and a retiring owner gives its
/// leases back first). An id that could not be an owner's is never called dead.
pub fn is_dead(state_dir: &Path, id: &str) -> io::Result<bool> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Ok(false);
    }
    let path = owners_dir(state_dir).join(format!("{id}.lock"));
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    // The lock is dropped with `file` at once: this only tests it.
    file.try_lock_exclusive()
}

/// Owners under `state_dir` whose lock is held: a process is using the store.
pub fn live_owners(state_dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(owners_dir(state_dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut live = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".lock")) {
            if !is_dead(state_dir, id)? {
                live.push(id.to_owned());
            }
        }
    }
    live.sort();
    Ok(live)
}

/// Owners under `state_dir`, other than `me`, whose lock can be taken: their process is gone.
pub fn dead_owners(state_dir: &Path, me: &str) -> io::Result<Vec<DeadOwner>> {
    let dir = owners_dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dead = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
            continue;
        };
        if id == me || id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock_exclusive().unwrap_or(false) {
            dead.push(DeadOwner {
                id: id.to_owned(),
                path,
                _lock: file,
            });
        }
    }
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_owner_is_not_dead_and_a_retired_or_dropped_one_is_gone() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = Owner::register(dir.path(), "1-aaaa".into()).expect("a");
        let b = Owner::register(dir.path(), "2-bbbb".into()).expect("b");
        assert!(dead_owners(dir.path(), "2-bbbb").expect("scan").is_empty());
        // Dropping an owner without retiring it is what a killed process leaves: its file,
        // unlocked.
        drop(a);
        let dead = dead_owners(dir.path(), "2-bbbb").expect("scan");
        assert_eq!(
            dead.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["1-aaaa"]
        );
        // While one instance holds a dead owner's lock, another does not see it.
        assert!(dead_owners(dir.path(), "3-cccc").expect("scan").is_empty());
        for d in dead {
            d.forget();
        }
        b.retire();
        assert!(dead_owners(dir.path(), "x").expect("scan").is_empty());
        let left: Vec<_> = std::fs::read_dir(owners_dir(dir.path()))
            .expect("dir")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
