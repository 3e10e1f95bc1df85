//! `ctips-sim`: runs the CTIPS simulator by hand (see docs/ctips-sim.md).

use std::time::Duration;

use ctips_sim::{Sim, SimConfig};

const HELP: &str = "\
ctips-sim: a simulator of Aspect Unified IP's CTI Portal Server (CTIPS)

USAGE:
    ctips-sim [OPTIONS]

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
