//! The server's hold on the tracker: the tracking configuration the settings ask for, the
//! saved baselines, and the one lock that lets a single symbolizing job run at a time.
//!
//! The tracker itself (`memory`) is process-wide and knows nothing of a server; this is
//! the state a server keeps beside it. Commands reach it through [`Heap`]; nothing here
//! knows about JSON or sockets.

use std::sync::{Mutex, MutexGuard};

use crate::memory::{Baselines, Mode, Snapshot, TrackingConfig};
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
}

impl Heap {
    /// A store with no baselines, starting tracking (when asked) with `config`.
    pub fn new(config: TrackingConfig) -> Self {
        Self {
            config,
            baselines: Mutex::default(),
            exclusive: tokio::sync::Mutex::new(()),
        }
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

    /// A copy of the baseline `name`.
    ///
    /// # Errors
    /// [`NoBaseline`] naming the baselines that do exist.
    pub fn baseline(&self, name: &str) -> Result<Snapshot, NoBaseline> {
        let baselines = self.baselines();
        baselines.get(name).cloned().ok_or_else(|| NoBaseline {
            name: name.to_owned(),
            saved: names_of(&baselines),
        })
    }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_baseline_names_the_saved_ones() {
        let heap = Heap::new(TrackingConfig {
            mode: Mode::Sampled,
            frames: 8,
            sample_interval_bytes: 1024,
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
