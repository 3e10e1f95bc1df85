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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;

use super::schema::{self, Migration, Plan, Stored};
use crate::config::{StorageBackend, StorageConfig};

/// The migrations shipped with this binary, in order. Each file's first line declares its
/// `compatible_from` (a unit test checks this list against the directory).
const MIGRATION_FILES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "shared_breakers",
        include_str!("../../migrations/postgres/0002_shared_breakers.sql"),
    ),
];

mod shared;

/// Advisory lock key held while migrating ("ivrgate" + 1).
const MIGRATION_LOCK: i64 = 0x6976_7267_6174_6501;

/// The migrations with their declared markers.
pub fn migrations() -> Vec<Migration> {
    MIGRATION_FILES
        .iter()
        .map(|&(version, name, sql)| Migration {
            version,
            name,
            // A file without the marker is caught by the tests; at run time it counts as
            // compatible only with itself.
            compatible_from: schema::declared_compatible_from(sql).unwrap_or(version),
            sql,
        })
        .collect()
}

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

/// The newest migration recorded in the database, `None` when it has none. An error when the
/// database holds ivrgate's tables without a version record (not migrated by ivrgate).
async fn stored_version(client: &tokio_postgres::Client) -> Result<Option<Stored>, String> {
    let row = client
        .query_one(
            "SELECT to_regclass('ivrgate_schema') IS NOT NULL, to_regclass('outbox') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?;
    let (versioned, has_tables): (bool, bool) = (row.get(0), row.get(1));
    if !versioned {
        if has_tables {
            return Err(
                "the database has ivrgate's tables but no ivrgate_schema version table: it was \
                 not migrated by ivrgate; give ivrgate an empty database"
                    .to_owned(),
            );
        }
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT version, compatible_from FROM ivrgate_schema ORDER BY version DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(row.map(|r| Stored {
        version: r.get(0),
        compatible_from: r.get(1),
    }))
}

/// What the schema looked like and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version before (`None`: an empty database).
    pub from: Option<i64>,
    /// The version now.
    pub to: i64,
}

/// Brings the database's schema to this binary's version under an advisory lock (several
/// instances starting at once migrate once), or refuses a schema marked incompatible.
pub async fn migrate(pool: &Pool) -> Result<Migrated, String> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", describe(&e)))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| format!("cannot take the migration lock: {}", describe(&e)))?;
    let result = migrate_locked(&mut client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    if unlocked.is_err() {
        // A session lock dies with its connection: do not give this one back to the pool.
        let _ = deadpool_postgres::Object::take(client);
    }
    result
}

async fn migrate_locked(client: &mut tokio_postgres::Client) -> Result<Migrated, String> {
    // Read before the version table is created, so tables without it are found out.
    let stored = stored_version(client).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ivrgate_schema (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                compatible_from bigint NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(|e| format!("cannot create the schema version table: {}", describe(&e)))?;
    let from = stored.map(|s| s.version);
    match schema::plan("the PostgreSQL", stored, &migrations())? {
        Plan::Current => Ok(Migrated {
            from,
            to: from.unwrap_or(0),
        }),
        Plan::NewerCompatible(s) => Ok(Migrated {
            from,
            to: s.version,
        }),
        Plan::Apply(pending) => {
            let mut to = from.unwrap_or(0);
            for m in pending {
                let tx = client.transaction().await.map_err(|e| describe(&e))?;
                tx.batch_execute(m.sql).await.map_err(|e| {
                    format!(
                        "migration {:04}_{} failed: {}",
                        m.version,
                        m.name,
                        describe(&e)
                    )
                })?;
                tx.execute(
                    "INSERT INTO ivrgate_schema (version, name, compatible_from) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &m.compatible_from],
                )
                .await
                .map_err(|e| describe(&e))?;
                tx.commit().await.map_err(|e| {
                    format!(
                        "migration {:04}_{} failed: {}",
                        m.version,
                        m.name,
                        describe(&e)
                    )
                })?;
                tracing::info!(
                    version = m.version,
                    name = m.name,
                    "PostgreSQL schema migrated"
                );
                to = m.version;
            }
            Ok(Migrated { from, to })
        }
    }
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
    changes: Arc<super::ChangeFeed>,
    writer: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Job>>>,
    writer_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
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
        ));
        let store = PgStore {
            pool,
            owner_id,
            lapse,
            changes,
            writer: std::sync::Mutex::new(Some(tx)),
            writer_task: std::sync::Mutex::new(Some(writer_task)),
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
        lock(&self.writer).take();
        let writer = lock(&self.writer_task).take();
        if let Some(writer) = writer {
            let _ = writer.await;
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

    /// Stops taking writes (what is queued still commits); see [`PgStore::shutdown`].
    pub fn close(&self) {
        lock(&self.writer).take();
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

    /// Marks this instance live now (database time); run every heartbeat interval.
    pub async fn heartbeat(&self) -> super::Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO instances (owner_id) VALUES ($1) ON CONFLICT (owner_id) \
                 DO UPDATE SET heartbeat_at = now()",
                &[&self.owner_id],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Leaves the registry (a graceful stop), so this instance's leases are free at once.
    pub async fn deregister(&self) -> super::Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM instances WHERE owner_id = $1",
                &[&self.owner_id],
            )
            .await
            .map_err(db_err)?;
        Ok(())
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

    /// [`super::Backend::acquire_lease`] in one conditional upsert, timed by the database's
    /// clock: taken when never held, released, lapsed, held by `owner` itself, or held by an
    /// instance whose heartbeat lapsed (or that left the registry).
    pub async fn acquire_lease(
        &self,
        key: super::LeaseKey,
        owner: String,
        lease_ms: i64,
    ) -> super::Result<super::LeaseAcquire> {
        let client = self.client().await?;
        let lapse_ms = self.lapse.as_millis() as i64;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO leases AS l (tenant, adapter, name, holder, epoch, until_ms) \
                     VALUES ($1, $2, $3, $4, 1, {DB_NOW_MS} + $5) \
                     ON CONFLICT (tenant, adapter, name) DO UPDATE SET holder = excluded.holder, \
                     epoch = l.epoch + 1, until_ms = excluded.until_ms \
                     WHERE l.holder IS NULL OR l.until_ms <= {DB_NOW_MS} OR l.holder = excluded.holder \
                     OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.owner_id = l.holder \
                     AND i.heartbeat_at > now() - make_interval(secs => $6::bigint / 1000.0)) \
                     RETURNING epoch, until_ms"
                ),
                &[
                    &key.tenant,
                    &key.adapter,
                    &key.name,
                    &owner,
                    &lease_ms.max(1),
                    &lapse_ms,
                ],
            )
            .await
            .map_err(db_err)?;
        if let Some(row) = row {
            return Ok(super::LeaseAcquire::Acquired {
                epoch: row.get::<_, i64>(0).max(0) as u64,
                until_ms: row.get(1),
            });
        }
        drop(client);
        Ok(super::LeaseAcquire::Held(
            self.read_lease(key).await?.unwrap_or(super::LeaseRow {
                holder: None,
                epoch: 0,
                until_ms: 0,
            }),
        ))
    }

    /// [`super::Backend::renew_lease`], timed by the database's clock.
    pub async fn renew_lease(
        &self,
        key: super::LeaseKey,
        owner: String,
        epoch: u64,
        lease_ms: i64,
    ) -> super::Result<Option<i64>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE leases SET until_ms = {DB_NOW_MS} + $1 WHERE tenant = $2 \
                     AND adapter = $3 AND name = $4 AND holder = $5 AND epoch = $6 \
                     AND until_ms > {DB_NOW_MS} RETURNING until_ms"
                ),
                &[
                    &lease_ms.max(1),
                    &key.tenant,
                    &key.adapter,
                    &key.name,
                    &owner,
                    &(epoch as i64),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// [`super::Backend::release_lease`]: the epoch stays.
    pub async fn release_lease(
        &self,
        key: super::LeaseKey,
        owner: String,
        epoch: u64,
    ) -> super::Result<bool> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE leases SET holder = NULL, until_ms = 0 WHERE tenant = $1 \
                 AND adapter = $2 AND name = $3 AND holder = $4 AND epoch = $5",
                &[
                    &key.tenant,
                    &key.adapter,
                    &key.name,
                    &owner,
                    &(epoch as i64),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(changed == 1)
    }

    /// [`super::Backend::read_lease`].
    pub async fn read_lease(&self, key: super::LeaseKey) -> super::Result<Option<super::LeaseRow>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT holder, epoch, until_ms FROM leases \
                 WHERE tenant = $1 AND adapter = $2 AND name = $3",
                &[&key.tenant, &key.adapter, &key.name],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| super::LeaseRow {
            holder: r.get(0),
            epoch: r.get::<_, i64>(1).max(0) as u64,
            until_ms: r.get(2),
        }))
    }
}

impl PgStore {
    /// [`super::Backend::claim_deliveries`]: due rows (`next_attempt_ms <= now_ms`) whose
    /// lease lapsed by the database's clock, taken with `FOR UPDATE SKIP LOCKED` so
    /// instances claiming at once get disjoint rows, leased until the database's
    /// now + `lease_ms`.
    pub async fn claim_deliveries(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        skip_tenants: Vec<String>,
    ) -> super::Result<Vec<super::Delivery>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "WITH due AS (SELECT id FROM outbox WHERE status = 0 AND next_attempt_ms <= $1 \
                     AND lease_until_ms <= {DB_NOW_MS} AND NOT (tenant = ANY($2)) \
                     ORDER BY next_attempt_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     UPDATE outbox o SET lease_owner = $4, lease_until_ms = {DB_NOW_MS} + $5 \
                     FROM due WHERE o.id = due.id RETURNING o.id, o.event_id, o.tenant, \
                     o.event_type, o.payload, o.attempts, o.created_at_ms, o.next_attempt_ms, o.call_id"
                ),
                &[
                    &now_ms,
                    &skip_tenants,
                    &(limit as i64),
                    &owner,
                    &lease_ms.max(1),
                ],
            )
            .await
            .map_err(db_err)?;
        let mut claimed: Vec<(i64, super::Delivery)> = rows
            .iter()
            .map(|r| {
                (
                    r.get(7),
                    super::Delivery {
                        id: r.get(0),
                        event_id: r.get(1),
                        tenant: r.get(2),
                        event_type: r.get(3),
                        payload: r.get::<_, Vec<u8>>(4).into(),
                        attempts: r.get::<_, i32>(5).max(0) as u32,
                        created_at_ms: r.get(6),
                        call_id: r.get(8),
                    },
                )
            })
            .collect();
        claimed.sort_by_key(|(next, d)| (*next, d.id));
        Ok(claimed.into_iter().map(|(_, d)| d).collect())
    }

    /// [`super::Backend::finish_deliveries`], in one transaction; rows no longer leased to
    /// `owner` are left alone.
    pub async fn finish_deliveries(
        &self,
        owner: String,
        updates: Vec<super::DeliveryUpdate>,
    ) -> super::Result<()> {
        use super::DeliveryUpdate;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        for update in &updates {
            let settled = match update {
                DeliveryUpdate::Delivered { id, at_ms } => Some((*id, 1i16, None, Some(*at_ms))),
                DeliveryUpdate::Dead { id, error } => Some((*id, 2i16, Some(error.clone()), None)),
                DeliveryUpdate::Retry { id, next_ms, error } => {
                    tx.execute(
                        "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = $1, \
                         last_error = $2, lease_owner = NULL, lease_until_ms = 0 \
                         WHERE id = $3 AND lease_owner = $4 AND status = 0",
                        &[next_ms, error, id, &owner],
                    )
                    .await
                    .map_err(db_err)?;
                    None
                }
                DeliveryUpdate::Release { id, next_ms } => {
                    tx.execute(
                        "UPDATE outbox SET next_attempt_ms = $1, lease_owner = NULL, \
                         lease_until_ms = 0 WHERE id = $2 AND lease_owner = $3 AND status = 0",
                        &[next_ms, id, &owner],
                    )
                    .await
                    .map_err(db_err)?;
                    None
                }
            };
            let Some((id, status, error, at_ms)) = settled else {
                continue;
            };
            let tenant = tx
                .query_opt(
                    "UPDATE outbox SET status = $1, attempts = attempts + 1, \
                     last_error = COALESCE($2, last_error), done_at_ms = $3, lease_owner = NULL, \
                     lease_until_ms = 0 WHERE id = $4 AND lease_owner = $5 AND status = 0 \
                     RETURNING tenant",
                    &[&status, &error, &at_ms, &id, &owner],
                )
                .await
                .map_err(db_err)?;
            if let Some(row) = tenant {
                let tenant: String = row.get(0);
                tx.execute(
                    "INSERT INTO tenant_counters (tenant, pending) VALUES ($1, 0) \
                     ON CONFLICT (tenant) DO UPDATE SET pending = GREATEST(tenant_counters.pending - 1, 0)",
                    &[&tenant],
                )
                .await
                .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)
    }

    /// [`super::Backend::recover_dead_owners`]: owners holding claims or leases without a
    /// live heartbeat (lapsed, or gone from the registry) lose them at once, and lapsed
    /// instances leave the registry; returns the owners recovered.
    pub async fn recover_dead_owners(&self) -> super::Result<Vec<String>> {
        let lapse_ms = self.lapse.as_millis() as i64;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let rows = tx
            .query(
                "WITH live AS (SELECT owner_id FROM instances \
                 WHERE heartbeat_at > now() - make_interval(secs => $1::bigint / 1000.0)), \
                 holders AS (SELECT lease_owner AS o FROM outbox WHERE lease_owner IS NOT NULL AND status = 0 \
                 UNION SELECT lease_owner FROM timers WHERE lease_owner IS NOT NULL \
                 UNION SELECT holder FROM leases WHERE holder IS NOT NULL \
                 UNION SELECT owner_id FROM instances) \
                 SELECT o FROM holders WHERE o <> $2 AND o NOT IN (SELECT owner_id FROM live) ORDER BY o",
                &[&lapse_ms, &self.owner_id],
            )
            .await
            .map_err(db_err)?;
        let dead: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if !dead.is_empty() {
            free_claims(&tx, &dead).await?;
            tx.execute("DELETE FROM instances WHERE owner_id = ANY($1)", &[&dead])
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        if !dead.is_empty() {
            self.changes.outbox.notify_one();
            self.changes.timers.notify_one();
        }
        Ok(dead)
    }
}

impl PgStore {
    /// [`super::Backend::claim_timers`]: due timers (`due_ms <= now_ms`) whose lease lapsed
    /// by the database's clock, oldest first, taken with `FOR UPDATE SKIP LOCKED`.
    pub async fn claim_timers(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> super::Result<Vec<super::TimerRow>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "WITH due AS (SELECT key FROM timers WHERE due_ms <= $1 \
                     AND lease_until_ms <= {DB_NOW_MS} ORDER BY due_ms, key LIMIT $2 \
                     FOR UPDATE SKIP LOCKED) \
                     UPDATE timers t SET lease_owner = $3, lease_until_ms = {DB_NOW_MS} + $4 \
                     FROM due WHERE t.key = due.key \
                     RETURNING t.key, t.kind, t.tenant, t.due_ms, t.payload"
                ),
                &[&now_ms, &(limit as i64), &owner, &lease_ms.max(1)],
            )
            .await
            .map_err(db_err)?;
        let mut timers: Vec<super::TimerRow> = rows
            .iter()
            .map(|r| super::TimerRow {
                key: r.get(0),
                kind: r.get(1),
                tenant: r.get(2),
                due_ms: r.get(3),
                payload: r.get(4),
            })
            .collect();
        timers.sort_by(|a, b| (a.due_ms, &a.key).cmp(&(b.due_ms, &b.key)));
        Ok(timers)
    }

    /// [`super::Backend::release_timer`]: back to the queue without running it.
    pub async fn release_timer(&self, key: String, owner: String) -> super::Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE timers SET lease_owner = NULL, lease_until_ms = 0 \
                 WHERE key = $1 AND lease_owner = $2",
                &[&key, &owner],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// [`super::Backend::finish_timer`]: removes a timer that ran, unless it was set again
    /// (which clears its lease) since it was claimed.
    pub async fn finish_timer(&self, key: String, owner: String) -> super::Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM timers WHERE key = $1 AND lease_owner = $2",
                &[&key, &owner],
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

impl PgStore {
    /// [`super::Backend::outbox_depth`]: pending and dead events per tenant.
    pub async fn outbox_depth(&self) -> super::Result<Vec<super::OutboxDepth>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant, count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status = 2) \
                 FROM outbox WHERE status IN (0, 2) GROUP BY tenant ORDER BY tenant",
                &[],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| super::OutboxDepth {
                tenant: r.get(0),
                pending: r.get::<_, i64>(1).max(0) as u64,
                dead: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    /// [`super::Backend::dead_letters`], oldest first.
    pub async fn dead_letters(
        &self,
        tenant: Option<String>,
        limit: usize,
    ) -> super::Result<Vec<super::DeadLetter>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT event_id, tenant, event_type, attempts, last_error, created_at_ms \
                 FROM outbox WHERE status = 2 AND ($1::text IS NULL OR tenant = $1) \
                 ORDER BY id LIMIT $2",
                &[&tenant, &(limit as i64)],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| super::DeadLetter {
                event_id: r.get(0),
                tenant: r.get(1),
                event_type: r.get(2),
                attempts: r.get::<_, i32>(3).max(0) as u32,
                last_error: r.get(4),
                created_at_ms: r.get(5),
            })
            .collect())
    }

    /// [`super::Backend::replay`]: matching dead (and, if asked, delivered) events back in
    /// the queue, due at `now_ms`, in one transaction with the pending counters.
    pub async fn replay(&self, filter: super::ReplayFilter, now_ms: i64) -> super::Result<u64> {
        let statuses: Vec<i16> = if filter.include_delivered {
            vec![1, 2]
        } else {
            vec![2]
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let rows = tx
            .query(
                "WITH replayed AS (UPDATE outbox SET status = 0, attempts = 0, next_attempt_ms = $1, \
                 lease_owner = NULL, lease_until_ms = 0, done_at_ms = NULL \
                 WHERE status = ANY($2) AND ($3::text IS NULL OR tenant = $3) \
                 AND ($4::text IS NULL OR event_id = $4) RETURNING tenant) \
                 SELECT tenant, count(*) FROM replayed GROUP BY tenant",
                &[&now_ms, &statuses, &filter.tenant, &filter.event_id],
            )
            .await
            .map_err(db_err)?;
        let mut total = 0u64;
        for row in &rows {
            let (tenant, n): (String, i64) = (row.get(0), row.get(1));
            tx.execute(
                "INSERT INTO tenant_counters (tenant, pending) VALUES ($1, $2) \
                 ON CONFLICT (tenant) DO UPDATE SET pending = tenant_counters.pending + $2",
                &[&tenant, &n],
            )
            .await
            .map_err(db_err)?;
            total += n.max(0) as u64;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(total)
    }

    /// [`super::Backend::queue_summary`].
    pub async fn queue_summary(&self) -> super::Result<Vec<super::QueueSummary>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT o.tenant, count(*) FILTER (WHERE o.status = 0), \
                 count(*) FILTER (WHERE o.status = 2), \
                 min(o.created_at_ms) FILTER (WHERE o.status = 0), \
                 min(o.next_attempt_ms) FILTER (WHERE o.status = 0), \
                 (SELECT e.last_error FROM outbox e WHERE e.tenant = o.tenant \
                  AND e.status IN (0, 2) AND e.last_error IS NOT NULL ORDER BY e.id DESC LIMIT 1) \
                 FROM outbox o WHERE o.status IN (0, 2) GROUP BY o.tenant ORDER BY o.tenant",
                &[],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| super::QueueSummary {
                tenant: r.get(0),
                pending: r.get::<_, i64>(1).max(0) as u64,
                dead: r.get::<_, i64>(2).max(0) as u64,
                oldest_pending_ms: r.get(3),
                next_attempt_ms: r.get(4),
                last_error: r.get(5),
            })
            .collect())
    }

    /// [`super::Backend::list_events`].
    pub async fn list_events(
        &self,
        query: super::EventQuery,
    ) -> super::Result<Vec<super::EventListing>> {
        let status = query.status.code() as i16;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, event_id, tenant, event_type, call_id, status, attempts, \
                 next_attempt_ms, last_error, created_at_ms FROM outbox \
                 WHERE status = $1 AND ($2::text IS NULL OR tenant = $2) \
                 AND ($3::text IS NULL OR event_type = $3) AND ($4::text IS NULL OR event_id = $4) \
                 AND id > $5 ORDER BY id LIMIT $6",
                &[
                    &status,
                    &query.tenant,
                    &query.event_type,
                    &query.event_id,
                    &query.after_id.unwrap_or(0),
                    &(query.limit as i64),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| super::EventListing {
                id: r.get(0),
                event_id: r.get(1),
                tenant: r.get(2),
                event_type: r.get(3),
                call_id: r.get(4),
                status: super::EventStatus::from_code(i64::from(r.get::<_, i16>(5))),
                attempts: r.get::<_, i32>(6).max(0) as u32,
                next_attempt_ms: r.get(7),
                last_error: r.get(8),
                created_at_ms: r.get(9),
            })
            .collect())
    }

    /// [`super::Backend::retry_now`]: not-yet-due, unclaimed pending events due now (by the
    /// caller's clock, as `next_attempt_ms` is written).
    pub async fn retry_now(&self, tenants: Vec<String>, now_ms: i64) -> super::Result<u64> {
        let all = tenants.is_empty();
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE outbox SET next_attempt_ms = $1 WHERE status = 0 \
                     AND next_attempt_ms > $1 AND lease_until_ms <= {DB_NOW_MS} \
                     AND ($2 OR tenant = ANY($3))"
                ),
                &[&now_ms, &all, &tenants],
            )
            .await
            .map_err(db_err)?;
        Ok(n)
    }

    /// [`super::Backend::set_endpoint_disabled`].
    pub async fn set_endpoint_disabled(
        &self,
        tenant: String,
        disabled: Option<(i64, String)>,
    ) -> super::Result<()> {
        let client = self.client().await?;
        match &disabled {
            Some((at, reason)) => client
                .execute(
                    "INSERT INTO endpoints (tenant, disabled_at_ms, reason) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant) DO UPDATE SET disabled_at_ms = $2, reason = $3",
                    &[&tenant, at, reason],
                )
                .await
                .map_err(db_err)?,
            None => client
                .execute("DELETE FROM endpoints WHERE tenant = $1", &[&tenant])
                .await
                .map_err(db_err)?,
        };
        Ok(())
    }

    /// [`super::Backend::disabled_endpoints`].
    pub async fn disabled_endpoints(&self) -> super::Result<Vec<(String, String)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT tenant, reason FROM endpoints ORDER BY tenant", &[])
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// [`super::Backend::purge`]: expired dedupe answers, ended calls past retention, their
    /// (or long-lapsed) aliases, and delivered events past retention.
    pub async fn purge(
        &self,
        now_ms: i64,
        call_retention_ms: i64,
        delivered_retention_ms: i64,
    ) -> super::Result<u64> {
        let client = self.client().await?;
        let mut n = 0;
        for (sql, at) in [
            ("DELETE FROM dedup WHERE expires_at_ms <= $1", now_ms),
            (
                "DELETE FROM calls WHERE state IS NULL AND updated_at_ms <= $1",
                now_ms - call_retention_ms,
            ),
            (
                "DELETE FROM aliases WHERE (until_ms IS NOT NULL AND until_ms <= $1) \
                 OR NOT EXISTS (SELECT 1 FROM calls WHERE calls.tenant = aliases.tenant \
                 AND calls.vendor = aliases.owner_kind AND calls.vendor_call_id = aliases.owner_id)",
                now_ms - 24 * 3600 * 1000,
            ),
            (
                "DELETE FROM outbox WHERE status = 1 AND done_at_ms <= $1",
                now_ms - delivered_retention_ms,
            ),
        ] {
            n += client.execute(sql, &[&at]).await.map_err(db_err)?;
        }
        Ok(n)
    }
}

const CALL_COLUMNS: &str = "call_id, version, next_seq, status, attached, state, expires_at_ms";

fn call_row(r: &tokio_postgres::Row, at: usize) -> super::CallRow {
    let attached: serde_json::Value = r.get(at + 4);
    super::CallRow {
        call_id: r.get(at),
        version: r.get(at + 1),
        next_seq: r.get(at + 2),
        status: r.get(at + 3),
        attached: match attached {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        state: r.get(at + 5),
        expires_at_ms: r.get(at + 6),
    }
}

impl PgStore {
    /// [`super::Backend::ping`].
    pub async fn ping(&self) -> super::Result<()> {
        self.client()
            .await?
            .execute("SELECT 1", &[])
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// [`super::Backend::load_call`].
    pub async fn load_call(&self, key: super::CallKey) -> super::Result<Option<super::CallRow>> {
        // On the decision path: a statement prepared once per connection, one round trip.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {CALL_COLUMNS} FROM calls \
                 WHERE tenant = $1 AND vendor = $2 AND vendor_call_id = $3"
            ))
            .await
            .map_err(db_err)?;
        let row = client
            .query_opt(&stmt, &[&key.tenant, &key.vendor, &key.vendor_call_id])
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| call_row(&r, 0)))
    }

    /// [`super::Backend::load_call_by_id`].
    pub async fn load_call_by_id(
        &self,
        call_id: String,
    ) -> super::Result<Option<(super::CallKey, super::CallRow)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT tenant, vendor, vendor_call_id, {CALL_COLUMNS} FROM calls \
                     WHERE call_id = $1"
                ),
                &[&call_id],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| {
            (
                super::CallKey {
                    tenant: r.get(0),
                    vendor: r.get(1),
                    vendor_call_id: r.get(2),
                },
                call_row(&r, 3),
            )
        }))
    }

    /// [`super::Backend::list_live`]: live rows of one kind, least recently changed first.
    pub async fn list_live(
        &self,
        tenant: String,
        kind: String,
        limit: usize,
    ) -> super::Result<Vec<(super::CallKey, super::CallRow)>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT vendor_call_id, {CALL_COLUMNS} FROM calls WHERE tenant = $1 \
                     AND vendor = $2 AND state IS NOT NULL ORDER BY updated_at_ms LIMIT $3"
                ),
                &[&tenant, &kind, &(limit as i64)],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    super::CallKey {
                        tenant: tenant.clone(),
                        vendor: kind.clone(),
                        vendor_call_id: r.get(0),
                    },
                    call_row(r, 1),
                )
            })
            .collect())
    }

    /// [`super::Backend::find_alias`]: the owner of an alias whose claim has not lapsed.
    pub async fn find_alias(
        &self,
        tenant: String,
        namespace: String,
        value: String,
        now_ms: i64,
    ) -> super::Result<Option<(String, String)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT owner_kind, owner_id FROM aliases WHERE tenant = $1 AND namespace = $2 \
                 AND value = $3 AND (until_ms IS NULL OR until_ms > $4)",
                &[&tenant, &namespace, &value, &now_ms],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// [`super::Backend::call_events`]: (seq, type, delivery status) in sequence order.
    pub async fn call_events(&self, call_id: String) -> super::Result<Vec<(i64, String, i64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, event_type, status FROM outbox WHERE call_id = $1 ORDER BY seq",
                &[&call_id],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), i64::from(r.get::<_, i16>(2))))
            .collect())
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes every delivery and timer leased to one of `owners` due for claiming again, and
/// releases their connector leases.
async fn free_claims(
    tx: &deadpool_postgres::Transaction<'_>,
    owners: &[String],
) -> super::Result<()> {
    for sql in [
        "UPDATE outbox SET lease_owner = NULL, lease_until_ms = 0 \
         WHERE lease_owner = ANY($1) AND status = 0",
        "UPDATE timers SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ANY($1)",
        "UPDATE leases SET holder = NULL, until_ms = 0 WHERE holder = ANY($1)",
    ] {
        tx.execute(sql, &[&owners]).await.map_err(db_err)?;
    }
    Ok(())
}

/// A unit of work waiting for the writer.
struct Job {
    uow: super::UnitOfWork,
    /// Nobody acknowledges it: it may wait briefly for company, and a batch of such writes
    /// only commits without waiting for its WAL flush (the next durable commit's flush
    /// covers it: PostgreSQL flushes the WAL in order).
    lazy: bool,
    reply: tokio::sync::oneshot::Sender<super::Result<super::CommitOutcome>>,
}

/// How long writes nobody waits on may wait for others to share their commit.
const LAZY_WINDOW: Duration = Duration::from_millis(2);

/// How often one unit of work is tried again within its batch when the database chose it
/// as a deadlock victim (two instances' batches locking the same calls in another order).
const DEADLOCK_RETRIES: usize = 3;

impl PgStore {
    /// [`super::Backend::commit`]: one unit of work, committed with `synchronous_commit =
    /// on` (flushed before this returns), or why not.
    pub async fn commit(&self, uow: super::UnitOfWork) -> super::Result<super::CommitOutcome> {
        self.queue_uow(uow, false).await
    }

    /// [`super::Backend::commit_queued`]: queued before this returns, so this instance's
    /// later writes commit after it.
    pub fn commit_queued(
        &self,
        uow: super::UnitOfWork,
    ) -> impl std::future::Future<Output = super::Result<super::CommitOutcome>> + Send + 'static
    {
        self.queue_uow(uow, true)
    }

    fn queue_uow(
        &self,
        uow: super::UnitOfWork,
        lazy: bool,
    ) -> impl std::future::Future<Output = super::Result<super::CommitOutcome>> + Send + 'static
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = match lock(&self.writer).as_ref() {
            Some(writer) => writer.send(Job { uow, lazy, reply }).is_ok(),
            None => false,
        };
        async move {
            if !sent {
                return Err(super::StoreError::Closed);
            }
            answer.await.map_err(|_| super::StoreError::Closed)?
        }
    }
}

async fn writer_loop(
    pool: Pool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>,
    max: usize,
    owner_id: String,
    changes: Arc<super::ChangeFeed>,
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
        let uows: Vec<&super::UnitOfWork> = batch.iter().map(|j| &j.uow).collect();
        let durable = batch.iter().any(|j| !j.lazy);
        let results = run_batch(&pool, &mut conn, &uows, durable, &owner_id).await;
        if results.is_err() {
            // Whatever state it was left in, it is not used again.
            if let Some(broken) = conn.take() {
                drop(deadpool_postgres::Object::take(broken));
            }
        }
        let outbox = match &results {
            Ok(outcomes) => outcomes.iter().zip(&uows).any(|(o, u)| {
                matches!(o, Ok(super::CommitOutcome::Committed { .. })) && u.event_count() > 0
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
/// instances what changed. `Err` when the transaction itself failed: nothing committed.
///
/// Round trips bound a writer whose database is a network hop (or a busy process) away, so
/// the batch is sent as a pipeline: every unit's statements go out back to back, in the
/// order the units are applied, and their answers are read afterwards. A unit commits as
/// sent when all its statements succeeded and its guards held (resend key claimed, rows at
/// the expected version, aliases claimed, quota not reached). The first try sends the units
/// without a savepoint each (a subtransaction per unit is a good part of the server's work);
/// when one of them did not commit as sent, the try is rolled back and the units go again,
/// each under its savepoint. Then, at the first unit that did not commit as sent, the
/// transaction rolls back to that unit's savepoint (undoing it and every unit sent after
/// it), the unit is applied alone, statement by statement ([`apply_uow`], the exact outcome:
/// conflict, duplicate, refusal or error, with deadlock retries), and the units after it go
/// out again. The events of all committed units are inserted at the end in one statement;
/// should that fail, every unit is applied again alone with its own events, so one unit's
/// failure fails only it.
async fn run_batch(
    pool: &Pool,
    conn: &mut Option<deadpool_postgres::Object>,
    uows: &[&super::UnitOfWork],
    durable: bool,
    owner_id: &str,
) -> super::Result<Vec<super::Result<super::CommitOutcome>>> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn =
            Some(pool.get().await.map_err(|e| {
                super::StoreError::Backend(format!("PostgreSQL: {}", describe(&e)))
            })?);
    }
    let Some(client) = conn.as_mut() else {
        return Err(super::StoreError::Closed);
    };
    let tx = client.transaction().await.map_err(db_err)?;
    let st = Stmts::prepare(&tx).await.map_err(db_err)?;
    // Rows are locked in one order by every instance (the call's key; a stable sort keeps
    // this instance's writes to one call in the order they were queued), so two instances'
    // batches touching the same calls wait on each other instead of deadlocking.
    let mut order: Vec<usize> = (0..uows.len()).collect();
    if sortable(uows) {
        order.sort_by(|&a, &b| lock_key(uows[a]).cmp(&lock_key(uows[b])));
    }
    let mut batch = Batch::new(uows.len());
    // Sent ahead of the first unit: the commit mode, and the pending counters of the tenants
    // whose units have a quota (the quota is checked here, from these and the batch's own
    // additions).
    let mut quota_tenants: Vec<&str> = uows
        .iter()
        .filter(|u| u.outbox_quota.is_some() && u.event_count() > 0)
        .map(|u| u.tenant.as_str())
        .collect();
    quota_tenants.sort_unstable();
    quota_tenants.dedup();
    let mut prelude: Vec<Step<'_>> = Vec::new();
    if !durable {
        prelude.push(simple(&tx, "SET LOCAL synchronous_commit = off".to_owned()));
    }
    if !quota_tenants.is_empty() {
        let (tx, st, tenants) = (&tx, &st, quota_tenants.clone());
        prelude.push(Box::pin(async move {
            tx.query(&st.pending_many, &[&tenants])
                .await
                .map(Reply::Rows)
        }));
    }
    // Everything this batch writes comes after this savepoint, so it can all be undone.
    prelude.push(simple(&tx, "SAVEPOINT b".to_owned()));
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
                steps.push(simple(&tx, format!("SAVEPOINT p{p}")));
            }
            let mut checks = Vec::new();
            unit_steps(&tx, &st, uows[at], &mut steps, &mut checks);
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
                slow_unit(&tx, &st, uows[order[p]], order[p], &mut batch, false).await?;
                pos = p + 1;
                // Conflicts come in runs (units on one hot call): send fewer at once, so a
                // refusal costs fewer units sent again.
                window = (window / 2).max(PIPELINE_MIN);
            }
        }
    }
    drop(prelude);
    if let Err(e) = finish(&tx, &st, &batch, owner_id).await {
        tracing::warn!(error = %describe(&e), units = uows.len(), "a batch's writes failed together; applying its units one by one");
        tx.batch_execute("ROLLBACK TO b").await.map_err(db_err)?;
        batch.reset();
        for &at in &order {
            slow_unit(&tx, &st, uows[at], at, &mut batch, true).await?;
        }
        finish(&tx, &st, &batch, owner_id).await.map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(batch
        .outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Err(super::StoreError::Backend("write was not applied".into())))
        })
        .collect())
}

/// After a refusal, at least this many units go out in the next pipeline.
const PIPELINE_MIN: usize = 4;

/// What a batch has committed so far (under its savepoints).
struct Batch<'a> {
    counters: Counters,
    outcomes: Vec<Option<super::Result<super::CommitOutcome>>>,
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
        uow: &super::UnitOfWork,
        seqs: Vec<Option<i64>>,
        events: Vec<EventRow<'a>>,
    ) {
        self.outcomes[at] = Some(Ok(super::CommitOutcome::Committed { seqs }));
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
    tx: &Tx<'_>,
    st: &Stmts,
    uow: &'a super::UnitOfWork,
    at: usize,
    batch: &mut Batch<'a>,
    inline: bool,
) -> super::Result<()> {
    let mut tries = 0;
    let outcome = loop {
        tx.batch_execute("SAVEPOINT uow").await.map_err(db_err)?;
        let mut mine = Counters::default();
        let mut applied = apply_uow(tx, st, uow, &batch.counters, &mut mine).await;
        if inline {
            let failed = match &applied {
                Ok((super::CommitOutcome::Committed { .. }, events)) if !events.is_empty() => {
                    outbox_step(tx, st, events).await.err()
                }
                _ => None,
            };
            if let Some(e) = failed {
                applied = Err(ApplyError::Db(e));
            }
        }
        match applied {
            Ok((super::CommitOutcome::Committed { seqs }, events)) => {
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

/// The end of a batch, as one pipeline: its events in one statement, the pending counters
/// moved once per tenant, and the notices to other instances.
async fn finish(
    tx: &Tx<'_>,
    st: &Stmts,
    batch: &Batch<'_>,
    owner_id: &str,
) -> Result<(), tokio_postgres::Error> {
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
    for reply in pipeline(steps).await {
        reply?;
    }
    Ok(())
}

/// Whether sorting by [`lock_key`] keeps every pair of units of work that write a common
/// row in queue order: true unless a unit writing several rows shares one with another unit
/// (then the batch keeps its queue order).
fn sortable(uows: &[&super::UnitOfWork]) -> bool {
    let rows = |u: &super::UnitOfWork| -> Vec<(String, String, String)> {
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
fn lock_key(uow: &super::UnitOfWork) -> Option<(&str, &str, &str)> {
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

fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

enum ApplyError {
    Db(tokio_postgres::Error),
    Other(super::StoreError),
}

impl ApplyError {
    fn into_store(self) -> super::StoreError {
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
struct Counters {
    read: std::collections::HashMap<String, i64>,
    delta: std::collections::HashMap<String, i64>,
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

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// What one statement of a pipeline answered.
enum Reply {
    Done,
    Row(Option<tokio_postgres::Row>),
    Rows(Vec<tokio_postgres::Row>),
    Count(u64),
}

/// One statement, not yet sent: tokio-postgres sends a request when its future is first
/// polled.
type Step<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Reply, tokio_postgres::Error>> + Send + 'a>,
>;

/// Sends `steps` to the server back to back and then reads every answer. Each step is polled
/// once in order first, which puts its request on the connection in that order without
/// waiting for the one before (a pipeline); the answers come back in the same order, and
/// are awaited in it. A failed statement fails the statements after it in the same
/// transaction too ("current transaction is aborted"), until a rollback to a savepoint.
async fn pipeline(mut steps: Vec<Step<'_>>) -> Vec<Result<Reply, tokio_postgres::Error>> {
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

fn simple<'a>(tx: &'a Tx<'a>, sql: String) -> Step<'a> {
    Box::pin(async move { tx.batch_execute(&sql).await.map(|()| Reply::Done) })
}

/// The writer's statements, prepared once per connection (the cache is the connection's).
struct Stmts {
    dedup_claim: tokio_postgres::Statement,
    dedup_read: tokio_postgres::Statement,
    pending_one: tokio_postgres::Statement,
    pending_many: tokio_postgres::Statement,
    pending_add: tokio_postgres::Statement,
    call_insert: tokio_postgres::Statement,
    call_update: tokio_postgres::Statement,
    timer_set: tokio_postgres::Statement,
    timer_delete: tokio_postgres::Statement,
    alias_release: tokio_postgres::Statement,
    alias_claim: tokio_postgres::Statement,
    alias_owner: tokio_postgres::Statement,
    outbox_insert: tokio_postgres::Statement,
    notify: tokio_postgres::Statement,
}

impl Stmts {
    async fn prepare(tx: &Tx<'_>) -> Result<Stmts, tokio_postgres::Error> {
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
enum Check {
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
fn unit_steps<'a>(
    tx: &'a Tx<'a>,
    st: &'a Stmts,
    uow: &'a super::UnitOfWork,
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
            super::AliasAction::Claim { .. } => Check::Claimed,
            super::AliasAction::Release => Check::Ok,
        });
    }
    for timer in &uow.timers {
        steps.push(timer_step(tx, st, timer));
        checks.push(Check::Ok);
    }
}

/// The rows a unit of work writes (its call's, then each entity's), with their new events'
/// count.
fn written_rows(uow: &super::UnitOfWork) -> impl Iterator<Item = (&super::CallWrite, i64)> {
    uow.call
        .iter()
        .map(|c| (c, uow.events.len() as i64))
        .chain(uow.entities.iter().map(|e| (&e.row, e.events.len() as i64)))
}

/// Whether a unit sent in a pipeline committed as sent: the first sequence numbers of its
/// written rows when every statement succeeded, every guard held and its events fit the
/// tenant's quota (the counters read ahead plus what the batch added before it); `None`
/// when it must be applied alone to find its outcome.
fn settle(
    uow: &super::UnitOfWork,
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
struct EventRow<'a> {
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
fn unit_events<'a>(
    uow: &'a super::UnitOfWork,
    firsts: &[i64],
    out: &mut Vec<EventRow<'a>>,
) -> super::Result<Vec<Option<i64>>> {
    let mut firsts = firsts.iter().copied();
    let mut next = || {
        firsts
            .next()
            .ok_or_else(|| super::StoreError::Backend("a written row has no sequence".into()))
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
    uow: &'a super::UnitOfWork,
    call: Option<(&'a String, i64)>,
    events: &'a [super::NewEvent],
    out: &mut Vec<EventRow<'a>>,
) -> super::Result<Vec<Option<i64>>> {
    let mut seqs = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let seq = call.map(|(_, first)| first + i as i64);
        let payload = serde_json::to_vec(&super::sqlite::WithSeq(&event.payload, seq))
            .map_err(|e| super::StoreError::Backend(format!("cannot encode event: {e}")))?;
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

async fn outbox_step(
    tx: &Tx<'_>,
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
    tx: &'a Tx<'a>,
    st: &'a Stmts,
    uow: &'a super::UnitOfWork,
    dedup: &'a super::DedupWrite,
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
    tx: &'a Tx<'a>,
    st: &'a Stmts,
    call: &'a super::CallWrite,
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
fn expiry_step<'a>(tx: &'a Tx<'a>, st: &'a Stmts, call: &'a super::CallWrite) -> Step<'a> {
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

fn timer_step<'a>(tx: &'a Tx<'a>, st: &'a Stmts, op: &'a super::TimerOp) -> Step<'a> {
    Box::pin(async move {
        match op {
            super::TimerOp::Set {
                key,
                kind,
                tenant,
                due_ms,
                payload,
            } => {
                tx.execute(&st.timer_set, &[key, kind, tenant, due_ms, payload])
                    .await
            }
            super::TimerOp::Delete { key } => tx.execute(&st.timer_delete, &[key]).await,
        }
        .map(Reply::Count)
    })
}

/// Claims (a row written when claimed) or releases one alias; a claim held, and not
/// lapsed, by another owner is not written. Of two instances claiming one alias at once, the
/// second waits for the first's commit and then finds it taken.
fn alias_step<'a>(
    tx: &'a Tx<'a>,
    st: &'a Stmts,
    tenant: &'a str,
    alias: &'a super::AliasOp,
    now_ms: i64,
) -> Step<'a> {
    Box::pin(async move {
        match alias.action {
            super::AliasAction::Release => {
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
            super::AliasAction::Claim { until_ms: until } => {
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
async fn apply_uow<'u>(
    tx: &Tx<'_>,
    st: &Stmts,
    uow: &'u super::UnitOfWork,
    batch: &Counters,
    mine: &mut Counters,
) -> Result<(super::CommitOutcome, Vec<EventRow<'u>>), ApplyError> {
    use super::CommitOutcome;
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
        if matches!(alias.action, super::AliasAction::Claim { .. }) && !claimed(&written) {
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

impl super::Backend for PgStore {
    fn live_instances(&self) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<String>>> {
        Box::pin(PgStore::live_instances(self))
    }

    fn trip_breaker(
        &self,
        scope: String,
        endpoint: String,
        open_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        Box::pin(PgStore::trip_breaker(self, scope, endpoint, open_ms))
    }

    fn close_breaker(
        &self,
        scope: String,
        endpoint: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        Box::pin(PgStore::close_breaker(self, scope, endpoint))
    }

    fn open_breakers(
        &self,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::SharedBreaker>>> {
        Box::pin(PgStore::open_breakers(self))
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
        Box::pin(PgStore::recover_dead_owners(self))
    }

    fn ping(&self) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        Box::pin(PgStore::ping(self))
    }

    fn load_call(
        &self,
        key: super::CallKey,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<super::CallRow>>> {
        Box::pin(PgStore::load_call(self, key))
    }

    fn load_call_by_id(
        &self,
        call_id: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<(super::CallKey, super::CallRow)>>>
    {
        Box::pin(PgStore::load_call_by_id(self, call_id))
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
        Box::pin(PgStore::claim_deliveries(
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
        Box::pin(PgStore::finish_deliveries(self, owner, updates))
    }

    fn claim_timers(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::TimerRow>>> {
        Box::pin(PgStore::claim_timers(self, owner, now_ms, lease_ms, limit))
    }

    fn release_timer(
        &self,
        key: String,
        owner: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        Box::pin(PgStore::release_timer(self, key, owner))
    }

    fn finish_timer(
        &self,
        key: String,
        owner: String,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<()>> {
        Box::pin(PgStore::finish_timer(self, key, owner))
    }

    fn find_alias(
        &self,
        tenant: String,
        namespace: String,
        value: String,
        now_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<(String, String)>>> {
        Box::pin(PgStore::find_alias(self, tenant, namespace, value, now_ms))
    }

    fn list_live(
        &self,
        tenant: String,
        kind: String,
        limit: usize,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<(super::CallKey, super::CallRow)>>> {
        Box::pin(PgStore::list_live(self, tenant, kind, limit))
    }

    fn outbox_depth(
        &self,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::OutboxDepth>>> {
        Box::pin(PgStore::outbox_depth(self))
    }

    fn dead_letters(
        &self,
        tenant: Option<String>,
        limit: usize,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::DeadLetter>>> {
        Box::pin(PgStore::dead_letters(self, tenant, limit))
    }

    fn queue_summary(
        &self,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::QueueSummary>>> {
        Box::pin(PgStore::queue_summary(self))
    }

    fn list_events(
        &self,
        query: super::EventQuery,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<super::EventListing>>> {
        Box::pin(PgStore::list_events(self, query))
    }

    fn retry_now(
        &self,
        tenants: Vec<String>,
        now_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<u64>> {
        Box::pin(async move {
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
        Box::pin(async move {
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
        Box::pin(PgStore::set_endpoint_disabled(self, tenant, disabled))
    }

    fn disabled_endpoints(
        &self,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Vec<(String, String)>>> {
        Box::pin(PgStore::disabled_endpoints(self))
    }

    fn purge(
        &self,
        now_ms: i64,
        call_retention_ms: i64,
        delivered_retention_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<u64>> {
        Box::pin(PgStore::purge(
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
        Box::pin(PgStore::call_events(self, call_id))
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
        Box::pin(PgStore::acquire_lease(self, key, owner, lease_ms))
    }

    fn renew_lease(
        &self,
        key: super::LeaseKey,
        owner: String,
        epoch: u64,
        _now_ms: i64,
        lease_ms: i64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<i64>>> {
        Box::pin(PgStore::renew_lease(self, key, owner, epoch, lease_ms))
    }

    fn release_lease(
        &self,
        key: super::LeaseKey,
        owner: String,
        epoch: u64,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<bool>> {
        Box::pin(PgStore::release_lease(self, key, owner, epoch))
    }

    fn read_lease(
        &self,
        key: super::LeaseKey,
    ) -> ivrgate_adapter::BoxFuture<'_, super::Result<Option<super::LeaseRow>>> {
        Box::pin(PgStore::read_lease(self, key))
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

/// The `NOTIFY` channel commits announce themselves on. The payload is
/// `{owner_id}:{what}`, `what` being `outbox`, `timers` or anything else (some row changed).
pub const CHANGES_CHANNEL: &str = "ivrgate_changes";

/// The SQL a commit runs (inside its transaction, so the notice goes out only if it commits)
/// to wake other instances: `$1` is `{owner_id}:{what}`.
pub const NOTIFY_SQL: &str = "SELECT pg_notify('ivrgate_changes', $1)";

/// Feeds a [`super::ChangeFeed`] from `LISTEN/NOTIFY` on a connection of its own. A notice
/// is lost while that connection is down, so after every reconnect the feed wakes every
/// waiter (they read the store again: catch-up), and no long-poll waits forever for a
/// wake-up that was missed. Stops when dropped.
pub struct ChangeListener {
    task: tokio::task::JoinHandle<()>,
    connections: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChangeListener {
    /// Starts listening; `owner_id`'s own notices are ignored (its commits wake it directly).
    pub fn start(
        settings: &PgSettings,
        owner_id: String,
        feed: Arc<super::ChangeFeed>,
    ) -> Result<ChangeListener, String> {
        let mut config = settings.config.clone();
        config.connect_timeout(settings.connect_timeout);
        config.application_name("ivrgate-listen");
        let tls = tls(settings.tls_ca_file.as_deref())?;
        let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match listen_once(&config, tls.clone(), &owner_id, &feed, &counted).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(why) => {
                        tracing::warn!(error = %why, "PostgreSQL change feed connection failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(ChangeListener { task, connections })
    }

    /// How many times the listener connected (and caught up) so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One listening connection, until it ends (`Ok`: it was up and is gone now).
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    owner_id: &str,
    feed: &super::ChangeFeed,
    connections: &std::sync::atomic::AtomicU64,
) -> Result<(), String> {
    use tokio_postgres::AsyncMessage;
    let (client, mut connection) = config.connect(tls).await.map_err(|e| describe(&e))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %describe(&e), "PostgreSQL change feed connection lost");
                    return;
                }
                None => return,
            }
        }
    });
    let listened = client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
        .await
        .map_err(|e| describe(&e));
    if let Err(why) = listened {
        pump.abort();
        return Err(why);
    }
    connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // Whatever was committed while no connection listened: every waiter reads again.
    feed.all();
    let own = format!("{owner_id}:");
    while let Some(payload) = rx.recv().await {
        if payload.starts_with(&own) {
            continue;
        }
        match payload.split_once(':').map(|(_, what)| what) {
            Some("outbox") => {
                feed.outbox.notify_waiters();
                feed.outbox.notify_one();
            }
            Some("timers") => {
                feed.timers.notify_waiters();
                feed.timers.notify_one();
            }
            _ => {}
        }
        feed.foreign.notify_waiters();
    }
    drop(client);
    Ok(())
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
pub mod testing {
    use super::*;

    /// A database made for one test.
    pub struct TestDb {
        pub settings: PgSettings,
        admin: PgSettings,
        pub name: String,
    }

    fn admin_settings() -> Result<PgSettings, String> {
        let url = std::env::var("IVRGATE_TEST_PG").unwrap_or_else(|_| {
            "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable".to_owned()
        });
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| format!("IVRGATE_TEST_PG: {e}"))?;
        Ok(PgSettings {
            config,
            pool_size: 1,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            tls_ca_file: None,
            group_commit_max: 512,
            heartbeat: HEARTBEAT,
            lapse: LAPSE,
        })
    }

    impl TestDb {
        /// Creates a fresh database (pool of at most 4), or `None` (after a loud message)
        /// when no server is reachable outside CI. Panics under CI when unreachable.
        pub async fn create(hint: &str) -> Option<TestDb> {
            let admin = match admin_settings() {
                Ok(a) => a,
                Err(why) => panic!("{why}"),
            };
            let name = format!(
                "ivrgate_t_{}_{}",
                hint.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(30)
                    .collect::<String>()
                    .to_lowercase(),
                crate::ids::instance_id()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_lowercase()
            );
            let created = async {
                let pool = admin.pool()?;
                let client = pool.get().await.map_err(|e| describe(&e))?;
                client
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .map_err(|e| describe(&e))
            }
            .await;
            if let Err(why) = created {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "PostgreSQL for tests ({}) is unreachable under CI: {why}",
                        admin.hosts()
                    );
                }
                eprintln!(
                    "\n!!!!!!!! SKIPPED: PostgreSQL test {hint}: no server at {} ({why}); \
                     set IVRGATE_TEST_PG or start PostgreSQL !!!!!!!!\n",
                    admin.hosts()
                );
                return None;
            }
            let mut settings = admin.with_dbname(&name);
            settings.pool_size = 4;
            Some(TestDb {
                settings,
                admin,
                name,
            })
        }

        /// Drops the database (its connections first).
        pub async fn drop_db(self) {
            let dropped = async {
                let pool = self.admin.pool()?;
                let client = pool.get().await.map_err(|e| describe(&e))?;
                client
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                        self.name
                    ))
                    .await
                    .map_err(|e| describe(&e))
            }
            .await;
            if let Err(why) = dropped {
                eprintln!("could not drop test database {}: {why}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestDb;
    use super::*;

    async fn versions(pool: &Pool) -> Vec<(i64, String, i64)> {
        let client = pool.get().await.expect("client");
        client
            .query(
                "SELECT version, name, compatible_from FROM ivrgate_schema ORDER BY version",
                &[],
            )
            .await
            .expect("versions")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    #[tokio::test]
    async fn instances_starting_at_once_migrate_once() {
        let Some(db) = TestDb::create("migrate_once").await else {
            return;
        };
        let pools: Vec<Pool> = (0..3).map(|_| db.settings.pool().expect("pool")).collect();
        // Started together: each waits on the advisory lock the first one holds.
        let handles: Vec<_> = pools
            .iter()
            .cloned()
            .map(|p| tokio::spawn(async move { migrate(&p).await }))
            .collect();
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.expect("join"));
        }
        let mut fresh = 0;
        for r in &results {
            let m = r.as_ref().expect("migrated");
            assert_eq!(m.to, 2);
            if m.from.is_none() {
                fresh += 1;
            }
        }
        assert_eq!(
            fresh, 1,
            "exactly one instance created the schema: {results:?}"
        );
        assert_eq!(
            versions(&pools[0]).await,
            vec![
                (1, "init".to_owned(), 1),
                (2, "shared_breakers".to_owned(), 1)
            ]
        );
        // The tables are there and usable.
        let client = pools[0].get().await.expect("client");
        let n: i64 = client
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .expect("outbox")
            .get(0);
        assert_eq!(n, 0);
        let sync: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(sync, "on");
        drop(client);
        let online = check_online(&db.settings).await.expect("online");
        assert!(online.contains("schema version 2 (current)"), "{online}");
        drop(pools);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn an_incompatible_schema_is_refused_and_reported() {
        let Some(db) = TestDb::create("incompatible").await else {
            return;
        };
        let pool = db.settings.pool().expect("pool");
        migrate(&pool).await.expect("migrate");
        let client = pool.get().await.expect("client");
        // A newer binary's expanding migration: this one still runs.
        client
            .execute("INSERT INTO ivrgate_schema (version, name, compatible_from) VALUES (3, 'expand', 1)", &[])
            .await
            .expect("insert");
        assert_eq!(
            migrate(&pool).await,
            Ok(Migrated {
                from: Some(3),
                to: 3
            })
        );
        let online = check_online(&db.settings).await.expect("online");
        assert!(online.contains("marked compatible"), "{online}");
        // A contracting one: refused at start and by check-config --online.
        client
            .execute("INSERT INTO ivrgate_schema (version, name, compatible_from) VALUES (4, 'contract', 4)", &[])
            .await
            .expect("insert");
        let why = migrate(&pool).await.expect_err("refused");
        assert!(why.contains("schema is at version 4"), "{why}");
        assert!(why.contains("incompatible with this ivrgate"), "{why}");
        let why = check_online(&db.settings).await.expect_err("reported");
        assert!(why.contains("incompatible"), "{why}");
        drop(client);
        drop(pool);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn tables_without_a_version_record_are_reported() {
        let Some(db) = TestDb::create("unversioned").await else {
            return;
        };
        let pool = db.settings.pool().expect("pool");
        let client = pool.get().await.expect("client");
        client
            .batch_execute("CREATE TABLE outbox (id bigint)")
            .await
            .expect("create");
        let why = check_online(&db.settings).await.expect_err("reported");
        assert!(why.contains("not migrated by ivrgate"), "{why}");
        let why = migrate(&pool).await.expect_err("refused");
        assert!(why.contains("not migrated by ivrgate"), "{why}");
        drop(client);
        drop(pool);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn an_unreachable_database_is_reported_with_its_hosts() {
        let storage = StorageConfig {
            backend: StorageBackend::Postgres,
            url: Some(crate::config::Secret::from(
                "postgresql://ivrgate:hunter2@127.0.0.1:1,127.0.0.1:2/ivrgate?connect_timeout=2"
                    .to_owned(),
            )),
            connect_timeout_ms: 2_000,
            ..StorageConfig::default()
        };
        let settings = PgSettings::from_config(&storage)
            .expect("valid")
            .expect("postgres");
        let why = check_online(&settings).await.expect_err("unreachable");
        assert!(why.contains("unreachable"), "{why}");
        assert!(why.contains("127.0.0.1:1,127.0.0.1:2"), "{why}");
        assert!(!why.contains("hunter2"), "{why}");
    }

    #[test]
    fn settings_are_checked_without_connecting() {
        let mut storage = StorageConfig {
            backend: StorageBackend::Postgres,
            ..StorageConfig::default()
        };
        assert!(PgSettings::from_config(&storage)
            .expect_err("no url")
            .contains("storage.url is required"));
        storage.url = Some(crate::config::Secret::from(
            "env:IVRGATE_TEST_NO_SUCH_VAR".to_owned(),
        ));
        assert!(PgSettings::from_config(&storage)
            .expect_err("unset")
            .contains("IVRGATE_TEST_NO_SUCH_VAR"));
        storage.url = Some(crate::config::Secret::from(
            "postgresql://u:pw@h1:5432,h2:5433/db?sslmode=bogus".to_owned(),
        ));
        let why = PgSettings::from_config(&storage).expect_err("bad");
        assert!(!why.contains("pw@"), "{why}");
        storage.url = Some(crate::config::Secret::from(
            "postgresql://u:pw@h1:5432,h2:5433/db?sslmode=require".to_owned(),
        ));
        let settings = PgSettings::from_config(&storage).expect("ok").expect("pg");
        assert_eq!(settings.hosts(), "h1:5432,h2:5433");
        assert!(!format!("{settings:?}").contains("pw"));
        storage.tls_ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        assert!(PgSettings::from_config(&storage)
            .expect_err("ca")
            .contains("storage.tls_ca_file"));
        storage.backend = StorageBackend::Sqlite;
        assert!(PgSettings::from_config(&storage).expect("sqlite").is_none());
    }

    fn key() -> crate::store::LeaseKey {
        crate::store::LeaseKey {
            tenant: "acme".into(),
            adapter: "ctips".into(),
            name: "session".into(),
        }
    }

    async fn two_instances(db: &TestDb) -> (PgStore, PgStore) {
        let lapse = Duration::from_secs(10);
        let a = PgStore::open(&db.settings, "own_a".into(), lapse)
            .await
            .expect("open a");
        let b = PgStore::open(&db.settings, "own_b".into(), lapse)
            .await
            .expect("open b");
        (a, b)
    }

    #[tokio::test]
    async fn a_lease_goes_to_one_of_two_racing_instances_and_its_epoch_grows() {
        use crate::store::LeaseAcquire;
        let Some(db) = TestDb::create("lease_race").await else {
            return;
        };
        let (a, b) = two_instances(&db).await;
        let (ra, rb) = tokio::join!(
            a.acquire_lease(key(), "own_a".into(), 60_000),
            b.acquire_lease(key(), "own_b".into(), 60_000)
        );
        let (ra, rb) = (ra.expect("a"), rb.expect("b"));
        let (winner, loser, epoch) = match (&ra, &rb) {
            (LeaseAcquire::Acquired { epoch, .. }, LeaseAcquire::Held(row)) => {
                assert_eq!(row.holder.as_deref(), Some("own_a"));
                (&a, &b, *epoch)
            }
            (LeaseAcquire::Held(row), LeaseAcquire::Acquired { epoch, .. }) => {
                assert_eq!(row.holder.as_deref(), Some("own_b"));
                (&b, &a, *epoch)
            }
            other => panic!("exactly one must win: {other:?}"),
        };
        assert_eq!(epoch, 1);
        // The holder taking it again (it lost track) gets a new epoch, fencing its old one.
        let again = winner
            .acquire_lease(key(), winner.owner_id().into(), 60_000)
            .await
            .expect("again");
        assert!(
            matches!(again, LeaseAcquire::Acquired { epoch: 2, .. }),
            "{again:?}"
        );
        // Released: the other instance takes it at once, with the next epoch.
        assert!(winner
            .release_lease(key(), winner.owner_id().into(), 2)
            .await
            .expect("release"));
        let taken = loser
            .acquire_lease(key(), loser.owner_id().into(), 60_000)
            .await
            .expect("take");
        assert!(
            matches!(taken, LeaseAcquire::Acquired { epoch: 3, .. }),
            "{taken:?}"
        );
        let row = a.read_lease(key()).await.expect("read").expect("row");
        assert_eq!(
            (row.holder.as_deref(), row.epoch),
            (Some(loser.owner_id()), 3)
        );
        db.drop_db().await;
    }

    #[tokio::test]
    async fn a_lease_is_renewed_only_by_its_holder_with_its_epoch_before_it_lapses() {
        use crate::store::LeaseAcquire;
        let Some(db) = TestDb::create("lease_renew").await else {
            return;
        };
        let (a, b) = two_instances(&db).await;
        let LeaseAcquire::Acquired { epoch, until_ms } = a
            .acquire_lease(key(), "own_a".into(), 60_000)
            .await
            .expect("acquire")
        else {
            panic!("free lease not acquired");
        };
        let now = a.now_ms().await.expect("now");
        assert!(
            until_ms > now && until_ms <= now + 60_000,
            "{until_ms} vs {now}"
        );
        assert_eq!(
            b.renew_lease(key(), "own_b".into(), epoch, 60_000).await,
            Ok(None)
        );
        assert_eq!(
            a.renew_lease(key(), "own_a".into(), epoch + 1, 60_000)
                .await,
            Ok(None)
        );
        assert!(a
            .renew_lease(key(), "own_a".into(), epoch, 60_000)
            .await
            .expect("renew")
            .is_some());
        assert!(!b
            .release_lease(key(), "own_b".into(), epoch)
            .await
            .expect("not b's"));
        // Lapsed (by the database's clock): no renewal, and another instance takes it.
        a.client()
            .await
            .expect("client")
            .execute(
                &format!("UPDATE leases SET until_ms = {DB_NOW_MS} - 1"),
                &[],
            )
            .await
            .expect("lapse");
        assert_eq!(
            a.renew_lease(key(), "own_a".into(), epoch, 60_000).await,
            Ok(None)
        );
        let taken = b
            .acquire_lease(key(), "own_b".into(), 60_000)
            .await
            .expect("take");
        assert!(
            matches!(taken, LeaseAcquire::Acquired { epoch: 2, .. }),
            "{taken:?}"
        );
        db.drop_db().await;
    }

    #[tokio::test]
    async fn a_dead_instances_lease_is_taken_at_once_and_a_live_ones_kept() {
        use crate::store::LeaseAcquire;
        let Some(db) = TestDb::create("lease_dead").await else {
            return;
        };
        let (a, b) = two_instances(&db).await;
        assert!(matches!(
            a.acquire_lease(key(), "own_a".into(), 600_000).await,
            Ok(LeaseAcquire::Acquired { epoch: 1, .. })
        ));
        // A live holder keeps it for the whole lease.
        let held = b.acquire_lease(key(), "own_b".into(), 600_000).await;
        assert!(matches!(held, Ok(LeaseAcquire::Held(_))), "{held:?}");
        // Its heartbeat lapsed: taken at once, not after the lease.
        a.client()
            .await
            .expect("client")
            .execute(
                "UPDATE instances SET heartbeat_at = now() - interval '11 seconds' WHERE owner_id = 'own_a'",
                &[],
            )
            .await
            .expect("age");
        let taken = b.acquire_lease(key(), "own_b".into(), 600_000).await;
        assert!(
            matches!(taken, Ok(LeaseAcquire::Acquired { epoch: 2, .. })),
            "{taken:?}"
        );
        // A holder that left the registry (graceful stop) is not live either.
        a.heartbeat().await.expect("a is back");
        b.deregister().await.expect("b leaves");
        let taken = a.acquire_lease(key(), "own_a".into(), 600_000).await;
        assert!(
            matches!(taken, Ok(LeaseAcquire::Acquired { epoch: 3, .. })),
            "{taken:?}"
        );
        db.drop_db().await;
    }

    #[tokio::test]
    async fn the_change_feed_wakes_on_notify_and_catches_up_after_a_lost_connection() {
        let Some(db) = TestDb::create("change_feed").await else {
            return;
        };
        let feed = Arc::new(crate::store::ChangeFeed::default());
        let listener =
            ChangeListener::start(&db.settings, "own_me".into(), feed.clone()).expect("listen");
        let pool = db.settings.pool().expect("pool");
        let client = pool.get().await.expect("client");
        // Connected: the first catch-up wakes every waiter.
        tokio::time::timeout(Duration::from_secs(20), feed.timers.notified())
            .await
            .expect("connected and caught up");
        tokio::time::timeout(Duration::from_secs(20), feed.outbox.notified())
            .await
            .expect("the catch-up wakes the outbox too");
        assert_eq!(listener.connections(), 1);
        // Another instance's commit wakes the outbox waiters; this instance's own does not.
        client
            .execute(NOTIFY_SQL, &[&"own_me:outbox"])
            .await
            .expect("notify own");
        client
            .execute(NOTIFY_SQL, &[&"own_other:outbox"])
            .await
            .expect("notify");
        tokio::time::timeout(Duration::from_secs(20), feed.outbox.notified())
            .await
            .expect("woken by another instance's commit");
        // The listening connection dies (as when the database restarts): it reconnects and
        // wakes every waiter, since notices sent meanwhile are lost.
        let killed: i64 = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'ivrgate-listen' AND datname = current_database()",
                &[],
            )
            .await
            .expect("terminate")
            .get(0);
        assert_eq!(killed, 1);
        tokio::time::timeout(Duration::from_secs(20), async {
            while listener.connections() < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("reconnected");
        tokio::time::timeout(Duration::from_secs(20), feed.timers.notified())
            .await
            .expect("caught up after the reconnect");
        tokio::time::timeout(Duration::from_secs(20), feed.outbox.notified())
            .await
            .expect("the outbox too");
        client
            .execute(NOTIFY_SQL, &[&"own_other:timers"])
            .await
            .expect("notify");
        tokio::time::timeout(Duration::from_secs(20), feed.timers.notified())
            .await
            .expect("woken after the reconnect");
        drop(listener);
        drop(client);
        drop(pool);
        db.drop_db().await;
    }

    async fn insert_events(store: &PgStore, n: i64) {
        let client = store.client().await.expect("client");
        for i in 0..n {
            client
                .execute(
                    "INSERT INTO outbox (event_id, tenant, event_type, payload, created_at_ms, next_attempt_ms, call_id) \
                     VALUES ($1, $2, 'call.cdr', $3, 1, $4, $5)",
                    &[&format!("msg_{i}"), &if i == 0 { "skipme" } else { "acme" }, &format!("{{\"n\":{i}}}").into_bytes(), &(100 + i), &format!("call_{i}")],
                )
                .await
                .expect("insert");
        }
        client
            .execute(
                "INSERT INTO tenant_counters (tenant, pending) VALUES ('acme', $1)",
                &[&(n - 1)],
            )
            .await
            .expect("counter");
    }

    #[tokio::test]
    async fn deliveries_are_claimed_once_across_instances_and_settled_only_by_their_holder() {
        use crate::store::DeliveryUpdate;
        let Some(db) = TestDb::create("claims").await else {
            return;
        };
        let (a, b) = two_instances(&db).await;
        insert_events(&a, 6).await;
        let skip = vec!["skipme".to_owned()];
        // Not due yet: nothing.
        assert!(a
            .claim_deliveries("own_a".into(), 50, 60_000, 10, skip.clone())
            .await
            .expect("claim")
            .is_empty());
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let (ca, cb) = tokio::join!(
                a.claim_deliveries("own_a".into(), 1_000, 60_000, 2, skip.clone()),
                b.claim_deliveries("own_b".into(), 1_000, 60_000, 2, skip.clone())
            );
            let (ca, cb) = (ca.expect("a"), cb.expect("b"));
            if ca.is_empty() && cb.is_empty() {
                break;
            }
            for d in ca.iter().chain(&cb) {
                // The claim carries the event's call, for the delivery's log lines.
                assert_eq!(
                    d.call_id.as_deref(),
                    Some(d.event_id.replace("msg_", "call_").as_str())
                );
                assert!(
                    seen.insert(d.event_id.clone()),
                    "{} claimed twice",
                    d.event_id
                );
                assert_eq!(d.tenant, "acme");
            }
            for w in ca.windows(2).chain(cb.windows(2)) {
                assert!(w[0].id < w[1].id, "oldest first");
            }
        }
        assert_eq!(
            seen.len(),
            5,
            "every due event of the other tenants, once: {seen:?}"
        );
        // The owner's outcomes count; another owner's are ignored.
        let client = a.client().await.expect("client");
        let id_of = |event: &str| {
            let client = &client;
            let event = event.to_owned();
            async move {
                let row = client
                    .query_one(
                        "SELECT id, lease_owner FROM outbox WHERE event_id = $1",
                        &[&event],
                    )
                    .await
                    .expect("row");
                (row.get::<_, i64>(0), row.get::<_, String>(1))
            }
        };
        let (id1, holder1) = id_of("msg_1").await;
        let (other, wrong) = if holder1 == "own_a" {
            (&b, "own_b")
        } else {
            (&a, "own_a")
        };
        other
            .finish_deliveries(
                wrong.into(),
                vec![DeliveryUpdate::Delivered { id: id1, at_ms: 5 }],
            )
            .await
            .expect("ignored");
        let holder_store = if holder1 == "own_a" { &a } else { &b };
        holder_store
            .finish_deliveries(
                holder1.clone(),
                vec![DeliveryUpdate::Delivered { id: id1, at_ms: 5 }],
            )
            .await
            .expect("delivered");
        let (id2, holder2) = id_of("msg_2").await;
        let store2 = if holder2 == "own_a" { &a } else { &b };
        store2
            .finish_deliveries(
                holder2,
                vec![DeliveryUpdate::Retry {
                    id: id2,
                    next_ms: 2_000,
                    error: "503".into(),
                }],
            )
            .await
            .expect("retry");
        let rows = client
            .query("SELECT event_id, status, attempts, lease_owner, last_error FROM outbox ORDER BY id", &[])
            .await
            .expect("rows");
        let row = |i: usize| {
            (
                rows[i].get::<_, String>(0),
                rows[i].get::<_, i16>(1),
                rows[i].get::<_, i32>(2),
                rows[i].get::<_, Option<String>>(3),
                rows[i].get::<_, Option<String>>(4),
            )
        };
        assert_eq!(row(1), ("msg_1".into(), 1, 1, None, None));
        assert_eq!(row(2), ("msg_2".into(), 0, 1, None, Some("503".into())));
        let pending: i64 = client
            .query_one(
                "SELECT pending FROM tenant_counters WHERE tenant = 'acme'",
                &[],
            )
            .await
            .expect("c")
            .get(0);
        assert_eq!(pending, 4);
        // The retried one is due again at its time, for whoever claims.
        let again = b
            .claim_deliveries("own_b".into(), 2_000, 60_000, 10, skip)
            .await
            .expect("claim");
        assert_eq!(
            again
                .iter()
                .map(|d| d.event_id.as_str())
                .collect::<Vec<_>>(),
            vec!["msg_2"]
        );
        assert_eq!(again[0].attempts, 1);
        drop(client);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn a_dead_instances_claims_are_freed_when_its_heartbeat_lapses() {
        let Some(db) = TestDb::create("dead_claims").await else {
            return;
        };
        let (a, b) = two_instances(&db).await;
        insert_events(&a, 4).await;
        let claimed = a
            .claim_deliveries("own_a".into(), 1_000, 600_000, 10, vec![])
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 4);
        // Live: nothing to recover, and its claims stay its own for the whole lease.
        assert_eq!(b.recover_dead_owners().await, Ok(vec![]));
        assert!(b
            .claim_deliveries("own_b".into(), 1_000, 600_000, 10, vec![])
            .await
            .expect("claim")
            .is_empty());
        a.client()
            .await
            .expect("client")
            .execute("UPDATE instances SET heartbeat_at = now() - interval '11 seconds' WHERE owner_id = 'own_a'", &[])
            .await
            .expect("age");
        assert_eq!(b.recover_dead_owners().await, Ok(vec!["own_a".to_owned()]));
        let taken = b
            .claim_deliveries("own_b".into(), 1_000, 600_000, 10, vec![])
            .await
            .expect("claim");
        assert_eq!(taken.len(), 4, "taken over at once, not after the lease");
        assert_eq!(b.recover_dead_owners().await, Ok(vec![]));
        db.drop_db().await;
    }

    #[tokio::test]
    async fn timers_are_claimed_once_and_a_reset_timer_survives_its_old_run() {
        let Some(db) = TestDb::create("timers").await else {
            return;
        };
        let (a, b) = two_instances(&db).await;
        let client = a.client().await.expect("client");
        for (key, due) in [("t1", 10i64), ("t2", 20), ("t3", 30), ("later", 5_000)] {
            client
                .execute(
                    "INSERT INTO timers (key, kind, tenant, due_ms, payload) VALUES ($1, 'call_expiry', 'acme', $2, $3)",
                    &[&key, &due, &serde_json::json!({"key": key})],
                )
                .await
                .expect("timer");
        }
        let (ta, tb) = tokio::join!(
            a.claim_timers("own_a".into(), 1_000, 60_000, 10),
            b.claim_timers("own_b".into(), 1_000, 60_000, 10)
        );
        let (ta, tb) = (ta.expect("a"), tb.expect("b"));
        let mut keys: Vec<&str> = ta.iter().chain(&tb).map(|t| t.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, vec!["t1", "t2", "t3"], "each due timer once");
        let (winner, owner) = if ta.iter().any(|t| t.key == "t1") {
            (&a, "own_a")
        } else {
            (&b, "own_b")
        };
        let t1 = ta.iter().chain(&tb).find(|t| t.key == "t1").expect("t1");
        assert_eq!(t1.payload, serde_json::json!({"key": "t1"}));
        // t2 is set again while it runs (which clears its lease): finishing keeps it.
        client
            .execute("UPDATE timers SET due_ms = 3000, lease_owner = NULL, lease_until_ms = 0 WHERE key = 't2'", &[])
            .await
            .expect("reset");
        let t2_owner = if ta.iter().any(|t| t.key == "t2") {
            "own_a"
        } else {
            "own_b"
        };
        a.finish_timer("t2".into(), t2_owner.into())
            .await
            .expect("finish t2");
        winner
            .finish_timer("t1".into(), "someone_else".into())
            .await
            .expect("not theirs");
        winner
            .finish_timer("t1".into(), owner.into())
            .await
            .expect("finish t1");
        let t3_owner = if ta.iter().any(|t| t.key == "t3") {
            "own_a"
        } else {
            "own_b"
        };
        a.release_timer("t3".into(), t3_owner.into())
            .await
            .expect("release t3");
        let left: Vec<String> = client
            .query("SELECT key FROM timers ORDER BY key", &[])
            .await
            .expect("rows")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, vec!["later", "t2", "t3"]);
        let again = b
            .claim_timers("own_b".into(), 3_000, 60_000, 10)
            .await
            .expect("claim");
        let keys: Vec<&str> = again.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["t3", "t2"],
            "released and reset timers, oldest first"
        );
        drop(client);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn queue_summary_event_pages_and_retry_now() {
        use crate::store::{EventQuery, EventStatus, QueueSummary};
        let Some(db) = TestDb::create("admin_views").await else {
            return;
        };
        let (a, _b) = two_instances(&db).await;
        let client = a.client().await.expect("client");
        // (event, tenant, type, status, created, next attempt, lease until, last error)
        for (event, tenant, kind, status, created, next, lease, error) in [
            (
                "p1",
                "acme",
                "call.cdr",
                0i16,
                100i64,
                5_000i64,
                0i64,
                Some("HTTP 503 Service Unavailable"),
            ),
            (
                "p2",
                "acme",
                "call.hangup",
                0,
                200,
                9_000,
                0,
                Some("connection refused"),
            ),
            ("p3", "acme", "call.cdr", 0, 300, 9_000, i64::MAX, None),
            (
                "d1",
                "acme",
                "call.cdr",
                2,
                50,
                1,
                0,
                Some("HTTP 500 Internal Server Error"),
            ),
            ("q1", "beta", "call.cdr", 0, 400, 7_000, 0, None),
        ] {
            client
                .execute(
                    "INSERT INTO outbox (event_id, tenant, event_type, payload, created_at_ms, \
                     next_attempt_ms, status, attempts, last_error, lease_until_ms, call_id) \
                     VALUES ($1, $2, $3, '\\x7b7d', $4, $5, $6, 1, $7, $8, 'call_x')",
                    &[
                        &event, &tenant, &kind, &created, &next, &status, &error, &lease,
                    ],
                )
                .await
                .expect("insert");
        }
        let summary = a.queue_summary().await.expect("summary");
        assert_eq!(
            summary,
            vec![
                QueueSummary {
                    tenant: "acme".into(),
                    pending: 3,
                    dead: 1,
                    oldest_pending_ms: Some(100),
                    next_attempt_ms: Some(5_000),
                    // The newest stored event with an error (d1, stored after p1 and p2).
                    last_error: Some("HTTP 500 Internal Server Error".into()),
                },
                QueueSummary {
                    tenant: "beta".into(),
                    pending: 1,
                    dead: 0,
                    oldest_pending_ms: Some(400),
                    next_attempt_ms: Some(7_000),
                    last_error: None,
                },
            ]
        );
        let page = |status, tenant: Option<&str>, kind: Option<&str>, after, limit| EventQuery {
            status,
            tenant: tenant.map(str::to_owned),
            event_type: kind.map(str::to_owned),
            event_id: None,
            after_id: after,
            limit,
        };
        let first = a
            .list_events(page(EventStatus::Pending, Some("acme"), None, None, 2))
            .await
            .expect("page");
        let ids: Vec<&str> = first.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["p1", "p2"]);
        assert_eq!(first[0].call_id.as_deref(), Some("call_x"));
        assert_eq!(first[0].status, EventStatus::Pending);
        let rest = a
            .list_events(page(
                EventStatus::Pending,
                Some("acme"),
                None,
                Some(first[1].id),
                2,
            ))
            .await
            .expect("page");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].event_id, "p3");
        let hangups = a
            .list_events(page(
                EventStatus::Pending,
                None,
                Some("call.hangup"),
                None,
                10,
            ))
            .await
            .expect("page");
        assert_eq!(hangups.len(), 1);
        let dead = a
            .list_events(page(EventStatus::Dead, None, None, None, 10))
            .await
            .expect("page");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].event_id, "d1");
        // Retry now: acme's waiting, unclaimed events (p1, p2; p3 is claimed), not beta's.
        assert_eq!(
            a.retry_now(vec!["acme".into()], 1_000)
                .await
                .expect("retry"),
            2
        );
        let summary = a.queue_summary().await.expect("summary");
        assert_eq!(summary[0].next_attempt_ms, Some(1_000));
        assert_eq!(summary[1].next_attempt_ms, Some(7_000));
        // Every tenant when none is named.
        assert_eq!(a.retry_now(vec![], 1_000).await.expect("retry"), 1);
        drop(client);
        drop(a);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn dead_letters_replay_endpoints_and_purge() {
        use crate::store::{OutboxDepth, ReplayFilter};
        let Some(db) = TestDb::create("replay").await else {
            return;
        };
        let (a, _b) = two_instances(&db).await;
        let client = a.client().await.expect("client");
        // (event, tenant, status, done_at_ms)
        for (event, tenant, status, done) in [
            ("e1", "acme", 0i16, None),
            ("e2", "acme", 2, None),
            ("e3", "acme", 1, Some(100i64)),
            ("e4", "beta", 2, None),
            ("e5", "beta", 1, Some(9_000)),
        ] {
            client
                .execute(
                    "INSERT INTO outbox (event_id, tenant, event_type, payload, created_at_ms, \
                     next_attempt_ms, status, attempts, last_error, done_at_ms) \
                     VALUES ($1, $2, 'call.cdr', '\\x7b7d', 1, 1, $3, 3, 'HTTP 500', $4)",
                    &[&event, &tenant, &status, &done],
                )
                .await
                .expect("insert");
        }
        let depth = a.outbox_depth().await.expect("depth");
        let d = |tenant: &str, pending, dead| OutboxDepth {
            tenant: tenant.into(),
            pending,
            dead,
        };
        assert_eq!(depth, vec![d("acme", 1, 1), d("beta", 0, 1)]);
        let dead = a.dead_letters(Some("acme".into()), 10).await.expect("dead");
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (
                dead[0].event_id.as_str(),
                dead[0].attempts,
                dead[0].last_error.as_deref()
            ),
            ("e2", 3, Some("HTTP 500"))
        );
        assert_eq!(a.dead_letters(None, 10).await.expect("all").len(), 2);
        let replayed = a
            .replay(
                ReplayFilter {
                    tenant: Some("beta".into()),
                    event_id: None,
                    include_delivered: true,
                },
                5_000,
            )
            .await
            .expect("replay");
        assert_eq!(replayed, 2);
        assert_eq!(
            a.outbox_depth().await.expect("depth"),
            vec![d("acme", 1, 1), d("beta", 2, 0)]
        );
        let replayed = a
            .replay(
                ReplayFilter {
                    tenant: None,
                    event_id: Some("e2".into()),
                    include_delivered: false,
                },
                5_000,
            )
            .await
            .expect("replay one");
        assert_eq!(replayed, 1);
        let pending: i64 = client
            .query_one(
                "SELECT pending FROM tenant_counters WHERE tenant = 'beta'",
                &[],
            )
            .await
            .expect("c")
            .get(0);
        assert_eq!(pending, 2);
        let claimed = a
            .claim_deliveries("own_a".into(), 5_000, 60_000, 10, vec![])
            .await
            .expect("claim");
        let mut ids: Vec<&str> = claimed.iter().map(|c| c.event_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, vec!["e1", "e2", "e4", "e5"]);
        assert!(claimed
            .iter()
            .all(|c| c.attempts == 0 || c.event_id == "e1"));
        // Endpoints.
        a.set_endpoint_disabled("acme".into(), Some((7, "410 Gone".into())))
            .await
            .expect("disable");
        a.set_endpoint_disabled("acme".into(), Some((8, "404".into())))
            .await
            .expect("again");
        assert_eq!(
            a.disabled_endpoints().await.expect("list"),
            vec![("acme".to_owned(), "404".to_owned())]
        );
        a.set_endpoint_disabled("acme".into(), None)
            .await
            .expect("enable");
        assert!(a.disabled_endpoints().await.expect("list").is_empty());
        // Purge: delivered e3 (done at 100) is past a retention of 1000 at 2000; e5 was replayed.
        client
            .execute("INSERT INTO dedup (tenant, key_hash, expires_at_ms, status, content_type, body) VALUES ('acme', '\\x01', 1500, 200, 'text/xml', '\\x00')", &[])
            .await
            .expect("dedup");
        let purged = a.purge(2_000, 1_000, 1_000).await.expect("purge");
        assert_eq!(purged, 2, "the delivered event and the expired answer");
        let left: i64 = client
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .expect("n")
            .get(0);
        assert_eq!(left, 4);
        drop(client);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn calls_and_aliases_read_back_as_written() {
        use crate::store::CallKey;
        let Some(db) = TestDb::create("reads").await else {
            return;
        };
        let (a, _b) = two_instances(&db).await;
        a.ping().await.expect("ping");
        let client = a.client().await.expect("client");
        // Key order and number spelling survive (json, not jsonb).
        let attached = r#"{"zeta": 1, "alpha": 1.50, "mid": "x"}"#;
        for (vendor_call_id, call_id, state, updated) in [
            ("v1", "call_1", Some(r#"{"step": 2}"#), 20i64),
            ("v2", "call_2", Some(r#"{"step": 1}"#), 10),
            ("v3", "call_3", None, 5),
        ] {
            client
                .execute(
                    "INSERT INTO calls (tenant, vendor, vendor_call_id, call_id, version, next_seq, \
                     status, attached, state, expires_at_ms, updated_at_ms) \
                     VALUES ('acme', 'ptk', $1, $2, 3, 7, 'active', $3::text::json, $4::text::json, 99, $5)",
                    &[&vendor_call_id, &call_id, &attached, &state, &updated],
                )
                .await
                .expect("call");
        }
        let key = CallKey {
            tenant: "acme".into(),
            vendor: "ptk".into(),
            vendor_call_id: "v1".into(),
        };
        let row = a.load_call(key.clone()).await.expect("load").expect("row");
        assert_eq!(
            (
                row.call_id.as_str(),
                row.version,
                row.next_seq,
                row.expires_at_ms
            ),
            ("call_1", 3, 7, Some(99))
        );
        assert_eq!(
            serde_json::to_string(&row.attached).expect("json"),
            r#"{"zeta":1,"alpha":1.50,"mid":"x"}"#
        );
        assert_eq!(row.state, Some(serde_json::json!({"step": 2})));
        let (found, _) = a
            .load_call_by_id("call_1".into())
            .await
            .expect("by id")
            .expect("row");
        assert_eq!(found, key);
        assert!(a
            .load_call_by_id("call_9".into())
            .await
            .expect("none")
            .is_none());
        let live = a
            .list_live("acme".into(), "ptk".into(), 10)
            .await
            .expect("live");
        let ids: Vec<&str> = live
            .iter()
            .map(|(k, _)| k.vendor_call_id.as_str())
            .collect();
        assert_eq!(
            ids,
            vec!["v2", "v1"],
            "live only, least recently changed first"
        );
        client
            .execute(
                "INSERT INTO aliases VALUES ('acme', 'transit', '0730', 'ptk', 'v1', 500), \
                 ('acme', 'agent', '42', 'ptk', 'v2', NULL)",
                &[],
            )
            .await
            .expect("aliases");
        let find = |ns: &str, value: &str, now: i64| {
            a.find_alias("acme".into(), ns.into(), value.into(), now)
        };
        assert_eq!(
            find("transit", "0730", 499).await.expect("f"),
            Some(("ptk".into(), "v1".into()))
        );
        assert_eq!(
            find("transit", "0730", 500).await.expect("f"),
            None,
            "lapsed"
        );
        assert_eq!(
            find("agent", "42", i64::MAX).await.expect("f"),
            Some(("ptk".into(), "v2".into()))
        );
        client
            .execute(
                "INSERT INTO outbox (event_id, tenant, call_id, seq, event_type, payload, created_at_ms, next_attempt_ms, status) \
                 VALUES ('m2', 'acme', 'call_1', 2, 'call.ended', '\\x7b7d', 1, 1, 0), ('m1', 'acme', 'call_1', 1, 'call.started', '\\x7b7d', 1, 1, 1)",
                &[],
            )
            .await
            .expect("events");
        assert_eq!(
            a.call_events("call_1".into()).await.expect("events"),
            vec![
                (1, "call.started".to_owned(), 1),
                (2, "call.ended".to_owned(), 0)
            ]
        );
        drop(client);
        db.drop_db().await;
    }

    #[test]
    fn every_migration_file_is_listed_with_its_marker() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATION_FILES
            .iter()
            .map(|(v, name, _)| format!("{v:04}_{name}.sql"))
            .collect();
        assert_eq!(files, listed);
        for (i, (version, name, sql)) in MIGRATION_FILES.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1, "{name}: versions go up by one");
            let marker = schema::declared_compatible_from(sql);
            assert!(
                matches!(marker, Some(m) if m >= 1 && m <= *version),
                "{name}: first line must be `-- compatible_from: N` with 1 <= N <= {version}"
            );
        }
    }
}
