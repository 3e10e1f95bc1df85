//! `ctips-sim`: runs the CTIPS simulator by hand (see docs/ctips-sim.md).

use std::time::Duration;

use ctips_sim::{Sim, SimConfig};

const HELP: &str = "\
ctips-sim: a simulator of Aspect Unified IP's CTI Portal Server (CTIPS)

USAGE:
    ctips-sim [OPTIONS]
    ctips-sim client SERVER_URL [--user NAME:PASSWORD]
        a demo CTIPS client: hosts a callback service, opens a session (OpenConnection,
        AddMessageClass x4, OnLine), prints its SessionId and then one line per callback

OPTIONS:
    --ports P1,P2,...        ports of the CTIPS servers, one server per port (default 8170,8171;
                             0 = any free port)
    --control-port P         port of the JSON control API (default 8179; 0 = any free port)
    --tenant N               TenantId served (default 1)
    --user NAME:PASSWORD     accepted credentials (repeatable; default: any)
    --heartbeat-interval S   seconds between Heartbeat calls (default 30)
    --missed-heartbeats N    failed Heartbeat calls that dispose of a session (default 3)
    --max-clients N          sessions per server (default 10)
    --route-timeout S        RouteTimeout of inbound calls (default 10)
    --callback-timeout-ms N  timeout of each callback to the client (default 5000)
    --tolerant               read requests leniently (default: strict, as WCF)
    -h, --help               print this help

Every server answers at http://127.0.0.1:PORT/Aspect.UnifiedIP.EDK.CTIPortalService.
The control API (http://127.0.0.1:CONTROL/) drives scenarios and injects faults:
    GET  /state  /requests  /callbacks        POST /calls  /calls/{id}/hangup
    POST /servers/{i}/fault  /link-status  /strict  /publish
Logs go to stderr (RUST_LOG=info by default).
";

fn parse_args(args: &[String]) -> Result<(SimConfig, u16), String> {
    let mut cfg = SimConfig {
        ports: vec![8170, 8171],
        ..SimConfig::default()
    };
    let mut control = 8179u16;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        let num = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: '{v}' is not a number"))
        };
        match a.as_str() {
            "--ports" => {
                let v = val("--ports")?;
                cfg.ports = v
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<u16>()
                            .map_err(|_| format!("--ports: '{p}' is not a port"))
                    })
                    .collect::<Result<_, _>>()?;
                if cfg.ports.is_empty() {
                    return Err("--ports: at least one port".into());
                }
            }
            "--control-port" => {
                let v = val(a)?;
                control = v
                    .parse()
                    .map_err(|_| format!("--control-port: '{v}' is not a port"))?;
            }
            "--tenant" => cfg.tenant_id = num(a, val(a)?)? as i64,
            "--user" => {
                let v = val(a)?;
                let (u, p) = v.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
                cfg.users.push((u.to_string(), p.to_string()));
            }
            "--heartbeat-interval" => {
                cfg.heartbeat_interval = Duration::from_secs(num(a, val(a)?)?.max(1))
            }
            "--missed-heartbeats" => {
                let n = num(a, val(a)?)?;
                if !(1..=999).contains(&n) {
                    return Err(
                        "--missed-heartbeats: 1 to 999 (as the Server Configurator enforces)"
                            .into(),
                    );
                }
                cfg.missed_heartbeats = n as u32;
            }
            "--max-clients" => cfg.max_clients = num(a, val(a)?)? as usize,
            "--route-timeout" => cfg.route_timeout_secs = num(a, val(a)?)? as i64,
            "--callback-timeout-ms" => {
                cfg.callback_timeout = Duration::from_millis(num(a, val(a)?)?.max(1))
            }
            "--tolerant" => cfg.strict = false,
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    Ok((cfg, control))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return;
    }
    if args.first().map(String::as_str) == Some("client") {
        std::process::exit(run_client(&args[1..]).await);
    }
    let (cfg, control_port) = match parse_args(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ctips-sim: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let sim = match Sim::start(cfg).await {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            eprintln!("ctips-sim: cannot start the servers: {e}");
            std::process::exit(1);
        }
    };
    let control = match ctips_sim::control::serve(sim.clone(), control_port).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ctips-sim: cannot start the control API: {e}");
            std::process::exit(1);
        }
    };
    // One line per server, then the control URL, on stdout: scripts read these.
    for (i, url) in sim.urls().iter().enumerate() {
        println!("server {i} {url}");
    }
    println!("control http://{control}/");
    wait_for_signal().await;
    sim.shutdown().await;
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

fn show(v: &ctips_sim::wire::V) -> String {
    use ctips_sim::wire::V;
    match v {
        V::Nil => "nil".into(),
        V::Arr(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(",")),
        V::Obj(f) => format!(
            "{{{}}}",
            f.iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.text(),
    }
}

async fn run_client(args: &[String]) -> i32 {
    use ctips_sim::testkit::{CallbackServer, Client};
    let Some(url) = args.first() else {
        eprintln!("ctips-sim client: SERVER_URL is required");
        return 2;
    };
    let (mut user, mut password) = ("user".to_string(), "pass".to_string());
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--user", Some(v)) => match v.split_once(':') {
                Some((u, p)) => (user, password) = (u.to_string(), p.to_string()),
                None => {
                    eprintln!("ctips-sim client: --user takes NAME:PASSWORD");
                    return 2;
                }
            },
            _ => {
                eprintln!("ctips-sim client: unknown option {a}");
                return 2;
            }
        }
    }
    let cb = match CallbackServer::start().await {
        Ok(cb) => cb,
        Err(e) => {
            eprintln!("ctips-sim client: cannot start the callback service: {e}");
            return 1;
        }
    };
    let mut c = Client::new(url);
    match c.open(&cb.url(), &user, &password).await {
        Ok(r) if r.session_id.is_some() => {}
        Ok(r) => {
            eprintln!(
                "ctips-sim client: OpenConnection failed: HTTP {} {}",
                r.status, r.body
            );
            return 1;
        }
        Err(e) => {
            eprintln!("ctips-sim client: OpenConnection failed: {e}");
            return 1;
        }
    }
    for class in [
        "EventCategoryAgent",
        "EventCategoryCall",
        "EventCategoryRoute",
        "EventCategorySystem",
    ] {
        let f = ctips_sim::wire::fields([("MessageClass", ctips_sim::wire::V::Enum(class.into()))]);
        if let Err(e) = c.send("AddMessageClass", f).await {
            eprintln!("ctips-sim client: AddMessageClass failed: {e}");
            return 1;
        }
    }
    if let Err(e) = c.send("OnLine", Default::default()).await {
        eprintln!("ctips-sim client: OnLine failed: {e}");
        return 1;
    }
    println!("session {} callback {}", c.session_id, cb.url());
    let mut seen = 0usize;
    loop {
        let next = tokio::select! {
            r = cb.wait_for(Duration::from_secs(3600), |rs| (rs.len() > seen).then(|| rs[seen..].to_vec())) => r,
            _ = wait_for_signal() => None,
        };
        let Some(batch) = next else {
            break;
        };
        seen += batch.len();
        for r in batch {
            match &r.event {
                Some(kind) => {
                    let f: Vec<String> = r
                        .fields
                        .iter()
                        .filter(|(k, _)| {
                            !matches!(
                                k.as_str(),
                                "EventCategory" | "EventType" | "SiteId" | "TenantId" | "SwitchId"
                            )
                        })
                        .map(|(k, v)| format!("{k}={}", show(v)))
                        .collect();
                    println!("event {kind} {}", f.join(" "));
                }
                None => println!("{} {}", r.op, r.session),
            }
        }
    }
    let _ = c.send("OffLine", Default::default()).await;
    let _ = c.send("CloseConnection", Default::default()).await;
    0
}
