//! `host/memory` and `host/memory_history` (over HTTP: `GET /api/host/memory` and
//! `GET /api/host/memory_history`): which add-on, Core or the Supervisor keeps growing.
//! Translates the host monitor's typed rows into JSON.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::debug::rfc3339;
use super::{Command, CommandError};
use crate::host::history::{ContainerVerdict, HOUR_MS, WindowVerdict};
use crate::host::{HostMonitor, Row};

/// `host/memory`.
pub const MEMORY: Command = Command {
    name: "host/memory",
    summary: "Every add-on, Core, the Supervisor and the plugins: memory now, share of host RAM, 24 h sparkline and whether each keeps growing.",
    run: |ctx, args| {
        Box::pin(async move {
            let args: MemoryArgs = args.parse()?;
            // Judging every container (Theil–Sen per window) is CPU work: off the workers.
            let host = ctx.services.host.clone();
            let sort = args.sort.unwrap_or(Sort::Size);
            Ok(super::blocking(move || memory_json(&host, sort))
                .await?
                .into())
        })
    },
};

/// `host/memory_history`.
pub const MEMORY_HISTORY: Command = Command {
    name: "host/memory_history",
    summary: "One container's memory over a window (1h, 6h, 24h, 7d, 30d or 90d), with its restarts.",
    run: |ctx, args| {
        Box::pin(async move {
            let args: HistoryArgs = args.parse()?;
            // Long spans read the database: off the workers.
            let host = ctx.services.host.clone();
            super::blocking(move || history_json(&host, &args))
                .await?
                .map(Into::into)
        })
    },
};

/// How `host/memory` orders its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    /// Largest first (the default).
    Size,
    /// Fastest growing first, then largest.
    Growth,
}

/// `host/memory` arguments.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryArgs {
    pub sort: Option<Sort>,
}

/// A history window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum HistoryWindow {
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "6h")]
    H6,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "7d")]
    D7,
    #[serde(rename = "30d")]
    D30,
    #[serde(rename = "90d")]
    D90,
}

impl HistoryWindow {
    fn span_ms(self) -> i64 {
        HOUR_MS
            * match self {
                Self::H1 => 1,
                Self::H6 => 6,
                Self::H24 => 24,
                Self::D7 => 7 * 24,
                Self::D30 => 30 * 24,
                Self::D90 => 90 * 24,
            }
    }

    fn name(self) -> &'static str {
        match self {
            Self::H1 => "1h",
            Self::H6 => "6h",
            Self::H24 => "24h",
            Self::D7 => "7d",
            Self::D30 => "30d",
            Self::D90 => "90d",
        }
    }
}

/// `host/memory_history` arguments.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    pub slug: String,
    /// Default `24h`.
    #[serde(default = "day")]
    pub window: HistoryWindow,
}

fn day() -> HistoryWindow {
    HistoryWindow::H24
}

fn at(ms: i64) -> String {
    rfc3339(crate::host::from_unix_ms(ms))
}

fn window_json(w: &WindowVerdict) -> Value {
    json!({
        "window": w.window,
        "verdict": w.assessment.verdict.as_str(),
        "slope_bytes_per_hour": w.assessment.slope_bytes_per_hour,
        "consistency": w.assessment.consistency,
        "points": w.assessment.points,
    })
}

fn row_json(r: &Row) -> Value {
    let j = &r.judgement;
    json!({
        "slug": r.slug,
        "name": r.name,
        "kind": r.kind.as_str(),
        "state": r.state,
        "version": r.version,
        "memory_bytes": r.memory_bytes,
        "host_share": r.host_share,
        "verdict": j.verdict.as_str(),
        "slope_bytes_per_hour": j.slope_bytes_per_hour,
        "growing_since": j.growing_since_ms.map(at),
        "hours_to_exhaustion": r.hours_to_exhaustion,
        "restarts_7d": j.restarts_7d,
        "sawtooth": j.sawtooth,
        "windows": j.windows.iter().map(window_json).collect::<Vec<_>>(),
        "sparkline": r.sparkline.iter().map(|(t, b)| json!([t, b])).collect::<Vec<_>>(),
        "error": r.error,
    })
}

/// "Zigbee2MQTT: +28 MiB/h for 9 h" for the fastest grower.
pub fn banner(rows: &[Row], now_ms: i64) -> Option<String> {
    let top = rows
        .iter()
        .filter(|r| r.judgement.verdict == ContainerVerdict::Growing)
        .max_by(|a, b| {
            let s = |r: &Row| r.judgement.slope_bytes_per_hour.unwrap_or(0.0);
            s(a).total_cmp(&s(b))
        })?;
    let mib_per_hour = top.judgement.slope_bytes_per_hour.unwrap_or(0.0) / (1024.0 * 1024.0);
    let hours = top
        .judgement
        .growing_since_ms
        .map_or(0.0, |t| (now_ms - t) as f64 / HOUR_MS as f64);
    let sawtooth = if top.judgement.sawtooth {
        " (and again after each restart)"
    } else {
        ""
    };
    Some(format!(
        "{}: +{:.0} MiB/h for {:.0} h{sawtooth}",
        top.name,
        mib_per_hour.max(0.0),
        hours.max(0.0)
    ))
}

/// The `host/memory` result.
pub fn memory_json(host: &HostMonitor, sort: Sort) -> Value {
    let mut rows = host.table();
    if sort == Sort::Growth {
        // Growing first, then rising, each fastest first; then the rest by size.
        let rank = |r: &Row| match r.judgement.verdict {
            ContainerVerdict::Growing => 2,
            ContainerVerdict::Rising => 1,
            _ => 0,
        };
        let slope = |r: &Row| match r.judgement.verdict {
            ContainerVerdict::Growing | ContainerVerdict::Rising => {
                r.judgement.slope_bytes_per_hour.unwrap_or(0.0)
            }
            _ => f64::NEG_INFINITY,
        };
        rows.sort_by(|a, b| {
            rank(b)
                .cmp(&rank(a))
                .then_with(|| slope(b).total_cmp(&slope(a)))
                .then_with(|| b.memory_bytes.cmp(&a.memory_bytes))
        });
    }
    let status = host.status();
    let now = host.now_ms();
    json!({
        "enabled": host.off_reason().is_none(),
        "off_reason": host.off_reason(),
        "poll": {
            "interval_s": host.settings().poll_stands_for.as_secs(),
            "polls": status.polls,
            "last_at": status.last_at_ms.map(at),
            "last_duration_ms": status.last_duration.map(|d| d.as_millis()),
            "error": status.error,
        },
        "generated_at": rfc3339(SystemTime::now()),
        "now_ms": now,
        "banner": banner(&rows, now),
        "growing": slugs(&rows, ContainerVerdict::Growing),
        "rising": slugs(&rows, ContainerVerdict::Rising),
        "containers": rows.iter().map(row_json).collect::<Vec<_>>(),
    })
}

fn slugs(rows: &[Row], verdict: ContainerVerdict) -> Vec<&str> {
    rows.iter()
        .filter(|r| r.judgement.verdict == verdict)
        .map(|r| r.slug.as_str())
        .collect()
}

/// The `host/memory_history` result.
///
/// # Errors
/// `not_found` for a slug the monitor has not seen.
pub fn history_json(host: &HostMonitor, args: &HistoryArgs) -> Result<Value, CommandError> {
    let crate::host::Span { points, restarts } = host
        .history(&args.slug, args.window.span_ms())
        .ok_or_else(|| {
            CommandError::NotFound(format!(
                "no container {:?} has been polled; host/memory lists them",
                super::shorten(&args.slug, 100)
            ))
        })?;
    Ok(json!({
        "slug": args.slug,
        "now_ms": host.now_ms(),
        "window": args.window.name(),
        "averaged": args.window.span_ms() > crate::host::history::RAW_SPAN_MS,
        "points": points.iter().map(|(t, b)| json!([t, b])).collect::<Vec<_>>(),
        "restarts": restarts.into_iter().map(at).collect::<Vec<_>>(),
    }))
}
