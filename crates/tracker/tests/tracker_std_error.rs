//! The standard error a row reports is the spread its estimate really has: over many
//! seeded sampling sessions of one fixed workload, the standard deviation of a site's
//! estimate matches the root mean square of the standard errors reported for it (within
//! ±25%), for a statistics row (its bytes) and a compare row (its change).

#[path = "support/serial.rs"]
mod serial;

use heapwatch_tracker::{self as memory, GroupBy, Mode, Order, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

/// Block sizes the site cycles through (mean 1,085 bytes).
const SIZES: [usize; 5] = [64, 200, 700, 1500, 2947];
const RUNS: u64 = 150;

/// Allocates about `bytes` in blocks cycling through [`SIZES`], into `out`.
#[inline(never)]
fn hold(out: &mut Vec<Vec<u8>>, bytes: usize) {
    let mut left = bytes;
    let mut i = 0;
    while left > 0 {
        let size = SIZES[i % SIZES.len()].min(left);
        out.push(Vec::with_capacity(size));
        left -= size;
        i += 1;
    }
}

fn site_row(rows: &[memory::Statistic]) -> &memory::Statistic {
    rows.iter()
        .find(|r| r.traceback.first().is_some_and(|t| t.contains("hold")))
        .unwrap_or_else(|| panic!("no row for `hold`: {rows:#?}"))
}

/// (mean, standard deviation) of `xs`.
fn spread(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

fn rms(xs: &[f64]) -> f64 {
    (xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64).sqrt()
}

#[test]
fn reported_standard_errors_match_the_observed_spread() {
    let _turn = serial::serial();
    let (mut size_est, mut size_se) = (Vec::new(), Vec::new());
    let (mut diff_est, mut diff_se) = (Vec::new(), Vec::new());
    for seed in 1..=RUNS {
        memory::start(TrackingConfig {
            mode: Mode::Sampled,
            frames: 16,
            sample_interval_bytes: 256 * 1024,
            seed: Some(seed),
        })
        .expect("tracking starts");
        let mut held = Vec::new();
        hold(&mut held, 8 << 20);
        let before = memory::take_snapshot();
        let row = site_row(&before.statistics(GroupBy::Site, 10)).clone();
        size_est.push(row.size_bytes as f64);
        size_se.push(row.evidence.std_error_bytes);
        // Free every other block, then hold 4 MiB more: the true change is +0.
        let mut i = 0;
        held.retain(|_| {
            i += 1;
            i % 2 == 0
        });
        hold(&mut held, 4 << 20);
        let after = memory::take_snapshot();
        let rows = after.compare_ordered(&before, GroupBy::Site, Order::Change, 10);
        let row = site_row(&rows);
        diff_est.push(row.size_diff_bytes as f64);
        diff_se.push(row.evidence.std_error_bytes);
        drop(held);
        memory::stop();
    }
    let (mean, sd) = spread(&size_est);
    let reported = rms(&size_se);
    eprintln!("statistics: mean {mean:.0}, observed sd {sd:.0}, reported {reported:.0}");
    let truth = (8 << 20) as f64;
    assert!(
        (mean - truth).abs() < 4.0 * sd / (RUNS as f64).sqrt(),
        "unbiased: mean {mean} vs {truth} (sd {sd})"
    );
    assert!(
        (0.75..=1.25).contains(&(reported / sd)),
        "statistics: reported {reported:.0} vs observed {sd:.0}"
    );
    let (mean, sd) = spread(&diff_est);
    let reported = rms(&diff_se);
    eprintln!("compare: mean {mean:.0}, observed sd {sd:.0}, reported {reported:.0}");
    assert!(
        mean.abs() < 4.0 * sd / (RUNS as f64).sqrt(),
        "compare unbiased: mean {mean} (sd {sd})"
    );
    assert!(
        (0.75..=1.25).contains(&(reported / sd)),
        "compare: reported {reported:.0} vs observed {sd:.0}"
    );
}
