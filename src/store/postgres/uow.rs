//! One unit of work applied inside a batch's transaction: its statements as pipeline steps
//! (prepared once per writer connection), whether it committed as sent, and applying it alone,
//! statement by statement, to find its exact outcome.

use super::feed::NOTIFY_SQL;
use super::writer::{ApplyError, Counters};

/// The writer's connection, inside the transaction its batch opened: the writer sends
/// `BEGIN` in the batch's first pipeline and `COMMIT` in its last, rather than each awaited
/// alone (two round trips fewer per batch), so it holds the connection, not a
/// `Transaction`.
pub(super) type Tx = deadpool_postgres::ClientWrapper;

/// What one statement of a pipeline answered.
pub(super) enum Reply {
    Done,
    Row(Option<tokio_postgres::Row>),
    Rows(Vec<tokio_postgres::Row>),
    Count(u64),
}

/// One statement, not yet sent: tokio-postgres sends a request when its future is first
/// polled.
pub(super) type Step<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Reply, tokio_postgres::Error>> + Send + 'a>,
>;

/// Sends `steps` to the server back to back and then reads every answer. Each step is polled
/// once in order first, which puts its request on the connection in that order without
/// waiting for the one before (a pipeline); the answers come back in the same order, and
/// are awaited in it. A failed statement fails the statements after it in the same
/// transaction too ("current transaction is aborted"), until a rollback to a savepoint.
pub(super) async fn pipeline(
    mut steps: Vec<Step<'_>>,
) -> Vec<Result<Reply, tokio_postgres::Error>> {
    let mut replies: Vec<Option<Result<Reply, tokio_postgres::Error>>> =
        steps.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (step, reply) in steps.iter_mut().zip(replies.iter_mut()) {
            if let std::task::Poll::Ready(answer) = std::future::Future::poll(step.as_mut(), cx) {
                *reply = Some(answer);
            }
        }
        std::task::Poll::Ready(())
    })
    .await;
    for (step, reply) in steps.into_iter().zip(replies.iter_mut()) {
        if reply.is_none() {
            *reply = Some(step.await);
        }
    }
    replies.into_iter().flatten().collect()
}

pub(super) fn simple<'a>(tx: &'a Tx, sql: String) -> Step<'a> {
    Box::pin(async move { tx.batch_execute(&sql).await.map(|()| Reply::Done) })
}

/// The writer's statements, prepared once per connection (the cache is the connection's).
pub(super) struct Stmts {
    dedup_claim: tokio_postgres::Statement,
    dedup_read: tokio_postgres::Statement,
    pending_one: tokio_postgres::Statement,
    pub(super) pending_many: tokio_postgres::Statement,
    pub(super) pending_add: tokio_postgres::Statement,
    call_insert: tokio_postgres::Statement,
    call_update: tokio_postgres::Statement,
    timer_set: tokio_postgres::Statement,
    timer_delete: tokio_postgres::Statement,
    alias_release: tokio_postgres::Statement,
    alias_claim: tokio_postgres::Statement,
    alias_owner: tokio_postgres::Statement,
    outbox_insert: tokio_postgres::Statement,
    pub(super) notify: tokio_postgres::Statement,
}

impl Stmts {
    pub(super) async fn prepare(tx: &Tx) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            dedup_claim: tx
                .prepare_cached(
                    "INSERT INTO dedup (tenant, key_hash, expires_at_ms, status, content_type, body) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, key_hash) DO UPDATE SET \
                     expires_at_ms = excluded.expires_at_ms, status = excluded.status, \
                     content_type = excluded.content_type, body = excluded.body \
                     WHERE dedup.expires_at_ms <= $7 RETURNING 1",
                )
                .await?,
            dedup_read: tx
                .prepare_cached(
                    "SELECT status, content_type, body FROM dedup \
                     WHERE tenant = $1 AND key_hash = $2",
                )
                .await?,
            pending_one: tx
                .prepare_cached("SELECT pending FROM tenant_counters WHERE tenant = $1")
                .await?,
            pending_many: tx
                .prepare_cached("SELECT tenant, pending FROM tenant_counters WHERE tenant = ANY($1)")
                .await?,
            pending_add: tx
                .prepare_cached(
                    "INSERT INTO tenant_counters (tenant, pending) VALUES ($1, GREATEST($2::bigint, 0)) \
                     ON CONFLICT (tenant) DO UPDATE SET pending = GREATEST(tenant_counters.pending + $2::bigint, 0)",
                )
                .await?,
            call_insert: tx
                .prepare_cached(
                    "INSERT INTO calls (tenant, vendor, vendor_call_id, call_id, version, next_seq, \
                     status, attached, state, expires_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                )
                .await?,
            call_update: tx
                .prepare_cached(
                    "UPDATE calls SET version = version + 1, next_seq = next_seq + $1::bigint, status = $2, \
                     attached = $3, state = $4, expires_at_ms = $5, updated_at_ms = $6 \
                     WHERE tenant = $7 AND vendor = $8 AND vendor_call_id = $9 AND version = $10 \
                     AND call_id = $11 RETURNING next_seq - $1::bigint",
                )
                .await?,
            timer_set: tx
                .prepare_cached(
                    "INSERT INTO timers (key, kind, tenant, due_ms, payload) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (key) DO UPDATE SET due_ms = excluded.due_ms, payload = excluded.payload, \
                     lease_owner = NULL, lease_until_ms = 0",
                )
                .await?,
            timer_delete: tx
                .prepare_cached("DELETE FROM timers WHERE key = $1")
                .await?,
            alias_release: tx
                .prepare_cached(
                    "DELETE FROM aliases WHERE tenant = $1 AND namespace = $2 AND value = $3 \
                     AND owner_kind = $4 AND owner_id = $5",
                )
                .await?,
            alias_claim: tx
                .prepare_cached(
                    "INSERT INTO aliases AS a (tenant, namespace, value, owner_kind, owner_id, until_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, namespace, value) DO UPDATE \
                     SET owner_kind = excluded.owner_kind, owner_id = excluded.owner_id, \
                     until_ms = excluded.until_ms \
                     WHERE (a.owner_kind = excluded.owner_kind AND a.owner_id = excluded.owner_id) \
                     OR (a.until_ms IS NOT NULL AND a.until_ms <= $7)",
                )
                .await?,
            alias_owner: tx
                .prepare_cached(
                    "SELECT owner_kind, owner_id FROM aliases \
                     WHERE tenant = $1 AND namespace = $2 AND value = $3",
                )
                .await?,
            // Every event of a batch in one statement, in the order given (the outbox ids,
            // which order deliveries, follow it).
            outbox_insert: tx
                .prepare_cached(
                    "INSERT INTO outbox (event_id, tenant, call_id, seq, event_type, payload, \
                     created_at_ms, next_attempt_ms) \
                     SELECT e.event_id, e.tenant, e.call_id, e.seq, e.event_type, e.payload, e.at, e.at \
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                     $6::bytea[], $7::bigint[]) WITH ORDINALITY \
                     AS e(event_id, tenant, call_id, seq, event_type, payload, at, n) ORDER BY e.n",
                )
                .await?,
            notify: tx.prepare_cached(NOTIFY_SQL).await?,
        })
    }
}

/// What a statement of a unit must answer for the unit to commit as sent.
pub(super) enum Check {
    /// Only that it succeeded.
    Ok,
    /// A resend key or an alias claimed (a row returned, or a row written).
    Claimed,
    /// A call or entity row written at its expected version; the answer gives the first
    /// sequence number of its new events.
    Row,
}

/// The statements of one unit of work, in the order [`apply_uow`] runs them, pushed on
/// `steps`, with what each must answer pushed on `checks`.
pub(super) fn unit_steps<'a>(
    tx: &'a Tx,
    st: &'a Stmts,
    uow: &'a crate::store::UnitOfWork,
    steps: &mut Vec<Step<'a>>,
    checks: &mut Vec<Check>,
) {
    if let Some(dedup) = &uow.dedup {
        steps.push(dedup_step(tx, st, uow, dedup));
        checks.push(Check::Claimed);
    }
    for (call, events) in written_rows(uow) {
        steps.push(call_step(tx, st, call, events, uow.now_ms));
        checks.push(Check::Row);
        steps.push(expiry_step(tx, st, call));
        checks.push(Check::Ok);
    }
    for alias in &uow.aliases {
        steps.push(alias_step(tx, st, &uow.tenant, alias, uow.now_ms));
        checks.push(match alias.action {
            crate::store::AliasAction::Claim { .. } => Check::Claimed,
            crate::store::AliasAction::Release => Check::Ok,
        });
    }
    for timer in &uow.timers {
        steps.push(timer_step(tx, st, timer));
        checks.push(Check::Ok);
    }
}

/// The rows a unit of work writes (its call's, then each entity's), with their new events'
/// count.
fn written_rows(
    uow: &crate::store::UnitOfWork,
) -> impl Iterator<Item = (&crate::store::CallWrite, i64)> {
    uow.call
        .iter()
        .map(|c| (c, uow.events.len() as i64))
        .chain(uow.entities.iter().map(|e| (&e.row, e.events.len() as i64)))
}

/// Whether a unit sent in a pipeline committed as sent: the first sequence numbers of its
/// written rows when every statement succeeded, every guard held and its events fit the
/// tenant's quota (the counters read ahead plus what the batch added before it); `None`
/// when it must be applied alone to find its outcome.
pub(super) fn settle(
    uow: &crate::store::UnitOfWork,
    checks: &[Check],
    answers: &[Result<Reply, tokio_postgres::Error>],
    counters: &Counters,
) -> Option<Vec<i64>> {
    let mut firsts = Vec::new();
    for (check, answer) in checks.iter().zip(answers) {
        let answer = answer.as_ref().ok()?;
        match check {
            Check::Ok => {}
            Check::Claimed => {
                if !claimed(answer) {
                    return None;
                }
            }
            Check::Row => firsts.push(first_seq(answer)?),
        }
    }
    let total = uow.event_count() as i64;
    if let (Some(quota), true) = (uow.outbox_quota, total > 0) {
        let stored = *counters.read.get(&uow.tenant)?;
        let pending = stored + counters.delta.get(&uow.tenant).copied().unwrap_or(0);
        if pending.max(0) as u64 + total as u64 > quota {
            return None;
        }
    }
    Some(firsts)
}

fn claimed(answer: &Reply) -> bool {
    matches!(answer, Reply::Row(Some(_))) || matches!(answer, Reply::Count(n) if *n > 0)
}

/// The first sequence number of a written row's new events: 1 for a row created, the
/// returned one for a row updated; `None` when the row was not written (a conflict).
fn first_seq(answer: &Reply) -> Option<i64> {
    match answer {
        Reply::Count(1) => Some(1),
        Reply::Row(Some(r)) => r.try_get::<_, i64>(0).ok(),
        _ => None,
    }
}

/// An outbox row, inserted with the batch's others by [`outbox_step`].
pub(super) struct EventRow<'a> {
    event_id: &'a str,
    tenant: &'a str,
    call_id: Option<&'a str>,
    seq: Option<i64>,
    event_type: &'a str,
    payload: Vec<u8>,
    at: i64,
}

/// The outbox rows of a unit whose rows were written with `firsts` (the first new sequence
/// number of each, in [`written_rows`] order), pushed on `out`; the sequence numbers its
/// answer carries (its call's events').
pub(super) fn unit_events<'a>(
    uow: &'a crate::store::UnitOfWork,
    firsts: &[i64],
    out: &mut Vec<EventRow<'a>>,
) -> crate::store::Result<Vec<Option<i64>>> {
    let mut firsts = firsts.iter().copied();
    let mut next = || {
        firsts.next().ok_or_else(|| {
            crate::store::StoreError::Backend("a written row has no sequence".into())
        })
    };
    let seqs = match &uow.call {
        Some(call) => push_events(uow, Some((&call.call_id, next()?)), &uow.events, out)?,
        None => {
            push_events(uow, None, &uow.events, out)?;
            vec![None; uow.events.len()]
        }
    };
    for entity in &uow.entities {
        push_events(
            uow,
            Some((&entity.row.call_id, next()?)),
            &entity.events,
            out,
        )?;
    }
    Ok(seqs)
}

/// Events numbered from `first_seq` of their call when they have one (written into
/// `payload.data.seq`).
fn push_events<'a>(
    uow: &'a crate::store::UnitOfWork,
    call: Option<(&'a String, i64)>,
    events: &'a [crate::store::NewEvent],
    out: &mut Vec<EventRow<'a>>,
) -> crate::store::Result<Vec<Option<i64>>> {
    let mut seqs = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let seq = call.map(|(_, first)| first + i as i64);
        let payload = serde_json::to_vec(&crate::store::sqlite::WithSeq(&event.payload, seq))
            .map_err(|e| crate::store::StoreError::Backend(format!("cannot encode event: {e}")))?;
        out.push(EventRow {
            event_id: &event.event_id,
            tenant: &uow.tenant,
            call_id: call.map(|(id, _)| id.as_str()),
            seq,
            event_type: &event.event_type,
            payload,
            at: uow.now_ms,
        });
        seqs.push(seq);
    }
    Ok(seqs)
}

pub(super) async fn outbox_step(
    tx: &Tx,
    st: &Stmts,
    rows: &[EventRow<'_>],
) -> Result<Reply, tokio_postgres::Error> {
    let ids: Vec<&str> = rows.iter().map(|r| r.event_id).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant).collect();
    let calls: Vec<Option<&str>> = rows.iter().map(|r| r.call_id).collect();
    let seqs: Vec<Option<i64>> = rows.iter().map(|r| r.seq).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| &r.payload[..]).collect();
    let ats: Vec<i64> = rows.iter().map(|r| r.at).collect();
    tx.execute(
        &st.outbox_insert,
        &[&ids, &tenants, &calls, &seqs, &types, &payloads, &ats],
    )
    .await
    .map(Reply::Count)
}

/// Claims the resend key: a row back when claimed (new, or replacing an expired one).
fn dedup_step<'a>(
    tx: &'a Tx,
    st: &'a Stmts,
    uow: &'a crate::store::UnitOfWork,
    dedup: &'a crate::store::DedupWrite,
) -> Step<'a> {
    Box::pin(async move {
        tx.query_opt(
            &st.dedup_claim,
            &[
                &uow.tenant,
                &&dedup.key_hash[..],
                &dedup.expires_at_ms,
                &i32::from(dedup.response.status),
                &dedup.response.content_type,
                &dedup.response.body,
                &uow.now_ms,
            ],
        )
        .await
        .map(Reply::Row)
    })
}

/// Writes a call (or entity) row guarded by its version: a created row counts 1 (0 when it
/// exists already), an updated one returns the first sequence number of its `events` new
/// events (none when another writer, in this instance or another, got there first).
fn call_step<'a>(
    tx: &'a Tx,
    st: &'a Stmts,
    call: &'a crate::store::CallWrite,
    events: i64,
    now_ms: i64,
) -> Step<'a> {
    Box::pin(async move {
        let attached = tokio_postgres::types::Json(&call.attached);
        let state = call.state.as_deref();
        match call.expected_version {
            None => tx
                .execute(
                    &st.call_insert,
                    &[
                        &call.key.tenant,
                        &call.key.vendor,
                        &call.key.vendor_call_id,
                        &call.call_id,
                        &(1 + events),
                        &call.status,
                        &attached,
                        &state,
                        &call.expires_at_ms,
                        &now_ms,
                    ],
                )
                .await
                .map(Reply::Count),
            Some(version) => tx
                .query_opt(
                    &st.call_update,
                    &[
                        &events,
                        &call.status,
                        &attached,
                        &state,
                        &call.expires_at_ms,
                        &now_ms,
                        &call.key.tenant,
                        &call.key.vendor,
                        &call.key.vendor_call_id,
                        &version,
                        &call.call_id,
                    ],
                )
                .await
                .map(Reply::Row),
        }
    })
}

/// Moves a written call's expiry timer (or removes it when the call no longer expires).
fn expiry_step<'a>(tx: &'a Tx, st: &'a Stmts, call: &'a crate::store::CallWrite) -> Step<'a> {
    Box::pin(async move {
        let key = format!("call_expiry:{}", call.call_id);
        match call.expires_at_ms {
            Some(due) => {
                let payload = serde_json::json!({"call_id": call.call_id});
                tx.execute(
                    &st.timer_set,
                    &[&key, &"call_expiry", &call.key.tenant, &due, &payload],
                )
                .await
            }
            None => tx.execute(&st.timer_delete, &[&key]).await,
        }
        .map(Reply::Count)
    })
}

fn timer_step<'a>(tx: &'a Tx, st: &'a Stmts, op: &'a crate::store::TimerOp) -> Step<'a> {
    Box::pin(async move {
        match op {
            crate::store::TimerOp::Set {
                key,
                kind,
                tenant,
                due_ms,
                payload,
            } => {
                tx.execute(&st.timer_set, &[key, kind, tenant, due_ms, payload])
                    .await
            }
            crate::store::TimerOp::Delete { key } => tx.execute(&st.timer_delete, &[key]).await,
        }
        .map(Reply::Count)
    })
}

/// Claims (a row written when claimed) or releases one alias; a claim held, and not
/// lapsed, by another owner is not written. Of two instances claiming one alias at once, the
/// second waits for the first's commit and then finds it taken.
fn alias_step<'a>(
    tx: &'a Tx,
    st: &'a Stmts,
    tenant: &'a str,
    alias: &'a crate::store::AliasOp,
    now_ms: i64,
) -> Step<'a> {
    Box::pin(async move {
        match alias.action {
            crate::store::AliasAction::Release => {
                tx.execute(
                    &st.alias_release,
                    &[
                        &tenant,
                        &alias.namespace,
                        &alias.value,
                        &alias.owner_kind,
                        &alias.owner_id,
                    ],
                )
                .await
            }
            crate::store::AliasAction::Claim { until_ms: until } => {
                tx.execute(
                    &st.alias_claim,
                    &[
                        &tenant,
                        &alias.namespace,
                        &alias.value,
                        &alias.owner_kind,
                        &alias.owner_id,
                        &until,
                        &now_ms,
                    ],
                )
                .await
            }
        }
        .map(Reply::Count)
    })
}

/// Applies one unit of work alone, statement by statement, inside the batch's transaction
/// (its savepoint is the caller's), and finds its exact outcome; a committed unit's events
/// come back for the caller to insert. The resend key is claimed first, so of two instances
/// given the same resend at once one records it and the other answers with its stored answer.
pub(super) async fn apply_uow<'u>(
    tx: &Tx,
    st: &Stmts,
    uow: &'u crate::store::UnitOfWork,
    batch: &Counters,
    mine: &mut Counters,
) -> Result<(crate::store::CommitOutcome, Vec<EventRow<'u>>), ApplyError> {
    use crate::store::CommitOutcome;
    if let Some(dedup) = &uow.dedup {
        if !claimed(&dedup_step(tx, st, uow, dedup).await?) {
            if let Some(r) = tx
                .query_opt(&st.dedup_read, &[&uow.tenant, &&dedup.key_hash[..]])
                .await?
            {
                let response = ivrgate_adapter::StoredResponse {
                    status: u16::try_from(r.try_get::<_, i32>(0)?).unwrap_or(500),
                    content_type: r.try_get(1)?,
                    body: r.try_get(2)?,
                };
                return Ok((CommitOutcome::Duplicate(response), Vec::new()));
            }
        }
    }
    let total_events = uow.event_count() as i64;
    if let (Some(quota), true) = (uow.outbox_quota, total_events > 0) {
        let stored = match batch.read.get(&uow.tenant) {
            Some(p) => *p,
            None => {
                let p = match tx.query_opt(&st.pending_one, &[&uow.tenant]).await? {
                    Some(r) => r.try_get::<_, i64>(0)?,
                    None => 0,
                };
                mine.read.insert(uow.tenant.clone(), p);
                p
            }
        };
        let pending = stored + batch.delta.get(&uow.tenant).copied().unwrap_or(0);
        if pending.max(0) as u64 + total_events as u64 > quota {
            return Ok((CommitOutcome::QuotaExceeded, Vec::new()));
        }
    }
    let mut firsts = Vec::new();
    for (call, events) in written_rows(uow) {
        let Some(first) = first_seq(&call_step(tx, st, call, events, uow.now_ms).await?) else {
            return Ok((CommitOutcome::Conflict, Vec::new()));
        };
        firsts.push(first);
        expiry_step(tx, st, call).await?;
    }
    for alias in &uow.aliases {
        let written = alias_step(tx, st, &uow.tenant, alias, uow.now_ms).await?;
        if matches!(alias.action, crate::store::AliasAction::Claim { .. }) && !claimed(&written) {
            let row = tx
                .query_one(
                    &st.alias_owner,
                    &[&uow.tenant, &alias.namespace, &alias.value],
                )
                .await?;
            let taken = CommitOutcome::AliasTaken {
                namespace: alias.namespace.clone(),
                value: alias.value.clone(),
                owner_kind: row.try_get(0)?,
                owner_id: row.try_get(1)?,
            };
            return Ok((taken, Vec::new()));
        }
    }
    for timer in &uow.timers {
        timer_step(tx, st, timer).await?;
    }
    let mut events = Vec::new();
    let seqs = unit_events(uow, &firsts, &mut events).map_err(ApplyError::Other)?;
    if total_events > 0 {
        *mine.delta.entry(uow.tenant.clone()).or_insert(0) += total_events;
    }
    Ok((CommitOutcome::Committed { seqs }, events))
}
