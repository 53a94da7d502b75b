//! Snapshot cost at scale, with heapwatch's `Tracker` in exact mode: 1,000,000 live
//! tracked blocks spread over 10,000 distinct stacks, then `take_snapshot` +
//! `statistics(GroupBy::Site, 25)` — cold (first: the symbolizer loads debug info) and
//! warm (repeated: resolved frames are memoised). Also the peak extra memory while doing
//! it and the tracker's metadata bytes per live block.
//!
//! The 10,000 stacks come from generated code: four levels of const-generic functions
//! (10, 100 and 1,000 monomorphized copies, each with 10 call sites), chosen by the
//! stack number's decimal digits, so every stack ends in its own return address — about
//! 11,000 distinct addresses to symbolize, as a real service's heap might have. Each copy
//! uses its parameters in its body so the compiler cannot fold identical copies together.
//!
//! Usage: `snapshot_cost [blocks] [stacks] [warm_repeats]`. Output: `key value` lines.

use std::hint::black_box;
use std::time::Instant;

use heapwatch_bench::{procfs, stats};
use heapwatch_tracker::{self as memory, GroupBy, Mode, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

/// Bytes per block: a small allocation, as most of a service's blocks are.
const BLOCK_BYTES: usize = 32;
/// Frames below the generated levels, so stacks are about 25 frames deep.
const PREFIX_DEPTH: usize = 10;

type Blocks = Vec<Box<[u8]>>;

/// Calls `$f::<…, d>(args)` for the runtime digit `$d` in 0..10: ten distinct call sites.
macro_rules! by_digit {
    ($d:expr => $f:ident :: < $($p:ident),* > ($($a:expr),*)) => {
        match $d {
            0 => black_box($f::<$($p,)* 0>($($a),*)),
            1 => black_box($f::<$($p,)* 1>($($a),*)),
            2 => black_box($f::<$($p,)* 2>($($a),*)),
            3 => black_box($f::<$($p,)* 3>($($a),*)),
            4 => black_box($f::<$($p,)* 4>($($a),*)),
            5 => black_box($f::<$($p,)* 5>($($a),*)),
            6 => black_box($f::<$($p,)* 6>($($a),*)),
            7 => black_box($f::<$($p,)* 7>($($a),*)),
            8 => black_box($f::<$($p,)* 8>($($a),*)),
            _ => black_box($f::<$($p,)* 9>($($a),*)),
        }
    };
}

#[inline(never)]
fn leaf<const K: usize>(n: usize, blocks: &mut Blocks) -> usize {
    for _ in 0..n {
        blocks.push(vec![K as u8; BLOCK_BYTES].into_boxed_slice());
    }
    black_box(K)
}

#[inline(never)]
fn level3<const A: usize, const B: usize, const C: usize>(
    s: usize,
    n: usize,
    blocks: &mut Blocks,
) -> usize {
    let tag = black_box(A * 100 + B * 10 + C);
    by_digit!(s % 10 => leaf::<>(n, blocks)) + tag
}

#[inline(never)]
fn level2<const A: usize, const B: usize>(s: usize, n: usize, blocks: &mut Blocks) -> usize {
    let tag = black_box(A * 10 + B);
    by_digit!((s / 10) % 10 => level3::<A, B>(s, n, blocks)) + tag
}

#[inline(never)]
fn level1<const A: usize>(s: usize, n: usize, blocks: &mut Blocks) -> usize {
    let tag = black_box(A);
    by_digit!((s / 100) % 10 => level2::<A>(s, n, blocks)) + tag
}

/// Allocates `n` blocks from stack number `s` (0..10,000).
#[inline(never)]
fn from_stack(s: usize, n: usize, blocks: &mut Blocks) -> usize {
    by_digit!((s / 1000) % 10 => level1::<>(s, n, blocks))
}

#[inline(never)]
fn descend(depth: usize, work: &mut dyn FnMut()) -> usize {
    if black_box(depth) == 0 {
        work();
        0
    } else {
        black_box(descend(depth - 1, work)) + 1
    }
}

/// One timed snapshot + top-25 statistics.
struct Measured {
    snapshot_ms: f64,
    statistics_ms: f64,
    heap_extra: u64,
    rss_extra: u64,
    rows: usize,
    top: String,
}

fn measure(group_by: GroupBy) -> Measured {
    let before = memory::reset_peak().current_bytes;
    procfs::reset_self_hwm();
    let rss0 = procfs::self_status_bytes("VmRSS").unwrap_or(0);
    let t0 = Instant::now();
    let snap = memory::take_snapshot();
    let t1 = Instant::now();
    let rows = snap.statistics(group_by, 25);
    let t2 = Instant::now();
    let peak = memory::totals().peak_bytes;
    let hwm = procfs::self_status_bytes("VmHWM").unwrap_or(0);
    Measured {
        snapshot_ms: (t1 - t0).as_secs_f64() * 1e3,
        statistics_ms: (t2 - t1).as_secs_f64() * 1e3,
        heap_extra: peak.saturating_sub(before),
        rss_extra: hwm.saturating_sub(rss0),
        rows: rows.len(),
        top: rows
            .first()
            .and_then(|r| r.traceback.first().cloned())
            .unwrap_or_default(),
    }
}

fn print(prefix: &str, m: &Measured) {
    println!("{prefix}_snapshot_ms {:.3}", m.snapshot_ms);
    println!("{prefix}_statistics_ms {:.3}", m.statistics_ms);
    println!("{prefix}_total_ms {:.3}", m.snapshot_ms + m.statistics_ms);
    println!("{prefix}_heap_extra_bytes {}", m.heap_extra);
    println!("{prefix}_rss_extra_bytes {}", m.rss_extra);
    println!("{prefix}_rows {}", m.rows);
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map(|a| a.parse().expect("arguments are integers"))
            .unwrap_or(default)
    };
    let blocks = arg(1, 1_000_000);
    let stacks = arg(2, 10_000).clamp(1, 10_000);
    let warm_repeats = arg(3, 5).max(1);
    let per_stack = blocks / stacks;

    // Allocated before tracking starts: the holder itself is not a tracked block.
    let mut holder: Blocks = Vec::with_capacity(per_stack * stacks);
    memory::start(TrackingConfig {
        mode: Mode::Exact,
        frames: 32,
        sample_interval_bytes: 0,
        seed: None,
    })
    .expect("the tracker is the global allocator");
    let overhead_empty = memory::totals().overhead_bytes;
    let t = Instant::now();
    descend(PREFIX_DEPTH, &mut || {
        for s in 0..stacks {
            from_stack(s, per_stack, &mut holder);
        }
    });
    let fill_ms = t.elapsed().as_secs_f64() * 1e3;
    let totals = memory::totals();
    let tracked = memory::tracked_blocks();
    println!("blocks {tracked}");
    println!("stacks {}", totals.tracked_stacks);
    println!("dropped_stacks {}", totals.dropped_stacks);
    println!("fill_ms {fill_ms:.1}");
    println!("overhead_empty_bytes {overhead_empty}");
    println!("overhead_bytes {}", totals.overhead_bytes);
    println!(
        "metadata_bytes_per_block {:.2}",
        totals.overhead_bytes as f64 / tracked.max(1) as f64
    );
    println!(
        "metadata_marginal_bytes_per_block {:.2}",
        (totals.overhead_bytes - overhead_empty) as f64 / tracked.max(1) as f64
    );

    let cold = measure(GroupBy::Site);
    print("cold", &cold);
    println!("top_site {}", cold.top);
    let warm: Vec<Measured> = (0..warm_repeats).map(|_| measure(GroupBy::Site)).collect();
    let med = |f: fn(&Measured) -> f64| stats::median(&warm.iter().map(f).collect::<Vec<_>>());
    print(
        "warm",
        &Measured {
            snapshot_ms: med(|m| m.snapshot_ms),
            statistics_ms: med(|m| m.statistics_ms),
            heap_extra: med(|m| m.heap_extra as f64) as u64,
            rss_extra: med(|m| m.rss_extra as f64) as u64,
            rows: warm[0].rows,
            top: String::new(),
        },
    );
    // Grouping by whole traceback: 10,000 groups instead of a handful.
    let tb: Vec<Measured> = (0..warm_repeats)
        .map(|_| measure(GroupBy::Traceback))
        .collect();
    let tb_total: Vec<f64> = tb.iter().map(|m| m.snapshot_ms + m.statistics_ms).collect();
    println!("warm_traceback_total_ms {:.3}", stats::median(&tb_total));
    black_box(&holder);
    // Exit without freeing a million tracked blocks one by one.
    std::process::exit(0);
}
