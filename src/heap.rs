//! The server's hold on the tracker: the tracking configuration the settings ask for, the
//! saved baselines, and the one lock that lets a single symbolizing job run at a time.
//!
//! The tracker itself (`memory`) is process-wide and knows nothing of a server; this is
//! the state a server keeps beside it. Commands reach it through [`Heap`]; nothing here
//! knows about JSON or sockets.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use crate::memory::{Baselines, Mode, Snapshot, Totals, TrackingConfig};
use crate::settings::{MemoryMode, Settings};

/// The tracking configuration, saved baselines and snapshot lock of one server.
pub struct Heap {
    config: TrackingConfig,
    /// std mutex: held only to read or change the map, never across `.await`.
    baselines: Mutex<Baselines>,
    /// tokio mutex: serialises the jobs that symbolize (snapshots, exports, the trend's
    /// growing sites), so two never hold symbolization caches at once; held across the
    /// blocking task's `.await` on purpose.
    exclusive: tokio::sync::Mutex<()>,
    /// Tracking was started at boot by the settings (not later by a command).
    from_boot: AtomicBool,
}

impl Heap {
    /// A store with no baselines, starting tracking (when asked) with `config`.
    pub fn new(config: TrackingConfig) -> Self {
        Self {
            config,
            baselines: Mutex::default(),
            exclusive: tokio::sync::Mutex::new(()),
            from_boot: AtomicBool::new(false),
        }
    }

    /// Records that the settings turned tracking on at boot (coverage hints differ).
    pub fn set_tracking_from_boot(&self) {
        self.from_boot.store(true, Relaxed);
    }

    /// Whether tracking runs since boot.
    pub fn tracking_from_boot(&self) -> bool {
        self.from_boot.load(Relaxed)
    }

    /// What `memory::start` is given when a command or the settings start tracking.
    pub fn config(&self) -> TrackingConfig {
        self.config
    }

    /// The saved baselines (hold the guard briefly: never across `.await`).
    pub fn baselines(&self) -> MutexGuard<'_, Baselines> {
        self.baselines.lock().expect("baselines lock poisoned")
    }

    /// Waits until no other symbolizing job runs; the job runs while the guard lives.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.exclusive.lock().await
    }

    /// A copy of the baseline `name`: made untracked, so it is the tracker's memory
    /// (counted in `Coverage::tracker_bytes` while the baseline is saved), never a site.
    ///
    /// # Errors
    /// [`NoBaseline`] naming the baselines that do exist.
    pub fn baseline(&self, name: &str) -> Result<Snapshot, NoBaseline> {
        let baselines = self.baselines();
        let copy = crate::memory::untracked(|| baselines.get(name).cloned());
        copy.ok_or_else(|| NoBaseline {
            name: name.to_owned(),
            saved: names_of(&baselines),
        })
    }
}

/// How much of the live heap a snapshot attributes to sites, and why the rest is not:
/// what every snapshot reply says beside its rows.
///
/// The live heap (`heap_bytes`, everything allocated through the global allocator) is
/// split into what the snapshot attributes, the tracker's own structures (never
/// attributed: baselines, checkpoints, the symbol memo), what was live before tracking
/// started (never attributed: only blocks allocated while tracking are recorded) and the
/// rest. In exact mode the rest is only blocks allocated with recording suppressed at
/// that moment (the tracker's work in flight); in sampled mode it is also what sampling
/// missed: the attributed bytes are an estimate (`sampling_error_bytes` is one standard
/// deviation of it, about √(bytes × interval) for blocks much smaller than the interval).
#[derive(Clone, Debug, PartialEq)]
pub struct Coverage {
    pub heap_bytes: u64,
    pub attributed_bytes: u64,
    pub tracker_bytes: u64,
    pub before_tracking_bytes: u64,
    pub other_bytes: u64,
    /// The live heap when tracking started.
    pub heap_at_start_bytes: Option<u64>,
    /// Set in sampled mode.
    pub sample_interval_bytes: Option<u64>,
    pub sampling_error_bytes: Option<u64>,
    /// Tracking was started by the settings at boot.
    pub from_boot: bool,
    /// Tracking was started by this very snapshot.
    pub started_now: bool,
}

impl Coverage {
    /// The coverage of `snapshot` against `totals` taken with it.
    pub fn of(
        snapshot: &Snapshot,
        totals: &Totals,
        tracker_bytes: u64,
        heap_at_start: Option<u64>,
        from_boot: bool,
        started_now: bool,
    ) -> Self {
        let heap = totals.current_bytes;
        let attributed = snapshot.total_bytes();
        let tracker = tracker_bytes.min(heap);
        let rest = heap.saturating_sub(attributed).saturating_sub(tracker);
        let before = heap_at_start.map_or(rest, |at_start| rest.min(at_start));
        let interval = snapshot.sample_interval_bytes;
        Coverage {
            heap_bytes: heap,
            attributed_bytes: attributed,
            tracker_bytes: tracker,
            before_tracking_bytes: before,
            other_bytes: rest - before,
            heap_at_start_bytes: heap_at_start,
            sample_interval_bytes: interval,
            // One standard deviation of a Poisson-sampled byte estimate (blocks far
            // below the interval: each sample stands for `interval` bytes).
            sampling_error_bytes: interval
                .map(|i| ((attributed as f64) * (i as f64)).sqrt() as u64),
            from_boot,
            started_now,
        }
    }

    /// The attributed share of the live heap, 0 to 100 (a sampled estimate may read a
    /// little over its true share; capped at 100).
    pub fn attributed_percent(&self) -> f64 {
        if self.heap_bytes == 0 {
            return 0.0;
        }
        let p = self.attributed_bytes as f64 * 100.0 / self.heap_bytes as f64;
        (p.min(100.0) * 10.0).round() / 10.0
    }

    /// One line for a person: how much is attributed, the main reason the rest is not,
    /// and what to do about it.
    pub fn hint(&self) -> String {
        let heap = bytes_text(self.heap_bytes);
        if self.started_now {
            return format!(
                "Tracking started just now: only memory allocated from now on is attributed, \
                 not the {heap} already live. Run the workload you suspect, then take another snapshot."
            );
        }
        if let (0, Some(interval)) = (self.attributed_bytes, self.sample_interval_bytes) {
            return format!(
                "Nothing sampled yet: sampled mode records about one allocation per {} allocated, \
                 so small or few allocations are missed. Switch to exact for a short session to see every block.",
                bytes_text(interval)
            );
        }
        let mut line = format!(
            "{}% of the heap ({} of {heap}) is attributed to sites",
            self.attributed_percent(),
            bytes_text(self.attributed_bytes)
        );
        // Worth a word: more than a tenth of the heap.
        if self.before_tracking_bytes * 10 > self.heap_bytes {
            let before = bytes_text(self.before_tracking_bytes);
            if self.from_boot {
                line += &format!("; {before} was allocated during start-up, before tracking began");
            } else {
                line += &format!(
                    "; {before} was allocated before tracking started (turn on debug_memory to track from boot)"
                );
            }
        }
        if let (Some(err), Some(interval)) = (self.sampling_error_bytes, self.sample_interval_bytes)
        {
            line += &format!(
                "; sizes are sampled estimates (±{}, one sample per {} allocated): switch to exact for a short session for exact bytes",
                bytes_text(err),
                bytes_text(interval)
            );
        }
        if self.tracker_bytes * 10 > self.heap_bytes {
            line += &format!(
                "; {} is Heapwatch's own baselines and caches (drop baselines you no longer need)",
                bytes_text(self.tracker_bytes)
            );
        }
        line.push('.');
        line
    }
}

/// Bytes for a person: `812 B`, `60.0 KiB`, `8.0 MiB`, `1.2 GiB`.
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The names of the saved baselines, sorted.
pub fn names_of(baselines: &Baselines) -> Vec<String> {
    baselines.list().into_iter().map(|(n, _)| n).collect()
}

/// A baseline that does not exist: the one wording of that error everywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no baseline named {name:?}; saved baselines: {}", list_or_none(saved))]
pub struct NoBaseline {
    pub name: String,
    pub saved: Vec<String>,
}

/// Names quoted and joined, or `none`.
pub fn list_or_none(names: &[String]) -> String {
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

/// The tracker configuration the settings ask for.
pub fn tracking_config(settings: &Settings) -> TrackingConfig {
    TrackingConfig {
        mode: match settings.debug_memory_mode {
            MemoryMode::Sampled => Mode::Sampled,
            MemoryMode::Exact => Mode::Exact,
        },
        frames: settings.debug_memory_frames,
        sample_interval_bytes: u64::from(settings.debug_memory_sample_kib) * 1024,
        seed: settings.debug_memory_seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(current: u64) -> Totals {
        Totals {
            current_bytes: current,
            ..Totals::default()
        }
    }

    #[test]
    fn coverage_splits_the_heap_and_names_the_action() {
        const MIB: u64 = 1 << 20;
        // Exact, from boot: 8 MiB live, nothing attributed, 7.5 MiB live at start.
        let exact = Snapshot::default();
        let c = Coverage::of(
            &exact,
            &totals(8 * MIB),
            MIB / 4,
            Some(7 * MIB + MIB / 2),
            true,
            false,
        );
        assert_eq!(c.attributed_bytes, 0);
        assert_eq!(c.tracker_bytes, MIB / 4);
        assert_eq!(c.before_tracking_bytes, 7 * MIB + MIB / 2);
        assert_eq!(c.other_bytes, MIB / 4);
        assert_eq!(c.sampling_error_bytes, None);
        assert_eq!(
            c.hint(),
            "0% of the heap (0 B of 8.0 MiB) is attributed to sites; 7.5 MiB was allocated during start-up, before tracking began."
        );
        let later = Coverage {
            from_boot: false,
            ..c.clone()
        };
        assert!(
            later
                .hint()
                .contains("turn on debug_memory to track from boot"),
            "{}",
            later.hint()
        );
        let now = Coverage {
            started_now: true,
            ..c
        };
        assert!(
            now.hint().starts_with("Tracking started just now"),
            "{}",
            now.hint()
        );
        // Sampled: nothing sampled yet says why and what to do; an estimate says its error.
        let mut sampled = Snapshot::default();
        sampled.sample_interval_bytes = Some(512 * 1024);
        let c = Coverage::of(&sampled, &totals(8 * MIB), 0, Some(8 * MIB), false, false);
        assert_eq!(c.sampling_error_bytes, Some(0));
        assert_eq!(
            c.hint(),
            "Nothing sampled yet: sampled mode records about one allocation per 512.0 KiB allocated, \
             so small or few allocations are missed. Switch to exact for a short session to see every block."
        );
        assert_eq!(bytes_text(812), "812 B");
        assert_eq!(bytes_text(61_440), "60.0 KiB");
    }
    #[test]
    fn a_missing_baseline_names_the_saved_ones() {
        let heap = Heap::new(TrackingConfig {
            mode: Mode::Sampled,
            frames: 8,
            sample_interval_bytes: 1024,
            seed: None,
        });
        let e = heap.baseline("x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no baseline named \"x\"; saved baselines: none"
        );
        heap.baselines()
            .save("b", Snapshot::default())
            .expect("room for one");
        let e = heap.baseline("x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no baseline named \"x\"; saved baselines: \"b\""
        );
        assert!(heap.baseline("b").is_ok());
    }
}
