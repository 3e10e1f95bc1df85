//! The Mindful Callback Platform Toolkit (PTK) adapter: ivrgate plays the PTK web service
//! for IVRs written against Mindful's (formerly VHT's) On-Premise Callback platform.
//!
//! Every method of seed 004 is served at `/ptk/{tenant}` over SOAP 1.1 and 1.2, with a typed
//! document/literal-wrapped WSDL at `?wsdl`. Interactions are entities of kind `ptk` changed
//! through the core's atomic transitions, together with their PTK tenant's licence counter
//! (`ptk.licence`) and their appointment slot (`ptk.slot`); external tracking ids, client ids
//! and pending callback contacts are aliases. Every state change is a durable webhook event;
//! callbacks fall due through entity timers (`callback.due`). Segments (operation mode,
//! business hours, holidays, slots, EWT) come from the tenant's `[tenants.ptk]` section, or
//! from the `segment_state` decision webhook where a segment says so. See `docs/ptk.md`.

#![forbid(unsafe_code)]

pub mod codes;
mod interaction;
mod method;
mod methods;
mod model;
mod reply;
pub mod settings;
// The SOAP reading and writing is the adapter's own; the fuzz targets and the integration
// tests reach it through the `testing` feature only.
#[cfg(feature = "testing")]
pub mod soap;
#[cfg(not(feature = "testing"))]
mod soap;
mod state;
mod store;
pub mod wsdl;

use std::time::SystemTime;

use ivrgate_adapter::action::{Action, Envelope};
use ivrgate_adapter::{
    Adapter, Answer, BoxFuture, DecisionPoint, Gateway, Handled, Inbound, TimerFired,
};
use serde_json::{Map, Value};

use reply::Reply;
use settings::Settings;
use soap::{Element, Version};

/// The vendor name: path segment, metrics label and `vendor` of every event.
pub const VENDOR: &str = "ptk";

/// The places where the PTK waits for the customer.
///
/// `segment_state`: GetSegmentState (and the acceptance of AddInteraction, CreateInteraction
/// and InteractionRequestContact) for a segment configured with `decision = true`. The IVR
/// waits for its SOAP answer; .NET and JAX-WS clients default to 100 s or more, ivrgate allows
/// deadlines up to 10 000 ms. The answer is `default` (use the configured segment) or a native
/// object with any of OperationMode, EWT, OfferTreatment, ModeStatus, RecommendedDestination,
/// QueueMode.
pub static DECISION_POINTS: [DecisionPoint; 1] = [DecisionPoint {
    vendor: VENDOR,
    kind: "segment_state",
    platform_max_ms: 10_000,
    default_fallback: configured_segment,
    validate: validate_segment_state,
    native_attach: no_attach,
}];

fn configured_segment() -> Answer {
    Answer::Action(Envelope::new(Action::Default {}))
}

fn validate_segment_state(answer: &Answer) -> Result<(), String> {
    match answer {
        Answer::Action(envelope) => match envelope.action {
            Action::Default {} => Ok(()),
            _ => Err(format!(
                "segment_state takes default or a native object, not {}",
                envelope.action.kind().as_str()
            )),
        },
        Answer::Native(Value::Object(_)) => Ok(()),
        Answer::Native(_) => Err("a native segment_state answer is a JSON object".into()),
    }
}

fn no_attach(_: &Value) -> Map<String, Value> {
    Map::new()
}

/// The PTK adapter. Stateless: interactions live in the core's entities.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ptk;

impl Adapter for Ptk {
    fn cannot_originate(&self) -> Option<&'static str> {
        Some("PTK is the callback platform's server side: ivrgate answers its requests and keeps the callbacks PTK places; it has no operation through which a customer places a call")
    }

    fn name(&self) -> &'static str {
        VENDOR
    }

    fn decision_points(&self) -> &'static [DecisionPoint] {
        &DECISION_POINTS
    }

    fn handle<'a>(&'a self, gateway: &'a dyn Gateway, request: Inbound) -> BoxFuture<'a, Handled> {
        Box::pin(handle(gateway, request))
    }

    fn keeps_call_state(&self) -> bool {
        true
    }

    /// The PTK's "busy" without reading the body: a server fault in the SOAP version the
    /// content type announces (1.1 unless it says `application/soap+xml`), naming
    /// `BandwidthExceeded` (109035), with HTTP 500 as SOAP faults travel and `Retry-After`.
    fn busy(&self, _gateway: &dyn Gateway, request: &Inbound) -> Handled {
        let content_type = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let version = soap::version_from_content_type(content_type).unwrap_or(Version::V11);
        let (name, _) = codes::describe(codes::BANDWIDTH_EXCEEDED);
        let reason = format!(
            "{} {name}: the server is busy; send the request again shortly",
            codes::BANDWIDTH_EXCEEDED
        );
        let mut handled = respond(
            500,
            version.content_type(),
            soap::server_fault(version, &reason),
            "unknown",
            "busy",
            None,
        );
        handled.response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        handled
    }

    fn parse_settings(
        &self,
        settings: &Value,
    ) -> Result<ivrgate_adapter::ParsedSettings, Vec<String>> {
        if settings.is_null() {
            // A tenant without a PTK section answers 108000 to every PTK tenant name: it has
            // no `Settings`.
            return Ok(std::sync::Arc::new(()));
        }
        Ok(std::sync::Arc::new(Settings::parse(settings)?))
    }

    fn on_timer<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        timer: TimerFired,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(methods::on_timer(gateway, timer))
    }
}

/// Everything a method needs about its request.
pub(crate) struct Cx<'a> {
    pub gw: &'a dyn Gateway,
    /// The ivrgate tenant.
    pub tenant: &'a str,
    pub settings: &'a Settings,
    pub params: &'a Element<'a>,
    pub method: method::Method,
    pub now: SystemTime,
    /// Whether contacts are masked in log lines.
    pub mask: bool,
}

impl<'a> Cx<'a> {
    /// A parameter's trimmed text, looked up among the parameters and then in `Options`;
    /// empty and nil values count as absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        let direct = self.params.child(name);
        let found = direct.or_else(|| self.params.child("Options")?.child(name))?;
        if found.is_nil() || found.value().is_empty() {
            None
        } else {
            Some(found.value())
        }
    }

    /// The request's parameters as JSON, for events' and decisions' `vendor_fields`. Built
    /// where each is made rather than kept for the whole request: with a large UserData it is
    /// several times the body's size, and an event takes it by value.
    pub fn vendor_fields(&self) -> Map<String, Value> {
        model::to_json(self.params, 0)
    }

    /// A parameter element, wherever it is (parameters, then `Options`).
    pub fn element(&self, name: &str) -> Option<&Element<'a>> {
        self.params
            .child(name)
            .or_else(|| self.params.child("Options")?.child(name))
    }
}

async fn handle(gw: &dyn Gateway, request: Inbound) -> Handled {
    let content_type = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let announced = soap::version_from_content_type(content_type).unwrap_or(Version::V11);
    let wants_wsdl = request
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p.eq_ignore_ascii_case("wsdl")));
    let tenant_settings = ivrgate_adapter::settings_of::<Settings>(gw, &request.tenant, VENDOR);
    if request.method == http::Method::GET && wants_wsdl {
        let namespace = tenant_settings
            .as_ref()
            .map(|s| s.target_namespace.clone())
            .unwrap_or_else(|| settings::DEFAULT_NAMESPACE.into());
        let host = request
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let scheme = request
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .filter(|p| *p == "https")
            .unwrap_or("http");
        let location = format!("{scheme}://{host}/ptk/{}", request.tenant);
        return respond(
            200,
            "text/xml; charset=utf-8",
            wsdl::wsdl(&namespace, &location),
            "wsdl",
            "ok",
            None,
        );
    }
    if request.method != http::Method::POST {
        return fault(
            &request,
            announced,
            "unknown",
            "POST a SOAP request, or GET ?wsdl",
        );
    }
    let text = match ivrgate_wire::charset::decode_borrowed(&request.body, content_type) {
        Ok(text) => text,
        Err(e) => {
            return fault(
                &request,
                announced,
                "unknown",
                &format!("unreadable body: {e}"),
            )
        }
    };
    let root = match soap::parse(&text, request.max_depth) {
        Ok(root) => root,
        Err(e) => return fault(&request, announced, "unknown", &e),
    };
    let soap_request = match soap::read_request(root, content_type) {
        Ok(r) => r,
        Err(why) => return fault(&request, announced, "unknown", &why),
    };
    let version = soap_request.version;
    let Some(method) = method::Method::parse(&soap_request.operation.name) else {
        let name: String = soap_request
            .operation
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(64)
            .collect();
        return fault(
            &request,
            version,
            "unknown",
            &format!("unknown operation {name}"),
        );
    };
    let namespace;
    let reply;
    let params = soap_request.params();
    let client_id = params
        .child("Options")
        .and_then(|o| o.child("ClientId"))
        .or_else(|| params.child("ClientId"))
        .map(|e| e.value().to_owned())
        .unwrap_or_default();
    match tenant_settings {
        None => {
            namespace = settings::DEFAULT_NAMESPACE.to_owned();
            reply = Reply::error(
                codes::INVALID_TENANT,
                "no PTK tenants are configured for this ivrgate tenant",
            );
            tracing::debug!(tenant = %request.tenant, "no [tenants.ptk] section");
        }
        Some(settings) => {
            namespace = settings.target_namespace.clone();
            let cx = Cx {
                gw,
                tenant: &request.tenant,
                settings: &settings,
                params,
                method,
                now: gw.now(),
                mask: request.mask_phones,
            };
            reply = methods::dispatch(&cx).await;
        }
    }
    let interaction_id = reply
        .interaction_id
        .clone()
        .or_else(|| params.child("InteractionId").map(|e| e.value().to_owned()))
        .filter(|id| !id.is_empty());
    let ptk_tenant = params
        .child("Tenant")
        .or_else(|| params.child("Options")?.child("Tenant"))
        .map(|e| e.value().to_owned())
        .unwrap_or_default();
    if let Some(reason) = &reply.fault {
        tracing::warn!(
            tenant = %request.tenant,
            ptk_tenant = %ptk_tenant,
            method = method.name(),
            interaction_id = interaction_id.as_deref().unwrap_or(""),
            reason = %reason,
            "ptk request refused with a SOAP fault"
        );
        return respond(
            soap_fault_status(version),
            version.content_type(),
            soap::fault(version, reason),
            method.name(),
            "bad_request",
            interaction_id,
        );
    }
    let outcome = if reply.succeeded() {
        "ok"
    } else if reply.internal {
        "internal_error"
    } else if matches!(
        reply.code,
        codes::RESOURCES_UNAVAILABLE
            | codes::UNABLE_TO_CREATE
            | codes::PLATFORM_UNAVAILABLE
            | codes::BANDWIDTH_EXCEEDED
            | codes::LICENCE_UNAVAILABLE
    ) {
        "refused"
    } else {
        "rejected"
    };
    if reply.internal {
        tracing::error!(
            tenant = %request.tenant,
            ptk_tenant = %ptk_tenant,
            method = method.name(),
            interaction_id = interaction_id.as_deref().unwrap_or(""),
            code = reply.code,
            reason = %reply.message,
            "ptk request failed inside ivrgate; answered 109000 and changed nothing"
        );
    } else if reply.succeeded() {
        // The core logs every request at info; this adds the PTK's own fields.
        tracing::debug!(
            tenant = %request.tenant,
            ptk_tenant = %ptk_tenant,
            method = method.name(),
            interaction_id = interaction_id.as_deref().unwrap_or(""),
            code = reply.code,
            "ptk request completed"
        );
    } else {
        tracing::warn!(
            tenant = %request.tenant,
            ptk_tenant = %ptk_tenant,
            method = method.name(),
            interaction_id = interaction_id.as_deref().unwrap_or(""),
            code = reply.code,
            result = codes::describe(reply.code).0,
            reason = %reply.message,
            "ptk request not completed"
        );
    }
    let guid = guid();
    let body = reply::render(
        version,
        &namespace,
        method.operation(),
        &client_id,
        &guid,
        &reply,
    );
    respond(
        200,
        version.content_type(),
        body,
        method.name(),
        outcome,
        interaction_id,
    )
}

/// SOAP 1.1 faults travel with HTTP 500; SOAP 1.2 sender faults with 400.
fn soap_fault_status(version: Version) -> u16 {
    match version {
        Version::V11 => 500,
        Version::V12 => 400,
    }
}

fn fault(request: &Inbound, version: Version, method: &str, reason: &str) -> Handled {
    tracing::warn!(
        tenant = %request.tenant,
        method = method,
        peer = %request.peer,
        reason = %reason,
        "ptk request is not a SOAP request we can read; answered a fault"
    );
    respond(
        soap_fault_status(version),
        version.content_type(),
        soap::fault(version, reason),
        method,
        "bad_request",
        None,
    )
}

fn respond(
    status: u16,
    content_type: &str,
    body: String,
    method: &str,
    outcome: &'static str,
    vendor_call_id: Option<String>,
) -> Handled {
    Handled {
        vendor_call_id,
        ..Handled::new(status, content_type, body, method, outcome)
    }
}

/// A random GUID for the response header (`Id` / `Guid`).
pub(crate) fn guid() -> String {
    let mut b: [u8; 16] = rand::random();
    // RFC 4122 version 4, variant 1.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Helpers for the integration tests: the element paths of a document, to compare a
/// response's shape with the seed's example. Only with the `testing` feature (the root
/// crate's dev-dependencies turn it on).
#[cfg(feature = "testing")]
pub mod testing {
    use crate::soap::{parse, Element};

    /// Every element path (`A/B/C`) and attribute path (`A/B/@x`) under the first element
    /// named `from` (the document root when `None`), by local name.
    pub fn shape(xml: &str, from: Option<&str>) -> Result<Vec<String>, String> {
        let root = parse(xml, 64)?;
        let start = match from {
            None => Some(&root),
            Some(name) => find(&root, name),
        }
        .ok_or_else(|| format!("no <{}> in the document", from.unwrap_or("")))?;
        let mut out = Vec::new();
        walk(start, "", &mut out);
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The text of the first element named `name`.
    pub fn text_of(xml: &str, name: &str) -> Option<String> {
        let root = parse(xml, 64).ok()?;
        find(&root, name).map(|e| e.text.trim().to_owned())
    }

    /// Every value of attribute `attr` on elements named `name`.
    pub fn attrs_of(xml: &str, name: &str, attr: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(root) = parse(xml, 64) {
            collect(&root, name, attr, &mut out);
        }
        out
    }

    fn collect(e: &Element, name: &str, attr: &str, out: &mut Vec<String>) {
        if e.name == name {
            if let Some(v) = e.attr(attr) {
                out.push(v.to_owned());
            }
        }
        for c in &e.children {
            collect(c, name, attr, out);
        }
    }

    fn find<'e, 'a>(e: &'e Element<'a>, name: &str) -> Option<&'e Element<'a>> {
        if e.name == name {
            return Some(e);
        }
        e.children.iter().find_map(|c| find(c, name))
    }

    fn walk(e: &Element, prefix: &str, out: &mut Vec<String>) {
        for c in &e.children {
            let path = if prefix.is_empty() {
                c.name.to_string()
            } else {
                format!("{prefix}/{}", c.name)
            };
            for a in &c.attributes {
                out.push(format!("{path}/@{}", a.name));
            }
            out.push(path.clone());
            walk(c, &path, out);
        }
    }
}
