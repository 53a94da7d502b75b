//! The allocation tracker: a global allocator that attributes live heap memory to call
//! sites (a tracemalloc for Rust), plus snapshots, grouped statistics and baselines.
//!
//! Nothing in here knows about JSON, sockets or the async runtime; `commands` translates
//! these types for the transports, and the server owns the [`Baselines`] store.
//!
//! # What it measures
//! - Always on, once [`Tracker`] is the global allocator: current and peak bytes, live
//!   blocks and total allocations ([`totals`]), counted per thread with a few plain loads
//!   and stores per call. Sizes are the requested sizes (`Layout::size`), not what
//!   malloc rounds them to.
//! - Site tracking, between [`start`] and [`stop`]: which call stacks hold the live
//!   blocks. [`Mode::Sampled`] (the default) records a Poisson sample by bytes and reports
//!   unbiased estimates; [`Mode::Exact`] records every block (tracemalloc parity, slow).
//! - Tracking only sees blocks allocated after it started; blocks from before are never
//!   attributed (their frees are ignored). Frees of blocks allocated outside the Rust
//!   global allocator (C libraries calling `malloc`) are not seen at all.
//!
//! # Module map
//! - `allocator`: the [`Tracker`] `GlobalAlloc`, always-on counters, reentrancy guard.
//! - `recorder`: the tracking session and the tracked path (sample, walk, record).
//! - `sampler`: per-thread Poisson countdown and the integer weights.
//! - `unwind`: the frame-pointer walk with its safety guards.
//! - `filter`: the counting filter that keeps frees of untracked blocks to one load.
//! - `table`, `stacks`: the block table and interned stacks (`System`-allocated).
//! - `snapshot`, `stats`, `symbolize`: copying totals out, grouping, symbolizing.
//! - `baselines`: the bounded named-baseline store.
//! - `checkpoints`: the ring of automatic snapshots the trend compares.
//! - `export`: symbolized per-stack views and per-site histories for the exporters.
//!
//! See docs/ARCHITECTURE.md (tracker section) for the design and its numbers.
//!
//! # Embedding
//! ```
//! use heapwatch_tracker::{self as memory, GroupBy, Mode, TrackingConfig};
//!
//! #[global_allocator]
//! static GLOBAL: memory::Tracker = memory::Tracker::new();
//!
//! #[inline(never)]
//! fn grow(cache: &mut Vec<Vec<u8>>) {
//!     cache.extend((0..64).map(|_| vec![1u8; 16 * 1024]));
//! }
//!
//! fn main() -> Result<(), memory::MemoryError> {
//!     let started = memory::start(TrackingConfig {
//!         mode: Mode::Sampled,
//!         frames: 16,
//!         sample_interval_bytes: 64 * 1024,
//!     })?;
//!     assert!(started);
//!
//!     let mut cache = Vec::new();
//!     let before = memory::take_snapshot();
//!     grow(&mut cache);
//!     let after = memory::take_snapshot();
//!
//!     let totals = memory::totals();
//!     println!("{} bytes live, peak {}", totals.current_bytes, totals.peak_bytes);
//!
//!     // Symbolization: do this off async worker threads (e.g. spawn_blocking).
//!     for row in after.statistics(GroupBy::Site, 10) {
//!         println!("{:>10} B {:>6} blocks  {}", row.size_bytes, row.count, row.traceback[0]);
//!     }
//!     for row in after.compare_to(&before, GroupBy::Function, 10) {
//!         println!("{:+} B  {}", row.size_diff_bytes, row.traceback[0]);
//!     }
//!
//!     let mut baselines = memory::Baselines::default();
//!     baselines.save("after-grow", after)?;
//!     memory::stop();
//!     Ok(())
//! }
//! ```

#![deny(unsafe_code)]

mod allocator;
mod baselines;
mod checkpoints;
mod export;
mod filter;
mod lock;
mod recorder;
mod sampler;
mod snapshot;
mod stacks;
mod stats;
mod symbolize;
mod sysmem;
mod table;
mod unwind;

use std::time::SystemTime;

pub use allocator::Tracker;
pub use baselines::Baselines;
pub use checkpoints::Checkpoints;
pub use export::{ExportFrame, ExportLocation, ExportStack, SiteHistory, site_history};
pub use snapshot::Snapshot;

/// Most distinct stacks tracked at once; further new stacks go to an overflow bucket
/// (see [`Totals::dropped_stacks`]).
pub const MAX_STACKS: usize = stacks::MAX_STACKS;

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
}

/// Always-on allocator totals plus the tracker's own figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Live bytes allocated through the global allocator (requested sizes).
    pub current_bytes: u64,
    /// Highest `current_bytes` since process start or the last [`reset_peak`]. Threads
    /// count in slots of their own and check the peak every 64 KiB of growth, so a
    /// transient high may be missed by less than 64 KiB per thread allocating at the time;
    /// a single allocation larger than that is always seen.
    pub peak_bytes: u64,
    /// Live blocks.
    pub live_blocks: u64,
    /// Allocations since process start; a `realloc` counts as one allocation.
    pub total_allocations: u64,
    /// Distinct stacks interned by the running session (0 when off).
    pub tracked_stacks: u64,
    /// Recorded blocks attributed to the overflow bucket because [`MAX_STACKS`] distinct
    /// stacks were live (0 when off).
    pub dropped_stacks: u64,
    /// Bytes the tracker itself holds: block table, stack table, address filter (0 when
    /// off). Allocated from `System`, so not part of `current_bytes`.
    pub overhead_bytes: u64,
}

/// How statistics group stacks.
///
/// The *site* of a stack is its first frame outside the tracker and the allocation
/// plumbing of std/alloc/core/hashbrown: the line of your code that allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// By site "function (file:line)". A row's traceback is the largest stack of the
    /// group from its site outwards (site first, then callers).
    Site,
    /// By the site's function. Traceback as for `Site`.
    Function,
    /// By the site's file. Traceback as for `Site`.
    File,
    /// By the whole trimmed stack, plumbing frames included; the traceback is that stack.
    Traceback,
}

/// One row of grouped statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statistic {
    /// "function (file:line)" strings, innermost (allocation site) first. Unresolvable
    /// frames read "0x… (unknown)". See [`GroupBy`] for which stack a row shows.
    pub traceback: Vec<String>,
    /// Live bytes (an estimate in sampled mode).
    pub size_bytes: u64,
    /// `size_bytes` minus the old snapshot's (0 from `statistics`).
    pub size_diff_bytes: i64,
    /// Live blocks (an estimate in sampled mode, rounded).
    pub count: u64,
    /// `count` minus the old snapshot's (0 from `statistics`).
    pub count_diff: i64,
}

/// Errors of the tracker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// [`Tracker`] is not this process's `#[global_allocator]`.
    #[error("the heapwatch tracker is not installed as this process's global allocator")]
    NotInstalled,
    /// A new baseline name was given while [`Baselines::MAX`] names are saved.
    #[error("a baseline store holds at most {max} names: {names:?}")]
    BaselinesFull {
        /// [`Baselines::MAX`].
        max: usize,
        /// The saved names, sorted.
        names: Vec<String>,
    },
}

/// Starts site tracking. Returns `Ok(true)` when this call started it, `Ok(false)` when it
/// was already running (the running configuration is kept). Only blocks allocated from
/// now on are attributed. `frames` and `sample_interval_bytes` are clamped to their
/// documented ranges.
///
/// # Errors
/// [`MemoryError::NotInstalled`] when [`Tracker`] is not the global allocator.
pub fn start(config: TrackingConfig) -> Result<bool, MemoryError> {
    if !allocator::installed() {
        return Err(MemoryError::NotInstalled);
    }
    Ok(recorder::start(config))
}

/// Stops site tracking and frees its tables. The always-on totals keep counting.
/// [`start`] may be called again afterwards.
pub fn stop() {
    recorder::stop();
    symbolize::clear_memo();
}

/// The current tracking state.
pub fn status() -> TrackingStatus {
    recorder::status()
}

/// Always-on totals, plus the tracker's own figures while tracking.
pub fn totals() -> Totals {
    recorder::totals()
}

/// Resets the peak to the current bytes; returns the new totals.
pub fn reset_peak() -> Totals {
    allocator::reset_peak();
    totals()
}

/// Copies the per-stack totals (empty, with `taken_at` set and `estimated` false, when
/// tracking is off). Consistent: copied under the tracker lock. Cheap (no symbolization).
pub fn take_snapshot() -> Snapshot {
    recorder::snapshot()
}

/// Whether the block starting at `ptr` has a live tracking record (sampled, or any block
/// in exact mode). A diagnostic for tests and debugging; takes the tracker lock.
pub fn is_tracked(ptr: *const u8) -> bool {
    recorder::is_tracked(ptr as usize)
}

/// Live blocks with a tracking record (table entries) in the running session.
pub fn tracked_blocks() -> usize {
    recorder::tracked_blocks()
}
