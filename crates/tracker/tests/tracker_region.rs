//! Recorded blocks served from the tracker's own region, with the tracker as this
//! process's global allocator: a block that `realloc` moves between the region and
//! `System` memory keeps exact totals and site bytes; a region block freed while sampling,
//! while off, and during a later session of either mode is counted exactly and never
//! counted against the new session; and when one area's span of a class is full, recorded
//! blocks spill to `System` memory and are still found when freed.
//!
//! Sampling at a 1-byte interval records every block; blocks of ≥ 48 bytes then weigh
//! exactly 1 (1 − e^−48 rounds to 1), so the estimates are exact byte counts.

use std::hint::black_box;

use heapwatch_tracker::{self as memory, GroupBy, Mode, Statistic, Totals, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

#[path = "support/serial.rs"]
mod serial;
use serial::{in_quiet_window, serial};

fn config(mode: Mode) -> TrackingConfig {
    TrackingConfig {
        mode,
        frames: 16,
        sample_interval_bytes: 1,
        seed: None,
    }
}

/// The site row of `function` (a function of this file), if any.
fn site(function: &str) -> Option<Statistic> {
    let prefix = format!("tracker_region::{function} (");
    memory::take_snapshot()
        .statistics(GroupBy::Function, 1000)
        .into_iter()
        .find(|r| r.traceback.first().is_some_and(|t| t.starts_with(&prefix)))
}

/// (bytes, blocks) of `function`'s site, 0 when it has none.
fn site_bytes(function: &str) -> (u64, u64) {
    site(function).map_or((0, 0), |r| (r.size_bytes, r.count))
}

#[inline(never)]
fn make_small() -> Vec<u8> {
    black_box(Vec::with_capacity(100))
}

#[inline(never)]
fn grow_big(v: &mut Vec<u8>) {
    v.reserve_exact(200_000 - v.len());
    black_box(v.as_ptr());
}

#[inline(never)]
fn shrink_small(v: &mut Vec<u8>) {
    v.shrink_to(64);
    black_box(v.as_ptr());
}

/// How the always-on totals moved from `before` to now: (bytes, live blocks).
fn moved(before: &Totals) -> (i64, i64) {
    let now = memory::totals();
    (
        now.current_bytes as i64 - before.current_bytes as i64,
        now.live_blocks as i64 - before.live_blocks as i64,
    )
}

/// Runs `op` and checks the totals moved by exactly `want` (bytes, live blocks).
fn moves_by(what: &str, want: (i64, i64), op: impl FnOnce()) -> Result<(), String> {
    let t = memory::totals();
    op();
    let got = moved(&t);
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: totals moved by {got:?}, want {want:?}"))
    }
}

/// One block from the region (100 B) to System memory (200,000 B) and back (64 B), its
/// data kept: the totals move by exactly the size changes, the site rows follow the block.
fn realloc_round_trip() -> Result<(), String> {
    let mut v = Vec::new();
    moves_by("new", (100, 1), || v = make_small())?;
    v.extend_from_slice(&[7u8; 40]);
    let small = v.as_ptr();
    if !memory::is_tracked(small) {
        return Err("the new block has no record".into());
    }
    moves_by("grown", (200_000 - 100, 0), || grow_big(&mut v))?;
    let big = v.as_ptr();
    if !memory::is_tracked(big) || (big != small && memory::is_tracked(small)) {
        return Err("the record did not follow the block out of the region".into());
    }
    if v != [7u8; 40] {
        return Err("contents lost growing".into());
    }
    let rows = (site_bytes("grow_big"), site_bytes("make_small"));
    if rows != ((200_000, 1), (0, 0)) {
        return Err(format!("grown: grow_big and make_small rows {rows:?}"));
    }
    moves_by("shrunk", (64 - 200_000, 0), || shrink_small(&mut v))?;
    if v != [7u8; 40] || !memory::is_tracked(v.as_ptr()) {
        return Err("contents or record lost shrinking".into());
    }
    let rows = (site_bytes("shrink_small"), site_bytes("grow_big"));
    if rows != ((64, 1), (0, 0)) {
        return Err(format!("shrunk: shrink_small and grow_big rows {rows:?}"));
    }
    moves_by("freed", (-64, -1), || drop(v))?;
    if site_bytes("shrink_small") != (0, 0) {
        return Err("the freed block is still attributed".into());
    }
    Ok(())
}

#[test]
fn realloc_moves_a_block_between_the_region_and_system_memory_with_exact_counts() {
    let _serial = serial();
    for mode in [Mode::Exact, Mode::Sampled] {
        assert_eq!(memory::start(config(mode)), Ok(true));
        in_quiet_window(realloc_round_trip);
        memory::stop();
    }
}

#[inline(never)]
fn make_blocks(n: usize, into: &mut Vec<Vec<u8>>) {
    for _ in 0..n {
        into.push(black_box(Vec::with_capacity(96)));
    }
}

#[inline(never)]
fn make_later() -> Vec<u8> {
    black_box(Vec::with_capacity(80))
}

#[test]
fn a_region_block_is_freed_exactly_while_sampling_off_and_in_later_sessions() {
    let _serial = serial();
    assert_eq!(memory::start(config(Mode::Sampled)), Ok(true));
    let mut blocks = Vec::with_capacity(4);
    make_blocks(4, &mut blocks);
    assert!(blocks.iter().all(|b| memory::is_tracked(b.as_ptr())));
    assert_eq!(site_bytes("make_blocks").0, 4 * 96);

    // Freed while sampling: the record ends.
    let t = memory::totals();
    drop(blocks.pop());
    assert_eq!(moved(&t), (-96, -1));
    assert_eq!(site_bytes("make_blocks").0, 3 * 96);

    // Freed while off: counted, nothing else to do.
    memory::stop();
    let t = memory::totals();
    drop(blocks.pop());
    assert_eq!(moved(&t), (-96, -1));
    assert_eq!(memory::tracked_blocks(), 0);
    // Off after a session that used the region: allocations still work and count.
    let t = memory::totals();
    let plain = black_box(vec![1u8; 96]);
    assert_eq!(moved(&t), (96, 1));
    assert!(!memory::is_tracked(plain.as_ptr()));
    drop(plain);

    // Freed during an exact session that started after: not one of its blocks.
    assert_eq!(memory::start(config(Mode::Exact)), Ok(true));
    let later = make_later();
    assert!(memory::is_tracked(later.as_ptr()));
    assert!(!memory::is_tracked(blocks[0].as_ptr()));
    let t = memory::totals();
    drop(blocks.pop());
    assert_eq!(moved(&t), (-96, -1));
    assert_eq!(site_bytes("make_later"), (80, 1));
    assert_eq!(site_bytes("make_blocks"), (0, 0));
    memory::stop();

    // And during a sampled session again; then the exact session's block, while off.
    assert_eq!(memory::start(config(Mode::Sampled)), Ok(true));
    let t = memory::totals();
    drop(blocks.pop());
    assert_eq!(moved(&t), (-96, -1));
    assert_eq!(site_bytes("make_later"), (0, 0));
    memory::stop();
    let t = memory::totals();
    drop(later);
    assert_eq!(moved(&t), (-80, -1));
}

/// Each block must be its own allocation, hence the boxes.
#[allow(clippy::vec_box)]
#[inline(never)]
fn make_many(n: usize, into: &mut Vec<Box<[u64; 6]>>) {
    for i in 0..n {
        into.push(black_box(Box::new([i as u64; 6])));
    }
}

#[test]
fn recorded_blocks_spill_to_system_memory_when_a_span_is_full_and_are_still_found() {
    let _serial = serial();
    // The 64-byte class holds 262,144 blocks per area: one thread overfills its area's.
    const N: usize = 300_000;
    assert_eq!(memory::start(config(Mode::Sampled)), Ok(true));
    let mut many = Vec::with_capacity(N);
    let t = memory::totals();
    make_many(N, &mut many);
    assert_eq!(moved(&t), (48 * N as i64, N as i64));
    assert_eq!(site_bytes("make_many"), (48 * N as u64, N as u64));
    assert!(memory::is_tracked(many[0].as_ptr().cast()));
    assert!(memory::is_tracked(many[N - 1].as_ptr().cast()));
    assert!(many.iter().enumerate().all(|(i, b)| b[5] == i as u64));
    let t = memory::totals();
    many.clear();
    assert_eq!(moved(&t), (-48 * N as i64, -(N as i64)));
    assert_eq!(site_bytes("make_many"), (0, 0));
    memory::stop();
}
