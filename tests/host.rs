//! Host monitoring against a Supervisor stand-in on loopback: the add-on list and every
//! container's stats in the Supervisor's shapes (envelope, plain-text 401/403, 400 for a
//! stopped add-on), with memory that follows a shape per container on a compressed clock
//! (one poll every 20 ms stands for a minute), read back over a real WebSocket and HTTP.

mod standin;
mod support;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use standin::*;
use support::*;

const POLL_MS: u32 = 20;

async fn server_for(standin: &Arc<StandIn>, poll_ms: u32) -> TestServer {
    let addr = serve(standin.clone()).await;
    TestServer::start_with(
        move |s| {
            s.supervisor_url = format!("http://{addr}");
            s.supervisor_token = Some(heapwatch::settings::Secret::new(SUPERVISOR_TOKEN));
            s.host_poll_seconds = 60;
            s.host_poll_interval_ms = Some(poll_ms);
        },
        heapwatch::app::Limits::default(),
    )
    .await
}

fn fixed_flat() -> BTreeMap<String, Answer> {
    ["supervisor", "dns", "audio", "cli", "multicast", "observer"]
        .into_iter()
        .map(|s| (s.to_string(), flat(60.0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leaking_addon_among_a_hundred_is_the_only_one_growing() {
    let mut addons = BTreeMap::new();
    addons.insert(
        "local_leaky".to_string(),
        (
            "Leaky".to_string(),
            Answer::Memory(Box::new(|t| {
                (200.0 + 30.0 * t + 0.5 * (t * 733.0).sin()) * MIB
            })),
        ),
    );
    for i in 0..99 {
        let shape: Shape = match i % 4 {
            0 => Box::new(move |t| (100.0 + i as f64 + 0.5 * (t * 977.0).sin()) * MIB),
            // One step up, then flat.
            1 => Box::new(move |t| if t < 2.0 { 150.0 } else { 230.0 } * MIB),
            // An hourly cycle.
            2 => Box::new(move |t| (300.0 + 40.0 * (t * std::f64::consts::TAU).sin()) * MIB),
            // Sawtooth churn: fills for 20 minutes, then frees.
            _ => Box::new(move |t| (120.0 + 30.0 * (t * 3.0).fract()) * MIB),
        };
        addons.insert(
            format!("a{i:02}_addon"),
            (format!("Add-on {i}"), Answer::Memory(shape)),
        );
    }
    let mut fixed = fixed_flat();
    // Core is restarted at hour 3: memory falls to a quarter, climbs back over an hour as
    // its caches fill, then stays flat.
    fixed.insert(
        "core".into(),
        Answer::Memory(Box::new(|t| {
            if t < 3.0 {
                800.0 * MIB
            } else {
                (200.0 + 600.0 * (t - 3.0).min(1.0)) * MIB
            }
        })),
    );
    let standin = new_standin(addons, fixed, false, Duration::ZERO);
    let s = server_for(&standin, POLL_MS).await;
    // Twenty-six simulated hours: steady growth is `rising` for the first day (a daily
    // rhythm cannot be ruled out sooner), `growing` after.
    while standin.hours() < 26.0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ws = ws(s.ingress).await;
    let r = ws.call("h", "host/memory", json!({"sort": "growth"})).await;
    let result = &r["result"];
    assert_eq!(result["enabled"], true, "{r}");
    let verdicts: Vec<String> = result["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["slug"], c["verdict"], c["slope_bytes_per_hour"]
            )
        })
        .collect();
    assert_eq!(result["growing"], json!(["local_leaky"]), "{verdicts:#?}");
    assert_eq!(result["rising"], json!([]), "{verdicts:#?}");
    let leaky = &result["containers"][0];
    assert_eq!(leaky["slug"], "local_leaky");
    let slope = leaky["slope_bytes_per_hour"].as_f64().unwrap() / MIB;
    assert!((slope - 30.0).abs() <= 6.0, "slope {slope} MiB/h");
    assert!(
        result["banner"].as_str().unwrap().starts_with("Leaky: +"),
        "{}",
        result["banner"]
    );
    assert!(leaky["hours_to_exhaustion"].as_f64().unwrap() > 0.0);
    let rows = result["containers"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        100 + 7,
        "every add-on, Core, the Supervisor, 5 plugins"
    );
    let core = rows.iter().find(|c| c["slug"] == "core").unwrap();
    assert_eq!(core["restarts_7d"], 1, "{core}");
    assert_ne!(core["verdict"], "growing", "{core}");

    // The history of one container, over HTTP with the same result.
    let h = get(
        s.ingress,
        "/api/host/memory_history?slug=core&window=24h",
        &[],
    )
    .await;
    assert_eq!(h.status, 200);
    let h = h.json();
    // One point per poll, none made up: the last 24 of the 26 simulated hours hold most
    // of the polls (how many a loaded machine managed is its business, not the test's).
    let points = h["points"].as_array().unwrap().len() as u64;
    let after = ws.call("p", "host/memory", json!({})).await;
    let polls = after["result"]["poll"]["polls"].as_u64().unwrap();
    assert!(
        points <= polls && points * 2 >= polls,
        "{points} points of {polls} polls"
    );
    let week = ws
        .call(
            "w",
            "host/memory_history",
            json!({"slug": "core", "window": "7d"}),
        )
        .await;
    assert_eq!(week["result"]["averaged"], true, "{week}");
    assert_eq!(
        week["result"]["restarts"].as_array().unwrap().len(),
        1,
        "{week}"
    );
    let r = ws
        .call("n", "host/memory_history", json!({"slug": "nope"}))
        .await;
    assert_eq!(r["error_code"], "not_found", "{r}");

    // Home Assistant heard of it once, by a stable id, in words; the entities say who.
    let posts = standin.posts.lock().unwrap().clone();
    let notifications: Vec<&Value> = posts
        .iter()
        .filter(|(path, _)| path == "/core/api/services/persistent_notification/create")
        .map(|(_, body)| body)
        .collect();
    assert_eq!(
        notifications.len(),
        1,
        "one per growth episode: {notifications:#?}"
    );
    let n = notifications[0];
    assert_eq!(n["notification_id"], "heapwatch_leak_local_leaky");
    assert_eq!(n["title"], "Leaky keeps growing");
    let message = n["message"].as_str().unwrap();
    assert!(message.contains("MiB per hour"), "{message}");
    let latest = |entity: &str| {
        posts
            .iter()
            .rev()
            .find(|(path, _)| path == &format!("/core/api/states/{entity}"))
            .map(|(_, body)| body.clone())
            .unwrap_or_else(|| panic!("{entity} never published"))
    };
    let sensor = latest("binary_sensor.heapwatch_leak_detected");
    assert_eq!(sensor["state"], "on", "{sensor}");
    assert_eq!(
        sensor["attributes"]["growing"],
        json!(["local_leaky"]),
        "{sensor}"
    );
    let top = latest("sensor.heapwatch_top_grower");
    let mib_per_hour = top["state"].as_f64().unwrap();
    assert!((mib_per_hour - 30.0).abs() <= 6.0, "{top}");
    assert_eq!(top["attributes"]["slug"], "local_leaky", "{top}");

    // /metrics: a memory gauge and a growing flag per container, labelled by slug.
    let m = get(s.ingress, "/metrics", &[]).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    let series = |name: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .collect()
    };
    assert_eq!(
        series("heapwatch_container_memory_bytes").len(),
        107,
        "{text}"
    );
    let growing: Vec<&str> = series("heapwatch_container_growing")
        .into_iter()
        .filter(|l| l.ends_with(" 1"))
        .collect();
    assert_eq!(growing.len(), 1, "{growing:?}");
    assert!(growing[0].contains("slug=\"local_leaky\""), "{growing:?}");
    if tools::require("promtool", "prometheus") {
        let (ok, out) = tools::run_with_stdin("promtool", &["check", "metrics"], text.as_bytes());
        assert!(ok, "promtool check metrics: {out}\n{text}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_faults_are_reported_and_the_server_keeps_serving() {
    let mut addons = BTreeMap::new();
    addons.insert(
        "stopped".to_string(),
        ("Stopped".to_string(), Answer::Stopped),
    );
    addons.insert(
        "garbage".to_string(),
        ("Garbage".to_string(), Answer::Garbage),
    );
    addons.insert("dropper".to_string(), ("Dropper".to_string(), Answer::Drop));
    addons.insert("fine".to_string(), ("Fine".to_string(), flat(50.0)));
    let mut fixed = fixed_flat();
    fixed.insert("core".into(), flat(500.0));
    let standin = new_standin(addons, fixed, false, Duration::ZERO);
    let s = server_for(&standin, 50).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut ws = ws(s.ingress).await;
    let r = ws.call("h", "host/memory", json!({})).await;
    let rows = r["result"]["containers"].as_array().unwrap().clone();
    let row = |slug: &str| rows.iter().find(|c| c["slug"] == slug).cloned().unwrap();
    assert_eq!(row("stopped")["state"], "stopped");
    assert_eq!(row("stopped")["error"], Value::Null);
    assert!(
        row("garbage")["error"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{}",
        row("garbage")
    );
    assert!(
        row("dropper")["error"]
            .as_str()
            .unwrap()
            .contains("Supervisor"),
        "{}",
        row("dropper")
    );
    assert!(row("fine")["memory_bytes"].as_u64().unwrap() > 40 * 1024 * 1024);
    assert_eq!(r["result"]["poll"]["error"], Value::Null);
    assert_eq!(
        ws.call("p", "ping", json!({})).await["result"]["pong"],
        true
    );
    s.stop().await;

    // A role too low: every call 403. Said in words, and the server keeps serving.
    let standin = new_standin(BTreeMap::new(), fixed_flat(), true, Duration::ZERO);
    let s = server_for(&standin, 50).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut socket = support::ws(s.ingress).await;
    let r = socket.call("h", "host/memory", json!({})).await;
    let error = r["result"]["poll"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("hassio_role: manager"), "{r}");
    assert_eq!(
        socket.call("p", "ping", json!({})).await["result"]["pong"],
        true
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_supervisor_token_the_host_view_is_off_and_says_why() {
    let s = TestServer::start().await;
    let mut ws = ws(s.ingress).await;
    let r = ws.call("h", "host/memory", json!({})).await;
    assert_eq!(r["result"]["enabled"], false, "{r}");
    assert!(
        r["result"]["off_reason"]
            .as_str()
            .unwrap()
            .contains("SUPERVISOR_TOKEN")
    );
    assert_eq!(r["result"]["containers"], json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_addons_at_a_second_each_are_polled_within_fifteen_seconds() {
    let addons = (0..100)
        .map(|i| (format!("a{i:03}"), (format!("Add-on {i}"), flat(80.0))))
        .collect();
    let mut fixed = fixed_flat();
    fixed.insert("core".into(), flat(500.0));
    let standin = new_standin(addons, fixed, false, Duration::from_secs(1));
    // One poll (the first tick is immediate); the next would come an hour later.
    let s = server_for(&standin, 3_600_000).await;
    let mut ws = ws(s.ingress).await;
    let began = Instant::now();
    let poll = loop {
        let r = ws.call("h", "host/memory", json!({})).await;
        if r["result"]["poll"]["polls"] == 1 {
            break r["result"]["poll"].clone();
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no poll finished: {r}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = poll["last_duration_ms"].as_u64().unwrap();
    assert!(took <= 15_000, "one poll of 107 containers took {took} ms");
    assert!(
        took >= 11_000,
        "10 at a time at 1 s each is at least 11 s: {took} ms"
    );
    assert_eq!(*standin.calls.lock().unwrap(), 1 + 107);
    s.stop().await;
}

/// The number of `core` points the real binary at `ingress` reports over 6 h.
async fn core_points(ingress: SocketAddr) -> usize {
    let r = get(ingress, "/api/host/memory_history?slug=core&window=6h", &[]).await;
    if r.status == 404 {
        return 0;
    }
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["points"].as_array().unwrap().len()
}

/// The add-on's own trend: samples held and when the oldest was taken.
async fn own_trend(ingress: SocketAddr) -> (u64, String) {
    let r = get(ingress, "/api/memory/trend", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t = r.json();
    (
        t["samples"].as_u64().unwrap(),
        t["oldest_sample_at"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn host_options(standin: SocketAddr, data: &std::path::Path) -> Value {
    json!({
        "supervisor_url": format!("http://{standin}"),
        "host_poll_seconds": 60,
        "host_poll_interval_ms": 50,
        "trend_sample_interval_ms": 50,
        "data_dir": data.display().to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_kill_9_and_a_garbage_file_is_moved_aside() {
    let mut fixed = fixed_flat();
    fixed.insert("core".into(), flat(500.0));
    let standin = new_standin(BTreeMap::new(), fixed, false, Duration::ZERO);
    let addr = serve(standin).await;
    let data = tempfile::tempdir().unwrap();
    let env = [("SUPERVISOR_TOKEN", SUPERVISOR_TOKEN)];

    let first = Binary::start(host_options(addr, data.path()), &env);
    let began = Instant::now();
    while core_points(first.ingress).await < 20 {
        assert!(began.elapsed() < WAIT, "the binary did not poll");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The counts, then SIGKILL at once: a poll or a sample may be in flight.
    let own_before = own_trend(first.ingress).await;
    let before = core_points(first.ingress).await;
    drop(first); // kill -9 and reap
    assert!(
        own_before.0 >= 10,
        "the add-on sampled itself: {own_before:?}"
    );

    let second = Binary::start(host_options(addr, data.path()), &env);
    second.wait_for_line("memory history loaded");
    let after = core_points(second.ingress).await;
    assert!(
        after + 1 >= before,
        "at most the poll in flight is lost: {before} points before kill -9, {after} after"
    );
    // The add-on's own RSS and heap history goes on where it stopped.
    let own_after = own_trend(second.ingress).await;
    assert!(
        own_after.0 + 1 >= own_before.0,
        "the add-on's own samples survive: {own_before:?} before, {own_after:?} after"
    );
    // (Kept to the millisecond: compare to the second.)
    assert_eq!(
        own_after.1.get(..19),
        own_before.1.get(..19),
        "the oldest sample is the first run's"
    );
    drop(second);

    // A file that is not a database: moved aside, a fresh one started, the server serves.
    let db = data.path().join("history.sqlite3");
    for side in ["history.sqlite3-wal", "history.sqlite3-shm"] {
        let _ = std::fs::remove_file(data.path().join(side));
    }
    std::fs::write(&db, b"this is not a database, it is a test".repeat(200)).unwrap();
    let third = Binary::start(host_options(addr, data.path()), &env);
    third.wait_for_line("moved aside");
    third.wait_for_line("memory history loaded");
    let aside = std::fs::read_dir(data.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("history.sqlite3.corrupt-")
        });
    assert!(aside, "the damaged file is kept beside the new one");
    let r = get(third.ingress, "/api/host/memory", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["enabled"], true);
}

/// The add-on as shipped (the release build), watching 40 add-ons, Core, the Supervisor
/// and the plugins through two simulated days of polls (one every 10 ms stands for a
/// minute: the 48 h of points every container keeps are full), tracking off: its resident
/// memory stays within 20 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rss_with_the_host_view_on_stays_within_20_mib() {
    let addons = (0..40)
        .map(|i| {
            (
                format!("a{i:02}_addon"),
                (format!("Add-on {i}"), flat(50.0 + i as f64)),
            )
        })
        .collect();
    let mut fixed = fixed_flat();
    fixed.insert("core".into(), flat(600.0));
    let standin = new_standin(addons, fixed, false, Duration::ZERO);
    let addr = serve(standin).await;
    let dir = tempfile::tempdir().unwrap();
    let options = dir.path().join("options.json");
    std::fs::write(
        &options,
        json!({
            "ingress_listen": "127.0.0.1:0",
            "trusted_proxies": ["127.0.0.1"],
            "data_dir": dir.path().join("data").display().to_string(),
            "supervisor_url": format!("http://{addr}"),
            "host_poll_interval_ms": 10,
        })
        .to_string(),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(release_binary());
    cmd.arg("--options")
        .arg(&options)
        .env("SUPERVISOR_TOKEN", SUPERVISOR_TOKEN)
        .env_remove("HEAPWATCH_DEBUG_MEMORY");
    let bin = Binary::launch(cmd, false, dir);
    // Until the monitor's clock has seen 49 hours (its own, from the status).
    let began = Instant::now();
    loop {
        let r = get(bin.ingress, "/api/host/memory", &[]).await.json();
        let oldest_core = get(
            bin.ingress,
            "/api/host/memory_history?slug=core&window=90d",
            &[],
        )
        .await;
        let span_h = if oldest_core.status == 200 {
            let h = oldest_core.json();
            let first = h["points"][0][0].as_i64().unwrap_or(0);
            (h["now_ms"].as_i64().unwrap() - first) as f64 / 3.6e6
        } else {
            0.0
        };
        if span_h >= 49.0 {
            assert_eq!(r["containers"].as_array().unwrap().len(), 47, "{r}");
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "two simulated days take a minute or so: {span_h:.1} h after {:?}",
            began.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Idle: let the last polls settle, then read what the kernel says it holds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", bin.child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    eprintln!("idle RSS with the host view on, 47 containers, 49 simulated hours: {rss_kib} KiB");
    assert!(rss_kib <= 20 * 1024, "{rss_kib} KiB resident");
}
