//! Sampled mode with the tracker as this process's global allocator: the estimates of
//! known sites land within statistical bounds, small-block sites are not missed, frees of
//! unsampled blocks change nothing and freeing everything brings a site back to 0.
//!
//! The bounds are ≥ 4 standard deviations of the estimator (worked out at each assert);
//! a failure beyond them means the estimator is biased, not unlucky.

use std::hint::black_box;

use heapwatch_tracker::{self as memory, GroupBy, Mode, Snapshot, Statistic, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

#[path = "support/serial.rs"]
mod serial;
use serial::serial;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn sampled(interval: u64) -> TrackingConfig {
    TrackingConfig {
        mode: Mode::Sampled,
        frames: 16,
        sample_interval_bytes: interval,
        seed: None,
    }
}

/// Block sizes adding up to exactly `total`: mostly 16 B..8 KiB, every 100th 256 KiB.
fn mixed_sizes(total: u64) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = total;
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = if sizes.len() % 100 == 99 {
            256 * KIB
        } else {
            16 + x % (8 * KIB - 16)
        };
        let size = size.min(left);
        sizes.push(size as usize);
        left -= size;
    }
    sizes
}

#[inline(never)]
fn hold_mixed(sizes: &[usize], into: &mut Vec<Vec<u8>>) {
    for &size in sizes {
        into.push(black_box(Vec::with_capacity(size)));
    }
}

/// Each 16-byte block must be its own allocation, hence the boxes.
#[allow(clippy::vec_box)]
#[inline(never)]
fn hold_tiny(blocks: usize, into: &mut Vec<Box<[u8; 16]>>) {
    for i in 0..blocks {
        into.push(black_box(Box::new([i as u8; 16])));
    }
}

/// The site row of `function` (a function of this file), if any.
fn site<'a>(rows: &'a [Statistic], function: &str) -> Option<&'a Statistic> {
    let prefix = format!("tracker_sampled::{function} (");
    rows.iter()
        .find(|r| r.traceback.first().is_some_and(|t| t.starts_with(&prefix)))
}

fn site_of(snap: &Snapshot, function: &str) -> Option<Statistic> {
    site(&snap.statistics(GroupBy::Site, 1000), function).cloned()
}

fn assert_within(estimate: u64, truth: u64, fraction: f64, what: &str) {
    let error = (estimate as f64 - truth as f64) / truth as f64;
    assert!(
        error.abs() <= fraction,
        "{what}: estimate {estimate} vs truth {truth} ({:+.1}%, bound ±{:.0}%)",
        error * 100.0,
        fraction * 100.0
    );
}

#[test]
fn mixed_100_mib_at_64_kib_is_within_10_percent_and_unsampled_frees_change_nothing() {
    let _serial = serial();
    let sizes = mixed_sizes(100 * MIB);
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(sizes.len());
    assert_eq!(memory::start(sampled(64 * KIB)), Ok(true));
    let status = memory::status();
    assert_eq!(status.sample_interval_bytes, Some(64 * KIB));
    hold_mixed(&sizes, &mut held);

    let snap = memory::take_snapshot();
    assert!(snap.estimated);
    let row = site_of(&snap, "hold_mixed").expect("hold_mixed sampled");
    // Var(estimate) ≤ Σ S·R = R · 100 MiB: σ ≤ 2.5% of 100 MiB, so ±10% is > 4σ.
    assert_within(row.size_bytes, 100 * MIB, 0.10, "100 MiB mixed at 64 KiB");

    // Free every block that was not sampled: the site does not move at all.
    let (tracked, untracked): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        held.drain(..).partition(|v| memory::is_tracked(v.as_ptr()));
    assert!(!tracked.is_empty() && !untracked.is_empty());
    assert!(memory::tracked_blocks() >= tracked.len());
    drop(untracked);
    let after = site_of(&memory::take_snapshot(), "hold_mixed").expect("still there");
    assert_eq!((after.size_bytes, after.count), (row.size_bytes, row.count));

    // Free the sampled ones too: the estimate returns to exactly 0.
    drop(tracked);
    let empty = memory::take_snapshot();
    assert!(site_of(&empty, "hold_mixed").is_none());
    let diff = empty.compare_to(&snap, GroupBy::Site, 1000);
    let gone = site(&diff, "hold_mixed").expect("in the diff");
    assert_eq!((gone.size_bytes, gone.count), (0, 0));
    assert_eq!(gone.size_diff_bytes, -(row.size_bytes as i64));
    memory::stop();
}

#[test]
fn at_512_kib_mixed_is_within_35_percent_and_tiny_blocks_are_not_missed() {
    let _serial = serial();
    let sizes = mixed_sizes(100 * MIB);
    let tiny_blocks = (10 * MIB / 16) as usize;
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(sizes.len());
    let mut tiny: Vec<Box<[u8; 16]>> = Vec::with_capacity(tiny_blocks);
    assert_eq!(memory::start(sampled(512 * KIB)), Ok(true));
    hold_mixed(&sizes, &mut held);
    hold_tiny(tiny_blocks, &mut tiny);

    let snap = memory::take_snapshot();
    let rows = snap.statistics(GroupBy::Site, 1000);
    let mixed = site(&rows, "hold_mixed").expect("hold_mixed sampled");
    // σ ≤ sqrt(512 KiB · 100 MiB) = 7.1% of 100 MiB: ±35% is ~5σ.
    assert_within(
        mixed.size_bytes,
        100 * MIB,
        0.35,
        "100 MiB mixed at 512 KiB",
    );

    // 10 MiB of 16-byte blocks: Poisson(20) samples, each standing for ≈ 512 KiB.
    // Missing the site entirely has probability e^-20. The estimate is sane: between
    // 5 and 45 samples' worth (P < 2e-5 outside).
    let t = site(&rows, "hold_tiny").expect("a 10 MiB site of 16-byte blocks is seen");
    assert!(
        t.size_bytes >= 10 * MIB / 4 && t.size_bytes <= 10 * MIB * 9 / 4,
        "{t:?}"
    );
    // Counts follow the bytes: every sample of a 16-byte block weighs the same.
    let per_sample = t.size_bytes as f64 / t.count as f64;
    assert!((per_sample - 16.0).abs() < 0.01, "{t:?}");

    drop(held);
    drop(tiny);
    let empty = memory::take_snapshot();
    assert!(site_of(&empty, "hold_mixed").is_none());
    assert!(site_of(&empty, "hold_tiny").is_none());
    memory::stop();
}

#[test]
fn restart_with_another_interval_and_mode_works() {
    let _serial = serial();
    assert_eq!(memory::start(sampled(4 * KIB)), Ok(true));
    assert_eq!(memory::status().sample_interval_bytes, Some(4 * KIB));
    memory::stop();
    let exact = TrackingConfig {
        mode: Mode::Exact,
        ..sampled(4 * KIB)
    };
    assert_eq!(memory::start(exact), Ok(true));
    let held = black_box(vec![7u8; 1000]);
    let snap = memory::take_snapshot();
    assert!(!snap.estimated);
    assert!(snap.stack_count() >= 1);
    assert!(snap.total_bytes() >= 1000);
    memory::stop();
    let off = memory::take_snapshot();
    assert_eq!((off.stack_count(), off.estimated), (0, false));
    assert!(off.taken_at.is_some());
    drop(held);
}
