//! The PostgreSQL store, for several instances sharing one database: connection settings,
//! the pool, TLS (rustls only), the schema migrations kept in `migrations/postgres/`
//! (applied at start under an advisory lock, so several instances starting at once migrate
//! once), the registry of live instances with heartbeats, and every [`super::Backend`]
//! operation ([`PgStore`]) with the meaning the embedded store gives it.
//!
//! Driver: tokio-postgres with deadpool-postgres. It runs on the tokio runtime ivrgate
//! already uses, follows several hosts in one URL (`target_session_attrs=read-write` finds the
//! primary after a failover), exposes `LISTEN/NOTIFY` messages on the connection for the
//! change feed, and has no TLS of its own: TLS comes from tokio-postgres-rustls, so no
//! OpenSSL is linked.
//!
//! Here: settings, TLS, opening and closing [`PgStore`], and its [`super::Backend`] impl.
//! The rest: `migrate` (schema migrations), `writer` (the writer task and its batches),
//! `uow` (one unit of work applied within a batch), `reads`, `claims` (deliveries and
//! timers), `cluster` (heartbeat, leases, dead owners), `shared` (live instances and
//! breakers), `admin` (admin queries), `feed` (`LISTEN/NOTIFY`), `testing` (test databases).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;

use super::schema::{self, Plan};
use crate::config::{StorageBackend, StorageConfig};

mod admin;
mod claims;
mod cluster;
mod feed;
mod finisher;
mod migrate;
mod reads;
mod shared;
mod uow;
mod writer;

pub use feed::{ChangeListener, CHANGES_CHANNEL, NOTIFY_SQL};
pub use migrate::{migrate, migrations, Migrated};

use cluster::free_claims;
use finisher::{finisher_loop, Finish};
use migrate::stored_version;
use writer::{writer_loop, Job};

/// Parsed (never connected) PostgreSQL settings.
#[derive(Clone)]
pub struct PgSettings {
    pub config: tokio_postgres::Config,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub tls_ca_file: Option<PathBuf>,
    /// Most units of work committed together in one transaction.
    pub group_commit_max: usize,
    /// How often this instance renews its heartbeat.
    pub heartbeat: Duration,
    /// A heartbeat older than this marks its instance dead.
    pub lapse: Duration,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("hosts", &self.hosts())
            .field("dbname", &self.config.get_dbname())
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl PgSettings {
    /// The settings of `[storage]` when its backend is PostgreSQL (`None` otherwise):
    /// resolves the URL secret and parses it, reads the CA file; never connects.
    pub fn from_config(storage: &StorageConfig) -> Result<Option<PgSettings>, String> {
        if storage.backend != StorageBackend::Postgres {
            return Ok(None);
        }
        let Some(url) = &storage.url else {
            return Err("storage.url is required when storage.backend = \"postgres\"".to_owned());
        };
        let url = url.resolve().map_err(|e| format!("storage.url: {e}"))?;
        // The URL holds a password: the parse error is shown, the URL never.
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("storage.url is not a PostgreSQL connection string: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("storage.url names no host".to_owned());
        }
        if storage.pool_size == 0 {
            return Err("storage.pool_size must be greater than 0".to_owned());
        }
        if storage.heartbeat_ms == 0 || storage.instance_lapse_ms < 2 * storage.heartbeat_ms {
            return Err(
                "storage.heartbeat_ms must be greater than 0 and storage.instance_lapse_ms at \
                 least twice it (one late heartbeat must not mark a live instance dead)"
                    .to_owned(),
            );
        }
        if storage.connect_timeout_ms == 0 || storage.statement_timeout_ms == 0 {
            return Err(
                "storage.connect_timeout_ms and storage.statement_timeout_ms must be greater than 0"
                    .to_owned(),
            );
        }
        let settings = PgSettings {
            config,
            pool_size: storage.pool_size,
            connect_timeout: Duration::from_millis(storage.connect_timeout_ms),
            statement_timeout: Duration::from_millis(storage.statement_timeout_ms),
            tls_ca_file: storage.tls_ca_file.clone(),
            group_commit_max: storage.group_commit_max.max(1),
            heartbeat: Duration::from_millis(storage.heartbeat_ms),
            lapse: Duration::from_millis(storage.instance_lapse_ms),
        };
        tls(settings.tls_ca_file.as_deref())?;
        Ok(Some(settings))
    }

    /// The hosts in the URL, for messages.
    pub fn hosts(&self) -> String {
        let ports = self.config.get_ports();
        self.config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match host {
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(path) => format!("{}:{port}", path.display()),
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The same settings for another database (tests give each its own).
    pub fn with_dbname(&self, dbname: &str) -> PgSettings {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other
    }

    /// How long a store operation may take in all: a connection from the pool (at most
    /// `connect_timeout + statement_timeout`), then its statements (the server stops each after
    /// `statement_timeout`). `statement_timeout` is the server's: a database that hangs (or a
    /// network that swallows packets) never answers, so every operation is also bounded here
    /// and fails, which callers answer with their platform's "try again".
    pub fn answer_within(&self) -> Duration {
        self.connect_timeout + 2 * self.statement_timeout
    }

    /// Opens the pool (connections are made on first use).
    pub fn pool(&self) -> Result<Pool, String> {
        let mut config = self.config.clone();
        config.connect_timeout(self.connect_timeout);
        // Durable before acknowledged: a commit returns only once it is flushed, whatever
        // the server's default; statements cannot run forever.
        let mut options = config.get_options().unwrap_or("").to_owned();
        options.push_str(&format!(
            " -c synchronous_commit=on -c statement_timeout={}",
            self.statement_timeout.as_millis()
        ));
        config.options(options.trim());
        config.application_name("ivrgate");
        let manager = Manager::from_config(
            config,
            tls(self.tls_ca_file.as_deref())?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(self.connect_timeout))
            .wait_timeout(Some(self.connect_timeout + self.statement_timeout))
            .build()
            .map_err(|e| format!("cannot build the PostgreSQL pool: {e}"))
    }
}

/// The TLS connector: rustls with the public roots and `ca_file`'s certificates. Whether TLS
/// is used is the URL's `sslmode`.
fn tls(ca_file: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("storage.tls_ca_file {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("storage.tls_ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("storage.tls_ca_file {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "storage.tls_ca_file {}: no PEM certificate in it",
                path.display()
            ));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A driver error with its causes (tokio-postgres keeps the server's message in the source).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The database's clock in milliseconds since the epoch, inside SQL: lease and heartbeat
/// times come from it, never from a host's clock (hosts' clocks drift apart).
const DB_NOW_MS: &str = "(extract(epoch from now()) * 1000)::bigint";

/// The PostgreSQL store: every [`super::Backend`] operation, with the meaning the embedded
/// store gives it. Opening it migrates the schema, registers this process as a live instance
/// and starts its writer; [`PgStore::start`] also keeps the heartbeat and the change feed.
///
/// Units of work go through one writer task per instance, in the order they were queued:
/// whatever is queued while a transaction runs is committed together in the next one (group
/// commit: one round of WAL flush for many units of work, each under its own savepoint), so
/// a write queued with [`super::Backend::commit_queued`] commits before any write this
/// instance queues after it. Units of work of several instances meet in the database: the
/// version guard on each call row, unique keys on dedupe answers and aliases decide.
pub struct PgStore {
    pool: Pool,
    owner_id: String,
    /// An instance whose heartbeat is older than this is dead: its leases are taken at once.
    lapse: Duration,
    /// The longest any store operation may take, answer or not (see [`PgSettings::answer_within`]).
    answer_within: Duration,
    changes: Arc<super::ChangeFeed>,
    writer: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Job>>>,
    writer_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Deliveries' outcomes, group-committed by their own task (`finisher.rs`).
    finisher: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Finish>>>,
    finisher_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The heartbeat and the change feed, stopped on close.
    background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    listener: std::sync::Mutex<Option<ChangeListener>>,
}

/// How often a live instance renews its heartbeat, by default (`storage.heartbeat_ms`).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A heartbeat older than this marks its instance dead, by default
/// (`storage.instance_lapse_ms`).
pub const LAPSE: Duration = Duration::from_secs(10);

impl PgStore {
    /// After `n` events were put back in the outbox: wakes this instance's delivery loop and,
    /// through NOTIFY, every other instance's.
    async fn wake_outbox(&self, n: u64) {
        if n > 0 {
            self.changes.outbox.notify_one();
            let _ = self.notify("outbox").await;
        }
    }
}

impl PgStore {
    /// Migrates (or refuses) the schema, registers `owner_id` as a live instance and starts
    /// the writer. Neither heartbeat nor change feed run: see [`PgStore::start`].
    pub async fn open(
        settings: &PgSettings,
        owner_id: String,
        lapse: Duration,
    ) -> Result<PgStore, String> {
        let pool = settings.pool()?;
        migrate(&pool).await?;
        let changes = Arc::new(super::ChangeFeed::default());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let writer_task = tokio::spawn(writer_loop(
            pool.clone(),
            rx,
            settings.group_commit_max.max(1),
            owner_id.clone(),
            changes.clone(),
            settings.answer_within(),
        ));
        let (finish_tx, finish_rx) = tokio::sync::mpsc::unbounded_channel();
        let finisher_task = tokio::spawn(finisher_loop(
            pool.clone(),
            finish_rx,
            settings.group_commit_max.max(1),
            settings.answer_within(),
        ));
        let store = PgStore {
            pool,
            owner_id,
            lapse,
            answer_within: settings.answer_within(),
            changes,
            writer: std::sync::Mutex::new(Some(tx)),
            writer_task: std::sync::Mutex::new(Some(writer_task)),
            finisher: std::sync::Mutex::new(Some(finish_tx)),
            finisher_task: std::sync::Mutex::new(Some(finisher_task)),
            background: std::sync::Mutex::new(Vec::new()),
            listener: std::sync::Mutex::new(None),
        };
        store.heartbeat().await.map_err(|e| e.to_string())?;
        Ok(store)
    }

    /// [`PgStore::open`] for serving: also renews the heartbeat every `settings.heartbeat`
    /// and feeds [`super::ChangeFeed`] from `LISTEN/NOTIFY` (with catch-up after a reconnect).
    pub async fn start(settings: &PgSettings, owner_id: String) -> Result<Arc<PgStore>, String> {
        let store = Arc::new(PgStore::open(settings, owner_id, settings.lapse).await?);
        let every = settings.heartbeat;
        let listener =
            ChangeListener::start(settings, store.owner_id.clone(), store.changes.clone())?;
        *lock(&store.listener) = Some(listener);
        let weak = Arc::downgrade(&store);
        let heartbeat = tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(every).await;
                let Some(store) = weak.upgrade() else { return };
                match store.heartbeat().await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("PostgreSQL heartbeat renewed again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "cannot renew the PostgreSQL heartbeat: other instances take this one's claims once it lapses");
                    }
                    Err(_) => {}
                }
            }
        });
        lock(&store.background).push(heartbeat);
        Ok(store)
    }

    /// Stops taking writes, commits what is queued, gives this instance's claims back and
    /// leaves the registry, so other instances take its work at once.
    pub async fn shutdown(&self) {
        self.close();
        let tasks = [
            lock(&self.writer_task).take(),
            lock(&self.finisher_task).take(),
        ];
        for task in tasks.into_iter().flatten() {
            let _ = task.await;
        }
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
        lock(&self.listener).take();
        let owners = vec![self.owner_id.clone()];
        let freed = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_err)?;
            free_claims(&tx, &owners).await?;
            tx.commit().await.map_err(db_err)
        }
        .await;
        if let Err(e) = freed {
            tracing::warn!(error = %e, "cannot give this instance's claims back; they lapse with its heartbeat");
        }
        let _ = self.deregister().await;
    }

    /// Stops taking writes and deliveries' outcomes (what is queued still commits); see
    /// [`PgStore::shutdown`].
    pub fn close(&self) {
        lock(&self.writer).take();
        lock(&self.finisher).take();
    }

    pub fn owner_id(&self) -> &str {
        &self.owner_id
    }

    async fn client(&self) -> super::Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| super::StoreError::Backend(format!("PostgreSQL: {}", describe(&e))))
    }

    /// The database's clock (milliseconds since the epoch).
    pub async fn now_ms(&self) -> super::Result<i64> {
        let row = self
            .client()
            .await?
            .query_one(&format!("SELECT {DB_NOW_MS}"), &[])
            .await
            .map_err(db_err)?;
        Ok(row.get(0))
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The error of an operation the database did not answer in time.
fn no_answer(within: Duration) -> super::StoreError {
    super::StoreError::Backend(format!(
        "PostgreSQL: no answer within {} ms",
        within.as_millis()
    ))
}

impl PgStore {
    /// Runs one store operation for at most [`PgSettings::answer_within`]. Past it the
    /// operation is dropped and fails; the pool's idle connections are closed, since the one
    /// it held may be stuck (it goes back to the pool when the operation is dropped) and a new
    /// one costs a connect.
    fn bounded<'a, T: Send + 'a>(
        &'a self,
        op: impl std::future::Future<Output = super::Result<T>> + Send + 'a,
    ) -> ivrgate_adapter::BoxFuture<'a, super::Result<T>> {
        Box::pin(async move {
            match tokio::time::timeout(self.answer_within, op).await {
                Ok(answered) => answered,
                Err(_) => {
                    self.pool.retain(|_, _| false);
                    Err(no_answer(self.answer_within))
                }
            }
        })
    }
}

impl super::Backend for PgStore {
    fn live_instances(&self) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<String>>> {
        self.bounded(PgStore::live_instances(self))
    }

    fn trip_breaker(
        &self,
        scope: String,
        endpoint: String,
        open_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        self.bounded(PgStore::trip_breaker(self, scope, endpoint, open_ms))
    }

    fn close_breaker(
        &self,
        scope: String,
        endpoint: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        self.bounded(PgStore::close_breaker(self, scope, endpoint))
    }

    fn open_breakers(
        &self,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::SharedBreaker>>> {
        self.bounded(PgStore::open_breakers(self))
    }

    fn changes(&self) -> &super::ChangeFeed {
        &self.changes
    }

    fn close(&self) {
        PgStore::close(self)
    }

    fn shutdown(&self) -> ivrgate_adapter::BoxFuture<'_, ()> {
        Box::pin(PgStore::shutdown(self))
    }

    fn owner_id(&self) -> &str {
        &self.owner_id
    }

    fn recover_dead_owners(&self) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<String>>> {
        self.bounded(PgStore::recover_dead_owners(self))
    }

    fn ping(&self) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        self.bounded(PgStore::ping(self))
    }

    fn load_call(
        &self,
        key: super::CallKey,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<super::CallRow>>> {
        self.bounded(PgStore::load_call(self, key))
    }

    fn load_call_by_id(
        &self,
        call_id: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<(super::CallKey, super::CallRow)>>>
    {
        self.bounded(PgStore::load_call_by_id(self, call_id))
    }

    fn commit(
        &self,
        uow: super::UnitOfWork,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<super::CommitOutcome>> {
        Box::pin(PgStore::commit(self, uow))
    }

    fn commit_queued(
        &self,
        uow: super::UnitOfWork,
    ) -> ivrgate_adapter::BoxFuture<'static, super::Result<super::CommitOutcome>> {
        Box::pin(PgStore::commit_queued(self, uow))
    }

    fn claim_deliveries(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        skip_tenants: Vec<String>,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::Delivery>>> {
        self.bounded(PgStore::claim_deliveries(
            self,
            owner,
            now_ms,
            lease_ms,
            limit,
            skip_tenants,
        ))
    }

    fn finish_deliveries(
        &self,
        owner: String,
        updates: Vec<super::DeliveryUpdate>,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        // Bounded by the finisher, batch by batch.
        Box::pin(PgStore::finish_deliveries(self, owner, updates))
    }

    fn claim_timers(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::TimerRow>>> {
        self.bounded(PgStore::claim_timers(self, owner, now_ms, lease_ms, limit))
    }

    fn release_timer(
        &self,
        key: String,
        owner: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        self.bounded(PgStore::release_timer(self, key, owner))
    }

    fn finish_timer(
        &self,
        key: String,
        owner: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        self.bounded(PgStore::finish_timer(self, key, owner))
    }

    fn find_alias(
        &self,
        tenant: String,
        namespace: String,
        value: String,
        now_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<(String, String)>>> {
        self.bounded(PgStore::find_alias(self, tenant, namespace, value, now_ms))
    }

    fn list_live(
        &self,
        tenant: String,
        kind: String,
        limit: usize,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<(super::CallKey, super::CallRow)>>> {
        self.bounded(PgStore::list_live(self, tenant, kind, limit))
    }

    fn outbox_depth(
        &self,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::OutboxDepth>>> {
        self.bounded(PgStore::outbox_depth(self))
    }

    fn dead_letters(
        &self,
        tenant: Option<String>,
        limit: usize,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::DeadLetter>>> {
        self.bounded(PgStore::dead_letters(self, tenant, limit))
    }

    fn queue_summary(
        &self,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::QueueSummary>>> {
        self.bounded(PgStore::queue_summary(self))
    }

    fn list_events(
        &self,
        query: super::EventQuery,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::EventListing>>> {
        self.bounded(PgStore::list_events(self, query))
    }

    fn retry_now(
        &self,
        tenants: Vec<String>,
        now_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<u64>> {
        self.bounded(async move {
            let n = PgStore::retry_now(self, tenants, now_ms).await?;
            self.wake_outbox(n).await;
            Ok(n)
        })
    }

    fn replay(
        &self,
        filter: super::ReplayFilter,
        now_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<u64>> {
        self.bounded(async move {
            let n = PgStore::replay(self, filter, now_ms).await?;
            self.wake_outbox(n).await;
            Ok(n)
        })
    }

    fn set_endpoint_disabled(
        &self,
        tenant: String,
        disabled: Option<(i64, String)>,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        self.bounded(PgStore::set_endpoint_disabled(self, tenant, disabled))
    }

    fn disabled_endpoints(
        &self,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<(String, String)>>> {
        self.bounded(PgStore::disabled_endpoints(self))
    }

    fn purge(
        &self,
        now_ms: i64,
        call_retention_ms: i64,
        delivered_retention_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<u64>> {
        self.bounded(PgStore::purge(
            self,
            now_ms,
            call_retention_ms,
            delivered_retention_ms,
        ))
    }

    fn call_events(
        &self,
        call_id: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<(i64, String, i64)>>> {
        self.bounded(PgStore::call_events(self, call_id))
    }

    /// Timed by the database's clock (`now_ms` is the host's and is not used): hosts' clocks
    /// drift apart.
    fn acquire_lease(
        &self,
        key: super::LeaseKey,
        owner: String,
        _now_ms: i64,
        lease_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<super::LeaseAcquire>> {
        self.bounded(PgStore::acquire_lease(self, key, owner, lease_ms))
    }

    fn renew_lease(
        &self,
        key: super::LeaseKey,
        owner: String,
        epoch: u64,
        _now_ms: i64,
        lease_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<i64>>> {
        self.bounded(PgStore::renew_lease(self, key, owner, epoch, lease_ms))
    }

    fn release_lease(
        &self,
        key: super::LeaseKey,
        owner: String,
        epoch: u64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<bool>> {
        self.bounded(PgStore::release_lease(self, key, owner, epoch))
    }

    fn read_lease(
        &self,
        key: super::LeaseKey,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<super::LeaseRow>>> {
        self.bounded(PgStore::read_lease(self, key))
    }
}

impl PgStore {
    /// Tells other instances something changed outside a unit of work (a replay).
    async fn notify(&self, what: &str) -> super::Result<()> {
        self.client()
            .await?
            .execute(NOTIFY_SQL, &[&format!("{}:{what}", self.owner_id)])
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

fn db_err(e: tokio_postgres::Error) -> super::StoreError {
    super::StoreError::Backend(format!("PostgreSQL: {}", describe(&e)))
}

/// `check-config --online`: connects once and says whether this binary can run on the
/// database (reachable, and migrated compatibly or migratable); never changes it.
pub async fn check_online(settings: &PgSettings) -> Result<String, String> {
    let mut one = settings.clone();
    one.pool_size = 1;
    let pool = one.pool()?;
    let client = pool.get().await.map_err(|e| {
        format!(
            "PostgreSQL at {} is unreachable: {}",
            settings.hosts(),
            describe(&e)
        )
    })?;
    let stored = stored_version(&client).await?;
    let known = schema::latest(&migrations());
    let state = match schema::plan("the PostgreSQL", stored, &migrations())? {
        Plan::Current => format!("schema version {known} (current)"),
        Plan::NewerCompatible(s) => format!(
            "schema version {} (newer than this binary's {known}, marked compatible with it)",
            s.version
        ),
        Plan::Apply(_) => match stored {
            None => format!("empty: serve creates schema version {known} at start"),
            Some(s) => format!(
                "schema version {}: serve migrates it to {known} at start",
                s.version
            ),
        },
    };
    Ok(format!(
        "PostgreSQL at {} reachable, {state}",
        settings.hosts()
    ))
}

/// Test databases: each test gets its own database on the PostgreSQL named by
/// `IVRGATE_TEST_PG` (default `host=127.0.0.1 port=5432 user=postgres dbname=test
/// sslmode=disable`), created
/// and dropped by the test (NOTIFY channels and advisory locks are database-wide, so schemas
/// would not isolate tests). Without a reachable server a test is skipped with a loud
/// message, unless `CI` is set: then it fails.
pub mod testing;

#[cfg(test)]
mod tests;
