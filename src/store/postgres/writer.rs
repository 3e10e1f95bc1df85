//! The writer: one task per instance takes queued units of work and commits them in
//! batches (group commit), each batch sent as a pipeline with savepoints for the units that
//! need them.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::uow::{
    apply_uow, outbox_step, pipeline, settle, simple, unit_events, unit_steps, EventRow, Reply,
    Step, Stmts, Tx,
};
use super::{db_err, describe, lock, no_answer, PgStore};

/// A unit of work waiting for the writer.
pub(super) struct Job {
    uow: crate::store::UnitOfWork,
    /// Nobody acknowledges it: it may wait briefly for company, and a batch of such writes
    /// only commits without waiting for its WAL flush (the next durable commit's flush
    /// covers it: PostgreSQL flushes the WAL in order).
    lazy: bool,
    reply: tokio::sync::oneshot::Sender<crate::store::Result<crate::store::CommitOutcome>>,
}

/// How long writes nobody waits on may wait for others to share their commit.
const LAZY_WINDOW: Duration = Duration::from_millis(2);

/// How often one unit of work is tried again within its batch when the database chose it
/// as a deadlock victim (two instances' batches locking the same calls in another order).
const DEADLOCK_RETRIES: usize = 3;

impl PgStore {
    /// [`crate::store::Backend::commit`]: one unit of work, committed with `synchronous_commit =
    /// on` (flushed before this returns), or why not.
    pub async fn commit(
        &self,
        uow: crate::store::UnitOfWork,
    ) -> crate::store::Result<crate::store::CommitOutcome> {
        self.queue_uow(uow, false).await
    }

    /// [`crate::store::Backend::commit_queued`]: queued before this returns, so this instance's
    /// later writes commit after it.
    pub fn commit_queued(
        &self,
        uow: crate::store::UnitOfWork,
    ) -> impl std::future::Future<Output = crate::store::Result<crate::store::CommitOutcome>>
           + Send
           + 'static {
        self.queue_uow(uow, true)
    }

    fn queue_uow(
        &self,
        uow: crate::store::UnitOfWork,
        lazy: bool,
    ) -> impl std::future::Future<Output = crate::store::Result<crate::store::CommitOutcome>>
           + Send
           + 'static {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = match lock(&self.writer).as_ref() {
            Some(writer) => writer.send(Job { uow, lazy, reply }).is_ok(),
            None => false,
        };
        async move {
            if !sent {
                return Err(crate::store::StoreError::Closed);
            }
            answer.await.map_err(|_| crate::store::StoreError::Closed)?
        }
    }
}

pub(super) async fn writer_loop(
    pool: Pool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>,
    max: usize,
    owner_id: String,
    changes: Arc<crate::store::ChangeFeed>,
    answer_within: Duration,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max);
    // The writer's own connection, kept from batch to batch: it never queues for one behind
    // the reads (at 1,000 decisions/s the pool is busy), and its statements stay prepared.
    let mut conn: Option<deadpool_postgres::Object> = None;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Writes nobody waits on give others a moment to join them, unless a durable one
        // (an acknowledgement waits on it) arrives.
        if batch.iter().all(|j| j.lazy) {
            let until = tokio::time::Instant::now() + LAZY_WINDOW;
            while batch.len() < max {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(job)) => {
                        let durable = !job.lazy;
                        batch.push(job);
                        if durable {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        let uows: Vec<&crate::store::UnitOfWork> = batch.iter().map(|j| &j.uow).collect();
        let durable = batch.iter().any(|j| !j.lazy);
        let results = tokio::time::timeout(
            answer_within,
            run_batch(&pool, &mut conn, &uows, durable, &owner_id),
        )
        .await
        .unwrap_or_else(|_| {
            // Whether it committed is unknown: callers answer "try again", and a resend meets
            // its stored answer if it did.
            pool.retain(|_, _| false);
            Err(no_answer(answer_within))
        });
        if results.is_err() {
            // Whatever state it was left in, it is not used again.
            if let Some(broken) = conn.take() {
                drop(deadpool_postgres::Object::take(broken));
            }
        }
        let outbox = match &results {
            Ok(outcomes) => outcomes.iter().zip(&uows).any(|(o, u)| {
                matches!(o, Ok(crate::store::CommitOutcome::Committed { .. }))
                    && u.event_count() > 0
            }),
            Err(_) => false,
        };
        match results {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
        if outbox {
            changes.outbox.notify_one();
        }
    }
}

/// Runs a batch in one transaction, each unit of work under its own savepoint (a refusal or
/// an error rolls back only its own writes). The pending-event counters are moved once per
/// tenant at the end, so their rows stay locked only for the commit; a `NOTIFY` tells other
/// instances what changed. `Err` when the transaction itself failed: nothing committed (or,
/// when the answer to `COMMIT` was lost, unknown; never reported committed).
///
/// Round trips bound a writer whose database is a network hop (or a busy process) away, so
/// the batch is sent as pipelines, two when every unit commits as sent: `BEGIN` and every
/// unit's statements go out back to back, in the order the units are applied, and their
/// answers are read afterwards; then the batch's events, counters, notices and `COMMIT`
/// ([`finish`]). A unit commits as sent when all its statements succeeded and its guards
/// held (resend key claimed, rows at the expected version, aliases claimed, quota not
/// reached). The first try sends the units without a savepoint each (a subtransaction per
/// unit is a good part of the server's work); when one of them did not commit as sent, the
/// try is rolled back and the units go again, each under its savepoint. Then, at the first
/// unit that did not commit as sent, the transaction rolls back to that unit's savepoint
/// (undoing it and every unit sent after it), the unit is applied alone, statement by
/// statement ([`apply_uow`], the exact outcome: conflict, duplicate, refusal or error, with
/// deadlock retries), and the units after it go out again. The events of all committed units
/// are inserted at the end in one statement; should that (or anything else in the last
/// pipeline) fail, the transaction rolled back, and every unit is applied again alone with
/// its own events in a new one ([`one_by_one`]), so one unit's failure fails only it.
async fn run_batch(
    pool: &Pool,
    conn: &mut Option<deadpool_postgres::Object>,
    uows: &[&crate::store::UnitOfWork],
    durable: bool,
    owner_id: &str,
) -> crate::store::Result<Vec<crate::store::Result<crate::store::CommitOutcome>>> {
    if uows.is_empty() {
        return Ok(Vec::new());
    }
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(pool.get().await.map_err(|e| {
            crate::store::StoreError::Backend(format!("PostgreSQL: {}", describe(&e)))
        })?);
    }
    let Some(client) = conn.as_ref() else {
        return Err(crate::store::StoreError::Closed);
    };
    let tx: &Tx = client;
    // Prepared on the connection's first batch, then taken from its cache (no round trip).
    let st = Stmts::prepare(tx).await.map_err(db_err)?;
    let mut batch = Batch::new(uows.len());
    let order = as_sent(tx, &st, uows, durable, &mut batch).await?;
    match finish(tx, &st, &batch, owner_id).await.map_err(db_err)? {
        Ended::Committed => {}
        Ended::RolledBack(e) => {
            tracing::warn!(error = %describe(&e), units = uows.len(), "a batch's writes failed together; applying its units one by one");
            batch = Batch::new(uows.len());
            one_by_one(tx, &st, uows, &order, durable, &mut batch).await?;
            match finish(tx, &st, &batch, owner_id).await.map_err(db_err)? {
                Ended::Committed => {}
                Ended::RolledBack(e) => return Err(db_err(e)),
            }
        }
    }
    Ok(batch
        .outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Err(crate::store::StoreError::Backend(
                    "write was not applied".into(),
                ))
            })
        })
        .collect())
}

/// Opens the batch's transaction and applies its units in it (see [`run_batch`]), recording
/// each unit's outcome in `batch`, and gives the order they were applied in. `BEGIN` goes out
/// in the first pipeline, with the units, not awaited alone: every statement after it is the
/// transaction's, as the connection is this writer's alone and carries no transaction
/// between batches (one that failed is not used again). `Err` when the transaction failed.
async fn as_sent<'a>(
    tx: &Tx,
    st: &Stmts,
    uows: &[&'a crate::store::UnitOfWork],
    durable: bool,
    batch: &mut Batch<'a>,
) -> crate::store::Result<Vec<usize>> {
    // Rows are locked in one order by every instance (the call's key; a stable sort keeps
    // this instance's writes to one call in the order they were queued), so two instances'
    // batches touching the same calls wait on each other instead of deadlocking.
    let mut order: Vec<usize> = (0..uows.len()).collect();
    if sortable(uows) {
        order.sort_by(|&a, &b| lock_key(uows[a]).cmp(&lock_key(uows[b])));
    }
    // Sent ahead of the first unit: the transaction's start, its commit mode, and the pending
    // counters of the tenants whose units have a quota (the quota is checked here, from these
    // and the batch's own additions).
    let mut quota_tenants: Vec<&str> = uows
        .iter()
        .filter(|u| u.outbox_quota.is_some() && u.event_count() > 0)
        .map(|u| u.tenant.as_str())
        .collect();
    quota_tenants.sort_unstable();
    quota_tenants.dedup();
    // Everything this batch writes comes after savepoint `b`, so it can all be undone.
    let mut prelude: Vec<Step<'_>> = vec![simple(tx, begin(durable) + "; SAVEPOINT b")];
    if !quota_tenants.is_empty() {
        let tenants = quota_tenants.clone();
        prelude.push(Box::pin(async move {
            tx.query(&st.pending_many, &[&tenants])
                .await
                .map(Reply::Rows)
        }));
    }
    let mut prelude = Some(prelude);
    // The first try sends the units without a savepoint each (a subtransaction per unit is
    // a good part of the server's work): when all commit as sent, as they nearly always do,
    // that is the batch. Otherwise it is undone and every unit gets its savepoint.
    let mut savepoints = false;
    let mut window = order.len();
    let mut pos = 0;
    while pos < order.len() {
        let end = (pos + window).min(order.len());
        let mut steps = prelude.take().unwrap_or_default();
        let ahead = steps.len();
        let mut spans = Vec::with_capacity(end - pos);
        for (p, &at) in order.iter().enumerate().take(end).skip(pos) {
            let start = steps.len() - ahead;
            if savepoints {
                steps.push(simple(tx, format!("SAVEPOINT p{p}")));
            }
            let mut checks = Vec::new();
            unit_steps(tx, st, uows[at], &mut steps, &mut checks);
            spans.push((start, checks));
        }
        let mut replies = pipeline(steps).await;
        let replies = {
            let units = replies.split_off(ahead);
            for reply in replies {
                if let Reply::Rows(rows) = reply.map_err(db_err)? {
                    for r in rows {
                        let (tenant, pending): (String, i64) =
                            (r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?);
                        batch.counters.read.insert(tenant, pending);
                    }
                    for tenant in &quota_tenants {
                        batch.counters.read.entry((*tenant).to_owned()).or_insert(0);
                    }
                }
            }
            units
        };
        let mut stopped = None;
        for (i, (start, checks)) in spans.iter().enumerate() {
            let (p, at) = (pos + i, order[pos + i]);
            let uow = uows[at];
            let first = usize::from(savepoints);
            let answers = &replies[start + first..start + first + checks.len()];
            let saved = !savepoints || replies[*start].is_ok();
            let settled = match (saved, settle(uow, checks, answers, &batch.counters)) {
                (true, Some(firsts)) => {
                    let mut rows = Vec::new();
                    unit_events(uow, &firsts, &mut rows)
                        .ok()
                        .map(|seqs| (seqs, rows))
                }
                _ => None,
            };
            match settled {
                Some((seqs, rows)) => {
                    let events = uow.event_count() as i64;
                    if events > 0 {
                        *batch.counters.delta.entry(uow.tenant.clone()).or_insert(0) += events;
                    }
                    batch.committed(at, uow, seqs, rows);
                }
                None => {
                    stopped = Some(p);
                    break;
                }
            }
        }
        drop(replies);
        match stopped {
            None => {
                pos = end;
                window = window.saturating_mul(2);
            }
            Some(_) if !savepoints => {
                tx.batch_execute("ROLLBACK TO b").await.map_err(db_err)?;
                batch.reset();
                savepoints = true;
                pos = 0;
            }
            Some(p) => {
                tx.batch_execute(&format!("ROLLBACK TO p{p}"))
                    .await
                    .map_err(db_err)?;
                slow_unit(tx, st, uows[order[p]], order[p], batch, false).await?;
                pos = p + 1;
                // Conflicts come in runs (units on one hot call): send fewer at once, so a
                // refusal costs fewer units sent again.
                window = (window / 2).max(PIPELINE_MIN);
            }
        }
    }
    Ok(order)
}

/// The statements that open a batch's transaction: a batch nobody waits on commits without
/// waiting for its WAL flush.
fn begin(durable: bool) -> String {
    if durable {
        "BEGIN".to_owned()
    } else {
        "BEGIN; SET LOCAL synchronous_commit = off".to_owned()
    }
}

/// Applies every unit alone, in `order`, in a new transaction (the batch's first one rolled
/// back), each with its own events, recording its outcome in `batch`. `Err` when the
/// transaction failed.
async fn one_by_one<'a>(
    tx: &Tx,
    st: &Stmts,
    uows: &[&'a crate::store::UnitOfWork],
    order: &[usize],
    durable: bool,
    batch: &mut Batch<'a>,
) -> crate::store::Result<()> {
    tx.batch_execute(&begin(durable)).await.map_err(db_err)?;
    for &at in order {
        slow_unit(tx, st, uows[at], at, batch, true).await?;
    }
    Ok(())
}

/// After a refusal, at least this many units go out in the next pipeline.
const PIPELINE_MIN: usize = 4;

/// What a batch has committed so far (under its savepoints).
struct Batch<'a> {
    counters: Counters,
    outcomes: Vec<Option<crate::store::Result<crate::store::CommitOutcome>>>,
    /// The events of the committed units, inserted together by [`finish`].
    events: Vec<EventRow<'a>>,
    outbox: bool,
    timers: bool,
    rows: bool,
}

impl<'a> Batch<'a> {
    fn new(units: usize) -> Batch<'a> {
        Batch {
            counters: Counters::default(),
            outcomes: vec![None; units],
            events: Vec::new(),
            outbox: false,
            timers: false,
            rows: false,
        }
    }

    fn committed(
        &mut self,
        at: usize,
        uow: &crate::store::UnitOfWork,
        seqs: Vec<Option<i64>>,
        events: Vec<EventRow<'a>>,
    ) {
        self.outcomes[at] = Some(Ok(crate::store::CommitOutcome::Committed { seqs }));
        self.events.extend(events);
        self.outbox |= uow.event_count() > 0;
        self.timers |= !uow.timers.is_empty();
        self.rows = true;
    }

    /// Forgets every unit (after rolling them all back); the counters as read stay.
    fn reset(&mut self) {
        self.counters.delta.clear();
        self.outcomes.iter_mut().for_each(|o| *o = None);
        self.events.clear();
        (self.outbox, self.timers, self.rows) = (false, false, false);
    }
}

/// Applies one unit of work alone under its own savepoint, statement by statement, and
/// records its outcome; with `inline` its events are inserted at once (else they join the
/// batch's). A deadlock victim is tried again. `Err` when the transaction itself failed.
async fn slow_unit<'a>(
    tx: &Tx,
    st: &Stmts,
    uow: &'a crate::store::UnitOfWork,
    at: usize,
    batch: &mut Batch<'a>,
    inline: bool,
) -> crate::store::Result<()> {
    let mut tries = 0;
    let outcome = loop {
        tx.batch_execute("SAVEPOINT uow").await.map_err(db_err)?;
        let mut mine = Counters::default();
        let mut applied = apply_uow(tx, st, uow, &batch.counters, &mut mine).await;
        if inline {
            let failed = match &applied {
                Ok((crate::store::CommitOutcome::Committed { .. }, events))
                    if !events.is_empty() =>
                {
                    outbox_step(tx, st, events).await.err()
                }
                _ => None,
            };
            if let Some(e) = failed {
                applied = Err(ApplyError::Db(e));
            }
        }
        match applied {
            Ok((crate::store::CommitOutcome::Committed { seqs }, events)) => {
                tx.batch_execute("RELEASE uow").await.map_err(db_err)?;
                batch.counters.absorb(mine);
                batch.committed(at, uow, seqs, if inline { Vec::new() } else { events });
                return Ok(());
            }
            other => {
                tx.batch_execute("ROLLBACK TO uow; RELEASE uow")
                    .await
                    .map_err(db_err)?;
                match other {
                    Err(ApplyError::Db(e)) if retryable(&e) && tries < DEADLOCK_RETRIES => {
                        tries += 1;
                        continue;
                    }
                    Err(e) => break Err(e.into_store()),
                    Ok((refused, _)) => break Ok(refused),
                }
            }
        }
    };
    batch.outcomes[at] = Some(outcome);
    Ok(())
}

/// How a batch's transaction ended.
enum Ended {
    Committed,
    /// A statement before `COMMIT` failed (the first such error): the transaction rolled
    /// back, and the connection is out of it, ready for another.
    RolledBack(tokio_postgres::Error),
}

/// The end of a batch, as one pipeline: its events in one statement, the pending counters
/// moved once per tenant, the notices to other instances, and `COMMIT`.
///
/// The batch's units are committed only when every statement here succeeded and `COMMIT`
/// too. A statement the server refused aborted the transaction, which makes `COMMIT` (sent
/// behind it, not knowing) a rollback without an error: that is [`Ended::RolledBack`], as is
/// a statement that failed before it was sent (its parameters could not be encoded), for
/// which `COMMIT` is not sent but `ROLLBACK` after the others' answers. Whenever a unit
/// committed, the "rows" notice is among the statements, so an aborted transaction cannot
/// reach `COMMIT` unnoticed. `Err` when the outcome is not known (the connection failed, or
/// an error came from this side after the statement ran): the connection is not used again.
async fn finish(
    tx: &Tx,
    st: &Stmts,
    batch: &Batch<'_>,
    owner_id: &str,
) -> Result<Ended, tokio_postgres::Error> {
    let mut steps: Vec<Step<'_>> = Vec::new();
    if !batch.events.is_empty() {
        steps.push(Box::pin(outbox_step(tx, st, &batch.events)));
    }
    for (tenant, delta) in batch.counters.deltas() {
        steps.push(Box::pin(async move {
            tx.execute(&st.pending_add, &[&tenant, &delta])
                .await
                .map(Reply::Count)
        }));
    }
    for (changed, what) in [
        (batch.outbox, "outbox"),
        (batch.timers, "timers"),
        (batch.rows, "rows"),
    ] {
        if changed {
            let channel = format!("{owner_id}:{what}");
            steps.push(Box::pin(async move {
                tx.execute(&st.notify, &[&channel]).await.map(Reply::Count)
            }));
        }
    }
    debug_assert!(
        batch
            .outcomes
            .iter()
            .all(|o| !matches!(o, Some(Ok(crate::store::CommitOutcome::Committed { .. }))))
            || batch.rows
    );
    match pipeline_then(steps, simple(tx, "COMMIT".to_owned())).await {
        Piped::Sent(replies, commit) => {
            commit?;
            match replies.into_iter().find_map(Result::err) {
                None => Ok(Ended::Committed),
                // The server refused it: the transaction was aborted, `COMMIT` rolled it back.
                Some(e) if e.code().is_some() => Ok(Ended::RolledBack(e)),
                // Failed on this side after it was sent: whether it ran is not known.
                Some(e) => Err(e),
            }
        }
        Piped::Unsent(e) => {
            tx.batch_execute("ROLLBACK").await?;
            Ok(Ended::RolledBack(e))
        }
    }
}

/// What [`pipeline_then`] answered.
enum Piped {
    /// Every statement's answer, and the last one's.
    Sent(
        Vec<Result<Reply, tokio_postgres::Error>>,
        Result<Reply, tokio_postgres::Error>,
    ),
    /// A statement failed before it was sent (the first such error); the last one was not
    /// sent, the others' answers were read.
    Unsent(tokio_postgres::Error),
}

/// [`pipeline`] with a last statement sent behind `steps` only when each of them was sent:
/// a statement whose request could not be made (its parameters could not be encoded) fails
/// on its first poll, without reaching the server, and then `last` is dropped unsent.
async fn pipeline_then<'a>(mut steps: Vec<Step<'a>>, mut last: Step<'a>) -> Piped {
    let mut replies: Vec<Option<Result<Reply, tokio_postgres::Error>>> =
        steps.iter().map(|_| None).collect();
    let mut unsent = None;
    let mut answer = None;
    std::future::poll_fn(|cx| {
        for (step, reply) in steps.iter_mut().zip(replies.iter_mut()) {
            if let std::task::Poll::Ready(r) = std::future::Future::poll(step.as_mut(), cx) {
                *reply = Some(match r {
                    // Failed on its first poll: it never reached the server. (Its place
                    // among the answers, dropped then, is kept by a stand-in.)
                    Err(e) if unsent.is_none() => {
                        unsent = Some(e);
                        Ok(Reply::Done)
                    }
                    r => r,
                });
            }
        }
        if unsent.is_none() {
            if let std::task::Poll::Ready(r) = std::future::Future::poll(last.as_mut(), cx) {
                answer = Some(r);
            }
        }
        std::task::Poll::Ready(())
    })
    .await;
    let mut answers = Vec::with_capacity(steps.len());
    for (step, reply) in steps.into_iter().zip(replies) {
        answers.push(match reply {
            Some(r) => r,
            None => step.await,
        });
    }
    match unsent {
        Some(e) => Piped::Unsent(e),
        None => {
            let answer = match answer {
                Some(r) => r,
                None => last.await,
            };
            Piped::Sent(answers, answer)
        }
    }
}

/// Whether sorting by [`lock_key`] keeps every pair of units of work that write a common
/// row in queue order: true unless a unit writing several rows shares one with another unit
/// (then the batch keeps its queue order).
fn sortable(uows: &[&crate::store::UnitOfWork]) -> bool {
    let rows = |u: &crate::store::UnitOfWork| -> Vec<(String, String, String)> {
        u.call
            .iter()
            .chain(u.entities.iter().map(|e| &e.row))
            .map(|r| {
                (
                    r.key.tenant.clone(),
                    r.key.vendor.clone(),
                    r.key.vendor_call_id.clone(),
                )
            })
            .collect()
    };
    let mut writers: std::collections::HashMap<(String, String, String), usize> =
        std::collections::HashMap::new();
    let all: Vec<Vec<(String, String, String)>> = uows.iter().map(|u| rows(u)).collect();
    for keys in &all {
        for key in keys {
            *writers.entry(key.clone()).or_insert(0) += 1;
        }
    }
    all.iter()
        .filter(|keys| keys.len() > 1)
        .all(|keys| keys.iter().all(|k| writers.get(k) == Some(&1)))
}

/// The row a unit of work locks first: its call's (or first entity's) key.
fn lock_key(uow: &crate::store::UnitOfWork) -> Option<(&str, &str, &str)> {
    let row = uow
        .call
        .as_ref()
        .or_else(|| uow.entities.first().map(|e| &e.row))?;
    Some((
        row.key.tenant.as_str(),
        row.key.vendor.as_str(),
        row.key.vendor_call_id.as_str(),
    ))
}

pub(super) fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

pub(super) enum ApplyError {
    Db(tokio_postgres::Error),
    Other(crate::store::StoreError),
}

impl ApplyError {
    pub(super) fn into_store(self) -> crate::store::StoreError {
        match self {
            ApplyError::Db(e) => db_err(e),
            ApplyError::Other(e) => e,
        }
    }
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApplyError::Db(e)
    }
}

/// Pending-event counters within a batch: the stored value as read (for quotas) and what
/// the batch's committed units of work add.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) read: std::collections::HashMap<String, i64>,
    pub(super) delta: std::collections::HashMap<String, i64>,
}

impl Counters {
    fn absorb(&mut self, other: Counters) {
        for (tenant, pending) in other.read {
            self.read.entry(tenant).or_insert(pending);
        }
        for (tenant, delta) in other.delta {
            *self.delta.entry(tenant).or_insert(0) += delta;
        }
    }

    fn deltas(&self) -> Vec<(String, i64)> {
        let mut all: Vec<(String, i64)> = self
            .delta
            .iter()
            .filter(|(_, d)| **d != 0)
            .map(|(t, d)| (t.clone(), *d))
            .collect();
        // One order for every instance: two batches never wait on each other's counters.
        all.sort();
        all
    }
}
