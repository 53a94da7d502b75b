//! A service's allocation pattern with a small leak planted in it, to measure how soon the
//! leak-suspects ordering finds the leak among heavy churn (issue 17's scenario).
//!
//! One *virtual minute* of the workload allocates what a service churning ~30 MB/s does
//! in a minute (1.8 GB), over a live set of ~30 MiB:
//! - request temporaries: batches of blocks of 32 B–16 KiB (log-uniform), freed when the
//!   request ends (most of the bytes);
//! - a cache of ~16 MiB: entries of 512 B–8 KiB, 32 MiB inserted a minute, a random entry
//!   evicted whenever it is over its size;
//! - a buffer of 4 MiB rebuilt every 5 virtual seconds, grown by appending 64 KiB chunks
//!   (so it reallocates as it doubles), the old one dropped after the new is built;
//! - a set of 2 KiB items whose size swings between 4 and 8 MiB over 7 virtual minutes,
//!   with 1 MiB a minute of its items replaced at random;
//! - with `leak`, 1 MiB a minute of 256-byte blocks that are never freed.
//!
//! Time is compressed: nothing waits, and rates are per virtual minute, so the bytes
//! allocated per sampling interval are those of the real service. The workload draws
//! from its own xorshift generator (seeded), so with a seeded sampler a run repeats
//! exactly. Each part allocates in a function of its own, which is its site.

#![allow(dead_code)] // each includer uses its part

/// Bytes of churn per virtual minute (30 MB/s).
pub const CHURN_PER_MINUTE: u64 = 1_800_000_000;
/// Leaked bytes per virtual minute.
pub const LEAK_PER_MINUTE: u64 = 1 << 20;
/// The size of a leaked block.
pub const LEAK_BLOCK: usize = 256;
/// Ticks per virtual minute (one tick is 0.1 virtual seconds).
const TICKS_PER_MINUTE: u64 = 600;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The cache's size bound.
const CACHE_BYTES: usize = 16 * MIB;
/// Bytes inserted into the cache per virtual minute.
const CACHE_INSERTS_PER_MINUTE: u64 = 32 << 20;
/// The rebuilt buffer's size, and how often it is rebuilt (in ticks).
const BUFFER_BYTES: usize = 4 * MIB;
const BUFFER_EVERY: u64 = 50;
/// The swinging set: item size, middle and amplitude of its size, period, replacement.
const ITEM: usize = 2 * KIB;
const SET_MIDDLE: f64 = 6.0 * MIB as f64;
const SET_SWING: f64 = 2.0 * MIB as f64;
const SET_PERIOD_TICKS: f64 = 7.0 * TICKS_PER_MINUTE as f64;
const SET_REPLACED_PER_MINUTE: u64 = 1 << 20;

/// The function names of the workload's sites, as tracebacks show them.
pub const LEAK_SITE: &str = "plant_leak";

pub struct Workload {
    rng: u64,
    leak: bool,
    tick: u64,
    cache: Vec<Vec<u8>>,
    cache_bytes: usize,
    buffer: Vec<u8>,
    set: Vec<Vec<u8>>,
    /// Bytes owed to each rate-driven part (fractions carried between ticks).
    owed_cache: u64,
    owed_leak: u64,
    owed_replace: u64,
    /// Blocks leaked so far.
    pub leaked_blocks: u64,
}

impl Workload {
    pub fn new(seed: u64, leak: bool) -> Self {
        Workload {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            leak,
            tick: 0,
            cache: Vec::with_capacity(CACHE_BYTES / 512 + 1),
            cache_bytes: 0,
            buffer: Vec::new(),
            set: Vec::with_capacity((SET_MIDDLE + SET_SWING) as usize / ITEM + 1),
            owed_cache: 0,
            owed_leak: 0,
            owed_replace: 0,
            leaked_blocks: 0,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform in [lo, hi).
    fn size(&mut self, lo: usize, hi: usize) -> usize {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        (a + (b - a) * self.unit()).exp() as usize
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Runs `minutes` virtual minutes.
    pub fn run(&mut self, minutes: f64) {
        let ticks = (minutes * TICKS_PER_MINUTE as f64).round() as u64;
        for _ in 0..ticks {
            self.step();
        }
    }

    fn step(&mut self) {
        self.tick += 1;
        // This tick's share of a per-minute rate, exact over whole minutes.
        let t = self.tick;
        let per_tick = |per_minute: u64| {
            per_minute * t / TICKS_PER_MINUTE - per_minute * (t - 1) / TICKS_PER_MINUTE
        };
        self.owed_cache += per_tick(CACHE_INSERTS_PER_MINUTE);
        self.owed_replace += per_tick(SET_REPLACED_PER_MINUTE);
        if self.leak {
            self.owed_leak += per_tick(LEAK_PER_MINUTE);
        }
        let mut spent = 0u64;
        while self.owed_cache > 0 {
            let n = cache_insert(self);
            spent += n as u64;
            self.owed_cache = self.owed_cache.saturating_sub(n as u64);
        }
        while self.owed_leak >= LEAK_BLOCK as u64 {
            plant_leak();
            self.leaked_blocks += 1;
            self.owed_leak -= LEAK_BLOCK as u64;
        }
        if self.tick % BUFFER_EVERY == 1 {
            spent += rebuild_buffer(self) as u64;
        }
        spent += swing_set(self) as u64;
        // The rest of the tick's churn is request temporaries.
        let mut left = per_tick(CHURN_PER_MINUTE).saturating_sub(spent);
        while left > 0 {
            left = left.saturating_sub(request_temporaries(self) as u64);
        }
    }
}

/// One request: a few temporaries, all freed at its end. Returns the bytes allocated.
#[inline(never)]
fn request_temporaries(w: &mut Workload) -> usize {
    let mut held: [Vec<u8>; 8] = Default::default();
    let mut bytes = 0;
    let n = 1 + w.below(8);
    for slot in held.iter_mut().take(n) {
        let size = w.size(32, 16 * KIB);
        *slot = Vec::with_capacity(size);
        bytes += size;
    }
    std::hint::black_box(&held);
    bytes
}

/// One cache entry in, random entries out while over the bound. Returns bytes inserted.
#[inline(never)]
fn cache_insert(w: &mut Workload) -> usize {
    let size = w.size(512, 8 * KIB);
    w.cache.push(Vec::with_capacity(size));
    w.cache_bytes += size;
    while w.cache_bytes > CACHE_BYTES {
        let victim = w.below(w.cache.len());
        let gone = w.cache.swap_remove(victim);
        w.cache_bytes -= gone.capacity();
    }
    size
}

/// The buffer built anew by appending chunks, then swapped in. Returns bytes allocated
/// (the doublings included).
#[inline(never)]
fn rebuild_buffer(w: &mut Workload) -> usize {
    let chunk = [7u8; 64 * KIB];
    let mut fresh = Vec::new();
    let mut allocated = 0;
    while fresh.len() < BUFFER_BYTES {
        let before = fresh.capacity();
        fresh.extend_from_slice(&chunk);
        if fresh.capacity() != before {
            allocated += fresh.capacity();
        }
    }
    w.buffer = fresh;
    allocated
}

/// The set follows its swing and replaces some items. Returns bytes allocated.
#[inline(never)]
fn swing_set(w: &mut Workload) -> usize {
    let phase = w.tick as f64 / SET_PERIOD_TICKS * std::f64::consts::TAU;
    let target = ((SET_MIDDLE + SET_SWING * phase.sin()) / ITEM as f64) as usize;
    let mut allocated = 0;
    while w.owed_replace >= ITEM as u64 && !w.set.is_empty() {
        let i = w.below(w.set.len());
        w.set[i] = Vec::with_capacity(ITEM);
        allocated += ITEM;
        w.owed_replace -= ITEM as u64;
    }
    while w.set.len() < target {
        w.set.push(Vec::with_capacity(ITEM));
        allocated += ITEM;
    }
    while w.set.len() > target {
        let i = w.below(w.set.len());
        w.set.swap_remove(i);
    }
    allocated
}

/// The leak: a 256-byte block nobody frees.
#[inline(never)]
fn plant_leak() {
    let block: Box<[u8; LEAK_BLOCK]> = Box::new([1; LEAK_BLOCK]);
    std::hint::black_box(Box::leak(block));
}

/// What one compare of a trial found.
#[derive(Debug)]
pub struct Outcome {
    /// Virtual minutes since the baseline.
    pub minutes: f64,
    /// The leak's rank in the suspects ordering (1 is first), if it is a row at all.
    pub leak_rank: Option<usize>,
    /// Its rank by absolute change (tracemalloc's order), for comparison.
    pub change_rank: Option<usize>,
    /// The sites flagged as suspects ("function (file:line)").
    pub suspects: Vec<String>,
    /// The rows in suspects order: (site, change in bytes, evidence).
    pub rows: Vec<(String, i64, heapwatch_tracker::Evidence)>,
}

/// One trial: tracking from the start with `config`, `warm_up` virtual minutes, a
/// baseline, then a compare (suspects order) after each of `checks` virtual minutes
/// since the baseline (ascending). Tracking is stopped at the end.
pub fn trial(
    config: heapwatch_tracker::TrackingConfig,
    workload_seed: u64,
    leak: bool,
    warm_up: f64,
    checks: &[f64],
) -> Vec<Outcome> {
    use heapwatch_tracker::{self as memory, GroupBy, Order};
    memory::start(config).expect("tracking starts");
    let mut w = Workload::new(workload_seed, leak);
    w.run(warm_up);
    let baseline = memory::take_snapshot();
    let mut done = 0.0;
    let mut out = Vec::new();
    for &minutes in checks {
        w.run(minutes - done);
        done = minutes;
        let now = memory::take_snapshot();
        let rows = now.compare_ordered(&baseline, GroupBy::Site, Order::Suspects, 20);
        let by_change = now.compare_ordered(&baseline, GroupBy::Site, Order::Change, 20);
        let name =
            |s: &heapwatch_tracker::Statistic| s.traceback.first().cloned().unwrap_or_default();
        let rank = |rows: &[heapwatch_tracker::Statistic]| {
            rows.iter()
                .position(|r| name(r).contains(LEAK_SITE))
                .map(|i| i + 1)
        };
        out.push(Outcome {
            minutes,
            leak_rank: rank(&rows),
            change_rank: rank(&by_change),
            suspects: rows
                .iter()
                .filter(|r| r.evidence.retention.is_some_and(|e| e.suspect))
                .map(name)
                .collect(),
            rows: rows
                .iter()
                .map(|r| (name(r), r.size_diff_bytes, r.evidence))
                .collect(),
        });
    }
    drop(w);
    memory::stop();
    out
}
