//! Poisson sampling by bytes and the weights that make the estimates unbiased.
//!
//! Sampling points fall on the stream of allocated bytes as a Poisson process of rate
//! 1/R (R = `sample_interval_bytes`). Each thread keeps a countdown to its next point,
//! drawn from an exponential distribution, `-ln(U)·R`, with a per-thread xorshift
//! generator. A block of S bytes is sampled when the point falls inside it, with
//! probability p = 1 − exp(−S/R); the process is memoryless, so after a sampled block a
//! fresh draw starts at the block's end and the sampled blocks are exactly a Poisson
//! thinning. Weighting each sampled block by w = 1/p makes Σ S·w and Σ w unbiased
//! estimates of the site's bytes and blocks (jemalloc and Go scale the same way).
//!
//! Weights are turned into integers once ([`weigh`]): bytes rounded to whole bytes and
//! counts in 1/65536 units. The same (S, R) always gives the same integers, so removing a
//! block subtracts exactly what adding it added and totals never drift.
//!
//! With a seed (`TrackingConfig::seed`), each thread's generator starts from the seed and
//! the order in which threads first draw in the session (0 for the first): a program that
//! makes the same allocations in the same order on each thread samples the same blocks
//! again. Without one, from a process-wide counter and the thread's stack address.
//!
//! The thread-locals are const-initialised `Cell`s of integers: no destructor, no
//! allocation, safe to touch from any allocation.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Counts are kept in 1/65536 units: fine enough that rounding a weight costs < 0.002%
/// of one block, coarse enough that 2^48 blocks still fit in a u64.
pub(crate) const COUNT_ONE: u64 = 1 << 16;

/// The mean interval the countdowns are drawn with (set by `recorder::start`).
static INTERVAL: AtomicU64 = AtomicU64::new(512 * 1024);
/// Bumped at every start so threads redraw countdowns drawn with an old interval.
static EPOCH: AtomicU32 = AtomicU32::new(0);
/// Seeds distinct per-thread generators.
static SEEDS: AtomicU64 = AtomicU64::new(0x2545_F491_4F6C_DD1D);
/// The session's seed (meaningful when `SEEDED` is set).
static SEED: AtomicU64 = AtomicU64::new(0);
static SEEDED: AtomicBool = AtomicBool::new(false);
/// Bumped at every start: a thread whose generator was seeded in another session reseeds.
static SEED_EPOCH: AtomicU32 = AtomicU32::new(1);
/// Threads that have drawn in this session so far (each seeded one takes the next).
static THREADS_SEEDED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Bytes left before this thread's next sampling point (floor of the real distance).
    static COUNTDOWN: Cell<u64> = const { Cell::new(0) };
    /// xorshift64* state; 0 means not seeded yet.
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// The EPOCH the countdown was drawn in; 0 means never.
    static DRAWN_IN: Cell<u32> = const { Cell::new(0) };
    /// The SEED_EPOCH the generator was seeded in; 0 means never.
    static SEEDED_IN: Cell<u32> = const { Cell::new(0) };
}

/// Sets the interval and the seed (`None`: unseeded) for a new tracking session; threads
/// redraw and reseed lazily.
pub(crate) fn configure(interval: u64, seed: Option<u64>) {
    INTERVAL.store(interval, Relaxed);
    SEED.store(seed.unwrap_or(0), Relaxed);
    SEEDED.store(seed.is_some(), Relaxed);
    THREADS_SEEDED.store(0, Relaxed);
    let next_seed = SEED_EPOCH.load(Relaxed).wrapping_add(1).max(1);
    SEED_EPOCH.store(next_seed, Relaxed);
    // Skip 0 so a thread that never drew (DRAWN_IN = 0) always redraws.
    let next = EPOCH.load(Relaxed).wrapping_add(1).max(1);
    EPOCH.store(next, Relaxed);
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn next_random() -> u64 {
    let mut x = RNG.get();
    let epoch = SEED_EPOCH.load(Relaxed);
    if x == 0 || SEEDED_IN.get() != epoch {
        SEEDED_IN.set(epoch);
        x = if SEEDED.load(Relaxed) {
            let ordinal = THREADS_SEEDED.fetch_add(1, Relaxed);
            splitmix(SEED.load(Relaxed) ^ splitmix(ordinal)) | 1
        } else if x == 0 {
            let local = &x as *const u64 as u64;
            splitmix(SEEDS.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed) ^ local) | 1
        } else {
            x
        };
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    RNG.set(x);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A distance to the next sampling point: floor(−ln(U)·R), U uniform in (0, 1].
fn draw(interval: u64) -> u64 {
    // 53 random bits, shifted to (0, 1]: never 0, so the logarithm is finite (≤ 36.8).
    // At U = 1 it may come out a hair below 0, which the cast truncates to 0; the signed
    // cast is one instruction and saturates at i64::MAX, which no countdown reaches.
    (neg_ln_unit((next_random() >> 11) + 1) * interval as f64) as i64 as u64
}

/// −ln(x / 2^53) for an integer x in [1, 2^53], within 1e-14 (absolute: a distance off
/// by 1e-14 · R bytes): the binary exponent from the leading zeros, then ln of the
/// mantissa m ∈ [1, 2) from a table of 128 points and five terms of ln(1 + r),
/// |r| < 1/256. It replaces `f64::ln` (libm's `log`, a call and its error handling): a draw
/// is made for every sample.
#[inline]
fn neg_ln_unit(x: u64) -> f64 {
    debug_assert!((1..=1 << 53).contains(&x));
    let lz = x.leading_zeros();
    // The 52 bits after the leading one (two shifts: lz + 1 is 64 when x is 1).
    let frac = (x << lz << 1) >> 12;
    let m = f64::from_bits(ONE_BITS | frac);
    let i = (frac >> (52 - LN_TABLE_LOG2)) as usize;
    let (inv, ln_c) = LN_TABLE[i];
    // m · inv is within 1/256 of 1; ln(m) = ln(m · inv) + ln(1 / inv).
    let r = m * inv - 1.0;
    // r − r²/2 + r³/3 − r⁴/4 + r⁵/5, grouped so the multiplies do not wait in one chain.
    let r2 = r * r;
    let ln_1p = (r - 0.5 * r2) + r2 * r * ((1.0 / 3.0 - 0.25 * r) + 0.2 * r2);
    // x = m · 2^(63 − lz), so −ln(x / 2^53) = (lz − 10) · ln 2 − ln m.
    f64::from(lz - 10) * std::f64::consts::LN_2 - (ln_c + ln_1p)
}

const ONE_BITS: u64 = 0x3FF0_0000_0000_0000;
const LN_TABLE_LOG2: u32 = 7;

/// For each of the 128 intervals [1 + i/128, 1 + (i+1)/128): (1/c, ln c) with c the
/// interval's midpoint, ln c taken of the 1/c actually stored so the pair is consistent.
/// Worked out at compile time ([`ln_series`]).
const LN_TABLE: [(f64, f64); 1 << LN_TABLE_LOG2] = {
    let mut table = [(0.0, 0.0); 1 << LN_TABLE_LOG2];
    let n = table.len();
    let mut i = 0;
    while i < n {
        let c = 1.0 + (i as f64 + 0.5) / n as f64;
        let inv = 1.0 / c;
        table[i] = (inv, -ln_series(inv));
        i += 1;
    }
    table
};

/// ln(y) for y in [1/2, 2] by 2·atanh((y − 1)/(y + 1)), summed until the terms vanish (a
/// `const fn`: `f64::ln` cannot run at compile time). |s| ≤ 1/3, so 40 terms reach far
/// below an f64's precision.
const fn ln_series(y: f64) -> f64 {
    let s = (y - 1.0) / (y + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 80.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum
}

/// A fresh distance to the next sampling point at the session's interval, for a
/// countdown kept elsewhere (the allocator keeps one in each thread's counter slot). By
/// memorylessness, drawing afresh at any moment is exactly as good as continuing an old
/// draw of the same interval.
pub(crate) fn next_distance() -> i64 {
    draw(INTERVAL.load(Relaxed)) as i64
}

/// Advances this thread's countdown by a block of `size` bytes; true if the block holds
/// a sampling point.
#[inline]
pub(crate) fn should_sample(size: usize) -> bool {
    let epoch = EPOCH.load(Relaxed);
    let interval = INTERVAL.load(Relaxed);
    if DRAWN_IN.get() != epoch {
        DRAWN_IN.set(epoch);
        COUNTDOWN.set(draw(interval));
    }
    let left = COUNTDOWN.get();
    let size = size as u64;
    // The point at real distance x lies in the block iff x < S iff floor(x) < S.
    if size > left {
        COUNTDOWN.set(draw(interval));
        true
    } else {
        COUNTDOWN.set(left - size);
        false
    }
}

/// The integer (estimated bytes, estimated count × [`COUNT_ONE`]) one recorded block of
/// `size` bytes stands for. `interval` is `None` in exact mode (weight 1).
pub(crate) fn weigh(size: u64, interval: Option<u64>) -> (u64, u64) {
    match interval {
        None => (size, COUNT_ONE),
        Some(r) => {
            let s = size.max(1) as f64;
            // p = 1 − exp(−S/R), computed with expm1 so small S/R keeps its precision.
            let p = -(-s / r as f64).exp_m1();
            let w = 1.0 / p;
            (
                (s * w).round() as u64,
                (w * COUNT_ONE as f64).round() as u64,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_one_for_huge_blocks_and_r_over_s_for_tiny_ones() {
        assert_eq!(weigh(100, None), (100, COUNT_ONE));
        let (bytes, count) = weigh(1 << 30, Some(512 * 1024));
        assert_eq!((bytes, count), (1 << 30, COUNT_ONE));
        let (bytes, count) = weigh(16, Some(512 * 1024));
        // w = 1/(1 - exp(-16/524288)) = 32768.5 (to 5 digits)
        assert_eq!(bytes, 524_296);
        assert_eq!(count, (32_768.5 * COUNT_ONE as f64).round() as u64);
    }

    #[test]
    fn sampling_rate_matches_the_interval() {
        configure(4096, None);
        let mut hits = 0u64;
        let n = 1_000_000u64;
        for _ in 0..n {
            if should_sample(64) {
                hits += 1;
            }
        }
        // p = 1 - exp(-64/4096) = 0.015504; expected 15,504 hits, sd ≈ 123 (6 sd = 740).
        let expected = n as f64 * -(-64.0f64 / 4096.0).exp_m1();
        assert!(
            (hits as f64 - expected).abs() < 740.0,
            "{hits} vs {expected}"
        );
    }

    #[test]
    fn a_seed_repeats_the_draws_and_another_seed_does_not() {
        let run = |seed| {
            configure(4096, Some(seed));
            (0..10_000).map(|_| should_sample(64)).collect::<Vec<_>>()
        };
        let a = run(7);
        assert!(a.iter().filter(|&&s| s).count() > 50, "some samples");
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
    }

    #[test]
    fn the_logarithm_matches_libm_across_the_whole_range() {
        let unit = 1.0 / (1u64 << 53) as f64;
        let check = |x: u64| {
            let want = -((x as f64) * unit).ln();
            let got = neg_ln_unit(x);
            let err = (got - want).abs();
            assert!(err <= 1e-14, "x {x}: {got} vs {want}");
        };
        for x in [
            1,
            2,
            3,
            1 << 20,
            (1 << 52) - 1,
            1 << 52,
            (1 << 53) - 1,
            1 << 53,
        ] {
            check(x);
        }
        // Every table interval at every exponent, and a spread of random points.
        for e in 0..53u32 {
            for i in 0..128u64 {
                let base = 1u64 << e;
                check(base + (base * i) / 128);
            }
        }
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            r = splitmix(r);
            check((r >> 11) + 1);
        }
    }
}
