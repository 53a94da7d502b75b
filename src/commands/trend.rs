//! `debug/memory_trend` (and `GET /api/memory/trend`): is memory really growing, how fast,
//! and which sites grow? Translates `trend`'s typed report into JSON.
//!
//! The report is computed on a blocking thread: slopes over up to 360 points per window,
//! and symbolizing the checkpoints to find the growing sites (serialized with snapshots by
//! the snapshot lock, since both hold symbolization caches).

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::debug::{rfc3339, tracking_json};
use super::{Command, CommandError, NoArgs, Shared, blocking, parse_args};
use crate::memory::{self, Checkpoints, Snapshot};
use crate::trend::{self, Assessment, GrowingSite, Verdict, WindowReport};

/// `debug/memory_trend`.
pub const MEMORY_TREND: Command = Command {
    name: "debug/memory_trend",
    summary: "Whether memory is growing: robust slopes of RSS and heap over 15 min, 1 h and 6 h, with a verdict each, and the sites that keep growing.",
    run: |ctx, args| {
        Box::pin(async move {
            let NoArgs {} = parse_args(args)?;
            let report = report(ctx.shared).await?;
            Ok(report_json(&report).into())
        })
    },
};

/// Everything the trend knows, typed.
#[derive(Clone, Debug)]
pub struct TrendReport {
    pub settings: trend::TrendSettings,
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

/// Computes the report (off the async workers).
///
/// # Errors
/// [`CommandError::Internal`] if the blocking task panicked.
pub async fn report(shared: Arc<Shared>) -> Result<TrendReport, CommandError> {
    let serial = shared.clone();
    let _serial = serial.snapshot_lock.lock().await;
    blocking(move || report_blocking(&shared)).await
}

/// The report, computed on this thread (it symbolizes; call it off async workers).
pub fn report_blocking(shared: &Shared) -> TrendReport {
    let settings = shared.trend_settings;
    let threshold = settings.growth_threshold_bytes_per_hour as f64;
    let (windows, samples, capacity, oldest, latest) = {
        let history = shared.trend.lock().expect("trend lock poisoned");
        (
            trend::windows(&history, settings.sample_interval, threshold),
            history.len(),
            history.capacity(),
            history.oldest(),
            history.latest(),
        )
    };
    let held: Vec<Snapshot> = shared
        .checkpoints
        .lock()
        .expect("checkpoints lock poisoned")
        .iter()
        .cloned()
        .collect();
    let times: Vec<SystemTime> = held
        .iter()
        .map(|s| s.taken_at.unwrap_or(SystemTime::UNIX_EPOCH))
        .collect();
    let growing_sites = if held.len() > trend::GROWING_SITE_MIN_RUN {
        let refs: Vec<&Snapshot> = held.iter().collect();
        trend::growing_sites(&times, memory::site_history(&refs))
    } else {
        Vec::new()
    };
    TrendReport {
        settings,
        verdict: trend::combine(windows.iter().map(WindowReport::verdict)),
        windows,
        samples,
        capacity,
        oldest,
        latest,
        checkpoints: times,
        growing_sites,
    }
}

fn assessment_json(a: &Assessment) -> Value {
    json!({
        "verdict": a.verdict.as_str(),
        "slope_bytes_per_hour": a.slope_bytes_per_hour,
        "consistency": a.consistency,
        "points": a.points,
    })
}

/// The report as the command and the HTTP endpoint return it.
pub fn report_json(r: &TrendReport) -> Value {
    json!({
        "verdict": r.verdict.as_str(),
        "threshold_bytes_per_hour": r.settings.growth_threshold_bytes_per_hour,
        "sample_interval_s": r.settings.sample_interval.as_secs_f64(),
        "checkpoint_interval_s": r.settings.checkpoint_interval.as_secs_f64(),
        "samples": r.samples,
        "capacity": r.capacity,
        "oldest_sample_at": r.oldest.map(rfc3339),
        "latest": r.latest.map(|(at, rss, heap)| json!({
            "at": rfc3339(at),
            "rss_bytes": rss,
            "heap_bytes": heap,
        })),
        "windows": r.windows.iter().map(|w| json!({
            "window": w.name,
            "samples": w.samples,
            "span_s": w.span.as_secs_f64(),
            "verdict": w.verdict().as_str(),
            "rss": assessment_json(&w.rss),
            "heap": assessment_json(&w.heap),
        })).collect::<Vec<_>>(),
        "tracking": tracking_json(),
        "checkpoints": {
            "count": r.checkpoints.len(),
            "max": Checkpoints::MAX,
            "taken_at": r.checkpoints.iter().map(|t| rfc3339(*t)).collect::<Vec<_>>(),
        },
        "growing_sites": r.growing_sites.iter().map(|s| json!({
            "traceback": s.traceback,
            "size_bytes": s.size_bytes,
            "growth_bytes_per_hour": s.growth_bytes_per_hour,
            "grew_in": s.grew_in,
        })).collect::<Vec<_>>(),
    })
}
