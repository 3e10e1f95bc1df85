//! Adapter entities (see `ivrgate_adapter::state`): reads, atomic transitions, aliases, timers
//! and waiting for a change, on the same store, calls table and outbox as the core's calls.
//!
//! A transition reads its entities, lets the adapter's pure closure compute the changes, and
//! commits them as one unit of work guarded by the versions read; on a conflict (another
//! request or instance changed an entity) it reads again and asks the closure again.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivrgate_adapter::state::MAX_WAIT;
use ivrgate_adapter::{
    AliasChange, Change, Entity, EntityKey, RecordError, TimerChange, TransitionFn, Transitioned,
    Waited,
};
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::clock::{from_ms, to_ms};
use crate::core::Core;
use crate::envelope::{note_core_keys, Envelope, EventData, Reported, EVENT_KEYS};
use crate::ids;
use crate::metrics::OutcomeLabels;
use crate::store::{
    AliasAction, AliasOp, CallKey, CallRow, CallWrite, CommitOutcome, EntityWrite, NewEvent,
    TimerOp, UnitOfWork,
};

/// The timer kind of entity timers in the store.
pub const TIMER_KIND: &str = "entity";

/// Keys of a call's stored state that the core writes: decisions on a call-like entity, and
/// what `record` keeps on a call. They live in the stored document beside the adapter's keys
/// (so rows written by earlier releases read the same, and `call.expired` shows them in
/// `last_state`), but an adapter never sees them: [`split`] takes them out of every entity it
/// reads, and [`join`] puts them back, in this order, after the adapter's keys when it writes.
const CORE_KEYS: [&str; 4] = ["decisions", "last_decision", "started_at", "last_event_at"];

/// A stored state split into the adapter's document and the core's keys (in [`CORE_KEYS`]
/// order). A state that is not an object has no core keys.
fn split(state: Option<Value>) -> (Option<Value>, Map<String, Value>) {
    let mut core = Map::new();
    match state {
        Some(Value::Object(mut doc)) => {
            for key in CORE_KEYS {
                if let Some(value) = doc.shift_remove(key) {
                    core.insert(key.to_owned(), value);
                }
            }
            (Some(Value::Object(doc)), core)
        }
        other => (other, core),
    }
}

/// The document stored for an adapter's new state: its keys, then the core's as read. A key
/// of the core's that the adapter wrote is the adapter's mistake: logged, and the core's kept.
fn join(state: Option<Value>, core: &Map<String, Value>, kind: &str) -> Option<Value> {
    match state {
        Some(Value::Object(mut doc)) => {
            for key in CORE_KEYS {
                if doc.shift_remove(key).is_some() {
                    tracing::warn!(
                        key,
                        kind,
                        "adapter state names a key the core keeps; left out"
                    );
                }
            }
            doc.extend(core.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(Value::Object(doc))
        }
        other => other,
    }
}

/// How often a transition is recomputed when its entities keep changing under it.
const ATTEMPTS: usize = 16;

fn call_key(key: &EntityKey) -> CallKey {
    CallKey {
        tenant: key.tenant.clone(),
        vendor: key.kind.clone(),
        vendor_call_id: key.id.clone(),
    }
}

/// The entity an adapter sees of a stored row, and the core's keys of its state.
fn entity(key: EntityKey, row: CallRow) -> (Entity, Map<String, Value>) {
    let (state, core) = split(row.state);
    let entity = Entity {
        key,
        entity_id: row.call_id,
        version: row.version,
        status: row.status,
        state,
        attached: row.attached,
        expires_at: row.expires_at_ms.map(from_ms),
    };
    (entity, core)
}

/// What the store keeps of an entity timer besides its key and due time: whose it is and
/// what the adapter gave, handed back in [`ivrgate_adapter::TimerFired`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntityTimer {
    /// The entity's kind (its prefix names the adapter that runs the timer) and id.
    pub kind: String,
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub payload: Value,
}

/// The store key of an entity's timer.
pub fn timer_key(key: &EntityKey, name: &str) -> String {
    format!(
        "{TIMER_KIND}:{}:{}:{}:{}",
        key.tenant.len(),
        key.tenant,
        key.kind,
        serde_json::to_string(&(&key.id, name)).unwrap_or_default()
    )
}

fn unavailable(e: impl std::fmt::Display) -> RecordError {
    RecordError::Unavailable(e.to_string())
}

/// One waiter's registration in `Core::entity_waiters`; the entry goes with its last waiter.
struct WaiterGuard<'a> {
    core: &'a Core,
    key: CallKey,
    notify: Arc<Notify>,
}

impl<'a> WaiterGuard<'a> {
    fn register(core: &'a Core, key: CallKey) -> Self {
        let notify = core
            .entity_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        WaiterGuard { core, key, notify }
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut waiters = self
            .core
            .entity_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's reference and this guard's: no other waiter shares it.
        if Arc::strong_count(&self.notify) <= 2 {
            waiters.remove(&self.key);
        }
    }
}

impl Core {
    /// Wakes this process's waiters on an entity after a commit changed it.
    pub(crate) fn wake_entity(&self, key: &CallKey) {
        let waiters = self
            .entity_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = waiters.get(key) {
            notify.notify_waiters();
        }
    }

    fn count_entity(&self, outcome: &str) {
        self.metrics
            .entity_transitions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub(crate) async fn load_entity(&self, key: EntityKey) -> Result<Option<Entity>, RecordError> {
        Ok(self.load_split(key).await?.map(|(entity, _)| entity))
    }

    /// An entity as the adapter sees it, with the core's keys of its state.
    async fn load_split(
        &self,
        key: EntityKey,
    ) -> Result<Option<(Entity, Map<String, Value>)>, RecordError> {
        let row = self
            .store
            .load_call(call_key(&key))
            .await
            .map_err(unavailable)?;
        Ok(row.map(|row| entity(key, row)))
    }

    pub(crate) async fn find_entity(
        &self,
        tenant: &str,
        namespace: &str,
        value: &str,
    ) -> Result<Option<Entity>, RecordError> {
        let owner = self
            .store
            .find_alias(
                tenant.to_owned(),
                namespace.to_owned(),
                value.to_owned(),
                self.clock.now_ms(),
            )
            .await
            .map_err(unavailable)?;
        match owner {
            Some((kind, id)) => self.load_entity(EntityKey::new(tenant, kind, id)).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn list_entities(
        &self,
        tenant: &str,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<Entity>, RecordError> {
        let rows = self
            .store
            .list_live(tenant.to_owned(), kind.to_owned(), limit)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(key, row)| {
                entity(
                    EntityKey::new(key.tenant, key.vendor, key.vendor_call_id),
                    row,
                )
                .0
            })
            .collect())
    }

    pub(crate) async fn transition_entities(
        &self,
        keys: Vec<EntityKey>,
        f: &mut TransitionFn<'_>,
    ) -> Result<Transitioned, RecordError> {
        let runtime = self.runtime.load_full();
        let tenant_id = keys.first().map(|k| k.tenant.clone()).unwrap_or_default();
        if keys.iter().any(|k| k.tenant != tenant_id) {
            return Err(RecordError::Unavailable(
                "a transition spans one tenant".into(),
            ));
        }
        let Some(tenant) = runtime.config.tenant(&tenant_id) else {
            return Err(RecordError::Unavailable("unknown tenant".into()));
        };
        // Stripes locked in ascending order, so two multi-entity transitions cannot deadlock.
        let mut stripes: Vec<usize> = keys
            .iter()
            .map(|k| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                k.hash(&mut h);
                (h.finish() % self.entity_locks.len() as u64) as usize
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            if let Some(lock) = self.entity_locks.get(stripe) {
                guards.push(lock.lock().await);
            }
        }
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Another process changed an entity meanwhile: give it a moment.
                let pause = rand::random_range(1..=(5 * attempt as u64));
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let mut read = Vec::with_capacity(keys.len());
            let mut cores = Vec::with_capacity(keys.len());
            for key in &keys {
                let (entity, core) = self.load_split(key.clone()).await?.unzip();
                read.push(entity);
                cores.push(core.unwrap_or_default());
            }
            let changes = f(&read);
            let now = self.clock.now();
            let now_ms = to_ms(now);
            let mut uow = UnitOfWork {
                tenant: tenant.id.clone(),
                now_ms,
                outbox_quota: Some(tenant.outbox_quota),
                ..UnitOfWork::default()
            };
            // The entities as written, answered once committed. Their states are shared with
            // the unit of work rather than copied: a large state would be held twice through
            // the commit.
            let mut fresh: Vec<(usize, Entity, Option<Arc<Value>>)> = Vec::new();
            for (i, change) in changes.into_iter().enumerate() {
                let Change::Write(write) = change else {
                    continue;
                };
                let (Some(key), Some(before)) = (keys.get(i), read.get(i)) else {
                    break;
                };
                let entity_id = before
                    .as_ref()
                    .map(|e| e.entity_id.clone())
                    .unwrap_or_else(ids::call_id);
                let state = match cores.get(i) {
                    Some(core) => join(write.state, core, &key.kind),
                    None => write.state,
                };
                let attached = write
                    .attached
                    .or_else(|| before.as_ref().map(|e| e.attached.clone()))
                    .unwrap_or_default();
                let status = match (&state, before.as_ref().map(|e| e.status.as_str())) {
                    (Some(_), _) => "active",
                    (None, Some("expired")) => "expired",
                    (None, _) => "ended",
                };
                let expires_at = write.expires_at;
                let events = write
                    .events
                    .into_iter()
                    .map(|ev| {
                        note_core_keys(&ev.data, &EVENT_KEYS, &ev.event_type);
                        let event_id = ids::event_id();
                        let payload = Envelope {
                            kind: ev.event_type.clone(),
                            timestamp: ev.occurred_at.unwrap_or(now),
                            data: EventData::Reported(Reported {
                                event_id: event_id.clone(),
                                tenant: tenant.id.clone(),
                                vendor: key.adapter().to_owned(),
                                call_id: Some(entity_id.clone()),
                                correlation: ev.correlation,
                                attached: attached.clone(),
                                fields: ev.data,
                                received_at: now,
                                vendor_fields: ev.vendor_fields,
                            }),
                        };
                        NewEvent {
                            event_id,
                            event_type: ev.event_type,
                            payload: payload.into(),
                        }
                    })
                    .collect();
                for timer in write.timers {
                    uow.timers.push(match timer {
                        TimerChange::Set { name, due, payload } => TimerOp::Set {
                            key: timer_key(key, &name),
                            kind: TIMER_KIND.to_owned(),
                            tenant: tenant.id.clone(),
                            due_ms: to_ms(due),
                            payload: serde_json::to_value(EntityTimer {
                                kind: key.kind.clone(),
                                id: key.id.clone(),
                                name,
                                payload,
                            })
                            .unwrap_or(Value::Null),
                        },
                        TimerChange::Cancel { name } => TimerOp::Delete {
                            key: timer_key(key, &name),
                        },
                    });
                }
                for alias in write.aliases {
                    let (namespace, value, action) = match alias {
                        AliasChange::Claim {
                            namespace,
                            value,
                            until,
                        } => (
                            namespace,
                            value,
                            AliasAction::Claim {
                                until_ms: until.map(to_ms),
                            },
                        ),
                        AliasChange::Release { namespace, value } => {
                            (namespace, value, AliasAction::Release)
                        }
                    };
                    uow.aliases.push(AliasOp {
                        namespace,
                        value,
                        owner_kind: key.kind.clone(),
                        owner_id: key.id.clone(),
                        action,
                    });
                }
                let state = state.map(Arc::new);
                fresh.push((
                    i,
                    Entity {
                        key: key.clone(),
                        entity_id: entity_id.clone(),
                        version: before.as_ref().map_or(1, |e| e.version + 1),
                        status: status.to_owned(),
                        state: None,
                        attached: attached.clone(),
                        expires_at,
                    },
                    state.clone(),
                ));
                uow.entities.push(EntityWrite {
                    row: CallWrite {
                        key: call_key(key),
                        call_id: entity_id,
                        expected_version: before.as_ref().map(|e| e.version),
                        status,
                        attached,
                        state,
                        expires_at_ms: expires_at.map(to_ms),
                    },
                    events,
                });
            }
            if uow.entities.is_empty() {
                return Ok(Transitioned::Done(read));
            }
            let written: Vec<CallKey> = uow.entities.iter().map(|e| e.row.key.clone()).collect();
            // What was read of the entities being written is not answered: not held through
            // the commit either.
            for (i, _, _) in &fresh {
                if let Some(slot) = read.get_mut(*i) {
                    *slot = None;
                }
            }
            match self.store.commit(uow).await {
                Ok(CommitOutcome::Committed { .. }) => {
                    self.count_entity("committed");
                    for written in &written {
                        self.wake_entity(written);
                    }
                    let mut after = read;
                    for (i, mut entity, state) in fresh {
                        // The store has let go of its share by now; a copy only if it has not.
                        // The core's keys (last, where `join` put them) are not the adapter's.
                        let state =
                            state.map(|s| Arc::try_unwrap(s).unwrap_or_else(|s| (*s).clone()));
                        entity.state = split(state).0;
                        if let Some(slot) = after.get_mut(i) {
                            *slot = Some(entity);
                        }
                    }
                    return Ok(Transitioned::Done(after));
                }
                Ok(CommitOutcome::Conflict) => {
                    self.count_entity("conflict");
                    continue;
                }
                Ok(CommitOutcome::AliasTaken {
                    namespace,
                    value,
                    owner_kind,
                    owner_id,
                }) => {
                    self.count_entity("alias_taken");
                    return Ok(Transitioned::AliasTaken {
                        namespace,
                        value,
                        owner: EntityKey::new(&tenant.id, owner_kind, owner_id),
                    });
                }
                Ok(CommitOutcome::StorageFull) => {
                    self.count_entity("storage_full");
                    tracing::error!(tenant = %tenant.id, "entity change refused: storage nearly full");
                    return Err(RecordError::StorageFull);
                }
                Ok(CommitOutcome::QuotaExceeded) => {
                    self.count_entity("quota_exceeded");
                    tracing::warn!(tenant = %tenant.id, quota = tenant.outbox_quota, "entity change refused: tenant outbox quota exceeded");
                    return Err(RecordError::QuotaExceeded);
                }
                Ok(CommitOutcome::Duplicate(_)) => {
                    return Err(RecordError::Unavailable("unexpected duplicate".into()));
                }
                Err(e) => {
                    self.count_entity("error");
                    tracing::error!(tenant = %tenant.id, error = %e, "entity change not stored");
                    return Err(unavailable(e));
                }
            }
        }
        self.count_entity("error");
        Err(RecordError::Unavailable(
            "the entity kept changing; retry".into(),
        ))
    }

    pub(crate) async fn wait_entity(
        &self,
        key: EntityKey,
        seen: Option<i64>,
        timeout: Duration,
    ) -> Waited {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        let mut stopping = self.stopping.subscribe();
        let waiter = WaiterGuard::register(self, call_key(&key));
        loop {
            if *stopping.borrow_and_update() {
                return Waited::ShuttingDown;
            }
            // Registered before the read, so a commit between the read and the wait is seen.
            let mine = waiter.notify.notified();
            let foreign = self.store.changes().foreign.notified();
            tokio::pin!(mine, foreign);
            mine.as_mut().enable();
            foreign.as_mut().enable();
            match self.load_entity(key.clone()).await {
                Ok(found) => {
                    if found.as_ref().map(|e| e.version) != seen {
                        return Waited::Changed(found);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read entity while waiting"),
            }
            tokio::select! {
                () = &mut mine => {}
                () = &mut foreign => {}
                () = tokio::time::sleep_until(deadline.into()) => return Waited::TimedOut,
                _ = stopping.changed() => return Waited::ShuttingDown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(v: &Option<Value>) -> Vec<String> {
        v.as_ref()
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A state stored by an earlier release, with the core's keys among the adapter's (an
    /// adapter that kept the whole map), reads as the adapter's keys in their order.
    #[test]
    fn the_adapter_never_sees_the_cores_keys() {
        let stored = json!({
            "started_at": "2026-01-05T12:00:00Z",
            "route": {"state": "pending"},
            "decisions": 2,
            "agent": "7",
            "last_decision": {"decision_id": "dec_1"},
        });
        let (adapter, core) = split(Some(stored));
        assert_eq!(
            adapter,
            Some(json!({"route": {"state": "pending"}, "agent": "7"}))
        );
        assert_eq!(keys(&adapter), ["route", "agent"]);
        assert_eq!(
            core.keys().collect::<Vec<_>>(),
            ["decisions", "last_decision", "started_at"]
        );
    }

    /// An entity timer's stored payload keeps the shape earlier releases wrote (rows in the
    /// store read back), with the adapter's payload optional.
    #[test]
    fn entity_timers_read_as_earlier_releases_wrote_them() {
        let stored = json!({"kind": "openscape", "id": "77", "name": "transit_expiry", "payload": {"number": "8801"}});
        let timer: EntityTimer = serde_json::from_value(stored.clone()).expect("reads");
        assert_eq!(
            (timer.kind.as_str(), timer.name.as_str()),
            ("openscape", "transit_expiry")
        );
        assert_eq!(serde_json::to_value(&timer).expect("writes"), stored);
        let bare: EntityTimer =
            serde_json::from_value(json!({"kind": "ptk", "id": "V1", "name": "due"}))
                .expect("reads");
        assert_eq!(bare.payload, Value::Null);
        assert!(serde_json::from_value::<EntityTimer>(json!({"kind": "ptk"})).is_err());
    }

    /// The stored document is the adapter's keys, then the core's as read; a core key the
    /// adapter wrote does not replace the core's.
    #[test]
    fn a_write_keeps_the_cores_keys_after_the_adapters() {
        let (_, core) = split(Some(json!({"decisions": 1, "x": 0, "started_at": "t0"})));
        let written = join(
            Some(json!({"b": 1, "decisions": 99, "a": 2})),
            &core,
            "openscape",
        );
        assert_eq!(keys(&written), ["b", "a", "decisions", "started_at"]);
        assert_eq!(written.as_ref().map(|s| &s["decisions"]), Some(&json!(1)));
        // Ending (no state) and a state that is no object are left as they are.
        assert_eq!(join(None, &core, "openscape"), None);
        assert_eq!(join(Some(json!(3)), &core, "x"), Some(json!(3)));
        assert_eq!(split(Some(json!("s"))), (Some(json!("s")), Map::new()));
    }
}
