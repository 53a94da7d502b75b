//! The always-on totals: per-thread counter slots, the peak and the tracking mode the
//! allocator reads.
//!
//! Every allocator call counts bytes and blocks in the calling thread's own slot (plain
//! loads and stores, see below); readers ([`current_bytes`], [`live_blocks`], …) sum the
//! slots. The slot also carries a copy of the tracking word (mode and session) and the
//! owner's sampling countdown on the same cache line, so the allocator's off-path check
//! costs one more relaxed load and the common sampled allocation two more and a store. `allocator` (the `GlobalAlloc`
//! glue) calls the `#[inline(always)]` owned-slot updates here; `recorder` reads the
//! sums and sets the tracking word (mode and session). Nothing here imports another
//! tracker module.

use std::cell::Cell;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

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
/// pairs lines on x86). The fields the hot path touches come first, within one line.
#[repr(align(128))]
pub(crate) struct Slot {
    /// Net bytes allocated minus freed through this slot (wrapping; a slot whose threads
    /// freed blocks others allocated goes negative).
    bytes: AtomicI64,
    /// `alloc`/`alloc_zeroed` calls. Non-zero in any slot also proves this allocator is
    /// the global one: see [`installed`].
    pub(crate) allocs: AtomicU64,
    /// `dealloc` calls.
    pub(crate) frees: AtomicU64,
    /// When `bytes` exceeds this, check the peak (see above).
    check_at: AtomicI64,
    /// A copy of [`WORD`] on the owner's own line, which the hot path reads instead of
    /// the global; [`set_word`] writes every slot's copy (the only field others write).
    pub(crate) word: AtomicU64,
    /// The lookup threshold that goes with `word` (see [`set_word`]): the free of a block
    /// outside the region whose size or alignment exceeds it may have to end a record.
    pub(crate) lookup_above: AtomicUsize,
    /// The word the owner's sampling countdown was drawn for: while it equals `word`,
    /// `countdown` is valid (a new session, or a change of word, forces a redraw).
    /// Owner only.
    pub(crate) drawn: AtomicU64,
    /// Bytes left before the owner's next sampling point (see `sampler`). Owner only.
    pub(crate) countdown: AtomicI64,
    /// `realloc` calls (successful).
    reallocs: AtomicU64,
    /// Held by a live thread (only owned slots are written with plain stores).
    taken: AtomicBool,
    /// The region area this slot's owner allocates recorded blocks from.
    pub(crate) area: AtomicU8,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            bytes: AtomicI64::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            check_at: AtomicI64::new(i64::MIN),
            word: AtomicU64::new(WORD_OFF),
            lookup_above: AtomicUsize::new(usize::MAX),
            drawn: AtomicU64::new(WORD_OFF),
            countdown: AtomicI64::new(0),
            reallocs: AtomicU64::new(0),
            taken: AtomicBool::new(false),
            area: AtomicU8::new(0),
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
    /// without `Drop`, like the reentrancy guard: reading it never allocates, even during thread exit.
    pub(crate) static OWNED: Cell<Option<&'static Slot>> = const { Cell::new(None) };
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
pub(crate) enum Event {
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
pub(crate) fn count(event: Event) {
    match OWNED.get() {
        Some(slot) => slot.count_owned(event),
        None => count_elsewhere(event),
    }
}

#[cold]
#[inline(never)]
pub(crate) fn count_elsewhere(event: Event) {
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
        slot.area.store((i % AREAS) as u8, Relaxed);
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
    pub(crate) fn grow_owned(&self, by: i64, field: &AtomicU64) -> bool {
        let now = self.bytes.load(Relaxed).wrapping_add(by);
        self.bytes.store(now, Relaxed);
        field.store(field.load(Relaxed).wrapping_add(1), Relaxed);
        now > self.check_at.load(Relaxed)
    }

    /// The owned slot's bytes after an allocation of `by` more, if that does not pass the
    /// mark (nothing is counted yet: see [`Slot::commit_alloc`]); `None` when the peak is
    /// due, for a caller that then takes its slow path.
    #[inline(always)]
    pub(crate) fn bytes_after_alloc(&self, by: i64) -> Option<i64> {
        let now = self.bytes.load(Relaxed).wrapping_add(by);
        (now <= self.check_at.load(Relaxed)).then_some(now)
    }

    /// Counts the allocation [`Slot::bytes_after_alloc`] allowed: `now` bytes, one more
    /// allocation. Owner only, with nothing counted in between.
    #[inline(always)]
    pub(crate) fn commit_alloc(&self, now: i64) {
        self.bytes.store(now, Relaxed);
        self.allocs
            .store(self.allocs.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// Takes `by` bytes and counts one event in `field` of an owned slot, keeping the
    /// mark at most one step above the bytes (see the peak's notes).
    #[inline(always)]
    pub(crate) fn shrink_owned(&self, by: i64, field: &AtomicU64) {
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
pub(crate) fn check_peak(slot: &Slot) {
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
pub(crate) const MODE_OFF: u64 = 0;
/// Site tracking by Poisson sampling, every recorded block of up to `region::MAX_BLOCK`
/// bytes in the region: frees of smaller blocks outside it need no lookup.
pub(crate) const MODE_SAMPLED: u64 = 1;
/// Site tracking of every block.
pub(crate) const MODE_EXACT: u64 = 2;
/// Sampling after a recorded small block had to go to `System` memory (the region was
/// missing or an area's span full): every free outside the region is looked up, as in
/// exact mode.
pub(crate) const MODE_SAMPLED_SPILL: u64 = 3;
/// The mode bits of a word.
pub(crate) const MODE_MASK: u64 = 3;
/// The word of a process whose region has never been used: off, and no block can be in
/// the region, so `dealloc` need not look.
pub(crate) const WORD_OFF: u64 = 0;

/// Areas slots are spread over: the region's (each a recorder shard).
const AREAS: usize = 8;

/// The tracking word the allocator reads: a session number (bits 2 and up) and a mode
/// (bits 0–1). Off is [`WORD_OFF`] until the region is first used, then the last
/// session's number with mode off (non-zero: `dealloc` must check the region). Each change
/// makes a new word, so a thread can tell its sampling countdown is stale. Written only
/// by the recorder holding every shard lock, or (to spill) one shard lock while a session
/// runs.
pub(crate) static WORD: AtomicU64 = AtomicU64::new(WORD_OFF);

/// Sets the word the allocator reads: every slot's copy, with the lookup threshold that
/// goes with it (blocks outside the region whose size or alignment exceeds it may have a
/// record, so their free looks it up), then the global, last and with release. So whoever
/// reads the new global word with acquire also sees every slot's copies: a second spill
/// that finds the word already spilled records its block only after every thread's slot
/// says "look frees up". Written before the blocks the new word concerns exist, so a
/// thread that frees one of them (handed over, which orders it after this) sees them.
pub(crate) fn set_word(word: u64, lookup_above: usize) {
    for slot in &SLOT_TABLE {
        slot.word.store(word, Relaxed);
        slot.lookup_above.store(lookup_above, Relaxed);
    }
    WORD.store(word, Release);
}

/// Whether the tracker is the global allocator: makes one real allocation through the
/// global allocator and checks that the allocation counter is non-zero (this counter is
/// the flag the allocator sets on its first call).
pub(crate) fn installed() -> bool {
    let probe = std::hint::black_box(Box::new(0u8));
    drop(probe);
    sum_u64(|s| &s.allocs) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the allocator counts for one allocation and free (the tracker is not the
    /// global allocator here).
    fn churn() {
        count(Event::Alloc(48));
        count(Event::Free(48));
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
