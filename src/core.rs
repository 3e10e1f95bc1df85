//! The gateway core: what adapters call through [`ivrgate_adapter::Gateway`]. `Core` holds
//! the running configuration ([`Runtime`]), the store, the webhook clients and breakers;
//! events become one unit of work each, committed (fsynced) before the adapter acknowledges.
//! Decisions are in [`crate::decisions`], entities in [`crate::entities`], and every payload
//! is written by [`crate::envelope`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use ivrgate_adapter::epoch::rfc3339;
use ivrgate_adapter::{
    BoxFuture, CallEffect, Decision, DecisionPoint, DecisionRequest, Entity, EntityKey,
    EventSubmission, Gateway, ParsedSettings, RecordError, Recorded, TransitionFn, Transitioned,
    Waited,
};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::breaker::Breakers;
use crate::clock::SharedClock;
use crate::cluster::{BreakerNews, Membership};
use crate::config::{ResolvedConfig, ResolvedTenant};
use crate::decision_client::{BuildError, DecisionClient};
use crate::decisions::PendingDecision;
use crate::envelope::{note_core_keys, Envelope, EventData, EventPayload, Reported, EVENT_KEYS};
use crate::ids;
use crate::metrics::{AdapterLabels, Metrics, OutcomeLabels};
use crate::store::{
    CallKey, CallRow, CallWrite, CommitOutcome, DedupWrite, NewEvent, Store, UnitOfWork,
};

/// Per-configuration state: rebuilt on reload, and resized when the live instances on the
/// store change ([`crate::cluster`]): the limiters and slots hold this instance's share.
pub struct Runtime {
    pub config: ResolvedConfig,
    /// The share these limits were sized for.
    pub membership: Membership,
    pub decision_limits: HashMap<String, DefaultDirectRateLimiter>,
    pub delivery_limits: HashMap<String, Arc<DefaultDirectRateLimiter>>,
    pub delivery_slots: HashMap<String, Arc<Semaphore>>,
    /// Each tenant's slots in `delivery_slots`: this instance's share of
    /// `delivery.per_endpoint_concurrency`.
    pub slots_per_endpoint: usize,
}

impl Runtime {
    pub fn new(config: ResolvedConfig, membership: Membership) -> Runtime {
        let slots = Runtime::slot_share(&config, membership);
        let delivery_slots = config
            .tenants
            .iter()
            .map(|t| (t.id.clone(), Arc::new(Semaphore::new(slots))))
            .collect();
        Runtime::with_slots(config, membership, delivery_slots, slots)
    }

    /// The same configuration with limits sized for `membership`. The slots semaphores are
    /// kept and resized, so deliveries in flight still count against them.
    pub fn resized(old: &Runtime, membership: Membership) -> Runtime {
        let slots = Runtime::slot_share(&old.config, membership);
        for semaphore in old.delivery_slots.values() {
            if slots > old.slots_per_endpoint {
                semaphore.add_permits(slots - old.slots_per_endpoint);
            } else {
                // Free permits go at once; those in flight are not given back later than
                // their delivery, so the excess ends with it.
                let mut excess = old.slots_per_endpoint - slots;
                excess -= semaphore.forget_permits(excess);
                if excess > 0 {
                    let semaphore = semaphore.clone();
                    tokio::spawn(async move {
                        if let Ok(permits) = semaphore.acquire_many(excess as u32).await {
                            permits.forget();
                        }
                    });
                }
            }
        }
        Runtime::with_slots(
            old.config.clone(),
            membership,
            old.delivery_slots.clone(),
            slots,
        )
    }

    fn slot_share(config: &ResolvedConfig, membership: Membership) -> usize {
        let whole = config.raw.delivery.per_endpoint_concurrency.max(1);
        usize::try_from(membership.split(whole as u64)).unwrap_or(whole)
    }

    fn with_slots(
        config: ResolvedConfig,
        membership: Membership,
        delivery_slots: HashMap<String, Arc<Semaphore>>,
        slots_per_endpoint: usize,
    ) -> Runtime {
        let decision_limits = config
            .tenants
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    RateLimiter::direct(membership.rate(t.decisions_per_second)),
                )
            })
            .collect();
        let delivery_limits = config
            .tenants
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    Arc::new(RateLimiter::direct(
                        membership.rate(t.deliveries_per_second),
                    )),
                )
            })
            .collect();
        Runtime {
            config,
            membership,
            decision_limits,
            delivery_limits,
            delivery_slots,
            slots_per_endpoint,
        }
    }
}

/// The HTTP clients of customer webhooks: decisions and event deliveries each have their
/// own pool, so decisions never wait behind deliveries. The gateway's shared pair trusts the
/// public roots; a tenant with a `ca_file` gets a pair that trusts its CA too.
#[derive(Clone)]
pub struct WebhookClients {
    pub decision: DecisionClient,
    pub delivery: reqwest::Client,
}

impl WebhookClients {
    /// Builds both clients, trusting `extra_roots` besides the public roots.
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<WebhookClients, BuildError> {
        // Redirects are not followed: only a 2xx from the configured URL counts, and a
        // signed POST must not be replayed elsewhere (or turned into a GET). Timeouts are
        // set per request (the decision's deadline, `delivery.timeout_ms`). Decisions have
        // a client of their own, lighter than reqwest (`decision_client.rs`).
        let mut delivery = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(5));
        for root in extra_roots {
            delivery = delivery.add_root_certificate(reqwest::Certificate::from_der(root)?);
        }
        Ok(WebhookClients {
            decision: DecisionClient::new(extra_roots)?,
            delivery: delivery.build()?,
        })
    }
}

pub struct Core {
    pub runtime: ArcSwap<Runtime>,
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub instance: String,
    pub points: Vec<&'static DecisionPoint>,
    /// Decision webhooks: their own connection pool, so they never wait behind deliveries.
    pub decision_http: DecisionClient,
    pub delivery_http: reqwest::Client,
    /// Breakers for decision URLs and for event endpoints, kept apart: a customer whose
    /// event handler fails must still get its calls' decisions.
    pub decision_breakers: Breakers,
    pub delivery_breakers: Breakers,
    /// What the breakers opened and closed, until [`crate::cluster::tell`] takes it to
    /// share through the store.
    pub breaker_news: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<BreakerNews>>>,
    /// Tenants whose endpoint answered 410, as last read from the store (or just recorded
    /// here), checked before every delivery attempt.
    pub disabled_endpoints: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Decisions answered by this process whose call-state write is queued but not yet
    /// committed, so a request on the same call moments later still sees them.
    pub(crate) pending_decisions: Arc<std::sync::Mutex<HashMap<CallKey, PendingDecision>>>,
    /// Set when the gateway stops: long-polls answer at once.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Set when the shutdown grace has run out: every decision still waiting for the
    /// customer answers with its fallback at once (a caller never hears dead air).
    pub grace_over: tokio::sync::watch::Sender<bool>,
    /// Decisions being decided now (for the shutdown log line).
    pub(crate) decisions_open: std::sync::atomic::AtomicUsize,
    /// Transitions on the same entity in this process take turns (striped by key), so they
    /// do not keep invalidating each other; versions still guard against other processes.
    pub(crate) entity_locks: Vec<tokio::sync::Mutex<()>>,
    /// Waiters on entities (long-polls), woken by key when this process commits a change
    /// to that entity, so a commit does not make every waiter read the store.
    pub(crate) entity_waiters: std::sync::Mutex<HashMap<CallKey, Arc<tokio::sync::Notify>>>,
    /// The connectors this instance supervises.
    pub connectors: crate::connectors::Supervisor,
    /// Adapters beside the built-in ones (tests give one through [`crate::Options`]).
    pub extra_adapters: Vec<&'static dyn ivrgate_adapter::Adapter>,
    /// The delivery and timer loops' last turns, for the systemd watchdog.
    pub liveness: crate::liveness::Liveness,
    /// The client commands call platform APIs with (`Gateway::platform_api`).
    pub platform_api: crate::connectors::ApiClient,
    /// Sees every webhook sent and answered and how each decision was settled
    /// (`ivrgate simulate`; the daemon sets none).
    pub observer: Option<Arc<dyn crate::observe::Observer>>,
}

impl Core {
    pub fn new(
        config: ResolvedConfig,
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        points: Vec<&'static DecisionPoint>,
    ) -> anyhow::Result<Core> {
        let delivery = &config.raw.delivery;
        let (failures, open_ms) = (delivery.breaker_failures, delivery.breaker_open_ms);
        let open_for = Duration::from_millis(open_ms);
        // Openings and closes are shared with the other instances on the store.
        let (news, news_rx) = tokio::sync::mpsc::channel(crate::cluster::NEWS_QUEUE);
        let breaker = |scope| Breakers::shared(failures, open_for, scope, news.clone());
        let WebhookClients {
            decision: decision_http,
            delivery: delivery_http,
        } = WebhookClients::new(&[])?;
        // Leases are taken under the store's owner identity, whose liveness other instances
        // can test; the reserve is kept from the first commit on.
        let instance = store.owner_id().to_owned();
        store.set_free_space_reserve(config.raw.storage.min_free_bytes);
        Ok(Core {
            runtime: ArcSwap::from_pointee(Runtime::new(config, Membership::ALONE)),
            store,
            clock,
            metrics: metrics.clone(),
            instance,
            points,
            decision_http,
            delivery_http,
            decision_breakers: breaker(crate::cluster::DECISION),
            delivery_breakers: breaker(crate::cluster::DELIVERY),
            breaker_news: std::sync::Mutex::new(Some(news_rx)),
            disabled_endpoints: std::sync::Mutex::new(Default::default()),
            pending_decisions: Arc::new(std::sync::Mutex::new(HashMap::new())),
            stopping: tokio::sync::watch::Sender::new(false),
            grace_over: tokio::sync::watch::Sender::new(false),
            decisions_open: std::sync::atomic::AtomicUsize::new(0),
            entity_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            entity_waiters: std::sync::Mutex::new(HashMap::new()),
            connectors: crate::connectors::Supervisor::default(),
            extra_adapters: Vec::new(),
            liveness: Default::default(),
            platform_api: crate::connectors::ApiClient::new(metrics.clone())
                .map_err(|e| anyhow::anyhow!(e))?,
            observer: None,
        })
    }

    /// Every adapter: the built-in ones, then any given by [`crate::Options::adapters`].
    pub fn adapters(&self) -> Vec<&'static dyn ivrgate_adapter::Adapter> {
        let mut all: Vec<_> = crate::adapters::all().to_vec();
        all.extend(self.extra_adapters.iter().copied());
        all
    }

    /// The adapter serving a path's first segment.
    pub fn adapter(&self, name: &str) -> Option<&'static dyn ivrgate_adapter::Adapter> {
        crate::adapters::get(name).or_else(|| {
            self.extra_adapters
                .iter()
                .copied()
                .find(|a| a.name() == name)
        })
    }

    /// The client for a tenant's decision webhooks: its own when it names a `ca_file`.
    pub fn decision_client<'a>(&'a self, tenant: &'a ResolvedTenant) -> &'a DecisionClient {
        tenant
            .http
            .as_ref()
            .map_or(&self.decision_http, |c| &c.decision)
    }

    /// The client for a tenant's event deliveries: its own when it names a `ca_file`.
    pub fn delivery_client<'a>(&'a self, tenant: &'a ResolvedTenant) -> &'a reqwest::Client {
        tenant
            .http
            .as_ref()
            .map_or(&self.delivery_http, |c| &c.delivery)
    }

    pub fn endpoint_disabled(&self, tenant: &str) -> bool {
        self.disabled_endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(tenant)
    }

    pub fn set_disabled_endpoints(&self, tenants: impl IntoIterator<Item = String>) {
        *self
            .disabled_endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = tenants.into_iter().collect();
    }

    pub(crate) fn call_key(tenant: &str, vendor: &str, vendor_call_id: &str) -> CallKey {
        CallKey {
            tenant: tenant.to_owned(),
            vendor: vendor.to_owned(),
            vendor_call_id: vendor_call_id.to_owned(),
        }
    }

    pub(crate) async fn load(&self, key: &CallKey) -> Option<CallRow> {
        match self.store.load_call(key.clone()).await {
            Ok(row) => row,
            Err(e) => {
                tracing::error!(tenant = %key.tenant, error = %e, "cannot read call state");
                None
            }
        }
    }

    /// How many decisions are being decided now.
    pub fn decisions_in_flight(&self) -> usize {
        self.decisions_open.load(Ordering::Relaxed)
    }

    /// Logs and counts each vendor field an adapter could not decode in the request's charset
    /// (`data.undecodable`, field name to base64). The field's name is logged, never its value.
    pub(crate) fn note_undecodable(
        &self,
        tenant: &str,
        vendor: &str,
        what: &str,
        data: &Map<String, Value>,
    ) {
        let Some(Value::Object(fields)) = data.get("undecodable") else {
            return;
        };
        for name in fields.keys() {
            let field: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
            tracing::warn!(
                tenant, vendor, r#type = what, field = %field,
                "vendor field not valid in the request's charset; its bytes are delivered as base64 under data.undecodable"
            );
            self.metrics
                .undecodable_fields
                .get_or_create(&AdapterLabels {
                    adapter: vendor.to_owned(),
                })
                .inc();
        }
    }

    async fn record_inner(&self, mut ev: EventSubmission) -> Result<Recorded, RecordError> {
        let count = |outcome: &str| {
            self.metrics
                .events_recorded
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_owned(),
                })
                .inc();
        };
        let runtime = self.runtime.load_full();
        let Some(tenant) = runtime.config.tenant(&ev.tenant) else {
            return Err(RecordError::Unavailable("unknown tenant".into()));
        };
        let storage = &runtime.config.raw.storage;
        let ttl_ms = storage.call_ttl_s as i64 * 1000;
        let dedup = ev.dedup.as_ref().map(|d| {
            let mut hash = Sha256::new();
            hash.update(tenant.id.as_bytes());
            hash.update([0]);
            hash.update(&d.key);
            DedupWrite {
                key_hash: hash.finalize().into(),
                response: d.response.clone(),
                expires_at_ms: 0,
            }
        });
        let key = ev
            .call
            .vendor_call_id
            .as_deref()
            .map(|id| Self::call_key(&tenant.id, ev.vendor, id));
        let event_id = ids::event_id();
        // The vendor's fields (the bulk of a large event) move into the payload; a retry after
        // a version conflict takes them back from the payload it sent, copying them only if
        // the store still holds that payload.
        let mut vendor_fields = std::mem::take(&mut ev.vendor_fields);
        let mut sent: Option<Arc<EventPayload>> = None;
        note_core_keys(&ev.data, &EVENT_KEYS, ev.event_type);
        for _ in 0..8 {
            if let Some(previous) = sent.take() {
                vendor_fields = match Arc::try_unwrap(previous) {
                    Ok(mut payload) => payload.take_vendor_fields(),
                    Err(shared) => shared.vendor_fields(),
                };
            }
            let now = self.clock.now();
            let now_ms = crate::clock::to_ms(now);
            let row = match &key {
                Some(key) => self.load(key).await,
                None => None,
            };
            let call = key.as_ref().map(|key| {
                // Without a row, a decision of this instance may have given the call its id
                // already (its write not committed yet, or its customer still asked: the
                // caller hung up meanwhile); the event takes that id and the decision's
                // attached data, so the call has one id.
                let (call_id, attached) = match &row {
                    Some(r) => (r.call_id.clone(), r.attached.clone()),
                    None => self
                        .pending_call(key)
                        .unwrap_or_else(|| (ids::call_id(), Map::new())),
                };
                let live = row.as_ref().and_then(|r| r.state.clone());
                let (status, state, expires) = match (ev.effect, live) {
                    (CallEffect::End, _) => ("ended", None, None),
                    (CallEffect::Continue, Some(mut state)) => {
                        if let Some(obj) = state.as_object_mut() {
                            obj.insert("last_event_at".into(), json!(rfc3339(now)));
                        }
                        ("active", Some(state), Some(now_ms + ttl_ms))
                    }
                    (CallEffect::Continue, None) if row.is_some() => {
                        // News about a call that already ended: it stays ended.
                        let status = row.as_ref().map(|r| r.status.as_str()).unwrap_or("ended");
                        (
                            if status == "expired" {
                                "expired"
                            } else {
                                "ended"
                            },
                            None,
                            None,
                        )
                    }
                    (CallEffect::Continue, None) => (
                        "active",
                        Some(json!({"started_at": rfc3339(now), "last_event_at": rfc3339(now)})),
                        Some(now_ms + ttl_ms),
                    ),
                };
                CallWrite {
                    key: key.clone(),
                    call_id,
                    expected_version: row.as_ref().map(|r| r.version),
                    status,
                    attached,
                    state: state.map(Into::into),
                    expires_at_ms: expires,
                }
            });
            let call_id = call.as_ref().map(|c| c.call_id.clone());
            let attached = call
                .as_ref()
                .map(|c| c.attached.clone())
                .unwrap_or_default();
            let payload = Arc::new(Envelope {
                kind: ev.event_type.to_owned(),
                timestamp: ev.occurred_at.unwrap_or(now),
                data: EventData::Reported(Reported {
                    event_id: event_id.clone(),
                    tenant: tenant.id.clone(),
                    vendor: ev.vendor.to_owned(),
                    call_id: call_id.clone(),
                    correlation: ev.call.correlation.clone(),
                    attached,
                    fields: ev.data.clone(),
                    received_at: now,
                    vendor_fields: std::mem::take(&mut vendor_fields),
                }),
            });
            sent = Some(payload.clone());
            let uow = UnitOfWork {
                tenant: tenant.id.clone(),
                now_ms,
                call,
                events: vec![NewEvent {
                    event_id: event_id.clone(),
                    event_type: ev.event_type.to_owned(),
                    payload,
                }],
                timers: Vec::new(),
                dedup: dedup.clone().map(|mut d| {
                    d.expires_at_ms = now_ms + storage.dedup_window_s as i64 * 1000;
                    d
                }),
                outbox_quota: Some(tenant.outbox_quota),
                ..UnitOfWork::default()
            };
            match self.store.commit(uow).await {
                Ok(CommitOutcome::Committed { seqs }) => {
                    count("new");
                    self.note_undecodable(&tenant.id, ev.vendor, ev.event_type, &ev.data);
                    return Ok(Recorded::New {
                        event_id,
                        call_id,
                        seq: seqs.first().copied().flatten().map(|s| s as u64),
                    });
                }
                Ok(CommitOutcome::Duplicate(response)) => {
                    count("duplicate");
                    tracing::info!(tenant = %tenant.id, event_type = ev.event_type, "legacy resend answered with the original response");
                    return Ok(Recorded::Duplicate(response));
                }
                Ok(CommitOutcome::QuotaExceeded) => {
                    count("quota_exceeded");
                    tracing::warn!(tenant = %tenant.id, quota = tenant.outbox_quota, "event refused: tenant outbox quota exceeded");
                    return Err(RecordError::QuotaExceeded);
                }
                Ok(CommitOutcome::StorageFull) => {
                    count("storage_full");
                    tracing::error!(tenant = %tenant.id, event_type = ev.event_type, "event refused: storage nearly full");
                    return Err(RecordError::StorageFull);
                }
                Ok(CommitOutcome::Conflict) => continue,
                Ok(CommitOutcome::AliasTaken { .. }) => {
                    count("error");
                    return Err(RecordError::Unavailable("unexpected alias claim".into()));
                }
                Err(e) => {
                    count("error");
                    tracing::error!(tenant = %tenant.id, error = %e, "event not stored");
                    return Err(RecordError::Unavailable(e.to_string()));
                }
            }
        }
        count("error");
        Err(RecordError::Unavailable(
            "the call kept changing; retry".into(),
        ))
    }
}

/// Reads a response body up to `cap` bytes. Reading it (rather than dropping it) also lets
/// the connection go back to the pool.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<bytes::Bytes, reqwest::Error> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    Ok(body.freeze())
}

impl Gateway for Core {
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision> {
        Box::pin(self.decide_inner(request))
    }

    fn record<'a>(
        &'a self,
        event: EventSubmission,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(self.record_inner(event))
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn settings(&self, tenant: &str, adapter: &str) -> Option<ParsedSettings> {
        self.runtime
            .load()
            .config
            .tenant(tenant)
            .and_then(|t| t.settings.get(adapter).cloned())
    }

    fn load<'a>(&'a self, key: EntityKey) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(self.load_entity(key))
    }

    fn find<'a>(
        &'a self,
        tenant: &'a str,
        namespace: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        Box::pin(self.find_entity(tenant, namespace, value))
    }

    fn list<'a>(
        &'a self,
        tenant: &'a str,
        kind: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entity>, RecordError>> {
        Box::pin(self.list_entities(tenant, kind, limit))
    }

    fn transition<'a>(
        &'a self,
        keys: Vec<EntityKey>,
        f: &'a mut TransitionFn<'a>,
    ) -> BoxFuture<'a, Result<Transitioned, RecordError>> {
        Box::pin(self.transition_entities(keys, f))
    }

    fn wait_change<'a>(
        &'a self,
        key: EntityKey,
        seen: Option<i64>,
        timeout: Duration,
    ) -> BoxFuture<'a, Waited> {
        Box::pin(self.wait_entity(key, seen, timeout))
    }

    fn held_epoch(&self, tenant: &str, adapter: &str, name: &str) -> Option<u64> {
        self.connectors.held_epoch(tenant, adapter, name)
    }

    fn platform_api(&self) -> Option<&dyn ivrgate_adapter::PlatformClient> {
        Some(&self.platform_api)
    }

    fn lease<'a>(
        &'a self,
        tenant: &'a str,
        adapter: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ivrgate_adapter::LeaseInfo>, RecordError>> {
        Box::pin(async move {
            let key = crate::store::LeaseKey {
                tenant: tenant.to_owned(),
                adapter: adapter.to_owned(),
                name: name.to_owned(),
            };
            let row = self
                .store
                .read_lease(key)
                .await
                .map_err(|e| RecordError::Unavailable(e.to_string()))?;
            // A released lease has no holder: it shows as held by nobody (`""`).
            Ok(row.map(|row| {
                let holder = row.holder.unwrap_or_default();
                ivrgate_adapter::LeaseInfo {
                    held_here: holder == self.instance,
                    holder,
                    epoch: row.epoch,
                    until_ms: row.until_ms,
                }
            }))
        })
    }
}
