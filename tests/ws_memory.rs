//! `debug/memory_snapshot` and friends over a real WebSocket and HTTP, with the tracker
//! installed as this test process's global allocator (so the server in this process
//! tracks real allocations, including the ones this test makes on purpose).

mod support;

use heapwatch::app::Limits;
use heapwatch::settings::MemoryMode;
use serde_json::{Value, json};
use support::*;

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

/// Holds `n` blocks of 4 KiB allocated right here, so the site is this function.
#[inline(never)]
fn grow_known_site(n: usize) -> Vec<Box<[u8]>> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut block = vec![0u8; 4096].into_boxed_slice();
        block[0] = i as u8;
        held.push(block);
    }
    std::hint::black_box(held)
}

fn row_for<'a>(reply: &'a Value, function: &str) -> Option<&'a Value> {
    rows(reply).iter().find(|r| {
        r["traceback"][0]
            .as_str()
            .is_some_and(|f| f.contains(function))
    })
}

/// One test, in order, because tracking is process-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_enable_baselines_compare_and_http() {
    let s = TestServer::start_with(
        |st| st.debug_memory_mode = MemoryMode::Exact,
        Limits::default(),
    )
    .await;
    let mut ws = ws(s.ingress).await;

    // Tracking is off until the first snapshot.
    let info = ws.call("i0", "system/info", json!({})).await;
    assert_eq!(info["result"]["tracking"]["enabled"], false);

    // Argument errors change nothing: tracking stays off.
    for (args, field) in [
        (json!({"top_n": 0}), "top_n"),
        (json!({"top_n": 201}), "top_n"),
        (json!({"top_n": 2.0}), "top_n"),
        (json!({"top_n": "3"}), "top_n"),
        (json!({"group_by": "line"}), "group_by"),
        (json!({"save_as": ""}), "save_as"),
        (json!({"save_as": "x".repeat(101)}), "save_as"),
        (json!({"compare_with": "a\u{0}b"}), "compare_with"),
        (json!({"drop_baseline": 3}), "drop_baseline"),
        (json!({"surprise": 1}), "surprise"),
    ] {
        let r = ws.call("bad", "debug/memory_snapshot", args.clone()).await;
        assert_eq!(r["error_code"], "invalid_args", "{args}");
        assert!(
            r["details"].as_str().unwrap().contains(field),
            "{args}: {r}"
        );
    }
    let r = ws
        .call(
            "nf",
            "debug/memory_snapshot",
            json!({"compare_with": "nothing"}),
        )
        .await;
    assert_eq!(r["error_code"], "not_found");
    assert!(r["details"].as_str().unwrap().contains("none"), "{r}");
    let info = ws.call("i1", "system/info", json!({})).await;
    assert_eq!(
        info["result"]["tracking"]["enabled"], false,
        "errors did not start tracking"
    );

    // The first valid call starts tracking, saves the empty starting point, and says so.
    let r = ws
        .call("s1", "debug/memory_snapshot", json!({"save_as": "start"}))
        .await;
    let res = &r["result"];
    assert!(res["note"].as_str().unwrap().contains("save_as"), "{r}");
    assert_eq!(res["tracking"]["enabled"], true);
    assert_eq!(res["tracking"]["mode"], "exact");
    assert_eq!(res["tracking"]["sample_interval_bytes"], Value::Null);
    assert_eq!(res["tracking"]["estimated"], false);
    assert!(res["tracking"]["since"].as_str().unwrap().ends_with('Z'));
    assert!(res["taken_at"].as_str().unwrap().contains('T'));
    assert_eq!(res["baseline_names"], json!(["start"]));
    assert_eq!(res["compared_with"], Value::Null);
    assert_eq!(res["group_by"], "site");
    assert!(res["allocator"]["current_bytes"].as_u64().unwrap() > 0);
    assert!(res["system"]["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(res["system"]["host"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(
        res["system"]["process"]["peak_rss_bytes"].as_u64()
            >= res["system"]["process"]["rss_bytes"].as_u64()
    );

    // No note once tracking runs.
    let r = ws.call("s2", "debug/memory_snapshot", json!({})).await;
    assert!(r["result"].get("note").is_none(), "{r}");
    let info = ws.call("i2", "system/info", json!({})).await;
    assert_eq!(info["result"]["tracking"]["enabled"], true);

    // Real growth from a known function, compared with the starting point: exact bytes.
    let held = grow_known_site(256);
    let r = ws
        .call(
            "c1",
            "debug/memory_snapshot",
            json!({"compare_with": "start", "top_n": 200}),
        )
        .await;
    assert_eq!(r["result"]["compared_with"], "start");
    let row = row_for(&r, "grow_known_site").unwrap_or_else(|| panic!("site missing: {r}"));
    assert_eq!(row["size_bytes"], 256 * 4096);
    assert_eq!(row["size_diff_bytes"], 256 * 4096);
    assert_eq!(row["count"], 256);
    assert_eq!(row["count_diff"], 256);
    assert!(
        row["traceback"][0]
            .as_str()
            .unwrap()
            .contains("ws_memory.rs:"),
        "file:line: {row}"
    );
    let first = &rows(&r)[0];
    assert!(
        first["size_diff_bytes"].as_i64().unwrap().abs() >= 256 * 4096,
        "sorted by |diff|: {r}"
    );

    // The same over HTTP.
    let http = get(
        s.ingress,
        "/api/memory/snapshot?compare_with=start&top_n=200&group_by=function",
        &[],
    )
    .await;
    assert_eq!(http.status, 200);
    let body = json!({"result": http.json()});
    let row = row_for(&body, "grow_known_site").expect("site over HTTP");
    // By function, the blocks and the Vec holding them (256 boxed-slice pointers of 16
    // bytes) are one group.
    assert_eq!(row["size_diff_bytes"], 256 * 4096 + 256 * 16);
    assert_eq!(row["count_diff"], 257);
    assert_eq!(body["result"]["group_by"], "function");

    // Freeing half moves the diff by exactly half.
    let mut held = held;
    held.truncate(128);
    let r = ws
        .call(
            "c2",
            "debug/memory_snapshot",
            json!({"compare_with": "start", "top_n": 200}),
        )
        .await;
    let row = row_for(&r, "grow_known_site").unwrap();
    assert_eq!(row["size_diff_bytes"], 128 * 4096);
    assert_eq!(row["count_diff"], 128);
    drop(held);

    // Baseline cap: 8 names; overwriting is fine; a ninth is precondition_failed with names.
    for i in 1..8 {
        let r = ws
            .call(
                "b",
                "debug/memory_snapshot",
                json!({"save_as": format!("b{i}"), "top_n": 1}),
            )
            .await;
        assert!(r["result"].is_object(), "{r}");
    }
    let r = ws
        .call(
            "b",
            "debug/memory_snapshot",
            json!({"save_as": "b1", "top_n": 1}),
        )
        .await;
    assert_eq!(r["result"]["baseline_names"].as_array().unwrap().len(), 8);
    let r = ws
        .call("b9", "debug/memory_snapshot", json!({"save_as": "ninth"}))
        .await;
    assert_eq!(r["error_code"], "precondition_failed");
    assert!(r["details"].as_str().unwrap().contains("\"b7\""), "{r}");
    let r = get(s.ingress, "/api/memory/snapshot?save_as=ninth", &[]).await;
    assert_eq!(r.status, 409);
    // Dropping one in the same call makes room.
    let r = ws
        .call(
            "b9",
            "debug/memory_snapshot",
            json!({"save_as": "ninth", "drop_baseline": "b3"}),
        )
        .await;
    let names = r["result"]["baseline_names"].as_array().unwrap();
    assert!(
        names.contains(&json!("ninth")) && !names.contains(&json!("b3")),
        "{r}"
    );
    // An unknown compare_with lists the saved names; dropping an unknown name is fine.
    let r = ws
        .call(
            "nf",
            "debug/memory_snapshot",
            json!({"compare_with": "zzz", "drop_baseline": "nope"}),
        )
        .await;
    assert_eq!(r["error_code"], "not_found");
    assert!(r["details"].as_str().unwrap().contains("\"start\""), "{r}");
    let r = get(s.ingress, "/api/memory/snapshot?compare_with=zzz", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error_code"], "not_found");

    // A baseline saved under one grouping compares under another.
    for g in ["function", "file", "traceback"] {
        let r = ws
            .call(
                "g",
                "debug/memory_snapshot",
                json!({"compare_with": "start", "group_by": g}),
            )
            .await;
        assert_eq!(r["result"]["group_by"], g, "{r}");
    }

    // reset_peak returns the allocator object with peak == current at that moment.
    let r = ws.call("rp", "debug/memory_reset_peak", json!({})).await;
    let a = &r["result"];
    for k in [
        "current_bytes",
        "peak_bytes",
        "live_blocks",
        "total_allocations",
        "tracked_stacks",
        "dropped_stacks",
        "overhead_bytes",
    ] {
        assert!(a[k].is_u64(), "{k} in {r}");
    }
    assert!(a["peak_bytes"].as_u64() >= a["current_bytes"].as_u64());
    assert!(a["tracked_stacks"].as_u64().unwrap() > 0);
    s.stop().await;
}
