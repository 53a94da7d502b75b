//! Exact mode with the tracker as this process's global allocator: known sites show
//! exactly the bytes and blocks they hold, frees and baselines move them exactly, the
//! frame-pointer walk sees callers, and the always-on totals move by exact amounts.
//!
//! Tests in this file share the global tracker, so each takes `SERIAL` first.

use std::hint::black_box;

use heapwatch_tracker::{self as memory, GroupBy, Mode, Statistic, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

#[path = "support/serial.rs"]
mod serial;
use serial::{in_quiet_window, serial};

const EXACT: TrackingConfig = TrackingConfig {
    mode: Mode::Exact,
    frames: 32,
    sample_interval_bytes: 512 * 1024,
    seed: None,
};

const PAGE: usize = 4096;
const PAGES: usize = 1000;
const MIB: usize = 1 << 20;
const BIGS: usize = 10;

#[inline(never)]
fn alloc_pages(into: &mut Vec<Vec<u8>>) {
    for _ in 0..PAGES {
        into.push(black_box(vec![0u8; PAGE]));
    }
}

#[inline(never)]
fn alloc_big(into: &mut Vec<Vec<u8>>) {
    for _ in 0..BIGS {
        into.push(black_box(vec![1u8; MIB]));
    }
}

/// The row whose first traceback line is in `function` (a function of this file).
fn row<'a>(rows: &'a [Statistic], function: &str) -> &'a Statistic {
    let prefix = format!("tracker_exact::{function} (");
    let found: Vec<&Statistic> = rows
        .iter()
        .filter(|r| r.traceback.first().is_some_and(|t| t.starts_with(&prefix)))
        .collect();
    assert_eq!(found.len(), 1, "one row for {function} in {rows:#?}");
    found[0]
}

#[test]
fn two_sites_show_exact_bytes_counts_halving_and_baseline_growth() {
    let _serial = serial();
    // Containers allocated before tracking starts are never attributed.
    let mut pages: Vec<Vec<u8>> = Vec::with_capacity(PAGES);
    let mut bigs: Vec<Vec<u8>> = Vec::with_capacity(BIGS);
    assert_eq!(memory::start(EXACT), Ok(true));
    let status = memory::status();
    assert!(status.enabled);
    assert_eq!((status.mode, status.frames), (Mode::Exact, 32));
    assert_eq!(status.sample_interval_bytes, None);
    assert!(status.since.is_some());

    let baseline = memory::take_snapshot();
    assert!(!baseline.estimated);
    alloc_pages(&mut pages);
    alloc_big(&mut bigs);

    let full = memory::take_snapshot();
    let rows = full.statistics(GroupBy::Site, 100);
    let p = row(&rows, "alloc_pages");
    assert_eq!(
        (p.size_bytes, p.count),
        ((PAGES * PAGE) as u64, PAGES as u64)
    );
    assert!(
        p.traceback[0].contains("tracker_exact.rs:"),
        "{:?}",
        p.traceback
    );
    let b = row(&rows, "alloc_big");
    assert_eq!((b.size_bytes, b.count), ((BIGS * MIB) as u64, BIGS as u64));
    // Largest first.
    let pos = |name: &str| rows.iter().position(|r| r.traceback[0].contains(name));
    assert!(pos("alloc_big") < pos("alloc_pages"));

    // Same numbers by function, by file (the file's rows add up) and by traceback.
    let by_function = full.statistics(GroupBy::Function, 100);
    let f = by_function
        .iter()
        .find(|r| r.traceback[0].starts_with("tracker_exact::alloc_pages ("))
        .expect("function row");
    assert_eq!((f.size_bytes, f.count), (p.size_bytes, p.count));
    let by_file = full.statistics(GroupBy::File, 100);
    let file_row = by_file
        .iter()
        .find(|r| r.traceback[0].contains("tracker_exact.rs"))
        .expect("file row");
    assert!(file_row.size_bytes >= p.size_bytes + b.size_bytes);
    assert!(file_row.count >= p.count + b.count);
    let by_trace = full.statistics(GroupBy::Traceback, 1000);
    let (bytes, count) = by_trace
        .iter()
        .filter(|r| {
            r.traceback
                .iter()
                .any(|t| t.starts_with("tracker_exact::alloc_pages ("))
        })
        .fold((0, 0), |(b, c), r| (b + r.size_bytes, c + r.count));
    assert_eq!((bytes, count), (p.size_bytes, p.count));
    // Traceback rows start at the allocation (std plumbing included), then reach the site.
    let page_trace = by_trace
        .iter()
        .find(|r| {
            r.traceback
                .iter()
                .any(|t| t.starts_with("tracker_exact::alloc_pages ("))
        })
        .expect("traceback row");
    for own in [
        "heapwatch::memory",
        "heapwatch_tracker",
        "__rustc::",
        "__rust_alloc",
        "__rg_alloc",
    ] {
        assert!(
            !page_trace.traceback[0].contains(own),
            "{:?}",
            page_trace.traceback
        );
    }

    // Free half of each: exactly half remains.
    pages.truncate(PAGES / 2);
    bigs.truncate(BIGS / 2);
    let half = memory::take_snapshot();
    let rows = half.statistics(GroupBy::Site, 100);
    let p = row(&rows, "alloc_pages");
    assert_eq!(
        (p.size_bytes, p.count),
        ((PAGES / 2 * PAGE) as u64, (PAGES / 2) as u64)
    );
    let b = row(&rows, "alloc_big");
    assert_eq!(
        (b.size_bytes, b.count),
        ((BIGS / 2 * MIB) as u64, (BIGS / 2) as u64)
    );

    // Against the baseline: exactly the growth, sorted by |size diff|.
    let diff = half.compare_to(&baseline, GroupBy::Site, 100);
    let p = row(&diff, "alloc_pages");
    assert_eq!(
        (p.size_diff_bytes, p.count_diff),
        ((PAGES / 2 * PAGE) as i64, (PAGES / 2) as i64)
    );
    let b = row(&diff, "alloc_big");
    assert_eq!(
        (b.size_diff_bytes, b.count_diff),
        ((BIGS / 2 * MIB) as i64, (BIGS / 2) as i64)
    );
    assert_eq!(diff[0].traceback[0], b.traceback[0]);
    // And against the full snapshot: the shrink, by function this time.
    let shrink = half.compare_to(&full, GroupBy::Function, 100);
    let p = row(&shrink, "alloc_pages");
    assert_eq!(p.size_diff_bytes, -((PAGES / 2 * PAGE) as i64));
    assert_eq!(p.count_diff, -((PAGES / 2) as i64));

    // Everything freed: the sites disappear from statistics, and the diff shows them at 0.
    pages.clear();
    bigs.clear();
    let empty = memory::take_snapshot();
    let rows = empty.statistics(GroupBy::Site, 100);
    assert!(!rows.iter().any(|r| r.traceback[0].contains("alloc_pages")));
    let gone = empty.compare_to(&full, GroupBy::Site, 100);
    let p = row(&gone, "alloc_pages");
    assert_eq!((p.size_bytes, p.count), (0, 0));
    assert_eq!(p.size_diff_bytes, -((PAGES * PAGE) as i64));
    memory::stop();
    assert!(!memory::status().enabled);
}

#[inline(never)]
fn allocate_deep() -> Vec<u8> {
    black_box(Vec::with_capacity(12_345))
}

#[inline(never)]
fn level_c() -> Vec<u8> {
    black_box(allocate_deep())
}

#[inline(never)]
fn level_b() -> Vec<u8> {
    black_box(level_c())
}

#[inline(never)]
fn level_a() -> Vec<u8> {
    black_box(level_b())
}

#[test]
fn frame_pointer_walk_sees_callers_several_frames_up() {
    let _serial = serial();
    assert_eq!(memory::start(EXACT), Ok(true));
    let held = level_a();
    let snap = memory::take_snapshot();
    memory::stop();
    let rows = snap.statistics(GroupBy::Site, 100);
    let site = row(&rows, "allocate_deep");
    if std::env::var_os("SHOW").is_some() {
        eprintln!("{rows:#?}\n{:#?}", snap.statistics(GroupBy::Traceback, 3));
    }
    assert_eq!((site.size_bytes, site.count), (12_345, 1));
    let position = |name: &str| {
        let prefix = format!("tracker_exact::{name} (");
        site.traceback
            .iter()
            .position(|t| t.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{name} in {:#?}", site.traceback))
    };
    assert_eq!(position("allocate_deep"), 0);
    assert!(position("allocate_deep") < position("level_c"));
    assert!(position("level_c") < position("level_b"));
    assert!(position("level_b") < position("level_a"));
    drop(held);
}

#[test]
fn frames_limit_keeps_that_many_frames_after_trimming() {
    let _serial = serial();
    let config = TrackingConfig { frames: 2, ..EXACT };
    assert_eq!(memory::start(config), Ok(true));
    let held = level_a();
    let snap = memory::take_snapshot();
    memory::stop();
    let rows = snap.statistics(GroupBy::Traceback, 1000);
    // 2 physical frames from the allocation: the tracker's own never count, so the first
    // frame is std's allocation plumbing, not the tracker's.
    for r in &rows {
        assert!(
            !r.traceback[0].contains("heapwatch::memory"),
            "{:?}",
            r.traceback
        );
        assert!(
            !r.traceback[0].contains("heapwatch_tracker"),
            "{:?}",
            r.traceback
        );
        assert!(!r.traceback[0].contains("__rust"), "{:?}", r.traceback);
    }
    assert!(snap.truncated_stacks() > 0);
    drop(held);
}

const SIZE: u64 = 3 * 1024 * 1024 + 17;

#[inline(never)]
fn check_totals() -> Result<(), String> {
    let reset = memory::reset_peak();
    if reset.peak_bytes != reset.current_bytes {
        return Err(format!("reset_peak: {reset:?}"));
    }
    let t0 = memory::totals();
    let mut v: Vec<u8> = black_box(Vec::with_capacity(SIZE as usize));
    let t1 = memory::totals();
    v.reserve_exact(SIZE as usize + 1000); // realloc: one allocation, same live blocks
    let t2 = memory::totals();
    drop(black_box(v));
    let t3 = memory::totals();
    let got = (
        t1.current_bytes.wrapping_sub(t0.current_bytes),
        t1.live_blocks.wrapping_sub(t0.live_blocks),
        t1.total_allocations.wrapping_sub(t0.total_allocations),
        t1.peak_bytes,
        t2.current_bytes.wrapping_sub(t1.current_bytes),
        t2.live_blocks.wrapping_sub(t1.live_blocks),
        t2.total_allocations.wrapping_sub(t1.total_allocations),
        t2.peak_bytes,
        t3.current_bytes,
        t3.live_blocks,
        t3.total_allocations,
        t3.peak_bytes,
    );
    // realloc is one call: the peak is the new size, never old + new.
    let want = (
        SIZE,
        1,
        1,
        t0.current_bytes + SIZE,
        1000,
        0,
        1,
        t0.current_bytes + SIZE + 1000,
        t0.current_bytes,
        t0.live_blocks,
        t2.total_allocations,
        t2.peak_bytes,
    );
    if got == want {
        Ok(())
    } else {
        Err(format!("got {got:?}\nwant {want:?}"))
    }
}

#[test]
fn totals_move_by_exact_amounts_with_tracking_off_and_on() {
    let _serial = serial();
    assert!(!memory::status().enabled);
    in_quiet_window(check_totals);
    assert_eq!(memory::totals().overhead_bytes, 0);
    assert_eq!(memory::start(EXACT), Ok(true));
    // A second start with the same settings is a no-op; with others it says so and
    // keeps the running configuration.
    assert_eq!(memory::start(EXACT), Ok(false));
    let sampled = TrackingConfig {
        mode: Mode::Sampled,
        ..EXACT
    };
    match memory::start(sampled) {
        Err(memory::MemoryError::RunningWithOtherSettings { running, requested }) => {
            assert_eq!(running.mode, Mode::Exact);
            assert_eq!(requested.mode, Mode::Sampled);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(memory::status().mode, Mode::Exact);
    in_quiet_window(check_totals);
    let t = memory::totals();
    assert!(t.overhead_bytes > 0);
    assert!(t.tracked_stacks > 0);
    assert_eq!(t.dropped_stacks, 0);
    memory::stop();
    assert_eq!(memory::totals().tracked_stacks, 0);
}

#[test]
fn statistic_frames_are_the_traceback_structured() {
    let _serial = serial();
    let mut pages: Vec<Vec<u8>> = Vec::with_capacity(PAGES);
    assert_eq!(memory::start(EXACT), Ok(true));
    alloc_pages(&mut pages);
    let snap = memory::take_snapshot();
    memory::stop();
    for group_by in [GroupBy::Site, GroupBy::Function, GroupBy::Traceback] {
        let rows = snap.statistics(group_by, 1000);
        for r in &rows {
            // Same frames, same order: each traceback line is its frame rendered.
            assert_eq!(r.frames.len(), r.traceback.len(), "{r:#?}");
            for (frame, line) in r.frames.iter().zip(&r.traceback) {
                if frame.file.is_some() || !frame.function.starts_with('<') {
                    assert_eq!(&frame.to_string(), line);
                }
            }
        }
        let site = rows
            .iter()
            .flat_map(|r| r.frames.iter())
            .find(|f| f.function == "tracker_exact::alloc_pages")
            .unwrap_or_else(|| panic!("an alloc_pages frame by {group_by:?} in {rows:#?}"));
        assert!(
            site.file
                .as_deref()
                .is_some_and(|f| f.ends_with("tracker_exact.rs"))
                && site.line.is_some(),
            "{site:?}"
        );
    }
    drop(pages);
}

/// The tracker's own structures are never sites: with a known site live, snapshots,
/// clones made inside `untracked`, eight saved baselines, checkpoints and symbolized
/// reports (memo and debug-info caches included) leave the tracked heap exactly as it was.
#[test]
fn baselines_and_snapshots_add_nothing_to_the_sites_they_report() {
    let _serial = serial();
    let mut pages: Vec<Vec<u8>> = Vec::with_capacity(PAGES);
    assert_eq!(memory::start(EXACT), Ok(true));
    alloc_pages(&mut pages);
    in_quiet_window(|| {
        let before = memory::take_snapshot();
        let mut baselines = memory::Baselines::default();
        let mut checkpoints = memory::untracked(memory::Checkpoints::default);
        for i in 0..memory::Baselines::MAX {
            let snap = memory::take_snapshot();
            // Reports symbolize (the memo and the debug-info caches fill) and clone.
            let _ = snap.statistics(GroupBy::Site, 50);
            let _ = snap.compare_to(&before, GroupBy::Traceback, 50);
            checkpoints.push(memory::untracked(|| snap.clone()));
            baselines
                .save(&format!("b{i}"), snap)
                .map_err(|e| e.to_string())?;
        }
        let kept = memory::untracked(|| baselines.get("b3").cloned());
        let after = memory::take_snapshot();
        let result = check_unchanged(&before, &after);
        drop((baselines, checkpoints, kept));
        result
    });
    let rows = memory::take_snapshot().statistics(GroupBy::Site, 100);
    assert_eq!(
        row(&rows, "alloc_pages").size_bytes,
        (PAGES * PAGE) as u64,
        "{rows:#?}"
    );
    memory::stop();
    drop(pages);
}

/// `black_box` after the clone keeps it from being a tail call: in a release build a tail
/// call would leave this function's frame off the stack, and the copy would be attributed
/// to the line calling it.
#[inline(never)]
fn keep_a_copy(snap: &memory::Snapshot) -> memory::Snapshot {
    black_box(snap.clone())
}

#[inline(never)]
fn make_checkpoints() -> memory::Checkpoints {
    memory::Checkpoints::default()
}

/// Copies the program makes of the tracker's objects are the program's memory: a clone of
/// a snapshot and a checkpoint ring are attributed to the line that made them (not to the
/// tracker's files), byte for byte.
#[test]
fn a_snapshot_the_program_clones_is_attributed_to_the_caller() {
    let _serial = serial();
    let mut pages: Vec<Vec<u8>> = Vec::with_capacity(PAGES);
    assert_eq!(memory::start(EXACT), Ok(true));
    alloc_pages(&mut pages);
    let snap = memory::take_snapshot();
    let copy = keep_a_copy(&snap);
    let ring = make_checkpoints();
    let rows = memory::take_snapshot().statistics(GroupBy::Site, 100);
    assert_eq!(
        row(&rows, "keep_a_copy").size_bytes,
        copy.heap_bytes(),
        "{rows:#?}"
    );
    assert_eq!(
        row(&rows, "make_checkpoints").size_bytes,
        (memory::Checkpoints::MAX * std::mem::size_of::<memory::Snapshot>()) as u64,
        "{rows:#?}"
    );
    for r in &rows {
        let file = r.frames[0].file.as_deref().unwrap_or("");
        assert!(!file.starts_with("crates/tracker/src/"), "{r:#?}");
    }
    drop((copy, ring, snap));
    memory::stop();
    drop(pages);
}

/// `after` holds exactly what `before` held, and no row of it is in the tracker's code.
fn check_unchanged(before: &memory::Snapshot, after: &memory::Snapshot) -> Result<(), String> {
    if (after.total_bytes(), after.total_count()) != (before.total_bytes(), before.total_count()) {
        let grown: Vec<String> = after
            .compare_to(before, GroupBy::Traceback, 10)
            .into_iter()
            .filter(|r| r.size_diff_bytes != 0)
            .map(|r| format!("{:+} B {}", r.size_diff_bytes, r.traceback.join(" <- ")))
            .collect();
        return Err(format!(
            "{} B in {} blocks before, {} B in {} after: {grown:#?}",
            before.total_bytes(),
            before.total_count(),
            after.total_bytes(),
            after.total_count()
        ));
    }
    for r in after.statistics(GroupBy::Traceback, 1000) {
        if r.frames.iter().any(|f| {
            f.file
                .as_deref()
                .is_some_and(|p| p.contains("crates/tracker/src/"))
        }) {
            return Err(format!("a site in the tracker: {:#?}", r.traceback));
        }
    }
    Ok(())
}

/// Blocks above the region's 64 KiB are `System` blocks in the block table of the shard of
/// the thread that allocated them; a free on any other thread must still find that shard.
#[test]
fn big_blocks_freed_on_other_threads_end_their_records() {
    let _serial = serial();
    const BLOCKS: usize = 24;
    memory::start(EXACT).expect("tracking starts");
    let before = memory::tracked_blocks();
    // Each of three threads allocates its blocks (recorded in its own shard); the main
    // thread frees them all.
    let made: Vec<Vec<Vec<u8>>> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                (0..BLOCKS / 3)
                    .map(|_| black_box(vec![7u8; 100 * 1024]))
                    .collect::<Vec<_>>()
            })
            .join()
            .expect("allocating thread")
        })
        .collect();
    let addrs: Vec<*const u8> = made.iter().flatten().map(|b| b.as_ptr()).collect();
    assert!(
        addrs.iter().all(|&a| memory::is_tracked(a)),
        "every big block is recorded"
    );
    assert!(memory::tracked_blocks() >= before + BLOCKS);
    drop(made);
    let still: Vec<_> = addrs.iter().filter(|&&a| memory::is_tracked(a)).collect();
    memory::stop();
    assert!(still.is_empty(), "records left after the frees: {still:?}");
}
