//! Two instances over one store behave as one gateway: a decision on instance A right after a
//! change committed on instance B for the same call sees B's change, on both backends. Two
//! gateways run in this process on one store (one state directory, or one PostgreSQL
//! database), each with its own `Core`, store handle, writer and change feed, as two
//! processes would have. What each step waits for is read from the store through a
//! connection of the test's own, never through either gateway.
//!
//! The races between a decision and another change on its call run here too: a customer's
//! answer is held until the test says (`Reply::held`), so a hangup or another decision
//! commits while the decision is still asking, deterministically.
//!
//! A's decision follows B's commit by about a millisecond on loopback. A cache of call state
//! told of B's change by the change feed alone (read every 25 ms on the embedded store, a
//! `NOTIFY` on PostgreSQL) is caught only when the read beats the feed: a look at the stored
//! version on each read, not the feed, is what must keep such a cache honest.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ivrgate::clock::ManualClock;
use serde_json::{json, Value};

use crate::support::*;

/// A connection to the store of the test's own.
enum Peek {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Peek {
    async fn open(dir: &Path, storage: &Storage) -> Peek {
        match &storage.db {
            None => {
                let db = rusqlite::Connection::open(dir.join("ivrgate.db")).expect("open store");
                db.busy_timeout(Duration::from_secs(5)).expect("timeout");
                Peek::Sqlite(db)
            }
            Some(pg) => {
                let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test database");
                tokio::spawn(connection);
                Peek::Postgres(client)
            }
        }
    }

    /// The call's live state as the store has it (`None` without a row or once ended).
    async fn state(&self, vendor_call_id: &str) -> Option<Value> {
        const SQL: &str = "SELECT state FROM calls WHERE tenant = 'acme' AND vendor = 'voicenter' \
             AND vendor_call_id = ";
        match self {
            Peek::Sqlite(db) => {
                let mut statement = db.prepare(&format!("{SQL}?1")).expect("prepare");
                let mut rows = statement.query([vendor_call_id]).expect("query");
                let state: Option<String> = rows.next().expect("row")?.get(0).expect("state");
                state.map(|s| serde_json::from_str(&s).expect("state json"))
            }
            Peek::Postgres(client) => client
                .query_opt(&format!("{SQL}$1"), &[&vendor_call_id])
                .await
                .expect("query")?
                .get(0),
        }
    }

    /// The call's row as the store has it.
    async fn row(&self, vendor_call_id: &str) -> Option<Stored> {
        const SQL: &str = "SELECT call_id, status, CAST(attached AS TEXT), CAST(state AS TEXT), \
             expires_at_ms, (SELECT COUNT(*) FROM timers WHERE key = 'call_expiry:' || call_id) \
             FROM calls WHERE tenant = 'acme' AND vendor = 'voicenter' AND vendor_call_id = ";
        let (call_id, status, attached, state, expires_at_ms, expiry_timers): (
            String,
            String,
            String,
            Option<String>,
            Option<i64>,
            i64,
        ) = match self {
            Peek::Sqlite(db) => {
                let mut statement = db.prepare(&format!("{SQL}?1")).expect("prepare");
                let mut rows = statement.query([vendor_call_id]).expect("query");
                let row = rows.next().expect("row")?;
                let get = "column";
                (
                    row.get(0).expect(get),
                    row.get(1).expect(get),
                    row.get(2).expect(get),
                    row.get(3).expect(get),
                    row.get(4).expect(get),
                    row.get(5).expect(get),
                )
            }
            Peek::Postgres(client) => {
                let row = client
                    .query_opt(&format!("{SQL}$1"), &[&vendor_call_id])
                    .await
                    .expect("query")?;
                (
                    row.get(0),
                    row.get(1),
                    row.get(2),
                    row.get(3),
                    row.get(4),
                    row.get(5),
                )
            }
        };
        let json = |text: &str| serde_json::from_str(text).expect("stored json");
        Some(Stored {
            call_id,
            status,
            attached: json(&attached),
            state: state.as_deref().map(json),
            expires_at_ms,
            expiry_timers,
        })
    }

    /// Waits (bounded) until the call's row is there and `done` holds for it.
    async fn until_row(&self, vendor_call_id: &str, done: impl Fn(&Stored) -> bool) -> Stored {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let row = self.row(vendor_call_id).await;
            match row {
                Some(row) if done(&row) => return row,
                _ => assert!(
                    tokio::time::Instant::now() < deadline,
                    "{vendor_call_id}: the awaited change did not come in time: {row:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits (bounded) until the call's last decision in the store is `decision_id`: that
    /// decision's write, queued without being awaited, has committed.
    async fn until_committed(&self, vendor_call_id: &str, decision_id: &Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = self
                .state(vendor_call_id)
                .await
                .map(|s| s["last_decision"]["decision_id"].clone());
            if last.as_ref() == Some(decision_id) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "decision {decision_id} not committed on {vendor_call_id} in time (last: {last:?})"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A call's row as stored, read by [`Peek::row`].
#[derive(Debug)]
struct Stored {
    call_id: String,
    status: String,
    attached: Value,
    state: Option<Value>,
    expires_at_ms: Option<i64>,
    /// How many `call_expiry` timers are set for the call (0 or 1).
    expiry_timers: i64,
}

/// Two gateways on one store, and the test's own view of it.
struct Pair {
    a: Gateway,
    b: Gateway,
    peek: Peek,
    _storage: Storage,
    _tmp: tempfile::TempDir,
}

impl Pair {
    async fn start(backend: Backend, hint: &str, hooks: &str) -> Option<Pair> {
        let storage = Storage::new(backend, hint).await?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let toml = storage.apply(&config_toml(tmp.path(), hooks, ""));
        let clock = Arc::new(ManualClock::default());
        let a = Gateway::start_in(tmp.path(), &toml, clock.clone()).await;
        let b = Gateway::start_in(tmp.path(), &toml, clock).await;
        assert_ne!(a.handle.core.instance, b.handle.core.instance);
        let peek = Peek::open(tmp.path(), &storage).await;
        Some(Pair {
            a,
            b,
            peek,
            _storage: storage,
            _tmp: tmp,
        })
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

/// A receiver whose answer depends on the digit pressed: `1` goes to layer 2 attaching
/// `lang` and `step`, `2` answers in Voicenter's native form with `CUSTOM_DATA` (changing
/// `step`, adding `agent`), anything else goes to layer 4 attaching nothing. Events get 200.
async fn receiver() -> Receiver {
    receiver_held(&Arc::new(tokio::sync::Semaphore::new(0))).await
}

/// [`receiver`], and also: `5` goes to layer 5 attaching `late`, answered only once `gate`
/// opens (the decision is still asking its customer until the test says), and `6` goes to
/// layer 6 attaching `after`.
async fn receiver_held(gate: &Arc<tokio::sync::Semaphore>) -> Receiver {
    let rx = Receiver::start().await;
    let gate = gate.clone();
    rx.answer(move |hook| {
        if hook.json["type"] != "decision.layer_input" {
            return Reply::ok("{}");
        }
        match hook.json["data"]["dtmf"].as_str() {
            Some("1") => {
                Reply::ok(r#"{"action":"goto","target":"2","attach":{"lang":"he","step":"a"}}"#)
            }
            Some("2") => Reply::ok(
                r#"{"STATUS":0,"ACTION":"GO_TO_LAYER","LAYER":3,"CUSTOM_DATA":{"step":"b","agent":"7"}}"#,
            ),
            Some("5") => {
                Reply::ok(r#"{"action":"goto","target":"5","attach":{"late":"yes"}}"#).held(&gate)
            }
            Some("6") => Reply::ok(r#"{"action":"goto","target":"6","attach":{"after":"end"}}"#),
            _ => Reply::ok(r#"{"action":"goto","target":"4"}"#),
        }
    });
    rx
}

/// An `IVR_LAYER_INPUT` body for `call` with digit `dtmf`.
fn layer_input(call: &str, dtmf: &str) -> String {
    json!({"METHOD": "IVR_LAYER_INPUT", "DATA": {"DID": "0732793256",
        "CALLER_ID": "0523574321", "IVR_UNIQUE_ID": call, "DTMF": dtmf, "LAYER_ID": 1,
        "PREVIOUS_LAYER_ID": 1}})
    .to_string()
}

/// Posts `call`'s `IVR_LAYER_INPUT` with digit `dtmf` to `gw`; returns the layer the answer
/// sends the call to.
async fn answered_layer(gw: &Gateway, call: &str, dtmf: &str) -> Value {
    let (status, _, answer) = gw
        .post(
            "/voicenter/acme",
            "application/json",
            layer_input(call, dtmf),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json answer");
    assert_eq!(answer["ACTION"], "GO_TO_LAYER", "{answer}");
    answer["LAYER"].clone()
}

/// Posts `call`'s HANGUP_CALL to `gw` and checks it was stored (`STATUS 0`).
async fn hang_up(gw: &Gateway, call: &str) {
    let body = json!({"METHOD": "HANGUP_CALL", "DATA": {"DID": "0732793256",
        "CALLER_ID": "0523574321", "IVR_UNIQUE_ID": call, "TARGET": "0500000555",
        "CALL_TIME_EPOCH": 1_700_000_000, "CALL_START_EPOCH": 1_700_000_000,
        "CALL_DURATION": 30, "CALL_DAILTIME": 5, "CALL_STATUS": "ANSWER"}});
    let (status, _, ack) = gw
        .post("/voicenter/acme", "application/json", body.to_string())
        .await;
    assert_eq!(status, 200, "{call}: {ack}");
    let ack: Value = serde_json::from_str(&ack).expect("json ack");
    assert_eq!(ack["STATUS"], 0, "{call}: hangup not stored: {ack}");
}

/// An `IVR_LAYER_INPUT` for `call` on `gw` with digit `dtmf`; returns the decision webhook's
/// `data`.
async fn decide(gw: &Gateway, rx: &Receiver, call: &str, dtmf: &str) -> Value {
    answered_layer(gw, call, dtmf).await;
    rx.next_of("decision.layer_input").await.json["data"].clone()
}

on_both_backends!(2: a_decision_sees_a_decision_committed_on_the_other_instance);

/// A decides on the call (creating it: A has read and written it) and its write commits; B
/// decides on it, answered natively with `CUSTOM_DATA`, and its write commits; at once A
/// decides again. A's webhook carries B's decision as `previous_decision` and the attached
/// data as B's answer left it (`step` changed, `agent` added, `lang` kept from A's). An
/// instance answering from what it knew of the call after its own write would show its own
/// first decision and `step: "a"` without `agent`.
///
/// B's decision is recorded like every decision, without being awaited: the step waits for
/// its commit, as the invariant is about changes committed (through a second instance a
/// decision is seen once committed, a few milliseconds after its answer; docs/webhooks.md).
async fn a_decision_sees_a_decision_committed_on_the_other_instance(backend: Backend) {
    let rx = receiver().await;
    let Some(pair) = Pair::start(backend, "xinst_decision", &rx.url("/hooks")).await else {
        return;
    };
    let call = "c-xinst";
    let first = decide(&pair.a, &rx, call, "1").await;
    assert_eq!(first["previous_decision"], Value::Null, "{first}");
    assert_eq!(first["attached"], json!({}), "{first}");
    let call_id = first["call_id"].clone();
    assert!(call_id.is_string(), "{first}");
    pair.peek.until_committed(call, &first["decision_id"]).await;

    let second = decide(&pair.b, &rx, call, "2").await;
    assert_eq!(second["call_id"], call_id, "{second}");
    assert_eq!(
        second["previous_decision"]["decision_id"], first["decision_id"],
        "{second}"
    );
    assert_eq!(second["attached"], json!({"lang": "he", "step": "a"}));
    pair.peek
        .until_committed(call, &second["decision_id"])
        .await;

    let third = decide(&pair.a, &rx, call, "3").await;
    assert_eq!(third["call_id"], call_id, "{third}");
    assert_eq!(
        third["previous_decision"]["decision_id"], second["decision_id"],
        "A did not see B's decision: {third}"
    );
    assert_eq!(third["previous_decision"]["answer"], "native", "{third}");
    assert_eq!(third["previous_decision"]["source"], "customer", "{third}");
    assert_eq!(
        third["attached"],
        json!({"lang": "he", "step": "b", "agent": "7"}),
        "A did not see the data B's decision attached: {third}"
    );
    pair.stop().await;
}

on_both_backends!(2: a_decision_sees_an_event_acknowledged_by_the_other_instance);

/// A decides on the call and its write commits; B gets the call's HANGUP_CALL (then, on a
/// second call, its CDR), which ends the call, and acknowledges it once committed; at once A
/// decides on the call again. A's webhook shows the call as the store has it after B's
/// event: the same `call_id`, the attached data (it outlives the call), and
/// `previous_decision: null`, since the last decision is part of the call's live state,
/// which the event ended (as when one instance gets all three requests). An instance
/// answering from what it knew of the call after its own write would show its first
/// decision as `previous_decision`.
async fn a_decision_sees_an_event_acknowledged_by_the_other_instance(backend: Backend) {
    let rx = receiver().await;
    let Some(pair) = Pair::start(backend, "xinst_event", &rx.url("/hooks")).await else {
        return;
    };
    let hangup = |call: &str| {
        let body = json!({"METHOD": "HANGUP_CALL", "DATA": {"DID": "0732793256",
            "CALLER_ID": "0523574321", "IVR_UNIQUE_ID": call, "TARGET": "0500000555",
            "CALL_TIME_EPOCH": 1_700_000_000, "CALL_START_EPOCH": 1_700_000_000,
            "CALL_DURATION": 30, "CALL_DAILTIME": 5, "CALL_STATUS": "ANSWER"}});
        ("/voicenter/acme", body, "STATUS")
    };
    let cdr = |call: &str| {
        let body = json!({"caller": "0523574321", "target": "0732793256",
            "time": 1_700_000_000, "duration": 30, "ivruniqueid": call,
            "type": "Incoming Call", "status": "ANSWER", "did": "0732793256", "queueid": 0,
            "dialtime": 3});
        ("/voicenter/acme/cdr", body, "err")
    };
    for (call, (path, event, ok_field)) in [
        ("c-xinst-hangup", hangup("c-xinst-hangup")),
        ("c-xinst-cdr", cdr("c-xinst-cdr")),
    ] {
        let first = decide(&pair.a, &rx, call, "1").await;
        let call_id = first["call_id"].clone();
        assert!(call_id.is_string(), "{first}");
        pair.peek.until_committed(call, &first["decision_id"]).await;

        let (status, _, ack) = pair
            .b
            .post(path, "application/json", event.to_string())
            .await;
        assert_eq!(status, 200, "{call}: {ack}");
        let ack: Value = serde_json::from_str(&ack).expect("json ack");
        assert_eq!(ack[ok_field], 0, "{call}: not stored: {ack}");

        let next = decide(&pair.a, &rx, call, "3").await;
        assert_eq!(next["call_id"], call_id, "{call}: {next}");
        assert_eq!(
            next["previous_decision"],
            Value::Null,
            "{call}: A did not see the end B recorded: {next}"
        );
        assert_eq!(
            next["attached"],
            json!({"lang": "he", "step": "a"}),
            "{call}: {next}"
        );
    }
    pair.stop().await;
}

on_both_backends!(2: a_late_decision_write_does_not_bring_back_a_call_that_hung_up);

/// A decides on the call (attaching `lang` and `step`), and its write commits. A's second
/// decision asks its customer, who answers only once the test says: meanwhile B decides on
/// the call (changing `step`, adding `agent`) and commits, then B stores the call's
/// HANGUP_CALL. A's answer (attaching `late`) comes after all that, so its write, built on
/// the row A read, meets a version conflict and is rebuilt on the ended row. The call stays
/// ended: no live state, no expiry and no expiry timer (no `call.expired` after the
/// `call.hangup`); the attached data keeps B's `step` and `agent` and adds only the key A's
/// answer attached. A decision that comes after the hangup is the same: `previous_decision`
/// is `null`, its answer's keys are recorded (a later CDR carries them), the call stays
/// ended. Before the fix, A's rebuilt write made the call active again with a new expiry and
/// put A's older `step` back.
async fn a_late_decision_write_does_not_bring_back_a_call_that_hung_up(backend: Backend) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let rx = receiver_held(&gate).await;
    let Some(pair) = Pair::start(backend, "xinst_late", &rx.url("/hooks")).await else {
        return;
    };
    let call = "c-late";
    let first = decide(&pair.a, &rx, call, "1").await;
    let call_id = first["call_id"].clone();
    pair.peek.until_committed(call, &first["decision_id"]).await;

    let (layer, ()) = tokio::join!(answered_layer(&pair.a, call, "5"), async {
        let late = rx.next_of("decision.layer_input").await.json["data"].clone();
        assert_eq!(late["call_id"], call_id, "{late}");
        let other = decide(&pair.b, &rx, call, "2").await;
        pair.peek.until_committed(call, &other["decision_id"]).await;
        hang_up(&pair.b, call).await;
        let hangup = rx.next_of("call.hangup").await.json["data"].clone();
        assert_eq!(hangup["call_id"], call_id, "{hangup}");
        gate.add_permits(1);
    });
    assert_eq!(layer, 5);
    let row = pair
        .peek
        .until_row(call, |r| r.attached.get("late").is_some())
        .await;
    assert_eq!(row.call_id, call_id.as_str().expect("call id"));
    assert_eq!(
        (row.status.as_str(), &row.state, row.expires_at_ms),
        ("ended", &None, None),
        "the late decision brought the call back: {row:?}"
    );
    assert_eq!(
        row.expiry_timers, 0,
        "an expiry timer was set again: {row:?}"
    );
    assert_eq!(
        row.attached,
        json!({"lang": "he", "step": "b", "agent": "7", "late": "yes"}),
        "the late decision's write put back values B changed: {row:?}"
    );

    let after = decide(&pair.a, &rx, call, "6").await;
    assert_eq!(after["call_id"], call_id, "{after}");
    assert_eq!(after["previous_decision"], Value::Null, "{after}");
    let row = pair
        .peek
        .until_row(call, |r| r.attached.get("after").is_some())
        .await;
    assert_eq!(
        (
            row.status.as_str(),
            &row.state,
            row.expires_at_ms,
            row.expiry_timers
        ),
        ("ended", &None, None, 0),
        "a decision after the hangup brought the call back: {row:?}"
    );
    assert_eq!(
        row.attached,
        json!({"lang": "he", "step": "b", "agent": "7", "late": "yes", "after": "end"})
    );
    let next = decide(&pair.a, &rx, call, "3").await;
    assert_eq!(next["previous_decision"], Value::Null, "{next}");
    pair.stop().await;
}

on_both_backends!(2: a_decision_write_rebuilt_after_a_conflict_keeps_what_another_writer_attached);

/// As above without the hangup: A's second decision is answered (attaching `late`) after B's
/// decision changed `step` and added `agent`, so A's write meets a version conflict and is
/// rebuilt on B's row. It records A's decision (the call stays active, `last_decision` is
/// A's, three decisions counted) and adds only `late`: B's `step` and `agent` stay. Before
/// the fix, the rebuilt write merged A's whole copy of the attached data, `step: "a"` with it.
async fn a_decision_write_rebuilt_after_a_conflict_keeps_what_another_writer_attached(
    backend: Backend,
) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let rx = receiver_held(&gate).await;
    let Some(pair) = Pair::start(backend, "xinst_rebuilt", &rx.url("/hooks")).await else {
        return;
    };
    let call = "c-rebuilt";
    let first = decide(&pair.a, &rx, call, "1").await;
    pair.peek.until_committed(call, &first["decision_id"]).await;

    let (layer, late) = tokio::join!(answered_layer(&pair.a, call, "5"), async {
        let late = rx.next_of("decision.layer_input").await.json["data"].clone();
        let other = decide(&pair.b, &rx, call, "2").await;
        pair.peek.until_committed(call, &other["decision_id"]).await;
        gate.add_permits(1);
        late
    });
    assert_eq!(layer, 5);
    pair.peek.until_committed(call, &late["decision_id"]).await;
    let row = pair.peek.row(call).await.expect("the call's row");
    assert_eq!(row.status, "active", "{row:?}");
    assert_eq!(
        row.state.as_ref().map(|s| s["decisions"].clone()),
        Some(json!(3))
    );
    assert!(
        row.expires_at_ms.is_some() && row.expiry_timers == 1,
        "{row:?}"
    );
    assert_eq!(
        row.attached,
        json!({"lang": "he", "step": "b", "agent": "7", "late": "yes"}),
        "the rebuilt write put back values B changed: {row:?}"
    );
    pair.stop().await;
}

on_both_backends!(2: a_hangup_during_a_new_calls_first_decision_takes_its_call_id);

/// One instance: a new call's first decision asks its customer, who answers only once the
/// test says; meanwhile the caller hangs up and the HANGUP_CALL is stored (no row yet: the
/// decision's write is not even queued). The `call.hangup` carries the `call_id` the
/// decision webhook carried, and the call's row keeps it, ended, with what the answer
/// attached. Before the fix, the event path did not read the overlay and gave the call a
/// second id. Then a second call hangs up right after its first decision is answered, its
/// write usually still queued: the same id again (this held before too, as this instance's
/// writes commit in the order queued: the hangup's insert meets the decision's row, and
/// the event is built again on it).
async fn a_hangup_during_a_new_calls_first_decision_takes_its_call_id(backend: Backend) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let rx = receiver_held(&gate).await;
    let Some(pair) = Pair::start(backend, "xinst_newcall", &rx.url("/hooks")).await else {
        return;
    };
    let call = "c-new-hangup";
    let (layer, call_id) = tokio::join!(answered_layer(&pair.a, call, "5"), async {
        let decision = rx.next_of("decision.layer_input").await.json["data"].clone();
        assert_eq!(decision["previous_decision"], Value::Null, "{decision}");
        hang_up(&pair.a, call).await;
        let hangup = rx.next_of("call.hangup").await.json["data"].clone();
        assert_eq!(
            hangup["call_id"], decision["call_id"],
            "the call got a second id: {hangup}"
        );
        gate.add_permits(1);
        decision["call_id"].clone()
    });
    assert_eq!(layer, 5);
    let row = pair
        .peek
        .until_row(call, |r| r.attached.get("late").is_some())
        .await;
    assert_eq!(row.call_id, call_id.as_str().expect("call id"));
    assert_eq!(
        (row.status.as_str(), &row.state, row.expiry_timers),
        ("ended", &None, 0),
        "{row:?}"
    );

    let call = "c-new-hangup-after";
    let decision = decide(&pair.a, &rx, call, "1").await;
    hang_up(&pair.a, call).await;
    let hangup = rx.next_of("call.hangup").await.json["data"].clone();
    assert_eq!(hangup["call_id"], decision["call_id"], "{hangup}");
    pair.stop().await;
}
