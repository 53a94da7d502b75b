//! External tools the export tests run for real: `go tool pprof` (Debian `golang-go`) and
//! `promtool` (Debian `prometheus`). A missing tool is installed with apt-get when
//! possible; if it is still missing, the test is skipped with a message, except under
//! `CI=true`, where that is a failure.
#![allow(dead_code)]

use std::process::{Command, Stdio};

fn on_path(bin: &str) -> bool {
    Command::new(bin)
        .arg(if bin == "go" { "version" } else { "--version" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `bin` can run, installing Debian package `package` if needed. `false` means
/// skip (never under CI).
pub fn require(bin: &str, package: &str) -> bool {
    if on_path(bin) {
        return true;
    }
    eprintln!("{bin} is missing; trying apt-get install -y {package}");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-q", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    if on_path(bin) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{bin} (Debian package {package}) is required under CI=true and could not be installed"
        );
    }
    eprintln!("SKIPPED: {bin} is not available (install Debian package {package})");
    false
}

/// Runs `bin args`, returns stdout; panics with stderr on failure.
pub fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `bin args` with `input` on stdin; returns (success, stdout + stderr).
pub fn run_with_stdin(bin: &str, args: &[&str], input: &[u8]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
