//! `Idempotency-Key` for commands that place or queue calls: the key (per tenant) is an
//! entity of the adapter's `{adapter}.idempotency` kind holding a fingerprint of the request
//! and its outcome, so a customer retrying (after a 504, a dropped connection) gets the first
//! answer instead of a second call, from any instance sharing the store.
//!
//! [`claim`] before sending: the key is taken (`pending`), or the stored answer is replayed
//! (`idempotent_replay: true`), or 409 while the first is in flight, or 504
//! `outcome_unknown` when the first got no answer in time (it may have placed the call, so it
//! is never sent again), or 422 when the key came with another request. [`settle`] after:
//! the answer, `unknown`, or the key freed when the request never left.

use serde_json::{json, Value};

use crate::{
    transition_one, Change, Command, CommandReply, EntityKey, Gateway, Transitioned, Write,
};

fn error(status: u16, code: &str, message: impl Into<String>) -> CommandReply {
    CommandReply::error(status, code, message)
}

fn now_ms(gw: &dyn Gateway) -> i64 {
    gw.now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `Idempotency-Key` header, if any, or why it is unusable (400).
pub fn key(cmd: &Command) -> Result<Option<String>, CommandReply> {
    let Some(value) = cmd.headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(error(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key is 1 to 128 visible ASCII characters",
        )),
    }
}

pub enum Claim {
    /// Go ahead: the key is ours (pending).
    Go,
    /// Answer this (a stored reply, a key in use, a reused key).
    Answer(CommandReply),
}

/// Claims an idempotency key for `fingerprint`, or finds what became of it.
pub async fn claim(
    gw: &dyn Gateway,
    key: &EntityKey,
    fingerprint: &str,
    stale_ms: i64,
) -> Result<Claim, CommandReply> {
    let now = now_ms(gw);
    let mut outcome = None;
    let result = transition_one(gw, key.clone(), |entity| {
        let state = entity.and_then(|e| e.state.as_ref());
        let Some(state) = state else {
            outcome = Some(Claim::Go);
            return Change::Write(Write::state(
                json!({"fingerprint": fingerprint, "status": "pending", "since_ms": now}),
            ));
        };
        if state["fingerprint"].as_str() != Some(fingerprint) {
            outcome = Some(Claim::Answer(error(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )));
            return Change::Keep;
        }
        match state["status"].as_str() {
            Some("done") => {
                let mut body = state["reply"]["body"].clone();
                if let Value::Object(map) = &mut body {
                    map.insert("idempotent_replay".into(), json!(true));
                }
                let status = state["reply"]["status"].as_u64().unwrap_or(200) as u16;
                outcome = Some(Claim::Answer(CommandReply { status, body }));
                Change::Keep
            }
            Some("pending") if now - state["since_ms"].as_i64().unwrap_or(0) < stale_ms => {
                outcome = Some(Claim::Answer(CommandReply {
                    status: 409,
                    body: json!({"error": {
                        "code": "in_progress",
                        "message": "a request with this Idempotency-Key is being carried out",
                        "retry_after_s": 1,
                    }}),
                }));
                Change::Keep
            }
            _ => {
                outcome = Some(Claim::Answer(error(
                    504,
                    "outcome_unknown",
                    "the first request with this Idempotency-Key got no answer from Voicenter in time; it may have placed the call, so it is not sent again (see the call log)",
                )));
                Change::Keep
            }
        }
    })
    .await;
    match result {
        Ok(Transitioned::Done(_)) => Ok(outcome.unwrap_or(Claim::Go)),
        Ok(Transitioned::AliasTaken { .. }) => Err(error(500, "internal", "unexpected alias")),
        Err(e) => Err(error(503, "store_unavailable", e.to_string())),
    }
}

/// What became of a request sent under a claimed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The platform answered (success or refusal): the answer is replayed to retries.
    Answered,
    /// It may have reached the platform without an answer (a timeout): never sent again.
    Unknown,
    /// It never left (limit, connection refused): the key is free again.
    NotSent,
}

/// Stores the outcome under the key (see [`Outcome`]).
pub async fn settle(
    gw: &dyn Gateway,
    key: &EntityKey,
    fingerprint: &str,
    reply: &CommandReply,
    outcome: Outcome,
) -> Result<(), crate::RecordError> {
    let now = now_ms(gw);
    let result = transition_one(gw, key.clone(), |_| {
        let status = match outcome {
            Outcome::NotSent => return Change::Write(Write::default()),
            Outcome::Answered => "done",
            Outcome::Unknown => "unknown",
        };
        Change::Write(Write::state(json!({
            "fingerprint": fingerprint,
            "status": status,
            "since_ms": now,
            "reply": {"status": reply.status, "body": reply.body},
        })))
    })
    .await;
    result.map(|_| ())
}
