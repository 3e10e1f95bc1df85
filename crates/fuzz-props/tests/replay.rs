//! Replays the committed fuzz corpora (`fuzz/corpus/{target}`) and the fuzzers' findings
//! (`tests/fixtures/fuzz/{target}`) through the targets' bodies: every input must keep its
//! target's properties. This does not fuzz; it keeps what the fuzzer found from coming back.
//!
//! Each replay prints its slowest input. An input that takes over 100 ms fails the replay:
//! corpus inputs are small, so that means a decoder is superlinear somewhere (a size and
//! complexity guard, not a benchmark).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SLOWEST_ALLOWED: Duration = Duration::from_millis(100);

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
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| body(&data));
        let took = started.elapsed();
        assert!(
            outcome.is_ok(),
            "{target}: {} breaks a property",
            path.display()
        );
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
