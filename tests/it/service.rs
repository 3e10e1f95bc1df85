//! Running the built binary as a service: its command line (`--help`, `--version`), and the
//! systemd notify protocol, watchdog and `ivrgate reload` tested with `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC` set by the test (there is no systemd to run it under here). Every wait is
//! bounded; every spawned process is killed on every path.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{config_toml, SECRET};

fn ivrgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ivrgate"))
}

/// Runs the binary with `args` and no input; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = ivrgate()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ivrgate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version_print_to_stdout_and_succeed() {
    for args in [&["--help"][..], &["-h"], &["help"], &["serve", "--help"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
        for command in [
            "serve --config PATH",
            "check-config PATH",
            "dead-letters",
            "replay",
        ] {
            assert!(
                stdout.contains(command),
                "{args:?}: no {command:?} in\n{stdout}"
            );
        }
    }
    for args in [&["--version"][..], &["-V"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(
            stdout.trim(),
            format!("ivrgate {}", env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
    }
    // A mistake is not help: usage on stderr, exit 64 (EX_USAGE), nothing on stdout.
    let (code, stdout, stderr) = run(&["--frobnicate"]);
    assert_eq!(code, Some(64));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("usage:"), "{stderr}");
}

/// The systemd side of the notify protocol: a datagram socket the daemon reports to.
struct Systemd {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Systemd {
    fn bind(dir: &Path) -> Systemd {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Systemd { socket, path }
    }

    /// The next message within `wait`, if any.
    fn next(&self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Reads messages until one has every line of `lines`; panics after `wait`, naming what
    /// it heard.
    fn expect(&self, lines: &[&str], wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        let mut heard = Vec::new();
        while Instant::now() < deadline {
            if let Some(m) = self.next(Duration::from_millis(200)) {
                if lines
                    .iter()
                    .all(|l| m.lines().any(|have| have.starts_with(l)))
                {
                    return m;
                }
                heard.push(m);
            }
        }
        panic!("no message with {lines:?} within {wait:?}; heard {heard:?}");
    }
}

/// `ivrgate serve` with its configuration `toml` under `dir`, reporting to `systemd`, with a
/// watchdog of `watchdog_usec`; killed on every path. Its log goes to `dir/serve.log`.
fn serve(dir: &Path, toml: &str, systemd: &Systemd, watchdog_usec: u64, stall: &Path) -> Child {
    let config = dir.join("ivrgate.toml");
    std::fs::write(&config, toml).expect("config");
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    Child(
        ivrgate()
            .args(["serve", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &systemd.path)
            .env("WATCHDOG_USEC", watchdog_usec.to_string())
            .env("IVRGATE_TEST_STALL_DELIVERY", stall)
            .env_remove("WATCHDOG_PID")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ivrgate serve"),
    )
}

/// Kills and reaps the child on every path.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.0.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name}");
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn reloads_report_to_systemd_and_ivrgate_reload_waits_for_the_verdict() {
    let dir = tempfile::tempdir().expect("tmp");
    let systemd = Systemd::bind(dir.path());
    let toml = config_toml(dir.path(), "http://127.0.0.1:9/hooks", "");
    let child = serve(dir.path(), &toml, &systemd, 0, &dir.path().join("no-stall"));
    let pid = child.0.id().to_string();
    let ready = systemd.expect(&["READY=1", "STATUS=serving on 127.0.0.1:"], WAIT);
    assert!(ready.contains("1 tenant(s)"), "{ready}");

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1.
    std::fs::write(
        dir.path().join("ivrgate.toml"),
        toml.replace("[storage]", "[logging]\nlevel = \"debug\"\n\n[storage]"),
    )
    .expect("config");
    signal(&child, "HUP");
    let reloading = systemd.expect(
        &["RELOADING=1", "MONOTONIC_USEC=", "STATUS=reloading"],
        WAIT,
    );
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC is a number");
    assert!(usec > 0);
    systemd.expect(&["READY=1"], WAIT);

    // `ivrgate reload`: a changed listen is a valid file the running daemon must refuse.
    let moved = toml.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    assert_ne!(moved, toml);
    std::fs::write(dir.path().join("ivrgate.toml"), &moved).expect("config");
    let checked = ivrgate()
        .arg("check-config")
        .arg(dir.path().join("ivrgate.toml"))
        .output()
        .expect("check-config");
    assert!(checked.status.success(), "the file itself is valid");
    let refused = ivrgate()
        .args(["reload", "--pid", &pid])
        .stdin(Stdio::null())
        .output()
        .expect("reload");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reload refused") && stderr.contains("listen changed"),
        "{stderr}"
    );
    systemd.expect(&["RELOADING=1"], WAIT);
    systemd.expect(
        &[
            "READY=1",
            "STATUS=reload refused, running configuration kept: listen changed",
        ],
        WAIT,
    );

    // A file the daemon can apply: exit 0, and the new tenant is served.
    let two = format!(
        "{toml}\n[[tenants]]\nid = \"beta\"\nwebhook_url = \"http://127.0.0.1:9/b\"\nwebhook_secret = \"{SECRET}\"\n"
    );
    std::fs::write(dir.path().join("ivrgate.toml"), two).expect("config");
    let applied = ivrgate()
        .args(["reload", "--pid", &pid])
        .stdin(Stdio::null())
        .output()
        .expect("reload");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&applied.stdout).trim(),
        "configuration reloaded"
    );
    let ready = systemd.expect(&["READY=1", "STATUS=serving on"], WAIT);
    assert!(ready.contains("2 tenant(s)"), "{ready}");

    // Nobody answers for a process that is not ivrgate (or is gone): exit 1, and why.
    let nobody = ivrgate()
        .args(["reload", "--pid", "1"])
        .output()
        .expect("reload");
    assert_eq!(nobody.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("no ivrgate serve process 1 answers"),
        "{nobody:?}"
    );

    signal(&child, "TERM");
    systemd.expect(&["STOPPING=1", "STATUS=stopping"], WAIT);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[test]
fn the_watchdog_is_fed_only_while_the_delivery_loop_turns() {
    let dir = tempfile::tempdir().expect("tmp");
    let systemd = Systemd::bind(dir.path());
    let stall = dir.path().join("stall");
    let toml = config_toml(dir.path(), "http://127.0.0.1:9/hooks", "");
    // 400 ms: pings every 200 ms; a loop is stuck after 2 s without a turn.
    let child = serve(dir.path(), &toml, &systemd, 400_000, &stall);
    systemd.expect(&["READY=1"], WAIT);
    systemd.expect(&["WATCHDOG=1"], WAIT);
    systemd.expect(&["WATCHDOG=1"], WAIT);

    // Hold the delivery loop (the test-only fault hook): the pings stop and STATUS says why.
    std::fs::write(&stall, "").expect("stall");
    systemd.expect(&["STATUS=delivery loop has not turned for"], WAIT);
    let quiet_until = Instant::now() + Duration::from_millis(1500);
    let mut during = Vec::new();
    while Instant::now() < quiet_until {
        during.extend(systemd.next(Duration::from_millis(100)));
    }
    assert!(
        !during.iter().any(|m| m.contains("WATCHDOG=1")),
        "fed while the delivery loop is stuck: {during:?}"
    );
    assert!(
        !during.is_empty(),
        "the status goes on saying the loop is stuck"
    );

    // Let it go: the loop turns and the watchdog is fed again.
    std::fs::remove_file(&stall).expect("unstall");
    systemd.expect(&["WATCHDOG=1"], WAIT);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        log.contains("no longer feeding the watchdog") && log.contains("delivery loop"),
        "{log}"
    );
    assert!(log.contains("every loop turns again"), "{log}");
    drop(child);
}
