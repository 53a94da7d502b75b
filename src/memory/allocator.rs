//! The global allocator wrapper: always-on counters, the reentrancy guard, and the hand-off
//! to [`super::recorder`] when site tracking is on.
//!
//! Every call pays a few relaxed atomics (current, a block count in this thread's slot, a
//! peak check). With site
//! tracking off that is all: one more relaxed load of [`MODE`] and a branch. With it on,
//! `alloc` calls `recorder::on_alloc` (which samples, walks the stack and records) and
//! `dealloc` calls `recorder::on_free` (one filter load unless the block may be tracked).
//!
//! Reentrancy: a const-initialised thread-local level (no destructor, never allocates).
//! `Untracked` (set around the tracker's own snapshot and symbolization work) stops new
//! blocks from being recorded but still lets frees remove records; `Inside` (set while the
//! tracker runs or holds its lock) passes everything straight to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use super::recorder;

/// This file as the compiler names it: frames in it are the tracker's own (see
/// `symbolize::OWN_SOURCES`).
pub(crate) const SOURCE: &str = file!();

/// Live bytes handed out by the allocator (requested sizes, not malloc's rounding).
pub(crate) static CURRENT: AtomicU64 = AtomicU64::new(0);
/// Highest `CURRENT` seen since start or the last `reset_peak`.
pub(crate) static PEAK: AtomicU64 = AtomicU64::new(0);
// Block counts are kept as three monotonic counters rather than "live" and "total", so a
// free costs one RMW fewer: live = allocs − frees, total = allocs + reallocs. They are
// sharded: each thread counts in one of [`SHARDS`] cache-line-aligned slots, so threads
// allocating at once do not fight over one cache line; readers sum the slots (exact, as
// the counters only grow). `CURRENT` stays one global counter because the peak needs the
// true sum at every allocation.

/// One slot of block counters, alone on its cache lines.
#[repr(align(128))]
struct Counts {
    /// `alloc`/`alloc_zeroed` calls. Non-zero in any slot also proves this allocator is
    /// the global one: see [`installed`].
    allocs: AtomicU64,
    /// `dealloc` calls.
    frees: AtomicU64,
    /// Successful `realloc` calls.
    reallocs: AtomicU64,
}

/// 16 slots: more than the cores of any machine Home Assistant runs on, so threads rarely
/// share one; 2 KiB of BSS.
const SHARDS: usize = 16;
static COUNTS: [Counts; SHARDS] = [const {
    Counts {
        allocs: AtomicU64::new(0),
        frees: AtomicU64::new(0),
        reallocs: AtomicU64::new(0),
    }
}; SHARDS];
/// Hands out slots round-robin as threads make their first call.
static NEXT_SHARD: AtomicU8 = AtomicU8::new(0);
/// "No slot yet" in [`SHARD`].
const NO_SHARD: u8 = u8::MAX;

thread_local! {
    /// This thread's slot in [`COUNTS`]. Const-initialised and without `Drop`, like
    /// [`GUARD`]: reading it never allocates, even during thread exit.
    static SHARD: Cell<u8> = const { Cell::new(NO_SHARD) };
}

/// This thread's counter slot.
#[inline(always)]
fn counts() -> &'static Counts {
    let mut i = SHARD.get();
    if i == NO_SHARD {
        i = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS as u8;
        SHARD.set(i);
    }
    &COUNTS[usize::from(i)]
}

fn sum(field: impl Fn(&Counts) -> &AtomicU64) -> u64 {
    COUNTS
        .iter()
        .fold(0u64, |acc, c| acc.wrapping_add(field(c).load(Relaxed)))
}

/// Live blocks (allocations minus frees).
pub(crate) fn live_blocks() -> u64 {
    // Frees first: counters only grow, so reading allocs afterwards cannot see fewer
    // allocations than the frees just read; saturate anyway (relaxed loads may reorder).
    let frees = sum(|c| &c.frees);
    sum(|c| &c.allocs).saturating_sub(frees)
}

/// Allocations since process start; a realloc counts as one.
pub(crate) fn total_allocations() -> u64 {
    sum(|c| &c.allocs).wrapping_add(sum(|c| &c.reallocs))
}

/// Site tracking off.
pub(crate) const MODE_OFF: u8 = 0;
/// Site tracking by Poisson sampling.
pub(crate) const MODE_SAMPLED: u8 = 1;
/// Site tracking of every block.
pub(crate) const MODE_EXACT: u8 = 2;
/// The tracking mode the hot path reads (one relaxed load per call). Written only by the
/// recorder while holding its lock.
pub(crate) static MODE: AtomicU8 = AtomicU8::new(MODE_OFF);

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

/// Whether [`Tracker`] is the global allocator: makes one real allocation through the
/// global allocator and checks that the allocation counter is non-zero (this counter is
/// the flag the allocator sets on its first call).
pub(crate) fn installed() -> bool {
    let probe = std::hint::black_box(Box::new(0u8));
    drop(probe);
    sum(|c| &c.allocs) > 0
}

#[inline(always)]
fn raise_current(by: u64) {
    let now = CURRENT.fetch_add(by, Relaxed).wrapping_add(by);
    if now > PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

#[inline(always)]
fn counted_alloc(size: usize) {
    raise_current(size as u64);
    counts().allocs.fetch_add(1, Relaxed);
}

/// The global allocator: wraps [`System`], keeps always-on totals and, when started,
/// attributes blocks to call stacks. Install it with `#[global_allocator]` (see the
/// module docs of [`crate::memory`]).
pub struct Tracker {
    _private: (),
}

impl Tracker {
    /// A tracker; all state is global, so every instance is equivalent.
    pub const fn new() -> Self {
        Tracker { _private: () }
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

/// The bookkeeping after a new block (from `alloc` or `alloc_zeroed`): the always-on
/// counters, then, only when tracking, the recording path.
#[inline(always)]
fn after_alloc(ptr: *mut u8, size: usize) {
    if !ptr.is_null() {
        counted_alloc(size);
        let mode = MODE.load(Relaxed);
        if mode != MODE_OFF {
            recorder::on_alloc(ptr as usize, size, mode);
        }
    }
}

// SAFETY: every method forwards to System with the caller's arguments, which satisfy
// GlobalAlloc's contract for System exactly as for us; the bookkeeping around the calls
// never touches the blocks' memory and never allocates through the global allocator.
unsafe impl GlobalAlloc for Tracker {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl's SAFETY comment).
        let ptr = unsafe { System.alloc(layout) };
        after_alloc(ptr, layout.size());
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        after_alloc(ptr, layout.size());
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Untrack before the block is released: once System has it back, another thread
        // may receive the same address and record it.
        if MODE.load(Relaxed) != MODE_OFF {
            recorder::on_free(ptr as usize);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size() as u64, Relaxed);
        counts().frees.fetch_add(1, Relaxed);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The old record ends before System.realloc for the same reason as in dealloc (a
        // moved block's old address can be reused at once). If realloc then fails, the
        // block left in place stays counted in the totals but loses its site record.
        if MODE.load(Relaxed) != MODE_OFF {
            recorder::on_free(ptr as usize);
        }
        // SAFETY: forwarded unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let old = layout.size() as u64;
            let grown = new_size as u64;
            if grown >= old {
                raise_current(grown - old);
            } else {
                CURRENT.fetch_sub(old - grown, Relaxed);
            }
            // A realloc is one allocation in total_allocations; live blocks do not change.
            counts().reallocs.fetch_add(1, Relaxed);
            let mode = MODE.load(Relaxed);
            if mode != MODE_OFF {
                recorder::on_alloc(new as usize, new_size, mode);
            }
        }
        new
    }
}
