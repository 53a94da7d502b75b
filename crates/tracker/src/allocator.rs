//! The global allocator wrapper: always-on counters, the reentrancy guard, and the hand-off
//! to [`super::recorder`] when site tracking is on.
//!
//! Every call counts bytes and blocks in the calling thread's own slot (plain loads and
//! stores, see below). With site tracking off that is all: one more relaxed load of the
//! mode (the slot's copy of [`MODE`], on the same cache line) and a branch. With it on,
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
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

use super::recorder;

/// This file as the compiler names it: frames in it are the tracker's own (see
/// `symbolize::OWN_SOURCES`).
pub(crate) const SOURCE: &str = file!();

// The always-on totals live in per-thread slots. A thread owns one [`Slot`] for its
// lifetime and is its only writer, so counting is a plain load and store on a cache line
// no other thread writes: no atomic read-modify-write, no cache-line ping-pong between
// cores. Readers sum every slot (each field is an atomic, read relaxed). A slot's figures
// are cumulative and outlive their owner: when a thread exits, its slot is handed to the
// next new thread, which keeps adding to the same counters, so the sums stay exact.
// Threads beyond [`SLOTS`], and a thread's last calls after its slot was released during
// thread exit, count in one shared slot with atomic read-modify-writes.
//
// The peak needs the true sum, which no single thread sees. A thread checks it only when
// its own bytes pass a mark: a check sums all slots, raises [`PEAK`] and sets the mark
// [`PEAK_STEP`] above the thread's bytes; a free lowers the mark to stay at most
// [`PEAK_STEP`] above them (frees never check: they cannot raise the peak). Between two
// checks no thread has grown by [`PEAK_STEP`] from its lowest point since its own last
// check, so the sum cannot pass the last checked sum by [`PEAK_STEP`] × threads: that
// bounds how much of a transient high can be missed. A mark is never more than
// [`PEAK_STEP`] above its thread's bytes, so any single allocation larger than that is
// checked at once. Every read of the totals folds the current sum into the peak too.

/// Highest current byte count seen since start or the last `reset_peak` (see above for
/// its precision).
static PEAK: AtomicU64 = AtomicU64::new(0);

/// Growth of one thread's bytes that triggers a peak check (see above).
pub(crate) const PEAK_STEP: i64 = 64 * 1024;

/// One thread's counters, alone on its cache lines (128 bytes: adjacent-line prefetch
/// pairs lines on x86).
#[repr(align(128))]
struct Slot {
    /// Held by a live thread (only owned slots are written with plain stores).
    taken: AtomicBool,
    /// Net bytes allocated minus freed through this slot (wrapping; a slot whose threads
    /// freed blocks others allocated goes negative).
    bytes: AtomicI64,
    /// `alloc`/`alloc_zeroed` calls. Non-zero in any slot also proves this allocator is
    /// the global one: see [`installed`].
    allocs: AtomicU64,
    /// `dealloc` calls.
    frees: AtomicU64,
    /// Successful `realloc` calls.
    reallocs: AtomicU64,
    /// When `bytes` exceeds this, check the peak (see above).
    check_at: AtomicI64,
    /// A copy of [`MODE`] on the owner's own cache line, which the hot path reads instead
    /// of the global; [`set_mode`] writes every slot's copy.
    mode: AtomicU8,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            taken: AtomicBool::new(false),
            bytes: AtomicI64::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            reallocs: AtomicU64::new(0),
            check_at: AtomicI64::new(i64::MIN),
            mode: AtomicU8::new(MODE_OFF),
        }
    }
}

/// Owned slots: more threads than an add-on runs at once (tokio's workers and blocking
/// pool, the log writer); 8 KiB of BSS. Index [`SHARED`] is the shared slot.
const SLOTS: usize = 64;
static SLOT_TABLE: [Slot; SLOTS + 1] = [const { Slot::new() }; SLOTS + 1];
/// One past the highest slot index ever taken: readers sum only those and the shared one
/// (slots are taken lowest first, so a process with a few threads reads a few slots).
static SLOTS_USED: AtomicUsize = AtomicUsize::new(0);
/// [`SLOT`] value: count in the shared slot, with atomic read-modify-writes.
const SHARED: u8 = SLOTS as u8;
/// [`SLOT`] value: no slot yet; the next call tries to take one.
const UNASSIGNED: u8 = u8::MAX;

thread_local! {
    /// This thread's own slot, if it has one: all the hot path reads. Const-initialised and
    /// without `Drop`, like [`GUARD`]: reading it never allocates, even during thread exit.
    static OWNED: Cell<Option<&'static Slot>> = const { Cell::new(None) };
    /// This thread's slot index, [`SHARED`] or [`UNASSIGNED`] (read off the hot path).
    static SLOT: Cell<u8> = const { Cell::new(UNASSIGNED) };
    /// Gives this thread's slot back when the thread exits. Touched once, when the slot
    /// is taken; registering its destructor does not go through the global allocator
    /// (glibc's `__cxa_thread_atexit_impl`, or std's own list allocated from `System`).
    static LEASE: Lease = const { Lease(Cell::new(UNASSIGNED)) };
}

/// The destructor half of a slot lease (see [`LEASE`]).
struct Lease(Cell<u8>);

impl Drop for Lease {
    fn drop(&mut self) {
        let i = usize::from(self.0.get());
        if i < SLOTS {
            // Later calls on this thread (other destructors still free memory) count in
            // the shared slot: the released slot may have a new owner at once.
            OWNED.set(None);
            SLOT.set(SHARED);
            SLOT_TABLE[i].taken.store(false, Release);
        }
    }
}

/// What one allocator call changes in the totals (two words, passed in registers).
#[derive(Clone, Copy)]
enum Event {
    /// A new block of this many bytes (`alloc`, `alloc_zeroed`).
    Alloc(u64),
    /// A block of this many bytes released.
    Free(u64),
    /// A block resized by this many bytes (one allocation in `total_allocations`; live
    /// blocks unchanged).
    Realloc(i64),
}

impl Event {
    /// The change in bytes, and the counter of `slot` the event counts in.
    #[inline(always)]
    fn split(self, slot: &Slot) -> (i64, &AtomicU64) {
        match self {
            Event::Alloc(size) => (size as i64, &slot.allocs),
            Event::Free(size) => ((size as i64).wrapping_neg(), &slot.frees),
            Event::Realloc(delta) => (delta, &slot.reallocs),
        }
    }
}

/// Counts `event` in this thread's slot. Only the owned-slot case is inlined into the
/// allocator; everything else (the first call on a thread, the shared slot) is one call
/// away, so the inlined path needs no stack frame of its own.
#[inline(always)]
fn count(event: Event) {
    match OWNED.get() {
        Some(slot) => slot.count_owned(event),
        None => count_elsewhere(event),
    }
}

#[cold]
#[inline(never)]
fn count_elsewhere(event: Event) {
    match SLOT.get() {
        UNASSIGNED => match take_slot() {
            Some(slot) => slot.count_owned(event),
            None => SLOT_TABLE[SLOTS].count_shared(event),
        },
        _ => SLOT_TABLE[SLOTS].count_shared(event),
    }
}

/// Takes a free slot for this thread, or `None` (all taken, or the thread is exiting).
fn take_slot() -> Option<&'static Slot> {
    // Calls made while the lease registers (none are expected) count in the shared slot.
    SLOT.set(SHARED);
    for (i, slot) in SLOT_TABLE[..SLOTS].iter().enumerate() {
        if slot.taken.load(Relaxed)
            || slot
                .taken
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_err()
        {
            continue;
        }
        // Err: this thread's destructors already ran (a call during thread exit).
        let index = i as u8;
        if LEASE.try_with(|lease| lease.0.set(index)).is_err() {
            slot.taken.store(false, Release);
            return None;
        }
        slot.check_at
            .store(slot.bytes.load(Relaxed).wrapping_add(PEAK_STEP), Relaxed);
        SLOTS_USED.fetch_max(i + 1, Release);
        SLOT.set(index);
        OWNED.set(Some(slot));
        return Some(slot);
    }
    None
}

impl Slot {
    /// Counts in a slot this thread owns: plain loads and stores. (The allocator's hot
    /// paths call [`Slot::grow_owned`] and [`Slot::shrink_owned`] directly.)
    fn count_owned(&self, event: Event) {
        let (delta, field) = event.split(self);
        if delta > 0 {
            if self.grow_owned(delta, field) {
                check_peak(self);
            }
        } else {
            self.shrink_owned(delta.wrapping_neg(), field);
        }
    }

    /// Adds `by` bytes and one event in `field` of an owned slot; true when the bytes
    /// passed the mark and the peak must be checked ([`check_peak`]).
    #[inline(always)]
    fn grow_owned(&self, by: i64, field: &AtomicU64) -> bool {
        let now = self.bytes.load(Relaxed).wrapping_add(by);
        self.bytes.store(now, Relaxed);
        field.store(field.load(Relaxed).wrapping_add(1), Relaxed);
        now > self.check_at.load(Relaxed)
    }

    /// Takes `by` bytes and counts one event in `field` of an owned slot, keeping the
    /// mark at most one step above the bytes (see the peak's notes).
    #[inline(always)]
    fn shrink_owned(&self, by: i64, field: &AtomicU64) {
        let now = self.bytes.load(Relaxed).wrapping_sub(by);
        self.bytes.store(now, Relaxed);
        field.store(field.load(Relaxed).wrapping_add(1), Relaxed);
        let mark = now.wrapping_add(PEAK_STEP);
        if mark < self.check_at.load(Relaxed) {
            self.check_at.store(mark, Relaxed);
        }
    }

    /// Counts in the shared slot: atomic read-modify-writes.
    fn count_shared(&self, event: Event) {
        let (delta, field) = event.split(self);
        let now = self.bytes.fetch_add(delta, Relaxed).wrapping_add(delta);
        field.fetch_add(1, Relaxed);
        if delta > 0 {
            if now > self.check_at.load(Relaxed) {
                check_peak(self);
            }
        } else {
            self.check_at
                .fetch_min(now.wrapping_add(PEAK_STEP), Relaxed);
        }
    }
}

#[cold]
#[inline(never)]
fn check_peak(slot: &Slot) {
    let now = slot.bytes.load(Relaxed);
    slot.check_at.store(now.wrapping_add(PEAK_STEP), Relaxed);
    PEAK.fetch_max(current_bytes(), Relaxed);
}

/// The slots any thread has counted in.
fn used_slots() -> impl Iterator<Item = &'static Slot> {
    let used = SLOTS_USED.load(Acquire).min(SLOTS);
    SLOT_TABLE[..used].iter().chain([&SLOT_TABLE[SLOTS]])
}

fn sum_u64(field: impl Fn(&Slot) -> &AtomicU64) -> u64 {
    used_slots().fold(0u64, |acc, s| acc.wrapping_add(field(s).load(Relaxed)))
}

/// Live bytes handed out by the allocator (requested sizes, not malloc's rounding).
/// Exact when no other thread allocates meanwhile; a block allocated on one thread and
/// freed on another may be seen freed and not yet allocated, so the sum is clamped at 0.
pub(crate) fn current_bytes() -> u64 {
    let sum = used_slots().fold(0i64, |acc, s| acc.wrapping_add(s.bytes.load(Relaxed)));
    sum.max(0) as u64
}

/// The peak, with the current bytes folded in (so it is never below them).
pub(crate) fn peak_bytes(current: u64) -> u64 {
    PEAK.fetch_max(current, Relaxed).max(current)
}

/// Resets the peak to the current bytes, and makes every thread's next allocation check
/// it again (their marks were set against the old peak).
pub(crate) fn reset_peak() {
    PEAK.store(current_bytes(), Relaxed);
    for slot in &SLOT_TABLE {
        slot.check_at.store(i64::MIN, Relaxed);
    }
}

/// Live blocks (allocations minus frees).
pub(crate) fn live_blocks() -> u64 {
    // Frees first: counters only grow, so reading allocs afterwards cannot see fewer
    // allocations than the frees just read; saturate anyway (relaxed loads may reorder).
    let frees = sum_u64(|s| &s.frees);
    sum_u64(|s| &s.allocs).saturating_sub(frees)
}

/// Allocations since process start; a realloc counts as one.
pub(crate) fn total_allocations() -> u64 {
    sum_u64(|s| &s.allocs).wrapping_add(sum_u64(|s| &s.reallocs))
}

/// Site tracking off.
pub(crate) const MODE_OFF: u8 = 0;
/// Site tracking by Poisson sampling.
pub(crate) const MODE_SAMPLED: u8 = 1;
/// Site tracking of every block.
pub(crate) const MODE_EXACT: u8 = 2;
/// The tracking mode the hot path reads (one relaxed load per call). Written only by the
/// recorder while holding its lock.
static MODE: AtomicU8 = AtomicU8::new(MODE_OFF);

/// Sets the tracking mode the allocator reads: the global and every slot's copy.
pub(crate) fn set_mode(mode: u8) {
    MODE.store(mode, Relaxed);
    for slot in &SLOT_TABLE {
        slot.mode.store(mode, Relaxed);
    }
}

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
    sum_u64(|s| &s.allocs) > 0
}

/// The global allocator: wraps [`System`], keeps always-on totals and, when started,
/// attributes blocks to call stacks. Install it with `#[global_allocator]` (see the
/// crate docs).
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
/// counters, then, only when tracking, the recording path. Returns `ptr`. Every branch
/// off the common path (no slot of its own yet, a peak check due, tracking on) returns
/// the result of one call, so the common path keeps no stack frame of its own.
#[inline(always)]
fn after_alloc(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        return ptr;
    }
    let Some(slot) = OWNED.get() else {
        return alloc_counted_elsewhere(ptr, size);
    };
    if slot.grow_owned(size as i64, &slot.allocs) {
        return alloc_peak_due(ptr, size, slot);
    }
    record_if_tracking(ptr, size, slot.mode.load(Relaxed))
}

/// The recording half of [`after_alloc`]: `ptr`, recorded first unless `mode` is off.
#[inline(always)]
fn record_if_tracking(ptr: *mut u8, size: usize, mode: u8) -> *mut u8 {
    if mode != MODE_OFF {
        return record_alloc(ptr, size, mode);
    }
    ptr
}

/// [`after_alloc`] for a thread without a slot of its own (yet).
#[cold]
#[inline(never)]
fn alloc_counted_elsewhere(ptr: *mut u8, size: usize) -> *mut u8 {
    count_elsewhere(Event::Alloc(size as u64));
    record_if_tracking(ptr, size, MODE.load(Relaxed))
}

/// [`after_alloc`] once the bytes passed this thread's mark.
#[cold]
#[inline(never)]
fn alloc_peak_due(ptr: *mut u8, size: usize, slot: &Slot) -> *mut u8 {
    check_peak(slot);
    record_if_tracking(ptr, size, slot.mode.load(Relaxed))
}

/// [`after_alloc`] while tracking.
#[inline(never)]
fn record_alloc(ptr: *mut u8, size: usize, mode: u8) -> *mut u8 {
    recorder::on_alloc(ptr as usize, size, mode);
    ptr
}

/// `dealloc` while tracking: untracks the block, then releases it. Untrack first: once
/// System has the block back, another thread may receive the same address and record it.
///
/// # Safety
/// As `GlobalAlloc::dealloc`.
#[inline(never)]
unsafe fn tracked_dealloc(ptr: *mut u8, layout: Layout) {
    recorder::on_free(ptr as usize);
    // SAFETY: the caller's arguments, as GlobalAlloc::dealloc requires.
    unsafe { System.dealloc(ptr, layout) }
}

/// `dealloc` for a thread without a slot of its own (yet).
///
/// # Safety
/// As `GlobalAlloc::dealloc`.
#[cold]
#[inline(never)]
unsafe fn dealloc_counted_elsewhere(ptr: *mut u8, layout: Layout) {
    count_elsewhere(Event::Free(layout.size() as u64));
    if MODE.load(Relaxed) != MODE_OFF {
        // SAFETY: the caller's arguments.
        return unsafe { tracked_dealloc(ptr, layout) };
    }
    // SAFETY: the caller's arguments, as GlobalAlloc::dealloc requires.
    unsafe { System.dealloc(ptr, layout) }
}

// SAFETY: every method forwards to System with the caller's arguments, which satisfy
// GlobalAlloc's contract for System exactly as for us; the bookkeeping around the calls
// never touches the blocks' memory and never allocates through the global allocator.
unsafe impl GlobalAlloc for Tracker {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl's SAFETY comment).
        let ptr = unsafe { System.alloc(layout) };
        after_alloc(ptr, layout.size())
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        after_alloc(ptr, layout.size())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Counted first, so that handing the block to System is the last thing done (a
        // tail call, no frame kept around it); so is every branch off the common path.
        let Some(slot) = OWNED.get() else {
            // SAFETY: forwarded unchanged.
            return unsafe { dealloc_counted_elsewhere(ptr, layout) };
        };
        slot.shrink_owned(layout.size() as i64, &slot.frees);
        if slot.mode.load(Relaxed) != MODE_OFF {
            // SAFETY: forwarded unchanged.
            return unsafe { tracked_dealloc(ptr, layout) };
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
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
        if new.is_null() {
            return new;
        }
        count(Event::Realloc(
            (new_size as i64).wrapping_sub(layout.size() as i64),
        ));
        record_if_tracking(new, new_size, MODE.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One allocation and free through the tracker (not installed here: called directly).
    fn churn() {
        let layout = Layout::from_size_align(48, 8).expect("layout");
        let t = Tracker::new();
        // SAFETY: a fresh block of `layout`, freed with the same layout.
        unsafe {
            let p = t.alloc(layout);
            assert!(!p.is_null());
            t.dealloc(p, layout);
        }
    }

    #[test]
    fn exiting_threads_hand_their_slots_on() {
        // 200 threads one after another: each takes a slot on its first call and gives it
        // back when it exits, so a handful of slots serve them all (tests running beside
        // this one may hold a few).
        for _ in 0..200 {
            std::thread::spawn(|| {
                churn();
                let i = usize::from(SLOT.get());
                assert!(i < SLOTS, "this thread should own a slot, got {i}");
                assert!(OWNED.get().is_some());
            })
            .join()
            .expect("thread");
        }
        let used = SLOTS_USED.load(Acquire);
        assert!(used <= 16, "{used} slots used by 200 threads in turn");
    }

    #[test]
    fn a_thread_past_its_destructors_counts_in_the_shared_slot() {
        std::thread::spawn(|| {
            churn();
            let shared = &SLOT_TABLE[SLOTS];
            let frees = shared.frees.load(Relaxed);
            // What the lease's destructor does at thread exit (taken from the real lease,
            // so the slot is not released twice when this thread does exit).
            LEASE.with(|lease| drop(Lease(Cell::new(lease.0.replace(UNASSIGNED)))));
            assert_eq!(SLOT.get(), SHARED);
            assert!(OWNED.get().is_none());
            churn();
            assert!(shared.frees.load(Relaxed) > frees);
        })
        .join()
        .expect("thread");
    }
}
