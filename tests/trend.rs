//! The leak-trend verdict against a real server in this process, with the tracker as the
//! global allocator and the intervals shortened (samples every 40 ms, so the "15m" window
//! of 15 samples spans 0.6 s): a steady planted leak is `growing` at the right rate and
//! its site ranks first; a heap that rises once and stays flat, and allocate/free churn,
//! are not `growing`.
//!
//! Each scenario starts its own server (a fresh history); they share the process-wide
//! heap, so they take `SERIAL` first.

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use heapwatch::app::Limits;
use heapwatch::settings::{MemoryMode, Settings};
use serde_json::{Value, json};
use support::*;

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

/// Async-aware: each test holds it across its awaits (and a failed test cannot poison it).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SAMPLE: Duration = Duration::from_millis(40);
const WINDOW_15M: Duration = Duration::from_millis(40 * 15);

/// The trend's intervals, shortened 1,500 times (they are settings).
fn fast_trend(st: &mut Settings) {
    st.trend_sample_interval_ms = SAMPLE.as_millis() as u32;
    st.trend_checkpoint_interval_ms = 200;
}

fn limits() -> Limits {
    Limits {
        // Time runs 1,500 times faster than at the defaults, so the threshold scales up
        // too: 2 GiB/h here is 570 KiB/s, above the start-up creep of a fresh server's
        // RSS (about 100 KiB/s) and 25 times below the planted leak (about 55 GB/h).
        trend_growth_threshold_bytes_per_hour: 2 << 30,
        ..Limits::default()
    }
}

async fn trend(s: &TestServer) -> Value {
    let r = get(s.ingress, "/api/memory/trend", &[]).await;
    assert_eq!(r.status, 200);
    r.json()
}

fn window<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window"] == name)
        .unwrap_or_else(|| panic!("window {name}: {t}"))
}

/// One step of the planted leak: 64 KiB kept forever, allocated here.
#[inline(never)]
fn leak_step(into: &mut Vec<Vec<u8>>) {
    into.push(black_box(vec![7u8; 64 * 1024]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_leak_is_growing_at_its_rate_and_its_site_ranks_first() {
    let _serial = SERIAL.lock().await;
    // Tracking is process-wide: no session of another test may run with other settings.
    heapwatch::memory::stop();
    let s = TestServer::start_with(
        |st| {
            fast_trend(st);
            st.debug_memory = true;
            st.debug_memory_mode = MemoryMode::Exact;
        },
        limits(),
    )
    .await;

    // Leak 64 KiB every 4 ms on a thread of its own, on a fixed schedule (a late step
    // catches up), and record when each step happened.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let leaker = std::thread::spawn(move || {
        let mut kept = Vec::with_capacity(4096);
        let mut marks = Vec::with_capacity(4096);
        let t0 = Instant::now();
        while !stop2.load(Ordering::Relaxed) && kept.len() < 4000 {
            leak_step(&mut kept);
            marks.push((Instant::now(), kept.len() as f64 * 65536.0));
            let next = t0 + Duration::from_millis(4) * kept.len() as u32;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        (kept, marks)
    });
    // Long enough for a full 15-sample window and 5+ checkpoints.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let asked = Instant::now();
    let t = trend(&s).await;
    stop.store(true, Ordering::Relaxed);
    let (kept, marks) = leaker.join().unwrap();

    // The truth: the leaker's own rate over the window the server looked at (its last
    // 15 samples, all taken before we asked).
    let from = asked - WINDOW_15M - SAMPLE;
    let recent: Vec<_> = marks
        .iter()
        .filter(|m| m.0 >= from && m.0 <= asked)
        .collect();
    let (a, b) = (recent.first().unwrap(), recent.last().unwrap());
    let truth = (b.1 - a.1) / (b.0 - a.0).as_secs_f64() * 3600.0;

    let w = window(&t, "15m");
    assert_eq!(w["heap"]["verdict"], "growing", "{t}");
    assert_eq!(w["verdict"], "growing");
    assert_eq!(t["verdict"], "growing");
    let slope = w["heap"]["slope_bytes_per_hour"].as_f64().unwrap();
    let error = slope / truth - 1.0;
    assert!(
        error.abs() <= 0.2,
        "slope {slope:.0} B/h vs truth {truth:.0} B/h ({:+.1}%): {t}",
        error * 100.0
    );
    eprintln!(
        "leak: measured {slope:.0} B/h, truth {truth:.0} B/h ({:+.1}%); rss verdict {}",
        error * 100.0,
        w["rss"]["verdict"]
    );
    // The 6h window (360 samples) needs 180; there are about 40.
    assert_ne!(
        window(&t, "6h")["verdict"],
        "growing",
        "6h has too little data"
    );
    assert_eq!(window(&t, "6h")["verdict"], "insufficient_data");

    // Growing sites: the leak's site first, with its traceback and a positive rate.
    assert!(t["checkpoints"]["count"].as_u64().unwrap() >= 4, "{t}");
    let sites = t["growing_sites"].as_array().unwrap();
    assert!(!sites.is_empty(), "{t}");
    let first = &sites[0];
    assert!(
        first["traceback"][0]
            .as_str()
            .unwrap()
            .contains("leak_step"),
        "leak ranked first: {t}"
    );
    assert!(
        first["traceback"][0]
            .as_str()
            .unwrap()
            .contains("trend.rs:")
    );
    assert!(first["grew_in"].as_u64().unwrap() >= 3);
    let site_rate = first["growth_bytes_per_hour"].as_f64().unwrap();
    assert!(
        (site_rate / truth - 1.0).abs() < 0.35,
        "site rate {site_rate:.0} vs {truth:.0}"
    );

    // The WebSocket command answers the same shape.
    let mut ws = ws(s.ingress).await;
    let r = ws.call("t", "debug/memory_trend", json!({})).await;
    assert_eq!(r["result"]["windows"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["result"]["checkpoints"]["max"], 6);
    let r = ws
        .call("t2", "debug/memory_trend", json!({"window": "15m"}))
        .await;
    assert_eq!(r["error_code"], "invalid_args");
    drop(black_box(kept));
    s.stop().await;
}

/// One block of the small sampled leak: 256 bytes kept forever, allocated here.
#[inline(never)]
fn small_leak_step(into: &mut Vec<Box<[u8]>>) {
    into.push(black_box(vec![9u8; 256].into_boxed_slice()));
}

/// Waits until `n` checkpoints taken after `after` are held; returns when the last was.
async fn checkpoints_after(s: &TestServer, after: std::time::SystemTime, n: usize) {
    let began = Instant::now();
    while s
        .services
        .trend
        .checkpoint_times()
        .iter()
        .filter(|t| **t > after)
        .count()
        < n
    {
        assert!(began.elapsed() < WAIT, "no checkpoint in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// In sampled mode a small leak's estimate does not rise at every checkpoint: here it
/// stands still for a whole interval (the leak pauses), so the every-checkpoint rule
/// cannot see it in the last checkpoints. Its samples are only ever born, though: the
/// compare of the newest checkpoint with the oldest makes it a suspect, and the trend
/// reports it growing, first, with that evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_leak_whose_estimate_pauses_is_a_growing_site_by_its_evidence() {
    let _serial = SERIAL.lock().await;
    heapwatch::memory::stop();
    const CHECKPOINT_MS: u32 = 500;
    let s = TestServer::start_with(
        |st| {
            fast_trend(st);
            st.trend_checkpoint_interval_ms = CHECKPOINT_MS;
            st.debug_memory = true;
            st.debug_memory_mode = MemoryMode::Sampled;
            st.debug_memory_sample_kib = 64;
            st.debug_memory_seed = Some(17);
        },
        limits(),
    )
    .await;
    assert_eq!(heapwatch::memory::status().seed, Some(17));

    // 256-byte blocks at about 2 MiB/s: some 30 samples of 64 KiB a second.
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (paused2, stop2) = (paused.clone(), stop.clone());
    let leaker = std::thread::spawn(move || {
        let mut kept = Vec::with_capacity(1 << 16);
        while !stop2.load(Ordering::Relaxed) {
            if !paused2.load(Ordering::Relaxed) {
                for _ in 0..80 {
                    small_leak_step(&mut kept);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kept
    });

    // Leak across two checkpoints, pause across one whole interval, leak across two more.
    let now = std::time::SystemTime::now;
    checkpoints_after(&s, std::time::UNIX_EPOCH, 2).await;
    checkpoints_after(&s, now(), 2).await;
    paused.store(true, Ordering::Relaxed);
    checkpoints_after(&s, now(), 2).await;
    paused.store(false, Ordering::Relaxed);
    checkpoints_after(&s, now(), 2).await;
    let t = trend(&s).await;
    stop.store(true, Ordering::Relaxed);
    let kept = leaker.join().unwrap();

    assert_eq!(t["tracking"]["mode"], "sampled", "{t}");
    assert_eq!(t["tracking"]["seed"], 17, "{t}");
    let sites = t["growing_sites"].as_array().unwrap();
    let first = sites
        .first()
        .unwrap_or_else(|| panic!("no growing site: {t}"));
    assert!(
        first["traceback"][0]
            .as_str()
            .unwrap()
            .contains("small_leak_step"),
        "the leak ranks first: {t}"
    );
    let r = &first["retention"];
    assert_eq!(r["suspect"], true, "{first}");
    assert_eq!(r["old_freed"], 0, "a leak frees nothing: {first}");
    assert_eq!(r["new_freed"], 0, "a leak frees nothing: {first}");
    assert!(r["new_alive"].as_u64().unwrap() >= 9, "{first}");
    assert!(r["leak_score"].as_f64().unwrap() >= 3.0, "{first}");
    assert!(first["samples"].as_u64().unwrap() >= r["new_alive"].as_u64().unwrap());
    assert!(first["std_error_bytes"].as_u64().unwrap() > 0, "{first}");
    // Its estimate stood still in the paused interval, within the last four checkpoints.
    assert!(first["grew_in"].as_u64().unwrap() < 3, "{first}");
    let rate = first["growth_bytes_per_hour"].as_f64().unwrap();
    assert!(rate > 0.0, "{first}");
    drop(black_box(kept));
    s.stop().await;
    heapwatch::memory::stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rise_then_flat_is_not_growing() {
    let _serial = SERIAL.lock().await;
    let s = TestServer::start_with(fast_trend, limits()).await;
    // Flat, one 32 MiB rise in the middle of the 15-sample window, flat again.
    tokio::time::sleep(WINDOW_15M / 2).await;
    let step = black_box(vec![3u8; 32 << 20]);
    tokio::time::sleep(WINDOW_15M / 2 + SAMPLE * 3).await;
    let t = trend(&s).await;
    assert_eq!(
        t["tracking"]["enabled"], false,
        "the trend runs with tracking off"
    );
    let w = window(&t, "15m");
    eprintln!("15m window: {w}");
    assert_eq!(w["heap"]["verdict"], "stable", "{t}");
    assert_eq!(w["rss"]["verdict"], "stable", "{t}");
    assert!(
        window(&t, "15m")["heap"]["points"].as_u64().unwrap() >= 15,
        "{t}"
    );
    assert_eq!(t["growing_sites"], json!([]));
    drop(step);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_and_free_cycles_are_not_growing() {
    let _serial = SERIAL.lock().await;
    let s = TestServer::start_with(fast_trend, limits()).await;
    // Fill 16 MiB in 1 MiB blocks over about 160 ms, free it all, again: several cycles
    // per window, sampled at every phase.
    let deadline = Instant::now() + WINDOW_15M * 2;
    let churn = tokio::task::spawn_blocking(move || {
        let mut cycles = 0;
        while Instant::now() < deadline {
            let mut held = Vec::with_capacity(16);
            for _ in 0..16 {
                held.push(black_box(vec![5u8; 1 << 20]));
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(held);
            cycles += 1;
        }
        cycles
    });
    let cycles = churn.await.unwrap();
    assert!(cycles >= 5, "{cycles} cycles");
    let t = trend(&s).await;
    let w = window(&t, "15m");
    eprintln!("15m window: {w}");
    assert_eq!(w["heap"]["verdict"], "stable", "{t}");
    assert_ne!(w["rss"]["verdict"], "growing", "{t}");
    s.stop().await;
}

/// `debug/memory_history`: the add-on's own RSS and heap, one point per trend sample,
/// oldest first, over the WebSocket and HTTP alike; a window it does not know is named in
/// the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_add_ons_own_history_is_served_oldest_first() {
    let _serial = SERIAL.lock().await;
    let s = TestServer::start_with(fast_trend, limits()).await;
    let began = Instant::now();
    let mut ws = ws(s.ingress).await;
    let points = loop {
        let r = ws
            .call("h", "debug/memory_history", json!({"window": "15m"}))
            .await;
        let points = r["result"]["points"].as_array().unwrap().clone();
        if points.len() >= 10 {
            assert_eq!(r["result"]["window"], "15m");
            assert_eq!(r["result"]["sample_interval_s"], 0.04);
            break points;
        }
        assert!(began.elapsed() < Duration::from_secs(20), "{r}");
        tokio::time::sleep(SAMPLE * 5).await;
    };
    let times: Vec<i64> = points.iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );
    assert!(
        points.iter().all(|p| p[1].as_u64().unwrap() > 0),
        "RSS in every point"
    );
    assert!(
        points.iter().all(|p| p[2].as_u64().unwrap() > 0),
        "heap in use in every point (the tracker is this test's allocator)"
    );
    let http = get(s.ingress, "/api/memory/history?window=1h", &[]).await;
    assert_eq!(http.status, 200);
    let h = http.json();
    assert_eq!(h["window"], "1h");
    assert!(h["points"].as_array().unwrap().len() >= points.len());
    let bad = ws
        .call("b", "debug/memory_history", json!({"window": "2h"}))
        .await;
    assert_eq!(bad["error_code"], "invalid_args", "{bad}");
    assert!(bad["details"].as_str().unwrap().contains("window"), "{bad}");
    s.stop().await;
}
