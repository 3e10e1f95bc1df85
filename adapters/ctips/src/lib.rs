//! The Aspect Unified IP CTI Portal Server (CTIPS) adapter: ivrgate as a CTIPS **client**.
//!
//! A connector (`session.rs`) opens one session per tenant on the customer's CTIPS, keeps it
//! alive on heartbeats and fails over between servers; the callback service
//! (`callback.rs`, `/ctips/{tenant}/{token}/{epoch}`) receives events, heartbeats and
//! StartSession; events become durable webhooks on call, agent, service and session entities
//! (`store.rs`); RouteRequests become `decision.route_request` decisions answered with
//! RouteSelect (`route.rs`). Wire names follow the real service description (`proto.rs`;
//! `docs/ctips.md`, `docs/seed-errata.md` CT-n).

#![forbid(unsafe_code)]

pub mod callback;
pub mod command;
pub mod event;
pub mod live;
pub mod proto;
pub mod route;
pub mod session;
pub mod settings;
pub mod store;
pub mod xml;

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use ivrgate_adapter::{
    Adapter, BoxFuture, Command, CommandReply, ConnectorCtxRef, ConnectorExit, ConnectorSpec,
    DecisionPoint, Gateway, Handled, Inbound, ParsedSettings,
};
use serde_json::Value;

pub use settings::Settings;

/// The adapter's name: path segment, entity kind prefix, metrics label.
pub const NAME: &str = "ctips";

/// The tenant's parsed section: `None` when the tenant does not use CTIPS.
#[derive(Debug, Clone)]
pub struct Parsed(pub Option<Arc<Settings>>);

/// The tenant's CTIPS settings, when it has a `[tenants.ctips]` section.
pub fn settings_for(gw: &dyn Gateway, tenant: &str) -> Option<Arc<Settings>> {
    ivrgate_adapter::settings_of::<Parsed>(gw, tenant, NAME).and_then(|p| p.0.clone())
}

/// The CTIPS adapter.
pub struct Ctips;

impl Adapter for Ctips {
    fn name(&self) -> &'static str {
        NAME
    }

    fn decision_points(&self) -> &'static [DecisionPoint] {
        &route::POINTS
    }

    fn handle<'a>(&'a self, gateway: &'a dyn Gateway, request: Inbound) -> BoxFuture<'a, Handled> {
        Box::pin(async move {
            let settings = settings_for(gateway, &request.tenant);
            callback::handle(gateway, settings.as_deref(), request).await
        })
    }

    fn busy(&self, _gateway: &dyn Gateway, _request: &Inbound) -> Handled {
        // A server fault: CTIPS drops the event (it never replays), but it is told.
        callback::fault(false, "busy, try again", "unknown", "busy")
    }

    fn parse_settings(&self, settings: &Value) -> Result<ParsedSettings, Vec<String>> {
        let parsed = Settings::from_json(settings)?;
        Ok(Arc::new(Parsed(parsed.map(Arc::new))))
    }

    fn keeps_call_state(&self) -> bool {
        true
    }

    /// MakeCall (see `command.rs`).
    fn cannot_originate(&self) -> Option<&'static str> {
        None
    }

    fn command<'a>(
        &'a self,
        gateway: &'a dyn Gateway,
        command: Command,
    ) -> BoxFuture<'a, CommandReply> {
        Box::pin(async move {
            let settings = settings_for(gateway, &command.tenant);
            command::command(gateway, settings.as_deref(), command).await
        })
    }

    fn connectors(&self, _tenant: &str, settings: &ParsedSettings) -> Vec<ConnectorSpec> {
        match settings.clone().downcast::<Parsed>() {
            Ok(parsed) => parsed.0.iter().map(|s| s.spec()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn run_connector(&self, ctx: ConnectorCtxRef) -> BoxFuture<'static, ConnectorExit> {
        Box::pin(session::run(ctx))
    }

    fn authenticates_itself(&self, sub_path: &str) -> bool {
        let segments: Vec<&str> = sub_path.split('/').filter(|s| !s.is_empty()).collect();
        callback::callback_shape(&segments).is_some()
    }
}
