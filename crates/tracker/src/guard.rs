//! The reentrancy guard: how deep inside the tracker the current thread is.
//!
//! A const-initialised thread-local level (no destructor, never allocates). `Untracked`
//! (set around the tracker's own snapshot and symbolization work) stops new blocks from
//! being recorded but still lets frees remove records; `Inside` (set while the tracker
//! runs or holds its lock) passes everything straight to `System`. The recorder reads it
//! first thing; the lock raises it while held. Nothing here imports another tracker
//! module.

use std::cell::Cell;

/// How deep inside the tracker this thread is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub(crate) enum GuardLevel {
    /// Normal code: allocations may be recorded.
    None = 0,
    /// The tracker's own bookkeeping (snapshots, symbolization): new blocks are not
    /// recorded, frees still remove records.
    Untracked = 1,
    /// Inside the recording path or holding the tracker lock: straight to `System`.
    Inside = 2,
}

thread_local! {
    /// This thread's [`GuardLevel`] as a u8. Const-initialised and without `Drop`, so
    /// reading it never allocates or registers a destructor, even during thread exit.
    static GUARD: Cell<u8> = const { Cell::new(GuardLevel::None as u8) };
}

/// RAII raise of the reentrancy level; restores the previous level on drop.
pub(crate) struct Guard {
    prev: u8,
}

impl Guard {
    pub(crate) fn enter(level: GuardLevel) -> Guard {
        let prev = GUARD.get();
        GUARD.set(prev.max(level as u8));
        Guard { prev }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        GUARD.set(self.prev);
    }
}

/// This thread's current level.
#[inline]
pub(crate) fn guard_level() -> GuardLevel {
    match GUARD.get() {
        0 => GuardLevel::None,
        1 => GuardLevel::Untracked,
        _ => GuardLevel::Inside,
    }
}

/// Runs `f` with recording suppressed on this thread (frees still untrack).
pub(crate) fn untracked<R>(f: impl FnOnce() -> R) -> R {
    let _guard = Guard::enter(GuardLevel::Untracked);
    f()
}
