//! The bug report behind the panel's "Download report" (`GET /api/report`): one JSON
//! document with what a maintainer asks for in an issue — version, settings (secrets
//! redacted), tracking state, system and allocator totals, the current snapshot (and its
//! diff against a baseline when asked), and the most recent log lines.
//!
//! A report only looks: it never starts tracking and never saves or drops a baseline.
//! With tracking off, `snapshot` is null and `snapshot_unavailable` says why.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::debug::{self, SnapshotArgs, Tracking, rfc3339, system_json, totals_json};
use super::{CommandError, SERVER_VERSION, Shared, blocking};
use crate::{logging, memory};

/// Rows in the report's snapshot when the request does not say: twice the panel's default,
/// so the report holds a little more than the screen showed.
pub const REPORT_TOP_N: i64 = 50;
/// Bumped when the report's shape changes incompatibly.
pub const REPORT_FORMAT: u32 = 1;

/// Builds a report. `args` are `debug/memory_snapshot` arguments limited to `top_n`,
/// `group_by` and `compare_with`.
///
/// # Errors
/// `invalid_args` (a bad or state-changing argument), `not_found` (unknown
/// `compare_with`, or one given while tracking is off).
pub async fn build(shared: Arc<Shared>, mut args: Value) -> Result<Value, CommandError> {
    if let Some(obj) = args.as_object_mut() {
        for field in ["save_as", "drop_baseline"] {
            if obj.contains_key(field) {
                return Err(CommandError::InvalidArgs(format!(
                    "argument `{field}`: a report does not change baselines; use debug/memory_snapshot"
                )));
            }
        }
        obj.entry("top_n").or_insert(Value::from(REPORT_TOP_N));
    }
    let args = SnapshotArgs::parse(args)?;
    let tracking_on = memory::status().enabled;
    if !tracking_on && let Some(c) = &args.compare_with {
        return Err(CommandError::NotFound(format!(
            "no baseline named {c:?}: allocation tracking is off, so no baselines exist"
        )));
    }

    let sampler = shared.clone();
    let (system, totals) = blocking(move || {
        let system = sampler
            .system
            .lock()
            .expect("system sampler lock poisoned")
            .sample();
        (system, memory::totals())
    })
    .await?;
    let (snapshot, unavailable) = if tracking_on {
        match debug::snapshot(shared.clone(), args, Tracking::MustBeOn).await {
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
    let trend = super::trend::report(shared.clone()).await?;
    let logs = logging::ring().recent();
    Ok(json!({
        "report": "heapwatch",
        "format": REPORT_FORMAT,
        "generated_at": rfc3339(SystemTime::now()),
        "server_version": SERVER_VERSION,
        "ha_addon": shared.ha_addon,
        "uptime_s": shared.started_at.elapsed().as_secs(),
        "platform": {"os": std::env::consts::OS, "arch": std::env::consts::ARCH},
        "settings": shared.settings.redacted_json(),
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
