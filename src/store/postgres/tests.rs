use super::migrate::MIGRATION_FILES;
use super::testing::TestDb;
use super::*;

async fn versions(pool: &Pool) -> Vec<(i64, String, i64)> {
    let client = pool.get().await.expect("client");
    client
        .query(
            "SELECT version, name, compatible_from FROM ivrgate_schema ORDER BY version",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn instances_starting_at_once_migrate_once() {
    let Some(db) = TestDb::create("migrate_once").await else {
        return;
    };
    let pools: Vec<Pool> = (0..3).map(|_| db.settings.pool().expect("pool")).collect();
    // Started together: each waits on the advisory lock the first one holds.
    let handles: Vec<_> = pools
        .iter()
        .cloned()
        .map(|p| tokio::spawn(async move { migrate(&p).await }))
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.expect("join"));
    }
    let mut fresh = 0;
    for r in &results {
        let m = r.as_ref().expect("migrated");
        assert_eq!(m.to, 2);
        if m.from.is_none() {
            fresh += 1;
        }
    }
    assert_eq!(
        fresh, 1,
        "exactly one instance created the schema: {results:?}"
    );
    assert_eq!(
        versions(&pools[0]).await,
        vec![
            (1, "init".to_owned(), 1),
            (2, "shared_breakers".to_owned(), 1)
        ]
    );
    // The tables are there and usable.
    let client = pools[0].get().await.expect("client");
    let n: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .expect("outbox")
        .get(0);
    assert_eq!(n, 0);
    let sync: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(sync, "on");
    drop(client);
    let online = check_online(&db.settings).await.expect("online");
    assert!(online.contains("schema version 2 (current)"), "{online}");
    drop(pools);
    db.drop_db().await;
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_and_reported() {
    let Some(db) = TestDb::create("incompatible").await else {
        return;
    };
    let pool = db.settings.pool().expect("pool");
    migrate(&pool).await.expect("migrate");
    let client = pool.get().await.expect("client");
    // A newer binary's expanding migration: this one still runs.
    client
        .execute(
            "INSERT INTO ivrgate_schema (version, name, compatible_from) VALUES (3, 'expand', 1)",
            &[],
        )
        .await
        .expect("insert");
    assert_eq!(
        migrate(&pool).await,
        Ok(Migrated {
            from: Some(3),
            to: 3
        })
    );
    let online = check_online(&db.settings).await.expect("online");
    assert!(online.contains("marked compatible"), "{online}");
    // A contracting one: refused at start and by check-config --online.
    client
        .execute(
            "INSERT INTO ivrgate_schema (version, name, compatible_from) VALUES (4, 'contract', 4)",
            &[],
        )
        .await
        .expect("insert");
    let why = migrate(&pool).await.expect_err("refused");
    assert!(why.contains("schema is at version 4"), "{why}");
    assert!(why.contains("incompatible with this ivrgate"), "{why}");
    let why = check_online(&db.settings).await.expect_err("reported");
    assert!(why.contains("incompatible"), "{why}");
    drop(client);
    drop(pool);
    db.drop_db().await;
}

#[tokio::test]
async fn tables_without_a_version_record_are_reported() {
    let Some(db) = TestDb::create("unversioned").await else {
        return;
    };
    let pool = db.settings.pool().expect("pool");
    let client = pool.get().await.expect("client");
    client
        .batch_execute("CREATE TABLE outbox (id bigint)")
        .await
        .expect("create");
    let why = check_online(&db.settings).await.expect_err("reported");
    assert!(why.contains("not migrated by ivrgate"), "{why}");
    let why = migrate(&pool).await.expect_err("refused");
    assert!(why.contains("not migrated by ivrgate"), "{why}");
    drop(client);
    drop(pool);
    db.drop_db().await;
}

#[tokio::test]
async fn an_unreachable_database_is_reported_with_its_hosts() {
    let storage = StorageConfig {
        backend: StorageBackend::Postgres,
        url: Some(crate::config::Secret::from(
            "postgresql://ivrgate:hunter2@127.0.0.1:1,127.0.0.1:2/ivrgate?connect_timeout=2"
                .to_owned(),
        )),
        connect_timeout_ms: 2_000,
        ..StorageConfig::default()
    };
    let settings = PgSettings::from_config(&storage)
        .expect("valid")
        .expect("postgres");
    let why = check_online(&settings).await.expect_err("unreachable");
    assert!(why.contains("unreachable"), "{why}");
    assert!(why.contains("127.0.0.1:1,127.0.0.1:2"), "{why}");
    assert!(!why.contains("hunter2"), "{why}");
}

#[test]
fn settings_are_checked_without_connecting() {
    let mut storage = StorageConfig {
        backend: StorageBackend::Postgres,
        ..StorageConfig::default()
    };
    assert!(PgSettings::from_config(&storage)
        .expect_err("no url")
        .contains("storage.url is required"));
    storage.url = Some(crate::config::Secret::from(
        "env:IVRGATE_TEST_NO_SUCH_VAR".to_owned(),
    ));
    assert!(PgSettings::from_config(&storage)
        .expect_err("unset")
        .contains("IVRGATE_TEST_NO_SUCH_VAR"));
    storage.url = Some(crate::config::Secret::from(
        "postgresql://u:pw@h1:5432,h2:5433/db?sslmode=bogus".to_owned(),
    ));
    let why = PgSettings::from_config(&storage).expect_err("bad");
    assert!(!why.contains("pw@"), "{why}");
    storage.url = Some(crate::config::Secret::from(
        "postgresql://u:pw@h1:5432,h2:5433/db?sslmode=require".to_owned(),
    ));
    let settings = PgSettings::from_config(&storage).expect("ok").expect("pg");
    assert_eq!(settings.hosts(), "h1:5432,h2:5433");
    assert!(!format!("{settings:?}").contains("pw"));
    storage.tls_ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
    assert!(PgSettings::from_config(&storage)
        .expect_err("ca")
        .contains("storage.tls_ca_file"));
    storage.backend = StorageBackend::Sqlite;
    assert!(PgSettings::from_config(&storage).expect("sqlite").is_none());
}

fn key() -> crate::store::LeaseKey {
    crate::store::LeaseKey {
        tenant: "acme".into(),
        adapter: "ctips".into(),
        name: "session".into(),
    }
}

async fn two_instances(db: &TestDb) -> (PgStore, PgStore) {
    let lapse = Duration::from_secs(10);
    let a = PgStore::open(&db.settings, "own_a".into(), lapse)
        .await
        .expect("open a");
    let b = PgStore::open(&db.settings, "own_b".into(), lapse)
        .await
        .expect("open b");
    (a, b)
}

#[tokio::test]
async fn a_lease_goes_to_one_of_two_racing_instances_and_its_epoch_grows() {
    use crate::store::LeaseAcquire;
    let Some(db) = TestDb::create("lease_race").await else {
        return;
    };
    let (a, b) = two_instances(&db).await;
    let (ra, rb) = tokio::join!(
        a.acquire_lease(key(), "own_a".into(), 60_000),
        b.acquire_lease(key(), "own_b".into(), 60_000)
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    let (winner, loser, epoch) = match (&ra, &rb) {
        (LeaseAcquire::Acquired { epoch, .. }, LeaseAcquire::Held(row)) => {
            assert_eq!(row.holder.as_deref(), Some("own_a"));
            (&a, &b, *epoch)
        }
        (LeaseAcquire::Held(row), LeaseAcquire::Acquired { epoch, .. }) => {
            assert_eq!(row.holder.as_deref(), Some("own_b"));
            (&b, &a, *epoch)
        }
        other => panic!("exactly one must win: {other:?}"),
    };
    assert_eq!(epoch, 1);
    // The holder taking it again (it lost track) gets a new epoch, fencing its old one.
    let again = winner
        .acquire_lease(key(), winner.owner_id().into(), 60_000)
        .await
        .expect("again");
    assert!(
        matches!(again, LeaseAcquire::Acquired { epoch: 2, .. }),
        "{again:?}"
    );
    // Released: the other instance takes it at once, with the next epoch.
    assert!(winner
        .release_lease(key(), winner.owner_id().into(), 2)
        .await
        .expect("release"));
    let taken = loser
        .acquire_lease(key(), loser.owner_id().into(), 60_000)
        .await
        .expect("take");
    assert!(
        matches!(taken, LeaseAcquire::Acquired { epoch: 3, .. }),
        "{taken:?}"
    );
    let row = a.read_lease(key()).await.expect("read").expect("row");
    assert_eq!(
        (row.holder.as_deref(), row.epoch),
        (Some(loser.owner_id()), 3)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_lease_is_renewed_only_by_its_holder_with_its_epoch_before_it_lapses() {
    use crate::store::LeaseAcquire;
    let Some(db) = TestDb::create("lease_renew").await else {
        return;
    };
    let (a, b) = two_instances(&db).await;
    let LeaseAcquire::Acquired { epoch, until_ms } = a
        .acquire_lease(key(), "own_a".into(), 60_000)
        .await
        .expect("acquire")
    else {
        panic!("free lease not acquired");
    };
    let now = a.now_ms().await.expect("now");
    assert!(
        until_ms > now && until_ms <= now + 60_000,
        "{until_ms} vs {now}"
    );
    assert_eq!(
        b.renew_lease(key(), "own_b".into(), epoch, 60_000).await,
        Ok(None)
    );
    assert_eq!(
        a.renew_lease(key(), "own_a".into(), epoch + 1, 60_000)
            .await,
        Ok(None)
    );
    assert!(a
        .renew_lease(key(), "own_a".into(), epoch, 60_000)
        .await
        .expect("renew")
        .is_some());
    assert!(!b
        .release_lease(key(), "own_b".into(), epoch)
        .await
        .expect("not b's"));
    // Lapsed (by the database's clock): no renewal, and another instance takes it.
    a.client()
        .await
        .expect("client")
        .execute(
            &format!("UPDATE leases SET until_ms = {DB_NOW_MS} - 1"),
            &[],
        )
        .await
        .expect("lapse");
    assert_eq!(
        a.renew_lease(key(), "own_a".into(), epoch, 60_000).await,
        Ok(None)
    );
    let taken = b
        .acquire_lease(key(), "own_b".into(), 60_000)
        .await
        .expect("take");
    assert!(
        matches!(taken, LeaseAcquire::Acquired { epoch: 2, .. }),
        "{taken:?}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_dead_instances_lease_is_taken_at_once_and_a_live_ones_kept() {
    use crate::store::LeaseAcquire;
    let Some(db) = TestDb::create("lease_dead").await else {
        return;
    };
    let (a, b) = two_instances(&db).await;
    assert!(matches!(
        a.acquire_lease(key(), "own_a".into(), 600_000).await,
        Ok(LeaseAcquire::Acquired { epoch: 1, .. })
    ));
    // A live holder keeps it for the whole lease.
    let held = b.acquire_lease(key(), "own_b".into(), 600_000).await;
    assert!(matches!(held, Ok(LeaseAcquire::Held(_))), "{held:?}");
    // Its heartbeat lapsed: taken at once, not after the lease.
    a.client()
        .await
        .expect("client")
        .execute(
            "UPDATE instances SET heartbeat_at = now() - interval '11 seconds' WHERE owner_id = 'own_a'",
            &[],
        )
        .await
        .expect("age");
    let taken = b.acquire_lease(key(), "own_b".into(), 600_000).await;
    assert!(
        matches!(taken, Ok(LeaseAcquire::Acquired { epoch: 2, .. })),
        "{taken:?}"
    );
    // A holder that left the registry (graceful stop) is not live either.
    a.heartbeat().await.expect("a is back");
    b.deregister().await.expect("b leaves");
    let taken = a.acquire_lease(key(), "own_a".into(), 600_000).await;
    assert!(
        matches!(taken, Ok(LeaseAcquire::Acquired { epoch: 3, .. })),
        "{taken:?}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn the_change_feed_wakes_on_notify_and_catches_up_after_a_lost_connection() {
    let Some(db) = TestDb::create("change_feed").await else {
        return;
    };
    let feed = Arc::new(crate::store::ChangeFeed::default());
    let listener =
        ChangeListener::start(&db.settings, "own_me".into(), feed.clone()).expect("listen");
    let pool = db.settings.pool().expect("pool");
    let client = pool.get().await.expect("client");
    // Connected: the first catch-up wakes every waiter.
    tokio::time::timeout(Duration::from_secs(20), feed.timers.notified())
        .await
        .expect("connected and caught up");
    tokio::time::timeout(Duration::from_secs(20), feed.outbox.notified())
        .await
        .expect("the catch-up wakes the outbox too");
    assert_eq!(listener.connections(), 1);
    // Another instance's commit wakes the outbox waiters; this instance's own does not.
    client
        .execute(NOTIFY_SQL, &[&"own_me:outbox"])
        .await
        .expect("notify own");
    client
        .execute(NOTIFY_SQL, &[&"own_other:outbox"])
        .await
        .expect("notify");
    tokio::time::timeout(Duration::from_secs(20), feed.outbox.notified())
        .await
        .expect("woken by another instance's commit");
    // The listening connection dies (as when the database restarts): it reconnects and
    // wakes every waiter, since notices sent meanwhile are lost.
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'ivrgate-listen' AND datname = current_database()",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 1);
    tokio::time::timeout(Duration::from_secs(20), async {
        while listener.connections() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("reconnected");
    tokio::time::timeout(Duration::from_secs(20), feed.timers.notified())
        .await
        .expect("caught up after the reconnect");
    tokio::time::timeout(Duration::from_secs(20), feed.outbox.notified())
        .await
        .expect("the outbox too");
    client
        .execute(NOTIFY_SQL, &[&"own_other:timers"])
        .await
        .expect("notify");
    tokio::time::timeout(Duration::from_secs(20), feed.timers.notified())
        .await
        .expect("woken after the reconnect");
    drop(listener);
    drop(client);
    drop(pool);
    db.drop_db().await;
}

async fn insert_events(store: &PgStore, n: i64) {
    let client = store.client().await.expect("client");
    for i in 0..n {
        client
            .execute(
                "INSERT INTO outbox (event_id, tenant, event_type, payload, created_at_ms, next_attempt_ms, call_id) \
                 VALUES ($1, $2, 'call.cdr', $3, 1, $4, $5)",
                &[&format!("msg_{i}"), &if i == 0 { "skipme" } else { "acme" }, &format!("{{\"n\":{i}}}").into_bytes(), &(100 + i), &format!("call_{i}")],
            )
            .await
            .expect("insert");
    }
    client
        .execute(
            "INSERT INTO tenant_counters (tenant, pending) VALUES ('acme', $1)",
            &[&(n - 1)],
        )
        .await
        .expect("counter");
}

#[tokio::test]
async fn deliveries_are_claimed_once_across_instances_and_settled_only_by_their_holder() {
    use crate::store::DeliveryUpdate;
    let Some(db) = TestDb::create("claims").await else {
        return;
    };
    let (a, b) = two_instances(&db).await;
    insert_events(&a, 6).await;
    let skip = vec!["skipme".to_owned()];
    // Not due yet: nothing.
    assert!(a
        .claim_deliveries("own_a".into(), 50, 60_000, 10, skip.clone())
        .await
        .expect("claim")
        .is_empty());
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let (ca, cb) = tokio::join!(
            a.claim_deliveries("own_a".into(), 1_000, 60_000, 2, skip.clone()),
            b.claim_deliveries("own_b".into(), 1_000, 60_000, 2, skip.clone())
        );
        let (ca, cb) = (ca.expect("a"), cb.expect("b"));
        if ca.is_empty() && cb.is_empty() {
            break;
        }
        for d in ca.iter().chain(&cb) {
            // The claim carries the event's call, for the delivery's log lines.
            assert_eq!(
                d.call_id.as_deref(),
                Some(d.event_id.replace("msg_", "call_").as_str())
            );
            assert!(
                seen.insert(d.event_id.clone()),
                "{} claimed twice",
                d.event_id
            );
            assert_eq!(d.tenant, "acme");
        }
        for w in ca.windows(2).chain(cb.windows(2)) {
            assert!(w[0].id < w[1].id, "oldest first");
        }
    }
    assert_eq!(
        seen.len(),
        5,
        "every due event of the other tenants, once: {seen:?}"
    );
    // The owner's outcomes count; another owner's are ignored.
    let client = a.client().await.expect("client");
    let id_of = |event: &str| {
        let client = &client;
        let event = event.to_owned();
        async move {
            let row = client
                .query_one(
                    "SELECT id, lease_owner FROM outbox WHERE event_id = $1",
                    &[&event],
                )
                .await
                .expect("row");
            (row.get::<_, i64>(0), row.get::<_, String>(1))
        }
    };
    let (id1, holder1) = id_of("msg_1").await;
    let (other, wrong) = if holder1 == "own_a" {
        (&b, "own_b")
    } else {
        (&a, "own_a")
    };
    other
        .finish_deliveries(
            wrong.into(),
            vec![DeliveryUpdate::Delivered { id: id1, at_ms: 5 }],
        )
        .await
        .expect("ignored");
    let holder_store = if holder1 == "own_a" { &a } else { &b };
    holder_store
        .finish_deliveries(
            holder1.clone(),
            vec![DeliveryUpdate::Delivered { id: id1, at_ms: 5 }],
        )
        .await
        .expect("delivered");
    let (id2, holder2) = id_of("msg_2").await;
    let store2 = if holder2 == "own_a" { &a } else { &b };
    store2
        .finish_deliveries(
            holder2,
            vec![DeliveryUpdate::Retry {
                id: id2,
                next_ms: 2_000,
                error: "503".into(),
            }],
        )
        .await
        .expect("retry");
    let rows = client
        .query(
            "SELECT event_id, status, attempts, lease_owner, last_error FROM outbox ORDER BY id",
            &[],
        )
        .await
        .expect("rows");
    let row = |i: usize| {
        (
            rows[i].get::<_, String>(0),
            rows[i].get::<_, i16>(1),
            rows[i].get::<_, i32>(2),
            rows[i].get::<_, Option<String>>(3),
            rows[i].get::<_, Option<String>>(4),
        )
    };
    assert_eq!(row(1), ("msg_1".into(), 1, 1, None, None));
    assert_eq!(row(2), ("msg_2".into(), 0, 1, None, Some("503".into())));
    let pending: i64 = client
        .query_one(
            "SELECT pending FROM tenant_counters WHERE tenant = 'acme'",
            &[],
        )
        .await
        .expect("c")
        .get(0);
    assert_eq!(pending, 4);
    // The retried one is due again at its time, for whoever claims.
    let again = b
        .claim_deliveries("own_b".into(), 2_000, 60_000, 10, skip)
        .await
        .expect("claim");
    assert_eq!(
        again
            .iter()
            .map(|d| d.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["msg_2"]
    );
    assert_eq!(again[0].attempts, 1);
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn a_dead_instances_claims_are_freed_when_its_heartbeat_lapses() {
    let Some(db) = TestDb::create("dead_claims").await else {
        return;
    };
    let (a, b) = two_instances(&db).await;
    insert_events(&a, 4).await;
    let claimed = a
        .claim_deliveries("own_a".into(), 1_000, 600_000, 10, vec![])
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4);
    // Live: nothing to recover, and its claims stay its own for the whole lease.
    assert_eq!(b.recover_dead_owners().await, Ok(vec![]));
    assert!(b
        .claim_deliveries("own_b".into(), 1_000, 600_000, 10, vec![])
        .await
        .expect("claim")
        .is_empty());
    a.client()
        .await
        .expect("client")
        .execute("UPDATE instances SET heartbeat_at = now() - interval '11 seconds' WHERE owner_id = 'own_a'", &[])
        .await
        .expect("age");
    assert_eq!(b.recover_dead_owners().await, Ok(vec!["own_a".to_owned()]));
    let taken = b
        .claim_deliveries("own_b".into(), 1_000, 600_000, 10, vec![])
        .await
        .expect("claim");
    assert_eq!(taken.len(), 4, "taken over at once, not after the lease");
    assert_eq!(b.recover_dead_owners().await, Ok(vec![]));
    db.drop_db().await;
}

#[tokio::test]
async fn timers_are_claimed_once_and_a_reset_timer_survives_its_old_run() {
    let Some(db) = TestDb::create("timers").await else {
        return;
    };
    let (a, b) = two_instances(&db).await;
    let client = a.client().await.expect("client");
    for (key, due) in [("t1", 10i64), ("t2", 20), ("t3", 30), ("later", 5_000)] {
        client
            .execute(
                "INSERT INTO timers (key, kind, tenant, due_ms, payload) VALUES ($1, 'call_expiry', 'acme', $2, $3)",
                &[&key, &due, &serde_json::json!({"key": key})],
            )
            .await
            .expect("timer");
    }
    let (ta, tb) = tokio::join!(
        a.claim_timers("own_a".into(), 1_000, 60_000, 10),
        b.claim_timers("own_b".into(), 1_000, 60_000, 10)
    );
    let (ta, tb) = (ta.expect("a"), tb.expect("b"));
    let mut keys: Vec<&str> = ta.iter().chain(&tb).map(|t| t.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["t1", "t2", "t3"], "each due timer once");
    let (winner, owner) = if ta.iter().any(|t| t.key == "t1") {
        (&a, "own_a")
    } else {
        (&b, "own_b")
    };
    let t1 = ta.iter().chain(&tb).find(|t| t.key == "t1").expect("t1");
    assert_eq!(t1.payload, serde_json::json!({"key": "t1"}));
    // t2 is set again while it runs (which clears its lease): finishing keeps it.
    client
        .execute("UPDATE timers SET due_ms = 3000, lease_owner = NULL, lease_until_ms = 0 WHERE key = 't2'", &[])
        .await
        .expect("reset");
    let t2_owner = if ta.iter().any(|t| t.key == "t2") {
        "own_a"
    } else {
        "own_b"
    };
    a.finish_timer("t2".into(), t2_owner.into())
        .await
        .expect("finish t2");
    winner
        .finish_timer("t1".into(), "someone_else".into())
        .await
        .expect("not theirs");
    winner
        .finish_timer("t1".into(), owner.into())
        .await
        .expect("finish t1");
    let t3_owner = if ta.iter().any(|t| t.key == "t3") {
        "own_a"
    } else {
        "own_b"
    };
    a.release_timer("t3".into(), t3_owner.into())
        .await
        .expect("release t3");
    let left: Vec<String> = client
        .query("SELECT key FROM timers ORDER BY key", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["later", "t2", "t3"]);
    let again = b
        .claim_timers("own_b".into(), 3_000, 60_000, 10)
        .await
        .expect("claim");
    let keys: Vec<&str> = again.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["t3", "t2"],
        "released and reset timers, oldest first"
    );
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn queue_summary_event_pages_and_retry_now() {
    use crate::store::{EventQuery, EventStatus, QueueSummary};
    let Some(db) = TestDb::create("admin_views").await else {
        return;
    };
    let (a, _b) = two_instances(&db).await;
    let client = a.client().await.expect("client");
    // (event, tenant, type, status, created, next attempt, lease until, last error)
    for (event, tenant, kind, status, created, next, lease, error) in [
        (
            "p1",
            "acme",
            "call.cdr",
            0i16,
            100i64,
            5_000i64,
            0i64,
            Some("HTTP 503 Service Unavailable"),
        ),
        (
            "p2",
            "acme",
            "call.hangup",
            0,
            200,
            9_000,
            0,
            Some("connection refused"),
        ),
        ("p3", "acme", "call.cdr", 0, 300, 9_000, i64::MAX, None),
        (
            "d1",
            "acme",
            "call.cdr",
            2,
            50,
            1,
            0,
            Some("HTTP 500 Internal Server Error"),
        ),
        ("q1", "beta", "call.cdr", 0, 400, 7_000, 0, None),
    ] {
        client
            .execute(
                "INSERT INTO outbox (event_id, tenant, event_type, payload, created_at_ms, \
                 next_attempt_ms, status, attempts, last_error, lease_until_ms, call_id) \
                 VALUES ($1, $2, $3, '\\x7b7d', $4, $5, $6, 1, $7, $8, 'call_x')",
                &[
                    &event, &tenant, &kind, &created, &next, &status, &error, &lease,
                ],
            )
            .await
            .expect("insert");
    }
    let summary = a.queue_summary().await.expect("summary");
    assert_eq!(
        summary,
        vec![
            QueueSummary {
                tenant: "acme".into(),
                pending: 3,
                dead: 1,
                oldest_pending_ms: Some(100),
                next_attempt_ms: Some(5_000),
                // The newest stored event with an error (d1, stored after p1 and p2).
                last_error: Some("HTTP 500 Internal Server Error".into()),
            },
            QueueSummary {
                tenant: "beta".into(),
                pending: 1,
                dead: 0,
                oldest_pending_ms: Some(400),
                next_attempt_ms: Some(7_000),
                last_error: None,
            },
        ]
    );
    let page = |status, tenant: Option<&str>, kind: Option<&str>, after, limit| EventQuery {
        status,
        tenant: tenant.map(str::to_owned),
        event_type: kind.map(str::to_owned),
        event_id: None,
        after_id: after,
        limit,
    };
    let first = a
        .list_events(page(EventStatus::Pending, Some("acme"), None, None, 2))
        .await
        .expect("page");
    let ids: Vec<&str> = first.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["p1", "p2"]);
    assert_eq!(first[0].call_id.as_deref(), Some("call_x"));
    assert_eq!(first[0].status, EventStatus::Pending);
    let rest = a
        .list_events(page(
            EventStatus::Pending,
            Some("acme"),
            None,
            Some(first[1].id),
            2,
        ))
        .await
        .expect("page");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event_id, "p3");
    let hangups = a
        .list_events(page(
            EventStatus::Pending,
            None,
            Some("call.hangup"),
            None,
            10,
        ))
        .await
        .expect("page");
    assert_eq!(hangups.len(), 1);
    let dead = a
        .list_events(page(EventStatus::Dead, None, None, None, 10))
        .await
        .expect("page");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, "d1");
    // Retry now: acme's waiting, unclaimed events (p1, p2; p3 is claimed), not beta's.
    assert_eq!(
        a.retry_now(vec!["acme".into()], 1_000)
            .await
            .expect("retry"),
        2
    );
    let summary = a.queue_summary().await.expect("summary");
    assert_eq!(summary[0].next_attempt_ms, Some(1_000));
    assert_eq!(summary[1].next_attempt_ms, Some(7_000));
    // Every tenant when none is named.
    assert_eq!(a.retry_now(vec![], 1_000).await.expect("retry"), 1);
    drop(client);
    drop(a);
    db.drop_db().await;
}

#[tokio::test]
async fn dead_letters_replay_endpoints_and_purge() {
    use crate::store::{OutboxDepth, ReplayFilter};
    let Some(db) = TestDb::create("replay").await else {
        return;
    };
    let (a, _b) = two_instances(&db).await;
    let client = a.client().await.expect("client");
    // (event, tenant, status, done_at_ms)
    for (event, tenant, status, done) in [
        ("e1", "acme", 0i16, None),
        ("e2", "acme", 2, None),
        ("e3", "acme", 1, Some(100i64)),
        ("e4", "beta", 2, None),
        ("e5", "beta", 1, Some(9_000)),
    ] {
        client
            .execute(
                "INSERT INTO outbox (event_id, tenant, event_type, payload, created_at_ms, \
                 next_attempt_ms, status, attempts, last_error, done_at_ms) \
                 VALUES ($1, $2, 'call.cdr', '\\x7b7d', 1, 1, $3, 3, 'HTTP 500', $4)",
                &[&event, &tenant, &status, &done],
            )
            .await
            .expect("insert");
    }
    let depth = a.outbox_depth().await.expect("depth");
    let d = |tenant: &str, pending, dead| OutboxDepth {
        tenant: tenant.into(),
        pending,
        dead,
    };
    assert_eq!(depth, vec![d("acme", 1, 1), d("beta", 0, 1)]);
    let dead = a.dead_letters(Some("acme".into()), 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].event_id.as_str(),
            dead[0].attempts,
            dead[0].last_error.as_deref()
        ),
        ("e2", 3, Some("HTTP 500"))
    );
    assert_eq!(a.dead_letters(None, 10).await.expect("all").len(), 2);
    let replayed = a
        .replay(
            ReplayFilter {
                tenant: Some("beta".into()),
                event_id: None,
                include_delivered: true,
            },
            5_000,
        )
        .await
        .expect("replay");
    assert_eq!(replayed, 2);
    assert_eq!(
        a.outbox_depth().await.expect("depth"),
        vec![d("acme", 1, 1), d("beta", 2, 0)]
    );
    let replayed = a
        .replay(
            ReplayFilter {
                tenant: None,
                event_id: Some("e2".into()),
                include_delivered: false,
            },
            5_000,
        )
        .await
        .expect("replay one");
    assert_eq!(replayed, 1);
    let pending: i64 = client
        .query_one(
            "SELECT pending FROM tenant_counters WHERE tenant = 'beta'",
            &[],
        )
        .await
        .expect("c")
        .get(0);
    assert_eq!(pending, 2);
    let claimed = a
        .claim_deliveries("own_a".into(), 5_000, 60_000, 10, vec![])
        .await
        .expect("claim");
    let mut ids: Vec<&str> = claimed.iter().map(|c| c.event_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["e1", "e2", "e4", "e5"]);
    assert!(claimed
        .iter()
        .all(|c| c.attempts == 0 || c.event_id == "e1"));
    // Endpoints.
    a.set_endpoint_disabled("acme".into(), Some((7, "410 Gone".into())))
        .await
        .expect("disable");
    a.set_endpoint_disabled("acme".into(), Some((8, "404".into())))
        .await
        .expect("again");
    assert_eq!(
        a.disabled_endpoints().await.expect("list"),
        vec![("acme".to_owned(), "404".to_owned())]
    );
    a.set_endpoint_disabled("acme".into(), None)
        .await
        .expect("enable");
    assert!(a.disabled_endpoints().await.expect("list").is_empty());
    // Purge: delivered e3 (done at 100) is past a retention of 1000 at 2000; e5 was replayed.
    client
        .execute("INSERT INTO dedup (tenant, key_hash, expires_at_ms, status, content_type, body) VALUES ('acme', '\\x01', 1500, 200, 'text/xml', '\\x00')", &[])
        .await
        .expect("dedup");
    let purged = a.purge(2_000, 1_000, 1_000).await.expect("purge");
    assert_eq!(purged, 2, "the delivered event and the expired answer");
    let left: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .expect("n")
        .get(0);
    assert_eq!(left, 4);
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn calls_and_aliases_read_back_as_written() {
    use crate::store::CallKey;
    let Some(db) = TestDb::create("reads").await else {
        return;
    };
    let (a, _b) = two_instances(&db).await;
    a.ping().await.expect("ping");
    let client = a.client().await.expect("client");
    // Key order and number spelling survive (json, not jsonb).
    let attached = r#"{"zeta": 1, "alpha": 1.50, "mid": "x"}"#;
    for (vendor_call_id, call_id, state, updated) in [
        ("v1", "call_1", Some(r#"{"step": 2}"#), 20i64),
        ("v2", "call_2", Some(r#"{"step": 1}"#), 10),
        ("v3", "call_3", None, 5),
    ] {
        client
            .execute(
                "INSERT INTO calls (tenant, vendor, vendor_call_id, call_id, version, next_seq, \
                 status, attached, state, expires_at_ms, updated_at_ms) \
                 VALUES ('acme', 'ptk', $1, $2, 3, 7, 'active', $3::text::json, $4::text::json, 99, $5)",
                &[&vendor_call_id, &call_id, &attached, &state, &updated],
            )
            .await
            .expect("call");
    }
    let key = CallKey {
        tenant: "acme".into(),
        vendor: "ptk".into(),
        vendor_call_id: "v1".into(),
    };
    let row = a.load_call(key.clone()).await.expect("load").expect("row");
    assert_eq!(
        (
            row.call_id.as_str(),
            row.version,
            row.next_seq,
            row.expires_at_ms
        ),
        ("call_1", 3, 7, Some(99))
    );
    assert_eq!(
        serde_json::to_string(&row.attached).expect("json"),
        r#"{"zeta":1,"alpha":1.50,"mid":"x"}"#
    );
    assert_eq!(row.state, Some(serde_json::json!({"step": 2})));
    let (found, _) = a
        .load_call_by_id("call_1".into())
        .await
        .expect("by id")
        .expect("row");
    assert_eq!(found, key);
    assert!(a
        .load_call_by_id("call_9".into())
        .await
        .expect("none")
        .is_none());
    let live = a
        .list_live("acme".into(), "ptk".into(), 10)
        .await
        .expect("live");
    let ids: Vec<&str> = live
        .iter()
        .map(|(k, _)| k.vendor_call_id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["v2", "v1"],
        "live only, least recently changed first"
    );
    client
        .execute(
            "INSERT INTO aliases VALUES ('acme', 'transit', '0730', 'ptk', 'v1', 500), \
             ('acme', 'agent', '42', 'ptk', 'v2', NULL)",
            &[],
        )
        .await
        .expect("aliases");
    let find =
        |ns: &str, value: &str, now: i64| a.find_alias("acme".into(), ns.into(), value.into(), now);
    assert_eq!(
        find("transit", "0730", 499).await.expect("f"),
        Some(("ptk".into(), "v1".into()))
    );
    assert_eq!(
        find("transit", "0730", 500).await.expect("f"),
        None,
        "lapsed"
    );
    assert_eq!(
        find("agent", "42", i64::MAX).await.expect("f"),
        Some(("ptk".into(), "v2".into()))
    );
    client
        .execute(
            "INSERT INTO outbox (event_id, tenant, call_id, seq, event_type, payload, created_at_ms, next_attempt_ms, status) \
             VALUES ('m2', 'acme', 'call_1', 2, 'call.ended', '\\x7b7d', 1, 1, 0), ('m1', 'acme', 'call_1', 1, 'call.started', '\\x7b7d', 1, 1, 1)",
            &[],
        )
        .await
        .expect("events");
    assert_eq!(
        a.call_events("call_1".into()).await.expect("events"),
        vec![
            (1, "call.started".to_owned(), 1),
            (2, "call.ended".to_owned(), 0)
        ]
    );
    drop(client);
    db.drop_db().await;
}

#[test]
fn every_migration_file_is_listed_with_its_marker() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("migrations dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    files.sort();
    let listed: Vec<String> = MIGRATION_FILES
        .iter()
        .map(|(v, name, _)| format!("{v:04}_{name}.sql"))
        .collect();
    assert_eq!(files, listed);
    for (i, (version, name, sql)) in MIGRATION_FILES.iter().enumerate() {
        assert_eq!(*version, i as i64 + 1, "{name}: versions go up by one");
        let marker = schema::declared_compatible_from(sql);
        assert!(
            matches!(marker, Some(m) if m >= 1 && m <= *version),
            "{name}: first line must be `-- compatible_from: N` with 1 <= N <= {version}"
        );
    }
}

#[tokio::test]
async fn concurrent_finishes_settle_exactly_the_rows_their_owner_holds() {
    use crate::store::DeliveryUpdate;
    let Some(db) = TestDb::create("finishes").await else {
        return;
    };
    let (a, b) = two_instances(&db).await;
    // 160 rows of two tenants, eight kinds by id % 8 (what each is and gets below).
    let client = a.client().await.expect("client");
    let n = 160i64;
    for i in 0..n {
        let (status, attempts, owner): (i16, i32, Option<&str>) = match i % 8 {
            4 | 5 => (0, 0, Some("own_b")),
            6 => (1, 1, Some("own_a")),
            _ => (0, 0, Some("own_a")),
        };
        client
            .execute(
                "INSERT INTO outbox (id, event_id, tenant, event_type, payload, created_at_ms, \
                 next_attempt_ms, status, attempts, lease_owner, lease_until_ms) \
                 VALUES ($1, $2, $3, 'call.cdr', '\\x7b7d', 1, 100, $4, $5, $6, 9000000000000)",
                &[
                    &i,
                    &format!("msg_{i}"),
                    &if (i / 8) % 2 == 0 { "acme" } else { "beta" },
                    &status,
                    &attempts,
                    &owner,
                ],
            )
            .await
            .expect("insert");
    }
    // acme has room to count down; beta's counter is lower than what settles (never below 0).
    client
        .execute(
            "INSERT INTO tenant_counters (tenant, pending) VALUES ('acme', 100), ('beta', 3)",
            &[],
        )
        .await
        .expect("counters");
    // Each call on its own, all at once, on two instances.
    let mut calls: Vec<(&PgStore, &str, Vec<DeliveryUpdate>)> = Vec::new();
    for id in 0..n {
        let delivered = |at_ms| DeliveryUpdate::Delivered { id, at_ms };
        match id % 8 {
            // Delivered, reported twice: settled and counted once.
            0 => {
                calls.push((&a, "own_a", vec![delivered(10)]));
                calls.push((&a, "own_a", vec![delivered(10)]));
            }
            1 => calls.push((
                &a,
                "own_a",
                vec![DeliveryUpdate::Dead {
                    id,
                    error: "boom".into(),
                }],
            )),
            2 => calls.push((
                &a,
                "own_a",
                vec![DeliveryUpdate::Retry {
                    id,
                    next_ms: 5_000,
                    error: "503".into(),
                }],
            )),
            3 => calls.push((
                &a,
                "own_a",
                vec![DeliveryUpdate::Release { id, next_ms: 7_000 }],
            )),
            // Held by own_b: its outcome counts, own_a's does not.
            4 => {
                calls.push((&a, "own_a", vec![delivered(11)]));
                calls.push((&b, "own_b", vec![delivered(12)]));
            }
            // Held by own_b, who says nothing: untouched.
            5 => calls.push((
                &a,
                "own_a",
                vec![
                    delivered(13),
                    DeliveryUpdate::Dead {
                        id,
                        error: "x".into(),
                    },
                ],
            )),
            // Already settled: untouched, not counted again.
            6 => calls.push((
                &a,
                "own_a",
                vec![DeliveryUpdate::Dead {
                    id,
                    error: "late".into(),
                }],
            )),
            // Two outcomes in one call: the first holds, the second finds the row released.
            _ => calls.push((
                &a,
                "own_a",
                vec![
                    DeliveryUpdate::Release { id, next_ms: 8_000 },
                    delivered(14),
                ],
            )),
        }
    }
    // Queued when called: every call is in a finisher's queue before the first answer.
    let answers: Vec<_> = calls
        .into_iter()
        .map(|(store, owner, updates)| tokio::spawn(store.finish_deliveries(owner.into(), updates)))
        .collect();
    for answer in answers {
        answer.await.expect("join").expect("finished");
    }
    type Row = (i16, i32, i64, Option<String>, Option<String>, Option<i64>);
    let rows: Vec<(i64, Row)> = client
        .query(
            "SELECT id, status, attempts, next_attempt_ms, lease_owner, last_error, done_at_ms \
             FROM outbox ORDER BY id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r.get(0),
                (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
            )
        })
        .collect();
    assert_eq!(rows.len(), n as usize);
    let mut settled = std::collections::BTreeMap::<&str, i64>::new();
    for (id, row) in rows {
        let expected: Row = match id % 8 {
            0 => (1, 1, 100, None, None, Some(10)),
            1 => (2, 1, 100, None, Some("boom".into()), None),
            2 => (0, 1, 5_000, None, Some("503".into()), None),
            3 => (0, 0, 7_000, None, None, None),
            4 => (1, 1, 100, None, None, Some(12)),
            5 => (0, 0, 100, Some("own_b".into()), None, None),
            6 => (1, 1, 100, Some("own_a".into()), None, None),
            _ => (0, 0, 8_000, None, None, None),
        };
        assert_eq!(row, expected, "row {id}");
        if matches!(id % 8, 0 | 1 | 4) {
            *settled
                .entry(if (id / 8) % 2 == 0 { "acme" } else { "beta" })
                .or_insert(0) += 1;
        }
    }
    assert_eq!(settled.get("acme"), Some(&30));
    let counters: Vec<(String, i64)> = client
        .query(
            "SELECT tenant, pending FROM tenant_counters ORDER BY tenant",
            &[],
        )
        .await
        .expect("counters")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        counters,
        vec![("acme".to_owned(), 70), ("beta".to_owned(), 0)]
    );
    // Nothing to record is no work; a closed store takes nothing more.
    a.finish_deliveries("own_a".into(), Vec::new())
        .await
        .expect("nothing");
    a.close();
    assert!(matches!(
        a.finish_deliveries(
            "own_a".into(),
            vec![DeliveryUpdate::Release { id: 3, next_ms: 1 }]
        )
        .await,
        Err(crate::store::StoreError::Closed)
    ));
    drop(client);
    db.drop_db().await;
}

/// A statement failing in the pipeline that ends with `COMMIT` makes that `COMMIT` a
/// rollback without an error: the batch's units are applied again one by one in a new
/// transaction, and when its end fails too, the whole batch fails and no unit is reported
/// committed (nor is anything of it stored). The writer goes on with its next batch.
#[tokio::test]
async fn a_batch_whose_end_fails_commits_none_of_its_units() {
    use crate::store::{NewEvent, UnitOfWork};
    let Some(db) = TestDb::create("batch_end_fails").await else {
        return;
    };
    let (a, _b) = two_instances(&db).await;
    let client = a.client().await.expect("client");
    // The pending counter of tenant "boom" cannot be written: the last pipeline's counter
    // statement fails, behind the units' writes, ahead of `COMMIT`.
    client
        .batch_execute(
            "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.tenant = 'boom' THEN RAISE EXCEPTION 'no counter for boom'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER refuse_boom BEFORE INSERT OR UPDATE ON tenant_counters \
             FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
        )
        .await
        .expect("trigger");
    let unit = |tenant: &str, id: &str| UnitOfWork {
        tenant: tenant.into(),
        now_ms: 1,
        events: vec![NewEvent {
            event_id: id.into(),
            event_type: "call.cdr".into(),
            payload: Arc::new(crate::envelope::EventPayload::raw(
                "call.cdr",
                serde_json::json!({"id": id}),
            )),
        }],
        ..UnitOfWork::default()
    };
    // Queued at once: the writer takes them together (one durable, the others lazy).
    let mut queued: Vec<_> = (0..5)
        .map(|i| a.commit_queued(unit("boom", &format!("boom_{i}"))))
        .map(|q| Box::pin(q) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>)
        .collect();
    queued.push(Box::pin(a.commit(unit("boom", "boom_last"))));
    for (i, q) in queued.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(60), q)
            .await
            .expect("answered");
        assert!(outcome.is_err(), "unit {i} reported {outcome:?}");
    }
    let stored: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 0, "nothing of the failed batches is stored");
    // The writer takes the next batch on a connection of its own again.
    client
        .batch_execute("DROP TRIGGER refuse_boom ON tenant_counters")
        .await
        .expect("drop trigger");
    let outcome = a.commit(unit("boom", "after")).await.expect("commit after");
    assert_eq!(
        outcome,
        crate::store::CommitOutcome::Committed { seqs: vec![None] }
    );
    let depth = a.outbox_depth().await.expect("depth");
    assert_eq!(
        depth
            .iter()
            .map(|d| (d.tenant.as_str(), d.pending))
            .collect::<Vec<_>>(),
        vec![("boom", 1)]
    );
    drop(client);
    a.shutdown().await;
    db.drop_db().await;
}
