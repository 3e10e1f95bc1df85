//! What the adapter's share of one GET_IVR_ACTION decision costs, without the core: the
//! seed's XML-RPC body (`tests/fixtures/voicenter/get_ivr_action.xmlrpc.xml`) and the
//! bench's menu answer, in a loop on one thread, printing ns and allocations per operation.
//!
//! ```text
//! cargo run --release -p ivrgate-voicenter --example decision_cost [ITERATIONS] [PART]
//! ```
//!
//! PART is `all` (the default) or one of the rows: `parse` (`xmlrpc::parse_call` alone),
//! `validate` (the decision point's `validate` of the answer, which the core runs once per
//! decision: the reply rendered as a JSON tree), `handle` (`Adapter::handle` with a gateway
//! that answers at once: decode, the call reference and neutral fields, the core's
//! validation, rendering and encoding). Instructions per operation are repeatable on a
//! shared machine where nanoseconds are not: run one part under callgrind with two
//! iteration counts and divide the difference, e.g.
//!
//! ```text
//! for n in 1000 3000; do valgrind --tool=callgrind --callgrind-out-file=cg.$n \
//!     target/release/examples/decision_cost $n handle; done
//! ```

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ivrgate_adapter::action::{Answer, Envelope};
use ivrgate_adapter::{
    Adapter, AnswerSource, BoxFuture, Decision, DecisionRequest, EventSubmission, Gateway, Inbound,
    PathSegments, RecordError, Recorded,
};
use ivrgate_voicenter::{Voicenter, DECISION_POINTS};
use ivrgate_wire::{xmlrpc, Limits};

#[global_allocator]
static GLOBAL: ivrgate_countalloc::Counting<mimalloc::MiMalloc> =
    ivrgate_countalloc::Counting(mimalloc::MiMalloc);

const BODY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/voicenter/get_ivr_action.xmlrpc.xml"
));

/// The bench's webhook answer (`benches/gateway.rs`).
const MENU_ANSWER: &str = r#"{"action":"menu","prompt":"p","menu":"m","max_digits":1}"#;

/// Answers every decision with the menu at once, after validating it as the core does.
struct Answering(Answer);

impl Gateway for Answering {
    fn decide<'a>(&'a self, request: DecisionRequest) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let valid = (request.point.validate)(&self.0);
            assert!(valid.is_ok(), "the menu answer is valid: {valid:?}");
            Decision {
                decision_id: "dec_1".into(),
                call_id: Some("call_1".into()),
                answer: self.0.clone(),
                source: AnswerSource::Customer,
                attached: serde_json::Map::new(),
            }
        })
    }

    fn record<'a>(
        &'a self,
        _event: EventSubmission,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async { Err(RecordError::StorageFull) })
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }
}

fn inbound() -> Inbound {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    Inbound {
        tenant: "acme".into(),
        method: http::Method::POST,
        path: PathSegments::from_decoded(std::iter::empty::<&str>()),
        query: None,
        headers,
        body: bytes::Bytes::from_static(BODY.as_bytes()),
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
        mask_phones: true,
        max_depth: 32,
    }
}

/// Polls a future that never waits (the gateway above answers at once) to its end.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the adapter waited on a gateway that answers at once"),
    }
}

/// Runs `op` `iterations` times and prints ns and allocations per run.
fn measure(name: &str, iterations: u64, mut op: impl FnMut()) {
    op();
    let allocations = GLOBAL.allocations();
    let start = Instant::now();
    for _ in 0..iterations {
        op();
    }
    let elapsed = start.elapsed();
    let allocations = GLOBAL.allocations() - allocations;
    println!(
        "{name:<10} {:>9.0} ns/op {:>7.1} allocations/op",
        elapsed.as_nanos() as f64 / iterations as f64,
        allocations as f64 / iterations as f64,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let part = args.next().unwrap_or_else(|| "all".into());
    let envelope: Envelope = serde_json::from_str(MENU_ANSWER).expect("the menu answer reads");
    let answer = Answer::Action(envelope);
    let gateway = Answering(answer.clone());
    let adapter = Voicenter::new();
    let limits = Limits::default();
    let run = |which: &str| part == "all" || part == which;

    if run("parse") {
        measure("parse", iterations, || {
            let call = xmlrpc::parse_call(BODY.trim_start(), &limits);
            assert!(call.is_ok(), "the fixture parses: {call:?}");
        });
    }
    if run("validate") {
        let validate = DECISION_POINTS[0].validate;
        measure("validate", iterations, || {
            assert!(validate(&answer).is_ok());
        });
    }
    if run("handle") {
        measure("handle", iterations, || {
            let handled = ready(adapter.handle(&gateway, inbound()));
            assert_eq!(handled.outcome, "ok");
            assert!(handled.response.body().windows(4).any(|w| w == b"MENU"));
        });
    }
}
