//! The Mitel OpenScape Contact Center IVR API adapter (work in progress).

#![forbid(unsafe_code)]

pub mod codes;
pub mod model;
pub mod callback;
pub mod params;

use ivrgate_adapter::{Adapter, BoxFuture, DecisionPoint, Gateway, Handled, Inbound};

/// The vendor name: path segment, metrics label and `vendor` of every event.
pub const VENDOR: &str = "openscape";

pub static DECISION_POINTS: [DecisionPoint; 0] = [];

#[derive(Debug, Default)]
pub struct OpenScape;

impl Adapter for OpenScape {
    fn name(&self) -> &'static str {
        VENDOR
    }

    fn decision_points(&self) -> &'static [DecisionPoint] {
        &DECISION_POINTS
    }

    fn handle<'a>(
        &'a self,
        _gateway: &'a dyn Gateway,
        _request: Inbound,
    ) -> BoxFuture<'a, Handled> {
        Box::pin(async {
            let mut response = http::Response::new(bytes::Bytes::from_static(b"not yet\n"));
            *response.status_mut() = http::StatusCode::NOT_IMPLEMENTED;
            Handled {
                response,
                method: "unknown".into(),
                outcome: "unsupported",
                vendor_call_id: None,
            }
        })
    }
}
