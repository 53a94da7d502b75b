//! The plain types of the tracking contract: what [`start`](crate::start) takes
//! ([`TrackingConfig`], [`Mode`]) and what [`status`](crate::status) and
//! [`totals`](crate::totals) report. Nothing here imports another tracker module.

use std::time::SystemTime;

/// How site tracking records blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Poisson sampling by bytes; reported numbers are unbiased estimates.
    Sampled,
    /// Every block is recorded (tracemalloc parity); for short debugging sessions.
    Exact,
}

/// What `start` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackingConfig {
    /// Sampled or exact.
    pub mode: Mode,
    /// Frames kept per stack, 1..=64 (values outside are clamped). Counts physical
    /// frames after the tracker's own are trimmed; functions inlined at a kept frame are
    /// all shown.
    pub frames: u32,
    /// Mean sampling interval in bytes (sampled mode only; clamped to 1..=2^40).
    pub sample_interval_bytes: u64,
    /// Seed of the sampler (sampled mode only): the same seed and the same allocations,
    /// in the same order on each thread, sample the same blocks, so a test or a bug report
    /// repeats exactly. `None`: a fresh seed per thread.
    pub seed: Option<u64>,
}

impl Default for TrackingConfig {
    /// Sampled at 512 KiB with 32 frames, unseeded: the add-on's defaults.
    fn default() -> Self {
        TrackingConfig {
            mode: Mode::Sampled,
            frames: 32,
            sample_interval_bytes: 512 * 1024,
            seed: None,
        }
    }
}

/// Whether site tracking runs, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackingStatus {
    /// Site tracking is on.
    pub enabled: bool,
    /// The running mode (the last one used when off).
    pub mode: Mode,
    /// The running frame limit (the last one used when off).
    pub frames: u32,
    /// `None` in exact mode and when off.
    pub sample_interval_bytes: Option<u64>,
    /// When tracking started; `None` when off.
    pub since: Option<SystemTime>,
    /// The sampler's seed, if the session was started with one.
    pub seed: Option<u64>,
}

/// Always-on allocator totals plus the tracker's own figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Live bytes allocated through the global allocator (requested sizes). An allocation
    /// of up to 64 KiB is counted just before `malloc` is asked for it (so the call costs
    /// less): should `malloc` refuse it, which happens only when the process is out of
    /// memory, it stays counted here and in `live_blocks`.
    pub current_bytes: u64,
    /// Highest `current_bytes` since process start or the last
    /// [`reset_peak`](crate::reset_peak). Threads count in slots of their own and check
    /// the peak every 64 KiB of growth, so a transient high may be missed by less than
    /// 64 KiB per thread allocating at the time; a single allocation larger than that is
    /// always seen.
    pub peak_bytes: u64,
    /// Live blocks.
    pub live_blocks: u64,
    /// Allocations since process start; a `realloc` counts as one allocation.
    pub total_allocations: u64,
    /// Distinct stacks interned by the running session (0 when off).
    pub tracked_stacks: u64,
    /// Recorded blocks attributed to the overflow bucket because
    /// [`MAX_STACKS`](crate::MAX_STACKS) distinct stacks were live (0 when off).
    pub dropped_stacks: u64,
    /// Bytes the tracker itself holds: block table, stack table, address filter (0 when
    /// off). Allocated from `System`, so not part of `current_bytes`.
    pub overhead_bytes: u64,
}
