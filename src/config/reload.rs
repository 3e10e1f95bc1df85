//! Which settings a reload (SIGHUP) can apply and which need a restart.

use super::{Config, DeliveryConfig, LoggingConfig, ServerConfig, StorageConfig, TlsConfig};

impl Config {
    /// What keeps this configuration, read again on SIGHUP, from replacing `running` (the
    /// running gateway's, whose `listen` is the address actually bound): every setting a
    /// reload cannot apply, one line each, naming the setting. Empty: the reload may go on
    /// (to [`Config::validate_on`] with the bound address).
    ///
    /// Every field is named here, so a new setting does not compile until it is decided:
    /// `_` means a reload applies it (the running code reads it from the current
    /// configuration each time), a comparison means only a restart applies it.
    /// `docs/operations.md` lists both kinds.
    pub fn reload_refusals(&self, running: &Config) -> Vec<String> {
        let Config {
            listen,
            state_dir,
            server,
            logging,
            storage,
            delivery,
            admin: _,      // read per admin request
            connectors: _, // read per lease acquisition, renewal and restart
            tenants: _,    // resolved again; rate limiters and delivery slots are rebuilt
        } = self;
        let ServerConfig {
            max_body_bytes: _,             // per request
            max_bodies_in_flight_bytes: _, // per request
            max_nesting_depth: _,          // per request
            header_read_timeout_ms: _,     // per new connection
            body_read_timeout_ms: _,       // per request
            shutdown_grace_ms: _,          // read when the drain starts
            trusted_proxies: _,            // per request
            advertise_url: _,              // connectors restart with the new one
            tls,                           // files and settings per new connection; on/off: restart
        } = server;
        let LoggingConfig {
            format,
            level: _,              // the log filter is swapped (unless RUST_LOG is set)
            mask_phone_numbers: _, // per request
        } = logging;
        let StorageConfig {
            backend,
            url,
            pool_size,
            connect_timeout_ms,
            statement_timeout_ms,
            tls_ca_file,
            call_ttl_s: _,            // per write
            dedup_window_s: _,        // per event
            call_retention_s: _,      // per purge
            delivered_retention_s: _, // per purge
            min_free_bytes: _,        // per free-space check
            group_commit_max,
            heartbeat_ms,
            instance_lapse_ms,
        } = storage;
        let DeliveryConfig {
            workers,
            per_endpoint_concurrency: _, // delivery slots are rebuilt
            timeout_ms: _,               // per attempt
            retry_schedule_s: _,         // per outcome
            jitter_percent: _,           // per outcome
            lease_ms: _,                 // per claim
            breaker_failures,
            breaker_open_ms,
            max_retry_after_s: _, // per outcome
        } = delivery;
        let mut refusals = Vec::new();
        let mut restart = |name: &str, old: String, new: String| {
            if old != new {
                refusals.push(format!(
                    "{name} changed from {old} to {new}: only a restart applies it"
                ));
            }
        };
        // A file asking for any port (`:0`) is satisfied by the port bound.
        let same_listener =
            *listen == running.listen || (listen.port() == 0 && listen.ip() == running.listen.ip());
        if !same_listener {
            restart(
                "listen",
                format!("{} (bound)", running.listen),
                listen.to_string(),
            );
        }
        // A listener is TLS or plain: its clients are set up for one of them.
        let scheme = |tls: &Option<TlsConfig>| if tls.is_some() { "TLS" } else { "plain HTTP" };
        restart(
            "server.tls",
            scheme(&running.server.tls).to_owned(),
            scheme(tls).to_owned(),
        );
        restart(
            "state_dir",
            running.state_dir.display().to_string(),
            state_dir.display().to_string(),
        );
        restart(
            "logging.format",
            format!("{:?}", running.logging.format).to_lowercase(),
            format!("{format:?}").to_lowercase(),
        );
        restart(
            "storage.backend",
            format!("{:?}", running.storage.backend).to_lowercase(),
            format!("{backend:?}").to_lowercase(),
        );
        // The URL is a secret: compared by its source, never printed.
        restart(
            "storage.url",
            "the running value".to_owned(),
            if url.as_ref().map(|u| &u.source) == running.storage.url.as_ref().map(|u| &u.source) {
                "the running value".to_owned()
            } else {
                "another value".to_owned()
            },
        );
        restart(
            "storage.tls_ca_file",
            format!("{:?}", running.storage.tls_ca_file),
            format!("{tls_ca_file:?}"),
        );
        // The numbers, each shown as written.
        let (old_storage, old_delivery) = (&running.storage, &running.delivery);
        for (name, old, new) in [
            (
                "storage.pool_size",
                old_storage.pool_size as u64,
                *pool_size as u64,
            ),
            (
                "storage.connect_timeout_ms",
                old_storage.connect_timeout_ms,
                *connect_timeout_ms,
            ),
            (
                "storage.statement_timeout_ms",
                old_storage.statement_timeout_ms,
                *statement_timeout_ms,
            ),
            (
                "storage.group_commit_max",
                old_storage.group_commit_max as u64,
                *group_commit_max as u64,
            ),
            (
                "storage.heartbeat_ms",
                old_storage.heartbeat_ms,
                *heartbeat_ms,
            ),
            (
                "storage.instance_lapse_ms",
                old_storage.instance_lapse_ms,
                *instance_lapse_ms,
            ),
            (
                "delivery.workers",
                old_delivery.workers as u64,
                *workers as u64,
            ),
            (
                "delivery.breaker_failures",
                u64::from(old_delivery.breaker_failures),
                u64::from(*breaker_failures),
            ),
            (
                "delivery.breaker_open_ms",
                old_delivery.breaker_open_ms,
                *breaker_open_ms,
            ),
        ] {
            restart(name, old.to_string(), new.to_string());
        }
        refusals
    }
}
