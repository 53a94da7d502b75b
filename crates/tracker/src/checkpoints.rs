//! Automatic checkpoints: the last [`Checkpoints::MAX`] snapshots the server took on its
//! own while tracking, to tell which sites keep growing without the user having saved a
//! baseline before the leak.
//!
//! Same compact form as [`Baselines`](crate::Baselines) (per-stack totals, kilobytes each), counted
//! apart from the user's named baselines. Checkpoints of different tracking sessions are
//! not comparable (blocks from before a session are never attributed), so a checkpoint
//! from a new session clears the older ones.

use std::collections::VecDeque;

use crate::snapshot::Snapshot;

/// A ring of the most recent automatic snapshots, oldest first.
#[derive(Debug)]
pub struct Checkpoints {
    ring: VecDeque<Snapshot>,
}

impl Default for Checkpoints {
    /// An empty ring, allocated at its full size: the program's memory, attributed to the
    /// caller (the snapshots pushed in are the tracker's).
    fn default() -> Self {
        Self {
            ring: VecDeque::with_capacity(Self::MAX),
        }
    }
}

impl Checkpoints {
    /// Checkpoints kept: an hour of history at the default 10-minute interval, enough to
    /// see a site grow five times in a row.
    pub const MAX: usize = 6;

    /// Adds `snapshot` as the newest, dropping the oldest past [`Self::MAX`]. A snapshot
    /// from another tracking session than the held ones clears them first; one taken
    /// with tracking off (no session) is ignored.
    pub fn push(&mut self, snapshot: Snapshot) {
        if snapshot.tracking_since.is_none() {
            return;
        }
        if self
            .ring
            .back()
            .is_some_and(|last| last.tracking_since != snapshot.tracking_since)
        {
            self.ring.clear();
        }
        if self.ring.len() == Self::MAX {
            self.ring.pop_front();
        }
        self.ring.push_back(snapshot);
    }

    /// Held checkpoints, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Snapshot> {
        self.ring.iter()
    }

    /// Held checkpoints.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Forgets every checkpoint.
    /// Bytes the held snapshots take on the heap (the tracker's memory, never a site).
    pub fn heap_bytes(&self) -> u64 {
        self.ring.iter().map(Snapshot::heap_bytes).sum()
    }

    pub fn clear(&mut self) {
        self.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn snap(since: Option<SystemTime>) -> Snapshot {
        Snapshot {
            taken_at: Some(SystemTime::now()),
            tracking_since: since,
            ..Snapshot::default()
        }
    }

    #[test]
    fn keeps_the_last_six_of_one_session() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut c = Checkpoints::default();
        c.push(snap(None));
        assert!(c.is_empty(), "tracking off: nothing to keep");
        for _ in 0..9 {
            c.push(snap(Some(t0)));
        }
        assert_eq!(c.len(), Checkpoints::MAX);
        c.push(snap(Some(t0 + Duration::from_secs(5))));
        assert_eq!(c.len(), 1, "a new session starts a new history");
        c.clear();
        assert!(c.is_empty());
    }
}
