//! The evidence behind a row: how many samples its estimate rests on, the estimate's
//! standard error, and — in a compare — what became of the samples since the old
//! snapshot, summed into a leak score (docs/ARCHITECTURE.md, "Leak evidence", derives
//! the rule; docs/API.md states it).
//!
//! A compare of two snapshots of one session matches their samples by birth mark (see
//! `snapshot::Cohort`): a sample of the new snapshot born at a mark the old one had
//! reached was already in the old one. So, per site:
//! - *old retained*: the old snapshot's samples still alive;
//! - *old freed*: the old snapshot's samples freed since (old samples − retained);
//! - *new alive*: samples born since, still alive;
//! - *new freed*: samples born since and already freed (samples ever recorded, now minus
//!   then, minus new alive).
//!
//! The change is exactly (new alive) − (old freed) in estimated bytes: retained samples
//! weigh the same on both sides. Its sampling standard error comes from the weights
//! (Σ S²(1 − p)/p² over the samples that differ). The *leak score* is the change over its
//! spread under churn, where every sampled birth and death in the window counts as an
//! event of its estimated bytes: `Δ / √(Σ new alive b² + Σ old freed b² + 2 Σ new freed b²)`.
//! A leak's samples are only born: the score is √(samples born). A churning site's births
//! and deaths balance and each counts: its score stays near zero however large its
//! estimate wanders.

use crate::snapshot::{Cohort, Snapshot, StackTotals};

/// A leak score at or above this makes a row a *suspect*: with samples of one weight, nine
/// born and none freed (a Poisson count that large from a site whose births and deaths
/// balance is a three-sigma event).
pub const SUSPECT_SCORE: f64 = 3.0;

/// How a compare orders its rows; the top-N cut applies after the ordering and its filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// By the absolute change in bytes, then size (tracemalloc's order). Every row.
    #[default]
    Change,
    /// By growth in bytes, largest first; rows that did not grow are left out.
    Growth,
    /// Leak suspects: by leak score, highest first (rows without one, from a compare
    /// across sessions, after, by growth); rows that did not grow are left out.
    Suspects,
}

/// What the samples behind one row say.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Live recorded blocks behind `size_bytes`: samples in sampled mode, every block in
    /// exact mode.
    pub samples: u64,
    /// Standard error of the row's estimate from the sampling weights: of `size_bytes` in
    /// statistics, of `size_diff_bytes` in a compare (the samples both snapshots share
    /// cancel). 0 in exact mode.
    pub std_error_bytes: f64,
    /// What became of the samples since the old snapshot: compare rows only, when both
    /// snapshots come from one tracking session (`None` otherwise).
    pub retention: Option<Retention>,
}

/// The samples of a compare row, by what became of them since the old snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Retention {
    /// Samples born since the old snapshot and still alive.
    pub new_alive: u64,
    /// Samples born since the old snapshot and already freed.
    pub new_freed: u64,
    /// The old snapshot's samples freed since.
    pub old_freed: u64,
    /// The old snapshot's samples still alive.
    pub old_retained: u64,
    /// The change over its spread under churn (see the module doc); 0 without events.
    pub leak_score: f64,
    /// `leak_score` ≥ [`SUSPECT_SCORE`] and the row grew.
    pub suspect: bool,
}

/// Sums over a group's stacks, for one snapshot (and, when compared, relative to an older
/// one).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Parts {
    /// Live samples, their variance and Σ b².
    samples: u64,
    variance: f64,
    square: f64,
    /// Of those, born after the old snapshot.
    new_alive: u64,
    new_variance: f64,
    new_square: f64,
    /// Born after the old snapshot and freed: count and Σ b².
    new_freed: u64,
    new_freed_square: f64,
}

impl Parts {
    /// One stack of `snap`; `old`: the older snapshot of the same session and its
    /// stack with the same frames, if it had one.
    pub(crate) fn of(
        snap: &Snapshot,
        stack: &StackTotals,
        old: Option<(&Snapshot, Option<&StackTotals>)>,
    ) -> Parts {
        let mut p = Parts::default();
        let old_mark = old.map(|(o, _)| o.mark);
        for c in snap.stack_cohorts(stack) {
            p.add_cohort(c, old_mark);
        }
        if let Some((_, old_stack)) = old {
            let (births, square) = old_stack.map_or((0, 0.0), |s| (s.births, s.born_square));
            p.new_freed = stack
                .births
                .saturating_sub(births)
                .saturating_sub(p.new_alive);
            p.new_freed_square = (stack.born_square - square - p.new_square).max(0.0);
        }
        p
    }

    fn add_cohort(&mut self, c: &Cohort, old_mark: Option<u64>) {
        self.samples += c.samples;
        self.variance += c.variance;
        self.square += c.square;
        if old_mark.is_some_and(|m| c.mark > m) {
            self.new_alive += c.samples;
            self.new_variance += c.variance;
            self.new_square += c.square;
        }
    }

    pub(crate) fn add(&mut self, o: &Parts) {
        self.samples += o.samples;
        self.variance += o.variance;
        self.square += o.square;
        self.new_alive += o.new_alive;
        self.new_variance += o.new_variance;
        self.new_square += o.new_square;
        self.new_freed += o.new_freed;
        self.new_freed_square += o.new_freed_square;
    }

    /// A statistics row's evidence.
    pub(crate) fn alone(&self) -> Evidence {
        Evidence {
            samples: self.samples,
            std_error_bytes: self.variance.max(0.0).sqrt(),
            retention: None,
        }
    }

    /// A compare row's evidence: `self` is the new side (relative to `old`, if `matched`,
    /// i.e. the snapshots are of one session), `old` the old side's own sums, and `diff`
    /// the row's change in bytes.
    pub(crate) fn against(&self, old: &Parts, matched: bool, diff: i64) -> Evidence {
        if !matched {
            // Nothing is shared that is known to cancel: both sides' variance counts.
            return Evidence {
                samples: self.samples,
                std_error_bytes: (self.variance + old.variance).max(0.0).sqrt(),
                retention: None,
            };
        }
        let retained = self.samples - self.new_alive;
        let kept_variance = self.variance - self.new_variance;
        let kept_square = self.square - self.new_square;
        let old_freed_variance = (old.variance - kept_variance).max(0.0);
        let old_freed_square = (old.square - kept_square).max(0.0);
        let events = self.new_square + old_freed_square + 2.0 * self.new_freed_square;
        let leak_score = if events > 0.0 {
            diff as f64 / events.sqrt()
        } else {
            0.0
        };
        Evidence {
            samples: self.samples,
            std_error_bytes: (self.new_variance + old_freed_variance).max(0.0).sqrt(),
            retention: Some(Retention {
                new_alive: self.new_alive,
                new_freed: self.new_freed,
                old_freed: old.samples.saturating_sub(retained),
                old_retained: retained,
                leak_score,
                suspect: diff > 0 && leak_score >= SUSPECT_SCORE,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(samples: u64, new_alive: u64, new_freed: u64, b: f64) -> Parts {
        Parts {
            samples,
            variance: samples as f64 * b * b,
            square: samples as f64 * b * b,
            new_alive,
            new_variance: new_alive as f64 * b * b,
            new_square: new_alive as f64 * b * b,
            new_freed,
            new_freed_square: new_freed as f64 * b * b,
        }
    }

    #[test]
    fn a_leak_scores_the_root_of_its_births_and_churn_scores_low() {
        let b = 512.0 * 1024.0;
        // A leak: 3 samples before, 4 born since, none freed.
        let leak = parts(7, 4, 0, b).against(&parts(3, 0, 0, b), true, (4.0 * b) as i64);
        let r = leak.retention.expect("matched");
        assert_eq!(
            (r.new_alive, r.old_freed, r.old_retained, r.new_freed),
            (4, 0, 3, 0)
        );
        assert!((r.leak_score - 2.0).abs() < 1e-9, "{r:?}");
        assert!(!r.suspect, "four samples are not yet a suspect");
        assert!((leak.std_error_bytes - 2.0 * b).abs() < 1.0);
        // Churn whose estimate wandered up by 8 samples: 20 born and alive, 12 of its 40
        // old ones freed, 50 born and freed.
        let churn = parts(48, 20, 50, b).against(&parts(40, 0, 0, b), true, (8.0 * b) as i64);
        let r = churn.retention.expect("matched");
        assert_eq!((r.new_alive, r.old_freed, r.old_retained), (20, 12, 28));
        // 8 / √(20 + 12 + 100)
        assert!((r.leak_score - 8.0 / 132f64.sqrt()).abs() < 1e-9, "{r:?}");
        // Nine born, none freed: a suspect.
        let nine = parts(9, 9, 0, b).against(&Parts::default(), true, (9.0 * b) as i64);
        assert!(nine.retention.expect("matched").suspect);
    }

    #[test]
    fn across_sessions_there_is_no_retention_and_both_sides_vary() {
        let e = parts(4, 0, 0, 10.0).against(&parts(5, 0, 0, 10.0), false, -10);
        assert_eq!(e.retention, None);
        assert!((e.std_error_bytes - 30.0).abs() < 1e-9);
    }
}
