//! One simulated call in progress ([`Sim`]): what the platform scripts use to talk to the
//! gateway, print and record each step, and read what the core reported through its
//! observer; [`Output`], where it goes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::record;
use super::{Keys, Scenario, Target, EXIT_FINDINGS, EXIT_OK};
use crate::observe::Observed;

/// Where the run is printed, and recorded when asked.
pub struct Output {
    print: Box<dyn FnMut(&str) + Send>,
    pub(super) record: Option<record::Recorder>,
}

impl Output {
    /// Prints to stdout; records to `record` when given.
    pub fn stdout(record: Option<&std::path::Path>) -> Result<Output, String> {
        Ok(Output {
            print: Box::new(|line| println!("{line}")),
            record: record.map(record::Recorder::create).transpose()?,
        })
    }

    pub(super) fn line(&mut self, line: &str) {
        (self.print)(line);
    }

    pub(super) fn fail(&mut self, why: &str) {
        eprintln!("ivrgate simulate: {why}");
    }

    pub(super) fn record(&mut self, entry: Value) {
        if let Some(recorder) = &mut self.record {
            recorder.write(entry);
        }
    }
}

/// A platform's HTTP answer.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The gateway the platform's requests go to: the one run in this process, or a running
/// service (`--gateway`).
pub struct Gateway {
    /// `http://127.0.0.1:PORT` (no trailing `/`).
    pub base: String,
    pub tenant: String,
    /// The tenant's secret path segment, when it has one.
    pub path_token: Option<String>,
    /// HTTP Basic credentials of the platform's requests (from the URL's user info).
    pub basic: Option<(String, String)>,
    /// Bearer token of the command API.
    pub command_token: Option<String>,
    /// Bearer token of the admin API.
    pub admin_token: Option<String>,
    /// The gateway run in this process; `None` for a running service.
    pub handle: Option<crate::Handle>,
    /// Where the in-process gateway sends webhooks; `None` for a running service.
    pub target: Option<Target>,
}

/// One simulated call in progress: the gateway's address, the observations, the output.
pub struct Sim<'o> {
    pub scenario: Scenario,
    pub(super) gw: Gateway,
    observed: mpsc::UnboundedReceiver<Observed>,
    out: &'o mut Output,
    http: reqwest::Client,
    started: Instant,
    pub keys: Keys,
    /// Decisions asked so far in this call.
    pub decisions: u32,
    /// Decision requests the platform made: `hangup_after` and `max_decisions` count these,
    /// since against a running gateway (`--gateway`) no webhook is seen in process.
    asked: u32,
    fallbacks: u32,
    delivered: Vec<String>,
    dead: Vec<String>,
    findings: Vec<String>,
    /// Why a decision's try was not used, by decision id, until the decision is settled.
    why: std::collections::HashMap<String, String>,
    /// The values already given to [`Sim::volatile`].
    volatiles: std::collections::HashSet<String>,
    /// A running gateway's dead events of the tenant before the call (`--gateway`).
    pub(super) external_dead: Option<u64>,
}

impl<'o> Sim<'o> {
    pub(super) fn new(
        scenario: Scenario,
        gw: Gateway,
        http: reqwest::Client,
        observed: mpsc::UnboundedReceiver<Observed>,
        out: &'o mut Output,
    ) -> Sim<'o> {
        let keys = Keys::new(&scenario.keys);
        Sim {
            scenario,
            gw,
            observed,
            out,
            http,
            started: Instant::now(),
            keys,
            decisions: 0,
            asked: 0,
            fallbacks: 0,
            delivered: Vec::new(),
            dead: Vec::new(),
            findings: Vec::new(),
            why: Default::default(),
            volatiles: Default::default(),
            external_dead: None,
        }
    }

    pub(super) fn header(&mut self) {
        let s = &self.scenario;
        let line = match &self.gw.target {
            Some(target) => format!(
                "simulating a call on {} from {} to {}; webhooks to {} (decisions to {})",
                s.platform.as_str(),
                s.caller,
                s.called,
                crate::redact::url(&target.url),
                crate::redact::url(target.decision_url.as_deref().unwrap_or(&target.url)),
            ),
            None => format!(
                "simulating a call on {} from {} to {} through the running gateway at {} (tenant {}); its webhooks go where that tenant's configuration says",
                s.platform.as_str(),
                s.caller,
                s.called,
                crate::redact::url(&self.gw.base),
                self.gw.tenant
            ),
        };
        self.out.line(&line);
        let scenario = serde_json::to_value(&self.scenario).unwrap_or(Value::Null);
        self.out.record(json!({
            "record": record::MAGIC,
            "version": record::VERSION,
            "scenario": scenario,
        }));
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(super) fn at_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The platform does something: printed as a step.
    pub fn step(&mut self, text: &str) {
        let line = format!("  {}: {text}", self.scenario.platform.as_str());
        self.out.line(&line);
        let at = self.at_ms();
        self.out
            .record(json!({"at_ms": at, "kind": "step", "text": text}));
    }

    /// A message between the platform and ivrgate that the simulator did not send itself
    /// (CTIPS, where ivrgate is the client): printed and recorded, not compared by a replay.
    pub fn platform(&mut self, text: &str) {
        self.out.line(&format!("  ~ {text}"));
        let at = self.at_ms();
        self.out
            .record(json!({"at_ms": at, "kind": "platform_event", "text": text}));
    }

    /// A value ivrgate made up for this run that the platform uses from then on (an
    /// OpenScape CallID, a PTK InteractionId or answer Guid): recorded, so a replay compares
    /// the exchange with each such value standing for its counterpart.
    pub fn volatile(&mut self, value: &str) {
        if value.is_empty() || !self.volatiles.insert(value.to_owned()) {
            return;
        }
        let at = self.at_ms();
        self.out
            .record(json!({"at_ms": at, "kind": "volatile", "value": value}));
    }

    /// The caller does something.
    pub fn caller(&mut self, text: &str) {
        self.out.line(&format!("  caller: {text}"));
        let at = self.at_ms();
        self.out
            .record(json!({"at_ms": at, "kind": "caller", "text": text}));
    }

    /// Prints a line as it is.
    pub(super) fn say(&mut self, text: &str) {
        self.out.line(text);
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Something the developer should look at; it makes the exit status 1.
    pub fn finding(&mut self, text: String) {
        self.out.line(&format!("  ! {text}"));
        self.findings.push(text);
    }

    /// The next key press, after the scenario's delay.
    pub async fn press(&mut self) -> String {
        if self.scenario.key_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.scenario.key_delay_ms)).await;
        }
        let (key, scripted) = self.keys.press();
        let how = if scripted {
            ""
        } else {
            " (no scripted key left: the first option)"
        };
        self.caller(&format!("presses {key}{how}"));
        key
    }

    /// Whether the call may ask one more decision; says why not when it may not.
    pub fn may_decide(&mut self) -> bool {
        if let Some(after) = self.scenario.hangup_after {
            if self.asked >= after {
                self.caller(&format!("hangs up after {after} decision(s), as scripted"));
                return false;
            }
        }
        if self.asked >= self.scenario.max_decisions {
            self.finding(format!(
                "the call did not end within {} decisions (max_decisions): the caller hangs up; does your flow loop?",
                self.scenario.max_decisions
            ));
            return false;
        }
        self.asked += 1;
        true
    }

    /// Sends one platform request to the gateway (`path` after the host, e.g.
    /// `/voicenter/sim`), prints and records it with every webhook it caused.
    pub async fn request(
        &mut self,
        label: &str,
        method: http::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let url = format!("{}{}", self.gw.base, path);
        self.out.line(&format!("  -> {label}"));
        let at = self.at_ms();
        self.out.record(json!({
            "at_ms": at, "kind": "platform_request", "label": label, "method": method.as_str(),
            "path": path, "content_type": content_type,
            "body": String::from_utf8_lossy(&body),
        }));
        let mut request = self.http.request(method, &url);
        if path.starts_with("/api/") {
            if let Some(token) = &self.gw.command_token {
                request = request.bearer_auth(token);
            }
        } else if let Some((user, password)) = &self.gw.basic {
            request = request.basic_auth(user, Some(password));
        }
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let sent = request.body(body).send().await;
        let reply = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| format!("reading the gateway's reply to {label}: {e}"))?;
                Reply {
                    status,
                    content_type,
                    body,
                }
            }
            Err(e) => return Err(format!("the gateway did not answer {label}: {e}")),
        };
        // The observations of this request are all in: the core sends them before the
        // adapter answers.
        self.drain();
        let at = self.at_ms();
        self.out.record(json!({
            "at_ms": at, "kind": "platform_reply", "status": reply.status,
            "content_type": reply.content_type, "body": reply.text(),
        }));
        // An XML-RPC answer reads better as the struct it carries.
        let shown = match ivrgate_wire::xmlrpc::parse_response(
            &reply.text(),
            &ivrgate_wire::Limits::default(),
        ) {
            Ok(Ok(params)) if reply.content_type.contains("xml") => format!(
                "(XML-RPC) {}",
                params.first().map(|v| v.to_json()).unwrap_or(Value::Null)
            ),
            _ => soap_body(&reply.text()),
        };
        self.out.line(&format!(
            "  <- {} answered {}: {}",
            self.scenario.platform.as_str(),
            reply.status,
            clip(&shown, 400)
        ));
        Ok(reply)
    }

    /// Prints and records what the core reported so far.
    pub(super) fn drain(&mut self) {
        while let Ok(what) = self.observed.try_recv() {
            self.show(what);
        }
    }

    pub(super) fn show(&mut self, what: Observed) {
        let at = self.at_ms();
        match what {
            Observed::Sent(sent) => {
                let decision = sent.webhook_type.starts_with("decision.");
                if decision {
                    self.decisions += u32::from(sent.attempt == 1);
                }
                let headers: serde_json::Map<String, Value> = sent
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                self.out.line(&format!(
                    "     {} {} {} {} (attempt {} of {})",
                    if decision { "webhook" } else { "event" },
                    sent.webhook_type,
                    sent.id,
                    sent.url,
                    sent.attempt,
                    sent.of
                ));
                self.out.record(json!({
                    "at_ms": at, "kind": "webhook", "id": sent.id, "type": sent.webhook_type,
                    "url": sent.url, "attempt": sent.attempt, "of": sent.of,
                    "headers": headers, "body": String::from_utf8_lossy(&sent.body),
                }));
            }
            Observed::Answered(answered) => {
                let status = answered
                    .status
                    .map_or("no answer".to_owned(), |s| s.to_string());
                let body = answered
                    .body
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                // Deliveries run concurrently: each answer names its event.
                let mut line = if answered.webhook_type.starts_with("decision.") {
                    format!("       {status} in {} ms", answered.elapsed_ms)
                } else {
                    format!(
                        "       {} {}: {status} in {} ms",
                        answered.webhook_type, answered.id, answered.elapsed_ms
                    )
                };
                if let Some(b) = &body {
                    line.push_str(&format!(": {}", clip(b, 400)));
                }
                match answered.outcome.as_str() {
                    "answer" => {}
                    "delivered" => line.push_str(" (delivered)"),
                    "retry" => line.push_str(&format!(
                        " (not delivered: {}; retried in {} s)",
                        answered.error.as_deref().unwrap_or("-"),
                        answered.retry_in_ms.unwrap_or(0) / 1000
                    )),
                    "dead" | "gone" => line.push_str(&format!(
                        " (not delivered: {}; no attempt left)",
                        answered.error.as_deref().unwrap_or("-")
                    )),
                    reason => line.push_str(&format!(
                        " (not usable, {reason}: {})",
                        answered.error.as_deref().unwrap_or("-")
                    )),
                }
                self.out.line(&line);
                if let (Some(error), true) = (
                    &answered.error,
                    answered.webhook_type.starts_with("decision."),
                ) {
                    self.why.insert(answered.id.clone(), error.clone());
                }
                match answered.outcome.as_str() {
                    "delivered" => self
                        .delivered
                        .push(format!("{} {}", answered.webhook_type, answered.id)),
                    "dead" | "gone" => {
                        let text = format!(
                            "event {} {} was not delivered: {}",
                            answered.webhook_type,
                            answered.id,
                            answered.error.as_deref().unwrap_or("-")
                        );
                        self.dead.push(text.clone());
                        self.finding(text);
                    }
                    _ => {}
                }
                self.out.record(json!({
                    "at_ms": at, "kind": "webhook_answer", "id": answered.id,
                    "type": answered.webhook_type, "attempt": answered.attempt,
                    "status": answered.status, "body": body, "error": answered.error,
                    "outcome": answered.outcome, "retry_in_ms": answered.retry_in_ms,
                }));
            }
            Observed::Decided(decided) => {
                let answer = decided.answer.to_string();
                if decided.source == "fallback" {
                    self.fallbacks += 1;
                    let reason = decided.fallback_reason.clone().unwrap_or_default();
                    // The exact words of the try that failed last (the decision URL's, or
                    // the fallback URL's); a rate limit or shutdown has no try.
                    let why = self
                        .why
                        .remove(&decided.decision_id)
                        .unwrap_or_else(|| reason.replace('_', " "));
                    self.finding(format!(
                        "decision.{} {}: your answer was not used ({reason}: {why}); the fallback plays instead: {}",
                        decided.kind,
                        decided.decision_id,
                        clip(&answer, 300)
                    ));
                } else if decided.source == "fallback_url" {
                    self.out.line(&format!(
                        "       answered by the fallback URL: {}",
                        clip(&answer, 300)
                    ));
                }
                self.out.record(json!({
                    "at_ms": at, "kind": "decided", "decision_id": decided.decision_id,
                    "decision": decided.kind, "source": decided.source,
                    "fallback_reason": decided.fallback_reason, "answer": decided.answer,
                }));
            }
        }
    }

    /// Waits (printing what comes) until the core sends a webhook of `webhook_type`, as a
    /// platform's own actor reacts to it (PTK's dialer to `callback.due`); `false` after
    /// `limit`.
    pub async fn wait_for(&mut self, webhook_type: &str, limit: Duration) -> bool {
        if self.gw.handle.is_none() {
            return super::external::wait_for(self, webhook_type, limit).await;
        }
        let until = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(until, self.observed.recv()).await {
                Ok(Some(what)) => {
                    let found =
                        matches!(&what, Observed::Sent(sent) if sent.webhook_type == webhook_type);
                    self.show(what);
                    if found {
                        return true;
                    }
                }
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// The path of a platform request to `adapter` (`rest` after the tenant and its path
    /// token, e.g. `/cdr`).
    pub fn path(&self, adapter: &str, rest: &str) -> String {
        match &self.gw.path_token {
            Some(token) => format!("/{adapter}/{}/{token}{rest}", self.gw.tenant),
            None => format!("/{adapter}/{}{rest}", self.gw.tenant),
        }
    }

    /// The path of a command API request (`rest` after `/api/{tenant}/{adapter}/`).
    pub fn api_path(&self, adapter: &str, rest: &str) -> String {
        format!("/api/{}/{adapter}/{rest}", self.gw.tenant)
    }

    /// Waits until every event of the call is delivered or dead, printing each attempt.
    pub(super) async fn wait_events(&mut self) {
        let Some(handle) = self.gw.handle.clone() else {
            return super::external::wait_events(self).await;
        };
        let store = handle.core.store.clone();
        let cfg = handle.core.runtime.load().config.raw.delivery.clone();
        let attempts = cfg.retry_schedule_s.len() as u64 + 1;
        let worst = Duration::from_millis(
            attempts * cfg.timeout_ms + cfg.retry_schedule_s.iter().sum::<u64>() * 1000 + 5_000,
        );
        let until = Instant::now() + worst;
        loop {
            self.drain();
            let pending = match store.outbox_depth().await {
                Ok(depth) => depth
                    .iter()
                    .filter(|d| d.tenant == self.gw.tenant)
                    .map(|d| d.pending)
                    .sum::<u64>(),
                Err(e) => {
                    self.finding(format!("cannot read the outbox: {e}"));
                    return;
                }
            };
            if pending == 0 {
                self.drain();
                return;
            }
            if Instant::now() >= until {
                self.finding(format!(
                    "{pending} event(s) still waiting for delivery after {} s",
                    worst.as_secs()
                ));
                return;
            }
            if let Ok(Some(what)) =
                tokio::time::timeout(Duration::from_millis(200), self.observed.recv()).await
            {
                self.show(what);
            }
        }
    }

    /// The closing lines; the exit status.
    pub(super) fn summary(&mut self) -> u8 {
        let answered = self.decisions.saturating_sub(self.fallbacks);
        let line = if self.gw.handle.is_none() {
            "summary: the decisions and webhooks happened inside the running gateway: its log has each (`decision answered with the fallback` with the reason), GET /admin/queues and /admin/events the events".to_owned()
        } else {
            format!(
            "summary: {} decision(s), {answered} answered by your endpoint, {} fallback(s); {} event(s) delivered, {} not delivered",
            self.decisions,
            self.fallbacks,
            self.delivered.len(),
            self.dead.len()
        )
        };
        self.out.line(&line);
        let at = self.at_ms();
        self.out.record(json!({
            "at_ms": at, "kind": "summary", "decisions": self.decisions,
            "fallbacks": self.fallbacks, "delivered": self.delivered, "not_delivered": self.dead,
            "findings": self.findings,
        }));
        if self.findings.is_empty() {
            self.out.line("result: the call completed");
            EXIT_OK
        } else {
            self.out
                .line(&format!("result: {} finding(s):", self.findings.len()));
            for f in self.findings.clone() {
                self.out.line(&format!("  - {f}"));
            }
            EXIT_FINDINGS
        }
    }
}

/// What a SOAP envelope carries (the text inside its `Body`), or `text` when it is none.
fn soap_body(text: &str) -> String {
    let Some(open) = text.find(":Body>").or_else(|| text.find("<Body>")) else {
        return text.to_owned();
    };
    let inner = &text[open + text[open..].find('>').map_or(0, |i| i + 1)..];
    match inner.rfind(":Body>").or_else(|| inner.rfind("</Body>")) {
        Some(close) => inner[..inner[..close].rfind("</").unwrap_or(close)].to_owned(),
        None => text.to_owned(),
    }
}

/// At most `max` characters of `text` on one line.
pub(super) fn clip(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max).collect();
    cut.push_str("...");
    cut
}
