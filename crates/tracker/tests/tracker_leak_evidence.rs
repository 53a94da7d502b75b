//! Leak evidence against churn (issue 17), the short seeded version of the benchmark
//! `benches/src/bin/leak_evidence.rs`: the workload of `support/churn.rs` (1.8 GB of
//! churn a virtual minute over a ~30 MiB live set, and a 1 MiB a minute leak of 256-byte
//! blocks), sampled at 512 KiB with a fixed sampler seed, so each run repeats exactly.

#[path = "support/churn.rs"]
mod churn;
#[path = "support/serial.rs"]
mod serial;

use heapwatch_tracker::{self as memory, Mode, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

fn sampled(seed: u64) -> TrackingConfig {
    TrackingConfig {
        mode: Mode::Sampled,
        frames: 32,
        sample_interval_bytes: 512 * 1024,
        seed: Some(seed),
    }
}

#[test]
fn a_small_leak_leads_the_suspects_after_two_minutes_and_is_flagged_by_ten() {
    let _turn = serial::serial();
    let out = churn::trial(sampled(1), 1, true, 2.0, &[2.0, 10.0]);
    let (two, ten) = (&out[0], &out[1]);
    assert_eq!(two.leak_rank, Some(1), "{two:#?}");
    assert_eq!(ten.leak_rank, Some(1), "{ten:#?}");
    assert_eq!(
        ten.suspects.len(),
        1,
        "only the leak is a suspect: {ten:#?}"
    );
    let leak = ten.rows[0].2.retention.expect("one session");
    assert_eq!(
        (leak.new_freed, leak.old_freed),
        (0, 0),
        "a leak frees nothing: {leak:?}"
    );
    assert!(leak.new_alive >= 9, "{leak:?}");
}

#[test]
fn without_the_leak_no_site_is_a_suspect() {
    let _turn = serial::serial();
    for out in churn::trial(sampled(2), 2, false, 2.0, &[2.0, 10.0]) {
        assert!(out.suspects.is_empty(), "{out:#?}");
        // The cache's wandering estimate shows as churn: it freed samples since the
        // baseline, and its score stays low whatever its change.
        let cache = out.rows.iter().find(|(s, _, _)| s.contains("cache_insert"));
        if let Some((_, _, e)) = cache {
            let r = e.retention.expect("one session");
            assert!(r.old_freed + r.new_freed > 0, "{r:?}");
            assert!(r.leak_score < 2.0, "{r:?}");
        }
    }
}

#[test]
fn the_same_seed_repeats_the_same_estimates() {
    let _turn = serial::serial();
    let a = churn::trial(sampled(3), 3, true, 0.5, &[1.0]);
    let b = churn::trial(sampled(3), 3, true, 0.5, &[1.0]);
    let view = |o: &churn::Outcome| {
        o.rows
            .iter()
            .map(|(s, d, e)| (s.clone(), *d, e.samples))
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&a[0]), view(&b[0]));
    let c = churn::trial(sampled(4), 3, true, 0.5, &[1.0]);
    assert_ne!(
        view(&a[0]),
        view(&c[0]),
        "another seed samples other blocks"
    );
}

#[test]
fn in_exact_mode_the_leak_leads_with_every_block_counted() {
    let _turn = serial::serial();
    let exact = TrackingConfig {
        mode: Mode::Exact,
        ..sampled(0)
    };
    let out = churn::trial(exact, 5, true, 1.0, &[2.0]);
    let o = &out[0];
    assert_eq!(o.leak_rank, Some(1), "{o:#?}");
    let (_, diff, e) = &o.rows[0];
    let r = e.retention.expect("one session");
    // Two virtual minutes: 2 MiB of 256-byte blocks, each counted, none freed.
    assert_eq!(r.new_alive, 2 * 4096);
    assert_eq!(*diff, 2 << 20);
    assert_eq!((r.new_freed, r.old_freed), (0, 0));
    assert_eq!(e.std_error_bytes, 0.0);
}
