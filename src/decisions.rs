//! Decisions: what [`ivrgate_adapter::Gateway::decide`] does. The customer's decision URL is
//! asked with a signed POST under the decision's deadline, then the fallback URL within the
//! same deadline, then the configured fallback answers (rate limit, breaker, shutdown grace
//! included): a caller never hears dead air. The answer is recorded on the call without
//! being awaited, with an in-process overlay until that write commits.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivrgate_adapter::epoch::rfc3339;
use ivrgate_adapter::{
    Answer, AnswerSource, Decision, DecisionPoint, DecisionRequest, FallbackReason,
};
use serde_json::{json, Map, Value};

use crate::config::ResolvedTenant;
use crate::core::{Core, Runtime};
use crate::decision_client::{Target, WebhookHeaders};
use crate::envelope::{note_core_keys, DecisionData, Envelope, DECISION_KEYS};
use crate::metrics::{DecisionLabels, ReasonLabels};
use crate::observe::{self, Observed};
use crate::store::{CallKey, CallRow, CallWrite, CommitOutcome, UnitOfWork};
use crate::{ids, signing};

/// Which try of a decision webhook this is: the decision URL (1), then the fallback URL (2).
#[derive(Clone, Copy)]
struct Attempt<'a> {
    decision_id: &'a str,
    call: &'a str,
    number: u8,
    of: u8,
}

/// A decision answered by this process whose write on its call is queued but not committed:
/// what a request on the same call moments later reads instead of the stored row.
#[derive(Clone)]
pub(crate) struct PendingDecision {
    decision_id: String,
    call_id: String,
    /// Shared with the queued write (copying them per decision cost more than the rest of
    /// the overlay's bookkeeping).
    last: Arc<Value>,
    attached: Arc<Map<String, Value>>,
}

impl Core {
    /// Asks the customer, then the fallback URL, unless the shutdown grace runs out first:
    /// then the decision gives up on both at once (`FallbackReason::Shutdown`).
    async fn ask_customer(
        &self,
        tenant: &ResolvedTenant,
        decision_id: &str,
        call: &str,
        body: &[u8],
        deadline: Instant,
        point: &DecisionPoint,
    ) -> Result<(Answer, AnswerSource), FallbackReason> {
        let of = if tenant.fallback_target.is_some() {
            2
        } else {
            1
        };
        let asked = async {
            let first = Attempt {
                decision_id,
                call,
                number: 1,
                of,
            };
            match self
                .ask(
                    tenant,
                    &tenant.decision_target,
                    &first,
                    body,
                    deadline,
                    point,
                )
                .await
            {
                Ok(answer) => Ok((answer, AnswerSource::Customer)),
                Err(reason) => match &tenant.fallback_target {
                    Some(url) if Instant::now() < deadline => {
                        let second = Attempt { number: 2, ..first };
                        self.ask(tenant, url, &second, body, deadline, point)
                            .await
                            .map(|answer| (answer, AnswerSource::FallbackUrl))
                            .map_err(|_| reason)
                    }
                    _ => Err(reason),
                },
            }
        };
        let mut grace_over = self.grace_over.subscribe();
        tokio::select! {
            biased;
            _ = grace_over.wait_for(|over| *over) => Err(FallbackReason::Shutdown),
            result = asked => result,
        }
    }

    pub(crate) async fn decide_inner(&self, req: DecisionRequest) -> Decision {
        self.decisions_open.fetch_add(1, Ordering::Relaxed);
        let _open = Defer(Some(|| {
            self.decisions_open.fetch_sub(1, Ordering::Relaxed);
        }));
        let started = Instant::now();
        let runtime = self.runtime.load_full();
        let point = req.point;
        let Some(tenant) = runtime.config.tenant(&req.tenant) else {
            // The server only routes configured tenants here; a reload may have removed it.
            return Decision {
                decision_id: ids::decision_id(),
                call_id: None,
                answer: (point.default_fallback)(),
                source: AnswerSource::Fallback(FallbackReason::Invalid),
                attached: Map::new(),
            };
        };
        let settings = tenant.decisions.get(point.kind);
        let deadline_ms = settings
            .map(|s| s.deadline_ms)
            .unwrap_or(tenant_default_deadline(tenant))
            .min(req.deadline_ms.unwrap_or(u64::MAX));
        let fallback = settings
            .map(|s| s.fallback.clone())
            .unwrap_or_else(point.default_fallback);
        let deadline = started + Duration::from_millis(deadline_ms);
        let decision_id = ids::decision_id();
        let key = req
            .call
            .vendor_call_id
            .as_deref()
            .map(|id| Self::call_key(&tenant.id, point.vendor, id));
        // The call's state is worth half the time left at most: a slow store, or a pool busy
        // with other reads, must not eat the time the customer's webhook and the fallbacks
        // need. Past it the decision goes on without the state, as after a failed read.
        let row = match &key {
            Some(key) => {
                let budget = deadline.saturating_duration_since(Instant::now()) / 2;
                match tokio::time::timeout(budget, self.load(key)).await {
                    Ok(row) => row,
                    Err(_) => {
                        tracing::error!(
                            tenant = %key.tenant, waited_ms = budget.as_millis() as u64,
                            "cannot read call state within half the decision's deadline; deciding without it"
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let pending = key.as_ref().and_then(|k| {
            self.pending_decisions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(k)
                .cloned()
        });
        let call_id = key.as_ref().map(|_| match (&pending, &row) {
            (Some(p), _) => p.call_id.clone(),
            (None, Some(r)) => r.call_id.clone(),
            (None, None) => ids::call_id(),
        });
        // A new call's id is in the overlay from now on, not only once the customer answered:
        // an event on the call meanwhile (the caller hangs up while the customer is asked)
        // takes the same id (`Core::pending_call`), so the call never gets two. Taken out
        // again if this decision ends before its write is queued.
        let minted = match (&key, &call_id, &pending, &row) {
            (Some(key), Some(id), None, None) => Some(self.hold_call_id(key, &decision_id, id)),
            _ => None,
        };
        let mut attached = match &pending {
            Some(p) => Map::clone(&p.attached),
            None => row.as_ref().map(|r| r.attached.clone()).unwrap_or_default(),
        };
        let previous = match &pending {
            // The last decision is part of the call's live state: none once the call ended.
            _ if row.as_ref().is_some_and(|r| r.state.is_none()) => Value::Null,
            Some(p) => Value::clone(&p.last),
            None => row
                .as_ref()
                .and_then(|r| r.state.as_ref())
                .and_then(|s| s.get("last_decision"))
                .cloned()
                .unwrap_or(Value::Null),
        };
        let now = self.clock.now();
        self.note_undecodable(&tenant.id, point.vendor, point.kind, &req.data);
        let payload_type = format!("decision.{}", point.kind);
        note_core_keys(&req.data, &DECISION_KEYS, &payload_type);
        let body = serde_json::to_vec(&Envelope {
            kind: payload_type,
            timestamp: now,
            data: DecisionData {
                decision_id: &decision_id,
                tenant: &tenant.id,
                vendor: point.vendor,
                kind: point.kind,
                call_id: call_id.as_deref(),
                deadline_ms,
                correlation: &req.call.correlation,
                attached: &attached,
                previous_decision: &previous,
                fields: &req.data,
                vendor_fields: &req.vendor_fields,
            },
        })
        .unwrap_or_default();

        let limited = runtime
            .decision_limits
            .get(&tenant.id)
            .is_some_and(|l| l.check().is_err());
        let (answer, source) = if limited {
            (
                fallback.clone(),
                AnswerSource::Fallback(FallbackReason::RateLimited),
            )
        } else {
            match self
                .ask_customer(
                    tenant,
                    &decision_id,
                    call_id.as_deref().unwrap_or("-"),
                    &body,
                    deadline,
                    point,
                )
                .await
            {
                Ok(answered) => answered,
                Err(reason) => (fallback.clone(), AnswerSource::Fallback(reason)),
            }
        };
        let own = point.attached_by(&answer);
        attached.extend(own.clone());
        let (source_label, reason) = match &source {
            AnswerSource::Customer => ("customer", None),
            AnswerSource::FallbackUrl => ("fallback_url", None),
            AnswerSource::Fallback(reason) => ("fallback", Some(reason.as_str())),
        };
        let elapsed = started.elapsed();
        self.metrics
            .decision_seconds
            .get_or_create(&DecisionLabels {
                kind: point.kind,
                source: source_label,
            })
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = reason {
            self.metrics
                .fallbacks
                .get_or_create(&ReasonLabels {
                    kind: point.kind,
                    reason,
                })
                .inc();
            tracing::warn!(
                tenant = %tenant.id, kind = point.kind, decision_id = %decision_id,
                call_id = call_id.as_deref().unwrap_or("-"),
                vendor_call_id = req.call.vendor_call_id.as_deref().unwrap_or("-"), reason,
                elapsed_ms = elapsed.as_millis() as u64, answer = answer.label(),
                "decision answered with the fallback"
            );
        } else {
            tracing::debug!(
                tenant = %tenant.id, kind = point.kind, decision_id = %decision_id,
                source = source_label, elapsed_ms = elapsed.as_millis() as u64,
                answer = answer.label(), "decision answered"
            );
        }
        if let Some(observer) = &self.observer {
            observer.observe(Observed::Decided(observe::Decided {
                decision_id: decision_id.clone(),
                kind: point.kind.to_owned(),
                vendor: point.vendor.to_owned(),
                vendor_call_id: req.call.vendor_call_id.clone(),
                source: source_label.to_owned(),
                fallback_reason: reason.map(str::to_owned),
                answer: answer.to_json(),
            }));
        }
        if let (Some(key), Some(call_id)) = (key, call_id.clone()) {
            let last = Arc::new(json!({
                "decision_id": decision_id,
                "kind": point.kind,
                "at": rfc3339(now),
                "answer": answer.label(),
                "source": source_label,
                "fallback_reason": reason,
            }));
            let shared = Arc::new(attached.clone());
            self.pending_decisions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    key.clone(),
                    PendingDecision {
                        decision_id: decision_id.clone(),
                        call_id: call_id.clone(),
                        last: last.clone(),
                        attached: shared.clone(),
                    },
                );
            if let Some(mut minted) = minted {
                // The entry is this decision's own now, cleared once its write ends.
                minted.0 = None;
            }
            self.commit_decision(key, call_id, row, shared, own, last, &runtime);
        }
        Decision {
            decision_id,
            call_id,
            answer,
            source,
            attached,
        }
    }

    /// Puts a new call's id in the overlay for a decision still asking the customer; the
    /// guard takes it out again when dropped armed (the decision ended before its write was
    /// queued, e.g. its request was cancelled).
    fn hold_call_id(
        &self,
        key: &CallKey,
        decision_id: &str,
        call_id: &str,
    ) -> Defer<impl FnOnce()> {
        let overlay = self.pending_decisions.clone();
        overlay.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key.clone(),
            PendingDecision {
                decision_id: decision_id.to_owned(),
                call_id: call_id.to_owned(),
                last: Arc::new(Value::Null),
                attached: Arc::default(),
            },
        );
        let (key, decision_id) = (key.clone(), decision_id.to_owned());
        Defer(Some(move || forget_pending(&overlay, &key, &decision_id)))
    }

    /// The id and attached data of a call this instance has given an id but whose row may
    /// not be stored yet: a decision's write queued and not committed, or a new call's first
    /// decision still asking the customer. The event path takes them when the store has no
    /// row, so a call keeps one id.
    pub(crate) fn pending_call(&self, key: &CallKey) -> Option<(String, Map<String, Value>)> {
        self.pending_decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|p| (p.call_id.clone(), Map::clone(&p.attached)))
    }

    /// Records a decision on its call. The legacy side is answered without waiting for this
    /// commit (a decision is not an acknowledgement of a stored event); the write is queued
    /// now, so a later request on the same call reads it. `attached` is the call's data as
    /// the decision's webhook showed it plus what its answer attached (`own`).
    ///
    /// The write never brings back a call that ended or expired (its row has no live state):
    /// a hangup (or expiry) committed before it stays the call's end, with no new state and
    /// no expiry timer, so no `call.expired` follows a `call.hangup`, and `previous_decision`
    /// stays `null`. Only the answer's own attached keys are recorded on such a call
    /// (attached data outlives the call: a later CDR carries them); with none, nothing is
    /// written. A write rebuilt after a version conflict puts only `own` over the row as it
    /// is then, so what another writer attached or changed meanwhile stays.
    #[allow(clippy::too_many_arguments)]
    fn commit_decision(
        self: &Core,
        key: CallKey,
        call_id: String,
        row: Option<CallRow>,
        attached: Arc<Map<String, Value>>,
        own: Map<String, Value>,
        last: Arc<Value>,
        runtime: &Runtime,
    ) {
        let ttl_ms = runtime.config.raw.storage.call_ttl_s as i64 * 1000;
        let adapter_expiry = self
            .adapter(&key.vendor)
            .is_some_and(|a| a.keeps_call_state());
        // Shared by the write, its retries and the overlay's clean-up.
        let key = Arc::new(key);
        let (overlay_key, write_key) = (key.clone(), key.clone());
        let overlay = self.pending_decisions.clone();
        let decision_id = last
            .get("decision_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let store = self.store.clone();
        let clock = self.clock.clone();
        let build = move |row: Option<&CallRow>, now_ms: i64, rebuilt: bool| {
            // The decision's view of the attached data on its first write (it read this row),
            // its answer's keys alone over a row read again or one that ended.
            let ended = row.filter(|r| r.state.is_none());
            let keys = if rebuilt || ended.is_some() {
                &own
            } else {
                &*attached
            };
            let mut merged = row.map(|r| r.attached.clone()).unwrap_or_default();
            let mut changed = false;
            for (k, v) in keys {
                if merged.get(k) != Some(v) {
                    merged.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
            // An ended or expired call stays so: its status, state and expiry as they are.
            if let Some(r) = ended {
                return changed.then(|| UnitOfWork {
                    tenant: write_key.tenant.clone(),
                    now_ms,
                    call: Some(CallWrite {
                        key: CallKey::clone(&write_key),
                        call_id: r.call_id.clone(),
                        expected_version: Some(r.version),
                        status: if r.status == "expired" {
                            "expired"
                        } else {
                            "ended"
                        },
                        attached: merged,
                        state: None,
                        expires_at_ms: r.expires_at_ms,
                    }),
                    ..UnitOfWork::default()
                });
            }
            let mut state = row
                .and_then(|r| r.state.clone())
                .unwrap_or_else(|| json!({"started_at": rfc3339(crate::clock::from_ms(now_ms))}));
            if let Some(obj) = state.as_object_mut() {
                let n = obj.get("decisions").and_then(Value::as_u64).unwrap_or(0);
                obj.insert("decisions".into(), json!(n + 1));
                obj.insert("last_decision".into(), Value::clone(&last));
            }
            Some(UnitOfWork {
                tenant: write_key.tenant.clone(),
                now_ms,
                call: Some(CallWrite {
                    key: CallKey::clone(&write_key),
                    call_id: row
                        .map(|r| r.call_id.clone())
                        .unwrap_or_else(|| call_id.clone()),
                    expected_version: row.map(|r| r.version),
                    status: "active",
                    attached: merged,
                    state: Some(state.into()),
                    // An adapter that keeps its calls in entities sets their expiry (a PTK
                    // interaction waits days for its appointment, an OpenScape call has its
                    // own limit); a decision leaves it alone.
                    expires_at_ms: match row {
                        Some(r) if r.state.is_some() && adapter_expiry => r.expires_at_ms,
                        _ => Some(now_ms + ttl_ms),
                    },
                }),
                ..UnitOfWork::default()
            })
        };
        let pending =
            build(row.as_ref(), clock.now_ms(), false).map(|uow| store.commit_queued(uow));
        tokio::spawn(async move {
            // However the write ends, this decision is no longer pending.
            let _clear = Defer(Some(move || {
                forget_pending(&overlay, &overlay_key, &decision_id)
            }));
            let Some(pending) = pending else { return };
            let mut outcome = pending.await;
            for _ in 0..5 {
                match outcome {
                    Ok(CommitOutcome::Conflict) => {
                        let row = store.load_call(CallKey::clone(&key)).await.ok().flatten();
                        match build(row.as_ref(), clock.now_ms(), true) {
                            Some(uow) => outcome = store.commit(uow).await,
                            None => return,
                        }
                    }
                    Ok(_) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record decision on its call");
                        return;
                    }
                }
            }
        });
    }

    /// One signed POST of a decision to `target` within `deadline`. A failure is logged (WARN
    /// `decision webhook failed`) with the endpoint (redacted), what went wrong, the
    /// decision's kind, id and call, and the attempt as "n of N" (the decision URL, then the
    /// fallback URL).
    async fn ask(
        &self,
        tenant: &ResolvedTenant,
        target: &Target,
        attempt: &Attempt<'_>,
        body: &[u8],
        deadline: Instant,
        point: &DecisionPoint,
    ) -> Result<Answer, FallbackReason> {
        let url = target.as_str();
        let decision_id = attempt.decision_id;
        let started = Instant::now();
        // What came back, for an observer (`ivrgate simulate`); `error` when it is not used.
        let observe = |status: Option<u16>,
                       answer: Option<&bytes::Bytes>,
                       outcome: &str,
                       error: Option<&str>| {
            if let Some(observer) = &self.observer {
                observer.observe(Observed::Answered(observe::Answered {
                    id: decision_id.to_owned(),
                    webhook_type: format!("decision.{}", point.kind),
                    attempt: u32::from(attempt.number),
                    status,
                    body: answer.cloned(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    error: error.map(str::to_owned),
                    outcome: outcome.to_owned(),
                    retry_in_ms: None,
                }));
            }
        };
        let failed = |reason: FallbackReason, error: &str| {
            tracing::warn!(
                tenant = %tenant.id, endpoint = %crate::redact::url(url),
                event_type = %format!("decision.{}", point.kind), decision_id = %decision_id,
                call = %attempt.call, attempt = %format!("{} of {}", attempt.number, attempt.of),
                reason = %reason.as_str(), error = %error, "decision webhook failed"
            );
            reason
        };
        if !self.decision_breakers.try_acquire(url) {
            let why = "circuit breaker open after repeated failures; not asked";
            observe(None, None, FallbackReason::CircuitOpen.as_str(), Some(why));
            return Err(failed(FallbackReason::CircuitOpen, why));
        }
        let timestamp = crate::clock::to_ms(self.clock.now()) / 1000;
        let signature = signing::signature_header(&tenant.secrets, decision_id, timestamp, body);
        if let Some(observer) = &self.observer {
            observer.observe(Observed::Sent(observe::Sent {
                id: decision_id.to_owned(),
                webhook_type: format!("decision.{}", point.kind),
                url: crate::redact::url(url),
                attempt: u32::from(attempt.number),
                of: u32::from(attempt.of),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("webhook-id".into(), decision_id.to_owned()),
                    ("webhook-timestamp".into(), timestamp.to_string()),
                    ("webhook-signature".into(), signature.clone()),
                ],
                body: bytes::Bytes::copy_from_slice(body),
            }));
        }
        let headers = WebhookHeaders {
            id: decision_id,
            timestamp,
            signature: &signature,
        };
        let exchange = self
            .decision_client(tenant)
            .post(target, &headers, body, MAX_ANSWER_BYTES);
        let left = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout_at(deadline.into(), exchange).await;
        let (status, bytes) = match result {
            Err(_) => {
                self.decision_breakers.failure(url);
                let why = format!(
                    "timeout: no answer within the decision's deadline ({} ms left)",
                    left.as_millis()
                );
                observe(None, None, FallbackReason::Timeout.as_str(), Some(&why));
                return Err(failed(FallbackReason::Timeout, &why));
            }
            Ok(Err(e)) => {
                self.decision_breakers.failure(url);
                let reason = if e.is_timeout() {
                    FallbackReason::Timeout
                } else {
                    FallbackReason::Connect
                };
                // Never the URL: the endpoint is logged redacted, apart.
                let why = e.describe(left);
                observe(None, None, reason.as_str(), Some(&why));
                return Err(failed(reason, &why));
            }
            Ok(Ok(pair)) => pair,
        };
        if !status.is_success() {
            if status.is_server_error() {
                self.decision_breakers.failure(url);
            }
            let why = crate::failure::status(status);
            let reason = FallbackReason::Status;
            observe(
                Some(status.as_u16()),
                Some(&bytes),
                reason.as_str(),
                Some(&why),
            );
            return Err(failed(reason, &why));
        }
        self.decision_breakers.success(url);
        // Customers porting a legacy server may answer with the vendor's own (sometimes
        // not quite JSON) examples; the lenient reader takes those too.
        let limits = ivrgate_wire::Limits::default();
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| "answer is not UTF-8".to_owned())
            .and_then(|text| {
                ivrgate_wire::json::parse_lenient(text, &limits)
                    .map_err(|e| format!("not JSON: {e}"))
            })
            .and_then(|v| Answer::from_json(&v))
            .and_then(|a| (point.validate)(&a).map(|()| a));
        match parsed {
            Ok(answer) => {
                observe(Some(status.as_u16()), Some(&bytes), "answer", None);
                Ok(answer)
            }
            Err(why) => {
                let why = format!("invalid answer: {why}");
                let reason = FallbackReason::Invalid;
                observe(
                    Some(status.as_u16()),
                    Some(&bytes),
                    reason.as_str(),
                    Some(&why),
                );
                Err(failed(reason, &why))
            }
        }
    }
}

/// The largest decision answer read; the rest of a larger one is ignored, so the answer is
/// invalid (truncated JSON) and the fallback answers.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Takes a decision's entry out of the overlay, unless a later decision on the call has
/// replaced it.
fn forget_pending(
    overlay: &std::sync::Mutex<std::collections::HashMap<CallKey, PendingDecision>>,
    key: &CallKey,
    decision_id: &str,
) {
    let mut map = overlay.lock().unwrap_or_else(|p| p.into_inner());
    if map.get(key).is_some_and(|p| p.decision_id == decision_id) {
        map.remove(key);
    }
}

/// Runs a closure when dropped.
struct Defer<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Defer<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn tenant_default_deadline(tenant: &ResolvedTenant) -> u64 {
    tenant
        .decisions
        .values()
        .map(|d| d.deadline_ms)
        .min()
        .unwrap_or(3_000)
}
