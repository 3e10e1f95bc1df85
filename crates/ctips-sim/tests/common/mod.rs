#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use ctips_sim::testkit::{CallbackServer, Client};
use ctips_sim::{Sim, SimConfig};

/// Generous bound for anything that should happen promptly (never asserted as a time).
pub const WAIT: Duration = Duration::from_secs(20);

pub fn cfg() -> SimConfig {
    SimConfig {
        heartbeat_interval: Duration::from_secs(60),
        missed_heartbeats: 3,
        callback_timeout: Duration::from_secs(2),
        ..SimConfig::default()
    }
}

pub async fn sim() -> Sim {
    Sim::start(cfg()).await.unwrap()
}

/// A registered, online client of server `i` with its own callback service.
pub async fn online(sim: &Sim, i: usize) -> (Client, CallbackServer) {
    let cb = CallbackServer::start().await.unwrap();
    let mut c = Client::new(&sim.url(i));
    c.register(&cb.url()).await.unwrap();
    (c, cb)
}

/// Settings with fast heartbeats (150 ms) for the heartbeat tests.
pub fn hb_cfg() -> SimConfig {
    SimConfig {
        heartbeat_interval: Duration::from_millis(150),
        ..cfg()
    }
}
