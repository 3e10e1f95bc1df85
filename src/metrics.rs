//! Prometheus metrics. Each notable event is counted in one place, next to its log line.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub adapter: String,
    pub method: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    // Static names, so a decision counts without allocating its labels.
    pub kind: &'static str,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabels {
    pub adapter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub tenant: String,
    pub adapter: String,
    pub connector: String,
}

pub type SecondsGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub decision_seconds: Family<DecisionLabels, Histogram>,
    pub fallbacks: Family<ReasonLabels, Counter>,
    pub outbox_pending: Family<TenantLabels, Gauge>,
    pub outbox_dead: Family<TenantLabels, Gauge>,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub breaker_open: Family<TenantLabels, Gauge>,
    pub events_recorded: Family<OutcomeLabels, Counter>,
    pub entity_transitions: Family<OutcomeLabels, Counter>,
    pub timers_run: Family<OutcomeLabels, Counter>,
    pub calls_expired: Counter,
    pub undecodable_fields: Family<AdapterLabels, Counter>,
    pub body_bytes_in_flight: Gauge,
    pub cluster_instances: Gauge,
    pub connector_up: Family<ConnectorLabels, Gauge>,
    pub connector_held: Family<ConnectorLabels, Gauge>,
    pub connector_epoch: Family<ConnectorLabels, Gauge>,
    pub connector_restarts: Family<ConnectorLabels, Counter>,
    pub connector_sessions_opened: Family<ConnectorLabels, Gauge>,
    pub connector_heartbeat_age: Family<ConnectorLabels, SecondsGauge>,
    pub tls_handshake_failures: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ivrgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Legacy-platform requests by adapter, method and outcome",
            requests.clone(),
        );
        let decision_seconds = Family::<DecisionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "decision_duration_seconds",
            "Time from a decision request to its answer, by kind and answer source",
            decision_seconds.clone(),
        );
        let fallbacks = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "decision_fallbacks",
            "Decisions answered with the tenant's fallback, by kind and reason",
            fallbacks.clone(),
        );
        let outbox_pending = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "outbox_pending",
            "Events stored and not yet delivered",
            outbox_pending.clone(),
        );
        let outbox_dead = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "outbox_dead",
            "Events whose retry schedule is exhausted",
            outbox_dead.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Event delivery attempts by outcome",
            deliveries.clone(),
        );
        let breaker_open = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "breaker_open",
            "1 while a tenant endpoint's circuit breaker is open or half-open",
            breaker_open.clone(),
        );
        let events_recorded = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "events_recorded",
            "Events submitted by adapters, by outcome (new, duplicate, refused)",
            events_recorded.clone(),
        );
        let entity_transitions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "entity_transitions",
            "Adapter state transitions by outcome (committed, conflict, alias_taken, refused)",
            entity_transitions.clone(),
        );
        let timers_run = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "timers_run",
            "Adapter timers that fell due, by outcome (ok, failed, unknown_adapter)",
            timers_run.clone(),
        );
        let calls_expired = Counter::default();
        registry.register(
            "calls_expired",
            "Calls that ended because nothing was heard for the call TTL",
            calls_expired.clone(),
        );
        let undecodable_fields = Family::<AdapterLabels, Counter>::default();
        registry.register(
            "undecodable_fields",
            "Vendor field values whose bytes the request's charset cannot read, delivered as base64 under data.undecodable",
            undecodable_fields.clone(),
        );
        let body_bytes_in_flight = Gauge::default();
        registry.register(
            "body_bytes_in_flight",
            "Bytes of legacy request bodies reserved in the memory budget right now",
            body_bytes_in_flight.clone(),
        );
        let cluster_instances = Gauge::default();
        registry.register(
            "cluster_instances",
            "Live instances on this store as this one last read them; each takes that share \
             of the tenants' rates and per-endpoint concurrency",
            cluster_instances.clone(),
        );
        let connector_up = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_up",
            "1 while the connector's platform session is up on this instance",
            connector_up.clone(),
        );
        let connector_held = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_held",
            "1 while this instance holds the connector's lease and runs it",
            connector_held.clone(),
        );
        let connector_epoch = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_epoch",
            "The lease epoch the connector runs with here (0 when not held)",
            connector_epoch.clone(),
        );
        let connector_restarts = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "connector_restarts",
            "Connector runs that failed and were restarted after a backoff",
            connector_restarts.clone(),
        );
        let connector_sessions_opened = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_sessions_opened",
            "Platform sessions the connector opened since it started here",
            connector_sessions_opened.clone(),
        );
        let connector_heartbeat_age = Family::<ConnectorLabels, SecondsGauge>::default();
        registry.register(
            "connector_heartbeat_age_seconds",
            "Seconds since the platform last proved the connector's session alive",
            connector_heartbeat_age.clone(),
        );
        let tls_handshake_failures = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the listener that failed, by reason (protocol_version, \
             no_common_cipher, no_client_certificate, bad_client_certificate, plain_http, \
             timeout, closed, ...)",
            tls_handshake_failures.clone(),
        );
        Metrics {
            registry,
            requests,
            decision_seconds,
            fallbacks,
            outbox_pending,
            outbox_dead,
            deliveries,
            breaker_open,
            events_recorded,
            entity_transitions,
            timers_run,
            calls_expired,
            undecodable_fields,
            body_bytes_in_flight,
            cluster_instances,
            connector_up,
            connector_held,
            connector_epoch,
            connector_restarts,
            connector_sessions_opened,
            connector_heartbeat_age,
            tls_handshake_failures,
        }
    }

    pub fn delivery(&self, outcome: &str) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
