//! What the simulator itself costs under load, so a benchmark through it knows its floor:
//! inbound calls at a fixed rate on an externally routed service, a client (the testkit's,
//! in this process) answering each RouteRequest with a RouteSelect at once. Prints a table:
//! RouteRequest sent -> RouteSelect received (p50, p99, max) and events delivered per second.
//!
//! `cargo run -p ctips-sim --release --example load -- [CALLS_PER_SECOND] [SECONDS]`

use std::time::{Duration, Instant};

use ctips_sim::testkit::{CallbackServer, Client};
use ctips_sim::wire::{fields, V};
use ctips_sim::{Sim, SimConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rate = args.first().copied().unwrap_or(200).max(1);
    let secs = args.get(1).copied().unwrap_or(5).max(1);
    let sim = Sim::start(SimConfig {
        ports: vec![0],
        ..SimConfig::default()
    })
    .await?;
    let cb = CallbackServer::start().await?;
    let mut client = Client::new(&sim.url(0));
    client.register(&cb.url()).await?;

    // responder: every new RouteRequest gets a RouteSelect to service 4
    let responder = {
        let url = sim.url(0);
        let sid = client.session_id.clone();
        let cb_received = std::sync::Arc::new(cb);
        let cbr = cb_received.clone();
        let task = tokio::spawn(async move {
            let mut c = Client::new(&url);
            c.session_id = sid;
            let mut seen = 0usize;
            loop {
                let Some(batch) = cbr
                    .wait_for(Duration::from_secs(30), |rs| {
                        (rs.len() > seen).then(|| rs[seen..].to_vec())
                    })
                    .await
                else {
                    break;
                };
                seen += batch.len();
                for r in batch
                    .into_iter()
                    .filter(|r| r.event.as_deref() == Some("CTIRouteRequest"))
                {
                    let f = fields([
                        ("CallId", V::Int(r.int("CallId"))),
                        ("DestinationAddress", V::Str("4".into())),
                        ("RouteActionType", V::Enum("RouteToService".into())),
                        ("UserData", V::Arr(vec![])),
                    ]);
                    let _ = c.send("RouteSelect", f).await;
                }
            }
        });
        (task, cb_received)
    };

    let total = rate * secs;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for _ in 0..total {
        tick.tick().await;
        sim.inbound_call(3, "5551234", "8001", Some(10));
    }
    let done = sim
        .wait_for(Duration::from_secs(60), |s| {
            (s.route_latencies().len() as u64 >= total).then_some(())
        })
        .await;
    let elapsed = start.elapsed();
    let mut lat: Vec<Duration> = sim.route_latencies().into_iter().map(|(_, d)| d).collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let delivered = sim
        .callbacks()
        .iter()
        .filter(|c| c.op == "PublishCTIEvent" && c.ok)
        .count();
    println!("| calls/s | calls | routed | RR->RS p50 | p99 | max | events delivered/s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {rate} | {total} | {}{} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} |",
        lat.len(),
        if done.is_some() { "" } else { " (timed out)" },
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        delivered as f64 / elapsed.as_secs_f64()
    );
    responder.0.abort();
    Ok(())
}
