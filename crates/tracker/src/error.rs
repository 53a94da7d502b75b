//! [`MemoryError`]: the tracker's one error type (expected outcomes as variants).
//! Nothing here imports another tracker module.

/// Errors of the tracker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// [`Tracker`](crate::Tracker) is not this process's `#[global_allocator]`.
    #[error("the heapwatch tracker is not installed as this process's global allocator")]
    NotInstalled,
    /// A new baseline name was given while [`Baselines::MAX`](crate::Baselines::MAX) names are saved.
    #[error("a baseline store holds at most {max} names: {names:?}")]
    BaselinesFull {
        /// [`Baselines::MAX`](crate::Baselines::MAX).
        max: usize,
        /// The saved names, sorted.
        names: Vec<String>,
    },
}
