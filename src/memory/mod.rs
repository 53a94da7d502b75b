//! The allocation tracker: a global allocator that attributes live heap memory to call
//! sites (a tracemalloc for Rust), plus snapshots, grouped statistics and baselines.
//!
//! Nothing in here knows about JSON, sockets or the async runtime; `commands` translates.
//!
//! CONTRACT (filled in by the tracker work): the public items below are what the rest of
//! the crate codes against. Bodies are placeholders until the tracker lands.

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
    pub mode: Mode,
    /// Frames kept per stack, 1..=64.
    pub frames: u32,
    /// Mean sampling interval in bytes (sampled mode only).
    pub sample_interval_bytes: u64,
}

/// Whether site tracking runs, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackingStatus {
    pub enabled: bool,
    pub mode: Mode,
    pub frames: u32,
    /// `None` in exact mode.
    pub sample_interval_bytes: Option<u64>,
    /// When tracking started; `None` when off.
    pub since: Option<SystemTime>,
}

/// Always-on allocator totals plus the tracker's own figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub current_bytes: u64,
    pub peak_bytes: u64,
    pub live_blocks: u64,
    pub total_allocations: u64,
    pub tracked_stacks: u64,
    pub dropped_stacks: u64,
    pub overhead_bytes: u64,
}

/// How statistics group stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Site,
    Function,
    File,
    Traceback,
}

/// One row of grouped statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statistic {
    /// "function (file:line)" strings, innermost (allocation site) first.
    pub traceback: Vec<String>,
    pub size_bytes: u64,
    pub size_diff_bytes: i64,
    pub count: u64,
    pub count_diff: i64,
}

/// Errors of the tracker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    #[error("the heapwatch tracker is not installed as this process's global allocator")]
    NotInstalled,
    #[error("a baseline store holds at most {max} names: {names:?}")]
    BaselinesFull { max: usize, names: Vec<String> },
}

/// Per-stack totals at one moment: the compact form snapshots and baselines share.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub taken_at: Option<SystemTime>,
    /// True when the numbers are sampled estimates.
    pub estimated: bool,
    // (private fields: per-stack frames, depth, truncated, bytes, count)
}

impl Snapshot {
    /// Symbolized top-`top_n` statistics grouped by `group_by`, largest size first.
    /// Runs symbolization: call it off async worker threads.
    pub fn statistics(&self, group_by: GroupBy, top_n: usize) -> Vec<Statistic> {
        let _ = (group_by, top_n);
        unimplemented!("tracker contract")
    }

    /// tracemalloc's `compare_to`: per group size and count with their differences from
    /// `old`, sorted by absolute size difference, then size.
    pub fn compare_to(&self, old: &Snapshot, group_by: GroupBy, top_n: usize) -> Vec<Statistic> {
        let _ = (old, group_by, top_n);
        unimplemented!("tracker contract")
    }
}

/// Named baselines, at most [`Baselines::MAX`], each a [`Snapshot`].
#[derive(Debug, Default)]
pub struct Baselines {}

impl Baselines {
    pub const MAX: usize = 8;
    /// # Errors
    /// [`MemoryError::BaselinesFull`] when `name` is new and `MAX` names are saved.
    pub fn save(&mut self, name: &str, snapshot: Snapshot) -> Result<(), MemoryError> {
        let _ = (name, snapshot);
        unimplemented!("tracker contract")
    }
    pub fn get(&self, name: &str) -> Option<&Snapshot> {
        let _ = name;
        unimplemented!("tracker contract")
    }
    /// Returns whether `name` existed.
    pub fn remove(&mut self, name: &str) -> bool {
        let _ = name;
        unimplemented!("tracker contract")
    }
    /// Sorted names with when each was taken.
    pub fn list(&self) -> Vec<(String, Option<SystemTime>)> {
        unimplemented!("tracker contract")
    }
}

/// Starts site tracking. Returns `Ok(true)` when this call started it, `Ok(false)` when it
/// was already running (the running configuration is kept).
///
/// # Errors
/// [`MemoryError::NotInstalled`] when [`Tracker`] is not the global allocator.
pub fn start(config: TrackingConfig) -> Result<bool, MemoryError> {
    let _ = config;
    Err(MemoryError::NotInstalled)
}

/// Stops site tracking and frees its tables.
pub fn stop() {}

/// The current tracking state.
pub fn status() -> TrackingStatus {
    TrackingStatus {
        enabled: false,
        mode: Mode::Sampled,
        frames: 32,
        sample_interval_bytes: None,
        since: None,
    }
}

/// Always-on totals.
pub fn totals() -> Totals {
    Totals::default()
}

/// Resets the peak to the current bytes; returns the new totals.
pub fn reset_peak() -> Totals {
    totals()
}

/// Copies the per-stack totals (empty when tracking is off).
pub fn take_snapshot() -> Snapshot {
    Snapshot::default()
}

/// The global allocator wrapper (placeholder until the tracker lands).
pub struct Tracker;
impl Tracker {
    pub const fn new() -> Self {
        Tracker
    }
}
impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}
