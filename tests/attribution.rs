//! Where a snapshot attributes memory, over a real WebSocket with the tracker as this
//! process's global allocator in exact mode: an allocation made inside a dependency
//! (tokio's `BufReader`) is attributed to the line of this crate that called it, with its
//! qualified name and a short path, the dependency's frames kept and marked as library
//! code; `group_by: "innermost"` still shows the dependency's frame; every reply says
//! how much of the heap it covers; no frame anywhere is a bare address; and the tracker's
//! own baselines never appear as sites.
//!
//! One test, in order, because tracking is process-wide.

mod support;

use std::hint::black_box;

use heapwatch::app::Limits;
use heapwatch::settings::MemoryMode;
use serde_json::{Value, json};
use support::*;

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

/// Readers held, and each one's buffer: 4 MiB, far above anything the server holds.
const READERS: usize = 64;
const CAPACITY: usize = 64 * 1024;

/// Holds `READERS` tokio `BufReader`s: each buffer is allocated inside tokio
/// (`BufReader::with_capacity`), called from here.
#[inline(never)]
fn hold_in_dependency(held: &mut Vec<tokio::io::BufReader<tokio::io::Empty>>) {
    for _ in 0..READERS {
        held.push(black_box(tokio::io::BufReader::with_capacity(
            CAPACITY,
            tokio::io::empty(),
        )));
    }
}

/// Every frame of every row (site frames and the library frames above them).
fn all_frames(reply: &Value) -> Vec<&Value> {
    rows(reply)
        .iter()
        .flat_map(|r| {
            let frames = r["frames"].as_array().expect("frames");
            let inner = r["inner_frames"].as_array().expect("inner_frames");
            frames.iter().chain(inner)
        })
        .collect()
}

/// `0x7fd5cbfab1f4`: an address where a name should be.
fn is_bare_hex(name: &str) -> bool {
    name.strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_are_in_this_crate_with_qualified_names_short_paths_and_coverage() {
    let s = TestServer::start_with(
        |st| {
            st.debug_memory_mode = MemoryMode::Exact;
            st.debug_memory_frames = 64;
        },
        Limits::default(),
    )
    .await;
    let mut ws = ws(s.ingress).await;

    // The first snapshot starts tracking, and says that only what comes next counts.
    let r = ws
        .call("0", "debug/memory_snapshot", json!({"save_as": "start"}))
        .await;
    let coverage = &r["result"]["coverage"];
    assert_eq!(coverage["estimated"], false, "{r}");
    assert!(
        coverage["hint"]
            .as_str()
            .unwrap()
            .starts_with("Tracking started just now"),
        "{coverage}"
    );
    drop(r);

    let mut held = Vec::with_capacity(READERS);
    hold_in_dependency(&mut held);

    // Grouped by site: the top row is this crate's function, not tokio's.
    let r = ws
        .call("1", "debug/memory_snapshot", json!({"top_n": 50}))
        .await;
    let top = &rows(&r)[0];
    let site = &top["frames"][0];
    assert_eq!(
        site["function"], "attribution::hold_in_dependency",
        "{top:#}"
    );
    assert_eq!(site["file"], "tests/attribution.rs", "{top:#}");
    assert_eq!(site["library"], false);
    assert!(site["line"].as_u64().is_some());
    assert_eq!(top["size_bytes"], (READERS * CAPACITY) as u64, "{top:#}");
    assert_eq!(top["count"], READERS as u64);
    assert!(
        top["traceback"][0]
            .as_str()
            .unwrap()
            .starts_with("attribution::hold_in_dependency (tests/attribution.rs:"),
        "{top:#}"
    );
    // Its callers follow, marked library where they are (the test harness, tokio).
    assert!(
        top["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["library"] == true
                && f["file"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("tokio-1."))),
        "the runtime's frames are library frames: {top:#}"
    );
    // The dependency's frames above the site are kept, marked as library code, with
    // short paths and qualified names.
    let inner = top["inner_frames"].as_array().expect("inner_frames");
    let with_capacity = inner
        .iter()
        .find(|f| f["function"].as_str().unwrap().contains("BufReader"))
        .unwrap_or_else(|| panic!("tokio's frame above the site: {top:#}"));
    assert_eq!(with_capacity["library"], true);
    assert!(
        with_capacity["function"]
            .as_str()
            .unwrap()
            .starts_with("tokio::io::util::buf_reader::BufReader"),
        "{with_capacity}"
    );
    let path = with_capacity["file"].as_str().unwrap();
    assert!(
        path.starts_with("tokio-1.") && path.ends_with("/src/io/util/buf_reader.rs"),
        "{path}"
    );
    assert!(inner.iter().all(|f| f["library"] == true), "{top:#}");

    // Every frame: no registry or toolchain path in full, no bare address.
    let r = ws
        .call(
            "2",
            "debug/memory_snapshot",
            json!({"top_n": 200, "group_by": "traceback"}),
        )
        .await;
    for f in all_frames(&r) {
        let function = f["function"].as_str().unwrap();
        assert!(!is_bare_hex(function), "{f}");
        if let Some(path) = f["file"].as_str() {
            assert!(
                !path.contains("/.cargo/") && !path.starts_with("/rustc/"),
                "short path: {f}"
            );
        }
    }

    // Grouped by innermost frame: tokio's, with exactly the same bytes.
    let r = ws
        .call(
            "3",
            "debug/memory_snapshot",
            json!({"top_n": 50, "group_by": "innermost"}),
        )
        .await;
    assert_eq!(r["result"]["group_by"], "innermost");
    let row = rows(&r)
        .iter()
        .find(|row| {
            row["frames"][0]["function"]
                .as_str()
                .is_some_and(|f| f.contains("BufReader") && f.contains("with_capacity"))
        })
        .unwrap_or_else(|| panic!("tokio's with_capacity as a row: {r}"));
    assert_eq!(row["size_bytes"], (READERS * CAPACITY) as u64, "{row:#}");
    assert_eq!(row["frames"][0]["library"], true);
    assert_eq!(row["inner_frames"], json!([]));

    // Coverage: the parts add up to the live heap, the held bytes are attributed.
    let c = &r["result"]["coverage"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    assert!(n("attributed_bytes") >= (READERS * CAPACITY) as u64, "{c}");
    assert_eq!(
        n("attributed_bytes") + n("tracker_bytes") + n("before_tracking_bytes") + n("other_bytes"),
        n("heap_bytes"),
        "{c}"
    );
    assert!(n("heap_at_start_bytes") > 0, "{c}");
    assert_eq!(c["sampling_error_bytes"], Value::Null);
    assert_eq!(c["tracking_from_boot"], false);
    let hint = c["hint"].as_str().unwrap();
    assert!(hint.contains("% of the heap ("), "{hint}");
    // The memory from before tracking is named when it is more than a tenth of the heap.
    assert_eq!(
        hint.contains("before tracking started (turn on debug_memory to track from boot)"),
        n("before_tracking_bytes") * 10 > n("heap_bytes"),
        "{hint} {c}"
    );

    // Baselines are the tracker's memory: saving seven and comparing shows none of them.
    for i in 1..=7 {
        let r = ws
            .call(
                "b",
                "debug/memory_snapshot",
                json!({"save_as": format!("b{i}")}),
            )
            .await;
        assert!(r["result"].is_object(), "{r}");
    }
    let r = ws
        .call(
            "c",
            "debug/memory_snapshot",
            json!({"compare_with": "b1", "group_by": "traceback", "top_n": 200}),
        )
        .await;
    for row in rows(&r) {
        let in_tracker = row["frames"].as_array().unwrap().iter().any(|f| {
            f["file"]
                .as_str()
                .is_some_and(|p| p.starts_with("crates/tracker/"))
        });
        assert!(!in_tracker, "the tracker's own memory as a site: {row:#}");
    }
    assert!(
        r["result"]["coverage"]["tracker_bytes"].as_u64().unwrap() > 0,
        "the baselines are counted as the tracker's: {}",
        r["result"]["coverage"]
    );
    drop(black_box(held));
    s.stop().await;
}
