//! The global allocator glue: [`Tracker`]'s `GlobalAlloc` methods, which count every call
//! in [`counters`](crate::counters) and hand off to [`recorder`] for the blocks it records.
//!
//! Every call reads the thread's tracking word (mode and session, a copy in its own
//! counter slot). Off, a call is `System`'s plus the owned-slot update and that load and
//! branch; an allocation of up to [`COUNT_FIRST_MAX`] bytes is counted before `System` is
//! called, so `System.alloc` is a tail call (no frame kept around it, no result check).
//! Sampling, an allocation also takes its size off the slot's countdown (a load, a
//! subtract and a store on the same line); only when the countdown runs out, one in
//! thousands of small blocks, is it recorded: served from the [`region`], out of line. A
//! free checks whether the block lies in the region (a subtract and a shift); outside
//! it, one compare against the slot's lookup threshold (written with the word: none while
//! off, `region::SAMPLED_MAX_BLOCK` while sampling, 0 in exact mode or after a spill)
//! settles the blocks that cannot have a record, which go straight to `System`. The rest
//! are looked up in the counting filter (one load unless the block may be tracked).
//!
//! The methods and the owned-slot updates they call are `#[inline]`/`#[inline(always)]`:
//! the `#[global_allocator]` shim that calls them lives in the embedding crate, so without
//! that they would be a call across the crate boundary. The common case of `alloc` checks
//! everything before it changes anything; every other case is one out-of-line call that
//! starts afresh ([`alloc_slow`]). `dealloc` counts, then `release` decides by the word,
//! the region and the counting filter, each branch off the common path one call.
//!
//! `alloc`, `alloc_zeroed` and `dealloc` themselves are `#[inline(never)]`: one call from
//! each place memory is allocated or freed, as before. Left to the compiler, their common
//! cases were small enough to be inlined at every call site, as `System`'s are: that saved
//! 0.6–1 ns a pair off and sampled, but put ~100 bytes at each of the add-on's ~7,600
//! allocation and free sites (binary 9.1 → 10.4 MB, image 5.6 → 6.28 MB of its 6 MiB
//! limit; BENCHMARKS.md, issue 18's third round). Measured again in the fourth round,
//! inlining no longer paid at all: sampled pairs got 0.3–1.9 ns slower.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::Ordering::Relaxed;

use crate::counters::{
    Event, MODE_EXACT, MODE_MASK, MODE_OFF, OWNED, Slot, WORD, WORD_OFF, check_peak, count,
    count_elsewhere,
};
use crate::recorder;
use crate::region;
use crate::sampler;
use crate::unwind;

/// Largest allocation counted before `System` is asked for it. For these the call to
/// `System.alloc` is the last thing done (a tail call: measured ~0.3 ns a pair less than
/// checking its result first). The price: should `System` fail such a small request, the
/// totals keep counting a block that does not exist (a process that cannot get 64 KiB
/// from malloc is out of memory; Rust then aborts unless the caller used a fallible API
/// such as `try_reserve`). Bigger requests, the ones that fail in practice, are counted
/// only once they succeed.
const COUNT_FIRST_MAX: usize = 64 * 1024;

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

/// `System.alloc` or `System.alloc_zeroed`. The common case, what `System` itself does for
/// it (`malloc`/`calloc` when malloc's own alignment suffices), is inline and a tail call;
/// `System` is called out of line for the rest, so the inline path needs no stack slot.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline(always)]
unsafe fn system_alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    #[cfg(unix)]
    if malloc_aligned(layout) {
        // SAFETY: plain C allocation calls with a size; both return null on failure.
        return unsafe {
            if zeroed {
                libc::calloc(layout.size(), 1).cast()
            } else {
                libc::malloc(layout.size()).cast()
            }
        };
    }
    // SAFETY: the caller's layout.
    unsafe { system_alloc_aligned(layout, zeroed) }
}

/// The alignment every `malloc` result has (what `System` relies on too).
#[cfg(unix)]
const MALLOC_ALIGN: usize = std::mem::align_of::<libc::max_align_t>();

/// Whether `malloc`'s own alignment serves `layout` (what `System` checks before calling
/// `malloc` or `calloc`).
#[inline(always)]
fn malloc_aligned(layout: Layout) -> bool {
    #[cfg(unix)]
    return layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size();
    #[cfg(not(unix))]
    false
}

/// [`system_alloc`] for what needs `System`'s own handling (over-aligned layouts).
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline(never)]
unsafe fn system_alloc_aligned(layout: Layout, zeroed: bool) -> *mut u8 {
    if zeroed {
        // SAFETY: the caller's layout, as GlobalAlloc::alloc_zeroed requires.
        unsafe { System.alloc_zeroed(layout) }
    } else {
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }
}

/// The inline sampling decision: true when the slot's countdown, drawn for this `word`,
/// covers `size` more bytes (it is then taken off): the block is not recorded. False sends
/// the block to [`alloc_tracking`], which redraws, samples or records.
#[inline(always)]
fn plain_by_countdown(slot: &Slot, word: u64, size: usize) -> bool {
    if slot.drawn.load(Relaxed) != word {
        return false;
    }
    // Sizes are at most isize::MAX and the countdown is never negative: no overflow.
    let left = slot.countdown.load(Relaxed) - size as i64;
    if left < 0 {
        return false;
    }
    slot.countdown.store(left, Relaxed);
    true
}

/// A block that is not recorded, counted in the owner's slot. Inline only the common case:
/// counted first, then `System` tail-called; each other case is one out-of-line call, so
/// the inline path keeps nothing across a call (no registers saved, no stack slot).
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline(always)]
unsafe fn alloc_plain(slot: &Slot, layout: Layout, zeroed: bool) -> *mut u8 {
    let size = layout.size();
    if size > COUNT_FIRST_MAX {
        // SAFETY: the caller's layout.
        return unsafe { alloc_plain_large(slot, layout, zeroed) };
    }
    if slot.grow_owned(size as i64, &slot.allocs) {
        // SAFETY: the caller's layout.
        return unsafe { alloc_peak_due(slot, layout, zeroed) };
    }
    // SAFETY: the caller's layout.
    unsafe { system_alloc(layout, zeroed) }
}

/// [`alloc_plain`] once the bytes passed this thread's mark (counted already).
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[cold]
#[inline(never)]
unsafe fn alloc_peak_due(slot: &Slot, layout: Layout, zeroed: bool) -> *mut u8 {
    check_peak(slot);
    // SAFETY: the caller's layout.
    unsafe { system_alloc(layout, zeroed) }
}

/// [`alloc_plain`] above [`COUNT_FIRST_MAX`]: counted only once `System` succeeded.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline(never)]
unsafe fn alloc_plain_large(slot: &Slot, layout: Layout, zeroed: bool) -> *mut u8 {
    // SAFETY: the caller's layout.
    let ptr = unsafe { system_alloc(layout, zeroed) };
    if !ptr.is_null() && slot.grow_owned(layout.size() as i64, &slot.allocs) {
        check_peak(slot);
    }
    ptr
}

/// `alloc` and `alloc_zeroed`. The common case, a block that is not recorded and needs
/// nothing but counting and `malloc`, is settled here: every check comes before anything
/// is changed, and any other case is one out-of-line call, [`alloc_slow`], that starts
/// afresh.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline(always)]
unsafe fn alloc_with(layout: Layout, zeroed: bool) -> *mut u8 {
    let size = layout.size();
    if let Some(slot) = OWNED.get()
        && size <= COUNT_FIRST_MAX
        && malloc_aligned(layout)
        && let Some(now) = slot.bytes_after_alloc(size as i64)
    {
        let word = slot.word.load(Relaxed);
        if word == WORD_OFF || plain_by_countdown(slot, word, size) {
            slot.commit_alloc(now);
            // SAFETY: the caller's layout (malloc's own alignment serves it: checked above).
            return unsafe { system_alloc(layout, zeroed) };
        }
    }
    // SAFETY: the caller's layout.
    unsafe { alloc_slow(layout, zeroed) }
}

/// Every allocation [`alloc_with`] does not settle inline.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline(never)]
unsafe fn alloc_slow(layout: Layout, zeroed: bool) -> *mut u8 {
    // `alloc` tail-calls this, so this frame's record holds the caller's frame pointer and
    // return address: a walk from here skips the tracker's own frames below.
    let from = unwind::frame_pointer();
    let Some(slot) = OWNED.get() else {
        // SAFETY: the caller's layout.
        return unsafe { alloc_unowned(layout, zeroed) };
    };
    let word = slot.word.load(Relaxed);
    if word != WORD_OFF && !plain_by_countdown(slot, word, layout.size()) {
        // SAFETY: the caller's layout.
        return unsafe { alloc_tracking(slot, layout, zeroed, from) };
    }
    // SAFETY: the caller's layout.
    unsafe { alloc_plain(slot, layout, zeroed) }
}

/// An allocation the inline path did not settle: tracking on and the countdown out (or
/// drawn for another word), or off with the region in use.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline(never)]
unsafe fn alloc_tracking(slot: &Slot, layout: Layout, zeroed: bool, from: usize) -> *mut u8 {
    let word = slot.word.load(Relaxed);
    let size = layout.size();
    match word & MODE_MASK {
        MODE_OFF => {
            // Off, after a session used the region: a countdown that never runs out lets
            // the inline path take every block from now on.
            slot.countdown.store(i64::MAX, Relaxed);
            slot.drawn.store(word, Relaxed);
            // SAFETY: the caller's layout.
            return unsafe { alloc_plain(slot, layout, zeroed) };
        }
        MODE_EXACT => {}
        _ => {
            if slot.drawn.load(Relaxed) != word {
                // A new session (or word): draw this thread's countdown afresh.
                slot.drawn.store(word, Relaxed);
                slot.countdown.store(sampler::next_distance(), Relaxed);
                if plain_by_countdown(slot, word, size) {
                    // SAFETY: the caller's layout.
                    return unsafe { alloc_plain(slot, layout, zeroed) };
                }
            }
            // The sampling point lies in this block; the next distance starts at its end.
            slot.countdown.store(sampler::next_distance(), Relaxed);
        }
    }
    // SAFETY: the caller's layout.
    let ptr = unsafe { alloc_recorded(layout, zeroed, usize::from(slot.area.load(Relaxed)), from) };
    if !ptr.is_null() && slot.grow_owned(size as i64, &slot.allocs) {
        check_peak(slot);
    }
    ptr
}

/// A block to record: from the region area `area` when it fits there, else from `System`
/// (recorded in the block table). Its stack is walked from the frame record `from` (0:
/// from here). Not counted here.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
unsafe fn alloc_recorded(layout: Layout, zeroed: bool, area: usize, from: usize) -> *mut u8 {
    let addr = recorder::alloc_recorded(layout.size(), layout.align(), area, zeroed, from, || {
        // SAFETY: the caller's layout.
        unsafe { system_alloc(layout, zeroed) as usize }
    });
    addr as *mut u8
}

/// `alloc` for a thread without a slot of its own (yet): the global word, the
/// thread-local sampler.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[cold]
#[inline(never)]
unsafe fn alloc_unowned(layout: Layout, zeroed: bool) -> *mut u8 {
    let word = WORD.load(Relaxed);
    let ptr = if records(word, layout.size()) {
        // SAFETY: the caller's layout.
        unsafe { alloc_recorded(layout, zeroed, 0, 0) }
    } else {
        // SAFETY: the caller's layout.
        unsafe { system_alloc(layout, zeroed) }
    };
    if !ptr.is_null() {
        count_elsewhere(Event::Alloc(layout.size() as u64));
    }
    ptr
}

/// Off the inline path: whether a new block of `size` bytes is recorded under `word`
/// (exact: always; sampling: by the thread-local sampler).
fn records(word: u64, size: usize) -> bool {
    match word & MODE_MASK {
        MODE_OFF => false,
        MODE_EXACT => true,
        _ => sampler::should_sample(size),
    }
}

/// `dealloc` of a block in the region: its record ends and its slot is freed. Counted by
/// the caller.
#[inline(never)]
fn region_dealloc(ptr: *mut u8) {
    recorder::free_region(ptr as usize);
}

/// `dealloc` of a block the counting filter says may be in the block table: untracks it,
/// then releases it. Untrack first: once System has the block back, another thread may
/// receive the same address and record it.
///
/// # Safety
/// As `GlobalAlloc::dealloc`.
#[inline(never)]
unsafe fn tracked_dealloc(ptr: *mut u8, layout: Layout) {
    recorder::forget(ptr as usize);
    // SAFETY: the caller's arguments, as GlobalAlloc::dealloc requires.
    unsafe { System.dealloc(ptr, layout) }
}

/// `dealloc` after counting, by the tracking word and the lookup threshold that goes with
/// it (`recorder::lookup_above`; owned slots keep a copy).
///
/// # Safety
/// As `GlobalAlloc::dealloc`.
#[inline(always)]
unsafe fn release(ptr: *mut u8, layout: Layout, word: u64, lookup_above: usize) {
    if word != WORD_OFF {
        if region::contains(ptr as usize) {
            return region_dealloc(ptr);
        }
        // One compare settles every free that cannot have a record in the block table
        // (small blocks while sampling, any while off); the filter's one load most of the
        // rest, without a call.
        if layout.size().max(layout.align()) > lookup_above
            && recorder::may_have_record(ptr as usize)
        {
            // SAFETY: the caller's arguments.
            return unsafe { tracked_dealloc(ptr, layout) };
        }
    }
    // SAFETY: the caller's arguments, as GlobalAlloc::dealloc requires.
    unsafe { System.dealloc(ptr, layout) }
}

/// `dealloc` for a thread without a slot of its own (yet).
///
/// # Safety
/// As `GlobalAlloc::dealloc`.
#[cold]
#[inline(never)]
unsafe fn dealloc_unowned(ptr: *mut u8, layout: Layout) {
    count_elsewhere(Event::Free(layout.size() as u64));
    let word = WORD.load(Relaxed);
    // SAFETY: the caller's arguments.
    unsafe { release(ptr, layout, word, recorder::lookup_above(word)) }
}

impl Tracker {
    /// `realloc` while the word is not [`WORD_OFF`]: the block may be in the region, or
    /// tracked, or the new one may have to be.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    #[inline(never)]
    unsafe fn realloc_tracking(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        word: u64,
    ) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc requires new_size, rounded up to layout.align(),
        // not to overflow isize: exactly what makes this layout valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if region::contains(ptr as usize) {
            // Out of (or within) the region: a new block like any other allocation,
            // recorded or not, the contents copied, the old one freed (its record ends).
            // SAFETY: the arguments as the callers' contracts require; `new` is a
            // distinct live block of new_size bytes and `ptr` holds layout.size().
            unsafe { return self.move_block(ptr, layout, new_layout) };
        }
        let record = records(word, new_size);
        // This thread's region area, whose shard records the new block (0 without a slot).
        let own_area = || OWNED.get().map_or(0, |s| usize::from(s.area.load(Relaxed)));
        if record
            && region::eligible(new_size, layout.align(), word & MODE_MASK == MODE_EXACT)
            && region::available()
        {
            // The new block is to be recorded: it goes to the region (a move).
            let area = own_area();
            // SAFETY: a valid non-zero-size layout (GlobalAlloc::realloc's contract).
            let new = unsafe { alloc_recorded(new_layout, false, area, 0) };
            if new.is_null() {
                return new;
            }
            count(Event::Alloc(new_size as u64));
            // SAFETY: both blocks are live and distinct; the old holds layout.size()
            // bytes, the new new_size; `ptr` with `layout` is the caller's block.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            return new;
        }
        if word & MODE_MASK != MODE_OFF {
            // The old record ends before System.realloc, as in dealloc (a moved block's old
            // address can be reused at once). If realloc then fails, the block left in
            // place stays counted in the totals but loses its site record.
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
        if record {
            recorder::record_system(new as usize, new_size, own_area());
        }
        new
    }

    /// `realloc` as a new block, a copy and a free (each counted as such: the totals end
    /// as a realloc's would, with one allocation more and the bytes moved by the change).
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`, with `new_layout` the block's new layout.
    unsafe fn move_block(&self, ptr: *mut u8, layout: Layout, new_layout: Layout) -> *mut u8 {
        // SAFETY: a valid non-zero-size layout.
        let new = unsafe { self.alloc(new_layout) };
        if new.is_null() {
            return new;
        }
        // SAFETY: both blocks are live and distinct; the old holds layout.size() bytes,
        // the new new_layout.size(); `ptr` with `layout` is the caller's block.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_layout.size()));
            self.dealloc(ptr, layout);
        }
        new
    }
}

// SAFETY: blocks come from System, with the caller's arguments, or from the region (a
// private read-write mapping no one else uses, each slot handed out once until it is
// freed, aligned to its class size ≥ the layout's size and alignment); each goes back to
// where it came from (region blocks are told by address). The bookkeeping never touches
// the blocks' memory (except zeroing a reused region slot for alloc_zeroed, and copying
// in realloc) and never allocates through the global allocator.
unsafe impl GlobalAlloc for Tracker {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { alloc_with(layout, false) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { alloc_with(layout, true) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Counted first, so that handing the block back is the last thing done (a tail
        // call, no frame kept around it); so is every branch off the common path.
        let Some(slot) = OWNED.get() else {
            // SAFETY: forwarded unchanged.
            return unsafe { dealloc_unowned(ptr, layout) };
        };
        slot.shrink_owned(layout.size() as i64, &slot.frees);
        // SAFETY: forwarded unchanged.
        unsafe {
            release(
                ptr,
                layout,
                slot.word.load(Relaxed),
                slot.lookup_above.load(Relaxed),
            )
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let word = match OWNED.get() {
            Some(slot) => slot.word.load(Relaxed),
            None => WORD.load(Relaxed),
        };
        if word != WORD_OFF {
            // SAFETY: forwarded unchanged.
            return unsafe { self.realloc_tracking(ptr, layout, new_size, word) };
        }
        // SAFETY: forwarded unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            return new;
        }
        count(Event::Realloc(
            (new_size as i64).wrapping_sub(layout.size() as i64),
        ));
        new
    }
}
