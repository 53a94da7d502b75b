//! The leak-trend verdict: is memory really growing, how fast, and which sites grow?
//!
//! Two histories feed it, both kept by the background task [`run`] that `app::run` starts:
//! - [`History`]: every `trend_sample_interval` (60 s) process RSS and the heap's current
//!   bytes go into a fixed ring of [`HISTORY_POINTS`] (24 h). Always on, tracking or not;
//!   the ring is allocated once at start-up and never grows.
//! - [`crate::memory::Checkpoints`]: while tracking, every `checkpoint_interval` (10 min)
//!   a per-stack snapshot, the last 6 kept.
//!
//! From the ring, [`assess`] fits a robust slope per window ([`WINDOWS`]: the last 15, 60
//! and 360 samples — 15 min, 1 h and 6 h at the default interval) and gives a [`Verdict`];
//! from the checkpoints, [`growing_sites`] finds the sites that grew at every one of the
//! last [`GROWING_SITE_MIN_RUN`] checkpoints, and [`with_evidence`] adds the sites whose
//! samples show retained growth between the oldest and the newest checkpoint (the
//! tracker's leak suspects: in sampled mode a leaking site's estimate need not rise at
//! every checkpoint, but its samples are only ever born). Everything here is typed;
//! `commands::trend` turns it into JSON and `export::metrics` into Prometheus series.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::memory::{
    self, Checkpoints, Evidence, GroupBy, Order, SiteHistory, Snapshot, Statistic,
};
use crate::system::SharedSampler;

/// Points in the ring: 24 hours at one sample a minute.
pub const HISTORY_POINTS: usize = 1_440;

/// The windows a verdict is given for: a name (true at the default 60-s interval) and a
/// length in samples. Tests that shorten the interval shorten the windows with it.
pub const WINDOWS: [(&str, usize); 3] = [("15m", 15), ("1h", 60), ("6h", 360)];

/// A window needs at least this share of its samples before it gets a verdict (so the
/// 1-hour window speaks after 30 minutes of history, not after 5).
pub const MIN_COVERAGE: f64 = 0.5;

/// ...and never fewer than this many points: a slope through 4 points says little.
pub const MIN_POINTS: usize = 5;

/// Kendall's tau between time and value at or above which growth is *consistent*: at
/// least 80% of the ordered sample pairs agree that memory went up. Allocate/free cycles
/// with two or more cycles in the window stay at or below about 0.5, and a single step
/// (rise once, then flat) at about 0.5 plus noise.
pub const CONSISTENCY_MIN: f64 = 0.6;

/// Growth must also show in both halves of the window: each half's slope at least this
/// share of the whole window's. One step leaves one half (or, at the middle, both) flat,
/// whatever the noise does to tau.
pub const HALF_SLOPE_MIN_SHARE: f64 = 0.5;

/// Consecutive growths a site needs to be a growing site (so at least 4 checkpoints).
pub const GROWING_SITE_MIN_RUN: usize = 3;

/// Growing sites reported at most.
pub const GROWING_SITES_MAX: usize = 10;

/// Rows of the oldest-to-newest checkpoint compare (in the suspects order) that are read
/// for evidence: the suspects come first, so this is far more than the sites reported,
/// and it bounds the tracebacks rendered per report.
pub const EVIDENCE_ROWS: usize = 50;

/// The trend's settings: the intervals from the settings, the threshold from `Limits`
/// (tests shorten the intervals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrendSettings {
    /// How often the history is sampled.
    pub sample_interval: Duration,
    /// How often a checkpoint is taken while tracking.
    pub checkpoint_interval: Duration,
    /// The slope a window needs to be `growing`, in bytes per hour.
    pub growth_threshold_bytes_per_hour: u64,
}

/// One sample of the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Point {
    /// Milliseconds since the history's epoch.
    at_ms: u64,
    rss_bytes: u64,
    heap_bytes: u64,
}

/// A fixed ring of (time, RSS, heap) samples, oldest overwritten first.
#[derive(Clone, Debug)]
pub struct History {
    points: Box<[Point]>,
    /// Index of the next write.
    next: usize,
    len: usize,
    /// A point's `at_ms` is milliseconds after `epoch_wall`; `epoch` (monotonic) is
    /// `epoch_offset_ms` after it (non-zero once samples of an earlier run are restored).
    epoch: Instant,
    epoch_offset_ms: u64,
    epoch_wall: SystemTime,
}

impl Default for History {
    fn default() -> Self {
        Self::with_capacity(HISTORY_POINTS)
    }
}

/// The series a verdict is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// Process resident set size.
    Rss,
    /// Heap bytes live through the global allocator (`Totals::current_bytes`).
    Heap,
}

impl History {
    /// An empty ring of `capacity` points (at least 1), allocated now and never again.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            points: vec![Point::default(); capacity.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
            epoch: Instant::now(),
            epoch_offset_ms: 0,
            epoch_wall: SystemTime::now(),
        }
    }

    /// A ring of `capacity` holding the newest of `samples` — (when, RSS, heap), oldest
    /// first, from an earlier run — so the history goes on where it stopped. Samples from
    /// the future (the wall clock stepped back) are dropped.
    pub fn restored(capacity: usize, samples: &[(SystemTime, u64, u64)]) -> Self {
        let mut h = Self::with_capacity(capacity);
        let now = SystemTime::now();
        let kept: Vec<_> = samples.iter().filter(|(t, _, _)| *t <= now).collect();
        let kept = &kept[kept.len().saturating_sub(h.capacity())..];
        let Some((first, _, _)) = kept.first() else {
            return h;
        };
        h.epoch_wall = *first;
        h.epoch_offset_ms = millis(now.duration_since(*first).unwrap_or_default());
        for (t, rss, heap) in kept {
            h.put(
                millis(t.duration_since(*first).unwrap_or_default()),
                *rss,
                *heap,
            );
        }
        h
    }

    /// Records one sample taken at `at` (monotonic; earlier than the previous is clamped).
    pub fn push(&mut self, at: Instant, rss_bytes: u64, heap_bytes: u64) {
        let at_ms = self
            .epoch_offset_ms
            .saturating_add(millis(at.saturating_duration_since(self.epoch)));
        self.put(at_ms, rss_bytes, heap_bytes);
    }

    fn put(&mut self, mut at_ms: u64, rss_bytes: u64, heap_bytes: u64) {
        if let Some(last) = self.last_point() {
            at_ms = at_ms.max(last.at_ms);
        }
        self.points[self.next] = Point {
            at_ms,
            rss_bytes,
            heap_bytes,
        };
        self.next = (self.next + 1) % self.points.len();
        self.len = (self.len + 1).min(self.points.len());
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Samples the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.points.len()
    }

    fn last_point(&self) -> Option<Point> {
        (self.len > 0).then(|| self.points[(self.next + self.points.len() - 1) % self.points.len()])
    }

    /// The `i`-th newest point (0 = newest).
    fn nth_newest(&self, i: usize) -> Point {
        let cap = self.points.len();
        self.points[(self.next + cap - 1 - i) % cap]
    }

    /// The last `n` samples of `series` (fewer if fewer are held), oldest first, as
    /// (seconds since the first of them, bytes).
    pub fn window(&self, series: Series, n: usize) -> Vec<(f64, f64)> {
        let n = n.min(self.len);
        if n == 0 {
            return Vec::new();
        }
        let first = self.nth_newest(n - 1).at_ms;
        (0..n)
            .rev()
            .map(|i| {
                let p = self.nth_newest(i);
                let v = match series {
                    Series::Rss => p.rss_bytes,
                    Series::Heap => p.heap_bytes,
                };
                ((p.at_ms - first) as f64 / 1000.0, v as f64)
            })
            .collect()
    }

    /// The samples taken since `from` (wall clock), oldest first: (when, RSS, heap).
    pub fn since(&self, from: SystemTime) -> Vec<(SystemTime, u64, u64)> {
        (0..self.len)
            .rev()
            .map(|i| {
                let p = self.nth_newest(i);
                (
                    self.epoch_wall + Duration::from_millis(p.at_ms),
                    p.rss_bytes,
                    p.heap_bytes,
                )
            })
            .filter(|(t, _, _)| *t >= from)
            .collect()
    }

    /// The newest sample: when (wall clock), RSS, heap.
    pub fn latest(&self) -> Option<(SystemTime, u64, u64)> {
        self.last_point().map(|p| {
            (
                self.epoch_wall + Duration::from_millis(p.at_ms),
                p.rss_bytes,
                p.heap_bytes,
            )
        })
    }

    /// When the oldest held sample was taken (wall clock).
    pub fn oldest(&self) -> Option<SystemTime> {
        (self.len > 0)
            .then(|| self.epoch_wall + Duration::from_millis(self.nth_newest(self.len - 1).at_ms))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a window says about a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The slope is above the threshold and the rise is consistent.
    Growing,
    /// Enough data, and not growing.
    Stable,
    /// Too few samples in the window yet.
    InsufficientData,
}

impl Verdict {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Growing => "growing",
            Self::Stable => "stable",
            Self::InsufficientData => "insufficient_data",
        }
    }
}

/// A series' trend over one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    /// The verdict.
    pub verdict: Verdict,
    /// Theil–Sen slope in bytes per hour (`None` with insufficient data).
    pub slope_bytes_per_hour: Option<f64>,
    /// Kendall's tau between time and value, −1..=1 (`None` with insufficient data).
    pub consistency: Option<f64>,
    /// Points used.
    pub points: usize,
}

/// The Theil–Sen estimator: the median of the slopes between every pair of points with
/// distinct times. Resistant to outliers: up to about 29% of the points can be wild
/// without moving it far. `None` with fewer than two distinct times. O(n²) pairs: the
/// largest window (360 points) is 64,620 slopes.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, &(x1, y1)) in points.iter().enumerate() {
        for &(x2, y2) in &points[i + 1..] {
            if x2 != x1 {
                slopes.push((y2 - y1) / (x2 - x1));
            }
        }
    }
    median(&mut slopes)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let (_, &mut upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if v.len() % 2 == 1 {
        Some(upper)
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((lower + upper) / 2.0)
    }
}

/// Kendall's tau-a between time order and value: (concordant − discordant) / pairs.
/// 1 when every later sample is higher than every earlier one, about 0 for noise.
pub fn kendall_tau(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let mut score: i64 = 0;
    for (i, &(x1, y1)) in points.iter().enumerate() {
        for &(x2, y2) in &points[i + 1..] {
            let dx = x2 - x1;
            let dy = y2 - y1;
            if dx * dy > 0.0 {
                score += 1;
            } else if dx * dy < 0.0 {
                score -= 1;
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as f64;
    Some(score as f64 / pairs)
}

/// The samples a window of `window_len` needs before it gives a verdict.
pub fn needed(window_len: usize) -> usize {
    ((window_len as f64 * MIN_COVERAGE).ceil() as usize).max(MIN_POINTS)
}

/// The verdict for `points` (seconds, bytes), oldest first, from a window meant to hold
/// `window_len` samples: `insufficient_data` below [`MIN_COVERAGE`] of it or
/// [`MIN_POINTS`]; `growing` when the Theil–Sen slope is at least `threshold` bytes per
/// hour and the rise is consistent (Kendall's tau at least [`CONSISTENCY_MIN`], and each
/// half of the window rising at least [`HALF_SLOPE_MIN_SHARE`] as fast); otherwise
/// `stable`.
pub fn assess(points: &[(f64, f64)], window_len: usize, threshold_per_hour: f64) -> Assessment {
    let needed = needed(window_len);
    let slope = theil_sen(points).map(|s| s * 3600.0);
    let tau = kendall_tau(points);
    let (first, second) = points.split_at(points.len() / 2);
    let halves_rise = |slope: f64| {
        [first, second]
            .iter()
            .all(|half| theil_sen(half).is_some_and(|s| s * 3600.0 >= HALF_SLOPE_MIN_SHARE * slope))
    };
    match (slope, tau) {
        (Some(slope), Some(tau)) if points.len() >= needed => Assessment {
            verdict: if slope >= threshold_per_hour && tau >= CONSISTENCY_MIN && halves_rise(slope)
            {
                Verdict::Growing
            } else {
                Verdict::Stable
            },
            slope_bytes_per_hour: Some(slope),
            consistency: Some(tau),
            points: points.len(),
        },
        _ => Assessment {
            verdict: Verdict::InsufficientData,
            slope_bytes_per_hour: None,
            consistency: None,
            points: points.len(),
        },
    }
}

/// One window's verdicts for both series.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowReport {
    /// "15m", "1h" or "6h".
    pub name: &'static str,
    /// Samples the window is meant to hold.
    pub samples: usize,
    /// Nominal span: `samples` times the sample interval.
    pub span: Duration,
    pub rss: Assessment,
    pub heap: Assessment,
}

impl WindowReport {
    /// `growing` if either series grows, else `stable` if either has data.
    pub fn verdict(&self) -> Verdict {
        combine([self.rss.verdict, self.heap.verdict])
    }
}

/// `growing` if any is, else `stable` if any is, else `insufficient_data`.
pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut out = Verdict::InsufficientData;
    for v in verdicts {
        match v {
            Verdict::Growing => return Verdict::Growing,
            Verdict::Stable => out = Verdict::Stable,
            Verdict::InsufficientData => {}
        }
    }
    out
}

/// Every window of `history`, assessed.
pub fn windows(
    history: &History,
    sample_interval: Duration,
    threshold_per_hour: f64,
) -> Vec<WindowReport> {
    WINDOWS
        .iter()
        .map(|&(name, samples)| WindowReport {
            name,
            samples,
            span: sample_interval * samples as u32,
            rss: assess(
                &history.window(Series::Rss, samples),
                samples,
                threshold_per_hour,
            ),
            heap: assess(
                &history.window(Series::Heap, samples),
                samples,
                threshold_per_hour,
            ),
        })
        .collect()
}

/// A site that grew at each of the last checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct GrowingSite {
    /// "function (file:line)" from the site outwards.
    pub traceback: Vec<String>,
    /// The same frames, structured, same order.
    pub frames: Vec<memory::Frame>,
    /// The library frames above the site, innermost first (see
    /// `memory::Statistic::inner_frames`).
    pub inner_frames: Vec<memory::Frame>,
    /// Bytes at the newest checkpoint.
    pub size_bytes: u64,
    /// Growth over the run divided by its duration.
    pub growth_bytes_per_hour: f64,
    /// Consecutive checkpoints (counting back from the newest) at which it grew (a site
    /// found by its evidence may have fewer than [`GROWING_SITE_MIN_RUN`]).
    pub grew_in: usize,
    /// The site's row in the compare of the newest checkpoint with the oldest: its
    /// samples, standard error and retention (`None` when the site is not among the
    /// [`EVIDENCE_ROWS`] rows read).
    pub evidence: Option<Evidence>,
}

/// Sites whose bytes rose at each of at least the last [`GROWING_SITE_MIN_RUN`]
/// checkpoints (taken at `times`, oldest first, matching each history's `bytes`), ranked
/// by growth rate, at most [`GROWING_SITES_MAX`].
pub fn growing_sites(times: &[SystemTime], histories: Vec<SiteHistory>) -> Vec<GrowingSite> {
    let mut out = Vec::new();
    for h in histories {
        if h.bytes.len() != times.len() || h.bytes.len() < 2 {
            continue;
        }
        let last = h.bytes.len() - 1;
        let run = run_of(&h.bytes);
        if run < GROWING_SITE_MIN_RUN {
            continue;
        }
        let from = last - run;
        let secs = times[last]
            .duration_since(times[from])
            .unwrap_or_default()
            .as_secs_f64();
        if secs <= 0.0 {
            continue;
        }
        let grown = (h.bytes[last] - h.bytes[from]) as f64;
        out.push(GrowingSite {
            traceback: h.traceback,
            frames: h.frames,
            inner_frames: h.inner_frames,
            size_bytes: h.bytes[last],
            growth_bytes_per_hour: grown / secs * 3600.0,
            grew_in: run,
            evidence: None,
        });
    }
    rank(&mut out);
    out
}

/// Fastest first (ties by traceback), at most [`GROWING_SITES_MAX`].
fn rank(sites: &mut Vec<GrowingSite>) {
    sites.sort_by(|a, b| {
        b.growth_bytes_per_hour
            .total_cmp(&a.growth_bytes_per_hour)
            .then_with(|| a.traceback.cmp(&b.traceback))
    });
    sites.truncate(GROWING_SITES_MAX);
}

/// The consecutive growths of `bytes` counting back from the newest.
fn run_of(bytes: &[u64]) -> usize {
    (1..bytes.len())
        .rev()
        .take_while(|&i| bytes[i] > bytes[i - 1])
        .count()
}

/// [`growing_sites`] and the suspects: `rows` are the compare of the newest checkpoint
/// with the oldest (`GroupBy::Site`, [`Order::Suspects`]). Each row whose retention makes
/// it a suspect is a growing site too, unless its estimate at the newest checkpoint is
/// not above the one halfway back (with 3 or more checkpoints): a site that took memory
/// once and kept it has retained growth between the ends, but it is not growing. Its
/// rate is its change over the span of the checkpoints. A site both rules find is listed
/// once; every site carries its row's evidence when `rows` has it.
pub fn with_evidence(
    times: &[SystemTime],
    histories: Vec<SiteHistory>,
    rows: &[Statistic],
) -> Vec<GrowingSite> {
    // A site row's key is its site, "function (file:line)": the first traceback line.
    let key = |traceback: &[String]| traceback.first().cloned().unwrap_or_default();
    let bytes_by_site: std::collections::HashMap<String, Vec<u64>> = histories
        .iter()
        .filter(|h| h.bytes.len() == times.len())
        .map(|h| (key(&h.traceback), h.bytes.clone()))
        .collect();
    let evidence_of = |site: &str| {
        rows.iter()
            .find(|r| r.traceback.first().is_some_and(|t| t == site))
            .map(|r| r.evidence)
    };
    let mut out = growing_sites(times, histories);
    for s in &mut out {
        s.evidence = evidence_of(&key(&s.traceback));
    }
    let span = match (times.first(), times.last()) {
        (Some(first), Some(last)) => last.duration_since(*first).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    if span.is_zero() {
        return out;
    }
    for row in rows {
        let suspect = row.evidence.retention.is_some_and(|r| r.suspect);
        let site = key(&row.traceback);
        if !suspect || out.iter().any(|s| key(&s.traceback) == site) {
            continue;
        }
        let bytes = bytes_by_site.get(&site);
        let still_growing =
            bytes.is_none_or(|b| b.len() < 3 || b[b.len() - 1] > b[(b.len() - 1) / 2]);
        if !still_growing {
            continue;
        }
        out.push(GrowingSite {
            traceback: row.traceback.clone(),
            frames: row.frames.clone(),
            inner_frames: row.inner_frames.clone(),
            size_bytes: row.size_bytes,
            growth_bytes_per_hour: row.size_diff_bytes as f64 / span.as_secs_f64() * 3600.0,
            grew_in: bytes.map_or(0, |b| run_of(b)),
            evidence: Some(row.evidence),
        });
    }
    rank(&mut out);
    out
}

/// The trend's state: the history ring and the checkpoints, each behind its own lock, and
/// the settings they are kept with. One per server; the background task [`run`] fills it
/// and `debug/memory_trend` reads it.
pub struct Monitor {
    settings: TrendSettings,
    /// std mutex: the RSS/heap ring; held to push or copy a window, never across `.await`.
    history: Mutex<History>,
    /// std mutex: the automatic checkpoints (apart from the user's baselines); held to push
    /// or clone, never across `.await`.
    checkpoints: Mutex<Checkpoints>,
}

/// Everything the trend knows, typed (the commands turn it into JSON, the metrics into
/// series).
#[derive(Clone, Debug)]
pub struct TrendReport {
    pub settings: TrendSettings,
    pub windows: Vec<WindowReport>,
    /// `growing` if any window of either series grows, else `stable` if any has data.
    pub verdict: Verdict,
    pub samples: usize,
    pub capacity: usize,
    pub oldest: Option<SystemTime>,
    /// (when, RSS, heap) of the newest sample.
    pub latest: Option<(SystemTime, u64, u64)>,
    /// When each held checkpoint was taken, oldest first.
    pub checkpoints: Vec<SystemTime>,
    pub growing_sites: Vec<GrowingSite>,
}

impl Monitor {
    /// An empty history (allocated now, at its full size) and no checkpoints.
    pub fn new(settings: TrendSettings) -> Self {
        Self {
            settings,
            history: Mutex::new(History::default()),
            // The ring of the server's own checkpoints: the tracker's memory, never a site.
            checkpoints: Mutex::new(memory::untracked(Checkpoints::default)),
        }
    }

    /// The intervals and threshold this monitor keeps its history with.
    pub fn settings(&self) -> TrendSettings {
        self.settings
    }

    /// Records one history sample now and returns it: (when, RSS, heap).
    pub fn sample_once(&self, system: &SharedSampler) -> (SystemTime, u64, u64) {
        let rss = system.sample().process.rss_bytes;
        let heap = memory::totals().current_bytes;
        let mut history = self.history.lock().expect("trend lock poisoned");
        history.push(Instant::now(), rss, heap);
        history.latest().expect("a sample was just pushed")
    }

    /// The samples of the last `span` (wall clock), oldest first: (when, RSS, heap).
    pub fn recent(&self, span: Duration) -> Vec<(SystemTime, u64, u64)> {
        let from = SystemTime::now()
            .checked_sub(span)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.history
            .lock()
            .expect("trend lock poisoned")
            .since(from)
    }

    /// Puts back the samples of an earlier run (when, RSS, heap; oldest first) in place
    /// of the history, before sampling starts: the history goes on where it stopped.
    pub fn restore(&self, samples: &[(SystemTime, u64, u64)]) {
        let mut history = self.history.lock().expect("trend lock poisoned");
        *history = History::restored(history.capacity(), samples);
    }

    /// Takes one checkpoint now if tracking is on; forgets them if it is off.
    pub fn checkpoint_once(&self) {
        if !memory::status().enabled {
            self.checkpoints
                .lock()
                .expect("checkpoints lock poisoned")
                .clear();
            return;
        }
        let snapshot = memory::take_snapshot();
        self.checkpoints
            .lock()
            .expect("checkpoints lock poisoned")
            .push(snapshot);
    }

    /// When each held checkpoint was taken, oldest first (cheap: no symbolization).
    pub fn checkpoint_times(&self) -> Vec<SystemTime> {
        self.checkpoints
            .lock()
            .expect("checkpoints lock poisoned")
            .iter()
            .map(|s| s.taken_at.unwrap_or(SystemTime::UNIX_EPOCH))
            .collect()
    }

    /// Bytes the held checkpoints take on the heap (the tracker's memory: never a site).
    pub fn checkpoint_bytes(&self) -> u64 {
        self.checkpoints
            .lock()
            .expect("checkpoints lock poisoned")
            .heap_bytes()
    }

    /// The report, computed on this thread: it symbolizes the checkpoints, so call it off
    /// the async workers and one at a time with other symbolizing jobs.
    pub fn report(&self) -> TrendReport {
        self.freeze().report()
    }

    /// The history and checkpoints as they are now (a copy: the ring's 35 KB and the
    /// checkpoints' per-stack totals), to report on later: a report that waits for the
    /// symbolizing lock still describes the moment it was asked for.
    pub fn freeze(&self) -> Frozen {
        // Copies for the server's own report: never sites of the heap they report on.
        memory::untracked(|| Frozen {
            settings: self.settings,
            history: self.history.lock().expect("trend lock poisoned").clone(),
            held: self
                .checkpoints
                .lock()
                .expect("checkpoints lock poisoned")
                .iter()
                .cloned()
                .collect(),
        })
    }
}

/// A copy of the trend's state at one moment (see [`Monitor::freeze`]).
pub struct Frozen {
    settings: TrendSettings,
    history: History,
    held: Vec<Snapshot>,
}

impl Frozen {
    /// The report on this moment (it symbolizes: off the async workers).
    pub fn report(self) -> TrendReport {
        let Frozen {
            settings,
            history,
            held,
        } = self;
        let threshold = settings.growth_threshold_bytes_per_hour as f64;
        let (windows, samples, capacity, oldest, latest) = (
            windows(&history, settings.sample_interval, threshold),
            history.len(),
            history.capacity(),
            history.oldest(),
            history.latest(),
        );
        let times: Vec<SystemTime> = held
            .iter()
            .map(|s| s.taken_at.unwrap_or(SystemTime::UNIX_EPOCH))
            .collect();
        let growing_sites = match (held.first(), held.last()) {
            (Some(oldest), Some(newest)) if held.len() >= 2 => {
                let refs: Vec<&Snapshot> = held.iter().collect();
                let rows =
                    newest.compare_ordered(oldest, GroupBy::Site, Order::Suspects, EVIDENCE_ROWS);
                with_evidence(&times, memory::site_history(&refs), &rows)
            }
            _ => Vec::new(),
        };
        TrendReport {
            settings,
            verdict: combine(windows.iter().map(WindowReport::verdict)),
            windows,
            samples,
            capacity,
            oldest,
            latest,
            checkpoints: times,
            growing_sites,
        }
    }
}

/// Where each sample goes besides the ring (the history database), called on the blocking
/// thread that took it.
pub type Sink = Arc<dyn Fn(SystemTime, u64, u64) + Send + Sync>;

/// The background task: samples the history every `sample_interval` (each sample also to
/// `sink`) and takes a checkpoint every `checkpoint_interval` while tracking, until
/// `cancel` fires. The sampling (it reads /proc) and the snapshot copy run on blocking
/// threads.
pub async fn run(
    monitor: Arc<Monitor>,
    system: Arc<SharedSampler>,
    cancel: CancellationToken,
    sink: Option<Sink>,
) {
    let TrendSettings {
        sample_interval,
        checkpoint_interval,
        ..
    } = monitor.settings;
    let mut samples = tokio::time::interval(sample_interval.max(Duration::from_millis(1)));
    samples.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut checkpoints = tokio::time::interval_at(
        tokio::time::Instant::now() + checkpoint_interval,
        checkpoint_interval.max(Duration::from_millis(1)),
    );
    checkpoints.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = samples.tick() => {
                let (monitor, system, sink) = (monitor.clone(), system.clone(), sink.clone());
                let done = tokio::task::spawn_blocking(move || {
                    let (at, rss, heap) = monitor.sample_once(&system);
                    if let Some(sink) = sink {
                        sink(at, rss, heap);
                    }
                });
                if let Err(e) = done.await {
                    tracing::warn!(error = %e, "trend sample failed");
                }
            }
            _ = checkpoints.tick() => {
                let monitor = monitor.clone();
                let done = tokio::task::spawn_blocking(move || monitor.checkpoint_once());
                if let Err(e) = done.await {
                    tracing::warn!(error = %e, "trend checkpoint failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series sampled every `dt` seconds.
    fn series(n: usize, dt: f64, f: impl Fn(usize) -> f64) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64 * dt, f(i))).collect()
    }

    /// Deterministic noise in −1..1 (splitmix64 of the index).
    fn noise(i: usize) -> f64 {
        let mut x = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn theil_sen_recovers_a_line_and_ignores_a_spike() {
        // 2 MiB per hour, sampled every minute, one 500 MiB spike.
        let per_s = 2.0 * MIB / 3600.0;
        let mut pts = series(60, 60.0, |i| 50.0 * MIB + per_s * 60.0 * i as f64);
        pts[30].1 += 500.0 * MIB;
        let slope = theil_sen(&pts).unwrap() * 3600.0;
        assert!((slope - 2.0 * MIB).abs() < 1.0, "{slope}");
        assert_eq!(theil_sen(&[(1.0, 1.0)]), None);
        assert_eq!(theil_sen(&[(1.0, 1.0), (1.0, 5.0)]), None);
        assert_eq!(theil_sen(&[(0.0, 0.0), (1.0, 1.0), (2.0, 4.0)]), Some(2.0));
    }

    #[test]
    fn steady_growth_under_noise_is_growing_with_the_right_slope() {
        // 4 MiB/h growth with ±256 KiB of noise on a 60 MiB process.
        let per_min = 4.0 * MIB / 60.0;
        let pts = series(60, 60.0, |i| {
            60.0 * MIB + per_min * i as f64 + 256.0 * 1024.0 * noise(i)
        });
        let a = assess(&pts, 60, MIB);
        assert_eq!(a.verdict, Verdict::Growing, "{a:?}");
        let slope = a.slope_bytes_per_hour.unwrap();
        assert!((slope / (4.0 * MIB) - 1.0).abs() < 0.1, "{slope}");
    }

    #[test]
    fn one_step_is_not_growing_wherever_it_falls() {
        // Every position, under 200 different draws of noise on the flat parts.
        for seed in 0..200 {
            for step_at in 1..15 {
                let pts = series(15, 60.0, |i| {
                    let base = if i >= step_at { 80.0 * MIB } else { 60.0 * MIB };
                    base + 1024.0 * noise(seed * 1000 + i)
                });
                let a = assess(&pts, 15, MIB);
                assert_eq!(
                    a.verdict,
                    Verdict::Stable,
                    "step at {step_at}, seed {seed}: {a:?}"
                );
            }
        }
    }

    #[test]
    fn allocate_and_free_cycles_are_not_growing() {
        // Rises 10 MiB over 5 samples, frees it all, again: 3 cycles in a 15-sample window,
        // 12 in a 60-sample one, sampled in phase (the worst case for pairwise slopes).
        for (n, window) in [(15, 15), (60, 60), (360, 360)] {
            let pts = series(n, 60.0, |i| 60.0 * MIB + 2.0 * MIB * (i % 5) as f64);
            let a = assess(&pts, window, MIB);
            assert_eq!(a.verdict, Verdict::Stable, "{n}: {a:?}");
        }
        // And sampled out of phase (period not a multiple of the interval).
        let pts = series(60, 60.0, |i| {
            60.0 * MIB + 10.0 * MIB * ((i as f64 * 0.37).fract())
        });
        assert_eq!(assess(&pts, 60, MIB).verdict, Verdict::Stable);
    }

    #[test]
    fn flat_is_stable_and_short_history_is_insufficient() {
        let flat = series(15, 60.0, |i| 60.0 * MIB + 4096.0 * noise(i));
        assert_eq!(assess(&flat, 15, MIB).verdict, Verdict::Stable);
        // Steep growth, but only 4 points: no verdict yet.
        let short = series(4, 60.0, |i| i as f64 * 100.0 * MIB);
        let a = assess(&short, 15, MIB);
        assert_eq!(a.verdict, Verdict::InsufficientData);
        assert_eq!(a.slope_bytes_per_hour, None);
        // The 1-hour window needs 30 samples.
        let half = series(29, 60.0, |i| i as f64 * MIB);
        assert_eq!(assess(&half, 60, MIB).verdict, Verdict::InsufficientData);
        let half = series(30, 60.0, |i| i as f64 * MIB);
        assert_eq!(assess(&half, 60, MIB).verdict, Verdict::Growing);
    }

    #[test]
    fn slow_growth_below_the_threshold_is_stable() {
        let pts = series(60, 60.0, |i| 60.0 * MIB + 512.0 * 1024.0 / 60.0 * i as f64);
        let a = assess(&pts, 60, MIB);
        assert_eq!(a.verdict, Verdict::Stable, "{a:?}");
        assert!(a.consistency.unwrap() > 0.99);
    }

    #[test]
    fn history_is_a_bounded_ring() {
        let mut h = History::with_capacity(4);
        let t0 = Instant::now();
        for i in 0..10u64 {
            h.push(t0 + Duration::from_secs(i), 100 + i, 200 + i);
        }
        assert_eq!(h.len(), 4);
        assert_eq!(h.capacity(), 4);
        let w = h.window(Series::Rss, 10);
        assert_eq!(w.len(), 4);
        assert_eq!(w[0].1, 106.0);
        assert_eq!(w[3].1, 109.0);
        assert!((w[3].0 - w[0].0 - 3.0).abs() < 0.01);
        let w = h.window(Series::Heap, 2);
        assert_eq!(w.iter().map(|p| p.1).collect::<Vec<_>>(), [208.0, 209.0]);
        assert_eq!(h.latest().unwrap().1, 109);
        assert_eq!(History::default().capacity(), HISTORY_POINTS);
    }

    #[test]
    fn a_restored_history_goes_on_where_the_last_run_stopped() {
        let now = SystemTime::now();
        let min = |m: u64| now - Duration::from_secs(60 * m);
        // Six samples of an earlier run, a minute apart, the newest 10 minutes ago; one
        // from the future (a clock that stepped back) is dropped.
        let mut earlier: Vec<_> = (0..6u64)
            .map(|i| (min(15 - i), 1000 + i, 2000 + i))
            .collect();
        earlier.push((now + Duration::from_secs(3600), 9, 9));
        let mut h = History::restored(4, &earlier);
        assert_eq!(h.len(), 4, "the newest that fit");
        let w = h.window(Series::Rss, 10);
        assert_eq!(
            w.iter().map(|p| p.1).collect::<Vec<_>>(),
            [1002.0, 1003.0, 1004.0, 1005.0]
        );
        assert!((w[3].0 - 180.0).abs() < 0.01, "a minute apart: {w:?}");
        let oldest = h.oldest().unwrap();
        assert_eq!(oldest, min(13));
        // A sample now lands ten minutes after the last restored one.
        h.push(Instant::now(), 1100, 2100);
        let w = h.window(Series::Heap, 2);
        assert_eq!(w[1].1, 2100.0);
        assert!((w[1].0 - w[0].0 - 600.0).abs() < 2.0, "{w:?}");
        assert!(History::restored(4, &[]).is_empty());
    }

    /// Five checkpoints ten minutes apart.
    fn checkpoint_times() -> Vec<SystemTime> {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        (0..5).map(|i| t0 + Duration::from_secs(600 * i)).collect()
    }

    /// A site's history over [`checkpoint_times`].
    fn site(name: &str, bytes: [u64; 5]) -> SiteHistory {
        SiteHistory {
            traceback: vec![name.to_owned()],
            frames: vec![memory::Frame::new(name, None, None)],
            inner_frames: Vec::new(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn growing_sites_need_three_growths_and_rank_by_rate() {
        let times = checkpoint_times();
        let found = growing_sites(
            &times,
            vec![
                site("slow", [0, 10, 20, 30, 40]),
                site("fast", [100, 100, 1100, 2100, 3100]),
                site("twice", [0, 0, 0, 500, 900]),
                site("dipped", [0, 100, 50, 150, 200]),
                site("flat", [7, 7, 7, 7, 7]),
            ],
        );
        let names: Vec<_> = found.iter().map(|s| s.traceback[0].as_str()).collect();
        assert_eq!(names, ["fast", "slow"]);
        assert_eq!(found[0].grew_in, 3);
        assert!((found[0].growth_bytes_per_hour - 3000.0 / 1800.0 * 3600.0).abs() < 1e-6);
        assert_eq!(found[1].grew_in, 4);
        assert_eq!(found[0].size_bytes, 3100);
    }

    #[test]
    fn suspects_are_growing_sites_once_and_a_single_rise_is_not() {
        let times = checkpoint_times();
        let row = |name: &str, size: u64, diff: i64, suspect: bool| Statistic {
            traceback: vec![name.to_owned()],
            frames: vec![memory::Frame::new(name, None, None)],
            inner_frames: Vec::new(),
            size_bytes: size,
            size_diff_bytes: diff,
            count: 1,
            count_diff: 1,
            evidence: Evidence {
                samples: 12,
                std_error_bytes: 100.0,
                retention: Some(memory::Retention {
                    new_alive: 12,
                    new_freed: 0,
                    old_freed: 0,
                    old_retained: 0,
                    leak_score: if suspect { 3.5 } else { 0.4 },
                    suspect,
                }),
            },
        };
        // A sampled leak: its estimate stood still once, so the every-checkpoint rule
        // misses it; its samples were only born.
        let histories = vec![
            site("leak", [0, 0, 512, 512, 1536]),
            site("steady", [0, 10, 20, 30, 40]),
            site("once", [0, 4096, 4096, 4096, 4096]),
            site("churn", [100, 900, 50, 700, 400]),
        ];
        let rows = [
            row("leak", 1536, 1536, true),
            row("steady", 40, 40, true),
            row("once", 4096, 4096, true),
            row("churn", 400, 300, false),
        ];
        let found = with_evidence(&times, histories, &rows);
        let names: Vec<_> = found.iter().map(|s| s.traceback[0].as_str()).collect();
        assert_eq!(names, ["leak", "steady"], "{found:?}");
        let leak = &found[0];
        // 1,536 bytes over the 40 minutes between the oldest and newest checkpoint.
        assert!((leak.growth_bytes_per_hour - 1536.0 * 1.5).abs() < 1e-6);
        assert_eq!(leak.grew_in, 1);
        assert_eq!(leak.evidence.expect("from its row").samples, 12);
        // Found by both rules: once, at its every-checkpoint rate, with its evidence.
        assert_eq!(found[1].grew_in, 4);
        assert!(found[1].evidence.is_some());
        // One checkpoint: nothing to compare.
        assert!(with_evidence(&times[..1], Vec::new(), &rows).is_empty());
    }

    #[test]
    fn verdicts_combine() {
        use Verdict::*;
        assert_eq!(combine([InsufficientData, Stable]), Stable);
        assert_eq!(combine([Stable, Growing]), Growing);
        assert_eq!(combine([InsufficientData]), InsufficientData);
        assert_eq!(combine([]), InsufficientData);
    }
}
