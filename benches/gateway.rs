//! End-to-end benchmark of the gateway, in one process and one run (`cargo bench --bench
//! gateway`). Prints one table; each figure sits beside its target with PASS or MISS. A MISS
//! does not fail the process: benchmarks inform, tests assert.
//!
//! Everything shares one multi-threaded tokio runtime (one worker per core): the gateway under
//! test, the customer's webhook (a bare hyper server), the bare pass-through proxy used as a
//! baseline, and the load generators (reqwest clients with connection pools).
//!
//! 1. Decision-path overhead at a fixed open-loop rate: GET_IVR_ACTION (the seed's XML-RPC body,
//!    a unique IVR_UNIQUE_ID per call) through the gateway, and the very same webhook request
//!    the gateway makes (captured body and signature headers) sent straight to the webhook at
//!    the same rate. Overhead = gateway percentile minus bare-webhook percentile.
//! 2. Closed-loop throughput with N clients: through the gateway, and through a minimal hyper
//!    proxy that receives the same XML body and forwards the same JSON to the same webhook.
//! 3. CDR ingest: closed loop, distinct JSON CDRs to /voicenter/acme/cdr; only `{"err":0`
//!    answers (sent after the commit's fsync) count. Deliveries run concurrently.
//! 4. PTK AddInteraction (SOAP 1.1, a distinct ClientId and Contact each): closed loop; only
//!    `107000` answers count, sent after the interaction, its licence counter and its
//!    `ptk.interaction.created` event are committed (fsynced).
//! 5. OpenScape assignment latency: an unmonitored IVR Hold call is set up and enqueued over
//!    JSON, QueryCallStatus waits, and the customer assigns it through the command API; the
//!    time from sending the assignment to the IVR's poll answering `2` (the assignment's
//!    commit and the waiter's wake-up included), one call at a time.
//! 6. CTIPS (a second gateway holding a session on the in-process CTIPS simulator): inbound
//!    calls at 200/s each raise a RouteRequest; latency from the simulator publishing the
//!    RouteRequest to it receiving the RouteSelect (decision webhook, RouteSelect request,
//!    the simulator's millisecond timestamps). Then PublishCTIEvent acknowledged per second:
//!    closed loop, a distinct agent per event, each answered after its commit (fsync).
//! 7. For context: fdatasync latency of the disk under the state directory.
//!
//! 8. The resident set size of the process with 10,000 live calls (decisions on distinct
//!    calls, each call's row live until its expiry).
//!
//! `IVRGATE_BENCH_SECS` changes the length of each measured phase (default 5);
//! `IVRGATE_BENCH_PHASES` runs only the named phases (comma-separated: `overhead`,
//! `throughput`, `cdr`, `ptk`, `openscape`, `ctips`, `pg`, `rss`; all by default).
//! `IVRGATE_BENCH_PROFILE=gateway` (or `1`) runs only the gateway's closed-loop decision
//! phase, `IVRGATE_BENCH_PROFILE=passthrough` only the pass-through's, for `perf` or
//! callgrind; with `IVRGATE_BENCH_REQUESTS=N` that phase ends after N answers instead of after
//! `IVRGATE_BENCH_SECS`, so two runs with different N give instructions per request.

/// The same allocator as the daemon (src/main.rs), so the figures are the daemon's, wrapped to
/// count allocations (an increment of a per-thread counter each: the allocations per request
/// in the table).
#[global_allocator]
static GLOBAL: ivrgate_countalloc::Counting<mimalloc::MiMalloc> =
    ivrgate_countalloc::Counting(mimalloc::MiMalloc);

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const MENU_ANSWER: &str = r#"{"action":"menu","prompt":"p","menu":"m","max_digits":1}"#;
const RATE: u32 = 1_000;
const CLIENTS: usize = 32;
const CDR_CLIENTS: usize = 64;
const WARMUP: Duration = Duration::from_millis(700);

const LIVE_CALLS: u64 = 10_000;

const TARGET_OVERHEAD_P99_MS: f64 = 1.0;
const TARGET_RATIO: f64 = 0.50;
/// CDR acknowledgements per second, in multiples of the one-fsync-per-ack ceiling.
const TARGET_CDR_CEILINGS: f64 = 2.0;

/// Whether `name` is among the phases `IVRGATE_BENCH_PHASES` selects (all when unset).
fn selected(name: &str) -> bool {
    match std::env::var("IVRGATE_BENCH_PHASES") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|p| p.trim() == name),
        _ => true,
    }
}

/// Allocations made by the whole process so far (every thread).
fn allocations() -> u64 {
    GLOBAL.allocations()
}

fn phase() -> Duration {
    let secs = std::env::var("IVRGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(5.0);
    Duration::from_secs_f64(secs)
}

// ---------------------------------------------------------------------------------------------
// Servers

/// Serves HTTP/1 on `listener` with `handler` until the runtime ends.
fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn respond(content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// One decision webhook request as the gateway sent it: replayed in the bare measurements.
#[derive(Clone)]
struct CapturedDecision {
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// The customer's webhook: `/decide` answers a menu at once, anything else (event
/// deliveries) answers 200 at once.
struct Webhook {
    addr: SocketAddr,
    decisions: AtomicU64,
    events: AtomicU64,
    captured: OnceLock<CapturedDecision>,
}

async fn start_webhook() -> Arc<Webhook> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind webhook");
    let hook = Arc::new(Webhook {
        addr: listener.local_addr().expect("addr"),
        decisions: AtomicU64::new(0),
        events: AtomicU64::new(0),
        captured: OnceLock::new(),
    });
    let h = hook.clone();
    serve(listener, move |req: Request<Incoming>| {
        let h = h.clone();
        async move {
            let decision = req.uri().path() == "/decide";
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if decision {
                h.decisions.fetch_add(1, Ordering::Relaxed);
                if h.captured.get().is_none() {
                    let headers = parts
                        .headers
                        .iter()
                        .filter(|(k, _)| {
                            k.as_str() == "content-type" || k.as_str().starts_with("webhook-")
                        })
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let _ = h.captured.set(CapturedDecision { headers, body });
                }
                respond(
                    "application/json",
                    Bytes::from_static(MENU_ANSWER.as_bytes()),
                )
            } else {
                h.events.fetch_add(1, Ordering::Relaxed);
                respond("application/json", Bytes::from_static(b"{}"))
            }
        }
    });
    hook
}

/// The baseline: a minimal hyper proxy that reads the legacy XML body, forwards the same
/// JSON webhook request the gateway makes, and returns the webhook's body. Its client is
/// hyper's pooled client with the settings of the gateway's decision client (which is the
/// same client, over rustls where the URL is https).
async fn start_passthrough(webhook: SocketAddr, captured: CapturedDecision) -> SocketAddr {
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
    let uri: hyper::Uri = format!("http://{webhook}/decide").parse().expect("uri");
    let captured = Arc::new(captured);
    serve(listener, move |req: Request<Incoming>| {
        let client = client.clone();
        let uri = uri.clone();
        let captured = captured.clone();
        async move {
            let _xml = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut forward = Request::post(uri);
            for (k, v) in &captured.headers {
                forward = forward.header(k.as_str(), v.as_str());
            }
            let body = match forward.body(Full::new(captured.body.clone())) {
                Ok(request) => match client.request(request).await {
                    Ok(r) => r
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default(),
                    Err(_) => Bytes::new(),
                },
                Err(_) => Bytes::new(),
            };
            respond("text/xml", body)
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The gateway

struct Gateway {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_gateway(dir: &Path, webhook: SocketAddr) -> Gateway {
    start_gateway_on(dir, webhook, "").await
}

/// A gateway with `storage` lines added to its `[storage]` table (PostgreSQL's).
async fn start_gateway_on(dir: &Path, webhook: SocketAddr, storage: &str) -> Gateway {
    let toml = format!(
        r#"listen = "127.0.0.1:0"
state_dir = "{dir}"

[storage]
min_free_bytes = 0
{storage}

[[tenants]]
id = "acme"
webhook_url = "http://{webhook}/events"
decision_url = "http://{webhook}/decide"
webhook_secret = "{SECRET}"
decisions_per_second = 100000
deliveries_per_second = 100000

[tenants.ptk]
tenants = ["Bench"]
licences = 1000000
licence_requests_per_window = 100000000

[[tenants.ptk.segments]]
tenant = "Bench"
name = "Bench_Queue"
"#,
        dir = dir.display()
    );
    let config = ivrgate::config::Config::parse(&toml, Path::new("bench.toml"))
        .expect("parse config")
        .validate(ivrgate::adapters::all())
        .expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel();
    let join = tokio::spawn(ivrgate::run(
        config,
        listener,
        async move {
            let _ = stop_rx.await;
        },
        ivrgate::Options::default(),
        move |_| {
            let _ = started_tx.send(());
        },
    ));
    tokio::time::timeout(Duration::from_secs(10), started_rx)
        .await
        .expect("gateway started in time")
        .expect("gateway started");
    Gateway { addr, stop, join }
}

/// The seed's XML-RPC GET_IVR_ACTION with its IVR_UNIQUE_ID replaced by `{ID}`.
fn ivr_action_template() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/voicenter/get_ivr_action.xmlrpc.xml");
    let xml = std::fs::read_to_string(&path).expect("read fixture");
    let name = xml
        .find("<name>IVR_UNIQUE_ID</name>")
        .expect("IVR_UNIQUE_ID");
    let open = name + xml[name..].find("<string>").expect("<string>") + "<string>".len();
    let close = open + xml[open..].find("</string>").expect("</string>");
    format!("{}{{ID}}{}", &xml[..open], &xml[close..])
}

fn cdr_body(id: u64) -> String {
    serde_json::json!({
        "caller": "0544444444", "target": "0722776772", "time": 1_700_000_000,
        "duration": 12, "ivruniqueid": format!("bench-cdr-{id:020}"),
        "type": "Incoming Call", "status": "ANSWER", "did": "0722776772",
        "queueid": 0, "dialtime": 3,
    })
    .to_string()
}

fn load_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

// ---------------------------------------------------------------------------------------------
// Load generators

type MakeRequest = Arc<dyn Fn(u64) -> reqwest::RequestBuilder + Send + Sync>;
type Check = fn(&[u8]) -> bool;

struct OpenLoop {
    latencies: Vec<Duration>,
    errors: u64,
    offered_rate: f64,
}

/// Sends at a fixed rate whatever the answers do (a new task per request); latency is from
/// the moment the request task starts to the last byte of the answer.
async fn open_loop(rate: u32, duration: Duration, make: MakeRequest, check: Check) -> OpenLoop {
    let period = Duration::from_secs(1) / rate;
    let total = (duration.as_secs_f64() * rate as f64) as u64;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let request = make(i);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = request.send().await.ok()?;
            let ok = response.status().is_success();
            let body = response.bytes().await.ok()?;
            let elapsed = sent.elapsed();
            (ok && check(&body)).then_some(elapsed)
        }));
    }
    let offered_rate = total as f64 / started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok(Some(latency)) => latencies.push(latency),
            _ => errors += 1,
        }
    }
    latencies.sort();
    OpenLoop {
        latencies,
        errors,
        offered_rate,
    }
}

struct ClosedLoop {
    per_second: f64,
    errors: u64,
    /// Process CPU time per counted answer, in microseconds.
    cpu_us: f64,
    /// Allocations (and reallocations) of the whole process per counted answer.
    allocs: f64,
}

/// `clients` tasks, each sending its next request as soon as the previous one is answered.
async fn closed_loop(
    clients: usize,
    duration: Duration,
    make: MakeRequest,
    check: Check,
) -> ClosedLoop {
    closed_loop_upto(clients, duration, u64::MAX, make, check).await
}

/// [`closed_loop`] that also stops sending once `requests` were sent.
async fn closed_loop_upto(
    clients: usize,
    duration: Duration,
    requests: u64,
    make: MakeRequest,
    check: Check,
) -> ClosedLoop {
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu();
    let allocs_before = allocations();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, ok, errors, make) = (next.clone(), ok.clone(), errors.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let request = make(i);
                let good = match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|b| check(&b)).unwrap_or(false)
                    }
                    _ => false,
                };
                if Instant::now() > deadline {
                    break; // answered after the window: not counted either way
                }
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let cpu = process_cpu().saturating_sub(cpu_before);
    let allocs = allocations().saturating_sub(allocs_before);
    let elapsed = started.elapsed().min(duration);
    let ok = ok.load(Ordering::Relaxed);
    ClosedLoop {
        per_second: ok as f64 / elapsed.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
        cpu_us: cpu.as_secs_f64() * 1e6 / ok.max(1) as f64,
        allocs: allocs as f64 / ok.max(1) as f64,
    }
}

fn ptk_add_body(i: u64) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><AddInteraction><Tenant>Bench</Tenant><Segment>Bench_Queue</Segment><Contact>{contact}</Contact><Options><ClientId>bench-{i}</ClientId></Options></AddInteraction></s:Body></s:Envelope>"#,
        contact = 5_550_000_000u64 + i
    )
}

fn is_ptk_ok(body: &[u8]) -> bool {
    body.windows(6).any(|w| w == b"107000")
}

/// Posts one OpenScape function call as JSON; returns the answer.
async fn ivr_call(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> Option<serde_json::Value> {
    let body = serde_json::json!({"method": method, "params": params});
    let response = client.post(url).json(&body).send().await.ok()?;
    response.json().await.ok()
}

fn return_code(answer: &Option<serde_json::Value>) -> i64 {
    answer
        .as_ref()
        .and_then(|a| a["ReturnCode"].as_i64())
        .unwrap_or(i64::MIN)
}

/// IVR Hold calls one after another on one channel: set up and enqueue, let QueryCallStatus
/// wait, assign through the command API, time the wait's answer.
async fn openscape_assignments(
    client: &reqwest::Client,
    addr: SocketAddr,
    duration: Duration,
) -> OpenLoop {
    let url = format!("http://{addr}/openscape/acme/bench-6060");
    let deadline = Instant::now() + duration;
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    while Instant::now() < deadline && latencies.len() < 2_000 {
        use serde_json::json;
        let init = ivr_call(
            client,
            &url,
            "Initialize",
            json!(["6060", "6000@deerhurst", 10000]),
        );
        if return_code(&init.await) != 0 {
            errors += 1;
            continue;
        }
        let _ = ivr_call(client, &url, "SetCallInfo", json!(["9055551234", "12345"])).await;
        let info = ivr_call(
            client,
            &url,
            "QueryCallInfo",
            json!([
                "6060",
                ">CallID",
                ">originalANI",
                ">originalDNIS",
                ">UUID",
                ">Visits",
                ">FMNQ",
                ">InternalANI",
                ">InternalDNIS",
                "1;"
            ]),
        )
        .await;
        let Some(call_id) = info
            .as_ref()
            .and_then(|a| a["CallID"].as_str())
            .map(str::to_owned)
        else {
            errors += 1;
            continue;
        };
        let queued = ivr_call(
            client,
            &url,
            "Enqueue",
            json!([
                call_id,
                1,
                "Sales",
                12,
                "bench",
                ">EstWaitTime",
                ">CallInQueue",
                ""
            ]),
        )
        .await;
        if return_code(&queued) != 0 {
            errors += 1;
            continue;
        }
        let poll = {
            let (client, url, call_id) = (client.clone(), url.clone(), call_id.clone());
            tokio::spawn(async move {
                let answer = ivr_call(
                    &client,
                    &url,
                    "QueryCallStatus",
                    json!([call_id, 5000, ">Extension", ">PositionInQueue"]),
                )
                .await;
                (answer, Instant::now())
            })
        };
        // Let the poll reach its wait before the assignment is sent.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let sent = Instant::now();
        let assigned = client
            .post(format!(
                "http://{addr}/api/acme/openscape/calls/{call_id}/assign"
            ))
            .json(&json!({"extension": "4711"}))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        match poll.await {
            Ok((answer, at)) if assigned && return_code(&answer) == 2 => {
                latencies.push(at.saturating_duration_since(sent));
            }
            _ => errors += 1,
        }
    }
    latencies.sort();
    OpenLoop {
        offered_rate: latencies.len() as f64 / duration.as_secs_f64(),
        latencies,
        errors,
    }
}

fn is_menu(body: &[u8]) -> bool {
    // The rendered XML-RPC answer names the action; the platform default fallback does not
    // render MENU, so this also catches fallbacks.
    body.windows(4).any(|w| w == b"MENU")
}

fn is_menu_json(body: &[u8]) -> bool {
    body.starts_with(br#"{"action":"menu""#)
}

fn is_ack(body: &[u8]) -> bool {
    body.starts_with(br#"{"err":0"#)
}

/// CPU time (user + system) of this whole process so far: gateway, webhook, proxy and load
/// generator together. Linux only; zero elsewhere.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Field 14 is index 11 after the name (state is field 3, index 0); 100 ticks/s on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The 1-minute load average, to show whether something else was using the machine.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// fdatasync latency of the disk under `dir`: 4 KiB appends, each followed by fdatasync (what
/// a WAL commit with `synchronous=FULL` costs at least once per group).
fn fsync_probe(dir: &Path, rounds: usize) -> Vec<Duration> {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).expect("probe file");
    let block = [0x5au8; 4096];
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        out.push(t.elapsed());
    }
    let _ = std::fs::remove_file(dir.join("fsync-probe"));
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------

struct Row {
    name: String,
    value: String,
    target: String,
    verdict: &'static str,
}

fn row(name: &str, value: String, target: &str, pass: Option<bool>) -> Row {
    Row {
        name: name.to_owned(),
        value,
        target: target.to_owned(),
        verdict: match pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "",
        },
    }
}

// ---------------------------------------------------------------------------------------------
// CTIPS

const CTIPS_RATE: u32 = 200;
const CTIPS_TOKEN: &str = "bench-callback-token-0001";

struct CtipsFigures {
    latencies_ms: Vec<f64>,
    routed: usize,
    offered: usize,
    events: ClosedLoop,
}

/// A customer decision endpoint answering every RouteRequest with a service.
async fn start_route_webhook() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    serve(listener, |req: Request<Incoming>| async move {
        let _ = req.into_body().collect().await;
        respond(
            "application/json",
            Bytes::from_static(br#"{"action":"enqueue","queue":"4"}"#),
        )
    });
    addr
}

async fn ctips_phase(dir: &Path, client: &reqwest::Client, secs: Duration) -> CtipsFigures {
    let sim = ctips_sim::Sim::start(ctips_sim::SimConfig {
        ports: vec![0],
        heartbeat_interval: Duration::from_secs(5),
        route_timeout_secs: 10,
        ..ctips_sim::SimConfig::default()
    })
    .await
    .expect("simulator");
    let hook = start_route_webhook().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let toml = format!(
        r#"listen = "127.0.0.1:0"
state_dir = "{dir}"

[server]
advertise_url = "http://{addr}"

[storage]
min_free_bytes = 0

[[tenants]]
id = "acme"
webhook_url = "http://{hook}/events"
webhook_secret = "{SECRET}"
decisions_per_second = 100000
deliveries_per_second = 100000

[tenants.ctips]
servers = ["{server}"]
username = "bench"
password = "bench"
callback_token = "{CTIPS_TOKEN}"
heartbeat_interval_s = 5
"#,
        dir = dir.display(),
        server = sim.url(0)
    );
    let config = ivrgate::config::Config::parse(&toml, Path::new("ctips.toml"))
        .expect("parse config")
        .validate(ivrgate::adapters::all())
        .expect("valid config");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let join = tokio::spawn(ivrgate::run(
        config,
        listener,
        async move {
            let _ = stop_rx.await;
        },
        ivrgate::Options::default(),
        |_| {},
    ));
    let online = sim
        .wait_for(Duration::from_secs(20), |s| {
            s.sessions()
                .into_iter()
                .find(|x| x.online)
                .map(|x| x.callback_url)
        })
        .await
        .expect("CTIPS session online");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Route requests at a fixed rate.
    let period = Duration::from_secs(1) / CTIPS_RATE;
    let total = (secs.as_secs_f64() * CTIPS_RATE as f64) as usize;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        calls.push(sim.inbound_call(3, &format!("{i:010}"), "8000", Some(10)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let published: std::collections::HashMap<i64, u128> = sim
        .callbacks()
        .into_iter()
        .filter(|c| c.event.as_deref() == Some("CTIRouteRequest"))
        .map(|c| (c.call_id, c.at_ms))
        .collect();
    let mut latencies_ms = Vec::new();
    for r in sim.requests().into_iter().filter(|r| r.op == "RouteSelect") {
        let call = r
            .body
            .split("<a:CallId>")
            .nth(1)
            .and_then(|t| t.split('<').next())
            .and_then(|t| t.parse::<i64>().ok());
        if let Some(at) = call.and_then(|c| published.get(&c)) {
            latencies_ms.push(r.at_ms.saturating_sub(*at) as f64);
        }
    }
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    // Events acknowledged per second: distinct agents, so no two events share an entity.
    let make: MakeRequest = {
        let client = client.clone();
        Arc::new(move |i| {
            let body = format!(
                "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
<PublishCTIEvent xmlns=\"http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08\">\
<ctiEvent i:type=\"a:CTIAgentStateChange\" xmlns:a=\"http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08\" \
xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><a:EventCategory>EventCategoryAgent</a:EventCategory>\
<a:EventType>AgentStateChange</a:EventType><a:SiteId>1</a:SiteId><a:TenantId>1</a:TenantId>\
<a:RequestId>0</a:RequestId><a:SwitchId>1</a:SwitchId><a:ServiceId>3</a:ServiceId>\
<a:AgentId>{}</a:AgentId><a:AgentState>Idle</a:AgentState><a:CallId>0</a:CallId><a:ServiceIds/>\
</ctiEvent></PublishCTIEvent></s:Body></s:Envelope>",
                100_000 + i
            );
            client
                .post(&online)
                .header("content-type", "text/xml; charset=utf-8")
                .header(
                    "soapaction",
                    "\"http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08/CTIEventService/PublishCTIEvent\"",
                )
                .body(body)
        })
    };
    let events = closed_loop(CDR_CLIENTS, secs, make, is_publish_ok).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
    CtipsFigures {
        routed: latencies_ms.len(),
        latencies_ms,
        offered: calls.len(),
        events,
    }
}

fn is_publish_ok(body: &[u8]) -> bool {
    body.windows(32)
        .any(|w| w == b"<PublishCTIEventResult>0</Publis")
}

fn percentile_ms(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(threads));
    runtime.shutdown_timeout(Duration::from_secs(5));
}

async fn bench(threads: usize) {
    let secs = phase();
    let load_before = loadavg();
    let tmp = tempfile::tempdir().expect("tempdir");
    eprintln!(
        "ivrgate bench: {threads} runtime workers, {:.1} s per phase, state dir {}",
        secs.as_secs_f64(),
        tmp.path().display()
    );

    let fsync = tokio::task::spawn_blocking({
        let dir = tmp.path().to_owned();
        move || fsync_probe(&dir, 300)
    })
    .await
    .expect("fsync probe");

    let webhook = start_webhook().await;
    let gateway = start_gateway(tmp.path(), webhook.addr).await;
    let client = load_client();
    let template: Arc<str> = ivr_action_template().into();
    let run_id = std::process::id();

    let gateway_decision: MakeRequest = {
        let client = client.clone();
        let url = format!("http://{}/voicenter/acme", gateway.addr);
        let template = template.clone();
        Arc::new(move |i| {
            client
                .post(&url)
                .header("content-type", "text/xml")
                .body(template.replace("{ID}", &format!("bench{run_id:08x}{i:020}")))
        })
    };

    // A fixed number of answers for the profile phase (and then a fixed-count warm-up, so two
    // runs differ only by the requests measured).
    let requests = std::env::var("IVRGATE_BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok());
    let warmup = |clients: usize, make: MakeRequest, check: Check| match requests {
        Some(_) => closed_loop_upto(clients, Duration::from_secs(3600), 500, make, check),
        None => closed_loop_upto(clients, WARMUP, u64::MAX, make, check),
    };

    // Warm up the gateway (pools, SQLite pages, allocator) and capture one webhook request.
    eprintln!("warming up");
    let warm = warmup(4, gateway_decision.clone(), is_menu).await;
    assert!(warm.per_second > 0.0, "the gateway answered no decision");
    let captured = webhook
        .captured
        .get()
        .cloned()
        .expect("a decision reached the webhook");
    let bare_decision: MakeRequest = {
        let client = client.clone();
        let url = format!("http://{}/decide", webhook.addr);
        let captured = captured.clone();
        Arc::new(move |_| {
            let mut request = client.post(&url).body(captured.body.clone());
            for (k, v) in &captured.headers {
                request = request.header(k, v);
            }
            request
        })
    };
    let _ = open_loop(RATE, WARMUP, bare_decision.clone(), is_menu_json).await;
    let proxy = start_passthrough(webhook.addr, captured.clone()).await;
    let proxy_decision: MakeRequest = {
        let client = client.clone();
        let url = format!("http://{proxy}/voicenter/acme");
        let template = template.clone();
        Arc::new(move |i| {
            client
                .post(&url)
                .header("content-type", "text/xml")
                .body(template.replace("{ID}", &format!("proxy{run_id:08x}{i:020}")))
        })
    };

    // For profiling (`perf record`, callgrind): only one closed-loop decision phase.
    if let Some(which) = std::env::var_os("IVRGATE_BENCH_PROFILE") {
        let requests = requests.unwrap_or(u64::MAX);
        let (name, make, check): (&str, MakeRequest, Check) = if which == "passthrough" {
            let _ = warmup(CLIENTS, proxy_decision.clone(), is_menu_json).await;
            ("pass-through", proxy_decision, is_menu_json)
        } else {
            ("gateway", gateway_decision.clone(), is_menu)
        };
        eprintln!("profile: {name} decisions, {CLIENTS} clients, closed loop");
        let window = if requests == u64::MAX {
            secs
        } else {
            Duration::from_secs(3600)
        };
        let only = closed_loop_upto(CLIENTS, window, requests, make, check).await;
        eprintln!(
            "{:.0} req/s, errors {}, {:.0} us CPU/req, {:.1} allocations/req",
            only.per_second, only.errors, only.cpu_us, only.allocs
        );
        return;
    }

    let mut rows = Vec::new();

    // 1. Overhead at a fixed rate: the bare webhook first, then the gateway, same rate.
    let mut bare = None;
    if selected("overhead") || selected("pg") {
        eprintln!("1/8 decision latency at {RATE}/s, open loop");
        let b = open_loop(RATE, secs, bare_decision.clone(), is_menu_json).await;
        if selected("overhead") {
            let through = open_loop(RATE, secs, gateway_decision.clone(), is_menu).await;
            rows.extend(overhead_rows(&b, &through));
        }
        bare = Some(b);
    }

    // 2. Throughput beside a bare pass-through proxy.
    let mut passthrough_rate = None;
    if selected("throughput") {
        eprintln!("2/8 decision throughput, {CLIENTS} clients, closed loop");
        let _ = closed_loop(CLIENTS, WARMUP, proxy_decision.clone(), is_menu_json).await;
        let proxy_tp = closed_loop(CLIENTS, secs, proxy_decision.clone(), is_menu_json).await;
        let gateway_tp = closed_loop(CLIENTS, secs, gateway_decision.clone(), is_menu).await;
        let ratio = gateway_tp.per_second / proxy_tp.per_second;
        passthrough_rate = Some(proxy_tp.per_second);
        rows.push(row(
            &format!("throughput via gateway ({CLIENTS} clients)"),
            throughput(&gateway_tp),
            "",
            None,
        ));
        rows.push(row(
            &format!("throughput via bare hyper pass-through ({CLIENTS} clients)"),
            throughput(&proxy_tp),
            "",
            None,
        ));
        rows.push(row(
            "  allocations per request (gateway / pass-through, whole process)",
            format!("{:.0} / {:.0}", gateway_tp.allocs, proxy_tp.allocs),
            "",
            None,
        ));
        rows.push(row(
            "gateway / pass-through",
            format!("{:.0} %", ratio * 100.0),
            ">= 50 %",
            Some(ratio >= TARGET_RATIO),
        ));
    }

    // 3. CDR ingest, acknowledged after fsync, deliveries running alongside.
    if selected("cdr") {
        eprintln!("3/8 CDR ingest, {CDR_CLIENTS} clients, closed loop");
        let cdr: MakeRequest = {
            let client = client.clone();
            let url = format!("http://{}/voicenter/acme/cdr", gateway.addr);
            let offset = 1_000_000_000u64;
            Arc::new(move |i| {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(cdr_body(offset + i))
            })
        };
        let _ = closed_loop(CDR_CLIENTS, WARMUP, cdr.clone(), is_ack).await;
        let delivered_before = webhook.events.load(Ordering::Relaxed);
        let cdr_tp = closed_loop(CDR_CLIENTS, secs, cdr, is_ack).await;
        let delivered = webhook.events.load(Ordering::Relaxed) - delivered_before;
        let ceiling = 1000.0 / percentile(&fsync, 50.0);
        rows.push(row(
            &format!("CDR acks after fsync ({CDR_CLIENTS} clients)"),
            format!(
                "{:.0} acks/s, non-acks {}, {:.0} us CPU/ack, {:.0} allocations/ack, {:.1} cores busy",
                cdr_tp.per_second,
                cdr_tp.errors,
                cdr_tp.cpu_us,
                cdr_tp.allocs,
                cdr_tp.cpu_us * cdr_tp.per_second / 1e6
            ),
            ">= 2x ceiling",
            Some(cdr_tp.per_second >= TARGET_CDR_CEILINGS * ceiling),
        ));
        rows.push(row(
            "  acks per fsync-per-ack ceiling (acks/s / (1 / fsync p50))",
            format!("{:.2} x", cdr_tp.per_second / ceiling),
            "",
            None,
        ));
        rows.push(row(
            "  deliveries completed during the CDR phase",
            format!("{:.0} /s", delivered as f64 / secs.as_secs_f64()),
            "",
            None,
        ));
    }

    // 4. PTK AddInteraction.
    if selected("ptk") {
        eprintln!("4/8 PTK AddInteraction, {CDR_CLIENTS} clients, closed loop");
        let ptk_add: MakeRequest = {
            let client = client.clone();
            let url = format!("http://{}/ptk/acme", gateway.addr);
            Arc::new(move |i| {
                client
                    .post(&url)
                    .header("content-type", "text/xml; charset=utf-8")
                    .header("SOAPAction", "\"AddInteraction\"")
                    .body(ptk_add_body(i))
            })
        };
        let _ = closed_loop(CDR_CLIENTS, WARMUP, ptk_add.clone(), is_ptk_ok).await;
        let ptk_tp = closed_loop(CDR_CLIENTS, secs, ptk_add, is_ptk_ok).await;
        rows.push(row(
            &format!("PTK AddInteraction acks after fsync ({CDR_CLIENTS} clients)"),
            format!(
                "{:.0} /s, non-107000 {}, {:.0} us CPU/ack",
                ptk_tp.per_second, ptk_tp.errors, ptk_tp.cpu_us
            ),
            "",
            None,
        ));
    }

    // 5. OpenScape: assignment to the waiting QueryCallStatus.
    if selected("openscape") {
        eprintln!("5/8 OpenScape assignment latency, one call at a time");
        let assign = openscape_assignments(&client, gateway.addr, secs).await;
        rows.push(row(
            "OpenScape assign -> QueryCallStatus answer p50 / p99",
            format!(
                "{:.3} / {:.3} ms over {} calls, failures {}",
                percentile(&assign.latencies, 50.0),
                percentile(&assign.latencies, 99.0),
                assign.latencies.len(),
                assign.errors
            ),
            "",
            None,
        ));
    }

    // 6. CTIPS, on a gateway of its own.
    if selected("ctips") {
        eprintln!("6/8 CTIPS RouteRequest -> RouteSelect at {CTIPS_RATE}/s, events acknowledged");
        let ctips_dir = tmp.path().join("ctips");
        std::fs::create_dir_all(&ctips_dir).expect("ctips dir");
        let ctips = ctips_phase(&ctips_dir, &client, secs).await;
        rows.push(row(
            &format!("CTIPS RouteRequest -> RouteSelect p50 / p99 ({CTIPS_RATE}/s)"),
            format!(
                "{:.0} / {:.0} ms (1 ms resolution), {} of {} routed",
                percentile_ms(&ctips.latencies_ms, 50.0),
                percentile_ms(&ctips.latencies_ms, 99.0),
                ctips.routed,
                ctips.offered
            ),
            "",
            None,
        ));
        rows.push(row(
            &format!("CTIPS events acknowledged after fsync ({CDR_CLIENTS} clients)"),
            format!(
                "{:.0} /s, non-acks {}, {:.0} us CPU/ack",
                ctips.events.per_second, ctips.events.errors, ctips.events.cpu_us
            ),
            "",
            None,
        ));
    }

    // 8. Resident set size with LIVE_CALLS live calls: a fresh gateway (its own state
    // directory), LIVE_CALLS decisions on distinct calls, then the process's VmRSS (gateway,
    // webhook, load generator) beside its VmRSS before them.
    if selected("rss") {
        eprintln!("8/8 RSS with {LIVE_CALLS} live calls");
        let dir = tmp.path().join("rss");
        std::fs::create_dir_all(&dir).expect("rss dir");
        let fresh = start_gateway(&dir, webhook.addr).await;
        let make: MakeRequest = {
            let client = client.clone();
            let url = format!("http://{}/voicenter/acme", fresh.addr);
            let template = template.clone();
            Arc::new(move |i| {
                client
                    .post(&url)
                    .header("content-type", "text/xml")
                    .body(template.replace("{ID}", &format!("rss{run_id:08x}{i:020}")))
            })
        };
        let before = rss_kib();
        let made =
            closed_loop_upto(CLIENTS, Duration::from_secs(120), LIVE_CALLS, make, is_menu).await;
        let after = rss_kib();
        rows.push(row(
            &format!("RSS with {LIVE_CALLS} live calls (whole process; before them)"),
            format!(
                "{:.1} MiB ({:.1} MiB), errors {}",
                after as f64 / 1024.0,
                before as f64 / 1024.0,
                made.errors
            ),
            "",
            None,
        ));
        let _ = fresh.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), fresh.join).await;
    }

    let _ = gateway.stop.send(());
    match tokio::time::timeout(Duration::from_secs(15), gateway.join).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("gateway stopped with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("gateway task failed: {e}"),
        Err(_) => eprintln!("gateway did not stop within 15 s"),
    }

    // 7. The same decision and CDR measures on PostgreSQL: one instance, then three on one
    // database (in this process: they share its cores, so the figures show the cost of the
    // shared store, not a scale-out).
    if let (true, Some(bare)) = (selected("pg"), &bare) {
        if !selected("overhead") {
            rows.push(row(
                "bare webhook round-trip p50 / p99",
                format!(
                    "{:.3} / {:.3} ms",
                    percentile(&bare.latencies, 50.0),
                    percentile(&bare.latencies, 99.0)
                ),
                "",
                None,
            ));
        }
        let ceiling = 1000.0 / percentile(&fsync, 50.0);
        rows.extend(
            pg_phases(
                &client,
                &template,
                webhook.addr,
                bare,
                passthrough_rate,
                secs,
                run_id,
                ceiling,
            )
            .await,
        );
    }

    let load_after = loadavg();
    let f50 = percentile(&fsync, 50.0);
    let f99 = percentile(&fsync, 99.0);
    rows.push(row(
        "disk fdatasync (4 KiB append) p50 / p99",
        format!("{f50:.3} / {f99:.3} ms"),
        "",
        None,
    ));
    rows.push(row(
        "  ceiling with one fsync per ack (1 / fsync p50)",
        format!("{:.0} /s", 1000.0 / f50),
        "",
        None,
    ));
    let w0 = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.value.len()).max().unwrap_or(0);
    let w2 = rows
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let line = "-".repeat(w0 + w1 + w2 + 14);
    println!();
    println!(
        "ivrgate gateway bench ({threads} cores, {:.0} s phases, open loop {RATE}/s, \
         load average {load_before} before, {load_after} after)",
        secs.as_secs_f64()
    );
    println!(
        "CPU/req and allocations/req are the whole process (gateway, webhook, proxy, load \
         generator) per answer"
    );
    println!("{line}");
    println!(
        "{:<w0$}  {:>w1$}  {:<w2$}  result",
        "measure", "value", "target"
    );
    println!("{line}");
    for r in &rows {
        println!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            r.name, r.value, r.target, r.verdict
        );
    }
    println!("{line}");
}

/// The rows of phase 1: the gateway's percentiles against the bare webhook's.
fn overhead_rows(bare: &OpenLoop, through: &OpenLoop) -> Vec<Row> {
    let (b50, b99) = (
        percentile(&bare.latencies, 50.0),
        percentile(&bare.latencies, 99.0),
    );
    let (g50, g99) = (
        percentile(&through.latencies, 50.0),
        percentile(&through.latencies, 99.0),
    );
    let (o50, o99) = (g50 - b50, g99 - b99);
    vec![
        row(
            "decision overhead p50 (gateway - bare webhook)",
            format!("{o50:.3} ms"),
            "",
            None,
        ),
        row(
            "decision overhead p99 (gateway - bare webhook)",
            format!("{o99:.3} ms"),
            "<= 1 ms",
            Some(o99 <= TARGET_OVERHEAD_P99_MS),
        ),
        row(
            "decision end-to-end p50 / p99 via gateway",
            format!("{g50:.3} / {g99:.3} ms"),
            "",
            None,
        ),
        row(
            "bare webhook round-trip p50 / p99",
            format!("{b50:.3} / {b99:.3} ms"),
            "",
            None,
        ),
        row(
            "  open-loop rate offered (gateway / bare)",
            format!(
                "{:.0} / {:.0} req/s, errors {} / {}",
                through.offered_rate, bare.offered_rate, through.errors, bare.errors
            ),
            "1000/s",
            None,
        ),
    ]
}

fn throughput(tp: &ClosedLoop) -> String {
    format!(
        "{:.0} req/s, errors {}, {:.0} us CPU/req, {:.1} cores busy",
        tp.per_second,
        tp.errors,
        tp.cpu_us,
        tp.cpu_us * tp.per_second / 1e6
    )
}

/// This process's resident set size (`VmRSS`), in KiB; 0 where `/proc` has none.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// Decision overhead (open loop at [`RATE`], against the bare webhook measured before) and
/// CDR acknowledgements (closed loop, beside the same disk's one-fsync-per-ack `ceiling`) on
/// a fresh PostgreSQL database, with one instance and with three sharing it; requests are
/// spread over the instances in turn. Skipped (one row saying so) when no PostgreSQL
/// answers (`IVRGATE_TEST_PG`, default 127.0.0.1:5432).
#[allow(clippy::too_many_arguments)] // the run's shared figures, passed as they are
async fn pg_phases(
    client: &reqwest::Client,
    template: &Arc<str>,
    webhook: SocketAddr,
    bare: &OpenLoop,
    passthrough_rate: Option<f64>,
    secs: Duration,
    run_id: u32,
    ceiling: f64,
) -> Vec<Row> {
    let Some(db) = ivrgate::store::postgres::testing::TestDb::create("bench").await else {
        return vec![row("PostgreSQL", "skipped: no server".into(), "", None)];
    };
    let c = &db.settings.config;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let url = format!(
        "host={host} port={} user={} dbname={} sslmode=disable",
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_user().unwrap_or("postgres"),
        db.name
    );
    let lines = format!("backend = \"postgres\"\nurl = \"{url}\"\npool_size = 16\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gateways = vec![start_gateway_on(dir.path(), webhook, &lines).await];
    let (b50, b99) = (
        percentile(&bare.latencies, 50.0),
        percentile(&bare.latencies, 99.0),
    );
    let mut rows = Vec::new();
    for (n, label) in [(1usize, "1 instance"), (3, "3 instances")] {
        while gateways.len() < n {
            gateways.push(start_gateway_on(dir.path(), webhook, &lines).await);
        }
        let addrs: Arc<Vec<SocketAddr>> = Arc::new(gateways.iter().map(|g| g.addr).collect());
        eprintln!("7/7 PostgreSQL, {label}: decisions at {RATE}/s, then CDR ingest");
        let decision: MakeRequest = {
            let (client, template, addrs) = (client.clone(), template.clone(), addrs.clone());
            Arc::new(move |i| {
                let addr = addrs[i as usize % addrs.len()];
                client
                    .post(format!("http://{addr}/voicenter/acme"))
                    .header("content-type", "text/xml")
                    .body(template.replace("{ID}", &format!("pg{n}{run_id:08x}{i:020}")))
            })
        };
        let _ = closed_loop(4, WARMUP, decision.clone(), is_menu).await;
        let through = open_loop(RATE, secs, decision.clone(), is_menu).await;
        let decision_tp = closed_loop(CLIENTS, secs, decision, is_menu).await;
        let cdr: MakeRequest = {
            let (client, addrs) = (client.clone(), addrs.clone());
            let offset = 2_000_000_000u64 * n as u64;
            Arc::new(move |i| {
                let addr = addrs[i as usize % addrs.len()];
                client
                    .post(format!("http://{addr}/voicenter/acme/cdr"))
                    .header("content-type", "application/json")
                    .body(cdr_body(offset + i))
            })
        };
        let _ = closed_loop(CDR_CLIENTS, WARMUP, cdr.clone(), is_ack).await;
        let cdr_tp = closed_loop(CDR_CLIENTS, secs, cdr, is_ack).await;
        let (g50, g99) = (
            percentile(&through.latencies, 50.0),
            percentile(&through.latencies, 99.0),
        );
        rows.push(row(
            &format!("PostgreSQL, {label}: decision overhead p50 / p99"),
            format!(
                "{:.3} / {:.3} ms, errors {}",
                g50 - b50,
                g99 - b99,
                through.errors
            ),
            "",
            None,
        ));
        rows.push(row(
            &format!("PostgreSQL, {label}: throughput ({CLIENTS} clients)"),
            format!(
                "{}, {:.0} allocations/req{}",
                throughput(&decision_tp),
                decision_tp.allocs,
                passthrough_rate
                    .map(|p| format!(
                        ", {:.0} % of pass-through",
                        100.0 * decision_tp.per_second / p
                    ))
                    .unwrap_or_default()
            ),
            "",
            None,
        ));
        rows.push(row(
            &format!("PostgreSQL, {label}: CDR acks after commit ({CDR_CLIENTS} clients)"),
            format!(
                "{:.0} acks/s, non-acks {}, {:.0} us CPU/ack",
                cdr_tp.per_second, cdr_tp.errors, cdr_tp.cpu_us
            ),
            ">= 2x ceiling",
            Some(cdr_tp.per_second >= TARGET_CDR_CEILINGS * ceiling),
        ));
        rows.push(row(
            "  acks per fsync-per-ack ceiling (acks/s / (1 / fsync p50))",
            format!("{:.2} x", cdr_tp.per_second / ceiling),
            "",
            None,
        ));
    }
    for gateway in gateways {
        let _ = gateway.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), gateway.join).await;
    }
    db.drop_db().await;
    rows
}
