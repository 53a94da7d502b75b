//! What the export endpoints serve: the tracked heap (or a saved baseline) as a pprof
//! profile, folded stacks or a flame graph, and the Prometheus metrics.
//!
//! Checks come first (tracking on, baseline known), then the snapshot is taken,
//! symbolized and formatted on a blocking thread, one at a time with every other
//! snapshot (the snapshot lock). The formats are in `crate::export`.

use std::sync::Arc;
use std::time::SystemTime;

use super::debug::{NAME_MAX_CHARS, rfc3339};
use super::trend::report_blocking;
use super::{CommandError, Shared, blocking};
use crate::export::{flamegraph, folded, metrics, pprof};
use crate::memory::{self, GroupBy, Snapshot};

/// The formats of the tracked heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Gzipped profile.proto.
    Pprof,
    /// Folded stacks text.
    Folded,
    /// SVG flame graph.
    FlameGraph,
}

/// An exported document.
#[derive(Clone, Debug)]
pub struct Exported {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// A file name for `Content-Disposition`, for downloads.
    pub file_name: &'static str,
}

/// The details of the 409 every export answers while tracking is off.
pub const TRACKING_OFF: &str = "tracking is off: start it with debug/memory_snapshot (or turn on the debug_memory option), then export";

fn tracking_on() -> Result<(), CommandError> {
    if memory::status().enabled {
        Ok(())
    } else {
        Err(CommandError::PreconditionFailed(TRACKING_OFF.into()))
    }
}

/// The saved baseline `name`.
fn baseline(shared: &Shared, name: &str) -> Result<Snapshot, CommandError> {
    if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
        return Err(CommandError::InvalidArgs(format!(
            "argument `baseline`: 1 to {NAME_MAX_CHARS} characters"
        )));
    }
    let baselines = shared.baselines.lock().expect("baselines lock poisoned");
    baselines.get(name).cloned().ok_or_else(|| {
        let names: Vec<String> = baselines
            .list()
            .into_iter()
            .map(|(n, _)| format!("{n:?}"))
            .collect();
        CommandError::NotFound(format!(
            "no baseline named {name:?}; saved baselines: {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ))
    })
}

fn describe(snap: &Snapshot) -> String {
    let mode = match snap.sample_interval_bytes {
        Some(i) => format!("sampled every {i} bytes on average, sizes are estimates"),
        None => "exact".to_owned(),
    };
    let at = rfc3339(snap.taken_at.unwrap_or_else(SystemTime::now));
    format!("{mode}; taken {at}")
}

/// Exports the tracked heap in `format`; with `baseline`, the pprof profile is the saved
/// baseline itself, and the folded stacks and flame graph are the difference from it.
///
/// # Errors
/// `precondition_failed` when tracking is off, `not_found` for an unknown baseline,
/// `invalid_args` for a malformed name, `internal_error` if formatting fails.
pub async fn export(
    shared: Arc<Shared>,
    format: Format,
    baseline_name: Option<String>,
) -> Result<Exported, CommandError> {
    tracking_on()?;
    let base = match &baseline_name {
        Some(name) => Some(baseline(&shared, name)?),
        None => None,
    };
    let _serial = shared.snapshot_lock.lock().await;
    blocking(move || -> Result<Exported, CommandError> {
        let internal = |e: std::io::Error| CommandError::Internal(format!("export failed: {e}"));
        match format {
            Format::Pprof => {
                let snap = base.unwrap_or_else(memory::take_snapshot);
                let stacks = snap.symbolized_stacks();
                let profile = pprof::profile(&snap, &stacks, pprof::binary_info());
                Ok(Exported {
                    body: pprof::encode_gzip(&profile).map_err(internal)?,
                    content_type: "application/octet-stream",
                    file_name: "heapwatch-heap.pb.gz",
                })
            }
            Format::Folded | Format::FlameGraph => {
                let now = memory::take_snapshot();
                let now_folded = folded::fold(&now.symbolized_stacks());
                let before = base.as_ref().map(|b| folded::fold(&b.symbolized_stacks()));
                let (body, content_type, file_name) = match (format, &before) {
                    (Format::Folded, None) => (
                        folded::render(&now_folded).into_bytes(),
                        "text/plain; charset=utf-8",
                        "heapwatch-heap.folded",
                    ),
                    (Format::Folded, Some(before)) => (
                        folded::render_diff(before, &now_folded).into_bytes(),
                        "text/plain; charset=utf-8",
                        "heapwatch-heap-diff.folded",
                    ),
                    (_, None) => (
                        flamegraph::live(&now_folded, &describe(&now)).map_err(internal)?,
                        "image/svg+xml",
                        "heapwatch-heap.svg",
                    ),
                    (_, Some(before)) => (
                        flamegraph::diff(
                            before,
                            &now_folded,
                            baseline_name.as_deref().unwrap_or(""),
                            &describe(&now),
                        )
                        .map_err(internal)?,
                        "image/svg+xml",
                        "heapwatch-heap-diff.svg",
                    ),
                };
                Ok(Exported {
                    body,
                    content_type,
                    file_name,
                })
            }
        }
    })
    .await?
}

/// The Prometheus metrics text (see `export::metrics` for the names).
///
/// # Errors
/// `internal_error` if the blocking task panicked.
pub async fn metrics(shared: Arc<Shared>) -> Result<String, CommandError> {
    let serial = shared.clone();
    let _serial = serial.snapshot_lock.lock().await;
    blocking(move || {
        let system = shared
            .system
            .lock()
            .expect("system sampler lock poisoned")
            .sample();
        let status = memory::status();
        let top_sites = if status.enabled {
            memory::take_snapshot()
                .statistics(GroupBy::Site, metrics::TOP_SITES)
                .into_iter()
                .map(|s| {
                    (
                        s.traceback.first().cloned().unwrap_or_default(),
                        s.size_bytes,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let report = report_blocking(&shared);
        metrics::encode(&metrics::Input {
            totals: memory::totals(),
            tracking: Some(status),
            system,
            windows: report.windows,
            growing_sites: report.growing_sites.len(),
            top_sites,
        })
    })
    .await
}
