//! What a running connector shares with the callback service of the same process: the
//! session id StartSession named, the last heartbeat, and the queues of route requests and
//! snapshot completions the connector works off. Keyed by tenant and lease epoch, so a
//! callback naming another epoch never reaches this session (and two gateways in one test
//! process do not meet).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};

/// A RouteRequest committed by the callback service, for the connector to decide.
#[derive(Debug, Clone)]
pub struct RouteJob {
    /// The call entity's id (`{CallId}:{CallSequenceId}`).
    pub entity: String,
    pub call_id: i64,
    /// RouteTimeout in seconds.
    pub route_timeout_s: i64,
    pub fields: Map<String, Value>,
    /// When ivrgate received it.
    pub received: std::time::Instant,
}

/// Something the connector must act on.
#[derive(Debug, Clone)]
pub enum Notice {
    Route(RouteJob),
    /// A snapshot of this entity type completed (SnapShotTypeComplete) for this RequestId.
    SnapshotDone {
        request_id: i64,
        entity_type: String,
    },
}

/// The live side of one session.
pub struct Live {
    pub tenant: String,
    pub epoch: u64,
    session_id: Mutex<Option<String>>,
    /// Unix ms of the last Heartbeat (0: none yet).
    last_heartbeat_ms: AtomicI64,
    last_beat: Mutex<std::time::Instant>,
    pub heartbeat: Notify,
    /// StartSession arrived.
    pub started: Notify,
    notices: mpsc::UnboundedSender<Notice>,
    /// RouteSelect RequestId → decision id, set before the RouteSelect goes out, so a
    /// RouteUsed that overtakes the stored outcome still names its decision.
    routes: Mutex<HashMap<i64, String>>,
}

impl Live {
    pub fn session_id(&self) -> Option<String> {
        self.session_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_session_id(&self, id: Option<String>) {
        *self.session_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    pub fn last_heartbeat_ms(&self) -> i64 {
        self.last_heartbeat_ms.load(Ordering::SeqCst)
    }

    /// When the last heartbeat (or the session's start) was seen, on the monotonic clock.
    pub fn last_beat(&self) -> std::time::Instant {
        *self.last_beat.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn beat(&self, now_ms: i64) {
        self.last_heartbeat_ms.store(now_ms, Ordering::SeqCst);
        *self.last_beat.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        self.heartbeat.notify_waiters();
    }

    pub fn remember_route(&self, request_id: i64, decision_id: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.len() > 10_000 {
            routes.clear();
        }
        routes.insert(request_id, decision_id.to_owned());
    }

    pub fn route_decision(&self, request_id: i64) -> Option<String> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&request_id)
            .cloned()
    }

    pub fn notify(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }
}

type Registry = Mutex<HashMap<(String, u64), Arc<Live>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Registers a session's live side; dropped from the registry with the returned guard.
pub fn register(tenant: &str, epoch: u64) -> (Arc<Live>, mpsc::UnboundedReceiver<Notice>, Guard) {
    let (tx, rx) = mpsc::unbounded_channel();
    let live = Arc::new(Live {
        tenant: tenant.to_owned(),
        epoch,
        session_id: Mutex::new(None),
        last_heartbeat_ms: AtomicI64::new(0),
        last_beat: Mutex::new(std::time::Instant::now()),
        heartbeat: Notify::new(),
        started: Notify::new(),
        notices: tx,
        routes: Mutex::new(HashMap::new()),
    });
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((tenant.to_owned(), epoch), live.clone());
    (
        live,
        rx,
        Guard {
            key: (tenant.to_owned(), epoch),
        },
    )
}

/// The live side of `(tenant, epoch)` in this process.
pub fn get(tenant: &str, epoch: u64) -> Option<Arc<Live>> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(tenant.to_owned(), epoch))
        .cloned()
}

/// Removes the registration when dropped.
pub struct Guard {
    key: (String, u64),
}

impl Drop for Guard {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}
