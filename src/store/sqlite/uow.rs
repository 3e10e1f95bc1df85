//! A unit of work applied inside the writer's transaction: the stored answer of a resend,
//! version-guarded call and entity rows, events into the outbox (a large payload kept in
//! `payloads`), aliases, timers and the tenant's pending count.

use ivrgate_adapter::StoredResponse;
use rusqlite::blob::ZeroBlob;
use rusqlite::{params, Connection, OptionalExtension, MAIN_DB};
use serde_json::Value;

use super::*;

/// Applies a unit of work. Every refusal but a version conflict or a taken alias of an
/// entity is decided before the first write; those two roll back what the unit wrote, so a
/// refusal leaves nothing behind. A backend error rolls the job's savepoint back.
pub(super) fn apply_uow(c: &Connection, uow: &UnitOfWork) -> Result<CommitOutcome> {
    if uow.entities.is_empty() && uow.aliases.is_empty() {
        return apply_checked(c, uow);
    }
    c.prepare_cached("SAVEPOINT uow")?.execute([])?;
    let outcome = apply_checked(c, uow);
    match &outcome {
        Ok(CommitOutcome::Committed { .. }) => {
            c.prepare_cached("RELEASE uow")?.execute([])?;
        }
        _ => c.execute_batch("ROLLBACK TO uow; RELEASE uow")?,
    }
    outcome
}

/// The stored answer of an earlier request with the unit's resend key, if it has one.
pub(super) fn find_duplicate(c: &Connection, uow: &UnitOfWork) -> Result<Option<StoredResponse>> {
    let Some(dedup) = &uow.dedup else {
        return Ok(None);
    };
    let found = c
        .prepare_cached(
            "SELECT status, content_type, body FROM dedup \
             WHERE tenant = ?1 AND key_hash = ?2 AND expires_at_ms > ?3",
        )?
        .query_row(params![uow.tenant, &dedup.key_hash[..], uow.now_ms], |r| {
            Ok(StoredResponse {
                status: r.get::<_, i64>(0)? as u16,
                content_type: r.get(1)?,
                body: r.get(2)?,
            })
        })
        .optional()?;
    Ok(found)
}

fn apply_checked(c: &Connection, uow: &UnitOfWork) -> Result<CommitOutcome> {
    if let Some(found) = find_duplicate(c, uow)? {
        return Ok(CommitOutcome::Duplicate(found));
    }
    let total_events = uow.event_count();
    if let (Some(quota), true) = (uow.outbox_quota, total_events > 0) {
        let pending: i64 = c
            .prepare_cached("SELECT pending FROM tenant_counters WHERE tenant = ?1")?
            .query_row([&uow.tenant], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if pending as u64 + total_events as u64 > quota {
            return Ok(CommitOutcome::QuotaExceeded);
        }
    }
    // The call first: its version check decides whether anything is written, and its
    // sequence counter is advanced by the number of events in the same statement.
    let mut seqs = Vec::with_capacity(uow.events.len());
    match &uow.call {
        Some(call) => {
            let Some(first_seq) = write_call(c, call, uow.events.len() as i64, uow.now_ms)? else {
                return Ok(CommitOutcome::Conflict);
            };
            seqs = insert_events(c, uow, Some((&call.call_id, first_seq)), &uow.events)?;
        }
        None => {
            insert_events(c, uow, None, &uow.events)?;
            seqs.resize(uow.events.len(), None);
        }
    }
    for entity in &uow.entities {
        let Some(first_seq) = write_call(c, &entity.row, entity.events.len() as i64, uow.now_ms)?
        else {
            return Ok(CommitOutcome::Conflict);
        };
        insert_events(
            c,
            uow,
            Some((&entity.row.call_id, first_seq)),
            &entity.events,
        )?;
    }
    for alias in &uow.aliases {
        if let Some(taken) = apply_alias(c, &uow.tenant, alias, uow.now_ms)? {
            return Ok(taken);
        }
    }
    if total_events > 0 {
        bump_pending(c, &uow.tenant, total_events as i64)?;
    }
    for timer in &uow.timers {
        match timer {
            TimerOp::Set {
                key,
                kind,
                tenant,
                due_ms,
                payload,
            } => set_timer(c, key, kind, tenant, *due_ms, payload)?,
            TimerOp::Delete { key } => {
                c.prepare_cached("DELETE FROM timers WHERE key = ?1")?
                    .execute([key])?;
            }
        }
    }
    if let Some(dedup) = &uow.dedup {
        c.prepare_cached(
            "INSERT INTO dedup (tenant, key_hash, expires_at_ms, status, content_type, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, key_hash) DO UPDATE SET \
             expires_at_ms = ?3, status = ?4, content_type = ?5, body = ?6",
        )?
        .execute(params![
            uow.tenant,
            &dedup.key_hash[..],
            dedup.expires_at_ms,
            dedup.response.status,
            dedup.response.content_type,
            dedup.response.body
        ])?;
    }
    Ok(CommitOutcome::Committed { seqs })
}

/// Writes a call (or entity) row guarded by its version and moves its expiry timer. Returns
/// the sequence number of the first of its `events` new events, or `None` on a conflict.
fn write_call(c: &Connection, call: &CallWrite, events: i64, now_ms: i64) -> Result<Option<i64>> {
    let attached = serde_json::to_string(&call.attached).unwrap_or_else(|_| "{}".into());
    let state = call.state.as_ref().map(|s| s.to_string());
    let mut first_seq = 1;
    match call.expected_version {
        None => {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO calls (tenant, vendor, vendor_call_id, call_id, version, next_seq, \
                     status, attached, state, expires_at_ms, updated_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    call.key.tenant,
                    call.key.vendor,
                    call.key.vendor_call_id,
                    call.call_id,
                    1 + events,
                    call.status,
                    attached,
                    state,
                    call.expires_at_ms,
                    now_ms
                ])?;
            if inserted == 0 {
                return Ok(None);
            }
        }
        Some(version) => {
            let updated: Option<i64> = c
                .prepare_cached(
                    "UPDATE calls SET version = version + 1, next_seq = next_seq + ?1, status = ?2, \
                     attached = ?3, state = ?4, expires_at_ms = ?5, updated_at_ms = ?6 \
                     WHERE tenant = ?7 AND vendor = ?8 AND vendor_call_id = ?9 AND version = ?10 \
                     AND call_id = ?11 RETURNING next_seq - ?1",
                )?
                .query_row(
                    params![
                        events,
                        call.status,
                        attached,
                        state,
                        call.expires_at_ms,
                        now_ms,
                        call.key.tenant,
                        call.key.vendor,
                        call.key.vendor_call_id,
                        version,
                        call.call_id
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            match updated {
                Some(seq) => first_seq = seq,
                None => return Ok(None),
            }
        }
    }
    let timer_key = format!("call_expiry:{}", call.call_id);
    match call.expires_at_ms {
        Some(due) => set_timer(
            c,
            &timer_key,
            "call_expiry",
            &call.key.tenant,
            due,
            &serde_json::json!({"call_id": call.call_id}),
        )?,
        None => {
            c.prepare_cached("DELETE FROM timers WHERE key = ?1")?
                .execute([&timer_key])?;
        }
    }
    Ok(Some(first_seq))
}

/// Puts events in the outbox, numbered from `first_seq` of their call when they have one.
fn insert_events(
    c: &Connection,
    uow: &UnitOfWork,
    call: Option<(&String, i64)>,
    events: &[NewEvent],
) -> Result<Vec<Option<i64>>> {
    let mut seqs = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let seq = call.map(|(_, first)| first + i as i64);
        // The row is inserted with a zero-filled payload of the exact size, then the payload is
        // written into it in place, with `data.seq` spliced in, without copying the payload
        // first: a bound blob would be copied by SQLite and once more into the row, three
        // copies of a large event at once (ours, the bound one, the row).
        let payload = WithSeq(&event.payload, seq);
        let encode =
            |e: serde_json::Error| StoreError::Backend(format!("cannot encode event: {e}"));
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, &payload).map_err(encode)?;
        let len = i32::try_from(size.0).map_err(|_| {
            StoreError::Backend(format!("cannot store an event of {} bytes", size.0))
        })?;
        // A large payload goes in a row of its own (the outbox row's column stays empty):
        // there it is the record's last column, so SQLite never builds the zero-filled record
        // in memory, and updating the delivery's state never rewrites it.
        let separate = size.0 > INLINE_PAYLOAD;
        let mut insert = c.prepare_cached(
            "INSERT INTO outbox (event_id, tenant, call_id, seq, event_type, payload, created_at_ms, \
             next_attempt_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )?;
        insert.execute(params![
            &event.event_id,
            &uow.tenant,
            call.map(|(id, _)| id),
            seq,
            &event.event_type,
            ZeroBlob(if separate { 0 } else { len }),
            uow.now_ms,
        ])?;
        let id = c.last_insert_rowid();
        let blob = if separate {
            c.prepare_cached("INSERT INTO payloads (id, body) VALUES (?1, ?2)")?
                .execute(params![id, ZeroBlob(len)])?;
            c.blob_open(MAIN_DB, "payloads", "body", id, false)?
        } else {
            c.blob_open(MAIN_DB, "outbox", "payload", id, false)?
        };
        let mut writer = std::io::BufWriter::with_capacity(64 * 1024, blob);
        serde_json::to_writer(&mut writer, &payload).map_err(encode)?;
        writer
            .into_inner()
            .map_err(|e| StoreError::Backend(format!("cannot write event: {}", e.error())))?
            .close()?;
        seqs.push(seq);
    }
    Ok(seqs)
}

/// Event payloads longer than this are kept in the `payloads` table, not in the outbox row.
const INLINE_PAYLOAD: usize = 64 * 1024;

/// The payload of outbox row `id` when it is kept in `payloads`, read with incremental BLOB
/// I/O into one buffer of its size (reading the column would have SQLite build a copy of
/// its own first; a large buffer is mapped on its own, see [`crate::buffer`]); `None` when
/// the row has none there.
pub(super) fn separate_payload(c: &Connection, id: i64) -> Result<Option<bytes::Bytes>> {
    use std::io::Read as _;
    let exists = c
        .prepare_cached("SELECT 1 FROM payloads WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut blob = c.blob_open(MAIN_DB, "payloads", "body", id, true)?;
    let mut payload = crate::buffer::Buffer::zeroed(blob.len());
    blob.read_exact(payload.filled_mut())
        .map_err(|e| StoreError::Backend(format!("cannot read event payload {id}: {e}")))?;
    Ok(Some(payload.freeze()))
}

/// A writer that only counts what is written to it.
pub(super) struct ByteCount(pub(super) usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Claims or releases one alias; a claim held (and not lapsed) by another owner is refused.
fn apply_alias(
    c: &Connection,
    tenant: &str,
    alias: &AliasOp,
    now_ms: i64,
) -> Result<Option<CommitOutcome>> {
    match alias.action {
        AliasAction::Release => {
            c.prepare_cached(
                "DELETE FROM aliases WHERE tenant = ?1 AND namespace = ?2 AND value = ?3 \
                 AND owner_kind = ?4 AND owner_id = ?5",
            )?
            .execute(params![
                tenant,
                alias.namespace,
                alias.value,
                alias.owner_kind,
                alias.owner_id
            ])?;
            Ok(None)
        }
        AliasAction::Claim { until_ms: until } => {
            let claimed = c
                .prepare_cached(
                    "INSERT INTO aliases (tenant, namespace, value, owner_kind, owner_id, until_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, namespace, value) DO UPDATE \
                     SET owner_kind = excluded.owner_kind, owner_id = excluded.owner_id, \
                     until_ms = excluded.until_ms \
                     WHERE (aliases.owner_kind = excluded.owner_kind AND aliases.owner_id = excluded.owner_id) \
                     OR (aliases.until_ms IS NOT NULL AND aliases.until_ms <= ?7)",
                )?
                .execute(params![
                    tenant,
                    alias.namespace,
                    alias.value,
                    alias.owner_kind,
                    alias.owner_id,
                    until,
                    now_ms
                ])?;
            if claimed > 0 {
                return Ok(None);
            }
            let (owner_kind, owner_id) = c
                .prepare_cached(
                    "SELECT owner_kind, owner_id FROM aliases \
                     WHERE tenant = ?1 AND namespace = ?2 AND value = ?3",
                )?
                .query_row(params![tenant, alias.namespace, alias.value], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
            Ok(Some(CommitOutcome::AliasTaken {
                namespace: alias.namespace.clone(),
                value: alias.value.clone(),
                owner_kind,
                owner_id,
            }))
        }
    }
}

fn set_timer(
    c: &Connection,
    key: &str,
    kind: &str,
    tenant: &str,
    due: i64,
    payload: &Value,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO timers (key, kind, tenant, due_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (key) DO UPDATE SET due_ms = ?4, payload = ?5, lease_owner = NULL, lease_until_ms = 0",
    )?
    .execute(params![key, kind, tenant, due, payload.to_string()])?;
    Ok(())
}

pub(super) fn bump_pending(c: &Connection, tenant: &str, by: i64) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO tenant_counters (tenant, pending) VALUES (?1, MAX(?2, 0)) \
         ON CONFLICT (tenant) DO UPDATE SET pending = MAX(pending + ?2, 0)",
    )?
    .execute(params![tenant, by])?;
    Ok(())
}
