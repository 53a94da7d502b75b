//! `debug/memory_snapshot` and `debug/memory_reset_peak`: the tracker's answers, in the
//! ESPHome device-builder's shape (top_n, save_as, compare_with, drop_baseline) and beyond.
//!
//! This file translates between JSON and the typed `memory` and `system` APIs; the heavy
//! work (copying per-stack totals, symbolizing, sampling /proc) runs on a blocking thread.

use std::time::SystemTime;

use serde_json::{Value, json};

use std::sync::Arc;

use super::{Command, CommandError, NoArgs, Shared, blocking, parse_args};
use crate::memory::{
    self, Baselines, GroupBy, MemoryError, Mode, Statistic, Totals, TrackingConfig,
};
use crate::settings::{MemoryMode, Settings};
use crate::system::SystemMemory;

/// Bounds of `top_n`: 200 rows keep a reply far under ingress's 4 MiB message limit even
/// with 64-frame tracebacks.
pub const TOP_N_MAX: i64 = 200;
/// The device-builder's default.
pub const TOP_N_DEFAULT: i64 = 25;
/// Longest baseline name, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// `debug/memory_snapshot`.
pub const MEMORY_SNAPSHOT: Command = Command {
    name: "debug/memory_snapshot",
    summary: "Top-N allocation sites, optionally compared with a saved baseline; starts tracking if it is off.",
    run: |ctx, args| {
        Box::pin(async move {
            let args = SnapshotArgs::parse(args)?;
            snapshot(ctx.shared, args, Tracking::StartIfOff)
                .await
                .map(Into::into)
        })
    },
};

/// `debug/memory_reset_peak`.
pub const MEMORY_RESET_PEAK: Command = Command {
    name: "debug/memory_reset_peak",
    summary: "Resets the peak heap bytes to the current bytes and returns the allocator totals.",
    run: |_ctx, args| {
        Box::pin(async move {
            let NoArgs {} = parse_args(args)?;
            Ok(totals_json(&memory::reset_peak()).into())
        })
    },
};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshotArgs {
    top_n: Option<Value>,
    group_by: Option<Value>,
    save_as: Option<Value>,
    compare_with: Option<Value>,
    drop_baseline: Option<Value>,
}

/// Validated `debug/memory_snapshot` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotArgs {
    pub top_n: usize,
    pub group_by: GroupBy,
    pub save_as: Option<String>,
    pub compare_with: Option<String>,
    pub drop_baseline: Option<String>,
}

impl SnapshotArgs {
    /// Validates raw JSON arguments; every error names the argument.
    ///
    /// # Errors
    /// [`CommandError::InvalidArgs`].
    pub fn parse(args: Value) -> Result<Self, CommandError> {
        let raw: RawSnapshotArgs = parse_args(args)?;
        let top_n = match raw.top_n {
            None | Some(Value::Null) => TOP_N_DEFAULT,
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (1..=TOP_N_MAX).contains(&n)) => {
                n.as_i64().expect("checked above")
            }
            Some(other) => {
                return Err(CommandError::InvalidArgs(format!(
                    "argument `top_n`: expected an integer from 1 to {TOP_N_MAX}, got {}",
                    short(&other)
                )));
            }
        };
        let group_by = match raw.group_by {
            None | Some(Value::Null) => GroupBy::Site,
            Some(Value::String(s)) => match s.as_str() {
                "site" => GroupBy::Site,
                "function" => GroupBy::Function,
                "file" => GroupBy::File,
                "traceback" => GroupBy::Traceback,
                _ => return Err(bad_group_by(&Value::String(s))),
            },
            Some(other) => return Err(bad_group_by(&other)),
        };
        Ok(Self {
            top_n: usize::try_from(top_n).expect("1..=200 fits"),
            group_by,
            save_as: name_arg("save_as", raw.save_as)?,
            compare_with: name_arg("compare_with", raw.compare_with)?,
            drop_baseline: name_arg("drop_baseline", raw.drop_baseline)?,
        })
    }
}

fn bad_group_by(v: &Value) -> CommandError {
    CommandError::InvalidArgs(format!(
        "argument `group_by`: expected one of \"site\", \"function\", \"file\", \"traceback\", got {}",
        short(v)
    ))
}

/// A JSON value shortened for an error message (never echoes a 10 KB string whole).
fn short(v: &Value) -> String {
    super::shorten(&v.to_string(), 40)
}

fn name_arg(field: &str, v: Option<Value>) -> Result<Option<String>, CommandError> {
    let invalid = |why: String| CommandError::InvalidArgs(format!("argument `{field}`: {why}"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            if chars == 0 {
                Err(invalid("must not be empty".into()))
            } else if chars > NAME_MAX_CHARS {
                Err(invalid(format!(
                    "at most {NAME_MAX_CHARS} characters, got {chars}"
                )))
            } else if s.chars().any(char::is_control) {
                Err(invalid("must not contain control characters".into()))
            } else {
                Ok(Some(s))
            }
        }
        Some(other) => Err(invalid(format!("expected a string, got {}", short(&other)))),
    }
}

/// The tracker configuration the settings ask for.
pub fn tracking_config(settings: &Settings) -> TrackingConfig {
    TrackingConfig {
        mode: match settings.debug_memory_mode {
            MemoryMode::Sampled => Mode::Sampled,
            MemoryMode::Exact => Mode::Exact,
        },
        frames: settings.debug_memory_frames,
        sample_interval_bytes: u64::from(settings.debug_memory_sample_kib) * 1024,
    }
}

/// RFC 3339 in UTC, as every timestamp on the wire.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a SystemTime always formats as RFC 3339")
}

/// The tracking state as every reply shows it. (Fields in alphabetical order, as a `Value`
/// map writes them: `system/info` serializes this directly.)
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TrackingJson {
    pub enabled: bool,
    pub estimated: bool,
    pub frames: u32,
    pub mode: &'static str,
    pub sample_interval_bytes: Option<u64>,
    pub since: Option<String>,
}

/// The tracking state now.
pub fn tracking() -> TrackingJson {
    let s = memory::status();
    TrackingJson {
        enabled: s.enabled,
        estimated: s.enabled && s.mode == Mode::Sampled,
        frames: s.frames,
        mode: match s.mode {
            Mode::Sampled => "sampled",
            Mode::Exact => "exact",
        },
        sample_interval_bytes: s.sample_interval_bytes,
        since: s.since.map(rfc3339),
    }
}

/// The tracking state as a JSON tree (for results built with `json!`).
pub fn tracking_json() -> Value {
    serde_json::to_value(tracking()).expect("the tracking state always serializes")
}

/// The allocator totals as JSON.
pub fn totals_json(t: &Totals) -> Value {
    json!({
        "current_bytes": t.current_bytes,
        "peak_bytes": t.peak_bytes,
        "live_blocks": t.live_blocks,
        "total_allocations": t.total_allocations,
        "tracked_stacks": t.tracked_stacks,
        "dropped_stacks": t.dropped_stacks,
        "overhead_bytes": t.overhead_bytes,
    })
}

/// System memory as JSON.
pub fn system_json(m: &SystemMemory) -> Value {
    json!({
        "process": {
            "rss_bytes": m.process.rss_bytes,
            "peak_rss_bytes": m.process.peak_rss_bytes,
            "virtual_bytes": m.process.virtual_bytes,
        },
        "host": {
            "total_bytes": m.host.total_bytes,
            "available_bytes": m.host.available_bytes,
            "used_bytes": m.host.used_bytes,
            "swap_total_bytes": m.host.swap_total_bytes,
            "swap_used_bytes": m.host.swap_used_bytes,
        },
        "cgroup": m.cgroup.map(|c| json!({"limit_bytes": c.limit_bytes, "usage_bytes": c.usage_bytes})),
    })
}

fn statistic_json(s: &Statistic) -> Value {
    json!({
        "traceback": s.traceback,
        "size_bytes": s.size_bytes,
        "size_diff_bytes": s.size_diff_bytes,
        "count": s.count,
        "count_diff": s.count_diff,
    })
}

fn names_of(b: &Baselines) -> Vec<String> {
    b.list().into_iter().map(|(n, _)| n).collect()
}

/// The saved baselines with when each was taken, sorted by name.
fn baselines_json(b: &Baselines) -> Value {
    b.list()
        .into_iter()
        .map(|(name, taken_at)| json!({"name": name, "taken_at": taken_at.map(rfc3339)}))
        .collect()
}

/// Whether taking a snapshot may start tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// `debug/memory_snapshot`'s lazy enable.
    StartIfOff,
    /// Reports only look: with tracking off they get `unavailable`.
    MustBeOn,
}

/// The note on the call that started tracking.
pub const STARTED_NOTE: &str = "Allocation tracking started now; it only sees memory allocated from now on. \
Run the workload you suspect, then call debug/memory_snapshot again with save_as to keep a baseline, \
and later with compare_with to see what grew since.";

/// Takes a snapshot, compares it, saves or drops baselines as `args` ask: the result of
/// `debug/memory_snapshot`.
///
/// # Errors
/// `not_found` (unknown `compare_with`), `precondition_failed` (a ninth baseline),
/// `unavailable` (the tracker is not installed, or it is off and `tracking` is
/// [`Tracking::MustBeOn`]).
pub async fn snapshot(
    shared: Arc<Shared>,
    args: SnapshotArgs,
    tracking: Tracking,
) -> Result<Value, CommandError> {
    if tracking == Tracking::MustBeOn && !memory::status().enabled {
        return Err(CommandError::Unavailable(
            "allocation tracking is off; start it from the panel or with debug/memory_snapshot"
                .into(),
        ));
    }
    // One snapshot at a time: the lock is async because the blocking work is awaited.
    let _serial = shared.snapshot_lock.lock().await;

    // Check what would fail before changing anything.
    {
        let baselines = shared.baselines.lock().expect("baselines lock poisoned");
        let mut names = names_of(&baselines);
        if let Some(d) = &args.drop_baseline {
            names.retain(|n| n != d);
        }
        if let Some(c) = &args.compare_with
            && !names.contains(c)
        {
            return Err(CommandError::NotFound(format!(
                "no baseline named {c:?}; saved baselines: {}",
                list_or_none(&names)
            )));
        }
        if let Some(s) = &args.save_as
            && !names.contains(s)
            && names.len() >= Baselines::MAX
        {
            return Err(full_error(Baselines::MAX, &names));
        }
    }

    if let Some(d) = &args.drop_baseline {
        shared
            .baselines
            .lock()
            .expect("baselines lock poisoned")
            .remove(d);
    }
    let started_now = match memory::start(tracking_config(&shared.settings)) {
        Ok(started) => started,
        Err(MemoryError::NotInstalled) => {
            return Err(CommandError::Unavailable(
                "allocation tracking is unavailable: the heapwatch tracker is not this process's global allocator".into(),
            ));
        }
        Err(e) => return Err(CommandError::Internal(e.to_string())),
    };
    if started_now {
        tracing::info!("allocation tracking started by debug/memory_snapshot");
    }

    let baseline = args.compare_with.as_ref().and_then(|c| {
        shared
            .baselines
            .lock()
            .expect("baselines lock poisoned")
            .get(c)
            .cloned()
    });
    let shared2 = shared.clone();
    let (group_by, top_n) = (args.group_by, args.top_n);
    let (snapshot, rows, system, totals) = blocking(move || {
        let snapshot = memory::take_snapshot();
        let totals = memory::totals();
        let rows = match &baseline {
            Some(old) => snapshot.compare_to(old, group_by, top_n),
            None => snapshot.statistics(group_by, top_n),
        };
        let system = shared2
            .system
            .lock()
            .expect("system sampler lock poisoned")
            .sample();
        (snapshot, rows, system, totals)
    })
    .await?;

    let taken_at = snapshot.taken_at.unwrap_or_else(SystemTime::now);
    let (names, listed) = {
        let mut baselines = shared.baselines.lock().expect("baselines lock poisoned");
        if let Some(name) = &args.save_as {
            baselines.save(name, snapshot).map_err(|e| match e {
                MemoryError::BaselinesFull { max, names } => full_error(max, &names),
                other => CommandError::Internal(other.to_string()),
            })?;
        }
        (names_of(&baselines), baselines_json(&baselines))
    };

    let mut result = json!({
        "taken_at": rfc3339(taken_at),
        "tracking": tracking_json(),
        "allocator": totals_json(&totals),
        "system": system_json(&system),
        "group_by": match group_by {
            GroupBy::Site => "site",
            GroupBy::Function => "function",
            GroupBy::File => "file",
            GroupBy::Traceback => "traceback",
        },
        "compared_with": args.compare_with,
        "top_allocators": rows.iter().map(statistic_json).collect::<Vec<_>>(),
        "baseline_names": names,
        "baselines": listed,
    });
    if started_now {
        result["note"] = Value::String(STARTED_NOTE.into());
    }
    Ok(result)
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn full_error(max: usize, names: &[String]) -> CommandError {
    CommandError::PreconditionFailed(format!(
        "at most {max} baselines can be saved; drop one first (drop_baseline). Saved: {}",
        list_or_none(names)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(args: Value) -> String {
        let e = SnapshotArgs::parse(args).unwrap_err();
        assert_eq!(e.code(), "invalid_args");
        e.details()
    }

    #[test]
    fn defaults() {
        let a = SnapshotArgs::parse(json!({})).unwrap();
        assert_eq!(a.top_n, 25);
        assert_eq!(a.group_by, GroupBy::Site);
        assert_eq!(
            (a.save_as, a.compare_with, a.drop_baseline),
            (None, None, None)
        );
    }

    #[test]
    fn every_rule_names_its_argument() {
        for bad in [
            json!(0),
            json!(201),
            json!(true),
            json!(2.5),
            json!("5"),
            json!(-1),
            json!([1]),
        ] {
            assert!(err(json!({"top_n": bad})).contains("top_n"), "{bad}");
        }
        assert_eq!(
            SnapshotArgs::parse(json!({"top_n": 200})).unwrap().top_n,
            200
        );
        assert_eq!(SnapshotArgs::parse(json!({"top_n": 1})).unwrap().top_n, 1);
        for bad in [json!("lineno"), json!(1), json!("")] {
            assert!(err(json!({"group_by": bad})).contains("group_by"));
        }
        for field in ["save_as", "compare_with", "drop_baseline"] {
            for bad in [
                json!(""),
                json!("a".repeat(101)),
                json!("a\nb"),
                json!("\u{7}"),
                json!(5),
            ] {
                assert!(err(json!({field: bad})).contains(field), "{field} {bad}");
            }
            let ok = SnapshotArgs::parse(json!({field: "ä".repeat(100)})).unwrap();
            assert!(
                ok.save_as.is_some() || ok.compare_with.is_some() || ok.drop_baseline.is_some()
            );
        }
        assert!(err(json!({"topn": 5})).contains("topn"));
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let d = err(json!({"group_by": "x".repeat(10_000)}));
        assert!(d.len() < 300, "{d}");
    }
}
