//! [`MemoryError`]: the tracker's one error type (expected outcomes as variants).
//! Nothing here imports another tracker module.

/// Errors of the tracker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// [`Tracker`](crate::Tracker) is not this process's `#[global_allocator]`.
    #[error("the heapwatch tracker is not installed as this process's global allocator")]
    NotInstalled,
    /// [`start`](crate::start) was asked for other settings than the running session's,
    /// which are kept: [`stop`](crate::stop) first to change them.
    #[error(
        "tracking already runs with other settings ({running:?}); stop it first to start with {requested:?}"
    )]
    RunningWithOtherSettings {
        /// The running session's settings (clamped as `start` clamps them).
        running: crate::config::TrackingConfig,
        /// What this call asked for (clamped the same way).
        requested: crate::config::TrackingConfig,
    },
    /// `System` had no memory for the tracker's tables: tracking stays off.
    #[error("out of memory for the tracker's tables: tracking stays off")]
    OutOfMemory,
    /// A new baseline name was given while [`Baselines::MAX`](crate::Baselines::MAX) names are saved.
    #[error("a baseline store holds at most {max} names: {names:?}")]
    BaselinesFull {
        /// [`Baselines::MAX`](crate::Baselines::MAX).
        max: usize,
        /// The saved names, sorted.
        names: Vec<String>,
    },
}
