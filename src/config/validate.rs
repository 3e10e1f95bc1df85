//! [`Config::validate`]: the rules that span fields, one concern per function: the gateway's
//! own tables (limits, store, listener TLS, connectors), then each tenant (id and URLs,
//! inbound credentials, signing secrets, decision points, adapter sections, webhook clients,
//! command token). Every problem is collected, one per line, before any is reported; a clean
//! run yields the [`ResolvedConfig`] the gateway runs on.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use ivrgate_adapter::{Adapter, Answer, DecisionPoint};
use rustls::pki_types::CertificateDer;

use super::tenants::TENANT_KEYS;
use super::{
    Config, ConfigError, ResolvedConfig, ResolvedDecision, ResolvedTenant, Result, Secret,
    TenantConfig,
};
use crate::decision_client::Target;

/// The problems found so far, one line each.
type Problems = Vec<String>;

impl Config {
    /// Rules that span fields, and each adapter's own: its decision points' deadlines and
    /// fallbacks, its settings section. `adapters` are the ones the gateway serves
    /// (`crate::adapters::all()`, and any a test adds). All problems are reported at once,
    /// one per line.
    pub fn validate(&self, adapters: &[&'static dyn Adapter]) -> Result<ResolvedConfig> {
        self.validate_on(adapters, self.listen)
    }

    /// [`Config::validate`] for a gateway whose listener is bound to `bound`: every rule that
    /// depends on the listener (inbound credentials off loopback, the admin and command API
    /// rules) uses it, and so does the resolved configuration's `listen`.
    pub fn validate_on(
        &self,
        adapters: &[&'static dyn Adapter],
        bound: SocketAddr,
    ) -> Result<ResolvedConfig> {
        let mut problems = Problems::new();
        self.check_limits(&mut problems);
        let postgres = match crate::store::postgres::PgSettings::from_config(&self.storage) {
            Ok(settings) => settings,
            Err(why) => {
                problems.push(why);
                None
            }
        };
        // The files are read now (and on every reload), so a certificate that cannot be
        // used is a configuration error before any port is bound, and refuses a reload.
        let tls = match self.server.tls.as_ref().map(crate::tls::server_config) {
            Some(Ok(tls)) => Some(tls),
            Some(Err(why)) => {
                problems.push(why);
                None
            }
            None => None,
        };
        self.check_connectors(&mut problems);
        if self.admin.token.is_none() && !bound.ip().is_loopback() {
            tracing::debug!("admin API disabled: no admin.token and not a loopback listener");
        }
        let points = crate::adapters::decision_points(adapters);
        let mut ids = HashSet::new();
        let mut tenants = Vec::new();
        for tenant in &self.tenants {
            check_tenant_id(&tenant.id, &mut problems);
            if !ids.insert(tenant.id.as_str()) {
                problems.push(format!("tenant id {:?} is used twice", tenant.id));
            }
            let context = TenantContext {
                adapters,
                points: &points,
                bound,
            };
            if let Some(resolved) = resolve_tenant(tenant, &context, &mut problems) {
                tenants.push(resolved);
            }
        }
        let admin_token = token(
            self.admin.token.as_ref(),
            "admin.token",
            &Length::AtLeast16,
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems.join("\n")));
        }
        let mut raw = self.clone();
        raw.listen = bound;
        Ok(ResolvedConfig {
            raw,
            tenants,
            admin_token,
            postgres,
            tls,
        })
    }

    /// The gateway's own settings that must be present and in range.
    fn check_limits(&self, problems: &mut Problems) {
        if self.tenants.is_empty() {
            problems.push("no [[tenants]] configured".to_owned());
        }
        if self.delivery.retry_schedule_s.is_empty() {
            problems.push("delivery.retry_schedule_s must list at least one delay".to_owned());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            problems.push(format!(
                "logging.level {:?} is not a tracing filter (such as \"info\" or \"ivrgate=debug,info\"): {e}",
                self.logging.level
            ));
        }
        if self.delivery.jitter_percent > 100 {
            problems.push("delivery.jitter_percent must be between 0 and 100".to_owned());
        }
        for (name, value) in [
            ("delivery.workers", self.delivery.workers as u64),
            (
                "delivery.per_endpoint_concurrency",
                self.delivery.per_endpoint_concurrency as u64,
            ),
            ("delivery.timeout_ms", self.delivery.timeout_ms),
            (
                "storage.group_commit_max",
                self.storage.group_commit_max as u64,
            ),
            ("storage.call_ttl_s", self.storage.call_ttl_s),
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        if let Some(budget) = self.server.max_bodies_in_flight_bytes {
            if budget < self.server.max_body_bytes {
                problems.push(format!(
                    "server.max_bodies_in_flight_bytes ({budget}) must be at least \
                     server.max_body_bytes ({}), or no maximum-size body is ever read",
                    self.server.max_body_bytes
                ));
            }
        }
    }

    /// What connectors need: this instance's public URL and sane lease and backoff times.
    fn check_connectors(&self, problems: &mut Problems) {
        if let Some(url) = &self.server.advertise_url {
            if let Err(why) = check_advertise_url(url) {
                problems.push(format!("server.advertise_url {why}"));
            }
        }
        let c = &self.connectors;
        if c.lease_ms < 300 {
            problems.push(format!(
                "connectors.lease_ms ({}) must be at least 300",
                c.lease_ms
            ));
        }
        if c.backoff_min_ms == 0 {
            problems.push("connectors.backoff_min_ms must be greater than 0".to_owned());
        }
        if c.backoff_max_ms < c.backoff_min_ms {
            problems.push(format!(
                "connectors.backoff_max_ms ({}) must be at least connectors.backoff_min_ms ({})",
                c.backoff_max_ms, c.backoff_min_ms
            ));
        }
    }
}

/// What every tenant is checked against.
struct TenantContext<'a> {
    adapters: &'a [&'static dyn Adapter],
    points: &'a [&'static DecisionPoint],
    /// The listener actually bound (the loopback rule).
    bound: SocketAddr,
}

fn check_tenant_id(id: &str, problems: &mut Problems) {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        problems.push(format!(
            "tenant id {id:?}: use 1-64 letters, digits, '-' or '_'"
        ));
    }
}

/// One tenant, resolved; `None` (with its problems noted) when its URLs do not parse.
fn resolve_tenant(
    tenant: &TenantConfig,
    context: &TenantContext<'_>,
    problems: &mut Problems,
) -> Option<ResolvedTenant> {
    let id = &tenant.id;
    // Prefixes each problem with the tenant, which `locate_problems` finds the table by.
    let mut own = Problems::new();
    for (name, url) in [
        ("webhook_url", Some(&tenant.webhook_url)),
        ("decision_url", tenant.decision_url.as_ref()),
        ("fallback_url", tenant.fallback_url.as_ref()),
    ] {
        if let Some(url) = url {
            if let Err(why) = check_url(url) {
                own.push(format!("{name} {why}"));
            }
        }
    }
    let (path_token, basic_auth) = inbound_credentials(tenant, context.bound, &mut own);
    let secrets = signing_keys(tenant, &mut own);
    let decisions = decisions(tenant, context.points, &mut own);
    let parse = |u: &str| reqwest::Url::parse(u).ok();
    let decision_url = tenant
        .decision_url
        .clone()
        .unwrap_or_else(|| tenant.webhook_url.clone());
    // Decisions are sent to request targets made once here (`decision_client::Target`).
    let target = |name: &str, url: &str, own: &mut Problems| match parse(url).map(Target::new) {
        Some(Ok(target)) => Some(target),
        Some(Err(why)) => {
            own.push(format!("{name} {:?}: {why}", crate::redact::url(url)));
            None
        }
        // Already reported by check_url above.
        None => None,
    };
    let decision_name = match tenant.decision_url {
        Some(_) => "decision_url",
        None => "webhook_url",
    };
    let decision_target = target(decision_name, &decision_url, &mut own);
    let fallback_target = match &tenant.fallback_url {
        Some(url) => target("fallback_url", url, &mut own).map(Some),
        None => Some(None),
    };
    let targets = (parse(&tenant.webhook_url), decision_target, fallback_target);
    let resolved =
        if let (Some(webhook_target), Some(decision_target), Some(fallback_target)) = targets {
            let settings = adapter_settings(tenant, context.adapters, &mut own);
            let http = webhook_clients(tenant, &mut own);
            let command_token = token(
                tenant.command_token.as_ref(),
                "command_token",
                &Length::AtLeast16,
                &mut own,
            );
            Some(ResolvedTenant {
                id: id.clone(),
                http,
                settings,
                command_token,
                webhook_target,
                decision_target,
                fallback_target,
                webhook_url: tenant.webhook_url.clone(),
                decision_url,
                fallback_url: tenant.fallback_url.clone(),
                secrets,
                decisions,
                outbox_quota: tenant.outbox_quota,
                decisions_per_second: tenant.decisions_per_second.max(1),
                deliveries_per_second: tenant.deliveries_per_second.max(1),
                path_token,
                basic_auth,
                allow_ips: tenant.inbound.allow_ips.clone(),
            })
        } else {
            // Already reported above.
            None
        };
    problems.extend(own.into_iter().map(|p| format!("tenant {id}: {p}")));
    resolved
}

/// The loopback rule, the path token and the Basic password, resolved.
fn inbound_credentials(
    tenant: &TenantConfig,
    bound: SocketAddr,
    problems: &mut Problems,
) -> (Option<String>, Option<(String, String)>) {
    if !tenant.inbound.has_credentials() && !bound.ip().is_loopback() {
        problems.push(format!(
            "no inbound credentials on the non-loopback listener {bound}; \
             set one of inbound.path_token, inbound.basic_auth or inbound.allow_ips"
        ));
    }
    let path_token = token(
        tenant.inbound.path_token.as_ref(),
        "inbound.path_token",
        &Length::PathSegment,
        problems,
    );
    let basic_auth = tenant
        .inbound
        .basic_auth
        .as_ref()
        .and_then(|b| match b.password.resolve() {
            Ok(password) => Some((b.username.clone(), password)),
            Err(why) => {
                problems.push(format!("inbound.basic_auth.password: {why}"));
                None
            }
        });
    (path_token, basic_auth)
}

/// The tenant's webhook signing keys: at least one, each a valid `whsec_` secret.
fn signing_keys(tenant: &TenantConfig, problems: &mut Problems) -> Vec<crate::signing::SigningKey> {
    let mut keys = Vec::new();
    for secret in tenant.webhook_secret.all() {
        match secret.resolve() {
            Ok(value) => match crate::signing::SigningKey::from_whsec(&value) {
                Ok(key) => keys.push(key),
                Err(why) => problems.push(format!("webhook_secret {why}")),
            },
            Err(why) => problems.push(format!("webhook_secret: {why}")),
        }
    }
    if keys.is_empty() {
        problems.push("webhook_secret lists no secret".to_owned());
    }
    keys
}

/// Every decision point's deadline and fallback for the tenant: its own where it set one
/// (within what the platform tolerates; a fallback the platform can carry out), otherwise
/// the tenant's deadline and the platform's default. A kind no adapter raises is a problem.
fn decisions(
    tenant: &TenantConfig,
    points: &[&'static DecisionPoint],
    problems: &mut Problems,
) -> BTreeMap<&'static str, ResolvedDecision> {
    for kind in tenant.decisions.keys() {
        if !points.iter().any(|p| p.kind == kind) {
            let known: Vec<_> = points.iter().map(|p| p.kind).collect();
            problems.push(format!(
                "unknown decision kind {kind:?}; valid kinds: {}",
                known.join(", ")
            ));
        }
    }
    let mut decisions = BTreeMap::new();
    for point in points {
        let own = tenant.decisions.get(point.kind);
        let deadline_ms = own
            .and_then(|d| d.deadline_ms)
            .unwrap_or(tenant.decision_deadline_ms);
        if deadline_ms == 0 || deadline_ms > point.platform_max_ms {
            problems.push(format!(
                "the {} deadline of {deadline_ms} ms must be between 1 and {} ms, what {} \
                 tolerates",
                point.kind, point.platform_max_ms, point.vendor
            ));
        }
        let fallback = match own.and_then(|d| d.fallback.as_ref()) {
            Some(value) => {
                let json = serde_json::to_value(value).unwrap_or_default();
                match Answer::from_json(&json)
                    .and_then(|a| strict_fallback(&json, &a).map(|()| a))
                    .and_then(|a| (point.validate)(&a).map(|()| a))
                {
                    Ok(answer) => answer,
                    Err(why) => {
                        problems.push(format!("decisions.{}.fallback: {why}", point.kind));
                        (point.default_fallback)()
                    }
                }
            }
            None => (point.default_fallback)(),
        };
        decisions.insert(
            point.kind,
            ResolvedDecision {
                deadline_ms,
                fallback,
            },
        );
    }
    decisions
}

/// The tenant's own webhook clients when it names a `ca_file`.
fn webhook_clients(
    tenant: &TenantConfig,
    problems: &mut Problems,
) -> Option<crate::core::WebhookClients> {
    let path = tenant.ca_file.as_ref()?;
    let clients = read_ca_file(path).and_then(|roots| {
        crate::core::WebhookClients::new(&roots).map_err(|e| {
            format!(
                "ca_file {}: cannot build the webhook client: {e}",
                path.display()
            )
        })
    });
    clients.map_err(|why| problems.push(why)).ok()
}

/// What a secret token must be.
enum Length {
    /// At least 16 characters.
    AtLeast16,
    /// At least 16 characters without `/` (it is a path segment).
    PathSegment,
}

/// A secret token, resolved, or `None` with the problem noted (`what` names the setting).
fn token(
    secret: Option<&Secret>,
    what: &str,
    rule: &Length,
    problems: &mut Problems,
) -> Option<String> {
    let (fits, wanted): (fn(&str) -> bool, &str) = match rule {
        Length::AtLeast16 => (|t| t.len() >= 16, "at least 16 characters"),
        Length::PathSegment => (
            |t| t.len() >= 16 && !t.contains('/'),
            "at least 16 characters without '/'",
        ),
    };
    match secret.map(Secret::resolve)? {
        Ok(value) if fits(&value) => Some(value),
        Ok(_) => {
            problems.push(format!("{what} must be {wanted}"));
            None
        }
        Err(why) => {
            problems.push(format!("{what}: {why}"));
            None
        }
    }
}

/// Each adapter's settings section of one tenant, parsed by the adapter (absent: `Null`, so
/// the adapter decides what no section means), keyed by adapter name. A key of the tenant
/// no adapter claims is a problem naming the valid keys.
pub(super) fn adapter_settings(
    tenant: &TenantConfig,
    adapters: &[&'static dyn Adapter],
    problems: &mut Vec<String>,
) -> BTreeMap<&'static str, ivrgate_adapter::ParsedSettings> {
    for key in tenant.sections.keys() {
        if !adapters.iter().any(|a| a.settings_section() == key) {
            let mut valid: Vec<&str> = TENANT_KEYS.to_vec();
            valid.extend(adapters.iter().map(|a| a.settings_section()));
            problems.push(format!(
                "{key} is not a tenant setting; valid keys: {}",
                valid.join(", ")
            ));
        }
    }
    let mut settings = BTreeMap::new();
    for adapter in adapters {
        let section = adapter.settings_section();
        let value = match tenant.sections.get(section).map(serde_json::to_value) {
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                problems.push(format!("[{section}] {e}"));
                continue;
            }
            None => serde_json::Value::Null,
        };
        match adapter.parse_settings(&value) {
            Ok(parsed) => {
                settings.insert(adapter.name(), parsed);
            }
            Err(lines) => {
                for line in lines {
                    problems.push(format!("{}: {line}", adapter.name()));
                }
            }
        }
    }
    settings
}
/// A configured fallback is as strict as every other table: a key the answer does not read
/// (`promt` for `prompt`) is an error naming it and the valid ones, also in nested tables
/// (`on_failure`). The keys an action reads are the ones it writes back; `attach` is the
/// customer's own data, and a `native` answer is the platform's own object (its adapter
/// checks it).
fn strict_fallback(
    written: &serde_json::Value,
    answer: &Answer,
) -> std::result::Result<(), String> {
    use serde_json::Value;
    fn walk(path: &str, written: &Value, known: &Value, problems: &mut Vec<String>) {
        let (Value::Object(written), Value::Object(known)) = (written, known) else {
            return;
        };
        for (key, value) in written {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match known.get(key) {
                Some(inner) if key != "attach" => walk(&here, value, inner, problems),
                Some(_) => {}
                None => {
                    let valid: Vec<&str> = known.keys().map(String::as_str).collect();
                    problems.push(format!(
                        "unknown key {here:?}; valid keys: {}",
                        valid.join(", ")
                    ));
                }
            }
        }
    }
    let known = match answer {
        Answer::Action(_) => {
            let mut known = answer.to_json();
            if let Value::Object(map) = &mut known {
                // Written back only when set, read always.
                map.entry("language").or_insert(Value::Null);
                map.entry("attach").or_insert(Value::Null);
                // A nested table the action has not set is written back as null: take
                // its keys from an empty instance.
                if map.get("on_failure").is_some_and(Value::is_null) {
                    if let Ok(goto) = serde_json::to_value(ivrgate_adapter::action::Goto {
                        target: String::new(),
                        prompt: None,
                        repeat: None,
                        max_digits: None,
                        pause_s: None,
                    }) {
                        map.insert("on_failure".into(), goto);
                    }
                }
            }
            known
        }
        // `{ native = {...} }`: nothing beside `native`; a bare native object (`ACTION`,
        // `STATUS`) is the platform's own, whole.
        Answer::Native(_) if written.get("native").is_some() => {
            serde_json::json!({ "native": null })
        }
        Answer::Native(_) => return Ok(()),
    };
    let mut problems = Vec::new();
    walk("", written, &known, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
/// The certificates of a tenant's `ca_file`: at least one.
fn read_ca_file(path: &Path) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem =
        std::fs::read(path).map_err(|e| format!("ca_file: cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("ca_file {}: not a PEM certificate bundle", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// An instance's public base URL: absolute http(s) with a host, and nothing a platform could
/// leak or mangle (credentials, query, fragment).
fn check_advertise_url(url: &str) -> std::result::Result<(), String> {
    check_url(url)?;
    let shown = crate::redact::url(url);
    let u = reqwest::Url::parse(url).map_err(|e| format!("{shown:?}: {e}"))?;
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{shown:?} must not carry credentials"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{shown:?} must not have a query or fragment"));
    }
    Ok(())
}

fn check_url(url: &str) -> std::result::Result<(), String> {
    let shown = crate::redact::url(url);
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(u) => Err(format!(
            "{shown:?}: scheme {:?} is not http or https",
            u.scheme()
        )),
        Err(e) => Err(format!("{shown:?}: {e}")),
    }
}
