//! The gateway core: what adapters call through [`ivrgate_adapter::Gateway`]. Decisions ask the
//! customer's webhook under a deadline and always come back with something the platform can
//! carry out; events become one unit of work each, committed (fsynced) before the adapter
//! acknowledges.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use ivrgate_adapter::epoch::rfc3339;
use ivrgate_adapter::{
    Answer, AnswerSource, BoxFuture, CallEffect, Decision, DecisionPoint, DecisionRequest, Entity,
    EntityKey, EventSubmission, FallbackReason, Gateway, ParsedSettings, RecordError, Recorded,
    TransitionFn, Transitioned, Waited,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::breaker::Breakers;
use crate::clock::SharedClock;
use crate::cluster::{BreakerNews, Membership};
use crate::config::{ResolvedConfig, ResolvedTenant};
use crate::metrics::{AdapterLabels, DecisionLabels, Metrics, OutcomeLabels, ReasonLabels};
use crate::store::{
    CallKey, CallRow, CallWrite, CommitOutcome, DedupWrite, NewEvent, Store, UnitOfWork,
};
use crate::{ids, signing};

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
    pub decision: reqwest::Client,
    pub delivery: reqwest::Client,
}

impl WebhookClients {
    /// Builds both clients, trusting `extra_roots` besides the public roots.
    pub fn new(extra_roots: &[reqwest::Certificate]) -> reqwest::Result<WebhookClients> {
        // Redirects are not followed: only a 2xx from the configured URL counts, and a
        // signed POST must not be replayed elsewhere (or turned into a GET). Timeouts are
        // set per request (the decision's deadline, `delivery.timeout_ms`).
        let mut decision = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2));
        let mut delivery = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(5));
        for root in extra_roots {
            decision = decision.add_root_certificate(root.clone());
            delivery = delivery.add_root_certificate(root.clone());
        }
        Ok(WebhookClients {
            decision: decision.build()?,
            delivery: delivery.build()?,
        })
    }
}

/// Which try of a decision webhook this is: the decision URL (1), then the fallback URL (2).
#[derive(Clone, Copy)]
struct Attempt<'a> {
    decision_id: &'a str,
    call: &'a str,
    number: u8,
    of: u8,
}

pub struct Core {
    pub runtime: ArcSwap<Runtime>,
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub instance: String,
    pub points: Vec<&'static DecisionPoint>,
    /// Decision webhooks: their own connection pool, so they never wait behind deliveries.
    pub decision_http: reqwest::Client,
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
    pending_decisions: Arc<std::sync::Mutex<HashMap<CallKey, PendingDecision>>>,
    /// Set when the gateway stops: long-polls answer at once.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Set when the shutdown grace has run out: every decision still waiting for the
    /// customer answers with its fallback at once (a caller never hears dead air).
    pub grace_over: tokio::sync::watch::Sender<bool>,
    /// Decisions being decided now (for the shutdown log line).
    decisions_open: std::sync::atomic::AtomicUsize,
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
}

#[derive(Clone)]
struct PendingDecision {
    decision_id: String,
    call_id: String,
    last: Value,
    attached: Map<String, Value>,
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
    pub fn decision_client<'a>(&'a self, tenant: &'a ResolvedTenant) -> &'a reqwest::Client {
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

    fn call_key(tenant: &str, vendor: &str, vendor_call_id: &str) -> CallKey {
        CallKey {
            tenant: tenant.to_owned(),
            vendor: vendor.to_owned(),
            vendor_call_id: vendor_call_id.to_owned(),
        }
    }

    async fn load(&self, key: &CallKey) -> Option<CallRow> {
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

    /// Asks the customer, then the fallback URL, unless the shutdown grace runs out first:
    /// then the decision gives up on both at once (`FallbackReason::Shutdown`).
    async fn ask_customer(
        &self,
        tenant: &ResolvedTenant,
        decision_id: &str,
        call: &str,
        body: &[u8],
        deadline: Instant,
        point: &DecisionPoint,
    ) -> Result<(Answer, AnswerSource), FallbackReason> {
        let of = if tenant.fallback_target.is_some() {
            2
        } else {
            1
        };
        let asked = async {
            let first = Attempt {
                decision_id,
                call,
                number: 1,
                of,
            };
            match self
                .ask(
                    tenant,
                    &tenant.decision_target,
                    &first,
                    body,
                    deadline,
                    point,
                )
                .await
            {
                Ok(answer) => Ok((answer, AnswerSource::Customer)),
                Err(reason) => match &tenant.fallback_target {
                    Some(url) if Instant::now() < deadline => {
                        let second = Attempt { number: 2, ..first };
                        self.ask(tenant, url, &second, body, deadline, point)
                            .await
                            .map(|answer| (answer, AnswerSource::FallbackUrl))
                            .map_err(|_| reason)
                    }
                    _ => Err(reason),
                },
            }
        };
        let mut grace_over = self.grace_over.subscribe();
        tokio::select! {
            biased;
            _ = grace_over.wait_for(|over| *over) => Err(FallbackReason::Shutdown),
            result = asked => result,
        }
    }

    async fn decide_inner(&self, req: DecisionRequest) -> Decision {
        self.decisions_open.fetch_add(1, Ordering::Relaxed);
        let _open = Defer(Some(|| {
            self.decisions_open.fetch_sub(1, Ordering::Relaxed);
        }));
        let started = Instant::now();
        let runtime = self.runtime.load_full();
        let point = req.point;
        let Some(tenant) = runtime.config.tenant(&req.tenant) else {
            // The server only routes configured tenants here; a reload may have removed it.
            return Decision {
                decision_id: ids::decision_id(),
                call_id: None,
                answer: (point.default_fallback)(),
                source: AnswerSource::Fallback(FallbackReason::Invalid),
                attached: Map::new(),
            };
        };
        let settings = tenant.decisions.get(point.kind);
        let deadline_ms = settings
            .map(|s| s.deadline_ms)
            .unwrap_or(tenant_default_deadline(tenant))
            .min(req.deadline_ms.unwrap_or(u64::MAX));
        let fallback = settings
            .map(|s| s.fallback.clone())
            .unwrap_or_else(point.default_fallback);
        let deadline = started + Duration::from_millis(deadline_ms);
        let decision_id = ids::decision_id();
        let key = req
            .call
            .vendor_call_id
            .as_deref()
            .map(|id| Self::call_key(&tenant.id, point.vendor, id));
        // The call's state is worth half the time left at most: a slow store, or a pool busy
        // with other reads, must not eat the time the customer's webhook and the fallbacks
        // need. Past it the decision goes on without the state, as after a failed read.
        let row = match &key {
            Some(key) => {
                let budget = deadline.saturating_duration_since(Instant::now()) / 2;
                match tokio::time::timeout(budget, self.load(key)).await {
                    Ok(row) => row,
                    Err(_) => {
                        tracing::error!(
                            tenant = %key.tenant, waited_ms = budget.as_millis() as u64,
                            "cannot read call state within half the decision's deadline; deciding without it"
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let pending = key.as_ref().and_then(|k| {
            self.pending_decisions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(k)
                .cloned()
        });
        let call_id = key.as_ref().map(|_| match (&pending, &row) {
            (Some(p), _) => p.call_id.clone(),
            (None, Some(r)) => r.call_id.clone(),
            (None, None) => ids::call_id(),
        });
        let mut attached = match &pending {
            Some(p) => p.attached.clone(),
            None => row.as_ref().map(|r| r.attached.clone()).unwrap_or_default(),
        };
        let previous = match &pending {
            Some(p) => p.last.clone(),
            None => row
                .as_ref()
                .and_then(|r| r.state.as_ref())
                .and_then(|s| s.get("last_decision"))
                .cloned()
                .unwrap_or(Value::Null),
        };
        let now = self.clock.now();
        self.note_undecodable(&tenant.id, point.vendor, point.kind, &req.data);
        let mut data = Map::new();
        data.insert("decision_id".into(), json!(decision_id));
        data.insert("tenant".into(), json!(tenant.id));
        data.insert("vendor".into(), json!(point.vendor));
        data.insert("kind".into(), json!(point.kind));
        data.insert("call_id".into(), json!(call_id));
        data.insert("deadline_ms".into(), json!(deadline_ms));
        data.insert(
            "correlation".into(),
            Value::Object(req.call.correlation.clone()),
        );
        data.insert("attached".into(), Value::Object(attached.clone()));
        data.insert("previous_decision".into(), previous);
        for (k, v) in &req.data {
            data.insert(k.clone(), v.clone());
        }
        data.insert(
            "vendor_fields".into(),
            Value::Object(req.vendor_fields.clone()),
        );
        let body = json!({
            "type": format!("decision.{}", point.kind),
            "timestamp": rfc3339(now),
            "data": data,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();

        let limited = runtime
            .decision_limits
            .get(&tenant.id)
            .is_some_and(|l| l.check().is_err());
        let (answer, source) = if limited {
            (
                fallback.clone(),
                AnswerSource::Fallback(FallbackReason::RateLimited),
            )
        } else {
            match self
                .ask_customer(
                    tenant,
                    &decision_id,
                    call_id.as_deref().unwrap_or("-"),
                    &body,
                    deadline,
                    point,
                )
                .await
            {
                Ok(answered) => answered,
                Err(reason) => (fallback.clone(), AnswerSource::Fallback(reason)),
            }
        };
        for (k, v) in point.attached_by(&answer) {
            attached.insert(k, v);
        }
        let (source_label, reason) = match &source {
            AnswerSource::Customer => ("customer", None),
            AnswerSource::FallbackUrl => ("fallback_url", None),
            AnswerSource::Fallback(reason) => ("fallback", Some(reason.as_str())),
        };
        let elapsed = started.elapsed();
        self.metrics
            .decision_seconds
            .get_or_create(&DecisionLabels {
                kind: point.kind.to_owned(),
                source: source_label.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = reason {
            self.metrics
                .fallbacks
                .get_or_create(&ReasonLabels {
                    kind: point.kind.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
            tracing::warn!(
                tenant = %tenant.id, kind = point.kind, decision_id = %decision_id,
                call_id = call_id.as_deref().unwrap_or("-"),
                vendor_call_id = req.call.vendor_call_id.as_deref().unwrap_or("-"), reason,
                elapsed_ms = elapsed.as_millis() as u64, answer = answer.label(),
                "decision answered with the fallback"
            );
        } else {
            tracing::debug!(
                tenant = %tenant.id, kind = point.kind, decision_id = %decision_id,
                source = source_label, elapsed_ms = elapsed.as_millis() as u64,
                answer = answer.label(), "decision answered"
            );
        }
        if let (Some(key), Some(call_id)) = (key, call_id.clone()) {
            let last = json!({
                "decision_id": decision_id,
                "kind": point.kind,
                "at": rfc3339(now),
                "answer": answer.label(),
                "source": source_label,
                "fallback_reason": reason,
            });
            self.pending_decisions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    key.clone(),
                    PendingDecision {
                        decision_id: decision_id.clone(),
                        call_id: call_id.clone(),
                        last: last.clone(),
                        attached: attached.clone(),
                    },
                );
            self.commit_decision(key, call_id, row, attached.clone(), last, &runtime);
        }
        Decision {
            decision_id,
            call_id,
            answer,
            source,
            attached,
        }
    }

    /// Records a decision on its call. The legacy side is answered without waiting for this
    /// commit (a decision is not an acknowledgement of a stored event); the write is queued
    /// now, so a later request on the same call reads it.
    fn commit_decision(
        self: &Core,
        key: CallKey,
        call_id: String,
        row: Option<CallRow>,
        attached: Map<String, Value>,
        last: Value,
        runtime: &Runtime,
    ) {
        let ttl_ms = runtime.config.raw.storage.call_ttl_s as i64 * 1000;
        let adapter_expiry = self
            .adapter(&key.vendor)
            .is_some_and(|a| a.keeps_call_state());
        let retry_key = key.clone();
        let overlay_key = key.clone();
        let overlay = self.pending_decisions.clone();
        let decision_id = last
            .get("decision_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let store = self.store.clone();
        let clock = self.clock.clone();
        let build = move |row: Option<&CallRow>, now_ms: i64| -> UnitOfWork {
            let mut state = row
                .and_then(|r| r.state.clone())
                .unwrap_or_else(|| json!({"started_at": rfc3339(crate::clock::from_ms(now_ms))}));
            if let Some(obj) = state.as_object_mut() {
                let n = obj.get("decisions").and_then(Value::as_u64).unwrap_or(0);
                obj.insert("decisions".into(), json!(n + 1));
                obj.insert("last_decision".into(), last.clone());
            }
            let mut merged = row.map(|r| r.attached.clone()).unwrap_or_default();
            for (k, v) in &attached {
                merged.insert(k.clone(), v.clone());
            }
            UnitOfWork {
                tenant: key.tenant.clone(),
                now_ms,
                call: Some(CallWrite {
                    key: key.clone(),
                    call_id: row
                        .map(|r| r.call_id.clone())
                        .unwrap_or_else(|| call_id.clone()),
                    expected_version: row.map(|r| r.version),
                    status: "active",
                    attached: merged,
                    state: Some(state.into()),
                    // An adapter that keeps its calls in entities sets their expiry (a PTK
                    // interaction waits days for its appointment, an OpenScape call has its
                    // own limit); a decision leaves it alone.
                    expires_at_ms: match row {
                        Some(r) if r.state.is_some() && adapter_expiry => r.expires_at_ms,
                        _ => Some(now_ms + ttl_ms),
                    },
                }),
                ..UnitOfWork::default()
            }
        };
        let first = build(row.as_ref(), clock.now_ms());
        let pending = store.commit_queued(first);
        tokio::spawn(async move {
            // However the write ends, this decision is no longer pending.
            let _clear = Defer(Some(move || {
                let mut map = overlay.lock().unwrap_or_else(|p| p.into_inner());
                if map
                    .get(&overlay_key)
                    .is_some_and(|p| p.decision_id == decision_id)
                {
                    map.remove(&overlay_key);
                }
            }));
            let mut outcome = pending.await;
            for _ in 0..5 {
                match outcome {
                    Ok(CommitOutcome::Conflict) => {
                        let row = store.load_call(retry_key.clone()).await.ok().flatten();
                        outcome = store.commit(build(row.as_ref(), clock.now_ms())).await;
                    }
                    Ok(_) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record decision on its call");
                        return;
                    }
                }
            }
        });
    }

    /// One signed POST of a decision to `target` within `deadline`. A failure is logged (WARN
    /// `decision webhook failed`) with the endpoint (redacted), what went wrong, the
    /// decision's kind, id and call, and the attempt as "n of N" (the decision URL, then the
    /// fallback URL).
    async fn ask(
        &self,
        tenant: &ResolvedTenant,
        target: &reqwest::Url,
        attempt: &Attempt<'_>,
        body: &[u8],
        deadline: Instant,
        point: &DecisionPoint,
    ) -> Result<Answer, FallbackReason> {
        let url = target.as_str();
        let decision_id = attempt.decision_id;
        let failed = |reason: FallbackReason, error: &str| {
            tracing::warn!(
                tenant = %tenant.id, endpoint = %crate::redact::url(url),
                event_type = %format!("decision.{}", point.kind), decision_id = %decision_id,
                call = %attempt.call, attempt = %format!("{} of {}", attempt.number, attempt.of),
                reason = %reason.as_str(), error = %error, "decision webhook failed"
            );
            reason
        };
        if !self.decision_breakers.try_acquire(url) {
            return Err(failed(
                FallbackReason::CircuitOpen,
                "circuit breaker open after repeated failures; not asked",
            ));
        }
        let timestamp = crate::clock::to_ms(self.clock.now()) / 1000;
        let signature = signing::signature_header(&tenant.secrets, decision_id, timestamp, body);
        let request = self
            .decision_client(tenant)
            .post(target.clone())
            .header("content-type", "application/json")
            .header("webhook-id", decision_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec());
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let bytes = read_capped(response, MAX_ANSWER_BYTES).await?;
            Ok::<_, reqwest::Error>((status, bytes))
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout_at(deadline.into(), exchange).await;
        let (status, bytes) = match result {
            Err(_) => {
                self.decision_breakers.failure(url);
                let why = format!(
                    "timeout: no answer within the decision's deadline ({} ms left)",
                    left.as_millis()
                );
                return Err(failed(FallbackReason::Timeout, &why));
            }
            Ok(Err(e)) => {
                self.decision_breakers.failure(url);
                let reason = if e.is_timeout() {
                    FallbackReason::Timeout
                } else {
                    FallbackReason::Connect
                };
                // Never the URL: the endpoint is logged redacted, apart.
                return Err(failed(reason, &crate::failure::describe(&e, left)));
            }
            Ok(Ok(pair)) => pair,
        };
        if !status.is_success() {
            if status.is_server_error() {
                self.decision_breakers.failure(url);
            }
            return Err(failed(
                FallbackReason::Status,
                &crate::failure::status(status),
            ));
        }
        self.decision_breakers.success(url);
        // Customers porting a legacy server may answer with the vendor's own (sometimes
        // not quite JSON) examples; the lenient reader takes those too.
        let limits = ivrgate_wire::Limits::default();
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| "answer is not UTF-8".to_owned())
            .and_then(|text| {
                ivrgate_wire::json::parse_lenient(text, &limits)
                    .map_err(|e| format!("not JSON: {e}"))
            })
            .and_then(|v| Answer::from_json(&v))
            .and_then(|a| (point.validate)(&a).map(|()| a));
        parsed.map_err(|why| failed(FallbackReason::Invalid, &format!("invalid answer: {why}")))
    }

    /// Logs and counts each vendor field an adapter could not decode in the request's charset
    /// (`data.undecodable`, field name to base64). The field's name is logged, never its value.
    fn note_undecodable(&self, tenant: &str, vendor: &str, what: &str, data: &Map<String, Value>) {
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
        let mut vendor_fields = Value::Object(std::mem::take(&mut ev.vendor_fields));
        let mut sent: Option<Arc<Value>> = None;
        for _ in 0..8 {
            if let Some(previous) = sent.take() {
                vendor_fields = match Arc::try_unwrap(previous) {
                    Ok(mut payload) => payload
                        .get_mut("data")
                        .and_then(|d| d.get_mut("vendor_fields"))
                        .map(Value::take)
                        .unwrap_or_default(),
                    Err(shared) => shared
                        .get("data")
                        .and_then(|d| d.get("vendor_fields"))
                        .cloned()
                        .unwrap_or_default(),
                };
            }
            let now = self.clock.now();
            let now_ms = crate::clock::to_ms(now);
            let row = match &key {
                Some(key) => self.load(key).await,
                None => None,
            };
            let call = key.as_ref().map(|key| {
                let call_id = row
                    .as_ref()
                    .map(|r| r.call_id.clone())
                    .unwrap_or_else(ids::call_id);
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
                    attached: row.as_ref().map(|r| r.attached.clone()).unwrap_or_default(),
                    state: state.map(Into::into),
                    expires_at_ms: expires,
                }
            });
            let call_id = call.as_ref().map(|c| c.call_id.clone());
            let attached = call
                .as_ref()
                .map(|c| c.attached.clone())
                .unwrap_or_default();
            let mut data = Map::new();
            data.insert("event_id".into(), json!(event_id));
            data.insert("tenant".into(), json!(tenant.id));
            data.insert("vendor".into(), json!(ev.vendor));
            data.insert("call_id".into(), json!(call_id));
            data.insert(
                "correlation".into(),
                Value::Object(ev.call.correlation.clone()),
            );
            data.insert("attached".into(), Value::Object(attached));
            for (k, v) in &ev.data {
                data.insert(k.clone(), v.clone());
            }
            data.insert("received_at".into(), json!(rfc3339(now)));
            data.insert("vendor_fields".into(), std::mem::take(&mut vendor_fields));
            // Built by moving `data` in: `json!` would serialize a copy of it (the vendor
            // fields included) and only then drop the original.
            let mut payload = Map::new();
            payload.insert("type".into(), Value::String(ev.event_type.to_owned()));
            payload.insert(
                "timestamp".into(),
                Value::String(rfc3339(ev.occurred_at.unwrap_or(now))),
            );
            payload.insert("data".into(), Value::Object(data));
            let payload = Arc::new(Value::Object(payload));
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

/// The largest decision answer read; the rest of a larger one is ignored, so the answer is
/// invalid (truncated JSON) and the fallback answers.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

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

/// Runs a closure when dropped.
struct Defer<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Defer<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn tenant_default_deadline(tenant: &ResolvedTenant) -> u64 {
    tenant
        .decisions
        .values()
        .map(|d| d.deadline_ms)
        .min()
        .unwrap_or(3_000)
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
