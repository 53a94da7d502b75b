//! Coverage in sampled mode (the default), over a real WebSocket with the tracker as this
//! process's global allocator: the first snapshot says tracking just started; with 64 MiB
//! held, the reply says its sizes are estimates, how far off they may be, and that exact
//! mode gives exact bytes.
//!
//! One test, because tracking is process-wide.

mod support;

use std::hint::black_box;

use heapwatch::app::Limits;
use heapwatch::settings::MemoryMode;
use serde_json::json;
use support::*;

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

const BLOCKS: usize = 1024;
const BLOCK: usize = 64 * 1024;

#[inline(never)]
fn hold(held: &mut Vec<Vec<u8>>) {
    for i in 0..BLOCKS {
        held.push(black_box(vec![i as u8; BLOCK]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_snapshots_say_they_are_estimates_and_what_would_be_exact() {
    let s = TestServer::start_with(
        |st| st.debug_memory_mode = MemoryMode::Sampled,
        Limits::default(),
    )
    .await;
    let mut ws = ws(s.ingress).await;
    let r = ws.call("0", "debug/memory_snapshot", json!({})).await;
    let c = &r["result"]["coverage"];
    assert_eq!(c["estimated"], true, "{c}");
    assert_eq!(c["sample_interval_bytes"], 512 * 1024);
    assert!(
        c["hint"]
            .as_str()
            .unwrap()
            .starts_with("Tracking started just now"),
        "{c}"
    );

    let mut held = Vec::with_capacity(BLOCKS);
    hold(&mut held);
    let r = ws.call("1", "debug/memory_snapshot", json!({})).await;
    let c = &r["result"]["coverage"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    let attributed = n("attributed_bytes");
    // 64 MiB at one sample per 512 KiB: ~128 samples, so the estimate is within a few
    // standard deviations (about 5.7 MiB each) of the truth.
    let truth = (BLOCKS * BLOCK) as u64;
    assert!(
        attributed.abs_diff(truth) < 5 * n("sampling_error_bytes"),
        "{attributed} B estimated for {truth} B: {c}"
    );
    let expected_error = ((attributed as f64) * (512.0 * 1024.0)).sqrt() as u64;
    assert_eq!(n("sampling_error_bytes"), expected_error, "{c}");
    let hint = c["hint"].as_str().unwrap();
    assert!(hint.contains("% of the heap ("), "{hint}");
    assert!(
        hint.contains("sizes are sampled estimates (±")
            && hint.contains("switch to exact for a short session for exact bytes"),
        "{hint}"
    );
    assert!(r["result"]["note"].is_null(), "{r}");
    drop(black_box(held));
    s.stop().await;
}
