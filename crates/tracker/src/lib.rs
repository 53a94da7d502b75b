//! The allocation tracker: a global allocator that attributes live heap memory to call
//! sites (a tracemalloc for Rust), plus snapshots, grouped statistics and baselines.
//!
//! Nothing in here knows about JSON, sockets, the CLI or the async runtime (the crate
//! depends on `backtrace`, `libc` and `thiserror` only). The Heapwatch add-on re-exports it
//! as `heapwatch::memory`: its `commands` translate these types for the transports, and
//! its server owns the [`Baselines`] store.
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
//! Lowest layer first; a file imports only its own layer or lower ones and no two files
//! import each other around a loop (`tests/layers.rs` checks both).
//! - base (no tracker imports): `guard` (the reentrancy level), `counters` (always-on
//!   per-thread counters, the peak, the mode the allocator reads), `config` and `error`
//!   (the contract's types), `sampler` (Poisson countdown, integer weights), `filter`
//!   (the counting filter that keeps frees of untracked blocks to one load), `region`
//!   (the address range recorded blocks of up to 64 KiB are served from, so a free tells
//!   them by address), `sysmem`
//!   (`System`-allocated arrays), `sources` (the tracker's own files, trimmed from
//!   tracebacks).
//! - structures: `lock` (the spin lock), `stacks` and `table` (interned stacks, the block
//!   table), `unwind` (the frame-pointer walk), `snapshot` ([`Snapshot`]), `symbolize`
//!   ([`Frame`], resolution, the memo).
//! - recording and reports: `recorder` (the tracking session and the tracked path),
//!   `stats` ([`GroupBy`], [`Statistic`], [`Snapshot::statistics`]), `baselines`,
//!   `checkpoints`.
//! - glue: `allocator` ([`Tracker`]: the `GlobalAlloc` methods), `views` (symbolized
//!   per-stack views and per-site histories for the exporters).
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
//!         seed: Some(42),
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

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

mod allocator;
mod baselines;
mod checkpoints;
mod config;
mod counters;
mod error;
mod evidence;
mod filter;
mod guard;
mod lock;
mod recorder;
mod region;
mod sampler;
mod snapshot;
mod sources;
mod stacks;
mod stats;
mod symbolize;
mod sysmem;
mod table;
mod unwind;
mod views;

pub use allocator::Tracker;
pub use baselines::Baselines;
pub use checkpoints::Checkpoints;
pub use config::{Mode, Totals, TrackingConfig, TrackingStatus};
pub use error::MemoryError;
pub use evidence::{Evidence, Order, Retention, SUSPECT_SCORE};
pub use snapshot::Snapshot;
pub use stats::{GroupBy, Statistic};
pub use symbolize::Frame;
pub use views::{ExportLocation, ExportStack, SiteHistory, site_history};

/// Most distinct stacks tracked at once; further new stacks go to an overflow bucket
/// (see [`Totals::dropped_stacks`]).
pub const MAX_STACKS: usize = stacks::MAX_STACKS;

/// Starts site tracking. Returns `Ok(true)` when this call started it, `Ok(false)` when it
/// already runs with these settings. Only blocks allocated from now on are attributed.
/// `frames` and `sample_interval_bytes` are clamped to their documented ranges (an exact
/// session ignores the interval and the seed).
///
/// # Errors
/// - [`MemoryError::NotInstalled`] when [`Tracker`] is not the global allocator.
/// - [`MemoryError::RunningWithOtherSettings`] when a session with other settings runs:
///   it is kept, never silently reconfigured; [`stop`] it first.
/// - [`MemoryError::OutOfMemory`] when the tracker's tables could not be allocated
///   (tracking stays off).
pub fn start(config: TrackingConfig) -> Result<bool, MemoryError> {
    if !counters::installed() {
        return Err(MemoryError::NotInstalled);
    }
    let heap_now = counters::current_bytes();
    match recorder::start(config) {
        recorder::Started::Now => {
            HEAP_AT_START.store(heap_now, Relaxed);
            Ok(true)
        }
        recorder::Started::AlreadyRunning => Ok(false),
        recorder::Started::OtherSettings(running, requested) => {
            Err(MemoryError::RunningWithOtherSettings { running, requested })
        }
        recorder::Started::OutOfMemory => Err(MemoryError::OutOfMemory),
    }
}

/// The always-on `current_bytes` when the running session started (see
/// [`heap_at_start`]); `u64::MAX` when off.
static HEAP_AT_START: AtomicU64 = AtomicU64::new(u64::MAX);

/// Live heap bytes when the running tracking session started (`None` when off): the most
/// that blocks from before tracking — never attributed — can still hold.
pub fn heap_at_start() -> Option<u64> {
    status()
        .enabled
        .then(|| HEAP_AT_START.load(Relaxed))
        .filter(|&b| b != u64::MAX)
}

/// Runs `f` with recording suppressed on this thread: what it allocates is never a site
/// (frees still end records). For a program's own diagnostics that should not show up in
/// the reports they make, e.g. keeping a copy of a snapshot: `untracked(|| snap.clone())`.
pub fn untracked<R>(f: impl FnOnce() -> R) -> R {
    guard::untracked(f)
}

/// Bytes the symbolizer's memo of resolved frames holds on the heap: the tracker's own
/// memory (allocated untracked, never a site), freed by [`stop`].
pub fn symbol_memo_bytes() -> u64 {
    symbolize::memo_bytes()
}

/// Stops site tracking and frees its tables. The always-on totals keep counting.
/// [`start`] may be called again afterwards.
pub fn stop() {
    recorder::stop();
    HEAP_AT_START.store(u64::MAX, Relaxed);
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
    counters::reset_peak();
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
