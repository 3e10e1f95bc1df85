//! `ivrgate serve` under systemd: the notify protocol (`READY`, `RELOADING` with
//! `MONOTONIC_USEC`, `STOPPING`, `STATUS`), a watchdog fed only while the store's writer and
//! the delivery and timer loops turn, and the control socket through which
//! `ivrgate reload --pid PID` (the unit's `ExecReload`) asks the running daemon to reload and
//! hears its verdict. Without `NOTIFY_SOCKET` every notification is a no-op.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::core::Core;
use crate::liveness::{stuck, Beat};

/// Sends `states` to systemd when it listens (`NOTIFY_SOCKET`); a failure is logged at DEBUG
/// only, since nothing else can be done about it.
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// `STATUS=` (shown by `systemctl status`): one line, at most 200 characters.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(&status_line(text))]);
}

/// `text` as a `STATUS=` value: one line, at most 200 characters.
pub fn status_line(text: &str) -> String {
    text.replace('\n', "; ").chars().take(200).collect()
}

/// The watchdog interval systemd asks for, read as libsystemd's `sd_watchdog_enabled` reads
/// it: `WATCHDOG_USEC`, meant for this process unless `WATCHDOG_PID` names another one.
pub fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = match std::env::var("WATCHDOG_PID") {
        Ok(pid) => pid.parse::<u32>().ok() == Some(std::process::id()),
        Err(_) => true,
    };
    (for_us && usec > 0).then_some(usec)
}

/// How long a loop may go without a turn before the watchdog stops being fed: half the
/// watchdog interval, and never less than 2 s (a healthy loop turns at least every second,
/// plus the store call it may be waiting on).
pub fn stuck_after(watchdog: Duration) -> Duration {
    (watchdog / 2).max(Duration::from_secs(2))
}

/// Pings the watchdog every half interval while every loop turned within [`stuck_after`];
/// stops (and says which loop, in the log and `STATUS=`) when one did not, so systemd
/// restarts a process that still answers HTTP but no longer delivers. Once `draining` turns
/// true the loops end by design, and the drain is bounded by its own timeouts and systemd's
/// `TimeoutStopSec`: pings go on until the process exits.
pub fn spawn_watchdog(core: Arc<Core>, usec: u64, draining: watch::Receiver<bool>) {
    let interval = Duration::from_micros(usec);
    let every = interval / 2;
    let limit = stuck_after(interval);
    tokio::spawn(async move {
        let mut was_stuck = false;
        loop {
            tokio::time::sleep(every).await;
            let writer = core.store.writer_beat();
            let mut beats: Vec<(&str, &Beat)> = vec![
                ("delivery loop", &core.liveness.delivery),
                ("timer loop", &core.liveness.timers),
            ];
            beats.extend(writer.map(|b| ("store writer", b)));
            let stuck = if *draining.borrow() {
                None
            } else {
                stuck(beats, limit)
            };
            match stuck {
                None => {
                    if was_stuck {
                        tracing::info!("watchdog: every loop turns again; feeding the watchdog");
                        status(&ready_status(&core));
                        was_stuck = false;
                    }
                    notify(&[NotifyState::Watchdog]);
                }
                Some((name, age)) => {
                    if !was_stuck {
                        tracing::error!(
                            r#loop = name,
                            stuck_ms = age.as_millis() as u64,
                            limit_ms = limit.as_millis() as u64,
                            "watchdog: a loop has not turned within the limit; no longer feeding the watchdog (systemd restarts the service)"
                        );
                        was_stuck = true;
                    }
                    status(&format!(
                        "{name} has not turned for {:.1} s: watchdog not fed",
                        age.as_secs_f64()
                    ));
                }
            }
        }
    });
}

/// `STATUS=` while serving: the address and how many tenants.
pub fn ready_status(core: &Core) -> String {
    let runtime = core.runtime.load();
    format!(
        "serving on {} for {} tenant(s)",
        runtime.config.raw.listen,
        runtime.config.tenants.len()
    )
}

/// The verdict of one reload: the warnings of an applied configuration, or why it was
/// refused (one reason per line).
pub type Verdict = Result<Vec<String>, String>;

/// The running daemon's reload, shared by SIGHUP and the control socket.
pub type Reloader = Arc<dyn Fn() -> Verdict + Send + Sync>;

/// The control socket's name for process `pid`, in the abstract namespace (no file to
/// create or clean up; it goes away with the process).
fn control_address(pid: u32) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("ivrgate/{pid}/control"))
}

/// The effective user of this process (the owner of `/proc/self`).
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Serves the control socket of this process: a client of the same user (or root) sends
/// `reload`, the daemon reloads (as SIGHUP does) and answers `ok` and its warnings, or
/// `refused` and every reason. Other users are turned away; one line of at most 64 bytes,
/// read within 5 s, is all a client may send.
pub fn spawn_control(reload: Reloader) -> std::io::Result<()> {
    let listener =
        std::os::unix::net::UnixListener::bind_addr(&control_address(std::process::id())?)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let me = own_uid();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let peer = stream.peer_cred().ok().map(|c| c.uid());
            if peer.is_none() || (peer != Some(0) && peer != me) {
                tracing::warn!(uid = ?peer, "control socket: a client of another user was turned away");
                continue;
            }
            let reload = reload.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read).take(64);
                let asked =
                    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
                let answer = match (asked, line.trim()) {
                    (Ok(Ok(_)), "reload") => {
                        tracing::info!("reload asked through the control socket");
                        match tokio::task::spawn_blocking(move || reload()).await {
                            Ok(Ok(warnings)) => {
                                let mut text = "ok\n".to_owned();
                                for w in warnings {
                                    text.push_str(&format!("warning: {w}\n"));
                                }
                                text
                            }
                            Ok(Err(reasons)) => format!("refused\n{reasons}\n"),
                            Err(e) => format!("error\nthe reload failed: {e}\n"),
                        }
                    }
                    (Ok(Ok(_)), other) => format!("error\nunknown request {other:?}\n"),
                    _ => "error\nno request within 5 s\n".to_owned(),
                };
                let _ = write.write_all(answer.as_bytes()).await;
                let _ = write.shutdown().await;
            });
        }
    });
    Ok(())
}

/// `ivrgate reload --pid PID`: asks process `pid` to reload and waits (up to `timeout`) for
/// its verdict: `Ok(warnings)` when applied, `Err(why)` when refused or unreachable.
pub fn request_reload(pid: u32, timeout: Duration) -> Result<Vec<String>, String> {
    let address = control_address(pid).map_err(|e| format!("bad control address: {e}"))?;
    let mut stream = std::os::unix::net::UnixStream::connect_addr(&address).map_err(|e| {
        format!(
            "no ivrgate serve process {pid} answers on its control socket ({e}); is it running?"
        )
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| stream.write_all(b"reload\n"))
        .map_err(|e| format!("cannot ask process {pid}: {e}"))?;
    let mut answer = String::new();
    stream
        .take(1 << 20)
        .read_to_string(&mut answer)
        .map_err(|e| format!("no verdict from process {pid} within {timeout:?}: {e}"))?;
    let (verdict, rest) = answer.split_once('\n').unwrap_or((answer.as_str(), ""));
    let lines = rest.lines().map(str::to_owned);
    match verdict {
        "ok" => Ok(lines
            .map(|l| l.strip_prefix("warning: ").unwrap_or(&l).to_owned())
            .collect()),
        "refused" => Err(format!(
            "reload refused; the running configuration stays:\n{}",
            rest.trim_end()
        )),
        "" => Err(format!(
            "process {pid} closed the control socket without a verdict"
        )),
        _ => Err(rest.trim_end().to_owned()),
    }
}
