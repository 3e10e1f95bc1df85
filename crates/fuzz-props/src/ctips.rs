//! The target for the CTIPS callback service: a gateway that holds one session, and the
//! properties of the events the callback commits.

use std::time::SystemTime;

use ivrgate_adapter::{
    BoxFuture, Decision, DecisionRequest, Entity, EntityKey, EventSubmission, Gateway, RecordError,
    Recorded,
};
use serde_json::Value;

use crate::adapters::{carried, inbound};
use crate::server::{run_ready, NoStore};
use crate::wire::check_json;
use crate::{content_type, header_lines, Tally, DEPTH};

// ---------------------------------------------------------------------------------------
// The CTIPS callback service (adapters/ctips: callback.rs, xml.rs, event.rs)

/// The tenant, callback token and lease epoch the `ctips` target's gateway holds.
const CTIPS_TENANT: &str = "acme";
const CTIPS_TOKEN: &str = "fuzz-callback-token-0123";
const CTIPS_EPOCH: u64 = 7;
/// The session id StartSession named on the live side (a Heartbeat naming another is refused).
const CTIPS_SESSION: &str = "S-fuzz";

/// Operations the callback service answers by name; anything else is `unknown`.
const CTIPS_OPS: [&str; 5] = [
    "PublishCTIEvent",
    "Heartbeat",
    "HeartbeatMessage",
    "StartSession",
    "unknown",
];

fn ctips_settings() -> &'static ivrgate_ctips::Settings {
    static SETTINGS: std::sync::OnceLock<ivrgate_ctips::Settings> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(|| {
        let raw = serde_json::json!({
            "servers": ["http://ctips.invalid/Aspect.UnifiedIP.EDK.CTIPortalService"],
            "username": "ivrgate",
            "password": "fuzz",
            "callback_token": CTIPS_TOKEN,
        });
        match ivrgate_ctips::Settings::from_json(&raw) {
            Ok(Some(settings)) => settings,
            other => panic!("the ctips target's settings do not parse: {other:?}"),
        }
    })
}

/// An empty entity store that holds the CTIPS lease and answers at once; it keeps the
/// webhook types of the events committed, so the target can see what a request made durable.
#[derive(Default)]
struct CtipsStore {
    committed: std::sync::Mutex<Vec<String>>,
}

impl CtipsStore {
    fn committed(&self) -> Vec<String> {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Gateway for CtipsStore {
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision> {
        NoStore.decide(request)
    }

    fn record<'a>(
        &'a self,
        event: EventSubmission,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        NoStore.record(event)
    }

    fn now(&self) -> SystemTime {
        NoStore.now()
    }

    fn load<'a>(&'a self, key: EntityKey) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        NoStore.load(key)
    }

    fn find<'a>(
        &'a self,
        tenant: &'a str,
        namespace: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<Option<Entity>, RecordError>> {
        NoStore.find(tenant, namespace, value)
    }

    fn list<'a>(
        &'a self,
        tenant: &'a str,
        kind: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entity>, RecordError>> {
        NoStore.list(tenant, kind, limit)
    }

    fn transition<'a>(
        &'a self,
        keys: Vec<EntityKey>,
        f: &'a mut ivrgate_adapter::TransitionFn<'a>,
    ) -> BoxFuture<'a, Result<ivrgate_adapter::Transitioned, RecordError>> {
        use ivrgate_adapter::{Change, Transitioned};
        Box::pin(async move {
            let read = vec![None; keys.len()];
            let changes = f(&read);
            assert_eq!(changes.len(), keys.len(), "one change per entity read");
            let mut now = Vec::new();
            for (key, change) in keys.into_iter().zip(changes) {
                let Change::Write(write) = change else {
                    now.push(None);
                    continue;
                };
                self.committed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(write.events.iter().map(|e| e.event_type.clone()));
                now.push(Some(Entity {
                    key,
                    entity_id: "ent_fuzz".into(),
                    version: 1,
                    status: if write.state.is_some() {
                        "active"
                    } else {
                        "ended"
                    }
                    .into(),
                    state: write.state,
                    attached: write.attached.unwrap_or_default(),
                    expires_at: write.expires_at,
                }));
            }
            Ok(Transitioned::Done(now))
        })
    }

    fn held_epoch(&self, tenant: &str, adapter: &str, _name: &str) -> Option<u64> {
        (tenant == CTIPS_TENANT && adapter == ivrgate_ctips::NAME).then_some(CTIPS_EPOCH)
    }
}

fn tally_node(n: &ivrgate_ctips::xml::Node, level: usize, t: &mut Tally) {
    t.nodes += 1;
    t.depth = t.depth.max(level);
    t.bytes += n.name.len() + n.text.len();
    t.bytes += n
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>();
    for c in &n.children {
        tally_node(c, level + 1, t);
    }
}

/// An XML 1.0 name without a prefix (what the writer is given names as).
fn ncname(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || !c.is_ascii())
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.') || !c.is_ascii())
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// Writes an event's element tree with the shared SOAP writer: every element by its local
/// name in the event namespace, `i:nil` kept, its trimmed text, then its children.
fn write_node(b: &mut ivrgate_wire::soap::Builder, n: &ivrgate_ctips::xml::Node) {
    let name = format!("a:{}", n.name);
    let nil: &[(&str, &str)] = if n.is_nil() {
        &[("i:nil", "true")]
    } else {
        &[]
    };
    b.start_with(&name, nil).text(n.value());
    for c in &n.children {
        write_node(b, c);
    }
    b.end();
}

/// What the writer makes of a tree: each element's text trimmed and without the characters
/// XML 1.0 cannot carry.
fn as_written(n: &ivrgate_ctips::xml::Node) -> ivrgate_ctips::xml::Node {
    ivrgate_ctips::xml::Node {
        name: n.name.clone(),
        attributes: n
            .is_nil()
            .then(|| ("nil".into(), "true".into()))
            .into_iter()
            .collect(),
        text: carried(n.value()),
        children: n.children.iter().map(as_written).collect(),
    }
}

fn names_writable(n: &ivrgate_ctips::xml::Node) -> bool {
    ncname(&n.name) && n.children.iter().all(names_writable)
}

/// A PublishCTIEvent's `ctiEvent`, read (`event::read`) and mapped (`event::map`): the
/// fields are linear in the input, the webhook is one the adapter documents, and the event
/// written again by the shared SOAP writer (names, `i:type`, `i:nil`, text, children) reads
/// back as the same event.
fn ctips_event(node: &ivrgate_ctips::xml::Node, input: usize) {
    use ivrgate_ctips::{event, proto, xml};
    let Ok(read) = event::read(node) else {
        return;
    };
    check_json(
        &Value::Object(read.fields.clone()),
        3 * input,
        "ctips event fields",
    );
    let mapped = event::map(&read);
    assert!(
        event::WEBHOOK_TYPES.contains(&mapped.webhook.as_str()),
        "webhook {} is not documented",
        mapped.webhook
    );
    if !names_writable(node) {
        return;
    }
    let typed = node
        .xsi_type()
        .filter(|t| {
            !t.is_empty() && *t != "CTIEvent" && !t.contains(char::is_control) && carried(t) == *t
        })
        .map(|t| format!("a:{t}"));
    let mut attrs = vec![("xmlns:a", proto::NS_PUB), ("xmlns:i", proto::NS_XSI)];
    if let Some(t) = &typed {
        attrs.push(("i:type", t));
    }
    let mut b = ivrgate_wire::soap::Builder::new();
    b.start_with("ctiEvent", &attrs).text(node.value());
    for c in &node.children {
        write_node(&mut b, c);
    }
    b.end();
    let written = ivrgate_wire::soap::write_request("PublishCTIEvent", proto::NS_PUB, b);
    let root = xml::parse(written.as_bytes(), 128)
        .unwrap_or_else(|e| panic!("a written event does not parse: {e}\n{written}"));
    let op = xml::body_op(&root).unwrap_or_else(|e| panic!("{e}\n{written}"));
    let again = op
        .child("ctiEvent")
        .unwrap_or_else(|| panic!("no ctiEvent in {written}"));
    // The writer leaves out what XML 1.0 cannot carry: compare with the event as written.
    let mut expected = as_written(node);
    if let Some(t) = typed {
        expected.attributes.push(("type".into(), t));
    }
    let expected = event::read(&expected).map(|e| (e.type_name, e.fields));
    let again = event::read(again).map(|e| (e.type_name, e.fields));
    assert_eq!(again, expected, "an event does not read back\n{written}");
}

/// The CTIPS callback service (`ivrgate_ctips::callback::handle`: PublishCTIEvent,
/// Heartbeat, StartSession) on a gateway that holds the session's lease. Input: content
/// type, the epoch the callback path names (empty: the held one), then the body.
///
/// The body's tree (`xml::parse_typed`) is within the depth limit, has at most one element
/// per four input bytes and no more text than three bytes per input byte (a legacy charset);
/// a `ctiEvent` keeps [`ctips_event`]'s properties. The service answers without waiting,
/// with a SOAP envelope: `200` with `{Op}Result` 0, or a `500` fault with a code and a
/// reason; it names the operation only as one it serves or `unknown` (a metrics label,
/// never chosen by the input). An event is acknowledged only once committed, with the
/// webhook its type maps to; a fault commits nothing.
pub fn ctips(data: &[u8]) {
    use ivrgate_ctips::{callback, event, live, xml};
    let ([ct, epoch], body) = header_lines::<2>(data);
    let ct = content_type(ct);
    let ct_text = ct.as_ref().and_then(|v| v.to_str().ok());
    let mut published = None;
    if let Ok(root) = xml::parse_typed(body, ct_text, DEPTH) {
        let mut t = Tally::default();
        tally_node(&root, 1, &mut t);
        assert!(t.depth <= DEPTH, "elements nest {} deep", t.depth);
        assert!(
            t.nodes <= body.len() / 4 + 1,
            "{} elements from {} bytes",
            t.nodes,
            body.len()
        );
        assert!(
            t.bytes <= 3 * body.len(),
            "{} bytes of text from {}",
            t.bytes,
            body.len()
        );
        if let Ok(op) = xml::body_op(&root) {
            if op.name == "PublishCTIEvent" {
                if let Some(node) = op.child("ctiEvent") {
                    ctips_event(node, body.len());
                    published = event::read(node).ok().map(|e| event::map(&e).webhook);
                }
            }
        }
    }

    let epoch = std::str::from_utf8(epoch)
        .ok()
        .filter(|e| !e.is_empty())
        .map_or_else(|| CTIPS_EPOCH.to_string(), str::to_owned);
    let path = format!("{CTIPS_TOKEN}/{epoch}");
    let mut request = inbound(http::Method::POST, path.as_bytes(), None, ct, body);
    request.tenant = CTIPS_TENANT.into();
    let (live, _notices, _registered) = live::register(CTIPS_TENANT, CTIPS_EPOCH);
    live.set_session_id(Some(CTIPS_SESSION.into()));
    let gateway = CtipsStore::default();
    let Some(handled) = run_ready(callback::handle(&gateway, Some(ctips_settings()), request))
    else {
        panic!("a callback waited on a gateway that answers at once");
    };
    let committed = gateway.committed();
    assert!(
        CTIPS_OPS.contains(&handled.method.as_str()),
        "the operation is named {:?}, not one the service serves",
        handled.method
    );
    let status = handled.response.status().as_u16();
    if status == 404 {
        // A path that is no callback path (the epoch line made it one with more segments).
        assert!(
            committed.is_empty(),
            "a refused path committed {committed:?}"
        );
        return;
    }
    assert_eq!(
        handled
            .response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/xml; charset=utf-8"),
        "answer content type"
    );
    let answer = xml::parse(handled.response.body(), DEPTH)
        .unwrap_or_else(|e| panic!("the answer does not parse: {e}"));
    let answer = xml::body_op(&answer).unwrap_or_else(|e| panic!("the answer: {e}"));
    match status {
        200 => {
            let reply = match handled.method.as_str() {
                "HeartbeatMessage" => "Heartbeat",
                other => other,
            };
            assert_eq!(answer.name, format!("{reply}Response"), "answer element");
            assert_eq!(
                answer
                    .child(&format!("{reply}Result"))
                    .map(xml::Node::value),
                Some("0"),
                "answer result"
            );
            if handled.method == "PublishCTIEvent" {
                let webhook = published.unwrap_or_else(|| panic!("acknowledged an unread event"));
                assert!(
                    committed.contains(&webhook),
                    "acknowledged {webhook} before committing it (committed {committed:?})"
                );
            } else {
                assert!(
                    committed.is_empty(),
                    "{} committed {committed:?}",
                    handled.method
                );
            }
        }
        500 => {
            assert_eq!(answer.name, "Fault", "a 500 is a SOAP fault");
            assert!(
                answer
                    .child("faultcode")
                    .is_some_and(|c| !c.value().is_empty())
                    && answer.child("faultstring").is_some(),
                "a fault without code and reason"
            );
            assert!(committed.is_empty(), "a fault committed {committed:?}");
        }
        other => panic!("status {other}"),
    }
}
