//! Replays the committed fuzz corpora (`fuzz/corpus/{target}`) and the fuzzers' findings
//! (`tests/fixtures/fuzz/{target}`) through the targets' bodies: every input must keep its
//! target's properties. This does not fuzz; it keeps what the fuzzer found from coming back.
//!
//! Each replay prints its slowest input. An input that takes over 100 ms (CPU time, its fastest
//! of up to five runs, so a busy machine does not fail it) fails the replay:
//! corpus inputs are small, so that means a decoder is superlinear somewhere (a size and
//! complexity guard, not a benchmark).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SLOWEST_ALLOWED: Duration = Duration::from_millis(100);
/// How many more times an input over the limit is timed before it fails the replay.
const RETIMES: usize = 4;

/// Times an input by the CPU time of the replaying thread where Linux reports it
/// (`/proc/thread-self/schedstat`, nanoseconds on a CPU), so other processes competing for
/// the CPU do not count; by the wall clock elsewhere.
enum Clock {
    Cpu(u64),
    Wall(Instant),
}

impl Clock {
    fn cpu_ns() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        stat.split_whitespace().next()?.parse().ok()
    }

    fn start() -> Clock {
        match Clock::cpu_ns() {
            Some(ns) => Clock::Cpu(ns),
            None => Clock::Wall(Instant::now()),
        }
    }

    fn elapsed(&self) -> Duration {
        match self {
            Clock::Cpu(from) => {
                Duration::from_nanos(Clock::cpu_ns().unwrap_or(*from).saturating_sub(*from))
            }
            Clock::Wall(from) => from.elapsed(),
        }
    }
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in [
        root.join("fuzz/corpus").join(target),
        root.join("tests/fixtures/fuzz").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, body) = ivrgate_fuzz_props::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    let mut slowest = (Duration::ZERO, PathBuf::new());
    for path in &files {
        let data = std::fs::read(path).expect("readable corpus file");
        let started = Clock::start();
        let outcome = std::panic::catch_unwind(|| body(&data));
        let mut took = started.elapsed();
        assert!(
            outcome.is_ok(),
            "{target}: {} breaks a property",
            path.display()
        );
        // A slow run on a busy machine is not a slow decoder: an input over the limit is
        // timed again, and only its fastest run counts.
        for _ in 0..RETIMES {
            if took <= SLOWEST_ALLOWED {
                break;
            }
            let started = Clock::start();
            let _ = std::panic::catch_unwind(|| body(&data));
            took = took.min(started.elapsed());
        }
        if took > slowest.0 {
            slowest = (took, path.clone());
        }
    }
    println!(
        "{target}: {} inputs, slowest {:?} ({})",
        files.len(),
        slowest.0,
        slowest.1.display()
    );
    assert!(
        slowest.0 <= SLOWEST_ALLOWED,
        "{target}: {} took {:?}, over {SLOWEST_ALLOWED:?}",
        slowest.1.display(),
        slowest.0
    );
}

#[test]
fn every_target_has_a_replay() {
    let names: Vec<&str> = ivrgate_fuzz_props::TARGETS.iter().map(|t| t.0).collect();
    assert_eq!(
        names,
        [
            "xmlrpc",
            "json",
            "form",
            "charset",
            "voicenter",
            "ptk_soap",
            "soap",
            "soap_write",
            "ctips",
            "openscape",
            "command",
            "config",
            "path",
            "redact",
            "forwarded"
        ]
    );
}

#[test]
fn replay_xmlrpc() {
    replay("xmlrpc");
}

#[test]
fn replay_json() {
    replay("json");
}

#[test]
fn replay_form() {
    replay("form");
}

#[test]
fn replay_charset() {
    replay("charset");
}

#[test]
fn replay_voicenter() {
    replay("voicenter");
}

#[test]
fn replay_ptk_soap() {
    replay("ptk_soap");
}

#[test]
fn replay_soap() {
    replay("soap");
}

#[test]
fn replay_soap_write() {
    replay("soap_write");
}

#[test]
fn replay_ctips() {
    replay("ctips");
}

#[test]
fn replay_openscape() {
    replay("openscape");
}

#[test]
fn replay_command() {
    replay("command");
}

#[test]
fn replay_config() {
    replay("config");
}

#[test]
fn replay_path() {
    replay("path");
}

#[test]
fn replay_redact() {
    replay("redact");
}

#[test]
fn replay_forwarded() {
    replay("forwarded");
}
