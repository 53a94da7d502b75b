//! Prometheus metrics, written by the Prometheus project's own client crate
//! (`prometheus-client`) in the classic text exposition format (version 0.0.4), which
//! every Prometheus server, `promtool check metrics` and Grafana Agent accept. The crate's
//! default encoder writes OpenMetrics; we use its `prometheus_text` encoder and serve
//! [`CONTENT_TYPE`].
//!
//! A fresh registry is filled for each scrape from typed values, so nothing is kept
//! between scrapes and label sets cannot accumulate: the `site` label carries at most
//! [`TOP_SITES`] values, the trend labels a fixed set of windows and series.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::memory::{Mode, Totals, TrackingStatus};
use crate::system::SystemMemory;
use crate::trend::{Verdict, WindowReport};

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Sites exported at most, so the `site` label's cardinality is bounded whatever the heap.
pub const TOP_SITES: usize = 10;

/// Longest `site` label value, in characters (a long generic Rust name is cut).
pub const SITE_LABEL_MAX_CHARS: usize = 200;

/// Everything one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub totals: Totals,
    pub tracking: Option<TrackingStatus>,
    pub system: SystemMemory,
    pub windows: Vec<WindowReport>,
    /// Growing sites found in the checkpoints.
    pub growing_sites: usize,
    /// The largest sites, "function (file:line)" and bytes; only the first
    /// [`TOP_SITES`] are used.
    pub top_sites: Vec<(String, u64)>,
    /// Host view: per container, (slug, memory bytes, growing); at most
    /// `host::MAX_CONTAINERS` (200) of them, so the series stay bounded.
    pub containers: Vec<(String, Option<u64>, bool)>,
}

type Labels = Vec<(&'static str, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let g: Gauge<i64> = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, g),
        None => registry.register(name, help, g),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Writes every metric of `input` in the Prometheus text format.
pub fn encode(input: &Input) -> String {
    let mut root = Registry::default();
    gauge(
        &mut root,
        "process_resident_memory",
        "Resident memory size of this process (RSS)",
        Some(Unit::Bytes),
        input.system.process.rss_bytes,
    );

    let reg = root.sub_registry_with_prefix("heapwatch");
    let t = &input.totals;
    gauge(
        reg,
        "heap_current",
        "Live heap bytes allocated through the global allocator (requested sizes)",
        Some(Unit::Bytes),
        t.current_bytes,
    );
    gauge(
        reg,
        "heap_peak",
        "Highest live heap bytes since start or the last peak reset",
        Some(Unit::Bytes),
        t.peak_bytes,
    );
    gauge(
        reg,
        "heap_live_blocks",
        "Live heap blocks",
        None,
        t.live_blocks,
    );
    let allocations: Counter<u64> = Counter::default();
    allocations.inc_by(t.total_allocations);
    reg.register(
        "heap_allocations",
        "Allocations since the process started (a realloc counts as one)",
        allocations,
    );
    gauge(
        reg,
        "process_peak_resident_memory",
        "The kernel's high-water mark of this process's RSS (VmHWM)",
        Some(Unit::Bytes),
        input.system.process.peak_rss_bytes,
    );
    let host = &input.system.host;
    gauge(
        reg,
        "host_memory_total",
        "Host memory",
        Some(Unit::Bytes),
        host.total_bytes,
    );
    gauge(
        reg,
        "host_memory_available",
        "Host memory available for new allocations without swapping",
        Some(Unit::Bytes),
        host.available_bytes,
    );
    gauge(
        reg,
        "host_swap_used",
        "Host swap in use",
        Some(Unit::Bytes),
        host.swap_used_bytes,
    );
    if let Some(cg) = input.system.cgroup {
        gauge(
            reg,
            "cgroup_memory_usage",
            "Memory used by this process's cgroup (the add-on container)",
            Some(Unit::Bytes),
            cg.usage_bytes,
        );
        if let Some(limit) = cg.limit_bytes {
            gauge(
                reg,
                "cgroup_memory_limit",
                "Memory limit of this process's cgroup (absent when unlimited)",
                Some(Unit::Bytes),
                limit,
            );
        }
    }

    // Tracking: on or off, and the mode (one series per mode, the active one is 1).
    let enabled = input.tracking.is_some_and(|s| s.enabled);
    gauge(
        reg,
        "tracking_enabled",
        "1 while allocation-site tracking runs",
        None,
        u64::from(enabled),
    );
    let mode: Family<Labels, Gauge<i64>> = Family::default();
    for (name, m) in [("sampled", Mode::Sampled), ("exact", Mode::Exact)] {
        let on = input.tracking.is_some_and(|s| s.enabled && s.mode == m);
        mode.get_or_create(&vec![("mode", name.to_owned())])
            .set(i64::from(on));
    }
    reg.register(
        "tracking_mode",
        "1 for the running tracking mode (both 0 when tracking is off)",
        mode,
    );
    gauge(
        reg,
        "tracking_sample_interval",
        "Mean sampling interval of sampled tracking (0 in exact mode or when off)",
        Some(Unit::Bytes),
        input
            .tracking
            .and_then(|s| s.sample_interval_bytes)
            .unwrap_or(0),
    );
    gauge(
        reg,
        "tracker_overhead",
        "Bytes the tracker itself holds (block table, stack table, filter); 0 when off",
        Some(Unit::Bytes),
        t.overhead_bytes,
    );
    gauge(
        reg,
        "tracker_stacks",
        "Distinct call stacks the running tracking session has interned",
        None,
        t.tracked_stacks,
    );
    gauge(
        reg,
        "tracker_dropped_stacks",
        "Blocks attributed to the overflow bucket because the stack table was full",
        None,
        t.dropped_stacks,
    );

    // The trend: slope and verdict per window and series, only where there is data.
    let slope: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    let growing: Family<Labels, Gauge<i64>> = Family::default();
    for w in &input.windows {
        for (series, a) in [("rss", &w.rss), ("heap", &w.heap)] {
            let labels = vec![("window", w.name.to_owned()), ("series", series.to_owned())];
            if let Some(s) = a.slope_bytes_per_hour {
                slope.get_or_create(&labels).set(s);
                growing
                    .get_or_create(&labels)
                    .set(i64::from(a.verdict == Verdict::Growing));
            }
        }
    }
    reg.register(
        "trend_slope_bytes_per_hour",
        "Robust (Theil-Sen) slope of the series over the window; absent until the window has enough samples",
        slope,
    );
    reg.register(
        "trend_growing",
        "1 when the trend verdict for the window is growing, 0 when stable; absent with insufficient data",
        growing,
    );
    gauge(
        reg,
        "trend_growing_sites",
        "Allocation sites that grew at each of the last 3 or more checkpoints",
        None,
        input.growing_sites as u64,
    );

    let sites: Family<Labels, Gauge<i64>> = Family::default();
    for (site, bytes) in input.top_sites.iter().take(TOP_SITES) {
        sites
            .get_or_create(&vec![("site", truncate(site, SITE_LABEL_MAX_CHARS))])
            .inc_by(i64::try_from(*bytes).unwrap_or(i64::MAX));
    }
    reg.register_with_unit(
        "site",
        "Live bytes of the largest allocation sites (top 10, estimates in sampled mode; absent when tracking is off)",
        Unit::Bytes,
        sites,
    );

    // The host view: one series per container (bounded by the installed add-ons).
    let container_memory: Family<Labels, Gauge<i64>> = Family::default();
    let container_growing: Family<Labels, Gauge<i64>> = Family::default();
    for (slug, memory, growing) in &input.containers {
        let labels = vec![("slug", truncate(slug, SITE_LABEL_MAX_CHARS))];
        if let Some(bytes) = memory {
            container_memory
                .get_or_create(&labels)
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
        container_growing
            .get_or_create(&labels)
            .set(i64::from(*growing));
    }
    reg.register_with_unit(
        "container_memory",
        "Memory of each add-on, Home Assistant Core, the Supervisor and plugin, as the Supervisor reports it (absent with the host view off)",
        Unit::Bytes,
        container_memory,
    );
    reg.register(
        "container_growing",
        "1 when the container's memory keeps growing (host view verdict), else 0",
        container_growing,
    );

    let mut out = String::new();
    prometheus_text::encode(&mut out, &root).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_bounded_sites() {
        let input = Input {
            totals: Totals {
                current_bytes: 1234,
                total_allocations: 99,
                ..Totals::default()
            },
            tracking: Some(TrackingStatus {
                enabled: true,
                mode: Mode::Exact,
                frames: 16,
                sample_interval_bytes: None,
                since: None,
                seed: None,
            }),
            top_sites: (0..1000)
                .map(|i| (format!("site_{i} (src/x.rs:{i})"), 1000 - i))
                .collect(),
            ..Input::default()
        };
        let text = encode(&input);
        assert!(
            text.contains("\nheapwatch_heap_current_bytes 1234\n"),
            "{text}"
        );
        assert!(
            text.contains("\nheapwatch_heap_allocations_total 99\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_resident_memory_bytes gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("heapwatch_tracking_mode{mode=\"exact\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("heapwatch_tracking_mode{mode=\"sampled\"} 0\n"),
            "{text}"
        );
        let site_series = text
            .lines()
            .filter(|l| l.starts_with("heapwatch_site_bytes{"))
            .count();
        assert_eq!(site_series, TOP_SITES);
        assert!(text.contains("heapwatch_site_bytes{site=\"site_0 (src/x.rs:0)\"} 1000\n"));
    }

    #[test]
    fn one_series_per_container() {
        let input = Input {
            containers: vec![
                ("core".into(), Some(800), false),
                ("local_leaky".into(), Some(300), true),
                ("stopped".into(), None, false),
            ],
            ..Input::default()
        };
        let text = encode(&input);
        assert!(
            text.contains("heapwatch_container_memory_bytes{slug=\"core\"} 800\n"),
            "{text}"
        );
        assert!(
            text.contains("heapwatch_container_growing{slug=\"local_leaky\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("heapwatch_container_growing{slug=\"core\"} 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("heapwatch_container_memory_bytes{slug=\"stopped\"}"),
            "{text}"
        );
    }
}
