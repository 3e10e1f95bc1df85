//! Two instances over one store behave as one gateway: a decision on instance A right after a
//! change committed on instance B for the same call sees B's change, on both backends. Two
//! gateways run in this process on one store (one state directory, or one PostgreSQL
//! database), each with its own `Core`, store handle, writer and change feed, as two
//! processes would have. What each step waits for is read from the store through a
//! connection of the test's own, never through either gateway.
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
    let rx = Receiver::start().await;
    rx.answer(|hook| {
        if hook.json["type"] != "decision.layer_input" {
            return Reply::ok("{}");
        }
        Reply::ok(match hook.json["data"]["dtmf"].as_str() {
            Some("1") => r#"{"action":"goto","target":"2","attach":{"lang":"he","step":"a"}}"#,
            Some("2") => {
                r#"{"STATUS":0,"ACTION":"GO_TO_LAYER","LAYER":3,"CUSTOM_DATA":{"step":"b","agent":"7"}}"#
            }
            _ => r#"{"action":"goto","target":"4"}"#,
        })
    });
    rx
}

/// An `IVR_LAYER_INPUT` for `call` on `gw` with digit `dtmf`; returns the decision webhook's
/// `data`.
async fn decide(gw: &Gateway, rx: &Receiver, call: &str, dtmf: &str) -> Value {
    let layer = json!({"METHOD": "IVR_LAYER_INPUT", "DATA": {"DID": "0732793256",
        "CALLER_ID": "0523574321", "IVR_UNIQUE_ID": call, "DTMF": dtmf, "LAYER_ID": 1,
        "PREVIOUS_LAYER_ID": 1}});
    let (status, _, answer) = gw
        .post("/voicenter/acme", "application/json", layer.to_string())
        .await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json answer");
    assert_eq!(answer["ACTION"], "GO_TO_LAYER", "{answer}");
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
