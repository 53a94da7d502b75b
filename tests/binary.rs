//! The real `heapwatch` binary as the Supervisor runs it: options file, environment, exit
//! statuses, logs, SIGTERM.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

/// Runs the binary with `options_json` written to a file and waits for it to exit.
fn run_with_options(options_text: Option<&str>, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("options.json");
    if let Some(text) = options_text {
        std::fs::write(&path, text).unwrap();
    }
    let mut cmd = Command::new(binary_path());
    cmd.arg("--options")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env_remove("HEAPWATCH_DEBUG_MEMORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let out = wait_output(child);
    (
        out.0,
        out.1,
        out.2.replace(&path.display().to_string(), "<OPTIONS>"),
    )
}

fn wait_output(child: std::process::Child) -> (i32, String, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(WAIT).expect("binary exits").unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_options_exit_78_with_one_clear_line_before_binding() {
    let cases: &[(&str, &[&str])] = &[
        ("{not json", &["<OPTIONS>", "not valid JSON"]),
        ("[]", &["<OPTIONS>", "JSON object"]),
        (
            r#"{"debug_memory": "sure"}"#,
            &["<OPTIONS>", "debug_memory", "true or false"],
        ),
        (
            r#"{"debug_memory_frames": 65}"#,
            &["<OPTIONS>", "debug_memory_frames", "from 1 to 64", "65"],
        ),
        (
            r#"{"debug_memory_sample_kib": 2.5}"#,
            &["<OPTIONS>", "debug_memory_sample_kib", "integer"],
        ),
        (
            r#"{"debug_memory_seed": -1}"#,
            &[
                "<OPTIONS>",
                "debug_memory_seed",
                "from 0 to 18446744073709551615",
            ],
        ),
        (
            r#"{"debug_memory_mode": "fast"}"#,
            &["<OPTIONS>", "debug_memory_mode", "sampled, exact"],
        ),
        (
            r#"{"log_level": "verbose"}"#,
            &["<OPTIONS>", "log_level", "warning"],
        ),
        (
            r#"{"api_token": "abc"}"#,
            &["<OPTIONS>", "api_token", "at least 32"],
        ),
        (
            r#"{"surprise": true}"#,
            &["<OPTIONS>", "unknown key `surprise`"],
        ),
    ];
    for (text, needles) in cases {
        // If the binary bound a port it would log "listener up" on stdout.
        let (code, stdout, stderr) =
            run_with_options(Some(text), &[("HEAPWATCH_INGRESS_LISTEN", "127.0.0.1:0")]);
        assert_eq!(code, 78, "{text}: stderr {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{text}: {stderr:?} lacks {n:?}");
        }
        assert!(
            !stdout.contains("listener up"),
            "{text}: bound a port: {stdout}"
        );
    }
    let (code, _, stderr) = run_with_options(
        Some("{}"),
        &[
            ("HEAPWATCH_DEBUG_MEMORY_FRAMES", "0"),
            ("HEAPWATCH_INGRESS_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(code, 78);
    assert!(stderr.contains("HEAPWATCH_DEBUG_MEMORY_FRAMES"), "{stderr}");
}

#[test]
fn unreadable_options_file_exits_78() {
    // Root reads any file whatever its mode, so use one the kernel refuses to read as
    // text: /proc/self/mem fails with an I/O error.
    let child = Command::new(binary_path())
        .args(["--options", "/proc/self/mem"])
        .env("HEAPWATCH_INGRESS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = wait_output(child);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("/proc/self/mem: cannot read the options file"),
        "{stderr}"
    );
    assert!(!stdout.contains("listener up"));
}

#[test]
fn options_path_that_is_a_directory_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(binary_path())
        .arg("--options")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, _, stderr) = wait_output(child);
    assert_eq!(code, 78);
    assert!(stderr.contains("directory"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_options_file_means_defaults_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary_path());
    cmd.arg("--options")
        .arg(dir.path().join("absent.json"))
        .env("HEAPWATCH_INGRESS_LISTEN", "127.0.0.1:0")
        .env("HEAPWATCH_TRUSTED_PROXIES", "127.0.0.1")
        .env("HEAPWATCH_DATA_DIR", dir.path().join("data"))
        .env("HEAPWATCH_LOG_LEVEL", "debug")
        .env_remove("HEAPWATCH_DEBUG_MEMORY");
    let data = dir.path().join("data/logs");
    let bin = Binary::launch(cmd, false, dir);
    bin.wait_for_line("no options file; using defaults");
    bin.wait_for_line("direct listener off");
    let mut ws = ws(bin.ingress).await;
    let info = ws.call("1", "system/info", json!({})).await["result"].clone();
    assert_eq!(info["settings"]["log_level"], "debug");
    assert_eq!(info["settings"]["debug_memory_frames"], 32);
    assert_eq!(info["settings"]["trusted_proxies"], json!(["127.0.0.1"]));
    // The rolling log file is under data_dir/logs.
    let logs: Vec<_> = std::fs::read_dir(data).unwrap().collect();
    assert_eq!(logs.len(), 1, "one daily log file");
}

#[test]
fn sigterm_closes_sessions_1001_and_exits_0_within_5s() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut bin = Binary::start(json!({"api_token": TOKEN}), &[]);
    let (ingress, direct) = (bin.ingress, bin.direct.unwrap());
    let mut sessions = rt.block_on(async {
        let mut v = vec![ws(ingress).await];
        v.push(
            ws_connect(
                direct,
                &[("authorization", &format!("Bearer {TOKEN}"))],
                None,
            )
            .await
            .unwrap(),
        );
        for w in &mut v {
            assert_eq!(w.call("p", "ping", json!({})).await["result"]["pong"], true);
        }
        v
    });
    bin.sigterm();
    rt.block_on(async {
        for w in &mut sessions {
            w.expect_close(1001).await;
        }
    });
    let (status, took) = bin.wait();
    assert_eq!(status.code(), Some(0), "exit 0");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    bin.wait_for_line("SIGTERM received");
    bin.wait_for_line("stopped");
    let out = bin.stdout.lock().unwrap().join("\n");
    assert!(!out.contains(TOKEN), "the token is never logged");
}

#[test]
fn port_already_taken_is_a_clear_error_printed_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stdout, stderr) =
        run_with_options(Some(&json!({"ingress_listen": addr}).to_string()), &[]);
    assert_ne!(code, 0);
    assert_ne!(code, 78, "not a configuration error");
    // Once, in the log (stdout: the add-on's Log tab), as an error.
    let both = format!("{stdout}{stderr}");
    let needle = format!("cannot listen on {addr} (ingress_listen)");
    assert_eq!(both.matches(&needle).count(), 1, "{both}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&needle))
        .expect("in the log");
    assert!(line.contains("ERROR"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_heapwatch_variable_is_a_warning_and_the_server_starts() {
    let bin = Binary::start(
        json!({}),
        &[
            ("HEAPWATCH_SOMETHING", "1"),
            ("HEAPWATCH_LOG_LEVEL", "debug"),
        ],
    );
    let line = bin.wait_for_line("ignoring environment variable HEAPWATCH_SOMETHING");
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("HEAPWATCH_LOG_LEVEL"),
        "names the known ones: {line}"
    );
    let mut ws = ws(bin.ingress).await;
    assert_eq!(
        ws.call("p", "ping", json!({})).await["result"]["pong"],
        true
    );
    // The known variable beside it still applies.
    let info = ws.call("i", "system/info", json!({})).await;
    assert_eq!(info["result"]["settings"]["log_level"], "debug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_data_dir_is_reported_once_and_serving_continues() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bin = Binary::start(
        json!({"data_dir": file.join("sub").display().to_string()}),
        &[],
    );
    let mut ws = ws(bin.ingress).await;
    assert_eq!(
        ws.call("p", "ping", json!({})).await["result"]["pong"],
        true
    );
    let out = bin.stdout.lock().unwrap().join("\n");
    assert_eq!(out.matches("cannot write logs under").count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_gate_turns_tracking_on_at_boot_and_off_despite_the_option() {
    for (env, option, want) in [
        ("yes", false, true),
        (" ON ", false, true),
        ("nope", true, false),
        ("0", true, false),
    ] {
        let bin = Binary::start(
            json!({"debug_memory": option}),
            &[("HEAPWATCH_DEBUG_MEMORY", env)],
        );
        let mut ws = ws(bin.ingress).await;
        let info = ws.call("1", "system/info", json!({})).await;
        assert_eq!(
            info["result"]["tracking"]["enabled"], want,
            "HEAPWATCH_DEBUG_MEMORY={env:?} option={option}"
        );
        assert_eq!(info["result"]["settings"]["debug_memory"], want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_peers_are_logged_with_their_address_but_rate_limited() {
    let bin = Binary::start(json!({}), &[]);
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    for _ in 0..20 {
        assert_eq!(
            get_from(bin.ingress, "/", &[], Some(other)).await.status,
            403
        );
    }
    // The trusted peer still works, and its requests are not logged as refused.
    assert_eq!(get(bin.ingress, "/", &[]).await.status, 200);
    bin.wait_for_line("refused request");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = bin.stdout.lock().unwrap().join("\n");
    let refused: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("refused request"))
        .collect();
    assert_eq!(refused.len(), 1, "one line for a burst: {refused:?}");
    assert!(
        refused[0].contains("127.0.0.2") && refused[0].contains("WARN"),
        "{}",
        refused[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_from_boot_starts_before_the_servers_own_allocations() {
    let bin = Binary::start(
        json!({"debug_memory": true, "debug_memory_mode": "exact"}),
        &[],
    );
    let mut ws = ws(bin.ingress).await;
    let r = ws.call("s", "debug/memory_snapshot", json!({})).await;
    let c = &r["result"]["coverage"];
    assert_eq!(c["tracking_from_boot"], true, "{c}");
    assert_eq!(
        r["result"]["note"],
        serde_json::Value::Null,
        "already on: {r}"
    );
    // Only the command line and the settings were allocated before tracking started:
    // the logger, the runtime, the listeners and the trend's history come after.
    let at_start = c["heap_at_start_bytes"].as_u64().expect("heap at start");
    assert!(
        at_start < 256 * 1024,
        "{at_start} B live when tracking started: {c}"
    );
    assert!(
        c["before_tracking_bytes"].as_u64().unwrap() <= at_start,
        "{c}"
    );
    let hint = c["hint"].as_str().unwrap();
    assert!(hint.contains("% of the heap ("), "{hint}");
    assert!(!hint.contains("turn on debug_memory"), "{hint}");
    // The whole heap of a server at rest is small: the log writers' queues are sized for
    // a few thousand lines, not tracing-appender's 128,000 (4 MiB each, allocated up front).
    let heap = c["heap_bytes"].as_u64().unwrap();
    assert!(heap < 3 * 1024 * 1024, "{heap} B of heap at rest: {c}");
}
