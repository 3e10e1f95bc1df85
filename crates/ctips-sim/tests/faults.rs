//! Fault injection per server: kill, hang, slow, refuse, stop heartbeats; LinkStatus.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{hb_cfg, online, sim, WAIT};
use ctips_sim::testkit::{CallbackServer, Client};
use ctips_sim::wire::Fields;
use ctips_sim::{Fault, Sim};

#[tokio::test]
async fn kill_closes_the_port_and_disposes_sessions_and_none_revives_it() {
    let sim = sim().await;
    let (mut c0, _cb0) = online(&sim, 0).await;
    let (mut c1, _cb1) = online(&sim, 1).await;
    sim.set_fault(0, Fault::Kill).await.unwrap();
    assert_eq!(sim.fault(0), Fault::Kill);
    // connection refused
    let err = c0.send("OffLine", Fields::new()).await.unwrap_err();
    assert!(!err.is_empty());
    assert!(tokio::net::TcpStream::connect(sim.addr(0).unwrap())
        .await
        .is_err());
    // server 0's session is gone, server 1's is not
    let d = sim.disposed();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].server, d[0].reason.as_str()), (0, "killed"));
    let (r, _) = c1.send("OffLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
    // revived on the same port, stateless: the old session is unknown, a new one works
    sim.set_fault(0, Fault::None).await.unwrap();
    let (r, _) = c0.send("OnLine", Fields::new()).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidSessionId"));
    let cb = CallbackServer::start().await.unwrap();
    let mut fresh = Client::new(&sim.url(0));
    fresh.register(&cb.url()).await.unwrap();
}

#[tokio::test]
async fn hang_answers_nothing_until_lifted() {
    let sim = Sim::start(hb_cfg()).await.unwrap();
    let (c, cb) = online(&sim, 0).await;
    cb.wait_for(WAIT, |r| r.iter().find(|x| x.op == "Heartbeat").map(|_| ()))
        .await
        .unwrap();
    sim.set_fault(0, Fault::Hang).await.unwrap();
    let url = sim.url(0);
    let sid = c.session_id.clone();
    let pending = tokio::spawn(async move {
        let mut c = Client::new(&url);
        c.session_id = sid;
        c.send("OffLine", Fields::new()).await
    });
    // the request arrives and is logged, but stays unanswered
    sim.wait_for(WAIT, |s| {
        s.requests().iter().find(|r| r.op == "OffLine").map(|_| ())
    })
    .await
    .unwrap();
    let hb_before = cb.received().iter().filter(|r| r.op == "Heartbeat").count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished());
    let off = sim
        .requests()
        .into_iter()
        .find(|r| r.op == "OffLine")
        .unwrap();
    assert_eq!(off.status, 0);
    // a hung server sends no heartbeats either (at most one already in flight)
    assert!(cb.received().iter().filter(|r| r.op == "Heartbeat").count() <= hb_before + 1);
    assert_eq!(
        sim.sessions().len(),
        1,
        "a hung server does not dispose sessions"
    );
    sim.set_fault(0, Fault::None).await.unwrap();
    let (r, _) = pending.await.unwrap().unwrap();
    assert_eq!(r.result, Some(0));
    let n = cb.received().iter().filter(|r| r.op == "Heartbeat").count();
    cb.wait_for(WAIT, |r| {
        (r.iter().filter(|x| x.op == "Heartbeat").count() > n).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn slow_delays_every_answer() {
    let sim = sim().await;
    let (mut c, _cb) = online(&sim, 0).await;
    sim.set_fault(0, Fault::Slow { delay_ms: 400 })
        .await
        .unwrap();
    let t = Instant::now();
    let (r, _) = c.send("OffLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
    assert!(t.elapsed() >= Duration::from_millis(400));
    // the other server is not slowed, and lifting the fault restores this one
    sim.set_fault(0, Fault::None).await.unwrap();
    let (r, _) = c.send("OnLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
}

#[tokio::test]
async fn refuse_answers_503_and_keeps_sessions() {
    let sim = sim().await;
    let (mut c, _cb) = online(&sim, 0).await;
    sim.set_fault(0, Fault::Refuse).await.unwrap();
    let (r, _) = c.send("OffLine", Fields::new()).await.unwrap();
    assert_eq!(r.status, 503);
    let cb = CallbackServer::start().await.unwrap();
    let mut other = Client::new(&sim.url(0));
    assert_eq!(other.open(&cb.url(), "u", "p").await.unwrap().status, 503);
    sim.set_fault(0, Fault::None).await.unwrap();
    let (r, _) = c.send("OffLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
}

#[tokio::test]
async fn stop_heartbeats_keeps_the_session_but_sends_none() {
    let sim = Sim::start(hb_cfg()).await.unwrap();
    let (mut c, cb) = online(&sim, 0).await;
    cb.wait_for(WAIT, |r| r.iter().find(|x| x.op == "Heartbeat").map(|_| ()))
        .await
        .unwrap();
    sim.set_fault(0, Fault::StopHeartbeats).await.unwrap();
    // let any heartbeat already in flight land, then none more arrive over several intervals
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = cb.received().iter().filter(|r| r.op == "Heartbeat").count();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cb.received().iter().filter(|r| r.op == "Heartbeat").count(),
        n
    );
    // the session is alive and serves requests; events still flow
    let (r, _) = c.send("OffLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
    let (r, _) = c.send("OnLine", Fields::new()).await.unwrap();
    assert_eq!(r.result, Some(0));
    sim.inject_link_status(Some(0), "CenterCord", "Down");
    let ls = cb
        .wait_event(WAIT, "CTILinkStatus", |_| true)
        .await
        .unwrap();
    assert_eq!(ls.text("ComponentType"), "CenterCord");
    assert_eq!(ls.text("ComponentState"), "Down");
    assert_eq!(ls.text("EventCategory"), "EventCategorySystem");
    // heartbeats resume when the fault is lifted
    sim.set_fault(0, Fault::None).await.unwrap();
    cb.wait_for(WAIT, |r| {
        (r.iter().filter(|x| x.op == "Heartbeat").count() > n).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn link_status_goes_to_the_chosen_server_only() {
    let sim = sim().await;
    let (_c0, cb0) = online(&sim, 0).await;
    let (_c1, cb1) = online(&sim, 1).await;
    sim.inject_link_status(Some(1), "Gateway", "Down");
    sim.inject_link_status(None, "Gateway", "Up");
    let up0 = cb0
        .wait_event(WAIT, "CTILinkStatus", |_| true)
        .await
        .unwrap();
    assert_eq!(up0.text("ComponentState"), "Up");
    let both = cb1
        .wait_for(WAIT, |r| {
            let v: Vec<String> = r
                .iter()
                .filter(|e| e.event.as_deref() == Some("CTILinkStatus"))
                .map(|e| e.text("ComponentState"))
                .collect();
            (v.len() == 2).then_some(v)
        })
        .await
        .unwrap();
    assert_eq!(both, ["Down", "Up"]);
}

#[tokio::test]
async fn a_forgotten_session_gets_no_heartbeats_and_invalid_session_id() {
    let sim = Sim::start(hb_cfg()).await.unwrap();
    let (mut c, cb) = online(&sim, 0).await;
    cb.wait_for(WAIT, |r| r.iter().find(|x| x.op == "Heartbeat").map(|_| ()))
        .await
        .unwrap();
    assert!(sim.forget_session(&c.session_id));
    assert!(!sim.forget_session(&c.session_id));
    assert_eq!(sim.disposed()[0].reason, "forgotten");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = cb.received().iter().filter(|r| r.op == "Heartbeat").count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cb.received().iter().filter(|r| r.op == "Heartbeat").count(),
        n
    );
    let (r, _) = c.send("OffLine", Fields::new()).await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("InvalidSessionId"));
}

#[tokio::test]
async fn max_clients_can_change_at_run_time() {
    let sim = sim().await;
    sim.set_max_clients(0);
    let cb = CallbackServer::start().await.unwrap();
    let mut c = Client::new(&sim.url(0));
    let r = c.open(&cb.url(), "u", "p").await.unwrap();
    assert_eq!(r.fault.as_deref(), Some("MaxNumberClientConnections"));
    assert!(
        cb.received().is_empty(),
        "no StartSession when the limit refuses"
    );
    sim.set_max_clients(10);
    assert!(c
        .open(&cb.url(), "u", "p")
        .await
        .unwrap()
        .session_id
        .is_some());
}
