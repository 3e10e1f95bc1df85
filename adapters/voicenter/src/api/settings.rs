//! The tenant's `[tenants.voicenter_api]` section: base URLs, the secret `code`, limits.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;

/// Seed hosts, the defaults of the base URLs.
pub const DEFAULT_CLICK2CALL_URL: &str =
    "https://api.voicenter.co.il/ForwardDialer/click2call.aspx";
pub const DEFAULT_CDR_URL: &str = "https://api1.voicenter.co.il/hub/cdr/";
pub const DEFAULT_DIALER_URL: &str = "https://api.voicenter.co.il/ForwardDialer/Dialer";
pub const DEFAULT_MONITOR_URL: &str = "https://monitor.voicenter.co.il/comet/API";
pub const DEFAULT_LOGIN_URL: &str = "https://betaapi.voicenter.co.il/UserLogin/SetStatusFromAPI";

/// Entity kind of stored idempotency keys.
pub const IDEMPOTENCY_KIND: &str = "voicenter.idempotency";

/// One tenant's `[tenants.voicenter_api]`, secrets resolved.
pub struct ApiSettings {
    pub(super) code: String,
    pub click2call_url: String,
    pub cdr_url: String,
    pub dialer_url: String,
    pub monitor_url: String,
    pub login_url: String,
    pub timeout: Duration,
    pub retries: u32,
    pub queue_wait: Duration,
    pub bulk_max_rows: usize,
    pub bulk_chunk_rows: usize,
    /// Destination prefixes allowed for calls ivrgate places (`None`: any).
    pub allow_destinations: Option<Vec<String>>,
    /// The §7 active-calls poller: its interval (`None`: off) and its request cap.
    pub poll_interval: Option<Duration>,
    pub poll_max_requests_per_min: u32,
    pub(super) limiter: DefaultDirectRateLimiter,
    pub(super) queue: tokio::sync::Semaphore,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("code", &"***")
            .field("click2call_url", &self.click2call_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub(super) const KEYS: &[&str] = &[
    "code",
    "click2call_url",
    "cdr_url",
    "dialer_url",
    "monitor_url",
    "login_url",
    "timeout_ms",
    "retries",
    "rate_per_s",
    "burst",
    "queue",
    "queue_wait_ms",
    "bulk_max_rows",
    "bulk_chunk_rows",
    "allow_destinations",
    "poll_interval_ms",
    "poll_max_requests_per_min",
];

pub(super) fn resolve_secret(source: &str) -> Result<String, String> {
    if let Some(name) = source.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
    } else if let Some(path) = source.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("cannot read {path}: {e}"))
    } else {
        Err("must be a secret source, env:NAME or file:/path (never the code itself)".into())
    }
}

impl ApiSettings {
    /// Reads the section (`Value::Null`: the tenant does not use the APIs).
    pub fn from_json(value: &Value) -> Result<Option<ApiSettings>, Vec<String>> {
        let map = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            _ => return Err(vec!["[voicenter_api] must be a table".into()]),
        };
        let mut problems = Vec::new();
        for key in map.keys() {
            if !KEYS.contains(&key.as_str()) {
                problems.push(format!("voicenter_api: unknown key {key:?}"));
            }
        }
        let text = |name: &str, default: &str, problems: &mut Vec<String>| match map.get(name) {
            None => default.to_owned(),
            Some(Value::String(s)) if s.starts_with("https://") || s.starts_with("http://") => {
                s.trim_end_matches('/').to_owned() + if name == "cdr_url" { "/" } else { "" }
            }
            Some(_) => {
                problems.push(format!("voicenter_api.{name} must be an http(s) URL"));
                default.to_owned()
            }
        };
        let int =
            |name: &str, default: u64, min: u64, max: u64, problems: &mut Vec<String>| match map
                .get(name)
            {
                None => default,
                Some(v) => match v.as_u64().filter(|n| (min..=max).contains(n)) {
                    Some(n) => n,
                    None => {
                        problems.push(format!(
                            "voicenter_api.{name} must be an integer from {min} to {max}"
                        ));
                        default
                    }
                },
            };
        let code = match map.get("code") {
            Some(Value::String(source)) => match resolve_secret(source) {
                Ok(code) if !code.trim().is_empty() => code.trim().to_owned(),
                Ok(_) => {
                    problems.push("voicenter_api.code is empty".into());
                    String::new()
                }
                Err(why) => {
                    problems.push(format!("voicenter_api.code {why}"));
                    String::new()
                }
            },
            _ => {
                problems.push("voicenter_api.code is required (env:NAME or file:/path)".into());
                String::new()
            }
        };
        let allow_destinations = match map.get("allow_destinations") {
            None => None,
            Some(Value::Array(items)) => {
                let prefixes: Option<Vec<String>> = items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                            .map(str::to_owned)
                    })
                    .collect();
                if prefixes.is_none() {
                    problems.push(
                        "voicenter_api.allow_destinations holds digit prefixes, e.g. \"9723\""
                            .into(),
                    );
                }
                prefixes
            }
            Some(_) => {
                problems.push("voicenter_api.allow_destinations is an array of prefixes".into());
                None
            }
        };
        let settings = ApiSettings {
            click2call_url: text("click2call_url", DEFAULT_CLICK2CALL_URL, &mut problems),
            cdr_url: text("cdr_url", DEFAULT_CDR_URL, &mut problems),
            dialer_url: text("dialer_url", DEFAULT_DIALER_URL, &mut problems),
            monitor_url: text("monitor_url", DEFAULT_MONITOR_URL, &mut problems),
            login_url: text("login_url", DEFAULT_LOGIN_URL, &mut problems),
            timeout: Duration::from_millis(int("timeout_ms", 10_000, 100, 120_000, &mut problems)),
            retries: int("retries", 2, 0, 5, &mut problems) as u32,
            queue_wait: Duration::from_millis(int(
                "queue_wait_ms",
                2_000,
                0,
                60_000,
                &mut problems,
            )),
            bulk_max_rows: int("bulk_max_rows", 10_000, 1, 100_000, &mut problems) as usize,
            bulk_chunk_rows: int("bulk_chunk_rows", 500, 1, 10_000, &mut problems) as usize,
            allow_destinations,
            poll_interval: map
                .contains_key("poll_interval_ms")
                .then(|| int("poll_interval_ms", 10_000, 1_000, 3_600_000, &mut problems))
                .map(Duration::from_millis),
            poll_max_requests_per_min: int("poll_max_requests_per_min", 12, 1, 600, &mut problems)
                as u32,
            limiter: {
                let rate = int("rate_per_s", 5, 1, 10_000, &mut problems) as u32;
                let burst = int("burst", 10, 1, 10_000, &mut problems) as u32;
                let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
                RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
            },
            queue: tokio::sync::Semaphore::new(int("queue", 20, 0, 10_000, &mut problems) as usize),
            code,
        };
        if problems.is_empty() {
            Ok(Some(settings))
        } else {
            Err(problems)
        }
    }

    /// Whether `destination` may be called (the allowlist, when there is one).
    pub fn allows(&self, destination: &str) -> bool {
        let digits: String = destination
            .trim_start_matches('+')
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .collect();
        match &self.allow_destinations {
            None => true,
            Some(prefixes) => prefixes.iter().any(|p| digits.starts_with(p.as_str())),
        }
    }
}
