//! `--gateway URL`: the same platform scripts against a running ivrgate (a service started
//! with `ivrgate serve`), for one of its configured tenants. The webhooks then go where that
//! tenant's configuration sends them and happen inside the service, so the simulator shows
//! the platform's side, and what the service's admin API says of the call's events (the
//! tenant's queue: pending, dead, the last error). The service's log has each decision.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::mpsc;

use super::call::Gateway;
use super::{Output, Platform, Scenario, Sim, EXIT_FAILED, EXIT_USAGE};

/// How long the simulator waits for the service to deliver the call's events.
const EVENTS_WAIT: Duration = Duration::from_secs(30);

/// A running gateway and what its tenant needs.
#[derive(Debug, Clone)]
pub struct Running {
    /// Its base URL (`http://127.0.0.1:8080`, `https://user:pass@gw.example:8443`).
    pub url: String,
    pub tenant: String,
    pub path_token: Option<String>,
    pub command_token: Option<String>,
    pub admin_token: Option<String>,
    /// CA certificates to trust for an https gateway.
    pub ca_file: Option<PathBuf>,
}

/// Plays the scenario against the running gateway; the exit status.
pub async fn simulate(scenario: Scenario, running: Running, out: &mut Output) -> u8 {
    if scenario.platform == Platform::Ctips {
        out.fail("--gateway covers voicenter, openscape and ptk: a running gateway's CTIPS calls come from the CTIPS session its own configuration opens");
        return EXIT_USAGE;
    }
    let (base, basic) = match split_credentials(&running.url) {
        Ok(parts) => parts,
        Err(why) => {
            out.fail(&why);
            return EXIT_USAGE;
        }
    };
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(path) = &running.ca_file {
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) => {
                out.fail(&format!("cannot read --ca-file {}: {e}", path.display()));
                return EXIT_USAGE;
            }
        };
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) => {
                for cert in certs {
                    http = http.add_root_certificate(cert);
                }
            }
            Err(e) => {
                out.fail(&format!("--ca-file {}: {e}", path.display()));
                return EXIT_USAGE;
            }
        }
    }
    let http = match http.build() {
        Ok(h) => h,
        Err(e) => {
            out.fail(&format!("cannot build the HTTP client: {e}"));
            return EXIT_FAILED;
        }
    };
    match http.get(format!("{base}/readyz")).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            out.fail(&format!(
                "the gateway at {} is not ready: /readyz answered {}",
                crate::redact::url(&base),
                r.status()
            ));
            return EXIT_FAILED;
        }
        Err(e) => {
            out.fail(&format!(
                "cannot reach the gateway at {}: {}",
                crate::redact::url(&base),
                crate::failure::describe(&e, Duration::from_secs(30))
            ));
            return EXIT_FAILED;
        }
    }
    // Nothing is observed from outside: the channel stays empty.
    let (_, rx) = mpsc::unbounded_channel();
    let gw = Gateway {
        base,
        tenant: running.tenant,
        path_token: running.path_token,
        basic,
        command_token: running.command_token,
        admin_token: running.admin_token,
        handle: None,
        target: None,
    };
    let mut sim = Sim::new(scenario, gw, http, rx, out);
    sim.header();
    let baseline = queue(&sim).await.ok();
    let played = match sim.scenario.platform {
        Platform::Voicenter => super::voicenter::play(&mut sim).await,
        Platform::Openscape => super::openscape::play(&mut sim).await,
        Platform::Ptk => super::ptk::play(&mut sim).await,
        Platform::Ctips => Err("CTIPS is not simulated through a running gateway".into()),
    };
    if let Err(why) = played {
        sim.finding(why);
    }
    sim.external_dead = baseline.and_then(|q| q["dead"].as_u64());
    sim.wait_events().await;
    sim.summary()
}

/// `http://user:pass@host:port/` → (`http://host:port`, (user, pass)).
fn split_credentials(url: &str) -> Result<(String, Option<(String, String)>), String> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("--gateway {}: {e}", crate::redact::url(url)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "--gateway {}: not an http(s) URL",
            crate::redact::url(url)
        ));
    }
    let basic = (!parsed.username().is_empty()).then(|| {
        (
            percent_decoded(parsed.username()),
            percent_decoded(parsed.password().unwrap_or("")),
        )
    });
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok((parsed.as_str().trim_end_matches('/').to_owned(), basic))
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A GET on the admin API.
async fn admin(sim: &Sim<'_>, path: &str) -> Result<Value, String> {
    let mut request = sim.http().get(format!("{}/admin/{path}", sim.gw.base));
    if let Some(token) = &sim.gw.admin_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("admin API: {e}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("admin API: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "admin API /admin/{path} answered {status}: {} (give --admin-token, or run the simulator on the gateway's host when it has none)",
            super::call::clip(&body, 200)
        ));
    }
    serde_json::from_str(&body).map_err(|e| format!("admin API /admin/{path}: {e}"))
}

/// The tenant's row of `GET /admin/queues`.
async fn queue(sim: &Sim<'_>) -> Result<Value, String> {
    let all = admin(sim, "queues").await?;
    all["queues"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["tenant"] == sim.gw.tenant.as_str()))
        .cloned()
        .ok_or_else(|| format!("the gateway has no tenant {:?}", sim.gw.tenant))
}

/// Waits for the service to deliver the call's events, then prints its queue's state.
pub async fn wait_events(sim: &mut Sim<'_>) {
    let until = Instant::now() + EVENTS_WAIT;
    let row = loop {
        match queue(sim).await {
            Ok(row) if row["pending"].as_u64() == Some(0) || Instant::now() >= until => break row,
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(why) => {
                sim.finding(why);
                return;
            }
        }
    };
    let field = |name: &str| match &row[name] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    sim.say(&format!(
        "  admin API, tenant {}: endpoint {}, pending {}, dead {}, next attempt in {} s, last error {}, breaker {}",
        sim.gw.tenant,
        field("endpoint"),
        field("pending"),
        field("dead"),
        field("next_attempt_in_s"),
        field("last_error"),
        field("breaker")
    ));
    let pending = row["pending"].as_u64().unwrap_or(0);
    if pending > 0 {
        sim.finding(format!(
            "{pending} event(s) of tenant {} still waiting for delivery after {} s (last error: {})",
            sim.gw.tenant,
            EVENTS_WAIT.as_secs(),
            field("last_error")
        ));
    }
    let dead = row["dead"].as_u64().unwrap_or(0);
    let before = sim.external_dead.unwrap_or(dead);
    if dead > before {
        sim.finding(format!(
            "{} event(s) of tenant {} went dead during the call (last error: {})",
            dead - before,
            sim.gw.tenant,
            field("last_error")
        ));
    }
}

/// Waits until the service has stored an event of `webhook_type` for the tenant since the
/// call began (the admin API's event list); `false` after `limit`.
pub async fn wait_for(sim: &mut Sim<'_>, webhook_type: &str, limit: Duration) -> bool {
    let since = SystemTime::now() - sim.elapsed() - Duration::from_secs(1);
    let until = Instant::now() + limit;
    while Instant::now() < until {
        for status in ["pending", "delivered", "dead"] {
            let path = format!(
                "events?tenant={}&type={webhook_type}&status={status}&limit=1000",
                sim.gw.tenant
            );
            match admin(sim, &path).await {
                Ok(list) => {
                    let found = list["events"].as_array().is_some_and(|events| {
                        events.iter().any(|e| {
                            e["created_at"]
                                .as_str()
                                .and_then(|t| {
                                    time::OffsetDateTime::parse(
                                        t,
                                        &time::format_description::well_known::Rfc3339,
                                    )
                                    .ok()
                                })
                                .is_some_and(|t| SystemTime::from(t) >= since)
                        })
                    });
                    if found {
                        sim.say(&format!(
                            "     event {webhook_type} stored by the gateway (admin API)"
                        ));
                        return true;
                    }
                }
                Err(why) => {
                    sim.finding(why);
                    return false;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_gateway_url_become_basic_auth() {
        let (base, basic) =
            split_credentials("https://vc%40acme:p%3Ass@gw.example:8443/").expect("url");
        assert_eq!(base, "https://gw.example:8443");
        assert_eq!(basic, Some(("vc@acme".into(), "p:ss".into())));
        let (base, basic) = split_credentials("http://127.0.0.1:8080").expect("url");
        assert_eq!(base, "http://127.0.0.1:8080");
        assert_eq!(basic, None);
        assert!(split_credentials("ftp://x").is_err());
    }
}
