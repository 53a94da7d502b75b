//! The bug report behind the panel's "Download report" (`GET /api/report`): one JSON
//! document with what a maintainer asks for in an issue — version, settings (secrets
//! redacted), tracking state, system and allocator totals, the current snapshot (and its
//! diff against a baseline when asked), and the most recent log lines.
//!
//! A report only looks: it never starts tracking and never saves or drops a baseline.
//! With tracking off, `snapshot` is null and `snapshot_unavailable` says why.

use std::time::SystemTime;

use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::args::optional_name;
use super::debug::{self, SnapshotArgs, Tracking, rfc3339, system_json, totals_json};
use super::{Command, CommandError, Document, Reply, SERVER_VERSION, Services, blocking};
use crate::logging;
use crate::memory::{self, GroupBy};

/// Rows in the report's snapshot when the request does not say: twice the panel's default,
/// so the report holds a little more than the screen showed.
pub const REPORT_TOP_N: i64 = 50;
/// Bumped when the report's shape changes incompatibly.
pub const REPORT_FORMAT: u32 = 1;

/// The report as a download (`GET /api/report`).
pub const REPORT: Command = Command {
    name: "debug/memory_report",
    summary: "A bug report: version, settings, tracking, system and allocator totals, the snapshot, the trend and recent log lines, as a JSON download.",
    run: |ctx, args| {
        Box::pin(async move {
            let args: ReportArgs = args.parse()?;
            let report = build(&ctx.services, args.into_snapshot_args()?).await?;
            let body = serde_json::to_vec_pretty(&report).expect("a JSON value always serializes");
            Ok(Reply::Document(Document {
                body,
                content_type: "application/json",
                file_name: Some(file_name(SystemTime::now())),
            }))
        })
    },
};

/// The report's arguments: `debug/memory_snapshot`'s, less the two that change baselines
/// (accepted only to be refused in words that say why).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportArgs {
    #[serde(default = "report_top_n", deserialize_with = "debug::top_n")]
    top_n: usize,
    #[serde(
        default = "debug::group_by_default",
        deserialize_with = "debug::group_by"
    )]
    group_by: GroupBy,
    #[serde(default, deserialize_with = "optional_name")]
    compare_with: Option<String>,
    #[serde(default, deserialize_with = "debug::order")]
    order: Option<memory::Order>,
    save_as: Option<IgnoredAny>,
    drop_baseline: Option<IgnoredAny>,
}

fn report_top_n() -> usize {
    usize::try_from(REPORT_TOP_N).expect("50 fits")
}

impl ReportArgs {
    fn into_snapshot_args(self) -> Result<SnapshotArgs, CommandError> {
        for (field, given) in [
            ("save_as", self.save_as.is_some()),
            ("drop_baseline", self.drop_baseline.is_some()),
        ] {
            if given {
                return Err(CommandError::InvalidArgs(format!(
                    "argument `{field}`: a report does not change baselines; use debug/memory_snapshot"
                )));
            }
        }
        SnapshotArgs {
            top_n: self.top_n,
            group_by: self.group_by,
            save_as: None,
            compare_with: self.compare_with,
            drop_baseline: None,
            order: self.order,
        }
        .checked()
    }
}

/// Builds a report.
///
/// # Errors
/// `not_found` (unknown `compare_with`, or one given while tracking is off).
pub async fn build(services: &Services, args: SnapshotArgs) -> Result<Value, CommandError> {
    let tracking_on = memory::status().enabled;
    if !tracking_on && let Some(c) = &args.compare_with {
        return Err(CommandError::NotFound(format!(
            "no baseline named {c:?}: allocation tracking is off, so no baselines exist"
        )));
    }

    let sampler = services.system.clone();
    let (system, totals) = blocking(move || (sampler.sample(), memory::totals())).await?;
    let (snapshot, unavailable) = if tracking_on {
        match debug::snapshot(services, args, Tracking::MustBeOn).await {
            Ok(s) => (s, Value::Null),
            Err(e @ CommandError::Unavailable(_)) => (Value::Null, Value::from(e.details())),
            Err(e) => return Err(e),
        }
    } else {
        (
            Value::Null,
            Value::from("allocation tracking is off: start it in the panel, then download again"),
        )
    };
    let trend = super::trend::report(services).await?;
    let logs = logging::ring().recent();
    let server = &services.server;
    Ok(json!({
        "report": "heapwatch",
        "format": REPORT_FORMAT,
        "generated_at": rfc3339(SystemTime::now()),
        "server_version": SERVER_VERSION,
        "ha_addon": server.ha_addon,
        "uptime_s": server.started_at.elapsed().as_secs(),
        "platform": {"os": std::env::consts::OS, "arch": std::env::consts::ARCH},
        "settings": server.settings_json,
        "tracking": debug::tracking_json(),
        "system": system_json(&system),
        "allocator": totals_json(&totals),
        "snapshot": snapshot,
        "snapshot_unavailable": unavailable,
        "trend": super::trend::report_json(&trend),
        "logs": {
            "lines": logs.lines,
            "dropped_lines": logs.dropped,
            "max_lines": logging::RING_MAX_LINES,
            "max_bytes": logging::RING_MAX_BYTES,
        },
    }))
}

/// The file name a browser saves the report under: `heapwatch-report-<UTC time>.json`.
pub fn file_name(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "heapwatch-report-{:04}{:02}{:02}T{:02}{:02}{:02}Z.json",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_is_utc_and_safe() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        let name = file_name(at);
        assert_eq!(name, "heapwatch-report-20261118T110640Z.json");
    }
}
