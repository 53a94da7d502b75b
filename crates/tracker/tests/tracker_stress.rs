//! Eight threads allocating, growing, shrinking and freeing (some blocks freed on another
//! thread) while the main thread takes snapshots in a loop, in both modes: no deadlock,
//! and afterwards the per-site numbers (exact mode) equal what the threads really hold.
//!
//! Work is counted in operations, not seconds, so a slow machine only makes it slower.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use heapwatch_tracker::{self as memory, GroupBy, Mode, Statistic, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

#[path = "support/serial.rs"]
mod serial;
use serial::serial;

const THREADS: usize = 8;
const OPS_PER_THREAD: usize = 20_000;
/// Snapshots the main thread takes before any worker passes its halfway point.
const SNAPSHOTS_MIDWAY: usize = 5;
/// Blocks a thread holds at most before it frees instead of allocating.
const MAX_HELD: usize = 1_500;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Site {
    Alloc,
    Grow,
    Shrink,
}

struct Block {
    data: Vec<u8>,
    site: Site,
}

#[inline(never)]
fn stress_alloc(size: usize) -> Vec<u8> {
    black_box(Vec::with_capacity(size))
}

#[inline(never)]
fn stress_grow(v: &mut Vec<u8>, to: usize) {
    v.reserve_exact(to);
}

#[inline(never)]
fn stress_shrink(v: &mut Vec<u8>, to: usize) {
    v.shrink_to(to);
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

fn size(rng: &mut Rng) -> usize {
    // Mostly small, sometimes large: 1 B..4 KiB, 1 in 50 up to 256 KiB.
    if rng.next(50) == 0 {
        1 + rng.next(256 * 1024)
    } else {
        1 + rng.next(4096)
    }
}

fn worker(
    id: usize,
    to_next: mpsc::Sender<Block>,
    from_prev: mpsc::Receiver<Block>,
    allocations: Arc<AtomicUsize>,
    snapshots: Arc<AtomicUsize>,
) -> Vec<Block> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let mut held: Vec<Block> = Vec::with_capacity(MAX_HELD + 64);
    let mut allocs = 0usize;
    for op in 0..OPS_PER_THREAD {
        if op == OPS_PER_THREAD / 2 {
            // Halfway, wait until the main thread has taken a few snapshots: snapshots
            // then surely overlap the workload, however the scheduler runs the threads.
            while snapshots.load(Ordering::Relaxed) < SNAPSHOTS_MIDWAY {
                std::thread::yield_now();
            }
        }
        let pick = rng.next(100);
        if held.is_empty() || (pick < 40 && held.len() < MAX_HELD) {
            held.push(Block {
                data: stress_alloc(size(&mut rng)),
                site: Site::Alloc,
            });
            allocs += 1;
        } else if pick < 55 {
            let i = rng.next(held.len());
            let b = &mut held[i];
            let before = b.data.capacity();
            stress_grow(&mut b.data, before + 1 + rng.next(8192));
            if b.data.capacity() != before {
                b.site = Site::Grow;
                allocs += 1;
            }
        } else if pick < 65 {
            let i = rng.next(held.len());
            let b = &mut held[i];
            let before = b.data.capacity();
            if before > 1 {
                stress_shrink(&mut b.data, 1 + rng.next(before - 1));
                if b.data.capacity() != before {
                    b.site = Site::Shrink;
                    allocs += 1;
                }
            }
        } else if pick < 90 {
            let i = rng.next(held.len());
            drop(held.swap_remove(i));
        } else {
            let i = rng.next(held.len());
            // The receiver is alive until every sender is gone, so this cannot fail.
            to_next
                .send(held.swap_remove(i))
                .expect("neighbour still receiving");
        }
        // Blocks from the neighbour: free half here (a cross-thread free), keep half.
        while let Ok(b) = from_prev.try_recv() {
            if rng.next(2) == 0 && held.len() < MAX_HELD {
                held.push(b);
            } else {
                drop(b);
            }
        }
    }
    drop(to_next);
    // Keep whatever is still in flight once the neighbour is done.
    held.extend(from_prev.iter());
    allocations.fetch_add(allocs, Ordering::Relaxed);
    held
}

fn row<'a>(rows: &'a [Statistic], function: &str) -> Option<&'a Statistic> {
    let prefix = format!("tracker_stress::{function} (");
    rows.iter()
        .find(|r| r.traceback.first().is_some_and(|t| t.starts_with(&prefix)))
}

/// Runs the workload with snapshots in a loop; returns what the threads still hold.
fn run(config: TrackingConfig) -> (Vec<Block>, usize) {
    assert_eq!(memory::start(config), Ok(true));
    let allocations = Arc::new(AtomicUsize::new(0));
    let taken = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..THREADS {
        let (tx, rx) = mpsc::channel::<Block>();
        senders.push(Some(tx));
        receivers.push(Some(rx));
    }
    let mut handles = Vec::new();
    for id in 0..THREADS {
        let to_next = senders[(id + 1) % THREADS].take().expect("one sender each");
        let from_prev = receivers[id].take().expect("one receiver each");
        let allocations = Arc::clone(&allocations);
        let taken = Arc::clone(&taken);
        handles.push(std::thread::spawn(move || {
            worker(id, to_next, from_prev, allocations, taken)
        }));
    }
    let mut snapshots = 0;
    // At least SNAPSHOTS_MIDWAY rounds (the workers wait for them), then until all finish.
    while snapshots < SNAPSHOTS_MIDWAY || !handles.iter().all(|h| h.is_finished()) {
        let snap = memory::take_snapshot();
        let totals = memory::totals();
        assert!(totals.peak_bytes >= totals.current_bytes);
        assert!(snap.stack_count() <= memory::MAX_STACKS + 1);
        if snapshots == 2 {
            // One symbolized report mid-run, while the threads keep allocating: grouping
            // neither loses nor invents bytes.
            let rows = snap.statistics(GroupBy::Site, usize::MAX);
            let sum: u64 = rows.iter().map(|r| r.size_bytes).sum();
            assert_eq!(sum, snap.total_bytes());
        }
        snapshots += 1;
        taken.store(snapshots, Ordering::Relaxed);
    }
    let mut held = Vec::new();
    for h in handles {
        held.extend(h.join().expect("worker panicked"));
    }
    (held, allocations.load(Ordering::Relaxed))
}

fn expected(held: &[Block], site: Site) -> (u64, u64) {
    held.iter()
        .filter(|b| b.site == site)
        .fold((0, 0), |(bytes, n), b| {
            (bytes + b.data.capacity() as u64, n + 1)
        })
}

#[test]
fn exact_mode_survives_eight_threads_and_matches_what_is_held() {
    let _serial = serial();
    let before = memory::totals();
    let (held, allocations) = run(TrackingConfig {
        mode: Mode::Exact,
        frames: 24,
        sample_interval_bytes: 512 * 1024,
        seed: None,
    });
    let snap = memory::take_snapshot();
    // Every tracked live block is in the snapshot exactly once.
    assert_eq!(snap.total_count(), memory::tracked_blocks() as u64);
    let rows = snap.statistics(GroupBy::Site, 1000);
    let mut site_bytes = 0;
    let mut site_blocks = 0;
    for (function, site) in [
        ("stress_alloc", Site::Alloc),
        ("stress_grow", Site::Grow),
        ("stress_shrink", Site::Shrink),
    ] {
        let (bytes, blocks) = expected(&held, site);
        let got = row(&rows, function).map_or((0, 0), |r| (r.size_bytes, r.count));
        assert_eq!(got, (bytes, blocks), "{function}");
        site_bytes += bytes;
        site_blocks += blocks;
    }
    assert!(site_blocks > 100, "the workload holds blocks at the end");
    let totals = memory::totals();
    assert!(totals.current_bytes >= before.current_bytes + site_bytes);
    assert!(totals.live_blocks >= before.live_blocks + site_blocks);
    assert!(totals.total_allocations >= before.total_allocations + allocations as u64);
    assert!(totals.peak_bytes >= totals.current_bytes);
    assert_eq!(totals.dropped_stacks, 0);

    drop(held);
    let empty = memory::take_snapshot().statistics(GroupBy::Site, 1000);
    for function in ["stress_alloc", "stress_grow", "stress_shrink"] {
        assert!(
            row(&empty, function).is_none(),
            "{function} after freeing all"
        );
    }
    memory::stop();
}

#[test]
fn sampled_mode_survives_eight_threads_and_returns_to_zero() {
    let _serial = serial();
    let (held, _) = run(TrackingConfig {
        mode: Mode::Sampled,
        frames: 24,
        sample_interval_bytes: 16 * 1024,
        seed: None,
    });
    let snap = memory::take_snapshot();
    assert!(snap.estimated);
    let rows = snap.statistics(GroupBy::Site, 1000);
    // Held: thousands of blocks, megabytes: at 16 KiB the alloc site cannot be missed.
    let (bytes, _) = expected(&held, Site::Alloc);
    assert!(bytes > 1024 * 1024);
    let alloc = row(&rows, "stress_alloc").expect("stress_alloc sampled");
    assert!(alloc.size_bytes > 0 && alloc.count > 0);
    drop(held);
    let empty = memory::take_snapshot().statistics(GroupBy::Site, 1000);
    for function in ["stress_alloc", "stress_grow", "stress_shrink"] {
        assert!(
            row(&empty, function).is_none(),
            "{function} after freeing all"
        );
    }
    memory::stop();
}
