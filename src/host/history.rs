//! One container's memory over time, split into segments at restarts, and the verdict per
//! window.
//!
//! Kept per container in memory: the raw points of the last [`RAW_IN_MEMORY_MS`] (one
//! per poll) and 15-minute averages for [`BUCKETS_IN_MEMORY_MS`] — what the verdicts read;
//! the database keeps them for [`RAW_SPAN_MS`] and [`BUCKET_SPAN_MS`]. A restart — the state leaving `started`, a
//! new version, or memory falling by more than half between two polls — starts a new
//! segment: verdicts use the current segment only, so the fall of a restart never reads as
//! shrinking and the climb after it never reads as a leak of the old process.
//!
//! Windows: 1 h and 6 h from the raw points, 24 h and 7 d from the averages, each judged by
//! the trend's Theil–Sen slope with its consistency checks (`trend::assess`). A container
//! whose last completed segments each grew, cut short by restarts, is a *sawtooth* leak.
//!
//! Time is given, never read: the poller passes each sample's time, so tests (and a
//! simulated 90 days) drive it with any clock.

use std::collections::VecDeque;

use crate::trend::{Assessment, Verdict, assess};

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Raw points are kept this long in the database (48 h for the charts).
pub const RAW_SPAN_MS: i64 = 48 * HOUR_MS;
/// Raw points kept in memory: what the verdicts read (the 6 h window) and some margin;
/// charts of longer spans read the database.
pub const RAW_IN_MEMORY_MS: i64 = 8 * HOUR_MS;
/// The averages' width: 96 a day, so a 7-day slope is 672 points.
pub const BUCKET_MS: i64 = 15 * 60 * 1000;
/// Averages are kept this long (in the database).
pub const BUCKET_SPAN_MS: i64 = 90 * 24 * HOUR_MS;
/// Averages kept in memory: what the verdicts read (the 7 d window) and a day more. Longer
/// charts read the database: 90 days for 107 containers in memory measured 49 MiB of
/// resident memory, against 20 MiB promised for the whole add-on.
pub const BUCKETS_IN_MEMORY_MS: i64 = 8 * 24 * HOUR_MS;
/// Restarts are counted over this span.
pub const RESTART_SPAN_MS: i64 = 7 * 24 * HOUR_MS;

/// A window a verdict is given for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub name: &'static str,
    pub span_ms: i64,
    /// Judged from the 15-minute averages rather than the raw points.
    pub averaged: bool,
}

/// The four windows of a container's verdict.
pub const WINDOWS: [Window; 4] = [
    Window {
        name: "1h",
        span_ms: HOUR_MS,
        averaged: false,
    },
    Window {
        name: "6h",
        span_ms: 6 * HOUR_MS,
        averaged: false,
    },
    Window {
        name: "24h",
        span_ms: 24 * HOUR_MS,
        averaged: true,
    },
    Window {
        name: "7d",
        span_ms: 7 * 24 * HOUR_MS,
        averaged: true,
    },
];

/// One 15-minute average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub start_ms: i64,
    pub sum: f64,
    pub count: u32,
    /// The segment its points belong to (a bucket never spans a restart).
    pub segment: u32,
}

impl Bucket {
    /// The average, as a point at the bucket's middle.
    pub fn point(&self) -> (i64, f64) {
        (
            self.start_ms + BUCKET_MS / 2,
            self.sum / f64::from(self.count),
        )
    }
}

/// Why a new segment began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    StateChange,
    NewVersion,
    MemoryDrop,
}

/// One container's history.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// (time ms, bytes), oldest first, within [`RAW_IN_MEMORY_MS`] of the newest.
    raw: VecDeque<(i64, u64)>,
    buckets: VecDeque<Bucket>,
    /// The current segment's number and start.
    segment: u32,
    segment_start_ms: Option<i64>,
    restarts: VecDeque<i64>,
    state: Option<String>,
    version: Option<String>,
}

/// A container's verdict over one window.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowVerdict {
    pub window: &'static str,
    pub assessment: Assessment,
}

/// Everything said about a container.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub windows: Vec<WindowVerdict>,
    pub verdict: ContainerVerdict,
    /// The fastest growing window's slope, bytes per hour.
    pub slope_bytes_per_hour: Option<f64>,
    /// Since when the current growth shows (the start of the longest growing window, or of
    /// the segment if that is later).
    pub growing_since_ms: Option<i64>,
    /// Restarts in the last 7 days.
    pub restarts_7d: usize,
    /// Grew in each of the last two or more completed segments and grows now: a leak that
    /// restarts keep resetting.
    pub sawtooth: bool,
}

/// What a container's memory does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerVerdict {
    /// Every window with enough data grows, the 6 h one among them, and the current
    /// segment is a day old (so a daily rhythm is ruled out) — or the last completed
    /// segments grew too (a sawtooth leak).
    Growing,
    /// As growing, but the segment is younger than a day: a daily rhythm rises for up to
    /// 12 hours, and cannot be told from a leak before the 24 h window has seen a whole
    /// day. Shown, never announced.
    Rising,
    /// Enough data in some window, and not growing.
    Stable,
    /// Too little data in every window.
    InsufficientData,
}

impl ContainerVerdict {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Growing => "growing",
            Self::Rising => "rising",
            Self::Stable => "stable",
            Self::InsufficientData => "insufficient_data",
        }
    }

    /// Growing or rising: it has a slope worth showing.
    pub fn rises(self) -> bool {
        matches!(self, Self::Growing | Self::Rising)
    }
}

/// How long a segment must be before steady growth is `growing` rather than `rising`.
pub const CONFIRM_AFTER_MS: i64 = 24 * HOUR_MS;

/// What a store keeps of a [`History`] to rebuild it after a restart of the add-on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Saved {
    pub raw: Vec<(i64, u64)>,
    pub buckets: Vec<Bucket>,
    pub restarts: Vec<i64>,
    pub meta: Meta,
}

/// A history's small state: its segment, and the container's last state and version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub segment: u32,
    pub segment_start_ms: Option<i64>,
    pub state: Option<String>,
    pub version: Option<String>,
}

impl History {
    /// A history rebuilt from what a store kept (oldest first; the bounds are applied by
    /// the next [`History::push`]).
    pub fn restore(saved: Saved) -> Self {
        Self {
            raw: saved.raw.into(),
            buckets: saved.buckets.into(),
            restarts: saved.restarts.into(),
            segment: saved.meta.segment,
            segment_start_ms: saved.meta.segment_start_ms,
            state: saved.meta.state,
            version: saved.meta.version,
        }
    }

    /// The segment, state and version, for a store.
    pub fn meta(&self) -> Meta {
        Meta {
            segment: self.segment,
            segment_start_ms: self.segment_start_ms,
            state: self.state.clone(),
            version: self.version.clone(),
        }
    }

    /// The newest 15-minute average (the one a poll just changed).
    pub fn last_bucket(&self) -> Option<Bucket> {
        self.buckets.back().copied()
    }

    /// Records that the container is in `state` at `version` (a poll that found it, with or
    /// without memory figures), and starts a new segment when it restarted.
    pub fn observe(&mut self, at_ms: i64, state: &str, version: Option<&str>) -> Option<Restart> {
        let restarted = match (&self.state, &self.version) {
            (Some(old), _) if old != state && state == "started" => Some(Restart::StateChange),
            (_, Some(old)) if version.is_some_and(|v| v != old) => Some(Restart::NewVersion),
            _ => None,
        };
        self.state = Some(state.to_owned());
        if let Some(v) = version {
            self.version = Some(v.to_owned());
        }
        if let Some(why) = restarted {
            self.new_segment(at_ms);
            return Some(why);
        }
        None
    }

    /// Records one memory sample; a fall to less than half the previous sample starts a
    /// new segment (a restart the Supervisor did not report between two polls).
    pub fn push(&mut self, at_ms: i64, bytes: u64) -> Option<Restart> {
        let mut why = None;
        if let Some(&(last_at, last)) = self.raw.back() {
            if at_ms < last_at {
                return None; // out of order: a clock step back; drop it
            }
            if bytes < last / 2 {
                self.new_segment(at_ms);
                why = Some(Restart::MemoryDrop);
            }
        }
        if self.segment_start_ms.is_none() {
            self.segment_start_ms = Some(at_ms);
        }
        self.raw.push_back((at_ms, bytes));
        while self
            .raw
            .front()
            .is_some_and(|&(t, _)| t < at_ms - RAW_IN_MEMORY_MS)
        {
            self.raw.pop_front();
        }
        let start = at_ms - at_ms.rem_euclid(BUCKET_MS);
        match self.buckets.back_mut() {
            Some(b) if b.start_ms == start && b.segment == self.segment => {
                b.sum += bytes as f64;
                b.count += 1;
            }
            _ => self.buckets.push_back(Bucket {
                start_ms: start,
                sum: bytes as f64,
                count: 1,
                segment: self.segment,
            }),
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start_ms < at_ms - BUCKETS_IN_MEMORY_MS)
        {
            self.buckets.pop_front();
        }
        while self
            .restarts
            .front()
            .is_some_and(|&t| t < at_ms - RESTART_SPAN_MS)
        {
            self.restarts.pop_front();
        }
        why
    }

    fn new_segment(&mut self, at_ms: i64) {
        if self.segment_start_ms.is_some() {
            self.restarts.push_back(at_ms);
        }
        self.segment += 1;
        self.segment_start_ms = Some(at_ms);
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<(i64, u64)> {
        self.raw.back().copied()
    }

    /// The raw points since `from_ms`, oldest first.
    pub fn raw_since(&self, from_ms: i64) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.raw.iter().copied().filter(move |&(t, _)| t >= from_ms)
    }

    /// The 15-minute averages since `from_ms`, oldest first.
    pub fn averages_since(&self, from_ms: i64) -> impl Iterator<Item = &Bucket> + '_ {
        self.buckets.iter().filter(move |b| b.start_ms >= from_ms)
    }

    /// Restart times within the last 7 days.
    pub fn restarts(&self) -> impl Iterator<Item = i64> + '_ {
        self.restarts.iter().copied()
    }

    /// The verdict at `now_ms`, with `poll_ms` between samples and a slope threshold in
    /// bytes per hour.
    pub fn judge(&self, now_ms: i64, poll_ms: i64, threshold_per_hour: f64) -> Judgement {
        let segment_start = self.segment_start_ms.unwrap_or(now_ms);
        // Polls that take longer than the interval (a slow Supervisor) space the points
        // wider: a window expects as many points as the polls really gave.
        let poll_ms = poll_ms.max(self.observed_spacing_ms().unwrap_or(0));
        let mut windows = Vec::with_capacity(WINDOWS.len());
        for w in WINDOWS {
            let from = (now_ms - w.span_ms).max(segment_start);
            let (points, expected): (Vec<(f64, f64)>, usize) = if w.averaged {
                let points = self
                    .averages_since(now_ms - w.span_ms)
                    .filter(|b| b.segment == self.segment)
                    .map(|b| b.point())
                    .map(seconds)
                    .collect();
                (points, (w.span_ms / BUCKET_MS) as usize)
            } else {
                let points = self
                    .raw_since(from)
                    .map(|(t, b)| seconds((t, b as f64)))
                    .collect();
                (points, (w.span_ms / poll_ms.max(1)) as usize)
            };
            let (points, expected) = thin(points, expected);
            windows.push(WindowVerdict {
                window: w.name,
                assessment: assess(&points, expected, threshold_per_hour),
            });
        }
        // Growing only when every window that can speak agrees, the 6 h one at least (or,
        // in a young segment, when the last completed segments grew too: a sawtooth leak):
        // a daily cycle rises for hours (the short windows say growing) but its 24 h
        // window says stable; a step is flat in the newest hour; churn is flat over an
        // hour.
        let judged: Vec<&WindowVerdict> = windows
            .iter()
            .filter(|w| w.assessment.verdict != Verdict::InsufficientData)
            .collect();
        let sawtooth = self.completed_segments_grew(threshold_per_hour);
        let all_grow = !judged.is_empty()
            && judged
                .iter()
                .all(|w| w.assessment.verdict == Verdict::Growing)
            && (sawtooth || judged.iter().any(|w| w.window == "6h"));
        let growing: Vec<&WindowVerdict> = if all_grow { judged } else { Vec::new() };
        let verdict = if !growing.is_empty() {
            if sawtooth || now_ms - segment_start >= CONFIRM_AFTER_MS {
                ContainerVerdict::Growing
            } else {
                ContainerVerdict::Rising
            }
        } else if windows
            .iter()
            .any(|w| w.assessment.verdict != Verdict::InsufficientData)
        {
            ContainerVerdict::Stable
        } else {
            ContainerVerdict::InsufficientData
        };
        let slope_bytes_per_hour = growing
            .iter()
            .filter_map(|w| w.assessment.slope_bytes_per_hour)
            .reduce(f64::max);
        let growing_since_ms = growing.last().map(|w| {
            let span = WINDOWS
                .iter()
                .find(|x| x.name == w.window)
                .map_or(0, |x| x.span_ms);
            (now_ms - span).max(segment_start)
        });
        Judgement {
            sawtooth: verdict == ContainerVerdict::Growing && sawtooth,
            windows,
            verdict,
            slope_bytes_per_hour,
            growing_since_ms,
            restarts_7d: self.restarts.len(),
        }
    }

    /// The mean time between the raw points of the last hour or so (64 points).
    fn observed_spacing_ms(&self) -> Option<i64> {
        let n = self.raw.len().min(64);
        if n < 2 {
            return None;
        }
        let first = self.raw[self.raw.len() - n].0;
        let last = self.raw.back()?.0;
        Some((last - first) / (n as i64 - 1))
    }

    /// Whether the last two completed segments (within the averages) each rose steadily.
    fn completed_segments_grew(&self, threshold_per_hour: f64) -> bool {
        let mut grew = 0;
        for segment in (0..self.segment).rev().take(2) {
            let points: Vec<(f64, f64)> = self
                .buckets
                .iter()
                .filter(|b| b.segment == segment)
                .map(|b| seconds(b.point()))
                .collect();
            // A segment counts when it is long enough to judge on its own.
            let (points, expected) = thin(points, 0);
            if points.len() >= 4
                && assess(&points, expected.max(points.len()), threshold_per_hour).verdict
                    == Verdict::Growing
            {
                grew += 1;
            }
        }
        grew == 2
    }
}

/// Points a window is judged from at most. Theil–Sen and Kendall's tau cost the square of
/// the points: a 7-day window of 672 averages, judged for 107 containers every poll, took
/// ~365 ms of CPU per poll (BENCHMARKS.md). Means of consecutive points keep the shape
/// (and calm the noise) at a thirtieth of the cost.
const MAX_JUDGED_POINTS: usize = 120;

/// `points` as at most [`MAX_JUDGED_POINTS`] means of consecutive runs, with the window's
/// expected count scaled alike.
fn thin(points: Vec<(f64, f64)>, expected: usize) -> (Vec<(f64, f64)>, usize) {
    let run = points
        .len()
        .max(expected)
        .div_ceil(MAX_JUDGED_POINTS)
        .max(1);
    if run == 1 {
        return (points, expected);
    }
    let means = points
        .chunks(run)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect();
    (means, expected.div_ceil(run))
}

fn seconds((t, v): (i64, f64)) -> (f64, f64) {
    (t as f64 / 1000.0, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;
    const POLL: i64 = 60_000;

    /// Feeds `hours` of one-a-minute samples from `f(t_hours)` and judges at the end.
    fn run(hours: f64, f: impl Fn(f64) -> f64) -> (History, Judgement) {
        let mut h = History::default();
        h.observe(0, "started", Some("1.0"));
        let n = (hours * 60.0) as i64;
        for i in 0..=n {
            let t = i * POLL;
            h.push(t, f(t as f64 / HOUR_MS as f64).max(0.0) as u64);
        }
        let j = h.judge(n * POLL, POLL, MIB);
        (h, j)
    }

    fn noise(t: f64) -> f64 {
        // Deterministic jitter of about ±0.5 MiB.
        ((t * 7919.0).sin() * 0.5) * MIB
    }

    #[test]
    fn a_steady_leak_is_rising_then_growing_with_its_slope() {
        let leak = |t| 200.0 * MIB + 30.0 * MIB * t + noise(t);
        let (_, j) = run(8.0, leak);
        assert_eq!(j.verdict, ContainerVerdict::Rising, "{j:?}");
        let (_, j) = run(25.0, leak);
        assert_eq!(j.verdict, ContainerVerdict::Growing, "{j:?}");
        let slope = j.slope_bytes_per_hour.unwrap() / MIB;
        assert!((slope - 30.0).abs() < 30.0 * 0.2, "slope {slope} MiB/h");
        assert!(!j.sawtooth);
    }

    #[test]
    fn the_usual_shapes_are_not_growing() {
        type Shape = Box<dyn Fn(f64) -> f64>;
        let shapes: [(&str, Shape); 4] = [
            ("flat", Box::new(|t| 300.0 * MIB + noise(t))),
            (
                "one step",
                Box::new(|t| if t < 3.0 { 100.0 } else { 180.0 } * MIB + noise(t)),
            ),
            (
                "daily cycle",
                Box::new(|t| (300.0 + 60.0 * (t / 24.0 * std::f64::consts::TAU).sin()) * MIB),
            ),
            (
                "sawtooth churn",
                Box::new(|t| (200.0 + 40.0 * (t * 2.0).fract()) * MIB + noise(t)),
            ),
        ];
        for (name, f) in shapes {
            let (_, j) = run(30.0, f);
            assert_ne!(j.verdict, ContainerVerdict::Growing, "{name}: {j:?}");
        }
    }

    #[test]
    fn a_daily_cycle_is_never_growing_at_any_hour() {
        // At every phase: rising from its trough at the start, or from its middle.
        for phase in [0.0, 6.0, 12.0, 18.0] {
            let mut h = History::default();
            h.observe(0, "started", Some("1.0"));
            for i in 0..=(72 * 60) {
                let t = i * POLL;
                let hours = t as f64 / HOUR_MS as f64 + phase;
                let v = (300.0 + 60.0 * (hours / 24.0 * std::f64::consts::TAU).sin()) * MIB;
                h.push(t, v as u64 + noise(hours).abs() as u64);
                if i % 60 == 0 {
                    let j = h.judge(t, POLL, MIB);
                    assert_ne!(
                        j.verdict,
                        ContainerVerdict::Growing,
                        "phase {phase} h, at {} h: {j:?}",
                        i / 60
                    );
                }
            }
        }
    }

    #[test]
    fn a_restart_starts_a_new_segment_and_the_fall_is_not_shrinking() {
        let mut h = History::default();
        h.observe(0, "started", Some("1"));
        for i in 0..=360 {
            h.push(i * POLL, (400.0 * MIB) as u64);
        }
        // Restarted: memory falls to a quarter, then climbs back as caches fill, then flat.
        let t0 = 361 * POLL;
        assert_eq!(h.push(t0, (100.0 * MIB) as u64), Some(Restart::MemoryDrop));
        for i in 1..=30 {
            h.push(t0 + i * POLL, ((100.0 + 10.0 * i as f64) * MIB) as u64);
        }
        for i in 31..=400 {
            h.push(t0 + i * POLL, (400.0 * MIB) as u64);
        }
        let j = h.judge(t0 + 400 * POLL, POLL, MIB);
        assert_eq!(j.restarts_7d, 1);
        assert_ne!(j.verdict, ContainerVerdict::Growing, "{j:?}");
        assert_eq!(
            h.observe(t0 + 401 * POLL, "started", Some("2")),
            Some(Restart::NewVersion)
        );
        assert_eq!(h.observe(t0 + 402 * POLL, "stopped", Some("2")), None);
        assert_eq!(
            h.observe(t0 + 403 * POLL, "started", Some("2")),
            Some(Restart::StateChange)
        );
        assert_eq!(h.restarts().count(), 3);
    }

    #[test]
    fn a_leak_that_restarts_reset_is_a_sawtooth_leak() {
        // Grows 20 MiB/h for 8 h, is restarted (falls to the start), again and again.
        let (h, j) = run(34.0, |t| {
            (100.0 + 20.0 * (t % 8.0) * 8.0 / 8.0) * MIB + noise(t)
        });
        assert!(h.restarts().count() >= 3, "{:?}", h.restarts().count());
        assert_eq!(j.verdict, ContainerVerdict::Growing, "{j:?}");
        assert!(j.sawtooth, "{j:?}");
    }

    #[test]
    fn windows_need_their_share_of_points() {
        let (_, j) = run(0.2, |t| 100.0 * MIB + 50.0 * MIB * t);
        assert_eq!(j.verdict, ContainerVerdict::InsufficientData, "{j:?}");
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::default();
        h.observe(0, "started", None);
        // 100 days at one sample a minute.
        for i in 0..(100 * 24 * 60) {
            h.push(i * POLL, 1);
        }
        assert!(h.raw.len() <= (RAW_IN_MEMORY_MS / POLL) as usize + 1);
        assert!(h.buckets.len() <= (BUCKETS_IN_MEMORY_MS / BUCKET_MS) as usize + 1);
    }
}
