//! [`Snapshot`]: per-stack totals at one moment, the compact form both live views and
//! saved baselines use.
//!
//! A snapshot holds, per distinct stack with live tracked blocks, the raw return
//! addresses (unsymbolized), the true depth, a truncated flag, the estimated bytes and
//! count, and the evidence behind them: its live samples grouped by the mark they were
//! born at ([`Cohort`]), and how many samples the stack ever recorded. Never per-block
//! data: a snapshot of a large heap is kilobytes. It is filled by
//! `recorder::snapshot` under the tracker lock; `stats` symbolizes and groups it (its
//! methods on [`Snapshot`] are defined there: this module imports only `sampler`).
//!
//! A snapshot the tracker makes is its own memory: it is made with recording suppressed,
//! so baselines and checkpoints never show up as sites of their own. A copy the program
//! makes (`clone`) is the program's: it is recorded like any allocation, and its site is
//! the caller's line (the tracker's frames are library frames). Run the clone inside
//! [`untracked`](crate::untracked) to keep it the tracker's.

use std::time::SystemTime;

use crate::sampler::COUNT_ONE;

/// A stack's live recorded blocks (samples, in sampled mode) born at the same snapshot
/// mark: born after the snapshot of mark `mark - 1` was taken, and held by every
/// snapshot from mark `mark` on. A stack with more than [`MAX_COHORTS`] marks has its
/// oldest merged into one, named by the newest mark merged (`first` is the oldest).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Cohort {
    /// The oldest birth mark merged into this cohort.
    pub first: u64,
    /// The newest birth mark in this cohort.
    pub mark: u64,
    /// Recorded blocks.
    pub samples: u64,
    /// Their estimated bytes (the same integers the totals add).
    pub bytes: u64,
    /// Their sampling variance: Σ S²(1 − p)/p² (0 in exact mode).
    pub variance: f64,
    /// Σ (estimated bytes)²: what each block weighs as an event (see `stats`).
    pub square: f64,
}

/// A [`Cohort`] as six plain words (the floats by their bits), for buffers allocated
/// from `System`.
pub(crate) type CohortWords = [u64; 6];

impl Cohort {
    /// Adds `newer`'s samples (born at the same or a later mark) to this cohort.
    pub(crate) fn absorb(&mut self, newer: &Cohort) {
        self.mark = self.mark.max(newer.mark);
        self.samples += newer.samples;
        self.bytes = self.bytes.wrapping_add(newer.bytes);
        self.variance += newer.variance;
        self.square += newer.square;
    }

    pub(crate) fn to_words(self) -> CohortWords {
        [
            self.first,
            self.mark,
            self.samples,
            self.bytes,
            self.variance.to_bits(),
            self.square.to_bits(),
        ]
    }

    pub(crate) fn from_words(w: &CohortWords) -> Cohort {
        Cohort {
            first: w[0],
            mark: w[1],
            samples: w[2],
            bytes: w[3],
            variance: f64::from_bits(w[4]),
            square: f64::from_bits(w[5]),
        }
    }
}

/// Most cohorts kept per stack (the oldest are merged beyond this). A sampled stack has
/// at most as many as it has live samples; an exact one, one per snapshot taken while
/// its blocks were born.
pub(crate) const MAX_COHORTS: usize = 64;

/// The totals of one stack in a [`Snapshot`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct StackTotals {
    /// The stack's id in its session (valid only while the session lasts).
    pub id: u16,
    /// Index of its first cohort in `Snapshot::cohorts`, and how many.
    pub cohorts: (u32, u32),
    /// Blocks ever recorded for this stack in the session (samples, in sampled mode).
    pub births: u64,
    /// Σ (estimated bytes)² of those blocks.
    pub born_square: f64,
    /// Index of the first frame in `Snapshot::frames`.
    pub start: u32,
    /// Raw frames recorded (tracker frames included; trimmed at symbolization).
    pub len: u16,
    /// Frames the walk saw in all (up to the walk's cap of 128).
    pub depth: u16,
    /// More frames existed than were recorded.
    pub truncated: bool,
    /// The overflow bucket (stack table was full).
    pub overflow: bool,
    /// Estimated bytes.
    pub bytes: u64,
    /// Estimated blocks, in 1/65536 units.
    pub count: u64,
}

/// Per-stack totals at one moment: the compact form snapshots and baselines share.
///
/// Cheap to clone (kilobytes: one entry per distinct allocation stack, no per-block
/// data). Take one with [`take_snapshot`](crate::take_snapshot); turn it into rows with
/// [`Snapshot::statistics`] or diff two with [`Snapshot::compare_to`] (both defined in
/// `stats`, which reads snapshots; this module does not know statistics). A clone is the
/// program's memory, attributed to the line that clones (inside
/// [`untracked`](crate::untracked) it is not recorded).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// When it was taken; `None` only for `Snapshot::default()`.
    pub taken_at: Option<SystemTime>,
    /// True when the numbers are sampled estimates.
    pub estimated: bool,
    /// When the tracking session this snapshot comes from started (`None` when off).
    pub tracking_since: Option<SystemTime>,
    /// The session's mean sampling interval in bytes (`None` in exact mode and when off).
    pub sample_interval_bytes: Option<u64>,
    pub(crate) stacks: Vec<StackTotals>,
    pub(crate) frames: Vec<u64>,
    pub(crate) cohorts: Vec<Cohort>,
    /// The mark this snapshot was taken at: it holds the blocks born at marks ≤ this.
    pub(crate) mark: u64,
    /// The session's `frames` setting: tracebacks keep this many frames after trimming.
    pub(crate) frame_limit: u32,
}

impl Snapshot {
    /// Bytes this snapshot holds on the heap (its per-stack totals and return addresses):
    /// the tracker's own memory, which is never attributed to a site.
    pub fn heap_bytes(&self) -> u64 {
        (self.stacks.capacity() * std::mem::size_of::<StackTotals>()
            + self.frames.capacity() * std::mem::size_of::<u64>()
            + self.cohorts.capacity() * std::mem::size_of::<Cohort>()) as u64
    }

    /// Distinct stacks with live tracked blocks (the overflow bucket counts as one).
    pub fn stack_count(&self) -> usize {
        self.stacks.len()
    }

    /// Estimated bytes of all tracked live blocks.
    pub fn total_bytes(&self) -> u64 {
        self.stacks
            .iter()
            .map(|s| s.bytes)
            .fold(0, u64::wrapping_add)
    }

    /// Estimated number of tracked live blocks.
    pub fn total_count(&self) -> u64 {
        round_count(
            self.stacks
                .iter()
                .map(|s| s.count)
                .fold(0, u64::wrapping_add),
        )
    }

    /// Stacks whose walk was cut at the frame limit (their true depth was larger).
    pub fn truncated_stacks(&self) -> usize {
        self.stacks.iter().filter(|s| s.truncated).count()
    }

    /// The deepest stack's true depth in frames (counted up to 128; includes the up to
    /// 8 frames of the tracker itself that tracebacks trim).
    pub fn max_depth(&self) -> u32 {
        self.stacks
            .iter()
            .map(|s| u32::from(s.depth))
            .max()
            .unwrap_or(0)
    }

    /// Live recorded blocks behind the totals (samples, in sampled mode).
    pub fn sample_count(&self) -> u64 {
        self.cohorts.iter().map(|c| c.samples).sum()
    }

    /// Whether `old` comes from the same tracking session and was taken before this one,
    /// so that the samples of each can be matched (see `stats`).
    pub fn follows(&self, old: &Snapshot) -> bool {
        self.tracking_since.is_some()
            && self.tracking_since == old.tracking_since
            && old.mark <= self.mark
    }

    pub(crate) fn stack_cohorts(&self, stack: &StackTotals) -> &[Cohort] {
        let (start, len) = stack.cohorts;
        &self.cohorts[start as usize..(start + len) as usize]
    }

    pub(crate) fn raw_frames(&self, stack: &StackTotals) -> &[u64] {
        let start = stack.start as usize;
        &self.frames[start..start + usize::from(stack.len)]
    }
}

/// 1/65536 units to whole blocks, rounding to nearest.
pub(crate) fn round_count(fixed: u64) -> u64 {
    fixed.saturating_add(COUNT_ONE / 2) / COUNT_ONE
}
