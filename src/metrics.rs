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
    pub kind: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub kind: String,
    pub reason: String,
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

/// Registers `metric` under `name` with its help text and hands it back for counting.
fn add<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ivrgate");
        Metrics {
            requests: add(
                &mut registry,
                "requests",
                "Legacy-platform requests by adapter, method and outcome",
                Default::default(),
            ),
            decision_seconds: add(
                &mut registry,
                "decision_duration_seconds",
                "Time from a decision request to its answer, by kind and answer source",
                Family::<DecisionLabels, Histogram>::new_with_constructor(|| {
                    Histogram::new([
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ])
                }),
            ),
            fallbacks: add(
                &mut registry,
                "decision_fallbacks",
                "Decisions answered with the tenant's fallback, by kind and reason",
                Default::default(),
            ),
            outbox_pending: add(
                &mut registry,
                "outbox_pending",
                "Events stored and not yet delivered",
                Default::default(),
            ),
            outbox_dead: add(
                &mut registry,
                "outbox_dead",
                "Events whose retry schedule is exhausted",
                Default::default(),
            ),
            deliveries: add(
                &mut registry,
                "deliveries",
                "Event delivery attempts by outcome",
                Default::default(),
            ),
            breaker_open: add(
                &mut registry,
                "breaker_open",
                "1 while a tenant endpoint's circuit breaker is open or half-open",
                Default::default(),
            ),
            events_recorded: add(
                &mut registry,
                "events_recorded",
                "Events submitted by adapters, by outcome (new, duplicate, refused)",
                Default::default(),
            ),
            entity_transitions: add(
                &mut registry,
                "entity_transitions",
                "Adapter state transitions by outcome (committed, conflict, alias_taken, refused)",
                Default::default(),
            ),
            timers_run: add(
                &mut registry,
                "timers_run",
                "Adapter timers that fell due, by outcome (ok, failed, unknown_adapter, unreadable)",
                Default::default(),
            ),
            calls_expired: add(
                &mut registry,
                "calls_expired",
                "Calls that ended because nothing was heard for the call TTL",
                Default::default(),
            ),
            undecodable_fields: add(
                &mut registry,
                "undecodable_fields",
                "Vendor field values whose bytes the request's charset cannot read, delivered as \
                 base64 under data.undecodable",
                Default::default(),
            ),
            body_bytes_in_flight: add(
                &mut registry,
                "body_bytes_in_flight",
                "Bytes of legacy request bodies reserved in the memory budget right now",
                Default::default(),
            ),
            cluster_instances: add(
                &mut registry,
                "cluster_instances",
                "Live instances on this store as this one last read them; each takes that share \
                 of the tenants' rates and per-endpoint concurrency",
                Default::default(),
            ),
            connector_up: add(
                &mut registry,
                "connector_up",
                "1 while the connector's platform session is up on this instance",
                Default::default(),
            ),
            connector_held: add(
                &mut registry,
                "connector_held",
                "1 while this instance holds the connector's lease and runs it",
                Default::default(),
            ),
            connector_epoch: add(
                &mut registry,
                "connector_epoch",
                "The lease epoch the connector runs with here (0 when not held)",
                Default::default(),
            ),
            connector_restarts: add(
                &mut registry,
                "connector_restarts",
                "Connector runs that failed and were restarted after a backoff",
                Default::default(),
            ),
            connector_sessions_opened: add(
                &mut registry,
                "connector_sessions_opened",
                "Platform sessions the connector opened since it started here",
                Default::default(),
            ),
            connector_heartbeat_age: add(
                &mut registry,
                "connector_heartbeat_age_seconds",
                "Seconds since the platform last proved the connector's session alive",
                Default::default(),
            ),
            tls_handshake_failures: add(
                &mut registry,
                "tls_handshake_failures",
                "TLS handshakes on the listener that failed, by reason (protocol_version, \
                 no_common_cipher, no_client_certificate, bad_client_certificate, plain_http, \
                 timeout, closed, ...)",
                Default::default(),
            ),
            registry,
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
