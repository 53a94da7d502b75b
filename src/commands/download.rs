//! The documents the HTTP transport serves besides JSON: the tracked heap (or a saved
//! baseline) as a pprof profile, folded stacks or a flame graph, and the Prometheus
//! metrics. Each is a command in [`super::DOCUMENTS`] answering with a
//! [`Document`](super::Document).
//!
//! Checks come first (tracking on, baseline known), then the snapshot is taken,
//! symbolized and formatted on a blocking thread, one at a time with every other
//! snapshot (see `Heap::exclusive`). The formats are in `crate::export`.

use std::time::SystemTime;

use super::args::optional_name;
use super::debug::{not_found, rfc3339};
use super::{Command, CommandError, Document, NoArgs, Reply, Services, exclusive};
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

/// `GET /api/memory/profile.pb.gz`.
pub const PROFILE: Command = Command {
    name: "debug/memory_profile",
    summary: "The tracked heap (or a saved baseline) as a gzipped pprof profile.",
    run: |ctx, args| {
        Box::pin(async move { heap(&ctx.services, Format::Pprof, args.parse()?).await })
    },
};

/// `GET /api/memory/folded`.
pub const FOLDED: Command = Command {
    name: "debug/memory_folded",
    summary: "The tracked heap as folded stacks (with a baseline: the difference from it).",
    run: |ctx, args| {
        Box::pin(async move { heap(&ctx.services, Format::Folded, args.parse()?).await })
    },
};

/// `GET /api/memory/flamegraph.svg`.
pub const FLAMEGRAPH: Command = Command {
    name: "debug/memory_flamegraph",
    summary: "The tracked heap as an SVG flame graph (with a baseline: a differential one).",
    run: |ctx, args| {
        Box::pin(async move { heap(&ctx.services, Format::FlameGraph, args.parse()?).await })
    },
};

/// `GET /metrics`.
pub const METRICS: Command = Command {
    name: "system/metrics",
    summary: "Prometheus metrics: allocator totals, tracking, system memory, the trend's slopes and the top sites.",
    run: |ctx, args| {
        Box::pin(async move {
            let NoArgs {} = args.parse()?;
            let text = metrics_text(&ctx.services).await?;
            Ok(Reply::Document(Document {
                body: text.into_bytes(),
                content_type: metrics::CONTENT_TYPE,
                file_name: None,
            }))
        })
    },
};

/// The heap exports' one argument.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportArgs {
    /// A saved baseline: the profile of it, or the difference from it.
    #[serde(default, deserialize_with = "optional_name")]
    pub baseline: Option<String>,
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
/// `internal_error` if formatting fails.
pub async fn heap(
    services: &Services,
    format: Format,
    args: ExportArgs,
) -> Result<Reply, CommandError> {
    tracking_on()?;
    let baseline_name = args.baseline;
    let base = match &baseline_name {
        Some(name) => Some(services.heap.baseline(name).map_err(not_found)?),
        None => None,
    };
    let document = exclusive(services, move || -> Result<Document, CommandError> {
        let internal = |e: std::io::Error| CommandError::Internal(format!("export failed: {e}"));
        match format {
            Format::Pprof => {
                let snap = base.unwrap_or_else(memory::take_snapshot);
                let stacks = snap.symbolized_stacks();
                let profile = pprof::profile(&snap, &stacks, pprof::binary_info());
                Ok(Document {
                    body: pprof::encode_gzip(&profile).map_err(internal)?,
                    content_type: "application/octet-stream",
                    // The profile downloads as a file; text and SVG open in the browser.
                    file_name: Some("heapwatch-heap.pb.gz".into()),
                })
            }
            Format::Folded | Format::FlameGraph => {
                let now = memory::take_snapshot();
                let now_folded = folded::fold(&now.symbolized_stacks());
                let before = base.as_ref().map(|b| folded::fold(&b.symbolized_stacks()));
                let (body, content_type) = match (format, &before) {
                    (Format::Folded, None) => (
                        folded::render(&now_folded).into_bytes(),
                        "text/plain; charset=utf-8",
                    ),
                    (Format::Folded, Some(before)) => (
                        folded::render_diff(before, &now_folded).into_bytes(),
                        "text/plain; charset=utf-8",
                    ),
                    (_, None) => (
                        flamegraph::live(&now_folded, &describe(&now)).map_err(internal)?,
                        "image/svg+xml",
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
                    ),
                };
                Ok(Document {
                    body,
                    content_type,
                    file_name: None,
                })
            }
        }
    })
    .await??;
    Ok(Reply::Document(document))
}

/// The Prometheus metrics text (see `export::metrics` for the names).
///
/// # Errors
/// `internal_error` if the blocking task panicked.
pub async fn metrics_text(services: &Services) -> Result<String, CommandError> {
    let (system, monitor) = (services.system.clone(), services.trend.clone());
    let host = services.host.clone();
    exclusive(services, move || {
        let system = system.sample();
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
        let report = monitor.report();
        // Judging every container is Theil–Sen per window: here, off the async workers.
        let containers = host
            .table()
            .into_iter()
            .map(|r| {
                let growing =
                    r.judgement.verdict == crate::host::history::ContainerVerdict::Growing;
                (r.slug, r.memory_bytes, growing)
            })
            .collect();
        metrics::encode(&metrics::Input {
            totals: memory::totals(),
            tracking: Some(status),
            system,
            windows: report.windows,
            growing_sites: report.growing_sites.len(),
            top_sites,
            containers,
        })
    })
    .await
}
