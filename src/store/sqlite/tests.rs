//! What only the embedded store does: large payloads kept apart, the free-space reserve,
//! schema versions, dead owners' claims and connector leases, acknowledgements only after
//! the sync that covers them. Behaviour both backends share is
//! tested in `store/conformance.rs`.

use rusqlite::params;
use serde_json::json;

use super::schema::SCHEMA;
use super::*;

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

/// A `-wal` sync the test holds: each call counts itself as started and waits until the test
/// releases it (sync `n` is released once `released >= n`).
#[derive(Default)]
struct HeldSyncs {
    /// (started, released)
    state: std::sync::Mutex<(usize, usize)>,
    turn: std::sync::Condvar,
}

impl HeldSyncs {
    fn sync(self: &Arc<Self>) -> sync::WalSync {
        let held = self.clone();
        Arc::new(move |wal: &std::fs::File| {
            let mut state = held.state.lock().expect("lock");
            state.0 += 1;
            let n = state.0;
            held.turn.notify_all();
            while state.1 < n {
                state = held.turn.wait(state).expect("wait");
            }
            drop(state);
            wal.sync_data()
        })
    }

    fn wait_started(&self, n: usize) {
        let state = self.state.lock().expect("lock");
        let (state, waited) = self
            .turn
            .wait_timeout_while(state, std::time::Duration::from_secs(10), |s| s.0 < n)
            .expect("wait");
        assert!(!waited.timed_out(), "sync {n} never started: {state:?}");
    }

    fn release(&self, n: usize) {
        self.state.lock().expect("lock").1 = n;
        self.turn.notify_all();
    }
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn no_probe() -> FreeSpace {
    Arc::new(|| Ok(u64::MAX))
}

/// The writer commits the next transaction while the last one syncs, but a write is answered
/// only after a sync that began after its transaction committed: B, committed while the sync
/// of A runs, is not acknowledged when that sync ends, only when the next one does.
#[test]
fn an_acknowledgement_waits_for_a_sync_begun_after_its_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let held = Arc::new(HeldSyncs::default());
    // One write per transaction, so B commits while A's sync is held.
    let store = SqliteStore::open_with(dir.path(), 1, no_probe(), held.sync()).expect("open");
    let inspect = Connection::open(dir.path().join("ivrgate.db")).expect("inspect");
    let visible = |event: &str| -> bool {
        inspect
            .query_row(
                "SELECT count(*) FROM outbox WHERE event_id = ?1",
                [event],
                |r| r.get::<_, i64>(0),
            )
            .expect("count")
            == 1
    };
    let rt = multi_thread_runtime();
    let commit = |n: usize| {
        let store = store.clone();
        rt.spawn(async move { store.commit(event(n, 10)).await })
    };
    let a = commit(1);
    held.wait_started(1);
    let b = commit(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !visible("msg_2") {
        assert!(std::time::Instant::now() < deadline, "B never committed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(visible("msg_1"));
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!a.is_finished(), "A answered before its sync ended");
    assert!(!b.is_finished(), "B answered before any sync ended");

    held.release(1);
    let a = rt.block_on(a).expect("join").expect("commit A");
    assert!(matches!(a, CommitOutcome::Committed { .. }), "{a:?}");
    // B committed after sync 1 began: only sync 2 covers it.
    held.wait_started(2);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !b.is_finished(),
        "B answered after a sync that began before it committed"
    );
    held.release(2);
    let b = rt.block_on(b).expect("join").expect("commit B");
    assert!(matches!(b, CommitOutcome::Committed { .. }), "{b:?}");
    held.release(usize::MAX);
    store.close();
}

/// What a power cut would leave, taken at every sync: the `-wal` file as it is when the sync
/// begins (then the database file), the state a sync is sure to have made durable. Every
/// acknowledged write, under concurrent load, is in the image of the last sync before its
/// acknowledgement, read back by SQLite's own recovery.
#[test]
fn every_acknowledged_write_is_in_the_image_of_the_last_sync() {
    type Image = Arc<(Vec<u8>, Vec<u8>)>;
    let dir = tempfile::tempdir().expect("tmp");
    let last: Arc<std::sync::Mutex<Image>> = Arc::default();
    let sync: sync::WalSync = {
        let (last, db) = (last.clone(), dir.path().join("ivrgate.db"));
        let wal = dir.path().join("ivrgate.db-wal");
        Arc::new(move |file: &std::fs::File| {
            // The log first: a checkpoint between the two copies puts its frames in the
            // database file, never takes them from both.
            let log = std::fs::read(&wal)?;
            let main = std::fs::read(&db)?;
            // Give the writer time to commit more behind this sync's back.
            std::thread::sleep(std::time::Duration::from_millis(2));
            file.sync_data()?;
            *last.lock().expect("lock") = Arc::new((main, log));
            Ok(())
        })
    };
    let store = SqliteStore::open_with(dir.path(), 8, no_probe(), sync).expect("open");
    let rt = multi_thread_runtime();
    let acked: Vec<(String, Image)> = rt.block_on(async {
        let mut tasks = Vec::new();
        for client in 0..16 {
            let (store, last) = (store.clone(), last.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..20 {
                    let n = client * 100 + i;
                    let outcome = store.commit(event(n, 300)).await.expect("commit");
                    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
                    let image = last.lock().expect("lock").clone();
                    acked.push((format!("msg_{n}"), image));
                }
                acked
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("join"));
        }
        all
    });
    store.close();
    let mut images: Vec<(Image, Vec<String>)> = Vec::new();
    for (event_id, image) in acked {
        match images.iter_mut().find(|(i, _)| Arc::ptr_eq(i, &image)) {
            Some((_, ids)) => ids.push(event_id),
            None => images.push((image, vec![event_id])),
        }
    }
    assert!(images.len() > 1, "one sync for everything: no pipeline");
    for (image, ids) in &images {
        let cut = tempfile::tempdir().expect("tmp");
        std::fs::write(cut.path().join("ivrgate.db"), &image.0).expect("write db");
        std::fs::write(cut.path().join("ivrgate.db-wal"), &image.1).expect("write wal");
        let conn = Connection::open(cut.path().join("ivrgate.db")).expect("recover");
        for id in ids {
            let found: i64 = conn
                .query_row(
                    "SELECT count(*) FROM outbox WHERE event_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .expect("count");
            assert_eq!(
                found, 1,
                "{id} was acknowledged but is not in the last synced image"
            );
        }
    }
}

/// A failed sync is never taken for a durable commit: its writes are answered with an
/// error, and so is every acknowledged write after it (the page cache may have lost pages a
/// later sync would not report).
#[test]
fn a_failed_sync_refuses_its_writes_and_all_after() {
    let dir = tempfile::tempdir().expect("tmp");
    let fail = Arc::new(AtomicBool::new(false));
    let sync: sync::WalSync = {
        let fail = fail.clone();
        Arc::new(move |file: &std::fs::File| {
            if fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("EIO (test)"));
            }
            file.sync_data()
        })
    };
    let store = SqliteStore::open_with(dir.path(), 16, no_probe(), sync).expect("open");
    runtime().block_on(async {
        let ok = store.commit(event(1, 10)).await.expect("commit");
        assert!(matches!(ok, CommitOutcome::Committed { .. }), "{ok:?}");
        fail.store(true, Ordering::SeqCst);
        assert!(store.commit(event(2, 10)).await.is_err());
        fail.store(false, Ordering::SeqCst);
        assert!(
            store.commit(event(3, 10)).await.is_err(),
            "a sync after a failed one does not make the store durable again"
        );
    });
    store.close();
}
