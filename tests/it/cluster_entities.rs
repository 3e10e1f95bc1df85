//! The entity layer on three instances of the built binary sharing one store: PTK and
//! OpenScape requests spread round robin over all three. Racing instances make one
//! interaction per ClientId and one call per CallID, the PTK licence and slot counters hold
//! for the cluster, each entity's webhooks come gapless, and a long-poll on one instance is
//! woken by a command on another. Loopback only; every load is bounded.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use ivrgate_ptk::testing::{attrs_of, text_of};
use ivrgate_wire::{xmlrpc, Limits};
use serde_json::{json, Value};

use crate::process::{free_port, Daemon};
use crate::support::*;

/// Licences of the PTK tenant `Portree`: fewer than the distinct ClientIds sent at once.
const LICENCES: usize = 7;

/// The PTK and OpenScape sections every instance shares.
const ENTITIES: &str = r#"
[tenants.ptk]
tenants = ["Portree"]
target_namespace = "urn:ivrgate:test:ptk"
licences = 7

[[tenants.ptk.segments]]
tenant = "Portree"
name = "VHT_Test"

[[tenants.ptk.segments]]
tenant = "Portree"
name = "OneSlot"
slot_capacity = 1
ewt_s = 0

[tenants.openscape]
transit_numbers = ["8800", "8801"]
queues = ["Sales", "Support"]
"#;

fn spawn(name: &str, dir: &Path, state: &Path, hooks: &str, storage: &Storage) -> Daemon {
    let port = free_port();
    let toml = storage.apply(&config_toml(state, hooks, ENTITIES)).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ) + "\n[logging]\nlevel = \"warn\"\n";
    Daemon::spawn_with(name, dir, port, &toml, None)
}

/// A PTK method on the instance at `base`; its status code and interaction id (if any).
async fn ptk(base: &str, method: &str, inner: &str) -> (u32, Option<String>) {
    let body = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><{method} xmlns="urn:ivrgate:test:ptk">{inner}</{method}></s:Body></s:Envelope>"#
    );
    let response = client()
        .post(format!("{base}/ptk/acme"))
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{method} on {base}: {text}");
    let code = text_of(&text, "ResultCode")
        .or_else(|| text_of(&text, "Code"))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {text}"));
    let id = text_of(&text, "InteractionId")
        .or_else(|| attrs_of(&text, "Interaction", "Id").into_iter().next());
    (code, id)
}

/// An OpenScape XML-RPC method on `channel` of the instance at `base`.
async fn rpc(base: &str, channel: &str, method: &str, params: Value) -> Value {
    let call = xmlrpc::MethodCall {
        method: method.to_owned(),
        params: params
            .as_array()
            .map(|p| p.iter().map(xmlrpc::Value::from_json).collect())
            .unwrap_or_default(),
    };
    let text = client()
        .post(format!("{base}/openscape/acme/{channel}"))
        .body(xmlrpc::write_call(&call))
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("body");
    match xmlrpc::parse_response(&text, &Limits::default()).expect("well-formed XML-RPC") {
        Ok(params) => params
            .first()
            .map(xmlrpc::Value::to_json)
            .unwrap_or(Value::Null),
        Err(fault) => json!({"fault": fault.code, "faultString": fault.message}),
    }
}

fn rc(answer: &Value) -> i64 {
    answer["ReturnCode"]
        .as_i64()
        .unwrap_or_else(|| panic!("no ReturnCode in {answer}"))
}

/// Runs `jobs` (instance index, request) all at once; answers in job order.
async fn at_once<F, Fut, T>(jobs: Vec<(usize, String)>, bases: &[String], f: F) -> Vec<T>
where
    F: Fn(String, String) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(i, inner)| tokio::spawn(f(bases[i % bases.len()].clone(), inner)))
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}

on_both_backends!(4: ptk_and_openscape_load_through_three_instances);

/// PTK: concurrent bookings of a one-place slot and copies of AddInteraction with distinct
/// and repeated ClientIds, sent to all three instances, then Get, Modify and Remove on
/// instances other than the creator's, then the freed licences taken again. OpenScape: three
/// calls whose requests go to a different instance each, each long-poll woken by a command
/// on another instance. Every acknowledged change is one webhook, per-entity sequences are
/// gapless.
async fn ptk_and_openscape_load_through_three_instances(backend: Backend) {
    let Some(storage) = Storage::new(backend, "pg3_entities").await else {
        return;
    };
    let started = Instant::now();
    let receiver = Receiver::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let hooks_url = receiver.url("/hooks");
    let mut daemons = Vec::new();
    for name in ["a", "b", "c"] {
        let mut d = spawn(name, tmp.path(), &state, &hooks_url, &storage);
        d.ready().await;
        daemons.push(d);
    }
    let bases: Vec<String> = daemons.iter().map(|d| d.url("")).collect();
    let t = "<Tenant>Portree</Tenant>";

    // Six callers book the one place of a slot at once, two through each instance.
    let at = ivrgate_ptk::settings::format_time(SystemTime::now() + Duration::from_secs(7200));
    let jobs = (0..6)
        .map(|n| (n, format!("<data>{t}<Segment>OneSlot</Segment><Contact>555810{n}</Contact><Options><AppointmentTime>{at}</AppointmentTime></Options></data>")))
        .collect();
    let booked = at_once(jobs, &bases, |base, inner| async move {
        ptk(&base, "AddInteraction", &inner).await
    })
    .await;
    let mut codes: Vec<u32> = booked.iter().map(|(c, _)| *c).collect();
    codes.sort_unstable();
    assert_eq!(codes, [107000, 107014, 107014, 107014, 107014, 107014]);
    let slot_holder = booked
        .iter()
        .find_map(|(c, id)| (*c == 107000).then(|| id.clone().expect("id")))
        .expect("one booking");

    // Ten ClientIds, three copies each, each copy through another instance, all at once:
    // the licences left (LICENCES - 1) go to that many ClientIds, one interaction each.
    let add = |client: &str, contact: usize| {
        format!("<data>{t}<Segment>VHT_Test</Segment><Contact>{contact}</Contact><Options><ClientId>{client}</ClientId></Options></data>")
    };
    let mut jobs = Vec::new();
    for copy in 0..3 {
        for c in 0..10 {
            jobs.push((c + copy, add(&format!("client-{c}"), 5559000 + c)));
        }
    }
    let answers = at_once(jobs, &bases, |base, inner| async move {
        (ptk(&base, "AddInteraction", &inner).await, inner)
    })
    .await;
    // ClientId -> (codes, ids, instance of the first acceptance).
    let mut by_client: BTreeMap<usize, (BTreeSet<u32>, BTreeSet<String>, usize)> = BTreeMap::new();
    for (n, ((code, id), _)) in answers.into_iter().enumerate() {
        let (c, copy) = (n % 10, n / 10);
        let entry = by_client
            .entry(c)
            .or_insert((BTreeSet::new(), BTreeSet::new(), 3));
        entry.0.insert(code);
        if code == 107000 {
            entry.1.insert(id.expect("id"));
            entry.2 = entry.2.min((c + copy) % 3);
        }
    }
    // (interaction, instance that created it, its ClientId's number)
    let mut accepted: Vec<(String, usize, usize)> = Vec::new();
    for (c, (codes, ids, creator)) in &by_client {
        match codes.iter().copied().collect::<Vec<_>>()[..] {
            [107000] => {
                assert_eq!(ids.len(), 1, "client-{c} got several interactions: {ids:?}");
                accepted.push((ids.first().expect("id").clone(), *creator, *c));
            }
            [109005] => {}
            _ => panic!("client-{c}: copies answered {codes:?}"),
        }
    }
    assert_eq!(
        accepted.len(),
        LICENCES - 1,
        "licences granted by three instances: {by_client:?}"
    );
    let distinct: HashSet<&String> = accepted.iter().map(|(id, _, _)| id).collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "one interaction per ClientId"
    );
    // The cluster is full: a new ClientId is refused on every instance.
    for base in &bases {
        assert_eq!(
            ptk(base, "AddInteraction", &add("full", 5559100)).await.0,
            109005
        );
    }

    // Each interaction resent to the third instance, read and modified through the one after
    // its creator's.
    for (n, (id, creator, c)) in accepted.iter().enumerate() {
        let third = &bases[(creator + 2) % 3];
        assert_eq!(
            ptk(
                third,
                "AddInteraction",
                &add(&format!("client-{c}"), 5559000 + c)
            )
            .await,
            (107000, Some(id.clone())),
            "a resend to another instance answers the original"
        );
        let with_id = format!("{t}<InteractionId>{id}</InteractionId>");
        let other = &bases[(creator + 1) % 3];
        assert_eq!(
            ptk(
                other,
                "GetInteractionData",
                &format!("<data>{with_id}</data>")
            )
            .await
            .0,
            107000
        );
        let renamed = format!("renamed-{n}");
        assert_eq!(
            ptk(other, "ModifyInteraction", &format!("<data>{with_id}<Action>ClientId</Action><Options><ClientId>{renamed}</ClientId></Options></data>")).await.0,
            107000
        );
    }
    // Three cancelled at once, each through an instance other than its creator's.
    let cancelled: Vec<(String, usize, usize)> = accepted[..3].to_vec();
    let jobs = cancelled
        .iter()
        .map(|(id, creator, _)| {
            (creator + 2, format!("<data>{t}<InteractionId>{id}</InteractionId><Reason>Web Canceled</Reason></data>"))
        })
        .collect();
    let removed = at_once(jobs, &bases, |base, inner| async move {
        ptk(&base, "RemoveInteraction", &inner).await.0
    })
    .await;
    assert_eq!(removed, [107000; 3]);
    // The three freed licences go to three of five new ClientIds (two copies each).
    let mut jobs = Vec::new();
    for copy in 0..2 {
        for c in 0..5 {
            jobs.push((c + copy, add(&format!("later-{c}"), 5559200 + c)));
        }
    }
    let later = at_once(jobs, &bases, |base, inner| async move {
        ptk(&base, "AddInteraction", &inner).await
    })
    .await;
    let mut later_ids: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (n, (code, id)) in later.into_iter().enumerate() {
        if code == 107000 {
            later_ids.entry(n % 5).or_default().insert(id.expect("id"));
        } else {
            assert_eq!(code, 109005, "later-{}", n % 5);
        }
    }
    assert_eq!(later_ids.len(), 3, "freed licences: {later_ids:?}");
    assert!(
        later_ids.values().all(|ids| ids.len() == 1),
        "{later_ids:?}"
    );

    // OpenScape: three calls at once, call k's requests through instance k, k+1 and k+2, its
    // long-poll on k woken by the assignment through k+1.
    let calls: Vec<_> = (0..3usize)
        .map(|k| {
            let bases = bases.clone();
            tokio::spawn(async move {
                let channel = format!("606{k}");
                let (a, b, c) = (&bases[k], &bases[(k + 1) % 3], &bases[(k + 2) % 3]);
                let init = rpc(a, &channel, "Initialize", json!([channel, "x", 10000])).await;
                assert_eq!(rc(&init), 0, "{init}");
                let info = rpc(
                    b,
                    &channel,
                    "QueryCallInfo",
                    json!([channel, null, null, null, null, null, null, null, null, "1;"]),
                )
                .await;
                let call = info["CallID"].as_str().expect("CallID").to_owned();
                let e = rpc(
                    c,
                    &channel,
                    "Enqueue",
                    json!([call, 1, "Sales", 10, "", ">E", ">C"]),
                )
                .await;
                assert_eq!(rc(&e), 0, "{e}");
                let waiting = tokio::spawn({
                    let (a, channel, call) = (a.clone(), channel.clone(), call.clone());
                    async move {
                        let t = Instant::now();
                        let r = rpc(
                            &a,
                            &channel,
                            "QueryCallStatus",
                            json!([call, 8000, ">E", ">P"]),
                        )
                        .await;
                        (t.elapsed(), r)
                    }
                });
                tokio::time::sleep(Duration::from_millis(400)).await;
                let response = client()
                    .post(format!("{b}/api/acme/openscape/calls/{call}/assign"))
                    .json(&json!({"extension": format!("47{k}1")}))
                    .send()
                    .await
                    .expect("assign");
                assert_eq!(response.status().as_u16(), 200);
                let (elapsed, r) = tokio::time::timeout(WAIT, waiting)
                    .await
                    .expect("answered")
                    .expect("task");
                assert_eq!(
                    (rc(&r), r["Extension"].clone()),
                    (2, json!(format!("47{k}1"))),
                    "{r}"
                );
                // The wait is 8 s: an answer well before it was woken by the other
                // instance's commit.
                assert!(
                    elapsed < Duration::from_secs(6),
                    "call {k} woken by another instance: {elapsed:?}"
                );
                call
            })
        })
        .collect();
    let mut os_calls = Vec::new();
    for task in calls {
        os_calls.push(task.await.expect("openscape call"));
    }
    assert_eq!(
        os_calls.iter().collect::<HashSet<_>>().len(),
        3,
        "{os_calls:?}"
    );

    // Every acknowledged change is one webhook, each entity's sequence gapless. PTK: created
    // and modified, removed for the cancelled ones (the slot holder and the later ones:
    // created); an ASAP callback may also fall due at once (`callback.due`, on whichever
    // instance runs the timer). OpenScape: arrived, enqueued, assigned.
    let mut want: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    want.insert(
        format!("ptk:{slot_holder}"),
        vec!["ptk.interaction.created"],
    );
    for (id, _, _) in &accepted {
        let mut kinds = vec!["ptk.interaction.created", "ptk.interaction.modified"];
        if cancelled.iter().any(|(c, _, _)| c == id) {
            kinds.push("ptk.interaction.removed");
        }
        want.insert(format!("ptk:{id}"), kinds);
    }
    for ids in later_ids.values() {
        let id = ids.first().expect("id");
        want.insert(format!("ptk:{id}"), vec!["ptk.interaction.created"]);
    }
    for call in &os_calls {
        want.insert(
            format!("os:{call}"),
            vec![
                "openscape.call.arrived",
                "openscape.call.enqueued",
                "openscape.call.assigned",
            ],
        );
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut got: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let mut record = |hook: &Hook, got: &mut BTreeMap<String, Vec<(u64, String)>>| {
        assert!(hook.verifies(), "signed");
        if !seen.insert(hook.header("webhook-id").to_owned()) {
            return;
        }
        let data = &hook.json["data"];
        let key = match data["vendor"].as_str() {
            Some("ptk") => format!("ptk:{}", data["interaction_id"].as_str().unwrap_or("")),
            Some("openscape") => {
                format!(
                    "os:{}",
                    data["correlation"]["CallID"].as_str().unwrap_or("")
                )
            }
            _ => return,
        };
        let seq = data["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {}", hook.json));
        let kind = hook.json["type"].as_str().unwrap_or("").to_owned();
        got.entry(key).or_default().push((seq, kind));
    };
    // Complete: every wanted kind arrived and no sequence number is missing below the last.
    let gapless = |events: &[(u64, String)]| {
        let mut seqs: Vec<u64> = events.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        seqs == (1..=seqs.len() as u64).collect::<Vec<_>>()
    };
    let complete = |got: &BTreeMap<String, Vec<(u64, String)>>| {
        want.iter().all(|(key, kinds)| {
            got.get(key).is_some_and(|events| {
                gapless(events) && kinds.iter().all(|k| events.iter().any(|(_, e)| e == k))
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !complete(&got) && Instant::now() < deadline {
        if let Some(hook) = receiver.next_within(Duration::from_millis(500)).await {
            record(&hook, &mut got);
        }
    }
    // What arrives after is checked too: nothing beyond the events above.
    for hook in receiver.drain(Duration::from_millis(500)).await {
        record(&hook, &mut got);
    }
    assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        want.keys().collect::<BTreeSet<_>>(),
        "one entity per vendor id"
    );
    for (key, kinds) in &want {
        let mut events = got[key].clone();
        events.sort();
        assert!(gapless(&events), "{key}: a gap in {events:?}");
        let mut extra: Vec<&str> = events.iter().map(|(_, k)| k.as_str()).collect();
        for kind in kinds {
            let at = extra
                .iter()
                .position(|k| k == kind)
                .unwrap_or_else(|| panic!("{key}: no {kind} in {events:?}"));
            extra.remove(at);
        }
        let due_allowed = key.starts_with("ptk:") && *key != format!("ptk:{slot_holder}");
        assert!(
            extra.is_empty() || (due_allowed && extra == ["callback.due"]),
            "{key}: unexpected {extra:?} in {events:?}"
        );
    }
    for d in &mut daemons {
        d.assert_alive();
    }
    eprintln!(
        "three instances, PTK and OpenScape ({backend:?}): {} entities, {} webhooks; total {:?}",
        want.len(),
        seen.len(),
        started.elapsed()
    );
}
