//! Durable state: calls, the outbox of events, stored timers and legacy-resend answers.
//!
//! Every change to a call is one [`UnitOfWork`]: the new call state, the events it produces
//! with their per-call sequence numbers, timers and the resend answer, committed in one
//! transaction guarded by the call's version. A commit resolves only after it is fsynced.
//! Deliveries and timers are claimed with leases, so a crashed or second instance neither
//! loses nor double-sends them beyond at-least-once; connectors run under a lease with a
//! fencing epoch ([`Backend::acquire_lease`]), so one instance among those sharing the store
//! runs each. [`Backend`] is the one interface the
//! core uses; the embedded backend is SQLite ([`sqlite::SqliteStore`]), and PostgreSQL
//! ([`postgres::PgStore`]) implements the same operations for several instances sharing one
//! database (claims with `FOR UPDATE SKIP LOCKED`, the change feed from `LISTEN/NOTIFY`).

#[cfg(test)]
mod conformance;
pub mod moving;
pub mod owner;
pub mod postgres;
pub mod schema;
pub mod sqlite;

use std::sync::Arc;

use ivrgate_adapter::{BoxFuture, StoredResponse};
use serde_json::{Map, Value};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How a call is found: the vendor's id within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    pub tenant: String,
    pub vendor: String,
    pub vendor_call_id: String,
}

/// A call as stored. `state` is `None` once the call ended or expired; the row itself (id,
/// sequence counter, attached data) outlives it for the retention period.
#[derive(Debug, Clone)]
pub struct CallRow {
    pub call_id: String,
    pub version: i64,
    pub next_seq: i64,
    pub status: String,
    pub attached: Map<String, Value>,
    pub state: Option<Value>,
    pub expires_at_ms: Option<i64>,
}

/// The call part of a unit of work.
#[derive(Debug, Clone)]
pub struct CallWrite {
    pub key: CallKey,
    pub call_id: String,
    /// The version read before computing the change; `None` when creating the call.
    pub expected_version: Option<i64>,
    pub status: &'static str,
    pub attached: Map<String, Value>,
    /// Shared, so the entity answered after the commit holds the same state, not a copy.
    pub state: Option<std::sync::Arc<Value>>,
    /// When the call expires if nothing else happens; a `call_expiry` timer is set for it.
    pub expires_at_ms: Option<i64>,
}

/// An event to put in the outbox. When the unit of work writes a call, the event gets the
/// call's next sequence number, written as `data.seq` ([`crate::envelope::WithSeq`]).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub event_type: String,
    /// Shared, so a caller that must retry a unit of work gets it back without a copy.
    pub payload: std::sync::Arc<crate::envelope::EventPayload>,
}

#[derive(Debug, Clone)]
pub struct DedupWrite {
    pub key_hash: [u8; 32],
    pub response: StoredResponse,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone)]
pub enum TimerOp {
    Set {
        key: String,
        kind: String,
        tenant: String,
        due_ms: i64,
        payload: Value,
    },
    Delete {
        key: String,
    },
}

/// An adapter entity's part of a unit of work: the row (kept in the calls table, so an
/// entity's events get its own sequence numbers) and its events.
#[derive(Debug, Clone)]
pub struct EntityWrite {
    pub row: CallWrite,
    pub events: Vec<NewEvent>,
}

/// A claim on (or release of) a unique secondary key, owned by an entity.
#[derive(Debug, Clone)]
pub struct AliasOp {
    pub namespace: String,
    pub value: String,
    /// The owner: the entity's kind (`vendor` column) and id (`vendor_call_id`).
    pub owner_kind: String,
    pub owner_id: String,
    pub action: AliasAction,
}

/// What an [`AliasOp`] does to its alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasAction {
    /// Release it, if the owner holds it.
    Release,
    /// Claim it (refused while another owner holds it and its claim has not lapsed), lapsing
    /// at `until_ms` when that is set; claiming one's own alias again moves the lapse.
    Claim { until_ms: Option<i64> },
}

/// One atomic change.
#[derive(Debug, Clone, Default)]
pub struct UnitOfWork {
    pub tenant: String,
    pub now_ms: i64,
    pub call: Option<CallWrite>,
    pub events: Vec<NewEvent>,
    pub timers: Vec<TimerOp>,
    pub dedup: Option<DedupWrite>,
    /// Refuse the events when the tenant already has this many undelivered ones.
    pub outbox_quota: Option<u64>,
    /// Adapter entities written together (all or none), each guarded by its version.
    pub entities: Vec<EntityWrite>,
    pub aliases: Vec<AliasOp>,
}

impl UnitOfWork {
    pub fn event_count(&self) -> usize {
        self.events.len() + self.entities.iter().map(|e| e.events.len()).sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed and fsynced; the sequence number given to each event, in order.
    Committed {
        seqs: Vec<Option<i64>>,
    },
    /// The call changed since it was read: read again and recompute.
    Conflict,
    /// The resend key was already recorded: the stored answer.
    Duplicate(StoredResponse),
    QuotaExceeded,
    /// Writing it would reach into the free-space reserve: nothing was written.
    StorageFull,
    /// A claimed alias belongs to another entity: nothing was written.
    AliasTaken {
        namespace: String,
        value: String,
        owner_kind: String,
        owner_id: String,
    },
}

/// An event claimed for delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub tenant: String,
    pub event_type: String,
    /// The ivrgate call the event belongs to (none for events of no call), for log lines.
    pub call_id: Option<String>,
    pub payload: bytes::Bytes,
    pub attempts: u32,
    pub created_at_ms: i64,
}

/// What happened to a claimed delivery.
#[derive(Debug, Clone)]
pub enum DeliveryUpdate {
    Delivered {
        id: i64,
        at_ms: i64,
    },
    /// A failed attempt; try again at `next_ms`.
    Retry {
        id: i64,
        next_ms: i64,
        error: String,
    },
    /// A failed attempt and the schedule is exhausted.
    Dead {
        id: i64,
        error: String,
    },
    /// Not attempted (breaker open, endpoint disabled, shutting down): back to the queue.
    Release {
        id: i64,
        next_ms: i64,
    },
}

/// A stored timer claimed for running.
#[derive(Debug, Clone)]
pub struct TimerRow {
    pub key: String,
    pub kind: String,
    pub tenant: String,
    pub due_ms: i64,
    pub payload: Value,
}

/// Counts per tenant for metrics and the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub tenant: String,
    pub pending: u64,
    pub dead: u64,
}

/// A dead-lettered event, for the admin API.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub event_id: String,
    pub tenant: String,
    pub event_type: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
}

/// One tenant's queue, for the admin API's view of its endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSummary {
    pub tenant: String,
    pub pending: u64,
    pub dead: u64,
    /// When the oldest pending event was stored.
    pub oldest_pending_ms: Option<i64>,
    /// The earliest next attempt among pending events.
    pub next_attempt_ms: Option<i64>,
    /// The error of the newest event (pending or dead) whose last attempt failed.
    pub last_error: Option<String>,
}

/// An event's delivery state in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Pending,
    Delivered,
    Dead,
}

impl EventStatus {
    /// The outbox's status code.
    pub fn code(self) -> i64 {
        match self {
            EventStatus::Pending => 0,
            EventStatus::Delivered => 1,
            EventStatus::Dead => 2,
        }
    }

    pub fn from_code(code: i64) -> EventStatus {
        match code {
            0 => EventStatus::Pending,
            1 => EventStatus::Delivered,
            _ => EventStatus::Dead,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Delivered => "delivered",
            EventStatus::Dead => "dead",
        }
    }
}

/// Which events the admin API lists: by status, optionally one tenant, type or event, a
/// page of `limit` after the cursor `after_id` (the `id` of the last event of the previous
/// page), oldest first.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub status: EventStatus,
    pub tenant: Option<String>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub after_id: Option<i64>,
    pub limit: usize,
}

/// One event as the admin API lists it (never its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventListing {
    /// The outbox row's id: the paging cursor.
    pub id: i64,
    pub event_id: String,
    pub tenant: String,
    pub event_type: String,
    pub call_id: Option<String>,
    pub status: EventStatus,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
}

/// Which events a replay puts back in the queue.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub tenant: Option<String>,
    pub event_id: Option<String>,
    /// Also replay delivered events (by default only dead letters).
    pub include_delivered: bool,
}

/// Names one connector lease: a connector of an adapter for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey {
    pub tenant: String,
    pub adapter: String,
    pub name: String,
}

/// A connector lease as stored. `holder` is `None` once released; the row (and its epoch)
/// stays, so an epoch is never handed out twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: Option<String>,
    /// Grows by one on every acquisition, by any owner.
    pub epoch: u64,
    /// When the lease lapses unless renewed (store milliseconds).
    pub until_ms: i64,
}

/// The answer to an acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAcquire {
    /// Taken: the new epoch and when it lapses unless renewed.
    Acquired { epoch: u64, until_ms: i64 },
    /// Another live owner holds it.
    Held(LeaseRow),
}

/// Wake-ups raised by commits (this process's directly; other processes' through the
/// backend's change detection), so waiters need not poll the store.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    pub outbox: Notify,
    pub timers: Notify,
    /// Another process committed: any row may have changed. (This process's own entity
    /// changes wake their waiters by key, in the core.)
    pub foreign: Notify,
}

impl ChangeFeed {
    pub fn all(&self) {
        self.outbox.notify_waiters();
        self.outbox.notify_one();
        self.timers.notify_waiters();
        self.timers.notify_one();
        self.foreign.notify_waiters();
    }
}

/// A circuit breaker some instance opened, as shared through the store: which breakers
/// (`scope`: `"decision"` or `"delivery"`), the endpoint (a digest of its URL, never the URL,
/// which may carry credentials) and how long it stays open from now (store clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBreaker {
    pub scope: String,
    pub endpoint: String,
    pub left_ms: i64,
}

/// A store backend: every operation the core needs, on plain data.
pub trait Backend: Send + Sync + 'static {
    /// Wake-ups raised by commits, this process's and other processes'.
    fn changes(&self) -> &ChangeFeed;
    /// Finishes queued writes and closes; later calls fail with [`StoreError::Closed`].
    fn close(&self);
    /// [`Backend::close`], then gives this process's claims back and leaves the registry of
    /// live instances, so others take its work at once (the end of a graceful stop).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.close();
        Box::pin(async {})
    }
    /// The lease owner this process writes into its claims (deliveries, timers).
    fn owner_id(&self) -> &str;
    /// Finds lease owners whose process is gone (their liveness proof lapsed) and frees their
    /// claims at once, so they need not wait out the lease; returns the owners recovered.
    fn recover_dead_owners(&self) -> BoxFuture<'_, Result<Vec<String>>>;
    /// Free space (in bytes) the store keeps: units of work that add rows are refused with
    /// [`CommitOutcome::StorageFull`] when they could reach into it, while claims and
    /// outcomes (which keep or shrink the store) may use it. 0 disables the check.
    fn set_free_space_reserve(&self, _bytes: u64) {}
    /// Whether the last unit of work that would add rows was refused for want of space.
    fn storage_full(&self) -> bool {
        false
    }
    /// The last turn of the thread that writes, where the backend has one (the embedded
    /// store's writer), for the systemd watchdog.
    fn writer_beat(&self) -> Option<&crate::liveness::Beat> {
        None
    }
    /// Whether the store answers (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<()>>;
    fn load_call(&self, key: CallKey) -> BoxFuture<'_, Result<Option<CallRow>>>;
    fn load_call_by_id(&self, call_id: String)
        -> BoxFuture<'_, Result<Option<(CallKey, CallRow)>>>;
    /// Commits one unit of work, durably, or says why not.
    fn commit(&self, uow: UnitOfWork) -> BoxFuture<'_, Result<CommitOutcome>>;
    /// For writes nobody acknowledges (a decision recorded on its call): queued before this
    /// returns, so writes this process queues later commit after it; the backend may batch it
    /// and make it durable with a later commit rather than at once.
    fn commit_queued(&self, uow: UnitOfWork) -> BoxFuture<'static, Result<CommitOutcome>>;
    /// Leases up to `limit` due deliveries to `owner`, skipping the given tenants.
    fn claim_deliveries(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        skip_tenants: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Delivery>>>;
    /// Records outcomes of claimed deliveries (only rows still leased to `owner`).
    fn finish_deliveries(
        &self,
        owner: String,
        updates: Vec<DeliveryUpdate>,
    ) -> BoxFuture<'_, Result<()>>;
    /// Leases up to `limit` due timers to `owner`.
    fn claim_timers(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<TimerRow>>>;
    fn release_timer(&self, key: String, owner: String) -> BoxFuture<'_, Result<()>>;
    /// Removes a timer that ran, unless it was set again since it was claimed.
    fn finish_timer(&self, key: String, owner: String) -> BoxFuture<'_, Result<()>>;
    /// The owner (kind, id) of an alias whose claim has not lapsed at `now_ms`.
    fn find_alias(
        &self,
        tenant: String,
        namespace: String,
        value: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<(String, String)>>>;
    /// Live rows of one kind (`vendor`) in a tenant, oldest first.
    fn list_live(
        &self,
        tenant: String,
        kind: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(CallKey, CallRow)>>>;
    fn outbox_depth(&self) -> BoxFuture<'_, Result<Vec<OutboxDepth>>>;
    fn dead_letters(
        &self,
        tenant: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>>>;
    /// Puts matching events back in the delivery queue; returns how many.
    fn replay(&self, filter: ReplayFilter, now_ms: i64) -> BoxFuture<'_, Result<u64>>;
    /// Per tenant with events: pending and dead counts, the oldest pending event's age, the
    /// next attempt and the newest error (the admin API's endpoint view).
    fn queue_summary(&self) -> BoxFuture<'_, Result<Vec<QueueSummary>>>;
    /// A page of events by status and filters (the admin API's event list).
    fn list_events(&self, query: EventQuery) -> BoxFuture<'_, Result<Vec<EventListing>>>;
    /// "Retry now": pending events of `tenants` (all when empty) that wait for a later
    /// attempt and are not claimed become due at `now_ms`; returns how many.
    fn retry_now(&self, tenants: Vec<String>, now_ms: i64) -> BoxFuture<'_, Result<u64>>;
    fn set_endpoint_disabled(
        &self,
        tenant: String,
        disabled: Option<(i64, String)>,
    ) -> BoxFuture<'_, Result<()>>;
    fn disabled_endpoints(&self) -> BoxFuture<'_, Result<Vec<(String, String)>>>;
    fn purge(
        &self,
        now_ms: i64,
        call_retention_ms: i64,
        delivered_retention_ms: i64,
    ) -> BoxFuture<'_, Result<u64>>;
    /// A call's events in sequence order: (seq, type, delivery status).
    fn call_events(&self, call_id: String) -> BoxFuture<'_, Result<Vec<(i64, String, i64)>>>;

    /// Takes a connector lease for `owner` until `now_ms + lease_ms`, with the next epoch,
    /// when it is free (never held or released), lapsed, held by `owner` itself (a holder
    /// that lost track of it: the new epoch fences its old session), or held by an owner
    /// whose liveness proof is gone (a dead process's lease is taken at once). One
    /// conditional write: of two owners racing, one gets it. A PostgreSQL backend does the
    /// same with `INSERT .. ON CONFLICT DO UPDATE .. WHERE` and its own liveness proof.
    fn acquire_lease(
        &self,
        key: LeaseKey,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<LeaseAcquire>>;
    /// Extends a held lease to `now_ms + lease_ms`: only for its holder `owner` with the same
    /// `epoch`, and only while it has not lapsed. Returns the new `until_ms`, or `None` when
    /// the lease is lost (then the holder must stop at once).
    fn renew_lease(
        &self,
        key: LeaseKey,
        owner: String,
        epoch: u64,
        now_ms: i64,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<Option<i64>>>;
    /// Gives a lease up (only its holder with the same epoch), so another owner may take it
    /// at once; the epoch stays. Returns whether it was still held.
    fn release_lease(
        &self,
        key: LeaseKey,
        owner: String,
        epoch: u64,
    ) -> BoxFuture<'_, Result<bool>>;
    /// A lease as stored, whoever holds it; `None` when it was never acquired.
    fn read_lease(&self, key: LeaseKey) -> BoxFuture<'_, Result<Option<LeaseRow>>>;
    /// The lease owners of the instances live on this store now, this process's included,
    /// sorted: the registry the cluster-wide limits divide by.
    fn live_instances(&self) -> BoxFuture<'_, Result<Vec<String>>>;
    /// Records that a breaker opened for `open_ms` from now (store clock), so the other
    /// instances leave the endpoint alone too; a later trip of the same breaker replaces it.
    fn trip_breaker(
        &self,
        scope: String,
        endpoint: String,
        open_ms: i64,
    ) -> BoxFuture<'_, Result<()>>;
    /// Forgets a shared breaker (its endpoint answered again).
    fn close_breaker(&self, scope: String, endpoint: String) -> BoxFuture<'_, Result<()>>;
    /// The shared breakers still open now (store clock).
    fn open_breakers(&self) -> BoxFuture<'_, Result<Vec<SharedBreaker>>>;
}

/// The store the core holds.
pub type Store = Arc<dyn Backend>;

/// How long after it lapsed a shared breaker's row is purged. No instance reads a lapsed row
/// (`open_breakers` skips it), and an endpoint that answers again removes its row; this
/// takes the rows nobody will remove (a tenant removed, a URL changed, every instance gone
/// before its probe). A day, so the stores' two clocks (PostgreSQL times breakers by its
/// own) never matter.
pub const STALE_BREAKER_MS: i64 = 24 * 3600 * 1000;
