//! The same test bodies against both backends: each body gets a fresh store (a temporary
//! directory for SQLite, a database of its own on the test PostgreSQL, dropped afterwards)
//! through [`Harness`] and sees only [`Store`], so the two backends are held to one meaning
//! of every operation.

use std::sync::Arc;
use std::time::Duration;

use ivrgate_adapter::StoredResponse;
use serde_json::{json, Map, Value};

use super::postgres::testing::TestDb;
use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::*;

/// One backend's store for one test, and how to open a second instance on the same data.
pub struct Harness {
    pub store: Store,
    others: std::sync::Mutex<Vec<Store>>,
    place: Place,
}

enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(Box<TestDb>),
}

impl Harness {
    pub async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("tmp");
        let store: Store = SqliteStore::open(dir.path(), 64).expect("open");
        Harness {
            store,
            others: std::sync::Mutex::new(Vec::new()),
            place: Place::Sqlite(dir),
        }
    }

    /// `None` (after a loud message) when no PostgreSQL is reachable outside CI.
    pub async fn postgres(hint: &str) -> Option<Harness> {
        let db = TestDb::create(hint).await?;
        let store: Store = PgStore::start(&db.settings, crate::ids::instance_id())
            .await
            .expect("open");
        Some(Harness {
            store,
            others: std::sync::Mutex::new(Vec::new()),
            place: Place::Postgres(Box::new(db)),
        })
    }

    /// Another instance (process) on the same data.
    pub async fn another(&self) -> Store {
        let store: Store = match &self.place {
            Place::Sqlite(dir) => SqliteStore::open(dir.path(), 64).expect("open another"),
            Place::Postgres(db) => PgStore::start(&db.settings, crate::ids::instance_id())
                .await
                .expect("open another"),
        };
        self.others
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(store.clone());
        store
    }

    pub async fn finish(self) {
        let others: Vec<Store> = self
            .others
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for other in others {
            other.shutdown().await;
        }
        self.store.shutdown().await;
        drop(self.store);
        if let Place::Postgres(db) = self.place {
            (*db).drop_db().await;
        }
    }
}

/// Runs one body on SQLite and on PostgreSQL, as two tests.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let h = super::Harness::sqlite().await;
                    super::$name(&h).await;
                    h.finish().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(h) = super::Harness::postgres(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&h).await;
                    h.finish().await;
                }
            }
        )*
    };
}

on_both_backends!(
    events_are_numbered_per_call_and_a_stale_version_writes_nothing,
    a_resend_gets_the_stored_answer_and_writes_nothing,
    the_outbox_quota_refuses_units_of_work_whole,
    an_alias_belongs_to_one_entity_until_it_lapses,
    timers_written_by_units_of_work_are_claimed_when_due,
    a_queued_write_commits_before_later_writes,
    concurrent_writers_on_two_instances_keep_sequences_gapless,
    a_resend_on_two_instances_at_once_is_recorded_once,
    a_batch_gives_each_unit_its_own_outcome_as_sent,
    a_batch_gives_each_unit_its_own_outcome_when_one_fails,
);

fn key(vendor_call_id: &str) -> CallKey {
    CallKey {
        tenant: "acme".into(),
        vendor: "voicenter".into(),
        vendor_call_id: vendor_call_id.into(),
    }
}

fn event(id: &str) -> NewEvent {
    NewEvent {
        event_id: id.into(),
        event_type: "call.progress".into(),
        payload: Arc::new(crate::envelope::EventPayload::raw(
            "call.progress",
            json!({"call_id": "x"}),
        )),
    }
}

fn call_write(
    key: &CallKey,
    call_id: &str,
    expected: Option<i64>,
    state: Option<Value>,
) -> CallWrite {
    let mut attached = Map::new();
    attached.insert("zeta".into(), json!(1));
    attached.insert("alpha".into(), json!("a"));
    CallWrite {
        key: key.clone(),
        call_id: call_id.into(),
        expected_version: expected,
        status: "active",
        attached,
        state: state.map(Into::into),
        expires_at_ms: Some(now() + 3_600_000),
    }
}

fn now() -> i64 {
    crate::clock::to_ms(std::time::SystemTime::now())
}

fn uow(call: Option<CallWrite>, events: Vec<NewEvent>) -> UnitOfWork {
    UnitOfWork {
        tenant: "acme".into(),
        now_ms: now(),
        call,
        events,
        ..UnitOfWork::default()
    }
}

async fn commit(store: &Store, uow: UnitOfWork) -> CommitOutcome {
    store.commit(uow).await.expect("commit")
}

async fn events_of(h: &Harness, call_id: &str) -> Vec<i64> {
    h.store
        .call_events(call_id.into())
        .await
        .expect("events")
        .into_iter()
        .map(|(seq, _, _)| seq)
        .collect()
}

async fn events_are_numbered_per_call_and_a_stale_version_writes_nothing(h: &Harness) {
    let k = key("v1");
    let created = commit(
        &h.store,
        uow(
            Some(call_write(&k, "call_1", None, Some(json!({"step": 1})))),
            vec![event("e1"), event("e2")],
        ),
    )
    .await;
    assert_eq!(
        created,
        CommitOutcome::Committed {
            seqs: vec![Some(1), Some(2)]
        }
    );
    let row = h
        .store
        .load_call(k.clone())
        .await
        .expect("load")
        .expect("row");
    assert_eq!((row.version, row.next_seq), (1, 3));
    assert_eq!(row.state, Some(json!({"step": 1})));
    assert_eq!(
        row.attached.keys().collect::<Vec<_>>(),
        ["zeta", "alpha"],
        "attached data keeps its order"
    );
    // Creating it again is a conflict: the row exists.
    let again = commit(
        &h.store,
        uow(
            Some(call_write(&k, "call_1", None, None)),
            vec![event("e9")],
        ),
    )
    .await;
    assert_eq!(again, CommitOutcome::Conflict);
    let next = commit(
        &h.store,
        uow(
            Some(call_write(&k, "call_1", Some(1), Some(json!({"step": 2})))),
            vec![event("e3")],
        ),
    )
    .await;
    assert_eq!(
        next,
        CommitOutcome::Committed {
            seqs: vec![Some(3)]
        }
    );
    // A writer that read version 1 lost the race: nothing it carried is written.
    let stale = commit(
        &h.store,
        uow(
            Some(call_write(&k, "call_1", Some(1), Some(json!({"step": 9})))),
            vec![event("e4")],
        ),
    )
    .await;
    assert_eq!(stale, CommitOutcome::Conflict);
    assert_eq!(events_of(h, "call_1").await, vec![1, 2, 3]);
    let row = h
        .store
        .load_call(k.clone())
        .await
        .expect("load")
        .expect("row");
    assert_eq!((row.version, row.next_seq), (2, 4));
    assert_eq!(row.state, Some(json!({"step": 2})));
    // The call ended: its state goes, its row (and sequence) stays; the expiry timer goes.
    let mut end = call_write(&k, "call_1", Some(2), None);
    end.expires_at_ms = None;
    end.status = "ended";
    let ended = commit(&h.store, uow(Some(end), vec![event("e5")])).await;
    assert_eq!(
        ended,
        CommitOutcome::Committed {
            seqs: vec![Some(4)]
        }
    );
    let (found, row) = h
        .store
        .load_call_by_id("call_1".into())
        .await
        .expect("by id")
        .expect("row");
    assert_eq!(found, k);
    assert_eq!((row.state, row.status.as_str()), (None, "ended"));
    let timers = h
        .store
        .claim_timers(h.store.owner_id().into(), i64::MAX / 2, 60_000, 10)
        .await
        .expect("timers");
    assert!(timers.is_empty(), "the expiry timer went with the state");
    // Events without a call carry no sequence number; the payload carries the call's.
    let loose = commit(&h.store, uow(None, vec![event("e6")])).await;
    assert_eq!(loose, CommitOutcome::Committed { seqs: vec![None] });
    let claimed = h
        .store
        .claim_deliveries(h.store.owner_id().into(), now() + 1, 60_000, 10, vec![])
        .await
        .expect("claim");
    let seqs: Vec<(String, Value)> = claimed
        .iter()
        .map(|d| {
            let payload: Value = serde_json::from_slice(&d.payload).expect("json");
            (d.event_id.clone(), payload["data"]["seq"].clone())
        })
        .collect();
    assert_eq!(
        seqs,
        vec![
            ("e1".to_owned(), json!(1)),
            ("e2".to_owned(), json!(2)),
            ("e3".to_owned(), json!(3)),
            ("e5".to_owned(), json!(4)),
            ("e6".to_owned(), Value::Null),
        ]
    );
    assert_eq!(
        h.store.outbox_depth().await.expect("depth"),
        vec![OutboxDepth {
            tenant: "acme".into(),
            pending: 5,
            dead: 0
        }]
    );
}

fn dedup(body: &str) -> DedupWrite {
    DedupWrite {
        key_hash: [7; 32],
        response: StoredResponse {
            status: 200,
            content_type: "text/xml".into(),
            body: body.as_bytes().to_vec(),
        },
        expires_at_ms: now() + 60_000,
    }
}

async fn a_resend_gets_the_stored_answer_and_writes_nothing(h: &Harness) {
    let k = key("v1");
    let mut first = uow(
        Some(call_write(&k, "call_1", None, Some(json!({})))),
        vec![event("e1")],
    );
    first.dedup = Some(dedup("<ok/>"));
    assert!(matches!(
        commit(&h.store, first).await,
        CommitOutcome::Committed { .. }
    ));
    let mut resend = uow(
        Some(call_write(&k, "call_1", Some(1), Some(json!({})))),
        vec![event("e2")],
    );
    resend.dedup = Some(dedup("<other/>"));
    assert_eq!(
        commit(&h.store, resend).await,
        CommitOutcome::Duplicate(dedup("<ok/>").response)
    );
    assert_eq!(events_of(h, "call_1").await, vec![1]);
    let row = h.store.load_call(k).await.expect("load").expect("row");
    assert_eq!(row.version, 1, "the resend changed nothing");
    // Purged once expired, the key is free again.
    assert!(
        h.store
            .purge(now() + 120_000, i64::MAX / 4, i64::MAX / 4)
            .await
            .expect("purge")
            >= 1
    );
    let mut later = uow(None, vec![event("e3")]);
    later.dedup = Some(dedup("<later/>"));
    assert!(matches!(
        commit(&h.store, later).await,
        CommitOutcome::Committed { .. }
    ));
}

async fn the_outbox_quota_refuses_units_of_work_whole(h: &Harness) {
    let with_quota = |events: Vec<NewEvent>| UnitOfWork {
        outbox_quota: Some(3),
        ..uow(None, events)
    };
    assert!(matches!(
        commit(&h.store, with_quota(vec![event("e1"), event("e2")])).await,
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(
        commit(&h.store, with_quota(vec![event("e3"), event("e4")])).await,
        CommitOutcome::QuotaExceeded
    );
    assert!(matches!(
        commit(&h.store, with_quota(vec![event("e3")])).await,
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(
        commit(&h.store, with_quota(vec![event("e4")])).await,
        CommitOutcome::QuotaExceeded
    );
    // Delivering one makes room for one.
    let owner = h.store.owner_id().to_owned();
    let claimed = h
        .store
        .claim_deliveries(owner.clone(), now() + 1, 60_000, 1, vec![])
        .await
        .expect("claim");
    h.store
        .finish_deliveries(
            owner,
            vec![DeliveryUpdate::Delivered {
                id: claimed[0].id,
                at_ms: now(),
            }],
        )
        .await
        .expect("finish");
    assert!(matches!(
        commit(&h.store, with_quota(vec![event("e4")])).await,
        CommitOutcome::Committed { .. }
    ));
    let depth = h.store.outbox_depth().await.expect("depth");
    assert_eq!(depth[0].pending, 3);
}

fn entity(id: &str, call_id: &str, expected: Option<i64>) -> EntityWrite {
    EntityWrite {
        row: CallWrite {
            key: CallKey {
                tenant: "acme".into(),
                vendor: "ptk".into(),
                vendor_call_id: id.into(),
            },
            ..call_write(&key(id), call_id, expected, Some(json!({"entity": id})))
        },
        events: vec![event(&format!("ev_{id}_{}", expected.unwrap_or(0)))],
    }
}

fn claim(owner: &str, value: &str, until: Option<i64>) -> AliasOp {
    AliasOp {
        namespace: "agent".into(),
        value: value.into(),
        owner_kind: "ptk".into(),
        owner_id: owner.into(),
        action: AliasAction::Claim { until_ms: until },
    }
}

async fn an_alias_belongs_to_one_entity_until_it_lapses(h: &Harness) {
    let t = now();
    let a = UnitOfWork {
        entities: vec![entity("a", "ent_a", None)],
        aliases: vec![claim("a", "42", Some(t + 1_000))],
        ..uow(None, vec![])
    };
    assert!(matches!(
        commit(&h.store, a).await,
        CommitOutcome::Committed { .. }
    ));
    let b = UnitOfWork {
        entities: vec![entity("b", "ent_b", None)],
        aliases: vec![claim("b", "42", None)],
        ..uow(None, vec![])
    };
    assert_eq!(
        commit(&h.store, b.clone()).await,
        CommitOutcome::AliasTaken {
            namespace: "agent".into(),
            value: "42".into(),
            owner_kind: "ptk".into(),
            owner_id: "a".into(),
        }
    );
    // Refused whole: b's row and event were not written.
    assert!(h
        .store
        .load_call_by_id("ent_b".into())
        .await
        .expect("load")
        .is_none());
    assert!(events_of(h, "ent_b").await.is_empty());
    let find = |at: i64| {
        h.store
            .find_alias("acme".into(), "agent".into(), "42".into(), at)
    };
    assert_eq!(
        find(t).await.expect("find"),
        Some(("ptk".into(), "a".into()))
    );
    assert_eq!(find(t + 1_000).await.expect("find"), None, "lapsed");
    // Once lapsed, another entity takes it.
    let b_later = UnitOfWork {
        now_ms: t + 1_000,
        ..b
    };
    assert!(matches!(
        commit(&h.store, b_later).await,
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(
        find(t + 2_000).await.expect("find"),
        Some(("ptk".into(), "b".into()))
    );
    // Released by its owner only.
    let mut release = claim("a", "42", None);
    release.action = AliasAction::Release;
    let by_a = UnitOfWork {
        aliases: vec![release.clone()],
        ..uow(None, vec![])
    };
    commit(&h.store, by_a).await;
    assert!(
        find(t + 2_000).await.expect("find").is_some(),
        "not a's to release"
    );
    release.owner_id = "b".into();
    let by_b = UnitOfWork {
        aliases: vec![release],
        ..uow(None, vec![])
    };
    commit(&h.store, by_b).await;
    assert_eq!(find(t + 2_000).await.expect("find"), None);
    // Two entities in one unit: a stale version of the second undoes the first.
    let both = UnitOfWork {
        entities: vec![entity("a", "ent_a", Some(1)), entity("b", "ent_b", Some(7))],
        ..uow(None, vec![])
    };
    assert_eq!(commit(&h.store, both).await, CommitOutcome::Conflict);
    let row = h
        .store
        .load_call_by_id("ent_a".into())
        .await
        .expect("load")
        .expect("row")
        .1;
    assert_eq!(row.version, 1, "all or nothing");
    let live = h
        .store
        .list_live("acme".into(), "ptk".into(), 10)
        .await
        .expect("live");
    assert_eq!(live.len(), 2);
}

async fn timers_written_by_units_of_work_are_claimed_when_due(h: &Harness) {
    let t = now();
    let set = |key: &str, due: i64| TimerOp::Set {
        key: key.into(),
        kind: "test".into(),
        tenant: "acme".into(),
        due_ms: due,
        payload: json!({"k": key}),
    };
    let w = UnitOfWork {
        timers: vec![set("t1", t - 10), set("t2", t - 5), set("t3", t + 600_000)],
        ..uow(None, vec![])
    };
    commit(&h.store, w).await;
    let w = UnitOfWork {
        timers: vec![TimerOp::Delete { key: "t2".into() }],
        ..uow(None, vec![])
    };
    commit(&h.store, w).await;
    let owner = h.store.owner_id().to_owned();
    let due = h
        .store
        .claim_timers(owner.clone(), t, 60_000, 10)
        .await
        .expect("claim");
    assert_eq!(
        due.iter()
            .map(|r| (r.key.as_str(), &r.payload))
            .collect::<Vec<_>>(),
        vec![("t1", &json!({"k": "t1"}))]
    );
    // Claimed: not handed out again while leased, gone once finished.
    let other = h.another().await;
    assert!(other
        .claim_timers(other.owner_id().into(), t, 60_000, 10)
        .await
        .expect("claim")
        .is_empty());
    h.store
        .finish_timer("t1".into(), owner.clone())
        .await
        .expect("finish");
    let later = h
        .store
        .claim_timers(owner, t + 600_000, 60_000, 10)
        .await
        .expect("claim");
    assert_eq!(
        later.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        vec!["t3"]
    );
}

async fn a_queued_write_commits_before_later_writes(h: &Harness) {
    let k = key("v1");
    commit(
        &h.store,
        uow(
            Some(call_write(&k, "call_1", None, Some(json!({"n": 0})))),
            vec![],
        ),
    )
    .await;
    for n in 1..=20_i64 {
        // Queued from version v, then at once a write computed from version v + 1: the
        // second finds the first committed, in every round.
        let queued = h.store.commit_queued(uow(
            Some(call_write(
                &k,
                "call_1",
                Some(2 * n - 1),
                Some(json!({"n": n})),
            )),
            vec![],
        ));
        let next = h
            .store
            .commit(uow(
                Some(call_write(&k, "call_1", Some(2 * n), Some(json!({"n": n})))),
                vec![event(&format!("e{n}"))],
            ))
            .await
            .expect("commit");
        assert!(
            matches!(next, CommitOutcome::Committed { .. }),
            "round {n}: {next:?}"
        );
        assert!(matches!(
            queued.await.expect("queued"),
            CommitOutcome::Committed { .. }
        ));
        // The version moved twice per round.
        let row = h
            .store
            .load_call(k.clone())
            .await
            .expect("load")
            .expect("row");
        assert_eq!(row.version, 2 * n + 1);
    }
}

/// Writers on two instances race on one call, each reading, computing and retrying on a
/// conflict: every event is numbered, none twice, none skipped.
async fn concurrent_writers_on_two_instances_keep_sequences_gapless(h: &Harness) {
    let k = key("v1");
    commit(
        &h.store,
        uow(
            Some(call_write(&k, "call_1", None, Some(json!({})))),
            vec![],
        ),
    )
    .await;
    let other = h.another().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 {
            h.store.clone()
        } else {
            other.clone()
        };
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for n in 0..10 {
                for _attempt in 0..200 {
                    let row = store
                        .load_call(k.clone())
                        .await
                        .expect("load")
                        .expect("row");
                    let outcome = store
                        .commit(uow(
                            Some(call_write(&k, "call_1", Some(row.version), Some(json!({})))),
                            vec![event(&format!("w{w}_{n}"))],
                        ))
                        .await
                        .expect("commit");
                    match outcome {
                        CommitOutcome::Committed { seqs } => {
                            mine.push(seqs[0].expect("seq"));
                            break;
                        }
                        CommitOutcome::Conflict => continue,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let mine = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("writers finish")
            .expect("join");
        assert_eq!(mine.len(), 10, "every write landed");
        all.extend(mine);
    }
    all.sort();
    assert_eq!(all, (1..=80).collect::<Vec<i64>>());
    assert_eq!(events_of(h, "call_1").await, (1..=80).collect::<Vec<i64>>());
}

/// The same resend reaching two instances at once: one records it, the other answers with
/// the stored answer; one event.
async fn a_resend_on_two_instances_at_once_is_recorded_once(h: &Harness) {
    let other = h.another().await;
    for round in 0..10u8 {
        let with_key = |id: &str| {
            let mut d = dedup("<ok/>");
            d.key_hash = [round; 32];
            UnitOfWork {
                dedup: Some(d),
                ..uow(None, vec![event(id)])
            }
        };
        let (a, b) = tokio::join!(
            h.store.commit(with_key(&format!("a{round}"))),
            other.commit(with_key(&format!("b{round}")))
        );
        let outcomes = [a.expect("a"), b.expect("b")];
        let committed = outcomes
            .iter()
            .filter(|o| matches!(o, CommitOutcome::Committed { .. }))
            .count();
        let duplicates = outcomes
            .iter()
            .filter(|o| **o == CommitOutcome::Duplicate(dedup("<ok/>").response))
            .count();
        assert_eq!(
            (committed, duplicates),
            (1, 1),
            "round {round}: {outcomes:?}"
        );
    }
    let depth = h.store.outbox_depth().await.expect("depth");
    assert_eq!(depth[0].pending, 10);
}

/// Units of work queued together (committed in one batch by the writer) get the outcome
/// each would get alone, in queue order: a stale version, a resend, a taken alias and a
/// full quota refuse only their own unit, and a later unit on the same call sees the
/// earlier one committed. With `failing`, one unit carries an event id already stored:
/// it fails alone and every other unit still commits.
async fn a_batch_gives_each_unit_its_own_outcome(h: &Harness, failing: bool) {
    let (a, x) = (key("a"), "x");
    // Before the batch: call A (version 1, its event "taken" numbered 1, the id the failing
    // unit reuses), a stored resend answer, an alias held by entity x.
    let mut setup = uow(
        Some(call_write(&a, "call_a", None, Some(json!({})))),
        vec![],
    );
    setup.dedup = Some(dedup("<stored/>"));
    setup.entities = vec![entity(x, "ent_x", None)];
    setup.aliases = vec![claim(x, "7", None)];
    setup.events = vec![event("taken")];
    assert!(matches!(
        commit(&h.store, setup).await,
        CommitOutcome::Committed { .. }
    ));
    let quota = |events: Vec<NewEvent>| UnitOfWork {
        tenant: "quota".into(),
        outbox_quota: Some(2),
        ..uow(None, events)
    };
    let with_key = |byte: u8, body: &str, id: &str| {
        let mut d = dedup(body);
        d.key_hash = [byte; 32];
        UnitOfWork {
            dedup: Some(d),
            ..uow(None, vec![event(id)])
        }
    };
    let update_a = |version: i64, id: &str| {
        uow(
            Some(call_write(
                &a,
                "call_a",
                Some(version),
                Some(json!({"v": version})),
            )),
            vec![event(id)],
        )
    };
    let mut units = vec![
        uow(
            Some(call_write(&key("b"), "call_b", None, Some(json!({})))),
            vec![event("b1"), event("b2")],
        ),
        update_a(1, "a1"),
        update_a(1, "stale"),
        update_a(2, "a2"),
        with_key(7, "<other/>", "resent"),
        with_key(8, "<new/>", "fresh"),
        UnitOfWork {
            entities: vec![entity("y", "ent_y", None)],
            aliases: vec![claim("y", "7", None)],
            ..uow(None, vec![])
        },
        quota(vec![event("q1"), event("q2")]),
        quota(vec![event("q3")]),
    ];
    if failing {
        units.push(uow(None, vec![event("taken")]));
    }
    units.push(uow(
        Some(call_write(&key("c"), "call_c", None, Some(json!({})))),
        vec![event("c1")],
    ));
    // Queued at once: the writer takes them together.
    let queued: Vec<_> = units
        .into_iter()
        .map(|u| h.store.commit_queued(u))
        .collect();
    let mut outcomes = Vec::new();
    for q in queued {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(60), q)
                .await
                .expect("answered"),
        );
    }
    let c = outcomes.pop().expect("call c");
    if failing {
        let failed = outcomes.pop().expect("the failing unit");
        assert!(failed.is_err(), "an event id stored already: {failed:?}");
    }
    let outcomes: Vec<CommitOutcome> = outcomes
        .into_iter()
        .map(|o| o.expect("no other unit failed"))
        .collect();
    let committed = |seqs: Vec<Option<i64>>| CommitOutcome::Committed { seqs };
    assert_eq!(
        outcomes,
        vec![
            committed(vec![Some(1), Some(2)]),
            committed(vec![Some(2)]),
            CommitOutcome::Conflict,
            committed(vec![Some(3)]),
            CommitOutcome::Duplicate(dedup("<stored/>").response),
            committed(vec![None]),
            CommitOutcome::AliasTaken {
                namespace: "agent".into(),
                value: "7".into(),
                owner_kind: "ptk".into(),
                owner_id: x.into(),
            },
            committed(vec![None, None]),
            CommitOutcome::QuotaExceeded,
        ]
    );
    assert_eq!(c.expect("call c"), committed(vec![Some(1)]));
    assert_eq!(events_of(h, "call_a").await, vec![1, 2, 3]);
    assert_eq!(events_of(h, "call_b").await, vec![1, 2]);
    assert_eq!(events_of(h, "call_c").await, vec![1]);
    let row = h.store.load_call(a).await.expect("load").expect("row");
    assert_eq!((row.version, row.next_seq), (3, 4));
    assert_eq!(row.state, Some(json!({"v": 2})));
    assert!(
        h.store
            .load_call(CallKey {
                vendor: "ptk".into(),
                ..key("y")
            })
            .await
            .expect("load")
            .is_none(),
        "the unit refused for its alias wrote nothing"
    );
    // Pending: setup 2 (its event and entity x's), b 2, a 2, fresh 1, c 1; quota 2.
    let depth = h.store.outbox_depth().await.expect("depth");
    let pending: Vec<(&str, u64)> = depth
        .iter()
        .map(|d| (d.tenant.as_str(), d.pending))
        .collect();
    assert_eq!(pending, vec![("acme", 8), ("quota", 2)]);
    // Each call's events go out in sequence order.
    let claimed = h
        .store
        .claim_deliveries(h.store.owner_id().into(), now() + 1, 60_000, 100, vec![])
        .await
        .expect("claim");
    let order: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
    for (first, second) in [("b1", "b2"), ("a1", "a2"), ("q1", "q2")] {
        let at = |id: &str| order.iter().position(|e| *e == id).expect(id);
        assert!(at(first) < at(second), "{first} before {second}: {order:?}");
    }
}

async fn a_batch_gives_each_unit_its_own_outcome_as_sent(h: &Harness) {
    a_batch_gives_each_unit_its_own_outcome(h, false).await;
}

async fn a_batch_gives_each_unit_its_own_outcome_when_one_fails(h: &Harness) {
    a_batch_gives_each_unit_its_own_outcome(h, true).await;
}
