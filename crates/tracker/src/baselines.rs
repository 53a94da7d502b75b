//! Named baselines: at most [`Baselines::MAX`] saved [`Snapshot`]s to diff against.
//!
//! Baselines are snapshots (per-stack totals, kilobytes each), not grouped rows, so one
//! saved while viewing by site can be compared by function, file or traceback later.
//! The store is a plain value: the server decides where it lives and how it is locked.
//! Its memory is the tracker's: saved and dropped with recording suppressed, so a
//! baseline never shows up as a site (nor as growth in a compare).

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::error::MemoryError;
use crate::guard::untracked;
use crate::snapshot::Snapshot;

/// Named baselines, at most [`Baselines::MAX`], each a [`Snapshot`].
#[derive(Debug, Default)]
pub struct Baselines {
    saved: BTreeMap<String, Snapshot>,
}

impl Baselines {
    /// Names kept at most: a user compares against a handful of moments, and an unbounded
    /// store was the flaw the device-builder review flagged.
    pub const MAX: usize = 8;

    /// Saves `snapshot` under `name`, replacing any baseline of that name.
    ///
    /// # Errors
    /// [`MemoryError::BaselinesFull`] (with the saved names, sorted) when `name` is new and
    /// `MAX` names are saved.
    pub fn save(&mut self, name: &str, snapshot: Snapshot) -> Result<(), MemoryError> {
        if !self.saved.contains_key(name) && self.saved.len() >= Self::MAX {
            return Err(MemoryError::BaselinesFull {
                max: Self::MAX,
                names: self.saved.keys().cloned().collect(),
            });
        }
        untracked(|| {
            self.saved.insert(name.to_owned(), snapshot);
        });
        Ok(())
    }

    /// The baseline saved as `name`.
    pub fn get(&self, name: &str) -> Option<&Snapshot> {
        self.saved.get(name)
    }

    /// Removes `name`; returns whether it existed.
    pub fn remove(&mut self, name: &str) -> bool {
        untracked(|| self.saved.remove(name).is_some())
    }

    /// Bytes the saved snapshots hold on the heap (see [`Snapshot::heap_bytes`]).
    pub fn heap_bytes(&self) -> u64 {
        self.saved.values().map(Snapshot::heap_bytes).sum()
    }

    /// Sorted names with when each was taken.
    pub fn list(&self) -> Vec<(String, Option<SystemTime>)> {
        self.saved
            .iter()
            .map(|(name, snap)| (name.clone(), snap.taken_at))
            .collect()
    }

    /// Saved names.
    pub fn len(&self) -> usize {
        self.saved.len()
    }

    /// Whether none is saved.
    pub fn is_empty(&self) -> bool {
        self.saved.is_empty()
    }
}
