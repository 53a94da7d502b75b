//! `debug/memory_snapshot` and `debug/memory_reset_peak`: the tracker's answers, in the
//! ESPHome device-builder's shape (top_n, save_as, compare_with, drop_baseline) and beyond.
//!
//! This file translates between JSON and the typed `memory` and `system` APIs; the heavy
//! work (copying per-stack totals, symbolizing, sampling /proc) runs on a blocking thread.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::args::{Bounded, Range, optional_name};
use super::{Args, Command, CommandError, NoArgs, Services, blocking};
use crate::heap::{Coverage, NoBaseline, list_or_none, names_of};
use crate::memory::{
    self, Baselines, GroupBy, MemoryError, Mode, Order, Statistic, Totals, TrackingConfig,
};
use crate::system::SystemMemory;

pub use super::args::NAME_MAX_CHARS;

/// Bounds of `top_n`: 200 rows keep a reply far under ingress's 4 MiB message limit even
/// with 64-frame tracebacks.
pub const TOP_N_MAX: i64 = 200;
/// The device-builder's default.
pub const TOP_N_DEFAULT: i64 = 25;

/// `debug/memory_snapshot`.
pub const MEMORY_SNAPSHOT: Command = Command {
    name: "debug/memory_snapshot",
    summary: "Top-N allocation sites with the samples behind each, optionally compared with a saved baseline (by change, growth or leak suspects); starts tracking if it is off.",
    run: |ctx, args| {
        Box::pin(async move {
            let args = SnapshotArgs::checked(args.parse()?)?;
            snapshot(&ctx.services, args, Tracking::StartIfOff)
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
            let NoArgs {} = args.parse()?;
            Ok(totals_json(&memory::reset_peak()).into())
        })
    },
};

/// `top_n`'s bounds.
pub struct TopN;

impl Range for TopN {
    const MIN: u64 = 1;
    const MAX: u64 = TOP_N_MAX.unsigned_abs();
    const UNIT: &'static str = "";
}

/// `debug/memory_snapshot` arguments (also the report's, which refuses the two that
/// change baselines).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotArgs {
    /// Rows returned, 1 to [`TOP_N_MAX`] (default [`TOP_N_DEFAULT`]).
    #[serde(default = "top_n_default", deserialize_with = "top_n")]
    pub top_n: usize,
    /// How rows are grouped: `site` (default: the first frame in the application's own
    /// code), `innermost` (the first frame past the allocator, often in a dependency),
    /// `function`, `file` or `traceback`.
    #[serde(default = "group_by_default", deserialize_with = "group_by")]
    pub group_by: GroupBy,
    #[serde(default, deserialize_with = "optional_name")]
    pub save_as: Option<String>,
    #[serde(default, deserialize_with = "optional_name")]
    pub compare_with: Option<String>,
    #[serde(default, deserialize_with = "optional_name")]
    pub drop_baseline: Option<String>,
    /// How a comparison orders its rows (`change`, `growth` or `suspects`); only with
    /// `compare_with` (`None`: not given, which is `change`).
    #[serde(default, deserialize_with = "order")]
    pub order: Option<Order>,
}

impl SnapshotArgs {
    /// Validates JSON arguments; every error names the argument.
    ///
    /// # Errors
    /// [`CommandError::InvalidArgs`].
    pub fn parse(args: Value) -> Result<Self, CommandError> {
        Self::checked(Args::Json(args).parse()?)
    }

    /// The rules between arguments, after each was parsed on its own: `order` orders a
    /// comparison, so it needs `compare_with` (a client that sends it alone expects an
    /// order it would not get).
    ///
    /// # Errors
    /// [`CommandError::InvalidArgs`] naming `order`.
    pub fn checked(self) -> Result<Self, CommandError> {
        if self.order.is_some() && self.compare_with.is_none() {
            return Err(CommandError::InvalidArgs(
                "argument `order`: orders a comparison; give `compare_with` too, or leave `order` out".into(),
            ));
        }
        Ok(self)
    }

    /// The order of the comparison's rows (`change` when not given).
    pub fn order(&self) -> Order {
        self.order.unwrap_or_default()
    }
}

fn top_n_default() -> usize {
    usize::try_from(TOP_N_DEFAULT).expect("25 fits")
}

/// `top_n` for `#[serde(deserialize_with)]`: `null` is the default.
///
/// # Errors
/// Outside 1 to [`TOP_N_MAX`], or not an integer.
pub fn top_n<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n: Option<Bounded<TopN>> = serde::Deserialize::deserialize(d)?;
    Ok(n.map_or_else(top_n_default, |n| {
        usize::try_from(n.get()).expect("1..=200 fits")
    }))
}

/// `site`.
pub fn group_by_default() -> GroupBy {
    GroupBy::Site
}

/// `group_by` on the wire.
#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupByArg {
    Site,
    Function,
    File,
    Traceback,
    Innermost,
}

/// `group_by` for `#[serde(deserialize_with)]`: `null` is `site`.
///
/// # Errors
/// Not one of the five names.
pub fn group_by<'de, D: serde::Deserializer<'de>>(d: D) -> Result<GroupBy, D::Error> {
    let g: Option<GroupByArg> = serde::Deserialize::deserialize(d)?;
    Ok(match g {
        None | Some(GroupByArg::Site) => GroupBy::Site,
        Some(GroupByArg::Function) => GroupBy::Function,
        Some(GroupByArg::File) => GroupBy::File,
        Some(GroupByArg::Traceback) => GroupBy::Traceback,
        Some(GroupByArg::Innermost) => GroupBy::Innermost,
    })
}

/// `order` on the wire.
#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum OrderArg {
    Change,
    Growth,
    Suspects,
}

/// `order` for `#[serde(deserialize_with)]`: `null` is not given.
///
/// # Errors
/// Not one of `change`, `growth`, `suspects` (the error lists them).
pub fn order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Order>, D::Error> {
    let o: Option<OrderArg> = serde::Deserialize::deserialize(d)?;
    Ok(o.map(|o| match o {
        OrderArg::Change => Order::Change,
        OrderArg::Growth => Order::Growth,
        OrderArg::Suspects => Order::Suspects,
    }))
}

/// `order` as the wire spells it.
pub fn order_name(o: Order) -> &'static str {
    match o {
        Order::Change => "change",
        Order::Growth => "growth",
        Order::Suspects => "suspects",
    }
}

/// `group_by` as the wire spells it.
pub fn group_by_name(g: GroupBy) -> &'static str {
    match g {
        GroupBy::Site => "site",
        GroupBy::Function => "function",
        GroupBy::File => "file",
        GroupBy::Traceback => "traceback",
        GroupBy::Innermost => "innermost",
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
    /// The sampler's seed, when the session was started with one.
    pub seed: Option<u64>,
    pub since: Option<String>,
}

/// A tracking mode as the wire spells it.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Sampled => "sampled",
        Mode::Exact => "exact",
    }
}

/// The tracking state now.
pub fn tracking() -> TrackingJson {
    let s = memory::status();
    TrackingJson {
        enabled: s.enabled,
        estimated: s.enabled && s.mode == Mode::Sampled,
        frames: s.frames,
        mode: mode_name(s.mode),
        sample_interval_bytes: s.sample_interval_bytes,
        seed: s.seed,
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

/// Frames as the panel reads them: `{"function", "file", "line", "library"}` (file and
/// line null when unknown; `library` for the standard library, dependencies and the
/// tracker, which a panel collapses), the allocation site first.
pub fn frames_json(frames: &[memory::Frame]) -> Value {
    frames
        .iter()
        .map(|f| json!({"function": f.function, "file": f.file, "line": f.line, "library": f.library}))
        .collect()
}

/// One row: its site, sizes and the evidence behind them (`samples`, `std_error_bytes`
/// rounded to a byte, and in a compare of one session `retention`, else null).
pub fn statistic_json(s: &Statistic) -> Value {
    let e = &s.evidence;
    json!({
        "traceback": s.traceback,
        "frames": frames_json(&s.frames),
        "inner_frames": frames_json(&s.inner_frames),
        "size_bytes": s.size_bytes,
        "size_diff_bytes": s.size_diff_bytes,
        "count": s.count,
        "count_diff": s.count_diff,
        "samples": e.samples,
        "std_error_bytes": std_error_json(e),
        "retention": e.retention.as_ref().map(retention_json),
    })
}

/// A row's standard error on the wire: whole bytes.
pub fn std_error_json(e: &memory::Evidence) -> u64 {
    e.std_error_bytes.max(0.0).round() as u64
}

/// A compare row's retention on the wire (`leak_score` to two decimals).
pub fn retention_json(r: &memory::Retention) -> Value {
    json!({
        "new_alive": r.new_alive,
        "new_freed": r.new_freed,
        "old_freed": r.old_freed,
        "old_retained": r.old_retained,
        "leak_score": (r.leak_score * 100.0).round() / 100.0,
        "suspect": r.suspect,
    })
}

/// A tracking configuration as a reply shows it (the conflict's two sides).
fn config_json(c: &TrackingConfig) -> Value {
    let sampled = c.mode == Mode::Sampled;
    json!({
        "mode": mode_name(c.mode),
        "frames": c.frames,
        "sample_interval_bytes": sampled.then_some(c.sample_interval_bytes),
        "seed": c.seed,
    })
}

/// A tracking configuration in words: `sampled, 32 frames, one sample per 512.0 KiB,
/// unseeded`.
fn config_text(c: &TrackingConfig) -> String {
    match c.mode {
        Mode::Exact => format!("exact, {} frames", c.frames),
        Mode::Sampled => format!(
            "sampled, {} frames, one sample per {}, {}",
            c.frames,
            crate::heap::bytes_text(c.sample_interval_bytes),
            c.seed
                .map_or_else(|| "unseeded".to_owned(), |s| format!("seed {s}"))
        ),
    }
}

/// The note on a snapshot served from a session that runs with other settings than the
/// server's.
fn conflict_note(running: &TrackingConfig, requested: &TrackingConfig) -> String {
    format!(
        "Tracking already runs with other settings ({}) than this server's ({}): this snapshot \
         is from the running session, which is kept as it is. To track with the server's \
         settings, stop the running session (memory::stop in the program that started it) \
         or restart.",
        config_text(running),
        config_text(requested)
    )
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
    services: &Services,
    args: SnapshotArgs,
    tracking: Tracking,
) -> Result<Value, CommandError> {
    if tracking == Tracking::MustBeOn && !memory::status().enabled {
        return Err(CommandError::Unavailable(
            "allocation tracking is off; start it from the panel or with debug/memory_snapshot"
                .into(),
        ));
    }
    let heap = &services.heap;
    // One snapshot at a time: the lock is async because the blocking work is awaited.
    let _one_at_a_time = heap.exclusive().await;

    // Check what would fail before changing anything.
    {
        let baselines = heap.baselines();
        let mut names = names_of(&baselines);
        if let Some(d) = &args.drop_baseline {
            names.retain(|n| n != d);
        }
        if let Some(c) = &args.compare_with
            && !names.contains(c)
        {
            return Err(not_found(NoBaseline {
                name: c.clone(),
                saved: names,
            }));
        }
        if let Some(s) = &args.save_as
            && !names.contains(s)
            && names.len() >= Baselines::MAX
        {
            return Err(full_error(Baselines::MAX, &names));
        }
    }

    if let Some(d) = &args.drop_baseline {
        heap.baselines().remove(d);
    }
    // A session with other settings is served as it runs: nothing can stop it from here,
    // and refusing would leave the user without any snapshot; the reply says so.
    let (started_now, conflict) = match memory::start(heap.config()) {
        Ok(started) => (started, None),
        Err(MemoryError::RunningWithOtherSettings { running, requested }) => {
            (false, Some((running, requested)))
        }
        Err(MemoryError::NotInstalled) => {
            return Err(CommandError::Unavailable(
                "allocation tracking is unavailable: the heapwatch tracker is not this process's global allocator".into(),
            ));
        }
        Err(MemoryError::OutOfMemory) => {
            return Err(CommandError::Unavailable(
                "allocation tracking could not start: no memory for the tracker's tables; tracking stays off".into(),
            ));
        }
        Err(e) => return Err(CommandError::Internal(e.to_string())),
    };
    if started_now {
        tracing::info!("allocation tracking started by debug/memory_snapshot");
    }

    let baseline = args
        .compare_with
        .as_ref()
        // The server's copy of its own baseline: the tracker's memory, never a site.
        .and_then(|c| memory::untracked(|| heap.baselines().get(c).cloned()));
    let system_sampler = services.system.clone();
    let (group_by, top_n, order) = (args.group_by, args.top_n, args.order());
    let (snapshot, rows, system, totals, memo_bytes) = blocking(move || {
        let totals = memory::totals();
        let snapshot = memory::take_snapshot();
        let rows = match &baseline {
            Some(old) => snapshot.compare_ordered(old, group_by, order, top_n),
            None => snapshot.statistics(group_by, top_n),
        };
        let system = system_sampler.sample();
        // Walks the memo (up to 65,536 addresses): here, off the async workers.
        let memo_bytes = memory::symbol_memo_bytes();
        (snapshot, rows, system, totals, memo_bytes)
    })
    .await?;

    let taken_at = snapshot.taken_at.unwrap_or_else(SystemTime::now);
    // The tracker's own memory as it stands, before this snapshot joins the baselines.
    let tracker_bytes =
        heap.baselines().heap_bytes() + services.trend.checkpoint_bytes() + memo_bytes;
    let coverage = Coverage::of(
        &snapshot,
        &totals,
        tracker_bytes,
        memory::heap_at_start(),
        heap.tracking_from_boot(),
        started_now,
    );
    let (names, listed) = {
        let mut baselines = heap.baselines();
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
        "group_by": group_by_name(group_by),
        "order": args.compare_with.is_some().then(|| order_name(order)),
        "compared_with": args.compare_with,
        "coverage": coverage_json(&coverage),
        "top_allocators": rows.iter().map(statistic_json).collect::<Vec<_>>(),
        "baseline_names": names,
        "baselines": listed,
    });
    if started_now {
        result["note"] = Value::String(STARTED_NOTE.into());
    }
    if let Some((running, requested)) = conflict {
        tracing::warn!(
            running = %config_text(&running),
            requested = %config_text(&requested),
            "snapshot served from a tracking session with other settings"
        );
        result["note"] = Value::String(conflict_note(&running, &requested));
        result["settings_conflict"] = json!({
            "running": config_json(&running),
            "requested": config_json(&requested),
        });
    }
    Ok(result)
}

/// The coverage as every snapshot reply carries it (see [`Coverage`]).
pub fn coverage_json(c: &Coverage) -> Value {
    json!({
        "heap_bytes": c.heap_bytes,
        "attributed_bytes": c.attributed_bytes,
        "attributed_percent": c.attributed_percent(),
        "before_tracking_bytes": c.before_tracking_bytes,
        "tracker_bytes": c.tracker_bytes,
        "other_bytes": c.other_bytes,
        "heap_at_start_bytes": c.heap_at_start_bytes,
        "estimated": c.sample_interval_bytes.is_some(),
        "sample_interval_bytes": c.sample_interval_bytes,
        "sampling_error_bytes": c.sampling_error_bytes,
        "tracking_from_boot": c.from_boot,
        "hint": c.hint(),
    })
}

/// A missing baseline as the client sees it.
pub fn not_found(e: NoBaseline) -> CommandError {
    CommandError::NotFound(e.to_string())
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
        assert_eq!((a.order, a.order()), (None, Order::Change));
        assert_eq!(
            (a.save_as, a.compare_with, a.drop_baseline),
            (None, None, None)
        );
    }

    #[test]
    fn order_is_one_of_three_and_needs_compare_with() {
        for (name, want) in [
            ("change", Order::Change),
            ("growth", Order::Growth),
            ("suspects", Order::Suspects),
        ] {
            let a = SnapshotArgs::parse(json!({"order": name, "compare_with": "b"})).unwrap();
            assert_eq!(a.order(), want);
            assert_eq!(order_name(want), name);
        }
        let d = err(json!({"order": "leaks", "compare_with": "b"}));
        assert!(d.contains("`order`"), "{d}");
        for allowed in ["change", "growth", "suspects"] {
            assert!(d.contains(allowed), "the error lists {allowed}: {d}");
        }
        for bad in [json!(1), json!(true), json!(["growth"]), json!("Growth")] {
            assert!(err(json!({"order": bad, "compare_with": "b"})).contains("order"));
        }
        let d = err(json!({"order": "growth"}));
        assert!(d.contains("`order`") && d.contains("compare_with"), "{d}");
        // null is "not given".
        let a = SnapshotArgs::parse(json!({"order": null})).unwrap();
        assert_eq!(a.order, None);
        // Over HTTP the same rules hold.
        let q = |s: &str| SnapshotArgs::checked(Args::Query(s.into()).parse::<SnapshotArgs>()?);
        assert_eq!(
            q("compare_with=b&order=suspects").unwrap().order(),
            Order::Suspects
        );
        assert_eq!(q("order=growth").unwrap_err().code(), "invalid_args");
        assert_eq!(
            q("compare_with=b&order=nope").unwrap_err().code(),
            "invalid_args"
        );
    }

    #[test]
    fn rows_carry_their_evidence() {
        let mut row = Statistic {
            traceback: vec!["f (src/a.rs:1)".into()],
            frames: Vec::new(),
            inner_frames: Vec::new(),
            size_bytes: 4096,
            size_diff_bytes: 4096,
            count: 2,
            count_diff: 2,
            evidence: memory::Evidence {
                samples: 9,
                std_error_bytes: 1536.4,
                retention: None,
            },
        };
        let j = statistic_json(&row);
        assert_eq!(
            (&j["samples"], &j["std_error_bytes"], &j["retention"]),
            (&json!(9), &json!(1536), &Value::Null)
        );
        row.evidence.retention = Some(memory::Retention {
            new_alive: 9,
            new_freed: 0,
            old_freed: 0,
            old_retained: 3,
            leak_score: 3.004_9,
            suspect: true,
        });
        assert_eq!(
            statistic_json(&row)["retention"],
            json!({"new_alive": 9, "new_freed": 0, "old_freed": 0, "old_retained": 3,
                   "leak_score": 3.0, "suspect": true})
        );
    }

    #[test]
    fn a_conflict_names_both_settings() {
        let running = TrackingConfig {
            seed: Some(7),
            ..TrackingConfig::default()
        };
        let requested = TrackingConfig {
            mode: Mode::Exact,
            frames: 16,
            ..TrackingConfig::default()
        };
        let note = conflict_note(&running, &requested);
        assert!(
            note.contains("sampled, 32 frames, one sample per 512.0 KiB, seed 7")
                && note.contains("exact, 16 frames"),
            "{note}"
        );
        assert_eq!(
            config_json(&requested),
            json!({"mode": "exact", "frames": 16, "sample_interval_bytes": null, "seed": null})
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
