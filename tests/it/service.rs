//! Running the built binary as a service: its command line (`--help`, `--version`).

use std::process::{Command, Stdio};

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
