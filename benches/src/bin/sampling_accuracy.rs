//! Sampled-mode accuracy: the relative error of per-site bytes for sites holding 1, 10
//! and 100 MiB, over repeated independent tracking sessions.
//!
//! Each run starts a sampled session, lets three functions allocate their totals in
//! blocks of mixed sizes (16 B to 8 KiB, cycling), reads the per-function estimates from
//! `statistics(GroupBy::Function, …)`, stops tracking and frees everything. A site with
//! no sampled block reads 0 (relative error −100%): that happens, and is counted.
//!
//! Usage: `sampling_accuracy [runs] [interval_bytes,...]` (default 30 runs at 524288).
//! Output: `interval site_bytes estimate` per run and site, one line each.

use std::hint::black_box;

use heapwatch_tracker::{self as memory, GroupBy, Mode, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

const MIB: usize = 1024 * 1024;

/// Block sizes the sites cycle through: mostly small, a few pages (mean ≈ 1.6 KiB).
const SIZES: [usize; 10] = [16, 24, 48, 96, 200, 512, 1024, 2000, 4096, 8192];

type Blocks = Vec<Vec<u8>>;

/// Allocates `total` bytes (to within one block) into `out`, cycling through [`SIZES`].
/// A macro, not a function: the allocation must sit in each site's own frame.
macro_rules! fill {
    ($out:expr, $total:expr) => {{
        let mut left = $total;
        let mut i = 0;
        while left > 0 {
            let size = SIZES[i % SIZES.len()].min(left);
            $out.push(black_box(vec![1u8; size]));
            left -= size;
            i += 1;
        }
    }};
}

#[inline(never)]
fn site_one_mib(out: &mut Blocks) {
    fill!(out, MIB);
}

#[inline(never)]
fn site_ten_mib(out: &mut Blocks) {
    fill!(out, 10 * MIB);
}

#[inline(never)]
fn site_hundred_mib(out: &mut Blocks) {
    fill!(out, 100 * MIB);
}

/// The sites and their true byte counts, as the functions' names read in statistics.
const SITES: [(&str, usize); 3] = [
    ("site_one_mib", MIB),
    ("site_ten_mib", 10 * MIB),
    ("site_hundred_mib", 100 * MIB),
];

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("runs is an integer"))
        .unwrap_or(30);
    let intervals: Vec<u64> = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "524288".into())
        .split(',')
        .map(|x| x.parse().expect("intervals are integers"))
        .collect();
    // Room for every block up front, so the holder never grows while tracking.
    let blocks_needed = 111 * MIB / (SIZES.iter().sum::<usize>() / SIZES.len()) * 2;
    let mut holder: Blocks = Vec::with_capacity(blocks_needed);
    for &interval in &intervals {
        for _ in 0..runs {
            memory::start(TrackingConfig {
                mode: Mode::Sampled,
                frames: 16,
                sample_interval_bytes: interval,
                seed: None,
            })
            .expect("the tracker is the global allocator");
            site_one_mib(&mut holder);
            site_ten_mib(&mut holder);
            site_hundred_mib(&mut holder);
            let rows = memory::take_snapshot().statistics(GroupBy::Function, 200);
            memory::stop();
            holder.clear();
            for (name, truth) in SITES {
                let estimate: u64 = rows
                    .iter()
                    .filter(|r| r.traceback.first().is_some_and(|f| f.contains(name)))
                    .map(|r| r.size_bytes)
                    .sum();
                println!("{interval} {truth} {estimate}");
            }
        }
    }
}
