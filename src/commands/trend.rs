//! `debug/memory_trend` (and `GET /api/memory/trend`): is memory really growing, how fast,
//! and which sites grow? Translates `trend`'s typed report into JSON.
//!
//! The report is computed on a blocking thread: slopes over up to 360 points per window,
//! and symbolizing the checkpoints to find the growing sites (serialized with snapshots by
//! the snapshot lock, since both hold symbolization caches).

use serde_json::{Value, json};

use super::debug::{rfc3339, tracking_json};
use super::{Command, CommandError, NoArgs, Services, exclusive};
use crate::memory::Checkpoints;
use crate::trend::{Assessment, TrendReport};

/// `debug/memory_trend` (over HTTP: `GET /api/memory/trend`).
pub const MEMORY_TREND: Command = Command {
    name: "debug/memory_trend",
    summary: "Whether memory is growing: robust slopes of RSS and heap over 15 min, 1 h and 6 h, with a verdict each, and the sites that keep growing.",
    run: |ctx, args| {
        Box::pin(async move {
            let NoArgs {} = args.parse()?;
            let report = report(&ctx.services).await?;
            Ok(report_json(&report).into())
        })
    },
};

/// `debug/memory_history` (over HTTP: `GET /api/memory/history`).
pub const MEMORY_HISTORY: Command = Command {
    name: "debug/memory_history",
    summary: "The add-on's own process RSS and heap in use over the last 15 min, 1 h, 6 h or 24 h, one point per trend sample (kept across restarts).",
    run: |ctx, args| {
        Box::pin(async move {
            let args: HistoryArgs = args.parse()?;
            let span = args.window.span();
            let points = ctx.services.trend.recent(span);
            Ok(json!({
                "window": args.window.name(),
                "sample_interval_s": ctx.services.trend.settings().sample_interval.as_secs_f64(),
                "points": points
                    .iter()
                    .map(|(at, rss, heap)| json!([crate::host::unix_ms(*at), rss, heap]))
                    .collect::<Vec<_>>(),
            })
            .into())
        })
    },
};

/// `debug/memory_history` arguments.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// Default `15m`.
    #[serde(default)]
    pub window: Window,
}

/// How far back `debug/memory_history` looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub enum Window {
    #[default]
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "6h")]
    H6,
    #[serde(rename = "24h")]
    H24,
}

impl Window {
    fn span(self) -> std::time::Duration {
        let minutes = match self {
            Self::M15 => 15,
            Self::H1 => 60,
            Self::H6 => 360,
            Self::H24 => 1440,
        };
        std::time::Duration::from_secs(minutes * 60)
    }

    fn name(self) -> &'static str {
        match self {
            Self::M15 => "15m",
            Self::H1 => "1h",
            Self::H6 => "6h",
            Self::H24 => "24h",
        }
    }
}

/// Computes the trend's report (off the async workers, one at a time with snapshots).
///
/// # Errors
/// [`CommandError::Internal`] if the blocking task panicked.
pub async fn report(services: &Services) -> Result<TrendReport, CommandError> {
    // The moment asked about is now, even if a snapshot holds the symbolizing lock.
    let frozen = services.trend.freeze();
    exclusive(services, move || frozen.report()).await
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
            "samples_needed": crate::trend::needed(w.samples),
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
            "frames": super::debug::frames_json(&s.frames),
            "inner_frames": super::debug::frames_json(&s.inner_frames),
            "size_bytes": s.size_bytes,
            "growth_bytes_per_hour": s.growth_bytes_per_hour,
            "grew_in": s.grew_in,
            "samples": s.evidence.map(|e| e.samples),
            "std_error_bytes": s.evidence.as_ref().map(super::debug::std_error_json),
            "retention": s.evidence.and_then(|e| e.retention).as_ref().map(super::debug::retention_json),
        })).collect::<Vec<_>>(),
    })
}
