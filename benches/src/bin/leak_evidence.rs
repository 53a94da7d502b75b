//! Leak evidence against churn (issue 17): how often the leak-suspects ordering ranks a
//! small leak first among heavy churn, and how often it flags a site when there is no
//! leak. The workload is `crates/tracker/tests/support/churn.rs` (1.8 GB of churn a
//! virtual minute over a ~30 MiB live set; the leak is 1 MiB a minute of 256-byte
//! blocks), sampled at 512 KiB with a seed per trial.
//!
//! Usage: `leak_evidence [trials]` (default 10). Prints one line per trial and compare,
//! then a summary; BENCHMARKS.md records a run.

#[path = "../../../crates/tracker/tests/support/churn.rs"]
mod churn;

use heapwatch_tracker::{self as memory, Mode, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

fn config(mode: Mode, seed: u64) -> TrackingConfig {
    TrackingConfig {
        mode,
        frames: 32,
        sample_interval_bytes: 512 * 1024,
        seed: Some(seed),
    }
}

fn main() {
    let trials: u64 = std::env::args()
        .nth(1)
        .map_or(10, |a| a.parse().expect("trials: a number"));
    let checks = [2.0, 10.0];
    // (mode, leak) → per check: trials with the leak first, trials with any suspect.
    let mut first = [[0u64; 2]; 3];
    let mut flagged = [[0u64; 2]; 3];
    // Trials where the leak was first by absolute change (tracemalloc's order).
    let mut first_by_change = [[0u64; 2]; 3];
    let runs = [
        ("sampled", Mode::Sampled, true),
        ("sampled", Mode::Sampled, false),
        ("exact", Mode::Exact, true),
    ];
    for (k, (name, mode, leak)) in runs.iter().enumerate() {
        let n = if *mode == Mode::Exact {
            trials.min(3)
        } else {
            trials
        };
        for t in 1..=n {
            let seed = 1000 + t;
            let started = std::time::Instant::now();
            let out = churn::trial(config(*mode, seed), seed, *leak, 2.0, &checks);
            for (c, o) in out.iter().enumerate() {
                if o.leak_rank == Some(1) {
                    first[k][c] += 1;
                }
                if o.change_rank == Some(1) {
                    first_by_change[k][c] += 1;
                }
                if !o.suspects.is_empty() {
                    flagged[k][c] += 1;
                }
                let top = o.rows.first();
                println!(
                    "{name} leak={leak} seed={seed} minutes={} leak_rank={:?} change_rank={:?} suspects={:?} top={:?} ({:.1} s)",
                    o.minutes,
                    o.leak_rank,
                    o.change_rank,
                    o.suspects,
                    top.map(|(s, d, e)| (s, d, e.samples, e.retention.map(|r| r.leak_score))),
                    started.elapsed().as_secs_f64(),
                );
            }
        }
        for (c, minutes) in checks.iter().enumerate() {
            println!(
                "summary {name} leak={leak} after {minutes} min: leak first in {}/{n} (by absolute change: {}/{n}), a suspect flagged in {}/{n}",
                first[k][c], first_by_change[k][c], flagged[k][c]
            );
        }
    }
}
