//! The evidence behind snapshot rows, over a real WebSocket and HTTP, with the tracker as
//! this test process's global allocator: sample counts, standard errors and retention on
//! every row, the `order` argument (`change`, `growth`, `suspects`), and a session that
//! runs with other settings than the server's.
//!
//! Tracking is process-wide: each test takes `SERIAL` and stops tracking before and after.

mod support;

use std::collections::VecDeque;
use std::hint::black_box;

use heapwatch::app::Limits;
use heapwatch::memory::{self, Mode, TrackingConfig};
use heapwatch::settings::MemoryMode;
use serde_json::{Value, json};
use support::*;

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

/// Async-aware: each test holds it across its awaits.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The largest row whose site is in `function` (a function may have more than one
/// allocating line: the blocks, and the `Vec` that holds them).
fn row_for<'a>(reply: &'a Value, function: &str) -> &'a Value {
    rows(reply)
        .iter()
        .filter(|r| {
            r["traceback"][0]
                .as_str()
                .is_some_and(|f| f.contains(function))
        })
        .max_by_key(|r| r["size_bytes"].as_u64())
        .unwrap_or_else(|| panic!("no row for {function}: {reply}"))
}

/// The planted leak: 256-byte blocks kept forever, allocated on this line.
#[inline(never)]
fn leak_block(into: &mut Vec<Box<[u8]>>) {
    into.push(black_box(vec![1u8; 256].into_boxed_slice()));
}

/// Churn: a 4 KiB block in, the oldest out, a live set of 256 blocks (1 MiB).
#[inline(never)]
fn churn_block(cache: &mut VecDeque<Box<[u8]>>) {
    cache.push_back(black_box(vec![2u8; 4096].into_boxed_slice()));
    if cache.len() > 256 {
        cache.pop_front();
    }
}

/// A workload step: 16 MiB of churn and 512 KiB of leak, interleaved.
fn workload(cache: &mut VecDeque<Box<[u8]>>, leaked: &mut Vec<Box<[u8]>>) {
    for _ in 0..2048 {
        churn_block(cache);
        churn_block(cache);
        leak_block(leaked);
    }
}

/// Sampled at 64 KiB with a fixed seed: after 2 MiB of a small-block leak among 64 MiB
/// of churn, the suspects order ranks the leak first with none of its samples freed and
/// the churn's samples turned over; `order` is echoed, validated and works over HTTP and
/// in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_leak_is_the_first_suspect_and_churn_turns_over() {
    let _serial = SERIAL.lock().await;
    memory::stop();
    let s = TestServer::start_with(
        |st| {
            st.debug_memory_mode = MemoryMode::Sampled;
            st.debug_memory_sample_kib = 64;
            st.debug_memory_seed = Some(42);
        },
        Limits::default(),
    )
    .await;
    let mut ws = ws(s.ingress).await;

    // `order` without `compare_with`, or an unknown one, changes nothing.
    let r = ws
        .call("o1", "debug/memory_snapshot", json!({"order": "suspects"}))
        .await;
    assert_eq!(r["error_code"], "invalid_args", "{r}");
    let d = r["details"].as_str().unwrap();
    assert!(d.contains("`order`") && d.contains("compare_with"), "{d}");
    let r = ws
        .call(
            "o2",
            "debug/memory_snapshot",
            json!({"order": "leaks", "compare_with": "x"}),
        )
        .await;
    assert_eq!(r["error_code"], "invalid_args", "{r}");
    let d = r["details"].as_str().unwrap();
    for word in ["`order`", "change", "growth", "suspects"] {
        assert!(d.contains(word), "{word}: {d}");
    }
    let r = get(s.ingress, "/api/memory/snapshot?order=growth", &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["details"].as_str().unwrap().contains("order"));
    assert!(!memory::status().enabled, "errors did not start tracking");

    // Start with the server's settings, warm the churn up, save the baseline.
    let r = ws.call("s", "debug/memory_snapshot", json!({})).await;
    assert_eq!(r["result"]["tracking"]["seed"], 42, "{r}");
    assert_eq!(
        r["result"]["order"],
        Value::Null,
        "no order without a compare"
    );
    let (mut cache, mut leaked) = tokio::task::spawn_blocking(|| {
        let mut cache = VecDeque::with_capacity(300);
        let mut leaked = Vec::with_capacity(1 << 16);
        workload(&mut cache, &mut leaked);
        (cache, leaked)
    })
    .await
    .unwrap();
    let r = ws
        .call("b", "debug/memory_snapshot", json!({"save_as": "start"}))
        .await;
    assert!(r["result"].is_object(), "{r}");

    // Four more steps: 64 MiB of churn, 2 MiB of leak.
    let (cache2, leaked2) = tokio::task::spawn_blocking(move || {
        for _ in 0..4 {
            workload(&mut cache, &mut leaked);
        }
        (cache, leaked)
    })
    .await
    .unwrap();

    let r = ws
        .call(
            "c",
            "debug/memory_snapshot",
            json!({"compare_with": "start", "order": "suspects", "top_n": 20}),
        )
        .await;
    assert_eq!(r["result"]["order"], "suspects", "{r}");
    let first = &rows(&r)[0];
    assert!(
        first["traceback"][0]
            .as_str()
            .unwrap()
            .contains("leak_block"),
        "the leak is the first suspect: {r}"
    );
    let ret = &first["retention"];
    assert_eq!(ret["suspect"], true, "{first}");
    assert_eq!(ret["old_freed"], 0, "{first}");
    assert_eq!(ret["new_freed"], 0, "{first}");
    let new_alive = ret["new_alive"].as_u64().unwrap();
    assert!(new_alive >= 9, "{first}");
    assert_eq!(
        first["samples"].as_u64().unwrap(),
        new_alive + ret["old_retained"].as_u64().unwrap()
    );
    assert!(ret["leak_score"].as_f64().unwrap() >= 3.0, "{first}");
    assert!(first["std_error_bytes"].as_u64().unwrap() > 0, "{first}");
    // Every row in this order grew; every row has its evidence.
    for row in rows(&r) {
        assert!(row["size_diff_bytes"].as_i64().unwrap() > 0, "{row}");
        assert!(row["samples"].is_u64() && row["std_error_bytes"].is_u64());
        assert!(row["retention"].is_object(), "one session: {row}");
    }

    // The churn's samples turned over: born and freed since, and its old ones freed.
    let r = ws
        .call(
            "c2",
            "debug/memory_snapshot",
            json!({"compare_with": "start", "top_n": 200}),
        )
        .await;
    assert_eq!(r["result"]["order"], "change", "the default is echoed: {r}");
    let churn = row_for(&r, "churn_block");
    let ret = &churn["retention"];
    assert!(ret["new_freed"].as_u64().unwrap() > 0, "{churn}");
    assert!(ret["old_freed"].as_u64().unwrap() > 0, "{churn}");
    assert!(ret["leak_score"].as_f64().unwrap() < 3.0, "{churn}");
    assert_eq!(ret["suspect"], false, "{churn}");

    // Growth: only rows that grew, largest growth first.
    let r = ws
        .call(
            "g",
            "debug/memory_snapshot",
            json!({"compare_with": "start", "order": "growth", "top_n": 200}),
        )
        .await;
    let diffs: Vec<i64> = rows(&r)
        .iter()
        .map(|row| row["size_diff_bytes"].as_i64().unwrap())
        .collect();
    assert!(diffs.iter().all(|&d| d > 0), "{diffs:?}");
    assert!(diffs.windows(2).all(|w| w[0] >= w[1]), "{diffs:?}");

    // Over HTTP, and in the report.
    let http = get(
        s.ingress,
        "/api/memory/snapshot?compare_with=start&order=suspects&top_n=3",
        &[],
    )
    .await;
    assert_eq!(http.status, 200);
    let body = http.json();
    assert_eq!(body["order"], "suspects");
    assert!(
        body["top_allocators"][0]["traceback"][0]
            .as_str()
            .unwrap()
            .contains("leak_block"),
        "{body}"
    );
    let report = get(
        s.ingress,
        "/api/report?compare_with=start&order=suspects&top_n=3",
        &[],
    )
    .await;
    assert_eq!(report.status, 200);
    let report = report.json();
    assert_eq!(report["snapshot"]["order"], "suspects");
    assert_eq!(
        report["snapshot"]["top_allocators"][0]["retention"]["suspect"], true,
        "{report}"
    );
    let r = get(s.ingress, "/api/report?order=suspects", &[]).await;
    assert_eq!(r.status, 400);

    drop(black_box((cache2, leaked2)));
    s.stop().await;
    memory::stop();
}

/// `n` blocks of 1,000 bytes, allocated on one line.
#[inline(never)]
fn exact_blocks(n: usize) -> Vec<Box<[u8]>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(black_box(vec![3u8; 1000].into_boxed_slice()));
    }
    v
}

/// In exact mode a row's samples are its blocks, its standard error is 0, and retention
/// counts blocks exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rows_count_every_block_and_its_fate() {
    let _serial = SERIAL.lock().await;
    memory::stop();
    let s = TestServer::start_with(
        |st| st.debug_memory_mode = MemoryMode::Exact,
        Limits::default(),
    )
    .await;
    let mut ws = ws(s.ingress).await;
    ws.call("s", "debug/memory_snapshot", json!({})).await;

    let mut old = exact_blocks(100);
    let r = ws
        .call("b", "debug/memory_snapshot", json!({"save_as": "e0"}))
        .await;
    assert!(r["result"].is_object(), "{r}");
    let row = row_for(
        &ws.call("st", "debug/memory_snapshot", json!({"top_n": 200}))
            .await,
        "exact_blocks",
    )
    .clone();
    assert_eq!(row["count"], 100, "{row}");
    assert_eq!(row["samples"], 100, "{row}");
    assert_eq!(row["std_error_bytes"], 0, "{row}");
    assert_eq!(row["retention"], Value::Null, "no compare: {row}");

    // 30 of the old blocks freed; 50 new ones, 20 of them freed again.
    old.truncate(70);
    let mut new = exact_blocks(50);
    new.truncate(30);
    let r = ws
        .call(
            "c",
            "debug/memory_snapshot",
            json!({"compare_with": "e0", "top_n": 200}),
        )
        .await;
    let row = row_for(&r, "exact_blocks");
    assert_eq!(row["size_bytes"], 100 * 1000, "{row}");
    assert_eq!(row["size_diff_bytes"], 0, "{row}");
    assert_eq!(row["samples"], 100, "{row}");
    assert_eq!(row["std_error_bytes"], 0, "{row}");
    assert_eq!(
        row["retention"],
        json!({"new_alive": 30, "new_freed": 20, "old_freed": 30, "old_retained": 70,
               "leak_score": 0.0, "suspect": false}),
        "{row}"
    );

    // Growth only: 40 more blocks kept make the site grow by exactly 40,000 bytes, and
    // 70 blocks born and kept are more than enough evidence.
    let more = exact_blocks(40);
    let r = ws
        .call(
            "c2",
            "debug/memory_snapshot",
            json!({"compare_with": "e0", "order": "suspects", "top_n": 200}),
        )
        .await;
    let row = row_for(&r, "exact_blocks");
    assert_eq!(row["size_diff_bytes"], 40_000, "{row}");
    assert_eq!(row["retention"]["new_alive"], 70, "{row}");
    assert_eq!(row["retention"]["suspect"], true, "{row}");
    drop(black_box((old, new, more)));
    s.stop().await;
    memory::stop();
}

/// A session started with other settings than the server's is kept and served: the
/// reply's `tracking` is the running session, `settings_conflict` has both sides and the
/// note says what to do; the server started with `debug_memory` keeps it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_other_settings_is_served_and_named() {
    let _serial = SERIAL.lock().await;
    memory::stop();
    let running = TrackingConfig {
        mode: Mode::Sampled,
        frames: 8,
        sample_interval_bytes: 128 * 1024,
        seed: Some(5),
    };
    assert_eq!(memory::start(running), Ok(true));
    let s = TestServer::start_with(|st| st.debug_memory = true, Limits::default()).await;
    assert_eq!(memory::status().frames, 8, "the running session is kept");
    let mut ws = ws(s.ingress).await;
    let r = ws.call("s", "debug/memory_snapshot", json!({})).await;
    let res = &r["result"];
    assert_eq!(res["tracking"]["frames"], 8, "{r}");
    assert_eq!(res["tracking"]["sample_interval_bytes"], 128 * 1024);
    assert_eq!(res["tracking"]["seed"], 5);
    assert_eq!(
        res["settings_conflict"],
        json!({
            "running": {"mode": "sampled", "frames": 8, "sample_interval_bytes": 131072, "seed": 5},
            "requested": {"mode": "sampled", "frames": 32, "sample_interval_bytes": 524288, "seed": null},
        }),
        "{r}"
    );
    let note = res["note"].as_str().unwrap();
    assert!(
        note.contains("other settings") && note.contains("seed 5") && note.contains("restart"),
        "{note}"
    );
    // The same over HTTP; a session with the server's own settings has no conflict.
    let http = get(s.ingress, "/api/memory/snapshot?top_n=1", &[]).await;
    assert_eq!(http.json()["settings_conflict"]["running"]["frames"], 8);
    s.stop().await;
    memory::stop();
    let s = TestServer::start().await;
    let mut ws = support::ws(s.ingress).await;
    let r = ws.call("s", "debug/memory_snapshot", json!({})).await;
    assert!(r["result"].get("settings_conflict").is_none(), "{r}");
    assert!(r["result"]["note"].as_str().unwrap().contains("started"));
    s.stop().await;
    memory::stop();
}
