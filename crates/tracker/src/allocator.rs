//! The global allocator glue: [`Tracker`]'s `GlobalAlloc` methods, which count every call
//! in [`counters`] and hand off to [`recorder`] when site tracking is on.
//!
//! With site tracking off a call is `System`'s plus the owned-slot update and one more
//! relaxed load of the mode (the slot's copy, on the same cache line) and a branch. With it
//! on, `alloc` calls `recorder::on_alloc` (which samples, walks the stack and records) and
//! `dealloc` calls `recorder::on_free` (one filter load unless the block may be tracked).
//!
//! The methods and the owned-slot updates they call are `#[inline]`/`#[inline(always)]`:
//! the `#[global_allocator]` shim that calls them lives in the embedding crate, so without
//! that they would be a call across the crate boundary. Every branch off the common path
//! is one out-of-line call.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::Ordering::Relaxed;

use crate::counters::{Event, MODE, MODE_OFF, OWNED, Slot, check_peak, count, count_elsewhere};
use crate::recorder;

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
