//! The change feed across instances: commits announce themselves with `NOTIFY`, and
//! [`ChangeListener`] turns `LISTEN` on a connection of its own into [`crate::store::ChangeFeed`]
//! wake-ups (with catch-up after a reconnect).

use std::sync::Arc;
use std::time::Duration;

use super::{describe, tls, PgSettings};

/// The `NOTIFY` channel commits announce themselves on. The payload is
/// `{owner_id}:{what}`, `what` being `outbox`, `timers` or anything else (some row changed).
pub const CHANGES_CHANNEL: &str = "ivrgate_changes";

/// The SQL a commit runs (inside its transaction, so the notice goes out only if it commits)
/// to wake other instances: `$1` is `{owner_id}:{what}`.
pub const NOTIFY_SQL: &str = "SELECT pg_notify('ivrgate_changes', $1)";

/// Feeds a [`crate::store::ChangeFeed`] from `LISTEN/NOTIFY` on a connection of its own. A notice
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
        feed: Arc<crate::store::ChangeFeed>,
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
    feed: &crate::store::ChangeFeed,
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
